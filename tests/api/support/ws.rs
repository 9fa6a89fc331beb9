//! A graphql-transport-ws client over tokio-tungstenite, for tests that
//! speak the protocol frame by frame.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Message, http::HeaderValue};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::TestApp;

/// How long a test waits for the next message before failing.
pub const WAIT: Duration = Duration::from_secs(20);

/// One WebSocket connection to `/graphql/ws`.
pub struct WsClient {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// What the server did next.
#[derive(Debug)]
pub enum Frame {
    Json(Value),
    Closed(Option<u16>, String),
}

impl WsClient {
    /// Connects offering the graphql-transport-ws subprotocol.
    pub async fn connect(app: &TestApp) -> Self {
        Self::connect_with_protocol(app, Some("graphql-transport-ws")).await
    }

    /// Connects offering `protocol` (or none).
    pub async fn connect_with_protocol(app: &TestApp, protocol: Option<&str>) -> Self {
        Self::connect_to(app.address, protocol).await
    }

    /// Connects to the server at `address` offering `protocol` (or none).
    pub async fn connect_to(address: std::net::SocketAddr, protocol: Option<&str>) -> Self {
        let mut request = format!("ws://{address}/graphql/ws")
            .into_client_request()
            .expect("valid URL");
        if let Some(protocol) = protocol {
            request.headers_mut().insert(
                "sec-websocket-protocol",
                HeaderValue::from_str(protocol).expect("header"),
            );
        }
        let (socket, response) = tokio_tungstenite::connect_async(request)
            .await
            .expect("WebSocket handshake");
        if protocol == Some("graphql-transport-ws") {
            assert_eq!(
                response.headers()["sec-websocket-protocol"],
                "graphql-transport-ws"
            );
        }
        Self { socket }
    }

    /// Connects offering `protocols` (comma-separated) and returns the
    /// subprotocol the server's handshake answer selected, if any.
    pub async fn connect_offering(app: &TestApp, protocols: &str) -> (Self, Option<String>) {
        let mut request = format!("ws://{}/graphql/ws", app.address)
            .into_client_request()
            .expect("valid URL");
        request.headers_mut().insert(
            "sec-websocket-protocol",
            HeaderValue::from_str(protocols).expect("header"),
        );
        let (socket, response) = tokio_tungstenite::connect_async(request)
            .await
            .expect("WebSocket handshake");
        let selected = response
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        (Self { socket }, selected)
    }

    /// Connects offering the legacy `graphql-ws` subprotocol
    /// (subscriptions-transport-ws), asserting the server selected it.
    pub async fn connect_legacy(app: &TestApp) -> Self {
        let (client, selected) = Self::connect_offering(app, "graphql-ws").await;
        assert_eq!(selected.as_deref(), Some("graphql-ws"));
        client
    }

    /// Connects with the legacy protocol and completes `connection_init`
    /// with `token` (if any).
    pub async fn connect_legacy_as(app: &TestApp, token: Option<&str>) -> Self {
        let mut client = Self::connect_legacy(app).await;
        let payload = match token {
            Some(token) => json!({ "authorization": format!("Bearer {token}") }),
            None => json!({}),
        };
        client
            .send(json!({ "type": "connection_init", "payload": payload }))
            .await;
        let message = client.next_legacy().await;
        assert_eq!(message["type"], "connection_ack", "{message}");
        client
    }

    /// The next JSON message of a legacy connection, skipping `ka`
    /// keep-alives; fails on a close.
    pub async fn next_legacy(&mut self) -> Value {
        loop {
            let message = self.next_json().await;
            if message["type"] != "ka" {
                return message;
            }
        }
    }

    /// Starts `executionEvents` over the legacy protocol.
    pub async fn start_events(&mut self, id: &str, execution_id: &str, after_seq: i64) {
        self.send_events_operation("start", id, execution_id, after_seq)
            .await;
    }

    /// Every legacy `data` payload's event of operation `id` until its
    /// `complete`, skipping other operations' messages and keep-alives.
    pub async fn legacy_events_until_complete(&mut self, id: &str) -> Vec<Value> {
        self.execution_events_until_complete(id, "data").await
    }

    /// Connects and completes `connection_init` with `token` (if any).
    pub async fn connect_as(app: &TestApp, token: Option<&str>) -> Self {
        Self::connect_as_to(app.address, token).await
    }

    /// As [`WsClient::connect_as`], to the server at `address`.
    pub async fn connect_as_to(address: std::net::SocketAddr, token: Option<&str>) -> Self {
        let mut client = Self::connect_to(address, Some("graphql-transport-ws")).await;
        let payload = match token {
            Some(token) => json!({ "authorization": format!("Bearer {token}") }),
            None => json!({}),
        };
        client
            .send(json!({ "type": "connection_init", "payload": payload }))
            .await;
        assert_eq!(client.next_json().await["type"], "connection_ack");
        client
    }

    pub async fn send(&mut self, message: Value) {
        self.send_text(&message.to_string()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.socket
            .send(Message::Text(text.into()))
            .await
            .expect("send");
    }

    /// The next protocol message or close, within [`WAIT`].
    pub async fn next_frame(&mut self) -> Frame {
        loop {
            let message = tokio::time::timeout(WAIT, self.socket.next())
                .await
                .expect("a frame within the wait");
            match message {
                Some(Ok(Message::Text(text))) => {
                    return Frame::Json(serde_json::from_str(text.as_str()).expect("JSON message"));
                }
                Some(Ok(Message::Close(frame))) => {
                    return match frame {
                        Some(frame) => {
                            Frame::Closed(Some(u16::from(frame.code)), frame.reason.to_string())
                        }
                        None => Frame::Closed(None, String::new()),
                    };
                }
                Some(Ok(_)) => continue,
                Some(Err(err)) => return Frame::Closed(None, err.to_string()),
                None => return Frame::Closed(None, "stream ended".into()),
            }
        }
    }

    /// The next JSON message; fails on a close.
    pub async fn next_json(&mut self) -> Value {
        match self.next_frame().await {
            Frame::Json(value) => value,
            Frame::Closed(code, reason) => {
                panic!("closed with {code:?} {reason:?} while a message was expected")
            }
        }
    }

    /// Asserts the server closes the socket with `code`.
    pub async fn expect_close(&mut self, code: u16) -> String {
        loop {
            match self.next_frame().await {
                Frame::Closed(got, reason) => {
                    assert_eq!(got, Some(code), "closed with {got:?} ({reason})");
                    return reason;
                }
                Frame::Json(value) => {
                    // Messages of operations still running may precede the close.
                    assert_ne!(
                        value["type"], "connection_ack",
                        "acknowledged instead of closing with {code}"
                    );
                }
            }
        }
    }

    /// Subscribes to `executionEvents`.
    pub async fn subscribe_events(&mut self, id: &str, execution_id: &str, after_seq: i64) {
        self.send_events_operation("subscribe", id, execution_id, after_seq)
            .await;
    }

    /// Sends an `executionEvents` operation as a `kind` message.
    async fn send_events_operation(
        &mut self,
        kind: &str,
        id: &str,
        execution_id: &str,
        after_seq: i64,
    ) {
        self.send(json!({
            "type": kind,
            "id": id,
            "payload": {
                "query": EXECUTION_EVENTS,
                "variables": { "executionId": execution_id, "afterSeq": after_seq }
            }
        }))
        .await;
    }

    /// Every `next` payload of operation `id` until its `complete`.
    pub async fn events_until_complete(&mut self, id: &str) -> Vec<Value> {
        self.execution_events_until_complete(id, "next").await
    }

    /// The event of every `data_type` message of operation `id` until its
    /// `complete`; keep-alives and other operations' messages are skipped.
    async fn execution_events_until_complete(&mut self, id: &str, data_type: &str) -> Vec<Value> {
        let mut events = Vec::new();
        loop {
            let message = self.next_legacy().await;
            if message["id"] != id {
                continue;
            }
            match message["type"].as_str() {
                Some(kind) if kind == data_type => {
                    assert!(
                        message["payload"].get("errors").is_none(),
                        "error in stream: {message}"
                    );
                    events.push(message["payload"]["data"]["executionEvents"].clone());
                }
                Some("complete") => return events,
                other => panic!("unexpected {other:?}: {message}"),
            }
        }
    }

    /// Events of operation `id` until (and including) the one with `seq`.
    pub async fn events_until_seq(&mut self, id: &str, seq: i64) -> Vec<Value> {
        let mut events = Vec::new();
        loop {
            let message = self.next_json().await;
            assert_eq!(message["type"], "next", "{message}");
            assert_eq!(message["id"], id);
            let event = message["payload"]["data"]["executionEvents"].clone();
            let this_seq = event["seq"].as_i64().expect("seq");
            events.push(event);
            if this_seq >= seq {
                return events;
            }
        }
    }

    /// Subscribes to `query` with `variables` as operation `id`.
    pub async fn subscribe(&mut self, id: &str, query: &str, variables: Value) {
        self.send(json!({
            "type": "subscribe",
            "id": id,
            "payload": { "query": query, "variables": variables }
        }))
        .await;
    }

    /// `data.<field>` of every `next` of operation `id` until its
    /// `complete`; messages of other operations are skipped, an error fails.
    pub async fn data_until_complete(&mut self, id: &str, field: &str) -> Vec<Value> {
        let mut items = Vec::new();
        loop {
            let message = self.next_json().await;
            if message["id"] != id {
                continue;
            }
            match message["type"].as_str() {
                Some("next") => {
                    assert!(
                        message["payload"].get("errors").is_none(),
                        "error in stream: {message}"
                    );
                    items.push(message["payload"]["data"][field].clone());
                }
                Some("complete") => return items,
                other => panic!("unexpected {other:?}: {message}"),
            }
        }
    }

    /// Sends a ping and returns every message that arrived before its pong.
    pub async fn messages_before_pong(&mut self) -> Vec<Value> {
        self.send(json!({ "type": "ping" })).await;
        let mut messages = Vec::new();
        loop {
            let message = self.next_json().await;
            if message["type"] == "pong" {
                return messages;
            }
            messages.push(message);
        }
    }

    /// Sends a Close frame with `code`, and answers the server's reply:
    /// its close code, or None when the connection ended without one.
    pub async fn close_with(mut self, code: u16) -> Option<u16> {
        self.socket
            .close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
                code: CloseCode::from(code),
                reason: "bye".into(),
            }))
            .await
            .expect("the Close frame is sent");
        // Messages the server sent before it read the Close may come first.
        loop {
            if let Frame::Closed(code, _) = self.next_frame().await {
                return code;
            }
        }
    }

    /// Closes the socket normally.
    pub async fn close(mut self) {
        let _ = self
            .socket
            .close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            }))
            .await;
    }
}

/// The subscription every streaming test uses.
pub const EXECUTION_EVENTS: &str = "subscription($executionId: ID!, $afterSeq: Int) {
  executionEvents(executionId: $executionId, afterSeq: $afterSeq) {
    seq executionId kind executionStatus stepId stepStatus stepOutput occurredAt
    execution { id status output error lastEventSeq }
  }
}";
