//! The stock service, an RM that reserves units of a product (design §7):
//!
//! | endpoint | effect on `products` | reservation |
//! |---|---|---|
//! | `StockTry` | `reserved += quantity`, refused if `stock - reserved < quantity` | tentative |
//! | `StockConfirm` | `stock -= quantity`, `reserved -= quantity` | confirmed |
//! | `StockCancel` | `reserved -= quantity` | cancelled |
//!
//! Confirm and Cancel use the reservation's quantity, not the request's. Every branch call runs
//! through the sub-transaction barrier ([`tcc::barrier`]) via [`service_kit::branch::run`].
//!
//! Layout:
//!
//! * [`configuration`]: [`configuration::Settings`] from the environment.
//! * [`startup`]: [`startup::Application`]: pool, migrations, seed data, HTTP server; the steps
//!   every RM shares are [`service_kit::startup`]'s, the service brings its seed data and routes.
//! * [`routes`]: the branch endpoints (through [`service_kit::branch::configure`]) and
//!   `GET /api/products/{id}`.
//! * [`inventory`]: the business code of each branch op, on one Diesel connection.
//! * [`reconcile`]: the `reconcile` subcommand, releasing reservations no global transaction will
//!   settle.
//! * [`error`]: [`error::StockError`], the one error type, mapped once to HTTP.
//! * [`schema`]: Diesel's view of `products` and `reservations`; the SQL is in `migrations/`.

#![warn(missing_docs)]

use diesel_migrations::{embed_migrations, EmbeddedMigrations};

pub mod configuration;
pub mod error;
pub mod inventory;
pub mod reconcile;
pub mod routes;
pub mod schema;
pub mod startup;

pub use configuration::Settings;
pub use error::StockError;
pub use startup::Application;

/// The stock service's own migrations (`products`, `reservations`).
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// Every migration set the service runs at start, in order: the barrier table, the fault
/// counters, its own tables. `/api/health` reports ready only when all are applied.
pub const ALL_MIGRATIONS: &[&EmbeddedMigrations] = &[
    &tcc::barrier::MIGRATIONS,
    &service_kit::fault::MIGRATIONS,
    &MIGRATIONS,
];
