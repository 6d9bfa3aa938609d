//! Every read and write of the coordinator's tables, synchronous Diesel, one function per
//! state-machine step. Callers run these inside `service_kit::db::blocking`.
//!
//! Every status change is a compare-and-set on the old status (`UPDATE ... WHERE status = old`),
//! so concurrent requests and replicas cannot both win a transition (design §4). Work on the
//! second phase additionally requires holding the transaction's lease (design §5).

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Double, Integer, Nullable, Text, Timestamptz};
use serde::{Deserialize, Serialize};
use tcc::protocol::{GlobalStatus, Op};

use crate::events::{self, Actor, EventKind, NewEvent};
use crate::schema::{trans_branch_op, trans_gid_tombstone, trans_global};

/// A global transaction row (`trans_global`), serialized with DTM's field names. Deserialized
/// from the JSON the state-machine functions answer with (`row_to_json`).
#[derive(
    Debug, Clone, Queryable, QueryableByName, Selectable, Serialize, Deserialize, utoipa::ToSchema,
)]
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
    /// JSON object of headers for branch calls. Shown with the values of credential headers
    /// replaced by `<redacted>` ([`is_credential_header`]): `query` and `all` are open to anyone
    /// who reaches the coordinator, and such a header (an RM's bearer token, the gid token that
    /// authorizes the transaction's branch calls) would let them call the RMs themselves.
    #[serde(serialize_with = "as_redacted_json_object")]
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

fn as_redacted_json_object<S: serde::Serializer>(raw: &str, s: S) -> Result<S::Ok, S::Error> {
    let mut value: serde_json::Value = serde_json::from_str(raw).unwrap_or_default();
    if let Some(headers) = value.as_object_mut() {
        for (name, value) in headers.iter_mut() {
            if is_credential_header(name) {
                *value = "<redacted>".into();
            }
        }
    }
    value.serialize(s)
}

/// Whether a branch header carries a credential, by its name (case-insensitive):
/// `Authorization`, `Proxy-Authorization`, `Cookie`, or a name containing `token`, `secret`,
/// `signature`, `password` or `api-key`/`apikey`.
pub fn is_credential_header(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    matches!(
        name.as_str(),
        "authorization" | "proxy-authorization" | "cookie"
    ) || [
        "token",
        "secret",
        "signature",
        "password",
        "api-key",
        "apikey",
    ]
    .iter()
    .any(|word| name.contains(word))
}

/// One Confirm or Cancel of a branch (`trans_branch_op`). Deserialized from the JSON array of
/// pending ops that `tcc_start_pass` answers with.
#[derive(Debug, Clone, Queryable, Selectable, Serialize, Deserialize, utoipa::ToSchema)]
#[diesel(table_name = trans_branch_op)]
pub struct BranchOp {
    /// Surrogate key; ascending = registration order.
    #[serde(skip_serializing)]
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
    /// The branch's service ([`events::service_name`] of the Confirm URL), named once at
    /// registration for the events of its calls; not part of DTM's answer.
    #[serde(skip_serializing)]
    pub target: Option<String>,
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
    /// A transaction with this gid existed and was deleted by retention (its tombstone is
    /// kept): 409, since the RMs may still hold its barrier rows. Nothing was created.
    Used,
}

/// Creates the transaction in `prepared`, due for a timeout check after `timeout_to_fail`, and
/// its `prepared` event (detail: the options): one call of `tcc_prepare` (migration
/// `..._state_machine_functions`), one round trip, one commit.
pub fn prepare(conn: &mut PgConnection, new: &NewTrans) -> QueryResult<PrepareOutcome> {
    let options = format!(
        "timeout_to_fail={}s retry_interval={}s request_timeout={}s",
        new.timeout_to_fail, new.retry_interval, new.request_timeout
    );
    let answer: Answer = diesel::sql_query("SELECT tcc_prepare($1, $2, $3, $4, $5, $6) AS answer")
        .bind::<Text, _>(&new.gid)
        .bind::<Integer, _>(new.timeout_to_fail)
        .bind::<Integer, _>(new.retry_interval)
        .bind::<Integer, _>(new.request_timeout)
        .bind::<Text, _>(&new.branch_headers)
        .bind::<Text, _>(options)
        .get_result(conn)?;
    Ok(match answer.answer.as_str() {
        "created" => PrepareOutcome::Created,
        "used" => PrepareOutcome::Used,
        status => match parse_status(status) {
            GlobalStatus::Prepared => PrepareOutcome::AlreadyPrepared,
            other => PrepareOutcome::Conflict(other),
        },
    })
}

/// The one-word answer of a state-machine function (`SELECT tcc_...(...) AS answer`).
#[derive(QueryableByName)]
struct Answer {
    #[diesel(sql_type = Text)]
    answer: String,
}

/// A status read from the database; the CHECK constraint admits only known ones.
fn parse_status(status: &str) -> GlobalStatus {
    status
        .parse()
        .expect("the status CHECK constraint admits only known statuses")
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
    /// Try reports the registration carries (earlier Trys of this AP), recorded first.
    pub try_reports: Vec<events::TryReport>,
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
/// `branch_registered` event: one call of `tcc_register_branch`, which also names each op's
/// service once ([`events::service_name`] of its URL) for the events of its calls. The Try
/// reports the registration carries are recorded first (under the same lock).
///
/// The transaction row is locked `FOR SHARE` so that a concurrent `submit`/`abort` (an `UPDATE`)
/// waits: a branch is either registered before the second phase reads the branch list, or refused.
pub fn register_branch(conn: &mut PgConnection, b: &NewBranch) -> QueryResult<RegisterOutcome> {
    let answer: Answer = diesel::sql_query(
        "SELECT tcc_register_branch($1, $2, $3, $4, $5, $6, $7, $8, $9) AS answer",
    )
    .bind::<Text, _>(&b.gid)
    .bind::<Text, _>(&b.branch_id)
    .bind::<Text, _>(&b.data)
    .bind::<Text, _>(&b.confirm)
    .bind::<Text, _>(&b.cancel)
    .bind::<Text, _>(events::service_name(&b.confirm))
    .bind::<Text, _>(events::service_name(&b.cancel))
    .bind::<Text, _>(format!("confirm {} | cancel {}", b.confirm, b.cancel))
    .bind::<Nullable<Text>, _>(events::carried_reports_json(&b.try_reports))
    .get_result(conn)?;
    Ok(match answer.answer.as_str() {
        "registered" => RegisterOutcome::Registered,
        "already" => RegisterOutcome::AlreadyRegistered,
        "mismatch" => RegisterOutcome::Mismatch,
        "unknown" => RegisterOutcome::UnknownGid,
        status => RegisterOutcome::NotPrepared(parse_status(status)),
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
    /// runs the phase) or when there is nothing to run.
    pub pass: Option<Pass>,
}

/// `submit` (`phase` = `submitted`) or `abort` (`phase` = `aborting`, with `reason`): one call of
/// `tcc_begin_second_phase`, one commit for all of
///
/// * the Try reports the call carries (`try_reports`, [`events::carried_reports_json`]);
/// * the compare-and-set `prepared -> phase`, due now, with its `submitted`/`aborting` event
///   (actor `ap`, the reason as detail); a repeated submit/abort changes no status;
/// * the claim of the second phase for `owner` when no live lease is held, with a lease that
///   outlasts the first call, so the caller runs it at once (no worker tick to wait for);
/// * the start of its first pass ([`start_pass`]): the pending ops and the first call's
///   `branch_calling` event.
///
/// The caller tells "already there" from "refused" by the state machine: `submit` may meet
/// `submitted`/`succeed`, `abort` may meet `aborting`/`failed` ([`Transition::AlreadyThere`]);
/// anything else is [`Transition::Refused`]; no such gid is [`Transition::Unknown`] (DTM would
/// succeed an empty transaction; this project answers 409).
pub fn begin_second_phase(
    conn: &mut PgConnection,
    gid: &str,
    phase: GlobalStatus,
    reason: &str,
    owner: &str,
    lease_secs: i64,
    try_reports: &[events::TryReport],
) -> QueryResult<SecondPhaseStart> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Text)]
        outcome: String,
        #[diesel(sql_type = Nullable<Text>)]
        trans: Option<String>,
        #[diesel(sql_type = diesel::sql_types::Bool)]
        claimed: bool,
        #[diesel(sql_type = Nullable<diesel::sql_types::Bool>)]
        first_leased: Option<bool>,
        #[diesel(sql_type = Nullable<Text>)]
        ops: Option<String>,
    }
    let end = match phase {
        GlobalStatus::Submitted => GlobalStatus::Succeed,
        _ => GlobalStatus::Failed,
    };
    let leased_at = Instant::now();
    let row: Row =
        diesel::sql_query("SELECT * FROM tcc_begin_second_phase($1, $2, $3, $4, $5, $6)")
            .bind::<Text, _>(gid)
            .bind::<Text, _>(phase.as_str())
            .bind::<Text, _>(reason)
            .bind::<Text, _>(owner)
            .bind::<BigInt, _>(lease_secs)
            .bind::<Nullable<Text>, _>(events::carried_reports_json(try_reports))
            .get_result(conn)?;
    let transition = match row.outcome.as_str() {
        "changed" => Transition::Changed,
        "unknown" => Transition::Unknown,
        status => match parse_status(status) {
            s if s == phase || s == end => Transition::AlreadyThere(s),
            s => Transition::Refused(s),
        },
    };
    let trans = row.trans.as_deref().map(from_function_json).transpose()?;
    let pass = match (row.claimed, row.first_leased, row.ops) {
        (true, Some(first_leased), Some(ops)) => Some(Pass {
            ops: from_function_json(&ops)?,
            first_leased,
            leased_at,
        }),
        _ => None,
    };
    Ok(SecondPhaseStart {
        transition,
        trans,
        pass,
    })
}

/// Reads the JSON a state-machine function built from table rows (`row_to_json`, `json_agg`).
/// It always matches the row types; a mismatch is a deserialization error, not a panic.
fn from_function_json<T: serde::de::DeserializeOwned>(json: &str) -> QueryResult<T> {
    serde_json::from_str(json).map_err(|e| diesel::result::Error::DeserializationError(Box::new(e)))
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

/// Whether a transaction with this gid existed and retention deleted it: its tombstone is kept
/// (see [`delete_finished_before`]).
pub fn is_deleted(conn: &mut PgConnection, gid: &str) -> QueryResult<bool> {
    use trans_gid_tombstone::dsl as t;
    diesel::select(diesel::dsl::exists(
        t::trans_gid_tombstone.filter(t::gid.eq(gid)),
    ))
    .get_result(conn)
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

/// The start of one second-phase pass, read and written in one database transaction: the ops
/// still to call, in call order, and whether the lease was renewed for the first of them (with
/// its `branch_calling` event).
#[derive(Debug, Clone)]
pub struct Pass {
    /// Pending ops of the transaction's phase, in call order: the last registered branch first,
    /// for Confirms and Cancels alike (DTM's order); empty when nothing is left.
    pub ops: Vec<BranchOp>,
    /// `false` when the lease was lost before the first call (nothing was recorded then).
    pub first_leased: bool,
    /// An instant no later than the one at which the database set the lease: it expires
    /// [`lease_duration`] after this at the earliest. The engine renews the lease before a call
    /// that might outlive it.
    pub leased_at: Instant,
}

/// How long a lease taken or renewed for a call lasts: `LEASE_SECONDS`, and at least the
/// transaction's `request_timeout` plus 5 s, so that it outlasts the call it was taken for (the
/// rule `tcc_lease_for_call` and `tcc_begin_second_phase` apply in the database).
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

/// Loads the pending ops of `trans`'s phase and renews `owner`'s lease for the first call, with
/// that call's `branch_calling` event: one call of `tcc_start_pass`, one commit. The lease is made
/// to outlast the call (at least the transaction's `request_timeout` plus 5 s), so no other worker
/// claims it while the call is in flight; a call whose answer is never recorded (the coordinator
/// was killed during it) still shows in the event log.
pub fn start_pass(
    conn: &mut PgConnection,
    trans: &TransGlobal,
    owner: &str,
    lease_secs: i64,
) -> QueryResult<Pass> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        first_leased: bool,
        #[diesel(sql_type = Text)]
        ops: String,
    }
    let leased_at = Instant::now();
    let row: Row = diesel::sql_query("SELECT * FROM tcc_start_pass($1, $2, $3, TRUE)")
        .bind::<Text, _>(&trans.gid)
        .bind::<Text, _>(owner)
        .bind::<BigInt, _>(lease_secs)
        .get_result(conn)?;
    Ok(Pass {
        ops: from_function_json(&row.ops)?,
        first_leased: row.first_leased,
        leased_at,
    })
}

/// [`claim_one`] and [`start_pass`] in one database transaction: what the operator's "retry
/// now" does to run a transaction's second phase at once ([`crate::engine::Engine::drive`]).
pub fn claim_and_start(
    conn: &mut PgConnection,
    gid: &str,
    owner: &str,
    lease_secs: i64,
) -> QueryResult<Option<(TransGlobal, Pass)>> {
    // Before BEGIN is sent: the lease's clock starts at the transaction's start (`now()`).
    let leased_at = Instant::now();
    conn.transaction(|conn| {
        let Some(trans) = claim_one(conn, gid, owner, lease_secs)? else {
            return Ok(None);
        };
        let pass = start_pass(conn, &trans, owner, lease_secs)?;
        Ok(Some((trans, Pass { leased_at, ..pass })))
    })
}

/// What [`record_calls`] does after recording the calls, in the same commit.
#[derive(Debug, Clone, Copy)]
pub enum AfterCalls<'a> {
    /// Nothing more (a call failed: the engine schedules its retry next).
    Nothing,
    /// Another op is called next: renew the lease for it, with its `branch_calling` event.
    Call(&'a BranchOp),
    /// Every op of the phase succeeded: move `from` to `to`, releasing the lease, with the final
    /// event.
    Finish {
        /// `submitted` or `aborting`.
        from: GlobalStatus,
        /// `succeed` or `failed`.
        to: GlobalStatus,
    },
}

/// What [`record_calls`] did after recording the calls.
#[derive(Debug, Clone, PartialEq)]
pub enum Continued {
    /// The calls were recorded and nothing more was asked ([`AfterCalls::Nothing`]).
    Recorded,
    /// The lease was renewed for the next call (`true`) or was lost (`false`).
    Leased(bool),
    /// The transaction finished (`None`: the compare-and-set of the final status lost).
    Finished(Option<Finished>),
}

/// One Confirm or Cancel call of a pass, as the engine saw it, for [`record_calls`].
#[derive(Debug, Clone)]
pub struct BranchCall {
    /// The op called (`trans_branch_op.id`).
    pub op_id: i64,
    /// The branch called.
    pub branch_id: String,
    /// The URL called.
    pub url: String,
    /// Whether the call succeeded (the op then becomes `succeed`).
    pub succeeded: bool,
    /// `success`, `ongoing`, `failure: <message>` or `error: <detail>`, for `last_result`.
    pub result: String,
    /// `success`, `failure`, `ongoing` or `error`.
    pub outcome: &'static str,
    /// HTTP status of the answer, if one was read.
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

/// Records the calls of one pass in call order, then does `after`, in one commit: one call of
/// `tcc_record_calls` (migration `..._one_record_per_pass`). Each op gets attempts + 1 and its
/// `last_result`, and becomes `succeed` if its call succeeded; each call gets its
/// `branch_called` event (target service, HTTP status or error, latency, attempt number) and,
/// when the engine had not written it before the call, its `branch_calling` event, both dated
/// when they happened. Returns each op's attempts after its call, in call order (0 for a success
/// of an op that had already succeeded), and what followed.
///
/// Confirm and Cancel are idempotent (design §6), so calls that succeeded and were not recorded
/// before a crash are only sent again by the next pass (DTM's `UpdateBranchSync` setting, when
/// it writes branch statuses asynchronously, makes the same trade).
pub fn record_calls(
    conn: &mut PgConnection,
    gid: &str,
    calls: &[BranchCall],
    owner: &str,
    lease_secs: i64,
    after: AfterCalls<'_>,
) -> QueryResult<(Vec<i32>, Continued)> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Array<Integer>)]
        attempts: Vec<i32>,
        #[diesel(sql_type = Text)]
        continued: String,
        #[diesel(sql_type = Nullable<Text>)]
        trans_type: Option<String>,
        #[diesel(sql_type = Nullable<Double>)]
        second_phase_secs: Option<f64>,
    }
    let (next_op, from, to) = match after {
        AfterCalls::Nothing => (None, None, None),
        AfterCalls::Call(branch) => (Some(branch.id), None, None),
        AfterCalls::Finish { from, to } => (None, Some(from.as_str()), Some(to.as_str())),
    };
    // The events are dated by how long ago they happened, on this process's monotonic clock,
    // so that the database's clock dates them (it dates every other event).
    let now = Instant::now();
    let ms_ago = |at: Instant| now.saturating_duration_since(at).as_secs_f64() * 1000.0;
    let calls_json = serde_json::Value::Array(
        calls
            .iter()
            .map(|c| {
                serde_json::json!({
                    "op_id": c.op_id,
                    "succeeded": c.succeeded,
                    "result": c.result,
                    "outcome": c.outcome,
                    "http_status": c.http_status,
                    "latency_ms": i32::try_from(c.latency_ms).unwrap_or(i32::MAX),
                    "detail": c.detail,
                    "target": events::service_name(&c.url),
                    "calling_ms_ago": c.unannounced_since.map(ms_ago),
                    "called_ms_ago": ms_ago(c.answered_at),
                })
            })
            .collect(),
    )
    .to_string();
    let row: Row = diesel::sql_query("SELECT * FROM tcc_record_calls($1, $2, $3, $4, $5, $6, $7)")
        .bind::<Text, _>(gid)
        .bind::<Text, _>(&calls_json)
        .bind::<Text, _>(owner)
        .bind::<BigInt, _>(lease_secs)
        .bind::<Nullable<BigInt>, _>(next_op)
        .bind::<Nullable<Text>, _>(from)
        .bind::<Nullable<Text>, _>(to)
        .get_result(conn)?;
    let continued = match row.continued.as_str() {
        "recorded" => Continued::Recorded,
        "leased" => Continued::Leased(true),
        "lost" => Continued::Leased(false),
        "finished" => Continued::Finished(Some(Finished {
            trans_type: row.trans_type.unwrap_or_else(|| "tcc".to_owned()),
            second_phase_secs: row.second_phase_secs,
        })),
        _ => Continued::Finished(None),
    };
    Ok((row.attempts, continued))
}

/// A transaction [`record_calls`] moved to its final status.
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
/// more than `retention_secs` seconds ago, oldest first, then their `trans_branch_op` and
/// `trans_event` rows, in one database transaction (the child tables have no foreign keys:
/// migration `..._state_machine_functions`). None is left behind: a writer of a child row
/// either locks the parent row, as a foreign key would (registrations, Try reports, operator
/// actions), or writes for an unfinished transaction, which this never deletes (the second phase). Returns how many transactions were deleted.
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
    #[derive(QueryableByName, Insertable)]
    #[diesel(table_name = trans_gid_tombstone)]
    struct Gone {
        #[diesel(sql_type = Text)]
        gid: String,
        #[diesel(sql_type = Timestamptz)]
        finish_time: DateTime<Utc>,
    }
    conn.transaction(|conn| {
        let gone: Vec<Gone> = diesel::sql_query(DELETE_FINISHED_BEFORE)
            .bind::<BigInt, _>(retention_secs)
            .bind::<BigInt, _>(limit)
            .load::<Gone>(conn)?;
        if gone.is_empty() {
            return Ok(0);
        }
        // The gids stay refused by `prepare` (tcc_prepare) while the RMs may hold barrier rows.
        diesel::insert_into(trans_gid_tombstone::table)
            .values(&gone)
            .on_conflict_do_nothing()
            .execute(conn)?;
        let gids: Vec<&str> = gone.iter().map(|g| g.gid.as_str()).collect();
        // Later statements, hence fresh snapshots: they also see an event that a writer holding
        // the row's lock committed while the DELETE above waited for it.
        diesel::delete(trans_branch_op::table.filter(trans_branch_op::gid.eq_any(&gids)))
            .execute(conn)?;
        diesel::delete(
            crate::schema::trans_event::table.filter(crate::schema::trans_event::gid.eq_any(&gids)),
        )
        .execute(conn)?;
        Ok(gone.len())
    })
}

/// The retention `DELETE` of finished transactions (see [`delete_finished_before`]), as raw SQL
/// because Diesel's DSL has no `FOR UPDATE SKIP LOCKED` in a subquery of a `DELETE`: at most `$2`
/// `succeed`/`failed` transactions that finished more than `$1` seconds ago, oldest first,
/// skipping rows another replica is deleting; returns each one's gid and finish time.
const DELETE_FINISHED_BEFORE: &str = "DELETE FROM trans_global \
     WHERE id IN (SELECT id FROM trans_global \
                  WHERE status IN ('succeed', 'failed') \
                    AND finish_time < now() - make_interval(secs => $1) \
                  ORDER BY finish_time, id LIMIT $2 FOR UPDATE SKIP LOCKED) \
     RETURNING gid, finish_time";

/// Deletes at most `limit` gid tombstones of transactions that finished more than
/// `keep_secs` seconds ago, oldest first; returns how many. After that the gid may be prepared
/// again: by then the RMs have deleted its barrier rows (`GID_TOMBSTONE_SECONDS` must exceed
/// their `BARRIER_RETENTION_SECONDS`).
pub fn delete_tombstones_before(
    conn: &mut PgConnection,
    keep_secs: i64,
    limit: i64,
) -> QueryResult<usize> {
    use trans_gid_tombstone::dsl as t;
    let cutoff = Utc::now() - chrono::Duration::seconds(keep_secs);
    let expired: Vec<String> = t::trans_gid_tombstone
        .select(t::gid)
        .filter(t::finish_time.lt(cutoff))
        .order(t::finish_time)
        .limit(limit)
        .load(conn)?;
    diesel::delete(t::trans_gid_tombstone.filter(t::gid.eq_any(&expired))).execute(conn)
}

// ---- admin: the operator's views and actions (crate::admin) ----

/// What a list of transactions selects (DTM's `all`, the admin list); every field narrows it
/// (all `None`: every transaction).
#[derive(Debug, Clone, Default)]
pub struct TransFilter {
    /// Only the transaction with this gid.
    pub gid: Option<String>,
    /// Only transactions of this type (`tcc`, the only one here).
    pub trans_type: Option<String>,
    /// Only these statuses; empty: any.
    pub statuses: Vec<GlobalStatus>,
    /// Only transactions created before this instant (older than an age).
    pub created_before: Option<DateTime<Utc>>,
    /// Only transactions created at or after this instant (newer than an age).
    pub created_since: Option<DateTime<Utc>>,
    /// Only transactions created at or before this instant.
    pub created_until: Option<DateTime<Utc>>,
    /// Keyset position: only ids below it (the last id of the previous page).
    pub before_id: Option<i64>,
}

/// A page of at most `limit` transactions matching `filter`, newest first (by id, which is
/// creation order), for DTM's `all` and `GET /api/admin/transactions`.
pub fn list(
    conn: &mut PgConnection,
    filter: &TransFilter,
    limit: i64,
) -> QueryResult<Vec<TransGlobal>> {
    use trans_global::dsl as g;
    let mut query = g::trans_global
        .select(TransGlobal::as_select())
        .order(g::id.desc())
        .limit(limit)
        .into_boxed();
    if let Some(gid) = &filter.gid {
        query = query.filter(g::gid.eq(gid.clone()));
    }
    if let Some(trans_type) = &filter.trans_type {
        query = query.filter(g::trans_type.eq(trans_type.clone()));
    }
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
    if let Some(until) = filter.created_until {
        query = query.filter(g::create_time.le(until));
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
    /// A second-phase pass holds the transaction's lease until this instant (force-stop: 409,
    /// to be tried again once the pass has ended).
    Leased(DateTime<Utc>),
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
/// Cancel**. Its pending branch ops stay as they are (`prepared`, never called), and the
/// rollback reason records the stop and the status it interrupted. A final transaction is
/// refused, and so is one whose second phase is running ([`AdminOutcome::Leased`]: a live
/// lease): a pass sends all its calls before it records them, so it could not be stopped
/// half-way; the operator tries again once the pass has ended (a failing branch releases the
/// lease until its retry is due).
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
        let (previous, lease_expire, leased): (
            Option<String>,
            Option<DateTime<Utc>>,
            Option<bool>,
        ) = g::trans_global
            .filter(g::gid.eq(gid))
            .select((
                g::rollback_reason,
                g::lease_expire,
                g::lease_expire.gt(diesel::dsl::now).nullable(),
            ))
            .first(conn)?;
        // A pass records its calls only when it ends (crate::engine): stopping the transaction
        // under a live lease would not stop the calls that pass has left to send.
        if let (Some(until), Some(true)) = (lease_expire, leased) {
            return Ok(AdminOutcome::Leased(until));
        }
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
