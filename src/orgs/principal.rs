//! Who acts in an organization: a signed-in user, through their membership,
//! or an API key, which belongs to exactly one organization and holds one
//! role there. Services take a [`Principal`] and ask it for its role; the
//! policy then decides what that role may do.

use entity::membership;
use entity::role::Role;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};
use uuid::Uuid;

use crate::error::{AppError, AppResult};

/// The caller of an organization-scoped operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Principal {
    /// A signed-in user, by id.
    User(Uuid),
    /// An API key and the organization and role it holds.
    ApiKey(KeyGrant),
}

/// What an API key may act as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyGrant {
    pub key_id: Uuid,
    pub organization_id: Uuid,
    pub role: Role,
}

impl Principal {
    /// The user behind the call, if a user makes it.
    pub fn user_id(self) -> Option<Uuid> {
        match self {
            Self::User(id) => Some(id),
            Self::ApiKey(_) => None,
        }
    }

    /// The key behind the call, if a key makes it.
    pub fn api_key_id(self) -> Option<Uuid> {
        match self {
            Self::User(_) => None,
            Self::ApiKey(grant) => Some(grant.key_id),
        }
    }

    /// The role held in `organization_id`; `None` for a user who is not a
    /// member and for a key of another organization.
    pub async fn role_in(
        self,
        conn: &impl ConnectionTrait,
        organization_id: Uuid,
    ) -> Result<Option<Role>, sea_orm::DbErr> {
        match self {
            Self::User(user_id) => {
                let membership = membership::Entity::find()
                    .filter(membership::Column::OrganizationId.eq(organization_id))
                    .filter(membership::Column::UserId.eq(user_id))
                    .one(conn)
                    .await?;
                Ok(membership.map(|m| m.role))
            }
            Self::ApiKey(grant) => {
                Ok((grant.organization_id == organization_id).then_some(grant.role))
            }
        }
    }

    /// The role held in `organization_id`, or NOT_FOUND for `what` so that
    /// outsiders learn nothing about it.
    pub async fn require_role_in(
        self,
        conn: &impl ConnectionTrait,
        organization_id: Uuid,
        what: &'static str,
    ) -> AppResult<Role> {
        self.role_in(conn, organization_id)
            .await?
            .ok_or(AppError::NotFound(what))
    }
}
