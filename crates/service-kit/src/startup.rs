//! How an RM (the banks, the stock service) starts, written once so that each RM only says what
//! is its own: its seed data and its routes.
//!
//! An RM implements [`RmSettings`] for its `Settings`; its `startup::Application` is then
//! [`RmApplication<Settings>`], built zero2prod-style:
//!
//! 1. [`RmApplication::build`] builds the pool, applies the migrations and seeds, all on a
//!    blocking thread (r2d2 and Diesel block, and tests build applications inside
//!    `#[tokio::test]`);
//! 2. binds `host:port` (port 0 picks a free one, which tests use);
//! 3. [`run`] serves on the bound listener: the common app data ([`configure_common`]: JSON,
//!    query and path configs that answer malformed input with a JSON 4xx, `GET /api/ping`,
//!    `GET /api/health`), `web::Data<DbPool>` and `web::Data<Settings>` for the handlers, the
//!    RM's metrics (`web::Data<RmMetrics>`, a registry of this instance's own, served at
//!    `GET /api/metrics`: [`crate::metrics`]), who may call the branch endpoints
//!    (`web::Data<BranchCallers>`: [`crate::callers`]), the calls held by a `pause` fault and
//!    their routes ([`crate::pause`]), the RM's routes, and a JSON 404
//!    ([`crate::http::not_found`]) for any other path;
//! 4. [`RmApplication::run_until_stopped`] serves, and runs the barrier retention job
//!    ([`crate::retention`]) beside the server until the server stops.

use std::net::TcpListener;

use actix_web::dev::{Server, ServerHandle};
use actix_web::{web, App, HttpServer};
use diesel::PgConnection;
use diesel_migrations::EmbeddedMigrations;
use tokio::sync::watch;

use crate::callers::BranchCallers;
use crate::db::{
    build_pool, run_migrations, wait_for_database, DbPool, DbSetupError, DATABASE_WAIT,
};
use crate::http::HealthCheck;
use crate::http::{configure_health, json_config, not_found, path_config, query_config};
use crate::metrics::{self, RmMetrics};
use crate::pause::PauseBoard;
use crate::retention::{self, BarrierRetention};
use crate::settings::RmCommonSettings;

/// Why an RM could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// No database connection, or a migration failed.
    #[error(transparent)]
    Database(#[from] DbSetupError),
    /// Creating the seed data failed.
    #[error("seeding {data} failed: {source}")]
    Seed {
        /// What was being created: `accounts`, `products`.
        data: &'static str,
        /// The query's error.
        source: diesel::result::Error,
    },
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// `host:port`.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The blocking start-up task panicked.
    #[error("start-up task failed: {0}")]
    Task(String),
}

/// What the shared start-up needs from an RM, borrowed from its own `Settings` by
/// [`RmSettings::server`]: the settings every RM reads from its environment, and the RM's
/// constants.
#[derive(Clone, Copy)]
pub struct ServerSettings<'a> {
    /// The settings every RM reads from its environment (`HOST`, `PORT`, `DATABASE_URL`,
    /// `DB_POOL_SIZE`, `JSON_LIMIT`, `FAULT_INJECTION`, `BRANCH_SIGNING_SECRET`, `DTM_URL`,
    /// `TRY_VERIFICATION`, `BARRIER_RETENTION_SECONDS`, `RETENTION_BATCH`, ...), embedded in the
    /// RM's `Settings`.
    pub common: &'a RmCommonSettings,
    /// The binary's name (`trans-out`, `stock`): in logs and in the health answers.
    pub service: &'static str,
    /// Every migration set the RM applies at start, in order (the barrier table, the fault
    /// counters, its own tables); `/api/health` reports ready only when all are applied.
    pub migrations: &'static [&'static EmbeddedMigrations],
    /// The RM's table of what Trys reserved (`holds`, `reservations`), which the barrier
    /// retention job consults: a gid with a tentative row there is never cleaned. A plain SQL
    /// identifier, see [`BarrierRetention::tentative_table`].
    pub tentative_table: &'static str,
    /// The RM's query for the tentative-reservation gauges of `GET /api/metrics`: one row with
    /// `tentative` (`bigint`) and `oldest_age_seconds` (`double precision`, NULL when none), see
    /// [`crate::metrics::RmMetrics::new`]. A constant of the RM (it knows its table).
    pub tentative_sql: &'static str,
}

impl ServerSettings<'_> {
    /// The barrier retention job: the RM's [`ServerSettings::tentative_table`], the retention
    /// (`BARRIER_RETENTION_SECONDS`, seconds; 0 disables) and the batch size
    /// (`RETENTION_BATCH`) of [`ServerSettings::common`].
    pub fn retention(&self) -> BarrierRetention {
        BarrierRetention {
            tentative_table: self.tentative_table,
            retention: self.common.barrier_retention,
            batch: self.common.retention_batch,
        }
    }
}

/// What one RM adds to the shared start-up, implemented by its `Settings` (which the handlers
/// also get as `web::Data<Settings>`).
pub trait RmSettings: Clone + Send + Sync + 'static {
    /// Where to listen, which database, the body limit, the migrations.
    fn server(&self) -> ServerSettings<'_>;

    /// Creates the seed data when its table is empty (never touching existing rows) and logs
    /// what it created. Runs once at start, after the migrations, on a blocking thread. Errors
    /// are [`StartupError::Seed`].
    fn seed(&self, conn: &mut PgConnection) -> Result<(), StartupError>;

    /// Registers the RM's own routes: its branch endpoints and its view.
    fn routes(&self, cfg: &mut web::ServiceConfig);

    /// The OpenAPI description of [`RmSettings::routes`], built from the same endpoint tables
    /// ([`crate::branch::openapi`]). [`run`] adds the common routes' and serves it at
    /// `GET /api/openapi.json`, with Swagger UI at `/api/docs/` ([`crate::openapi`]).
    fn openapi(&self) -> utoipa::openapi::OpenApi;
}

/// An RM ready to serve: database migrated and seeded, socket bound. Each RM names it
/// `startup::Application` (`pub type Application = RmApplication<Settings>`).
pub struct RmApplication<S> {
    port: u16,
    server: Server,
    service: &'static str,
    pool: DbPool,
    retention: BarrierRetention,
    settings: std::marker::PhantomData<fn() -> S>,
}

impl<S: RmSettings> RmApplication<S> {
    /// Builds the pool, applies the migrations and seeds ([`RmSettings::seed`]) off the async
    /// runtime, then binds `host:port` (port 0 picks a free one) and builds the server ([`run`]).
    ///
    /// Panics if [`BarrierRetention::tentative_table`] is not a plain SQL identifier: it is a
    /// constant of the RM, so that is a programming error.
    pub async fn build(settings: S) -> Result<RmApplication<S>, StartupError> {
        let retention = settings.server().retention();
        assert!(
            retention::is_plain_identifier(retention.tentative_table),
            "the barrier retention's table {:?} must be a plain SQL identifier",
            retention.tentative_table
        );
        let db_settings = settings.clone();
        // r2d2 and the migrations block: keep them off the async runtime.
        let pool = tokio::task::spawn_blocking(move || prepare_database(&db_settings))
            .await
            .map_err(|e| StartupError::Task(e.to_string()))??;
        let server = settings.server();
        log::info!(
            "{}: a Try without a gid token (and, with a secret, a Confirm/Cancel without a \
             signature or token) is checked with the coordinator: {}",
            server.service,
            match server.common.try_verification {
                crate::coordinator_check::TryVerification::Coordinator => &server.common.dtm_url,
                crate::coordinator_check::TryVerification::Token =>
                    "no, it is refused (TRY_VERIFICATION=token)",
                crate::coordinator_check::TryVerification::Off =>
                    "no (TRY_VERIFICATION=off: anyone who reaches this port can freeze funds)",
            }
        );
        if server.common.branch_signing_secret.is_none() {
            log::warn!(
                "{}: BRANCH_SIGNING_SECRET is not set: Confirm and Cancel accept UNSIGNED calls \
                 from anyone who reaches this port (demo mode). Set the coordinator's \
                 BRANCH_SIGNING_SECRET here outside a demo",
                server.service
            );
        }
        let addr = format!("{}:{}", server.common.host, server.common.port);
        let bind_error = |source| StartupError::Bind {
            addr: addr.clone(),
            source,
        };
        let listener = TcpListener::bind(&addr).map_err(bind_error)?;
        let port = listener.local_addr().map_err(bind_error)?.port();
        log::info!(
            "{} listening on http://{}:{port}",
            server.service,
            server.common.host
        );
        let service = server.service;
        let server = run(listener, pool.clone(), settings.clone()).map_err(bind_error)?;
        Ok(RmApplication {
            port,
            server,
            service,
            pool,
            retention,
            settings: std::marker::PhantomData,
        })
    }

    /// The port actually bound.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A handle to stop the server (tests use it).
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until the server is stopped, with the barrier retention job ([`retention::run`])
    /// running beside it and stopped with it. Both run in the caller's task, so dropping (or
    /// aborting) this future stops the job too.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let (stop, shutdown) = watch::channel(false);
        let job = retention::run(self.service, self.pool, self.retention, shutdown);
        let server = async move {
            let result = self.server.await;
            let _ = stop.send(true);
            result
        };
        let (result, ()) = tokio::join!(server, job);
        result
    }
}

/// Pool, migrations, seed data: the blocking part of [`RmApplication::build`].
fn prepare_database<S: RmSettings>(settings: &S) -> Result<DbPool, StartupError> {
    let server = settings.server();
    wait_for_database(&server.common.database_url, DATABASE_WAIT)?;
    let pool = build_pool(&server.common.database_url, server.common.db_pool_size)?;
    run_migrations(&pool, server.migrations)?;
    let mut conn = pool.get().map_err(DbSetupError::from)?;
    settings.seed(&mut conn)?;
    Ok(pool)
}

/// Registers what every binary with JSON endpoints shares: the extractor configs that answer
/// malformed JSON (`json_limit` bytes at most), query strings and path parameters with the JSON
/// error body, and `GET /api/ping` / `GET /api/health` checking `health`.
pub fn configure_common(cfg: &mut web::ServiceConfig, json_limit: usize, health: HealthCheck) {
    cfg.app_data(json_config(json_limit))
        .app_data(query_config())
        .app_data(path_config());
    configure_health(cfg, health);
}

/// An RM's HTTP server on `listener`: [`configure_common`], `web::Data<DbPool>` and
/// `web::Data<S>`, new [`RmMetrics`] (as `web::Data<RmMetrics>`, which the branch endpoints
/// count into) and `GET /api/metrics` serving them ([`crate::metrics::rm_metrics`]), the RM's
/// routes ([`RmSettings::routes`]), a JSON 404 for any other path. Errs only if actix cannot listen on
/// `listener`.
pub fn run<S: RmSettings>(
    listener: TcpListener,
    pool: DbPool,
    settings: S,
) -> std::io::Result<Server> {
    let server = settings.server();
    let json_limit = server.common.json_limit;
    let health = HealthCheck {
        service: server.service,
        pool: Some(pool.clone()),
        migrations: server.migrations,
    };
    let metrics = web::Data::new(RmMetrics::new(server.tentative_sql));
    let callers = web::Data::new(BranchCallers::new(
        server.common.branch_signing_secret.clone(),
        server.common.try_verification,
        &server.common.dtm_url,
    ));
    let api = crate::openapi::describe(
        server.service,
        "A TCC resource manager (RM): Try/Confirm/Cancel branch endpoints behind the \
         sub-transaction barrier, called by the AP (Try) and the TM (Confirm, Cancel).",
        [
            <crate::openapi::RmMetricsApi as utoipa::OpenApi>::openapi(),
            <crate::pause::PauseApi as utoipa::OpenApi>::openapi(),
            settings.openapi(),
        ],
    );
    let pool = web::Data::new(pool);
    let settings = web::Data::new(settings);
    let pauses = web::Data::new(PauseBoard::default());
    let server = HttpServer::new(move || {
        let health = health.clone();
        let routes = settings.clone();
        let api = api.clone();
        App::new()
            .app_data(pool.clone())
            .app_data(settings.clone())
            .app_data(metrics.clone())
            .app_data(callers.clone())
            .configure(|cfg| configure_common(cfg, json_limit, health))
            .route(metrics::PATH, web::get().to(metrics::rm_metrics))
            .configure(|cfg| crate::pause::configure(cfg, pauses.clone()))
            .configure(|cfg| routes.routes(cfg))
            .configure(|cfg| crate::openapi::configure_docs(cfg, api))
            .default_service(web::to(not_found))
    })
    .listen(listener)?
    .run();
    Ok(server)
}
