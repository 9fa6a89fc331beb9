//! Re-runs and idempotency keys of executions.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Executions::Table)
                    .add_column(uuid_null(Executions::RetryOfId))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_executions_idempotency")
                    .table(Executions::Table)
                    .col(Executions::WorkflowId)
                    .col(Executions::IdempotencyKey)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("idx_executions_idempotency")
                    .table(Executions::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Executions::Table)
                    .drop_column(Executions::RetryOfId)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum Executions {
    Table,
    WorkflowId,
    IdempotencyKey,
    RetryOfId,
}
