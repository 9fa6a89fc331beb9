//! The idle re-check behind every open execution stream and every
//! unfinished execution a dashboard follows: a task on each instance reads
//! `last_event_seq` of every execution streamed here, in one query per
//! [`RECHECK_BATCH`] executions, every few seconds, and tells the streams.
//! A stream that is behind refills from the log. This catches what the bus cannot: a
//! publish lost between commit and send, a Redis that dropped a message
//! without any disconnect, or a worker in another process with no shared
//! bus at all. It is what keeps a lost terminal event from hanging a stream.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use entity::execution;
use futures::stream::{BoxStream, SelectAll};
use futures::{StreamExt, stream};
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QuerySelect};
use tokio::sync::{oneshot, watch};
use uuid::Uuid;

/// Executions whose progress one re-check query reads, well below every
/// database's limit on bound parameters.
pub const RECHECK_BATCH: usize = 1_000;

/// The executions streamed on this instance, each with the newest
/// `last_event_seq` seen by the re-check.
#[derive(Clone, Default)]
pub struct StreamRegistry {
    streams: Arc<Mutex<HashMap<Uuid, Watched>>>,
}

struct Watched {
    latest: watch::Sender<i32>,
    streams: usize,
}

/// One stream's registration; unregisters when dropped.
pub struct StreamTicket {
    registry: StreamRegistry,
    execution_id: Uuid,
    latest: watch::Receiver<i32>,
}

impl StreamTicket {
    /// Waits until the re-check has seen a newer seq, and returns it.
    pub async fn newer_seq(&mut self) -> Option<i32> {
        self.latest.changed().await.ok()?;
        Some(*self.latest.borrow_and_update())
    }
}

impl Drop for StreamTicket {
    fn drop(&mut self) {
        let mut streams = self.registry.lock();
        if let Some(watched) = streams.get_mut(&self.execution_id) {
            watched.streams -= 1;
            if watched.streams == 0 {
                streams.remove(&self.execution_id);
            }
        }
    }
}

/// The executions one stream follows, woken together: the organization
/// stream follows every unfinished execution it has passed events of.
pub struct FollowedExecutions {
    registry: StreamRegistry,
    /// Dropping an execution's sender ends its watch, and its ticket with
    /// it the next time the set is polled.
    stops: HashMap<Uuid, oneshot::Sender<()>>,
    /// One watch per followed execution, yielding the execution and the
    /// newer seq the re-check saw.
    woken: SelectAll<BoxStream<'static, (Uuid, i32)>>,
}

impl FollowedExecutions {
    /// An empty set whose tickets `registry` re-checks.
    pub fn new(registry: StreamRegistry) -> Self {
        Self {
            registry,
            stops: HashMap::new(),
            woken: SelectAll::new(),
        }
    }

    /// Follows `execution_id`, passed on up to `seen_seq`; following it
    /// already changes nothing.
    pub fn follow(&mut self, execution_id: Uuid, seen_seq: i32) {
        if self.stops.contains_key(&execution_id) {
            return;
        }
        let (stop, stopped) = oneshot::channel();
        let ticket = self.registry.register(execution_id, seen_seq);
        let watch = stream::unfold(
            (ticket, stopped),
            move |(mut ticket, mut stopped)| async move {
                tokio::select! {
                    seq = ticket.newer_seq() => seq.map(|seq| ((execution_id, seq), (ticket, stopped))),
                    _ = &mut stopped => None,
                }
            },
        );
        self.stops.insert(execution_id, stop);
        self.woken.push(watch.boxed());
    }

    /// Stops following `execution_id` (it finished).
    pub fn unfollow(&mut self, execution_id: Uuid) {
        self.stops.remove(&execution_id);
    }

    /// Stops following everything.
    pub fn clear(&mut self) {
        self.stops.clear();
        self.woken = SelectAll::new();
    }

    /// The next followed execution the re-check saw move on, with its
    /// newest seq; pending while nothing is followed.
    pub async fn next(&mut self) -> (Uuid, i32) {
        match self.woken.next().await {
            Some(woken) => woken,
            None => std::future::pending().await,
        }
    }
}

impl StreamRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Watched>> {
        self.streams
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers a stream of `execution_id` that has seen up to `seen_seq`.
    pub fn register(&self, execution_id: Uuid, seen_seq: i32) -> StreamTicket {
        let mut streams = self.lock();
        let watched = streams.entry(execution_id).or_insert_with(|| Watched {
            latest: watch::channel(seen_seq).0,
            streams: 0,
        });
        watched.streams += 1;
        let mut latest = watched.latest.subscribe();
        // The re-check already saw events this stream has not: wake it at
        // once rather than at the next event, which may never come.
        if *latest.borrow() > seen_seq {
            latest.mark_changed();
        } else {
            latest.mark_unchanged();
        }
        StreamTicket {
            registry: self.clone(),
            execution_id,
            latest,
        }
    }

    /// Reads `last_event_seq` of every streamed execution in one query and
    /// wakes the streams of those that moved on.
    pub async fn recheck(&self, db: &DatabaseConnection) -> Result<(), sea_orm::DbErr> {
        let ids: Vec<Uuid> = self.lock().keys().copied().collect();
        for batch in ids.chunks(RECHECK_BATCH) {
            let rows: Vec<(Uuid, i32)> = execution::Entity::find()
                .select_only()
                .column(execution::Column::Id)
                .column(execution::Column::LastEventSeq)
                .filter(execution::Column::Id.is_in(batch.iter().copied()))
                .into_tuple()
                .all(db)
                .await?;
            self.wake(rows);
        }
        Ok(())
    }

    /// Wakes the streams of executions whose seq moved past what the
    /// re-check saw before.
    fn wake(&self, rows: Vec<(Uuid, i32)>) {
        let streams = self.lock();
        for (id, seq) in rows {
            if let Some(watched) = streams.get(&id) {
                watched.latest.send_if_modified(|latest| {
                    let newer = seq > *latest;
                    if newer {
                        *latest = seq;
                    }
                    newer
                });
            }
        }
    }

    /// Rechecks every `interval` until `stop` fires.
    pub async fn run(
        self,
        db: DatabaseConnection,
        interval: Duration,
        mut stop: watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stop.changed() => return,
            }
            if let Err(err) = self.recheck(&db).await {
                tracing::warn!(error = %err, "re-checking open streams failed");
            }
        }
    }
}
