//! Creating and reading workflows and their versions. Knows nothing of
//! GraphQL.

use std::collections::HashMap;

use entity::role::Role;
use entity::{workflow, workflow_version};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, IntoActiveModel, QueryFilter,
    Set,
};
use uuid::Uuid;

use super::definition::WorkflowDefinition;
use crate::app::AppState;
use crate::db::begin_write;
use crate::error::{AppError, AppResult};
use crate::orgs::policy::{self, Action};
use crate::orgs::service::role_of;

/// Longest workflow name, in characters.
const MAX_NAME_CHARS: usize = 100;
/// Longest description, in characters.
const MAX_DESCRIPTION_CHARS: usize = 2000;

/// A workflow name: trimmed, 1 to 100 characters.
#[derive(Clone, Debug)]
pub struct WorkflowName(String);

impl WorkflowName {
    /// Parses user input; `field` names the input field in the error.
    pub fn parse(raw: &str, field: &str) -> AppResult<Self> {
        let name = raw.trim();
        if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
            return Err(AppError::bad_input(
                field,
                format!("a workflow name has 1 to {MAX_NAME_CHARS} characters"),
            ));
        }
        Ok(Self(name.to_owned()))
    }
}

/// An optional description: trimmed, empty means none.
pub fn parse_description(raw: Option<&str>, field: &str) -> AppResult<Option<String>> {
    let Some(text) = raw.map(str::trim).filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    if text.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(AppError::bad_input(
            field,
            format!("a description has at most {MAX_DESCRIPTION_CHARS} characters"),
        ));
    }
    Ok(Some(text.to_owned()))
}

/// A new workflow, already parsed.
#[derive(Debug)]
pub struct NewWorkflow {
    pub organization_id: Uuid,
    pub name: WorkflowName,
    pub description: Option<String>,
    pub definition: WorkflowDefinition,
}

/// A workflow as one member sees it.
#[derive(Clone, Debug)]
pub struct MemberWorkflow {
    pub workflow: workflow::Model,
    pub role: Role,
}

/// Creates a workflow with its first version, active, in one transaction.
/// EDITOR and above; NOT_FOUND for non-members of the organization.
pub async fn create_workflow(
    state: &AppState,
    author_id: Uuid,
    new: NewWorkflow,
) -> AppResult<MemberWorkflow> {
    let role = role_of(&state.db, author_id, new.organization_id)
        .await?
        .ok_or(AppError::NotFound("organization"))?;
    policy::authorize(role, Action::CreateWorkflow)?;
    let now = state.clock.now();
    let txn = begin_write(&state.db).await?;
    let workflow = workflow::ActiveModel {
        id: Set(Uuid::now_v7()),
        organization_id: Set(new.organization_id),
        name: Set(new.name.0),
        description: Set(new.description),
        active_version_id: Set(None),
        created_by: Set(Some(author_id)),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(&txn)
    .await?;
    let version = workflow_version::ActiveModel {
        id: Set(Uuid::now_v7()),
        workflow_id: Set(workflow.id),
        number: Set(1),
        definition: Set(new.definition.to_json()),
        author_id: Set(Some(author_id)),
        message: Set(None),
        created_at: Set(now),
    }
    .insert(&txn)
    .await?;
    let mut active = workflow.into_active_model();
    active.active_version_id = Set(Some(version.id));
    let workflow = active.update(&txn).await?;
    txn.commit().await?;
    tracing::info!(workflow_id = %workflow.id, "workflow created");
    Ok(MemberWorkflow { workflow, role })
}

/// The workflow as `user_id` sees it; NOT_FOUND unless they may view it.
pub async fn find_for_member(
    db: &DatabaseConnection,
    user_id: Uuid,
    workflow_id: Uuid,
) -> AppResult<MemberWorkflow> {
    let not_found = || AppError::NotFound("workflow");
    let workflow = workflow::Entity::find_by_id(workflow_id)
        .one(db)
        .await?
        .ok_or_else(not_found)?;
    let role = role_of(db, user_id, workflow.organization_id)
        .await?
        .ok_or_else(not_found)?;
    policy::authorize(role, Action::ViewWorkflow)?;
    Ok(MemberWorkflow { workflow, role })
}

/// The workflow as a member with `role` sees it, if the role may view it.
pub fn as_member(workflow: workflow::Model, role: Role) -> AppResult<MemberWorkflow> {
    policy::authorize(role, Action::ViewWorkflow)?;
    Ok(MemberWorkflow { workflow, role })
}

/// Workflows by id, in one query.
pub async fn workflows_by_id(
    db: &DatabaseConnection,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, workflow::Model>, sea_orm::DbErr> {
    let rows = workflow::Entity::find()
        .filter(workflow::Column::Id.is_in(ids.iter().copied()))
        .all(db)
        .await?;
    Ok(rows.into_iter().map(|w| (w.id, w)).collect())
}

/// Workflow versions by id, in one query.
pub async fn versions_by_id(
    db: &DatabaseConnection,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, workflow_version::Model>, sea_orm::DbErr> {
    let rows = workflow_version::Entity::find()
        .filter(workflow_version::Column::Id.is_in(ids.iter().copied()))
        .all(db)
        .await?;
    Ok(rows.into_iter().map(|v| (v.id, v)).collect())
}
