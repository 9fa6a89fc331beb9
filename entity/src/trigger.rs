//! `triggers`: what starts a workflow without a person. A SCHEDULE trigger
//! has a cron pattern, a time zone and the next time it is due; a WEBHOOK
//! trigger has the SHA-256 of its secret token.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "triggers")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub organization_id: Uuid,
    pub workflow_id: Uuid,
    /// SCHEDULE or WEBHOOK.
    pub kind: String,
    pub enabled: bool,
    /// SCHEDULE: a 5-field cron pattern.
    pub cron: Option<String>,
    /// SCHEDULE: an IANA time zone the pattern is read in.
    pub time_zone: Option<String>,
    /// SCHEDULE: the input of the executions it starts.
    pub input: Option<Json>,
    /// SCHEDULE: when it is next due (null while disabled); the scheduler
    /// claims a firing by moving it forward.
    pub next_run_at: Option<DateTimeUtc>,
    /// WEBHOOK: the token's first characters, to tell hooks apart.
    pub token_prefix: Option<String>,
    /// WEBHOOK: SHA-256 of the token, hex.
    #[sea_orm(unique)]
    pub token_hash: Option<String>,
    pub last_fired_at: Option<DateTimeUtc>,
    pub created_by: Option<Uuid>,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
