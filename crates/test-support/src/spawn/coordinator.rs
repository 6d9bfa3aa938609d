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
