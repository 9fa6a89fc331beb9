//! Replay-then-live streams of one execution's events.
//!
//! The hand-over is race-free: subscribe to the organization's topic first
//! (the subscription is active when `subscribe` returns), then replay from
//! the log, then drop live events already replayed. A live event beyond the
//! next expected seq, a lag or reconnect signal, or the instance's idle
//! re-check of `last_event_seq` (see `recheck`) makes the stream fill from
//! the log, so it has no gap and no duplicate, and it ends after the
//! terminal event. A read that fails while the database is away is tried
//! again (see `patience`): the stream waits, it does not end.

use entity::execution;
use futures::{Stream, StreamExt};
use sea_orm::EntityTrait;
use uuid::Uuid;

use super::bus::{BusMessage, BusSignal, Topic};
use super::log::{ExecutionEventRecord, events_after};
use super::patience::patiently;
use crate::error::AppError;
use crate::state::AppState;

/// Every event of `execution_id` after `after_seq`, in seq order, ending
/// with the terminal event.
pub fn execution_events(
    state: AppState,
    execution_id: Uuid,
    organization_id: Uuid,
    after_seq: i32,
) -> impl Stream<Item = Result<ExecutionEventRecord, AppError>> {
    boxed_events(state, execution_id, organization_id, after_seq)
        .map(|event| event.map(|event| *event))
}

/// [`execution_events`], each event boxed: a stream that waits holds a
/// pointer where an event passes, not room for one at each place it can
/// be yielded (thousands of idle subscribers each hold such a stream).
fn boxed_events(
    state: AppState,
    execution_id: Uuid,
    organization_id: Uuid,
    after_seq: i32,
) -> impl Stream<Item = Result<Box<ExecutionEventRecord>, AppError>> {
    async_stream::try_stream! {
        let mut live = state.bus.subscribe(Topic::Organization(organization_id)).await;
        let mut next_seq = after_seq + 1;

        // The database reads are boxed: a stream that waits for live events
        // holds none of their futures.
        let replayed = Box::pin(patiently("replaying an execution's events", || {
            events_after(&state.db, execution_id, after_seq)
        }))
        .await?;
        for event in replayed {
            next_seq = event.seq + 1;
            let terminal = event.is_terminal();
            yield Box::new(event);
            if terminal {
                return;
            }
        }
        // Already finished, with nothing after `after_seq` left to send.
        // (In a block of its own, so the stream does not keep the row.)
        let finished = {
            let current = Box::pin(patiently("reading a streamed execution", || {
                execution::Entity::find_by_id(execution_id).one(&state.db)
            }))
            .await?;
            current.is_none_or(|e| e.status.is_terminal() && e.last_event_seq < next_seq)
        };
        if finished {
            return;
        }

        let mut recheck = state.streams.register(execution_id, next_seq - 1);
        loop {
            let fill_from_log = tokio::select! {
                signal = live.recv() => match signal {
                    None => return,
                    Some(BusSignal::Message(BusMessage::ExecutionEvent(event))) if event.execution.id == execution_id => {
                        if event.seq < next_seq {
                            continue;
                        }
                        if event.seq == next_seq {
                            next_seq += 1;
                            let terminal = event.is_terminal();
                            yield event;
                            if terminal {
                                return;
                            }
                            continue;
                        }
                        true
                    }
                    Some(BusSignal::Lagged | BusSignal::Reconnected) => true,
                    Some(BusSignal::Message(_)) => false,
                },
                // The idle re-check saw events this stream has not.
                newer = recheck.newer_seq() => newer.is_some_and(|seq| seq >= next_seq),
            };
            if fill_from_log {
                let after = next_seq - 1;
                let missed = Box::pin(patiently("filling a gap in an execution's events", || {
                    events_after(&state.db, execution_id, after)
                }))
                .await?;
                for event in missed {
                    next_seq = event.seq + 1;
                    let terminal = event.is_terminal();
                    yield Box::new(event);
                    if terminal {
                        return;
                    }
                }
            }
        }
    }
}
