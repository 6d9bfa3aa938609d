//! [`StockError`], the stock service's one error type, mapped once to HTTP.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use service_kit::branch::ErrorClass;
use service_kit::db::BlockingError;

/// Everything a stock endpoint can answer besides success.
///
/// Business refusals are `409 {"dtm_result":"FAILURE","message":...}`: from a Try they make the
/// AP abort; from Confirm/Cancel they mean a protocol violation, which the TM retries and alerts
/// on. Server errors answer a generic message; the detail is logged.
#[derive(Debug, thiserror::Error)]
pub enum StockError {
    /// The body is well formed but a value is out of range (`quantity` or `product_id` <= 0).
    /// 400 `invalid_request`.
    #[error("{0}")]
    InvalidRequest(String),
    /// A Try names a product that does not exist. 409 FAILURE.
    #[error("product {0} does not exist")]
    ProductMissing(i64),
    /// Try: fewer units available (`stock - reserved`) than requested. 409 FAILURE.
    #[error(
        "insufficient stock: product {product_id} has {available} available, {quantity} requested"
    )]
    InsufficientStock {
        /// The product.
        product_id: i64,
        /// `stock - reserved`.
        available: i64,
        /// The quantity of the Try.
        quantity: i64,
    },
    /// A Confirm found no reservation for its branch: no Try succeeded here (a protocol
    /// violation). 409 FAILURE.
    #[error(
        "no reservation for gid={gid} branch_id={branch_id}: Confirm needs a Try that succeeded"
    )]
    ReservationMissing {
        /// The global transaction id.
        gid: String,
        /// The branch id.
        branch_id: String,
    },
    /// Confirm of a cancelled reservation, or Cancel of a confirmed one (a protocol violation).
    /// 409 FAILURE.
    #[error("the reservation of gid={gid} branch_id={branch_id} is already {state}")]
    ReservationSettled {
        /// The global transaction id.
        gid: String,
        /// The branch id.
        branch_id: String,
        /// `confirmed` or `cancelled`.
        state: service_kit::reservation::ReservationState,
    },
    /// `GET /api/products/{id}` of an unknown product. 404 `product_not_found`.
    #[error("product {0} not found")]
    ProductNotFound(i64),
    /// Stored rows contradict an invariant (a reservation larger than `reserved`, say): a bug.
    /// 500 `internal`.
    #[error("inconsistent data: {0}")]
    Inconsistent(String),
    /// A query failed. 500 `internal`.
    #[error("database error: {0}")]
    Database(#[from] diesel::result::Error),
    /// No pooled connection, or the blocking task failed. 503 `unavailable`.
    #[error("database unavailable: {0}")]
    Unavailable(String),
}

impl StockError {
    /// `true` for the business refusals answered 409 FAILURE.
    pub fn is_refusal(&self) -> bool {
        matches!(self.class(), ErrorClass::Refusal)
    }

    /// How the error answers over HTTP: the one place that decides it.
    fn class(&self) -> ErrorClass {
        match self {
            StockError::ProductMissing(_)
            | StockError::InsufficientStock { .. }
            | StockError::ReservationMissing { .. }
            | StockError::ReservationSettled { .. } => ErrorClass::Refusal,
            StockError::InvalidRequest(_) => ErrorClass::InvalidRequest,
            StockError::ProductNotFound(_) => ErrorClass::NotFound("product_not_found"),
            StockError::Unavailable(_) => {
                ErrorClass::Unavailable("the stock database is unavailable; retry later")
            }
            _ => {
                ErrorClass::Internal("the stock service failed to process the request; retry later")
            }
        }
    }
}

impl From<BlockingError> for StockError {
    fn from(e: BlockingError) -> Self {
        e.into_query_error()
            .map_or_else(StockError::Unavailable, StockError::Database)
    }
}

impl ResponseError for StockError {
    fn status_code(&self) -> StatusCode {
        self.class().status_code()
    }

    fn error_response(&self) -> HttpResponse {
        self.class().error_response(self)
    }
}
