//! `GET /api/branches/{gid}`: what one RM holds for one global transaction, read in one
//! snapshot: its reservations (a bank's holds, the stock service's reservations, each RM's own
//! shape) and the rows the sub-transaction barrier wrote for the gid. A workshop reads it between
//! two protocol steps to see a hold `tentative` after the Try, the barrier's `try` row written
//! by a Cancel (the empty compensation), and so on.
//!
//! The RM writes the read (its reservations, and [`barrier_rows`]) and the type of the answer,
//! `200 {"gid": "...", "barrier": [BarrierRow...], "holds": [...]}` at a bank, with empty lists
//! for a gid the RM never saw; [`route`] answers `400 invalid_gid` for a malformed gid (the protocol's
//! rule, [`tcc::protocol::validate_gid`]); `503 unavailable` when the database does not answer.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse, Route};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde::Serialize;
use tcc::barrier::schema::barrier;

use crate::db::{blocking, DbPool};
use crate::http::error_response;

/// One row of `dtm_barrier.barrier` for the gid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Queryable, Selectable, utoipa::ToSchema)]
#[diesel(table_name = barrier, check_for_backend(diesel::pg::Pg))]
pub struct BarrierRow {
    /// The branch.
    pub branch_id: String,
    /// The op the row stands for: `try`, `confirm` or `cancel`.
    pub op: String,
    /// The op whose call wrote it: a `try` row with reason `cancel` was written by a Cancel that
    /// found no Try (the empty compensation) and blocks a late Try (hanging).
    pub reason: String,
    /// When it was written.
    pub create_time: DateTime<Utc>,
}

/// The rows the barrier wrote for `gid`, in the order they were written.
pub fn barrier_rows(conn: &mut PgConnection, gid: &str) -> QueryResult<Vec<BarrierRow>> {
    barrier::table
        .filter(barrier::gid.eq(gid))
        .order(barrier::id)
        .select(BarrierRow::as_select())
        .load(conn)
}

/// The path of the view.
pub const PATH: &str = "/api/branches/{gid}";

/// The `GET` route of [`PATH`]: `read` reads the RM's view of the gid in one read-only,
/// repeatable-read transaction, so that its reservations and barrier rows come from one moment.
pub fn route<V>(read: fn(&mut PgConnection, &str) -> QueryResult<V>) -> Route
where
    V: Serialize + Send + 'static,
{
    web::get().to(
        move |pool: web::Data<DbPool>, gid: web::Path<String>| async move {
            let gid = gid.into_inner();
            if let Err(e) = tcc::protocol::validate_gid(&gid) {
                return error_response(StatusCode::BAD_REQUEST, "invalid_gid", e.to_string());
            }
            let read = blocking(&pool, move |conn| {
                let snapshot = |conn: &mut PgConnection| read(conn, &gid);
                conn.build_transaction()
                    .read_only()
                    .repeatable_read()
                    .run(snapshot)
            });
            match read.await {
                Ok(Ok(view)) => HttpResponse::Ok().json(view),
                failed => {
                    let error = failed.err().map(|e| e.to_string());
                    log::error!("GET {PATH} failed: {}", error.as_deref().unwrap_or("query"));
                    let message = "the database is unavailable; retry later";
                    error_response(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
                }
            }
        },
    )
}

/// The OpenAPI description of [`route`] at [`PATH`], answering `V`.
pub fn openapi<V: utoipa::ToSchema>(summary: &str) -> utoipa::openapi::OpenApi {
    use crate::openapi::{error_response as documented_error, json_response, schemas_of};
    use utoipa::openapi::path::PathItem;
    use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn};
    use utoipa::openapi::{ObjectBuilder, PathsBuilder, Required, Type};
    let gid = ParameterBuilder::new()
        .name("gid")
        .parameter_in(ParameterIn::Path)
        .required(Required::True)
        .description(Some("The global transaction id"))
        .schema(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(r"^[A-Za-z0-9_.:-]{1,128}$")),
        ))
        .build();
    let operation = OperationBuilder::new()
        .summary(Some(summary))
        .tag("view")
        .parameter(gid)
        .response(
            "200",
            json_response(
                "The RM's reservations and barrier rows for the gid",
                &V::name(),
            ),
        )
        .response("400", documented_error("`invalid_gid`: a malformed gid"))
        .response(
            "503",
            documented_error("The database is unavailable; retry later"),
        )
        .build();
    let schemas = schemas_of::<V>().schema_from::<BarrierRow>();
    utoipa::openapi::OpenApiBuilder::new()
        .paths(PathsBuilder::new().path(PATH, PathItem::new(HttpMethod::Get, operation)))
        .components(Some(schemas.build()))
        .build()
}
