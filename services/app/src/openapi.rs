//! The AP's OpenAPI description (`GET /api/openapi.json`), built from the same tables the
//! parameters are checked against ([`Scenario::params`]) and the nested branch's routes are
//! registered from ([`nested::ENDPOINTS`]).

use service_kit::openapi::{error_response, json_response};
use service_kit::params::{json_body, query_parameters, Param};
use tcc::protocol::{BranchQuery, Op};
use utoipa::openapi::path::{HttpMethod, Operation, OperationBuilder, ParameterIn, PathItem};
use utoipa::openapi::{OpenApi, OpenApiBuilder, PathsBuilder};
use utoipa::IntoParams;

use crate::routes::fire::{FireAnswer, TransferRequest};
use crate::routes::nested;
use crate::scenario::Scenario;

/// One fire operation: `GET` takes `params` in the query string; `POST` also in a JSON object
/// body, each name given once in all.
fn fire_operation(scenario: Scenario, params: &[Param], method: &str) -> Operation {
    let mut op = OperationBuilder::new()
        .operation_id(Some(format!("{method}{}", scenario.name())))
        .tag("fire")
        .summary(Some(scenario.summary()))
        .description(Some(
            "Starts one TCC global transaction over the RMs through the coordinator and answers \
             with its outcome. Fault parameters need FAULT_INJECTION=on.",
        ))
        .parameters(Some(query_parameters(params)));
    if method == "post" {
        op = op.request_body(Some(json_body(params)));
    }
    let op = op
        .response(
            "200",
            json_response("Committed: every Try succeeded", "FireAnswer"),
        )
        .response("409", json_response(ROLLED_BACK, "FireAnswer"));
    FIRE_ERRORS
        .iter()
        .fold(op, |op, (status, text)| {
            op.response(*status, error_response(text))
        })
        .build()
}

const ROLLED_BACK: &str =
    "Rolled back: a Try failed, every branch was cancelled; `reason` says which and why";

/// The error answers of a fire endpoint.
#[rustfmt::skip]
const FIRE_ERRORS: [(&str, &str); 6] = [
    ("400", "A parameter is unknown, repeated, malformed or out of range"),
    ("413", "The body is larger than `JSON_LIMIT`"),
    ("415", "The body is not `application/json`"),
    ("429", "`rate_limited`: too many requests from this client address \
             (`FIRE_RATE_LIMIT_PER_SECOND`, `FIRE_RATE_LIMIT_BURST`); see `Retry-After`. Nothing \
             was started"),
    ("502", "The coordinator refused a call, or the stock service is down"),
    ("503", "The coordinator is unreachable"),
];

/// The description of the AP's routes ([`crate::routes::configure`]) as this AP serves them:
/// `fault_injection` is its `FAULT_INJECTION` setting.
pub fn openapi(fault_injection: bool) -> OpenApi {
    let mut paths = PathsBuilder::new();
    for scenario in Scenario::ALL {
        // With `FAULT_INJECTION=off` the fault parameters and `crash_after_try` are refused
        // (400), so they are not described either.
        let mut params = scenario.params();
        params.retain(|p| fault_injection || !p.kind.needs_fault_injection());
        for (method, name) in [(HttpMethod::Get, "get"), (HttpMethod::Post, "post")] {
            let operation = fire_operation(scenario, &params, name);
            paths = paths.path(scenario.path(), PathItem::new(method, operation));
        }
    }
    for (name, op) in nested::ENDPOINTS {
        let parameters = BranchQuery::into_params(|| Some(ParameterIn::Query));
        let mut operation =
            service_kit::openapi::branch_operation(name, op, "TransferRequest", parameters);
        operation.description = Some(match op {
            Op::Try => {
                "The AP's own nested branch: its Try starts TransIn as child branch `0201` of the \
                 same global transaction (`dtm` must be this AP's coordinator). With \
                 `BRANCH_SIGNING_SECRET` set, the Try needs the gid's token in \
                 `X-Tcc-Gid-Token` (401 `missing_gid_token` / `bad_gid_token` otherwise, nothing \
                 registered); it never asks the coordinator instead, so it never answers 403."
            }
            Op::Confirm | Op::Cancel => {
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
    let mut api = OpenApiBuilder::new().paths(paths).build();
    api.merge(<DerivedApi as utoipa::OpenApi>::openapi());
    api
}

/// `GET /api/metrics` of the AP, and the schemas of the answers and bodies described above.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(crate::routes::metrics),
    components(schemas(FireAnswer, TransferRequest))
)]
struct DerivedApi;
