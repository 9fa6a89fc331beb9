//! The `flowpilot` command: `serve` (default), `migrate` and `schema`.
//!
//! Start-up failures print one line to stderr and exit non-zero.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use flowpilot::app::App;
use flowpilot::bench::{self, BenchOptions};
use flowpilot::clock::Clock;
use flowpilot::config::{Config, Settings};
use flowpilot::graphql::persisted;
use flowpilot::state::AppState;
use flowpilot::{db, graphql, telemetry};
use migration::{Migrator, MigratorTrait};

#[derive(Parser)]
#[command(
    name = "flowpilot",
    version,
    about = "FlowPilot workflow automation server"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    settings: Settings,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the GraphQL API (the default), with workers.
    Serve,
    /// Run workers, the reaper and the scheduler only, without the HTTP API.
    Worker,
    /// Manage the database schema.
    Migrate {
        #[command(subcommand)]
        action: MigrateAction,
    },
    /// Print the GraphQL schema (SDL).
    Schema,
    /// Manage the trusted documents (see FLOWPILOT_TRUSTED_DOCUMENTS).
    Documents {
        #[command(subcommand)]
        action: DocumentsAction,
    },
    /// Measure the engine: executions drained per second, queued → started
    /// latency and statements per execution, on the embedded database and,
    /// given `--postgres`, on PostgreSQL.
    Bench {
        /// Seconds of steady draining to measure, at least.
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        /// Workers draining.
        #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..))]
        drain_workers: u16,
        /// One-step executions run one at a time for the latency figures.
        #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
        samples: u32,
        /// An empty PostgreSQL database to measure too (the bench deletes
        /// what it writes).
        #[arg(long)]
        postgres: Option<String>,
        /// Measure PostgreSQL only, not the embedded database.
        #[arg(long, requires = "postgres")]
        skip_embedded: bool,
        /// Seconds each router is loaded with `{ __typename }`.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
        request_seconds: u64,
        /// Keep-alive connections that load it.
        #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..))]
        connections: u16,
        /// Subscriber counts to measure subscriptions at.
        #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
        subscribers: Vec<usize>,
        /// Redis for the PostgreSQL measurement, which then also measures
        /// subscribers across two instances.
        #[arg(long, requires = "postgres")]
        redis: Option<String>,
    },
    /// Subscribers for the bench's subscription figures.
    #[command(hide = true)]
    BenchSubscribers {
        #[arg(long)]
        execution: uuid::Uuid,
        #[arg(long)]
        count: usize,
        #[arg(long, value_delimiter = ',', required = true)]
        urls: Vec<String>,
    },
    /// Render step templates from stdin, for a server's engine.
    #[command(hide = true)]
    RenderWorker,
}

#[derive(Subcommand)]
enum MigrateAction {
    /// Apply every pending migration.
    Up,
    /// Roll back the latest migrations.
    Down {
        /// How many to roll back.
        #[arg(long, default_value_t = 1)]
        steps: u32,
    },
    /// List migrations and whether each is applied.
    Status,
}

#[derive(Subcommand)]
enum DocumentsAction {
    /// Register documents: `.graphql` files (each file one document) or
    /// JSON manifests mapping SHA-256 hashes to documents (graphql-codegen's
    /// persisted documents).
    Add {
        /// The files to read.
        #[arg(required = true)]
        files: Vec<std::path::PathBuf>,
    },
    /// List the registered documents: hash and operation name.
    List,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // A bad flag or variable: its first line says which, and how.
        Err(err) if err.use_stderr() => {
            let rendered = err.to_string();
            let line = rendered
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("invalid arguments");
            eprintln!(
                "{}",
                if line.starts_with("error:") {
                    line.to_owned()
                } else {
                    format!("error: {line}")
                }
            );
            return ExitCode::FAILURE;
        }
        // --help and --version.
        Err(err) => {
            let _ = err.print();
            return ExitCode::SUCCESS;
        }
    };
    if let Some(Command::RenderWorker) = cli.command {
        return flowpilot::engine::rendering::serve_render_requests(&cli.settings.steps);
    }
    if let Some(Command::Schema) = cli.command {
        print!("{}", graphql::sdl());
        return ExitCode::SUCCESS;
    }
    telemetry::init(cli.settings.log_format, &cli.settings.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => return fail(&anyhow::Error::from(err)),
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => fail(&err),
    }
}

fn fail(err: &anyhow::Error) -> ExitCode {
    let line = format!("{err:#}").replace(['\n', '\r'], " ");
    eprintln!("error: {line}");
    ExitCode::FAILURE
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Some(Command::Bench {
        seconds,
        drain_workers,
        samples,
        postgres,
        skip_embedded,
        request_seconds,
        connections,
        subscribers,
        redis,
    }) = cli.command
    {
        let options = BenchOptions {
            seconds,
            workers: usize::from(drain_workers),
            samples: samples as usize,
            postgres,
            embedded: !skip_embedded,
            request_seconds,
            connections: usize::from(connections),
            subscribers,
            redis,
        };
        bench::run(cli.settings, options).await?;
        return Ok(());
    }
    if let Some(Command::BenchSubscribers {
        execution,
        count,
        urls,
    }) = cli.command
    {
        return bench::subscribers(urls, execution, count).await;
    }
    let config = Config::from_settings(cli.settings)?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => App::build(config).await?.serve(shutdown_signal()).await,
        Command::Worker => {
            AppState::build(config, Clock::system())
                .await?
                .run_workers(shutdown_signal())
                .await;
            Ok(())
        }
        Command::Migrate { action } => migrate(config, action).await,
        Command::Documents { action } => documents(config, action).await,
        Command::Schema
        | Command::RenderWorker
        | Command::Bench { .. }
        | Command::BenchSubscribers { .. } => {
            unreachable!("handled before start-up")
        }
    }
}

async fn migrate(config: Config, action: MigrateAction) -> anyhow::Result<()> {
    let conn = db::connect(&config, &db::StatementCounter::default()).await?;
    match action {
        MigrateAction::Up => db::migrate_on_start(&config, &conn).await?,
        MigrateAction::Down { steps } => Migrator::down(&conn, Some(steps)).await?,
        MigrateAction::Status => {
            for migration in Migrator::get_migration_with_status(&conn).await? {
                println!(
                    "{:<8} {}",
                    format!("{:?}", migration.status()).to_lowercase(),
                    migration.name()
                );
            }
        }
    }
    conn.close().await.ok();
    Ok(())
}

async fn documents(config: Config, action: DocumentsAction) -> anyhow::Result<()> {
    let conn = db::connect(&config, &db::StatementCounter::default()).await?;
    db::migrate_on_start(&config, &conn).await?;
    match action {
        DocumentsAction::Add { files } => {
            let mut documents = Vec::new();
            for file in &files {
                documents.extend(persisted::TrustedDocument::read(file)?);
            }
            let read = documents.len();
            let added = persisted::add_trusted_documents(&conn, documents).await?;
            println!(
                "{added} documents added, {} already registered",
                read - added
            );
        }
        DocumentsAction::List => {
            for document in persisted::trusted_documents(&conn).await? {
                println!(
                    "{} {}",
                    document.hash,
                    document.operation_name.as_deref().unwrap_or("(anonymous)")
                );
            }
        }
    }
    conn.close().await.ok();
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("Ctrl-C received, shutting down"),
        () = terminate => tracing::info!("SIGTERM received, shutting down"),
    }
}
