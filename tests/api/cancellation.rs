//! `cancelExecution`: at once while queued; within about a second while
//! running, on whichever instance runs it.

use std::time::Duration;

use entity::role::Role;
use serde_json::{Value, json};

use crate::support::ws::WsClient;
use crate::support::{Session, TestApp};

const CANCEL: &str =
    "mutation($input: CancelExecutionInput!) { cancelExecution(input: $input) { id status } }";

async fn cancel(app: &TestApp, session: &Session, id: &str) -> crate::support::GqlResponse {
    app.graphql_as(
        &session.access_token,
        CANCEL,
        json!({ "input": { "executionId": id } }),
    )
    .await
}

fn kinds(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e["kind"].as_str().unwrap(),
                e["stepId"].as_str().unwrap_or("")
            )
        })
        .collect()
}

/// A slow two-step workflow: `wait` (one minute), then `after`.
fn slow_steps() -> Value {
    json!([
        { "id": "wait", "kind": "DELAY", "config": { "ms": 60000 } },
        { "id": "after", "kind": "TRANSFORM", "needs": ["wait"], "config": { "output": 1 } }
    ])
}

#[tokio::test]
async fn cancelling_a_queued_execution_ends_it_at_once() {
    let app = TestApp::spawn_with(|settings| settings.workers = 0).await;
    let owner = app.user().await;
    let organization = app.organization(&owner, "Acme").await;
    let workflow = app.workflow(&owner, &organization, slow_steps()).await;
    let id = app.run(&owner, &workflow, json!({})).await;

    let response = cancel(&app, &owner, &id).await;
    assert_eq!(response.data()["cancelExecution"]["status"], "CANCELLED");
    let execution = app.finished_execution(&owner, &id).await;
    assert_eq!(execution["status"], "CANCELLED");
    assert!(
        execution["steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["status"] == "CANCELLED")
    );
    assert!(execution["finishedAt"].is_string());
}

#[tokio::test]
async fn cancelling_a_running_execution_cancels_its_running_steps_without_waiting_for_the_heartbeat()
 {
    let app = TestApp::spawn_with(|settings| {
        settings.workers = 1;
        // The worker holds on to a long DELAY instead of parking it.
        settings.park_after_ms = 3_600_000;
    })
    .await;
    let owner = app.user().await;
    let organization = app.organization(&owner, "Acme").await;
    let workflow = app.workflow(&owner, &organization, slow_steps()).await;
    let id = app.run(&owner, &workflow, json!({})).await;
    let mut client = WsClient::connect_as(&app, Some(&owner.access_token)).await;
    client.subscribe_events("c", &id, 0).await;
    client.events_until_seq("c", 3).await;

    let response = cancel(&app, &owner, &id).await;
    assert_eq!(
        response.data()["cancelExecution"]["id"].as_str(),
        Some(id.as_str())
    );
    // The heartbeat (the fallback) comes every 10 s; the control topic is
    // what stops it this soon.
    let rest = tokio::time::timeout(Duration::from_secs(5), client.events_until_complete("c"))
        .await
        .expect("cancelled without waiting for the heartbeat");
    assert_eq!(
        kinds(&rest),
        [
            "STEP_CANCELLED wait",
            "STEP_CANCELLED after",
            "EXECUTION_CANCELLED "
        ]
    );
    assert_eq!(rest.last().unwrap()["executionStatus"], "CANCELLED");
}

#[tokio::test]
async fn a_cancel_reaches_a_worker_without_a_shared_bus_through_its_heartbeat() {
    let app = TestApp::spawn_with(|settings| {
        settings.workers = 0;
        settings.stream_recheck_ms = 200;
    })
    .await;
    let owner = app.user().await;
    let organization = app.organization(&owner, "Acme").await;
    let workflow = app.workflow(&owner, &organization, slow_steps()).await;
    // The worker runs in a second instance whose bus reaches no one.
    let worker = app
        .isolated_worker(|settings| {
            settings.lease_secs = 3;
            settings.park_after_ms = 3_600_000;
        })
        .await;

    let id = app.run(&owner, &workflow, json!({})).await;
    let mut client = WsClient::connect_as(&app, Some(&owner.access_token)).await;
    client.subscribe_events("h", &id, 0).await;
    client.events_until_seq("h", 3).await;
    cancel(&app, &owner, &id).await.data();
    let rest = tokio::time::timeout(Duration::from_secs(5), client.events_until_complete("h"))
        .await
        .expect("the heartbeat (every second here) noticed the cancel");
    assert_eq!(rest.last().unwrap()["kind"], "EXECUTION_CANCELLED");
    worker.stop().await;
}

#[tokio::test]
async fn a_finished_execution_cannot_be_cancelled_and_viewers_cannot_cancel() {
    let app = TestApp::spawn().await;
    let owner = app.user().await;
    let organization = app.organization(&owner, "Acme").await;
    let workflow = app
        .workflow(
            &owner,
            &organization,
            json!([{ "id": "a", "kind": "TRANSFORM", "config": { "output": 1 } }]),
        )
        .await;
    let id = app.run(&owner, &workflow, json!({})).await;
    app.finished_execution(&owner, &id).await;
    assert_eq!(cancel(&app, &owner, &id).await.error_code(), "CONFLICT");

    let viewer = app.member(&organization, Role::Viewer).await;
    assert_eq!(cancel(&app, &viewer, &id).await.error_code(), "FORBIDDEN");
    let outsider = app.user().await;
    assert_eq!(cancel(&app, &outsider, &id).await.error_code(), "NOT_FOUND");
}
