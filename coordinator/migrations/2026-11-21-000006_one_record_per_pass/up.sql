-- One commit for all the calls of a second-phase pass (issue 6, round 3).
--
-- Until now each successful Confirm/Cancel was committed before the next call was sent
-- (tcc_record_success): one commit per branch. Confirm and Cancel are idempotent (the RM's
-- sub-transaction barrier, design §6), so a call whose success is lost in a crash is simply sent
-- again by the next pass and answered from the barrier: the per-call commit bought only a finer
-- event log after a crash, not safety. DTM can draw the same line: with UpdateBranchSync = 0 it
-- writes branch statuses asynchronously, in batches (dtmsvr, TransBranch.changeStatus; current
-- releases write them synchronously by default). Here they are written once per pass: the pass calls
-- its ops in order (design §4 unchanged) and then records every call with the final status in one
-- commit (after a failed call: the calls so far, then the retry's schedule). A transaction of N
-- branches costs N + 3 coordinator commits instead of 2N + 2: 5 instead of 6 for two branches.
--
-- What a crash costs now: the event log of a pass cut short shows its first call's
-- `branch_calling` (written with the claim) and nothing after it; the next pass sends those calls
-- again. The lease still outlasts every call in flight: the engine records what it has and renews
-- the lease before a call that might outlive it (p_next_op_id below).

-- The calls of one pass, in call order, recorded by the lease holder `p_owner` of `p_gid`.
-- p_calls is a JSON array of
--   {op_id, succeeded, result, outcome, http_status, latency_ms, detail, target,
--    calling_ms_ago, called_ms_ago}
-- one per call: each op gets attempts + 1 and `last_result`, and becomes `succeed` if the call
-- succeeded (only from `prepared`; finish_time: when it answered); each call gets its
-- `branch_called` event, and its `branch_calling` event too unless that was written before the
-- call (calling_ms_ago NULL: the first call after the claim or a lease renewal). The events are
-- dated when they happened, which the engine gives as milliseconds before this call (its clock
-- and the database's need not agree).
-- Then, in the same commit, one of:
--   * p_next_op_id set: the lease is renewed for that next call, with its `branch_calling` event
--     (tcc_lease_for_call): continued 'leased' or 'lost';
--   * p_to set: the transaction moves from `p_from` to `p_to` (`succeed`/`failed`), releasing
--     the lease, with its final event: continued 'finished' with trans_type and
--     second_phase_secs (from its submitted/aborting event to now), or 'not_finished' when the
--     compare-and-set lost;
--   * neither: continued 'recorded' (the engine schedules the retry of a failed call next).
-- attempts: the attempts of each op after its call, in call order (0 for a success of an op that
-- had already succeeded).
CREATE FUNCTION tcc_record_calls(p_gid TEXT, p_calls TEXT, p_owner TEXT, p_lease_secs BIGINT,
                                 p_next_op_id BIGINT, p_from TEXT, p_to TEXT,
                                 OUT attempts INTEGER[], OUT continued TEXT,
                                 OUT trans_type TEXT, OUT second_phase_secs FLOAT8)
LANGUAGE plpgsql AS $$
DECLARE
    v_now TIMESTAMPTZ := clock_timestamp();
    v_next trans_branch_op;
BEGIN
    -- Set-based: one UPDATE for every op and one INSERT for every event of the pass, whatever
    -- the number of branches (each statement pays the executor's start-up once).
    WITH c AS (
        SELECT *
        FROM ROWS FROM (json_to_recordset(p_calls::json)
                        AS (op_id BIGINT, succeeded BOOLEAN, result TEXT, outcome TEXT,
                            http_status INTEGER, latency_ms INTEGER, detail TEXT, target TEXT,
                            calling_ms_ago FLOAT8, called_ms_ago FLOAT8))
             WITH ORDINALITY AS c(op_id, succeeded, result, outcome, http_status, latency_ms,
                                  detail, target, calling_ms_ago, called_ms_ago, n)
    ), upd AS (
        UPDATE trans_branch_op o
        SET status = CASE WHEN c.succeeded THEN 'succeed' ELSE o.status END,
            finish_time = CASE WHEN c.succeeded
                               THEN v_now - make_interval(secs => c.called_ms_ago / 1000.0)
                               ELSE o.finish_time END,
            attempts = o.attempts + 1, last_result = c.result, update_time = now()
        FROM c
        WHERE o.id = c.op_id AND o.gid = p_gid AND (NOT c.succeeded OR o.status = 'prepared')
        RETURNING o.id, o.attempts
    ), ev AS (
        INSERT INTO trans_event (gid, kind, actor, branch_id, op, target, url, outcome,
                                 http_status, latency_ms, attempt, detail, create_time)
        SELECT p_gid, e.kind, 'tm', o.branch_id, o.op, c.target, o.url, e.outcome, e.http_status,
               e.latency_ms, e.attempt, e.detail,
               v_now - make_interval(secs => e.ms_ago / 1000.0)
        FROM c
        JOIN trans_branch_op o ON o.id = c.op_id AND o.gid = p_gid
        LEFT JOIN upd ON upd.id = c.op_id
        CROSS JOIN LATERAL (VALUES
            (1, 'branch_calling', NULL, NULL, NULL, NULL, NULL, c.calling_ms_ago),
            (2, 'branch_called', c.outcome, c.http_status, c.latency_ms, upd.attempts, c.detail,
             c.called_ms_ago))
            AS e(k, kind, outcome, http_status, latency_ms, attempt, detail, ms_ago)
        WHERE e.ms_ago IS NOT NULL
        -- The ids (the log's order) follow this order: the id default is evaluated as the sorted
        -- rows come out, as for the Try reports in tcc_record_try_reports.
        ORDER BY c.n, e.k
    )
    SELECT coalesce(array_agg(coalesce(upd.attempts, 0) ORDER BY c.n), '{}')
    INTO attempts
    FROM c LEFT JOIN upd ON upd.id = c.op_id;

    IF p_next_op_id IS NOT NULL THEN
        SELECT * INTO v_next FROM trans_branch_op o WHERE o.id = p_next_op_id;
        continued := CASE WHEN tcc_lease_for_call(p_gid, p_owner, p_lease_secs, v_next, TRUE)
                          THEN 'leased' ELSE 'lost' END;
        RETURN;
    END IF;
    IF p_to IS NULL THEN
        continued := 'recorded';
        RETURN;
    END IF;
    UPDATE trans_global g
    -- clock_timestamp(), as the calls' times: the transaction finishes after its last answer.
    SET status = p_to, finish_time = clock_timestamp(), update_time = now(), owner = NULL,
        lease_expire = NULL
    WHERE g.gid = p_gid AND g.owner = p_owner AND g.status = p_from
    RETURNING g.trans_type INTO trans_type;
    IF NOT FOUND THEN
        continued := 'not_finished';
        RETURN;
    END IF;
    INSERT INTO trans_event (gid, kind, actor, status) VALUES (p_gid, p_to, 'tm', p_to);
    continued := 'finished';
    second_phase_secs := EXTRACT(EPOCH FROM clock_timestamp() - (
        SELECT min(e.create_time) FROM trans_event e
        WHERE e.gid = p_gid AND e.kind IN ('submitted', 'aborting')))::float8;
END $$;

COMMENT ON FUNCTION tcc_record_calls IS 'Second phase: every call of a pass recorded, then the next call leased, the final status written, or nothing more, in one commit.';

-- Replaced by tcc_record_calls (a pass of one call is the same thing).
DROP FUNCTION tcc_record_success;

COMMENT ON COLUMN trans_event.create_time IS
    'When it happened: when the event was recorded (clock_timestamp(): distinct within one database transaction), except for the calls a pass records when it ends, dated when the call was sent (branch_calling) or answered (branch_called). A Try report carried by a later call is recorded when that call arrives; its latency_ms is the Try''s own.';
