//! `POST /graphql/stream`: GraphQL subscriptions (and queries) over
//! Server-Sent Events, for networks that block WebSockets. It speaks the
//! graphql-sse protocol's distinct connections mode: one request per
//! operation, a JSON body `{query, variables, operationName}`, the bearer
//! token in `Authorization`; each result is an event `next` whose data is
//! the JSON result, and `complete` ends the stream.
//!
//! A stream lives as long as its credential: when the session ends or the
//! API key is revoked, it sends a FORBIDDEN result and completes. It also
//! completes when the server shuts down.

use std::convert::Infallible;
use std::net::SocketAddr;

use async_graphql::{Response, ServerError};
use axum::Json;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response as HttpResponse};
use futures::{Stream, StreamExt};
use serde_json::json;

use super::HttpState;
use super::client::device_info;
use super::operation::Operation;
use crate::auth::tokens::ACCESS_TOKEN_EXPIRED;
use crate::graphql::context::{RequestContext, Viewer};
use crate::graphql::limits::is_request_error;
use crate::graphql::persisted::names_persisted_query;
use crate::graphql::shared::{self, Delivery};

/// Runs the operation and streams its results as events.
pub async fn stream(
    State(state): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Json<Operation>, axum::extract::rejection::JsonRejection>,
) -> HttpResponse {
    let Ok(Json(body)) = body else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "BAD_USER_INPUT",
            "the body is not a GraphQL request",
        );
    };
    if body.query.trim().is_empty() && !names_persisted_query(body.extensions.as_ref()) {
        return refuse(
            StatusCode::BAD_REQUEST,
            "BAD_USER_INPUT",
            "the request has no query",
        );
    }
    let authorization = headers
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or_default());
    let viewer = Viewer::from_authorization(&state.app, authorization).await;
    match viewer {
        // Refresh and retry: 401 with the challenge RFC 6750 names.
        Viewer::Expired => {
            let mut refused = refuse(
                StatusCode::UNAUTHORIZED,
                "UNAUTHENTICATED",
                ACCESS_TOKEN_EXPIRED,
            );
            refused.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(
                    "Bearer error=\"invalid_token\", error_description=\"access token expired\"",
                ),
            );
            return refused;
        }
        // Credentials that will never work: retrying will not help.
        Viewer::Rejected(message) => {
            return refuse(StatusCode::FORBIDDEN, "UNAUTHENTICATED", message);
        }
        Viewer::Unavailable => {
            return refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "INTERNAL",
                "internal error",
            );
        }
        Viewer::Anonymous | Viewer::User(_) | Viewer::ApiKey(_) => {}
    }
    let mut request = body.into_request();
    let registration = match state.persisted.resolve(&mut request).await {
        Ok(registration) => registration,
        Err(error) => {
            let results = futures::stream::once(async move {
                Delivery::Response(Box::new(Response::from_errors(vec![error])))
            });
            return Sse::new(events(results, None, std::future::pending()))
                .keep_alive(KeepAlive::default())
                .into_response();
        }
    };
    let credential = viewer
        .credential_id()
        .map(|id| state.app.revocations.watch_credential(id));
    let device = device_info(peer, &headers, &state.app.config.settings.trusted_proxies);
    let context = RequestContext::new(state.app.clone(), viewer, device);
    let persisted = state.persisted.clone();
    let mut registration = registration;
    let deliveries = shared::subscribe(state.schema.clone(), context, request).await;
    let results = deliveries.then(move |delivery| {
        let registration = registration
            .take()
            .filter(|_| !matches!(&delivery, Delivery::Response(r) if is_request_error(r)));
        let persisted = persisted.clone();
        async move {
            if let Some(registration) = registration {
                persisted.register(registration).await;
            }
            delivery
        }
    });
    let mut stopping = state.shutting_down.clone();
    let events = events(results, credential, async move {
        let _ = stopping.wait_for(|stopping| *stopping).await;
    });
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// `next` per result, then `complete`; a FORBIDDEN result first when the
/// credential ends, and nothing more once `stop` resolves.
fn events(
    results: impl Stream<Item = Delivery> + Send + 'static,
    credential: Option<crate::orgs::access::CredentialWatch>,
    stop: impl Future<Output = ()> + Send + 'static,
) -> impl Stream<Item = Result<Event, Infallible>> {
    async_stream::stream! {
        let mut results = std::pin::pin!(results);
        let mut credential = credential;
        let mut stop = std::pin::pin!(stop);
        loop {
            let ended = async {
                match credential.as_mut() {
                    Some(watch) => watch.ended().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                result = results.next() => match result {
                    Some(Delivery::Response(result)) => yield Ok(next(&result)),
                    Some(Delivery::Rendered(payload)) => yield Ok(Event::default().event("next").data(&*payload)),
                    Some(Delivery::AccessChanged(payload)) => {
                        yield Ok(Event::default().event("next").data(&*payload));
                        break;
                    }
                    None => break,
                },
                _ = ended => {
                    let mut ended = ServerError::new("your session or API key has ended", None);
                    ended.extensions.get_or_insert_with(Default::default).set("code", "FORBIDDEN");
                    yield Ok(next(&Response::from_errors(vec![ended])));
                    break;
                }
                () = &mut stop => break,
            }
        }
        yield Ok(Event::default().event("complete").data(""));
    }
}

fn next(result: &Response) -> Event {
    Event::default()
        .event("next")
        .json_data(result)
        .unwrap_or_else(|_| Event::default().event("next").data("{}"))
}

fn refuse(status: StatusCode, code: &str, message: &str) -> HttpResponse {
    let body = json!({ "errors": [{ "message": message, "extensions": { "code": code } }] });
    (status, Json(body)).into_response()
}
