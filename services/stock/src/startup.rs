//! [`Application`]: the stock service's seed data and routes plugged into the start-up every RM
//! shares ([`service_kit::startup`]: pool, migrations and seeding off the runtime, bind, common
//! app data, health, JSON 404).
//!
//! `startup::run(listener, pool, settings)` (the shared [`service_kit::startup::run`],
//! re-exported) serves on a listener bound elsewhere.

use actix_web::web;
use diesel::PgConnection;
use service_kit::startup::{RmApplication, RmSettings, ServerSettings};

pub use service_kit::startup::{run, StartupError};

use crate::configuration::Settings;
use crate::{inventory, routes, ALL_MIGRATIONS};

impl RmSettings for Settings {
    fn server(&self) -> ServerSettings<'_> {
        ServerSettings {
            common: &self.common,
            service: "stock",
            migrations: ALL_MIGRATIONS,
            // A gid with a tentative reservation row still awaits its Confirm or Cancel: keep its
            // barrier rows whatever their age.
            tentative_table: "reservations",
            tentative_sql: inventory::TENTATIVE_RESERVATIONS_SQL,
        }
    }

    fn seed(&self, conn: &mut PgConnection) -> Result<(), StartupError> {
        let created =
            inventory::seed_products(conn, self.seed_products, self.seed_stock, self.seed_price)
                .map_err(|source| StartupError::Seed {
                    data: "products",
                    source,
                })?;
        if created > 0 {
            log::info!(
                "stock: seeded products 1..={created} with stock {} and base price {}",
                self.seed_stock,
                self.seed_price
            );
        }
        Ok(())
    }

    fn routes(&self, cfg: &mut web::ServiceConfig) {
        routes::configure(cfg, self);
    }

    fn openapi(&self) -> utoipa::openapi::OpenApi {
        routes::openapi()
    }
}

/// The stock service ready to serve: database migrated and seeded, socket bound.
///
/// `Application::build(settings)` builds the pool, runs the migrations (barrier, fault counters,
/// its own), seeds the products if the table is empty, binds `host:port` (port 0 picks a free
/// one); then `port()`, `handle()` (tests stop servers with it), `run_until_stopped()` (serves, and deletes old
/// barrier rows of settled gids in the background: [`service_kit::retention`]).
pub type Application = RmApplication<Settings>;
