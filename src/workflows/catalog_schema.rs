//! GraphQL for versions and the workflow catalog: making and publishing
//! versions, archiving, copying, and an organization's workflow list.
//! Thin: parse input, call `versions` or `catalog`, convert.

use async_graphql::{Context, Enum, ID, InputObject, Object, SimpleObject};

use crate::graphql::scalars::Json;
use uuid::Uuid;

use super::catalog::{self, Tags, WorkflowFilter, WorkflowList, WorkflowOrder as Order};
use super::schema::{StepKind, Workflow, WorkflowDefinitionInput, WorkflowVersion};
use super::service::{MemberWorkflow, WorkflowName};
use super::versions;
use super::{definition, step_configs};
use crate::graphql::connection::{ListConnection, PageArgs, list_connection};
use crate::graphql::context::{RequestContext, parse_id};
use crate::orgs::policy::{self, Action};
use crate::pagination::encode_cursor;

/// Which of an organization's workflows to list.
#[derive(InputObject, Default)]
pub struct WorkflowFilterInput {
    /// Text in the name, case-insensitive.
    pub search: Option<String>,
    /// Only workflows carrying every one of these tags.
    #[graphql(default)]
    pub tags: Vec<String>,
    /// Only archived workflows when true; only the others when false.
    #[graphql(default = false)]
    pub archived: bool,
}

/// The order of a workflow list; ties are broken by id, so pages never
/// skip or repeat a workflow.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum WorkflowOrder {
    /// Newest created first; the default.
    #[default]
    CreatedAtDesc,
    /// Oldest created first.
    CreatedAtAsc,
    /// Most recently changed first.
    UpdatedAtDesc,
    /// By name, A to Z.
    NameAsc,
}

impl From<WorkflowOrder> for Order {
    fn from(order: WorkflowOrder) -> Self {
        match order {
            WorkflowOrder::CreatedAtDesc => Self::CreatedNewestFirst,
            WorkflowOrder::CreatedAtAsc => Self::CreatedOldestFirst,
            WorkflowOrder::UpdatedAtDesc => Self::UpdatedNewestFirst,
            WorkflowOrder::NameAsc => Self::NameAscending,
        }
    }
}

/// `organization.workflows`: VIEWER and up.
pub async fn workflows_connection(
    ctx: &Context<'_>,
    organization_id: Uuid,
    role: entity::role::Role,
    page: PageArgs,
    filter: Option<WorkflowFilterInput>,
    order: WorkflowOrder,
) -> async_graphql::Result<ListConnection<Workflow>> {
    policy::authorize(role, Action::ViewWorkflow)?;
    let filter = filter.unwrap_or_default();
    let filter = WorkflowFilter {
        search: WorkflowFilter::parse_search(filter.search.as_deref(), "filter")?,
        tags: Tags::parse(&filter.tags, "filter.tags")?,
        archived: filter.archived,
    };
    let order = Order::from(order);
    let list = WorkflowList::new(filter, order, page.window(order.cursor_kind())?)?;
    list_connection(ctx, organization_id, list, |workflow| {
        let cursor = encode_cursor(order.cursor_kind(), order.position_of(&workflow));
        Ok((cursor, Workflow::from(MemberWorkflow { workflow, role })))
    })
    .await
}

/// A new version of a workflow.
#[derive(InputObject)]
pub struct CreateWorkflowVersionInput {
    /// The workflow to add a version to.
    pub workflow_id: ID,
    /// The new version's steps.
    pub definition: WorkflowDefinitionInput,
    /// What changed, at most 500 characters.
    pub message: Option<String>,
}

/// A version to make active.
#[derive(InputObject)]
pub struct PublishWorkflowVersionInput {
    /// The workflow.
    pub workflow_id: ID,
    /// One of its versions, to make active.
    pub version_id: ID,
}

/// A workflow to act on.
#[derive(InputObject)]
pub struct WorkflowInput {
    /// The workflow.
    pub workflow_id: ID,
}

/// A workflow to copy.
#[derive(InputObject)]
pub struct DuplicateWorkflowInput {
    /// The workflow to copy.
    pub workflow_id: ID,
    /// The copy's name; `<name> (copy)` when left out.
    pub name: Option<String>,
}

/// What a step kind does and the JSON Schema its `config` must match.
#[derive(SimpleObject)]
pub struct StepKindInfo {
    /// The step kind.
    kind: StepKind,
    /// What steps of this kind do, in plain words.
    description: String,
    /// A JSON Schema (2020-12) of the config, derived from the type the
    /// server parses it into.
    config_schema: Json,
}

/// One problem with a definition.
#[derive(SimpleObject)]
pub struct DefinitionProblem {
    /// A path into the input, e.g. `definition.steps[2].config.ms`.
    field: String,
    /// What is wrong, in plain words.
    message: String,
}

/// The outcome of checking a definition.
#[derive(SimpleObject)]
pub struct DefinitionValidation {
    /// Whether the definition can be saved as it is.
    valid: bool,
    /// Every problem found, in input order; empty when valid.
    problems: Vec<DefinitionProblem>,
}

#[derive(Default)]
pub struct CatalogQuery;

#[Object]
impl CatalogQuery {
    /// Every step kind, with a description and its config's JSON Schema,
    /// for editors that build forms.
    async fn step_kinds(&self) -> Vec<StepKindInfo> {
        definition::StepKind::ALL
            .into_iter()
            .map(|kind| StepKindInfo {
                kind: kind.into(),
                description: step_configs::description(kind).to_owned(),
                config_schema: Json(step_configs::config_schema(kind).clone()),
            })
            .collect()
    }

    /// Checks a definition without saving it and answers every problem
    /// found, for editors that validate as you type. Needs a signed-in
    /// user or an API key.
    async fn validate_workflow_definition(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The definition to check.")] definition: WorkflowDefinitionInput,
    ) -> async_graphql::Result<DefinitionValidation> {
        RequestContext::of(ctx).viewer.principal()?;
        let problems: Vec<DefinitionProblem> = definition
            .problems("definition")
            .into_iter()
            .map(|problem| DefinitionProblem {
                field: problem.field,
                message: problem.message,
            })
            .collect();
        Ok(DefinitionValidation {
            valid: problems.is_empty(),
            problems,
        })
    }

    /// A version of a workflow the viewer may read; NOT_FOUND otherwise.
    async fn workflow_version(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The version's id.")] id: ID,
    ) -> async_graphql::Result<Option<WorkflowVersion>> {
        let request = RequestContext::of(ctx);
        let actor = request.viewer.principal()?;
        let id = parse_id(&id, "id")?;
        let found = versions::find_for_member(&request.state.db, actor, id).await?;
        Ok(Some(WorkflowVersion::try_from(found)?))
    }
}

#[derive(Default)]
pub struct CatalogMutation;

#[Object]
impl CatalogMutation {
    /// Adds the next version of a workflow without making it active
    /// (EDITOR). Versions never change once made.
    async fn create_workflow_version(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The workflow and the new definition.")] input: CreateWorkflowVersionInput,
    ) -> async_graphql::Result<WorkflowVersion> {
        let request = RequestContext::of(ctx);
        let actor = request.viewer.principal()?;
        let workflow_id = parse_id(&input.workflow_id, "workflowId")?;
        let definition = input.definition.parse("definition")?;
        let message = versions::parse_message(input.message.as_deref(), "message")?;
        let created =
            versions::create_version(&request.state, actor, workflow_id, definition, message)
                .await?;
        WorkflowVersion::try_from(created)
    }

    /// Makes a version the one new executions run (EDITOR); publishing an
    /// older version rolls back.
    async fn publish_workflow_version(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The version to make active.")] input: PublishWorkflowVersionInput,
    ) -> async_graphql::Result<Workflow> {
        let request = RequestContext::of(ctx);
        let actor = request.viewer.principal()?;
        let workflow_id = parse_id(&input.workflow_id, "workflowId")?;
        let version_id = parse_id(&input.version_id, "versionId")?;
        Ok(
            versions::publish_version(&request.state, actor, workflow_id, version_id)
                .await?
                .into(),
        )
    }

    /// Archives a workflow (EDITOR): it cannot run and leaves the lists
    /// until unarchived. CONFLICT when already archived.
    async fn archive_workflow(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The workflow to archive.")] input: WorkflowInput,
    ) -> async_graphql::Result<Workflow> {
        let request = RequestContext::of(ctx);
        let actor = request.viewer.principal()?;
        let id = parse_id(&input.workflow_id, "workflowId")?;
        Ok(catalog::archive(&request.state, actor, id).await?.into())
    }

    /// Brings an archived workflow back (EDITOR). CONFLICT when it is not
    /// archived.
    async fn unarchive_workflow(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The workflow to bring back.")] input: WorkflowInput,
    ) -> async_graphql::Result<Workflow> {
        let request = RequestContext::of(ctx);
        let actor = request.viewer.principal()?;
        let id = parse_id(&input.workflow_id, "workflowId")?;
        Ok(catalog::unarchive(&request.state, actor, id).await?.into())
    }

    /// Copies a workflow's active definition, description, tags and limit
    /// into a new workflow (EDITOR).
    async fn duplicate_workflow(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The workflow to copy, and the copy's name.")]
        input: DuplicateWorkflowInput,
    ) -> async_graphql::Result<Workflow> {
        let request = RequestContext::of(ctx);
        let actor = request.viewer.principal()?;
        let id = parse_id(&input.workflow_id, "workflowId")?;
        let name = input
            .name
            .as_deref()
            .map(|name| WorkflowName::parse(name, "name"))
            .transpose()?;
        Ok(catalog::duplicate(&request.state, actor, id, name)
            .await?
            .into())
    }
}
