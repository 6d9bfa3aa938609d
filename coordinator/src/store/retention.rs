//! Retention's deletes ([`crate::retention`]): finished transactions, leaving a gid tombstone each,
//! and expired tombstones.

use chrono::{DateTime, Utc};
use diesel::prelude::*;

use crate::schema::{trans_event, trans_gid_tombstone, trans_global};

/// A transaction retention deletes, and the tombstone it leaves.
#[derive(Queryable, Insertable)]
#[diesel(table_name = trans_gid_tombstone)]
struct Tombstone {
    gid: String,
    finish_time: DateTime<Utc>,
}

/// Deletes at most `limit` finished (`succeed`/`failed`) transactions whose `finish_time` is
/// more than `retention_secs` seconds ago, oldest first, with their branch ops (`ON DELETE
/// CASCADE`) and events, leaving a tombstone for each, in one database transaction. Returns how
/// many transactions were deleted.
///
/// Unfinished transactions (`prepared`, `submitted`, `aborting`) are never selected, however old:
/// their `finish_time` is NULL (a CHECK constraint ties it to the status) and the status filter
/// says so again. Rows another replica's retention is deleting at this instant are skipped
/// (`FOR UPDATE SKIP LOCKED`). The partial index `trans_global_finished_idx` serves the select.
///
/// `trans_event` has no foreign key (see its `COMMENT ON COLUMN trans_event.gid`), so the events
/// are deleted here. None is left behind: a writer of an event either locks the transaction's
/// row (registrations, Try reports, operator actions), which the `FOR UPDATE` here waits for, or
/// writes for an unfinished transaction, which this never deletes (the second phase).
pub fn delete_finished_before(
    conn: &mut PgConnection,
    retention_secs: i64,
    limit: i64,
) -> QueryResult<usize> {
    use trans_global::dsl as g;
    let cutoff = seconds_ago(retention_secs);
    conn.transaction(|conn| {
        let gone: Vec<Tombstone> = g::trans_global
            .filter(g::status.eq_any(["succeed", "failed"]))
            .filter(g::finish_time.lt(cutoff))
            .order((g::finish_time, g::id))
            .limit(limit)
            .select((g::gid, g::finish_time.assume_not_null()))
            .for_update()
            .skip_locked()
            .load(conn)?;
        if gone.is_empty() {
            return Ok(0);
        }
        let gids: Vec<&str> = gone.iter().map(|t| t.gid.as_str()).collect();
        diesel::delete(g::trans_global.filter(g::gid.eq_any(&gids))).execute(conn)?;
        diesel::delete(trans_event::table.filter(trans_event::gid.eq_any(&gids))).execute(conn)?;
        // The gids stay refused by `prepare` while the RMs may hold their barrier rows.
        diesel::insert_into(trans_gid_tombstone::table)
            .values(&gone)
            .on_conflict_do_nothing()
            .execute(conn)?;
        Ok(gone.len())
    })
}

/// Deletes at most `limit` gid tombstones of transactions that finished more than
/// `keep_secs` seconds ago, oldest first; returns how many. After that the gid may be prepared
/// again: by then the RMs have deleted its barrier rows (`GID_TOMBSTONE_SECONDS` must exceed
/// their `BARRIER_RETENTION_SECONDS`).
pub fn delete_tombstones_before(
    conn: &mut PgConnection,
    keep_secs: i64,
    limit: i64,
) -> QueryResult<usize> {
    use trans_gid_tombstone::dsl as t;
    let cutoff = seconds_ago(keep_secs);
    conn.transaction(|conn| {
        let expired: Vec<String> = t::trans_gid_tombstone
            .select(t::gid)
            .filter(t::finish_time.lt(cutoff))
            .order(t::finish_time)
            .limit(limit)
            .for_update()
            .skip_locked()
            .load(conn)?;
        diesel::delete(t::trans_gid_tombstone.filter(t::gid.eq_any(&expired))).execute(conn)
    })
}

/// The instant `secs` seconds ago; the earliest representable one for an age beyond it.
fn seconds_ago(secs: i64) -> DateTime<Utc> {
    chrono::TimeDelta::try_seconds(secs)
        .and_then(|age| Utc::now().checked_sub_signed(age))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}
