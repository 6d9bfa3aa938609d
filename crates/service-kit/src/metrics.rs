//! Prometheus metrics, served at `GET /api/metrics` in the text exposition format
//! (`text/plain; version=0.0.4`), with the `prometheus` crate.
//!
//! Every application instance has its own [`MetricsRegistry`] (never the crate's process-global
//! default registry): tests start several RMs and APs in one process, and each must count only
//! its own requests. The coordinator follows the same rule with its own registry.
//!
//! What is shared here:
//!
//! * [`MetricsRegistry`]: a registry with helpers that create and register a metric in one step,
//!   and [`MetricsRegistry::response`], the scrape answer;
//! * [`RmMetrics`]: the metrics of every RM (both banks, the stock service), recorded by the
//!   middleware around each branch endpoint (`branch::count_branch_calls`), which also logs
//!   every answer, so no RM writes metrics code of its own:
//!
//!   | metric | type | labels | meaning |
//!   |---|---|---|---|
//!   | `tcc_rm_branch_requests_total` | counter | `op`, `outcome` | branch requests answered, by op (`try`, `confirm`, `cancel`) and [`RequestOutcome`] |
//!   | `tcc_rm_tentative_reservations` | gauge | none | rows a Try reserved that no Confirm or Cancel has settled yet (bank: `holds`, stock: `reservations`) |
//!   | `tcc_rm_tentative_oldest_age_seconds` | gauge | none | age of the oldest of them, seconds; 0 when there are none |
//!
//!   The two gauges are the "dangling reservations" signal: a tentative row should live about as
//!   long as its global transaction's first phase plus second phase. A count that only grows, or
//!   an oldest age far beyond the coordinator's `timeout_to_fail` and retry horizon, means funds
//!   or stock frozen by a Try that nothing will release. They are computed at scrape time with
//!   one query the RM supplies ([`RmMetrics::new`]), so they never drift from the database.
//!
//! The AP's own metrics (`tcc_ap_*`) are in the app crate, built on [`MetricsRegistry`].

use actix_web::{web, HttpResponse};
use diesel::sql_types::{BigInt, Double, Nullable};
use diesel::{QueryableByName, RunQueryDsl};
use prometheus::core::Collector;
use prometheus::{
    Encoder, Gauge, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};
use tcc::barrier::BarrierOutcome;
use tcc::protocol::Op;

use crate::db::{blocking, DbPool};

/// The path every binary serves its metrics on.
pub const PATH: &str = "/api/metrics";

/// Counter `tcc_rm_branch_requests_total{op, outcome}`: branch requests an RM answered.
/// `op` is the op the endpoint serves (`try`, `confirm`, `cancel`), `outcome` a
/// [`RequestOutcome`] label.
pub const RM_BRANCH_REQUESTS: &str = "tcc_rm_branch_requests_total";
/// Gauge `tcc_rm_tentative_reservations`: rows in state `tentative` in the RM's table of what
/// Trys reserved (bank: `holds`, stock: `reservations`), read at scrape time. No labels.
pub const RM_TENTATIVE: &str = "tcc_rm_tentative_reservations";
/// Gauge `tcc_rm_tentative_oldest_age_seconds`: seconds since the oldest of those rows was
/// created (database clock), read at scrape time; 0 when there is none. No labels.
pub const RM_TENTATIVE_OLDEST_AGE: &str = "tcc_rm_tentative_oldest_age_seconds";

/// One application's metrics registry. Cheap to clone (the registry is shared, not copied).
#[derive(Clone, Default)]
pub struct MetricsRegistry {
    registry: Registry,
}

impl std::fmt::Debug for MetricsRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsRegistry").finish_non_exhaustive()
    }
}

impl MetricsRegistry {
    /// An empty registry.
    pub fn new() -> MetricsRegistry {
        MetricsRegistry::default()
    }

    /// Registers `collector` and hands it back.
    ///
    /// Panics if a metric of the same name is already registered: metric names are constants of
    /// the code, so that is a programming error.
    pub fn register<C: Collector + Clone + 'static>(&self, collector: C) -> C {
        self.registry
            .register(Box::new(collector.clone()))
            .expect("each metric is registered once per registry");
        collector
    }

    /// A new counter `name` with the label names `labels`, registered. Panics on an invalid
    /// name or label (constants of the code).
    pub fn int_counter_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.register(
            IntCounterVec::new(Opts::new(name, help), labels)
                .expect("metric names and labels are valid"),
        )
    }

    /// A new histogram `name` with the label names `labels` and the bucket upper bounds
    /// `buckets` (in the metric's unit, increasing), registered.
    pub fn histogram_vec(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
        buckets: Vec<f64>,
    ) -> HistogramVec {
        self.register(
            HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
                .expect("metric names, labels and buckets are valid"),
        )
    }

    /// A new integer gauge without labels, registered.
    pub fn int_gauge(&self, name: &str, help: &str) -> IntGauge {
        self.register(IntGauge::new(name, help).expect("metric names are valid"))
    }

    /// A new floating-point gauge without labels, registered.
    pub fn gauge(&self, name: &str, help: &str) -> Gauge {
        self.register(Gauge::new(name, help).expect("metric names are valid"))
    }

    /// Every registered metric in the text exposition format.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buffer)
            .expect("encoding metrics into a Vec cannot fail");
        String::from_utf8(buffer).expect("the text format is UTF-8")
    }

    /// The scrape answer: `200`, `Content-Type: text/plain; version=0.0.4`, [`Self::render`].
    pub fn response(&self) -> HttpResponse {
        HttpResponse::Ok()
            .content_type(TextEncoder::new().format_type())
            .body(self.render())
    }
}

/// What became of one branch request at an RM: the `outcome` label of
/// `tcc_rm_branch_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestOutcome {
    /// `applied`: first delivery; the business code ran and committed (200 SUCCESS).
    Applied,
    /// `empty_compensation`: a Cancel whose Try never ran here; nothing to release (200 SUCCESS).
    EmptyCompensation,
    /// `duplicate`: the op had already run for this branch, a retry or a duplicate delivery;
    /// skipped (200 SUCCESS).
    Duplicate,
    /// `hanging`: a Try arriving after its Cancel; skipped, nothing reserved (200 SUCCESS).
    Hanging,
    /// `refused`: a business refusal, `409 FAILURE` (insufficient funds, an injected `failure`;
    /// from Confirm/Cancel, a protocol violation).
    Refused,
    /// `ongoing`: `425 ONGOING` (injected).
    Ongoing,
    /// `error`: a 5xx, injected (`error` fault) or real (database down, bug).
    Error,
    /// `misbehaved`: an injected `accepted:N` (`202`) or `redirect:N` (`307`) answer
    /// ([`crate::fault`]): an RM or proxy that misbehaves; nothing was done, and the caller must
    /// read it as a transient error. Only with fault injection on.
    Misbehaved,
    /// `bad_request`: any other 4xx: malformed query or body, wrong op for the endpoint, value
    /// out of range, a fault while fault injection is off.
    BadRequest,
    /// `unauthorized`: a call refused with 401 ([`crate::callers`]): a Confirm or
    /// Cancel with neither a valid signature nor the gid token of its gid (and, without either
    /// header, not vouched for by the coordinator), or a Try with a wrong or missing gid token;
    /// nothing was done. A rising count means a caller other than the AP and the
    /// coordinator, or one with another `BRANCH_SIGNING_SECRET`.
    Unauthorized,
    /// `not_registered`: a Try without a gid token refused with 403 because the coordinator does
    /// not report its gid `prepared` with this branch registered, or reports other data
    /// registered for the branch than the Try's body
    /// ([`crate::coordinator_check::try_verdict`]); nothing was written or frozen. Only ever
    /// counted under `op="try"`. A rising count means callers that are not APs, or an AP that
    /// calls Try before registering the branch or with another body than it registered.
    NotRegistered,
}

impl RequestOutcome {
    /// Every outcome, in the order of the docs.
    pub const ALL: [RequestOutcome; 11] = [
        RequestOutcome::Applied,
        RequestOutcome::EmptyCompensation,
        RequestOutcome::Duplicate,
        RequestOutcome::Hanging,
        RequestOutcome::Refused,
        RequestOutcome::Ongoing,
        RequestOutcome::Error,
        RequestOutcome::Misbehaved,
        RequestOutcome::BadRequest,
        RequestOutcome::Unauthorized,
        RequestOutcome::NotRegistered,
    ];

    /// The label value: `applied`, `empty_compensation`, `duplicate`, `hanging`, `refused`,
    /// `ongoing`, `error`, `misbehaved`, `bad_request`, `unauthorized`, `not_registered`.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestOutcome::Applied => "applied",
            RequestOutcome::EmptyCompensation => "empty_compensation",
            RequestOutcome::Duplicate => "duplicate",
            RequestOutcome::Hanging => "hanging",
            RequestOutcome::Refused => "refused",
            RequestOutcome::Ongoing => "ongoing",
            RequestOutcome::Error => "error",
            RequestOutcome::Misbehaved => "misbehaved",
            RequestOutcome::BadRequest => "bad_request",
            RequestOutcome::Unauthorized => "unauthorized",
            RequestOutcome::NotRegistered => "not_registered",
        }
    }

    /// The outcome of the barrier's decision for a request that succeeded.
    pub fn of_barrier<T>(outcome: &BarrierOutcome<T>) -> RequestOutcome {
        match outcome {
            BarrierOutcome::Applied(_) => RequestOutcome::Applied,
            BarrierOutcome::EmptyCompensation => RequestOutcome::EmptyCompensation,
            BarrierOutcome::Duplicate => RequestOutcome::Duplicate,
            BarrierOutcome::Hanging => RequestOutcome::Hanging,
        }
    }

    /// The outcome of an error answer with `status`: 401 `unauthorized`, 403 `not_registered`
    /// (only the Try gate answers 403), 409 `refused`, 425 `ongoing`, 5xx `error`, 2xx and 3xx
    /// `misbehaved` (only the injected `accepted:N` and `redirect:N` faults answer them through
    /// the error path), any other status `bad_request`.
    pub fn of_error_status(status: actix_web::http::StatusCode) -> RequestOutcome {
        match status.as_u16() {
            401 => RequestOutcome::Unauthorized,
            403 => RequestOutcome::NotRegistered,
            409 => RequestOutcome::Refused,
            425 => RequestOutcome::Ongoing,
            s if s >= 500 => RequestOutcome::Error,
            200..=399 => RequestOutcome::Misbehaved,
            _ => RequestOutcome::BadRequest,
        }
    }
}

impl std::fmt::Display for RequestOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an RM's tentative query ([`RmMetrics::new`]) answers: one row with these two columns.
#[derive(Debug, Clone, Copy, PartialEq, QueryableByName)]
pub struct Tentative {
    /// Column `tentative` (`bigint`): how many rows are in state `tentative`.
    #[diesel(sql_type = BigInt)]
    pub tentative: i64,
    /// Column `oldest_age_seconds` (`double precision`, `NULL` when there is none): seconds
    /// since the oldest of them was created, by the database's clock.
    #[diesel(sql_type = Nullable<Double>)]
    pub oldest_age_seconds: Option<f64>,
}

/// The metrics of one RM instance (see the module docs for the table). Created once per
/// application by [`crate::startup::run`], shared with the handlers as `web::Data<RmMetrics>`.
pub struct RmMetrics {
    registry: MetricsRegistry,
    branch_requests: IntCounterVec,
    tentative: IntGauge,
    oldest_age: Gauge,
    tentative_sql: &'static str,
}

impl std::fmt::Debug for RmMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RmMetrics")
            .field("tentative_sql", &self.tentative_sql)
            .finish_non_exhaustive()
    }
}

impl RmMetrics {
    /// The RM's metrics on a new registry. `tentative_sql` is the RM's own query for the
    /// tentative gauges: one statement, no parameters, answering one row shaped as [`Tentative`]
    /// (a `count(*)` and the age of the oldest row over the RM's reservation table, e.g. the
    /// bank's `holds` where `state = 'tentative'`). It runs at every scrape, so it should be
    /// cheap: a partial index on the tentative rows keeps it so.
    ///
    /// Every `(op, outcome)` series of `tcc_rm_branch_requests_total` starts at 0, so a scrape
    /// shows them all before the first request.
    pub fn new(tentative_sql: &'static str) -> RmMetrics {
        let registry = MetricsRegistry::new();
        let branch_requests = registry.int_counter_vec(
            RM_BRANCH_REQUESTS,
            "Branch requests (Try, Confirm, Cancel) answered by this RM, by the op the endpoint \
             serves and by outcome: applied, empty_compensation, duplicate, hanging (the \
             sub-transaction barrier's decisions), refused (409 FAILURE), ongoing (425), error \
             (5xx), misbehaved (an injected 202 or 307, nothing done), bad_request (other 4xx), \
             unauthorized (401: no valid signature or gid token), not_registered (403: a Try \
             the coordinator does not know of).",
            &["op", "outcome"],
        );
        for op in [Op::Try, Op::Confirm, Op::Cancel] {
            for outcome in RequestOutcome::ALL {
                branch_requests.with_label_values(&[op.as_str(), outcome.as_str()]);
            }
        }
        let tentative = registry.int_gauge(
            RM_TENTATIVE,
            "Rows reserved by a Try that no Confirm or Cancel has settled yet (bank: holds, \
             stock: reservations), read at scrape time.",
        );
        let oldest_age = registry.gauge(
            RM_TENTATIVE_OLDEST_AGE,
            "Age in seconds of the oldest tentative reservation, read at scrape time; 0 when \
             there is none, NaN when the database could not be read.",
        );
        RmMetrics {
            registry,
            branch_requests,
            tentative,
            oldest_age,
            tentative_sql,
        }
    }

    /// Counts one answered branch request of the endpoint serving `op`.
    pub fn record(&self, op: Op, outcome: RequestOutcome) {
        self.branch_requests
            .with_label_values(&[op.as_str(), outcome.as_str()])
            .inc();
    }

    /// Runs the tentative query and sets the two gauges. When the database cannot be read, the
    /// count keeps its last value, the age becomes NaN (unknown), and the failure is logged: the
    /// counters are still worth serving then.
    pub async fn refresh(&self, pool: &DbPool) {
        let sql = self.tentative_sql;
        let read = blocking(pool, move |conn| {
            diesel::sql_query(sql).get_result::<Tentative>(conn)
        })
        .await;
        match read {
            Ok(Ok(t)) => {
                self.tentative.set(t.tentative);
                self.oldest_age.set(t.oldest_age_seconds.unwrap_or(0.0));
            }
            Ok(Err(e)) => self.unknown(&e),
            Err(e) => self.unknown(&e),
        }
    }

    fn unknown(&self, error: &dyn std::fmt::Display) {
        log::warn!("metrics: the tentative reservations could not be read: {error}");
        self.oldest_age.set(f64::NAN);
    }

    /// Every metric in the text exposition format, gauges as last refreshed.
    pub fn render(&self) -> String {
        self.registry.render()
    }

    /// The registry, for an RM that registers metrics of its own.
    pub fn registry(&self) -> &MetricsRegistry {
        &self.registry
    }
}

/// `GET /api/metrics` of an RM: refreshes the tentative gauges ([`RmMetrics::refresh`]), then
/// answers every metric. Needs `web::Data<RmMetrics>` and `web::Data<DbPool>` in the app data
/// ([`crate::startup::run`] registers both).
#[utoipa::path(get, path = "/api/metrics", tag = "metrics", responses(
    (status = 200, description = "Prometheus text exposition format 0.0.4", body = String, content_type = "text/plain"),
))]
pub async fn rm_metrics(metrics: web::Data<RmMetrics>, pool: web::Data<DbPool>) -> HttpResponse {
    metrics.refresh(&pool).await;
    metrics.registry.response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::StatusCode;

    #[test]
    fn error_statuses_map_to_outcomes() {
        let of = |s: u16| RequestOutcome::of_error_status(StatusCode::from_u16(s).unwrap());
        assert_eq!(of(409), RequestOutcome::Refused);
        assert_eq!(of(425), RequestOutcome::Ongoing);
        assert_eq!(of(500), RequestOutcome::Error);
        assert_eq!(of(503), RequestOutcome::Error);
        assert_eq!(of(400), RequestOutcome::BadRequest);
        assert_eq!(of(401), RequestOutcome::Unauthorized);
        assert_eq!(of(403), RequestOutcome::NotRegistered);
        assert_eq!(of(413), RequestOutcome::BadRequest);
        assert_eq!(of(429), RequestOutcome::BadRequest);
        assert_eq!(of(202), RequestOutcome::Misbehaved);
        assert_eq!(of(307), RequestOutcome::Misbehaved);
    }

    #[test]
    fn every_op_and_outcome_series_exists_before_the_first_request() {
        let metrics = RmMetrics::new("SELECT 0::bigint AS tentative, NULL AS oldest_age_seconds");
        metrics.record(Op::Confirm, RequestOutcome::Duplicate);
        let text = metrics.render();
        let series = text
            .lines()
            .filter(|l| l.starts_with(RM_BRANCH_REQUESTS))
            .count();
        assert_eq!(series, 3 * RequestOutcome::ALL.len(), "{text}");
        assert!(
            text.contains(r#"tcc_rm_branch_requests_total{op="confirm",outcome="duplicate"} 1"#),
            "{text}"
        );
    }

    #[test]
    fn two_registries_count_separately() {
        let (a, b) = (MetricsRegistry::new(), MetricsRegistry::new());
        let ca = a.int_counter_vec("x_total", "x", &["l"]);
        let _cb = b.int_counter_vec("x_total", "x", &["l"]);
        ca.with_label_values(&["v"]).inc();
        assert!(a.render().contains(r#"x_total{l="v"} 1"#));
        assert!(!b.render().contains(r#"x_total{l="v"}"#));
    }
}
