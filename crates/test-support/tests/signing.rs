//! Authenticated branch calls (docs/PROTOCOL.md, "Signed branch calls"): with
//! `BRANCH_SIGNING_SECRET` set, the coordinator signs every Confirm and Cancel, the AP puts the
//! gid token into `branch_headers`, and the RMs refuse Confirm and Cancel calls carrying neither
//! a valid signature nor the gid's token with 401, doing nothing. A Try is applied only with its
//! gid's token, or (without one) when the RM's coordinator reports the gid `prepared` with the
//! branch registered and the Try's body is the data registered for it: the Try gate. Real HTTP,
//! real Postgres.

use bank::Role;
use serde_json::{json, Value};
use service_kit::coordinator_check::TryVerification;
use tcc::signing::{self, SigningSecret, GID_TOKEN_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use test_support::metrics::scrape;
use test_support::rm::{assert_error, assert_success, Rm};
use test_support::spawn::{
    answer, spawn_app_with, spawn_bank_with, spawn_coordinator_with, spawn_stock_with,
    spawn_system, test_gid_token, Spawned, System, TEST_SEED_BALANCE,
};
use test_support::stub::{Reply, StubRm};
use test_support::TestDb;

/// The secret every test binary shares (the RMs' here, and the one [`Rm::call`]'s tokens use).
const SECRET: &str = test_support::spawn::TEST_SIGNING_SECRET;
const CONFIRM_QUERY: &str = "gid=signed-1&trans_type=tcc&branch_id=01&op=confirm";

fn secret() -> Option<SigningSecret> {
    Some(SigningSecret::new(SECRET))
}

fn transfer(amount: i64) -> Value {
    json!({ "account_id": 1, "amount": amount })
}

/// trans-out with the test secret, on a fresh database.
async fn signed_bank() -> Rm {
    let db = TestDb::create(Role::TransOut.database());
    Rm::from(
        spawn_bank_with(Role::TransOut, db, |s| {
            s.common.branch_signing_secret = secret()
        })
        .await,
    )
}

/// `POST /api/{endpoint}?{query}` with `body`, carrying `headers` (timestamp, signature) if any.
async fn send(
    rm: &Rm,
    endpoint: &str,
    query: &str,
    body: &str,
    headers: Option<(String, String)>,
) -> (u16, Value) {
    let path = format!("/api/{endpoint}?{query}");
    let mut request = rm
        .http
        .post(rm.spawned.url(&path))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some((timestamp, signature)) = headers {
        request = request
            .header(TIMESTAMP_HEADER, timestamp)
            .header(SIGNATURE_HEADER, signature);
    }
    answer(request, &format!("POST {path}")).await
}

/// The headers `secret` gives `POST /api/{endpoint}?{query}` with `body` at `now`.
fn signed(
    secret: &str,
    endpoint: &str,
    query: &str,
    body: &str,
    now: u64,
) -> Option<(String, String)> {
    let target = format!("/api/{endpoint}?{query}");
    Some(signing::sign(
        &SigningSecret::new(secret),
        "POST",
        &target,
        body.as_bytes(),
        now,
    ))
}

async fn balances(rm: &Rm) -> (i64, i64) {
    let a = rm.view("/api/accounts/1").await;
    (
        a["balance"].as_i64().unwrap(),
        a["trading_balance"].as_i64().unwrap(),
    )
}

/// A Try of 30 from account 1 with the gid's token (as the AP sends it), then the state it left.
async fn tried(rm: &Rm) -> ((i64, i64), i64) {
    let tried = rm
        .call("TransOutTry", "signed-1", "try", &transfer(30))
        .await;
    assert_success(&tried);
    (balances(rm).await, rm.barrier_rows())
}

/// The five binaries with `coordinator_secret` on the coordinator, `ap_secret` on the AP and the
/// test secret on the RMs, each RM trusting the coordinator (`DTM_URL`).
async fn system_with_secrets(
    coordinator_secret: Option<SigningSecret>,
    ap_secret: Option<SigningSecret>,
) -> System {
    let coordinator = spawn_coordinator_with(TestDb::create("coordinator"), |s| {
        s.branch_signing_secret = coordinator_secret
    })
    .await;
    let dtm_url = coordinator.dtm_url();
    let rm = |common: &mut service_kit::settings::RmCommonSettings| {
        common.branch_signing_secret = secret();
        common.dtm_url = dtm_url.clone();
    };
    let trans_out = spawn_bank_with(
        Role::TransOut,
        TestDb::create(Role::TransOut.database()),
        |s| rm(&mut s.common),
    )
    .await;
    let trans_in = spawn_bank_with(
        Role::TransIn,
        TestDb::create(Role::TransIn.database()),
        |s| rm(&mut s.common),
    )
    .await;
    let stock = spawn_stock_with(TestDb::create("stock"), |s| rm(&mut s.common)).await;
    let app = spawn_app_with(app::configuration::Settings {
        dtm_url: coordinator.dtm_url(),
        trans_out_url: trans_out.url("/api"),
        trans_in_url: trans_in.url("/api"),
        stock_url: stock.url("/api"),
        branch_signing_secret: ap_secret,
        ..app::configuration::Settings::default()
    })
    .await;
    System {
        coordinator,
        trans_out,
        trans_in,
        stock,
        app,
        http: reqwest::Client::new(),
    }
}

#[tokio::test]
async fn a_fire_tcc_through_a_signing_coordinator_and_verifying_rms_succeeds() {
    // An AP without the secret, as a DTM client: its Trys pass the coordinator check, and the
    // coordinator's signatures authorize the second phase.
    let sys = system_with_secrets(secret(), None).await;

    let (status, answer) = sys.fire("/api/fireTcc?amount=30&from=1&to=2").await;

    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "succeed", "{answer}");
    assert_eq!(
        sys.balances(&sys.trans_out, 1).await,
        (TEST_SEED_BALANCE - 30, 0)
    );
    assert_eq!(
        sys.balances(&sys.trans_in, 2).await,
        (TEST_SEED_BALANCE + 30, 0)
    );
}

#[tokio::test]
async fn with_try_verification_token_unauthenticated_calls_are_refused_with_401_unasked() {
    // Its coordinator would vouch for anything of branch 01 (dtmrs' flat answer, `submitted`),
    // but TRY_VERIFICATION=token never asks it.
    let coordinator = StubRm::start(
        "127.0.0.1",
        vec![Reply::status(
            200,
            r#"{"gid": "signed-1", "status": "submitted", "branches": [{"branch_id": "01"}]}"#,
        )],
    )
    .await;
    let db = TestDb::create(Role::TransOut.database());
    let bank = Rm::from(
        spawn_bank_with(Role::TransOut, db, |s| {
            s.common.branch_signing_secret = secret();
            s.common.dtm_url = coordinator.url("/api/dtmsvr");
            s.common.try_verification = TryVerification::Token;
        })
        .await,
    );
    let body = transfer(30).to_string();

    let untokened = send_with_token(&bank.spawned, "TransOutTry", TRY_QUERY, &body, None).await;
    assert_error(&untokened, 401, "missing_gid_token");
    assert_eq!(balances(&bank).await, (TEST_SEED_BALANCE, 0));
    // No Try yet: an accepted Cancel would write the barrier's empty-compensation rows.
    let cancel = send(
        &bank,
        "TransOutCancel",
        "gid=signed-0&trans_type=tcc&branch_id=01&op=cancel",
        &body,
        None,
    )
    .await;
    assert_error(&cancel, 401, "missing_signature");
    assert_eq!(bank.barrier_rows(), 0);

    let (after_try, rows) = tried(&bank).await;
    assert_eq!(after_try, (TEST_SEED_BALANCE, 30));
    let confirm = send(&bank, "TransOutConfirm", CONFIRM_QUERY, &body, None).await;
    assert_error(&confirm, 401, "missing_signature");
    assert_eq!(balances(&bank).await, after_try);
    assert_eq!(bank.barrier_rows(), rows);
    assert!(
        coordinator.received().is_empty(),
        "the coordinator was asked: {:?}",
        coordinator.received()
    );

    // The same call, signed, is applied.
    let now = signing::now_unix();
    let headers = signed(SECRET, "TransOutConfirm", CONFIRM_QUERY, &body, now);
    let confirm = send(&bank, "TransOutConfirm", CONFIRM_QUERY, &body, headers).await;
    assert_success(&confirm);
    assert_eq!(balances(&bank).await, (TEST_SEED_BALANCE - 30, 0));

    // Each refusal is counted as `unauthorized` under its op, apart from malformed requests.
    let metrics = scrape(&reqwest::Client::new(), &bank.spawned.base_url).await;
    let count = |op, outcome| {
        metrics.value(
            "tcc_rm_branch_requests_total",
            &[("op", op), ("outcome", outcome)],
        )
    };
    assert_eq!(count("try", "unauthorized"), 1.0);
    assert_eq!(count("cancel", "unauthorized"), 1.0);
    assert_eq!(count("confirm", "unauthorized"), 1.0);
    assert_eq!(count("confirm", "bad_request"), 0.0);
    assert_eq!(count("confirm", "applied"), 1.0);
}

#[tokio::test]
async fn an_unsigned_confirm_without_a_token_is_answered_503_when_the_coordinator_cannot_be_asked()
{
    // An RM alone: its coordinator (DTM_URL) does not answer.
    let bank = signed_bank().await;
    let (after_try, rows) = tried(&bank).await;
    let body = transfer(30).to_string();

    for (endpoint, query) in [
        ("TransOutConfirm", CONFIRM_QUERY.to_owned()),
        ("TransOutCancel", CONFIRM_QUERY.replace("confirm", "cancel")),
    ] {
        let answer = send(&bank, endpoint, &query, &body, None).await;
        assert_error(&answer, 503, "unavailable");
    }

    assert_eq!(balances(&bank).await, after_try);
    assert_eq!(bank.barrier_rows(), rows);
}

#[tokio::test]
async fn a_confirm_with_a_stale_timestamp_is_refused_with_401() {
    let bank = signed_bank().await;
    let (after_try, rows) = tried(&bank).await;
    let body = transfer(30).to_string();
    let an_hour_ago = signing::now_unix() - 3600;
    let headers = signed(SECRET, "TransOutConfirm", CONFIRM_QUERY, &body, an_hour_ago);

    let confirm = send(&bank, "TransOutConfirm", CONFIRM_QUERY, &body, headers).await;

    assert_error(&confirm, 401, "stale_signature");
    assert_eq!(balances(&bank).await, after_try);
    assert_eq!(bank.barrier_rows(), rows);
}

#[tokio::test]
async fn a_confirm_whose_body_was_changed_after_signing_is_refused_with_401() {
    let bank = signed_bank().await;
    let (after_try, rows) = tried(&bank).await;
    let now = signing::now_unix();
    let headers = signed(
        SECRET,
        "TransOutConfirm",
        CONFIRM_QUERY,
        &transfer(30).to_string(),
        now,
    );

    let tampered = transfer(3000).to_string();
    let confirm = send(&bank, "TransOutConfirm", CONFIRM_QUERY, &tampered, headers).await;

    assert_error(&confirm, 401, "bad_signature");
    assert_eq!(balances(&bank).await, after_try);
    assert_eq!(bank.barrier_rows(), rows);
}

#[tokio::test]
async fn a_confirm_signed_with_another_secret_is_refused_with_401() {
    let bank = signed_bank().await;
    let (after_try, rows) = tried(&bank).await;
    let body = transfer(30).to_string();
    let now = signing::now_unix();
    let headers = signed(
        "someone-elses-secret",
        "TransOutConfirm",
        CONFIRM_QUERY,
        &body,
        now,
    );

    let confirm = send(&bank, "TransOutConfirm", CONFIRM_QUERY, &body, headers).await;

    assert_error(&confirm, 401, "bad_signature");
    assert_eq!(balances(&bank).await, after_try);
    assert_eq!(bank.barrier_rows(), rows);
    // Nor may a signature for one branch be reused for another.
    let headers = signed(SECRET, "TransOutConfirm", CONFIRM_QUERY, &body, now);
    let other = CONFIRM_QUERY.replace("signed-1", "signed-2");
    let confirm = send(&bank, "TransOutConfirm", &other, &body, headers).await;
    assert_error(&confirm, 401, "bad_signature");
}

#[tokio::test]
async fn without_a_secret_the_rm_accepts_unsigned_confirms() {
    let db = TestDb::create(Role::TransOut.database());
    let bank = Rm::from(
        spawn_bank_with(Role::TransOut, db, |s| {
            s.common.branch_signing_secret = None;
            s.common.try_verification = TryVerification::Off;
        })
        .await,
    );
    tried(&bank).await;

    let body = transfer(30).to_string();
    let confirm = send(&bank, "TransOutConfirm", CONFIRM_QUERY, &body, None).await;

    assert_success(&confirm);
    assert_eq!(balances(&bank).await, (TEST_SEED_BALANCE - 30, 0));
}

// ---- The gid token and the Try gate ----

const TRY_QUERY: &str = "gid=gated-1&trans_type=tcc&branch_id=01&op=try";

/// `POST /api/{endpoint}?{query}` on `rm` with `body` and `token` as `X-Tcc-Gid-Token` (none for
/// `None`), unsigned.
async fn send_with_token(
    rm: &Spawned,
    endpoint: &str,
    query: &str,
    body: &str,
    token: Option<&str>,
) -> (u16, Value) {
    let path = format!("/api/{endpoint}?{query}");
    let mut request = reqwest::Client::new()
        .post(rm.url(&path))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(token) = token {
        request = request.header(GID_TOKEN_HEADER, token);
    }
    answer(request, &format!("POST {path}")).await
}

/// A call to the coordinator's DTM API; panics unless it answers 200.
async fn tm(sys: &System, call: &str, body: Value) {
    let request = sys
        .http
        .post(format!("{}/{call}", sys.coordinator.dtm_url()))
        .json(&body);
    let (status, answer) = answer(request, call).await;
    assert_eq!(status, 200, "{call}: {answer}");
}

/// Prepares `gid` at the system's coordinator and registers branch `branch_id` of it on bank A's
/// TransOut endpoints, as a DTM client does before calling the Try itself.
async fn prepare_and_register(sys: &System, gid: &str, branch_id: &str) {
    tm(sys, "prepare", json!({"gid": gid, "trans_type": "tcc"})).await;
    let register = json!({
        "gid": gid, "trans_type": "tcc", "branch_id": branch_id, "status": "prepared",
        "data": transfer(30).to_string(),
        "confirm": sys.trans_out.url("/api/TransOutConfirm"),
        "cancel": sys.trans_out.url("/api/TransOutCancel"),
    });
    tm(sys, "registerBranch", register).await;
}

/// `tcc_rm_branch_requests_total{op="try", outcome}` of `rm`.
async fn try_count(rm: &Spawned, outcome: &str) -> f64 {
    scrape(&reqwest::Client::new(), &rm.base_url).await.value(
        "tcc_rm_branch_requests_total",
        &[("op", "try"), ("outcome", outcome)],
    )
}

#[tokio::test]
async fn a_try_under_a_gid_no_coordinator_knows_freezes_nothing_and_is_refused_with_403() {
    let sys = spawn_system().await;
    let bank = &sys.trans_out;
    let body = transfer(30).to_string();

    let query = "gid=w.z.td&trans_type=tcc&branch_id=01&op=try";
    let tried = send_with_token(bank, "TransOutTry", query, &body, None).await;

    assert_error(&tried, 403, "try_not_registered");
    let message = tried.1["message"].as_str().unwrap();
    assert!(message.contains("unknown to the coordinator"), "{message}");
    assert_eq!(
        sys.balances(&sys.trans_out, 1).await,
        (TEST_SEED_BALANCE, 0)
    );
    let barrier_rows: i64 = {
        use diesel::{QueryDsl, RunQueryDsl};
        use tcc::barrier::schema::barrier::dsl::*;
        let mut conn = sys.trans_out.db.as_ref().unwrap().connect();
        barrier.count().get_result(&mut conn).unwrap()
    };
    assert_eq!(barrier_rows, 0, "no barrier row for a refused Try");
    assert_eq!(try_count(&sys.trans_out, "not_registered").await, 1.0);
}

#[tokio::test]
async fn a_try_whose_gid_is_prepared_with_its_branch_registered_is_applied_without_a_token() {
    let sys = spawn_system().await;
    let bank = &sys.trans_out;
    let body = transfer(30).to_string();
    prepare_and_register(&sys, "gated-1", "01").await;

    // Branch 02 of the same gid was never registered: refused.
    let other = TRY_QUERY.replace("branch_id=01", "branch_id=02");
    let refused = send_with_token(bank, "TransOutTry", &other, &body, None).await;
    assert_error(&refused, 403, "try_not_registered");
    assert!(refused.1["message"]
        .as_str()
        .unwrap()
        .contains("status prepared, branch 02 not registered"));
    assert_eq!(
        sys.balances(&sys.trans_out, 1).await,
        (TEST_SEED_BALANCE, 0)
    );

    let tried = send_with_token(bank, "TransOutTry", TRY_QUERY, &body, None).await;

    assert_success(&tried);
    assert_eq!(
        sys.balances(&sys.trans_out, 1).await,
        (TEST_SEED_BALANCE, 30)
    );
    // Once the transaction is no longer prepared, a Try without a token is refused again.
    tm(
        &sys,
        "abort",
        json!({"gid": "gated-1", "trans_type": "tcc"}),
    )
    .await;
    sys.wait_for_status("gated-1", "failed", std::time::Duration::from_secs(10))
        .await;
    assert_eq!(
        sys.balances(&sys.trans_out, 1).await,
        (TEST_SEED_BALANCE, 0)
    );
    let late = send_with_token(bank, "TransOutTry", TRY_QUERY, &body, None).await;
    assert_error(&late, 403, "try_not_registered");
    assert!(late.1["message"]
        .as_str()
        .unwrap()
        .contains("status failed"));
}

/// The number of barrier rows in `rm`'s database.
fn barrier_rows(rm: &Spawned) -> i64 {
    use diesel::{QueryDsl, RunQueryDsl};
    use tcc::barrier::schema::barrier::dsl::*;
    let mut conn = rm.db.as_ref().unwrap().connect();
    barrier.count().get_result(&mut conn).unwrap()
}

/// Asserts `answer` is the Try gate's refusal of a body that is not the registered data.
fn assert_not_the_registered_data(answer: &(u16, Value)) {
    assert_error(answer, 403, "try_not_registered");
    let message = answer.1["message"].as_str().unwrap();
    assert!(
        message.contains("not the data registered for branch 01"),
        "{message}"
    );
}

#[tokio::test]
async fn a_tokenless_try_whose_body_is_not_the_registered_data_freezes_nothing_and_is_refused() {
    // Whoever can read `query` sees gated-1 prepared with branch 01 registered, and races the
    // AP's Try with a body of their own: another account, another amount.
    let sys = spawn_system().await;
    let bank = &sys.trans_out;
    prepare_and_register(&sys, "gated-1", "01").await;

    for forged in [
        json!({ "account_id": 2, "amount": 30 }),
        transfer(3000),
        json!({ "account_id": 1, "amount": 30, "fault": { "confirm": "failure" } }),
    ] {
        let tried =
            send_with_token(bank, "TransOutTry", TRY_QUERY, &forged.to_string(), None).await;
        assert_not_the_registered_data(&tried);
    }

    for account in [1, 2] {
        assert_eq!(
            sys.balances(&sys.trans_out, account).await,
            (TEST_SEED_BALANCE, 0),
            "account {account}"
        );
    }
    assert_eq!(barrier_rows(bank), 0, "no barrier row for a refused Try");
    assert_eq!(try_count(bank, "not_registered").await, 3.0);

    // The AP's own Try, with the data it registered, is then applied (not a duplicate), and the
    // TM's Confirm settles that hold.
    let honest = send_with_token(
        bank,
        "TransOutTry",
        TRY_QUERY,
        &transfer(30).to_string(),
        None,
    )
    .await;
    assert_success(&honest);
    assert_eq!(
        sys.balances(&sys.trans_out, 1).await,
        (TEST_SEED_BALANCE, 30)
    );
    tm(
        &sys,
        "submit",
        json!({"gid": "gated-1", "trans_type": "tcc"}),
    )
    .await;
    sys.wait_for_status("gated-1", "succeed", std::time::Duration::from_secs(10))
        .await;
    assert_eq!(
        sys.balances(&sys.trans_out, 1).await,
        (TEST_SEED_BALANCE - 30, 0)
    );
    assert_eq!(
        sys.balances(&sys.trans_out, 2).await,
        (TEST_SEED_BALANCE, 0)
    );
}

#[tokio::test]
async fn a_tokenless_try_is_held_to_the_registered_data_as_json_not_as_bytes() {
    let sys = spawn_system().await;
    let bank = &sys.trans_out;
    prepare_and_register(&sys, "gated-1", "01").await;

    // The registered data is `{"account_id":1,"amount":30}`: the same spacing and key order
    // with another amount is another value...
    let other = "{ \"amount\": 31,\n  \"account_id\": 1 }";
    let refused = send_with_token(bank, "TransOutTry", TRY_QUERY, other, None).await;
    assert_not_the_registered_data(&refused);
    assert_eq!(
        sys.balances(&sys.trans_out, 1).await,
        (TEST_SEED_BALANCE, 0)
    );

    // ...while the registered value in another key order and spacing (as Python's dtmcli sends
    // it) is the registered data.
    let same = "{ \"amount\": 30,\n  \"account_id\": 1 }";
    let tried = send_with_token(bank, "TransOutTry", TRY_QUERY, same, None).await;
    assert_success(&tried);
    assert_eq!(
        sys.balances(&sys.trans_out, 1).await,
        (TEST_SEED_BALANCE, 30)
    );
}

#[tokio::test]
async fn a_try_with_its_gids_token_is_applied_without_asking_any_coordinator() {
    // An RM alone: its coordinator (DTM_URL) does not answer, so only the token can pass.
    let bank = signed_bank().await;
    let body = transfer(30).to_string();
    let token = test_gid_token("gated-1");

    let tried = send_with_token(&bank.spawned, "TransOutTry", TRY_QUERY, &body, Some(&token)).await;

    assert_success(&tried);
    assert_eq!(balances(&bank).await, (TEST_SEED_BALANCE, 30));
    assert_eq!(try_count(&bank.spawned, "applied").await, 1.0);
    // The token is what let it through: the same Try without it cannot be checked here.
    let other = TRY_QUERY.replace("gated-1", "gated-3");
    let untokened = send_with_token(&bank.spawned, "TransOutTry", &other, &body, None).await;
    assert_error(&untokened, 503, "unavailable");
    assert_eq!(balances(&bank).await, (TEST_SEED_BALANCE, 30));
}

#[tokio::test]
async fn a_try_with_a_wrong_token_is_refused_with_401_and_freezes_nothing() {
    let bank = signed_bank().await;
    let body = transfer(30).to_string();
    let another_gids = test_gid_token("gated-2");
    let another_secrets = signing::gid_token(&SigningSecret::new("not-the-secret"), "gated-1");

    for token in [another_gids.as_str(), &another_secrets, "v1=00", "garbage"] {
        let tried =
            send_with_token(&bank.spawned, "TransOutTry", TRY_QUERY, &body, Some(token)).await;
        assert_error(&tried, 401, "bad_gid_token");
    }

    assert_eq!(balances(&bank).await, (TEST_SEED_BALANCE, 0));
    assert_eq!(bank.barrier_rows(), 0);
    assert_eq!(try_count(&bank.spawned, "unauthorized").await, 4.0);
}

#[tokio::test]
async fn a_try_without_a_token_is_answered_503_when_the_coordinator_cannot_be_asked() {
    let bank = signed_bank().await;
    let body = transfer(30).to_string();

    let tried = send_with_token(&bank.spawned, "TransOutTry", TRY_QUERY, &body, None).await;

    assert_error(&tried, 503, "unavailable");
    assert_eq!(balances(&bank).await, (TEST_SEED_BALANCE, 0));
    assert_eq!(bank.barrier_rows(), 0);
}

#[tokio::test]
async fn an_unsigned_confirm_carrying_the_gids_token_is_applied_as_a_dtm_server_forwards_it() {
    let bank = signed_bank().await;
    let (after_try, _) = tried(&bank).await;
    assert_eq!(after_try, (TEST_SEED_BALANCE, 30));
    let body = transfer(30).to_string();

    // A token for another gid is refused, and changes nothing.
    let foreign = test_gid_token("signed-2");
    let confirm = send_with_token(
        &bank.spawned,
        "TransOutConfirm",
        CONFIRM_QUERY,
        &body,
        Some(&foreign),
    );
    assert_error(&confirm.await, 401, "bad_gid_token");
    assert_eq!(balances(&bank).await, after_try);

    let token = test_gid_token("signed-1");
    let confirm = send_with_token(
        &bank.spawned,
        "TransOutConfirm",
        CONFIRM_QUERY,
        &body,
        Some(&token),
    )
    .await;

    assert_success(&confirm);
    assert_eq!(balances(&bank).await, (TEST_SEED_BALANCE - 30, 0));
}

#[tokio::test]
async fn behind_a_coordinator_that_cannot_sign_the_forwarded_gid_token_lets_a_transfer_finish() {
    // A TM without the secret, like a DTM server: it forwards the AP's branch_headers (the gid
    // token) with every Confirm and Cancel, and that is what the RMs accept.
    let sys = system_with_secrets(None, secret()).await;

    let (status, answer) = sys.fire("/api/fireTcc?amount=30&from=1&to=2").await;

    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "succeed", "{answer}");
    assert_eq!(
        sys.balances(&sys.trans_out, 1).await,
        (TEST_SEED_BALANCE - 30, 0)
    );
    assert_eq!(
        sys.balances(&sys.trans_in, 2).await,
        (TEST_SEED_BALANCE + 30, 0)
    );
    // And a rollback releases what its Try froze.
    let (status, answer) = sys.fire("/api/fireTccRollback?amount=40&from=3&to=3").await;
    assert_eq!(status, 409, "{answer}");
    let gid = answer["gid"].as_str().unwrap();
    sys.wait_for_status(gid, "failed", std::time::Duration::from_secs(10))
        .await;
    assert_eq!(
        sys.balances(&sys.trans_out, 3).await,
        (TEST_SEED_BALANCE, 0)
    );
}

#[tokio::test]
async fn without_a_secret_a_try_goes_through_the_coordinator_check_even_with_a_token() {
    let db = TestDb::create(Role::TransOut.database());
    let bank = Rm::from(
        spawn_bank_with(Role::TransOut, db, |s| {
            s.common.branch_signing_secret = None
        })
        .await,
    );
    let body = transfer(30).to_string();
    let token = test_gid_token("gated-1");

    // No secret: the token cannot be checked, so it proves nothing; the coordinator is asked,
    // and this RM's cannot be reached.
    let tried = send_with_token(&bank.spawned, "TransOutTry", TRY_QUERY, &body, Some(&token)).await;

    assert_error(&tried, 503, "unavailable");
    assert_eq!(balances(&bank).await, (TEST_SEED_BALANCE, 0));
}

#[tokio::test]
async fn with_try_verification_off_a_try_without_a_token_is_applied() {
    let db = TestDb::create(Role::TransOut.database());
    let bank = Rm::from(
        spawn_bank_with(Role::TransOut, db, |s| {
            s.common.try_verification = TryVerification::Off
        })
        .await,
    );
    let body = transfer(30).to_string();

    let tried = send_with_token(&bank.spawned, "TransOutTry", TRY_QUERY, &body, None).await;

    assert_success(&tried);
    assert_eq!(balances(&bank).await, (TEST_SEED_BALANCE, 30));
    // A wrong token is still refused: the secret is set.
    let wrong = send_with_token(
        &bank.spawned,
        "TransOutTry",
        TRY_QUERY,
        &body,
        Some("v1=00"),
    )
    .await;
    assert_error(&wrong, 401, "bad_gid_token");
}

// ---- Confirm and Cancel vouched for by the coordinator ----

/// The coordinator's secret in the tests below: not the RMs', so each Confirm/Cancel it sends
/// is refused for its signature (`401 bad_signature`) and the transaction stays `submitted` or
/// `aborting` for as long as the test needs.
fn another_secret() -> Option<SigningSecret> {
    Some(SigningSecret::new("not-the-rms-secret"))
}

/// An unsigned `POST /api/{endpoint}?gid={gid}&trans_type=tcc&branch_id={branch_id}&op={op}` on
/// `rm` with the branch data, carrying `headers` (none: as dtmrs 0.13 sends a Confirm/Cancel).
async fn settle(
    rm: &Spawned,
    endpoint: &str,
    gid: &str,
    branch_id: &str,
    headers: &[(&str, &str)],
) -> (u16, Value) {
    let op = if endpoint.ends_with("Confirm") {
        "confirm"
    } else {
        "cancel"
    };
    let path = format!("/api/{endpoint}?gid={gid}&trans_type=tcc&branch_id={branch_id}&op={op}");
    let mut request = reqwest::Client::new()
        .post(rm.url(&path))
        .header("content-type", "application/json")
        .body(transfer(30).to_string());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    answer(request, &format!("POST {path}")).await
}

/// Asserts `answer` is `401 not_vouched` and its message says `reported`.
fn assert_not_vouched(answer: &(u16, Value), reported: &str) {
    assert_error(answer, 401, "not_vouched");
    let message = answer.1["message"].as_str().unwrap();
    assert!(message.contains(reported), "{message}");
}

/// A system whose coordinator signs with another secret than the RMs', with `gid` prepared,
/// branch 01 registered on bank A and its Try of 30 from account 1 applied (without a token, as
/// a DTM client's: the Try gate lets it through).
async fn prepared_and_tried(gid: &str) -> System {
    let sys = system_with_secrets(another_secret(), None).await;
    prepare_and_register(&sys, gid, "01").await;
    let query = format!("gid={gid}&trans_type=tcc&branch_id=01&op=try");
    let body = transfer(30).to_string();
    let tried = send_with_token(&sys.trans_out, "TransOutTry", &query, &body, None).await;
    assert_success(&tried);
    assert_eq!(
        sys.balances(&sys.trans_out, 1).await,
        (TEST_SEED_BALANCE, 30)
    );
    sys
}

#[tokio::test]
async fn an_unsigned_confirm_without_a_token_is_applied_once_the_coordinator_reports_it_due() {
    let sys = prepared_and_tried("vouched-1").await;
    let bank = &sys.trans_out;

    // Before submit the AP may still abort: a Confirm now is the attack this blocks.
    let early = settle(bank, "TransOutConfirm", "vouched-1", "01", &[]).await;
    assert_not_vouched(&early, "status prepared, branch 01 registered");
    assert_eq!(
        sys.balances(&sys.trans_out, 1).await,
        (TEST_SEED_BALANCE, 30)
    );

    tm(
        &sys,
        "submit",
        json!({"gid": "vouched-1", "trans_type": "tcc"}),
    )
    .await;
    assert_eq!(
        sys.query("vouched-1").await["transaction"]["status"],
        "submitted"
    );

    // A branch the coordinator does not know, and a Cancel of a submitted transaction: refused.
    let unknown = settle(bank, "TransOutConfirm", "vouched-1", "02", &[]).await;
    assert_not_vouched(&unknown, "status submitted, branch 02 not registered");
    let cancel = settle(bank, "TransOutCancel", "vouched-1", "01", &[]).await;
    assert_not_vouched(&cancel, "status submitted, branch 01 registered");
    // A signature or a token that is present but wrong stays a 401, whatever the coordinator
    // says (the coordinator's own Confirms, signed with another secret, are refused so).
    let now = signing::now_unix().to_string();
    let bad = settle(
        bank,
        "TransOutConfirm",
        "vouched-1",
        "01",
        &[(TIMESTAMP_HEADER, &now), (SIGNATURE_HEADER, "v1=00")],
    )
    .await;
    assert_error(&bad, 401, "bad_signature");
    let foreign = test_gid_token("vouched-2");
    let bad = settle(
        bank,
        "TransOutConfirm",
        "vouched-1",
        "01",
        &[(GID_TOKEN_HEADER, &foreign)],
    )
    .await;
    assert_error(&bad, 401, "bad_gid_token");
    assert_eq!(
        sys.balances(&sys.trans_out, 1).await,
        (TEST_SEED_BALANCE, 30)
    );

    let confirm = settle(bank, "TransOutConfirm", "vouched-1", "01", &[]).await;

    assert_success(&confirm);
    assert_eq!(
        sys.balances(&sys.trans_out, 1).await,
        (TEST_SEED_BALANCE - 30, 0)
    );
    // Again: a duplicate behind the barrier, applied once.
    let again = settle(bank, "TransOutConfirm", "vouched-1", "01", &[]).await;
    assert_success(&again);
    assert_eq!(
        sys.balances(&sys.trans_out, 1).await,
        (TEST_SEED_BALANCE - 30, 0)
    );
}

#[tokio::test]
async fn an_unsigned_cancel_without_a_token_is_applied_only_while_the_coordinator_aborts() {
    let sys = prepared_and_tried("vouched-3").await;
    let bank = &sys.trans_out;

    let early = settle(bank, "TransOutCancel", "vouched-3", "01", &[]).await;
    assert_not_vouched(&early, "status prepared");

    tm(
        &sys,
        "abort",
        json!({"gid": "vouched-3", "trans_type": "tcc"}),
    )
    .await;
    assert_eq!(
        sys.query("vouched-3").await["transaction"]["status"],
        "aborting"
    );
    let confirm = settle(bank, "TransOutConfirm", "vouched-3", "01", &[]).await;
    assert_not_vouched(&confirm, "status aborting, branch 01 registered");
    assert_eq!(
        sys.balances(&sys.trans_out, 1).await,
        (TEST_SEED_BALANCE, 30)
    );

    let cancel = settle(bank, "TransOutCancel", "vouched-3", "01", &[]).await;

    assert_success(&cancel);
    assert_eq!(
        sys.balances(&sys.trans_out, 1).await,
        (TEST_SEED_BALANCE, 0)
    );
}

#[tokio::test]
async fn behind_a_coordinator_that_neither_signs_nor_forwards_tokens_transfers_finish() {
    // As behind dtmrs 0.13: a TM without the secret and an AP without it (no gid token in
    // branch_headers), so every Confirm and Cancel reaches the RMs with neither; each is
    // vouched for by the coordinator, which reports it due.
    let sys = system_with_secrets(None, None).await;

    let (status, answer) = sys.fire("/api/fireTcc?amount=30&from=1&to=2").await;

    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "succeed", "{answer}");
    assert_eq!(
        sys.balances(&sys.trans_out, 1).await,
        (TEST_SEED_BALANCE - 30, 0)
    );
    assert_eq!(
        sys.balances(&sys.trans_in, 2).await,
        (TEST_SEED_BALANCE + 30, 0)
    );
    let (status, answer) = sys.fire("/api/fireTccRollback?amount=40&from=3&to=3").await;
    assert_eq!(status, 409, "{answer}");
    let gid = answer["gid"].as_str().unwrap().to_owned();
    sys.wait_for_status(&gid, "failed", std::time::Duration::from_secs(10))
        .await;
    assert_eq!(
        sys.balances(&sys.trans_out, 3).await,
        (TEST_SEED_BALANCE, 0)
    );
    // Once `failed`, neither is vouched for: the TM's Cancels are done (the barrier holds them),
    // and an admin's force-stop makes a submitted transaction `failed` too.
    let late = settle(&sys.trans_out, "TransOutCancel", &gid, "01", &[]).await;
    assert_not_vouched(&late, "status failed, branch 01 registered");
    let confirm = settle(&sys.trans_out, "TransOutConfirm", &gid, "01", &[]).await;
    assert_not_vouched(&confirm, "status failed, branch 01 registered");
    assert_eq!(
        sys.balances(&sys.trans_out, 3).await,
        (TEST_SEED_BALANCE, 0)
    );
}
