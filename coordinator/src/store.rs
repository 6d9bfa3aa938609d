//! Every read and write of the coordinator's tables, synchronous Diesel, one function per
//! state-machine step. Callers run these inside `service_kit::db::blocking`.
//!
//! Every status change is a compare-and-set on the old status (`UPDATE ... WHERE status = old`),
//! so concurrent requests and replicas cannot both win a transition (design §4). Work on the
//! second phase additionally requires holding the transaction's lease (design §5).

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Double, Integer, Nullable, Text};
use serde::Serialize;
use tcc::protocol::{GlobalStatus, Op};

use crate::events::{self, Actor, EventKind, NewEvent};
use crate::schema::{trans_branch_op, trans_global};

/// A global transaction row (`trans_global`), serialized with DTM's field names.
#[derive(Debug, Clone, Queryable, QueryableByName, Selectable, Serialize, utoipa::ToSchema)]
#[diesel(table_name = trans_global)]
pub struct TransGlobal {
    /// Surrogate key; also the keyset position of `all`.
    pub id: i64,
    /// Global transaction id.
    pub gid: String,
    /// Always `tcc`.
    pub trans_type: String,
    /// One of [`GlobalStatus`]'s wire names.
    pub status: String,
    /// Seconds a `prepared` transaction may live.
    pub timeout_to_fail: i32,
    /// Seconds: backoff base.
    pub retry_interval: i32,
    /// Seconds: timeout of each branch call.
    pub request_timeout: i32,
    /// JSON object of headers for branch calls.
    #[serde(serialize_with = "as_json_object")]
    #[schema(value_type = Object)]
    pub branch_headers: String,
    /// Why it rolled back: the AP's reason, or `Timeout after N seconds`.
    pub rollback_reason: Option<String>,
    /// Seconds the next failed attempt will wait.
    pub next_cron_interval: i32,
    /// When a worker next looks at it.
    pub next_cron_time: DateTime<Utc>,
    /// Lease token of the worker running it now.
    pub owner: Option<String>,
    /// End of that lease.
    pub lease_expire: Option<DateTime<Utc>>,
    /// Created by `prepare`.
    pub create_time: DateTime<Utc>,
    /// Last change.
    pub update_time: DateTime<Utc>,
    /// Reached `succeed` or `failed`.
    pub finish_time: Option<DateTime<Utc>>,
}

impl TransGlobal {
    /// The status as an enum; the CHECK constraint guarantees it parses.
    pub fn global_status(&self) -> GlobalStatus {
        self.status
            .parse()
            .expect("the status CHECK constraint admits only known statuses")
    }
}

fn as_json_object<S: serde::Serializer>(raw: &str, s: S) -> Result<S::Ok, S::Error> {
    let value: serde_json::Value = serde_json::from_str(raw).unwrap_or_default();
    value.serialize(s)
}

/// One Confirm or Cancel of a branch (`trans_branch_op`).
#[derive(Debug, Clone, Queryable, Selectable, Serialize, utoipa::ToSchema)]
#[diesel(table_name = trans_branch_op)]
pub struct BranchOp {
    /// Surrogate key; ascending = registration order.
    #[serde(skip)]
    pub id: i64,
    /// Global transaction id.
    pub gid: String,
    /// Branch id given by the AP.
    pub branch_id: String,
    /// `confirm` or `cancel`.
    pub op: String,
    /// The URL the TM calls.
    pub url: String,
    /// The body it sends (the branch data the AP registered).
    pub data: String,
    /// `prepared` until a call succeeded, then `succeed`.
    pub status: String,
    /// Calls made.
    pub attempts: i32,
    /// Outcome of the last call.
    pub last_result: Option<String>,
    /// Registered at.
    pub create_time: DateTime<Utc>,
    /// Last change.
    pub update_time: DateTime<Utc>,
    /// Succeeded at.
    pub finish_time: Option<DateTime<Utc>>,
}

/// What `prepare` needs to create a transaction; options already defaulted and validated.
#[derive(Debug, Clone)]
pub struct NewTrans {
    /// Global transaction id.
    pub gid: String,
    /// Seconds.
    pub timeout_to_fail: i32,
    /// Seconds.
    pub retry_interval: i32,
    /// Seconds.
    pub request_timeout: i32,
    /// JSON object text.
    pub branch_headers: String,
}

/// The result of `prepare`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrepareOutcome {
    /// A new transaction in `prepared`.
    Created,
    /// It existed and is still `prepared`: the repeat succeeds (idempotent).
    AlreadyPrepared,
    /// It existed in another status: 409.
    Conflict(GlobalStatus),
}

/// Creates the transaction in `prepared`, due for a timeout check after `timeout_to_fail`, and
/// its `prepared` event (detail: the options), in one statement.
pub fn prepare(conn: &mut PgConnection, new: &NewTrans) -> QueryResult<PrepareOutcome> {
    let options = format!(
        "timeout_to_fail={}s retry_interval={}s request_timeout={}s",
        new.timeout_to_fail, new.retry_interval, new.request_timeout
    );
    let inserted: Count = diesel::sql_query(
        "WITH ins AS ( \
             INSERT INTO trans_global (gid, status, timeout_to_fail, retry_interval, request_timeout, \
                                       branch_headers, next_cron_interval, next_cron_time) \
             VALUES ($1, 'prepared', $2, $3, $4, $5, $3, now() + make_interval(secs => $2)) \
             ON CONFLICT (gid) DO NOTHING RETURNING gid), \
         ev AS ( \
             INSERT INTO trans_event (gid, kind, actor, status, detail) \
             SELECT gid, 'prepared', 'ap', 'prepared', $6 FROM ins) \
         SELECT count(*) AS n FROM ins",
    )
    .bind::<Text, _>(&new.gid)
    .bind::<Integer, _>(new.timeout_to_fail)
    .bind::<Integer, _>(new.retry_interval)
    .bind::<Integer, _>(new.request_timeout)
    .bind::<Text, _>(&new.branch_headers)
    .bind::<Text, _>(options)
    .get_result(conn)?;
    if inserted.n == 1 {
        return Ok(PrepareOutcome::Created);
    }
    Ok(match status_of(conn, &new.gid)? {
        Some(GlobalStatus::Prepared) | None => PrepareOutcome::AlreadyPrepared,
        Some(other) => PrepareOutcome::Conflict(other),
    })
}

/// A row count returned by a statement (`SELECT count(*) AS n ...`).
#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// A branch registration, URLs already validated.
#[derive(Debug, Clone)]
pub struct NewBranch {
    /// Global transaction id.
    pub gid: String,
    /// Branch id.
    pub branch_id: String,
    /// Raw branch data, the body of Confirm and Cancel.
    pub data: String,
    /// Confirm URL.
    pub confirm: String,
    /// Cancel URL.
    pub cancel: String,
}

/// The result of `registerBranch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterOutcome {
    /// Recorded now.
    Registered,
    /// The same registration was recorded before (a retried request).
    AlreadyRegistered,
    /// No such gid.
    UnknownGid,
    /// The transaction is no longer `prepared`.
    NotPrepared(GlobalStatus),
    /// The branch id is taken by a registration with other URLs or data.
    Mismatch,
}

/// Records a branch's Confirm and Cancel while the transaction is `prepared`, and its
/// `branch_registered` event (in the same database transaction).
///
/// The transaction row is locked `FOR SHARE` so that a concurrent `submit`/`abort` (an `UPDATE`)
/// waits: a branch is either registered before the second phase reads the branch list, or refused.
pub fn register_branch(conn: &mut PgConnection, b: &NewBranch) -> QueryResult<RegisterOutcome> {
    use trans_branch_op::dsl as o;
    use trans_global::dsl as g;
    conn.transaction(|conn| {
        let status: Option<String> = g::trans_global
            .filter(g::gid.eq(&b.gid))
            .select(g::status)
            .for_share()
            .first(conn)
            .optional()?;
        let Some(status) = status else {
            return Ok(RegisterOutcome::UnknownGid);
        };
        let status: GlobalStatus = status.parse().expect("CHECK constraint");
        if status != GlobalStatus::Prepared {
            return Ok(RegisterOutcome::NotPrepared(status));
        }
        let rows = [(Op::Confirm, &b.confirm), (Op::Cancel, &b.cancel)];
        let mut inserted = 0;
        for (op, url) in rows {
            inserted += diesel::insert_into(o::trans_branch_op)
                .values((
                    o::gid.eq(&b.gid),
                    o::branch_id.eq(&b.branch_id),
                    o::op.eq(op.as_str()),
                    o::url.eq(url),
                    o::data.eq(&b.data),
                    o::status.eq("prepared"),
                ))
                .on_conflict((o::gid, o::branch_id, o::op))
                .do_nothing()
                .execute(conn)?;
        }
        if inserted == 2 {
            events::insert(
                conn,
                &NewEvent {
                    branch_id: Some(b.branch_id.clone()),
                    target: Some(events::service_name(&b.confirm)),
                    detail: Some(format!("confirm {} | cancel {}", b.confirm, b.cancel)),
                    ..NewEvent::new(&b.gid, EventKind::BranchRegistered, Actor::Ap)
                },
            )?;
            return Ok(RegisterOutcome::Registered);
        }
        let existing: Vec<(String, String, String)> = o::trans_branch_op
            .filter(o::gid.eq(&b.gid))
            .filter(o::branch_id.eq(&b.branch_id))
            .select((o::op, o::url, o::data))
            .load(conn)?;
        let same = existing.len() == 2
            && existing.iter().all(|(op, url, data)| {
                let expected = if op == Op::Confirm.as_str() {
                    &b.confirm
                } else {
                    &b.cancel
                };
                url == expected && data == &b.data
            });
        Ok(if same {
            RegisterOutcome::AlreadyRegistered
        } else {
            RegisterOutcome::Mismatch
        })
    })
}

/// The result of `submit` or `abort`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// `prepared` moved to the requested status now.
    Changed,
    /// Already in the requested second phase or its final status: nothing changed.
    AlreadyThere(GlobalStatus),
    /// In the other branch of the state machine: 409.
    Refused(GlobalStatus),
    /// No such gid: 409 (DTM would succeed an empty transaction; this project does not).
    Unknown,
}

/// `prepared -> submitted`, due now, with its `submitted` event (one statement). A resubmit
/// while `submitted`/`succeed` changes nothing.
pub fn submit(conn: &mut PgConnection, gid: &str) -> QueryResult<Transition> {
    let changed: Count = diesel::sql_query(
        "WITH upd AS ( \
             UPDATE trans_global SET status = 'submitted', next_cron_time = now(), \
                    next_cron_interval = retry_interval, update_time = now() \
             WHERE gid = $1 AND status = 'prepared' RETURNING gid), \
         ev AS ( \
             INSERT INTO trans_event (gid, kind, actor, status) \
             SELECT gid, 'submitted', 'ap', 'submitted' FROM upd) \
         SELECT count(*) AS n FROM upd",
    )
    .bind::<Text, _>(gid)
    .get_result(conn)?;
    transition_result(
        conn,
        gid,
        changed.n as usize,
        GlobalStatus::Submitted,
        GlobalStatus::Succeed,
    )
}

/// `prepared -> aborting` with `reason`, due now, with its `aborting` event (actor `ap`, the
/// reason as detail; one statement). A repeated abort changes nothing.
pub fn abort(conn: &mut PgConnection, gid: &str, reason: &str) -> QueryResult<Transition> {
    let changed: Count = diesel::sql_query(
        "WITH upd AS ( \
             UPDATE trans_global SET status = 'aborting', rollback_reason = $2, \
                    next_cron_time = now(), next_cron_interval = retry_interval, update_time = now() \
             WHERE gid = $1 AND status = 'prepared' RETURNING gid), \
         ev AS ( \
             INSERT INTO trans_event (gid, kind, actor, status, detail) \
             SELECT gid, 'aborting', 'ap', 'aborting', $2 FROM upd) \
         SELECT count(*) AS n FROM upd",
    )
    .bind::<Text, _>(gid)
    .bind::<Text, _>(reason)
    .get_result(conn)?;
    transition_result(
        conn,
        gid,
        changed.n as usize,
        GlobalStatus::Aborting,
        GlobalStatus::Failed,
    )
}

fn transition_result(
    conn: &mut PgConnection,
    gid: &str,
    changed: usize,
    phase: GlobalStatus,
    end: GlobalStatus,
) -> QueryResult<Transition> {
    if changed == 1 {
        return Ok(Transition::Changed);
    }
    Ok(match status_of(conn, gid)? {
        None => Transition::Unknown,
        Some(s) if s == phase || s == end => Transition::AlreadyThere(s),
        Some(s) => Transition::Refused(s),
    })
}

/// The status of `gid`, if it exists.
pub fn status_of(conn: &mut PgConnection, gid: &str) -> QueryResult<Option<GlobalStatus>> {
    use trans_global::dsl as g;
    let status: Option<String> = g::trans_global
        .filter(g::gid.eq(gid))
        .select(g::status)
        .first(conn)
        .optional()?;
    Ok(status.map(|s| s.parse().expect("CHECK constraint")))
}

/// `request_timeout` (seconds) and status of `gid`, if it exists: what `wait_result` needs to
/// bound its wait, in one indexed read.
pub fn timeout_and_status(
    conn: &mut PgConnection,
    gid: &str,
) -> QueryResult<Option<(i32, GlobalStatus)>> {
    use trans_global::dsl as g;
    let row: Option<(i32, String)> = g::trans_global
        .filter(g::gid.eq(gid))
        .select((g::request_timeout, g::status))
        .first(conn)
        .optional()?;
    Ok(row.map(|(t, s)| (t, s.parse().expect("CHECK constraint"))))
}

/// The transaction `gid` and all its branch ops in registration order.
pub fn find(
    conn: &mut PgConnection,
    gid: &str,
) -> QueryResult<Option<(TransGlobal, Vec<BranchOp>)>> {
    use trans_branch_op::dsl as o;
    use trans_global::dsl as g;
    let Some(trans) = g::trans_global
        .filter(g::gid.eq(gid))
        .select(TransGlobal::as_select())
        .first(conn)
        .optional()?
    else {
        return Ok(None);
    };
    let ops = o::trans_branch_op
        .filter(o::gid.eq(gid))
        .order(o::id.asc())
        .select(BranchOp::as_select())
        .load(conn)?;
    Ok(Some((trans, ops)))
}

/// A page of transactions, newest first, optionally of one status; `before_id` is the keyset
/// position (the last id of the previous page).
pub fn list(
    conn: &mut PgConnection,
    status: Option<GlobalStatus>,
    before_id: Option<i64>,
    limit: i64,
) -> QueryResult<Vec<TransGlobal>> {
    use trans_global::dsl as g;
    let mut query = g::trans_global
        .select(TransGlobal::as_select())
        .order(g::id.desc())
        .limit(limit)
        .into_boxed();
    if let Some(status) = status {
        query = query.filter(g::status.eq(status.as_str()));
    }
    if let Some(before) = before_id {
        query = query.filter(g::id.lt(before));
    }
    query.load(conn)
}

// ---- second phase: leases ----

/// Claims up to `limit` due, unleased, unfinished transactions for the lease token prefix
/// `token` (each row's owner becomes `<token>:<id>`), skipping rows another replica is claiming
/// at this instant (`FOR UPDATE SKIP LOCKED`).
pub fn claim_due(
    conn: &mut PgConnection,
    token: &str,
    lease_secs: i64,
    limit: i64,
) -> QueryResult<Vec<TransGlobal>> {
    diesel::sql_query(
        "UPDATE trans_global SET owner = $1 || ':' || id::text, \
                lease_expire = now() + make_interval(secs => $2), update_time = now() \
         WHERE id IN (SELECT id FROM trans_global \
                      WHERE status IN ('prepared', 'submitted', 'aborting') \
                        AND next_cron_time <= now() \
                        AND (lease_expire IS NULL OR lease_expire < now()) \
                      ORDER BY next_cron_time LIMIT $3 FOR UPDATE SKIP LOCKED) \
         RETURNING *",
    )
    .bind::<Text, _>(token)
    .bind::<BigInt, _>(lease_secs)
    .bind::<BigInt, _>(limit)
    .load(conn)
}

/// Claims `gid` for `owner` if it is in its second phase and nobody holds a live lease.
pub fn claim_one(
    conn: &mut PgConnection,
    gid: &str,
    owner: &str,
    lease_secs: i64,
) -> QueryResult<Option<TransGlobal>> {
    diesel::sql_query(
        "UPDATE trans_global SET owner = $2, lease_expire = now() + make_interval(secs => $3), \
                update_time = now() \
         WHERE gid = $1 AND status IN ('submitted', 'aborting') \
           AND (lease_expire IS NULL OR lease_expire < now()) \
         RETURNING *",
    )
    .bind::<Text, _>(gid)
    .bind::<Text, _>(owner)
    .bind::<BigInt, _>(lease_secs)
    .get_result(conn)
    .optional()
}

/// Extends `owner`'s lease on `gid` right before calling a branch op, and writes the
/// `branch_calling` event of that call, in one statement: a call whose answer is never
/// recorded (the coordinator was killed during it) still shows in the event log. The lease is
/// made to outlast the call: at least the transaction's `request_timeout` plus 5 s, so no other
/// worker claims it while the call is in flight. `false` when the lease was lost (nothing
/// recorded).
pub fn renew_lease_for_call(
    conn: &mut PgConnection,
    gid: &str,
    owner: &str,
    lease_secs: i64,
    branch: &BranchOp,
) -> QueryResult<bool> {
    let renewed: Count = diesel::sql_query(
        "WITH upd AS ( \
             UPDATE trans_global \
             SET lease_expire = now() + make_interval(secs => GREATEST($3, request_timeout + 5)) \
             WHERE gid = $1 AND owner = $2 RETURNING gid), \
         ev AS ( \
             INSERT INTO trans_event (gid, kind, actor, branch_id, op, target, url) \
             SELECT gid, 'branch_calling', 'tm', $4, $5, $6, $7 FROM upd) \
         SELECT count(*) AS n FROM upd",
    )
    .bind::<Text, _>(gid)
    .bind::<Text, _>(owner)
    .bind::<BigInt, _>(lease_secs)
    .bind::<Text, _>(&branch.branch_id)
    .bind::<Text, _>(&branch.op)
    .bind::<Text, _>(events::service_name(&branch.url))
    .bind::<Text, _>(&branch.url)
    .get_result(conn)?;
    Ok(renewed.n == 1)
}

/// Releases the leases a previous life of this replica held, so its work resumes at once after
/// a restart instead of after the lease. A lease token is `<coordinator_id>:<32 hex digits>`
/// (optionally `:<row id>`); the id part must match exactly, so replica `a` never releases the
/// leases of replica `a:b`.
pub fn release_own_leases(conn: &mut PgConnection, coordinator_id: &str) -> QueryResult<usize> {
    diesel::sql_query(
        "UPDATE trans_global SET owner = NULL, lease_expire = NULL \
         WHERE left(owner, length($1) + 1) = $1 || ':' \
           AND substr(owner, length($1) + 2) ~ '^[0-9a-f]{32}(:[0-9]+)?$' \
           AND status IN ('prepared', 'submitted', 'aborting')",
    )
    .bind::<Text, _>(coordinator_id)
    .execute(conn)
}

/// `prepared -> aborting` because `timeout_to_fail` passed, with its `aborting` event (actor
/// `timeout`, reason `Timeout after N seconds`; one statement); only by the lease holder.
pub fn abort_timed_out(
    conn: &mut PgConnection,
    trans: &TransGlobal,
    owner: &str,
) -> QueryResult<bool> {
    let changed: Count = diesel::sql_query(
        "WITH upd AS ( \
             UPDATE trans_global SET status = 'aborting', rollback_reason = $3, \
                    next_cron_interval = retry_interval, update_time = now() \
             WHERE gid = $1 AND owner = $2 AND status = 'prepared' RETURNING gid), \
         ev AS ( \
             INSERT INTO trans_event (gid, kind, actor, status, detail) \
             SELECT gid, 'aborting', 'timeout', 'aborting', $3 FROM upd) \
         SELECT count(*) AS n FROM upd",
    )
    .bind::<Text, _>(&trans.gid)
    .bind::<Text, _>(owner)
    .bind::<Text, _>(format!("Timeout after {} seconds", trans.timeout_to_fail))
    .get_result(conn)?;
    Ok(changed.n == 1)
}

/// Reloads `gid` (after a lost compare-and-set).
pub fn reload(conn: &mut PgConnection, gid: &str) -> QueryResult<TransGlobal> {
    use trans_global::dsl as g;
    g::trans_global
        .filter(g::gid.eq(gid))
        .select(TransGlobal::as_select())
        .first(conn)
}

/// The ops of kind `op` still to succeed, in the order the second phase calls them:
/// Confirms in registration order, Cancels in reverse (design §4).
pub fn pending_ops(conn: &mut PgConnection, gid: &str, op: Op) -> QueryResult<Vec<BranchOp>> {
    use trans_branch_op::dsl as o;
    let query = o::trans_branch_op
        .filter(o::gid.eq(gid))
        .filter(o::op.eq(op.as_str()))
        .filter(o::status.eq("prepared"))
        .select(BranchOp::as_select());
    if op == Op::Cancel {
        query.order(o::id.desc()).load(conn)
    } else {
        query.order(o::id.asc()).load(conn)
    }
}

/// The start of one second-phase pass, read and written in one database transaction: the ops
/// still to call, in call order, and whether the lease was renewed for the first of them (with
/// its `branch_calling` event, as [`renew_lease_for_call`] does).
#[derive(Debug, Clone)]
pub struct Pass {
    /// Pending ops of the transaction's phase ([`pending_ops`]); empty when nothing is left.
    pub ops: Vec<BranchOp>,
    /// `false` when the lease was lost before the first call (nothing was recorded then).
    pub first_leased: bool,
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

/// Loads the pending ops of `trans`'s phase and renews `owner`'s lease for the first call, in
/// one database transaction (one commit instead of two).
pub fn start_pass(
    conn: &mut PgConnection,
    trans: &TransGlobal,
    owner: &str,
    lease_secs: i64,
) -> QueryResult<Pass> {
    let Some(op) = phase_op(trans.global_status()) else {
        return Ok(Pass {
            ops: Vec::new(),
            first_leased: true,
        });
    };
    conn.transaction(|conn| {
        let ops = pending_ops(conn, &trans.gid, op)?;
        let first_leased = match ops.first() {
            Some(first) => renew_lease_for_call(conn, &trans.gid, owner, lease_secs, first)?,
            None => true,
        };
        Ok(Pass { ops, first_leased })
    })
}

/// [`claim_one`] and [`start_pass`] in one database transaction: what `submit` and `abort` do
/// to run a transaction's second phase at once.
pub fn claim_and_start(
    conn: &mut PgConnection,
    gid: &str,
    owner: &str,
    lease_secs: i64,
) -> QueryResult<Option<(TransGlobal, Pass)>> {
    conn.transaction(|conn| {
        let Some(trans) = claim_one(conn, gid, owner, lease_secs)? else {
            return Ok(None);
        };
        let pass = start_pass(conn, &trans, owner, lease_secs)?;
        Ok(Some((trans, pass)))
    })
}

/// What follows a successful call in [`record_success`].
#[derive(Debug, Clone, Copy)]
pub enum AfterSuccess<'a> {
    /// Another op is called next: renew the lease for it, with its `branch_calling` event.
    Call(&'a BranchOp),
    /// That was the last op: move `from` to `to` ([`finish`]).
    Finish {
        /// `submitted` or `aborting`.
        from: GlobalStatus,
        /// `succeed` or `failed`.
        to: GlobalStatus,
    },
}

/// What [`record_success`] did after recording the call.
#[derive(Debug, Clone, PartialEq)]
pub enum Continued {
    /// The lease was renewed for the next call (`true`) or was lost (`false`).
    Leased(bool),
    /// The transaction finished (`None`: the compare-and-set of [`finish`] lost).
    Finished(Option<Finished>),
}

/// Records a successful call ([`record_attempt`]) and, in the same database transaction, either
/// renews the lease for the next call or finishes the transaction: one commit per call instead
/// of two, with the event log unchanged (`branch_called`, then the next `branch_calling` or the
/// final status). Returns the attempts of the recorded op and what followed.
pub fn record_success(
    conn: &mut PgConnection,
    op_id: i64,
    result: &str,
    call: &BranchCall,
    owner: &str,
    lease_secs: i64,
    next: AfterSuccess<'_>,
) -> QueryResult<(i32, Continued)> {
    conn.transaction(|conn| {
        let attempts = record_attempt(conn, op_id, true, result, call)?;
        let continued = match next {
            AfterSuccess::Call(branch) => Continued::Leased(renew_lease_for_call(
                conn, &call.gid, owner, lease_secs, branch,
            )?),
            AfterSuccess::Finish { from, to } => {
                Continued::Finished(finish(conn, &call.gid, owner, from, to)?)
            }
        };
        Ok((attempts, continued))
    })
}

/// One Confirm or Cancel call as the engine saw it, for [`record_attempt`].
#[derive(Debug, Clone)]
pub struct BranchCall {
    /// Global transaction id.
    pub gid: String,
    /// The branch called.
    pub branch_id: String,
    /// `confirm` or `cancel`.
    pub op: Op,
    /// The URL called.
    pub url: String,
    /// `success`, `failure`, `ongoing` or `error`.
    pub outcome: &'static str,
    /// HTTP status of the answer, if one was read.
    pub http_status: Option<u16>,
    /// Milliseconds from sending the call to reading the answer (or giving up).
    pub latency_ms: u64,
    /// The branch's message or the error (no `HTTP <status>: ` prefix); `None` on success.
    pub detail: Option<String>,
}

/// Records one call of a branch op: its outcome text in `last_result`, `succeed` when it
/// succeeded, and its `branch_called` event (op, branch_id, target service, HTTP status or
/// error, latency, attempt number) — one statement, so the log costs no commit of its own.
/// Returns the number of attempts so far (0 if a successful op had already succeeded).
pub fn record_attempt(
    conn: &mut PgConnection,
    op_id: i64,
    succeeded: bool,
    result: &str,
    call: &BranchCall,
) -> QueryResult<i32> {
    #[derive(QueryableByName)]
    struct Attempt {
        #[diesel(sql_type = Nullable<Integer>)]
        attempt: Option<i32>,
    }
    let recorded: Attempt = diesel::sql_query(
        "WITH upd AS ( \
             UPDATE trans_branch_op SET \
                    status = CASE WHEN $2 THEN 'succeed' ELSE status END, \
                    finish_time = CASE WHEN $2 THEN now() ELSE finish_time END, \
                    attempts = attempts + 1, last_result = $3, update_time = now() \
             WHERE id = $1 AND (NOT $2 OR status = 'prepared') RETURNING attempts) \
         INSERT INTO trans_event (gid, kind, actor, branch_id, op, target, url, outcome, \
                                  http_status, latency_ms, attempt, detail) \
         VALUES ($4, 'branch_called', 'tm', $5, $6, $7, $8, $9, $10, $11, \
                 (SELECT attempts FROM upd), $12) \
         RETURNING attempt",
    )
    .bind::<BigInt, _>(op_id)
    .bind::<diesel::sql_types::Bool, _>(succeeded)
    .bind::<Text, _>(result)
    .bind::<Text, _>(&call.gid)
    .bind::<Text, _>(&call.branch_id)
    .bind::<Text, _>(call.op.as_str())
    .bind::<Text, _>(events::service_name(&call.url))
    .bind::<Text, _>(&call.url)
    .bind::<Text, _>(call.outcome)
    .bind::<Nullable<Integer>, _>(call.http_status.map(i32::from))
    .bind::<Integer, _>(i32::try_from(call.latency_ms).unwrap_or(i32::MAX))
    .bind::<Nullable<Text>, _>(call.detail.as_deref())
    .get_result(conn)?;
    Ok(recorded.attempt.unwrap_or(0))
}

/// A transaction [`finish`] moved to its final status.
#[derive(Debug, Clone, PartialEq, QueryableByName)]
pub struct Finished {
    /// Its `trans_type` (`tcc`).
    #[diesel(sql_type = Text)]
    pub trans_type: String,
    /// Seconds from its `submitted`/`aborting` event to now: the second phase's duration.
    /// `None` for a transaction that has no such event (created before the event log existed).
    #[diesel(sql_type = Nullable<Double>)]
    pub second_phase_secs: Option<f64>,
}

/// `submitted -> succeed` or `aborting -> failed`, releasing the lease, with the `succeed` or
/// `failed` event (one statement); only by the lease holder. `None` when the compare-and-set
/// lost (the lease or the status changed).
pub fn finish(
    conn: &mut PgConnection,
    gid: &str,
    owner: &str,
    from: GlobalStatus,
    to: GlobalStatus,
) -> QueryResult<Option<Finished>> {
    diesel::sql_query(
        "WITH upd AS ( \
             UPDATE trans_global SET status = $4, finish_time = now(), update_time = now(), \
                    owner = NULL, lease_expire = NULL \
             WHERE gid = $1 AND owner = $2 AND status = $3 RETURNING gid, trans_type), \
         ev AS ( \
             INSERT INTO trans_event (gid, kind, actor, status) \
             SELECT gid, $4, 'tm', $4 FROM upd) \
         SELECT upd.trans_type, \
                EXTRACT(EPOCH FROM clock_timestamp() - ( \
                    SELECT min(e.create_time) FROM trans_event e \
                    WHERE e.gid = upd.gid AND e.kind IN ('submitted', 'aborting')))::float8 \
                    AS second_phase_secs \
         FROM upd",
    )
    .bind::<Text, _>(gid)
    .bind::<Text, _>(owner)
    .bind::<Text, _>(from.as_str())
    .bind::<Text, _>(to.as_str())
    .get_result(conn)
    .optional()
}

/// Schedules the next attempt at `next_time` with backoff step `next_interval` (seconds), and
/// releases the lease so any replica may run it then.
pub fn reschedule(
    conn: &mut PgConnection,
    gid: &str,
    owner: &str,
    next_time: DateTime<Utc>,
    next_interval: i32,
) -> QueryResult<bool> {
    diesel::sql_query(
        "UPDATE trans_global SET next_cron_time = $3, next_cron_interval = $4, owner = NULL, \
                lease_expire = NULL, update_time = now() \
         WHERE gid = $1 AND owner = $2",
    )
    .bind::<Text, _>(gid)
    .bind::<Text, _>(owner)
    .bind::<diesel::sql_types::Timestamptz, _>(next_time)
    .bind::<Integer, _>(next_interval)
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
    /// Its URL (for the target service's name).
    pub url: String,
    /// Milliseconds until the next attempt.
    pub retry_in_ms: u64,
    /// Why, and the alert when one was raised.
    pub detail: String,
}

/// [`reschedule`] after a failed call, with the `retry_scheduled` event, in one statement.
/// `false` when the lease was lost (nothing changed, nothing recorded).
pub fn schedule_retry(
    conn: &mut PgConnection,
    gid: &str,
    owner: &str,
    next_time: DateTime<Utc>,
    next_interval: i32,
    note: &RetryNote,
) -> QueryResult<bool> {
    let changed: Count = diesel::sql_query(
        "WITH upd AS ( \
             UPDATE trans_global SET next_cron_time = $3, next_cron_interval = $4, owner = NULL, \
                    lease_expire = NULL, update_time = now() \
             WHERE gid = $1 AND owner = $2 RETURNING gid), \
         ev AS ( \
             INSERT INTO trans_event (gid, kind, actor, branch_id, op, target, retry_in_ms, detail) \
             SELECT gid, 'retry_scheduled', 'tm', $5, $6, $7, $8, $9 FROM upd) \
         SELECT count(*) AS n FROM upd",
    )
    .bind::<Text, _>(gid)
    .bind::<Text, _>(owner)
    .bind::<diesel::sql_types::Timestamptz, _>(next_time)
    .bind::<Integer, _>(next_interval)
    .bind::<Text, _>(&note.branch_id)
    .bind::<Text, _>(note.op.as_str())
    .bind::<Text, _>(events::service_name(&note.url))
    .bind::<Integer, _>(i32::try_from(note.retry_in_ms).unwrap_or(i32::MAX))
    .bind::<Text, _>(&note.detail)
    .get_result(conn)?;
    Ok(changed.n == 1)
}

// ---- metrics ----

/// The unfinished transactions of one status, for the gauges of [`crate::metrics`].
#[derive(Debug, Clone, PartialEq, QueryableByName)]
pub struct UnfinishedSummary {
    /// `prepared`, `submitted` or `aborting`.
    #[diesel(sql_type = Text)]
    pub status: String,
    /// How many.
    #[diesel(sql_type = BigInt)]
    pub count: i64,
    /// Seconds since the oldest of them was prepared.
    #[diesel(sql_type = Double)]
    pub oldest_age_secs: f64,
}

/// Count and oldest age of the unfinished transactions, by status: one grouped query over the
/// rows the partial index `trans_global_due_idx` covers (the unfinished ones only), so its cost
/// follows the backlog, not the table. Statuses without transactions have no row.
pub fn unfinished_summary(conn: &mut PgConnection) -> QueryResult<Vec<UnfinishedSummary>> {
    diesel::sql_query(
        "SELECT status, count(*) AS count, \
                EXTRACT(EPOCH FROM now() - min(create_time))::float8 AS oldest_age_secs \
         FROM trans_global WHERE status IN ('prepared', 'submitted', 'aborting') \
         GROUP BY status",
    )
    .load(conn)
}

// ---- retention ----

/// Deletes at most `limit` finished (`succeed`/`failed`) transactions whose `finish_time` is
/// more than `retention_secs` seconds ago, oldest first; their `trans_branch_op` and
/// `trans_event` rows go with them (`ON DELETE CASCADE`). Returns how many transactions were deleted.
///
/// Unfinished transactions (`prepared`, `submitted`, `aborting`) are never selected, however old:
/// their `finish_time` is NULL (a CHECK constraint ties it to the status) and the status filter
/// says so again. Rows another replica's retention is deleting at this instant are skipped
/// (`SKIP LOCKED`). The partial index `trans_global_finished_idx` serves the subquery.
pub fn delete_finished_before(
    conn: &mut PgConnection,
    retention_secs: i64,
    limit: i64,
) -> QueryResult<usize> {
    diesel::sql_query(
        "DELETE FROM trans_global \
         WHERE id IN (SELECT id FROM trans_global \
                      WHERE status IN ('succeed', 'failed') \
                        AND finish_time < now() - make_interval(secs => $1) \
                      ORDER BY finish_time, id LIMIT $2 FOR UPDATE SKIP LOCKED)",
    )
    .bind::<BigInt, _>(retention_secs)
    .bind::<BigInt, _>(limit)
    .execute(conn)
}

// ---- admin: the operator's views and actions (crate::admin) ----

/// What the admin list selects; every field narrows it (all `None`: every transaction).
#[derive(Debug, Clone, Default)]
pub struct AdminFilter {
    /// Only these statuses; empty: any.
    pub statuses: Vec<GlobalStatus>,
    /// Only transactions created before this instant (older than an age).
    pub created_before: Option<DateTime<Utc>>,
    /// Only transactions created at or after this instant (newer than an age).
    pub created_since: Option<DateTime<Utc>>,
    /// Keyset position: only ids below it (the last id of the previous page).
    pub before_id: Option<i64>,
}

/// A page of at most `limit` transactions matching `filter`, newest first (by id, which is
/// creation order), for `GET /api/admin/transactions`.
pub fn admin_list(
    conn: &mut PgConnection,
    filter: &AdminFilter,
    limit: i64,
) -> QueryResult<Vec<TransGlobal>> {
    use trans_global::dsl as g;
    let mut query = g::trans_global
        .select(TransGlobal::as_select())
        .order(g::id.desc())
        .limit(limit)
        .into_boxed();
    if !filter.statuses.is_empty() {
        let statuses: Vec<&str> = filter.statuses.iter().map(|s| s.as_str()).collect();
        query = query.filter(g::status.eq_any(statuses));
    }
    if let Some(before) = filter.created_before {
        query = query.filter(g::create_time.lt(before));
    }
    if let Some(since) = filter.created_since {
        query = query.filter(g::create_time.ge(since));
    }
    if let Some(before) = filter.before_id {
        query = query.filter(g::id.lt(before));
    }
    query.load(conn)
}

/// The result of an operator action ([`retry_now`], [`force_stop`]).
#[derive(Debug, Clone)]
pub enum AdminOutcome {
    /// Done: the transaction was in `from`, and is now `trans`.
    Done {
        /// Status before the action.
        from: GlobalStatus,
        /// The row after the action.
        trans: Box<TransGlobal>,
    },
    /// The transaction's status does not allow the action (409).
    Refused(GlobalStatus),
    /// No such gid (404).
    Unknown,
}

/// Reads `gid`'s status with the row locked (`FOR UPDATE`), so that the update that follows in
/// the same database transaction is a compare-and-set on exactly that status.
fn lock_status(conn: &mut PgConnection, gid: &str) -> QueryResult<Option<GlobalStatus>> {
    use trans_global::dsl as g;
    let status: Option<String> = g::trans_global
        .filter(g::gid.eq(gid))
        .select(g::status)
        .for_update()
        .first(conn)
        .optional()?;
    Ok(status.map(|s| s.parse().expect("CHECK constraint")))
}

/// Operator's "retry now": a `submitted` or `aborting` transaction becomes due at once
/// (`next_cron_time = now()`) with its backoff step reset to its `retry_interval`, so the next
/// worker tick (or the caller's own pass) calls its pending Confirms or Cancels without waiting
/// out the backoff. Any other status is refused: a `prepared` one still belongs to its AP (its
/// timeout is DTM's business, not a retry), a final one has nothing left to call.
///
/// Leases are left alone: a live lease means a pass is running right now (its own reschedule
/// then wins), and an expired one does not block the next claim.
pub fn retry_now(conn: &mut PgConnection, gid: &str) -> QueryResult<AdminOutcome> {
    use trans_global::dsl as g;
    conn.transaction(|conn| {
        let Some(from) = lock_status(conn, gid)? else {
            return Ok(AdminOutcome::Unknown);
        };
        if !matches!(from, GlobalStatus::Submitted | GlobalStatus::Aborting) {
            return Ok(AdminOutcome::Refused(from));
        }
        let now = Utc::now();
        let trans = diesel::update(g::trans_global)
            .filter(g::gid.eq(gid))
            .filter(g::status.eq(from.as_str()))
            .set((
                g::next_cron_time.eq(now),
                g::next_cron_interval.eq(g::retry_interval),
                g::update_time.eq(now),
            ))
            .returning(TransGlobal::as_returning())
            .get_result(conn)?;
        events::insert(
            conn,
            &NewEvent {
                status: Some(from.as_str().to_owned()),
                ..NewEvent::new(gid, EventKind::RetryRequested, Actor::Admin)
            },
        )?;
        Ok(AdminOutcome::Done {
            from,
            trans: Box::new(trans),
        })
    })
}

/// Operator's "force stop" (DTM's admin `forceStop`): an unfinished transaction (`prepared`,
/// `submitted`, `aborting`) moves straight to `failed`, **without calling any Confirm or
/// Cancel**. Its pending branch ops stay as they are (`prepared`, never called), its lease is
/// dropped (a pass running now loses it at its next renewal and stops), and the rollback reason
/// records the stop and the status it interrupted. A final transaction is refused.
///
/// DANGER: whatever the Trys reserved (frozen funds, holds, stock reservations) stays held in
/// the RMs until someone releases it by hand; a half-confirmed transaction stays half applied.
/// This exists for operators who have already repaired the RMs, never for routine use.
pub fn force_stop(conn: &mut PgConnection, gid: &str) -> QueryResult<AdminOutcome> {
    use trans_global::dsl as g;
    conn.transaction(|conn| {
        let Some(from) = lock_status(conn, gid)? else {
            return Ok(AdminOutcome::Unknown);
        };
        if from.is_final() {
            return Ok(AdminOutcome::Refused(from));
        }
        let previous: Option<String> = g::trans_global
            .filter(g::gid.eq(gid))
            .select(g::rollback_reason)
            .first(conn)?;
        let stop = format!("force-stopped by an operator (was {from})");
        let reason = match previous.filter(|r| !r.is_empty()) {
            Some(previous) => format!("{previous}; then {stop}"),
            None => stop,
        };
        let now = Utc::now();
        let trans = diesel::update(g::trans_global)
            .filter(g::gid.eq(gid))
            .filter(g::status.eq(from.as_str()))
            .set((
                g::status.eq(GlobalStatus::Failed.as_str()),
                g::rollback_reason.eq(reason),
                g::finish_time.eq(now),
                g::update_time.eq(now),
                g::owner.eq(None::<String>),
                g::lease_expire.eq(None::<DateTime<Utc>>),
            ))
            .returning(TransGlobal::as_returning())
            .get_result(conn)?;
        events::insert(
            conn,
            &NewEvent {
                status: Some(GlobalStatus::Failed.as_str().to_owned()),
                detail: Some("no further Confirm or Cancel is called".to_owned()),
                ..NewEvent::new(gid, EventKind::ForceStopped, Actor::Admin)
            },
        )?;
        Ok(AdminOutcome::Done {
            from,
            trans: Box::new(trans),
        })
    })
}
