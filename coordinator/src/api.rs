//! The DTM-compatible HTTP API under `/api/dtmsvr` (docs/PROTOCOL.md, "Coordinator API").
//!
//! Answers follow DTM: `200 {"dtm_result":"SUCCESS", ...}`, `409 {"dtm_result":"FAILURE", ...}`
//! for a refusal, 4xx with `{"error","message"}` for malformed requests. Two rules deliberately
//! differ from DTM: `submit` of an unknown gid is a 409 (DTM creates and succeeds an empty
//! transaction), and a repeated `submit` still drives pending Confirms (DTM returns at once).
//!
//! Extensions beyond DTM's protocol: Try reports, through which this project's AP client tells
//! the coordinator about each Try it made, either carried by its next call (`try_reports` of
//! `registerBranch`, `submit`, `abort`: [`RegisterBody::try_reports`]) or, from a nested AP, one
//! by one with `POST /api/dtmsvr/reportTry` ([`TryReportBody`]); and the read-only views of a
//! transaction's event log: `GET /api/admin/transactions/{gid}/diagram` (text/plain Mermaid,
//! [`crate::diagram`]) and `GET /api/admin/transactions/{gid}/events` (JSON,
//! [`crate::events::Event`]). DTM clients never call the former, and nothing else depends on it:
//! their Trys are simply drawn as not reported.

use std::collections::BTreeMap;
use std::time::Duration;

use actix_web::{http::header, web, HttpResponse};
use serde::{Deserialize, Serialize};
use service_kit::db::blocking;
use service_kit::http::JsonObject;
use service_kit::openapi::{ErrorBody, JsonBodyErrors};
use tcc::protocol::{
    validate_branch_id, validate_gid, BranchOutcome, CoordinatorAnswer, GlobalStatus,
    MAX_OPTION_SECS, MAX_REQUEST_TIMEOUT_SECS,
};

use crate::configuration::{BranchHosts, TransDefaults};
use crate::engine::{Engine, PassEnd};
use crate::error::CoordinatorError;
use crate::events::{self, TryReport, TryReportRefusal};
use crate::store::{
    self, BranchOp, NewBranch, NewTrans, PrepareOutcome, RegisterOutcome, TransGlobal, Transition,
};

/// Longest stored rollback reason, in characters.
pub const MAX_REASON_LEN: usize = 1024;
/// Default and largest page size of `all`.
pub const DEFAULT_PAGE: i64 = 100;
/// Largest page size of `all`.
pub const MAX_PAGE: i64 = 1000;
/// Largest `latency_ms` a Try report may carry (one day): anything longer is a unit mistake.
pub const MAX_REPORTED_LATENCY_MS: u64 = 86_400_000;

/// Mounts the coordinator's routes: the DTM API (with the `reportTry` extension), the event log
/// views under `/api/admin/transactions/{gid}/` and `GET /api/metrics`. The admin routes are
/// registered one by one, not as a scope, so they coexist with [`crate::admin`]'s.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/metrics", web::get().to(metrics));
    cfg.route(
        "/api/admin/transactions/{gid}/diagram",
        web::get().to(diagram),
    );
    cfg.route(
        "/api/admin/transactions/{gid}/events",
        web::get().to(events),
    );
    cfg.service(
        web::scope("/api/dtmsvr")
            .route("/newGid", web::get().to(new_gid))
            .route("/prepare", web::post().to(prepare))
            .route("/registerBranch", web::post().to(register_branch))
            .route("/registerTccBranch", web::post().to(register_tcc_branch))
            .route("/reportTry", web::post().to(report_try))
            .route("/submit", web::post().to(submit))
            .route("/abort", web::post().to(abort))
            .route("/query", web::get().to(query))
            .route("/all", web::get().to(all)),
    );
}

type Result<T> = std::result::Result<T, CoordinatorError>;

/// The answer of `query`: the transaction and its branch ops (Confirm and Cancel of each
/// branch, in registration order).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct QueryAnswer {
    /// The transaction.
    pub transaction: TransGlobal,
    /// Its Confirm and Cancel ops.
    pub branches: Vec<BranchOp>,
}

/// The answer of `all`: one page, newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AllAnswer {
    /// The page.
    pub transactions: Vec<TransGlobal>,
    /// Pass it back as `position` for the next page; empty on the last page.
    pub next_position: String,
}

/// The answer of `GET /api/admin/transactions/{gid}/events`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventsAnswer {
    /// The global transaction id.
    pub gid: String,
    /// Its event log, in the order recorded.
    pub events: Vec<events::Event>,
}

/// The answers of `registerBranch` and `registerTccBranch` besides [`JsonBodyErrors`].
#[derive(utoipa::IntoResponses)]
pub enum RegisterAnswers {
    /// Registered (or already registered with the same URLs and data).
    #[response(status = 200)]
    Registered(CoordinatorAnswer),
    /// Unknown gid, not `prepared`, or the branch is registered with other URLs or data.
    #[response(status = 409)]
    Conflict(CoordinatorAnswer),
}

/// The answers of `submit` and `abort` besides [`JsonBodyErrors`].
#[derive(utoipa::IntoResponses)]
pub enum FinishAnswers {
    /// Submitted or aborted; with `wait_result`, the second phase finished and `status` is
    /// final.
    #[response(status = 200)]
    Done(CoordinatorAnswer),
    /// Unknown gid, or a status that forbids it (`error` = `conflict`); or, with `wait_result`,
    /// the second phase did not finish within the wait (`error` = `not_finished`, with `gid` and
    /// `status`: [`CoordinatorAnswer`]).
    #[response(status = 409)]
    Conflict(CoordinatorAnswer),
    /// With `wait_result`: a branch answered ONGOING, the second phase goes on ([`CoordinatorAnswer`]).
    #[response(status = 425)]
    Ongoing(CoordinatorAnswer),
}

/// The coordinator's DTM API (with its `reportTry` extension), the event log views and metrics.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(new_gid, prepare, register_branch, register_tcc_branch, report_try, submit, abort, query, all, diagram, events, metrics),
    components(schemas(CoordinatorAnswer, QueryAnswer, AllAnswer, EventsAnswer, PrepareBody, RegisterBody, FinishBody, TryReportBody, ErrorBody, GlobalStatus)),
    tags(
        (name = "dtm", description = "DTM's HTTP protocol (`/api/dtmsvr`): TCC global transactions and their branches"),
        (name = "admin", description = "Operators' view of transactions"),
        (name = "metrics", description = "Prometheus metrics"),
    ),
)]
pub struct DtmApi;

/// `GET /api/metrics`: Prometheus text format. The unfinished-transaction gauges are refreshed
/// first from the database (one grouped query); if it fails, the counters are still served and
/// the gauges keep their last values.
#[utoipa::path(get, path = "/api/metrics", tag = "metrics", responses(
    (status = 200, description = "Prometheus text exposition format 0.0.4", body = String, content_type = "text/plain"),
))]
async fn metrics(engine: web::Data<Engine>) -> HttpResponse {
    match blocking(engine.pool(), store::unfinished_summary).await {
        Ok(Ok(summary)) => engine.metrics().set_unfinished(&summary),
        Ok(Err(e)) => log::error!("metrics: reading the unfinished transactions failed: {e}"),
        Err(e) => log::error!("metrics: reading the unfinished transactions failed: {e}"),
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(engine.metrics().render())
}

fn success(gid: Option<String>, status: Option<GlobalStatus>) -> HttpResponse {
    HttpResponse::Ok().json(CoordinatorAnswer::success(gid, status))
}

fn check_gid(gid: &str) -> Result<()> {
    validate_gid(gid).map_err(|e| CoordinatorError::bad_request("invalid_gid", e.0))
}

fn check_trans_type(trans_type: &Option<String>) -> Result<()> {
    match trans_type.as_deref() {
        None | Some("tcc") => Ok(()),
        Some(other) => Err(CoordinatorError::bad_request(
            "unsupported_trans_type",
            format!("this coordinator runs TCC only; trans_type {other:?} is not supported"),
        )),
    }
}

/// `GET newGid`: `{"gid": "<32 hex digits>", "dtm_result": "SUCCESS"}`.
#[utoipa::path(get, path = "/api/dtmsvr/newGid", tag = "dtm", responses(
    (status = 200, description = "A new gid (32 hex digits)", body = CoordinatorAnswer),
))]
async fn new_gid() -> HttpResponse {
    success(Some(uuid::Uuid::new_v4().simple().to_string()), None)
}

/// Body of `prepare`: the gid and DTM's transaction options (seconds). Unknown fields that
/// DTM clients send (`custom_data`, `passthrough_headers`, ...) are ignored.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct PrepareBody {
    /// Global transaction id.
    #[schema(pattern = r"^[A-Za-z0-9_.:-]{1,128}$")]
    pub gid: String,
    /// Must be `tcc` when given.
    pub trans_type: Option<String>,
    /// Seconds; default `TIMEOUT_TO_FAIL`.
    pub timeout_to_fail: Option<i64>,
    /// Seconds; default `RETRY_INTERVAL`.
    pub retry_interval: Option<i64>,
    /// Seconds, at most 60; default `REQUEST_TIMEOUT`.
    #[schema(maximum = 60)]
    pub request_timeout: Option<i64>,
    /// Headers sent with every branch call.
    #[serde(default)]
    pub branch_headers: BTreeMap<String, String>,
}

/// The option `name` in seconds: `value`, or `default` when unset or 0; 400 `invalid_option`
/// outside 1..=`max`.
fn option_secs(name: &str, value: Option<i64>, default: u32, max: i64) -> Result<i32> {
    match value {
        None | Some(0) => Ok(default as i32),
        Some(v) if (1..=max).contains(&v) => Ok(v as i32),
        Some(v) => Err(CoordinatorError::bad_request(
            "invalid_option",
            format!("{name} must be between 1 and {max} seconds, got {v}"),
        )),
    }
}

#[utoipa::path(post, path = "/api/dtmsvr/prepare", tag = "dtm", request_body = PrepareBody, responses(
    (status = 200, description = "Prepared (or already prepared: idempotent)", body = CoordinatorAnswer),
    (status = 409, description = "The transaction exists in another status", body = CoordinatorAnswer),
    JsonBodyErrors,
))]
async fn prepare(
    body: JsonObject<PrepareBody>,
    defaults: web::Data<TransDefaults>,
    engine: web::Data<Engine>,
) -> Result<HttpResponse> {
    let body = body.0;
    check_gid(&body.gid)?;
    check_trans_type(&body.trans_type)?;
    for (name, value) in &body.branch_headers {
        let valid = reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_ok()
            && reqwest::header::HeaderValue::from_str(value).is_ok();
        if !valid {
            return Err(CoordinatorError::bad_request(
                "invalid_branch_headers",
                format!("branch header {name:?} is not a valid HTTP header"),
            ));
        }
    }
    let new = NewTrans {
        gid: body.gid.clone(),
        timeout_to_fail: option_secs(
            "timeout_to_fail",
            body.timeout_to_fail,
            defaults.timeout_to_fail,
            MAX_OPTION_SECS,
        )?,
        retry_interval: option_secs(
            "retry_interval",
            body.retry_interval,
            defaults.retry_interval,
            MAX_OPTION_SECS,
        )?,
        request_timeout: option_secs(
            "request_timeout",
            body.request_timeout,
            defaults.request_timeout,
            MAX_REQUEST_TIMEOUT_SECS,
        )?,
        branch_headers: serde_json::to_string(&body.branch_headers)
            .expect("a string map serializes"),
    };
    match blocking(engine.pool(), move |conn| store::prepare(conn, &new)).await?? {
        PrepareOutcome::Created => {
            log::info!("gid={} branch_id=- op=- prepared", body.gid);
            Ok(success(Some(body.gid), None))
        }
        PrepareOutcome::AlreadyPrepared => Ok(success(Some(body.gid), None)),
        PrepareOutcome::Conflict(status) => Err(CoordinatorError::Conflict(format!(
            "global transaction {} is already {status}; it cannot be prepared again",
            body.gid
        ))),
        PrepareOutcome::Used => Err(CoordinatorError::Conflict(format!(
            "gid {} was used by a global transaction that has finished and was deleted by \
             retention; a gid is used once",
            body.gid
        ))),
    }
}

/// Body of `registerBranch`: DTM's flat map of strings. `status` (sent by DTM clients as
/// `prepared`) and other keys are ignored.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct RegisterBody {
    /// Global transaction id.
    #[schema(pattern = r"^[A-Za-z0-9_.:-]{1,128}$")]
    pub gid: String,
    /// Must be `tcc` when given.
    pub trans_type: Option<String>,
    /// The branch id the AP chose ("01", "02", ...).
    #[schema(pattern = r"^[A-Za-z0-9_.:-]{1,64}$")]
    pub branch_id: String,
    /// The branch data: the body Confirm and Cancel receive, stored raw.
    #[serde(default)]
    pub data: String,
    /// The Confirm URL (http or https).
    pub confirm: String,
    /// The Cancel URL (http or https).
    pub cancel: String,
    /// Extension of this project (DTM ignores it): Try reports of earlier branches, carried here
    /// instead of a `reportTry` request each. A string holding a JSON array of objects shaped
    /// as the body of `reportTry` ([`TryReportBody`]), because DTM's `registerBranch` body is a
    /// flat map of strings. Best-effort: reports that do not parse or check are dropped (logged),
    /// never failing the registration; reports of unregistered branches are dropped.
    pub try_reports: Option<String>,
}

fn check_url(name: &str, value: &str) -> Result<()> {
    // The URL is stored as given, and Postgres text cannot hold a NUL character.
    match url::Url::parse(value) {
        Ok(u)
            if matches!(u.scheme(), "http" | "https")
                && u.host().is_some()
                && !value.contains('\0') =>
        {
            Ok(())
        }
        _ => Err(CoordinatorError::bad_request(
            "invalid_url",
            format!("{name} must be an absolute http(s) URL"),
        )),
    }
}

/// Refuses a URL whose host is not on the allowlist: 400 `url_not_allowed`.
fn check_allowed(name: &str, value: &str, hosts: &BranchHosts) -> Result<()> {
    let host = url::Url::parse(value)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default();
    if hosts.allows(&host) {
        return Ok(());
    }
    Err(CoordinatorError::bad_request(
        "url_not_allowed",
        format!(
            "{name}: host {:?} is not on this coordinator's branch host allowlist \
             (BRANCH_HOST_ALLOWLIST)",
            host.chars().take(64).collect::<String>()
        ),
    ))
}

#[utoipa::path(post, path = "/api/dtmsvr/registerBranch", tag = "dtm", request_body = RegisterBody,
    description = "Registers a TCC branch's Confirm and Cancel URLs (host on `BRANCH_HOST_ALLOWLIST`, else 400 `url_not_allowed`) and data, while the transaction is `prepared`.",
    responses(RegisterAnswers, JsonBodyErrors))]
async fn register_branch(
    body: JsonObject<RegisterBody>,
    hosts: web::Data<BranchHosts>,
    engine: web::Data<Engine>,
) -> Result<HttpResponse> {
    let body = body.0;
    check_gid(&body.gid)?;
    check_trans_type(&body.trans_type)?;
    validate_branch_id(&body.branch_id)
        .map_err(|e| CoordinatorError::bad_request("invalid_branch_id", e.0))?;
    check_url("confirm", &body.confirm)?;
    check_url("cancel", &body.cancel)?;
    check_allowed("confirm", &body.confirm, &hosts)?;
    check_allowed("cancel", &body.cancel, &hosts)?;
    if body.data.contains('\0') {
        return Err(CoordinatorError::bad_request(
            "invalid_data",
            "data must not contain NUL characters (it is stored as text and sent as the body of Confirm and Cancel)",
        ));
    }
    let new = NewBranch {
        try_reports: carried_reports(&body.gid, body.try_reports),
        gid: body.gid.clone(),
        branch_id: body.branch_id.clone(),
        data: body.data,
        confirm: body.confirm,
        cancel: body.cancel,
    };
    let (gid, branch_id) = (body.gid, body.branch_id);
    match blocking(engine.pool(), move |conn| store::register_branch(conn, &new)).await?? {
        RegisterOutcome::Registered => {
            log::info!("gid={gid} branch_id={branch_id} op=- registered");
            Ok(success(None, None))
        }
        RegisterOutcome::AlreadyRegistered => Ok(success(None, None)),
        RegisterOutcome::UnknownGid => Err(CoordinatorError::Conflict(format!(
            "no global transaction {gid}; prepare it first"
        ))),
        RegisterOutcome::NotPrepared(status) => Err(CoordinatorError::Conflict(format!(
            "global transaction {gid} is {status}; branches can only be registered while it is prepared"
        ))),
        RegisterOutcome::Mismatch => Err(CoordinatorError::Conflict(format!(
            "branch {branch_id} of {gid} is already registered with other URLs or data"
        ))),
    }
}

/// `POST registerTccBranch`: the same as [`register_branch`] (DTM's clients use either name).
#[utoipa::path(post, path = "/api/dtmsvr/registerTccBranch", tag = "dtm", request_body = RegisterBody,
    description = "The same as `registerBranch`: DTM's clients use either name.",
    responses(RegisterAnswers, JsonBodyErrors))]
async fn register_tcc_branch(
    body: JsonObject<RegisterBody>,
    hosts: web::Data<BranchHosts>,
    engine: web::Data<Engine>,
) -> Result<HttpResponse> {
    register_branch(body, hosts, engine).await
}

/// Body of `submit` and `abort`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct FinishBody {
    /// Global transaction id.
    #[schema(pattern = r"^[A-Za-z0-9_.:-]{1,128}$")]
    pub gid: String,
    /// Must be `tcc` when given.
    pub trans_type: Option<String>,
    /// Answer only when the second phase finished or `request_timeout` passed.
    #[serde(default)]
    pub wait_result: bool,
    /// `abort` only: why the AP rolls back; stored (at most 1024 characters) and shown by `query`.
    pub rollback_reason: Option<String>,
    /// Extension of this project: Try reports not yet sent, as in [`RegisterBody::try_reports`];
    /// recorded before the transition.
    pub try_reports: Option<String>,
}

#[utoipa::path(post, path = "/api/dtmsvr/submit", tag = "dtm", request_body = FinishBody,
    description = "Phase two: Confirm every branch. An unknown gid is a 409 (DTM would create an empty transaction).",
    responses(FinishAnswers, JsonBodyErrors))]
async fn submit(body: JsonObject<FinishBody>, engine: web::Data<Engine>) -> Result<HttpResponse> {
    finish(body.0, engine.get_ref().clone(), GlobalStatus::Submitted).await
}

#[utoipa::path(post, path = "/api/dtmsvr/abort", tag = "dtm", request_body = FinishBody,
    description = "Phase two: Cancel every registered branch, the last registered first.",
    responses(FinishAnswers, JsonBodyErrors))]
async fn abort(body: JsonObject<FinishBody>, engine: web::Data<Engine>) -> Result<HttpResponse> {
    finish(body.0, engine.get_ref().clone(), GlobalStatus::Aborting).await
}

/// `submit` (`phase` = submitted) or `abort` (`phase` = aborting): the transition, then the
/// second phase, waited for when `wait_result`.
async fn finish(body: FinishBody, engine: Engine, phase: GlobalStatus) -> Result<HttpResponse> {
    check_gid(&body.gid)?;
    check_trans_type(&body.trans_type)?;
    let gid = body.gid.clone();
    let reason: String = body
        .rollback_reason
        .unwrap_or_default()
        .chars()
        .filter(|&c| c != '\0')
        .take(MAX_REASON_LEN)
        .collect();
    let reports = carried_reports(&gid, body.try_reports);
    let (transition, trans, pass) = begin(&engine, &gid, phase, reason, reports).await?;
    if let Some(refusal) = refusal(&gid, phase, transition) {
        return Err(refusal);
    }
    if let Transition::AlreadyThere(status) = transition {
        if status.is_final() {
            return Ok(success(Some(gid), Some(status)));
        }
    }
    let trans =
        trans.ok_or_else(|| CoordinatorError::NotFound(format!("no global transaction {gid}")))?;
    // The wait of `wait_result` is measured from here, the pass included. Without a pass
    // (another worker holds the lease) that worker finishes it; `wait_result` polls.
    let started = tokio::time::Instant::now();
    if !body.wait_result {
        return Ok(success(Some(gid), Some(phase)));
    }
    match wait_final(&engine, &gid, trans.request_timeout, started, pass, phase).await? {
        Waited::Final(status) => Ok(success(Some(gid), Some(status))),
        Waited::NotFinished {
            status,
            ongoing,
            why,
        } => Err(CoordinatorError::NotFinished {
            message: format!("global transaction {gid} is {status}: {why}"),
            gid,
            status,
            ongoing,
        }),
    }
}

/// The transition of `submit`/`abort`, the claim of the second phase and the start of its first
/// pass (one commit: [`store::begin_second_phase`]), then the pass itself, in a task of their
/// own: the handler only waits for them, so an AP that hangs up while the commit is in flight
/// cannot leave a claimed pass unrun. Returns the transition, the transaction after it, and the
/// pass's task when this request claimed one.
async fn begin(
    engine: &Engine,
    gid: &str,
    phase: GlobalStatus,
    reason: String,
    reports: Vec<TryReport>,
) -> Result<(
    Transition,
    Option<TransGlobal>,
    Option<tokio::task::JoinHandle<PassEnd>>,
)> {
    let (engine, gid) = (engine.clone(), gid.to_owned());
    let begun = tokio::spawn(async move {
        let owner = engine.new_token();
        let (g, o, lease) = (gid.clone(), owner.clone(), engine.lease_secs());
        let start = blocking(engine.pool(), move |conn| {
            store::begin_second_phase(conn, &g, phase, &reason, &o, lease, &reports)
        })
        .await??;
        if start.transition == Transition::Changed {
            log::info!("gid={gid} branch_id=- op=- prepared -> {phase}");
        }
        let pass = match (start.pass, start.trans.clone()) {
            (Some(pass), Some(trans)) => Some(tokio::spawn(async move {
                engine
                    .run_claimed(trans, owner, pass)
                    .await
                    .unwrap_or_else(|e| {
                        log::error!("gid={gid} branch_id=- op=- second phase pass failed: {e}");
                        PassEnd::Yielded
                    })
            })),
            _ => None,
        };
        Ok::<_, CoordinatorError>((start.transition, start.trans, pass))
    });
    begun
        .await
        .map_err(|e| CoordinatorError::Unavailable(format!("the submit task ended: {e}")))?
}

/// The 409 of a `submit` (`phase` = submitted) or `abort` the state machine refused: an unknown
/// gid, or a transaction in the other branch of the state machine.
fn refusal(gid: &str, phase: GlobalStatus, transition: Transition) -> Option<CoordinatorError> {
    let verb = match phase {
        GlobalStatus::Submitted => "submitted",
        _ => "aborted",
    };
    match transition {
        Transition::Unknown => Some(CoordinatorError::Conflict(format!(
            "no global transaction {gid}; nothing to be {verb}"
        ))),
        Transition::Refused(status) => Some(CoordinatorError::Conflict(format!(
            "global transaction {gid} is {status}; it cannot be {verb}"
        ))),
        Transition::Changed | Transition::AlreadyThere(_) => None,
    }
}

/// What the wait of `wait_result` saw.
#[derive(Debug)]
enum Waited {
    /// The transaction reached this final status.
    Final(GlobalStatus),
    /// It did not finish: a retry is scheduled, or the wait ran out.
    NotFinished {
        /// The status seen last (`submitted` or `aborting`).
        status: GlobalStatus,
        /// The branch that held it up answered ONGOING.
        ongoing: bool,
        /// Why, for the caller.
        why: String,
    },
}

/// Waits for `pass` (if this request runs one), then polls `gid`, until its status is final or
/// its `request_timeout` (seconds) has passed since `started` (the pass is not cancelled; it goes
/// on in its task). When the pass itself finished the transaction, its final status is the
/// answer, with no read; when it scheduled a retry, the wait ends at once: the next attempt is
/// not due before the backoff, so waiting longer could only run out. `seen` is the status before
/// any read.
async fn wait_final(
    engine: &Engine,
    gid: &str,
    request_timeout: i32,
    started: tokio::time::Instant,
    pass: Option<tokio::task::JoinHandle<PassEnd>>,
    seen: GlobalStatus,
) -> Result<Waited> {
    let deadline = started + Duration::from_secs(request_timeout.max(1) as u64);
    if let Some(pass) = pass {
        match tokio::time::timeout_at(deadline, pass).await {
            Ok(Ok(PassEnd::Finished(end))) => return Ok(Waited::Final(end)),
            Ok(Ok(PassEnd::RetryScheduled {
                branch_id,
                op,
                outcome,
                retry_in,
            })) => {
                return Ok(Waited::NotFinished {
                    status: seen,
                    ongoing: outcome == BranchOutcome::Ongoing,
                    why: format!(
                        "the {op} of branch {branch_id} answered {}; the coordinator retries it in {:.1} s",
                        crate::engine::describe(&outcome).chars().take(300).collect::<String>(),
                        retry_in.as_secs_f64()
                    ),
                })
            }
            _ => {}
        }
    }
    let g = gid.to_owned();
    let mut status = blocking(engine.pool(), move |conn| store::status_of(conn, &g))
        .await??
        .unwrap_or(seen);
    while !status.is_final() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let g = gid.to_owned();
        status = blocking(engine.pool(), move |conn| store::status_of(conn, &g))
            .await??
            .unwrap_or(status);
    }
    if status.is_final() {
        return Ok(Waited::Final(status));
    }
    Ok(Waited::NotFinished {
        status,
        ongoing: false,
        why: format!(
            "the second phase did not finish within request_timeout ({request_timeout} s); the coordinator goes on driving it"
        ),
    })
}

/// Body of `POST /api/dtmsvr/reportTry`, an extension of this project (DTM has no such call):
/// the AP's client reports one Try call it made, after reading its answer, so that the
/// transaction's diagram shows the Try as it happened.
///
/// ```json
/// {"gid": "4d3c...", "branch_id": "01", "url": "http://127.0.0.1:8081/api/TransOutTry",
///  "outcome": "success", "http_status": 200, "latency_ms": 3, "message": null}
/// ```
///
/// * `gid`, `branch_id`: as in `registerBranch` (same validation); the branch must be registered
///   (the client registers before it tries), else `409`; an unknown gid is `409` too.
/// * `url`: the Try URL called, absolute http(s); its last path segment names the service.
/// * `outcome`: `success`, `failure` (409/FAILURE), `ongoing` (425/ONGOING) or `error` (anything
///   else, no answer included), as [`tcc::protocol::BranchOutcome`] reads the answer.
/// * `http_status` (optional): the answer's status, 100..=599; absent when none was read.
/// * `latency_ms`: milliseconds from sending the Try to reading its answer (or giving up), at
///   most one day.
/// * `message` (optional): the branch's message or the AP's error text; cut to 1024 characters.
///
/// Answers `200 {"dtm_result":"SUCCESS"}`; malformed input is `400 {"error","message"}` (`error`
/// = `invalid_gid`, `invalid_branch_id`, `invalid_url`, `invalid_outcome`, `invalid_http_status`,
/// `invalid_latency`), or a JSON extractor error for a body that does not parse. Reports are
/// accepted in any status of the transaction and repeated reports are all kept (the diagram draws
/// the first). Reporting is best-effort for the client: a refused report never fails its branch.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct TryReportBody {
    /// Global transaction id.
    #[schema(pattern = r"^[A-Za-z0-9_.:-]{1,128}$")]
    pub gid: String,
    /// The branch whose Try was called.
    #[schema(pattern = r"^[A-Za-z0-9_.:-]{1,64}$")]
    pub branch_id: String,
    /// The Try URL.
    pub url: String,
    /// `success`, `failure`, `ongoing` or `error`.
    pub outcome: String,
    /// HTTP status of the Try's answer, if one was read.
    pub http_status: Option<u16>,
    /// Milliseconds the Try took at the AP.
    pub latency_ms: u64,
    /// The branch's message or the AP's error.
    pub message: Option<String>,
}

/// Checks a [`TryReportBody`] and turns it into what [`store::record_try`] stores.
fn check_try_report(body: TryReportBody) -> Result<TryReport> {
    check_gid(&body.gid)?;
    validate_branch_id(&body.branch_id)
        .map_err(|e| CoordinatorError::bad_request("invalid_branch_id", e.0))?;
    check_url("url", &body.url)?;
    if !["success", "failure", "ongoing", "error"].contains(&body.outcome.as_str()) {
        return Err(CoordinatorError::bad_request(
            "invalid_outcome",
            "outcome must be success, failure, ongoing or error",
        ));
    }
    if let Some(status) = body.http_status {
        if !(100..=599).contains(&status) {
            return Err(CoordinatorError::bad_request(
                "invalid_http_status",
                format!("http_status must be an HTTP status code (100-599), got {status}"),
            ));
        }
    }
    if body.latency_ms > MAX_REPORTED_LATENCY_MS {
        return Err(CoordinatorError::bad_request(
            "invalid_latency",
            format!("latency_ms must be at most {MAX_REPORTED_LATENCY_MS} (one day)"),
        ));
    }
    Ok(TryReport {
        gid: body.gid,
        branch_id: body.branch_id,
        url: body.url,
        outcome: body.outcome,
        http_status: body.http_status.map(i32::from),
        latency_ms: body.latency_ms as i32,
        message: body
            .message
            .map(|m| {
                m.chars()
                    .filter(|&c| c != '\0')
                    .take(MAX_REASON_LEN)
                    .collect::<String>()
            })
            .filter(|m| !m.is_empty()),
    })
}

/// Most Try reports one call may carry; more are dropped (a TCC transaction has a few branches).
const MAX_CARRIED_REPORTS: usize = 64;

/// The Try reports a `registerBranch`, `submit` or `abort` of `gid` carries in `try_reports`
/// ([`RegisterBody::try_reports`]), checked as `reportTry` checks one. Best-effort, like the
/// reports themselves: what does not parse, names another gid or fails a check is dropped with
/// a warning, and never fails the call that carries it.
fn carried_reports(gid: &str, try_reports: Option<String>) -> Vec<TryReport> {
    let Some(text) = try_reports.filter(|t| !t.is_empty()) else {
        return Vec::new();
    };
    let bodies: Vec<TryReportBody> = match serde_json::from_str(&text) {
        Ok(bodies) => bodies,
        Err(e) => {
            log::warn!("gid={gid} branch_id=- op=try carried try_reports dropped: not a JSON array of reports ({e})");
            return Vec::new();
        }
    };
    bodies
        .into_iter()
        .take(MAX_CARRIED_REPORTS)
        .filter(|body| body.gid == gid)
        .filter_map(|body| {
            let branch_id = body.branch_id.chars().take(64).collect::<String>();
            check_try_report(body)
                .map_err(|e| {
                    log::warn!(
                        "gid={gid} branch_id={branch_id} op=try carried Try report dropped: {e}"
                    )
                })
                .ok()
        })
        .collect()
}

/// `POST reportTry`: records a Try report (see [`TryReportBody`]).
#[utoipa::path(post, path = "/api/dtmsvr/reportTry", tag = "dtm", request_body = TryReportBody,
    description = "Extension of this project: the AP's client reports a Try it made, for the diagrams.",
    responses(
    (status = 200, description = "Recorded", body = CoordinatorAnswer),
    (status = 409, description = "Unknown gid, or the branch is not registered", body = CoordinatorAnswer),
    JsonBodyErrors,
))]
async fn report_try(
    body: JsonObject<TryReportBody>,
    engine: web::Data<Engine>,
) -> Result<HttpResponse> {
    let report = check_try_report(body.0)?;
    let (gid, branch_id) = (report.gid.clone(), report.branch_id.clone());
    match blocking(engine.pool(), move |conn| store::record_try(conn, &report)).await?? {
        Ok(()) => Ok(success(None, None)),
        Err(TryReportRefusal::UnknownGid) => Err(CoordinatorError::Conflict(format!(
            "no global transaction {gid}; nothing to report a Try for"
        ))),
        Err(TryReportRefusal::UnknownBranch) => Err(CoordinatorError::Conflict(format!(
            "branch {branch_id} of {gid} is not registered; register it before its Try"
        ))),
    }
}

/// The event log of `gid`, or 404 when no such transaction exists (a transaction created before
/// the event log existed has an empty one).
async fn load_events(engine: &Engine, gid: String) -> Result<Vec<events::Event>> {
    check_gid(&gid)?;
    let g = gid.clone();
    let found = blocking(engine.pool(), move |conn| {
        Ok::<_, diesel::result::Error>(match store::status_of(conn, &g)? {
            Some(_) => Some(events::load(conn, &g)?),
            None => None,
        })
    })
    .await??;
    found.ok_or_else(|| CoordinatorError::NotFound(format!("no global transaction {gid}")))
}

/// `GET /api/admin/transactions/{gid}/diagram`: `text/plain` Mermaid `sequenceDiagram` of the
/// transaction as it happened ([`crate::diagram`]), drawn from its event log. `404 {"error":
/// "not_found"}` for an unknown gid, `400` for a malformed one.
#[utoipa::path(get, path = "/api/admin/transactions/{gid}/diagram", tag = "admin", params(("gid" = String, Path, description = "The global transaction id")), responses(
    (status = 200, description = "Mermaid `sequenceDiagram` text of what happened", body = String, content_type = "text/plain"),
    (status = 400, description = "`invalid_gid`", body = ErrorBody),
    (status = 404, description = "No such transaction", body = ErrorBody),
    (status = 503, description = "The database is unavailable; retry later", body = ErrorBody),
))]
async fn diagram(gid: web::Path<String>, engine: web::Data<Engine>) -> Result<HttpResponse> {
    let gid = gid.into_inner();
    let events = load_events(&engine, gid.clone()).await?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(crate::diagram::render(&gid, &events)))
}

/// `GET /api/admin/transactions/{gid}/events`: `{"gid": "...", "events": [...]}`, the event log in
/// order, each event as [`events::Event`] serializes it: `id`, `gid`, `kind`, `actor`, `status`,
/// `branch_id`, `op`, `target`, `url`, `outcome`, `http_status`, `latency_ms`, `attempt`,
/// `retry_in_ms`, `detail` (null when absent) and `create_time` (RFC 3339, milliseconds).
/// `404` for an unknown gid.
#[utoipa::path(get, path = "/api/admin/transactions/{gid}/events", tag = "admin", params(("gid" = String, Path, description = "The global transaction id")), responses(
    (status = 200, description = "The event log", body = EventsAnswer),
    (status = 400, description = "`invalid_gid`", body = ErrorBody),
    (status = 404, description = "No such transaction", body = ErrorBody),
    (status = 503, description = "The database is unavailable; retry later", body = ErrorBody),
))]
async fn events(gid: web::Path<String>, engine: web::Data<Engine>) -> Result<HttpResponse> {
    let gid = gid.into_inner();
    let events = load_events(&engine, gid.clone()).await?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(EventsAnswer { gid, events }))
}

/// Query of `query`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct QueryParams {
    /// Global transaction id.
    #[param(pattern = r"^[A-Za-z0-9_.:-]{1,128}$")]
    pub gid: String,
}

/// `GET query?gid=`: the transaction and its branch ops; `404 {"error": "unknown_gid"}` for a gid
/// it does not know, `404 {"error": "gid_deleted"}` for one whose transaction retention deleted
/// (DTM answers `200 {"transaction": null}` for both; a gid-specific code lets an RM tell this
/// answer from the route-404 of a wrong `DTM_URL`).
#[utoipa::path(get, path = "/api/dtmsvr/query", tag = "dtm", params(QueryParams), responses(
    (status = 200, description = "The transaction and its branch ops", body = QueryAnswer),
    (status = 400, description = "Malformed query or `invalid_gid`", body = ErrorBody),
    (status = 404, description = "`unknown_gid`: no such transaction; `gid_deleted`: retention deleted it", body = ErrorBody),
    (status = 503, description = "The database is unavailable; retry later", body = ErrorBody),
))]
async fn query(params: web::Query<QueryParams>, engine: web::Data<Engine>) -> Result<HttpResponse> {
    let gid = params.into_inner().gid;
    check_gid(&gid)?;
    let g = gid.clone();
    let (found, deleted) = blocking(engine.pool(), move |conn| {
        let found = store::find(conn, &g)?;
        let deleted = found.is_none() && store::is_deleted(conn, &g)?;
        Ok::<_, diesel::result::Error>((found, deleted))
    })
    .await??;
    match found {
        Some((transaction, branches)) => Ok(HttpResponse::Ok().json(QueryAnswer {
            transaction,
            branches,
        })),
        None if deleted => Err(CoordinatorError::GidDeleted(format!(
            "global transaction {gid} finished and was deleted by retention"
        ))),
        None => Err(CoordinatorError::UnknownGid(format!(
            "no global transaction {gid}"
        ))),
    }
}

/// Query of `all`: DTM's filters and keyset paging, newest first. A parameter DTM's `all` does
/// not know is refused (400 `invalid_query`, naming it) rather than ignored: an ignored filter
/// would answer unrelated transactions as if they matched.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AllParams {
    /// Only the transaction with this gid (DTM then ignores the other filters; so does this).
    pub gid: Option<String>,
    /// Only transactions in this status.
    pub status: Option<String>,
    /// Only transactions of this type (DTM's name); `tcc` is the only one here.
    #[serde(rename = "transType")]
    #[param(rename = "transType")]
    pub trans_type: Option<String>,
    /// Only transactions created at or after this instant, Unix milliseconds (DTM's name).
    #[serde(rename = "createTimeStart")]
    #[param(rename = "createTimeStart")]
    pub create_time_start: Option<String>,
    /// Only transactions created at or before this instant, Unix milliseconds (DTM's name).
    #[serde(rename = "createTimeEnd")]
    #[param(rename = "createTimeEnd")]
    pub create_time_end: Option<String>,
    /// The `next_position` of the previous page; empty for the first page.
    pub position: Option<String>,
    /// Page size, 1..=1000, default 100.
    pub limit: Option<i64>,
}

/// `GET all`: one page of transactions, newest first.
#[utoipa::path(get, path = "/api/dtmsvr/all", tag = "dtm", params(AllParams), responses(
    (status = 200, description = "One page, newest first", body = AllAnswer),
    (status = 400, description = "`invalid_gid`, `invalid_status`, `invalid_time`, `invalid_position`, `invalid_limit`, or `invalid_query` (a parameter `all` does not support)", body = ErrorBody),
    (status = 503, description = "The database is unavailable; retry later", body = ErrorBody),
))]
async fn all(params: web::Query<AllParams>, engine: web::Data<Engine>) -> Result<HttpResponse> {
    let params = params.into_inner();
    let filter = all_filter(&params)?;
    let limit = params.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(CoordinatorError::bad_request(
            "invalid_limit",
            format!("limit must be between 1 and {MAX_PAGE}"),
        ));
    }
    let page = blocking(engine.pool(), move |conn| store::list(conn, &filter, limit)).await??;
    let next_position = if page.len() as i64 == limit {
        page.last().map(|t| t.id.to_string()).unwrap_or_default()
    } else {
        String::new()
    };
    Ok(HttpResponse::Ok().json(AllAnswer {
        transactions: page,
        next_position,
    }))
}

/// The [`store::TransFilter`] of `all`'s parameters (empty values are absent, as in DTM).
fn all_filter(params: &AllParams) -> Result<store::TransFilter> {
    let given = |v: &Option<String>| v.as_deref().filter(|v| !v.is_empty()).map(str::to_owned);
    if let Some(gid) = given(&params.gid) {
        check_gid(&gid)?;
        return Ok(store::TransFilter {
            gid: Some(gid),
            ..store::TransFilter::default()
        });
    }
    let statuses = match given(&params.status) {
        None => vec![],
        Some(s) => vec![s
            .parse::<GlobalStatus>()
            .map_err(|e| CoordinatorError::bad_request("invalid_status", e.0))?],
    };
    let before_id = match given(&params.position) {
        None => None,
        Some(p) => Some(p.parse::<i64>().map_err(|_| {
            CoordinatorError::bad_request(
                "invalid_position",
                "position must be the next_position of a previous page",
            )
        })?),
    };
    Ok(store::TransFilter {
        trans_type: given(&params.trans_type),
        statuses,
        created_since: unix_millis("createTimeStart", &params.create_time_start)?,
        created_until: unix_millis("createTimeEnd", &params.create_time_end)?,
        before_id,
        ..store::TransFilter::default()
    })
}

/// A time given as Unix milliseconds, as DTM's `all` takes it; absent or empty: `None`;
/// 400 `invalid_time` otherwise.
fn unix_millis(
    name: &str,
    value: &Option<String>,
) -> Result<Option<chrono::DateTime<chrono::Utc>>> {
    let Some(value) = value.as_deref().filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    value
        .parse::<i64>()
        .ok()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map(Some)
        .ok_or_else(|| {
            CoordinatorError::bad_request(
                "invalid_time",
                format!("{name} must be a time in Unix milliseconds"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tcc::protocol::TransType;

    #[test]
    fn unset_or_zero_options_take_the_default_and_out_of_range_ones_are_refused() {
        let max = MAX_OPTION_SECS;
        assert_eq!(option_secs("x", None, 35, max).unwrap(), 35);
        assert_eq!(option_secs("x", Some(0), 35, max).unwrap(), 35);
        assert_eq!(option_secs("x", Some(5), 35, max).unwrap(), 5);
        assert!(option_secs("x", Some(-1), 35, max).is_err());
        assert!(option_secs("x", Some(max + 1), 35, max).is_err());
        let timeout = MAX_REQUEST_TIMEOUT_SECS;
        assert_eq!(
            option_secs("request_timeout", Some(60), 3, timeout).unwrap(),
            60
        );
        assert!(option_secs("request_timeout", Some(61), 3, timeout).is_err());
    }

    #[test]
    fn only_absolute_http_urls_are_accepted_as_branch_targets() {
        assert!(check_url("confirm", "http://localhost:8081/api/TransOutConfirm").is_ok());
        assert!(check_url("confirm", "https://bank.example/api/x").is_ok());
        for bad in [
            "",
            "/api/x",
            "ftp://host/x",
            "file:///etc/passwd",
            "http//x",
        ] {
            assert!(check_url("confirm", bad).is_err(), "{bad}");
        }
    }

    fn report(outcome: &str) -> TryReportBody {
        TryReportBody {
            gid: "g1".into(),
            branch_id: "01".into(),
            url: "http://127.0.0.1:8081/api/TransOutTry".into(),
            outcome: outcome.into(),
            http_status: Some(200),
            latency_ms: 3,
            message: Some(String::new()),
        }
    }

    #[test]
    fn a_try_report_is_checked_field_by_field() {
        let ok = check_try_report(report("success")).unwrap();
        assert_eq!(ok.message, None);
        assert_eq!(ok.http_status, Some(200));
        let refused = |body: TryReportBody| match check_try_report(body) {
            Err(CoordinatorError::BadRequest { code, .. }) => code,
            other => panic!("{other:?}"),
        };
        assert_eq!(refused(report("maybe")), "invalid_outcome");
        assert_eq!(
            refused(TryReportBody {
                gid: "bad gid".into(),
                ..report("success")
            }),
            "invalid_gid"
        );
        assert_eq!(
            refused(TryReportBody {
                branch_id: String::new(),
                ..report("success")
            }),
            "invalid_branch_id"
        );
        assert_eq!(
            refused(TryReportBody {
                url: "/api/TransOutTry".into(),
                ..report("success")
            }),
            "invalid_url"
        );
        assert_eq!(
            refused(TryReportBody {
                http_status: Some(42),
                ..report("error")
            }),
            "invalid_http_status"
        );
        assert_eq!(
            refused(TryReportBody {
                latency_ms: MAX_REPORTED_LATENCY_MS + 1,
                ..report("error")
            }),
            "invalid_latency"
        );
        let long = check_try_report(TryReportBody {
            message: Some("m".repeat(MAX_REASON_LEN + 5)),
            ..report("failure")
        })
        .unwrap();
        assert_eq!(long.message.unwrap().len(), MAX_REASON_LEN);
    }

    #[test]
    fn only_tcc_is_accepted_as_trans_type() {
        assert!(check_trans_type(&None).is_ok());
        assert!(check_trans_type(&Some(TransType::Tcc.as_str().into())).is_ok());
        assert!(check_trans_type(&Some("saga".into())).is_err());
    }
}
