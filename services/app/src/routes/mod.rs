//! The HTTP routes: one `GET`+`POST` endpoint per scenario ([`fire`]), the AP's own nested
//! branch ([`nested`]), the benchmark's `fireBaseline` ([`baseline`]), the metrics, JSON 404s.

pub mod baseline;
pub mod fire;
pub mod nested;

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderValue, ALLOW};
use actix_web::http::StatusCode;
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, FromRequest, Handler, HttpRequest, HttpResponse, Responder};
use service_kit::http::error_response;
use service_kit::rate_limit::limit_by_client;
use tcc::protocol::Op;

use crate::configuration::Settings;
use crate::error::AppError;
use crate::metrics::FireOutcome;
use crate::scenario::Scenario;
use crate::state::AppState;
use fire::FireAnswer;

/// Registers `GET` and `POST /api/<scenario>` for every [`Scenario`] (other methods get
/// `405 {"error":"method_not_allowed"}`), `POST /api/TransInNestedTry|Confirm|Cancel`, and
/// `GET /api/metrics`.
///
/// Each fire endpoint is its handler wrapped in two middlewares: outermost the per-client
/// limit of untrusted callers ([`limit_by_client`], over the `web::Data<ClientLimiter>` of the
/// app data: `429` with `Retry-After` over the quota), then [`count_fire`]; its parameters are
/// read by the handler's [`service_kit::params::Params`] extractor from the resource's
/// [`Scenario::table`]. The nested branch (called by this AP and the TM) and the metrics are not
/// limited.
///
/// With `BASELINE_ENDPOINTS=on` (`scripts/bench.sh` only), also `GET|POST /api/fireBaseline`
/// ([`baseline`]).
pub fn configure(cfg: &mut web::ServiceConfig, settings: &Settings) {
    if settings.baseline_endpoints {
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
    fire_endpoint(cfg, settings, Scenario::FireTcc, fire::fire_tcc);
    fire_endpoint(
        cfg,
        settings,
        Scenario::FireTccRollback,
        fire::fire_tcc_rollback,
    );
    fire_endpoint(cfg, settings, Scenario::FirePurchase, fire::fire_purchase);
    fire_endpoint(
        cfg,
        settings,
        Scenario::FireTccNested,
        fire::fire_tcc_nested,
    );
}

/// `GET|POST {scenario.path()}`, served by `handler` (see [`configure`]).
fn fire_endpoint<F, Args>(
    cfg: &mut web::ServiceConfig,
    s: &Settings,
    scenario: Scenario,
    handler: F,
) where
    F: Handler<Args>,
    Args: FromRequest + 'static,
    F::Output: Responder + 'static,
{
    cfg.service(
        web::resource(scenario.path())
            .app_data(scenario)
            .app_data(scenario.table(s.json_limit, s.fault_injection))
            .wrap(from_fn(count_fire))
            .wrap(from_fn(limit_by_client))
            .route(web::get().to(handler.clone()))
            .route(web::post().to(handler))
            .default_service(web::to(method_not_allowed)),
    );
}

/// Middleware around a fire handler: counts its answer in the AP's metrics
/// ([`crate::metrics`]: by scenario and [`FireOutcome`], with its duration) and logs how it
/// ended: the [`FireAnswer`] of a global transaction, or an error other than a refused request.
/// A `405` (another method than `GET`/`POST`) is neither counted nor logged.
pub async fn count_fire(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let scenario = *req
        .app_data::<Scenario>()
        .expect("a fire resource has its Scenario");
    let state = req
        .app_data::<web::Data<AppState>>()
        .expect("AppState")
        .clone();
    let started = Instant::now();
    let res = next.call(req).await?;
    let response = res.response();
    if response.status() == StatusCode::METHOD_NOT_ALLOWED {
        return Ok(res); // not a fire request: a method this endpoint does not take
    }
    let error = response.error().and_then(|e| e.as_error::<AppError>());
    let outcome = FireOutcome::of(response.status(), error);
    state.metrics.record(scenario, outcome, started.elapsed());
    let (scenario, outcome_name) = (scenario.name(), outcome.as_str());
    if let Some(FireAnswer {
        gid,
        status,
        reason,
    }) = response.extensions().get::<FireAnswer>()
    {
        let reason = reason.as_deref().map(|r| format!(": {r}"));
        let reason = reason.unwrap_or_default();
        log::info!("gid={gid} branch_id=- op=- scenario={scenario} {outcome_name}, status={status}{reason}");
    } else if let Some(e) = error.filter(|_| outcome != FireOutcome::Invalid) {
        // The answer names no upstream detail (URL, body); the log does.
        let gid = e.gid().unwrap_or("-");
        log::error!("gid={gid} branch_id=- op=- scenario={scenario} {outcome_name}: {e}");
    }
    Ok(res)
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
