//! Fire parameters: read from the query string and/or a JSON body, checked against the
//! parameters a scenario declares ([`crate::scenario::Scenario::params`]), and handed to the
//! handler as a typed [`FireParams`]. Pure (no I/O).
//!
//! How the two sources combine: they are merged into one set, and **each parameter may be given
//! once in all**. A name repeated in the query string (`?amount=1&amount=2`), or given both in the
//! query string and in the body, is a `400 invalid_parameter`: there is no precedence rule to
//! remember, and no silent choice between two amounts of money. Parameters not given take their
//! defaults.
//!
//! Values: in the query string, decimal digits only (`30`; not `+30`, `3e1`, `30.0`); in the body,
//! JSON integers only (`{"amount": 30}`; not `"30"`, `30.0`, `null`). Every value must be
//! greater than 0 and fit an i64. Unknown names are refused, so a typo (`ammount=5`) cannot
//! silently fall back to the default.

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{Map, Value};
use service_kit::fault::{BranchFaults, Fault};
use tcc::client::TransOptions;
use tcc::protocol::Op;

use crate::error::AppError;

/// Largest transaction option accepted, in seconds (one day), as the coordinator bounds them.
pub const MAX_OPTION_SECS: i64 = 86_400;
/// Largest `request_timeout` accepted, in seconds, as the coordinator bounds it: a branch call
/// held open longer ties up a pass of the coordinator for that long.
pub const MAX_REQUEST_TIMEOUT_SECS: i64 = 60;

/// What values a parameter takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A whole number greater than 0 (ids, quantities, amounts in minor units), with its default.
    Positive(i64),
    /// A whole number of seconds from 1 to this maximum, or absent (a transaction option the
    /// coordinator defaults).
    Secs(i64),
    /// `true`/`false` (query: also `1`/`0`), with its default.
    Flag(bool),
    /// A fault spec (`failure`, `error:3`, `delay:3000`, ...; see `service_kit::fault`) for this
    /// op of the RM its name starts with (`trans_in_confirm`: `trans_in`), or absent: it rides in
    /// that RM's branch data as `"fault": {"<op>": spec}` ([`Faults`]).
    Fault(Op),
}

impl Kind {
    /// What a value must be, for error messages.
    fn expected(self) -> String {
        match self {
            Kind::Positive(_) => format!("a whole number from 1 to {}", i64::MAX),
            Kind::Secs(max) => format!("a whole number from 1 to {max}"),
            Kind::Flag(_) => "true or false".into(),
            Kind::Fault(_) => "a fault spec string".into(),
        }
    }
}

/// One parameter a scenario accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Param {
    /// Its name in the query string and the JSON body.
    pub name: &'static str,
    /// Its values and default.
    pub kind: Kind,
    /// What it means, for humans (units included).
    pub doc: &'static str,
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
    /// `param`'s value checked against its kind, as JSON of the type [`FireParams`] reads.
    fn check(&self, param: &Param) -> Result<Value, AppError> {
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
            (Kind::Flag(_), Value::Bool(b)) => Some(Value::Bool(*b)),
            (Kind::Flag(_), Value::String(s)) if self.in_query => match s.as_str() {
                "true" | "1" => Some(Value::Bool(true)),
                "false" | "0" => Some(Value::Bool(false)),
                _ => None,
            },
            (Kind::Fault(_), Value::String(s)) => match s.parse::<Fault>() {
                Ok(_) => Some(self.value.clone()),
                Err(e) => return Err(invalid(name, format!("{name}: {e}"))),
            },
            _ => None,
        };
        checked.ok_or_else(|| {
            let mut shown = self.value.to_string();
            if let Some((end, _)) = shown.char_indices().nth(40) {
                shown.replace_range(end.., "...");
            }
            let expected = param.kind.expected();
            invalid(name, format!("{name} must be {expected}, not {shown}"))
        })
    }
}

fn invalid(parameter: &str, message: String) -> AppError {
    let parameter = parameter.to_owned();
    AppError::InvalidParameter { parameter, message }
}

/// The parameters of one request, as given, in the order given.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RawParams(Vec<Given>);

impl RawParams {
    /// The pairs of a query string (without the `?`), percent-decoded.
    pub fn from_query(query: &str) -> RawParams {
        let pairs = url::form_urlencoded::parse(query.as_bytes());
        RawParams(
            pairs
                .map(|(name, value)| Given {
                    name: name.into_owned(),
                    in_query: true,
                    value: Value::String(value.into_owned()),
                })
                .collect(),
        )
    }

    /// Adds the members of a JSON body, which must be an object (`{}` adds nothing). A member
    /// repeated inside the object is kept twice, so that [`RawParams::parse`] refuses it rather
    /// than JSON's usual "last one wins".
    pub fn add_json_body(&mut self, body: &[u8]) -> Result<(), AppError> {
        let members: JsonMembers = serde_json::from_slice(body).map_err(|e| {
            AppError::InvalidBody(if e.is_data() {
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
    /// in defaults and reads the result as `B`, the scenario's own parameters. The error names
    /// the first parameter at fault. `params` must hold `B`'s and the common ones
    /// ([`crate::scenario::COMMON_PARAMS`]): a table that does not match `B` is a bug, and panics.
    pub fn parse<B: DeserializeOwned>(&self, params: &[Param]) -> Result<FireParams<B>, AppError> {
        let mut checked = Map::new();
        let mut faults = Map::new();
        for (i, given) in self.0.iter().enumerate() {
            let name = given.name.as_str();
            let Some(param) = params.iter().find(|p| p.name == name) else {
                let accepted: Vec<&str> = params.iter().map(|p| p.name).collect();
                let accepted = accepted.join(", ");
                let message = format!("unknown parameter {name:?}; accepted: {accepted}");
                return Err(invalid(name, message));
            };
            if let Some(first) = self.0[..i].iter().find(|g| g.name == name) {
                let message = match (first.in_query, given.in_query) {
                    (true, true) => format!("{name} is given twice in the query string"),
                    (false, false) => format!("{name} is given twice in the JSON body"),
                    _ => format!("{name} is given both in the query string and in the JSON body; give it once"),
                };
                return Err(invalid(name, message));
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
                Kind::Secs(_) | Kind::Fault(_) => continue,
            };
            checked.entry(param.name).or_insert(default);
        }
        checked.insert("faults".into(), Value::from(faults));
        let fire = serde_json::from_value(Value::from(checked));
        Ok(fire.expect("checked parameters read as the scenario's FireParams"))
    }

    /// The first fault parameter given, if any (for `FAULT_INJECTION=off`).
    pub fn first_fault<'a>(&'a self, params: &[Param]) -> Option<&'a str> {
        let is_fault = |name: &str| {
            let param = params.iter().find(|p| p.name == name);
            param.is_some_and(|p| matches!(p.kind, Kind::Fault(_)))
        };
        self.0.iter().map(|g| g.name.as_str()).find(|n| is_fault(n))
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

/// The checked parameters of a fire request: `B`, the scenario's own ([`Transfer`] or
/// [`Purchase`]), and those every scenario takes ([`crate::scenario::COMMON_PARAMS`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FireParams<B> {
    /// The scenario's own parameters.
    #[serde(flatten)]
    pub business: B,
    /// `timeout_to_fail`, seconds, or the coordinator's default.
    pub timeout_to_fail: Option<u64>,
    /// `retry_interval`, seconds, or the coordinator's default.
    pub retry_interval: Option<u64>,
    /// `request_timeout`, seconds, or the coordinator's default.
    pub request_timeout: Option<u64>,
    /// `wait_result`: answer once the second phase has finished.
    pub wait_result: bool,
    /// `crash_after_try`: the AP process exits after its Trys (test only).
    pub crash_after_try: bool,
    /// The fault parameters given, by RM.
    pub faults: Faults,
}

impl<B> FireParams<B> {
    /// The global transaction's options.
    pub fn trans_options(&self) -> TransOptions {
        TransOptions {
            wait_result: self.wait_result,
            timeout_to_fail: self.timeout_to_fail,
            retry_interval: self.retry_interval,
            request_timeout: self.request_timeout,
            ..TransOptions::default()
        }
    }
}

/// The faults given for each RM's Try, Confirm and Cancel: what its branch data carries as
/// `fault` (`None`: no fault parameter for that RM).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Faults {
    /// `trans_out_try|confirm|cancel`.
    pub trans_out: Option<BranchFaults>,
    /// `trans_in_try|confirm|cancel`.
    pub trans_in: Option<BranchFaults>,
    /// `stock_try|confirm|cancel`.
    pub stock: Option<BranchFaults>,
}

/// The own parameters of a transfer (`fireTcc`, `fireTccRollback`, `fireTccNested`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Transfer {
    /// Minor units to move.
    pub amount: i64,
    /// The account debited in bank A.
    pub from: i64,
    /// The account credited in bank B.
    pub to: i64,
}

/// The own parameters of `firePurchase`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Purchase {
    /// The product reserved in the stock service.
    pub product_id: i64,
    /// Units bought.
    pub quantity: i64,
    /// The account debited in bank A.
    pub buyer: i64,
    /// The account credited in bank B.
    pub merchant: i64,
}
