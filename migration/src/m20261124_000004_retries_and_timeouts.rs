//! Failed-attempt counts of step runs, and execution timeouts.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(StepRuns::Table)
                    .add_column(integer(StepRuns::FailedAttempts).default(0))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Executions::Table)
                    .add_column(big_integer_null(Executions::TimeoutMs))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Executions::Table)
                    .add_column(timestamp_with_time_zone_null(Executions::TimeoutAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Executions::Table)
                    .drop_column(Executions::TimeoutAt)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Executions::Table)
                    .drop_column(Executions::TimeoutMs)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(StepRuns::Table)
                    .drop_column(StepRuns::FailedAttempts)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum StepRuns {
    Table,
    FailedAttempts,
}

#[derive(DeriveIden)]
enum Executions {
    Table,
    TimeoutMs,
    TimeoutAt,
}
