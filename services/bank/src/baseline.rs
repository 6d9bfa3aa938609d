//! The non-TCC floor of the benchmark (`scripts/bench.sh baseline`): the same business
//! change as a transfer's branch, as one plain local database transaction, with no barrier, no
//! hold and no second phase.
//!
//! * `POST /api/BaselineTransOut` (trans-out): `balance -= amount` if the account exists, is not
//!   locked and has `amount` spendable.
//! * `POST /api/BaselineTransIn` (trans-in): `balance += amount` if the account exists, is not
//!   locked and the balance does not overflow.
//!
//! Body `{"account_id": 1, "amount": 30}` (minor units, both > 0). Answers `200
//! {"dtm_result":"SUCCESS"}`; a refusal is `409 {"dtm_result":"FAILURE","message":...}` and bad
//! input `400 {"error":"invalid_request",...}`, through [`BankError`] like the branch endpoints.
//!
//! This is **not** a way to move money between banks safely: a credit that fails after its debit
//! committed leaves the money gone from bank A. That is exactly what TCC is for; the endpoints
//! exist only to measure what TCC costs over the bare business work, on the same HTTP stack,
//! pool and database.

use actix_web::{web, HttpResponse};
use diesel::prelude::*;
use serde::Deserialize;
use service_kit::db::{blocking, DbPool};
use tcc::protocol::BranchReply;

use crate::configuration::{Role, Settings};
use crate::error::BankError;
use crate::schema::accounts;

/// The body of both baseline endpoints.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaselineRequest {
    /// The account to debit (trans-out) or credit (trans-in), > 0.
    pub account_id: i64,
    /// Minor units, > 0.
    pub amount: i64,
}

/// The path of the role's baseline endpoint: `BaselineTransOut` or `BaselineTransIn`.
pub fn endpoint(role: Role) -> &'static str {
    match role {
        Role::TransOut => "BaselineTransOut",
        Role::TransIn => "BaselineTransIn",
    }
}

/// Registers `POST /api/<endpoint(role)>`.
pub fn configure(cfg: &mut web::ServiceConfig, settings: &Settings) {
    let role = settings.role;
    cfg.route(
        &format!("/api/{}", endpoint(role)),
        web::post().to(
            move |pool: web::Data<DbPool>, body: service_kit::http::JsonObject<BaselineRequest>| {
                handle(role, pool, body.0)
            },
        ),
    );
}

async fn handle(
    role: Role,
    pool: web::Data<DbPool>,
    req: BaselineRequest,
) -> Result<HttpResponse, BankError> {
    if req.account_id <= 0 || req.amount <= 0 {
        return Err(BankError::InvalidRequest(format!(
            "account_id and amount must be > 0, got {} and {}",
            req.account_id, req.amount
        )));
    }
    blocking(&pool, move |conn| apply(conn, role, &req)).await??;
    Ok(BranchReply::Success.to_response())
}

/// The debit or credit, as one statement (so one commit): the conditions that a Try checks are
/// in its `WHERE`, and when no row changed a second read says which one failed.
pub fn apply(conn: &mut PgConnection, role: Role, req: &BaselineRequest) -> Result<(), BankError> {
    use accounts::dsl as a;
    let target = a::accounts
        .filter(a::id.eq(req.account_id))
        .filter(a::locked.eq(false));
    let changed = match role {
        Role::TransOut => {
            diesel::update(target.filter((a::balance - a::trading_balance).ge(req.amount)))
                .set((
                    a::balance.eq(a::balance - req.amount),
                    a::updated_at.eq(diesel::dsl::now),
                ))
                .execute(conn)?
        }
        Role::TransIn => diesel::update(target.filter(a::balance.le(i64::MAX - req.amount)))
            .set((
                a::balance.eq(a::balance + req.amount),
                a::updated_at.eq(diesel::dsl::now),
            ))
            .execute(conn)?,
    };
    if changed == 1 {
        return Ok(());
    }
    let found: Option<(i64, i64, bool)> = a::accounts
        .find(req.account_id)
        .select((a::balance, a::trading_balance, a::locked))
        .first(conn)
        .optional()?;
    Err(match found {
        None => BankError::AccountMissing(req.account_id),
        Some((_, _, true)) => BankError::AccountLocked(req.account_id),
        Some((balance, trading, false)) if role == Role::TransOut => BankError::InsufficientFunds {
            account_id: req.account_id,
            spendable: balance - trading,
            amount: req.amount,
        },
        Some(_) => BankError::BalanceOverflow {
            account_id: req.account_id,
            amount: req.amount,
        },
    })
}
