//! Starting executions: priorities, idempotency keys, re-runs, and workers
//! running in a process of their own (`flowpilot worker`).

use std::process::Stdio;
use std::time::Duration;

use chrono::Duration as Span;
use entity::role::Role;
use flowpilot::engine::journal;
use serde_json::{Value, json};

use crate::support::{Session, TestApp};

const RUN: &str = "mutation($input: RunWorkflowInput!) {
  runWorkflow(input: $input) { id status priority idempotencyKey input }
}";
const RETRY: &str = "mutation($input: RetryExecutionInput!) {
  retryExecution(input: $input) { id status input retryOf { id status } }
}";

/// A server without workers, an owner and a one-step workflow.
async fn idle_app() -> (TestApp, Session, String, String) {
    let app = TestApp::spawn_with(|settings| settings.workers = 0).await;
    let owner = app.user().await;
    let organization = app.organization(&owner, "Acme").await;
    let workflow = app
        .workflow(
            &owner,
            &organization,
            json!([{ "id": "a", "kind": "TRANSFORM", "config": { "output": "{{ input }}" } }]),
        )
        .await;
    (app, owner, organization, workflow)
}

async fn run(app: &TestApp, session: &Session, input: Value) -> Value {
    let response = app
        .graphql_as(&session.access_token, RUN, json!({ "input": input }))
        .await;
    response.data()["runWorkflow"].clone()
}

#[tokio::test]
async fn high_priority_executions_are_claimed_before_older_normal_ones() {
    let (app, owner, _, workflow) = idle_app().await;
    let low = run(
        &app,
        &owner,
        json!({ "workflowId": workflow, "priority": "LOW" }),
    )
    .await;
    let normal = run(&app, &owner, json!({ "workflowId": workflow })).await;
    let high = run(
        &app,
        &owner,
        json!({ "workflowId": workflow, "priority": "HIGH" }),
    )
    .await;
    assert_eq!(
        (low["priority"].as_str(), normal["priority"].as_str()),
        (Some("LOW"), Some("NORMAL"))
    );

    let mut order = Vec::new();
    while let Some(claimed) =
        journal::claim_next_execution(&app.state, "w", Duration::from_secs(30))
            .await
            .unwrap()
    {
        order.push(claimed.execution.id.to_string());
    }
    assert_eq!(
        order,
        [&high["id"], &normal["id"], &low["id"]].map(|id| id.as_str().unwrap().to_owned())
    );
}

#[tokio::test]
async fn an_idempotency_key_returns_the_first_execution_for_a_day() {
    let (app, owner, _, workflow) = idle_app().await;
    let first = run(
        &app,
        &owner,
        json!({ "workflowId": workflow, "input": { "n": 1 }, "idempotencyKey": "order-42" }),
    )
    .await;
    let again = run(
        &app,
        &owner,
        json!({ "workflowId": workflow, "input": { "n": 2 }, "idempotencyKey": "order-42" }),
    )
    .await;
    assert_eq!(
        again["id"], first["id"],
        "the same key started a second execution"
    );
    assert_eq!(again["input"], json!({ "n": 1 }));
    assert_eq!(again["idempotencyKey"], "order-42");

    let other_key = run(
        &app,
        &owner,
        json!({ "workflowId": workflow, "idempotencyKey": "order-43" }),
    )
    .await;
    assert_ne!(other_key["id"], first["id"]);

    app.clock.advance(Span::hours(24) + Span::minutes(1));
    let refreshed = app
        .graphql(
            "mutation($input: RefreshSessionInput!) { refreshSession(input: $input) { accessToken refreshToken user { id } } }",
            json!({ "input": { "refreshToken": owner.refresh_token } }),
        )
        .await;
    let owner = Session::from_payload(&refreshed.data()["refreshSession"]);
    let next_day = run(
        &app,
        &owner,
        json!({ "workflowId": workflow, "idempotencyKey": "order-42" }),
    )
    .await;
    assert_ne!(next_day["id"], first["id"], "the key outlived its day");
}

#[tokio::test]
async fn concurrent_requests_with_one_idempotency_key_start_one_execution() {
    let (app, owner, _, workflow) = idle_app().await;
    let request = json!({ "workflowId": workflow, "idempotencyKey": "burst" });
    let (a, b, c) = tokio::join!(
        run(&app, &owner, request.clone()),
        run(&app, &owner, request.clone()),
        run(&app, &owner, request)
    );
    assert_eq!(a["id"], b["id"]);
    assert_eq!(b["id"], c["id"]);
}

#[tokio::test]
async fn a_blank_idempotency_key_is_bad_user_input() {
    let (app, owner, _, workflow) = idle_app().await;
    let response = app
        .graphql_as(
            &owner.access_token,
            RUN,
            json!({ "input": { "workflowId": workflow, "idempotencyKey": "  " } }),
        )
        .await;
    assert_eq!(response.error_code(), "BAD_USER_INPUT");
    assert_eq!(response.error_field(), "idempotencyKey");
}

#[tokio::test]
async fn retrying_a_finished_execution_reruns_its_input_linked_to_it() {
    let app = TestApp::spawn().await;
    let owner = app.user().await;
    let organization = app.organization(&owner, "Acme").await;
    let workflow = app
        .workflow(
            &owner,
            &organization,
            json!([{ "id": "a", "kind": "FAIL", "config": { "message": "no {{ input.n }}" } }]),
        )
        .await;
    let original = app.run(&owner, &workflow, json!({ "n": 3 })).await;
    assert_eq!(
        app.finished_execution(&owner, &original).await["status"],
        "FAILED"
    );

    let response = app
        .graphql_as(
            &owner.access_token,
            RETRY,
            json!({ "input": { "executionId": original } }),
        )
        .await;
    let retried = &response.data()["retryExecution"];
    assert_ne!(retried["id"].as_str(), Some(original.as_str()));
    assert_eq!(retried["input"], json!({ "n": 3 }));
    assert_eq!(
        retried["retryOf"],
        json!({ "id": original, "status": "FAILED" })
    );
    let finished = app
        .finished_execution(&owner, retried["id"].as_str().unwrap())
        .await;
    assert_eq!(finished["error"], "step `a` failed: no 3");
}

#[tokio::test]
async fn an_unfinished_execution_cannot_be_retried_and_viewers_cannot_retry() {
    let (app, owner, organization, workflow) = idle_app().await;
    let queued = run(&app, &owner, json!({ "workflowId": workflow })).await;
    let response = app
        .graphql_as(
            &owner.access_token,
            RETRY,
            json!({ "input": { "executionId": queued["id"] } }),
        )
        .await;
    assert_eq!(response.error_code(), "CONFLICT");

    let viewer = app.member(&organization, Role::Viewer).await;
    let response = app
        .graphql_as(
            &viewer.access_token,
            RETRY,
            json!({ "input": { "executionId": queued["id"] } }),
        )
        .await;
    assert_eq!(response.error_code(), "FORBIDDEN");
}

#[tokio::test]
async fn a_worker_process_runs_executions_queued_through_the_api() {
    let (app, owner, _, workflow) = idle_app().await;
    let settings = &app.settings;
    let dir = tempfile::tempdir().unwrap();
    let mut worker = tokio::process::Command::new(env!("CARGO_BIN_EXE_flowpilot"));
    worker
        .arg("worker")
        .env_clear()
        .current_dir(dir.path())
        .env("DATABASE_URL", &settings.database_url)
        .env(
            "FLOWPILOT_JWT_SECRET",
            settings.jwt_secret.as_deref().unwrap(),
        )
        .env(
            "FLOWPILOT_ENCRYPTION_KEY",
            settings.encryption_key.as_deref().unwrap(),
        )
        .env("FLOWPILOT_REDIS_PREFIX", &settings.redis_prefix)
        .env("FLOWPILOT_POLL_INTERVAL_MS", "200")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(redis) = &settings.redis_url {
        worker.env("REDIS_URL", redis);
    }
    let mut worker = worker.spawn().expect("flowpilot worker starts");

    let execution = run(
        &app,
        &owner,
        json!({ "workflowId": workflow, "input": "from the API" }),
    )
    .await;
    let finished = app
        .finished_execution(&owner, execution["id"].as_str().unwrap())
        .await;
    assert_eq!(finished["status"], "SUCCEEDED");
    assert_eq!(finished["output"], "from the API");

    let pid = worker.id().expect("running").to_string();
    assert!(
        tokio::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .unwrap()
            .success()
    );
    let status = tokio::time::timeout(Duration::from_secs(15), worker.wait())
        .await
        .expect("stops within 15 s")
        .unwrap();
    assert!(status.success(), "exit status {status}");
}
