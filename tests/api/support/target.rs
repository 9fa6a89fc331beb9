//! A small HTTP server for HTTP steps to call, recording every request.
//!
//! - `/echo`: 200 with `{"method", "headers", "body"}` of the request
//! - `/status/{code}`: that status with the text `status {code}`
//! - `/slow/{ms}`: 200 with `{"slept": ms}` after `ms` milliseconds
//! - `/flaky/{failures}`: 503 for the first `failures` calls, then 200
//! - `/bytes/{n}`: `n` bytes of text
//! - `/redirect?to=URL[&status=CODE]`: a redirect to URL (302 unless
//!   another status is given)
//! - `/nul`: JSON whose text holds a NUL character

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

/// One request the target received.
#[derive(Clone, Debug)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: String,
}

#[derive(Clone, Default)]
struct Shared {
    received: Arc<Mutex<Vec<Received>>>,
    flaky_calls: Arc<Mutex<u32>>,
}

pub struct Target {
    pub address: SocketAddr,
    shared: Shared,
    server: JoinHandle<()>,
}

impl Target {
    /// Starts the target on 127.0.0.1 on a free port.
    pub async fn start() -> Self {
        let shared = Shared::default();
        let router = Router::new()
            .route("/echo", any(echo))
            .route("/status/{code}", any(status))
            .route("/slow/{ms}", any(slow))
            .route("/flaky/{failures}", any(flaky))
            .route("/bytes/{n}", any(bytes))
            .route("/redirect", any(redirect))
            .route("/nul", any(nul))
            .layer(middleware::from_fn_with_state(shared.clone(), record))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        Self {
            address,
            shared,
            server,
        }
    }

    /// `http://127.0.0.1:{port}{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// Every request received so far.
    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    /// Waits until a request for `path` has arrived.
    pub async fn wait_for(&self, path: &str) {
        tokio::time::timeout(Duration::from_secs(20), async {
            while !self.received().iter().any(|r| r.path == path) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no request for {path} arrived"));
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Records every request before its handler sees it.
async fn record(State(shared): State<Shared>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    let headers = parts
        .headers
        .iter()
        .map(|(name, value)| {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            (name.as_str().to_owned(), value)
        })
        .collect();
    shared.received.lock().unwrap().push(Received {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    next.run(Request::from_parts(parts, Body::from(body))).await
}

async fn echo(State(shared): State<Shared>) -> Response {
    let received = shared.received.lock().unwrap().last().cloned().unwrap();
    let body: Value =
        serde_json::from_str(&received.body).unwrap_or(Value::String(received.body.clone()));
    let answer = json!({ "method": received.method, "headers": received.headers, "body": body });
    (
        [(header::SET_COOKIE, "session=secret-cookie")],
        axum::Json(answer),
    )
        .into_response()
}

async fn status(Path(code): Path<u16>) -> Response {
    let status = StatusCode::from_u16(code).unwrap();
    (status, format!("status {code}")).into_response()
}

async fn slow(Path(ms): Path<u64>) -> Response {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    axum::Json(json!({ "slept": ms })).into_response()
}

async fn flaky(State(shared): State<Shared>, Path(failures): Path<u32>) -> Response {
    let mut calls = shared.flaky_calls.lock().unwrap();
    *calls += 1;
    if *calls <= failures {
        (StatusCode::SERVICE_UNAVAILABLE, "try again").into_response()
    } else {
        axum::Json(json!({ "calls": *calls })).into_response()
    }
}

async fn bytes(Path(n): Path<usize>) -> Response {
    "x".repeat(n).into_response()
}

async fn redirect(Query(query): Query<HashMap<String, String>>) -> Response {
    let status = query
        .get("status")
        .and_then(|code| code.parse().ok())
        .and_then(|code| StatusCode::from_u16(code).ok())
        .unwrap_or(StatusCode::FOUND);
    (status, [(header::LOCATION, query["to"].clone())]).into_response()
}

async fn nul() -> Response {
    axum::Json(json!({ "text": "a\u{0}b", "a\u{0}key": 1 })).into_response()
}
