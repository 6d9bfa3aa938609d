//! actix-web helpers for RM endpoints: the branch query extractor and the three DTM answers.
//!
//! ```no_run
//! use actix_web::{post, web};
//! use tcc::actix::BranchReply;
//! use tcc::protocol::BranchQuery;
//!
//! #[post("/api/TransOutTry")]
//! async fn trans_out_try(query: BranchQuery, body: web::Bytes) -> BranchReply {
//!     // ... run the business code through tcc::barrier::BranchBarrier ...
//!     BranchReply::Success
//! }
//! ```

use std::future::{ready, Ready};

use actix_web::body::BoxBody;
use actix_web::http::StatusCode;
use actix_web::{dev::Payload, FromRequest, HttpRequest, HttpResponse, Responder, ResponseError};
use serde_json::json;

use crate::protocol::{BranchQuery, FAILURE, ONGOING, SUCCESS};

/// The branch query was missing or malformed: answered `400 {"error":"bad_branch_query", ...}`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BranchQueryError(String);

impl ResponseError for BranchQueryError {
    fn status_code(&self) -> StatusCode {
        StatusCode::BAD_REQUEST
    }
    fn error_response(&self) -> HttpResponse {
        HttpResponse::BadRequest().json(json!({
            "error": "bad_branch_query",
            "message": self.0,
        }))
    }
}

/// Extracts `?gid=&trans_type=&branch_id=&op=` and validates it ([`BranchQuery::validate`]).
impl FromRequest for BranchQuery {
    type Error = BranchQueryError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let parsed = serde_urlencoded_query(req.query_string())
            .and_then(|q: BranchQuery| q.validate().map(|()| q).map_err(|e| e.0))
            .map_err(|message| {
                BranchQueryError(format!(
                    "branch calls need ?gid=&trans_type=tcc&branch_id=&op=: {message}"
                ))
            });
        ready(parsed)
    }
}

fn serde_urlencoded_query(query: &str) -> Result<BranchQuery, String> {
    actix_web::web::Query::<BranchQuery>::from_query(query)
        .map(actix_web::web::Query::into_inner)
        .map_err(|e| e.to_string())
}

/// An RM's answer to a branch call, in DTM's vocabulary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BranchReply {
    /// `200 {"dtm_result":"SUCCESS"}`.
    Success,
    /// `409 {"dtm_result":"FAILURE","message":...}`: a business refusal. From a Try it makes the
    /// AP abort; from Confirm/Cancel it is a bug the TM retries and alerts on.
    Failure(String),
    /// `425 {"dtm_result":"ONGOING"}`: not finished; the TM asks again at a fixed interval.
    Ongoing,
}

impl BranchReply {
    /// The HTTP status: 200, 409 or 425.
    pub fn status(&self) -> StatusCode {
        match self {
            BranchReply::Success => StatusCode::OK,
            BranchReply::Failure(_) => StatusCode::CONFLICT,
            BranchReply::Ongoing => StatusCode::from_u16(425).expect("425 is a valid status"),
        }
    }

    /// The response: status and JSON body.
    pub fn to_response(&self) -> HttpResponse {
        let body = match self {
            BranchReply::Success => json!({ "dtm_result": SUCCESS }),
            BranchReply::Failure(message) => json!({ "dtm_result": FAILURE, "message": message }),
            BranchReply::Ongoing => json!({ "dtm_result": ONGOING }),
        };
        HttpResponse::build(self.status()).json(body)
    }
}

impl Responder for BranchReply {
    type Body = BoxBody;
    fn respond_to(self, _: &HttpRequest) -> HttpResponse {
        self.to_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Op;
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

    #[test]
    fn replies_carry_dtm_statuses() {
        assert_eq!(BranchReply::Success.status().as_u16(), 200);
        assert_eq!(BranchReply::Failure("x".into()).status().as_u16(), 409);
        assert_eq!(BranchReply::Ongoing.status().as_u16(), 425);
    }
}
