//! The background worker: every `cron_interval` it claims due transactions (second-phase
//! retries, timed-out `prepared` ones, and whatever a dead replica left) and runs them. This is
//! what makes the second phase durable: it needs nothing but the database.

use std::time::Duration;

use tokio::sync::watch;

use crate::engine::Engine;

/// Runs until `shutdown` turns `true`. A pass that claimed work is followed at once by another; a
/// database error waits for the next tick.
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
    log::info!("worker {} stopped", engine.coordinator_id());
}
