-- DTM's order for both second phases: Confirms, like Cancels, from the last registered branch to
-- the first (dtm-labs/dtm, dtmsvr/trans_type_tcc.go, ProcessOnce). For nested TCC this confirms
-- a parent's children (registered during the parent's Try, so after it) before the parent.
--
-- tcc_start_pass: the pending ops of the transaction's phase, last registered first, as a JSON
-- array, and, when there is one, the `branch_calling` event of the first call with a lease that
-- outlasts it (at least request_timeout + 5 s; p_renew false: the caller has just set it).
-- `first_leased` is false when the lease was lost (nothing recorded then).
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
    SELECT coalesce(json_agg(o ORDER BY o.id DESC), '[]')
    INTO ops
    FROM trans_branch_op o
    WHERE o.gid = p_gid AND o.op = v_op AND o.status = 'prepared';
    IF json_array_length(ops::json) > 0 THEN
        -- The first op to call is the array's first element: no second read of the table.
        v_first := json_populate_record(NULL::trans_branch_op, ops::json -> 0);
        first_leased := tcc_lease_for_call(p_gid, p_owner, p_lease_secs, v_first, p_renew);
    END IF;
END $$;

COMMENT ON FUNCTION tcc_start_pass IS 'Second phase: pending ops in call order (last registered first, as DTM), and the lease and branch_calling event of the first call.';
