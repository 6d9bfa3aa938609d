//! `GET|POST /api/fireBaseline?amount=&from=&to=`: the non-TCC floor of the benchmark
//! (`scripts/bench.sh baseline`). The same business work as `fireTcc` (debit `from` in bank A,
//! credit `to` in bank B, `amount` minor units) through the same HTTP stack and databases, but
//! without coordinator, barrier, holds or second phase: one plain local transaction per bank
//! (`POST {TRANS_OUT_URL}/BaselineTransOut`, then `POST {TRANS_IN_URL}/BaselineTransIn`, see the
//! bank's `baseline` module).
//!
//! Parameters as `fireTcc`'s (query string only); `wait_result` and the other transaction
//! options are accepted and ignored, so a load generator can send both endpoints the same query.
//! Answers `200 {"status":"done"}`; `409 {"error":"refused",...}` when bank A refused the debit
//! (nothing changed); `502 {"error":"bank_error",...}` when a bank could not be reached or failed.
//!
//! Not safe, on purpose: a credit that fails after the debit committed leaves the money gone
//! from bank A (answered `502`, `error` = `credit_failed_after_debit`). Making that impossible is
//! what TCC costs; this endpoint measures the business work without it.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use serde_json::json;
use service_kit::http::error_response;
use service_kit::params::RawParams;

use crate::scenario::{FireParams, Transfer, COMMON_PARAMS, TRANSFER_PARAMS};
use crate::state::AppState;

/// The endpoint's name, under `/api/`.
pub const NAME: &str = "fireBaseline";

/// Registers `GET` and `POST /api/fireBaseline`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource(format!("/api/{NAME}"))
            .route(web::get().to(fire_baseline))
            .route(web::post().to(fire_baseline)),
    );
}

/// The handler (see the module docs).
pub async fn fire_baseline(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let specs = [TRANSFER_PARAMS, COMMON_PARAMS].concat();
    let params: FireParams<Transfer> = match RawParams::from_query(req.query_string()).parse(&specs)
    {
        Ok(params) => params,
        Err(e) => return e.error_response(),
    };
    let Transfer { amount, from, to } = params.business;
    let debit = json!({ "account_id": from, "amount": amount });
    let credit = json!({ "account_id": to, "amount": amount });
    match call(
        &state.http,
        &state.urls.trans_out("BaselineTransOut"),
        &debit,
    )
    .await
    {
        Ok(()) => {}
        Err((StatusCode::CONFLICT, message)) => {
            return error_response(StatusCode::CONFLICT, "refused", message)
        }
        Err((_, message)) => return error_response(StatusCode::BAD_GATEWAY, "bank_error", message),
    }
    match call(
        &state.http,
        &state.urls.trans_in("BaselineTransIn"),
        &credit,
    )
    .await
    {
        Ok(()) => HttpResponse::Ok().json(json!({ "status": "done" })),
        Err((_, message)) => {
            log::error!("fireBaseline: credit failed after the debit committed: {message}");
            let code = "credit_failed_after_debit";
            error_response(StatusCode::BAD_GATEWAY, code, message)
        }
    }
}

/// `POST url` with `body`, on the AP's one shared client: `Ok` on a 2xx, else the status (502
/// for no answer) and a message.
async fn call(
    http: &reqwest::Client,
    url: &str,
    body: &serde_json::Value,
) -> Result<(), (StatusCode, String)> {
    let response = (http.post(url).json(body).send().await)
        .map_err(|e| (StatusCode::BAD_GATEWAY, format!("POST {url}: {e}")))?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let text = response.text().await.unwrap_or_default();
    let code = StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    Err((code, format!("POST {url}: HTTP {status}: {text}")))
}
