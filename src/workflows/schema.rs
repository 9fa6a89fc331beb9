//! GraphQL types and resolvers for workflows. Thin: parse input, call the
//! service, convert.

use async_graphql::{Context, Enum, ID, InputObject, MaybeUndefined, Object, SimpleObject};

use crate::graphql::scalars::Json;
use chrono::{DateTime, Utc};

use entity::{workflow, workflow_version};
use uuid::Uuid;

use super::catalog::Tags;
use super::definition::{self, Problem, RetryPolicy, StepDefinition, WorkflowDefinition};
use super::service::{self, MemberWorkflow, NewWorkflow, WorkflowChange, WorkflowName};
use super::triggers_schema::Trigger;
use super::versions::{MemberVersion, VersionList};
use crate::error::AppError;
use crate::executions::loaders::RecentExecutions;
use crate::executions::schema::{Execution, ExecutionFilterInput, executions_connection};
use crate::executions::service::ExecutionParent;
use crate::graphql::connection::{ListConnection, PageArgs, list_connection};
use crate::graphql::context::{RequestContext, parse_id};
use crate::orgs::members_schema::{UserSummary, user_summary};
use crate::orgs::policy::{self, Action};
use crate::orgs::schema::Organization;
use crate::pagination::encode_cursor;

/// What a step does.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepKind {
    /// `{"output": …}`: builds a value from templates over `input` and
    /// `steps.<id>.output`.
    Transform,
    /// `{"ms": n}`: waits n milliseconds.
    Delay,
    /// `{"message": …}`: fails with the (templated) message.
    Fail,
    /// `{"if": "<expression>"}`: always succeeds with `{"result": true|false}`;
    /// steps that need it are skipped when the result is false.
    Condition,
    /// `{"method": "POST", "url": …, "headers": {…}, "body": …}`: sends a
    /// request (with an `Idempotency-Key` header of
    /// `{executionId}:{stepId}`) and succeeds with `{"status", "headers",
    /// "body", "truncated"}`; a status of 400 or more fails the attempt.
    /// Addresses that are not public are refused unless the server allows
    /// them.
    Http,
}

impl From<StepKind> for definition::StepKind {
    fn from(kind: StepKind) -> Self {
        match kind {
            StepKind::Transform => Self::Transform,
            StepKind::Delay => Self::Delay,
            StepKind::Fail => Self::Fail,
            StepKind::Condition => Self::Condition,
            StepKind::Http => Self::Http,
        }
    }
}

impl From<definition::StepKind> for StepKind {
    fn from(kind: definition::StepKind) -> Self {
        match kind {
            definition::StepKind::Transform => Self::Transform,
            definition::StepKind::Delay => Self::Delay,
            definition::StepKind::Fail => Self::Fail,
            definition::StepKind::Condition => Self::Condition,
            definition::StepKind::Http => Self::Http,
        }
    }
}

/// One step of a new definition.
#[derive(InputObject)]
pub struct StepInput {
    /// Matches `^[a-z][a-z0-9_]{0,63}$`; unique in the definition.
    pub id: String,
    /// What the step does; `config` must match its schema (see `stepKinds`).
    pub kind: StepKind,
    /// Steps that must succeed before this one runs.
    #[graphql(default)]
    pub needs: Vec<String>,
    /// The kind's configuration; strings are templates.
    pub config: Json,
    /// Retries after a failed attempt; a single attempt when left out.
    pub retry: Option<RetryPolicyInput>,
    /// How long one attempt may run before it fails (and may be retried).
    pub timeout_ms: Option<u64>,
}

/// How a failed step is tried again.
#[derive(InputObject, SimpleObject, Clone, Copy)]
#[graphql(input_name = "RetryPolicyInput", name = "RetryPolicy")]
pub struct RetryPolicyInput {
    /// Attempts in all, from 1 to 20.
    pub max_attempts: u32,
    /// Wait before the second attempt.
    #[graphql(default = 1000)]
    pub initial_backoff_ms: u64,
    /// Each further wait is the previous one times this (1 to 10).
    #[graphql(default = 2.0)]
    pub factor: f64,
    /// Longest wait between attempts.
    #[graphql(default = 60000)]
    pub max_backoff_ms: u64,
    /// Varies each wait by up to this fraction either way (0 to 1).
    #[graphql(default = 0.0)]
    pub jitter: f64,
}

impl From<RetryPolicyInput> for RetryPolicy {
    fn from(input: RetryPolicyInput) -> Self {
        Self {
            max_attempts: input.max_attempts,
            initial_backoff_ms: input.initial_backoff_ms,
            factor: input.factor,
            max_backoff_ms: input.max_backoff_ms,
            jitter: input.jitter,
        }
    }
}

impl From<RetryPolicy> for RetryPolicyInput {
    fn from(policy: RetryPolicy) -> Self {
        Self {
            max_attempts: policy.max_attempts,
            initial_backoff_ms: policy.initial_backoff_ms,
            factor: policy.factor,
            max_backoff_ms: policy.max_backoff_ms,
            jitter: policy.jitter,
        }
    }
}

/// The steps of a workflow: a DAG through their `needs`.
#[derive(InputObject)]
pub struct WorkflowDefinitionInput {
    /// 1 to 200 steps, in any order; their `needs` must not form a cycle.
    pub steps: Vec<StepInput>,
    /// How long an execution may take from its first start, parked time
    /// included; it then ends TIMED_OUT.
    pub timeout_ms: Option<u64>,
}

impl WorkflowDefinitionInput {
    pub(super) fn parse(self, field: &str) -> Result<WorkflowDefinition, AppError> {
        let (steps, timeout_ms) = self.into_parts();
        WorkflowDefinition::parse(steps, timeout_ms, field)
    }

    /// Every problem with the definition, none when it is valid.
    pub(super) fn problems(self, field: &str) -> Vec<Problem> {
        let (steps, timeout_ms) = self.into_parts();
        WorkflowDefinition::validate(steps, timeout_ms, field)
            .err()
            .unwrap_or_default()
    }

    fn into_parts(self) -> (Vec<StepDefinition>, Option<u64>) {
        let steps = self
            .steps
            .into_iter()
            .map(|step| StepDefinition {
                id: step.id,
                kind: step.kind.into(),
                needs: step.needs,
                config: step.config.0,
                retry: step.retry.map(RetryPolicy::from),
                timeout_ms: step.timeout_ms,
            })
            .collect();
        (steps, self.timeout_ms)
    }
}

/// Changes to a workflow's settings; fields left out stay as they are.
#[derive(InputObject)]
pub struct UpdateWorkflowInput {
    /// The workflow to change.
    pub workflow_id: ID,
    /// The `revision` you read; CONFLICT when the workflow changed since.
    pub revision: i32,
    /// 1 to 100 characters.
    pub name: Option<String>,
    /// At most 2,000 characters; null removes it.
    pub description: MaybeUndefined<String>,
    /// 1 to 10,000; null removes the limit.
    pub max_concurrency: MaybeUndefined<i32>,
    /// Replaces the tags: up to 20, each 1 to 32 of `a-z 0-9 - _ : .`
    /// (lower-cased).
    pub tags: Option<Vec<String>>,
}

/// A new workflow.
#[derive(InputObject)]
pub struct CreateWorkflowInput {
    /// The organization to create it in.
    pub organization_id: ID,
    /// 1 to 100 characters.
    pub name: String,
    /// At most 2,000 characters.
    pub description: Option<String>,
    /// The steps of version 1, which becomes the active version.
    pub definition: WorkflowDefinitionInput,
    /// Most executions of this workflow started and not finished at once
    /// (1 to 10,000); the rest wait QUEUED. No limit when left out.
    pub max_concurrency: Option<i32>,
    /// Up to 20, each 1 to 32 of `a-z 0-9 - _ : .` (lower-cased).
    #[graphql(default)]
    pub tags: Vec<String>,
}

/// An automation: a named DAG of steps, in versions.
pub struct Workflow {
    model: workflow::Model,
    viewer_role: entity::role::Role,
}

impl From<MemberWorkflow> for Workflow {
    fn from(found: MemberWorkflow) -> Self {
        Self {
            model: found.workflow,
            viewer_role: found.role,
        }
    }
}

/// An automation: a named DAG of steps, kept in versions of which one is
/// active.
#[Object]
impl Workflow {
    /// The workflow's executions, newest first.
    async fn executions(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "At most this many (default 20, at most 100).")] first: Option<i32>,
        #[graphql(desc = "The `endCursor` of the page before.")] after: Option<String>,
        #[graphql(desc = "The last this many (at most 100) before `before`.")] last: Option<i32>,
        #[graphql(desc = "The `startCursor` of the page after.")] before: Option<String>,
        #[graphql(desc = "Which executions; all when left out.")] filter: Option<
            ExecutionFilterInput,
        >,
    ) -> async_graphql::Result<ListConnection<Execution>> {
        let parent = (ExecutionParent::Workflow, self.model.id);
        let page = PageArgs::new(first, after, last, before);
        executions_connection(ctx, parent, self.viewer_role, page, filter).await
    }

    /// The newest executions, newest first: for dashboards, one query for
    /// a whole list of workflows.
    async fn recent_executions(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 5, desc = "How many, 1 to 20.")] limit: i32,
    ) -> async_graphql::Result<Vec<Execution>> {
        let limit = u32::try_from(limit)
            .ok()
            .filter(|n| (1..=MAX_RECENT_EXECUTIONS).contains(n))
            .ok_or_else(|| {
                AppError::bad_input(
                    "limit",
                    format!("limit is from 1 to {MAX_RECENT_EXECUTIONS}"),
                )
            })?;
        self.recent(ctx, limit).await
    }

    /// The execution queued last; null if it never ran.
    async fn last_execution(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Execution>> {
        Ok(self.recent(ctx, 1).await?.into_iter().next())
    }

    /// Versions, newest (highest number) first.
    async fn versions(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "At most this many (default 20, at most 100).")] first: Option<i32>,
        #[graphql(desc = "The `endCursor` of the page before.")] after: Option<String>,
        #[graphql(desc = "The last this many (at most 100) before `before`.")] last: Option<i32>,
        #[graphql(desc = "The `startCursor` of the page after.")] before: Option<String>,
    ) -> async_graphql::Result<ListConnection<WorkflowVersion>> {
        let page = PageArgs::new(first, after, last, before);
        versions_connection(ctx, &self.model, self.viewer_role, page).await
    }

    /// Its schedules and webhooks, oldest first (at most 20).
    async fn triggers(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Trigger>> {
        let triggers = RequestContext::of(ctx)
            .loaders()
            .triggers_by_workflow
            .load_one(self.model.id)
            .await
            .map_err(AppError::from)?
            .unwrap_or_default();
        triggers
            .into_iter()
            .map(|found| Trigger::seen_as(found, self.viewer_role))
            .collect()
    }

    /// Who created it; null when an API key did, or once their account is
    /// gone.
    async fn created_by(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<UserSummary>> {
        user_summary(ctx, self.model.created_by).await
    }

    /// Sorted, lower-case labels to filter lists by.
    async fn tags(&self) -> Vec<String> {
        Tags::from_stored(&self.model.tags)
    }

    /// When it was archived; archived workflows cannot run.
    async fn archived_at(&self) -> Option<DateTime<Utc>> {
        self.model.archived_at
    }

    /// The workflow's id.
    pub async fn id(&self) -> ID {
        ID(self.model.id.to_string())
    }

    /// Its name, 1 to 100 characters.
    async fn name(&self) -> &str {
        &self.model.name
    }

    /// What it is for, at most 2,000 characters; null when none was given.
    async fn description(&self) -> Option<&str> {
        self.model.description.as_deref()
    }

    /// The organization it belongs to.
    async fn organization(&self, ctx: &Context<'_>) -> async_graphql::Result<Organization> {
        let organization = RequestContext::of(ctx)
            .loaders()
            .organizations
            .load_one(self.model.organization_id)
            .await
            .map_err(AppError::from)?
            .ok_or(AppError::NotFound("organization"))?;
        Ok(crate::orgs::service::as_member(organization, self.viewer_role)?.into())
    }

    /// The version new executions run.
    async fn active_version(&self, ctx: &Context<'_>) -> async_graphql::Result<WorkflowVersion> {
        let id = service::active_version_id(&self.model)?;
        let version = RequestContext::of(ctx)
            .loaders()
            .workflow_versions
            .load_one(id)
            .await
            .map_err(AppError::from)?
            .ok_or(AppError::NotFound("workflow version"))?;
        WorkflowVersion::new(version, &self.model, self.viewer_role)
    }

    /// When it was created.
    async fn created_at(&self) -> DateTime<Utc> {
        self.model.created_at
    }

    /// When it last changed: its settings, its active version or whether it is
    /// archived.
    async fn updated_at(&self) -> DateTime<Utc> {
        self.model.updated_at
    }

    /// Most executions started and not finished at once; null: no limit.
    async fn max_concurrency(&self) -> Option<i32> {
        self.model.max_concurrency
    }

    /// Grows with every change; send it back with `updateWorkflow`.
    async fn revision(&self) -> i32 {
        self.model.revision
    }
}

impl Workflow {
    async fn recent(&self, ctx: &Context<'_>, limit: u32) -> async_graphql::Result<Vec<Execution>> {
        let key = RecentExecutions {
            workflow_id: self.model.id,
            limit,
        };
        let executions = RequestContext::of(ctx)
            .loaders()
            .recent_executions
            .load_one(key)
            .await
            .map_err(AppError::from)?
            .unwrap_or_default();
        executions
            .into_iter()
            .map(|execution| {
                let found = crate::executions::service::as_member(execution, self.viewer_role)?;
                Ok(Execution::from(found))
            })
            .collect()
    }
}

/// An immutable snapshot of a workflow's definition.
pub struct WorkflowVersion {
    model: workflow_version::Model,
    definition: WorkflowDefinition,
    workflow: workflow::Model,
    viewer_role: entity::role::Role,
}

impl WorkflowVersion {
    /// `version` of `workflow` as a member with `role` sees it.
    pub fn new(
        version: workflow_version::Model,
        workflow: &workflow::Model,
        role: entity::role::Role,
    ) -> async_graphql::Result<Self> {
        let definition =
            WorkflowDefinition::from_stored(&version.definition).map_err(AppError::Internal)?;
        Ok(Self {
            model: version,
            definition,
            workflow: workflow.clone(),
            viewer_role: role,
        })
    }
}

impl TryFrom<MemberVersion> for WorkflowVersion {
    type Error = async_graphql::Error;

    fn try_from(found: MemberVersion) -> Result<Self, Self::Error> {
        Self::new(found.version, &found.workflow, found.role)
    }
}

/// An immutable snapshot of a workflow's definition, numbered 1, 2, 3, …
#[Object]
impl WorkflowVersion {
    /// The version's id.
    pub async fn id(&self) -> ID {
        ID(self.model.id.to_string())
    }

    /// 1 for the first version, then 2, 3, …
    async fn number(&self) -> i32 {
        self.model.number
    }

    /// What changed, as its author described it.
    async fn message(&self) -> Option<&str> {
        self.model.message.as_deref()
    }

    /// Who made it; null when an API key did, or once their account is gone.
    async fn author(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<UserSummary>> {
        user_summary(ctx, self.model.author_id).await
    }

    /// Whether new executions run this version.
    async fn is_active(&self) -> bool {
        self.workflow.active_version_id == Some(self.model.id)
    }

    /// The workflow it is a version of.
    async fn workflow(&self) -> Workflow {
        Workflow {
            model: self.workflow.clone(),
            viewer_role: self.viewer_role,
        }
    }

    /// Its steps and timeout, as saved.
    async fn definition(&self) -> DefinitionView {
        DefinitionView {
            steps: self
                .definition
                .steps
                .iter()
                .map(|s| StepView {
                    id: s.id.clone(),
                    kind: s.kind.into(),
                    needs: s.needs.clone(),
                    config: Json(s.config.clone()),
                    retry: s.retry.map(RetryPolicyInput::from),
                    timeout_ms: s.timeout_ms,
                })
                .collect(),
            timeout_ms: self.definition.timeout_ms,
        }
    }

    /// When it was made.
    async fn created_at(&self) -> DateTime<Utc> {
        self.model.created_at
    }
}

/// The workflow `id` through the request's loader, as a member with `role`
/// sees it.
pub async fn load_workflow(
    ctx: &Context<'_>,
    id: Uuid,
    role: entity::role::Role,
) -> async_graphql::Result<Workflow> {
    let workflow = RequestContext::of(ctx)
        .loaders()
        .workflows
        .load_one(id)
        .await
        .map_err(AppError::from)?
        .ok_or(AppError::NotFound("workflow"))?;
    Ok(service::as_member(workflow, role)?.into())
}

const VERSION_CURSOR: &str = "version";
/// Most executions `recentExecutions` returns.
const MAX_RECENT_EXECUTIONS: u32 = 20;

/// `workflow.versions`: VIEWER and up, newest first.
async fn versions_connection(
    ctx: &Context<'_>,
    workflow: &workflow::Model,
    role: entity::role::Role,
    page: PageArgs,
) -> async_graphql::Result<ListConnection<WorkflowVersion>> {
    policy::authorize(role, Action::ViewWorkflow)?;
    let window = page.window(VERSION_CURSOR)?;
    list_connection(ctx, workflow.id, VersionList { window }, |version| {
        let cursor = encode_cursor(VERSION_CURSOR, version.number);
        let version = WorkflowVersion::new(version, workflow, role)?;
        Ok((cursor, version))
    })
    .await
}

/// A workflow version's steps.
#[derive(SimpleObject)]
#[graphql(name = "WorkflowDefinition")]
pub struct DefinitionView {
    /// The steps, in the order they were given.
    steps: Vec<StepView>,
    /// How long an execution may take from its first start, in milliseconds,
    /// before it ends TIMED_OUT; null: no limit.
    timeout_ms: Option<u64>,
}

/// One step of a definition.
#[derive(SimpleObject)]
#[graphql(name = "Step")]
pub struct StepView {
    /// Unique in the definition; what `needs` and templates refer to.
    id: String,
    /// What the step does.
    kind: StepKind,
    /// Ids of the steps that must succeed before this one runs.
    needs: Vec<String>,
    /// The kind's configuration, as given; strings are templates.
    config: Json,
    /// How a failed attempt is retried; null: a single attempt.
    retry: Option<RetryPolicyInput>,
    /// How long one attempt may run, in milliseconds; null when the step sets
    /// no limit.
    timeout_ms: Option<u64>,
}

#[derive(Default)]
pub struct WorkflowQuery;

#[Object]
impl WorkflowQuery {
    /// A workflow of an organization the viewer belongs to; NOT_FOUND otherwise.
    async fn workflow(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The workflow's id.")] id: ID,
    ) -> async_graphql::Result<Option<Workflow>> {
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
pub struct WorkflowMutation;

#[Object]
impl WorkflowMutation {
    /// Creates a workflow whose first version is active. EDITOR and above.
    async fn create_workflow(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The workflow to create.")] input: CreateWorkflowInput,
    ) -> async_graphql::Result<Workflow> {
        let request = RequestContext::of(ctx);
        let actor = request.viewer.principal()?;
        let new = NewWorkflow {
            organization_id: parse_id(&input.organization_id, "organizationId")?,
            name: WorkflowName::parse(&input.name, "name")?,
            description: service::parse_description(input.description.as_deref(), "description")?,
            definition: input.definition.parse("definition")?,
            max_concurrency: input
                .max_concurrency
                .map(|n| service::parse_max_concurrency(n, "maxConcurrency"))
                .transpose()?,
            tags: Tags::parse(&input.tags, "tags")?,
        };
        Ok(service::create_workflow(&request.state, actor, new)
            .await?
            .into())
    }

    /// Changes a workflow's name, description, concurrency limit or tags, if
    /// `revision` is still current. EDITOR and above.
    async fn update_workflow(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The workflow and the changes.")] input: UpdateWorkflowInput,
    ) -> async_graphql::Result<Workflow> {
        let request = RequestContext::of(ctx);
        let actor = request.viewer.principal()?;
        let change = WorkflowChange {
            workflow_id: parse_id(&input.workflow_id, "workflowId")?,
            revision: input.revision,
            name: input
                .name
                .as_deref()
                .map(|name| WorkflowName::parse(name, "name"))
                .transpose()?,
            description: match input.description {
                MaybeUndefined::Undefined => None,
                MaybeUndefined::Null => Some(None),
                MaybeUndefined::Value(text) => {
                    Some(service::parse_description(Some(&text), "description")?)
                }
            },
            max_concurrency: match input.max_concurrency {
                MaybeUndefined::Undefined => None,
                MaybeUndefined::Null => Some(None),
                MaybeUndefined::Value(n) => {
                    Some(Some(service::parse_max_concurrency(n, "maxConcurrency")?))
                }
            },
            tags: input
                .tags
                .as_deref()
                .map(|tags| Tags::parse(tags, "tags"))
                .transpose()?,
        };
        Ok(service::update_workflow(&request.state, actor, change)
            .await?
            .into())
    }
}
