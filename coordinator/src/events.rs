//! The event log of each global transaction (`trans_event`,
//! docs/ARCHITECTURE.md#seeing-what-happened): every state change, every Confirm/Cancel call the TM made, and every Try the AP's client reported.
//!
//! * State changes (`prepared`, `submitted`, `aborting`, `succeed`, `failed`) and branch calls are
//!   written by [`crate::store`] in the same database transaction as the change
//!   they describe: a committed change always has its event, an event never describes a change
//!   that rolled back, and no extra commit is spent on the log. A Confirm/Cancel call leaves two
//!   events: `branch_calling` and `branch_called` (the recorded attempt). A second-phase pass
//!   records all its calls in one commit when it ends ([`crate::store::record_calls`], dated
//!   when each call was sent and answered); only the `branch_calling` of its first call (and of
//!   a call after a lease renewal) is written before the call, with the claim or the renewal, so
//!   that a pass cut short by a crash still shows.
//! * Try calls are made by the AP, not the TM: this project's client ([`tcc::client`]) reports
//!   each one, carried by its next `registerBranch`, `submit` or `abort` (`try_reports`) or,
//!   from a nested AP, through the extension endpoint `POST /api/dtmsvr/reportTry`
//!   ([`crate::api`], [`crate::store::record_try`]). DTM clients do not report;
//!   their diagrams say so.
//! * [`crate::diagram`] replays the log into a Mermaid sequence diagram; `GET
//!   /api/admin/transactions/{gid}/events` serves it as JSON.
//!
//! Events are deleted with their transaction by the retention job ([`crate::retention`],
//! [`crate::store::delete_finished_before`]).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, Utc};
use diesel::prelude::*;
use serde::{Serialize, Serializer};

use crate::schema::trans_event;

/// What an event records. Stored as its snake_case name in `trans_event.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// `prepare` created the global transaction (status `prepared`); `detail` holds its options.
    Prepared,
    /// `registerBranch` recorded a branch's Confirm and Cancel; `target` names its service and
    /// `detail` holds both URLs.
    BranchRegistered,
    /// The AP's client reported one Try call: `branch_id`, `url`, `outcome`, `http_status`,
    /// `latency_ms`, and the branch's message in `detail`.
    TryReported,
    /// The AP submitted: `prepared -> submitted`.
    Submitted,
    /// `prepared -> aborting`, by the AP (`actor` = `ap`, its reason in `detail`) or by the TM
    /// because `timeout_to_fail` passed (`actor` = `timeout`, `Timeout after N seconds`).
    Aborting,
    /// The TM sends a Confirm or Cancel (`op`, `branch_id`, `target`, `url`). The first call of a
    /// pass has it written before the call, with the claim or lease renewal (no commit of its
    /// own); later calls have it written with the pass's record, dated when the call was sent.
    /// Followed by the call's [`EventKind::BranchCalled`]; without one, the answer was never
    /// recorded (the coordinator stopped during the pass, or the pass is still in flight).
    BranchCalling,
    /// One Confirm or Cancel call by the TM: `op`, `branch_id`, `target`, `url`, `outcome`,
    /// `http_status` (absent when no answer was read), `latency_ms`, `attempt`, and the
    /// branch's message or the error in `detail`.
    BranchCalled,
    /// The call before did not succeed: the next attempt is due in `retry_in_ms`; `detail` says
    /// why and carries the alert once the op has failed `ALERT_AFTER_ATTEMPTS` times.
    RetryScheduled,
    /// `submitted -> succeed`: every Confirm succeeded.
    Succeed,
    /// `aborting -> failed`: every Cancel succeeded.
    Failed,
    /// An operator stopped the transaction from the admin API (`actor` = `admin`); `status` is
    /// the status it was left in (`failed`), `detail` what was interrupted.
    ForceStopped,
    /// An operator asked from the admin API for the pending Confirms/Cancels to be retried now
    /// (`actor` = `admin`), instead of after the backoff; `status` is the unchanged status.
    RetryRequested,
}

impl EventKind {
    /// Every kind, in the order a transaction usually meets them.
    pub const ALL: [EventKind; 12] = [
        EventKind::Prepared,
        EventKind::BranchRegistered,
        EventKind::TryReported,
        EventKind::Submitted,
        EventKind::Aborting,
        EventKind::BranchCalling,
        EventKind::BranchCalled,
        EventKind::RetryScheduled,
        EventKind::Succeed,
        EventKind::Failed,
        EventKind::ForceStopped,
        EventKind::RetryRequested,
    ];

    /// The stored name: `prepared`, `branch_registered`, `try_reported`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Prepared => "prepared",
            EventKind::BranchRegistered => "branch_registered",
            EventKind::TryReported => "try_reported",
            EventKind::Submitted => "submitted",
            EventKind::Aborting => "aborting",
            EventKind::BranchCalling => "branch_calling",
            EventKind::BranchCalled => "branch_called",
            EventKind::RetryScheduled => "retry_scheduled",
            EventKind::Succeed => "succeed",
            EventKind::Failed => "failed",
            EventKind::ForceStopped => "force_stopped",
            EventKind::RetryRequested => "retry_requested",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown event kind {s:?}"))
    }
}

/// Who caused an event. Stored in `trans_event.actor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Actor {
    /// The AP: `prepare`, `registerBranch`, `submit`, `abort`, and its Try reports.
    Ap,
    /// The coordinator's second phase: Confirm/Cancel calls, retries, the final status.
    Tm,
    /// The coordinator, because `timeout_to_fail` passed while the transaction was `prepared`.
    Timeout,
    /// An operator, through the admin API.
    Admin,
}

impl Actor {
    /// The stored name: `ap`, `tm`, `timeout` or `admin`.
    pub fn as_str(self) -> &'static str {
        match self {
            Actor::Ap => "ap",
            Actor::Tm => "tm",
            Actor::Timeout => "timeout",
            Actor::Admin => "admin",
        }
    }
}

/// One row of `trans_event`, serialized as the JSON of `GET
/// /api/admin/transactions/{gid}/events` (absent values are `null`; `create_time` is RFC 3339
/// UTC with milliseconds, e.g. `2026-11-21T06:30:00.123Z`).
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Serialize, utoipa::ToSchema)]
#[diesel(table_name = trans_event)]
pub struct Event {
    /// Position in the log: ascending = the order the events were recorded in.
    pub id: i64,
    /// Global transaction id.
    pub gid: String,
    /// One of [`EventKind`]'s names.
    pub kind: String,
    /// One of [`Actor`]'s names.
    pub actor: String,
    /// Global status after a state change; `None` for calls and reports.
    pub status: Option<String>,
    /// The branch a registration, call, report or retry is about.
    pub branch_id: Option<String>,
    /// `try`, `confirm` or `cancel`.
    pub op: Option<String>,
    /// The branch's service (`TransOut`, ...; see [`service_name`]).
    pub target: Option<String>,
    /// The URL called.
    pub url: Option<String>,
    /// `success`, `failure`, `ongoing` or `error` (as [`tcc::protocol::BranchOutcome::kind`]).
    pub outcome: Option<String>,
    /// HTTP status of the answer; `None` when none was read.
    pub http_status: Option<i32>,
    /// Milliseconds the call took.
    pub latency_ms: Option<i32>,
    /// Attempt number of a Confirm/Cancel call, from 1.
    pub attempt: Option<i32>,
    /// Milliseconds until the next attempt (`retry_scheduled`).
    pub retry_in_ms: Option<i32>,
    /// Free text: reason, options, URLs, message or error (see [`EventKind`]).
    pub detail: Option<String>,
    /// When it was recorded.
    #[serde(serialize_with = "rfc3339_millis")]
    #[schema(value_type = String, format = DateTime)]
    pub create_time: DateTime<Utc>,
}

impl Event {
    /// The kind as an enum (`None` for a name this build does not know).
    pub fn event_kind(&self) -> Option<EventKind> {
        self.kind.parse().ok()
    }
}

fn rfc3339_millis<S: Serializer>(time: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&time.to_rfc3339_opts(SecondsFormat::Millis, true))
}

/// An event to insert with [`insert`], for callers that already run a database transaction
/// (branch registration, operator actions). Unset fields are stored as NULL.
#[derive(Debug, Clone, Default, Insertable)]
#[diesel(table_name = trans_event)]
pub struct NewEvent {
    /// Global transaction id (of an existing transaction: callers insert events in the database
    /// transaction that changed it).
    pub gid: String,
    /// [`EventKind::as_str`].
    pub kind: String,
    /// [`Actor::as_str`].
    pub actor: String,
    /// Global status after the change, for state changes.
    pub status: Option<String>,
    /// Branch id, for branch events.
    pub branch_id: Option<String>,
    /// `try`, `confirm` or `cancel`.
    pub op: Option<String>,
    /// Service name ([`service_name`]).
    pub target: Option<String>,
    /// URL called.
    pub url: Option<String>,
    /// Outcome of a call.
    pub outcome: Option<String>,
    /// HTTP status of a call's answer.
    pub http_status: Option<i32>,
    /// Milliseconds a call took.
    pub latency_ms: Option<i32>,
    /// Attempt number of a call.
    pub attempt: Option<i32>,
    /// Milliseconds until the next attempt.
    pub retry_in_ms: Option<i32>,
    /// Free text.
    pub detail: Option<String>,
}

impl NewEvent {
    /// An event of `kind` caused by `actor` about `gid`, every other field unset.
    pub fn new(gid: &str, kind: EventKind, actor: Actor) -> NewEvent {
        NewEvent {
            gid: gid.to_owned(),
            kind: kind.as_str().to_owned(),
            actor: actor.as_str().to_owned(),
            ..NewEvent::default()
        }
    }
}

/// Inserts one event. Call it inside the database transaction of the change it records (e.g. an
/// operator's force stop: `NewEvent::new(gid, EventKind::ForceStopped, Actor::Admin)` with
/// `status` and `detail` set).
pub fn insert(conn: &mut PgConnection, event: &NewEvent) -> QueryResult<()> {
    diesel::insert_into(trans_event::table)
        .values(event)
        .execute(conn)
        .map(|_| ())
}

/// Every event of `gid`, in the order they were recorded.
pub fn load(conn: &mut PgConnection, gid: &str) -> QueryResult<Vec<Event>> {
    use trans_event::dsl as e;
    e::trans_event
        .filter(e::gid.eq(gid))
        .order(e::id.asc())
        .select(Event::as_select())
        .load(conn)
}

/// One Try call as the AP's client reported it (`POST /api/dtmsvr/reportTry`), validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TryReport {
    /// Global transaction id.
    pub gid: String,
    /// The branch whose Try was called.
    pub branch_id: String,
    /// The Try URL.
    pub url: String,
    /// `success`, `failure`, `ongoing` or `error`.
    pub outcome: String,
    /// HTTP status of the answer, if one was read.
    pub http_status: Option<i32>,
    /// Milliseconds the call took at the AP.
    pub latency_ms: i32,
    /// The branch's message or the AP's error text.
    pub message: Option<String>,
}

impl TryReport {
    /// Its `try_reported` event (actor `ap`, op `try`), the service named from its URL.
    pub fn event(&self) -> NewEvent {
        NewEvent {
            branch_id: Some(self.branch_id.clone()),
            op: Some("try".to_owned()),
            target: Some(service_name(&self.url)),
            url: Some(self.url.clone()),
            outcome: Some(self.outcome.clone()),
            http_status: self.http_status,
            latency_ms: Some(self.latency_ms),
            detail: self.message.clone(),
            ..NewEvent::new(&self.gid, EventKind::TryReported, Actor::Ap)
        }
    }
}

/// Why [`crate::store::record_try`] recorded nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TryReportRefusal {
    /// No global transaction has this gid.
    UnknownGid,
    /// The transaction exists but has no branch with this id: a Try is called only after its
    /// branch was registered.
    UnknownBranch,
}

/// Longest service name kept, in characters.
pub const MAX_SERVICE_NAME: usize = 64;

/// A readable name for the service behind a branch URL: the last non-empty path segment without
/// its `Try`/`Confirm`/`Cancel` suffix (any case, with a `-`, `_` or `.` before it), e.g.
/// `http://127.0.0.1:8081/api/TransOutConfirm` -> `TransOut`,
/// `http://bank/api/trans-in-cancel` -> `trans-in`; when nothing is left (`.../api/confirm`),
/// the URL's `host:port`. What is not a URL at all is named `unknown`.
pub fn service_name(url: &str) -> String {
    let Ok(parsed) = url::Url::parse(url) else {
        return "unknown".to_owned();
    };
    let segment = parsed
        .path_segments()
        .and_then(|mut segments| segments.rfind(|s| !s.is_empty()));
    if let Some(segment) = segment {
        let lower = segment.to_ascii_lowercase();
        let stem = ["confirm", "cancel", "try"]
            .into_iter()
            .find(|suffix| lower.ends_with(suffix))
            .map_or(segment, |suffix| &segment[..segment.len() - suffix.len()])
            .trim_end_matches(['-', '_', '.']);
        if stem.chars().any(|c| c.is_ascii_alphanumeric()) {
            return stem.chars().take(MAX_SERVICE_NAME).collect();
        }
    }
    match (parsed.host_str(), parsed.port_or_known_default()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_owned(),
        _ => "unknown".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_is_named_after_its_url_without_the_op_suffix() {
        for (url, name) in [
            ("http://127.0.0.1:8081/api/TransOutConfirm", "TransOut"),
            ("http://127.0.0.1:8081/api/TransOutCancel", "TransOut"),
            ("http://127.0.0.1:8082/api/TransInTry", "TransIn"),
            (
                "http://127.0.0.1:8080/api/TransInNestedTry",
                "TransInNested",
            ),
            ("http://stock:8083/api/StockConfirm/", "Stock"),
            ("http://bank/api/trans-in-cancel", "trans-in"),
            ("http://bank/api/busi/TransOut", "TransOut"),
            ("http://bank/api/TransOutConfirm?x=1", "TransOut"),
        ] {
            assert_eq!(service_name(url), name, "{url}");
        }
    }

    #[test]
    fn a_url_without_a_usable_path_is_named_by_host_and_port() {
        assert_eq!(
            service_name("http://10.0.0.7:9000/api/confirm"),
            "10.0.0.7:9000"
        );
        assert_eq!(service_name("http://bank.example/"), "bank.example:80");
        assert_eq!(
            service_name("https://bank.example/_cancel"),
            "bank.example:443"
        );
        assert_eq!(service_name("not a url"), "unknown");
    }

    #[test]
    fn every_kind_round_trips_through_its_stored_name() {
        for kind in EventKind::ALL {
            assert_eq!(kind.as_str().parse::<EventKind>(), Ok(kind));
        }
        assert!("nope".parse::<EventKind>().is_err());
    }
}
