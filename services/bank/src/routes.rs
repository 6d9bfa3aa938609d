//! The HTTP endpoints of a bank.
//!
//! * `POST /api/TransOutTry|TransOutConfirm|TransOutCancel` (trans-out) or
//!   `POST /api/TransInTry|TransInConfirm|TransInCancel` (trans-in), with the branch query
//!   `?gid=&trans_type=tcc&branch_id=&op=`; a Try's body is a [`crate::ledger::TransferRequest`],
//!   a Confirm's or Cancel's is not needed (only a `fault` is read from it, leniently). Answers
//!   200 SUCCESS, 409 FAILURE (business refusal), 425 ONGOING (injected), 4xx/5xx JSON errors.
//!   The handlers are [`crate::handlers`]'; [`service_kit::branch::register`] wraps them in the
//!   caller check, the demo faults and the metrics.
//! * `GET /api/accounts/{id}`: an [`crate::ledger::AccountView`], 404 for an unknown account.
//! * `GET /api/branches/{gid}`: a [`crate::ledger::BankBranchesView`], the gid's holds and
//!   barrier rows ([`service_kit::gid_view`]).
//! * `GET /api/metrics` (registered by [`service_kit::startup::run`]): Prometheus text,
//!   `tcc_rm_branch_requests_total{op, outcome}` and the tentative holds gauges
//!   ([`service_kit::metrics`]).

use actix_web::web;
use service_kit::branch::{self, BranchEndpoint};
use service_kit::gid_view;
use service_kit::http::view_route;
use tcc::protocol::Op;

use crate::configuration::{Role, Settings};
use crate::error::BankError;
use crate::handlers;
use crate::ledger::{self, TransferRequest};

/// The path of the account view.
const ACCOUNT_VIEW: &str = "/api/accounts/{id}";

/// The role's three branch endpoints, Try, Confirm, Cancel: the one table both the routes
/// ([`configure`]) and their OpenAPI description ([`openapi`]) are built from.
fn endpoints(role: Role) -> [BranchEndpoint; 3] {
    let [try_, confirm, cancel] = match role {
        Role::TransOut => ["TransOutTry", "TransOutConfirm", "TransOutCancel"],
        Role::TransIn => ["TransInTry", "TransInConfirm", "TransInCancel"],
    };
    [
        BranchEndpoint {
            name: try_,
            op: Op::Try,
        },
        BranchEndpoint {
            name: confirm,
            op: Op::Confirm,
        },
        BranchEndpoint {
            name: cancel,
            op: Op::Cancel,
        },
    ]
}

/// Registers the role's three branch endpoints and the account view.
pub fn configure(cfg: &mut web::ServiceConfig, settings: &Settings) {
    let faults = settings.common.fault_injection;
    let [try_, confirm, cancel] = endpoints(settings.role);
    match settings.role {
        Role::TransOut => {
            branch::register(cfg, try_, faults, handlers::trans_out_try);
            branch::register(cfg, confirm, faults, handlers::trans_out_confirm);
            branch::register(cfg, cancel, faults, handlers::trans_out_cancel);
        }
        Role::TransIn => {
            branch::register(cfg, try_, faults, handlers::trans_in_try);
            branch::register(cfg, confirm, faults, handlers::trans_in_confirm);
            branch::register(cfg, cancel, faults, handlers::trans_in_cancel);
        }
    }
    cfg.route(
        ACCOUNT_VIEW,
        view_route(ledger::account_view, BankError::AccountNotFound),
    );
    cfg.route(gid_view::PATH, gid_view::route(ledger::branches_view));
    if settings.common.baseline_endpoints {
        crate::baseline::configure(cfg, settings);
    }
}

/// The OpenAPI description of [`configure`]'s routes for `role`.
pub fn openapi(role: Role) -> utoipa::openapi::OpenApi {
    let mut api = branch::openapi::<TransferRequest>(&endpoints(role));
    api.merge(service_kit::openapi::view_openapi::<ledger::AccountView>(
        ACCOUNT_VIEW,
        "An account: balance, frozen funds (trading_balance) and tentative holds",
    ));
    api.merge(gid_view::openapi::<ledger::BankBranchesView>(
        "One global transaction at this bank: its holds and barrier rows",
    ));
    api
}
