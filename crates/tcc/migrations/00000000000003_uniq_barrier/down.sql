-- Back to the former name, only when the key has DTM's name (mirrors up.sql's condition).
DO $$
BEGIN
    IF EXISTS (
        SELECT 1 FROM pg_constraint
        WHERE conname = 'uniq_barrier'
          AND conrelid = 'dtm_barrier.barrier'::regclass
    ) THEN
        ALTER TABLE dtm_barrier.barrier RENAME CONSTRAINT uniq_barrier TO barrier_uniq;
    END IF;
END
$$;
