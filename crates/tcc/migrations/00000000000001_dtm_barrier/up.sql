-- The sub-transaction barrier of DTM (dtm-labs/dtm, sqls/dtmcli.barrier.*.sql), in Postgres.
-- One row per (gid, branch_id, op, barrier_id) that has run in this RM's database. The unique key
-- is what makes duplicates, empty compensations and hanging Trys detectable: a second insert of
-- the same key affects no row. The key has DTM's name, `uniq_barrier`: DTM's Go and Java barrier
-- code inserts with `on conflict ON CONSTRAINT uniq_barrier do nothing`, which fails unless a
-- constraint of that name exists, so an RM written with DTM's libraries can share this table.
-- IF NOT EXISTS: a table created by DTM's own DDL (sqls/dtmcli.barrier.postgres.sql) is kept.
CREATE SCHEMA IF NOT EXISTS dtm_barrier;

CREATE TABLE IF NOT EXISTS dtm_barrier.barrier (
    id          BIGSERIAL PRIMARY KEY,
    trans_type  TEXT        NOT NULL DEFAULT 'tcc',
    gid         TEXT        NOT NULL,
    branch_id   TEXT        NOT NULL,
    op          TEXT        NOT NULL,
    barrier_id  TEXT        NOT NULL,
    reason      TEXT        NOT NULL DEFAULT '',
    create_time TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT uniq_barrier UNIQUE (gid, branch_id, op, barrier_id)
);

CREATE INDEX IF NOT EXISTS barrier_create_time_idx ON dtm_barrier.barrier (create_time);

COMMENT ON TABLE dtm_barrier.barrier IS
    'Sub-transaction barrier: which (gid, branch_id, op, barrier_id) already ran in this database.';
COMMENT ON COLUMN dtm_barrier.barrier.reason IS
    'The op that inserted the row: a try row with reason cancel was written by an empty compensation, and blocks the hanging Try.';
COMMENT ON COLUMN dtm_barrier.barrier.barrier_id IS
    'Counts the barrier calls within one branch request ("01", "02", ...).';
