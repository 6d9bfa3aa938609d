//! [`AppError`]: every way a fire request can fail before or around its global transaction, and
//! every way the AP's nested branch ([`crate::routes::nested`]) can fail other than a refusal,
//! mapped once to an HTTP status and a JSON body.
//!
//! A global transaction that *rolled back* is not an error here: it is a normal outcome of
//! TCC, answered `409` as a [`crate::routes::fire::FireAnswer`] with a `reason`.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;
use service_kit::params::ParamsError;
use tcc::client::TccError;
use tcc::signing::{GidTokenError, GID_TOKEN_HEADER};

/// Why a fire request was not carried out.
///
/// Answered as `{"error": "<code>", "message": "..."}`, plus `"parameter"` for the parameter at
/// fault and `"gid"` once the coordinator gave one (so the caller can look the transaction up).
/// Messages of 5xx answers say what failed, never internal detail (URLs, raw upstream bodies):
/// that is logged instead.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The request's parameters or body were refused ([`ParamsError`]: `400
    /// invalid_parameter`, `fault_injection_disabled`, `invalid_json`, `invalid_body`, `413`,
    /// `415`), answered as [`ParamsError`] answers.
    #[error(transparent)]
    Params(#[from] ParamsError),
    /// The stock service has no product with this id, so there is no price to charge.
    /// `400 invalid_parameter` naming `product_id`.
    #[error("product_id {product_id}: the stock service has no such product")]
    UnknownProduct {
        /// The requested product.
        product_id: i64,
    },
    /// `price * quantity` does not fit the i64 minor units every amount is kept in.
    /// `400 invalid_parameter` naming `quantity`.
    #[error(
        "quantity {quantity} at a price of {price} (minor units) overflows the largest amount"
    )]
    AmountOverflow {
        /// The product's price, minor units.
        price: i64,
        /// The requested quantity.
        quantity: i64,
    },
    /// The stock service did not tell the price (unreachable, 5xx, or an answer without a
    /// positive integer `price`). `502 stock_unavailable`. The detail is logged.
    #[error("the stock service could not give the price of product {product_id}: {detail}")]
    StockUnavailable {
        /// The requested product.
        product_id: i64,
        /// What went wrong, for the log.
        detail: String,
    },
    /// The nested branch's Try query cannot start a nested transaction: its `dtm` is not an
    /// `http(s)://` URL, or its branch id is too long to nest under. `400 bad_branch_query`.
    #[error("{0}")]
    BadBranchQuery(String),
    /// The Try of the nested branch's child failed transiently (timeout, refused connection,
    /// 5xx from TransIn): `500 child_branch_error`, which the outer AP reads as a failed Try. The
    /// detail is logged.
    #[error("the Try of child branch {branch_id} of global transaction {gid} failed")]
    ChildBranch {
        /// The global transaction.
        gid: String,
        /// The child branch (`0201`).
        branch_id: String,
    },
    /// The nested branch's Try came without its gid's token (`X-Tcc-Gid-Token`) while the AP
    /// has `BRANCH_SIGNING_SECRET`: `401 missing_gid_token`. Nothing was registered.
    #[error("this Try needs the gid's token in the {GID_TOKEN_HEADER} header")]
    MissingGidToken,
    /// The nested branch's Try came with a token that is not its gid's (another gid's, another
    /// secret's): `401 bad_gid_token`. Nothing was registered.
    #[error(transparent)]
    BadGidToken(#[from] GidTokenError),
    /// Talking to the coordinator failed: `503 coordinator_unavailable` when it could not be
    /// reached, `502 coordinator_error` when it refused a call or answered something unreadable.
    /// `gid` is set once `newGid` had answered.
    #[error("{source}")]
    Coordinator {
        /// The global transaction, when one had been started.
        gid: Option<String>,
        /// The client's error.
        source: TccError,
    },
}

impl AppError {
    /// The HTTP status and the machine-readable `error` code of the JSON body.
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        use StatusCode as S;
        match self {
            AppError::Params(e) => (e.status_code(), e.code()),
            AppError::UnknownProduct { .. } | AppError::AmountOverflow { .. } => {
                (S::BAD_REQUEST, "invalid_parameter")
            }
            AppError::BadBranchQuery(_) => (S::BAD_REQUEST, "bad_branch_query"),
            AppError::MissingGidToken => (S::UNAUTHORIZED, "missing_gid_token"),
            AppError::BadGidToken(e) => (S::UNAUTHORIZED, e.code()),
            AppError::StockUnavailable { .. } => (S::BAD_GATEWAY, "stock_unavailable"),
            AppError::Coordinator {
                source: TccError::Transport { .. },
                ..
            } => (S::SERVICE_UNAVAILABLE, "coordinator_unavailable"),
            AppError::Coordinator { .. } => (S::BAD_GATEWAY, "coordinator_error"),
            AppError::ChildBranch { .. } => (S::INTERNAL_SERVER_ERROR, "child_branch_error"),
        }
    }

    /// The gid of the global transaction the error happened in, if one was started.
    pub fn gid(&self) -> Option<&str> {
        match self {
            AppError::Coordinator { gid, .. } => gid.as_deref(),
            AppError::ChildBranch { gid, .. } => Some(gid),
            _ => None,
        }
    }

    /// The message shown to the caller: the error itself for 4xx, a summary without upstream
    /// detail for 5xx. What the caller can make of a coordinator failure depends on how far the
    /// transaction got: a refused `prepare` created nothing; after that (or when prepare's
    /// answer was lost) the transaction may exist, and only the coordinator knows how it ends.
    fn public_message(&self) -> String {
        let (gid, source) = match self {
            AppError::StockUnavailable { product_id, .. } => {
                return format!(
                    "the stock service could not give the price of product {product_id}; try again"
                )
            }
            AppError::Coordinator { gid, source } => (gid.as_deref(), source),
            other => return other.to_string(),
        };
        let what = match source {
            TccError::Transport { call, .. } => {
                format!("the coordinator could not be reached ({call})")
            }
            TccError::Refused { call, status, .. } => {
                format!("the coordinator refused {call} (HTTP {status})")
            }
            TccError::Protocol(_) => "the coordinator's answer could not be used".to_owned(),
        };
        match gid {
            Some(gid) if !matches!(source, TccError::Refused { call: "prepare", .. }) => format!(
                "{what}; the outcome of global transaction {gid} is not known here: the coordinator \
                 finishes it, or cancels it once it times out while prepared; query it by gid"
            ),
            _ => format!("{what}; no global transaction was started"),
        }
    }
}

impl ResponseError for AppError {
    fn status_code(&self) -> StatusCode {
        self.status_and_code().0
    }

    fn error_response(&self) -> HttpResponse {
        if let AppError::Params(e) = self {
            return e.error_response();
        }
        let code = self.status_and_code().1;
        let mut body = json!({ "error": code, "message": self.public_message() });
        let parameter = match self {
            AppError::UnknownProduct { .. } => Some("product_id"),
            AppError::AmountOverflow { .. } => Some("quantity"),
            _ => None,
        };
        if let Some(parameter) = parameter {
            body["parameter"] = parameter.into();
        }
        if let Some(gid) = self.gid() {
            body["gid"] = gid.into();
        }
        HttpResponse::build(self.status_code()).json(body)
    }
}
