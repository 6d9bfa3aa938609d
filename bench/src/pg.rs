//! What the benchmark reads from Postgres: commit counters per database
//! (`pg_stat_database.xact_commit`), the busiest statements (`pg_stat_statements`, when the
//! extension is installed) and the money in the banks (the end-of-run check).
//!
//! Commit counters are cumulative statistics: since Postgres 15 each backend flushes its
//! counters to shared memory at most once a second while busy, and an idle backend does so after
//! `PGSTAT_IDLE_INTERVAL` (10 s). A reading taken right after the load stops therefore misses up
//! to ten seconds' worth of the last commits; [`Pg::settle`] waits that out before the end
//! snapshot (and so before the next point's start snapshot).

use std::collections::BTreeMap;
use std::time::Duration;

use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Double, Nullable, Text};
use serde::Serialize;

/// A connection to the server's `postgres` database (statistics are server-wide) plus, per bank
/// database, a URL for the money check.
pub struct Pg {
    server_url: String,
    conn: PgConnection,
    /// Whether `pg_stat_statements` answered (the extension exists in `postgres`).
    pub has_statements: bool,
}

#[derive(QueryableByName)]
struct Commits {
    #[diesel(sql_type = Text)]
    datname: String,
    #[diesel(sql_type = BigInt)]
    xact_commit: i64,
}

/// One normalised statement of `pg_stat_statements`, over one measured point.
#[derive(Debug, Clone, Serialize, QueryableByName)]
pub struct Statement {
    /// The database it ran in.
    #[diesel(sql_type = Text)]
    pub db: String,
    /// Executions during the point.
    #[diesel(sql_type = BigInt)]
    pub calls: i64,
    /// Total execution time, milliseconds.
    #[diesel(sql_type = Double)]
    pub total_ms: f64,
    /// The statement with its constants replaced by `$n`, cut to 160 characters.
    #[diesel(sql_type = Text)]
    pub query: String,
}

#[derive(QueryableByName)]
struct Sum {
    #[diesel(sql_type = Nullable<BigInt>)]
    n: Option<i64>,
}

impl Pg {
    /// Connects to `<server_url>/postgres`.
    pub fn connect(server_url: &str) -> Result<Pg, String> {
        let server_url = server_url.trim_end_matches('/').to_owned();
        let mut conn = PgConnection::establish(&format!("{server_url}/postgres"))
            .map_err(|e| format!("cannot connect to {server_url}/postgres: {e}"))?;
        let has_statements = diesel::sql_query("SELECT 1 FROM pg_stat_statements LIMIT 1")
            .execute(&mut conn)
            .is_ok();
        Ok(Pg {
            server_url,
            conn,
            has_statements,
        })
    }

    /// Cumulative `xact_commit` of each of `databases` (missing ones are absent).
    pub fn commits(&mut self, databases: &[String]) -> Result<BTreeMap<String, i64>, String> {
        let rows: Vec<Commits> = diesel::sql_query(
            "SELECT datname::text AS datname, xact_commit FROM pg_stat_database \
             WHERE datname = ANY($1)",
        )
        .bind::<Array<Text>, _>(databases)
        .load(&mut self.conn)
        .map_err(|e| format!("reading pg_stat_database: {e}"))?;
        Ok(rows
            .into_iter()
            .map(|r| (r.datname, r.xact_commit))
            .collect())
    }

    /// Waits until every backend has flushed its statistics (see the module docs), and makes the
    /// statistics snapshot of this session fresh for the next read.
    pub fn settle(&mut self, wait: Duration) {
        std::thread::sleep(wait);
        let _ = diesel::sql_query("SELECT pg_stat_clear_snapshot()").execute(&mut self.conn);
    }

    /// Empties `pg_stat_statements` (start of a point); nothing without the extension.
    pub fn reset_statements(&mut self) {
        if self.has_statements {
            let _ = diesel::sql_query("SELECT pg_stat_statements_reset()").execute(&mut self.conn);
        }
    }

    /// The `limit` most called statements since [`Pg::reset_statements`] in `databases`.
    pub fn top_statements(&mut self, databases: &[String], limit: i64) -> Vec<Statement> {
        if !self.has_statements {
            return Vec::new();
        }
        diesel::sql_query(
            "SELECT d.datname::text AS db, s.calls, s.total_exec_time AS total_ms, \
                    left(regexp_replace(s.query, '\\s+', ' ', 'g'), 160) AS query \
             FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid \
             WHERE d.datname = ANY($1) ORDER BY s.calls DESC, s.total_exec_time DESC LIMIT $2",
        )
        .bind::<Array<Text>, _>(databases)
        .bind::<BigInt, _>(limit)
        .load(&mut self.conn)
        .unwrap_or_default()
    }

    /// Sum of `accounts.balance` in the bank database `db`.
    pub fn balance_sum(&self, db: &str) -> Result<i64, String> {
        let mut conn = PgConnection::establish(&format!("{}/{db}", self.server_url))
            .map_err(|e| format!("cannot connect to {db}: {e}"))?;
        let sum: Sum = diesel::sql_query("SELECT sum(balance)::bigint AS n FROM accounts")
            .get_result(&mut conn)
            .map_err(|e| format!("summing balances in {db}: {e}"))?;
        Ok(sum.n.unwrap_or(0))
    }

    /// Number of tentative holds in the bank database `db` (transfers not settled yet).
    pub fn tentative_holds(&self, db: &str) -> Result<i64, String> {
        let mut conn = PgConnection::establish(&format!("{}/{db}", self.server_url))
            .map_err(|e| format!("cannot connect to {db}: {e}"))?;
        let sum: Sum =
            diesel::sql_query("SELECT count(*)::bigint AS n FROM holds WHERE state = 'tentative'")
                .get_result(&mut conn)
                .map_err(|e| format!("counting holds in {db}: {e}"))?;
        Ok(sum.n.unwrap_or(0))
    }
}

impl Pg {
    /// Of the global transactions `gids` in the coordinator database `db`: how many ended
    /// `succeed`, and how many have not finished yet.
    pub fn late_outcomes(&self, db: &str, gids: &[String]) -> Result<(i64, i64), String> {
        #[derive(QueryableByName)]
        struct Outcomes {
            #[diesel(sql_type = BigInt)]
            succeeded: i64,
            #[diesel(sql_type = BigInt)]
            unfinished: i64,
        }
        let mut conn = PgConnection::establish(&format!("{}/{db}", self.server_url))
            .map_err(|e| format!("cannot connect to {db}: {e}"))?;
        let found: Outcomes = diesel::sql_query(
            "SELECT count(*) FILTER (WHERE status = 'succeed') AS succeeded, \
                    count(*) FILTER (WHERE status NOT IN ('succeed', 'failed')) AS unfinished \
             FROM trans_global WHERE gid = ANY($1)",
        )
        .bind::<Array<Text>, _>(gids)
        .get_result(&mut conn)
        .map_err(|e| format!("reading late transactions in {db}: {e}"))?;
        Ok((found.succeeded, found.unfinished))
    }
}

/// `after - before` per database.
pub fn delta(
    before: &BTreeMap<String, i64>,
    after: &BTreeMap<String, i64>,
) -> BTreeMap<String, i64> {
    after
        .iter()
        .map(|(db, a)| (db.clone(), a - before.get(db).copied().unwrap_or(*a)))
        .collect()
}
