//! Indexes for newest-first lists of a workflow's and an organization's
//! executions: they replace the single-column indexes on the same leading
//! column, which they cover.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// (new index, its leading column, the index it replaces)
const LISTS: [(&str, Executions, &str); 2] = [
    (
        "idx_executions_workflow_list",
        Executions::WorkflowId,
        "idx_executions_workflow_id",
    ),
    (
        "idx_executions_organization_list",
        Executions::OrganizationId,
        "idx_executions_organization_id",
    ),
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for (name, column, replaced) in LISTS {
            manager
                .create_index(
                    Index::create()
                        .name(name)
                        .table(Executions::Table)
                        .col(column)
                        .col(Executions::QueuedAt)
                        .col(Executions::Id)
                        .to_owned(),
                )
                .await?;
            manager
                .drop_index(
                    Index::drop()
                        .name(replaced)
                        .table(Executions::Table)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for (name, column, replaced) in LISTS {
            manager
                .create_index(
                    Index::create()
                        .name(replaced)
                        .table(Executions::Table)
                        .col(column)
                        .to_owned(),
                )
                .await?;
            manager
                .drop_index(Index::drop().name(name).table(Executions::Table).to_owned())
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden, Clone, Copy)]
enum Executions {
    Table,
    Id,
    WorkflowId,
    OrganizationId,
    QueuedAt,
}
