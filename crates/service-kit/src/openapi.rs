//! The OpenAPI 3 description every binary serves at `GET /api/openapi.json`, with Swagger UI at
//! `GET /api/docs/`.
//!
//! The description is generated from the code, never written by hand, so it cannot drift:
//!
//! * handlers with a fixed path (the coordinator's API, `/api/ping`, `/api/health`, the metrics)
//!   carry a `#[utoipa::path]` attribute next to their code;
//! * endpoints registered from a table (an RM's three branch endpoints; the AP's fire
//!   endpoints, one per scenario of its catalogue) are
//!   described by a function that reads the *same* table the routes are registered from
//!   ([`branch_operation`] and the helpers below build the operations);
//! * request and response bodies are the Rust types themselves, through `#[derive(ToSchema)]`.
//!
//! Every error answer has the [`ErrorBody`] shape; a branch endpoint's SUCCESS/FAILURE/ONGOING
//! answer has the [`tcc::protocol::BranchReply`] shape (DTM's `dtm_result`).
//!
//! The fuzz run (`scripts/fuzz_api.sh`, schemathesis) reads these descriptions and checks that no
//! answer is a 5xx or breaks the schema documented here.

use actix_web::web;
use utoipa::openapi::path::{OperationBuilder, Parameter};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::ComponentsBuilder;
use utoipa::openapi::{
    ContentBuilder, InfoBuilder, OpenApi, Ref, RefOr, Required, Response, ResponseBuilder, Schema,
};
use utoipa::ToSchema;
use utoipa_swagger_ui::SwaggerUi;

pub use crate::http::ErrorBody;

/// Where every binary serves its OpenAPI description (JSON).
pub const SPEC_PATH: &str = "/api/openapi.json";
/// Where every binary serves Swagger UI (`/api/docs` redirects here).
pub const UI_PATH: &str = "/api/docs/";

/// The error answers every endpoint with a JSON body may give besides its own: the extractor
/// errors of [`crate::http::json_config`] (and [`crate::http::JsonObject`]) and a database
/// outage. `#[utoipa::path(responses((status = 200, ...), JsonBodyErrors))]`; the programmatic
/// descriptions add them with [`common_errors`].
#[derive(utoipa::IntoResponses)]
pub enum JsonBodyErrors {
    /// Malformed JSON (or not an object) or query, or a value out of range: `invalid_json`,
    /// `invalid_gid`, `unsupported_trans_type`, ...
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// The body is larger than `JSON_LIMIT`: `body_too_large`.
    #[response(status = 413)]
    TooLarge(ErrorBody),
    /// The body is not `application/json`: `unsupported_content_type`.
    #[response(status = 415)]
    UnsupportedMediaType(ErrorBody),
    /// The database is unavailable; retry later: `unavailable`.
    #[response(status = 503)]
    Unavailable(ErrorBody),
}

/// The schemas every binary shares besides [`crate::http::HealthApi`]'s: the branch answer and
/// the protocol's enums.
#[derive(utoipa::OpenApi)]
#[openapi(components(schemas(
    tcc::protocol::BranchReply,
    tcc::protocol::DtmResult,
    tcc::protocol::Op,
    tcc::protocol::TransType,
    tcc::protocol::GlobalStatus
)))]
pub struct CommonApi;

/// `GET /api/metrics` of an RM ([`crate::metrics::rm_metrics`]).
#[derive(utoipa::OpenApi)]
#[openapi(paths(crate::metrics::rm_metrics))]
pub struct RmMetricsApi;

/// The description of one binary: `title` and `description` in its `info`,
/// [`crate::http::HealthApi`] and [`CommonApi`] merged with the binary's own `parts`.
pub fn describe(
    title: &str,
    description: &str,
    parts: impl IntoIterator<Item = OpenApi>,
) -> OpenApi {
    let mut api = <crate::http::HealthApi as utoipa::OpenApi>::openapi();
    api.merge(<CommonApi as utoipa::OpenApi>::openapi());
    api.info = InfoBuilder::new()
        .title(title)
        .version(env!("CARGO_PKG_VERSION"))
        .description(Some(description))
        .build();
    for part in parts {
        api.merge(part);
    }
    api
}

/// Mounts `GET /api/openapi.json` (the description `api`) and Swagger UI under `/api/docs/` (the
/// vendored files of `utoipa-swagger-ui`; `/api/docs` redirects there).
pub fn configure_docs(cfg: &mut web::ServiceConfig, api: OpenApi) {
    cfg.service(web::redirect("/api/docs", UI_PATH))
        .service(SwaggerUi::new(format!("{UI_PATH}{{_:.*}}")).url(SPEC_PATH, api));
}

/// A reference to the component schema `name` (`#/components/schemas/<name>`).
pub fn schema_ref(name: &str) -> RefOr<Schema> {
    RefOr::Ref(Ref::from_schema_name(name))
}

/// A response with a JSON body of the component schema `schema`.
pub fn json_response(description: &str, schema: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(schema_ref(schema)))
                .build(),
        )
        .build()
}

/// An error response: a JSON [`ErrorBody`].
pub fn error_response(description: &str) -> Response {
    json_response(description, "ErrorBody")
}

/// The components for `T`'s schema and every schema it refers to.
pub fn schemas_of<T: ToSchema>() -> ComponentsBuilder {
    let mut schemas = vec![(T::name().into_owned(), T::schema())];
    T::schemas(&mut schemas);
    ComponentsBuilder::new().schemas_from_iter(schemas)
}

/// Adds [`JsonBodyErrors`] to `op`.
pub fn common_errors(op: OperationBuilder) -> OperationBuilder {
    <JsonBodyErrors as utoipa::IntoResponses>::responses()
        .into_iter()
        .fold(op, |op, (status, response)| op.response(status, response))
}

/// The operation of one RM branch endpoint (`POST /api/<name>`):
/// the [`tcc::protocol::BranchQuery`] query, a JSON body of the component schema `body` (Try's;
/// Confirm and Cancel take any body), and every answer the branch flow gives. `op` decides the
/// per-op answers: Try may be refused by the Try gate (401, 403, 503), Confirm and Cancel may be
/// refused for their signature or gid token, or not vouched for by the coordinator (401, 503).
pub fn branch_operation(
    name: &str,
    op: tcc::protocol::Op,
    body: &str,
    parameters: Vec<Parameter>,
) -> utoipa::openapi::path::Operation {
    use tcc::protocol::Op;
    let what = match op {
        Op::Try => "Try: checks and reserves (frozen funds, reserved units), called by the AP",
        Op::Confirm => "Confirm: uses what Try reserved, called by the TM, idempotent",
        Op::Cancel => {
            "Cancel: releases what Try reserved, called by the TM; an empty compensation when Try \
             never ran, and a later (hanging) Try is then refused"
        }
    };
    let mut builder = OperationBuilder::new()
        .operation_id(Some(name))
        .tag("branch")
        .summary(Some(what))
        .description(Some(
            "Runs inside the sub-transaction barrier: duplicates, empty compensations and hanging \
             Trys answer SUCCESS without applying anything twice.",
        ))
        .parameters(Some(parameters))
        .request_body(Some(branch_body(op, body)))
        .response(
            "200",
            json_response("SUCCESS: applied, or already applied", "BranchReply"),
        )
        .response(
            "409",
            json_response("FAILURE: a business refusal", "BranchReply"),
        )
        .response(
            "425",
            json_response("ONGOING (injected fault): ask again", "BranchReply"),
        )
        .response(
            "202",
            json_response(
                "Injected `accepted:N` fault only (FAULT_INJECTION=on): `dtm_result` SUCCESS, but \
                 nothing was done; a caller must read it, as DTM does, as a transient error",
                "BranchReply",
            ),
        )
        .response("307", redirect_response())
        .response(
            "500",
            error_response("Injected `error` fault, or an internal error"),
        );
    builder = common_errors(builder);
    builder = match op {
        Op::Try => builder
            .response(
                "401",
                error_response(
                    "`bad_gid_token`: the `X-Tcc-Gid-Token` header is not this gid's token; or \
                     `missing_gid_token`: no token, and this RM accepts a Try only with one \
                     (`TRY_VERIFICATION=token`); nothing was reserved",
                ),
            )
            .response(
                "403",
                error_response(
                    "`try_not_registered`: no gid token, and the coordinator (`DTM_URL`) does not \
                     report the gid `prepared` with this branch registered, or reports data \
                     registered for the branch that the body is not (compared as JSON values); \
                     nothing was reserved",
                ),
            )
            .response(
                "503",
                error_response(
                    "`unavailable`: the database, or for a Try without a gid token the \
                     coordinator, could not be reached; nothing was reserved, try again later",
                ),
            ),
        Op::Confirm | Op::Cancel => builder
            .response(
                "401",
                error_response(
                    "Neither a valid signature nor the gid's token (`BRANCH_SIGNING_SECRET` is \
                     set): `missing_signature`, `stale_signature`, `bad_signature`, \
                     `bad_gid_token`, or `not_vouched` (neither header, and the coordinator does \
                     not report this op due); nothing was done",
                ),
            )
            .response(
                "503",
                error_response(
                    "`unavailable`: the database, or for a call with neither signature nor gid \
                     token the coordinator, could not be reached; nothing was done, try again \
                     later",
                ),
            ),
    };
    builder.build()
}

/// The `307` of an injected `redirect:N` fault: an [`ErrorBody`] (`injected_redirect`) and a
/// `Location` header ([`crate::fault::REDIRECT_LOCATION`]).
fn redirect_response() -> Response {
    use utoipa::openapi::header::HeaderBuilder;
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    let mut response = error_response(
        "Injected `redirect:N` fault only (FAULT_INJECTION=on): `injected_redirect`, nothing was \
         done; the redirect must not be followed",
    );
    response.headers.insert(
        "Location".into(),
        RefOr::T(
            HeaderBuilder::new()
                .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                .description(Some(
                    "Where the misbehaving RM points; nothing answers there",
                ))
                .build(),
        ),
    );
    response
}

/// The request body of a branch endpoint: for Try, a JSON object of the component schema `body`,
/// required; for Confirm and Cancel, anything or nothing (they act on what their Try reserved,
/// and read only a `fault` from their body when it is a JSON object with one).
fn branch_body(op: tcc::protocol::Op, body: &str) -> utoipa::openapi::request_body::RequestBody {
    if op == tcc::protocol::Op::Try {
        return RequestBodyBuilder::new()
            .content(
                "application/json",
                ContentBuilder::new().schema(Some(schema_ref(body))).build(),
            )
            .required(Some(Required::True))
            .build();
    }
    RequestBodyBuilder::new()
        .description(Some(
            "The data the AP registered for the branch, sent back by the TM. Not needed: only a \
             demo `fault` is read from it, when it is a JSON object whose `fault` parses; any \
             other body (extra or renamed fields, `null`, not JSON) is ignored.",
        ))
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(RefOr::T(Schema::Object(
                    utoipa::openapi::schema::Object::with_type(
                        utoipa::openapi::schema::SchemaType::AnyValue,
                    ),
                ))))
                .build(),
        )
        .required(Some(Required::False))
        .build()
}

/// The description of a `GET` view route of [`crate::http::view_route`] at `path` (with an
/// `{id}` segment, a whole number): `200` with `V` as JSON, `400 invalid_path` for a non-integer
/// id, `404` for an unknown one.
pub fn view_openapi<V: ToSchema>(path: &str, summary: &str) -> OpenApi {
    use utoipa::openapi::path::{HttpMethod, ParameterBuilder, ParameterIn, PathItem};
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    let id = ParameterBuilder::new()
        .name("id")
        .parameter_in(ParameterIn::Path)
        .required(Required::True)
        .description(Some("The row's id, a whole number"))
        .schema(Some(
            ObjectBuilder::new().schema_type(Type::Integer).format(Some(
                utoipa::openapi::SchemaFormat::KnownFormat(utoipa::openapi::KnownFormat::Int64),
            )),
        ))
        .build();
    let operation = OperationBuilder::new()
        .summary(Some(summary))
        .tag("view")
        .parameter(id)
        .response("200", json_response("The row", &V::name()))
        .response(
            "400",
            error_response("`invalid_path`: the id is not a whole number"),
        )
        .response("404", error_response("No such row"))
        .response(
            "503",
            error_response("The database is unavailable; retry later"),
        )
        .build();
    utoipa::openapi::OpenApiBuilder::new()
        .paths(
            utoipa::openapi::PathsBuilder::new()
                .path(path, PathItem::new(HttpMethod::Get, operation)),
        )
        .components(Some(schemas_of::<V>().build()))
        .build()
}
