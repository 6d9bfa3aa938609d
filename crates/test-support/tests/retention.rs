//! Retention: the coordinator deletes finished transactions older than
//! `RETENTION_SECONDS` with their branch ops, in batches of `RETENTION_BATCH`, and never an
//! unfinished one; the RMs delete the barrier rows (and fault counters) of settled gids older than
//! `BARRIER_RETENTION_SECONDS`, never those of a gid that still holds something tentative.
//!
//! The binaries run in-process with a short retention set through their settings, as a user
//! would set the environment; every wait polls the database with a deadline.

use std::time::{Duration, Instant};

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};
use serde_json::{json, Value};
use test_support::rm::{assert_success, Rm};
use test_support::spawn::{
    post_dtm, spawn_bank, spawn_bank_with, spawn_coordinator_with, spawn_stock_with,
    wait_for_status, Spawned,
};
use test_support::TestDb;

/// Polls `condition` every 50 ms until it holds, or panics after `within` with `what`.
async fn eventually(what: &str, within: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !condition() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// `SELECT count(*) ... WHERE gid = $1` style counts: `sql` must select one bigint named `n` and
/// may use `$1` for `gid`.
fn count(conn: &mut PgConnection, sql: &str, gid: &str) -> i64 {
    diesel::sql_query(sql)
        .bind::<Text, _>(gid)
        .get_result::<Count>(conn)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .n
}

fn execute(conn: &mut PgConnection, sql: &str) {
    diesel::sql_query(sql)
        .execute(conn)
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

// ---- coordinator ----

async fn post(http: &reqwest::Client, tm: &Spawned, call: &str, body: Value) -> Value {
    let response = http
        .post(format!("{}/{call}", tm.dtm_url()))
        .json(&body)
        .send()
        .await
        .expect("the coordinator answers");
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("a JSON answer");
    assert_eq!(status, 200, "{call}: {body}");
    body
}

/// Registers branch `01` of `gid` on `bank`'s TransOut endpoints.
async fn register(http: &reqwest::Client, tm: &Spawned, bank: &Spawned, gid: &str) {
    let body = json!({
        "gid": gid, "trans_type": "tcc", "branch_id": "01",
        "data": r#"{"account_id":1,"amount":30}"#,
        "confirm": bank.url("/api/TransOutConfirm"), "cancel": bank.url("/api/TransOutCancel"),
    });
    post(http, tm, "registerBranch", body).await;
}

fn transactions(conn: &mut PgConnection, gid: &str) -> i64 {
    count(
        conn,
        "SELECT count(*) AS n FROM trans_global WHERE gid = $1",
        gid,
    )
}

fn branch_ops(conn: &mut PgConnection, gid: &str) -> i64 {
    count(
        conn,
        "SELECT count(*) AS n FROM trans_branch_op WHERE gid = $1",
        gid,
    )
}

#[tokio::test]
async fn finished_transactions_older_than_the_retention_are_deleted_with_their_branch_ops_and_unfinished_ones_are_kept(
) {
    let bank = spawn_bank(bank::Role::TransOut).await;
    let tm = spawn_coordinator_with(TestDb::create("coordinator"), |s| {
        s.retention = Duration::from_secs(1);
    })
    .await;
    let http = reqwest::Client::new();
    let mut db = tm.db.as_ref().expect("a database").connect();

    // An AP that never comes back: prepared, one branch, and a timeout far beyond the test.
    post(
        &http,
        &tm,
        "prepare",
        json!({"gid": "g-unfinished", "trans_type": "tcc", "timeout_to_fail": 86_400}),
    )
    .await;
    register(&http, &tm, &bank, "g-unfinished").await;
    // A rollback: the Cancel is an empty compensation in the bank, the transaction ends failed.
    post(&http, &tm, "prepare", json!({"gid": "g-failed"})).await;
    register(&http, &tm, &bank, "g-failed").await;
    post(&http, &tm, "abort", json!({"gid": "g-failed"})).await;
    // A commit: Try in the bank, then submit; the Confirm ends it succeed.
    post(&http, &tm, "prepare", json!({"gid": "g-succeed"})).await;
    register(&http, &tm, &bank, "g-succeed").await;
    let rm = Rm::from(bank);
    let body = json!({"account_id": 1, "amount": 30});
    assert_success(&rm.call("TransOutTry", "g-succeed", "try", &body).await);
    post(&http, &tm, "submit", json!({"gid": "g-succeed"})).await;
    let dtm = tm.dtm_url();
    let within = Duration::from_secs(10);
    for (gid, status) in [("g-failed", "failed"), ("g-succeed", "succeed")] {
        let record = wait_for_status(&http, &dtm, gid, status, within).await;
        assert_eq!(record["branches"].as_array().map(Vec::len), Some(2));
    }

    eventually(
        "both finished transactions deleted with their branch ops",
        within,
        || {
            ["g-failed", "g-succeed"]
                .iter()
                .all(|gid| transactions(&mut db, gid) + branch_ops(&mut db, gid) == 0)
        },
    )
    .await;

    // The statement that deleted them ran more than a second after they finished, so after the
    // prepared one (created before them) was older than the retention too: it was looked at and
    // kept, branch ops included.
    assert_eq!(transactions(&mut db, "g-unfinished"), 1);
    assert_eq!(branch_ops(&mut db, "g-unfinished"), 2);
    let age = count(
        &mut db,
        "SELECT extract(epoch FROM now() - create_time)::bigint AS n FROM trans_global \
         WHERE gid = $1 AND status = 'prepared'",
        "g-unfinished",
    );
    assert!(age >= 1, "prepared for {age} s, longer than the retention");
    let (status, body) = query(&http, &tm, "g-failed").await;
    assert_eq!(
        (status, &body["error"]),
        (404, &json!("gid_deleted")),
        "a deleted transaction is not called unknown: {body}"
    );
}

/// `GET query?gid=` of the coordinator: HTTP status and JSON body.
async fn query(http: &reqwest::Client, tm: &Spawned, gid: &str) -> (u16, Value) {
    let response = http
        .get(format!("{}/query", tm.dtm_url()))
        .query(&[("gid", gid)])
        .send()
        .await
        .expect("query answers");
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON body"))
}

/// Inserts `n` transactions `<prefix>-1..=n` in `status`, created 30 days ago, each with a
/// Confirm and a Cancel op. `finished_ago` is an SQL interval for finished ones (`None` for
/// unfinished ones, which are not due before a year, so the worker leaves them alone).
fn insert_transactions(
    conn: &mut PgConnection,
    prefix: &str,
    n: i32,
    status: &str,
    finished_ago: Option<&str>,
) {
    let finish_time =
        finished_ago.map_or("NULL".to_owned(), |ago| format!("now() - interval '{ago}'"));
    execute(
        conn,
        &format!(
            "INSERT INTO trans_global (gid, status, timeout_to_fail, retry_interval, \
                 request_timeout, next_cron_interval, next_cron_time, create_time, update_time, \
                 finish_time) \
             SELECT '{prefix}-' || i, '{status}', 86400, 10, 3, 10, now() + interval '1 year', \
                    now() - interval '30 days', now() - interval '30 days', {finish_time} \
             FROM generate_series(1, {n}) AS i"
        ),
    );
    execute(
        conn,
        &format!(
            "INSERT INTO trans_branch_op (gid, branch_id, op, url, data, status, target) \
             SELECT g.gid, '01', op, 'http://127.0.0.1:9/api/x', '{{}}', 'prepared', 'x' \
             FROM trans_global g, unnest(ARRAY['confirm', 'cancel']) AS op \
             WHERE g.gid LIKE '{prefix}-%'"
        ),
    );
}

fn with_prefix(conn: &mut PgConnection, prefix: &str) -> (i64, i64) {
    let like = format!("{prefix}-%");
    (
        count(
            conn,
            "SELECT count(*) AS n FROM trans_global WHERE gid LIKE $1",
            &like,
        ),
        count(
            conn,
            "SELECT count(*) AS n FROM trans_branch_op WHERE gid LIKE $1",
            &like,
        ),
    )
}

/// Old finished, recent finished, and old unfinished transactions of every unfinished status.
fn insert_mix(conn: &mut PgConnection) {
    insert_transactions(conn, "old-succeed", 6, "succeed", Some("2 hours"));
    insert_transactions(conn, "old-failed", 4, "failed", Some("2 hours"));
    insert_transactions(conn, "recent", 2, "succeed", Some("1 minute"));
    for status in ["prepared", "submitted", "aborting"] {
        insert_transactions(conn, &format!("old-{status}"), 2, status, None);
    }
}

fn assert_only_old_finished_ones_were_deleted(conn: &mut PgConnection) {
    assert_eq!(with_prefix(conn, "old-succeed"), (0, 0));
    assert_eq!(with_prefix(conn, "old-failed"), (0, 0));
    assert_eq!(
        with_prefix(conn, "recent"),
        (2, 4),
        "finished within the retention"
    );
    for status in ["prepared", "submitted", "aborting"] {
        assert_eq!(
            with_prefix(conn, &format!("old-{status}")),
            (2, 4),
            "{status} transactions are never deleted"
        );
    }
}

#[tokio::test]
async fn one_retention_batch_deletes_at_most_the_batch_size_and_a_pass_loops_until_all_are_gone() {
    // The job is disabled here so the test drives the batches itself.
    let tm = spawn_coordinator_with(TestDb::create("coordinator"), |s| {
        s.retention = Duration::ZERO;
    })
    .await;
    let url = tm.db.as_ref().expect("a database").url.clone();
    let mut db = tm.db.as_ref().expect("a database").connect();
    insert_mix(&mut db);

    let first = coordinator::store::delete_finished_before(&mut db, 3600, 3).expect("a batch");
    assert_eq!(first, 3);
    assert_eq!(
        with_prefix(&mut db, "old-succeed").0 + with_prefix(&mut db, "old-failed").0,
        7
    );

    let pool = service_kit::db::build_pool(&url, 2).expect("a pool");
    let rest = coordinator::retention::sweep(&pool, Duration::from_secs(3600), 3)
        .await
        .expect("a pass");
    assert_eq!(rest, 7, "three full batches and a last one of one");
    assert_only_old_finished_ones_were_deleted(&mut db);
}

#[tokio::test]
async fn the_coordinators_retention_job_deletes_more_old_transactions_than_one_batch_holds() {
    let tm = spawn_coordinator_with(TestDb::create("coordinator"), |s| {
        s.retention = Duration::from_secs(3600);
        s.retention_batch = 3;
    })
    .await;
    let mut db = tm.db.as_ref().expect("a database").connect();
    insert_mix(&mut db);

    eventually(
        "ten old finished transactions deleted in batches of three",
        Duration::from_secs(10),
        || with_prefix(&mut db, "old-succeed").0 + with_prefix(&mut db, "old-failed").0 == 0,
    )
    .await;
    assert_only_old_finished_ones_were_deleted(&mut db);
}

// ---- RMs: barrier rows ----

fn barrier_rows(rm: &Rm, gid: &str) -> i64 {
    count(
        &mut rm.db(),
        "SELECT count(*) AS n FROM dtm_barrier.barrier WHERE gid = $1",
        gid,
    )
}

fn fault_counters(rm: &Rm, gid: &str) -> i64 {
    count(
        &mut rm.db(),
        "SELECT count(*) AS n FROM fault_counters WHERE gid = $1",
        gid,
    )
}

fn tentative(rm: &Rm, table: &str, gid: &str) -> i64 {
    count(
        &mut rm.db(),
        &format!("SELECT count(*) AS n FROM {table} WHERE gid = $1 AND state = 'tentative'"),
        gid,
    )
}

#[tokio::test]
async fn a_bank_deletes_the_barrier_rows_of_settled_gids_older_than_the_retention_and_keeps_those_of_a_gid_with_a_tentative_hold(
) {
    let bank = Rm::from(
        spawn_bank_with(bank::Role::TransOut, TestDb::create("trans_out"), |s| {
            s.common.barrier_retention = Duration::from_secs(1);
            s.common.retention_batch = 2;
        })
        .await,
    );
    let body = json!({"account_id": 1, "amount": 30});
    let faulty = json!({"account_id": 1, "amount": 30, "fault": {"confirm": "error:1"}});

    // Frozen funds awaiting their Confirm or Cancel: its Try row is the oldest of all.
    assert_success(&bank.call("TransOutTry", "g-held", "try", &body).await);
    // Settled: confirmed (after one injected error, which leaves a fault counter), cancelled,
    // and an empty compensation (Cancel without Try).
    assert_success(
        &bank
            .call("TransOutTry", "g-confirmed", "try", &faulty)
            .await,
    );
    let (status, _) = bank
        .call("TransOutConfirm", "g-confirmed", "confirm", &faulty)
        .await;
    assert_eq!(status, 500, "the injected error");
    assert_success(
        &bank
            .call("TransOutConfirm", "g-confirmed", "confirm", &faulty)
            .await,
    );
    assert_success(&bank.call("TransOutTry", "g-cancelled", "try", &body).await);
    assert_success(
        &bank
            .call("TransOutCancel", "g-cancelled", "cancel", &body)
            .await,
    );
    assert_success(
        &bank
            .call("TransOutCancel", "g-empty", "cancel", &body)
            .await,
    );
    assert_eq!(fault_counters(&bank, "g-confirmed"), 1);
    let settled = ["g-confirmed", "g-cancelled", "g-empty"];
    assert!(settled.iter().all(|gid| barrier_rows(&bank, gid) == 2));

    eventually(
        "the barrier rows of three settled gids deleted, two gids per batch",
        Duration::from_secs(10),
        || settled.iter().all(|gid| barrier_rows(&bank, gid) == 0),
    )
    .await;

    assert_eq!(fault_counters(&bank, "g-confirmed"), 0);
    // Older than the retention as well, but its hold is still tentative.
    assert_eq!(barrier_rows(&bank, "g-held"), 1);
    assert_eq!(tentative(&bank, "holds", "g-held"), 1);
    let holds = count(
        &mut bank.db(),
        "SELECT count(*) AS n FROM holds WHERE gid <> $1",
        "g-held",
    );
    assert_eq!(holds, 2, "the holds themselves are the bank's records");

    // Once settled, its rows go too, a retention after the Cancel.
    assert_success(&bank.call("TransOutCancel", "g-held", "cancel", &body).await);
    assert_eq!(barrier_rows(&bank, "g-held"), 2);
    eventually(
        "the rows of the gid settled last deleted",
        Duration::from_secs(10),
        || barrier_rows(&bank, "g-held") == 0,
    )
    .await;
}

#[tokio::test]
async fn the_stock_service_keeps_the_barrier_rows_of_a_tentative_reservation_and_deletes_settled_ones(
) {
    let stock = Rm::from(
        spawn_stock_with(TestDb::create("stock"), |s| {
            s.common.barrier_retention = Duration::from_secs(1);
        })
        .await,
    );
    let body = json!({"product_id": 1, "quantity": 2});

    assert_success(&stock.call("StockTry", "g-reserved", "try", &body).await);
    assert_success(&stock.call("StockTry", "g-sold", "try", &body).await);
    assert_success(&stock.call("StockConfirm", "g-sold", "confirm", &body).await);

    eventually(
        "the barrier rows of the confirmed reservation deleted",
        Duration::from_secs(10),
        || barrier_rows(&stock, "g-sold") == 0,
    )
    .await;
    assert_eq!(barrier_rows(&stock, "g-reserved"), 1);
    assert_eq!(tentative(&stock, "reservations", "g-reserved"), 1);
}

fn tombstones(conn: &mut PgConnection, gid: &str) -> i64 {
    count(
        conn,
        "SELECT count(*) AS n FROM trans_gid_tombstone WHERE gid = $1",
        gid,
    )
}

#[tokio::test]
async fn a_gid_whose_transaction_retention_deleted_is_refused_by_prepare_with_409() {
    let tm = spawn_coordinator_with(TestDb::create("coordinator"), |s| {
        s.retention = Duration::from_secs(1);
    })
    .await;
    let http = reqwest::Client::new();
    let mut db = tm.db.as_ref().expect("a database").connect();
    post(&http, &tm, "prepare", json!({"gid": "g-once"})).await;
    post(
        &http,
        &tm,
        "submit",
        json!({"gid": "g-once", "wait_result": true}),
    )
    .await;
    eventually(
        "the finished transaction deleted",
        Duration::from_secs(10),
        || transactions(&mut db, "g-once") == 0,
    )
    .await;
    assert_eq!(tombstones(&mut db, "g-once"), 1, "its tombstone is kept");

    let (status, body) = post_dtm(&http, &tm, "prepare", json!({"gid": "g-once"})).await;

    assert_eq!(status, 409, "{body}");
    assert_eq!(body["dtm_result"], "FAILURE");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("deleted by retention"),
        "{body}"
    );
    assert_eq!(transactions(&mut db, "g-once"), 0, "nothing was created");
}

#[tokio::test]
async fn gid_tombstones_are_deleted_after_gid_tombstone_seconds_and_the_gid_may_then_be_prepared_again(
) {
    let tm = spawn_coordinator_with(TestDb::create("coordinator"), |s| {
        s.retention = Duration::from_secs(1);
        s.gid_tombstones = Duration::from_secs(2);
    })
    .await;
    let http = reqwest::Client::new();
    let mut db = tm.db.as_ref().expect("a database").connect();
    post(&http, &tm, "prepare", json!({"gid": "g-expiring"})).await;
    post(
        &http,
        &tm,
        "submit",
        json!({"gid": "g-expiring", "wait_result": true}),
    )
    .await;
    eventually("the tombstone written", Duration::from_secs(10), || {
        tombstones(&mut db, "g-expiring") == 1
    })
    .await;

    eventually("the tombstone deleted", Duration::from_secs(10), || {
        tombstones(&mut db, "g-expiring") == 0
    })
    .await;

    let (status, body) = query(&http, &tm, "g-expiring").await;
    assert_eq!(
        (status, &body["error"]),
        (404, &json!("unknown_gid")),
        "{body}"
    );
    let (status, body) = post_dtm(&http, &tm, "prepare", json!({"gid": "g-expiring"})).await;
    assert_eq!(status, 200, "{body}");
}
