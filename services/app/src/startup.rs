//! Building and running the HTTP server.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::{web, App, HttpServer};
use service_kit::http::{configure_health, HealthCheck};
use service_kit::rate_limit::ClientLimiter;
use tcc::client::TccClient;

use crate::configuration::Settings;
use crate::metrics::AppMetrics;
use crate::prices::StockPrices;
use crate::routes;
use crate::scenario::Endpoints;

/// Timeout of calls that set none of their own (`newGid`, `prepare`, `registerBranch`, Try).
/// Longer than the longest injected delay (60 s, `service_kit::fault::MAX_DELAY_MS`), so that a
/// delayed Try shows the delay rather than the AP's timeout; `submit`/`abort` with `wait_result`
/// get their own, longer timeout from the TCC client.
const HTTP_TIMEOUT: Duration = Duration::from_secs(75);

/// The AP could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// `HOST:PORT` could not be bound (in use, or no such address).
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// `host:port` as configured.
        address: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The HTTP server or client could not be set up.
    #[error("cannot start the HTTP server: {0}")]
    Server(#[from] std::io::Error),
}

/// What every handler shares, built once at start (`web::Data<AppState>`).
#[derive(Debug, Clone)]
pub struct AppState {
    /// The coordinator client. Its `reqwest::Client` is the one shared by every outgoing call
    /// (coordinator, Try calls, price lookups), so connections are kept alive across requests.
    pub tcc: TccClient,
    /// Price lookups on the stock service.
    pub prices: StockPrices,
    /// The RMs' API bases, and the AP's own (`APP_URL`).
    pub endpoints: Arc<Endpoints>,
    /// `JSON_LIMIT`: the largest request body, bytes.
    pub json_limit: usize,
    /// `FAULT_INJECTION`: whether fault parameters are accepted.
    pub fault_injection: bool,
    /// This instance's metrics (its own registry: tests run several APs in one process).
    pub metrics: Arc<AppMetrics>,
    /// The HTTP client of every outgoing call (the one inside `tcc` and `prices` too), for
    /// calls that go through neither (the benchmark's `fireBaseline`).
    pub http: reqwest::Client,
    /// `BRANCH_SIGNING_SECRET`: with it, the nested branch's Try
    /// ([`crate::routes::nested::trans_in_nested_try`]) requires its gid's token.
    pub branch_signing_secret: Option<tcc::signing::SigningSecret>,
}

impl AppState {
    /// The state for `settings`, with one new HTTP client and new metrics. `settings.app_url` should have been
    /// decided ([`Settings::resolve_app_url`]); [`run`] does it.
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
            http: http.clone(),
            prices: StockPrices::new(http, &settings.stock_url),
            endpoints: Arc::new(Endpoints::from_settings(settings)),
            json_limit: settings.json_limit,
            fault_injection: settings.fault_injection,
            metrics: Arc::new(AppMetrics::new()),
            branch_signing_secret: settings.branch_signing_secret.clone(),
        })
    }
}

/// The running AP: bound, serving once awaited.
pub struct Application {
    port: u16,
    server: Server,
}

impl Application {
    /// Binds `settings.host:settings.port` (port 0 picks a free one), decides `APP_URL` when unset
    /// from the address bound ([`Settings::resolve_app_url`]) and prepares the server. The
    /// AP has no database, so there is nothing to migrate or seed, and nothing is contacted at
    /// start: the coordinator and RMs may come up later.
    pub async fn build(settings: Settings) -> Result<Application, StartupError> {
        let address = format!("{}:{}", settings.host, settings.port);
        let listener = TcpListener::bind(&address).map_err(|source| StartupError::Bind {
            address: address.clone(),
            source,
        })?;
        let bound = listener.local_addr()?;
        let port = bound.port();
        // Only now is the port known (PORT=0), so only now can APP_URL default to it.
        let settings = settings.resolve_app_url(bound);
        log::info!(
            "app (AP) listening on http://{}:{port}, coordinator {}, own API base (APP_URL) {}",
            settings.host,
            settings.dtm_url,
            settings.app_url.as_deref().unwrap_or_default()
        );
        let server = run(listener, settings)?;
        Ok(Application { port, server })
    }

    /// The port actually bound.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A handle to stop the server (tests).
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until stopped (Ctrl-C, SIGTERM, or [`Application::handle`]).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}

/// The actix server on `listener`: the fire endpoints (limited per client address by
/// `settings.fire_rate_limit`, [`service_kit::rate_limit`]), the nested branch, `/api/ping`,
/// `/api/health`, `/api/metrics`, the OpenAPI description and Swagger UI, JSON 404s. An unset
/// `APP_URL` is derived from `listener`'s address.
pub fn run(listener: TcpListener, settings: Settings) -> std::io::Result<Server> {
    let settings = settings.resolve_app_url(listener.local_addr()?);
    let state = web::Data::new(AppState::new(&settings)?);
    let json_limit = settings.json_limit;
    let baseline_endpoints = settings.baseline_endpoints;
    // Created here, outside the per-worker factory, so that all workers share one quota per
    // client address.
    let fire_limiter = web::Data::new(ClientLimiter::new(settings.fire_rate_limit));
    log::info!("fire endpoints' rate limit: {}", settings.fire_rate_limit);
    let api = service_kit::openapi::describe(
        "app",
        "The AP of the TCC sample: each fire endpoint starts one TCC global transaction over the \
         RMs through the coordinator and answers with its outcome.",
        [crate::openapi::openapi(settings.fault_injection)],
    );
    let server = HttpServer::new(move || {
        let api = api.clone();
        App::new()
            .app_data(state.clone())
            .app_data(fire_limiter.clone())
            // Extractors (the nested branch's JSON body) answer malformed input with 4xx JSON.
            .app_data(service_kit::http::json_config(json_limit))
            .app_data(service_kit::http::query_config())
            .configure(|cfg| {
                configure_health(
                    cfg,
                    HealthCheck {
                        service: "app",
                        pool: None,
                        migrations: &[],
                    },
                )
            })
            .configure(|cfg| routes::configure(cfg, baseline_endpoints))
            .configure(|cfg| service_kit::openapi::configure_docs(cfg, api))
            .default_service(web::to(routes::not_found))
    })
    .listen(listener)?
    .run();
    Ok(server)
}
