//! The stock service's branch endpoints, one handler per op. Each extracts its op-bound branch
//! query ([`TryBranch`], [`ConfirmBranch`], [`CancelBranch`]: a query naming another op is a
//! `400 op_mismatch`) and, for a Try, its body; then runs the business code of
//! [`crate::inventory`] inside the sub-transaction barrier ([`BranchBarrier::call`]), on a pooled
//! connection off the async workers. Whatever the barrier decides (applied, empty compensation,
//! duplicate, hanging) answers `200 SUCCESS`; a [`StockError`] answers for itself (a business
//! refusal `409 FAILURE`).
//!
//! Who may call, the demo faults and the metrics are middlewares around the handlers
//! ([`service_kit::branch::register`], in [`crate::routes`]).

use actix_web::web;
use service_kit::db::{blocking, DbPool};
use service_kit::http::JsonObject;
use tcc::actix::{BranchResult, CancelBranch, ConfirmBranch, TryBranch};
use tcc::barrier::BranchBarrier;

use crate::error::StockError;
use crate::inventory::{self, ReserveRequest};

/// `POST /api/StockTry`: reserves the units ([`inventory::stock_try`]).
pub async fn stock_try(
    branch: TryBranch,
    body: JsonObject<ReserveRequest>,
    pool: web::Data<DbPool>,
) -> BranchResult<StockError> {
    let reserve = body.0;
    reserve.validate()?;
    blocking(&pool, move |conn| {
        BranchBarrier::new(&branch.query).call(conn, |conn| {
            inventory::stock_try(conn, &branch.query, &reserve)
        })
    })
    .await?
}

/// `POST /api/StockConfirm`: the reserved units leave ([`inventory::stock_confirm`]).
pub async fn stock_confirm(
    branch: ConfirmBranch,
    pool: web::Data<DbPool>,
) -> BranchResult<StockError> {
    blocking(&pool, move |conn| {
        BranchBarrier::new(&branch.query)
            .call(conn, |conn| inventory::stock_confirm(conn, &branch.query))
    })
    .await?
}

/// `POST /api/StockCancel`: the units are released ([`inventory::stock_cancel`]).
pub async fn stock_cancel(
    branch: CancelBranch,
    pool: web::Data<DbPool>,
) -> BranchResult<StockError> {
    blocking(&pool, move |conn| {
        BranchBarrier::new(&branch.query)
            .call(conn, |conn| inventory::stock_cancel(conn, &branch.query))
    })
    .await?
}
