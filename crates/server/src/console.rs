//! The operator console: static files compiled into the binary (`crates/server/console/`),
//! served at `/` and `/console/...` with no build step. The pages are public (they hold no
//! data); everything they show comes from the API with the console's session cookie (see
//! `auth/cookie.rs`). They run under a Content-Security-Policy that allows scripts, styles
//! and connections from this origin only: no inline code, nothing from elsewhere.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::error::ApiError;

/// The console's policy: same-origin scripts, styles, images and connections (WebSocket
/// included); no inline code, no framing, forms only to this origin.
pub const CONSOLE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; manifest-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $type:expr) => {
        Asset {
            name: $name,
            content_type: $type,
            body: include_bytes!(concat!("../console/", $name)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file of the console. `index.html` is served at `/`, the rest under `/console/`.
const ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("dom.js", JS),
    asset!("units.js", JS),
    asset!("fleet.js", JS),
    asset!("well.js", JS),
    asset!("alarms.js", JS),
    asset!("admin.js", JS),
    asset!("notifications.js", JS),
    asset!("ask.js", JS),
    asset!("vendor/uplot/uPlot.esm.js", JS),
    asset!("vendor/uplot/uPlot.min.css", "text/css; charset=utf-8"),
    asset!("vendor/uplot/LICENSE", "text/plain; charset=utf-8"),
];

/// Whether `path` is one of the console's (public) paths.
pub fn is_console_path(path: &str) -> bool {
    path == "/" || path.starts_with("/console/")
}

/// The console's routes (outside the API and its OpenAPI document).
pub fn routes() -> Router {
    Router::new()
        .route("/", get(index))
        .route("/console/{*file}", get(file))
}

async fn index() -> Response {
    serve(&ASSETS[0])
}

async fn file(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|a| a.name == name) {
        Some(asset) => serve(asset),
        None => ApiError::not_found(format!("no console file {name:?}")).into_response(),
    }
}

fn serve(asset: &Asset) -> Response {
    let mut response = asset.body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    // Small files: revalidate every time rather than risk a stale console after an upgrade.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CSP forbids inline code: no `<script>` without `src`, no `<style>`, no `style=` or
    /// `on...=` attributes in the page, no `innerHTML` in our scripts.
    #[test]
    fn the_console_has_no_inline_code() {
        let html = std::str::from_utf8(ASSETS[0].body).unwrap();
        for script in html.split("<script").skip(1) {
            let tag = &script[..script.find('>').unwrap()];
            assert!(tag.contains("src="), "inline script: <script{tag}>");
            assert!(script[script.find('>').unwrap() + 1..].starts_with("</script>"));
        }
        assert!(!html.contains("<style"), "inline <style>");
        assert!(!html.contains(" style="), "style attribute");
        assert!(
            !html.contains(" onclick=") && !html.contains(" onload="),
            "inline handler"
        );
        for asset in ASSETS
            .iter()
            .filter(|a| a.name.ends_with(".js") && !a.name.starts_with("vendor/"))
        {
            let text = std::str::from_utf8(asset.body).unwrap();
            assert!(!text.contains("innerHTML"), "{} sets innerHTML", asset.name);
            assert!(
                !text.contains("http://") && !text.contains("https://"),
                "{} names another origin",
                asset.name
            );
        }
    }

    #[test]
    fn every_file_the_page_links_is_served() {
        let html = std::str::from_utf8(ASSETS[0].body).unwrap();
        for part in html.split("\"/console/").skip(1) {
            let name = &part[..part.find('"').unwrap()];
            assert!(
                ASSETS.iter().any(|a| a.name == name),
                "{name} is linked but not served"
            );
        }
        for asset in ASSETS
            .iter()
            .filter(|a| a.name.ends_with(".js") && !a.name.starts_with("vendor/"))
        {
            let text = std::str::from_utf8(asset.body).unwrap();
            for part in text.split("from './").skip(1) {
                let name = &part[..part.find('\'').unwrap()];
                assert!(
                    ASSETS.iter().any(|a| a.name == name),
                    "{} imports {name}, not served",
                    asset.name
                );
            }
        }
    }
}
