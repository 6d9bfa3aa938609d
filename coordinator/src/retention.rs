//! Retention: finished transactions are kept for `RETENTION_SECONDS` after their `finish_time`,
//! then deleted in batches with their branch ops by this background job (design §5; DTM never
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
/// until a batch is less than full. Returns how many transactions were deleted.
pub async fn sweep(pool: &DbPool, retention: Duration, batch: u32) -> Result<u64, BlockingError> {
    let secs = i64::try_from(retention.as_secs()).unwrap_or(i64::MAX);
    let limit = batch.max(1) as usize;
    let mut total = 0u64;
    loop {
        let deleted = blocking(pool, move |conn| {
            store::delete_finished_before(conn, secs, limit as i64)
        })
        .await??;
        total += deleted as u64;
        if deleted < limit {
            return Ok(total);
        }
    }
}

/// Runs [`sweep`] at once and then every `interval` until `shutdown` turns `true` (the server
/// stopped). Does nothing when `retention` is zero. Errors are logged and retried next time.
pub async fn run(
    pool: DbPool,
    retention: Duration,
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
