//! The workers of one process: a dispatcher claims as many executions as
//! there are idle workers, in one claim, and runs each on a worker of its
//! own. When all are idle and nothing is claimable it waits for a wake-up on
//! the control topic (published when work is enqueued) or, as a fallback,
//! the poll interval.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use uuid::Uuid;

use super::cancel::{self, Cancellations};
use super::journal::{Claimed, EngineError, claim_executions};
use super::reaper::reap;
use super::runner::{ERROR_BACKOFF, RunOutcome, run_execution};
use crate::events::Topic;
use crate::events::bus::Subscription;
use crate::state::AppState;

/// How long `shutdown` waits, beyond the grace period for steps in flight,
/// for workers to hand their executions back.
const HAND_BACK_TIME: Duration = Duration::from_secs(10);

/// The workers and the reaper of one process.
pub struct Engine {
    stop: Arc<watch::Sender<bool>>,
    workers: JoinSet<()>,
    grace: Duration,
}

/// Tells an engine's workers to stop claiming and start handing back.
#[derive(Clone)]
pub struct StopSignal(Arc<watch::Sender<bool>>);

impl StopSignal {
    pub fn stop(&self) {
        let _ = self.0.send(true);
    }
}

impl Engine {
    /// Starts `settings.workers` workers. Each has a subscription to the
    /// control topic before this returns, so no wake-up published
    /// afterwards is missed.
    /// Starts nothing when the settings turn the engine off.
    pub async fn start(state: &AppState) -> Self {
        let (stop, stopped) = watch::channel(false);
        let mut workers = JoinSet::new();
        let engine = |workers| Self {
            stop: Arc::new(stop),
            workers,
            grace: state.config.settings.shutdown_grace(),
        };
        if !state.config.settings.run_engine {
            return engine(workers);
        }
        let instance = Uuid::now_v7().simple().to_string();
        let cancellations = Cancellations::default();
        if state.config.settings.workers > 0 {
            let control = state.bus.subscribe(Topic::Control).await;
            workers.spawn(cancel::listen(
                control,
                cancellations.clone(),
                stopped.clone(),
            ));
        }
        if state.config.settings.workers > 0 {
            let wakeups = state.bus.subscribe(Topic::Control).await;
            let worker_id = instance[instance.len() - 12..].to_owned();
            workers.spawn(dispatch(
                state.clone(),
                worker_id,
                wakeups,
                stopped.clone(),
                cancellations.clone(),
            ));
        }
        // Every instance reaps, workers or not, so a fleet of API-only
        // instances still recovers executions of a crashed worker process.
        workers.spawn(reap(state.clone(), stopped.clone()));
        engine(workers)
    }

    /// A handle that starts the shutdown without waiting for it, so workers
    /// drain while the HTTP server drains.
    pub fn stop_signal(&self) -> StopSignal {
        StopSignal(self.stop.clone())
    }

    /// Stops claiming, lets steps in flight finish within the grace period,
    /// hands the rest back, and waits for the workers.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        let drained = tokio::time::timeout(self.grace + HAND_BACK_TIME, async {
            while self.workers.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                "workers did not stop in time; their leases will expire and be requeued"
            );
            self.workers.abort_all();
        }
    }
}

/// Claims work for idle workers and runs it until `stop`; then waits for
/// the runs in progress (which hand back at `stop`).
async fn dispatch(
    state: AppState,
    worker_id: String,
    mut wakeups: Subscription,
    mut stop: watch::Receiver<bool>,
    cancellations: Cancellations,
) {
    let lease_for = state.config.settings.lease_duration();
    let poll = state.config.settings.poll_interval();
    let idle = Arc::new(Semaphore::new(state.config.settings.workers));
    let mut runs = JoinSet::new();
    loop {
        while runs.try_join_next().is_some() {}
        if *stop.borrow() {
            break;
        }
        let first = tokio::select! {
            permit = idle.clone().acquire_owned() => permit,
            _ = stop.changed() => break,
        };
        let Ok(first) = first else { break };
        let mut permits = vec![first];
        while let Ok(permit) = idle.clone().try_acquire_owned() {
            permits.push(permit);
        }
        match claim_executions(&state, &worker_id, lease_for, permits.len()).await {
            Ok(claimed) if !claimed.is_empty() => {
                for (claimed, permit) in claimed.into_iter().zip(permits) {
                    let run = run(state.clone(), claimed, stop.clone(), cancellations.clone());
                    runs.spawn(async move {
                        run.await;
                        drop(permit);
                    });
                }
                continue;
            }
            Ok(_) => {}
            Err(err) => {
                tracing::error!(error = %err, "claiming executions failed");
                drop(permits);
                tokio::time::sleep(ERROR_BACKOFF).await;
                continue;
            }
        }
        drop(permits);
        tokio::select! {
            // Any signal (a wake-up, or a lag or reconnect that may have
            // hidden one) is a reason to look again; a closed bus falls back
            // to polling.
            signal = wakeups.recv() => {
                if signal.is_none() {
                    tokio::time::sleep(poll).await;
                }
            }
            _ = tokio::time::sleep(poll) => {}
            // A run ended: it may have made room (a concurrency limit) for
            // an execution passed over.
            Some(_) = runs.join_next(), if !runs.is_empty() => {}
            _ = stop.changed() => break,
        }
    }
    while runs.join_next().await.is_some() {}
}

/// Runs one claimed execution to its end on this worker.
async fn run(
    state: AppState,
    claimed: Claimed,
    stop: watch::Receiver<bool>,
    cancellations: Cancellations,
) {
    let execution_id = claimed.execution.id;
    tracing::debug!(%execution_id, "execution claimed");
    match run_execution(state, claimed, stop, cancellations).await {
        Ok(RunOutcome::Finished(status)) => {
            tracing::debug!(%execution_id, ?status, "execution finished")
        }
        Ok(RunOutcome::Parked) => {
            tracing::info!(%execution_id, "execution parked until its next step is due")
        }
        Ok(RunOutcome::HandedBack) => {
            tracing::info!(%execution_id, "execution handed back at shutdown")
        }
        Err(EngineError::LeaseLost) => {
            tracing::warn!(%execution_id, "lease lost; another worker owns the execution")
        }
        Err(err) => {
            tracing::error!(%execution_id, error = %err, "running an execution failed");
            tokio::time::sleep(ERROR_BACKOFF).await;
        }
    }
}
