//! Organizations and memberships: creation, member lookups and the batched
//! reads behind the DataLoaders. Knows nothing of GraphQL.

use std::collections::HashMap;

use entity::role::Role;
use entity::{membership, organization};
use rand::Rng;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter,
    QueryOrder, Set,
};
use serde_json::json;
use uuid::Uuid;

use super::audit::{self, AuditAction, Target};
use super::members;
use super::policy::{self, Action};
use super::principal::Principal;
use crate::db::{begin_write, is_unique_violation};
use crate::error::{AppError, AppResult};
use crate::state::AppState;

/// The longest organization name, in characters.
const MAX_NAME_CHARS: usize = 100;
/// The longest slug (the column's width).
const MAX_SLUG_CHARS: usize = 64;
/// The longest slug derived from a name, before any suffix.
const MAX_SLUG_BASE: usize = 48;
/// Attempts at a unique slug before giving up.
const SLUG_ATTEMPTS: usize = 5;

/// An organization name: trimmed, non-empty, at most 100 characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrganizationName(String);

impl OrganizationName {
    /// Parses user input; `field` names the input field in the error.
    pub fn parse(raw: &str, field: &str) -> AppResult<Self> {
        let name = raw.trim();
        if name.is_empty() {
            return Err(AppError::bad_input(
                field,
                "organization name must not be empty",
            ));
        }
        if name.chars().count() > MAX_NAME_CHARS {
            return Err(AppError::bad_input(
                field,
                format!("organization name must be at most {MAX_NAME_CHARS} characters"),
            ));
        }
        if name.chars().any(char::is_control) {
            return Err(AppError::bad_input(
                field,
                "organization name must not contain control characters",
            ));
        }
        Ok(Self(name.to_owned()))
    }
}

/// A slug chosen by hand: 1 to 64 lower-case ASCII letters and digits in
/// groups joined by single dashes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slug(String);

impl Slug {
    /// Parses user input; `field` names the input field in the error.
    pub fn parse(raw: &str, field: &str) -> AppResult<Self> {
        let slug = raw.trim();
        let well_formed = !slug.is_empty()
            && slug.len() <= MAX_SLUG_CHARS
            && slug.split('-').all(|group| {
                !group.is_empty()
                    && group
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            });
        if !well_formed {
            return Err(AppError::bad_input(
                field,
                format!(
                    "a slug is 1 to {MAX_SLUG_CHARS} lower-case letters and digits, in groups joined by single dashes"
                ),
            ));
        }
        Ok(Self(slug.to_owned()))
    }
}

/// Changes to an organization's name and slug; None leaves one as it is.
#[derive(Debug, Default)]
pub struct OrganizationChange {
    pub name: Option<OrganizationName>,
    pub slug: Option<Slug>,
}

/// An organization as one member sees it.
#[derive(Clone, Debug)]
pub struct MemberOrganization {
    pub organization: organization::Model,
    pub role: Role,
}

/// Creates an organization with `owner_id` as its OWNER, in one
/// transaction. Without a chosen slug, one is derived from the name (with a
/// random suffix when taken); a chosen slug that is taken is CONFLICT.
pub async fn create_organization(
    state: &AppState,
    owner_id: Uuid,
    name: OrganizationName,
    chosen_slug: Option<Slug>,
) -> AppResult<MemberOrganization> {
    let base = match &chosen_slug {
        Some(slug) => slug.0.clone(),
        None => slug_base(&name.0),
    };
    for attempt in 0..SLUG_ATTEMPTS {
        let slug = if attempt == 0 {
            base.clone()
        } else {
            format!("{base}-{}", random_suffix())
        };
        let now = state.clock.now();
        let txn = begin_write(&state.db).await?;
        let inserted = organization::ActiveModel {
            id: Set(Uuid::now_v7()),
            name: Set(name.0.clone()),
            slug: Set(slug),
            created_at: Set(now),
            updated_at: Set(now),
        }
        .insert(&txn)
        .await;
        let organization = match inserted {
            Ok(organization) => organization,
            Err(e) if is_unique_violation(&e) && chosen_slug.is_some() => {
                return Err(AppError::Conflict(
                    "another organization has this slug".to_owned(),
                ));
            }
            Err(e) if is_unique_violation(&e) => continue,
            Err(e) => return Err(e.into()),
        };
        insert_membership(&txn, organization.id, owner_id, Role::Owner, now).await?;
        txn.commit().await?;
        tracing::info!(organization_id = %organization.id, "organization created");
        return Ok(MemberOrganization {
            organization,
            role: Role::Owner,
        });
    }
    Err(AppError::Internal(anyhow::anyhow!(
        "no free slug for {base:?} after {SLUG_ATTEMPTS} attempts"
    )))
}

/// The organization as `principal` sees it, if it may view it; NOT_FOUND
/// for outsiders (and unknown ids), so outsiders learn nothing.
pub async fn find_for_member(
    db: &DatabaseConnection,
    principal: Principal,
    organization_id: Uuid,
) -> AppResult<MemberOrganization> {
    let not_found = || AppError::NotFound("organization");
    let Principal::User(user_id) = principal else {
        let role = principal
            .require_role_in(db, organization_id, "organization")
            .await?;
        let organization = organization::Entity::find_by_id(organization_id)
            .one(db)
            .await?
            .ok_or_else(not_found)?;
        return as_member(organization, role);
    };
    let (membership, organization) = membership::Entity::find()
        .filter(membership::Column::OrganizationId.eq(organization_id))
        .filter(membership::Column::UserId.eq(user_id))
        .find_also_related(organization::Entity)
        .one(db)
        .await?
        .ok_or_else(not_found)?;
    as_member(organization.ok_or_else(not_found)?, membership.role)
}

/// The organization with this slug as `principal` sees it; NOT_FOUND for
/// outsiders and unknown slugs alike.
pub async fn find_by_slug_for_member(
    db: &DatabaseConnection,
    principal: Principal,
    slug: &str,
) -> AppResult<MemberOrganization> {
    let organization = organization::Entity::find()
        .filter(organization::Column::Slug.eq(slug.trim()))
        .one(db)
        .await?
        .ok_or(AppError::NotFound("organization"))?;
    find_for_member(db, principal, organization.id).await
}

/// Renames the organization or changes its slug (ADMIN and up). A slug in
/// use is CONFLICT. Returns the organization as the caller sees it.
pub async fn update_organization(
    state: &AppState,
    actor: Principal,
    organization_id: Uuid,
    change: OrganizationChange,
) -> AppResult<MemberOrganization> {
    let now = state.clock.now();
    let txn = begin_write(&state.db).await?;
    let current = members::lock_organization(&txn, organization_id).await?;
    let role = actor
        .require_role_in(&txn, organization_id, "organization")
        .await?;
    policy::authorize(role, Action::UpdateOrganization)?;
    let mut details = serde_json::Map::new();
    let mut organization: organization::ActiveModel = current.clone().into();
    if let Some(name) = change.name.filter(|n| n.0 != current.name) {
        details.insert("name".into(), json!({ "from": current.name, "to": name.0 }));
        organization.name = Set(name.0);
    }
    if let Some(slug) = change.slug.filter(|s| s.0 != current.slug) {
        details.insert("slug".into(), json!({ "from": current.slug, "to": slug.0 }));
        organization.slug = Set(slug.0);
    }
    if details.is_empty() {
        return as_member(current, role);
    }
    organization.updated_at = Set(now);
    let updated = organization.update(&txn).await.map_err(|e| {
        if is_unique_violation(&e) {
            AppError::Conflict("another organization has this slug".to_owned())
        } else {
            e.into()
        }
    })?;
    audit::record(
        &txn,
        organization_id,
        actor,
        AuditAction::OrganizationUpdated,
        Target::Organization(organization_id),
        Some(serde_json::Value::Object(details)),
        now,
    )
    .await?;
    txn.commit().await?;
    as_member(updated, role)
}

/// The organization as a member with `role` sees it, if the role may view it.
pub fn as_member(organization: organization::Model, role: Role) -> AppResult<MemberOrganization> {
    policy::authorize(role, Action::ViewOrganization)?;
    Ok(MemberOrganization { organization, role })
}

/// Adds `user_id` to an organization with `role`. A second membership for
/// the same pair is CONFLICT.
pub async fn add_member(
    state: &AppState,
    organization_id: Uuid,
    user_id: Uuid,
    role: Role,
) -> AppResult<membership::Model> {
    let txn = begin_write(&state.db).await?;
    let membership =
        insert_membership(&txn, organization_id, user_id, role, state.clock.now()).await?;
    txn.commit().await?;
    Ok(membership)
}

pub(super) async fn insert_membership(
    conn: &impl ConnectionTrait,
    organization_id: Uuid,
    user_id: Uuid,
    role: Role,
    now: chrono::DateTime<chrono::Utc>,
) -> AppResult<membership::Model> {
    membership::ActiveModel {
        id: Set(Uuid::now_v7()),
        organization_id: Set(organization_id),
        user_id: Set(user_id),
        role: Set(role),
        created_at: Set(now),
    }
    .insert(conn)
    .await
    .map_err(|e| {
        if is_unique_violation(&e) {
            AppError::Conflict("already a member of this organization".to_owned())
        } else {
            e.into()
        }
    })
}

/// Memberships of each user, oldest first, in one query.
pub async fn memberships_by_user(
    db: &DatabaseConnection,
    user_ids: &[Uuid],
) -> Result<HashMap<Uuid, Vec<membership::Model>>, sea_orm::DbErr> {
    let rows = membership::Entity::find()
        .filter(membership::Column::UserId.is_in(user_ids.iter().copied()))
        .order_by_asc(membership::Column::CreatedAt)
        .order_by_asc(membership::Column::Id)
        .all(db)
        .await?;
    let mut by_user: HashMap<Uuid, Vec<membership::Model>> = HashMap::new();
    for row in rows {
        by_user.entry(row.user_id).or_default().push(row);
    }
    Ok(by_user)
}

/// Organizations by id, in one query.
pub async fn organizations_by_id(
    db: &DatabaseConnection,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, organization::Model>, sea_orm::DbErr> {
    let rows = organization::Entity::find()
        .filter(organization::Column::Id.is_in(ids.iter().copied()))
        .all(db)
        .await?;
    Ok(rows.into_iter().map(|org| (org.id, org)).collect())
}

/// Users by id, in one query.
pub async fn users_by_id(
    db: &DatabaseConnection,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, entity::user::Model>, sea_orm::DbErr> {
    let rows = entity::user::Entity::find()
        .filter(entity::user::Column::Id.is_in(ids.iter().copied()))
        .all(db)
        .await?;
    Ok(rows.into_iter().map(|user| (user.id, user)).collect())
}

/// A URL-friendly slug from a name: lower-case ASCII letters and digits
/// separated by single dashes.
fn slug_base(name: &str) -> String {
    let mut slug = String::new();
    for c in name.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
        if slug.len() >= MAX_SLUG_BASE {
            break;
        }
    }
    let slug = slug.trim_end_matches('-');
    if slug.is_empty() {
        "org".to_owned()
    } else {
        slug.to_owned()
    }
}

fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    (0..6)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_keep_ascii_letters_and_digits_joined_by_single_dashes() {
        assert_eq!(slug_base("  Acme, Inc. -- R&D 2026 "), "acme-inc-r-d-2026");
        assert_eq!(slug_base("Ünïcode only ☃"), "n-code-only");
        assert_eq!(slug_base("☃☃"), "org");
    }

    #[test]
    fn long_names_give_bounded_slugs() {
        assert!(slug_base(&"a".repeat(500)).len() <= MAX_SLUG_BASE);
    }

    #[test]
    fn hand_chosen_slugs_are_lower_case_groups_joined_by_single_dashes() {
        for good in ["acme", "acme-2026", "a"] {
            assert!(Slug::parse(good, "slug").is_ok(), "{good:?}");
        }
        for bad in [
            "",
            "Acme",
            "acme--inc",
            "-acme",
            "acme-",
            "acme inc",
            "ä",
            &"a".repeat(65),
        ] {
            assert!(Slug::parse(bad, "slug").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn blank_organization_names_are_refused() {
        assert!(OrganizationName::parse("   ", "name").is_err());
        assert!(OrganizationName::parse(&"x".repeat(101), "name").is_err());
        assert!(OrganizationName::parse(" Acme ", "name").is_ok());
    }
}
