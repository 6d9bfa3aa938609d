-- Single-column CHECK constraints become domains (issue 6).
--
-- Postgres re-reads a table's CHECK constraints from their stored text (stringToNode) and plans
-- them again for every INSERT and UPDATE statement: a profile of the coordinator mode found 21% of
-- Postgres' CPU there, most of it parsing the text arrays of the `IN (...)` lists (trans_event
-- alone had eleven checks). A domain's constraints are parsed once per connection and cached
-- (the type cache), so the same rules cost almost nothing per row. What each column admits is
-- unchanged; only the rules that compare two columns stay table constraints.

CREATE DOMAIN tcc_global_status AS TEXT
    CHECK (VALUE IN ('prepared', 'submitted', 'succeed', 'aborting', 'failed'));
CREATE DOMAIN tcc_trans_type AS TEXT CHECK (VALUE = 'tcc');
CREATE DOMAIN tcc_seconds AS INTEGER CHECK (VALUE > 0);
CREATE DOMAIN tcc_count AS INTEGER CHECK (VALUE >= 0);
CREATE DOMAIN tcc_attempt AS INTEGER CHECK (VALUE >= 1);
CREATE DOMAIN tcc_http_status AS INTEGER CHECK (VALUE BETWEEN 100 AND 599);
CREATE DOMAIN tcc_branch_op AS TEXT CHECK (VALUE IN ('confirm', 'cancel'));
CREATE DOMAIN tcc_op_status AS TEXT CHECK (VALUE IN ('prepared', 'succeed'));
CREATE DOMAIN tcc_event_kind AS TEXT CHECK (VALUE IN (
    'prepared', 'branch_registered', 'try_reported', 'submitted', 'aborting', 'branch_calling',
    'branch_called', 'retry_scheduled', 'succeed', 'failed', 'force_stopped', 'retry_requested'));
CREATE DOMAIN tcc_actor AS TEXT CHECK (VALUE IN ('ap', 'tm', 'timeout', 'admin'));
CREATE DOMAIN tcc_event_op AS TEXT CHECK (VALUE IN ('try', 'confirm', 'cancel'));
CREATE DOMAIN tcc_outcome AS TEXT CHECK (VALUE IN ('success', 'failure', 'ongoing', 'error'));

ALTER TABLE trans_global
    DROP CONSTRAINT trans_global_status_check,
    DROP CONSTRAINT trans_global_trans_type_check,
    DROP CONSTRAINT trans_global_timeout_to_fail_check,
    DROP CONSTRAINT trans_global_retry_interval_check,
    DROP CONSTRAINT trans_global_request_timeout_check,
    DROP CONSTRAINT trans_global_next_cron_interval_check,
    ALTER COLUMN status TYPE tcc_global_status,
    ALTER COLUMN trans_type TYPE tcc_trans_type,
    ALTER COLUMN timeout_to_fail TYPE tcc_seconds,
    ALTER COLUMN retry_interval TYPE tcc_seconds,
    ALTER COLUMN request_timeout TYPE tcc_seconds,
    ALTER COLUMN next_cron_interval TYPE tcc_seconds;

ALTER TABLE trans_branch_op
    DROP CONSTRAINT trans_branch_op_op_check,
    DROP CONSTRAINT trans_branch_op_status_check,
    DROP CONSTRAINT trans_branch_op_attempts_check,
    ALTER COLUMN op TYPE tcc_branch_op,
    ALTER COLUMN status TYPE tcc_op_status,
    ALTER COLUMN attempts TYPE tcc_count;

ALTER TABLE trans_event
    DROP CONSTRAINT trans_event_kind_check,
    DROP CONSTRAINT trans_event_actor_check,
    DROP CONSTRAINT trans_event_status_check,
    DROP CONSTRAINT trans_event_op_check,
    DROP CONSTRAINT trans_event_outcome_check,
    DROP CONSTRAINT trans_event_http_status_check,
    DROP CONSTRAINT trans_event_latency_ms_check,
    DROP CONSTRAINT trans_event_attempt_check,
    DROP CONSTRAINT trans_event_retry_in_ms_check,
    ALTER COLUMN kind TYPE tcc_event_kind,
    ALTER COLUMN actor TYPE tcc_actor,
    ALTER COLUMN status TYPE tcc_global_status,
    ALTER COLUMN op TYPE tcc_event_op,
    ALTER COLUMN outcome TYPE tcc_outcome,
    ALTER COLUMN http_status TYPE tcc_http_status,
    ALTER COLUMN latency_ms TYPE tcc_count,
    ALTER COLUMN attempt TYPE tcc_attempt,
    ALTER COLUMN retry_in_ms TYPE tcc_count;

COMMENT ON DOMAIN tcc_global_status IS 'A global transaction''s status (design §4).';
COMMENT ON DOMAIN tcc_event_kind IS 'What a trans_event row records (coordinator/src/events.rs, EventKind).';
COMMENT ON DOMAIN tcc_seconds IS 'A positive number of seconds (timeouts, intervals).';

-- Fewer index entries per write, found in the same profile:
-- * trans_event is only ever read by gid in id order, so (gid, id) becomes its primary key and
--   the separate index on id goes: one B-tree insert fewer per event (eleven events per transfer).
ALTER TABLE trans_event DROP CONSTRAINT trans_event_pkey;
DROP INDEX trans_event_gid_id_idx;
ALTER TABLE trans_event ADD CONSTRAINT trans_event_pkey PRIMARY KEY (gid, id);
-- * Room in each page for the new version of a row, so that updates touching no indexed column
--   (a lease renewed for the next call, a branch op recorded) stay heap-only (HOT) and write no
--   index entry at all.
ALTER TABLE trans_global SET (fillfactor = 70);
ALTER TABLE trans_branch_op SET (fillfactor = 80);

COMMENT ON CONSTRAINT trans_event_pkey ON trans_event IS
    'Reading one transaction''s history in order (the diagrams); id order is the order events were recorded.';
COMMENT ON COLUMN trans_event.target IS
    'The branch''s service, named from its URL''s last path segment without the Try/Confirm/Cancel suffix (TransOutConfirm -> TransOut), else host:port; for ops registered before migration 000004, the URL itself.';
COMMENT ON COLUMN trans_event.create_time IS
    'When the event was recorded (clock_timestamp(): distinct within one database transaction). A Try report carried by a later call is recorded when that call arrives; its latency_ms is the Try''s own.';
