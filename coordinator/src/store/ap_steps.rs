//! The steps the AP takes: `prepare`, `registerBranch`, Try reports, `submit` and `abort`. Each is
//! one database transaction.

use std::time::Instant;

use diesel::dsl::{AsSelect, SqlTypeOf};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::AstPass;
use diesel::sql_types::{Array, BigInt, Bool, Integer, Nullable, Text};
use tcc::protocol::GlobalStatus;

use super::named_sql::{Named, NamedStatement};

use super::second_phase::{claim_one, phase_end, phase_op, Pass};
use super::{lease_secs_i32, parse_status, status_of, BranchOp, TransGlobal};
use crate::events::{self, EventKind, NewEvent, TryReport, TryReportRefusal};
use crate::schema::{trans_branch_op, trans_event, trans_global};

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
    /// A transaction with this gid existed and was deleted by retention (its tombstone is
    /// kept): 409, since the RMs may still hold its barrier rows. Nothing was created.
    Used,
}

/// Creates the transaction in `prepared`, due for a timeout check after `timeout_to_fail`, with
/// its `prepared` event (detail: the options), in one statement (`PREPARE`).
///
/// When the gid was taken by a transaction this statement could not see (a concurrent `prepare`
/// of it committed meanwhile), a second read tells its status; a row deleted since reads as
/// still prepared.
pub fn prepare(conn: &mut PgConnection, new: &NewTrans) -> QueryResult<PrepareOutcome> {
    let options = format!(
        "timeout_to_fail={}s retry_interval={}s request_timeout={}s",
        new.timeout_to_fail, new.retry_interval, new.request_timeout
    );
    let (created, existing, tombstoned): (bool, Option<String>, bool) =
        Named(Prepare { new, options }).get_result(conn)?;
    Ok(match (created, existing.as_deref().map(parse_status)) {
        (true, _) => PrepareOutcome::Created,
        (false, Some(GlobalStatus::Prepared)) => PrepareOutcome::AlreadyPrepared,
        (false, Some(other)) => PrepareOutcome::Conflict(other),
        (false, None) if tombstoned => PrepareOutcome::Used,
        (false, None) => match status_of(conn, &new.gid)? {
            None | Some(GlobalStatus::Prepared) => PrepareOutcome::AlreadyPrepared,
            Some(other) => PrepareOutcome::Conflict(other),
        },
    })
}

/// `prepare` as one statement (one round trip, no BEGIN/COMMIT; a data-modifying CTE, which
/// Diesel's DSL cannot write): `created` inserts the transaction, due `timeout_to_fail` seconds
/// from now, only when no transaction with this gid is visible and the gid has no tombstone, and
/// `log` writes its `prepared` event. Answers whether it was created, the status of the one seen
/// instead, and whether a tombstone was seen.
///
/// The insert waits on no row it did not see first: a retention job deleting this gid's old row
/// at this instant has not committed yet in this statement's snapshot, so the old row is seen
/// (a 409); once it has committed, its tombstone is seen (a 409 too). `ON CONFLICT` only settles
/// a race with a concurrent `prepare` of the same gid.
const PREPARE: &str = "\
WITH existing AS (
    SELECT status FROM trans_global WHERE gid = $1
), tombstone AS (
    SELECT FROM trans_gid_tombstone WHERE gid = $1
), created AS (
    INSERT INTO trans_global (gid, status, timeout_to_fail, retry_interval, request_timeout,
        branch_headers, next_cron_interval, next_cron_time)
    SELECT $1, 'prepared', $2, $3, $4, $5, $3, now() + interval '1 second' * $2
    WHERE NOT EXISTS (SELECT FROM existing) AND NOT EXISTS (SELECT FROM tombstone)
    ON CONFLICT (gid) DO NOTHING
    RETURNING gid
), log AS (
    INSERT INTO trans_event (gid, kind, actor, status, detail)
    SELECT gid, 'prepared', 'ap', 'prepared', $6 FROM created
)
SELECT EXISTS (SELECT FROM created), (SELECT status FROM existing),
    EXISTS (SELECT FROM tombstone)";

/// The parameters of `PREPARE`.
struct Prepare<'a> {
    new: &'a NewTrans,
    /// The detail of the `prepared` event.
    options: String,
}

impl NamedStatement for Prepare<'_> {
    type Id = Prepare<'static>;
    const SQL: &'static str = PREPARE;
    type Row = (Bool, Nullable<Text>, Bool);
    fn push_bind<'b>(&'b self, n: usize, out: &mut AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        let new = self.new;
        match n {
            1 => out.push_bind_param::<Text, _>(&new.gid),
            2 => out.push_bind_param::<Integer, _>(&new.timeout_to_fail),
            3 => out.push_bind_param::<Integer, _>(&new.retry_interval),
            4 => out.push_bind_param::<Integer, _>(&new.request_timeout),
            5 => out.push_bind_param::<Text, _>(&new.branch_headers),
            6 => out.push_bind_param::<Text, _>(&self.options),
            _ => unreachable!("PREPARE has 6 parameters"),
        }
    }
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
    /// Try reports the registration carries (earlier Trys of this AP), recorded first.
    pub try_reports: Vec<TryReport>,
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

/// Records a branch's Confirm and Cancel while the transaction is `prepared`, with its
/// `branch_registered` event, in one statement (`REGISTER_BRANCH`). Each op's service is named
/// once here ([`events::service_name`] of its URL) for the events of its calls. The Try reports
/// the registration carries are recorded first, whatever the answer: they describe earlier Trys.
///
/// When the ops were there already, a second read (a statement of its own, which sees what
/// committed since) tells a retried registration from a mismatch; it writes nothing.
pub fn register_branch(conn: &mut PgConnection, b: &NewBranch) -> QueryResult<RegisterOutcome> {
    let (confirm_target, cancel_target) = (
        events::service_name(&b.confirm),
        events::service_name(&b.cancel),
    );
    let reports = ReportColumns::of(&b.try_reports);
    let registration = RegisterBranch {
        b,
        confirm_target: &confirm_target,
        cancel_target: &cancel_target,
        detail: format!("confirm {} | cancel {}", b.confirm, b.cancel),
        reports: &reports,
    };
    let (status, inserted): (Option<String>, i64) = Named(registration).get_result(conn)?;
    let Some(status) = status.as_deref().map(parse_status) else {
        return Ok(RegisterOutcome::UnknownGid);
    };
    Ok(if status != GlobalStatus::Prepared {
        RegisterOutcome::NotPrepared(status)
    } else if inserted == 2 {
        RegisterOutcome::Registered
    } else if same_registration(conn, b)? {
        RegisterOutcome::AlreadyRegistered
    } else {
        RegisterOutcome::Mismatch
    })
}

/// `registerBranch` as one statement (so one round trip and no BEGIN/COMMIT; a data-modifying CTE,
/// which Diesel's DSL cannot write):
///
/// * `trans` locks the transaction's row `FOR SHARE`, so that a concurrent `submit`/`abort` (an
///   `UPDATE`) waits for this commit, and reads its status after any update it waited for: a
///   branch is either registered before the second phase reads the branch list, or refused;
/// * `ops` inserts the Confirm and Cancel while it is `prepared` (none when the branch id is
///   taken);
/// * `log` writes, in this order, the `try_reported` events of the reports whose branch was
///   registered before (none for an unknown gid), then `branch_registered` when both ops were
///   inserted.
///
/// Answers the status (NULL: no such gid) and how many ops were inserted.
const REGISTER_BRANCH: &str = "\
WITH trans AS (
    SELECT status FROM trans_global WHERE gid = $1 FOR SHARE
), ops AS (
    INSERT INTO trans_branch_op (gid, branch_id, op, url, data, status, target)
    SELECT $1, $2, v.op, v.url, $3, 'prepared', v.target
    FROM trans, (VALUES ('confirm', $4, $5), ('cancel', $6, $7)) AS v (op, url, target)
    WHERE trans.status = 'prepared'
    ON CONFLICT (gid, branch_id, op) DO NOTHING
    RETURNING 1
), log AS (
    INSERT INTO trans_event
        (gid, kind, actor, branch_id, op, target, url, outcome, http_status, latency_ms, detail)
    SELECT $1, e.kind, 'ap', e.branch_id, e.op, e.target, e.url, e.outcome, e.http_status,
        e.latency_ms, e.detail
    FROM (
        SELECT r.ord, 'try_reported' AS kind, r.branch_id, 'try' AS op, r.target, r.url,
            r.outcome, r.http_status, r.latency_ms, r.detail
        FROM unnest($9, $10, $11, $12, $13, $14, $15)
            WITH ORDINALITY AS r (branch_id, target, url, outcome, http_status, latency_ms, detail, ord)
        WHERE EXISTS (SELECT FROM trans)
          AND EXISTS (SELECT FROM trans_branch_op o WHERE o.gid = $1 AND o.branch_id = r.branch_id)
        UNION ALL
        SELECT cardinality($9) + 1, 'branch_registered', $2, NULL, $5, NULL, NULL, NULL, NULL, $8
        WHERE (SELECT count(*) FROM ops) = 2
    ) AS e
    ORDER BY e.ord
)
SELECT (SELECT status FROM trans), (SELECT count(*) FROM ops)";

/// The parameters of [`REGISTER_BRANCH`].
struct RegisterBranch<'a> {
    b: &'a NewBranch,
    confirm_target: &'a str,
    cancel_target: &'a str,
    detail: String,
    reports: &'a ReportColumns,
}

impl NamedStatement for RegisterBranch<'_> {
    type Id = RegisterBranch<'static>;
    const SQL: &'static str = REGISTER_BRANCH;
    type Row = (Nullable<Text>, BigInt);
    fn push_bind<'b>(&'b self, n: usize, out: &mut AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        let (b, r) = (self.b, self.reports);
        match n {
            1 => out.push_bind_param::<Text, _>(&b.gid),
            2 => out.push_bind_param::<Text, _>(&b.branch_id),
            3 => out.push_bind_param::<Text, _>(&b.data),
            4 => out.push_bind_param::<Text, _>(&b.confirm),
            5 => out.push_bind_param::<Text, _>(self.confirm_target),
            6 => out.push_bind_param::<Text, _>(&b.cancel),
            7 => out.push_bind_param::<Text, _>(self.cancel_target),
            8 => out.push_bind_param::<Text, _>(&self.detail),
            9..=15 => r.push_bind(n - 8, out),
            _ => unreachable!("REGISTER_BRANCH has 15 parameters"),
        }
    }
}

/// Try reports as one array per column of their `try_reported` events, in order.
#[derive(Default)]
struct ReportColumns {
    branch_id: Vec<String>,
    target: Vec<String>,
    url: Vec<String>,
    outcome: Vec<String>,
    http_status: Vec<Option<i32>>,
    latency_ms: Vec<i32>,
    detail: Vec<Option<String>>,
}

impl ReportColumns {
    /// Binds column `n` (from 1: branch_id, target, url, outcome, http_status, latency_ms,
    /// detail), in this order of `unnest`.
    fn push_bind<'b>(&'b self, n: usize, out: &mut AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        match n {
            1 => out.push_bind_param::<Array<Text>, _>(&self.branch_id),
            2 => out.push_bind_param::<Array<Text>, _>(&self.target),
            3 => out.push_bind_param::<Array<Text>, _>(&self.url),
            4 => out.push_bind_param::<Array<Text>, _>(&self.outcome),
            5 => out.push_bind_param::<Array<Nullable<Integer>>, _>(&self.http_status),
            6 => out.push_bind_param::<Array<Integer>, _>(&self.latency_ms),
            7 => out.push_bind_param::<Array<Nullable<Text>>, _>(&self.detail),
            _ => unreachable!("a try report has 7 columns"),
        }
    }

    fn of(reports: &[TryReport]) -> ReportColumns {
        let mut columns = ReportColumns::default();
        for r in reports {
            columns.branch_id.push(r.branch_id.clone());
            columns.target.push(events::service_name(&r.url));
            columns.url.push(r.url.clone());
            columns.outcome.push(r.outcome.clone());
            columns.http_status.push(r.http_status);
            columns.latency_ms.push(r.latency_ms);
            columns.detail.push(r.message.clone());
        }
        columns
    }
}

/// Whether the Confirm and Cancel registered under `b`'s branch id have its URLs and data (a
/// retried registration).
fn same_registration(conn: &mut PgConnection, b: &NewBranch) -> QueryResult<bool> {
    use trans_branch_op::dsl as o;
    let registered: Vec<(String, String, String)> = o::trans_branch_op
        .filter(o::gid.eq(&b.gid))
        .filter(o::branch_id.eq(&b.branch_id))
        .select((o::op, o::url, o::data))
        .load(conn)?;
    let expected = |op: &str| match op {
        "confirm" => &b.confirm,
        _ => &b.cancel,
    };
    Ok(registered.len() == 2
        && registered
            .iter()
            .all(|(op, url, data)| url == expected(op) && *data == b.data))
}

/// The `try_reported` events of the `reports` whose branch is registered in `gid` (a Try is made
/// after its branch was registered; a report of another branch is dropped), in the order given.
fn report_events(
    conn: &mut PgConnection,
    gid: &str,
    reports: &[TryReport],
) -> QueryResult<Vec<NewEvent>> {
    use trans_branch_op::dsl as o;
    if reports.is_empty() {
        return Ok(Vec::new());
    }
    let branch_ids: Vec<&str> = reports.iter().map(|r| r.branch_id.as_str()).collect();
    let registered: Vec<String> = o::trans_branch_op
        .filter(o::gid.eq(gid))
        .filter(o::branch_id.eq_any(&branch_ids))
        .select(o::branch_id)
        .distinct()
        .load(conn)?;
    Ok(events_of_registered(reports, &registered))
}

/// The `try_reported` events of the `reports` whose branch is among `registered`, in order.
fn events_of_registered(reports: &[TryReport], registered: &[String]) -> Vec<NewEvent> {
    reports
        .iter()
        .filter(|r| registered.contains(&r.branch_id))
        .map(TryReport::event)
        .collect()
}

/// Inserts `events` in one statement, in order (their ids follow it); nothing when empty.
fn insert_events(conn: &mut PgConnection, events: &[NewEvent]) -> QueryResult<()> {
    if !events.is_empty() {
        diesel::insert_into(trans_event::table)
            .values(events)
            .execute(conn)?;
    }
    Ok(())
}

/// Records a Try report (`POST /api/dtmsvr/reportTry`) as a `try_reported` event if its branch is
/// registered. Reports are accepted whatever the transaction's status: a Try that timed out at
/// the AP is reported after the fact, possibly once the abort is under way. The transaction's
/// row is locked `FOR KEY SHARE` (the lock a foreign key would take), so that retention cannot
/// delete it under this event.
pub fn record_try(
    conn: &mut PgConnection,
    report: &TryReport,
) -> QueryResult<Result<(), TryReportRefusal>> {
    use trans_global::dsl as g;
    conn.transaction(|conn| {
        let exists: Option<i64> = g::trans_global
            .filter(g::gid.eq(&report.gid))
            .select(g::id)
            .for_key_share()
            .first(conn)
            .optional()?;
        if exists.is_none() {
            return Ok(Err(TryReportRefusal::UnknownGid));
        }
        let log = report_events(conn, &report.gid, std::slice::from_ref(report))?;
        if log.is_empty() {
            return Ok(Err(TryReportRefusal::UnknownBranch));
        }
        insert_events(conn, &log)?;
        Ok(Ok(()))
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

/// What [`begin_second_phase`] did.
#[derive(Debug, Clone)]
pub struct SecondPhaseStart {
    /// The transition `submit` or `abort` asked for.
    pub transition: Transition,
    /// The transaction after it (`None` when the gid is unknown).
    pub trans: Option<TransGlobal>,
    /// The first pass of its second phase, when the caller's lease was taken: the caller runs it
    /// ([`crate::engine::Engine::run_claimed`]). `None` when another worker holds the lease (it
    /// runs the phase) or when the transaction is not in `phase`.
    pub pass: Option<Pass>,
}

/// `submit` (`phase` = `submitted`) or `abort` (`phase` = `aborting`, with `reason`), in one
/// database transaction:
///
/// 1. the compare-and-set `prepared -> phase`, due now, with its `submitted`/`aborting` event
///    (actor `ap`, the reason as detail); a repeated submit/abort changes no status;
/// 2. the claim of the second phase for `owner` when no live lease is held (a worker may hold
///    one on a prepared transaction it is timing out), with a lease that outlasts the first
///    call, so the caller runs the pass at once (no worker tick to wait for);
/// 3. the start of that pass: the pending ops and the first call's `branch_calling` event.
///
/// The Try reports the call carries are recorded first: those Trys came before the decision.
/// The caller tells "already there" from "refused" by the state machine: `submit` may meet
/// `submitted`/`succeed`, `abort` may meet `aborting`/`failed` ([`Transition::AlreadyThere`]);
/// anything else is [`Transition::Refused`]; no such gid is [`Transition::Unknown`].
pub fn begin_second_phase(
    conn: &mut PgConnection,
    gid: &str,
    phase: GlobalStatus,
    reason: &str,
    owner: &str,
    lease_secs: i64,
    try_reports: &[TryReport],
) -> QueryResult<SecondPhaseStart> {
    // Before BEGIN is sent: the lease's clock starts no earlier than this.
    let leased_at = Instant::now();
    conn.transaction(|conn| {
        let entering = EnterPhase::new(gid, phase, reason, owner, lease_secs, try_reports);
        let changed = Named(entering).get_result(conn).optional()?;
        let claimed = match &changed {
            Some(trans) => (trans.owner.as_deref() == Some(owner)).then(|| trans.clone()),
            // A repeated submit/abort changes no status but still claims a free lease, so that
            // it drives what is pending.
            None => claim_one(conn, gid, owner, lease_secs, &[phase])?,
        };
        let trans = match (&changed, &claimed) {
            (Some(trans), _) | (None, Some(trans)) => Some(trans.clone()),
            (None, None) => lock_row(conn, gid)?,
        };
        let Some(trans) = trans else {
            return Ok(SecondPhaseStart {
                transition: Transition::Unknown,
                trans: None,
                pass: None,
            });
        };
        let transition = match (changed.is_some(), trans.global_status()) {
            (true, _) => Transition::Changed,
            (false, s) if s == phase || Some(s) == phase_end(phase) => Transition::AlreadyThere(s),
            (false, s) => Transition::Refused(s),
        };
        // The compare-and-set wrote the reports with its event; otherwise they are written now.
        let reports = if changed.is_some() { &[] } else { try_reports };
        let pass = match &claimed {
            Some(trans) => {
                let ops = start_claimed_pass(conn, trans, reports)?;
                Some(Pass::over_pending(ops, leased_at))
            }
            None => {
                let log = report_events(conn, gid, reports)?;
                insert_events(conn, &log)?;
                None
            }
        };
        Ok(SecondPhaseStart {
            transition,
            trans: Some(claimed.unwrap_or(trans)),
            pass,
        })
    })
}

/// The compare-and-set `prepared -> phase` as one statement (a data-modifying CTE: the change
/// and its events together; Diesel also never caches a DSL `UPDATE`, which Postgres would plan
/// on every call):
///
/// * `entered` moves the transaction to `$2` (`rollback_reason` `$3`), due now with the backoff
///   step reset to `retry_interval`, and claims its second phase for `$4` with a lease that
///   outlasts the first call ([`super::lease_duration`]), unless a worker holds a live lease (it
///   is timing the prepared transaction out, and gives it back when it sees the new status);
/// * `log` writes, when it changed, the `try_reported` events of the reports whose branch is
///   registered (those Trys came before the decision), then the `$13` event (`submitted` or
///   `aborting`, the reason as detail when aborting).
///
/// Answers the row after it; none when the transaction was not `prepared`.
const ENTER_PHASE: &str = "\
WITH entered AS (
    UPDATE trans_global SET status = $2, rollback_reason = $3, next_cron_time = now(),
        next_cron_interval = retry_interval, update_time = now(),
        owner = CASE WHEN lease_expire IS NULL OR lease_expire < now() THEN $4 ELSE owner END,
        lease_expire = CASE WHEN lease_expire IS NULL OR lease_expire < now()
            THEN now() + interval '1 second' * greatest($5, request_timeout + 5)
            ELSE lease_expire END
    WHERE gid = $1 AND status = 'prepared'
    RETURNING id, gid, trans_type, status, timeout_to_fail, retry_interval, request_timeout,
        branch_headers, rollback_reason, next_cron_interval, next_cron_time, owner, lease_expire,
        create_time, update_time, finish_time
), log AS (
    INSERT INTO trans_event (gid, kind, actor, status, branch_id, op, target, url, outcome,
        http_status, latency_ms, detail)
    SELECT $1, e.kind, 'ap', e.status, e.branch_id, e.op, e.target, e.url, e.outcome,
        e.http_status, e.latency_ms, e.detail
    FROM (
        SELECT r.ord, 'try_reported' AS kind, NULL AS status, r.branch_id, 'try' AS op,
            r.target, r.url, r.outcome, r.http_status, r.latency_ms, r.detail
        FROM unnest($6, $7, $8, $9, $10, $11, $12)
            WITH ORDINALITY AS r (branch_id, target, url, outcome, http_status, latency_ms, detail, ord)
        WHERE EXISTS (SELECT FROM entered)
          AND EXISTS (SELECT FROM trans_branch_op o WHERE o.gid = $1 AND o.branch_id = r.branch_id)
        UNION ALL
        SELECT cardinality($6) + 1, $13, $2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, $3
        FROM entered
    ) AS e
    ORDER BY e.ord
)
SELECT * FROM entered";

/// The parameters of `ENTER_PHASE`.
struct EnterPhase<'a> {
    gid: &'a str,
    phase: &'static str,
    /// The AP's reason when aborting.
    rollback_reason: Option<&'a str>,
    owner: &'a str,
    lease_secs: i32,
    reports: ReportColumns,
    /// `submitted` or `aborting`.
    event: &'static str,
}

impl<'a> EnterPhase<'a> {
    fn new(
        gid: &'a str,
        phase: GlobalStatus,
        reason: &'a str,
        owner: &'a str,
        lease_secs: i64,
        try_reports: &[TryReport],
    ) -> EnterPhase<'a> {
        let event = match phase {
            GlobalStatus::Submitted => EventKind::Submitted,
            _ => EventKind::Aborting,
        };
        EnterPhase {
            gid,
            phase: phase.as_str(),
            rollback_reason: (phase == GlobalStatus::Aborting).then_some(reason),
            owner,
            lease_secs: lease_secs_i32(lease_secs),
            reports: ReportColumns::of(try_reports),
            event: event.as_str(),
        }
    }
}

impl NamedStatement for EnterPhase<'_> {
    type Id = EnterPhase<'static>;
    const SQL: &'static str = ENTER_PHASE;
    type Row = SqlTypeOf<AsSelect<TransGlobal, Pg>>;
    fn push_bind<'b>(&'b self, n: usize, out: &mut AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        match n {
            1 => out.push_bind_param::<Text, _>(self.gid),
            2 => out.push_bind_param::<Text, _>(self.phase),
            3 => out.push_bind_param::<Nullable<Text>, _>(&self.rollback_reason),
            4 => out.push_bind_param::<Text, _>(self.owner),
            5 => out.push_bind_param::<Integer, _>(&self.lease_secs),
            6..=12 => self.reports.push_bind(n - 5, out),
            13 => out.push_bind_param::<Text, _>(self.event),
            _ => unreachable!("ENTER_PHASE has 13 parameters"),
        }
    }
}

/// Reads `gid` with its row locked `FOR KEY SHARE` (the lock a foreign key would take: retention
/// cannot delete it under the events this database transaction writes).
fn lock_row(conn: &mut PgConnection, gid: &str) -> QueryResult<Option<TransGlobal>> {
    use trans_global::dsl as g;
    g::trans_global
        .filter(g::gid.eq(gid))
        .select(TransGlobal::as_select())
        .for_key_share()
        .first(conn)
        .optional()
}

/// The start of the pass `submit`/`abort` claimed on `trans` (in its phase): the phase's ops in
/// call order, and the step's events written, in one statement (`START_CLAIMED_PASS`). It runs
/// after the compare-and-set, in the same database transaction: that `UPDATE` waited for any
/// registration holding the row, and this later statement sees the branches it registered.
fn start_claimed_pass(
    conn: &mut PgConnection,
    trans: &TransGlobal,
    try_reports: &[TryReport],
) -> QueryResult<Vec<BranchOp>> {
    let Some(op) = phase_op(trans.global_status()) else {
        return Ok(Vec::new());
    };
    let reports = ReportColumns::of(try_reports);
    let start = StartClaimedPass {
        gid: &trans.gid,
        op: op.as_str(),
        reports: &reports,
    };
    Named(start).load(conn)
}

/// The start of a claimed pass as one statement (a data-modifying CTE, which Diesel's DSL cannot
/// write): `ops` reads the phase's ops (`$2`: confirm or cancel), and `log` writes, in this
/// order, the `try_reported` events of the reports whose branch is registered (a repeated
/// `submit`/`abort` carries them here) and the `branch_calling` of the first pending op (the
/// last registered first: DTM's order), written before its call. Answers the ops in call order.
const START_CLAIMED_PASS: &str = "\
WITH ops AS (
    SELECT id, gid, branch_id, op, url, data, status, attempts, last_result, target,
        create_time, update_time, finish_time
    FROM trans_branch_op WHERE gid = $1 AND op = $2
), log AS (
    INSERT INTO trans_event (gid, kind, actor, status, branch_id, op, target, url, outcome,
        http_status, latency_ms, detail)
    SELECT $1, e.kind, e.actor, e.status, e.branch_id, e.op, e.target, e.url, e.outcome,
        e.http_status, e.latency_ms, e.detail
    FROM (
        SELECT r.ord, 'try_reported' AS kind, 'ap' AS actor, NULL AS status, r.branch_id,
            'try' AS op, r.target, r.url, r.outcome, r.http_status, r.latency_ms, r.detail
        FROM unnest($3, $4, $5, $6, $7, $8, $9)
            WITH ORDINALITY AS r (branch_id, target, url, outcome, http_status, latency_ms, detail, ord)
        WHERE EXISTS (SELECT FROM ops WHERE ops.branch_id = r.branch_id)
        UNION ALL
        (SELECT cardinality($3) + 1, 'branch_calling', 'tm', NULL, ops.branch_id, ops.op,
            ops.target, ops.url, NULL, NULL, NULL, NULL
        FROM ops WHERE ops.status = 'prepared' ORDER BY ops.id DESC LIMIT 1)
    ) AS e
    ORDER BY e.ord
)
SELECT * FROM ops ORDER BY id DESC";

/// The parameters of `START_CLAIMED_PASS`.
struct StartClaimedPass<'a> {
    gid: &'a str,
    op: &'static str,
    reports: &'a ReportColumns,
}

impl NamedStatement for StartClaimedPass<'_> {
    type Id = StartClaimedPass<'static>;
    const SQL: &'static str = START_CLAIMED_PASS;
    type Row = SqlTypeOf<AsSelect<BranchOp, Pg>>;
    fn push_bind<'b>(&'b self, n: usize, out: &mut AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        match n {
            1 => out.push_bind_param::<Text, _>(self.gid),
            2 => out.push_bind_param::<Text, _>(self.op),
            3..=9 => self.reports.push_bind(n - 2, out),
            _ => unreachable!("START_CLAIMED_PASS has 9 parameters"),
        }
    }
}
