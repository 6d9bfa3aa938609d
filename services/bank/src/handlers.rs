//! The bank's branch endpoints, one handler per op and role. Each extracts its op-bound branch
//! query ([`TryBranch`], [`ConfirmBranch`], [`CancelBranch`]: a query naming another op is a
//! `400 op_mismatch`) and, for a Try, its body; then runs the business code of [`crate::ledger`]
//! inside the sub-transaction barrier ([`BranchBarrier::call`]), on a pooled connection off the
//! async workers. Whatever the barrier decides (applied, empty compensation, duplicate, hanging)
//! answers `200 SUCCESS`; a [`BankError`] answers for itself (a business refusal `409 FAILURE`).
//!
//! Who may call, the demo faults and the metrics are middlewares around the handlers
//! ([`service_kit::branch::register`], in [`crate::routes`]).

use actix_web::web;
use service_kit::db::{blocking, DbPool};
use service_kit::http::JsonObject;
use tcc::actix::{BranchResult, CancelBranch, ConfirmBranch, TryBranch};
use tcc::barrier::BranchBarrier;

use crate::error::BankError;
use crate::ledger::{self, TransferRequest};

/// `POST /api/TransOutTry`: freezes the amount ([`ledger::trans_out_try`]).
pub async fn trans_out_try(
    branch: TryBranch,
    body: JsonObject<TransferRequest>,
    pool: web::Data<DbPool>,
) -> BranchResult<BankError> {
    let transfer = body.0;
    transfer.validate()?;
    blocking(&pool, move |conn| {
        BranchBarrier::new(&branch.query).call(conn, |conn| {
            ledger::trans_out_try(conn, &branch.query, &transfer)
        })
    })
    .await?
}

/// `POST /api/TransOutConfirm`: the frozen funds leave ([`ledger::trans_out_confirm`]).
pub async fn trans_out_confirm(
    branch: ConfirmBranch,
    pool: web::Data<DbPool>,
) -> BranchResult<BankError> {
    blocking(&pool, move |conn| {
        BranchBarrier::new(&branch.query)
            .call(conn, |conn| ledger::trans_out_confirm(conn, &branch.query))
    })
    .await?
}

/// `POST /api/TransOutCancel`: the funds are unfrozen ([`ledger::trans_out_cancel`]).
pub async fn trans_out_cancel(
    branch: CancelBranch,
    pool: web::Data<DbPool>,
) -> BranchResult<BankError> {
    blocking(&pool, move |conn| {
        BranchBarrier::new(&branch.query)
            .call(conn, |conn| ledger::trans_out_cancel(conn, &branch.query))
    })
    .await?
}

/// `POST /api/TransInTry`: places the pending credit ([`ledger::trans_in_try`]).
pub async fn trans_in_try(
    branch: TryBranch,
    body: JsonObject<TransferRequest>,
    pool: web::Data<DbPool>,
) -> BranchResult<BankError> {
    let transfer = body.0;
    transfer.validate()?;
    blocking(&pool, move |conn| {
        BranchBarrier::new(&branch.query).call(conn, |conn| {
            ledger::trans_in_try(conn, &branch.query, &transfer)
        })
    })
    .await?
}

/// `POST /api/TransInConfirm`: the pending credit lands ([`ledger::trans_in_confirm`]).
pub async fn trans_in_confirm(
    branch: ConfirmBranch,
    pool: web::Data<DbPool>,
) -> BranchResult<BankError> {
    blocking(&pool, move |conn| {
        BranchBarrier::new(&branch.query)
            .call(conn, |conn| ledger::trans_in_confirm(conn, &branch.query))
    })
    .await?
}

/// `POST /api/TransInCancel`: the pending credit is dropped ([`ledger::trans_in_cancel`]).
pub async fn trans_in_cancel(
    branch: CancelBranch,
    pool: web::Data<DbPool>,
) -> BranchResult<BankError> {
    blocking(&pool, move |conn| {
        BranchBarrier::new(&branch.query)
            .call(conn, |conn| ledger::trans_in_cancel(conn, &branch.query))
    })
    .await?
}
