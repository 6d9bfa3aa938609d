-- Back to Confirms in registration order (Cancels in reverse), as migration
-- ..._state_machine_functions made tcc_start_pass.
CREATE OR REPLACE FUNCTION tcc_start_pass(p_gid TEXT, p_owner TEXT, p_lease_secs BIGINT, p_renew BOOLEAN,
                               OUT first_leased BOOLEAN, OUT ops TEXT)
LANGUAGE plpgsql AS $$
DECLARE
    v_status TEXT;
    v_op TEXT;
    v_first trans_branch_op;
BEGIN
    SELECT status INTO v_status FROM trans_global WHERE gid = p_gid;
    v_op := CASE v_status WHEN 'submitted' THEN 'confirm' WHEN 'aborting' THEN 'cancel' END;
    first_leased := TRUE;
    ops := '[]';
    IF v_op IS NULL THEN
        RETURN;
    END IF;
    SELECT coalesce(json_agg(o ORDER BY CASE WHEN v_op = 'cancel' THEN -o.id ELSE o.id END), '[]')
    INTO ops
    FROM trans_branch_op o
    WHERE o.gid = p_gid AND o.op = v_op AND o.status = 'prepared';
    IF json_array_length(ops::json) > 0 THEN
        -- The first op to call is the array's first element: no second read of the table.
        v_first := json_populate_record(NULL::trans_branch_op, ops::json -> 0);
        first_leased := tcc_lease_for_call(p_gid, p_owner, p_lease_secs, v_first, p_renew);
    END IF;
END $$;

COMMENT ON FUNCTION tcc_start_pass IS 'Second phase: pending ops in call order, and the lease and branch_calling event of the first call.';
