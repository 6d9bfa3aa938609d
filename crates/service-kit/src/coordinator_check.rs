//! What the RM's coordinator says about a gid: the Try gate's check and the reconciliation's.
//!
//! An RM trusts one coordinator (the TM it was configured with, `DTM_URL`), and asks it about a
//! gid with DTM's `GET {DTM_URL}/query?gid=<gid>`. DTM answers `200 {"transaction": {"status":
//! ...}, "branches": [{"branch_id", "op", "url", "bin_data", ...}]}`, with `"transaction": null`
//! for a gid it does not know (dtm-labs/dtm `dtmsvr/api_http.go`, `query`); `bin_data` is the
//! branch data the AP registered, as Go's JSON writes a `[]byte`: standard base64, left out when
//! empty (dtm-labs/dtm `dtmsvr/storage/trans.go`, `TransBranchStore`). This workspace's
//! coordinator answers the same shape with the data as text (`branches[].data`), or `404
//! {"error": "unknown_gid"}` for an unknown gid and `404 {"error": "gid_deleted"}` for one whose
//! transaction retention deleted. A flat answer (`{"gid", "status", "branches"}`, as dtmrs gives,
//! without any branch data) is read too, and so is dtmrs 0.13's `404 {"dtm_result": "FAILURE",
//! "message": "gid 不存在"}` for an unknown gid (dtmrs-server `api.rs`, `query`).
//! [`CoordinatorClient::query`] turns any of them into a [`GlobalRecord`].
//!
//! Only such a positive answer makes a gid unknown: any other `404` (the route-404 of an RM, of
//! the AP, or of a `DTM_URL` missing `/api/dtmsvr`) is a [`QueryError`], since reading it as
//! "unknown" would have the reconciliation release the holds of live transactions.
//!
//! Three decisions are made from a record:
//!
//! * [`try_verdict`]: a Try that carries no gid token is accepted only when the record says
//!   `prepared` with this branch registered, and, when the record carries the branch's data, with
//!   that data as its body ([`same_data`]). That holds for every honest AP, because DTM's order
//!   is register-then-Try and DTM's clients (dtmcli for Go and Python, this workspace's
//!   [`tcc::client`]) register as the branch's data exactly the body they then send to its Try;
//!   anything else is a Try no global transaction will ever settle, and freezing funds for it
//!   would keep them frozen for good. The data check closes a race: `query` is open, so whoever
//!   reaches the RM could watch a gid become `prepared` and send a registered branch's Try before
//!   the AP does, with a body of their own (another account, another amount); the barrier would
//!   then take the AP's Try for a duplicate and the TM's Confirm would apply the other body's
//!   hold. Where the answer carries no data for the branch (dtmrs 0.13; DTM for empty data) the
//!   body cannot be checked and that race stays open: an AP holding `BRANCH_SIGNING_SECRET`
//!   sends the gid token instead, which no one else can forge;
//! * [`settle_verdict`]: a Confirm or Cancel carrying neither the coordinator's signature nor the
//!   gid token (a TM that can do neither, such as dtmrs 0.13) is accepted only when the record
//!   says the op is due (`submitted`/`succeed` for a Confirm, `aborting` for a Cancel) with this
//!   branch registered;
//! * [`reconcile_verdict`]: what to do with a tentative reservation nobody settled (see
//!   [`crate::reconcile`]).
//!
//! The query never follows a redirect and gives up after a short timeout
//! ([`CoordinatorClient::DEFAULT_TIMEOUT`]): a coordinator that cannot answer is a transient
//! [`QueryError`], never a verdict.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use tcc::protocol::{GlobalStatus, Op};

/// Default of `DTM_URL`: the coordinator of `scripts/up.sh`.
pub const DEFAULT_DTM_URL: &str = "http://127.0.0.1:36789/api/dtmsvr";

/// How an RM checks a branch call that carries no gid token (and, for Confirm and Cancel, no
/// signature): setting `TRY_VERIFICATION`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TryVerification {
    /// `coordinator` (the default): such a Try is accepted only when the coordinator reports the
    /// gid `prepared` with the branch registered ([`try_verdict`]), such a Confirm or Cancel
    /// (with `BRANCH_SIGNING_SECRET` set) only when it reports the op due ([`settle_verdict`]).
    /// For APs that are DTM clients (no gid token) and TMs that neither sign nor forward
    /// `branch_headers` (dtmrs 0.13).
    #[default]
    Coordinator,
    /// `token`: no coordinator is ever asked. A Try without a gid token is refused (`401
    /// missing_gid_token`), and so is a Confirm or Cancel with neither a signature nor a token.
    /// For deployments whose APs all send the gid token; needs `BRANCH_SIGNING_SECRET`.
    Token,
    /// `off`: every Try is accepted unchecked, and no coordinator is asked about a Confirm or
    /// Cancel either (without a signature or a token they are refused, as with `token`). For
    /// benchmarks of the RMs alone only: anyone who reaches the RM can then freeze funds under
    /// a gid no TM knows.
    Off,
}

impl std::str::FromStr for TryVerification {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "coordinator" => Ok(TryVerification::Coordinator),
            "token" => Ok(TryVerification::Token),
            "off" => Ok(TryVerification::Off),
            _ => Err("expected coordinator, token or off".into()),
        }
    }
}

impl fmt::Display for TryVerification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TryVerification::Coordinator => "coordinator",
            TryVerification::Token => "token",
            TryVerification::Off => "off",
        })
    }
}

/// What the coordinator knows about one gid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GlobalRecord {
    /// No such global transaction: DTM's `200` with `"transaction": null`, this coordinator's
    /// `404 {"error": "unknown_gid"}`, or dtmrs 0.13's `404` saying `gid 不存在`.
    Unknown,
    /// The global transaction existed and the coordinator's retention deleted it (this
    /// coordinator's `404 {"error": "gid_deleted"}`): it finished, but whether it committed or
    /// rolled back is no longer known.
    Deleted,
    /// The global transaction exists.
    Known {
        /// Its status, as the coordinator wrote it (`prepared`, `submitted`, `succeed`,
        /// `aborting`, `failed`; another TM may have more).
        status: String,
        /// The ids of its registered branches (every `branch_id` of the answer's `branches`).
        branch_ids: BTreeSet<String>,
        /// The data registered for each branch whose entries carry any: every distinct `data`
        /// (text; another JSON value as its JSON text) or decoded `bin_data` (base64) of the
        /// branch's entries. A branch without any (dtmrs 0.13 answers none; DTM leaves empty data
        /// out) is absent.
        branch_data: BTreeMap<String, BTreeSet<Vec<u8>>>,
    },
}

impl GlobalRecord {
    /// The status, `None` for an unknown gid or one the coordinator spells otherwise.
    pub fn status(&self) -> Option<GlobalStatus> {
        match self {
            GlobalRecord::Unknown | GlobalRecord::Deleted => None,
            GlobalRecord::Known { status, .. } => status.parse().ok(),
        }
    }

    /// Whether `branch_id` is registered under the gid.
    pub fn has_branch(&self, branch_id: &str) -> bool {
        match self {
            GlobalRecord::Unknown | GlobalRecord::Deleted => false,
            GlobalRecord::Known { branch_ids, .. } => branch_ids.contains(branch_id),
        }
    }

    /// The data registered for `branch_id` (the `branch_data` of [`GlobalRecord::Known`]); empty when
    /// the answer carries none, or for an unknown gid or branch.
    pub fn branch_data(&self, branch_id: &str) -> impl Iterator<Item = &[u8]> {
        let data = match self {
            GlobalRecord::Unknown | GlobalRecord::Deleted => None,
            GlobalRecord::Known { branch_data, .. } => branch_data.get(branch_id),
        };
        data.into_iter().flatten().map(Vec::as_slice)
    }

    /// What the coordinator reported, in words, for error messages and reports: `the gid is
    /// unknown to the coordinator`, `status prepared, branch 02 not registered`, ...
    pub fn describe(&self, branch_id: &str) -> String {
        match self {
            GlobalRecord::Unknown => "the gid is unknown to the coordinator".to_owned(),
            GlobalRecord::Deleted => {
                "the gid's transaction was deleted by the coordinator's retention".to_owned()
            }
            GlobalRecord::Known { status, .. } => format!(
                "status {status}, branch {branch_id} {}",
                if self.has_branch(branch_id) {
                    "registered"
                } else {
                    "not registered"
                }
            ),
        }
    }

    /// Reads a `query` answer: `status` is its HTTP status, `body` its raw body. `Err` (a message)
    /// when it is not a record, a `404` that is not one of the positive "no such gid" answers
    /// (see the module docs), or a branch's `bin_data` is not base64.
    pub fn from_answer(status: u16, body: &str) -> Result<GlobalRecord, String> {
        if status == 404 {
            return not_found_answer(body);
        }
        if status != 200 {
            return Err(format!("query answered HTTP {status}"));
        }
        let value: serde_json::Value = serde_json::from_str(body)
            .map_err(|e| format!("query answered something that is not JSON: {e}"))?;
        // DTM's shape: {"transaction": {...} | null, "branches": [...]}; dtmrs' flat one:
        // {"gid", "status", "branches": [...]}.
        let transaction = match value.get("transaction") {
            Some(serde_json::Value::Null) => return Ok(GlobalRecord::Unknown),
            Some(transaction) => transaction,
            None => &value,
        };
        let Some(status) = transaction.get("status").and_then(|s| s.as_str()) else {
            return Err("query answered a record without a status".into());
        };
        let mut branch_ids = BTreeSet::new();
        let mut branch_data: BTreeMap<String, BTreeSet<Vec<u8>>> = BTreeMap::new();
        let branches = value.get("branches").and_then(|b| b.as_array());
        for branch in branches.into_iter().flatten() {
            let Some(id) = branch.get("branch_id").and_then(|id| id.as_str()) else {
                continue;
            };
            branch_ids.insert(id.to_owned());
            let data = match (branch.get("data"), branch.get("bin_data")) {
                (Some(serde_json::Value::String(text)), _) => Some(text.as_bytes().to_vec()),
                (Some(serde_json::Value::Null) | None, Some(serde_json::Value::String(b64))) => {
                    Some(base64_decode(b64).ok_or_else(|| {
                        format!("query answered branch {id} with a bin_data that is not base64")
                    })?)
                }
                (Some(serde_json::Value::Null) | None, _) => None,
                (Some(other), _) => Some(other.to_string().into_bytes()),
            };
            if let Some(data) = data {
                branch_data.entry(id.to_owned()).or_default().insert(data);
            }
        }
        Ok(GlobalRecord::Known {
            status: status.to_owned(),
            branch_ids,
            branch_data,
        })
    }
}

/// The message of a `404` that does not say the gid is unknown.
const UNEXPLAINED_404: &str = "the coordinator at DTM_URL answered 404 without saying the gid is \
     unknown: is DTM_URL the coordinator's /api/dtmsvr?";

/// A `404` answer of `query`: [`GlobalRecord::Unknown`] or [`GlobalRecord::Deleted`] when its body
/// says so (this coordinator's `error` code, dtmrs 0.13's `FAILURE` with `gid 不存在`), `Err`
/// otherwise.
fn not_found_answer(body: &str) -> Result<GlobalRecord, String> {
    let value: serde_json::Value =
        serde_json::from_str(body).map_err(|_| UNEXPLAINED_404.to_owned())?;
    let text = |key: &str| value.get(key).and_then(|v| v.as_str());
    match (text("error"), text("dtm_result"), text("message")) {
        (Some("unknown_gid"), _, _) => Ok(GlobalRecord::Unknown),
        (Some("gid_deleted"), _, _) => Ok(GlobalRecord::Deleted),
        (None, Some("FAILURE"), Some("gid 不存在")) => Ok(GlobalRecord::Unknown),
        _ => Err(UNEXPLAINED_404.to_owned()),
    }
}

/// Decodes standard base64 with padding (RFC 4648 section 4), as Go's `encoding/json` writes a
/// `[]byte`; `None` for anything else (the `base64` crate's strict standard engine: no missing
/// padding, no URL-safe alphabet, no stray bits).
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

/// Whether a Try's `body` is the `registered` branch data: the same JSON value when both parse as
/// JSON (so object key order, whitespace and escapes do not matter: Python's dtmcli registers
/// `json.dumps(body)` and sends the body through `requests`, whose spacing may differ), the same
/// bytes otherwise. A text with a repeated object key does not count as JSON here: which of its
/// values a reader takes is up to the reader, so it is compared byte for byte.
pub fn same_data(body: &[u8], registered: &[u8]) -> bool {
    match (strict_json(body), strict_json(registered)) {
        (Some(body), Some(registered)) => body == registered,
        _ => body == registered,
    }
}

/// `text` as a JSON value, `None` when it is not JSON or repeats a key within an object.
fn strict_json(text: &[u8]) -> Option<serde_json::Value> {
    serde_json::from_slice::<StrictJson>(text).ok().map(|v| v.0)
}

/// A JSON value read with repeated object keys refused.
struct StrictJson(serde_json::Value);

impl<'de> serde::Deserialize<'de> for StrictJson {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = StrictJson;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value without repeated object keys")
    }

    fn visit_bool<E>(self, v: bool) -> Result<StrictJson, E> {
        Ok(StrictJson(v.into()))
    }

    fn visit_i64<E>(self, v: i64) -> Result<StrictJson, E> {
        Ok(StrictJson(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<StrictJson, E> {
        Ok(StrictJson(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<StrictJson, E> {
        Ok(StrictJson(v.into()))
    }

    fn visit_str<E>(self, v: &str) -> Result<StrictJson, E> {
        Ok(StrictJson(v.into()))
    }

    fn visit_string<E>(self, v: String) -> Result<StrictJson, E> {
        Ok(StrictJson(v.into()))
    }

    fn visit_unit<E>(self) -> Result<StrictJson, E> {
        Ok(StrictJson(serde_json::Value::Null))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<StrictJson, A::Error> {
        let mut items = Vec::new();
        while let Some(StrictJson(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(StrictJson(items.into()))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<StrictJson, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(serde::de::Error::custom(format!("repeated key {key:?}")));
            }
            let StrictJson(value) = map.next_value()?;
            object.insert(key, value);
        }
        Ok(StrictJson(object.into()))
    }
}

/// The coordinator could not answer: unreachable, too slow, or an answer that is not a record
/// (a `404` that does not say the gid is unknown included: a misconfigured `DTM_URL`).
/// Transient: the caller answers `503` (a Try) or leaves the reservation alone (reconciliation).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the coordinator could not be asked about the gid: {0}")]
pub struct QueryError(pub String);

/// Asks the RM's coordinator about gids (`GET {DTM_URL}/query?gid=`). Cheap to clone: the
/// connection pool is shared.
#[derive(Debug, Clone)]
pub struct CoordinatorClient {
    http: reqwest::Client,
    dtm_url: String,
}

impl CoordinatorClient {
    /// The timeout of one query, connection included: 2 seconds. A Try (and an unsigned
    /// Confirm/Cancel) waits for it, so it is short; a coordinator slower than that answers the
    /// call `503`, which the AP takes as a transient failure and aborts, and the TM retries.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

    /// A client for the coordinator at `dtm_url` (its `/api/dtmsvr` base), giving up on a query
    /// after `timeout`. Redirects are not followed: a redirected query is a [`QueryError`].
    pub fn new(dtm_url: &str, timeout: Duration) -> CoordinatorClient {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(timeout)
            .pool_idle_timeout(tcc::client::POOL_IDLE_TIMEOUT)
            .build()
            .expect("the HTTP client's TLS backend initialises");
        CoordinatorClient {
            http,
            dtm_url: dtm_url.trim_end_matches('/').to_owned(),
        }
    }

    /// The coordinator's base URL.
    pub fn dtm_url(&self) -> &str {
        &self.dtm_url
    }

    /// What the coordinator knows about `gid`.
    pub async fn query(&self, gid: &str) -> Result<GlobalRecord, QueryError> {
        let response = self
            .http
            .get(format!("{}/query", self.dtm_url))
            .query(&[("gid", gid)])
            .send()
            .await
            .map_err(|e| QueryError(describe(&e)))?;
        let status = response.status().as_u16();
        let body = response
            .text()
            .await
            .map_err(|e| QueryError(describe(&e)))?;
        GlobalRecord::from_answer(status, &body).map_err(QueryError)
    }
}

/// A transport failure in words that name no address (the message reaches the Try's caller).
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "no answer in time".to_owned()
    } else if e.is_connect() {
        "it could not be reached".to_owned()
    } else {
        "the request failed before an answer was read".to_owned()
    }
}

/// Why the Try gate refused a Try without a gid token ([`try_verdict`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TryRefusal {
    /// The coordinator does not report the gid `prepared` with the branch registered; what it
    /// reported ([`GlobalRecord::describe`]).
    NotRegistered(String),
    /// The branch is registered under a `prepared` gid, but the Try's body is not the data
    /// registered for it ([`same_data`]).
    OtherData,
}

/// The Try gate's decision for a Try of `branch_id` without a gid token, with raw body `body`:
/// `Ok` when `record` says `prepared` with the branch registered and `body` is the same data as
/// every data `record` carries for the branch ([`same_data`]; nothing to compare when it carries
/// none, as with dtmrs 0.13); [`TryRefusal`] otherwise.
pub fn try_verdict(record: &GlobalRecord, branch_id: &str, body: &[u8]) -> Result<(), TryRefusal> {
    if record.status() != Some(GlobalStatus::Prepared) || !record.has_branch(branch_id) {
        return Err(TryRefusal::NotRegistered(record.describe(branch_id)));
    }
    if record
        .branch_data(branch_id)
        .all(|registered| same_data(body, registered))
    {
        Ok(())
    } else {
        Err(TryRefusal::OtherData)
    }
}

/// Whether the coordinator vouches for an unauthenticated Confirm or Cancel (`op`) of `branch_id`
/// (one carrying neither the coordinator's signature nor the gid token, as dtmrs 0.13 sends
/// them): `Ok` when `record` says the op is due, that is `submitted` or `succeed` for a Confirm,
/// `aborting` for a Cancel, with the branch registered; `Err` with what the coordinator reported
/// otherwise (a Try is never vouched for this way: [`try_verdict`]).
///
/// Why this is safe: such a call can then only make the RM do what the coordinator is about to
/// make it do anyway (or already did), a little sooner, and Confirm and Cancel are idempotent
/// behind the barrier. A Confirm before `submit` (the gid only `prepared`), a Cancel of a
/// submitted transaction, or an op of a branch the coordinator does not know stays refused.
/// `failed` does not vouch for a Cancel: an admin's force-stop moves a `submitted` transaction
/// there too, whose other branches may already be confirmed, and after a real rollback the
/// barrier already holds the Cancel, so a late one is not needed.
pub fn settle_verdict(record: &GlobalRecord, op: Op, branch_id: &str) -> Result<(), String> {
    let due: &[GlobalStatus] = match op {
        Op::Confirm => &[GlobalStatus::Submitted, GlobalStatus::Succeed],
        Op::Cancel => &[GlobalStatus::Aborting],
        Op::Try => &[],
    };
    match record.status() {
        Some(status) if due.contains(&status) && record.has_branch(branch_id) => Ok(()),
        _ => Err(record.describe(branch_id)),
    }
}

/// What the reconciliation does with a tentative reservation of `branch_id`, by its gid's
/// `record`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReconcileVerdict {
    /// Nothing will ever settle it: the coordinator says the gid is unknown, or the branch is
    /// not registered under it. Released through the Cancel business code behind the barrier.
    Release,
    /// The transaction is unfinished (`prepared`, `submitted`, `aborting`): the TM will settle
    /// it (a `prepared` one times out and is cancelled).
    Leave,
    /// Only reported, for a person to decide: the transaction `succeed`ed and yet this is still
    /// tentative (its Confirm never reached this RM; releasing it would undo half of a committed
    /// transaction); or it is `failed`, which is a rollback but also what an admin's force-stop
    /// makes of a `submitted` transaction whose other branches may be confirmed already; or
    /// retention deleted it, so how it ended is no longer known.
    Report,
}

/// [`ReconcileVerdict`] of a tentative reservation of `branch_id` whose gid has `record`.
pub fn reconcile_verdict(record: &GlobalRecord, branch_id: &str) -> ReconcileVerdict {
    if *record == GlobalRecord::Deleted {
        return ReconcileVerdict::Report;
    }
    if !record.has_branch(branch_id) {
        return ReconcileVerdict::Release;
    }
    match record.status() {
        Some(GlobalStatus::Failed | GlobalStatus::Succeed) => ReconcileVerdict::Report,
        // Unfinished, or a status this RM does not know: the TM is still at work.
        _ => ReconcileVerdict::Leave,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(status: &str, ids: &[&str]) -> GlobalRecord {
        GlobalRecord::Known {
            status: status.into(),
            branch_ids: ids.iter().map(|s| s.to_string()).collect(),
            branch_data: BTreeMap::new(),
        }
    }

    /// A `prepared` record with branch `01` registered with each of `data`.
    fn prepared_with_data(data: &[&str]) -> GlobalRecord {
        GlobalRecord::Known {
            status: "prepared".into(),
            branch_ids: ["01".to_owned()].into(),
            branch_data: [(
                "01".to_owned(),
                data.iter().map(|d| d.as_bytes().to_vec()).collect(),
            )]
            .into(),
        }
    }

    #[test]
    fn query_answers_of_dtm_this_coordinator_and_dtmrs_are_read() {
        let dtm = r#"{"transaction": {"gid": "g", "status": "prepared"},
                      "branches": [{"branch_id": "01", "op": "cancel"},
                                   {"branch_id": "01", "op": "confirm"}]}"#;
        assert_eq!(
            GlobalRecord::from_answer(200, dtm),
            Ok(known("prepared", &["01"]))
        );
        // DTM's bin_data: base64 of {"amount":30}; this coordinator's data: the text.
        let dtm = r#"{"transaction": {"gid": "g", "status": "prepared"},
                      "branches": [{"branch_id": "01", "op": "cancel", "bin_data": "eyJhbW91bnQiOjMwfQ=="},
                                   {"branch_id": "01", "op": "confirm", "bin_data": "eyJhbW91bnQiOjMwfQ=="}]}"#;
        assert_eq!(
            GlobalRecord::from_answer(200, dtm),
            Ok(prepared_with_data(&[r#"{"amount":30}"#]))
        );
        let ours = r#"{"transaction": {"gid": "g", "status": "prepared"},
                       "branches": [{"branch_id": "01", "op": "confirm", "data": "{\"amount\":30}"}]}"#;
        assert_eq!(
            GlobalRecord::from_answer(200, ours),
            Ok(prepared_with_data(&[r#"{"amount":30}"#]))
        );
        let bad = r#"{"transaction": {"status": "prepared"},
                      "branches": [{"branch_id": "01", "bin_data": "not base64!"}]}"#;
        assert!(GlobalRecord::from_answer(200, bad).is_err());
        let unknown = r#"{"transaction": null, "branches": []}"#;
        assert_eq!(
            GlobalRecord::from_answer(200, unknown),
            Ok(GlobalRecord::Unknown)
        );
        let flat = r#"{"gid": "g", "status": "submitted", "branches": [{"branch_id": "02"}]}"#;
        assert_eq!(
            GlobalRecord::from_answer(200, flat),
            Ok(known("submitted", &["02"]))
        );
        for unknown in [
            r#"{"error": "unknown_gid", "message": "no global transaction g"}"#,
            r#"{"dtm_result": "FAILURE", "message": "gid 不存在"}"#,
        ] {
            assert_eq!(
                GlobalRecord::from_answer(404, unknown),
                Ok(GlobalRecord::Unknown),
                "{unknown}"
            );
        }
        assert_eq!(
            GlobalRecord::from_answer(404, r#"{"error": "gid_deleted"}"#),
            Ok(GlobalRecord::Deleted)
        );
        // A route-404 (an RM, the AP, a DTM_URL without /api/dtmsvr) says nothing about the gid.
        for (status, body) in [
            (404, "{}"),
            (404, ""),
            (404, "Not Found"),
            (404, r#"{"error": "not_found", "message": "no route"}"#),
            (404, r#"{"dtm_result": "FAILURE", "message": "no route"}"#),
            (500, "{}"),
            (302, ""),
            (200, "<html>"),
            (200, "{}"),
        ] {
            assert!(
                GlobalRecord::from_answer(status, body).is_err(),
                "{status} {body}"
            );
        }
    }

    #[test]
    fn a_try_passes_only_for_a_prepared_transaction_with_its_branch_registered() {
        let body = br#"{"amount":30}"#;
        assert_eq!(try_verdict(&known("prepared", &["01"]), "01", body), Ok(()));
        assert_eq!(
            try_verdict(&known("prepared", &["01"]), "02", body),
            Err(TryRefusal::NotRegistered(
                "status prepared, branch 02 not registered".into()
            ))
        );
        assert_eq!(
            try_verdict(&known("aborting", &["01"]), "01", body),
            Err(TryRefusal::NotRegistered(
                "status aborting, branch 01 registered".into()
            ))
        );
        assert_eq!(
            try_verdict(&GlobalRecord::Unknown, "01", body),
            Err(TryRefusal::NotRegistered(
                "the gid is unknown to the coordinator".into()
            ))
        );
    }

    #[test]
    fn a_try_passes_only_with_the_data_registered_for_its_branch_when_the_record_carries_it() {
        let registered = prepared_with_data(&[r#"{"account_id":1,"amount":30}"#]);
        for same in [
            r#"{"account_id":1,"amount":30}"#,
            r#"{ "amount": 30, "account_id": 1 }"#,
            "{\"amount\":30,\n\"account_\\u0069d\":1}",
        ] {
            assert_eq!(
                try_verdict(&registered, "01", same.as_bytes()),
                Ok(()),
                "{same}"
            );
        }
        for other in [
            r#"{"account_id":2,"amount":30}"#,
            r#"{"account_id":1,"amount":31}"#,
            r#"{"account_id":1,"amount":30,"fault":{"try":"failure"}}"#,
            r#"{"account_id":2,"account_id":1,"amount":30}"#,
            "",
            "not json",
        ] {
            assert_eq!(
                try_verdict(&registered, "01", other.as_bytes()),
                Err(TryRefusal::OtherData),
                "{other}"
            );
        }
        // Data that is not JSON is compared byte for byte.
        let raw = prepared_with_data(&["not json"]);
        assert_eq!(try_verdict(&raw, "01", b"not json"), Ok(()));
        assert_eq!(
            try_verdict(&raw, "01", b"not  json"),
            Err(TryRefusal::OtherData)
        );
        // Entries of one branch that disagree: no body is all of them.
        let split = prepared_with_data(&[r#"{"amount":1}"#, r#"{"amount":2}"#]);
        assert_eq!(
            try_verdict(&split, "01", br#"{"amount":1}"#),
            Err(TryRefusal::OtherData)
        );
    }

    #[test]
    fn base64_is_read_as_gos_json_writes_a_byte_slice() {
        for (text, bytes) in [
            ("", &b""[..]),
            ("Zg==", b"f"),
            ("Zm8=", b"fo"),
            ("Zm9v", b"foo"),
            ("Zm9vYg==", b"foob"),
            ("+/8=", &[0xfb, 0xff]),
        ] {
            assert_eq!(base64_decode(text).as_deref(), Some(bytes), "{text}");
        }
        for bad in [
            "Zg", "Zg=", "Z===", "Zg==Zg==", "Zh==", "Zm9v\n", "Zm-v", "Zm_v",
        ] {
            assert_eq!(base64_decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_confirm_or_cancel_is_vouched_for_only_once_the_coordinator_drives_it() {
        for (op, due) in [
            (Op::Confirm, &["submitted", "succeed"][..]),
            // Not `failed`: a force-stopped `submitted` transaction is `failed` too.
            (Op::Cancel, &["aborting"][..]),
        ] {
            for status in [
                "prepared",
                "submitted",
                "succeed",
                "aborting",
                "failed",
                "weird",
            ] {
                assert_eq!(
                    settle_verdict(&known(status, &["01"]), op, "01").is_ok(),
                    due.contains(&status),
                    "{op} {status}"
                );
            }
            assert_eq!(
                settle_verdict(&known(due[0], &["01"]), op, "02"),
                Err(format!("status {}, branch 02 not registered", due[0]))
            );
            assert!(settle_verdict(&GlobalRecord::Unknown, op, "01").is_err());
            assert!(settle_verdict(&GlobalRecord::Deleted, op, "01").is_err());
        }
        assert!(settle_verdict(&known("prepared", &["01"]), Op::Try, "01").is_err());
    }

    #[test]
    fn reconciliation_releases_only_what_nothing_will_settle() {
        use ReconcileVerdict::*;
        assert_eq!(reconcile_verdict(&GlobalRecord::Unknown, "01"), Release);
        assert_eq!(
            reconcile_verdict(&known("prepared", &["02"]), "01"),
            Release
        );
        assert_eq!(reconcile_verdict(&known("failed", &["01"]), "01"), Report);
        assert_eq!(reconcile_verdict(&known("succeed", &["01"]), "01"), Report);
        assert_eq!(reconcile_verdict(&GlobalRecord::Deleted, "01"), Report);
        for unfinished in ["prepared", "submitted", "aborting", "weird"] {
            assert_eq!(
                reconcile_verdict(&known(unfinished, &["01"]), "01"),
                Leave,
                "{unfinished}"
            );
        }
    }

    #[test]
    fn the_verification_setting_parses() {
        assert_eq!(
            "Coordinator".parse::<TryVerification>(),
            Ok(TryVerification::Coordinator)
        );
        assert_eq!("off".parse::<TryVerification>(), Ok(TryVerification::Off));
        assert_eq!(
            " token ".parse::<TryVerification>(),
            Ok(TryVerification::Token)
        );
        assert!("none".parse::<TryVerification>().is_err());
    }
}
