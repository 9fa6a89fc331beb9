//! `flowpilot bench`: how fast the engine drains work, measured on a real
//! database through the same services and workers the server runs.
//!
//! On the embedded default (a fresh SQLite file in the temporary
//! directory) and, given `--postgres URL`, on PostgreSQL, it reports:
//!
//! - **latency**: queued → started of one-step executions run one at a
//!   time on idle workers (p50, p99), and the SQL statements each cost,
//!   from the request that queues it to its end;
//! - **drain**: one-step executions queued ahead, then drained by the
//!   workers, per second, over at least `--seconds` of steady work (a short
//!   calibration drain sizes the backlog);
//! - **20 steps**: linear 20-step executions drained per second;
//! - **requests**: `{ __typename }` per second through the whole HTTP
//!   stack (every middleware, the request context, the extensions) and
//!   through a bare async-graphql router over the same schema, in the same
//!   process, from `--connections` keep-alive connections of a client in
//!   the process too: what the stack costs beside the library;
//! - **the dashboard**: an organization's 50 workflows with their newest
//!   executions, written naturally and with the field built for it;
//! - **subscriptions**: what an idle subscription costs and how long an
//!   event takes to reach 1,000 and 10,000 subscribers, on one instance
//!   and, with `--redis`, across two (see [`subscriptions`]).
//!
//! Its workers claim every queued execution of the database they run on,
//! so it refuses a database that holds any organization: give it an empty
//! one. What it writes (a user, an organization, its workflows and
//! executions) is deleted at the end, and the SQLite file is removed.
//! Figures are printed as a Markdown table; nothing here asserts a speed.

use std::time::{Duration, Instant};

use anyhow::Context;
use entity::{execution, organization, user};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::json;
use uuid::Uuid;

use crate::auth::service::{self as accounts, DeviceInfo, Registration};
use crate::auth::{DisplayName, Email, Password};
use crate::clock::Clock;
use crate::config::{Config, Settings};
use crate::engine::Engine;
use crate::error::{AppError, AppResult};
use crate::events::{BusMessage, BusSignal, Topic};
use crate::executions::service::{self as executions, Priority, RunRequest};
use crate::orgs::deletion;
use crate::orgs::principal::Principal;
use crate::orgs::service::{self as orgs, OrganizationName};
use crate::state::AppState;
use crate::workflows::catalog::Tags;
use crate::workflows::definition::{StepDefinition, StepKind, WorkflowDefinition};
use crate::workflows::service::{self as workflows, NewWorkflow, WorkflowName};

mod subscriptions;

pub use subscriptions::{SubscriptionFigures, subscribers};

/// What to measure.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Seconds of steady draining to measure, at least.
    pub seconds: u64,
    /// Workers draining.
    pub workers: usize,
    /// One-step executions run one at a time for the latency figures.
    pub samples: usize,
    /// A PostgreSQL database to measure too.
    pub postgres: Option<String>,
    /// Whether to measure the embedded database.
    pub embedded: bool,
    /// Seconds each router is loaded for the request figures.
    pub request_seconds: u64,
    /// Keep-alive connections the request figures are measured over.
    pub connections: usize,
    /// Subscriber counts the subscription figures are measured at.
    pub subscribers: Vec<usize>,
    /// Redis for the PostgreSQL backend (and a second instance).
    pub redis: Option<String>,
}

/// The figures of one backend.
#[derive(Clone, Debug)]
pub struct EngineFigures {
    pub backend: &'static str,
    pub queued_to_started_p50_ms: f64,
    pub queued_to_started_p99_ms: f64,
    pub statements_per_execution: f64,
    /// Of those, the statements of the request that queues it.
    pub statements_to_queue: f64,
    pub drained: u64,
    pub drain_seconds: f64,
    pub one_step_per_second: f64,
    pub twenty_step_per_second: f64,
    pub requests: RequestFigures,
    pub subscriptions: Vec<SubscriptionFigures>,
}

/// Workflows the dashboard figures list (beside the bench's own two).
const DASHBOARD_WORKFLOWS: usize = 50;
/// Executions queued for each of them.
const DASHBOARD_RUNS: usize = 10;

/// `{ __typename }` per second through the full stack and a bare router,
/// and the dashboard query.
#[derive(Clone, Debug)]
pub struct RequestFigures {
    pub full_stack_per_second: f64,
    pub bare_per_second: f64,
    /// The dashboard written naturally: `executions(first: 5)` under each
    /// workflow.
    pub dashboard_natural: LoadFigures,
    /// The same with `recentExecutions(limit: 5)`.
    pub dashboard_recent: LoadFigures,
}

/// One request under load through the full stack.
#[derive(Clone, Debug)]
pub struct LoadFigures {
    pub per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Statements one such request costs.
    pub statements: u64,
}

/// Runs the engine section on each backend and prints the table.
pub async fn run(settings: Settings, options: BenchOptions) -> anyhow::Result<Vec<EngineFigures>> {
    let scratch = std::env::temp_dir().join(format!("flowpilot-bench-{}.db", Uuid::now_v7()));
    let mut targets = Vec::new();
    if options.embedded {
        targets.push((
            "SQLite (embedded)",
            format!("sqlite://{}?mode=rwc", scratch.display()),
            None,
        ));
    }
    if let Some(url) = &options.postgres {
        let backend = if options.redis.is_some() {
            "PostgreSQL + Redis"
        } else {
            "PostgreSQL"
        };
        targets.push((backend, url.clone(), options.redis.clone()));
    }
    let _scratch = ScratchFile(scratch);
    let mut figures = Vec::new();
    for (backend, url, redis) in targets {
        let mut settings = settings.clone();
        settings.database_url = url;
        settings.redis_url = redis;
        settings.workers = options.workers;
        settings.run_engine = true;
        if settings.jwt_secret.is_none() || settings.encryption_key.is_none() {
            settings.jwt_secret = Some(format!("bench-{}", Uuid::now_v7().simple()));
            settings.encryption_key = Some(format!("bench-{}", Uuid::now_v7().simple()));
        }
        let config = Config::from_settings(settings)?;
        eprintln!("bench: {backend}");
        let measured = measure(backend, config, &options)
            .await
            .with_context(|| format!("benchmarking on {backend}"))?;
        figures.push(measured);
    }
    println!("{}", table(&figures, &options));
    Ok(figures)
}

/// The embedded database's files, removed however the bench ends.
struct ScratchFile(std::path::PathBuf);

impl Drop for ScratchFile {
    fn drop(&mut self) {
        for suffix in ["", "-shm", "-wal"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.0.display()));
        }
        let _ = std::fs::remove_file(self.0.with_extension("secrets"));
    }
}

/// The bench's organization and workflows on one backend.
struct Bench {
    state: AppState,
    user_id: Uuid,
    /// The owner's access token, for the request figures.
    access_token: String,
    owner: Principal,
    organization_id: Uuid,
    one_step: Uuid,
    twenty_steps: Uuid,
}

async fn measure(
    backend: &'static str,
    config: Config,
    options: &BenchOptions,
) -> anyhow::Result<EngineFigures> {
    let state = AppState::build(config, Clock::system()).await?;
    let others = organization::Entity::find().count(&state.db).await?;
    anyhow::ensure!(
        others == 0,
        "the database holds {others} organizations: the bench's workers would run their executions; give it an empty database"
    );
    let bench = Bench::set_up(state).await.map_err(failed)?;
    let result = bench.measure(backend, options).await;
    let torn_down = bench.tear_down().await;
    let figures = result?;
    torn_down?;
    Ok(figures)
}

impl Bench {
    async fn set_up(state: AppState) -> AppResult<Self> {
        let email = format!("bench-{}@flowpilot.invalid", Uuid::now_v7().simple());
        let registration = Registration {
            email: Email::parse(&email, "email")?,
            password: Password::parse(&format!("{}-Bench!", Uuid::now_v7()), "password")?,
            display_name: DisplayName::parse("Bench", "displayName")?,
        };
        let device = DeviceInfo {
            ip: None,
            user_agent: Some("flowpilot bench".to_owned()),
        };
        let signed_in = accounts::register(&state, registration, device).await?;
        let (user, access_token) = (signed_in.user, signed_in.access_token);
        let organization = orgs::create_organization(
            &state,
            user.id,
            OrganizationName::parse("Bench", "name")?,
            None,
        )
        .await?
        .organization;
        let owner = Principal::User(user.id);
        let one_step = workflow(&state, owner, organization.id, "One step", 1).await?;
        let twenty_steps = workflow(&state, owner, organization.id, "Twenty steps", 20).await?;
        Ok(Self {
            state,
            user_id: user.id,
            access_token,
            owner,
            organization_id: organization.id,
            one_step,
            twenty_steps,
        })
    }

    async fn tear_down(self) -> anyhow::Result<()> {
        deletion::delete_organization(&self.state, self.owner, self.organization_id)
            .await
            .map_err(failed)?;
        user::Entity::delete_by_id(self.user_id)
            .exec(&self.state.db)
            .await?;
        self.state.db.clone().close().await.ok();
        Ok(())
    }

    async fn measure(
        &self,
        backend: &'static str,
        options: &BenchOptions,
    ) -> anyhow::Result<EngineFigures> {
        // First, while the process has allocated little: the subscriptions'
        // figures include its resident memory.
        let followed = subscriptions::Followed {
            state: self.state.clone(),
            owner: self.owner,
            organization_id: self.organization_id,
            access_token: self.access_token.clone(),
        };
        let subscriptions = subscriptions::measure(&followed, &options.subscribers).await?;
        let (p50, p99, statements, to_queue) = self.latency(options.samples).await?;
        eprintln!(
            "bench:   latency p50 {p50:.2} ms, p99 {p99:.2} ms, {statements:.1} statements ({to_queue:.1} to queue)"
        );
        // A short drain sizes the backlog for the timed one.
        let (calibration, calibration_secs) = self.drain(self.one_step, 300).await?;
        let rate = calibration as f64 / calibration_secs;
        // Sized past the goal: a drain speeds up once the queue is shorter.
        let backlog = ((rate * options.seconds as f64 * 1.5) as u64).max(300);
        eprintln!("bench:   calibrated at {rate:.0}/s; draining {backlog} queued ahead");
        let (drained, drain_seconds) = self.drain(self.one_step, backlog).await?;
        let one_step_per_second = drained as f64 / drain_seconds;
        eprintln!("bench:   drained {drained} in {drain_seconds:.1} s: {one_step_per_second:.0}/s");
        let (long, long_seconds) = self.drain(self.twenty_steps, 200).await?;
        let twenty_step_per_second = long as f64 / long_seconds;
        eprintln!("bench:   20 steps: {twenty_step_per_second:.0}/s");
        let dashboard = self.seed_dashboard().await?;
        let requests = requests::measure(&self.state, options, &dashboard).await?;
        eprintln!(
            "bench:   {{ __typename }}: {:.0}/s through the stack, {:.0}/s bare",
            requests.full_stack_per_second, requests.bare_per_second
        );
        for (name, figures) in [
            ("natural", &requests.dashboard_natural),
            ("recentExecutions", &requests.dashboard_recent),
        ] {
            eprintln!(
                "bench:   dashboard ({name}): {:.0}/s, p50 {:.1} ms, p99 {:.1} ms, {} statements",
                figures.per_second, figures.p50_ms, figures.p99_ms, figures.statements
            );
        }
        Ok(EngineFigures {
            backend,
            queued_to_started_p50_ms: p50,
            queued_to_started_p99_ms: p99,
            statements_per_execution: statements,
            statements_to_queue: to_queue,
            drained,
            drain_seconds,
            one_step_per_second,
            twenty_step_per_second,
            requests,
            subscriptions,
        })
    }

    /// The dashboard's data: [`DASHBOARD_WORKFLOWS`] more workflows of the
    /// organization, each with [`DASHBOARD_RUNS`] queued executions.
    async fn seed_dashboard(&self) -> anyhow::Result<requests::Dashboard> {
        for n in 0..DASHBOARD_WORKFLOWS {
            let name = format!("Dashboard {n}");
            let id = workflow(&self.state, self.owner, self.organization_id, &name, 1)
                .await
                .map_err(failed)?;
            for _ in 0..DASHBOARD_RUNS {
                self.run(id).await?;
            }
        }
        Ok(requests::Dashboard {
            organization_id: self.organization_id,
            access_token: self.access_token.clone(),
        })
    }

    /// Runs `samples` one-step executions one at a time on idle workers:
    /// queued → started p50 and p99 in ms, and statements per execution,
    /// all told and to queue it.
    async fn latency(&self, samples: usize) -> anyhow::Result<(f64, f64, f64, f64)> {
        let engine = Engine::start(&self.state).await;
        let mut events = self
            .state
            .bus
            .subscribe(Topic::Organization(self.organization_id))
            .await;
        // Workers settle into waiting before the first sample.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut waits = Vec::with_capacity(samples);
        let before = self.state.sql_statements.get();
        let mut to_queue = 0;
        for _ in 0..samples {
            let queuing = self.state.sql_statements.get();
            let id = self.run(self.one_step).await?;
            to_queue += self.state.sql_statements.get() - queuing;
            let started = loop {
                match tokio::time::timeout(Duration::from_secs(30), events.recv()).await {
                    Ok(Some(BusSignal::Message(BusMessage::ExecutionEvent(event))))
                        if event.execution.id == id && event.is_terminal() =>
                    {
                        break event.execution;
                    }
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => anyhow::bail!("execution {id} did not finish in 30 s"),
                }
            };
            let started_at = started.started_at.context("a finished run has started")?;
            waits.push((started_at - started.queued_at).as_seconds_f64() * 1000.0);
        }
        let statements = (self.state.sql_statements.get() - before) as f64 / samples as f64;
        engine.shutdown().await;
        waits.sort_by(f64::total_cmp);
        Ok((
            percentile(&waits, 0.50),
            percentile(&waits, 0.99),
            statements,
            to_queue as f64 / samples as f64,
        ))
    }

    /// Queues `count` executions of `workflow_id` with the workers stopped,
    /// then starts them and waits until all have finished: how many ran, in
    /// how many seconds.
    async fn drain(&self, workflow_id: Uuid, count: u64) -> anyhow::Result<(u64, f64)> {
        const QUEUERS: u64 = 4;
        let mut queuers = tokio::task::JoinSet::new();
        for n in 0..QUEUERS {
            let share = count / QUEUERS + u64::from(n < count % QUEUERS);
            let bench = self.handle();
            queuers.spawn(async move {
                for _ in 0..share {
                    bench.run(workflow_id).await?;
                }
                anyhow::Ok(())
            });
        }
        while let Some(queued) = queuers.join_next().await {
            queued??;
        }
        // Statistics as the database's own maintenance would have them
        // within a minute (PostgreSQL's autovacuum): without them a planner
        // sizes the backlog from an empty table and sorts all of it.
        self.state.db.execute_unprepared("ANALYZE").await?;
        // Finishes are counted from the organization's events as a dashboard
        // would see them, so the count costs the database nothing; should
        // the subscription fall behind, from the table instead.
        let before = self.finished().await?;
        let mut events = self
            .state
            .bus
            .subscribe(Topic::Organization(self.organization_id))
            .await;
        let mut counted = Some(0);
        let started = Instant::now();
        let engine = Engine::start(&self.state).await;
        loop {
            let finished = if let Some(n) = counted {
                match tokio::time::timeout(Duration::from_millis(100), events.recv()).await {
                    Ok(Some(BusSignal::Message(BusMessage::ExecutionEvent(event)))) => {
                        let n = n + u64::from(event.is_terminal());
                        counted = Some(n);
                        n
                    }
                    Ok(Some(BusSignal::Message(_))) | Err(_) => n,
                    Ok(_) => {
                        tracing::warn!("the bench fell behind its events; counting from the table");
                        counted = None;
                        continue;
                    }
                }
            } else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                self.finished().await? - before
            };
            if finished >= count {
                break;
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(3600),
                "the drain took more than an hour"
            );
        }
        let seconds = started.elapsed().as_secs_f64();
        engine.shutdown().await;
        Ok((count, seconds))
    }

    /// What a queuing task needs of the bench.
    fn handle(&self) -> Queuer {
        Queuer {
            state: self.state.clone(),
            owner: self.owner,
        }
    }

    async fn run(&self, workflow_id: Uuid) -> anyhow::Result<Uuid> {
        self.handle().run(workflow_id).await
    }

    /// Executions of the bench's organization that have finished.
    async fn finished(&self) -> anyhow::Result<u64> {
        Ok(execution::Entity::find()
            .filter(execution::Column::OrganizationId.eq(self.organization_id))
            .filter(execution::Column::FinishedAt.is_not_null())
            .count(&self.state.db)
            .await?)
    }
}

/// Queues executions as the API does.
struct Queuer {
    state: AppState,
    owner: Principal,
}

impl Queuer {
    async fn run(&self, workflow_id: Uuid) -> anyhow::Result<Uuid> {
        let request = RunRequest {
            workflow_id,
            input: json!({}),
            priority: Priority::Normal,
            idempotency_key: None,
            version_id: None,
        };
        let queued = executions::run_workflow(&self.state, self.owner, request)
            .await
            .map_err(failed)?;
        Ok(queued.execution.id)
    }
}

/// A workflow of `steps` TRANSFORM steps in a line.
async fn workflow(
    state: &AppState,
    owner: Principal,
    organization_id: Uuid,
    name: &str,
    steps: usize,
) -> AppResult<Uuid> {
    let line = (StepKind::Transform, |n| json!({ "output": n }));
    line_workflow(state, owner, organization_id, name, steps, line).await
}

/// A workflow of `steps` steps of one kind in a line, each configured by
/// `config` from its position.
async fn line_workflow(
    state: &AppState,
    owner: Principal,
    organization_id: Uuid,
    name: &str,
    steps: usize,
    (kind, config): (StepKind, impl Fn(usize) -> serde_json::Value),
) -> AppResult<Uuid> {
    let steps = (0..steps)
        .map(|n| StepDefinition {
            id: format!("s{n}"),
            kind,
            needs: (n > 0).then(|| format!("s{}", n - 1)).into_iter().collect(),
            config: config(n),
            retry: None,
            timeout_ms: None,
        })
        .collect();
    let new = NewWorkflow {
        organization_id,
        name: WorkflowName::parse(name, "name")?,
        description: None,
        definition: WorkflowDefinition::parse(steps, None, "definition")?,
        max_concurrency: None,
        tags: Tags::default(),
    };
    Ok(workflows::create_workflow(state, owner, new)
        .await?
        .workflow
        .id)
}

/// An error of the services, for the bench's report.
fn failed(err: AppError) -> anyhow::Error {
    anyhow::anyhow!("{}: {}", err.code(), err.public_message())
}

/// The value below which a `share` of sorted `values` fall.
fn percentile(sorted: &[f64], share: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((sorted.len() as f64 * share).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// The figures as a Markdown table.
fn table(figures: &[EngineFigures], options: &BenchOptions) -> String {
    let mut out = format!(
        "Engine, {} workers; latency over {} one-step runs on idle workers\n\n\
         | backend | queued → started p50 | p99 | statements per one-step execution (to queue it) | one-step drained | one-step executions/s | 20-step executions/s |\n\
         |---|---|---|---|---|---|---|\n",
        options.workers, options.samples
    );
    for f in figures {
        out.push_str(&format!(
            "| {} | {:.2} ms | {:.2} ms | {:.1} ({:.1}) | {} in {:.1} s | {:.0} | {:.0} |\n",
            f.backend,
            f.queued_to_started_p50_ms,
            f.queued_to_started_p99_ms,
            f.statements_per_execution,
            f.statements_to_queue,
            f.drained,
            f.drain_seconds,
            f.one_step_per_second,
            f.twenty_step_per_second,
        ));
    }
    out.push_str(&format!(
        "\nRequests: `{{ __typename }}` over {} keep-alive connections, {} s each\n\n\
         | backend | through the full stack | bare async-graphql router | ratio |\n\
         |---|---|---|---|\n",
        options.connections, options.request_seconds
    ));
    for f in figures {
        let r = &f.requests;
        out.push_str(&format!(
            "| {} | {:.0}/s | {:.0}/s | {:.2}× |\n",
            f.backend,
            r.full_stack_per_second,
            r.bare_per_second,
            r.full_stack_per_second / r.bare_per_second,
        ));
    }
    out.push_str(&format!(
        "\nDashboard: the organization's {DASHBOARD_WORKFLOWS} newest workflows, each with its active version and 5 newest executions ({DASHBOARD_RUNS} each), over {} connections, {} s each\n\n\
         | backend | query | requests/s | p50 | p99 | statements per request |\n\
         |---|---|---|---|---|---|\n",
        options.connections, options.request_seconds
    ));
    for f in figures {
        for (query, d) in [
            ("`executions(first: 5)`", &f.requests.dashboard_natural),
            ("`recentExecutions(limit: 5)`", &f.requests.dashboard_recent),
        ] {
            out.push_str(&format!(
                "| {} | {query} | {:.0} | {:.1} ms | {:.1} ms | {} |\n",
                f.backend, d.per_second, d.p50_ms, d.p99_ms, d.statements
            ));
        }
    }
    out.push_str(&format!(
        "\nSubscriptions: one WebSocket connection per subscriber (in another process), each following one execution of {} DELAY steps; per idle subscriber, the heap this process holds and its resident memory's growth (only the first measurement of a process shows it); `occurredAt` (stamped where the event commits) → arrival at the client, over all the events of the run\n\n\
         | backend | subscribers | instances | heap per idle subscription | resident | p50 | p99 | events received |\n\
         |---|---|---|---|---|---|---|---|\n",
        subscriptions::STEPS
    ));
    for f in figures {
        for s in &f.subscriptions {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {:.1} KiB | {:.1} ms | {:.1} ms | {} |\n",
                f.backend,
                s.subscribers,
                s.instances,
                subscriptions::kib(s.idle_heap_kib),
                s.idle_rss_kib,
                s.p50_ms,
                s.p99_ms,
                s.deliveries
            ));
        }
    }
    out
}

/// The request figures: one router at a time, loaded by a client in
/// this process.
mod requests {
    use std::net::SocketAddr;
    use std::time::{Duration, Instant};

    use axum::Router;
    use axum::routing::post;
    use serde_json::json;
    use tower::ServiceExt;
    use uuid::Uuid;

    use super::{BenchOptions, DASHBOARD_WORKFLOWS, LoadFigures, RequestFigures, percentile};
    use crate::graphql::{self, AppSchema};
    use crate::http;
    use crate::state::AppState;

    const TYPENAME: &str = r#"{"query":"{ __typename }"}"#;

    /// The dashboard as a client writes it with the connections every list
    /// has.
    const NATURAL: &str = "query Dashboard($id: ID!, $first: Int!) { organization(id: $id) { workflows(first: $first) { nodes { id name activeVersion { number } executions(first: 5) { nodes { id status queuedAt finishedAt } } } } } }";
    /// The same with the field built for it.
    const RECENT: &str = "query Dashboard($id: ID!, $first: Int!) { organization(id: $id) { workflows(first: $first) { nodes { id name activeVersion { number } recentExecutions(limit: 5) { id status queuedAt finishedAt } } } } }";

    /// Who reads the dashboard, and of which organization.
    pub struct Dashboard {
        pub organization_id: Uuid,
        pub access_token: String,
    }

    /// A request: its body, and the token it is sent with.
    struct Load {
        body: String,
        token: Option<String>,
    }

    pub async fn measure(
        state: &AppState,
        options: &BenchOptions,
        dashboard: &Dashboard,
    ) -> anyhow::Result<RequestFigures> {
        let (_stop, shutting_down) = tokio::sync::watch::channel(false);
        let schema = graphql::build_schema(&state.config.settings);
        let full = http::router(state.clone(), schema, shutting_down);
        let bare_schema = graphql::bare_schema();
        let bare = Router::new().route(
            "/graphql",
            post(move |request: axum::Json<async_graphql::Request>| {
                let schema: AppSchema = bare_schema.clone();
                async move { axum::Json(schema.execute(request.0).await) }
            }),
        );
        let typename = || Load {
            body: TYPENAME.to_owned(),
            token: None,
        };
        let full_stack_per_second = load(full.clone(), options, typename()).await?.0;
        let bare_per_second = load(bare, options, typename()).await?.0;
        Ok(RequestFigures {
            full_stack_per_second,
            bare_per_second,
            dashboard_natural: load_dashboard(state, &full, options, dashboard, NATURAL).await?,
            dashboard_recent: load_dashboard(state, &full, options, dashboard, RECENT).await?,
        })
    }

    /// The dashboard `query` through `full`: its statements, then its load.
    async fn load_dashboard(
        state: &AppState,
        full: &Router,
        options: &BenchOptions,
        dashboard: &Dashboard,
        query: &str,
    ) -> anyhow::Result<LoadFigures> {
        let request = || Load {
            body: json!({
                "query": query,
                "variables": { "id": dashboard.organization_id, "first": DASHBOARD_WORKFLOWS },
            })
            .to_string(),
            token: Some(dashboard.access_token.clone()),
        };
        // The second request is counted: the first also records the
        // session's use, which happens at most once a minute.
        once(full, request()).await?;
        let before = state.sql_statements.get();
        once(full, request()).await?;
        let statements = state.sql_statements.get() - before;
        let (per_second, mut latencies) = load(full.clone(), options, request()).await?;
        latencies.sort_by(f64::total_cmp);
        Ok(LoadFigures {
            per_second,
            p50_ms: percentile(&latencies, 0.50),
            p99_ms: percentile(&latencies, 0.99),
            statements,
        })
    }

    /// `request` through `router` once, in process; an error unless it
    /// answered data without errors.
    async fn once(router: &Router, request: Load) -> anyhow::Result<()> {
        let mut builder = axum::http::Request::post("/graphql")
            .header("content-type", "application/json")
            .extension(axum::extract::ConnectInfo(SocketAddr::from((
                [127, 0, 0, 1],
                0,
            ))));
        if let Some(token) = &request.token {
            builder = builder.header("authorization", format!("Bearer {token}"));
        }
        let response = router
            .clone()
            .oneshot(builder.body(axum::body::Body::from(request.body))?)
            .await?;
        let body = axum::body::to_bytes(response.into_body(), usize::MAX).await?;
        let answer: serde_json::Value = serde_json::from_slice(&body)?;
        anyhow::ensure!(
            answer.get("errors").is_none(),
            "the request failed: {answer}"
        );
        Ok(())
    }

    /// Serves `router` on a loopback port and sends `request` to it from
    /// `options.connections` connections for `options.request_seconds`
    /// (after a second of warm-up): requests answered per second, and each
    /// one's time in ms.
    async fn load(
        router: Router,
        options: &BenchOptions,
        request: Load,
    ) -> anyhow::Result<(f64, Vec<f64>)> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/graphql", listener.local_addr()?);
        let server = tokio::spawn(async move {
            axum::serve(
                listener,
                router.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await
        });
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(options.connections)
            .build()?;
        let warm_up = Duration::from_secs(1);
        let started = Instant::now();
        let until = started + warm_up + Duration::from_secs(options.request_seconds);
        let mut clients = tokio::task::JoinSet::new();
        for _ in 0..options.connections {
            let (client, url) = (client.clone(), url.clone());
            let (body, token) = (request.body.clone(), request.token.clone());
            clients.spawn(async move {
                let mut latencies = Vec::new();
                while Instant::now() < until {
                    let sent = Instant::now();
                    let mut post = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(body.clone());
                    if let Some(token) = &token {
                        post = post.bearer_auth(token);
                    }
                    let response = post.send().await?;
                    anyhow::ensure!(
                        response.status().is_success(),
                        "the request answered {}",
                        response.status()
                    );
                    response.bytes().await?;
                    if started.elapsed() >= warm_up {
                        latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
                    }
                }
                anyhow::Ok(latencies)
            });
        }
        let mut latencies = Vec::new();
        while let Some(done) = clients.join_next().await {
            latencies.extend(done??);
        }
        server.abort();
        let per_second = latencies.len() as f64 / options.request_seconds as f64;
        Ok((per_second, latencies))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_percentile_is_the_value_at_its_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 0.50), 50.0);
        assert_eq!(percentile(&values, 0.99), 99.0);
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
        assert!(percentile(&[], 0.5).is_nan());
    }
}
