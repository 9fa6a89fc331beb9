//! GraphQL types and resolvers for executions and their event stream.
//! Event fields resolve from the event's snapshot without reading the
//! database; `input`, `steps` and `workflow` go through DataLoaders.

use async_graphql::{Context, Enum, ID, InputObject, Object, SimpleObject, Subscription, Union};

use crate::graphql::scalars::Json;
use chrono::{DateTime, Utc};
use entity::role::Role;
use entity::status;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use serde_json::Value;
use uuid::Uuid;

use super::service::{
    self, EventList, ExecutionFilter, ExecutionList, ExecutionParent, IdempotencyKey,
    MemberExecution, Priority, RunRequest,
};
use crate::error::AppError;
use crate::events::log::{EventKind, ExecutionEventRecord, ExecutionSnapshot};
use crate::events::organization_stream::{ResyncReason, StreamFilter, StreamItem, StreamStart};
use crate::events::watermark::StreamCursor;
use crate::graphql::connection::{ListConnection, PageArgs, list_connection};
use crate::graphql::context::{RequestContext, parse_id};
use crate::graphql::shared::{Feed, Keyed};
use crate::orgs::policy::{self, Action};
use crate::pagination::encode_cursor;
use crate::workflows::schema::{Workflow, load_workflow};
use crate::workflows::triggers_schema::{Trigger, TriggerKind};

/// Where an execution is in its life.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecutionStatus {
    /// Waiting for a worker to run it.
    Queued,
    /// A worker is running its steps.
    Running,
    /// Finished: no step failed; `output` holds the result.
    Succeeded,
    /// Finished: a step failed for good; `error` says which and why.
    Failed,
    /// Finished: cancelled with `cancelExecution`, or because its organization
    /// was deleted.
    Cancelled,
    /// Finished: it ran past its definition's `timeoutMs`.
    TimedOut,
}

impl From<status::ExecutionStatus> for ExecutionStatus {
    fn from(status: status::ExecutionStatus) -> Self {
        match status {
            status::ExecutionStatus::Queued => Self::Queued,
            status::ExecutionStatus::Running => Self::Running,
            status::ExecutionStatus::Succeeded => Self::Succeeded,
            status::ExecutionStatus::Failed => Self::Failed,
            status::ExecutionStatus::Cancelled => Self::Cancelled,
            status::ExecutionStatus::TimedOut => Self::TimedOut,
        }
    }
}

impl From<ExecutionStatus> for status::ExecutionStatus {
    fn from(status: ExecutionStatus) -> Self {
        match status {
            ExecutionStatus::Queued => Self::Queued,
            ExecutionStatus::Running => Self::Running,
            ExecutionStatus::Succeeded => Self::Succeeded,
            ExecutionStatus::Failed => Self::Failed,
            ExecutionStatus::Cancelled => Self::Cancelled,
            ExecutionStatus::TimedOut => Self::TimedOut,
        }
    }
}

/// Where one step of an execution is.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepStatus {
    /// Waiting for the steps it needs.
    Pending,
    /// An attempt is running.
    Running,
    /// An attempt failed; the next one starts at `nextRetryAt`.
    Retrying,
    /// Finished with an output.
    Succeeded,
    /// Its last attempt failed; the execution fails with it.
    Failed,
    /// Will not run: a step it needs did not succeed, or a CONDITION it needs
    /// was false.
    Skipped,
    /// Stopped, or never started, because the execution ended first.
    Cancelled,
}

impl From<status::StepStatus> for StepStatus {
    fn from(status: status::StepStatus) -> Self {
        match status {
            status::StepStatus::Pending => Self::Pending,
            status::StepStatus::Running => Self::Running,
            status::StepStatus::Retrying => Self::Retrying,
            status::StepStatus::Succeeded => Self::Succeeded,
            status::StepStatus::Failed => Self::Failed,
            status::StepStatus::Skipped => Self::Skipped,
            status::StepStatus::Cancelled => Self::Cancelled,
        }
    }
}

/// What an execution event records.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecutionEventKind {
    /// The execution was created and queued.
    ExecutionQueued,
    /// A worker started running it, or took it up again.
    ExecutionStarted,
    /// Back in the queue: its worker was lost or shut down.
    ExecutionRequeued,
    /// The execution ended SUCCEEDED.
    ExecutionSucceeded,
    /// The execution ended FAILED.
    ExecutionFailed,
    /// The execution ended CANCELLED.
    ExecutionCancelled,
    /// The execution ended TIMED_OUT.
    ExecutionTimedOut,
    /// An attempt of a step started.
    StepStarted,
    /// The step will run again.
    StepRetrying,
    /// A step succeeded; `stepOutput` holds its output.
    StepSucceeded,
    /// A step failed for good; `stepError` says why.
    StepFailed,
    /// A step will not run.
    StepSkipped,
    /// A step was stopped, or will not start, because the execution ended.
    StepCancelled,
}

impl From<ExecutionEventKind> for EventKind {
    fn from(kind: ExecutionEventKind) -> Self {
        match kind {
            ExecutionEventKind::ExecutionQueued => Self::ExecutionQueued,
            ExecutionEventKind::ExecutionStarted => Self::ExecutionStarted,
            ExecutionEventKind::ExecutionRequeued => Self::ExecutionRequeued,
            ExecutionEventKind::ExecutionSucceeded => Self::ExecutionSucceeded,
            ExecutionEventKind::ExecutionFailed => Self::ExecutionFailed,
            ExecutionEventKind::ExecutionCancelled => Self::ExecutionCancelled,
            ExecutionEventKind::ExecutionTimedOut => Self::ExecutionTimedOut,
            ExecutionEventKind::StepStarted => Self::StepStarted,
            ExecutionEventKind::StepRetrying => Self::StepRetrying,
            ExecutionEventKind::StepSucceeded => Self::StepSucceeded,
            ExecutionEventKind::StepFailed => Self::StepFailed,
            ExecutionEventKind::StepSkipped => Self::StepSkipped,
            ExecutionEventKind::StepCancelled => Self::StepCancelled,
        }
    }
}

impl From<EventKind> for ExecutionEventKind {
    fn from(kind: EventKind) -> Self {
        match kind {
            EventKind::ExecutionQueued => Self::ExecutionQueued,
            EventKind::ExecutionStarted => Self::ExecutionStarted,
            EventKind::ExecutionRequeued => Self::ExecutionRequeued,
            EventKind::ExecutionSucceeded => Self::ExecutionSucceeded,
            EventKind::ExecutionFailed => Self::ExecutionFailed,
            EventKind::ExecutionCancelled => Self::ExecutionCancelled,
            EventKind::ExecutionTimedOut => Self::ExecutionTimedOut,
            EventKind::StepStarted => Self::StepStarted,
            EventKind::StepRetrying => Self::StepRetrying,
            EventKind::StepSucceeded => Self::StepSucceeded,
            EventKind::StepFailed => Self::StepFailed,
            EventKind::StepSkipped => Self::StepSkipped,
            EventKind::StepCancelled => Self::StepCancelled,
        }
    }
}

/// One run of a workflow version.
pub struct Execution {
    snapshot: ExecutionSnapshot,
    /// Known when read from the database; loaded on demand for events.
    details: Option<ExecutionDetails>,
    viewer_role: Role,
}

/// The fields of an execution that events do not carry.
#[derive(Clone)]
struct ExecutionDetails {
    input: Value,
    priority: i32,
    idempotency_key: Option<String>,
    retry_of_id: Option<uuid::Uuid>,
    trigger_kind: String,
    trigger_id: Option<uuid::Uuid>,
}

impl From<entity::execution::Model> for ExecutionDetails {
    fn from(execution: entity::execution::Model) -> Self {
        Self {
            input: execution.input,
            priority: execution.priority,
            idempotency_key: execution.idempotency_key,
            retry_of_id: execution.retry_of_id,
            trigger_kind: execution.trigger_kind,
            trigger_id: execution.trigger_id,
        }
    }
}

impl From<MemberExecution> for Execution {
    fn from(found: MemberExecution) -> Self {
        Self {
            snapshot: ExecutionSnapshot::from(&found.execution),
            details: Some(found.execution.into()),
            viewer_role: found.role,
        }
    }
}

impl Execution {
    /// The fields events do not carry, read through the DataLoader.
    async fn details(&self, ctx: &Context<'_>) -> async_graphql::Result<ExecutionDetails> {
        if let Some(details) = &self.details {
            return Ok(details.clone());
        }
        let execution = RequestContext::of(ctx)
            .loaders()
            .executions
            .load_one(self.snapshot.id)
            .await
            .map_err(AppError::from)?
            .ok_or(AppError::NotFound("execution"))?;
        Ok(execution.into())
    }
}

/// One run of a workflow version: its status, input, output and steps.
#[Object]
impl Execution {
    /// The execution's id.
    pub async fn id(&self) -> ID {
        ID(self.snapshot.id.to_string())
    }

    /// The workflow it runs.
    async fn workflow(&self, ctx: &Context<'_>) -> async_graphql::Result<Workflow> {
        load_workflow(ctx, self.snapshot.workflow_id, self.viewer_role).await
    }

    /// What started it.
    async fn trigger_kind(&self, ctx: &Context<'_>) -> async_graphql::Result<TriggerKind> {
        Ok(TriggerKind::from_stored(
            &self.details(ctx).await?.trigger_kind,
        ))
    }

    /// The schedule or webhook that started it; null when a person or key
    /// did, or once the trigger is deleted.
    async fn trigger(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Trigger>> {
        let Some(trigger_id) = self.details(ctx).await?.trigger_id else {
            return Ok(None);
        };
        let trigger = RequestContext::of(ctx)
            .loaders()
            .triggers
            .load_one(trigger_id)
            .await
            .map_err(AppError::from)?;
        trigger
            .map(|found| Trigger::seen_as(found, self.viewer_role))
            .transpose()
    }

    /// Where it is in its life.
    async fn status(&self) -> ExecutionStatus {
        self.snapshot.status.into()
    }

    /// The JSON the execution was started with.
    async fn input(&self, ctx: &Context<'_>) -> async_graphql::Result<Json> {
        Ok(Json(self.details(ctx).await?.input))
    }

    /// How urgently it is claimed.
    async fn priority(&self, ctx: &Context<'_>) -> async_graphql::Result<ExecutionPriority> {
        Ok(Priority::from_i32(self.details(ctx).await?.priority).into())
    }

    /// The key it was started with, if any.
    async fn idempotency_key(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<String>> {
        Ok(self.details(ctx).await?.idempotency_key)
    }

    /// The execution this one re-runs (`retryExecution`).
    async fn retry_of(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Execution>> {
        let Some(id) = self.details(ctx).await?.retry_of_id else {
            return Ok(None);
        };
        let original = RequestContext::of(ctx)
            .loaders()
            .executions
            .load_one(id)
            .await
            .map_err(AppError::from)?;
        Ok(original.map(|execution| Execution {
            snapshot: ExecutionSnapshot::from(&execution),
            details: Some(execution.into()),
            viewer_role: self.viewer_role,
        }))
    }

    /// The one sink step's output, or an object keyed by sink step id.
    async fn output(&self) -> Option<Json> {
        self.snapshot.output.clone().map(Json)
    }

    /// Why the execution failed.
    async fn error(&self) -> Option<&str> {
        self.snapshot.error.as_deref()
    }

    /// Every step, in definition order, with its latest attempt.
    async fn steps(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<StepRun>> {
        let steps = RequestContext::of(ctx)
            .loaders()
            .step_runs
            .load_one(self.snapshot.id)
            .await
            .map_err(AppError::from)?
            .unwrap_or_default();
        Ok(steps.into_iter().map(StepRun::from).collect())
    }

    /// The execution's events in order (oldest first).
    async fn events(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "At most this many (default 20, at most 100).")] first: Option<i32>,
        #[graphql(desc = "The `endCursor` of the page before.")] after: Option<String>,
        #[graphql(desc = "The last this many (at most 100) before `before`.")] last: Option<i32>,
        #[graphql(desc = "The `startCursor` of the page after.")] before: Option<String>,
    ) -> async_graphql::Result<ListConnection<ExecutionEvent>> {
        let window = PageArgs::new(first, after, last, before).window(EVENT_CURSOR)?;
        let viewer_role = self.viewer_role;
        list_connection(ctx, self.snapshot.id, EventList { window }, |record| {
            let cursor = encode_cursor(EVENT_CURSOR, record.seq);
            let event = ExecutionEvent {
                record,
                viewer_role,
                cursor: None,
            };
            Ok((cursor, event))
        })
        .await
    }

    /// Seq of the latest event; subscribe with `afterSeq` to continue from it.
    async fn last_event_seq(&self) -> i32 {
        self.snapshot.last_event_seq
    }

    /// When it was queued.
    async fn queued_at(&self) -> DateTime<Utc> {
        self.snapshot.queued_at
    }

    /// When a worker first started it; null until then.
    async fn started_at(&self) -> Option<DateTime<Utc>> {
        self.snapshot.started_at
    }

    /// When it ended; null until then.
    async fn finished_at(&self) -> Option<DateTime<Utc>> {
        self.snapshot.finished_at
    }
}

/// Cursor kinds of the lists here.
const EVENT_CURSOR: &str = "event";
const EXECUTION_CURSOR: &str = "execution";

/// Narrows a list of executions.
#[derive(InputObject, Default)]
pub struct ExecutionFilterInput {
    /// Any of these statuses (one status may be given without a list).
    pub status: Option<Vec<ExecutionStatus>>,
    /// Queued at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Queued before this time.
    pub until: Option<DateTime<Utc>>,
}

/// A newest-first page of the executions of `parent` (a workflow or an
/// organization), for a member with `role` (the resolvers of
/// `Workflow.executions` and `Organization.executions`).
pub async fn executions_connection(
    ctx: &Context<'_>,
    (kind, parent): (ExecutionParent, Uuid),
    role: Role,
    page: PageArgs,
    filter: Option<ExecutionFilterInput>,
) -> async_graphql::Result<ListConnection<Execution>> {
    policy::authorize(role, Action::ViewExecution)?;
    let window = page.window(EXECUTION_CURSOR)?;
    let filter = filter.unwrap_or_default();
    let filter = ExecutionFilter {
        statuses: filter
            .status
            .unwrap_or_default()
            .into_iter()
            .map(status::ExecutionStatus::from)
            .collect(),
        since: filter.since,
        until: filter.until,
    };
    filter.check()?;
    let list = ExecutionList {
        parent: kind,
        filter,
        window,
    };
    list_connection(ctx, parent, list, |execution| {
        let cursor = encode_cursor(EXECUTION_CURSOR, service::position_of(&execution));
        Ok((cursor, Execution::from(MemberExecution { execution, role })))
    })
    .await
}

/// One step of an execution, as of its latest attempt.
pub struct StepRun {
    step_id: String,
    status: status::StepStatus,
    attempt: i32,
    failed_attempts: i32,
    next_retry_at: Option<DateTime<Utc>>,
    input: Option<Value>,
    output: Option<Value>,
    error: Option<String>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
}

impl From<entity::step_run::Model> for StepRun {
    fn from(step: entity::step_run::Model) -> Self {
        Self {
            step_id: step.step_id,
            status: step.status,
            attempt: step.attempt,
            failed_attempts: step.failed_attempts,
            next_retry_at: step.next_retry_at,
            input: step.input,
            output: step.output,
            error: step.error,
            started_at: step.started_at,
            finished_at: step.finished_at,
        }
    }
}

/// One step of an execution, as of its latest attempt.
#[Object]
impl StepRun {
    /// The step's id in the definition.
    async fn step_id(&self) -> &str {
        &self.step_id
    }

    /// Where the step is.
    async fn status(&self) -> StepStatus {
        self.status.into()
    }

    /// Attempts started so far (0 before the first), including re-runs
    /// after a lost worker or a shutdown.
    async fn attempt(&self) -> i32 {
        self.attempt
    }

    /// Attempts that failed: what the step's retry policy counts.
    async fn failed_attempts(&self) -> i32 {
        self.failed_attempts
    }

    /// When a RETRYING step runs again.
    async fn next_retry_at(&self) -> Option<DateTime<Utc>> {
        self.next_retry_at
    }

    /// The step's config with its templates rendered, as it ran.
    async fn input(&self) -> Option<Json> {
        self.input.clone().map(Json)
    }

    /// What the step produced; null unless it succeeded.
    async fn output(&self) -> Option<Json> {
        self.output.clone().map(Json)
    }

    /// Why the latest attempt failed; null unless it did.
    async fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// When the latest attempt started; null before the first.
    async fn started_at(&self) -> Option<DateTime<Utc>> {
        self.started_at
    }

    /// When the step finished, whichever way; null until then.
    async fn finished_at(&self) -> Option<DateTime<Utc>> {
        self.finished_at
    }
}

/// A change to an execution, in order (`seq` 1, 2, 3, …).
pub struct ExecutionEvent {
    record: ExecutionEventRecord,
    viewer_role: Role,
    /// Where an organization stream stands once this is delivered.
    cursor: Option<StreamCursor>,
}

/// A change to an execution, in order (`seq` 1, 2, 3, …), with the execution as
/// of then.
#[Object]
impl ExecutionEvent {
    /// Gap-free position in the execution's event log.
    async fn seq(&self) -> i32 {
        self.record.seq
    }

    /// The execution it belongs to.
    async fn execution_id(&self) -> ID {
        ID(self.record.execution.id.to_string())
    }

    /// What happened.
    async fn kind(&self) -> ExecutionEventKind {
        self.record.kind.into()
    }

    /// The execution's status after this event.
    async fn execution_status(&self) -> ExecutionStatus {
        self.record.execution.status.into()
    }

    /// The step that changed, for step events.
    async fn step_id(&self) -> Option<&str> {
        self.record.step.as_ref().map(|s| s.step_id.as_str())
    }

    /// The step's status after this event, for step events.
    async fn step_status(&self) -> Option<StepStatus> {
        self.record.step.as_ref().map(|s| s.status.into())
    }

    /// The step's output, on STEP_SUCCEEDED.
    async fn step_output(&self) -> Option<Json> {
        self.record
            .step
            .as_ref()
            .and_then(|s| s.output.clone())
            .map(Json)
    }

    /// The step's error, on STEP_FAILED (and retries).
    async fn step_error(&self) -> Option<&str> {
        self.record.step.as_ref().and_then(|s| s.error.as_deref())
    }

    /// When it happened.
    async fn occurred_at(&self) -> DateTime<Utc> {
        self.record.occurred_at
    }

    /// The execution as of this event.
    async fn execution(&self) -> Execution {
        Execution {
            snapshot: self.record.execution.clone(),
            details: None,
            viewer_role: self.viewer_role,
        }
    }

    /// On `organizationExecutionEvents`: what this dashboard has been sent
    /// once it has this event. Pass the latest as `after` to resume the
    /// stream, on any instance, without a repeat or a gap. Null on
    /// `executionEvents`, which resumes with `afterSeq`.
    async fn cursor(&self) -> Option<String> {
        self.cursor.as_ref().map(StreamCursor::encode)
    }
}

/// How urgently an execution is claimed: HIGH before NORMAL before LOW,
/// then oldest first.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecutionPriority {
    /// Claimed before NORMAL and LOW executions.
    High,
    /// The default.
    Normal,
    /// Claimed after HIGH and NORMAL executions.
    Low,
}

impl From<ExecutionPriority> for Priority {
    fn from(priority: ExecutionPriority) -> Self {
        match priority {
            ExecutionPriority::High => Self::High,
            ExecutionPriority::Normal => Self::Normal,
            ExecutionPriority::Low => Self::Low,
        }
    }
}

impl From<Priority> for ExecutionPriority {
    fn from(priority: Priority) -> Self {
        match priority {
            Priority::High => Self::High,
            Priority::Normal => Self::Normal,
            Priority::Low => Self::Low,
        }
    }
}

/// Starts an execution.
#[derive(InputObject)]
pub struct RunWorkflowInput {
    /// The workflow to run; not an archived one.
    pub workflow_id: ID,
    /// Available to templates as `input`; `{}` when left out.
    pub input: Option<Json>,
    /// NORMAL when left out.
    pub priority: Option<ExecutionPriority>,
    /// With a key (1 to 255 characters), running the same workflow with the
    /// same key again within 24 hours returns the first execution instead of
    /// starting another, whatever the input.
    pub idempotency_key: Option<String>,
    /// A version of the workflow to run; the active version when left out.
    pub version_id: Option<ID>,
}

/// Cancels an execution.
#[derive(InputObject)]
pub struct CancelExecutionInput {
    /// A QUEUED or RUNNING execution.
    pub execution_id: ID,
}

/// Re-runs an execution.
#[derive(InputObject)]
pub struct RetryExecutionInput {
    /// A finished execution; the new one runs its version with its input.
    pub execution_id: ID,
}

#[derive(Default)]
pub struct ExecutionQuery;

#[Object]
impl ExecutionQuery {
    /// An execution in an organization the viewer belongs to; NOT_FOUND otherwise.
    async fn execution(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The execution's id.")] id: ID,
    ) -> async_graphql::Result<Option<Execution>> {
        let request = RequestContext::of(ctx);
        let actor = request.viewer.principal()?;
        let id = parse_id(&id, "id")?;
        Ok(Some(
            service::find_for_member(&request.state.db, actor, id)
                .await?
                .into(),
        ))
    }
}

#[derive(Default)]
pub struct ExecutionMutation;

#[Object]
impl ExecutionMutation {
    /// Queues an execution of the workflow's active version. EDITOR and above.
    async fn run_workflow(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The workflow and how to run it.")] input: RunWorkflowInput,
    ) -> async_graphql::Result<Execution> {
        let request = RequestContext::of(ctx);
        let actor = request.viewer.principal()?;
        let run = RunRequest {
            workflow_id: parse_id(&input.workflow_id, "workflowId")?,
            input: input
                .input
                .map_or_else(|| Value::Object(Default::default()), |json| json.0),
            priority: input.priority.map(Priority::from).unwrap_or_default(),
            idempotency_key: input
                .idempotency_key
                .as_deref()
                .map(|key| IdempotencyKey::parse(key, "idempotencyKey"))
                .transpose()?,
            version_id: input
                .version_id
                .as_ref()
                .map(|id| parse_id(id, "versionId"))
                .transpose()?,
        };
        Ok(service::run_workflow(&request.state, actor, run)
            .await?
            .into())
    }

    /// Cancels an execution: a QUEUED one ends CANCELLED at once; a RUNNING
    /// one within about a second (watch its events), its running steps
    /// cancelled. EDITOR and above; CONFLICT once it has finished.
    async fn cancel_execution(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The execution to cancel.")] input: CancelExecutionInput,
    ) -> async_graphql::Result<Execution> {
        let request = RequestContext::of(ctx);
        let actor = request.viewer.principal()?;
        let id = parse_id(&input.execution_id, "executionId")?;
        Ok(service::cancel_execution(&request.state, actor, id)
            .await?
            .into())
    }

    /// Starts a new execution of a finished execution's version with the
    /// same input, linked to it by `retryOf`. EDITOR and above.
    async fn retry_execution(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The execution to run again.")] input: RetryExecutionInput,
    ) -> async_graphql::Result<Execution> {
        let request = RequestContext::of(ctx);
        let actor = request.viewer.principal()?;
        let id = parse_id(&input.execution_id, "executionId")?;
        Ok(service::retry_execution(&request.state, actor, id)
            .await?
            .into())
    }
}

#[derive(Default)]
pub struct ExecutionSubscription;

/// Why an organization stream asks the client to load what it shows.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamResyncReason {
    /// The stream starts here: load what you show, then apply what follows.
    Initial,
    /// This subscriber fell behind by more events than the stream replays.
    Lagged,
    /// The server's connection to the event bus was re-established, and
    /// more happened meanwhile than the stream replays.
    Reconnected,
    /// The `after` cursor is too old (24 hours) or from another database.
    CursorExpired,
    /// More happened since the `after` cursor than the stream replays, or
    /// the stream follows more unfinished executions than it can account
    /// for exactly.
    TooFarBehind,
}

impl From<ResyncReason> for StreamResyncReason {
    fn from(reason: ResyncReason) -> Self {
        match reason {
            ResyncReason::Initial => Self::Initial,
            ResyncReason::Lagged => Self::Lagged,
            ResyncReason::Reconnected => Self::Reconnected,
            ResyncReason::CursorExpired => Self::CursorExpired,
            ResyncReason::TooFarBehind => Self::TooFarBehind,
        }
    }
}

/// Load what you show (the stream cannot vouch for what you have), then go
/// on reading the stream: it continues from here.
#[derive(SimpleObject)]
pub struct StreamResync {
    /// Why.
    reason: StreamResyncReason,
    /// When the server noticed.
    occurred_at: DateTime<Utc>,
    /// Where the stream stands now: pass it as `after` to resume from here.
    /// Always set; nullable like `ExecutionEvent.cursor`, so that a
    /// selection of `cursor` on both members of the union is valid.
    cursor: Option<String>,
}

/// An item of an organization's execution stream.
#[derive(Union)]
#[allow(clippy::large_enum_variant)]
pub enum OrganizationStreamEvent {
    ExecutionEvent(ExecutionEvent),
    StreamResync(StreamResync),
}

/// Which events an organization stream carries; a list left empty admits
/// everything.
#[derive(InputObject, Default)]
pub struct OrganizationStreamFilter {
    /// Only events of executions of these workflows.
    #[graphql(default)]
    pub workflow_ids: Vec<ID>,
    /// The execution's status after the event.
    #[graphql(default)]
    pub statuses: Vec<ExecutionStatus>,
    /// Only events of these kinds.
    #[graphql(default)]
    pub kinds: Vec<ExecutionEventKind>,
}

impl OrganizationStreamFilter {
    fn parse(self) -> async_graphql::Result<StreamFilter> {
        Ok(StreamFilter {
            workflow_ids: self
                .workflow_ids
                .iter()
                .enumerate()
                .map(|(n, id)| parse_id(id, &format!("filter.workflowIds[{n}]")))
                .collect::<Result<_, _>>()?,
            statuses: self.statuses.into_iter().map(Into::into).collect(),
            kinds: self.kinds.into_iter().map(Into::into).collect(),
        })
    }
}

/// Longest `throttleMs`.
const MAX_THROTTLE_MS: i32 = 60_000;

#[Subscription]
impl ExecutionSubscription {
    /// Every execution event of an organization, as `filter` admits them
    /// (VIEWER and up). Without `after` it starts with a `StreamResync`
    /// (reason INITIAL): load what you show, then apply the events that
    /// follow. Per execution, events arrive in order without duplicates.
    /// Each item carries a `cursor`; resubscribe with the latest as `after`
    /// (on any instance) and the stream first sends, from the log, exactly
    /// the admitted events committed since that this dashboard was not
    /// sent — or, when it cannot (the cursor is older than a day, or more
    /// happened than it replays), a `StreamResync` first. With `throttleMs`,
    /// events are coalesced per execution: at most one per execution every
    /// `throttleMs`, the latest.
    async fn organization_execution_events(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The organization whose executions to follow.")] organization_id: ID,
        #[graphql(desc = "Which events; all when left out.")] filter: Option<
            OrganizationStreamFilter,
        >,
        #[graphql(desc = "Coalescing interval, 1 to 60000 ms; none when left out.")]
        throttle_ms: Option<i32>,
        #[graphql(desc = "The `cursor` of the last item received, to resume after it.")]
        after: Option<String>,
    ) -> async_graphql::Result<
        impl Stream<Item = async_graphql::Result<OrganizationStreamEvent>> + use<>,
    > {
        let request = RequestContext::of(ctx);
        let actor = request.viewer.principal()?;
        let organization_id = parse_id(&organization_id, "organizationId")?;
        let filter = filter.unwrap_or_default().parse()?;
        let throttle = throttle_ms
            .map(|ms| {
                u64::try_from(ms)
                    .ok()
                    .filter(|ms| (1..=MAX_THROTTLE_MS as u64).contains(ms))
                    .map(std::time::Duration::from_millis)
                    .ok_or_else(|| {
                        AppError::bad_input(
                            "throttleMs",
                            format!("throttleMs is from 1 to {MAX_THROTTLE_MS}"),
                        )
                    })
            })
            .transpose()?;
        let after = after
            .map(|text| {
                StreamCursor::decode(&text).map_err(|_| {
                    AppError::bad_input("after", "after is not a cursor this stream gave")
                })
            })
            .transpose()?;
        let start = StreamStart {
            organization_id,
            filter,
            throttle,
            after,
        };
        let (role, items) =
            service::organization_stream(&request.state, actor, start, &request.access_ended)
                .await?;
        Ok(items.map(move |item| match item {
            Ok(StreamItem::Event { event, cursor }) => {
                Ok(OrganizationStreamEvent::ExecutionEvent(ExecutionEvent {
                    record: event,
                    viewer_role: role,
                    cursor: Some(cursor),
                }))
            }
            Ok(StreamItem::Resync {
                reason,
                occurred_at,
                cursor,
            }) => Ok(OrganizationStreamEvent::StreamResync(StreamResync {
                reason: reason.into(),
                occurred_at,
                cursor: Some(cursor.encode()),
            })),
            Err(err) => Err(err.into()),
        }))
    }

    /// The execution now, then again after each change, until it finishes.
    /// Status, error, timestamps and the final output come with each change
    /// at no database cost; other fields are read on demand.
    async fn execution_updated(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The execution to follow.")] execution_id: ID,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<Execution>> + use<>> {
        if let Some(feed) = ctx.data_opt::<Feed<Execution>>() {
            return Ok(feed.items().left_stream());
        }
        let (_, updates) = execution_updates_of(RequestContext::of(ctx), &execution_id).await?;
        Ok(updates.map(|update| update.item).right_stream())
    }

    /// Every event of an execution after `afterSeq`, replayed then live, in
    /// order, with no gap and no duplicate; completes after the terminal event.
    async fn execution_events(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The execution to follow.")] execution_id: ID,
        #[graphql(
            default = 0,
            desc = "Only events after this `seq`; 0 (the default) replays all."
        )]
        after_seq: Option<i32>,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<ExecutionEvent>> + use<>>
    {
        if let Some(feed) = ctx.data_opt::<Feed<ExecutionEvent>>() {
            return Ok(feed.items().left_stream());
        }
        let request = RequestContext::of(ctx);
        let (_, events) =
            execution_events_of(request, &execution_id, after_seq.unwrap_or(0)).await?;
        Ok(events.map(|event| event.item).right_stream())
    }
}

/// The execution `execution_id` as found for the request's member
/// (NOT_FOUND otherwise), and its events after `after_seq` (after its
/// latest when `None`), from the log then live, ending when the member's
/// access does.
async fn followed(
    request: &RequestContext,
    execution_id: &ID,
    after_seq: Option<i32>,
) -> async_graphql::Result<(
    MemberExecution,
    impl Stream<Item = crate::error::AppResult<ExecutionEventRecord>> + use<>,
)> {
    let actor = request.viewer.principal()?;
    let id = parse_id(execution_id, "executionId")?;
    let found = service::find_for_member(&request.state.db, actor, id).await?;
    let after_seq = after_seq.unwrap_or(found.execution.last_event_seq);
    let events = service::event_stream(
        &request.state,
        actor,
        &found,
        after_seq,
        &request.access_ended,
    )?;
    Ok((found, events))
}

/// A subscriber's `executionEvents`: the execution found for its member
/// (NOT_FOUND otherwise), its events after `after_seq` from the log then
/// live, each named by its seq, ending when the member's access does.
pub async fn execution_events_of(
    request: &RequestContext,
    execution_id: &ID,
    after_seq: i32,
) -> async_graphql::Result<(Role, BoxStream<'static, Keyed<ExecutionEvent>>)> {
    let (found, events) = followed(request, execution_id, Some(after_seq)).await?;
    let viewer_role = found.role;
    let events = events.map(move |event| {
        Keyed::of(event.map(|record| {
            let event = ExecutionEvent {
                record,
                viewer_role,
                cursor: None,
            };
            (event.record.seq, event)
        }))
    });
    Ok((viewer_role, events.boxed()))
}

/// A subscriber's `executionUpdated`: the execution as found for its member,
/// then as of each later event, each named by the seq it stands at.
pub async fn execution_updates_of(
    request: &RequestContext,
    execution_id: &ID,
) -> async_graphql::Result<(Role, BoxStream<'static, Keyed<Execution>>)> {
    let (found, changes) = followed(request, execution_id, None).await?;
    let viewer_role = found.role;
    let now = Keyed::of(Ok((found.execution.last_event_seq, Execution::from(found))));
    let changes = changes.map(move |event| {
        Keyed::of(event.map(|record| {
            let execution = Execution {
                snapshot: record.execution,
                details: None,
                viewer_role,
            };
            (record.seq, execution)
        }))
    });
    let updates = futures::stream::once(std::future::ready(now)).chain(changes);
    Ok((viewer_role, updates.boxed()))
}
