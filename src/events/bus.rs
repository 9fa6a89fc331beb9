//! The event bus contract, its local fan-out, and the in-process
//! implementation. `redis_bus` implements the same contract across
//! instances.
//!
//! Two kinds of topic: one per organization (execution events) and one
//! control topic every instance listens to (worker wake-ups, cancel
//! requests, and revoked credentials and memberships). Delivery is at most once: a subscriber
//! that falls behind receives [`BusSignal::Lagged`], and after the bus's
//! connection was re-established [`BusSignal::Reconnected`], so it knows to
//! fill the gap from the durable event log.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use uuid::Uuid;

use super::log::ExecutionEventRecord;
use super::redis_bus::{RedisBus, RedisBusState};

/// Signals a topic holds for each subscriber here before the slowest
/// lags: the queue of a subscriber that stops reading never grows past it.
pub const SUBSCRIBER_QUEUE: usize = 1024;

/// Where a message is published.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Topic {
    /// Execution events of one organization.
    Organization(Uuid),
    /// Instance-wide control messages.
    Control,
}

/// What travels on the bus.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BusMessage {
    /// A committed change to an execution.
    ExecutionEvent(Box<ExecutionEventRecord>),
    /// Work was enqueued: idle workers should try to claim now.
    WorkerWakeup,
    /// Someone cancelled a running execution: its runner should stop.
    CancelRequested { execution_id: Uuid },
    /// These sessions ended: close their open connections.
    SessionsRevoked { session_ids: Vec<Uuid> },
    /// These API keys were revoked: close their open connections.
    ApiKeysRevoked { key_ids: Vec<Uuid> },
    /// Memberships of this organization were removed or changed: end the
    /// subscriptions whose member lost access.
    MembershipsChanged { organization_id: Uuid },
}

/// What a subscriber receives.
#[derive(Clone, Debug)]
pub enum BusSignal {
    Message(BusMessage),
    /// Messages were dropped because this subscriber fell behind.
    Lagged,
    /// The connection behind the bus was re-established; messages may have
    /// been missed meanwhile.
    Reconnected,
}

/// Publishes and subscribes to topics.
#[derive(Clone)]
pub enum EventBus {
    /// One process: a broadcast channel per topic.
    Local(Fanout),
    /// Many instances: Redis pub/sub, fanned out locally.
    Redis(RedisBus),
}

impl EventBus {
    /// An in-process bus.
    pub fn local() -> Self {
        Self::Local(Fanout::default())
    }

    /// Publishes `message` to `topic`. Delivery is best effort: subscribers
    /// fill anything lost from the event log.
    pub async fn publish(&self, topic: Topic, message: BusMessage) {
        match self {
            Self::Local(fanout) => fanout.deliver(topic, BusSignal::Message(message)),
            Self::Redis(bus) => bus.publish(topic, message).await,
        }
    }

    /// Subscribes to `topic`. When this returns, the subscription is active:
    /// every message published afterwards reaches it (or, if the bus is
    /// reconnecting, a `Reconnected` signal will).
    pub async fn subscribe(&self, topic: Topic) -> Subscription {
        match self {
            Self::Local(fanout) => fanout.subscribe(topic),
            Self::Redis(bus) => bus.subscribe(topic).await,
        }
    }

    /// How many signals of `topic` wait here for its slowest subscriber:
    /// at most [`SUBSCRIBER_QUEUE`].
    pub fn queued(&self, topic: Topic) -> usize {
        match self {
            Self::Local(fanout) => fanout.queued(topic),
            Self::Redis(bus) => bus.fanout().queued(topic),
        }
    }

    /// How the bus is doing, for `/health/cache`.
    pub fn health(&self) -> BusHealth {
        match self {
            Self::Local(_) => BusHealth::InProcess,
            Self::Redis(bus) => BusHealth::Redis(bus.state()),
        }
    }
}

/// The bus as health checks see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BusHealth {
    InProcess,
    Redis(RedisBusState),
}

/// A live subscription to one topic.
pub struct Subscription {
    receiver: broadcast::Receiver<BusSignal>,
}

impl Subscription {
    /// The next signal; `None` once the bus is gone.
    pub async fn recv(&mut self) -> Option<BusSignal> {
        match self.receiver.recv().await {
            Ok(signal) => Some(signal),
            Err(broadcast::error::RecvError::Lagged(_)) => Some(BusSignal::Lagged),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

/// Local fan-out: one broadcast channel per topic that has subscribers in
/// this process.
#[derive(Clone, Default)]
pub struct Fanout {
    topics: Arc<Mutex<HashMap<Topic, broadcast::Sender<BusSignal>>>>,
}

impl Fanout {
    fn topics(&self) -> std::sync::MutexGuard<'_, HashMap<Topic, broadcast::Sender<BusSignal>>> {
        self.topics
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Delivers `signal` to the topic's subscribers here, forgetting the
    /// topic once nobody listens any more.
    pub fn deliver(&self, topic: Topic, signal: BusSignal) {
        let mut topics = self.topics();
        if let Some(sender) = topics.get(&topic)
            && sender.send(signal).is_err()
        {
            topics.remove(&topic);
        }
    }

    /// Delivers `signal` to every topic with subscribers here.
    pub fn deliver_to_all(&self, signal: BusSignal) {
        for sender in self.topics().values() {
            let _ = sender.send(signal.clone());
        }
    }

    /// A new local subscription to `topic`.
    pub fn subscribe(&self, topic: Topic) -> Subscription {
        let mut topics = self.topics();
        let sender = topics
            .entry(topic)
            .or_insert_with(|| broadcast::channel(SUBSCRIBER_QUEUE).0);
        Subscription {
            receiver: sender.subscribe(),
        }
    }

    /// How many signals of `topic` its slowest subscriber has not read.
    pub fn queued(&self, topic: Topic) -> usize {
        self.topics().get(&topic).map_or(0, broadcast::Sender::len)
    }

    /// Whether anyone here listens to `topic`.
    pub fn has_subscribers(&self, topic: Topic) -> bool {
        self.topics()
            .get(&topic)
            .is_some_and(|sender| sender.receiver_count() > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_subscriber_receives_what_is_published_on_its_topic_only() {
        let bus = EventBus::local();
        let mut control = bus.subscribe(Topic::Control).await;
        let mut org = bus.subscribe(Topic::Organization(Uuid::now_v7())).await;
        bus.publish(Topic::Control, BusMessage::WorkerWakeup).await;
        assert!(matches!(
            control.recv().await,
            Some(BusSignal::Message(BusMessage::WorkerWakeup))
        ));
        let nothing = tokio::time::timeout(std::time::Duration::from_millis(20), org.recv()).await;
        assert!(
            nothing.is_err(),
            "an organization topic received a control message"
        );
    }

    #[tokio::test]
    async fn a_subscriber_that_falls_behind_is_told_it_lagged() {
        let bus = EventBus::local();
        let mut slow = bus.subscribe(Topic::Control).await;
        for _ in 0..=SUBSCRIBER_QUEUE {
            bus.publish(Topic::Control, BusMessage::WorkerWakeup).await;
        }
        assert!(matches!(slow.recv().await, Some(BusSignal::Lagged)));
    }

    #[tokio::test]
    async fn a_subscriber_that_stops_reading_keeps_only_the_newest_messages_and_is_told_it_lagged()
    {
        let bus = EventBus::local();
        let topic = Topic::Organization(Uuid::now_v7());
        let mut stalled = bus.subscribe(topic).await;
        let published = 3 * SUBSCRIBER_QUEUE;
        for n in 0..published {
            let message = BusMessage::CancelRequested {
                execution_id: Uuid::from_u128(n as u128),
            };
            bus.publish(topic, message).await;
        }
        assert_eq!(bus.queued(topic), SUBSCRIBER_QUEUE);
        assert!(matches!(stalled.recv().await, Some(BusSignal::Lagged)));
        // What it still holds is the newest messages, in order, and no more
        // than its queue.
        let mut held = Vec::new();
        while let Ok(signal) = stalled.receiver.try_recv() {
            match signal {
                BusSignal::Message(BusMessage::CancelRequested { execution_id }) => {
                    held.push(execution_id.as_u128() as usize);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        let newest: Vec<usize> = (published - SUBSCRIBER_QUEUE..published).collect();
        assert_eq!(held, newest);
    }

    #[tokio::test]
    async fn a_topic_nobody_listens_to_is_forgotten() {
        let fanout = Fanout::default();
        let topic = Topic::Organization(Uuid::now_v7());
        drop(fanout.subscribe(topic));
        fanout.deliver(topic, BusSignal::Reconnected);
        assert!(fanout.topics().is_empty());
    }
}
