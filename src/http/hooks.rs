//! Webhook deliveries: `POST /hooks/{token}`. The JSON body becomes the
//! input of a new execution of the webhook's workflow, answered 202 with its
//! id and status. An unknown token and a disabled webhook both answer 404.
//! An `Idempotency-Key` header makes a sender's retries return the first
//! delivery's execution.

use axum::Json;
use axum::body::{Body, to_bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::LengthLimitError;
use serde_json::{Value, json};

use super::HttpState;
use crate::error::AppError;
use crate::executions::service::IdempotencyKey;
use crate::workflows::triggers;

/// The header a sender names a delivery with.
const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Queues an execution for a delivery.
pub async fn deliver(
    State(state): State<HttpState>,
    Path(token): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let limit = state.app.config.settings.webhook_max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|length| length > limit) {
        return too_large(limit);
    }
    let bytes = match to_bytes(body, limit).await {
        Ok(bytes) => bytes,
        Err(err) if exceeds_limit(&err) => return too_large(limit),
        Err(_) => {
            return failure(AppError::bad_input("body", "the body could not be read"));
        }
    };
    let input: Value = if bytes.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        match serde_json::from_slice(&bytes) {
            Ok(input) => input,
            Err(_) => {
                return failure(AppError::bad_input("body", "the body is not JSON"));
            }
        }
    };
    let idempotency_key = match headers.get(IDEMPOTENCY_KEY) {
        None => None,
        Some(value) => match value
            .to_str()
            .map_err(|_| AppError::bad_input("Idempotency-Key", "the header is not text"))
            .and_then(|key| IdempotencyKey::parse(key, "Idempotency-Key"))
        {
            Ok(key) => Some(key),
            Err(err) => return failure(err),
        },
    };
    match triggers::fire_webhook(&state.app, &token, input, idempotency_key).await {
        Ok(execution) => (
            StatusCode::ACCEPTED,
            Json(json!({ "executionId": execution.id, "status": execution.status })),
        )
            .into_response(),
        Err(err) => failure(err),
    }
}

/// Whether reading a body failed because it was longer than allowed.
fn exceeds_limit(err: &axum::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(err) = cause {
        if err.is::<LengthLimitError>() {
            return true;
        }
        cause = err.source();
    }
    false
}

fn too_large(limit: usize) -> Response {
    (
        StatusCode::PAYLOAD_TOO_LARGE,
        Json(json!({ "error": {
            "code": "PAYLOAD_TOO_LARGE",
            "message": format!("a webhook body has at most {limit} bytes"),
        } })),
    )
        .into_response()
}

/// An error as a status and `{"error": {"code", "message"}}`, with the same
/// codes and public messages as the GraphQL API.
fn failure(err: AppError) -> Response {
    let status = match &err {
        AppError::NotFound(_) => StatusCode::NOT_FOUND,
        AppError::BadUserInput { .. } => StatusCode::BAD_REQUEST,
        AppError::Conflict(_) => StatusCode::CONFLICT,
        AppError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        AppError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
        AppError::Forbidden(_) | AppError::AccessChanged => StatusCode::FORBIDDEN,
        AppError::Internal(cause) => {
            tracing::error!(error = ?cause, "a webhook delivery failed");
            StatusCode::INTERNAL_SERVER_ERROR
        }
    };
    let body = json!({ "error": { "code": err.code(), "message": err.public_message() } });
    (status, Json(body)).into_response()
}
