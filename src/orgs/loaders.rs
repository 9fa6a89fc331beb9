//! DataLoaders for organization data, so a list of memberships costs one
//! query for the memberships and one for their organizations, however long
//! the list.

use std::collections::HashMap;

use async_graphql::dataloader::Loader;
use entity::{api_key, membership, organization, user};
use sea_orm::DatabaseConnection;
use uuid::Uuid;

use super::service;
use crate::auth::api_keys;
use crate::error::LoadError;

/// Organizations by id.
pub struct OrganizationLoader(pub DatabaseConnection);

impl Loader<Uuid> for OrganizationLoader {
    type Value = organization::Model;
    type Error = LoadError;

    async fn load(&self, ids: &[Uuid]) -> Result<HashMap<Uuid, Self::Value>, Self::Error> {
        Ok(service::organizations_by_id(&self.0, ids).await?)
    }
}

/// Each user's memberships, oldest first.
pub struct MembershipsByUserLoader(pub DatabaseConnection);

impl Loader<Uuid> for MembershipsByUserLoader {
    type Value = Vec<membership::Model>;
    type Error = LoadError;

    async fn load(&self, user_ids: &[Uuid]) -> Result<HashMap<Uuid, Self::Value>, Self::Error> {
        Ok(service::memberships_by_user(&self.0, user_ids).await?)
    }
}

/// Users by id, for the people named in members' and audit lists.
pub struct UserLoader(pub DatabaseConnection);

impl Loader<Uuid> for UserLoader {
    type Value = user::Model;
    type Error = LoadError;

    async fn load(&self, ids: &[Uuid]) -> Result<HashMap<Uuid, Self::Value>, Self::Error> {
        Ok(service::users_by_id(&self.0, ids).await?)
    }
}

/// API keys by id, for the keys named in the audit log.
pub struct ApiKeyLoader(pub DatabaseConnection);

impl Loader<Uuid> for ApiKeyLoader {
    type Value = api_key::Model;
    type Error = LoadError;

    async fn load(&self, ids: &[Uuid]) -> Result<HashMap<Uuid, Self::Value>, Self::Error> {
        Ok(api_keys::keys_by_id(&self.0, ids).await?)
    }
}
