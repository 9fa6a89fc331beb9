//! `login_attempts`: every sign-in attempt, successful or not, with why it
//! failed. Failures of one user within the lockout window lock the account.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "login_attempts")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// As typed (trimmed and lower-cased when it parses).
    pub email: String,
    /// The account the email names, if any.
    pub user_id: Option<Uuid>,
    pub ip: Option<String>,
    pub succeeded: bool,
    /// `ok`, `unknown_email`, `wrong_password` or `locked`.
    pub reason: String,
    pub attempted_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
