//! Reconciliation (README, "Releasing what no transaction will settle"): the RMs' `reconcile`
//! subcommand finds the tentative holds and reservations no global transaction will ever settle,
//! asks the coordinator about each gid, and releases through the RM's own Cancel behind the
//! barrier exactly those whose gid the coordinator positively says it does not know, or whose
//! branch is not registered; it leaves unfinished transactions to the TM and only reports a
//! tentative hold of a transaction that succeeded or failed (a force-stop fails a submitted one).
//! A `DTM_URL` that answers a route-404 releases nothing. Real system, real Postgres.

use std::time::Duration;

use diesel::sql_types::{BigInt, Text};
use diesel::{QueryableByName, RunQueryDsl};
use serde_json::{json, Value};
use service_kit::reconcile::{Action, ReconcileOptions, ReconcileReport};
use service_kit::settings::RmCommonSettings;
use test_support::process::run_to_completion;
use test_support::spawn::{answer, spawn_system, test_gid_token, Spawned, System};

const SEED: i64 = test_support::spawn::TEST_SEED_BALANCE;

/// A call to the coordinator's DTM API; panics unless it answers 200.
async fn tm(sys: &System, call: &str, body: Value) {
    let request = sys
        .http
        .post(format!("{}/{call}", sys.coordinator.dtm_url()))
        .json(&body);
    let (status, answer) = answer(request, call).await;
    assert_eq!(status, 200, "{call}: {answer}");
}

/// Prepares `gid` (its timeout far beyond the test) and registers its branch `01` with these
/// Confirm and Cancel URLs.
async fn prepare_with_branch(sys: &System, gid: &str, confirm: String, cancel: String) {
    let prepare = json!({"gid": gid, "trans_type": "tcc", "timeout_to_fail": 3600});
    tm(sys, "prepare", prepare).await;
    let register = json!({
        "gid": gid, "trans_type": "tcc", "branch_id": "01", "status": "prepared",
        "data": "{}", "confirm": confirm, "cancel": cancel,
    });
    tm(sys, "registerBranch", register).await;
}

/// A Try on `rm`'s `endpoint` of branch `branch_id` of `gid` with the gid's token (as the AP
/// holding the secret sends it), asserting SUCCESS.
async fn try_with_token(
    sys: &System,
    rm: &Spawned,
    endpoint: &str,
    gid: &str,
    branch_id: &str,
    body: Value,
) {
    let url = rm.url(&format!(
        "/api/{endpoint}?gid={gid}&trans_type=tcc&branch_id={branch_id}&op=try"
    ));
    let request = sys
        .http
        .post(url)
        .header(tcc::signing::GID_TOKEN_HEADER, test_gid_token(gid))
        .json(&body);
    let (status, answer) = answer(request, endpoint).await;
    assert_eq!(status, 200, "{endpoint} {gid} {branch_id}: {answer}");
}

/// The settings `reconcile` runs with against `rm` (a bank or the stock service) of `sys`: its
/// database, and the system's coordinator as `DTM_URL`.
fn common(sys: &System, rm: &Spawned) -> RmCommonSettings {
    RmCommonSettings {
        database_url: rm.db.as_ref().expect("a database").url.clone(),
        dtm_url: sys.coordinator.dtm_url(),
        ..RmCommonSettings::defaults(0, "unused")
    }
}

fn bank_settings(sys: &System) -> bank::Settings {
    bank::Settings {
        common: common(sys, &sys.trans_out),
        ..bank::Settings::defaults(bank::Role::TransOut)
    }
}

fn all_rows(older_than: u64, dry_run: bool) -> ReconcileOptions {
    ReconcileOptions {
        older_than: Duration::from_secs(older_than),
        dry_run,
    }
}

/// `(gid, branch_id) -> action` of a report, sorted.
fn actions(report: &ReconcileReport) -> Vec<(String, String, Action)> {
    let mut actions: Vec<_> = report
        .lines
        .iter()
        .map(|l| (l.gid.clone(), l.branch_id.clone(), l.action))
        .collect();
    actions.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    actions
}

fn row(gid: &str, branch_id: &str, action: Action) -> (String, String, Action) {
    (gid.to_owned(), branch_id.to_owned(), action)
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct State {
    #[diesel(sql_type = Text)]
    state: String,
}

/// Barrier rows of `(gid, branch_id, op)` in `rm`'s database.
fn barrier_rows(rm: &Spawned, gid: &str, branch_id: &str, op: &str) -> i64 {
    let mut conn = rm.db.as_ref().unwrap().connect();
    diesel::sql_query(
        "SELECT count(*) AS n FROM dtm_barrier.barrier \
         WHERE gid = $1 AND branch_id = $2 AND op = $3",
    )
    .bind::<Text, _>(gid)
    .bind::<Text, _>(branch_id)
    .bind::<Text, _>(op)
    .get_result::<Count>(&mut conn)
    .unwrap()
    .n
}

/// The state of `table`'s row of `(gid, branch_id)` in `rm`'s database.
fn state(rm: &Spawned, table: &str, gid: &str, branch_id: &str) -> String {
    let mut conn = rm.db.as_ref().unwrap().connect();
    diesel::sql_query(format!(
        "SELECT state FROM {table} WHERE gid = $1 AND branch_id = $2"
    ))
    .bind::<Text, _>(gid)
    .bind::<Text, _>(branch_id)
    .get_result::<State>(&mut conn)
    .unwrap()
    .state
}

#[tokio::test]
async fn reconcile_releases_the_holds_nothing_will_settle_and_leaves_the_rest() {
    let sys = spawn_system().await;
    let bank = &sys.trans_out;
    let (confirm, cancel) = (
        bank.url("/api/TransOutConfirm"),
        bank.url("/api/TransOutCancel"),
    );
    let transfer = |account: i64, amount: i64| json!({"account_id": account, "amount": amount});

    // A Try under a gid the coordinator never knew (the token only proves who sent it).
    try_with_token(
        &sys,
        bank,
        "TransOutTry",
        "orphan-unknown",
        "01",
        transfer(1, 11),
    )
    .await;
    // A legitimate, unfinished transaction, and a Try of a branch it never registered.
    prepare_with_branch(&sys, "unfinished", confirm.clone(), cancel.clone()).await;
    try_with_token(
        &sys,
        bank,
        "TransOutTry",
        "unfinished",
        "01",
        transfer(2, 17),
    )
    .await;
    try_with_token(
        &sys,
        bank,
        "TransOutTry",
        "unfinished",
        "07",
        transfer(1, 13),
    )
    .await;
    // A rolled-back transaction whose Cancel went to an endpoint that does nothing.
    let does_nothing = sys.app.url("/api/TransInNestedCancel");
    prepare_with_branch(&sys, "lost-cancel", confirm.clone(), does_nothing).await;
    try_with_token(
        &sys,
        bank,
        "TransOutTry",
        "lost-cancel",
        "01",
        transfer(3, 19),
    )
    .await;
    tm(
        &sys,
        "abort",
        json!({"gid": "lost-cancel", "trans_type": "tcc"}),
    )
    .await;
    sys.wait_for_status("lost-cancel", "failed", Duration::from_secs(10))
        .await;
    // A committed transaction whose Confirm went to an endpoint that does nothing.
    let does_nothing = sys.app.url("/api/TransInNestedConfirm");
    prepare_with_branch(&sys, "lost-confirm", does_nothing, cancel.clone()).await;
    try_with_token(
        &sys,
        bank,
        "TransOutTry",
        "lost-confirm",
        "01",
        transfer(4, 23),
    )
    .await;
    tm(
        &sys,
        "submit",
        json!({"gid": "lost-confirm", "trans_type": "tcc"}),
    )
    .await;
    sys.wait_for_status("lost-confirm", "succeed", Duration::from_secs(10))
        .await;
    let frozen = [(1, 24), (2, 17), (3, 19), (4, 23)];
    for (account, amount) in frozen {
        assert_eq!(sys.balances(bank, account).await, (SEED, amount));
    }
    let settings = bank_settings(&sys);

    // Younger than the threshold: not even looked at.
    let young = bank::reconcile::reconcile(&settings, all_rows(3600, false))
        .await
        .unwrap();
    assert_eq!(young.summary.examined, 0, "{young:?}");

    // A dry run says what it would do and changes nothing.
    let dry = bank::reconcile::reconcile(&settings, all_rows(0, true))
        .await
        .unwrap();
    let expected = |release| {
        vec![
            row("lost-cancel", "01", Action::Reported),
            row("lost-confirm", "01", Action::Reported),
            row("orphan-unknown", "01", release),
            row("unfinished", "01", Action::Left),
            row("unfinished", "07", release),
        ]
    };
    assert_eq!(actions(&dry), expected(Action::WouldRelease), "{dry:#?}");
    for (account, amount) in frozen {
        assert_eq!(sys.balances(bank, account).await, (SEED, amount));
    }

    let report = bank::reconcile::reconcile(&settings, all_rows(0, false))
        .await
        .unwrap();

    assert_eq!(actions(&report), expected(Action::Released), "{report:#?}");
    assert_eq!(report.summary.released, 2);
    assert_eq!(report.summary.errors, 0);
    let line = |gid: &str| report.lines.iter().find(|l| l.gid == gid).unwrap();
    assert_eq!(
        line("orphan-unknown").coordinator,
        "the gid is unknown to the coordinator"
    );
    assert_eq!(
        line("lost-cancel").coordinator,
        "status failed, branch 01 registered"
    );
    // Released: unfrozen, the hold cancelled, the branch's Cancel recorded by the barrier.
    assert_eq!(sys.balances(bank, 1).await, (SEED, 0));
    for (gid, branch_id) in [("orphan-unknown", "01"), ("unfinished", "07")] {
        assert_eq!(state(bank, "holds", gid, branch_id), "cancelled");
        assert_eq!(
            barrier_rows(bank, gid, branch_id, "cancel"),
            1,
            "{gid} {branch_id}"
        );
    }
    // Left for the TM, and reported only (a `failed` one too: only a person can tell a rollback
    // from a force-stop): still frozen, still tentative.
    assert_eq!(sys.balances(bank, 2).await, (SEED, 17));
    assert_eq!(sys.balances(bank, 3).await, (SEED, 19));
    assert_eq!(sys.balances(bank, 4).await, (SEED, 23));
    for gid in ["unfinished", "lost-cancel", "lost-confirm"] {
        assert_eq!(state(bank, "holds", gid, "01"), "tentative", "{gid}");
    }
    assert_eq!(barrier_rows(bank, "lost-cancel", "01", "cancel"), 0);

    // A real Cancel arriving later is a duplicate, a Try arriving later is hanging: nothing moves.
    let url = |op: &str, endpoint: &str| {
        bank.url(&format!(
            "/api/{endpoint}?gid=orphan-unknown&trans_type=tcc&branch_id=01&op={op}"
        ))
    };
    for (op, endpoint) in [("cancel", "TransOutCancel"), ("try", "TransOutTry")] {
        let request = sys
            .http
            .post(url(op, endpoint))
            .header(
                tcc::signing::GID_TOKEN_HEADER,
                test_gid_token("orphan-unknown"),
            )
            .json(&transfer(1, 11));
        let (status, body) = answer(request, endpoint).await;
        assert_eq!(status, 200, "{endpoint}: {body}");
    }
    assert_eq!(sys.balances(bank, 1).await, (SEED, 0));

    // The TM still settles what was left to it.
    tm(
        &sys,
        "abort",
        json!({"gid": "unfinished", "trans_type": "tcc"}),
    )
    .await;
    sys.wait_for_status("unfinished", "failed", Duration::from_secs(10))
        .await;
    assert_eq!(sys.balances(bank, 2).await, (SEED, 0));
    let again = bank::reconcile::reconcile(&settings, all_rows(0, false))
        .await
        .unwrap();
    assert_eq!(
        actions(&again),
        vec![
            row("lost-cancel", "01", Action::Reported),
            row("lost-confirm", "01", Action::Reported)
        ]
    );
}

#[tokio::test]
async fn reconcile_reports_and_keeps_the_hold_of_a_force_stopped_submitted_transfer_whose_credit_was_confirmed(
) {
    let sys = spawn_system().await;
    let bank = &sys.trans_out;
    // Confirms run last branch first: TransIn's (02) credits bank B, TransOut's (01) fails and
    // is retried only after a minute.
    let (status, body) = sys
        .fire("/api/fireTcc?amount=30&from=1&to=2&trans_out_confirm=error&retry_interval=60&wait_result=false")
        .await;
    assert_eq!(status, 200, "{body}");
    let gid = body["gid"].as_str().expect("a gid").to_owned();
    let detail_url = sys
        .coordinator
        .url(&format!("/api/admin/transactions/{gid}"));
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (status, detail) = answer(sys.http.get(&detail_url), "detail").await;
        assert_eq!(status, 200, "{detail}");
        let confirm_out_tried = detail["branches"].as_array().unwrap().iter().any(|b| {
            b["branch_id"] == "01"
                && b["ops"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|o| o["op"] == "confirm" && o["attempts"].as_i64() >= Some(1))
        });
        if confirm_out_tried && detail["transaction"]["owner"].is_null() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{detail:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, body) = answer(
        sys.http.post(format!("{detail_url}/force-stop")),
        "force-stop",
    )
    .await;
    assert_eq!(
        (status, &body["from"]),
        (200, &json!("submitted")),
        "{body}"
    );
    assert_eq!(sys.balances(&sys.trans_in, 2).await, (SEED + 30, 0));
    assert_eq!(sys.balances(bank, 1).await, (SEED, 30));

    let report = bank::reconcile::reconcile(&bank_settings(&sys), all_rows(0, false))
        .await
        .unwrap();

    assert_eq!(
        actions(&report),
        vec![row(&gid, "01", Action::Reported)],
        "{report:#?}"
    );
    assert_eq!(
        report.lines[0].coordinator,
        "status failed, branch 01 registered"
    );
    assert_eq!(state(bank, "holds", &gid, "01"), "tentative");
    assert_eq!(sys.balances(bank, 1).await, (SEED, 30));
    // Nor does the coordinator vouch for a Cancel nobody signed: it would unfreeze the debit of
    // a transfer whose credit is spent.
    let cancel = sys
        .http
        .post(bank.url(&format!(
            "/api/TransOutCancel?gid={gid}&trans_type=tcc&branch_id=01&op=cancel"
        )))
        .json(&json!({"account_id": 1, "amount": 30}));
    let (status, body) = answer(cancel, "TransOutCancel").await;
    assert_eq!(
        (status, &body["error"]),
        (401, &json!("not_vouched")),
        "{body}"
    );
    assert_eq!(sys.balances(bank, 1).await, (SEED, 30));
    assert_eq!(barrier_rows(bank, &gid, "01", "cancel"), 0);
}

#[tokio::test]
async fn reconcile_against_a_dtm_url_that_is_not_the_coordinators_releases_nothing() {
    let sys = spawn_system().await;
    let bank = &sys.trans_out;
    try_with_token(
        &sys,
        bank,
        "TransOutTry",
        "orphan-misconfigured",
        "01",
        json!({"account_id": 6, "amount": 31}),
    )
    .await;
    // An RM, the AP, and the coordinator without `/dtmsvr`: each answers a route-404.
    for dtm_url in [
        sys.trans_in.url("/api"),
        sys.app.url("/api"),
        sys.coordinator.url("/api"),
    ] {
        let mut settings = bank_settings(&sys);
        settings.common.dtm_url = dtm_url.clone();

        let report = bank::reconcile::reconcile(&settings, all_rows(0, false))
            .await
            .unwrap();

        assert_eq!(
            actions(&report),
            vec![row("orphan-misconfigured", "01", Action::Error)],
            "{dtm_url}: {report:#?}"
        );
        assert!(
            report.lines[0]
                .coordinator
                .contains("answered 404 without saying the gid is unknown"),
            "{dtm_url}: {report:#?}"
        );
        assert_eq!(report.summary.released, 0);
        assert_eq!(sys.balances(bank, 6).await, (SEED, 31), "{dtm_url}");
    }
    let database_url = bank.db.as_ref().unwrap().url.clone();
    let wrong = sys.trans_in.url("/api");
    let env = [
        ("DATABASE_URL", database_url.as_str()),
        ("DTM_URL", wrong.as_str()),
        ("RUST_LOG", "warn"),
    ];
    let run = run_to_completion("trans-out", &["reconcile", "--older-than=0"], &env);
    assert_eq!(run.status.code(), Some(1), "{run:?}");
    assert_eq!(
        state(bank, "holds", "orphan-misconfigured", "01"),
        "tentative"
    );
}

#[tokio::test]
async fn reconcile_releases_an_orphan_stock_reservation() {
    let sys = spawn_system().await;
    try_with_token(
        &sys,
        &sys.stock,
        "StockTry",
        "orphan-stock",
        "01",
        json!({"product_id": 2, "quantity": 5}),
    )
    .await;
    assert_eq!(sys.product(2).await["reserved"], 5);
    let settings = stock::Settings {
        common: common(&sys, &sys.stock),
        ..stock::Settings::defaults()
    };

    let report = stock::reconcile::reconcile(&settings, all_rows(0, false))
        .await
        .unwrap();

    assert_eq!(
        actions(&report),
        vec![row("orphan-stock", "01", Action::Released)]
    );
    assert_eq!(sys.product(2).await["reserved"], 0);
    assert_eq!(
        state(&sys.stock, "reservations", "orphan-stock", "01"),
        "cancelled"
    );
    assert_eq!(barrier_rows(&sys.stock, "orphan-stock", "01", "cancel"), 1);
}

#[tokio::test]
async fn the_reconcile_subcommand_prints_a_json_line_per_hold_and_a_summary() {
    // Built before the system starts: a build between two of its requests would outlast the
    // RMs' keep-alive and break the test's pooled connection.
    test_support::process::ensure_built();
    let sys = spawn_system().await;
    let bank = &sys.trans_out;
    try_with_token(
        &sys,
        bank,
        "TransOutTry",
        "orphan-cli",
        "01",
        json!({"account_id": 5, "amount": 29}),
    )
    .await;
    let database_url = bank.db.as_ref().unwrap().url.clone();
    let dtm_url = sys.coordinator.dtm_url();
    let env = [
        ("DATABASE_URL", database_url.as_str()),
        ("DTM_URL", dtm_url.as_str()),
        ("RUST_LOG", "warn"),
    ];

    let dry = run_to_completion(
        "trans-out",
        &["reconcile", "--older-than", "0", "--dry-run"],
        &env,
    );
    let run = run_to_completion("trans-out", &["reconcile", "--older-than=0"], &env);
    let bad = run_to_completion("trans-out", &["reconcile", "--older-than", "soon"], &env);

    let lines = |output: &std::process::Output| -> Vec<Value> {
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stdout.clone())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect()
    };
    let dry = lines(&dry);
    assert_eq!(dry.len(), 2, "{dry:?}");
    assert_eq!(dry[0]["gid"], "orphan-cli");
    assert_eq!(dry[0]["action"], "would_release");
    assert_eq!(dry[1]["summary"]["would_release"], 1);
    assert_eq!(dry[1]["dry_run"], true);
    let run = lines(&run);
    assert_eq!(run[0]["action"], "released", "{run:?}");
    assert_eq!(run[1]["summary"]["released"], 1);
    assert_eq!(sys.balances(bank, 5).await, (SEED, 0));
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("usage"));
}
