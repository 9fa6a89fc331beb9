//! `execution_events`: the durable, append-only log of every change to an
//! execution. `seq` is gap-free per execution (1, 2, 3, …), allocated in
//! the transaction of the change it records; subscriptions replay from here.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "execution_events")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub execution_id: Uuid,
    pub organization_id: Uuid,
    pub workflow_id: Uuid,
    pub seq: i32,
    pub kind: String,
    /// The execution and step snapshot the event carries, as JSON.
    pub payload: Json,
    pub occurred_at: DateTimeUtc,
    /// Where the event stands in commit order: on PostgreSQL the id of the
    /// transaction that wrote it, on SQLite a counter (see the migration
    /// `event_positions`).
    pub position: i64,
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
