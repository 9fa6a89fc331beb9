//! The reaper: on every instance, it requeues executions whose worker
//! stopped renewing its lease (a crash, a network cut, a kill), so another
//! worker resumes them, and ends queued executions whose timeout passed
//! while they waited. Finished steps keep their outputs; steps that were
//! running run again.

use tokio::sync::watch;

use super::journal::{expired_leases, overdue_queued, requeue_expired, time_out_queued};
use super::runner::ERROR_BACKOFF;
use crate::state::AppState;

/// Most executions requeued in one pass.
const BATCH: u64 = 100;

/// Requeues expired leases every `reaper_interval` until `stop` fires.
pub async fn reap(state: AppState, mut stop: watch::Receiver<bool>) {
    let interval = state.config.settings.reaper_interval();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.changed() => return,
        }
        if let Err(err) = reap_once(&state).await {
            tracing::error!(error = %err, "requeuing expired leases failed");
            tokio::time::sleep(ERROR_BACKOFF).await;
        }
    }
}

/// One pass: requeues every execution whose lease has expired, and times
/// out queued (parked) executions whose timeout passed. Returns how many
/// executions it requeued.
pub async fn reap_once(state: &AppState) -> Result<usize, super::journal::EngineError> {
    let mut requeued = 0;
    for execution_id in expired_leases(state, BATCH).await? {
        if requeue_expired(state, execution_id).await? {
            tracing::warn!(%execution_id, "lease expired; execution requeued");
            requeued += 1;
        }
    }
    for execution_id in overdue_queued(state, BATCH).await? {
        if time_out_queued(state, execution_id).await? {
            tracing::info!(%execution_id, "a queued execution timed out");
        }
    }
    Ok(requeued)
}
