//! The per-client-address rate limit of the AP's fire endpoints (`service_kit::rate_limit`,
//! `FIRE_RATE_LIMIT_PER_SECOND`/`FIRE_RATE_LIMIT_BURST`), through real HTTP on the whole
//! system: with a tiny quota (1 request per second, bursts of 2) fire requests beyond it are
//! answered `429 rate_limited` with `Retry-After` and start nothing, each address has its own
//! quota, the quota comes back with time, the nested branch and the metrics are not limited, and
//! 0 disables the limit. With the default settings, the ordinary load of one address (32
//! concurrent `fireTcc` callers) is never refused, and the RMs do not limit Trys by address at
//! all: every Try of the system comes from the AP's one address.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use app::configuration::Settings as AppSettings;
use bank::Role;
use futures_util::future::join_all;
use serde_json::{json, Value};
use service_kit::rate_limit::RateLimit;
use test_support::rm::{assert_error, Rm};
use test_support::spawn::{spawn_bank, spawn_system, spawn_system_with, System};

/// 1 request per second sustained, bursts of 2.
const TINY: RateLimit = RateLimit {
    per_second: 1,
    burst: 2,
};

/// The system with the AP's fire endpoints limited to `limit`.
async fn system_with(limit: RateLimit) -> System {
    spawn_system_with(|_| {}, |app: &mut AppSettings| app.fire_rate_limit = limit).await
}

/// A client whose requests leave from `ip` (any 127.x address reaches the AP on 127.0.0.1).
fn client_from(ip: Ipv4Addr) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::V4(ip))
        .build()
        .expect("a client")
}

/// `GET <AP>/api/fireTcc?amount=1` with `http`: (status, `Retry-After`, JSON answer).
async fn fire(sys: &System, http: &reqwest::Client) -> (u16, Option<u64>, Value) {
    let response = http
        .get(sys.app.url("/api/fireTcc?amount=1"))
        .send()
        .await
        .expect("the AP answers");
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

/// Fires with `http` until one is refused; returns the gids of the accepted (committed) ones and
/// the refusal's `Retry-After`.
async fn exhaust(sys: &System, http: &reqwest::Client) -> (Vec<String>, u64) {
    let mut accepted = Vec::new();
    for _ in 0..20 {
        match fire(sys, http).await {
            (200, None, body) => {
                assert_eq!(body["status"], "succeed", "{body}");
                accepted.push(body["gid"].as_str().expect("a gid").to_owned());
            }
            (429, Some(retry_after), body) => {
                assert_error(&(429, body), 429, "rate_limited");
                return (accepted, retry_after);
            }
            other => panic!("unexpected answer {other:?}"),
        }
    }
    panic!("20 quick fire requests were all accepted under a quota of {TINY:?}");
}

#[tokio::test]
async fn fire_requests_beyond_the_burst_are_refused_with_429_and_retry_after_and_start_nothing() {
    let sys = system_with(TINY).await;

    let (mut accepted, retry_after) = exhaust(&sys, &sys.http).await;
    // The burst, plus at most one more per second spent firing.
    assert!((2..=4).contains(&accepted.len()), "{accepted:?}");
    assert_eq!(
        retry_after, 1,
        "a quota of 1 per second refills within a second"
    );
    // Four more requests, on every fire endpoint and for both methods, while the quota is used
    // up: the limiter may let through only what it refilled since the refusal, one per whole
    // second begun (counted from the refusal, so a slow machine cannot make this fail).
    let used_up_at = Instant::now();
    let mut passed = 0;
    for path in [
        "/api/fireTccRollback",
        "/api/firePurchase?product_id=1&quantity=1",
        "/api/fireTccNested",
    ] {
        let (status, body) = sys.fire(path).await;
        match status {
            429 => assert_error(&(status, body), 429, "rate_limited"),
            200 | 409 => {
                passed += 1;
                accepted.push(body["gid"].as_str().expect("a gid").to_owned());
            }
            _ => panic!("{path}: {status} {body}"),
        }
    }
    let posted = sys
        .http
        .post(sys.app.url("/api/fireTcc"))
        .json(&json!({ "amount": 1 }))
        .send()
        .await
        .expect("the AP answers");
    match posted.status().as_u16() {
        429 => {}
        200 => {
            passed += 1;
            let body: Value = posted.json().await.expect("a JSON answer");
            accepted.push(body["gid"].as_str().expect("a gid").to_owned());
        }
        other => panic!("POST /api/fireTcc: {other}"),
    }
    let refilled = used_up_at.elapsed().as_secs_f64().ceil() as usize * TINY.per_second as usize;
    assert!(
        passed <= refilled,
        "{passed} of 4 requests passed a used-up quota that refilled {refilled} in {:?}",
        used_up_at.elapsed()
    );

    // Only the accepted requests started global transactions: a refused one is turned away
    // before it is read, without a gid.
    let started: Vec<String> = sys
        .transactions()
        .await
        .iter()
        .map(|t| t["gid"].as_str().expect("a gid").to_owned())
        .collect();
    assert!(
        started.len() <= accepted.len() + 1,
        "{} transactions for {} accepted requests",
        started.len(),
        accepted.len()
    );
    for gid in &accepted {
        assert!(started.contains(gid), "{gid} not started");
    }
}

#[tokio::test]
async fn each_client_address_has_its_own_fire_quota_and_it_comes_back_with_time() {
    let sys = system_with(TINY).await;
    let first = client_from(Ipv4Addr::new(127, 0, 0, 1));
    let (_, retry_after) = exhaust(&sys, &first).await;

    // Another address is not refused for the first one's requests.
    let other = client_from(Ipv4Addr::new(127, 0, 0, 2));
    let (status, _, body) = fire(&sys, &other).await;
    assert_eq!(
        (status, &body["status"]),
        (200, &json!("succeed")),
        "{body}"
    );

    // The first address passes again once its quota has refilled.
    let deadline = Instant::now() + Duration::from_secs(retry_after + 5);
    loop {
        let (status, _, body) = fire(&sys, &first).await;
        if status == 200 {
            assert_eq!(body["status"], "succeed", "{body}");
            break;
        }
        assert_eq!(status, 429, "{body}");
        assert!(
            Instant::now() < deadline,
            "still refused {retry_after} s + 5 s after Retry-After"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_nested_branch_and_the_metrics_are_not_limited() {
    // A burst of 2: fireTccNested takes one, and its nested branch (Try called by the AP, Confirm
    // by the TM, both from 127.0.0.1 like this test) would use up the rest were it limited.
    let sys = system_with(TINY).await;
    let (status, body) = sys.fire("/api/fireTccNested").await;
    assert_eq!(
        (status, &body["status"]),
        (200, &json!("succeed")),
        "{body}"
    );
    let gid = body["gid"].as_str().expect("a gid");
    sys.wait_for_status(gid, "succeed", Duration::from_secs(10))
        .await;

    let (_, _) = exhaust(&sys, &sys.http).await;
    for path in ["/api/metrics", "/api/health", "/api/ping"] {
        let status = sys
            .http
            .get(sys.app.url(path))
            .send()
            .await
            .expect("the AP answers")
            .status();
        assert_eq!(status.as_u16(), 200, "{path}");
    }
}

#[tokio::test]
async fn a_zero_rate_or_burst_disables_the_fire_limit() {
    for limit in [
        RateLimit::OFF,
        RateLimit {
            per_second: 0,
            burst: 2,
        },
        RateLimit {
            per_second: 1,
            burst: 0,
        },
    ] {
        let sys = system_with(limit).await;
        // Cheap requests (refused for their amount, before any global transaction) well over
        // a quota of 1 per second.
        let answers = join_all((0..30).map(|_| sys.fire("/api/fireTcc?amount=0"))).await;
        for (status, body) in answers {
            assert_error(&(status, body), 400, "invalid_parameter");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_concurrent_fire_tcc_callers_with_the_default_settings_are_never_refused() {
    let sys = spawn_system().await;
    let until = Instant::now() + Duration::from_secs(4);
    let callers = (0..32i64).map(|caller| {
        let (http, url) = (sys.http.clone(), sys.app.url(""));
        async move {
            let mut answers = Vec::new();
            let mut i = 0;
            while Instant::now() < until {
                // Distinct accounts per caller, so that callers compete for the system, not for
                // one row.
                let from = caller % 10 + 1;
                let to = (caller + 1 + i % 9) % 10 + 1;
                let to = if to == from { to % 10 + 1 } else { to };
                let response = http
                    .get(format!("{url}/api/fireTcc?amount=1&from={from}&to={to}"))
                    .send()
                    .await
                    .expect("the AP answers");
                let status = response.status().as_u16();
                answers.push((status, response.text().await.unwrap_or_default()));
                i += 1;
            }
            answers
        }
    });
    let answers: Vec<(u16, String)> = join_all(callers).await.into_iter().flatten().collect();

    let refused: Vec<&(u16, String)> = answers.iter().filter(|(s, _)| *s != 200).collect();
    assert!(
        refused.is_empty(),
        "{} of {} fire requests refused, e.g. {:?}",
        refused.len(),
        answers.len(),
        refused.first()
    );
    eprintln!(
        "{} fireTcc in 4 s from 32 concurrent callers on one address",
        answers.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rm_does_not_limit_trys_by_client_address() {
    // Every Try of the system comes from the AP's one address: 1200 Trys from this one address,
    // 64 at a time, far over what one address could send under the former per-address Try limit
    // (200 per second, bursts of 400), are all applied.
    let bank = Rm::from(spawn_bank(Role::TransOut).await);
    let started = Instant::now();
    let mut statuses = Vec::new();
    for round in 0..(1200 / 64 + 1) {
        let batch = (0..64).map(|i| {
            let bank = &bank;
            async move {
                let gid = format!("flood-{round}-{i}");
                let body = json!({ "account_id": i % 10 + 1, "amount": 1 });
                bank.call("TransOutTry", &gid, "try", &body).await
            }
        });
        statuses.extend(join_all(batch).await.into_iter().map(|(status, _)| status));
    }
    let elapsed = started.elapsed();
    assert!(
        statuses.iter().all(|&s| s == 200),
        "refused: {:?}",
        statuses.iter().filter(|&&s| s != 200).collect::<Vec<_>>()
    );
    eprintln!("{} Trys from one address in {elapsed:?}", statuses.len());
}
