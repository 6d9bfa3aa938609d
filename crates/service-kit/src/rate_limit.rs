//! Per-client-address rate limiting, with the `governor` crate (GCRA, one state per client
//! address): the AP's public fire endpoints (`/api/fireTcc`, `/api/fireTccRollback`,
//! `/api/firePurchase`, `/api/fireTccNested`) use it against floods.
//!
//! A fire request starts a global transaction whose Trys freeze funds and reserve stock until
//! its Confirm or Cancel, so the limit sits where untrusted callers arrive: the AP. It is not on
//! the RMs' Try endpoints: every Try of the system comes from the AP's one address, so a limit
//! keyed by address there would cap the whole system's throughput at one address's quota,
//! refusing the AP under ordinary load. What protects the RMs is the Try gate ([`crate::callers`]: a Try
//! must belong to a global transaction the coordinator knows), and the coordinator's
//! `TIMEOUT_TO_FAIL`, which cancels abandoned global transactions and releases what their Trys
//! reserved.
//!
//! * **Keyed by the TCP peer address**, never by `X-Forwarded-For` (which any client can write).
//!   IPv4-mapped IPv6 addresses count as their IPv4 address, and an IPv6 client counts by its
//!   /64 (one host usually owns a whole /64, so keying by /128 would let it pick fresh keys at
//!   will). Behind a proxy every client shares the proxy's address: raise the quota there.
//! * **The quota** ([`RateLimit`]): requests per second sustained, with bursts up to a size; 0
//!   in either disables the limit. The AP's settings and defaults are its own
//!   (`FIRE_RATE_LIMIT_PER_SECOND`, `FIRE_RATE_LIMIT_BURST`).
//! * **Over the limit**: `429 {"error": "rate_limited", "message": ...}` with a `Retry-After`
//!   header (whole seconds, at least 1), before the request is read, so nothing is started.
//!
//! The limiter is one per application instance, shared by all its workers: [`ClientLimiter`],
//! in the app data as `web::Data<ClientLimiter>`, applied to routes by the [`limit_by_client`]
//! middleware (`web::resource(..).wrap(actix_web::middleware::from_fn(limit_by_client))`).

use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderValue, RETRY_AFTER};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::web;
use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::http::error_response;

/// A quota of requests per client address (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests per second sustained; 0 disables the limit.
    pub per_second: u32,
    /// Most requests accepted at once after a quiet period; 0 disables the limit.
    pub burst: u32,
}

impl RateLimit {
    /// No limit.
    pub const OFF: RateLimit = RateLimit {
        per_second: 0,
        burst: 0,
    };

    /// Whether requests are limited at all (neither number is 0).
    pub fn is_enabled(self) -> bool {
        self.per_second > 0 && self.burst > 0
    }

    fn quota(self) -> Option<Quota> {
        let per_second = NonZeroU32::new(self.per_second)?;
        let burst = NonZeroU32::new(self.burst)?;
        Some(Quota::per_second(per_second).allow_burst(burst))
    }
}

impl std::fmt::Display for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_enabled() {
            write!(
                f,
                "{} requests/s per client address, bursts of {}",
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
pub struct ClientLimiter {
    limiter: Option<DefaultKeyedRateLimiter<IpAddr>>,
    checks: AtomicU64,
}

impl std::fmt::Debug for ClientLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientLimiter")
            .field("enabled", &self.limiter.is_some())
            .finish_non_exhaustive()
    }
}

impl ClientLimiter {
    /// A limiter enforcing `limit` (none when it is disabled).
    pub fn new(limit: RateLimit) -> ClientLimiter {
        ClientLimiter {
            limiter: limit.quota().map(DefaultKeyedRateLimiter::keyed),
            checks: AtomicU64::new(0),
        }
    }

    /// Takes one request from `client`'s quota: `Err` with how long until one is allowed again
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

/// The middleware of the limited routes: takes one request from the client address's quota in
/// the `web::Data<ClientLimiter>` of the app data, and answers
/// `429 {"error": "rate_limited", "message": ...}` with `Retry-After` when it is used up, before
/// the route reads anything. Without a `ClientLimiter` in the app data, nothing is limited.
pub async fn limit_by_client(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let client = req
        .peer_addr()
        .map_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED), |addr| addr.ip());
    let limited = req
        .app_data::<web::Data<ClientLimiter>>()
        .and_then(|limiter| limiter.check(client).err());
    let Some(wait) = limited else {
        return Ok(next.call(req).await?.map_into_boxed_body());
    };
    let seconds = retry_after_seconds(wait);
    // Debug, not warn: a flood would flood the log too.
    log::debug!(
        "{} {} rate limited, retry after {seconds} s; client {client}",
        req.method(),
        req.path()
    );
    let mut response = error_response(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!("too many requests from this address; retry after {seconds} s"),
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
        let limiter = ClientLimiter::new(RateLimit {
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
            RateLimit::OFF,
            RateLimit {
                per_second: 0,
                burst: 5,
            },
        ] {
            let off = ClientLimiter::new(limit);
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
