//! Email verification, password resets and TOTP MFA: single-use tokens,
//! backup codes, and the user columns that record verification and MFA.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(OneTimeTokens::Table)
                    .col(uuid(OneTimeTokens::Id).primary_key())
                    .col(uuid(OneTimeTokens::UserId))
                    .col(string_len(OneTimeTokens::Purpose, 32))
                    .col(string_len_uniq(OneTimeTokens::TokenHash, 64))
                    .col(timestamp_with_time_zone(OneTimeTokens::CreatedAt))
                    .col(timestamp_with_time_zone(OneTimeTokens::ExpiresAt))
                    .col(timestamp_with_time_zone_null(OneTimeTokens::UsedAt))
                    .col(integer(OneTimeTokens::FailedAttempts).default(0))
                    .foreign_key(
                        ForeignKey::create()
                            .from(OneTimeTokens::Table, OneTimeTokens::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_one_time_tokens_user_purpose")
                    .table(OneTimeTokens::Table)
                    .col(OneTimeTokens::UserId)
                    .col(OneTimeTokens::Purpose)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(MfaBackupCodes::Table)
                    .col(uuid(MfaBackupCodes::Id).primary_key())
                    .col(uuid(MfaBackupCodes::UserId))
                    .col(string_len(MfaBackupCodes::CodeHash, 64))
                    .col(timestamp_with_time_zone(MfaBackupCodes::CreatedAt))
                    .col(timestamp_with_time_zone_null(MfaBackupCodes::UsedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(MfaBackupCodes::Table, MfaBackupCodes::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_mfa_backup_codes_user")
                    .table(MfaBackupCodes::Table)
                    .col(MfaBackupCodes::UserId)
                    .to_owned(),
            )
            .await?;
        for column in [
            timestamp_with_time_zone_null(Users::EmailVerifiedAt),
            text_null(Users::MfaSecret),
            timestamp_with_time_zone_null(Users::MfaEnabledAt),
            big_integer_null(Users::MfaLastStep),
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Users::Table)
                        .add_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [
            Users::MfaLastStep,
            Users::MfaEnabledAt,
            Users::MfaSecret,
            Users::EmailVerifiedAt,
        ] {
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
            .drop_table(Table::drop().table(MfaBackupCodes::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(OneTimeTokens::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden, Clone, Copy)]
enum Users {
    Table,
    Id,
    EmailVerifiedAt,
    MfaSecret,
    MfaEnabledAt,
    MfaLastStep,
}

#[derive(DeriveIden)]
enum OneTimeTokens {
    Table,
    Id,
    UserId,
    Purpose,
    TokenHash,
    CreatedAt,
    ExpiresAt,
    UsedAt,
    FailedAttempts,
}

#[derive(DeriveIden)]
enum MfaBackupCodes {
    Table,
    Id,
    UserId,
    CodeHash,
    CreatedAt,
    UsedAt,
}
