//! Starting and reading executions. Knows nothing of GraphQL.

use std::collections::HashMap;

use entity::role::Role;
use entity::status::{ExecutionStatus, StepStatus};
use entity::{execution, step_run, workflow_version};
use futures::Stream;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, Set,
};
use serde_json::Value;
use uuid::Uuid;

use crate::app::AppState;
use crate::db::begin_write;
use crate::engine::store::publish_after_commit;
use crate::error::{AppError, AppResult};
use crate::events::log::{self, EventKind, ExecutionEventRecord};
use crate::events::{BusMessage, Topic, replay};
use crate::orgs::policy::{self, Action};
use crate::orgs::service::role_of;
use crate::workflows::definition::WorkflowDefinition;
use crate::workflows::service as workflows;

/// Priority of executions started without one.
pub const NORMAL_PRIORITY: i32 = 0;

/// An execution as one member sees it.
#[derive(Clone, Debug)]
pub struct MemberExecution {
    pub execution: execution::Model,
    pub role: Role,
}

/// Queues an execution of the workflow's active version with `input`.
/// EDITOR and above; NOT_FOUND for those who cannot see the workflow.
pub async fn run_workflow(
    state: &AppState,
    user_id: Uuid,
    workflow_id: Uuid,
    input: Value,
) -> AppResult<MemberExecution> {
    let found = workflows::find_for_member(&state.db, user_id, workflow_id).await?;
    policy::authorize(found.role, Action::RunWorkflow)?;
    let version_id = found.workflow.active_version_id.ok_or_else(|| {
        AppError::Internal(anyhow::anyhow!(
            "workflow {workflow_id} has no active version"
        ))
    })?;
    let version = workflow_version::Entity::find_by_id(version_id)
        .one(&state.db)
        .await?
        .ok_or_else(|| {
            AppError::Internal(anyhow::anyhow!("workflow version {version_id} is missing"))
        })?;
    let definition =
        WorkflowDefinition::from_stored(&version.definition).map_err(AppError::Internal)?;

    let now = state.clock.now();
    let txn = begin_write(&state.db).await?;
    let execution = execution::ActiveModel {
        id: Set(Uuid::now_v7()),
        organization_id: Set(found.workflow.organization_id),
        workflow_id: Set(workflow_id),
        workflow_version_id: Set(version.id),
        status: Set(ExecutionStatus::Queued),
        priority: Set(NORMAL_PRIORITY),
        input: Set(input),
        output: Set(None),
        error: Set(None),
        trigger_kind: Set("MANUAL".to_owned()),
        idempotency_key: Set(None),
        attempt: Set(0),
        lease_owner: Set(None),
        lease_expires_at: Set(None),
        lease_epoch: Set(0),
        cancel_requested: Set(false),
        run_after: Set(None),
        last_event_seq: Set(1),
        created_by: Set(Some(user_id)),
        queued_at: Set(now),
        started_at: Set(None),
        finished_at: Set(None),
        updated_at: Set(now),
    }
    .insert(&txn)
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
            input: Set(None),
            output: Set(None),
            error: Set(None),
            next_retry_at: Set(None),
            started_at: Set(None),
            finished_at: Set(None),
            updated_at: Set(now),
        })
        .collect();
    step_run::Entity::insert_many(steps).exec(&txn).await?;
    let event = log::append(&txn, &execution, EventKind::ExecutionQueued, None, now).await?;
    txn.commit().await?;
    publish_after_commit(state, event).await;
    state
        .bus
        .publish(Topic::Control, BusMessage::WorkerWakeup)
        .await;
    tracing::info!(execution_id = %execution.id, %workflow_id, "execution queued");
    Ok(MemberExecution {
        execution,
        role: found.role,
    })
}

/// The execution as `user_id` sees it; NOT_FOUND unless they may view it.
pub async fn find_for_member(
    db: &DatabaseConnection,
    user_id: Uuid,
    execution_id: Uuid,
) -> AppResult<MemberExecution> {
    let not_found = || AppError::NotFound("execution");
    let execution = execution::Entity::find_by_id(execution_id)
        .one(db)
        .await?
        .ok_or_else(not_found)?;
    let role = role_of(db, user_id, execution.organization_id)
        .await?
        .ok_or_else(not_found)?;
    policy::authorize(role, Action::ViewExecution)?;
    Ok(MemberExecution { execution, role })
}

/// The execution's events after `after_seq`: replayed from the log, then
/// live until the terminal event. See [`replay::execution_events`].
pub fn event_stream(
    state: &AppState,
    execution: &MemberExecution,
    after_seq: i32,
) -> AppResult<impl Stream<Item = AppResult<ExecutionEventRecord>> + use<>> {
    let last = execution.execution.last_event_seq;
    if !(0..=last).contains(&after_seq) {
        return Err(AppError::bad_input(
            "afterSeq",
            format!("afterSeq must be from 0 to the execution's lastEventSeq ({last})"),
        ));
    }
    Ok(replay::execution_events(
        state.clone(),
        execution.execution.id,
        execution.execution.organization_id,
        after_seq,
    ))
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
