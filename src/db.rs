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

/// How often the checkpointer copies an embedded database's write-ahead
/// log back into its file.
const SQLITE_CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// Frames in the write-ahead log (pages, 4 KiB each) past which the
/// checkpointer, once it has copied what it could beside the writers,
/// copies the rest with this process's writers held at their gate, so the
/// log starts over instead of growing under steady writes. SQLite's own
/// automatic checkpoint starts at the same size.
const SQLITE_WAL_RESTART_FRAMES: i64 = 1000;

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
///
/// An embedded database's file is checkpointed by a task of its own (see
/// [`checkpoint`]) instead of by the commit that happens to fill the log,
/// which made that commit, and every writer waiting at the gate behind
/// it, wait for the copy and its flush to disk. Its connections are not
/// pinged when taken from the pool: a file cannot hang up, and each ping
/// is one more hand-off to the connection's thread.
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
    let file_backed = matches!(config.database, DatabaseKind::Sqlite { path: Some(_) });
    let mut options = ConnectOptions::new(settings.database_url.clone());
    if matches!(config.database, DatabaseKind::Sqlite { .. }) {
        options.test_before_acquire(false);
    }
    options
        .max_connections(max_connections)
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(Duration::from_secs(10))
        .sqlx_logging(false)
        .map_sqlx_sqlite_opts(move |opts| {
            let opts = opts
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(SQLITE_BUSY_TIMEOUT)
                .foreign_keys(true);
            if file_backed {
                // Commits leave the log to the checkpointer.
                opts.pragma("wal_autocheckpoint", "0")
            } else {
                opts
            }
        });
    let mut db = Database::connect(options).await.with_context(|| {
        format!(
            "cannot connect to the database at {}",
            redact_url(&settings.database_url)
        )
    })?;
    let counter = counter.0.clone();
    db.set_metric_callback(move |info| {
        // The checkpointer's statements are the database's upkeep, not the
        // work of a request or an execution.
        if info.statement.sql != CHECKPOINT_SQL {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    });
    if file_backed {
        tokio::spawn(checkpoint(db.clone()));
    }
    Ok(db)
}

/// Checkpoints an embedded database every [`SQLITE_CHECKPOINT_EVERY`]
/// until its pool closes. Each pass first copies the log beside the
/// writers (SQLite's `PASSIVE` checkpoint, which neither waits for nor
/// blocks them, and flushes on this task's connection). When writers
/// added frames meanwhile and the log has grown past
/// [`SQLITE_WAL_RESTART_FRAMES`], it copies the few left with this
/// process's writers held at the gate, so the next write starts the log
/// over.
async fn checkpoint(db: DatabaseConnection) {
    let file = sqlite_file(&db);
    let mut every = tokio::time::interval(SQLITE_CHECKPOINT_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if db.get_sqlite_connection_pool().is_closed() {
            return;
        }
        let copied = match checkpoint_pass(&db).await {
            Ok(Some(Wal { frames, copied }))
                if copied < frames && frames >= SQLITE_WAL_RESTART_FRAMES =>
            {
                let _turn = file.writers.lock().await;
                checkpoint_pass(&db).await
            }
            other => other,
        };
        match copied {
            Ok(Some(wal)) => {
                if wal.copied == wal.frames {
                    file.checkpoints.fetch_add(1, Ordering::Relaxed);
                }
            }
            // Not in WAL mode: nothing to copy, ever.
            Ok(None) => return,
            Err(_) if db.get_sqlite_connection_pool().is_closed() => return,
            Err(err) => tracing::warn!(error = %err, "checkpointing the database failed"),
        }
    }
}

/// The write-ahead log after a checkpoint: its frames, and how many of
/// them are in the database file.
struct Wal {
    frames: i64,
    copied: i64,
}

/// The checkpointer's statement.
const CHECKPOINT_SQL: &str = "PRAGMA wal_checkpoint(PASSIVE)";

/// One `PASSIVE` checkpoint; `None` when the database is not in WAL mode.
async fn checkpoint_pass(db: &DatabaseConnection) -> Result<Option<Wal>, DbErr> {
    let row = db
        .query_one_raw(Statement::from_string(DbBackend::Sqlite, CHECKPOINT_SQL))
        .await?
        .ok_or_else(|| DbErr::Custom("wal_checkpoint returned no row".to_owned()))?;
    let frames: i64 = row.try_get_by_index(1)?;
    let copied: i64 = row.try_get_by_index(2)?;
    Ok((frames >= 0).then_some(Wal { frames, copied }))
}

/// Checkpoints of the embedded database `db` writes to that left every
/// frame of its log copied into the file, since this process opened it.
pub fn sqlite_checkpoints(db: &DatabaseConnection) -> u64 {
    sqlite_file(db).checkpoints.load(Ordering::Relaxed)
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
            tokio::time::timeout(
                SQLITE_BUSY_TIMEOUT,
                sqlite_file(db).writers.clone().lock_owned(),
            )
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

/// What this process shares about one SQLite database file.
#[derive(Default)]
struct SqliteFile {
    /// The gate its writers take their turn at.
    writers: Arc<tokio::sync::Mutex<()>>,
    /// Checkpoints that copied its whole log (see [`checkpoint`]).
    checkpoints: AtomicU64,
}

/// The SQLite database file `db` writes to.
fn sqlite_file(db: &DatabaseConnection) -> Arc<SqliteFile> {
    static FILES: OnceLock<Mutex<HashMap<PathBuf, Arc<SqliteFile>>>> = OnceLock::new();
    let file = db
        .get_sqlite_connection_pool()
        .connect_options()
        .get_filename()
        .to_path_buf();
    let mut files = FILES
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    files.entry(file).or_default().clone()
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
