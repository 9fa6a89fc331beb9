//! Members of an organization: listing them, changing roles, removing and
//! leaving, and handing ownership over.
//!
//! Every change locks the organization's row first, so that concurrent
//! changes cannot together leave it without an OWNER, and writes its audit
//! entry in the same transaction.

use std::collections::HashMap;

use entity::role::Role;
use entity::{membership, organization, user};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveEnum, ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait,
    PaginatorTrait, QueryFilter,
};
use serde_json::json;
use uuid::Uuid;

use super::audit::{self, AuditAction, Target};
use super::policy::{self, Action};
use super::principal::Principal;
use super::service::{MemberOrganization, as_member};
use crate::db::{begin_write, locked};
use crate::error::{AppError, AppResult};
use crate::events::{BusMessage, Topic};
use crate::pagination::{List, ListQuery, Page, Position, Window};
use crate::state::AppState;

/// A member with the person behind the membership.
#[derive(Clone, Debug)]
pub struct Member {
    pub membership: membership::Model,
    pub user: user::Model,
}

const LAST_OWNER: &str = "an organization needs an OWNER: make another member OWNER first";

/// Where a member stands in the oldest-first list.
pub fn position_of(member: &Member) -> Position {
    Position {
        at: member.membership.created_at,
        id: member.membership.id,
    }
}

/// Organizations' members, longest-standing first, each with their user.
/// The caller authorizes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MemberList {
    pub window: Window<Position>,
}

impl MemberList {
    fn query() -> ListQuery<membership::Entity> {
        use membership::Column;
        ListQuery {
            select: membership::Entity::find(),
            parent: Column::OrganizationId,
            parent_of: |row| row.organization_id,
            order: vec![Column::CreatedAt, Column::Id],
            ascending: true,
        }
    }
}

impl List for MemberList {
    type Item = Member;

    /// The memberships in one statement, their users in one more.
    async fn pages(
        &self,
        db: &DatabaseConnection,
        _now: chrono::DateTime<chrono::Utc>,
        parents: &[Uuid],
    ) -> Result<HashMap<Uuid, Page<Member>>, DbErr> {
        let pages = Self::query().pages(db, parents, &self.window).await?;
        let user_ids: Vec<Uuid> = pages
            .values()
            .flat_map(|page| page.items.iter().map(|m| m.user_id))
            .collect();
        let users = super::service::users_by_id(db, &user_ids).await?;
        Ok(pages
            .into_iter()
            .map(|(parent, mut page)| {
                let memberships = std::mem::take(&mut page.items);
                let members = memberships
                    .into_iter()
                    .filter_map(|membership| {
                        let user = users.get(&membership.user_id).cloned()?;
                        Some(Member { membership, user })
                    })
                    .collect();
                (parent, page.with_items(members))
            })
            .collect())
    }

    async fn counts(
        &self,
        db: &DatabaseConnection,
        _now: chrono::DateTime<chrono::Utc>,
        parents: &[Uuid],
    ) -> Result<HashMap<Uuid, u64>, DbErr> {
        Self::query().counts(db, parents).await
    }
}

/// Gives a member another role. An ADMIN may not make or change an OWNER,
/// and the last OWNER keeps the role.
pub async fn update_role(
    state: &AppState,
    actor: Principal,
    organization_id: Uuid,
    user_id: Uuid,
    role: Role,
) -> AppResult<Member> {
    let now = state.clock.now();
    let txn = begin_write(&state.db).await?;
    lock_organization(&txn, organization_id).await?;
    let actor_role = actor
        .require_role_in(&txn, organization_id, "organization")
        .await?;
    let target = member_for(&txn, actor_role, organization_id, user_id).await?;
    policy::authorize_role_change(actor_role, Some(target.role), Some(role))?;
    if target.role == role {
        return member(&txn, target).await;
    }
    if target.role == Role::Owner {
        keep_an_owner(&txn, organization_id).await?;
    }
    membership::Entity::update_many()
        .col_expr(membership::Column::Role, Expr::value(role))
        .filter(membership::Column::Id.eq(target.id))
        .exec(&txn)
        .await?;
    let details = json!({ "from": target.role.to_value(), "to": role.to_value() });
    audit::record(
        &txn,
        organization_id,
        actor,
        AuditAction::MemberRoleChanged,
        Target::Member(user_id),
        Some(details),
        now,
    )
    .await?;
    let updated = membership::Model { role, ..target };
    let found = member(&txn, updated).await?;
    txn.commit().await?;
    announce_changed(state, organization_id).await;
    Ok(found)
}

/// Removes a member. An ADMIN may not remove an OWNER, and the last OWNER
/// stays.
pub async fn remove(
    state: &AppState,
    actor: Principal,
    organization_id: Uuid,
    user_id: Uuid,
) -> AppResult<()> {
    if actor.user_id() == Some(user_id) {
        return leave(state, user_id, organization_id).await;
    }
    let now = state.clock.now();
    let txn = begin_write(&state.db).await?;
    lock_organization(&txn, organization_id).await?;
    let actor_role = actor
        .require_role_in(&txn, organization_id, "organization")
        .await?;
    let target = member_for(&txn, actor_role, organization_id, user_id).await?;
    policy::authorize_role_change(actor_role, Some(target.role), None)?;
    end_membership(&txn, &target).await?;
    audit::record(
        &txn,
        organization_id,
        actor,
        AuditAction::MemberRemoved,
        Target::Member(user_id),
        Some(json!({ "role": target.role.to_value() })),
        now,
    )
    .await?;
    txn.commit().await?;
    announce_changed(state, organization_id).await;
    Ok(())
}

/// The caller leaves the organization; the last OWNER cannot.
pub async fn leave(state: &AppState, user_id: Uuid, organization_id: Uuid) -> AppResult<()> {
    let now = state.clock.now();
    let txn = begin_write(&state.db).await?;
    lock_organization(&txn, organization_id).await?;
    let own = membership_of(&txn, organization_id, user_id).await?;
    end_membership(&txn, &own).await?;
    audit::record(
        &txn,
        organization_id,
        Principal::User(user_id),
        AuditAction::MemberLeft,
        Target::Member(user_id),
        Some(json!({ "role": own.role.to_value() })),
        now,
    )
    .await?;
    txn.commit().await?;
    announce_changed(state, organization_id).await;
    Ok(())
}

/// Makes `user_id` an OWNER and the calling OWNER an ADMIN; returns the
/// organization as the caller now sees it.
pub async fn transfer_ownership(
    state: &AppState,
    actor: Principal,
    organization_id: Uuid,
    user_id: Uuid,
) -> AppResult<MemberOrganization> {
    let now = state.clock.now();
    let txn = begin_write(&state.db).await?;
    let organization = lock_organization(&txn, organization_id).await?;
    let actor_role = actor
        .require_role_in(&txn, organization_id, "organization")
        .await?;
    policy::authorize(actor_role, Action::TransferOwnership)?;
    // Only a member can be OWNER, so only a user gets this far.
    let Principal::User(actor_id) = actor else {
        return Err(AppError::Forbidden("only a member can transfer ownership"));
    };
    let own = membership_of(&txn, organization_id, actor_id).await?;
    let target = member_for(&txn, actor_role, organization_id, user_id).await?;
    if target.user_id == actor_id {
        return Err(AppError::bad_input(
            "userId",
            "ownership goes to another member",
        ));
    }
    for (id, role) in [(target.id, Role::Owner), (own.id, Role::Admin)] {
        membership::Entity::update_many()
            .col_expr(membership::Column::Role, Expr::value(role))
            .filter(membership::Column::Id.eq(id))
            .exec(&txn)
            .await?;
    }
    audit::record(
        &txn,
        organization_id,
        actor,
        AuditAction::OwnershipTransferred,
        Target::Member(user_id),
        Some(json!({ "from": target.role.to_value(), "previousOwner": actor_id })),
        now,
    )
    .await?;
    txn.commit().await?;
    announce_changed(state, organization_id).await;
    as_member(organization, Role::Admin)
}

/// Tells every instance (this one included, through its own control
/// subscription) that memberships of the organization changed, so that
/// subscriptions of members who lost access end at once. Without a bus
/// message, the periodic re-check ends them within seconds.
pub(super) async fn announce_changed(state: &AppState, organization_id: Uuid) {
    state
        .bus
        .publish(
            Topic::Control,
            BusMessage::MembershipsChanged { organization_id },
        )
        .await;
}

/// Locks the organization's row for a membership change; NOT_FOUND when
/// there is none.
pub(super) async fn lock_organization(
    conn: &impl ConnectionTrait,
    organization_id: Uuid,
) -> AppResult<organization::Model> {
    locked(organization::Entity::find_by_id(organization_id), conn)
        .one(conn)
        .await?
        .ok_or(AppError::NotFound("organization"))
}

/// The membership of `user_id`; NOT_FOUND (for the organization) when they
/// have none, so outsiders learn nothing.
pub(super) async fn membership_of(
    conn: &impl ConnectionTrait,
    organization_id: Uuid,
    user_id: Uuid,
) -> AppResult<membership::Model> {
    membership::Entity::find()
        .filter(membership::Column::OrganizationId.eq(organization_id))
        .filter(membership::Column::UserId.eq(user_id))
        .one(conn)
        .await?
        .ok_or(AppError::NotFound("organization"))
}

/// Another member's membership, for a caller with `actor_role`: the caller
/// must be allowed to see members before learning whether one exists.
async fn member_for(
    conn: &impl ConnectionTrait,
    actor_role: Role,
    organization_id: Uuid,
    user_id: Uuid,
) -> AppResult<membership::Model> {
    policy::authorize(actor_role, Action::ViewMembers)?;
    membership::Entity::find()
        .filter(membership::Column::OrganizationId.eq(organization_id))
        .filter(membership::Column::UserId.eq(user_id))
        .one(conn)
        .await?
        .ok_or(AppError::NotFound("member"))
}

/// Deletes a membership, unless it is the last OWNER's.
async fn end_membership(
    conn: &impl ConnectionTrait,
    membership: &membership::Model,
) -> AppResult<()> {
    if membership.role == Role::Owner {
        keep_an_owner(conn, membership.organization_id).await?;
    }
    membership::Entity::delete_by_id(membership.id)
        .exec(conn)
        .await?;
    Ok(())
}

/// CONFLICT when the organization has a single OWNER (who is about to stop
/// being one).
async fn keep_an_owner(conn: &impl ConnectionTrait, organization_id: Uuid) -> AppResult<()> {
    let owners = membership::Entity::find()
        .filter(membership::Column::OrganizationId.eq(organization_id))
        .filter(membership::Column::Role.eq(Role::Owner))
        .count(conn)
        .await?;
    if owners <= 1 {
        return Err(AppError::Conflict(LAST_OWNER.to_owned()));
    }
    Ok(())
}

async fn member(conn: &impl ConnectionTrait, membership: membership::Model) -> AppResult<Member> {
    let user = user::Entity::find_by_id(membership.user_id)
        .one(conn)
        .await?
        .ok_or(AppError::NotFound("member"))?;
    Ok(Member { membership, user })
}
