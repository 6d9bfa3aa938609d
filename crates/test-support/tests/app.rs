//! The AP (`app`) over real HTTP against the real coordinator, banks and stock service: parameter
//! checking, error answers, and what the AP registers with the TM.
//!
//! What the AP did is read back from the real binaries, never from a recording double:
//!
//! * a refused request started nothing: the coordinator's `GET {dtm}/all` lists no global
//!   transaction, and every account and product reads exactly as before
//!   ([`System::rm_snapshot`]);
//! * the branches the AP registered, in order, with their Confirm/Cancel URLs and data, are the
//!   coordinator's record (`GET {dtm}/query?gid=`). The AP registers each branch and then calls its
//!   Try before registering the next, so branch ids `01`, `02`, ... are also the order of the Trys.
//!
//! Balances moving on commit and rollback are proven in `end_to_end.rs`; this file keeps to what
//! the AP itself decides.

use serde_json::{json, Value};
use test_support::spawn::{
    all_succeeded, answer, spawn_app, spawn_coordinator, spawn_system, spawn_system_with,
    unreachable_url, wait_for_status, Spawned, System,
};
use test_support::stub::{Reply, StubRm};

async fn get(app: &Spawned, path_and_query: &str) -> (u16, Value) {
    let request = reqwest::Client::new().get(app.url(path_and_query));
    answer(request, &format!("GET {path_and_query}")).await
}

async fn post_json(app: &Spawned, path_and_query: &str, body: &Value) -> (u16, Value) {
    let request = reqwest::Client::new()
        .post(app.url(path_and_query))
        .json(body);
    answer(request, &format!("POST {path_and_query} {body}")).await
}

async fn post_raw(app: &Spawned, content_type: &str, body: &'static str) -> (u16, Value) {
    let request = reqwest::Client::new()
        .post(app.url("/api/fireTcc"))
        .header("content-type", content_type)
        .body(body);
    answer(
        request,
        &format!("POST /api/fireTcc ({content_type}) {body:?}"),
    )
    .await
}

fn assert_invalid_parameter(answer: &(u16, Value), parameter: &str, context: &str) {
    let (status, body) = answer;
    assert_eq!(*status, 400, "{context}: {body}");
    assert_eq!(body["error"], "invalid_parameter", "{context}: {body}");
    assert_eq!(body["parameter"], parameter, "{context}: {body}");
    assert!(
        body["message"].as_str().unwrap().contains(parameter),
        "{context}: the message names the parameter: {body}"
    );
}

/// No global transaction exists in the coordinator, and every account and product reads as in
/// `before` (a [`System::rm_snapshot`] taken before the requests).
async fn assert_nothing_started(sys: &System, before: &[Value], context: &str) {
    let transactions = sys.transactions().await;
    assert!(
        transactions.is_empty(),
        "{context}: no global transaction was started, yet the coordinator lists {transactions:#?}"
    );
    assert!(
        sys.rm_snapshot().await == before,
        "{context}: an account or product changed"
    );
}

/// The gid of the one global transaction the coordinator knows.
async fn the_only_gid(sys: &System) -> String {
    let transactions = sys.transactions().await;
    assert_eq!(transactions.len(), 1, "{transactions:#?}");
    transactions[0]["gid"].as_str().unwrap().to_owned()
}

/// The coordinator's branch ops of `gid` in registration order, as
/// `(branch_id, op, url, data)` with the data parsed from the stored JSON text.
async fn registered(sys: &System, gid: &str) -> Vec<(String, String, String, Value)> {
    let record = sys.query(gid).await;
    record["branches"]
        .as_array()
        .expect("branches")
        .iter()
        .map(|b| {
            let text = |k: &str| {
                b[k].as_str()
                    .unwrap_or_else(|| panic!("{k}: {b}"))
                    .to_owned()
            };
            let data = serde_json::from_str(&text("data"))
                .unwrap_or_else(|e| panic!("branch data is JSON ({e}): {b}"));
            (text("branch_id"), text("op"), text("url"), data)
        })
        .collect()
}

/// The two ops a branch registers: `(branch_id, confirm, {base}/{label}Confirm, data)` then
/// cancel.
fn branch(
    branch_id: &str,
    base: &str,
    label: &str,
    data: Value,
) -> [(String, String, String, Value); 2] {
    ["confirm", "cancel"].map(|op| {
        let verb = if op == "confirm" { "Confirm" } else { "Cancel" };
        (
            branch_id.to_owned(),
            op.to_owned(),
            format!("{base}/{label}{verb}"),
            data.clone(),
        )
    })
}

#[tokio::test]
async fn zero_negative_fractional_and_non_numeric_amounts_are_refused_with_400_and_start_nothing() {
    let sys = spawn_system().await;
    let before = sys.rm_snapshot().await;

    for bad in ["0", "-5", "1.5", "abc"] {
        for endpoint in ["fireTcc", "fireTccRollback"] {
            let refused = sys.fire(&format!("/api/{endpoint}?amount={bad}")).await;
            assert_invalid_parameter(&refused, "amount", &format!("GET {endpoint} amount={bad}"));
        }
    }
    for bad in [json!(0), json!(-5), json!(1.5), json!("abc"), json!("30")] {
        let refused = post_json(&sys.app, "/api/fireTcc", &json!({ "amount": bad })).await;
        assert_invalid_parameter(&refused, "amount", &format!("POST amount={bad}"));
    }
    let refused = sys.fire("/api/firePurchase?quantity=0").await;
    assert_invalid_parameter(&refused, "quantity", "purchase quantity=0");

    assert_nothing_started(&sys, &before, "refused amounts").await;
}

#[tokio::test]
async fn unknown_and_repeated_parameters_are_refused_with_400_and_start_nothing() {
    let sys = spawn_system().await;
    let before = sys.rm_snapshot().await;

    let refused = sys.fire("/api/fireTcc?ammount=5").await;
    assert_invalid_parameter(&refused, "ammount", "typo in the query");
    let refused = post_json(&sys.app, "/api/fireTcc", &json!({"product_id": 1})).await;
    assert_invalid_parameter(&refused, "product_id", "a purchase parameter on fireTcc");

    let refused = sys.fire("/api/fireTcc?amount=5&amount=6").await;
    assert_invalid_parameter(&refused, "amount", "twice in the query");
    let refused = post_json(&sys.app, "/api/fireTcc?amount=5", &json!({"amount": 5})).await;
    assert_invalid_parameter(&refused, "amount", "in both query and body");
    assert!(refused.1["message"]
        .as_str()
        .unwrap()
        .contains("both in the query string and in the JSON body"));

    assert_nothing_started(&sys, &before, "refused parameters").await;
}

#[tokio::test]
async fn malformed_bodies_get_json_errors_and_start_nothing() {
    let sys = spawn_system_with(|_| {}, |app| app.json_limit = 64).await;
    let before = sys.rm_snapshot().await;

    let (status, body) = post_raw(&sys.app, "text/plain", "amount=5").await;
    assert_eq!(
        (status, &body["error"]),
        (415, &json!("unsupported_content_type")),
        "{body}"
    );

    let (status, body) = post_raw(&sys.app, "application/json", "{\"amount\": ").await;
    assert_eq!((status, &body["error"]), (400, &json!("invalid_json")));

    let (status, body) = post_json(&sys.app, "/api/fireTcc", &json!([30])).await;
    assert_eq!((status, &body["error"]), (400, &json!("invalid_json")));

    let big = json!({ "amount": 5, "padding": "x".repeat(100) });
    let (status, body) = post_json(&sys.app, "/api/fireTcc", &big).await;
    assert_eq!((status, &body["error"]), (413, &json!("body_too_large")));

    assert_nothing_started(&sys, &before, "malformed bodies").await;
}

#[tokio::test]
async fn a_purchase_whose_amount_overflows_is_refused_before_any_global_transaction() {
    // Product N costs seed_price * N: product 1 costs i64::MAX / 20, so 21 units overflow i64.
    let sys = spawn_system_with(|stock| stock.seed_price = i64::MAX / 20, |_| {}).await;
    let price = sys.product(1).await["price"].as_i64().unwrap();
    assert!(price.checked_mul(21).is_none(), "the seeded price {price}");
    let before = sys.rm_snapshot().await;

    let refused = sys.fire("/api/firePurchase?product_id=1&quantity=21").await;

    assert_invalid_parameter(&refused, "quantity", "price * quantity overflows");
    assert_nothing_started(&sys, &before, "overflowing purchase").await;
}

#[tokio::test]
async fn a_purchase_of_an_unknown_product_is_refused_with_400_before_any_global_transaction() {
    let sys = spawn_system().await;
    let before = sys.rm_snapshot().await;

    let refused = sys.fire("/api/firePurchase?product_id=999").await;

    assert_invalid_parameter(&refused, "product_id", "no such product");
    assert_nothing_started(&sys, &before, "unknown product").await;
}

#[tokio::test]
async fn an_unreachable_stock_service_makes_a_purchase_answer_502_before_any_global_transaction() {
    let sys = spawn_system_with(|_| {}, |app| app.stock_url = unreachable_url("/api")).await;
    let before = sys.rm_snapshot().await;

    let (status, body) = sys.fire("/api/firePurchase").await;

    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"], "stock_unavailable");
    assert!(
        !body["message"].as_str().unwrap().contains("127.0.0.1"),
        "no internal addresses in a 5xx message: {body}"
    );
    assert_nothing_started(&sys, &before, "stock down").await;
}

#[tokio::test]
async fn an_unreachable_coordinator_answers_a_clean_503_and_no_branch_is_tried() {
    let sys = spawn_system_with(|_| {}, |app| app.dtm_url = unreachable_url("/api/dtmsvr")).await;
    let before = sys.rm_snapshot().await;

    // firePurchase reads its price from the (running) stock service before asking for a gid.
    for path in ["/api/fireTcc", "/api/fireTccRollback", "/api/firePurchase"] {
        let (status, body) = sys.fire(path).await;
        assert_eq!(status, 503, "{path}: {body}");
        assert_eq!(body["error"], "coordinator_unavailable", "{body}");
        assert!(body.get("gid").is_none(), "no gid was handed out: {body}");
        let message = body["message"].as_str().unwrap();
        assert!(
            message.contains("no global transaction was started"),
            "{body}"
        );
        assert!(!message.contains("127.0.0.1"), "{body}");
    }
    let (status, body) = post_json(&sys.app, "/api/fireTcc", &json!({"amount": 5})).await;
    assert_eq!(
        (status, &body["error"]),
        (503, &json!("coordinator_unavailable"))
    );

    // No Try froze funds, recorded a credit or reserved stock.
    assert_nothing_started(&sys, &before, "coordinator down").await;
}

#[tokio::test]
async fn a_coordinator_whose_database_refuses_prepare_makes_the_ap_answer_502_with_the_gid() {
    let sys = spawn_system().await;
    // A real failure of the real coordinator: its Postgres refuses every new global transaction
    // (as a full disk would), so `newGid` (no database) answers and `prepare` fails with a 500.
    let mut conn = sys
        .coordinator
        .db
        .as_ref()
        .expect("coordinator db")
        .connect();
    diesel::connection::SimpleConnection::batch_execute(
        &mut conn,
        "CREATE FUNCTION refuse_insert() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'disk full'; END $$; \
         CREATE TRIGGER refuse_prepare BEFORE INSERT ON trans_global \
             FOR EACH ROW EXECUTE FUNCTION refuse_insert();",
    )
    .expect("the trigger is created");
    let before = sys.rm_snapshot().await;

    let (status, body) = sys.fire("/api/fireTcc").await;

    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"], "coordinator_error");
    let gid = body["gid"].as_str().expect("the gid newGid handed out");
    assert!(
        gid.len() == 32 && gid.bytes().all(|b| b.is_ascii_hexdigit()),
        "{gid}"
    );
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("no global transaction was started"),
        "{body}"
    );
    assert!(
        !message.contains("disk full") && !message.contains("database"),
        "the coordinator's own detail stays in the logs: {body}"
    );
    // No branch is registered or tried without a prepared transaction.
    assert_nothing_started(&sys, &before, "prepare refused").await;
}

#[tokio::test]
async fn fire_tcc_registers_trans_out_then_trans_in_with_the_merged_parameters_and_answers_200() {
    let sys = spawn_system().await;

    // `from` in the query string, `amount` and `to` in the body: one set of parameters.
    let (status, body) = post_json(
        &sys.app,
        "/api/fireTcc?from=3",
        &json!({"amount": 45, "to": 4}),
    )
    .await;

    assert_eq!(status, 200, "{body}");
    let gid = the_only_gid(&sys).await;
    // `status` is final: the AP asked `submit` to wait for the second phase.
    assert_eq!(body, json!({"gid": gid, "status": "succeed"}));
    let (out, inn) = (sys.trans_out.url("/api"), sys.trans_in.url("/api"));
    let expected: Vec<_> = [
        branch(
            "01",
            &out,
            "TransOut",
            json!({"account_id": 3, "amount": 45}),
        ),
        branch(
            "02",
            &inn,
            "TransIn",
            json!({"account_id": 4, "amount": 45}),
        ),
    ]
    .concat();
    assert_eq!(registered(&sys, &gid).await, expected);
}

#[tokio::test]
async fn fire_tcc_rollback_carries_the_fault_in_trans_in_data_and_answers_409_with_the_reason() {
    let sys = spawn_system().await;

    let (status, body) = sys.fire("/api/fireTccRollback?amount=7").await;

    assert_eq!(status, 409, "{body}");
    let gid = the_only_gid(&sys).await;
    assert_eq!(body["gid"], gid.as_str());
    assert_eq!(body["status"], "failed");
    let reason = body["reason"].as_str().unwrap();
    assert!(reason.starts_with("branch 02 Try refused"), "{reason}");

    let record = sys.query(&gid).await;
    assert_eq!(record["transaction"]["status"], "failed");
    assert_eq!(
        record["transaction"]["rollback_reason"], reason,
        "the AP aborted with the reason it answered"
    );
    // Only TransIn's data carries the fault, so its real Try refused and TransOut's did not.
    let (out, inn) = (sys.trans_out.url("/api"), sys.trans_in.url("/api"));
    let expected: Vec<_> = [
        branch(
            "01",
            &out,
            "TransOut",
            json!({"account_id": 1, "amount": 7}),
        ),
        branch(
            "02",
            &inn,
            "TransIn",
            json!({"account_id": 1, "amount": 7, "fault": {"try": "failure"}}),
        ),
    ]
    .concat();
    assert_eq!(registered(&sys, &gid).await, expected);
}

#[tokio::test]
async fn fire_purchase_registers_stock_then_trans_out_then_trans_in_with_price_times_quantity() {
    let sys = spawn_system().await;
    let price = sys.product(7).await["price"].as_i64().unwrap();

    let (status, body) = get(
        &sys.app,
        "/api/firePurchase?product_id=7&quantity=3&buyer=5&merchant=6",
    )
    .await;

    assert_eq!(status, 200, "{body}");
    let gid = the_only_gid(&sys).await;
    assert_eq!(body, json!({"gid": gid, "status": "succeed"}));
    let amount = price * 3;
    let expected: Vec<_> = [
        branch(
            "01",
            &sys.stock.url("/api"),
            "Stock",
            json!({"product_id": 7, "quantity": 3}),
        ),
        branch(
            "02",
            &sys.trans_out.url("/api"),
            "TransOut",
            json!({"account_id": 5, "amount": amount}),
        ),
        branch(
            "03",
            &sys.trans_in.url("/api"),
            "TransIn",
            json!({"account_id": 6, "amount": amount}),
        ),
    ]
    .concat();
    assert_eq!(registered(&sys, &gid).await, expected);
}

#[tokio::test]
async fn ping_and_health_answer_with_every_other_service_down_and_unknown_routes_get_json_errors() {
    let app = spawn_app(
        &unreachable_url("/api/dtmsvr"),
        &unreachable_url("/api"),
        &unreachable_url("/api"),
        &unreachable_url("/api"),
    )
    .await;

    let (status, body) = get(&app, "/api/ping").await;
    assert_eq!((status, &body["service"]), (200, &json!("app")));
    let (status, _) = get(&app, "/api/health").await;
    assert_eq!(status, 200);
    let (status, body) = get(&app, "/api/fireNothing").await;
    assert_eq!((status, &body["error"]), (404, &json!("not_found")));
    let request = reqwest::Client::new().put(app.url("/api/fireTcc"));
    let (status, body) = answer(request, "PUT /api/fireTcc").await;
    assert_eq!(
        (status, &body["error"]),
        (405, &json!("method_not_allowed"))
    );
}

#[tokio::test]
async fn with_fault_injection_off_fault_parameters_are_refused_with_400_and_start_nothing() {
    let sys = spawn_system_with(|_| {}, |app| app.fault_injection = false).await;
    let before = sys.rm_snapshot().await;

    for query in [
        "/api/fireTcc?trans_in_confirm=error:3",
        "/api/fireTcc?crash_after_try=true",
        "/api/fireTccRollback?trans_out_try=delay:10",
    ] {
        let (status, body) = get(&sys.app, query).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"], "fault_injection_disabled", "{query}: {body}");
    }

    assert_nothing_started(&sys, &before, "fault parameters with FAULT_INJECTION=off").await;
    // The plain scenarios still work.
    assert_eq!(get(&sys.app, "/api/fireTcc").await.0, 200);
}

/// fireTcc against a TransIn whose Try answers `try_reply` (None: nothing listens at its URL)
/// and a TransOut that succeeds at everything: the AP's answer, and the coordinator's record once
/// it reads `status`.
async fn fire_with_trans_in_try(try_reply: Option<Reply>, status: &str) -> ((u16, Value), Value) {
    let tm = spawn_coordinator().await;
    let trans_out = StubRm::start("127.0.0.1", vec![Reply::success()]).await;
    // Its Try answers `try_reply`, then its Cancel (an empty compensation) succeeds.
    let trans_in = match try_reply {
        Some(reply) => Some(StubRm::start("127.0.0.1", vec![reply, Reply::success()]).await),
        None => None,
    };
    let trans_in_url = trans_in
        .as_ref()
        .map_or_else(|| unreachable_url("/api"), |stub| stub.url("/api"));
    let app = spawn_app(
        &tm.dtm_url(),
        &trans_out.url("/api"),
        &trans_in_url,
        &unreachable_url("/api"),
    )
    .await;
    let fired = get(&app, "/api/fireTcc").await;
    let gid = fired.1["gid"].as_str().expect("a gid").to_owned();
    let http = reqwest::Client::new();
    let record = wait_for_status(
        &http,
        &tm.dtm_url(),
        &gid,
        status,
        std::time::Duration::from_secs(10),
    )
    .await;
    (fired, record)
}

#[tokio::test]
async fn a_try_answered_500_425_or_429_makes_the_ap_abort_and_both_branches_are_cancelled() {
    for (what, reply) in [
        ("500", Reply::status(500, r#"{"error":"boom"}"#)),
        (
            "425 ONGOING",
            Reply::status(425, r#"{"dtm_result":"ONGOING"}"#),
        ),
        ("429", Reply::status(429, r#"{"error":"rate_limited"}"#)),
    ] {
        let ((status, answer), record) = fire_with_trans_in_try(Some(reply), "failed").await;
        assert_eq!(
            (status, &answer["status"]),
            (409, &json!("failed")),
            "{what}: {answer}"
        );
        let reason = record["transaction"]["rollback_reason"]
            .as_str()
            .unwrap_or("");
        // "failed: ..." for an error, "answered ONGOING" for a 425 (as DTM's AP: anything
        // but a success from a Try aborts).
        assert!(reason.starts_with("branch 02 Try "), "{what}: {record:#}");
        assert!(all_succeeded(&record, "cancel"), "{what}: {record:#}");
    }
}

#[tokio::test]
async fn a_try_to_an_unreachable_rm_makes_the_ap_abort_and_its_cancel_is_retried() {
    let ((status, answer), record) = fire_with_trans_in_try(None, "aborting").await;
    // The AP tells what it knows: rolling back, the rollback not finished.
    assert_eq!(
        (status, &answer["status"]),
        (409, &json!("aborting")),
        "{answer}"
    );
    assert_eq!(
        record["transaction"]["rollback_reason"],
        "branch 02 Try failed: the branch could not be reached",
        "{record:#}"
    );
    // The Cancel of the unreachable branch goes first (last registered, first cancelled) and
    // is retried until that RM is back; nothing is given up.
    let cancel_02 = record["branches"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["branch_id"] == "02" && b["op"] == "cancel")
        .unwrap();
    assert_eq!(cancel_02["status"], "prepared", "{record:#}");
    assert!(
        cancel_02["last_result"]
            .as_str()
            .is_some_and(|r| r.contains("unreachable")),
        "{record:#}"
    );
}

#[tokio::test]
async fn fault_parameters_of_fire_tcc_rollback_replace_its_refusal_only_for_their_op() {
    let sys = spawn_system().await;

    // A trans_in_try parameter replaces the scenario's refused Try: this one only waits, and
    // the transaction commits.
    let (status, body) = sys
        .fire("/api/fireTccRollback?amount=7&trans_in_try=delay:10")
        .await;
    assert_eq!(status, 200, "{body}");
    let gid = body["gid"].as_str().unwrap().to_owned();
    let trans_in_data = &registered(&sys, &gid).await[2].3;
    assert_eq!(
        trans_in_data,
        &json!({"account_id": 1, "amount": 7, "fault": {"try": "delay:10"}})
    );

    // A fault for another op is added beside the refused Try.
    let (status, body) = sys
        .fire("/api/fireTccRollback?amount=7&trans_in_cancel=error:1&wait_result=false")
        .await;
    assert_eq!(status, 409, "{body}");
    let gid = body["gid"].as_str().unwrap().to_owned();
    let trans_in_data = &registered(&sys, &gid).await[2].3;
    assert_eq!(
        trans_in_data,
        &json!({"account_id": 1, "amount": 7, "fault": {"try": "failure", "cancel": "error:1"}})
    );
}
