//! The coordinator's API rules (docs/PROTOCOL.md, docs/ARCHITECTURE.md#state-machine), through
//! real HTTP on a real database.

use std::time::Duration;

use serde_json::{json, Value};
use test_support::spawn::{get_json, post_dtm, spawn_bank, spawn_coordinator, wait_for_status};

fn branch(gid: &str, branch_id: &str, base: &str) -> Value {
    json!({
        "gid": gid, "trans_type": "tcc", "branch_id": branch_id, "status": "prepared",
        "data": r#"{"account_id":1,"amount":30}"#,
        "confirm": format!("{base}/TransOutConfirm"), "cancel": format!("{base}/TransOutCancel"),
    })
}

#[tokio::test]
async fn submit_of_an_unknown_gid_is_refused_with_409() {
    let tm = spawn_coordinator().await;
    let http = reqwest::Client::new();

    let (status, body) = post_dtm(
        &http,
        &tm,
        "submit",
        json!({"gid": "never-prepared", "trans_type": "tcc"}),
    )
    .await;

    assert_eq!(status, 409);
    assert_eq!(body["dtm_result"], "FAILURE");
    let (status, _) = post_dtm(
        &http,
        &tm,
        "abort",
        json!({"gid": "never-prepared", "trans_type": "tcc"}),
    )
    .await;
    assert_eq!(status, 409);
    let all = get_json(&http, &format!("{}/all", tm.dtm_url())).await;
    assert_eq!(
        all["transactions"],
        json!([]),
        "DTM would have created an empty transaction"
    );
}

#[tokio::test]
async fn prepare_is_idempotent_while_prepared_and_refused_afterwards() {
    let tm = spawn_coordinator().await;
    let http = reqwest::Client::new();
    let prepare = json!({"gid": "g-prep", "trans_type": "tcc"});

    assert_eq!(
        post_dtm(&http, &tm, "prepare", prepare.clone()).await.0,
        200
    );
    assert_eq!(
        post_dtm(&http, &tm, "prepare", prepare.clone()).await.0,
        200
    );
    assert_eq!(post_dtm(&http, &tm, "submit", prepare.clone()).await.0, 200);
    let (status, body) = post_dtm(&http, &tm, "prepare", prepare.clone()).await;

    assert_eq!(status, 409, "{body}");
    assert_eq!(body["dtm_result"], "FAILURE");
    // Resubmitting succeeds and changes nothing; aborting a submitted transaction is refused.
    assert_eq!(post_dtm(&http, &tm, "submit", prepare.clone()).await.0, 200);
    assert_eq!(post_dtm(&http, &tm, "abort", prepare).await.0, 409);
    wait_for_status(
        &http,
        &tm.dtm_url(),
        "g-prep",
        "succeed",
        Duration::from_secs(5),
    )
    .await;
}

#[tokio::test]
async fn branches_register_only_while_prepared_and_only_once_with_the_same_data() {
    let tm = spawn_coordinator().await;
    let http = reqwest::Client::new();
    let base = "http://127.0.0.1:9/api";
    assert_eq!(
        post_dtm(&http, &tm, "prepare", json!({"gid": "g-reg"}))
            .await
            .0,
        200
    );

    assert_eq!(
        post_dtm(&http, &tm, "registerBranch", branch("g-reg", "01", base))
            .await
            .0,
        200
    );
    assert_eq!(
        post_dtm(&http, &tm, "registerTccBranch", branch("g-reg", "01", base))
            .await
            .0,
        200
    );
    let mut other = branch("g-reg", "01", base);
    other["data"] = json!(r#"{"account_id":2,"amount":30}"#);
    assert_eq!(post_dtm(&http, &tm, "registerBranch", other).await.0, 409);
    assert_eq!(
        post_dtm(
            &http,
            &tm,
            "registerBranch",
            branch("g-unknown", "01", base)
        )
        .await
        .0,
        409
    );
    assert_eq!(
        post_dtm(&http, &tm, "abort", json!({"gid": "g-reg"}))
            .await
            .0,
        200
    );
    assert_eq!(
        post_dtm(&http, &tm, "registerBranch", branch("g-reg", "02", base))
            .await
            .0,
        409
    );

    let record = get_json(&http, &format!("{}/query?gid=g-reg", tm.dtm_url())).await;
    assert_eq!(
        record["branches"].as_array().unwrap().len(),
        2,
        "one confirm, one cancel: {record:#}"
    );
    assert_eq!(record["transaction"]["status"], "aborting");
}

#[tokio::test]
async fn malformed_requests_are_400s_that_name_the_problem_and_store_nothing() {
    let tm = spawn_coordinator().await;
    let http = reqwest::Client::new();
    let cases = [
        ("prepare", json!({"gid": "has space"}), "invalid_gid"),
        (
            "prepare",
            json!({"gid": "g1", "trans_type": "saga"}),
            "unsupported_trans_type",
        ),
        (
            "prepare",
            json!({"gid": "g1", "timeout_to_fail": -3}),
            "invalid_option",
        ),
        ("prepare", json!({"trans_type": "tcc"}), "invalid_json"),
        (
            "registerBranch",
            json!({"gid": "g1", "branch_id": "01", "confirm": "ftp://x/y", "cancel": "http://x/y"}),
            "invalid_url",
        ),
        (
            "registerBranch",
            json!({"gid": "g1", "branch_id": "0 1", "confirm": "http://x/y", "cancel": "http://x/y"}),
            "invalid_branch_id",
        ),
    ];
    for (call, body, code) in cases {
        let (status, answer) = post_dtm(&http, &tm, call, body.clone()).await;
        assert_eq!(status, 400, "{call} {body}: {answer}");
        assert_eq!(answer["error"], code, "{call} {body}: {answer}");
    }
    let all = get_json(&http, &format!("{}/all", tm.dtm_url())).await;
    assert_eq!(all["transactions"], json!([]));
    let unknown = http
        .get(format!("{}/query?gid=nope", tm.dtm_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status().as_u16(), 404);
    // A gid-specific code, which an RM can tell from the route-404 of a wrong DTM_URL.
    let body: Value = unknown.json().await.unwrap();
    assert_eq!(body["error"], "unknown_gid", "{body}");
}

#[tokio::test]
async fn a_prepared_transaction_past_its_timeout_is_aborted_and_its_branches_cancelled() {
    let tm = spawn_coordinator().await;
    let bank = spawn_bank(bank::Role::TransOut).await;
    let http = reqwest::Client::new();
    let base = bank.url("/api");
    assert_eq!(
        post_dtm(
            &http,
            &tm,
            "prepare",
            json!({"gid": "g-late", "timeout_to_fail": 1})
        )
        .await
        .0,
        200
    );
    assert_eq!(
        post_dtm(&http, &tm, "registerBranch", branch("g-late", "01", &base))
            .await
            .0,
        200
    );
    // The AP "crashes" here: it never calls Try, submit or abort.

    let record = wait_for_status(
        &http,
        &tm.dtm_url(),
        "g-late",
        "failed",
        Duration::from_secs(10),
    )
    .await;

    assert_eq!(
        record["transaction"]["rollback_reason"],
        "Timeout after 1 seconds"
    );
    let cancel = record["branches"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["op"] == "cancel")
        .unwrap();
    assert_eq!(cancel["status"], "succeed");
    // The Try never ran, so the Cancel was an empty compensation: nothing changed.
    let account = get_json(&http, &bank.url("/api/accounts/1")).await;
    assert_eq!(account["trading_balance"], 0);
}

#[tokio::test]
async fn all_pages_newest_first_with_a_keyset_position() {
    let tm = spawn_coordinator().await;
    let http = reqwest::Client::new();
    for i in 0..5 {
        assert_eq!(
            post_dtm(&http, &tm, "prepare", json!({"gid": format!("g-{i}")}))
                .await
                .0,
            200
        );
    }
    let url = |q: &str| format!("{}/all?{q}", tm.dtm_url());

    let first = get_json(&http, &url("limit=2")).await;
    let gids: Vec<_> = first["transactions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["gid"].clone())
        .collect();
    assert_eq!(gids, vec![json!("g-4"), json!("g-3")]);
    let position = first["next_position"].as_str().unwrap().to_owned();
    let second = get_json(&http, &url(&format!("limit=2&position={position}"))).await;
    assert_eq!(second["transactions"][0]["gid"], "g-2");
    let rest = get_json(
        &http,
        &url(&format!("limit=10&position={position}&status=prepared")),
    )
    .await;
    assert_eq!(rest["transactions"].as_array().unwrap().len(), 3);
    assert_eq!(rest["next_position"], "");
}

#[tokio::test]
async fn all_filters_by_gid_status_type_and_create_time_as_dtm_does_and_refuses_unknown_parameters()
{
    let tm = spawn_coordinator().await;
    let http = reqwest::Client::new();
    for gid in ["g-a", "g-b", "g-c"] {
        assert_eq!(
            post_dtm(&http, &tm, "prepare", json!({"gid": gid})).await.0,
            200
        );
    }
    assert_eq!(
        post_dtm(
            &http,
            &tm,
            "abort",
            json!({"gid": "g-b", "wait_result": true})
        )
        .await
        .0,
        200
    );
    let gids = |page: &Value| -> Vec<String> {
        page["transactions"]
            .as_array()
            .unwrap_or_else(|| panic!("{page}"))
            .iter()
            .map(|t| t["gid"].as_str().unwrap().to_owned())
            .collect()
    };
    let all = |q: String| {
        let http = http.clone();
        let url = format!("{}/all?{q}", tm.dtm_url());
        async move {
            let response = http
                .get(&url)
                .send()
                .await
                .expect("the coordinator answers");
            let status = response.status().as_u16();
            (
                status,
                response.json::<Value>().await.expect("a JSON answer"),
            )
        }
    };

    assert_eq!(gids(&all("gid=g-b".into()).await.1), ["g-b"]);
    assert_eq!(
        gids(&all("gid=g-none".into()).await.1),
        Vec::<String>::new()
    );
    assert_eq!(gids(&all("status=failed".into()).await.1), ["g-b"]);
    assert_eq!(
        gids(&all("transType=tcc".into()).await.1),
        ["g-c", "g-b", "g-a"]
    );
    assert_eq!(
        gids(&all("transType=saga".into()).await.1),
        Vec::<String>::new()
    );
    let now_ms = chrono::Utc::now().timestamp_millis();
    assert_eq!(
        gids(&all(format!("createTimeStart={}", now_ms + 60_000)).await.1),
        Vec::<String>::new()
    );
    assert_eq!(
        gids(&all(format!("createTimeEnd={}", now_ms - 3_600_000)).await.1),
        Vec::<String>::new()
    );
    assert_eq!(
        gids(
            &all(format!(
                "createTimeStart={}&createTimeEnd={}&status=prepared",
                now_ms - 3_600_000,
                now_ms + 60_000
            ))
            .await
            .1
        ),
        ["g-c", "g-a"]
    );

    let (status, body) = all("trans_type=tcc".into()).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "invalid_query");
    assert!(
        body["message"].as_str().unwrap().contains("trans_type"),
        "{body}"
    );
    let (status, body) = all("createTimeStart=yesterday".into()).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "invalid_time");
}

#[tokio::test]
async fn a_gid_containing_failure_or_ongoing_is_refused_since_success_answers_carry_it() {
    let tm = spawn_coordinator().await;
    let http = reqwest::Client::new();
    for gid in ["order-FAILURE-7", "ONGOING"] {
        let (status, body) = post_dtm(&http, &tm, "prepare", json!({"gid": gid})).await;

        assert_eq!(status, 400, "{gid}: {body}");
        assert_eq!(body["error"], "invalid_gid");
    }
    let all = get_json(&http, &format!("{}/all", tm.dtm_url())).await;
    assert_eq!(all["transactions"], json!([]));
}

#[tokio::test]
async fn branch_urls_off_the_host_allowlist_are_refused_so_the_tm_calls_only_known_hosts() {
    let tm = spawn_coordinator().await;
    let http = reqwest::Client::new();
    assert_eq!(
        post_dtm(&http, &tm, "prepare", json!({"gid": "g-ssrf"}))
            .await
            .0,
        200
    );

    for base in [
        "http://evil.example/api",
        "http://169.254.169.254/latest",
        "http://10.0.0.7:8081/api",
    ] {
        let (status, answer) =
            post_dtm(&http, &tm, "registerBranch", branch("g-ssrf", "01", base)).await;
        assert_eq!(status, 400, "{base}: {answer}");
        assert_eq!(answer["error"], "url_not_allowed", "{base}: {answer}");
    }
    let record = get_json(&http, &format!("{}/query?gid=g-ssrf", tm.dtm_url())).await;
    assert_eq!(
        record["branches"],
        json!([]),
        "nothing registered: {record:#}"
    );

    // The list is configuration: a deployment names its own RMs.
    let custom = test_support::spawn::spawn_coordinator_with(
        test_support::TestDb::create("coordinator"),
        |s| {
            s.branch_hosts = coordinator::configuration::BranchHosts::parse("bank-a.internal");
        },
    )
    .await;
    assert_eq!(
        post_dtm(&http, &custom, "prepare", json!({"gid": "g-custom"}))
            .await
            .0,
        200
    );
    let allowed = post_dtm(
        &http,
        &custom,
        "registerBranch",
        branch("g-custom", "01", "http://bank-a.internal:8081/api"),
    )
    .await;
    assert_eq!(allowed.0, 200, "{}", allowed.1);
    let refused = post_dtm(
        &http,
        &custom,
        "registerBranch",
        branch("g-custom", "02", "http://127.0.0.1:8081/api"),
    )
    .await;
    assert_eq!(refused.0, 400, "{}", refused.1);
}

#[tokio::test]
async fn a_restarted_replica_releases_only_its_own_leases_even_when_another_id_extends_it() {
    use diesel::RunQueryDsl;
    let tm = spawn_coordinator().await;
    let http = reqwest::Client::new();
    for gid in ["g-mine", "g-other"] {
        assert_eq!(
            post_dtm(&http, &tm, "prepare", json!({"gid": gid})).await.0,
            200
        );
        assert_eq!(
            post_dtm(&http, &tm, "abort", json!({"gid": gid})).await.0,
            200
        );
    }
    let mut conn = tm
        .db
        .as_ref()
        .expect("the coordinator's database")
        .connect();
    let hex = "0123456789abcdef0123456789abcdef";
    diesel::sql_query(format!(
        "UPDATE trans_global SET status = 'aborting', finish_time = NULL, \
             lease_expire = now() + interval '1 hour', \
             owner = CASE gid WHEN 'g-mine' THEN 'a:{hex}' ELSE 'a:b:{hex}:7' END"
    ))
    .execute(&mut conn)
    .unwrap();

    let released = coordinator::store::release_own_leases(&mut conn, "a").unwrap();

    assert_eq!(released, 1, "only replica a's lease, not replica a:b's");
    let record = get_json(&http, &format!("{}/query?gid=g-other", tm.dtm_url())).await;
    assert_eq!(record["transaction"]["owner"], format!("a:b:{hex}:7"));
}

/// An RM whose every call succeeds after `delay`: `200 {"dtm_result":"SUCCESS"}`. Returns its
/// base URL and the paths it was called on, in order of arrival.
async fn slow_rm(delay: Duration) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
    let calls = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = web::Data::new(std::sync::Arc::clone(&calls));
    let server = HttpServer::new(move || {
        App::new().app_data(log.clone()).default_service(web::to(
            move |req: HttpRequest,
                  log: web::Data<std::sync::Arc<std::sync::Mutex<Vec<String>>>>| async move {
                log.lock().unwrap().push(req.path().to_owned());
                tokio::time::sleep(delay).await;
                HttpResponse::Ok().json(json!({"dtm_result": "SUCCESS"}))
            },
        ))
    })
    .workers(1)
    .bind(("127.0.0.1", 0))
    .expect("a free port");
    let base = format!("http://{}", server.addrs()[0]);
    tokio::spawn(server.run());
    (base, calls)
}

#[tokio::test]
async fn a_pass_that_lost_its_lease_during_a_call_records_nothing_and_calls_no_further_branch() {
    // LEASE_SECONDS at its least: a lease lasts request_timeout + 5 s, just what one call needs,
    // so the pass renews it before each call after the first.
    let tm = test_support::spawn::spawn_coordinator_with(
        test_support::TestDb::create("coordinator"),
        |s| s.lease = Duration::from_secs(1),
    )
    .await;
    let http = reqwest::Client::new();
    let (rm, calls) = slow_rm(Duration::from_millis(1500)).await;
    let gid = "g-lease-lost";
    let (status, body) = post_dtm(
        &http,
        &tm,
        "prepare",
        json!({"gid": gid, "trans_type": "tcc", "request_timeout": 3}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    for branch_id in ["01", "02"] {
        let register = json!({
            "gid": gid, "trans_type": "tcc", "branch_id": branch_id, "data": "{}",
            "confirm": format!("{rm}/confirm{branch_id}"),
            "cancel": format!("{rm}/cancel{branch_id}"),
        });
        let (status, body) = post_dtm(&http, &tm, "registerBranch", register).await;
        assert_eq!(status, 200, "{body}");
    }

    let (status, body) = post_dtm(&http, &tm, "submit", json!({"gid": gid})).await;
    assert_eq!(status, 200, "{body}");
    // The submit's pass is in its first call (the last registered branch first); its lease is
    // taken from it, as when its replica is presumed dead, and the worker claims the transaction.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while calls.lock().unwrap().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no Confirm was sent"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut conn = tm
        .db
        .as_ref()
        .expect("the coordinator's database")
        .connect();
    diesel::RunQueryDsl::execute(
        diesel::sql_query(format!(
            "UPDATE trans_global SET lease_expire = now() - interval '1 second' WHERE gid = '{gid}'"
        )),
        &mut conn,
    )
    .unwrap();

    let record = wait_for_status(
        &http,
        &tm.dtm_url(),
        gid,
        "succeed",
        Duration::from_secs(15),
    )
    .await;
    // Past the end of the first pass's call: it had its chance to go on.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(
        *calls.lock().unwrap(),
        ["/confirm02", "/confirm02", "/confirm01"],
        "the first pass stopped after its call; the worker's pass called both: {record}"
    );
    let events = get_json(
        &http,
        &tm.url(&format!("/api/admin/transactions/{gid}/events")),
    )
    .await;
    let count = |kind: &str, branch_id: Option<&str>| {
        events["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == kind && branch_id.is_none_or(|b| e["branch_id"] == b))
            .count()
    };
    assert_eq!(count("succeed", None), 1, "finished exactly once: {events}");
    assert_eq!(
        count("branch_called", Some("02")),
        1,
        "only the pass holding the lease recorded its call: {events}"
    );
    assert_eq!(count("branch_called", Some("01")), 1, "{events}");
    for branch_id in ["01", "02"] {
        assert_eq!(confirm_attempts(&record, branch_id), 1, "{record}");
    }
}

/// `attempts` of the Confirm of `branch_id` in a `query` answer.
fn confirm_attempts(record: &Value, branch_id: &str) -> i64 {
    record["branches"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["branch_id"] == branch_id && b["op"] == "confirm")
        .and_then(|b| b["attempts"].as_i64())
        .unwrap_or_else(|| panic!("no confirm of {branch_id}: {record}"))
}
