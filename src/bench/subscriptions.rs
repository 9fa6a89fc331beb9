//! The subscription figures of `flowpilot bench`: what an idle
//! subscription costs the server, and how long an event takes from its
//! commit to many subscribers.
//!
//! The subscribers are another process (`flowpilot bench-subscribers`, this
//! binary again), so the server's resident memory is the bench process's
//! own and the two do not share a runtime. Each subscriber has its own
//! WebSocket connection, signed in with the bench owner's token, and
//! subscribes to `executionEvents` of one queued execution of a workflow of
//! DELAY steps. Once every subscriber has the execution's first event, the
//! bench reads its resident memory again (the difference, per subscriber,
//! is what an idle subscription with its connection costs) and starts the
//! workers: each later event's `occurredAt`, stamped in the transaction
//! that commits it, is compared with the time it arrives. With Redis
//! (`--redis`), the same is measured across two instances: half the
//! subscribers connect to a second instance in this process, with no
//! workers, which hears of the events through Redis.

use std::io::Write;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use uuid::Uuid;

use super::{Queuer, failed, line_workflow, percentile};
use crate::clock::Clock;
use crate::engine::Engine;
use crate::engine::rendering::status_bytes;
use crate::graphql;
use crate::http;
use crate::orgs::principal::Principal;
use crate::state::AppState;
use crate::workflows::definition::StepKind;

/// DELAY steps of the followed workflow, and each one's pause: long
/// enough that one event's fan-out is over before the next commits, so
/// each figure is one event's way to every subscriber.
pub const STEPS: usize = 10;
const STEP_MS: u64 = 250;

/// Where the subscribers' token travels, so that it is not on a command line.
pub const TOKEN_VARIABLE: &str = "FLOWPILOT_BENCH_TOKEN";

/// How long subscribing or following may take before the bench gives up.
const PATIENCE: Duration = Duration::from_secs(600);

const SUBSCRIPTION: &str =
    "subscription Follow($id: ID!) { executionEvents(executionId: $id) { seq occurredAt } }";

/// One measurement: `subscribers` on `instances`.
#[derive(Clone, Debug)]
pub struct SubscriptionFigures {
    pub subscribers: usize,
    pub instances: usize,
    /// The heap this process holds for an idle subscriber, in KiB (known
    /// with glibc's allocator only).
    pub idle_heap_kib: Option<f64>,
    /// The process's resident memory grown by all subscribing, per
    /// subscriber, in KiB; memory freed by an earlier measurement is used
    /// again, so only the first measurement of a process shows it.
    pub idle_rss_kib: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Events received in all.
    pub deliveries: usize,
}

/// Who subscribes, to what.
pub struct Followed {
    pub state: AppState,
    pub owner: Principal,
    pub organization_id: Uuid,
    pub access_token: String,
}

/// Measures each count of subscribers on one instance, and on two when the
/// state has Redis.
pub async fn measure(
    followed: &Followed,
    counts: &[usize],
) -> anyhow::Result<Vec<SubscriptionFigures>> {
    let limit = raise_open_files();
    let workflow_id = delays(followed).await?;
    let mut figures = Vec::new();
    for &subscribers in counts {
        let needed = subscribers as u64 + 512;
        anyhow::ensure!(
            limit >= needed,
            "{subscribers} subscribers need {needed} open files here; the limit is {limit}: raise the hard limit (`ulimit -Hn`) and run again"
        );
        let most = if followed.state.redis.is_some() { 2 } else { 1 };
        for instances in 1..=most {
            let measured = once(followed, workflow_id, subscribers, instances).await?;
            eprintln!(
                "bench:   {subscribers} subscribers on {instances} instance(s): {} of heap ({:.1} KiB resident) each idle, occurredAt → client p50 {:.1} ms, p99 {:.1} ms ({} events)",
                kib(measured.idle_heap_kib),
                measured.idle_rss_kib,
                measured.p50_ms,
                measured.p99_ms,
                measured.deliveries
            );
            figures.push(measured);
        }
    }
    Ok(figures)
}

/// The workflow the subscribers follow: [`STEPS`] DELAY steps in a line.
async fn delays(followed: &Followed) -> anyhow::Result<Uuid> {
    let line = (StepKind::Delay, |_| json!({ "ms": STEP_MS }));
    line_workflow(
        &followed.state,
        followed.owner,
        followed.organization_id,
        "Followed",
        STEPS,
        line,
    )
    .await
    .map_err(failed)
}

/// One run followed by `subscribers` spread over `instances`.
async fn once(
    followed: &Followed,
    workflow_id: Uuid,
    subscribers: usize,
    instances: usize,
) -> anyhow::Result<SubscriptionFigures> {
    let mut servers = vec![Server::start(followed.state.clone()).await?];
    if instances > 1 {
        let config = followed.state.config.as_ref().clone();
        let second = AppState::build(config, Clock::system()).await?;
        servers.push(Server::start(second).await?);
    }
    let queuer = Queuer {
        state: followed.state.clone(),
        owner: followed.owner,
    };
    let execution = queuer.run(workflow_id).await?;
    let urls: Vec<String> = servers.iter().map(|server| server.url.clone()).collect();
    let (heap_before, rss_before) = (heap_in_use(), resident()?);
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .arg("bench-subscribers")
        .args(["--execution", &execution.to_string()])
        .args(["--count", &subscribers.to_string()])
        .args(["--urls", &urls.join(",")])
        .env(TOKEN_VARIABLE, &followed.access_token)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting the subscribers")?;
    let mut lines = BufReader::new(child.stdout.take().context("the subscribers' output")?).lines();
    let mut next_line = async || -> anyhow::Result<String> {
        tokio::time::timeout(PATIENCE, lines.next_line())
            .await
            .context("the subscribers took too long")??
            .context("the subscribers stopped")
    };
    anyhow::ensure!(
        next_line().await? == "ready",
        "the subscribers did not get ready"
    );
    // Let the last subscriptions' first deliveries settle.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (heap_after, rss_after) = (heap_in_use(), resident()?);
    let engine = Engine::start(&followed.state).await;
    let summary = next_line().await;
    engine.shutdown().await;
    for server in servers {
        server.stop().await;
    }
    let summary = summary?;
    let _ = child.wait().await;
    let figures: Vec<&str> = summary.split_whitespace().collect();
    let [p50, p99, deliveries] = figures.as_slice() else {
        anyhow::bail!("the subscribers said {summary:?}");
    };
    Ok(SubscriptionFigures {
        subscribers,
        instances,
        idle_heap_kib: heap_before.zip(heap_after).map(|(before, after)| {
            after.saturating_sub(before) as f64 / subscribers as f64 / 1024.0
        }),
        idle_rss_kib: rss_after.saturating_sub(rss_before) as f64 / subscribers as f64 / 1024.0,
        p50_ms: p50.parse()?,
        p99_ms: p99.parse()?,
        deliveries: deliveries.parse()?,
    })
}

/// `KiB` to a tenth, or a dash when unknown.
pub fn kib(value: Option<f64>) -> String {
    value.map_or_else(|| "—".to_owned(), |kib| format!("{kib:.1} KiB"))
}

fn resident() -> anyhow::Result<usize> {
    status_bytes("VmRSS:").context("reading the resident memory")
}

/// Bytes the allocator has handed out and not had back, in all its arenas
/// (glibc's `mallinfo2`): unlike the resident size, not lowered by memory
/// an earlier measurement freed and this one reuses.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn heap_in_use() -> Option<usize> {
    // SAFETY: mallinfo2 only reads the allocator's statistics.
    let info = unsafe { libc::mallinfo2() };
    Some(info.uordblks + info.hblkhd)
}

/// Other allocators keep no such count that this can read.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn heap_in_use() -> Option<usize> {
    None
}

/// The full router of an instance, served on a loopback port.
struct Server {
    url: String,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(state: AppState) -> anyhow::Result<Self> {
        let (stop, stopping) = tokio::sync::watch::channel(false);
        let schema = graphql::build_schema(&state.config.settings);
        let router = http::router(state, schema, stopping.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("ws://{}/graphql/ws", listener.local_addr()?);
        let mut stopped = stopping;
        let task = tokio::spawn(async move {
            axum::serve(
                listener,
                router.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            })
            .await
        });
        Ok(Self { url, stop, task })
    }

    /// Closes its sockets (1001) and stops serving.
    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
    }
}

/// Raises this process's open-files limit to its hard limit: the new limit.
fn raise_open_files() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct we pass; setrlimit reads it and
    // changes only this process's limit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 0;
        }
        let current = limit.rlim_cur;
        limit.rlim_cur = limit.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
            return current;
        }
    }
    limit.rlim_cur
}

/// `flowpilot bench-subscribers`: `count` subscribers, each on its own
/// connection to one of `urls` in turn, follow `execution`. Prints `ready`
/// once each has the first event, then, when every subscription has
/// completed, `p50 p99 deliveries` of the later events' `occurredAt` →
/// arrival in ms.
pub async fn subscribers(urls: Vec<String>, execution: Uuid, count: usize) -> anyhow::Result<()> {
    let token = std::env::var(TOKEN_VARIABLE).context("the subscribers' token")?;
    let limit = raise_open_files();
    anyhow::ensure!(
        limit >= count as u64 + 64,
        "{count} subscribers need more open files than the limit ({limit})"
    );
    let connecting = Arc::new(tokio::sync::Semaphore::new(64));
    let (ready, mut readied) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut followers = tokio::task::JoinSet::new();
    for n in 0..count {
        let url = urls[n % urls.len()].clone();
        let (token, connecting, ready) = (token.clone(), connecting.clone(), ready.clone());
        followers.spawn(async move {
            let permit = connecting.acquire_owned().await?;
            let mut socket = subscribe(&url, &token, execution).await?;
            drop(permit);
            let _ = ready.send(());
            let mut latencies = Vec::new();
            while let Some(message) = socket.next().await {
                let Message::Text(text) = message? else {
                    continue;
                };
                let message: Value = serde_json::from_str(text.as_str())?;
                match message["type"].as_str() {
                    Some("next") => {
                        let at = &message["payload"]["data"]["executionEvents"]["occurredAt"];
                        let at: DateTime<Utc> = at.as_str().context("occurredAt")?.parse()?;
                        latencies.push((Utc::now() - at).as_seconds_f64() * 1000.0);
                    }
                    Some("complete") => return anyhow::Ok(latencies),
                    _ => anyhow::bail!("the server sent {message}"),
                }
            }
            anyhow::bail!("the connection ended before the subscription completed")
        });
    }
    drop(ready);
    for _ in 0..count {
        tokio::time::timeout(PATIENCE, readied.recv())
            .await
            .context("subscribing took too long")?
            .context("a subscriber failed to subscribe")?;
    }
    println!("ready");
    std::io::stdout().flush()?;
    let mut latencies = Vec::new();
    while let Some(done) = followers.join_next().await {
        latencies.extend(done??);
    }
    latencies.sort_by(f64::total_cmp);
    println!(
        "{:.2} {:.2} {}",
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        latencies.len()
    );
    Ok(())
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A connection to `url`, signed in, subscribed to `execution`'s events,
/// with the first event read.
async fn subscribe(url: &str, token: &str, execution: Uuid) -> anyhow::Result<Socket> {
    let mut request = url.into_client_request()?;
    request.headers_mut().insert(
        "sec-websocket-protocol",
        axum::http::HeaderValue::from_static("graphql-transport-ws"),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await?;
    let init = json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {token}") } });
    socket.send(Message::text(init.to_string())).await?;
    expect(&mut socket, "connection_ack").await?;
    let subscribe = json!({
        "type": "subscribe",
        "id": "1",
        "payload": { "query": SUBSCRIPTION, "variables": { "id": execution } },
    });
    socket.send(Message::text(subscribe.to_string())).await?;
    expect(&mut socket, "next").await?;
    Ok(socket)
}

/// Reads the next message, which must be of `kind`.
async fn expect(socket: &mut Socket, kind: &str) -> anyhow::Result<()> {
    loop {
        let message = socket.next().await.context("the connection ended")??;
        if let Message::Text(text) = message {
            let message: Value = serde_json::from_str(text.as_str())?;
            anyhow::ensure!(message["type"] == kind, "expected {kind}, got {message}");
            return Ok(());
        }
    }
}
