//! `audit_log`: who changed members, invitations, roles or keys of an
//! organization, what and when. Rows are only ever inserted.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "audit_log")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub organization_id: Uuid,
    /// The user who acted, if a user did (null once their account is deleted).
    pub actor_user_id: Option<Uuid>,
    /// The API key that acted, if a key did.
    pub actor_api_key_id: Option<Uuid>,
    /// What was done, e.g. `member.role_changed`.
    pub action: String,
    /// What it was done to: `member`, `invitation`, `organization` or `api_key`.
    pub target_type: String,
    pub target_id: Option<String>,
    /// Particulars, e.g. `{"from": "VIEWER", "to": "EDITOR"}`.
    pub details: Option<Json>,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
