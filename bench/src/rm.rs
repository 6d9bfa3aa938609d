//! The built-in resource manager of the `coordinator` mode: answers every Try, Confirm and Cancel
//! with `200 {"dtm_result":"SUCCESS"}` and does no database work, so that a run measures the
//! coordinator alone.
//!
//! It counts the calls per op, and per `(gid, branch_id, op)` for Confirms, so that the run can
//! check that the coordinator (or several replicas sharing one database) confirmed every branch
//! of every committed transaction exactly once: none lost, none duplicated.

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use actix_web::{web, App, HttpResponse, HttpServer};
use serde::Deserialize;

/// What the RM saw; shared with the load generator.
#[derive(Default)]
pub struct RmCounters {
    /// Try calls.
    pub tries: AtomicU64,
    /// Confirm calls.
    pub confirms: AtomicU64,
    /// Cancel calls.
    pub cancels: AtomicU64,
    /// Confirm calls per `gid/branch_id`.
    confirmed: Mutex<HashMap<String, u32>>,
}

impl RmCounters {
    /// `(distinct branches confirmed, branches confirmed more than once)`.
    pub fn confirm_summary(&self) -> (u64, u64) {
        let map = self.confirmed.lock().expect("never poisoned");
        let duplicated = map.values().filter(|n| **n > 1).count() as u64;
        (map.len() as u64, duplicated)
    }

    /// Whether `gid`'s branch `branch_id` was confirmed at least once.
    pub fn was_confirmed(&self, gid: &str, branch_id: &str) -> bool {
        self.confirmed
            .lock()
            .expect("never poisoned")
            .contains_key(&format!("{gid}/{branch_id}"))
    }
}

/// The branch query the coordinator and the AP's client add to every branch call.
#[derive(Deserialize)]
struct BranchQuery {
    gid: String,
    branch_id: String,
}

async fn answer(
    op: web::Path<String>,
    query: web::Query<BranchQuery>,
    counters: web::Data<RmCounters>,
) -> HttpResponse {
    match op.as_str() {
        "try" => counters.tries.fetch_add(1, Ordering::Relaxed),
        "confirm" => {
            *counters
                .confirmed
                .lock()
                .expect("never poisoned")
                .entry(format!("{}/{}", query.gid, query.branch_id))
                .or_default() += 1;
            counters.confirms.fetch_add(1, Ordering::Relaxed)
        }
        _ => counters.cancels.fetch_add(1, Ordering::Relaxed),
    };
    HttpResponse::Ok()
        .content_type("application/json")
        .body(r#"{"dtm_result":"SUCCESS"}"#)
}

/// Starts the RM on 127.0.0.1 (a free port) in a thread of its own with one actix worker;
/// returns its base URL (`http://127.0.0.1:<port>/rm`, ops at `/rm/try|confirm|cancel`) and its
/// counters.
pub fn start() -> std::io::Result<(String, Arc<RmCounters>)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let counters = web::Data::new(RmCounters::default());
    let shared = counters.clone().into_inner();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let server = HttpServer::new(move || {
                App::new()
                    .app_data(counters.clone())
                    .route("/rm/{op}", web::post().to(answer))
            })
            .workers(1)
            // SIGTERM and Ctrl-C stop the whole load generator, not only its RM.
            .disable_signals()
            .listen(listener)
            .expect("the listener is bound")
            .run();
            let _ = server.await;
        });
    });
    Ok((format!("http://127.0.0.1:{port}/rm"), shared))
}
