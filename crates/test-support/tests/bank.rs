//! The banks (`trans-out`, `trans-in`) as RMs, through real HTTP on real Postgres: the barrier's
//! three cases, concurrent duplicates, business refusals, holds, fault injection, input
//! validation, the account view and seeding. State is checked in the database, not only in the
//! status codes.

use bank::Role;
use diesel::prelude::*;
use serde_json::{json, Value};
use test_support::rm::{assert_error, assert_failure, assert_success, Rm};
use test_support::spawn::{
    join_in_turns, spawn_bank, spawn_bank_with, spawn_system, Turn, TEST_SEED_BALANCE,
};
use test_support::TestDb;

const SEED: i64 = TEST_SEED_BALANCE;

/// A bank under test: the calls every RM test makes ([`Rm`]) plus the bank's own views
/// ([`BankViews`]).
type Bank = Rm;

/// One row of `holds`: (gid, branch_id, account_id, amount, direction, state).
type HoldRow = (String, String, i64, i64, String, String);

/// What only a bank shows: accounts and holds.
trait BankViews {
    /// A bank `role` on a fresh database.
    async fn start(role: Role) -> Bank;
    /// `GET /api/accounts/{id}`, asserting 200.
    async fn account(&self, id: i64) -> Value;
    /// `(balance, trading_balance, pending_in)` of an account, through the API.
    async fn balances(&self, id: i64) -> (i64, i64, i64);
    /// Every hold, in insertion order.
    fn holds(&self) -> Vec<HoldRow>;
}

impl BankViews for Bank {
    async fn start(role: Role) -> Bank {
        Bank::from(spawn_bank(role).await)
    }

    async fn account(&self, id: i64) -> Value {
        self.view(&format!("/api/accounts/{id}")).await
    }

    async fn balances(&self, id: i64) -> (i64, i64, i64) {
        let a = self.account(id).await;
        (
            a["balance"].as_i64().unwrap(),
            a["trading_balance"].as_i64().unwrap(),
            a["pending_in"].as_i64().unwrap(),
        )
    }

    fn holds(&self) -> Vec<HoldRow> {
        use bank::schema::holds::dsl::*;
        self.load(
            holds
                .select((gid, branch_id, account_id, amount, direction, state))
                .order(id),
        )
    }
}

fn transfer(account_id: i64, amount: i64) -> Value {
    json!({ "account_id": account_id, "amount": amount })
}

fn hold(gid: &str, account_id: i64, amount: i64, direction: &str, state: &str) -> HoldRow {
    (
        gid.into(),
        "01".into(),
        account_id,
        amount,
        direction.into(),
        state.into(),
    )
}

#[tokio::test]
async fn a_cancel_without_try_changes_nothing_and_answers_success() {
    let bank = Bank::start(Role::TransOut).await;

    assert_success(
        &bank
            .call("TransOutCancel", "g1", "cancel", &transfer(1, 30))
            .await,
    );

    assert_eq!(bank.balances(1).await, (SEED, 0, 0));
    assert!(bank.holds().is_empty());
    // The barrier recorded the empty compensation: the Try's slot is taken by the Cancel.
    use tcc::barrier::schema::barrier::dsl::*;
    let rows: Vec<(String, String)> = barrier
        .select((op, reason))
        .order(id)
        .load(&mut bank.db())
        .expect("barrier");
    assert_eq!(
        rows,
        [
            ("try".into(), "cancel".into()),
            ("cancel".into(), "cancel".into())
        ]
    );
}

#[tokio::test]
async fn a_try_arriving_after_its_cancel_freezes_nothing() {
    for role in [Role::TransOut, Role::TransIn] {
        let bank = Bank::start(role).await;
        let (try_, cancel) = match role {
            Role::TransOut => ("TransOutTry", "TransOutCancel"),
            Role::TransIn => ("TransInTry", "TransInCancel"),
        };

        assert_success(&bank.call(cancel, "g1", "cancel", &transfer(1, 30)).await);
        assert_success(&bank.call(try_, "g1", "try", &transfer(1, 30)).await);

        assert_eq!(bank.balances(1).await, (SEED, 0, 0), "{role}");
        assert!(bank.holds().is_empty(), "{role}");
    }
}

#[tokio::test]
async fn a_repeated_confirm_applies_once() {
    let bank = Bank::start(Role::TransOut).await;
    assert_success(
        &bank
            .call("TransOutTry", "g1", "try", &transfer(1, 30))
            .await,
    );
    assert_eq!(bank.balances(1).await, (SEED, 30, 0));

    for _ in 0..3 {
        assert_success(
            &bank
                .call("TransOutConfirm", "g1", "confirm", &transfer(1, 30))
                .await,
        );
        assert_eq!(bank.balances(1).await, (SEED - 30, 0, 0));
    }
    assert_eq!(bank.holds(), vec![hold("g1", 1, 30, "out", "confirmed")]);
}

#[tokio::test]
async fn a_try_confirm_and_cancel_each_sent_twice_concurrently_apply_once() {
    let out = Bank::start(Role::TransOut).await;
    let body = transfer(1, 30);

    let (a, b) = tokio::join!(
        out.call("TransOutTry", "g1", "try", &body),
        out.call("TransOutTry", "g1", "try", &body)
    );
    assert_success(&a);
    assert_success(&b);
    assert_eq!(out.balances(1).await, (SEED, 30, 0));

    let (a, b) = tokio::join!(
        out.call("TransOutConfirm", "g1", "confirm", &body),
        out.call("TransOutConfirm", "g1", "confirm", &body)
    );
    assert_success(&a);
    assert_success(&b);
    assert_eq!(out.balances(1).await, (SEED - 30, 0, 0));

    let body = transfer(2, 40);
    assert_success(&out.call("TransOutTry", "g2", "try", &body).await);
    let (a, b) = tokio::join!(
        out.call("TransOutCancel", "g2", "cancel", &body),
        out.call("TransOutCancel", "g2", "cancel", &body)
    );
    assert_success(&a);
    assert_success(&b);
    assert_eq!(out.balances(2).await, (SEED, 0, 0));
    assert_eq!(
        out.holds(),
        vec![
            hold("g1", 1, 30, "out", "confirmed"),
            hold("g2", 2, 40, "out", "cancelled"),
        ]
    );

    let into = Bank::start(Role::TransIn).await;
    let body = transfer(1, 25);
    let (a, b) = tokio::join!(
        into.call("TransInTry", "g3", "try", &body),
        into.call("TransInTry", "g3", "try", &body)
    );
    assert_success(&a);
    assert_success(&b);
    let (a, b) = tokio::join!(
        into.call("TransInConfirm", "g3", "confirm", &body),
        into.call("TransInConfirm", "g3", "confirm", &body)
    );
    assert_success(&a);
    assert_success(&b);
    assert_eq!(into.balances(1).await, (SEED + 25, 0, 0));
    assert_eq!(into.holds(), vec![hold("g3", 1, 25, "in", "confirmed")]);
}

#[tokio::test]
async fn a_try_racing_its_cancel_leaves_nothing_frozen_whichever_wins() {
    let bank = Bank::start(Role::TransOut).await;
    race_try_and_cancel(&bank, "TransOut", 20).await;
    // Cancel first: an empty compensation, and the late Try is skipped as hanging (nothing
    // frozen). Try first: the Cancel unfreezes what it froze (a cancelled hold).
    assert_eq!(bank.balances(1).await, (SEED, 0, 0));
    assert!(
        bank.holds().iter().all(|h| h.5 == "cancelled"),
        "{:?}",
        bank.holds()
    );
}

#[tokio::test]
async fn a_trans_in_try_racing_its_cancel_leaves_no_pending_credit_whichever_wins() {
    let bank = Bank::start(Role::TransIn).await;
    race_try_and_cancel(&bank, "TransIn", 20).await;
    // Cancel first: an empty compensation, and the late Try is skipped as hanging (no hold).
    // Try first: its pending credit is released by the Cancel (a cancelled hold).
    assert_eq!(bank.balances(1).await, (SEED, 0, 0));
    assert!(
        bank.holds().iter().all(|h| h.5 == "cancelled"),
        "{:?}",
        bank.holds()
    );
}

/// Sends the Try and the Cancel of `rounds` branches (`{service}Try`, `{service}Cancel`, 10 on
/// account 1) in turns ([`Turn`]): Try first, Cancel first, both at once; both must answer
/// SUCCESS every time. A Try that came first left a hold (cancelled since); a Cancel that came
/// first left none (empty compensation, then a hanging Try).
async fn race_try_and_cancel(bank: &Bank, service: &str, rounds: usize) {
    let (try_name, cancel_name) = (format!("{service}Try"), format!("{service}Cancel"));
    for i in 0..rounds {
        let gid = format!("race-{service}-{i}");
        let body = transfer(1, 10);
        let try_ = bank.call(&try_name, &gid, "try", &body);
        let cancel = bank.call(&cancel_name, &gid, "cancel", &body);
        let (a, b) = join_in_turns(i, try_, cancel).await;
        assert_success(&a);
        assert_success(&b);
        let held = bank.holds().iter().any(|h| h.0 == gid);
        match Turn::of(i) {
            Turn::AFirst => assert!(held, "{gid}: the Try came first, so it placed a hold"),
            Turn::BFirst => assert!(!held, "{gid}: the Cancel came first, the Try must hang"),
            Turn::Race => {}
        }
    }
}

#[tokio::test]
async fn insufficient_funds_is_a_409_failure_that_freezes_nothing() {
    let bank = Bank::start(Role::TransOut).await;

    assert_failure(
        &bank
            .call("TransOutTry", "g1", "try", &transfer(1, SEED + 1))
            .await,
        "insufficient funds",
    );
    assert_eq!(bank.balances(1).await, (SEED, 0, 0));
    assert!(bank.holds().is_empty());
    assert_eq!(
        bank.barrier_rows(),
        0,
        "a refused Try rolls back its barrier row"
    );

    // Its Cancel is an empty compensation.
    assert_success(
        &bank
            .call("TransOutCancel", "g1", "cancel", &transfer(1, SEED + 1))
            .await,
    );
    assert_eq!(bank.balances(1).await, (SEED, 0, 0));

    // Frozen funds are not spendable: 600k frozen leaves 400k for the next Try.
    assert_success(
        &bank
            .call("TransOutTry", "g2", "try", &transfer(2, 600_000))
            .await,
    );
    assert_failure(
        &bank
            .call("TransOutTry", "g3", "try", &transfer(2, 400_001))
            .await,
        "insufficient funds: account 2 has 400000 spendable, 400001 requested",
    );
    assert_success(
        &bank
            .call("TransOutTry", "g4", "try", &transfer(2, 400_000))
            .await,
    );
    assert_eq!(bank.balances(2).await, (SEED, SEED, 0));

    // The largest amount is refused, not a panic or an overflow.
    assert_failure(
        &bank
            .call("TransOutTry", "g5", "try", &transfer(3, i64::MAX))
            .await,
        "insufficient funds",
    );
}

#[tokio::test]
async fn a_locked_or_missing_account_is_refused_with_409() {
    for (role, try_) in [
        (Role::TransOut, "TransOutTry"),
        (Role::TransIn, "TransInTry"),
    ] {
        let bank = Bank::start(role).await;
        bank.sql("UPDATE accounts SET locked = true WHERE id = 3");

        assert_failure(
            &bank.call(try_, "g1", "try", &transfer(3, 30)).await,
            "account 3 is locked",
        );
        assert_failure(
            &bank.call(try_, "g2", "try", &transfer(999, 30)).await,
            "account 999 does not exist",
        );
        assert!(bank.holds().is_empty(), "{role}");
        assert_eq!(bank.barrier_rows(), 0, "{role}");
        let locked = bank.account(3).await;
        assert_eq!(
            (locked["balance"].as_i64(), locked["locked"].as_bool()),
            (Some(SEED), Some(true))
        );
        assert_eq!(locked["trading_balance"], 0);
    }
}

#[tokio::test]
async fn confirm_and_cancel_move_exactly_the_held_amount_whatever_their_body_says() {
    let bank = Bank::start(Role::TransOut).await;

    assert_success(
        &bank
            .call("TransOutTry", "g1", "try", &transfer(1, 30))
            .await,
    );
    assert_success(
        &bank
            .call("TransOutConfirm", "g1", "confirm", &transfer(2, 999))
            .await,
    );
    assert_eq!(bank.balances(1).await, (SEED - 30, 0, 0));
    assert_eq!(bank.balances(2).await, (SEED, 0, 0));

    assert_success(
        &bank
            .call("TransOutTry", "g2", "try", &transfer(3, 40))
            .await,
    );
    assert_success(
        &bank
            .call("TransOutCancel", "g2", "cancel", &transfer(3, 1))
            .await,
    );
    assert_eq!(bank.balances(3).await, (SEED, 0, 0));
}

#[tokio::test]
async fn a_confirm_without_a_hold_is_refused_and_changes_nothing() {
    let bank = Bank::start(Role::TransOut).await;

    assert_failure(
        &bank
            .call("TransOutConfirm", "g1", "confirm", &transfer(1, 30))
            .await,
        "no hold for gid=g1 branch_id=01",
    );
    assert_eq!(bank.balances(1).await, (SEED, 0, 0));
    assert_eq!(bank.barrier_rows(), 0);
}

#[tokio::test]
async fn a_trans_in_credit_stays_pending_until_confirm() {
    let bank = Bank::start(Role::TransIn).await;

    assert_success(&bank.call("TransInTry", "g1", "try", &transfer(1, 25)).await);
    assert_eq!(
        bank.balances(1).await,
        (SEED, 0, 25),
        "pending, not spendable"
    );
    assert_success(
        &bank
            .call("TransInConfirm", "g1", "confirm", &transfer(1, 25))
            .await,
    );
    assert_eq!(bank.balances(1).await, (SEED + 25, 0, 0));

    assert_success(&bank.call("TransInTry", "g2", "try", &transfer(1, 10)).await);
    assert_eq!(bank.balances(1).await, (SEED + 25, 0, 10));
    assert_success(
        &bank
            .call("TransInCancel", "g2", "cancel", &transfer(1, 10))
            .await,
    );
    assert_eq!(bank.balances(1).await, (SEED + 25, 0, 0));

    assert_eq!(
        bank.holds(),
        vec![
            hold("g1", 1, 25, "in", "confirmed"),
            hold("g2", 1, 10, "in", "cancelled"),
        ]
    );
}

#[tokio::test]
async fn a_trans_in_credit_that_could_overflow_the_balance_is_refused() {
    let bank = Bank::start(Role::TransIn).await;
    bank.sql(&format!(
        "UPDATE accounts SET balance = {} WHERE id = 1",
        i64::MAX - 10
    ));

    assert_success(&bank.call("TransInTry", "g1", "try", &transfer(1, 6)).await);
    assert_failure(
        &bank.call("TransInTry", "g2", "try", &transfer(1, 5)).await,
        "would overflow",
    );
    assert_failure(
        &bank
            .call("TransInTry", "g3", "try", &transfer(1, i64::MAX))
            .await,
        "would overflow",
    );
    assert_success(
        &bank
            .call("TransInConfirm", "g1", "confirm", &transfer(1, 6))
            .await,
    );
    assert_eq!(bank.balances(1).await, (i64::MAX - 4, 0, 0));
}

#[tokio::test]
async fn a_confirm_fault_error_1_fails_the_first_confirm_and_the_retry_applies_once() {
    let bank = Bank::start(Role::TransOut).await;
    // The AP registers one body for all three ops, so the TM's Confirm carries the fault too.
    let body = json!({ "account_id": 1, "amount": 30, "fault": { "confirm": "error:1" } });

    assert_success(&bank.call("TransOutTry", "g1", "try", &body).await);
    let first = bank.call("TransOutConfirm", "g1", "confirm", &body).await;
    assert_error(&first, 500, "injected_error");
    let text = first.1.to_string();
    assert!(
        !text.contains("FAILURE") && !text.contains("ONGOING"),
        "{text}"
    );
    assert_eq!(
        bank.balances(1).await,
        (SEED, 30, 0),
        "nothing done by the failed call"
    );

    assert_success(&bank.call("TransOutConfirm", "g1", "confirm", &body).await);
    assert_success(&bank.call("TransOutConfirm", "g1", "confirm", &body).await);
    assert_eq!(bank.balances(1).await, (SEED - 30, 0, 0));
}

#[tokio::test]
async fn injected_failure_and_ongoing_faults_change_nothing() {
    let bank = Bank::start(Role::TransOut).await;
    let failing = json!({ "account_id": 1, "amount": 30, "fault": { "try": "failure" } });
    let ongoing = json!({ "account_id": 1, "amount": 30, "fault": { "try": "ongoing" } });

    assert_failure(
        &bank.call("TransOutTry", "g1", "try", &failing).await,
        "on purpose",
    );
    let (status, body) = bank.call("TransOutTry", "g2", "try", &ongoing).await;
    assert_eq!(
        (status, &body["dtm_result"]),
        (425, &json!("ONGOING")),
        "{body}"
    );

    assert_eq!(bank.balances(1).await, (SEED, 0, 0));
    assert_eq!(
        bank.barrier_rows(),
        0,
        "the injected refusal rolled its barrier row back"
    );
    assert_success(&bank.call("TransOutCancel", "g1", "cancel", &failing).await);
    assert_eq!(bank.balances(1).await, (SEED, 0, 0));
}

#[tokio::test]
async fn a_call_naming_another_op_is_refused_before_its_fault_runs() {
    let bank = Bank::start(Role::TransOut).await;
    // Faults for every op: whichever one ran would answer 500 or 425 instead of the 400.
    let body = json!({
        "account_id": 1,
        "amount": 30,
        "fault": { "try": "error", "confirm": "ongoing", "cancel": "error" }
    });

    for (endpoint, op) in [
        ("TransOutTry", "confirm"),
        ("TransOutConfirm", "try"),
        ("TransOutCancel", "confirm"),
    ] {
        assert_error(
            &bank.call(endpoint, "g1", op, &body).await,
            400,
            "op_mismatch",
        );
    }
    assert_eq!(bank.balances(1).await, (SEED, 0, 0));
    assert!(bank.holds().is_empty());
    assert_eq!(bank.barrier_rows(), 0);
}

#[tokio::test]
async fn accepted_and_redirect_faults_answer_202_and_307_doing_nothing_then_the_call_applies_once()
{
    // A client that, like the TM and the AP, never follows a redirect.
    let bank = Bank {
        spawned: spawn_bank(Role::TransOut).await,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
    };
    let accepted = json!({ "account_id": 1, "amount": 30, "fault": { "try": "accepted:2" } });
    let moved = json!({ "account_id": 2, "amount": 40, "fault": { "try": "redirect:1" } });

    for _ in 0..2 {
        let (status, body) = bank.call("TransOutTry", "g-acc", "try", &accepted).await;
        assert_eq!(
            (status, &body["dtm_result"]),
            (202, &json!("SUCCESS")),
            "{body}"
        );
    }
    assert_eq!(bank.balances(1).await, (SEED, 0, 0), "a 202 froze nothing");
    let query = "gid=g-moved&trans_type=tcc&branch_id=01&op=try";
    let response = bank
        .http
        .post(bank.spawned.url(&format!("/api/TransOutTry?{query}")))
        .header(
            tcc::signing::GID_TOKEN_HEADER,
            test_support::spawn::test_gid_token("g-moved"),
        )
        .json(&moved)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 307);
    assert_eq!(
        response.headers()["location"],
        service_kit::fault::REDIRECT_LOCATION
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "injected_redirect", "{body}");
    assert_eq!(bank.balances(2).await, (SEED, 0, 0), "a 307 froze nothing");
    assert_eq!(bank.barrier_rows(), 0, "nothing reached the barrier");

    // Past N, the same call is served normally, once.
    assert_success(&bank.call("TransOutTry", "g-acc", "try", &accepted).await);
    assert_success(&bank.call("TransOutTry", "g-moved", "try", &moved).await);
    assert_eq!(bank.balances(1).await, (SEED, 30, 0));
    assert_eq!(bank.balances(2).await, (SEED, 40, 0));
}

#[tokio::test]
async fn with_fault_injection_off_a_try_carrying_a_fault_is_a_400_and_changes_nothing() {
    let bank = Bank::from(
        spawn_bank_with(Role::TransOut, TestDb::create("trans_out"), |s| {
            s.common.fault_injection = false
        })
        .await,
    );
    let body = json!({ "account_id": 1, "amount": 30, "fault": { "try": "failure" } });

    assert_error(
        &bank.call("TransOutTry", "g1", "try", &body).await,
        400,
        "fault_injection_disabled",
    );
    assert_eq!(bank.balances(1).await, (SEED, 0, 0));
    assert_eq!(bank.barrier_rows(), 0);

    assert_success(
        &bank
            .call("TransOutTry", "g2", "try", &transfer(1, 30))
            .await,
    );
    assert_eq!(bank.balances(1).await, (SEED, 30, 0));

    // Confirm and Cancel carry the same registered data: they ignore the fault and succeed, or
    // the TM would retry the Cancel of the refused Try forever.
    assert_success(&bank.call("TransOutCancel", "g1", "cancel", &body).await);
    let confirm = json!({ "account_id": 1, "amount": 30, "fault": { "confirm": "error" } });
    assert_success(
        &bank
            .call("TransOutConfirm", "g2", "confirm", &confirm)
            .await,
    );
    assert_eq!(bank.balances(1).await, (SEED - 30, 0, 0));
}

/// Bodies a Confirm or Cancel may be sent that no version of the bank's Try body parses: the data
/// the AP registered with a field this bank does not know, or renamed, or no JSON object at all.
/// (name, content type, body).
const UNUSABLE_BODIES: [(&str, &str, &str); 8] = [
    (
        "an extra field",
        "application/json",
        r#"{"account_id":1,"amount":1,"memo":"x"}"#,
    ),
    (
        "renamed fields",
        "application/json",
        r#"{"account":1,"sum":1}"#,
    ),
    ("null", "application/json", "null"),
    ("an array", "application/json", "[1, 1]"),
    ("non-JSON text", "application/json", "not json at all"),
    ("an empty body", "application/json", ""),
    ("a text/plain body", "text/plain", "hello"),
    (
        "a fault that does not parse",
        "application/json",
        r#"{"account_id":1,"amount":1,"fault":{"cancel":"explode","confirm":"explode"}}"#,
    ),
];

#[tokio::test]
async fn a_confirm_or_cancel_whose_body_the_bank_cannot_parse_still_settles_the_hold() {
    for role in [Role::TransOut, Role::TransIn] {
        let bank = Bank::start(role).await;
        let prefix = match role {
            Role::TransOut => "TransOut",
            Role::TransIn => "TransIn",
        };
        let direction = match role {
            Role::TransOut => "out",
            Role::TransIn => "in",
        };
        let (try_, confirm, cancel) = (
            format!("{prefix}Try"),
            format!("{prefix}Confirm"),
            format!("{prefix}Cancel"),
        );
        let mut expected = Vec::new();
        for (i, (what, content_type, body)) in UNUSABLE_BODIES.into_iter().enumerate() {
            let (cancelled, confirmed) = (format!("cancel-{i}"), format!("confirm-{i}"));
            for gid in [&cancelled, &confirmed] {
                assert_success(&bank.call(&try_, gid, "try", &transfer(1, 30)).await);
            }
            let query =
                |gid: &str, op: &str| format!("gid={gid}&trans_type=tcc&branch_id=01&op={op}");
            let answer = bank
                .raw(
                    &cancel,
                    &query(&cancelled, "cancel"),
                    content_type,
                    body.into(),
                )
                .await;
            assert_eq!(answer.0, 200, "{role} Cancel with {what}: {}", answer.1);
            assert_success(&answer);
            let answer = bank
                .raw(
                    &confirm,
                    &query(&confirmed, "confirm"),
                    content_type,
                    body.into(),
                )
                .await;
            assert_eq!(answer.0, 200, "{role} Confirm with {what}: {}", answer.1);
            assert_success(&answer);
            expected.push(hold(&cancelled, 1, 30, direction, "cancelled"));
            expected.push(hold(&confirmed, 1, 30, direction, "confirmed"));
        }

        // Each hold was settled by its amount, not by the body's.
        assert_eq!(bank.holds(), expected, "{role}");
        let moved = 30 * UNUSABLE_BODIES.len() as i64;
        let after = match role {
            Role::TransOut => (SEED - moved, 0, 0),
            Role::TransIn => (SEED + moved, 0, 0),
        };
        assert_eq!(bank.balances(1).await, after, "{role}");
    }
}

#[tokio::test]
async fn a_fault_in_a_confirm_or_cancel_body_is_honoured_beside_fields_the_bank_does_not_know() {
    let bank = Bank::start(Role::TransOut).await;
    for gid in ["g1", "g2"] {
        assert_success(&bank.call("TransOutTry", gid, "try", &transfer(1, 30)).await);
    }
    let confirm = json!({ "memo": "x", "fault": { "confirm": "error:1" } });
    let cancel = json!({ "renamed": 1, "fault": { "cancel": "error:1" } });

    let first = bank
        .call("TransOutConfirm", "g1", "confirm", &confirm)
        .await;
    assert_error(&first, 500, "injected_error");
    let first = bank.call("TransOutCancel", "g2", "cancel", &cancel).await;
    assert_error(&first, 500, "injected_error");
    assert_eq!(bank.balances(1).await, (SEED, 60, 0), "nothing settled yet");

    assert_success(
        &bank
            .call("TransOutConfirm", "g1", "confirm", &confirm)
            .await,
    );
    assert_success(&bank.call("TransOutCancel", "g2", "cancel", &cancel).await);
    assert_eq!(bank.balances(1).await, (SEED - 30, 0, 0));
}

#[tokio::test]
async fn registered_data_the_rms_cannot_parse_still_lets_the_coordinator_confirm_and_cancel() {
    let sys = spawn_system().await;
    let dtm = sys.coordinator.dtm_url();
    let post = |what: &'static str, body: Value| {
        let (http, url) = (sys.http.clone(), format!("{dtm}/{what}"));
        async move {
            let response = http
                .post(&url)
                .json(&body)
                .send()
                .await
                .expect("the TM answers");
            let status = response.status().as_u16();
            let text = response.text().await.expect("a body");
            assert_eq!(status, 200, "{what} {body}: {text}");
        }
    };
    // Each branch: (RM, name prefix, the strict Try body, the registered data: the Try body with
    // a field the RM does not know).
    let branches = [
        (
            &sys.trans_out,
            "TransOut",
            json!({ "account_id": 1, "amount": 30 }),
        ),
        (
            &sys.stock,
            "Stock",
            json!({ "product_id": 1, "quantity": 2 }),
        ),
    ];
    for (gid, end) in [("e2e-submit", "submit"), ("e2e-abort", "abort")] {
        post("prepare", json!({ "gid": gid, "trans_type": "tcc" })).await;
        for (i, (rm, prefix, body)) in branches.iter().enumerate() {
            let branch_id = format!("{:02}", i + 1);
            let mut data = body.clone();
            data["memo"] = json!("registered by a newer AP");
            post(
                "registerBranch",
                json!({
                    "gid": gid, "trans_type": "tcc", "branch_id": branch_id,
                    "status": "prepared", "data": data.to_string(),
                    "confirm": rm.url(&format!("/api/{prefix}Confirm")),
                    "cancel": rm.url(&format!("/api/{prefix}Cancel")),
                }),
            )
            .await;
            let try_url = rm.url(&format!(
                "/api/{prefix}Try?gid={gid}&trans_type=tcc&branch_id={branch_id}&op=try"
            ));
            // With the gid's token, as an AP holding the secret sends it: without one, the Try
            // gate holds the body to the registered data, which here it is not by design.
            let response = sys
                .http
                .post(try_url)
                .header(
                    tcc::signing::GID_TOKEN_HEADER,
                    test_support::spawn::test_gid_token(gid),
                )
                .json(body)
                .send()
                .await
                .expect("Try");
            assert_eq!(response.status().as_u16(), 200, "{prefix}Try of {gid}");
        }
        post(end, json!({ "gid": gid, "trans_type": "tcc" })).await;
        let status = if end == "submit" { "succeed" } else { "failed" };
        sys.wait_for_status(gid, status, std::time::Duration::from_secs(10))
            .await;
    }

    // The submitted transaction moved 30 and 2 units; the aborted one released its hold and its
    // reservation.
    assert_eq!(
        sys.balances(&sys.trans_out, 1).await,
        (SEED - 30, 0),
        "the frozen funds of the aborted transfer are released"
    );
    let product = sys.product(1).await;
    let seeded = stock::configuration::Settings::defaults().seed_stock;
    assert_eq!(
        (&product["stock"], &product["reserved"]),
        (&json!(seeded - 2), &json!(0)),
        "{product}"
    );
}

#[tokio::test]
async fn malformed_requests_are_4xx_json_errors_and_change_nothing() {
    let bank = Bank::start(Role::TransOut).await;
    let good_query = "gid=g1&trans_type=tcc&branch_id=01&op=try";
    let json = "application/json";
    let cases: Vec<(&str, &str, &str, String, u16, &str)> = vec![
        (
            "truncated JSON",
            good_query,
            json,
            r#"{"account_id": 1, "amount": "#.into(),
            400,
            "invalid_json",
        ),
        (
            "zero amount",
            good_query,
            json,
            transfer(1, 0).to_string(),
            400,
            "invalid_request",
        ),
        (
            "negative amount",
            good_query,
            json,
            transfer(1, -5).to_string(),
            400,
            "invalid_request",
        ),
        (
            "zero account",
            good_query,
            json,
            transfer(0, 5).to_string(),
            400,
            "invalid_request",
        ),
        (
            "fractional amount",
            good_query,
            json,
            r#"{"account_id":1,"amount":30.5}"#.into(),
            400,
            "invalid_json",
        ),
        (
            "amount as a string",
            good_query,
            json,
            r#"{"account_id":1,"amount":"30"}"#.into(),
            400,
            "invalid_json",
        ),
        (
            "missing amount",
            good_query,
            json,
            r#"{"account_id":1}"#.into(),
            400,
            "invalid_json",
        ),
        (
            "unknown field",
            good_query,
            json,
            r#"{"account_id":1,"amount":30,"memo":"x"}"#.into(),
            400,
            "invalid_json",
        ),
        (
            "unknown fault",
            good_query,
            json,
            r#"{"account_id":1,"amount":30,"fault":{"try":"explode"}}"#.into(),
            400,
            "invalid_json",
        ),
        (
            "unknown fault op",
            good_query,
            json,
            r#"{"account_id":1,"amount":30,"fault":{"commit":"failure"}}"#.into(),
            400,
            "invalid_json",
        ),
        (
            "text body",
            good_query,
            "text/plain",
            transfer(1, 30).to_string(),
            415,
            "unsupported_content_type",
        ),
        (
            "no query",
            "",
            json,
            transfer(1, 30).to_string(),
            400,
            "bad_branch_query",
        ),
        (
            "unknown op",
            "gid=g1&trans_type=tcc&branch_id=01&op=commit",
            json,
            transfer(1, 30).to_string(),
            400,
            "bad_branch_query",
        ),
        (
            "saga",
            "gid=g1&trans_type=saga&branch_id=01&op=try",
            json,
            transfer(1, 30).to_string(),
            400,
            "bad_branch_query",
        ),
        (
            "gid with a space",
            "gid=g%201&trans_type=tcc&branch_id=01&op=try",
            json,
            transfer(1, 30).to_string(),
            400,
            "bad_branch_query",
        ),
        (
            "op of another endpoint",
            "gid=g1&trans_type=tcc&branch_id=01&op=confirm",
            json,
            transfer(1, 30).to_string(),
            400,
            "op_mismatch",
        ),
    ];
    for (what, query, content_type, body, status, code) in cases {
        let answer = bank.raw("TransOutTry", query, content_type, body).await;
        assert_eq!(answer.0, status, "{what}: {}", answer.1);
        assert_eq!(answer.1["error"], code, "{what}: {}", answer.1);
    }

    assert_eq!(bank.balances(1).await, (SEED, 0, 0));
    assert!(bank.holds().is_empty());
    assert_eq!(bank.barrier_rows(), 0);

    // A Cancel does not check the values its Try was refused for: it must end the transaction.
    assert_success(
        &bank
            .call("TransOutCancel", "g1", "cancel", &transfer(1, 0))
            .await,
    );
    assert_eq!(bank.balances(1).await, (SEED, 0, 0));
}

#[tokio::test]
async fn the_account_view_answers_404_for_an_unknown_account_and_400_for_a_bad_id() {
    let bank = Bank::start(Role::TransOut).await;

    let account = bank.account(10).await;
    assert_eq!(account["id"], 10);
    assert_eq!(account["balance"], SEED);
    assert_eq!(account["locked"], false);
    assert!(account["updated_at"].is_string(), "{account}");

    assert_error(
        &bank.get("/api/accounts/11").await,
        404,
        "account_not_found",
    );
    assert_error(&bank.get("/api/accounts/abc").await, 400, "invalid_path");
    assert_error(&bank.get("/api/nothing").await, 404, "not_found");
    // Each bank serves only its own branch endpoints.
    assert_error(
        &bank
            .raw("TransInTry", "", "application/json", "{}".into())
            .await,
        404,
        "not_found",
    );
}

#[tokio::test]
async fn seeding_never_overwrites_existing_rows() {
    let bank = Bank::start(Role::TransOut).await;
    let (status, health) = bank.get("/api/health").await;
    assert_eq!(
        (status, &health["database"]),
        (200, &json!("ok")),
        "{health}"
    );
    assert_success(
        &bank
            .call("TransOutTry", "g1", "try", &transfer(1, 30))
            .await,
    );
    bank.sql("UPDATE accounts SET balance = 5000 WHERE id = 2");

    let db = bank.spawned.stop().await.expect("the database");
    let bank = Bank::from(spawn_bank_with(Role::TransOut, db, |s| s.seed_accounts = 20).await);

    assert_eq!(bank.balances(1).await, (SEED, 30, 0));
    assert_eq!(bank.balances(2).await, (5000, 0, 0));
    assert_eq!(
        bank.get("/api/accounts/11").await.0,
        404,
        "no seeding into a non-empty table"
    );
    // The hold survived the restart: its Confirm still applies.
    assert_success(
        &bank
            .call("TransOutConfirm", "g1", "confirm", &transfer(1, 30))
            .await,
    );
    assert_eq!(bank.balances(1).await, (SEED - 30, 0, 0));
}

#[tokio::test]
async fn zero_seed_accounts_disables_seeding() {
    let bank = Bank::from(
        spawn_bank_with(Role::TransIn, TestDb::create("trans_in"), |s| {
            s.seed_accounts = 0
        })
        .await,
    );
    assert_eq!(bank.get("/api/accounts/1").await.0, 404);
    assert_failure(
        &bank.call("TransInTry", "g1", "try", &transfer(1, 30)).await,
        "account 1 does not exist",
    );
}

/// DTM's barrier insert as its Go SDK sends it to Postgres (dtm-labs/dtm `dtmcli/dtmimp`:
/// `insertBarrier` through the Postgres `GetInsertIgnoreTemplate`): an RM written with DTM's SDK
/// sharing the table runs exactly this. Binds: trans_type, gid, branch_id, op, barrier_id, reason.
const DTM_BARRIER_INSERT: &str = "insert into dtm_barrier.barrier(trans_type, gid, branch_id, \
     op, barrier_id, reason) values($1,$2,$3,$4,$5,$6)  on conflict ON CONSTRAINT uniq_barrier do \
     nothing";

/// Runs [`DTM_BARRIER_INSERT`] on `conn` for `(gid, branch 01, op, barrier 01, reason op)`;
/// returns the rows inserted (0 for a duplicate).
fn dtm_barrier_insert(conn: &mut PgConnection, gid: &str, op: &str) -> usize {
    use diesel::sql_types::Text;
    diesel::sql_query(DTM_BARRIER_INSERT)
        .bind::<Text, _>("tcc")
        .bind::<Text, _>(gid)
        .bind::<Text, _>("01")
        .bind::<Text, _>(op)
        .bind::<Text, _>("01")
        .bind::<Text, _>(op)
        .execute(conn)
        .unwrap_or_else(|e| panic!("DTM's barrier insert fails: {e}"))
}

#[tokio::test]
async fn dtms_own_barrier_insert_works_on_the_banks_barrier_table_and_skips_duplicates() {
    let bank = Bank::start(Role::TransOut).await;
    // A row the bank wrote itself: its Try of g1.
    assert_success(
        &bank
            .call("TransOutTry", "g1", "try", &transfer(1, 30))
            .await,
    );
    let mut conn = bank.db();

    assert_eq!(dtm_barrier_insert(&mut conn, "dtm-g", "try"), 1);
    assert_eq!(
        dtm_barrier_insert(&mut conn, "dtm-g", "try"),
        0,
        "duplicate"
    );
    assert_eq!(
        dtm_barrier_insert(&mut conn, "g1", "try"),
        0,
        "the bank's own row is a duplicate for DTM too"
    );
    assert_eq!(bank.barrier_rows(), 2);
    // And the other way: the bank's barrier sees DTM's row, so a Cancel of dtm-g is no empty
    // compensation (the Try slot is taken) but applies; nothing is held for it here.
    assert_success(
        &bank
            .call("TransOutCancel", "dtm-g", "cancel", &transfer(1, 30))
            .await,
    );
    assert_eq!(bank.barrier_rows(), 3);
}

/// The barrier table as DTM's own DDL creates it on Postgres (dtm-labs/dtm
/// `sqls/dtmcli.barrier.postgres.sql`): its sequence, `varchar` columns with `''` defaults, an
/// `update_time`, and the unique key already named `uniq_barrier`.
const DTM_BARRIER_DDL: &str = "
    CREATE SCHEMA IF NOT EXISTS dtm_barrier;
    CREATE SEQUENCE IF NOT EXISTS dtm_barrier.barrier_seq;
    CREATE TABLE IF NOT EXISTS dtm_barrier.barrier (
        id bigint NOT NULL DEFAULT NEXTVAL('dtm_barrier.barrier_seq'),
        trans_type varchar(45) DEFAULT '',
        gid varchar(128) DEFAULT '',
        branch_id varchar(128) DEFAULT '',
        op varchar(45) DEFAULT '',
        barrier_id varchar(45) DEFAULT '',
        reason varchar(45) DEFAULT '',
        create_time timestamp(0) with time zone DEFAULT NULL,
        update_time timestamp(0) with time zone DEFAULT NULL,
        PRIMARY KEY (id),
        CONSTRAINT uniq_barrier UNIQUE (gid, branch_id, op, barrier_id)
    );";

/// The names of the constraints on `dtm_barrier.barrier`, sorted.
fn barrier_constraints(conn: &mut PgConnection) -> Vec<String> {
    #[derive(QueryableByName)]
    struct Name {
        #[diesel(sql_type = diesel::sql_types::Text)]
        conname: String,
    }
    let names: Vec<Name> = diesel::sql_query(
        "SELECT conname::text AS conname FROM pg_constraint \
         WHERE conrelid = 'dtm_barrier.barrier'::regclass ORDER BY conname",
    )
    .load(conn)
    .expect("pg_constraint");
    names.into_iter().map(|n| n.conname).collect()
}

#[tokio::test]
async fn a_bank_starts_on_a_barrier_table_created_by_dtms_own_ddl_and_its_barrier_works() {
    let db = TestDb::create("dtm_ddl");
    diesel::connection::SimpleConnection::batch_execute(&mut db.connect(), DTM_BARRIER_DDL)
        .expect("DTM's barrier DDL");

    let bank = Bank::from(spawn_bank_with(Role::TransOut, db, |_| {}).await);

    let mut conn = bank.db();
    assert_eq!(
        barrier_constraints(&mut conn),
        ["barrier_pkey", "uniq_barrier"]
    );
    // The barrier SQL run again by hand (a service managing its schema with another tool) is a
    // no-op too.
    diesel::connection::SimpleConnection::batch_execute(&mut conn, tcc::barrier::MIGRATION_SQL)
        .expect("the barrier SQL runs again on DTM's table");
    assert_eq!(
        barrier_constraints(&mut conn),
        ["barrier_pkey", "uniq_barrier"]
    );

    assert_success(
        &bank
            .call("TransOutTry", "g1", "try", &transfer(1, 30))
            .await,
    );
    assert_success(
        &bank
            .call("TransOutTry", "g1", "try", &transfer(1, 30))
            .await,
    );
    assert_eq!(
        bank.barrier_rows(),
        1,
        "the duplicate Try wrote no second row"
    );
    assert_eq!(bank.holds(), [hold("g1", 1, 30, "out", "tentative")]);
    assert_eq!(
        dtm_barrier_insert(&mut conn, "g1", "try"),
        0,
        "DTM's insert sees the bank's row"
    );
    // An empty compensation: the Cancel of a Try that never ran changes nothing.
    assert_success(
        &bank
            .call("TransOutCancel", "g2", "cancel", &transfer(1, 30))
            .await,
    );
    assert_success(
        &bank
            .call("TransOutConfirm", "g1", "confirm", &transfer(1, 30))
            .await,
    );
    assert_eq!(bank.balances(1).await, (SEED - 30, 0, 0));
}
