//! `trusted_documents`: the GraphQL documents registered ahead with
//! `flowpilot documents add`, by the SHA-256 of their text. With trusted
//! documents on, only these run.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(TrustedDocuments::Table)
                    .if_not_exists()
                    .col(string_len(TrustedDocuments::Hash, 64).primary_key())
                    .col(text(TrustedDocuments::Body))
                    .col(string_len_null(TrustedDocuments::OperationName, 256))
                    .col(timestamp_with_time_zone(TrustedDocuments::CreatedAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(TrustedDocuments::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum TrustedDocuments {
    Table,
    Hash,
    Body,
    OperationName,
    CreatedAt,
}
