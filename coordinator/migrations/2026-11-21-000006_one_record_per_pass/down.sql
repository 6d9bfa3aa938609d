-- Back to one commit per successful call: tcc_record_success as migration ..._state_machine_functions made it.
DROP FUNCTION tcc_record_calls;

CREATE FUNCTION tcc_record_success(p_op_id BIGINT, p_result TEXT, p_outcome TEXT,
                                   p_http_status INTEGER, p_latency_ms INTEGER, p_detail TEXT,
                                   p_target TEXT,
                                   p_owner TEXT, p_lease_secs BIGINT, p_next_op_id BIGINT,
                                   p_from TEXT, p_to TEXT,
                                   OUT attempts INTEGER, OUT continued TEXT,
                                   OUT trans_type TEXT, OUT second_phase_secs FLOAT8)
LANGUAGE plpgsql AS $$
DECLARE
    v_op trans_branch_op;
    v_next trans_branch_op;
BEGIN
    UPDATE trans_branch_op o
    SET status = 'succeed', finish_time = now(), attempts = o.attempts + 1,
        last_result = p_result, update_time = now()
    WHERE o.id = p_op_id AND o.status = 'prepared'
    RETURNING o.* INTO v_op;
    IF FOUND THEN
        attempts := v_op.attempts;
    ELSE
        SELECT * INTO v_op FROM trans_branch_op o WHERE o.id = p_op_id;
    END IF;
    INSERT INTO trans_event (gid, kind, actor, branch_id, op, target, url, outcome, http_status,
                             latency_ms, attempt, detail)
    VALUES (v_op.gid, 'branch_called', 'tm', v_op.branch_id, v_op.op, p_target, v_op.url,
            p_outcome, p_http_status, p_latency_ms, attempts, p_detail);
    IF p_next_op_id IS NOT NULL THEN
        SELECT * INTO v_next FROM trans_branch_op o WHERE o.id = p_next_op_id;
        continued := CASE WHEN tcc_lease_for_call(v_op.gid, p_owner, p_lease_secs, v_next, TRUE)
                          THEN 'leased' ELSE 'lost' END;
        RETURN;
    END IF;
    UPDATE trans_global g
    SET status = p_to, finish_time = now(), update_time = now(), owner = NULL, lease_expire = NULL
    WHERE g.gid = v_op.gid AND g.owner = p_owner AND g.status = p_from
    RETURNING g.trans_type INTO trans_type;
    IF NOT FOUND THEN
        continued := 'not_finished';
        RETURN;
    END IF;
    INSERT INTO trans_event (gid, kind, actor, status) VALUES (v_op.gid, p_to, 'tm', p_to);
    continued := 'finished';
    second_phase_secs := EXTRACT(EPOCH FROM clock_timestamp() - (
        SELECT min(e.create_time) FROM trans_event e
        WHERE e.gid = v_op.gid AND e.kind IN ('submitted', 'aborting')))::float8;
END $$;

COMMENT ON FUNCTION tcc_record_success IS 'Second phase: a successful call recorded, then the next call leased or the final status written, in one commit.';

COMMENT ON COLUMN trans_event.create_time IS
    'When the event was recorded (clock_timestamp(): distinct within one database transaction). A Try report carried by a later call is recorded when that call arrives; its latency_ms is the Try''s own.';
