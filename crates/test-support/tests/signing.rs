//! Signed branch calls (docs/PROTOCOL.md, "Signed branch calls"): with `BRANCH_SIGNING_SECRET`
//! set, the coordinator signs every Confirm and Cancel and the RMs refuse unsigned, stale,
//! tampered or foreign-signed ones with 401, doing nothing. Real HTTP, real Postgres.

use bank::Role;
use serde_json::{json, Value};
use tcc::signing::{self, SigningSecret, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use test_support::metrics::scrape;
use test_support::rm::{assert_error, assert_success, Rm};
use test_support::spawn::{
    answer, spawn_app_with, spawn_bank, spawn_bank_with, spawn_coordinator_with, spawn_stock_with,
    System, TEST_SEED_BALANCE,
};
use test_support::TestDb;

const SECRET: &str = "test-signing-secret";
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

/// A Try of 30 from account 1 (unsigned: Trys come from the AP), then the state it left.
async fn tried(rm: &Rm) -> ((i64, i64), i64) {
    let tried = rm
        .call("TransOutTry", "signed-1", "try", &transfer(30))
        .await;
    assert_success(&tried);
    (balances(rm).await, rm.barrier_rows())
}

#[tokio::test]
async fn a_fire_tcc_through_a_signing_coordinator_and_verifying_rms_succeeds() {
    let coordinator = spawn_coordinator_with(TestDb::create("coordinator"), |s| {
        s.branch_signing_secret = secret()
    })
    .await;
    let trans_out = spawn_bank_with(
        Role::TransOut,
        TestDb::create(Role::TransOut.database()),
        |s| s.common.branch_signing_secret = secret(),
    )
    .await;
    let trans_in = spawn_bank_with(
        Role::TransIn,
        TestDb::create(Role::TransIn.database()),
        |s| s.common.branch_signing_secret = secret(),
    )
    .await;
    let stock = spawn_stock_with(TestDb::create("stock"), |s| {
        s.common.branch_signing_secret = secret()
    })
    .await;
    let app = spawn_app_with(app::configuration::Settings {
        dtm_url: coordinator.dtm_url(),
        trans_out_url: trans_out.url("/api"),
        trans_in_url: trans_in.url("/api"),
        stock_url: stock.url("/api"),
        ..app::configuration::Settings::default()
    })
    .await;
    let sys = System {
        coordinator,
        trans_out,
        trans_in,
        stock,
        app,
        http: reqwest::Client::new(),
    };

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
async fn an_unsigned_confirm_or_cancel_is_refused_with_401_and_changes_nothing() {
    let bank = signed_bank().await;
    // No Try yet: an accepted Cancel would write the barrier's empty-compensation rows.
    let body = transfer(30).to_string();
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
    assert_eq!(count("cancel", "unauthorized"), 1.0);
    assert_eq!(count("confirm", "unauthorized"), 1.0);
    assert_eq!(count("confirm", "bad_request"), 0.0);
    assert_eq!(count("confirm", "applied"), 1.0);
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
    let bank = Rm::from(spawn_bank(Role::TransOut).await);
    tried(&bank).await;

    let confirm = bank
        .call("TransOutConfirm", "signed-1", "confirm", &transfer(30))
        .await;

    assert_success(&confirm);
    assert_eq!(balances(&bank).await, (TEST_SEED_BALANCE - 30, 0));
}
