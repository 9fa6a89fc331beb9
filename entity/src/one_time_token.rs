//! `one_time_tokens`: single-use tokens sent by mail (email verification,
//! password reset) or handed out mid-sign-in (MFA challenge). Only the
//! SHA-256 of each token is stored.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "one_time_tokens")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub user_id: Uuid,
    /// `email_verification`, `password_reset` or `mfa_challenge`.
    pub purpose: String,
    /// SHA-256 of the token, hex-encoded.
    #[sea_orm(unique)]
    pub token_hash: String,
    pub created_at: DateTimeUtc,
    pub expires_at: DateTimeUtc,
    /// Set once the token is used, superseded or exhausted.
    pub used_at: Option<DateTimeUtc>,
    /// Wrong codes entered against an MFA challenge.
    pub failed_attempts: i32,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
