//! The coordinator's admin API (`/api/admin`) through real HTTP on real Postgres:
//! the filtered, keyset-paged list, a transaction's detail, the operator actions "retry now" and
//! "force stop" (compare-and-set, 409 when the status forbids them), and the admin token that
//! guards the actions while the read-only routes stay open.

use std::time::{Duration, Instant};

use coordinator::admin::AdminToken;
use diesel::prelude::*;
use serde_json::{json, Value};
use test_support::spawn::{answer, spawn_coordinator_with, spawn_system, Spawned, System};
use test_support::TestDb;

/// `GET /api/admin/transactions<suffix>` on `coordinator`: (HTTP status, JSON).
async fn admin_get(http: &reqwest::Client, coordinator: &Spawned, suffix: &str) -> (u16, Value) {
    let url = coordinator.url(&format!("/api/admin/transactions{suffix}"));
    answer(http.get(&url), &format!("GET {url}")).await
}

/// `POST /api/admin/transactions/{gid}/{action}`, with `token` as a bearer token if given.
async fn admin_post(
    http: &reqwest::Client,
    coordinator: &Spawned,
    gid: &str,
    action: &str,
    token: Option<&str>,
) -> (u16, Value) {
    let url = coordinator.url(&format!("/api/admin/transactions/{gid}/{action}"));
    let mut request = http.post(&url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    answer(request, &format!("POST {url}")).await
}

/// The gids of a list answer, in the order given.
fn gids(page: &Value) -> Vec<String> {
    page["transactions"]
        .as_array()
        .unwrap_or_else(|| panic!("no transactions in {page}"))
        .iter()
        .map(|t| t["gid"].as_str().expect("gid").to_owned())
        .collect()
}

/// Fires `path_and_query` on the AP and returns the gid, asserting the HTTP status.
async fn fire(sys: &System, path_and_query: &str, status: u16) -> String {
    let (got, body) = sys.fire(path_and_query).await;
    assert_eq!(got, status, "{path_and_query}: {body}");
    body["gid"].as_str().expect("a gid").to_owned()
}

/// `prepare` of a fresh gid straight on the DTM API: a transaction left `prepared`.
async fn prepare(http: &reqwest::Client, coordinator: &Spawned) -> String {
    let gid = format!("admin-{}", uuid::Uuid::new_v4().simple());
    let (status, body) = answer(
        http.post(coordinator.url("/api/dtmsvr/prepare"))
            .json(&json!({ "gid": gid, "trans_type": "tcc" })),
        "prepare",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    gid
}

/// The op `op` of branch `branch_id` in a detail answer.
fn op<'a>(detail: &'a Value, branch_id: &str, op: &str) -> &'a Value {
    let branch = detail["branches"]
        .as_array()
        .expect("branches")
        .iter()
        .find(|b| b["branch_id"] == branch_id)
        .unwrap_or_else(|| panic!("no branch {branch_id} in {detail:#}"));
    branch["ops"]
        .as_array()
        .expect("ops")
        .iter()
        .find(|o| o["op"] == op)
        .unwrap_or_else(|| panic!("no {op} in branch {branch_id}: {detail:#}"))
}

/// Polls the detail of `gid` until `done` holds, or panics after `within` with the last one.
async fn wait_detail(
    sys: &System,
    gid: &str,
    within: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let (status, detail) = admin_get(&sys.http, &sys.coordinator, &format!("/{gid}")).await;
        assert_eq!(status, 200, "{detail}");
        if done(&detail) {
            return detail;
        }
        assert!(
            Instant::now() < deadline,
            "the detail of {gid} never got there within {within:?}: {detail:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Seconds from the answer's `now` to `at` (negative: in the past).
fn seconds_ahead(detail: &Value, at: &Value) -> f64 {
    let parse = |v: &Value| {
        chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("a time: {v}")))
            .expect("RFC 3339")
    };
    (parse(at) - parse(&detail["now"])).num_milliseconds() as f64 / 1000.0
}

#[tokio::test]
async fn the_list_filters_by_status_and_age_and_pages_newest_first() {
    let sys = spawn_system().await;
    let mut succeeded = Vec::new();
    for _ in 0..3 {
        succeeded.push(fire(&sys, "/api/fireTcc", 200).await);
    }
    let failed = fire(&sys, "/api/fireTccRollback", 409).await;
    // The oldest one was created two hours ago, as far as the ages are concerned.
    let mut conn = sys.coordinator.db.as_ref().expect("a database").connect();
    diesel::sql_query(
        "UPDATE trans_global SET create_time = create_time - interval '2 hours' WHERE gid = $1",
    )
    .bind::<diesel::sql_types::Text, _>(&succeeded[0])
    .execute(&mut conn)
    .expect("backdating");

    let (status, all) = admin_get(&sys.http, &sys.coordinator, "").await;
    assert_eq!(status, 200, "{all}");
    let newest_first = vec![
        failed.clone(),
        succeeded[2].clone(),
        succeeded[1].clone(),
        succeeded[0].clone(),
    ];
    assert_eq!(gids(&all), newest_first);
    assert_eq!(all["next_position"], "");
    assert!(all["now"].is_string(), "{all}");

    let (_, failed_only) = admin_get(&sys.http, &sys.coordinator, "?status=failed").await;
    assert_eq!(gids(&failed_only), vec![failed.clone()]);
    assert!(
        !failed_only["transactions"][0]["rollback_reason"]
            .as_str()
            .unwrap_or_default()
            .is_empty(),
        "{failed_only}"
    );
    let (_, unfinished) = admin_get(&sys.http, &sys.coordinator, "?status=unfinished").await;
    assert_eq!(gids(&unfinished), Vec::<String>::new());

    // Keyset paging: two pages of succeeded ones.
    let (_, first) = admin_get(&sys.http, &sys.coordinator, "?status=succeed&limit=2").await;
    assert_eq!(
        gids(&first),
        succeeded[1..].iter().rev().cloned().collect::<Vec<_>>()
    );
    let position = first["next_position"].as_str().expect("next_position");
    assert!(!position.is_empty(), "{first}");
    let (_, second) = admin_get(
        &sys.http,
        &sys.coordinator,
        &format!("?status=succeed&limit=2&position={position}"),
    )
    .await;
    assert_eq!(gids(&second), vec![succeeded[0].clone()]);
    assert_eq!(second["next_position"], "");

    // Ages are counted from create_time.
    let (_, old) = admin_get(&sys.http, &sys.coordinator, "?older_than_seconds=3600").await;
    assert_eq!(gids(&old), vec![succeeded[0].clone()]);
    let (_, recent) = admin_get(&sys.http, &sys.coordinator, "?newer_than_seconds=3600").await;
    assert_eq!(gids(&recent), newest_first[..3].to_vec());
    let (_, old_failed) = admin_get(
        &sys.http,
        &sys.coordinator,
        "?status=failed&older_than_seconds=3600",
    )
    .await;
    assert_eq!(gids(&old_failed), Vec::<String>::new());
    // Empty parameters (a form sending every field) mean "no filter".
    let (_, blank) = admin_get(
        &sys.http,
        &sys.coordinator,
        "?status=&older_than_seconds=&newer_than_seconds=&position=&limit=",
    )
    .await;
    assert_eq!(gids(&blank), newest_first);

    for (query, code) in [
        ("?status=done", "invalid_status"),
        ("?limit=0", "invalid_limit"),
        ("?limit=1001", "invalid_limit"),
        ("?older_than_seconds=-5", "invalid_age"),
        ("?newer_than_seconds=1.5", "invalid_age"),
        ("?position=abc", "invalid_position"),
    ] {
        let (status, body) = admin_get(&sys.http, &sys.coordinator, query).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some(code)),
            "{query}: {body}"
        );
    }
}

#[tokio::test]
async fn the_list_filters_by_gid_prefix_so_each_participant_sees_their_own() {
    let sys = spawn_system().await;
    let ana = fire(&sys, "/api/fireTcc?gid_prefix=ana", 200).await;
    let ana_b = fire(&sys, "/api/fireTccRollback?gid_prefix=ana", 409).await;
    let bob = fire(&sys, "/api/fireTcc?gid_prefix=bob", 200).await;
    assert!(
        ana.starts_with("ana-") && bob.starts_with("bob-"),
        "{ana} {bob}"
    );

    let (status, page) = admin_get(&sys.http, &sys.coordinator, "?gid_prefix=ana-").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(gids(&page), vec![ana_b, ana]);
    let (_, page) = admin_get(
        &sys.http,
        &sys.coordinator,
        "?gid_prefix=bob-&status=succeed",
    )
    .await;
    assert_eq!(gids(&page), vec![bob]);
    // `_` is a letter here, not LIKE's any-character.
    let (_, page) = admin_get(&sys.http, &sys.coordinator, "?gid_prefix=an_").await;
    assert_eq!(gids(&page), Vec::<String>::new());
    let (status, body) = admin_get(&sys.http, &sys.coordinator, "?gid_prefix=a%25").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_gid_prefix"))
    );
}

#[tokio::test]
async fn the_detail_shows_each_branch_op_with_its_attempts_and_the_rollback_reason() {
    let sys = spawn_system().await;
    let rolled_back = fire(&sys, "/api/fireTccRollback", 409).await;
    let (status, detail) = admin_get(&sys.http, &sys.coordinator, &format!("/{rolled_back}")).await;
    assert_eq!(status, 200, "{detail}");
    let trans = &detail["transaction"];
    assert_eq!(trans["gid"], rolled_back.as_str());
    assert_eq!(trans["status"], "failed");
    assert!(
        !trans["rollback_reason"]
            .as_str()
            .unwrap_or_default()
            .is_empty(),
        "{detail:#}"
    );
    assert!(trans["next_retry_time"].is_null() && trans["timeout_time"].is_null());
    assert_eq!(detail["branches"].as_array().map(Vec::len), Some(2));
    for branch_id in ["01", "02"] {
        let cancel = op(&detail, branch_id, "cancel");
        assert_eq!(cancel["status"], "succeed", "{detail:#}");
        assert_eq!(cancel["attempts"], 1);
        assert_eq!(cancel["last_result"], "success");
        assert!(cancel["next_attempt_time"].is_null());
        assert!(cancel["url"].as_str().unwrap().ends_with("Cancel"));
        let confirm = op(&detail, branch_id, "confirm");
        assert_eq!(
            (confirm["status"].as_str(), &confirm["attempts"]),
            (Some("prepared"), &json!(0))
        );
    }
    assert_eq!(
        detail["actions"],
        json!({"retry_now": false, "force_stop": false, "token_required": false})
    );
    assert_eq!(
        detail["links"]["diagram"],
        format!("/api/admin/transactions/{rolled_back}/diagram")
    );
    assert_eq!(
        detail["links"]["events"],
        format!("/api/admin/transactions/{rolled_back}/events")
    );

    let succeeded = fire(&sys, "/api/fireTcc", 200).await;
    let (_, detail) = admin_get(&sys.http, &sys.coordinator, &format!("/{succeeded}")).await;
    assert_eq!(detail["transaction"]["status"], "succeed");
    assert!(detail["transaction"]["finish_time"].is_string());
    for branch_id in ["01", "02"] {
        assert_eq!(
            op(&detail, branch_id, "confirm")["attempts"],
            1,
            "{detail:#}"
        );
        assert_eq!(op(&detail, branch_id, "cancel")["attempts"], 0);
    }

    let (status, body) = admin_get(&sys.http, &sys.coordinator, "/no-such-gid").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("not_found")),
        "{body}"
    );
    let (status, body) = admin_get(&sys.http, &sys.coordinator, "/bad%20gid%21").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_gid")),
        "{body}"
    );
}

#[tokio::test]
async fn retry_now_makes_a_backed_off_confirm_due_at_once_and_the_transaction_finishes() {
    let sys = spawn_system().await;
    let gid = fire(
        &sys,
        "/api/fireTcc?trans_in_confirm=error:1&retry_interval=60&wait_result=false",
        200,
    )
    .await;
    // TransIn's first Confirm fails: the next attempt is a minute away, the step doubled.
    let backed_off = wait_detail(&sys, &gid, Duration::from_secs(15), |d| {
        op(d, "02", "confirm")["attempts"] == 1 && d["transaction"]["owner"].is_null()
    })
    .await;
    let trans = &backed_off["transaction"];
    assert_eq!(trans["status"], "submitted", "{backed_off:#}");
    assert_eq!(trans["next_cron_interval"], 120);
    assert!(
        seconds_ahead(&backed_off, &trans["next_retry_time"]) > 50.0,
        "{backed_off:#}"
    );
    let pending = op(&backed_off, "02", "confirm");
    assert_eq!(pending["next_attempt_time"], trans["next_retry_time"]);
    assert!(pending["last_result"]
        .as_str()
        .unwrap()
        .starts_with("error"));
    assert_eq!(backed_off["actions"]["retry_now"], true);

    let (status, body) = admin_post(&sys.http, &sys.coordinator, &gid, "retry-now", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["action"].as_str(), body["from"].as_str()),
        (Some("retry-now"), Some("submitted"))
    );
    assert_eq!(
        body["transaction"]["next_cron_interval"], 60,
        "backoff step reset: {body:#}"
    );

    let record = sys
        .wait_for_status(&gid, "succeed", Duration::from_secs(10))
        .await;
    let confirm_in = test_support::spawn::ops(&record, "confirm")
        .into_iter()
        .find(|b| b["branch_id"] == "02")
        .expect("TransIn's Confirm");
    assert_eq!(confirm_in["attempts"], 2, "{record:#}");

    // Nothing left to retry: a final transaction, a prepared one, an unknown gid.
    let (status, body) = admin_post(&sys.http, &sys.coordinator, &gid, "retry-now", None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("conflict")),
        "{body}"
    );
    let prepared = prepare(&sys.http, &sys.coordinator).await;
    let (status, body) =
        admin_post(&sys.http, &sys.coordinator, &prepared, "retry-now", None).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("prepared"),
        "{body}"
    );
    let (status, _) = admin_post(
        &sys.http,
        &sys.coordinator,
        "no-such-gid",
        "retry-now",
        None,
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn force_stop_is_refused_while_a_pass_holds_the_lease_and_changes_nothing() {
    let sys = spawn_system().await;
    // Answered at submit; the pass submit claimed then waits 2 s in TransIn's Confirm. A pass
    // records its calls only when it ends, so a stop now could not stop them.
    let gid = fire(
        &sys,
        "/api/fireTcc?trans_in_confirm=delay:2000&wait_result=false",
        200,
    )
    .await;
    let (status, body) = admin_post(&sys.http, &sys.coordinator, &gid, "force-stop", None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("conflict")),
        "{body}"
    );
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("has a second-phase pass running (lease held until"),
        "{body}"
    );

    // The pass finishes as if nothing had been asked.
    let detail = wait_detail(&sys, &gid, Duration::from_secs(15), |d| {
        d["transaction"]["status"] == "succeed"
    })
    .await;
    assert!(
        detail["transaction"]["rollback_reason"].is_null(),
        "{detail:#}"
    );
    let account = sys.account(&sys.trans_in, 1).await;
    assert_eq!(account["pending_in"], 0, "{account}");
}

#[tokio::test]
async fn force_stop_fails_an_unfinished_transaction_without_calling_its_branches() {
    let sys = spawn_system().await;
    let gid = fire(
        &sys,
        "/api/fireTcc?trans_in_confirm=error:1&retry_interval=60&wait_result=false",
        200,
    )
    .await;
    wait_detail(&sys, &gid, Duration::from_secs(15), |d| {
        op(d, "02", "confirm")["attempts"] == 1 && d["transaction"]["owner"].is_null()
    })
    .await;

    let (status, body) = admin_post(&sys.http, &sys.coordinator, &gid, "force-stop", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["from"], "submitted");
    assert!(
        body["warning"].as_str().unwrap().contains("reservations"),
        "{body}"
    );

    let (_, detail) = admin_get(&sys.http, &sys.coordinator, &format!("/{gid}")).await;
    let trans = &detail["transaction"];
    assert_eq!(trans["status"], "failed", "{detail:#}");
    assert!(trans["finish_time"].is_string() && trans["owner"].is_null());
    assert_eq!(
        trans["rollback_reason"],
        "force-stopped by an operator (was submitted)"
    );
    assert!(trans["next_retry_time"].is_null());
    // Nothing was called: TransIn's Confirm stays failed once and pending, no Cancel ran, and
    // bank B still holds the pending credit, as the warning says.
    let confirm_in = op(&detail, "02", "confirm");
    assert_eq!(
        (confirm_in["status"].as_str(), &confirm_in["attempts"]),
        (Some("prepared"), &json!(1))
    );
    for branch_id in ["01", "02"] {
        assert_eq!(op(&detail, branch_id, "cancel")["attempts"], 0);
    }
    let account = sys.account(&sys.trans_in, 1).await;
    assert_eq!(account["pending_in"], 30, "{account}");

    // Already final: refused, and so is any retry.
    let (status, body) = admin_post(&sys.http, &sys.coordinator, &gid, "force-stop", None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("conflict")),
        "{body}"
    );
    let (status, _) = admin_post(&sys.http, &sys.coordinator, &gid, "retry-now", None).await;
    assert_eq!(status, 409);

    // A prepared transaction (its AP went quiet) can be stopped too.
    let prepared = prepare(&sys.http, &sys.coordinator).await;
    let (status, body) =
        admin_post(&sys.http, &sys.coordinator, &prepared, "force-stop", None).await;
    assert_eq!(
        (status, body["from"].as_str()),
        (200, Some("prepared")),
        "{body}"
    );
    assert_eq!(body["transaction"]["status"], "failed");
    let (status, _) = admin_post(
        &sys.http,
        &sys.coordinator,
        "no-such-gid",
        "force-stop",
        None,
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn with_an_admin_token_the_actions_need_it_and_the_views_do_not() {
    let coordinator = spawn_coordinator_with(TestDb::create("coordinator"), |settings| {
        settings.admin_token = Some(AdminToken::new("s3cret-admin-token"));
    })
    .await;
    let http = reqwest::Client::new();
    let gid = prepare(&http, &coordinator).await;

    for token in [None, Some("wrong-token"), Some("")] {
        let url = coordinator.url(&format!("/api/admin/transactions/{gid}/force-stop"));
        let mut request = http.post(&url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("an answer");
        assert_eq!(response.status().as_u16(), 401, "token {token:?}");
        assert!(
            response.headers().contains_key("www-authenticate"),
            "{:?}",
            response.headers()
        );
        let body: Value = response.json().await.expect("JSON");
        assert_eq!(body["error"], "unauthorized", "{body}");
    }
    // Authorization comes first: without the token, not even a gid's existence is told.
    let (status, _) = admin_post(&http, &coordinator, "no-such-gid", "retry-now", None).await;
    assert_eq!(status, 401);

    // Reading needs no token.
    let (status, list) = admin_get(&http, &coordinator, "").await;
    assert_eq!((status, gids(&list)), (200, vec![gid.clone()]));
    let (status, detail) = admin_get(&http, &coordinator, &format!("/{gid}")).await;
    assert_eq!(status, 200, "{detail}");
    assert_eq!(detail["actions"]["token_required"], true);
    assert_eq!(
        detail["transaction"]["status"], "prepared",
        "nothing was changed"
    );

    // A page on another origin cannot use an operator's browser, token or not.
    let (status, body) = answer(
        http.post(coordinator.url(&format!("/api/admin/transactions/{gid}/force-stop")))
            .bearer_auth("s3cret-admin-token")
            .header("Origin", "http://evil.example"),
        "cross-origin force-stop",
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("cross_origin")),
        "{body}"
    );

    let token = Some("s3cret-admin-token");
    let (status, body) = admin_post(&http, &coordinator, &gid, "retry-now", token).await;
    assert_eq!(
        status, 409,
        "authorized, but a prepared one cannot be retried: {body}"
    );
    let (status, body) = admin_post(&http, &coordinator, &gid, "force-stop", token).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["transaction"]["status"], "failed");
}

#[tokio::test]
async fn the_page_and_its_assets_are_served_with_their_types_and_cache_headers() {
    let coordinator = spawn_coordinator_with(TestDb::create("coordinator"), |_| {}).await;
    let http = reqwest::Client::new();
    let get = |path: &str| http.get(coordinator.url(path)).send();

    for path in ["/admin", "/admin/"] {
        let page = get(path).await.expect("the page answers");
        assert_eq!(page.status().as_u16(), 200, "{path}");
        let headers = page.headers().clone();
        assert_eq!(headers["content-type"], "text/html; charset=utf-8");
        assert_eq!(headers["cache-control"], "no-cache");
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("script-src 'self';"), "{csp}");
        let html = page.text().await.unwrap();
        assert!(
            html.contains("/admin/assets/vendor/mermaid.min.js"),
            "{html}"
        );
    }

    for (path, content_type, cache) in [
        ("admin.js", "text/javascript; charset=utf-8", "no-cache"),
        ("admin.css", "text/css; charset=utf-8", "no-cache"),
        (
            "vendor/mermaid.min.js",
            "text/javascript; charset=utf-8",
            "public, max-age=86400",
        ),
        (
            "vendor/mermaid.LICENSE",
            "text/plain; charset=utf-8",
            "public, max-age=86400",
        ),
    ] {
        let url = format!("/admin/assets/{path}");
        let response = get(&url).await.expect("the asset answers");
        assert_eq!(response.status().as_u16(), 200, "{url}");
        let headers = response.headers().clone();
        assert_eq!(headers["content-type"], content_type, "{url}");
        assert_eq!(headers["cache-control"], cache, "{url}");
        assert_eq!(headers["x-content-type-options"], "nosniff", "{url}");
        assert!(!response.bytes().await.unwrap().is_empty(), "{url}");
        // A browser revalidating with the ETag gets a 304 and no body.
        let etag = headers["etag"].clone();
        let again = http
            .get(coordinator.url(&url))
            .header("If-None-Match", etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status().as_u16(), 304, "{url}");
    }

    let (status, body) = answer(
        http.get(coordinator.url("/admin/assets/no-such-file.js")),
        "an unknown asset",
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("not_found")),
        "{body}"
    );
}
