//! Building and running the HTTP server.

use std::net::TcpListener;

use actix_web::dev::{Server, ServerHandle};
use actix_web::{web, App, HttpServer};
use service_kit::http::HealthCheck;
use service_kit::rate_limit::ClientLimiter;
use service_kit::startup::configure_common;

use crate::configuration::Settings;
use crate::routes;
use crate::state::AppState;

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
    ///
    /// Errors: `HOST:PORT` cannot be bound (the message names it), or the HTTP server or client
    /// cannot be set up.
    pub async fn build(settings: Settings) -> std::io::Result<Application> {
        let address = format!("{}:{}", settings.host, settings.port);
        let listener = TcpListener::bind(&address).map_err(|e| {
            std::io::Error::new(e.kind(), format!("cannot listen on {address}: {e}"))
        })?;
        let bound = listener.local_addr()?;
        let port = bound.port();
        // Only now is the port known (PORT=0), so only now can APP_URL default to it.
        let settings = settings.resolve_app_url(bound);
        log::info!(
            "app (AP) listening on http://{}:{port}, coordinator {}, own API base (APP_URL) {}; \
             fire endpoints' rate limit: {}",
            settings.host,
            settings.dtm_url,
            settings.app_url.as_deref().unwrap_or_default(),
            settings.fire_rate_limit
        );
        let server = serve(listener, &settings)?;
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

/// The actix server on `listener`, for `settings` whose `APP_URL` is decided: the fire
/// endpoints (limited per client address by `settings.fire_rate_limit`,
/// [`service_kit::rate_limit`]), the nested branch, `/api/ping`, `/api/health`, `/api/metrics`,
/// the OpenAPI description and Swagger UI, JSON 404s.
fn serve(listener: TcpListener, settings: &Settings) -> std::io::Result<Server> {
    let state = web::Data::new(AppState::new(settings)?);
    let json_limit = settings.json_limit;
    // Created here, outside the per-worker factory, so that all workers share one quota per
    // client address.
    let fire_limiter = web::Data::new(ClientLimiter::new(settings.fire_rate_limit));
    let api = service_kit::openapi::describe(
        "app",
        "The AP of the TCC sample: each fire endpoint starts one TCC global transaction over the \
         RMs through the coordinator and answers with its outcome.",
        [crate::openapi::openapi(settings.fault_injection)],
    );
    let health = HealthCheck {
        service: "app",
        pool: None,
        migrations: &[],
    };
    let server = HttpServer::new(move || {
        let api = api.clone();
        App::new()
            .app_data(state.clone())
            .app_data(fire_limiter.clone())
            // Extractors answer malformed input with 4xx JSON; ping and health.
            .configure(|cfg| configure_common(cfg, json_limit, health.clone()))
            .configure(|cfg| routes::configure(cfg, &state.settings))
            .configure(|cfg| service_kit::openapi::configure_docs(cfg, api))
            .default_service(web::to(routes::not_found))
    })
    .listen(listener)?
    .run();
    Ok(server)
}
