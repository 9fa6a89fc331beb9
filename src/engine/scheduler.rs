//! The scheduler: on every instance, it fires the schedules that are due.
//! Instances race for each firing and the database decides: a firing is
//! claimed by moving the trigger's `next_run_at` on from the value read (see
//! `workflows::triggers`), so each due run starts exactly one execution
//! however many instances run.

use tokio::sync::watch;

use super::runner::ERROR_BACKOFF;
use crate::state::AppState;
use crate::workflows::triggers;

/// Fires due schedules every `scheduler_interval` until `stop` fires.
pub async fn schedule(state: AppState, mut stop: watch::Receiver<bool>) {
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
