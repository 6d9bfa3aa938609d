//! The coordinator's one error type, mapped once to HTTP in DTM's vocabulary.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use service_kit::db::BlockingError;
use tcc::protocol::{CoordinatorAnswer, GlobalStatus, FAILURE, ONGOING};

/// Everything a coordinator endpoint can answer besides success.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    /// The request is malformed: bad gid, `trans_type` other than `tcc`, a URL that is not
    /// http(s), an option out of range. 400 with `error` = `code`.
    #[error("{message}")]
    BadRequest {
        /// Machine-readable code, e.g. `invalid_gid`.
        code: &'static str,
        /// What is wrong, for a human.
        message: String,
    },
    /// The request is well formed but the transaction's state forbids it: unknown gid on
    /// `submit`/`abort`/`registerBranch`, `submit` of an aborting transaction, `registerBranch` after
    /// `submit`. 409 with `dtm_result` FAILURE, which DTM clients read as a refusal.
    #[error("{0}")]
    Conflict(String),
    /// `submit`/`abort` with `wait_result`: the transition is durable, but the second phase did
    /// not finish within the wait (a branch answered other than success and its retry is
    /// scheduled, or the wait ran out). DTM clients read only the HTTP status of a waited call,
    /// so this is not a 200: 425 with `dtm_result` ONGOING when the branch answered ONGOING,
    /// else 409 with FAILURE, as DTM answers `wait result not return success`. The body also
    /// carries `error` = `not_finished`, the `gid` and its current `status` (`submitted` or
    /// `aborting`: the coordinator goes on driving it).
    #[error("{message}")]
    NotFinished {
        /// The global transaction.
        gid: String,
        /// Its status now: `submitted` or `aborting`.
        status: GlobalStatus,
        /// Whether the branch that held it up answered ONGOING.
        ongoing: bool,
        /// What held it up, for a human.
        message: String,
    },
    /// An admin endpoint's unknown gid. 404 with `error` = `not_found`.
    #[error("{0}")]
    NotFound(String),
    /// `query` of a gid the coordinator never knew (or whose tombstone expired). 404 with
    /// `error` = `unknown_gid`: a positive "no such transaction", which an RM's reconciliation
    /// may act on, unlike a route's 404.
    #[error("{0}")]
    UnknownGid(String),
    /// `query` of a gid whose transaction retention deleted (its tombstone is kept). 404 with
    /// `error` = `gid_deleted`: it finished, but how is no longer known.
    #[error("{0}")]
    GidDeleted(String),
    /// The database is unreachable or failed. 503/500 with a generic message; details are logged.
    #[error("database error: {0}")]
    Database(#[from] diesel::result::Error),
    /// No pooled connection, or the blocking task failed. 503.
    #[error("database unavailable: {0}")]
    Unavailable(String),
}

impl CoordinatorError {
    /// Shorthand for [`CoordinatorError::BadRequest`].
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        CoordinatorError::BadRequest {
            code,
            message: message.into(),
        }
    }
}

impl From<BlockingError> for CoordinatorError {
    fn from(e: BlockingError) -> Self {
        match e {
            BlockingError::Query(e) => CoordinatorError::Database(e),
            other => CoordinatorError::Unavailable(other.to_string()),
        }
    }
}

impl ResponseError for CoordinatorError {
    fn status_code(&self) -> StatusCode {
        match self {
            CoordinatorError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            CoordinatorError::Conflict(_) => StatusCode::CONFLICT,
            CoordinatorError::NotFinished { ongoing: true, .. } => {
                StatusCode::from_u16(425).expect("425 Too Early is a valid status")
            }
            CoordinatorError::NotFinished { .. } => StatusCode::CONFLICT,
            CoordinatorError::NotFound(_)
            | CoordinatorError::UnknownGid(_)
            | CoordinatorError::GidDeleted(_) => StatusCode::NOT_FOUND,
            CoordinatorError::Database(_) => StatusCode::INTERNAL_SERVER_ERROR,
            CoordinatorError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status_code()).json(self.answer())
    }
}

impl CoordinatorError {
    /// The JSON body of this error ([`CoordinatorAnswer`]); database failures are logged here
    /// and answered with a generic message.
    fn answer(&self) -> CoordinatorAnswer {
        match self {
            CoordinatorError::BadRequest { code, message } => {
                CoordinatorAnswer::error(code, message)
            }
            CoordinatorError::Conflict(message) => CoordinatorAnswer::conflict(message),
            CoordinatorError::NotFinished {
                gid,
                status,
                ongoing,
                message,
            } => CoordinatorAnswer {
                dtm_result: Some(if *ongoing { ONGOING } else { FAILURE }.to_owned()),
                gid: Some(gid.clone()),
                status: Some(*status),
                error: Some(CoordinatorAnswer::NOT_FINISHED.to_owned()),
                message: Some(message.clone()),
            },
            CoordinatorError::NotFound(message) => CoordinatorAnswer::error("not_found", message),
            CoordinatorError::UnknownGid(message) => {
                CoordinatorAnswer::error("unknown_gid", message)
            }
            CoordinatorError::GidDeleted(message) => {
                CoordinatorAnswer::error("gid_deleted", message)
            }
            CoordinatorError::Database(e) => {
                log::error!("database error: {e}");
                CoordinatorAnswer::error(
                    "internal",
                    "the coordinator's database failed; retry later",
                )
            }
            CoordinatorError::Unavailable(e) => {
                log::error!("database unavailable: {e}");
                CoordinatorAnswer::error(
                    "unavailable",
                    "the coordinator's database is unavailable; retry later",
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(e: CoordinatorError) -> serde_json::Value {
        serde_json::to_value(e.answer()).unwrap()
    }

    #[test]
    fn every_answer_is_dtm_shaped_with_absent_fields_left_out() {
        assert_eq!(
            serde_json::to_value(CoordinatorAnswer::success(Some("g1".into()), None)).unwrap(),
            json!({"dtm_result": "SUCCESS", "gid": "g1"})
        );
        assert_eq!(
            body(CoordinatorError::Conflict("no".into())),
            json!({"dtm_result": "FAILURE", "error": "conflict", "message": "no"})
        );
        assert_eq!(
            body(CoordinatorError::bad_request("invalid_gid", "bad")),
            json!({"error": "invalid_gid", "message": "bad"})
        );
        assert_eq!(
            body(CoordinatorError::NotFinished {
                gid: "g1".into(),
                status: GlobalStatus::Submitted,
                ongoing: true,
                message: "m".into(),
            }),
            json!({"dtm_result": "ONGOING", "error": "not_finished", "message": "m",
                   "gid": "g1", "status": "submitted"})
        );
    }
}
