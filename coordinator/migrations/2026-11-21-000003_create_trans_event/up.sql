-- The event log of each global transaction (design §4, §9): every state change and every call
-- the TM made to a branch, plus the Trys the AP's client reported. The diagram endpoint
-- (GET /api/admin/transactions/{gid}/diagram) replays a transaction from these rows alone.
-- Rows are written in the same statement or database transaction as the change they describe
-- (coordinator/src/store.rs), so the log never claims a change that did not commit.

CREATE TABLE trans_event (
    id          BIGSERIAL   PRIMARY KEY,
    gid         TEXT        NOT NULL REFERENCES trans_global (gid) ON DELETE CASCADE,
    kind        TEXT        NOT NULL CHECK (kind IN (
                    'prepared', 'branch_registered', 'try_reported', 'submitted', 'aborting',
                    'branch_calling', 'branch_called', 'retry_scheduled', 'succeed', 'failed', 'force_stopped',
                    'retry_requested')),
    actor       TEXT        NOT NULL CHECK (actor IN ('ap', 'tm', 'timeout', 'admin')),
    status      TEXT        CHECK (status IN ('prepared', 'submitted', 'succeed', 'aborting', 'failed')),
    branch_id   TEXT,
    op          TEXT        CHECK (op IN ('try', 'confirm', 'cancel')),
    target      TEXT,
    url         TEXT,
    outcome     TEXT        CHECK (outcome IN ('success', 'failure', 'ongoing', 'error')),
    http_status INTEGER     CHECK (http_status BETWEEN 100 AND 599),
    latency_ms  INTEGER     CHECK (latency_ms >= 0),
    attempt     INTEGER     CHECK (attempt >= 1),
    retry_in_ms INTEGER     CHECK (retry_in_ms >= 0),
    detail      TEXT,
    create_time TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    -- A call or a report is about one branch op; a state change of the global transaction is not.
    CHECK ((kind IN ('branch_registered', 'try_reported', 'branch_calling', 'branch_called',
                     'retry_scheduled'))
           = (branch_id IS NOT NULL)),
    CHECK ((kind IN ('try_reported', 'branch_called')) = (outcome IS NOT NULL))
);

-- Reading one transaction's history in order; also serves the ON DELETE CASCADE of retention.
CREATE INDEX trans_event_gid_id_idx ON trans_event (gid, id);

COMMENT ON TABLE trans_event IS
    'Event log of each global transaction: state changes, branch calls by the TM, Try calls reported by the AP. id order is the order they happened in; deleted with the transaction (retention).';
COMMENT ON COLUMN trans_event.kind IS
    'prepared, branch_registered, try_reported, submitted, aborting, branch_calling (a Confirm/Cancel call is being sent), branch_called (its answer), retry_scheduled, succeed, failed, force_stopped and retry_requested (operator actions).';
COMMENT ON COLUMN trans_event.actor IS
    'Who caused it: ap (the AP: prepare, registerBranch, submit, abort, Try reports), tm (the coordinator''s second phase), timeout (timeout_to_fail passed), admin (an operator action).';
COMMENT ON COLUMN trans_event.status IS 'Global status after a state change; NULL for calls and reports.';
COMMENT ON COLUMN trans_event.op IS 'try (reported by the AP), confirm or cancel (called by the TM).';
COMMENT ON COLUMN trans_event.target IS
    'The branch''s service, derived from its URL''s last path segment without the Try/Confirm/Cancel suffix (TransOutConfirm -> TransOut), else host:port.';
COMMENT ON COLUMN trans_event.url IS 'The URL called (Try, Confirm or Cancel).';
COMMENT ON COLUMN trans_event.outcome IS 'How the branch answered, read as DTM reads it: success, failure (409/FAILURE), ongoing (425/ONGOING), error (anything else, no answer included).';
COMMENT ON COLUMN trans_event.http_status IS 'HTTP status of the answer; NULL when none was read (timeout, refused connection).';
COMMENT ON COLUMN trans_event.latency_ms IS 'Milliseconds from sending the call to reading the whole answer (or giving up).';
COMMENT ON COLUMN trans_event.attempt IS 'branch_called: the how-manyth call of this branch op (1 = first).';
COMMENT ON COLUMN trans_event.retry_in_ms IS 'retry_scheduled: milliseconds until the next attempt (backoff step plus jitter, or the fixed ONGOING poll).';
COMMENT ON COLUMN trans_event.detail IS
    'Free text: the rollback reason of aborting, the options of prepared, the Confirm/Cancel URLs of branch_registered, the message or error of a call, the alert of a retry.';
COMMENT ON COLUMN trans_event.create_time IS 'When the event was recorded (clock_timestamp(): distinct within one database transaction).';
