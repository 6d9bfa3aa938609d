//! `GET /api/metrics` of the RMs and the AP, through real HTTP: the counters move when
//! transactions run, by op and outcome (the barrier's decisions included: applied, empty
//! compensation, duplicate, hanging), the tentative-reservation gauges follow what Trys left
//! unsettled, and the AP counts fire requests by scenario and outcome.
//!
//! Each test spawns its own binaries, each with its own registry, so exact counts hold while
//! tests run in parallel in one process. Samples are looked up by name and exact label set
//! ([`test_support::metrics::Exposition`]).

use std::time::{Duration, Instant};

use bank::Role;
use serde_json::{json, Value};
use test_support::metrics::{scrape, Exposition};
use test_support::rm::{assert_error, assert_failure, assert_success, Rm};
use test_support::spawn::{
    spawn_bank, spawn_stock, spawn_system, spawn_system_with, unreachable_url, Spawned, System,
};

const REQUESTS: &str = "tcc_rm_branch_requests_total";
const TENTATIVE: &str = "tcc_rm_tentative_reservations";
const OLDEST_AGE: &str = "tcc_rm_tentative_oldest_age_seconds";
const GLOBAL_TRANSACTIONS: &str = "tcc_ap_global_transactions_total";
const FIRE_DURATION_COUNT: &str = "tcc_ap_fire_duration_seconds_count";
const FIRE_DURATION_SUM: &str = "tcc_ap_fire_duration_seconds_sum";

const OPS: [&str; 3] = ["try", "confirm", "cancel"];
const RM_OUTCOMES: [&str; 11] = [
    "applied",
    "empty_compensation",
    "duplicate",
    "hanging",
    "refused",
    "ongoing",
    "error",
    "misbehaved",
    "bad_request",
    "unauthorized",
    "not_registered",
];

/// `tcc_rm_branch_requests_total{op, outcome}` of one scrape.
fn requests(metrics: &Exposition, op: &str, outcome: &str) -> f64 {
    metrics.value(REQUESTS, &[("op", op), ("outcome", outcome)])
}

/// Asserts that the RM's branch request counters are exactly `expected` (`(op, outcome, count)`)
/// and 0 for every other `(op, outcome)`: a request counted twice, or under the wrong outcome,
/// fails here.
fn assert_requests(what: &str, metrics: &Exposition, expected: &[(&str, &str, f64)]) {
    for op in OPS {
        for outcome in RM_OUTCOMES {
            let want = expected
                .iter()
                .find(|(o, k, _)| *o == op && *k == outcome)
                .map_or(0.0, |(_, _, n)| *n);
            assert_eq!(
                requests(metrics, op, outcome),
                want,
                "{what}: {REQUESTS}{{op={op:?},outcome={outcome:?}}}"
            );
        }
    }
}

/// `tcc_ap_global_transactions_total{scenario, outcome}` of one scrape.
fn fired(metrics: &Exposition, scenario: &str, outcome: &str) -> f64 {
    metrics.value(
        GLOBAL_TRANSACTIONS,
        &[("scenario", scenario), ("outcome", outcome)],
    )
}

/// Scrapes `spawned`'s `/api/metrics`.
async fn metrics_of(http: &reqwest::Client, spawned: &Spawned) -> Exposition {
    scrape(http, &spawned.base_url).await
}

/// A transfer body for a bank branch.
fn transfer(amount: i64) -> Value {
    json!({ "account_id": 1, "amount": amount })
}

#[tokio::test]
async fn a_fire_tcc_counts_an_applied_try_and_confirm_in_each_bank_and_a_commit_in_the_app() {
    let sys = spawn_system().await;
    let (status, body) = sys.fire("/api/fireTcc?amount=30").await;
    assert_eq!(status, 200, "{body}");

    // wait_result (the default): the AP answered once every Confirm had succeeded, and each RM
    // counts a request before answering it.
    for bank in [&sys.trans_out, &sys.trans_in] {
        let m = metrics_of(&sys.http, bank).await;
        assert_requests(
            bank.name,
            &m,
            &[("try", "applied", 1.0), ("confirm", "applied", 1.0)],
        );
        assert_eq!(m.value(TENTATIVE, &[]), 0.0, "{}", bank.name);
        assert_eq!(m.value(OLDEST_AGE, &[]), 0.0, "{}", bank.name);
    }
    let stock = metrics_of(&sys.http, &sys.stock).await;
    assert_requests("stock (not in a transfer)", &stock, &[]);

    let app = metrics_of(&sys.http, &sys.app).await;
    assert_eq!(fired(&app, "fireTcc", "committed"), 1.0);
    assert_eq!(fired(&app, "fireTcc", "rolled_back"), 0.0);
    assert_eq!(fired(&app, "fireTccRollback", "committed"), 0.0);
    let scenario = [("scenario", "fireTcc")];
    assert_eq!(app.value(FIRE_DURATION_COUNT, &scenario), 1.0);
    assert!(app.value(FIRE_DURATION_SUM, &scenario) > 0.0);
    assert_eq!(
        app.value(FIRE_DURATION_COUNT, &[("scenario", "firePurchase")]),
        0.0
    );
}

#[tokio::test]
async fn a_rollback_counts_the_refused_try_and_an_empty_compensation_in_trans_in() {
    let sys = spawn_system().await;
    let (status, body) = sys.fire("/api/fireTccRollback?amount=30").await;
    assert_eq!(status, 409, "{body}");

    // TransIn's Try was refused inside the barrier (its barrier row rolled back with it), so the
    // TM's Cancel finds no Try there: an empty compensation. TransOut's Try had frozen funds,
    // which its Cancel releases.
    let trans_in = metrics_of(&sys.http, &sys.trans_in).await;
    assert_requests(
        "trans-in",
        &trans_in,
        &[
            ("try", "refused", 1.0),
            ("cancel", "empty_compensation", 1.0),
        ],
    );
    let trans_out = metrics_of(&sys.http, &sys.trans_out).await;
    assert_requests(
        "trans-out",
        &trans_out,
        &[("try", "applied", 1.0), ("cancel", "applied", 1.0)],
    );
    assert_eq!(trans_out.value(TENTATIVE, &[]), 0.0);

    let app = metrics_of(&sys.http, &sys.app).await;
    assert_eq!(fired(&app, "fireTccRollback", "rolled_back"), 1.0);
    assert_eq!(fired(&app, "fireTccRollback", "committed"), 0.0);
    assert_eq!(
        app.value(FIRE_DURATION_COUNT, &[("scenario", "fireTccRollback")]),
        1.0
    );
}

#[tokio::test]
async fn a_duplicate_confirm_sent_directly_to_a_bank_counts_as_duplicate() {
    let bank = Rm::from(spawn_bank(Role::TransOut).await);
    assert_success(
        &bank
            .call("TransOutTry", "g-dup", "try", &transfer(30))
            .await,
    );
    assert_success(
        &bank
            .call("TransOutConfirm", "g-dup", "confirm", &transfer(30))
            .await,
    );
    assert_success(
        &bank
            .call("TransOutConfirm", "g-dup", "confirm", &transfer(30))
            .await,
    );

    let m = metrics_of(&bank.http, &bank.spawned).await;
    assert_requests(
        "trans-out",
        &m,
        &[
            ("try", "applied", 1.0),
            ("confirm", "applied", 1.0),
            ("confirm", "duplicate", 1.0),
        ],
    );
}

#[tokio::test]
async fn a_try_arriving_after_its_cancel_counts_as_hanging_and_reserves_nothing() {
    let bank = Rm::from(spawn_bank(Role::TransIn).await);
    assert_success(
        &bank
            .call("TransInCancel", "g-hang", "cancel", &transfer(30))
            .await,
    );
    assert_success(
        &bank
            .call("TransInTry", "g-hang", "try", &transfer(30))
            .await,
    );

    let m = metrics_of(&bank.http, &bank.spawned).await;
    assert_requests(
        "trans-in",
        &m,
        &[
            ("cancel", "empty_compensation", 1.0),
            ("try", "hanging", 1.0),
        ],
    );
    assert_eq!(m.value(TENTATIVE, &[]), 0.0);
}

#[tokio::test]
async fn refusals_injected_errors_ongoing_answers_and_bad_requests_are_counted_apart() {
    let bank = Rm::from(spawn_bank(Role::TransOut).await);
    let with_fault =
        |fault: &str| json!({ "account_id": 1, "amount": 30, "fault": { "try": fault } });
    assert_failure(
        &bank
            .call("TransOutTry", "g-poor", "try", &transfer(1_000_000_000))
            .await,
        "insufficient funds",
    );
    assert_error(
        &bank
            .call("TransOutTry", "g-err", "try", &with_fault("error"))
            .await,
        500,
        "injected_error",
    );
    let (status, _) = bank
        .call("TransOutTry", "g-ongoing", "try", &with_fault("ongoing"))
        .await;
    assert_eq!(status, 425);
    // Bad requests, each counted under the op the endpoint serves: a value out of range, the
    // wrong op for the endpoint (twice), a malformed Try body (Confirm and Cancel never fail for
    // their body), a query without a gid.
    assert_error(
        &bank
            .call("TransOutTry", "g-zero", "try", &transfer(0))
            .await,
        400,
        "invalid_request",
    );
    assert_error(
        &bank
            .call("TransOutConfirm", "g-op", "cancel", &transfer(30))
            .await,
        400,
        "op_mismatch",
    );
    assert_error(
        &bank
            .call("TransOutCancel", "g-op", "confirm", &transfer(30))
            .await,
        400,
        "op_mismatch",
    );
    let (status, _) = bank
        .raw(
            "TransOutTry",
            "gid=g-json&trans_type=tcc&branch_id=01&op=try",
            "application/json",
            "{not json".into(),
        )
        .await;
    assert_eq!(status, 400);
    let (status, _) = bank
        .raw(
            "TransOutTry",
            "trans_type=tcc&branch_id=01&op=try",
            "application/json",
            transfer(30).to_string(),
        )
        .await;
    assert_eq!(status, 400);

    let m = metrics_of(&bank.http, &bank.spawned).await;
    assert_requests(
        "trans-out",
        &m,
        &[
            ("try", "refused", 1.0),
            ("try", "error", 1.0),
            ("try", "ongoing", 1.0),
            ("try", "bad_request", 3.0),
            ("confirm", "bad_request", 1.0),
            ("cancel", "bad_request", 1.0),
        ],
    );
    assert_eq!(m.value(TENTATIVE, &[]), 0.0, "nothing was reserved");
}

/// Scrapes `rm` until its oldest tentative age is greater than `than`, or panics after 10 s.
async fn wait_for_older(rm: &Rm, than: f64) -> Exposition {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = metrics_of(&rm.http, &rm.spawned).await;
        if m.value(OLDEST_AGE, &[]) > than {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "{} stayed at or below {than} s",
            OLDEST_AGE
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_try_left_without_confirm_or_cancel_is_one_tentative_hold_whose_age_grows() {
    let bank = Rm::from(spawn_bank(Role::TransOut).await);
    let empty = metrics_of(&bank.http, &bank.spawned).await;
    assert_eq!(empty.value(TENTATIVE, &[]), 0.0);
    assert_eq!(empty.value(OLDEST_AGE, &[]), 0.0);

    assert_success(
        &bank
            .call("TransOutTry", "g-dangling", "try", &transfer(30))
            .await,
    );
    let first = metrics_of(&bank.http, &bank.spawned).await;
    assert_eq!(first.value(TENTATIVE, &[]), 1.0);
    let age = first.value(OLDEST_AGE, &[]);
    assert!(age >= 0.0, "{OLDEST_AGE} = {age}");
    let later = wait_for_older(&bank, age).await;
    assert_eq!(later.value(TENTATIVE, &[]), 1.0);

    // Settled, it no longer dangles.
    assert_success(
        &bank
            .call("TransOutCancel", "g-dangling", "cancel", &transfer(30))
            .await,
    );
    let settled = metrics_of(&bank.http, &bank.spawned).await;
    assert_eq!(settled.value(TENTATIVE, &[]), 0.0);
    assert_eq!(settled.value(OLDEST_AGE, &[]), 0.0);
}

#[tokio::test]
async fn a_stock_reservation_left_tentative_is_counted_by_the_stock_service() {
    let stock = Rm::from(spawn_stock().await);
    let reserve = json!({ "product_id": 1, "quantity": 2 });
    assert_success(&stock.call("StockTry", "g-res-1", "try", &reserve).await);
    assert_success(&stock.call("StockTry", "g-res-2", "try", &reserve).await);
    assert_success(
        &stock
            .call("StockConfirm", "g-res-2", "confirm", &reserve)
            .await,
    );

    let m = wait_for_older(&stock, 0.0).await;
    assert_eq!(m.value(TENTATIVE, &[]), 1.0);
    assert_requests(
        "stock",
        &m,
        &[("try", "applied", 2.0), ("confirm", "applied", 1.0)],
    );
}

#[tokio::test]
async fn the_ap_counts_fire_requests_by_scenario_and_outcome() {
    let sys = spawn_system().await;
    for path in [
        "/api/fireTcc",
        "/api/fireTcc",
        "/api/fireTccRollback",
        "/api/firePurchase",
    ] {
        let (status, body) = sys.fire(path).await;
        assert!(status == 200 || status == 409, "{path}: {status} {body}");
    }
    // Refused before any global transaction: counted, but not timed.
    let (status, _) = sys.fire("/api/fireTcc?amount=0").await;
    assert_eq!(status, 400);
    let (status, _) = sys.fire("/api/firePurchase?product_id=999").await;
    assert_eq!(status, 400);

    let app = metrics_of(&sys.http, &sys.app).await;
    let expected = [
        ("fireTcc", "committed", 2.0),
        ("fireTcc", "invalid", 1.0),
        ("fireTccRollback", "rolled_back", 1.0),
        ("firePurchase", "committed", 1.0),
        ("firePurchase", "invalid", 1.0),
    ];
    for scenario in [
        "fireTcc",
        "fireTccRollback",
        "firePurchase",
        "fireTccNested",
    ] {
        for outcome in [
            "committed",
            "rolled_back",
            "coordinator_error",
            "stock_unavailable",
            "invalid",
        ] {
            let want = expected
                .iter()
                .find(|(s, o, _)| *s == scenario && *o == outcome)
                .map_or(0.0, |(_, _, n)| *n);
            assert_eq!(fired(&app, scenario, outcome), want, "{scenario} {outcome}");
        }
    }
    for (scenario, timed) in [
        ("fireTcc", 2.0),
        ("fireTccRollback", 1.0),
        ("firePurchase", 1.0),
        ("fireTccNested", 0.0),
    ] {
        assert_eq!(
            app.value(FIRE_DURATION_COUNT, &[("scenario", scenario)]),
            timed,
            "{scenario}"
        );
    }
    // The purchase went through the stock service, which counted it too.
    let stock = metrics_of(&sys.http, &sys.stock).await;
    assert_requests(
        "stock",
        &stock,
        &[("try", "applied", 1.0), ("confirm", "applied", 1.0)],
    );
}

#[tokio::test]
async fn an_unreachable_coordinator_or_stock_service_is_counted_as_such_by_the_ap() {
    let sys: System = spawn_system_with(
        |_| {},
        |app| {
            app.dtm_url = unreachable_url("/api/dtmsvr");
            app.stock_url = unreachable_url("/api");
        },
    )
    .await;
    let (status, body) = sys.fire("/api/fireTcc").await;
    assert_eq!(status, 503, "{body}");
    let (status, body) = sys.fire("/api/firePurchase").await;
    assert_eq!(status, 502, "{body}");

    let app = metrics_of(&sys.http, &sys.app).await;
    assert_eq!(fired(&app, "fireTcc", "coordinator_error"), 1.0);
    assert_eq!(fired(&app, "firePurchase", "stock_unavailable"), 1.0);
    assert_eq!(fired(&app, "firePurchase", "coordinator_error"), 0.0);
    assert_eq!(
        app.value(FIRE_DURATION_COUNT, &[("scenario", "fireTcc")]),
        1.0
    );
}
