//! Authenticated branch calls: who may call an RM's Try, Confirm and Cancel.
//!
//! The branch endpoints of an RM freeze, move and release money and stock on the word of whoever
//! calls them, so an RM that can be reached by anyone else than its AP and TM must check who is
//! calling. The TM, every RM and the AP share one secret (`BRANCH_SIGNING_SECRET`), used two
//! ways:
//!
//! * the **request signature**: the TM signs each Confirm/Cancel call with an HMAC-SHA256 of the
//!   request ([`sign`]), and the RM recomputes it ([`verify`]). Only this workspace's coordinator
//!   signs;
//! * the **gid token** ([`gid_token`]): an HMAC of the gid alone, which the AP computes at
//!   `prepare` and puts into the global transaction's `branch_headers` under
//!   [`GID_TOKEN_HEADER`]. The AP sends it with its Try calls, and a DTM-compatible TM forwards
//!   `branch_headers` with every Confirm and Cancel, so it also authorizes the second phase behind
//!   a TM that cannot sign. It authorizes the branch calls of that one gid, and nothing else.
//!
//! # The request signature (version `v1`)
//!
//! Two headers go with each signed request:
//!
//! * [`TIMESTAMP_HEADER`] `X-Tcc-Timestamp: <unix seconds>`, the signer's clock, decimal;
//! * [`SIGNATURE_HEADER`] `X-Tcc-Signature: v1=<hex>`, the lowercase hex HMAC-SHA256, keyed with
//!   the secret's UTF-8 bytes, of this string (five lines joined with `\n`, no trailing newline):
//!
//! ```text
//! <METHOD>\n<path>\n<query>\n<timestamp>\n<hex sha256 of the body>
//! ```
//!
//! where `METHOD` is the upper-case HTTP method (`POST`), `path` and `query` are the request
//! target exactly as sent on the wire (still percent-encoded, split at the first `?`; `query` is
//! empty when there is none), `timestamp` is the header's value and the last line is the
//! lowercase hex SHA-256 of the raw body bytes (the SHA-256 of nothing for an empty body). For
//! the TM's Confirm of branch `01` of gid `g1`:
//!
//! ```text
//! POST
//! /api/TransOutConfirm
//! gid=g1&trans_type=tcc&branch_id=01&op=confirm
//! 1767225600
//! 5d2c...(64 hex digits)
//! ```
//!
//! The RM ([`verify`]) refuses a call whose headers are missing ([`SignatureError::Missing`]),
//! malformed, or whose MAC does not match ([`SignatureError::Bad`]: wrong secret, or a method,
//! path, query, timestamp or body changed on the way), or whose timestamp is more than the
//! allowed clock skew ([`DEFAULT_MAX_SKEW_SECS`], 300 s, either way) from its own clock
//! ([`SignatureError::Stale`]: a captured call cannot be replayed later). The MAC is compared in
//! constant time (`hmac`'s `verify_slice`). Within the skew window a replayed call is possible,
//! and harmless: Confirm and Cancel are idempotent behind the sub-transaction barrier.
//!
//! # The gid token (version `v1`)
//!
//! [`GID_TOKEN_HEADER`] `X-Tcc-Gid-Token: v1=<hex>`, the lowercase hex HMAC-SHA256, keyed with the
//! secret, of `tcc-gid-token\n<gid>` (the prefix keeps a token from ever equalling a request
//! signature). It does not expire and covers no request, only the gid: whoever holds it may send
//! any Try of that gid (any `branch_id`, any body: any amount on any account) and any Confirm or
//! Cancel of it, to every RM sharing the secret. That is as much as a TM needs. The barrier
//! applies each (branch_id, op) once, but bounds nothing else: a holder can add branches the AP
//! never registered and confirm them. So the token must stay off every path an untrusted party
//! can read: the TM forwards `branch_headers` to every host registered as a branch of the gid
//! (register only trusted branch URLs), and DTM prints `branch_headers` in its `query` answers
//! (this workspace's coordinator redacts them).
//!
//! # Who checks what (the RM's side)
//!
//! [`crate::actix::settle_caller`] and [`crate::actix::try_caller`] tell the callers apart in an
//! RM's middleware; the sample's policy (`service_kit::callers`) is:
//!
//! * Confirm and Cancel: accepted with a valid request signature or a valid gid token for the
//!   query's gid ([`verify_gid_token`]); otherwise 401.
//! * Try: accepted with a valid gid token for its gid; a Try without one (a DTM client calls Try
//!   itself, without this workspace's headers) only when the RM's coordinator reports the gid
//!   `prepared` with this branch registered (DTM's order is register-then-Try).
//!
//! With no secret configured the services accept unsigned Confirm and Cancel calls and log a
//! warning at start (demo mode); every Try then goes through the coordinator check.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// The header carrying the signer's clock, unix seconds.
pub const TIMESTAMP_HEADER: &str = "X-Tcc-Timestamp";
/// The header carrying the MAC: `v1=<lowercase hex HMAC-SHA256>`.
pub const SIGNATURE_HEADER: &str = "X-Tcc-Signature";
/// The scheme's version, the prefix of the signature header's value.
pub const VERSION: &str = "v1";
/// How far, in seconds and either way, a timestamp may be from the verifier's clock.
pub const DEFAULT_MAX_SKEW_SECS: u64 = 300;
/// The environment variable the binaries of this workspace read the secret from.
pub const SECRET_ENV: &str = "BRANCH_SIGNING_SECRET";
/// The header carrying the gid token: `v1=<lowercase hex HMAC-SHA256>` ([`gid_token`]).
pub const GID_TOKEN_HEADER: &str = "X-Tcc-Gid-Token";
/// What the gid token's MAC covers before the gid (see the module docs).
const GID_TOKEN_CONTEXT: &str = "tcc-gid-token\n";

type HmacSha256 = Hmac<Sha256>;

/// The shared secret. Its `Debug` prints `SigningSecret(<redacted>)`, so settings that hold it
/// can be logged.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningSecret(String);

impl SigningSecret {
    /// A secret from its text (any non-empty string; use 32 random bytes, hex or base64).
    pub fn new(secret: impl Into<String>) -> SigningSecret {
        SigningSecret(secret.into())
    }

    /// The secret of [`SECRET_ENV`], `None` when unset or empty (demo mode).
    pub fn from_env() -> Option<SigningSecret> {
        std::env::var(SECRET_ENV)
            .ok()
            .filter(|s| !s.is_empty())
            .map(SigningSecret)
    }

    fn mac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(self.0.as_bytes()).expect("HMAC takes a key of any length")
    }
}

impl fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningSecret(<redacted>)")
    }
}

/// Why a call's signature was refused. Each is answered `401` with its [`SignatureError::code`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The timestamp or the signature header is absent: `missing_signature`.
    #[error("this call must be signed by the coordinator (headers {TIMESTAMP_HEADER} and {SIGNATURE_HEADER})")]
    Missing,
    /// A header does not parse, or the MAC does not match (wrong secret, or the request was
    /// changed on the way): `bad_signature`.
    #[error("the call's signature is invalid: {0}")]
    Bad(&'static str),
    /// The timestamp is further than the allowed skew from the verifier's clock:
    /// `stale_signature`.
    #[error("the call's timestamp is {skew_secs} s away from this server's clock (at most {max_skew_secs} s allowed)")]
    Stale {
        /// How far the timestamp is from now, seconds.
        skew_secs: u64,
        /// The allowed skew, seconds.
        max_skew_secs: u64,
    },
}

impl SignatureError {
    /// The `error` code of the 401 body: `missing_signature`, `bad_signature` or
    /// `stale_signature`.
    pub fn code(&self) -> &'static str {
        match self {
            SignatureError::Missing => "missing_signature",
            SignatureError::Bad(_) => "bad_signature",
            SignatureError::Stale { .. } => "stale_signature",
        }
    }
}

/// Now, in unix seconds (0 if the clock is before 1970).
pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The string the MAC covers (see the module docs): method, path, query, timestamp and the
/// body's SHA-256, joined with `\n`.
pub fn string_to_sign(method: &str, path_and_query: &str, timestamp: &str, body: &[u8]) -> String {
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    format!(
        "{}\n{path}\n{query}\n{timestamp}\n{}",
        method.to_ascii_uppercase(),
        hex::encode(Sha256::digest(body))
    )
}

/// Signs a request: `(timestamp, signature)`, the values of [`TIMESTAMP_HEADER`] and
/// [`SIGNATURE_HEADER`]. `path_and_query` is the request target as sent (`/api/x?gid=..`),
/// `now` the unix time in seconds ([`now_unix`]).
pub fn sign(
    secret: &SigningSecret,
    method: &str,
    path_and_query: &str,
    body: &[u8],
    now: u64,
) -> (String, String) {
    let timestamp = now.to_string();
    let mut mac = secret.mac();
    mac.update(string_to_sign(method, path_and_query, &timestamp, body).as_bytes());
    let signature = format!("{VERSION}={}", hex::encode(mac.finalize().into_bytes()));
    (timestamp, signature)
}

/// The raw values of a request's [`TIMESTAMP_HEADER`] and [`SIGNATURE_HEADER`], `None` when absent.
#[derive(Debug, Clone, Copy, Default)]
pub struct SignatureHeaders<'a> {
    /// [`TIMESTAMP_HEADER`]'s value.
    pub timestamp: Option<&'a str>,
    /// [`SIGNATURE_HEADER`]'s value.
    pub signature: Option<&'a str>,
}

/// Checks a request's signature `headers` against the request, at `now` (unix seconds),
/// allowing `max_skew_secs` of clock difference either way ([`DEFAULT_MAX_SKEW_SECS`]).
///
/// The order of the checks: both headers present, both well-formed, timestamp within the skew,
/// then the MAC, compared in constant time.
pub fn verify(
    secret: &SigningSecret,
    method: &str,
    path_and_query: &str,
    body: &[u8],
    headers: SignatureHeaders<'_>,
    now: u64,
    max_skew_secs: u64,
) -> Result<(), SignatureError> {
    let (Some(timestamp), Some(signature)) = (headers.timestamp, headers.signature) else {
        return Err(SignatureError::Missing);
    };
    let ts: u64 = timestamp
        .trim()
        .parse()
        .map_err(|_| SignatureError::Bad("the timestamp is not unix seconds"))?;
    let hex_mac = signature
        .trim()
        .strip_prefix(VERSION)
        .and_then(|rest| rest.strip_prefix('='))
        .ok_or(SignatureError::Bad("the signature is not v1=<hex>"))?;
    let expected =
        hex::decode(hex_mac).map_err(|_| SignatureError::Bad("the signature is not hex"))?;
    let skew_secs = now.abs_diff(ts);
    if skew_secs > max_skew_secs {
        return Err(SignatureError::Stale {
            skew_secs,
            max_skew_secs,
        });
    }
    let mut mac = secret.mac();
    mac.update(string_to_sign(method, path_and_query, timestamp.trim(), body).as_bytes());
    mac.verify_slice(&expected)
        .map_err(|_| SignatureError::Bad("the MAC does not match this request"))
}

/// The gid token of `gid` (see the module docs): `v1=<lowercase hex HMAC-SHA256(secret,
/// "tcc-gid-token\n" + gid)>`, the value of [`GID_TOKEN_HEADER`]. 67 characters.
pub fn gid_token(secret: &SigningSecret, gid: &str) -> String {
    let mut mac = secret.mac();
    mac.update(GID_TOKEN_CONTEXT.as_bytes());
    mac.update(gid.as_bytes());
    format!("{VERSION}={}", hex::encode(mac.finalize().into_bytes()))
}

/// Why a gid token was refused: answered `401 bad_gid_token`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the {GID_TOKEN_HEADER} header is not this gid's token: {0}")]
pub struct GidTokenError(pub &'static str);

impl GidTokenError {
    /// The `error` code of the 401 body: `bad_gid_token`.
    pub fn code(&self) -> &'static str {
        "bad_gid_token"
    }
}

/// Checks that `token` (the value of [`GID_TOKEN_HEADER`]) is [`gid_token`]`(secret, gid)`,
/// comparing the MAC in constant time. Errors: not `v1=<hex>`, or not this gid's token under this
/// secret (another gid's, another secret's, or made up).
pub fn verify_gid_token(
    secret: &SigningSecret,
    gid: &str,
    token: &str,
) -> Result<(), GidTokenError> {
    let hex_mac = token
        .trim()
        .strip_prefix(VERSION)
        .and_then(|rest| rest.strip_prefix('='))
        .ok_or(GidTokenError("the token is not v1=<hex>"))?;
    let expected = hex::decode(hex_mac).map_err(|_| GidTokenError("the token is not hex"))?;
    let mut mac = secret.mac();
    mac.update(GID_TOKEN_CONTEXT.as_bytes());
    mac.update(gid.as_bytes());
    mac.verify_slice(&expected)
        .map_err(|_| GidTokenError("the MAC does not match this gid"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_767_225_600;
    const TARGET: &str = "/api/TransOutConfirm?gid=g1&trans_type=tcc&branch_id=01&op=confirm";
    const BODY: &[u8] = br#"{"account_id":1,"amount":30}"#;

    fn secret() -> SigningSecret {
        SigningSecret::new("test-secret")
    }

    fn check(
        target: &str,
        body: &[u8],
        headers: &(String, String),
        now: u64,
    ) -> Result<(), SignatureError> {
        verify(
            &secret(),
            "POST",
            target,
            body,
            SignatureHeaders {
                timestamp: Some(&headers.0),
                signature: Some(&headers.1),
            },
            now,
            DEFAULT_MAX_SKEW_SECS,
        )
    }

    #[test]
    fn a_signed_request_verifies() {
        let headers = sign(&secret(), "POST", TARGET, BODY, NOW);
        assert_eq!(headers.0, NOW.to_string());
        assert!(headers.1.starts_with("v1=") && headers.1.len() == 3 + 64);
        assert_eq!(check(TARGET, BODY, &headers, NOW), Ok(()));
        assert_eq!(check(TARGET, BODY, &headers, NOW + 300), Ok(()));
        assert_eq!(check(TARGET, BODY, &headers, NOW - 300), Ok(()));
        let empty = sign(&secret(), "post", "/api/x", b"", NOW);
        assert_eq!(check("/api/x", b"", &empty, NOW), Ok(()));
    }

    #[test]
    fn the_string_to_sign_is_the_documented_one() {
        assert_eq!(
            string_to_sign("post", "/p?a=1&b=2", "17", b""),
            "POST\n/p\na=1&b=2\n17\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            string_to_sign("POST", "/p", "17", b"").lines().nth(2),
            Some("")
        );
    }

    #[test]
    fn a_changed_body_query_path_or_method_is_refused() {
        let headers = sign(&secret(), "POST", TARGET, BODY, NOW);
        let bad = |r: Result<(), SignatureError>| {
            assert_eq!(r.map_err(|e| e.code()), Err("bad_signature"))
        };
        bad(check(
            TARGET,
            br#"{"account_id":1,"amount":3000}"#,
            &headers,
            NOW,
        ));
        bad(check(
            &TARGET.replace("branch_id=01", "branch_id=02"),
            BODY,
            &headers,
            NOW,
        ));
        bad(check(
            &TARGET.replace("Confirm", "Cancel"),
            BODY,
            &headers,
            NOW,
        ));
        let put = SignatureHeaders {
            timestamp: Some(&headers.0),
            signature: Some(&headers.1),
        };
        bad(verify(&secret(), "PUT", TARGET, BODY, put, NOW, 300));
        // The timestamp is covered too: moving it within the window breaks the MAC.
        let moved = ((NOW + 1).to_string(), headers.1.clone());
        bad(check(TARGET, BODY, &moved, NOW));
    }

    #[test]
    fn a_stale_or_future_timestamp_is_refused() {
        let headers = sign(&secret(), "POST", TARGET, BODY, NOW);
        assert_eq!(
            check(TARGET, BODY, &headers, NOW + 301),
            Err(SignatureError::Stale {
                skew_secs: 301,
                max_skew_secs: 300
            })
        );
        assert_eq!(
            check(TARGET, BODY, &headers, NOW - 301).map_err(|e| e.code()),
            Err("stale_signature")
        );
    }

    #[test]
    fn another_secret_is_refused() {
        let headers = sign(&SigningSecret::new("other"), "POST", TARGET, BODY, NOW);
        assert_eq!(
            check(TARGET, BODY, &headers, NOW).map_err(|e| e.code()),
            Err("bad_signature")
        );
    }

    #[test]
    fn missing_and_malformed_headers_are_refused() {
        let (ts, sig) = sign(&secret(), "POST", TARGET, BODY, NOW);
        let run = |ts: Option<&str>, sig: Option<&str>| {
            let headers = SignatureHeaders {
                timestamp: ts,
                signature: sig,
            };
            verify(&secret(), "POST", TARGET, BODY, headers, NOW, 300).map_err(|e| e.code())
        };
        assert_eq!(run(None, Some(&sig)), Err("missing_signature"));
        assert_eq!(run(Some(&ts), None), Err("missing_signature"));
        assert_eq!(run(None, None), Err("missing_signature"));
        for bad_sig in ["", "v1=", "v1=zz", "v1=abc", "v2=00", &sig[3..], "v1:00"] {
            assert_eq!(
                run(Some(&ts), Some(bad_sig)),
                Err("bad_signature"),
                "{bad_sig}"
            );
        }
        for bad_ts in ["", "-5", "soon", "1.5"] {
            assert_eq!(
                run(Some(bad_ts), Some(&sig)),
                Err("bad_signature"),
                "{bad_ts}"
            );
        }
    }

    #[test]
    fn the_secret_is_not_printed() {
        assert_eq!(format!("{:?}", secret()), "SigningSecret(<redacted>)");
    }

    #[test]
    fn a_gid_token_verifies_for_its_gid_only() {
        let token = gid_token(&secret(), "g1");
        assert!(token.starts_with("v1=") && token.len() == 3 + 64, "{token}");
        assert_eq!(verify_gid_token(&secret(), "g1", &token), Ok(()));
        let code = |r: Result<(), GidTokenError>| r.map_err(|e| e.code());
        assert_eq!(
            code(verify_gid_token(&secret(), "g2", &token)),
            Err("bad_gid_token")
        );
        let foreign = gid_token(&SigningSecret::new("other"), "g1");
        assert!(verify_gid_token(&secret(), "g1", &foreign).is_err());
        for bad in ["", "v1=", "v1=zz", "v2=00", &token[3..], "v1=00"] {
            assert!(verify_gid_token(&secret(), "g1", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_gid_token_is_the_documented_hmac() {
        let mut mac = secret().mac();
        mac.update(b"tcc-gid-token\ng1");
        let expected = format!("v1={}", hex::encode(mac.finalize().into_bytes()));
        assert_eq!(gid_token(&secret(), "g1"), expected);
        // Never a request signature: another message is MACed.
        let (_, signature) = sign(&secret(), "POST", "/p?gid=g1", b"", NOW);
        assert_ne!(gid_token(&secret(), "g1"), signature);
    }
}
