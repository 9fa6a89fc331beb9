//! Workflow concurrency limits and revisions (for optimistic updates).

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Workflows::Table)
                    .add_column(integer_null(Workflows::MaxConcurrency))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Workflows::Table)
                    .add_column(integer(Workflows::Revision).default(1))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Workflows::Table)
                    .drop_column(Workflows::Revision)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Workflows::Table)
                    .drop_column(Workflows::MaxConcurrency)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum Workflows {
    Table,
    MaxConcurrency,
    Revision,
}
