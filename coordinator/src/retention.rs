//! Retention: finished transactions are kept for `RETENTION_SECONDS` after their `finish_time`,
//! then deleted in batches with their branch ops by this background job (docs/ARCHITECTURE.md#data-model-and-invariants; DTM never
//! cleans up, so its tables only grow).
//!
//! * Only `succeed` and `failed` transactions are deleted. A `prepared`, `submitted` or `aborting`
//!   one is never deleted, whatever its age: it is still work for the worker (a second phase to
//!   finish, or a `prepared` one to time out), and deleting it would lose the Confirms or Cancels
//!   the RMs are owed.
//! * A pass deletes batches of at most `RETENTION_BATCH` transactions
//!   ([`crate::store::delete_finished_before`]), oldest first, until a batch comes back less than
//!   full; each batch is one short statement on its own pooled connection, so the API and the
//!   worker are never blocked behind one huge `DELETE`.
//! * The job runs at start and then every [`interval`]: ten worker ticks (`CRON_INTERVAL_MS * 10`,
//!   10 s by default, 500 ms with the tests' 50 ms tick). Replicas may all run it: rows one
//!   replica is deleting are skipped by the others (`SKIP LOCKED`).
//! * `RETENTION_SECONDS=0` disables it.
//! * Each deleted transaction leaves a tombstone (its gid and finish time), so that `prepare`
//!   refuses the gid again: an RM may still hold the gid's barrier rows, and a new transaction
//!   under it would see its Try and Confirm skipped as duplicates, a `succeed` that moved nothing
//!   (DTM never deletes, so it refuses a used gid forever). The same job deletes tombstones
//!   `GID_TOMBSTONE_SECONDS` after their transaction finished (default 30 days; 0 keeps them
//!   forever): that must exceed the RMs' `BARRIER_RETENTION_SECONDS` (7 days by default).
//!
//! The RMs clean their sub-transaction barrier rows with a job of their own
//! ([`service_kit::retention`]), with a retention of their own (`BARRIER_RETENTION_SECONDS`).

use std::time::Duration;

use service_kit::db::{blocking, BlockingError, DbPool};
use tokio::sync::watch;

use crate::store;

/// How often the job runs for a worker tick of `cron_interval`: ten ticks.
pub fn interval(cron_interval: Duration) -> Duration {
    cron_interval
        .saturating_mul(10)
        .max(Duration::from_millis(10))
}

/// One pass: deletes batches of at most `batch` finished transactions older than `retention`
/// (leaving their tombstones) until a batch is less than full. Returns how many transactions
/// were deleted.
pub async fn sweep(pool: &DbPool, retention: Duration, batch: u32) -> Result<u64, BlockingError> {
    in_batches(pool, retention, batch, store::delete_finished_before).await
}

/// One pass over the gid tombstones: deletes, in batches of at most `batch`, those whose
/// transaction finished more than `keep` ago. Returns how many were deleted.
pub async fn sweep_tombstones(
    pool: &DbPool,
    keep: Duration,
    batch: u32,
) -> Result<u64, BlockingError> {
    in_batches(pool, keep, batch, store::delete_tombstones_before).await
}

/// Runs `delete(conn, age in seconds, batch)` until it deletes less than a full batch; returns
/// the total deleted.
async fn in_batches(
    pool: &DbPool,
    age: Duration,
    batch: u32,
    delete: fn(&mut diesel::PgConnection, i64, i64) -> diesel::QueryResult<usize>,
) -> Result<u64, BlockingError> {
    let secs = i64::try_from(age.as_secs()).unwrap_or(i64::MAX);
    let limit = batch.max(1) as usize;
    let mut total = 0u64;
    loop {
        let deleted = blocking(pool, move |conn| delete(conn, secs, limit as i64)).await??;
        total += deleted as u64;
        if deleted < limit {
            return Ok(total);
        }
    }
}

/// Runs [`sweep`] and [`sweep_tombstones`] at once and then every `interval` until `shutdown`
/// turns `true` (the server stopped). Does nothing when `retention` is zero; keeps tombstones
/// forever when `tombstones` is zero. Errors are logged and retried next time.
pub async fn run(
    pool: DbPool,
    retention: Duration,
    tombstones: Duration,
    batch: u32,
    interval: Duration,
    shutdown: watch::Receiver<bool>,
) {
    if retention.is_zero() {
        log::info!("retention disabled (RETENTION_SECONDS=0): finished transactions are kept");
        return;
    }
    log::info!(
        "retention: deleting finished transactions older than {} s, every {} ms, {} per batch",
        retention.as_secs(),
        interval.as_millis(),
        batch.max(1)
    );
    let pool = &pool;
    service_kit::retention::every(interval, shutdown, move || async move {
        match sweep(pool, retention, batch).await {
            Ok(0) => log::debug!("retention: nothing to delete"),
            Ok(n) => log::info!(
                "retention deleted {n} finished transactions older than {} s, with their branch ops",
                retention.as_secs()
            ),
            Err(e) => log::error!("retention pass failed: {e}"),
        }
        if tombstones.is_zero() {
            return;
        }
        match sweep_tombstones(pool, tombstones, batch).await {
            Ok(0) => {}
            Ok(n) => log::info!(
                "retention deleted {n} gid tombstones of transactions finished more than {} s ago",
                tombstones.as_secs()
            ),
            Err(e) => log::error!("retention pass over the gid tombstones failed: {e}"),
        }
    })
    .await;
    log::info!("retention stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_job_runs_every_ten_worker_ticks() {
        assert_eq!(
            interval(Duration::from_millis(1000)),
            Duration::from_secs(10)
        );
        assert_eq!(
            interval(Duration::from_millis(50)),
            Duration::from_millis(500)
        );
    }
}
