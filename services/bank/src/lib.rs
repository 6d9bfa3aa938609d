//! Bank A (`trans-out`) and bank B (`trans-in`): the two RMs of the DTM transfer tutorial, one
//! library and two binaries that differ only in their [`Role`].
//!
//! A transfer of `amount` from account X in bank A to account Y in bank B is one global
//! transaction with two branches. Each branch's Try reserves, Confirm uses exactly what Try
//! reserved, Cancel releases it (design §7):
//!
//! | endpoint | effect on `accounts` | hold |
//! |---|---|---|
//! | `TransOutTry` | `trading_balance += amount` (funds frozen) | `out`, tentative |
//! | `TransOutConfirm` | `balance -= amount`, `trading_balance -= amount` | confirmed |
//! | `TransOutCancel` | `trading_balance -= amount` | cancelled |
//! | `TransInTry` | none: the credit stays pending, not spendable | `in`, tentative |
//! | `TransInConfirm` | `balance += amount` | confirmed |
//! | `TransInCancel` | none | cancelled |
//!
//! Every branch call runs through the sub-transaction barrier ([`tcc::barrier`]) via
//! [`service_kit::branch::run`], which makes empty compensations, hanging Trys and duplicates
//! no-ops.
//!
//! Layout:
//!
//! * [`configuration`]: [`Role`] and [`configuration::Settings`] from the environment.
//! * [`startup`]: [`startup::Application`]: pool, migrations, seed data, HTTP server; the steps
//!   every RM shares are [`service_kit::startup`]'s, the bank brings its seed data and routes.
//! * [`routes`]: the branch endpoints (through [`service_kit::branch::configure`]) and
//!   `GET /api/accounts/{id}`.
//! * [`ledger`]: the business code of each branch op, on one Diesel connection.
//! * [`reconcile`]: the `reconcile` subcommand, releasing holds no global transaction will settle.
//! * [`error`]: [`error::BankError`], the one error type, mapped once to HTTP.
//! * [`schema`]: Diesel's view of `accounts` and `holds`; the SQL (with `COMMENT ON` and CHECK
//!   constraints) is in `migrations/`.

#![warn(missing_docs)]

use diesel_migrations::{embed_migrations, EmbeddedMigrations};

pub mod baseline;
pub mod configuration;
pub mod error;
pub mod ledger;
pub mod reconcile;
pub mod routes;
pub mod schema;
pub mod startup;

pub use configuration::{Role, Settings};
pub use error::BankError;
pub use startup::Application;

/// The bank's own migrations (`accounts`, `holds`).
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// Every migration set a bank runs at start, in order: the barrier table, the fault counters,
/// the bank's tables. `/api/health` reports ready only when all are applied.
pub const ALL_MIGRATIONS: &[&EmbeddedMigrations] = &[
    &tcc::barrier::MIGRATIONS,
    &service_kit::fault::MIGRATIONS,
    &MIGRATIONS,
];
