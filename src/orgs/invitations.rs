//! Invitations: an ADMIN offers a role to an email address, the link goes
//! out by mail, and the account with that address accepts it once, within
//! 7 days. Only the token's SHA-256 is stored.

use chrono::Duration;
use entity::role::Role;
use entity::{invitation, membership, user};
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveEnum, ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, Set};
use serde_json::json;
use uuid::Uuid;

use super::audit::{self, AuditAction, Target};
use super::members::lock_organization;
use super::policy::{self, Action};
use super::principal::Principal;
use super::service::{self, MemberOrganization};
use crate::auth::Email;
use crate::auth::tokens::{hash_token, new_opaque_token};
use crate::db::begin_write;
use crate::error::{AppError, AppResult};
use crate::mail::{Mail, app_link};
use crate::pagination::{ListQuery, Position, RowList, Window};
use crate::state::AppState;

/// How long an invitation link works.
pub const INVITATION_LIFETIME: Duration = Duration::days(7);

const INVITATION_INVALID: &str = "this invitation is invalid, used, revoked or expired";

/// An invitation just made, with the token its link carries.
#[derive(Debug)]
pub struct Issued {
    pub invitation: invitation::Model,
    pub token: String,
}

/// Invites `email` into the organization with `role` and mails the link.
/// A pending invitation to the same address is replaced. Inviting someone
/// already a member is CONFLICT; only an OWNER may invite an OWNER.
pub async fn invite(
    state: &AppState,
    actor: Principal,
    organization_id: Uuid,
    email: Email,
    role: Role,
) -> AppResult<Issued> {
    let now = state.clock.now();
    let txn = begin_write(&state.db).await?;
    let organization = lock_organization(&txn, organization_id).await?;
    let actor_role = actor
        .require_role_in(&txn, organization_id, "organization")
        .await?;
    policy::authorize(actor_role, Action::ManageInvitations)?;
    policy::authorize_role_change(actor_role, None, Some(role))?;
    let already_member = membership::Entity::find()
        .inner_join(user::Entity)
        .filter(membership::Column::OrganizationId.eq(organization_id))
        .filter(user::Column::Email.eq(email.as_str()))
        .one(&txn)
        .await?
        .is_some();
    if already_member {
        return Err(AppError::Conflict(
            "this address already belongs to a member".to_owned(),
        ));
    }
    invitation::Entity::update_many()
        .col_expr(invitation::Column::RevokedAt, Expr::value(now))
        .filter(pending(organization_id, now))
        .filter(invitation::Column::Email.eq(email.as_str()))
        .exec(&txn)
        .await?;
    let (token, token_hash) = new_opaque_token("fpi");
    let invitation = invitation::ActiveModel {
        id: Set(Uuid::now_v7()),
        organization_id: Set(organization_id),
        email: Set(email.as_str().to_owned()),
        role: Set(role),
        token_hash: Set(token_hash),
        invited_by: Set(actor.user_id()),
        created_at: Set(now),
        expires_at: Set(now + INVITATION_LIFETIME),
        accepted_at: Set(None),
        revoked_at: Set(None),
    }
    .insert(&txn)
    .await?;
    audit::record(
        &txn,
        organization_id,
        actor,
        AuditAction::InvitationCreated,
        Target::Invitation(invitation.id),
        Some(json!({ "email": invitation.email, "role": role.to_value() })),
        now,
    )
    .await?;
    txn.commit().await?;
    let link = app_link(&state.config.settings, "accept-invitation", &token);
    state.mailer.send(Mail {
        to: invitation.email.clone(),
        subject: format!("You are invited to {} on FlowPilot", organization.name),
        body: format!(
            "Hello,\n\n\
             You are invited to join {name} on FlowPilot as {role}. Sign in (or \
             register) with this address and open this link within 7 days:\n\n\
             {link}\n\n\
             If you did not expect this, ignore this message.\n",
            name = organization.name,
            role = role.to_value(),
        ),
    });
    Ok(Issued { invitation, token })
}

/// Accepts an invitation as the signed-in `user`, whose address must be
/// the one invited; returns the organization as the new member sees it.
pub async fn accept(
    state: &AppState,
    user: &user::Model,
    token: &str,
) -> AppResult<MemberOrganization> {
    let invalid = || AppError::bad_input("token", INVITATION_INVALID);
    let now = state.clock.now();
    let txn = begin_write(&state.db).await?;
    let found = invitation::Entity::find()
        .filter(invitation::Column::TokenHash.eq(hash_token(token)))
        .one(&txn)
        .await?
        .ok_or_else(invalid)?;
    let organization = lock_organization(&txn, found.organization_id).await?;
    // Read it again under the organization's lock: a revocation may have won.
    let found = invitation::Entity::find_by_id(found.id)
        .filter(pending(found.organization_id, now))
        .one(&txn)
        .await?
        .ok_or_else(invalid)?;
    if found.email != user.email {
        return Err(AppError::bad_input(
            "token",
            "this invitation is for another email address; sign in with that one",
        ));
    }
    invitation::Entity::update_many()
        .col_expr(invitation::Column::AcceptedAt, Expr::value(now))
        .filter(invitation::Column::Id.eq(found.id))
        .exec(&txn)
        .await?;
    service::insert_membership(&txn, found.organization_id, user.id, found.role, now).await?;
    audit::record(
        &txn,
        found.organization_id,
        Principal::User(user.id),
        AuditAction::InvitationAccepted,
        Target::Invitation(found.id),
        Some(json!({ "email": found.email, "role": found.role.to_value() })),
        now,
    )
    .await?;
    txn.commit().await?;
    tracing::info!(organization_id = %organization.id, user_id = %user.id, "invitation accepted");
    service::as_member(organization, found.role)
}

/// Revokes a pending invitation; returns it. NOT_FOUND for outsiders and
/// unknown ids, CONFLICT once it is no longer pending.
pub async fn revoke(
    state: &AppState,
    actor: Principal,
    invitation_id: Uuid,
) -> AppResult<invitation::Model> {
    let not_found = || AppError::NotFound("invitation");
    let now = state.clock.now();
    let txn = begin_write(&state.db).await?;
    let found = invitation::Entity::find_by_id(invitation_id)
        .one(&txn)
        .await?
        .ok_or_else(not_found)?;
    lock_organization(&txn, found.organization_id).await?;
    let actor_role = actor
        .require_role_in(&txn, found.organization_id, "invitation")
        .await?;
    policy::authorize(actor_role, Action::ManageInvitations)?;
    let updated = invitation::Entity::update_many()
        .col_expr(invitation::Column::RevokedAt, Expr::value(now))
        .filter(invitation::Column::Id.eq(found.id))
        .filter(pending(found.organization_id, now))
        .exec(&txn)
        .await?;
    if updated.rows_affected == 0 {
        return Err(AppError::Conflict(
            "the invitation is no longer pending".to_owned(),
        ));
    }
    audit::record(
        &txn,
        found.organization_id,
        actor,
        AuditAction::InvitationRevoked,
        Target::Invitation(found.id),
        Some(json!({ "email": found.email })),
        now,
    )
    .await?;
    txn.commit().await?;
    Ok(invitation::Model {
        revoked_at: Some(now),
        ..found
    })
}

/// Invitations of the organization neither accepted, revoked nor expired.
fn pending(organization_id: Uuid, now: chrono::DateTime<chrono::Utc>) -> sea_orm::Condition {
    sea_orm::Condition::all()
        .add(invitation::Column::OrganizationId.eq(organization_id))
        .add(invitation::Column::AcceptedAt.is_null())
        .add(invitation::Column::RevokedAt.is_null())
        .add(invitation::Column::ExpiresAt.gt(now))
}

/// Where an invitation stands in the newest-first list.
pub fn position_of(invitation: &invitation::Model) -> Position {
    Position {
        at: invitation.created_at,
        id: invitation.id,
    }
}

/// Organizations' invitations pending when read, newest first. The caller
/// authorizes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct InvitationList {
    pub window: Window<Position>,
}

impl InvitationList {
    fn rows(now: chrono::DateTime<chrono::Utc>) -> ListQuery<invitation::Entity> {
        use invitation::Column;
        let select = invitation::Entity::find()
            .filter(Column::AcceptedAt.is_null())
            .filter(Column::RevokedAt.is_null())
            .filter(Column::ExpiresAt.gt(now));
        ListQuery {
            select,
            parent: Column::OrganizationId,
            parent_of: |row| row.organization_id,
            order: vec![Column::CreatedAt, Column::Id],
            ascending: false,
        }
    }
}

impl RowList for InvitationList {
    type Entity = invitation::Entity;
    type Key = Position;

    fn query(&self, now: chrono::DateTime<chrono::Utc>) -> ListQuery<invitation::Entity> {
        Self::rows(now)
    }

    fn window(&self) -> &Window<Position> {
        &self.window
    }
}
