//! What the RM's coordinator says about a gid: the Try gate's check and the reconciliation's.
//!
//! An RM trusts one coordinator (the TM it was configured with, `DTM_URL`), and asks it about a
//! gid with DTM's `GET {DTM_URL}/query?gid=<gid>`. DTM answers `200 {"transaction": {"status":
//! ...}, "branches": [{"branch_id", "op", "url", ...}]}`, with `"transaction": null` for a gid it
//! does not know (dtm-labs/dtm `dtmsvr/api_http.go`, `query`); this workspace's coordinator
//! answers the same shape, or `404` for an unknown gid. A flat answer (`{"gid", "status",
//! "branches"}`, as dtmrs gives) is read too. [`CoordinatorClient::query`] turns any of them into a
//! [`GlobalRecord`].
//!
//! Three decisions are made from a record:
//!
//! * [`try_verdict`]: a Try that carries no gid token is accepted only when the record says
//!   `prepared` with this branch registered. That holds for every honest AP, because DTM's order
//!   is register-then-Try; anything else is a Try no global transaction will ever settle, and
//!   freezing funds for it would keep them frozen for good;
//! * [`settle_verdict`]: a Confirm or Cancel carrying neither the coordinator's signature nor the
//!   gid token (a TM that can do neither, such as dtmrs 0.13) is accepted only when the record
//!   says the op is due (`submitted`/`succeed` for a Confirm, `aborting`/`failed` for a Cancel)
//!   with this branch registered;
//! * [`reconcile_verdict`]: what to do with a tentative reservation nobody settled (see
//!   [`crate::reconcile`]).
//!
//! The query never follows a redirect and gives up after a short timeout
//! ([`CoordinatorClient::DEFAULT_TIMEOUT`]): a coordinator that cannot answer is a transient
//! [`QueryError`], never a verdict.

use std::collections::BTreeSet;
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
    /// No such global transaction: `404`, or `200` with `"transaction": null`.
    Unknown,
    /// The global transaction exists.
    Known {
        /// Its status, as the coordinator wrote it (`prepared`, `submitted`, `succeed`,
        /// `aborting`, `failed`; another TM may have more).
        status: String,
        /// The ids of its registered branches (every `branch_id` of the answer's `branches`).
        branch_ids: BTreeSet<String>,
    },
}

impl GlobalRecord {
    /// The status, `None` for an unknown gid or one the coordinator spells otherwise.
    pub fn status(&self) -> Option<GlobalStatus> {
        match self {
            GlobalRecord::Unknown => None,
            GlobalRecord::Known { status, .. } => status.parse().ok(),
        }
    }

    /// Whether `branch_id` is registered under the gid.
    pub fn has_branch(&self, branch_id: &str) -> bool {
        match self {
            GlobalRecord::Unknown => false,
            GlobalRecord::Known { branch_ids, .. } => branch_ids.contains(branch_id),
        }
    }

    /// What the coordinator reported, in words, for error messages and reports: `the gid is
    /// unknown to the coordinator`, `status prepared, branch 02 not registered`, ...
    pub fn describe(&self, branch_id: &str) -> String {
        match self {
            GlobalRecord::Unknown => "the gid is unknown to the coordinator".to_owned(),
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
    /// when it is neither a record nor a `404`.
    pub fn from_answer(status: u16, body: &str) -> Result<GlobalRecord, String> {
        if status == 404 {
            return Ok(GlobalRecord::Unknown);
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
        let branch_ids = value
            .get("branches")
            .and_then(|b| b.as_array())
            .map(|branches| {
                branches
                    .iter()
                    .filter_map(|b| b.get("branch_id").and_then(|id| id.as_str()))
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        Ok(GlobalRecord::Known {
            status: status.to_owned(),
            branch_ids,
        })
    }
}

/// The coordinator could not answer: unreachable, too slow, or an answer that is not a record.
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

/// The Try gate's decision for a Try of `branch_id` without a gid token: `Ok` when `record` says
/// `prepared` with the branch registered; `Err` with what the coordinator reported otherwise.
pub fn try_verdict(record: &GlobalRecord, branch_id: &str) -> Result<(), String> {
    if record.status() == Some(GlobalStatus::Prepared) && record.has_branch(branch_id) {
        Ok(())
    } else {
        Err(record.describe(branch_id))
    }
}

/// Whether the coordinator vouches for an unauthenticated Confirm or Cancel (`op`) of `branch_id`
/// (one carrying neither the coordinator's signature nor the gid token, as dtmrs 0.13 sends
/// them): `Ok` when `record` says the op is due, that is `submitted` or `succeed` for a Confirm,
/// `aborting` or `failed` for a Cancel, with the branch registered; `Err` with what the
/// coordinator reported otherwise (a Try is never vouched for this way: [`try_verdict`]).
///
/// Why this is safe: such a call can then only make the RM do what the coordinator is about to
/// make it do anyway (or already did), a little sooner, and Confirm and Cancel are idempotent
/// behind the barrier. A Confirm before `submit` (the gid only `prepared`), a Cancel of a
/// submitted transaction, or an op of a branch the coordinator does not know stays refused.
pub fn settle_verdict(record: &GlobalRecord, op: Op, branch_id: &str) -> Result<(), String> {
    let due: &[GlobalStatus] = match op {
        Op::Confirm => &[GlobalStatus::Submitted, GlobalStatus::Succeed],
        Op::Cancel => &[GlobalStatus::Aborting, GlobalStatus::Failed],
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
    /// Nothing will ever settle it: the gid is unknown, the branch is not registered under it,
    /// or the transaction is `failed` (its Cancels are done, none released this). Released
    /// through the Cancel business code behind the barrier.
    Release,
    /// The transaction is unfinished (`prepared`, `submitted`, `aborting`): the TM will settle
    /// it (a `prepared` one times out and is cancelled).
    Leave,
    /// The transaction `succeed`ed and yet this is still tentative: its Confirm never reached
    /// this RM. Only reported: releasing it would undo half of a committed transaction, and
    /// confirming it is for a person to decide.
    Report,
}

/// [`ReconcileVerdict`] of a tentative reservation of `branch_id` whose gid has `record`.
pub fn reconcile_verdict(record: &GlobalRecord, branch_id: &str) -> ReconcileVerdict {
    if !record.has_branch(branch_id) {
        return ReconcileVerdict::Release;
    }
    match record.status() {
        Some(GlobalStatus::Failed) => ReconcileVerdict::Release,
        Some(GlobalStatus::Succeed) => ReconcileVerdict::Report,
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
        assert_eq!(
            GlobalRecord::from_answer(404, "{}"),
            Ok(GlobalRecord::Unknown)
        );
        for (status, body) in [(500, "{}"), (302, ""), (200, "<html>"), (200, "{}")] {
            assert!(
                GlobalRecord::from_answer(status, body).is_err(),
                "{status} {body}"
            );
        }
    }

    #[test]
    fn a_try_passes_only_for_a_prepared_transaction_with_its_branch_registered() {
        assert_eq!(try_verdict(&known("prepared", &["01"]), "01"), Ok(()));
        assert_eq!(
            try_verdict(&known("prepared", &["01"]), "02"),
            Err("status prepared, branch 02 not registered".into())
        );
        assert_eq!(
            try_verdict(&known("aborting", &["01"]), "01"),
            Err("status aborting, branch 01 registered".into())
        );
        assert_eq!(
            try_verdict(&GlobalRecord::Unknown, "01"),
            Err("the gid is unknown to the coordinator".into())
        );
    }

    #[test]
    fn a_confirm_or_cancel_is_vouched_for_only_once_the_coordinator_drives_it() {
        for (op, due) in [
            (Op::Confirm, ["submitted", "succeed"]),
            (Op::Cancel, ["aborting", "failed"]),
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
        assert_eq!(reconcile_verdict(&known("failed", &["01"]), "01"), Release);
        assert_eq!(reconcile_verdict(&known("succeed", &["01"]), "01"), Report);
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
