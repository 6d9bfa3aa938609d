//! The AP's OpenAPI description (`GET /api/openapi.json`), built from the same tables the
//! parameters are checked against ([`Scenario::params`]) and the nested branch's routes are
//! registered from ([`nested::ENDPOINTS`]).

use utoipa::openapi::path::{
    HttpMethod, Operation, OperationBuilder, Parameter, ParameterBuilder, ParameterIn, PathItem,
};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{ContentBuilder, OpenApi, OpenApiBuilder, PathsBuilder, Required};

use service_kit::openapi::{error_response, json_response, schemas_of};

use crate::params::{ParamKind, ParamSpec};
use crate::routes::fire::{FireAnswer, TransferRequest};
use crate::routes::nested;
use crate::scenario::{Scenario, CRASH_AFTER_TRY};

/// The JSON schema of one parameter's values.
fn value_schema(spec: &ParamSpec) -> ObjectBuilder {
    let integer = || {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::Int64,
            )))
            .minimum(Some(1))
    };
    match spec.kind {
        ParamKind::PositiveInt { default } => integer().default(Some(default.into())),
        ParamKind::OptionalSecs { max } => integer().maximum(Some(max)),
        ParamKind::Bool { default } => ObjectBuilder::new()
            .schema_type(Type::Boolean)
            .default(Some(default.into())),
        ParamKind::Fault => ObjectBuilder::new().schema_type(Type::String).examples([
            "failure",
            "error:3",
            "delay:3000+error:1",
            "accepted:2",
            "redirect:1",
        ]),
    }
    .description(Some(spec.doc))
}

/// The parameters of `scenario` this AP accepts: with `FAULT_INJECTION=off` the fault parameters
/// and `crash_after_try` are refused (400), so they are not described either.
fn accepted(scenario: Scenario, fault_injection: bool) -> Vec<ParamSpec> {
    scenario
        .params()
        .into_iter()
        .filter(|spec| {
            fault_injection || !(spec.kind == ParamKind::Fault || spec.name == CRASH_AFTER_TRY)
        })
        .collect()
}

/// The query parameters of a scenario.
fn query_parameters(specs: &[ParamSpec]) -> Vec<Parameter> {
    specs
        .iter()
        .map(|spec| {
            ParameterBuilder::new()
                .name(spec.name)
                .parameter_in(ParameterIn::Query)
                .required(Required::False)
                .description(Some(spec.doc))
                .schema(Some(value_schema(spec)))
                .build()
        })
        .collect()
}

/// One fire operation (`GET` takes the query string only; `POST` also a JSON object body with
/// the same names, each name given once in all).
fn fire_operation(
    scenario: Scenario,
    fault_injection: bool,
    method: &str,
    with_body: bool,
) -> Operation {
    let specs = accepted(scenario, fault_injection);
    let mut op = OperationBuilder::new()
        .operation_id(Some(format!("{method}{}", scenario.name())))
        .tag("fire")
        .summary(Some(scenario.summary()))
        .description(Some(
            "Starts one TCC global transaction over the RMs through the coordinator and answers \
             with its outcome. Fault parameters need FAULT_INJECTION=on.",
        ))
        .parameters(Some(query_parameters(&specs)));
    if with_body {
        let mut body = ObjectBuilder::new().additional_properties(Some(
            utoipa::openapi::schema::AdditionalProperties::FreeForm(false),
        ));
        for spec in &specs {
            body = body.property(spec.name, value_schema(spec));
        }
        op = op.request_body(Some(
            RequestBodyBuilder::new()
                .content(
                    "application/json",
                    ContentBuilder::new().schema(Some(body)).build(),
                )
                .required(Some(Required::False))
                .build(),
        ));
    }
    let op = op
        .response(
            "200",
            json_response("Committed: every Try succeeded", "Committed"),
        )
        .response("409", json_response(ROLLED_BACK, "RolledBack"));
    FIRE_ERRORS
        .iter()
        .fold(op, |op, (status, text)| {
            op.response(*status, error_response(text))
        })
        .build()
}

const ROLLED_BACK: &str = "Rolled back: a Try failed, every branch was cancelled";

/// The error answers of a fire endpoint.
const FIRE_ERRORS: [(&str, &str); 6] = [
    (
        "400",
        "A parameter is unknown, repeated, malformed or out of range",
    ),
    ("413", "The body is larger than `JSON_LIMIT`"),
    ("415", "The body is not `application/json`"),
    (
        "429",
        "`rate_limited`: too many requests from this client address \
         (`FIRE_RATE_LIMIT_PER_SECOND`, `FIRE_RATE_LIMIT_BURST`); see `Retry-After`. Nothing \
         was started",
    ),
    (
        "502",
        "The coordinator refused a call, or the stock service is down",
    ),
    ("503", "The coordinator is unreachable"),
];

/// The description of the AP's routes ([`crate::routes::configure`]) as this AP serves them:
/// `fault_injection` is its `FAULT_INJECTION` setting.
pub fn openapi(fault_injection: bool) -> OpenApi {
    let mut paths = PathsBuilder::new();
    for scenario in Scenario::ALL {
        for (method, name, with_body) in [
            (HttpMethod::Get, "get", false),
            (HttpMethod::Post, "post", true),
        ] {
            let operation = fire_operation(scenario, fault_injection, name, with_body);
            paths = paths.path(scenario.path(), PathItem::new(method, operation));
        }
    }
    for (name, op) in nested::ENDPOINTS {
        let parameters = {
            use utoipa::IntoParams;
            tcc::protocol::BranchQuery::into_params(|| Some(ParameterIn::Query))
        };
        let mut operation =
            service_kit::openapi::branch_operation(name, op, "TransferRequest", parameters);
        operation.description = Some(match op {
            tcc::protocol::Op::Try => {
                "The AP's own nested branch: its Try starts TransIn as child branch `0201` of the \
                 same global transaction (`dtm` must be this AP's coordinator). With \
                 `BRANCH_SIGNING_SECRET` set, the Try needs the gid's token in \
                 `X-Tcc-Gid-Token` (401 `missing_gid_token` / `bad_gid_token` otherwise, nothing \
                 registered); it never asks the coordinator instead, so it never answers 403."
            }
            tcc::protocol::Op::Confirm | tcc::protocol::Op::Cancel => {
                "The AP's own nested branch: nothing to do here (the TM confirms or cancels the \
                 child branch `0201` at TransIn itself), so it answers SUCCESS to any caller."
            }
        }
        .into());
        paths = paths.path(
            format!("/api/{name}"),
            PathItem::new(HttpMethod::Post, operation),
        );
    }
    let mut api = OpenApiBuilder::new()
        .paths(paths)
        .components(Some(
            schemas_of::<FireAnswer>()
                .schemas_from_iter(schemas_of::<TransferRequest>().build().schemas)
                .build(),
        ))
        .build();
    api.merge(<MetricsApi as utoipa::OpenApi>::openapi());
    api
}

/// `GET /api/metrics` of the AP.
#[derive(utoipa::OpenApi)]
#[openapi(paths(crate::routes::metrics))]
struct MetricsApi;
