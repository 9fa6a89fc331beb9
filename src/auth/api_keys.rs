//! API keys: credentials for programs, each acting in one organization with
//! one role (VIEWER, EDITOR or ADMIN, never OWNER).
//!
//! A key is `fp_` and 256 random bits, shown once when it is made. Only its
//! first characters (to tell keys apart) and its SHA-256 are stored, and a
//! request's key is found by its hash. Revoking a key refuses its next
//! request and closes its open connections on every instance.

use chrono::{DateTime, Duration, Utc};
use entity::api_key;
use entity::role::Role;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveEnum, ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait,
    QueryFilter, QuerySelect, Set,
};
use serde_json::json;
use std::collections::HashMap;
use uuid::Uuid;

use super::tokens::{hash_token, new_opaque_token};
use crate::db::begin_write;
use crate::error::{AppError, AppResult};
use crate::events::{BusMessage, Topic};
use crate::orgs::audit::{self, AuditAction, Target};
use crate::orgs::policy::{self, Action};
use crate::orgs::principal::{KeyGrant, Principal};
use crate::pagination::{ListQuery, Position, RowList, Window};
use crate::state::AppState;

/// What every key starts with, so a leaked one is recognisable.
const KEY_PREFIX: &str = "fp_";
/// How many of a key's characters are kept to tell keys apart.
const DISPLAY_PREFIX_CHARS: usize = 11;
/// `last_used_at` is written at most this often per key.
const LAST_USED_INTERVAL: Duration = Duration::minutes(1);
/// The longest key name, in characters.
const MAX_NAME_CHARS: usize = 100;

/// Whether a bearer token is an API key rather than an access token.
pub fn is_api_key(token: &str) -> bool {
    token.starts_with(KEY_PREFIX)
}

/// A key's name: trimmed, 1 to 100 characters.
#[derive(Clone, Debug)]
pub struct KeyName(String);

impl KeyName {
    /// Parses user input; `field` names the input field in the error.
    pub fn parse(raw: &str, field: &str) -> AppResult<Self> {
        let name = raw.trim();
        if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
            return Err(AppError::bad_input(
                field,
                format!("an API key's name has 1 to {MAX_NAME_CHARS} characters"),
            ));
        }
        if name.chars().any(char::is_control) {
            return Err(AppError::bad_input(
                field,
                "an API key's name must not contain control characters",
            ));
        }
        Ok(Self(name.to_owned()))
    }
}

/// A role a key may hold: any but OWNER.
#[derive(Clone, Copy, Debug)]
pub struct KeyRole(Role);

impl KeyRole {
    /// Parses user input; `field` names the input field in the error.
    pub fn parse(role: Role, field: &str) -> AppResult<Self> {
        if role == Role::Owner {
            return Err(AppError::bad_input(
                field,
                "an API key's role is VIEWER, EDITOR or ADMIN",
            ));
        }
        Ok(Self(role))
    }
}

/// A key to make, already parsed.
#[derive(Debug)]
pub struct NewApiKey {
    pub organization_id: Uuid,
    pub name: KeyName,
    pub role: KeyRole,
    /// No expiry when `None`; must be in the future.
    pub expires_at: Option<DateTime<Utc>>,
}

/// A key just made: its record, and the key itself, shown this once.
#[derive(Debug)]
pub struct CreatedKey {
    pub key: api_key::Model,
    pub secret: String,
}

/// Makes a key (ADMIN and up; never by a key), recording it in the audit log.
pub async fn create(state: &AppState, actor: Principal, new: NewApiKey) -> AppResult<CreatedKey> {
    let now = state.clock.now();
    let txn = begin_write(&state.db).await?;
    let role = actor
        .require_role_in(&txn, new.organization_id, "organization")
        .await?;
    policy::authorize_key_creation(actor, role)?;
    if new.expires_at.is_some_and(|at| at <= now) {
        return Err(AppError::bad_input(
            "expiresAt",
            "expiresAt must be in the future",
        ));
    }
    let (secret, key_hash) = new_opaque_token(KEY_PREFIX.trim_end_matches('_'));
    let key = api_key::ActiveModel {
        id: Set(Uuid::now_v7()),
        organization_id: Set(new.organization_id),
        name: Set(new.name.0),
        prefix: Set(secret.chars().take(DISPLAY_PREFIX_CHARS).collect()),
        key_hash: Set(key_hash),
        role: Set(new.role.0),
        created_by: Set(actor.user_id()),
        created_at: Set(now),
        expires_at: Set(new.expires_at),
        last_used_at: Set(None),
        revoked_at: Set(None),
    }
    .insert(&txn)
    .await?;
    let details = json!({
        "name": key.name,
        "role": key.role.to_value(),
        "expiresAt": key.expires_at,
    });
    audit::record(
        &txn,
        key.organization_id,
        actor,
        AuditAction::ApiKeyCreated,
        Target::ApiKey(key.id),
        Some(details),
        now,
    )
    .await?;
    txn.commit().await?;
    tracing::info!(api_key_id = %key.id, organization_id = %key.organization_id, "API key created");
    Ok(CreatedKey { key, secret })
}

/// Revokes a key (ADMIN and up): its next request is refused and its open
/// connections close on every instance. Revoking a revoked key changes
/// nothing. NOT_FOUND for outsiders and unknown ids.
pub async fn revoke(state: &AppState, actor: Principal, key_id: Uuid) -> AppResult<api_key::Model> {
    let now = state.clock.now();
    let txn = begin_write(&state.db).await?;
    let key = api_key::Entity::find_by_id(key_id)
        .one(&txn)
        .await?
        .ok_or(AppError::NotFound("API key"))?;
    let role = actor
        .require_role_in(&txn, key.organization_id, "API key")
        .await?;
    policy::authorize(role, Action::ManageApiKeys)?;
    if key.revoked_at.is_some() {
        return Ok(key);
    }
    let updated = api_key::Entity::update_many()
        .col_expr(api_key::Column::RevokedAt, Expr::value(now))
        .filter(api_key::Column::Id.eq(key.id))
        .filter(api_key::Column::RevokedAt.is_null())
        .exec(&txn)
        .await?;
    if updated.rows_affected == 0 {
        // Revoked meanwhile by another request, which wrote the entry.
        drop(txn);
        return api_key::Entity::find_by_id(key_id)
            .one(&state.db)
            .await?
            .ok_or(AppError::NotFound("API key"));
    }
    audit::record(
        &txn,
        key.organization_id,
        actor,
        AuditAction::ApiKeyRevoked,
        Target::ApiKey(key.id),
        Some(json!({ "name": key.name })),
        now,
    )
    .await?;
    txn.commit().await?;
    announce_revoked(state, vec![key.id]).await;
    tracing::info!(api_key_id = %key.id, "API key revoked");
    Ok(api_key::Model {
        revoked_at: Some(now),
        ..key
    })
}

/// Tells every instance (this one included) that these keys no longer work.
pub async fn announce_revoked(state: &AppState, key_ids: Vec<Uuid>) {
    if key_ids.is_empty() {
        return;
    }
    state.revocations.revoke(&key_ids);
    state
        .bus
        .publish(Topic::Control, BusMessage::ApiKeysRevoked { key_ids })
        .await;
}

/// Where a key stands in the newest-first list.
pub fn position_of(key: &api_key::Model) -> Position {
    Position {
        at: key.created_at,
        id: key.id,
    }
}

/// Organizations' keys, newest first; revoked ones only when asked for.
/// The caller authorizes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ApiKeyList {
    pub include_revoked: bool,
    pub window: Window<Position>,
}

impl ApiKeyList {
    fn rows(&self) -> ListQuery<api_key::Entity> {
        use api_key::Column;
        let mut select = api_key::Entity::find();
        if !self.include_revoked {
            select = select.filter(Column::RevokedAt.is_null());
        }
        ListQuery {
            select,
            parent: Column::OrganizationId,
            parent_of: |row| row.organization_id,
            order: vec![Column::CreatedAt, Column::Id],
            ascending: false,
        }
    }
}

impl RowList for ApiKeyList {
    type Entity = api_key::Entity;
    type Key = Position;

    fn query(&self, _now: chrono::DateTime<chrono::Utc>) -> ListQuery<api_key::Entity> {
        self.rows()
    }

    fn window(&self) -> &Window<Position> {
        &self.window
    }
}

/// The key ids of an organization, for closing their connections.
pub async fn ids_of_organization(
    conn: &impl ConnectionTrait,
    organization_id: Uuid,
) -> Result<Vec<Uuid>, sea_orm::DbErr> {
    api_key::Entity::find()
        .select_only()
        .column(api_key::Column::Id)
        .filter(api_key::Column::OrganizationId.eq(organization_id))
        .into_tuple()
        .all(conn)
        .await
}

/// Keys by id, in one query.
pub async fn keys_by_id(
    db: &DatabaseConnection,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, api_key::Model>, sea_orm::DbErr> {
    let rows = api_key::Entity::find()
        .filter(api_key::Column::Id.is_in(ids.iter().copied()))
        .all(db)
        .await?;
    Ok(rows.into_iter().map(|key| (key.id, key)).collect())
}

/// Resolves a presented key to what it may act as (one query, and a write
/// at most once a minute to note its use). Unknown, revoked and expired
/// keys are UNAUTHENTICATED.
pub async fn authenticate(state: &AppState, presented: &str) -> AppResult<KeyGrant> {
    let key = api_key::Entity::find()
        .filter(api_key::Column::KeyHash.eq(hash_token(presented)))
        .one(&state.db)
        .await?
        .ok_or(AppError::Unauthenticated("this API key is not valid"))?;
    if key.revoked_at.is_some() {
        return Err(AppError::Unauthenticated("this API key was revoked"));
    }
    let now = state.clock.now();
    if key.expires_at.is_some_and(|at| at <= now) {
        return Err(AppError::Unauthenticated("this API key has expired"));
    }
    if key
        .last_used_at
        .is_none_or(|at| now - at >= LAST_USED_INTERVAL)
    {
        api_key::Entity::update_many()
            .col_expr(api_key::Column::LastUsedAt, Expr::value(now))
            .filter(api_key::Column::Id.eq(key.id))
            .exec(&state.db)
            .await?;
    }
    Ok(KeyGrant {
        key_id: key.id,
        organization_id: key.organization_id,
        role: key.role,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_never_hold_the_owner_role() {
        assert!(KeyRole::parse(Role::Owner, "role").is_err());
        for role in [Role::Admin, Role::Editor, Role::Viewer] {
            assert!(KeyRole::parse(role, "role").is_ok(), "{role:?}");
        }
    }

    #[test]
    fn key_names_are_trimmed_and_bounded() {
        assert!(KeyName::parse("  ", "name").is_err());
        assert!(KeyName::parse(&"k".repeat(101), "name").is_err());
        assert_eq!(
            KeyName::parse(" deploy bot ", "name").unwrap().0,
            "deploy bot"
        );
    }

    #[test]
    fn api_keys_are_told_from_access_tokens_by_their_prefix() {
        let (key, _) = new_opaque_token(KEY_PREFIX.trim_end_matches('_'));
        assert!(is_api_key(&key));
        assert!(!is_api_key("eyJhbGciOiJIUzI1NiJ9.e30.sig"));
        assert!(!is_api_key("fpr_refresh"));
    }
}
