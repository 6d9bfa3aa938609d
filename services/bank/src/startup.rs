//! [`Application`]: the bank's seed data and routes plugged into the start-up every RM shares
//! ([`service_kit::startup`]: pool, migrations and seeding off the runtime, bind, common app
//! data, health, JSON 404).
//!
//! `startup::run(listener, pool, settings)` (the shared [`service_kit::startup::run`],
//! re-exported) serves on a listener bound elsewhere.

use actix_web::web;
use diesel::PgConnection;
use service_kit::startup::{RmApplication, RmSettings, ServerSettings};

pub use service_kit::startup::{run, StartupError};

use crate::configuration::Settings;
use crate::{ledger, routes, ALL_MIGRATIONS};

impl RmSettings for Settings {
    fn server(&self) -> ServerSettings<'_> {
        ServerSettings {
            common: &self.common,
            service: self.role.name(),
            migrations: ALL_MIGRATIONS,
            // A gid with a tentative hold row still awaits its Confirm or Cancel: keep its
            // barrier rows whatever their age.
            tentative_table: "holds",
            tentative_sql: ledger::TENTATIVE_HOLDS_SQL,
        }
    }

    fn seed(&self, conn: &mut PgConnection) -> Result<(), StartupError> {
        let created = ledger::seed_accounts(conn, self.seed_accounts, self.seed_balance).map_err(
            |source| StartupError::Seed {
                data: "accounts",
                source,
            },
        )?;
        if created > 0 {
            log::info!(
                "{}: seeded accounts 1..={created} with balance {}",
                self.role,
                self.seed_balance
            );
        }
        Ok(())
    }

    fn routes(&self, cfg: &mut web::ServiceConfig) {
        routes::configure(cfg, self);
    }

    fn openapi(&self) -> utoipa::openapi::OpenApi {
        routes::openapi(self.role)
    }
}

/// A bank ready to serve: database migrated and seeded, socket bound.
///
/// `Application::build(settings)` builds the pool, runs the migrations (barrier, fault counters,
/// the bank's own), seeds the accounts if the table is empty, binds `host:port` (port 0 picks a
/// free one); then `port()`, `handle()` (tests stop servers with it), `run_until_stopped()` (serves, and deletes old
/// barrier rows of settled gids in the background: [`service_kit::retention`]).
pub type Application = RmApplication<Settings>;
