//! The record of a second-phase pass ([`record_calls`]): its calls, their events and what
//! follows them, in one statement.

use std::time::Instant;

use chrono::{DateTime, Utc};
use diesel::data_types::PgInterval;
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::AstPass;
use diesel::sql_types::{Array, BigInt, Bool, Integer, Interval, Nullable, Text, Timestamptz};
use tcc::protocol::GlobalStatus;

use super::named_sql::{Named, NamedStatement};
use super::second_phase::{AfterCalls, BranchCall, Continued, Finished};
use crate::events::EventKind;

/// Records the calls of one pass in call order, then does `after`, in one statement
/// (`RECORD_CALLS`), all only while `owner` holds the lease (its row stays locked until the
/// commit, so the lease cannot be taken meanwhile). Each op gets attempts + 1 and its
/// `last_result`, and becomes `succeed` if its call succeeded; each call gets its `branch_called`
/// event (attempt number, HTTP status or error, latency) and, when it was not written before the
/// call, its `branch_calling` event, both dated when they happened. Returns each op's attempts
/// after its call, in call order (0 for a success of an op that had already succeeded), and what
/// followed: [`Continued::LeaseLost`] with no attempts when the lease was lost before the record
/// (nothing written; the pass that took over calls again).
///
/// Confirm and Cancel are idempotent (docs/ARCHITECTURE.md#the-sub-transaction-barrier), so
/// calls that succeeded and were not recorded before a crash are only sent again by the next
/// pass (DTM's `UpdateBranchSync` setting, when it writes branch statuses asynchronously, makes
/// the same trade).
pub fn record_calls(
    conn: &mut PgConnection,
    gid: &str,
    calls: &[BranchCall],
    owner: &str,
    lease_secs: i64,
    after: &AfterCalls,
) -> QueryResult<(Vec<i32>, Continued)> {
    // The events are dated by how long before this instant they happened, on this process's
    // monotonic clock, so that the database's clock dates them (it dates every other event).
    let record = RecordCalls::new(gid, calls, owner, lease_secs, after, Instant::now());
    let row: RecordedRow = Named(record).get_result(conn)?;
    if !calls.is_empty() && !row.lease_held {
        return Ok((Vec::new(), Continued::LeaseLost));
    }
    let mut attempts = vec![0; calls.len()];
    for (ord, n) in row.recorded_ords.iter().zip(&row.recorded_attempts) {
        attempts[usize::try_from(*ord).expect("an ordinal from 1") - 1] = *n;
    }
    let continued = match (after, row.renewed, row.finished_type) {
        (AfterCalls::Nothing, _, _) => Continued::Recorded,
        (AfterCalls::Call(_), true, _) => Continued::Leased,
        (AfterCalls::Call(_), false, _) => Continued::LeaseLost,
        (AfterCalls::Finish { .. }, _, Some(trans_type)) => Continued::Finished(Finished {
            trans_type,
            second_phase_secs: match (row.phase_began, row.finish_time) {
                (Some(began), Some(end)) => Some((end - began).as_seconds_f64().max(0.0)),
                _ => None,
            },
        }),
        (AfterCalls::Finish { .. }, _, None) => Continued::NotFinished,
    };
    Ok((attempts, continued))
}

/// A pass's record as one statement (one round trip, no BEGIN/COMMIT; a data-modifying CTE,
/// which Diesel's DSL cannot write):
///
/// * `lease` locks the transaction's row `FOR UPDATE` while `$2` holds its lease; nothing below
///   is written without it;
/// * `calls` records each call on its op (attempts + 1, `last_result`, and `succeed` dated when
///   the call answered if it succeeded while the op was `prepared`; a success of an op that had
///   already succeeded leaves it as it was), returning each op's attempts by call ordinal;
/// * `renewed` (when `$19`) renews the lease for the next call, at least its `request_timeout`
///   plus 5 s ([`super::lease_duration`]);
/// * `finished` (when `$20`) is the compare-and-set `$21 -> $22` by the lease holder, releasing
///   the lease, with when its second phase began (its `submitted`/`aborting` event);
/// * `log` writes the calls' events in order (a `branch_called` with its op's attempts), then
///   the event of what followed (`$23`: the next call's `branch_calling` or the final status's)
///   if it happened, each dated `now()` less how long ago it happened.
const RECORD_CALLS: &str = "\
WITH lease AS (
    SELECT 1 FROM trans_global WHERE gid = $1 AND owner = $2 FOR UPDATE
), calls AS (
    UPDATE trans_branch_op AS o SET
        attempts = o.attempts + 1,
        last_result = c.result,
        status = CASE WHEN c.succeeded THEN 'succeed' ELSE o.status END,
        finish_time = CASE WHEN c.succeeded THEN now() - c.ago ELSE o.finish_time END,
        update_time = now()
    FROM unnest($4, $5, $6, $7) WITH ORDINALITY AS c (op_id, succeeded, result, ago, ord)
    WHERE o.id = c.op_id AND o.gid = $1 AND EXISTS (SELECT FROM lease)
      AND NOT (c.succeeded AND o.status <> 'prepared')
    RETURNING c.ord, o.attempts
), renewed AS (
    UPDATE trans_global
    SET lease_expire = now() + interval '1 second' * greatest($3, request_timeout + 5)
    WHERE $19 AND gid = $1 AND owner = $2
    RETURNING 1
), finished AS (
    UPDATE trans_global
    SET status = $22, finish_time = clock_timestamp(), update_time = now(), owner = NULL,
        lease_expire = NULL
    WHERE $20 AND gid = $1 AND owner = $2 AND status = $21
    RETURNING trans_type, finish_time,
        (SELECT min(create_time) FROM trans_event
         WHERE gid = $1 AND kind IN ('submitted', 'aborting')) AS phase_began
), log AS (
    INSERT INTO trans_event (gid, kind, actor, status, branch_id, op, target, url, outcome,
        http_status, latency_ms, attempt, detail, create_time)
    SELECT $1, e.kind, 'tm', e.status, e.branch_id, e.op, e.target, e.url, e.outcome,
        e.http_status, e.latency_ms, e.attempt, e.detail, now() - e.ago
    FROM (
        SELECT e.ord, e.kind, NULL AS status, e.branch_id, e.op, e.target, e.url, e.outcome,
            e.http_status, e.latency_ms, calls.attempts AS attempt, e.detail, e.ago
        FROM unnest($8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18) WITH ORDINALITY
            AS e (kind, branch_id, op, target, url, outcome, http_status, latency_ms, detail, ago,
                call_ord, ord)
        LEFT JOIN calls ON calls.ord = e.call_ord
        WHERE EXISTS (SELECT FROM lease)
        UNION ALL
        SELECT cardinality($8) + 1, $23, $24, $25, $26, $27, $28, NULL, NULL, NULL, NULL, NULL,
            interval '0'
        WHERE EXISTS (SELECT FROM renewed) OR EXISTS (SELECT FROM finished)
    ) AS e
    ORDER BY e.ord
)
SELECT EXISTS (SELECT FROM lease), ARRAY(SELECT ord FROM calls),
    ARRAY(SELECT attempts FROM calls), EXISTS (SELECT FROM renewed),
    (SELECT trans_type FROM finished), (SELECT finish_time FROM finished),
    (SELECT phase_began FROM finished)";

/// What [`RECORD_CALLS`] answers.
#[derive(Queryable)]
struct RecordedRow {
    lease_held: bool,
    /// The ordinals (from 1) of the calls recorded on their op, ...
    recorded_ords: Vec<i64>,
    /// ... and the op's attempts after each.
    recorded_attempts: Vec<i32>,
    renewed: bool,
    /// The `trans_type` of a finished transaction; `None` when it did not finish.
    finished_type: Option<String>,
    finish_time: Option<DateTime<Utc>>,
    phase_began: Option<DateTime<Utc>>,
}

/// The parameters of [`RECORD_CALLS`]: the calls and their events as one array per column.
#[derive(Default)]
struct RecordCalls<'a> {
    gid: &'a str,
    owner: &'a str,
    lease_secs: i32,
    op_id: Vec<i64>,
    succeeded: Vec<bool>,
    result: Vec<&'a str>,
    answered_ago: Vec<PgInterval>,
    events: CallEvents<'a>,
    renew: bool,
    finish: bool,
    from: &'static str,
    to: &'static str,
    after_event: AfterEvent,
}

/// The events of the calls, one array per column, in the order they happened.
#[derive(Default)]
struct CallEvents<'a> {
    kind: Vec<&'static str>,
    branch_id: Vec<&'a str>,
    op: Vec<&'static str>,
    target: Vec<&'a str>,
    url: Vec<&'a str>,
    outcome: Vec<Option<&'static str>>,
    http_status: Vec<Option<i32>>,
    latency_ms: Vec<Option<i32>>,
    detail: Vec<Option<&'a str>>,
    ago: Vec<PgInterval>,
    /// The ordinal of the call whose op's attempts a `branch_called` carries.
    call_ord: Vec<Option<i64>>,
}

/// The event of what follows the calls (`kind` `None`: nothing follows).
#[derive(Default)]
struct AfterEvent {
    kind: Option<&'static str>,
    status: Option<&'static str>,
    branch_id: Option<String>,
    op: Option<String>,
    target: Option<String>,
    url: Option<String>,
}

impl<'a> RecordCalls<'a> {
    fn new(
        gid: &'a str,
        calls: &'a [BranchCall],
        owner: &'a str,
        lease_secs: i64,
        after: &AfterCalls,
        now: Instant,
    ) -> RecordCalls<'a> {
        let mut record = RecordCalls {
            gid,
            owner,
            lease_secs: super::lease_secs_i32(lease_secs),
            ..RecordCalls::default()
        };
        for (ord, call) in (1..).zip(calls) {
            record.op_id.push(call.op_id);
            record.succeeded.push(call.succeeded);
            record.result.push(&call.result);
            record.answered_ago.push(before(now, call.answered_at));
            if let Some(sent_at) = call.unannounced_since {
                record
                    .events
                    .push(call, EventKind::BranchCalling, before(now, sent_at), None);
            }
            let ago = before(now, call.answered_at);
            record
                .events
                .push(call, EventKind::BranchCalled, ago, Some(ord));
        }
        record.after(after);
        record
    }

    /// Sets what follows the calls, and its event.
    fn after(&mut self, after: &AfterCalls) {
        match after {
            AfterCalls::Nothing => {}
            AfterCalls::Call(next) => {
                self.renew = true;
                self.after_event = AfterEvent {
                    kind: Some(EventKind::BranchCalling.as_str()),
                    status: None,
                    branch_id: Some(next.branch_id.clone()),
                    op: Some(next.op.clone()),
                    target: Some(next.target.clone()),
                    url: Some(next.url.clone()),
                };
            }
            AfterCalls::Finish { from, to } => {
                (self.finish, self.from, self.to) = (true, from.as_str(), to.as_str());
                let kind = match to {
                    GlobalStatus::Succeed => EventKind::Succeed,
                    _ => EventKind::Failed,
                };
                self.after_event = AfterEvent {
                    kind: Some(kind.as_str()),
                    status: Some(to.as_str()),
                    ..AfterEvent::default()
                };
            }
        }
    }
}

impl<'a> CallEvents<'a> {
    /// Adds the event `kind` of `call`, `ago` before now; a `branch_called` carries its outcome
    /// and the attempts of call `call_ord`.
    fn push(
        &mut self,
        call: &'a BranchCall,
        kind: EventKind,
        ago: PgInterval,
        call_ord: Option<i64>,
    ) {
        let called = call_ord.is_some();
        self.kind.push(kind.as_str());
        self.branch_id.push(&call.branch_id);
        self.op.push(call.op.as_str());
        self.target.push(&call.target);
        self.url.push(&call.url);
        self.outcome.push(called.then_some(call.outcome));
        self.http_status
            .push(call.http_status.filter(|_| called).map(i32::from));
        self.latency_ms
            .push(called.then(|| i32::try_from(call.latency_ms).unwrap_or(i32::MAX)));
        self.detail.push(call.detail.as_deref().filter(|_| called));
        self.ago.push(ago);
        self.call_ord.push(call_ord);
    }
}

impl NamedStatement for RecordCalls<'_> {
    type Id = RecordCalls<'static>;
    const SQL: &'static str = RECORD_CALLS;
    type Row = (
        Bool,
        Array<BigInt>,
        Array<Integer>,
        Bool,
        Nullable<Text>,
        Nullable<Timestamptz>,
        Nullable<Timestamptz>,
    );
    fn push_bind<'b>(&'b self, n: usize, out: &mut AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        let (e, a) = (&self.events, &self.after_event);
        match n {
            1 => out.push_bind_param::<Text, _>(self.gid),
            2 => out.push_bind_param::<Text, _>(self.owner),
            3 => out.push_bind_param::<Integer, _>(&self.lease_secs),
            4 => out.push_bind_param::<Array<BigInt>, _>(&self.op_id),
            5 => out.push_bind_param::<Array<Bool>, _>(&self.succeeded),
            6 => out.push_bind_param::<Array<Text>, _>(&self.result),
            7 => out.push_bind_param::<Array<Interval>, _>(&self.answered_ago),
            8 => out.push_bind_param::<Array<Text>, _>(&e.kind),
            9 => out.push_bind_param::<Array<Text>, _>(&e.branch_id),
            10 => out.push_bind_param::<Array<Text>, _>(&e.op),
            11 => out.push_bind_param::<Array<Text>, _>(&e.target),
            12 => out.push_bind_param::<Array<Text>, _>(&e.url),
            13 => out.push_bind_param::<Array<Nullable<Text>>, _>(&e.outcome),
            14 => out.push_bind_param::<Array<Nullable<Integer>>, _>(&e.http_status),
            15 => out.push_bind_param::<Array<Nullable<Integer>>, _>(&e.latency_ms),
            16 => out.push_bind_param::<Array<Nullable<Text>>, _>(&e.detail),
            17 => out.push_bind_param::<Array<Interval>, _>(&e.ago),
            18 => out.push_bind_param::<Array<Nullable<BigInt>>, _>(&e.call_ord),
            19 => out.push_bind_param::<Bool, _>(&self.renew),
            20 => out.push_bind_param::<Bool, _>(&self.finish),
            21 => out.push_bind_param::<Text, _>(self.from),
            22 => out.push_bind_param::<Text, _>(self.to),
            23 => out.push_bind_param::<Nullable<Text>, _>(&a.kind),
            24 => out.push_bind_param::<Nullable<Text>, _>(&a.status),
            25 => out.push_bind_param::<Nullable<Text>, _>(&a.branch_id),
            26 => out.push_bind_param::<Nullable<Text>, _>(&a.op),
            27 => out.push_bind_param::<Nullable<Text>, _>(&a.target),
            28 => out.push_bind_param::<Nullable<Text>, _>(&a.url),
            _ => unreachable!("RECORD_CALLS has 28 parameters"),
        }
    }
}

/// `at` as an interval before `now`.
fn before(now: Instant, at: Instant) -> PgInterval {
    let micros = now.saturating_duration_since(at).as_micros();
    PgInterval::from_microseconds(i64::try_from(micros).unwrap_or(i64::MAX))
}
