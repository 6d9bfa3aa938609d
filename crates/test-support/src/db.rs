//! A fresh, empty Postgres database per test, dropped when the test ends.
//!
//! The server is `PG_URL` (default `postgres://postgres@127.0.0.1:5432`), the same variable the
//! scripts use. Binaries under test run their own migrations at start, exactly as in production.

use diesel::pg::PgConnection;
use diesel::{Connection, RunQueryDsl};

/// The Postgres server tests use: `PG_URL`, default `postgres://postgres@127.0.0.1:5432`.
pub fn pg_url() -> String {
    std::env::var("PG_URL")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432".to_owned())
        .trim_end_matches('/')
        .to_owned()
}

/// A database created for one test. Dropping it drops the database (`WITH (FORCE)`, so pools
/// still holding connections do not keep it alive).
#[derive(Debug)]
pub struct TestDb {
    /// The database's name, `t_<prefix>_<random>`.
    pub name: String,
    /// Its connection URL.
    pub url: String,
}

impl TestDb {
    /// Creates an empty database named after `prefix` (e.g. `trans_out`).
    ///
    /// Panics when the server cannot be reached: a test cannot run without it.
    pub fn create(prefix: &str) -> TestDb {
        let name = format!("t_{prefix}_{}", uuid::Uuid::new_v4().simple());
        let mut conn = admin_connection();
        diesel::sql_query(format!(r#"CREATE DATABASE "{name}""#))
            .execute(&mut conn)
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name} failed: {e}"));
        TestDb {
            url: format!("{}/{name}", pg_url()),
            name,
        }
    }

    /// A new connection to this database, for assertions.
    pub fn connect(&self) -> PgConnection {
        PgConnection::establish(&self.url)
            .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", self.url))
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Ok(mut conn) = PgConnection::establish(&format!("{}/postgres", pg_url())) {
            let _ = diesel::sql_query(format!(
                r#"DROP DATABASE IF EXISTS "{}" WITH (FORCE)"#,
                self.name
            ))
            .execute(&mut conn);
        }
    }
}

fn admin_connection() -> PgConnection {
    let url = format!("{}/postgres", pg_url());
    PgConnection::establish(&url).unwrap_or_else(|e| {
        panic!("cannot reach Postgres at {url} ({e}); start it or set PG_URL (scripts/test.sh does both)")
    })
}
