//! [`BankError`], the bank's one error type, mapped once to HTTP.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use service_kit::branch::ErrorClass;
use service_kit::db::BlockingError;

/// Everything a bank endpoint can answer besides success.
///
/// Business refusals are `409 {"dtm_result":"FAILURE","message":...}`: from a Try they make the
/// AP abort; from Confirm/Cancel they mean a protocol violation, which the TM retries and alerts
/// on. Server errors answer a generic message; the detail is logged.
#[derive(Debug, thiserror::Error)]
pub enum BankError {
    /// The body is well formed but a value is out of range (`amount` or `account_id` <= 0).
    /// 400 `invalid_request`.
    #[error("{0}")]
    InvalidRequest(String),
    /// A Try names an account that does not exist. 409 FAILURE.
    #[error("account {0} does not exist")]
    AccountMissing(i64),
    /// A Try names a locked account. 409 FAILURE.
    #[error("account {0} is locked")]
    AccountLocked(i64),
    /// TransOut Try: spendable (`balance - trading_balance`) is below the amount. 409 FAILURE.
    #[error(
        "insufficient funds: account {account_id} has {spendable} spendable, {amount} requested"
    )]
    InsufficientFunds {
        /// The account.
        account_id: i64,
        /// `balance - trading_balance`, minor units.
        spendable: i64,
        /// The amount of the Try, minor units.
        amount: i64,
    },
    /// TransIn Try: balance + pending credits + amount would not fit in an i64. 409 FAILURE.
    #[error("account {account_id} cannot receive {amount}: its balance plus pending credits would overflow")]
    BalanceOverflow {
        /// The account.
        account_id: i64,
        /// The amount of the Try, minor units.
        amount: i64,
    },
    /// A Confirm found no hold for its branch: no Try succeeded here, so the TM should not be
    /// confirming (a protocol violation). 409 FAILURE.
    #[error("no hold for gid={gid} branch_id={branch_id}: Confirm needs a Try that succeeded")]
    HoldMissing {
        /// The global transaction id.
        gid: String,
        /// The branch id.
        branch_id: String,
    },
    /// Confirm of a cancelled hold, or Cancel of a confirmed one: the branch was already settled
    /// the other way (a protocol violation). 409 FAILURE.
    #[error("the hold of gid={gid} branch_id={branch_id} is already {state}")]
    HoldSettled {
        /// The global transaction id.
        gid: String,
        /// The branch id.
        branch_id: String,
        /// `confirmed` or `cancelled`.
        state: service_kit::reservation::ReservationState,
    },
    /// `GET /api/accounts/{id}` of an unknown account. 404 `account_not_found`.
    #[error("account {0} not found")]
    AccountNotFound(i64),
    /// Stored rows contradict an invariant (a hold larger than the frozen funds, say): a bug.
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

impl BankError {
    /// `true` for the business refusals answered 409 FAILURE.
    pub fn is_refusal(&self) -> bool {
        matches!(self.class(), ErrorClass::Refusal)
    }

    /// How the error answers over HTTP: the one place that decides it.
    fn class(&self) -> ErrorClass {
        match self {
            BankError::AccountMissing(_)
            | BankError::AccountLocked(_)
            | BankError::InsufficientFunds { .. }
            | BankError::BalanceOverflow { .. }
            | BankError::HoldMissing { .. }
            | BankError::HoldSettled { .. } => ErrorClass::Refusal,
            BankError::InvalidRequest(_) => ErrorClass::InvalidRequest,
            BankError::AccountNotFound(_) => ErrorClass::NotFound("account_not_found"),
            BankError::Unavailable(_) => {
                ErrorClass::Unavailable("the bank's database is unavailable; retry later")
            }
            _ => ErrorClass::Internal("the bank failed to process the request; retry later"),
        }
    }
}

impl From<BlockingError> for BankError {
    fn from(e: BlockingError) -> Self {
        e.into_query_error()
            .map_or_else(BankError::Unavailable, BankError::Database)
    }
}

impl ResponseError for BankError {
    fn status_code(&self) -> StatusCode {
        self.class().status_code()
    }

    fn error_response(&self) -> HttpResponse {
        self.class().error_response(self)
    }
}
