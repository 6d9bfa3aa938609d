//! HTTP pieces every binary shares: health routes, the JSON error body and JSON 404, extractor
//! configs, the `GET .../{id}` view route of the RMs.

use actix_web::http::StatusCode;
use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::{error, web, FromRequest, HttpRequest, HttpResponse, ResponseError, Route};
use diesel::{PgConnection, RunQueryDsl};
use diesel_migrations::EmbeddedMigrations;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::db::{blocking, migrations_applied, BlockingError, DbPool};

/// The JSON error body every endpoint answers on a client or server error:
/// `{"error": "<machine-readable code>", "message": "<what is wrong, for a human>"}`
/// ([`ErrorBody`]); the one the branch endpoints' refusals use too.
pub use tcc::actix::error_response;

/// The body of every error answer of every binary: `{"error": "<code>", "message": "<what is
/// wrong>"}` ([`error_response`]). `error` is a stable, machine-readable code (`invalid_json`,
/// `invalid_gid`, `body_too_large`, ...); `message` is for humans and never carries SQL, internal
/// paths or other transactions' data. Some answers add fields (the AP's `parameter`, the
/// coordinator's `dtm_result` on a 409).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// Machine-readable code.
    #[schema(example = "invalid_json")]
    pub error: String,
    /// What is wrong, for a human.
    pub message: String,
}

/// The answer of `GET /api/ping` and `GET /api/health`: `{"service": "trans-out", "status":
/// "ok", "database": "ok"}` (`database` absent for the AP, which has none).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HealthAnswer {
    /// The binary's name.
    #[schema(example = "coordinator")]
    pub service: String,
    /// Always `ok` in a 200.
    pub status: String,
    /// `ok` when the database answered and is migrated (readiness only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
}

/// The OpenAPI description of `/api/ping` and `/api/health`, with [`ErrorBody`].
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(ping, health),
    components(schemas(ErrorBody, HealthAnswer)),
    tags((name = "health", description = "Liveness and readiness")),
)]
pub struct HealthApi;

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

/// Whether a body that parsed as JSON is an object. Serde's derived `Deserialize` also reads a
/// struct from a JSON array of its fields in order (`[1, 5]` as account 1, amount 5), which no
/// caller means and which would let a positional mistake move money or end a transaction; DTM
/// and this project's clients always send objects.
pub(crate) fn is_json_object(raw: &[u8]) -> bool {
    raw.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

/// The answer to a body that is JSON but not an object: `400 invalid_json`, as for any body
/// that does not match the expected shape.
pub(crate) fn not_an_object() -> error::Error {
    let message = "the body must be a JSON object of named fields, not an array or a scalar";
    let response = error_response(StatusCode::BAD_REQUEST, "invalid_json", message);
    error::InternalError::from_response(message, response).into()
}

/// A JSON request body that must be an object: `web::Json<T>` (same [`json_config`]: limit,
/// content type and JSON error answers), except that the body must be a JSON object: a JSON
/// array is a `400 invalid_json` even when `T`'s derived `Deserialize` would read it as its
/// fields in order (`["g1", "tcc"]` as gid and trans_type). A body
/// actix cannot read (over its payload limit, cut short) is a JSON 413/400 too.
#[derive(Debug)]
pub struct JsonObject<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for JsonObject<T> {
    type Error = error::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let req = req.clone();
        let bytes = web::Bytes::from_request(&req, payload);
        Box::pin(async move {
            let raw = bytes.await.map_err(payload_error)?;
            let body = web::Json::<T>::from_request(&req, &mut raw.clone().into()).await?;
            if !is_json_object(&raw) {
                return Err(not_an_object());
            }
            Ok(JsonObject(body.into_inner()))
        })
    }
}

/// The first value of `name` in a raw query string, still percent-encoded (so it cannot break a
/// log line), at most 128 characters; `None` when absent or empty. For log lines about requests
/// whose query may not parse.
pub(crate) fn raw_query_value<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    let value = query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
        .filter(|value| !value.is_empty())?;
    Some(match value.char_indices().nth(128) {
        Some((end, _)) => &value[..end],
        None => value,
    })
}

/// A body that could not be read (over actix's payload limit, 256 KiB unless configured, or cut
/// short), answered with the JSON error body: 413 `body_too_large` or 400 `invalid_body`.
pub(crate) fn payload_error(error: error::Error) -> error::Error {
    let status = error.as_response_error().status_code();
    let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
        "body_too_large"
    } else {
        "invalid_body"
    };
    let response = error_response(status, code, error.to_string());
    error::InternalError::from_response(error.to_string(), response).into()
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
    responses((status = 200, description = "The process answers", body = HealthAnswer)))]
pub(crate) async fn ping(check: web::Data<HealthCheck>) -> HttpResponse {
    HttpResponse::Ok().json(healthy(&check, None))
}

/// The 200 answer of `/api/ping` and `/api/health` ([`HealthAnswer`]).
fn healthy(check: &HealthCheck, database: Option<&str>) -> HealthAnswer {
    HealthAnswer {
        service: check.service.to_owned(),
        status: "ok".to_owned(),
        database: database.map(str::to_owned),
    }
}

/// `GET /api/health`: readiness.
#[utoipa::path(get, path = "/api/health", tag = "health", responses(
    (status = 200, description = "Ready: the database answers and is migrated", body = HealthAnswer),
    (status = 503, description = "`not_ready` (migrations pending) or `database_unavailable`", body = ErrorBody),
))]
pub(crate) async fn health(check: web::Data<HealthCheck>) -> HttpResponse {
    let Some(pool) = check.pool.clone() else {
        return HttpResponse::Ok().json(healthy(&check, None));
    };
    let migrations = check.migrations;
    let ready = blocking(&pool, move |conn| {
        diesel::sql_query("SELECT 1").execute(conn).is_ok() && migrations_applied(conn, migrations)
    })
    .await;
    match ready {
        Ok(true) => HttpResponse::Ok().json(healthy(&check, Some("ok"))),
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

#[cfg(test)]
mod tests {
    use super::raw_query_value;

    #[test]
    fn raw_query_values_are_found_by_exact_name_and_kept_encoded_and_short() {
        let query = "xgid=no&gid=g%0A1&branch_id=&op=try";
        assert_eq!(raw_query_value(query, "gid"), Some("g%0A1"));
        assert_eq!(raw_query_value(query, "branch_id"), None);
        assert_eq!(raw_query_value(query, "trans_type"), None);
        let long = format!("gid={}", "a".repeat(500));
        assert_eq!(raw_query_value(&long, "gid").map(str::len), Some(128));
    }
}
