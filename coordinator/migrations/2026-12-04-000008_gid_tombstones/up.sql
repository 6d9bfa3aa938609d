-- A gid is used once, even after retention deleted its transaction.
--
-- The RMs keep their sub-transaction barrier rows on a clock of their own
-- (BARRIER_RETENTION_SECONDS, 7 days by default). Were a gid whose transaction retention deleted
-- prepared again while an RM still held its barrier rows, the new Try would be read as a
-- duplicate (200, nothing reserved) and so would its Confirm: a "succeed" that moved nothing.
-- DTM never deletes a transaction, so it refuses a used gid forever. Here retention leaves a
-- tombstone in place of each transaction it deletes, `prepare` refuses a gid that has one, and
-- tombstones are deleted only GID_TOMBSTONE_SECONDS after the transaction finished (30 days by
-- default, longer than the RMs' barrier retention).
CREATE TABLE trans_gid_tombstone (
    gid         TEXT        PRIMARY KEY,
    finish_time TIMESTAMPTZ NOT NULL
);
-- Retention deletes expired tombstones oldest first.
CREATE INDEX trans_gid_tombstone_finish_idx ON trans_gid_tombstone (finish_time);

COMMENT ON TABLE trans_gid_tombstone IS
    'The gid of each transaction retention deleted, so that prepare refuses it again (a gid is used once).';
COMMENT ON COLUMN trans_gid_tombstone.finish_time IS
    'When the deleted transaction finished; the tombstone is kept GID_TOMBSTONE_SECONDS after it.';

-- prepare: creates the transaction and its `prepared` event. Answers 'created', 'used' (the gid
-- belonged to a transaction retention deleted: nothing is created), or the status of the
-- transaction that already had this gid. The tombstone is looked up after the insert, in a
-- statement of its own: a retention job deleting this gid's old row at that instant made the
-- insert wait for its commit, and this later statement then sees the tombstone it wrote.
CREATE OR REPLACE FUNCTION tcc_prepare(p_gid TEXT, p_timeout_to_fail INTEGER,
                                       p_retry_interval INTEGER, p_request_timeout INTEGER,
                                       p_branch_headers TEXT, p_options TEXT)
RETURNS TEXT LANGUAGE plpgsql AS $$
DECLARE
    v_status TEXT;
BEGIN
    INSERT INTO trans_global (gid, status, timeout_to_fail, retry_interval, request_timeout,
                              branch_headers, next_cron_interval, next_cron_time)
    VALUES (p_gid, 'prepared', p_timeout_to_fail, p_retry_interval, p_request_timeout,
            p_branch_headers, p_retry_interval, now() + make_interval(secs => p_timeout_to_fail))
    ON CONFLICT (gid) DO NOTHING;
    IF FOUND THEN
        IF EXISTS (SELECT 1 FROM trans_gid_tombstone WHERE gid = p_gid) THEN
            DELETE FROM trans_global WHERE gid = p_gid;
            RETURN 'used';
        END IF;
        INSERT INTO trans_event (gid, kind, actor, status, detail)
        VALUES (p_gid, 'prepared', 'ap', 'prepared', p_options);
        RETURN 'created';
    END IF;
    SELECT status INTO v_status FROM trans_global WHERE gid = p_gid;
    RETURN coalesce(v_status, 'prepared');
END $$;

COMMENT ON FUNCTION tcc_prepare IS 'prepare: the transaction and its prepared event; answers created, used (a tombstoned gid) or the existing status.';
