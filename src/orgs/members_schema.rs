//! GraphQL for an organization's people: members, invitations, ownership
//! and the audit log. Thin: read the viewer, call the services, convert.

use async_graphql::{Context, Enum, ID, InputObject, Object, SimpleObject};

use crate::graphql::scalars::Json;
use chrono::{DateTime, Utc};
use entity::{audit_entry, invitation, user};
use uuid::Uuid;

use super::audit::{self, AuditAction, AuditList};
use super::invitations::InvitationList;
use super::members::{self, Member as MemberRow, MemberList};
use super::policy::{self, Action};
use super::schema::{Organization, Role};
use super::{invitations, service};
use crate::auth::Email;
use crate::auth::api_keys_schema::ApiKey;
use crate::error::AppError;
use crate::graphql::connection::{ListConnection, PageArgs, list_connection};
use crate::graphql::context::{RequestContext, parse_id};
use crate::pagination::encode_cursor;

const MEMBER_CURSOR: &str = "member";
const INVITATION_CURSOR: &str = "invitation";
const AUDIT_CURSOR: &str = "audit";

/// The person behind `user_id` through the request's user loader; `None`
/// for no id, or once their account is gone.
pub async fn user_summary(
    ctx: &Context<'_>,
    user_id: Option<Uuid>,
) -> async_graphql::Result<Option<UserSummary>> {
    let Some(id) = user_id else {
        return Ok(None);
    };
    let user = RequestContext::of(ctx)
        .loaders()
        .users
        .load_one(id)
        .await
        .map_err(AppError::from)?;
    Ok(user.map(UserSummary::from))
}

/// What members of an organization see of one another: name and address,
/// nothing else.
#[derive(SimpleObject)]
pub struct UserSummary {
    /// The person's user id.
    id: ID,
    /// The name they go by.
    display_name: String,
    /// Their email address, lower-cased.
    email: String,
}

impl From<user::Model> for UserSummary {
    fn from(user: user::Model) -> Self {
        Self {
            id: ID(user.id.to_string()),
            display_name: user.display_name,
            email: user.email,
        }
    }
}

/// A person's membership of an organization.
#[derive(SimpleObject)]
pub struct Member {
    /// The person.
    user: UserSummary,
    /// Their role in the organization.
    role: Role,
    /// When they joined.
    joined_at: DateTime<Utc>,
}

impl From<MemberRow> for Member {
    fn from(member: MemberRow) -> Self {
        Self {
            user: member.user.into(),
            role: member.membership.role.into(),
            joined_at: member.membership.created_at,
        }
    }
}

/// A pending offer of a role, mailed to an address.
#[derive(SimpleObject)]
pub struct Invitation {
    /// The invitation's id, to withdraw it with `revokeInvitation`.
    id: ID,
    /// The address the link was mailed to; only an account with it can accept.
    email: String,
    /// The role the invitee gets on accepting.
    role: Role,
    /// When it was sent.
    created_at: DateTime<Utc>,
    /// The link stops working then (7 days after it was sent).
    expires_at: DateTime<Utc>,
    /// When it was withdrawn; null unless it was.
    revoked_at: Option<DateTime<Utc>>,
}

impl From<invitation::Model> for Invitation {
    fn from(invitation: invitation::Model) -> Self {
        Self {
            id: ID(invitation.id.to_string()),
            email: invitation.email,
            role: invitation.role.into(),
            created_at: invitation.created_at,
            expires_at: invitation.expires_at,
            revoked_at: invitation.revoked_at,
        }
    }
}

/// What an audit entry records.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuditEvent {
    /// The organization was renamed or its slug changed.
    OrganizationUpdated,
    /// A member was given another role.
    MemberRoleChanged,
    /// A member was removed.
    MemberRemoved,
    /// A member left the organization.
    MemberLeft,
    /// An OWNER made another member OWNER in their place.
    OwnershipTransferred,
    /// Someone was invited.
    InvitationCreated,
    /// A pending invitation was withdrawn.
    InvitationRevoked,
    /// An invitation was accepted: someone joined.
    InvitationAccepted,
    /// An API key was made.
    ApiKeyCreated,
    /// An API key was revoked.
    ApiKeyRevoked,
    /// A schedule or webhook was added to a workflow.
    TriggerCreated,
    /// A schedule or webhook was deleted.
    TriggerDeleted,
}

impl From<AuditAction> for AuditEvent {
    fn from(action: AuditAction) -> Self {
        match action {
            AuditAction::OrganizationUpdated => Self::OrganizationUpdated,
            AuditAction::MemberRoleChanged => Self::MemberRoleChanged,
            AuditAction::MemberRemoved => Self::MemberRemoved,
            AuditAction::MemberLeft => Self::MemberLeft,
            AuditAction::OwnershipTransferred => Self::OwnershipTransferred,
            AuditAction::InvitationCreated => Self::InvitationCreated,
            AuditAction::InvitationRevoked => Self::InvitationRevoked,
            AuditAction::InvitationAccepted => Self::InvitationAccepted,
            AuditAction::ApiKeyCreated => Self::ApiKeyCreated,
            AuditAction::ApiKeyRevoked => Self::ApiKeyRevoked,
            AuditAction::TriggerCreated => Self::TriggerCreated,
            AuditAction::TriggerDeleted => Self::TriggerDeleted,
        }
    }
}

/// One change to the organization's people or settings.
pub struct AuditEntry(audit_entry::Model);

/// One change to the organization's people or settings: what was done, to what,
/// by whom and when.
#[Object]
impl AuditEntry {
    /// The entry's id.
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    /// What was done.
    async fn action(&self) -> async_graphql::Result<AuditEvent> {
        let action: AuditAction = self
            .0
            .action
            .parse()
            .map_err(|e: String| AppError::Internal(anyhow::anyhow!(e)))?;
        Ok(action.into())
    }

    /// The API key that acted; null when a user did.
    async fn actor_api_key(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<ApiKey>> {
        let Some(id) = self.0.actor_api_key_id else {
            return Ok(None);
        };
        let key = RequestContext::of(ctx)
            .loaders()
            .api_keys
            .load_one(id)
            .await
            .map_err(AppError::from)?;
        Ok(key.map(ApiKey))
    }

    /// The member who acted; null when an API key did, or once their
    /// account is gone.
    async fn actor(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<UserSummary>> {
        user_summary(ctx, self.0.actor_user_id).await
    }

    /// `organization`, `member` (by user id), `invitation` or `api_key`.
    async fn target_type(&self) -> &str {
        &self.0.target_type
    }

    /// The id of what was changed, of the kind `targetType` names.
    async fn target_id(&self) -> Option<ID> {
        self.0.target_id.clone().map(ID)
    }

    /// Particulars, such as `{"from": "VIEWER", "to": "EDITOR"}`.
    async fn details(&self) -> Option<Json> {
        self.0.details.clone().map(Json)
    }

    /// When it was done.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
}

pub async fn members_connection(
    ctx: &Context<'_>,
    organization_id: Uuid,
    viewer_role: entity::role::Role,
    page: PageArgs,
) -> async_graphql::Result<ListConnection<Member>> {
    policy::authorize(viewer_role, Action::ViewMembers)?;
    let window = page.window(MEMBER_CURSOR)?;
    list_connection(ctx, organization_id, MemberList { window }, |member| {
        let cursor = encode_cursor(MEMBER_CURSOR, members::position_of(&member));
        Ok((cursor, Member::from(member)))
    })
    .await
}

/// `organization.invitations`: pending ones, ADMIN and up.
pub async fn invitations_connection(
    ctx: &Context<'_>,
    organization_id: Uuid,
    viewer_role: entity::role::Role,
    page: PageArgs,
) -> async_graphql::Result<ListConnection<Invitation>> {
    policy::authorize(viewer_role, Action::ManageInvitations)?;
    let list = InvitationList {
        window: page.window(INVITATION_CURSOR)?,
    };
    list_connection(ctx, organization_id, list, |invitation| {
        let cursor = encode_cursor(INVITATION_CURSOR, invitations::position_of(&invitation));
        Ok((cursor, Invitation::from(invitation)))
    })
    .await
}

/// `organization.auditLog`: newest first, ADMIN and up.
pub async fn audit_log_connection(
    ctx: &Context<'_>,
    organization_id: Uuid,
    viewer_role: entity::role::Role,
    page: PageArgs,
) -> async_graphql::Result<ListConnection<AuditEntry>> {
    policy::authorize(viewer_role, Action::ViewAuditLog)?;
    let window = page.window(AUDIT_CURSOR)?;
    list_connection(ctx, organization_id, AuditList { window }, |entry| {
        let cursor = encode_cursor(AUDIT_CURSOR, audit::position_of(&entry));
        Ok((cursor, AuditEntry(entry)))
    })
    .await
}

/// New name or slug; a field left out stays as it is.
#[derive(InputObject)]
pub struct UpdateOrganizationInput {
    /// The organization to change.
    pub organization_id: ID,
    /// 1 to 100 characters.
    pub name: Option<String>,
    /// 1 to 64 lower-case letters and digits, in groups joined by single
    /// dashes; unique.
    pub slug: Option<String>,
}

/// A member and the role to give them.
#[derive(InputObject)]
pub struct UpdateMemberRoleInput {
    /// The organization.
    pub organization_id: ID,
    /// The member, by user id.
    pub user_id: ID,
    /// The role to give them.
    pub role: Role,
}

/// A member of an organization.
#[derive(InputObject)]
pub struct MemberInput {
    /// The organization.
    pub organization_id: ID,
    /// The member, by user id.
    pub user_id: ID,
}

/// An organization.
#[derive(InputObject)]
pub struct LeaveOrganizationInput {
    /// The organization to leave.
    pub organization_id: ID,
}

/// Whom to invite, and as what.
#[derive(InputObject)]
pub struct InviteMemberInput {
    /// The organization to invite to.
    pub organization_id: ID,
    /// Where to mail the link; the invitee accepts signed in with this address.
    pub email: String,
    /// The role they get on accepting; only an OWNER invites an OWNER.
    pub role: Role,
}

/// The token from an invitation link.
#[derive(InputObject)]
pub struct AcceptInvitationInput {
    /// The token in the invitation link.
    pub token: String,
}

/// An invitation to withdraw.
#[derive(InputObject)]
pub struct RevokeInvitationInput {
    /// A pending invitation.
    pub invitation_id: ID,
}

#[derive(Default)]
pub struct MembersMutation;

#[Object]
impl MembersMutation {
    /// Renames the organization or changes its slug (ADMIN).
    async fn update_organization(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The organization and its new name or slug.")]
        input: UpdateOrganizationInput,
    ) -> async_graphql::Result<Organization> {
        let request = RequestContext::of(ctx);
        let actor = request.viewer.principal()?;
        let organization_id = parse_id(&input.organization_id, "organizationId")?;
        let change = service::OrganizationChange {
            name: input
                .name
                .as_deref()
                .map(|name| service::OrganizationName::parse(name, "name"))
                .transpose()?,
            slug: input
                .slug
                .as_deref()
                .map(|slug| service::Slug::parse(slug, "slug"))
                .transpose()?,
        };
        let updated =
            service::update_organization(&request.state, actor, organization_id, change).await?;
        Ok(updated.into())
    }

    /// Gives a member another role (ADMIN; only an OWNER makes or changes
    /// an OWNER, and the last OWNER keeps the role).
    async fn update_member_role(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The member and their new role.")] input: UpdateMemberRoleInput,
    ) -> async_graphql::Result<Member> {
        let request = RequestContext::of(ctx);
        let actor = request.viewer.principal()?;
        let organization_id = parse_id(&input.organization_id, "organizationId")?;
        let user_id = parse_id(&input.user_id, "userId")?;
        let member = members::update_role(
            &request.state,
            actor,
            organization_id,
            user_id,
            input.role.into(),
        )
        .await?;
        Ok(member.into())
    }

    /// Removes a member (ADMIN; only an OWNER removes an OWNER, and never
    /// the last one).
    async fn remove_member(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The member to remove.")] input: MemberInput,
    ) -> async_graphql::Result<bool> {
        let request = RequestContext::of(ctx);
        let actor = request.viewer.principal()?;
        let organization_id = parse_id(&input.organization_id, "organizationId")?;
        let user_id = parse_id(&input.user_id, "userId")?;
        members::remove(&request.state, actor, organization_id, user_id).await?;
        Ok(true)
    }

    /// Leaves an organization; the last OWNER cannot.
    async fn leave_organization(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The organization to leave.")] input: LeaveOrganizationInput,
    ) -> async_graphql::Result<bool> {
        let request = RequestContext::of(ctx);
        let user = request.viewer.user()?;
        let organization_id = parse_id(&input.organization_id, "organizationId")?;
        members::leave(&request.state, user.user.id, organization_id).await?;
        Ok(true)
    }

    /// Makes another member an OWNER and the calling OWNER an ADMIN.
    async fn transfer_ownership(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The member to make OWNER.")] input: MemberInput,
    ) -> async_graphql::Result<Organization> {
        let request = RequestContext::of(ctx);
        let actor = request.viewer.principal()?;
        let organization_id = parse_id(&input.organization_id, "organizationId")?;
        let user_id = parse_id(&input.user_id, "userId")?;
        let organization =
            members::transfer_ownership(&request.state, actor, organization_id, user_id).await?;
        Ok(organization.into())
    }

    /// Mails an invitation link valid 7 days (ADMIN; only an OWNER invites
    /// an OWNER). A pending invitation to the same address is replaced;
    /// inviting a member is CONFLICT.
    async fn invite_member(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Whom to invite, and as what.")] input: InviteMemberInput,
    ) -> async_graphql::Result<Invitation> {
        let request = RequestContext::of(ctx);
        let actor = request.viewer.principal()?;
        let organization_id = parse_id(&input.organization_id, "organizationId")?;
        let email = Email::parse(&input.email, "email")?;
        let issued = invitations::invite(
            &request.state,
            actor,
            organization_id,
            email,
            input.role.into(),
        )
        .await?;
        Ok(issued.invitation.into())
    }

    /// Joins the organization an invitation link is for, signed in with
    /// the invited address.
    async fn accept_invitation(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The token from the invitation link.")] input: AcceptInvitationInput,
    ) -> async_graphql::Result<Organization> {
        let request = RequestContext::of(ctx);
        let user = request.viewer.user()?;
        let joined = invitations::accept(&request.state, &user.user, &input.token).await?;
        Ok(joined.into())
    }

    /// Withdraws a pending invitation (ADMIN).
    async fn revoke_invitation(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The invitation to withdraw.")] input: RevokeInvitationInput,
    ) -> async_graphql::Result<Invitation> {
        let request = RequestContext::of(ctx);
        let actor = request.viewer.principal()?;
        let invitation_id = parse_id(&input.invitation_id, "invitationId")?;
        let revoked = invitations::revoke(&request.state, actor, invitation_id).await?;
        Ok(revoked.into())
    }
}
