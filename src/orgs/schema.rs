//! GraphQL types and resolvers for organizations and memberships. Thin:
//! read the viewer, call the service, convert.

use async_graphql::{Context, Enum, ID, InputObject, Object};
use chrono::{DateTime, Utc};
use entity::{membership, organization};

use super::service::{self, MemberOrganization, OrganizationName};
use crate::error::AppError;
use crate::graphql::context::{RequestContext, parse_id};

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
    model: organization::Model,
    viewer_role: entity::role::Role,
}

impl From<MemberOrganization> for Organization {
    fn from(found: MemberOrganization) -> Self {
        Self {
            model: found.organization,
            viewer_role: found.role,
        }
    }
}

#[Object]
impl Organization {
    async fn id(&self) -> ID {
        ID(self.model.id.to_string())
    }

    async fn name(&self) -> &str {
        &self.model.name
    }

    /// URL-friendly unique name derived from `name` at creation.
    async fn slug(&self) -> &str {
        &self.model.slug
    }

    /// The role of the signed-in user in this organization.
    async fn viewer_role(&self) -> Role {
        self.viewer_role.into()
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.model.created_at
    }
}

/// The viewer's membership in one organization.
pub struct Membership(membership::Model);

impl From<membership::Model> for Membership {
    fn from(model: membership::Model) -> Self {
        Self(model)
    }
}

#[Object]
impl Membership {
    async fn organization(&self, ctx: &Context<'_>) -> async_graphql::Result<Organization> {
        let organization = RequestContext::of(ctx)
            .loaders
            .organizations
            .load_one(self.0.organization_id)
            .await
            .map_err(AppError::from)?
            .ok_or(AppError::NotFound("organization"))?;
        Ok(Organization {
            model: organization,
            viewer_role: self.0.role,
        })
    }

    async fn role(&self) -> Role {
        self.0.role.into()
    }

    /// When the viewer joined.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
}

#[derive(InputObject)]
pub struct CreateOrganizationInput {
    /// 1 to 100 characters; the slug is derived from it.
    pub name: String,
}

#[derive(Default)]
pub struct OrgQuery;

#[Object]
impl OrgQuery {
    /// An organization the viewer belongs to; NOT_FOUND otherwise.
    async fn organization(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<Option<Organization>> {
        let request = RequestContext::of(ctx);
        let user = request.viewer.user()?;
        let id = parse_id(&id, "id")?;
        Ok(Some(
            service::find_for_member(&request.state.db, user.user.id, id)
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
        input: CreateOrganizationInput,
    ) -> async_graphql::Result<Organization> {
        let request = RequestContext::of(ctx);
        let user = request.viewer.user()?;
        let name = OrganizationName::parse(&input.name, "name")?;
        Ok(
            service::create_organization(&request.state, user.user.id, name)
                .await?
                .into(),
        )
    }
}
