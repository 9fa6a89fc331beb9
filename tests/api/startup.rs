//! Start-up, configuration and the `flowpilot` command itself: clear
//! one-line failures, generated secrets, migrations and graceful shutdown.

use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::Duration;

use flowpilot::app::App;
use flowpilot::config::Config;
use migration::MigratorTrait;
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::support::{TestApp, TestDatabase, postgres_url, test_settings};

const SECRET: &str = "a-secret-of-at-least-thirty-two-characters";

/// The `flowpilot` binary with a clean environment, run in `dir`.
fn flowpilot(dir: &std::path::Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_flowpilot"));
    command.env_clear().current_dir(dir).kill_on_drop(true);
    command
}

/// Runs the binary to completion and returns (success, stdout, stderr).
async fn run(command: &mut Command) -> (bool, String, String) {
    let output = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("flowpilot finishes within 60 s")
        .expect("flowpilot runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Asserts a failed start with exactly one clear line on stderr.
fn assert_one_line_failure(outcome: (bool, String, String), expected: &str) {
    let (success, _, stderr) = outcome;
    assert!(!success, "start-up should have failed");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "stderr was:\n{stderr}");
    assert!(lines[0].starts_with("error: "), "{}", lines[0]);
    assert!(
        lines[0].contains(expected),
        "expected {expected:?} in {:?}",
        lines[0]
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test]
async fn an_unknown_database_scheme_stops_start_up_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let outcome =
        run(flowpilot(dir.path()).env("DATABASE_URL", "mysql://root@localhost/flowpilot")).await;
    assert_one_line_failure(
        outcome,
        "DATABASE_URL must start with sqlite:// or postgres://",
    );
}

#[tokio::test]
async fn postgres_without_a_jwt_secret_stops_start_up_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let outcome = run(flowpilot(dir.path()).env(
        "DATABASE_URL",
        "postgres://postgres@127.0.0.1:5432/postgres",
    ))
    .await;
    assert_one_line_failure(outcome, "FLOWPILOT_JWT_SECRET is required with PostgreSQL");
}

#[tokio::test]
async fn a_short_secret_stops_start_up_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let outcome = run(flowpilot(dir.path())
        .env(
            "DATABASE_URL",
            "postgres://postgres@127.0.0.1:5432/postgres",
        )
        .env("FLOWPILOT_JWT_SECRET", "too-short")
        .env("FLOWPILOT_ENCRYPTION_KEY", SECRET))
    .await;
    assert_one_line_failure(
        outcome,
        "FLOWPILOT_JWT_SECRET must be at least 32 characters",
    );
}

#[tokio::test]
async fn an_unreachable_database_stops_start_up_with_one_line_and_no_password() {
    let dir = tempfile::tempdir().unwrap();
    let outcome = run(flowpilot(dir.path())
        .env(
            "DATABASE_URL",
            "postgres://flowpilot:hunter2-secret@127.0.0.1:1/flowpilot",
        )
        .env("FLOWPILOT_JWT_SECRET", SECRET)
        .env("FLOWPILOT_ENCRYPTION_KEY", SECRET))
    .await;
    assert!(
        !outcome.2.contains("hunter2"),
        "the password leaked: {}",
        outcome.2
    );
    assert_one_line_failure(
        outcome,
        "cannot connect to the database at postgres://flowpilot:***@127.0.0.1:1/flowpilot",
    );
}

#[tokio::test]
async fn an_unreachable_redis_stops_start_up_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let outcome = run(flowpilot(dir.path()).env("REDIS_URL", "redis://127.0.0.1:1")).await;
    assert_one_line_failure(outcome, "cannot connect to Redis at redis://127.0.0.1:1");
}

#[tokio::test]
async fn a_malformed_redis_url_stops_start_up_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let outcome = run(flowpilot(dir.path()).env("REDIS_URL", "not a url")).await;
    assert_one_line_failure(outcome, "REDIS_URL is not a valid Redis URL");
}

#[tokio::test]
async fn a_bad_flag_value_stops_start_up_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let outcome = run(flowpilot(dir.path()).env("FLOWPILOT_PORT", "eighty")).await;
    assert_one_line_failure(outcome, "invalid value 'eighty'");
}

#[tokio::test]
async fn an_invalid_log_filter_stops_start_up_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let outcome = run(flowpilot(dir.path()).env("FLOWPILOT_LOG", "info,flowpilot=loud")).await;
    assert_one_line_failure(outcome, "FLOWPILOT_LOG is not a valid log filter");
}

#[tokio::test]
async fn a_database_whose_secret_file_is_gone_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, _, stderr) = run(flowpilot(dir.path()).args(["migrate", "up"])).await;
    assert!(ok, "{stderr}");
    std::fs::remove_file(dir.path().join("flowpilot.secret")).unwrap();
    let outcome = run(flowpilot(dir.path()).args(["migrate", "up"])).await;
    assert_one_line_failure(outcome, "flowpilot.secret is missing");
    assert!(
        !dir.path().join("flowpilot.secret").exists(),
        "a new secret file was written"
    );
}

#[tokio::test]
async fn migrate_applies_lists_and_rolls_back_migrations() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, _, stderr) = run(flowpilot(dir.path()).args(["migrate", "up"])).await;
    assert!(ok, "{stderr}");
    let (_, status, _) = run(flowpilot(dir.path()).args(["migrate", "status"])).await;
    let lines: Vec<&str> = status.lines().collect();
    assert_eq!(
        lines.len(),
        migration::Migrator::migrations().len(),
        "{status}"
    );
    assert!(lines.iter().all(|l| l.starts_with("applied")), "{status}");
    assert!(lines[0].contains("identity_and_organizations"), "{status}");

    let (ok, _, stderr) = run(flowpilot(dir.path()).args(["migrate", "down"])).await;
    assert!(ok, "{stderr}");
    let (_, status, _) = run(flowpilot(dir.path()).args(["migrate", "status"])).await;
    let lines: Vec<&str> = status.lines().collect();
    let (latest, earlier) = lines.split_last().expect("migrations are listed");
    assert!(latest.starts_with("pending"), "{status}");
    assert!(earlier.iter().all(|l| l.starts_with("applied")), "{status}");
}

#[tokio::test]
async fn the_schema_command_prints_the_served_sdl() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, stdout, _) = run(flowpilot(dir.path()).arg("schema")).await;
    assert!(ok);
    assert_eq!(stdout, flowpilot::graphql::sdl());
}

#[tokio::test]
async fn the_embedded_default_keeps_generated_secrets_beside_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let database_url = format!("sqlite://{}", dir.path().join("flowpilot.db").display());
    let embedded_settings = || {
        let mut settings = test_settings(&database_url);
        settings.redis_url = None;
        settings.jwt_secret = None;
        settings.encryption_key = None;
        settings
    };

    let first = Config::from_settings(embedded_settings()).unwrap();
    let secret_file = dir.path().join("flowpilot.secret");
    let mode = std::fs::metadata(&secret_file)
        .expect("secret file written")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(first.jwt_secret.len() >= 32 && first.encryption_key.len() >= 32);
    assert_ne!(first.jwt_secret, first.encryption_key);

    let second = Config::from_settings(embedded_settings()).unwrap();
    assert_eq!(
        (first.jwt_secret, first.encryption_key),
        (second.jwt_secret, second.encryption_key)
    );
}

#[tokio::test]
async fn a_token_issued_before_a_restart_still_works_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let database_url = format!("sqlite://{}", dir.path().join("flowpilot.db").display());
    let settings = || {
        let mut settings = test_settings(&database_url);
        settings.jwt_secret = None;
        settings.encryption_key = None;
        settings
    };
    let first = TestApp::start(settings()).await;
    let session = first.user().await;
    first.stop().await;

    let second = TestApp::start(settings()).await;
    let viewer = second
        .graphql_as(&session.access_token, "{ viewer { id } }", json!({}))
        .await;
    assert_eq!(
        viewer.data()["viewer"]["id"].as_str(),
        Some(session.user_id.as_str())
    );
}

#[tokio::test]
#[ignore = "needs PostgreSQL"]
async fn two_instances_starting_together_on_one_postgres_migrate_once() {
    let server_url = postgres_url().expect("this test needs FLOWPILOT_TEST_DATABASE_URL");
    let database = TestDatabase::create_empty_postgres(&server_url).await;
    let config = || Config::from_settings(test_settings(database.url())).unwrap();
    let started = futures::future::join_all((0..4).map(|_| App::build(config()))).await;
    let apps: Vec<App> = started
        .into_iter()
        .map(|app| app.expect("every instance starts"))
        .collect();
    let applied = migration::Migrator::get_applied_migrations(&apps[0].state().db)
        .await
        .unwrap();
    assert_eq!(applied.len(), migration::Migrator::migrations().len());
}

#[tokio::test]
async fn the_server_logs_json_lines_with_the_request_id_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = flowpilot(dir.path())
        .args(["--host", "127.0.0.1", "--port", "0"])
        .env("FLOWPILOT_LOG_FORMAT", "json")
        // The line for each answered request is written at debug.
        .env("FLOWPILOT_LOG", "info,tower_http=debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("flowpilot starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let next_json =
        async |lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>| -> Value {
            let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
                .await
                .expect("a log line within 30 s")
                .unwrap()
                .expect("the log goes on");
            serde_json::from_str(&line).unwrap_or_else(|_| panic!("not a JSON log line: {line}"))
        };

    let address = loop {
        let line = next_json(&mut lines).await;
        if let Some(address) = line["address"].as_str() {
            break address.to_owned();
        }
    };
    let response = reqwest::Client::new()
        .get(format!("http://{address}/health"))
        .header("x-request-id", "trace-me-7")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    loop {
        let line = next_json(&mut lines).await;
        if line.to_string().contains("trace-me-7") {
            assert_eq!(line["span"]["request_id"], "trace-me-7", "{line}");
            break;
        }
    }

    let pid = child.id().expect("running").to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("stops within 15 s")
        .unwrap();
    assert!(status.success(), "exit status {status}");
}

#[tokio::test]
async fn an_embedded_database_file_is_written_by_its_checkpointer_while_commits_only_append_to_the_log()
 {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("flowpilot.db");
    let config =
        Config::from_settings(test_settings(&format!("sqlite://{}", file.display()))).unwrap();
    let state = flowpilot::state::AppState::build(config, flowpilot::clock::Clock::system())
        .await
        .unwrap();
    let db = &state.db;
    let autocheckpoint = db
        .query_one_raw(Statement::from_string(
            DbBackend::Sqlite,
            "PRAGMA wal_autocheckpoint",
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(autocheckpoint.try_get_by_index::<i64>(0).unwrap(), 0);

    // 3,000 pages of 4 KiB, in commits of 100: three times what the log
    // holds before a checkpoint copies it back.
    db.execute_unprepared("CREATE TABLE ballast (page BLOB)")
        .await
        .unwrap();
    for _ in 0..30 {
        db.execute_unprepared(
            "INSERT INTO ballast SELECT randomblob(4000) FROM \
             (WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100) \
              SELECT i FROM n)",
        )
        .await
        .unwrap();
    }
    let written = flowpilot::db::sqlite_checkpoints(db);
    tokio::time::timeout(Duration::from_secs(30), async {
        while flowpilot::db::sqlite_checkpoints(db) < written + 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the checkpointer copies the whole log within 30 s");
    let in_file = std::fs::metadata(&file).unwrap().len();
    assert!(
        in_file >= 3_000 * 4_000,
        "the database file holds {in_file} bytes"
    );
    state.db.clone().close().await.unwrap();
}
