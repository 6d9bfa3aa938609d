//! The second phase: drive every Confirm (after `submit`) or every Cancel (after `abort` or a
//! timeout) of a transaction until each has succeeded
//! (docs/ARCHITECTURE.md#second-phase-retries-leases-and-replicas; the calls as
//! docs/PROTOCOL.md, "Branch calls", describes them).
//!
//! One pass over a transaction, by whoever holds its lease:
//!
//! 1. a `prepared` transaction claimed by the worker has passed `timeout_to_fail`: move it to
//!    `aborting` with reason `Timeout after N seconds` (this frees what a crashed AP reserved);
//! 2. call the pending ops in order (Confirms and Cancels alike from the last registered branch to
//!    the first, as DTM's `trans_type_tcc.go` does: a nested child before its parent), each
//!    `POST <url>?gid=&trans_type=tcc&branch_id=&op=` with the registered data as body (signed
//!    with `BRANCH_SIGNING_SECRET` when set: [`tcc::signing`]), and record them all in one commit
//!    ([`store::record_calls`]) at the end of the pass, together with what step 3 writes: each
//!    call's `branch_calling` and `branch_called` events (HTTP status or error, latency, attempt
//!    number: [`crate::events`]) and its op's new status. Confirm and Cancel are idempotent
//!    (docs/ARCHITECTURE.md#the-sub-transaction-barrier), so calls a crash kept from being recorded are only sent again by the next
//!    pass (DTM's `UpdateBranchSync` setting makes the same trade when it writes them
//!    asynchronously).
//!    The claim made the lease outlast the first call and wrote its `branch_calling` event (so a
//!    pass cut short by a crash still shows); before a later call that might outlive the lease,
//!    the calls so far are recorded and the lease renewed. A pass records only while it holds
//!    the lease: one that lost it (another replica took over) records nothing and stops;
//! 3. all succeeded: `submitted -> succeed` / `aborting -> failed`;
//!    a branch answered ONGOING: ask again after `retry_interval`, no backoff growth;
//!    anything else (5xx, timeout, refused connection, and FAILURE too, since a Confirm or Cancel
//!    must eventually succeed): retry after the current backoff step plus jitter, double the step
//!    up to the cap, and raise an alert once a branch op has failed `alert_after_attempts` times.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use rand::Rng;
use service_kit::db::{blocking, DbPool};
use tcc::protocol::{BranchOutcome, GlobalStatus, Op};
use tcc::signing::{self, SigningSecret};

use crate::configuration::Settings;
use crate::error::CoordinatorError;
use crate::metrics::Metrics;
use crate::store::{self, AfterCalls, BranchCall, BranchOp, RetryNote, TransGlobal};

/// Adds the signature headers of [`tcc::signing`] to `request`, over its method, its target as it
/// goes on the wire (path and query, percent-encoded) and its body; after the branch's own
/// headers, so that those cannot override them.
fn sign_request(secret: &SigningSecret, request: &mut reqwest::Request) {
    let url = request.url();
    let target = match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_owned(),
    };
    let body = request
        .body()
        .and_then(|body| body.as_bytes())
        .unwrap_or_default();
    let (timestamp, signature) = signing::sign(
        secret,
        request.method().as_str(),
        &target,
        body,
        signing::now_unix(),
    );
    let headers = request.headers_mut();
    for (name, value) in [
        (signing::TIMESTAMP_HEADER, timestamp),
        (signing::SIGNATURE_HEADER, signature),
    ] {
        headers.insert(
            name,
            reqwest::header::HeaderValue::from_str(&value)
                .expect("hex and digits are valid header values"),
        );
    }
}

/// How one second-phase pass ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PassEnd {
    /// This pass moved the transaction to its final status (`succeed` or `failed`).
    Finished(GlobalStatus),
    /// A branch op did not succeed: the pass recorded it and scheduled the next attempt.
    RetryScheduled {
        /// The branch whose op did not succeed.
        branch_id: String,
        /// `confirm` or `cancel`.
        op: Op,
        /// How it answered (ONGOING, FAILURE, or a transient error).
        outcome: BranchOutcome,
        /// When the next attempt is due, from now (backoff with jitter, or `retry_interval`
        /// after ONGOING).
        retry_in: Duration,
    },
    /// The pass left the transaction to others: the lease was lost, or its status changed
    /// meanwhile (submitted by its AP, finished), or the final compare-and-set lost.
    Yielded,
}

/// Runs second phases. Cheap to clone: one HTTP client (keep-alive) and one pool, shared.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    pool: DbPool,
    metrics: Metrics,
    http: reqwest::Client,
    coordinator_id: String,
    lease_secs: i64,
    retry_max_interval: u32,
    alert_after_attempts: u32,
    worker_batch: u32,
    /// One permit per pass the worker may have in flight (`MAX_PASSES_IN_FLIGHT`).
    pass_slots: Arc<tokio::sync::Semaphore>,
    max_passes_in_flight: u32,
    /// Signs each Confirm/Cancel call when set (`BRANCH_SIGNING_SECRET`).
    signing_secret: Option<SigningSecret>,
}

impl Engine {
    /// An engine for `pool`, identified as `coordinator_id` in lease tokens.
    pub fn new(pool: DbPool, settings: &Settings, coordinator_id: String) -> Engine {
        // Never follow a redirect: the allowlist vetted the registered URL, not where a 3xx
        // points, and a redirected Confirm has not run (DTM reads only 200 as success).
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(3))
            .pool_max_idle_per_host(64)
            .pool_idle_timeout(tcc::client::POOL_IDLE_TIMEOUT)
            .build()
            .expect("the HTTP client's TLS backend initialises");
        Engine {
            inner: Arc::new(Inner {
                pool,
                metrics: Metrics::new(),
                http,
                coordinator_id,
                lease_secs: settings.lease.as_secs().max(1) as i64,
                retry_max_interval: settings.retry_max_interval.max(1),
                alert_after_attempts: settings.alert_after_attempts.max(1),
                worker_batch: settings.worker_batch.max(1),
                pass_slots: Arc::new(tokio::sync::Semaphore::new(
                    settings.max_passes_in_flight.max(1) as usize,
                )),
                max_passes_in_flight: settings.max_passes_in_flight.max(1),
                signing_secret: settings.branch_signing_secret.clone(),
            }),
        }
    }

    /// This replica's id, the prefix of its lease tokens.
    pub fn coordinator_id(&self) -> &str {
        &self.inner.coordinator_id
    }

    /// The database pool.
    pub fn pool(&self) -> &DbPool {
        &self.inner.pool
    }

    /// The second phase's counters.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Seconds a claim of the second phase lasts at least (`LEASE_SECONDS`; at least the
    /// transaction's `request_timeout` + 5 s: [`store::lease_duration`]).
    pub fn lease_secs(&self) -> i64 {
        self.inner.lease_secs
    }

    /// Runs one pass of `gid`'s second phase now, if nobody else holds its lease.
    /// Returns `false` when it was not claimed (leased elsewhere, or not in a second phase).
    pub async fn drive(&self, gid: &str) -> Result<bool, CoordinatorError> {
        let owner = self.new_token();
        let (g, o, lease) = (gid.to_owned(), owner.clone(), self.inner.lease_secs);
        let claimed = blocking(&self.inner.pool, move |conn| {
            store::claim_and_start(conn, &g, &o, lease)
        })
        .await??;
        match claimed {
            Some((trans, pass)) => {
                self.run(trans, owner, Some(pass)).await?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Claims due transactions (retries, timed-out `prepared` ones, work of dead replicas), as
    /// many as there are free pass slots and at most `WORKER_BATCH`, and starts one pass of each
    /// in a task of its own, which holds its slot until the pass ends. Returns at once with how
    /// many were claimed: the passes go on while the worker claims again, so one slow branch
    /// (an RM holding a Confirm open for the whole `request_timeout`) delays only its own
    /// transaction.
    pub async fn run_due(&self) -> Result<usize, CoordinatorError> {
        let free = self.inner.pass_slots.available_permits();
        let limit = free.min(self.inner.worker_batch as usize);
        if limit == 0 {
            return Ok(0);
        }
        let token = self.new_token();
        let lease = self.inner.lease_secs;
        let claimed = blocking(&self.inner.pool, move |conn| {
            store::claim_due(conn, &token, lease, limit as i64)
        })
        .await??;
        let count = claimed.len();
        for trans in claimed {
            let slot = Arc::clone(&self.inner.pass_slots)
                .acquire_owned()
                .await
                .expect("the pass slots are never closed");
            let owner = trans.owner.clone().expect("claim_due sets the owner");
            let engine = self.clone();
            tokio::spawn(async move {
                let gid = trans.gid.clone();
                if let Err(e) = engine.run(trans, owner, None).await {
                    log::error!("gid={gid} branch_id=- op=- second-phase pass failed: {e}");
                }
                drop(slot);
            });
        }
        Ok(count)
    }

    /// Waits until every pass [`Engine::run_due`] started has ended (at shutdown: each ends
    /// within its transaction's `request_timeout` per call).
    pub async fn passes_ended(&self) {
        let all = self.inner.max_passes_in_flight;
        let _ = self.inner.pass_slots.acquire_many(all).await;
    }

    /// Runs the pass `submit`/`abort` claimed and started in their own commit
    /// ([`store::begin_second_phase`]; `owner` is the token they claimed with, from
    /// [`Engine::new_token`]), and tells how it ended: `wait_result` answers from it without
    /// reading the status back.
    pub async fn run_claimed(
        &self,
        trans: TransGlobal,
        owner: String,
        pass: store::Pass,
    ) -> Result<PassEnd, CoordinatorError> {
        self.run(trans, owner, Some(pass)).await
    }

    /// A fresh lease token of this replica: `<coordinator id>:<32 hex digits>` (the shape
    /// [`store::release_own_leases`] recognises after a restart).
    pub fn new_token(&self) -> String {
        format!(
            "{}:{}",
            self.inner.coordinator_id,
            uuid::Uuid::new_v4().simple()
        )
    }

    async fn db<T, F>(&self, f: F) -> Result<T, CoordinatorError>
    where
        F: FnOnce(&mut diesel::PgConnection) -> diesel::QueryResult<T> + Send + 'static,
        T: Send + 'static,
    {
        Ok(blocking(&self.inner.pool, f).await??)
    }

    /// One pass over a claimed transaction (see the module docs). `pass` is its start when the
    /// claim already read it ([`store::claim_and_start`], [`store::begin_second_phase`]);
    /// otherwise it is read here.
    ///
    /// A pass whose calls all succeed costs two commits whatever the number of branches: its
    /// start (the pending ops, the lease and the first call's `branch_calling` event; for
    /// `submit`/`abort` the same commit as the transition) and the record of every call with the
    /// final status. A failed call costs the record and the retry's schedule.
    async fn run(
        &self,
        trans: TransGlobal,
        owner: String,
        pass: Option<store::Pass>,
    ) -> Result<PassEnd, CoordinatorError> {
        let Some(trans) = self.time_out_if_prepared(trans, &owner).await? else {
            return Ok(PassEnd::Yielded);
        };
        let status = trans.global_status();
        let (Some(op), Some(end)) = (store::phase_op(status), store::phase_end(status)) else {
            // Submitted meanwhile by its AP, or finished: release what was claimed.
            self.release(&trans, &owner).await?;
            return Ok(PassEnd::Yielded);
        };
        let pass = match pass {
            Some(pass) => pass,
            None => match self.start(&trans, &owner, op).await? {
                Some(pass) => pass,
                None => return Ok(PassEnd::Yielded),
            },
        };
        let mut run = PassInProgress::new(trans, owner, op, &pass, self.inner.lease_secs);
        for branch in &pass.ops {
            if !self.keep_lease_for(&mut run, branch).await? {
                return Ok(PassEnd::Yielded);
            }
            let outcome = self.call_and_note(&mut run, branch).await;
            if outcome != BranchOutcome::Success {
                return self.retry_later(run, branch, outcome).await;
            }
        }
        self.finish_pass(run, status, end).await
    }

    /// Step 1 of a pass: a `prepared` transaction claimed by the worker has passed
    /// `timeout_to_fail`, so it moves to `aborting`. Returns the transaction to go on with, or
    /// `None` when the lease was lost meanwhile.
    async fn time_out_if_prepared(
        &self,
        trans: TransGlobal,
        owner: &str,
    ) -> Result<Option<TransGlobal>, CoordinatorError> {
        if trans.global_status() != GlobalStatus::Prepared {
            return Ok(Some(trans));
        }
        let (t, o) = (trans.clone(), owner.to_owned());
        if self
            .db(move |conn| store::abort_timed_out(conn, &t, &o))
            .await?
        {
            log::warn!(
                "gid={} branch_id=- op=cancel prepared for more than {} s: aborting (Timeout after {} seconds)",
                trans.gid,
                trans.timeout_to_fail,
                trans.timeout_to_fail
            );
        }
        let g = trans.gid.clone();
        let trans = self.db(move |conn| store::reload(conn, &g)).await?;
        Ok((trans.owner.as_deref() == Some(owner)).then_some(trans))
    }

    /// The start of a pass the claim did not start ([`store::start_pass`]): its pending ops, the
    /// lease renewed for the first call. `None` when the lease was lost meanwhile.
    async fn start(
        &self,
        trans: &TransGlobal,
        owner: &str,
        op: Op,
    ) -> Result<Option<store::Pass>, CoordinatorError> {
        let (t, o, lease) = (trans.clone(), owner.to_owned(), self.inner.lease_secs);
        let started = self
            .db(move |conn| store::start_pass(conn, &t, &o, lease))
            .await?;
        if started.is_none() {
            log::warn!(
                "gid={} branch_id=- op={op} lease lost before the first call; another replica continues",
                trans.gid
            );
        }
        Ok(started)
    }

    /// Gives back a claimed transaction that has no second phase to run, due when it was due.
    async fn release(&self, trans: &TransGlobal, owner: &str) -> Result<(), CoordinatorError> {
        let (g, o, when, step) = (
            trans.gid.clone(),
            owner.to_owned(),
            trans.next_cron_time,
            trans.next_cron_interval,
        );
        self.db(move |conn| store::reschedule(conn, &g, &o, when, step))
            .await?;
        Ok(())
    }

    /// Before a call to `branch`: when the lease might not outlast it, records the calls so far
    /// and renews the lease for it (one commit). `false` when the lease was lost: the pass stops,
    /// another worker goes on.
    async fn keep_lease_for(
        &self,
        run: &mut PassInProgress,
        branch: &BranchOp,
    ) -> Result<bool, CoordinatorError> {
        if !run.needs_renewal() {
            return Ok(true);
        }
        let renewing = Instant::now();
        let (_, continued) = self
            .record(run, AfterCalls::Call(Box::new(branch.clone())))
            .await?;
        if continued != store::Continued::Leased {
            log::warn!(
                "gid={} branch_id={} op={} lease lost before the call; another replica continues",
                run.trans.gid,
                branch.branch_id,
                run.op
            );
            return Ok(false);
        }
        run.leased_at = renewing;
        run.announced = true;
        Ok(true)
    }

    /// Step 2 of a pass: calls `branch`, counts the call and keeps it for the pass's record.
    async fn call_and_note(&self, run: &mut PassInProgress, branch: &BranchOp) -> BranchOutcome {
        let sent_at = Instant::now();
        let call = self
            .call_branch(&run.trans, branch, run.op, &run.headers)
            .await;
        let outcome = call.outcome;
        self.inner
            .metrics
            .branch_calls
            .with_label_values(&[run.op.as_str(), outcome.kind()])
            .inc();
        // What the event log's `tcc_http_status` admits. An odd status (600-999) stays in the
        // detail ("HTTP 600: ...") instead of failing the pass's record on every retry.
        let http_status = call.http_status.filter(|s| (100..=599).contains(s));
        run.calls.push(BranchCall {
            op_id: branch.id,
            branch_id: branch.branch_id.clone(),
            op: run.op,
            target: branch.target.clone(),
            url: branch.url.clone(),
            succeeded: outcome == BranchOutcome::Success,
            result: describe(&outcome),
            outcome: outcome.kind(),
            http_status,
            latency_ms: call.latency.as_millis() as u64,
            detail: event_detail(&outcome, http_status),
            unannounced_since: (!run.announced).then_some(sent_at),
            answered_at: sent_at + call.latency,
        });
        run.announced = false;
        outcome
    }

    /// Step 3 after a call that did not succeed: records the pass's calls, then schedules the
    /// next attempt (backoff with jitter, or `retry_interval` after ONGOING) and releases the
    /// lease, alerting once the op has failed `alert_after_attempts` times.
    async fn retry_later(
        &self,
        mut run: PassInProgress,
        branch: &BranchOp,
        outcome: BranchOutcome,
    ) -> Result<PassEnd, CoordinatorError> {
        let (gid, op) = (run.trans.gid.clone(), run.op);
        let (attempts, continued) = self.record(&mut run, AfterCalls::Nothing).await?;
        if continued == store::Continued::LeaseLost {
            log::warn!(
                "gid={gid} branch_id={} op={op} lease lost during the call; another replica continues",
                branch.branch_id
            );
            return Ok(PassEnd::Yielded);
        }
        let attempts = attempts.last().copied().unwrap_or(0);
        let (next_in, next_step) =
            next_attempt(&run.trans, &outcome, self.inner.retry_max_interval);
        let metrics = &self.inner.metrics;
        metrics.retries.with_label_values(&[op.as_str()]).inc();
        let alert =
            attempts as u32 >= self.inner.alert_after_attempts && outcome != BranchOutcome::Ongoing;
        let result = describe(&outcome);
        let branch_id = &branch.branch_id;
        let retry_in = next_in.as_secs_f64();
        if alert {
            metrics.alerts.with_label_values(&[op.as_str()]).inc();
            log::error!("ALERT gid={gid} branch_id={branch_id} op={op} has failed {attempts} attempts, last: {result}; retrying in {retry_in:.1} s");
        } else {
            log::warn!("gid={gid} branch_id={branch_id} op={op} attempt {attempts}: {result}; retrying in {retry_in:.1} s");
        }
        let detail = match (&outcome, alert) {
            (BranchOutcome::Ongoing, _) => format!(
                "ongoing: polled again after retry_interval ({} s)",
                run.trans.retry_interval
            ),
            (_, true) => {
                format!("ALERT: {attempts} failed attempts, backoff step now {next_step} s")
            }
            (_, false) => format!("backoff step now {next_step} s"),
        };
        let note = RetryNote {
            branch_id: branch.branch_id.clone(),
            op,
            target: branch.target.clone(),
            retry_in_ms: next_in.as_millis() as u64,
            detail,
        };
        let when = Utc::now() + chrono::Duration::from_std(next_in).unwrap_or_default();
        let (g, o) = (gid, run.owner);
        self.db(move |conn| store::schedule_retry(conn, &g, &o, when, next_step, &note))
            .await?;
        Ok(PassEnd::RetryScheduled {
            branch_id: branch.branch_id.clone(),
            op,
            outcome,
            retry_in: next_in,
        })
    }

    /// Step 3 after every op succeeded (or none was pending): the calls and the final status
    /// `from -> end`, one commit; counts and logs the transaction when this pass finished it.
    async fn finish_pass(
        &self,
        mut run: PassInProgress,
        from: GlobalStatus,
        end: GlobalStatus,
    ) -> Result<PassEnd, CoordinatorError> {
        let finish = AfterCalls::Finish { from, to: end };
        let (_, store::Continued::Finished(finished)) = self.record(&mut run, finish).await? else {
            return Ok(PassEnd::Yielded);
        };
        self.inner
            .metrics
            .observe_finished(&finished.trans_type, end, finished.second_phase_secs);
        log::info!("gid={} branch_id=- op=- {from} -> {end}", run.trans.gid);
        Ok(PassEnd::Finished(end))
    }

    /// Records the calls `run` has not recorded yet and then does `after`
    /// ([`store::record_calls`], one commit). Logs each recorded success with its attempt
    /// number; answers each op's attempts in call order, and what followed.
    async fn record(
        &self,
        run: &mut PassInProgress,
        after: AfterCalls,
    ) -> Result<(Vec<i32>, store::Continued), CoordinatorError> {
        let calls = std::mem::take(&mut run.calls);
        let (g, o, lease) = (
            run.trans.gid.clone(),
            run.owner.clone(),
            self.inner.lease_secs,
        );
        let (attempts, continued, calls) = self
            .db(move |conn| {
                let (attempts, continued) =
                    store::record_calls(conn, &g, &calls, &o, lease, &after)?;
                Ok((attempts, continued, calls))
            })
            .await?;
        for (call, attempts) in calls.iter().zip(&attempts) {
            if call.succeeded {
                log::info!(
                    "gid={} branch_id={} op={} succeeded (attempt {attempts})",
                    run.trans.gid,
                    call.branch_id,
                    run.op
                );
            }
        }
        Ok((attempts, continued))
    }

    /// Calls one branch op as DTM does (docs/PROTOCOL.md, "Branch calls") and reads its answer, timing the call.
    async fn call_branch(
        &self,
        trans: &TransGlobal,
        branch: &BranchOp,
        op: Op,
        headers: &BTreeMap<String, String>,
    ) -> Call {
        let mut request = self
            .inner
            .http
            .post(&branch.url)
            .query(&[
                ("gid", trans.gid.as_str()),
                ("trans_type", "tcc"),
                ("branch_id", branch.branch_id.as_str()),
                ("op", op.as_str()),
            ])
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .timeout(Duration::from_secs(trans.request_timeout.max(1) as u64))
            .body(branch.data.clone());
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let request = request.build().map(|mut request| {
            if let Some(secret) = &self.inner.signing_secret {
                sign_request(secret, &mut request);
            }
            request
        });
        log::debug!(
            "gid={} branch_id={} op={op} POST {}",
            trans.gid,
            branch.branch_id,
            branch.url
        );
        let started = Instant::now();
        let sent = match request {
            Ok(request) => self.inner.http.execute(request).await,
            Err(e) => Err(e),
        };
        let (outcome, http_status) = match sent {
            Ok(response) if response.status().is_redirection() => {
                let status = response.status().as_u16();
                (
                    BranchOutcome::Error(redirect_refused(&response)),
                    Some(status),
                )
            }
            Ok(response) => {
                let status = response.status().as_u16();
                match response.text().await {
                    Ok(body) => (BranchOutcome::from_http(status, &body), Some(status)),
                    Err(e) => (
                        BranchOutcome::Error(format!("reading the answer failed: {e}")),
                        Some(status),
                    ),
                }
            }
            Err(e) if e.is_timeout() => (
                BranchOutcome::Error(format!("timed out after {} s", trans.request_timeout)),
                None,
            ),
            Err(e) if e.is_connect() => (
                BranchOutcome::Error("connection refused or unreachable".into()),
                None,
            ),
            Err(e) => (BranchOutcome::Error(e.to_string()), None),
        };
        Call {
            outcome,
            http_status,
            latency: started.elapsed(),
        }
    }
}

/// The error of a branch call answered with a redirect, which is never followed:
/// `HTTP 307: redirect to <Location> not followed` (the location cut to 200 characters).
fn redirect_refused(response: &reqwest::Response) -> String {
    let location = response
        .headers()
        .get(reqwest::header::LOCATION)
        .map(|l| {
            String::from_utf8_lossy(l.as_bytes())
                .chars()
                .take(200)
                .collect()
        })
        .unwrap_or_else(|| "(no Location)".to_owned());
    format!(
        "HTTP {}: redirect to {location} not followed",
        response.status().as_u16()
    )
}

/// A pass in progress over one transaction: what it calls, the calls made and not recorded yet,
/// and the lease's clock.
struct PassInProgress {
    trans: TransGlobal,
    owner: String,
    /// Confirm while `submitted`, Cancel while `aborting`.
    op: Op,
    /// The transaction's `branch_headers`, sent with every call.
    headers: BTreeMap<String, String>,
    /// How long a lease taken for a call lasts ([`store::lease_duration`]).
    lease_len: Duration,
    /// A call may take `request_timeout`, and recording it a little more.
    call_budget: Duration,
    /// No later than when the lease was last set or renewed.
    leased_at: Instant,
    /// Calls made and not recorded yet: all of them are recorded in one commit at the end of the
    /// pass (with the final status), at a failure (before its retry is scheduled), or before a
    /// lease renewal.
    calls: Vec<BranchCall>,
    /// Whether the next call's `branch_calling` event is already written (with the claim or the
    /// last lease renewal).
    announced: bool,
}

impl PassInProgress {
    fn new(trans: TransGlobal, owner: String, op: Op, pass: &store::Pass, lease_secs: i64) -> Self {
        PassInProgress {
            headers: serde_json::from_str(&trans.branch_headers).unwrap_or_default(),
            lease_len: store::lease_duration(lease_secs, trans.request_timeout),
            call_budget: Duration::from_secs(trans.request_timeout.max(1) as u64 + 5),
            leased_at: pass.leased_at,
            calls: Vec::with_capacity(pass.ops.len()),
            announced: true,
            trans,
            owner,
            op,
        }
    }

    /// Whether the next call needs the lease renewed first: the claim or renewal made the lease
    /// outlast the first call after it; a later one might outlive it.
    fn needs_renewal(&self) -> bool {
        !self.announced && self.leased_at.elapsed() + self.call_budget > self.lease_len
    }
}

/// When the next attempt after a call answered `outcome` is due, and the backoff step after it
/// (seconds): ONGOING is polled every `retry_interval` and the step does not grow; anything else
/// waits the current step plus jitter, and the step doubles up to `max_interval`.
fn next_attempt(
    trans: &TransGlobal,
    outcome: &BranchOutcome,
    max_interval: u32,
) -> (Duration, i32) {
    match outcome {
        BranchOutcome::Ongoing => (
            Duration::from_secs(trans.retry_interval as u64),
            trans.next_cron_interval,
        ),
        _ => {
            let step = trans.next_cron_interval.max(1) as u32;
            (
                with_jitter(step.min(max_interval)),
                step.saturating_mul(2).min(max_interval) as i32,
            )
        }
    }
}

/// One branch call as [`Engine::call_branch`] saw it.
struct Call {
    outcome: BranchOutcome,
    /// `None` when no answer was read (timeout, refused connection).
    http_status: Option<u16>,
    latency: Duration,
}

/// The `detail` of a `branch_called` event: the branch's message or the error, without the
/// `HTTP <status>: ` prefix that the event's own `http_status` already says; `None` for a success
/// or an ONGOING.
fn event_detail(outcome: &BranchOutcome, http_status: Option<u16>) -> Option<String> {
    match outcome {
        BranchOutcome::Success | BranchOutcome::Ongoing => None,
        BranchOutcome::Failure(m) | BranchOutcome::Error(m) => {
            let prefix = http_status.map(|s| format!("HTTP {s}: "));
            let m = match prefix {
                Some(p) => m.strip_prefix(p.as_str()).unwrap_or(m),
                None => m,
            };
            (!m.is_empty()).then(|| m.to_owned())
        }
    }
}

/// `success`, `ongoing`, `failure: <message>` or `error: <detail>`, as stored in `last_result`
/// (and quoted by a waited submit's `not_finished` answer).
pub fn describe(outcome: &BranchOutcome) -> String {
    match outcome {
        BranchOutcome::Success | BranchOutcome::Ongoing => outcome.kind().to_owned(),
        BranchOutcome::Failure(m) | BranchOutcome::Error(m) => format!("{}: {m}", outcome.kind()),
    }
}

/// `step` seconds plus up to 20% random jitter, so that transactions failing together (an RM
/// restarting) do not retry in lockstep.
fn with_jitter(step: u32) -> Duration {
    let base = Duration::from_secs(step.into());
    let jitter_ms = rand::rng().random_range(0..=(base.as_millis() as u64 / 5));
    base + Duration::from_millis(jitter_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_a_fifth_of_the_step() {
        let samples: Vec<Duration> = (0..200).map(|_| with_jitter(10)).collect();
        for d in &samples {
            assert!(
                *d >= Duration::from_secs(10) && *d <= Duration::from_secs(12),
                "{d:?}"
            );
        }
        // There is jitter at all: 200 draws from 2001 possible milliseconds are never all the
        // same (the chance is 2001^-199), and some land above the bare step.
        let distinct: std::collections::BTreeSet<_> = samples.iter().collect();
        assert!(distinct.len() > 1, "every delay was {:?}", samples[0]);
        assert!(
            samples.iter().any(|d| *d > Duration::from_secs(10)),
            "no delay above the step: {samples:?}"
        );
    }

    #[test]
    fn event_details_drop_the_http_status_the_event_already_has() {
        assert_eq!(
            event_detail(&BranchOutcome::Error("HTTP 500: boom".into()), Some(500)),
            Some("boom".into())
        );
        assert_eq!(
            event_detail(&BranchOutcome::Error("timed out after 3 s".into()), None),
            Some("timed out after 3 s".into())
        );
        assert_eq!(event_detail(&BranchOutcome::Success, Some(200)), None);
        assert_eq!(
            event_detail(&BranchOutcome::Failure(String::new()), Some(409)),
            None
        );
    }

    #[test]
    fn stored_results_name_the_outcome_kind() {
        assert_eq!(describe(&BranchOutcome::Success), "success");
        assert_eq!(
            describe(&BranchOutcome::Error("HTTP 500".into())),
            "error: HTTP 500"
        );
    }
}
