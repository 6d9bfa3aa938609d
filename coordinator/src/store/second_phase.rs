//! The second phase: claims and leases, the start of a pass, the record of its calls, the retry's
//! schedule and the timeout abort (docs/ARCHITECTURE.md#second-phase-retries-leases-and-replicas).
//! Each function is one database transaction; every write requires the caller's lease.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use diesel::dsl::now as db_now;
use diesel::prelude::*;
use tcc::protocol::{GlobalStatus, Op};

use super::{lease_end, lease_secs_i32, BranchOp, TransGlobal, UNFINISHED};
use crate::events::{self, Actor, EventKind, NewEvent};
use crate::schema::{trans_branch_op, trans_global};

/// The start of one second-phase pass: the ops still to call, in call order, with the lease
/// renewed for the first of them (and its `branch_calling` event written).
#[derive(Debug, Clone)]
pub struct Pass {
    /// Pending ops of the transaction's phase, in call order: the last registered branch first,
    /// for Confirms and Cancels alike (DTM's order); empty when nothing is left.
    pub ops: Vec<BranchOp>,
    /// An instant no later than the one at which the database set the lease: it expires
    /// [`lease_duration`] after this at the earliest. The engine renews the lease before a call
    /// that might outlive it.
    pub leased_at: Instant,
}

/// How long a lease taken or renewed for a call lasts: `LEASE_SECONDS`, and at least the
/// transaction's `request_timeout` plus 5 s, so that it outlasts the call it was taken for (the
/// rule the database applies when it sets `lease_expire`).
pub fn lease_duration(lease_secs: i64, request_timeout: i32) -> Duration {
    Duration::from_secs(lease_secs.max(i64::from(request_timeout) + 5).max(1) as u64)
}

/// The op a transaction in `status` calls in its second phase: Confirm while `submitted`,
/// Cancel while `aborting`, none otherwise.
pub fn phase_op(status: GlobalStatus) -> Option<Op> {
    match status {
        GlobalStatus::Submitted => Some(Op::Confirm),
        GlobalStatus::Aborting => Some(Op::Cancel),
        _ => None,
    }
}

/// The final status a second phase ends in: `succeed` after `submitted`, `failed` after
/// `aborting`; none for other statuses.
pub fn phase_end(status: GlobalStatus) -> Option<GlobalStatus> {
    match status {
        GlobalStatus::Submitted => Some(GlobalStatus::Succeed),
        GlobalStatus::Aborting => Some(GlobalStatus::Failed),
        _ => None,
    }
}

/// Claims up to `limit` due, unleased, unfinished transactions for the lease token `token`,
/// skipping rows another replica is claiming at this instant: a `SELECT ... FOR UPDATE SKIP
/// LOCKED` and the `UPDATE` of what it locked, in one database transaction.
pub fn claim_due(
    conn: &mut PgConnection,
    token: &str,
    lease_secs: i64,
    limit: i64,
) -> QueryResult<Vec<TransGlobal>> {
    use trans_global::dsl as g;
    conn.transaction(|conn| {
        let due: Vec<i64> = g::trans_global
            .filter(g::status.eq_any(UNFINISHED))
            .filter(g::next_cron_time.le(db_now))
            .filter(g::lease_expire.is_null().or(g::lease_expire.lt(db_now)))
            .order(g::next_cron_time)
            .limit(limit)
            .select(g::id)
            .for_update()
            .skip_locked()
            .load(conn)?;
        if due.is_empty() {
            return Ok(Vec::new());
        }
        diesel::update(g::trans_global.filter(g::id.eq_any(&due)))
            .set((
                g::owner.eq(token),
                g::lease_expire.eq(lease_end(lease_secs_i32(lease_secs)).nullable()),
                g::update_time.eq(db_now),
            ))
            .returning(TransGlobal::as_returning())
            .get_results(conn)
    })
}

/// Claims `gid` for `owner` if its status is one of `statuses` and nobody holds a live lease;
/// the row after the claim.
pub(super) fn claim_one(
    conn: &mut PgConnection,
    gid: &str,
    owner: &str,
    lease_secs: i64,
    statuses: &[GlobalStatus],
) -> QueryResult<Option<TransGlobal>> {
    use trans_global::dsl as g;
    let statuses: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
    diesel::update(g::trans_global)
        .filter(g::gid.eq(gid))
        .filter(g::status.eq_any(statuses))
        .filter(g::lease_expire.is_null().or(g::lease_expire.lt(db_now)))
        .set((
            g::owner.eq(owner),
            g::lease_expire.eq(lease_end(lease_secs_i32(lease_secs)).nullable()),
            g::update_time.eq(db_now),
        ))
        .returning(TransGlobal::as_returning())
        .get_result(conn)
        .optional()
}

/// Whether `owner` is a lease token of replica `coordinator_id` (`<coordinator_id>:<32 hex
/// digits>`, optionally followed by `:<digits>`). The id part must match exactly, so replica `a`
/// never takes the tokens of replica `a:b` for its own.
pub fn is_own_token(owner: &str, coordinator_id: &str) -> bool {
    let Some(rest) = owner
        .strip_prefix(coordinator_id)
        .and_then(|rest| rest.strip_prefix(':'))
    else {
        return false;
    };
    let (hex, suffix) = rest.split_at(rest.len().min(32));
    let is_hex = hex.len() == 32 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let suffix_ok = suffix.is_empty()
        || suffix
            .strip_prefix(':')
            .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()));
    is_hex && suffix_ok
}

/// Releases the leases a previous life of this replica held ([`is_own_token`]), so its work
/// resumes at once after a restart instead of after the lease. Returns how many.
pub fn release_own_leases(conn: &mut PgConnection, coordinator_id: &str) -> QueryResult<usize> {
    use trans_global::dsl as g;
    conn.transaction(|conn| {
        // `<coordinator_id>:%`, the id's own `%`, `_` and `\` escaped: only this replica's rows.
        let escaped: String = coordinator_id
            .chars()
            .flat_map(|c| match c {
                '%' | '_' | '\\' => vec!['\\', c],
                c => vec![c],
            })
            .collect();
        let leased: Vec<(i64, Option<String>)> = g::trans_global
            .filter(g::status.eq_any(UNFINISHED))
            .filter(g::owner.like(format!("{escaped}:%")).escape('\\'))
            .select((g::id, g::owner))
            .for_update()
            .load(conn)?;
        let own: Vec<i64> = leased
            .into_iter()
            .filter(|(_, owner)| {
                owner
                    .as_deref()
                    .is_some_and(|o| is_own_token(o, coordinator_id))
            })
            .map(|(id, _)| id)
            .collect();
        if own.is_empty() {
            return Ok(0);
        }
        diesel::update(g::trans_global.filter(g::id.eq_any(&own)))
            .set((
                g::owner.eq(None::<String>),
                g::lease_expire.eq(None::<DateTime<Utc>>),
            ))
            .execute(conn)
    })
}

/// `prepared -> aborting` because `timeout_to_fail` passed, with its `aborting` event (actor
/// `timeout`, reason `Timeout after N seconds`); only by the lease holder `owner`. `false` when
/// the compare-and-set did not fire (not prepared, or not the lease holder).
pub fn abort_timed_out(
    conn: &mut PgConnection,
    trans: &TransGlobal,
    owner: &str,
) -> QueryResult<bool> {
    use trans_global::dsl as g;
    let reason = format!("Timeout after {} seconds", trans.timeout_to_fail);
    conn.transaction(|conn| {
        let changed = diesel::update(g::trans_global)
            .filter(g::gid.eq(&trans.gid))
            .filter(g::owner.eq(owner))
            .filter(g::status.eq(GlobalStatus::Prepared.as_str()))
            .set((
                g::status.eq(GlobalStatus::Aborting.as_str()),
                g::rollback_reason.eq(&reason),
                g::next_cron_interval.eq(g::retry_interval),
                g::update_time.eq(db_now),
            ))
            .execute(conn)?;
        if changed == 1 {
            events::insert(
                conn,
                &NewEvent {
                    status: Some(GlobalStatus::Aborting.as_str().to_owned()),
                    detail: Some(reason.clone()),
                    ..NewEvent::new(&trans.gid, EventKind::Aborting, Actor::Timeout)
                },
            )?;
        }
        Ok(changed == 1)
    })
}

/// The ops of `trans`'s phase (its Confirms while `submitted`, its Cancels while `aborting`),
/// pending or not, in call order: the last registered branch first. Every registered branch has
/// one.
pub(super) fn phase_ops(
    conn: &mut PgConnection,
    trans: &TransGlobal,
) -> QueryResult<Vec<BranchOp>> {
    use trans_branch_op::dsl as o;
    let Some(op) = phase_op(trans.global_status()) else {
        return Ok(Vec::new());
    };
    o::trans_branch_op
        .filter(o::gid.eq(&trans.gid))
        .filter(o::op.eq(op.as_str()))
        .order(o::id.desc())
        .select(BranchOp::as_select())
        .load(conn)
}

impl Pass {
    /// The pass over the still `prepared` ones of `ops` (in the order given), whose lease was
    /// set no earlier than `leased_at`.
    pub(super) fn over_pending(ops: Vec<BranchOp>, leased_at: Instant) -> Pass {
        let ops = ops.into_iter().filter(|o| o.status == "prepared").collect();
        Pass { ops, leased_at }
    }
}

/// The `branch_calling` event of a call about to be sent to `branch`: written before the call
/// (with the claim or the lease renewal), so that a call whose answer is never recorded (the
/// coordinator was killed during it) still shows in the log.
pub(super) fn announce_call(branch: &BranchOp) -> NewEvent {
    NewEvent {
        branch_id: Some(branch.branch_id.clone()),
        op: Some(branch.op.clone()),
        target: Some(branch.target.clone()),
        url: Some(branch.url.clone()),
        ..NewEvent::new(&branch.gid, EventKind::BranchCalling, Actor::Tm)
    }
}

/// Renews `owner`'s lease on `gid` before a call, so that it outlasts it. `false` when the
/// lease was lost (nothing changed).
fn renew_lease(
    conn: &mut PgConnection,
    gid: &str,
    owner: &str,
    lease_secs: i64,
) -> QueryResult<bool> {
    use trans_global::dsl as g;
    let renewed = diesel::update(g::trans_global)
        .filter(g::gid.eq(gid))
        .filter(g::owner.eq(owner))
        .set(g::lease_expire.eq(lease_end(lease_secs_i32(lease_secs)).nullable()))
        .execute(conn)?;
    Ok(renewed == 1)
}

/// The start of a pass over `trans`, claimed earlier by `owner` ([`claim_due`]): its pending ops,
/// and the lease renewed for the first call with that call's `branch_calling` event, in one
/// database transaction. `None` when the lease was lost (nothing written).
pub fn start_pass(
    conn: &mut PgConnection,
    trans: &TransGlobal,
    owner: &str,
    lease_secs: i64,
) -> QueryResult<Option<Pass>> {
    let leased_at = Instant::now();
    conn.transaction(|conn| {
        let pass = Pass::over_pending(phase_ops(conn, trans)?, leased_at);
        if let Some(first) = pass.ops.first() {
            if !renew_lease(conn, &trans.gid, owner, lease_secs)? {
                return Ok(None);
            }
            events::insert(conn, &announce_call(first))?;
        }
        Ok(Some(pass))
    })
}

/// Claims `gid` for `owner` if it is in its second phase and nobody holds a live lease, and
/// starts the pass (pending ops, the first call's `branch_calling` event), in one database
/// transaction: what the operator's "retry now" does to run a transaction's second phase at once
/// ([`crate::engine::Engine::drive`]). `None` when it was not claimed.
pub fn claim_and_start(
    conn: &mut PgConnection,
    gid: &str,
    owner: &str,
    lease_secs: i64,
) -> QueryResult<Option<(TransGlobal, Pass)>> {
    // Before BEGIN is sent: the lease's clock starts no earlier than this.
    let leased_at = Instant::now();
    conn.transaction(|conn| {
        let phases = [GlobalStatus::Submitted, GlobalStatus::Aborting];
        let Some(trans) = claim_one(conn, gid, owner, lease_secs, &phases)? else {
            return Ok(None);
        };
        let pass = Pass::over_pending(phase_ops(conn, &trans)?, leased_at);
        if let Some(first) = pass.ops.first() {
            events::insert(conn, &announce_call(first))?;
        }
        Ok(Some((trans, pass)))
    })
}

/// What [`record_calls`](super::record_calls) does after recording the calls, in the same statement.
#[derive(Debug, Clone)]
pub enum AfterCalls {
    /// Nothing more (a call failed: the engine schedules its retry next).
    Nothing,
    /// Another op is called next: renew the lease for it, with its `branch_calling` event.
    Call(Box<BranchOp>),
    /// Every op of the phase succeeded: move `from` to `to`, releasing the lease, with the final
    /// event.
    Finish {
        /// `submitted` or `aborting`.
        from: GlobalStatus,
        /// `succeed` or `failed`.
        to: GlobalStatus,
    },
}

/// What [`record_calls`](super::record_calls) did after recording the calls.
#[derive(Debug, Clone, PartialEq)]
pub enum Continued {
    /// The calls were recorded and nothing more was asked ([`AfterCalls::Nothing`]).
    Recorded,
    /// The lease was renewed for the next call.
    Leased,
    /// The lease was lost before the next call: another worker runs the phase now.
    LeaseLost,
    /// The transaction reached its final status.
    Finished(Finished),
    /// The compare-and-set of the final status lost (the lease was lost, or the status changed).
    NotFinished,
}

/// A transaction [`record_calls`](super::record_calls) moved to its final status.
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    /// Its `trans_type` (`tcc`).
    pub trans_type: String,
    /// Seconds from its `submitted`/`aborting` event to its end: the second phase's duration.
    /// `None` for a transaction that has no such event.
    pub second_phase_secs: Option<f64>,
}

/// One Confirm or Cancel call of a pass, as the engine saw it, for [`record_calls`](super::record_calls).
#[derive(Debug, Clone)]
pub struct BranchCall {
    /// The op called (`trans_branch_op.id`).
    pub op_id: i64,
    /// The branch called.
    pub branch_id: String,
    /// Confirm or Cancel.
    pub op: Op,
    /// The branch's service name (`trans_branch_op.target`).
    pub target: String,
    /// The URL called.
    pub url: String,
    /// Whether the call succeeded (the op then becomes `succeed`).
    pub succeeded: bool,
    /// `success`, `ongoing`, `failure: <message>` or `error: <detail>`, for `last_result`.
    pub result: String,
    /// `success`, `failure`, `ongoing` or `error`.
    pub outcome: &'static str,
    /// HTTP status of the answer, if one was read (and within 100..=599).
    pub http_status: Option<u16>,
    /// Milliseconds from sending the call to reading the answer (or giving up).
    pub latency_ms: u64,
    /// The branch's message or the error (no `HTTP <status>: ` prefix); `None` on success.
    pub detail: Option<String>,
    /// When the call was sent, if its `branch_calling` event is still to be written; `None`
    /// when it was written before the call (the first call after a claim or a lease renewal).
    pub unannounced_since: Option<Instant>,
    /// When its answer was read (or the call gave up).
    pub answered_at: Instant,
}

/// Schedules the next attempt at `next_time` with backoff step `next_interval` (seconds), and
/// releases the lease so any replica may run it then. `false` when `owner` had lost the lease.
pub fn reschedule(
    conn: &mut PgConnection,
    gid: &str,
    owner: &str,
    next_time: DateTime<Utc>,
    next_interval: i32,
) -> QueryResult<bool> {
    use trans_global::dsl as g;
    diesel::update(g::trans_global)
        .filter(g::gid.eq(gid))
        .filter(g::owner.eq(owner))
        .set((
            g::next_cron_time.eq(next_time),
            g::next_cron_interval.eq(next_interval),
            g::owner.eq(None::<String>),
            g::lease_expire.eq(None::<DateTime<Utc>>),
            g::update_time.eq(db_now),
        ))
        .execute(conn)
        .map(|n| n == 1)
}

/// What [`schedule_retry`] records about the failed call: the `retry_scheduled` event.
#[derive(Debug, Clone)]
pub struct RetryNote {
    /// The branch that will be called again.
    pub branch_id: String,
    /// Its op.
    pub op: Op,
    /// Its service name (`trans_branch_op.target`).
    pub target: String,
    /// Milliseconds until the next attempt.
    pub retry_in_ms: u64,
    /// Why, and the alert when one was raised.
    pub detail: String,
}

/// [`reschedule`] after a failed call, with the `retry_scheduled` event, in one database
/// transaction. `false` when the lease was lost (nothing changed, nothing recorded).
pub fn schedule_retry(
    conn: &mut PgConnection,
    gid: &str,
    owner: &str,
    next_time: DateTime<Utc>,
    next_interval: i32,
    note: &RetryNote,
) -> QueryResult<bool> {
    conn.transaction(|conn| {
        if !reschedule(conn, gid, owner, next_time, next_interval)? {
            return Ok(false);
        }
        events::insert(
            conn,
            &NewEvent {
                branch_id: Some(note.branch_id.clone()),
                op: Some(note.op.as_str().to_owned()),
                target: Some(note.target.clone()),
                retry_in_ms: Some(i32::try_from(note.retry_in_ms).unwrap_or(i32::MAX)),
                detail: Some(note.detail.clone()),
                ..NewEvent::new(gid, EventKind::RetryScheduled, Actor::Tm)
            },
        )?;
        Ok(true)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replica_recognises_only_its_own_lease_tokens() {
        let hex = "0123456789abcdef0123456789abcdef";
        assert!(is_own_token(&format!("a:{hex}"), "a"));
        assert!(is_own_token(&format!("a:{hex}:7"), "a"));
        assert!(!is_own_token(&format!("a:b:{hex}:7"), "a"));
        assert!(!is_own_token(&format!("ab:{hex}"), "a"));
        assert!(!is_own_token(&format!("a:{hex}:"), "a"));
        assert!(!is_own_token("a:0123", "a"));
        assert!(!is_own_token(&format!("a:{}", hex.to_uppercase()), "a"));
    }
}
