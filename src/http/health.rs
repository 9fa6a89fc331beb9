//! Health endpoints for load balancers and orchestrators.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::HttpState;
use crate::events::bus::BusHealth;
use crate::events::redis_bus::RedisBusState;

/// The process is up.
pub async fn live() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// A database round trip.
pub async fn database(State(state): State<HttpState>) -> (StatusCode, Json<Value>) {
    let ping = tokio::time::timeout(Duration::from_secs(3), state.app.db.ping()).await;
    match ping {
        Ok(Ok(())) => (StatusCode::OK, Json(json!({ "status": "ok" }))),
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "database health check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "status": "unavailable" })),
            )
        }
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "unavailable" })),
        ),
    }
}

/// The event bus: in-process, or Redis with its subscriber connection
/// `connected` (and PING answered), `reconnecting`, or `down`.
pub async fn cache(State(state): State<HttpState>) -> (StatusCode, Json<Value>) {
    let unavailable = |redis: &str| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "unavailable", "bus": "redis", "redis": redis })),
        )
    };
    let (BusHealth::Redis(subscriber), Some(mut redis)) =
        (state.app.bus.health(), state.app.redis.clone())
    else {
        return (
            StatusCode::OK,
            Json(json!({ "status": "ok", "bus": "in-process" })),
        );
    };
    let ping = tokio::time::timeout(
        Duration::from_secs(3),
        redis::cmd("PING").query_async::<String>(&mut redis),
    )
    .await;
    match (ping, subscriber) {
        (Ok(Ok(_)), RedisBusState::Connected) => (
            StatusCode::OK,
            Json(json!({ "status": "ok", "bus": "redis", "redis": "connected" })),
        ),
        (Ok(Ok(_)), RedisBusState::Reconnecting) => unavailable("reconnecting"),
        (Ok(Err(err)), _) => {
            tracing::warn!(error = %err, "Redis health check failed");
            unavailable("down")
        }
        (Err(_), _) => unavailable("down"),
    }
}
