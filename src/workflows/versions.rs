//! Workflow versions: immutable, numbered snapshots of a definition. A new
//! version never changes what runs; publishing one makes it the active
//! version, and publishing an older one rolls back. Knows nothing of
//! GraphQL.

use entity::role::Role;
use entity::{workflow, workflow_version};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait,
    IntoActiveModel, QueryFilter, QueryOrder, QuerySelect, Set,
};
use uuid::Uuid;

use super::definition::WorkflowDefinition;
use super::service::{self as workflows, MemberWorkflow};
use crate::db::{begin_write, locked};
use crate::error::{AppError, AppResult};
use crate::orgs::policy::{self, Action};
use crate::orgs::principal::Principal;
use crate::pagination::{ListQuery, RowList, Window};
use crate::state::AppState;

/// Longest version message, in characters.
const MAX_MESSAGE_CHARS: usize = 500;

/// An optional message describing a version: trimmed, empty means none.
pub fn parse_message(raw: Option<&str>, field: &str) -> AppResult<Option<String>> {
    let Some(text) = raw.map(str::trim).filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    if text.chars().count() > MAX_MESSAGE_CHARS {
        return Err(AppError::bad_input(
            field,
            format!("a version message has at most {MAX_MESSAGE_CHARS} characters"),
        ));
    }
    Ok(Some(text.to_owned()))
}

/// A version as one member sees it, with its workflow.
#[derive(Clone, Debug)]
pub struct MemberVersion {
    pub version: workflow_version::Model,
    pub workflow: workflow::Model,
    pub role: Role,
}

/// Adds version n+1 to a workflow without publishing it (EDITOR and up).
pub async fn create_version(
    state: &AppState,
    author: Principal,
    workflow_id: Uuid,
    definition: WorkflowDefinition,
    message: Option<String>,
) -> AppResult<MemberVersion> {
    let found = workflows::find_for_member(&state.db, author, workflow_id).await?;
    policy::authorize(found.role, Action::UpdateWorkflow)?;
    let now = state.clock.now();
    let txn = begin_write(&state.db).await?;
    // Locking the workflow serializes numbering.
    let workflow = locked(workflow::Entity::find_by_id(workflow_id), &txn)
        .one(&txn)
        .await?
        .ok_or(AppError::NotFound("workflow"))?;
    let number = latest_number(&txn, workflow_id).await? + 1;
    let version = insert_version(
        &txn,
        workflow_id,
        number,
        &definition,
        author.user_id(),
        message,
        now,
    )
    .await?;
    workflow::Entity::update_many()
        .col_expr(workflow::Column::UpdatedAt, Expr::value(now))
        .filter(workflow::Column::Id.eq(workflow_id))
        .exec(&txn)
        .await?;
    txn.commit().await?;
    Ok(MemberVersion {
        version,
        workflow: workflow::Model {
            updated_at: now,
            ..workflow
        },
        role: found.role,
    })
}

/// Inserts a version row.
pub(super) async fn insert_version(
    conn: &impl ConnectionTrait,
    workflow_id: Uuid,
    number: i32,
    definition: &WorkflowDefinition,
    author_id: Option<Uuid>,
    message: Option<String>,
    now: chrono::DateTime<chrono::Utc>,
) -> AppResult<workflow_version::Model> {
    Ok(workflow_version::ActiveModel {
        id: Set(Uuid::now_v7()),
        workflow_id: Set(workflow_id),
        number: Set(number),
        definition: Set(definition.to_json()),
        author_id: Set(author_id),
        message: Set(message),
        created_at: Set(now),
    }
    .insert(conn)
    .await?)
}

async fn latest_number(conn: &impl ConnectionTrait, workflow_id: Uuid) -> AppResult<i32> {
    let latest: Option<i32> = workflow_version::Entity::find()
        .select_only()
        .column(workflow_version::Column::Number)
        .filter(workflow_version::Column::WorkflowId.eq(workflow_id))
        .order_by_desc(workflow_version::Column::Number)
        .limit(1)
        .into_tuple()
        .one(conn)
        .await?;
    Ok(latest.unwrap_or(0))
}

/// Makes one of the workflow's versions the one new executions run
/// (EDITOR and up); publishing an older version rolls back.
pub async fn publish_version(
    state: &AppState,
    actor: Principal,
    workflow_id: Uuid,
    version_id: Uuid,
) -> AppResult<MemberWorkflow> {
    let found = workflows::find_for_member(&state.db, actor, workflow_id).await?;
    policy::authorize(found.role, Action::UpdateWorkflow)?;
    let version = version_of(&state.db, workflow_id, version_id).await?;
    let txn = begin_write(&state.db).await?;
    let current = locked(workflow::Entity::find_by_id(workflow_id), &txn)
        .one(&txn)
        .await?
        .ok_or(AppError::NotFound("workflow"))?;
    if current.active_version_id == Some(version.id) {
        return Ok(MemberWorkflow {
            workflow: current,
            role: found.role,
        });
    }
    let revision = current.revision + 1;
    let mut active = current.into_active_model();
    active.active_version_id = Set(Some(version.id));
    active.revision = Set(revision);
    active.updated_at = Set(state.clock.now());
    let workflow = active.update(&txn).await?;
    txn.commit().await?;
    tracing::info!(%workflow_id, version = version.number, "workflow version published");
    Ok(MemberWorkflow {
        workflow,
        role: found.role,
    })
}

/// The version `version_id` of `workflow_id`; NOT_FOUND when it belongs to
/// another workflow or does not exist.
pub async fn version_of(
    db: &impl ConnectionTrait,
    workflow_id: Uuid,
    version_id: Uuid,
) -> AppResult<workflow_version::Model> {
    workflow_version::Entity::find_by_id(version_id)
        .filter(workflow_version::Column::WorkflowId.eq(workflow_id))
        .one(db)
        .await?
        .ok_or(AppError::NotFound("workflow version"))
}

/// The version as `principal` sees it; NOT_FOUND unless it may view its
/// workflow.
pub async fn find_for_member(
    db: &DatabaseConnection,
    principal: Principal,
    version_id: Uuid,
) -> AppResult<MemberVersion> {
    let not_found = || AppError::NotFound("workflow version");
    let (version, workflow) = workflow_version::Entity::find_by_id(version_id)
        .find_also_related(workflow::Entity)
        .one(db)
        .await?
        .ok_or_else(not_found)?;
    let workflow = workflow.ok_or_else(not_found)?;
    let role = principal
        .role_in(db, workflow.organization_id)
        .await?
        .ok_or_else(not_found)?;
    policy::authorize(role, Action::ViewWorkflow)?;
    Ok(MemberVersion {
        version,
        workflow,
        role,
    })
}

/// Workflows' versions, newest (highest number) first. The caller
/// authorizes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct VersionList {
    pub window: Window<i32>,
}

impl VersionList {
    fn rows() -> ListQuery<workflow_version::Entity> {
        use workflow_version::Column;
        ListQuery {
            select: workflow_version::Entity::find(),
            parent: Column::WorkflowId,
            parent_of: |row| row.workflow_id,
            order: vec![Column::Number],
            ascending: false,
        }
    }
}

impl RowList for VersionList {
    type Entity = workflow_version::Entity;
    type Key = i32;

    fn query(&self, _now: chrono::DateTime<chrono::Utc>) -> ListQuery<workflow_version::Entity> {
        Self::rows()
    }

    fn window(&self) -> &Window<i32> {
        &self.window
    }
}
