//! actix-web pieces for an RM's branch endpoints: what the protocol decides around
//! [`BranchBarrier::call`](crate::barrier::BranchBarrier::call), so that a handler shows only the
//! barrier and the business code.
//!
//! ```no_run
//! use actix_web::{web, HttpResponse, ResponseError};
//! use diesel::r2d2::{ConnectionManager, Pool};
//! use diesel::PgConnection;
//! use tcc::actix::{BranchResult, TryBranch};
//! use tcc::barrier::BranchBarrier;
//!
//! type DbPool = Pool<ConnectionManager<PgConnection>>;
//!
//! #[derive(Debug)]
//! struct BankError;
//! impl std::fmt::Display for BankError {
//!     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
//!         f.write_str("the bank failed")
//!     }
//! }
//! impl ResponseError for BankError {}
//! impl From<diesel::result::Error> for BankError {
//!     fn from(_: diesel::result::Error) -> Self {
//!         BankError
//!     }
//! }
//! # fn freeze(conn: &mut PgConnection, amount: i64) -> Result<(), BankError> { Ok(()) }
//!
//! /// `POST /api/TransOutTry?gid=..&trans_type=tcc&branch_id=..&op=try`.
//! async fn trans_out_try(branch: TryBranch, pool: web::Data<DbPool>) -> BranchResult<BankError> {
//!     web::block(move || {
//!         let mut conn = pool.get().map_err(|_| BankError)?;
//!         BranchBarrier::new(&branch.query).call(&mut conn, |conn| freeze(conn, 30))
//!     })
//!     .await
//!     .map_err(|_| BankError)?
//! }
//! ```
//!
//! * **The branch query**: [`TryBranch`], [`ConfirmBranch`] and [`CancelBranch`] extract and
//!   validate `?gid=&trans_type=tcc&branch_id=&op=` ([`BranchQuery::validate`]) and refuse a call
//!   whose `op` is not the endpoint's (`TransOutTry` with `op=confirm` is a client bug, answered
//!   `400 op_mismatch` rather than run as a Try); [`BranchQuery`] itself extracts without the op
//!   check. A malformed query is `400 bad_branch_query`.
//! * **The answer**: a handler returns a [`BranchResult`]. `Ok` with the barrier's decision answers
//!   `200 {"dtm_result":"SUCCESS"}` whatever it decided (applied, empty compensation, duplicate,
//!   hanging), and leaves the decision (a `BarrierOutcome<()>`) in the response's extensions for
//!   logs and metrics; an `Err` answers for itself ([`ResponseError`]: a business refusal should
//!   be [`BranchReply::Failure`], `409 FAILURE`). [`BranchReply`] is a responder too.
//! * **Who is calling**, over the raw body (`docs/PROTOCOL.md`, "Signed branch calls"): in a
//!   middleware, [`raw_body`] reads the body and puts it back for the handler, and
//!   [`settle_caller`] (Confirm, Cancel) and [`try_caller`] (Try) check the coordinator's
//!   signature and the gid token ([`crate::signing`]); a refusal is `401` ([`CallerError`]).
//!   [`signed_callers_only`] is that middleware for an RM that trusts only its secret.
//! * [`error_response`]: the JSON error body `{"error": "<code>", "message": "..."}` of every
//!   refusal above.

use std::future::{ready, Ready};
use std::marker::PhantomData;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::web::Bytes;
use actix_web::{FromRequest, HttpMessage, HttpRequest, HttpResponse, Responder, ResponseError};
use serde_json::json;

/// The branch answer ([`crate::protocol::BranchReply`]), a responder here.
pub use crate::protocol::BranchReply;
use crate::protocol::{BranchQuery, Op};
use crate::signing::{self, GidTokenError, SignatureError, SignatureHeaders, SigningSecret};

/// The JSON error body of a refused call: `{"error": "<machine-readable code>", "message":
/// "<what is wrong, for a human>"}` with `status`.
pub fn error_response(status: StatusCode, code: &str, message: impl Into<String>) -> HttpResponse {
    HttpResponse::build(status).json(json!({ "error": code, "message": message.into() }))
}

/// Why a branch query was refused. Both are `400` with the JSON error body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BranchQueryError {
    /// Missing, malformed or invalid (a gid with a space, `trans_type=saga`): `bad_branch_query`.
    #[error("branch calls need ?gid=&trans_type=tcc&branch_id=&op=: {0}")]
    Malformed(String),
    /// The query's op is not the one the endpoint serves: `op_mismatch`.
    #[error("this endpoint serves op={endpoint}, but the query says op={query}")]
    OpMismatch {
        /// The op the endpoint serves.
        endpoint: Op,
        /// The op in the query.
        query: Op,
    },
}

impl ResponseError for BranchQueryError {
    fn status_code(&self) -> StatusCode {
        StatusCode::BAD_REQUEST
    }

    fn error_response(&self) -> HttpResponse {
        let code = match self {
            BranchQueryError::Malformed(_) => "bad_branch_query",
            BranchQueryError::OpMismatch { .. } => "op_mismatch",
        };
        error_response(self.status_code(), code, self.to_string())
    }
}

/// Reads and validates a raw query string as a [`BranchQuery`].
pub fn parse_branch_query(query: &str) -> Result<BranchQuery, BranchQueryError> {
    actix_web::web::Query::<BranchQuery>::from_query(query)
        .map_err(|e| e.to_string())
        .and_then(|q| {
            let q = q.into_inner();
            q.validate().map(|()| q).map_err(|e| e.0)
        })
        .map_err(BranchQueryError::Malformed)
}

/// Extracts `?gid=&trans_type=&branch_id=&op=` and validates it ([`BranchQuery::validate`]),
/// whatever its op.
impl FromRequest for BranchQuery {
    type Error = BranchQueryError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(parse_branch_query(req.query_string()))
    }
}

/// The op an endpoint serves, as a type: [`TryOp`], [`ConfirmOp`], [`CancelOp`].
pub trait BranchOp {
    /// The op.
    const OP: Op;
}

/// The Try endpoint's op.
#[derive(Debug, Clone, Copy)]
pub enum TryOp {}
/// The Confirm endpoint's op.
#[derive(Debug, Clone, Copy)]
pub enum ConfirmOp {}
/// The Cancel endpoint's op.
#[derive(Debug, Clone, Copy)]
pub enum CancelOp {}

impl BranchOp for TryOp {
    const OP: Op = Op::Try;
}
impl BranchOp for ConfirmOp {
    const OP: Op = Op::Confirm;
}
impl BranchOp for CancelOp {
    const OP: Op = Op::Cancel;
}

/// The branch query of an endpoint serving op `O`: extracted as [`BranchQuery`] is, and refused
/// with `400 op_mismatch` when its `op` is not `O`'s.
#[derive(Debug, Clone)]
pub struct Branch<O: BranchOp> {
    /// The validated query, whose `op` is `O::OP`.
    pub query: BranchQuery,
    op: PhantomData<O>,
}

/// The query of a Try endpoint.
pub type TryBranch = Branch<TryOp>;
/// The query of a Confirm endpoint.
pub type ConfirmBranch = Branch<ConfirmOp>;
/// The query of a Cancel endpoint.
pub type CancelBranch = Branch<CancelOp>;

impl<O: BranchOp> FromRequest for Branch<O> {
    type Error = BranchQueryError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let branch = parse_branch_query(req.query_string()).and_then(|query| {
            if query.op != O::OP {
                return Err(BranchQueryError::OpMismatch {
                    endpoint: O::OP,
                    query: query.op,
                });
            }
            Ok(Branch {
                query,
                op: PhantomData,
            })
        });
        ready(branch)
    }
}

impl BranchReply {
    /// The HTTP status: 200, 409 or 425.
    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.http_status()).expect("200, 409 and 425 are valid statuses")
    }

    /// The response: status and JSON body.
    pub fn to_response(&self) -> HttpResponse {
        HttpResponse::build(self.status()).json(self)
    }
}

impl Responder for BranchReply {
    type Body = BoxBody;
    fn respond_to(self, _: &HttpRequest) -> HttpResponse {
        self.to_response()
    }
}

/// What a branch handler returns: the barrier's decision, or the error that answers instead.
#[cfg(feature = "barrier")]
pub type BranchResult<E> = Result<crate::barrier::BarrierOutcome<()>, E>;

/// `200 {"dtm_result":"SUCCESS"}` whatever the barrier decided, with the decision (as
/// `BarrierOutcome<()>`) in the response's extensions, where a logging or metrics middleware
/// reads it.
#[cfg(feature = "barrier")]
impl<T> Responder for crate::barrier::BarrierOutcome<T> {
    type Body = BoxBody;
    fn respond_to(self, _: &HttpRequest) -> HttpResponse {
        let mut response = BranchReply::Success.to_response();
        response.extensions_mut().insert(self.map(|_| ()));
        response
    }
}

/// The request's raw body, kept in its extensions once read.
#[derive(Debug, Clone)]
struct RawBody(Bytes);

/// The raw body of `req`, for a middleware that checks it (a signature covers its exact bytes):
/// read once (within the app's `PayloadConfig` limit), kept, and put back as the payload so that
/// the handler's extractors read it as if nothing had. Errors: the body could not be read (too
/// large: 413; cut short: 400).
pub async fn raw_body(req: &mut ServiceRequest) -> Result<Bytes, actix_web::Error> {
    let kept = req.extensions().get::<RawBody>().map(|raw| raw.0.clone());
    if let Some(body) = kept {
        return Ok(body);
    }
    let body = req.extract::<Bytes>().await?;
    req.extensions_mut().insert(RawBody(body.clone()));
    req.set_payload(Payload::from(body.clone()));
    Ok(body)
}

/// Who a branch call comes from, as far as its headers prove it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// The call carries the coordinator's valid signature ([`signing::verify`]).
    Coordinator,
    /// The call carries the gid token of its query's gid ([`signing::verify_gid_token`]).
    GidTokenHolder,
    /// The call carries none of these headers: nothing says who sent it. What to do with it is
    /// the RM's policy (refuse it, or ask its coordinator whether the op is due).
    Anonymous,
}

/// Why a caller was refused: `401` with the JSON error body and [`CallerError::code`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallerError {
    /// No valid signature: `missing_signature`, `bad_signature` or `stale_signature`.
    #[error(transparent)]
    Signature(SignatureError),
    /// A gid token that is not the query's gid's: `bad_gid_token`.
    #[error(transparent)]
    GidToken(GidTokenError),
    /// A Try without a gid token, at an RM that requires one ([`signed_callers_only`]):
    /// `missing_gid_token`.
    #[error(
        "this Try carries no gid token (header X-Tcc-Gid-Token): the AP sends its gid's token \
         when it shares this RM's secret"
    )]
    MissingGidToken,
}

impl CallerError {
    /// The `error` code of the answer.
    pub fn code(&self) -> &'static str {
        match self {
            CallerError::Signature(e) => e.code(),
            CallerError::GidToken(e) => e.code(),
            CallerError::MissingGidToken => "missing_gid_token",
        }
    }
}

impl ResponseError for CallerError {
    fn status_code(&self) -> StatusCode {
        StatusCode::UNAUTHORIZED
    }

    fn error_response(&self) -> HttpResponse {
        error_response(self.status_code(), self.code(), self.to_string())
    }
}

/// Middleware for the branch endpoints of an RM that trusts only the secret it shares with its
/// AP and its TM, the app data's `web::Data<SigningSecret>`: each call must prove who sent it
/// before the handler reads anything, so a refused call writes nothing (no barrier row):
///
/// * a Try: its gid's token (`X-Tcc-Gid-Token`, which the AP sends with
///   `TccClient::with_gid_tokens`), else `401 missing_gid_token` or `bad_gid_token`
///   ([`try_caller`]);
/// * a Confirm or Cancel: the coordinator's signature over method, path, query and raw body, or
///   the gid token (which the AP put into `branch_headers`, for a TM that cannot sign), else `401
///   missing_signature`, `bad_signature`, `stale_signature` or `bad_gid_token`
///   ([`settle_caller`]).
///
/// The op is the query's; the endpoint's op extractor ([`TryBranch`], ...) refuses a query that
/// names another op, and answers a query that does not parse with `400`. No secret in the app
/// data: `500`, never an unchecked call. Mount it around the branch routes:
/// `web::scope("/api").wrap(actix_web::middleware::from_fn(tcc::actix::signed_callers_only))`.
///
/// This sample's RMs use [`try_caller`] and [`settle_caller`] in a middleware of their own that
/// may also accept a call carrying neither header when their coordinator vouches for it
/// (`service_kit::callers`); with `TRY_VERIFICATION=token` it decides as this one does.
pub async fn signed_callers_only(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let Some(secret) = req
        .app_data::<actix_web::web::Data<SigningSecret>>()
        .cloned()
    else {
        let e = actix_web::error::ErrorInternalServerError("no SigningSecret in the app data");
        return Ok(req.error_response(e));
    };
    let body = raw_body(&mut req).await?;
    let Ok(query) = parse_branch_query(req.query_string()) else {
        return Ok(next.call(req).await?.map_into_boxed_body());
    };
    let caller = match query.op {
        Op::Try => try_caller(&secret, req.request(), &query.gid).map_err(CallerError::GidToken),
        Op::Confirm | Op::Cancel => settle_caller(&secret, req.request(), &body, Some(&query.gid)),
    };
    match caller {
        Ok(Caller::Coordinator | Caller::GidTokenHolder) => {
            Ok(next.call(req).await?.map_into_boxed_body())
        }
        Ok(Caller::Anonymous) if query.op == Op::Try => {
            Ok(req.error_response(CallerError::MissingGidToken))
        }
        Ok(Caller::Anonymous) => {
            Ok(req.error_response(CallerError::Signature(signing::SignatureError::Missing)))
        }
        Err(refused) => Ok(req.error_response(refused)),
    }
}

/// Who sent a Confirm or Cancel with raw body `body` (`gid`: its query's, `None` when the query
/// does not parse):
///
/// * a valid signature over method, path, query and body: [`Caller::Coordinator`];
/// * otherwise a gid token header: [`Caller::GidTokenHolder`] when it is `gid`'s token,
///   [`CallerError::GidToken`] otherwise (also when there is no valid gid to check it against);
/// * otherwise a signature header that does not verify: [`CallerError::Signature`];
/// * no such header at all: [`Caller::Anonymous`], or `missing_signature` when the query names
///   no valid gid (nothing could then vouch for it).
pub fn settle_caller(
    secret: &SigningSecret,
    req: &HttpRequest,
    body: &[u8],
    gid: Option<&str>,
) -> Result<Caller, CallerError> {
    let Err(signature) = verify_signature(secret, req, body) else {
        return Ok(Caller::Coordinator);
    };
    let signed = [signing::TIMESTAMP_HEADER, signing::SIGNATURE_HEADER]
        .iter()
        .any(|name| req.headers().contains_key(*name));
    match (header(req, signing::GID_TOKEN_HEADER), gid) {
        (Some(token), Some(gid)) => signing::verify_gid_token(secret, gid, token)
            .map(|()| Caller::GidTokenHolder)
            .map_err(CallerError::GidToken),
        (Some(_), None) => Err(CallerError::GidToken(GidTokenError(
            "the query does not name a valid gid",
        ))),
        (None, Some(_)) if !signed => Ok(Caller::Anonymous),
        (None, _) => Err(CallerError::Signature(signature)),
    }
}

/// Who sent a Try of `gid`: [`Caller::GidTokenHolder`] with `gid`'s token, [`Caller::Anonymous`]
/// without a gid token header; `Err` with another token.
pub fn try_caller(
    secret: &SigningSecret,
    req: &HttpRequest,
    gid: &str,
) -> Result<Caller, GidTokenError> {
    match header(req, signing::GID_TOKEN_HEADER) {
        Some(token) => {
            signing::verify_gid_token(secret, gid, token).map(|()| Caller::GidTokenHolder)
        }
        None => Ok(Caller::Anonymous),
    }
}

/// Checks the coordinator's signature of `req` with raw body `body` ([`signing::verify`], at
/// the local clock, [`signing::DEFAULT_MAX_SKEW_SECS`] of skew allowed).
pub fn verify_signature(
    secret: &SigningSecret,
    req: &HttpRequest,
    body: &[u8],
) -> Result<(), SignatureError> {
    let target = match req.query_string() {
        "" => req.path().to_owned(),
        query => format!("{}?{query}", req.path()),
    };
    signing::verify(
        secret,
        req.method().as_str(),
        &target,
        body,
        SignatureHeaders {
            timestamp: header(req, signing::TIMESTAMP_HEADER),
            signature: header(req, signing::SIGNATURE_HEADER),
        },
        signing::now_unix(),
        signing::DEFAULT_MAX_SKEW_SECS,
    )
}

/// The value of header `name`, if any (a value that is not visible ASCII reads as one that
/// cannot match).
fn header<'r>(req: &'r HttpRequest, name: &str) -> Option<&'r str> {
    req.headers()
        .get(name)
        .map(|v| v.to_str().unwrap_or("\u{fffd}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[actix_web::test]
    async fn a_well_formed_branch_query_is_extracted() {
        let req = TestRequest::post()
            .uri("/x?gid=g-1&trans_type=tcc&branch_id=01&op=confirm")
            .to_http_request();
        let q = BranchQuery::extract(&req).await.unwrap();
        assert_eq!(
            (q.gid.as_str(), q.branch_id.as_str(), q.op),
            ("g-1", "01", Op::Confirm)
        );
        let branch = ConfirmBranch::extract(&req).await.unwrap();
        assert_eq!(branch.query, q);
    }

    #[actix_web::test]
    async fn a_missing_or_bad_branch_query_is_a_400_with_a_message() {
        for uri in [
            "/x",
            "/x?gid=g&trans_type=tcc&branch_id=01&op=commit",
            "/x?gid=g%20h&trans_type=tcc&branch_id=01&op=try",
            "/x?gid=g&trans_type=saga&branch_id=01&op=try",
        ] {
            let req = TestRequest::post().uri(uri).to_http_request();
            let err = BranchQuery::extract(&req).await.unwrap_err();
            let resp = err.error_response();
            assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{uri}");
        }
    }

    #[actix_web::test]
    async fn an_endpoint_refuses_another_op() {
        let req = TestRequest::post()
            .uri("/x?gid=g-1&trans_type=tcc&branch_id=01&op=confirm")
            .to_http_request();
        assert_eq!(
            TryBranch::extract(&req).await.unwrap_err(),
            BranchQueryError::OpMismatch {
                endpoint: Op::Try,
                query: Op::Confirm
            }
        );
    }

    /// A service whose every branch endpoint answers 200 behind [`signed_callers_only`], with
    /// the secret (if any) in its app data, and the count of the calls that reached it.
    macro_rules! behind_signed_callers_only {
        ($secret:expr) => {{
            use actix_web::{middleware::from_fn, web, App};
            let reached = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let counter = reached.clone();
            let mut app = App::new();
            if let Some(secret) = $secret {
                app = app.app_data(web::Data::new(SigningSecret::clone(secret)));
            }
            let handler = web::to(move || {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                async { HttpResponse::Ok().finish() }
            });
            let scope = web::scope("/api").wrap(from_fn(signed_callers_only));
            let app = app.service(scope.default_service(handler));
            (actix_web::test::init_service(app).await, reached)
        }};
    }

    #[actix_web::test]
    async fn signed_callers_only_lets_through_only_what_the_secret_proves() {
        use actix_web::test::call_service;
        let secret = SigningSecret::new("s");
        let (app, reached) = behind_signed_callers_only!(Some(&secret));
        let try_uri = "/api/TransOutTry?gid=g1&trans_type=tcc&branch_id=01&op=try";
        let confirm_uri = "/api/TransOutConfirm?gid=g1&trans_type=tcc&branch_id=01&op=confirm";
        let answer = |resp: ServiceResponse<_>| resp.status().as_u16();

        let anonymous_try = TestRequest::post()
            .uri(try_uri)
            .set_payload("{}")
            .to_request();
        let body = actix_web::test::call_and_read_body(&app, anonymous_try).await;
        assert!(String::from_utf8_lossy(&body).contains("missing_gid_token"));
        let other_gid = TestRequest::post()
            .uri(try_uri)
            .insert_header((signing::GID_TOKEN_HEADER, signing::gid_token(&secret, "g2")))
            .to_request();
        assert_eq!(answer(call_service(&app, other_gid).await), 401);
        let unsigned_confirm = TestRequest::post().uri(confirm_uri).to_request();
        assert_eq!(answer(call_service(&app, unsigned_confirm).await), 401);
        assert_eq!(reached.load(std::sync::atomic::Ordering::SeqCst), 0);

        let with_token = TestRequest::post()
            .uri(try_uri)
            .insert_header((signing::GID_TOKEN_HEADER, signing::gid_token(&secret, "g1")))
            .set_payload("{}")
            .to_request();
        assert_eq!(answer(call_service(&app, with_token).await), 200);
        let (ts, sig) = signing::sign(&secret, "POST", confirm_uri, b"{}", signing::now_unix());
        let signed = TestRequest::post()
            .uri(confirm_uri)
            .insert_header((signing::TIMESTAMP_HEADER, ts))
            .insert_header((signing::SIGNATURE_HEADER, sig))
            .set_payload("{}")
            .to_request();
        assert_eq!(answer(call_service(&app, signed).await), 200);
        assert_eq!(reached.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[actix_web::test]
    async fn signed_callers_only_without_a_secret_refuses_everything() {
        let (app, reached) = behind_signed_callers_only!(None::<&SigningSecret>);
        let uri = "/api/TransOutCancel?gid=g1&trans_type=tcc&branch_id=01&op=cancel";
        let req = TestRequest::post().uri(uri).to_request();
        let resp = actix_web::test::call_service(&app, req).await;
        assert_eq!(resp.status().as_u16(), 500);
        assert_eq!(reached.load(std::sync::atomic::Ordering::SeqCst), 0);
    }

    #[test]
    fn replies_carry_dtm_statuses() {
        assert_eq!(BranchReply::Success.status().as_u16(), 200);
        assert_eq!(BranchReply::Failure("x".into()).status().as_u16(), 409);
        assert_eq!(BranchReply::Ongoing.status().as_u16(), 425);
    }

    #[test]
    fn callers_are_told_apart_by_their_headers() {
        let secret = SigningSecret::new("s");
        let target = "/api/X?gid=g1&trans_type=tcc&branch_id=01&op=confirm";
        let (ts, sig) = signing::sign(&secret, "POST", target, b"{}", signing::now_unix());
        let signed = TestRequest::post()
            .uri(target)
            .insert_header((signing::TIMESTAMP_HEADER, ts))
            .insert_header((signing::SIGNATURE_HEADER, sig))
            .to_http_request();
        assert_eq!(
            settle_caller(&secret, &signed, b"{}", Some("g1")),
            Ok(Caller::Coordinator)
        );
        assert_eq!(
            settle_caller(&secret, &signed, b"{ }", Some("g1")).map_err(|e| e.code()),
            Err("bad_signature")
        );
        let token = TestRequest::post()
            .uri(target)
            .insert_header((signing::GID_TOKEN_HEADER, signing::gid_token(&secret, "g1")))
            .to_http_request();
        assert_eq!(
            settle_caller(&secret, &token, b"", Some("g1")),
            Ok(Caller::GidTokenHolder)
        );
        assert_eq!(
            try_caller(&secret, &token, "g1"),
            Ok(Caller::GidTokenHolder)
        );
        assert!(try_caller(&secret, &token, "g2").is_err());
        let bare = TestRequest::post().uri(target).to_http_request();
        assert_eq!(
            settle_caller(&secret, &bare, b"", Some("g1")),
            Ok(Caller::Anonymous)
        );
        assert_eq!(
            settle_caller(&secret, &bare, b"", None).map_err(|e| e.code()),
            Err("missing_signature")
        );
    }
}
