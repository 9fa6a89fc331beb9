//! `/graphql`: GraphiQL on GET, operations (single or batched) on POST.

use std::net::SocketAddr;

use async_graphql::http::GraphiQLSource;
use async_graphql::{BatchRequest, BatchResponse, Response, ServerError};
use async_graphql_axum::rejection::GraphQLRejection;
use async_graphql_axum::{GraphQLBatchRequest, GraphQLResponse};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse};

use super::HttpState;
use super::client::device_info;
use crate::graphql::context::{RequestContext, Viewer};
use crate::graphql::limits::{finish_response, limit_exceeded};

/// GraphiQL, pointed at this server.
pub async fn graphiql() -> Html<String> {
    Html(
        GraphiQLSource::build()
            .endpoint("/graphql")
            .subscription_endpoint("/graphql/ws")
            .title("FlowPilot")
            .finish(),
    )
}

/// Executes a GraphQL request with the viewer resolved from its bearer token.
pub async fn execute(
    State(state): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    request: Result<GraphQLBatchRequest, GraphQLRejection>,
) -> axum::response::Response {
    let batch = match request {
        Ok(request) => request.into_inner(),
        Err(rejection) => {
            return bad_request(format!(
                "the request is not a GraphQL request: {}",
                rejection.0
            ));
        }
    };
    // `[]` arrives as one request without a query (the batch form refuses
    // an empty list, and a request's fields all have defaults).
    let without_query = batch.iter().any(|request| {
        request.query.trim().is_empty() && !request.extensions.contains_key("persistedQuery")
    });
    if without_query {
        return bad_request("the request has no query".to_owned());
    }
    let limit = state.app.config.settings.max_batch_size;
    if let BatchRequest::Batch(operations) = &batch
        && operations.len() > limit
    {
        let message = format!(
            "a batch may hold at most {limit} operations, this one holds {}",
            operations.len()
        );
        return (
            StatusCode::BAD_REQUEST,
            GraphQLResponse::from(Response::from_errors(vec![limit_exceeded(
                "batchSize",
                message,
            )])),
        )
            .into_response();
    }
    let authorization = headers
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or_default());
    let viewer = Viewer::from_authorization(&state.app, authorization).await;
    let device = device_info(peer, &headers, &state.app.config.settings.trusted_proxies);
    let context = RequestContext::new(state.app.clone(), viewer, device);
    let response = state.schema.execute_batch(batch.data(context)).await;
    let limits = &state.app.config.settings.documents;
    let response = match response {
        BatchResponse::Single(single) => BatchResponse::Single(finish_response(single, limits)),
        BatchResponse::Batch(many) => BatchResponse::Batch(
            many.into_iter()
                .map(|one| finish_response(one, limits))
                .collect(),
        ),
    };
    GraphQLResponse::from(response).into_response()
}

/// A 400 answer in GraphQL's response shape, coded BAD_USER_INPUT.
fn bad_request(message: String) -> axum::response::Response {
    let mut error = ServerError::new(message, None);
    let mut extensions = async_graphql::ErrorExtensionValues::default();
    extensions.set("code", "BAD_USER_INPUT");
    error.extensions = Some(extensions);
    let response = Response::from_errors(vec![error]);
    (StatusCode::BAD_REQUEST, GraphQLResponse::from(response)).into_response()
}
