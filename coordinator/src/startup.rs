//! Building and running the coordinator: pool, migrations, lease recovery, HTTP server, worker,
//! retention job.

use std::net::TcpListener;

use actix_web::dev::{Server, ServerHandle};
use actix_web::{web, App, HttpServer};
use diesel_migrations::{embed_migrations, EmbeddedMigrations};
use service_kit::db::{
    build_pool, run_migrations, wait_for_database, DbPool, DbSetupError, DATABASE_WAIT,
};
use service_kit::http::HealthCheck;
use service_kit::startup::configure_common;
use tokio::sync::watch;

use crate::configuration::Settings;
use crate::engine::Engine;

/// The coordinator's schema (`trans_global`, `trans_branch_op`).
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");
static ALL_MIGRATIONS: [&EmbeddedMigrations; 1] = [&MIGRATIONS];

/// Starting failed: no database, a failed migration, or the port is taken.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// Pool or migrations.
    #[error(transparent)]
    Database(#[from] DbSetupError),
    /// Binding the listener, or a query at start.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A built coordinator, not yet running.
pub struct Application {
    port: u16,
    server: Server,
    engine: Engine,
    settings: Settings,
}

impl Application {
    /// Connects, migrates, releases the leases this replica's previous life held, binds
    /// `host:port` (port 0 picks a free one) and builds the server.
    pub async fn build(settings: Settings) -> Result<Application, StartupError> {
        wait_for_database(&settings.database_url, DATABASE_WAIT)?;
        let pool = build_pool(&settings.database_url, settings.db_pool_size)?;
        run_migrations(&pool, &ALL_MIGRATIONS)?;
        let listener = TcpListener::bind((settings.host.as_str(), settings.port))?;
        let port = listener.local_addr()?.port();
        let coordinator_id = settings.coordinator_id.clone().unwrap_or_else(|| {
            let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into());
            format!("{host}:{port}")
        });
        let released = {
            let id = coordinator_id.clone();
            service_kit::db::blocking(&pool, move |conn| {
                crate::store::release_own_leases(conn, &id)
            })
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?
            .map_err(|e| std::io::Error::other(e.to_string()))?
        };
        if released > 0 {
            log::info!("released {released} leases held by a previous run of {coordinator_id}");
        }
        if settings.branch_signing_secret.is_none() {
            log::warn!(
                "BRANCH_SIGNING_SECRET is not set: Confirm and Cancel calls go UNSIGNED (demo mode); \
                 RMs configured with a secret will refuse them with 401. Set the same \
                 BRANCH_SIGNING_SECRET on the coordinator and every RM outside a demo"
            );
        }
        let engine = Engine::new(pool.clone(), &settings, coordinator_id);
        let server = run(listener, pool, engine.clone(), settings.clone())?;
        Ok(Application {
            port,
            server,
            engine,
            settings,
        })
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A handle to stop the server (the worker stops with it).
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Runs the HTTP server, the second-phase worker and the retention job
    /// ([`crate::retention`]) until the server stops.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let (stop_worker, shutdown) = watch::channel(false);
        let worker = tokio::spawn(crate::worker::run(
            self.engine.clone(),
            self.settings.cron_interval,
            shutdown.clone(),
        ));
        // In this task, beside the server, so that dropping this future stops it too.
        let retention = crate::retention::run(
            self.engine.pool().clone(),
            self.settings.retention,
            self.settings.gid_tombstones,
            self.settings.retention_batch,
            crate::retention::interval(self.settings.cron_interval),
            shutdown,
        );
        let server = async {
            let result = self.server.await;
            let _ = stop_worker.send(true);
            result
        };
        let (result, ()) = tokio::join!(server, retention);
        let _ = worker.await;
        result
    }
}

/// The HTTP server over an already bound `listener`: the `/api/dtmsvr` API plus what every binary
/// with JSON endpoints registers ([`configure_common`]: extractor configs, health routes).
pub fn run(
    listener: TcpListener,
    pool: DbPool,
    engine: Engine,
    settings: Settings,
) -> std::io::Result<Server> {
    let engine = web::Data::new(engine);
    let defaults = web::Data::new(settings.defaults);
    let branch_hosts = web::Data::new(settings.branch_hosts.clone());
    let json_limit = settings.json_limit;
    let admin = crate::admin::AdminAccess::from_settings(&settings);
    let health = HealthCheck {
        service: "coordinator",
        pool: Some(pool),
        migrations: &ALL_MIGRATIONS,
    };
    let api = service_kit::openapi::describe(
        "coordinator",
        "The TM: DTM's HTTP protocol for TCC global transactions (`/api/dtmsvr`), with a durable \
         second phase, the event log and diagrams, and the operators' admin API.",
        [
            <crate::api::DtmApi as utoipa::OpenApi>::openapi(),
            <crate::admin::AdminApi as utoipa::OpenApi>::openapi(),
        ],
    );
    let server = HttpServer::new(move || {
        let health = health.clone();
        let api = api.clone();
        App::new()
            .app_data(engine.clone())
            .app_data(defaults.clone())
            .app_data(branch_hosts.clone())
            .configure(|cfg| configure_common(cfg, json_limit, health))
            .configure(crate::api::configure)
            .configure(|cfg| crate::admin::configure(cfg, admin.clone()))
            .configure(|cfg| service_kit::openapi::configure_docs(cfg, api))
            // Unknown paths and methods answer the JSON 404 every binary uses, not an empty body.
            .default_service(web::to(service_kit::http::not_found))
    })
    .listen(listener)?
    .run();
    Ok(server)
}
