//! Spawning the coordinator in tests.

use std::time::Duration;

use super::Spawned;
use crate::db::TestDb;

/// A coordinator on a fresh database, on port 0, with a fast worker tick (50 ms) so that retries
/// and timeouts show up quickly, signing its Confirm and Cancel calls with the
/// [`super::TEST_SIGNING_SECRET`] the test RMs check; everything else as a user gets it.
pub async fn spawn_coordinator() -> Spawned {
    spawn_coordinator_with(TestDb::create("coordinator"), |_| {}).await
}

/// A coordinator on `db` (a fresh one, or one handed back by [`Spawned::stop`] to restart on the
/// same data), with `configure` applied to its settings last (after the test defaults of
/// [`spawn_coordinator`]).
pub async fn spawn_coordinator_with(
    db: TestDb,
    configure: impl FnOnce(&mut coordinator::Settings),
) -> Spawned {
    let mut settings = coordinator::Settings::from_env().expect("coordinator settings");
    settings.host = "127.0.0.1".into();
    settings.port = 0;
    settings.database_url = db.url.clone();
    settings.db_pool_size = 4;
    settings.cron_interval = Duration::from_millis(50);
    settings.branch_signing_secret = Some(super::test_secret());
    configure(&mut settings);
    let app = coordinator::Application::build(settings)
        .await
        .expect("the coordinator starts");
    let (port, handle) = (app.port(), app.handle());
    Spawned::launch(
        "coordinator",
        port,
        handle,
        Some(db),
        app.run_until_stopped(),
    )
}

impl Spawned {
    /// The coordinator's DTM base URL, `http://127.0.0.1:<port>/api/dtmsvr`.
    pub fn dtm_url(&self) -> String {
        self.url("/api/dtmsvr")
    }
}

/// `POST {dtm_url}/{call}` with `body` as JSON, as an AP calls the coordinator (`prepare`,
/// `registerBranch`, `submit`, ...): (HTTP status, JSON answer), whatever the status.
pub async fn post_dtm(
    http: &reqwest::Client,
    coordinator: &Spawned,
    call: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let response = http
        .post(format!("{}/{call}", coordinator.dtm_url()))
        .json(&body)
        .send()
        .await
        .expect("the coordinator answers");
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON answer"))
}
