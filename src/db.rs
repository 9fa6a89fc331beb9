//! Database connections, start-up migration and the few operations that
//! differ between SQLite and PostgreSQL.
//!
//! Everything backend-specific sits behind a small function here, so the
//! services above read the same on both backends.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use migration::{Migrator, MigratorTrait};
use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbBackend,
    DbErr, EntityTrait, QuerySelect, Select, SqlErr, SqliteTransactionMode, Statement,
    TransactionOptions, TransactionTrait,
};

use crate::config::{Config, DatabaseKind, redact_url};

/// Key of the PostgreSQL advisory lock that serializes start-up migrations.
const MIGRATION_LOCK_KEY: i64 = 0x0046_4C4F_5750_494C; // "FLOWPIL"

/// Counts every SQL statement a connection runs (for N+1 tests and metrics).
#[derive(Clone, Debug, Default)]
pub struct StatementCounter(Arc<AtomicU64>);

impl StatementCounter {
    /// Statements run so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Opens the pool for `config`, with SQLite in WAL mode and a busy timeout.
pub async fn connect(
    config: &Config,
    counter: &StatementCounter,
) -> anyhow::Result<DatabaseConnection> {
    let settings = &config.settings;
    // Each connection to `sqlite::memory:` would open its own empty database.
    let max_connections = match config.database {
        DatabaseKind::Sqlite { path: None } => 1,
        _ => settings.db_max_connections,
    };
    let mut options = ConnectOptions::new(settings.database_url.clone());
    options
        .max_connections(max_connections)
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(Duration::from_secs(10))
        .sqlx_logging(false)
        .map_sqlx_sqlite_opts(|opts| {
            opts.create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true)
        });
    let mut db = Database::connect(options).await.with_context(|| {
        format!(
            "cannot connect to the database at {}",
            redact_url(&settings.database_url)
        )
    })?;
    let counter = counter.0.clone();
    db.set_metric_callback(move |_| {
        counter.fetch_add(1, Ordering::Relaxed);
    });
    Ok(db)
}

/// Applies pending migrations. On PostgreSQL an advisory lock, held on a
/// connection of its own, makes instances that start together migrate once.
pub async fn migrate_on_start(config: &Config, db: &DatabaseConnection) -> anyhow::Result<()> {
    if !config.is_postgres() {
        return Migrator::up(db, None)
            .await
            .context("migrating the database failed");
    }
    let mut options = ConnectOptions::new(config.settings.database_url.clone());
    options
        .max_connections(1)
        .min_connections(1)
        .sqlx_logging(false)
        .connect_timeout(Duration::from_secs(5));
    let lock_conn = Database::connect(options)
        .await
        .context("cannot open the migration lock connection")?;
    let backend = lock_conn.get_database_backend();
    lock_conn
        .execute_raw(Statement::from_sql_and_values(
            backend,
            "SELECT pg_advisory_lock($1)",
            [MIGRATION_LOCK_KEY.into()],
        ))
        .await
        .context("cannot take the migration lock")?;
    let migrated = Migrator::up(db, None)
        .await
        .context("migrating the database failed");
    let unlocked = lock_conn
        .execute_raw(Statement::from_sql_and_values(
            backend,
            "SELECT pg_advisory_unlock($1)",
            [MIGRATION_LOCK_KEY.into()],
        ))
        .await;
    lock_conn.close().await.ok();
    migrated?;
    unlocked.context("cannot release the migration lock")?;
    Ok(())
}

/// Begins a transaction that will write. On SQLite it starts `IMMEDIATE`,
/// so a concurrent writer waits on the busy timeout instead of failing when
/// its read lock cannot be upgraded.
pub async fn begin_write(db: &DatabaseConnection) -> Result<DatabaseTransaction, DbErr> {
    db.begin_with_options(TransactionOptions {
        sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
        ..TransactionOptions::default()
    })
    .await
}

/// `select` with `FOR UPDATE` on PostgreSQL, to lock the rows it reads for
/// the rest of the transaction. SQLite has no such clause and needs none:
/// its write transactions (see [`begin_write`]) are exclusive already.
pub fn locked<E: EntityTrait>(select: Select<E>, conn: &impl ConnectionTrait) -> Select<E> {
    if conn.get_database_backend() == DbBackend::Postgres {
        select.lock_exclusive()
    } else {
        select
    }
}

/// Whether `err` is a unique-constraint violation.
pub fn is_unique_violation(err: &DbErr) -> bool {
    matches!(err.sql_err(), Some(SqlErr::UniqueConstraintViolation(_)))
}
