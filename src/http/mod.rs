//! The HTTP surface: routes, middleware and handlers. Handlers translate
//! HTTP into calls on the GraphQL schema or the services and back; they
//! hold no business rules.

mod client;
mod graphql;
mod health;
mod hooks;
mod operation;
mod playground;
mod sse;
mod ws;

use std::time::Duration;

use axum::Router;
use axum::http::{HeaderName, HeaderValue, Method, Request, StatusCode};
use axum::routing::{get, post};
use tower::ServiceBuilder;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::graphql::AppSchema;
use crate::graphql::persisted::PersistedQueries;
use crate::state::AppState;

/// What every handler can reach.
#[derive(Clone)]
pub struct HttpState {
    /// The instance's shared state.
    pub app: AppState,
    /// The GraphQL schema, with its limits applied.
    pub schema: AppSchema,
    /// Persisted queries and trusted documents.
    pub persisted: PersistedQueries,
    /// Becomes true when the server starts shutting down; open WebSockets
    /// close with 1001 then (axum's graceful drain does not cover them).
    pub shutting_down: tokio::sync::watch::Receiver<bool>,
}

/// The full router with its middleware.
pub fn router(
    app: AppState,
    schema: AppSchema,
    shutting_down: tokio::sync::watch::Receiver<bool>,
) -> Router {
    let settings = app.config.settings.clone();
    let persisted = PersistedQueries::new(
        settings.persisted_query_cache,
        app.redis.clone(),
        &settings.redis_prefix,
        settings.trusted_documents.then(|| app.db.clone()),
    );
    let middleware = ServiceBuilder::new()
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request<_>| {
                    let request_id = request
                        .headers()
                        .get("x-request-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default();
                    let path = loggable_path(request.uri().path());
                    tracing::info_span!("request", request_id = %request_id, method = %request.method(), path = %path)
                })
                // A line per request is for debugging; a server error is
                // logged (at ERROR) whatever the level.
                .on_response(DefaultOnResponse::new().level(Level::DEBUG)),
        )
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(settings.request_timeout_secs),
        ))
        .layer(RequestBodyLimitLayer::new(settings.max_body_bytes))
        .layer(cors(&settings.cors_origins, &settings.cors_allow_headers));

    Router::new()
        .route("/graphql", get(graphql::get).post(graphql::post))
        .route("/graphiql/{file}", get(playground::asset))
        .route("/graphql/ws", get(ws::upgrade))
        .route("/graphql/stream", post(sse::stream))
        .route("/hooks/{token}", post(hooks::deliver))
        .route("/health", get(health::live))
        .route("/health/db", get(health::database))
        .route("/health/cache", get(health::cache))
        .layer(middleware)
        .with_state(HttpState {
            persisted,
            app,
            schema,
            shutting_down,
        })
}

/// A request path fit for logs: a webhook's token is a secret, so only
/// the route is kept.
fn loggable_path(path: &str) -> &str {
    if path.starts_with("/hooks/") {
        "/hooks/{token}"
    } else {
        path
    }
}

/// How long a browser may reuse a preflight answer.
const CORS_MAX_AGE: Duration = Duration::from_secs(600);

fn cors(origins: &[String], allow_headers: &[String]) -> CorsLayer {
    let origins: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    let allow_headers: Vec<HeaderName> = allow_headers
        .iter()
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([Method::GET, Method::POST])
        .allow_headers(allow_headers)
        .max_age(CORS_MAX_AGE)
        .expose_headers([HeaderName::from_static("x-request-id")])
}
