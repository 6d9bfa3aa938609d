-- The barrier's unique key under the name DTM gives it. DTM's own barrier code (dtm-labs/dtm,
-- dtmcli/dtmimp: insertBarrier, the Postgres GetInsertIgnoreTemplate) inserts with
--   insert into dtm_barrier.barrier(trans_type, gid, branch_id, op, barrier_id, reason)
--   values($1,$2,$3,$4,$5,$6) on conflict ON CONSTRAINT uniq_barrier do nothing
-- and the statement fails on Postgres unless a constraint of that name exists, so a Go or Java
-- DTM RM sharing this table needs it named uniq_barrier (sqls/dtmcli.barrier.postgres.sql).
-- The rename runs only when the key still has this project's former name: the first migration
-- is CREATE TABLE IF NOT EXISTS, so on a table created by DTM's own DDL the key is already
-- uniq_barrier, and this migration (and a re-run of the whole barrier SQL) must leave it alone.
DO $$
BEGIN
    IF EXISTS (
        SELECT 1 FROM pg_constraint
        WHERE conname = 'barrier_uniq'
          AND conrelid = 'dtm_barrier.barrier'::regclass
    ) THEN
        ALTER TABLE dtm_barrier.barrier RENAME CONSTRAINT barrier_uniq TO uniq_barrier;
    END IF;
END
$$;
