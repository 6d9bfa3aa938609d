//! The parameter rules of the fire endpoints ([`service_kit::params`] over the AP's tables):
//! defaults, the two sources, the values accepted, unknown and repeated names.

use app::scenario::{FireParams, Transfer, COMMON_PARAMS, TRANSFER_PARAMS};
use service_kit::params::{Param, ParamsError, RawParams};

type Params = FireParams<Transfer>;

fn specs() -> Vec<Param> {
    [TRANSFER_PARAMS, COMMON_PARAMS].concat()
}

fn from_query(q: &str) -> Result<Params, ParamsError> {
    RawParams::from_query(q).parse(&specs())
}

fn from_body(body: &str) -> Result<Params, ParamsError> {
    let mut raw = RawParams::default();
    raw.add_json_body(body.as_bytes())?;
    raw.parse(&specs())
}

fn refused_parameter(result: Result<Params, ParamsError>) -> (String, String) {
    match result {
        Err(ParamsError::InvalidParameter { parameter, message }) => (parameter, message),
        other => panic!("expected InvalidParameter, got {other:?}"),
    }
}

#[test]
fn absent_parameters_take_their_defaults() {
    let p = from_query("").unwrap();
    assert_eq!((p.business.amount, p.business.from), (30, 1));
    let p = from_body("{}").unwrap();
    assert_eq!(p.business.amount, 30);
}

#[test]
fn query_and_body_values_are_read() {
    let p = from_query("amount=45&from=7").unwrap();
    assert_eq!((p.business.amount, p.business.from), (45, 7));
    let p = from_body(r#"{"amount": 45, "from": 7}"#).unwrap();
    assert_eq!((p.business.amount, p.business.from), (45, 7));

    let mut raw = RawParams::from_query("amount=5");
    raw.add_json_body(br#"{"from": 9}"#).unwrap();
    let p: Params = raw.parse(&specs()).unwrap();
    assert_eq!((p.business.amount, p.business.from), (5, 9));
}

#[test]
fn zero_negative_fractional_and_non_numeric_query_values_are_refused() {
    for bad in [
        "0",
        "-5",
        "1.5",
        "abc",
        "",
        "+5",
        "3e1",
        " 5",
        "9223372036854775808",
    ] {
        let (parameter, message) = refused_parameter(from_query(&format!(
            "amount={}",
            url::form_urlencoded::byte_serialize(bad.as_bytes()).collect::<String>()
        )));
        assert_eq!(parameter, "amount", "{bad:?}");
        assert!(
            message.starts_with("amount must be a whole number"),
            "{message}"
        );
    }
    assert!(from_query("amount=9223372036854775807").is_ok());
}

#[test]
fn body_values_must_be_json_integers_greater_than_zero() {
    for bad in [
        "0", "-5", "1.5", "30.0", "\"30\"", "null", "true", "[1]", "1e40",
    ] {
        let (parameter, _) = refused_parameter(from_body(&format!(r#"{{"amount": {bad}}}"#)));
        assert_eq!(parameter, "amount", "{bad}");
    }
}

#[test]
fn unknown_parameters_are_refused_with_the_accepted_list() {
    let (parameter, message) = refused_parameter(from_query("ammount=5"));
    assert_eq!(parameter, "ammount");
    assert!(
        message.contains("accepted: amount, from, to, timeout_to_fail"),
        "{message}"
    );
    let (parameter, _) = refused_parameter(from_body(r#"{"to_account": 2}"#));
    assert_eq!(parameter, "to_account");
}

#[test]
fn a_parameter_given_twice_is_refused_whatever_the_sources() {
    let (parameter, message) = refused_parameter(from_query("amount=5&amount=6"));
    assert_eq!(parameter, "amount");
    assert!(message.contains("twice in the query string"), "{message}");

    let mut raw = RawParams::from_query("amount=5");
    raw.add_json_body(br#"{"amount": 5}"#).unwrap();
    let (parameter, message) = refused_parameter(raw.parse(&specs()));
    assert_eq!(parameter, "amount");
    assert!(message.contains("both in the query string and in the JSON body"));

    let (parameter, message) = refused_parameter(from_body(r#"{"from": 1, "from": 2}"#));
    assert_eq!(parameter, "from");
    assert!(message.contains("twice in the JSON body"), "{message}");
}

#[test]
fn a_body_that_is_not_a_json_object_is_refused() {
    let mut raw = RawParams::default();
    assert!(matches!(
        raw.add_json_body(b"[1, 2]"),
        Err(ParamsError::InvalidBody(_))
    ));
    assert!(matches!(
        raw.add_json_body(b"{\"amount\": "),
        Err(ParamsError::InvalidBody(_))
    ));
}
