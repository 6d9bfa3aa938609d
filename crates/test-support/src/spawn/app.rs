//! Spawning the app binary (the AP) in tests.

use app::configuration::Settings;
use app::startup::Application;

use super::Spawned;

/// Starts the AP in-process on 127.0.0.1, port 0, pointed at the coordinator's `dtm_url`
/// (`http://127.0.0.1:<port>/api/dtmsvr`) and the RMs' API bases (`http://127.0.0.1:<port>/api`).
/// The AP has no database, so [`Spawned::db`] is `None`. Its own API base (`APP_URL`, where
/// the coordinator reaches its nested branch) is left unset, so the AP derives it from the port it
/// bound: `http://127.0.0.1:<port>/api`, i.e. `Spawned::url("/api")`.
///
/// It holds the [`super::TEST_SIGNING_SECRET`], so its transactions carry gid tokens. Nothing is
/// contacted at start: the other binaries may be spawned before or after.
pub async fn spawn_app(
    dtm_url: &str,
    trans_out_url: &str,
    trans_in_url: &str,
    stock_url: &str,
) -> Spawned {
    spawn_app_with(Settings {
        dtm_url: dtm_url.to_owned(),
        trans_out_url: trans_out_url.to_owned(),
        trans_in_url: trans_in_url.to_owned(),
        stock_url: stock_url.to_owned(),
        branch_signing_secret: Some(super::test_secret()),
        ..Settings::default()
    })
    .await
}

/// Starts the AP with explicit settings (e.g. a small `json_limit`; the secret too: none unless
/// given). `host` and `port` are
/// overridden with 127.0.0.1 and 0; an unset `app_url` becomes `http://127.0.0.1:<bound port>/api`
/// (an explicit one is kept, e.g. to point the TM's calls to the nested branch elsewhere).
pub async fn spawn_app_with(settings: Settings) -> Spawned {
    let settings = Settings {
        host: "127.0.0.1".into(),
        port: 0,
        ..settings
    };
    let application = Application::build(settings)
        .await
        .expect("the app (AP) starts");
    let port = application.port();
    let handle = application.handle();
    Spawned::launch("app", port, handle, None, application.run_until_stopped())
}
