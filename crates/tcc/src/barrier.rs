//! The sub-transaction barrier on Diesel + Postgres
//! (`docs/ARCHITECTURE.md#the-sub-transaction-barrier`; DTM's `BranchBarrier.Call`,
//! dtm-labs/dtm `dtmcli/barrier.go`).
//!
//! The barrier makes an RM's Try, Confirm and Cancel safe against the three anomalies of TCC
//! without any per-service bookkeeping:
//!
//! * **empty compensation** (null rollback): a Cancel arrives for a branch whose Try never ran
//!   (it timed out in the network, or was never sent). The Cancel must succeed and change nothing.
//! * **hanging** (suspension): a Try arrives *after* its Cancel. It must change nothing, or it
//!   would freeze resources that no Confirm or Cancel will ever release.
//! * **duplicates** (idempotency): the TM retries Confirm and Cancel, the network duplicates
//!   requests. Each must apply once.
//!
//! All three are decided by inserting rows into `dtm_barrier.barrier` **in the same local
//! transaction as the business change**, keyed by `(gid, branch_id, op, barrier_id)` (the unique
//! key `uniq_barrier`, named as DTM names it: [`UNIQUE_CONSTRAINT`]):
//!
//! 1. for `cancel`, insert-if-absent the row for `try` (reason `cancel`); if it was inserted,
//!    Try never ran: empty compensation, skip the business code and succeed;
//! 2. insert-if-absent the row for the current op; if nothing was inserted this is a duplicate,
//!    or a Try hanging after its Cancel: skip and succeed;
//! 3. otherwise run the business code; both commit or both roll back.
//!
//! Concurrent Try and Cancel of one branch serialize on the unique index: the second inserter
//! waits for the first transaction to commit or roll back, then sees the row or not. That is
//! why step 3 must share the barrier's transaction.
//!
//! ```no_run
//! use diesel::prelude::*;
//! use tcc::barrier::{BarrierOutcome, BranchBarrier};
//! use tcc::protocol::BranchQuery;
//!
//! # fn freeze(conn: &mut PgConnection, account: i64, amount: i64) -> QueryResult<()> { Ok(()) }
//! fn trans_out_try(conn: &mut PgConnection, query: &BranchQuery) -> QueryResult<()> {
//!     let mut barrier = BranchBarrier::new(query);
//!     let outcome = barrier.call(conn, |conn| freeze(conn, 1, 30))?;
//!     // Every log line about a branch names it, so one gid can be followed across all logs.
//!     let (gid, branch_id, op) = (&query.gid, &query.branch_id, query.op);
//!     match outcome {
//!         BarrierOutcome::Applied(()) => {
//!             log::info!("gid={gid} branch_id={branch_id} op={op} funds frozen")
//!         }
//!         skipped => {
//!             log::info!("gid={gid} branch_id={branch_id} op={op} skipped: {}", skipped.kind())
//!         }
//!     }
//!     Ok(())
//! }
//! ```

use diesel::prelude::*;
use diesel::result::Error as DieselError;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use crate::protocol::{BranchQuery, Op, TransType};

/// The migration creating `dtm_barrier.barrier`. Run it in every RM database, beside the RM's
/// own migrations (both sets live in `__diesel_schema_migrations`; their versions do not clash):
///
/// ```no_run
/// # fn run(conn: &mut diesel::PgConnection) {
/// use diesel_migrations::MigrationHarness;
/// conn.run_pending_migrations(tcc::barrier::MIGRATIONS).expect("barrier migration");
/// # }
/// ```
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// The SQL of [`MIGRATIONS`], for services that manage their schema with another tool.
pub const MIGRATION_SQL: &str = include_str!("../migrations/00000000000001_dtm_barrier/up.sql");

/// The name of the barrier's unique key `(gid, branch_id, op, barrier_id)`, the one DTM gives it
/// (dtm-labs/dtm `sqls/dtmcli.barrier.postgres.sql`): DTM's own barrier code inserts with
/// `ON CONFLICT ON CONSTRAINT uniq_barrier DO NOTHING`, so an RM written with DTM's Go or Java
/// SDK can share the table. [`BranchBarrier::call`] inserts the same way.
pub const UNIQUE_CONSTRAINT: &str = "uniq_barrier";

/// Runs [`MIGRATIONS`] on `conn` if they are not applied yet.
pub fn run_migrations(
    conn: &mut PgConnection,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    conn.run_pending_migrations(MIGRATIONS).map(|_| ())
}

/// Diesel's view of the barrier table.
pub mod schema {
    diesel::table! {
        /// See the migration's `COMMENT ON` for each column's purpose.
        dtm_barrier.barrier (id) {
            /// Surrogate key.
            id -> Int8,
            /// Always `tcc` here.
            trans_type -> Text,
            /// The global transaction id.
            gid -> Text,
            /// The branch id within the global transaction.
            branch_id -> Text,
            /// `try`, `confirm` or `cancel`.
            op -> Text,
            /// The barrier call's number within one request: "01", "02", ...
            barrier_id -> Text,
            /// The op that inserted the row.
            reason -> Text,
            /// When the row was inserted.
            create_time -> Timestamptz,
        }
    }
}

/// What the barrier decided for one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BarrierOutcome<T> {
    /// First delivery of this op: the business code ran and committed with the barrier row.
    Applied(T),
    /// A Cancel whose Try never ran: nothing to release (the null rollback).
    EmptyCompensation,
    /// The op already ran for this branch: a retry or a duplicate delivery.
    Duplicate,
    /// A Try arriving after its Cancel (suspension): it must not reserve anything.
    Hanging,
}

impl<T> BarrierOutcome<T> {
    /// `true` when the business code ran.
    pub fn is_applied(&self) -> bool {
        matches!(self, BarrierOutcome::Applied(_))
    }

    /// The same decision with the business code's value replaced by `f(value)`.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> BarrierOutcome<U> {
        match self {
            BarrierOutcome::Applied(value) => BarrierOutcome::Applied(f(value)),
            BarrierOutcome::EmptyCompensation => BarrierOutcome::EmptyCompensation,
            BarrierOutcome::Duplicate => BarrierOutcome::Duplicate,
            BarrierOutcome::Hanging => BarrierOutcome::Hanging,
        }
    }

    /// `applied`, `empty_compensation`, `duplicate` or `hanging`: for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            BarrierOutcome::Applied(_) => "applied",
            BarrierOutcome::EmptyCompensation => "empty_compensation",
            BarrierOutcome::Duplicate => "duplicate",
            BarrierOutcome::Hanging => "hanging",
        }
    }
}

/// The barrier of one branch request. Create one per incoming Try/Confirm/Cancel request.
#[derive(Debug, Clone)]
pub struct BranchBarrier {
    /// Always `tcc` here.
    pub trans_type: TransType,
    /// The global transaction id from the request's query.
    pub gid: String,
    /// The branch id from the request's query.
    pub branch_id: String,
    /// The op from the request's query.
    pub op: Op,
    /// How many times [`BranchBarrier::call`] ran for this request; the next `barrier_id`.
    calls: u32,
}

impl BranchBarrier {
    /// A barrier for the branch request described by `query`.
    pub fn new(query: &BranchQuery) -> Self {
        BranchBarrier {
            trans_type: query.trans_type,
            gid: query.gid.clone(),
            branch_id: query.branch_id.clone(),
            op: query.op,
            calls: 0,
        }
    }

    /// Runs `busi` inside one Postgres transaction with the barrier rows, unless the barrier
    /// says this call is an empty compensation, a duplicate or a hanging Try.
    ///
    /// If `busi` returns `Err`, the transaction rolls back with the barrier row, so a refused
    /// Try leaves no trace and its Cancel becomes an empty compensation.
    ///
    /// Errors: `E` from `busi`, or a database error converted into `E`.
    pub fn call<T, E, F>(
        &mut self,
        conn: &mut PgConnection,
        busi: F,
    ) -> Result<BarrierOutcome<T>, E>
    where
        F: FnOnce(&mut PgConnection) -> Result<T, E>,
        E: From<DieselError>,
    {
        self.calls += 1;
        let barrier_id = format!("{:02}", self.calls);
        conn.transaction(|conn| {
            // A Cancel first claims the Try's slot: if that insert succeeds, Try never ran here,
            // and the row (reason `cancel`) makes a Try arriving later a no-op.
            let try_slot_taken_by_cancel =
                self.op == Op::Cancel && self.insert(conn, Op::Try, &barrier_id)?;
            if !self.insert(conn, self.op, &barrier_id)? {
                return Ok(self.classify_skipped(conn, &barrier_id)?);
            }
            if try_slot_taken_by_cancel {
                return Ok(BarrierOutcome::EmptyCompensation);
            }
            busi(conn).map(BarrierOutcome::Applied)
        })
    }

    /// Inserts the row for `op` unless it exists (DTM's statement: `ON CONFLICT ON CONSTRAINT
    /// uniq_barrier DO NOTHING`, [`UNIQUE_CONSTRAINT`]); `true` when this call inserted it.
    fn insert(&self, conn: &mut PgConnection, op: Op, barrier_id: &str) -> QueryResult<bool> {
        use diesel::upsert::on_constraint;
        use schema::barrier::dsl;
        let inserted = diesel::insert_into(dsl::barrier)
            .values((
                dsl::trans_type.eq(self.trans_type.as_str()),
                dsl::gid.eq(&self.gid),
                dsl::branch_id.eq(&self.branch_id),
                dsl::op.eq(op.as_str()),
                dsl::barrier_id.eq(barrier_id),
                dsl::reason.eq(self.op.as_str()),
            ))
            .on_conflict(on_constraint(UNIQUE_CONSTRAINT))
            .do_nothing()
            .execute(conn)?;
        Ok(inserted == 1)
    }

    /// Why the row for the current op was already there.
    fn classify_skipped<T>(
        &self,
        conn: &mut PgConnection,
        barrier_id: &str,
    ) -> QueryResult<BarrierOutcome<T>> {
        use schema::barrier::dsl;
        if self.op != Op::Try {
            return Ok(BarrierOutcome::Duplicate);
        }
        let reason: String = dsl::barrier
            .filter(dsl::gid.eq(&self.gid))
            .filter(dsl::branch_id.eq(&self.branch_id))
            .filter(dsl::op.eq(Op::Try.as_str()))
            .filter(dsl::barrier_id.eq(barrier_id))
            .select(dsl::reason)
            .first(conn)?;
        Ok(if reason == Op::Cancel.as_str() {
            BarrierOutcome::Hanging
        } else {
            BarrierOutcome::Duplicate
        })
    }
}
