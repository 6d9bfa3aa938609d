-- The retention job deletes finished transactions older than the retention, oldest first
-- (store::delete_finished_before). Only finished rows have a finish_time, so the index is partial:
-- unfinished transactions, which are never deleted, do not weigh on it.
CREATE INDEX trans_global_finished_idx ON trans_global (finish_time)
    WHERE status IN ('succeed', 'failed');

COMMENT ON INDEX trans_global_finished_idx IS
    'Retention: finished transactions by finish_time, the ones the retention job deletes once older than RETENTION_SECONDS.';
COMMENT ON COLUMN trans_global.finish_time IS
    'When the transaction reached succeed or failed; NULL while unfinished. Finished rows are deleted RETENTION_SECONDS after it.';
