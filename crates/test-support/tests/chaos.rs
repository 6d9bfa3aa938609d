//! The chaos run, "nothing lost": the five binaries as real processes, many
//! concurrent transfers (`fireTcc`, some `fireTccNested`) and purchases (`firePurchase`) over a
//! few hot accounts and products with random faults, while the coordinator, each RM and the AP
//! are killed with SIGKILL and restarted at random moments. Then everything is brought back, every global transaction must finish, and the
//! invariants (docs/ARCHITECTURE.md#data-model-and-invariants) are checked with SQL on every
//! database:
//!
//! * money is conserved across the two banks, and every account's balance is exactly its seed
//!   plus the effect of the committed transactions the coordinator recorded (each debited once,
//!   credited once);
//! * no frozen funds (`trading_balance`), reserved units or tentative holds/reservations remain;
//! * stock never went negative, and fell by exactly the units of the committed purchases;
//! * every gid the AP started is `succeed` or `failed` (as the AP answered, when it answered),
//!   and every transaction the coordinator knows is accounted for;
//! * each RM applied each branch at most once, never both Confirm and Cancel, and only as the
//!   coordinator decided (a Confirm applied twice shows in the balances above; the barrier's and
//!   the holds' UNIQUE constraints make a second row impossible, so their checks guard the
//!   schema);
//! * the run did real work: at least one commit per second of chaos, at least one rollback, and
//!   every binary SIGKILLed at least once (the killer's first round takes each in turn).
//!
//! The faults are drawn per branch and op from the RMs' demo fault injection
//! (`service_kit::fault`): for a Try a business refusal (`failure`), a delay past the request
//! timeout or past the transaction's `timeout_to_fail`, `error:1`, `ongoing:1`, a short delay, or
//! a misbehaving RM's `accepted:N` (202 SUCCESS without doing anything) or `redirect:N` (307);
//! for a Confirm or Cancel only faults that end in a success: `error:N`, `ongoing:N`,
//! `accepted:N`, `redirect:N` (N up to 3) and delays below the request timeout, alone or before
//! `error:N`, `accepted:N` or `redirect:N`. A 202 or 307 read as success would show as a Confirm
//! never run (funds left frozen) or a Try the AP believed done.
//!
//! Ignored by default (it runs for a minute): `scripts/chaos.sh [seconds]` runs it, and
//! `scripts/test.sh` runs a short one. Settings come from the environment:
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `CHAOS_SECONDS` | 60 | how long transactions are fired and processes killed |
//! | `CHAOS_CONCURRENCY` | 16 | concurrent AP callers |
//! | `CHAOS_SEED` | random | seed of every random choice; printed, give it back to replay |
//! | `CHAOS_ACCOUNTS` | 5 | hot accounts per bank (seeded with `CHAOS_BALANCE` each) |
//! | `CHAOS_BALANCE` | 200000 | seed balance of each account, minor units |
//! | `CHAOS_PRODUCTS` | 3 | hot products (seeded with `CHAOS_STOCK` units each) |
//! | `CHAOS_STOCK` | 200 | units of each product: small, so that overselling would show |
//! | `CHAOS_KILL_MS` | 1000-4000 | pause between two kills, a range `MIN-MAX` in milliseconds |
//! | `CHAOS_SETTLE_SECONDS` | 120 | how long every transaction may take to finish afterwards |
//!
//! A replay with the same seed makes the same choices (scenarios, amounts, faults, which process
//! is killed after which pause), but the interleaving of processes differs from run to run, so a
//! violation found once may need a few replays (or more time) to show again. The binaries' logs
//! are under `target/test-logs/` (their paths are printed): `grep -h gid=<gid>` follows one
//! transaction.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::str::FromStr;
use std::time::{Duration, Instant};

use diesel::pg::PgConnection;
use diesel::sql_types::{BigInt, Integer, Text};
use diesel::{Connection, QueryableByName, RunQueryDsl};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use test_support::process::{spawn_processes_with, ProcessEnv, ProcessSystem};

/// The longest Try delay the run injects. Such a Try outlasts its 1 s request timeout and hangs in
/// the RM; the final checks wait this long after the last request so that it has woken up (and
/// found its Cancel's barrier row) before anything is read.
const MAX_TRY_DELAY_MS: u64 = 2500;
/// Per-request probability of a fault on each branch's Try, Confirm and Cancel.
const P_TRY_FAULT: f64 = 0.08;
const P_CONFIRM_FAULT: f64 = 0.12;
const P_CANCEL_FAULT: f64 = 0.15;
/// Largest transfer amount (minor units) and purchase quantity.
const MAX_AMOUNT: i64 = 1000;
const MAX_QUANTITY: i64 = 3;
/// Base price of the products (product N costs N times this).
const PRICE: i64 = 10;
/// Probability that the killer takes down a second process together with the first.
const P_DOUBLE_KILL: f64 = 0.2;
/// What a kill costs beside its pause: the longest downtime (1.5 s) and a restart (start and
/// first health answer of a debug binary), so that the first round, which kills every binary
/// once, fits in a short run.
const KILL_CYCLE_OVERHEAD: Duration = Duration::from_millis(2500);
/// Committed transactions a run must reach per second of chaos, on average: far below what it
/// does (hundreds in 20 s), far above what an AP refusing everything would do (none).
const MIN_COMMITTED_PER_SECOND: f64 = 1.0;
/// Which process the killer picks, by weight: the coordinator most often. The first round kills
/// each of them once, in random order.
const KILL_TARGETS: [(&str, u32); 5] = [
    ("coordinator", 3),
    ("trans-out", 2),
    ("trans-in", 2),
    ("stock", 2),
    ("app", 1),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a chaos run of a minute; scripts/chaos.sh runs it (scripts/test.sh a short one)"]
async fn a_chaos_run_with_random_faults_and_kills_loses_and_creates_nothing() {
    let cfg = Config::from_env();
    println!(
        "chaos: {}{}",
        cfg.env_line(),
        if cfg.seed_given {
            ""
        } else {
            " (seed chosen at random)"
        }
    );
    let started = Instant::now();

    let balance = cfg.balance.to_string();
    let accounts = cfg.accounts.to_string();
    let products = cfg.products.to_string();
    let stock = cfg.stock.to_string();
    let price = PRICE.to_string();
    let mut sys = spawn_processes_with(ProcessEnv {
        coordinator: &[
            // Short backoff cap, so the second phase converges soon after the chaos stops.
            ("RETRY_MAX_INTERVAL", "2"),
            ("RETENTION_SECONDS", "0"),
            ("DB_POOL_SIZE", "6"),
        ],
        rms: &[
            ("SEED_ACCOUNTS", &accounts),
            ("SEED_BALANCE", &balance),
            ("SEED_PRODUCTS", &products),
            ("SEED_STOCK", &stock),
            ("SEED_PRICE", &price),
            ("BARRIER_RETENTION_SECONDS", "0"),
            ("DB_POOL_SIZE", "5"),
        ],
        app: &[],
    })
    .await;
    println!("chaos: logs:");
    for p in sys.processes_mut() {
        println!("  {:<11} {}", p.name, p.log_path().display());
    }

    // Fire and kill.
    let chaos_start = Instant::now();
    let deadline = chaos_start + Duration::from_secs(cfg.seconds);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("an HTTP client");
    let workers: Vec<_> = (0..cfg.concurrency)
        .map(|i| {
            let rng = StdRng::seed_from_u64(derive_seed(cfg.seed, i as u64 + 1));
            tokio::spawn(worker(
                rng,
                cfg.clone(),
                http.clone(),
                sys.app.url(""),
                deadline,
            ))
        })
        .collect();
    let kills = killer(
        &mut sys,
        StdRng::seed_from_u64(derive_seed(cfg.seed, 0)),
        &cfg,
        chaos_start,
        deadline,
    )
    .await;
    let mut fired = Vec::new();
    for worker in workers {
        fired.append(&mut worker.await.expect("a caller panicked"));
    }
    // Every AP call has been answered, so every Try has been sent.
    let last_answer = Instant::now();
    let chaos_took = chaos_start.elapsed();

    // Everything up again, every transaction finished.
    let mut report = Report::default();
    let down = ensure_all_up(&mut sys).await;
    report.check(
        "every binary was running when the chaos stopped (none crashed on its own)",
        down,
    );
    let settle_start = Instant::now();
    let (listing, open) =
        match wait_until_all_finished(&sys, Duration::from_secs(cfg.settle_seconds)).await {
            Ok(listing) => (listing, Vec::new()),
            Err((listing, problem)) => (listing, vec![problem]),
        };
    report.check(
        &format!(
            "every global transaction finished within CHAOS_SETTLE_SECONDS={} after the chaos",
            cfg.settle_seconds
        ),
        open,
    );
    let settle_took = settle_start.elapsed();
    // A Try delayed past its request timeout may still be asleep in an RM (the AP gave up on it);
    // let it wake up and meet its Cancel's barrier row before anything is read.
    // (The margin covers a nested branch's child Try, sent by the AP after the outer Try.)
    tokio::time::sleep_until((last_answer + Duration::from_millis(MAX_TRY_DELAY_MS + 2000)).into())
        .await;
    let final_retries = coordinator_retries(&sys).await;

    // Read every database and check.
    let snapshot = Snapshot::read(&sys, &cfg);
    check_activity(&mut report, &cfg, &fired, &snapshot, &kills);
    check_invariants(&mut report, &cfg, &fired, &listing, &snapshot);

    let summary = summarize(
        &cfg,
        &fired,
        &snapshot,
        &kills,
        kills.retries_before_kills + final_retries,
        chaos_took,
        settle_took,
        started.elapsed(),
    );
    println!("{summary}");
    println!("{}", report.render());
    assert!(
        report.passed(),
        "the chaos run found invariant violations (see above); replay its choices with\n  {} \
         scripts/chaos.sh",
        cfg.env_line()
    );
}

// ---- settings ----

#[derive(Debug, Clone)]
struct Config {
    seconds: u64,
    concurrency: usize,
    seed: u64,
    seed_given: bool,
    accounts: i64,
    balance: i64,
    products: i64,
    stock: i64,
    kill_ms: (u64, u64),
    settle_seconds: u64,
}

fn env_or<T: FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a valid number")),
        _ => default,
    }
}

impl Config {
    fn from_env() -> Config {
        let given: Option<u64> = std::env::var("CHAOS_SEED")
            .ok()
            .filter(|v| !v.trim().is_empty())
            .map(|v| {
                v.trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("CHAOS_SEED={v:?} is not a u64"))
            });
        let kill_ms = match std::env::var("CHAOS_KILL_MS") {
            Ok(v) if !v.trim().is_empty() => {
                let parse = |s: &str| -> u64 {
                    s.trim().parse().unwrap_or_else(|_| {
                        panic!("CHAOS_KILL_MS={v:?}: expected MIN-MAX milliseconds")
                    })
                };
                match v.split_once('-') {
                    Some((a, b)) => (parse(a), parse(b)),
                    None => (parse(&v), parse(&v)),
                }
            }
            _ => (1000, 4000),
        };
        let cfg = Config {
            seconds: env_or("CHAOS_SECONDS", 60),
            concurrency: env_or("CHAOS_CONCURRENCY", 16),
            seed: given.unwrap_or_else(|| rand::rng().random()),
            seed_given: given.is_some(),
            accounts: env_or("CHAOS_ACCOUNTS", 5),
            balance: env_or("CHAOS_BALANCE", 200_000),
            products: env_or("CHAOS_PRODUCTS", 3),
            stock: env_or("CHAOS_STOCK", 200),
            kill_ms,
            settle_seconds: env_or("CHAOS_SETTLE_SECONDS", 120),
        };
        assert!(cfg.concurrency >= 1, "CHAOS_CONCURRENCY must be at least 1");
        assert!(cfg.accounts >= 1, "CHAOS_ACCOUNTS must be at least 1");
        assert!(cfg.products >= 1, "CHAOS_PRODUCTS must be at least 1");
        assert!(
            cfg.kill_ms.0 >= 100 && cfg.kill_ms.0 <= cfg.kill_ms.1,
            "CHAOS_KILL_MS must be MIN-MAX with 100 <= MIN <= MAX"
        );
        cfg
    }

    /// Every setting as environment assignments: prefixed to `scripts/chaos.sh`, they replay
    /// the run's choices.
    fn env_line(&self) -> String {
        format!(
            "CHAOS_SEED={} CHAOS_SECONDS={} CHAOS_CONCURRENCY={} CHAOS_ACCOUNTS={} \
             CHAOS_BALANCE={} CHAOS_PRODUCTS={} CHAOS_STOCK={} CHAOS_KILL_MS={}-{} \
             CHAOS_SETTLE_SECONDS={}",
            self.seed,
            self.seconds,
            self.concurrency,
            self.accounts,
            self.balance,
            self.products,
            self.stock,
            self.kill_ms.0,
            self.kill_ms.1,
            self.settle_seconds
        )
    }
}

/// An independent seed for stream `n` of the run (0: the killer, 1..: the callers), so that each
/// stream's choices depend on the seed only, not on how the streams interleave.
fn derive_seed(seed: u64, n: u64) -> u64 {
    // SplitMix64's finaliser: nearby inputs give unrelated outputs.
    let mut z = seed.wrapping_add(n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

// ---- firing ----

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Transfer,
    Purchase,
    /// A transfer whose credit goes through the AP's nested branch (child branch 0201).
    NestedTransfer,
}

impl Kind {
    fn endpoint(self) -> &'static str {
        match self {
            Kind::Transfer => "fireTcc",
            Kind::Purchase => "firePurchase",
            Kind::NestedTransfer => "fireTccNested",
        }
    }

    /// The fault-parameter prefixes of this scenario's RMs, in call order.
    fn rms(self) -> &'static [&'static str] {
        match self {
            Kind::Transfer | Kind::NestedTransfer => &["trans_out", "trans_in"],
            Kind::Purchase => &["stock", "trans_out", "trans_in"],
        }
    }
}

/// One fire request: its scenario and query string.
#[derive(Debug, Clone)]
struct Plan {
    kind: Kind,
    query: String,
}

/// How a Try fault delays the Try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TryDelay {
    /// Not, or briefly.
    Short,
    /// Longer than its 1 s request timeout: the AP gives up and aborts, the Cancel comes first (an
    /// empty compensation) and the Try hangs in the RM.
    PastRequestTimeout,
    /// Within its 3 s request timeout but past the transaction's 1 s `timeout_to_fail`: the
    /// coordinator aborts the transaction (and cancels) while the AP still waits for the Try, then
    /// the AP registers, submits or aborts a transaction that is already rolling back.
    PastTimeoutToFail,
}

/// A fault for a Try.
fn try_fault(rng: &mut StdRng) -> (String, TryDelay) {
    let delay = |rng: &mut StdRng, range| format!("delay:{}", rng.random_range(range));
    match rng.random_range(0..100) {
        // A business refusal: the AP aborts, every registered branch is cancelled.
        0..27 => ("failure".into(), TryDelay::Short),
        27..45 => (
            delay(rng, 1200..=MAX_TRY_DELAY_MS),
            TryDelay::PastRequestTimeout,
        ),
        45..59 => (
            delay(rng, 1300..=MAX_TRY_DELAY_MS),
            TryDelay::PastTimeoutToFail,
        ),
        59..69 => ("error:1".into(), TryDelay::Short),
        69..78 => ("ongoing:1".into(), TryDelay::Short),
        // A misbehaving RM: the Try did nothing; the AP must read it as a transient error and
        // abort, and the Cancel is an empty compensation.
        78..84 => (
            format!("accepted:{}", rng.random_range(1..=3)),
            TryDelay::Short,
        ),
        84..90 => (
            format!("redirect:{}", rng.random_range(1..=3)),
            TryDelay::Short,
        ),
        _ => (delay(rng, 50..=300), TryDelay::Short),
    }
}

/// A fault for a Confirm or Cancel. Each must end in a success, or the transaction would never
/// finish: `error:N`, `ongoing:N`, `accepted:N` and `redirect:N` stop after N calls, and delays
/// stay below the request timeout (`max_delay_ms`), since a delay applies to every call.
fn second_phase_fault(rng: &mut StdRng, max_delay_ms: u64) -> String {
    match rng.random_range(0..100) {
        0..30 => format!("error:{}", rng.random_range(1..=3)),
        30..52 => format!("ongoing:{}", rng.random_range(1..=3)),
        // A misbehaving RM: 202 SUCCESS or a 307, nothing done; read as success, the op would
        // never run and its reservation would stay.
        52..62 => format!("accepted:{}", rng.random_range(1..=3)),
        62..72 => format!("redirect:{}", rng.random_range(1..=3)),
        72..90 => format!("delay:{}", rng.random_range(50..=max_delay_ms)),
        _ => format!(
            "delay:{}+{}:{}",
            rng.random_range(50..=max_delay_ms / 2),
            ["error", "accepted", "redirect"][rng.random_range(0..3)],
            rng.random_range(1..=2)
        ),
    }
}

fn plan(rng: &mut StdRng, cfg: &Config) -> Plan {
    let kind = match rng.random_range(0..100) {
        0..55 => Kind::Transfer,
        55..90 => Kind::Purchase,
        _ => Kind::NestedTransfer,
    };
    let mut params: Vec<(String, String)> = Vec::new();
    let mut param = |k: &str, v: String| params.push((k.to_owned(), v));
    match kind {
        Kind::Transfer | Kind::NestedTransfer => {
            param("amount", rng.random_range(1..=MAX_AMOUNT).to_string());
            param("from", rng.random_range(1..=cfg.accounts).to_string());
            param("to", rng.random_range(1..=cfg.accounts).to_string());
        }
        Kind::Purchase => {
            param("product_id", rng.random_range(1..=cfg.products).to_string());
            param("quantity", rng.random_range(1..=MAX_QUANTITY).to_string());
            param("buyer", rng.random_range(1..=cfg.accounts).to_string());
            param("merchant", rng.random_range(1..=cfg.accounts).to_string());
        }
    }
    let mut delays = Vec::new();
    for rm in kind.rms() {
        if rng.random_bool(P_TRY_FAULT) {
            let (spec, delay) = try_fault(rng);
            delays.push(delay);
            param(&format!("{rm}_try"), spec);
        }
    }
    let (request_timeout, timeout_to_fail): (u64, u64) =
        if delays.contains(&TryDelay::PastRequestTimeout) {
            (1, rng.random_range(3..=10))
        } else if delays.contains(&TryDelay::PastTimeoutToFail) {
            (3, 1)
        } else {
            // Short, so that a transaction left prepared by a killed AP or coordinator is rolled
            // back soon.
            (rng.random_range(1..=3), rng.random_range(3..=10))
        };
    let max_delay_ms = if request_timeout == 1 { 400 } else { 800 };
    // When the coordinator's timeout races the AP, slow Cancels keep the transaction `aborting`
    // for longer, so the AP's late registerBranch/submit/abort meets it there too.
    let p_cancel_fault = if delays.contains(&TryDelay::PastTimeoutToFail) {
        0.6
    } else {
        P_CANCEL_FAULT
    };
    for rm in kind.rms() {
        if rng.random_bool(P_CONFIRM_FAULT) {
            param(
                &format!("{rm}_confirm"),
                second_phase_fault(rng, max_delay_ms),
            );
        }
        if rng.random_bool(p_cancel_fault) {
            param(
                &format!("{rm}_cancel"),
                second_phase_fault(rng, max_delay_ms),
            );
        }
    }
    param("request_timeout", request_timeout.to_string());
    param("retry_interval", "1".into());
    param("timeout_to_fail", timeout_to_fail.to_string());
    param("wait_result", "false".into());
    let query = params
        .iter()
        .map(|(k, v)| format!("{k}={}", v.replace('+', "%2B")))
        .collect::<Vec<_>>()
        .join("&");
    Plan { kind, query }
}

/// What the AP answered to one fire request.
#[derive(Debug, Clone)]
enum Answer {
    /// 200 with a gid: submitted, so it must end `succeed`.
    Committed(String),
    /// 409 with a gid: aborted, so it must end `failed`.
    RolledBack(String),
    /// Another answer that names a gid (the coordinator failed mid-way): either outcome.
    Unsure(String),
    /// No gid came back (the AP or the coordinator was down, the AP died mid-request): the
    /// coordinator may still know the transaction.
    NotStarted { status: Option<u16>, detail: String },
}

impl Answer {
    fn gid(&self) -> Option<&str> {
        match self {
            Answer::Committed(g) | Answer::RolledBack(g) | Answer::Unsure(g) => Some(g),
            Answer::NotStarted { .. } => None,
        }
    }
}

#[derive(Debug, Clone)]
struct Fired {
    plan: Plan,
    answer: Answer,
}

/// Fires transactions one after another until `deadline`; returns them with the AP's answers.
async fn worker(
    mut rng: StdRng,
    cfg: Config,
    http: reqwest::Client,
    app: String,
    deadline: Instant,
) -> Vec<Fired> {
    let mut fired = Vec::new();
    while Instant::now() < deadline {
        let plan = plan(&mut rng, &cfg);
        let url = format!("{app}/api/{}?{}", plan.kind.endpoint(), plan.query);
        let answer = match http.get(&url).send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let text = response.text().await.unwrap_or_default();
                let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                match (status, body["gid"].as_str()) {
                    (200, Some(gid)) => Answer::Committed(gid.to_owned()),
                    (409, Some(gid)) => Answer::RolledBack(gid.to_owned()),
                    (_, Some(gid)) => Answer::Unsure(gid.to_owned()),
                    (_, None) => Answer::NotStarted {
                        status: Some(status),
                        detail: text.chars().take(300).collect(),
                    },
                }
            }
            Err(e) => {
                // The AP is down (killed) or died mid-request.
                Answer::NotStarted {
                    status: None,
                    detail: e.to_string(),
                }
            }
        };
        if answer.gid().is_none() {
            // The coordinator or the stock service is down: answers come at once, do not spin.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        fired.push(Fired { plan, answer });
    }
    fired
}

// ---- killing ----

#[derive(Debug, Default)]
struct Kills {
    by_binary: BTreeMap<&'static str, u32>,
    /// `tcc_branch_retries_total` summed over the coordinator's lives, read just before each
    /// kill (the counters live in memory).
    retries_before_kills: u64,
}

/// A random process by [`KILL_TARGETS`]' weights: its index in `processes_mut()` order.
fn pick_target(rng: &mut StdRng) -> usize {
    let total: u32 = KILL_TARGETS.iter().map(|(_, w)| w).sum();
    let mut pick = rng.random_range(0..total);
    KILL_TARGETS
        .iter()
        .position(|(_, w)| {
            if pick < *w {
                true
            } else {
                pick -= w;
                false
            }
        })
        .expect("a weighted pick")
}

/// Until `deadline`: after a random pause, SIGKILLs a random process (sometimes two at once, so
/// that outages overlap), keeps it down a little, restarts it.
async fn killer(
    sys: &mut ProcessSystem,
    mut rng: StdRng,
    cfg: &Config,
    chaos_start: Instant,
    deadline: Instant,
) -> Kills {
    let mut kills = Kills::default();
    loop {
        // Until every binary has been killed once, the first target is one not yet killed, and
        // the pause is short enough for the rest of them to fit before the deadline.
        let unkilled: Vec<usize> = (0..KILL_TARGETS.len())
            .filter(|i| !kills.by_binary.contains_key(KILL_TARGETS[*i].0))
            .collect();
        let mut pause = Duration::from_millis(rng.random_range(cfg.kill_ms.0..=cfg.kill_ms.1));
        let first = if unkilled.is_empty() {
            pick_target(&mut rng)
        } else {
            let share =
                deadline.saturating_duration_since(Instant::now()) / (unkilled.len() as u32 + 1);
            pause = pause.min(share.saturating_sub(KILL_CYCLE_OVERHEAD));
            unkilled[rng.random_range(0..unkilled.len())]
        };
        let mut targets = vec![first];
        if rng.random_bool(P_DOUBLE_KILL) {
            let second = pick_target(&mut rng);
            if second != targets[0] {
                targets.push(second);
            }
        }
        let downtime = Duration::from_millis(rng.random_range(0..=1500));
        if Instant::now() + pause >= deadline {
            break;
        }
        tokio::time::sleep(pause).await;
        if targets.contains(&0) {
            kills.retries_before_kills += coordinator_retries(sys).await;
        }
        let mut names = Vec::new();
        for (index, process) in sys.processes_mut().into_iter().enumerate() {
            if targets.contains(&index) {
                assert_eq!(process.name, KILL_TARGETS[index].0);
                process.kill();
                *kills.by_binary.entry(process.name).or_default() += 1;
                names.push(process.name);
            }
        }
        tokio::time::sleep(downtime).await;
        for (index, process) in sys.processes_mut().into_iter().enumerate() {
            if targets.contains(&index) {
                process.restart().await;
            }
        }
        println!(
            "chaos: {:>6.1} s  SIGKILL {:<24} down {:>4} ms, restarted",
            chaos_start.elapsed().as_secs_f64(),
            names.join(" + "),
            downtime.as_millis()
        );
    }
    kills
}

/// `tcc_branch_retries_total` (all ops) of the running coordinator; 0 if it does not answer.
async fn coordinator_retries(sys: &ProcessSystem) -> u64 {
    let Ok(response) = sys
        .http
        .get(sys.coordinator.url("/api/metrics"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
    else {
        return 0;
    };
    let text = response.text().await.unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("tcc_branch_retries_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Health of every binary; one that does not answer (it died by itself: the killer always
/// restarts what it kills) is restarted and reported.
async fn ensure_all_up(sys: &mut ProcessSystem) -> Vec<String> {
    let http = sys.http.clone();
    let mut down = Vec::new();
    for process in sys.processes_mut() {
        let healthy = matches!(
            http.get(process.url("/api/health"))
                .timeout(Duration::from_secs(5))
                .send()
                .await,
            Ok(r) if r.status().is_success()
        );
        if !healthy {
            down.push(format!(
                "{} was not healthy after the chaos; restarting it (log: {})",
                process.name,
                process.log_path().display()
            ));
            process.restart().await;
        }
    }
    down
}

// ---- waiting ----

/// `(gid, status)` of every transaction the coordinator lists (`all`, every page).
async fn list_all(sys: &ProcessSystem) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut position = String::new();
    loop {
        let url = format!("{}/all?limit=1000&position={position}", sys.dtm_url());
        let page: Value = sys
            .http
            .get(&url)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?
            .json()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        let transactions = page["transactions"]
            .as_array()
            .ok_or_else(|| format!("GET {url}: no transactions in {page}"))?;
        for t in transactions {
            out.push((
                t["gid"].as_str().unwrap_or_default().to_owned(),
                t["status"].as_str().unwrap_or_default().to_owned(),
            ));
        }
        match page["next_position"].as_str() {
            Some(next) if !next.is_empty() => position = next.to_owned(),
            _ => return Ok(out),
        }
    }
}

fn is_final(status: &str) -> bool {
    status == "succeed" || status == "failed"
}

/// Polls `all` until every transaction is `succeed` or `failed`. After `within`: the last
/// listing and what is still open (with the records of a few unfinished transactions).
async fn wait_until_all_finished(
    sys: &ProcessSystem,
    within: Duration,
) -> Result<Vec<(String, String)>, (Vec<(String, String)>, String)> {
    let deadline = Instant::now() + within;
    loop {
        let listing = list_all(sys).await;
        if let Ok(listing) = &listing {
            if listing.iter().all(|(_, s)| is_final(s)) {
                return Ok(listing.clone());
            }
        }
        if Instant::now() >= deadline {
            let mut message = format!("not finished within {within:?}: ");
            match listing {
                Err(e) => {
                    message.push_str(&e);
                    return Err((Vec::new(), message));
                }
                Ok(listing) => {
                    let open: Vec<_> = listing.iter().filter(|(_, s)| !is_final(s)).collect();
                    let _ = write!(message, "{} unfinished, e.g.", open.len());
                    for (gid, _) in open.iter().take(5) {
                        let record = sys
                            .http
                            .get(format!("{}/query?gid={gid}", sys.dtm_url()))
                            .send()
                            .await;
                        let text = match record {
                            Ok(r) => r.text().await.unwrap_or_default(),
                            Err(e) => e.to_string(),
                        };
                        let _ = write!(message, "\n            {gid}: {text}");
                    }
                    return Err((listing, message));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

// ---- reading the databases ----

#[derive(Debug, QueryableByName)]
struct TransRow {
    #[diesel(sql_type = Text)]
    gid: String,
    #[diesel(sql_type = Text)]
    status: String,
}

#[derive(Debug, QueryableByName)]
struct OpRow {
    #[diesel(sql_type = Text)]
    gid: String,
    #[diesel(sql_type = Text)]
    branch_id: String,
    #[diesel(sql_type = Text)]
    op: String,
    #[diesel(sql_type = Text)]
    url: String,
    #[diesel(sql_type = Text)]
    data: String,
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = Integer)]
    attempts: i32,
}

/// An account (amount = balance, frozen = trading_balance) or a product (stock, reserved).
#[derive(Debug, QueryableByName)]
struct ItemRow {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = BigInt)]
    amount: i64,
    #[diesel(sql_type = BigInt)]
    frozen: i64,
}

/// A hold (item = account, qty = amount) or a reservation (item = product, qty = quantity).
#[derive(Debug, QueryableByName)]
struct SettleRow {
    #[diesel(sql_type = Text)]
    gid: String,
    #[diesel(sql_type = Text)]
    branch_id: String,
    #[diesel(sql_type = BigInt)]
    item: i64,
    #[diesel(sql_type = BigInt)]
    qty: i64,
    #[diesel(sql_type = Text)]
    state: String,
}

#[derive(Debug, QueryableByName)]
struct BarrierRow {
    #[diesel(sql_type = Text)]
    gid: String,
    #[diesel(sql_type = Text)]
    branch_id: String,
    #[diesel(sql_type = Text)]
    op: String,
}

/// One RM's side of the invariants: a bank (items are accounts, rows are holds) or the stock
/// service (items are products, rows are reservations).
#[derive(Debug)]
struct RmState {
    /// Binary name.
    name: &'static str,
    /// Endpoint prefix in the registered URLs: `TransOut`, `TransIn`, `Stock`.
    label: &'static str,
    /// What a Confirm does to the item's amount: -1 (debit, deduct stock) or +1 (credit).
    sign: i64,
    /// The branch-data fields naming the item and the quantity.
    fields: (&'static str, &'static str),
    /// Items seeded (ids 1..=seeded), each with `initial` (balance or units).
    seeded: i64,
    initial: i64,
    /// What a Try's row is called: `hold` or `reservation`.
    row: &'static str,
    items: Vec<ItemRow>,
    settles: Vec<SettleRow>,
    barrier: Vec<BarrierRow>,
}

struct Snapshot {
    transactions: Vec<TransRow>,
    ops: Vec<OpRow>,
    rms: Vec<RmState>,
}

/// A connection to `url`, retried for a while: the server is shared with other tests, and
/// "too many clients" passes.
fn connect(url: &str) -> PgConnection {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match PgConnection::establish(url) {
            Ok(conn) => return conn,
            Err(e) if Instant::now() >= deadline => panic!("cannot connect to {url}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

fn load<T: QueryableByName<diesel::pg::Pg> + 'static>(
    conn: &mut PgConnection,
    sql: &str,
) -> Vec<T> {
    diesel::sql_query(sql)
        .load(conn)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

impl Snapshot {
    fn read(sys: &ProcessSystem, cfg: &Config) -> Snapshot {
        let mut tm = connect(sys.database_url("coordinator"));
        let transactions = load(&mut tm, "SELECT gid, status FROM trans_global");
        let ops = load(
            &mut tm,
            "SELECT gid, branch_id, op, url, data, status, attempts FROM trans_branch_op ORDER BY id",
        );
        let bank =
            |name: &'static str, label, sign| {
                let mut conn = connect(sys.database_url(name));
                RmState {
                name,
                label,
                sign,
                fields: ("account_id", "amount"),
                seeded: cfg.accounts,
                initial: cfg.balance,
                row: "hold",
                items: load(
                    &mut conn,
                    "SELECT id, balance AS amount, trading_balance AS frozen FROM accounts",
                ),
                settles: load(
                    &mut conn,
                    "SELECT gid, branch_id, account_id AS item, amount AS qty, state FROM holds",
                ),
                barrier: load(&mut conn, "SELECT gid, branch_id, op FROM dtm_barrier.barrier"),
            }
            };
        let mut conn = connect(sys.database_url("stock"));
        let stock = RmState {
            name: "stock",
            label: "Stock",
            sign: -1,
            fields: ("product_id", "quantity"),
            seeded: cfg.products,
            initial: cfg.stock,
            row: "reservation",
            items: load(
                &mut conn,
                "SELECT id, stock AS amount, reserved AS frozen FROM products",
            ),
            settles: load(
                &mut conn,
                "SELECT gid, branch_id, product_id AS item, quantity AS qty, state \
                 FROM reservations",
            ),
            barrier: load(
                &mut conn,
                "SELECT gid, branch_id, op FROM dtm_barrier.barrier",
            ),
        };
        Snapshot {
            transactions,
            ops,
            rms: vec![
                bank("trans-out", "TransOut", -1),
                bank("trans-in", "TransIn", 1),
                stock,
            ],
        }
    }

    fn status_of(&self) -> HashMap<&str, &str> {
        self.transactions
            .iter()
            .map(|t| (t.gid.as_str(), t.status.as_str()))
            .collect()
    }
}

/// A branch op as the coordinator registered it, resolved to its RM, item and quantity.
struct Effect<'a> {
    op: &'a OpRow,
    rm: usize,
    item: i64,
    qty: i64,
}

/// The op's RM (index into `rms`), item and quantity, from its URL and registered data.
/// `None` for the AP's nested branch, which holds nothing itself (its child does).
fn effect<'a>(op: &'a OpRow, rms: &[RmState]) -> Result<Option<Effect<'a>>, String> {
    if op
        .url
        .ends_with(&format!("/TransInNested{}", capitalized(&op.op)))
    {
        return Ok(None);
    }
    let rm = rms
        .iter()
        .position(|rm| {
            op.url
                .ends_with(&format!("/{}{}", rm.label, capitalized(&op.op)))
        })
        .ok_or_else(|| {
            format!(
                "gid={} branch_id={}: unknown URL {}",
                op.gid, op.branch_id, op.url
            )
        })?;
    let data: Value = serde_json::from_str(&op.data).map_err(|e| {
        format!(
            "gid={} branch_id={}: data {}: {e}",
            op.gid, op.branch_id, op.data
        )
    })?;
    let (item_field, qty_field) = rms[rm].fields;
    let field = |name: &str| {
        data[name].as_i64().ok_or_else(|| {
            format!(
                "gid={} branch_id={}: no {name} in {}",
                op.gid, op.branch_id, op.data
            )
        })
    };
    Ok(Some(Effect {
        op,
        rm,
        item: field(item_field)?,
        qty: field(qty_field)?,
    }))
}

fn capitalized(op: &str) -> String {
    let mut chars = op.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

// ---- the invariants ----

#[derive(Default)]
struct Report {
    checks: Vec<(String, Vec<String>)>,
}

impl Report {
    fn check(&mut self, name: &str, violations: Vec<String>) {
        self.checks.push((name.to_owned(), violations));
    }

    fn passed(&self) -> bool {
        self.checks.iter().all(|(_, v)| v.is_empty())
    }

    fn render(&self) -> String {
        let mut out = String::from("chaos: invariants\n");
        for (name, violations) in &self.checks {
            if violations.is_empty() {
                let _ = writeln!(out, "  PASS  {name}");
            } else {
                let _ = writeln!(out, "  FAIL  {name}: {} violation(s)", violations.len());
                for v in violations.iter().take(10) {
                    let _ = writeln!(out, "          - {v}");
                }
                if violations.len() > 10 {
                    let _ = writeln!(out, "          ... {} more", violations.len() - 10);
                }
            }
        }
        let _ = write!(
            out,
            "chaos: {}",
            if self.passed() {
                "ALL INVARIANTS HOLD"
            } else {
                "INVARIANTS VIOLATED"
            }
        );
        out
    }
}

/// `gid -> status` at the coordinator.
type Statuses<'a> = HashMap<&'a str, &'a str>;

/// The run did what it is for: transactions committed and rolled back in numbers, each of the
/// five binaries killed at least once. Without this, an AP that refused every request, or a
/// killer that never reached the coordinator, would pass every invariant below.
fn check_activity(
    report: &mut Report,
    cfg: &Config,
    fired: &[Fired],
    snap: &Snapshot,
    kills: &Kills,
) {
    let status = snap.status_of();
    let count = |wanted: &str| status.values().filter(|s| **s == wanted).count();
    let (succeed, failed) = (count("succeed"), count("failed"));
    let answered_committed = fired
        .iter()
        .filter(|f| matches!(f.answer, Answer::Committed(_)))
        .count();
    let min_committed = (cfg.seconds as f64 * MIN_COMMITTED_PER_SECOND).ceil() as usize;
    let mut idle = Vec::new();
    if succeed < min_committed {
        idle.push(format!(
            "{succeed} transactions committed, at least {min_committed} expected in {} s",
            cfg.seconds
        ));
    }
    if failed == 0 {
        idle.push("no transaction rolled back".to_owned());
    }
    if answered_committed == 0 {
        idle.push("the AP answered no request with a commit".to_owned());
    }
    report.check(
        &format!(
            "the run did real work: at least {MIN_COMMITTED_PER_SECOND} commit per second of \
             chaos, at least one rollback, commits answered by the AP"
        ),
        idle,
    );
    let never_killed: Vec<String> = KILL_TARGETS
        .iter()
        .filter(|(name, _)| !kills.by_binary.contains_key(name))
        .map(|(name, _)| format!("{name} was never killed (CHAOS_SECONDS too short?)"))
        .collect();
    report.check("every binary was SIGKILLed at least once", never_killed);
}

fn check_invariants(
    report: &mut Report,
    cfg: &Config,
    fired: &[Fired],
    listing: &[(String, String)],
    snap: &Snapshot,
) {
    let status = snap.status_of();
    check_coordinator(report, listing, snap, &status);
    check_answers(report, fired, &status);

    let mut malformed = Vec::new();
    let effects: Vec<Effect> = snap
        .ops
        .iter()
        .filter_map(|op| {
            effect(op, &snap.rms)
                .map_err(|e| malformed.push(e))
                .ok()
                .flatten()
        })
        .collect();
    report.check(
        "every registered branch names a known RM, item and quantity",
        malformed,
    );
    let committed: Vec<&Effect> = effects
        .iter()
        .filter(|e| e.op.op == "confirm" && status.get(e.op.gid.as_str()) == Some(&"succeed"))
        .collect();
    check_committed_transactions(report, snap, &committed);

    for (index, rm) in snap.rms.iter().enumerate() {
        let confirms: HashMap<(&str, &str), &Effect> = committed
            .iter()
            .filter(|e| e.rm == index)
            .map(|e| ((e.op.gid.as_str(), e.op.branch_id.as_str()), *e))
            .collect();
        check_amounts(report, rm, &confirms);
        check_settlements(report, rm, &confirms, &status);
        check_barrier(report, rm, &confirms, &status);
    }

    let bank_total: i64 = snap
        .rms
        .iter()
        .filter(|rm| rm.row == "hold")
        .flat_map(|rm| rm.items.iter().map(|i| i.amount))
        .sum();
    let seeded = 2 * cfg.accounts * cfg.balance;
    report.check(
        "money is conserved: sum of balances in both banks = the seeded total",
        if bank_total == seeded {
            Vec::new()
        } else {
            vec![format!(
                "the banks hold {bank_total}, {seeded} were seeded ({:+})",
                bank_total - seeded
            )]
        },
    );
}

/// Every transaction finished, with its Confirms or Cancels done; `all` agrees with the tables.
fn check_coordinator(
    report: &mut Report,
    listing: &[(String, String)],
    snap: &Snapshot,
    status: &Statuses,
) {
    let unfinished: Vec<String> = snap
        .transactions
        .iter()
        .filter(|t| !is_final(&t.status))
        .map(|t| format!("gid={} is {}", t.gid, t.status))
        .collect();
    report.check(
        "every global transaction the coordinator knows is succeed or failed",
        unfinished,
    );

    let listed: BTreeSet<&str> = listing.iter().map(|(g, _)| g.as_str()).collect();
    let stored: BTreeSet<&str> = status.keys().copied().collect();
    let mut mismatch: Vec<String> = listed
        .symmetric_difference(&stored)
        .map(|g| format!("gid={g} is in only one of `all` and trans_global"))
        .collect();
    for (gid, s) in listing {
        if let Some(stored) = status.get(gid.as_str()).filter(|stored| *stored != s) {
            mismatch.push(format!("gid={gid}: `all` says {s}, trans_global {stored}"));
        }
    }
    report.check(
        "the coordinator's `all` listing matches its tables",
        mismatch,
    );

    let mut not_done = Vec::new();
    for op in &snap.ops {
        let (gid_status, wanted) = match status.get(op.gid.as_str()) {
            Some(s @ &"succeed") => (s, "confirm"),
            Some(s @ &"failed") => (s, "cancel"),
            _ => continue,
        };
        if op.op == wanted && op.status != "succeed" {
            not_done.push(format!(
                "gid={} is {gid_status} but its {} of branch {} is {} after {} attempts ({})",
                op.gid, op.op, op.branch_id, op.status, op.attempts, op.url
            ));
        }
    }
    report.check(
        "a finished transaction has every Confirm (succeed) or every Cancel (failed) done",
        not_done,
    );
}

/// What the AP answered agrees with how each transaction ended, and accounts for every
/// transaction the coordinator knows.
fn check_answers(report: &mut Report, fired: &[Fired], status: &Statuses) {
    let mut answered = Vec::new();
    let mut bad_requests = Vec::new();
    for f in fired {
        if let Answer::NotStarted {
            status: Some(code @ (400 | 404 | 422)),
            detail,
        } = &f.answer
        {
            bad_requests.push(format!(
                "{} {} -> {code} {detail}",
                f.plan.kind.endpoint(),
                f.plan.query
            ));
        }
        let Some(gid) = f.answer.gid() else { continue };
        let expected = match f.answer {
            Answer::Committed(_) => Some("succeed"),
            Answer::RolledBack(_) => Some("failed"),
            _ => None,
        };
        match (status.get(gid), expected) {
            // The AP had a gid from newGid, but its prepare may never have reached the coordinator.
            (None, None) => {}
            (None, Some(_)) => answered.push(format!(
                "gid={gid} was answered by the AP ({:?}) but the coordinator does not know it",
                f.answer
            )),
            (Some(s), Some(e)) if *s != e => answered.push(format!(
                "gid={gid}: the AP answered {:?} ({} {}) but it ended {s}",
                f.answer,
                f.plan.kind.endpoint(),
                f.plan.query
            )),
            (Some(s), _) if !is_final(s) => {
                answered.push(format!("gid={gid} started by the AP is {s}"))
            }
            _ => {}
        }
    }
    report.check(
        "every gid the AP started is succeed or failed, as the AP answered (200: succeed, 409: failed)",
        answered,
    );
    report.check(
        "the AP accepted every request the run made (no 400/404/422: the run's own parameters are valid)",
        bad_requests,
    );

    let returned: BTreeSet<&str> = fired.iter().filter_map(|f| f.answer.gid()).collect();
    let without_gid = fired.iter().filter(|f| f.answer.gid().is_none()).count();
    let unknown = status.keys().filter(|g| !returned.contains(*g)).count();
    report.check(
        "every transaction the coordinator knows was started by a request of the run",
        if unknown > without_gid {
            vec![format!(
                "the coordinator knows {unknown} transactions whose gid the AP never returned, \
                 but only {without_gid} requests came back without a gid"
            )]
        } else {
            Vec::new()
        },
    );
}

/// Each committed transaction has all its branches and debits and credits the same amount.
fn check_committed_transactions(report: &mut Report, snap: &Snapshot, committed: &[&Effect]) {
    let mut by_gid: BTreeMap<&str, Vec<&Effect>> = BTreeMap::new();
    for e in committed {
        by_gid.entry(e.op.gid.as_str()).or_default().push(e);
    }
    let mut shape = Vec::new();
    for (gid, es) in &by_gid {
        let labels: Vec<&str> = es.iter().map(|e| snap.rms[e.rm].label).collect();
        let amounts = |label| {
            es.iter()
                .filter(|e| snap.rms[e.rm].label == label)
                .map(|e| e.qty)
                .collect::<Vec<_>>()
        };
        let (debit, credit) = (amounts("TransOut"), amounts("TransIn"));
        let well_formed = matches!(
            labels.as_slice(),
            ["TransOut", "TransIn"] | ["Stock", "TransOut", "TransIn"]
        ) && debit == credit;
        if !well_formed {
            shape.push(format!(
                "gid={gid} committed branches {labels:?}, debit {debit:?}, credit {credit:?}"
            ));
        }
    }
    report.check(
        "each committed transaction debits and credits the same amount (and has all its branches)",
        shape,
    );
}

/// Each item's amount is its seed plus exactly the committed branches' effects; nothing frozen.
fn check_amounts(report: &mut Report, rm: &RmState, confirms: &HashMap<(&str, &str), &Effect>) {
    let mut expected: BTreeMap<i64, i64> = (1..=rm.seeded).map(|id| (id, rm.initial)).collect();
    for e in confirms.values() {
        *expected.entry(e.item).or_insert(rm.initial) += rm.sign * e.qty;
    }
    let mut amounts = Vec::new();
    let mut frozen = Vec::new();
    for item in &rm.items {
        let want = expected.get(&item.id).copied().unwrap_or(rm.initial);
        if item.amount != want {
            amounts.push(format!(
                "{} {}: {} but the committed transactions make it {want} ({:+})",
                rm.name,
                item.id,
                item.amount,
                item.amount - want
            ));
        }
        if item.amount < 0 {
            amounts.push(format!("{} {}: negative {}", rm.name, item.id, item.amount));
        }
        if item.frozen != 0 {
            frozen.push(format!(
                "{} {}: {} still frozen/reserved",
                rm.name, item.id, item.frozen
            ));
        }
    }
    if rm.items.len() as i64 != rm.seeded {
        amounts.push(format!(
            "{} has {} rows, {} were seeded",
            rm.name,
            rm.items.len(),
            rm.seeded
        ));
    }
    let (what, frozen_column) = if rm.row == "hold" {
        (
            "balances are the seed plus exactly the committed transfers",
            "trading_balance",
        )
    } else {
        (
            "stock fell by exactly the committed purchases, never below 0",
            "reserved",
        )
    };
    report.check(&format!("{}: {what}", rm.name), amounts);
    report.check(
        &format!("{}: nothing frozen ({frozen_column} = 0)", rm.name),
        frozen,
    );
}

/// Holds/reservations: none tentative, one per branch, each confirmed one a committed branch
/// with the same item and quantity, each cancelled one a rolled-back branch, each committed
/// branch confirmed.
fn check_settlements(
    report: &mut Report,
    rm: &RmState,
    confirms: &HashMap<(&str, &str), &Effect>,
    status: &Statuses,
) {
    let mut wrong = Vec::new();
    let mut rows_per_branch: HashMap<(&str, &str), usize> = HashMap::new();
    let mut confirmed = BTreeSet::new();
    for s in &rm.settles {
        let key = (s.gid.as_str(), s.branch_id.as_str());
        let rows = rows_per_branch.entry(key).or_default();
        *rows += 1;
        if *rows == 2 {
            wrong.push(format!(
                "gid={} branch_id={} has more than one {}",
                s.gid, s.branch_id, rm.row
            ));
        }
        let gid_status = status.get(s.gid.as_str()).copied().unwrap_or("unknown");
        let at = format!("gid={} branch_id={}", s.gid, s.branch_id);
        match s.state.as_str() {
            "tentative" => wrong.push(format!(
                "{at} is still tentative ({} of {}; the transaction is {gid_status})",
                s.qty, s.item
            )),
            "confirmed" => {
                confirmed.insert(key);
                match confirms.get(&key) {
                    Some(e) if e.item == s.item && e.qty == s.qty => {}
                    Some(e) => wrong.push(format!(
                        "{at} confirmed {} of {}, the branch registered {} of {}",
                        s.qty, s.item, e.qty, e.item
                    )),
                    None => wrong.push(format!(
                        "{at} confirmed, but the transaction is {gid_status}"
                    )),
                }
            }
            "cancelled" if gid_status != "failed" => wrong.push(format!(
                "{at} cancelled, but the transaction is {gid_status}"
            )),
            _ => {}
        }
    }
    for (gid, branch) in confirms.keys() {
        if !confirmed.contains(&(*gid, *branch)) {
            wrong.push(format!(
                "gid={gid} branch_id={branch} succeeded at the coordinator, but {} has no \
                 confirmed {} for it",
                rm.name, rm.row
            ));
        }
    }
    report.check(
        &format!(
            "{}: no tentative {row}; one per branch; each confirmed one is a committed branch \
             (same item and quantity), each cancelled one a rolled-back one, each committed \
             branch confirmed",
            rm.name,
            row = rm.row
        ),
        wrong,
    );
}

/// The barrier: each op of a branch ran at most once, never both Confirm and Cancel, only as the
/// coordinator decided, and every committed branch's Confirm ran.
fn check_barrier(
    report: &mut Report,
    rm: &RmState,
    confirms: &HashMap<(&str, &str), &Effect>,
    status: &Statuses,
) {
    let mut wrong = Vec::new();
    let mut seen: BTreeMap<(&str, &str), Vec<&str>> = BTreeMap::new();
    for b in &rm.barrier {
        seen.entry((b.gid.as_str(), b.branch_id.as_str()))
            .or_default()
            .push(b.op.as_str());
    }
    for ((gid, branch), ops) in &seen {
        let count = |op: &str| ops.iter().filter(|o| **o == op).count();
        let gid_status = status.get(gid).copied().unwrap_or("unknown");
        let at = format!("gid={gid} branch_id={branch}");
        if ops.iter().any(|o| count(o) > 1) {
            wrong.push(format!("{at}: barrier rows {ops:?}"));
        }
        if count("confirm") > 0 && count("cancel") > 0 {
            wrong.push(format!("{at}: both Confirm and Cancel ran ({gid_status})"));
        }
        if count("confirm") > 0 && gid_status != "succeed" {
            wrong.push(format!(
                "{at}: Confirm ran but the transaction is {gid_status}"
            ));
        }
        if count("cancel") > 0 && gid_status != "failed" {
            wrong.push(format!(
                "{at}: Cancel ran but the transaction is {gid_status}"
            ));
        }
    }
    for (gid, branch) in confirms.keys() {
        if !seen
            .get(&(*gid, *branch))
            .is_some_and(|ops| ops.contains(&"confirm"))
        {
            wrong.push(format!(
                "gid={gid} branch_id={branch} succeeded at the coordinator, but {} has no \
                 Confirm barrier row",
                rm.name
            ));
        }
    }
    report.check(
        &format!(
            "{}: each branch op ran at most once, never both Confirm and Cancel, only as the \
             coordinator decided (barrier)",
            rm.name
        ),
        wrong,
    );
}

// ---- the summary ----

#[allow(clippy::too_many_arguments)]
fn summarize(
    cfg: &Config,
    fired: &[Fired],
    snap: &Snapshot,
    kills: &Kills,
    metric_retries: u64,
    chaos_took: Duration,
    settle_took: Duration,
    total_took: Duration,
) -> String {
    let count = |f: &dyn Fn(&Fired) -> bool| fired.iter().filter(|x| f(x)).count();
    let transfers = count(&|f| f.plan.kind == Kind::Transfer);
    let nested = count(&|f| f.plan.kind == Kind::NestedTransfer);
    let committed = count(&|f| matches!(f.answer, Answer::Committed(_)));
    let rolled_back = count(&|f| matches!(f.answer, Answer::RolledBack(_)));
    let unsure = count(&|f| matches!(f.answer, Answer::Unsure(_)));
    let mut no_gid: BTreeMap<String, usize> = BTreeMap::new();
    for f in fired {
        if let Answer::NotStarted { status, detail } = &f.answer {
            let why = match status {
                None => "AP unreachable".to_owned(),
                Some(code) => {
                    let body: Value = serde_json::from_str(detail).unwrap_or(Value::Null);
                    format!("{code} {}", body["error"].as_str().unwrap_or("?"))
                }
            };
            *no_gid.entry(why).or_default() += 1;
        }
    }
    let no_gid_line = no_gid
        .iter()
        .map(|(why, n)| format!("{why} {n}"))
        .collect::<Vec<_>>()
        .join(", ");
    let status = snap.status_of();
    let succeed = status.values().filter(|s| **s == "succeed").count();
    let failed = status.values().filter(|s| **s == "failed").count();
    let returned: BTreeSet<&str> = fired.iter().filter_map(|f| f.answer.gid()).collect();
    let unknown = status.keys().filter(|g| !returned.contains(*g)).count();

    let mut purchases_done = BTreeSet::new();
    let mut moved = 0i64;
    let mut sold: BTreeMap<i64, i64> = BTreeMap::new();
    for op in &snap.ops {
        if op.op != "confirm" || status.get(op.gid.as_str()) != Some(&"succeed") {
            continue;
        }
        if let Ok(Some(e)) = effect(op, &snap.rms) {
            match snap.rms[e.rm].label {
                "Stock" => {
                    purchases_done.insert(op.gid.as_str());
                    *sold.entry(e.item).or_default() += e.qty;
                }
                "TransOut" => moved += e.qty,
                _ => {}
            }
        }
    }
    let db_retries: i64 = snap
        .ops
        .iter()
        .map(|o| i64::from(o.attempts.saturating_sub(1).max(0)))
        .sum();
    let kills_line = KILL_TARGETS
        .iter()
        .map(|(name, _)| format!("{name} {}", kills.by_binary.get(name).copied().unwrap_or(0)))
        .collect::<Vec<_>>()
        .join(", ");
    let sold_line = (1..=cfg.products)
        .map(|p| format!("#{p} {}/{}", sold.get(&p).copied().unwrap_or(0), cfg.stock))
        .collect::<Vec<_>>()
        .join(", ");

    let mut out = String::new();
    let _ = writeln!(out, "chaos: summary ({})", cfg.env_line());
    let _ = writeln!(
        out,
        "  requests fired        {} ({} transfers, {} nested transfers, {} purchases) by {} \
         callers in {:.1} s",
        fired.len(),
        transfers,
        nested,
        fired.len() - transfers - nested,
        cfg.concurrency,
        chaos_took.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "  AP answers            200 submitted {committed}, 409 rolled back {rolled_back}, \
         error with gid {unsure}"
    );
    let _ = writeln!(
        out,
        "  no gid (not started)  {}",
        if no_gid_line.is_empty() {
            "none".to_owned()
        } else {
            no_gid_line
        }
    );
    let _ = writeln!(
        out,
        "  transactions started  {} at the coordinator ({} whose gid the AP never returned)",
        status.len(),
        unknown
    );
    let _ = writeln!(
        out,
        "  finished              succeed {succeed} ({} transfers, {} purchases), failed {failed}",
        succeed - purchases_done.len(),
        purchases_done.len()
    );
    let _ = writeln!(
        out,
        "  moved / sold          {moved} minor units from bank A to bank B; units sold {sold_line}"
    );
    let _ = writeln!(out, "  kills (SIGKILL)       {kills_line}");
    let _ = writeln!(
        out,
        "  retries               {metric_retries} (tcc_branch_retries_total summed over the \
         coordinator's lives), {db_retries} (attempts beyond the first in trans_branch_op)"
    );
    let _ = write!(
        out,
        "  time                  chaos {:.1} s, all finished {:.1} s later, total {:.1} s",
        chaos_took.as_secs_f64(),
        settle_took.as_secs_f64(),
        total_took.as_secs_f64()
    );
    out
}
