//! Web console for agents, helpers and supervisors, and the browser module it is built on.
//!
//! Static files only (plain HTML, CSS and ES modules, no build step), embedded in the binary
//! with `rust-embed` and served by an axum [`router`]:
//!
//! | path | files |
//! |---|---|
//! | `/console/` | `agent-console/assets/` (the console; `index.html` for the bare folder) |
//! | `/sdk/js/` | `client-sdk/js/` (the browser module `cloud-window.js` and its test page) |
//!
//! Debug builds read the files from disk at each request (edit and reload); release builds
//! carry them inside the binary. Running the system needs no Node.js.

use axum::body::Body;
use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use rust_embed::{EmbeddedFile, RustEmbed};

/// The console's own files.
#[derive(RustEmbed)]
#[folder = "assets/"]
struct ConsoleAssets;

/// The browser module (shared with the resident app) and its test page.
#[derive(RustEmbed)]
#[folder = "../client-sdk/js/"]
struct SdkAssets;

/// Routes for `/console/…` and `/sdk/js/…`. Generic over the state so it merges into any
/// router: `Router::new().merge(agent_console::router())`.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/console", get(|| async { Redirect::permanent("/console/") }))
        .route("/console/", get(|h: HeaderMap| async move { serve::<ConsoleAssets>("", &h) }))
        .route("/console/{*path}", get(|Path(p): Path<String>, h: HeaderMap| async move { serve::<ConsoleAssets>(&p, &h) }))
        .route("/sdk/js/{*path}", get(|Path(p): Path<String>, h: HeaderMap| async move { serve::<SdkAssets>(&p, &h) }))
}

/// The content type for a file name (the few kinds these folders hold).
pub fn content_type(path: &str) -> &'static str {
    let ext = path.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
    match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        "md" => "text/markdown; charset=utf-8",
        "webmanifest" => "application/manifest+json",
        _ => "application/octet-stream",
    }
}

fn lookup<A: RustEmbed>(path: &str) -> Option<(String, EmbeddedFile)> {
    // `..` never resolves outside the folder (rust-embed's keys are plain relative paths), but
    // refuse it outright anyway.
    if path.split('/').any(|seg| seg == "..") {
        return None;
    }
    let path = path.trim_start_matches('/');
    if path.is_empty() || path.ends_with('/') {
        let index = format!("{path}index.html");
        return A::get(&index).map(|f| (index, f));
    }
    A::get(path).map(|f| (path.to_owned(), f))
}

fn serve<A: RustEmbed>(path: &str, headers: &HeaderMap) -> Response {
    let Some((name, file)) = lookup::<A>(path) else {
        return (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "not found",
        )
            .into_response();
    };
    let etag = format!("\"{}\"", hex(&file.metadata.sha256_hash()[..16]));
    let not_modified = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut builder = Response::builder()
        .header(header::ETAG, &etag)
        // Revalidate every time: the files change with the binary, and the ETag makes it cheap.
        .header(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"))
        .header(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if not_modified {
        builder = builder.status(StatusCode::NOT_MODIFIED);
        return builder.body(Body::empty()).unwrap_or_default();
    }
    builder
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, content_type(&name))
        .body(Body::from(file.data.into_owned()))
        .unwrap_or_default()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        assert_eq!(content_type("cloud-window.js"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("index.HTML"), "text/html; charset=utf-8");
        assert_eq!(content_type("x.css"), "text/css; charset=utf-8");
        assert_eq!(content_type("noext"), "application/octet-stream");
    }

    #[test]
    fn files_are_embedded() {
        assert!(lookup::<ConsoleAssets>("").is_some(), "console index");
        assert!(lookup::<SdkAssets>("cloud-window.js").is_some(), "browser module");
        assert!(lookup::<SdkAssets>("test-page/").is_some(), "test page index");
        assert!(lookup::<SdkAssets>("../Cargo.toml").is_none());
        assert!(lookup::<SdkAssets>("nope.js").is_none());
    }
}
