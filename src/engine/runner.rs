//! Runs one claimed execution's DAG to the end.
//!
//! Steps whose `needs` all SUCCEEDED start (independent ones run
//! concurrently); a step whose needs include a skipped, cancelled or failed
//! step is SKIPPED. When a step FAILS the execution FAILS: running steps are
//! cancelled and steps not yet run end CANCELLED. Every change goes into the
//! run's `journal::Record`, written, fenced by the lease, before a step that
//! acts outside starts, whenever the runner waits, and with the execution's
//! end; steps that run in memory start and end between two writes. If the
//! lease is lost the runner stops without writing. A heartbeat renews the
//! lease while the runner works and stops with it, so a runner that errors
//! out lets its lease expire and the reaper hands the execution to another
//! worker.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use entity::status::{ExecutionStatus, StepStatus};
use entity::step_run;
use sea_orm::{ColumnTrait, DbErr, EntityTrait, QueryFilter};
use serde_json::{Map, Value, json};
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinHandle, JoinSet};

use super::cancel::Cancellations;
use super::definitions::Definition;
use super::journal::{
    self, Claimed, EngineError, ExecutionUpdate, Lease, RECORD_MAX_EVENTS, Record, StepUpdate,
};
use super::rendering::Rendering;
use super::state::{ExecutionChange, RequeueReason};
use super::steps::{self, StepContext};
use super::storable;
use crate::state::AppState;
use crate::workflows::definition::{StepConfig, StepDefinition, StepKind, WorkflowDefinition};

/// Keeps a worker from spinning when the database fails repeatedly.
pub const ERROR_BACKOFF: Duration = Duration::from_secs(1);

/// How a run ended for this worker.
#[derive(Debug, PartialEq, Eq)]
pub enum RunOutcome {
    /// The execution reached a terminal status.
    Finished(ExecutionStatus),
    /// The worker is shutting down and handed the execution back.
    HandedBack,
    /// Everything left waits longer than a worker holds on: the execution is
    /// back in the queue until it is due.
    Parked,
}

/// Runs `claimed` until it finishes, is cancelled, the lease is lost, or
/// `shutdown` fires.
pub async fn run_execution(
    state: AppState,
    claimed: Claimed,
    shutdown: watch::Receiver<bool>,
    cancellations: Cancellations,
) -> Result<RunOutcome, EngineError> {
    let mut cancel = cancellations.watch(claimed.execution.id);
    if claimed.execution.cancel_requested {
        cancellations.cancel(claimed.execution.id);
    }
    let (lost_tx, lost) = watch::channel(false);
    let heartbeat = heartbeat(
        state.clone(),
        claimed.lease.clone(),
        lost_tx,
        cancellations.clone(),
    );
    let _heartbeat = AbortOnDrop(tokio::spawn(heartbeat));
    let claims = claimed.execution.claims_without_progress;
    let max_claims = state.config.settings.steps.max_claims_without_progress;
    if claims > i32::try_from(max_claims).unwrap_or(i32::MAX) {
        // Every earlier claim ended without a step recording an outcome (its
        // worker crashed, or its results could not be stored): running it
        // again would do the same, and repeat its steps' effects.
        let error = format!(
            "it was claimed {} times without progress (FLOWPILOT_MAX_CLAIMS_WITHOUT_PROGRESS is {max_claims}); its worker may have crashed or its results may not be storable",
            claims - 1
        );
        journal::fail_without_progress(&state, &claimed.lease, error).await?;
        return Ok(RunOutcome::Finished(ExecutionStatus::Failed));
    }
    match Runner::load(state.clone(), claimed).await? {
        Loaded::Runnable(runner) => runner.run(lost, shutdown, &mut cancel.requested).await,
        Loaded::Unreadable { lease, reason } => {
            // Running it again would fail the same way: fail it for good.
            let update = ExecutionUpdate {
                error: Some(reason),
                ..ExecutionUpdate::default()
            };
            journal::change_execution(
                &state,
                &lease,
                ExecutionChange::To(ExecutionStatus::Failed),
                update,
            )
            .await?;
            Ok(RunOutcome::Finished(ExecutionStatus::Failed))
        }
    }
}

/// A DELAY step's timer. It is kept by the runner rather than a sleeping
/// task, so a long one can park the execution, and its end (stored in the
/// step's input) survives a crash or a park.
#[derive(Clone, Copy, Debug)]
struct Delay {
    until: DateTime<Utc>,
    /// The step's timeout, when it ends the attempt before `until`.
    fails_at: Option<DateTime<Utc>>,
}

impl Delay {
    fn due(&self) -> DateTime<Utc> {
        self.fails_at
            .map_or(self.until, |fails_at| fails_at.min(self.until))
    }
}

/// Sleeps until `deadline`, or forever when there is none.
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Sleeps for `wait`, or forever when there is nothing to wait for.
async fn sleep_for(wait: Option<std::time::Duration>) {
    match wait {
        Some(wait) => tokio::time::sleep(wait).await,
        None => std::future::pending().await,
    }
}

/// Aborts a background task when dropped, on every way out of a scope.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Renews the lease every third of its length until it is lost, and
/// raises the cancel flag when the row says a cancel was requested (in case
/// the control topic's message never arrived).
async fn heartbeat(
    state: AppState,
    lease: Lease,
    lost: watch::Sender<bool>,
    cancellations: Cancellations,
) {
    let lease_for = state.config.settings.lease_duration();
    loop {
        tokio::time::sleep(lease_for / 3).await;
        match journal::renew_lease(&state, &lease, lease_for).await {
            Ok(true) => cancellations.cancel(lease.execution_id),
            Ok(false) => {}
            Err(EngineError::LeaseLost) => {
                let _ = lost.send(true);
                return;
            }
            Err(err) => {
                tracing::warn!(execution_id = %lease.execution_id, error = %err, "renewing a lease failed; retrying")
            }
        }
    }
}

/// What one attempt of a step produced: the rendered config it ran with
/// (when it got that far) and its output or error.
struct Attempt {
    input: Option<Value>,
    result: Result<Value, String>,
}

impl Attempt {
    fn failed(input: Option<Value>, message: String) -> Self {
        Self {
            input,
            result: Err(message),
        }
    }
}

/// One attempt of a step: renders `config` and executes it, both within
/// the step's timeout. The rendered config is kept as the attempt's input
/// even when the attempt then times out.
async fn attempt(
    rendering: Rendering,
    config: StepConfig,
    template_context: Arc<Value>,
    context: StepContext,
) -> Attempt {
    let timeout = context.timeout;
    let rendered_input: Arc<Mutex<Option<Value>>> = Arc::default();
    let kept = rendered_input.clone();
    let run = async move {
        let config = rendering
            .render(config, template_context)
            .await
            .map_err(|message| format!("its config did not render: {message}"))?;
        if let Ok(mut slot) = kept.lock() {
            *slot = Some(config.to_json());
        }
        steps::execute(config, context).await
    };
    let result = match timeout {
        Some(limit) => tokio::time::timeout(limit, run).await.unwrap_or_else(|_| {
            Err(format!(
                "the attempt timed out after {} ms",
                limit.as_millis()
            ))
        }),
        None => run.await,
    };
    let input = rendered_input.lock().ok().and_then(|mut slot| slot.take());
    Attempt { input, result }
}

/// The step runs of an execution as written, by step id.
async fn step_runs(
    state: &AppState,
    execution_id: uuid::Uuid,
) -> Result<HashMap<String, step_run::Model>, DbErr> {
    let steps = step_run::Entity::find()
        .filter(step_run::Column::ExecutionId.eq(execution_id))
        .all(&state.db)
        .await?;
    Ok(steps
        .into_iter()
        .map(|step| (step.step_id.clone(), step))
        .collect())
}

enum Loaded {
    Runnable(Box<Runner>),
    /// The version or its definition cannot be read back.
    Unreadable {
        lease: Lease,
        reason: String,
    },
}

struct Runner {
    state: AppState,
    /// The changes made under the lease; written together (see `write`).
    record: Record,
    /// Whether changes wait to be written together; off after a write of
    /// several failed, so the one at fault is found and handled alone.
    batching: bool,
    input: Value,
    definition: Arc<WorkflowDefinition>,
    steps: HashMap<String, step_run::Model>,
    running: HashMap<String, AbortHandle>,
    /// Which step each running task executes, to name a task that panicked.
    task_steps: HashMap<tokio::task::Id, String>,
    tasks: JoinSet<(String, Attempt)>,
    /// DELAY steps in progress: when each ends, and when it would time out.
    delays: HashMap<String, Delay>,
    /// When the execution times out (its first start plus its timeout).
    timeout_at: Option<DateTime<Utc>>,
    timeout_ms: Option<i64>,
    /// Set when the worker is stopping: no step starts, and steps in flight
    /// may finish until then.
    draining_until: Option<tokio::time::Instant>,
}

impl Runner {
    async fn load(state: AppState, claimed: Claimed) -> Result<Loaded, EngineError> {
        let execution = claimed.execution;
        let definition = match state
            .definitions
            .get(&state.db, execution.workflow_version_id)
            .await?
        {
            Definition::Readable(definition) => definition,
            Definition::Unreadable(reason) => {
                return Ok(Loaded::Unreadable {
                    lease: claimed.lease,
                    reason,
                });
            }
        };
        let steps = claimed
            .steps
            .into_iter()
            .map(|step| (step.step_id.clone(), step))
            .collect();
        let (input, timeout_at, timeout_ms) = (
            execution.input.clone(),
            execution.timeout_at,
            execution.timeout_ms,
        );
        Ok(Loaded::Runnable(Box::new(Self {
            state,
            record: Record::new(execution, claimed.lease),
            batching: true,
            input,
            definition,
            steps,
            running: HashMap::new(),
            task_steps: HashMap::new(),
            tasks: JoinSet::new(),
            delays: HashMap::new(),
            timeout_at,
            timeout_ms,
            draining_until: None,
        })))
    }

    async fn run(
        mut self,
        mut lost: watch::Receiver<bool>,
        mut shutdown: watch::Receiver<bool>,
        cancel: &mut watch::Receiver<bool>,
    ) -> Result<RunOutcome, EngineError> {
        let result = match self.prepare(cancel).await {
            Ok(Some(outcome)) => Ok(outcome),
            Err(err) => Err(err),
            Ok(None) => loop {
                match self.drive(&mut lost, &mut shutdown, cancel).await {
                    Err(EngineError::Db(err)) if self.batching => {
                        tracing::warn!(execution_id = %self.record.lease().execution_id, error = %err, "changes written together could not be stored; writing them one at a time");
                        if let Err(err) = self.write_one_at_a_time().await {
                            break Err(err);
                        }
                    }
                    other => break other,
                }
            },
        };
        self.tasks.abort_all();
        result
    }

    /// Before the first step: steps a lost worker left running go back,
    /// a cancel already asked for is honoured, and a failure a previous run
    /// recorded without ending the execution is finished. `Some` when the
    /// run ends here.
    async fn prepare(
        &mut self,
        cancel: &mut watch::Receiver<bool>,
    ) -> Result<Option<RunOutcome>, EngineError> {
        self.recover_interrupted_steps().await?;
        if *cancel.borrow_and_update() {
            return self.cancel().await.map(Some);
        }
        // A previous run may have stopped between a step failing for good and
        // the execution failing: finish that failure rather than go on.
        if let Some(failed) = self.steps.values().find(|s| s.status == StepStatus::Failed) {
            let (step_id, error) = (
                failed.step_id.clone(),
                failed.error.clone().unwrap_or_default(),
            );
            return self.fail(&step_id, error).await.map(Some);
        }
        self.write().await?;
        Ok(None)
    }

    /// After a write of several changes failed: forgets them, reads the
    /// steps back as they were last written (steps whose work runs were
    /// written before it started), and writes each change on its own from
    /// now on, so a change the database refuses is handled alone.
    async fn write_one_at_a_time(&mut self) -> Result<(), EngineError> {
        self.batching = false;
        self.record.discard();
        self.steps = step_runs(&self.state, self.record.lease().execution_id).await?;
        let steps = &self.steps;
        self.delays.retain(|id, _| {
            steps
                .get(id)
                .is_some_and(|s| s.status == StepStatus::Running)
        });
        Ok(())
    }

    async fn drive(
        &mut self,
        lost: &mut watch::Receiver<bool>,
        shutdown: &mut watch::Receiver<bool>,
        cancel: &mut watch::Receiver<bool>,
    ) -> Result<RunOutcome, EngineError> {
        loop {
            if self
                .timeout_at
                .is_some_and(|at| at <= self.state.clock.now())
            {
                return self.time_out().await;
            }
            if let Some(outcome) = self.schedule().await? {
                return Ok(outcome);
            }
            if self.draining_until.is_some() && self.running.is_empty() {
                return if self.all_steps_finished() {
                    self.succeed().await
                } else {
                    self.hand_back().await
                };
            }
            let next_wake = self.next_wake();
            if self.running.is_empty() && next_wake.is_none() {
                return self.succeed().await;
            }
            let now = self.state.clock.now();
            if self.running.is_empty()
                && let Some(wake) = next_wake
                && wake - now > self.state.config.settings.park_after()
            {
                return self.park(wake).await;
            }
            // Everything done so far is written before the runner waits.
            self.write().await?;
            let wait_until =
                |at: Option<DateTime<Utc>>| at.map(|at| (at - now).to_std().unwrap_or_default());
            let (wake_wait, timeout_wait) = (wait_until(next_wake), wait_until(self.timeout_at));
            tokio::select! {
                Some(joined) = self.tasks.join_next_with_id() => {
                    let (step_id, attempt) = match joined {
                        Ok((_, done)) => done,
                        Err(err) => {
                            let step_id = self.task_steps.get(&err.id()).cloned().unwrap_or_default();
                            (step_id, Attempt::failed(None, format!("the step crashed: {err}")))
                        }
                    };
                    if let Some(outcome) = self.complete(step_id, attempt).await? {
                        return Ok(outcome);
                    }
                }
                // A retry or a DELAY is due.
                () = sleep_for(wake_wait), if wake_wait.is_some() => {
                    if let Some(outcome) = self.finish_due_delays().await? {
                        return Ok(outcome);
                    }
                }
                () = sleep_for(timeout_wait), if timeout_wait.is_some() => return self.time_out().await,
                _ = lost.changed() => return Err(EngineError::LeaseLost),
                _ = shutdown.changed(), if self.draining_until.is_none() => {
                    let grace = self.state.config.settings.shutdown_grace();
                    if self.running.is_empty() || grace.is_zero() {
                        return self.hand_back().await;
                    }
                    self.draining_until = Some(tokio::time::Instant::now() + grace);
                }
                () = sleep_until(self.draining_until), if self.draining_until.is_some() => {
                    return self.hand_back().await;
                }
                _ = cancel.changed() => return self.cancel().await,
            }
        }
    }

    /// The earliest time a RETRYING step or a DELAY waits for, if any.
    fn next_wake(&self) -> Option<DateTime<Utc>> {
        let now = self.state.clock.now();
        let retries = self
            .steps
            .values()
            .filter(|s| s.status == StepStatus::Retrying)
            .filter_map(|s| s.next_retry_at)
            .filter(|at| *at > now);
        retries.chain(self.delays.values().map(Delay::due)).min()
    }

    /// Completes every DELAY whose time has come: SUCCEEDED at its end,
    /// or a failed attempt when its timeout came first.
    async fn finish_due_delays(&mut self) -> Result<Option<RunOutcome>, EngineError> {
        let now = self.state.clock.now();
        let due: Vec<(String, Delay)> = self
            .delays
            .iter()
            .filter(|(_, d)| d.due() <= now)
            .map(|(id, d)| (id.clone(), *d))
            .collect();
        for (step_id, delay) in due {
            self.delays.remove(&step_id);
            let result = if delay.until <= now {
                Ok(Value::Null)
            } else {
                let ms = self
                    .definition
                    .step(&step_id)
                    .and_then(|s| s.timeout_ms)
                    .unwrap_or_default();
                Err(format!("the attempt timed out after {ms} ms"))
            };
            let attempt = Attempt {
                input: None,
                result,
            };
            if let Some(outcome) = self.complete(step_id, attempt).await? {
                return Ok(Some(outcome));
            }
        }
        Ok(None)
    }

    /// Puts the execution back in the queue until `until`: DELAYs in progress
    /// go RETRYING (their end kept in their input), and no worker is held.
    async fn park(&mut self, until: DateTime<Utc>) -> Result<RunOutcome, EngineError> {
        let mut delays: Vec<(String, Delay)> = self.delays.drain().collect();
        delays.sort_by_key(|(id, _)| self.steps.get(id).map_or(0, |s| s.position));
        for (step_id, delay) in delays {
            let update = StepUpdate {
                next_retry_at: Some(delay.due()),
                ..StepUpdate::default()
            };
            self.set_step(&step_id, StepStatus::Retrying, update)
                .await?;
        }
        let update = ExecutionUpdate {
            run_after: Some(until),
            ..ExecutionUpdate::default()
        };
        self.end(ExecutionChange::Requeue(RequeueReason::Parked), update)
            .await?;
        Ok(RunOutcome::Parked)
    }

    /// Steps a lost worker left RUNNING run again.
    async fn recover_interrupted_steps(&mut self) -> Result<(), EngineError> {
        let mut interrupted: Vec<&step_run::Model> = self
            .steps
            .values()
            .filter(|s| s.status == StepStatus::Running)
            .collect();
        interrupted.sort_by_key(|s| s.position);
        let interrupted: Vec<String> = interrupted.into_iter().map(|s| s.step_id.clone()).collect();
        for step_id in interrupted {
            let update = StepUpdate {
                error: Some("its worker was lost; it will run again".into()),
                ..StepUpdate::default()
            };
            self.set_step(&step_id, StepStatus::Retrying, update)
                .await?;
        }
        Ok(())
    }

    /// Starts every step that is ready and skips every step that can no
    /// longer run, until nothing changes. A step whose config cannot be read
    /// fails the execution; one whose templates do not render fails its
    /// attempt (see `start`).
    async fn schedule(&mut self) -> Result<Option<RunOutcome>, EngineError> {
        loop {
            let mut changed = false;
            for step in self.definition.steps.clone() {
                let status = self.status_of(&step.id);
                if !matches!(status, StepStatus::Pending | StepStatus::Retrying) {
                    continue;
                }
                let waiting = self
                    .steps
                    .get(&step.id)
                    .and_then(|s| s.next_retry_at)
                    .is_some_and(|at| at > self.state.clock.now());
                if status == StepStatus::Retrying && waiting {
                    continue;
                }
                let needs: Vec<StepStatus> =
                    step.needs.iter().map(|need| self.status_of(need)).collect();
                let all_succeeded = needs.iter().all(|s| *s == StepStatus::Succeeded);
                let condition_false = step.needs.iter().any(|need| self.is_false_condition(need));
                if all_succeeded && !condition_false {
                    if self.draining_until.is_some() {
                        // A stopping worker starts nothing; the next one will.
                        continue;
                    }
                    if self.running.len() >= self.state.config.settings.steps.max_parallel_steps {
                        // It starts when a running step ends.
                        continue;
                    }
                    if let Some(outcome) = self.start(&step).await? {
                        return Ok(Some(outcome));
                    }
                    changed = true;
                } else if status == StepStatus::Pending
                    && (condition_false
                        || needs.iter().any(|s| {
                            matches!(
                                s,
                                StepStatus::Skipped | StepStatus::Cancelled | StepStatus::Failed
                            )
                        }))
                {
                    self.set_step(&step.id, StepStatus::Skipped, StepUpdate::default())
                        .await?;
                    changed = true;
                }
            }
            if !changed {
                return Ok(None);
            }
        }
    }

    /// Starts `step`: a DELAY begins waiting here; a step that runs in
    /// memory (see `steps::runs_in_memory`) renders, runs and completes
    /// here, its changes written with the next ones; any other kind is
    /// written as started, then runs as a task. Each renders its config (see
    /// `rendering`) and executes it within the step's timeout.
    async fn start(&mut self, step: &StepDefinition) -> Result<Option<RunOutcome>, EngineError> {
        let config = match step.parsed_config() {
            Ok(config) => config,
            Err(err) => {
                self.set_step(&step.id, StepStatus::Running, StepUpdate::default())
                    .await?;
                let message = format!("its config did not render: {err:?}");
                return self.fail(&step.id, message).await.map(Some);
            }
        };
        if let StepConfig::Delay { ms } = config {
            self.start_delay(step, ms).await?;
            return Ok(None);
        }
        self.set_step(&step.id, StepStatus::Running, StepUpdate::default())
            .await?;
        let context = StepContext {
            http: self.state.http_steps.clone(),
            idempotency_key: format!("{}:{}", self.record.lease().execution_id, step.id),
            timeout: step.timeout_ms.map(Duration::from_millis),
        };
        let rendering = self.state.rendering.clone();
        let template_context = Arc::new(self.template_context());
        if steps::runs_in_memory(&config) {
            let attempt = attempt(rendering, config, template_context, context).await;
            return self.complete(step.id.clone(), attempt).await;
        }
        // What the step does outside may not happen before its start is
        // written.
        self.write().await?;
        let step_id = step.id.clone();
        let handle = self.tasks.spawn(async move {
            let attempt = attempt(rendering, config, template_context, context).await;
            (step_id, attempt)
        });
        self.task_steps.insert(handle.id(), step.id.clone());
        self.running.insert(step.id.clone(), handle);
        Ok(None)
    }

    /// A DELAY keeps the end it was given when it first started, so a
    /// re-run after a crash or a park waits only for what is left.
    async fn start_delay(&mut self, step: &StepDefinition, ms: u64) -> Result<(), EngineError> {
        let now = self.state.clock.now();
        let until = self
            .earlier_delay_end(&step.id)
            .unwrap_or(now + chrono::Duration::milliseconds(ms as i64));
        let input = json!({ "ms": ms, "until": until });
        let fails_at = step
            .timeout_ms
            .map(|ms| now + chrono::Duration::milliseconds(ms as i64));
        let delay = Delay {
            until,
            fails_at: fails_at.filter(|at| *at < until),
        };
        self.set_step(
            &step.id,
            StepStatus::Running,
            StepUpdate {
                input: Some(input),
                ..StepUpdate::default()
            },
        )
        .await?;
        self.delays.insert(step.id.clone(), delay);
        Ok(())
    }

    /// The end an earlier attempt of a DELAY step recorded, if any.
    fn earlier_delay_end(&self, step_id: &str) -> Option<DateTime<Utc>> {
        let input = self.steps.get(step_id)?.input.as_ref()?;
        serde_json::from_value(input.get("until")?.clone()).ok()
    }

    /// Records an attempt's end. Its output and error are made storable
    /// and measured first: an output over the size limit fails the attempt,
    /// and an output the database still refuses fails it too, rather than
    /// leave the execution running.
    async fn complete(
        &mut self,
        step_id: String,
        attempt: Attempt,
    ) -> Result<Option<RunOutcome>, EngineError> {
        if let Some(handle) = self.running.remove(&step_id) {
            self.task_steps.remove(&handle.id());
        }
        let max_bytes = self.state.config.settings.steps.max_step_output_bytes;
        let input = attempt.input.map(storable::value);
        let result = attempt.result.and_then(|output| {
            let output = storable::value(output);
            match storable::json_len(&output) {
                len if len > max_bytes => Err(format!(
                    "its output is {len} bytes, over the limit of {max_bytes} (FLOWPILOT_MAX_STEP_OUTPUT_BYTES)"
                )),
                _ => Ok(output),
            }
        });
        match result {
            Ok(output) => {
                let update = StepUpdate {
                    input: input.clone(),
                    output: Some(output),
                    ..StepUpdate::default()
                };
                match self.set_step(&step_id, StepStatus::Succeeded, update).await {
                    Err(EngineError::Db(err)) => {
                        tracing::warn!(execution_id = %self.record.lease().execution_id, step_id, error = %err, "a step's output could not be stored");
                        let message = "its output could not be stored".to_owned();
                        self.retry_or_fail(&step_id, input, message).await
                    }
                    other => other.map(|()| None),
                }
            }
            Err(message) => {
                let message = storable::message(message, max_bytes);
                self.retry_or_fail(&step_id, input, message).await
            }
        }
    }

    /// After a failed attempt: RETRYING with `next_retry_at` while the
    /// policy allows more attempts, otherwise the step (and execution) fail.
    async fn retry_or_fail(
        &mut self,
        step_id: &str,
        input: Option<Value>,
        message: String,
    ) -> Result<Option<RunOutcome>, EngineError> {
        let policy = self
            .definition
            .step(step_id)
            .map(|s| s.retry_policy())
            .unwrap_or_default();
        let failures = self.steps.get(step_id).map_or(0, |s| s.failed_attempts) + 1;
        if failures >= policy.max_attempts as i32 {
            return self
                .fail_with_input(step_id, input, message)
                .await
                .map(Some);
        }
        let spread = rand::Rng::gen_range(&mut rand::thread_rng(), -1.0..=1.0);
        let wait =
            chrono::Duration::from_std(policy.backoff(failures as u32, spread)).unwrap_or_default();
        let update = StepUpdate {
            input,
            error: Some(message),
            failed: true,
            next_retry_at: Some(self.state.clock.now() + wait),
            ..StepUpdate::default()
        };
        self.set_step(step_id, StepStatus::Retrying, update).await?;
        Ok(None)
    }

    /// Ends the execution TIMED_OUT, cancelling what runs and what has not run.
    async fn time_out(&mut self) -> Result<RunOutcome, EngineError> {
        self.cancel_unfinished_steps().await?;
        let update = ExecutionUpdate {
            error: Some(journal::timeout_error(self.timeout_ms)),
            ..ExecutionUpdate::default()
        };
        self.end(ExecutionChange::To(ExecutionStatus::TimedOut), update)
            .await?;
        Ok(RunOutcome::Finished(ExecutionStatus::TimedOut))
    }

    /// Fails `step_id` for good, cancels everything else, fails the execution.
    async fn fail(&mut self, step_id: &str, message: String) -> Result<RunOutcome, EngineError> {
        self.fail_with_input(step_id, None, message).await
    }

    /// As [`Runner::fail`], recording the config the last attempt ran with.
    async fn fail_with_input(
        &mut self,
        step_id: &str,
        input: Option<Value>,
        message: String,
    ) -> Result<RunOutcome, EngineError> {
        if self.status_of(step_id) == StepStatus::Running {
            let update = StepUpdate {
                input,
                error: Some(message.clone()),
                failed: true,
                ..StepUpdate::default()
            };
            self.set_step(step_id, StepStatus::Failed, update).await?;
        }
        self.running.remove(step_id);
        self.fail_execution(format!("step `{step_id}` failed: {message}"))
            .await
    }

    /// Cancels every step not yet finished and fails the execution with
    /// `error`.
    async fn fail_execution(&mut self, error: String) -> Result<RunOutcome, EngineError> {
        self.cancel_unfinished_steps().await?;
        let update = ExecutionUpdate {
            error: Some(error),
            ..ExecutionUpdate::default()
        };
        self.end(ExecutionChange::To(ExecutionStatus::Failed), update)
            .await?;
        Ok(RunOutcome::Finished(ExecutionStatus::Failed))
    }

    /// Aborts running steps and ends every step not yet finished CANCELLED,
    /// in definition order.
    async fn cancel_unfinished_steps(&mut self) -> Result<(), EngineError> {
        for (_, handle) in self.running.drain() {
            handle.abort();
        }
        self.delays.clear();
        let unfinished: Vec<String> = self
            .definition
            .steps
            .iter()
            .filter(|s| !self.status_of(&s.id).is_terminal())
            .map(|s| s.id.clone())
            .collect();
        for id in unfinished {
            self.set_step(&id, StepStatus::Cancelled, StepUpdate::default())
                .await?;
        }
        Ok(())
    }

    /// Cancels what runs and what has not run, then the execution.
    async fn cancel(&mut self) -> Result<RunOutcome, EngineError> {
        self.cancel_unfinished_steps().await?;
        let change = ExecutionChange::To(ExecutionStatus::Cancelled);
        self.end(change, ExecutionUpdate::default()).await?;
        Ok(RunOutcome::Finished(ExecutionStatus::Cancelled))
    }

    async fn succeed(&mut self) -> Result<RunOutcome, EngineError> {
        let output = self.output();
        let max_bytes = self.state.config.settings.steps.max_step_output_bytes;
        let len = storable::json_len(&output);
        if len > max_bytes {
            let error = format!(
                "its output is {len} bytes, over the limit of {max_bytes} (FLOWPILOT_MAX_STEP_OUTPUT_BYTES)"
            );
            return self.fail_execution(error).await;
        }
        let update = ExecutionUpdate {
            output: Some(output),
            ..ExecutionUpdate::default()
        };
        self.end(ExecutionChange::To(ExecutionStatus::Succeeded), update)
            .await?;
        Ok(RunOutcome::Finished(ExecutionStatus::Succeeded))
    }

    /// Stops running steps (they run again) and requeues the execution so
    /// another worker picks it up.
    async fn hand_back(&mut self) -> Result<RunOutcome, EngineError> {
        let mut running: Vec<String> = self
            .running
            .keys()
            .chain(self.delays.keys())
            .cloned()
            .collect();
        running.sort_by_key(|id| self.steps.get(id).map_or(0, |s| s.position));
        for (_, handle) in self.running.drain() {
            handle.abort();
        }
        for step_id in running {
            // A DELAY waits on for what is left of it; other steps run again.
            let next_retry_at = self.delays.remove(&step_id).map(|delay| delay.due());
            let update = StepUpdate {
                error: Some("handed back at shutdown; it will run again".into()),
                next_retry_at,
                ..StepUpdate::default()
            };
            self.set_step(&step_id, StepStatus::Retrying, update)
                .await?;
        }
        let change = ExecutionChange::Requeue(RequeueReason::HandedBack);
        // Back in the queue and claimable: the journal wakes the workers.
        self.end(change, ExecutionUpdate::default()).await?;
        Ok(RunOutcome::HandedBack)
    }

    async fn set_step(
        &mut self,
        step_id: &str,
        to: StepStatus,
        update: StepUpdate,
    ) -> Result<(), EngineError> {
        let current = self.steps.get(step_id).ok_or_else(|| {
            DbErr::RecordNotFound(format!(
                "step run {step_id} of execution {}",
                self.record.lease().execution_id
            ))
        })?;
        let now = self.state.clock.now();
        let step = self.record.change_step(current, to, update, now)?;
        self.steps.insert(step_id.to_owned(), step);
        if !self.batching || self.record.pending() >= RECORD_MAX_EVENTS {
            self.write().await?;
        }
        Ok(())
    }

    /// Changes the execution (to its end, or back to the queue) and writes
    /// it with every change still pending.
    async fn end(
        &mut self,
        change: ExecutionChange,
        update: ExecutionUpdate,
    ) -> Result<(), EngineError> {
        let now = self.state.clock.now();
        self.record.change_execution(change, update, now)?;
        self.write().await
    }

    /// Writes the pending changes together (see `journal::Record`).
    async fn write(&mut self) -> Result<(), EngineError> {
        self.record.write(&self.state).await
    }

    /// Whether `step_id` is a CONDITION that succeeded with a false result.
    fn is_false_condition(&self, step_id: &str) -> bool {
        let is_condition = self
            .definition
            .step(step_id)
            .is_some_and(|s| s.kind == StepKind::Condition);
        let result = self
            .steps
            .get(step_id)
            .filter(|s| s.status == StepStatus::Succeeded)
            .and_then(|s| s.output.as_ref());
        is_condition && result.is_some_and(|output| output["result"] == Value::Bool(false))
    }

    fn all_steps_finished(&self) -> bool {
        self.definition
            .steps
            .iter()
            .all(|step| self.status_of(&step.id).is_terminal())
    }

    fn status_of(&self, step_id: &str) -> StepStatus {
        self.steps
            .get(step_id)
            .map_or(StepStatus::Pending, |s| s.status)
    }

    /// `{"input": …, "steps": {"<id>": {"output": …}}}` for templates.
    fn template_context(&self) -> Value {
        let steps: Map<String, Value> = self
            .steps
            .values()
            .filter(|s| s.status == StepStatus::Succeeded)
            .map(|s| {
                (
                    s.step_id.clone(),
                    json!({ "output": s.output.clone().unwrap_or(Value::Null) }),
                )
            })
            .collect();
        json!({ "input": self.input, "steps": steps })
    }

    /// The one sink's output, or an object keyed by sink id when there are
    /// several (skipped sinks left out).
    fn output(&self) -> Value {
        let sinks = self.definition.sinks();
        let output_of = |id: &str| {
            self.steps
                .get(id)
                .and_then(|s| s.output.clone())
                .unwrap_or(Value::Null)
        };
        match sinks.as_slice() {
            [only] => output_of(&only.id),
            several => Value::Object(
                several
                    .iter()
                    .filter(|s| self.status_of(&s.id) != StepStatus::Skipped)
                    .map(|s| (s.id.clone(), output_of(&s.id)))
                    .collect(),
            ),
        }
    }
}
