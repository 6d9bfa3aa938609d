//! The `reconcile` subcommand of the stock service, `stock reconcile [--older-than SECONDS]
//! [--dry-run]`: releases the tentative reservations that no global transaction will ever
//! settle, through [`inventory::stock_cancel`] behind the sub-transaction barrier
//! ([`service_kit::reconcile`]): the reserved units become available again. The service's own
//! settings are used: `DATABASE_URL` and `DTM_URL` (the coordinator asked about each gid).

use service_kit::reconcile::{self, ReconcileError, ReconcileOptions, ReconcileReport};

use crate::configuration::Settings;
use crate::inventory;

/// The table of what the stock service's Trys reserved.
const RESERVATIONS: &str = "reservations";

/// Reconciles the tentative reservations of the stock service `settings` describe (see the
/// module docs), as the subcommand does; the report of what was done with each.
pub async fn reconcile(
    settings: &Settings,
    options: ReconcileOptions,
) -> Result<ReconcileReport, ReconcileError> {
    reconcile::reconcile_with_settings(
        &settings.common,
        RESERVATIONS,
        inventory::stock_cancel,
        options,
    )
    .await
}

/// The subcommand: `args` are those after `reconcile`; prints JSON lines and returns the exit
/// status ([`service_kit::reconcile::command`]).
pub async fn command(settings: &Settings, args: &[String]) -> i32 {
    reconcile::command(
        &settings.common,
        RESERVATIONS,
        inventory::stock_cancel,
        args,
    )
    .await
}
