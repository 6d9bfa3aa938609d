COMMENT ON COLUMN trans_global.finish_time IS NULL;
DROP INDEX IF EXISTS trans_global_finished_idx;
