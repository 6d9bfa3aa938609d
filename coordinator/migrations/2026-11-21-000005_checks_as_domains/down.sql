ALTER TABLE trans_global RESET (fillfactor);
ALTER TABLE trans_branch_op RESET (fillfactor);
ALTER TABLE trans_event DROP CONSTRAINT trans_event_pkey;
ALTER TABLE trans_event ADD CONSTRAINT trans_event_pkey PRIMARY KEY (id);
CREATE INDEX trans_event_gid_id_idx ON trans_event (gid, id);
ALTER TABLE trans_event
    ALTER COLUMN kind TYPE TEXT, ALTER COLUMN actor TYPE TEXT, ALTER COLUMN status TYPE TEXT,
    ALTER COLUMN op TYPE TEXT, ALTER COLUMN outcome TYPE TEXT, ALTER COLUMN http_status TYPE INTEGER,
    ALTER COLUMN latency_ms TYPE INTEGER, ALTER COLUMN attempt TYPE INTEGER,
    ALTER COLUMN retry_in_ms TYPE INTEGER;
ALTER TABLE trans_branch_op
    ALTER COLUMN op TYPE TEXT, ALTER COLUMN status TYPE TEXT, ALTER COLUMN attempts TYPE INTEGER;
ALTER TABLE trans_global
    ALTER COLUMN status TYPE TEXT, ALTER COLUMN trans_type TYPE TEXT,
    ALTER COLUMN timeout_to_fail TYPE INTEGER, ALTER COLUMN retry_interval TYPE INTEGER,
    ALTER COLUMN request_timeout TYPE INTEGER, ALTER COLUMN next_cron_interval TYPE INTEGER;
DROP DOMAIN tcc_global_status, tcc_trans_type, tcc_seconds, tcc_count, tcc_attempt,
    tcc_http_status, tcc_branch_op, tcc_op_status, tcc_event_kind, tcc_actor, tcc_event_op,
    tcc_outcome;
ALTER TABLE trans_global
    ADD CONSTRAINT trans_global_status_check
        CHECK (status IN ('prepared', 'submitted', 'succeed', 'aborting', 'failed')),
    ADD CONSTRAINT trans_global_trans_type_check CHECK (trans_type = 'tcc'),
    ADD CONSTRAINT trans_global_timeout_to_fail_check CHECK (timeout_to_fail > 0),
    ADD CONSTRAINT trans_global_retry_interval_check CHECK (retry_interval > 0),
    ADD CONSTRAINT trans_global_request_timeout_check CHECK (request_timeout > 0),
    ADD CONSTRAINT trans_global_next_cron_interval_check CHECK (next_cron_interval > 0);
ALTER TABLE trans_branch_op
    ADD CONSTRAINT trans_branch_op_op_check CHECK (op IN ('confirm', 'cancel')),
    ADD CONSTRAINT trans_branch_op_status_check CHECK (status IN ('prepared', 'succeed')),
    ADD CONSTRAINT trans_branch_op_attempts_check CHECK (attempts >= 0);
ALTER TABLE trans_event
    ADD CONSTRAINT trans_event_kind_check CHECK (kind IN (
        'prepared', 'branch_registered', 'try_reported', 'submitted', 'aborting',
        'branch_calling', 'branch_called', 'retry_scheduled', 'succeed', 'failed',
        'force_stopped', 'retry_requested')),
    ADD CONSTRAINT trans_event_actor_check CHECK (actor IN ('ap', 'tm', 'timeout', 'admin')),
    ADD CONSTRAINT trans_event_status_check
        CHECK (status IN ('prepared', 'submitted', 'succeed', 'aborting', 'failed')),
    ADD CONSTRAINT trans_event_op_check CHECK (op IN ('try', 'confirm', 'cancel')),
    ADD CONSTRAINT trans_event_outcome_check
        CHECK (outcome IN ('success', 'failure', 'ongoing', 'error')),
    ADD CONSTRAINT trans_event_http_status_check CHECK (http_status BETWEEN 100 AND 599),
    ADD CONSTRAINT trans_event_latency_ms_check CHECK (latency_ms >= 0),
    ADD CONSTRAINT trans_event_attempt_check CHECK (attempt >= 1),
    ADD CONSTRAINT trans_event_retry_in_ms_check CHECK (retry_in_ms >= 0);
