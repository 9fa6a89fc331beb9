//! The scheduler: on every instance, it fires the schedules that are due.
//! Instances race for each firing and the database decides: a firing is
//! claimed by moving the trigger's `next_run_at` on from the value read (see
//! `triggers`), so each due run starts exactly one execution however many
//! instances run. It belongs to the triggers; the app starts it beside the
//! engine, and the executions it queues go through the engine's journal.

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::triggers;
use crate::engine::runner::ERROR_BACKOFF;
use crate::state::AppState;

/// A running scheduler.
pub struct Scheduler {
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl Scheduler {
    /// Starts firing due schedules, unless the settings turn the engine off.
    pub fn start(state: &AppState) -> Self {
        let (stop, stopped) = watch::channel(false);
        let task = state
            .config
            .settings
            .run_engine
            .then(|| tokio::spawn(schedule(state.clone(), stopped)));
        Self { stop, task }
    }

    /// Stops it after the pass under way, if any.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task {
            let _ = task.await;
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
        match triggers::fire_due(&state).await {
            Ok(0) => {}
            Ok(fired) => tracing::debug!(fired, "scheduler pass"),
            Err(err) => {
                tracing::error!(error = ?err, "looking for due schedules failed");
                tokio::time::sleep(ERROR_BACKOFF).await;
            }
        }
    }
}
