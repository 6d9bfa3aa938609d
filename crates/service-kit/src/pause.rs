//! The board of the `pause` and `pause-after` demo faults ([`crate::fault`]): a branch call held
//! at the RM until someone resumes it, so that a room can look at the state between two protocol
//! steps while the global transaction really waits there (`scripts/demo.sh success --step`).
//!
//! * `pause` holds the call before anything is done: the step before it is over, this one has
//!   not started.
//! * `pause-after` holds the answer after the work committed: the step is done, and its caller
//!   (the AP for a Try, the TM for a Confirm or Cancel) has not heard it yet.
//!
//! Routes, mounted by [`configure`] on every RM:
//!
//! * `GET /api/paused`: the calls held now, oldest first, as [`PausedCall`]s.
//! * `POST /api/paused/resume?gid=&branch_id=&op=`: resumes the held calls of `gid` (of one
//!   branch and op when given); `200 {"resumed": n}`, n may be 0. A malformed query answers 400.
//!
//! A held call resumes by itself after [`MAX_PAUSE`], shorter than the longest
//! `request_timeout` a transaction may set ([`tcc::protocol::MAX_REQUEST_TIMEOUT_SECS`]), so that
//! a forgotten pause delays a step but never turns into a timeout of its caller. A demo that
//! pauses a call sets that `request_timeout`. The resume endpoint needs no credentials: it only
//! shortens a wait its caller asked for, and with `FAULT_INJECTION=off` nothing is ever held.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tcc::protocol::{BranchQuery, Op};

/// How long a call stays held when nobody resumes it: 50 s, under the 60 s of
/// [`tcc::protocol::MAX_REQUEST_TIMEOUT_SECS`].
pub const MAX_PAUSE: Duration = Duration::from_secs(50);

/// The path listing the held calls.
pub const PAUSED_PATH: &str = "/api/paused";

/// The path resuming held calls.
pub const RESUME_PATH: &str = "/api/paused/resume";

/// Where a call is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PauseStage {
    /// `pause`: before the fault's other effects, the barrier and the business change.
    BeforeWork,
    /// `pause-after`: after the handler answered (its local transaction committed), before the
    /// answer leaves.
    AfterWork,
}

impl std::fmt::Display for PauseStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PauseStage::BeforeWork => "before the work",
            PauseStage::AfterWork => "after the work, before the answer",
        })
    }
}

/// One held call, as `GET /api/paused` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PausedCall {
    /// The global transaction id.
    pub gid: String,
    /// The branch id.
    pub branch_id: String,
    /// The phase of the held call.
    #[schema(value_type = String, example = "try")]
    pub op: Op,
    /// Before or after the work.
    pub stage: PauseStage,
    /// When it was held (RFC 3339, UTC).
    pub paused_at: DateTime<Utc>,
    /// When it resumes by itself ([`MAX_PAUSE`] later).
    pub resumes_at: DateTime<Utc>,
}

/// The calls held now, shared by every worker of an RM (app data `web::Data<PauseBoard>`).
#[derive(Debug, Default)]
pub struct PauseBoard {
    next_id: AtomicU64,
    held: Mutex<BTreeMap<u64, Held>>,
}

#[derive(Debug)]
struct Held {
    call: PausedCall,
    release: Arc<tokio::sync::Notify>,
}

/// Removes a held call from the board when dropped.
struct Listed<'a> {
    board: &'a PauseBoard,
    id: u64,
}

impl Drop for Listed<'_> {
    fn drop(&mut self) {
        self.board.lock().remove(&self.id);
    }
}

/// Why a held call went on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resumed {
    /// `POST /api/paused/resume` released it.
    OnRequest,
    /// Nobody did within [`MAX_PAUSE`].
    ByItself,
}

impl PauseBoard {
    /// Holds the call of `query` at `stage` until it is resumed or [`MAX_PAUSE`] has passed.
    pub async fn hold(&self, query: &BranchQuery, stage: PauseStage) -> Resumed {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let release = Arc::new(tokio::sync::Notify::new());
        let paused_at = Utc::now();
        let call = PausedCall {
            gid: query.gid.clone(),
            branch_id: query.branch_id.clone(),
            op: query.op,
            stage,
            paused_at,
            resumes_at: paused_at + MAX_PAUSE,
        };
        self.lock().insert(
            id,
            Held {
                call,
                release: release.clone(),
            },
        );
        // Off the board however the wait ends, also when its caller hangs up and actix drops
        // this future mid-wait.
        let _listed = Listed { board: self, id };
        // `notify_one` stores a permit when it comes before this wait starts: no lost resume.
        let resumed = tokio::time::timeout(MAX_PAUSE, release.notified()).await;
        match resumed {
            Ok(()) => Resumed::OnRequest,
            Err(_) => Resumed::ByItself,
        }
    }

    /// The calls held now, oldest first.
    pub fn list(&self) -> Vec<PausedCall> {
        self.lock().values().map(|h| h.call.clone()).collect()
    }

    /// Resumes the held calls matching `filter`; returns how many.
    pub fn resume(&self, filter: &ResumeFilter) -> usize {
        let held = self.lock();
        let matching = held.values().filter(|h| filter.matches(&h.call));
        matching.map(|h| h.release.notify_one()).count()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Held>> {
        // A panic while holding the lock leaves the map consistent (every change is one call).
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The query of `POST /api/paused/resume`: a gid, and optionally one branch and op.
#[derive(Debug, Clone, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ResumeFilter {
    /// The global transaction whose held calls resume.
    pub gid: String,
    /// Only this branch's.
    pub branch_id: Option<String>,
    /// Only this phase's (`try`, `confirm`, `cancel`).
    #[param(value_type = Option<String>)]
    pub op: Option<Op>,
}

impl ResumeFilter {
    fn matches(&self, call: &PausedCall) -> bool {
        call.gid == self.gid
            && self.branch_id.as_ref().is_none_or(|b| *b == call.branch_id)
            && self.op.is_none_or(|op| op == call.op)
    }
}

/// `{"resumed": n}`: how many held calls `POST /api/paused/resume` released.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ResumeAnswer {
    /// Held calls released (0 when none matched).
    pub resumed: usize,
}

/// `GET /api/paused`.
#[utoipa::path(get, path = "/api/paused", tag = "demo faults",
    responses((status = 200, description = "The calls held now, oldest first", body = [PausedCall])))]
pub async fn list_paused(board: web::Data<PauseBoard>) -> HttpResponse {
    HttpResponse::Ok().json(board.list())
}

/// `POST /api/paused/resume`.
#[utoipa::path(post, path = "/api/paused/resume", tag = "demo faults", params(ResumeFilter),
    responses((status = 200, description = "How many held calls were released", body = ResumeAnswer),
              (status = 400, description = "`invalid_query`: a malformed query", body = crate::http::ErrorBody)))]
pub async fn resume_paused(
    board: web::Data<PauseBoard>,
    filter: web::Query<ResumeFilter>,
) -> HttpResponse {
    let resumed = board.resume(&filter);
    log::info!(
        "gid={} branch_id={} op={} resume requested: {resumed} held call(s) released",
        filter.gid,
        filter.branch_id.as_deref().unwrap_or("-"),
        filter.op.map_or("-", Op::as_str),
    );
    HttpResponse::Ok().json(ResumeAnswer { resumed })
}

/// Mounts `GET /api/paused` and `POST /api/paused/resume` over `board`.
pub fn configure(cfg: &mut web::ServiceConfig, board: web::Data<PauseBoard>) {
    cfg.app_data(board)
        .route(PAUSED_PATH, web::get().to(list_paused))
        .route(RESUME_PATH, web::post().to(resume_paused));
}

/// The OpenAPI description of [`configure`]'s routes.
#[derive(utoipa::OpenApi)]
#[openapi(paths(list_paused, resume_paused))]
pub struct PauseApi;

#[cfg(test)]
mod tests {
    use super::*;
    use tcc::protocol::TransType;

    fn query(gid: &str, branch_id: &str, op: Op) -> BranchQuery {
        BranchQuery {
            gid: gid.into(),
            trans_type: TransType::Tcc,
            branch_id: branch_id.into(),
            op,
            dtm: None,
        }
    }

    #[tokio::test]
    async fn a_held_call_is_listed_until_its_gid_is_resumed() {
        let board = Arc::new(PauseBoard::default());
        let held = {
            let board = board.clone();
            tokio::spawn(async move {
                let q = query("g1", "02", Op::Confirm);
                board.hold(&q, PauseStage::BeforeWork).await
            })
        };
        while board.list().is_empty() {
            tokio::task::yield_now().await;
        }
        let listed = board.list();
        assert_eq!(listed.len(), 1);
        assert_eq!((listed[0].gid.as_str(), listed[0].op), ("g1", Op::Confirm));
        let other = ResumeFilter {
            gid: "g2".into(),
            branch_id: None,
            op: None,
        };
        assert_eq!(board.resume(&other), 0);
        let wrong_op = ResumeFilter {
            op: Some(Op::Try),
            gid: "g1".into(),
            branch_id: None,
        };
        assert_eq!(board.resume(&wrong_op), 0);
        let mine = ResumeFilter {
            gid: "g1".into(),
            branch_id: Some("02".into()),
            op: Some(Op::Confirm),
        };
        assert_eq!(board.resume(&mine), 1);
        assert_eq!(held.await.unwrap(), Resumed::OnRequest);
        assert!(board.list().is_empty());
    }

    #[tokio::test]
    async fn a_hold_whose_caller_hung_up_leaves_the_board() {
        let board = Arc::new(PauseBoard::default());
        let held = {
            let board = board.clone();
            tokio::spawn(async move {
                let q = query("g1", "01", Op::Try);
                board.hold(&q, PauseStage::BeforeWork).await
            })
        };
        while board.list().is_empty() {
            tokio::task::yield_now().await;
        }
        held.abort();
        assert!(held.await.unwrap_err().is_cancelled());
        assert!(board.list().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_forgotten_pause_ends_by_itself_after_max_pause() {
        let board = PauseBoard::default();
        let q = query("g1", "01", Op::Try);
        let started = tokio::time::Instant::now();
        assert_eq!(
            board.hold(&q, PauseStage::AfterWork).await,
            Resumed::ByItself
        );
        assert_eq!(started.elapsed(), MAX_PAUSE);
        assert!(board.list().is_empty());
    }
}
