//! Demo fault injection for the RMs, so every TCC failure case can be reproduced on demand: the
//! [`inject_faults`] middleware of every branch endpoint. A branch's data may carry
//! `"fault": {"try": "<spec>", "confirm": "<spec>", "cancel": "<spec>"}`; because the data is what
//! the AP registers with the TM, the TM's Confirm and Cancel calls carry the fault too.
//!
//! A `<spec>` is one of:
//!
//! | spec | effect |
//! |---|---|
//! | `failure` | a business refusal, 409 FAILURE, nothing done |
//! | `ongoing` | 425 ONGOING on every call, nothing done |
//! | `ongoing:N` | 425 ONGOING on the first N calls of this gid, branch and op, then normal |
//! | `error` | 500 on every call, nothing done |
//! | `error:N` | 500 on the first N calls of this gid, branch and op, then normal |
//! | `delay:MS` | wait MS milliseconds, then do the work and answer |
//! | `accepted:N` | `202 {"dtm_result":"SUCCESS"}` on the first N calls, nothing done, then normal |
//! | `redirect:N` | `307` to [`REDIRECT_LOCATION`] on the first N calls, nothing done, then normal |
//! | `delay:MS+error:N` | both: wait, then `error:N` (likewise `delay:MS+accepted:N`, `delay:MS+redirect:N`) |
//! | `pause` | hold the call before the work until `POST /api/paused/resume` ([`crate::pause`]) |
//! | `pause-after` | do the work, then hold the answer until resumed |
//!
//! A delay applies to every call of that phase, before the barrier: a Confirm or Cancel delayed
//! beyond the transaction's `request_timeout` times out on every attempt and never succeeds.
//!
//! `accepted:N` and `redirect:N` play an RM, or a proxy in front of it, that misbehaves: one that
//! accepts work it has not done, one that sends the caller elsewhere. DTM reads only exactly
//! `200` as a branch's success and follows no redirect, and so do the TM and the AP here: both
//! answers are transient errors, retried (Confirm, Cancel) or ending in an abort (Try). Were a
//! `202` read as success, the Confirm would never run and its funds would stay frozen.
//!
//! Every `:N` form counts calls in the RM's `fault_counters` table, so counts survive a restart
//! of the RM.
//!
//! The fault is read from the raw body leniently ([`faults_of`]): a body whose `fault` does not
//! parse carries none, and the handler then judges the body. With the setting
//! `FAULT_INJECTION=off` a Try carrying a fault is refused with `400 fault_injection_disabled`,
//! and a Confirm or Cancel ignores it (it carries the data of a Try refused that way, and must
//! still succeed).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderValue, LOCATION};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{web, HttpResponse, ResponseError};
use diesel::prelude::*;
use diesel_migrations::{embed_migrations, EmbeddedMigrations};
use serde::{Deserialize, Serialize};
use tcc::actix::{parse_branch_query, raw_body};
use tcc::protocol::{BranchQuery, BranchReply, Op};

use crate::db::{blocking, BlockingError, DbPool};
use crate::http::{error_response, is_json_object, payload_error};
use crate::pause::{PauseBoard, PauseStage, Resumed};

/// The `fault_counters` table's migration; RMs run it beside their own.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// Where a `redirect:N` fault sends the caller: a loopback address other than 127.0.0.1, on the
/// discard port, which the coordinator's default `BRANCH_HOST_ALLOWLIST` does not admit and
/// where nothing answers. Neither the TM nor the AP follows a redirect, so it is never called.
pub const REDIRECT_LOCATION: &str = "http://127.0.0.2:9/api/moved";

/// Longest delay accepted, in milliseconds: long enough for every timeout scenario, short enough
/// that a typo cannot park a worker for hours.
pub const MAX_DELAY_MS: u64 = 60_000;

diesel::table! {
    /// Calls per (gid, branch_id, op); see the migration.
    fault_counters (gid, branch_id, op) {
        /// Global transaction id.
        gid -> Text,
        /// Branch id.
        branch_id -> Text,
        /// try, confirm or cancel.
        op -> Text,
        /// Calls seen so far.
        calls -> Int4,
        /// Last call.
        updated_at -> Timestamptz,
    }
}

/// What a fault does once its delay (if any) has passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultAction {
    /// Only the delay.
    None,
    /// Hold the call (`pause`) or its answer (`pause-after`) until resumed ([`crate::pause`]).
    Pause(PauseStage),
    /// A business refusal (409).
    Failure,
    /// 425 ONGOING for the first `Some(n)` calls, or for every call with `None`.
    Ongoing(Option<u32>),
    /// 500 for the first `Some(n)` calls, or for every call with `None`.
    Error(Option<u32>),
    /// `202 {"dtm_result":"SUCCESS"}` for the first n calls, nothing done.
    Accepted(u32),
    /// `307` to [`REDIRECT_LOCATION`] for the first n calls, nothing done.
    Redirect(u32),
}

/// One parsed `<spec>` (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    /// Milliseconds to wait before anything else.
    pub delay_ms: u64,
    /// What happens after the delay.
    pub action: FaultAction,
}

/// A fault spec that does not parse; the message says which forms are accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid fault {spec:?}: {reason}; expected failure, ongoing, ongoing:N, error, error:N, accepted:N, redirect:N, pause, pause-after, delay:MS or delay:MS+ one of error:N, accepted:N, redirect:N")]
pub struct FaultParseError {
    /// The spec as given.
    pub spec: String,
    /// What is wrong with it.
    pub reason: String,
}

impl FromStr for Fault {
    type Err = FaultParseError;
    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let err = |reason: &str| FaultParseError {
            spec: spec.chars().take(64).collect(),
            reason: reason.into(),
        };
        let (delay_ms, rest) = match spec.strip_prefix("delay:") {
            Some(after) => {
                let (ms, rest) = after
                    .split_once('+')
                    .map_or((after, None), |(a, b)| (a, Some(b)));
                let ms: u64 = ms
                    .parse()
                    .map_err(|_| err("the delay must be whole milliseconds"))?;
                if ms > MAX_DELAY_MS {
                    return Err(err(&format!("the delay may be at most {MAX_DELAY_MS} ms")));
                }
                (ms, rest)
            }
            None => (0, Some(spec)),
        };
        let action = match rest {
            None => FaultAction::None,
            Some("failure") if delay_ms == 0 => FaultAction::Failure,
            Some("ongoing") if delay_ms == 0 => FaultAction::Ongoing(None),
            Some("error") if delay_ms == 0 => FaultAction::Error(None),
            Some("pause") if delay_ms == 0 => FaultAction::Pause(PauseStage::BeforeWork),
            Some("pause-after") if delay_ms == 0 => FaultAction::Pause(PauseStage::AfterWork),
            Some(other) => {
                let count = |n: &str, form: &str| -> Result<u32, FaultParseError> {
                    match n.parse::<u32>() {
                        Ok(0) => Err(err(&format!("N in {form}:N must be at least 1"))),
                        Ok(n) => Ok(n),
                        Err(_) => Err(err(&format!("N in {form}:N must be a whole number"))),
                    }
                };
                if let Some(n) = other.strip_prefix("error:") {
                    FaultAction::Error(Some(count(n, "error")?))
                } else if let Some(n) = other.strip_prefix("accepted:") {
                    FaultAction::Accepted(count(n, "accepted")?)
                } else if let Some(n) = other.strip_prefix("redirect:") {
                    FaultAction::Redirect(count(n, "redirect")?)
                } else if let Some(n) = other.strip_prefix("ongoing:").filter(|_| delay_ms == 0) {
                    FaultAction::Ongoing(Some(count(n, "ongoing")?))
                } else {
                    return Err(err("unknown fault"));
                }
            }
        };
        Ok(Fault { delay_ms, action })
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let action = match self.action {
            FaultAction::None => None,
            FaultAction::Failure => Some("failure".to_owned()),
            FaultAction::Ongoing(None) => Some("ongoing".to_owned()),
            FaultAction::Ongoing(Some(n)) => Some(format!("ongoing:{n}")),
            FaultAction::Error(None) => Some("error".to_owned()),
            FaultAction::Error(Some(n)) => Some(format!("error:{n}")),
            FaultAction::Accepted(n) => Some(format!("accepted:{n}")),
            FaultAction::Redirect(n) => Some(format!("redirect:{n}")),
            FaultAction::Pause(PauseStage::BeforeWork) => Some("pause".to_owned()),
            FaultAction::Pause(PauseStage::AfterWork) => Some("pause-after".to_owned()),
        };
        match (self.delay_ms, action) {
            (0, Some(a)) => f.write_str(&a),
            (ms, Some(a)) => write!(f, "delay:{ms}+{a}"),
            (ms, None) => write!(f, "delay:{ms}"),
        }
    }
}

impl Serialize for Fault {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Fault {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let spec = String::deserialize(d)?;
        spec.parse().map_err(serde::de::Error::custom)
    }
}

/// The faults of one branch, per op: the `fault` object of a branch's data.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BranchFaults {
    /// Applied to the Try call.
    #[serde(default, rename = "try", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "error:3")]
    pub try_: Option<Fault>,
    /// Applied to every Confirm call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "error:3")]
    pub confirm: Option<Fault>,
    /// Applied to every Cancel call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "error:3")]
    pub cancel: Option<Fault>,
}

impl BranchFaults {
    /// The fault for `op`, if any.
    pub fn for_op(&self, op: Op) -> Option<Fault> {
        match op {
            Op::Try => self.try_,
            Op::Confirm => self.confirm,
            Op::Cancel => self.cancel,
        }
    }

    /// `true` when no op has a fault.
    pub fn is_empty(&self) -> bool {
        self.try_.is_none() && self.confirm.is_none() && self.cancel.is_none()
    }
}

/// The `fault` of a branch call's raw `body`: the body's `fault` field when the body is a JSON
/// object whose `fault` parses, its other fields ignored; `None` otherwise (the handler judges
/// the body; a Confirm or Cancel never fails for it).
pub fn faults_of(body: &[u8]) -> Option<BranchFaults> {
    /// The one field read; unknown fields are ignored.
    #[derive(Deserialize)]
    struct FaultOnly {
        #[serde(default)]
        fault: Option<BranchFaults>,
    }
    // An object only: serde would also read a struct from a JSON array of its fields in order.
    if !is_json_object(body) {
        return None;
    }
    serde_json::from_slice::<FaultOnly>(body).ok()?.fault
}

/// The middleware of a branch endpoint serving `op` (`enabled`: the `FAULT_INJECTION` setting):
/// runs the call's fault for `op`, if any ([`inject`]), with the `web::Data<DbPool>` of the app
/// data, and answers for it, or hands the call on to the handler. A call whose query does not
/// parse, or names another op, goes on to the handler, whose extractor refuses it.
pub async fn inject_faults(
    op: Op,
    enabled: bool,
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let body = match raw_body(&mut req).await {
        Ok(body) => body,
        Err(e) => return Ok(req.error_response(payload_error(e))),
    };
    let query = parse_branch_query(req.query_string()).ok();
    let faults = faults_of(&body).filter(|f| !f.is_empty());
    let (Some(query), Some(faults)) = (query.filter(|q| q.op == op), faults) else {
        return Ok(next.call(req).await?.map_into_boxed_body());
    };
    if !enabled {
        if op == Op::Try {
            return Ok(req.error_response(InjectedFault::Disabled));
        }
        log::warn!(
            "gid={} branch_id={} op={op} fault injection is off: ignoring the body's fault",
            query.gid,
            query.branch_id
        );
        return Ok(next.call(req).await?.map_into_boxed_body());
    }
    let Some(pool) = req.app_data::<web::Data<DbPool>>().cloned() else {
        let e = actix_web::error::ErrorInternalServerError("no DbPool in the app data");
        return Ok(req.error_response(e));
    };
    let fault = match inject(&pool, &query, Some(&faults)).await {
        Ok(Injected::Proceed) => return Ok(next.call(req).await?.map_into_boxed_body()),
        Ok(Injected::Pause(stage)) => return paused(query, stage, req, next).await,
        Ok(Injected::Ongoing) => return Ok(req.into_response(BranchReply::Ongoing.to_response())),
        Ok(Injected::Refuse) => InjectedFault::Failure,
        Ok(Injected::Error) => InjectedFault::Error,
        Ok(Injected::Accepted) => InjectedFault::Accepted,
        Ok(Injected::Redirect) => InjectedFault::Redirect,
        Err(e) => InjectedFault::Uncounted(e),
    };
    Ok(req.error_response(fault))
}

/// A `pause` or `pause-after` call: held on the app data's [`PauseBoard`] before the handler
/// runs, or after it answered.
async fn paused(
    query: BranchQuery,
    stage: PauseStage,
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let Some(board) = req.app_data::<web::Data<PauseBoard>>().cloned() else {
        let e = actix_web::error::ErrorInternalServerError("no PauseBoard in the app data");
        return Ok(req.error_response(e));
    };
    let (gid, branch_id, op) = (&query.gid, &query.branch_id, query.op);
    let hold = || async {
        let resume = format!("POST /api/paused/resume?gid={gid}");
        log::info!("gid={gid} branch_id={branch_id} op={op} paused {stage}: {resume}");
        let how = match board.hold(&query, stage).await {
            Resumed::OnRequest => "on request",
            Resumed::ByItself => "by itself",
        };
        log::info!("gid={gid} branch_id={branch_id} op={op} resumed {how}");
    };
    match stage {
        PauseStage::BeforeWork => {
            hold().await;
            Ok(next.call(req).await?.map_into_boxed_body())
        }
        PauseStage::AfterWork => {
            let answered = next.call(req).await?.map_into_boxed_body();
            hold().await;
            Ok(answered)
        }
    }
}

/// What a fault answers instead of the handler ([`inject_faults`]). Nothing was done for it.
#[derive(Debug, thiserror::Error)]
pub enum InjectedFault {
    /// A Try's body carries a fault but `FAULT_INJECTION=off`: 400 `fault_injection_disabled`.
    #[error("the body carries a fault, but fault injection is off (FAULT_INJECTION=off)")]
    Disabled,
    /// An `error` fault fired: 500 `injected_error`.
    #[error("fault injection: this call fails on purpose")]
    Error,
    /// A `failure` fault fired: a business refusal, 409 FAILURE.
    #[error("fault injection: this branch refuses on purpose")]
    Failure,
    /// An `accepted:N` fault fired: `202 {"dtm_result":"SUCCESS"}`. Not an error to whoever
    /// reads only the body, which is the point: the TM and the AP read only exactly 200 as
    /// success (as DTM does), so they retry or abort.
    #[error("fault injection: accepted (202) without doing anything")]
    Accepted,
    /// A `redirect:N` fault fired: `307` with `Location:` [`REDIRECT_LOCATION`] and the JSON
    /// error body `injected_redirect`. Never followed by the TM or the AP.
    #[error("fault injection: redirected (307) without doing anything")]
    Redirect,
    /// The call count of a `:N` fault could not be kept: 503 `unavailable`.
    #[error("the fault counters could not be read: {0}")]
    Uncounted(BlockingError),
}

impl ResponseError for InjectedFault {
    fn status_code(&self) -> StatusCode {
        match self {
            InjectedFault::Disabled => StatusCode::BAD_REQUEST,
            InjectedFault::Error => StatusCode::INTERNAL_SERVER_ERROR,
            InjectedFault::Failure => StatusCode::CONFLICT,
            InjectedFault::Accepted => StatusCode::ACCEPTED,
            InjectedFault::Redirect => StatusCode::TEMPORARY_REDIRECT,
            InjectedFault::Uncounted(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        match self {
            InjectedFault::Disabled => {
                error_response(status, "fault_injection_disabled", self.to_string())
            }
            InjectedFault::Error => error_response(status, "injected_error", self.to_string()),
            InjectedFault::Failure => BranchReply::Failure(self.to_string()).to_response(),
            InjectedFault::Accepted => {
                let mut response = BranchReply::Success.to_response();
                *response.status_mut() = status;
                response
            }
            InjectedFault::Redirect => {
                let mut response = error_response(status, "injected_redirect", self.to_string());
                response
                    .headers_mut()
                    .insert(LOCATION, HeaderValue::from_static(REDIRECT_LOCATION));
                response
            }
            InjectedFault::Uncounted(_) => error_response(
                status,
                "unavailable",
                "the database is unavailable; retry later",
            ),
        }
    }
}

/// What the middleware does after the injector ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Injected {
    /// Do the real work.
    Proceed,
    /// Answer 409 FAILURE without doing anything.
    Refuse,
    /// Answer 425 without doing anything.
    Ongoing,
    /// Answer 500 without doing anything.
    Error,
    /// Answer `202 {"dtm_result":"SUCCESS"}` without doing anything.
    Accepted,
    /// Answer `307` to [`REDIRECT_LOCATION`] without doing anything.
    Redirect,
    /// Hold the call, before or after the work, on the [`PauseBoard`].
    Pause(PauseStage),
}

/// Runs the fault for this call, if any: counts the calls of the `:N` forms in the database,
/// logs one line saying whether the fault fires (`fault error:3, call 4 of 3: spent, none
/// injected`), waits its delay.
///
/// Errors only when the database could not be reached for the count.
pub async fn inject(
    pool: &DbPool,
    query: &BranchQuery,
    faults: Option<&BranchFaults>,
) -> Result<Injected, BlockingError> {
    let Some(fault) = faults.and_then(|f| f.for_op(query.op)) else {
        return Ok(Injected::Proceed);
    };
    let (gid, branch_id, op) = (&query.gid, &query.branch_id, query.op);
    // The `:N` forms count this call first, so that the one log line per call says whether the
    // fault fires: a call past N runs normally, and its line says so.
    let limit = match fault.action {
        FaultAction::Ongoing(Some(n))
        | FaultAction::Error(Some(n))
        | FaultAction::Accepted(n)
        | FaultAction::Redirect(n) => Some(n),
        _ => None,
    };
    let fires = match limit {
        Some(n) => {
            let (g, b) = (gid.clone(), branch_id.clone());
            let calls = blocking(pool, move |conn| count_call(conn, &g, &b, op)).await??;
            let fires = calls <= i64::from(n);
            let verdict = if fires {
                "injected"
            } else {
                "spent, none injected"
            };
            log::info!("gid={gid} branch_id={branch_id} op={op} fault {fault}, call {calls} of {n}: {verdict}");
            fires
        }
        None => {
            log::info!("gid={gid} branch_id={branch_id} op={op} fault {fault}: injected");
            true
        }
    };
    if fault.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(fault.delay_ms)).await;
    }
    Ok(match fault.action {
        _ if !fires => Injected::Proceed,
        FaultAction::None => Injected::Proceed,
        FaultAction::Pause(stage) => Injected::Pause(stage),
        FaultAction::Failure => Injected::Refuse,
        FaultAction::Ongoing(_) => Injected::Ongoing,
        FaultAction::Error(_) => Injected::Error,
        FaultAction::Accepted(_) => Injected::Accepted,
        FaultAction::Redirect(_) => Injected::Redirect,
    })
}

/// Adds one to the call count of (gid, branch_id, op) and returns the new count.
fn count_call(conn: &mut PgConnection, gid: &str, branch_id: &str, op: Op) -> QueryResult<i64> {
    use fault_counters::dsl;
    diesel::insert_into(dsl::fault_counters)
        .values((
            dsl::gid.eq(gid),
            dsl::branch_id.eq(branch_id),
            dsl::op.eq(op.as_str()),
            dsl::calls.eq(1),
        ))
        .on_conflict((dsl::gid, dsl::branch_id, dsl::op))
        .do_update()
        .set((
            dsl::calls.eq(dsl::calls + 1),
            dsl::updated_at.eq(diesel::dsl::now),
        ))
        .returning(dsl::calls)
        .get_result::<i32>(conn)
        .map(i64::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_spec_parses_and_prints_back() {
        for spec in [
            "failure",
            "ongoing",
            "ongoing:2",
            "error",
            "error:3",
            "delay:3000",
            "delay:3000+error:2",
            "accepted:2",
            "redirect:1",
            "delay:200+accepted:3",
            "delay:200+redirect:1",
            "pause",
            "pause-after",
        ] {
            let fault: Fault = spec.parse().unwrap();
            assert_eq!(fault.to_string(), spec);
        }
        assert_eq!(
            "delay:5+error:2".parse::<Fault>().unwrap(),
            Fault {
                delay_ms: 5,
                action: FaultAction::Error(Some(2))
            }
        );
        assert_eq!(
            "accepted:2".parse::<Fault>().unwrap().action,
            FaultAction::Accepted(2)
        );
        assert_eq!(
            "delay:7+redirect:3".parse::<Fault>().unwrap(),
            Fault {
                delay_ms: 7,
                action: FaultAction::Redirect(3)
            }
        );
    }

    #[test]
    fn malformed_specs_are_refused_with_the_accepted_forms() {
        for spec in [
            "",
            "fail",
            "ongoing:0",
            "delay:10+ongoing:1",
            "error:",
            "error:0",
            "error:-1",
            "delay:x",
            "delay:99999999",
            "delay:10+failure",
            "delay:10+",
            "error:1+delay:5",
            "accepted",
            "accepted:0",
            "accepted:x",
            "redirect",
            "redirect:0",
            "redirect:-2",
            "accepted:1+redirect:1",
            "delay:10+pause",
            "pause:1",
            "pause-before",
        ] {
            let err = spec.parse::<Fault>().unwrap_err();
            assert!(
                err.to_string().contains("expected failure"),
                "{spec}: {err}"
            );
        }
    }

    #[test]
    fn branch_faults_read_per_op_and_refuse_unknown_ops() {
        let f: BranchFaults =
            serde_json::from_str(r#"{"try":"failure","cancel":"error:2"}"#).unwrap();
        assert_eq!(f.for_op(Op::Try).unwrap().action, FaultAction::Failure);
        assert_eq!(f.for_op(Op::Confirm), None);
        assert!(serde_json::from_str::<BranchFaults>(r#"{"commit":"failure"}"#).is_err());
    }
}
