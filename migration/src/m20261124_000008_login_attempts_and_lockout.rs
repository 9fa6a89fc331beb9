//! Every sign-in attempt is recorded; accounts lock after repeated failures.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(LoginAttempts::Table)
                    .col(uuid(LoginAttempts::Id).primary_key())
                    .col(string_len(LoginAttempts::Email, 254))
                    .col(uuid_null(LoginAttempts::UserId))
                    .col(string_len_null(LoginAttempts::Ip, 64))
                    .col(boolean(LoginAttempts::Succeeded))
                    .col(string_len(LoginAttempts::Reason, 32))
                    .col(timestamp_with_time_zone(LoginAttempts::AttemptedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(LoginAttempts::Table, LoginAttempts::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_login_attempts_user")
                    .table(LoginAttempts::Table)
                    .col(LoginAttempts::UserId)
                    .col(LoginAttempts::AttemptedAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_login_attempts_email")
                    .table(LoginAttempts::Table)
                    .col(LoginAttempts::Email)
                    .col(LoginAttempts::AttemptedAt)
                    .to_owned(),
            )
            .await?;
        for column in [Users::LockedUntil, Users::FailuresCountedFrom] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Users::Table)
                        .add_column(timestamp_with_time_zone_null(column))
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [Users::FailuresCountedFrom, Users::LockedUntil] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Users::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .drop_table(Table::drop().table(LoginAttempts::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden, Clone, Copy)]
enum Users {
    Table,
    Id,
    LockedUntil,
    FailuresCountedFrom,
}

#[derive(DeriveIden)]
enum LoginAttempts {
    Table,
    Id,
    Email,
    UserId,
    Ip,
    Succeeded,
    Reason,
    AttemptedAt,
}
