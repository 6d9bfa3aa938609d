//! The request flow every RM branch endpoint shares, so that the bank and the stock services
//! differ only in their business code:
//!
//! 0. the caller is authorized ([`BranchSigning`], [`tcc::signing`]) before anything else is
//!    done:
//!    * on the Confirm and Cancel endpoints, when the RM has a `BRANCH_SIGNING_SECRET`, the call
//!      must carry the coordinator's signature over its method, path, query and raw body, or the
//!      gid token of the query's gid (which the AP put into `branch_headers`, and a DTM-compatible
//!      TM forwards); otherwise `401` (`missing_signature`, `stale_signature`, `bad_signature`,
//!      `bad_gid_token`), counted as `unauthorized`. A call with neither (no such header at all:
//!      a TM that can neither sign nor forward headers) is accepted only when the RM's
//!      coordinator (`DTM_URL`) reports the op due, with this branch registered
//!      ([`crate::coordinator_check::settle_verdict`]): otherwise `401 not_vouched`, or `503
//!      unavailable` when the coordinator cannot be asked (`TRY_VERIFICATION=token|off`: `401
//!      missing_signature` without asking);
//!    * on the Try endpoint, a call carrying a gid token must carry its gid's (`401
//!      bad_gid_token` otherwise); a call without one is accepted only when the RM's coordinator
//!      (`DTM_URL`) reports the gid `prepared` with this branch registered and, when its answer
//!      carries the data registered for the branch, the call's body is that data
//!      ([`crate::coordinator_check::try_verdict`]): otherwise `403 try_not_registered`, counted
//!      as `not_registered`, or `503 unavailable` when the coordinator cannot be asked
//!      (`TRY_VERIFICATION=token`: `401 missing_gid_token` without asking). Nothing is written
//!      or frozen for a refused Try: no barrier row, no hold;
//! 1. the query's `op` must be the one the endpoint serves (`TransOutTry` with `op=confirm` is a
//!    client bug, answered 400 rather than silently run as a Try); a Try's body must be the RM's
//!    [`BranchBody`], a JSON object without unknown fields, with valid values (400 otherwise).
//!    Confirm and Cancel never fail for their body: they act on what their Try reserved, and
//!    read only its demo `fault` when there is a usable one ([`settle_faults`], [`Business`]);
//! 2. when fault injection is off, a Try whose body carries a `fault` is refused with 400, and
//!    a Confirm/Cancel ignores it (it carries the data of a Try that was refused that way, and
//!    must still succeed);
//! 3. the fault injector runs ([`crate::fault::inject`]): it may answer 425, 500, 202 or 307
//!    without doing anything, or turn the business code into a refusal;
//! 4. the business code runs inside the sub-transaction barrier
//!    ([`tcc::barrier::BranchBarrier::call`]), on a pooled connection off the async workers;
//! 5. any barrier outcome (applied, empty compensation, duplicate, hanging) is `200 SUCCESS`; an
//!    error is handed back to the service, whose `ResponseError` maps business refusals to
//!    `409 FAILURE` and the rest to 4xx/5xx;
//! 6. what happened is logged (`gid= branch_id= op= <endpoint>: <outcome>`) and counted in
//!    `tcc_rm_branch_requests_total{op, outcome}` ([`crate::metrics::RmMetrics`]).
//!
//! The service's error type only needs `From` conversions for [`FlowError`], Diesel's error and
//! [`BlockingError`]; [`FlowError`] carries its own HTTP mapping so services delegate to it.
//!
//! An RM plugs in with three pieces: its body type implements [`BranchBody`], its routes call
//! [`configure`] with its three [`Business`] functions (Try's takes the body, Confirm's and
//! Cancel's only the query), and its error type sorts its variants
//! into [`ErrorClass`]es, which answer every RM's shared cases (refusal, bad value, unknown row,
//! flow error, outage, bug) the same way.

use actix_web::http::StatusCode;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse, ResponseError, Route};
use diesel::PgConnection;
use serde::de::DeserializeOwned;
use tcc::actix::{BranchQueryError, BranchReply};
use tcc::barrier::BranchBarrier;
use tcc::protocol::{BranchQuery, Op};
use tcc::signing::{self, GidTokenError, SignatureError, SignatureHeaders, SigningSecret};

use crate::coordinator_check::{
    settle_verdict, try_verdict, CoordinatorClient, QueryError, TryRefusal,
};

use crate::db::{blocking, BlockingError, DbPool};
use crate::fault::{inject, BranchFaults, Injected};
use crate::http::{error_response, is_json_object, not_an_object, payload_error};
use crate::metrics::{RequestOutcome, RmMetrics};

/// The states of what a Try reserved (a bank hold, a stock reservation). The CHECK constraints of
/// the services' migrations list the same three words.
pub mod state {
    /// Reserved by Try; Confirm or Cancel will settle it.
    pub const TENTATIVE: &str = "tentative";
    /// Used by Confirm. Final.
    pub const CONFIRMED: &str = "confirmed";
    /// Released by Cancel. Final.
    pub const CANCELLED: &str = "cancelled";
}

/// Who may call this RM's branch endpoints (step 0 of the module docs): the shared
/// `BRANCH_SIGNING_SECRET` (`None` in demo mode: unsigned Confirm/Cancel calls accepted, no gid
/// token can be checked), and how a call that carries no gid token is checked
/// (`TRY_VERIFICATION`: with the coordinator, refused, or for a Try accepted unchecked).
/// Registered as `web::Data<BranchSigning>` by [`crate::startup::run`]; without it the branch
/// endpoints answer 500 rather than run unchecked.
///
/// **Coordinator-vouched Confirm/Cancel.** A TM that can neither sign nor forward the AP's
/// `branch_headers` (dtmrs 0.13) sends Confirm and Cancel with no signature and no gid token.
/// With the coordinator check on, such a call (no signature header and no token header at all:
/// a present but invalid one stays a 401) is accepted only when the RM's coordinator reports
/// the op due: the gid `submitted` or `succeed` for a Confirm, `aborting` for a Cancel, this
/// branch registered ([`settle_verdict`]). That is safe because an unauthenticated
/// caller can then only make the RM do what the coordinator is about to make it do anyway, a
/// little sooner: Confirm and Cancel are idempotent behind the barrier, so the TM's own call
/// later is a duplicate. What it blocks is a Confirm before `submit` (a Confirm of a transaction
/// its AP may still abort), a Cancel of a submitted transaction and any op of a branch the
/// coordinator does not know. It costs one query per unsigned call; calls from this project's
/// coordinator (always signed) and calls carrying the gid token cost none.
#[derive(Debug, Clone)]
pub struct BranchSigning {
    secret: Option<SigningSecret>,
    max_skew_secs: u64,
    unauthenticated: Unauthenticated,
}

/// What is done with a call carrying no gid token (and, for Confirm/Cancel, no signature).
#[derive(Debug, Clone)]
enum Unauthenticated {
    /// Asked of this coordinator: [`try_verdict`], [`settle_verdict`].
    Coordinator(CoordinatorClient),
    /// Refused (`TRY_VERIFICATION=token`).
    Refused,
    /// A Try accepted unchecked, a Confirm/Cancel refused (`TRY_VERIFICATION=off`).
    TryUnchecked,
}

impl BranchSigning {
    /// Checks Confirm/Cancel calls against `secret` when it is set, allowing
    /// [`signing::DEFAULT_MAX_SKEW_SECS`] of clock skew, and Try calls only for their gid token:
    /// a Try without one is accepted unchecked, a Confirm/Cancel without a signature or a token
    /// refused (no coordinator is asked: see [`BranchSigning::with_try_gate`]).
    pub fn new(secret: Option<SigningSecret>) -> BranchSigning {
        BranchSigning {
            secret,
            max_skew_secs: signing::DEFAULT_MAX_SKEW_SECS,
            unauthenticated: Unauthenticated::TryUnchecked,
        }
    }

    /// These checks, with a call that carries no gid token (nor, for Confirm/Cancel, a
    /// signature) checked with `coordinator` ([`BranchSigning::authorize_try`],
    /// [`BranchSigning::authorize_settle`]); `None`: as [`BranchSigning::new`].
    pub fn with_try_gate(self, coordinator: Option<CoordinatorClient>) -> BranchSigning {
        let unauthenticated = match coordinator {
            Some(coordinator) => Unauthenticated::Coordinator(coordinator),
            None => Unauthenticated::TryUnchecked,
        };
        BranchSigning {
            unauthenticated,
            ..self
        }
    }

    /// These checks, with every call that carries no gid token (nor, for Confirm/Cancel, a
    /// signature) refused without asking any coordinator (`TRY_VERIFICATION=token`). Needs a
    /// secret: without one no token can be checked and every Try is refused.
    pub fn tokens_only(self) -> BranchSigning {
        BranchSigning {
            unauthenticated: Unauthenticated::Refused,
            ..self
        }
    }

    /// Step 0 for a Confirm or Cancel (`op`) with raw body `body`: `Ok` when no secret is set,
    /// when the request signature is valid ([`BranchSigning::check`]), or when the call carries
    /// the gid token of `query`'s gid (`query` is `None` when the query string did not parse:
    /// then only the signature can pass). A call with a gid token but neither a valid signature
    /// nor a valid token is refused for its token ([`CallerRefused::GidToken`]), one with a
    /// signature header for its signature ([`CallerRefused::Signature`]). A call with none of
    /// these headers is vouched for by the coordinator when the check is on (see
    /// [`BranchSigning`]): [`CallerRefused::NotVouched`] when it does not report the op due,
    /// [`CallerRefused::CoordinatorUnavailable`] when it cannot be asked; with the check off or
    /// `token`, [`CallerRefused::Signature`] (`missing_signature`).
    pub async fn authorize_settle(
        &self,
        req: &HttpRequest,
        op: Op,
        body: &[u8],
        query: Option<&BranchQuery>,
    ) -> Result<(), CallerRefused> {
        let Some(secret) = &self.secret else {
            return Ok(());
        };
        let signature = self.check(req, body);
        if signature.is_ok() {
            return Ok(());
        }
        let signed = [signing::TIMESTAMP_HEADER, signing::SIGNATURE_HEADER]
            .iter()
            .any(|name| req.headers().contains_key(*name));
        match (gid_token_header(req), query) {
            (Some(token), Some(query)) => signing::verify_gid_token(secret, &query.gid, token)
                .map_err(CallerRefused::GidToken),
            (Some(_), None) => Err(CallerRefused::GidToken(GidTokenError(
                "the query does not name a valid gid",
            ))),
            (None, Some(query)) if !signed => match &self.unauthenticated {
                Unauthenticated::Coordinator(coordinator) => {
                    let record = coordinator
                        .query(&query.gid)
                        .await
                        .map_err(CallerRefused::CoordinatorUnavailable)?;
                    settle_verdict(&record, op, &query.branch_id)
                        .map_err(|reported| CallerRefused::NotVouched { op, reported })
                }
                Unauthenticated::Refused | Unauthenticated::TryUnchecked => {
                    signature.map_err(CallerRefused::Signature)
                }
            },
            (None, _) => signature.map_err(CallerRefused::Signature),
        }
    }

    /// Step 0 for a Try (the Try gate) with raw body `body`: a call carrying a gid token is
    /// accepted when it is the token of `query`'s gid ([`CallerRefused::GidToken`] otherwise;
    /// without a secret a token cannot be checked and is ignored). A call without one is accepted
    /// when the coordinator reports the gid `prepared` with `query`'s branch registered
    /// ([`CallerRefused::TryNotRegistered`] otherwise) and `body` is the data registered for the
    /// branch, when the coordinator's answer carries it ([`CallerRefused::TryNotRegisteredData`]
    /// otherwise; see [`crate::coordinator_check`] for the race this closes);
    /// [`CallerRefused::CoordinatorUnavailable`] when it cannot be asked. Refused without asking
    /// with `TRY_VERIFICATION=token` ([`CallerRefused::MissingGidToken`]), accepted unchecked with
    /// `TRY_VERIFICATION=off`.
    pub async fn authorize_try(
        &self,
        req: &HttpRequest,
        query: &BranchQuery,
        body: &[u8],
    ) -> Result<(), CallerRefused> {
        if let (Some(secret), Some(token)) = (&self.secret, gid_token_header(req)) {
            return signing::verify_gid_token(secret, &query.gid, token)
                .map_err(CallerRefused::GidToken);
        }
        match &self.unauthenticated {
            Unauthenticated::Coordinator(coordinator) => {
                let record = coordinator
                    .query(&query.gid)
                    .await
                    .map_err(CallerRefused::CoordinatorUnavailable)?;
                try_verdict(&record, &query.branch_id, body).map_err(|refusal| match refusal {
                    TryRefusal::NotRegistered(reported) => {
                        CallerRefused::TryNotRegistered { reported }
                    }
                    TryRefusal::OtherData => CallerRefused::TryNotRegisteredData {
                        branch_id: query.branch_id.clone(),
                    },
                })
            }
            Unauthenticated::Refused => Err(CallerRefused::MissingGidToken),
            Unauthenticated::TryUnchecked => Ok(()),
        }
    }

    /// `true` when a secret is set and Confirm/Cancel calls must be signed.
    pub fn enabled(&self) -> bool {
        self.secret.is_some()
    }

    /// Checks the signature of `req` with raw body `body`; `Ok` when no secret is set.
    pub fn check(&self, req: &HttpRequest, body: &[u8]) -> Result<(), SignatureError> {
        let Some(secret) = &self.secret else {
            return Ok(());
        };
        let header = |name| {
            req.headers()
                .get(name)
                .map(|v| v.to_str().unwrap_or("\u{fffd}"))
        };
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
                timestamp: header(signing::TIMESTAMP_HEADER),
                signature: header(signing::SIGNATURE_HEADER),
            },
            signing::now_unix(),
            self.max_skew_secs,
        )
    }
}

/// The errors of the flow itself, around the business code.
#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    /// The query's op is not the endpoint's. 400 `op_mismatch`.
    #[error("this endpoint serves op={endpoint}, but the query says op={query}")]
    OpMismatch {
        /// The op the endpoint serves.
        endpoint: Op,
        /// The op in the query.
        query: Op,
    },
    /// A Try's body carries a fault but `FAULT_INJECTION=off`. 400 `fault_injection_disabled`.
    #[error("the body carries a fault, but fault injection is off (FAULT_INJECTION=off)")]
    FaultInjectionDisabled,
    /// An `error` fault fired: 500 `injected_error`, nothing done.
    #[error("fault injection: this call fails on purpose")]
    InjectedError,
    /// A `failure` fault fired: a business refusal decided inside the barrier, so the barrier
    /// row rolls back with it. 409 FAILURE.
    #[error("fault injection: this branch refuses on purpose")]
    InjectedFailure,
    /// An `accepted:N` fault fired: `202 {"dtm_result":"SUCCESS"}`, nothing done. Not an error
    /// to whoever reads only the body, which is the point: the TM and the AP read only exactly
    /// 200 as success (as DTM does), so they retry or abort.
    #[error("fault injection: accepted (202) without doing anything")]
    InjectedAccepted,
    /// A `redirect:N` fault fired: `307` with `Location:` [`crate::fault::REDIRECT_LOCATION`] and
    /// the JSON error body `injected_redirect`, nothing done. Never followed by the TM or the AP.
    #[error("fault injection: redirected (307) without doing anything")]
    InjectedRedirect,
}

impl ResponseError for FlowError {
    fn status_code(&self) -> StatusCode {
        match self {
            FlowError::OpMismatch { .. } | FlowError::FaultInjectionDisabled => {
                StatusCode::BAD_REQUEST
            }
            FlowError::InjectedError => StatusCode::INTERNAL_SERVER_ERROR,
            FlowError::InjectedFailure => StatusCode::CONFLICT,
            FlowError::InjectedAccepted => StatusCode::ACCEPTED,
            FlowError::InjectedRedirect => StatusCode::TEMPORARY_REDIRECT,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let code = match self {
            FlowError::OpMismatch { .. } => "op_mismatch",
            FlowError::FaultInjectionDisabled => "fault_injection_disabled",
            FlowError::InjectedError => "injected_error",
            FlowError::InjectedFailure => {
                return BranchReply::Failure(self.to_string()).to_response()
            }
            FlowError::InjectedAccepted => {
                let mut response = BranchReply::Success.to_response();
                *response.status_mut() = StatusCode::ACCEPTED;
                return response;
            }
            FlowError::InjectedRedirect => {
                let mut response =
                    error_response(self.status_code(), "injected_redirect", self.to_string());
                response.headers_mut().insert(
                    actix_web::http::header::LOCATION,
                    actix_web::http::header::HeaderValue::from_static(
                        crate::fault::REDIRECT_LOCATION,
                    ),
                );
                return response;
            }
        };
        error_response(self.status_code(), code, self.to_string())
    }
}

/// How an RM's error answers over HTTP. Each RM's error type sorts its variants into these
/// classes in one `match`, and its `ResponseError` impl answers with [`ErrorClass::status_code`]
/// and [`ErrorClass::error_response`].
#[derive(Debug, Clone, Copy)]
pub enum ErrorClass<'a> {
    /// A business refusal: `409 {"dtm_result":"FAILURE","message":<the error>}`. From a Try it
    /// makes the AP abort; from Confirm/Cancel it is a protocol violation, which the TM retries
    /// and alerts on.
    Refusal,
    /// A well-formed body with a value out of range: 400 `invalid_request`, the error as message.
    InvalidRequest,
    /// A view of a row that does not exist: 404 with this code (`account_not_found`), the error
    /// as message.
    NotFound(&'static str),
    /// The flow's own errors, which answer for themselves.
    Flow(&'a FlowError),
    /// No pooled connection, or the blocking task failed: 503 `unavailable` with this message
    /// (generic: it tells the caller to retry, nothing about the internals).
    Unavailable(&'static str),
    /// Anything else (a failed query, rows contradicting an invariant): 500 `internal` with this
    /// generic message; the error itself is logged (with the gid, by the branch flow), never
    /// answered.
    Internal(&'static str),
}

impl ErrorClass<'_> {
    /// The HTTP status of the class: 409, 400, 404, the flow error's, 503 or 500.
    pub fn status_code(&self) -> StatusCode {
        match self {
            ErrorClass::Refusal => StatusCode::CONFLICT,
            ErrorClass::InvalidRequest => StatusCode::BAD_REQUEST,
            ErrorClass::NotFound(_) => StatusCode::NOT_FOUND,
            ErrorClass::Flow(e) => e.status_code(),
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
            ErrorClass::Flow(e) => e.error_response(),
            ErrorClass::Unavailable(message) => error_response(status, "unavailable", *message),
            // Not logged here, where the gid is unknown: the branch flow ([`run`]) and
            // [`crate::http::view_route`] log every 5xx with what it was about.
            ErrorClass::Internal(message) => error_response(status, "internal", *message),
        }
    }
}

/// The business code of one branch op, which runs inside the barrier's database transaction; an
/// `Err` rolls the transaction (barrier row included) back. The variant is the op the endpoint
/// serves.
///
/// Only a Try reads the body. Confirm and Cancel act on what their Try reserved (a hold, a
/// reservation), found by the query's gid and branch_id: the body the TM sends them is the data
/// the AP registered, which this RM's version may no longer parse (a renamed field, an extra
/// one, `null`), and a Confirm or Cancel refused for it would be retried forever while the funds
/// stay frozen. So they never see it, and a body they cannot use is not an error.
pub enum Business<B: BranchBody> {
    /// Try: checks and reserves what the body asks for.
    Try(fn(&mut PgConnection, &BranchQuery, &B) -> Result<(), B::Error>),
    /// Confirm: uses what the Try of the query's branch reserved.
    Confirm(fn(&mut PgConnection, &BranchQuery) -> Result<(), B::Error>),
    /// Cancel: releases what the Try of the query's branch reserved (nothing when it never ran).
    Cancel(fn(&mut PgConnection, &BranchQuery) -> Result<(), B::Error>),
}

impl<B: BranchBody> Business<B> {
    /// The op this business code serves.
    pub fn op(&self) -> Op {
        match self {
            Business::Try(_) => Op::Try,
            Business::Confirm(_) => Op::Confirm,
            Business::Cancel(_) => Op::Cancel,
        }
    }
}

// By hand: a derive would require `B: Copy`, but only function pointers are held.
impl<B: BranchBody> Clone for Business<B> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<B: BranchBody> Copy for Business<B> {}

/// The JSON body of an RM's Try endpoint. Confirm and Cancel read only its demo `fault`, and
/// leniently ([`settle_faults`]).
pub trait BranchBody: DeserializeOwned + Send + 'static {
    /// The RM's one error type.
    type Error: From<FlowError>
        + From<diesel::result::Error>
        + From<BlockingError>
        + ResponseError
        + Send
        + 'static;

    /// Checks the values a Try relies on (ids and amounts > 0).
    fn validate(&self) -> Result<(), Self::Error>;

    /// The body's demo `fault` ([`crate::fault`]), if any.
    fn faults(&self) -> Option<&BranchFaults>;
}

/// Registers an RM's three branch endpoints, `POST /api/{name}` for each `(name, business)`:
/// the query a [`BranchQuery`], Try's body `B` as a JSON object (unknown fields refused,
/// [`BranchBody::validate`]d), Confirm's and Cancel's any bytes (only a `fault` is read from
/// them, [`settle_faults`]); each call runs through [`run`] with the service's `FAULT_INJECTION`
/// setting.
///
/// Every request is counted in the [`RmMetrics`] of the app data (`web::Data<RmMetrics>`,
/// registered by [`crate::startup::run`]; without it the endpoints answer 500), under the op the
/// endpoint serves: malformed queries and bodies and refused values as `bad_request`, the rest as
/// [`run`] decides. Malformed requests are logged at warn with the raw `gid` and `branch_id` of
/// the query string (`-` when absent).
pub fn configure<B: BranchBody>(
    cfg: &mut web::ServiceConfig,
    fault_injection: bool,
    endpoints: [(&'static str, Business<B>); 3],
) {
    for (endpoint, business) in endpoints {
        cfg.route(
            &format!("/api/{endpoint}"),
            route(endpoint, business, fault_injection),
        );
    }
}

/// The OpenAPI description of the branch endpoints [`configure`] registers from the same
/// `endpoints` table: `POST /api/{name}` for each, with the [`BranchQuery`] query parameters,
/// `B`'s schema as Try's body (any JSON, optional, for Confirm and Cancel) and every answer of
/// the flow ([`crate::openapi::branch_operation`]).
pub fn openapi<B: BranchBody + utoipa::ToSchema>(
    endpoints: &[(&'static str, Business<B>)],
) -> utoipa::openapi::OpenApi {
    use utoipa::openapi::path::{HttpMethod, ParameterIn, PathItem};
    use utoipa::IntoParams;
    let mut paths = utoipa::openapi::PathsBuilder::new();
    for (name, business) in endpoints {
        let parameters = BranchQuery::into_params(|| Some(ParameterIn::Query));
        let operation =
            crate::openapi::branch_operation(name, business.op(), &B::name(), parameters);
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

/// A `POST` route running `business` through [`run`].
fn route<B: BranchBody>(
    endpoint: &'static str,
    business: Business<B>,
    fault_injection: bool,
) -> Route {
    let op = business.op();
    web::post().to(
        move |req: HttpRequest,
              pool: web::Data<DbPool>,
              metrics: web::Data<RmMetrics>,
              signing: web::Data<BranchSigning>,
              query: Result<BranchQuery, BranchQueryError>,
              raw: Result<web::Bytes, actix_web::Error>| async move {
            // Extracted as `Result`s so that malformed requests are counted and logged too.
            // The body is read raw first: the signature covers its exact bytes.
            let raw = raw.map_err(|e| malformed(&req, endpoint, op, &metrics, payload_error(e)))?;
            // Step 0: who is calling. Confirm/Cancel before their query is even read, Try once
            // its gid and branch_id are known; a refused call writes nothing.
            if op != Op::Try {
                signing
                    .authorize_settle(&req, op, &raw, query.as_ref().ok())
                    .await
                    .map_err(|e| refuse_caller(&req, endpoint, op, &metrics, e))?;
            }
            let query = query.map_err(|e| malformed(&req, endpoint, op, &metrics, e.into()))?;
            if op == Op::Try {
                signing
                    .authorize_try(&req, &query, &raw)
                    .await
                    .map_err(|e| refuse_caller(&req, endpoint, op, &metrics, e))?;
            }
            let call = |faults| BranchCall {
                endpoint,
                op,
                query: &query,
                faults,
                fault_injection,
                metrics: Some(&metrics),
            };
            let q = query.clone();
            let settle = match business {
                Business::Try(business) => {
                    // The JSON extractor over the buffered bytes: the limit, content-type check
                    // and JSON error answers of `crate::http::json_config`.
                    let body = web::Json::<B>::from_request(&req, &mut raw.clone().into())
                        .await
                        .map_err(|e| malformed(&req, endpoint, op, &metrics, e))?
                        .into_inner();
                    if !is_json_object(&raw) {
                        return Err(malformed(&req, endpoint, op, &metrics, not_an_object()));
                    }
                    let faults = body.faults().cloned();
                    let call = call(faults.as_ref());
                    if let Err(e) = body.validate() {
                        return report(call, Err(e)).map_err(actix_web::Error::from);
                    }
                    return run(&pool, call, move |conn| business(conn, &q, &body))
                        .await
                        .map_err(|e: B::Error| actix_web::Error::from(e));
                }
                Business::Confirm(settle) | Business::Cancel(settle) => settle,
            };
            let faults = settle_faults(&raw, &query);
            run(&pool, call(faults.as_ref()), move |conn| settle(conn, &q))
                .await
                .map_err(|e: B::Error| actix_web::Error::from(e))
        },
    )
}

/// The demo `fault` of a Confirm's or Cancel's body ([`crate::fault`]): the body's `fault` field
/// when the body is a JSON object whose `fault` parses, its other fields ignored; `None`
/// otherwise. A body without a usable `fault` is not an error (see [`Business`]): it is logged
/// at debug level, with the branch, and the call goes on.
pub fn settle_faults(raw: &[u8], query: &BranchQuery) -> Option<BranchFaults> {
    /// The one field a Confirm or Cancel reads; unknown fields are ignored.
    #[derive(serde::Deserialize)]
    struct FaultOnly {
        #[serde(default)]
        fault: Option<BranchFaults>,
    }
    // An object only: serde would also read a struct from a JSON array of its fields in order.
    let parsed = if is_json_object(raw) {
        serde_json::from_slice::<FaultOnly>(raw).map_err(|e| e.to_string())
    } else {
        Err("not a JSON object".to_owned())
    };
    match parsed {
        Ok(body) => body.fault,
        Err(why) => {
            log::debug!(
                "gid={} branch_id={} op={} body not read ({why}): no fault; the op acts on the \
                 branch's reservation alone",
                query.gid,
                query.branch_id,
                query.op
            );
            None
        }
    }
}

/// The value of the request's [`signing::GID_TOKEN_HEADER`], if any (a value that is not visible
/// ASCII reads as a token that cannot match).
fn gid_token_header(req: &HttpRequest) -> Option<&str> {
    req.headers()
        .get(signing::GID_TOKEN_HEADER)
        .map(|v| v.to_str().unwrap_or("\u{fffd}"))
}

/// Why step 0 refused a branch call (see [`BranchSigning`]). Nothing was done for it.
#[derive(Debug, thiserror::Error)]
pub enum CallerRefused {
    /// A Confirm/Cancel without a valid signature or gid token: 401 `missing_signature`,
    /// `bad_signature` or `stale_signature` (one with neither header present goes to the
    /// coordinator instead when the check is on: [`CallerRefused::NotVouched`]).
    #[error(transparent)]
    Signature(SignatureError),
    /// A gid token that is not the query's gid's: 401 `bad_gid_token`.
    #[error(transparent)]
    GidToken(GidTokenError),
    /// A Try without a gid token under `TRY_VERIFICATION=token`: 401 `missing_gid_token`.
    #[error(
        "this Try carries no gid token (header X-Tcc-Gid-Token), and this RM accepts a Try only \
         with its gid's token (TRY_VERIFICATION=token)"
    )]
    MissingGidToken,
    /// A Confirm/Cancel with neither a signature nor a gid token whose op the coordinator does
    /// not report due (see [`BranchSigning`]): 401 `not_vouched`. `reported` says what it
    /// reported.
    #[error(
        "this {op} carries neither the coordinator's signature nor the gid token, and the \
         coordinator does not report it due: {reported}. Without them a Confirm is accepted only \
         once the global transaction is submitted or succeed, a Cancel once it is aborting or \
         failed, with this branch registered"
    )]
    NotVouched {
        /// The op called (confirm or cancel).
        op: Op,
        /// What the coordinator reported ([`crate::coordinator_check::GlobalRecord::describe`]).
        reported: String,
    },
    /// A Try without a gid token whose gid the coordinator does not report `prepared` with this
    /// branch registered: 403 `try_not_registered`. `reported` says what it reported.
    #[error(
        "this Try is not part of a global transaction the coordinator is running: {reported}. \
         An AP must prepare the transaction and register the branch before calling its Try"
    )]
    TryNotRegistered {
        /// What the coordinator reported ([`crate::coordinator_check::GlobalRecord::describe`]).
        reported: String,
    },
    /// A Try without a gid token of a branch registered under a `prepared` gid, whose body is
    /// not the data the coordinator reports registered for that branch
    /// ([`crate::coordinator_check::same_data`]): 403 `try_not_registered`. The registered data
    /// is not repeated in the message.
    #[error(
        "this Try's body is not the data registered for branch {branch_id} of this global \
         transaction: a Try without a gid token must carry exactly the data its AP registered \
         with the branch (compared as JSON values)"
    )]
    TryNotRegisteredData {
        /// The branch called.
        branch_id: String,
    },
    /// A Try without a gid token, or a Confirm/Cancel with neither a signature nor a token,
    /// while the coordinator cannot be asked: 503 `unavailable` (transient: the AP aborts a Try,
    /// the TM retries a Confirm/Cancel; never a false success).
    #[error("{0}; try again later")]
    CoordinatorUnavailable(QueryError),
}

impl CallerRefused {
    /// 401, 403 or 503.
    pub fn status_code(&self) -> StatusCode {
        match self {
            CallerRefused::Signature(_)
            | CallerRefused::GidToken(_)
            | CallerRefused::MissingGidToken
            | CallerRefused::NotVouched { .. } => StatusCode::UNAUTHORIZED,
            CallerRefused::TryNotRegistered { .. } | CallerRefused::TryNotRegisteredData { .. } => {
                StatusCode::FORBIDDEN
            }
            CallerRefused::CoordinatorUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The `error` code of the answer: the signature's, `bad_gid_token`, `missing_gid_token`,
    /// `not_vouched`, `try_not_registered` or `unavailable`.
    pub fn code(&self) -> &'static str {
        match self {
            CallerRefused::Signature(e) => e.code(),
            CallerRefused::GidToken(e) => e.code(),
            CallerRefused::MissingGidToken => "missing_gid_token",
            CallerRefused::NotVouched { .. } => "not_vouched",
            CallerRefused::TryNotRegistered { .. } | CallerRefused::TryNotRegisteredData { .. } => {
                "try_not_registered"
            }
            CallerRefused::CoordinatorUnavailable(_) => "unavailable",
        }
    }
}

/// Counts (401 `unauthorized`, 403 `not_registered`, 503 `error`) and logs a branch call refused
/// at step 0, and answers it: `{"error": <CallerRefused::code>, "message": ...}` with
/// [`CallerRefused::status_code`].
fn refuse_caller(
    req: &HttpRequest,
    endpoint: &str,
    op: Op,
    metrics: &RmMetrics,
    error: CallerRefused,
) -> actix_web::Error {
    let status = error.status_code();
    metrics.record(op, RequestOutcome::of_error_status(status));
    let raw = |name| raw_query_value(req.query_string(), name).unwrap_or("-");
    log::warn!(
        "gid={} branch_id={} op={op} {endpoint} answered {} ({}): {error}; peer {}",
        raw("gid"),
        raw("branch_id"),
        status.as_u16(),
        error.code(),
        req.peer_addr()
            .map_or_else(|| "-".to_owned(), |a| a.ip().to_string())
    );
    let response = error_response(status, error.code(), error.to_string());
    actix_web::error::InternalError::from_response(error, response).into()
}

/// Counts and logs a request whose query or body could not be extracted, and hands back the
/// extractor's error (its JSON 4xx answer).
fn malformed(
    req: &HttpRequest,
    endpoint: &str,
    op: Op,
    metrics: &RmMetrics,
    error: actix_web::Error,
) -> actix_web::Error {
    let status = error.as_response_error().status_code();
    metrics.record(op, RequestOutcome::of_error_status(status));
    let raw = |name| raw_query_value(req.query_string(), name).unwrap_or("-");
    log::warn!(
        "gid={} branch_id={} op={op} {endpoint} answered {}: {error}",
        raw("gid"),
        raw("branch_id"),
        status.as_u16()
    );
    error
}

/// The first value of `name` in a raw query string, still percent-encoded (so it cannot break a
/// log line), at most 128 characters; `None` when absent or empty.
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

/// One incoming branch call, as the flow needs it.
#[derive(Debug, Clone, Copy)]
pub struct BranchCall<'a> {
    /// The endpoint's name, for logs (`TransOutTry`).
    pub endpoint: &'static str,
    /// The op the endpoint serves.
    pub op: Op,
    /// The extracted branch query.
    pub query: &'a BranchQuery,
    /// The body's `fault`, if any.
    pub faults: Option<&'a BranchFaults>,
    /// The service's `FAULT_INJECTION` setting.
    pub fault_injection: bool,
    /// Where the outcome is counted (`tcc_rm_branch_requests_total{op, outcome}`, under
    /// [`BranchCall::op`]); `None` counts nothing.
    pub metrics: Option<&'a RmMetrics>,
}

/// Runs `business` for `call` through steps 1-6 of the module docs.
///
/// `Ok(BranchReply::Success)` whatever the barrier decided (`Ok(BranchReply::Ongoing)` when an
/// `ongoing` fault fired). `Err` is the business code's error, a [`FlowError`], a Diesel error or
/// a [`BlockingError`], all converted into `E`. Every outcome is logged here with `gid=`,
/// `branch_id=` and `op=` (5xx at error level, other errors at warn) and counted in
/// `call.metrics` as a [`RequestOutcome`]: the barrier's decision for a success, `ongoing`, or
/// the error's class by HTTP status (409 `refused`, 5xx `error`, an injected 202 or 307
/// `misbehaved`, other 4xx `bad_request`). The injected `accepted:N` and `redirect:N` answers
/// take the error path ([`FlowError::InjectedAccepted`], [`FlowError::InjectedRedirect`]):
/// nothing was done, whatever their status says.
pub async fn run<T, E, F>(
    pool: &DbPool,
    call: BranchCall<'_>,
    business: F,
) -> Result<BranchReply, E>
where
    F: FnOnce(&mut PgConnection) -> Result<T, E> + Send + 'static,
    T: Send + 'static,
    E: From<FlowError>
        + From<diesel::result::Error>
        + From<BlockingError>
        + ResponseError
        + Send
        + 'static,
{
    let result = run_inner(pool, call, business).await;
    report(call, result)
}

/// Logs and counts what became of `call`, and hands back the answer.
fn report<E: ResponseError>(
    call: BranchCall<'_>,
    result: Result<(BranchReply, RequestOutcome), E>,
) -> Result<BranchReply, E> {
    let q = call.query;
    let outcome = match &result {
        Ok((_, outcome)) => *outcome,
        Err(e) => RequestOutcome::of_error_status(e.status_code()),
    };
    if let Some(metrics) = call.metrics {
        metrics.record(call.op, outcome);
    }
    match &result {
        Ok(_) => log::info!(
            "gid={} branch_id={} op={} {}: {outcome}{}",
            q.gid,
            q.branch_id,
            q.op,
            call.endpoint,
            if outcome == RequestOutcome::Ongoing {
                " (injected)"
            } else {
                ""
            }
        ),
        Err(e) if e.status_code().is_server_error() => log::error!(
            "gid={} branch_id={} op={} {} failed: {e}",
            q.gid,
            q.branch_id,
            q.op,
            call.endpoint
        ),
        Err(e) => log::warn!(
            "gid={} branch_id={} op={} {} answered {}: {e}",
            q.gid,
            q.branch_id,
            q.op,
            call.endpoint,
            e.status_code().as_u16()
        ),
    }
    result.map(|(reply, _)| reply)
}

/// Steps 1-4; `Ok` carries the reply and, for the log line and the metrics, what happened.
async fn run_inner<T, E, F>(
    pool: &DbPool,
    call: BranchCall<'_>,
    business: F,
) -> Result<(BranchReply, RequestOutcome), E>
where
    F: FnOnce(&mut PgConnection) -> Result<T, E> + Send + 'static,
    T: Send + 'static,
    E: From<FlowError> + From<diesel::result::Error> + From<BlockingError> + Send + 'static,
{
    if call.query.op != call.op {
        return Err(FlowError::OpMismatch {
            endpoint: call.op,
            query: call.query.op,
        }
        .into());
    }
    let faults = match call.faults.filter(|f| !f.is_empty()) {
        Some(_) if !call.fault_injection && call.op == Op::Try => {
            return Err(FlowError::FaultInjectionDisabled.into());
        }
        // The TM sends Confirm/Cancel the data the AP registered, so refusing them would retry
        // forever a Cancel whose Try was already refused for carrying the fault.
        Some(_) if !call.fault_injection => {
            log::warn!(
                "gid={} branch_id={} op={} fault injection is off: ignoring the body's fault",
                call.query.gid,
                call.query.branch_id,
                call.query.op
            );
            None
        }
        faults => faults,
    };
    let refuse = match inject(pool, call.query, faults).await? {
        Injected::Proceed => false,
        Injected::Refuse => true,
        Injected::Ongoing => return Ok((BranchReply::Ongoing, RequestOutcome::Ongoing)),
        Injected::Error => return Err(FlowError::InjectedError.into()),
        Injected::Accepted => return Err(FlowError::InjectedAccepted.into()),
        Injected::Redirect => return Err(FlowError::InjectedRedirect.into()),
    };
    let query = call.query.clone();
    let outcome = blocking(pool, move |conn| {
        BranchBarrier::new(&query).call(conn, |conn| {
            if refuse {
                Err(E::from(FlowError::InjectedFailure))
            } else {
                business(conn).map(|_| ())
            }
        })
    })
    .await??;
    Ok((BranchReply::Success, RequestOutcome::of_barrier(&outcome)))
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
