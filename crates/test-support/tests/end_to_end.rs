//! The whole system through real HTTP on real Postgres: the AP fires global transactions, the
//! coordinator drives the second phase, the banks and the stock service apply them.

use std::time::Duration;

use serde_json::json;
use tcc::client::{BranchError, TccClient, TransOptions};
use test_support::spawn::{
    all_succeeded, ops, spawn_coordinator, spawn_coordinator_with, spawn_system, tcc_transfer,
    wait_for_record, wait_for_status, Spawned, System,
};

const SEED_BALANCE: i64 = 1_000_000;

#[tokio::test]
async fn fire_tcc_moves_the_amount_from_bank_a_to_bank_b() {
    let sys = spawn_system().await;

    let (status, answer) = sys.fire("/api/fireTcc?amount=30&from=1&to=2").await;

    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "succeed");
    let gid = answer["gid"].as_str().expect("gid");
    assert_eq!(
        sys.balances(&sys.trans_out, 1).await,
        (SEED_BALANCE - 30, 0)
    );
    assert_eq!(sys.balances(&sys.trans_in, 2).await, (SEED_BALANCE + 30, 0));
    let record = sys.query(gid).await;
    assert_eq!(record["transaction"]["status"], "succeed");
    let confirms = ops(&record, "confirm");
    assert_eq!(confirms.len(), 2);
    assert!(
        confirms.iter().all(|b| b["status"] == "succeed"),
        "{record:#}"
    );
    assert!(ops(&record, "cancel").iter().all(|b| b["attempts"] == 0));
}

#[tokio::test]
async fn fire_tcc_rollback_cancels_both_branches_and_changes_no_balance() {
    let sys = spawn_system().await;

    let (status, answer) = sys.fire("/api/fireTccRollback?amount=30").await;

    assert_eq!(status, 409, "{answer}");
    assert_eq!(answer["status"], "failed");
    assert!(
        answer["reason"].as_str().unwrap().contains("02"),
        "{answer}"
    );
    let gid = answer["gid"].as_str().unwrap();
    assert_eq!(sys.balances(&sys.trans_out, 1).await, (SEED_BALANCE, 0));
    assert_eq!(sys.balances(&sys.trans_in, 1).await, (SEED_BALANCE, 0));
    assert_eq!(sys.account(&sys.trans_in, 1).await["pending_in"], 0);
    let record = sys.query(gid).await;
    assert_eq!(record["transaction"]["status"], "failed");
    // Cancel reaches both branches, the refused one (02) included, in reverse order.
    let cancels = ops(&record, "cancel");
    assert_eq!(cancels.len(), 2);
    assert!(
        cancels.iter().all(|b| b["status"] == "succeed"),
        "{record:#}"
    );
    let finished = |id: &str| {
        let op = cancels.iter().find(|b| b["branch_id"] == id).unwrap();
        chrono::DateTime::parse_from_rfc3339(op["finish_time"].as_str().unwrap()).unwrap()
    };
    assert!(finished("02") < finished("01"), "{record:#}");
    assert!(ops(&record, "confirm").iter().all(|b| b["attempts"] == 0));
}

#[tokio::test]
async fn a_transfer_larger_than_the_spendable_balance_rolls_back() {
    let sys = spawn_system().await;

    let (status, answer) = sys
        .fire(&format!("/api/fireTcc?amount={}", SEED_BALANCE + 1))
        .await;

    assert_eq!(status, 409, "{answer}");
    assert_eq!(answer["status"], "failed");
    assert!(
        answer["reason"]
            .as_str()
            .unwrap()
            .contains("insufficient funds"),
        "{answer}"
    );
    assert_eq!(sys.balances(&sys.trans_out, 1).await, (SEED_BALANCE, 0));
    assert_eq!(sys.balances(&sys.trans_in, 1).await, (SEED_BALANCE, 0));
}

#[tokio::test]
async fn a_purchase_deducts_stock_and_moves_the_price_from_buyer_to_merchant() {
    let sys = spawn_system().await;
    let before = sys.product(3).await;
    let price = before["price"].as_i64().unwrap();

    let (status, answer) = sys
        .fire("/api/firePurchase?product_id=3&quantity=4&buyer=5&merchant=6")
        .await;

    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "succeed");
    let after = sys.product(3).await;
    assert_eq!(
        after["stock"].as_i64().unwrap(),
        before["stock"].as_i64().unwrap() - 4
    );
    assert_eq!(after["reserved"], 0);
    assert_eq!(
        sys.balances(&sys.trans_out, 5).await,
        (SEED_BALANCE - 4 * price, 0)
    );
    assert_eq!(
        sys.balances(&sys.trans_in, 6).await,
        (SEED_BALANCE + 4 * price, 0)
    );
    let record = sys.query(answer["gid"].as_str().unwrap()).await;
    assert_eq!(ops(&record, "confirm").len(), 3);
}

#[tokio::test]
async fn a_confirm_that_answers_500_once_is_retried_until_it_succeeds() {
    let sys = spawn_system().await;
    let client = TccClient::new(sys.coordinator.dtm_url());
    let options = TransOptions {
        retry_interval: Some(1),
        ..TransOptions::default()
    };

    let gid = tcc_transfer(
        &client,
        &sys.trans_out.url("/api"),
        &sys.trans_in.url("/api"),
        options,
        json!({"confirm": "error:1"}),
    )
    .await;

    let record = sys
        .wait_for_status(&gid, "succeed", Duration::from_secs(15))
        .await;
    let confirm_in = ops(&record, "confirm")
        .into_iter()
        .find(|b| b["branch_id"] == "02")
        .unwrap();
    assert_eq!(confirm_in["attempts"], 2, "{record:#}");
    assert_eq!(sys.balances(&sys.trans_in, 1).await, (SEED_BALANCE + 30, 0));
    assert_eq!(
        sys.balances(&sys.trans_out, 1).await,
        (SEED_BALANCE - 30, 0)
    );
}

#[tokio::test]
async fn a_restarted_coordinator_finishes_a_submitted_transaction() {
    let sys = spawn_system().await;
    // This test's own coordinator, stopped and restarted on the same database.
    let first = spawn_coordinator().await;
    let dtm = first.dtm_url();
    let client = TccClient::new(&dtm);
    let options = TransOptions {
        retry_interval: Some(2),
        ..TransOptions::default()
    };
    // TransIn's first Confirm fails, so the transaction is still `submitted` when the TM stops.
    let gid = tcc_transfer(
        &client,
        &sys.trans_out.url("/api"),
        &sys.trans_in.url("/api"),
        options,
        json!({"confirm": "error:1"}),
    )
    .await;
    let http = reqwest::Client::new();
    let record = wait_for_record(
        &http,
        &dtm,
        &gid,
        Duration::from_secs(10),
        "a failed Confirm",
        |r| {
            ops(r, "confirm")
                .iter()
                .any(|b| b["attempts"] == 1 && b["status"] == "prepared")
        },
    )
    .await;
    assert_eq!(record["transaction"]["status"], "submitted");

    let db = first.stop().await.expect("the coordinator's database");
    let second = spawn_coordinator_with(db, |_| {}).await;

    wait_for_status(
        &http,
        &second.dtm_url(),
        &gid,
        "succeed",
        Duration::from_secs(15),
    )
    .await;
    assert_eq!(sys.balances(&sys.trans_in, 1).await, (SEED_BALANCE + 30, 0));
    assert_eq!(
        sys.balances(&sys.trans_out, 1).await,
        (SEED_BALANCE - 30, 0)
    );
}

#[tokio::test]
async fn an_ap_that_panics_inside_the_transaction_aborts_it() {
    let sys = spawn_system().await;
    let client = TccClient::new(sys.coordinator.dtm_url());
    let gid = client.new_gid().await.unwrap();
    let out = sys.trans_out.url("/api");
    let (c, g) = (client.clone(), gid.clone());

    let joined = tokio::spawn(async move {
        c.tcc_global_transaction(&g, TransOptions::default(), |tcc| async move {
            tcc.call_branch(
                &json!({"account_id": 1, "amount": 30}),
                &format!("{out}/TransOutTry"),
                &format!("{out}/TransOutConfirm"),
                &format!("{out}/TransOutCancel"),
            )
            .await?;
            if tcc.gid().is_empty() {
                return Ok::<(), BranchError>(());
            }
            panic!("the AP crashed after the Try");
        })
        .await
    })
    .await;

    assert!(joined.is_err(), "the panic resumes after the abort");
    let record = sys
        .wait_for_status(&gid, "failed", Duration::from_secs(10))
        .await;
    assert!(record["transaction"]["rollback_reason"]
        .as_str()
        .unwrap()
        .contains("panic"));
    assert_eq!(sys.balances(&sys.trans_out, 1).await, (SEED_BALANCE, 0));
}

#[tokio::test]
async fn an_ongoing_confirm_is_polled_at_a_fixed_interval_without_backoff_growth() {
    let sys = spawn_system().await;

    let (status, answer) = sys
        .fire("/api/fireTcc?trans_out_confirm=ongoing:2&retry_interval=1&wait_result=false")
        .await;

    assert_eq!(status, 200, "{answer}");
    let gid = answer["gid"].as_str().unwrap();
    let record = sys
        .wait_for_status(gid, "succeed", Duration::from_secs(15))
        .await;
    let confirm_out = ops(&record, "confirm")
        .into_iter()
        .find(|b| b["branch_id"] == "01")
        .unwrap();
    assert_eq!(confirm_out["attempts"], 3, "{record:#}");
    // Two ONGOING answers, and the backoff step is still the base interval.
    assert_eq!(record["transaction"]["next_cron_interval"], 1, "{record:#}");
    assert_eq!(
        sys.balances(&sys.trans_out, 1).await,
        (SEED_BALANCE - 30, 0)
    );
}

/// `tcc_rm_branch_requests_total{op, outcome}` of the RM `rm`.
async fn rm_requests(sys: &System, rm: &Spawned, op: &str, outcome: &str) -> f64 {
    test_support::metrics::scrape(&sys.http, &rm.base_url)
        .await
        .value(
            "tcc_rm_branch_requests_total",
            &[("op", op), ("outcome", outcome)],
        )
}

#[tokio::test]
async fn a_confirm_answered_202_or_307_is_a_transient_error_retried_until_a_200_and_applied_once() {
    let sys = spawn_system().await;
    // TransIn's Confirm: 202 {"dtm_result":"SUCCESS"} twice without crediting, then normal.
    // TransOut's Confirm: a 307 to a host the coordinator never calls, then normal.
    let cases = [
        ("trans_in_confirm=accepted:2&from=1&to=2", "02", 3),
        ("trans_out_confirm=redirect:1&from=3&to=4", "01", 2),
    ];
    for (faults, branch_id, attempts) in cases {
        let (status, answer) = sys
            .fire(&format!(
                "/api/fireTcc?{faults}&retry_interval=1&wait_result=false"
            ))
            .await;
        assert_eq!(status, 200, "{answer}");
        let gid = answer["gid"].as_str().unwrap();
        let record = sys
            .wait_for_status(gid, "succeed", Duration::from_secs(20))
            .await;
        let confirm = ops(&record, "confirm")
            .into_iter()
            .find(|b| b["branch_id"] == branch_id)
            .unwrap();
        assert_eq!(confirm["attempts"], attempts, "{faults}: {record:#}");
        assert!(all_succeeded(&record, "confirm"), "{record:#}");
    }

    // Each Confirm applied exactly once: credited and debited once, nothing left frozen.
    for (from, to) in [(1, 2), (3, 4)] {
        assert_eq!(
            sys.balances(&sys.trans_out, from).await,
            (SEED_BALANCE - 30, 0)
        );
        assert_eq!(
            sys.balances(&sys.trans_in, to).await,
            (SEED_BALANCE + 30, 0)
        );
        assert_eq!(sys.account(&sys.trans_in, to).await["pending_in"], 0);
    }
    for (rm, misbehaved) in [(&sys.trans_in, 2.0), (&sys.trans_out, 1.0)] {
        assert_eq!(
            rm_requests(&sys, rm, "confirm", "misbehaved").await,
            misbehaved
        );
        assert_eq!(rm_requests(&sys, rm, "confirm", "applied").await, 2.0);
        assert_eq!(rm_requests(&sys, rm, "confirm", "duplicate").await, 0.0);
    }
    // The coordinator read the 202s and the 307 as errors, not as successes.
    let tm = test_support::metrics::scrape(&sys.http, &sys.coordinator.base_url).await;
    assert_eq!(
        tm.value(
            "tcc_branch_calls_total",
            &[("op", "confirm"), ("result", "error")]
        ),
        3.0
    );
}

#[tokio::test]
async fn a_try_answered_202_or_307_makes_the_ap_abort_and_leaves_nothing_frozen() {
    let sys = spawn_system().await;

    for (faults, answered) in [
        ("trans_in_try=accepted:1&from=1&to=2", "HTTP 202"),
        ("trans_out_try=redirect:1&from=3&to=4", "HTTP 307"),
    ] {
        let (status, answer) = sys.fire(&format!("/api/fireTcc?{faults}")).await;

        assert_eq!(status, 409, "{answer}");
        assert_eq!(answer["status"], "failed", "{answer}");
        let reason = answer["reason"].as_str().expect("reason");
        assert!(reason.contains(answered), "{faults}: {answer}");
        let record = sys.query(answer["gid"].as_str().unwrap()).await;
        assert!(all_succeeded(&record, "cancel"), "{record:#}");
        assert!(ops(&record, "confirm").iter().all(|b| b["attempts"] == 0));
    }

    for (from, to) in [(1, 2), (3, 4)] {
        assert_eq!(sys.balances(&sys.trans_out, from).await, (SEED_BALANCE, 0));
        assert_eq!(sys.balances(&sys.trans_in, to).await, (SEED_BALANCE, 0));
        assert_eq!(sys.account(&sys.trans_in, to).await["pending_in"], 0);
    }
    // A misbehaving Try did nothing, so its Cancel was an empty compensation. TransOut's Try
    // ran before TransIn's 202 and was cancelled; TransIn's was never called after TransOut's
    // 307, nor registered.
    assert_eq!(
        rm_requests(&sys, &sys.trans_in, "try", "misbehaved").await,
        1.0
    );
    assert_eq!(
        rm_requests(&sys, &sys.trans_in, "cancel", "empty_compensation").await,
        1.0
    );
    assert_eq!(
        rm_requests(&sys, &sys.trans_out, "try", "misbehaved").await,
        1.0
    );
    assert_eq!(
        rm_requests(&sys, &sys.trans_out, "try", "applied").await,
        1.0
    );
    assert_eq!(
        rm_requests(&sys, &sys.trans_out, "cancel", "applied").await,
        1.0
    );
    assert_eq!(
        rm_requests(&sys, &sys.trans_out, "cancel", "empty_compensation").await,
        1.0
    );
}

#[tokio::test]
async fn without_wait_result_the_ap_answers_at_submit_and_the_second_phase_finishes_later() {
    let sys = spawn_system().await;

    let (status, answer) = sys
        .fire("/api/fireTcc?wait_result=false&trans_in_confirm=delay:300")
        .await;

    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "submitted");
    let gid = answer["gid"].as_str().unwrap();
    sys.wait_for_status(gid, "succeed", Duration::from_secs(10))
        .await;
    assert_eq!(sys.balances(&sys.trans_in, 1).await, (SEED_BALANCE + 30, 0));
}

#[tokio::test]
async fn without_wait_result_an_abort_answers_aborting_at_once_and_the_rollback_finishes_later() {
    let sys = spawn_system().await;

    // TransOut's Cancel takes 2 s, so the rollback cannot have finished when the AP answers.
    let (status, answer) = sys
        .fire("/api/fireTccRollback?amount=30&wait_result=false&trans_out_cancel=delay:2000")
        .await;

    assert_eq!(status, 409, "{answer}");
    assert_eq!(answer["status"], "aborting", "{answer}");
    let gid = answer["gid"].as_str().unwrap();
    // The funds TransOut's Try froze are still frozen: its Cancel is in its delay.
    assert_eq!(sys.balances(&sys.trans_out, 1).await, (SEED_BALANCE, 30));
    let record = sys
        .wait_for_status(gid, "failed", Duration::from_secs(10))
        .await;
    assert!(all_succeeded(&record, "cancel"), "{record:#}");
    assert_eq!(sys.balances(&sys.trans_out, 1).await, (SEED_BALANCE, 0));
    assert_eq!(sys.balances(&sys.trans_in, 1).await, (SEED_BALANCE, 0));
}

#[tokio::test]
async fn a_failure_answer_from_confirm_is_retried_and_alerted_never_dropped() {
    let sys = spawn_system().await;
    let tm = spawn_coordinator_with(test_support::TestDb::create("coordinator"), |s| {
        s.retry_max_interval = 1;
        s.alert_after_attempts = 2;
    })
    .await;
    let client = TccClient::new(tm.dtm_url());
    let options = TransOptions {
        retry_interval: Some(1),
        ..TransOptions::default()
    };

    let gid = tcc_transfer(
        &client,
        &sys.trans_out.url("/api"),
        &sys.trans_in.url("/api"),
        options,
        json!({"confirm": "failure"}),
    )
    .await;

    // A Confirm must eventually succeed: a FAILURE is a bug in the branch, so the TM keeps
    // retrying (and alerting) instead of giving up on the transaction.
    let http = reqwest::Client::new();
    let confirm_in = |r: &serde_json::Value| {
        ops(r, "confirm")
            .into_iter()
            .find(|b| b["branch_id"] == "02")
            .unwrap()
            .clone()
    };
    let record = wait_for_record(
        &http,
        &tm.dtm_url(),
        &gid,
        Duration::from_secs(15),
        "3 Confirm attempts",
        |r| confirm_in(r)["attempts"].as_i64().unwrap() >= 3,
    )
    .await;
    assert_eq!(record["transaction"]["status"], "submitted", "{record:#}");
    assert_eq!(confirm_in(&record)["status"], "prepared");
    assert!(
        confirm_in(&record)["last_result"]
            .as_str()
            .unwrap()
            .starts_with("failure"),
        "{record:#}"
    );
    let m = test_support::metrics::scrape(&http, &tm.base_url).await;
    assert!(m.value("tcc_branch_alerts_total", &[("op", "confirm")]) >= 1.0);
    assert!(
        m.value(
            "tcc_branch_calls_total",
            &[("op", "confirm"), ("result", "failure")]
        ) >= 3.0
    );
    // TransIn's credit was never applied; TransOut's debit was (its Confirm succeeded).
    assert_eq!(sys.account(&sys.trans_in, 1).await["pending_in"], 30);
}
