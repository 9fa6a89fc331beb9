//! GraphQL for API keys: making, listing and revoking them. Thin: read the
//! viewer, call `api_keys`, convert.

use async_graphql::{Context, ID, InputObject, Object, SimpleObject};
use chrono::{DateTime, Utc};
use entity::api_key;
use uuid::Uuid;

use super::api_keys::{self, ApiKeyList, KeyName, KeyRole, NewApiKey};
use crate::graphql::connection::{ListConnection, PageArgs, list_connection};
use crate::graphql::context::{RequestContext, parse_id};
use crate::orgs::members_schema::{UserSummary, user_summary};
use crate::orgs::policy::{self, Action};
use crate::orgs::schema::Role;
use crate::pagination::encode_cursor;

const API_KEY_CURSOR: &str = "api_key";

/// A credential for programs, acting in one organization with one role.
/// The key itself is shown only once, by `createApiKey`.
pub struct ApiKey(pub api_key::Model);

/// A credential for programs, acting in one organization with one role. The key
/// itself is shown only once, by `createApiKey`.
#[Object]
impl ApiKey {
    /// The key's id, to revoke it with `revokeApiKey`.
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    /// The name given to tell keys apart.
    async fn name(&self) -> &str {
        &self.0.name
    }

    /// The key's first characters (`fp_` and 8 more), to tell keys apart.
    async fn prefix(&self) -> &str {
        &self.0.prefix
    }

    /// What the key may do: VIEWER, EDITOR or ADMIN.
    async fn role(&self) -> Role {
        self.0.role.into()
    }

    /// Who made it; null once their account is gone.
    async fn created_by(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<UserSummary>> {
        user_summary(ctx, self.0.created_by).await
    }

    /// When it was made.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }

    /// When it was last used, to the minute; null if never.
    async fn last_used_at(&self) -> Option<DateTime<Utc>> {
        self.0.last_used_at
    }

    /// When it stops working; null if never.
    async fn expires_at(&self) -> Option<DateTime<Utc>> {
        self.0.expires_at
    }

    /// When it was revoked; null unless it was.
    async fn revoked_at(&self) -> Option<DateTime<Utc>> {
        self.0.revoked_at
    }
}

/// A key just made.
#[derive(SimpleObject)]
pub struct CreatedApiKey {
    /// The new key's details; the key itself is in `key`.
    api_key: ApiKey,
    /// The key, `fp_…`: shown this once and never again. Send it as
    /// `Authorization: Bearer fp_…`.
    key: String,
}

/// A key to make.
#[derive(InputObject)]
pub struct CreateApiKeyInput {
    /// The organization the key acts in.
    pub organization_id: ID,
    /// 1 to 100 characters, to tell keys apart.
    pub name: String,
    /// VIEWER, EDITOR or ADMIN; never OWNER.
    pub role: Role,
    /// When the key stops working; never when left out. In the future.
    pub expires_at: Option<DateTime<Utc>>,
}

/// A key to revoke.
#[derive(InputObject)]
pub struct RevokeApiKeyInput {
    /// The key to revoke.
    pub api_key_id: ID,
}

/// `organization.apiKeys`: ADMIN and up, newest first.
pub async fn api_keys_connection(
    ctx: &Context<'_>,
    organization_id: Uuid,
    viewer_role: entity::role::Role,
    include_revoked: bool,
    page: PageArgs,
) -> async_graphql::Result<ListConnection<ApiKey>> {
    policy::authorize(viewer_role, Action::ManageApiKeys)?;
    let list = ApiKeyList {
        include_revoked,
        window: page.window(API_KEY_CURSOR)?,
    };
    list_connection(ctx, organization_id, list, |key| {
        let cursor = encode_cursor(API_KEY_CURSOR, api_keys::position_of(&key));
        Ok((cursor, ApiKey(key)))
    })
    .await
}

#[derive(Default)]
pub struct ApiKeyMutation;

#[Object]
impl ApiKeyMutation {
    /// Makes an API key (ADMIN; signed in as a user: a key cannot make
    /// keys). The answer holds the key, shown only this once.
    async fn create_api_key(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The key to make.")] input: CreateApiKeyInput,
    ) -> async_graphql::Result<CreatedApiKey> {
        let request = RequestContext::of(ctx);
        let actor = request.viewer.principal()?;
        let new = NewApiKey {
            organization_id: parse_id(&input.organization_id, "organizationId")?,
            name: KeyName::parse(&input.name, "name")?,
            role: KeyRole::parse(input.role.into(), "role")?,
            expires_at: input.expires_at,
        };
        let created = api_keys::create(&request.state, actor, new).await?;
        Ok(CreatedApiKey {
            api_key: ApiKey(created.key),
            key: created.secret,
        })
    }

    /// Revokes an API key (ADMIN): its next request is refused and its open
    /// connections close. Revoking a revoked key changes nothing.
    async fn revoke_api_key(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The key to revoke.")] input: RevokeApiKeyInput,
    ) -> async_graphql::Result<ApiKey> {
        let request = RequestContext::of(ctx);
        let actor = request.viewer.principal()?;
        let id = parse_id(&input.api_key_id, "apiKeyId")?;
        Ok(ApiKey(api_keys::revoke(&request.state, actor, id).await?))
    }
}
