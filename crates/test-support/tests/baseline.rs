//! The benchmark's non-TCC floor (`fireBaseline`, docs/BENCHMARKS.md) through real HTTP on real
//! Postgres:
//! it moves the money with one local transaction per bank, refuses what a Try would refuse, and
//! touches neither the coordinator nor the holds.

use test_support::spawn::{spawn_system, spawn_system_with_baseline};

const SEED_BALANCE: i64 = 1_000_000;

#[tokio::test]
async fn fire_baseline_debits_bank_a_and_credits_bank_b_without_a_global_transaction() {
    let sys = spawn_system_with_baseline().await;

    let (status, answer) = sys
        .fire("/api/fireBaseline?amount=30&from=1&to=2&wait_result=true")
        .await;

    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "done");
    assert_eq!(
        sys.balances(&sys.trans_out, 1).await,
        (SEED_BALANCE - 30, 0)
    );
    assert_eq!(sys.balances(&sys.trans_in, 2).await, (SEED_BALANCE + 30, 0));
    let transactions = sys.transactions().await;
    assert!(transactions.is_empty(), "{transactions:?}");
}

#[tokio::test]
async fn fire_baseline_refuses_a_debit_above_the_spendable_balance_and_moves_nothing() {
    let sys = spawn_system_with_baseline().await;

    let (status, answer) = sys
        .fire(&format!(
            "/api/fireBaseline?amount={}&from=1&to=2",
            SEED_BALANCE + 1
        ))
        .await;

    assert_eq!(status, 409, "{answer}");
    assert_eq!(answer["error"], "refused");
    assert_eq!(sys.balances(&sys.trans_out, 1).await, (SEED_BALANCE, 0));
    assert_eq!(sys.balances(&sys.trans_in, 2).await, (SEED_BALANCE, 0));
}

#[tokio::test]
async fn fire_baseline_checks_its_parameters_like_fire_tcc() {
    let sys = spawn_system_with_baseline().await;

    let (status, answer) = sys.fire("/api/fireBaseline?amount=0").await;

    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"], "invalid_parameter");
}

#[tokio::test]
async fn without_baseline_endpoints_on_the_unsafe_floor_is_not_served() {
    let sys = spawn_system().await;

    let (status, answer) = sys.fire("/api/fireBaseline?amount=30&from=1&to=2").await;
    assert_eq!(status, 404, "{answer}");
    let debit = sys
        .http
        .post(sys.trans_out.url("/api/BaselineTransOut"))
        .json(&serde_json::json!({ "account_id": 1, "amount": 30 }))
        .send()
        .await
        .unwrap();
    assert_eq!(debit.status(), 404);
    assert_eq!(sys.balances(&sys.trans_out, 1).await, (SEED_BALANCE, 0));
}
