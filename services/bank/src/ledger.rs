//! The business code of each branch op, run by the handlers ([`crate::handlers`]) inside the
//! sub-transaction barrier's database transaction. Each function sees only first deliveries:
//! the barrier already skipped duplicates, empty compensations and hanging Trys. A Try reads its
//! body; a Confirm or Cancel only its branch's hold, found by gid and branch_id.
//!
//! Rows are locked (`SELECT ... FOR UPDATE`) before they are read for a decision, so concurrent
//! branches on one account serialize. Arithmetic is checked; the CHECK constraints of the
//! migration are the last line of defence.

use chrono::{DateTime, Utc};
use diesel::expression::AsExpression;
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::serialize::{self, Output, ToSql};
use diesel::sql_types::Text;
use serde::{Deserialize, Serialize};
use service_kit::fault::BranchFaults;
use service_kit::gid_view::{barrier_rows, BarrierRow};
use service_kit::reservation::ReservationState;
use tcc::protocol::BranchQuery;

use crate::error::BankError;
use crate::schema::{accounts, holds};

/// The body of a Try: `{"account_id": 1, "amount": 30, "fault": {...}?}`, unknown fields
/// refused.
///
/// Confirm and Cancel are sent the data the AP registered, but never parse it as this type: they
/// act on the hold their Try placed (only the demo `fault` is read from their body, leniently,
/// by [`service_kit::fault::inject_faults`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferRequest {
    /// The account to debit (TransOut) or credit (TransIn), > 0.
    #[schema(minimum = 1)]
    pub account_id: i64,
    /// Minor units, > 0.
    #[schema(minimum = 1)]
    pub amount: i64,
    /// Demo fault injection ([`service_kit::fault`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<BranchFaults>,
}

impl TransferRequest {
    /// `account_id` and `amount` must be > 0 ([`BankError::InvalidRequest`] otherwise).
    pub fn validate(&self) -> Result<(), BankError> {
        if self.account_id <= 0 {
            return Err(BankError::InvalidRequest(format!(
                "account_id must be > 0, got {}",
                self.account_id
            )));
        }
        if self.amount <= 0 {
            return Err(BankError::InvalidRequest(format!(
                "amount must be > 0 (integer minor units), got {}",
                self.amount
            )));
        }
        Ok(())
    }
}

/// The query behind the bank's tentative-hold gauges of `GET /api/metrics`
/// (`tcc_rm_tentative_reservations`, `tcc_rm_tentative_oldest_age_seconds`, see
/// [`service_kit::metrics::RmMetrics::new`]): how many holds are still `tentative` (a Try froze
/// funds or promised a credit, and neither Confirm nor Cancel has settled it) and the age in
/// seconds of the oldest, by the database's clock (NULL when there is none). Runs at every
/// scrape; the partial index `holds_tentative_idx` covers exactly the tentative rows.
pub const TENTATIVE_HOLDS_SQL: &str = "SELECT count(*) AS tentative, \
     EXTRACT(EPOCH FROM now() - min(created_at))::float8 AS oldest_age_seconds \
     FROM holds WHERE state = 'tentative'";

/// `GET /api/accounts/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AccountView {
    /// The account number.
    pub id: i64,
    /// Money on the account, minor units, frozen part included.
    pub balance: i64,
    /// Frozen funds of outgoing transfers in flight; spendable = `balance - trading_balance`.
    pub trading_balance: i64,
    /// A locked account refuses new Trys.
    pub locked: bool,
    /// Sum of incoming credits whose TransIn Try succeeded and Confirm has not run yet.
    pub pending_in: i64,
    /// Last change of the account row.
    pub updated_at: DateTime<Utc>,
}

/// One account row.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = accounts, check_for_backend(diesel::pg::Pg))]
struct Account {
    id: i64,
    balance: i64,
    trading_balance: i64,
    locked: bool,
    updated_at: DateTime<Utc>,
}

/// Which way a hold moves money: the `holds.direction` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, AsExpression)]
#[diesel(sql_type = Text)]
pub enum Direction {
    /// `out`: TransOut froze the amount in `accounts.trading_balance`.
    Out,
    /// `in`: TransIn promised a credit of the amount, added to the balance on Confirm.
    In,
}

impl Direction {
    /// The stored word: `out` or `in`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Out => "out",
            Direction::In => "in",
        }
    }
}

impl ToSql<Text, Pg> for Direction {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
        <str as ToSql<Text, Pg>>::to_sql(self.as_str(), out)
    }
}

/// One hold row, the fields settling it needs.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = holds, check_for_backend(diesel::pg::Pg))]
struct Hold {
    account_id: i64,
    amount: i64,
    state: ReservationState,
}

/// TransOut Try: freezes `amount` (`trading_balance += amount`) and places an `out` hold.
/// Refuses a missing or locked account and insufficient spendable funds.
pub fn trans_out_try(
    conn: &mut PgConnection,
    query: &BranchQuery,
    req: &TransferRequest,
) -> Result<(), BankError> {
    let account = lock_account_for_try(conn, req.account_id)?;
    let spendable = account
        .balance
        .checked_sub(account.trading_balance)
        .ok_or_else(|| inconsistent(&account))?;
    if spendable < req.amount {
        return Err(BankError::InsufficientFunds {
            account_id: account.id,
            spendable,
            amount: req.amount,
        });
    }
    let trading_balance = account
        .trading_balance
        .checked_add(req.amount)
        .ok_or_else(|| inconsistent(&account))?;
    update_balances(conn, account.id, account.balance, trading_balance)?;
    place_hold(conn, query, account.id, req.amount, Direction::Out)
}

/// TransOut Confirm: the frozen funds leave (`balance -= amount, trading_balance -= amount`,
/// amount from the hold).
pub fn trans_out_confirm(conn: &mut PgConnection, query: &BranchQuery) -> Result<(), BankError> {
    settle_hold(
        conn,
        query,
        Direction::Out,
        ReservationState::Confirmed,
        |a, amount| {
            Some((
                a.balance.checked_sub(amount)?,
                a.trading_balance.checked_sub(amount)?,
            ))
        },
    )
}

/// TransOut Cancel: unfreezes (`trading_balance -= amount`, amount from the hold). Without a
/// hold it does nothing: the Try was refused and rolled back.
pub fn trans_out_cancel(conn: &mut PgConnection, query: &BranchQuery) -> Result<(), BankError> {
    settle_hold(
        conn,
        query,
        Direction::Out,
        ReservationState::Cancelled,
        |a, amount| Some((a.balance, a.trading_balance.checked_sub(amount)?)),
    )
}

/// TransIn Try: places an `in` hold; the credit stays pending (not spendable) until Confirm.
/// Refuses a missing or locked account, and a credit that would overflow the balance once every
/// pending credit is confirmed.
pub fn trans_in_try(
    conn: &mut PgConnection,
    query: &BranchQuery,
    req: &TransferRequest,
) -> Result<(), BankError> {
    let account = lock_account_for_try(conn, req.account_id)?;
    let fits = pending_in(conn, account.id)?
        .and_then(|pending| account.balance.checked_add(pending))
        .and_then(|total| total.checked_add(req.amount))
        .is_some();
    if !fits {
        return Err(BankError::BalanceOverflow {
            account_id: account.id,
            amount: req.amount,
        });
    }
    place_hold(conn, query, account.id, req.amount, Direction::In)
}

/// TransIn Confirm: the pending credit lands (`balance += amount`, amount from the hold).
pub fn trans_in_confirm(conn: &mut PgConnection, query: &BranchQuery) -> Result<(), BankError> {
    settle_hold(
        conn,
        query,
        Direction::In,
        ReservationState::Confirmed,
        |a, amount| Some((a.balance.checked_add(amount)?, a.trading_balance)),
    )
}

/// TransIn Cancel: the pending credit is dropped; balances do not change.
pub fn trans_in_cancel(conn: &mut PgConnection, query: &BranchQuery) -> Result<(), BankError> {
    settle_hold(
        conn,
        query,
        Direction::In,
        ReservationState::Cancelled,
        |a, _| Some((a.balance, a.trading_balance)),
    )
}

/// The account as `GET /api/accounts/{id}` shows it, `None` when it does not exist.
pub fn account_view(conn: &mut PgConnection, id: i64) -> Result<Option<AccountView>, BankError> {
    let Some(account) = accounts::table
        .find(id)
        .select(Account::as_select())
        .first(conn)
        .optional()?
    else {
        return Ok(None);
    };
    let pending_in = pending_in(conn, id)?.ok_or_else(|| inconsistent(&account))?;
    Ok(Some(AccountView {
        id: account.id,
        balance: account.balance,
        trading_balance: account.trading_balance,
        locked: account.locked,
        pending_in,
        updated_at: account.updated_at,
    }))
}

/// One hold as `GET /api/branches/{gid}` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Queryable, Selectable, utoipa::ToSchema)]
#[diesel(table_name = holds, check_for_backend(diesel::pg::Pg))]
pub struct HoldView {
    /// The branch that placed it.
    pub branch_id: String,
    /// The account it moves money on.
    pub account_id: i64,
    /// Minor units.
    pub amount: i64,
    /// `out` (funds frozen) or `in` (a credit promised).
    pub direction: String,
    /// `tentative` (Try done), `confirmed` or `cancelled`.
    pub state: String,
    /// When the Try placed it.
    pub created_at: DateTime<Utc>,
    /// When it last changed (its Confirm or Cancel).
    pub updated_at: DateTime<Utc>,
}

/// `GET /api/branches/{gid}` at a bank: what it holds for one global transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct BankBranchesView {
    /// The global transaction id.
    pub gid: String,
    /// The gid's holds, oldest first.
    pub holds: Vec<HoldView>,
    /// The rows the barrier wrote for the gid, in order.
    pub barrier: Vec<BarrierRow>,
}

/// The bank's holds and barrier rows for `gid` (the route runs it in one snapshot).
pub fn branches_view(conn: &mut PgConnection, gid: &str) -> QueryResult<BankBranchesView> {
    let holds = holds::table
        .filter(holds::gid.eq(gid))
        .order(holds::id)
        .select(HoldView::as_select())
        .load(conn)?;
    let barrier = barrier_rows(conn, gid)?;
    let gid = gid.to_owned();
    Ok(BankBranchesView {
        gid,
        holds,
        barrier,
    })
}

/// Creates accounts `1..=count` with `balance` each, in one statement, only when the table is
/// empty; existing rows are never touched. Returns the number of accounts created.
pub fn seed_accounts(conn: &mut PgConnection, count: u32, balance: i64) -> QueryResult<usize> {
    if count == 0 {
        return Ok(0);
    }
    diesel::sql_query(
        "INSERT INTO accounts (id, balance) \
         SELECT n, $2 FROM generate_series(1::BIGINT, $1) AS n \
         WHERE NOT EXISTS (SELECT 1 FROM accounts) \
         ON CONFLICT (id) DO NOTHING",
    )
    .bind::<diesel::sql_types::BigInt, _>(i64::from(count))
    .bind::<diesel::sql_types::BigInt, _>(balance)
    .execute(conn)
}

/// Locks the account a Try names; refuses a missing or locked one.
fn lock_account_for_try(conn: &mut PgConnection, id: i64) -> Result<Account, BankError> {
    let account = accounts::table
        .find(id)
        .select(Account::as_select())
        .for_update()
        .first(conn)
        .optional()?
        .ok_or(BankError::AccountMissing(id))?;
    if account.locked {
        return Err(BankError::AccountLocked(id));
    }
    Ok(account)
}

/// Sum of the tentative incoming holds of an account; `None` if it does not fit in an i64.
fn pending_in(conn: &mut PgConnection, account_id: i64) -> QueryResult<Option<i64>> {
    let amounts: Vec<i64> = holds::table
        .filter(holds::account_id.eq(account_id))
        .filter(holds::direction.eq(Direction::In))
        .filter(holds::state.eq(ReservationState::Tentative))
        .select(holds::amount)
        .load(conn)?;
    Ok(amounts.into_iter().try_fold(0i64, i64::checked_add))
}

fn update_balances(
    conn: &mut PgConnection,
    id: i64,
    balance: i64,
    trading_balance: i64,
) -> QueryResult<()> {
    diesel::update(accounts::table.find(id))
        .set((
            accounts::balance.eq(balance),
            accounts::trading_balance.eq(trading_balance),
            accounts::updated_at.eq(diesel::dsl::now),
        ))
        .execute(conn)
        .map(|_| ())
}

fn place_hold(
    conn: &mut PgConnection,
    query: &BranchQuery,
    account_id: i64,
    amount: i64,
    direction: Direction,
) -> Result<(), BankError> {
    diesel::insert_into(holds::table)
        .values((
            holds::gid.eq(&query.gid),
            holds::branch_id.eq(&query.branch_id),
            holds::account_id.eq(account_id),
            holds::amount.eq(amount),
            holds::direction.eq(direction),
            holds::state.eq(ReservationState::Tentative),
        ))
        .execute(conn)?;
    Ok(())
}

/// Moves this branch's tentative hold to `target` (`confirmed` or `cancelled`) and sets the
/// account's `(balance, trading_balance)` to what `apply` computes from the hold's amount.
///
/// No hold: a Cancel does nothing (its Try was refused and rolled back), a Confirm is refused.
/// A hold already in `target` is left alone; one settled the other way is refused.
fn settle_hold(
    conn: &mut PgConnection,
    query: &BranchQuery,
    direction: Direction,
    target: ReservationState,
    apply: impl FnOnce(&Account, i64) -> Option<(i64, i64)>,
) -> Result<(), BankError> {
    let hold: Option<Hold> = holds::table
        .filter(holds::gid.eq(&query.gid))
        .filter(holds::branch_id.eq(&query.branch_id))
        .filter(holds::direction.eq(direction))
        .select(Hold::as_select())
        .for_update()
        .first(conn)
        .optional()?;
    let Some(hold) = hold else {
        if target == ReservationState::Cancelled {
            return Ok(());
        }
        return Err(BankError::HoldMissing {
            gid: query.gid.clone(),
            branch_id: query.branch_id.clone(),
        });
    };
    if hold.state == target {
        return Ok(());
    }
    if hold.state != ReservationState::Tentative {
        return Err(BankError::HoldSettled {
            gid: query.gid.clone(),
            branch_id: query.branch_id.clone(),
            state: hold.state,
        });
    }
    let account = accounts::table
        .find(hold.account_id)
        .select(Account::as_select())
        .for_update()
        .first(conn)?;
    let (balance, trading_balance) = apply(&account, hold.amount)
        .filter(|&(b, t)| 0 <= t && t <= b)
        .ok_or_else(|| {
            BankError::Inconsistent(format!(
                "gid={} branch_id={}: a hold of {} cannot be settled on account {} \
                 (balance {}, trading_balance {})",
                query.gid,
                query.branch_id,
                hold.amount,
                account.id,
                account.balance,
                account.trading_balance
            ))
        })?;
    if (balance, trading_balance) != (account.balance, account.trading_balance) {
        update_balances(conn, account.id, balance, trading_balance)?;
    }
    diesel::update(
        holds::table
            .filter(holds::gid.eq(&query.gid))
            .filter(holds::branch_id.eq(&query.branch_id)),
    )
    .set((
        holds::state.eq(target),
        holds::updated_at.eq(diesel::dsl::now),
    ))
    .execute(conn)?;
    Ok(())
}

fn inconsistent(account: &Account) -> BankError {
    BankError::Inconsistent(format!(
        "account {}: balance {}, trading_balance {}",
        account.id, account.balance, account.trading_balance
    ))
}
