//! Plumbing shared by the sample's five binaries, kept out of [`tcc`] because a service adopting
//! TCC already has its own. Layout:
//!
//! * [`settings`]: typed settings read from environment variables, with defaults.
//! * [`db`]: the r2d2 pool of Diesel connections, embedded migrations, the `web::block` helper.
//! * [`http`]: `GET /api/ping` and `GET /api/health`, the JSON error body
//!   `{"error": "<code>", "message": "..."}` and JSON 404, extractor configs that answer malformed
//!   JSON, query strings and paths with it, and the `GET .../{id}` view route of the RMs.
//! * [`branch`]: what wraps each RM branch handler (the handlers themselves, with their barrier
//!   call, are the RMs' own): [`branch::register`] mounts a handler inside the middlewares of
//!   [`metrics`], [`callers`] and [`fault`]; the HTTP mapping of the RMs' errors.
//! * [`callers`]: who may call a branch endpoint: signature, gid token, and for calls carrying
//!   neither, the RM's coordinator ([`coordinator_check`]).
//! * [`fault`]: the demo fault injector of the RMs (`docs/ARCHITECTURE.md#scenarios`): a
//!   branch's data may carry `{"fault": {"try": "failure", "confirm": "error:3", ...}}`.
//! * [`gid_view`]: `GET /api/branches/{gid}`, an RM's reservations and barrier rows for one
//!   global transaction, read in one snapshot.
//! * [`pause`]: the board of the `pause` and `pause-after` faults, calls held until
//!   `POST /api/paused/resume`, so a demo can stop between two protocol steps.
//! * [`coordinator_check`]: what the RM's coordinator (`DTM_URL`) says about a gid: the check of
//!   a call that carries no gid token, and the verdicts of the reconciliation.
//! * [`reservation`]: [`reservation::ReservationState`], the state of what a Try reserved.
//! * [`reconcile`]: finds and releases the tentative reservations no global transaction will
//!   ever settle (the RMs' `reconcile` subcommand).
//! * [`startup`]: how an RM starts (pool, migrations and seed data off the runtime, bind, common
//!   app data, health, JSON 404), so that an RM only brings its seed data and routes.
//! * [`retention`]: the background job deleting the barrier rows (and fault counters) of global
//!   transactions settled longer ago than the retention, for every RM; and the periodic loop the
//!   coordinator's retention shares.
//! * [`metrics`]: Prometheus metrics at `GET /api/metrics`: a registry per application
//!   instance, and the RMs' metrics (branch requests by op and outcome, counted by a middleware;
//!   count and oldest age of tentative reservations, read at scrape time).
//! * [`params`]: strict parameters of a public endpoint from the query string and/or a JSON
//!   body, checked against a declared table (the [`params::Params`] extractor); the AP's fire
//!   endpoints take theirs this way.
//! * [`rate_limit`]: a per-client-address rate limit (429 with `Retry-After`), which the AP puts
//!   on its public fire endpoints.
//! * [`openapi`]: the OpenAPI description every binary serves at `GET /api/openapi.json` (with
//!   Swagger UI at `/api/docs/`), generated from the handlers and endpoint tables; the branch
//!   endpoints' operation.
//! * [`logging`]: env_logger set up from `RUST_LOG`, `info` by default.

#![warn(missing_docs)]

pub mod branch;
pub mod callers;
pub mod coordinator_check;
pub mod db;
pub mod fault;
pub mod gid_view;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod openapi;
pub mod params;
pub mod pause;
pub mod rate_limit;
pub mod reconcile;
pub mod reservation;
pub mod retention;
pub mod settings;
pub mod startup;
