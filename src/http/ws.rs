//! `/graphql/ws`: GraphQL subscriptions over the graphql-transport-ws
//! protocol, and the legacy subscriptions-transport-ws protocol (subprotocol
//! `graphql-ws`) for older Apollo clients, served by our own thin layer
//! around `Schema::execute_stream` so that every close code is the
//! protocol's:
//!
//! | situation | close code |
//! |---|---|
//! | no `connection_init` within 10 s (a setting) | 4408 |
//! | a second `connection_init` | 4429 |
//! | `subscribe` before `connection_ack` | 4401 |
//! | credentials in `connection_init` refused, or the session or API key ended later | 4403 |
//! | a subscription's member was removed or their role lowered | 4403 |
//! | `subscribe` with an id already in use | 4409 |
//! | a message that is not JSON or not of the protocol | 4400 |
//! | neither subprotocol offered | 4406 |
//!
//! The legacy protocol names its messages differently (`start`, `stop`,
//! `connection_terminate` from the client; `data`, `error`, `complete`,
//! `connection_error` and `ka` keep-alives from the server) and has no
//! ping; its connections follow the same authorization and lifetime rules
//! and close with the same codes.
//!
//! The access token (or an API key) travels in the `connection_init`
//! payload as `{"authorization": "Bearer …"}`; without one the connection is anonymous
//! and subscriptions that need a user answer UNAUTHENTICATED.
//!
//! When an access change ends one of its subscriptions, the whole socket
//! closes with 4403, as for a revoked credential: the client reconnects,
//! and each subscription it makes again is authorized afresh, at the
//! member's current role (or refused with NOT_FOUND once they are out).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use futures::stream::{AbortHandle, Abortable, BoxStream, SelectAll, SplitSink};
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};

use super::HttpState;
use super::client::device_info;
use super::operation::Operation;
use crate::auth::service::DeviceInfo;
use crate::graphql::context::{RequestContext, Viewer};
use crate::graphql::limits::is_request_error;
use crate::graphql::shared::{self, Delivery};
use crate::orgs::access::{CredentialWatch, Ending};

/// The subprotocol this endpoint prefers.
pub const PROTOCOL: &str = "graphql-transport-ws";
/// The legacy subscriptions-transport-ws subprotocol.
pub const LEGACY_PROTOCOL: &str = "graphql-ws";
/// How often a legacy connection is sent a keep-alive.
const LEGACY_KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Socket buffers sized for small JSON messages: thousands of idle
/// dashboards should not cost a 128 KiB read buffer each.
const READ_BUFFER_BYTES: usize = 1024;
const WRITE_BUFFER_BYTES: usize = 4 * 1024;
/// Largest message a client may send.
const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Messages queued for a slow client before its operations wait.
const OUTBOX_CAPACITY: usize = 256;
/// How long a closing connection may take to send what it has queued.
const CLOSING_TIME: Duration = Duration::from_secs(5);

/// Upgrades to a WebSocket speaking graphql-transport-ws.
pub async fn upgrade(
    State(state): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> axum::response::Response {
    if !origin_allowed(&headers, &state.app.config.settings) {
        return (
            axum::http::StatusCode::FORBIDDEN,
            "this origin may not open a WebSocket here (FLOWPILOT_CORS_ORIGINS)",
        )
            .into_response();
    }
    let ws = ws
        .protocols([PROTOCOL, LEGACY_PROTOCOL])
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .max_message_size(MAX_MESSAGE_BYTES);
    let protocol = ws
        .selected_protocol()
        .and_then(|p| p.to_str().ok())
        .and_then(Protocol::named);
    let device = device_info(peer, &headers, &state.app.config.settings.trusted_proxies);
    // Boxed before the upgrade: the connection's task holds a pointer to
    // it, not copies of the state.
    let connection = protocol.map(|protocol| Box::new(Connection::new(state, device, protocol)));
    ws.on_upgrade(move |socket| async move {
        match connection {
            Some(connection) => connection.run(socket).await,
            None => refuse(socket).await,
        }
    })
}

/// Whether a browser page of the request's `Origin` may open a socket:
/// with CORS origins configured, only those and the API's own public
/// origin may (a cross-site page could otherwise use a visitor's
/// connection); without them, or without an `Origin` (not a browser), any.
fn origin_allowed(headers: &HeaderMap, settings: &crate::config::Settings) -> bool {
    if settings.cors_origins.is_empty() {
        return true;
    }
    let Some(origin) = headers.get(axum::http::header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let public = url::Url::parse(&settings.public_url)
        .map(|url| url.origin().ascii_serialization())
        .unwrap_or_default();
    origin.eq_ignore_ascii_case(&public)
        || settings
            .cors_origins
            .iter()
            .any(|allowed| allowed.eq_ignore_ascii_case(origin))
}

/// Which protocol a connection speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Protocol {
    /// graphql-transport-ws.
    Transport,
    /// subscriptions-transport-ws, named `graphql-ws`.
    Legacy,
}

impl Protocol {
    fn named(name: &str) -> Option<Self> {
        match name {
            PROTOCOL => Some(Self::Transport),
            LEGACY_PROTOCOL => Some(Self::Legacy),
            _ => None,
        }
    }

    /// A client message, read in this protocol's names.
    fn parse(self, text: &str) -> Result<ClientMessage, serde_json::Error> {
        match self {
            Self::Transport => serde_json::from_str(text),
            Self::Legacy => Ok(match serde_json::from_str::<LegacyClientMessage>(text)? {
                LegacyClientMessage::ConnectionInit { payload } => {
                    ClientMessage::ConnectionInit { payload }
                }
                LegacyClientMessage::Start { id, payload } => {
                    ClientMessage::Subscribe { id, payload }
                }
                LegacyClientMessage::Stop { id } => ClientMessage::Complete { id },
                LegacyClientMessage::ConnectionTerminate => ClientMessage::Terminate,
            }),
        }
    }

    /// The name of a server message in this protocol.
    fn name(self, message: ServerMessage) -> &'static str {
        match (self, message) {
            (Self::Transport, ServerMessage::Next) => "next",
            (Self::Legacy, ServerMessage::Next) => "data",
            (_, ServerMessage::Error) => "error",
            (_, ServerMessage::Complete) => "complete",
        }
    }
}

/// Server messages whose names differ between the protocols.
#[derive(Clone, Copy)]
enum ServerMessage {
    Next,
    Error,
    Complete,
}

/// Messages a legacy client sends.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum LegacyClientMessage {
    ConnectionInit {
        #[serde(default)]
        payload: Option<Value>,
    },
    Start {
        id: String,
        payload: Operation,
    },
    Stop {
        id: String,
    },
    ConnectionTerminate,
}

/// Closes a socket that offered neither subprotocol.
async fn refuse(mut socket: WebSocket) {
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code: 4406,
            reason: Utf8Bytes::from_static("Subprotocol not acceptable"),
        })))
        .await;
}

/// Messages a client sends.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClientMessage {
    ConnectionInit {
        #[serde(default)]
        payload: Option<Value>,
    },
    Ping {
        #[serde(default)]
        #[allow(dead_code)]
        payload: Option<Value>,
    },
    Pong {
        #[serde(default)]
        #[allow(dead_code)]
        payload: Option<Value>,
    },
    Subscribe {
        id: String,
        payload: Operation,
    },
    Complete {
        id: String,
    },
    /// The legacy protocol's `connection_terminate`.
    #[serde(skip)]
    Terminate,
}

/// An operation that ran to its end (not one the client completed).
struct Finished {
    id: String,
    generation: u64,
    end: End,
}

/// What an operation's stream yields to its connection.
enum Outgoing {
    /// A message for the client.
    Send(Message),
    /// The operation ended; the connection frees its id and says so.
    Finished(Finished),
}

/// How an operation ended.
enum End {
    /// It completed.
    Completed,
    /// It failed before executing, with these errors.
    Refused(Value),
    /// Its member's access changed: the socket closes with 4403.
    AccessChanged,
}

/// What the read loop does after a message.
enum Next {
    Continue,
    Close(u16, String),
}

/// One socket, served by one task: it reads the client's messages, polls
/// the running operations' streams and writes what they yield, so an idle
/// subscription costs its stream and a share of the socket, not tasks and
/// channels of its own.
struct Connection {
    state: HttpState,
    device: DeviceInfo,
    protocol: Protocol,
    init_received: bool,
    /// Set once `connection_ack` has been sent.
    viewer: Option<Viewer>,
    /// Running operations by id, with a generation to tell reuses apart.
    operations: HashMap<String, (u64, AbortHandle)>,
    generation: u64,
    /// The running operations' streams.
    running: SelectAll<Abortable<BoxStream<'static, Outgoing>>>,
    /// Messages not yet handed to the socket, in order.
    outbox: VecDeque<Message>,
    /// Messages were queued or handed to the socket and not yet flushed.
    unflushed: bool,
}

impl Connection {
    fn new(state: HttpState, device: DeviceInfo, protocol: Protocol) -> Self {
        Self {
            state,
            device,
            protocol,
            init_received: false,
            viewer: None,
            operations: HashMap::new(),
            generation: 0,
            running: SelectAll::new(),
            outbox: VecDeque::new(),
            unflushed: false,
        }
    }

    async fn run(mut self: Box<Self>, socket: WebSocket) {
        let (mut sink, mut stream) = socket.split();
        let mut stopping = self.state.shutting_down.clone();
        let init_timeout = Duration::from_secs(self.state.app.config.settings.ws_init_timeout_secs);
        // Boxed, and freed once the client has sent `connection_init`.
        let mut init_deadline = Some(Box::pin(tokio::time::sleep(init_timeout)));

        // Set once the connection is signed in: the end of its session or
        // API key closes it.
        let mut session: Option<CredentialWatch> = None;
        let mut keep_alive = (self.protocol == Protocol::Legacy)
            .then(|| Box::new(tokio::time::interval(LEGACY_KEEP_ALIVE)));
        let close = loop {
            if session.is_none()
                && let Some(credential) = self.viewer.as_ref().and_then(Viewer::credential_id)
            {
                session = Some(self.state.app.revocations.watch_credential(credential));
            }
            if self.init_received {
                init_deadline = None;
            }
            let room = self.outbox.len() < OUTBOX_CAPACITY;
            tokio::select! {
                ending = session_ended(session.as_mut()), if session.is_some() => {
                    break Some((4403, credential_ended(self.viewer.as_ref(), ending).to_owned()));
                }
                () = deadline(init_deadline.as_mut()), if init_deadline.is_some() => {
                    break Some((4408, "Connection initialisation timeout".to_owned()));
                }
                _ = tick(keep_alive.as_deref_mut()), if self.viewer.is_some() => {
                    self.queue(json!({ "type": "ka" }));
                }
                written = write_out(&mut sink, &mut self.outbox), if self.unflushed => {
                    if written.is_err() {
                        break None;
                    }
                    self.unflushed = false;
                    // An idle socket keeps no queue.
                    self.outbox = VecDeque::new();
                }
                Some(outgoing) = self.running.next(), if room && !self.running.is_empty() => {
                    match outgoing {
                        Outgoing::Send(message) => self.queue_message(message),
                        Outgoing::Finished(done) => {
                            if self.operations.get(&done.id).is_some_and(|(g, _)| *g == done.generation) {
                                self.operations.remove(&done.id);
                                let message = match done.end {
                                    End::Refused(errors) => json!({ "type": self.protocol.name(ServerMessage::Error), "id": done.id, "payload": errors }),
                                    End::Completed => json!({ "type": self.protocol.name(ServerMessage::Complete), "id": done.id }),
                                    End::AccessChanged => break Some((4403, "access changed".to_owned())),
                                };
                                self.queue(message);
                            }
                        }
                    }
                }
                _ = stopping.changed() => break Some((1001, "Server shutting down".to_owned())),
                frame = stream.next() => match frame {
                    Some(Ok(Message::Text(text))) => {
                        // Boxed: what handling a message awaits (signing in
                        // reads the database) is held only while it runs,
                        // not for the socket's whole life.
                        let handled = Box::pin(self.handle(text.as_str())).await;
                        if let Next::Close(code, reason) = handled {
                            break Some((code, reason));
                        }
                    }
                    Some(Ok(Message::Binary(_))) => break Some((4400, "Binary messages are not part of the protocol".to_owned())),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break None,
                },
            }
        };
        for (_, (_, handle)) in self.operations.drain() {
            handle.abort();
        }
        self.running = SelectAll::new();
        if let Some((code, reason)) = close {
            let reason: String = reason.chars().take(120).collect();
            self.queue_message(Message::Close(Some(CloseFrame {
                code,
                reason: Utf8Bytes::from(reason),
            })));
        }
        // A client's Close frame is answered with the same code: the
        // WebSocket layer queues that answer when it reads the frame, and
        // closing the sink sends it (RFC 6455 §5.5.1).
        let _ = tokio::time::timeout(CLOSING_TIME, async {
            if write_out(&mut sink, &mut self.outbox).await.is_ok() {
                let _ = sink.close().await;
            }
        })
        .await;
    }

    /// Queues a message built as JSON.
    fn queue(&mut self, message: Value) {
        self.queue_message(Message::Text(Utf8Bytes::from(message.to_string())));
    }

    fn queue_message(&mut self, message: Message) {
        self.outbox.push_back(message);
        self.unflushed = true;
    }

    async fn handle(&mut self, text: &str) -> Next {
        let message = match self.protocol.parse(text) {
            Ok(message) => message,
            Err(err) => return Next::Close(4400, format!("Invalid message received: {err}")),
        };
        match message {
            ClientMessage::ConnectionInit { payload } => {
                if self.init_received {
                    return Next::Close(4429, "Too many initialisation requests".to_owned());
                }
                self.init_received = true;
                let authorization = payload.as_ref().and_then(authorization_of);
                let viewer =
                    Viewer::from_authorization(&self.state.app, authorization.as_deref()).await;
                // An expired token closes with a code graphql-ws retries (its
                // `connectionParams` can refresh first); credentials that
                // will never work close 4403, which it does not.
                let refusal = match &viewer {
                    Viewer::Expired => Some((4419, "token expired")),
                    Viewer::Rejected(reason) => Some((4403, *reason)),
                    _ => None,
                };
                if let Some((code, reason)) = refusal {
                    if self.protocol == Protocol::Legacy {
                        let refused =
                            json!({ "type": "connection_error", "payload": { "message": reason } });
                        self.queue(refused);
                    }
                    return Next::Close(code, reason.to_owned());
                }
                // Not the client's fault, and passing (the database is
                // away): 1013 asks clients to try again later, which
                // graphql-ws does; 1011 would stop it for good.
                if let Viewer::Unavailable = viewer {
                    return Next::Close(1013, "Try again later".to_owned());
                }
                self.viewer = Some(viewer);
                self.queue(json!({ "type": "connection_ack" }));
                Next::Continue
            }
            ClientMessage::Ping { .. } => {
                self.queue(json!({ "type": "pong" }));
                Next::Continue
            }
            ClientMessage::Pong { .. } => Next::Continue,
            ClientMessage::Subscribe { id, payload } => {
                let Some(viewer) = self.viewer.clone() else {
                    return Next::Close(4401, "Unauthorized".to_owned());
                };
                if self.operations.contains_key(&id) {
                    return Next::Close(4409, format!("Subscriber for {id} already exists"));
                }
                self.generation += 1;
                let (operation, handle) =
                    futures::stream::abortable(self.start(id.clone(), payload, viewer));
                self.running.push(operation);
                self.operations.insert(id, (self.generation, handle));
                Next::Continue
            }
            ClientMessage::Complete { id } => {
                if let Some((_, handle)) = self.operations.remove(&id) {
                    handle.abort();
                }
                Next::Continue
            }
            ClientMessage::Terminate => Next::Close(1000, "Normal closure".to_owned()),
        }
    }

    /// One operation's stream: `next` for each result, then its end
    /// (`complete`, or `error` when it fails before executing).
    fn start(
        &self,
        id: String,
        payload: Operation,
        viewer: Viewer,
    ) -> BoxStream<'static, Outgoing> {
        let persisted = self.state.persisted.clone();
        let context: Arc<RequestContext> =
            RequestContext::new(self.state.app.clone(), viewer, self.device.clone());
        let access = context.access_ended.clone();
        let schema = self.state.schema.clone();
        let generation = self.generation;
        let next = self.protocol.name(ServerMessage::Next);
        // Boxed, as a message's handling is: an idle subscription holds its
        // stream, not the request and the futures that opened it.
        let opening = Box::pin(async move {
            let mut request = payload.into_request();
            let registration = persisted.resolve(&mut request).await?;
            let deliveries = shared::subscribe(schema, context, request).await;
            Ok::<_, async_graphql::ServerError>((registration, deliveries, persisted))
        });
        let finished = move |id, end| {
            Outgoing::Finished(Finished {
                id,
                generation,
                end,
            })
        };
        async_stream::stream! {
            let (mut registration, mut deliveries, persisted) = match opening.await {
                Ok(opened) => opened,
                Err(error) => {
                    yield finished(id, End::Refused(json!([error])));
                    return;
                }
            };
            let mut first = true;
            // The connection sends the final `complete` or `error` after
            // freeing the id, so a client may reuse the id as soon as it
            // sees either.
            while let Some(delivery) = deliveries.next().await {
                let message = match delivery {
                    Delivery::Response(response) => {
                        if first && is_request_error(&response) {
                            yield finished(id, End::Refused(json!(response.errors)));
                            return;
                        }
                        if access.get().is_some() {
                            yield finished(id, End::AccessChanged);
                            return;
                        }
                        json!({ "type": next, "id": id, "payload": response }).to_string()
                    }
                    Delivery::Rendered(payload) => next_message(next, &id, &payload),
                    Delivery::AccessChanged(_) => {
                        yield finished(id, End::AccessChanged);
                        return;
                    }
                };
                if let Some(registration) = registration.take() {
                    Box::pin(persisted.register(registration)).await;
                }
                first = false;
                yield Outgoing::Send(Message::Text(Utf8Bytes::from(message)));
            }
            yield finished(id, End::Completed);
        }
        .boxed()
    }
}

/// A `next` message around a payload rendered once for many subscribers.
fn next_message(kind: &str, id: &str, payload: &str) -> String {
    let id = serde_json::to_string(id).unwrap_or_default();
    let mut message = String::with_capacity(payload.len() + id.len() + 40);
    message.push_str(r#"{"type":""#);
    message.push_str(kind);
    message.push_str(r#"","id":"#);
    message.push_str(&id);
    message.push_str(r#","payload":"#);
    message.push_str(payload);
    message.push('}');
    message
}

/// `payload.authorization` (any case), as sent in `connection_init`.
fn authorization_of(payload: &Value) -> Option<String> {
    payload
        .as_object()?
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case("authorization"))
        .and_then(|(_, value)| value.as_str())
        .map(str::to_owned)
}

/// Hands the queued messages to the socket in order and flushes them.
/// Cancel-safe: a message leaves the queue only when the socket has
/// taken it.
async fn write_out(
    sink: &mut SplitSink<WebSocket, Message>,
    outbox: &mut VecDeque<Message>,
) -> Result<(), axum::Error> {
    std::future::poll_fn(|cx| {
        while !outbox.is_empty() {
            std::task::ready!(sink.poll_ready_unpin(cx))?;
            if let Some(message) = outbox.pop_front() {
                sink.start_send_unpin(message)?;
            }
        }
        sink.poll_flush_unpin(cx)
    })
    .await
}

/// When the deadline passes; never without one.
async fn deadline(deadline: Option<&mut Pin<Box<tokio::time::Sleep>>>) {
    match deadline {
        Some(deadline) => deadline.await,
        None => std::future::pending().await,
    }
}

/// The next keep-alive tick; never without a keep-alive.
async fn tick(keep_alive: Option<&mut tokio::time::Interval>) {
    match keep_alive {
        Some(keep_alive) => {
            keep_alive.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Resolves when the watched session or key ends; never without one.
async fn session_ended(session: Option<&mut CredentialWatch>) -> Ending {
    match session {
        Some(session) => session.ended().await,
        None => std::future::pending().await,
    }
}

/// The close reason of a connection whose session or key ended.
fn credential_ended(viewer: Option<&Viewer>, ending: Ending) -> &'static str {
    let key = matches!(viewer, Some(Viewer::ApiKey(_)));
    match (key, ending) {
        (false, Ending::Expired) => "session expired",
        (true, Ending::Expired) => "API key expired",
        (false, _) => "session revoked",
        (true, _) => "API key revoked",
    }
}
