-- The coordinator's (TM's) durable state: global transactions and their branch ops.
-- The second phase runs from these tables, so a restarted or replacement coordinator resumes it.

CREATE TABLE trans_global (
    id                 BIGSERIAL   PRIMARY KEY,
    gid                TEXT        NOT NULL UNIQUE,
    trans_type         TEXT        NOT NULL DEFAULT 'tcc' CHECK (trans_type = 'tcc'),
    status             TEXT        NOT NULL
        CHECK (status IN ('prepared', 'submitted', 'succeed', 'aborting', 'failed')),
    timeout_to_fail    INTEGER     NOT NULL CHECK (timeout_to_fail > 0),
    retry_interval     INTEGER     NOT NULL CHECK (retry_interval > 0),
    request_timeout    INTEGER     NOT NULL CHECK (request_timeout > 0),
    branch_headers     TEXT        NOT NULL DEFAULT '{}',
    rollback_reason    TEXT,
    next_cron_interval INTEGER     NOT NULL CHECK (next_cron_interval > 0),
    next_cron_time     TIMESTAMPTZ NOT NULL,
    owner              TEXT,
    lease_expire       TIMESTAMPTZ,
    create_time        TIMESTAMPTZ NOT NULL DEFAULT now(),
    update_time        TIMESTAMPTZ NOT NULL DEFAULT now(),
    finish_time        TIMESTAMPTZ,
    CHECK ((status IN ('succeed', 'failed')) = (finish_time IS NOT NULL))
);

-- The worker's queue: unfinished transactions by due time. Finished ones never match.
CREATE INDEX trans_global_due_idx ON trans_global (next_cron_time)
    WHERE status IN ('prepared', 'submitted', 'aborting');
CREATE INDEX trans_global_status_id_idx ON trans_global (status, id);

COMMENT ON TABLE trans_global IS 'One row per global transaction (DTM: trans_global).';
COMMENT ON COLUMN trans_global.timeout_to_fail IS
    'Seconds after creation at which a transaction still prepared is aborted (its AP crashed or hung).';
COMMENT ON COLUMN trans_global.retry_interval IS
    'Seconds: base of the exponential backoff between second-phase attempts.';
COMMENT ON COLUMN trans_global.request_timeout IS 'Seconds: timeout of each branch call.';
COMMENT ON COLUMN trans_global.branch_headers IS 'JSON object of extra headers sent with every branch call.';
COMMENT ON COLUMN trans_global.next_cron_interval IS
    'Seconds: the backoff step the next failed attempt waits; doubles up to the configured cap.';
COMMENT ON COLUMN trans_global.next_cron_time IS
    'When a worker should next look at this transaction: the timeout of a prepared one, the next retry of a submitted or aborting one.';
COMMENT ON COLUMN trans_global.owner IS
    'Lease token of the worker running the second phase now ("<coordinator id>:<claim id>"), or NULL.';
COMMENT ON COLUMN trans_global.lease_expire IS
    'Until when the owner may run it; after that any replica may claim it (the owner died).';

CREATE TABLE trans_branch_op (
    id          BIGSERIAL   PRIMARY KEY,
    gid         TEXT        NOT NULL REFERENCES trans_global (gid) ON DELETE CASCADE,
    branch_id   TEXT        NOT NULL,
    op          TEXT        NOT NULL CHECK (op IN ('confirm', 'cancel')),
    url         TEXT        NOT NULL,
    data        TEXT        NOT NULL,
    status      TEXT        NOT NULL CHECK (status IN ('prepared', 'succeed')),
    attempts    INTEGER     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_result TEXT,
    create_time TIMESTAMPTZ NOT NULL DEFAULT now(),
    update_time TIMESTAMPTZ NOT NULL DEFAULT now(),
    finish_time TIMESTAMPTZ,
    CONSTRAINT trans_branch_op_uniq UNIQUE (gid, branch_id, op)
);

COMMENT ON TABLE trans_branch_op IS
    'The Confirm and Cancel of each registered branch (DTM: trans_branch_op); id order is registration order.';
COMMENT ON COLUMN trans_branch_op.data IS 'The branch data registered by the AP, sent raw as the body of the call.';
COMMENT ON COLUMN trans_branch_op.attempts IS 'Calls made so far; an alert is raised past the configured count.';
COMMENT ON COLUMN trans_branch_op.last_result IS 'Outcome of the last call (success, failure: ..., error: ...).';
