//! The coordinator against RMs that misbehave (redirects, 202, ONGOING, calls held open), played
//! by scripted stubs on loopback: no answer but exactly 200 is a success, a redirect is never
//! followed, a waited submit tells the truth, one slow RM delays only its own transaction, and the
//! second phase runs from the last registered branch to the first, as DTM's does. A branch
//! registered while the transaction is being submitted is either refused or confirmed.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use test_support::spawn::{get_json, post_dtm, spawn_coordinator, wait_for_status, Spawned};
use test_support::stub::{Reply, StubRm};

/// Prepares `gid` with `options` and registers one branch per `(branch_id, stub)`, whose Confirm
/// and Cancel are `<stub>/confirm<branch_id>` and `<stub>/cancel<branch_id>`.
async fn prepared(
    http: &reqwest::Client,
    tm: &Spawned,
    gid: &str,
    options: Value,
    branches: &[(&str, &StubRm)],
) {
    let mut prepare = json!({"gid": gid, "trans_type": "tcc"});
    prepare
        .as_object_mut()
        .unwrap()
        .extend(options.as_object().unwrap().clone());
    let (status, body) = post_dtm(http, tm, "prepare", prepare).await;
    assert_eq!(status, 200, "prepare: {body}");
    for (branch_id, stub) in branches {
        let register = json!({
            "gid": gid, "trans_type": "tcc", "branch_id": branch_id,
            "data": r#"{"account_id":1,"amount":30}"#,
            "confirm": stub.url(&format!("/confirm{branch_id}")),
            "cancel": stub.url(&format!("/cancel{branch_id}")),
        });
        let (status, body) = post_dtm(http, tm, "registerBranch", register).await;
        assert_eq!(status, 200, "registerBranch: {body}");
    }
}

fn confirm_op<'a>(record: &'a Value, branch_id: &str) -> &'a Value {
    record["branches"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["branch_id"] == branch_id && b["op"] == "confirm")
        .unwrap_or_else(|| panic!("no confirm of {branch_id}: {record}"))
}

#[tokio::test]
async fn a_confirm_answered_with_a_redirect_to_a_refused_host_is_not_followed_nor_a_success() {
    let tm = spawn_coordinator().await;
    let http = reqwest::Client::new();
    // 127.0.0.2 is loopback too, but not on the default branch host allowlist.
    let refused = StubRm::start("127.0.0.2", vec![Reply::success()]).await;
    let rm = StubRm::start(
        "127.0.0.1",
        vec![Reply::redirect(307, &refused.url("/steal"))],
    )
    .await;
    prepared(&http, &tm, "g-redirect", json!({}), &[("01", &rm)]).await;

    let (status, body) = post_dtm(
        &http,
        &tm,
        "submit",
        json!({"gid": "g-redirect", "trans_type": "tcc", "wait_result": true}),
    )
    .await;

    assert_eq!(status, 409, "a waited submit that did not finish: {body}");
    assert_eq!(body["error"], "not_finished");
    assert_eq!(body["status"], "submitted");
    rm.wait_for_requests(1, Duration::from_secs(5)).await;
    let record = get_json(&http, &format!("{}/query?gid=g-redirect", tm.dtm_url())).await;
    assert_eq!(record["transaction"]["status"], "submitted", "{record}");
    let confirm = confirm_op(&record, "01");
    assert_eq!(confirm["status"], "prepared", "{record}");
    let last = confirm["last_result"].as_str().unwrap();
    assert!(
        last.contains("307")
            && last.contains(&refused.url("/steal"))
            && last.contains("not followed"),
        "the retry's reason names the redirect and its target: {last}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        refused.received().is_empty(),
        "the refused host was called: {:?}",
        refused.received()
    );
}

#[tokio::test]
async fn a_confirm_answered_202_or_204_is_not_a_success() {
    confirm_answered_with_is_not_a_success(&[202, 204]).await;
}

#[tokio::test]
async fn a_confirm_answered_429_or_a_status_from_600_to_999_is_not_a_success() {
    // 600-999 are outside HTTP's classes but on the wire all the same (a broken proxy): DTM
    // reads anything but exactly 200 as not done, and so does the TM here.
    confirm_answered_with_is_not_a_success(&[429, 600, 999]).await;
}

/// For each status: a Confirm answered with it, a `SUCCESS` body and all, leaves the
/// transaction `submitted` with the op `prepared`, the answer recorded as an error.
async fn confirm_answered_with_is_not_a_success(statuses: &[u16]) {
    for &status in statuses {
        let tm = spawn_coordinator().await;
        let http = reqwest::Client::new();
        let rm = StubRm::start(
            "127.0.0.1",
            vec![Reply::status(status, r#"{"dtm_result":"SUCCESS"}"#)],
        )
        .await;
        let gid = format!("g-{status}");
        prepared(&http, &tm, &gid, json!({}), &[("01", &rm)]).await;

        let (answer, body) = post_dtm(
            &http,
            &tm,
            "submit",
            json!({"gid": gid, "trans_type": "tcc", "wait_result": true}),
        )
        .await;

        assert_eq!(answer, 409, "HTTP {status}: {body}");
        let record = get_json(&http, &format!("{}/query?gid={gid}", tm.dtm_url())).await;
        assert_eq!(record["transaction"]["status"], "submitted", "{record}");
        let confirm = confirm_op(&record, "01");
        assert_eq!(confirm["status"], "prepared", "HTTP {status}: {record}");
        assert!(
            confirm["last_result"]
                .as_str()
                .unwrap()
                .starts_with(&format!("error: HTTP {status}")),
            "{record}"
        );
    }
}

#[tokio::test]
async fn a_waited_submit_whose_confirm_fails_answers_409_as_soon_as_the_retry_is_scheduled() {
    let tm = spawn_coordinator().await;
    let http = reqwest::Client::new();
    let rm = StubRm::start("127.0.0.1", vec![Reply::status(500, "boom")]).await;
    // A long request_timeout: the wait must end with the pass, not with the timeout.
    prepared(
        &http,
        &tm,
        "g-waited",
        json!({"request_timeout": 30}),
        &[("01", &rm)],
    )
    .await;

    let sent = Instant::now();
    let (status, body) = post_dtm(
        &http,
        &tm,
        "submit",
        json!({"gid": "g-waited", "trans_type": "tcc", "wait_result": true}),
    )
    .await;
    let waited = sent.elapsed();

    assert_eq!(status, 409, "{body}");
    assert_eq!(
        body["dtm_result"], "FAILURE",
        "DTM clients read the status and this word"
    );
    assert_eq!(body["error"], "not_finished");
    assert_eq!(body["gid"], "g-waited");
    assert_eq!(body["status"], "submitted");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("confirm of branch 01") && message.contains("HTTP 500"),
        "{message}"
    );
    assert!(
        waited < Duration::from_secs(15),
        "the answer waited {waited:?} although the retry was scheduled at once"
    );
}

#[tokio::test]
async fn a_waited_abort_whose_cancel_answers_ongoing_answers_425_ongoing() {
    let tm = spawn_coordinator().await;
    let http = reqwest::Client::new();
    let rm = StubRm::start(
        "127.0.0.1",
        vec![Reply::status(425, r#"{"dtm_result":"ONGOING"}"#)],
    )
    .await;
    prepared(&http, &tm, "g-ongoing", json!({}), &[("01", &rm)]).await;

    let (status, body) = post_dtm(
        &http,
        &tm,
        "abort",
        json!({"gid": "g-ongoing", "trans_type": "tcc", "wait_result": true}),
    )
    .await;

    assert_eq!(status, 425, "{body}");
    assert_eq!(body["dtm_result"], "ONGOING");
    assert_eq!(body["error"], "not_finished");
    assert_eq!(body["status"], "aborting");
}

#[tokio::test]
async fn one_rm_holding_its_confirm_open_does_not_delay_another_transactions_retry() {
    let tm = spawn_coordinator().await;
    let http = reqwest::Client::new();
    // Transaction A: its first Confirm fails, so the worker (not submit) runs its retry, which
    // the RM then holds open for the whole request_timeout.
    let slow = StubRm::start("127.0.0.1", vec![Reply::status(500, "boom"), Reply::Hang]).await;
    prepared(
        &http,
        &tm,
        "g-slow",
        json!({"request_timeout": 60, "retry_interval": 1}),
        &[("01", &slow)],
    )
    .await;
    let (status, body) = post_dtm(&http, &tm, "submit", json!({"gid": "g-slow"})).await;
    assert_eq!(status, 200, "{body}");
    slow.wait_for_requests(2, Duration::from_secs(10)).await;

    // Transaction B fails its first Confirm while A's retry hangs; its retry is due a second
    // later, and must not wait for A's call to time out.
    let flaky = StubRm::start(
        "127.0.0.1",
        vec![Reply::status(500, "boom"), Reply::success()],
    )
    .await;
    prepared(
        &http,
        &tm,
        "g-flaky",
        json!({"retry_interval": 1}),
        &[("01", &flaky)],
    )
    .await;
    let (status, body) = post_dtm(&http, &tm, "submit", json!({"gid": "g-flaky"})).await;
    assert_eq!(status, 200, "{body}");

    wait_for_status(
        &http,
        &tm.dtm_url(),
        "g-flaky",
        "succeed",
        Duration::from_secs(10),
    )
    .await;
    let record = get_json(&http, &format!("{}/query?gid=g-slow", tm.dtm_url())).await;
    assert_eq!(
        record["transaction"]["status"], "submitted",
        "A's call is still held open: {record}"
    );
}

#[tokio::test]
async fn confirms_and_cancels_run_from_the_last_registered_branch_to_the_first() {
    for (call, op) in [("submit", "confirm"), ("abort", "cancel")] {
        let tm = spawn_coordinator().await;
        let http = reqwest::Client::new();
        let rm = StubRm::start("127.0.0.1", vec![Reply::success()]).await;
        let gid = format!("g-order-{op}");
        prepared(
            &http,
            &tm,
            &gid,
            json!({}),
            &[("01", &rm), ("02", &rm), ("03", &rm)],
        )
        .await;

        let (status, body) = post_dtm(
            &http,
            &tm,
            call,
            json!({"gid": gid, "trans_type": "tcc", "wait_result": true}),
        )
        .await;

        assert_eq!(status, 200, "{body}");
        let paths: Vec<String> = rm
            .received()
            .iter()
            .map(|r| r.target.split('?').next().unwrap().to_owned())
            .collect();
        assert_eq!(
            paths,
            [format!("/{op}03"), format!("/{op}02"), format!("/{op}01")],
            "{call}"
        );
    }
}

#[tokio::test]
async fn credential_branch_headers_reach_the_rm_but_are_redacted_in_query_and_all() {
    let tm = spawn_coordinator().await;
    let http = reqwest::Client::new();
    let rm = StubRm::start("127.0.0.1", vec![Reply::success()]).await;
    let headers = json!({"X-Tcc-Gid-Token": "v1=secret-value", "Authorization": "Bearer b", "X-Trace": "t-1"});
    prepared(
        &http,
        &tm,
        "g-headers",
        json!({ "branch_headers": headers }),
        &[("01", &rm)],
    )
    .await;

    let (status, body) = post_dtm(
        &http,
        &tm,
        "submit",
        json!({"gid": "g-headers", "wait_result": true}),
    )
    .await;

    assert_eq!(status, 200, "{body}");
    let call = &rm.received()[0];
    assert_eq!(call.header("x-tcc-gid-token"), Some("v1=secret-value"));
    assert_eq!(call.header("authorization"), Some("Bearer b"));
    let shown =
        json!({"X-Tcc-Gid-Token": "<redacted>", "Authorization": "<redacted>", "X-Trace": "t-1"});
    let record = get_json(&http, &format!("{}/query?gid=g-headers", tm.dtm_url())).await;
    assert_eq!(record["transaction"]["branch_headers"], shown);
    let all = get_json(&http, &format!("{}/all?gid=g-headers", tm.dtm_url())).await;
    assert_eq!(all["transactions"][0]["branch_headers"], shown);
}

#[tokio::test]
async fn a_register_branch_racing_submit_is_either_refused_or_confirmed_never_left_behind() {
    let tm = spawn_coordinator().await;
    let http = reqwest::Client::new();
    let rm = StubRm::start("127.0.0.1", vec![Reply::success()]).await;
    let (mut registered, mut refused) = (0, 0);
    for round in 0..30 {
        let gid = format!("g-race-{round}");
        prepared(&http, &tm, &gid, json!({}), &[("01", &rm)]).await;
        let register = post_dtm(
            &http,
            &tm,
            "registerBranch",
            json!({
                "gid": gid, "trans_type": "tcc", "branch_id": "02",
                "data": r#"{"account_id":1,"amount":30}"#,
                "confirm": rm.url("/confirm02"), "cancel": rm.url("/cancel02"),
            }),
        );
        let submit = post_dtm(
            &http,
            &tm,
            "submit",
            json!({"gid": gid, "trans_type": "tcc", "wait_result": true}),
        );
        // In turns: submit answered before the registration is sent, both at once, the
        // registration answered before the submit is sent.
        let ((register_status, register_body), (submit_status, submit_body)) =
            test_support::spawn::join_in_turns(round + 1, register, submit).await;
        assert_eq!(submit_status, 200, "{gid}: submit: {submit_body}");
        let record = wait_for_status(
            &http,
            &tm.dtm_url(),
            &gid,
            "succeed",
            Duration::from_secs(10),
        )
        .await;
        let confirm_02 = record["branches"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["branch_id"] == "02" && b["op"] == "confirm")
            .cloned();
        match register_status {
            // Registered before the submit took effect: its Confirm ran with the others.
            200 => {
                registered += 1;
                let confirm = confirm_02
                    .unwrap_or_else(|| panic!("{gid}: 02 accepted but missing: {record}"));
                assert_eq!(confirm["status"], "succeed", "{gid}: {record}");
            }
            // Refused because the transaction was no longer prepared: nothing of 02 was kept.
            _ => {
                refused += 1;
                assert!(
                    confirm_02.is_none(),
                    "{gid}: 02 refused ({register_body}) but recorded: {record}"
                );
            }
        }
    }
    assert!(
        registered > 0 && refused > 0,
        "both outcomes: {registered} registered, {refused} refused"
    );
}
