//! Who may run the admin actions: the holder of `ADMIN_TOKEN`, and only from the page's own
//! origin.
//!
//! The token travels as `Authorization: Bearer <token>` and is compared in constant time
//! ([`subtle`]), so the time an answer takes does not reveal how many leading bytes of a guess
//! were right. Only the two actions check it; every read-only route stays open (the same data
//! as DTM's `query`/`all`).

use crate::configuration::AdminToken;
use actix_web::http::header::{HeaderValue, AUTHORIZATION, HOST, ORIGIN, WWW_AUTHENTICATE};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse};
use service_kit::http::error_response;

/// The bearer credential of `req`'s `Authorization` header, if it has one
/// (`Bearer <credential>`, scheme case-insensitive as RFC 6750 says).
fn bearer(req: &HttpRequest) -> Option<&str> {
    let value = req.headers().get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, credential) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| credential.trim())
}

/// Whether a browser sent `req` from another origin (another site's page posting here): its
/// `Origin` header, when present, must name the host and port the request was sent to. Requests
/// without `Origin` (curl, scripts) pass: they cannot carry a victim's session anyway. This keeps
/// a page elsewhere from force-stopping transactions through an operator's browser when no token
/// is set (with a token, the `Authorization` header already needs the page's own script).
fn cross_origin(req: &HttpRequest) -> bool {
    let Some(origin) = req.headers().get(ORIGIN) else {
        return false;
    };
    let host = req.headers().get(HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|o| url::Url::parse(o).ok())
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .and_then(|u| {
            let host = u.host_str()?.to_owned();
            Some(match u.port() {
                Some(port) => format!("{host}:{port}"),
                None => host,
            })
        });
    match (origin_host, host) {
        (Some(origin), Some(host)) => !origin.eq_ignore_ascii_case(host),
        _ => true,
    }
}

/// Lets an admin action through, or returns the answer saying why not (boxed: a response is
/// large, and this is the cold path):
///
/// * `403 {"error":"cross_origin"}` when a browser sent it from a page of another origin (its
///   `Origin` header names another host and port than the request's `Host`);
/// * `401 {"error":"unauthorized"}` with `WWW-Authenticate: Bearer` when `token` is set and the
///   request does not carry it.
///
/// `action` and `gid` (the transaction it was asked for; `-` when the path's gid is not a valid
/// one, so that no caller-written text reaches the log) name the action in the log line of a
/// refusal, which carries `gid=`, `branch_id=-` and `op=-` like every line about a transaction
/// (the presented credential is never logged).
pub fn authorize(
    req: &HttpRequest,
    token: Option<&AdminToken>,
    action: &str,
    gid: &str,
) -> Result<(), Box<HttpResponse>> {
    if cross_origin(req) {
        log::warn!(
            "gid={gid} branch_id=- op=- admin {action} refused: sent from another origin ({:?})",
            req.headers().get(ORIGIN)
        );
        return Err(Box::new(error_response(
            StatusCode::FORBIDDEN,
            "cross_origin",
            "admin actions are accepted only from the coordinator's own page",
        )));
    }
    let Some(token) = token else {
        return Ok(());
    };
    match bearer(req) {
        Some(presented) if token.matches(presented) => Ok(()),
        presented => {
            log::warn!(
                "gid={gid} branch_id=- op=- admin {action} refused: {} admin token from {}",
                if presented.is_some() { "wrong" } else { "no" },
                req.connection_info().peer_addr().unwrap_or("?")
            );
            let mut response = error_response(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "this admin action needs the admin token: Authorization: Bearer <ADMIN_TOKEN>",
            );
            response.headers_mut().insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"tcc-coordinator-admin\""),
            );
            Err(Box::new(response))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn only_the_exact_token_matches() {
        let token = AdminToken::new("s3cret-token");
        assert!(token.matches("s3cret-token"));
        for wrong in [
            "",
            "s3cret",
            "s3cret-token ",
            "S3CRET-TOKEN",
            "s3cret-tokeN",
        ] {
            assert!(!token.matches(wrong), "{wrong:?}");
        }
    }

    #[test]
    fn the_token_is_never_printed_by_debug() {
        let printed = format!("{:?}", Some(AdminToken::new("s3cret-token")));
        assert!(!printed.contains("s3cret"), "{printed}");
    }

    #[test]
    fn a_bearer_credential_is_read_from_the_authorization_header() {
        let req = TestRequest::default()
            .insert_header((AUTHORIZATION, "bearer abc"))
            .to_http_request();
        assert_eq!(bearer(&req), Some("abc"));
        let req = TestRequest::default()
            .insert_header((AUTHORIZATION, "Basic abc"))
            .to_http_request();
        assert_eq!(bearer(&req), None);
        assert_eq!(bearer(&TestRequest::default().to_http_request()), None);
    }

    #[test]
    fn without_a_token_actions_are_open_but_a_token_must_then_be_presented() {
        let open = TestRequest::default().to_http_request();
        assert!(authorize(&open, None, "test", "g1").is_ok());
        let token = AdminToken::new("t");
        let err = authorize(&open, Some(&token), "test", "g1").unwrap_err();
        assert_eq!(err.status(), StatusCode::UNAUTHORIZED);
        let with = TestRequest::default()
            .insert_header((AUTHORIZATION, "Bearer t"))
            .to_http_request();
        assert!(authorize(&with, Some(&token), "test", "g1").is_ok());
    }

    #[test]
    fn a_browser_request_from_another_origin_is_refused() {
        let same = TestRequest::default()
            .insert_header((HOST, "127.0.0.1:36789"))
            .insert_header((ORIGIN, "http://127.0.0.1:36789"))
            .to_http_request();
        assert!(authorize(&same, None, "test", "g1").is_ok());
        for origin in ["http://evil.example", "http://127.0.0.1:8080", "null"] {
            let other = TestRequest::default()
                .insert_header((HOST, "127.0.0.1:36789"))
                .insert_header((ORIGIN, origin))
                .to_http_request();
            let err = authorize(&other, None, "test", "g1").unwrap_err();
            assert_eq!(err.status(), StatusCode::FORBIDDEN, "{origin}");
        }
    }
}
