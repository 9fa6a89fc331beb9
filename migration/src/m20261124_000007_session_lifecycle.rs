//! Session lifecycle: when a session lapses (its latest refresh token's
//! expiry) and why it was revoked, for listing and revoking sessions.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(UserSessions::Table)
                    .add_column(timestamp_with_time_zone_null(UserSessions::ExpiresAt))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(UserSessions::Table)
                    .add_column(string_null(UserSessions::RevokedReason))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_user_sessions_user_list")
                    .table(UserSessions::Table)
                    .col(UserSessions::UserId)
                    .col(UserSessions::CreatedAt)
                    .col(UserSessions::Id)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("idx_user_sessions_user_list")
                    .table(UserSessions::Table)
                    .to_owned(),
            )
            .await?;
        for column in [UserSessions::RevokedReason, UserSessions::ExpiresAt] {
            manager
                .alter_table(
                    Table::alter()
                        .table(UserSessions::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden, Clone, Copy)]
enum UserSessions {
    Table,
    Id,
    UserId,
    CreatedAt,
    ExpiresAt,
    RevokedReason,
}
