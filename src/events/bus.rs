//! The event bus contract and its in-process implementation.
//!
//! Two kinds of topic: one per organization (execution events) and one
//! control topic every instance listens to (worker wake-ups now; cancel
//! requests and revocations later). Delivery is at most once: a subscriber
//! that falls behind receives [`BusSignal::Lagged`], and after a broken
//! connection [`BusSignal::Reconnected`], so it knows to fill the gap from
//! the durable event log.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use uuid::Uuid;

use super::log::ExecutionEventRecord;

/// Messages a topic buffers for a slow subscriber before it lags.
const TOPIC_CAPACITY: usize = 1024;

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
    Local(LocalBus),
}

impl EventBus {
    /// An in-process bus.
    pub fn local() -> Self {
        Self::Local(LocalBus::default())
    }

    /// Publishes `message` to `topic`; subscribers that are gone are skipped.
    pub async fn publish(&self, topic: Topic, message: BusMessage) {
        match self {
            Self::Local(bus) => bus.publish(topic, message),
        }
    }

    /// Subscribes to `topic`. When this returns, the subscription is active:
    /// every message published afterwards reaches it.
    pub async fn subscribe(&self, topic: Topic) -> Subscription {
        match self {
            Self::Local(bus) => bus.subscribe(topic),
        }
    }

    /// A short name for health reports.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Local(_) => "in-process",
        }
    }
}

/// A live subscription to one topic.
pub struct Subscription {
    receiver: broadcast::Receiver<BusMessage>,
}

impl Subscription {
    /// The next signal; `None` once the bus is gone.
    pub async fn recv(&mut self) -> Option<BusSignal> {
        match self.receiver.recv().await {
            Ok(message) => Some(BusSignal::Message(message)),
            Err(broadcast::error::RecvError::Lagged(_)) => Some(BusSignal::Lagged),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

/// In-process bus: one broadcast channel per topic with subscribers.
#[derive(Clone, Default)]
pub struct LocalBus {
    topics: Arc<Mutex<HashMap<Topic, broadcast::Sender<BusMessage>>>>,
}

impl LocalBus {
    fn publish(&self, topic: Topic, message: BusMessage) {
        let mut topics = self
            .topics
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Nobody listens any more: forget the topic.
        if let Some(sender) = topics.get(&topic)
            && sender.send(message).is_err()
        {
            topics.remove(&topic);
        }
    }

    fn subscribe(&self, topic: Topic) -> Subscription {
        let mut topics = self
            .topics
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let sender = topics
            .entry(topic)
            .or_insert_with(|| broadcast::channel(TOPIC_CAPACITY).0);
        Subscription {
            receiver: sender.subscribe(),
        }
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
        for _ in 0..=TOPIC_CAPACITY {
            bus.publish(Topic::Control, BusMessage::WorkerWakeup).await;
        }
        assert!(matches!(slow.recv().await, Some(BusSignal::Lagged)));
    }
}
