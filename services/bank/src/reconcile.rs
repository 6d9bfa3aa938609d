//! The `reconcile` subcommand of the banks, `trans-out reconcile [--older-than SECONDS]
//! [--dry-run]` (and `trans-in reconcile ...`): releases the tentative holds that no global
//! transaction will ever settle, through the role's Cancel business code behind the
//! sub-transaction barrier ([`service_kit::reconcile`]).
//!
//! A released `out` hold unfreezes its funds (`trading_balance -= amount`); a released `in` hold
//! drops its pending credit. The bank's own settings are used: `DATABASE_URL` and `DTM_URL` (the
//! coordinator asked about each gid).

use service_kit::reconcile::{self, Cancel, ReconcileError, ReconcileOptions, ReconcileReport};

use crate::configuration::{Role, Settings};
use crate::error::BankError;
use crate::ledger;

/// The table of what the bank's Trys reserved.
const HOLDS: &str = "holds";

/// The role's Cancel business code: [`ledger::trans_out_cancel`] or [`ledger::trans_in_cancel`].
fn cancel(role: Role) -> Cancel<BankError> {
    match role {
        Role::TransOut => ledger::trans_out_cancel,
        Role::TransIn => ledger::trans_in_cancel,
    }
}

/// Reconciles the tentative holds of the bank `settings` describe (see the module docs), as the
/// subcommand does; the report of what was done with each.
pub async fn reconcile(
    settings: &Settings,
    options: ReconcileOptions,
) -> Result<ReconcileReport, ReconcileError> {
    reconcile::reconcile_with_settings(&settings.common, HOLDS, cancel(settings.role), options)
        .await
}

/// The subcommand: `args` are those after `reconcile`; prints JSON lines and returns the exit
/// status ([`service_kit::reconcile::command`]).
pub async fn command(settings: &Settings, args: &[String]) -> i32 {
    reconcile::command(&settings.common, HOLDS, cancel(settings.role), args).await
}
