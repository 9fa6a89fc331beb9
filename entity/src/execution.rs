//! `executions`: one run of a workflow version. Workers claim rows by
//! taking a lease; `lease_epoch` grows with every claim, and every write a
//! worker makes is conditional on its (owner, epoch).

use sea_orm::entity::prelude::*;

use crate::status::ExecutionStatus;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "executions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub organization_id: Uuid,
    pub workflow_id: Uuid,
    pub workflow_version_id: Uuid,
    pub status: ExecutionStatus,
    /// Higher runs first.
    pub priority: i32,
    pub input: Json,
    pub output: Option<Json>,
    pub error: Option<String>,
    /// MANUAL, SCHEDULE or WEBHOOK.
    pub trigger_kind: String,
    /// The trigger that started it; null when a person or key did, or once
    /// the trigger is deleted.
    pub trigger_id: Option<Uuid>,
    pub idempotency_key: Option<String>,
    /// Number of times a worker has claimed it.
    pub attempt: i32,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<DateTimeUtc>,
    pub lease_epoch: i64,
    pub cancel_requested: bool,
    /// Not claimable before this time.
    pub run_after: Option<DateTimeUtc>,
    /// Seq of the newest event in `execution_events`.
    pub last_event_seq: i32,
    pub created_by: Option<Uuid>,
    /// The execution this one re-runs (`retryExecution`).
    pub retry_of_id: Option<Uuid>,
    pub queued_at: DateTimeUtc,
    pub started_at: Option<DateTimeUtc>,
    pub finished_at: Option<DateTimeUtc>,
    pub updated_at: DateTimeUtc,
    /// The definition's execution timeout, copied when queued.
    pub timeout_ms: Option<i64>,
    /// First start plus `timeout_ms`: when the execution times out.
    pub timeout_at: Option<DateTimeUtc>,
    /// Claims since a step last recorded an outcome; past the limit the
    /// execution is failed instead of run again.
    pub claims_without_progress: i32,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::workflow::Entity",
        from = "Column::WorkflowId",
        to = "super::workflow::Column::Id",
        on_delete = "Cascade"
    )]
    Workflow,
}

impl Related<super::workflow::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Workflow.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
