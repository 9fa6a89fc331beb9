//! Workflows gain tags and archiving, and indexes for an organization's
//! workflow list in each of its orders.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// (index, the column after `organization_id`) for each list order.
const LISTS: [(&str, Workflows); 3] = [
    ("idx_workflows_org_created", Workflows::CreatedAt),
    ("idx_workflows_org_updated", Workflows::UpdatedAt),
    ("idx_workflows_org_name", Workflows::Name),
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite adds one column per statement.
        manager
            .alter_table(
                Table::alter()
                    .table(Workflows::Table)
                    .add_column(string_len(Workflows::Tags, 700).default(""))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Workflows::Table)
                    .add_column(timestamp_with_time_zone_null(Workflows::ArchivedAt))
                    .to_owned(),
            )
            .await?;
        for (name, column) in LISTS {
            manager
                .create_index(
                    Index::create()
                        .name(name)
                        .table(Workflows::Table)
                        .col(Workflows::OrganizationId)
                        .col(column)
                        .col(Workflows::Id)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for (name, _) in LISTS {
            manager
                .drop_index(Index::drop().name(name).table(Workflows::Table).to_owned())
                .await?;
        }
        for column in [Workflows::ArchivedAt, Workflows::Tags] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Workflows::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden, Clone, Copy)]
enum Workflows {
    Table,
    Id,
    OrganizationId,
    Name,
    CreatedAt,
    UpdatedAt,
    Tags,
    ArchivedAt,
}
