//! Postgres through Diesel: an r2d2 pool, embedded migrations run at start, and [`blocking`] to
//! run Diesel (which is synchronous) off the async workers, the pool checked out inside the
//! closure as in actix's `databases/diesel` example.

use diesel::migration::{Migration, MigrationSource};
use diesel::pg::{Pg, PgConnection};
use std::cell::Cell;
use std::time::Duration;

use diesel::connection::{
    AnsiTransactionManager, Connection, Instrumentation, InstrumentationEvent, TransactionManager,
};
use diesel::r2d2::{ConnectionManager, CustomizeConnection, Pool, PooledConnection};
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness};

/// The pool type every binary uses.
pub type DbPool = Pool<ConnectionManager<PgConnection>>;
/// A connection checked out of [`DbPool`].
pub type DbConn = PooledConnection<ConnectionManager<PgConnection>>;

/// Building the pool or migrating failed at start.
#[derive(Debug, thiserror::Error)]
pub enum DbSetupError {
    /// No connection could be made within the pool's timeout.
    #[error("cannot connect to the database: {0}")]
    Connect(#[from] diesel::r2d2::PoolError),
    /// The database did not accept a connection within [`DATABASE_WAIT`] ([`wait_for_database`]).
    #[error("the database did not accept a connection within the wait at start: {0}")]
    Unreachable(String),
    /// A migration failed.
    #[error("migrations failed: {0}")]
    Migrate(String),
}

/// How long a binary waits at start for its database to accept a connection before it gives up
/// ([`wait_for_database`]): long enough for a Postgres container started at the same moment,
/// short enough that a wrong `DATABASE_URL` fails the start visibly.
pub const DATABASE_WAIT: Duration = Duration::from_secs(60);

/// Waits until `database_url` accepts a connection, retrying with a bounded exponential backoff
/// (250 ms, doubling, at most 5 s between attempts, for at most `within` in all) and logging one
/// warn line per failed attempt, so that a service started before Postgres is ready (a `docker
/// restart`, a daemon restart, where compose's `depends_on` does not apply) waits quietly
/// instead of flooding its log and exiting. Errors with the last failure once `within` has
/// passed. The log lines show the database's own error (host, port, reason), never the URL,
/// which may hold a password.
pub fn wait_for_database(database_url: &str, within: Duration) -> Result<(), DbSetupError> {
    use backon::{BlockingRetryable, ExponentialBuilder};
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(250))
        .with_max_delay(Duration::from_secs(5))
        .without_max_times()
        .with_total_delay(Some(within));
    let mut attempt = 0u32;
    (|| PgConnection::establish(database_url).map(drop))
        .retry(backoff)
        .sleep(std::thread::sleep)
        .notify(|error, next| {
            attempt += 1;
            log::warn!(
                "the database does not accept connections yet (attempt {attempt}; retrying in {:.1} s): {}",
                next.as_secs_f64(),
                error.to_string().trim_end()
            );
        })
        .call()
        .map_err(|e| DbSetupError::Unreachable(e.to_string().trim_end().to_owned()))
}

/// A pool of at most `max_size` connections to `database_url`
/// (`postgres://user@host:port/dbname`). Fails if no connection can be made.
///
/// Connections are not tested on checkout (r2d2's default sends `SELECT 1`, a round trip and a
/// transaction of its own, before every use, which for the coordinator doubles the commits of a
/// transfer). Instead a connection that broke (the
/// server restarted, a network cut) fails the one query that finds out, [`blocking`] sees the
/// closed-connection error ([`ConnectionWatch`]) and the pool drops the connection instead of
/// handing it out again; the callers' retries (the TM's second phase, the AP's) cover that one
/// failed query.
pub fn build_pool(database_url: &str, max_size: u32) -> Result<DbPool, DbSetupError> {
    let manager = ConnectionManager::<PgConnection>::new(database_url);
    Ok(Pool::builder()
        .max_size(max_size)
        .test_on_check_out(false)
        .connection_customizer(Box::new(ConnectionWatch))
        .connection_timeout(std::time::Duration::from_secs(10))
        .build(manager)?)
}

thread_local! {
    /// Set by [`ConnectionWatch`]'s instrumentation when a query of this thread failed because
    /// the connection is gone; read and cleared by [`blocking`] around its closure (which runs on
    /// one blocking thread from checkout to return).
    static CONNECTION_CLOSED: Cell<bool> = const { Cell::new(false) };
}

/// Installed on every new pooled connection: a Diesel instrumentation that notes (in
/// a thread-local flag) a query failing with a closed connection, so that [`blocking`] can
/// drop that connection. Costs nothing on the success path: no round trip, no query.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionWatch;

impl CustomizeConnection<PgConnection, diesel::r2d2::Error> for ConnectionWatch {
    fn on_acquire(&self, conn: &mut PgConnection) -> Result<(), diesel::r2d2::Error> {
        conn.set_instrumentation(watch_closed_connection);
        Ok(())
    }
}

fn watch_closed_connection(event: InstrumentationEvent<'_>) {
    if let InstrumentationEvent::FinishQuery {
        error: Some(DieselError::DatabaseError(DatabaseErrorKind::ClosedConnection, _)),
        ..
    } = event
    {
        CONNECTION_CLOSED.with(|closed| closed.set(true));
    }
}

/// Marks `conn` broken, so that the pool closes it when it is returned instead of reusing it.
fn discard(conn: &mut PgConnection) {
    log::warn!("a database connection was closed under a query; the pool drops it");
    AnsiTransactionManager::transaction_manager_status_mut(conn).set_in_error();
}

// Keeps the instrumentation's signature checked against Diesel's trait.
const _: fn() = || {
    fn is_instrumentation<I: Instrumentation>(_: I) {}
    is_instrumentation(watch_closed_connection);
};

/// Several embedded migration sets (the barrier's, the fault counters', the service's own) seen
/// as one source, so they are applied and checked together in version order.
struct MigrationSets<'a>(&'a [&'a EmbeddedMigrations]);

impl MigrationSource<Pg> for MigrationSets<'_> {
    fn migrations(&self) -> diesel::migration::Result<Vec<Box<dyn Migration<Pg>>>> {
        let mut all = Vec::new();
        for set in self.0 {
            all.extend(MigrationSource::<Pg>::migrations(*set)?);
        }
        Ok(all)
    }
}

/// Applies every pending migration of `sets` on one connection of `pool`.
pub fn run_migrations(pool: &DbPool, sets: &[&EmbeddedMigrations]) -> Result<(), DbSetupError> {
    let mut conn = pool.get()?;
    conn.run_pending_migrations(MigrationSets(sets))
        .map(|_| ())
        .map_err(|e| DbSetupError::Migrate(e.to_string()))
}

/// `true` when every migration of `sets` is applied (the readiness check of `/api/health`).
pub fn migrations_applied(conn: &mut PgConnection, sets: &[&EmbeddedMigrations]) -> bool {
    matches!(conn.has_pending_migration(MigrationSets(sets)), Ok(false))
}

/// Why a blocking database closure could not run: no connection, or the closure panicked.
#[derive(Debug, thiserror::Error)]
pub enum BlockingError {
    /// No pooled connection became free within the pool's timeout.
    #[error("no database connection available: {0}")]
    Pool(#[from] diesel::r2d2::PoolError),
    /// A query failed (a closure returning `QueryResult` may use `?` on it).
    #[error("database error: {0}")]
    Query(#[from] diesel::result::Error),
    /// The blocking thread pool is gone or the closure panicked.
    #[error("the blocking task failed: {0}")]
    Join(String),
}

impl BlockingError {
    /// Splits the error the way services answer it: `Ok` with the query's own error (a 500: the
    /// query or the data is wrong), `Err` with the description of an outage (no connection, no
    /// thread: a 503, worth retrying).
    pub fn into_query_error(self) -> Result<diesel::result::Error, String> {
        match self {
            BlockingError::Query(e) => Ok(e),
            other => Err(other.to_string()),
        }
    }
}

/// Runs `f` with a pooled connection on actix's blocking thread pool.
///
/// Returns the closure's own result inside `Ok`; `Err` only for pool or thread failures, which
/// callers map to a 503/500 of their own error type.
pub async fn blocking<T, F>(pool: &DbPool, f: F) -> Result<T, BlockingError>
where
    F: FnOnce(&mut PgConnection) -> T + Send + 'static,
    T: Send + 'static,
{
    let pool = pool.clone();
    actix_web::web::block(move || {
        let mut conn = pool.get()?;
        CONNECTION_CLOSED.with(|closed| closed.set(false));
        let out = f(&mut conn);
        if CONNECTION_CLOSED.with(|closed| closed.replace(false)) {
            discard(&mut conn);
        }
        Ok::<T, BlockingError>(out)
    })
    .await
    .map_err(|e| BlockingError::Join(e.to_string()))?
}
