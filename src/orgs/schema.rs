//! GraphQL types and resolvers for organizations and memberships. Thin:
//! read the viewer, call the service, convert.

use async_graphql::{Context, Enum, ID, InputObject, Object, SimpleObject};
use chrono::{DateTime, Utc};
use entity::{membership, organization};
use uuid::Uuid;

use super::deletion;
use super::members_schema::{
    AuditEntry, Invitation, Member, audit_log_connection, invitations_connection,
    members_connection,
};
use super::service::{self, MemberOrganization, OrganizationName};
use crate::auth::api_keys_schema::{ApiKey, api_keys_connection};
use crate::error::AppError;
use crate::executions::schema::{Execution, ExecutionFilterInput, executions_connection};
use crate::executions::service::ExecutionParent;
use crate::graphql::connection::{ListConnection, PageArgs};
use crate::graphql::context::{RequestContext, parse_id};
use crate::workflows::catalog_schema::{WorkflowFilterInput, WorkflowOrder, workflows_connection};
use crate::workflows::schema::Workflow;

/// A member's role in an organization, from most to least privileged.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Full control, including deleting the organization and managing owners.
    Owner,
    /// Manages members, invitations and API keys.
    Admin,
    /// Creates, edits and runs workflows.
    Editor,
    /// Reads workflows and executions.
    Viewer,
}

impl From<Role> for entity::role::Role {
    fn from(role: Role) -> Self {
        match role {
            Role::Owner => Self::Owner,
            Role::Admin => Self::Admin,
            Role::Editor => Self::Editor,
            Role::Viewer => Self::Viewer,
        }
    }
}

impl From<entity::role::Role> for Role {
    fn from(role: entity::role::Role) -> Self {
        match role {
            entity::role::Role::Owner => Self::Owner,
            entity::role::Role::Admin => Self::Admin,
            entity::role::Role::Editor => Self::Editor,
            entity::role::Role::Viewer => Self::Viewer,
        }
    }
}

/// A tenant: it owns workflows, executions and members.
pub struct Organization {
    id: Uuid,
    name: String,
    slug: String,
    created_at: DateTime<Utc>,
    viewer_role: entity::role::Role,
}

impl From<MemberOrganization> for Organization {
    fn from(found: MemberOrganization) -> Self {
        let organization::Model {
            id,
            name,
            slug,
            created_at,
            ..
        } = found.organization;
        Self {
            id,
            name,
            slug,
            created_at,
            viewer_role: found.role,
        }
    }
}

/// A tenant: it owns workflows, executions, API keys and members. Only its
/// members and its API keys can see it.
#[Object]
impl Organization {
    /// The organization's executions, newest first (VIEWER and up).
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
        let parent = (ExecutionParent::Organization, self.id);
        let page = PageArgs::new(first, after, last, before);
        executions_connection(ctx, parent, self.viewer_role, page, filter).await
    }

    /// The organization's workflows (VIEWER and up): not archived ones
    /// unless the filter asks, newest first unless `orderBy` says otherwise.
    #[allow(clippy::too_many_arguments)]
    async fn workflows(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "At most this many (default 20, at most 100).")] first: Option<i32>,
        #[graphql(desc = "The `endCursor` of the page before, in the same order.")] after: Option<
            String,
        >,
        #[graphql(desc = "The last this many (at most 100) before `before`.")] last: Option<i32>,
        #[graphql(desc = "The `startCursor` of the page after.")] before: Option<String>,
        #[graphql(desc = "Which workflows; those not archived when left out.")] filter: Option<
            WorkflowFilterInput,
        >,
        #[graphql(default, desc = "CREATED_AT_DESC when left out.")] order_by: WorkflowOrder,
    ) -> async_graphql::Result<ListConnection<Workflow>> {
        workflows_connection(
            ctx,
            self.id,
            self.viewer_role,
            PageArgs::new(first, after, last, before),
            filter,
            order_by,
        )
        .await
    }

    /// Members, longest-standing first (VIEWER and up).
    async fn members(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "At most this many (default 20, at most 100).")] first: Option<i32>,
        #[graphql(desc = "The `endCursor` of the page before.")] after: Option<String>,
        #[graphql(desc = "The last this many (at most 100) before `before`.")] last: Option<i32>,
        #[graphql(desc = "The `startCursor` of the page after.")] before: Option<String>,
    ) -> async_graphql::Result<ListConnection<Member>> {
        let page = PageArgs::new(first, after, last, before);
        members_connection(ctx, self.id, self.viewer_role, page).await
    }

    /// Pending invitations, newest first (ADMIN and up).
    async fn invitations(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "At most this many (default 20, at most 100).")] first: Option<i32>,
        #[graphql(desc = "The `endCursor` of the page before.")] after: Option<String>,
        #[graphql(desc = "The last this many (at most 100) before `before`.")] last: Option<i32>,
        #[graphql(desc = "The `startCursor` of the page after.")] before: Option<String>,
    ) -> async_graphql::Result<ListConnection<Invitation>> {
        let page = PageArgs::new(first, after, last, before);
        invitations_connection(ctx, self.id, self.viewer_role, page).await
    }

    /// Changes to members, invitations, roles and settings, newest first
    /// (ADMIN and up).
    async fn audit_log(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "At most this many (default 20, at most 100).")] first: Option<i32>,
        #[graphql(desc = "The `endCursor` of the page before.")] after: Option<String>,
        #[graphql(desc = "The last this many (at most 100) before `before`.")] last: Option<i32>,
        #[graphql(desc = "The `startCursor` of the page after.")] before: Option<String>,
    ) -> async_graphql::Result<ListConnection<AuditEntry>> {
        let page = PageArgs::new(first, after, last, before);
        audit_log_connection(ctx, self.id, self.viewer_role, page).await
    }

    /// API keys, newest first; revoked ones only with `includeRevoked`
    /// (ADMIN and up).
    async fn api_keys(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "At most this many (default 20, at most 100).")] first: Option<i32>,
        #[graphql(desc = "The `endCursor` of the page before.")] after: Option<String>,
        #[graphql(desc = "The last this many (at most 100) before `before`.")] last: Option<i32>,
        #[graphql(desc = "The `startCursor` of the page after.")] before: Option<String>,
        #[graphql(default = false, desc = "Also list revoked keys.")] include_revoked: bool,
    ) -> async_graphql::Result<ListConnection<ApiKey>> {
        api_keys_connection(
            ctx,
            self.id,
            self.viewer_role,
            include_revoked,
            PageArgs::new(first, after, last, before),
        )
        .await
    }

    /// The organization's id.
    pub async fn id(&self) -> ID {
        ID(self.id.to_string())
    }

    /// Its display name, 1 to 100 characters.
    async fn name(&self) -> &str {
        &self.name
    }

    /// URL-friendly unique name, derived from `name` at creation unless
    /// chosen with `updateOrganization`.
    async fn slug(&self) -> &str {
        &self.slug
    }

    /// The role of the signed-in user (or the API key) in this organization.
    async fn viewer_role(&self) -> Role {
        self.viewer_role.into()
    }

    /// When it was created.
    async fn created_at(&self) -> DateTime<Utc> {
        self.created_at
    }
}

/// The viewer's membership in one organization.
pub struct Membership {
    organization_id: Uuid,
    role: entity::role::Role,
    created_at: DateTime<Utc>,
}

impl From<membership::Model> for Membership {
    fn from(model: membership::Model) -> Self {
        Self {
            organization_id: model.organization_id,
            role: model.role,
            created_at: model.created_at,
        }
    }
}

/// The viewer's membership in one organization: which one, and with what role.
#[Object]
impl Membership {
    /// The organization.
    async fn organization(&self, ctx: &Context<'_>) -> async_graphql::Result<Organization> {
        let organization = RequestContext::of(ctx)
            .loaders()
            .organizations
            .load_one(self.organization_id)
            .await
            .map_err(AppError::from)?
            .ok_or(AppError::NotFound("organization"))?;
        Ok(service::as_member(organization, self.role)?.into())
    }

    /// The viewer's role there.
    async fn role(&self) -> Role {
        self.role.into()
    }

    /// When the viewer joined.
    async fn created_at(&self) -> DateTime<Utc> {
        self.created_at
    }
}

/// The organization to delete.
#[derive(InputObject)]
pub struct DeleteOrganizationInput {
    /// The organization to delete.
    pub organization_id: ID,
}

/// What deleting an organization did.
#[derive(SimpleObject)]
pub struct DeleteOrganizationPayload {
    /// The id the deleted organization had.
    pub organization_id: ID,
    /// Queued and running executions that were cancelled before deletion.
    pub cancelled_executions: i32,
}

/// A new organization.
#[derive(InputObject)]
pub struct CreateOrganizationInput {
    /// 1 to 100 characters.
    pub name: String,
    /// 1 to 64 lower-case letters and digits, in groups joined by single
    /// dashes; unique. Derived from the name when left out.
    pub slug: Option<String>,
}

#[derive(Default)]
pub struct OrgQuery;

#[Object]
impl OrgQuery {
    /// An organization the viewer belongs to; NOT_FOUND otherwise.
    async fn organization(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The organization's id.")] id: ID,
    ) -> async_graphql::Result<Option<Organization>> {
        let request = RequestContext::of(ctx);
        let actor = request.viewer.principal()?;
        let id = parse_id(&id, "id")?;
        Ok(Some(
            service::find_for_member(&request.state.db, actor, id)
                .await?
                .into(),
        ))
    }

    /// An organization the viewer belongs to, by slug; NOT_FOUND otherwise.
    async fn organization_by_slug(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The organization's slug.")] slug: String,
    ) -> async_graphql::Result<Option<Organization>> {
        let request = RequestContext::of(ctx);
        let actor = request.viewer.principal()?;
        Ok(Some(
            service::find_by_slug_for_member(&request.state.db, actor, &slug)
                .await?
                .into(),
        ))
    }
}

#[derive(Default)]
pub struct OrgMutation;

#[Object]
impl OrgMutation {
    /// Creates an organization; the viewer becomes its OWNER.
    async fn create_organization(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The name and, if wanted, the slug.")] input: CreateOrganizationInput,
    ) -> async_graphql::Result<Organization> {
        let request = RequestContext::of(ctx);
        let user = request.viewer.user()?;
        let name = OrganizationName::parse(&input.name, "name")?;
        let slug = input
            .slug
            .as_deref()
            .map(|slug| service::Slug::parse(slug, "slug"))
            .transpose()?;
        Ok(
            service::create_organization(&request.state, user.user.id, name, slug)
                .await?
                .into(),
        )
    }

    /// Deletes an organization and everything it owns (OWNER). Its queued
    /// and running executions are cancelled first; its API keys stop
    /// working and its members' subscriptions end.
    async fn delete_organization(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The organization to delete.")] input: DeleteOrganizationInput,
    ) -> async_graphql::Result<DeleteOrganizationPayload> {
        let request = RequestContext::of(ctx);
        let actor = request.viewer.principal()?;
        let id = parse_id(&input.organization_id, "organizationId")?;
        let deleted = deletion::delete_organization(&request.state, actor, id).await?;
        Ok(DeleteOrganizationPayload {
            organization_id: ID(deleted.organization_id.to_string()),
            cancelled_executions: i32::try_from(deleted.cancelled_executions).unwrap_or(i32::MAX),
        })
    }
}
