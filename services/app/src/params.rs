//! Fire parameters: read from the query string and/or a JSON body, checked against the
//! parameters a scenario declares ([`crate::scenario::Scenario::params`]). Pure (no I/O).
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

use std::collections::BTreeMap;

use serde_json::Value;
use service_kit::fault::{BranchFaults, Fault};

use crate::error::AppError;

/// Largest transaction option accepted, in seconds (one day), as the coordinator bounds them.
pub const MAX_OPTION_SECS: i64 = 86_400;
/// Largest `request_timeout` accepted, in seconds, as the coordinator bounds it: a branch call
/// held open longer ties up a pass of the coordinator for that long.
pub const MAX_REQUEST_TIMEOUT_SECS: i64 = 60;

/// What values a parameter takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    /// A whole number greater than 0 (ids, quantities, amounts in minor units), with a default.
    PositiveInt {
        /// The value when the parameter is not given.
        default: i64,
    },
    /// A whole number of seconds from 1 to `max`, or absent (a transaction option the
    /// coordinator defaults).
    OptionalSecs {
        /// The largest value accepted.
        max: i64,
    },
    /// `true`/`false` (query: also `1`/`0`), with a default.
    Bool {
        /// The value when the parameter is not given.
        default: bool,
    },
    /// A fault spec for one branch and op (`failure`, `error:3`, `delay:3000`, ...; see
    /// `service_kit::fault`), or absent.
    Fault,
}

/// One parameter a scenario accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamSpec {
    /// Its name in the query string and the JSON body.
    pub name: &'static str,
    /// Its kind and default.
    pub kind: ParamKind,
    /// What it means, for humans (units included).
    pub doc: &'static str,
}

impl ParamSpec {
    /// A whole number > 0 with a default.
    pub const fn positive_int(name: &'static str, default: i64, doc: &'static str) -> Self {
        let kind = ParamKind::PositiveInt { default };
        ParamSpec { name, kind, doc }
    }

    /// A [`ParamKind::OptionalSecs`] parameter of at most `max` seconds.
    pub const fn optional_secs(name: &'static str, max: i64, doc: &'static str) -> Self {
        let kind = ParamKind::OptionalSecs { max };
        ParamSpec { name, kind, doc }
    }

    /// A [`ParamKind::Bool`] parameter.
    pub const fn boolean(name: &'static str, default: bool, doc: &'static str) -> Self {
        let kind = ParamKind::Bool { default };
        ParamSpec { name, kind, doc }
    }

    /// A [`ParamKind::Fault`] parameter.
    pub const fn fault(name: &'static str, doc: &'static str) -> Self {
        let kind = ParamKind::Fault;
        ParamSpec { name, kind, doc }
    }
}

/// A parameter's value as given: text from the query string (percent-decoded), or JSON from the
/// body.
#[derive(Debug, Clone, PartialEq)]
enum RawValue {
    Query(String),
    Body(Value),
}

impl RawValue {
    /// Where it came from, for error messages.
    fn source(&self) -> &'static str {
        match self {
            RawValue::Query(_) => "the query string",
            RawValue::Body(_) => "the JSON body",
        }
    }

    /// The value as the caller wrote it, shortened, for error messages.
    fn shown(&self) -> String {
        let text = match self {
            RawValue::Query(s) => format!("{s:?}"),
            RawValue::Body(v) => v.to_string(),
        };
        match text.char_indices().nth(40) {
            Some((end, _)) => format!("{}...", &text[..end]),
            None => text,
        }
    }
}

/// The parameters of one request, as given, in the order given.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RawParams {
    entries: Vec<(String, RawValue)>,
}

impl RawParams {
    /// The pairs of a query string (without the `?`), percent-decoded.
    pub fn from_query(query: &str) -> RawParams {
        let pairs = url::form_urlencoded::parse(query.as_bytes());
        RawParams {
            entries: pairs
                .map(|(k, v)| (k.into_owned(), RawValue::Query(v.into_owned())))
                .collect(),
        }
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
        self.entries
            .extend(members.map(|(k, v)| (k, RawValue::Body(v))));
        Ok(())
    }

    /// Checks every given parameter against `specs` (see the module docs for the rules) and
    /// fills in defaults. The error names the first parameter at fault.
    pub fn parse(&self, specs: &[ParamSpec]) -> Result<Params, AppError> {
        let mut given: BTreeMap<&str, &RawValue> = BTreeMap::new();
        let mut values = BTreeMap::new();
        for (name, raw) in &self.entries {
            let Some(spec) = specs.iter().find(|s| s.name == name) else {
                let accepted: Vec<&str> = specs.iter().map(|s| s.name).collect();
                let accepted = accepted.join(", ");
                let message = format!("unknown parameter {name:?}; accepted: {accepted}");
                return Err(invalid(name, message));
            };
            if let Some(first) = given.insert(spec.name, raw) {
                let message = if first.source() == raw.source() {
                    format!("{name} is given twice in {}", raw.source())
                } else {
                    format!("{name} is given both in the query string and in the JSON body; give it once")
                };
                return Err(invalid(name, message));
            }
            values.insert(spec.name, check(spec, raw)?);
        }
        for spec in specs {
            let default = match spec.kind {
                ParamKind::PositiveInt { default } => ParamValue::Int(default),
                ParamKind::Bool { default } => ParamValue::Bool(default),
                ParamKind::OptionalSecs { .. } | ParamKind::Fault => continue,
            };
            values.entry(spec.name).or_insert(default);
        }
        Ok(Params { values })
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

fn invalid(parameter: &str, message: String) -> AppError {
    let parameter = parameter.to_owned();
    AppError::InvalidParameter { parameter, message }
}

/// `raw` checked against `spec`'s kind.
fn check(spec: &ParamSpec, raw: &RawValue) -> Result<ParamValue, AppError> {
    let name = spec.name;
    let (value, expected) = match spec.kind {
        ParamKind::PositiveInt { .. } | ParamKind::OptionalSecs { .. } => {
            let max = match spec.kind {
                ParamKind::OptionalSecs { max } => max,
                _ => i64::MAX,
            };
            let number = match raw {
                // Only digits: the one failure left is a number too large for i64.
                RawValue::Query(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
                    s.parse::<i64>().ok()
                }
                RawValue::Body(v) => v.as_i64(),
                RawValue::Query(_) => None,
            };
            let value = number
                .filter(|n| (1..=max).contains(n))
                .map(ParamValue::Int);
            (value, format!("a whole number from 1 to {max}"))
        }
        ParamKind::Bool { .. } => {
            let value = match raw {
                RawValue::Query(s) if s == "true" || s == "1" => Some(true),
                RawValue::Query(s) if s == "false" || s == "0" => Some(false),
                RawValue::Body(Value::Bool(b)) => Some(*b),
                _ => None,
            };
            (value.map(ParamValue::Bool), "true or false".to_owned())
        }
        ParamKind::Fault => match raw {
            RawValue::Query(s) | RawValue::Body(Value::String(s)) => {
                let fault = s.parse::<Fault>();
                return fault
                    .map(ParamValue::Fault)
                    .map_err(|e| invalid(name, format!("{name}: {e}")));
            }
            RawValue::Body(_) => (None, "a fault spec string".to_owned()),
        },
    };
    value.ok_or_else(|| {
        invalid(
            name,
            format!("{name} must be {expected}, not {}", raw.shown()),
        )
    })
}

/// A checked parameter value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ParamValue {
    Int(i64),
    Bool(bool),
    Fault(Fault),
}

/// Checked parameters, every declared one present (given or defaulted).
///
/// The getters panic when the scenario did not declare the parameter they are asked for: the
/// handler and its scenario's parameters disagree, a bug the first request shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    values: BTreeMap<&'static str, ParamValue>,
}

impl Params {
    /// The value of the whole-number parameter `name`.
    pub fn int(&self, name: &str) -> i64 {
        match self.values.get(name) {
            Some(ParamValue::Int(n)) => *n,
            _ => panic!("whole-number parameter {name:?} is not declared by this scenario"),
        }
    }

    /// The value of the [`ParamKind::OptionalSecs`] parameter `name`, if given.
    pub fn optional_int(&self, name: &str) -> Option<i64> {
        match self.values.get(name) {
            Some(ParamValue::Int(n)) => Some(*n),
            _ => None,
        }
    }

    /// The value of the flag `name` (its default when not given).
    pub fn flag(&self, name: &str) -> bool {
        match self.values.get(name) {
            Some(ParamValue::Bool(b)) => *b,
            _ => panic!("flag {name:?} is not declared by this scenario"),
        }
    }

    /// The fault given for `name` (`trans_in_confirm`, ...), if any.
    pub fn fault(&self, name: &str) -> Option<Fault> {
        match self.values.get(name) {
            Some(ParamValue::Fault(f)) => Some(*f),
            _ => None,
        }
    }

    /// The faults given for `rm`'s Try, Confirm and Cancel (`trans_out_try`, ...): what its
    /// branch data carries as `fault`.
    pub fn faults(&self, rm: Rm) -> BranchFaults {
        let [try_, confirm, cancel] = rm.fault_params();
        BranchFaults {
            try_: self.fault(try_.name),
            confirm: self.fault(confirm.name),
            cancel: self.fault(cancel.name),
        }
    }

    /// The name of the first fault parameter given, if any.
    pub fn first_fault_given(&self) -> Option<&'static str> {
        let mut faults = self
            .values
            .iter()
            .filter(|(_, v)| matches!(v, ParamValue::Fault(_)));
        faults.next().map(|(name, _)| *name)
    }
}

/// An RM the AP calls, for its fault parameters `<rm>_try|confirm|cancel`: each value is a fault
/// spec the AP puts into that RM's branch data (see `service_kit::fault`), where the RM reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rm {
    /// Bank A (`TRANS_OUT_URL`).
    TransOut,
    /// Bank B (`TRANS_IN_URL`).
    TransIn,
    /// The stock service (`STOCK_URL`).
    Stock,
}

impl Rm {
    /// Its fault parameters, for Try, Confirm and Cancel in that order.
    pub fn fault_params(self) -> &'static [ParamSpec; 3] {
        const TRANS_OUT: [ParamSpec; 3] = [
            ParamSpec::fault("trans_out_try", "TransOut's Try"),
            ParamSpec::fault("trans_out_confirm", "TransOut's Confirm"),
            ParamSpec::fault("trans_out_cancel", "TransOut's Cancel"),
        ];
        const TRANS_IN: [ParamSpec; 3] = [
            ParamSpec::fault("trans_in_try", "TransIn's Try"),
            ParamSpec::fault("trans_in_confirm", "TransIn's Confirm"),
            ParamSpec::fault("trans_in_cancel", "TransIn's Cancel"),
        ];
        const STOCK: [ParamSpec; 3] = [
            ParamSpec::fault("stock_try", "Stock's Try"),
            ParamSpec::fault("stock_confirm", "Stock's Confirm"),
            ParamSpec::fault("stock_cancel", "Stock's Cancel"),
        ];
        match self {
            Rm::TransOut => &TRANS_OUT,
            Rm::TransIn => &TRANS_IN,
            Rm::Stock => &STOCK,
        }
    }
}
