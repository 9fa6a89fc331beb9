//! The bus across instances: Redis pub/sub.
//!
//! Each instance holds one subscriber connection, owned by a background task
//! that subscribes to the control channel and to the channel of every
//! organization someone on this instance listens to, and fans messages out
//! locally. When the connection breaks, the task reconnects with backoff,
//! subscribes again, and sends `Reconnected` to every local subscriber so
//! they fill what they missed from the event log. Publishing goes through a
//! separate, self-reconnecting connection.
//!
//! Channel names are `{prefix}control` and `{prefix}org:{organization id}`;
//! the prefix (`FLOWPILOT_REDIS_PREFIX`) lets several deployments, or tests,
//! share one Redis.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use futures::StreamExt;
use redis::aio::{ConnectionManager, PubSubSink};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::bus::{BusMessage, BusSignal, Fanout, Subscription, Topic};

/// First pause before reconnecting; doubled up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The subscriber connection's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RedisBusState {
    Connected,
    /// The connection broke and is being re-established.
    Reconnecting,
}

/// Publishes to and subscribes from Redis, one subscriber connection per
/// instance.
#[derive(Clone)]
pub struct RedisBus {
    outbox: mpsc::Sender<(String, String)>,
    prefix: Arc<str>,
    fanout: Fanout,
    commands: mpsc::UnboundedSender<Command>,
    state: Arc<AtomicU8>,
}

enum Command {
    /// Subscribe to a channel; answer once Redis has confirmed it.
    Subscribe(String, oneshot::Sender<()>),
}

impl RedisBus {
    /// Connects the subscriber (confirming the control channel before
    /// returning) and starts its task. `publisher` is the instance's
    /// command connection.
    pub async fn connect(
        client: redis::Client,
        publisher: ConnectionManager,
        prefix: &str,
    ) -> redis::RedisResult<Self> {
        let prefix: Arc<str> = Arc::from(prefix);
        let control = format!("{prefix}control");
        let (sink, stream) = open(&client, [control.clone()].iter()).await?;
        let (commands, receiver) = mpsc::unbounded_channel();
        let (outbox, queued) = mpsc::channel(PUBLISH_QUEUE);
        tokio::spawn(publish_queued(publisher, queued));
        let bus = Self {
            outbox,
            prefix,
            fanout: Fanout::default(),
            commands,
            state: Arc::new(AtomicU8::new(CONNECTED)),
        };
        let task = SubscriberTask {
            client,
            prefix: bus.prefix.clone(),
            fanout: bus.fanout.clone(),
            state: bus.state.clone(),
            wanted: HashSet::from([control]),
            commands: receiver,
        };
        tokio::spawn(task.run(sink, stream));
        Ok(bus)
    }

    /// Queues `message` for publishing, in order, without waiting for Redis:
    /// a slow or absent Redis never holds up a request or a worker. When the
    /// queue is full the message is dropped and logged; subscribers refill
    /// from the event log.
    pub async fn publish(&self, topic: Topic, message: BusMessage) {
        let payload = match serde_json::to_string(&message) {
            Ok(payload) => payload,
            Err(err) => return tracing::error!(error = %err, "a bus message could not be encoded"),
        };
        if self
            .outbox
            .try_send((self.channel(topic), payload))
            .is_err()
        {
            tracing::warn!(
                ?topic,
                "the Redis publish queue is full; a message was dropped"
            );
        }
    }

    /// Subscribes locally and, the first time, in Redis, returning once
    /// Redis has confirmed the channel (or at once while reconnecting: the
    /// `Reconnected` signal then covers the gap).
    pub async fn subscribe(&self, topic: Topic) -> Subscription {
        let subscription = self.fanout.subscribe(topic);
        let (confirmed, confirmation) = oneshot::channel();
        if self
            .commands
            .send(Command::Subscribe(self.channel(topic), confirmed))
            .is_ok()
        {
            let _ = confirmation.await;
        }
        subscription
    }

    /// The local fan-out of what this instance's subscriber receives.
    pub(super) fn fanout(&self) -> &Fanout {
        &self.fanout
    }

    /// The subscriber connection's state.
    pub fn state(&self) -> RedisBusState {
        if self.state.load(Ordering::Relaxed) == CONNECTED {
            RedisBusState::Connected
        } else {
            RedisBusState::Reconnecting
        }
    }

    fn channel(&self, topic: Topic) -> String {
        match topic {
            Topic::Control => format!("{}control", self.prefix),
            Topic::Organization(id) => format!("{}org:{id}", self.prefix),
        }
    }
}

/// The topic a channel name stands for, if it is one of ours.
fn topic_of(prefix: &str, channel: &str) -> Option<Topic> {
    let name = channel.strip_prefix(prefix)?;
    if name == "control" {
        return Some(Topic::Control);
    }
    name.strip_prefix("org:")
        .and_then(|id| Uuid::parse_str(id).ok())
        .map(Topic::Organization)
}

/// Messages waiting to be published before new ones are dropped.
const PUBLISH_QUEUE: usize = 10_000;

/// Publishes queued messages in order until every handle to the bus is gone.
async fn publish_queued(
    mut publisher: ConnectionManager,
    mut queued: mpsc::Receiver<(String, String)>,
) {
    let mut failing = false;
    while let Some((channel, payload)) = queued.recv().await {
        let published: redis::RedisResult<i64> = redis::cmd("PUBLISH")
            .arg(&channel)
            .arg(payload)
            .query_async(&mut publisher)
            .await;
        match published {
            Ok(_) if failing => {
                failing = false;
                tracing::info!("publishing to Redis works again");
            }
            Ok(_) => {}
            // Log the first failure of a run, not every message.
            Err(err) if !failing => {
                failing = true;
                tracing::warn!(error = %err, %channel, "publishing to Redis failed; subscribers will refill from the event log");
            }
            Err(_) => {}
        }
    }
}

const CONNECTED: u8 = 0;
const RECONNECTING: u8 = 1;

/// Opens a pub/sub connection subscribed to `channels`.
async fn open(
    client: &redis::Client,
    channels: impl Iterator<Item = &String>,
) -> redis::RedisResult<(PubSubSink, redis::aio::PubSubStream)> {
    let connect = tokio::time::timeout(CONNECT_TIMEOUT, client.get_async_pubsub())
        .await
        .map_err(|_| redis::RedisError::from((redis::ErrorKind::Io, "connecting timed out")))??;
    let (mut sink, stream) = connect.split();
    for channel in channels {
        sink.subscribe(channel).await?;
    }
    Ok((sink, stream))
}

struct SubscriberTask {
    client: redis::Client,
    prefix: Arc<str>,
    fanout: Fanout,
    state: Arc<AtomicU8>,
    /// Every channel this instance is subscribed to (or must resubscribe).
    wanted: HashSet<String>,
    commands: mpsc::UnboundedReceiver<Command>,
}

impl SubscriberTask {
    async fn run(mut self, mut sink: PubSubSink, mut stream: redis::aio::PubSubStream) {
        loop {
            self.serve(&mut sink, &mut stream).await;
            if self.commands.is_closed() {
                // Every handle to the bus is gone: so is the instance.
                return;
            }
            self.state.store(RECONNECTING, Ordering::Relaxed);
            tracing::warn!("the Redis subscriber connection broke; reconnecting");
            (sink, stream) = self.reconnect().await;
            self.state.store(CONNECTED, Ordering::Relaxed);
            tracing::info!("the Redis subscriber connection is back");
            self.fanout.deliver_to_all(BusSignal::Reconnected);
        }
    }

    /// Handles commands and messages until the connection breaks.
    async fn serve(&mut self, sink: &mut PubSubSink, stream: &mut redis::aio::PubSubStream) {
        loop {
            tokio::select! {
                command = self.commands.recv() => match command {
                    Some(Command::Subscribe(channel, confirmed)) => {
                        if !self.wanted.contains(&channel) {
                            self.wanted.insert(channel.clone());
                            if sink.subscribe(&channel).await.is_err() {
                                // Confirmed by the resubscription after the reconnect.
                                let _ = confirmed.send(());
                                return;
                            }
                        }
                        let _ = confirmed.send(());
                    }
                    None => return,
                },
                message = stream.next() => match message {
                    Some(message) => self.deliver(sink, message).await,
                    None => return,
                },
            }
        }
    }

    async fn deliver(&mut self, sink: &mut PubSubSink, message: redis::Msg) {
        let channel = message.get_channel_name().to_owned();
        let Some(topic) = topic_of(&self.prefix, &channel) else {
            return;
        };
        match serde_json::from_slice::<BusMessage>(message.get_payload_bytes()) {
            Ok(decoded) => self.fanout.deliver(topic, BusSignal::Message(decoded)),
            Err(err) => {
                tracing::warn!(error = %err, %channel, "an undecodable bus message was dropped")
            }
        }
        // Stop receiving an organization's events once nobody here listens.
        if matches!(topic, Topic::Organization(_)) && !self.fanout.has_subscribers(topic) {
            self.wanted.remove(&channel);
            let _ = sink.unsubscribe(&channel).await;
        }
    }

    /// Reconnects with exponential backoff, resubscribing every channel.
    async fn reconnect(&mut self) -> (PubSubSink, redis::aio::PubSubStream) {
        let mut backoff = MIN_BACKOFF;
        loop {
            tokio::time::sleep(backoff).await;
            // Channels asked for meanwhile are subscribed with the rest.
            while let Ok(Command::Subscribe(channel, confirmed)) = self.commands.try_recv() {
                self.wanted.insert(channel);
                let _ = confirmed.send(());
            }
            match open(&self.client, self.wanted.iter()).await {
                Ok(connection) => return connection,
                Err(err) => tracing::warn!(error = %err, "reconnecting to Redis failed"),
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_map_back_to_their_topics() {
        let id = Uuid::now_v7();
        assert_eq!(topic_of("fp:", "fp:control"), Some(Topic::Control));
        assert_eq!(
            topic_of("fp:", &format!("fp:org:{id}")),
            Some(Topic::Organization(id))
        );
        assert_eq!(topic_of("fp:", "other:control"), None);
        assert_eq!(topic_of("fp:", "fp:org:not-a-uuid"), None);
    }
}
