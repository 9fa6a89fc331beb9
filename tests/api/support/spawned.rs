//! A real `flowpilot serve` process over a test app's database (and Redis
//! prefix), for what only a separate process shows: its memory peak, and
//! that it keeps answering while a hostile request or execution runs.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use flowpilot::config::Settings;
use serde_json::{Value, json};

use super::{GqlResponse, TestApp};

/// `flowpilot serve` on 127.0.0.1:`port` (0: any) over the database, Redis
/// prefix and secrets of `settings`, logging only warnings, killed when
/// dropped.
pub fn serve_command(settings: &Settings, port: u16) -> tokio::process::Command {
    let mut command = flowpilot_command(settings);
    command
        .args(["serve", "--host", "127.0.0.1", "--port", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

/// The `flowpilot` binary over the database, Redis prefix and secrets of
/// `settings`, logging only warnings, killed when dropped; its arguments
/// are the caller's.
pub fn flowpilot_command(settings: &Settings) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_flowpilot"));
    command
        .env_clear()
        .env("DATABASE_URL", &settings.database_url)
        .env("FLOWPILOT_REDIS_PREFIX", &settings.redis_prefix)
        .env(
            "FLOWPILOT_JWT_SECRET",
            settings.jwt_secret.as_deref().unwrap_or_default(),
        )
        .env(
            "FLOWPILOT_ENCRYPTION_KEY",
            settings.encryption_key.as_deref().unwrap_or_default(),
        )
        .env("FLOWPILOT_LOG", "warn")
        .kill_on_drop(true);
    if let Some(redis) = &settings.redis_url {
        command.env("REDIS_URL", redis);
    }
    command
}

/// A `flowpilot serve` process, killed when dropped.
pub struct Spawned {
    pub address: SocketAddr,
    child: tokio::process::Child,
    client: reqwest::Client,
}

impl Spawned {
    /// Starts `flowpilot serve` with `app`'s database, Redis, prefix and
    /// secrets (so `app`'s tokens work here), rate limits off as in the
    /// tests, and the `extra` settings; waits until `/health` answers.
    pub async fn start(app: &TestApp, extra: &[(&str, &str)]) -> Self {
        let settings = &app.settings;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let mut command = serve_command(settings, port);
        command
            .env("FLOWPILOT_RATE_LIMIT_PER_IP", "0")
            .env("FLOWPILOT_RATE_LIMIT_PER_EMAIL", "0");
        for (name, value) in extra {
            command.env(name, value);
        }
        let child = command.spawn().expect("flowpilot serve starts");
        let spawned = Self {
            address: SocketAddr::from(([127, 0, 0, 1], port)),
            child,
            client: reqwest::Client::new(),
        };
        tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                if spawned.health().await {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .expect("the spawned server answers /health");
        spawned
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.client
    }

    /// Whether `/health` answers 200.
    pub async fn health(&self) -> bool {
        self.client
            .get(self.url("/health"))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    }

    /// Posts `body` (an operation or a batch) to `/graphql`.
    pub async fn post(&self, token: Option<&str>, body: &Value) -> reqwest::Response {
        let mut request = self.client.post(self.url("/graphql")).json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("POST /graphql answers")
    }

    /// Runs one operation.
    pub async fn graphql(&self, token: Option<&str>, query: &str, variables: Value) -> GqlResponse {
        let body = json!({ "query": query, "variables": variables });
        GqlResponse::from(self.post(token, &body).await).await
    }

    /// How many `render-worker` processes this server has running.
    pub fn render_workers(&self) -> usize {
        let pid = self.child.id().expect("the process runs");
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("proc tasks");
        tasks
            .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("children")).ok())
            .flat_map(|children| {
                children
                    .split_whitespace()
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .filter(|child| {
                std::fs::read(format!("/proc/{child}/cmdline"))
                    .is_ok_and(|cmdline| cmdline.windows(13).any(|w| w == b"render-worker"))
            })
            .count()
    }

    /// The process's peak resident memory so far (`VmHWM`), in KiB.
    pub fn peak_memory_kib(&self) -> u64 {
        let pid = self.child.id().expect("the process runs");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in proc status")
    }
}
