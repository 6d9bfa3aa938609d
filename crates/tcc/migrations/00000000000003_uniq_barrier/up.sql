-- The barrier's unique key under the name DTM gives it. DTM's own barrier code (dtm-labs/dtm,
-- dtmcli/dtmimp: insertBarrier, the Postgres GetInsertIgnoreTemplate) inserts with
--   insert into dtm_barrier.barrier(trans_type, gid, branch_id, op, barrier_id, reason)
--   values($1,$2,$3,$4,$5,$6) on conflict ON CONSTRAINT uniq_barrier do nothing
-- and the statement fails on Postgres unless a constraint of that name exists, so a Go or Java
-- DTM RM sharing this table needs it named uniq_barrier (sqls/dtmcli.barrier.postgres.sql).
ALTER TABLE dtm_barrier.barrier RENAME CONSTRAINT barrier_uniq TO uniq_barrier;
