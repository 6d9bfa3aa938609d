//! The AP's settings: how an unset `APP_URL` is derived from the address bound.

use std::net::SocketAddr;

use app::configuration::{default_app_url, Settings, DEFAULT_APP_URL};

#[test]
fn an_unset_app_url_is_derived_from_the_bound_address() {
    let bound: SocketAddr = "127.0.0.1:8080".parse().unwrap();
    let resolved = Settings::default().resolve_app_url(bound);
    assert_eq!(resolved.app_url.as_deref(), Some(DEFAULT_APP_URL));
    let any: SocketAddr = "0.0.0.0:41234".parse().unwrap();
    assert_eq!(default_app_url(any), "http://127.0.0.1:41234/api");
    let any6: SocketAddr = "[::]:41234".parse().unwrap();
    assert_eq!(default_app_url(any6), "http://[::1]:41234/api");
    let set = Settings {
        app_url: Some("http://app:8080/api".into()),
        ..Settings::default()
    };
    assert_eq!(
        set.resolve_app_url(any).app_url.as_deref(),
        Some("http://app:8080/api")
    );
}
