//! Streams outlive a database restart: while executions stream, the
//! PostgreSQL server is stopped and started again; no stream ends, and
//! none has a gap or a repeat. The server is a private cluster the test
//! creates (never the shared one), so the test needs PostgreSQL's binaries
//! and `runuser`, and runs with `--include-ignored` in its own CI step.

use std::os::unix::fs::chown;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::ws::WsClient;
use crate::support::{TestApp, test_settings};

/// A PostgreSQL cluster of the test's own, on a free port.
struct PrivatePostgres {
    dir: tempfile::TempDir,
    port: u16,
}

impl PrivatePostgres {
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let postgres = users_uid("postgres");
        chown(dir.path(), Some(postgres), None).expect("the cluster's folder for postgres");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let cluster = Self { dir, port };
        cluster.run(
            "initdb",
            &["-D", &cluster.data(), "-A", "trust", "-U", "postgres"],
        );
        cluster.start_again();
        cluster
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn start_again(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("log").display().to_string();
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-o",
                &options,
                "-l",
                &log,
                "-w",
                "start",
            ],
        );
    }

    fn stop(&self) {
        self.run("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"]);
    }

    /// Runs one of PostgreSQL's programs as the postgres user.
    fn run(&self, program: &str, args: &[&str]) {
        let status = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(bin_dir().join(program))
            .args(args)
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap_or_else(|err| panic!("{program} runs: {err}"));
        assert!(status.success(), "{program} {args:?} failed: {status}");
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(bin_dir().join("pg_ctl"))
            .args(["-D", &self.data(), "-m", "immediate", "stop"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// The newest PostgreSQL's programs.
fn bin_dir() -> PathBuf {
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<u32> = std::fs::read_dir(root)
        .expect("PostgreSQL is installed under /usr/lib/postgresql")
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    versions.sort_unstable();
    root.join(versions.last().expect("a PostgreSQL version").to_string())
        .join("bin")
}

fn users_uid(name: &str) -> u32 {
    let passwd = std::fs::read_to_string("/etc/passwd").expect("/etc/passwd");
    passwd
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.first() == Some(&name)).then(|| fields[2].parse().ok())?
        })
        .unwrap_or_else(|| panic!("a user named {name}"))
}

fn seqs(events: &[Value]) -> Vec<i64> {
    events
        .iter()
        .map(|event| event["seq"].as_i64().unwrap())
        .collect()
}

#[tokio::test]
#[ignore = "needs PostgreSQL's binaries and runuser, for a private cluster"]
async fn streams_stay_open_without_a_gap_across_a_database_restart() {
    let cluster = PrivatePostgres::start();
    let mut settings = test_settings(&cluster.url());
    settings.redis_url = None;
    settings.stream_recheck_ms = 200;
    let app = TestApp::start(settings).await;
    let owner = app.user().await;
    let organization = app.organization(&owner, "Acme").await;
    let steps = json!([
        { "id": "a", "kind": "DELAY", "config": { "ms": 1500 } },
        { "id": "b", "kind": "DELAY", "needs": ["a"], "config": { "ms": 1500 } },
        { "id": "c", "kind": "TRANSFORM", "needs": ["b"], "config": { "output": 1 } }
    ]);
    let workflow = app.workflow(&owner, &organization, steps).await;

    let mut dashboard = WsClient::connect_as(&app, Some(&owner.access_token)).await;
    dashboard
        .subscribe(
            "org",
            "subscription($org: ID!) { organizationExecutionEvents(organizationId: $org) {
               __typename ... on ExecutionEvent { executionId seq kind } } }",
            json!({ "org": organization }),
        )
        .await;
    let id = app.run(&owner, &workflow, json!({})).await;
    let mut watcher = WsClient::connect_as(&app, Some(&owner.access_token)).await;
    watcher.subscribe_events("e", &id, 0).await;
    let first = watcher.events_until_seq("e", 2).await;

    cluster.stop();
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.start_again();

    let mut events = first;
    events.extend(watcher.events_until_complete("e").await);
    let expected: Vec<i64> = (1..=seqs(&events).len() as i64).collect();
    assert_eq!(
        seqs(&events),
        expected,
        "the execution's stream skipped or repeated"
    );
    let last = events.last().unwrap();
    assert_eq!(last["kind"], "EXECUTION_SUCCEEDED", "{last}");

    // The dashboard saw the same events, in order, once each.
    let mut seen = Vec::new();
    while seen
        .last()
        .is_none_or(|event: &Value| event["kind"] != "EXECUTION_SUCCEEDED")
    {
        let message = dashboard.next_json().await;
        assert_eq!(
            message["type"], "next",
            "the dashboard's stream ended: {message}"
        );
        let item = message["payload"]["data"]["organizationExecutionEvents"].clone();
        if item["__typename"] == "ExecutionEvent" && item["executionId"] == id.as_str() {
            seen.push(item);
        }
    }
    assert_eq!(seqs(&seen), expected, "the dashboard skipped or repeated");
}
