//! The coordinator's `GET /api/metrics`, through real HTTP: finished transactions by trans_type
//! and final status, the second phase's duration, and the unfinished backlog (count and oldest
//! age by status), which is read from the database at scrape time.
//!
//! Each test spawns its own coordinator (its own registry and database), so exact values hold
//! while tests run in parallel.

use serde_json::json;
use test_support::metrics::scrape;
use test_support::spawn::{spawn_coordinator, spawn_system};

#[tokio::test]
async fn finished_transactions_are_counted_by_status_with_their_second_phase_duration() {
    let sys = spawn_system().await;
    let (ok, _) = sys.fire("/api/fireTcc").await;
    let (refused, _) = sys.fire("/api/fireTccRollback").await;
    assert_eq!((ok, refused), (200, 409));

    let m = scrape(&sys.http, &sys.coordinator.base_url).await;
    for status in ["succeed", "failed"] {
        let labels = [("status", status), ("trans_type", "tcc")];
        assert_eq!(m.value("tcc_transactions_finished_total", &labels), 1.0);
        assert_eq!(
            m.value("tcc_second_phase_duration_seconds_count", &labels),
            1.0
        );
        let sum = m.value("tcc_second_phase_duration_seconds_sum", &labels);
        assert!(sum > 0.0 && sum < 10.0, "{status}: {sum} s");
    }
    for status in ["prepared", "submitted", "aborting"] {
        let labels = [("status", status)];
        assert_eq!(m.value("tcc_transactions_unfinished", &labels), 0.0);
        assert_eq!(
            m.value("tcc_transactions_unfinished_oldest_age_seconds", &labels),
            0.0
        );
    }
}

#[tokio::test]
async fn the_unfinished_backlog_is_read_from_the_database_at_each_scrape() {
    let coordinator = spawn_coordinator().await;
    let http = reqwest::Client::new();
    for gid in ["metrics-prepared-1", "metrics-prepared-2"] {
        let response = http
            .post(format!("{}/prepare", coordinator.dtm_url()))
            .json(&json!({"gid": gid, "trans_type": "tcc"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
    }
    let prepared = [("status", "prepared")];
    let m = scrape(&http, &coordinator.base_url).await;
    assert_eq!(m.value("tcc_transactions_unfinished", &prepared), 2.0);
    let age = m.value("tcc_transactions_unfinished_oldest_age_seconds", &prepared);
    assert!(age > 0.0 && age < 30.0, "{age}");

    // Aborted with no branches, one of them finishes at once; the next scrape sees one left.
    let response = http
        .post(format!("{}/abort", coordinator.dtm_url()))
        .json(&json!({"gid": "metrics-prepared-1", "wait_result": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let m = scrape(&http, &coordinator.base_url).await;
    assert_eq!(m.value("tcc_transactions_unfinished", &prepared), 1.0);
    assert_eq!(
        m.value(
            "tcc_transactions_finished_total",
            &[("status", "failed"), ("trans_type", "tcc")]
        ),
        1.0
    );
}
