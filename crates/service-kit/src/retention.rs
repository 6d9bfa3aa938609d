//! Retention of an RM's sub-transaction barrier rows: a background job that deletes, in batches,
//! the `dtm_barrier.barrier` rows (and the `fault_counters` rows) of global transactions settled
//! long ago, so the barrier table does not grow forever (DTM never cleans it up).
//!
//! The rows of one gid are deleted together, and only when both hold:
//!
//! * the RM holds **nothing tentative** for that gid: no row of its reservation table (the
//!   bank's `holds`, the stock service's `reservations`, named by
//!   [`BarrierRetention::tentative_table`]) is still in state
//!   [`tentative`](crate::reservation::ReservationState::Tentative). A tentative row means a Confirm or Cancel is
//!   still to come, and that call needs the Try's barrier row to be recognised as a second-phase
//!   call rather than as an empty compensation;
//! * **every** barrier row of the gid is older than [`BarrierRetention::retention`]: a gid with
//!   any recent call is still alive.
//!
//! Why the retention must be long (the default is 7 days): deleting a gid's rows forgets what the
//! barrier knew. The dangerous case is the **hanging Try**. When a Cancel arrives before its Try,
//! the barrier writes the Try's row with reason `cancel` (the empty compensation) precisely so
//! that the late Try finds it and does nothing. If that row is deleted and the Try arrives only
//! afterwards, nothing stops it: it freezes funds (or reserves stock) that no Confirm or Cancel
//! will ever release. With a retention of days, that takes a Try delayed in the network by days,
//! far beyond any request timeout of the AP or `timeout_to_fail` of the TM, so the protection is
//! kept in practice. Duplicates of Confirm and Cancel are covered the same way: the TM stops
//! retrying once the global transaction is finished, long before the retention ends.
//!
//! The job runs [`every`] [`BarrierRetention::interval`] (a tenth of the retention, between
//! 100 ms and one minute), starting at once; each pass deletes batches of at most
//! [`BarrierRetention::batch`] gids until a batch comes back less than full. A retention of zero
//! disables it. The RM's own business rows (holds, reservations) are kept: they are its records.
//!
//! The only RM-specific input is the table name; the SQL assumes it has a `gid` and a `state`
//! column, as both RMs' tables do.

use std::future::Future;
use std::time::Duration;

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};
use tokio::sync::watch;

use crate::db::{blocking, BlockingError, DbPool};
use crate::reservation::ReservationState;

/// What the barrier retention job of an RM needs. An RM returns it from its settings
/// ([`crate::startup::ServerSettings::retention`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BarrierRetention {
    /// The RM's table of what Trys reserved (`holds`, `reservations`), with `gid` and `state`
    /// columns; a gid with a row in state `tentative` there is never cleaned. A plain SQL
    /// identifier (letters, digits, `_`, optionally `schema.table`), a constant of the RM.
    pub tentative_table: &'static str,
    /// How old, in whole seconds, the newest barrier row of a gid must be before the gid's rows
    /// are deleted. Env `BARRIER_RETENTION_SECONDS`, default 604800 (7 days); zero disables the
    /// job.
    pub retention: Duration,
    /// Most gids one `DELETE` handles. Env `RETENTION_BATCH`, default 1000 (0 counts as 1).
    pub batch: u32,
}

impl BarrierRetention {
    /// Default retention: 7 days (604800 seconds).
    pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
    /// Default batch size, in gids.
    pub const DEFAULT_BATCH: u32 = 1000;

    /// `false` when the retention is zero: the job does not run.
    pub fn enabled(&self) -> bool {
        !self.retention.is_zero()
    }

    /// How often the job runs: a tenth of the retention, at least every minute and at most every
    /// 100 ms (so tests with a retention of a second see it work quickly).
    pub fn interval(&self) -> Duration {
        (self.retention / 10).clamp(Duration::from_millis(100), Duration::from_secs(60))
    }
}

/// What one batch ([`delete_batch`]) deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, QueryableByName)]
pub struct Deleted {
    /// Global transactions whose rows were deleted (the unit of the batch size).
    #[diesel(sql_type = BigInt)]
    pub gids: i64,
    /// `dtm_barrier.barrier` rows deleted.
    #[diesel(sql_type = BigInt)]
    pub barrier_rows: i64,
    /// `fault_counters` rows deleted.
    #[diesel(sql_type = BigInt)]
    pub fault_counters: i64,
}

impl std::ops::AddAssign for Deleted {
    fn add_assign(&mut self, other: Deleted) {
        self.gids += other.gids;
        self.barrier_rows += other.barrier_rows;
        self.fault_counters += other.fault_counters;
    }
}

/// `true` for a plain SQL identifier, optionally schema-qualified: the table name is formatted
/// into the statement, so only such names are accepted.
pub fn is_plain_identifier(name: &str) -> bool {
    let part = |p: &str| {
        let mut chars = p.chars();
        matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    match name.split_once('.') {
        Some((schema, table)) => part(schema) && part(table),
        None => part(name),
    }
}

/// Deletes the barrier rows and fault counters of at most `config.batch` gids that are old
/// enough and hold nothing tentative (see the module docs), in one statement.
///
/// Errors: the database's, or a query-builder error when `tentative_table` is not a plain
/// identifier.
pub fn delete_batch(conn: &mut PgConnection, config: &BarrierRetention) -> QueryResult<Deleted> {
    if !is_plain_identifier(config.tentative_table) {
        return Err(diesel::result::Error::QueryBuilderError(
            format!(
                "barrier retention: {:?} is not a plain table name",
                config.tentative_table
            )
            .into(),
        ));
    }
    // `doomed` is referenced three times, so Postgres materializes it once: both DELETEs act on
    // the same gids. The candidates come from the create_time index; a gid with any newer row,
    // or anything tentative, is skipped.
    let statement = format!(
        "WITH doomed AS ( \
             SELECT DISTINCT b.gid FROM dtm_barrier.barrier b \
             WHERE b.create_time < now() - make_interval(secs => $1) \
               AND NOT EXISTS (SELECT 1 FROM dtm_barrier.barrier n \
                               WHERE n.gid = b.gid \
                                 AND n.create_time >= now() - make_interval(secs => $1)) \
               AND NOT EXISTS (SELECT 1 FROM {table} t WHERE t.gid = b.gid AND t.state = $3) \
             LIMIT $2 \
         ), barrier_rows AS ( \
             DELETE FROM dtm_barrier.barrier WHERE gid IN (SELECT gid FROM doomed) RETURNING 1 \
         ), counters AS ( \
             DELETE FROM fault_counters WHERE gid IN (SELECT gid FROM doomed) RETURNING 1 \
         ) \
         SELECT (SELECT count(*) FROM doomed) AS gids, \
                (SELECT count(*) FROM barrier_rows) AS barrier_rows, \
                (SELECT count(*) FROM counters) AS fault_counters",
        table = config.tentative_table,
    );
    diesel::sql_query(statement)
        .bind::<BigInt, _>(retention_secs(config.retention))
        .bind::<BigInt, _>(i64::from(config.batch.max(1)))
        .bind::<Text, _>(ReservationState::Tentative)
        .get_result(conn)
}

/// One pass: [`delete_batch`] until a batch is less than full, each batch on its own pooled
/// connection so a long pass does not keep one checked out. Returns the totals.
pub async fn sweep(pool: &DbPool, config: BarrierRetention) -> Result<Deleted, BlockingError> {
    let mut total = Deleted::default();
    loop {
        let deleted = blocking(pool, move |conn| delete_batch(conn, &config)).await??;
        total += deleted;
        if deleted.gids < i64::from(config.batch.max(1)) {
            return Ok(total);
        }
    }
}

/// The RM's background job: a [`sweep`] at once and then every [`BarrierRetention::interval`],
/// until `shutdown` turns `true` (the server stopped). Does nothing when the retention is zero.
/// Errors are logged and retried at the next tick.
pub async fn run(
    service: &'static str,
    pool: DbPool,
    config: BarrierRetention,
    shutdown: watch::Receiver<bool>,
) {
    if !config.enabled() {
        log::info!("{service}: barrier retention disabled (BARRIER_RETENTION_SECONDS=0)");
        return;
    }
    log::info!(
        "{service}: deleting barrier rows of settled gids older than {} s, every {} ms, {} gids per batch",
        config.retention.as_secs(),
        config.interval().as_millis(),
        config.batch.max(1)
    );
    let pool = &pool;
    every(config.interval(), shutdown, move || async move {
        match sweep(pool, config).await {
            Ok(d) if d.gids > 0 => log::info!(
                "{service}: barrier retention deleted the rows of {} gids ({} barrier rows, {} fault counters)",
                d.gids,
                d.barrier_rows,
                d.fault_counters
            ),
            Ok(_) => log::debug!("{service}: barrier retention: nothing to delete"),
            Err(e) => log::error!("{service}: barrier retention pass failed: {e}"),
        }
    })
    .await;
    log::info!("{service}: barrier retention stopped");
}

/// Runs `pass` at once and then every `interval` until `shutdown` turns `true` (or its sender is
/// dropped). A pass in progress when shutdown comes is dropped at its next await point: each
/// database statement it issued commits or rolls back as a whole, so stopping is safe. Shared by
/// the RMs' barrier retention and the coordinator's transaction retention.
pub async fn every<F, Fut>(interval: Duration, mut shutdown: watch::Receiver<bool>, mut pass: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    loop {
        if *shutdown.borrow() {
            return;
        }
        tokio::select! {
            _ = pass() => {}
            _ = shutdown.changed() => return,
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Whole seconds of `retention` as SQL `bigint`, saturating.
fn retention_secs(retention: Duration) -> i64 {
    i64::try_from(retention.as_secs()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_identifiers_are_accepted_as_table_names() {
        for ok in ["holds", "reservations", "public.holds", "_t1"] {
            assert!(is_plain_identifier(ok), "{ok}");
        }
        for bad in [
            "",
            "1holds",
            "holds;drop",
            "a.b.c",
            "holds ",
            "\"holds\"",
            ".",
        ] {
            assert!(!is_plain_identifier(bad), "{bad}");
        }
    }

    #[test]
    fn the_job_runs_every_tenth_of_the_retention_within_bounds() {
        let at = |secs| BarrierRetention {
            tentative_table: "holds",
            retention: Duration::from_secs(secs),
            batch: 10,
        };
        assert_eq!(
            at(BarrierRetention::DEFAULT_RETENTION.as_secs()).interval(),
            Duration::from_secs(60)
        );
        assert_eq!(at(1).interval(), Duration::from_millis(100));
        assert_eq!(at(0).interval(), Duration::from_millis(100));
        assert_eq!(at(100).interval(), Duration::from_secs(10));
        assert!(!at(0).enabled());
    }
}
