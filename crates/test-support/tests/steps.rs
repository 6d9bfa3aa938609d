//! A global transaction stopped between its protocol steps by the `pause` and `pause-after`
//! faults, as `scripts/demo.sh success --step` stops it: at each stop the RMs'
//! `GET /api/branches/{gid}`, their accounts and the coordinator's record tell the state of that
//! moment, and `POST /api/paused/resume` lets the transaction go on.

use std::time::Duration;

use serde_json::Value;
use test_support::spawn::{Spawned, System};

const SEED_BALANCE: i64 = 1_000_000;

/// `GET` of `url` as JSON; panics unless 200.
async fn get(sys: &System, url: &str) -> Value {
    let response = sys.http.get(url).send().await.expect(url);
    assert_eq!(response.status(), 200, "GET {url}");
    response.json().await.expect("JSON")
}

/// Polls `rm`'s `GET /api/paused` until it holds one call, and returns it.
async fn held_call(sys: &System, rm: &Spawned) -> Value {
    for _ in 0..200 {
        let held = get(sys, &rm.url("/api/paused")).await;
        if let Some(call) = held.as_array().and_then(|calls| calls.first()) {
            return call.clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{} never held a call", rm.name);
}

/// Resumes `gid`'s held call at `rm`; asserts exactly one was released.
async fn resume(sys: &System, rm: &Spawned, gid: &str) {
    let url = rm.url(&format!("/api/paused/resume?gid={gid}"));
    let response = sys.http.post(url).send().await.expect("resume");
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["resumed"], 1, "{answer}");
}

/// `[(branch_id, state)]` of the holds, and `[(op, reason)]` of the barrier rows, of `gid` at
/// `bank`.
async fn at_bank(sys: &System, bank: &Spawned, gid: &str) -> (Vec<String>, Vec<String>) {
    let view = get(sys, &bank.url(&format!("/api/branches/{gid}"))).await;
    assert_eq!(view["gid"], gid);
    let words = |list: &str, a: &str, b: &str| -> Vec<String> {
        let rows = view[list].as_array().expect(list);
        rows.iter()
            .map(|r| format!("{} {}", r[a].as_str().unwrap(), r[b].as_str().unwrap()))
            .collect()
    };
    (
        words("holds", "branch_id", "state"),
        words("barrier", "op", "reason"),
    )
}

async fn coordinator_status(sys: &System, gid: &str) -> String {
    let record = sys.query(gid).await;
    record["transaction"]["status"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_transfer_shows_each_state_between_its_steps_and_then_commits() {
    let sys = test_support::spawn::spawn_system().await;
    let fire = sys.fire(
        "/api/fireTcc?amount=30&gid_prefix=ana&request_timeout=60\
         &trans_out_try=pause-after&trans_in_try=pause-after\
         &trans_in_confirm=pause&trans_out_confirm=pause",
    );
    let steps = async {
        // Try 01 done, its answer held: funds frozen, hold tentative, nothing at bank B yet.
        let call = held_call(&sys, &sys.trans_out).await;
        let gid = call["gid"].as_str().unwrap().to_owned();
        assert!(gid.starts_with("ana-"), "{gid}");
        assert_eq!(
            (&call["op"], &call["stage"]),
            (&"try".into(), &"after_work".into())
        );
        let out = at_bank(&sys, &sys.trans_out, &gid).await;
        assert_eq!(out, (vec!["01 tentative".into()], vec!["try try".into()]));
        assert_eq!(sys.balances(&sys.trans_out, 1).await, (SEED_BALANCE, 30));
        assert_eq!(at_bank(&sys, &sys.trans_in, &gid).await, (vec![], vec![]));
        assert_eq!(coordinator_status(&sys, &gid).await, "prepared");
        resume(&sys, &sys.trans_out, &gid).await;

        // Try 02 done, not submitted yet: a pending credit at bank B.
        held_call(&sys, &sys.trans_in).await;
        let into = at_bank(&sys, &sys.trans_in, &gid).await;
        assert_eq!(into, (vec!["02 tentative".into()], vec!["try try".into()]));
        assert_eq!(sys.account(&sys.trans_in, 1).await["pending_in"], 30);
        assert_eq!(coordinator_status(&sys, &gid).await, "prepared");
        resume(&sys, &sys.trans_in, &gid).await;

        // Submitted, Confirm 02 (the last registered first) held before its work.
        let call = held_call(&sys, &sys.trans_in).await;
        assert_eq!(
            (&call["op"], &call["stage"]),
            (&"confirm".into(), &"before_work".into())
        );
        assert_eq!(coordinator_status(&sys, &gid).await, "submitted");
        let into = at_bank(&sys, &sys.trans_in, &gid).await;
        assert_eq!(into.0, vec!["02 tentative".to_owned()]);
        resume(&sys, &sys.trans_in, &gid).await;

        // Confirm 02 applied, Confirm 01 held: bank B credited, bank A still frozen.
        held_call(&sys, &sys.trans_out).await;
        let into = at_bank(&sys, &sys.trans_in, &gid).await;
        let confirmed = (
            vec!["02 confirmed".into()],
            vec!["try try".into(), "confirm confirm".into()],
        );
        assert_eq!(into, confirmed);
        assert_eq!(sys.balances(&sys.trans_in, 1).await, (SEED_BALANCE + 30, 0));
        assert_eq!(sys.balances(&sys.trans_out, 1).await, (SEED_BALANCE, 30));
        assert_eq!(coordinator_status(&sys, &gid).await, "submitted");
        resume(&sys, &sys.trans_out, &gid).await;
        gid
    };
    let ((status, answer), gid) = tokio::join!(fire, steps);

    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (answer["gid"].as_str(), &answer["status"]),
        (Some(gid.as_str()), &"succeed".into())
    );
    let out = at_bank(&sys, &sys.trans_out, &gid).await;
    assert_eq!(out.0, vec!["01 confirmed".to_owned()]);
    assert_eq!(
        sys.balances(&sys.trans_out, 1).await,
        (SEED_BALANCE - 30, 0)
    );
    for rm in [&sys.trans_out, &sys.trans_in] {
        assert_eq!(
            get(&sys, &rm.url("/api/paused")).await,
            Value::Array(vec![])
        );
    }
}

#[tokio::test]
async fn the_branches_view_refuses_a_malformed_gid_and_knows_nothing_of_an_unseen_one() {
    let sys = test_support::spawn::spawn_system().await;
    let bad = sys.trans_out.url("/api/branches/has%20space");
    let response = sys.http.get(bad).send().await.unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "invalid_gid");
    let unseen = get(&sys, &sys.stock.url("/api/branches/never-seen")).await;
    assert_eq!(unseen["reservations"], Value::Array(vec![]));
    assert_eq!(unseen["barrier"], Value::Array(vec![]));
}

#[tokio::test]
async fn a_gid_prefix_that_would_not_be_safe_in_a_gid_is_refused_before_any_transaction() {
    let sys = test_support::spawn::spawn_system().await;
    for bad in [
        "has%20space",
        "a.b",
        &"x".repeat(33),
        "xFAILUREx",
        "ONGOING",
    ] {
        let (status, answer) = sys.fire(&format!("/api/fireTcc?gid_prefix={bad}")).await;
        assert_eq!(status, 400, "{bad}: {answer}");
        assert_eq!(answer["parameter"], "gid_prefix", "{answer}");
    }
    assert!(sys.transactions().await.is_empty());
}
