//! The HTTP endpoints of the stock service.
//!
//! * `POST /api/StockTry|StockConfirm|StockCancel` with the branch query
//!   `?gid=&trans_type=tcc&branch_id=&op=`; a Try's body is a
//!   [`crate::inventory::ReserveRequest`], a Confirm's or Cancel's is not needed (only a `fault`
//!   is read from it, leniently). Answers 200 SUCCESS, 409 FAILURE (business refusal), 425
//!   ONGOING (injected), 4xx/5xx JSON errors.
//! * `GET /api/products/{id}`: a [`crate::inventory::ProductView`], 404 for an unknown product.
//!
//! * `GET /api/metrics` (registered by [`service_kit::startup::run`]): Prometheus text,
//!   `tcc_rm_branch_requests_total{op, outcome}` and the tentative reservations gauges
//!   ([`service_kit::metrics`]).
//!
//! The request flow around the business code, metrics included, is [`service_kit::branch`]'s.

use actix_web::web;
use service_kit::branch::{self, Business};
use service_kit::http::view_route;

use crate::configuration::Settings;
use crate::error::StockError;
use crate::inventory;

/// The path of the product view.
const PRODUCT_VIEW: &str = "/api/products/{id}";

/// The three branch endpoints: (name, business code of the op it serves). The one table both
/// the routes ([`configure`]) and their OpenAPI description ([`openapi`]) are built from.
const ENDPOINTS: [(&str, Business<inventory::ReserveRequest>); 3] = [
    ("StockTry", Business::Try(inventory::stock_try)),
    ("StockConfirm", Business::Confirm(inventory::stock_confirm)),
    ("StockCancel", Business::Cancel(inventory::stock_cancel)),
];

/// Registers the three branch endpoints and the product view.
pub fn configure(cfg: &mut web::ServiceConfig, settings: &Settings) {
    branch::configure(cfg, settings.common.fault_injection, ENDPOINTS);
    cfg.route(
        PRODUCT_VIEW,
        view_route(inventory::product_view, StockError::ProductNotFound),
    );
}

/// The OpenAPI description of [`configure`]'s routes.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut api = branch::openapi(&ENDPOINTS);
    api.merge(
        service_kit::openapi::view_openapi::<inventory::ProductView>(
            PRODUCT_VIEW,
            "A product: stock on hand, reserved units and price (minor units)",
        ),
    );
    api
}
