//! The business code of each branch op, run by the handlers ([`crate::handlers`]) inside the
//! sub-transaction barrier's database transaction: Try reserves what its body asks for, Confirm
//! deducts and Cancel releases the branch's reservation, found by gid and branch_id. Rows are
//! locked before they are read for a decision; arithmetic is checked; the CHECK constraints make
//! overselling impossible even if this code were wrong.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use service_kit::fault::BranchFaults;
use service_kit::gid_view::{barrier_rows, BarrierRow};
use service_kit::reservation::ReservationState;
use tcc::protocol::BranchQuery;

use crate::error::StockError;
use crate::schema::{products, reservations};

/// The body of a Try: `{"product_id": 1, "quantity": 2, "fault": {...}?}`, unknown fields
/// refused.
///
/// Confirm and Cancel are sent the data the AP registered, but never parse it as this type: they
/// act on the reservation their Try made (only the demo `fault` is read from their body,
/// leniently, by [`service_kit::fault::inject_faults`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReserveRequest {
    /// The product, > 0.
    #[schema(minimum = 1)]
    pub product_id: i64,
    /// Units, > 0.
    #[schema(minimum = 1)]
    pub quantity: i64,
    /// Demo fault injection ([`service_kit::fault`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<BranchFaults>,
}

impl ReserveRequest {
    /// `product_id` and `quantity` must be > 0 ([`StockError::InvalidRequest`] otherwise).
    pub fn validate(&self) -> Result<(), StockError> {
        if self.product_id <= 0 {
            return Err(StockError::InvalidRequest(format!(
                "product_id must be > 0, got {}",
                self.product_id
            )));
        }
        if self.quantity <= 0 {
            return Err(StockError::InvalidRequest(format!(
                "quantity must be > 0, got {}",
                self.quantity
            )));
        }
        Ok(())
    }
}

/// The query behind the stock service's tentative-reservation gauges of `GET /api/metrics`
/// (`tcc_rm_tentative_reservations`, `tcc_rm_tentative_oldest_age_seconds`, see
/// [`service_kit::metrics::RmMetrics::new`]): how many reservations are still `tentative` (a
/// StockTry reserved units, and neither Confirm nor Cancel has settled them) and the age in
/// seconds of the oldest, by the database's clock (NULL when there is none). Runs at every
/// scrape; the partial index `reservations_tentative_idx` covers exactly the tentative rows.
pub const TENTATIVE_RESERVATIONS_SQL: &str = "SELECT count(*) AS tentative, \
     EXTRACT(EPOCH FROM now() - min(created_at))::float8 AS oldest_age_seconds \
     FROM reservations WHERE state = 'tentative'";

/// `GET /api/products/{id}`.
#[derive(
    Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Queryable, Selectable, utoipa::ToSchema,
)]
#[diesel(table_name = products, check_for_backend(diesel::pg::Pg))]
pub struct ProductView {
    /// The product number.
    pub id: i64,
    /// Display name.
    pub name: String,
    /// Unit price, minor units.
    pub price: i64,
    /// Units in the warehouse, reserved ones included.
    pub stock: i64,
    /// Units held by unsettled Trys.
    pub reserved: i64,
    /// `stock - reserved`: what a new Try may reserve.
    #[diesel(select_expression = products::stock - products::reserved)]
    pub available: i64,
    /// Last change of the product row.
    pub updated_at: DateTime<Utc>,
}

/// The columns a branch decision needs.
#[derive(Debug, Clone, Copy, Queryable, Selectable)]
#[diesel(table_name = products, check_for_backend(diesel::pg::Pg))]
struct Inventory {
    id: i64,
    stock: i64,
    reserved: i64,
}

/// One reservation as `GET /api/branches/{gid}` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Queryable, Selectable, utoipa::ToSchema)]
#[diesel(table_name = reservations, check_for_backend(diesel::pg::Pg))]
pub struct ReservationView {
    /// The branch that placed it.
    pub branch_id: String,
    /// The product reserved.
    pub product_id: i64,
    /// Units reserved.
    pub quantity: i64,
    /// `tentative` (Try done), `confirmed` or `cancelled`.
    pub state: String,
    /// When the Try placed it.
    pub created_at: DateTime<Utc>,
    /// When it last changed (its Confirm or Cancel).
    pub updated_at: DateTime<Utc>,
}

/// `GET /api/branches/{gid}` at the stock service: what it holds for one global transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct StockBranchesView {
    /// The global transaction id.
    pub gid: String,
    /// The gid's reservations, oldest first.
    pub reservations: Vec<ReservationView>,
    /// The rows the barrier wrote for the gid, in order.
    pub barrier: Vec<BarrierRow>,
}

/// The stock service's reservations and barrier rows for `gid` (the route runs it in one
/// snapshot).
pub fn branches_view(conn: &mut PgConnection, gid: &str) -> QueryResult<StockBranchesView> {
    let reservations = reservations::table
        .filter(reservations::gid.eq(gid))
        .order(reservations::id)
        .select(ReservationView::as_select())
        .load(conn)?;
    let barrier = barrier_rows(conn, gid)?;
    let gid = gid.to_owned();
    Ok(StockBranchesView {
        gid,
        reservations,
        barrier,
    })
}

/// One reservation row, the fields settling it needs.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = reservations, check_for_backend(diesel::pg::Pg))]
struct Reservation {
    product_id: i64,
    quantity: i64,
    state: ReservationState,
}

/// StockTry: `reserved += quantity` and a tentative reservation; refuses a missing product or
/// fewer units available than requested.
pub fn stock_try(
    conn: &mut PgConnection,
    query: &BranchQuery,
    req: &ReserveRequest,
) -> Result<(), StockError> {
    let product =
        lock_product(conn, req.product_id)?.ok_or(StockError::ProductMissing(req.product_id))?;
    let available = product
        .stock
        .checked_sub(product.reserved)
        .ok_or_else(|| inconsistent(&product))?;
    if available < req.quantity {
        return Err(StockError::InsufficientStock {
            product_id: product.id,
            available,
            quantity: req.quantity,
        });
    }
    let reserved = product
        .reserved
        .checked_add(req.quantity)
        .ok_or_else(|| inconsistent(&product))?;
    update_inventory(conn, product.id, product.stock, reserved)?;
    diesel::insert_into(reservations::table)
        .values((
            reservations::gid.eq(&query.gid),
            reservations::branch_id.eq(&query.branch_id),
            reservations::product_id.eq(product.id),
            reservations::quantity.eq(req.quantity),
            reservations::state.eq(ReservationState::Tentative),
        ))
        .execute(conn)?;
    Ok(())
}

/// StockConfirm: the reserved units leave (`stock -= quantity, reserved -= quantity`, quantity
/// from the reservation).
pub fn stock_confirm(conn: &mut PgConnection, query: &BranchQuery) -> Result<(), StockError> {
    settle_reservation(conn, query, ReservationState::Confirmed, |p, q| {
        Some((p.stock.checked_sub(q)?, p.reserved.checked_sub(q)?))
    })
}

/// StockCancel: the units are released (`reserved -= quantity`). Without a reservation it does
/// nothing: the Try was refused and rolled back.
pub fn stock_cancel(conn: &mut PgConnection, query: &BranchQuery) -> Result<(), StockError> {
    settle_reservation(conn, query, ReservationState::Cancelled, |p, q| {
        Some((p.stock, p.reserved.checked_sub(q)?))
    })
}

/// The product as `GET /api/products/{id}` shows it, `None` when it does not exist.
pub fn product_view(conn: &mut PgConnection, id: i64) -> QueryResult<Option<ProductView>> {
    products::table
        .find(id)
        .select(ProductView::as_select())
        .first(conn)
        .optional()
}

/// Creates products `1..=count` ("Product N", `stock` units, price `base_price * N`) in one
/// statement, only when the table is empty; existing rows are never touched. Returns the number
/// of products created.
pub fn seed_products(
    conn: &mut PgConnection,
    count: u32,
    stock: i64,
    base_price: i64,
) -> QueryResult<usize> {
    if count == 0 {
        return Ok(0);
    }
    diesel::sql_query(
        "INSERT INTO products (id, name, price, stock) \
         SELECT n, 'Product ' || n, $3 * n, $2 FROM generate_series(1::BIGINT, $1) AS n \
         WHERE NOT EXISTS (SELECT 1 FROM products) \
         ON CONFLICT (id) DO NOTHING",
    )
    .bind::<diesel::sql_types::BigInt, _>(i64::from(count))
    .bind::<diesel::sql_types::BigInt, _>(stock)
    .bind::<diesel::sql_types::BigInt, _>(base_price)
    .execute(conn)
}

fn lock_product(conn: &mut PgConnection, id: i64) -> QueryResult<Option<Inventory>> {
    products::table
        .find(id)
        .select(Inventory::as_select())
        .for_update()
        .first(conn)
        .optional()
}

fn update_inventory(
    conn: &mut PgConnection,
    id: i64,
    stock: i64,
    reserved: i64,
) -> QueryResult<()> {
    diesel::update(products::table.find(id))
        .set((
            products::stock.eq(stock),
            products::reserved.eq(reserved),
            products::updated_at.eq(diesel::dsl::now),
        ))
        .execute(conn)
        .map(|_| ())
}

/// Moves this branch's tentative reservation to `target` and sets the product's
/// `(stock, reserved)` to what `apply` computes from the reserved quantity.
///
/// No reservation: a Cancel does nothing, a Confirm is refused. A reservation already in
/// `target` is left alone; one settled the other way is refused.
fn settle_reservation(
    conn: &mut PgConnection,
    query: &BranchQuery,
    target: ReservationState,
    apply: impl FnOnce(&Inventory, i64) -> Option<(i64, i64)>,
) -> Result<(), StockError> {
    let this_branch = reservations::table
        .filter(reservations::gid.eq(&query.gid))
        .filter(reservations::branch_id.eq(&query.branch_id));
    let reservation: Option<Reservation> = this_branch
        .select(Reservation::as_select())
        .for_update()
        .first(conn)
        .optional()?;
    let Some(reservation) = reservation else {
        if target == ReservationState::Cancelled {
            return Ok(());
        }
        return Err(StockError::ReservationMissing {
            gid: query.gid.clone(),
            branch_id: query.branch_id.clone(),
        });
    };
    if reservation.state == target {
        return Ok(());
    }
    if reservation.state != ReservationState::Tentative {
        return Err(StockError::ReservationSettled {
            gid: query.gid.clone(),
            branch_id: query.branch_id.clone(),
            state: reservation.state,
        });
    }
    let product = lock_product(conn, reservation.product_id)?.ok_or_else(|| {
        StockError::Inconsistent(format!("product {} vanished", reservation.product_id))
    })?;
    let (stock, reserved) = apply(&product, reservation.quantity)
        .filter(|&(s, r)| 0 <= r && r <= s)
        .ok_or_else(|| {
            StockError::Inconsistent(format!(
                "gid={} branch_id={}: a reservation of {} cannot be settled on product {} \
                 (stock {}, reserved {})",
                query.gid,
                query.branch_id,
                reservation.quantity,
                product.id,
                product.stock,
                product.reserved
            ))
        })?;
    update_inventory(conn, product.id, stock, reserved)?;
    diesel::update(this_branch)
        .set((
            reservations::state.eq(target),
            reservations::updated_at.eq(diesel::dsl::now),
        ))
        .execute(conn)?;
    Ok(())
}

fn inconsistent(product: &Inventory) -> StockError {
    StockError::Inconsistent(format!(
        "product {}: stock {}, reserved {}",
        product.id, product.stock, product.reserved
    ))
}
