//! Bad input on every endpoint of every binary, as one table per endpoint group.
//!
//! Each row is one malformed request: malformed or truncated JSON, a wrong or missing content
//! type, missing or wrongly typed fields, zero, negative, fractional and overflowing amounts and
//! quantities, unknown accounts and products, over-long or control-character gids and branch
//! ids, a `trans_type` other than `tcc`, calls on unknown or finished gids, non-http(s) URLs,
//! bodies over `JSON_LIMIT`. Every row must be answered with the expected 4xx and a JSON body
//! saying what is wrong: `{"error": "<code>", "message": ...}`, or, for a branch's business
//! refusal, DTM's `409 {"dtm_result": "FAILURE", "message": ...}`. No message may leak SQL,
//! Diesel or Postgres wording, a source path or a panic.
//!
//! A 4xx alone does not prove a request was harmless: a handler could write, then fail. So every
//! table of every database of the system (the coordinator's, both banks' and the stock
//! service's, barrier tables included) is read before the table runs and again after each row,
//! and must be unchanged.
//!
//! Two things are deliberately not rows: an unknown account given to the AP (`fireTcc?from=999`)
//! is not malformed but refused by the bank's Try inside the global transaction, so it ends as a
//! rolled-back transaction the coordinator records (`409` with its gid); and the AP's nested
//! Confirm and Cancel do nothing and read no body, so only their queries are checked.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use coordinator::admin::AdminToken;
use diesel::sql_types::Text;
use diesel::{PgConnection, QueryableByName, RunQueryDsl};
use reqwest::Method;
use serde_json::{json, Value};
use test_support::spawn::{spawn_coordinator_with, spawn_system, Spawned, System};
use test_support::TestDb;

/// A gid one byte over the protocol's limit (128).
fn long_gid() -> String {
    "g".repeat(129)
}

/// A branch id one byte over the protocol's limit (64).
fn long_branch_id() -> String {
    "1".repeat(65)
}

/// A valid JSON object larger than every binary's `JSON_LIMIT` (64 KiB by default).
fn oversized_body() -> String {
    json!({ "gid": "g1", "padding": "x".repeat(70_000) }).to_string()
}

/// What a row expects besides its status.
#[derive(Debug, Clone)]
enum Want {
    /// `{"error": <code>, "message": <non-empty>}`.
    Error(&'static str),
    /// A branch's business refusal: `{"dtm_result": "FAILURE", "message": ...}` whose message
    /// contains this fragment.
    Refusal(&'static str),
}

/// One malformed request and the answer it must get.
#[derive(Debug, Clone)]
struct Case {
    name: String,
    method: Method,
    target: String,
    content_type: Option<&'static str>,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    status: u16,
    want: Want,
}

impl Case {
    fn new(name: impl Into<String>, method: Method, target: impl Into<String>) -> Case {
        Case {
            name: name.into(),
            method,
            target: target.into(),
            content_type: None,
            headers: Vec::new(),
            body: Vec::new(),
            status: 0,
            want: Want::Error("unset"),
        }
    }

    fn get(name: impl Into<String>, target: impl Into<String>) -> Case {
        Case::new(name, Method::GET, target)
    }

    /// A `POST` with `Content-Type: application/json` and `body` as is (valid JSON or not).
    fn post_json(
        name: impl Into<String>,
        target: impl Into<String>,
        body: impl Into<Vec<u8>>,
    ) -> Case {
        Case::post(name, target, Some("application/json"), body)
    }

    fn post(
        name: impl Into<String>,
        target: impl Into<String>,
        content_type: Option<&'static str>,
        body: impl Into<Vec<u8>>,
    ) -> Case {
        Case {
            content_type,
            body: body.into(),
            ..Case::new(name, Method::POST, target)
        }
    }

    fn header(mut self, name: &'static str, value: impl Into<String>) -> Case {
        self.headers.push((name, value.into()));
        self
    }

    /// Expects `status` with `{"error": code, "message": ...}`.
    fn is(mut self, status: u16, code: &'static str) -> Case {
        self.status = status;
        self.want = Want::Error(code);
        self
    }

    /// Expects a branch's `409 FAILURE` whose message contains `fragment`.
    fn refused(mut self, fragment: &'static str) -> Case {
        self.status = 409;
        self.want = Want::Refusal(fragment);
        self
    }
}

/// Words an error message must never show: the internals of a failure (SQL, the database
/// driver, source paths) or a panic.
const LEAKS: [&str; 8] = [
    "SELECT",
    "INSERT",
    "diesel",
    "postgres",
    "/work/",
    ".rs:",
    "panicked",
    "backtrace",
];

/// Every table of some databases, as JSON, keyed `<database>.<schema>.<table>`.
type Snapshot = BTreeMap<String, Value>;

#[derive(QueryableByName)]
struct TableName {
    #[diesel(sql_type = Text)]
    table_schema: String,
    #[diesel(sql_type = Text)]
    table_name: String,
}

#[derive(QueryableByName)]
struct TableRows {
    #[diesel(sql_type = Text)]
    rows: String,
}

/// Open connections to the databases of some binaries, for snapshots.
struct Databases {
    connections: Vec<(&'static str, PgConnection)>,
}

impl Databases {
    /// The databases of those of `binaries` that have one.
    fn of(binaries: &[&Spawned]) -> Databases {
        Databases {
            connections: binaries
                .iter()
                .filter_map(|b| b.db.as_ref().map(|db| (b.name, db.connect())))
                .collect(),
        }
    }

    /// Every row of every table of schemas `public` and `dtm_barrier` (Diesel's migration
    /// bookkeeping aside), each table as a JSON array in a stable order. Generic on purpose: a
    /// table added later is covered without touching this file.
    fn snapshot(&mut self) -> Snapshot {
        let mut snapshot = Snapshot::new();
        for (name, conn) in &mut self.connections {
            let tables: Vec<TableName> = diesel::sql_query(
                "SELECT table_schema::text AS table_schema, table_name::text AS table_name \
                 FROM information_schema.tables \
                 WHERE table_schema IN ('public', 'dtm_barrier') AND table_type = 'BASE TABLE' \
                   AND table_name <> '__diesel_schema_migrations' \
                 ORDER BY 1, 2",
            )
            .load(conn)
            .expect("listing tables");
            assert!(!tables.is_empty(), "{name} has tables");
            for table in tables {
                let rows: TableRows = diesel::sql_query(format!(
                    r#"SELECT coalesce(json_agg(t ORDER BY t::text), '[]')::text AS rows
                       FROM "{}"."{}" t"#,
                    table.table_schema, table.table_name
                ))
                .get_result(conn)
                .expect("reading a table");
                snapshot.insert(
                    format!("{name}.{}.{}", table.table_schema, table.table_name),
                    serde_json::from_str(&rows.rows).expect("json_agg gives JSON"),
                );
            }
        }
        snapshot
    }
}

/// The rows that differ between two snapshots, table by table (`+` only after, `-` only
/// before), for the report.
fn differences(before: &Snapshot, after: &Snapshot) -> String {
    let empty = Vec::new();
    let rows = |snapshot: &Snapshot, table: &str| -> Vec<Value> {
        snapshot
            .get(table)
            .and_then(Value::as_array)
            .unwrap_or(&empty)
            .clone()
    };
    let mut out = String::new();
    let tables: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    for table in tables {
        let (old, new) = (rows(before, table), rows(after, table));
        for (sign, row) in new
            .iter()
            .filter(|r| !old.contains(r))
            .map(|r| ('+', r))
            .chain(old.iter().filter(|r| !new.contains(r)).map(|r| ('-', r)))
        {
            let shown: String = row.to_string().chars().take(300).collect();
            let _ = write!(out, "\n      {table} {sign} {shown}");
        }
    }
    out
}

/// Sends each case to `base_url` and checks its answer and that `databases` are unchanged
/// after it; panics at the end listing every case that failed (not only the first), with
/// `group` in the message.
async fn run_table(group: &str, base_url: &str, databases: &mut Databases, cases: Vec<Case>) {
    let http = reqwest::Client::new();
    let mut before = databases.snapshot();
    let mut failures = Vec::new();
    let total = cases.len();
    let mut per_endpoint: BTreeMap<String, usize> = BTreeMap::new();
    for case in &cases {
        let path = case.target.split('?').next().unwrap_or_default();
        *per_endpoint
            .entry(format!("{} {path:.60}", case.method))
            .or_default() += 1;
    }
    for case in cases {
        let mut request = http.request(case.method.clone(), format!("{base_url}{}", case.target));
        if let Some(content_type) = case.content_type {
            request = request.header("content-type", content_type);
        }
        for (name, value) in &case.headers {
            request = request.header(*name, value);
        }
        let label = format!(
            "{} {} [{}]",
            case.method,
            case.target.chars().take(100).collect::<String>(),
            case.name
        );
        let response = match request.body(case.body.clone()).send().await {
            Ok(response) => response,
            Err(e) => {
                failures.push(format!("{label}: no answer: {e}"));
                continue;
            }
        };
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        if let Some(problem) = check_answer(&case, status, &text) {
            failures.push(format!("{label}: {problem}; answered {status} {text:.300}"));
        }
        let after = databases.snapshot();
        if after != before {
            failures.push(format!(
                "{label}: changed the databases:{}",
                differences(&before, &after)
            ));
            // Each case is judged on its own changes only.
            before = after;
        }
    }
    println!("{group}: {total} cases");
    for (endpoint, count) in per_endpoint {
        println!("  {count:4} {endpoint}");
    }
    assert!(
        failures.is_empty(),
        "{group}: {} of {total} cases failed:\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
}

/// What is wrong with the answer `status` `text` to `case`, if anything.
fn check_answer(case: &Case, status: u16, text: &str) -> Option<String> {
    assert!(
        (400..500).contains(&case.status),
        "{}: expects a 4xx",
        case.name
    );
    if status != case.status {
        return Some(format!("expected {}", case.status));
    }
    let Ok(body) = serde_json::from_str::<Value>(text) else {
        return Some("the body is not JSON".into());
    };
    let Some(message) = body["message"].as_str().filter(|m| !m.trim().is_empty()) else {
        return Some("no `message` string".into());
    };
    let lower = message.to_lowercase();
    if let Some(leak) = LEAKS.iter().find(|w| {
        if w.chars().all(|c| c.is_ascii_uppercase()) {
            message.contains(*w)
        } else {
            lower.contains(*w)
        }
    }) {
        return Some(format!("the message leaks {leak:?}"));
    }
    match case.want {
        Want::Error(code) if body["error"] != code => Some(format!("expected error {code:?}")),
        Want::Refusal(_) if body["dtm_result"] != "FAILURE" => {
            Some("expected dtm_result FAILURE".into())
        }
        Want::Refusal(fragment) if !message.contains(fragment) => {
            Some(format!("expected a message saying {fragment:?}"))
        }
        _ => None,
    }
}

/// Every database of the system.
fn all_databases(sys: &System) -> Databases {
    Databases::of(&[&sys.coordinator, &sys.trans_out, &sys.trans_in, &sys.stock])
}

/// `POST {path}` with a JSON body, asserting 200: set-ups before a table runs.
async fn post_ok(http: &reqwest::Client, url: String, body: Value) -> Value {
    let response = http.post(&url).json(&body).send().await.expect("an answer");
    let status = response.status().as_u16();
    let text = response.text().await.expect("a body");
    assert_eq!(status, 200, "set-up POST {url} {body}: {text}");
    serde_json::from_str(&text).expect("JSON")
}

/// A committed transfer through the AP, for cases on a finished gid; returns its gid.
async fn finished_gid(sys: &System) -> String {
    let (status, body) = sys.fire("/api/fireTcc?amount=7").await;
    assert_eq!(status, 200, "set-up fireTcc: {body}");
    sys.wait_for_status(
        body["gid"].as_str().expect("a gid"),
        "succeed",
        std::time::Duration::from_secs(10),
    )
    .await;
    body["gid"].as_str().unwrap().to_owned()
}

/// A transaction left `prepared` (an hour before it times out) with branch `01` registered.
async fn prepared_gid(sys: &System) -> String {
    let gid = "bad-input-prepared".to_owned();
    let dtm = sys.coordinator.dtm_url();
    post_ok(
        &sys.http,
        format!("{dtm}/prepare"),
        json!({ "gid": gid, "trans_type": "tcc", "timeout_to_fail": 3600 }),
    )
    .await;
    post_ok(
        &sys.http,
        format!("{dtm}/registerBranch"),
        json!({
            "gid": gid, "trans_type": "tcc", "branch_id": "01", "data": "{}",
            "confirm": "http://127.0.0.1:1/api/TransOutConfirm",
            "cancel": "http://127.0.0.1:1/api/TransOutCancel",
        }),
    )
    .await;
    gid
}

/// The cases every JSON endpoint shares: bodies that are not the JSON object it takes.
fn malformed_json_cases(target: &str, over_limit: bool) -> Vec<Case> {
    let mut cases = vec![
        Case::post_json("truncated JSON", target, r#"{"gid": "g1", "#).is(400, "invalid_json"),
        Case::post_json("not JSON", target, "gid=g1").is(400, "invalid_json"),
        Case::post_json("empty body", target, "").is(400, "invalid_json"),
        Case::post_json("a JSON array", target, "[1, 2]").is(400, "invalid_json"),
        Case::post_json("JSON null", target, "null").is(400, "invalid_json"),
        Case::post(
            "text/plain body",
            target,
            Some("text/plain"),
            r#"{"gid":"g1"}"#,
        )
        .is(415, "unsupported_content_type"),
        Case::post("no content type", target, None, r#"{"gid":"g1"}"#)
            .is(415, "unsupported_content_type"),
        Case::post(
            "form body",
            target,
            Some("application/x-www-form-urlencoded"),
            "gid=g1",
        )
        .is(415, "unsupported_content_type"),
    ];
    if over_limit {
        cases.push(
            Case::post_json("body over JSON_LIMIT", target, oversized_body())
                .is(413, "body_too_large"),
        );
    }
    cases
}

/// A JSON case: `body` (a `json!` value) posted to `target`.
fn json_case(name: impl Into<String>, target: &str, body: Value) -> Case {
    Case::post_json(name, target, body.to_string())
}

#[tokio::test]
async fn the_coordinator_dtm_api_answers_bad_input_with_a_4xx_json_error_and_changes_nothing() {
    let sys = spawn_system().await;
    let finished = finished_gid(&sys).await;
    let prepared = prepared_gid(&sys).await;
    let mut cases = Vec::new();

    // prepare
    let target = "/api/dtmsvr/prepare";
    cases.extend(malformed_json_cases(target, true));
    let prepare = |gid: &str, extra: Value| {
        let mut body = json!({ "gid": gid, "trans_type": "tcc" });
        if let (Some(body), Value::Object(extra)) = (body.as_object_mut(), extra) {
            body.extend(extra);
        }
        body
    };
    cases.extend([
        json_case("missing gid", target, json!({ "trans_type": "tcc" })).is(400, "invalid_json"),
        json_case("numeric gid", target, json!({ "gid": 5 })).is(400, "invalid_json"),
        json_case("empty gid", target, prepare("", json!({}))).is(400, "invalid_gid"),
        json_case("129-byte gid", target, prepare(&long_gid(), json!({}))).is(400, "invalid_gid"),
        json_case(
            "gid with a control character",
            target,
            prepare("g\u{1}x", json!({})),
        )
        .is(400, "invalid_gid"),
        json_case("gid with a newline", target, prepare("g\nx", json!({}))).is(400, "invalid_gid"),
        json_case("gid with a space", target, prepare("g x", json!({}))).is(400, "invalid_gid"),
        json_case("saga", target, json!({ "gid": "g1", "trans_type": "saga" }))
            .is(400, "unsupported_trans_type"),
        json_case(
            "trans_type as a number",
            target,
            json!({ "gid": "g1", "trans_type": 1 }),
        )
        .is(400, "invalid_json"),
        json_case(
            "negative timeout",
            target,
            prepare("g1", json!({ "timeout_to_fail": -1 })),
        )
        .is(400, "invalid_option"),
        json_case(
            "timeout over a day",
            target,
            prepare("g1", json!({ "timeout_to_fail": 86_401 })),
        )
        .is(400, "invalid_option"),
        json_case(
            "fractional timeout",
            target,
            prepare("g1", json!({ "retry_interval": 1.5 })),
        )
        .is(400, "invalid_json"),
        json_case(
            "timeout as a string",
            target,
            prepare("g1", json!({ "request_timeout": "5" })),
        )
        .is(400, "invalid_json"),
        Case::post_json(
            "timeout over i64",
            target,
            r#"{"gid":"g1","timeout_to_fail":9223372036854775808}"#,
        )
        .is(400, "invalid_json"),
        json_case(
            "timeout 1e30",
            target,
            prepare("g1", json!({ "timeout_to_fail": 1e30 })),
        )
        .is(400, "invalid_json"),
        json_case(
            "branch header name with a space",
            target,
            prepare("g1", json!({ "branch_headers": { "x y": "1" } })),
        )
        .is(400, "invalid_branch_headers"),
        json_case(
            "branch header value with a newline",
            target,
            prepare("g1", json!({ "branch_headers": { "x-a": "1\r\nx-b: 2" } })),
        )
        .is(400, "invalid_branch_headers"),
        json_case(
            "branch headers as a list",
            target,
            prepare("g1", json!({ "branch_headers": ["x-a"] })),
        )
        .is(400, "invalid_json"),
        json_case(
            "the fields as a JSON array",
            target,
            json!(["bad-input-array", "tcc", 0, 0, 0, {}]),
        )
        .is(400, "invalid_json"),
        json_case(
            "prepare of a finished gid",
            target,
            prepare(&finished, json!({})),
        )
        .is(409, "conflict"),
    ]);

    // registerBranch and registerTccBranch
    for target in [
        "/api/dtmsvr/registerBranch",
        "/api/dtmsvr/registerTccBranch",
    ] {
        cases.extend(malformed_json_cases(target, true));
        let register = |gid: &str, extra: Value| {
            let mut body = json!({
                "gid": gid, "trans_type": "tcc", "branch_id": "02", "data": "{}",
                "confirm": "http://127.0.0.1:1/api/TransInConfirm",
                "cancel": "http://127.0.0.1:1/api/TransInCancel",
            });
            if let (Some(body), Value::Object(extra)) = (body.as_object_mut(), extra) {
                body.extend(extra);
            }
            body
        };
        let (p, url) = (prepared.as_str(), "http://127.0.0.1:1/c");
        let c = |name: &str, body: Value| json_case(name, target, body);
        cases.extend([
            c(
                "missing branch_id",
                json!({ "gid": p, "confirm": url, "cancel": url }),
            )
            .is(400, "invalid_json"),
            c(
                "missing confirm",
                json!({ "gid": p, "branch_id": "02", "cancel": url }),
            )
            .is(400, "invalid_json"),
            c(
                "data as an object",
                register(p, json!({ "data": { "amount": 1 } })),
            )
            .is(400, "invalid_json"),
            c(
                "branch_id as a number",
                register(p, json!({ "branch_id": 2 })),
            )
            .is(400, "invalid_json"),
            c("129-byte gid", register(&long_gid(), json!({}))).is(400, "invalid_gid"),
            c(
                "gid with a control character",
                register("g\u{1}", json!({})),
            )
            .is(400, "invalid_gid"),
            c("empty branch_id", register(p, json!({ "branch_id": "" })))
                .is(400, "invalid_branch_id"),
            c(
                "65-byte branch_id",
                register(p, json!({ "branch_id": long_branch_id() })),
            )
            .is(400, "invalid_branch_id"),
            c(
                "branch_id with a control character",
                register(p, json!({ "branch_id": "0\u{7}2" })),
            )
            .is(400, "invalid_branch_id"),
            c(
                "branch_id with a quote",
                register(p, json!({ "branch_id": "02'" })),
            )
            .is(400, "invalid_branch_id"),
            c("saga", register(p, json!({ "trans_type": "saga" })))
                .is(400, "unsupported_trans_type"),
            c(
                "ftp confirm URL",
                register(p, json!({ "confirm": "ftp://127.0.0.1/c" })),
            )
            .is(400, "invalid_url"),
            c(
                "javascript cancel URL",
                register(p, json!({ "cancel": "javascript:alert(1)" })),
            )
            .is(400, "invalid_url"),
            c(
                "relative confirm URL",
                register(p, json!({ "confirm": "/api/TransInConfirm" })),
            )
            .is(400, "invalid_url"),
            c(
                "file cancel URL",
                register(p, json!({ "cancel": "file:///etc/passwd" })),
            )
            .is(400, "invalid_url"),
            c("empty confirm URL", register(p, json!({ "confirm": "" }))).is(400, "invalid_url"),
            c(
                "a NUL character in the confirm URL",
                register(
                    p,
                    json!({ "confirm": "http://127.0.0.1:8082/api/In\0Confirm" }),
                ),
            )
            .is(400, "invalid_url"),
            c(
                "a NUL character in the data",
                register(p, json!({ "data": "{\"amount\": 1}\0" })),
            )
            .is(400, "invalid_data"),
            c(
                "the fields as a JSON array",
                json!([p, "tcc", "03", "{}", url, url]),
            )
            .is(400, "invalid_json"),
            c("unknown gid", register("bad-input-unknown", json!({}))).is(409, "conflict"),
            c("finished gid", register(&finished, json!({}))).is(409, "conflict"),
            json_case(
                "branch 01 again with other URLs",
                target,
                register(p, json!({ "branch_id": "01" })),
            )
            .is(409, "conflict"),
        ]);
    }

    // submit and abort
    for (target, verb) in [
        ("/api/dtmsvr/submit", "submit"),
        ("/api/dtmsvr/abort", "abort"),
    ] {
        cases.extend(malformed_json_cases(target, true));
        cases.extend([
            json_case("missing gid", target, json!({ "trans_type": "tcc" }))
                .is(400, "invalid_json"),
            json_case("129-byte gid", target, json!({ "gid": long_gid() })).is(400, "invalid_gid"),
            json_case(
                "gid with a control character",
                target,
                json!({ "gid": "g\u{1}" }),
            )
            .is(400, "invalid_gid"),
            json_case(
                "saga",
                target,
                json!({ "gid": prepared, "trans_type": "saga" }),
            )
            .is(400, "unsupported_trans_type"),
            json_case(
                "wait_result as a string",
                target,
                json!({ "gid": prepared, "wait_result": "yes" }),
            )
            .is(400, "invalid_json"),
            json_case(
                "rollback_reason as a number",
                target,
                json!({ "gid": prepared, "rollback_reason": 5 }),
            )
            .is(400, "invalid_json"),
            json_case(
                "the fields as a JSON array",
                target,
                json!([prepared, "tcc", false, "x"]),
            )
            .is(400, "invalid_json"),
            json_case(
                format!("{verb} of an unknown gid"),
                target,
                json!({ "gid": "bad-input-unknown" }),
            )
            .is(409, "conflict"),
        ]);
    }
    cases.push(
        json_case(
            "abort of a finished gid",
            "/api/dtmsvr/abort",
            json!({ "gid": finished }),
        )
        .is(409, "conflict"),
    );

    // reportTry
    let target = "/api/dtmsvr/reportTry";
    cases.extend(malformed_json_cases(target, true));
    let report = |extra: Value| {
        let mut body = json!({
            "gid": prepared, "branch_id": "01",
            "url": "http://127.0.0.1:1/api/TransOutTry",
            "outcome": "success", "http_status": 200, "latency_ms": 3,
        });
        if let (Some(body), Value::Object(extra)) = (body.as_object_mut(), extra) {
            body.extend(extra);
        }
        body
    };
    let c = |name: &str, body: Value| json_case(name, target, body);
    cases.extend([
        c(
            "missing outcome",
            json!({ "gid": prepared, "branch_id": "01", "url": "http://127.0.0.1:1/t" }),
        )
        .is(400, "invalid_json"),
        c("129-byte gid", report(json!({ "gid": long_gid() }))).is(400, "invalid_gid"),
        c(
            "65-byte branch_id",
            report(json!({ "branch_id": long_branch_id() })),
        )
        .is(400, "invalid_branch_id"),
        c("ftp url", report(json!({ "url": "ftp://127.0.0.1/t" }))).is(400, "invalid_url"),
        c("unknown outcome", report(json!({ "outcome": "maybe" }))).is(400, "invalid_outcome"),
        c("http_status 600", report(json!({ "http_status": 600 }))).is(400, "invalid_http_status"),
        c("negative http_status", report(json!({ "http_status": -1 }))).is(400, "invalid_json"),
        c("negative latency", report(json!({ "latency_ms": -1 }))).is(400, "invalid_json"),
        c("fractional latency", report(json!({ "latency_ms": 1.5 }))).is(400, "invalid_json"),
        c(
            "latency over a day",
            report(json!({ "latency_ms": 86_400_001 })),
        )
        .is(400, "invalid_latency"),
        c("message as a number", report(json!({ "message": 5 }))).is(400, "invalid_json"),
        c(
            "the fields as a JSON array",
            json!([
                prepared,
                "01",
                "http://127.0.0.1:1/t",
                "success",
                200,
                3,
                null
            ]),
        )
        .is(400, "invalid_json"),
        c("unknown gid", report(json!({ "gid": "bad-input-unknown" }))).is(409, "conflict"),
        c("unregistered branch", report(json!({ "branch_id": "09" }))).is(409, "conflict"),
    ]);

    // query, all, newGid, unknown routes and methods
    cases.extend([
        Case::get("query without gid", "/api/dtmsvr/query").is(400, "invalid_query"),
        Case::get(
            "query of a 129-byte gid",
            format!("/api/dtmsvr/query?gid={}", long_gid()),
        )
        .is(400, "invalid_gid"),
        Case::get(
            "query of a gid with a control character",
            "/api/dtmsvr/query?gid=g%01",
        )
        .is(400, "invalid_gid"),
        Case::get("query of an empty gid", "/api/dtmsvr/query?gid=").is(400, "invalid_gid"),
        Case::get(
            "query of an unknown gid",
            "/api/dtmsvr/query?gid=bad-input-unknown",
        )
        .is(404, "unknown_gid"),
        Case::get("all with limit 0", "/api/dtmsvr/all?limit=0").is(400, "invalid_limit"),
        Case::get("all with limit -1", "/api/dtmsvr/all?limit=-1").is(400, "invalid_limit"),
        Case::get("all with limit 1001", "/api/dtmsvr/all?limit=1001").is(400, "invalid_limit"),
        Case::get("all with limit 1.5", "/api/dtmsvr/all?limit=1.5").is(400, "invalid_query"),
        Case::get(
            "all with limit over i64",
            "/api/dtmsvr/all?limit=9223372036854775808",
        )
        .is(400, "invalid_query"),
        Case::get("all with an unknown status", "/api/dtmsvr/all?status=done")
            .is(400, "invalid_status"),
        Case::get("all with a bad position", "/api/dtmsvr/all?position=abc")
            .is(400, "invalid_position"),
        Case::new("POST newGid", Method::POST, "/api/dtmsvr/newGid").is(404, "not_found"),
        Case::get("GET prepare", "/api/dtmsvr/prepare").is(404, "not_found"),
        Case::get("unknown DTM route", "/api/dtmsvr/registerSagaBranch").is(404, "not_found"),
        Case::get("unknown route", "/api/nope").is(404, "not_found"),
    ]);

    let mut databases = all_databases(&sys);
    run_table(
        "coordinator DTM API",
        &sys.coordinator.base_url,
        &mut databases,
        cases,
    )
    .await;
}

/// The admin API's read routes and its actions without a token (the demo setting), on a
/// finished and a prepared gid.
#[tokio::test]
async fn the_coordinator_admin_api_answers_bad_input_with_a_4xx_json_error_and_changes_nothing() {
    let sys = spawn_system().await;
    let finished = finished_gid(&sys).await;
    let prepared = prepared_gid(&sys).await;
    let list = "/api/admin/transactions";
    let mut cases = vec![
        Case::get("unknown status", format!("{list}?status=done")).is(400, "invalid_status"),
        Case::get("negative age", format!("{list}?older_than_seconds=-1")).is(400, "invalid_age"),
        Case::get("fractional age", format!("{list}?newer_than_seconds=1.5"))
            .is(400, "invalid_age"),
        Case::get(
            "age over ten years",
            format!("{list}?older_than_seconds=315360001"),
        )
        .is(400, "invalid_age"),
        Case::get(
            "age over i64",
            format!("{list}?older_than_seconds=9223372036854775808"),
        )
        .is(400, "invalid_age"),
        Case::get("limit 0", format!("{list}?limit=0")).is(400, "invalid_limit"),
        Case::get("limit 1001", format!("{list}?limit=1001")).is(400, "invalid_limit"),
        Case::get("limit abc", format!("{list}?limit=abc")).is(400, "invalid_limit"),
        Case::get("bad position", format!("{list}?position=x1")).is(400, "invalid_position"),
    ];
    for view in ["", "/diagram", "/events"] {
        cases.extend([
            Case::get(
                format!("129-byte gid{view}"),
                format!("{list}/{}{view}", long_gid()),
            )
            .is(400, "invalid_gid"),
            Case::get(
                format!("gid with a control character{view}"),
                format!("{list}/g%01{view}"),
            )
            .is(400, "invalid_gid"),
            Case::get(
                format!("gid with a space{view}"),
                format!("{list}/g%20x{view}"),
            )
            .is(400, "invalid_gid"),
            Case::get(
                format!("unknown gid{view}"),
                format!("{list}/bad-input-unknown{view}"),
            )
            .is(404, "not_found"),
        ]);
    }
    for action in ["retry-now", "force-stop"] {
        let post =
            |name: &str, gid: &str| Case::post(name, format!("{list}/{gid}/{action}"), None, "");
        cases.extend([
            post("129-byte gid", &long_gid()).is(400, "invalid_gid"),
            post("gid with a control character", "g%01").is(400, "invalid_gid"),
            post("unknown gid", "bad-input-unknown").is(404, "not_found"),
            post("finished gid", &finished).is(409, "conflict"),
            post("from another origin", &prepared)
                .header("origin", "http://evil.example")
                .is(403, "cross_origin"),
            Case::get(
                format!("GET {action}"),
                format!("{list}/{prepared}/{action}"),
            )
            .is(404, "not_found"),
        ]);
    }
    // Only a submitted or aborting transaction can be retried.
    cases.push(
        Case::post(
            "retry-now of a prepared gid",
            format!("{list}/{prepared}/retry-now"),
            None,
            "",
        )
        .is(409, "conflict"),
    );

    let mut databases = all_databases(&sys);
    run_table(
        "coordinator admin API",
        &sys.coordinator.base_url,
        &mut databases,
        cases,
    )
    .await;
}

/// With `ADMIN_TOKEN` set, an action without the token, or with a wrong one, is refused before
/// anything is looked up; with it, bad gids still get their 4xx.
#[tokio::test]
async fn the_admin_actions_refuse_a_missing_or_wrong_token_with_401_and_change_nothing() {
    let coordinator = spawn_coordinator_with(TestDb::create("coordinator"), |settings| {
        settings.admin_token = Some(AdminToken::new("s3cret-admin-token"));
    })
    .await;
    let http = reqwest::Client::new();
    let gid = "bad-input-prepared";
    post_ok(
        &http,
        format!("{}/prepare", coordinator.dtm_url()),
        json!({ "gid": gid, "timeout_to_fail": 3600 }),
    )
    .await;
    let list = "/api/admin/transactions";
    let mut cases = Vec::new();
    for action in ["retry-now", "force-stop"] {
        let post =
            |name: &str, gid: &str| Case::post(name, format!("{list}/{gid}/{action}"), None, "");
        cases.extend([
            post("no token", gid).is(401, "unauthorized"),
            post("wrong token", gid)
                .header("authorization", "Bearer guess")
                .is(401, "unauthorized"),
            post("token as a prefix", gid)
                .header("authorization", "Bearer s3cret")
                .is(401, "unauthorized"),
            post("basic credentials", gid)
                .header("authorization", "Basic czNjcmV0LWFkbWluLXRva2Vu")
                .is(401, "unauthorized"),
            post("no token on an unknown gid", "bad-input-unknown").is(401, "unauthorized"),
            post("no token on a malformed gid", "g%01").is(401, "unauthorized"),
            post("token, malformed gid", "g%01")
                .header("authorization", "Bearer s3cret-admin-token")
                .is(400, "invalid_gid"),
            post("token, unknown gid", "bad-input-unknown")
                .header("authorization", "Bearer s3cret-admin-token")
                .is(404, "not_found"),
        ]);
    }
    cases.push(
        Case::post(
            "token, retry-now of a prepared gid",
            format!("{list}/{gid}/retry-now"),
            None,
            "",
        )
        .header("authorization", "Bearer s3cret-admin-token")
        .is(409, "conflict"),
    );
    let mut databases = Databases::of(&[&coordinator]);
    run_table(
        "admin actions with a token",
        &coordinator.base_url,
        &mut databases,
        cases,
    )
    .await;
}

/// How an RM's branch body names its id and its amount.
#[derive(Clone, Copy)]
struct BodyShape {
    id: &'static str,
    amount: &'static str,
}

const TRANSFER: BodyShape = BodyShape {
    id: "account_id",
    amount: "amount",
};
const RESERVE: BodyShape = BodyShape {
    id: "product_id",
    amount: "quantity",
};

/// The raw body `{"<id>": <id>, "<amount>": <amount>}`, values written as given (so that
/// `1.5`, `1e30` or `"30"` reach the RM as such).
fn raw_body(shape: BodyShape, id: &str, amount: &str) -> String {
    format!(r#"{{"{}": {id}, "{}": {amount}}}"#, shape.id, shape.amount)
}

/// The cases of one branch endpoint (`op` is the one it serves), on a gid nothing happened to:
/// malformed queries for all three ops; malformed bodies, out-of-range values and business
/// refusals for a Try. Confirm and Cancel never read their body: a Confirm without a Try is
/// refused whatever its body, and a Cancel without a Try is an empty compensation whatever its
/// body, which writes the barrier's rows, so its bodies are checked in the bank and stock tests.
fn branch_cases(endpoint: &str, op: &str, shape: BodyShape) -> Vec<Case> {
    let gid = format!("bad-input-{op}");
    let query = |gid: &str, branch_id: &str, trans_type: &str, op: &str| {
        format!("/api/{endpoint}?gid={gid}&trans_type={trans_type}&branch_id={branch_id}&op={op}")
    };
    let target = query(&gid, "01", "tcc", op);
    let good = raw_body(shape, "1", "5");
    let body = |name: &str, id: &str, amount: &str| {
        Case::post_json(name, target.as_str(), raw_body(shape, id, amount))
    };
    let mut cases = vec![
        Case::post_json("no query", format!("/api/{endpoint}"), good.as_str())
            .is(400, "bad_branch_query"),
        Case::post_json(
            "missing op",
            format!("/api/{endpoint}?gid={gid}&trans_type=tcc&branch_id=01"),
            good.as_str(),
        )
        .is(400, "bad_branch_query"),
        Case::post_json(
            "129-byte gid",
            query(&long_gid(), "01", "tcc", op),
            good.as_str(),
        )
        .is(400, "bad_branch_query"),
        Case::post_json(
            "gid with a control character",
            query("g%01", "01", "tcc", op),
            good.as_str(),
        )
        .is(400, "bad_branch_query"),
        Case::post_json("empty gid", query("", "01", "tcc", op), good.as_str())
            .is(400, "bad_branch_query"),
        Case::post_json(
            "65-byte branch_id",
            query(&gid, &long_branch_id(), "tcc", op),
            good.as_str(),
        )
        .is(400, "bad_branch_query"),
        Case::post_json(
            "branch_id with a newline",
            query(&gid, "0%0A1", "tcc", op),
            good.as_str(),
        )
        .is(400, "bad_branch_query"),
        Case::post_json("saga", query(&gid, "01", "saga", op), good.as_str())
            .is(400, "bad_branch_query"),
        Case::post_json(
            "unknown op",
            query(&gid, "01", "tcc", "commit"),
            good.as_str(),
        )
        .is(400, "bad_branch_query"),
        Case::post_json(
            "gid given twice",
            format!("{target}&gid=other"),
            good.as_str(),
        )
        .is(400, "bad_branch_query"),
        Case::post_json(
            "op of another endpoint",
            query(
                &gid,
                "01",
                "tcc",
                if op == "try" { "cancel" } else { "try" },
            ),
            good.as_str(),
        )
        .is(400, "op_mismatch"),
    ];
    let mut bodies = malformed_json_cases(&target, true);
    bodies.extend([
        Case::post_json(
            "missing amount",
            target.as_str(),
            format!(r#"{{"{}": 1}}"#, shape.id),
        )
        .is(400, "invalid_json"),
        Case::post_json(
            "missing id",
            target.as_str(),
            format!(r#"{{"{}": 1}}"#, shape.amount),
        )
        .is(400, "invalid_json"),
        Case::post_json(
            "unknown field",
            target.as_str(),
            format!(
                r#"{{"{}": 1, "{}": 5, "memo": "x"}}"#,
                shape.id, shape.amount
            ),
        )
        .is(400, "invalid_json"),
        Case::post_json("the fields as a JSON array", target.as_str(), "[1, 5]")
            .is(400, "invalid_json"),
        body("amount as a string", "1", r#""5""#).is(400, "invalid_json"),
        body("id as a string", r#""1""#, "5").is(400, "invalid_json"),
        body("null amount", "1", "null").is(400, "invalid_json"),
        body("boolean amount", "1", "true").is(400, "invalid_json"),
        body("fractional amount", "1", "1.5").is(400, "invalid_json"),
        body("amount 5.0", "1", "5.0").is(400, "invalid_json"),
        body("amount 1e30", "1", "1e30").is(400, "invalid_json"),
        body("amount over i64", "1", "9223372036854775808").is(400, "invalid_json"),
        body("amount under i64", "1", "-9223372036854775809").is(400, "invalid_json"),
        body("id over i64", "9223372036854775808", "5").is(400, "invalid_json"),
        body("fractional id", "1.5", "5").is(400, "invalid_json"),
    ]);
    if op == "try" {
        cases.extend(bodies);
        cases.extend([
            body("zero amount", "1", "0").is(400, "invalid_request"),
            body("negative amount", "1", "-1").is(400, "invalid_request"),
            body("most negative amount", "1", "-9223372036854775808").is(400, "invalid_request"),
            body("zero id", "0", "5").is(400, "invalid_request"),
            body("negative id", "-1", "5").is(400, "invalid_request"),
            body("unknown id", "999", "5").refused("does not exist"),
            body("largest id", "9223372036854775807", "5").refused("does not exist"),
        ]);
    } else if op == "confirm" {
        // Confirm acts on its Try's reservation; without one it is refused, whatever the body.
        cases.push(
            Case::post_json("confirm without a try", target.as_str(), good.as_str())
                .refused("Confirm needs a Try"),
        );
        cases.extend(
            bodies
                .into_iter()
                .map(|case| case.refused("Confirm needs a Try")),
        );
    }
    cases
}

/// The cases of an RM's three branch endpoints.
fn rm_cases(prefix: &str, shape: BodyShape) -> Vec<Case> {
    let mut cases = Vec::new();
    for (suffix, op) in [("Try", "try"), ("Confirm", "confirm"), ("Cancel", "cancel")] {
        let endpoint = format!("{prefix}{suffix}");
        cases.extend(branch_cases(&endpoint, op, shape).into_iter().map(|mut c| {
            c.name = format!("{endpoint}: {}", c.name);
            c
        }));
    }
    cases
}

/// The branch endpoint cases as their legitimate callers send them, so that what is refused is
/// the input, not the caller: each with the gid token of its query's `gid` (as the AP sends it
/// with a Try, and a DTM-compatible TM forwards it), and each Confirm and Cancel also signed by
/// the coordinator's secret over its exact method, target and body (so that a case whose query
/// names no usable gid still passes the signature check). Unauthorized calls are the signing
/// tests' subject.
fn from_ap_and_tm(cases: Vec<Case>) -> Vec<Case> {
    let secret = test_support::spawn::test_secret();
    cases
        .into_iter()
        .map(|mut case| {
            let (path, query) = case
                .target
                .split_once('?')
                .unwrap_or((case.target.as_str(), ""));
            if let Some(gid) = query.split('&').find_map(|p| p.strip_prefix("gid=")) {
                case.headers.push((
                    tcc::signing::GID_TOKEN_HEADER,
                    test_support::spawn::test_gid_token(gid),
                ));
            }
            if !path.ends_with("Try") {
                let (timestamp, signature) = tcc::signing::sign(
                    &secret,
                    case.method.as_str(),
                    &case.target,
                    &case.body,
                    tcc::signing::now_unix(),
                );
                case.headers
                    .push((tcc::signing::TIMESTAMP_HEADER, timestamp));
                case.headers
                    .push((tcc::signing::SIGNATURE_HEADER, signature));
            }
            case
        })
        .collect()
}

/// An RM's Try called directly with valid data, as the AP would (with the gid's token),
/// asserting SUCCESS.
async fn try_ok(sys: &System, rm: &Spawned, endpoint: &str, gid: &str, body: Value) {
    let url = rm.url(&format!(
        "/api/{endpoint}?gid={gid}&trans_type=tcc&branch_id=01&op=try"
    ));
    let request = sys
        .http
        .post(&url)
        .header(
            tcc::signing::GID_TOKEN_HEADER,
            test_support::spawn::test_gid_token(gid),
        )
        .json(&body);
    let response = request.send().await.expect("an answer");
    let status = response.status().as_u16();
    let text = response.text().await.expect("a body");
    assert_eq!(status, 200, "set-up POST {url} {body}: {text}");
}

#[tokio::test]
async fn the_trans_out_branch_endpoints_answer_bad_input_with_a_4xx_and_change_nothing() {
    let sys = spawn_system().await;
    let mut cases = rm_cases("TransOut", TRANSFER);
    let try_url = "/api/TransOutTry?gid=bad-input-big&trans_type=tcc&branch_id=01&op=try";
    cases.extend([
        json_case(
            "more than the balance",
            try_url,
            json!({ "account_id": 1, "amount": 1_000_001 }),
        )
        .refused("insufficient funds"),
        json_case(
            "i64::MAX",
            try_url,
            json!({ "account_id": 1, "amount": i64::MAX }),
        )
        .refused("insufficient funds"),
        json_case(
            "unknown fault kind",
            try_url,
            json!({ "account_id": 1, "amount": 5, "fault": { "try": "explode" } }),
        )
        .is(400, "invalid_json"),
    ]);
    let mut databases = all_databases(&sys);
    run_table(
        "trans-out branch endpoints",
        &sys.trans_out.base_url,
        &mut databases,
        from_ap_and_tm(cases),
    )
    .await;
}

#[tokio::test]
async fn the_trans_in_branch_endpoints_answer_bad_input_with_a_4xx_and_change_nothing() {
    let sys = spawn_system().await;
    // A pending credit first: the overflow check must count it as well as the balance.
    try_ok(
        &sys,
        &sys.trans_in,
        "TransInTry",
        "bad-input-pending",
        json!({ "account_id": 1, "amount": 1_000 }),
    )
    .await;
    let mut cases = rm_cases("TransIn", TRANSFER);
    let try_url = "/api/TransInTry?gid=bad-input-big&trans_type=tcc&branch_id=01&op=try";
    cases.extend([
        json_case(
            "a credit overflowing the balance",
            try_url,
            json!({ "account_id": 1, "amount": i64::MAX }),
        )
        .refused("would overflow"),
        json_case(
            "a credit overflowing only with the pending one",
            try_url,
            json!({ "account_id": 1, "amount": i64::MAX - 1_000_000 - 500 }),
        )
        .refused("would overflow"),
    ]);
    let mut databases = all_databases(&sys);
    run_table(
        "trans-in branch endpoints",
        &sys.trans_in.base_url,
        &mut databases,
        from_ap_and_tm(cases),
    )
    .await;
}

#[tokio::test]
async fn the_stock_branch_endpoints_answer_bad_input_with_a_4xx_and_change_nothing() {
    let sys = spawn_system().await;
    let mut cases = rm_cases("Stock", RESERVE);
    let try_url = "/api/StockTry?gid=bad-input-big&trans_type=tcc&branch_id=01&op=try";
    cases.extend([
        json_case(
            "more than the stock",
            try_url,
            json!({ "product_id": 1, "quantity": 1_000_001 }),
        )
        .refused("insufficient stock"),
        json_case(
            "i64::MAX",
            try_url,
            json!({ "product_id": 1, "quantity": i64::MAX }),
        )
        .refused("insufficient stock"),
    ]);
    let mut databases = all_databases(&sys);
    run_table(
        "stock branch endpoints",
        &sys.stock.base_url,
        &mut databases,
        from_ap_and_tm(cases),
    )
    .await;
}

/// The account and product views, and unknown routes and methods on the RMs.
#[tokio::test]
async fn the_account_and_product_views_answer_bad_ids_with_a_4xx_and_change_nothing() {
    let sys = spawn_system().await;
    let mut databases = all_databases(&sys);
    for (rm, view, code) in [
        (&sys.trans_out, "accounts", "account_not_found"),
        (&sys.trans_in, "accounts", "account_not_found"),
        (&sys.stock, "products", "product_not_found"),
    ] {
        let base = format!("/api/{view}");
        let cases = vec![
            Case::get("unknown id", format!("{base}/999")).is(404, code),
            Case::get("zero id", format!("{base}/0")).is(404, code),
            Case::get("negative id", format!("{base}/-1")).is(404, code),
            Case::get("fractional id", format!("{base}/1.5")).is(400, "invalid_path"),
            Case::get("id over i64", format!("{base}/9223372036854775808")).is(400, "invalid_path"),
            Case::get("id as a word", format!("{base}/abc")).is(400, "invalid_path"),
            Case::get("id with a control character", format!("{base}/1%01"))
                .is(400, "invalid_path"),
            Case::get("no id", format!("{base}/")).is(404, "not_found"),
            Case::post_json("POST to a view", format!("{base}/1"), "{}").is(404, "not_found"),
            Case::get(
                "GET a Try",
                format!(
                    "/api/{}",
                    if view == "products" {
                        "StockTry"
                    } else {
                        "TransOutTry"
                    }
                ),
            )
            .is(404, "not_found"),
            Case::get("unknown route", "/api/nope").is(404, "not_found"),
        ];
        run_table(
            &format!("{} views", rm.name),
            &rm.base_url,
            &mut databases,
            cases,
        )
        .await;
    }
}

/// The AP's fire endpoints: parameters in the query string and in a JSON body.
#[tokio::test]
async fn the_ap_fire_endpoints_answer_bad_parameters_with_a_4xx_and_start_nothing() {
    let sys = spawn_system().await;
    let mut cases = Vec::new();
    for (path, amount) in [
        ("/api/fireTcc", "amount"),
        ("/api/fireTccRollback", "amount"),
        ("/api/fireTccNested", "amount"),
        ("/api/firePurchase", "quantity"),
    ] {
        let q = |name: &str, query: &str| Case::get(name, format!("{path}?{query}"));
        let b = |name: &str, body: &str| Case::post_json(name, path, body.to_owned());
        for value in [
            "0",
            "-1",
            "1.5",
            "1e30",
            "9223372036854775808",
            "abc",
            "",
            "+5",
            "5.0",
            "%00",
        ] {
            cases.push(
                q(
                    &format!("{amount}={value} in the query"),
                    &format!("{amount}={value}"),
                )
                .is(400, "invalid_parameter"),
            );
        }
        for value in [
            "0",
            "-1",
            "1.5",
            "1e30",
            "9223372036854775808",
            r#""30""#,
            "null",
            "true",
            "[5]",
        ] {
            cases.push(
                b(
                    &format!("{amount}: {value} in the body"),
                    &format!(r#"{{"{amount}": {value}}}"#),
                )
                .is(400, "invalid_parameter"),
            );
        }
        cases.extend([
            q("repeated parameter", &format!("{amount}=1&{amount}=2")).is(400, "invalid_parameter"),
            q("unknown parameter", "ammount=5").is(400, "invalid_parameter"),
            q("timeout over a day", "timeout_to_fail=86401").is(400, "invalid_parameter"),
            q("wait_result maybe", "wait_result=maybe").is(400, "invalid_parameter"),
            q("unknown fault", "trans_out_try=explode").is(400, "invalid_parameter"),
            Case::post_json(
                "in both query and body",
                format!("{path}?{amount}=1"),
                format!(r#"{{"{amount}": 2}}"#),
            )
            .is(400, "invalid_parameter"),
            b(
                "repeated member in the body",
                &format!(r#"{{"{amount}": 1, "{amount}": 2}}"#),
            )
            .is(400, "invalid_parameter"),
            b("unknown member in the body", r#"{"memo": "x"}"#).is(400, "invalid_parameter"),
            b("truncated JSON", &format!(r#"{{"{amount}": "#)).is(400, "invalid_json"),
            b("a JSON array", "[1]").is(400, "invalid_json"),
            b("JSON null", "null").is(400, "invalid_json"),
            Case::post(
                "text/plain body",
                path,
                Some("text/plain"),
                format!(r#"{{"{amount}": 1}}"#),
            )
            .is(415, "unsupported_content_type"),
            Case::post(
                "no content type",
                path,
                None,
                format!(r#"{{"{amount}": 1}}"#),
            )
            .is(415, "unsupported_content_type"),
            Case::post_json("body over JSON_LIMIT", path, oversized_body())
                .is(413, "body_too_large"),
            Case::new("PUT", Method::PUT, path).is(405, "method_not_allowed"),
        ]);
        let ids: &[&str] = if path == "/api/firePurchase" {
            &["product_id", "buyer", "merchant"]
        } else {
            &["from", "to"]
        };
        for id in ids {
            cases.push(q(&format!("{id}=0"), &format!("{id}=0")).is(400, "invalid_parameter"));
            cases.push(q(&format!("{id}=-3"), &format!("{id}=-3")).is(400, "invalid_parameter"));
        }
    }
    cases.extend([
        Case::get("unknown product", "/api/firePurchase?product_id=999")
            .is(400, "invalid_parameter"),
        Case::get(
            "quantity whose amount overflows",
            "/api/firePurchase?quantity=9223372036854775807",
        )
        .is(400, "invalid_parameter"),
        Case::get("unknown route", "/api/fireSaga").is(404, "not_found"),
    ]);
    // The AP's own branch endpoints (the nested TransIn branch).
    for (endpoint, op) in [
        ("TransInNestedTry", "try"),
        ("TransInNestedConfirm", "confirm"),
        ("TransInNestedCancel", "cancel"),
    ] {
        let target = format!("/api/{endpoint}?gid=bad-input&trans_type=tcc&branch_id=02&op={op}");
        let good = r#"{"account_id": 1, "amount": 5}"#;
        // Confirm and Cancel of the nested branch do nothing and read no body (the child's
        // second phase is the TM's call to TransIn), so only their queries can be malformed.
        if op == "try" {
            cases.extend(
                malformed_json_cases(&target, true)
                    .into_iter()
                    .map(|mut c| {
                        c.name = format!("{endpoint}: {}", c.name);
                        c
                    }),
            );
        }
        cases.extend([
            Case::post_json(
                format!("{endpoint}: no query"),
                format!("/api/{endpoint}"),
                good,
            )
            .is(400, "bad_branch_query"),
            Case::post_json(
                format!("{endpoint}: 129-byte gid"),
                format!(
                    "/api/{endpoint}?gid={}&trans_type=tcc&branch_id=02&op={op}",
                    long_gid()
                ),
                good,
            )
            .is(400, "bad_branch_query"),
            Case::post_json(
                format!("{endpoint}: saga"),
                format!("/api/{endpoint}?gid=g1&trans_type=saga&branch_id=02&op={op}"),
                good,
            )
            .is(400, "bad_branch_query"),
            Case::post_json(
                format!("{endpoint}: op of another endpoint"),
                format!(
                    "/api/{endpoint}?gid=g1&trans_type=tcc&branch_id=02&op={}",
                    if op == "try" { "confirm" } else { "try" }
                ),
                good,
            )
            .is(400, "op_mismatch"),
        ]);
    }
    cases.push(
        Case::post_json(
            "TransInNestedTry: dtm is not http(s)",
            "/api/TransInNestedTry?gid=g1&trans_type=tcc&branch_id=02&op=try&dtm=ftp://127.0.0.1/x",
            r#"{"account_id": 1, "amount": 5}"#,
        )
        .is(400, "bad_branch_query"),
    );
    let mut databases = all_databases(&sys);
    run_table(
        "AP fire endpoints",
        &sys.app.base_url,
        &mut databases,
        cases,
    )
    .await;
}
