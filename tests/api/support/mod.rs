//! The test server and its client: `TestApp::spawn().await` gives a running
//! FlowPilot with a database of its own; helpers keep tests short.

pub mod spawned;
pub mod target;
pub mod ws;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use entity::role::Role;
use flowpilot::app::App;
use flowpilot::clock::Clock;
use flowpilot::config::{Config, Settings};
use flowpilot::events::log::ExecutionEventRecord;
use flowpilot::mail::Mail;
use flowpilot::state::AppState;
use migration::{Migrator, MigratorTrait};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, EntityTrait, Statement};
use serde_json::{Value, json};
use tokio::sync::{OnceCell, oneshot};
use tokio::task::JoinHandle;

/// A password every test user shares; long enough for the rules.
pub const PASSWORD: &str = "correct horse battery staple";

/// The PostgreSQL server URL tests use, if any (any database on the server).
pub fn postgres_url() -> Option<String> {
    std::env::var("FLOWPILOT_TEST_DATABASE_URL")
        .ok()
        .filter(|u| u.starts_with("postgres"))
}

/// The Redis URL tests use, if any.
pub fn redis_url() -> Option<String> {
    std::env::var("FLOWPILOT_TEST_REDIS_URL")
        .ok()
        .filter(|u| !u.is_empty())
}

/// Stops a test that needs PostgreSQL and Redis (it is `#[ignore]`d, and
/// `.ci/run` includes it where both are configured) when either is missing.
pub fn require_multi_instance_backends() {
    assert!(
        postgres_url().is_some() && redis_url().is_some(),
        "this test needs FLOWPILOT_TEST_DATABASE_URL and FLOWPILOT_TEST_REDIS_URL"
    );
}

/// Settings as the tests run them: loopback, port 0, fixed secrets.
pub fn test_settings(database_url: &str) -> Settings {
    let mut settings = Settings::parse_from(["flowpilot"]);
    settings.host = "127.0.0.1".parse().expect("loopback parses");
    settings.port = 0;
    settings.database_url = database_url.to_owned();
    settings.db_max_connections = 5;
    settings.redis_url = redis_url();
    // Every test's Redis channels are its own, so tests run in parallel.
    settings.redis_prefix = format!("fp-test-{}:", uuid::Uuid::new_v4().simple());
    settings.jwt_secret = Some("test-jwt-secret-that-is-long-enough-for-flowpilot".into());
    settings.encryption_key = Some("test-encryption-key-that-is-long-enough-too".into());
    // Tests sign many users in from one address; the rate-limit tests turn
    // the limits back on.
    settings.rate_limit_per_ip = 0;
    settings.rate_limit_per_email = 0;
    // The test binary is not `flowpilot`: templates render in its processes.
    settings.steps.render_program = Some(env!("CARGO_BIN_EXE_flowpilot").into());
    settings
}

/// A database for one test, removed when dropped.
pub enum TestDatabase {
    Sqlite {
        _dir: tempfile::TempDir,
        url: String,
    },
    Postgres {
        name: String,
        server_url: String,
        url: String,
    },
}

impl TestDatabase {
    /// A fresh, migrated database on the configured backend.
    pub async fn create() -> Self {
        match postgres_url() {
            Some(server_url) => {
                let template = postgres_template(&server_url).await;
                let name = format!(
                    "fp_test_{}_{}",
                    std::process::id(),
                    uuid::Uuid::new_v4().simple()
                );
                let admin = Database::connect(&server_url)
                    .await
                    .expect("connect to PostgreSQL");
                admin
                    .execute_unprepared(&format!("CREATE DATABASE {name} TEMPLATE {template}"))
                    .await
                    .expect("clone the template database");
                admin.close().await.ok();
                let url = with_database(&server_url, &name);
                Self::Postgres {
                    name,
                    server_url,
                    url,
                }
            }
            None => {
                let dir = tempfile::tempdir().expect("temporary directory");
                let url = format!("sqlite://{}", dir.path().join("flowpilot.db").display());
                Self::Sqlite { _dir: dir, url }
            }
        }
    }

    /// An empty PostgreSQL database (no migrations), for start-up tests.
    pub async fn create_empty_postgres(server_url: &str) -> Self {
        let name = format!(
            "fp_test_{}_{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        );
        let admin = Database::connect(server_url)
            .await
            .expect("connect to PostgreSQL");
        admin
            .execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create database");
        admin.close().await.ok();
        let url = with_database(server_url, &name);
        Self::Postgres {
            name,
            server_url: server_url.to_owned(),
            url,
        }
    }

    pub fn url(&self) -> &str {
        match self {
            Self::Sqlite { url, .. } | Self::Postgres { url, .. } => url,
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Self::Postgres {
            name, server_url, ..
        } = self
        {
            let (name, server_url) = (name.clone(), server_url.clone());
            // Drop runs inside a test's runtime: use a thread with its own.
            let dropped = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .ok()?;
                runtime.block_on(async {
                    let admin = Database::connect(&server_url).await.ok()?;
                    admin
                        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await
                        .ok()?;
                    admin.close().await.ok()
                })
            });
            let _ = dropped.join();
        }
    }
}

/// `server_url` with its database name replaced by `name`.
fn with_database(server_url: &str, name: &str) -> String {
    let (base, query) = match server_url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (server_url, None),
    };
    let prefix = base
        .rsplit_once('/')
        .map(|(prefix, _)| prefix)
        .unwrap_or(base);
    match query {
        Some(query) => format!("{prefix}/{name}?{query}"),
        None => format!("{prefix}/{name}"),
    }
}

/// Creates (once per test process) a migrated template database that every
/// PostgreSQL test clones, after dropping what crashed runs left behind.
async fn postgres_template(server_url: &str) -> String {
    static TEMPLATE: OnceCell<String> = OnceCell::const_new();
    TEMPLATE
        .get_or_init(|| async {
            let admin = Database::connect(server_url)
                .await
                .expect("connect to PostgreSQL");
            drop_stale_databases(&admin).await;
            let name = format!("fp_tpl_{}", std::process::id());
            admin
                .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name}"))
                .await
                .expect("drop old template");
            admin
                .execute_unprepared(&format!("CREATE DATABASE {name}"))
                .await
                .expect("create template");
            let template = Database::connect(with_database(server_url, &name))
                .await
                .expect("connect to template");
            Migrator::up(&template, None)
                .await
                .expect("migrate template");
            template.close().await.ok();
            admin.close().await.ok();
            name
        })
        .await
        .clone()
}

async fn drop_stale_databases(admin: &DatabaseConnection) {
    let rows = admin
        .query_all_raw(Statement::from_string(
            admin.get_database_backend(),
            "SELECT datname FROM pg_database WHERE datname LIKE 'fp\\_test\\_%' OR datname LIKE 'fp\\_tpl\\_%'",
        ))
        .await
        .unwrap_or_default();
    for row in rows {
        let Ok(name) = row.try_get::<String>("", "datname") else {
            continue;
        };
        let pid = name.split('_').nth(2).and_then(|p| p.parse::<u32>().ok());
        let alive = pid.is_some_and(|pid| PathBuf::from(format!("/proc/{pid}")).exists());
        if !alive {
            admin
                .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await
                .ok();
        }
    }
}

/// A running FlowPilot server with a database of its own.
pub struct TestApp {
    pub settings: Settings,
    pub address: SocketAddr,
    pub state: AppState,
    pub clock: Clock,
    /// Every mail the server sent.
    pub mailer: flowpilot::mail::Mailer,
    client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
    _database: Option<TestDatabase>,
}

impl TestApp {
    /// A server with the default test settings.
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    /// A server whose settings `adjust` may change first.
    pub async fn spawn_with(adjust: impl FnOnce(&mut Settings)) -> Self {
        let database = TestDatabase::create().await;
        let mut settings = test_settings(database.url());
        adjust(&mut settings);
        let mut app = Self::start(settings).await;
        app._database = Some(database);
        app
    }

    /// A server with exactly these settings, over whatever database they name.
    pub async fn start(settings: Settings) -> Self {
        let config = Config::from_settings(settings.clone()).expect("valid test settings");
        let clock = Clock::system();
        let mailer = flowpilot::mail::Mailer::capture();
        let app = App::build_with(config, clock.clone(), mailer.clone())
            .await
            .expect("server builds");
        let address = app.local_addr().expect("bound address");
        let state = app.state().clone();
        let (shutdown, stopped) = oneshot::channel();
        let server = tokio::spawn(app.serve(async move {
            let _ = stopped.await;
        }));
        Self {
            settings,
            address,
            state,
            clock,
            mailer,
            client: reqwest::Client::new(),
            shutdown: Some(shutdown),
            server: Some(server),
            _database: None,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.address, path)
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.client
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("GET succeeds")
    }

    /// Runs an operation with no token.
    pub async fn graphql(&self, query: &str, variables: Value) -> GqlResponse {
        self.graphql_with(None, query, variables).await
    }

    /// Runs an operation with an access token.
    pub async fn graphql_as(&self, token: &str, query: &str, variables: Value) -> GqlResponse {
        self.graphql_with(Some(token), query, variables).await
    }

    async fn graphql_with(
        &self,
        token: Option<&str>,
        query: &str,
        variables: Value,
    ) -> GqlResponse {
        let mut request = self
            .client
            .post(self.url("/graphql"))
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        GqlResponse::from(request.send().await.expect("POST /graphql succeeds")).await
    }

    /// Registers a user and returns their tokens.
    pub async fn register(&self, email: &str) -> Session {
        let response = self
            .graphql(
                "mutation($input: RegisterInput!) { register(input: $input) { accessToken refreshToken user { id } } }",
                json!({ "input": { "email": email, "password": PASSWORD, "displayName": "Test User" } }),
            )
            .await;
        Session::from_payload(&response.data()["register"])
    }

    /// Registers a user with a unique email.
    pub async fn user(&self) -> Session {
        self.register(&unique_email()).await
    }

    /// Signs in with extra request headers (a user agent, a forwarded
    /// address); the answer says `__typename` and, on success, the tokens.
    pub async fn login(
        &self,
        email: &str,
        password: &str,
        headers: &[(&str, &str)],
    ) -> GqlResponse {
        let mut request = self.client.post(self.url("/graphql")).json(&json!({
            "query": "mutation($input: LoginInput!) { login(input: $input) {
                __typename ... on AuthPayload { accessToken refreshToken user { id } } } }",
            "variables": { "input": { "email": email, "password": password } }
        }));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        GqlResponse::from(request.send().await.expect("POST /graphql succeeds")).await
    }

    /// The mails sent to `email` holding a `<path>?token=` link, oldest
    /// first; waits (up to 5 s, as some mail goes out in the background)
    /// until there are `count` of them.
    pub async fn mails_with_link(&self, email: &str, path: &str, count: usize) -> Vec<Mail> {
        let marker = format!("{path}?token=");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let mails: Vec<Mail> = self
                .mailer
                .captured()
                .into_iter()
                .filter(|m| m.to == email && m.body.contains(marker.as_str()))
                .collect();
            if mails.len() >= count {
                return mails;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{email} got {} of {count} {path} mails: {mails:?}",
                mails.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The token of the `nth` (from 1) `<path>?token=` link mailed to
    /// `email`, after checking that the link opens the app and the token
    /// starts with `prefix`.
    pub async fn mailed_token(&self, email: &str, path: &str, prefix: &str, nth: usize) -> String {
        let mails = self.mails_with_link(email, path, nth).await;
        let body = &mails[nth - 1].body;
        let app_url = self.settings.app_url.trim_end_matches('/');
        assert!(
            body.contains(format!("{app_url}{path}?token=").as_str()),
            "the link opens {app_url}: {body}"
        );
        let token = link_token(body, path);
        assert!(token.starts_with(prefix), "{token}");
        token
    }

    pub async fn organization(&self, owner: &Session, name: &str) -> String {
        let response = self
            .graphql_as(
                &owner.access_token,
                "mutation($input: CreateOrganizationInput!) { createOrganization(input: $input) { id } }",
                json!({ "input": { "name": name } }),
            )
            .await;
        response.data()["createOrganization"]["id"]
            .as_str()
            .expect("organization id")
            .to_owned()
    }

    /// Stops the server gracefully and starts a new one on the same
    /// database with the same settings (its port may differ).
    pub async fn restart(mut self) -> Self {
        let database = self._database.take();
        let settings = self.settings.clone();
        self.stop().await;
        let mut app = Self::start(settings).await;
        app._database = database;
        app
    }

    /// A new user who is a member of `organization_id` with `role`.
    pub async fn member(&self, organization_id: &str, role: Role) -> Session {
        let session = self.user().await;
        flowpilot::orgs::service::add_member(
            &self.state,
            organization_id.parse().expect("organization id"),
            session.user_id.parse().expect("user id"),
            role,
        )
        .await
        .expect("membership added");
        session
    }

    /// Creates a workflow with `steps` and returns its id.
    pub async fn workflow(&self, session: &Session, organization_id: &str, steps: Value) -> String {
        let response = self
            .graphql_as(
                &session.access_token,
                "mutation($input: CreateWorkflowInput!) { createWorkflow(input: $input) { id } }",
                json!({ "input": { "organizationId": organization_id, "name": "Test workflow", "definition": { "steps": steps } } }),
            )
            .await;
        response.data()["createWorkflow"]["id"]
            .as_str()
            .expect("workflow id")
            .to_owned()
    }

    /// Starts an execution and returns its id.
    pub async fn run(&self, session: &Session, workflow_id: &str, input: Value) -> String {
        let response = self
            .graphql_as(
                &session.access_token,
                "mutation($input: RunWorkflowInput!) { runWorkflow(input: $input) { id status } }",
                json!({ "input": { "workflowId": workflow_id, "input": input } }),
            )
            .await;
        assert_eq!(response.data()["runWorkflow"]["status"], "QUEUED");
        response.data()["runWorkflow"]["id"]
            .as_str()
            .expect("execution id")
            .to_owned()
    }

    /// Starts an execution of a new one-step TRANSFORM workflow in a new
    /// organization of `owner`'s, and returns its id.
    pub async fn one_step_execution(&self, owner: &Session) -> String {
        let organization = self.organization(owner, "Acme").await;
        let steps =
            json!([{ "id": "a", "kind": "TRANSFORM", "config": { "output": "{{ input.n }}" } }]);
        let workflow = self.workflow(owner, &organization, steps).await;
        self.run(owner, &workflow, json!({ "n": 1 })).await
    }

    /// Waits (through the event stream) for the execution to finish, then
    /// returns it as `execution(id)` reads it.
    pub async fn finished_execution(&self, session: &Session, execution_id: &str) -> Value {
        let mut client = ws::WsClient::connect_as(self, Some(&session.access_token)).await;
        client.subscribe_events("wait", execution_id, 0).await;
        client.events_until_complete("wait").await;
        client.close().await;
        let response = self
            .graphql_as(
                &session.access_token,
                "query($id: ID!) { execution(id: $id) {
                    id status input output error lastEventSeq queuedAt startedAt finishedAt
                    steps { stepId status attempt input output error }
                } }",
                json!({ "id": execution_id }),
            )
            .await;
        response.data()["execution"].clone()
    }

    /// One worker in a second instance over this server's database whose
    /// bus reaches no one: what it commits is never published to this
    /// server. `adjust` may change its settings first.
    pub async fn isolated_worker(&self, adjust: impl FnOnce(&mut Settings)) -> IsolatedWorker {
        let mut settings = self.settings.clone();
        settings.redis_url = None;
        settings.workers = 1;
        adjust(&mut settings);
        let config = Config::from_settings(settings).expect("settings");
        let isolated = AppState::build(config, Clock::system())
            .await
            .expect("the isolated instance starts");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(isolated.run_workers(async move {
            let _ = stopped.await;
        }));
        IsolatedWorker { stop, task }
    }

    /// Publishes the logged events of `execution_id` with these `seqs`, in
    /// this order, on this server's bus, as a bus that reorders and
    /// redelivers would.
    pub async fn republish(&self, execution_id: &str, seqs: &[i32]) {
        let log = self.logged_events(execution_id).await;
        self.publish_events(&log, seqs).await;
    }

    /// Every logged event of `execution_id`.
    pub async fn logged_events(&self, execution_id: &str) -> Vec<ExecutionEventRecord> {
        let id = execution_id.parse().expect("execution id");
        flowpilot::events::log::events_after(&self.state.db, id, 0)
            .await
            .expect("the event log")
    }

    /// Publishes the events of `log` with these `seqs`, in this order, on
    /// this server's bus.
    pub async fn publish_events(&self, log: &[ExecutionEventRecord], seqs: &[i32]) {
        for seq in seqs {
            let event = log
                .iter()
                .find(|event| event.seq == *seq)
                .unwrap_or_else(|| panic!("no event {seq} in the log"));
            let topic = flowpilot::events::Topic::Organization(event.execution.organization_id);
            let message = flowpilot::events::BusMessage::ExecutionEvent(Box::new(event.clone()));
            self.state.bus.publish(topic, message).await;
        }
    }

    /// The execution's row, read from the database.
    pub async fn execution_row(&self, execution_id: &str) -> entity::execution::Model {
        let id: uuid::Uuid = execution_id.parse().expect("execution id");
        entity::execution::Entity::find_by_id(id)
            .one(&self.state.db)
            .await
            .expect("read")
            .expect("the execution")
    }

    /// Waits until the execution has finished, reading the database.
    pub async fn await_finished(&self, execution_id: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if self.execution_row(execution_id).await.status.is_terminal() {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "execution {execution_id} did not finish"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the server gracefully and waits for it to finish.
    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(server) = self.server.take() {
            tokio::time::timeout(Duration::from_secs(30), server)
                .await
                .expect("server stops within 30 s")
                .expect("server task did not panic")
                .expect("server stopped cleanly");
        }
    }
}

/// Workers started by [`TestApp::isolated_worker`].
pub struct IsolatedWorker {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl IsolatedWorker {
    /// Stops the worker and waits for it.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.expect("the isolated worker did not panic");
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

/// An email address no other test uses.
/// The token in `body`'s `<path>?token=…` link.
pub fn link_token(body: &str, path: &str) -> String {
    let marker = format!("{path}?token=");
    let start = body
        .find(marker.as_str())
        .unwrap_or_else(|| panic!("no {marker} link in {body}"))
        + marker.len();
    body[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .collect()
}

pub fn unique_email() -> String {
    format!("user-{}@example.com", uuid::Uuid::new_v4().simple())
}

/// A plain service-level request to run `workflow_id` with `input`.
pub fn run_request(
    workflow_id: uuid::Uuid,
    input: Value,
) -> flowpilot::executions::service::RunRequest {
    flowpilot::executions::service::RunRequest {
        workflow_id,
        input,
        priority: Default::default(),
        idempotency_key: None,
        version_id: None,
    }
}

/// A signed-in user as a client holds it.
#[derive(Clone, Debug)]
pub struct Session {
    pub access_token: String,
    pub refresh_token: String,
    pub user_id: String,
}

impl Session {
    pub fn from_payload(payload: &Value) -> Self {
        Self {
            access_token: payload["accessToken"]
                .as_str()
                .expect("accessToken")
                .to_owned(),
            refresh_token: payload["refreshToken"]
                .as_str()
                .expect("refreshToken")
                .to_owned(),
            user_id: payload["user"]["id"].as_str().expect("user.id").to_owned(),
        }
    }
}

/// A GraphQL HTTP response.
#[derive(Debug)]
pub struct GqlResponse {
    pub status: reqwest::StatusCode,
    pub body: Value,
}

impl GqlResponse {
    pub async fn from(response: reqwest::Response) -> Self {
        let status = response.status();
        let text = response.text().await.expect("response body");
        let body =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"));
        Self { status, body }
    }

    /// `data`, after asserting there were no errors.
    pub fn data(&self) -> &Value {
        assert!(
            self.body.get("errors").is_none(),
            "unexpected errors: {}",
            self.body
        );
        &self.body["data"]
    }

    /// The first error's `extensions.code`.
    pub fn error_code(&self) -> &str {
        self.body["errors"][0]["extensions"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no error code in {}", self.body))
    }

    /// The first error's `extensions.field`.
    pub fn error_field(&self) -> &str {
        self.body["errors"][0]["extensions"]["field"]
            .as_str()
            .unwrap_or_else(|| panic!("no error field in {}", self.body))
    }

    pub fn error_message(&self) -> &str {
        self.body["errors"][0]["message"]
            .as_str()
            .unwrap_or_default()
    }
}
