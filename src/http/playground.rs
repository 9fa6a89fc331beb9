//! GraphiQL, served by FlowPilot itself.
//!
//! The page and its assets (pinned GraphiQL, React and graphql-ws builds,
//! and the page's own script) are checked in under `assets/graphiql/` —
//! rebuilt from pinned npm packages by `web/graphiql/build.mjs`, which CI
//! runs with `--check` — and embedded in the binary, so the playground
//! needs nothing but this server: it works offline, and under the page's
//! Content-Security-Policy, which allows only this origin.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// What the GraphiQL page may load and reach: this origin only (its
/// WebSocket included), no inline script or style, no framing.
const PAGE_POLICY: &str = "default-src 'self'; connect-src 'self'; img-src 'self' data:; \
     font-src 'self' data:; style-src 'self'; script-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const PAGE: &str = include_str!("../../assets/graphiql/index.html");

/// The assets by name, with their media types.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "flowpilot-graphiql.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/graphiql/flowpilot-graphiql.js"),
    ),
    (
        "graphiql.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/graphiql/graphiql.min.js"),
    ),
    (
        "graphiql.min.css",
        "text/css; charset=utf-8",
        include_bytes!("../../assets/graphiql/graphiql.min.css"),
    ),
    (
        "react.production.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/graphiql/react.production.min.js"),
    ),
    (
        "react-dom.production.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/graphiql/react-dom.production.min.js"),
    ),
    (
        "graphql-ws.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/graphiql/graphql-ws.min.js"),
    ),
    (
        "LICENSES.txt",
        "text/plain; charset=utf-8",
        include_bytes!("../../assets/graphiql/LICENSES.txt"),
    ),
];

/// The GraphiQL page, under its Content-Security-Policy.
pub fn page() -> Response {
    let mut response = (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        PAGE,
    )
        .into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PAGE_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// `GET /graphiql/{file}`: one of the page's assets. The page names each
/// with a hash of its content, so they may be cached for long.
pub async fn asset(Path(file): Path<String>) -> Response {
    let Some((_, media_type, bytes)) = ASSETS.iter().find(|(name, _, _)| *name == file) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    (
        [
            (header::CONTENT_TYPE, *media_type),
            (header::CACHE_CONTROL, "public, max-age=604800"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        *bytes,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_assets_this_server_serves() {
        let mut named = 0;
        for reference in PAGE.split("/graphiql/").skip(1) {
            let file = reference.split(['?', '"']).next().unwrap();
            assert!(
                ASSETS.iter().any(|(name, _, _)| *name == file),
                "the page loads {file}, which is not served"
            );
            named += 1;
        }
        assert!(named >= 5, "the page names {named} assets");
        assert!(!PAGE.contains("https://"), "the page reaches out");
        assert!(
            !PAGE.contains("<script>"),
            "inline script breaks the policy"
        );
    }
}
