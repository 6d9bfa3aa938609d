//! The AP's settings, read from environment variables at start (names shared with `scripts/` and
//! `docker-compose.yml`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use service_kit::coordinator_check::DEFAULT_DTM_URL;
use service_kit::rate_limit::RateLimit;
use service_kit::settings::{env_flag, env_http_url, env_or, env_string, SettingsError};
use tcc::signing::SigningSecret;

/// Everything the AP needs to run. It has no database: its only state is the coordinator's.
///
/// [`Settings::default`] holds the documented defaults (the local ports of `scripts/up.sh`), so a
/// test can override only what it needs: `Settings { port: 0, ..Settings::default() }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `HOST`: the address to bind, default `127.0.0.1`.
    pub host: String,
    /// `PORT`: default 8080; 0 picks a free port (tests).
    pub port: u16,
    /// `DTM_URL`: the coordinator's API base, default `http://127.0.0.1:36789/api/dtmsvr`.
    /// Any DTM-compatible server works.
    pub dtm_url: String,
    /// `TRANS_OUT_URL`: bank A's API base, default `http://127.0.0.1:8081/api`; the branch
    /// endpoints are `{TRANS_OUT_URL}/TransOutTry|TransOutConfirm|TransOutCancel`.
    pub trans_out_url: String,
    /// `TRANS_IN_URL`: bank B's API base, default `http://127.0.0.1:8082/api`
    /// (`TransInTry|TransInConfirm|TransInCancel`).
    pub trans_in_url: String,
    /// `STOCK_URL`: the stock service's API base, default `http://127.0.0.1:8083/api`
    /// (`StockTry|StockConfirm|StockCancel`, and `GET products/{id}` for prices).
    pub stock_url: String,
    /// `APP_URL`: the AP's own API base as the coordinator reaches it, e.g.
    /// `http://app:8080/api` in docker-compose: where `fireTccNested` registers and calls its
    /// nested branch (`{APP_URL}/TransInNestedTry|Confirm|Cancel`). `None` (unset or empty):
    /// derived from the address bound, after binding ([`Settings::resolve_app_url`]), since with
    /// `PORT=0` (tests) the port is known only then.
    pub app_url: Option<String>,
    /// `JSON_LIMIT`: the largest request body accepted, in bytes, default 65536.
    pub json_limit: usize,
    /// `FAULT_INJECTION`: `on` (default) lets the fire endpoints take fault parameters
    /// (`trans_in_confirm=error:3`, ...) and `crash_after_try`; `off` answers them with 400.
    pub fault_injection: bool,
    /// `BASELINE_ENDPOINTS`: `on` serves `GET|POST /api/fireBaseline`, the benchmark's non-TCC
    /// floor (unsafe by design: a failed credit after the debit loses the money); `off`
    /// (default) does not. Only `scripts/bench.sh` turns it on.
    pub baseline_endpoints: bool,
    /// `BRANCH_SIGNING_SECRET`: the secret the RMs and the coordinator share. With it, every
    /// global transaction the AP starts carries its gid token ([`tcc::signing::gid_token`]) in
    /// its `branch_headers`, which authorizes the AP's Try calls and the TM's Confirm and Cancel
    /// calls at the RMs ([`tcc::client::TccClient::with_gid_tokens`]). Unset or empty: no token,
    /// and each RM checks each Try with its coordinator instead. Its `Debug` does not print it.
    pub branch_signing_secret: Option<SigningSecret>,
    /// The quota of fire requests per client address ([`service_kit::rate_limit`]), on
    /// `GET|POST /api/fireTcc`, `/api/fireTccRollback`, `/api/firePurchase` and
    /// `/api/fireTccNested`: `FIRE_RATE_LIMIT_PER_SECOND` sustained and `FIRE_RATE_LIMIT_BURST`,
    /// default [`DEFAULT_FIRE_RATE_LIMIT`]; 0 in either disables it. Over it a fire request is
    /// answered `429 {"error": "rate_limited", ...}` with `Retry-After`, before anything starts.
    pub fire_rate_limit: RateLimit,
}

/// Default of `FIRE_RATE_LIMIT_PER_SECOND` (1000) and `FIRE_RATE_LIMIT_BURST` (2000), per
/// client address: well above what the whole system manages (`docs/BENCHMARKS.md`), so one
/// address running a load test is never refused, while a flood from one address is cut to that
/// rate with nothing started. Behind a proxy every client shares the proxy's address: raise it
/// there, or disable it (0) and limit at the proxy.
pub const DEFAULT_FIRE_RATE_LIMIT: RateLimit = RateLimit {
    per_second: 1000,
    burst: 2000,
};

/// What `APP_URL` defaults to with the default `HOST` and `PORT` (in general it is derived from
/// the bound address: see [`Settings::app_url`]).
pub const DEFAULT_APP_URL: &str = "http://127.0.0.1:8080/api";

impl Default for Settings {
    fn default() -> Self {
        Settings {
            host: "127.0.0.1".into(),
            port: 8080,
            dtm_url: DEFAULT_DTM_URL.into(),
            trans_out_url: "http://127.0.0.1:8081/api".into(),
            trans_in_url: "http://127.0.0.1:8082/api".into(),
            stock_url: "http://127.0.0.1:8083/api".into(),
            app_url: None,
            json_limit: 65_536,
            fault_injection: true,
            baseline_endpoints: false,
            branch_signing_secret: None,
            fire_rate_limit: DEFAULT_FIRE_RATE_LIMIT,
        }
    }
}

impl Settings {
    /// Reads `HOST`, `PORT`, `DTM_URL`, `TRANS_OUT_URL`, `TRANS_IN_URL`, `STOCK_URL`,
    /// `APP_URL`, `JSON_LIMIT`, `FAULT_INJECTION`, `BASELINE_ENDPOINTS`, `BRANCH_SIGNING_SECRET`,
    /// `FIRE_RATE_LIMIT_PER_SECOND` and `FIRE_RATE_LIMIT_BURST`, each with its default when unset
    /// or empty.
    ///
    /// Errors name the variable: a port or limit that is not a number, or a URL that is not an
    /// absolute `http(s)://` URL, stops the binary at start rather than at the first request.
    pub fn from_env() -> Result<Settings, SettingsError> {
        let d = Settings::default();
        Ok(Settings {
            host: env_string("HOST", &d.host),
            port: env_or("PORT", d.port)?,
            dtm_url: env_http_url("DTM_URL", &d.dtm_url)?,
            trans_out_url: env_http_url("TRANS_OUT_URL", &d.trans_out_url)?,
            trans_in_url: env_http_url("TRANS_IN_URL", &d.trans_in_url)?,
            stock_url: env_http_url("STOCK_URL", &d.stock_url)?,
            app_url: match env_string("APP_URL", "").as_str() {
                "" => None,
                _ => Some(env_http_url("APP_URL", "")?),
            },
            json_limit: env_or("JSON_LIMIT", d.json_limit)?,
            fault_injection: env_flag("FAULT_INJECTION", d.fault_injection)?,
            baseline_endpoints: env_flag("BASELINE_ENDPOINTS", d.baseline_endpoints)?,
            branch_signing_secret: SigningSecret::from_env(),
            fire_rate_limit: RateLimit {
                per_second: env_or("FIRE_RATE_LIMIT_PER_SECOND", d.fire_rate_limit.per_second)?,
                burst: env_or("FIRE_RATE_LIMIT_BURST", d.fire_rate_limit.burst)?,
            },
        })
    }

    /// These settings with [`Settings::app_url`] decided: kept when set, else derived from
    /// `bound`, the address the AP's listener actually bound (see [`default_app_url`]).
    pub fn resolve_app_url(self, bound: SocketAddr) -> Settings {
        let app_url = self.app_url.unwrap_or_else(|| default_app_url(bound));
        Settings {
            app_url: Some(app_url),
            ..self
        }
    }
}

/// The AP's API base when `APP_URL` is unset: `http://<ip>:<port>/api` for the bound address,
/// where an unspecified ip (`0.0.0.0`, `::`) becomes the loopback address of its family. Only
/// processes on the same host can use it; set `APP_URL` when the coordinator runs elsewhere.
pub fn default_app_url(bound: SocketAddr) -> String {
    let ip = match bound.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}/api", SocketAddr::new(ip, bound.port()))
}
