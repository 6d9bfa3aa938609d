//! The sequence diagrams the coordinator draws from its event log
//! (`GET /api/admin/transactions/{gid}/diagram`), from real runs of the sample's scenarios:
//!
//! * the diagrams committed in `docs/diagrams/*.mmd` (written by `scripts/diagrams.sh` from the
//!   system started by `scripts/up.sh`) still match what the system does: the same participants
//!   and the same messages in the same order, once what varies between runs is normalised
//!   (latencies, retry delays, the gid comment);
//! * each scenario's diagram says what the TCC literature says it should (Try then Confirm on
//!   success, Cancel of every branch on rollback, every failed attempt before the success of a
//!   retried Confirm);
//! * the event log behind them (`/events`), the Try reports (`POST /api/dtmsvr/reportTry`) and a
//!   client that does not report.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};
use tcc::client::{TccClient, TransOptions};
use test_support::process::spawn_processes;
use test_support::spawn::{spawn_system, tcc_transfer, System};

/// A scenario of `scripts/diagrams.sh`: its file name under `docs/diagrams/`, the AP request that
/// runs it and the final status it reaches.
struct Scenario {
    name: &'static str,
    path: &'static str,
    status: &'static str,
}

/// The scenarios, as `scripts/diagrams.sh` runs them (keep the two lists in step).
const SCENARIOS: [Scenario; 5] = [
    Scenario {
        name: "fireTcc",
        path: "/api/fireTcc",
        status: "succeed",
    },
    Scenario {
        name: "fireTccRollback",
        path: "/api/fireTccRollback",
        status: "failed",
    },
    Scenario {
        name: "confirm-retry",
        path: "/api/fireTcc?trans_in_confirm=error:2&retry_interval=1",
        status: "succeed",
    },
    Scenario {
        name: "fireTccNested",
        path: "/api/fireTccNested",
        status: "succeed",
    },
    Scenario {
        name: "firePurchase",
        path: "/api/firePurchase",
        status: "succeed",
    },
];

fn scenario(name: &str) -> &'static Scenario {
    SCENARIOS
        .iter()
        .find(|s| s.name == name)
        .expect("a known scenario")
}

/// The diagram of `gid` as the coordinator serves it; asserts 200 and `text/plain`.
async fn diagram(sys: &System, gid: &str) -> String {
    let url = sys
        .coordinator
        .url(&format!("/api/admin/transactions/{gid}/diagram"));
    let response = sys.http.get(&url).send().await.expect("the TM answers");
    assert_eq!(response.status().as_u16(), 200, "GET {url}");
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    response.text().await.expect("a body")
}

/// The event log of `gid` as the coordinator serves it (`{"gid", "events": [...]}`).
async fn event_log(sys: &System, gid: &str) -> Value {
    let url = sys
        .coordinator
        .url(&format!("/api/admin/transactions/{gid}/events"));
    let response = sys.http.get(&url).send().await.expect("the TM answers");
    assert_eq!(response.status().as_u16(), 200, "GET {url}");
    response.json().await.expect("a JSON event log")
}

/// Fires `scenario` through the AP, waits for its final status, and returns (gid, diagram).
async fn run(sys: &System, scenario: &Scenario) -> (String, String) {
    let (_, answer) = sys.fire(scenario.path).await;
    let gid = answer["gid"]
        .as_str()
        .unwrap_or_else(|| panic!("{} answered no gid: {answer}", scenario.path))
        .to_owned();
    sys.wait_for_status(&gid, scenario.status, Duration::from_secs(30))
        .await;
    let diagram = diagram(sys, &gid).await;
    (gid, diagram)
}

/// The lines that must not change between runs: participants and messages, with the parts that
/// do vary replaced (`(3 ms)` -> `(N ms)`, `in 1.1 s` -> `in N s`); comments and blank lines
/// dropped, indentation ignored.
fn normalise(diagram: &str) -> Vec<String> {
    diagram
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("%%"))
        .map(|l| replace_numbers_before(&replace_numbers_before(l, " ms)"), " s"))
        .collect()
}

/// Replaces each number (digits, optionally with a fraction) directly followed by `unit` with `N`.
fn replace_numbers_before(line: &str, unit: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(at) = rest.find(unit) {
        let (head, tail) = rest.split_at(at);
        let number_len = head
            .chars()
            .rev()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .count();
        let boundary = unit.ends_with(')')
            || tail[unit.len()..]
                .chars()
                .next()
                .is_none_or(|c| !c.is_alphanumeric());
        if number_len > 0 && boundary {
            out.push_str(&head[..head.len() - number_len]);
            out.push('N');
        } else {
            out.push_str(head);
        }
        out.push_str(unit);
        rest = &tail[unit.len()..];
    }
    out.push_str(rest);
    out
}

/// A line diff of `expected` and `actual` (longest common subsequence): `  ` kept, `- ` only in
/// the committed file, `+ ` only in what the system drew now.
fn diff(expected: &[String], actual: &[String]) -> String {
    let (n, m) = (expected.len(), actual.len());
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if expected[i] == actual[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, String::new());
    while i < n || j < m {
        if i < n && j < m && expected[i] == actual[j] {
            out += &format!("  {}\n", expected[i]);
            i += 1;
            j += 1;
        } else if j < m && (i == n || lcs[i][j + 1] > lcs[i + 1][j]) {
            out += &format!("+ {}\n", actual[j]);
            j += 1;
        } else {
            out += &format!("- {}\n", expected[i]);
            i += 1;
        }
    }
    out
}

fn committed_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../docs/diagrams")
        .join(format!("{name}.mmd"))
}

/// Position of the first line equal to `line`, or a panic that shows the diagram.
fn position(lines: &[String], line: &str, diagram: &str) -> usize {
    lines
        .iter()
        .position(|l| l == line)
        .unwrap_or_else(|| panic!("no line {line:?} in\n{diagram}"))
}

#[tokio::test]
async fn the_committed_diagrams_still_match_what_the_system_does() {
    let sys = spawn_system().await;
    let mut mismatches = String::new();
    for scenario in &SCENARIOS {
        let (gid, live) = run(&sys, scenario).await;
        let path = committed_path(scenario.name);
        let committed = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; generate it with scripts/up.sh && scripts/diagrams.sh",
                path.display()
            )
        });
        let (expected, actual) = (normalise(&committed), normalise(&live));
        if expected != actual {
            mismatches += &format!(
                "\n=== docs/diagrams/{}.mmd differs from the diagram of {} (gid {gid}); `-` committed, `+` now:\n{}",
                scenario.name,
                scenario.path,
                diff(&expected, &actual)
            );
        }
    }
    assert!(
        mismatches.is_empty(),
        "the committed diagrams no longer match the system; if the change is intended, \
         regenerate them (scripts/up.sh && scripts/diagrams.sh) and review the diff:{mismatches}"
    );
}

#[tokio::test]
async fn the_fire_tcc_diagram_names_both_banks_with_try_confirm_and_succeed() {
    let sys = spawn_system().await;
    let (_, diagram) = run(&sys, scenario("fireTcc")).await;
    let lines = normalise(&diagram);
    assert_eq!(
        lines[..5],
        [
            "sequenceDiagram",
            "participant AP",
            "participant TM",
            "participant TransOut",
            "participant TransIn",
        ],
        "{diagram}"
    );
    let order = [
        "AP->>TM: prepare",
        "AP->>TM: registerBranch 01 (TransOut)",
        "AP->>TransOut: Try 01",
        "TransOut-->>AP: 200 SUCCESS (N ms)",
        "AP->>TM: registerBranch 02 (TransIn)",
        "AP->>TransIn: Try 02",
        "TransIn-->>AP: 200 SUCCESS (N ms)",
        "AP->>TM: submit",
        "Note over TM: prepared -> submitted",
        "TM->>TransIn: Confirm 02",
        "TransIn-->>TM: 200 SUCCESS (N ms)",
        "TM->>TransOut: Confirm 01",
        "TransOut-->>TM: 200 SUCCESS (N ms)",
        "Note over TM: submitted -> succeed",
    ];
    assert_eq!(lines[5..], order, "{diagram}");
}

#[tokio::test]
async fn the_rollback_diagram_shows_the_refused_try_and_both_cancels_in_reverse_order() {
    let sys = spawn_system().await;
    let (_, diagram) = run(&sys, scenario("fireTccRollback")).await;
    let lines = normalise(&diagram);
    let refused = position(&lines, "AP->>TransIn: Try 02", &diagram);
    assert!(
        lines[refused + 1].starts_with("TransIn-->>AP: 409 FAILURE: "),
        "{diagram}"
    );
    assert!(
        lines[refused + 2].starts_with("AP->>TM: abort: branch 02 Try refused"),
        "{diagram}"
    );
    let cancel_in = position(&lines, "TM->>TransIn: Cancel 02", &diagram);
    let cancel_out = position(&lines, "TM->>TransOut: Cancel 01", &diagram);
    assert!(cancel_in < cancel_out, "{diagram}");
    assert_eq!(lines[cancel_in + 1], "TransIn-->>TM: 200 SUCCESS (N ms)");
    assert_eq!(lines[cancel_out + 1], "TransOut-->>TM: 200 SUCCESS (N ms)");
    assert_eq!(lines.last().unwrap(), "Note over TM: aborting -> failed");
    assert!(!diagram.contains("Confirm"), "{diagram}");
}

#[tokio::test]
async fn the_confirm_retry_diagram_shows_each_failed_attempt_then_the_success() {
    let sys = spawn_system().await;
    let (_, diagram) = run(&sys, scenario("confirm-retry")).await;
    let lines = normalise(&diagram);
    let first = position(&lines, "TM->>TransIn: Confirm 02", &diagram);
    assert_eq!(
        lines[first..],
        [
            "TM->>TransIn: Confirm 02",
            "TransIn-->>TM: 500 error: fault injection: this call fails on purpose (N ms)",
            "Note over TM: retry Confirm 02 in N s (backoff step now N s)",
            "TM->>TransIn: Confirm 02 (attempt 2)",
            "TransIn-->>TM: 500 error: fault injection: this call fails on purpose (N ms)",
            "Note over TM: retry Confirm 02 in N s (backoff step now N s)",
            "TM->>TransIn: Confirm 02 (attempt 3)",
            "TransIn-->>TM: 200 SUCCESS (N ms)",
            "TM->>TransOut: Confirm 01",
            "TransOut-->>TM: 200 SUCCESS (N ms)",
            "Note over TM: submitted -> succeed",
        ],
        "{diagram}"
    );
    // Confirms run last branch first: TransOut's waits for TransIn's and is called once.
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.starts_with("TM->>TransOut"))
            .count(),
        1,
        "{diagram}"
    );
}

#[tokio::test]
async fn a_pass_cut_short_by_a_killed_coordinator_shows_its_first_call_without_an_answer_then_runs_again(
) {
    let mut sys = spawn_processes(&[]).await;
    let path = "/api/fireTcc?trans_out_confirm=delay:3000&request_timeout=5&retry_interval=1&wait_result=false";
    let gid = sys
        .fire_until_in_flight(path, 200, &sys.trans_out, "01", "confirm")
        .await;
    sys.coordinator.kill();
    sys.coordinator.restart().await;
    sys.wait_for_status(&gid, "succeed", Duration::from_secs(20))
        .await;

    let url = sys
        .coordinator
        .url(&format!("/api/admin/transactions/{gid}/diagram"));
    let diagram = reqwest::get(&url).await.unwrap().text().await.unwrap();
    let lines = normalise(&diagram);
    // The killed pass had sent Confirm 02 (answered) and Confirm 01 (delayed): a pass records its
    // calls when it ends, so all the log kept of it is the first call, written with the claim.
    // The next pass sends both again; TransIn's barrier answers the repeated Confirm 02.
    let first = position(&lines, "TM->>TransIn: Confirm 02", &diagram);
    assert_eq!(
        lines[first..],
        [
            "TM->>TransIn: Confirm 02",
            "Note over TM,TransIn: answer never recorded: the coordinator stopped during this call or a later one of its pass",
            "TM->>TransIn: Confirm 02",
            "TransIn-->>TM: 200 SUCCESS (N ms)",
            "TM->>TransOut: Confirm 01",
            "TransOut-->>TM: 200 SUCCESS (N ms)",
            "Note over TM: submitted -> succeed",
        ],
        "{diagram}"
    );
}

#[tokio::test]
async fn the_event_log_records_each_state_change_and_call_with_its_latency() {
    let sys = spawn_system().await;
    let (gid, _) = run(&sys, scenario("confirm-retry")).await;

    let log = event_log(&sys, &gid).await;
    assert_eq!(log["gid"], gid.as_str());
    let events = log["events"].as_array().expect("events");
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "prepared",
            "branch_registered",
            "try_reported",
            "branch_registered",
            "try_reported",
            "submitted",
            "branch_calling",
            "branch_called",
            "retry_scheduled",
            "branch_calling",
            "branch_called",
            "retry_scheduled",
            "branch_calling",
            "branch_called",
            "branch_calling",
            "branch_called",
            "succeed",
        ],
        "{log:#}"
    );
    let calls: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"] == "branch_called" && e["branch_id"] == "02")
        .collect();
    let seen: Vec<(i64, Value, &str)> = calls
        .iter()
        .map(|c| {
            (
                c["attempt"].as_i64().unwrap(),
                c["http_status"].clone(),
                c["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (1, json!(500), "error"),
            (2, json!(500), "error"),
            (3, json!(200), "success")
        ]
    );
    for call in &calls {
        assert_eq!(call["op"], "confirm");
        assert_eq!(call["target"], "TransIn");
        assert_eq!(call["actor"], "tm");
        assert!(call["latency_ms"].as_i64().unwrap() >= 0, "{call}");
        let time = call["create_time"].as_str().unwrap();
        assert!(
            time.len() == "2026-11-21T06:30:00.123Z".len() && time.ends_with('Z'),
            "millisecond RFC 3339: {time}"
        );
    }
    let submitted = events.iter().find(|e| e["kind"] == "submitted").unwrap();
    assert_eq!(submitted["actor"], "ap");
    assert_eq!(submitted["status"], "submitted");
    let retry = events
        .iter()
        .find(|e| e["kind"] == "retry_scheduled")
        .unwrap();
    let delay = retry["retry_in_ms"].as_i64().unwrap();
    assert!((1000..=1200).contains(&delay), "{retry}");
    // A pass records its calls after the fact, dated when each was sent and answered: the log's
    // times still run in its order (RFC 3339 with a fixed width compares as text).
    let times: Vec<&str> = events
        .iter()
        .map(|e| e["create_time"].as_str().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{log:#}");
}

#[tokio::test]
async fn a_client_that_does_not_report_its_trys_gets_a_diagram_that_says_so() {
    let sys = spawn_system().await;
    let quiet = TccClient::new(sys.coordinator.dtm_url()).without_try_reports();

    let gid = tcc_transfer(
        &quiet,
        &sys.trans_out.url("/api"),
        &sys.trans_in.url("/api"),
        TransOptions {
            wait_result: true,
            ..TransOptions::default()
        },
        Value::Null,
    )
    .await;

    sys.wait_for_status(&gid, "succeed", Duration::from_secs(15))
        .await;
    let diagram = diagram(&sys, &gid).await;
    for line in [
        "Note over AP,TransOut: Try 01 not reported by the AP's client",
        "Note over AP,TransIn: Try 02 not reported by the AP's client",
        "TM->>TransIn: Confirm 02",
        "Note over TM: submitted -> succeed",
    ] {
        assert!(diagram.contains(line), "{line} missing from\n{diagram}");
    }
    assert!(!diagram.contains("AP->>TransOut"), "{diagram}");
}

#[tokio::test]
async fn try_reports_are_validated_and_refused_for_unknown_transactions_or_branches() {
    let sys = spawn_system().await;
    let (gid, _) = run(&sys, scenario("fireTcc")).await;
    let url = format!("{}/reportTry", sys.coordinator.dtm_url());
    let report = |gid: &str, branch_id: &str| {
        json!({
            "gid": gid, "branch_id": branch_id, "url": "http://127.0.0.1:1/api/TransOutTry",
            "outcome": "error", "latency_ms": 5, "message": "late report"
        })
    };
    let post = |body: Value| {
        let request = sys.http.post(&url).json(&body);
        async move {
            let response = request.send().await.expect("the TM answers");
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.expect("JSON"))
        }
    };

    let (status, answer) = post(report(&gid, "01")).await;
    assert_eq!((status, &answer["dtm_result"]), (200, &json!("SUCCESS")));
    let (status, answer) = post(report("no-such-gid", "01")).await;
    assert_eq!(status, 409, "{answer}");
    assert_eq!(answer["dtm_result"], "FAILURE");
    let (status, answer) = post(report(&gid, "07")).await;
    assert_eq!(status, 409, "{answer}");
    for (field, value, code) in [
        ("outcome", json!("maybe"), "invalid_outcome"),
        ("http_status", json!(99), "invalid_http_status"),
        ("url", json!("TransOutTry"), "invalid_url"),
        ("branch_id", json!("0 1"), "invalid_branch_id"),
        ("gid", json!(""), "invalid_gid"),
    ] {
        let mut body = report(&gid, "01");
        body[field] = value;
        let (status, answer) = post(body).await;
        assert_eq!(
            (status, answer["error"].as_str()),
            (400, Some(code)),
            "{field}"
        );
    }
    let (status, answer) = post(json!({"gid": gid})).await;
    assert_eq!(status, 400, "{answer}");

    // The diagram draws the first report of a Try; the late duplicate changes nothing.
    let diagram = diagram(&sys, &gid).await;
    assert!(
        diagram.contains("TransOut-->>AP: 200 SUCCESS ("),
        "{diagram}"
    );
    assert!(!diagram.contains("late report"), "{diagram}");
}

#[tokio::test]
async fn try_reports_carried_by_register_and_abort_are_recorded_and_bad_ones_never_fail_the_call() {
    let sys = spawn_system().await;
    let dtm = sys.coordinator.dtm_url();
    let gid = format!("carried-{}", std::process::id());
    let post = |call: &str, body: Value| {
        let request = sys.http.post(format!("{dtm}/{call}")).json(&body);
        async move {
            let response = request.send().await.expect("the TM answers");
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.expect("JSON"))
        }
    };
    let report = |gid: &str, branch_id: &str, outcome: &str| {
        json!({
            "gid": gid, "branch_id": branch_id, "url": "http://127.0.0.1:9/api/TransOutTry",
            "outcome": outcome, "http_status": 200, "latency_ms": 7
        })
    };
    let register = |branch_id: &str, try_reports: Option<String>| {
        let mut body = json!({
            "gid": gid, "trans_type": "tcc", "branch_id": branch_id, "data": "{}",
            "confirm": "http://127.0.0.1:9/api/TransOutConfirm",
            "cancel": "http://127.0.0.1:9/api/TransOutCancel",
        });
        if let Some(reports) = try_reports {
            body["try_reports"] = reports.into();
        }
        body
    };

    let (status, answer) = post("prepare", json!({"gid": gid, "trans_type": "tcc"})).await;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = post("registerBranch", register("01", None)).await;
    assert_eq!(status, 200, "{answer}");
    // One good report among an unregistered branch, a bad outcome and another gid's: the
    // registration succeeds and only the good one is recorded.
    let carried = json!([
        report(&gid, "01", "success"),
        report(&gid, "07", "success"),
        report(&gid, "01", "maybe"),
        report("another-gid", "01", "success"),
    ]);
    let (status, answer) = post("registerBranch", register("02", Some(carried.to_string()))).await;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = post(
        "registerBranch",
        register("03", Some("not a JSON array".to_owned())),
    )
    .await;
    assert_eq!(
        status, 200,
        "a malformed try_reports never fails a registration: {answer}"
    );
    let carried = json!([report(&gid, "02", "failure")]).to_string();
    let (status, answer) = post(
        "abort",
        json!({"gid": gid, "trans_type": "tcc", "rollback_reason": "Try 02 refused",
               "try_reports": carried}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");

    let log = event_log(&sys, &gid).await;
    let events = log["events"].as_array().expect("events");
    let seen: Vec<(&str, Option<&str>)> = events
        .iter()
        .take(7)
        .map(|e| (e["kind"].as_str().unwrap(), e["branch_id"].as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            ("prepared", None),
            ("branch_registered", Some("01")),
            ("try_reported", Some("01")),
            ("branch_registered", Some("02")),
            ("branch_registered", Some("03")),
            ("try_reported", Some("02")),
            ("aborting", None),
        ],
        "{log:#}"
    );
    let reported: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"] == "try_reported")
        .collect();
    assert_eq!(reported.len(), 2, "{log:#}");
    assert_eq!(
        (
            &reported[0]["outcome"],
            &reported[0]["latency_ms"],
            &reported[0]["target"]
        ),
        (&json!("success"), &json!(7), &json!("TransOut"))
    );
    assert_eq!(reported[1]["outcome"], "failure");
}

#[tokio::test]
async fn the_diagram_and_events_of_an_unknown_gid_are_404() {
    let sys = spawn_system().await;
    for view in ["diagram", "events"] {
        let url = sys
            .coordinator
            .url(&format!("/api/admin/transactions/no-such-gid/{view}"));
        let response = sys.http.get(&url).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 404, "{url}");
        let body: Value = response.json().await.expect("a JSON error");
        assert_eq!(body["error"], "not_found", "{body}");
    }
}

#[test]
fn the_normalisation_keeps_messages_and_drops_what_varies() {
    assert_eq!(
        normalise(
            "sequenceDiagram\n    %% global transaction 0f3c\n    TransIn-->>AP: 200 SUCCESS (13 ms)\n    Note over TM: retry Confirm 02 in 1.1 s (backoff step now 2 s)\n    Note over TM: abort by timeout: Timeout after 3 seconds\n"
        ),
        [
            "sequenceDiagram",
            "TransIn-->>AP: 200 SUCCESS (N ms)",
            "Note over TM: retry Confirm 02 in N s (backoff step now N s)",
            "Note over TM: abort by timeout: Timeout after 3 seconds",
        ]
    );
    let a = normalise("x\na\nb");
    let b = normalise("x\nb\nc");
    assert_eq!(diff(&a, &b), "  x\n- a\n  b\n+ c\n");
}
