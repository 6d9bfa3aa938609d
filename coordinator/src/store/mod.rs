//! Every read and write of the coordinator's tables, synchronous Diesel. Callers run these inside
//! `service_kit::db::blocking`.
//!
//! Each step of the state machine (docs/ARCHITECTURE.md#state-machine) is one function and one
//! database transaction (`conn.transaction`, or a single statement, which Postgres commits on its
//! own), so a step is applied whole or not at all, with the events that describe it
//! (`trans_event`). Every status change is a compare-and-set on the old
//! status (`UPDATE ... WHERE status = old`, the row count or `RETURNING` telling whether it won), so
//! concurrent requests and replicas cannot both win a transition; work on the second phase also
//! requires holding the transaction's lease
//! (docs/ARCHITECTURE.md#second-phase-retries-leases-and-replicas).
//!
//! * what the AP asks (`store/ap_steps.rs`): [`prepare`], [`register_branch`], [`record_try`], [`begin_second_phase`]
//!   (`submit` and `abort`);
//! * the second phase (`store/second_phase.rs`): [`claim_due`], [`claim_and_start`], [`start_pass`],
//!   [`schedule_retry`], [`abort_timed_out`], [`release_own_leases`]; a pass's record
//!   (`store/pass_record.rs`): [`record_calls`];
//! * the operator's actions (`store/operator.rs`): [`retry_now`], [`force_stop`];
//! * retention (`store/retention.rs`): [`delete_finished_before`], [`delete_tombstones_before`];
//! * reads (here): [`find`], [`status_of`], [`is_deleted`], [`list`], [`unfinished_summary`].
//!
//! Statements are Diesel's DSL (claims with `FOR UPDATE SKIP LOCKED`, `insert_into(...)
//! .on_conflict(...)`, `.returning(...)`). Diesel prepares a `SELECT` once per connection, but
//! never caches an `UPDATE`, a multi-row `INSERT` of a `Vec`, or an insert of optional values, so
//! Postgres parses and plans those on every call (as it does a statement run with `sql_query`).
//! The steps of a transaction's usual path (`prepare`, `registerBranch`, `submit`/`abort`, a
//! pass's record) are instead a named `const` SQL string each, most a data-modifying CTE that
//! writes the change and its events at once (`store/named_sql.rs`), prepared once per
//! connection: one statement is one round trip and needs no BEGIN/COMMIT, and round trips, not
//! Postgres' execution, are most of a step's cost.

mod ap_steps;
mod named_sql;
mod operator;
mod pass_record;
mod retention;
mod second_phase;

pub use ap_steps::*;
pub use operator::*;
pub use pass_record::*;
pub use retention::*;
pub use second_phase::*;

use chrono::{DateTime, Utc};
use diesel::data_types::PgInterval;
use diesel::dsl::{count_star, min, AsExprOf};
use diesel::prelude::*;
use diesel::sql_types::{Integer, Interval, Timestamptz};
use serde::Serialize;
use tcc::protocol::GlobalStatus;

use crate::schema::{trans_branch_op, trans_gid_tombstone, trans_global};

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
    /// The status as an enum.
    pub fn global_status(&self) -> GlobalStatus {
        parse_status(&self.status)
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

/// One Confirm or Cancel of a branch (`trans_branch_op`).
#[derive(Debug, Clone, Queryable, Selectable, Serialize, utoipa::ToSchema)]
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
    /// The branch's service ([`crate::events::service_name`] of its URL), named once at registration
    /// for the events of its calls; not part of DTM's answer.
    #[serde(skip_serializing)]
    pub target: String,
    /// Registered at.
    pub create_time: DateTime<Utc>,
    /// Last change.
    pub update_time: DateTime<Utc>,
    /// Succeeded at.
    pub finish_time: Option<DateTime<Utc>>,
}

/// A status read from the database; the `tcc_global_status` domain admits only known ones.
fn parse_status(status: &str) -> GlobalStatus {
    status
        .parse()
        .expect("the tcc_global_status domain admits only known statuses")
}

/// The statuses of an unfinished transaction (the worker's queue).
const UNFINISHED: [&str; 3] = ["prepared", "submitted", "aborting"];

define_sql_function! {
    /// Postgres' `greatest` of two integers.
    fn greatest(a: Integer, b: Integer) -> Integer;
}

/// One second, to multiply: `interval '1 second' * n` is `n` seconds.
const ONE_SECOND: PgInterval = PgInterval {
    microseconds: 1_000_000,
    days: 0,
    months: 0,
};

/// The end of a lease taken now for a call of this transaction: `LEASE_SECONDS` (`lease_secs`)
/// after the database's now, and at least its `request_timeout` plus 5 s, so that the lease
/// outlasts the call it was taken for (the rule of [`lease_duration`]).
#[diesel::dsl::auto_type(no_type_alias)]
fn lease_end(lease_secs: i32) -> _ {
    let db_now: AsExprOf<diesel::dsl::now, Timestamptz> =
        diesel::dsl::now.into_sql::<Timestamptz>();
    let second: AsExprOf<PgInterval, Interval> = ONE_SECOND.into_sql::<Interval>();
    let five: i32 = 5;
    db_now + second * greatest(lease_secs, trans_global::request_timeout + five)
}

/// `LEASE_SECONDS` as the database's integer seconds.
fn lease_secs_i32(lease_secs: i64) -> i32 {
    i32::try_from(lease_secs.max(1)).unwrap_or(i32::MAX)
}

/// The status of `gid`, if it exists.
pub fn status_of(conn: &mut PgConnection, gid: &str) -> QueryResult<Option<GlobalStatus>> {
    use trans_global::dsl as g;
    let status: Option<String> = g::trans_global
        .filter(g::gid.eq(gid))
        .select(g::status)
        .first(conn)
        .optional()?;
    Ok(status.as_deref().map(parse_status))
}

/// The transaction `gid` and all its branch ops in registration order.
pub fn find(
    conn: &mut PgConnection,
    gid: &str,
) -> QueryResult<Option<(TransGlobal, Vec<BranchOp>)>> {
    use trans_branch_op::dsl as o;
    let Some(trans) = reload(conn, gid).optional()? else {
        return Ok(None);
    };
    let ops = o::trans_branch_op
        .filter(o::gid.eq(gid))
        .order(o::id.asc())
        .select(BranchOp::as_select())
        .load(conn)?;
    Ok(Some((trans, ops)))
}

/// Reads the transaction `gid` (`NotFound` when there is none).
pub fn reload(conn: &mut PgConnection, gid: &str) -> QueryResult<TransGlobal> {
    use trans_global::dsl as g;
    g::trans_global
        .filter(g::gid.eq(gid))
        .select(TransGlobal::as_select())
        .first(conn)
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

/// What a list of transactions selects (DTM's `all`, the admin list); every field narrows it
/// (all `None`: every transaction).
#[derive(Debug, Clone, Default)]
pub struct TransFilter {
    /// Only the transaction with this gid.
    pub gid: Option<String>,
    /// Only gids starting with this.
    pub gid_prefix: Option<String>,
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
    if let Some(prefix) = &filter.gid_prefix {
        // LIKE's wildcards and its escape character taken literally.
        let literal = prefix
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        query = query.filter(g::gid.like(format!("{literal}%")));
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

/// The unfinished transactions of one status, for the gauges of [`crate::metrics`].
#[derive(Debug, Clone, PartialEq)]
pub struct UnfinishedSummary {
    /// `prepared`, `submitted` or `aborting`.
    pub status: String,
    /// How many.
    pub count: i64,
    /// Seconds since the oldest of them was prepared.
    pub oldest_age_secs: f64,
}

/// Count and oldest age of the unfinished transactions, by status: one grouped query over the
/// rows the partial index `trans_global_due_idx` covers (the unfinished ones only), so its cost
/// follows the backlog, not the table. Statuses without transactions have no row.
pub fn unfinished_summary(conn: &mut PgConnection) -> QueryResult<Vec<UnfinishedSummary>> {
    use trans_global::dsl as g;
    let rows: Vec<(String, i64, Option<DateTime<Utc>>)> = g::trans_global
        .filter(g::status.eq_any(UNFINISHED))
        .group_by(g::status)
        .select((g::status, count_star(), min(g::create_time)))
        .load(conn)?;
    let now = Utc::now();
    Ok(rows
        .into_iter()
        .map(|(status, count, oldest)| UnfinishedSummary {
            status,
            count,
            oldest_age_secs: oldest.map_or(0.0, |t| (now - t).as_seconds_f64().max(0.0)),
        })
        .collect())
}
