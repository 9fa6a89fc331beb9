//! `users`: one row per registered person.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "users")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// Trimmed and lower-cased, so lookups are case-insensitive.
    #[sea_orm(unique)]
    pub email: String,
    pub display_name: String,
    /// argon2id PHC string.
    pub password_hash: String,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    /// Sign-in is refused until then after repeated failures.
    pub locked_until: Option<DateTimeUtc>,
    /// Failed sign-ins before this time no longer count towards a lockout
    /// (set by a successful sign-in and by a lockout).
    pub failures_counted_from: Option<DateTimeUtc>,
    /// When the owner proved the address by following the mailed link.
    pub email_verified_at: Option<DateTimeUtc>,
    /// The TOTP secret, sealed with XChaCha20-Poly1305 under a key derived
    /// from `FLOWPILOT_ENCRYPTION_KEY`; set by MFA setup, before it is on.
    pub mfa_secret: Option<String>,
    /// When MFA was turned on; null while it is off.
    pub mfa_enabled_at: Option<DateTimeUtc>,
    /// The last TOTP time step accepted, so that no code is accepted twice.
    pub mfa_last_step: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(has_many = "super::user_session::Entity")]
    UserSession,
    #[sea_orm(has_many = "super::membership::Entity")]
    Membership,
}

impl Related<super::user_session::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::UserSession.def()
    }
}

impl Related<super::membership::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Membership.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
