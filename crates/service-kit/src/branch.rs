//! What the sample's RMs put around each of their branch handlers. A handler is the RM's own
//! (`bank::handlers`, `stock::handlers`): it extracts its op-bound branch query and its body, and
//! runs its business code inside [`tcc::barrier::BranchBarrier::call`]. [`register`] mounts it at
//! `POST /api/<name>` wrapped in three middlewares, outermost first:
//!
//! 1. [`count_branch_calls`]: counts and logs every answer, whoever gave it;
//! 2. [`crate::callers::check_caller`]: who is calling (signature, gid token, the Try gate),
//!    before anything is read or written;
//! 3. [`crate::fault::inject_faults`]: the demo fault of the body, if any, which may answer
//!    instead of the handler.
//!
//! The handler's own extractors then refuse a malformed query, a query naming another op
//! (`400 op_mismatch`) and, for a Try, a body that is not the RM's JSON object. An RM's error
//! type sorts its variants into [`ErrorClass`]es, which answer every RM's shared cases (refusal,
//! bad value, unknown row, outage, bug) the same way.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::{from_fn, Next};
use actix_web::{guard, web, FromRequest, Handler, HttpResponse, Responder};
use tcc::barrier::BarrierOutcome;
use tcc::protocol::{BranchQuery, BranchReply, Op};

use crate::callers::check_caller;
use crate::fault::inject_faults;
use crate::http::{error_response, raw_query_value};
use crate::metrics::{RequestOutcome, RmMetrics};

/// One branch endpoint of an RM: `POST /api/<name>` serving `op`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BranchEndpoint {
    /// The endpoint's name, in its path and its log lines (`TransOutTry`).
    pub name: &'static str,
    /// The op it serves.
    pub op: Op,
}

/// Mounts `handler` at `POST /api/<endpoint.name>` inside the middlewares of the module docs;
/// `fault_injection` is the RM's `FAULT_INJECTION` setting. The middlewares read the app data
/// [`crate::startup::run`] registers: `web::Data<RmMetrics>`, `web::Data<BranchCallers>` (without
/// it every call is refused with a 500) and `web::Data<DbPool>`. Another method than `POST`
/// falls through to the app's JSON 404.
pub fn register<F, Args>(
    cfg: &mut web::ServiceConfig,
    endpoint: BranchEndpoint,
    fault_injection: bool,
    handler: F,
) where
    F: Handler<Args>,
    Args: FromRequest + 'static,
    F::Output: Responder + 'static,
{
    let BranchEndpoint { name, op } = endpoint;
    cfg.service(
        web::resource(format!("/api/{name}"))
            .guard(guard::Post())
            .wrap(from_fn(move |req: ServiceRequest, next: Next<BoxBody>| {
                inject_faults(op, fault_injection, req, next)
            }))
            .wrap(from_fn(move |req: ServiceRequest, next: Next<BoxBody>| {
                check_caller(op, req, next)
            }))
            .wrap(from_fn(move |req: ServiceRequest, next: Next<BoxBody>| {
                count_branch_calls(name, op, req, next)
            }))
            .to(handler),
    );
}

/// The middleware of the branch endpoint `endpoint` (`TransOutTry`) serving `op`: counts every
/// answer in the `web::Data<RmMetrics>` of the app data (`tcc_rm_branch_requests_total{op,
/// outcome}`, under the endpoint's op), and logs it with the query's `gid=` and `branch_id=`
/// (raw, `-` when absent). The outcome of a success is the barrier's decision the handler left
/// in the response ([`tcc::actix::BranchResult`]); of any other answer, its status
/// ([`RequestOutcome::of_error_status`]). Successes are logged at info, 5xx at error, the rest
/// at warn.
pub async fn count_branch_calls(
    endpoint: &'static str,
    op: Op,
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let metrics = req.app_data::<web::Data<RmMetrics>>().cloned();
    let raw = |name| {
        raw_query_value(req.query_string(), name)
            .unwrap_or("-")
            .to_owned()
    };
    let call = format!(
        "gid={} branch_id={} op={op} {endpoint}",
        raw("gid"),
        raw("branch_id")
    );
    let peer = req
        .peer_addr()
        .map_or_else(|| "-".to_owned(), |a| a.ip().to_string());
    let answer = next
        .call(req)
        .await
        .map(ServiceResponse::map_into_boxed_body);
    let (status, outcome, error) = match &answer {
        Ok(res) => {
            let barrier = res
                .response()
                .extensions()
                .get::<BarrierOutcome<()>>()
                .cloned();
            let outcome = barrier.as_ref().map_or_else(
                || RequestOutcome::of_error_status(res.status()),
                RequestOutcome::of_barrier,
            );
            let error = res.response().error().map(ToString::to_string);
            (res.status(), outcome, error)
        }
        Err(e) => {
            let status = e.as_response_error().status_code();
            (
                status,
                RequestOutcome::of_error_status(status),
                Some(e.to_string()),
            )
        }
    };
    if let Some(metrics) = metrics {
        metrics.record(op, outcome);
    }
    let error = error.unwrap_or_else(|| outcome.to_string());
    match status.as_u16() {
        200 => log::info!("{call}: {outcome}"),
        500.. => log::error!("{call} failed: {error}"),
        401 | 403 => log::warn!("{call} answered {}: {error}; peer {peer}", status.as_u16()),
        _ => log::warn!("{call} answered {}: {error}", status.as_u16()),
    }
    answer
}

/// The OpenAPI description of an RM's branch `endpoints`, registered with [`register`]:
/// `POST /api/{name}` for each, with the [`BranchQuery`] query parameters, `B`'s schema as Try's
/// body (any JSON, optional, for Confirm and Cancel) and every answer of the middlewares and the
/// handler ([`crate::openapi::branch_operation`]).
pub fn openapi<B: utoipa::ToSchema>(endpoints: &[BranchEndpoint]) -> utoipa::openapi::OpenApi {
    use utoipa::openapi::path::{HttpMethod, ParameterIn, PathItem};
    use utoipa::IntoParams;
    let mut paths = utoipa::openapi::PathsBuilder::new();
    for BranchEndpoint { name, op } in endpoints {
        let parameters = BranchQuery::into_params(|| Some(ParameterIn::Query));
        let operation = crate::openapi::branch_operation(name, *op, &B::name(), parameters);
        paths = paths.path(
            format!("/api/{name}"),
            PathItem::new(HttpMethod::Post, operation),
        );
    }
    utoipa::openapi::OpenApiBuilder::new()
        .paths(paths)
        .components(Some(crate::openapi::schemas_of::<B>().build()))
        .build()
}

/// How an RM's error answers over HTTP. Each RM's error type sorts its variants into these
/// classes in one `match`, and its `ResponseError` impl answers with [`ErrorClass::status_code`]
/// and [`ErrorClass::error_response`].
#[derive(Debug, Clone, Copy)]
pub enum ErrorClass {
    /// A business refusal: `409 {"dtm_result":"FAILURE","message":<the error>}`. From a Try it
    /// makes the AP abort; from Confirm/Cancel it is a protocol violation, which the TM retries
    /// and alerts on.
    Refusal,
    /// A well-formed body with a value out of range: 400 `invalid_request`, the error as message.
    InvalidRequest,
    /// A view of a row that does not exist: 404 with this code (`account_not_found`), the error
    /// as message.
    NotFound(&'static str),
    /// No pooled connection, or the blocking task failed: 503 `unavailable` with this message
    /// (generic: it tells the caller to retry, nothing about the internals).
    Unavailable(&'static str),
    /// Anything else (a failed query, rows contradicting an invariant): 500 `internal` with this
    /// generic message; the error itself is logged (with the gid, by [`count_branch_calls`]),
    /// never answered.
    Internal(&'static str),
}

impl ErrorClass {
    /// The HTTP status of the class: 409, 400, 404, 503 or 500.
    pub fn status_code(&self) -> StatusCode {
        match self {
            ErrorClass::Refusal => StatusCode::CONFLICT,
            ErrorClass::InvalidRequest => StatusCode::BAD_REQUEST,
            ErrorClass::NotFound(_) => StatusCode::NOT_FOUND,
            ErrorClass::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ErrorClass::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The answer to `error`, which belongs to this class: the FAILURE reply for a refusal, the
    /// JSON error body (`{"error": "<code>", "message": "..."}`) otherwise.
    pub fn error_response(&self, error: &dyn std::fmt::Display) -> HttpResponse {
        let status = self.status_code();
        match self {
            ErrorClass::Refusal => BranchReply::Failure(error.to_string()).to_response(),
            ErrorClass::InvalidRequest => {
                error_response(status, "invalid_request", error.to_string())
            }
            ErrorClass::NotFound(code) => error_response(status, code, error.to_string()),
            ErrorClass::Unavailable(message) => error_response(status, "unavailable", *message),
            ErrorClass::Internal(message) => error_response(status, "internal", *message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::callers::BranchCallers;
    use crate::coordinator_check::TryVerification;
    use crate::metrics::RmMetrics;
    use actix_web::{test, App};
    use tcc::actix::{BranchResult, ConfirmBranch, TryBranch};
    use tcc::barrier::BarrierOutcome;
    use tcc::signing::SigningSecret;

    const CONFIRM: BranchEndpoint = BranchEndpoint {
        name: "XConfirm",
        op: Op::Confirm,
    };
    const TRY: BranchEndpoint = BranchEndpoint {
        name: "XTry",
        op: Op::Try,
    };

    async fn duplicate(_: ConfirmBranch) -> BranchResult<actix_web::Error> {
        Ok(BarrierOutcome::Duplicate)
    }

    async fn never_runs(_: TryBranch) -> BranchResult<actix_web::Error> {
        panic!("the middlewares answer before the handler")
    }

    fn query(op: &str) -> String {
        format!("gid=g1&trans_type=tcc&branch_id=01&op={op}")
    }

    #[actix_web::test]
    async fn the_middlewares_count_the_barrier_s_decision_and_every_refusal() {
        let metrics = web::Data::new(RmMetrics::new(
            "SELECT 0::bigint AS tentative, NULL AS oldest_age_seconds",
        ));
        let secret = Some(SigningSecret::new("s"));
        let callers = BranchCallers::new(secret, TryVerification::Token, "http://127.0.0.1:9");
        let app = test::init_service(
            App::new()
                .app_data(metrics.clone())
                .app_data(web::Data::new(callers))
                .configure(|cfg| {
                    register(cfg, CONFIRM, false, duplicate);
                    register(cfg, TRY, false, never_runs);
                }),
        )
        .await;
        let token = tcc::signing::gid_token(&SigningSecret::new("s"), "g1");
        let post = |uri: String| {
            test::TestRequest::post()
                .uri(&uri)
                .insert_header((tcc::signing::GID_TOKEN_HEADER, token.clone()))
        };

        // A fault on a Confirm while fault injection is off is ignored: the handler answers.
        let ok = post(format!("/api/XConfirm?{}", query("confirm")))
            .set_json(serde_json::json!({"fault": {"confirm": "error"}}))
            .to_request();
        let ok = test::call_service(&app, ok).await;
        assert_eq!(ok.status(), StatusCode::OK);
        let body: serde_json::Value = test::read_body_json(ok).await;
        assert_eq!(body, serde_json::json!({"dtm_result": "SUCCESS"}));

        let wrong_op = post(format!("/api/XConfirm?{}", query("cancel"))).to_request();
        let wrong_op = test::call_service(&app, wrong_op).await;
        assert_eq!(wrong_op.status(), StatusCode::BAD_REQUEST);
        let body: serde_json::Value = test::read_body_json(wrong_op).await;
        assert_eq!(body["error"], "op_mismatch");

        let unsigned = test::TestRequest::post()
            .uri(&format!("/api/XConfirm?{}", query("confirm")))
            .to_request();
        let unsigned = test::call_service(&app, unsigned).await;
        assert_eq!(unsigned.status(), StatusCode::UNAUTHORIZED);

        // A Try carrying a fault while fault injection is off never reaches its handler.
        let faulty = post(format!("/api/XTry?{}", query("try")))
            .set_json(serde_json::json!({"fault": {"try": "failure"}}))
            .to_request();
        let faulty = test::call_service(&app, faulty).await;
        assert_eq!(faulty.status(), StatusCode::BAD_REQUEST);
        let body: serde_json::Value = test::read_body_json(faulty).await;
        assert_eq!(body["error"], "fault_injection_disabled");

        let text = metrics.render();
        for series in [
            r#"{op="confirm",outcome="duplicate"} 1"#,
            r#"{op="confirm",outcome="bad_request"} 1"#,
            r#"{op="confirm",outcome="unauthorized"} 1"#,
            r#"{op="try",outcome="bad_request"} 1"#,
        ] {
            assert!(text.contains(series), "{series} in {text}");
        }
    }
}
