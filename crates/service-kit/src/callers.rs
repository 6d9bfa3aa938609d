//! Who may call an RM's branch endpoints: the [`check_caller`] middleware, which runs before the
//! handler reads anything, so that a refused call writes nothing (no barrier row, no hold).
//!
//! * **Confirm and Cancel**, when the RM has a `BRANCH_SIGNING_SECRET`: the call must carry the
//!   coordinator's signature over its method, path, query and raw body, or the gid token of the
//!   query's gid (which the AP put into `branch_headers`, and a DTM-compatible TM forwards)
//!   ([`tcc::actix::settle_caller`]); otherwise `401` (`missing_signature`, `stale_signature`,
//!   `bad_signature`, `bad_gid_token`). A call with neither header at all (a TM that can neither
//!   sign nor forward headers) is accepted only when the RM's coordinator (`DTM_URL`) reports the
//!   op due, with this branch registered ([`settle_verdict`]): otherwise `401 not_vouched`, or
//!   `503 unavailable` when the coordinator cannot be asked (`TRY_VERIFICATION=token|off`: `401
//!   missing_signature` without asking). Without a secret (demo mode) every Confirm and Cancel
//!   is accepted.
//! * **Try**: a call carrying a gid token must carry its gid's (`401 bad_gid_token` otherwise); a
//!   call without one is accepted only when the RM's coordinator reports the gid `prepared` with
//!   this branch registered and, when its answer carries the data registered for the branch, the
//!   call's body is that data ([`try_verdict`]): otherwise `403 try_not_registered`, or `503
//!   unavailable` when the coordinator cannot be asked (`TRY_VERIFICATION=token`: `401
//!   missing_gid_token` without asking; `off`: accepted unchecked).
//!
//! **Coordinator-vouched Confirm/Cancel.** Accepting an unauthenticated call that the coordinator
//! reports due is safe because such a caller can then only make the RM do what the coordinator is
//! about to make it do anyway, a little sooner: Confirm and Cancel are idempotent behind the
//! barrier, so the TM's own call later is a duplicate. What it blocks is a Confirm before
//! `submit` (a Confirm of a transaction its AP may still abort), a Cancel of a submitted
//! transaction and any op of a branch the coordinator does not know. It costs one query per
//! unsigned call; calls from this project's coordinator (always signed) and calls carrying the
//! gid token cost none.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{web, HttpResponse, ResponseError};
use tcc::actix::{parse_branch_query, raw_body, settle_caller, try_caller, Caller, CallerError};
use tcc::protocol::{BranchQuery, Op};
use tcc::signing::SigningSecret;

use crate::coordinator_check::{
    settle_verdict, try_verdict, CoordinatorClient, QueryError, TryRefusal, TryVerification,
};
use crate::http::{error_response, payload_error};

/// Who may call this RM's branch endpoints (see the module docs): the shared
/// `BRANCH_SIGNING_SECRET` (`None` in demo mode: unsigned Confirm/Cancel calls accepted, no gid
/// token can be checked), and what is done with a call that carries no gid token
/// (`TRY_VERIFICATION`). Registered as `web::Data<BranchCallers>` by [`crate::startup::run`];
/// without it the branch endpoints answer 500 rather than run unchecked.
#[derive(Debug, Clone)]
pub struct BranchCallers {
    secret: Option<SigningSecret>,
    anonymous: Anonymous,
}

/// What is done with a call carrying no gid token (and, for Confirm/Cancel, no signature).
#[derive(Debug, Clone)]
enum Anonymous {
    /// Asked of this coordinator: [`try_verdict`], [`settle_verdict`].
    AskCoordinator(CoordinatorClient),
    /// Refused (`TRY_VERIFICATION=token`).
    Refused,
    /// A Try accepted unchecked, a Confirm/Cancel refused (`TRY_VERIFICATION=off`).
    TryUnchecked,
}

impl BranchCallers {
    /// The checks of `secret` with `verification`'s policy for calls without a gid token: asking
    /// the coordinator at `dtm_url` (queried with [`CoordinatorClient::DEFAULT_TIMEOUT`]),
    /// refusing them, or accepting a Try unchecked.
    pub fn new(
        secret: Option<SigningSecret>,
        verification: TryVerification,
        dtm_url: &str,
    ) -> BranchCallers {
        let anonymous = match verification {
            TryVerification::Coordinator => Anonymous::AskCoordinator(CoordinatorClient::new(
                dtm_url,
                CoordinatorClient::DEFAULT_TIMEOUT,
            )),
            TryVerification::Token => Anonymous::Refused,
            TryVerification::Off => Anonymous::TryUnchecked,
        };
        BranchCallers { secret, anonymous }
    }

    /// A Confirm or Cancel (`op`) with raw body `body`: `Ok` when no secret is set, or for the
    /// callers [`tcc::actix::settle_caller`] recognises; an anonymous call (neither header) is
    /// vouched for by the coordinator when the policy asks it.
    pub async fn authorize_settle(
        &self,
        req: &actix_web::HttpRequest,
        op: Op,
        body: &[u8],
    ) -> Result<(), CallerRefused> {
        let Some(secret) = &self.secret else {
            return Ok(());
        };
        let query = parse_branch_query(req.query_string()).ok();
        let gid = query.as_ref().map(|q| q.gid.as_str());
        match settle_caller(secret, req, body, gid).map_err(CallerRefused::Header)? {
            Caller::Coordinator | Caller::GidTokenHolder => Ok(()),
            Caller::Anonymous => match (&self.anonymous, query) {
                (Anonymous::AskCoordinator(coordinator), Some(query)) => {
                    let record = coordinator
                        .query(&query.gid)
                        .await
                        .map_err(CallerRefused::CoordinatorUnavailable)?;
                    settle_verdict(&record, op, &query.branch_id)
                        .map_err(|reported| CallerRefused::NotVouched { op, reported })
                }
                _ => Err(CallerRefused::Header(CallerError::Signature(
                    tcc::signing::SignatureError::Missing,
                ))),
            },
        }
    }

    /// A Try of `query` with raw body `body` (the Try gate): a gid token must be its gid's;
    /// without one the policy decides (see the module docs). Without a secret a token cannot be
    /// checked, and the call counts as anonymous.
    pub async fn authorize_try(
        &self,
        req: &actix_web::HttpRequest,
        query: &BranchQuery,
        body: &[u8],
    ) -> Result<(), CallerRefused> {
        let caller = match &self.secret {
            Some(secret) => try_caller(secret, req, &query.gid)
                .map_err(|e| CallerRefused::Header(CallerError::GidToken(e)))?,
            None => Caller::Anonymous,
        };
        if caller != Caller::Anonymous {
            return Ok(());
        }
        match &self.anonymous {
            Anonymous::AskCoordinator(coordinator) => {
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
            Anonymous::Refused => Err(CallerRefused::MissingGidToken),
            Anonymous::TryUnchecked => Ok(()),
        }
    }
}

/// Why a branch call was refused before its handler ran (see [`BranchCallers`]). Nothing was
/// done for it.
#[derive(Debug, thiserror::Error)]
pub enum CallerRefused {
    /// A signature or gid token header that does not verify, or (a Confirm/Cancel) neither
    /// header while no coordinator is asked: 401 with [`CallerError::code`].
    #[error(transparent)]
    Header(CallerError),
    /// A Try without a gid token under `TRY_VERIFICATION=token`: 401 `missing_gid_token`.
    #[error(
        "this Try carries no gid token (header X-Tcc-Gid-Token), and this RM accepts a Try only \
         with its gid's token (TRY_VERIFICATION=token)"
    )]
    MissingGidToken,
    /// A Confirm/Cancel with neither a signature nor a gid token whose op the coordinator does
    /// not report due: 401 `not_vouched`. `reported` says what it reported.
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
    /// A call the coordinator had to vouch for while it cannot be asked: 503 `unavailable`
    /// (transient: the AP aborts a Try, the TM retries a Confirm/Cancel; never a false success).
    #[error("{0}; try again later")]
    CoordinatorUnavailable(QueryError),
}

impl CallerRefused {
    /// The `error` code of the answer: the header's, `missing_gid_token`, `not_vouched`,
    /// `try_not_registered` or `unavailable`.
    pub fn code(&self) -> &'static str {
        match self {
            CallerRefused::Header(e) => e.code(),
            CallerRefused::MissingGidToken => "missing_gid_token",
            CallerRefused::NotVouched { .. } => "not_vouched",
            CallerRefused::TryNotRegistered { .. } | CallerRefused::TryNotRegisteredData { .. } => {
                "try_not_registered"
            }
            CallerRefused::CoordinatorUnavailable(_) => "unavailable",
        }
    }
}

impl ResponseError for CallerRefused {
    /// 401, 403 or 503.
    fn status_code(&self) -> StatusCode {
        match self {
            CallerRefused::Header(_)
            | CallerRefused::MissingGidToken
            | CallerRefused::NotVouched { .. } => StatusCode::UNAUTHORIZED,
            CallerRefused::TryNotRegistered { .. } | CallerRefused::TryNotRegisteredData { .. } => {
                StatusCode::FORBIDDEN
            }
            CallerRefused::CoordinatorUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        error_response(self.status_code(), self.code(), self.to_string())
    }
}

/// The middleware of a branch endpoint serving `op`: checks the caller with the
/// `web::Data<BranchCallers>` of the app data ([`BranchCallers::authorize_settle`],
/// [`BranchCallers::authorize_try`]) over the raw body, before the handler reads anything. A
/// Try whose query does not parse goes on to the handler, whose extractor answers it `400`.
pub async fn check_caller(
    op: Op,
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let body = match raw_body(&mut req).await {
        Ok(body) => body,
        Err(e) => return Ok(req.error_response(payload_error(e))),
    };
    let Some(callers) = req.app_data::<web::Data<BranchCallers>>().cloned() else {
        let e = actix_web::error::ErrorInternalServerError("no BranchCallers in the app data");
        return Ok(req.error_response(e));
    };
    let checked = match op {
        Op::Try => match parse_branch_query(req.query_string()) {
            Ok(query) => callers.authorize_try(req.request(), &query, &body).await,
            Err(_) => Ok(()),
        },
        Op::Confirm | Op::Cancel => callers.authorize_settle(req.request(), op, &body).await,
    };
    match checked {
        Ok(()) => Ok(next.call(req).await?.map_into_boxed_body()),
        Err(refused) => Ok(req.error_response(refused)),
    }
}
