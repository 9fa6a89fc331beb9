//! `execution_events.position`: where an event stands in commit order, so
//! a dashboard's stream can resume from a cursor exactly, whatever order
//! events were committed in.
//!
//! On PostgreSQL it is the id of the transaction that wrote the event
//! (`pg_current_xact_id()`): a snapshot (`pg_current_snapshot()`) then says
//! exactly which events had committed, even when transactions commit out of
//! the order they began in. On SQLite, where one writer commits at a time,
//! it is a counter kept in `event_positions`, bumped by a trigger on every
//! insert, so it is never reused (not even after the newest events are
//! deleted). Events written before this migration stand at 0: committed
//! before any cursor. On PostgreSQL the column defaults to the writing
//! transaction's id, so an instance that does not set it yet (during a
//! rolling upgrade) still writes a true position.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DatabaseBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(ExecutionEvents::Table)
                    .add_column(
                        ColumnDef::new(ExecutionEvents::Position)
                            .big_integer()
                            .not_null()
                            .default(0),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("execution_events_organization_position")
                    .table(ExecutionEvents::Table)
                    .col(ExecutionEvents::OrganizationId)
                    .col(ExecutionEvents::Position)
                    .to_owned(),
            )
            .await?;
        if manager.get_database_backend() == DatabaseBackend::Postgres {
            // Rows written by an instance that does not set it yet (during
            // a rolling upgrade) still get their transaction's position.
            manager
                .get_connection()
                .execute_unprepared(
                    "ALTER TABLE execution_events ALTER COLUMN position \
                     SET DEFAULT (pg_current_xact_id()::text::bigint)",
                )
                .await?;
        }
        if manager.get_database_backend() == DatabaseBackend::Sqlite {
            let db = manager.get_connection();
            db.execute_unprepared(
                "CREATE TABLE event_positions (
                    id INTEGER PRIMARY KEY CHECK (id = 1),
                    last BIGINT NOT NULL
                )",
            )
            .await?;
            db.execute_unprepared("INSERT INTO event_positions (id, last) VALUES (1, 0)")
                .await?;
            db.execute_unprepared(
                "CREATE TRIGGER execution_events_position AFTER INSERT ON execution_events
                 BEGIN
                     UPDATE event_positions SET last = NEW.position WHERE NEW.position > last;
                 END",
            )
            .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() == DatabaseBackend::Sqlite {
            let db = manager.get_connection();
            db.execute_unprepared("DROP TRIGGER execution_events_position")
                .await?;
            db.execute_unprepared("DROP TABLE event_positions").await?;
        }
        manager
            .drop_index(
                Index::drop()
                    .name("execution_events_organization_position")
                    .table(ExecutionEvents::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(ExecutionEvents::Table)
                    .drop_column(ExecutionEvents::Position)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum ExecutionEvents {
    Table,
    OrganizationId,
    Position,
}
