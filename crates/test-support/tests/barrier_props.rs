//! The sub-transaction barrier's decision table (docs/ARCHITECTURE.md#the-sub-transaction-barrier)
//! as properties, on a real Postgres
//! database: proptest generates sequences of Try/Confirm/Cancel deliveries for one to three
//! branches of a global transaction, with duplicates, out-of-order arrivals and business
//! refusals, runs each delivery through [`BranchBarrier::call`] as an RM would, and compares what
//! happened with a model of the table.
//!
//! The business code of every delivery inserts a row `(gid, branch_id, op)` into `effects` and,
//! when the generated delivery says so, then refuses (`Err`), which must roll the effect back
//! with the barrier row. After every delivery the test checks:
//!
//! * the [`BarrierOutcome`] kind (or the refusal) is the model's;
//! * the `effects` rows and the barrier rows `(branch_id, op, reason)` are the model's;
//! * and, stated directly rather than through the model: each op's effect is applied at most
//!   once per branch; a Cancel's effect follows an applied Try; a Try delivered after a Cancel
//!   never applies; a Cancel before any applied Try is an empty compensation; once a Cancel has
//!   been answered, nothing stays frozen (as many Cancel effects as Try effects).
//!
//! A second property runs two deliveries of one branch at the same time on two connections and
//! checks that the result is the result of one of their two serial orders (the unique index
//! serializes them), plus the at-most-once and no-frozen-leftover properties.
//!
//! Each test uses one database; every case uses fresh gids, so cases do not see each other. The
//! number of cases is bounded (`PROPTEST_CASES` overrides it); a failure prints the shrunk
//! sequence of deliveries.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Barrier;

use diesel::prelude::*;
use diesel::result::Error as DieselError;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};
use tcc::barrier::{BarrierOutcome, BranchBarrier};
use tcc::protocol::{BranchQuery, Op, TransType};
use test_support::TestDb;

/// Cases of the sequential property: about 3 s on a two-core machine.
const SEQUENTIAL_CASES: u32 = 192;
/// Cases of the concurrent property: about 4 s on a two-core machine.
const CONCURRENT_CASES: u32 = 96;
/// The branch ids a case may use.
const BRANCH_IDS: [&str; 3] = ["01", "02", "03"];

diesel::table! {
    /// What the business code of each delivery did, one row per applied effect. No unique
    /// index on purpose: an effect applied twice must show up as two rows.
    effects (id) {
        id -> Int8,
        gid -> Text,
        branch_id -> Text,
        op -> Text,
    }
}

/// One request reaching the RM: `op` for branch `BRANCH_IDS[branch]`, whose business code
/// refuses (returns `Err`, rolling back) when `refuse` is set, after `delay_ms` inside the
/// transaction (to make concurrent deliveries overlap).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Delivery {
    branch: usize,
    op: Op,
    refuse: bool,
    delay_ms: u8,
}

impl fmt::Display for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} of branch {}", self.op, BRANCH_IDS[self.branch])?;
        if self.refuse {
            f.write_str(" (business refuses)")?;
        }
        if self.delay_ms > 0 {
            write!(f, " (business takes {} ms)", self.delay_ms)?;
        }
        Ok(())
    }
}

/// What one delivery came to: the [`BarrierOutcome`] kind, or the business refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Applied,
    EmptyCompensation,
    Duplicate,
    Hanging,
    /// The business code returned `Err`: nothing committed, the RM answers FAILURE (a Try) or an
    /// error the TM retries (a Confirm or Cancel).
    Refused,
}

/// The business code's error: its own refusal, or the database's.
#[derive(Debug)]
enum BusinessError {
    Refused,
    Db(DieselError),
}

impl From<DieselError> for BusinessError {
    fn from(e: DieselError) -> Self {
        BusinessError::Db(e)
    }
}

/// The barrier's decision table (docs/ARCHITECTURE.md#the-sub-transaction-barrier) for one
/// branch, written from the table rather than from
/// the code: which barrier rows exist, and which effects the business code applied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct BranchModel {
    /// The `try` row's reason: `Try` when a Try applied, `Cancel` when a Cancel took the slot
    /// first (empty compensation), `None` when there is no row.
    try_row: Option<Op>,
    confirm_row: bool,
    cancel_row: bool,
    /// Applied effects, in order.
    effects: Vec<Op>,
}

impl BranchModel {
    fn deliver(&mut self, d: &Delivery) -> Outcome {
        match d.op {
            Op::Try => match self.try_row {
                // Barrier step 2: a Try arriving after its Cancel finds the slot taken.
                Some(Op::Cancel) => Outcome::Hanging,
                Some(_) => Outcome::Duplicate,
                // A refused Try rolls its barrier row back with the business change.
                None if d.refuse => Outcome::Refused,
                None => {
                    self.try_row = Some(Op::Try);
                    self.effects.push(Op::Try);
                    Outcome::Applied
                }
            },
            Op::Confirm => {
                if self.confirm_row {
                    Outcome::Duplicate
                } else if d.refuse {
                    Outcome::Refused
                } else {
                    self.confirm_row = true;
                    self.effects.push(Op::Confirm);
                    Outcome::Applied
                }
            }
            Op::Cancel => {
                if self.cancel_row {
                    Outcome::Duplicate
                } else if self.try_row.is_none() {
                    // Barrier step 1: Try never ran; the Cancel takes its slot and commits
                    // without running the business code (so a refusal cannot happen).
                    self.try_row = Some(Op::Cancel);
                    self.cancel_row = true;
                    Outcome::EmptyCompensation
                } else if d.refuse {
                    Outcome::Refused
                } else {
                    self.cancel_row = true;
                    self.effects.push(Op::Cancel);
                    Outcome::Applied
                }
            }
        }
    }

    /// The barrier rows `(op, reason)` this state implies.
    fn barrier_rows(&self) -> BTreeSet<(String, String)> {
        let mut rows = BTreeSet::new();
        if let Some(reason) = self.try_row {
            rows.insert(("try".to_owned(), reason.as_str().to_owned()));
        }
        if self.confirm_row {
            rows.insert(("confirm".to_owned(), "confirm".to_owned()));
        }
        if self.cancel_row {
            rows.insert(("cancel".to_owned(), "cancel".to_owned()));
        }
        rows
    }
}

/// One database for a whole test: the barrier migration and the `effects` table.
fn database() -> TestDb {
    let db = TestDb::create("barrier_props");
    let mut conn = db.connect();
    tcc::barrier::run_migrations(&mut conn).expect("the barrier migration runs");
    diesel::sql_query(
        "CREATE TABLE effects (id BIGSERIAL PRIMARY KEY, gid TEXT NOT NULL, \
         branch_id TEXT NOT NULL, op TEXT NOT NULL)",
    )
    .execute(&mut conn)
    .expect("effects table");
    db
}

/// A gid no other case of this process used.
fn fresh_gid(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("{prefix}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Runs `d` through the barrier on `conn` as an RM's handler would: a new [`BranchBarrier`] per
/// request, the business change inside `call`.
fn deliver(conn: &mut PgConnection, gid: &str, d: &Delivery) -> Result<Outcome, TestCaseError> {
    let query = BranchQuery {
        gid: gid.to_owned(),
        trans_type: TransType::Tcc,
        branch_id: BRANCH_IDS[d.branch].to_owned(),
        op: d.op,
        dtm: None,
    };
    let mut barrier = BranchBarrier::new(&query);
    let result = barrier.call(conn, |conn| {
        if d.delay_ms > 0 {
            diesel::sql_query(format!(
                "SELECT pg_sleep({})",
                f64::from(d.delay_ms) / 1000.0
            ))
            .execute(conn)?;
        }
        diesel::insert_into(effects::table)
            .values((
                effects::gid.eq(gid),
                effects::branch_id.eq(BRANCH_IDS[d.branch]),
                effects::op.eq(d.op.as_str()),
            ))
            .execute(conn)?;
        if d.refuse {
            return Err(BusinessError::Refused);
        }
        Ok(())
    });
    match result {
        Ok(BarrierOutcome::Applied(())) => Ok(Outcome::Applied),
        Ok(BarrierOutcome::EmptyCompensation) => Ok(Outcome::EmptyCompensation),
        Ok(BarrierOutcome::Duplicate) => Ok(Outcome::Duplicate),
        Ok(BarrierOutcome::Hanging) => Ok(Outcome::Hanging),
        Err(BusinessError::Refused) => Ok(Outcome::Refused),
        Err(BusinessError::Db(e)) => Err(TestCaseError::fail(format!("{d}: database error {e}"))),
    }
}

/// What the database holds for one branch of `gid`: (effects in order, barrier rows).
type BranchState = (Vec<Op>, BTreeSet<(String, String)>);

fn branch_state(
    conn: &mut PgConnection,
    gid: &str,
    branch: usize,
) -> Result<BranchState, TestCaseError> {
    use tcc::barrier::schema::barrier::dsl as b;
    let branch_id = BRANCH_IDS[branch];
    let db_err = |e: DieselError| TestCaseError::fail(format!("reading the database: {e}"));
    let applied: Vec<String> = effects::table
        .filter(effects::gid.eq(gid))
        .filter(effects::branch_id.eq(branch_id))
        .order(effects::id)
        .select(effects::op)
        .load(conn)
        .map_err(db_err)?;
    let rows: Vec<(String, String)> = b::barrier
        .filter(b::gid.eq(gid))
        .filter(b::branch_id.eq(branch_id))
        .select((b::op, b::reason))
        .load(conn)
        .map_err(db_err)?;
    let applied = applied
        .iter()
        .map(|op| op.parse::<Op>().expect("effects hold ops"))
        .collect();
    Ok((applied, rows.into_iter().collect()))
}

/// The properties stated directly, independent of the model, for one branch's effects.
fn check_effects(
    effects: &[Op],
    cancel_answered: bool,
    context: &dyn Fn() -> String,
) -> Result<(), TestCaseError> {
    for op in [Op::Try, Op::Confirm, Op::Cancel] {
        let times = effects.iter().filter(|e| **e == op).count();
        prop_assert!(
            times <= 1,
            "{op} applied {times} times: {effects:?}\n{}",
            context()
        );
    }
    if let Some(cancel) = effects.iter().position(|e| *e == Op::Cancel) {
        prop_assert!(
            effects[..cancel].contains(&Op::Try),
            "a Cancel applied its business code without an applied Try before it: {effects:?}\n{}",
            context()
        );
    }
    if cancel_answered {
        let tries = effects.iter().filter(|e| **e == Op::Try).count();
        let cancels = effects.iter().filter(|e| **e == Op::Cancel).count();
        prop_assert_eq!(
            tries,
            cancels,
            "frozen leftover: a Cancel was answered but {} Try effect(s) and {} Cancel effect(s) remain: {:?}\n{}",
            tries,
            cancels,
            effects,
            context()
        );
    }
    Ok(())
}

fn render(deliveries: &[Delivery]) -> String {
    deliveries
        .iter()
        .enumerate()
        .map(|(i, d)| format!("  {}. {d}\n", i + 1))
        .collect()
}

/// The runner's configuration: `cases` unless `PROPTEST_CASES` says otherwise; no regression
/// files (a failure prints its sequence instead); shrinking bounded, since every shrink step
/// runs against the database.
fn config(cases: u32) -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    Config {
        failure_persistence: None,
        max_shrink_iters: 512,
        ..Config::with_cases(cases)
    }
}

/// Panics with the failure and the minimal failing input `show` renders.
fn report<T: fmt::Debug>(result: Result<(), TestError<T>>, show: impl Fn(&T) -> String) {
    match result {
        Ok(()) => {}
        Err(TestError::Fail(reason, value)) => {
            panic!("{reason}\n\nminimal failing input:\n{}", show(&value))
        }
        Err(TestError::Abort(reason)) => panic!("proptest aborted: {reason}"),
    }
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![Just(Op::Try), Just(Op::Confirm), Just(Op::Cancel)]
}

/// A delivery for one of `branches` branches; one in four business calls refuses.
fn delivery(branches: usize, delays: &'static [u8]) -> impl Strategy<Value = Delivery> {
    (
        0..branches,
        op(),
        prop::bool::weighted(0.25),
        prop::sample::select(delays),
    )
        .prop_map(|(branch, op, refuse, delay_ms)| Delivery {
            branch,
            op,
            refuse,
            delay_ms,
        })
}

/// One to three branches, and 1 to 16 deliveries among them: with three ops per branch,
/// duplicates and every order come up often.
fn sequences() -> impl Strategy<Value = Vec<Delivery>> {
    (1..=BRANCH_IDS.len())
        .prop_flat_map(|branches| prop::collection::vec(delivery(branches, &[0]), 1..=16))
}

#[test]
fn the_barrier_follows_its_decision_table_for_any_sequence_of_deliveries() {
    let db = database();
    let conn = RefCell::new(db.connect());
    let mut runner = TestRunner::new(config(SEQUENTIAL_CASES));

    let result = runner.run(&sequences(), |deliveries| {
        let conn = &mut *conn.borrow_mut();
        let gid = fresh_gid("seq");
        let mut models = vec![BranchModel::default(); BRANCH_IDS.len()];
        let mut cancel_answered = [false; BRANCH_IDS.len()];
        let mut cancel_seen = [false; BRANCH_IDS.len()];
        let mut applied_try_seen = [false; BRANCH_IDS.len()];
        for (step, d) in deliveries.iter().enumerate() {
            let context = || {
                format!(
                    "gid={gid}, delivery {} ({d}) of:\n{}",
                    step + 1,
                    render(&deliveries)
                )
            };
            let expected = models[d.branch].deliver(d);
            let actual = deliver(conn, &gid, d)?;

            prop_assert_eq!(actual, expected, "outcome\n{}", context());
            let (applied, rows) = branch_state(conn, &gid, d.branch)?;
            prop_assert_eq!(
                &applied,
                &models[d.branch].effects,
                "effects\n{}",
                context()
            );
            prop_assert_eq!(
                &rows,
                &models[d.branch].barrier_rows(),
                "barrier rows (op, reason)\n{}",
                context()
            );

            // The decision table's rows, stated directly.
            if d.op == Op::Try && cancel_seen[d.branch] {
                prop_assert_ne!(
                    actual,
                    Outcome::Applied,
                    "a Try after a Cancel applied\n{}",
                    context()
                );
            }
            if d.op == Op::Cancel && !applied_try_seen[d.branch] && !cancel_seen[d.branch] {
                prop_assert_eq!(
                    actual,
                    Outcome::EmptyCompensation,
                    "a first Cancel before any applied Try\n{}",
                    context()
                );
            }
            if d.op == Op::Try && actual == Outcome::Applied {
                applied_try_seen[d.branch] = true;
            }
            if d.op == Op::Cancel && actual != Outcome::Refused {
                cancel_answered[d.branch] = true;
                cancel_seen[d.branch] = true;
            }
            check_effects(&applied, cancel_answered[d.branch], &context)?;
        }
        Ok(())
    });

    report(result, |deliveries| render(deliveries));
}

/// A concurrent case: deliveries run one after the other first, then two at the same time.
#[derive(Debug, Clone)]
struct Race {
    before: Vec<Delivery>,
    pair: (Delivery, Delivery),
}

fn render_race(race: &Race) -> String {
    format!(
        "first, one after the other:\n{}then at the same time on two connections:\n  A. {}\n  B. {}\n",
        render(&race.before),
        race.pair.0,
        race.pair.1
    )
}

/// One branch: up to three deliveries, then a pair. The pair's second op is mostly one that
/// contends for the same barrier row as the first (the same op, or Try against Cancel), and
/// each business call sometimes takes 20 ms, so that one delivery of the pair often waits on
/// the barrier's unique index for the other's commit or rollback.
fn races() -> impl Strategy<Value = Race> {
    const DELAYS: &[u8] = &[0, 20];
    let pair = delivery(1, DELAYS).prop_flat_map(|a| {
        let rival = match a.op {
            Op::Try => Op::Cancel,
            Op::Cancel => Op::Try,
            Op::Confirm => Op::Confirm,
        };
        let b_op = prop_oneof![2 => Just(a.op), 2 => Just(rival), 1 => op()];
        (Just(a), delivery(1, DELAYS), b_op).prop_map(|(a, b, op)| (a, Delivery { op, ..b }))
    });
    (prop::collection::vec(delivery(1, &[0]), 0..=3), pair)
        .prop_map(|(before, pair)| Race { before, pair })
}

#[test]
fn concurrent_deliveries_of_a_branch_end_as_one_of_their_serial_orders() {
    let db = database();
    let conns = RefCell::new([db.connect(), db.connect()]);
    let start = Barrier::new(2);
    let mut runner = TestRunner::new(config(CONCURRENT_CASES));

    let result = runner.run(&races(), |race| {
        let mut conns = conns.borrow_mut();
        let [conn_a, conn_b] = &mut *conns;
        let gid = fresh_gid("race");
        let context = || format!("gid={gid}\n{}", render_race(&race));
        let mut model = BranchModel::default();
        let mut cancel_answered = false;
        for d in &race.before {
            let expected = model.deliver(d);
            prop_assert_eq!(deliver(conn_a, &gid, d)?, expected, "{}", context());
            cancel_answered |= d.op == Op::Cancel && expected != Outcome::Refused;
        }

        let (a, b) = race.pair;
        let (outcome_a, outcome_b) = std::thread::scope(|s| {
            let (gid, start) = (&gid, &start);
            let first = s.spawn(move || {
                start.wait();
                deliver(conn_a, gid, &a)
            });
            let second = s.spawn(move || {
                start.wait();
                deliver(conn_b, gid, &b)
            });
            (
                first.join().expect("delivery A panicked"),
                second.join().expect("delivery B panicked"),
            )
        });
        let (outcome_a, outcome_b) = (outcome_a?, outcome_b?);
        let state = branch_state(&mut conns[0], &gid, 0)?;

        // Linearizability: the outcomes and the final state are those of A then B, or B then A.
        let serial = |first: &Delivery, second: &Delivery, a_first: bool| {
            let mut m = model.clone();
            let (x, y) = (m.deliver(first), m.deliver(second));
            let outcomes = if a_first { (x, y) } else { (y, x) };
            (outcomes, (m.effects.clone(), m.barrier_rows()))
        };
        let orders = [serial(&a, &b, true), serial(&b, &a, false)];
        let actual = ((outcome_a, outcome_b), state.clone());
        prop_assert!(
            orders.contains(&actual),
            "outcomes (A, B) and final (effects, barrier rows) {:?}\nmatch neither A-then-B {:?}\nnor B-then-A {:?}\n{}",
            actual,
            orders[0],
            orders[1],
            context()
        );

        cancel_answered |= (a.op == Op::Cancel && outcome_a != Outcome::Refused)
            || (b.op == Op::Cancel && outcome_b != Outcome::Refused);
        check_effects(&state.0, cancel_answered, &context)?;
        Ok(())
    });

    report(result, render_race);
}
