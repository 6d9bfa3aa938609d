//! The AP (application) of the TCC sample: HTTP endpoints that each start one TCC global
//! transaction over the RMs (bank A `trans-out`, bank B `trans-in`, `stock`) through the TM (the
//! coordinator at `DTM_URL`), and answer with its outcome. It keeps no state of its own: the
//! coordinator is the record of every global transaction.
//!
//! Where each thing is:
//!
//! * [`routes::fire`]: one handler per scenario, each a global transaction written out with its
//!   `call_branch` lines: [`routes::fire::fire_tcc`], [`routes::fire::fire_tcc_rollback`],
//!   [`routes::fire::fire_purchase`], [`routes::fire::fire_tcc_nested`].
//! * [`routes::nested`]: the AP's own nested branch (`POST /api/TransInNestedTry|Confirm|Cancel`),
//!   whose Try adds TransIn as child branch `0201` of the caller's global transaction.
//! * [`routes::baseline`]: `fireBaseline`, the benchmark's floor without TCC.
//! * [`routes`]: the route table, the middlewares around each fire handler (rate limit, metrics
//!   and log), `GET /api/metrics`, JSON 404 and 405.
//! * [`scenario`]: the scenarios' names and the parameters each accepts, fault parameters
//!   included (checked by [`service_kit::params`]), read into a typed [`scenario::FireParams`].
//! * [`prices`]: a purchase's price, from the stock service (integer minor units).
//! * [`error`]: [`error::AppError`], mapped once to a status and a JSON body.
//! * [`metrics`]: the Prometheus metrics of fire requests, by scenario and outcome.
//! * [`openapi`]: the description at `GET /api/openapi.json` (Swagger UI at `/api/docs/`).
//! * [`configuration`]: [`configuration::Settings`] from the environment; [`state`]: what every
//!   handler shares ([`state::AppState`]: the TCC client, the branch URLs); [`startup`]: binding
//!   and serving ([`startup::Application`]).
//!
//! Each module imports only modules before it in this order: `configuration`, `error`,
//! `scenario`, `prices`, `metrics`, `state`, `routes`, `openapi`, `startup`.
//!
//! Answers of a fire endpoint:
//!
//! | outcome | HTTP | body |
//! |---|---|---|
//! | every Try succeeded, submitted | 200 | `{"gid", "status": "succeed"}` |
//! | a Try failed, aborted (rolled back) | 409 | `{"gid", "status": "failed", "reason"}` |
//! | bad parameter / body | 400, 413, 415 | `{"error": "invalid_parameter", "message", "parameter"}` ... |
//! | over the per-client rate limit | 429 | `{"error": "rate_limited", "message"}`, `Retry-After` |
//! | stock service down (purchase price) | 502 | `{"error": "stock_unavailable", "message"}` |
//! | coordinator unreachable | 503 | `{"error": "coordinator_unavailable", "message", "gid"?}` |
//! | coordinator refused a call | 502 | `{"error": "coordinator_error", "message", "gid"?}` |

#![warn(missing_docs)]

pub mod configuration;
pub mod error;
pub mod metrics;
pub mod openapi;
pub mod prices;
pub mod routes;
pub mod scenario;
pub mod startup;
pub mod state;
