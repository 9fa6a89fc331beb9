//! Settings: read once at start from flags and the environment, validated,
//! and turned into a [`Config`] the rest of FlowPilot trusts.
//!
//! Every setting has a flag and an environment variable; `README.md` lists
//! them. Validation errors are plain sentences, printed as one line by
//! `main` before exiting non-zero.

use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use base64::Engine;
use rand::RngCore;

use crate::egress::PrivateAccess;
use crate::limits::{DocumentLimits, HashingLimits, StepLimits};

/// The shortest secret accepted for `FLOWPILOT_JWT_SECRET` and
/// `FLOWPILOT_ENCRYPTION_KEY`.
pub const MIN_SECRET_LEN: usize = 32;

/// Name of the file, beside the SQLite database, that keeps generated secrets.
pub const SECRET_FILE_NAME: &str = "flowpilot.secret";

/// Log line format.
/// The request headers browsers may send cross-origin unless configured:
/// what Apollo Client, urql, graphql-request, OpenTelemetry and Sentry send.
pub const DEFAULT_CORS_ALLOW_HEADERS: &str = "authorization,content-type,accept,x-request-id,\
apollographql-client-name,apollographql-client-version,apollo-require-preflight,\
x-apollo-operation-name,traceparent,tracestate,baggage,sentry-trace";

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Raw settings as given on the command line or in the environment.
#[derive(clap::Parser, Clone)]
#[command(
    name = "flowpilot",
    version,
    about = "FlowPilot workflow automation server"
)]
pub struct Settings {
    /// Address to listen on.
    #[arg(long, env = "FLOWPILOT_HOST", default_value = "0.0.0.0", global = true)]
    pub host: IpAddr,
    /// Port to listen on (0 picks a free one).
    #[arg(long, env = "FLOWPILOT_PORT", default_value_t = 8000, global = true)]
    pub port: u16,
    /// `sqlite://path` (created if missing) or `postgres://…`.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://flowpilot.db",
        global = true,
        hide_env_values = true
    )]
    pub database_url: String,
    /// Largest number of pooled database connections.
    #[arg(
        long,
        env = "FLOWPILOT_DB_MAX_CONNECTIONS",
        default_value_t = 10,
        global = true
    )]
    pub db_max_connections: u32,
    /// `redis://…`; without it FlowPilot uses its in-process event bus.
    #[arg(long, env = "REDIS_URL", global = true, hide_env_values = true)]
    pub redis_url: Option<String>,
    /// Prefix of every Redis key and channel FlowPilot uses.
    #[arg(
        long,
        env = "FLOWPILOT_REDIS_PREFIX",
        default_value = "flowpilot:",
        global = true
    )]
    pub redis_prefix: String,
    /// HMAC key for access tokens, at least 32 characters.
    #[arg(
        long,
        env = "FLOWPILOT_JWT_SECRET",
        global = true,
        hide_env_values = true
    )]
    pub jwt_secret: Option<String>,
    /// Key material for encrypting secrets at rest, at least 32 characters.
    #[arg(
        long,
        env = "FLOWPILOT_ENCRYPTION_KEY",
        global = true,
        hide_env_values = true
    )]
    pub encryption_key: Option<String>,
    /// Log line format.
    #[arg(
        long,
        env = "FLOWPILOT_LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    pub log_format: LogFormat,
    /// Log filter in `tracing` syntax, e.g. `info,flowpilot=debug`.
    #[arg(long, env = "FLOWPILOT_LOG", default_value = "info", global = true)]
    pub log: String,
    /// Whether the schema answers introspection queries.
    #[arg(long, env = "FLOWPILOT_INTROSPECTION", default_value_t = true, action = clap::ArgAction::Set, global = true)]
    pub introspection: bool,
    /// Deepest selection set a query may nest.
    #[arg(
        long,
        env = "FLOWPILOT_MAX_QUERY_DEPTH",
        default_value_t = 16,
        global = true
    )]
    pub max_query_depth: usize,
    /// Highest complexity (fields counted across the query) a query may have.
    #[arg(
        long,
        env = "FLOWPILOT_MAX_QUERY_COMPLEXITY",
        default_value_t = 500,
        global = true
    )]
    pub max_query_complexity: usize,
    /// Most operations in one batched request.
    #[arg(
        long,
        env = "FLOWPILOT_MAX_BATCH_SIZE",
        default_value_t = 10,
        global = true
    )]
    pub max_batch_size: usize,
    /// Most persisted-query documents each instance keeps in memory (Redis,
    /// when configured, keeps every one for seven days).
    #[arg(
        long,
        env = "FLOWPILOT_PERSISTED_QUERY_CACHE",
        default_value_t = 1000,
        global = true
    )]
    pub persisted_query_cache: usize,
    /// Run only the documents registered with `flowpilot documents add`.
    #[arg(long, env = "FLOWPILOT_TRUSTED_DOCUMENTS", default_value_t = false, action = clap::ArgAction::Set, global = true)]
    pub trusted_documents: bool,
    /// Largest request body in bytes.
    #[arg(long, env = "FLOWPILOT_MAX_BODY_BYTES", default_value_t = 1024 * 1024, global = true)]
    pub max_body_bytes: usize,
    /// Seconds a request may take before it is answered with 408.
    #[arg(
        long,
        env = "FLOWPILOT_REQUEST_TIMEOUT_SECS",
        default_value_t = 30,
        global = true
    )]
    pub request_timeout_secs: u64,
    /// Comma-separated proxy addresses whose `X-Forwarded-For` is believed.
    #[arg(
        long,
        env = "FLOWPILOT_TRUSTED_PROXIES",
        value_delimiter = ',',
        global = true
    )]
    pub trusted_proxies: Vec<IpAddr>,
    /// Workers in this process claiming and running executions (0: none).
    #[arg(long, env = "FLOWPILOT_WORKERS", default_value_t = 4, global = true)]
    pub workers: usize,
    /// Seconds a worker's lease on an execution lasts between renewals.
    #[arg(
        long,
        env = "FLOWPILOT_LEASE_SECS",
        default_value_t = 30,
        global = true
    )]
    pub lease_secs: u64,
    /// Milliseconds an idle worker waits before looking for work again
    /// when no wake-up arrives.
    #[arg(
        long,
        env = "FLOWPILOT_POLL_INTERVAL_MS",
        default_value_t = 1000,
        global = true
    )]
    pub poll_interval_ms: u64,
    /// Most executions of one organization started and not finished at once
    /// (0: no cap).
    #[arg(
        long,
        env = "FLOWPILOT_ORG_MAX_CONCURRENCY",
        default_value_t = 0,
        global = true
    )]
    pub org_max_concurrency: u32,
    /// Milliseconds a worker waits in place for a retry or a DELAY; a longer
    /// wait parks the execution (back in the queue until it is due).
    #[arg(
        long,
        env = "FLOWPILOT_PARK_AFTER_MS",
        default_value_t = 10_000,
        global = true
    )]
    pub park_after_ms: u64,
    /// Milliseconds a stopping worker lets steps in flight finish before it
    /// hands their executions back.
    #[arg(
        long,
        env = "FLOWPILOT_SHUTDOWN_GRACE_MS",
        default_value_t = 10_000,
        global = true
    )]
    pub shutdown_grace_ms: u64,
    /// Milliseconds between the reaper's passes over expired leases.
    #[arg(
        long,
        env = "FLOWPILOT_REAPER_INTERVAL_MS",
        default_value_t = 5000,
        global = true
    )]
    pub reaper_interval_ms: u64,
    /// Whether this process runs the engine's background work: workers,
    /// the reaper and the scheduler. Off, it only serves the API.
    #[arg(long, env = "FLOWPILOT_RUN_ENGINE", default_value_t = true, action = clap::ArgAction::Set, global = true)]
    pub run_engine: bool,
    /// Milliseconds between the scheduler's passes over due schedules.
    #[arg(
        long,
        env = "FLOWPILOT_SCHEDULER_INTERVAL_MS",
        default_value_t = 1000,
        global = true
    )]
    pub scheduler_interval_ms: u64,
    /// The API's public address: webhook URLs are `<url>/hooks/<token>`.
    #[arg(
        long,
        env = "FLOWPILOT_PUBLIC_URL",
        default_value = "http://localhost:8000",
        global = true
    )]
    pub public_url: String,
    /// Largest webhook request body in bytes (bodies are also capped by
    /// FLOWPILOT_MAX_BODY_BYTES).
    #[arg(
        long,
        env = "FLOWPILOT_WEBHOOK_MAX_BODY_BYTES",
        default_value_t = 256 * 1024,
        global = true
    )]
    pub webhook_max_body_bytes: usize,
    /// Milliseconds between re-checks of the executions streamed on this
    /// instance, which refill streams the bus left behind.
    #[arg(
        long,
        env = "FLOWPILOT_STREAM_RECHECK_MS",
        default_value_t = 3000,
        global = true
    )]
    pub stream_recheck_ms: u64,
    /// Events an organization stream reads from the log at most to catch
    /// up exactly (after a resume, a lag or a bus reconnect); past it, it
    /// sends a `StreamResync` instead.
    #[arg(
        long,
        env = "FLOWPILOT_STREAM_REPLAY_LIMIT",
        default_value_t = 10_000,
        global = true
    )]
    pub stream_replay_limit: u64,
    /// Seconds a WebSocket client has to send `connection_init`.
    #[arg(
        long,
        env = "FLOWPILOT_WS_INIT_TIMEOUT_SECS",
        default_value_t = 10,
        global = true
    )]
    pub ws_init_timeout_secs: u64,
    /// Failed sign-ins of one account within the lockout window that lock it.
    #[arg(
        long,
        env = "FLOWPILOT_LOCKOUT_THRESHOLD",
        default_value_t = 5,
        global = true
    )]
    pub lockout_threshold: u32,
    /// Seconds within which failed sign-ins count towards a lockout.
    #[arg(
        long,
        env = "FLOWPILOT_LOCKOUT_WINDOW_SECS",
        default_value_t = 900,
        global = true
    )]
    pub lockout_window_secs: u64,
    /// Seconds a locked account stays locked.
    #[arg(
        long,
        env = "FLOWPILOT_LOCKOUT_SECS",
        default_value_t = 900,
        global = true
    )]
    pub lockout_secs: u64,
    /// Seconds in one rate-limit window.
    #[arg(
        long,
        env = "FLOWPILOT_RATE_LIMIT_WINDOW_SECS",
        default_value_t = 60,
        global = true
    )]
    pub rate_limit_window_secs: u64,
    /// Attempts of one limited action (sign-in, registration, password reset,
    /// verification mail, MFA code) one client IP may make per window (0: no
    /// limit).
    #[arg(
        long,
        env = "FLOWPILOT_RATE_LIMIT_PER_IP",
        default_value_t = 30,
        global = true
    )]
    pub rate_limit_per_ip: u64,
    /// Attempts of one limited action for one email address per window
    /// (0: no limit).
    #[arg(
        long,
        env = "FLOWPILOT_RATE_LIMIT_PER_EMAIL",
        default_value_t = 10,
        global = true
    )]
    pub rate_limit_per_email: u64,
    /// SMTP server for account mail, as `smtps://user:password@host:465` or
    /// `smtp://host:587?tls=required`; unset, mail is written to the log.
    #[arg(
        long,
        env = "FLOWPILOT_SMTP_URL",
        global = true,
        hide_env_values = true
    )]
    pub smtp_url: Option<String>,
    /// The sender of account mail.
    #[arg(
        long,
        env = "FLOWPILOT_MAIL_FROM",
        default_value = "FlowPilot <noreply@flowpilot.local>",
        global = true
    )]
    pub mail_from: String,
    /// The web app's address: links in account mail (verify the email,
    /// reset the password) point to `<url>/verify-email?token=…` and
    /// `<url>/reset-password?token=…` there.
    #[arg(
        long,
        env = "FLOWPILOT_APP_URL",
        default_value = "http://localhost:8080",
        global = true
    )]
    pub app_url: String,
    /// Seconds after a refresh token's rotation during which presenting it
    /// again issues another pair (two tabs refreshing together) instead of
    /// revoking the session as a reuse.
    #[arg(
        long,
        env = "FLOWPILOT_REFRESH_REUSE_GRACE_SECS",
        default_value_t = 10,
        global = true
    )]
    pub refresh_reuse_grace_secs: u64,
    /// Addresses HTTP steps may reach besides public ones: `false` (none),
    /// `true` (all), or comma-separated addresses and CIDR networks.
    #[arg(
        long,
        env = "FLOWPILOT_HTTP_ALLOW_PRIVATE",
        default_value = "false",
        value_parser = PrivateAccess::parse,
        global = true
    )]
    pub http_allow_private: PrivateAccess,
    /// Milliseconds an HTTP step's request may take when the step sets no
    /// `timeoutMs`.
    #[arg(
        long,
        env = "FLOWPILOT_HTTP_TIMEOUT_MS",
        default_value_t = 30_000,
        global = true
    )]
    pub http_timeout_ms: u64,
    /// Most bytes of a response body an HTTP step records.
    #[arg(
        long,
        env = "FLOWPILOT_HTTP_MAX_RESPONSE_BYTES",
        default_value_t = 1024 * 1024,
        global = true
    )]
    pub http_max_response_bytes: usize,
    /// Comma-separated origins allowed to call the API from a browser.
    #[arg(
        long,
        env = "FLOWPILOT_CORS_ORIGINS",
        value_delimiter = ',',
        global = true
    )]
    pub cors_origins: Vec<String>,
    /// Comma-separated request headers browsers may send cross-origin.
    #[arg(
        long,
        env = "FLOWPILOT_CORS_ALLOW_HEADERS",
        value_delimiter = ',',
        default_value = DEFAULT_CORS_ALLOW_HEADERS,
        global = true
    )]
    pub cors_allow_headers: Vec<String>,
    /// Bounds on GraphQL documents and responses.
    #[command(flatten)]
    pub documents: DocumentLimits,
    /// Bounds on templates, step results and executions.
    #[command(flatten)]
    pub steps: StepLimits,
    /// Bounds on password hashing.
    #[command(flatten)]
    pub hashing: HashingLimits,
}

impl Settings {
    /// How long a lease lasts between renewals.
    pub fn lease_duration(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.lease_secs)
    }

    /// The longest wait a worker holds an execution for.
    pub fn park_after(&self) -> chrono::Duration {
        span(std::time::Duration::from_millis(self.park_after_ms))
    }

    /// The span within which failed sign-ins count towards a lockout.
    pub fn lockout_window(&self) -> chrono::Duration {
        span(std::time::Duration::from_secs(self.lockout_window_secs))
    }

    /// How long a lockout lasts.
    pub fn lockout_duration(&self) -> chrono::Duration {
        span(std::time::Duration::from_secs(self.lockout_secs))
    }

    /// How long a rotated refresh token may still be presented.
    pub fn refresh_reuse_grace(&self) -> chrono::Duration {
        span(std::time::Duration::from_secs(
            self.refresh_reuse_grace_secs,
        ))
    }

    /// How long a stopping worker lets steps in flight finish.
    pub fn shutdown_grace(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.shutdown_grace_ms)
    }

    /// How often the scheduler looks for due schedules.
    pub fn scheduler_interval(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.scheduler_interval_ms)
    }

    /// How often the reaper looks for expired leases.
    pub fn reaper_interval(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.reaper_interval_ms)
    }

    /// How long an idle worker waits between looks for work.
    pub fn poll_interval(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.poll_interval_ms)
    }
}

/// A setting's duration as a span of time, capped at the longest one
/// chrono represents.
fn span(duration: std::time::Duration) -> chrono::Duration {
    chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::MAX)
}

/// Which database the URL names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DatabaseKind {
    /// An SQLite file (or `None` for an in-memory database).
    Sqlite {
        path: Option<PathBuf>,
    },
    Postgres,
}

/// Validated configuration: everything here has been checked. It holds
/// secrets, so it has no `Debug`.
#[derive(Clone)]
pub struct Config {
    /// The settings as given, after validation.
    pub settings: Settings,
    /// Which database `settings.database_url` names.
    pub database: DatabaseKind,
    /// The HMAC key for access tokens (given or generated).
    pub jwt_secret: String,
    /// Key material for secrets encrypted at rest (given or generated).
    pub encryption_key: String,
}

impl Config {
    /// Checks the settings and fills in the embedded default's secrets,
    /// generating and storing them on first start.
    pub fn from_settings(settings: Settings) -> anyhow::Result<Self> {
        let database = parse_database_url(&settings.database_url)?;
        if let Some(url) = &settings.redis_url {
            redis::Client::open(url.as_str())
                .map_err(|e| anyhow::anyhow!("REDIS_URL is not a valid Redis URL: {e}"))?;
        }
        check_settings(&settings)?;
        let (jwt_secret, encryption_key) = match (
            &database,
            &settings.jwt_secret,
            &settings.encryption_key,
        ) {
            (_, Some(jwt), Some(key)) => (jwt.clone(), key.clone()),
            (DatabaseKind::Postgres, jwt, _) => {
                let missing = if jwt.is_none() {
                    "FLOWPILOT_JWT_SECRET"
                } else {
                    "FLOWPILOT_ENCRYPTION_KEY"
                };
                bail!(
                    "{missing} is required with PostgreSQL (any string of at least {MIN_SECRET_LEN} characters)"
                );
            }
            (DatabaseKind::Sqlite { path }, jwt, key) => {
                let stored = match path {
                    Some(db_path) => {
                        load_or_create_secret_file(db_path, &secret_file_beside(db_path))?
                    }
                    None => StoredSecrets::generate(),
                };
                (
                    jwt.clone().unwrap_or(stored.jwt_secret),
                    key.clone().unwrap_or(stored.encryption_key),
                )
            }
        };
        check_secret("FLOWPILOT_JWT_SECRET", &jwt_secret)?;
        check_secret("FLOWPILOT_ENCRYPTION_KEY", &encryption_key)?;
        Ok(Self {
            settings,
            database,
            jwt_secret,
            encryption_key,
        })
    }

    /// Whether the database is PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        self.database == DatabaseKind::Postgres
    }
}

/// Checks the settings that clap's types alone cannot.
fn check_settings(settings: &Settings) -> anyhow::Result<()> {
    for (name, value) in [
        ("FLOWPILOT_MAX_BATCH_SIZE", settings.max_batch_size),
        ("FLOWPILOT_MAX_QUERY_DEPTH", settings.max_query_depth),
        (
            "FLOWPILOT_MAX_QUERY_COMPLEXITY",
            settings.max_query_complexity,
        ),
        ("FLOWPILOT_MAX_BODY_BYTES", settings.max_body_bytes),
        (
            "FLOWPILOT_DB_MAX_CONNECTIONS",
            settings.db_max_connections as usize,
        ),
        (
            "FLOWPILOT_REQUEST_TIMEOUT_SECS",
            settings.request_timeout_secs as usize,
        ),
        (
            "FLOWPILOT_POLL_INTERVAL_MS",
            settings.poll_interval_ms as usize,
        ),
        (
            "FLOWPILOT_REAPER_INTERVAL_MS",
            settings.reaper_interval_ms as usize,
        ),
        (
            "FLOWPILOT_STREAM_RECHECK_MS",
            settings.stream_recheck_ms as usize,
        ),
        (
            "FLOWPILOT_STREAM_REPLAY_LIMIT",
            settings.stream_replay_limit as usize,
        ),
        (
            "FLOWPILOT_SCHEDULER_INTERVAL_MS",
            settings.scheduler_interval_ms as usize,
        ),
        (
            "FLOWPILOT_WEBHOOK_MAX_BODY_BYTES",
            settings.webhook_max_body_bytes,
        ),
        (
            "FLOWPILOT_MAX_QUERY_TOKENS",
            settings.documents.max_query_tokens,
        ),
        (
            "FLOWPILOT_MAX_QUERY_FIELDS",
            settings.documents.max_query_fields,
        ),
        (
            "FLOWPILOT_MAX_QUERY_NESTING",
            settings.documents.max_query_nesting,
        ),
        (
            "FLOWPILOT_MAX_RESPONSE_ERRORS",
            settings.documents.max_response_errors,
        ),
        (
            "FLOWPILOT_MAX_RESPONSE_BYTES",
            settings.documents.max_response_bytes,
        ),
        (
            "FLOWPILOT_TEMPLATE_FUEL",
            settings.steps.template_fuel as usize,
        ),
        (
            "FLOWPILOT_MAX_STEP_OUTPUT_BYTES",
            settings.steps.max_step_output_bytes,
        ),
        (
            "FLOWPILOT_MAX_PARALLEL_STEPS",
            settings.steps.max_parallel_steps,
        ),
        (
            "FLOWPILOT_MAX_CLAIMS_WITHOUT_PROGRESS",
            settings.steps.max_claims_without_progress as usize,
        ),
    ] {
        if value == 0 {
            bail!("{name} must be at least 1");
        }
    }
    if settings.steps.template_memory_bytes < 16 * 1024 * 1024 {
        bail!("FLOWPILOT_TEMPLATE_MEMORY_BYTES must be at least 16777216 (16 MiB)");
    }
    if settings.lease_secs < 3 {
        bail!("FLOWPILOT_LEASE_SECS must be at least 3 (the lease is renewed every third of it)");
    }
    tracing_subscriber::EnvFilter::try_new(&settings.log)
        .map_err(|e| anyhow::anyhow!("FLOWPILOT_LOG is not a valid log filter: {e}"))?;
    let public_url = &settings.public_url;
    if !((public_url.starts_with("http://") || public_url.starts_with("https://"))
        && !public_url.ends_with('/')
        && reqwest::Url::parse(public_url).is_ok())
    {
        bail!(
            "FLOWPILOT_PUBLIC_URL {public_url:?} is not an address like https://api.example.com (no trailing slash)"
        );
    }
    for name in &settings.cors_allow_headers {
        if axum::http::HeaderName::from_bytes(name.trim().as_bytes()).is_err() {
            bail!("FLOWPILOT_CORS_ALLOW_HEADERS entry {name:?} is not a header name");
        }
    }
    for origin in &settings.cors_origins {
        let well_formed = (origin.starts_with("http://") || origin.starts_with("https://"))
            && axum::http::HeaderValue::from_str(origin).is_ok()
            && !origin.ends_with('/');
        if !well_formed {
            bail!(
                "FLOWPILOT_CORS_ORIGINS entry {origin:?} is not an origin like https://app.example.com"
            );
        }
    }
    Ok(())
}

fn check_secret(name: &str, value: &str) -> anyhow::Result<()> {
    if value.chars().count() < MIN_SECRET_LEN {
        bail!("{name} must be at least {MIN_SECRET_LEN} characters long");
    }
    Ok(())
}

/// Classifies `DATABASE_URL`, refusing anything FlowPilot cannot use.
pub fn parse_database_url(url: &str) -> anyhow::Result<DatabaseKind> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(DatabaseKind::Postgres);
    }
    if let Some(rest) = url.strip_prefix("sqlite:") {
        let rest = rest.strip_prefix("//").unwrap_or(rest);
        let path = rest.split('?').next().unwrap_or_default();
        if path.is_empty() || path == ":memory:" {
            return Ok(DatabaseKind::Sqlite { path: None });
        }
        return Ok(DatabaseKind::Sqlite {
            path: Some(PathBuf::from(path)),
        });
    }
    bail!(
        "DATABASE_URL must start with sqlite:// or postgres:// (got {})",
        redact_url(url)
    )
}

/// The URL with any password replaced, fit for logs and error messages.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    // The last `@` ends the user info: a password may contain `@` itself.
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            if userinfo.contains(':') {
                format!("{scheme}://{user}:***@{host}")
            } else {
                format!("{scheme}://{user}@{host}")
            }
        }
        None => url.to_owned(),
    }
}

/// The secret file's path for a given database file.
pub fn secret_file_beside(db_path: &Path) -> PathBuf {
    match db_path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join(SECRET_FILE_NAME),
        _ => PathBuf::from(SECRET_FILE_NAME),
    }
}

struct StoredSecrets {
    jwt_secret: String,
    encryption_key: String,
}

impl StoredSecrets {
    fn generate() -> Self {
        Self {
            jwt_secret: random_secret(),
            encryption_key: random_secret(),
        }
    }

    fn parse(text: &str) -> Option<Self> {
        let mut jwt_secret = None;
        let mut encryption_key = None;
        for line in text.lines() {
            match line.split_once('=') {
                Some(("FLOWPILOT_JWT_SECRET", v)) => jwt_secret = Some(v.trim().to_owned()),
                Some(("FLOWPILOT_ENCRYPTION_KEY", v)) => encryption_key = Some(v.trim().to_owned()),
                _ => {}
            }
        }
        Some(Self {
            jwt_secret: jwt_secret?,
            encryption_key: encryption_key?,
        })
    }
}

fn random_secret() -> String {
    let mut bytes = [0u8; 48];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Reads the embedded default's secrets, creating the file (mode 0600) with
/// fresh ones on first start. A database without its secret file is
/// refused: new secrets would silently invalidate every token and make
/// encrypted secrets unreadable.
fn load_or_create_secret_file(db_path: &Path, path: &Path) -> anyhow::Result<StoredSecrets> {
    let read = |path: &Path| -> anyhow::Result<StoredSecrets> {
        let text =
            fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        StoredSecrets::parse(&text).with_context(|| {
            format!(
                "{} is missing FLOWPILOT_JWT_SECRET or FLOWPILOT_ENCRYPTION_KEY",
                path.display()
            )
        })
    };
    if path.exists() {
        return read(path);
    }
    if db_path.exists() {
        bail!(
            "{} exists but {} is missing: restore it, or set FLOWPILOT_JWT_SECRET and FLOWPILOT_ENCRYPTION_KEY",
            db_path.display(),
            path.display()
        );
    }
    let secrets = StoredSecrets::generate();
    match write_secret_file(path, &secrets) {
        Ok(()) => {
            tracing::info!(path = %path.display(), "generated secrets for the embedded database");
            Ok(secrets)
        }
        // Another process starting at the same moment wrote it first.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read(path),
        Err(e) => Err(e).with_context(|| format!("cannot write {}", path.display())),
    }
}

fn write_secret_file(path: &Path, secrets: &StoredSecrets) -> std::io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    writeln!(
        file,
        "# FlowPilot secrets for the database beside this file. Keep private."
    )?;
    writeln!(file, "FLOWPILOT_JWT_SECRET={}", secrets.jwt_secret)?;
    writeln!(file, "FLOWPILOT_ENCRYPTION_KEY={}", secrets.encryption_key)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_are_classified_by_scheme() {
        assert_eq!(
            parse_database_url("postgres://u@h/db").unwrap(),
            DatabaseKind::Postgres
        );
        assert_eq!(
            parse_database_url("sqlite://data/fp.db?mode=rwc").unwrap(),
            DatabaseKind::Sqlite {
                path: Some(PathBuf::from("data/fp.db"))
            }
        );
        assert_eq!(
            parse_database_url("sqlite::memory:").unwrap(),
            DatabaseKind::Sqlite { path: None }
        );
        assert!(parse_database_url("mysql://u@h/db").is_err());
    }

    #[test]
    fn redacted_urls_hide_the_password_only() {
        assert_eq!(
            redact_url("postgres://u:pw@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("redis://h:6379"), "redis://h:6379");
    }

    #[test]
    fn the_secret_file_sits_beside_the_database() {
        assert_eq!(
            secret_file_beside(Path::new("/var/lib/fp/fp.db")),
            PathBuf::from("/var/lib/fp/flowpilot.secret")
        );
        assert_eq!(
            secret_file_beside(Path::new("fp.db")),
            PathBuf::from("flowpilot.secret")
        );
    }
}
