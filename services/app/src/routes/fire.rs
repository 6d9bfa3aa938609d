//! The fire endpoints: check parameters, plan the branches, run one TCC global transaction.

use std::time::Instant;

use actix_web::body::BoxBody;
use actix_web::http::StatusCode;
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse, Responder};
use tcc::client::{BranchError, TransOptions};
use tcc::protocol::GlobalStatus;

use crate::error::AppError;
use crate::metrics::FireOutcome;
use crate::openapi::FireAnswer;
use crate::params::RawParams;
use crate::scenario::{Scenario, CRASH_AFTER_TRY};
use crate::startup::AppState;

/// The exit status of the AP process after `crash_after_try`.
pub const CRASH_EXIT_CODE: i32 = 86;

/// How a fired global transaction ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FireResponse {
    /// Every Try succeeded and the transaction was submitted:
    /// `200 {"gid": "...", "status": "succeed"}`. With this project's coordinator `status` is
    /// final; a DTM server answers without it, read as `submitted`.
    Committed {
        /// The global transaction id.
        gid: String,
        /// The status the coordinator reported after `submit`.
        status: GlobalStatus,
    },
    /// A Try did not succeed and the transaction was aborted:
    /// `409 {"gid": "...", "status": "failed", "reason": "branch 02 Try refused: ..."}`.
    /// `reason` is also the rollback reason the coordinator recorded.
    RolledBack {
        /// The global transaction id.
        gid: String,
        /// The status the coordinator reported after `abort` (`failed`, or `aborting` from DTM).
        status: GlobalStatus,
        /// Why: the failed branch's error.
        reason: String,
    },
}

impl Responder for FireResponse {
    type Body = BoxBody;

    fn respond_to(self, _req: &HttpRequest) -> HttpResponse {
        match self {
            FireResponse::Committed { gid, status } => HttpResponse::Ok().json(FireAnswer {
                gid,
                status,
                reason: None,
            }),
            FireResponse::RolledBack {
                gid,
                status,
                reason,
            } => HttpResponse::build(StatusCode::CONFLICT).json(FireAnswer {
                gid,
                status,
                reason: Some(reason),
            }),
        }
    }
}

/// `GET|POST /api/<scenario>`: runs `scenario` with the request's parameters (query string and/or
/// JSON body, see [`crate::params`]).
///
/// Order matters for what a failure leaves behind: parameters are checked and a purchase's price
/// read *before* asking the coordinator for a gid, so a bad request never creates a global
/// transaction. Then, inside one TCC global transaction, each branch is registered and its Try
/// called in catalogue order; the first Try that fails aborts the transaction (the TM cancels
/// every registered branch) and the rest are not called.
///
/// Every answer is counted in the AP's metrics ([`crate::metrics`]: by scenario and
/// [`FireOutcome`], with its duration).
pub async fn fire(
    scenario: &'static Scenario,
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> Result<FireResponse, AppError> {
    let started = Instant::now();
    let result = run_scenario(scenario, &req, body, &state).await;
    let outcome = FireOutcome::of(&result);
    state
        .metrics
        .record(scenario.name, outcome, started.elapsed());
    if let Err(e @ AppError::StockUnavailable { .. }) = &result {
        // The answer names no upstream detail (URL, body); the log does.
        log::error!(
            "gid=- branch_id=- op=- scenario={} {}: {e}",
            scenario.name,
            outcome.as_str()
        );
    }
    result
}

/// [`fire`] without the metrics.
async fn run_scenario(
    scenario: &'static Scenario,
    req: &HttpRequest,
    body: web::Payload,
    state: &AppState,
) -> Result<FireResponse, AppError> {
    let raw = read_params(req, body, state.json_limit).await?;
    let params = raw.parse(&scenario.params())?;
    if !state.fault_injection {
        let given = params
            .first_fault_given()
            .or(params.flag(CRASH_AFTER_TRY).then_some(CRASH_AFTER_TRY));
        if let Some(parameter) = given {
            return Err(AppError::FaultInjectionDisabled {
                parameter: parameter.to_owned(),
            });
        }
    }
    let branches = scenario.plan(&params, &state.prices).await?;
    let crash_after_try = params.flag(CRASH_AFTER_TRY);

    let gid = state
        .tcc
        .new_gid()
        .await
        .map_err(|source| coordinator_error(scenario, None, source))?;
    log::info!(
        "gid={gid} branch_id=- op=- scenario={} starting {} branches",
        scenario.name,
        branches.len()
    );

    let endpoints = state.endpoints.clone();
    let secs = |name| params.optional_int(name).map(|n| n as u64);
    let options = TransOptions {
        wait_result: params.flag("wait_result"),
        timeout_to_fail: secs("timeout_to_fail"),
        retry_interval: secs("retry_interval"),
        request_timeout: secs("request_timeout"),
        ..TransOptions::default()
    };
    let outcome = state
        .tcc
        .tcc_global_transaction(&gid, options, |tcc| async move {
            for branch in &branches {
                let urls = branch.resource.urls(&endpoints);
                match tcc
                    .call_branch(
                        &branch.data(),
                        &urls.try_url,
                        &urls.confirm_url,
                        &urls.cancel_url,
                    )
                    .await
                {
                    Ok(reply) => log::info!(
                        "gid={} branch_id={} op=try {} succeeded",
                        tcc.gid(),
                        reply.branch_id,
                        branch.resource.label()
                    ),
                    Err(e) => {
                        log::warn!(
                            "gid={} branch_id={} op=try {} did not succeed: {e}",
                            tcc.gid(),
                            failed_branch_id(&e),
                            branch.resource.label()
                        );
                        return Err(e);
                    }
                }
            }
            if crash_after_try {
                // The AP dies between its Trys and submit: the coordinator must abort the
                // transaction after timeout_to_fail and cancel what the Trys reserved.
                log::error!(
                    "gid={} branch_id=- op=- crash_after_try: the AP exits now, before submit (simulated crash)",
                    tcc.gid()
                );
                std::process::exit(CRASH_EXIT_CODE);
            }
            Ok::<(), BranchError>(())
        })
        .await
        .map_err(|source| coordinator_error(scenario, Some(gid.clone()), source))?;

    Ok(match outcome.result {
        Ok(()) => {
            log::info!(
                "gid={} branch_id=- op=- scenario={} committed, status={}",
                outcome.gid,
                scenario.name,
                outcome.status
            );
            FireResponse::Committed {
                gid: outcome.gid,
                status: outcome.status,
            }
        }
        Err(reason) => {
            log::info!(
                "gid={} branch_id=- op=- scenario={} rolled back, status={}: {reason}",
                outcome.gid,
                scenario.name,
                outcome.status
            );
            FireResponse::RolledBack {
                gid: outcome.gid,
                status: outcome.status,
                reason: reason.to_string(),
            }
        }
    })
}

/// The branch id of a failed Try, `-` when registering it failed (no Try was called).
fn failed_branch_id(error: &BranchError) -> &str {
    match error {
        BranchError::Failure { branch_id, .. }
        | BranchError::Ongoing { branch_id }
        | BranchError::Transient { branch_id, .. } => branch_id,
        BranchError::Register(_) => "-",
    }
}

fn coordinator_error(
    scenario: &Scenario,
    gid: Option<String>,
    source: tcc::client::TccError,
) -> AppError {
    log::error!(
        "gid={} branch_id=- op=- scenario={} coordinator failure: {source}",
        gid.as_deref().unwrap_or("-"),
        scenario.name
    );
    AppError::Coordinator { gid, source }
}

/// The query string's parameters, plus the body's when there is one. A body (anything but
/// whitespace) must be `application/json` and at most `limit` bytes.
async fn read_params(
    req: &HttpRequest,
    body: web::Payload,
    limit: usize,
) -> Result<RawParams, AppError> {
    let mut raw = RawParams::from_query(req.query_string());
    let bytes = body
        .to_bytes_limited(limit)
        .await
        .map_err(|_| AppError::BodyTooLarge { limit })?
        .map_err(|e| AppError::UnreadableBody(e.to_string()))?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(raw);
    }
    if !req.content_type().eq_ignore_ascii_case("application/json") {
        return Err(AppError::UnsupportedContentType);
    }
    raw.add_json_body(&bytes)?;
    Ok(raw)
}
