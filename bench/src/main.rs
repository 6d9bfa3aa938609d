//! `tcc-bench`: the load generator behind `scripts/bench.sh` (docs/BENCHMARKS.md).
//!
//! ```text
//! tcc-bench coordinator --dtm http://127.0.0.1:36789/api/dtmsvr [--dtm URL2 ...]
//! tcc-bench transfer    --app http://127.0.0.1:8080/api [--hot N]
//! tcc-bench baseline    --app http://127.0.0.1:8080/api
//! ```
//!
//! For each concurrency of the sweep (`--concurrency 1,8,32,128`) it runs that many transactions
//! in flight for `--duration` seconds and reports completed transactions per second (with
//! `wait_result`: a transaction counts once its second phase is done), latency percentiles (HDR
//! histogram), errors, Postgres commits per transaction per database (`pg_stat_database`
//! deltas, read after the statistics settle: see [`pg`]), the busiest statements
//! (`pg_stat_statements`, when installed) and CPU seconds per 1,000 transactions per process
//! (`/proc`). At the end it checks that the work really happened: in `transfer` and `baseline`
//! the money that left bank A and arrived in bank B equals the amount times the transfers
//! counted (plus those answered before their second phase finished, `status_submitted`, that
//! went on to succeed: counted as errors, followed to their end); in `coordinator` the built-in RM saw one Confirm per branch of every committed
//! transaction, none lost, none twice. It prints a table and writes `--out` (JSON).
//!
//! With `--half-peak` a last point runs open-loop at half the best throughput of the sweep
//! ([`load::run_at_rate`]): the latency "at half the peak throughput" of docs/BENCHMARKS.md, measured from
//! each transaction's scheduled start.

mod cpu;
mod load;
mod pg;
mod rm;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use serde_json::{json, Value};
use tcc::client::TccClient;

use crate::load::Workload;

/// The three modes of docs/BENCHMARKS.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// 2-branch TCC transactions against the coordinator, branches answered by a built-in RM
    /// that does no database work.
    Coordinator,
    /// The AP's `fireTcc`: coordinator, both banks, barrier and holds.
    Transfer,
    /// The AP's `fireBaseline`: the same debit and credit without TCC.
    Baseline,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Coordinator => "coordinator",
            Mode::Transfer => "transfer",
            Mode::Baseline => "baseline",
        }
    }
}

/// How one point of the sweep loads the system.
#[derive(Debug, Clone, Copy)]
enum Load {
    /// This many transactions in flight, each task starting its next when the last answered.
    Closed(usize),
    /// Transactions started at half the best tx/s of the points before it, whatever the
    /// answers ([`load::run_at_rate`]).
    HalfPeak,
}

/// Command-line options (see the crate docs).
#[derive(Debug, Parser)]
#[command(
    version,
    about = "TCC benchmark: coordinator, transfer and baseline modes"
)]
struct Args {
    /// Which load to run.
    #[arg(value_enum)]
    mode: Mode,
    /// Transactions in flight, one point of the sweep each.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32,128")]
    concurrency: Vec<usize>,
    /// Seconds of load per point.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load at concurrency 8 before the sweep, not measured (connections, caches).
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Seconds to wait after each point for Postgres' statistics to be flushed (idle backends
    /// flush after 10 s since Postgres 15).
    #[arg(long, default_value_t = 11.0)]
    settle: f64,
    /// Coordinator base URL(s) (`coordinator` mode); several: round-robin over replicas.
    #[arg(long, default_value = "http://127.0.0.1:36789/api/dtmsvr")]
    dtm: Vec<String>,
    /// The AP's API base (`transfer`, `baseline`).
    #[arg(long, default_value = "http://127.0.0.1:8080/api")]
    app: String,
    /// Postgres server URL, without database name.
    #[arg(
        long,
        env = "PG_URL",
        default_value = "postgres://postgres@127.0.0.1:5432"
    )]
    pg_url: String,
    /// Prepended to the database names (`scripts/up.sh`'s `DB_PREFIX`).
    #[arg(long, env = "DB_PREFIX", default_value = "")]
    db_prefix: String,
    /// Accounts seeded in each bank (`SEED_ACCOUNTS`); transfers draw from `1..=accounts`.
    #[arg(long, default_value_t = 1000)]
    accounts: i64,
    /// Spread the transfers over only this many accounts (contention).
    #[arg(long)]
    hot: Option<i64>,
    /// Minor units per transfer.
    #[arg(long, default_value_t = 1)]
    amount: i64,
    /// Directory of `scripts/up.sh`'s pid files, for the CPU split.
    #[arg(long, default_value = "target/run")]
    run_dir: String,
    /// Extra processes to watch, `name=pid` (e.g. a second coordinator replica).
    #[arg(long = "pid", value_parser = parse_pid)]
    pids: Vec<(String, u32)>,
    /// Data directory of the Postgres cluster (for its postmaster pid and CPU); optional.
    #[arg(long)]
    pg_data: Option<String>,
    /// Send no Try reports in `coordinator` mode (what a DTM client does).
    #[arg(long)]
    no_try_reports: bool,
    /// After the sweep, one more point open-loop at half its best tx/s (see the crate docs).
    #[arg(long)]
    half_peak: bool,
    /// Statements of `pg_stat_statements` kept per point.
    #[arg(long, default_value_t = 15)]
    statements: i64,
    /// Where to write the JSON result; default `target/bench/<mode>.json`.
    #[arg(long)]
    out: Option<PathBuf>,
}

fn parse_pid(s: &str) -> Result<(String, u32), String> {
    let (name, pid) = s.split_once('=').ok_or("expected name=pid")?;
    Ok((
        name.to_owned(),
        pid.parse().map_err(|_| format!("bad pid in {s}"))?,
    ))
}

#[tokio::main]
async fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args = Args::parse();
    match run(args).await {
        Ok(true) => {}
        Ok(false) => std::process::exit(2),
        Err(e) => {
            eprintln!("tcc-bench: {e}");
            std::process::exit(1);
        }
    }
}

/// Runs the sweep; `Ok(false)` when the end-of-run check failed.
async fn run(args: Args) -> Result<bool, String> {
    let mode = args.mode;
    let db = |name: &str| format!("{}{name}", args.db_prefix);
    let databases: Vec<String> = match mode {
        Mode::Coordinator => vec![db("coordinator")],
        Mode::Transfer => vec![db("coordinator"), db("trans_out"), db("trans_in")],
        Mode::Baseline => vec![db("trans_out"), db("trans_in")],
    };
    let service_names: &[&str] = match mode {
        Mode::Coordinator => &["coordinator"],
        Mode::Transfer => &["app", "coordinator", "trans-out", "trans-in"],
        Mode::Baseline => &["app", "trans-out", "trans-in"],
    };
    let mut services = cpu::pids_from_run_dir(&args.run_dir, service_names);
    services.extend(args.pids.iter().cloned());
    let watched = cpu::Watched {
        services,
        postgres: args.pg_data.as_deref().and_then(cpu::postmaster_pid),
    };

    let pg_url = args.pg_url.clone();
    let mut pg = blocking(move || pg::Pg::connect(&pg_url)).await?;

    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(512)
        .pool_idle_timeout(tcc::client::POOL_IDLE_TIMEOUT)
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| e.to_string())?;
    let mut rm_counters = None;
    let workload = match mode {
        Mode::Coordinator => {
            let (rm_url, counters) = rm::start().map_err(|e| format!("built-in RM: {e}"))?;
            rm_counters = Some(counters);
            let clients = args
                .dtm
                .iter()
                .map(|url| {
                    let client = TccClient::with_http_client(http.clone(), url);
                    if args.no_try_reports {
                        client.without_try_reports()
                    } else {
                        client
                    }
                })
                .collect();
            Workload::Coordinator {
                clients,
                rm: rm_url,
            }
        }
        Mode::Transfer | Mode::Baseline => Workload::App {
            http: http.clone(),
            url: format!(
                "{}/{}",
                args.app.trim_end_matches('/'),
                if mode == Mode::Transfer {
                    "fireTcc"
                } else {
                    "fireBaseline"
                }
            ),
            accounts: args.hot.unwrap_or(args.accounts).max(1),
            amount: args.amount,
        },
    };

    let money_dbs = (db("trans_out"), db("trans_in"));
    let money_before = if mode == Mode::Coordinator {
        None
    } else {
        let dbs = money_dbs.clone();
        let pg_ref = &pg;
        Some((pg_ref.balance_sum(&dbs.0)?, pg_ref.balance_sum(&dbs.1)?))
    };

    let mut completed_total = 0u64;
    let mut gids = Vec::new();
    let mut late = Vec::new();
    if args.warmup > 0.0 {
        let warm = load::run(&workload, 8, Duration::from_secs_f64(args.warmup)).await;
        completed_total += warm.completed;
        gids.extend(warm.gids);
        late.extend(warm.late);
        eprintln!(
            "[bench] {} warmup: {} completed, {} errors",
            mode.name(),
            warm.completed,
            warm.errors.values().sum::<u64>()
        );
    }
    let settle = Duration::from_secs_f64(args.settle);
    pg.settle(settle);

    let mut points = Vec::new();
    let duration = Duration::from_secs_f64(args.duration);
    let mut loads: Vec<Load> = args
        .concurrency
        .iter()
        .map(|&c| Load::Closed(c.max(1)))
        .collect();
    if args.half_peak {
        loads.push(Load::HalfPeak);
    }
    for load in loads {
        let (concurrency, rate, label) = match load {
            Load::Closed(c) => (c, None, format!("c={c}")),
            Load::HalfPeak => {
                let peak = points
                    .iter()
                    .filter_map(|p: &Value| p["tps"].as_f64())
                    .fold(0.0_f64, f64::max);
                let rate = (peak / 2.0).max(1.0);
                (
                    0,
                    Some(rate),
                    format!("open loop at {rate:.0}/s (half the peak {peak:.0})"),
                )
            }
        };
        let commits_before = pg.commits(&databases)?;
        pg.reset_statements();
        let cpu_before = watched.snapshot();
        let measured = match rate {
            Some(rate) => load::run_at_rate(&workload, rate, duration).await,
            None => load::run(&workload, concurrency, duration).await,
        };
        let cpu_after = watched.snapshot();
        let statements = pg.top_statements(&databases, args.statements);
        pg.settle(settle);
        let commits_after = pg.commits(&databases)?;
        completed_total += measured.completed;
        let mut point = point_json(
            concurrency,
            &measured,
            &pg::delta(&commits_before, &commits_after),
            &cpu::delta(&cpu_before, &cpu_after),
            &statements,
        );
        if let Some(rate) = rate {
            point["concurrency"] = Value::Null;
            point["rate"] = json!(rate);
        }
        eprintln!("[bench] {} {label}: {}", mode.name(), summary(&point));
        gids.extend(measured.gids);
        late.extend(measured.late);
        points.push(point);
    }

    let check = match (mode, money_before) {
        (Mode::Coordinator, _) => {
            let counters = rm_counters.expect("coordinator mode starts the RM");
            // A Confirm may still be in flight for an errored transaction; give it a moment.
            tokio::time::sleep(Duration::from_secs(2)).await;
            let lost = gids
                .iter()
                .filter(|gid| {
                    !(counters.was_confirmed(gid, "01") && counters.was_confirmed(gid, "02"))
                })
                .count();
            let (confirmed, duplicated) = counters.confirm_summary();
            json!({
                "committed_transactions": completed_total,
                "branches_confirmed": confirmed,
                "committed_with_a_branch_never_confirmed": lost,
                "branches_confirmed_more_than_once": duplicated,
                "try_calls": counters.tries.load(std::sync::atomic::Ordering::Relaxed),
                "confirm_calls": counters.confirms.load(std::sync::atomic::Ordering::Relaxed),
                "cancel_calls": counters.cancels.load(std::sync::atomic::Ordering::Relaxed),
                "ok": lost == 0 && duplicated == 0,
            })
        }
        (_, Some((out_before, in_before))) => {
            // Transfers that errored on the client side may still be settling: wait for the
            // banks to have no tentative hold (at most a minute).
            for _ in 0..120 {
                let pending =
                    pg.tentative_holds(&money_dbs.0)? + pg.tentative_holds(&money_dbs.1)?;
                if pending == 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            // Answers that came before their second phase finished were counted as errors, but
            // their transfers still complete (or roll back): follow them to their end.
            let mut late_succeeded = 0;
            if !late.is_empty() {
                for _ in 0..120 {
                    let (succeeded, unfinished) = pg.late_outcomes(&db("coordinator"), &late)?;
                    late_succeeded = succeeded;
                    if unfinished == 0 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
            let out_after = pg.balance_sum(&money_dbs.0)?;
            let in_after = pg.balance_sum(&money_dbs.1)?;
            let expected = (completed_total as i64 + late_succeeded) * args.amount;
            let (left, arrived) = (out_before - out_after, in_after - in_before);
            json!({
                "transfers_counted": completed_total,
                "late_answers": late.len(),
                "late_answers_succeeded": late_succeeded,
                "expected_moved": expected,
                "left_bank_a": left,
                "arrived_bank_b": arrived,
                "ok": left == expected && arrived == expected,
            })
        }
        (_, None) => unreachable!("the money is read before every app mode"),
    };

    let result = json!({
        "mode": mode.name(),
        "duration_s": args.duration,
        "hot_accounts": args.hot,
        "accounts": args.accounts,
        "dtm": args.dtm,
        "app": args.app,
        "databases": databases,
        "try_reports": !args.no_try_reports,
        "points": points,
        "check": check,
        "machine": machine(),
    });
    print_table(mode, &result);
    let out = args
        .out
        .unwrap_or_else(|| PathBuf::from(format!("target/bench/{}.json", mode.name())));
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    std::fs::write(
        &out,
        serde_json::to_string_pretty(&result).expect("JSON values serialize"),
    )
    .map_err(|e| format!("{}: {e}", out.display()))?;
    eprintln!("[bench] wrote {}", out.display());
    let ok = result["check"]["ok"].as_bool().unwrap_or(false);
    if !ok {
        eprintln!("[bench] END-OF-RUN CHECK FAILED: {}", result["check"]);
    }
    Ok(ok)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| e.to_string())?
}

/// The JSON of one point of the sweep.
fn point_json(
    concurrency: usize,
    measured: &load::PointLoad,
    commits: &BTreeMap<String, i64>,
    cpu: &BTreeMap<String, f64>,
    statements: &[pg::Statement],
) -> Value {
    let secs = measured.elapsed.as_secs_f64();
    let n = measured.completed;
    let per_tx = |x: f64| if n == 0 { 0.0 } else { x / n as f64 };
    let h = &measured.histogram;
    let ms = |v: u64| v as f64 / 1000.0;
    let commits_total: i64 = commits.values().sum();
    json!({
        "concurrency": concurrency,
        "elapsed_s": secs,
        "completed": n,
        "tps": n as f64 / secs,
        "errors": measured.errors.values().sum::<u64>(),
        "error_kinds": measured.errors,
        "latency_ms": {
            "p50": ms(h.value_at_quantile(0.50)),
            "p90": ms(h.value_at_quantile(0.90)),
            "p99": ms(h.value_at_quantile(0.99)),
            "max": ms(h.max()),
            "mean": h.mean() / 1000.0,
        },
        "commits": commits,
        "commits_per_tx": commits.iter().map(|(db, c)| (db.clone(), per_tx(*c as f64))).collect::<BTreeMap<_, _>>(),
        "commits_per_tx_total": per_tx(commits_total as f64),
        "cpu_s": cpu,
        "cpu_s_per_1000_tx": cpu.iter().map(|(p, s)| (p.clone(), per_tx(s * 1000.0))).collect::<BTreeMap<_, _>>(),
        "statements_per_tx": statements.iter().map(|s| json!({
            "db": s.db, "per_tx": per_tx(s.calls as f64), "calls": s.calls,
            "total_ms": s.total_ms, "query": s.query,
        })).collect::<Vec<_>>(),
    })
}

fn summary(point: &Value) -> String {
    format!(
        "{:.0} tx/s, p50 {:.1} ms, p99 {:.1} ms, {} errors, {:.2} commits/tx",
        point["tps"].as_f64().unwrap_or(0.0),
        point["latency_ms"]["p50"].as_f64().unwrap_or(0.0),
        point["latency_ms"]["p99"].as_f64().unwrap_or(0.0),
        point["errors"],
        point["commits_per_tx_total"].as_f64().unwrap_or(0.0),
    )
}

/// What this machine is, for the record.
fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_default();
    json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu_model": cpu,
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        "when": chrono::Utc::now().to_rfc3339(),
    })
}

/// The table: one row per concurrency, and `r=<rate>` for the open-loop point.
fn print_table(mode: Mode, result: &Value) {
    let points = result["points"].as_array().cloned().unwrap_or_default();
    let procs = keys_of(&points, "cpu_s_per_1000_tx");
    let dbs = keys_of(&points, "commits_per_tx");
    println!();
    println!("== {} ==", mode.name());
    let mut header = format!(
        "{:>5} {:>8} {:>8} {:>8} {:>8} {:>8} {:>6} {:>8}",
        "conc", "tx/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "errors", "commits"
    );
    for db in &dbs {
        header += &format!(" {:>11}", trim(db, 11));
    }
    header += "  | CPU s/1k tx:";
    for p in &procs {
        header += &format!(" {:>11}", trim(p, 11));
    }
    println!("{header}");
    for p in &points {
        let f = |v: &Value| v.as_f64().unwrap_or(0.0);
        let point_name = match p["rate"].as_f64() {
            Some(rate) => format!("r={rate:.0}"),
            None => p["concurrency"].to_string(),
        };
        let mut row = format!(
            "{:>5} {:>8.0} {:>8.2} {:>8.2} {:>8.2} {:>8.1} {:>6} {:>8.2}",
            point_name,
            f(&p["tps"]),
            f(&p["latency_ms"]["p50"]),
            f(&p["latency_ms"]["p90"]),
            f(&p["latency_ms"]["p99"]),
            f(&p["latency_ms"]["max"]),
            p["errors"],
            f(&p["commits_per_tx_total"]),
        );
        for db in &dbs {
            row += &format!(" {:>11.2}", f(&p["commits_per_tx"][db]));
        }
        row += "  |             ";
        for proc_name in &procs {
            row += &format!(" {:>11.2}", f(&p["cpu_s_per_1000_tx"][proc_name]));
        }
        println!("{row}");
    }
    println!("check: {}", result["check"]);
}

/// The keys of the object `field` over all `points`, in first-seen order (the table's columns).
fn keys_of(points: &[Value], field: &str) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    for key in points
        .iter()
        .filter_map(|p| p[field].as_object())
        .flat_map(|o| o.keys())
    {
        if !keys.contains(key) {
            keys.push(key.clone());
        }
    }
    keys
}

fn trim(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}
