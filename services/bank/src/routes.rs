//! The HTTP endpoints of a bank.
//!
//! * `POST /api/TransOutTry|TransOutConfirm|TransOutCancel` (trans-out) or
//!   `POST /api/TransInTry|TransInConfirm|TransInCancel` (trans-in), with the branch query
//!   `?gid=&trans_type=tcc&branch_id=&op=`; a Try's body is a [`crate::ledger::TransferRequest`],
//!   a Confirm's or Cancel's is not needed (only a `fault` is read from it, leniently). Answers
//!   200 SUCCESS, 409 FAILURE (business refusal), 425 ONGOING (injected), 4xx/5xx JSON errors.
//! * `GET /api/accounts/{id}`: an [`crate::ledger::AccountView`], 404 for an unknown account.
//!
//! * `GET /api/metrics` (registered by [`service_kit::startup::run`]): Prometheus text,
//!   `tcc_rm_branch_requests_total{op, outcome}` and the tentative holds gauges
//!   ([`service_kit::metrics`]).
//!
//! The request flow around the business code, metrics included, is [`service_kit::branch`]'s.

use actix_web::web;
use service_kit::branch;
use service_kit::http::view_route;

use crate::configuration::{Role, Settings};
use crate::error::BankError;
use crate::ledger::{self, TransferRequest};

/// The business code of one branch op (see [`crate::ledger`]).
type Business = branch::Business<TransferRequest>;

/// The path of the account view.
const ACCOUNT_VIEW: &str = "/api/accounts/{id}";

/// The role's three branch endpoints: (name, business code of the op it serves). The one table
/// both the routes ([`configure`]) and their OpenAPI description ([`openapi`]) are built from.
fn endpoints(role: Role) -> [(&'static str, Business); 3] {
    match role {
        Role::TransOut => [
            ("TransOutTry", Business::Try(ledger::trans_out_try)),
            (
                "TransOutConfirm",
                Business::Confirm(ledger::trans_out_confirm),
            ),
            ("TransOutCancel", Business::Cancel(ledger::trans_out_cancel)),
        ],
        Role::TransIn => [
            ("TransInTry", Business::Try(ledger::trans_in_try)),
            (
                "TransInConfirm",
                Business::Confirm(ledger::trans_in_confirm),
            ),
            ("TransInCancel", Business::Cancel(ledger::trans_in_cancel)),
        ],
    }
}

/// Registers the role's three branch endpoints and the account view.
pub fn configure(cfg: &mut web::ServiceConfig, settings: &Settings) {
    branch::configure(
        cfg,
        settings.common.fault_injection,
        endpoints(settings.role),
    );
    cfg.route(
        ACCOUNT_VIEW,
        view_route(ledger::account_view, BankError::AccountNotFound),
    );
    if settings.common.baseline_endpoints {
        crate::baseline::configure(cfg, settings);
    }
}

/// The OpenAPI description of [`configure`]'s routes for `role`.
pub fn openapi(role: Role) -> utoipa::openapi::OpenApi {
    let mut api = branch::openapi(&endpoints(role));
    api.merge(service_kit::openapi::view_openapi::<ledger::AccountView>(
        ACCOUNT_VIEW,
        "An account: balance, frozen funds (trading_balance) and tentative holds",
    ));
    api
}
