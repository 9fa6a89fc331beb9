//! `/graphql`: GraphiQL on GET, operations (single or batched) on POST.

use std::net::SocketAddr;

use async_graphql::http::GraphiQLSource;
use async_graphql::{BatchRequest, BatchResponse, Response, ServerError};
use async_graphql_axum::{GraphQLBatchRequest, GraphQLResponse};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse};

use super::HttpState;
use super::client::device_info;
use crate::app::AppState;
use crate::auth::service;
use crate::error::AppError;
use crate::graphql::context::{RequestContext, Viewer};

/// GraphiQL, pointed at this server.
pub async fn graphiql() -> Html<String> {
    Html(
        GraphiQLSource::build()
            .endpoint("/graphql")
            .title("FlowPilot")
            .finish(),
    )
}

/// Executes a GraphQL request with the viewer resolved from its bearer token.
pub async fn execute(
    State(state): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    request: GraphQLBatchRequest,
) -> axum::response::Response {
    let batch = request.into_inner();
    let limit = state.app.config.settings.max_batch_size;
    if let BatchRequest::Batch(operations) = &batch
        && operations.len() > limit
    {
        let message = format!(
            "a batch may hold at most {limit} operations, this one holds {}",
            operations.len()
        );
        let response = client_error(Response::from_errors(vec![ServerError::new(message, None)]));
        return (StatusCode::BAD_REQUEST, GraphQLResponse::from(response)).into_response();
    }
    let viewer = resolve_viewer(&state.app, &headers).await;
    let device = device_info(peer, &headers, &state.app.config.settings.trusted_proxies);
    let context = RequestContext::new(state.app.clone(), viewer, device);
    let response = state.schema.execute_batch(batch.data(context)).await;
    let response = match response {
        BatchResponse::Single(single) => BatchResponse::Single(client_error(single)),
        BatchResponse::Batch(many) => {
            BatchResponse::Batch(many.into_iter().map(client_error).collect())
        }
    };
    GraphQLResponse::from(response).into_response()
}

/// Errors raised before resolvers run (syntax, validation, limits, input
/// coercion) carry no code of ours: they are all the client's to fix.
fn client_error(mut response: Response) -> Response {
    for error in &mut response.errors {
        let extensions = error.extensions.get_or_insert_with(Default::default);
        if extensions.get("code").is_none() {
            extensions.set("code", "BAD_USER_INPUT");
        }
    }
    response
}

async fn resolve_viewer(state: &AppState, headers: &HeaderMap) -> Viewer {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Viewer::Anonymous;
    };
    let Some(token) = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
    else {
        return Viewer::Rejected("the Authorization header must be `Bearer <access token>`");
    };
    match service::authenticate(state, token).await {
        Ok(user) => Viewer::User(user),
        Err(AppError::Unauthenticated(reason)) => Viewer::Rejected(reason),
        Err(err) => {
            tracing::error!(error = ?err, "authenticating a request failed");
            Viewer::Unavailable
        }
    }
}
