//! The wire vocabulary shared by the AP, the TM and the RMs, as DTM defines it.
//!
//! Everything here is plain data with no I/O, so it compiles without any feature. The rules for
//! reading a branch's answer follow DTM's `HTTPResp2DtmError` (dtm-labs/dtm, `dtmcli/dtmimp`):
//! 425 or `ONGOING` in the body means "not yet", 409 or `FAILURE` means a business refusal, exactly
//! 200 means success, and any other answer (another 2xx such as 202, a 3xx redirect, 4xx, 5xx)
//! is a transient error.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// `dtm_result` of a successful answer. A success body must never contain [`FAILURE`] or
/// [`ONGOING`]: DTM clients search the raw body for those words.
pub const SUCCESS: &str = "SUCCESS";
/// `dtm_result` of a business refusal, answered with HTTP 409.
pub const FAILURE: &str = "FAILURE";
/// `dtm_result` of "not finished yet, ask again later", answered with HTTP 425 (Too Early).
pub const ONGOING: &str = "ONGOING";

/// Longest gid accepted, in bytes. DTM stores gids in a `varchar(128)`.
pub const MAX_GID_LEN: usize = 128;
/// Longest branch id accepted, in bytes. Nested branch ids grow by two digits per level.
pub const MAX_BRANCH_ID_LEN: usize = 64;
/// Longest transaction option a coordinator of this project accepts (`timeout_to_fail`,
/// `retry_interval`), seconds (one day): longer is almost surely a unit mistake (milliseconds
/// given as seconds). The AP bounds its parameters the same way.
pub const MAX_OPTION_SECS: i64 = 86_400;
/// Longest `request_timeout` a coordinator of this project accepts, seconds. A branch call may
/// be held open this long, and a second-phase pass with it: one minute is more than any Confirm
/// or Cancel should take, and bounds how long a slow RM holds one of the worker's pass slots.
pub const MAX_REQUEST_TIMEOUT_SECS: i64 = 60;

/// A protocol value that is not well formed. The message is safe to show to the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ProtocolError(pub String);

/// The branch operation a request performs: the three phases of TCC.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// Phase one: check and reserve resources. Called by the AP.
    Try,
    /// Phase two on success: use exactly what Try reserved. Called by the TM until it succeeds.
    Confirm,
    /// Phase two on rollback: release what Try reserved. Called by the TM until it succeeds.
    Cancel,
}

impl Op {
    /// The name on the wire: `try`, `confirm` or `cancel`.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Try => "try",
            Op::Confirm => "confirm",
            Op::Cancel => "cancel",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Op {
    type Err = ProtocolError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "try" => Ok(Op::Try),
            "confirm" => Ok(Op::Confirm),
            "cancel" => Ok(Op::Cancel),
            other => Err(ProtocolError(format!(
                "op must be try, confirm or cancel, not {other:?}"
            ))),
        }
    }
}

/// The transaction type. This project implements TCC only; DTM's other types (saga, msg, xa,
/// workflow) are refused rather than half-supported.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TransType {
    /// Try-Confirm-Cancel.
    #[default]
    Tcc,
}

impl TransType {
    /// The name on the wire: `tcc`.
    pub fn as_str(self) -> &'static str {
        "tcc"
    }
}

impl fmt::Display for TransType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TransType {
    type Err = ProtocolError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "tcc" => Ok(TransType::Tcc),
            other => Err(ProtocolError(format!(
                "trans_type must be tcc, not {other:?}"
            ))),
        }
    }
}

/// The status of a global transaction (`docs/ARCHITECTURE.md#state-machine`):
/// `prepared -> submitted -> succeed` and `prepared -> aborting -> failed`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GlobalStatus {
    /// Created by `prepare`; branches may register and their Trys run.
    Prepared,
    /// The AP submitted: every branch's Confirm is being driven to success.
    Submitted,
    /// Every Confirm succeeded. Final.
    Succeed,
    /// The AP aborted, or the TM timed the transaction out: every Cancel is being driven.
    Aborting,
    /// Every Cancel succeeded. Final.
    Failed,
}

impl GlobalStatus {
    /// Every status, in state-machine order.
    pub const ALL: [GlobalStatus; 5] = [
        GlobalStatus::Prepared,
        GlobalStatus::Submitted,
        GlobalStatus::Succeed,
        GlobalStatus::Aborting,
        GlobalStatus::Failed,
    ];

    /// The name on the wire and in the coordinator's table.
    pub fn as_str(self) -> &'static str {
        match self {
            GlobalStatus::Prepared => "prepared",
            GlobalStatus::Submitted => "submitted",
            GlobalStatus::Succeed => "succeed",
            GlobalStatus::Aborting => "aborting",
            GlobalStatus::Failed => "failed",
        }
    }

    /// `succeed` and `failed` are final: nothing changes a transaction after either.
    pub fn is_final(self) -> bool {
        matches!(self, GlobalStatus::Succeed | GlobalStatus::Failed)
    }
}

impl fmt::Display for GlobalStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for GlobalStatus {
    type Err = ProtocolError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        GlobalStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| ProtocolError(format!("unknown global status {s:?}")))
    }
}

/// DTM's three branch results: the `dtm_result` of a branch's answer ([`BranchReply`]).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum DtmResult {
    /// [`SUCCESS`]: done (200).
    Success,
    /// [`FAILURE`]: refused, a business decision (409).
    Failure,
    /// [`ONGOING`]: not finished; ask again (425).
    Ongoing,
}

/// An RM's answer to a branch call, in DTM's vocabulary, and its wire shape:
///
/// * `200 {"dtm_result":"SUCCESS"}`;
/// * `409 {"dtm_result":"FAILURE","message":"..."}`: a business refusal. From a Try it makes the
///   AP abort; from Confirm/Cancel it is a bug the TM retries and alerts on;
/// * `425 {"dtm_result":"ONGOING"}`: not finished; the TM asks again at a fixed interval.
///
/// The RMs answer it (the `actix` feature makes it a responder), their OpenAPI descriptions
/// describe it (the `openapi` feature), and a client reading a branch's answer may parse it; the
/// rules for reading any answer, this shape or not, are [`BranchOutcome::from_http`]'s.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "BranchReplyBody", from = "BranchReplyBody")]
pub enum BranchReply {
    /// `200 {"dtm_result":"SUCCESS"}`.
    Success,
    /// `409 {"dtm_result":"FAILURE","message":...}`, with why.
    Failure(String),
    /// `425 {"dtm_result":"ONGOING"}`.
    Ongoing,
}

impl BranchReply {
    /// The `dtm_result` of the answer.
    pub fn dtm_result(&self) -> DtmResult {
        match self {
            BranchReply::Success => DtmResult::Success,
            BranchReply::Failure(_) => DtmResult::Failure,
            BranchReply::Ongoing => DtmResult::Ongoing,
        }
    }

    /// The HTTP status that goes with it: 200, 409 or 425.
    pub fn http_status(&self) -> u16 {
        match self {
            BranchReply::Success => 200,
            BranchReply::Failure(_) => 409,
            BranchReply::Ongoing => 425,
        }
    }
}

/// The JSON object of a [`BranchReply`]: `dtm_result`, and `message` for a FAILURE.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
struct BranchReplyBody {
    /// SUCCESS, FAILURE or ONGOING.
    dtm_result: DtmResult,
    /// Why a FAILURE was answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    message: Option<String>,
}

impl From<BranchReply> for BranchReplyBody {
    fn from(reply: BranchReply) -> Self {
        let dtm_result = reply.dtm_result();
        let message = match reply {
            BranchReply::Failure(message) => Some(message),
            BranchReply::Success | BranchReply::Ongoing => None,
        };
        BranchReplyBody {
            dtm_result,
            message,
        }
    }
}

impl From<BranchReplyBody> for BranchReply {
    fn from(body: BranchReplyBody) -> Self {
        match body.dtm_result {
            DtmResult::Success => BranchReply::Success,
            DtmResult::Failure => BranchReply::Failure(body.message.unwrap_or_default()),
            DtmResult::Ongoing => BranchReply::Ongoing,
        }
    }
}

/// The schema of [`BranchReply`]: its JSON object, `{"dtm_result": .., "message"?: ..}`.
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for BranchReply {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        <BranchReplyBody as utoipa::PartialSchema>::schema()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for BranchReply {
    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        <BranchReplyBody as utoipa::ToSchema>::schemas(schemas)
    }
}

/// How a branch answered one call, read as DTM reads it (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BranchOutcome {
    /// HTTP 200 and neither `FAILURE` nor `ONGOING` in the body.
    Success,
    /// HTTP 409 or `FAILURE` in the body: a business refusal, with the branch's message.
    Failure(String),
    /// HTTP 425 or `ONGOING` in the body: not finished, ask again at a fixed interval.
    Ongoing,
    /// Anything else (a status other than 200, 409 and 425 such as 202, 307 or 500, a timeout, a
    /// refused connection): transient.
    Error(String),
}

impl BranchOutcome {
    /// Classifies an HTTP answer: `status` is the HTTP status code, `body` the raw body text.
    ///
    /// Only exactly 200 is a success, as in DTM's `HTTPResp2DtmError`: a 202 (accepted, not
    /// done) or a redirect (a proxy's login page, a moved RM) has not run the branch, and
    /// reading it as done would leave funds frozen while the TM reports `succeed`.
    pub fn from_http(status: u16, body: &str) -> Self {
        if status == 425 || body.contains(ONGOING) {
            BranchOutcome::Ongoing
        } else if status == 409 || body.contains(FAILURE) {
            BranchOutcome::Failure(failure_message(body))
        } else if status == 200 {
            BranchOutcome::Success
        } else {
            BranchOutcome::Error(format!("HTTP {status}: {}", truncate(body, 200)))
        }
    }

    /// The short name used in logs and the coordinator's records:
    /// `success`, `failure`, `ongoing` or `error`.
    pub fn kind(&self) -> &'static str {
        match self {
            BranchOutcome::Success => "success",
            BranchOutcome::Failure(_) => "failure",
            BranchOutcome::Ongoing => "ongoing",
            BranchOutcome::Error(_) => "error",
        }
    }
}

/// The `message` of a JSON failure body, or the body itself (shortened) when it is not JSON.
fn failure_message(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
        .unwrap_or_else(|| truncate(body, 200).to_owned())
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The query string of every branch call: `?gid=G&trans_type=tcc&branch_id=B&op=try|confirm|cancel`,
/// plus `dtm=<coordinator base URL>` on Try calls so that a branch can itself start a nested TCC.
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BranchQuery {
    /// The global transaction id.
    #[cfg_attr(feature = "openapi", param(pattern = r"^[A-Za-z0-9_.:-]{1,128}$"))]
    pub gid: String,
    /// Always `tcc` here.
    pub trans_type: TransType,
    /// The branch id the AP gave this branch: "01", "02", ... ("0201" when nested).
    #[cfg_attr(feature = "openapi", param(pattern = r"^[A-Za-z0-9_.:-]{1,64}$"))]
    pub branch_id: String,
    /// Which phase this call is.
    pub op: Op,
    /// The coordinator's base URL (`http://host:36789/api/dtmsvr`), sent with Try.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtm: Option<String>,
}

impl BranchQuery {
    /// Checks the gid and the branch id (see [`validate_gid`] and [`validate_branch_id`]).
    pub fn validate(&self) -> Result<(), ProtocolError> {
        validate_gid(&self.gid)?;
        validate_branch_id(&self.branch_id)
    }
}

/// A gid is 1 to [`MAX_GID_LEN`] bytes of ASCII letters, digits and `-_.:`; anything else (spaces,
/// control characters, quotes) is refused so that a gid is safe in logs, URLs and diagrams.
/// A gid containing [`FAILURE`] or [`ONGOING`] is refused too: success answers carry the gid,
/// and DTM clients search a raw answer for those words, so they would read its success as a
/// failure.
pub fn validate_gid(gid: &str) -> Result<(), ProtocolError> {
    validate_token("gid", gid, MAX_GID_LEN)
}

/// A branch id is 1 to [`MAX_BRANCH_ID_LEN`] bytes of ASCII letters, digits and `-_.:`, without
/// [`FAILURE`] or [`ONGOING`] (see [`validate_gid`]).
pub fn validate_branch_id(branch_id: &str) -> Result<(), ProtocolError> {
    validate_token("branch_id", branch_id, MAX_BRANCH_ID_LEN)
}

fn validate_token(what: &str, value: &str, max: usize) -> Result<(), ProtocolError> {
    if value.is_empty() {
        return Err(ProtocolError(format!("{what} must not be empty")));
    }
    if value.len() > max {
        return Err(ProtocolError(format!(
            "{what} must be at most {max} bytes, got {}",
            value.len()
        )));
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
    {
        return Err(ProtocolError(format!(
            "{what} may contain only ASCII letters, digits and - _ . :"
        )));
    }
    if let Some(word) = [FAILURE, ONGOING].into_iter().find(|w| value.contains(w)) {
        return Err(ProtocolError(format!(
            "{what} must not contain {word}: DTM clients read that word in an answer as its outcome"
        )));
    }
    Ok(())
}

/// Hands out branch ids the way DTM's clients do: `parent` followed by a two-digit counter,
/// "01" to "99". A nested transaction started from branch "02" numbers its children "0201", ...
#[derive(Debug, Clone, Default)]
pub struct BranchIdGenerator {
    parent: String,
    issued: u32,
}

impl BranchIdGenerator {
    /// A generator for the children of `parent` ("" for a top-level transaction).
    pub fn new(parent: impl Into<String>) -> Self {
        BranchIdGenerator {
            parent: parent.into(),
            issued: 0,
        }
    }

    /// The next branch id. Errors after 99 branches or when the parent id is longer than 20
    /// bytes (DTM's limits, `dtmimp.BranchIDGen`).
    pub fn next_branch_id(&mut self) -> Result<String, ProtocolError> {
        if self.issued >= 99 {
            return Err(ProtocolError(
                "a transaction may have at most 99 branches per level".into(),
            ));
        }
        if self.parent.len() > 20 {
            return Err(ProtocolError(
                "nested branch ids may be at most 20 bytes long".into(),
            ));
        }
        self.issued += 1;
        Ok(format!("{}{:02}", self.parent, self.issued))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_classified_as_dtm_classifies_them() {
        assert_eq!(
            BranchOutcome::from_http(200, r#"{"dtm_result":"SUCCESS"}"#),
            BranchOutcome::Success
        );
        assert_eq!(BranchOutcome::from_http(200, ""), BranchOutcome::Success);
        assert_eq!(
            BranchOutcome::from_http(409, r#"{"dtm_result":"FAILURE","message":"no funds"}"#),
            BranchOutcome::Failure("no funds".into())
        );
        assert_eq!(
            BranchOutcome::from_http(200, "FAILURE"),
            BranchOutcome::Failure("FAILURE".into())
        );
        assert_eq!(BranchOutcome::from_http(425, ""), BranchOutcome::Ongoing);
        assert_eq!(
            BranchOutcome::from_http(200, r#"{"dtm_result":"ONGOING"}"#),
            BranchOutcome::Ongoing
        );
        assert!(matches!(
            BranchOutcome::from_http(500, "boom"),
            BranchOutcome::Error(_)
        ));
        assert!(matches!(
            BranchOutcome::from_http(404, ""),
            BranchOutcome::Error(_)
        ));
    }

    #[test]
    fn only_exactly_200_is_a_success() {
        for status in [201, 202, 204, 301, 302, 303, 307, 308] {
            assert!(
                matches!(
                    BranchOutcome::from_http(status, r#"{"dtm_result":"SUCCESS"}"#),
                    BranchOutcome::Error(_)
                ),
                "{status}"
            );
        }
    }

    #[test]
    fn statuses_round_trip_through_their_wire_names() {
        for status in GlobalStatus::ALL {
            assert_eq!(status.as_str().parse::<GlobalStatus>().unwrap(), status);
        }
        assert!("done".parse::<GlobalStatus>().is_err());
        assert!(GlobalStatus::Succeed.is_final() && GlobalStatus::Failed.is_final());
        assert!(!GlobalStatus::Aborting.is_final());
    }

    #[test]
    fn branch_ids_are_two_digits_under_their_parent() {
        let mut ids = BranchIdGenerator::new("");
        assert_eq!(ids.next_branch_id().unwrap(), "01");
        assert_eq!(ids.next_branch_id().unwrap(), "02");
        let mut nested = BranchIdGenerator::new("02");
        assert_eq!(nested.next_branch_id().unwrap(), "0201");
        let mut full = BranchIdGenerator::new("");
        for _ in 0..99 {
            full.next_branch_id().unwrap();
        }
        assert!(full.next_branch_id().is_err());
    }

    #[test]
    fn gids_with_spaces_controls_or_excess_length_are_refused() {
        assert!(validate_gid("abc-123_x.y:z").is_ok());
        assert!(validate_gid("").is_err());
        assert!(validate_gid("a b").is_err());
        assert!(validate_gid("a\nb").is_err());
        assert!(validate_gid(&"x".repeat(MAX_GID_LEN + 1)).is_err());
        assert!(validate_branch_id("0201").is_ok());
        assert!(validate_branch_id("01'").is_err());
        // Success answers carry the gid; DTM clients search them for these words.
        assert!(validate_gid("order-FAILURE-1").is_err());
        assert!(validate_gid("xONGOINGx").is_err());
        assert!(validate_gid("failure-ongoing").is_ok());
        assert!(validate_branch_id("FAILURE").is_err());
    }

    #[test]
    fn branch_replies_have_dtm_s_wire_shape() {
        let json = |reply: &BranchReply| serde_json::to_value(reply).unwrap();
        assert_eq!(
            json(&BranchReply::Success),
            serde_json::json!({"dtm_result": "SUCCESS"})
        );
        assert_eq!(
            json(&BranchReply::Failure("no funds".into())),
            serde_json::json!({"dtm_result": "FAILURE", "message": "no funds"})
        );
        assert_eq!(
            json(&BranchReply::Ongoing),
            serde_json::json!({"dtm_result": "ONGOING"})
        );
        let read: BranchReply =
            serde_json::from_str(r#"{"dtm_result":"FAILURE","message":"x"}"#).unwrap();
        assert_eq!(read, BranchReply::Failure("x".into()));
        assert_eq!(read.http_status(), 409);
        assert!(serde_json::from_str::<BranchReply>(r#"{"dtm_result":"DONE"}"#).is_err());
    }

    #[test]
    fn a_branch_query_reads_the_dtm_query_string_names() {
        let q: BranchQuery = serde_json::from_value(serde_json::json!({
            "gid": "g1", "trans_type": "tcc", "branch_id": "01", "op": "cancel"
        }))
        .unwrap();
        assert_eq!(q.op, Op::Cancel);
        assert_eq!(q.dtm, None);
        assert!(serde_json::from_value::<BranchQuery>(serde_json::json!({
            "gid": "g1", "trans_type": "saga", "branch_id": "01", "op": "try"
        }))
        .is_err());
    }
}

/// The JSON body of every answer of a DTM-compatible coordinator's `/api/dtmsvr` calls, in DTM's
/// field names; absent fields are left out:
///
/// * a success: `{"dtm_result": "SUCCESS"}`, with the `gid` for `newGid`, `prepare`, `submit` and
///   `abort`, and the transaction's `status` for `submit` and `abort`;
/// * a refusal by the state machine (409): `{"dtm_result": "FAILURE", "error": "conflict",
///   "message": "..."}`; DTM clients read `dtm_result`, others `error`;
/// * a `submit`/`abort` with `wait_result` whose second phase did not finish within the wait
///   (409, or 425 when a branch answered ONGOING): `{"dtm_result": "FAILURE" or "ONGOING",
///   "error": "not_finished", "message", "gid", "status"}`; the transition itself is durable;
/// * a malformed request or another error: `{"error": "<code>", "message": "..."}`.
///
/// This project's coordinator answers with it and its client (`tcc::client`, feature `client`)
/// reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CoordinatorAnswer {
    /// [`SUCCESS`], [`FAILURE`] or [`ONGOING`], as DTM clients read it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(example = "SUCCESS"))]
    pub dtm_result: Option<String>,
    /// The global transaction id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<String>,
    /// The global transaction's status after the call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<GlobalStatus>,
    /// A machine-readable code: `conflict`, `not_finished` ([`CoordinatorAnswer::NOT_FINISHED`]),
    /// `invalid_gid`, `unknown_gid`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What happened, for a human.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl CoordinatorAnswer {
    /// `error` of a waited `submit`/`abort` whose second phase did not finish within the wait.
    pub const NOT_FINISHED: &'static str = "not_finished";
    /// `error` of a refusal by the state machine.
    pub const CONFLICT: &'static str = "conflict";

    /// A success: `{"dtm_result": "SUCCESS"}` with `gid` and `status` when given.
    pub fn success(gid: Option<String>, status: Option<GlobalStatus>) -> Self {
        CoordinatorAnswer {
            dtm_result: Some(SUCCESS.to_owned()),
            gid,
            status,
            ..CoordinatorAnswer::default()
        }
    }

    /// An error without `dtm_result`: `{"error": code, "message": message}`.
    pub fn error(code: &str, message: impl Into<String>) -> Self {
        CoordinatorAnswer {
            error: Some(code.to_owned()),
            message: Some(message.into()),
            ..CoordinatorAnswer::default()
        }
    }

    /// A refusal by the state machine: `{"dtm_result": "FAILURE", "error": "conflict", "message"}`.
    pub fn conflict(message: impl Into<String>) -> Self {
        CoordinatorAnswer {
            dtm_result: Some(FAILURE.to_owned()),
            ..CoordinatorAnswer::error(Self::CONFLICT, message)
        }
    }

    /// Whether this is the answer of a waited `submit`/`abort` whose second phase did not finish
    /// in time (`error` = `not_finished`, with the status it carries).
    pub fn is_not_finished(&self) -> bool {
        self.error.as_deref() == Some(Self::NOT_FINISHED) && self.status.is_some()
    }
}
