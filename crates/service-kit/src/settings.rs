//! Typed settings from environment variables.
//!
//! Each binary has a `Settings` struct built by a `from_env()` that calls these helpers, so that a
//! wrong value stops the binary at start with the variable's name, rather than later. The
//! settings all RMs share are read here once: [`RmCommonSettings`].

use std::fmt::Display;
use std::str::FromStr;
use std::time::Duration;

use tcc::signing::SigningSecret;

use crate::coordinator_check::{TryVerification, DEFAULT_DTM_URL};
use crate::retention::BarrierRetention;

/// A variable is set but does not parse.
#[derive(Debug, thiserror::Error)]
#[error("environment variable {name}={value:?} is invalid: {message}")]
pub struct SettingsError {
    /// The variable's name.
    pub name: String,
    /// Its value.
    pub value: String,
    /// Why it does not parse.
    pub message: String,
}

/// The value of `name`, parsed, or `default` when unset or empty.
pub fn env_or<T>(name: &str, default: T) -> Result<T, SettingsError>
where
    T: FromStr,
    T::Err: Display,
{
    match std::env::var(name) {
        Ok(value) if !value.trim().is_empty() => {
            value.trim().parse().map_err(|e: T::Err| SettingsError {
                name: name.into(),
                value,
                message: e.to_string(),
            })
        }
        _ => Ok(default),
    }
}

/// The value of `name` as a string, or `default`.
pub fn env_string(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// The URL in `name` (or `default`), without its trailing `/`; an error unless it is an absolute
/// `http://` or `https://` URL.
pub fn env_http_url(name: &str, default: &str) -> Result<String, SettingsError> {
    let value = env_string(name, default);
    let error = |message: String| SettingsError {
        name: name.into(),
        value: value.clone(),
        message,
    };
    let url = reqwest::Url::parse(&value).map_err(|e| error(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(error(format!(
            "expected an http:// or https:// URL, not {:?}",
            url.scheme()
        )));
    }
    Ok(value.trim_end_matches('/').to_owned())
}

/// A boolean flag: `on/off`, `true/false`, `1/0`, `yes/no`; `default` when unset.
pub fn env_flag(name: &str, default: bool) -> Result<bool, SettingsError> {
    match std::env::var(name) {
        Ok(value) if !value.trim().is_empty() => match value.trim().to_ascii_lowercase().as_str() {
            "on" | "true" | "1" | "yes" => Ok(true),
            "off" | "false" | "0" | "no" => Ok(false),
            _ => Err(SettingsError {
                name: name.into(),
                value,
                message: "expected on/off, true/false, 1/0 or yes/no".into(),
            }),
        },
        _ => Ok(default),
    }
}

/// The settings every RM (the banks, the stock service) reads from its environment, declared
/// and read here once; each RM's `Settings` embeds them as `common` next to its own fields
/// (role, seed data) and hands them to the shared start-up through
/// [`crate::startup::ServerSettings::common`].
#[derive(Debug, Clone)]
pub struct RmCommonSettings {
    /// Interface to listen on. Env `HOST`, default `127.0.0.1`.
    pub host: String,
    /// Port; 0 picks a free one (tests). Env `PORT`, default the RM's own (8081 `trans-out`,
    /// 8082 `trans-in`, 8083 `stock`).
    pub port: u16,
    /// Env `DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/<the RM's database>`
    /// (`trans_out`, `trans_in`, `stock`).
    pub database_url: String,
    /// Connections in the pool. Env `DB_POOL_SIZE`, default 10.
    pub db_pool_size: u32,
    /// Largest accepted request body, bytes. Env `JSON_LIMIT`, default 65536.
    pub json_limit: usize,
    /// Whether a branch body may carry a `fault` (demo fault injection, [`crate::fault`]). Env
    /// `FAULT_INJECTION` (on|off), default on. When off, a body with a fault is refused with 400.
    pub fault_injection: bool,
    /// Whether the bank serves the benchmark's non-TCC floor (`POST /api/BaselineTransOut|In`,
    /// one plain local transaction, no barrier: unsafe by design, see `bank::baseline`). Env
    /// `BASELINE_ENDPOINTS` (on|off), default off: only `scripts/bench.sh` turns it on.
    pub baseline_endpoints: bool,
    /// The secret shared with the coordinator, which signs every Confirm and Cancel call with it,
    /// and with the AP, which makes each gid's token with it ([`tcc::signing`]). With it set, a
    /// Confirm/Cancel carrying neither a valid signature nor its gid's token (header
    /// `X-Tcc-Gid-Token`) is refused with 401 and nothing is done, unless it carries no such
    /// header at all and the coordinator reports it due
    /// ([`crate::coordinator_check::settle_verdict`], with `TRY_VERIFICATION=coordinator`); a
    /// Try carrying a token must carry its gid's (401 `bad_gid_token`), one without a token is
    /// checked with the coordinator ([`RmCommonSettings::try_verification`]). Env `BRANCH_SIGNING_SECRET` (read by
    /// [`SigningSecret::from_env`]); unset or empty: unsigned Confirm/Cancel calls accepted, with
    /// a warning at start, and every Try checked with the coordinator (demo mode). Its `Debug`
    /// does not print it.
    pub branch_signing_secret: Option<SigningSecret>,
    /// The coordinator this RM trusts: a Try without a gid token is accepted only when this
    /// coordinator's `query` reports the gid `prepared` with the branch registered, a Confirm or
    /// Cancel with neither signature nor token only when it reports the op due
    /// ([`crate::coordinator_check`]), and the `reconcile` subcommand asks it about tentative
    /// rows. Env `DTM_URL` (its `/api/dtmsvr` base), default `http://127.0.0.1:36789/api/dtmsvr`.
    pub dtm_url: String,
    /// How a branch call without a gid token (and, for Confirm/Cancel, without a signature) is
    /// checked ([`TryVerification`]). Env `TRY_VERIFICATION`:
    /// * `coordinator` (default): with the coordinator at `DTM_URL`, one query per such call (a
    ///   Try must be `prepared` with its branch registered, a Confirm/Cancel due);
    /// * `token`: refused without asking anyone (a Try `401 missing_gid_token`, a Confirm/Cancel
    ///   `401 missing_signature`), for deployments whose APs all send the gid token; needs
    ///   `BRANCH_SIGNING_SECRET` (an error at start otherwise);
    /// * `off`: a Try accepted unchecked, a Confirm/Cancel refused as with `token`; for
    ///   benchmarks of the RMs alone: anyone who reaches the RM can then freeze funds under a gid
    ///   no TM knows.
    pub try_verification: TryVerification,
    /// How long the sub-transaction barrier rows of a settled global transaction are kept
    /// (whole seconds; the background job deletes them once the gid's newest row is older and
    /// nothing of the gid is still tentative, see [`crate::retention`]). Long, so a hanging Try
    /// stays harmless. Env `BARRIER_RETENTION_SECONDS`, default 604800 (7 days); 0 disables the
    /// job.
    pub barrier_retention: Duration,
    /// Most gids one retention `DELETE` handles. Env `RETENTION_BATCH`, default 1000.
    pub retention_batch: u32,
}

impl RmCommonSettings {
    /// The defaults, without reading the environment (tests start from these): listen on
    /// `127.0.0.1:<port>`, database `<database>` on the local Postgres as user `postgres`.
    /// `port` and `database` are the RM's own (8081 and `trans_out` for `trans-out`, ...).
    pub fn defaults(port: u16, database: &str) -> RmCommonSettings {
        RmCommonSettings {
            host: "127.0.0.1".to_owned(),
            port,
            database_url: format!("postgres://postgres@127.0.0.1:5432/{database}"),
            db_pool_size: 10,
            json_limit: 65536,
            fault_injection: true,
            baseline_endpoints: false,
            branch_signing_secret: None,
            dtm_url: DEFAULT_DTM_URL.to_owned(),
            try_verification: TryVerification::Coordinator,
            barrier_retention: BarrierRetention::DEFAULT_RETENTION,
            retention_batch: BarrierRetention::DEFAULT_BATCH,
        }
    }

    /// [`RmCommonSettings::defaults`]`(port, database)` overridden by the environment. Errors
    /// name the variable that does not parse, or `TRY_VERIFICATION` when it is `token` without a
    /// `BRANCH_SIGNING_SECRET` (no token could be checked: every Try would be refused).
    pub fn from_env(port: u16, database: &str) -> Result<RmCommonSettings, SettingsError> {
        let d = RmCommonSettings::defaults(port, database);
        let settings = RmCommonSettings {
            host: env_string("HOST", &d.host),
            port: env_or("PORT", d.port)?,
            database_url: env_string("DATABASE_URL", &d.database_url),
            db_pool_size: env_or("DB_POOL_SIZE", d.db_pool_size)?,
            json_limit: env_or("JSON_LIMIT", d.json_limit)?,
            fault_injection: env_flag("FAULT_INJECTION", d.fault_injection)?,
            baseline_endpoints: env_flag("BASELINE_ENDPOINTS", d.baseline_endpoints)?,
            branch_signing_secret: SigningSecret::from_env(),
            dtm_url: env_http_url("DTM_URL", &d.dtm_url)?,
            try_verification: env_or("TRY_VERIFICATION", d.try_verification)?,
            barrier_retention: Duration::from_secs(env_or(
                "BARRIER_RETENTION_SECONDS",
                d.barrier_retention.as_secs(),
            )?),
            retention_batch: env_or("RETENTION_BATCH", d.retention_batch)?,
        };
        if settings.try_verification == TryVerification::Token
            && settings.branch_signing_secret.is_none()
        {
            return Err(SettingsError {
                name: "TRY_VERIFICATION".into(),
                value: settings.try_verification.to_string(),
                message: "token needs BRANCH_SIGNING_SECRET: without it no gid token can be \
                          checked, and every Try would be refused"
                    .into(),
            });
        }
        Ok(settings)
    }
}
