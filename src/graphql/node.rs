//! Relay's `Node` interface: `node(id:)` and `nodes(ids:)` fetch any
//! organization, workflow, version, execution or trigger by its id.
//!
//! Ids are the same UUIDs every other field uses (unique across kinds), so
//! clients keep the ids they hold. A lookup asks every kind's DataLoader at
//! once — one statement per kind, whatever the number of ids — then holds
//! each object to the viewer's role in its organization, as the fields for
//! each kind do: what the viewer may not see is NOT_FOUND, exactly as if it
//! did not exist (in `nodes`, a null item with its error).

use std::collections::HashMap;

use async_graphql::{Context, ID, Interface, Object, PathSegment};
use uuid::Uuid;

use super::context::{RequestContext, parse_id};
use crate::error::{AppError, AppResult};
use crate::executions::schema::Execution;
use crate::orgs::principal::Principal;
use crate::orgs::schema::Organization;
use crate::workflows::schema::{Workflow, WorkflowVersion};
use crate::workflows::triggers_schema::Trigger;

/// Most ids one `nodes` call may ask for.
pub const MAX_NODE_IDS: usize = 100;

/// An object with a globally unique id, fetched again with `node(id:)`.
#[derive(Interface)]
#[graphql(field(
    name = "id",
    ty = "ID",
    desc = "The object's id, unique across every kind."
))]
pub enum Node {
    Organization(Organization),
    Workflow(Workflow),
    WorkflowVersion(WorkflowVersion),
    Execution(Execution),
    Trigger(Trigger),
}

/// The query root's node fields.
#[derive(Default)]
pub struct NodeQuery;

#[Object]
impl NodeQuery {
    /// The organization, workflow, version, execution or trigger with this
    /// id; NOT_FOUND when there is none the viewer may see.
    async fn node(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The id, as any `id` field gave it.")] id: ID,
    ) -> async_graphql::Result<Option<Node>> {
        let id = parse_id(&id, "id")?;
        let node = load(ctx, &[id]).await?.pop().flatten();
        Ok(Some(node.ok_or(AppError::NotFound("object"))?))
    }

    /// The objects with these ids, in the order asked (at most 100); where
    /// there is none the viewer may see, null with a NOT_FOUND error.
    async fn nodes(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The ids, at most 100.")] ids: Vec<ID>,
    ) -> async_graphql::Result<Vec<Option<Node>>> {
        if ids.len() > MAX_NODE_IDS {
            return Err(AppError::bad_input(
                "ids",
                format!("at most {MAX_NODE_IDS} ids, not {}", ids.len()),
            )
            .into());
        }
        let ids = ids
            .iter()
            .enumerate()
            .map(|(index, id)| parse_id(id, &format!("ids[{index}]")))
            .collect::<AppResult<Vec<_>>>()?;
        let nodes = load(ctx, &ids).await?;
        for (index, _) in nodes.iter().enumerate().filter(|(_, node)| node.is_none()) {
            let error = async_graphql::Error::from(AppError::NotFound("object"))
                .into_server_error(ctx.item.pos);
            let mut error = ctx.set_error_path(error);
            error.path.push(PathSegment::Index(index));
            ctx.add_error(error);
        }
        Ok(nodes)
    }
}

/// The objects with `ids` as the viewer may see them, in order.
async fn load(ctx: &Context<'_>, ids: &[Uuid]) -> AppResult<Vec<Option<Node>>> {
    let request = RequestContext::of(ctx);
    let principal = request.viewer.principal()?;
    let loaders = request.loaders();
    let keys = ids.to_vec();
    let (organizations, workflows, versions, executions, triggers, roles) = futures::try_join!(
        async {
            loaders
                .organizations
                .load_many(keys.clone())
                .await
                .map_err(AppError::from)
        },
        async {
            loaders
                .workflows
                .load_many(keys.clone())
                .await
                .map_err(AppError::from)
        },
        async {
            loaders
                .workflow_versions
                .load_many(keys.clone())
                .await
                .map_err(AppError::from)
        },
        async {
            loaders
                .executions
                .load_many(keys.clone())
                .await
                .map_err(AppError::from)
        },
        async {
            loaders
                .triggers
                .load_many(keys.clone())
                .await
                .map_err(AppError::from)
        },
        roles_of(request, principal),
    )?;
    // A version's organization is its workflow's.
    let version_workflows = loaders
        .workflows
        .load_many(versions.values().map(|version| version.workflow_id))
        .await
        .map_err(AppError::from)?;
    let mut nodes = Vec::with_capacity(ids.len());
    for id in ids {
        let node = if let Some(organization) = organizations.get(id) {
            roles.get(&organization.id).and_then(|role| {
                crate::orgs::service::as_member(organization.clone(), *role)
                    .ok()
                    .map(|found| Node::Organization(found.into()))
            })
        } else if let Some(workflow) = workflows.get(id) {
            roles.get(&workflow.organization_id).and_then(|role| {
                crate::workflows::service::as_member(workflow.clone(), *role)
                    .ok()
                    .map(|found| Node::Workflow(found.into()))
            })
        } else if let Some(version) = versions.get(id) {
            version_workflows
                .get(&version.workflow_id)
                .and_then(|workflow| {
                    let role = roles.get(&workflow.organization_id)?;
                    crate::workflows::service::as_member(workflow.clone(), *role).ok()?;
                    WorkflowVersion::new(version.clone(), workflow, *role).ok()
                })
                .map(Node::WorkflowVersion)
        } else if let Some(execution) = executions.get(id) {
            roles.get(&execution.organization_id).and_then(|role| {
                crate::executions::service::as_member(execution.clone(), *role)
                    .ok()
                    .map(|found| Node::Execution(found.into()))
            })
        } else if let Some(trigger) = triggers.get(id) {
            roles
                .get(&trigger.organization_id)
                .and_then(|role| Trigger::seen_as(trigger.clone(), *role).ok())
                .map(Node::Trigger)
        } else {
            None
        };
        nodes.push(node);
    }
    Ok(nodes)
}

/// The viewer's role in each organization it belongs to.
async fn roles_of(
    request: &RequestContext,
    principal: Principal,
) -> AppResult<HashMap<Uuid, entity::role::Role>> {
    match principal {
        Principal::ApiKey(grant) => Ok(HashMap::from([(grant.organization_id, grant.role)])),
        Principal::User(user_id) => Ok(request
            .loaders()
            .memberships_by_user
            .load_one(user_id)
            .await
            .map_err(AppError::from)?
            .unwrap_or_default()
            .into_iter()
            .map(|membership| (membership.organization_id, membership.role))
            .collect()),
    }
}
