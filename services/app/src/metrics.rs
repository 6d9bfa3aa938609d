//! The AP's Prometheus metrics, served at `GET /api/metrics` in the text exposition format, from
//! a registry of this application instance's own ([`service_kit::metrics::MetricsRegistry`]):
//!
//! | metric | type | labels | meaning |
//! |---|---|---|---|
//! | `tcc_ap_global_transactions_total` | counter | `scenario`, `outcome` | fire requests answered, by scenario (`fireTcc`, ...) and [`FireOutcome`] |
//! | `tcc_ap_fire_duration_seconds` | histogram | `scenario` | seconds from a fire request to its answer, for every outcome but `invalid` |
//!
//! With `wait_result` (the default) the duration covers both phases: the Trys, `submit` or
//! `abort`, and every Confirm or Cancel the coordinator made before answering, retries included.
//! Invalid requests are left out of it: they answer in microseconds, without a global
//! transaction, and would hide the latencies that matter.
//!
//! The nested branch endpoints (`TransInNested*`) are not counted here: their outcome is the
//! child TransIn branch's, counted by trans-in, and the outer fire request's.

use std::time::Duration;

use actix_web::http::StatusCode;
use prometheus::{HistogramVec, IntCounterVec};
use service_kit::metrics::MetricsRegistry;

use crate::error::AppError;
use crate::scenario::Scenario;

/// Upper bounds of the `tcc_ap_fire_duration_seconds` buckets, seconds: from a few milliseconds
/// (a transfer on a local machine) to two minutes (injected delays reach 60 s, and a Confirm
/// retried with backoff takes a while).
const FIRE_DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// How a fire request ended: the `outcome` label of `tcc_ap_global_transactions_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FireOutcome {
    /// `committed`: every Try succeeded and the global transaction was submitted (200).
    Committed,
    /// `rolled_back`: a Try did not succeed and the global transaction was aborted (409).
    RolledBack,
    /// `coordinator_error`: the coordinator could not be reached or refused a call (503/502);
    /// a global transaction may exist, and the coordinator finishes it.
    CoordinatorError,
    /// `stock_unavailable`: a purchase's price could not be read from the stock service (502),
    /// before any global transaction.
    StockUnavailable,
    /// `invalid`: the request was refused (4xx: bad parameter or body, unknown product, fault
    /// parameters while fault injection is off) before any global transaction.
    Invalid,
}

impl FireOutcome {
    /// How a fire request answered `status` ended; `error`, the [`AppError`] it answered, if
    /// any, tells a coordinator failure from the stock service's and from a refused request.
    pub fn of(status: StatusCode, error: Option<&AppError>) -> FireOutcome {
        match (status, error) {
            (StatusCode::OK, _) => FireOutcome::Committed,
            (StatusCode::CONFLICT, _) => FireOutcome::RolledBack,
            (_, Some(AppError::Coordinator { .. })) => FireOutcome::CoordinatorError,
            (_, Some(AppError::StockUnavailable { .. })) => FireOutcome::StockUnavailable,
            // Every other answer is a 4xx about the request itself.
            _ => FireOutcome::Invalid,
        }
    }

    /// Every outcome.
    pub const ALL: [FireOutcome; 5] = [
        FireOutcome::Committed,
        FireOutcome::RolledBack,
        FireOutcome::CoordinatorError,
        FireOutcome::StockUnavailable,
        FireOutcome::Invalid,
    ];

    /// The label value: `committed`, `rolled_back`, `coordinator_error`, `stock_unavailable`,
    /// `invalid`.
    pub fn as_str(self) -> &'static str {
        match self {
            FireOutcome::Committed => "committed",
            FireOutcome::RolledBack => "rolled_back",
            FireOutcome::CoordinatorError => "coordinator_error",
            FireOutcome::StockUnavailable => "stock_unavailable",
            FireOutcome::Invalid => "invalid",
        }
    }
}

/// The AP's metrics (see the module docs), one set per application instance, in
/// [`crate::state::AppState::metrics`].
#[derive(Debug)]
pub struct AppMetrics {
    /// The registry they are in: its `response()` answers a scrape, in the text exposition
    /// format (`text/plain; version=0.0.4`).
    pub registry: MetricsRegistry,
    global_transactions: IntCounterVec,
    fire_duration: HistogramVec,
}

/// The metrics on a new registry; every `(scenario, outcome)` counter and every scenario's
/// histogram start at 0, so a scrape shows them all before the first fire.
impl Default for AppMetrics {
    fn default() -> AppMetrics {
        let registry = MetricsRegistry::new();
        let global_transactions = registry.int_counter_vec(
            "tcc_ap_global_transactions_total",
            "Fire requests answered by the AP, by scenario and outcome: committed, rolled_back, \
             coordinator_error, stock_unavailable, invalid (refused before any global \
             transaction).",
            &["scenario", "outcome"],
        );
        let fire_duration = registry.histogram_vec(
            "tcc_ap_fire_duration_seconds",
            "Seconds from a fire request to its answer (both phases with wait_result), by \
             scenario; invalid requests excluded.",
            &["scenario"],
            FIRE_DURATION_BUCKETS.to_vec(),
        );
        for scenario in Scenario::ALL {
            for outcome in FireOutcome::ALL {
                global_transactions.with_label_values(&[scenario.name(), outcome.as_str()]);
            }
            fire_duration.with_label_values(&[scenario.name()]);
        }
        AppMetrics {
            registry,
            global_transactions,
            fire_duration,
        }
    }
}

impl AppMetrics {
    /// Counts one answered fire request of `scenario` and, unless it was `invalid`, observes how
    /// long it took.
    pub fn record(&self, scenario: Scenario, outcome: FireOutcome, elapsed: Duration) {
        self.global_transactions
            .with_label_values(&[scenario.name(), outcome.as_str()])
            .inc();
        if outcome != FireOutcome::Invalid {
            self.fire_duration
                .with_label_values(&[scenario.name()])
                .observe(elapsed.as_secs_f64());
        }
    }
}
