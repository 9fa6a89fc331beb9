//! Triggers start executions without a person: SCHEDULE triggers at the
//! times of a cron pattern in a time zone, WEBHOOK triggers when their secret
//! URL is posted to (only the SHA-256 of its token is stored). Executions
//! record the trigger that started them.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Triggers::Table)
                    .col(uuid(Triggers::Id).primary_key())
                    .col(uuid(Triggers::OrganizationId))
                    .col(uuid(Triggers::WorkflowId))
                    .col(string_len(Triggers::Kind, 16))
                    .col(boolean(Triggers::Enabled))
                    .col(string_len_null(Triggers::Cron, 200))
                    .col(string_len_null(Triggers::TimeZone, 64))
                    .col(json_null(Triggers::Input))
                    .col(timestamp_with_time_zone_null(Triggers::NextRunAt))
                    .col(string_len_null(Triggers::TokenPrefix, 16))
                    .col(string_len_null(Triggers::TokenHash, 64).unique_key())
                    .col(timestamp_with_time_zone_null(Triggers::LastFiredAt))
                    .col(uuid_null(Triggers::CreatedBy))
                    .col(timestamp_with_time_zone(Triggers::CreatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(Triggers::Table, Triggers::OrganizationId)
                            .to(Organizations::Table, Organizations::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(Triggers::Table, Triggers::WorkflowId)
                            .to(Workflows::Table, Workflows::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(Triggers::Table, Triggers::CreatedBy)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::SetNull),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_triggers_workflow")
                    .table(Triggers::Table)
                    .col(Triggers::WorkflowId)
                    .col(Triggers::CreatedAt)
                    .to_owned(),
            )
            .await?;
        // The scheduler's scan: enabled schedules by when they are due.
        manager
            .create_index(
                Index::create()
                    .name("idx_triggers_due")
                    .table(Triggers::Table)
                    .col(Triggers::Enabled)
                    .col(Triggers::NextRunAt)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Executions::Table)
                    .add_column(uuid_null(Executions::TriggerId))
                    .to_owned(),
            )
            .await?;
        // No foreign key: SQLite cannot add one to an existing table, so on
        // both backends deleting a trigger clears the column in the same
        // transaction, through this index.
        manager
            .create_index(
                Index::create()
                    .name("idx_executions_trigger")
                    .table(Executions::Table)
                    .col(Executions::TriggerId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("idx_executions_trigger")
                    .table(Executions::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Executions::Table)
                    .drop_column(Executions::TriggerId)
                    .to_owned(),
            )
            .await?;
        manager
            .drop_table(Table::drop().table(Triggers::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum Organizations {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum Workflows {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum Executions {
    Table,
    TriggerId,
}

#[derive(DeriveIden)]
enum Triggers {
    Table,
    Id,
    OrganizationId,
    WorkflowId,
    Kind,
    Enabled,
    Cron,
    TimeZone,
    Input,
    NextRunAt,
    TokenPrefix,
    TokenHash,
    LastFiredAt,
    CreatedBy,
    CreatedAt,
}
