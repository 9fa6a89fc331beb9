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

use super::catalog::Tags;
use super::definition::WorkflowDefinition;
use super::versions;
use crate::db::{begin_write, locked};
use crate::error::{AppError, AppResult};
use crate::orgs::policy::{self, Action};
use crate::orgs::principal::Principal;
use crate::state::AppState;

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

    /// The name of a copy: `<name> (copy)`, shortened to fit.
    pub fn copy_of(name: &str) -> Self {
        const SUFFIX: &str = " (copy)";
        let kept: String = name
            .chars()
            .take(MAX_NAME_CHARS - SUFFIX.chars().count())
            .collect();
        Self(format!("{}{SUFFIX}", kept.trim_end()))
    }

    pub fn into_inner(self) -> String {
        self.0
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

/// Highest `maxConcurrency` accepted.
const MAX_CONCURRENCY: i32 = 10_000;

/// Parses a concurrency limit; `field` names the input field in the error.
pub fn parse_max_concurrency(raw: i32, field: &str) -> AppResult<i32> {
    if !(1..=MAX_CONCURRENCY).contains(&raw) {
        return Err(AppError::bad_input(
            field,
            format!("maxConcurrency is from 1 to {MAX_CONCURRENCY}"),
        ));
    }
    Ok(raw)
}

/// A new workflow, already parsed.
#[derive(Debug)]
pub struct NewWorkflow {
    pub organization_id: Uuid,
    pub name: WorkflowName,
    pub description: Option<String>,
    pub definition: WorkflowDefinition,
    /// Most executions started and not finished at once; no limit when `None`.
    pub max_concurrency: Option<i32>,
    pub tags: Tags,
}

/// A change to a workflow's settings; `None` fields stay as they are.
#[derive(Debug)]
pub struct WorkflowChange {
    pub workflow_id: Uuid,
    /// The revision the caller read; CONFLICT when it is no longer current.
    pub revision: i32,
    pub name: Option<WorkflowName>,
    /// `Some(None)` removes the description.
    pub description: Option<Option<String>>,
    /// `Some(None)` removes the limit.
    pub max_concurrency: Option<Option<i32>>,
    /// Replaces the tags.
    pub tags: Option<Tags>,
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
    author: Principal,
    new: NewWorkflow,
) -> AppResult<MemberWorkflow> {
    let role = author
        .require_role_in(&state.db, new.organization_id, "organization")
        .await?;
    policy::authorize(role, Action::CreateWorkflow)?;
    let workflow = insert_workflow(state, author, new, None).await?;
    tracing::info!(workflow_id = %workflow.id, "workflow created");
    Ok(MemberWorkflow { workflow, role })
}

/// Inserts a workflow and its first version, `message` on it, and makes
/// that version active, in one transaction. The caller authorizes.
pub(super) async fn insert_workflow(
    state: &AppState,
    author: Principal,
    new: NewWorkflow,
    message: Option<String>,
) -> AppResult<workflow::Model> {
    let now = state.clock.now();
    let txn = begin_write(&state.db).await?;
    let workflow = workflow::ActiveModel {
        id: Set(Uuid::now_v7()),
        organization_id: Set(new.organization_id),
        name: Set(new.name.0),
        description: Set(new.description),
        active_version_id: Set(None),
        created_by: Set(author.user_id()),
        created_at: Set(now),
        updated_at: Set(now),
        max_concurrency: Set(new.max_concurrency),
        revision: Set(1),
        tags: Set(new.tags.stored()),
        archived_at: Set(None),
    }
    .insert(&txn)
    .await?;
    let version = versions::insert_version(
        &txn,
        workflow.id,
        1,
        &new.definition,
        author.user_id(),
        message,
        now,
    )
    .await?;
    let mut active = workflow.into_active_model();
    active.active_version_id = Set(Some(version.id));
    let workflow = active.update(&txn).await?;
    txn.commit().await?;
    Ok(workflow)
}

/// Changes a workflow's settings if `change.revision` is still current
/// (CONFLICT otherwise), bumping the revision. EDITOR and above.
pub async fn update_workflow(
    state: &AppState,
    actor: Principal,
    change: WorkflowChange,
) -> AppResult<MemberWorkflow> {
    let found = find_for_member(&state.db, actor, change.workflow_id).await?;
    policy::authorize(found.role, Action::UpdateWorkflow)?;
    let txn = begin_write(&state.db).await?;
    let current = locked(workflow::Entity::find_by_id(change.workflow_id), &txn)
        .one(&txn)
        .await?
        .ok_or(AppError::NotFound("workflow"))?;
    if current.revision != change.revision {
        return Err(AppError::Conflict(format!(
            "the workflow changed since revision {}; it is at revision {} now",
            change.revision, current.revision
        )));
    }
    let revision = current.revision + 1;
    let mut active = current.into_active_model();
    if let Some(name) = change.name {
        active.name = Set(name.0);
    }
    if let Some(description) = change.description {
        active.description = Set(description);
    }
    if let Some(max_concurrency) = change.max_concurrency {
        active.max_concurrency = Set(max_concurrency);
    }
    if let Some(tags) = change.tags {
        active.tags = Set(tags.stored());
    }
    active.revision = Set(revision);
    active.updated_at = Set(state.clock.now());
    let workflow = active.update(&txn).await?;
    txn.commit().await?;
    Ok(MemberWorkflow {
        workflow,
        role: found.role,
    })
}

/// The workflow as `principal` sees it; NOT_FOUND unless it may view it.
pub async fn find_for_member(
    db: &DatabaseConnection,
    principal: Principal,
    workflow_id: Uuid,
) -> AppResult<MemberWorkflow> {
    let not_found = || AppError::NotFound("workflow");
    let workflow = workflow::Entity::find_by_id(workflow_id)
        .one(db)
        .await?
        .ok_or_else(not_found)?;
    let role = principal
        .role_in(db, workflow.organization_id)
        .await?
        .ok_or_else(not_found)?;
    policy::authorize(role, Action::ViewWorkflow)?;
    Ok(MemberWorkflow { workflow, role })
}

/// The version new executions of `workflow` run. Every workflow has one
/// from its creation.
pub fn active_version_id(workflow: &workflow::Model) -> AppResult<Uuid> {
    workflow.active_version_id.ok_or_else(|| {
        AppError::Internal(anyhow::anyhow!(
            "workflow {} has no active version",
            workflow.id
        ))
    })
}

/// CONFLICT for an archived workflow, which cannot run.
pub fn ensure_runnable(workflow: &workflow::Model) -> AppResult<()> {
    if workflow.archived_at.is_some() {
        return Err(AppError::Conflict(
            "the workflow is archived: unarchive it to run it".to_owned(),
        ));
    }
    Ok(())
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
