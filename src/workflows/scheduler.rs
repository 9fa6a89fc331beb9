//! The scheduler: on every instance, it fires the schedules that are due.
//! Instances race for each firing and the database decides: a firing is
//! claimed by moving the trigger's `next_run_at` on from the value read (see
//! `triggers`), so each due run starts exactly one execution however many
//! instances run. It belongs to the triggers; the app starts it beside the
//! engine, and the executions it queues go through the engine's journal.

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::triggers;
use crate::engine::runner::ERROR_BACKOFF;
use crate::state::AppState;

/// How long a stopping scheduler may finish the pass under way.
const STOP_TIME: Duration = Duration::from_secs(5);

/// A running scheduler.
pub struct Scheduler {
    task: Option<JoinHandle<()>>,
}

impl Scheduler {
    /// Fires due schedules until `stop` turns true, unless the settings
    /// turn the engine off.
    pub fn start(state: &AppState, stop: watch::Receiver<bool>) -> Self {
        let task = state
            .config
            .settings
            .run_engine
            .then(|| tokio::spawn(schedule(state.clone(), stop)));
        Self { task }
    }

    /// Waits, once `stop` has turned true, for the pass under way to end:
    /// at most a few seconds, then it is abandoned (a schedule it had not
    /// claimed fires on the next instance's pass).
    pub async fn stopped(self) {
        if let Some(mut task) = self.task
            && tokio::time::timeout(STOP_TIME, &mut task).await.is_err()
        {
            tracing::warn!("the scheduler did not stop in time; its pass is abandoned");
            task.abort();
        }
    }
}

/// Fires due schedules every `scheduler_interval` until `stop` fires.
async fn schedule(state: AppState, mut stop: watch::Receiver<bool>) {
    let interval = state.config.settings.scheduler_interval();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.changed() => return,
        }
        let wait = match triggers::fire_due(&state).await {
            Ok(0) => continue,
            Ok(fired) => {
                tracing::debug!(fired, "scheduler pass");
                continue;
            }
            Err(err) => {
                tracing::error!(error = ?err, "looking for due schedules failed");
                ERROR_BACKOFF
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
    }
}
