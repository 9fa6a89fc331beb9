//! The dashboard stream: every execution event of one organization, live,
//! narrowed by a filter.
//!
//! Per execution it is ordered and without duplicates: an event at or
//! below the newest seq already passed on is dropped, and an event beyond
//! the next one fills the gap from the log first (so does the first event
//! seen of an execution queued after the stream started, if it is not its
//! first). What it cannot vouch for
//! it says: when this subscriber fell behind the bus (`Lagged`) or the bus
//! reconnected (`Reconnected`), events may be missing for executions it
//! has never heard of, so it sends a resync, and the client refetches what
//! it shows. A publish lost with neither signal (the publisher's queue was
//! full, or the worker's instance has no shared bus) is caught by the
//! instance's idle re-check (see `recheck`), which this stream joins for
//! every unfinished execution it has passed events of: one that moved on
//! unheard is filled from the log, so a lost terminal event still arrives.
//! Nothing is buffered without limit: the bus's queue per subscriber is
//! bounded, and lagging past it is a resync.
//!
//! With a throttle, events are coalesced per execution: at most one per
//! execution per interval, the latest (its snapshot is the newest state).

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use entity::status::ExecutionStatus;
use futures::Stream;
use uuid::Uuid;

use super::bus::{BusMessage, BusSignal, Topic};
use super::log::{EventKind, ExecutionEventRecord, events_after};
use super::patience::patiently;
use super::recheck::{FollowedExecutions, StreamRegistry};
use crate::app::AppState;
use crate::error::AppError;

/// Executions whose newest seq a stream remembers; past it, the memory
/// starts over (a late redelivery of an older event could then pass).
const MAX_TRACKED_EXECUTIONS: usize = 10_000;

/// Which events a dashboard wants; an empty list admits everything.
#[derive(Clone, Debug, Default)]
pub struct StreamFilter {
    pub workflow_ids: Vec<Uuid>,
    /// The execution's status after the event.
    pub statuses: Vec<ExecutionStatus>,
    pub kinds: Vec<EventKind>,
}

impl StreamFilter {
    /// Whether executions of `workflow_id` are shown at all.
    fn admits_workflow(&self, workflow_id: Uuid) -> bool {
        self.workflow_ids.is_empty() || self.workflow_ids.contains(&workflow_id)
    }

    fn admits(&self, event: &ExecutionEventRecord) -> bool {
        let any_or = |empty: bool, found: bool| empty || found;
        self.admits_workflow(event.execution.workflow_id)
            && any_or(
                self.statuses.is_empty(),
                self.statuses.contains(&event.execution.status),
            )
            && any_or(self.kinds.is_empty(), self.kinds.contains(&event.kind))
    }
}

/// Why continuity was lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResyncReason {
    /// This subscriber fell behind and events were dropped.
    Lagged,
    /// The bus's connection was re-established; events published meanwhile
    /// may be lost.
    Reconnected,
}

/// One item of the stream. Resyncs are rare; boxing the common event
/// would cost an allocation per event for nothing.
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum StreamItem {
    Event(ExecutionEventRecord),
    /// Refetch what you show: events may have been missed.
    Resync {
        reason: ResyncReason,
        occurred_at: DateTime<Utc>,
    },
}

/// The organization's execution events from now on, as `filter` admits
/// them, coalesced per execution every `throttle` when one is given.
pub fn organization_events(
    state: AppState,
    organization_id: Uuid,
    filter: StreamFilter,
    throttle: Option<Duration>,
) -> impl Stream<Item = Result<StreamItem, AppError>> {
    async_stream::try_stream! {
        let mut live = state.bus.subscribe(Topic::Organization(organization_id)).await;
        let mut order = Continuity::since(state.clock.now(), state.streams.clone());
        let mut pending = Coalesced::default();
        let mut ticker = tokio::time::interval(throttle.unwrap_or(Duration::from_secs(3600)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // A due flush first (it is ready once per interval, so it
            // starves nothing), then the bus: what it holds makes a
            // re-check's log read unnecessary.
            let woke = tokio::select! {
                biased;
                _ = ticker.tick(), if !pending.is_empty() => Woke::Flush,
                signal = live.recv() => Woke::Bus(signal),
                (execution_id, seq) = order.followed.next() => Woke::Recheck(execution_id, seq),
            };
            let flushing = matches!(woke, Woke::Flush);
            let events = match woke {
                Woke::Bus(None) => return,
                // An execution of a workflow the filter leaves out is never
                // shown, so neither followed nor filled.
                Woke::Bus(Some(BusSignal::Message(BusMessage::ExecutionEvent(event))))
                    if filter.admits_workflow(event.execution.workflow_id) =>
                {
                    order.admit(&state, *event).await?
                }
                Woke::Recheck(execution_id, seq) => order.catch_up(&state, execution_id, seq).await?,
                Woke::Bus(Some(BusSignal::Message(_))) => Vec::new(),
                Woke::Bus(Some(signal @ (BusSignal::Lagged | BusSignal::Reconnected))) => {
                    let reason = if matches!(signal, BusSignal::Lagged) {
                        ResyncReason::Lagged
                    } else {
                        ResyncReason::Reconnected
                    };
                    // The refetch the client makes now supersedes them.
                    pending.clear();
                    order.forget(state.clock.now());
                    tracing::info!(%organization_id, ?reason, "organization stream resynced");
                    yield StreamItem::Resync { reason, occurred_at: state.clock.now() };
                    Vec::new()
                }
                Woke::Flush => pending.drain(),
            };
            for event in events {
                if !filter.admits(&event) {
                    continue;
                }
                if throttle.is_some() && !flushing {
                    pending.put(event);
                } else {
                    yield StreamItem::Event(event);
                }
            }
        }
    }
}

/// What woke an organization stream.
enum Woke {
    Bus(Option<BusSignal>),
    /// The idle re-check saw this execution reach this seq.
    Recheck(Uuid, i32),
    /// The throttle interval passed with events pending.
    Flush,
}

/// The newest seq passed on per execution.
struct Continuity {
    newest: HashMap<Uuid, i32>,
    /// When the stream started: an execution queued since then is
    /// streamed from its first event.
    started_at: DateTime<Utc>,
    /// The unfinished executions in `newest`, watched by the idle re-check.
    followed: FollowedExecutions,
}

impl Continuity {
    fn since(started_at: DateTime<Utc>, streams: StreamRegistry) -> Self {
        Self {
            newest: HashMap::new(),
            started_at,
            followed: FollowedExecutions::new(streams),
        }
    }

    /// What to pass on for `event`, in order: nothing for a duplicate, the
    /// missing events from the log and then it for a gap.
    async fn admit(
        &mut self,
        state: &AppState,
        event: ExecutionEventRecord,
    ) -> Result<Vec<ExecutionEventRecord>, AppError> {
        let execution_id = event.execution.id;
        let events = match self.newest.get(&execution_id).copied() {
            Some(newest) if event.seq <= newest => return Ok(Vec::new()),
            Some(newest) if event.seq > newest + 1 => {
                patiently("filling a gap in an organization stream", || {
                    events_after(&state.db, execution_id, newest)
                })
                .await?
            }
            // Queued after the stream started, so its earlier events were
            // lost on the way: they come from the log.
            None if event.seq > 1 && event.execution.queued_at >= self.started_at => {
                patiently("filling a gap in an organization stream", || {
                    events_after(&state.db, execution_id, 0)
                })
                .await?
            }
            _ => vec![event],
        };
        self.passed_on(execution_id, &events);
        Ok(events)
    }

    /// The events of `execution_id` up to `seq` not yet passed on, from
    /// the log: the re-check saw them, the bus did not deliver them.
    async fn catch_up(
        &mut self,
        state: &AppState,
        execution_id: Uuid,
        seq: i32,
    ) -> Result<Vec<ExecutionEventRecord>, AppError> {
        let Some(newest) = self.newest.get(&execution_id).copied() else {
            return Ok(Vec::new());
        };
        if seq <= newest {
            return Ok(Vec::new());
        }
        let events = patiently("catching up an organization stream", || {
            events_after(&state.db, execution_id, newest)
        })
        .await?;
        self.passed_on(execution_id, &events);
        Ok(events)
    }

    /// Records `events` of `execution_id` as passed on.
    fn passed_on(&mut self, execution_id: Uuid, events: &[ExecutionEventRecord]) {
        let Some(last) = events.last() else {
            return;
        };
        // Finished executions are remembered too, so a late redelivery of
        // their events is still recognised.
        if self.newest.len() >= MAX_TRACKED_EXECUTIONS && !self.newest.contains_key(&execution_id) {
            self.forget(event_time(events));
        }
        self.newest.insert(execution_id, last.seq);
        if last.is_terminal() {
            self.followed.unfollow(execution_id);
        } else {
            self.followed.follow(execution_id, last.seq);
        }
    }

    /// Starts over from `now`: executions already under way are taken up
    /// at their next event, not replayed.
    fn forget(&mut self, now: DateTime<Utc>) {
        self.newest.clear();
        self.followed.clear();
        self.started_at = now;
    }
}

/// When the newest of `events` happened.
fn event_time(events: &[ExecutionEventRecord]) -> DateTime<Utc> {
    events
        .last()
        .map_or_else(Utc::now, |event| event.occurred_at)
}

/// The latest admitted event per execution, in the order executions first
/// appeared since the last flush.
#[derive(Default)]
struct Coalesced {
    order: Vec<Uuid>,
    latest: HashMap<Uuid, ExecutionEventRecord>,
}

impl Coalesced {
    fn put(&mut self, event: ExecutionEventRecord) {
        let execution_id = event.execution.id;
        if self.latest.insert(execution_id, event).is_none() {
            self.order.push(execution_id);
        }
    }

    fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    fn clear(&mut self) {
        self.order.clear();
        self.latest.clear();
    }

    fn drain(&mut self) -> Vec<ExecutionEventRecord> {
        let order = std::mem::take(&mut self.order);
        order
            .into_iter()
            .filter_map(|id| self.latest.remove(&id))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(execution_id: Uuid, seq: i32) -> ExecutionEventRecord {
        let now = Utc::now();
        ExecutionEventRecord {
            seq,
            kind: EventKind::StepStarted,
            execution: super::super::log::ExecutionSnapshot {
                id: execution_id,
                organization_id: Uuid::now_v7(),
                workflow_id: Uuid::now_v7(),
                status: ExecutionStatus::Running,
                error: None,
                output: None,
                queued_at: now,
                started_at: Some(now),
                finished_at: None,
                last_event_seq: seq,
            },
            step: None,
            occurred_at: now,
        }
    }

    #[test]
    fn coalescing_keeps_the_latest_event_per_execution_in_first_seen_order() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let mut pending = Coalesced::default();
        for (id, seq) in [(a, 2), (b, 2), (a, 3), (a, 4), (b, 3)] {
            pending.put(event(id, seq));
        }
        let flushed: Vec<(Uuid, i32)> = pending
            .drain()
            .into_iter()
            .map(|e| (e.execution.id, e.seq))
            .collect();
        assert_eq!(flushed, vec![(a, 4), (b, 3)]);
        assert!(pending.is_empty());
    }

    #[test]
    fn an_empty_filter_admits_everything_and_each_list_narrows() {
        let e = event(Uuid::now_v7(), 2);
        assert!(StreamFilter::default().admits(&e));
        let by_kind = StreamFilter {
            kinds: vec![EventKind::StepSucceeded],
            ..StreamFilter::default()
        };
        assert!(!by_kind.admits(&e));
        let by_status = StreamFilter {
            statuses: vec![ExecutionStatus::Running],
            ..StreamFilter::default()
        };
        assert!(by_status.admits(&e));
        let by_workflow = StreamFilter {
            workflow_ids: vec![Uuid::now_v7()],
            ..StreamFilter::default()
        };
        assert!(!by_workflow.admits(&e));
    }
}
