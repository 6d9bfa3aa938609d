//! The HTTP routes: one `GET`+`POST` endpoint per catalogue scenario, the AP's own nested branch
//! ([`nested`]), the metrics, plus JSON 404s.

pub mod baseline;
mod fire;
pub mod nested;

pub use fire::{fire, FireResponse, CRASH_EXIT_CODE};

use actix_web::http::StatusCode;
use actix_web::middleware::from_fn;
use actix_web::{web, HttpRequest, HttpResponse};
use service_kit::rate_limit::limit_by_client;

use crate::scenario::CATALOGUE;
use crate::startup::AppState;

/// Registers `GET` and `POST /api/<name>` for every scenario of [`CATALOGUE`] (other methods
/// get `405 {"error":"method_not_allowed"}`), `POST /api/TransInNestedTry|Confirm|Cancel`, and
/// `GET /api/metrics` ([`crate::metrics`]).
///
/// The fire endpoints, where untrusted callers arrive, are limited per client address by the
/// `web::Data<ClientLimiter>` of the app data ([`service_kit::rate_limit::limit_by_client`]:
/// `429` with `Retry-After` over the quota); the nested branch (called by this AP and the TM)
/// and the metrics are not.
///
/// With `baseline_endpoints` (`BASELINE_ENDPOINTS=on`, for `scripts/bench.sh` only), also
/// `GET|POST /api/fireBaseline` ([`baseline`]).
pub fn configure(cfg: &mut web::ServiceConfig, baseline_endpoints: bool) {
    if baseline_endpoints {
        baseline::configure(cfg);
    }
    cfg.route(
        service_kit::metrics::PATH,
        web::get().to(crate::metrics::metrics),
    );
    for (name, op) in nested::ENDPOINTS {
        let route = match op {
            tcc::protocol::Op::Try => web::post().to(nested::trans_in_nested_try),
            tcc::protocol::Op::Confirm => web::post().to(nested::trans_in_nested_confirm),
            tcc::protocol::Op::Cancel => web::post().to(nested::trans_in_nested_cancel),
        };
        cfg.route(&format!("/api/{name}"), route);
    }
    for scenario in CATALOGUE {
        let handler = move |req: HttpRequest, body: web::Payload, state: web::Data<AppState>| {
            fire(scenario, req, body, state)
        };
        cfg.service(
            web::resource(scenario.path())
                .wrap(from_fn(limit_by_client))
                .route(web::get().to(handler))
                .route(web::post().to(handler))
                .default_service(web::to(method_not_allowed)),
        );
    }
}

/// The answer to a path no route matches: `404 {"error":"not_found"}`, JSON like every other
/// error, listing the fire endpoints.
pub async fn not_found(req: HttpRequest) -> HttpResponse {
    let endpoints: Vec<String> = CATALOGUE.iter().map(|s| s.path()).collect();
    service_kit::http::error_response(
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
    let mut response = service_kit::http::error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} takes GET or POST, not {}", req.path(), req.method()),
    );
    response.headers_mut().insert(
        actix_web::http::header::ALLOW,
        actix_web::http::header::HeaderValue::from_static("GET, POST"),
    );
    response
}
