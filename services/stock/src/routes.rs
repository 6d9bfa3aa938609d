//! The HTTP endpoints of the stock service.
//!
//! * `POST /api/StockTry|StockConfirm|StockCancel` with the branch query
//!   `?gid=&trans_type=tcc&branch_id=&op=`; a Try's body is a
//!   [`crate::inventory::ReserveRequest`], a Confirm's or Cancel's is not needed (only a `fault`
//!   is read from it, leniently). Answers 200 SUCCESS, 409 FAILURE (business refusal), 425
//!   ONGOING (injected), 4xx/5xx JSON errors. The handlers are [`crate::handlers`]';
//!   [`service_kit::branch::register`] wraps them in the caller check, the demo faults and the
//!   metrics.
//! * `GET /api/products/{id}`: a [`crate::inventory::ProductView`], 404 for an unknown product.
//! * `GET /api/branches/{gid}`: a [`crate::inventory::StockBranchesView`], the gid's
//!   reservations and barrier rows ([`service_kit::gid_view`]).
//! * `GET /api/metrics` (registered by [`service_kit::startup::run`]): Prometheus text,
//!   `tcc_rm_branch_requests_total{op, outcome}` and the tentative reservations gauges
//!   ([`service_kit::metrics`]).

use actix_web::web;
use service_kit::branch::{self, BranchEndpoint};
use service_kit::gid_view;
use service_kit::http::view_route;
use tcc::protocol::Op;

use crate::configuration::Settings;
use crate::error::StockError;
use crate::handlers;
use crate::inventory::{self, ReserveRequest};

/// The path of the product view.
const PRODUCT_VIEW: &str = "/api/products/{id}";

/// The three branch endpoints, Try, Confirm, Cancel: the one table both the routes
/// ([`configure`]) and their OpenAPI description ([`openapi`]) are built from.
const ENDPOINTS: [BranchEndpoint; 3] = [
    BranchEndpoint {
        name: "StockTry",
        op: Op::Try,
    },
    BranchEndpoint {
        name: "StockConfirm",
        op: Op::Confirm,
    },
    BranchEndpoint {
        name: "StockCancel",
        op: Op::Cancel,
    },
];

/// Registers the three branch endpoints and the product view.
pub fn configure(cfg: &mut web::ServiceConfig, settings: &Settings) {
    let faults = settings.common.fault_injection;
    let [try_, confirm, cancel] = ENDPOINTS;
    branch::register(cfg, try_, faults, handlers::stock_try);
    branch::register(cfg, confirm, faults, handlers::stock_confirm);
    branch::register(cfg, cancel, faults, handlers::stock_cancel);
    cfg.route(
        PRODUCT_VIEW,
        view_route(inventory::product_view, StockError::ProductNotFound),
    );
    cfg.route(gid_view::PATH, gid_view::route(inventory::branches_view));
}

/// The OpenAPI description of [`configure`]'s routes.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut api = branch::openapi::<ReserveRequest>(&ENDPOINTS);
    api.merge(
        service_kit::openapi::view_openapi::<inventory::ProductView>(
            PRODUCT_VIEW,
            "A product: stock on hand, reserved units and price (minor units)",
        ),
    );
    api.merge(gid_view::openapi::<inventory::StockBranchesView>(
        "One global transaction at the stock service: its reservations and barrier rows",
    ));
    api
}
