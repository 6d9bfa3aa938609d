//! The load: `concurrency` tasks, each running one global transaction (or baseline transfer)
//! after another until the point's deadline, timing each into an HDR histogram ([`run`]); or
//! transactions started at a fixed rate whatever their answers ([`run_at_rate`]).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rand::Rng;
use serde_json::json;
use tcc::client::{TccClient, TransOptions};
use tcc::protocol::GlobalStatus;

/// What one transaction of a mode is.
#[derive(Clone)]
pub enum Workload {
    /// A 2-branch TCC global transaction against the coordinator(s), branches answered by the
    /// built-in RM at `rm` (`.../rm`). Clients are used round-robin, one per `--dtm`.
    Coordinator {
        /// One client per coordinator URL, sharing one HTTP connection pool.
        clients: Vec<TccClient>,
        /// Base URL of the built-in RM.
        rm: String,
    },
    /// `GET {app}/{endpoint}?amount=&from=&to=&wait_result=true` (`fireTcc` or `fireBaseline`).
    App {
        /// The shared HTTP client (keep-alive).
        http: reqwest::Client,
        /// `http://host:port/api/fireTcc` or `.../fireBaseline`.
        url: String,
        /// Accounts are drawn from `1..=accounts`.
        accounts: i64,
        /// Minor units per transfer.
        amount: i64,
    },
}

/// What the tasks of one point measured.
#[derive(Debug)]
pub struct PointLoad {
    /// Transactions that completed (second phase done).
    pub completed: u64,
    /// Everything else, by kind (`http_409`, `timeout`, `status_submitted`, ...).
    pub errors: BTreeMap<String, u64>,
    /// Latency of completed transactions, microseconds.
    pub histogram: Histogram<u64>,
    /// Wall-clock length of the point.
    pub elapsed: Duration,
    /// Gids of the completed coordinator-mode transactions (for the exactly-once check).
    pub gids: Vec<String>,
    /// Gids whose answer came before their second phase finished (`status_submitted`: the wait
    /// of `wait_result` ran out, e.g. behind a Confirm retry). Counted as errors here; the
    /// end-of-run check follows them to their final status, since their money still moves.
    pub late: Vec<String>,
}

impl PointLoad {
    /// Nothing measured yet.
    fn empty() -> PointLoad {
        PointLoad {
            completed: 0,
            errors: BTreeMap::new(),
            histogram: new_histogram(),
            elapsed: Duration::ZERO,
            gids: Vec::new(),
            late: Vec::new(),
        }
    }

    /// Counts one transaction: its latency when it completed, its error kind otherwise.
    fn record(&mut self, result: Outcome, latency: Duration) {
        match result {
            Ok(gid) => {
                self.completed += 1;
                self.histogram
                    .saturating_record((latency.as_micros() as u64).max(1));
                self.gids.extend(gid);
            }
            Err((kind, late)) => {
                *self.errors.entry(kind).or_default() += 1;
                self.late.extend(late);
            }
        }
    }
}

/// What [`one`] answers: the gid of a completed coordinator-mode transaction (`None` for an app
/// call), or the error kind and the gid of a late answer.
type Outcome = Result<Option<String>, (String, Option<String>)>;

/// Runs `workload` with `concurrency` tasks for `duration`.
pub async fn run(workload: &Workload, concurrency: usize, duration: Duration) -> PointLoad {
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..concurrency)
        .map(|task| {
            let workload = workload.clone();
            tokio::spawn(async move { task_loop(workload, task, deadline).await })
        })
        .collect();
    let mut total = PointLoad::empty();
    for task in tasks {
        let part = task.await.expect("a load task panicked");
        total.completed += part.completed;
        for (kind, n) in part.errors {
            *total.errors.entry(kind).or_default() += n;
        }
        total
            .histogram
            .add(&part.histogram)
            .expect("histograms of the same bounds add");
        total.gids.extend(part.gids);
        total.late.extend(part.late);
    }
    total.elapsed = started.elapsed();
    total
}

/// Runs `workload` open-loop: transactions start at `rate` per second for `duration`, each at its
/// scheduled instant whether or not the earlier ones have answered, and each latency is measured
/// from that scheduled instant. A closed loop (one task waiting for its answer before the next
/// start) would pause exactly when the system is slow and hide that time from the histogram
/// ("coordinated omission"); this is how a latency at a given throughput is measured.
pub async fn run_at_rate(workload: &Workload, rate: f64, duration: Duration) -> PointLoad {
    let started = Instant::now();
    let count = (rate * duration.as_secs_f64()).round().max(1.0) as usize;
    let mut running = tokio::task::JoinSet::new();
    for turn in 0..count {
        let scheduled = started + Duration::from_secs_f64(turn as f64 / rate);
        tokio::time::sleep_until(scheduled.into()).await;
        let workload = workload.clone();
        running.spawn(async move {
            let result = one(&workload, turn).await;
            (result, scheduled.elapsed())
        });
    }
    let mut total = PointLoad::empty();
    while let Some(joined) = running.join_next().await {
        let (result, latency) = joined.expect("a load task panicked");
        total.record(result, latency);
    }
    total.elapsed = started.elapsed();
    total
}

/// 1 µs to 5 minutes at 3 significant digits.
fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 300_000_000, 3).expect("valid histogram bounds")
}

async fn task_loop(workload: Workload, task: usize, deadline: Instant) -> PointLoad {
    let mut out = PointLoad::empty();
    let mut turn = task;
    while Instant::now() < deadline {
        let started = Instant::now();
        let result = one(&workload, turn).await;
        out.record(result, started.elapsed());
        turn += 1;
    }
    out
}

/// One transaction; `Ok(Some(gid))` for a completed coordinator-mode transaction, `Ok(None)` for
/// a completed app call, `Err((kind, late gid))` otherwise (see [`PointLoad::late`]).
async fn one(workload: &Workload, turn: usize) -> Result<Option<String>, (String, Option<String>)> {
    one_call(workload, turn).await.map_err(|e| match e {
        Failure::Kind(kind) => (kind, None),
        Failure::Late { kind, gid } => (kind, Some(gid)),
    })
}

/// Why one transaction did not count.
enum Failure {
    /// An error of this kind.
    Kind(String),
    /// The answer came before the second phase finished (its status, and the gid).
    Late { kind: String, gid: String },
}

impl From<String> for Failure {
    fn from(kind: String) -> Failure {
        Failure::Kind(kind)
    }
}

async fn one_call(workload: &Workload, turn: usize) -> Result<Option<String>, Failure> {
    match workload {
        Workload::Coordinator { clients, rm, .. } => {
            let client = &clients[turn % clients.len()];
            let gid = client
                .new_gid()
                .await
                .map_err(|e| format!("new_gid: {e}"))?;
            let options = TransOptions {
                wait_result: true,
                ..TransOptions::default()
            };
            let outcome = client
                .tcc_global_transaction(&gid, options, |tcc| async move {
                    let body = json!({ "n": 1 });
                    let (try_url, confirm, cancel) = (
                        format!("{rm}/try"),
                        format!("{rm}/confirm"),
                        format!("{rm}/cancel"),
                    );
                    for _ in 0..2 {
                        tcc.call_branch(&body, &try_url, &confirm, &cancel).await?;
                    }
                    Ok::<(), tcc::client::BranchError>(())
                })
                .await
                .map_err(|e| format!("coordinator: {e}"))?;
            if let Err(e) = outcome.result {
                return Err(format!("try: {e}").into());
            }
            if outcome.status != GlobalStatus::Succeed {
                return Err(format!("status_{}", outcome.status).into());
            }
            Ok(Some(gid))
        }
        Workload::App {
            http,
            url,
            accounts,
            amount,
        } => {
            let (from, to) = {
                let mut rng = rand::rng();
                (
                    rng.random_range(1..=*accounts),
                    rng.random_range(1..=*accounts),
                )
            };
            let response = http
                .get(url)
                .query(&[
                    ("amount", amount.to_string()),
                    ("from", from.to_string()),
                    ("to", to.to_string()),
                    ("wait_result", "true".to_owned()),
                ])
                .send()
                .await
                .map_err(|e| {
                    if e.is_timeout() {
                        "timeout".to_owned()
                    } else if e.is_connect() {
                        "connect".to_owned()
                    } else {
                        "transport".to_owned()
                    }
                })?;
            let status = response.status();
            let body: serde_json::Value = response.json().await.unwrap_or_default();
            if !status.is_success() {
                return Err(format!("http_{}", status.as_u16()).into());
            }
            // fireTcc answers the final status; fireBaseline answers none.
            match body.get("status").and_then(|s| s.as_str()) {
                Some("succeed" | "done") | None => Ok(None),
                Some(other @ ("submitted" | "aborting")) => match body["gid"].as_str() {
                    Some(gid) => Err(Failure::Late {
                        kind: format!("status_{other}"),
                        gid: gid.to_owned(),
                    }),
                    None => Err(format!("status_{other}").into()),
                },
                Some(other) => Err(format!("status_{other}").into()),
            }
        }
    }
}
