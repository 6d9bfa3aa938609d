-- Back to prepare without tombstones, as migration ..._state_machine_functions made it.
CREATE OR REPLACE FUNCTION tcc_prepare(p_gid TEXT, p_timeout_to_fail INTEGER, p_retry_interval INTEGER,
                            p_request_timeout INTEGER, p_branch_headers TEXT, p_options TEXT)
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
        INSERT INTO trans_event (gid, kind, actor, status, detail)
        VALUES (p_gid, 'prepared', 'ap', 'prepared', p_options);
        RETURN 'created';
    END IF;
    SELECT status INTO v_status FROM trans_global WHERE gid = p_gid;
    RETURN coalesce(v_status, 'prepared');
END $$;

COMMENT ON FUNCTION tcc_prepare IS 'prepare: the transaction and its prepared event; answers created or the existing status.';

DROP TABLE trans_gid_tombstone;
