//! The operator's actions from the admin API ([`crate::admin`]): retry now and force stop. Each
//! is one database transaction that locks the transaction's row first, so that its update is a
//! compare-and-set on exactly the status it read.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use tcc::protocol::GlobalStatus;

use super::{parse_status, TransGlobal};
use crate::events::{self, Actor, EventKind, NewEvent};
use crate::schema::trans_global;

/// The result of an operator action ([`retry_now`], [`force_stop`]).
#[derive(Debug, Clone)]
pub enum AdminOutcome {
    /// Done: the transaction was in `from`, and is now `trans`.
    Done {
        /// Status before the action.
        from: GlobalStatus,
        /// The row after the action.
        trans: Box<TransGlobal>,
    },
    /// The transaction's status does not allow the action (409).
    Refused(GlobalStatus),
    /// A second-phase pass holds the transaction's lease until this instant (force-stop: 409,
    /// to be tried again once the pass has ended).
    Leased(DateTime<Utc>),
    /// No such gid (404).
    Unknown,
}

/// Reads `gid`'s status with the row locked (`FOR UPDATE`), so that the update that follows in
/// the same database transaction is a compare-and-set on exactly that status.
fn lock_status(conn: &mut PgConnection, gid: &str) -> QueryResult<Option<GlobalStatus>> {
    use trans_global::dsl as g;
    let status: Option<String> = g::trans_global
        .filter(g::gid.eq(gid))
        .select(g::status)
        .for_update()
        .first(conn)
        .optional()?;
    Ok(status.as_deref().map(parse_status))
}

/// Operator's "retry now": a `submitted` or `aborting` transaction becomes due at once
/// (`next_cron_time = now()`) with its backoff step reset to its `retry_interval`, so the next
/// worker tick (or the caller's own pass) calls its pending Confirms or Cancels without waiting
/// out the backoff. Any other status is refused: a `prepared` one still belongs to its AP (its
/// timeout is DTM's business, not a retry), a final one has nothing left to call.
///
/// Leases are left alone: a live lease means a pass is running right now (its own reschedule
/// then wins), and an expired one does not block the next claim.
pub fn retry_now(conn: &mut PgConnection, gid: &str) -> QueryResult<AdminOutcome> {
    use trans_global::dsl as g;
    conn.transaction(|conn| {
        let Some(from) = lock_status(conn, gid)? else {
            return Ok(AdminOutcome::Unknown);
        };
        if !matches!(from, GlobalStatus::Submitted | GlobalStatus::Aborting) {
            return Ok(AdminOutcome::Refused(from));
        }
        let now = Utc::now();
        let trans = diesel::update(g::trans_global)
            .filter(g::gid.eq(gid))
            .filter(g::status.eq(from.as_str()))
            .set((
                g::next_cron_time.eq(now),
                g::next_cron_interval.eq(g::retry_interval),
                g::update_time.eq(now),
            ))
            .returning(TransGlobal::as_returning())
            .get_result(conn)?;
        events::insert(
            conn,
            &NewEvent {
                status: Some(from.as_str().to_owned()),
                ..NewEvent::new(gid, EventKind::RetryRequested, Actor::Admin)
            },
        )?;
        Ok(AdminOutcome::Done {
            from,
            trans: Box::new(trans),
        })
    })
}

/// Operator's "force stop" (DTM's admin `forceStop`): an unfinished transaction (`prepared`,
/// `submitted`, `aborting`) moves straight to `failed`, **without calling any Confirm or
/// Cancel**. Its pending branch ops stay as they are (`prepared`, never called), and the
/// rollback reason records the stop and the status it interrupted. A final transaction is
/// refused, and so is one whose second phase is running ([`AdminOutcome::Leased`]: a live
/// lease): a pass sends all its calls before it records them, so it could not be stopped
/// half-way; the operator tries again once the pass has ended (a failing branch releases the
/// lease until its retry is due).
///
/// DANGER: whatever the Trys reserved (frozen funds, holds, stock reservations) stays held in
/// the RMs until someone releases it by hand; a half-confirmed transaction stays half applied.
/// This exists for operators who have already repaired the RMs, never for routine use.
pub fn force_stop(conn: &mut PgConnection, gid: &str) -> QueryResult<AdminOutcome> {
    use trans_global::dsl as g;
    conn.transaction(|conn| {
        let Some(from) = lock_status(conn, gid)? else {
            return Ok(AdminOutcome::Unknown);
        };
        if from.is_final() {
            return Ok(AdminOutcome::Refused(from));
        }
        let (previous, lease_expire, leased): (
            Option<String>,
            Option<DateTime<Utc>>,
            Option<bool>,
        ) = g::trans_global
            .filter(g::gid.eq(gid))
            .select((
                g::rollback_reason,
                g::lease_expire,
                g::lease_expire.gt(diesel::dsl::now).nullable(),
            ))
            .first(conn)?;
        // A pass records its calls only when it ends (crate::engine): stopping the transaction
        // under a live lease would not stop the calls that pass has left to send.
        if let (Some(until), Some(true)) = (lease_expire, leased) {
            return Ok(AdminOutcome::Leased(until));
        }
        let stop = format!("force-stopped by an operator (was {from})");
        let reason = match previous.filter(|r| !r.is_empty()) {
            Some(previous) => format!("{previous}; then {stop}"),
            None => stop,
        };
        let now = Utc::now();
        let trans = diesel::update(g::trans_global)
            .filter(g::gid.eq(gid))
            .filter(g::status.eq(from.as_str()))
            .set((
                g::status.eq(GlobalStatus::Failed.as_str()),
                g::rollback_reason.eq(reason),
                g::finish_time.eq(now),
                g::update_time.eq(now),
                g::owner.eq(None::<String>),
                g::lease_expire.eq(None::<DateTime<Utc>>),
            ))
            .returning(TransGlobal::as_returning())
            .get_result(conn)?;
        events::insert(
            conn,
            &NewEvent {
                status: Some(GlobalStatus::Failed.as_str().to_owned()),
                detail: Some("no further Confirm or Cancel is called".to_owned()),
                ..NewEvent::new(gid, EventKind::ForceStopped, Actor::Admin)
            },
        )?;
        Ok(AdminOutcome::Done {
            from,
            trans: Box::new(trans),
        })
    })
}
