//! Each binary of the sample started in-process on port 0 with its own fresh database, as
//! zero2prod's `spawn_app()` does, plus [`spawn_system`] wiring all five together.
//!
//! Every `spawn_*` function returns a [`Spawned`]: its base URL, its database (if any) and a way to
//! stop it. Dropping a `Spawned` stops the server and drops its database.
//!
//! Test binaries are wired as a deployment should be: the coordinator, the RMs and the AP share
//! [`TEST_SIGNING_SECRET`] (`BRANCH_SIGNING_SECRET`), and in a [`System`] each RM's `DTM_URL` is
//! the test's coordinator. An RM spawned alone trusts no coordinator (its `DTM_URL` is a port
//! nothing listens on), so its Trys pass only with a gid token: tests calling it as the AP would
//! send [`test_gid_token`] (as [`crate::rm::Rm::call`] does).

use std::future::Future;

use actix_web::dev::ServerHandle;
use service_kit::settings::RmCommonSettings;
use service_kit::startup::{RmApplication, RmSettings};
use tcc::signing::SigningSecret;
use tokio::task::JoinHandle;

use crate::db::TestDb;

mod app;
mod bank;
mod coordinator;
mod stock;
mod system;

pub use app::*;
pub use bank::*;
pub use coordinator::*;
pub use stock::*;
pub use system::*;

/// One running binary.
pub struct Spawned {
    /// `coordinator`, `trans-out`, ...
    pub name: &'static str,
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    /// `http://127.0.0.1:<port>`.
    pub base_url: String,
    /// Its database, when it has one. Kept alive (not dropped) while the binary runs.
    pub db: Option<TestDb>,
    handle: ServerHandle,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Spawned {
    /// Starts `run` (an `Application::run_until_stopped()` future) on the test's runtime.
    pub fn launch<F>(
        name: &'static str,
        port: u16,
        handle: ServerHandle,
        db: Option<TestDb>,
        run: F,
    ) -> Spawned
    where
        F: Future<Output = std::io::Result<()>> + Send + 'static,
    {
        Spawned {
            name,
            port,
            base_url: format!("http://127.0.0.1:{port}"),
            db,
            handle,
            task: Some(tokio::spawn(run)),
        }
    }

    /// `base_url` + `path` (`path` starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// Stops the server without waiting for requests in flight (as a crash would cut them), and
    /// hands back its database so that a test can start the binary again on the same data.
    pub async fn stop(mut self) -> Option<TestDb> {
        self.handle.stop(false).await;
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        self.db.take()
    }
}

/// The `BRANCH_SIGNING_SECRET` every test binary gets (coordinator, RMs, AP).
pub const TEST_SIGNING_SECRET: &str = "test-branch-signing-secret";

/// [`TEST_SIGNING_SECRET`] as a secret.
pub fn test_secret() -> SigningSecret {
    SigningSecret::new(TEST_SIGNING_SECRET)
}

/// The gid token of `gid` under [`TEST_SIGNING_SECRET`], the value of the `X-Tcc-Gid-Token`
/// header ([`tcc::signing::GID_TOKEN_HEADER`]) an AP holding the secret sends.
pub fn test_gid_token(gid: &str) -> String {
    tcc::signing::gid_token(&test_secret(), gid)
}

/// The settings every RM shares as a test RM runs them: `defaults` (the RM's own) listening on
/// 127.0.0.1, port 0 (a free one), on `db`, with a pool of 5 connections, the
/// [`TEST_SIGNING_SECRET`], and no coordinator (`DTM_URL` a port nothing listens on: a Try
/// without a gid token is answered 503; [`spawn_system`] points it at the system's coordinator).
fn test_common(defaults: RmCommonSettings, db: &TestDb) -> RmCommonSettings {
    RmCommonSettings {
        host: "127.0.0.1".into(),
        port: 0,
        database_url: db.url.clone(),
        db_pool_size: 5,
        branch_signing_secret: Some(test_secret()),
        dtm_url: unreachable_url("/api/dtmsvr"),
        ..defaults
    }
}

/// Builds the RM `settings` describe (a bank or the stock service: its `startup::Application`)
/// on `db` and launches it under its service name; panics if it does not start.
async fn spawn_rm<S: RmSettings>(settings: S, db: TestDb) -> Spawned {
    let name = settings.server().service;
    let application = RmApplication::build(settings)
        .await
        .unwrap_or_else(|e| panic!("{name} starts: {e}"));
    let (port, handle) = (application.port(), application.handle());
    Spawned::launch(
        name,
        port,
        handle,
        Some(db),
        application.run_until_stopped(),
    )
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
