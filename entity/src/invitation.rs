//! `invitations`: an offer of a role in an organization, mailed to an
//! address as a single-use link. Only the SHA-256 of the token is stored.

use sea_orm::entity::prelude::*;

use crate::role::Role;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "invitations")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub organization_id: Uuid,
    /// Lower-cased; only the account with this address may accept.
    pub email: String,
    pub role: Role,
    #[sea_orm(unique)]
    pub token_hash: String,
    /// Who invited; null once their account is deleted.
    pub invited_by: Option<Uuid>,
    pub created_at: DateTimeUtc,
    pub expires_at: DateTimeUtc,
    pub accepted_at: Option<DateTimeUtc>,
    pub revoked_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
