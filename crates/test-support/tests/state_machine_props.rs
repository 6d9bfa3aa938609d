//! The coordinator's state machine (docs/ARCHITECTURE.md#state-machine) as a property: proptest
//! generates sequences of
//! `prepare`, `registerBranch` (or its alias `registerTccBranch`), `submit`, `abort` and timeout
//! aborts over a few gids, runs them against one in-process coordinator, and compares every
//! answer and every resulting `query` with a model of the state machine.
//!
//! The model: `prepared -> submitted -> succeed` and `prepared -> aborting -> failed` only;
//! repeating `prepare` while prepared, a resubmit and a re-abort succeed and change nothing; the
//! cross transitions (`abort` after `submit`, `submit` after `abort`, `prepare` after either) are
//! refused with 409; `registerBranch` succeeds only while prepared (the same registration again
//! succeeds, the same branch id with other data is a 409); `submit`, `abort` and `registerBranch`
//! of an unknown gid are 409s; `query` of an unknown gid is a 404; a final status never changes.
//!
//! Branch URLs point at a closed local port, so a second phase with branches never finishes: the
//! transaction stays `submitted` or `aborting`, and its branch ops stay `prepared`, for the whole
//! case. A second phase without branches finishes at once (`succeed` or `failed`); the test
//! polls for that with a deadline.
//!
//! A timeout abort is what the coordinator's worker does to a `prepared` transaction past its
//! `timeout_to_fail`; the test plays the worker with the public `store` functions, as the engine
//! calls them: it takes the transaction's lease (as `claim_due` does, without waiting for the
//! deadline), calls `store::abort_timed_out` when the claimed transaction is `prepared`, and
//! releases the lease with `store::reschedule`, due now, so that the real worker runs the Cancels.
//! It also checks that `abort_timed_out` by a caller that does not hold the lease changes nothing.
//!
//! One coordinator and database serve the whole test; every case uses fresh gids. The number of
//! cases is bounded (`PROPTEST_CASES` overrides it); a failure prints the shrunk sequence.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use coordinator::store::{self, TransGlobal};
use diesel::prelude::*;
use diesel::sql_types::Text;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};
use serde_json::{json, Value};
use tcc::protocol::GlobalStatus;
use test_support::spawn::spawn_coordinator;

/// Cases: about 8 s on a two-core machine.
const CASES: u32 = 64;
/// Gids a case works on (some of them are never prepared: the unknown-gid rows).
const GIDS: usize = 3;
/// Branch ids a case registers.
const BRANCH_IDS: [&str; 2] = ["01", "02"];
/// Branch URLs nobody listens on (the discard port): Confirm and Cancel calls are refused.
const UNREACHABLE: &str = "http://127.0.0.1:9/api";
/// `timeout_to_fail` of every transaction (the API's maximum): the real worker never times one
/// out during a case; the test's timeout step does.
const TIMEOUT_TO_FAIL: i64 = 86_400;
/// `retry_interval`: after its first refused call, a second phase waits minutes for the next.
const RETRY_INTERVAL: i64 = 3_600;
/// How long a second phase without branches may take to reach its final status.
const SETTLE: Duration = Duration::from_secs(10);

/// One call of the AP (or of the coordinator's own worker, for `Timeout`) on gid `gid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Prepare {
        gid: usize,
    },
    /// Registers `BRANCH_IDS[branch]` with data variant `variant` (0 or 1), through
    /// `registerTccBranch` when `alias`.
    Register {
        gid: usize,
        branch: usize,
        variant: usize,
        alias: bool,
    },
    Submit {
        gid: usize,
    },
    /// `abort` with rollback reason `ap reason {reason}`.
    Abort {
        gid: usize,
        reason: u8,
    },
    /// The worker finds the transaction past its `timeout_to_fail`.
    Timeout {
        gid: usize,
    },
}

impl Step {
    fn gid(&self) -> usize {
        match *self {
            Step::Prepare { gid }
            | Step::Register { gid, .. }
            | Step::Submit { gid }
            | Step::Abort { gid, .. }
            | Step::Timeout { gid } => gid,
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Step::Prepare { gid } => write!(f, "prepare g{gid}"),
            Step::Register {
                gid,
                branch,
                variant,
                alias,
            } => {
                let call = if alias {
                    "registerTccBranch"
                } else {
                    "registerBranch"
                };
                write!(
                    f,
                    "{call} g{gid} branch {} data #{variant}",
                    BRANCH_IDS[branch]
                )
            }
            Step::Submit { gid } => write!(f, "submit g{gid}"),
            Step::Abort { gid, reason } => write!(f, "abort g{gid} (reason {reason})"),
            Step::Timeout { gid } => write!(f, "timeout of g{gid} (the worker's abort)"),
        }
    }
}

/// The model of one global transaction.
#[derive(Debug, Clone, Default)]
struct TransModel {
    /// `None`: never prepared (unknown to the coordinator).
    status: Option<GlobalStatus>,
    /// Registered branches: branch index -> data variant.
    branches: BTreeMap<usize, usize>,
    rollback_reason: Option<String>,
    /// The second-phase status (`submitted`/`aborting`) `query` may still show while a second
    /// phase without branches finishes on its own.
    settling_from: Option<GlobalStatus>,
}

/// What the model expects from one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expected {
    /// An HTTP answer: its status code, and for 200s of submit/abort the `status` field.
    Http(u16, Option<GlobalStatus>),
    /// A timeout step: whether `abort_timed_out` moved the transaction.
    TimedOut(bool),
}

impl TransModel {
    /// Applies `step` to the model and says what the coordinator should answer.
    fn apply(&mut self, step: &Step) -> Expected {
        use GlobalStatus::*;
        match *step {
            Step::Prepare { .. } => match self.status {
                None => {
                    self.status = Some(Prepared);
                    Expected::Http(200, None)
                }
                Some(Prepared) => Expected::Http(200, None),
                Some(_) => Expected::Http(409, None),
            },
            Step::Register {
                branch, variant, ..
            } => match self.status {
                Some(Prepared) => match self.branches.get(&branch) {
                    None => {
                        self.branches.insert(branch, variant);
                        Expected::Http(200, None)
                    }
                    Some(v) if *v == variant => Expected::Http(200, None),
                    Some(_) => Expected::Http(409, None),
                },
                // Unknown gid, or no longer prepared.
                _ => Expected::Http(409, None),
            },
            Step::Submit { .. } => match self.status {
                Some(Prepared) => {
                    self.enter_second_phase(Submitted, Succeed);
                    Expected::Http(200, Some(Submitted))
                }
                Some(s @ (Submitted | Succeed)) => Expected::Http(200, Some(s)),
                _ => Expected::Http(409, None),
            },
            Step::Abort { reason, .. } => match self.status {
                Some(Prepared) => {
                    self.enter_second_phase(Aborting, Failed);
                    self.rollback_reason = Some(ap_reason(reason));
                    Expected::Http(200, Some(Aborting))
                }
                Some(s @ (Aborting | Failed)) => Expected::Http(200, Some(s)),
                _ => Expected::Http(409, None),
            },
            Step::Timeout { .. } => match self.status {
                Some(Prepared) => {
                    self.enter_second_phase(Aborting, Failed);
                    self.rollback_reason = Some(format!("Timeout after {TIMEOUT_TO_FAIL} seconds"));
                    Expected::TimedOut(true)
                }
                _ => Expected::TimedOut(false),
            },
        }
    }

    /// `prepared -> phase`; with no branch to call, the second phase goes on to `end` by itself.
    fn enter_second_phase(&mut self, phase: GlobalStatus, end: GlobalStatus) {
        if self.branches.is_empty() {
            self.status = Some(end);
            self.settling_from = Some(phase);
        } else {
            self.status = Some(phase);
        }
    }
}

fn ap_reason(reason: u8) -> String {
    format!("ap reason {reason}")
}

/// Whether the state machine can go from `from` to `to` in zero or more allowed transitions.
fn reachable(from: Option<GlobalStatus>, to: Option<GlobalStatus>) -> bool {
    use GlobalStatus::*;
    let Some(from) = from else {
        return true;
    };
    let Some(to) = to else {
        return false;
    };
    let path: &[GlobalStatus] = match from {
        Prepared => &[Prepared, Submitted, Succeed, Aborting, Failed],
        Submitted => &[Submitted, Succeed],
        Aborting => &[Aborting, Failed],
        Succeed => &[Succeed],
        Failed => &[Failed],
    };
    path.contains(&to)
}

fn branch_data(branch: usize, variant: usize) -> String {
    json!({ "account_id": branch + 1, "amount": 30 + variant }).to_string()
}

/// The coordinator under test, called synchronously from the proptest runner.
struct Tm {
    rt: tokio::runtime::Runtime,
    http: reqwest::Client,
    dtm_url: String,
    db: RefCell<PgConnection>,
}

impl Tm {
    fn post(&self, call: &str, body: Value) -> Result<(u16, Value), TestCaseError> {
        let url = format!("{}/{call}", self.dtm_url);
        self.rt.block_on(async {
            let response = self
                .http
                .post(&url)
                .json(&body)
                .send()
                .await
                .map_err(|e| TestCaseError::fail(format!("POST {call}: {e}")))?;
            let status = response.status().as_u16();
            let body = response
                .json()
                .await
                .map_err(|e| TestCaseError::fail(format!("POST {call}: not JSON: {e}")))?;
            Ok((status, body))
        })
    }

    fn query(&self, gid: &str) -> Result<(u16, Value), TestCaseError> {
        let url = format!("{}/query?gid={gid}", self.dtm_url);
        self.rt.block_on(async {
            let response = self
                .http
                .get(&url)
                .send()
                .await
                .map_err(|e| TestCaseError::fail(format!("query {gid}: {e}")))?;
            let status = response.status().as_u16();
            let body = response
                .json()
                .await
                .map_err(|e| TestCaseError::fail(format!("query {gid}: not JSON: {e}")))?;
            Ok((status, body))
        })
    }

    /// The HTTP call of `step` on `gid`: (status code, answer).
    fn call(&self, step: &Step, gid: &str) -> Result<(u16, Value), TestCaseError> {
        match *step {
            Step::Prepare { .. } => self.post(
                "prepare",
                json!({
                    "gid": gid, "trans_type": "tcc",
                    "timeout_to_fail": TIMEOUT_TO_FAIL, "retry_interval": RETRY_INTERVAL,
                }),
            ),
            Step::Register {
                branch,
                variant,
                alias,
                ..
            } => {
                let call = if alias {
                    "registerTccBranch"
                } else {
                    "registerBranch"
                };
                self.post(
                    call,
                    json!({
                        "gid": gid, "trans_type": "tcc", "branch_id": BRANCH_IDS[branch],
                        "status": "prepared", "data": branch_data(branch, variant),
                        "confirm": format!("{UNREACHABLE}/Confirm"),
                        "cancel": format!("{UNREACHABLE}/Cancel"),
                    }),
                )
            }
            Step::Submit { .. } => self.post("submit", json!({"gid": gid, "trans_type": "tcc"})),
            Step::Abort { reason, .. } => self.post(
                "abort",
                json!({"gid": gid, "trans_type": "tcc", "rollback_reason": ap_reason(reason)}),
            ),
            Step::Timeout { .. } => unreachable!("a timeout is not an HTTP call"),
        }
    }

    /// The worker's timeout pass over `gid`, by the public store functions. Returns whether
    /// `abort_timed_out` moved the transaction.
    fn time_out(&self, gid: &str, token: &str) -> Result<bool, TestCaseError> {
        let conn = &mut *self.db.borrow_mut();
        let db_err = |e: diesel::result::Error| TestCaseError::fail(format!("gid={gid}: {e}"));
        let Some(current) = store::find(conn, gid).map_err(db_err)?.map(|(t, _)| t) else {
            return Ok(false);
        };
        // Without the lease, the compare-and-set must not fire, whatever the status.
        prop_assert!(
            !store::abort_timed_out(conn, &current, "not-the-lease-holder").map_err(db_err)?,
            "abort_timed_out without the lease changed gid={gid}"
        );
        // Claim it as claim_due does, minus the deadline (the test is the clock).
        let claimed: Option<TransGlobal> = diesel::sql_query(
            "UPDATE trans_global SET owner = $2, lease_expire = now() + interval '30 seconds' \
             WHERE gid = $1 AND status IN ('prepared', 'submitted', 'aborting') \
               AND (lease_expire IS NULL OR lease_expire < now()) \
             RETURNING *",
        )
        .bind::<Text, _>(gid)
        .bind::<Text, _>(token)
        .get_result(conn)
        .optional()
        .map_err(db_err)?;
        let Some(claimed) = claimed else {
            // Finished, or its second phase is running right now under another lease.
            prop_assert!(
                current.global_status() != GlobalStatus::Prepared,
                "nobody should hold the lease of the prepared gid={gid}: {current:?}"
            );
            return Ok(false);
        };
        let aborted = claimed.global_status() == GlobalStatus::Prepared
            && store::abort_timed_out(conn, &claimed, token).map_err(db_err)?;
        let released = store::reschedule(conn, gid, token, Utc::now(), claimed.next_cron_interval)
            .map_err(db_err)?;
        prop_assert!(released, "gid={gid}: the lease was lost meanwhile");
        Ok(aborted)
    }
}

/// Checks `query` of `gid` against `model`, waiting while a second phase without branches
/// finishes. Returns the status seen.
fn check_query(
    tm: &Tm,
    gid: &str,
    model: &mut TransModel,
    context: &dyn Fn() -> String,
) -> Result<Option<GlobalStatus>, TestCaseError> {
    let deadline = Instant::now() + SETTLE;
    let (code, body) = loop {
        let (code, body) = tm.query(gid)?;
        let seen = body["transaction"]["status"].as_str();
        match model.settling_from {
            Some(phase) if seen == Some(phase.as_str()) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            _ => break (code, body),
        }
    };
    let Some(expected) = model.status else {
        prop_assert_eq!(
            code,
            404,
            "query of unknown {}: {}\n{}",
            gid,
            body,
            context()
        );
        return Ok(None);
    };
    prop_assert_eq!(code, 200, "query {}: {}\n{}", gid, body, context());
    let trans = &body["transaction"];
    prop_assert_eq!(
        trans["status"].as_str(),
        Some(expected.as_str()),
        "status of {}: {:#}\n{}",
        gid,
        body,
        context()
    );
    model.settling_from = None;
    prop_assert_eq!(
        trans["rollback_reason"].as_str(),
        model.rollback_reason.as_deref(),
        "rollback_reason of {}\n{}",
        gid,
        context()
    );
    if expected.is_final() {
        prop_assert!(
            trans["finish_time"].is_string(),
            "finish_time of finished {gid}: {trans}\n{}",
            context()
        );
    }
    // Every registered branch has a Confirm and a Cancel row, with its registered data; none
    // succeeded, since nothing answers at the branch URLs.
    let mut rows: Vec<(String, String, String, String)> = body["branches"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|b| {
            let field = |name: &str| b[name].as_str().unwrap_or_default().to_owned();
            (
                field("branch_id"),
                field("op"),
                field("data"),
                field("status"),
            )
        })
        .collect();
    rows.sort();
    let mut expected_rows: Vec<_> = model
        .branches
        .iter()
        .flat_map(|(&branch, &variant)| {
            ["cancel", "confirm"].map(|op| {
                (
                    BRANCH_IDS[branch].to_owned(),
                    op.to_owned(),
                    branch_data(branch, variant),
                    "prepared".to_owned(),
                )
            })
        })
        .collect();
    expected_rows.sort();
    prop_assert_eq!(rows, expected_rows, "branches of {}\n{}", gid, context());
    Ok(Some(expected))
}

fn render(steps: &[Step]) -> String {
    steps
        .iter()
        .enumerate()
        .map(|(i, s)| format!("  {}. {s}\n", i + 1))
        .collect()
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    let gid = || 0..GIDS;
    let step = prop_oneof![
        3 => gid().prop_map(|gid| Step::Prepare { gid }),
        4 => (gid(), 0..BRANCH_IDS.len(), prop::bool::weighted(0.15), any::<bool>()).prop_map(
            |(gid, branch, other_data, alias)| Step::Register {
                gid,
                branch,
                variant: usize::from(other_data),
                alias,
            }
        ),
        2 => gid().prop_map(|gid| Step::Submit { gid }),
        2 => (gid(), 0..3u8).prop_map(|(gid, reason)| Step::Abort { gid, reason }),
        1 => gid().prop_map(|gid| Step::Timeout { gid }),
    ];
    prop::collection::vec(step, 1..=20)
}

/// The runner's configuration: `cases` unless `PROPTEST_CASES` says otherwise; no regression
/// files (a failure prints its sequence instead); shrinking bounded, since every shrink step
/// runs against the coordinator.
fn config(cases: u32) -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    Config {
        failure_persistence: None,
        max_shrink_iters: 256,
        ..Config::with_cases(cases)
    }
}

#[test]
fn the_coordinator_follows_its_state_machine_for_any_sequence_of_calls() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let spawned = rt.block_on(spawn_coordinator());
    let tm = Tm {
        http: reqwest::Client::new(),
        dtm_url: spawned.dtm_url(),
        db: RefCell::new(spawned.db.as_ref().expect("a database").connect()),
        rt,
    };
    static CASE: AtomicU64 = AtomicU64::new(0);
    let mut runner = TestRunner::new(config(CASES));

    let result = runner.run(&steps(), |steps| {
        let case = CASE.fetch_add(1, Ordering::Relaxed);
        let gids: Vec<String> = (0..GIDS).map(|i| format!("sm-{case}-g{i}")).collect();
        let mut models = vec![TransModel::default(); GIDS];
        let mut seen: Vec<Option<GlobalStatus>> = vec![None; GIDS];
        for (n, step) in steps.iter().enumerate() {
            let context = || {
                format!(
                    "gids sm-{case}-g*, step {} ({step}) of:\n{}",
                    n + 1,
                    render(&steps)
                )
            };
            let g = step.gid();
            let expected = models[g].apply(step);
            match expected {
                Expected::Http(code, status_field) => {
                    let (actual, body) = tm.call(step, &gids[g])?;
                    prop_assert_eq!(actual, code, "answer {}\n{}", body, context());
                    let verdict = if code == 200 { "SUCCESS" } else { "FAILURE" };
                    prop_assert_eq!(
                        body["dtm_result"].as_str(),
                        Some(verdict),
                        "answer {}\n{}",
                        body,
                        context()
                    );
                    if let Some(status) = status_field {
                        prop_assert_eq!(
                            body["status"].as_str(),
                            Some(status.as_str()),
                            "answer {}\n{}",
                            body,
                            context()
                        );
                    }
                }
                Expected::TimedOut(moved) => {
                    let token = format!("proptest:{case}:{n}");
                    let actual = tm.time_out(&gids[g], &token)?;
                    prop_assert_eq!(actual, moved, "abort_timed_out\n{}", context());
                }
            }
            // Every gid of the case, not only the one called: a step must not touch the others.
            for i in 0..GIDS {
                let now = check_query(&tm, &gids[i], &mut models[i], &context)?;
                prop_assert!(
                    reachable(seen[i], now),
                    "{} went from {:?} to {:?}, which the state machine does not allow\n{}",
                    gids[i],
                    seen[i],
                    now,
                    context()
                );
                seen[i] = now;
            }
        }
        Ok(())
    });

    drop(tm.db);
    if let Some(db) = tm.rt.block_on(spawned.stop()) {
        drop(db);
    }
    match result {
        Ok(()) => {}
        Err(TestError::Fail(reason, steps)) => {
            panic!("{reason}\n\nminimal failing sequence:\n{}", render(&steps))
        }
        Err(TestError::Abort(reason)) => panic!("proptest aborted: {reason}"),
    }
}
