//! The AP's own nested branch, for `fireTccNested` (DTM's `TccFromQuery`;
//! `docs/ARCHITECTURE.md#scenarios`): `POST /api/TransInNestedTry|Confirm|Cancel`.
//!
//! The outer AP registers this branch (say `02`) and calls its Try like any RM's. The Try is
//! itself an AP of the *same* global transaction: it rebuilds the transaction's handle from its
//! query ([`tcc::client::TccClient::tcc_from_query`]) and calls TransIn as child branch `0201`
//! with its own body, faults included. It never prepares, submits or aborts: the outer AP does,
//! and the TM then confirms or cancels every branch, the last registered first.
//!
//! No sub-transaction barrier and no database here: the parent reserves nothing itself. The TM
//! calls the child's Confirm and Cancel at TransIn, whose barrier handles empty compensation,
//! hanging and duplicates; so the parent's Confirm and Cancel have nothing to do and succeed.
//! A parent Try arriving after the abort cannot add a child: the TM registers branches only
//! while the transaction is `prepared`.
//!
//! With `BRANCH_SIGNING_SECRET` set, the Try requires the gid's token (`X-Tcc-Gid-Token`, sent
//! by the outer AP): otherwise anyone who knows a prepared gid could have a child branch of
//! their choosing registered and tried under a freshly minted token.

use actix_web::{web, HttpRequest};
use service_kit::params::ParamsError;
use tcc::actix::{CancelBranch, ConfirmBranch, TryBranch};
use tcc::client::{BranchError, TccError};
use tcc::protocol::{BranchQuery, BranchReply, Op};
use tcc::signing::{verify_gid_token, SigningSecret, GID_TOKEN_HEADER};

use super::fire::TransferRequest;
use crate::error::AppError;
use crate::state::AppState;

/// The three endpoints (names under `/api/`) and their ops: the table the routes
/// ([`crate::routes::configure`]) and their description ([`crate::openapi`]) are both built from.
pub const ENDPOINTS: [(&str, Op); 3] = [
    ("TransInNestedTry", Op::Try),
    ("TransInNestedConfirm", Op::Confirm),
    ("TransInNestedCancel", Op::Cancel),
];

/// `account_id` and `amount` must be > 0, and a `fault` needs fault injection on: a malformed
/// body is the caller's 400, not a failed child Try.
fn check_body(body: &TransferRequest, fault_injection: bool) -> Result<(), AppError> {
    for (name, value) in [("account_id", body.account_id), ("amount", body.amount)] {
        if value <= 0 {
            let message = format!("{name} must be a whole number greater than 0, got {value}");
            return Err(ParamsError::InvalidBody(message).into());
        }
    }
    if body.fault.is_some() && !fault_injection {
        let parameter = "fault".into();
        return Err(ParamsError::FaultInjectionDisabled { parameter }.into());
    }
    Ok(())
}

/// `POST /api/TransInNestedTry?gid=&trans_type=tcc&branch_id=&op=try[&dtm=]`, body: a TransIn
/// transfer `{"account_id", "amount", "fault"?}`, passed through to the child.
///
/// Answers as the child's Try did: `200 SUCCESS`, `409 FAILURE` or `425 ONGOING`; a coordinator
/// refusing the child's registration (unknown or finished gid) is also `409 FAILURE`. A
/// transient failure of the child's Try is `500 child_branch_error`, a coordinator failing the
/// registration `502`/`503`: the outer AP reads both as a failed Try and aborts. Refused before
/// anything is registered: a query that is not a Try (`400 op_mismatch`), a `dtm` other than this
/// AP's own coordinator (`400 bad_branch_query`: the AP never POSTs to a coordinator it was not
/// configured with), a missing or wrong gid token (`401 missing_gid_token` / `bad_gid_token`).
pub async fn trans_in_nested_try(
    request: HttpRequest,
    branch: TryBranch,
    body: service_kit::http::JsonObject<TransferRequest>,
    state: web::Data<AppState>,
) -> Result<BranchReply, AppError> {
    let query = branch.query;
    check_body(&body.0, state.settings.fault_injection)?;
    if let Some(dtm) = query.dtm.as_deref().filter(|d| !d.is_empty()) {
        if dtm.trim_end_matches('/') != state.tcc.dtm_url().trim_end_matches('/') {
            return Err(AppError::BadBranchQuery(
                "dtm must be this AP's coordinator (DTM_URL)".into(),
            ));
        }
    }
    let (gid, parent) = (query.gid.as_str(), query.branch_id.as_str());
    let tcc = state
        .tcc
        .tcc_from_query(&query)
        .map_err(|e| AppError::BadBranchQuery(e.to_string()))?;
    // Before anything is registered: the checks above only read the request.
    let secret = state.settings.branch_signing_secret.as_ref();
    check_gid_token(&request, &query, secret).inspect_err(|e| {
        log::warn!("gid={gid} branch_id={parent} op=try nested Try refused: {e}")
    })?;
    let urls = &state.urls;
    log::info!("gid={gid} branch_id={parent} op=try nested: TransIn as a child branch");
    let child = tcc
        .call_branch(
            &body.0,
            &urls.trans_in("TransInTry"),
            &urls.trans_in("TransInConfirm"),
            &urls.trans_in("TransInCancel"),
        )
        .await;
    if let Err(e) = &child {
        log::warn!("gid={gid} branch_id={parent} op=try child did not succeed: {e}");
    }
    match child {
        Ok(reply) => {
            let child = reply.branch_id;
            log::info!("gid={gid} branch_id={parent} op=try child branch_id={child} succeeded");
            Ok(BranchReply::Success)
        }
        Err(e @ BranchError::Failure { .. }) => Ok(BranchReply::Failure(e.to_string())),
        Err(BranchError::Ongoing { .. }) => Ok(BranchReply::Ongoing),
        Err(BranchError::Transient { branch_id, .. }) => Err(AppError::ChildBranch {
            gid: gid.to_owned(),
            branch_id,
        }),
        // The parent id is too long to nest under, or the transaction already has 99 children.
        Err(BranchError::Register(TccError::Protocol(e))) => Err(AppError::BadBranchQuery(e.0)),
        // No such transaction, or it is no longer prepared: the Try cannot happen.
        Err(BranchError::Register(TccError::Refused {
            status: 409,
            message,
            ..
        })) => Ok(BranchReply::Failure(format!(
            "the coordinator refused the child branch: {message}"
        ))),
        Err(BranchError::Register(source)) => Err(AppError::Coordinator {
            gid: Some(gid.to_owned()),
            source,
        }),
    }
}

/// `POST /api/TransInNestedConfirm?...&op=confirm`: `200 SUCCESS`, nothing to do (see the
/// module docs: the child's Confirm is the TM's call to TransIn).
pub async fn trans_in_nested_confirm(branch: ConfirmBranch) -> BranchReply {
    nothing_to_do(&branch.query)
}

/// `POST /api/TransInNestedCancel?...&op=cancel`: `200 SUCCESS`, nothing to do (the child's
/// Cancel is the TM's call to TransIn, an empty compensation there if its Try failed).
pub async fn trans_in_nested_cancel(branch: CancelBranch) -> BranchReply {
    nothing_to_do(&branch.query)
}

fn nothing_to_do(query: &BranchQuery) -> BranchReply {
    let (gid, branch_id, op) = (&query.gid, &query.branch_id, query.op);
    log::info!("gid={gid} branch_id={branch_id} op={op} nested parent: nothing to do");
    BranchReply::Success
}

/// With a secret, the request's `X-Tcc-Gid-Token` must be the query's gid's token.
fn check_gid_token(
    request: &HttpRequest,
    query: &BranchQuery,
    secret: Option<&SigningSecret>,
) -> Result<(), AppError> {
    let Some(secret) = secret else {
        return Ok(());
    };
    let token = request.headers().get(GID_TOKEN_HEADER);
    let token = token
        .ok_or(AppError::MissingGidToken)?
        .to_str()
        .unwrap_or("");
    Ok(verify_gid_token(secret, &query.gid, token)?)
}
