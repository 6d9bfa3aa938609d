//! The TCC failure cases that need real processes (Try timeout, AP crash, hanging Try,
//! coordinator crash in the second phase, RM down): the binaries run as OS processes and are
//! killed with SIGKILL where the case says so.

use std::time::Duration;

use serde_json::json;
use tcc::client::{TccClient, TransOptions};
use test_support::process::{spawn_processes, wait_for_log, ProcessSystem};
use test_support::spawn::{all_succeeded, get_json, ops, tcc_transfer, wait_for_record};

const BALANCE: i64 = 1_000_000;

/// The only transaction the coordinator knows (for runs where the AP could not tell the gid).
async fn only_gid(sys: &ProcessSystem) -> String {
    let all = get_json(&sys.http, &format!("{}/all", sys.dtm_url())).await;
    let transactions = all["transactions"].as_array().unwrap();
    assert_eq!(transactions.len(), 1, "{all:#}");
    transactions[0]["gid"].as_str().unwrap().to_owned()
}

/// A Try delayed past the AP's `request_timeout`: the AP aborts, the Cancel reaches the RM
/// first (an empty compensation), and the delayed Try that runs afterwards must freeze nothing.
async fn delayed_try_is_cancelled_then_hangs(fault: &str, bank_is_trans_out: bool) {
    let sys = spawn_processes(&[]).await;

    let (status, answer) = sys
        .fire(&format!(
            "/api/fireTcc?{fault}=delay:3000&request_timeout=1"
        ))
        .await
        .expect("the AP answers");

    assert_eq!(status, 409, "{answer}");
    assert_eq!(answer["status"], "failed");
    assert!(
        answer["reason"]
            .as_str()
            .unwrap()
            .contains("Try failed: no answer within the request timeout (1 s)"),
        "{answer}"
    );
    let gid = answer["gid"].as_str().unwrap();
    let bank = if bank_is_trans_out {
        &sys.trans_out
    } else {
        &sys.trans_in
    };
    // The Cancel came first; the Try arrives once its delay is over and must be skipped.
    wait_for_log(
        bank,
        &format!("gid={gid} branch_id="),
        Duration::from_secs(1),
    )
    .await;
    let (branch_id, endpoint) = if bank_is_trans_out {
        ("01", "TransOutTry")
    } else {
        ("02", "TransInTry")
    };
    wait_for_log(
        bank,
        &format!("gid={gid} branch_id={branch_id} op=try {endpoint}: hanging"),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(sys.account(&sys.trans_out, 1).await, (BALANCE, 0, 0));
    assert_eq!(sys.account(&sys.trans_in, 1).await, (BALANCE, 0, 0));
    let record = sys
        .wait_for_status(gid, "failed", Duration::from_secs(1))
        .await;
    assert!(all_succeeded(&record, "cancel"), "{record:#}");
}

#[tokio::test]
async fn a_try_that_outlasts_the_request_timeout_makes_the_ap_abort_and_cancel_every_branch() {
    delayed_try_is_cancelled_then_hangs("trans_in_try", false).await;
}

#[tokio::test]
async fn a_hanging_try_that_arrives_after_its_cancel_freezes_no_funds() {
    delayed_try_is_cancelled_then_hangs("trans_out_try", true).await;
}

#[tokio::test]
async fn an_ap_that_crashes_after_its_trys_is_rolled_back_by_the_coordinator_timeout() {
    let mut sys = spawn_processes(&[]).await;

    let fired = sys
        .fire("/api/fireTcc?crash_after_try=true&timeout_to_fail=2")
        .await;

    assert!(fired.is_err(), "the AP died before answering: {fired:?}");
    let exit = sys
        .app
        .wait_exit(Duration::from_secs(5))
        .await
        .expect("the AP exited");
    assert_eq!(exit.code(), Some(app::routes::fire::CRASH_EXIT_CODE));
    let gid = only_gid(&sys).await;
    let record = sys
        .wait_for_status(&gid, "failed", Duration::from_secs(15))
        .await;
    assert_eq!(
        record["transaction"]["rollback_reason"],
        "Timeout after 2 seconds"
    );
    // Both Trys had run: the Cancels released the frozen funds and the pending credit.
    assert_eq!(sys.account(&sys.trans_out, 1).await, (BALANCE, 0, 0));
    assert_eq!(sys.account(&sys.trans_in, 1).await, (BALANCE, 0, 0));
    assert!(
        sys.trans_out.log().contains(&format!(
            "gid={gid} branch_id=01 op=cancel TransOutCancel: applied"
        )),
        "{}",
        sys.trans_out.log()
    );
}

/// Fires `path` (with `wait_result=false`), SIGKILLs the coordinator once `rm` logs that the
/// delayed second-phase call (`branch_id`, `op`) is in flight, restarts it, and checks that the
/// transaction still ends `end` with every op of that kind succeeded; returns the system for the
/// balance checks.
async fn kill_the_coordinator_mid_call(
    path: &str,
    expected_answer: u16,
    in_flight: (
        fn(&ProcessSystem) -> &test_support::process::Process,
        &str,
        &str,
    ),
    end: &str,
) -> ProcessSystem {
    let mut sys = spawn_processes(&[]).await;
    let (rm, branch_id, op) = in_flight;
    let gid = sys
        .fire_until_in_flight(path, expected_answer, rm(&sys), branch_id, op)
        .await;

    sys.coordinator.kill();
    sys.coordinator.restart().await;

    let record = sys
        .wait_for_status(&gid, end, Duration::from_secs(20))
        .await;
    assert!(all_succeeded(&record, op), "{record:#}");
    sys
}

#[tokio::test]
async fn a_coordinator_killed_while_a_confirm_is_in_flight_finishes_after_restart_and_credits_once()
{
    let sys = kill_the_coordinator_mid_call(
        "/api/fireTcc?trans_in_confirm=delay:3000&request_timeout=5&retry_interval=1&wait_result=false",
        200,
        (|s| &s.trans_in, "02", "confirm"),
        "succeed",
    )
    .await;
    assert_eq!(sys.account(&sys.trans_in, 1).await, (BALANCE + 30, 0, 0));
    assert_eq!(sys.account(&sys.trans_out, 1).await, (BALANCE - 30, 0, 0));
}

#[tokio::test]
async fn a_coordinator_killed_while_a_cancel_is_in_flight_finishes_the_rollback_after_restart() {
    let sys = kill_the_coordinator_mid_call(
        "/api/fireTccRollback?trans_out_cancel=delay:3000&request_timeout=5&retry_interval=1&wait_result=false",
        409,
        (|s| &s.trans_out, "01", "cancel"),
        "failed",
    )
    .await;
    assert_eq!(sys.account(&sys.trans_out, 1).await, (BALANCE, 0, 0));
    assert_eq!(sys.account(&sys.trans_in, 1).await, (BALANCE, 0, 0));
}

#[tokio::test]
async fn an_rm_that_is_down_during_the_second_phase_is_retried_until_it_is_back() {
    let mut sys = spawn_processes(&[]).await;
    // The second phase calls TransIn's Confirm first (the last registered branch first); it is
    // held for a second at TransIn, which is stopped meanwhile, so that call fails.
    let (status, answer) = sys
        .fire("/api/fireTcc?trans_in_confirm=delay:1000&retry_interval=1&wait_result=false")
        .await
        .expect("the AP answers");
    assert_eq!(status, 200, "{answer}");
    let gid = answer["gid"].as_str().unwrap().to_owned();
    sys.trans_in.kill();
    let record = wait_for_record(
        &sys.http,
        &sys.dtm_url(),
        &gid,
        Duration::from_secs(10),
        "a refused Confirm",
        |r| {
            ops(r, "confirm")
                .iter()
                .any(|b| b["branch_id"] == "02" && b["attempts"].as_i64() >= Some(1))
        },
    )
    .await;
    assert_eq!(record["transaction"]["status"], "submitted");

    sys.trans_in.restart().await;

    let record = sys
        .wait_for_status(&gid, "succeed", Duration::from_secs(20))
        .await;
    let confirm_in = ops(&record, "confirm")
        .into_iter()
        .find(|b| b["branch_id"] == "02")
        .unwrap();
    assert!(confirm_in["attempts"].as_i64().unwrap() >= 2, "{record:#}");
    assert_eq!(sys.account(&sys.trans_in, 1).await, (BALANCE + 30, 0, 0));
}

#[tokio::test]
async fn a_confirm_that_keeps_failing_backs_off_up_to_the_cap_and_raises_an_alert() {
    let sys = spawn_processes(&[("RETRY_MAX_INTERVAL", "2"), ("ALERT_AFTER_ATTEMPTS", "3")]).await;

    let (status, answer) = sys
        .fire("/api/fireTcc?trans_in_confirm=error:3&retry_interval=1&wait_result=false")
        .await
        .expect("the AP answers");
    assert_eq!(status, 200, "{answer}");
    let gid = answer["gid"].as_str().unwrap().to_owned();

    let record = sys
        .wait_for_status(&gid, "succeed", Duration::from_secs(20))
        .await;
    let confirm_in = ops(&record, "confirm")
        .into_iter()
        .find(|b| b["branch_id"] == "02")
        .unwrap();
    assert_eq!(confirm_in["attempts"], 4, "{record:#}");
    // The backoff step went 1 s -> 2 s -> capped at RETRY_MAX_INTERVAL = 2 s.
    assert_eq!(record["transaction"]["next_cron_interval"], 2, "{record:#}");
    assert_eq!(sys.account(&sys.trans_in, 1).await, (BALANCE + 30, 0, 0));
    let log = sys.coordinator.log();
    let alert = format!("ALERT gid={gid} branch_id=02 op=confirm has failed 3 attempts");
    assert!(
        log.contains(&alert),
        "no {alert:?} in the coordinator's log:\n{log}"
    );
    let m = test_support::metrics::scrape(&sys.http, &sys.coordinator.url("")).await;
    let confirm = [("op", "confirm")];
    assert_eq!(m.value("tcc_branch_alerts_total", &confirm), 1.0);
    assert_eq!(m.value("tcc_branch_retries_total", &confirm), 3.0);
    assert_eq!(
        m.value(
            "tcc_branch_calls_total",
            &[("op", "confirm"), ("result", "error")]
        ),
        3.0
    );
}

#[tokio::test]
async fn the_backoff_step_doubles_after_each_failed_attempt() {
    // A cap far above the steps reached, so that doubling (1 -> 2 -> 4 -> 8) and any slower
    // growth (adding a second: 1 -> 2 -> 3 -> 4) end on different steps.
    let sys = spawn_processes(&[("RETRY_MAX_INTERVAL", "64")]).await;

    let (status, answer) = sys
        .fire("/api/fireTcc?trans_in_confirm=error:3&retry_interval=1&wait_result=false")
        .await
        .expect("the AP answers");
    assert_eq!(status, 200, "{answer}");
    let gid = answer["gid"].as_str().unwrap().to_owned();

    // Three failures wait 1 + 2 + 4 s (with jitter) before the fourth call succeeds.
    let record = sys
        .wait_for_status(&gid, "succeed", Duration::from_secs(30))
        .await;
    let confirm_in = ops(&record, "confirm")
        .into_iter()
        .find(|b| b["branch_id"] == "02")
        .unwrap();
    assert_eq!(confirm_in["attempts"], 4, "{record:#}");
    assert_eq!(record["transaction"]["next_cron_interval"], 8, "{record:#}");
}

#[tokio::test]
async fn a_failure_answer_from_cancel_is_retried_and_alerted_never_dropped() {
    let sys = spawn_processes(&[("RETRY_MAX_INTERVAL", "1"), ("ALERT_AFTER_ATTEMPTS", "2")]).await;

    // TransIn's Try is refused, so both branches are cancelled (02, then 01); TransOut's
    // Cancel answers 409 FAILURE on every call.
    let (status, answer) = sys
        .fire("/api/fireTccRollback?trans_out_cancel=failure&retry_interval=1&wait_result=false")
        .await
        .expect("the AP answers");
    assert_eq!(status, 409, "{answer}");
    let gid = answer["gid"].as_str().unwrap().to_owned();

    // A Cancel must eventually succeed: a FAILURE is a bug in the branch, so the TM keeps
    // retrying (and alerting) past the threshold instead of giving up on the rollback.
    let cancel = |r: &serde_json::Value, id: &str| {
        ops(r, "cancel")
            .into_iter()
            .find(|b| b["branch_id"] == id)
            .unwrap()
            .clone()
    };
    let record = wait_for_record(
        &sys.http,
        &sys.dtm_url(),
        &gid,
        Duration::from_secs(15),
        "3 Cancel attempts on branch 01",
        |r| cancel(r, "01")["attempts"].as_i64().unwrap() >= 3,
    )
    .await;
    assert_eq!(record["transaction"]["status"], "aborting", "{record:#}");
    assert_eq!(cancel(&record, "01")["status"], "prepared", "{record:#}");
    assert!(
        cancel(&record, "01")["last_result"]
            .as_str()
            .unwrap()
            .starts_with("failure"),
        "{record:#}"
    );
    assert_eq!(cancel(&record, "02")["status"], "succeed", "{record:#}");
    wait_for_log(
        &sys.coordinator,
        &format!("ALERT gid={gid} branch_id=01 op=cancel has failed 2 attempts"),
        Duration::from_secs(1),
    )
    .await;
    let m = test_support::metrics::scrape(&sys.http, &sys.coordinator.url("")).await;
    assert!(m.value("tcc_branch_alerts_total", &[("op", "cancel")]) >= 1.0);
    assert!(
        m.value(
            "tcc_branch_calls_total",
            &[("op", "cancel"), ("result", "failure")]
        ) >= 3.0
    );
    // The refused Cancel kept nothing: TransOut's funds are still frozen, not lost or released.
    assert_eq!(sys.account(&sys.trans_out, 1).await, (BALANCE, 30, 0));
}

#[tokio::test]
async fn error_n_counts_survive_a_restart_of_the_rm_so_confirm_is_called_exactly_n_plus_one_times()
{
    // A 2 s step leaves time to restart TransIn between two Confirm attempts.
    let mut sys = spawn_processes(&[("RETRY_MAX_INTERVAL", "2")]).await;

    let (status, answer) = sys
        .fire("/api/fireTcc?trans_in_confirm=error:3&retry_interval=2&wait_result=false")
        .await
        .expect("the AP answers");
    assert_eq!(status, 200, "{answer}");
    let gid = answer["gid"].as_str().unwrap().to_owned();
    let confirm_in_attempts = |r: &serde_json::Value| {
        ops(r, "confirm")
            .into_iter()
            .find(|b| b["branch_id"] == "02")
            .unwrap()["attempts"]
            .as_i64()
            .unwrap()
    };

    // SIGKILL and restart TransIn (same database) after its first and after its second
    // injected 500: were the count kept in memory, each restart would start it again at 0.
    for failed in 1..=2 {
        let record = wait_for_record(
            &sys.http,
            &sys.dtm_url(),
            &gid,
            Duration::from_secs(10),
            &format!("{failed} failed Confirm attempts"),
            |r| confirm_in_attempts(r) >= failed,
        )
        .await;
        assert_eq!(confirm_in_attempts(&record), failed, "{record:#}");
        sys.trans_in.kill();
        sys.trans_in.restart().await;
    }

    let record = sys
        .wait_for_status(&gid, "succeed", Duration::from_secs(20))
        .await;
    assert_eq!(confirm_in_attempts(&record), 4, "{record:#}");
    // TransIn saw exactly those 4 calls (3 injected 500s, then the real one) and applied once.
    let log = sys.trans_in.log();
    let calls = format!("gid={gid} branch_id=02 op=confirm fault ");
    assert_eq!(count(&log, &calls), 4, "{log}");
    let applied = format!("gid={gid} branch_id=02 op=confirm TransInConfirm: applied");
    assert_eq!(count(&log, &applied), 1, "{log}");
    assert_eq!(sys.account(&sys.trans_in, 1).await, (BALANCE + 30, 0, 0));
    assert_eq!(sys.account(&sys.trans_out, 1).await, (BALANCE - 30, 0, 0));
}

/// How many lines of `log` contain `needle`.
fn count(log: &str, needle: &str) -> usize {
    log.lines().filter(|line| line.contains(needle)).count()
}

#[tokio::test]
async fn two_coordinator_replicas_never_call_one_branch_op_twice_and_one_finishes_the_others_work()
{
    let lease = [("LEASE_SECONDS", "2")];
    let mut sys = spawn_processes(&lease).await;
    let replica = sys.spawn_coordinator_replica("replica-b", &lease).await;
    let (out, inn) = (sys.trans_out.url("/api"), sys.trans_in.url("/api"));
    let clients = [
        TccClient::new(sys.dtm_url()),
        TccClient::new(replica.url("/api/dtmsvr")),
    ];
    let options = TransOptions {
        retry_interval: Some(1),
        ..TransOptions::default()
    };

    // Load: 40 transfers at once, half through each replica; every TransIn Confirm fails once,
    // so its retry is claimed by whichever replica's worker gets there first.
    let load = (0..40).map(|i| {
        tcc_transfer(
            &clients[i % 2],
            &out,
            &inn,
            options.clone(),
            json!({"confirm": "error:1"}),
        )
    });
    let gids = futures_util::future::join_all(load).await;
    for gid in &gids {
        sys.wait_for_status(gid, "succeed", Duration::from_secs(30))
            .await;
    }
    // The RMs' logs count the calls each received: TransIn's Confirm exactly twice (the
    // injected 500, then the real one), TransOut's exactly once; never a duplicate delivery.
    let (log_in, log_out) = (sys.trans_in.log(), sys.trans_out.log());
    for gid in &gids {
        assert_eq!(
            count(
                &log_in,
                &format!("gid={gid} branch_id=02 op=confirm fault ")
            ),
            2,
            "{gid}"
        );
        assert_eq!(
            count(
                &log_in,
                &format!("gid={gid} branch_id=02 op=confirm TransInConfirm: applied")
            ),
            1,
            "{gid}"
        );
        assert_eq!(
            count(
                &log_out,
                &format!("gid={gid} branch_id=01 op=confirm TransOutConfirm: applied")
            ),
            1,
            "{gid}"
        );
    }
    // Each Confirm's barrier outcome is logged once per delivery that reached the barrier:
    // exactly one line per gid and branch means no duplicate delivery, whatever its wording.
    for gid in &gids {
        for (log, prefix) in [
            (
                &log_in,
                format!("gid={gid} branch_id=02 op=confirm TransInConfirm: "),
            ),
            (
                &log_out,
                format!("gid={gid} branch_id=01 op=confirm TransOutConfirm: "),
            ),
        ] {
            assert_eq!(count(log, &prefix), 1, "{prefix}");
        }
    }

    // Failover: transfers whose slow Confirms are in flight on the first replica when it is
    // killed; the second claims them once their leases expire.
    let slow = TransOptions {
        request_timeout: Some(5),
        ..options.clone()
    };
    let mut stranded = Vec::new();
    for _ in 0..5 {
        let gid = tcc_transfer(
            &clients[0],
            &out,
            &inn,
            TransOptions {
                wait_result: false,
                ..slow.clone()
            },
            json!({"confirm": "delay:1500"}),
        )
        .await;
        stranded.push(gid);
    }
    wait_for_log(
        &sys.trans_in,
        &format!("gid={} branch_id=02 op=confirm fault ", stranded[0]),
        Duration::from_secs(10),
    )
    .await;
    sys.coordinator.kill();

    let dtm_b = replica.url("/api/dtmsvr");
    for gid in &stranded {
        test_support::spawn::wait_for_status(
            &sys.http,
            &dtm_b,
            gid,
            "succeed",
            Duration::from_secs(30),
        )
        .await;
    }
    // Exactly once, whatever was cut mid-call: 45 credits of 30.
    assert_eq!(
        sys.account(&sys.trans_in, 1).await,
        (BALANCE + 45 * 30, 0, 0)
    );
    assert_eq!(
        sys.account(&sys.trans_out, 1).await,
        (BALANCE - 45 * 30, 0, 0)
    );
}

/// Fires a transfer whose TransOut Confirm (branch 01, called second: last registered first) is
/// delayed 1.5 s, and answers the status of TransIn's Confirm (branch 02, called first) in the
/// coordinator's tables while that delayed call is in flight, then both Confirms' final attempts
/// once the transaction succeeded.
async fn confirm_02_while_confirm_01_is_in_flight(lease_seconds: &str) -> (String, Vec<i64>) {
    let sys = spawn_processes(&[("LEASE_SECONDS", lease_seconds)]).await;
    let path = "/api/fireTcc?trans_out_confirm=delay:1500&wait_result=false";
    let gid = sys
        .fire_until_in_flight(path, 200, &sys.trans_out, "01", "confirm")
        .await;
    let during = get_json(&sys.http, &format!("{}/query?gid={gid}", sys.dtm_url())).await;
    let confirms = ops(&during, "confirm");
    let first = confirms.iter().find(|b| b["branch_id"] == "02").unwrap();
    let first_status = first["status"].as_str().unwrap().to_owned();

    let after = sys
        .wait_for_status(&gid, "succeed", Duration::from_secs(20))
        .await;
    let attempts = ops(&after, "confirm")
        .iter()
        .map(|b| b["attempts"].as_i64().unwrap())
        .collect();
    (first_status, attempts)
}

#[tokio::test]
async fn a_pass_records_all_its_confirms_in_one_commit_when_it_ends() {
    // The default lease (30 s) covers both calls: nothing is written between them, so Confirm 02,
    // answered already, is still `prepared` in the tables while Confirm 01 is in flight.
    let (during, attempts) = confirm_02_while_confirm_01_is_in_flight("30").await;
    assert_eq!(during, "prepared");
    assert_eq!(attempts, [1, 1]);
}

#[tokio::test]
async fn a_pass_whose_lease_cannot_cover_the_next_call_records_and_renews_before_sending_it() {
    // A lease of 1 s is taken as request_timeout + 5 s per call (8 s): enough for one call only,
    // so the pass records Confirm 02 (with the renewal) before it sends Confirm 01.
    let (during, attempts) = confirm_02_while_confirm_01_is_in_flight("1").await;
    assert_eq!(during, "succeed");
    assert_eq!(attempts, [1, 1]);
}

#[tokio::test]
async fn a_binary_started_before_its_database_exists_waits_logging_each_attempt_then_serves() {
    use diesel::{Connection, PgConnection, RunQueryDsl};
    // As after a `docker restart`, where compose's depends_on does not apply: the coordinator
    // starts while its database cannot be connected to yet.
    let name = format!("t_late_coordinator_{}", uuid::Uuid::new_v4().simple());
    let url = format!("{}/{name}", test_support::pg_url());
    // Built first, so that the 1.5 s below are the coordinator's own wait.
    test_support::process::ensure_built();
    let starting = tokio::spawn(test_support::process::Process::start(
        "coordinator",
        vec![("DATABASE_URL".into(), url.clone())],
    ));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let admin = || {
        PgConnection::establish(&format!("{}/postgres", test_support::pg_url()))
            .expect("the admin connection")
    };
    diesel::sql_query(format!(r#"CREATE DATABASE "{name}""#))
        .execute(&mut admin())
        .expect("CREATE DATABASE");

    let coordinator = starting
        .await
        .expect("the coordinator started once its database existed");

    let log = coordinator.log();
    let waits = log
        .lines()
        .filter(|l| l.contains("the database does not accept connections yet (attempt"))
        .count();
    assert!(
        (2..=6).contains(&waits),
        "one warn line per attempt over 1.5 s of backoff (250 ms, doubling), got {waits}:\n{log}"
    );
    assert!(
        !log.lines().any(|l| l.contains("ERROR")),
        "waiting for the database is not an error:\n{log}"
    );
    let health = reqwest::get(coordinator.url("/api/health")).await.unwrap();
    assert_eq!(health.status(), 200);
    drop(coordinator);
    let _ = diesel::sql_query(format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#))
        .execute(&mut admin());
}
