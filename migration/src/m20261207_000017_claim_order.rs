//! The claim's order as an index: queued executions by priority (highest
//! first), then age, then id. The earlier index had every column
//! ascending, so a claim sorted the whole queue (priority descending with
//! age ascending is not an order it can be read in), and each claim cost
//! more as the queue grew.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const OLD: &str = "idx_executions_claim";
const NEW: &str = "idx_executions_claim_order";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name(NEW)
                    .table(Executions::Table)
                    .col(Executions::Status)
                    .col((Executions::Priority, IndexOrder::Desc))
                    .col(Executions::QueuedAt)
                    .col(Executions::Id)
                    .to_owned(),
            )
            .await?;
        manager
            .drop_index(Index::drop().name(OLD).table(Executions::Table).to_owned())
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name(OLD)
                    .table(Executions::Table)
                    .col(Executions::Status)
                    .col(Executions::Priority)
                    .col(Executions::QueuedAt)
                    .to_owned(),
            )
            .await?;
        manager
            .drop_index(Index::drop().name(NEW).table(Executions::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum Executions {
    Table,
    Status,
    Priority,
    QueuedAt,
    Id,
}
