//! Reconciliation: finding and releasing the tentative reservations (bank holds, stock
//! reservations) that no global transaction will ever settle.
//!
//! A Try that succeeded leaves a `tentative` row; the TM's Confirm or Cancel settles it. Some are
//! never settled: a Try under a gid the coordinator never knew (sent while the Try gate was off,
//! or before it existed), a Try of a branch that was never registered, or a transaction whose
//! Cancel went somewhere else. They keep funds frozen (and stock reserved) for good; the gauges
//! `tcc_rm_tentative_reservations` and `tcc_rm_tentative_oldest_age_seconds` show them.
//!
//! [`reconcile`] goes through the tentative rows older than [`ReconcileOptions::older_than`],
//! oldest first, asks the RM's coordinator about each gid ([`crate::coordinator_check`], once per
//! gid) and acts on its [`ReconcileVerdict`]:
//!
//! * `release` when the coordinator positively says the gid is unknown (not any `404`: see
//!   [`crate::coordinator_check`]), or the branch is not registered under it: the RM's own
//!   Cancel business code runs behind the sub-transaction barrier, exactly as for a Cancel from
//!   the TM. So the release is recorded as that branch's Cancel: a real Cancel arriving later is
//!   a duplicate, and a Try arriving later is a hanging Try, both harmless;
//! * `leave` when the transaction is unfinished: the TM will settle it;
//! * `report` (never touched) when the transaction `succeed`ed (its Confirm never reached this
//!   RM), when it is `failed` (a rollback whose Cancel went elsewhere, or an admin's force-stop
//!   of a `submitted` transaction whose other branches may already be confirmed: only a person
//!   can tell them apart), or when the coordinator's retention deleted it;
//! * a gid the coordinator could not be asked about (unreachable, or an answer that does not
//!   say what the gid is, such as the route-404 of a `DTM_URL` pointing at the wrong service) is
//!   left too, and reported as an error.
//!
//! Each RM binary runs it as a subcommand, `<binary> reconcile [--older-than SECONDS]
//! [--dry-run]`, with the RM's usual settings (`DATABASE_URL`, `DTM_URL`), printing one JSON line
//! per row and a summary line ([`command`]).

use std::collections::BTreeMap;
use std::time::Duration;

use diesel::prelude::*;
use diesel::sql_types::{Double, Text};
use serde::Serialize;
use tcc::barrier::{BarrierOutcome, BranchBarrier};
use tcc::protocol::{BranchQuery, Op, TransType};

use crate::coordinator_check::{
    reconcile_verdict, CoordinatorClient, GlobalRecord, QueryError, ReconcileVerdict,
};
use crate::db::{blocking, build_pool, DbPool};
use crate::reservation::ReservationState;
use crate::settings::RmCommonSettings;

/// Default of `--older-than`: 60 seconds. Younger rows may belong to a transaction whose first
/// phase is still running.
pub const DEFAULT_OLDER_THAN: Duration = Duration::from_secs(60);

/// What one run looks at and whether it acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconcileOptions {
    /// Only tentative rows created longer ago than this (database clock). `--older-than
    /// SECONDS`, default [`DEFAULT_OLDER_THAN`].
    pub older_than: Duration,
    /// Report what would be released, release nothing. `--dry-run`.
    pub dry_run: bool,
}

impl Default for ReconcileOptions {
    fn default() -> Self {
        ReconcileOptions {
            older_than: DEFAULT_OLDER_THAN,
            dry_run: false,
        }
    }
}

impl ReconcileOptions {
    /// Parses the subcommand's arguments (after `reconcile`): `--older-than SECONDS` (whole
    /// seconds; also `--older-than=SECONDS`) and `--dry-run`. `Err` names what is wrong.
    pub fn from_args(args: &[String]) -> Result<ReconcileOptions, String> {
        let mut options = ReconcileOptions::default();
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let seconds = match arg.as_str() {
                "--dry-run" => {
                    options.dry_run = true;
                    continue;
                }
                "--older-than" => args.next().map(String::as_str),
                other => match other.strip_prefix("--older-than=") {
                    Some(value) => Some(value),
                    None => return Err(format!("unknown argument {other:?}\n{USAGE}")),
                },
            };
            let seconds = seconds
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| format!("--older-than takes whole seconds\n{USAGE}"))?;
            options.older_than = Duration::from_secs(seconds);
        }
        Ok(options)
    }
}

/// The subcommand's usage line.
pub const USAGE: &str = "usage: <binary> reconcile [--older-than SECONDS] [--dry-run]";

/// What became of one tentative row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Released by the Cancel business code behind the barrier.
    Released,
    /// Would be released (`--dry-run`).
    WouldRelease,
    /// Left for the TM, which will settle it.
    Left,
    /// Tentative although its transaction succeeded, failed, or was deleted by the coordinator's
    /// retention: reported, not touched.
    Reported,
    /// Nothing done because something failed: the coordinator could not be asked, or the
    /// release failed (the detail says why). Run again later.
    Error,
}

/// One line of the report: a tentative row and what was done with it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReconcileLine {
    /// The row's gid.
    pub gid: String,
    /// The row's branch id.
    pub branch_id: String,
    /// Seconds since the row was created (database clock).
    pub age_seconds: u64,
    /// What the coordinator reported about the gid, in words.
    pub coordinator: String,
    /// What was done.
    pub action: Action,
    /// The barrier's decision for a release (`applied`, or `duplicate` when a Cancel had just
    /// run), or the error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Counts of a run, by [`Action`]; the summary line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ReconcileSummary {
    /// Tentative rows older than the threshold.
    pub examined: usize,
    /// [`Action::Released`].
    pub released: usize,
    /// [`Action::WouldRelease`].
    pub would_release: usize,
    /// [`Action::Left`].
    pub left: usize,
    /// [`Action::Reported`].
    pub reported: usize,
    /// [`Action::Error`].
    pub errors: usize,
}

/// The whole report of a run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReconcileReport {
    /// One line per tentative row examined, oldest first.
    pub lines: Vec<ReconcileLine>,
    /// The counts.
    pub summary: ReconcileSummary,
}

/// The run could not start: the tentative rows could not be read.
#[derive(Debug, thiserror::Error)]
#[error("reading the tentative rows failed: {0}")]
pub struct ReconcileError(String);

/// The Cancel business code of an RM's branch (the bank's `trans_out_cancel`, the stock
/// service's `stock_cancel`): releases what the Try of the query's branch reserved.
pub type Cancel<E> = fn(&mut PgConnection, &BranchQuery) -> Result<(), E>;

#[derive(QueryableByName)]
struct TentativeRow {
    #[diesel(sql_type = Text)]
    gid: String,
    #[diesel(sql_type = Text)]
    branch_id: String,
    #[diesel(sql_type = Double)]
    age_seconds: f64,
}

/// Reconciles the tentative rows of `table` (the RM's reservation table, with `gid`,
/// `branch_id`, `state` and `created_at` columns; a plain SQL identifier, a constant of the RM)
/// against `coordinator`, releasing with `cancel` (see the module docs).
///
/// Panics if `table` is not a plain SQL identifier (a programming error). `Err` only when the
/// rows cannot be listed; a failure on one row is that row's [`Action::Error`].
pub async fn reconcile<E>(
    pool: &DbPool,
    coordinator: &CoordinatorClient,
    table: &'static str,
    cancel: Cancel<E>,
    options: ReconcileOptions,
) -> Result<ReconcileReport, ReconcileError>
where
    E: From<diesel::result::Error> + std::fmt::Display + Send + 'static,
{
    assert!(
        crate::retention::is_plain_identifier(table),
        "the reconciled table {table:?} must be a plain SQL identifier"
    );
    let sql = format!(
        "SELECT gid, branch_id, EXTRACT(EPOCH FROM now() - created_at)::float8 AS age_seconds \
         FROM {table} WHERE state = '{}' AND created_at < now() - make_interval(secs => $1) \
         ORDER BY created_at, id",
        ReservationState::Tentative
    );
    let older_than = options.older_than.as_secs_f64();
    let rows: Vec<TentativeRow> = blocking(pool, move |conn| {
        diesel::sql_query(sql)
            .bind::<Double, _>(older_than)
            .load(conn)
    })
    .await
    .map_err(|e| ReconcileError(e.to_string()))?
    .map_err(|e| ReconcileError(e.to_string()))?;

    let mut records: BTreeMap<String, Result<GlobalRecord, QueryError>> = BTreeMap::new();
    let mut report = ReconcileReport::default();
    for row in rows {
        if !records.contains_key(&row.gid) {
            let record = coordinator.query(&row.gid).await;
            records.insert(row.gid.clone(), record);
        }
        let line = match &records[&row.gid] {
            Err(e) => ReconcileLine {
                coordinator: e.to_string(),
                action: Action::Error,
                detail: Some("left alone: the coordinator could not be asked".into()),
                ..line_of(&row)
            },
            Ok(record) => {
                let coordinator = record.describe(&row.branch_id);
                let (action, detail) = match reconcile_verdict(record, &row.branch_id) {
                    ReconcileVerdict::Leave => (Action::Left, None),
                    ReconcileVerdict::Report => (Action::Reported, None),
                    ReconcileVerdict::Release if options.dry_run => (Action::WouldRelease, None),
                    ReconcileVerdict::Release => match release(pool, &row, cancel).await {
                        Ok(kind) => (Action::Released, Some(kind.to_owned())),
                        Err(e) => (Action::Error, Some(e)),
                    },
                };
                ReconcileLine {
                    coordinator,
                    action,
                    detail,
                    ..line_of(&row)
                }
            }
        };
        let summary = &mut report.summary;
        summary.examined += 1;
        match line.action {
            Action::Released => summary.released += 1,
            Action::WouldRelease => summary.would_release += 1,
            Action::Left => summary.left += 1,
            Action::Reported => summary.reported += 1,
            Action::Error => summary.errors += 1,
        }
        log::info!(
            "gid={} branch_id={} op=cancel reconcile: {:?} ({})",
            line.gid,
            line.branch_id,
            line.action,
            line.coordinator
        );
        report.lines.push(line);
    }
    Ok(report)
}

fn line_of(row: &TentativeRow) -> ReconcileLine {
    ReconcileLine {
        gid: row.gid.clone(),
        branch_id: row.branch_id.clone(),
        age_seconds: row.age_seconds.max(0.0) as u64,
        coordinator: String::new(),
        action: Action::Left,
        detail: None,
    }
}

/// Runs `cancel` for the row's branch behind the barrier, as the TM's Cancel would run; the
/// barrier's decision (`applied`, `duplicate`), or the error in words.
async fn release<E>(
    pool: &DbPool,
    row: &TentativeRow,
    cancel: Cancel<E>,
) -> Result<&'static str, String>
where
    E: From<diesel::result::Error> + std::fmt::Display + Send + 'static,
{
    let query = BranchQuery {
        gid: row.gid.clone(),
        trans_type: TransType::Tcc,
        branch_id: row.branch_id.clone(),
        op: Op::Cancel,
        dtm: None,
    };
    let outcome = blocking(pool, move |conn| {
        BranchBarrier::new(&query).call(conn, |conn| cancel(conn, &query))
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e: E| e.to_string())?;
    Ok(match outcome {
        BarrierOutcome::Applied(()) => "applied",
        other => other.kind(),
    })
}

/// How long the reconciliation waits for the coordinator's answer about one gid: 10 seconds.
/// Longer than a Try's check ([`CoordinatorClient::DEFAULT_TIMEOUT`]): nobody waits on it, and a
/// gid it could not ask about is only left for the next run.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// [`reconcile`] with what an RM's settings name: its database (`DATABASE_URL`, a pool of two
/// connections) and its coordinator (`DTM_URL`, queried with [`QUERY_TIMEOUT`]). `Err` also when
/// the database cannot be reached.
pub async fn reconcile_with_settings<E>(
    common: &RmCommonSettings,
    table: &'static str,
    cancel: Cancel<E>,
    options: ReconcileOptions,
) -> Result<ReconcileReport, ReconcileError>
where
    E: From<diesel::result::Error> + std::fmt::Display + Send + 'static,
{
    let url = common.database_url.clone();
    // r2d2 opens its connections at once: off the async runtime.
    let pool = tokio::task::spawn_blocking(move || build_pool(&url, 2))
        .await
        .map_err(|e| ReconcileError(e.to_string()))?
        .map_err(|e| ReconcileError(e.to_string()))?;
    let coordinator = CoordinatorClient::new(&common.dtm_url, QUERY_TIMEOUT);
    reconcile(&pool, &coordinator, table, cancel, options).await
}

/// The `reconcile` subcommand of an RM binary: parses `args` (after `reconcile`, see
/// [`ReconcileOptions::from_args`]), runs [`reconcile_with_settings`] and prints one JSON line per
/// row to stdout, then `{"summary": {...}, "dry_run": ...}`. Returns the process's exit status:
/// 0 when every row was handled, 1 when some row's action is `error`, 2 for bad arguments or
/// when the rows could not be read (the message on stderr).
pub async fn command<E>(
    common: &RmCommonSettings,
    table: &'static str,
    cancel: Cancel<E>,
    args: &[String],
) -> i32
where
    E: From<diesel::result::Error> + std::fmt::Display + Send + 'static,
{
    let options = match ReconcileOptions::from_args(args) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}");
            return 2;
        }
    };
    match reconcile_with_settings(common, table, cancel, options).await {
        Ok(report) => {
            for line in &report.lines {
                println!(
                    "{}",
                    serde_json::to_string(line).expect("a line serializes")
                );
            }
            println!(
                "{}",
                serde_json::json!({ "summary": report.summary, "dry_run": options.dry_run })
            );
            i32::from(report.summary.errors > 0)
        }
        Err(e) => {
            eprintln!("{e}");
            2
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_arguments_parse() {
        assert_eq!(
            ReconcileOptions::from_args(&[]),
            Ok(ReconcileOptions::default())
        );
        let parsed = ReconcileOptions::from_args(&args(&["--older-than", "5", "--dry-run"]));
        assert_eq!(
            parsed,
            Ok(ReconcileOptions {
                older_than: Duration::from_secs(5),
                dry_run: true
            })
        );
        assert_eq!(
            ReconcileOptions::from_args(&args(&["--older-than=0"])).map(|o| o.older_than),
            Ok(Duration::ZERO)
        );
        for bad in [
            &["--older-than"][..],
            &["--older-than", "-1"],
            &["--older-than", "1.5"],
            &["--now"],
        ] {
            assert!(ReconcileOptions::from_args(&args(bad)).is_err(), "{bad:?}");
        }
    }
}
