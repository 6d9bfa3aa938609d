//! Nested TCC (`fireTccNested`, docs/ARCHITECTURE.md#scenarios), the whole system in-process over
//! real HTTP on real Postgres: branch 02 is the AP's own nested branch, whose Try rebuilds the
//! global transaction from its query (DTM's `TccFromQuery`) and calls TransIn as child branch
//! 0201. The coordinator's record and the banks' data show what happened.

use diesel::prelude::*;
use serde_json::{json, Value};
use test_support::spawn::{
    all_succeeded, answer, ops, post_dtm, spawn_system, test_gid_token, System,
};

const SEED_BALANCE: i64 = 1_000_000;

/// The branch ids of the `op` rows of a coordinator record, in the order it lists them.
fn branch_ids(record: &Value, op: &str) -> Vec<String> {
    ops(record, op)
        .iter()
        .map(|b| b["branch_id"].as_str().expect("branch_id").to_owned())
        .collect()
}

/// The branch ids of the `op` rows of a coordinator record, in the order the coordinator
/// finished them (their `finish_time`); panics if one is unfinished.
fn finish_order(record: &Value, op: &str) -> Vec<String> {
    let mut rows: Vec<(chrono::DateTime<chrono::FixedOffset>, String)> = ops(record, op)
        .iter()
        .map(|b| {
            let finished = b["finish_time"]
                .as_str()
                .unwrap_or_else(|| panic!("{op} of {} is unfinished: {record:#}", b["branch_id"]));
            (
                chrono::DateTime::parse_from_rfc3339(finished).expect("an RFC 3339 finish_time"),
                b["branch_id"].as_str().expect("branch_id").to_owned(),
            )
        })
        .collect();
    rows.sort();
    rows.into_iter().map(|(_, id)| id).collect()
}

/// The `op` row of branch `branch_id`.
fn op_row<'a>(record: &'a Value, op: &str, branch_id: &str) -> &'a Value {
    ops(record, op)
        .into_iter()
        .find(|b| b["branch_id"] == branch_id)
        .unwrap_or_else(|| panic!("no {op} row for branch {branch_id}: {record:#}"))
}

/// `(branch_id, op, reason)` of trans-in's barrier rows for `gid`, in insertion order.
fn trans_in_barrier(sys: &System, gid_: &str) -> Vec<(String, String, String)> {
    use tcc::barrier::schema::barrier::dsl::*;
    let db = sys.trans_in.db.as_ref().expect("trans-in has a database");
    barrier
        .filter(gid.eq(gid_))
        .select((branch_id, op, reason))
        .order(id)
        .load(&mut db.connect())
        .expect("trans-in's barrier table")
}

#[tokio::test]
async fn fire_tcc_nested_moves_the_money_through_child_branch_0201() {
    let sys = spawn_system().await;

    let (status, answer) = sys.fire("/api/fireTccNested?amount=30&from=1&to=2").await;

    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "succeed");
    assert_eq!(
        sys.balances(&sys.trans_out, 1).await,
        (SEED_BALANCE - 30, 0)
    );
    assert_eq!(sys.balances(&sys.trans_in, 2).await, (SEED_BALANCE + 30, 0));
    assert_eq!(sys.account(&sys.trans_in, 2).await["pending_in"], 0);

    let gid = answer["gid"].as_str().expect("gid");
    let record = sys.query(gid).await;
    assert_eq!(record["transaction"]["status"], "succeed", "{record:#}");
    let mut ids = branch_ids(&record, "confirm");
    ids.sort();
    assert_eq!(ids, ["01", "02", "0201"], "{record:#}");
    // Confirms run last registered first, as DTM's do: the child, registered during its
    // parent's Try, is confirmed before its parent.
    assert_eq!(
        finish_order(&record, "confirm"),
        ["0201", "02", "01"],
        "{record:#}"
    );
    assert!(all_succeeded(&record, "confirm"), "{record:#}");
    assert!(
        ops(&record, "cancel").iter().all(|b| b["attempts"] == 0),
        "{record:#}"
    );
    // 02 is the AP's nested branch; its child 0201 was registered straight to TransIn.
    assert_eq!(
        op_row(&record, "confirm", "02")["url"],
        sys.app.url("/api/TransInNestedConfirm")
    );
    assert_eq!(
        op_row(&record, "confirm", "0201")["url"],
        sys.trans_in.url("/api/TransInConfirm")
    );
    // TransIn saw the child's Try and Confirm, each once, under branch id 0201.
    let barrier = trans_in_barrier(&sys, gid);
    let seen: Vec<(&str, &str)> = barrier
        .iter()
        .map(|(b, o, _)| (b.as_str(), o.as_str()))
        .collect();
    assert_eq!(seen, [("0201", "try"), ("0201", "confirm")]);
}

#[tokio::test]
async fn fire_tcc_nested_with_the_childs_try_refused_cancels_0201_02_and_01() {
    let sys = spawn_system().await;

    let (status, answer) = sys
        .fire("/api/fireTccNested?amount=30&trans_in_try=failure")
        .await;

    assert_eq!(status, 409, "{answer}");
    assert_eq!(answer["status"], "failed");
    let reason = answer["reason"].as_str().expect("reason");
    assert!(
        reason.contains("02") && reason.contains("0201"),
        "the reason names the parent and the refused child: {answer}"
    );
    assert_eq!(sys.balances(&sys.trans_out, 1).await, (SEED_BALANCE, 0));
    assert_eq!(sys.balances(&sys.trans_in, 1).await, (SEED_BALANCE, 0));
    assert_eq!(sys.account(&sys.trans_in, 1).await["pending_in"], 0);

    let gid = answer["gid"].as_str().expect("gid");
    let record = sys.query(gid).await;
    assert_eq!(record["transaction"]["status"], "failed", "{record:#}");
    let mut ids = branch_ids(&record, "cancel");
    ids.sort();
    assert_eq!(ids, ["01", "02", "0201"], "{record:#}");
    // Cancels run in reverse registration order: the child before its parent.
    assert_eq!(
        finish_order(&record, "cancel"),
        ["0201", "02", "01"],
        "{record:#}"
    );
    assert!(all_succeeded(&record, "cancel"), "{record:#}");
    assert!(
        ops(&record, "confirm").iter().all(|b| b["attempts"] == 0),
        "{record:#}"
    );
    // The child's Try was refused (its barrier row rolled back), so its Cancel found the Try's
    // slot free: an empty compensation, recorded with reason `cancel`.
    assert_eq!(
        trans_in_barrier(&sys, gid),
        [
            ("0201".into(), "try".into(), "cancel".into()),
            ("0201".into(), "cancel".into(), "cancel".into()),
        ]
    );
}

#[tokio::test]
async fn a_child_try_that_fails_transiently_makes_the_parent_try_fail_and_everything_is_cancelled()
{
    let sys = spawn_system().await;

    let (status, answer) = sys
        .fire("/api/fireTccNested?amount=30&trans_in_try=error")
        .await;

    assert_eq!(status, 409, "{answer}");
    assert_eq!(answer["status"], "failed");
    // The parent answered 500 child_branch_error, which the outer AP reads as a failed Try.
    let reason = answer["reason"].as_str().expect("reason");
    assert!(
        reason.contains("HTTP 500") && reason.contains("child_branch_error"),
        "{answer}"
    );
    assert_eq!(sys.balances(&sys.trans_out, 1).await, (SEED_BALANCE, 0));
    assert_eq!(sys.balances(&sys.trans_in, 1).await, (SEED_BALANCE, 0));
    assert_eq!(sys.account(&sys.trans_in, 1).await["pending_in"], 0);
    let record = sys.query(answer["gid"].as_str().expect("gid")).await;
    assert_eq!(
        finish_order(&record, "cancel"),
        ["0201", "02", "01"],
        "{record:#}"
    );
}

#[tokio::test]
async fn the_nested_branch_endpoints_check_their_branch_query() {
    let sys = spawn_system().await;
    let post = |endpoint: &str, query: &str| {
        let request = sys
            .http
            .post(sys.app.url(&format!("/api/{endpoint}?{query}")))
            .json(&json!({"account_id": 1, "amount": 30}));
        let what = format!("POST {endpoint}?{query}");
        async move { answer(request, &what).await }
    };

    // Confirm and Cancel have nothing to do, whatever the transaction.
    for (endpoint, op) in [
        ("TransInNestedConfirm", "confirm"),
        ("TransInNestedCancel", "cancel"),
    ] {
        let (status, body) = post(
            endpoint,
            &format!("gid=g-nested&trans_type=tcc&branch_id=02&op={op}"),
        )
        .await;
        assert_eq!((status, &body["dtm_result"]), (200, &json!("SUCCESS")));
    }
    let (status, body) = post(
        "TransInNestedCancel",
        "gid=g-nested&trans_type=tcc&branch_id=02&op=confirm",
    )
    .await;
    assert_eq!((status, &body["error"]), (400, &json!("op_mismatch")));
    let (status, body) = post("TransInNestedTry", "gid=g-nested&branch_id=02&op=try").await;
    assert_eq!((status, &body["error"]), (400, &json!("bad_branch_query")));
    let (status, body) = post(
        "TransInNestedTry",
        "gid=g-nested&trans_type=tcc&branch_id=02&op=try&dtm=ftp%3A%2F%2Ftm%2Fapi",
    )
    .await;
    assert_eq!((status, &body["error"]), (400, &json!("bad_branch_query")));
    // Nothing was registered or tried.
    assert!(sys.transactions().await.is_empty());
    assert!(trans_in_barrier(&sys, "g-nested").is_empty());
}

#[tokio::test]
async fn a_nested_try_without_its_gids_token_is_refused_401_and_registers_no_child_branch() {
    let sys = spawn_system().await;
    let gid = "g-nested-open";
    // A live prepared global transaction, as a caller who learnt its gid would find it.
    let (status, body) = post_dtm(
        &sys.http,
        &sys.coordinator,
        "prepare",
        json!({"gid": gid, "trans_type": "tcc"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let query = format!(
        "gid={gid}&trans_type=tcc&branch_id=02&op=try&dtm={}",
        urlencoding(&sys.coordinator.dtm_url())
    );
    let try_with = |token: Option<String>| {
        let mut request = sys
            .http
            .post(sys.app.url(&format!("/api/TransInNestedTry?{query}")))
            .json(&json!({"account_id": 2, "amount": 500}));
        if let Some(token) = token {
            request = request.header(tcc::signing::GID_TOKEN_HEADER, token);
        }
        async move { answer(request, "POST TransInNestedTry").await }
    };

    let (status, body) = try_with(None).await;
    assert_eq!((status, &body["error"]), (401, &json!("missing_gid_token")));
    let (status, body) = try_with(Some(test_gid_token("another-gid"))).await;
    assert_eq!((status, &body["error"]), (401, &json!("bad_gid_token")));

    // No child branch was registered, and TransIn saw nothing.
    let record = sys.query(gid).await;
    assert_eq!(record["transaction"]["status"], "prepared", "{record:#}");
    assert!(
        record["branches"].as_array().expect("branches").is_empty(),
        "{record:#}"
    );
    assert!(trans_in_barrier(&sys, gid).is_empty());

    // The outer AP's own Try carries the token, so the nested transaction still goes through.
    let (status, answer) = sys.fire("/api/fireTccNested?amount=30&from=1&to=2").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "succeed");
    assert_eq!(sys.balances(&sys.trans_in, 2).await, (SEED_BALANCE + 30, 0));
}

/// `s` (a URL) percent-encoded for a query value.
fn urlencoding(s: &str) -> String {
    s.replace(':', "%3A").replace('/', "%2F")
}
