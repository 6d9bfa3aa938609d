//! The per-client-address rate limit of the RMs' Try endpoints (`service_kit::rate_limit`),
//! through real HTTP on a bank started with a tiny quota (1 Try per second, bursts of 2): Trys
//! beyond it are answered `429 rate_limited` with `Retry-After` and reserve nothing, Confirm and
//! Cancel are never limited, the quota comes back with time, and 0 disables the limit. The
//! stock service shares the code (`service_kit::branch::configure`), so one RM is enough.

use std::time::{Duration, Instant};

use bank::Role;
use diesel::prelude::*;
use futures_util::future::join_all;
use serde_json::{json, Value};
use service_kit::rate_limit::TryRateLimit;
use test_support::rm::{assert_error, assert_success, Rm};
use test_support::spawn::spawn_bank_with;
use test_support::TestDb;

/// 1 Try per second sustained, bursts of 2.
const TINY: TryRateLimit = TryRateLimit {
    per_second: 1,
    burst: 2,
};

async fn bank_with(limit: TryRateLimit) -> Rm {
    let role = Role::TransOut;
    Rm::from(
        spawn_bank_with(role, TestDb::create(role.database()), |s| {
            s.common.try_rate_limit = limit
        })
        .await,
    )
}

fn transfer() -> Value {
    json!({ "account_id": 1, "amount": 10 })
}

/// One Try of `gid` (account 1, 10 units): (status, `Retry-After`, JSON answer).
async fn try_branch(bank: &Rm, gid: &str) -> (u16, Option<u64>, Value) {
    let url = bank.spawned.url(&format!(
        "/api/TransOutTry?gid={gid}&trans_type=tcc&branch_id=01&op=try"
    ));
    let response = bank
        .http
        .post(url)
        .json(&transfer())
        .send()
        .await
        .expect("the bank answers");
    let status = response.status().as_u16();
    let retry_after = response.headers().get("retry-after").map(|v| {
        v.to_str()
            .unwrap()
            .parse()
            .expect("Retry-After is whole seconds")
    });
    let body = response.json().await.expect("a JSON answer");
    (status, retry_after, body)
}

/// Sends Trys with fresh gids (`{prefix}-1`, `{prefix}-2`, ...) until one is refused; returns
/// the gids that were accepted and the refusal's `Retry-After`.
async fn exhaust(bank: &Rm, prefix: &str) -> (Vec<String>, u64) {
    let mut accepted = Vec::new();
    for i in 1..=20 {
        let gid = format!("{prefix}-{i}");
        match try_branch(bank, &gid).await {
            (200, None, body) => {
                assert_eq!(body["dtm_result"], "SUCCESS", "{body}");
                accepted.push(gid);
            }
            (429, Some(retry_after), body) => {
                assert_error(&(429, body), 429, "rate_limited");
                return (accepted, retry_after);
            }
            other => panic!("Try {gid}: unexpected answer {other:?}"),
        }
    }
    panic!("20 quick Trys were all accepted under a quota of {TINY:?}");
}

/// `(gid, state)` of every hold, in insertion order.
fn holds(bank: &Rm) -> Vec<(String, String)> {
    use bank::schema::holds::dsl::*;
    bank.load(holds.select((gid, state)).order(id))
}

/// The value of the series `tcc_rm_branch_requests_total{op=..,outcome=..}`.
async fn requests_total(bank: &Rm, op: &str, outcome: &str) -> u64 {
    let text = bank
        .http
        .get(bank.spawned.url("/api/metrics"))
        .send()
        .await
        .expect("metrics answer")
        .text()
        .await
        .expect("metrics text");
    let series = format!(r#"tcc_rm_branch_requests_total{{op="{op}",outcome="{outcome}"}} "#);
    text.lines()
        .find_map(|line| line.strip_prefix(&series))
        .unwrap_or_else(|| panic!("no series {series} in\n{text}"))
        .parse()
        .expect("a count")
}

#[tokio::test]
async fn trys_beyond_the_burst_are_refused_with_429_and_retry_after_and_freeze_nothing() {
    let bank = bank_with(TINY).await;

    let (mut accepted, retry_after) = exhaust(&bank, "burst").await;
    // The burst, plus at most one more if a second went by while sending.
    assert!((2..=3).contains(&accepted.len()), "{accepted:?}");
    assert_eq!(
        retry_after, 1,
        "a quota of 1 per second refills within a second"
    );
    // More refusals while the quota is used up (one may pass if a second goes by).
    let mut refused = 1;
    for i in 0..3 {
        let gid = format!("more-{i}");
        match try_branch(&bank, &gid).await {
            (429, Some(_), _) => refused += 1,
            (200, None, _) => accepted.push(gid),
            other => panic!("{gid}: {other:?}"),
        }
    }
    assert!(refused >= 3, "{refused} refusals");

    // Only the accepted Trys froze funds and wrote barrier rows: a refused Try is turned away
    // before its body is read.
    let expected: Vec<(String, String)> = accepted
        .iter()
        .map(|gid| (gid.clone(), "tentative".to_owned()))
        .collect();
    assert_eq!(holds(&bank), expected);
    assert_eq!(bank.barrier_rows(), accepted.len() as i64);
    let account = bank.view("/api/accounts/1").await;
    assert_eq!(
        account["trading_balance"],
        json!(10 * accepted.len() as i64),
        "{account}"
    );
    assert_eq!(requests_total(&bank, "try", "rate_limited").await, refused);
    assert_eq!(
        requests_total(&bank, "try", "applied").await,
        accepted.len() as u64
    );

    // Only POST is routed (and limited): other methods still get the JSON 404.
    let (status, body) = bank.get("/api/TransOutTry").await;
    assert_error(&(status, body), 404, "not_found");
}

#[tokio::test]
async fn confirm_and_cancel_are_never_rate_limited() {
    let bank = bank_with(TINY).await;
    let (accepted, _) = exhaust(&bank, "used-up").await;

    // Many Confirms of an accepted Try and many Cancels (empty compensations, then duplicates),
    // all at once, while the Try quota is used up.
    let (rm, body) = (&bank, transfer());
    let (confirmed, body) = (&accepted[0], &body);
    let confirms = (0..25).map(|_| rm.call("TransOutConfirm", confirmed, "confirm", body));
    let cancels = (0..25).map(|i| async move {
        let gid = format!("cancel-{}", i % 5);
        rm.call("TransOutCancel", &gid, "cancel", body).await
    });
    for answer in join_all(confirms).await {
        assert_success(&answer);
    }
    for answer in join_all(cancels).await {
        assert_success(&answer);
    }

    assert_eq!(requests_total(&bank, "confirm", "rate_limited").await, 0);
    assert_eq!(requests_total(&bank, "cancel", "rate_limited").await, 0);
    assert_eq!(requests_total(&bank, "confirm", "applied").await, 1);
    assert_eq!(requests_total(&bank, "confirm", "duplicate").await, 24);
    assert_eq!(
        requests_total(&bank, "cancel", "empty_compensation").await,
        5
    );
    assert_eq!(requests_total(&bank, "cancel", "duplicate").await, 20);
    // The Try quota is still used up: the Confirms and Cancels did not touch it either way.
    let (status, _, body) = try_branch(&bank, "still-limited").await;
    assert!(status == 429 || status == 200, "{body}");
}

#[tokio::test]
async fn trys_pass_again_once_the_quota_has_refilled() {
    let bank = bank_with(TINY).await;
    let (_, retry_after) = exhaust(&bank, "first").await;

    let deadline = Instant::now() + Duration::from_secs(retry_after + 5);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (status, _, body) = try_branch(&bank, &format!("again-{attempt}")).await;
        if status == 200 {
            assert_eq!(body["dtm_result"], "SUCCESS", "{body}");
            break;
        }
        assert_eq!(status, 429, "{body}");
        assert!(
            Instant::now() < deadline,
            "Trys still refused {retry_after} s + 5 s after Retry-After"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The refusals while waiting reserved nothing.
    let tentative = holds(&bank).len();
    assert_eq!(bank.barrier_rows(), tentative as i64);
}

#[tokio::test]
async fn a_zero_rate_or_burst_disables_the_limit() {
    for limit in [
        TryRateLimit::OFF,
        TryRateLimit {
            per_second: 0,
            burst: 2,
        },
        TryRateLimit {
            per_second: 1,
            burst: 0,
        },
    ] {
        let bank = bank_with(limit).await;
        let answers = join_all((0..30).map(|i| {
            let bank = &bank;
            async move { try_branch(bank, &format!("free-{i}")).await }
        }))
        .await;
        for (status, retry_after, body) in answers {
            assert_eq!((status, retry_after), (200, None), "{limit:?}: {body}");
        }
        assert_eq!(holds(&bank).len(), 30, "{limit:?}");
        assert_eq!(requests_total(&bank, "try", "rate_limited").await, 0);
    }
}
