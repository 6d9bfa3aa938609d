//! [`AppState`]: what every handler shares, built once at start.

use std::sync::Arc;
use std::time::Duration;

use tcc::client::TccClient;

use crate::configuration::{Settings, DEFAULT_APP_URL};
use crate::metrics::AppMetrics;

/// Timeout of calls that set none of their own (`newGid`, `prepare`, `registerBranch`, Try).
/// Longer than the longest injected delay (60 s, `service_kit::fault::MAX_DELAY_MS`), so that a
/// delayed Try shows the delay rather than the AP's timeout; `submit`/`abort` with `wait_result`
/// get their own, longer timeout from the TCC client.
const HTTP_TIMEOUT: Duration = Duration::from_secs(75);

/// What every handler shares (`web::Data<AppState>`).
#[derive(Debug, Clone)]
pub struct AppState {
    /// The coordinator client. Its `reqwest::Client` is the one shared by every outgoing call
    /// (coordinator, Try calls, price lookups), so connections are kept alive across requests.
    pub tcc: TccClient,
    /// The same HTTP client, for calls that do not go through `tcc` (price lookups, the
    /// benchmark's `fireBaseline`).
    pub http: reqwest::Client,
    /// The branch URLs of the RMs and of the AP itself.
    pub urls: Arc<Urls>,
    /// This instance's metrics (its own registry: tests run several APs in one process).
    pub metrics: Arc<AppMetrics>,
    /// The settings it was built from (`JSON_LIMIT`, `FAULT_INJECTION`, ...).
    pub settings: Settings,
}

impl AppState {
    /// The state for `settings`, with one new HTTP client and new metrics. `settings.app_url`
    /// should have been decided ([`Settings::resolve_app_url`]).
    pub fn new(settings: &Settings) -> std::io::Result<AppState> {
        // No redirects: a redirected Try or coordinator call has not run where it was sent
        // (only exactly 200 is a success).
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .timeout(HTTP_TIMEOUT)
            .pool_idle_timeout(tcc::client::POOL_IDLE_TIMEOUT)
            .build()
            .map_err(std::io::Error::other)?;
        Ok(AppState {
            tcc: TccClient::with_http_client(http.clone(), &settings.dtm_url)
                .with_gid_tokens(settings.branch_signing_secret.clone()),
            http,
            urls: Arc::new(Urls::from_settings(settings)),
            metrics: Arc::new(AppMetrics::default()),
            settings: settings.clone(),
        })
    }
}

/// The API bases (`.../api`, no trailing `/`) of the RMs and of the AP itself, and so the URL
/// of every branch endpoint: `urls.trans_out("TransOutTry")` is `{TRANS_OUT_URL}/TransOutTry`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Urls {
    trans_out: String,
    trans_in: String,
    stock: String,
    app: String,
}

impl Urls {
    /// The bases named by `settings`; an undecided `app_url` is taken as [`DEFAULT_APP_URL`].
    pub fn from_settings(settings: &Settings) -> Urls {
        let base = |url: &str| url.trim_end_matches('/').to_owned();
        Urls {
            trans_out: base(&settings.trans_out_url),
            trans_in: base(&settings.trans_in_url),
            stock: base(&settings.stock_url),
            app: base(settings.app_url.as_deref().unwrap_or(DEFAULT_APP_URL)),
        }
    }

    /// `{TRANS_OUT_URL}/{endpoint}`: bank A.
    pub fn trans_out(&self, endpoint: &str) -> String {
        format!("{}/{endpoint}", self.trans_out)
    }

    /// `{TRANS_IN_URL}/{endpoint}`: bank B.
    pub fn trans_in(&self, endpoint: &str) -> String {
        format!("{}/{endpoint}", self.trans_in)
    }

    /// `{STOCK_URL}/{endpoint}`: the stock service.
    pub fn stock(&self, endpoint: &str) -> String {
        format!("{}/{endpoint}", self.stock)
    }

    /// `{APP_URL}/{endpoint}`: this AP, where its nested branch is served.
    pub fn app(&self, endpoint: &str) -> String {
        format!("{}/{endpoint}", self.app)
    }
}
