//! The sample's binaries as real OS processes, for the failure tests that must kill them
//! (`SIGKILL`), restart them, or watch them exit.
//!
//! Binaries are built once per test binary (`cargo build --bins` of the four service packages,
//! a no-op when up to date) so that a test never runs a stale build. Each process listens on a
//! free port chosen up front and kept across restarts, logs to `target/test-logs/<name>-<port>.log`
//! (shown when a start fails), and is killed when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Where cargo puts this profile's binaries: the parent of the test binary's `deps/` folder.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.parent()
        .and_then(Path::parent)
        .expect("test binaries live in <target>/<profile>/deps")
        .to_path_buf()
}

/// Builds the service binaries once for this test binary, in the profile the tests run in.
pub fn ensure_built() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let profile_dir = target_dir();
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.args([
            "build",
            "--bins",
            "-p",
            "coordinator",
            "-p",
            "bank",
            "-p",
            "stock",
            "-p",
            "app",
        ]);
        if release {
            build.arg("--release");
        }
        // Cargo gives the test process variables describing the test's own package
        // (CARGO_MANIFEST_DIR, CARGO_PKG_*, ...). Passed on, some build scripts (ring's) see them
        // as changed and the dependency tree is rebuilt here, and again by the next plain
        // `cargo build`: a minute each time on two cores.
        for (key, _) in std::env::vars_os() {
            let Some(key) = key.to_str() else { continue };
            let from_test_package = [
                "CARGO_MANIFEST_",
                "CARGO_PKG_",
                "CARGO_CRATE_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
                "CARGO_RUSTC_CURRENT_DIR",
                "CARGO_BIN_",
            ]
            .iter()
            .any(|prefix| key.starts_with(prefix));
            if from_test_package {
                build.env_remove(key);
            }
        }
        let status = build.status().expect("cargo runs");
        assert!(status.success(), "building the service binaries failed");
    });
}

/// Runs the binary `name` (built first, as [`Process::start`] does) with `args` and `env` to
/// completion, as an operator runs a subcommand (`trans-out reconcile ...`); its exit status,
/// stdout and stderr.
pub fn run_to_completion(name: &str, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    ensure_built();
    let mut command = Command::new(target_dir().join(name));
    command.args(args).stdin(Stdio::null());
    for (key, value) in env {
        command.env(key, value);
    }
    command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {name}: {e}"))
}

/// A free TCP port on 127.0.0.1 (bound and released; the small race is acceptable in tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// One binary running as a child process.
pub struct Process {
    /// Binary name: `coordinator`, `trans-out`, `trans-in`, `stock`, `app`.
    pub name: &'static str,
    /// The port it listens on, kept across restarts.
    pub port: u16,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
}

impl Process {
    /// Starts `name` with `env` (plus `HOST=127.0.0.1`, `PORT`, and `RUST_LOG=info` unless set)
    /// and waits until its `/api/health` answers 200; panics with its log otherwise.
    pub async fn start(name: &'static str, env: Vec<(String, String)>) -> Process {
        ensure_built();
        let port = free_port();
        let logs = target_dir().join("..").join("test-logs");
        std::fs::create_dir_all(&logs).expect("the test-logs folder");
        let log = logs.join(format!("{name}-{port}.log"));
        // A fresh log per process: an earlier run on the same port must not answer this one's
        // log checks. Restarts append, so the log tells the process's whole story.
        let _ = std::fs::remove_file(&log);
        let mut process = Process {
            name,
            port,
            env,
            log,
            child: None,
        };
        process.spawn_and_wait().await;
        process
    }

    /// `http://127.0.0.1:<port>` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Kills the process with `SIGKILL`, as a crash would, and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port with the same environment.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn_and_wait().await;
    }

    /// Waits up to `within` for the process to exit by itself; its status, or `None`.
    pub async fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Some(status);
                }
            } else {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    /// The file the process logs to: new at [`Process::start`], appended to across restarts,
    /// kept after the test.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Everything the process has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn spawn_and_wait(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("the log file");
        let mut command = Command::new(target_dir().join(self.name));
        command
            .env("HOST", "127.0.0.1")
            .env("PORT", self.port.to_string())
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log);
        for (key, value) in &self.env {
            command.env(key, value);
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.name));
        self.child = Some(child);

        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(response) = http.get(self.url("/api/health")).send().await {
                if response.status().is_success() {
                    return;
                }
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!(
                    "{} exited with {status} at start; log:\n{}",
                    self.name,
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} did not become healthy in 20 s; log:\n{}",
                self.name,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The five binaries as processes, each RM and the coordinator on a fresh database.
pub struct ProcessSystem {
    /// The TM; `COORDINATOR_ID` is fixed, so a restart releases its leases at once.
    pub coordinator: Process,
    /// Bank A.
    pub trans_out: Process,
    /// Bank B.
    pub trans_in: Process,
    /// Inventory.
    pub stock: Process,
    /// The AP.
    pub app: Process,
    /// A client for the test's own calls.
    pub http: reqwest::Client,
    _databases: Vec<crate::TestDb>,
}

fn owned(env: &[(&str, &str)]) -> Vec<(String, String)> {
    env.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Extra environment for each kind of binary, added after the test defaults of
/// [`spawn_processes_with`] (a later value of the same variable wins).
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv<'a> {
    /// Added to the coordinator's environment.
    pub coordinator: &'a [(&'a str, &'a str)],
    /// Added to the environment of each of the three RMs (`trans-out`, `trans-in`, `stock`),
    /// e.g. `SEED_ACCOUNTS`, `SEED_STOCK`, `DB_POOL_SIZE`.
    pub rms: &'a [(&'a str, &'a str)],
    /// Added to the AP's environment.
    pub app: &'a [(&'a str, &'a str)],
}

/// Starts the five binaries. `coordinator_env` is added to the coordinator's environment
/// (after the test defaults: `CRON_INTERVAL_MS=100`, `COORDINATOR_ID=test-coordinator`,
/// `DB_POOL_SIZE=4`).
pub async fn spawn_processes(coordinator_env: &[(&str, &str)]) -> ProcessSystem {
    spawn_processes_with(ProcessEnv {
        coordinator: coordinator_env,
        ..ProcessEnv::default()
    })
    .await
}

/// Starts the five binaries, each RM and the coordinator on a fresh database, with `env` added
/// to the test defaults: all three kinds `BRANCH_SIGNING_SECRET` =
/// [`crate::spawn::TEST_SIGNING_SECRET`]; coordinator `CRON_INTERVAL_MS=100`,
/// `COORDINATOR_ID=test-coordinator`, `DB_POOL_SIZE=4`; RMs `SEED_ACCOUNTS=10`,
/// `SEED_PRODUCTS=10`, `DB_POOL_SIZE=3`, `DTM_URL` the coordinator; the AP wired to the other
/// four.
pub async fn spawn_processes_with(env: ProcessEnv<'_>) -> ProcessSystem {
    let dbs: Vec<crate::TestDb> = ["coordinator", "trans_out", "trans_in", "stock"]
        .into_iter()
        .map(crate::TestDb::create)
        .collect();
    let secret = ("BRANCH_SIGNING_SECRET", crate::spawn::TEST_SIGNING_SECRET);
    let mut tm_env = owned(&[
        ("DATABASE_URL", &dbs[0].url),
        ("CRON_INTERVAL_MS", "100"),
        ("COORDINATOR_ID", "test-coordinator"),
        ("DB_POOL_SIZE", "4"),
        secret,
    ]);
    tm_env.extend(owned(env.coordinator));
    let coordinator = Process::start("coordinator", tm_env).await;
    let dtm_url = coordinator.url("/api/dtmsvr");
    let rm_env = |db: &crate::TestDb| {
        let mut vars = owned(&[
            ("DATABASE_URL", &db.url),
            ("SEED_ACCOUNTS", "10"),
            ("SEED_PRODUCTS", "10"),
            // r2d2 opens the whole pool at start; tests run in parallel on one server.
            ("DB_POOL_SIZE", "3"),
            secret,
            ("DTM_URL", &dtm_url),
        ]);
        vars.extend(owned(env.rms));
        vars
    };
    let trans_out = Process::start("trans-out", rm_env(&dbs[1])).await;
    let trans_in = Process::start("trans-in", rm_env(&dbs[2])).await;
    let stock = Process::start("stock", rm_env(&dbs[3])).await;
    let mut app_env = owned(&[
        secret,
        ("DTM_URL", &dtm_url),
        ("TRANS_OUT_URL", &trans_out.url("/api")),
        ("TRANS_IN_URL", &trans_in.url("/api")),
        ("STOCK_URL", &stock.url("/api")),
    ]);
    app_env.extend(owned(env.app));
    let app = Process::start("app", app_env).await;
    ProcessSystem {
        coordinator,
        trans_out,
        trans_in,
        stock,
        app,
        http: reqwest::Client::new(),
        _databases: dbs,
    }
}

impl ProcessSystem {
    /// Starts one more coordinator on the same database, with its own `COORDINATOR_ID` and
    /// `env` added: a replica.
    pub async fn spawn_coordinator_replica(&self, id: &str, env: &[(&str, &str)]) -> Process {
        let mut replica_env = owned(&[
            ("DATABASE_URL", &self._databases[0].url),
            ("CRON_INTERVAL_MS", "100"),
            ("COORDINATOR_ID", id),
            ("DB_POOL_SIZE", "4"),
            ("BRANCH_SIGNING_SECRET", crate::spawn::TEST_SIGNING_SECRET),
        ]);
        replica_env.extend(owned(env));
        Process::start("coordinator", replica_env).await
    }

    /// The coordinator's DTM base URL.
    pub fn dtm_url(&self) -> String {
        self.coordinator.url("/api/dtmsvr")
    }

    /// The `DATABASE_URL` of `binary` (`coordinator`, `trans-out`, `trans-in` or `stock`), for
    /// tests that check invariants with SQL. Panics for any other name (the AP has no database).
    pub fn database_url(&self, binary: &str) -> &str {
        let index = match binary {
            "coordinator" => 0,
            "trans-out" => 1,
            "trans-in" => 2,
            "stock" => 3,
            other => panic!("{other} has no database"),
        };
        &self._databases[index].url
    }

    /// The five processes, in start order (coordinator, trans-out, trans-in, stock, app), for
    /// tests that pick one to kill and restart.
    pub fn processes_mut(&mut self) -> [&mut Process; 5] {
        [
            &mut self.coordinator,
            &mut self.trans_out,
            &mut self.trans_in,
            &mut self.stock,
            &mut self.app,
        ]
    }

    /// `GET` on the AP; (HTTP status, JSON body). `Err` when the AP did not answer (it crashed).
    pub async fn fire(
        &self,
        path_and_query: &str,
    ) -> Result<(u16, serde_json::Value), reqwest::Error> {
        let response = self.http.get(self.app.url(path_and_query)).send().await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await?))
    }

    /// Fires `path` on the AP (with `wait_result=false`, so that it answers at `submit`), checks
    /// its HTTP status is `expected`, and waits until `rm` logs that `op` of `branch_id` is in
    /// flight (the `fault ...: injected` line of a delayed call); returns the gid.
    pub async fn fire_until_in_flight(
        &self,
        path: &str,
        expected: u16,
        rm: &Process,
        branch_id: &str,
        op: &str,
    ) -> String {
        let (status, answer) = self.fire(path).await.expect("the AP answers");
        assert_eq!(status, expected, "{answer}");
        let gid = answer["gid"].as_str().expect("a gid").to_owned();
        let needle = format!("gid={gid} branch_id={branch_id} op={op} fault ");
        wait_for_log(rm, &needle, Duration::from_secs(10)).await;
        gid
    }

    /// `(balance, trading_balance, pending_in)` of account `id` in `bank`.
    pub async fn account(&self, bank: &Process, id: i64) -> (i64, i64, i64) {
        let a = crate::spawn::get_json(&self.http, &bank.url(&format!("/api/accounts/{id}"))).await;
        let field = |name: &str| a[name].as_i64().unwrap_or_else(|| panic!("{name} in {a}"));
        (
            field("balance"),
            field("trading_balance"),
            field("pending_in"),
        )
    }

    /// Polls the coordinator until `gid` has `status`; panics after `within`.
    pub async fn wait_for_status(
        &self,
        gid: &str,
        status: &str,
        within: Duration,
    ) -> serde_json::Value {
        crate::spawn::wait_for_status(&self.http, &self.dtm_url(), gid, status, within).await
    }
}

/// Polls `process`'s log until it contains `needle`; panics with the log after `within`.
pub async fn wait_for_log(process: &Process, needle: &str, within: Duration) {
    let deadline = Instant::now() + within;
    while !process.log().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "{} never logged {needle:?} within {within:?}; log:\n{}",
            process.name,
            process.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
