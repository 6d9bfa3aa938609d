//! HTTP pieces every binary shares: health routes, the JSON error body and JSON 404, extractor
//! configs.

use actix_web::http::StatusCode;
use actix_web::{error, web, HttpRequest, HttpResponse, ResponseError, Route};
use diesel::{PgConnection, RunQueryDsl};
use diesel_migrations::EmbeddedMigrations;
use serde::Serialize;
use serde_json::json;

use crate::db::{blocking, migrations_applied, BlockingError, DbPool};

/// The JSON error body every endpoint answers on a client or server error:
/// `{"error": "<machine-readable code>", "message": "<what is wrong, for a human>"}`.
pub fn error_response(status: StatusCode, code: &str, message: impl Into<String>) -> HttpResponse {
    HttpResponse::build(status).json(json!({ "error": code, "message": message.into() }))
}

/// The answer to a path no route matches: `404 {"error":"not_found","message":"no such
/// endpoint"}`, JSON like every other error (actix's default is an empty body). Register it
/// with `App::default_service(web::to(not_found))`.
pub async fn not_found() -> HttpResponse {
    error_response(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

/// A `JsonConfig` that answers malformed JSON, a wrong content type or an oversized body with
/// `400`/`413`/`415` and the JSON error body instead of actix's plain-text default.
/// `limit` is the largest accepted body in bytes.
pub fn json_config(limit: usize) -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(limit)
        .error_handler(|err, _req: &HttpRequest| {
            let (status, code) = match &err {
                error::JsonPayloadError::OverflowKnownLength { .. }
                | error::JsonPayloadError::Overflow { .. } => {
                    (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large")
                }
                error::JsonPayloadError::ContentType => (
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_content_type",
                ),
                _ => (StatusCode::BAD_REQUEST, "invalid_json"),
            };
            let message = err.to_string();
            error::InternalError::from_response(err, error_response(status, code, message)).into()
        })
}

/// A `QueryConfig` that answers a malformed query string with `400 {"error":"invalid_query"}`.
pub fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|err, _req| {
        let message = err.to_string();
        error::InternalError::from_response(
            err,
            error_response(StatusCode::BAD_REQUEST, "invalid_query", message),
        )
        .into()
    })
}

/// A `PathConfig` that answers a malformed path parameter with `400 {"error":"invalid_path"}`.
pub fn path_config() -> web::PathConfig {
    web::PathConfig::default().error_handler(|err, _req| {
        let message = err.to_string();
        error::InternalError::from_response(
            err,
            error_response(StatusCode::BAD_REQUEST, "invalid_path", message),
        )
        .into()
    })
}

/// A `GET` route showing one row by the `{id}` of its path (`/api/accounts/{id}`): `lookup` runs
/// on a pooled connection off the async workers; `Some(view)` answers 200 with it as JSON,
/// `None` answers `not_found(id)`. A non-integer id is a 400 `invalid_path` ([`path_config`]);
/// a pool or thread failure is `E::from(BlockingError)`. Server errors are logged with the
/// request's path (their answer carries a generic message only).
pub fn view_route<V, Q, E>(
    lookup: fn(&mut PgConnection, i64) -> Result<Option<V>, Q>,
    not_found: fn(i64) -> E,
) -> Route
where
    V: Serialize + Send + 'static,
    Q: Send + 'static,
    E: From<Q> + From<BlockingError> + ResponseError + 'static,
{
    web::get().to(
        move |req: HttpRequest, pool: web::Data<DbPool>, id: web::Path<i64>| async move {
            let id = id.into_inner();
            let view = match blocking(&pool, move |conn| lookup(conn, id)).await {
                Ok(Ok(view)) => view,
                Ok(Err(e)) => return Err(logged(&req, E::from(e))),
                Err(e) => return Err(logged(&req, E::from(e))),
            };
            view.map(|v| HttpResponse::Ok().json(v))
                .ok_or_else(|| not_found(id))
        },
    )
}

/// Logs `error` at error level when it is a server error, and hands it back.
fn logged<E: ResponseError>(req: &HttpRequest, error: E) -> E {
    if error.status_code().is_server_error() {
        log::error!("{} {} failed: {error}", req.method(), req.path());
    }
    error
}

/// What `/api/health` checks: the pool and the migrations that must be applied.
#[derive(Clone)]
pub struct HealthCheck {
    /// The binary's name, echoed in the answers.
    pub service: &'static str,
    /// `None` for the AP, which has no database.
    pub pool: Option<DbPool>,
    /// Every migration set the binary runs at start.
    pub migrations: &'static [&'static EmbeddedMigrations],
}

/// Registers `GET /api/ping` (liveness: the process answers) and `GET /api/health` (readiness:
/// `SELECT 1` works and no migration is pending; 503 otherwise).
pub fn configure_health(cfg: &mut web::ServiceConfig, check: HealthCheck) {
    cfg.app_data(web::Data::new(check))
        .route("/api/ping", web::get().to(ping))
        .route("/api/health", web::get().to(health));
}

/// `GET /api/ping`: liveness.
#[utoipa::path(get, path = "/api/ping", tag = "health",
    responses((status = 200, description = "The process answers", body = crate::openapi::HealthAnswer)))]
pub(crate) async fn ping(check: web::Data<HealthCheck>) -> HttpResponse {
    HttpResponse::Ok().json(json!({ "service": check.service, "status": "ok" }))
}

/// `GET /api/health`: readiness.
#[utoipa::path(get, path = "/api/health", tag = "health", responses(
    (status = 200, description = "Ready: the database answers and is migrated", body = crate::openapi::HealthAnswer),
    (status = 503, description = "`not_ready` (migrations pending) or `database_unavailable`", body = crate::openapi::ErrorBody),
))]
pub(crate) async fn health(check: web::Data<HealthCheck>) -> HttpResponse {
    let Some(pool) = check.pool.clone() else {
        return HttpResponse::Ok().json(json!({ "service": check.service, "status": "ok" }));
    };
    let migrations = check.migrations;
    let ready = blocking(&pool, move |conn| {
        diesel::sql_query("SELECT 1").execute(conn).is_ok() && migrations_applied(conn, migrations)
    })
    .await;
    match ready {
        Ok(true) => HttpResponse::Ok().json(json!({
            "service": check.service, "status": "ok", "database": "ok"
        })),
        Ok(false) => error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "the database is reachable but not migrated",
        ),
        Err(e) => {
            log::warn!("health check failed: {e}");
            error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "database_unavailable",
                "the database is not reachable",
            )
        }
    }
}
