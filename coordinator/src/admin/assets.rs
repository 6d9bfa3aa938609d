//! The admin page and its files, embedded in the binary from `coordinator/assets/` (no CDN, no
//! files next to the binary): `GET /admin` (also `/admin/`) answers the page,
//! `GET /admin/assets/<path>` its script, style sheet and the vendored Mermaid renderer
//! (`assets/vendor/`, see its README for version and provenance).
//!
//! Every answer has an `ETag` (a hash of the content), so a browser revalidates with a cheap
//! `304`; the vendored renderer may also be cached for a day without asking. The page is sent
//! with a Content-Security-Policy that allows scripts, styles and requests from this origin
//! only: even a gid or branch data crafted to inject markup could not load or send anything
//! elsewhere.

use std::sync::OnceLock;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use service_kit::http::error_response;

/// The version of npm's `mermaid` vendored in `coordinator/assets/vendor/mermaid.min.js`.
pub const MERMAID_VERSION: &str = "11.17.2";

/// `Cache-Control` of files that change with the coordinator: always revalidate (by `ETag`).
const REVALIDATE: &str = "no-cache";
/// `Cache-Control` of the vendored renderer: it changes only with an upgrade of the vendored
/// version, so a day without revalidation is harmless and saves its 3.5 MB.
const VENDORED: &str = "public, max-age=86400";

/// The page's Content-Security-Policy. Mermaid writes `<style>` into the SVGs it renders, hence
/// `'unsafe-inline'` for styles (never for scripts).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; \
     connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// One embedded file.
struct Asset {
    /// Path under `/admin/assets/`.
    path: &'static str,
    content_type: &'static str,
    cache_control: &'static str,
    body: &'static [u8],
}

/// The page itself, `GET /admin`.
const PAGE: Asset = Asset {
    path: "",
    content_type: "text/html; charset=utf-8",
    cache_control: REVALIDATE,
    body: include_bytes!("../../assets/admin.html"),
};

/// Everything under `/admin/assets/`.
const ASSETS: [Asset; 4] = [
    Asset {
        path: "admin.js",
        content_type: "text/javascript; charset=utf-8",
        cache_control: REVALIDATE,
        body: include_bytes!("../../assets/admin.js"),
    },
    Asset {
        path: "admin.css",
        content_type: "text/css; charset=utf-8",
        cache_control: REVALIDATE,
        body: include_bytes!("../../assets/admin.css"),
    },
    Asset {
        path: "vendor/mermaid.min.js",
        content_type: "text/javascript; charset=utf-8",
        cache_control: VENDORED,
        body: include_bytes!("../../assets/vendor/mermaid.min.js"),
    },
    Asset {
        path: "vendor/mermaid.LICENSE",
        content_type: "text/plain; charset=utf-8",
        cache_control: VENDORED,
        body: include_bytes!("../../assets/vendor/mermaid.LICENSE"),
    },
];

/// Mounts `GET /admin`, `GET /admin/` and `GET /admin/assets/{path}`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/admin", web::get().to(page))
        .route("/admin/", web::get().to(page))
        .route("/admin/assets/{path:.*}", web::get().to(asset));
}

/// FNV-1a, 64 bits: a stable content hash for `ETag`s (not a security boundary).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The `ETag` of `asset`, computed once per process.
fn etag(asset: &Asset) -> &'static str {
    static TAGS: OnceLock<Vec<(&'static str, String)>> = OnceLock::new();
    let tags = TAGS.get_or_init(|| {
        std::iter::once(&PAGE)
            .chain(ASSETS.iter())
            .map(|a| (a.path, format!("\"{:016x}\"", fnv1a(a.body))))
            .collect()
    });
    tags.iter()
        .find(|(path, _)| *path == asset.path)
        .map(|(_, tag)| tag.as_str())
        .expect("every asset has a tag")
}

fn serve(req: &HttpRequest, asset: &Asset) -> HttpResponse {
    let tag = etag(asset);
    let fresh = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*"));
    let mut response = if fresh {
        HttpResponse::NotModified().finish()
    } else {
        HttpResponse::Ok()
            .content_type(asset.content_type)
            .body(asset.body)
    };
    let headers = response.headers_mut();
    headers.insert(header::ETAG, HeaderValue::from_static(tag));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(asset.cache_control),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// `GET /admin`: the page, with its Content-Security-Policy.
async fn page(req: HttpRequest) -> HttpResponse {
    let mut response = serve(&req, &PAGE);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// `GET /admin/assets/{path}`: an embedded file, or a JSON 404.
async fn asset(req: HttpRequest, path: web::Path<String>) -> HttpResponse {
    match ASSETS.iter().find(|a| a.path == path.as_str()) {
        Some(asset) => serve(&req, asset),
        None => error_response(StatusCode::NOT_FOUND, "not_found", "no such admin asset"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page_text() -> &'static str {
        std::str::from_utf8(PAGE.body).expect("the page is UTF-8")
    }

    #[test]
    fn the_page_loads_its_files_from_this_coordinator_only() {
        let page = page_text();
        for asset in ["admin.js", "admin.css", "vendor/mermaid.min.js"] {
            assert!(
                page.contains(&format!("\"/admin/assets/{asset}\"")),
                "the page does not load /admin/assets/{asset}"
            );
        }
        assert!(
            !page.contains("//cdn") && !page.contains("https://"),
            "{page}"
        );
    }

    #[test]
    fn the_vendored_renderer_is_mermaid_with_its_licence_and_documented_version() {
        let mermaid = ASSETS
            .iter()
            .find(|a| a.path == "vendor/mermaid.min.js")
            .unwrap();
        let tail = String::from_utf8_lossy(&mermaid.body[mermaid.body.len() - 200..]);
        assert!(tail.contains("globalThis[\"mermaid\"]"), "{tail}");
        let licence = ASSETS
            .iter()
            .find(|a| a.path == "vendor/mermaid.LICENSE")
            .unwrap();
        assert!(String::from_utf8_lossy(licence.body).contains("MIT License"));
        let readme = include_str!("../../assets/vendor/README.md");
        assert!(
            readme.contains(&format!("mermaid@{MERMAID_VERSION}")),
            "assets/vendor/README.md does not name mermaid@{MERMAID_VERSION}"
        );
    }

    #[test]
    fn etags_differ_between_files_and_are_quoted() {
        let tags: Vec<&str> = std::iter::once(&PAGE)
            .chain(ASSETS.iter())
            .map(etag)
            .collect();
        for (i, tag) in tags.iter().enumerate() {
            assert!(tag.starts_with('"') && tag.ends_with('"'), "{tag}");
            assert!(!tags[..i].contains(tag), "duplicate {tag}");
        }
    }
}
