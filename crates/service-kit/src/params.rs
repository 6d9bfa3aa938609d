//! Strict parameters of a public endpoint, read from the query string and/or a JSON body and
//! checked against a declared table ([`Param`]s), then handed to the handler as a typed value by
//! the [`Params`] extractor. The AP's fire endpoints use it; the table of each endpoint is in its
//! resource's app data ([`ParamTable`]).
//!
//! How the two sources combine: they are merged into one set, and **each parameter may be given
//! once in all**. A name repeated in the query string (`?amount=1&amount=2`), or given both in the
//! query string and in the body, is a `400 invalid_parameter`: there is no precedence rule to
//! remember, and no silent choice between two amounts of money. Parameters not given take their
//! defaults.
//!
//! Values: in the query string, decimal digits only (`30`; not `+30`, `3e1`, `30.0`); in the body,
//! JSON integers only (`{"amount": 30}`; not `"30"`, `30.0`, `null`). Every number must be
//! greater than 0 and fit an i64. Unknown names are refused, so a typo (`ammount=5`) cannot
//! silently fall back to the default.
//!
//! Fault parameters ([`Kind::Fault`], named `<rm>_<op>`, e.g. `trans_in_confirm`) are gathered
//! per RM into the `faults` member of the result (`{"trans_in": {"confirm": "error:3"}}`), the
//! shape of [`crate::fault::BranchFaults`], so that a handler puts them into that RM's branch
//! data. They, and the test-only flags ([`Kind::TestFlag`]), are refused while fault injection
//! is off.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest, HttpResponse, ResponseError};
use serde::de::DeserializeOwned;
use serde_json::{json, Map, Value};
use tcc::protocol::Op;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::request_body::{RequestBody, RequestBodyBuilder};
use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, Type};
use utoipa::openapi::{ContentBuilder, KnownFormat, Required, SchemaFormat};

use crate::fault::Fault;
use tcc::protocol::{FAILURE, ONGOING};

/// The longest [`Kind::Label`].
pub const MAX_LABEL_LEN: usize = 32;

/// What values a parameter takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A whole number greater than 0 (ids, quantities, amounts in minor units), with its default.
    Positive(i64),
    /// A whole number of seconds from 1 to this maximum, or absent (an option the callee
    /// defaults).
    Secs(i64),
    /// `true`/`false` (query: also `1`/`0`), with its default.
    Flag(bool),
    /// A test-only flag, default `false`, refused while fault injection is off.
    TestFlag,
    /// A short label, or absent: 1 to [`MAX_LABEL_LEN`] ASCII letters, digits, `-` and `_`
    /// (safe inside a gid, a URL and a log line), without the words `FAILURE` and `ONGOING`
    /// (a gid travels in answers that DTM clients search for them).
    Label,
    /// A fault spec (`failure`, `error:3`, `delay:3000`, ...; see [`crate::fault`]) for this op
    /// of the RM its name starts with (`trans_in_confirm`: `trans_in`), or absent; refused while
    /// fault injection is off.
    Fault(Op),
}

impl Kind {
    /// What a value must be, for error messages.
    fn expected(self) -> String {
        match self {
            Kind::Positive(_) => format!("a whole number from 1 to {}", i64::MAX),
            Kind::Secs(max) => format!("a whole number from 1 to {max}"),
            Kind::Flag(_) | Kind::TestFlag => "true or false".into(),
            Kind::Fault(_) => "a fault spec string".into(),
            Kind::Label => {
                format!("1 to {MAX_LABEL_LEN} ASCII letters, digits, '-' or '_', without {FAILURE} or {ONGOING}")
            }
        }
    }

    /// Whether it is only accepted with fault injection on.
    pub fn needs_fault_injection(self) -> bool {
        matches!(self, Kind::Fault(_) | Kind::TestFlag)
    }
}

/// One parameter an endpoint accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Param {
    /// Its name in the query string and the JSON body.
    pub name: &'static str,
    /// Its values and default.
    pub kind: Kind,
    /// What it means, for humans (units included).
    pub doc: &'static str,
}

/// Why parameters were refused: answered as `{"error": "<code>", "message", "parameter"?}`.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParamsError {
    /// A parameter is unknown, given twice, or not a value of its kind. `400 invalid_parameter`.
    #[error("{message}")]
    InvalidParameter {
        /// The parameter's name as the caller spelt it.
        parameter: String,
        /// What is wrong with it, naming it.
        message: String,
    },
    /// A fault parameter or a test-only flag was given while fault injection is off.
    /// `400 fault_injection_disabled`.
    #[error("{parameter} is a fault-injection parameter, and fault injection is off (FAULT_INJECTION=off)")]
    FaultInjectionDisabled {
        /// The parameter given.
        parameter: String,
    },
    /// The request body is not a JSON object. `400 invalid_json`.
    #[error("{0}")]
    InvalidBody(String),
    /// The body could not be read (the client went away). `400 invalid_body`.
    #[error("the request body could not be read: {0}")]
    UnreadableBody(String),
    /// A non-empty body came without `Content-Type: application/json`.
    /// `415 unsupported_content_type`.
    #[error("a request body must be JSON (Content-Type: application/json)")]
    UnsupportedContentType,
    /// The body is larger than the table's limit. `413 body_too_large`.
    #[error("the request body is larger than {limit} bytes")]
    BodyTooLarge {
        /// The limit, bytes.
        limit: usize,
    },
}

impl ParamsError {
    /// The machine-readable `error` code of its JSON answer.
    pub fn code(&self) -> &'static str {
        match self {
            ParamsError::InvalidParameter { .. } => "invalid_parameter",
            ParamsError::FaultInjectionDisabled { .. } => "fault_injection_disabled",
            ParamsError::InvalidBody(_) => "invalid_json",
            ParamsError::UnreadableBody(_) => "invalid_body",
            ParamsError::UnsupportedContentType => "unsupported_content_type",
            ParamsError::BodyTooLarge { .. } => "body_too_large",
        }
    }

    fn invalid(parameter: &str, message: String) -> ParamsError {
        let parameter = parameter.to_owned();
        ParamsError::InvalidParameter { parameter, message }
    }
}

impl ResponseError for ParamsError {
    fn status_code(&self) -> StatusCode {
        match self {
            ParamsError::UnsupportedContentType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ParamsError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut body = json!({ "error": self.code(), "message": self.to_string() });
        if let ParamsError::InvalidParameter { parameter, .. }
        | ParamsError::FaultInjectionDisabled { parameter } = self
        {
            body["parameter"] = parameter.as_str().into();
        }
        HttpResponse::build(self.status_code()).json(body)
    }
}

/// A parameter's value as given: from the query string (always a JSON string there, read by
/// its [`Kind`]) or from the JSON body.
#[derive(Debug, Clone, PartialEq)]
struct Given {
    name: String,
    in_query: bool,
    value: Value,
}

impl Given {
    /// `param`'s value checked against its kind, as JSON of the type the handler reads.
    fn check(&self, param: &Param) -> Result<Value, ParamsError> {
        let name = param.name;
        let number = match (&self.value, self.in_query) {
            // Only digits: the one failure left is a number too large for i64.
            (Value::String(s), true) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
                s.parse::<i64>().ok()
            }
            (value, false) => value.as_i64(),
            _ => None,
        };
        let checked = match (param.kind, &self.value) {
            (Kind::Positive(_), _) => number.filter(|n| *n > 0).map(Value::from),
            (Kind::Secs(max), _) => number.filter(|n| (1..=max).contains(n)).map(Value::from),
            (Kind::Flag(_) | Kind::TestFlag, Value::Bool(b)) => Some(Value::Bool(*b)),
            (Kind::Flag(_) | Kind::TestFlag, Value::String(s)) if self.in_query => {
                match s.as_str() {
                    "true" | "1" => Some(Value::Bool(true)),
                    "false" | "0" => Some(Value::Bool(false)),
                    _ => None,
                }
            }
            (Kind::Label, Value::String(s)) => Some(s)
                .filter(|s| (1..=MAX_LABEL_LEN).contains(&s.len()))
                .filter(|s| {
                    s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
                })
                // A label ends up in answers (a gid), where DTM clients read these words in the
                // raw body as a refusal or as "not finished".
                .filter(|s| !s.contains(FAILURE) && !s.contains(ONGOING))
                .map(|_| self.value.clone()),
            (Kind::Fault(_), Value::String(s)) => match s.parse::<Fault>() {
                Ok(_) => Some(self.value.clone()),
                Err(e) => return Err(ParamsError::invalid(name, format!("{name}: {e}"))),
            },
            _ => None,
        };
        checked.ok_or_else(|| {
            let mut shown = self.value.to_string();
            if let Some((end, _)) = shown.char_indices().nth(40) {
                shown.replace_range(end.., "...");
            }
            let expected = param.kind.expected();
            ParamsError::invalid(name, format!("{name} must be {expected}, not {shown}"))
        })
    }
}

/// The parameters of one request, as given, in the order given.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RawParams(Vec<Given>);

impl RawParams {
    /// The pairs of a query string (without the `?`), percent-decoded.
    pub fn from_query(query: &str) -> RawParams {
        let pairs = url::form_urlencoded::parse(query.as_bytes());
        let given = pairs.map(|(name, value)| Given {
            name: name.into_owned(),
            in_query: true,
            value: Value::String(value.into_owned()),
        });
        RawParams(given.collect())
    }

    /// Adds the members of a JSON body, which must be an object (`{}` adds nothing). A member
    /// repeated inside the object is kept twice, so that [`RawParams::parse`] refuses it rather
    /// than JSON's usual "last one wins".
    pub fn add_json_body(&mut self, body: &[u8]) -> Result<(), ParamsError> {
        let members: JsonMembers = serde_json::from_slice(body).map_err(|e| {
            ParamsError::InvalidBody(if e.is_data() {
                "the body must be a JSON object of parameters, e.g. {\"amount\": 30}".into()
            } else {
                format!("the body is not valid JSON: {e}")
            })
        })?;
        let members = members.0.into_iter();
        self.0.extend(members.map(|(name, value)| Given {
            name,
            in_query: false,
            value,
        }));
        Ok(())
    }

    /// Checks every given parameter against `params` (see the module docs for the rules), fills
    /// in defaults and reads the result as `T`, whose fields are the table's names (fault
    /// parameters gathered in `faults`). The error names the first parameter at fault. A table
    /// that does not match `T` is a bug, and panics.
    pub fn parse<T: DeserializeOwned>(&self, params: &[Param]) -> Result<T, ParamsError> {
        let mut checked = Map::new();
        let mut faults = Map::new();
        for (i, given) in self.0.iter().enumerate() {
            let name = given.name.as_str();
            let Some(param) = params.iter().find(|p| p.name == name) else {
                let accepted: Vec<&str> = params.iter().map(|p| p.name).collect();
                let accepted = accepted.join(", ");
                let message = format!("unknown parameter {name:?}; accepted: {accepted}");
                return Err(ParamsError::invalid(name, message));
            };
            if let Some(first) = self.0[..i].iter().find(|g| g.name == name) {
                let message = match (first.in_query, given.in_query) {
                    (true, true) => format!("{name} is given twice in the query string"),
                    (false, false) => format!("{name} is given twice in the JSON body"),
                    _ => format!("{name} is given both in the query string and in the JSON body; give it once"),
                };
                return Err(ParamsError::invalid(name, message));
            }
            let value = given.check(param)?;
            match param.kind {
                Kind::Fault(op) => {
                    let rm = name.strip_suffix(op.as_str()).unwrap_or(name);
                    let rm = faults.entry(rm.trim_end_matches('_'));
                    rm.or_insert(Value::from(Map::new()))[op.as_str()] = value;
                }
                _ => drop(checked.insert(name.to_owned(), value)),
            }
        }
        for param in params {
            let default = match param.kind {
                Kind::Positive(n) => Value::from(n),
                Kind::Flag(b) => Value::from(b),
                Kind::TestFlag => Value::from(false),
                Kind::Secs(_) | Kind::Fault(_) | Kind::Label => continue,
            };
            checked.entry(param.name).or_insert(default);
        }
        checked.insert("faults".into(), Value::from(faults));
        let typed = serde_json::from_value(Value::from(checked));
        Ok(typed.expect("checked parameters read as the handler's type"))
    }

    /// The first parameter given that needs fault injection ([`Kind::needs_fault_injection`]).
    pub fn first_needing_fault_injection<'a>(&'a self, params: &[Param]) -> Option<&'a str> {
        let needs = |name: &str| {
            let param = params.iter().find(|p| p.name == name);
            param.is_some_and(|p| p.kind.needs_fault_injection())
        };
        self.0.iter().map(|g| g.name.as_str()).find(|n| needs(n))
    }
}

/// A JSON object's members in order, duplicates kept.
struct JsonMembers(Vec<(String, Value)>);

impl<'de> serde::Deserialize<'de> for JsonMembers {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = JsonMembers;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<JsonMembers, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry()? {
                    members.push(member);
                }
                Ok(JsonMembers(members))
            }
        }
        d.deserialize_map(Visitor)
    }
}

/// What an endpoint accepts, in its resource's app data
/// (`web::resource(..).app_data(ParamTable { .. })`), where [`Params`] finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamTable {
    /// The parameters.
    pub params: Vec<Param>,
    /// The largest body accepted, bytes.
    pub json_limit: usize,
    /// Whether fault parameters and test-only flags are accepted (`FAULT_INJECTION=on`).
    pub fault_injection: bool,
}

/// Extractor: the request's parameters (query string, plus the body's when there is one),
/// checked against the resource's [`ParamTable`] and read as `T`. A body (anything but
/// whitespace) must be `application/json` and at most `json_limit` bytes. Refused with a
/// [`ParamsError`]; a resource without a table is a bug, and panics.
#[derive(Debug)]
pub struct Params<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for Params<T> {
    type Error = ParamsError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let (req, body) = (req.clone(), web::Payload::from_request(req, payload));
        Box::pin(async move {
            let table = req.app_data::<ParamTable>();
            let table = table.expect("a Params endpoint has a ParamTable in its app data");
            let mut raw = RawParams::from_query(req.query_string());
            let limit = table.json_limit;
            let body = body
                .await
                .map_err(|e| ParamsError::UnreadableBody(e.to_string()))?;
            let bytes = (body.to_bytes_limited(limit).await)
                .map_err(|_| ParamsError::BodyTooLarge { limit })?
                .map_err(|e| ParamsError::UnreadableBody(e.to_string()))?;
            if !bytes.iter().all(u8::is_ascii_whitespace) {
                if !req.content_type().eq_ignore_ascii_case("application/json") {
                    return Err(ParamsError::UnsupportedContentType);
                }
                raw.add_json_body(&bytes)?;
            }
            let params = raw.parse(&table.params)?;
            match raw.first_needing_fault_injection(&table.params) {
                Some(parameter) if !table.fault_injection => {
                    let parameter = parameter.to_owned();
                    Err(ParamsError::FaultInjectionDisabled { parameter })
                }
                _ => Ok(Params(params)),
            }
        })
    }
}

/// The JSON schema of one parameter's values, for the OpenAPI description.
fn value_schema(param: &Param) -> ObjectBuilder {
    let integer = ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
        .minimum(Some(1));
    let boolean = ObjectBuilder::new().schema_type(Type::Boolean);
    match param.kind {
        Kind::Positive(default) => integer.default(Some(default.into())),
        Kind::Secs(max) => integer.maximum(Some(max)),
        Kind::Flag(default) => boolean.default(Some(default.into())),
        Kind::TestFlag => boolean.default(Some(false.into())),
        Kind::Label => ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(format!("^[A-Za-z0-9_-]{{1,{MAX_LABEL_LEN}}}$")))
            .examples(["ana"]),
        Kind::Fault(_) => ObjectBuilder::new().schema_type(Type::String).examples([
            "failure",
            "error:3",
            "delay:3000+error:1",
            "accepted:2",
            "redirect:1",
            "pause",
        ]),
    }
    .description(Some(param.doc))
}

/// `params` as optional query parameters of an OpenAPI operation.
pub fn query_parameters(params: &[Param]) -> Vec<Parameter> {
    let parameter = |param: &Param| {
        ParameterBuilder::new()
            .name(param.name)
            .parameter_in(ParameterIn::Query)
            .required(Required::False)
            .description(Some(param.doc))
            .schema(Some(value_schema(param)))
            .build()
    };
    params.iter().map(parameter).collect()
}

/// `params` as the optional JSON object body of an OpenAPI operation (no other members).
pub fn json_body(params: &[Param]) -> RequestBody {
    let closed = AdditionalProperties::FreeForm(false);
    let body = params.iter().fold(
        ObjectBuilder::new().additional_properties(Some(closed)),
        |body, param| body.property(param.name, value_schema(param)),
    );
    let content = ContentBuilder::new().schema(Some(body)).build();
    RequestBodyBuilder::new()
        .content("application/json", content)
        .required(Some(Required::False))
        .build()
}
