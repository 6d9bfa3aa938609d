-- The hot path of the state machine as server-side functions (issue 6).
--
-- Each step the AP or the second phase takes (prepare, registerBranch, a Try report,
-- submit/abort with the claim of the second phase, a successful Confirm/Cancel with what follows
-- it) is ONE call of one function: one round trip and one commit, with no BEGIN/COMMIT round
-- trips around it, and PL/pgSQL keeps each statement's plan for the life of the connection, so
-- nothing is parsed or planned again per request. Before, the same steps took 31 statements and
-- 10 commits per global transaction, and planning alone cost about 1.2 ms of it (docs/BENCHMARKS.md).
-- DTM makes the same trade on its Redis store, where every step is one Lua script.
--
-- The Rust side (coordinator/src/store.rs) keeps the protocol's decisions readable: it calls these
-- functions and maps their answers; every status change is still a compare-and-set on the old
-- status, and every second-phase write still requires the caller's lease (design §4, §5).

-- The foreign keys of the child tables are dropped: these functions (and the operator's actions in
-- store.rs) are the only writers, and each checks the parent row itself, under a lock where it
-- matters. A foreign key cost a trigger and a row lock on trans_global per child row, i.e. per
-- event: 15 per transfer. DTM's own tables have no foreign keys either. Retention deletes the
-- children explicitly (store::delete_finished_before).
ALTER TABLE trans_event DROP CONSTRAINT trans_event_gid_fkey;
ALTER TABLE trans_branch_op DROP CONSTRAINT trans_branch_op_gid_fkey;

-- The service behind a branch op, named once at registration from its URL (events::service_name
-- in Rust), so the events of its calls copy it instead of deriving it per call. NULL on rows
-- registered before this migration: their events then name the URL itself.
ALTER TABLE trans_branch_op ADD COLUMN target TEXT;
COMMENT ON COLUMN trans_branch_op.target IS
    'The branch''s service name (TransOutConfirm -> TransOut), computed once at registration; events of its calls copy it.';

-- prepare: creates the transaction and its `prepared` event. Answers 'created', or the status of
-- the transaction that already had this gid.
CREATE FUNCTION tcc_prepare(p_gid TEXT, p_timeout_to_fail INTEGER, p_retry_interval INTEGER,
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

-- Try reports carried by a later call of the AP's client (registerBranch, submit, abort: the
-- field try_reports) instead of a reportTry request each: `try_reported` events, in the order
-- given, for the branches of p_gid that are registered (others are dropped, as reportTry refuses
-- them). p_reports: a JSON array of {branch_id, target, url, outcome, http_status, latency_ms,
-- detail}, already validated by the coordinator; NULL for none. Answers how many were recorded.
-- The caller holds a lock on the transaction's row, so that the retention job, which deletes the
-- row first and its events in a later statement, cannot miss these events (no orphans).
CREATE FUNCTION tcc_record_try_reports(p_gid TEXT, p_reports TEXT)
RETURNS INTEGER LANGUAGE plpgsql AS $$
DECLARE
    v_recorded INTEGER;
BEGIN
    IF p_reports IS NULL THEN
        RETURN 0;
    END IF;
    INSERT INTO trans_event (gid, kind, actor, branch_id, op, target, url, outcome, http_status,
                             latency_ms, detail)
    SELECT p_gid, 'try_reported', 'ap', r.branch_id, 'try', r.target, r.url, r.outcome,
           r.http_status, r.latency_ms, r.detail
    FROM ROWS FROM (json_to_recordset(p_reports::json)
                    AS (branch_id TEXT, target TEXT, url TEXT, outcome TEXT, http_status INTEGER,
                        latency_ms INTEGER, detail TEXT))
         WITH ORDINALITY AS r(branch_id, target, url, outcome, http_status, latency_ms, detail, n)
    WHERE EXISTS (SELECT 1 FROM trans_branch_op o
                  WHERE o.gid = p_gid AND o.branch_id = r.branch_id)
    ORDER BY r.n;
    GET DIAGNOSTICS v_recorded = ROW_COUNT;
    RETURN v_recorded;
END $$;

-- registerBranch: records a branch's Confirm and Cancel while the transaction is `prepared`, with
-- its `branch_registered` event. The transaction row is locked FOR SHARE so that a concurrent
-- submit/abort (an UPDATE) waits: a branch is registered before the second phase reads the branch
-- list, or refused. Answers 'registered', 'already' (the same registration again), 'mismatch'
-- (the branch id is taken with other URLs or data), 'unknown' (no such gid), or the status of a
-- transaction that is no longer `prepared`. The Try reports it carries (p_try_reports, see
-- tcc_record_try_reports) are recorded first, whatever the answer: they describe earlier Trys.
CREATE FUNCTION tcc_register_branch(p_gid TEXT, p_branch_id TEXT, p_data TEXT, p_confirm TEXT,
                                    p_cancel TEXT, p_confirm_target TEXT, p_cancel_target TEXT,
                                    p_detail TEXT, p_try_reports TEXT)
RETURNS TEXT LANGUAGE plpgsql AS $$
DECLARE
    v_status TEXT;
    v_inserted INTEGER;
BEGIN
    SELECT status INTO v_status FROM trans_global WHERE gid = p_gid FOR SHARE;
    IF NOT FOUND THEN
        RETURN 'unknown';
    END IF;
    PERFORM tcc_record_try_reports(p_gid, p_try_reports);
    IF v_status <> 'prepared' THEN
        RETURN v_status;
    END IF;
    INSERT INTO trans_branch_op (gid, branch_id, op, url, data, status, target)
    VALUES (p_gid, p_branch_id, 'confirm', p_confirm, p_data, 'prepared', p_confirm_target),
           (p_gid, p_branch_id, 'cancel', p_cancel, p_data, 'prepared', p_cancel_target)
    ON CONFLICT (gid, branch_id, op) DO NOTHING;
    GET DIAGNOSTICS v_inserted = ROW_COUNT;
    IF v_inserted = 2 THEN
        INSERT INTO trans_event (gid, kind, actor, branch_id, target, detail)
        VALUES (p_gid, 'branch_registered', 'ap', p_branch_id, p_confirm_target, p_detail);
        RETURN 'registered';
    END IF;
    IF (SELECT count(*) FROM trans_branch_op
        WHERE gid = p_gid AND branch_id = p_branch_id AND data = p_data
          AND url = CASE op WHEN 'confirm' THEN p_confirm ELSE p_cancel END) = 2 THEN
        RETURN 'already';
    END IF;
    RETURN 'mismatch';
END $$;

-- reportTry (this project's extension): a `try_reported` event, if the branch is registered.
-- Answers 'recorded', 'unknown_branch' or 'unknown_gid'.
CREATE FUNCTION tcc_report_try(p_gid TEXT, p_branch_id TEXT, p_target TEXT, p_url TEXT,
                               p_outcome TEXT, p_http_status INTEGER, p_latency_ms INTEGER,
                               p_detail TEXT)
RETURNS TEXT LANGUAGE plpgsql AS $$
BEGIN
    -- The lock a foreign key would take: retention cannot delete the row under this report.
    PERFORM 1 FROM trans_global WHERE gid = p_gid FOR KEY SHARE;
    IF NOT FOUND THEN
        RETURN 'unknown_gid';
    END IF;
    IF EXISTS (SELECT 1 FROM trans_branch_op WHERE gid = p_gid AND branch_id = p_branch_id) THEN
        INSERT INTO trans_event (gid, kind, actor, branch_id, op, target, url, outcome,
                                 http_status, latency_ms, detail)
        VALUES (p_gid, 'try_reported', 'ap', p_branch_id, 'try', p_target, p_url, p_outcome,
                p_http_status, p_latency_ms, p_detail);
        RETURN 'recorded';
    END IF;
    RETURN 'unknown_branch';
END $$;

-- The start of a second-phase pass by the lease holder `p_owner`: the pending ops of the
-- transaction's phase in call order (Confirms in registration order, Cancels in reverse; design
-- §4) as a JSON array, and, when there is one, the `branch_calling` event of the first call with a
-- lease that outlasts it (at least request_timeout + 5 s; p_renew false: the caller has just set
-- it). `first_leased` is false when the lease was lost (nothing recorded then).
CREATE FUNCTION tcc_start_pass(p_gid TEXT, p_owner TEXT, p_lease_secs BIGINT, p_renew BOOLEAN,
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

-- Renews `p_owner`'s lease on the transaction right before calling `p_branch`, so that no other
-- worker claims it while the call is in flight, and writes the call's `branch_calling` event: a
-- call whose answer is never recorded (the coordinator was killed during it) still shows in the
-- log. False when the lease was lost (nothing recorded). With p_renew false the caller has just
-- set the lease in the same database transaction, and only the event is written.
CREATE FUNCTION tcc_lease_for_call(p_gid TEXT, p_owner TEXT, p_lease_secs BIGINT,
                                   p_branch trans_branch_op, p_renew BOOLEAN)
RETURNS BOOLEAN LANGUAGE plpgsql AS $$
BEGIN
    IF p_renew THEN
        UPDATE trans_global
        SET lease_expire = now() + make_interval(secs => GREATEST(p_lease_secs, request_timeout + 5))
        WHERE gid = p_gid AND owner = p_owner;
        IF NOT FOUND THEN
            RETURN FALSE;
        END IF;
    END IF;
    INSERT INTO trans_event (gid, kind, actor, branch_id, op, target, url)
    VALUES (p_gid, 'branch_calling', 'tm', p_branch.branch_id, p_branch.op,
            coalesce(p_branch.target, p_branch.url), p_branch.url);
    RETURN TRUE;
END $$;

-- submit (p_phase = 'submitted') or abort (p_phase = 'aborting', with p_reason): the transition
-- from `prepared` with its event, and, in the same commit, the claim of the second phase for
-- `p_owner` when no live lease is held (a worker may hold one on a prepared transaction it is
-- timing out), with a lease that outlasts the first call, and the start of its first pass
-- (tcc_start_pass). A repeated submit/abort changes
-- no status but still claims a free lease, so it drives what is pending.
--
-- outcome: 'changed', 'unknown', or the status the transaction was in (the caller tells "already
-- there" from "refused"); trans: the transaction row as JSON after the change (NULL when
-- unknown); claimed: whether `p_owner` now holds the lease, and then first_leased and ops as
-- tcc_start_pass answers them. The Try reports the call carries (p_try_reports, see
-- tcc_record_try_reports) are recorded first: those Trys came before the decision.
CREATE FUNCTION tcc_begin_second_phase(p_gid TEXT, p_phase TEXT, p_reason TEXT, p_owner TEXT,
                                       p_lease_secs BIGINT, p_try_reports TEXT,
                                       OUT outcome TEXT, OUT trans TEXT, OUT claimed BOOLEAN,
                                       OUT first_leased BOOLEAN, OUT ops TEXT)
LANGUAGE plpgsql AS $$
DECLARE
    v_row trans_global;
BEGIN
    claimed := FALSE;
    UPDATE trans_global
    SET status = p_phase,
        rollback_reason = CASE WHEN p_phase = 'aborting' THEN p_reason ELSE rollback_reason END,
        next_cron_time = now(), next_cron_interval = retry_interval, update_time = now(),
        owner = CASE WHEN lease_expire IS NULL OR lease_expire < now() THEN p_owner ELSE owner END,
        lease_expire = CASE WHEN lease_expire IS NULL OR lease_expire < now()
                            THEN now() + make_interval(secs => GREATEST(p_lease_secs, request_timeout + 5))
                            ELSE lease_expire END
    WHERE gid = p_gid AND status = 'prepared'
    RETURNING * INTO v_row;
    IF FOUND THEN
        -- Under the row lock the UPDATE took; the Trys came before the decision.
        PERFORM tcc_record_try_reports(p_gid, p_try_reports);
        INSERT INTO trans_event (gid, kind, actor, status, detail)
        VALUES (p_gid, p_phase, 'ap', p_phase,
                CASE WHEN p_phase = 'aborting' THEN p_reason END);
        outcome := 'changed';
    ELSE
        UPDATE trans_global
        SET owner = p_owner,
            lease_expire = now() + make_interval(secs => GREATEST(p_lease_secs, request_timeout + 5)),
            update_time = now()
        WHERE gid = p_gid AND status = p_phase AND (lease_expire IS NULL OR lease_expire < now())
        RETURNING * INTO v_row;
        IF NOT FOUND THEN
            SELECT * INTO v_row FROM trans_global WHERE gid = p_gid FOR KEY SHARE;
            IF NOT FOUND THEN
                outcome := 'unknown';
                RETURN;
            END IF;
        END IF;
        PERFORM tcc_record_try_reports(p_gid, p_try_reports);
        outcome := v_row.status;
    END IF;
    trans := row_to_json(v_row)::text;
    IF v_row.owner IS NOT DISTINCT FROM p_owner THEN
        claimed := TRUE;
        SELECT s.first_leased, s.ops INTO first_leased, ops
        FROM tcc_start_pass(p_gid, p_owner, p_lease_secs, FALSE) s;
    END IF;
END $$;

-- A Confirm/Cancel call that succeeded, recorded by the lease holder: the op becomes `succeed`
-- (attempts + 1) with its `branch_called` event (p_target: the service, named as the failed
-- attempts' events name it), and in the same commit either the lease is
-- renewed for the next call `p_next_op_id` with that call's `branch_calling` event
-- (tcc_lease_for_call), or, when p_next_op_id is NULL, the transaction moves from `p_from` to
-- `p_to` (`succeed`/`failed`), releasing the lease, with its final event.
--
-- attempts: the op's attempts after this one (NULL if it had already succeeded); continued:
-- 'leased' or 'lost' (next call), 'finished' or 'not_finished' (the compare-and-set of the final
-- status lost); trans_type and second_phase_secs (from its submitted/aborting event to now) when
-- finished.
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

COMMENT ON FUNCTION tcc_prepare IS 'prepare: the transaction and its prepared event; answers created or the existing status.';
COMMENT ON FUNCTION tcc_register_branch IS 'registerBranch: Confirm and Cancel of a branch and its event, under a FOR SHARE lock of the transaction.';
COMMENT ON FUNCTION tcc_record_try_reports IS 'Try reports carried by registerBranch/submit/abort (try_reports): try_reported events for registered branches.';
COMMENT ON FUNCTION tcc_report_try IS 'reportTry (extension): a try_reported event for a registered branch.';
COMMENT ON FUNCTION tcc_start_pass IS 'Second phase: pending ops in call order, and the lease and branch_calling event of the first call.';
COMMENT ON FUNCTION tcc_lease_for_call IS 'Second phase: renews the lease for one call and writes its branch_calling event.';
COMMENT ON FUNCTION tcc_begin_second_phase IS 'submit/abort: the transition, the claim of the second phase and the start of its first pass, in one commit.';
COMMENT ON FUNCTION tcc_record_success IS 'Second phase: a successful call recorded, then the next call leased or the final status written, in one commit.';
