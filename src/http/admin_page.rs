//! `/admin`: the operators' web page (cluster, actors, one actor's timeline, the live tail).
//!
//! Owns serving the page's shell (`/admin`, `/admin/`) and its static assets
//! (`/admin/assets/{file}`), embedded in the binary at build time so there is no separate build
//! step and nothing to deploy beside the binary. The shell and the assets hold no data and need
//! no token: the page asks the operator for the admin token, keeps it in the tab's
//! `sessionStorage` and reads everything through `/admin/api` (see `admin.rs`).
//!
//! Every response here carries a strict Content-Security-Policy (scripts, styles and requests
//! only from this origin; no inline script or style, no framing, no form submission), so a
//! ticket title that smuggles markup can at worst be shown as text. It must not embed data in
//! what it serves.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::AppState;
use super::error::ApiError;

/// The Content-Security-Policy of the page and its assets.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// The shell and the assets change only with the binary, but their names do not, so a browser
/// must revalidate each time; the `ETag` makes that a cheap `304`.
const CACHE_CONTROL: &str = "no-cache";

/// One embedded file of the page.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
    /// FNV-1a of the body, computed at build time.
    hash: u64,
}

impl Asset {
    const fn new(name: &'static str, content_type: &'static str, body: &'static [u8]) -> Asset {
        Asset {
            name,
            content_type,
            body,
            hash: fnv1a(body),
        }
    }

    fn etag(&self) -> String {
        format!("\"{:016x}\"", self.hash)
    }

    /// The asset, or `304 Not Modified` when the browser already has this version.
    fn respond(&self, request_headers: &HeaderMap) -> Response {
        let etag = self.etag();
        let is_fresh = request_headers
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .any(|candidate| candidate.trim() == etag || candidate.trim() == "*");
        let headers = [
            (header::CACHE_CONTROL, CACHE_CONTROL.to_string()),
            (header::ETAG, etag),
        ];
        if is_fresh {
            (StatusCode::NOT_MODIFIED, headers).into_response()
        } else {
            (
                headers,
                [(header::CONTENT_TYPE, self.content_type)],
                self.body,
            )
                .into_response()
        }
    }
}

const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut index = 0;
    while index < bytes.len() {
        hash ^= bytes[index] as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
        index += 1;
    }
    hash
}

const JAVASCRIPT: &str = "text/javascript; charset=utf-8";

static SHELL: Asset = Asset::new(
    "index.html",
    "text/html; charset=utf-8",
    include_bytes!("admin_page/index.html"),
);

static ASSETS: [Asset; 9] = [
    Asset::new(
        "style.css",
        "text/css; charset=utf-8",
        include_bytes!("admin_page/style.css"),
    ),
    Asset::new("app.js", JAVASCRIPT, include_bytes!("admin_page/app.js")),
    Asset::new("api.js", JAVASCRIPT, include_bytes!("admin_page/api.js")),
    Asset::new("dom.js", JAVASCRIPT, include_bytes!("admin_page/dom.js")),
    Asset::new(
        "event_stream.js",
        JAVASCRIPT,
        include_bytes!("admin_page/event_stream.js"),
    ),
    Asset::new(
        "cluster.js",
        JAVASCRIPT,
        include_bytes!("admin_page/cluster.js"),
    ),
    Asset::new(
        "actors.js",
        JAVASCRIPT,
        include_bytes!("admin_page/actors.js"),
    ),
    Asset::new(
        "actor.js",
        JAVASCRIPT,
        include_bytes!("admin_page/actor.js"),
    ),
    Asset::new("tail.js", JAVASCRIPT, include_bytes!("admin_page/tail.js")),
];

/// The page's routes: the shell and its assets, with the security headers on every response.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin", get(shell))
        .route("/admin/", get(shell))
        .route("/admin/assets/{file}", get(asset))
        .layer(middleware::map_response(add_security_headers))
}

async fn shell(request_headers: HeaderMap) -> Response {
    SHELL.respond(&request_headers)
}

async fn asset(Path(file): Path<String>, request_headers: HeaderMap) -> Response {
    match ASSETS.iter().find(|asset| asset.name == file) {
        Some(asset) => asset.respond(&request_headers),
        None => ApiError::not_found().into_response(),
    }
}

async fn add_security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::{ASSETS, SHELL, fnv1a};

    /// Whether the markup has an attribute like ` onclick=`.
    fn has_inline_handler(html: &str) -> bool {
        html.match_indices(" on").any(|(index, _)| {
            let rest = &html[index + 3..];
            let name_length = rest
                .chars()
                .take_while(|character| character.is_ascii_lowercase())
                .count();
            name_length > 0 && rest[name_length..].starts_with('=')
        })
    }

    #[test]
    fn inline_handlers_are_recognised() {
        assert!(has_inline_handler("<body onload=\"x()\">"));
        assert!(!has_inline_handler("<p>Sign in on this page</p>"));
    }

    #[test]
    fn asset_names_are_unique_and_the_hash_is_fnv1a() {
        let names: HashSet<&str> = ASSETS.iter().map(|asset| asset.name).collect();
        assert_eq!(names.len(), ASSETS.len());
        // The published FNV-1a 64 test vectors.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn the_shell_loads_only_embedded_assets_and_has_nothing_inline() {
        let shell = std::str::from_utf8(SHELL.body).expect("utf-8");
        for asset in ["/admin/assets/app.js", "/admin/assets/style.css"] {
            assert!(shell.contains(asset), "the shell loads {asset}");
        }
        assert!(!shell.contains("<style"), "no inline styles");
        assert!(!shell.contains("style="), "no style attributes");
        assert!(!shell.contains("<script>"), "no inline scripts");
        assert!(!has_inline_handler(shell), "no inline event handlers");
        for asset in &ASSETS {
            let text = std::str::from_utf8(asset.body).expect("utf-8");
            assert!(
                !text.contains("innerHTML") && !text.contains("outerHTML"),
                "{} must build the page with createElement and textContent",
                asset.name
            );
        }
    }

    #[test]
    fn every_module_the_page_imports_is_served() {
        let served: HashSet<&str> = ASSETS.iter().map(|asset| asset.name).collect();
        for asset in ASSETS.iter().filter(|asset| asset.name.ends_with(".js")) {
            let text = std::str::from_utf8(asset.body).expect("utf-8");
            for line in text.lines().filter(|line| line.starts_with("import ")) {
                let module = line
                    .rsplit("from \"./")
                    .next()
                    .and_then(|rest| rest.split('"').next())
                    .expect("imports are written as from \"./module.js\"");
                assert!(served.contains(module), "{} imports {module}", asset.name);
            }
        }
    }
}
