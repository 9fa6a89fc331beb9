//! Workflows and their immutable versions; executions, their step runs and
//! the durable event log.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Workflows::Table)
                    .col(uuid(Workflows::Id).primary_key())
                    .col(uuid(Workflows::OrganizationId))
                    .col(string_len(Workflows::Name, 100))
                    .col(text_null(Workflows::Description))
                    .col(uuid_null(Workflows::ActiveVersionId))
                    .col(uuid_null(Workflows::CreatedBy))
                    .col(timestamp_with_time_zone(Workflows::CreatedAt))
                    .col(timestamp_with_time_zone(Workflows::UpdatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(Workflows::Table, Workflows::OrganizationId)
                            .to(Organizations::Table, Organizations::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(Workflows::Table, Workflows::CreatedBy)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::SetNull),
                    )
                    .to_owned(),
            )
            .await?;
        index(
            manager,
            "idx_workflows_organization_id",
            Workflows::Table,
            &[Workflows::OrganizationId.into_iden()],
            false,
        )
        .await?;

        manager
            .create_table(
                Table::create()
                    .table(WorkflowVersions::Table)
                    .col(uuid(WorkflowVersions::Id).primary_key())
                    .col(uuid(WorkflowVersions::WorkflowId))
                    .col(integer(WorkflowVersions::Number))
                    .col(json_binary(WorkflowVersions::Definition))
                    .col(uuid_null(WorkflowVersions::AuthorId))
                    .col(text_null(WorkflowVersions::Message))
                    .col(timestamp_with_time_zone(WorkflowVersions::CreatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(WorkflowVersions::Table, WorkflowVersions::WorkflowId)
                            .to(Workflows::Table, Workflows::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(WorkflowVersions::Table, WorkflowVersions::AuthorId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::SetNull),
                    )
                    .to_owned(),
            )
            .await?;
        index(
            manager,
            "uq_workflow_versions_workflow_number",
            WorkflowVersions::Table,
            &[
                WorkflowVersions::WorkflowId.into_iden(),
                WorkflowVersions::Number.into_iden(),
            ],
            true,
        )
        .await?;

        manager
            .create_table(
                Table::create()
                    .table(Executions::Table)
                    .col(uuid(Executions::Id).primary_key())
                    .col(uuid(Executions::OrganizationId))
                    .col(uuid(Executions::WorkflowId))
                    .col(uuid(Executions::WorkflowVersionId))
                    .col(string_len(Executions::Status, 16))
                    .col(integer(Executions::Priority))
                    .col(json_binary(Executions::Input))
                    .col(json_binary_null(Executions::Output))
                    .col(text_null(Executions::Error))
                    .col(string_len(Executions::TriggerKind, 16))
                    .col(string_len_null(Executions::IdempotencyKey, 255))
                    .col(integer(Executions::Attempt))
                    .col(string_len_null(Executions::LeaseOwner, 128))
                    .col(timestamp_with_time_zone_null(Executions::LeaseExpiresAt))
                    .col(big_integer(Executions::LeaseEpoch))
                    .col(boolean(Executions::CancelRequested))
                    .col(timestamp_with_time_zone_null(Executions::RunAfter))
                    .col(integer(Executions::LastEventSeq))
                    .col(uuid_null(Executions::CreatedBy))
                    .col(timestamp_with_time_zone(Executions::QueuedAt))
                    .col(timestamp_with_time_zone_null(Executions::StartedAt))
                    .col(timestamp_with_time_zone_null(Executions::FinishedAt))
                    .col(timestamp_with_time_zone(Executions::UpdatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(Executions::Table, Executions::OrganizationId)
                            .to(Organizations::Table, Organizations::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(Executions::Table, Executions::WorkflowId)
                            .to(Workflows::Table, Workflows::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(Executions::Table, Executions::WorkflowVersionId)
                            .to(WorkflowVersions::Table, WorkflowVersions::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // The claim query: queued rows by priority, then age.
        index(
            manager,
            "idx_executions_claim",
            Executions::Table,
            &[
                Executions::Status.into_iden(),
                Executions::Priority.into_iden(),
                Executions::QueuedAt.into_iden(),
            ],
            false,
        )
        .await?;
        index(
            manager,
            "idx_executions_workflow_id",
            Executions::Table,
            &[Executions::WorkflowId.into_iden()],
            false,
        )
        .await?;
        index(
            manager,
            "idx_executions_organization_id",
            Executions::Table,
            &[Executions::OrganizationId.into_iden()],
            false,
        )
        .await?;

        manager
            .create_table(
                Table::create()
                    .table(StepRuns::Table)
                    .col(uuid(StepRuns::Id).primary_key())
                    .col(uuid(StepRuns::ExecutionId))
                    .col(string_len(StepRuns::StepId, 64))
                    .col(integer(StepRuns::Position))
                    .col(string_len(StepRuns::Status, 16))
                    .col(integer(StepRuns::Attempt))
                    .col(json_binary_null(StepRuns::Input))
                    .col(json_binary_null(StepRuns::Output))
                    .col(text_null(StepRuns::Error))
                    .col(timestamp_with_time_zone_null(StepRuns::NextRetryAt))
                    .col(timestamp_with_time_zone_null(StepRuns::StartedAt))
                    .col(timestamp_with_time_zone_null(StepRuns::FinishedAt))
                    .col(timestamp_with_time_zone(StepRuns::UpdatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(StepRuns::Table, StepRuns::ExecutionId)
                            .to(Executions::Table, Executions::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        index(
            manager,
            "uq_step_runs_execution_step",
            StepRuns::Table,
            &[
                StepRuns::ExecutionId.into_iden(),
                StepRuns::StepId.into_iden(),
            ],
            true,
        )
        .await?;

        manager
            .create_table(
                Table::create()
                    .table(ExecutionEvents::Table)
                    .col(uuid(ExecutionEvents::Id).primary_key())
                    .col(uuid(ExecutionEvents::ExecutionId))
                    .col(uuid(ExecutionEvents::OrganizationId))
                    .col(uuid(ExecutionEvents::WorkflowId))
                    .col(integer(ExecutionEvents::Seq))
                    .col(string_len(ExecutionEvents::Kind, 32))
                    .col(json_binary(ExecutionEvents::Payload))
                    .col(timestamp_with_time_zone(ExecutionEvents::OccurredAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(ExecutionEvents::Table, ExecutionEvents::ExecutionId)
                            .to(Executions::Table, Executions::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // Gap-free and duplicate-free: one row per (execution, seq).
        index(
            manager,
            "uq_execution_events_execution_seq",
            ExecutionEvents::Table,
            &[
                ExecutionEvents::ExecutionId.into_iden(),
                ExecutionEvents::Seq.into_iden(),
            ],
            true,
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            ExecutionEvents::Table.into_iden(),
            StepRuns::Table.into_iden(),
            Executions::Table.into_iden(),
            WorkflowVersions::Table.into_iden(),
            Workflows::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}

async fn index(
    manager: &SchemaManager<'_>,
    name: &str,
    table: impl IntoIden,
    columns: &[DynIden],
    unique: bool,
) -> Result<(), DbErr> {
    let mut index = Index::create();
    index.name(name).table(table);
    for column in columns {
        index.col(column.clone());
    }
    if unique {
        index.unique();
    }
    manager.create_index(index.to_owned()).await
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
    OrganizationId,
    Name,
    Description,
    ActiveVersionId,
    CreatedBy,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum WorkflowVersions {
    Table,
    Id,
    WorkflowId,
    Number,
    Definition,
    AuthorId,
    Message,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Executions {
    Table,
    Id,
    OrganizationId,
    WorkflowId,
    WorkflowVersionId,
    Status,
    Priority,
    Input,
    Output,
    Error,
    TriggerKind,
    IdempotencyKey,
    Attempt,
    LeaseOwner,
    LeaseExpiresAt,
    LeaseEpoch,
    CancelRequested,
    RunAfter,
    LastEventSeq,
    CreatedBy,
    QueuedAt,
    StartedAt,
    FinishedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum StepRuns {
    Table,
    Id,
    ExecutionId,
    StepId,
    Position,
    Status,
    Attempt,
    Input,
    Output,
    Error,
    NextRetryAt,
    StartedAt,
    FinishedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum ExecutionEvents {
    Table,
    Id,
    ExecutionId,
    OrganizationId,
    WorkflowId,
    Seq,
    Kind,
    Payload,
    OccurredAt,
}
