//! The shared state of one FlowPilot instance: the database, the bus,
//! the keys and the clients every part uses. Services, the engine, the
//! event streams and `flowpilot worker` depend on this module, never on
//! the GraphQL schema or the HTTP router (see `app` for those).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use sea_orm::DatabaseConnection;

use crate::auth::Hashers;
use crate::auth::rate_limit::RateLimiter;
use crate::auth::sealing::Sealer;
use crate::auth::tokens::TokenKeys;
use crate::clock::Clock;
use crate::config::{Config, redact_url};
use crate::db::{self, StatementCounter};
use crate::engine::Engine;
use crate::engine::definitions::Definitions;
use crate::engine::http::HttpSteps;
use crate::engine::journal::Commits;
use crate::engine::rendering::Rendering;
use crate::events::EventBus;
use crate::events::fan_out::FanOut;
use crate::events::recheck::StreamRegistry;
use crate::events::redis_bus::RedisBus;
use crate::mail::Mailer;
use crate::orgs::access::Revocations;
use crate::workflows::scheduler::Scheduler;

/// Shared state of one FlowPilot instance: a pointer to its [`Services`],
/// cloned into every request, subscription and background task at the
/// cost of a reference count.
#[derive(Clone)]
pub struct AppState(Arc<Services>);

impl std::ops::Deref for AppState {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.0
    }
}

/// What every part of an instance shares.
#[derive(Clone)]
pub struct Services {
    /// The database pool (SQLite or PostgreSQL).
    pub db: DatabaseConnection,
    /// Validated configuration.
    pub config: Arc<Config>,
    /// The one source of "now".
    pub clock: Clock,
    /// Keys that sign and verify access tokens.
    pub tokens: Arc<TokenKeys>,
    /// Seals secrets kept at rest (TOTP secrets).
    pub sealer: Sealer,
    /// Redis, when `REDIS_URL` is set; reconnects on its own.
    pub redis: Option<ConnectionManager>,
    /// Number of SQL statements run on `db` since start.
    pub sql_statements: StatementCounter,
    /// Carries execution events and control messages.
    pub bus: EventBus,
    /// Executions streamed on this instance, for the idle re-check.
    pub streams: StreamRegistry,
    /// Subscribers that share one resolution per event.
    pub fan_out: FanOut,
    /// The client HTTP steps send their requests with.
    pub http_steps: HttpSteps,
    /// Renders step configs off the runtime, on fuel, a few at once.
    pub rendering: Rendering,
    /// Workflow definitions as workers last parsed them.
    pub definitions: Definitions,
    /// Commits the changes workers record, together when they meet.
    pub commits: Commits,
    /// Sessions with open connections here, closed when they end.
    pub revocations: Revocations,
    /// Sends account mail (SMTP, or the log).
    pub mailer: Mailer,
    /// Limits sign-in attempts per IP and per email.
    pub rate_limiter: RateLimiter,
    /// The threads that hash and check passwords.
    pub hashers: Hashers,
}

impl AppState {
    /// Connects to the database (migrating it) and, when configured, Redis,
    /// with the mailer the settings name.
    pub async fn build(config: Config, clock: Clock) -> anyhow::Result<Self> {
        let mailer = Mailer::from_settings(&config.settings)?;
        Self::build_with(config, clock, mailer).await
    }

    /// As [`AppState::build`], sending mail through `mailer`.
    pub async fn build_with(config: Config, clock: Clock, mailer: Mailer) -> anyhow::Result<Self> {
        let sql_statements = StatementCounter::default();
        let db = db::connect(&config, &sql_statements).await?;
        db::migrate_on_start(&config, &db).await?;
        let (redis, bus) = match &config.settings.redis_url {
            Some(url) => {
                let manager = connect_redis(url).await?;
                let client = redis::Client::open(url.as_str())?;
                let bus = RedisBus::connect(client, manager.clone(), &config.settings.redis_prefix)
                    .await
                    .with_context(|| format!("cannot subscribe to Redis at {}", redact_url(url)))?;
                (Some(manager), EventBus::Redis(bus))
            }
            None => {
                if config.is_postgres() {
                    tracing::warn!(
                        "REDIS_URL is not set: events stay in this process, so run a single instance"
                    );
                }
                (None, EventBus::local())
            }
        };
        let tokens = Arc::new(TokenKeys::new(&config.jwt_secret));
        let sealer = Sealer::new(&config.encryption_key);
        let http_steps = HttpSteps::new(&config.settings)?;
        let rendering = Rendering::new(&config.settings.steps);
        let hashers = Hashers::new(&config.settings.hashing)?;
        let rate_limiter = RateLimiter::new(&config.settings, redis.clone());
        Ok(Self(Arc::new(Services {
            db,
            config: Arc::new(config),
            clock,
            tokens,
            sealer,
            redis,
            sql_statements,
            bus,
            streams: StreamRegistry::default(),
            fan_out: FanOut::default(),
            http_steps,
            rendering,
            definitions: Definitions::default(),
            commits: Commits::default(),
            revocations: Revocations::default(),
            mailer,
            rate_limiter,
            hashers,
        })))
    }

    /// The same services under another configuration (a process that runs
    /// beside this one on the same database and bus, with other settings).
    pub fn with_config(&self, config: Config) -> Self {
        let mut services = (*self.0).clone();
        services.config = Arc::new(config);
        Self(Arc::new(services))
    }

    /// Runs this instance's workers, reaper and scheduler, without the HTTP API, until
    /// `shutdown` resolves; then hands running executions back.
    pub async fn run_workers(self, shutdown: impl Future<Output = ()>) {
        let engine = Engine::start(&self).await;
        let (stop_scheduler, stopping) = tokio::sync::watch::channel(false);
        let scheduler = Scheduler::start(&self, stopping);
        tracing::info!(
            workers = self.config.settings.workers,
            "FlowPilot workers are running"
        );
        shutdown.await;
        let _ = stop_scheduler.send(true);
        tokio::join!(scheduler.stopped(), engine.shutdown());
        self.db.clone().close().await.ok();
        tracing::info!("FlowPilot workers stopped");
    }
}

async fn connect_redis(url: &str) -> anyhow::Result<ConnectionManager> {
    let failed = || format!("cannot connect to Redis at {}", redact_url(url));
    let client = redis::Client::open(url).with_context(failed)?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(Some(Duration::from_secs(2)))
        .set_max_delay(Duration::from_secs(5));
    let mut manager = tokio::time::timeout(
        Duration::from_secs(10),
        ConnectionManager::new_with_config(client, config),
    )
    .await
    .map_err(|_| anyhow::anyhow!("timed out"))
    .with_context(failed)?
    .with_context(failed)?;
    redis::cmd("PING")
        .query_async::<String>(&mut manager)
        .await
        .with_context(failed)?;
    Ok(manager)
}
