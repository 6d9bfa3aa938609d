//! The AP side: start a TCC global transaction against any DTM-compatible coordinator and call
//! its branches (DTM's `dtmcli.TccGlobalTransaction` and `Tcc.CallBranch`).
//!
//! The flow of [`TccClient::tcc_global_transaction`]:
//!
//! 1. `POST {dtm}/prepare` creates the global transaction in `prepared`;
//! 2. the business closure runs; each [`Tcc::call_branch`] registers the branch's Confirm and
//!    Cancel URLs with the TM (`registerBranch`), *then* calls the branch's Try itself. Registering
//!    first is what lets the TM cancel a branch whose Try timed out half-way;
//! 3. the closure returned `Ok`: `POST {dtm}/submit`, and the TM drives every Confirm;
//!    it returned `Err` (or panicked): `POST {dtm}/abort` with the error as rollback reason, and
//!    the TM drives every Cancel, including the failed branch's (an empty compensation there).
//!
//! ```no_run
//! use tcc::client::{TccClient, TransOptions};
//! use serde_json::json;
//!
//! # async fn transfer() -> Result<(), tcc::client::TccError> {
//! let client = TccClient::new("http://localhost:36789/api/dtmsvr");
//! let gid = client.new_gid().await?;
//! let options = TransOptions { wait_result: true, ..TransOptions::default() };
//! let outcome = client
//!     .tcc_global_transaction(&gid, options, |tcc| async move {
//!         let body = json!({"account_id": 1, "amount": 30});
//!         tcc.call_branch(&body, "http://localhost:8081/api/TransOutTry",
//!             "http://localhost:8081/api/TransOutConfirm", "http://localhost:8081/api/TransOutCancel").await?;
//!         tcc.call_branch(&body, "http://localhost:8082/api/TransInTry",
//!             "http://localhost:8082/api/TransInConfirm", "http://localhost:8082/api/TransInCancel").await?;
//!         Ok::<(), tcc::client::BranchError>(())
//!     })
//!     .await?;
//! println!("{} ended {}", outcome.gid, outcome.status);
//! # Ok(()) }
//! ```
//!
//! **Try reports** (an extension of this project's coordinator, not DTM's protocol): after each
//! Try, [`Tcc::call_branch`] reports what it saw (branch id, URL, outcome, HTTP status, latency),
//! so that the coordinator's sequence diagram of the transaction shows the Try calls, which only
//! the AP sees. The handle of [`TccClient::tcc_global_transaction`] does not spend a request on
//! it: the report rides with the next call it makes to the coordinator anyway (the next
//! `registerBranch`, or `submit`/`abort`) in the field `try_reports`, a string holding a JSON
//! array of reports, because DTM's `registerBranch` body is a flat map of strings (DTM ignores the
//! field). A nested handle ([`TccClient::tcc_from_query`]) makes no such later call, so it sends
//! each report at once with `POST {dtm}/reportTry`. Reporting is best-effort: a failed report is
//! logged and never fails the branch; a coordinator that does not know `reportTry` (DTM answers
//! 404) is not asked again by this client. [`TccClient::without_try_reports`] turns it off.
//!
//! **Nested TCC** (DTM's `TccFromQuery`): a branch whose Try is itself an AP rebuilds the
//! [`Tcc`] handle of the *same* global transaction from its Try request with
//! [`TccClient::tcc_from_query`] and calls child branches through it; their ids extend the
//! parent's ("02" → "0201", "0202", ...). The outer AP still owns prepare, submit and abort.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use serde::{Deserialize, Serialize};

use crate::protocol::{
    BranchIdGenerator, BranchOutcome, BranchQuery, CoordinatorAnswer, GlobalStatus, Op,
    ProtocolError, TransType, FAILURE,
};
use crate::signing::{gid_token, SigningSecret, GID_TOKEN_HEADER};

/// Options of one global transaction, sent with `prepare` under DTM's JSON names
/// (`dtmimp.TransOptions`). Unset options take the coordinator's defaults.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct TransOptions {
    /// Ask `submit`/`abort` to answer only once the second phase finished, with the final status.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub wait_result: bool,
    /// Seconds after which the TM aborts a transaction still `prepared` (the AP died or hung).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_to_fail: Option<u64>,
    /// Seconds: the base of the TM's exponential backoff between Confirm/Cancel attempts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_interval: Option<u64>,
    /// Seconds: the timeout of each branch call, the AP's Try calls included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_timeout: Option<u64>,
    /// Extra HTTP headers sent with every branch call (Try, Confirm and Cancel).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub branch_headers: BTreeMap<String, String>,
}

/// Talking to the coordinator failed, or it refused a call. Business refusals of a branch's Try
/// are not `TccError`s: they are the closure's `Err` and end in an abort.
#[derive(Debug, thiserror::Error)]
pub enum TccError {
    /// The coordinator could not be reached or its answer could not be read.
    #[error("coordinator call {call} failed: {message}")]
    Transport {
        /// `prepare`, `registerBranch`, `submit`, ...
        call: &'static str,
        /// What went wrong, from the HTTP client.
        message: String,
    },
    /// The coordinator answered with an error: 409 (FAILURE, e.g. a submit of a transaction
    /// that timed out and is being aborted), 4xx for a malformed request, or 5xx.
    #[error("coordinator refused {call}: HTTP {status}: {message}")]
    Refused {
        /// `prepare`, `registerBranch`, `submit`, ...
        call: &'static str,
        /// The HTTP status the coordinator answered.
        status: u16,
        /// The `message` of its answer, or the raw body.
        message: String,
    },
    /// A protocol value was malformed (too many branches, say).
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
}

/// Why a [`Tcc::call_branch`] did not succeed. Returning it from the business closure (with `?`)
/// aborts the global transaction with its text as rollback reason.
#[derive(Debug, thiserror::Error)]
pub enum BranchError {
    /// The branch's Try refused (HTTP 409 / FAILURE): a business failure such as insufficient
    /// funds.
    #[error("branch {branch_id} Try refused: {message}")]
    Failure {
        /// The refused branch.
        branch_id: String,
        /// The branch's message.
        message: String,
    },
    /// The branch's Try answered ONGOING (425). A Try must decide; the AP treats this as failed.
    #[error("branch {branch_id} Try answered ONGOING")]
    Ongoing {
        /// The branch.
        branch_id: String,
    },
    /// The Try call failed transiently: timeout, refused connection, 5xx.
    #[error("branch {branch_id} Try failed: {message}")]
    Transient {
        /// The branch.
        branch_id: String,
        /// What went wrong.
        message: String,
    },
    /// Registering the branch with the coordinator failed; its Try was not called.
    #[error("registering the branch failed: {0}")]
    Register(#[from] TccError),
}

/// The answer of a successful Try.
#[derive(Debug, Clone)]
pub struct BranchResponse {
    /// The branch id the Try ran under.
    pub branch_id: String,
    /// The HTTP status (2xx).
    pub status: u16,
    /// The raw body.
    pub body: String,
}

/// How a global transaction ended, as far as the AP knows.
#[derive(Debug)]
pub struct GlobalOutcome<T, E> {
    /// The global transaction id.
    pub gid: String,
    /// The status the coordinator reported. With `wait_result` and this project's coordinator it
    /// is final (`succeed`/`failed`) unless the second phase outlasted the wait; a coordinator
    /// that does not report it (DTM) yields `submitted` or `aborting`.
    pub status: GlobalStatus,
    /// The closure's result: `Ok` was submitted, `Err` was aborted with its text as reason.
    pub result: Result<T, E>,
}

/// How long an idle keep-alive connection is kept for reuse: less than actix-web's default
/// keep-alive (5 s), so that a client never sends a request on a connection the server is
/// closing at that instant (the request would fail with "error sending request" and a Confirm
/// would wait out a retry). Used by every HTTP client of this workspace that calls its services.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(4);

/// How long a Try report ([`Tcc::call_branch`]) may take before the client gives up on it.
pub const TRY_REPORT_TIMEOUT: Duration = Duration::from_secs(2);

/// A handle on a DTM-compatible coordinator, e.g. `http://localhost:36789/api/dtmsvr`.
/// Cheap to clone; share one per process so connections are kept alive.
#[derive(Debug, Clone)]
pub struct TccClient {
    http: reqwest::Client,
    dtm: Arc<str>,
    /// Whether Trys are reported to this coordinator (see the module docs); shared by clones, and
    /// turned off for good when the coordinator does not know `reportTry`.
    try_reports: Arc<AtomicBool>,
    /// The shared secret the gid tokens are made with ([`TccClient::with_gid_tokens`]).
    gid_tokens: Option<SigningSecret>,
}

impl TccClient {
    /// A client for the coordinator at `dtm` (its `/api/dtmsvr` base URL), with its own
    /// connection pool.
    ///
    /// Redirects are never followed: a redirected Try has not run where it was registered, and
    /// is read as a transient error (only exactly 200 is a success).
    pub fn new(dtm: impl AsRef<str>) -> Self {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build()
            .expect("the HTTP client's TLS backend initialises");
        Self::with_http_client(http, dtm)
    }

    /// A client reusing an existing `reqwest::Client` (and its connection pool).
    pub fn with_http_client(http: reqwest::Client, dtm: impl AsRef<str>) -> Self {
        TccClient {
            http,
            dtm: Arc::from(dtm.as_ref().trim_end_matches('/')),
            try_reports: Arc::new(AtomicBool::new(true)),
            gid_tokens: None,
        }
    }

    /// This client with the RMs' shared secret (`BRANCH_SIGNING_SECRET`): every global
    /// transaction it prepares carries the gid's token ([`crate::signing::gid_token`]) in its
    /// `branch_headers` under [`GID_TOKEN_HEADER`], so that its Try calls, and the TM's Confirm
    /// and Cancel calls (a DTM-compatible TM forwards `branch_headers`), are authorized by RMs
    /// holding the same secret. A handle from [`TccClient::tcc_from_query`] sends the token with
    /// its child Trys too. `None` sends no token (RMs then check each Try with their
    /// coordinator).
    pub fn with_gid_tokens(self, secret: Option<SigningSecret>) -> Self {
        TccClient {
            gid_tokens: secret,
            ..self
        }
    }

    /// The `branch_headers` of a global transaction `gid` started with `options`: the caller's,
    /// plus the gid token when this client has a secret (it replaces a caller's value of that
    /// header: only the token for `gid` can authorize its branches).
    fn branch_headers(&self, gid: &str, options: &TransOptions) -> BTreeMap<String, String> {
        let mut headers = options.branch_headers.clone();
        if let Some(secret) = &self.gid_tokens {
            headers.retain(|name, _| !name.eq_ignore_ascii_case(GID_TOKEN_HEADER));
            headers.insert(GID_TOKEN_HEADER.to_owned(), gid_token(secret, gid));
        }
        headers
    }

    /// This client without Try reports: [`Tcc::call_branch`] sends no `reportTry`, and the
    /// coordinator's diagrams say the Trys were not reported (as for a DTM client). Clones made
    /// before keep reporting.
    pub fn without_try_reports(self) -> Self {
        TccClient {
            try_reports: Arc::new(AtomicBool::new(false)),
            ..self
        }
    }

    /// Whether [`Tcc::call_branch`] reports Trys to the coordinator: `true` unless turned off with
    /// [`TccClient::without_try_reports`] or after the coordinator answered that it does not
    /// know the call.
    pub fn reports_trys(&self) -> bool {
        self.try_reports.load(Ordering::Relaxed)
    }

    /// The coordinator's base URL.
    pub fn dtm_url(&self) -> &str {
        &self.dtm
    }

    /// Asks the coordinator for a fresh gid (`GET {dtm}/newGid`).
    pub async fn new_gid(&self) -> Result<String, TccError> {
        let call = "newGid";
        let response = self
            .http
            .get(format!("{}/{call}", self.dtm))
            .send()
            .await
            .map_err(|e| transport(call, e))?;
        let answer = read_answer(call, response).await?;
        answer.gid.ok_or(TccError::Refused {
            call,
            status: 200,
            message: "the answer has no gid".into(),
        })
    }

    /// Rebuilds the [`Tcc`] handle of an existing global transaction from the query of a Try
    /// request, so that the branch serving it can act as an AP and add child branches to the
    /// same global transaction: nested TCC, DTM's `TccFromQuery` (`dtmcli/tcc.go`; Python
    /// `dtmcli.tcc.tcc_from_req(dtm, gid, branch_id)`).
    ///
    /// The handle has `query.gid` as gid and `query.branch_id` as parent id, so its
    /// [`Tcc::call_branch`] calls number the children `<branch_id>01`, `<branch_id>02`, ...
    /// ("0201", "0202" under branch "02"). It talks to the coordinator named by the query's
    /// `dtm` field, which [`Tcc::call_branch`] sends with every Try, or to this client's own
    /// coordinator when the field is absent (a caller that does not send it). Requests go
    /// through this client's HTTP connection pool. The handle carries default
    /// [`TransOptions`]: the outer AP's options (request timeout, branch headers) are not part
    /// of the Try request, as in DTM.
    ///
    /// Nothing is sent here, and the handle must not be used to prepare, submit or abort: the
    /// outer AP does that for the whole global transaction, children included. Confirm and
    /// Cancel of the children are driven by the TM like any branch's, the last registered first,
    /// so a child registered by a nested Try is confirmed or cancelled before its parent.
    ///
    /// The branch trusts the `dtm` URL of its caller, as DTM's clients do: expose nested Try
    /// endpoints only where APs (not arbitrary clients) can reach them.
    ///
    /// Errors ([`TccError::Protocol`]): the query is not a Try (`op` is confirm or cancel, when no
    /// child may register any more), its gid or branch id is malformed, or its `dtm` is not an
    /// absolute `http(s)://` URL.
    ///
    /// ```no_run
    /// use serde_json::json;
    /// use tcc::client::{BranchError, TccClient};
    /// use tcc::protocol::BranchQuery;
    ///
    /// /// The Try of branch "02", itself an AP: its child is branch "0201".
    /// async fn nested_try(client: &TccClient, query: &BranchQuery) -> Result<(), BranchError> {
    ///     let tcc = client.tcc_from_query(query)?;
    ///     tcc.call_branch(
    ///         &json!({"account_id": 1, "amount": 30}),
    ///         "http://localhost:8082/api/TransInTry",
    ///         "http://localhost:8082/api/TransInConfirm",
    ///         "http://localhost:8082/api/TransInCancel",
    ///     )
    ///     .await?; // registered and tried as branch "0201"
    ///     Ok(())
    /// }
    /// ```
    pub fn tcc_from_query(&self, query: &BranchQuery) -> Result<Tcc, TccError> {
        query.validate()?;
        if query.op != Op::Try {
            return Err(ProtocolError(format!(
                "a nested transaction is built from a Try request, not from {}",
                query.op
            ))
            .into());
        }
        let client = match query.dtm.as_deref() {
            Some(dtm) if !dtm.is_empty() => {
                check_dtm_url(dtm)?;
                let client = TccClient::with_http_client(self.http.clone(), dtm);
                if self.reports_trys() {
                    client
                } else {
                    client.without_try_reports()
                }
            }
            _ => self.clone(),
        };
        // The outer AP's options are not part of the Try request; the gid token is computed
        // again from the secret, for the child Trys.
        let options = TransOptions {
            branch_headers: self.branch_headers(&query.gid, &TransOptions::default()),
            ..TransOptions::default()
        };
        Ok(Tcc {
            inner: Arc::new(TccInner {
                client,
                gid: query.gid.clone(),
                options,
                ids: Mutex::new(BranchIdGenerator::new(query.branch_id.clone())),
                carried_reports: None,
            }),
        })
    }

    /// Runs one TCC global transaction with id `gid` (see the module docs for the flow).
    ///
    /// Returns `Ok` with the closure's result once the transaction was submitted (closure `Ok`)
    /// or aborted (closure `Err`). Returns `Err` when the coordinator could not be reached or
    /// refused `prepare`/`submit`/`abort`. If the closure panics, the transaction is aborted and
    /// the panic resumes, as DTM's Go client re-panics.
    pub async fn tcc_global_transaction<T, E, F, Fut>(
        &self,
        gid: &str,
        options: TransOptions,
        busi: F,
    ) -> Result<GlobalOutcome<T, E>, TccError>
    where
        F: FnOnce(Tcc) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: Display,
    {
        crate::protocol::validate_gid(gid)?;
        let options = TransOptions {
            branch_headers: self.branch_headers(gid, &options),
            ..options
        };
        let mut prepare = serde_json::to_value(&options).expect("options serialize");
        prepare["gid"] = gid.into();
        prepare["trans_type"] = TransType::Tcc.as_str().into();
        self.call_dtm("prepare", &prepare, None).await?;

        let tcc = Tcc {
            inner: Arc::new(TccInner {
                client: self.clone(),
                gid: gid.to_owned(),
                options: options.clone(),
                ids: Mutex::new(BranchIdGenerator::new("")),
                carried_reports: Some(Mutex::new(Vec::new())),
            }),
        };
        // Kept to collect the Try reports still waiting for submit/abort after the closure.
        let handle = tcc.clone();
        let mut finish = serde_json::json!({
            "gid": gid,
            "trans_type": TransType::Tcc.as_str(),
            "wait_result": options.wait_result,
        });
        // Waiting for the second phase may take up to the transaction's request timeout on the
        // coordinator side; give the HTTP call that much on top of the default.
        let wait = options.wait_result.then(|| {
            Duration::from_secs(
                options
                    .request_timeout
                    .unwrap_or(10)
                    .saturating_mul(4)
                    .saturating_add(30),
            )
        });

        let ended = AssertUnwindSafe(busi(tcc)).catch_unwind().await;
        // The last Trys' reports ride with submit or abort; no later call could carry them.
        handle.attach_reports(&mut finish);
        match ended {
            Ok(Ok(value)) => {
                let answer = self.call_dtm("submit", &finish, wait).await?;
                Ok(GlobalOutcome {
                    gid: gid.to_owned(),
                    status: answer.status.unwrap_or(GlobalStatus::Submitted),
                    result: Ok(value),
                })
            }
            Ok(Err(error)) => {
                let answer = self.abort(gid, &error.to_string(), &finish, wait).await?;
                Ok(GlobalOutcome {
                    gid: gid.to_owned(),
                    status: answer.status.unwrap_or(GlobalStatus::Aborting),
                    result: Err(error),
                })
            }
            Err(panic) => {
                let reason = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "non-string panic payload".into());
                if let Err(e) = self
                    .abort(gid, &format!("panic: {reason}"), &finish, wait)
                    .await
                {
                    log::error!("gid={gid} branch_id=- op=- abort after a panic failed: {e}");
                }
                std::panic::resume_unwind(panic)
            }
        }
    }

    async fn abort(
        &self,
        gid: &str,
        reason: &str,
        finish: &serde_json::Value,
        wait: Option<Duration>,
    ) -> Result<CoordinatorAnswer, TccError> {
        log::info!("gid={gid} branch_id=- op=- aborting: {reason}");
        let mut body = finish.clone();
        body["rollback_reason"] = reason.into();
        self.call_dtm("abort", &body, wait).await
    }

    /// Sends one Try report (`POST {dtm}/reportTry`, body as documented by the coordinator's
    /// `api::TryReportBody`), best-effort: failures are logged, never returned.
    async fn report_try(&self, report: &TryReport) {
        if !self.reports_trys() {
            return;
        }
        let (gid, branch_id) = (&report.gid, &report.branch_id);
        let sent = self
            .http
            .post(format!("{}/reportTry", self.dtm))
            .json(report)
            .timeout(TRY_REPORT_TIMEOUT)
            .send()
            .await;
        match sent {
            Ok(response) if response.status().is_success() => {}
            Ok(response) if matches!(response.status().as_u16(), 404 | 405) => {
                // DTM and other coordinators without the extension: stop asking.
                self.try_reports.store(false, Ordering::Relaxed);
                log::info!(
                    "gid={gid} branch_id={branch_id} op=try the coordinator does not take Try reports (HTTP {}); this client stops reporting Trys to it",
                    response.status().as_u16()
                );
            }
            Ok(response) => {
                let status = response.status().as_u16();
                let body = response.text().await.unwrap_or_default();
                log::warn!(
                    "gid={gid} branch_id={branch_id} op=try reporting the Try failed (the branch is unaffected): HTTP {status}: {}",
                    body.chars().take(200).collect::<String>()
                );
            }
            Err(e) => log::warn!(
                "gid={gid} branch_id={branch_id} op=try reporting the Try failed (the branch is unaffected): {e}"
            ),
        }
    }

    async fn call_dtm(
        &self,
        call: &'static str,
        body: &serde_json::Value,
        timeout: Option<Duration>,
    ) -> Result<CoordinatorAnswer, TccError> {
        let mut request = self.http.post(format!("{}/{call}", self.dtm)).json(body);
        if let Some(timeout) = timeout {
            request = request.timeout(timeout);
        }
        let response = request.send().await.map_err(|e| transport(call, e))?;
        read_answer(call, response).await
    }
}

/// A coordinator URL received from a caller must be an absolute `http(s)://` URL.
fn check_dtm_url(dtm: &str) -> Result<(), ProtocolError> {
    let url = reqwest::Url::parse(dtm)
        .map_err(|e| ProtocolError(format!("dtm must be an absolute URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ProtocolError(format!(
            "dtm must be an http:// or https:// URL, not {:?}",
            url.scheme()
        )));
    }
    Ok(())
}

/// A transport failure in words that name no address: the rollback reason is stored by the TM
/// and shown to whoever queries the transaction, so it must not leak internal URLs.
fn describe_transport_error(e: &reqwest::Error, request_timeout: Option<u64>) -> String {
    if e.is_timeout() {
        match request_timeout {
            Some(secs) => format!("no answer within the request timeout ({secs} s)"),
            None => "no answer within the timeout".to_owned(),
        }
    } else if e.is_connect() {
        "the branch could not be reached".to_owned()
    } else {
        "the request failed before an answer was read".to_owned()
    }
}

fn transport(call: &'static str, error: reqwest::Error) -> TccError {
    TccError::Transport {
        call,
        message: error.to_string(),
    }
}

/// Reads a coordinator answer the way DTM clients do: 200 without FAILURE in the body is success.
/// One exception: a waited `submit`/`abort` answered `not_finished` (409/425, with the `status`
/// the transaction is in) was accepted; its answer is returned so that the caller reports that
/// status.
async fn read_answer(
    call: &'static str,
    response: reqwest::Response,
) -> Result<CoordinatorAnswer, TccError> {
    let status = response.status().as_u16();
    let text = response.text().await.map_err(|e| transport(call, e))?;
    let answer = serde_json::from_str::<CoordinatorAnswer>(&text).ok();
    let not_finished = matches!(status, 409 | 425)
        && answer
            .as_ref()
            .is_some_and(CoordinatorAnswer::is_not_finished);
    if not_finished {
        return Ok(answer.expect("checked above"));
    }
    if status != 200 || text.contains(FAILURE) {
        let message = answer
            .and_then(|a| a.message)
            .unwrap_or_else(|| text.chars().take(200).collect());
        return Err(TccError::Refused {
            call,
            status,
            message,
        });
    }
    Ok(answer.unwrap_or_default())
}

/// The body of a Try report (see [`TccClient::report_try`]), also one element of the
/// `try_reports` a later coordinator call carries.
#[derive(Debug, Clone, Serialize)]
struct TryReport {
    gid: String,
    branch_id: String,
    url: String,
    /// `success`, `failure`, `ongoing` or `error`.
    outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    http_status: Option<u16>,
    latency_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
}

/// The global transaction as seen from inside the business closure. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Tcc {
    inner: Arc<TccInner>,
}

#[derive(Debug)]
struct TccInner {
    client: TccClient,
    gid: String,
    options: TransOptions,
    ids: Mutex<BranchIdGenerator>,
    /// Try reports waiting for the next coordinator call of this handle (`registerBranch`,
    /// `submit`, `abort`); `None` on a nested handle, which sends each one at once.
    carried_reports: Option<Mutex<Vec<TryReport>>>,
}

impl Tcc {
    /// Reports a Try: kept for the next coordinator call, or sent now on a nested handle.
    async fn report(&self, report: TryReport) {
        let client = &self.inner.client;
        match &self.inner.carried_reports {
            Some(carried) if client.reports_trys() => carried
                .lock()
                .expect("pushing a report never panics while locked")
                .push(report),
            _ => client.report_try(&report).await,
        }
    }

    /// Moves the waiting Try reports into `body` (a `registerBranch`, `submit` or `abort` body)
    /// as `try_reports`: a string holding their JSON array (see the module docs). Returns them,
    /// for [`Tcc::restore_reports`] when the call carrying them fails.
    fn attach_reports(&self, body: &mut serde_json::Value) -> Vec<TryReport> {
        let Some(carried) = &self.inner.carried_reports else {
            return Vec::new();
        };
        let reports = std::mem::take(
            &mut *carried
                .lock()
                .expect("taking the reports never panics while locked"),
        );
        if !reports.is_empty() {
            body["try_reports"] = serde_json::to_string(&reports)
                .expect("reports serialize")
                .into();
        }
        reports
    }

    /// Puts back the reports of a call that failed, ahead of any reported since: the abort that
    /// follows a refused registration carries them instead.
    fn restore_reports(&self, mut reports: Vec<TryReport>) {
        if let (Some(carried), false) = (&self.inner.carried_reports, reports.is_empty()) {
            let mut waiting = carried
                .lock()
                .expect("restoring the reports never panics while locked");
            reports.append(&mut waiting);
            *waiting = reports;
        }
    }

    /// The global transaction id.
    pub fn gid(&self) -> &str {
        &self.inner.gid
    }

    /// The base URL of the coordinator this handle registers branches with.
    pub fn dtm_url(&self) -> &str {
        self.inner.client.dtm_url()
    }

    /// Registers a branch with the coordinator (its Confirm and Cancel URLs and `body` as the
    /// data they will receive), then calls its Try with `body`, then reports the Try's outcome,
    /// HTTP status and latency to the coordinator (best-effort, see the module docs).
    ///
    /// Branch ids are "01", "02", ... in call order ("0201", "0202", ... on a handle from
    /// [`TccClient::tcc_from_query`] for branch "02"). Errors: [`BranchError::Register`] when the
    /// coordinator refused the registration (the Try was not called); the other variants when the
    /// Try did not succeed, classified as in [`BranchOutcome::from_http`].
    pub async fn call_branch<B: Serialize + ?Sized>(
        &self,
        body: &B,
        try_url: &str,
        confirm_url: &str,
        cancel_url: &str,
    ) -> Result<BranchResponse, BranchError> {
        let inner = &self.inner;
        let branch_id = inner
            .ids
            .lock()
            .expect("the id generator never panics while locked")
            .next_branch_id()
            .map_err(TccError::from)?;
        let data = serde_json::to_string(body).map_err(|e| {
            BranchError::Register(TccError::Protocol(ProtocolError(format!(
                "the branch body does not serialize: {e}"
            ))))
        })?;
        // DTM's registerBranch takes a flat map of strings.
        let mut register = serde_json::json!({
            "gid": inner.gid,
            "trans_type": TransType::Tcc.as_str(),
            "branch_id": branch_id,
            "status": "prepared",
            "data": data,
            "confirm": confirm_url,
            "cancel": cancel_url,
        });
        let carried = self.attach_reports(&mut register);
        if let Err(e) = inner
            .client
            .call_dtm("registerBranch", &register, None)
            .await
        {
            self.restore_reports(carried);
            return Err(e.into());
        }

        let query = BranchQuery {
            gid: inner.gid.clone(),
            trans_type: TransType::Tcc,
            branch_id: branch_id.clone(),
            op: Op::Try,
            dtm: Some(inner.client.dtm.to_string()),
        };
        let mut request = inner
            .client
            .http
            .post(try_url)
            .query(&query)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(data);
        for (name, value) in &inner.options.branch_headers {
            request = request.header(name, value);
        }
        if let Some(secs) = inner.options.request_timeout {
            request = request.timeout(Duration::from_secs(secs));
        }
        log::debug!(
            "gid={} branch_id={branch_id} op=try POST {try_url}",
            inner.gid
        );
        let started = Instant::now();
        let answer = match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                response
                    .text()
                    .await
                    .map(|text| (status, text))
                    .map_err(|e| (Some(status), e))
            }
            Err(e) => Err((None, e)),
        };
        let latency_ms = started.elapsed().as_millis() as u64;
        let report = TryReport {
            gid: inner.gid.clone(),
            branch_id: branch_id.clone(),
            url: try_url.to_owned(),
            outcome: "error",
            http_status: None,
            latency_ms,
            message: None,
        };
        let (status, text) = match answer {
            Ok(answer) => answer,
            Err((http_status, e)) => {
                log::warn!(
                    "gid={} branch_id={branch_id} op=try POST {try_url}: {e}",
                    inner.gid
                );
                let message = describe_transport_error(&e, inner.options.request_timeout);
                let report = TryReport {
                    http_status,
                    message: Some(message.clone()),
                    ..report
                };
                self.report(report).await;
                return Err(BranchError::Transient { branch_id, message });
            }
        };
        let outcome = BranchOutcome::from_http(status, &text);
        let message = match &outcome {
            BranchOutcome::Failure(m) | BranchOutcome::Error(m) => Some(m.clone()),
            BranchOutcome::Success | BranchOutcome::Ongoing => None,
        };
        let report = TryReport {
            outcome: outcome.kind(),
            http_status: Some(status),
            message,
            ..report
        };
        self.report(report).await;
        match outcome {
            BranchOutcome::Success => Ok(BranchResponse {
                branch_id,
                status,
                body: text,
            }),
            BranchOutcome::Failure(message) => Err(BranchError::Failure { branch_id, message }),
            BranchOutcome::Ongoing => Err(BranchError::Ongoing { branch_id }),
            BranchOutcome::Error(message) => Err(BranchError::Transient { branch_id, message }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn try_query(branch_id: &str, dtm: Option<&str>) -> BranchQuery {
        BranchQuery {
            gid: "g-nested".into(),
            trans_type: TransType::Tcc,
            branch_id: branch_id.into(),
            op: Op::Try,
            dtm: dtm.map(str::to_owned),
        }
    }

    fn next_id(tcc: &Tcc) -> String {
        tcc.inner.ids.lock().unwrap().next_branch_id().unwrap()
    }

    #[test]
    fn a_nested_transaction_numbers_its_children_under_the_parent_branch() {
        let client = TccClient::new("http://outer:36789/api/dtmsvr");
        let tcc = client
            .tcc_from_query(&try_query("02", Some("http://tm:36789/api/dtmsvr/")))
            .unwrap();
        assert_eq!(tcc.gid(), "g-nested");
        assert_eq!(next_id(&tcc), "0201");
        assert_eq!(next_id(&tcc), "0202");
        // Nesting again from child 0201 gives grandchildren 020101, ...
        let deeper = client
            .tcc_from_query(&try_query("0201", Some("http://tm:36789/api/dtmsvr")))
            .unwrap();
        assert_eq!(next_id(&deeper), "020101");
    }

    #[test]
    fn a_client_with_a_secret_puts_the_gid_token_into_the_branch_headers() {
        let secret = SigningSecret::new("s");
        let options = TransOptions {
            branch_headers: BTreeMap::from([
                ("x-tcc-gid-token".to_owned(), "v1=forged".to_owned()),
                ("X-Trace".to_owned(), "t1".to_owned()),
            ]),
            ..TransOptions::default()
        };
        let plain = TccClient::new("http://own:36789/api/dtmsvr");
        assert_eq!(plain.branch_headers("g1", &options), options.branch_headers);
        let signed = plain.with_gid_tokens(Some(secret.clone()));
        assert_eq!(
            signed.branch_headers("g1", &options),
            BTreeMap::from([
                (GID_TOKEN_HEADER.to_owned(), gid_token(&secret, "g1")),
                ("X-Trace".to_owned(), "t1".to_owned()),
            ])
        );
        let nested = signed.tcc_from_query(&try_query("02", None)).unwrap();
        assert_eq!(
            nested.inner.options.branch_headers[GID_TOKEN_HEADER],
            gid_token(&secret, "g-nested")
        );
    }

    #[test]
    fn a_nested_transaction_uses_the_callers_coordinator_or_else_its_own() {
        let client = TccClient::new("http://own:36789/api/dtmsvr");
        let from_query = client
            .tcc_from_query(&try_query("01", Some("http://tm:36789/api/dtmsvr/")))
            .unwrap();
        assert_eq!(from_query.dtm_url(), "http://tm:36789/api/dtmsvr");
        for dtm in [None, Some("")] {
            let fallback = client.tcc_from_query(&try_query("01", dtm)).unwrap();
            assert_eq!(fallback.dtm_url(), "http://own:36789/api/dtmsvr");
        }
    }

    #[test]
    fn try_reports_are_on_by_default_and_a_nested_handle_keeps_them_off_when_turned_off() {
        let client = TccClient::new("http://own:36789/api/dtmsvr");
        assert!(client.reports_trys());
        let quiet = client.clone().without_try_reports();
        assert!(!quiet.reports_trys());
        assert!(client.reports_trys(), "clones made before keep reporting");
        let nested = quiet
            .tcc_from_query(&try_query("02", Some("http://tm:36789/api/dtmsvr")))
            .unwrap();
        assert!(!nested.inner.client.reports_trys());
    }

    #[tokio::test]
    async fn the_root_handle_carries_try_reports_to_its_next_successful_coordinator_call_once() {
        let client = TccClient::new("http://own:36789/api/dtmsvr");
        let root = Tcc {
            inner: Arc::new(TccInner {
                client,
                gid: "g1".into(),
                options: TransOptions::default(),
                ids: Mutex::new(BranchIdGenerator::new("")),
                carried_reports: Some(Mutex::new(Vec::new())),
            }),
        };
        let mut empty = serde_json::json!({"gid": "g1"});
        assert!(root.attach_reports(&mut empty).is_empty());
        assert!(
            empty.get("try_reports").is_none(),
            "nothing to carry: {empty}"
        );

        let report = TryReport {
            gid: "g1".into(),
            branch_id: "01".into(),
            url: "http://bank/api/TransOutTry".into(),
            outcome: "success",
            http_status: Some(200),
            latency_ms: 3,
            message: None,
        };
        // Kept, not sent: the coordinator host does not exist, so a request would only log.
        root.report(report).await;
        let mut refused = serde_json::json!({"gid": "g1", "branch_id": "02"});
        let taken = root.attach_reports(&mut refused);
        assert_eq!(taken.len(), 1);
        // That registration failed: the report waits for the next call (the abort).
        root.restore_reports(taken);
        let mut register = serde_json::json!({"gid": "g1", "branch_id": "02"});
        root.attach_reports(&mut register);
        let carried: serde_json::Value =
            serde_json::from_str(register["try_reports"].as_str().expect("a string")).unwrap();
        assert_eq!(
            carried,
            serde_json::json!([{
                "gid": "g1", "branch_id": "01", "url": "http://bank/api/TransOutTry",
                "outcome": "success", "http_status": 200, "latency_ms": 3
            }])
        );
        let mut submit = serde_json::json!({"gid": "g1"});
        root.attach_reports(&mut submit);
        assert!(submit.get("try_reports").is_none(), "sent once: {submit}");
    }

    #[test]
    fn a_try_report_has_the_documented_shape() {
        let report = TryReport {
            gid: "g1".into(),
            branch_id: "01".into(),
            url: "http://bank/api/TransOutTry".into(),
            outcome: "failure",
            http_status: Some(409),
            latency_ms: 4,
            message: Some("insufficient funds".into()),
        };
        assert_eq!(
            serde_json::to_value(report.clone()).unwrap(),
            serde_json::json!({
                "gid": "g1", "branch_id": "01", "url": "http://bank/api/TransOutTry",
                "outcome": "failure", "http_status": 409, "latency_ms": 4,
                "message": "insufficient funds"
            })
        );
        let lost = TryReport {
            http_status: None,
            message: None,
            ..report
        };
        let lost = serde_json::to_value(lost).unwrap();
        assert!(lost.get("http_status").is_none() && lost.get("message").is_none());
    }

    #[test]
    fn a_nested_transaction_needs_a_well_formed_try_query() {
        let client = TccClient::new("http://own:36789/api/dtmsvr");
        let mut confirm = try_query("02", None);
        confirm.op = Op::Confirm;
        let refused = [
            confirm,
            try_query("02", Some("tm:36789/api/dtmsvr")),
            try_query("02", Some("ftp://tm/api/dtmsvr")),
            try_query("0 2", None),
            BranchQuery {
                gid: String::new(),
                ..try_query("02", None)
            },
        ];
        for query in refused {
            assert!(
                matches!(client.tcc_from_query(&query), Err(TccError::Protocol(_))),
                "{query:?}"
            );
        }
    }
}
