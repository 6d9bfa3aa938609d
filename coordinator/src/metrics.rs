//! The coordinator's Prometheus metrics, served at `GET /api/metrics` in the text format.
//!
//! One registry per `Application` (not the process-global default), so that tests running
//! several coordinators in one process count separately.
//!
//! Counters and the histogram move as the second phase runs in this replica. The gauges of
//! unfinished transactions describe the shared database, whichever replica did the work: they are
//! computed at scrape time by one grouped query ([`crate::store::unfinished_summary`]).

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use tcc::protocol::GlobalStatus;

use crate::store::UnfinishedSummary;

/// Buckets of [`Metrics::second_phase_seconds`], seconds: from a fast local second phase
/// (milliseconds) to one that waited out retries (minutes; the backoff cap is 300 s by default).
pub const SECOND_PHASE_BUCKETS: [f64; 16] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// The unfinished statuses the gauges report, each always present (0 when none).
pub const UNFINISHED: [GlobalStatus; 3] = [
    GlobalStatus::Prepared,
    GlobalStatus::Submitted,
    GlobalStatus::Aborting,
];

/// The coordinator's metrics.
pub struct Metrics {
    registry: Registry,
    /// `tcc_branch_calls_total{op, result}`: Confirm/Cancel calls made, by outcome
    /// (`success`, `failure`, `ongoing`, `error`).
    pub branch_calls: IntCounterVec,
    /// `tcc_branch_retries_total{op}`: calls that did not succeed and were scheduled again.
    pub retries: IntCounterVec,
    /// `tcc_branch_alerts_total{op}`: failures of a branch op that had already failed
    /// `ALERT_AFTER_ATTEMPTS` times or more (each also logged as `ALERT gid= branch_id= op=`).
    pub alerts: IntCounterVec,
    /// `tcc_transactions_finished_total{trans_type, status}`: global transactions this replica
    /// moved to `succeed` or `failed`.
    pub finished: IntCounterVec,
    /// `tcc_second_phase_duration_seconds{trans_type, status}`: seconds from `submit`/`abort`
    /// (or the timeout's abort) to the final status, retries included.
    pub second_phase_seconds: HistogramVec,
    /// `tcc_transactions_unfinished{status}`: transactions now `prepared`, `submitted` or
    /// `aborting` in the database (all replicas), at scrape time.
    pub unfinished: IntGaugeVec,
    /// `tcc_transactions_unfinished_oldest_age_seconds{status}`: age (since `prepare`) of the
    /// oldest transaction in that status, 0 when there is none, at scrape time. A `submitted` or
    /// `aborting` one that keeps aging is a branch that keeps failing; a `prepared` one older than
    /// its `timeout_to_fail` is a timeout the worker has not run yet.
    pub oldest_unfinished_age: GaugeVec,
}

impl Metrics {
    /// Creates and registers the metrics.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let register = |metric: Box<dyn prometheus::core::Collector>| {
            registry
                .register(metric)
                .expect("each metric is registered once");
        };
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels)
                .expect("metric names and labels are valid");
            register(Box::new(c.clone()));
            c
        };
        let branch_calls = counter(
            "tcc_branch_calls_total",
            "Confirm and Cancel calls made by the coordinator, by op and outcome.",
            &["op", "result"],
        );
        let retries = counter(
            "tcc_branch_retries_total",
            "Branch calls that did not succeed and were scheduled again.",
            &["op"],
        );
        let alerts = counter(
            "tcc_branch_alerts_total",
            "Failures of a branch op past the alert threshold.",
            &["op"],
        );
        let finished = counter(
            "tcc_transactions_finished_total",
            "Global transactions that reached a final status.",
            &["trans_type", "status"],
        );
        let second_phase_seconds = HistogramVec::new(
            HistogramOpts::new(
                "tcc_second_phase_duration_seconds",
                "Seconds from submit or abort to the final status of a global transaction.",
            )
            .buckets(SECOND_PHASE_BUCKETS.to_vec()),
            &["trans_type", "status"],
        )
        .expect("the histogram's name, labels and buckets are valid");
        register(Box::new(second_phase_seconds.clone()));
        let unfinished = IntGaugeVec::new(
            Opts::new(
                "tcc_transactions_unfinished",
                "Global transactions not yet final, by status (from the database, at scrape time).",
            ),
            &["status"],
        )
        .expect("the gauge's name and labels are valid");
        register(Box::new(unfinished.clone()));
        let oldest_unfinished_age = GaugeVec::new(
            Opts::new(
                "tcc_transactions_unfinished_oldest_age_seconds",
                "Age since prepare of the oldest global transaction in each unfinished status; 0 when none.",
            ),
            &["status"],
        )
        .expect("the gauge's name and labels are valid");
        register(Box::new(oldest_unfinished_age.clone()));
        Metrics {
            registry,
            branch_calls,
            retries,
            alerts,
            finished,
            second_phase_seconds,
            unfinished,
            oldest_unfinished_age,
        }
    }

    /// Counts a transaction that reached `status` and observes its second phase's duration
    /// (when known: transactions older than the event log have none).
    pub fn observe_finished(
        &self,
        trans_type: &str,
        status: GlobalStatus,
        second_phase_secs: Option<f64>,
    ) {
        let labels = [trans_type, status.as_str()];
        self.finished.with_label_values(&labels).inc();
        if let Some(secs) = second_phase_secs {
            self.second_phase_seconds
                .with_label_values(&labels)
                .observe(secs.max(0.0));
        }
    }

    /// Sets the unfinished gauges from one [`crate::store::unfinished_summary`]: every status of
    /// [`UNFINISHED`] is set, to 0 when the summary has no row for it.
    pub fn set_unfinished(&self, summary: &[UnfinishedSummary]) {
        for status in UNFINISHED {
            let row = summary.iter().find(|r| r.status == status.as_str());
            self.unfinished
                .with_label_values(&[status.as_str()])
                .set(row.map_or(0, |r| r.count));
            self.oldest_unfinished_age
                .with_label_values(&[status.as_str()])
                .set(row.map_or(0.0, |r| r.oldest_age_secs.max(0.0)));
        }
    }

    /// Every metric in Prometheus' text exposition format.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buffer)
            .expect("encoding metrics into a Vec cannot fail");
        String::from_utf8(buffer).expect("the text format is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finished_transaction_is_counted_and_its_second_phase_observed() {
        let metrics = Metrics::new();
        metrics.observe_finished("tcc", GlobalStatus::Succeed, Some(0.02));
        metrics.observe_finished("tcc", GlobalStatus::Failed, None);
        let text = metrics.render();
        assert!(
            text.contains(
                r#"tcc_transactions_finished_total{status="succeed",trans_type="tcc"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"tcc_transactions_finished_total{status="failed",trans_type="tcc"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"tcc_second_phase_duration_seconds_bucket{status="succeed",trans_type="tcc",le="0.025"} 1"#
            ),
            "{text}"
        );
        assert!(
            !text.contains(r#"tcc_second_phase_duration_seconds_count{status="failed""#),
            "{text}"
        );
    }

    #[test]
    fn every_unfinished_status_is_reported_even_without_transactions() {
        let metrics = Metrics::new();
        metrics.set_unfinished(&[UnfinishedSummary {
            status: "submitted".into(),
            count: 2,
            oldest_age_secs: 12.5,
        }]);
        let text = metrics.render();
        for line in [
            r#"tcc_transactions_unfinished{status="submitted"} 2"#,
            r#"tcc_transactions_unfinished{status="prepared"} 0"#,
            r#"tcc_transactions_unfinished{status="aborting"} 0"#,
            r#"tcc_transactions_unfinished_oldest_age_seconds{status="submitted"} 12.5"#,
            r#"tcc_transactions_unfinished_oldest_age_seconds{status="prepared"} 0"#,
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        // The next scrape replaces the values: a status that emptied goes back to 0.
        metrics.set_unfinished(&[]);
        assert!(metrics
            .render()
            .contains(r#"tcc_transactions_unfinished{status="submitted"} 0"#));
    }
}
