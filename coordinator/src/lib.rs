//! The coordinator: the TM (transaction manager) of TCC, speaking DTM's HTTP protocol so that DTM
//! clients drive it unmodified.
//!
//! Layout, in the order a request travels:
//!
//! * [`api`]: the `/api/dtmsvr` endpoints (`newGid`, `prepare`, `registerBranch`, `submit`,
//!   `abort`, `query`, `all`), their validation and DTM-shaped answers;
//! * [`store`]: every SQL statement: compare-and-set status transitions, branch registration,
//!   leases claimed with `FOR UPDATE SKIP LOCKED`. Each hot-path step is one call of a PL/pgSQL
//!   function defined in `migrations/…_state_machine_functions/up.sql` and
//!   `migrations/…_one_record_per_pass/up.sql` (one round trip, one commit, plans cached per
//!   connection); `store` keeps the decisions readable by mapping their answers;
//! * [`engine`]: one pass of a transaction's second phase: call each Confirm or Cancel in order,
//!   record all the calls in one commit, back off with jitter, alert, finish;
//! * [`worker`]: the loop that claims due transactions (retries, timeouts, work of dead replicas);
//! * [`retention`]: the background job deleting finished transactions older than the retention;
//! * [`admin`]: the operator's page at `/admin` and its JSON API under `/api/admin` (list,
//!   detail, retry-now, force-stop behind `ADMIN_TOKEN`);
//! * [`events`] and [`diagram`]: the event log of every transaction (state changes, branch calls,
//!   reported Trys) and the Mermaid sequence diagram drawn from it;
//! * [`metrics`]: Prometheus metrics of the second phase and of the unfinished backlog, `GET /api/metrics`;
//! * [`configuration`], [`startup`], [`error`], [`schema`]: settings, wiring, the one error type,
//!   and Diesel's view of the tables.
//!
//! Durability: no decision of the second phase lives only in memory. `submit` commits the status
//! change before any Confirm is called; a crash at any point leaves a row that some replica's
//! worker claims once its lease has expired (at once after a restart of the same replica). Only
//! the outcomes of the calls of a pass in flight are held in memory until the pass's commit: a
//! crash loses them, and the next pass sends those calls again, which the RMs' barriers answer as
//! duplicates (Confirm and Cancel are idempotent).

#![warn(missing_docs)]

pub mod admin;
pub mod api;
pub mod configuration;
pub mod diagram;
pub mod engine;
pub mod error;
pub mod events;
pub mod metrics;
pub mod retention;
#[allow(missing_docs)]
pub mod schema;
pub mod startup;
pub mod store;
pub mod worker;

pub use configuration::Settings;
pub use startup::Application;
