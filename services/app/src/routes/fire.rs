//! The fire endpoints, one handler per scenario (`docs/ARCHITECTURE.md#scenarios`), each written
//! as in DTM's samples: ask the TM for a gid, then run the business inside
//! [`TccClient::tcc_global_transaction`], where each [`Tcc::call_branch`] registers a branch's
//! Confirm and Cancel URLs with the TM and then calls its Try. The first Try that does not
//! succeed ends the closure with `Err`: the TM is asked to abort and cancels every registered
//! branch. Otherwise the TM is asked to submit and confirms them.
//!
//! Faults never shape this code: a fault parameter (`trans_in_try=failure`, ...) rides in the
//! data of its RM's branch as `"fault"`, where the RM reads it for Try, Confirm and Cancel.
//!
//! Before the gid is asked for, the parameters are checked (the [`Params`] extractor, against the
//! scenario's table) and a purchase's price is read, so a bad request never creates a global
//! transaction. Each answer is counted and logged by [`super::count_fire`], a
//! middleware around the handler.
//!
//! [`TccClient::tcc_global_transaction`]: tcc::client::TccClient::tcc_global_transaction

use actix_web::body::BoxBody;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, Responder};
use serde::{Deserialize, Serialize};
use service_kit::fault::{BranchFaults, Fault, FaultAction};
use service_kit::params::Params;
use tcc::client::{BranchError, GlobalOutcome, Tcc, TccError, TransOptions};
use tcc::protocol::GlobalStatus;

use crate::error::AppError;
use crate::prices;
use crate::scenario::{FireParams, Purchase, Scenario, Transfer};
use crate::state::AppState;

/// The exit status of the AP process after `crash_after_try`.
pub const CRASH_EXIT_CODE: i32 = 86;

/// What every fire handler is given and answers.
type Fired = Result<FireAnswer, AppError>;

/// `GET|POST /api/fireTcc`: TransOut debits `from` in bank A, TransIn credits `to` in bank B,
/// `amount` minor units; both Trys succeed, the TM confirms both.
pub async fn fire_tcc(
    Params(p): Params<FireParams<Transfer>>,
    state: web::Data<AppState>,
) -> Fired {
    let Transfer { amount, from, to } = p.business;
    let trans_out = TransferRequest::new(from, amount, p.faults.trans_out.clone());
    let trans_in = TransferRequest::new(to, amount, p.faults.trans_in.clone());
    let (gid, options) = new_global_transaction(Scenario::FireTcc, &state, &p).await?;
    let urls = state.urls.clone();
    let outcome = state
        .tcc
        .tcc_global_transaction(&gid, options, |tcc| async move {
            tcc.call_branch(
                &trans_out,
                &urls.trans_out("TransOutTry"),
                &urls.trans_out("TransOutConfirm"),
                &urls.trans_out("TransOutCancel"),
            )
            .await?;
            tcc.call_branch(
                &trans_in,
                &urls.trans_in("TransInTry"),
                &urls.trans_in("TransInConfirm"),
                &urls.trans_in("TransInCancel"),
            )
            .await?;
            crash_if(p.crash_after_try, &tcc);
            Ok(())
        })
        .await;
    answer(gid, outcome)
}

/// `GET|POST /api/fireTccRollback`: as `fireTcc`, but TransIn's branch data carries the fault
/// `{"try": "failure"}`, so its Try is refused and the TM cancels both branches (TransIn's
/// Cancel is an empty compensation). A `trans_in_try` parameter replaces that fault.
pub async fn fire_tcc_rollback(
    Params(p): Params<FireParams<Transfer>>,
    state: web::Data<AppState>,
) -> Fired {
    let Transfer { amount, from, to } = p.business;
    let mut trans_in_faults = p.faults.trans_in.clone().unwrap_or_default();
    let refused = Fault {
        delay_ms: 0,
        action: FaultAction::Failure,
    };
    trans_in_faults.try_.get_or_insert(refused);
    let trans_out = TransferRequest::new(from, amount, p.faults.trans_out.clone());
    let trans_in = TransferRequest::new(to, amount, Some(trans_in_faults));
    let (gid, options) = new_global_transaction(Scenario::FireTccRollback, &state, &p).await?;
    let urls = state.urls.clone();
    let outcome = state
        .tcc
        .tcc_global_transaction(&gid, options, |tcc| async move {
            tcc.call_branch(
                &trans_out,
                &urls.trans_out("TransOutTry"),
                &urls.trans_out("TransOutConfirm"),
                &urls.trans_out("TransOutCancel"),
            )
            .await?;
            tcc.call_branch(
                &trans_in,
                &urls.trans_in("TransInTry"),
                &urls.trans_in("TransInConfirm"),
                &urls.trans_in("TransInCancel"),
            )
            .await?;
            crash_if(p.crash_after_try, &tcc);
            Ok(())
        })
        .await;
    answer(gid, outcome)
}

/// `GET|POST /api/firePurchase`: Stock reserves `quantity` of `product_id`, TransOut debits
/// `buyer` and TransIn credits `merchant` `price * quantity` minor units, the price read from
/// the stock service first (so both banks move exactly the same amount).
pub async fn fire_purchase(
    Params(p): Params<FireParams<Purchase>>,
    state: web::Data<AppState>,
) -> Fired {
    let Purchase {
        product_id,
        quantity,
        buyer,
        merchant,
    } = p.business;
    let product_url = state.urls.stock(&format!("products/{product_id}"));
    let price = prices::price(&state.http, &product_url, product_id).await?;
    let amount = price
        .checked_mul(quantity)
        .ok_or(AppError::AmountOverflow { price, quantity })?;
    let fault = p.faults.stock.clone();
    let stock = ReserveRequest {
        product_id,
        quantity,
        fault,
    };
    let trans_out = TransferRequest::new(buyer, amount, p.faults.trans_out.clone());
    let trans_in = TransferRequest::new(merchant, amount, p.faults.trans_in.clone());
    let (gid, options) = new_global_transaction(Scenario::FirePurchase, &state, &p).await?;
    let urls = state.urls.clone();
    let outcome = state
        .tcc
        .tcc_global_transaction(&gid, options, |tcc| async move {
            tcc.call_branch(
                &stock,
                &urls.stock("StockTry"),
                &urls.stock("StockConfirm"),
                &urls.stock("StockCancel"),
            )
            .await?;
            tcc.call_branch(
                &trans_out,
                &urls.trans_out("TransOutTry"),
                &urls.trans_out("TransOutConfirm"),
                &urls.trans_out("TransOutCancel"),
            )
            .await?;
            tcc.call_branch(
                &trans_in,
                &urls.trans_in("TransInTry"),
                &urls.trans_in("TransInConfirm"),
                &urls.trans_in("TransInCancel"),
            )
            .await?;
            crash_if(p.crash_after_try, &tcc);
            Ok(())
        })
        .await;
    answer(gid, outcome)
}

/// `GET|POST /api/fireTccNested`: TransOut (branch `01`), then the AP's own nested branch
/// (`02`, [`super::nested`]), whose Try registers and tries the TransIn credit as child branch
/// `0201` of the same global transaction; TransIn's faults ride in the nested branch's data,
/// which it passes on to its child.
pub async fn fire_tcc_nested(
    Params(p): Params<FireParams<Transfer>>,
    state: web::Data<AppState>,
) -> Fired {
    let Transfer { amount, from, to } = p.business;
    let trans_out = TransferRequest::new(from, amount, p.faults.trans_out.clone());
    let trans_in = TransferRequest::new(to, amount, p.faults.trans_in.clone());
    let (gid, options) = new_global_transaction(Scenario::FireTccNested, &state, &p).await?;
    let urls = state.urls.clone();
    let outcome = state
        .tcc
        .tcc_global_transaction(&gid, options, |tcc| async move {
            tcc.call_branch(
                &trans_out,
                &urls.trans_out("TransOutTry"),
                &urls.trans_out("TransOutConfirm"),
                &urls.trans_out("TransOutCancel"),
            )
            .await?;
            tcc.call_branch(
                &trans_in,
                &urls.app("TransInNestedTry"),
                &urls.app("TransInNestedConfirm"),
                &urls.app("TransInNestedCancel"),
            )
            .await?;
            crash_if(p.crash_after_try, &tcc);
            Ok(())
        })
        .await;
    answer(gid, outcome)
}

/// The data of a bank branch, as bank A and bank B read it: `{"account_id", "amount",
/// "fault"?}`, amount in minor units. Also the body of the AP's nested branch, which passes it
/// on to its TransIn child.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferRequest {
    /// The account debited (TransOut) or credited (TransIn), > 0.
    #[schema(minimum = 1)]
    pub account_id: i64,
    /// Minor units, > 0.
    #[schema(minimum = 1)]
    pub amount: i64,
    /// Demo fault injection (`service_kit::fault`); needs `FAULT_INJECTION=on`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<BranchFaults>,
}

impl TransferRequest {
    /// `amount` minor units on `account_id`, with `fault` if any.
    pub fn new(account_id: i64, amount: i64, fault: Option<BranchFaults>) -> Self {
        TransferRequest {
            account_id,
            amount,
            fault,
        }
    }
}

/// The data of a stock branch: `{"product_id", "quantity", "fault"?}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReserveRequest {
    /// The product reserved.
    pub product_id: i64,
    /// Units reserved.
    pub quantity: i64,
    /// Demo fault injection (`service_kit::fault`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault: Option<BranchFaults>,
}

/// A gid from the TM (`newGid`, behind `gid_prefix` when given), and the global transaction's
/// options from the parameters.
async fn new_global_transaction<B>(
    scenario: Scenario,
    state: &AppState,
    p: &FireParams<B>,
) -> Result<(String, TransOptions), AppError> {
    let gid = (state.tcc.new_gid().await)
        .map_err(|source| AppError::Coordinator { gid: None, source })?;
    let gid = match &p.gid_prefix {
        Some(prefix) => format!("{prefix}-{gid}"),
        None => gid,
    };
    let scenario = scenario.name();
    log::info!("gid={gid} branch_id=- op=- scenario={scenario} starting");
    Ok((gid, p.trans_options()))
}

/// With `crash_after_try`, the AP dies between its Trys and submit: the TM must abort the
/// transaction once `timeout_to_fail` has passed, and cancel what the Trys reserved.
fn crash_if(crash_after_try: bool, tcc: &Tcc) {
    if crash_after_try {
        let gid = tcc.gid();
        log::error!("gid={gid} branch_id=- op=- crash_after_try: the AP exits now, before submit");
        std::process::exit(CRASH_EXIT_CODE);
    }
}

/// The answer for how global transaction `gid` ended.
fn answer(gid: String, outcome: Result<GlobalOutcome<(), BranchError>, TccError>) -> Fired {
    let outcome = outcome.map_err(|source| AppError::Coordinator {
        gid: Some(gid),
        source,
    })?;
    let reason = outcome.result.err().map(|e| e.to_string());
    let (gid, status) = (outcome.gid, outcome.status);
    Ok(FireAnswer {
        gid,
        status,
        reason,
    })
}

/// How a fire request that ran a global transaction ended: `200 {"gid", "status": "succeed"}`
/// when every Try succeeded and it was submitted; `409 {"gid", "status": "failed", "reason":
/// "branch 02 Try refused: ..."}` when a Try did not and it was aborted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FireAnswer {
    /// The global transaction id.
    pub gid: String,
    /// The status the coordinator reported after `submit` (with this project's coordinator and
    /// `wait_result`, final; a DTM server answers without it, read as `submitted`) or `abort`
    /// (`failed`, or `aborting`).
    pub status: GlobalStatus,
    /// Rolled back only: the failed branch's error, also the rollback reason the coordinator
    /// recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Responder for FireAnswer {
    type Body = BoxBody;

    /// `200` or `409` with the answer as JSON; the answer also rides in the response's
    /// extensions, where [`super::count_fire`] reads it.
    fn respond_to(self, _req: &HttpRequest) -> HttpResponse {
        let status = match self.reason {
            None => StatusCode::OK,
            Some(_) => StatusCode::CONFLICT,
        };
        let mut response = HttpResponse::build(status).json(&self);
        response.extensions_mut().insert(self);
        response
    }
}
