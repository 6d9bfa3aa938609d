//! The background worker: every `cron_interval` it claims due transactions (second-phase
//! retries, timed-out `prepared` ones, and whatever a dead replica left) and starts a pass of
//! each ([`Engine::run_due`]). This is what makes the second phase durable: it needs nothing but
//! the database.
//!
//! The worker never waits for the passes it started: each runs in its own task, up to
//! `MAX_PASSES_IN_FLIGHT` at once, so an RM that holds a call open delays only its own
//! transaction, never another's retry or the timeout-abort of a crashed AP's transaction.

use std::time::Duration;

use tokio::sync::watch;

use crate::engine::Engine;

/// Runs until `shutdown` turns `true`, then waits for the passes in flight to end. A claim that
/// found work is followed at once by another; a database error, or every pass slot busy, waits
/// for the next tick.
pub async fn run(engine: Engine, cron_interval: Duration, mut shutdown: watch::Receiver<bool>) {
    log::info!(
        "worker {} polling every {} ms",
        engine.coordinator_id(),
        cron_interval.as_millis()
    );
    loop {
        let claimed = match engine.run_due().await {
            Ok(n) => n,
            Err(e) => {
                log::error!("worker pass failed: {e}");
                0
            }
        };
        if claimed > 0 {
            // More may be due; look again without waiting a whole tick.
            if *shutdown.borrow() {
                break;
            }
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(cron_interval) => {}
            _ = shutdown.changed() => break,
        }
        if *shutdown.borrow() {
            break;
        }
    }
    engine.passes_ended().await;
    log::info!("worker {} stopped", engine.coordinator_id());
}
