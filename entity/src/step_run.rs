//! `step_runs`: one row per step of an execution, holding its latest
//! attempt; every attempt is also in the event log.

use sea_orm::entity::prelude::*;

use crate::status::StepStatus;

/// Deserialize reads a row as PostgreSQL's `row_to_json` spells it: a
/// claim statement returns its executions' step runs that way.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, serde::Deserialize)]
#[sea_orm(table_name = "step_runs")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub execution_id: Uuid,
    pub step_id: String,
    /// The step's index in the version's definition.
    pub position: i32,
    pub status: StepStatus,
    /// Attempts started (handed-back and interrupted runs included).
    pub attempt: i32,
    /// Attempts that failed: what the retry policy counts.
    pub failed_attempts: i32,
    pub input: Option<Json>,
    pub output: Option<Json>,
    pub error: Option<String>,
    pub next_retry_at: Option<DateTimeUtc>,
    pub started_at: Option<DateTimeUtc>,
    pub finished_at: Option<DateTimeUtc>,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::execution::Entity",
        from = "Column::ExecutionId",
        to = "super::execution::Column::Id",
        on_delete = "Cascade"
    )]
    Execution,
}

impl Related<super::execution::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Execution.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
