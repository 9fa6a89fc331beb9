//! The audit log: every change to an organization's members, invitations,
//! roles and settings, with who made it. Written in the same transaction as
//! the change, so the log never misses one and never records one that did
//! not happen.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use entity::audit_entry;
use sea_orm::{ActiveModelTrait, ConnectionTrait, EntityTrait, Set};
use serde_json::Value;
use uuid::Uuid;

use super::principal::Principal;
use crate::error::AppResult;
use crate::pagination::{ListQuery, Position, RowList, Window};

/// What was done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuditAction {
    OrganizationUpdated,
    MemberRoleChanged,
    MemberRemoved,
    MemberLeft,
    OwnershipTransferred,
    InvitationCreated,
    InvitationRevoked,
    InvitationAccepted,
    ApiKeyCreated,
    ApiKeyRevoked,
    TriggerCreated,
    TriggerDeleted,
}

impl AuditAction {
    const ALL: [Self; 12] = [
        Self::OrganizationUpdated,
        Self::MemberRoleChanged,
        Self::MemberRemoved,
        Self::MemberLeft,
        Self::OwnershipTransferred,
        Self::InvitationCreated,
        Self::InvitationRevoked,
        Self::InvitationAccepted,
        Self::ApiKeyCreated,
        Self::ApiKeyRevoked,
        Self::TriggerCreated,
        Self::TriggerDeleted,
    ];

    /// The stored name, e.g. `member.role_changed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OrganizationUpdated => "organization.updated",
            Self::MemberRoleChanged => "member.role_changed",
            Self::MemberRemoved => "member.removed",
            Self::MemberLeft => "member.left",
            Self::OwnershipTransferred => "ownership.transferred",
            Self::InvitationCreated => "invitation.created",
            Self::InvitationRevoked => "invitation.revoked",
            Self::InvitationAccepted => "invitation.accepted",
            Self::ApiKeyCreated => "api_key.created",
            Self::ApiKeyRevoked => "api_key.revoked",
            Self::TriggerCreated => "trigger.created",
            Self::TriggerDeleted => "trigger.deleted",
        }
    }
}

impl fmt::Display for AuditAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AuditAction {
    type Err = String;

    fn from_str(stored: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|action| action.as_str() == stored)
            .ok_or_else(|| format!("unknown audit action {stored:?}"))
    }
}

/// What a change was made to.
#[derive(Clone, Copy, Debug)]
pub enum Target {
    Organization(Uuid),
    /// A member, by user id.
    Member(Uuid),
    Invitation(Uuid),
    ApiKey(Uuid),
    Trigger(Uuid),
}

impl Target {
    fn parts(self) -> (&'static str, Uuid) {
        match self {
            Self::Organization(id) => ("organization", id),
            Self::Member(id) => ("member", id),
            Self::Invitation(id) => ("invitation", id),
            Self::ApiKey(id) => ("api_key", id),
            Self::Trigger(id) => ("trigger", id),
        }
    }
}

/// Appends one entry: `actor` (a user or a key) did `action` to `target`.
pub async fn record(
    conn: &impl ConnectionTrait,
    organization_id: Uuid,
    actor: Principal,
    action: AuditAction,
    target: Target,
    details: Option<Value>,
    now: DateTime<Utc>,
) -> AppResult<()> {
    let (target_type, target_id) = target.parts();
    audit_entry::ActiveModel {
        id: Set(Uuid::now_v7()),
        organization_id: Set(organization_id),
        actor_user_id: Set(actor.user_id()),
        actor_api_key_id: Set(actor.api_key_id()),
        action: Set(action.as_str().to_owned()),
        target_type: Set(target_type.to_owned()),
        target_id: Set(Some(target_id.to_string())),
        details: Set(details),
        created_at: Set(now),
    }
    .insert(conn)
    .await?;
    Ok(())
}

/// Where an entry stands in the newest-first log.
pub fn position_of(entry: &audit_entry::Model) -> Position {
    Position {
        at: entry.created_at,
        id: entry.id,
    }
}

/// Organizations' logs, newest first. The caller authorizes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AuditList {
    pub window: Window<Position>,
}

impl AuditList {
    fn rows() -> ListQuery<audit_entry::Entity> {
        use audit_entry::Column;
        ListQuery {
            select: audit_entry::Entity::find(),
            parent: Column::OrganizationId,
            parent_of: |row| row.organization_id,
            order: vec![Column::CreatedAt, Column::Id],
            ascending: false,
        }
    }
}

impl RowList for AuditList {
    type Entity = audit_entry::Entity;
    type Key = Position;

    fn query(&self, _now: chrono::DateTime<chrono::Utc>) -> ListQuery<audit_entry::Entity> {
        Self::rows()
    }

    fn window(&self) -> &Window<Position> {
        &self.window
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_reads_back_from_its_stored_name() {
        for action in AuditAction::ALL {
            assert_eq!(action.as_str().parse::<AuditAction>(), Ok(action));
        }
        assert!("member.exploded".parse::<AuditAction>().is_err());
    }
}
