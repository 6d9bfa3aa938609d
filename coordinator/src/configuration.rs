//! The coordinator's settings, read from environment variables at start.

use std::time::Duration;

use service_kit::settings::{env_or, env_string, SettingsError};
use tcc::protocol::{MAX_OPTION_SECS, MAX_REQUEST_TIMEOUT_SECS};
use tcc::signing::SigningSecret;

use subtle::ConstantTimeEq;

/// Defaults for the per-transaction options an AP may leave unset in `prepare`
/// (DTM's `TimeoutToFail`, `RetryInterval`, `RequestTimeout`; the same defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransDefaults {
    /// Seconds a transaction may stay `prepared` before the TM aborts it. Env `TIMEOUT_TO_FAIL`, 35.
    pub timeout_to_fail: u32,
    /// Seconds: base of the retry backoff. Env `RETRY_INTERVAL`, 10.
    pub retry_interval: u32,
    /// Seconds: timeout of each branch call, and of the wait of `wait_result`. Env `REQUEST_TIMEOUT`, 3.
    pub request_timeout: u32,
}

/// Everything the coordinator reads from its environment.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Interface to listen on. Env `HOST`, default `127.0.0.1` (`0.0.0.0` in containers).
    pub host: String,
    /// Port to listen on; 0 picks a free one (tests). Env `PORT`, default 36789 (DTM's).
    pub port: u16,
    /// The coordinator's own database. Env `DATABASE_URL`.
    pub database_url: String,
    /// Connections in the pool. Env `DB_POOL_SIZE`, 10.
    pub db_pool_size: u32,
    /// Largest accepted request body in bytes. Env `JSON_LIMIT`, 65536.
    pub json_limit: usize,
    /// This replica's name in lease tokens. Env `COORDINATOR_ID`; default `<HOSTNAME>:<port>`.
    /// At start a replica releases the leases its previous life held, so two replicas must
    /// never share an id.
    pub coordinator_id: Option<String>,
    /// How often the worker looks for due transactions. Env `CRON_INTERVAL_MS`, 1000.
    pub cron_interval: Duration,
    /// How long a claimed transaction is reserved for its worker, at least the transaction's
    /// `request_timeout` + 5 s; a pass renews it before a branch call it might not cover. A
    /// replica that dies is replaced after this. Env `LEASE_SECONDS`, 30.
    pub lease: Duration,
    /// Cap of the exponential backoff, seconds (DTM has none). Env `RETRY_MAX_INTERVAL`, 300.
    pub retry_max_interval: u32,
    /// Failed attempts of one branch op after which each further failure is an alert
    /// (an error log line with gid, branch_id and op). Env `ALERT_AFTER_ATTEMPTS`, 3.
    pub alert_after_attempts: u32,
    /// Most transactions one claim of the worker takes. Env `WORKER_BATCH`, 64.
    pub worker_batch: u32,
    /// Most second-phase passes the worker runs at once, each in its own task; the worker
    /// claims only as many as there are free slots. Env `MAX_PASSES_IN_FLIGHT`, 128.
    pub max_passes_in_flight: u32,
    /// How long a finished (`succeed`/`failed`) transaction is kept after its `finish_time`
    /// before the retention job ([`crate::retention`]) deletes it with its branch ops; whole
    /// seconds. Unfinished transactions are never deleted. Env `RETENTION_SECONDS`, default
    /// 604800 (7 days); 0 disables the job (DTM's behaviour: keep everything).
    pub retention: Duration,
    /// How long the tombstone of a transaction retention deleted (its gid) is kept after the
    /// transaction's `finish_time`, whole seconds; until then `prepare` refuses the gid (409).
    /// Must exceed the RMs' `BARRIER_RETENTION_SECONDS` (7 days by default): a gid prepared again
    /// while an RM still holds its barrier rows would have its Try and Confirm skipped as
    /// duplicates. Env `GID_TOMBSTONE_SECONDS`, default 2592000 (30 days); 0 keeps them forever.
    pub gid_tombstones: Duration,
    /// Most transactions one retention `DELETE` removes. Env `RETENTION_BATCH`, default 1000.
    pub retention_batch: u32,
    /// Defaults of per-transaction options.
    pub defaults: TransDefaults,
    /// Bearer token the admin actions (`retry-now`, `force-stop` under `/api/admin`) require in
    /// `Authorization: Bearer <token>`. Env `ADMIN_TOKEN`; unset or empty: the actions are open to
    /// anyone who reaches the port, and the coordinator logs a warning at start (demo mode).
    /// The read-only admin routes and the `/admin` page never need it.
    /// Held in an [`AdminToken`], whose `Debug` does not print it.
    pub admin_token: Option<AdminToken>,
    /// The hosts a registered Confirm/Cancel URL may point at. Env `BRANCH_HOST_ALLOWLIST`,
    /// comma-separated; default [`BranchHosts::DEFAULT`].
    pub branch_hosts: BranchHosts,
    /// The secret shared with the RMs, with which every Confirm and Cancel call is signed
    /// (HMAC-SHA256, headers `X-Tcc-Timestamp` and `X-Tcc-Signature`: [`tcc::signing`]).
    /// Env `BRANCH_SIGNING_SECRET`; unset or empty: calls go unsigned and the coordinator logs a
    /// warning at start (demo mode; RMs with a secret then refuse them with 401).
    pub branch_signing_secret: Option<SigningSecret>,
}

/// The hosts the coordinator agrees to call (design: the TM must not be usable to make requests
/// to arbitrary addresses, i.e. server-side request forgery). `registerBranch` refuses a Confirm
/// or Cancel URL whose host is not on the list, so nothing outside it is ever called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BranchHosts(Vec<String>);

impl BranchHosts {
    /// The compose service names and the loopback names: what this sample's RMs run as.
    pub const DEFAULT: &'static str =
        "localhost,127.0.0.1,::1,coordinator,trans-out,trans-in,stock,app";

    /// A list from comma-separated host names (case-insensitive; IPv6 without brackets). `*`
    /// allows every host: only for a coordinator whose network already restricts what it can
    /// reach.
    pub fn parse(list: &str) -> BranchHosts {
        BranchHosts(
            list.split(',')
                .map(|h| {
                    h.trim()
                        .trim_start_matches('[')
                        .trim_end_matches(']')
                        .to_ascii_lowercase()
                })
                .filter(|h| !h.is_empty())
                .collect(),
        )
    }

    /// `true` when `host` (as `url::Url::host_str` gives it) may be called.
    pub fn allows(&self, host: &str) -> bool {
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        self.0
            .iter()
            .any(|allowed| allowed == "*" || *allowed == host)
    }
}

impl Settings {
    /// Reads the settings; errors name the variable that does not parse.
    pub fn from_env() -> Result<Settings, SettingsError> {
        Ok(Settings {
            host: env_string("HOST", "127.0.0.1"),
            port: env_or("PORT", 36789)?,
            database_url: env_string(
                "DATABASE_URL",
                "postgres://postgres@127.0.0.1:5432/coordinator",
            ),
            db_pool_size: env_or("DB_POOL_SIZE", 10)?,
            json_limit: env_or("JSON_LIMIT", 65536)?,
            coordinator_id: std::env::var("COORDINATOR_ID")
                .ok()
                .filter(|s| !s.is_empty()),
            cron_interval: Duration::from_millis(env_or("CRON_INTERVAL_MS", 1000)?),
            lease: Duration::from_secs(env_or("LEASE_SECONDS", 30)?),
            retry_max_interval: env_or("RETRY_MAX_INTERVAL", 300)?,
            alert_after_attempts: env_or("ALERT_AFTER_ATTEMPTS", 3)?,
            worker_batch: env_or("WORKER_BATCH", 64)?,
            max_passes_in_flight: env_or("MAX_PASSES_IN_FLIGHT", 128)?,
            retention: Duration::from_secs(env_or("RETENTION_SECONDS", 7 * 24 * 3600)?),
            gid_tombstones: Duration::from_secs(env_or("GID_TOMBSTONE_SECONDS", 30 * 24 * 3600)?),
            retention_batch: env_or("RETENTION_BATCH", 1000)?,
            defaults: TransDefaults {
                timeout_to_fail: env_or("TIMEOUT_TO_FAIL", 35)?,
                retry_interval: env_or("RETRY_INTERVAL", 10)?,
                request_timeout: env_or("REQUEST_TIMEOUT", 3)?,
            },
            admin_token: std::env::var("ADMIN_TOKEN")
                .ok()
                .filter(|s| !s.is_empty())
                .map(AdminToken::new),
            branch_hosts: BranchHosts::parse(&env_string(
                "BRANCH_HOST_ALLOWLIST",
                BranchHosts::DEFAULT,
            )),
            branch_signing_secret: SigningSecret::from_env(),
        })
        .and_then(Settings::validated)
    }

    /// Refuses option defaults outside the range `prepare` accepts (1..=86400 seconds,
    /// `REQUEST_TIMEOUT` 1..=60): 0 or a huge value would store a non-positive timeout or
    /// interval.
    fn validated(self) -> Result<Settings, SettingsError> {
        let d = self.defaults;
        for (name, value, max) in [
            ("TIMEOUT_TO_FAIL", d.timeout_to_fail, MAX_OPTION_SECS),
            ("RETRY_INTERVAL", d.retry_interval, MAX_OPTION_SECS),
            (
                "REQUEST_TIMEOUT",
                d.request_timeout,
                MAX_REQUEST_TIMEOUT_SECS,
            ),
        ] {
            if !(1..=max).contains(&i64::from(value)) {
                return Err(SettingsError {
                    name: name.into(),
                    value: value.to_string(),
                    message: format!("must be 1 to {max} seconds"),
                });
            }
        }
        Ok(self)
    }
}

/// The admin token (env `ADMIN_TOKEN`). Its `Debug` prints `AdminToken(<redacted>)`, so logging
/// the settings never leaks it.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(String);

impl AdminToken {
    /// Wraps `token`. An empty token is refused by [`Settings::from_env`] (it means "unset").
    pub fn new(token: impl Into<String>) -> AdminToken {
        AdminToken(token.into())
    }

    /// Whether `presented` is this token, compared in constant time. (Only the length of the
    /// token can be learnt from timing, which is of no help in guessing it.)
    pub fn matches(&self, presented: &str) -> bool {
        self.0.as_bytes().ct_eq(presented.as_bytes()).into()
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::BranchHosts;

    #[test]
    fn the_default_allowlist_admits_loopback_and_the_compose_services_only() {
        let hosts = BranchHosts::parse(BranchHosts::DEFAULT);
        for host in [
            "localhost",
            "127.0.0.1",
            "[::1]",
            "trans-out",
            "TRANS-IN",
            "app",
        ] {
            assert!(hosts.allows(host), "{host}");
        }
        for host in ["evil.example", "10.0.0.7", "169.254.169.254", "127.0.0.2"] {
            assert!(!hosts.allows(host), "{host}");
        }
        assert!(BranchHosts::parse("*").allows("bank.example"));
        assert!(!BranchHosts::parse("").allows("localhost"));
    }
}
