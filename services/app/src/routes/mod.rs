//! The HTTP routes: one `GET`+`POST` endpoint per scenario ([`fire`]), the AP's own nested
//! branch ([`nested`]), the benchmark's `fireBaseline` ([`baseline`]), the metrics, JSON 404s.

pub mod baseline;
pub mod fire;
pub mod nested;

use std::future::Future;

use actix_web::http::header::{HeaderValue, ALLOW};
use actix_web::http::StatusCode;
use actix_web::middleware::from_fn;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::de::DeserializeOwned;
use service_kit::http::error_response;
use service_kit::rate_limit::limit_by_client;
use tcc::protocol::Op;

use crate::error::AppError;
use crate::params::FireParams;
use crate::scenario::Scenario;
use crate::state::AppState;
use fire::FireAnswer;

/// Registers `GET` and `POST /api/<scenario>` for every [`Scenario`] (other methods get
/// `405 {"error":"method_not_allowed"}`), `POST /api/TransInNestedTry|Confirm|Cancel`, and
/// `GET /api/metrics`.
///
/// The fire endpoints, where untrusted callers arrive, are limited per client address by the
/// `web::Data<ClientLimiter>` of the app data ([`limit_by_client`]: `429` with `Retry-After`
/// over the quota); the nested branch (called by this AP and the TM) and the metrics are not.
///
/// With `baseline_endpoints` (`BASELINE_ENDPOINTS=on`, for `scripts/bench.sh` only), also
/// `GET|POST /api/fireBaseline` ([`baseline`]).
pub fn configure(cfg: &mut web::ServiceConfig, baseline_endpoints: bool) {
    if baseline_endpoints {
        baseline::configure(cfg);
    }
    cfg.route(service_kit::metrics::PATH, web::get().to(metrics));
    for (name, op) in nested::ENDPOINTS {
        let route = match op {
            Op::Try => web::post().to(nested::trans_in_nested_try),
            Op::Confirm => web::post().to(nested::trans_in_nested_confirm),
            Op::Cancel => web::post().to(nested::trans_in_nested_cancel),
        };
        cfg.route(&format!("/api/{name}"), route);
    }
    fire_endpoint(cfg, Scenario::FireTcc, fire::fire_tcc);
    fire_endpoint(cfg, Scenario::FireTccRollback, fire::fire_tcc_rollback);
    fire_endpoint(cfg, Scenario::FirePurchase, fire::fire_purchase);
    fire_endpoint(cfg, Scenario::FireTccNested, fire::fire_tcc_nested);
}

/// `GET|POST {scenario.path()}`, served by `handler` through [`fire::fire`].
fn fire_endpoint<B, F, Fut>(cfg: &mut web::ServiceConfig, scenario: Scenario, handler: F)
where
    B: DeserializeOwned + 'static,
    F: Fn(FireParams<B>, web::Data<AppState>) -> Fut + Clone + 'static,
    Fut: Future<Output = Result<FireAnswer, AppError>> + 'static,
{
    let route = move |req: HttpRequest, body: web::Payload, state: web::Data<AppState>| {
        fire::fire(scenario, req, body, state, handler.clone())
    };
    cfg.service(
        web::resource(scenario.path())
            .wrap(from_fn(limit_by_client))
            .route(web::get().to(route.clone()))
            .route(web::post().to(route))
            .default_service(web::to(method_not_allowed)),
    );
}

/// `GET /api/metrics`: every metric of this AP ([`crate::metrics`]), `text/plain; version=0.0.4`.
#[utoipa::path(get, path = "/api/metrics", tag = "metrics", responses(
    (status = 200, description = "Prometheus text exposition format 0.0.4", body = String, content_type = "text/plain"),
))]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    state.metrics.registry.response()
}

/// The answer to a path no route matches: `404 {"error":"not_found"}`, JSON like every other
/// error, listing the fire endpoints.
pub async fn not_found(req: HttpRequest) -> HttpResponse {
    let endpoints: Vec<String> = Scenario::ALL.iter().map(|s| s.path()).collect();
    error_response(
        StatusCode::NOT_FOUND,
        "not_found",
        format!(
            "no route for {} {}; the fire endpoints are {}",
            req.method(),
            req.path(),
            endpoints.join(", ")
        ),
    )
}

async fn method_not_allowed(req: HttpRequest) -> HttpResponse {
    let mut response = error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} takes GET or POST, not {}", req.path(), req.method()),
    );
    let allow = HeaderValue::from_static("GET, POST");
    response.headers_mut().insert(ALLOW, allow);
    response
}
