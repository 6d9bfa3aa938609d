//! The operator's view of the coordinator: a JSON admin API under
//! `/api/admin` and a web page at `/admin` that lists transactions, shows one with its branches,
//! events and sequence diagram, and offers DTM's two admin actions.
//!
//! Routes (all JSON errors are `{"error": "<code>", "message": "..."}`):
//!
//! * `GET /api/admin/transactions?gid_prefix=&status=&older_than_seconds=&newer_than_seconds=&position=&limit=`:
//!   `{"transactions": [<transaction>...], "next_position": "<id>" | "", "now": <time>}`, newest
//!   first, keyset paged like DTM's `all` (pass `next_position` back as `position`; empty means
//!   last page). `status` is one of the five statuses or `unfinished` (prepared, submitted or
//!   aborting); the ages are whole seconds since `create_time`; `limit` 1..=1000, default 100.
//! * `GET /api/admin/transactions/{gid}`: `{"now", "transaction": {..., "next_retry_time",
//!   "timeout_time"}, "branches": [{"branch_id", "data", "ops": [{"op", "url", "status",
//!   "attempts", "last_result", "create_time", "update_time", "finish_time",
//!   "next_attempt_time"}]}], "actions": {"retry_now", "force_stop", "token_required"},
//!   "links": {"diagram", "events"}}`; 404 for an unknown gid.
//! * `POST /api/admin/transactions/{gid}/retry-now`: a `submitted` or `aborting` transaction
//!   becomes due now with its backoff step reset ([`store::retry_now`]), and a pass starts at
//!   once; `{"gid", "action": "retry-now", "from", "transaction"}`; 409 in any other status.
//! * `POST /api/admin/transactions/{gid}/force-stop`: an unfinished transaction becomes `failed`
//!   **without any Confirm or Cancel being called** ([`store::force_stop`]): what its Trys
//!   reserved stays held in the RMs. For operators who repaired the RMs by hand, never routine.
//!   `{"gid", "action": "force-stop", "from", "transaction", "warning"}`; 409 when already final,
//!   or while a second-phase pass holds its lease (a pass sends all its calls before it records
//!   them: it could not be stopped half-way).
//! * `GET /admin`: the page ([`assets`]); `GET /admin/assets/...`: its script, style sheet and the
//!   vendored Mermaid renderer.
//!
//! The two actions require `Authorization: Bearer <ADMIN_TOKEN>` when `ADMIN_TOKEN` is set
//! ([`auth`]); without one they are open and the coordinator warns at start. The page also calls
//! `GET /api/admin/transactions/{gid}/diagram` (Mermaid text) and `.../events` (JSON), which are
//! served by the event-log part of the coordinator, not by this module.
//!
//! Routes are registered one by one, not as a `web::scope("/api/admin")`: an actix scope answers
//! 404 for any path under its prefix it does not know, which would hide the diagram and events
//! routes registered elsewhere.

pub mod assets;
pub mod auth;

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Utc;
use serde::Deserialize;
use serde_json::{json, Value};
use service_kit::db::blocking;
use service_kit::openapi::ErrorBody;
use tcc::protocol::{validate_gid, GlobalStatus, Op};

/// The admin token, a setting ([`crate::configuration`]); re-exported here beside what checks it.
pub use crate::configuration::AdminToken;

use crate::api::{DEFAULT_PAGE, MAX_PAGE};
use crate::configuration::Settings;
use crate::engine::Engine;
use crate::error::CoordinatorError;
use crate::store::{self, AdminOutcome, BranchOp, TransFilter, TransGlobal};

/// Largest accepted age filter, seconds (ten years): larger values are typos, and chrono's
/// arithmetic must not overflow.
pub const MAX_AGE_SECONDS: i64 = 10 * 365 * 86_400;

/// What the admin routes need besides the engine: the token of the actions, if one is set.
#[derive(Debug, Clone)]
pub struct AdminAccess {
    token: Option<AdminToken>,
}

impl AdminAccess {
    /// Takes the token from `settings`, and logs a warning when there is none: then anyone who
    /// reaches the coordinator's port may force-stop transactions.
    pub fn from_settings(settings: &Settings) -> AdminAccess {
        if settings.admin_token.is_none() {
            log::warn!(
                "ADMIN_TOKEN is not set: the admin actions (retry-now, force-stop under /api/admin) \
                 are open to anyone who reaches this port; set ADMIN_TOKEN outside a demo"
            );
        }
        AdminAccess {
            token: settings.admin_token.clone(),
        }
    }
}

/// Mounts the admin API, the page and its assets. `access` carries the token the actions check.
pub fn configure(cfg: &mut web::ServiceConfig, access: AdminAccess) {
    cfg.app_data(web::Data::new(access))
        .route("/api/admin/transactions", web::get().to(list))
        .route("/api/admin/transactions/{gid}", web::get().to(detail))
        .route(
            "/api/admin/transactions/{gid}/retry-now",
            web::post().to(retry_now),
        )
        .route(
            "/api/admin/transactions/{gid}/force-stop",
            web::post().to(force_stop),
        );
    assets::configure(cfg);
}

type Result<T> = std::result::Result<T, CoordinatorError>;

/// The answer of `GET /api/admin/transactions`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct AdminListAnswer {
    /// The page, newest first.
    pub transactions: Vec<TransGlobal>,
    /// Pass it back as `position` for the next page; empty on the last page.
    pub next_position: String,
    /// The coordinator's clock, for the page's ages.
    pub now: chrono::DateTime<Utc>,
}

/// The admin API (the page and its assets are not described: they are not an API).
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(list, detail, retry_now, force_stop),
    components(schemas(AdminListAnswer)),
    modifiers(&BearerToken),
)]
pub struct AdminApi;

/// The error answers of the two actions.
#[derive(utoipa::IntoResponses)]
pub enum ActionErrors {
    /// `invalid_gid`.
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// `unauthorized`: `ADMIN_TOKEN` is set and the bearer token is missing or wrong.
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// `cross_origin`: sent by a browser from a page of another origin.
    #[response(status = 403)]
    CrossOrigin(ErrorBody),
    /// `not_found`: no such transaction.
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// The transaction's status forbids the action.
    #[response(status = 409)]
    Conflict(tcc::protocol::CoordinatorAnswer),
    /// `unavailable`: the database is unavailable; retry later.
    #[response(status = 503)]
    Unavailable(ErrorBody),
}

/// Declares the `Authorization: Bearer <ADMIN_TOKEN>` scheme of the actions.
struct BearerToken;

impl utoipa::Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Query of `GET /api/admin/transactions`. Empty values count as absent, so the page's form can
/// send every field.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only gids starting with this (a workshop participant's `ana-`): 1 to 64 ASCII letters,
    /// digits and `-_.:`; empty: any.
    pub gid_prefix: Option<String>,
    /// `prepared`, `submitted`, `aborting`, `succeed`, `failed`, or `unfinished` (the first
    /// three); empty: any.
    pub status: Option<String>,
    /// Only transactions created more than this many seconds ago.
    pub older_than_seconds: Option<String>,
    /// Only transactions created at most this many seconds ago.
    pub newer_than_seconds: Option<String>,
    /// The `next_position` of the previous page; empty for the first page.
    pub position: Option<String>,
    /// Page size, 1..=1000, default 100.
    pub limit: Option<String>,
}

fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

fn parse_statuses(value: &Option<String>) -> Result<Vec<GlobalStatus>> {
    match non_empty(value) {
        None => Ok(Vec::new()),
        Some("unfinished") => Ok(vec![
            GlobalStatus::Prepared,
            GlobalStatus::Submitted,
            GlobalStatus::Aborting,
        ]),
        Some(s) => s.parse::<GlobalStatus>().map(|s| vec![s]).map_err(|e| {
            CoordinatorError::bad_request("invalid_status", format!("{}; or `unfinished`", e.0))
        }),
    }
}

fn parse_age(name: &str, value: &Option<String>) -> Result<Option<i64>> {
    let Some(raw) = non_empty(value) else {
        return Ok(None);
    };
    match raw.parse::<i64>() {
        Ok(secs) if (0..=MAX_AGE_SECONDS).contains(&secs) => Ok(Some(secs)),
        _ => Err(CoordinatorError::bad_request(
            "invalid_age",
            format!("{name} must be whole seconds between 0 and {MAX_AGE_SECONDS}"),
        )),
    }
}

fn parse_gid_prefix(value: &Option<String>) -> Result<Option<String>> {
    let Some(prefix) = non_empty(value) else {
        return Ok(None);
    };
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b"-_.:".contains(&b);
    if prefix.len() > 64 || !prefix.bytes().all(allowed) {
        return Err(CoordinatorError::bad_request(
            "invalid_gid_prefix",
            "gid_prefix must be 1 to 64 ASCII letters, digits, '-', '_', '.' or ':'",
        ));
    }
    Ok(Some(prefix.to_owned()))
}

fn parse_limit(value: &Option<String>) -> Result<i64> {
    match non_empty(value) {
        None => Ok(DEFAULT_PAGE),
        Some(raw) => match raw.parse::<i64>() {
            Ok(limit) if (1..=MAX_PAGE).contains(&limit) => Ok(limit),
            _ => Err(CoordinatorError::bad_request(
                "invalid_limit",
                format!("limit must be between 1 and {MAX_PAGE}"),
            )),
        },
    }
}

fn parse_position(value: &Option<String>) -> Result<Option<i64>> {
    match non_empty(value) {
        None => Ok(None),
        Some(raw) => raw.parse::<i64>().map(Some).map_err(|_| {
            CoordinatorError::bad_request(
                "invalid_position",
                "position must be the next_position of a previous page",
            )
        }),
    }
}

/// `GET /api/admin/transactions`: see the module docs.
#[utoipa::path(get, path = "/api/admin/transactions", tag = "admin", params(ListParams), responses(
    (status = 200, description = "One page, newest first", body = AdminListAnswer),
    (status = 400, description = "`invalid_gid_prefix`, `invalid_status`, `invalid_age`, `invalid_position`, `invalid_limit` or a malformed query", body = ErrorBody),
    (status = 503, description = "The database is unavailable; retry later", body = ErrorBody),
))]
async fn list(params: web::Query<ListParams>, engine: web::Data<Engine>) -> Result<HttpResponse> {
    let params = params.into_inner();
    let now = Utc::now();
    let ago = |secs: i64| now - chrono::Duration::seconds(secs);
    let filter = TransFilter {
        statuses: parse_statuses(&params.status)?,
        gid_prefix: parse_gid_prefix(&params.gid_prefix)?,
        created_before: parse_age("older_than_seconds", &params.older_than_seconds)?.map(ago),
        created_since: parse_age("newer_than_seconds", &params.newer_than_seconds)?.map(ago),
        before_id: parse_position(&params.position)?,
        ..TransFilter::default()
    };
    let limit = parse_limit(&params.limit)?;
    let page = blocking(engine.pool(), move |conn| store::list(conn, &filter, limit)).await??;
    let next_position = match page.last() {
        Some(last) if page.len() as i64 == limit => last.id.to_string(),
        _ => String::new(),
    };
    Ok(HttpResponse::Ok().json(AdminListAnswer {
        transactions: page,
        next_position,
        now,
    }))
}

fn check_gid(gid: &str) -> Result<()> {
    validate_gid(gid).map_err(|e| CoordinatorError::bad_request("invalid_gid", e.0))
}

fn not_found(gid: &str) -> CoordinatorError {
    CoordinatorError::NotFound(format!("no global transaction {gid}"))
}

/// The op kind the current phase of `status` calls, if it is in a second phase.
fn active_op(status: GlobalStatus) -> Option<Op> {
    match status {
        GlobalStatus::Submitted => Some(Op::Confirm),
        GlobalStatus::Aborting => Some(Op::Cancel),
        _ => None,
    }
}

/// The transaction as the admin API shows it: its row plus when the worker looks at it next,
/// split by meaning (`next_retry_time` in a second phase, `timeout_time` while prepared).
fn transaction_json(trans: &TransGlobal) -> Value {
    let status = trans.global_status();
    let mut value = serde_json::to_value(trans).expect("a transaction serializes");
    let in_phase = active_op(status).is_some();
    value["next_retry_time"] = json!(in_phase.then_some(trans.next_cron_time));
    value["timeout_time"] =
        json!((status == GlobalStatus::Prepared).then_some(trans.next_cron_time));
    value
}

/// The branches of `ops` (in registration order), each with its Confirm and Cancel. An op the
/// current phase still has to call is retried at the transaction's next cron time.
fn branches_json(trans: &TransGlobal, ops: &[BranchOp]) -> Vec<Value> {
    let active = active_op(trans.global_status());
    let mut branches: Vec<Value> = Vec::new();
    for op in ops {
        let pending = op.status == "prepared" && active.is_some_and(|a| a.as_str() == op.op);
        let op_json = json!({
            "op": op.op,
            "url": op.url,
            "status": op.status,
            "attempts": op.attempts,
            "last_result": op.last_result,
            "create_time": op.create_time,
            "update_time": op.update_time,
            "finish_time": op.finish_time,
            "next_attempt_time": pending.then_some(trans.next_cron_time),
        });
        match branches
            .iter_mut()
            .find(|b| b["branch_id"] == op.branch_id.as_str())
        {
            Some(branch) => branch["ops"]
                .as_array_mut()
                .expect("ops is an array")
                .push(op_json),
            None => branches.push(json!({
                "branch_id": op.branch_id,
                "data": op.data,
                "ops": [op_json],
            })),
        }
    }
    branches
}

/// `GET /api/admin/transactions/{gid}`: see the module docs.
#[utoipa::path(get, path = "/api/admin/transactions/{gid}", tag = "admin", params(("gid" = String, Path, description = "The global transaction id")), responses(
    (status = 200, description = "The transaction with its branches, the actions allowed and links (see the module docs of `coordinator::admin`)", body = Object),
    (status = 400, description = "`invalid_gid`", body = ErrorBody),
    (status = 404, description = "No such transaction", body = ErrorBody),
    (status = 503, description = "The database is unavailable; retry later", body = ErrorBody),
))]
async fn detail(
    gid: web::Path<String>,
    engine: web::Data<Engine>,
    access: web::Data<AdminAccess>,
) -> Result<HttpResponse> {
    let gid = gid.into_inner();
    check_gid(&gid)?;
    let g = gid.clone();
    let (trans, ops) = blocking(engine.pool(), move |conn| store::find(conn, &g))
        .await??
        .ok_or_else(|| not_found(&gid))?;
    let status = trans.global_status();
    Ok(HttpResponse::Ok().json(json!({
        "now": Utc::now(),
        "transaction": transaction_json(&trans),
        "branches": branches_json(&trans, &ops),
        "actions": {
            "retry_now": active_op(status).is_some(),
            "force_stop": !status.is_final(),
            "token_required": access.token.is_some(),
        },
        "links": {
            "diagram": format!("/api/admin/transactions/{gid}/diagram"),
            "events": format!("/api/admin/transactions/{gid}/events"),
        },
    })))
}

/// Which action a handler runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    RetryNow,
    ForceStop,
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Action::RetryNow => "retry-now",
            Action::ForceStop => "force-stop",
        }
    }
}

/// `POST /api/admin/transactions/{gid}/retry-now`: see the module docs.
#[utoipa::path(post, path = "/api/admin/transactions/{gid}/retry-now", tag = "admin", params(("gid" = String, Path, description = "The global transaction id")),
    security((), ("admin_token" = [])), responses(
    (status = 200, description = "Due now, backoff step reset: `{gid, action, from, transaction}`", body = Object),
    ActionErrors,
))]
async fn retry_now(
    req: HttpRequest,
    gid: web::Path<String>,
    engine: web::Data<Engine>,
    access: web::Data<AdminAccess>,
) -> Result<HttpResponse> {
    run_action(req, gid.into_inner(), &engine, &access, Action::RetryNow).await
}

/// `POST /api/admin/transactions/{gid}/force-stop`: see the module docs.
#[utoipa::path(post, path = "/api/admin/transactions/{gid}/force-stop", tag = "admin", params(("gid" = String, Path, description = "The global transaction id")),
    security((), ("admin_token" = [])), responses(
    (status = 200, description = "`failed` without any Confirm or Cancel: `{gid, action, from, transaction, warning}`", body = Object),
    ActionErrors,
))]
async fn force_stop(
    req: HttpRequest,
    gid: web::Path<String>,
    engine: web::Data<Engine>,
    access: web::Data<AdminAccess>,
) -> Result<HttpResponse> {
    run_action(req, gid.into_inner(), &engine, &access, Action::ForceStop).await
}

/// Authorization first (an unauthorized caller learns nothing, not even whether the gid
/// exists), then the compare-and-set in the store, then the log line and the answer.
async fn run_action(
    req: HttpRequest,
    gid: String,
    engine: &Engine,
    access: &AdminAccess,
    action: Action,
) -> Result<HttpResponse> {
    let logged_gid = if validate_gid(&gid).is_ok() {
        gid.as_str()
    } else {
        "-"
    };
    if let Err(refusal) = auth::authorize(&req, access.token.as_ref(), action.name(), logged_gid) {
        return Ok(*refusal);
    }
    check_gid(&gid)?;
    let g = gid.clone();
    let outcome = blocking(engine.pool(), move |conn| match action {
        Action::RetryNow => store::retry_now(conn, &g),
        Action::ForceStop => store::force_stop(conn, &g),
    })
    .await??;
    let peer = req.connection_info().peer_addr().unwrap_or("?").to_owned();
    let (from, trans) = match outcome {
        AdminOutcome::Unknown => return Err(not_found(&gid)),
        AdminOutcome::Refused(status) => {
            log::info!(
                "gid={gid} branch_id=- op=- admin {} refused: the transaction is {status}",
                action.name()
            );
            let allowed = match action {
                Action::RetryNow => "only a submitted or aborting transaction can be retried",
                Action::ForceStop => "only an unfinished transaction can be force-stopped",
            };
            return Err(CoordinatorError::Conflict(format!(
                "global transaction {gid} is {status}; {allowed}"
            )));
        }
        AdminOutcome::Leased(until) => {
            log::info!(
                "gid={gid} branch_id=- op=- admin {} refused: a second-phase pass holds the lease until {until}",
                action.name()
            );
            return Err(CoordinatorError::Conflict(format!(
                "global transaction {gid} has a second-phase pass running (lease held until {}); \
                 a pass sends all its calls before it records them, so force-stop it once the \
                 pass has ended",
                until.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            )));
        }
        AdminOutcome::Done { from, trans } => (from, trans),
    };
    let mut body = json!({
        "gid": gid,
        "action": action.name(),
        "from": from,
        "transaction": transaction_json(&trans),
    });
    match action {
        Action::RetryNow => {
            log::info!(
                "gid={gid} branch_id=- op={} admin retry-now from {peer}: {from}, due now, backoff step reset to {} s",
                active_op(from).map_or("-", Op::as_str),
                trans.retry_interval
            );
            // Due now for the worker anyway; this pass only saves up to one worker tick.
            let (engine, gid) = (engine.clone(), gid.clone());
            tokio::spawn(async move {
                if let Err(e) = engine.drive(&gid).await {
                    log::error!(
                        "gid={gid} branch_id=- op=- second phase pass after retry-now failed: {e}"
                    );
                }
            });
        }
        Action::ForceStop => {
            log::warn!(
                "gid={gid} branch_id=- op=- admin force-stop from {peer}: {from} -> failed without calling any \
                 Confirm or Cancel; reservations made by its Trys may still be held in the RMs"
            );
            body["warning"] = json!(
                "No Confirm or Cancel was called: frozen funds, holds or stock reservations made \
                 by this transaction's Trys may still be held in the RMs and must be released by hand"
            );
        }
    }
    Ok(HttpResponse::Ok().json(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_filter_takes_any_status_or_unfinished() {
        assert!(parse_statuses(&None).unwrap().is_empty());
        assert!(parse_statuses(&Some(String::new())).unwrap().is_empty());
        assert_eq!(
            parse_statuses(&Some("failed".into())).unwrap(),
            vec![GlobalStatus::Failed]
        );
        assert_eq!(parse_statuses(&Some("unfinished".into())).unwrap().len(), 3);
        assert!(parse_statuses(&Some("done".into())).is_err());
    }

    #[test]
    fn ages_and_limits_out_of_range_are_refused() {
        assert_eq!(parse_age("a", &Some("60".into())).unwrap(), Some(60));
        assert_eq!(parse_age("a", &Some(" ".into())).unwrap(), None);
        for bad in ["-1", "1.5", "x", "99999999999999"] {
            assert!(parse_age("a", &Some(bad.into())).is_err(), "{bad}");
        }
        assert_eq!(parse_limit(&None).unwrap(), DEFAULT_PAGE);
        assert!(parse_limit(&Some("0".into())).is_err());
        assert!(parse_limit(&Some((MAX_PAGE + 1).to_string())).is_err());
        assert!(parse_position(&Some("abc".into())).is_err());
    }
}
