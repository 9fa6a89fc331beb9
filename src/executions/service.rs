//! Starting and reading executions. Knows nothing of GraphQL.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use entity::role::Role;
use entity::status::{ExecutionStatus, StepStatus};
use entity::{execution, step_run, trigger, workflow, workflow_version};
use futures::Stream;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, DatabaseTransaction, EntityTrait,
    QueryFilter, QueryOrder, QuerySelect, Set,
};
use serde_json::Value;
use uuid::Uuid;

use crate::db::{begin_write, locked};
use crate::engine::storable;
use crate::engine::store::{self as engine_store, CancelOutcome, publish_after_commit};
use crate::error::{AppError, AppResult};
use crate::events::log::{self, EventKind, ExecutionEventRecord};
use crate::events::organization_stream::{self, StreamItem, StreamStart};
use crate::events::{BusMessage, Topic, replay};
use crate::orgs::access::{AccessEnded, MembershipGrant, until_membership_ends};
use crate::orgs::policy::{self, Action};
use crate::orgs::principal::Principal;
use crate::pagination::{Page, Position};
use crate::state::AppState;
use crate::workflows::definition::WorkflowDefinition;
use crate::workflows::service as workflows;
use crate::workflows::triggers::TriggerKind;
use crate::workflows::versions;

/// An execution as one member sees it.
#[derive(Clone, Debug)]
pub struct MemberExecution {
    pub execution: execution::Model,
    pub role: Role,
}

/// How urgently an execution should be claimed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Priority {
    High,
    #[default]
    Normal,
    Low,
}

impl Priority {
    /// The stored value: higher is claimed first.
    pub fn as_i32(self) -> i32 {
        match self {
            Self::High => 1,
            Self::Normal => 0,
            Self::Low => -1,
        }
    }

    /// The priority a stored value stands for.
    pub fn from_i32(value: i32) -> Self {
        match value {
            v if v > 0 => Self::High,
            0 => Self::Normal,
            _ => Self::Low,
        }
    }
}

/// How long an idempotency key returns the execution it started.
pub const IDEMPOTENCY_WINDOW: chrono::Duration = chrono::Duration::hours(24);
/// Longest idempotency key, in characters.
const MAX_IDEMPOTENCY_KEY_CHARS: usize = 255;

/// An idempotency key: trimmed, 1 to 255 characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Parses user input; `field` names the input field in the error.
    pub fn parse(raw: &str, field: &str) -> AppResult<Self> {
        let key = raw.trim();
        if key.is_empty() || key.chars().count() > MAX_IDEMPOTENCY_KEY_CHARS {
            return Err(AppError::bad_input(
                field,
                format!("an idempotency key has 1 to {MAX_IDEMPOTENCY_KEY_CHARS} characters"),
            ));
        }
        Ok(Self(key.to_owned()))
    }
}

/// A request to start a workflow.
#[derive(Debug)]
pub struct RunRequest {
    pub workflow_id: Uuid,
    pub input: Value,
    pub priority: Priority,
    /// With a key, a second request within 24 hours returns the first
    /// request's execution instead of starting another, whatever its input.
    pub idempotency_key: Option<IdempotencyKey>,
    /// A version of the workflow to run instead of the active one.
    pub version_id: Option<Uuid>,
}

/// Queues an execution of the workflow's active version. EDITOR and above;
/// NOT_FOUND for those who cannot see the workflow.
pub async fn run_workflow(
    state: &AppState,
    actor: Principal,
    request: RunRequest,
) -> AppResult<MemberExecution> {
    let found = workflows::find_for_member(&state.db, actor, request.workflow_id).await?;
    policy::authorize(found.role, Action::RunWorkflow)?;
    workflows::ensure_runnable(&found.workflow)?;
    let version_id = match request.version_id {
        Some(id) => {
            versions::version_of(&state.db, found.workflow.id, id)
                .await?
                .id
        }
        None => workflows::active_version_id(&found.workflow)?,
    };
    let new = NewExecution {
        workflow: &found.workflow,
        version_id,
        input: request.input,
        priority: request.priority,
        idempotency_key: request.idempotency_key,
        created_by: actor.user_id(),
        retry_of_id: None,
        origin: Origin::Manual,
    };
    let execution = enqueue(state, new).await?;
    Ok(MemberExecution {
        execution,
        role: found.role,
    })
}

/// Cancels an execution: a queued one at once, a running one within about
/// a second on whichever instance runs it. EDITOR and above; CONFLICT once
/// it has finished. Returns the execution as it is after the request.
pub async fn cancel_execution(
    state: &AppState,
    actor: Principal,
    execution_id: Uuid,
) -> AppResult<MemberExecution> {
    let found = find_for_member(&state.db, actor, execution_id).await?;
    policy::authorize(found.role, Action::CancelExecution)?;
    match engine_store::cancel(state, execution_id).await? {
        CancelOutcome::Cancelled(execution) | CancelOutcome::Requested(execution) => {
            Ok(MemberExecution {
                execution,
                role: found.role,
            })
        }
        CancelOutcome::AlreadyFinished(_) => Err(AppError::Conflict(
            "the execution has already finished".to_owned(),
        )),
    }
}

/// Starts a new execution of a finished execution's version with its input,
/// linked to it. EDITOR and above; CONFLICT while the original still runs.
pub async fn retry_execution(
    state: &AppState,
    actor: Principal,
    execution_id: Uuid,
) -> AppResult<MemberExecution> {
    let original = find_for_member(&state.db, actor, execution_id).await?;
    policy::authorize(original.role, Action::RunWorkflow)?;
    if !original.execution.status.is_terminal() {
        return Err(AppError::Conflict(
            "the execution has not finished yet".to_owned(),
        ));
    }
    let workflow = workflow::Entity::find_by_id(original.execution.workflow_id)
        .one(&state.db)
        .await?
        .ok_or(AppError::NotFound("workflow"))?;
    let new = NewExecution {
        workflow: &workflow,
        version_id: original.execution.workflow_version_id,
        input: original.execution.input.clone(),
        priority: Priority::from_i32(original.execution.priority),
        idempotency_key: None,
        created_by: actor.user_id(),
        retry_of_id: Some(original.execution.id),
        origin: Origin::Manual,
    };
    let execution = enqueue(state, new).await?;
    Ok(MemberExecution {
        execution,
        role: original.role,
    })
}

/// What started an execution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// `runWorkflow` or `retryExecution`, by a person or a key.
    Manual,
    /// A schedule or webhook trigger.
    Trigger { kind: TriggerKind, id: Uuid },
}

impl Origin {
    fn kind(self) -> &'static str {
        match self {
            Self::Manual => "MANUAL",
            Self::Trigger { kind, .. } => kind.as_str(),
        }
    }

    fn trigger_id(self) -> Option<Uuid> {
        match self {
            Self::Manual => None,
            Self::Trigger { id, .. } => Some(id),
        }
    }
}

/// Refuses an execution input that is larger than the limit or holds text
/// no backend can store, the same on every backend.
fn check_input(input: &Value, max_bytes: usize) -> AppResult<()> {
    if storable::has_nul(input) {
        return Err(AppError::bad_input(
            "input",
            "text may not contain the NUL character (U+0000)",
        ));
    }
    let len = storable::json_len(input);
    if len > max_bytes {
        return Err(AppError::bad_input(
            "input",
            format!("the input is {len} bytes, over the limit of {max_bytes}"),
        ));
    }
    Ok(())
}

/// An execution to queue.
pub struct NewExecution<'a> {
    pub workflow: &'a workflow::Model,
    pub version_id: Uuid,
    pub input: Value,
    pub priority: Priority,
    pub idempotency_key: Option<IdempotencyKey>,
    pub created_by: Option<Uuid>,
    pub retry_of_id: Option<Uuid>,
    pub origin: Origin,
}

/// Inserts a QUEUED execution with its PENDING step runs and its first
/// event in one transaction, then publishes the event and wakes workers.
/// With an idempotency key, the workflow row is locked first so two
/// requests with the same key cannot both insert.
pub(crate) async fn enqueue(
    state: &AppState,
    new: NewExecution<'_>,
) -> AppResult<execution::Model> {
    check_input(
        &new.input,
        state.config.settings.steps.max_step_output_bytes,
    )?;
    let now = state.clock.now();
    let txn = begin_write(&state.db).await?;
    if let Some(key) = &new.idempotency_key {
        locked(workflow::Entity::find_by_id(new.workflow.id), &txn)
            .one(&txn)
            .await?;
        // Keys are scoped to their source: manual runs of the workflow, or
        // one trigger's deliveries.
        let source = match new.origin.trigger_id() {
            Some(trigger_id) => execution::Column::TriggerId.eq(trigger_id),
            None => execution::Column::TriggerKind.eq(new.origin.kind()),
        };
        let earlier = execution::Entity::find()
            .filter(execution::Column::WorkflowId.eq(new.workflow.id))
            .filter(source)
            .filter(execution::Column::IdempotencyKey.eq(key.0.as_str()))
            .filter(execution::Column::QueuedAt.gt(now - IDEMPOTENCY_WINDOW))
            .order_by_desc(execution::Column::QueuedAt)
            .one(&txn)
            .await?;
        if let Some(earlier) = earlier {
            txn.commit().await?;
            return Ok(earlier);
        }
    }
    let queued = insert_queued(&txn, new, now).await?;
    txn.commit().await?;
    Ok(announce_queued(state, queued).await)
}

/// An execution inserted by [`insert_queued`] whose transaction has not
/// been announced yet.
pub(crate) struct Queued {
    execution: execution::Model,
    event: ExecutionEventRecord,
}

/// Inserts a QUEUED execution, its PENDING step runs and its first event
/// inside `txn`, and notes the firing on its trigger. The caller commits
/// and then calls [`announce_queued`].
pub(crate) async fn insert_queued(
    txn: &DatabaseTransaction,
    new: NewExecution<'_>,
    now: DateTime<Utc>,
) -> AppResult<Queued> {
    let version = workflow_version::Entity::find_by_id(new.version_id)
        .one(txn)
        .await?
        .ok_or_else(|| {
            AppError::Internal(anyhow::anyhow!(
                "workflow version {} is missing",
                new.version_id
            ))
        })?;
    let definition =
        WorkflowDefinition::from_stored(&version.definition).map_err(AppError::Internal)?;
    let execution = execution::ActiveModel {
        id: Set(Uuid::now_v7()),
        organization_id: Set(new.workflow.organization_id),
        workflow_id: Set(new.workflow.id),
        workflow_version_id: Set(version.id),
        status: Set(ExecutionStatus::Queued),
        priority: Set(new.priority.as_i32()),
        input: Set(new.input),
        output: Set(None),
        error: Set(None),
        trigger_kind: Set(new.origin.kind().to_owned()),
        trigger_id: Set(new.origin.trigger_id()),
        idempotency_key: Set(new.idempotency_key.map(|key| key.0)),
        attempt: Set(0),
        lease_owner: Set(None),
        lease_expires_at: Set(None),
        lease_epoch: Set(0),
        claims_without_progress: Set(0),
        cancel_requested: Set(false),
        run_after: Set(None),
        last_event_seq: Set(1),
        created_by: Set(new.created_by),
        retry_of_id: Set(new.retry_of_id),
        queued_at: Set(now),
        started_at: Set(None),
        finished_at: Set(None),
        updated_at: Set(now),
        timeout_ms: Set(definition.timeout_ms.map(|ms| ms as i64)),
        timeout_at: Set(None),
    }
    .insert(txn)
    .await?;
    let steps: Vec<step_run::ActiveModel> = definition
        .steps
        .iter()
        .zip(0..)
        .map(|(step, position)| step_run::ActiveModel {
            id: Set(Uuid::now_v7()),
            execution_id: Set(execution.id),
            step_id: Set(step.id.clone()),
            position: Set(position),
            status: Set(StepStatus::Pending),
            attempt: Set(0),
            failed_attempts: Set(0),
            input: Set(None),
            output: Set(None),
            error: Set(None),
            next_retry_at: Set(None),
            started_at: Set(None),
            finished_at: Set(None),
            updated_at: Set(now),
        })
        .collect();
    step_run::Entity::insert_many(steps).exec(txn).await?;
    if let Some(trigger_id) = new.origin.trigger_id() {
        // Also orders the firing against a trigger being switched off or
        // deleted meanwhile: then it starts nothing.
        let fired = trigger::Entity::update_many()
            .col_expr(trigger::Column::LastFiredAt, Expr::value(now))
            .filter(trigger::Column::Id.eq(trigger_id))
            .filter(trigger::Column::Enabled.eq(true))
            .exec(txn)
            .await?;
        if fired.rows_affected == 0 {
            return Err(AppError::NotFound("trigger"));
        }
    }
    let event = log::append(txn, &execution, EventKind::ExecutionQueued, None, now).await?;
    Ok(Queued { execution, event })
}

/// Publishes a committed execution's first event and wakes workers.
pub(crate) async fn announce_queued(state: &AppState, queued: Queued) -> execution::Model {
    let Queued { execution, event } = queued;
    publish_after_commit(state, event).await;
    state
        .bus
        .publish(Topic::Control, BusMessage::WorkerWakeup)
        .await;
    tracing::info!(
        execution_id = %execution.id,
        workflow_id = %execution.workflow_id,
        trigger = execution.trigger_kind.as_str(),
        "execution queued"
    );
    execution
}

/// The execution as a member with `role` sees it, if the role may view it.
pub fn as_member(execution: execution::Model, role: Role) -> AppResult<MemberExecution> {
    policy::authorize(role, Action::ViewExecution)?;
    Ok(MemberExecution { execution, role })
}

/// The execution as `principal` sees it; NOT_FOUND unless it may view it.
pub async fn find_for_member(
    db: &DatabaseConnection,
    principal: Principal,
    execution_id: Uuid,
) -> AppResult<MemberExecution> {
    let not_found = || AppError::NotFound("execution");
    let execution = execution::Entity::find_by_id(execution_id)
        .one(db)
        .await?
        .ok_or_else(not_found)?;
    let role = principal
        .role_in(db, execution.organization_id)
        .await?
        .ok_or_else(not_found)?;
    policy::authorize(role, Action::ViewExecution)?;
    Ok(MemberExecution { execution, role })
}

/// The execution's events after `after_seq`: replayed from the log, then
/// live until the terminal event (see [`replay::execution_events`]). A
/// member's stream ends with [`AppError::AccessChanged`], and `ended`
/// raised, as soon as they are removed or their role is lowered; a key's
/// ends with its connection when it is revoked.
pub fn event_stream(
    state: &AppState,
    principal: Principal,
    execution: &MemberExecution,
    after_seq: i32,
    ended: &AccessEnded,
) -> AppResult<impl Stream<Item = AppResult<ExecutionEventRecord>> + use<>> {
    let last = execution.execution.last_event_seq;
    if !(0..=last).contains(&after_seq) {
        return Err(AppError::bad_input(
            "afterSeq",
            format!("afterSeq must be from 0 to the execution's lastEventSeq ({last})"),
        ));
    }
    let membership = principal.user_id().map(|user_id| {
        state.revocations.watch_membership(MembershipGrant {
            organization_id: execution.execution.organization_id,
            user_id,
            role: execution.role,
        })
    });
    let events = replay::execution_events(
        state.clone(),
        execution.execution.id,
        execution.execution.organization_id,
        after_seq,
    );
    Ok(until_membership_ends(events, membership, ended.clone()))
}

/// The dashboard stream of an organization's execution events (VIEWER and
/// up; NOT_FOUND for outsiders), ending with [`AppError::AccessChanged`]
/// when the member's access ends. Answers the member's role with the
/// stream.
pub async fn organization_stream(
    state: &AppState,
    principal: Principal,
    start: StreamStart,
    ended: &AccessEnded,
) -> AppResult<(Role, impl Stream<Item = AppResult<StreamItem>> + use<>)> {
    let organization_id = start.organization_id;
    let role = principal
        .role_in(&state.db, organization_id)
        .await?
        .ok_or(AppError::NotFound("organization"))?;
    policy::authorize(role, Action::ViewExecution)?;
    let membership = principal.user_id().map(|user_id| {
        state.revocations.watch_membership(MembershipGrant {
            organization_id,
            user_id,
            role,
        })
    });
    let events = organization_stream::organization_events(state.clone(), start);
    Ok((
        role,
        until_membership_ends(events, membership, ended.clone()),
    ))
}

/// Which executions a list holds.
#[derive(Clone, Copy, Debug)]
pub enum ExecutionScope {
    Workflow(Uuid),
    Organization(Uuid),
}

/// Narrows a list of executions: any of `statuses` (any status when
/// empty), queued at or after `since` and before `until`.
#[derive(Clone, Debug, Default)]
pub struct ExecutionFilter {
    pub statuses: Vec<ExecutionStatus>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

/// Where an execution stands in a newest-first list.
pub fn position_of(execution: &execution::Model) -> Position {
    Position {
        at: execution.queued_at,
        id: execution.id,
    }
}

/// A page of executions in `scope`, newest first, after `after`, for a
/// member with `role` there.
pub async fn list_executions(
    db: &DatabaseConnection,
    role: Role,
    scope: ExecutionScope,
    filter: &ExecutionFilter,
    after: Option<Position>,
    limit: u64,
) -> AppResult<Page<execution::Model>> {
    policy::authorize(role, Action::ViewExecution)?;
    if let (Some(since), Some(until)) = (filter.since, filter.until)
        && since >= until
    {
        return Err(AppError::bad_input(
            "filter.until",
            "until must be later than since",
        ));
    }
    let mut query = match scope {
        ExecutionScope::Workflow(id) => {
            execution::Entity::find().filter(execution::Column::WorkflowId.eq(id))
        }
        ExecutionScope::Organization(id) => {
            execution::Entity::find().filter(execution::Column::OrganizationId.eq(id))
        }
    };
    if !filter.statuses.is_empty() {
        query = query.filter(execution::Column::Status.is_in(filter.statuses.iter().copied()));
    }
    if let Some(since) = filter.since {
        query = query.filter(execution::Column::QueuedAt.gte(since));
    }
    if let Some(until) = filter.until {
        query = query.filter(execution::Column::QueuedAt.lt(until));
    }
    if let Some(after) = after {
        query = query.filter(after.rows_after(execution::Column::QueuedAt, execution::Column::Id));
    }
    let rows = query
        .order_by_desc(execution::Column::QueuedAt)
        .order_by_desc(execution::Column::Id)
        .limit(limit + 1)
        .all(db)
        .await?;
    Ok(Page::from_rows(rows, limit))
}

/// A page of an execution's events in order, after seq `after_seq`.
pub async fn list_events(
    db: &DatabaseConnection,
    execution_id: Uuid,
    after_seq: i32,
    limit: u64,
) -> AppResult<Page<ExecutionEventRecord>> {
    let rows = log::events_from(db, execution_id, after_seq, Some(limit + 1)).await?;
    Ok(Page::from_rows(rows, limit))
}

/// Executions by id, in one query.
pub async fn executions_by_id(
    db: &DatabaseConnection,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, execution::Model>, sea_orm::DbErr> {
    let rows = execution::Entity::find()
        .filter(execution::Column::Id.is_in(ids.iter().copied()))
        .all(db)
        .await?;
    Ok(rows.into_iter().map(|e| (e.id, e)).collect())
}

/// The newest `limit` executions (by queue time) of each workflow, newest
/// first, in one query however many workflows there are.
pub async fn recent_by_workflow(
    db: &DatabaseConnection,
    workflow_ids: &[Uuid],
    limit: u32,
) -> Result<HashMap<Uuid, Vec<execution::Model>>, sea_orm::DbErr> {
    if workflow_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let backend = db.get_database_backend();
    let placeholder = |n: usize| match backend {
        sea_orm::DbBackend::Postgres => format!("${n}"),
        _ => "?".to_owned(),
    };
    let ids: Vec<String> = (1..=workflow_ids.len()).map(placeholder).collect();
    let limit_at = placeholder(workflow_ids.len() + 1);
    let sql = format!(
        "SELECT * FROM (SELECT executions.*, ROW_NUMBER() OVER (PARTITION BY workflow_id \
         ORDER BY queued_at DESC, id DESC) AS recent_rank FROM executions \
         WHERE workflow_id IN ({})) ranked WHERE recent_rank <= {limit_at} \
         ORDER BY workflow_id, recent_rank",
        ids.join(", ")
    );
    let mut values: Vec<sea_orm::Value> = workflow_ids.iter().map(|id| (*id).into()).collect();
    values.push(i64::from(limit).into());
    let rows = execution::Entity::find()
        .from_raw_sql(sea_orm::Statement::from_sql_and_values(
            backend, sql, values,
        ))
        .all(db)
        .await?;
    let mut by_workflow: HashMap<Uuid, Vec<execution::Model>> = HashMap::new();
    for row in rows {
        by_workflow.entry(row.workflow_id).or_default().push(row);
    }
    Ok(by_workflow)
}

/// Step runs of each execution, in definition order, in one query.
pub async fn step_runs_by_execution(
    db: &DatabaseConnection,
    execution_ids: &[Uuid],
) -> Result<HashMap<Uuid, Vec<step_run::Model>>, sea_orm::DbErr> {
    let rows = step_run::Entity::find()
        .filter(step_run::Column::ExecutionId.is_in(execution_ids.iter().copied()))
        .order_by_asc(step_run::Column::Position)
        .all(db)
        .await?;
    let mut by_execution: HashMap<Uuid, Vec<step_run::Model>> = HashMap::new();
    for row in rows {
        by_execution.entry(row.execution_id).or_default().push(row);
    }
    Ok(by_execution)
}
