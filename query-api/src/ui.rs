//! The viewer: the `<trailhouse-audit-log>` element and its page, served at
//! `/ui/` from assets compiled into the binary (no CDN; works offline). The
//! page reads the audit log through the organisation audit log API with the
//! token the user gives it, under a Content-Security-Policy that allows
//! scripts, styles and requests from this origin only.

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

use crate::error::ApiError;
use crate::state::Routes;
use crate::store::EventStore;

include!(concat!(env!("OUT_DIR"), "/ui_assets.rs"));

/// Where the page is.
pub const PATH: &str = "/ui/";

/// No inline script or style, nothing from another origin, no framing.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// The routes of the viewer (outside the data routes' guard: the page
/// itself needs no token).
pub fn routes<S: EventStore>() -> Routes<S> {
    Routes::new()
        .route("/ui", get(|| async { Redirect::permanent(PATH) }))
        .route(PATH, get(|| async { asset("index.html") }))
        .route(
            "/ui/{*file}",
            get(|Path(file): Path<String>| async move { asset(&file) }),
        )
}

/// The content type of a file, by its extension.
pub fn content_type(file: &str) -> &'static str {
    match file.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

fn asset(file: &str) -> Response {
    if ASSETS.is_empty() {
        return trailhouse_common::http::error_body(
            StatusCode::SERVICE_UNAVAILABLE,
            "viewer_not_built",
            "this binary was built without the viewer: run dev/build_ui.sh, then build again",
        );
    }
    let Some((_, bytes)) = ASSETS.iter().find(|(path, _)| *path == file) else {
        return ApiError::NotFound.into_response();
    };
    let mut resp = ([(header::CONTENT_TYPE, content_type(file))], *bytes).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_get_their_content_types() {
        let cases = [
            ("index.html", "text/html; charset=utf-8"),
            ("assets/index-1.js", "text/javascript; charset=utf-8"),
            ("assets/a.css", "text/css; charset=utf-8"),
            ("x", "application/octet-stream"),
        ];
        for (file, want) in cases {
            assert_eq!(content_type(file), want, "{file}");
        }
    }

    async fn get(viewer: bool, path: &str) -> axum::http::Response<axum::body::Body> {
        use tower::ServiceExt;
        let mut state =
            crate::state::AppState::for_tests(crate::store::StaticStore::default(), None);
        state.viewer = viewer;
        let app = crate::api::app(std::sync::Arc::new(state));
        let req = axum::http::Request::get(path)
            .body(axum::body::Body::empty())
            .unwrap_or_default();
        match app.oneshot(req).await {
            Ok(r) => r,
            Err(e) => match e {},
        }
    }

    #[tokio::test]
    async fn the_viewer_is_served_only_when_enabled() {
        let on = get(true, PATH).await;
        if ASSETS.is_empty() {
            assert_eq!(
                on.status(),
                StatusCode::SERVICE_UNAVAILABLE,
                "built without the viewer"
            );
        } else {
            assert_eq!(on.status(), StatusCode::OK);
            assert_eq!(on.headers()[header::CONTENT_SECURITY_POLICY], CSP);
            assert_eq!(
                on.headers()[header::CONTENT_TYPE],
                "text/html; charset=utf-8"
            );
            let element = get(true, "/ui/trailhouse-audit-log.js").await;
            assert_eq!(element.status(), StatusCode::OK);
        }
        assert_eq!(
            get(true, "/ui").await.status(),
            StatusCode::PERMANENT_REDIRECT
        );
        assert_eq!(
            get(true, "/ui/no-such-file.js").await.status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(get(false, PATH).await.status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn the_policy_allows_nothing_inline_or_foreign() {
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(CSP.contains(directive), "{directive}");
        }
        assert!(!CSP.contains("unsafe"));
    }
}
