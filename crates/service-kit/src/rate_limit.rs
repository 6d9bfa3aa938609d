//! Per-client-address rate limiting of the RMs' Try endpoints (issue 5, "reservation
//! exhaustion"), with the `governor` crate (GCRA, one state per client address).
//!
//! A Try freezes funds or reserves stock until its Confirm or Cancel; a caller flooding Trys
//! without ever finishing its global transactions could hold everything tentative. Two things
//! bound that: the coordinator's `TIMEOUT_TO_FAIL` cancels abandoned global transactions (which
//! releases what their Trys reserved), and this limit bounds how fast one client address can
//! reserve in the first place. `tcc_rm_tentative_oldest_age_seconds` ([`crate::metrics`]) shows
//! reservations that nothing releases.
//!
//! * **Only Try is limited.** Confirm and Cancel come from the coordinator, and must never be
//!   throttled: a throttled Confirm or Cancel is only retried later by the coordinator, so
//!   refusing it would merely keep funds frozen longer, the opposite of what the limit is for.
//! * **Keyed by the TCP peer address**, never by `X-Forwarded-For` (which any client can write).
//!   IPv4-mapped IPv6 addresses count as their IPv4 address, and an IPv6 client counts by its
//!   /64 (one host usually owns a whole /64, so keying by /128 would let it pick fresh keys at
//!   will). Behind a proxy every client shares the proxy's address.
//! * **The quota** ([`TryRateLimit`]): `TRY_RATE_LIMIT_PER_SECOND` Trys per second sustained,
//!   with bursts of up to `TRY_RATE_LIMIT_BURST`; 0 in either disables the limit. The defaults,
//!   200 per second and bursts of 400, are far above what the sample's own callers reach on one
//!   address: the AP (the one legitimate caller of Try, so the whole system's Trys to an RM come
//!   from its address) manages about 40 global transactions per second in the chaos run
//!   (`scripts/chaos.sh`, 16 concurrent callers, all from 127.0.0.1), and the test suites and
//!   the dtmcli check far fewer. Raise them for a faster deployment; the AP's throughput is
//!   capped at `TRY_RATE_LIMIT_PER_SECOND` global transactions per second per RM.
//! * **Over the limit**: `429 {"error": "rate_limited", "message": ...}` with a `Retry-After`
//!   header (whole seconds, at least 1), before the query and the body are even read, so nothing
//!   is reserved and no barrier row is written; counted as
//!   `tcc_rm_branch_requests_total{op="try", outcome="rate_limited"}`. To the AP a 429 is neither
//!   SUCCESS, FAILURE nor ONGOING but a transient error
//!   ([`tcc::protocol::BranchOutcome::from_http`]), so it aborts the global transaction: the
//!   coordinator cancels the branches already tried, and the caller may try again later.
//!
//! The limiter is one per application instance, shared by all its workers: [`TryLimiter`], in
//! the app data as `web::Data<TryLimiter>` ([`crate::startup::run`] registers it), and applied
//! to the Try route by [`limit_try`] ([`crate::branch::configure`] wraps the route with it).

use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{HttpServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderValue, RETRY_AFTER};
use actix_web::http::StatusCode;
use actix_web::middleware::{from_fn, Next};
use actix_web::{guard, web, Route};
use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota};
use tcc::protocol::Op;

use crate::branch::raw_query_value;
use crate::http::error_response;
use crate::metrics::{RequestOutcome, RmMetrics};

/// The quota of Try requests per client address (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TryRateLimit {
    /// Sustained Trys per second. Env `TRY_RATE_LIMIT_PER_SECOND`, default 200; 0 disables.
    pub per_second: u32,
    /// Most Trys accepted at once after a quiet period. Env `TRY_RATE_LIMIT_BURST`, default
    /// 400; 0 disables.
    pub burst: u32,
}

impl TryRateLimit {
    /// 200 per second, bursts of 400: five times what the chaos run reaches (module docs).
    pub const DEFAULT: TryRateLimit = TryRateLimit {
        per_second: 200,
        burst: 400,
    };

    /// No limit.
    pub const OFF: TryRateLimit = TryRateLimit {
        per_second: 0,
        burst: 0,
    };

    /// Whether Trys are limited at all (neither number is 0).
    pub fn is_enabled(self) -> bool {
        self.per_second > 0 && self.burst > 0
    }

    fn quota(self) -> Option<Quota> {
        let per_second = NonZeroU32::new(self.per_second)?;
        let burst = NonZeroU32::new(self.burst)?;
        Some(Quota::per_second(per_second).allow_burst(burst))
    }
}

impl Default for TryRateLimit {
    fn default() -> Self {
        TryRateLimit::DEFAULT
    }
}

impl std::fmt::Display for TryRateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_enabled() {
            write!(
                f,
                "{} Try/s per client address, bursts of {}",
                self.per_second, self.burst
            )
        } else {
            f.write_str("off")
        }
    }
}

/// Checks made between two sweeps of the addresses whose state is back to full (bounds the
/// memory a stream of distinct addresses can take).
const SWEEP_EVERY: u64 = 4096;

/// The limiter of one application instance: one GCRA state per client address.
pub struct TryLimiter {
    limiter: Option<DefaultKeyedRateLimiter<IpAddr>>,
    checks: AtomicU64,
}

impl std::fmt::Debug for TryLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TryLimiter")
            .field("enabled", &self.limiter.is_some())
            .finish_non_exhaustive()
    }
}

impl TryLimiter {
    /// A limiter enforcing `limit` (none when it is disabled).
    pub fn new(limit: TryRateLimit) -> TryLimiter {
        TryLimiter {
            limiter: limit.quota().map(DefaultKeyedRateLimiter::keyed),
            checks: AtomicU64::new(0),
        }
    }

    /// Takes one Try from `client`'s quota: `Err` with how long until one is allowed again
    /// when it is used up.
    pub fn check(&self, client: IpAddr) -> Result<(), Duration> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        limiter
            .check_key(&client_key(client))
            .map_err(|not_until| not_until.wait_time_from(limiter.clock().now()))
    }
}

/// The key of `ip`: IPv4 as is (also when IPv4-mapped), IPv6 by its /64.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
        v4 => v4,
    }
}

/// `Retry-After` for a wait of `wait`: whole seconds, rounded up, at least 1.
fn retry_after_seconds(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

/// The Try route `route` at `path`, wrapped in [`limit_try`]. POST only, like
/// `ServiceConfig::route` with a `web::post()` route: other methods fall through to the app's
/// default service (the JSON 404).
pub fn limited_try(path: &str, route: Route) -> impl HttpServiceFactory {
    web::resource(path)
        .guard(guard::Post())
        .wrap(from_fn(limit_try))
        .route(route)
}

/// The middleware of the Try routes: takes one Try from the client address's quota in the
/// `web::Data<TryLimiter>` of the app data, and answers 429 with `Retry-After` (counted in the
/// `web::Data<RmMetrics>`, when registered) when it is used up. Without a `TryLimiter` in the
/// app data, nothing is limited.
pub async fn limit_try(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let client = req
        .peer_addr()
        .map_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED), |addr| addr.ip());
    let limited = req
        .app_data::<web::Data<TryLimiter>>()
        .and_then(|limiter| limiter.check(client).err());
    let Some(wait) = limited else {
        return Ok(next.call(req).await?.map_into_boxed_body());
    };
    let seconds = retry_after_seconds(wait);
    if let Some(metrics) = req.app_data::<web::Data<RmMetrics>>() {
        metrics.record(Op::Try, RequestOutcome::RateLimited);
    }
    // Debug, not warn: a flood would flood the log too; the metric is the signal. The query is
    // not parsed yet: gid and branch_id are its raw values (still percent-encoded, capped).
    let raw = |name| raw_query_value(req.query_string(), name).unwrap_or("-");
    log::debug!(
        "gid={} branch_id={} op=try {} rate limited, retry after {seconds} s; client {client}",
        raw("gid"),
        raw("branch_id"),
        req.path()
    );
    let mut response = error_response(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!("too many Try requests from this address; retry after {seconds} s"),
    );
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(seconds));
    Ok(req.into_response(response))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_allowed_then_refused_with_a_wait_and_zero_disables() {
        let limiter = TryLimiter::new(TryRateLimit {
            per_second: 1,
            burst: 2,
        });
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(limiter.check(a).is_ok());
        assert!(limiter.check(a).is_ok());
        let wait = limiter.check(a).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert!(
            limiter.check(b).is_ok(),
            "another address has its own quota"
        );
        for limit in [
            TryRateLimit::OFF,
            TryRateLimit {
                per_second: 0,
                burst: 5,
            },
        ] {
            let off = TryLimiter::new(limit);
            assert!((0..1000).all(|_| off.check(a).is_ok()), "{limit}");
        }
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64_and_mapped_ipv4_as_ipv4() {
        let key = |s: &str| client_key(s.parse().unwrap());
        assert_eq!(key("2001:db8:1:2:3:4:5:6"), key("2001:db8:1:2::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::ffff:10.0.0.1"), key("10.0.0.1"));
        assert_eq!(key("10.0.0.1"), "10.0.0.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds_at_least_one() {
        assert_eq!(retry_after_seconds(Duration::ZERO), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_seconds(Duration::from_secs(1)), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_seconds(Duration::from_secs(3)), 3);
    }
}
