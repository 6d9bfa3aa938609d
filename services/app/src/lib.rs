//! The AP (application) of the TCC sample: HTTP endpoints that each start one TCC global
//! transaction over the RMs (bank A `trans-out`, bank B `trans-in`, `stock`) through the TM
//! (the coordinator at `DTM_URL`), and answer with its final status.
//!
//! A tour, in the order a request goes through:
//!
//! * [`configuration`]: [`configuration::Settings`] from `HOST`, `PORT` (8080), `DTM_URL`,
//!   `TRANS_OUT_URL`, `TRANS_IN_URL`, `STOCK_URL`, `APP_URL` (its own API base, for its nested
//!   branch; derived from the bound address when unset), `JSON_LIMIT`. No database: the AP keeps
//!   no state of its own; the coordinator is the record of every global transaction.
//! * [`startup`]: [`startup::Application`] binds and serves; [`startup::AppState`] holds the one
//!   shared HTTP client (keep-alive) inside a [`tcc::client::TccClient`].
//! * [`routes`]: `GET`/`POST /api/<scenario>` for each catalogue entry, plus `/api/ping` and
//!   `/api/health` and `/api/metrics`. [`routes::fire`] is the whole AP flow: check parameters, plan branches,
//!   `newGid`, then [`tcc::client::TccClient::tcc_global_transaction`] with
//!   `wait_result`, calling each branch's Try in order. [`routes::nested`] is the AP's own nested
//!   branch (`POST /api/TransInNestedTry|Confirm|Cancel`): its Try rebuilds the global
//!   transaction from its query ([`tcc::client::TccClient::tcc_from_query`]) and calls TransIn as
//!   child branch `0201`.
//! * [`params`]: parameters from the query string and/or a JSON body; each given once at most,
//!   whole numbers > 0, unknown names refused.
//! * [`scenario`]: the catalogue (`fireTcc`, `fireTccRollback`, `firePurchase`,
//!   `fireTccNested`) as data: a
//!   [`scenario::Shape`] builds the list of [`scenario::BranchPlan`]s (RM, body, faults).
//! * [`prices`]: a purchase's price, read from the stock service (integer minor units).
//! * [`error`]: [`error::AppError`], mapped once to HTTP.
//! * [`openapi`]: the description at `GET /api/openapi.json` (Swagger UI at `/api/docs/`), built
//!   from the catalogue.
//! * [`metrics`]: `GET /api/metrics`, Prometheus text: fire requests by scenario and outcome
//!   (`tcc_ap_global_transactions_total`) and their duration (`tcc_ap_fire_duration_seconds`).
//!
//! Answers of a fire endpoint:
//!
//! | outcome | HTTP | body |
//! |---|---|---|
//! | every Try succeeded, submitted | 200 | `{"gid", "status": "succeed"}` |
//! | a Try failed, aborted (rolled back) | 409 | `{"gid", "status": "failed", "reason"}` |
//! | bad parameter / body | 400, 413, 415 | `{"error": "invalid_parameter", "message", "parameter"}` ... |
//! | stock service down (purchase price) | 502 | `{"error": "stock_unavailable", "message"}` |
//! | coordinator unreachable | 503 | `{"error": "coordinator_unavailable", "message", "gid"?}` |
//! | coordinator refused a call | 502 | `{"error": "coordinator_error", "message", "gid"?}` |

#![warn(missing_docs)]

pub mod configuration;
pub mod error;
pub mod metrics;
pub mod openapi;
pub mod params;
pub mod prices;
pub mod routes;
pub mod scenario;
pub mod startup;
pub mod state;
