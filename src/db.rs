//! Database connections, start-up migration and the few operations that
//! differ between SQLite and PostgreSQL.
//!
//! Everything backend-specific sits behind a small function here, so the
//! services above read the same on both backends.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use anyhow::Context;
use migration::{Migrator, MigratorTrait};
use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbBackend,
    DbErr, EntityTrait, ExecResult, QueryResult, QuerySelect, Select, SqlErr,
    SqliteTransactionMode, Statement, TransactionOptions, TransactionTrait,
};

use crate::config::{Config, DatabaseKind, redact_url};

/// How long a SQLite writer waits for its turn before it gives up.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

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
                .busy_timeout(SQLITE_BUSY_TIMEOUT)
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
/// so a concurrent writer waits instead of failing when its read lock
/// cannot be upgraded; and writers of this process take their turn at an
/// in-process gate first, so they wait in a queue woken at each commit
/// rather than in SQLite's busy handler, which sleeps for up to 100 ms
/// between looks; one that waits longer than the busy timeout gives up, as
/// it would there. Other processes on the same file still meet at SQLite's
/// busy timeout.
pub async fn begin_write(db: &DatabaseConnection) -> Result<WriteTxn, DbErr> {
    let turn = match db.get_database_backend() {
        DbBackend::Sqlite => Some(
            tokio::time::timeout(SQLITE_BUSY_TIMEOUT, sqlite_writers(db).lock_owned())
                .await
                .map_err(|_| {
                    DbErr::Custom(format!(
                        "the database was busy with other writes for {} s",
                        SQLITE_BUSY_TIMEOUT.as_secs()
                    ))
                })?,
        ),
        _ => None,
    };
    let txn = db
        .begin_with_options(TransactionOptions {
            sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
            ..TransactionOptions::default()
        })
        .await?;
    Ok(WriteTxn { txn, _turn: turn })
}

/// The gate of the SQLite database file `db` writes to.
fn sqlite_writers(db: &DatabaseConnection) -> Arc<tokio::sync::Mutex<()>> {
    static GATES: OnceLock<Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>> = OnceLock::new();
    let file = db
        .get_sqlite_connection_pool()
        .connect_options()
        .get_filename()
        .to_path_buf();
    let mut gates = GATES
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    gates.entry(file).or_default().clone()
}

/// A write transaction (see [`begin_write`]), holding its writer's turn
/// until it commits or is dropped.
pub struct WriteTxn {
    txn: DatabaseTransaction,
    _turn: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl WriteTxn {
    pub async fn commit(self) -> Result<(), DbErr> {
        self.txn.commit().await
    }

    pub async fn rollback(self) -> Result<(), DbErr> {
        self.txn.rollback().await
    }
}

impl std::ops::Deref for WriteTxn {
    type Target = DatabaseTransaction;

    fn deref(&self) -> &DatabaseTransaction {
        &self.txn
    }
}

#[async_trait::async_trait]
impl ConnectionTrait for WriteTxn {
    fn get_database_backend(&self) -> DbBackend {
        self.txn.get_database_backend()
    }

    async fn execute_raw(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        self.txn.execute_raw(stmt).await
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        self.txn.execute_unprepared(sql).await
    }

    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        self.txn.query_one_raw(stmt).await
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        self.txn.query_all_raw(stmt).await
    }

    fn support_returning(&self) -> bool {
        self.txn.support_returning()
    }
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
