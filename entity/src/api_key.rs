//! `api_keys`: a credential that acts in one organization with one role.
//! Only a display prefix and the SHA-256 of the key are stored.

use sea_orm::entity::prelude::*;

use crate::role::Role;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "api_keys")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub organization_id: Uuid,
    pub name: String,
    /// The key's first characters, to tell keys apart; not a secret.
    pub prefix: String,
    #[sea_orm(unique)]
    pub key_hash: String,
    /// VIEWER, EDITOR or ADMIN; never OWNER.
    pub role: Role,
    /// Who made it; null once their account is deleted.
    pub created_by: Option<Uuid>,
    pub created_at: DateTimeUtc,
    pub expires_at: Option<DateTimeUtc>,
    /// Written at most once a minute.
    pub last_used_at: Option<DateTimeUtc>,
    pub revoked_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
