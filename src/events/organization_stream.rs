//! The dashboard stream: every execution event of one organization, live,
//! narrowed by a filter, resumable from a cursor.
//!
//! It starts from a [`Watermark`]: without a cursor, what has committed
//! when it starts (it says so with an `Initial` resync, which the client
//! answers by loading what it shows); with one, the cursor's, and it first
//! sends from the log every admitted event committed since that the cursor
//! has not seen. Either way it then follows the bus, subscribed before the
//! watermark was read, so nothing committed after it is missed.
//!
//! Per execution it is ordered and without duplicates: an event the
//! watermark covers, or at or below the newest seq already handled, is
//! dropped; an event beyond the next one fills the gap from the log first,
//! and so does the first event seen of an execution already under way
//! (one read per such execution, for what the watermark does not cover). When the bus says messages were lost
//! (`Lagged`, `Reconnected`) the stream reads what committed meanwhile
//! from the log and sends what it had not, exactly; only when that is more
//! than `FLOWPILOT_STREAM_REPLAY_LIMIT` events does it send a resync
//! instead. A publish lost with neither signal is caught by the instance's
//! idle re-check (see `recheck`), which this stream joins for every
//! unfinished execution it has passed events of.
//!
//! Each item carries the cursor of what the client has then been sent: the
//! watermark, and the newest seq of each execution sent since. Once the
//! stream has been quiet for `FLOWPILOT_STREAM_RECHECK_MS` after sending,
//! or as soon as [`ADVANCE_AT`] executions moved, it reads a new watermark
//! and what committed up to it, so the cursor stays small; live events
//! themselves cost no read. Nothing is buffered without limit: the bus's queue per subscriber
//! is bounded, and lagging past it is a catch-up from the log.
//!
//! With a throttle, events are coalesced per execution: at most one per
//! execution per interval, the latest (its snapshot is the newest state).

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use entity::status::ExecutionStatus;
use futures::Stream;
use uuid::Uuid;

use super::bus::{BusMessage, BusSignal, Topic};
use super::log::{EventKind, ExecutionEventRecord, committed_between, events_after, events_by_id};
use super::patience::patiently;
use super::recheck::{FollowedExecutions, StreamRegistry};
use super::watermark::{StreamCursor, Watermark};
use crate::error::AppError;
use crate::state::AppState;

/// Executions whose newest seq a stream remembers; past it, what the log
/// says is read to forget the finished ones, and when that is not enough
/// the stream resyncs.
const MAX_TRACKED_EXECUTIONS: usize = 10_000;
/// Executions sent beyond the watermark at which the stream reads a new one
/// at once, which bounds the cursor.
const ADVANCE_AT: usize = 128;
/// How long a cursor can be resumed from.
pub const RESUME_WINDOW: TimeDelta = TimeDelta::hours(24);

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

/// Why the client should load what it shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResyncReason {
    /// The stream starts here.
    Initial,
    /// This subscriber fell behind, and more was missed than is replayed.
    Lagged,
    /// The bus's connection was re-established, and more committed
    /// meanwhile than is replayed.
    Reconnected,
    /// The cursor resumed from is too old, or from another database.
    CursorExpired,
    /// More happened since the cursor than is replayed.
    TooFarBehind,
}

/// One item of the stream. Resyncs are rare; boxing the common event
/// would cost an allocation per event for nothing.
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum StreamItem {
    Event {
        event: ExecutionEventRecord,
        /// What the client has seen once it has this.
        cursor: StreamCursor,
    },
    /// Load what you show: the stream goes on from `cursor`.
    Resync {
        reason: ResyncReason,
        occurred_at: DateTime<Utc>,
        cursor: StreamCursor,
    },
}

/// Where an organization stream starts.
#[derive(Clone, Debug)]
pub struct StreamStart {
    pub organization_id: Uuid,
    pub filter: StreamFilter,
    /// Coalescing interval, if any.
    pub throttle: Option<Duration>,
    /// The cursor to resume from; `None` starts from now.
    pub after: Option<StreamCursor>,
}

/// The organization's execution events as `start` asks for them.
pub fn organization_events(
    state: AppState,
    start: StreamStart,
) -> impl Stream<Item = Result<StreamItem, AppError>> {
    let StreamStart {
        organization_id,
        filter,
        throttle,
        after,
    } = start;
    let replay_limit = state.config.settings.stream_replay_limit;
    async_stream::try_stream! {
        let mut live = state.bus.subscribe(Topic::Organization(organization_id)).await;
        let now = patiently("starting an organization stream", || Watermark::now(&state.db)).await?;
        let mut order = Continuity::fresh(now.clone(), state.streams.clone());
        let mut sent = Sent::at(now.clone());
        let mut pending = Coalesced::default();
        let resume = match after {
            None => Err(ResyncReason::Initial),
            Some(cursor) if cursor.watermark.source() != now.source()
                || !cursor.is_usable(RESUME_WINDOW, state.clock.now()) =>
            {
                Err(ResyncReason::CursorExpired)
            }
            Some(cursor) => {
                order.resume_from(&cursor);
                sent = Sent::resumed(&cursor);
                let caught_up = order.catch_up(&state, organization_id, &filter.workflow_ids, &now, replay_limit).await?;
                caught_up.ok_or(ResyncReason::TooFarBehind)
            }
        };
        let mut due = Vec::new();
        match resume {
            Ok(missed) => {
                // Once what the catch-up found is sent, `now` covers it all.
                due = missed;
                sent.next = Some(now);
            }
            Err(reason) => {
                order = Continuity::fresh(now.clone(), state.streams.clone());
                sent = Sent::at(now);
                if reason != ResyncReason::Initial {
                    tracing::info!(%organization_id, ?reason, "organization stream resumed with a resync");
                }
                yield sent.resync(reason, state.clock.now());
            }
        }

        let mut ticker = tokio::time::interval(throttle.unwrap_or(Duration::from_secs(3600)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let quiet = Duration::from_millis(state.config.settings.stream_recheck_ms);
        let mut last_sent = tokio::time::Instant::now();
        let mut flushing = false;
        loop {
            for event in due.drain(..) {
                if !filter.admits(&event) {
                    continue;
                }
                if throttle.is_some() && !flushing {
                    pending.put(event);
                } else {
                    sent.record(&event);
                    last_sent = tokio::time::Instant::now();
                    let cursor = sent.cursor(state.clock.now());
                    yield StreamItem::Event { event, cursor };
                }
            }
            // Once nothing is held back, what the last catch-up found has
            // been sent, and its watermark describes what the client has.
            if pending.is_empty() {
                sent.settle();
            }
            let must_advance = sent.beyond.len() >= ADVANCE_AT || order.newest.len() > MAX_TRACKED_EXECUTIONS;
            // A due flush first (it is ready once per interval, so it
            // starves nothing), then the bus: what it holds makes a
            // re-check's log read unnecessary.
            let woke = if must_advance && sent.next.is_none() {
                Woke::Advance
            } else {
                tokio::select! {
                    biased;
                    _ = ticker.tick(), if !pending.is_empty() => Woke::Flush,
                    signal = live.recv() => Woke::Bus(signal),
                    (execution_id, seq) = order.followed.next() => Woke::Recheck(execution_id, seq),
                    _ = tokio::time::sleep_until(last_sent + quiet), if !sent.beyond.is_empty() && sent.next.is_none() => Woke::Advance,
                }
            };
            flushing = matches!(woke, Woke::Flush);
            due = match woke {
                Woke::Bus(None) => return,
                // An execution of a workflow the filter leaves out is never
                // shown, so neither followed nor filled.
                Woke::Bus(Some(BusSignal::Message(BusMessage::ExecutionEvent(event))))
                    if filter.admits_workflow(event.execution.workflow_id) =>
                {
                    order.admit(&state, *event).await?
                }
                Woke::Bus(Some(BusSignal::Message(_))) => Vec::new(),
                Woke::Recheck(execution_id, seq) => order.recheck(&state, execution_id, seq).await?,
                Woke::Flush => pending.drain(),
                Woke::Bus(Some(BusSignal::Lagged)) | Woke::Bus(Some(BusSignal::Reconnected)) | Woke::Advance => {
                    let lost = match woke {
                        Woke::Bus(Some(BusSignal::Lagged)) => Some(ResyncReason::Lagged),
                        Woke::Bus(Some(BusSignal::Reconnected)) => Some(ResyncReason::Reconnected),
                        _ => None,
                    };
                    let to = patiently("reading an organization stream's watermark", || {
                        Watermark::now(&state.db)
                    })
                    .await?;
                    match order.catch_up(&state, organization_id, &filter.workflow_ids, &to, replay_limit).await? {
                        Some(missed) if order.newest.len() <= MAX_TRACKED_EXECUTIONS => {
                            sent.next = Some(to);
                            missed
                        }
                        _ => {
                            // The refetch the client makes now supersedes them.
                            let reason = lost.unwrap_or(ResyncReason::TooFarBehind);
                            pending.clear();
                            order = Continuity::fresh(to.clone(), state.streams.clone());
                            sent = Sent::at(to);
                            tracing::info!(%organization_id, ?reason, "organization stream resynced");
                            yield sent.resync(reason, state.clock.now());
                            Vec::new()
                        }
                    }
                }
            };
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
    /// Time to read a new watermark and what committed up to it.
    Advance,
}

/// The newest event handled of one execution.
#[derive(Clone, Copy, Debug)]
struct Newest {
    seq: i32,
    /// `None` for what a resumed cursor says was sent before: it committed
    /// before this stream started.
    position: Option<i64>,
    terminal: bool,
}

/// What the stream has handled: passed on (or held to be), or left out as
/// covered by the start it was given.
struct Continuity {
    /// Every event it covers has been handled.
    handled_to: Watermark,
    /// The newest event handled per execution, for those with events it
    /// does not cover or not yet finished.
    newest: HashMap<Uuid, Newest>,
    /// The unfinished executions in `newest`, watched by the idle re-check.
    followed: FollowedExecutions,
}

impl Continuity {
    fn fresh(handled_to: Watermark, streams: StreamRegistry) -> Self {
        Self {
            handled_to,
            newest: HashMap::new(),
            followed: FollowedExecutions::new(streams),
        }
    }

    /// Takes up what `cursor` says the client has seen.
    fn resume_from(&mut self, cursor: &StreamCursor) {
        self.handled_to = cursor.watermark.clone();
        for &(execution_id, seq) in &cursor.seen {
            let newest = Newest {
                seq,
                position: None,
                terminal: false,
            };
            self.newest.insert(execution_id, newest);
        }
    }

    /// What to pass on for `event`, in order: nothing for a duplicate, the
    /// missing events from the log and then it for a gap.
    async fn admit(
        &mut self,
        state: &AppState,
        event: ExecutionEventRecord,
    ) -> Result<Vec<ExecutionEventRecord>, AppError> {
        if self.handled_to.covers(event.position) {
            return Ok(Vec::new());
        }
        let execution_id = event.execution.id;
        // Position 0: from an instance that does not send it; the log has it.
        let known = event.position != 0;
        let events = match self.newest.get(&execution_id).map(|newest| newest.seq) {
            Some(newest) if event.seq <= newest => return Ok(Vec::new()),
            Some(newest) if event.seq == newest + 1 && known => vec![event],
            Some(newest) => {
                patiently("filling a gap in an organization stream", || {
                    events_after(&state.db, execution_id, newest)
                })
                .await?
            }
            None if event.seq == 1 && known => vec![event],
            // The first seen of an execution already under way: whatever of
            // it the watermark does not cover comes from the log first (its
            // publish may have been lost), then this.
            None => {
                let logged = patiently("filling a gap in an organization stream", || {
                    events_after(&state.db, execution_id, 0)
                })
                .await?;
                logged
                    .into_iter()
                    .filter(|logged| !self.handled_to.covers(logged.position))
                    .collect()
            }
        };
        self.passed_on(&events);
        Ok(events)
    }

    /// The events of `execution_id` up to `seq` not yet passed on, from
    /// the log: the re-check saw them, the bus did not deliver them.
    async fn recheck(
        &mut self,
        state: &AppState,
        execution_id: Uuid,
        seq: i32,
    ) -> Result<Vec<ExecutionEventRecord>, AppError> {
        let Some(newest) = self.newest.get(&execution_id).map(|newest| newest.seq) else {
            return Ok(Vec::new());
        };
        if seq <= newest {
            return Ok(Vec::new());
        }
        let events = patiently("catching up an organization stream", || {
            events_after(&state.db, execution_id, newest)
        })
        .await?;
        self.passed_on(&events);
        Ok(events)
    }

    /// The organization's events committed by `to` not yet handled, from
    /// the log (of executions of `workflow_ids` only, when there are any),
    /// after which everything `to` covers is handled; `None` when there are
    /// more than `limit` to look at.
    async fn catch_up(
        &mut self,
        state: &AppState,
        organization_id: Uuid,
        workflow_ids: &[Uuid],
        to: &Watermark,
        limit: u64,
    ) -> Result<Option<Vec<ExecutionEventRecord>>, AppError> {
        let from = self.handled_to.clone();
        let committed = patiently("catching up an organization stream", || {
            committed_between(&state.db, organization_id, workflow_ids, &from, to, limit)
        })
        .await?;
        if committed.len() as u64 > limit {
            return Ok(None);
        }
        let missing: Vec<Uuid> = committed
            .iter()
            .filter(|logged| {
                self.newest
                    .get(&logged.execution_id)
                    .is_none_or(|newest| logged.seq > newest.seq)
            })
            .map(|logged| logged.id)
            .collect();
        let events = if missing.is_empty() {
            Vec::new()
        } else {
            patiently("catching up an organization stream", || {
                events_by_id(&state.db, &missing)
            })
            .await?
        };
        // Ids come in commit order, which on PostgreSQL need not be the
        // order of one execution's seqs across batches.
        let mut events = events;
        events.sort_by_key(|event| (event.execution.id, event.seq));
        for of_one in events.chunk_by(|a, b| a.execution.id == b.execution.id) {
            self.passed_on(of_one);
        }
        self.handled_to = to.clone();
        // What is covered now needs no remembering, except where an
        // unfinished execution stands, which saves its next event a read.
        self.newest.retain(|_, newest| {
            newest
                .position
                .is_some_and(|position| !(newest.terminal && to.covers(position)))
        });
        Ok(Some(events))
    }

    /// Records `events` of one execution as passed on.
    fn passed_on(&mut self, events: &[ExecutionEventRecord]) {
        let Some(last) = events.last() else {
            return;
        };
        let execution_id = last.execution.id;
        self.newest.insert(
            execution_id,
            Newest {
                seq: last.seq,
                position: Some(last.position),
                terminal: last.is_terminal(),
            },
        );
        if last.is_terminal() {
            self.followed.unfollow(execution_id);
        } else {
            self.followed.follow(execution_id, last.seq);
        }
    }
}

/// What the client has been sent, which its cursors describe.
struct Sent {
    /// Every admitted event it covers was sent.
    watermark: Watermark,
    /// The newest seq and position sent per execution, of events it does
    /// not cover.
    beyond: HashMap<Uuid, (i32, i64)>,
    /// What the cursor resumed from says was sent before this stream
    /// started, until a watermark read since covers it.
    carried: HashMap<Uuid, i32>,
    /// The watermark of the last catch-up, taken up once what it found has
    /// been sent.
    next: Option<Watermark>,
}

impl Sent {
    fn at(watermark: Watermark) -> Self {
        Self {
            watermark,
            beyond: HashMap::new(),
            carried: HashMap::new(),
            next: None,
        }
    }

    fn resumed(cursor: &StreamCursor) -> Self {
        Self {
            carried: cursor.seen.iter().copied().collect(),
            ..Self::at(cursor.watermark.clone())
        }
    }

    fn record(&mut self, event: &ExecutionEventRecord) {
        if !self.watermark.covers(event.position) {
            self.beyond
                .insert(event.execution.id, (event.seq, event.position));
        }
    }

    /// Takes up the last catch-up's watermark.
    fn settle(&mut self) {
        if let Some(next) = self.next.take() {
            self.beyond
                .retain(|_, (_, position)| !next.covers(*position));
            self.carried.clear();
            self.watermark = next;
        }
    }

    fn cursor(&self, now: DateTime<Utc>) -> StreamCursor {
        let carried = self
            .carried
            .iter()
            .filter(|(id, _)| !self.beyond.contains_key(id))
            .map(|(id, seq)| (*id, *seq));
        let beyond = self.beyond.iter().map(|(id, (seq, _))| (*id, *seq));
        StreamCursor {
            issued_at: now,
            watermark: self.watermark.clone(),
            seen: carried.chain(beyond).collect(),
        }
    }

    fn resync(&self, reason: ResyncReason, now: DateTime<Utc>) -> StreamItem {
        StreamItem::Resync {
            reason,
            occurred_at: now,
            cursor: self.cursor(now),
        }
    }
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
            position: 0,
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
