//! Starting and reading executions. Knows nothing of GraphQL.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use entity::role::Role;
use entity::status::ExecutionStatus;
use entity::{execution, execution_event, step_run, workflow};
use futures::Stream;
use sea_orm::{ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder};
use serde_json::Value;
use uuid::Uuid;

use crate::engine::journal::{self, CancelOutcome, NewExecution, Origin};
pub use crate::engine::journal::{IdempotencyKey, Priority};
use crate::error::{AppError, AppResult};
use crate::events::log::{self, ExecutionEventRecord};
use crate::events::organization_stream::{self, StreamItem, StreamStart};
use crate::events::replay;
use crate::orgs::access::{AccessEnded, MembershipGrant, until_membership_ends};
use crate::orgs::policy::{self, Action};
use crate::orgs::principal::Principal;
use crate::pagination::{List, ListQuery, Page, Position, RowList, Window};
use crate::state::AppState;
use crate::workflows::service as workflows;
use crate::workflows::versions;

/// An execution as one member sees it.
#[derive(Clone, Debug)]
pub struct MemberExecution {
    pub execution: execution::Model,
    pub role: Role,
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
    let execution = journal::enqueue(state, new).await?;
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
    match journal::cancel(state, execution_id).await? {
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
    let execution = journal::enqueue(state, new).await?;
    Ok(MemberExecution {
        execution,
        role: original.role,
    })
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

/// Which parent a list of executions belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExecutionParent {
    Workflow,
    Organization,
}

/// Narrows a list of executions: any of `statuses` (any status when
/// empty), queued at or after `since` and before `until`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ExecutionFilter {
    pub statuses: Vec<ExecutionStatus>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

impl ExecutionFilter {
    /// BAD_USER_INPUT when the filter can hold nothing by mistake.
    pub fn check(&self) -> AppResult<()> {
        if let (Some(since), Some(until)) = (self.since, self.until)
            && since >= until
        {
            return Err(AppError::bad_input(
                "filter.until",
                "until must be later than since",
            ));
        }
        Ok(())
    }
}

/// Where an execution stands in a newest-first list.
pub fn position_of(execution: &execution::Model) -> Position {
    Position {
        at: execution.queued_at,
        id: execution.id,
    }
}

/// A list of executions of workflows or of organizations, newest first.
/// The caller authorizes and checks the filter.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ExecutionList {
    pub parent: ExecutionParent,
    pub filter: ExecutionFilter,
    pub window: Window<Position>,
}

impl ExecutionList {
    fn rows(&self) -> ListQuery<execution::Entity> {
        use execution::Column;
        let mut select = execution::Entity::find();
        let filter = &self.filter;
        if !filter.statuses.is_empty() {
            select = select.filter(Column::Status.is_in(filter.statuses.iter().copied()));
        }
        if let Some(since) = filter.since {
            select = select.filter(Column::QueuedAt.gte(since));
        }
        if let Some(until) = filter.until {
            select = select.filter(Column::QueuedAt.lt(until));
        }
        let (parent, parent_of): (_, fn(&execution::Model) -> Uuid) = match self.parent {
            ExecutionParent::Workflow => (Column::WorkflowId, |row| row.workflow_id),
            ExecutionParent::Organization => (Column::OrganizationId, |row| row.organization_id),
        };
        ListQuery {
            select,
            parent,
            parent_of,
            order: vec![Column::QueuedAt, Column::Id],
            ascending: false,
        }
    }
}

impl RowList for ExecutionList {
    type Entity = execution::Entity;
    type Key = Position;

    fn query(&self, _now: chrono::DateTime<chrono::Utc>) -> ListQuery<execution::Entity> {
        self.rows()
    }

    fn window(&self) -> &Window<Position> {
        &self.window
    }
}

/// The events of executions, in order (by seq).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EventList {
    pub window: Window<i32>,
}

impl EventList {
    fn query() -> ListQuery<execution_event::Entity> {
        use execution_event::Column;
        ListQuery {
            select: execution_event::Entity::find(),
            parent: Column::ExecutionId,
            parent_of: |row| row.execution_id,
            order: vec![Column::Seq],
            ascending: true,
        }
    }
}

impl List for EventList {
    type Item = ExecutionEventRecord;

    async fn pages(
        &self,
        db: &DatabaseConnection,
        _now: chrono::DateTime<chrono::Utc>,
        parents: &[Uuid],
    ) -> Result<HashMap<Uuid, Page<ExecutionEventRecord>>, DbErr> {
        let pages = Self::query().pages(db, parents, &self.window).await?;
        pages
            .into_iter()
            .map(|(parent, mut page)| {
                let rows = std::mem::take(&mut page.items);
                let events = rows
                    .into_iter()
                    .map(log::decode)
                    .collect::<Result<_, _>>()?;
                Ok((parent, page.with_items(events)))
            })
            .collect()
    }

    async fn counts(
        &self,
        db: &DatabaseConnection,
        _now: chrono::DateTime<chrono::Utc>,
        parents: &[Uuid],
    ) -> Result<HashMap<Uuid, u64>, DbErr> {
        Self::query().counts(db, parents).await
    }
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
