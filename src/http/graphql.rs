//! `/graphql` over HTTP, as the GraphQL-over-HTTP spec has it.
//!
//! POST carries an `application/json` body: one request, or a batch as a
//! JSON array. GET carries one request in URL parameters (`query`,
//! `operationName`, and `variables` and `extensions` as JSON) and runs
//! queries only: a mutation is answered 405. A GET without a query from a
//! browser asking for HTML gets GraphiQL.
//!
//! The answer's media type follows `Accept`. Under
//! `application/graphql-response+json`, a request that never ran (it does
//! not parse, breaks the schema's rules, has variables that do not fit, or
//! names a persisted query the server will not run) is answered 400 without
//! a `data` entry. Under `application/json` — the default, and what
//! `*/*` or no `Accept` gets — it is answered 200 with `"data": null`, as
//! clients written before that media type expect. A body or URL that is not
//! a GraphQL request at all is 400 under both; a POST that is not JSON is
//! 415.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use async_graphql::parser::types::OperationType;
use async_graphql::{BatchResponse, Request, Response, ServerError, Value, Variables};
use axum::body::Bytes;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};

use super::HttpState;
use super::client::device_info;
use super::playground;
use crate::error::plain_json_message;
use crate::graphql::batch::InPasses;
use crate::graphql::context::{RequestContext, Viewer};
use crate::graphql::document_guard;
use crate::graphql::limits::{
    INVALID_REQUEST, finish_response, is_request_error, limit_exceeded, refusal,
};
use crate::graphql::persisted::{Registration, names_persisted_query, set_extensions};

/// The media types a GraphQL answer comes in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Media {
    /// `application/graphql-response+json`.
    GraphqlResponse,
    /// `application/json`.
    Json,
}

impl Media {
    const GRAPHQL_RESPONSE: &'static str = "application/graphql-response+json";

    /// The type `Accept` prefers among those served: the highest quality
    /// wins, `application/graphql-response+json` on a tie; JSON when the
    /// header is missing or names neither.
    fn negotiate(headers: &HeaderMap) -> Self {
        let mut best: Option<(f32, Self)> = None;
        for (range, quality) in accepted(headers) {
            let media = match range.as_str() {
                Self::GRAPHQL_RESPONSE => Self::GraphqlResponse,
                "application/json" | "application/*" | "*/*" => Self::Json,
                _ => continue,
            };
            let better = match best {
                None => quality > 0.0,
                Some((held, held_media)) => {
                    quality > held
                        || (quality == held
                            && media == Self::GraphqlResponse
                            && held_media != Self::GraphqlResponse)
                }
            };
            if better {
                best = Some((quality, media));
            }
        }
        best.map_or(Self::Json, |(_, media)| media)
    }

    fn content_type(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Self::GraphqlResponse => "application/graphql-response+json; charset=utf-8",
            Self::Json => "application/json; charset=utf-8",
        })
    }
}

/// The media ranges of `Accept`, lower-cased, with their quality.
fn accepted(headers: &HeaderMap) -> Vec<(String, f32)> {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|part| {
            let mut pieces = part.split(';');
            let range = pieces.next()?.trim().to_ascii_lowercase();
            if range.is_empty() {
                return None;
            }
            let quality = pieces
                .filter_map(|param| param.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            Some((range, quality))
        })
        .collect()
}

/// Whether a browser is asking for a page.
fn wants_html(headers: &HeaderMap) -> bool {
    accepted(headers)
        .iter()
        .any(|(range, quality)| range == "text/html" && *quality > 0.0)
}

/// One request as it arrives, in a body or in URL parameters.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireRequest {
    #[serde(default)]
    query: Option<String>,
    #[serde(default)]
    operation_name: Option<String>,
    #[serde(default)]
    variables: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    extensions: Option<serde_json::Map<String, serde_json::Value>>,
}

impl WireRequest {
    fn into_request(self) -> Result<Request, String> {
        let query = match self.query {
            Some(query) if !query.trim().is_empty() => query,
            _ if names_persisted_query(self.extensions.as_ref()) => String::new(),
            _ => return Err("the request has no query".to_owned()),
        };
        let mut request = Request::new(query);
        request.operation_name = self.operation_name;
        if let Some(variables) = self.variables {
            request.variables = Variables::from_json(serde_json::Value::Object(variables));
        }
        set_extensions(&mut request, self.extensions);
        Ok(request)
    }
}

/// `GET /graphql`: a query in URL parameters, or GraphiQL for a browser.
pub async fn get(
    State(state): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> axum::response::Response {
    let parameters: BTreeMap<String, String> =
        url::form_urlencoded::parse(raw.as_deref().unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let asks_for_operation =
        parameters.contains_key("query") || parameters.contains_key("extensions");
    if !asks_for_operation && wants_html(&headers) {
        return playground::page();
    }
    let media = Media::negotiate(&headers);
    let request = match request_from_parameters(&parameters) {
        Ok(request) => request,
        Err(message) => return bad_request(media, message),
    };
    let mut request = request;
    let registration = match state.persisted.resolve(&mut request).await {
        Ok(registration) => registration,
        Err(error) => return answer(media, BatchResponse::Single(refused(error))),
    };
    if let Some(refusal) = refuse_non_query(&state, &request, media) {
        return refusal;
    }
    let context = request_context(&state, peer, &headers).await;
    let passes = context.passes.clone();
    let response = InPasses::new(execute(&state, context, request, registration), passes).await;
    answer(media, BatchResponse::Single(response))
}

/// `POST /graphql`: one request or a batch, as JSON.
pub async fn post(
    State(state): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let media = Media::negotiate(&headers);
    if !is_json(&headers) {
        let error = request_error("a GraphQL request is sent as `Content-Type: application/json`");
        let mut response = answer(
            media,
            BatchResponse::Single(Response::from_errors(vec![error])),
        );
        *response.status_mut() = StatusCode::UNSUPPORTED_MEDIA_TYPE;
        return response;
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return bad_request(media, "the body is empty".to_owned());
    }
    let batched = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
    let limit = state.app.config.settings.max_batch_size;
    let requests = match read_requests(&body, batched, limit) {
        Ok(requests) => requests,
        Err(Unreadable::Malformed(message)) => return bad_request(media, message),
        Err(Unreadable::TooMany(message)) => {
            let error = limit_exceeded("batchSize", message);
            let mut response = answer(
                media,
                BatchResponse::Single(Response::from_errors(vec![error])),
            );
            *response.status_mut() = StatusCode::BAD_REQUEST;
            return response;
        }
    };
    let context = request_context(&state, peer, &headers).await;
    // The operations of a batch run at once, answered in order; a
    // persisted query that cannot be resolved is answered in its place.
    // One request context, so the operations' passes are counted together.
    let operations = requests
        .into_iter()
        .map(|request| resolve_and_execute(&state, context.clone(), request));
    let passes = context.passes.clone();
    let mut responses = InPasses::new(futures::future::join_all(operations), passes).await;
    if batched {
        answer(media, BatchResponse::Batch(responses))
    } else {
        answer(media, BatchResponse::Single(responses.remove(0)))
    }
}

/// Why a POST body holds no operations to run.
enum Unreadable {
    /// Not JSON, or not GraphQL requests.
    Malformed(String),
    /// More operations than a batch may hold.
    TooMany(String),
}

/// The operations of a POST body (a batch when `batched`, of at most
/// `limit`). One request, the common case, is read straight into its
/// shape; a batch, or a body that does not fit, is read as JSON first,
/// which also tells what is wrong with it.
fn read_requests(body: &[u8], batched: bool, limit: usize) -> Result<Vec<Request>, Unreadable> {
    if !batched && let Ok(wire) = serde_json::from_slice::<WireRequest>(body) {
        return wire
            .into_request()
            .map(|request| vec![request])
            .map_err(Unreadable::Malformed);
    }
    let json: serde_json::Value = serde_json::from_slice(body).map_err(|err| {
        Unreadable::Malformed(format!(
            "the body is not JSON: {}",
            plain_json_message(&err.to_string())
        ))
    })?;
    let wires = match json {
        serde_json::Value::Array(items) if items.is_empty() => {
            let message = "a batch holds at least one operation";
            return Err(Unreadable::Malformed(message.to_owned()));
        }
        serde_json::Value::Array(items) => items,
        object @ serde_json::Value::Object(_) => vec![object],
        _ => {
            let message =
                "the body is a GraphQL request (a JSON object) or a batch of them (an array)";
            return Err(Unreadable::Malformed(message.to_owned()));
        }
    };
    if wires.len() > limit {
        return Err(Unreadable::TooMany(format!(
            "a batch may hold at most {limit} operations, this one holds {}",
            wires.len()
        )));
    }
    wires
        .into_iter()
        .map(|wire| {
            serde_json::from_value::<WireRequest>(wire)
                .map_err(|err| {
                    format!(
                        "the request is not a GraphQL request: {}",
                        plain_json_message(&err.to_string())
                    )
                })
                .and_then(WireRequest::into_request)
                .map_err(Unreadable::Malformed)
        })
        .collect()
}

/// Whether the body is declared JSON (any parameters, e.g. a charset).
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

/// The request in GET's URL parameters.
fn request_from_parameters(parameters: &BTreeMap<String, String>) -> Result<Request, String> {
    let object =
        |name: &str| -> Result<Option<serde_json::Map<String, serde_json::Value>>, String> {
            match parameters.get(name).map(String::as_str) {
                None | Some("") => Ok(None),
                Some(text) => match serde_json::from_str(text) {
                    Ok(serde_json::Value::Object(map)) => Ok(Some(map)),
                    Ok(serde_json::Value::Null) => Ok(None),
                    _ => Err(format!("the `{name}` parameter must be a JSON object")),
                },
            }
        };
    WireRequest {
        query: parameters.get("query").cloned(),
        operation_name: parameters
            .get("operationName")
            .filter(|name| !name.is_empty())
            .cloned(),
        variables: object("variables")?,
        extensions: object("extensions")?,
    }
    .into_request()
}

/// 405 for a GET whose operation is not a query (GET must not change
/// anything); `None` when it may run, or when it does not parse (running
/// it reports why).
fn refuse_non_query(
    state: &HttpState,
    request: &Request,
    media: Media,
) -> Option<axum::response::Response> {
    let limits = &state.app.config.settings.documents;
    let document = document_guard::parse(&request.query, limits).ok()?;
    let operation = document_guard::operation(&document, request.operation_name.as_deref())?;
    if operation.ty == OperationType::Query {
        return None;
    }
    let error =
        request_error("only queries run over GET; send mutations and subscriptions with POST");
    let mut response = answer(
        media,
        BatchResponse::Single(Response::from_errors(vec![error])),
    );
    *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET, POST"));
    Some(response)
}

/// Runs `request` once its persisted query is resolved, or answers why it
/// cannot be.
async fn resolve_and_execute(
    state: &HttpState,
    context: Arc<RequestContext>,
    mut request: Request,
) -> Response {
    match state.persisted.resolve(&mut request).await {
        Ok(registration) => execute(state, context, request, registration).await,
        Err(error) => refused(error),
    }
}

/// Runs one resolved request (in the passes of its context, see
/// `graphql::batch`), holds its response to the limits, and keeps
/// its persisted query once it ran.
async fn execute(
    state: &HttpState,
    context: Arc<RequestContext>,
    request: Request,
    registration: Option<Registration>,
) -> Response {
    let response = state.schema.execute(request.data(context)).await;
    let response = finish_response(response, &state.app.config.settings.documents);
    if let Some(registration) = registration
        && !is_request_error(&response)
    {
        state.persisted.register(registration).await;
    }
    response
}

async fn request_context(
    state: &HttpState,
    peer: SocketAddr,
    headers: &HeaderMap,
) -> Arc<RequestContext> {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or_default());
    let viewer = Viewer::from_authorization(&state.app, authorization).await;
    let device = device_info(peer, headers, &state.app.config.settings.trusted_proxies);
    RequestContext::new(state.app.clone(), viewer, device)
}

/// A GraphQL answer in `media`: 400 without `data` for a single request
/// that never ran under `application/graphql-response+json`, else 200.
fn answer(media: Media, response: BatchResponse) -> axum::response::Response {
    let (status, body, headers) = match &response {
        BatchResponse::Single(one) => {
            let status = if media == Media::GraphqlResponse && is_request_error(one) {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::OK
            };
            (
                status,
                serde_json::to_vec(&Body::of(media, one)),
                Some(&one.http_headers),
            )
        }
        BatchResponse::Batch(many) => {
            let bodies: Vec<Body<'_>> = many.iter().map(|one| Body::of(media, one)).collect();
            (StatusCode::OK, serde_json::to_vec(&bodies), None)
        }
    };
    let body = match body {
        Ok(body) => body,
        Err(err) => {
            tracing::error!(error = %err, "a GraphQL answer could not be written as JSON");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    };
    let mut http = (status, body).into_response();
    if let Some(extra) = headers {
        for (name, value) in extra {
            http.headers_mut().append(name, value.clone());
        }
    }
    http.headers_mut()
        .insert(header::CONTENT_TYPE, media.content_type());
    http
}

/// One response as written: `data` left out of a request that never ran
/// under `application/graphql-response+json`.
#[derive(Serialize)]
struct Body<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a Value>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    errors: &'a [ServerError],
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    extensions: &'a BTreeMap<String, Value>,
}

impl<'a> Body<'a> {
    fn of(media: Media, response: &'a Response) -> Self {
        let without_data = media == Media::GraphqlResponse && is_request_error(response);
        Self {
            data: (!without_data).then_some(&response.data),
            errors: &response.errors,
            extensions: &response.extensions,
        }
    }
}

/// A request refused before it ran.
fn refused(error: ServerError) -> Response {
    Response::from_errors(vec![error])
}

/// An error about the HTTP request itself, coded BAD_USER_INPUT.
fn request_error(message: impl Into<String>) -> ServerError {
    refusal(message, INVALID_REQUEST, None)
}

/// A 400 answer for a body or URL that is not a GraphQL request.
fn bad_request(media: Media, message: String) -> axum::response::Response {
    let mut response = answer(
        media,
        BatchResponse::Single(Response::from_errors(vec![request_error(message)])),
    );
    *response.status_mut() = StatusCode::BAD_REQUEST;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn accept_picks_the_preferred_graphql_media_type() {
        assert_eq!(Media::negotiate(&HeaderMap::new()), Media::Json);
        assert_eq!(Media::negotiate(&accept("*/*")), Media::Json);
        assert_eq!(Media::negotiate(&accept("text/plain")), Media::Json);
        assert_eq!(
            Media::negotiate(&accept(
                "application/graphql-response+json, application/json;q=0.9"
            )),
            Media::GraphqlResponse
        );
        assert_eq!(
            Media::negotiate(&accept(
                "application/graphql-response+json;q=0.5, application/json"
            )),
            Media::Json
        );
        assert_eq!(
            Media::negotiate(&accept(
                "application/json, application/graphql-response+json"
            )),
            Media::GraphqlResponse
        );
    }

    #[test]
    fn a_browser_page_request_wants_html_and_an_api_client_does_not() {
        assert!(wants_html(&accept(
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
        )));
        assert!(!wants_html(&accept("application/json")));
        assert!(!wants_html(&HeaderMap::new()));
    }
}
