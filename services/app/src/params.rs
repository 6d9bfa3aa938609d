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
    /// A whole number greater than 0 (ids, quantities, amounts in minor units).
    PositiveInt {
        /// The value when the parameter is not given.
        default: i64,
    },
    /// A whole number of seconds greater than 0, or absent (a transaction option the
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
    /// A fault spec for one branch and phase (`failure`, `error:3`, `delay:3000`, `accepted:2`,
    /// `redirect:1`, ...; see `service_kit::fault`), or absent.
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
    /// A [`ParamKind::OptionalSecs`] parameter of at most `max` seconds.
    pub const fn optional_secs(name: &'static str, max: i64, doc: &'static str) -> Self {
        ParamSpec {
            name,
            kind: ParamKind::OptionalSecs { max },
            doc,
        }
    }

    /// A [`ParamKind::Bool`] parameter.
    pub const fn boolean(name: &'static str, default: bool, doc: &'static str) -> Self {
        ParamSpec {
            name,
            kind: ParamKind::Bool { default },
            doc,
        }
    }

    /// A [`ParamKind::Fault`] parameter.
    pub const fn fault(name: &'static str, doc: &'static str) -> Self {
        ParamSpec {
            name,
            kind: ParamKind::Fault,
            doc,
        }
    }

    /// A whole number > 0 with a default.
    pub const fn positive_int(name: &'static str, default: i64, doc: &'static str) -> Self {
        ParamSpec {
            name,
            kind: ParamKind::PositiveInt { default },
            doc,
        }
    }
}

/// Where a raw parameter came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The URL's query string.
    Query,
    /// The JSON body.
    Body,
}

impl Source {
    fn describe(self) -> &'static str {
        match self {
            Source::Query => "the query string",
            Source::Body => "the JSON body",
        }
    }
}

/// A parameter's value before checking.
#[derive(Debug, Clone, PartialEq)]
pub enum RawValue {
    /// From the query string (percent-decoded).
    Text(String),
    /// From the JSON body.
    Json(serde_json::Value),
}

impl RawValue {
    /// The value as the caller wrote it, shortened, for error messages.
    fn shown(&self) -> String {
        let text = match self {
            RawValue::Text(s) => format!("{s:?}"),
            RawValue::Json(v) => v.to_string(),
        };
        if text.chars().count() > 40 {
            format!("{}...", text.chars().take(40).collect::<String>())
        } else {
            text
        }
    }
}

/// The parameters of one request, as given, in the order given.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RawParams {
    entries: Vec<(String, RawValue, Source)>,
}

impl RawParams {
    /// The pairs of a query string (without the `?`), percent-decoded.
    pub fn from_query(query: &str) -> RawParams {
        RawParams {
            entries: url::form_urlencoded::parse(query.as_bytes())
                .map(|(k, v)| {
                    (
                        k.into_owned(),
                        RawValue::Text(v.into_owned()),
                        Source::Query,
                    )
                })
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
        self.entries.extend(
            members
                .0
                .into_iter()
                .map(|(k, v)| (k, RawValue::Json(v), Source::Body)),
        );
        Ok(())
    }

    /// Checks every given parameter against `specs` (see the module docs for the rules) and
    /// fills in defaults. The error names the first parameter at fault.
    pub fn parse(&self, specs: &[ParamSpec]) -> Result<Params, AppError> {
        let mut seen: BTreeMap<&str, Source> = BTreeMap::new();
        let mut values = BTreeMap::new();
        for (name, raw, source) in &self.entries {
            let Some(spec) = specs.iter().find(|s| s.name == name) else {
                let accepted: Vec<&str> = specs.iter().map(|s| s.name).collect();
                return Err(invalid(
                    name,
                    format!(
                        "unknown parameter {name:?}; accepted: {}",
                        accepted.join(", ")
                    ),
                ));
            };
            if let Some(first) = seen.insert(spec.name, *source) {
                let message = if first == *source {
                    format!("{name} is given twice in {}", source.describe())
                } else {
                    format!(
                        "{name} is given both in the query string and in the JSON body; give it once"
                    )
                };
                return Err(invalid(name, message));
            }
            values.insert(spec.name, check(spec, raw)?);
        }
        for spec in specs {
            let default = match spec.kind {
                ParamKind::PositiveInt { default } => Some(ParamValue::Int(default)),
                ParamKind::Bool { default } => Some(ParamValue::Bool(default)),
                ParamKind::OptionalSecs { .. } | ParamKind::Fault => None,
            };
            if let Some(default) = default {
                values.entry(spec.name).or_insert(default);
            }
        }
        Ok(Params { values })
    }
}

/// A JSON object's members in order, duplicates kept.
struct JsonMembers(Vec<(String, serde_json::Value)>);

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
    AppError::InvalidParameter {
        parameter: parameter.to_owned(),
        message,
    }
}

fn check(spec: &ParamSpec, raw: &RawValue) -> Result<ParamValue, AppError> {
    match spec.kind {
        ParamKind::PositiveInt { .. } | ParamKind::OptionalSecs { .. } => {
            let number = match raw {
                RawValue::Text(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
                    // Only digits: the one failure left is a number too large for i64.
                    s.parse::<i64>().ok()
                }
                RawValue::Json(v) => v.as_i64(),
                _ => None,
            };
            // Transaction options are seconds, bounded as the coordinator bounds them.
            let max = match spec.kind {
                ParamKind::OptionalSecs { max } => max,
                _ => i64::MAX,
            };
            match number {
                Some(n) if (1..=max).contains(&n) => Ok(ParamValue::Int(n)),
                _ => Err(invalid(
                    spec.name,
                    format!(
                        "{} must be a whole number from 1 to {max}, not {}",
                        spec.name,
                        raw.shown()
                    ),
                )),
            }
        }
        ParamKind::Bool { .. } => match raw {
            RawValue::Text(s) if s == "true" || s == "1" => Ok(ParamValue::Bool(true)),
            RawValue::Text(s) if s == "false" || s == "0" => Ok(ParamValue::Bool(false)),
            RawValue::Json(serde_json::Value::Bool(b)) => Ok(ParamValue::Bool(*b)),
            _ => Err(invalid(
                spec.name,
                format!("{} must be true or false, not {}", spec.name, raw.shown()),
            )),
        },
        ParamKind::Fault => {
            let text = match raw {
                RawValue::Text(s) => Some(s.as_str()),
                RawValue::Json(serde_json::Value::String(s)) => Some(s.as_str()),
                _ => None,
            };
            match text.map(str::parse::<Fault>) {
                Some(Ok(fault)) => Ok(ParamValue::Fault(fault)),
                Some(Err(e)) => Err(invalid(spec.name, format!("{}: {e}", spec.name))),
                None => Err(invalid(
                    spec.name,
                    format!(
                        "{} must be a fault spec string, not {}",
                        spec.name,
                        raw.shown()
                    ),
                )),
            }
        }
    }
}

/// A checked parameter value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamValue {
    /// A whole number > 0.
    Int(i64),
    /// A flag.
    Bool(bool),
    /// A fault spec.
    Fault(Fault),
}

/// Checked parameters, every declared one present (given or defaulted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    values: BTreeMap<&'static str, ParamValue>,
}

impl Params {
    /// The value of the whole-number parameter `name`.
    ///
    /// Panics when the scenario did not declare `name`: the scenario table and the code reading
    /// it disagree, a bug the catalogue's unit tests catch.
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
    ///
    /// Panics when the scenario did not declare `name`.
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
        self.values
            .iter()
            .find(|(_, v)| matches!(v, ParamValue::Fault(_)))
            .map(|(name, _)| *name)
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
