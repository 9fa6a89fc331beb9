//! Subscribers of one execution with the same document, variables and role
//! share one resolution per event; everything that depends on who asks is
//! still resolved per subscriber. Counted through the instance's fan-out,
//! never timed.

use std::collections::HashMap;

use entity::role::Role;
use flowpilot::engine::Engine;
use serde_json::{Value, json};

use crate::subscriptions::idle_app;
use crate::support::ws::{EXECUTION_EVENTS, WsClient};
use crate::support::{Session, TestApp};

/// A server without workers, an owner, their organization and a one-step
/// workflow with one queued run: (app, owner, organization, execution).
async fn queued_run() -> (TestApp, Session, String, String) {
    let (app, owner, organization, workflow) = idle_app().await;
    let execution = app.run(&owner, &workflow, json!({})).await;
    (app, owner, organization, execution)
}

/// Starts workers on this server's state (its database and bus), which
/// was spawned without any.
async fn start_workers(app: &TestApp) -> Engine {
    let mut config = (*app.state.config).clone();
    config.settings.workers = 2;
    Engine::start(&app.state.with_config(config)).await
}

/// Subscribes `operations` operations (ids "0", "1", …) on `client` to
/// `query` with `variables`.
async fn subscribe_all(client: &mut WsClient, operations: usize, query: &str, variables: &Value) {
    for n in 0..operations {
        client
            .subscribe(&n.to_string(), query, variables.clone())
            .await;
    }
}

/// The `data.<field>` of every `next` of each operation until all
/// `operations` have completed, by operation id; an error fails.
async fn until_all_complete(
    client: &mut WsClient,
    operations: usize,
    field: &str,
) -> HashMap<String, Vec<Value>> {
    let mut items: HashMap<String, Vec<Value>> = HashMap::new();
    let mut completed = 0;
    while completed < operations {
        let message = client.next_json().await;
        let id = message["id"].as_str().expect("an operation id").to_owned();
        match message["type"].as_str() {
            Some("next") => {
                assert!(
                    message["payload"].get("errors").is_none(),
                    "error in stream: {message}"
                );
                items
                    .entry(id)
                    .or_default()
                    .push(message["payload"]["data"][field].clone());
            }
            Some("complete") => completed += 1,
            other => panic!("unexpected {other:?}: {message}"),
        }
    }
    items
}

/// Reads `client` until each of its `operations` has had its first `next`.
async fn until_each_has_one(client: &mut WsClient, operations: usize, field: &str) -> Vec<Value> {
    let mut seen = HashMap::new();
    while seen.len() < operations {
        let message = client.next_json().await;
        assert_eq!(message["type"], "next", "{message}");
        let id = message["id"].as_str().expect("id").to_owned();
        seen.entry(id)
            .or_insert_with(|| message["payload"]["data"][field].clone());
    }
    seen.into_values().collect()
}

fn kinds(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .map(|event| event["kind"].as_str().expect("kind"))
        .collect()
}

#[tokio::test]
async fn two_hundred_subscribers_of_one_execution_cause_one_resolution_per_event() {
    let (app, owner, _, execution) = queued_run().await;
    let variables = json!({ "executionId": execution, "afterSeq": 0 });
    let (connections, per_connection) = (10, 20);
    let mut clients = Vec::new();
    for _ in 0..connections {
        let mut client = WsClient::connect_as(&app, Some(&owner.access_token)).await;
        subscribe_all(&mut client, per_connection, EXECUTION_EVENTS, &variables).await;
        clients.push(client);
    }
    for client in &mut clients {
        let first = until_each_has_one(client, per_connection, "executionEvents").await;
        assert!(
            first
                .iter()
                .all(|event| event["kind"] == "EXECUTION_QUEUED")
        );
    }
    assert_eq!(app.state.fan_out.groups(), 1);
    assert_eq!(app.state.fan_out.resolutions(), 1);

    let workers = start_workers(&app).await;
    let mut delivered = 0;
    for client in &mut clients {
        for (_, events) in until_all_complete(client, per_connection, "executionEvents").await {
            // The first event was read above; the rest follow in order.
            assert_eq!(
                kinds(&events),
                [
                    "EXECUTION_STARTED",
                    "STEP_STARTED",
                    "STEP_SUCCEEDED",
                    "EXECUTION_SUCCEEDED"
                ]
            );
            assert_eq!(events[3]["execution"]["output"], 1);
            delivered += events.len() + 1;
        }
    }
    workers.shutdown().await;

    assert_eq!(delivered, 200 * 5);
    assert_eq!(
        app.state.fan_out.resolutions(),
        5,
        "five events for 200 subscribers, each resolved once"
    );
}

#[tokio::test]
async fn an_admin_and_a_viewer_on_the_same_document_are_resolved_for_their_own_role() {
    let (app, _, organization, execution) = queued_run().await;
    let admin = app.member(&organization, Role::Admin).await;
    let viewer = app.member(&organization, Role::Viewer).await;
    let variables = json!({ "executionId": execution, "afterSeq": 0 });
    let mut admins = WsClient::connect_as(&app, Some(&admin.access_token)).await;
    let mut viewers = WsClient::connect_as(&app, Some(&viewer.access_token)).await;
    subscribe_all(&mut admins, 3, EXECUTION_EVENTS, &variables).await;
    subscribe_all(&mut viewers, 3, EXECUTION_EVENTS, &variables).await;
    until_each_has_one(&mut admins, 3, "executionEvents").await;
    until_each_has_one(&mut viewers, 3, "executionEvents").await;
    assert_eq!(app.state.fan_out.groups(), 2, "one group per role");

    let workers = start_workers(&app).await;
    for client in [&mut admins, &mut viewers] {
        for (_, events) in until_all_complete(client, 3, "executionEvents").await {
            assert_eq!(events.last().unwrap()["kind"], "EXECUTION_SUCCEEDED");
        }
    }
    workers.shutdown().await;
    assert_eq!(app.state.fan_out.resolutions(), 2 * 5);
}

#[tokio::test]
async fn a_selection_that_reaches_the_viewers_role_is_resolved_for_each_subscriber() {
    let (app, _, organization, execution) = queued_run().await;
    let admin = app.member(&organization, Role::Admin).await;
    let viewer = app.member(&organization, Role::Viewer).await;
    let query = "subscription($executionId: ID!) {
      executionEvents(executionId: $executionId) {
        seq kind
        execution { workflow { organization { ... on Organization { viewerRole } } } }
      }
    }";
    let variables = json!({ "executionId": execution });
    let mut admins = WsClient::connect_as(&app, Some(&admin.access_token)).await;
    let mut viewers = WsClient::connect_as(&app, Some(&viewer.access_token)).await;
    subscribe_all(&mut admins, 2, query, &variables).await;
    subscribe_all(&mut viewers, 2, query, &variables).await;

    let workers = start_workers(&app).await;
    for (client, role) in [(&mut admins, "ADMIN"), (&mut viewers, "VIEWER")] {
        for (_, events) in until_all_complete(client, 2, "executionEvents").await {
            assert_eq!(events.len(), 5);
            assert!(
                events
                    .iter()
                    .all(|e| e["execution"]["workflow"]["organization"]["viewerRole"] == role)
            );
        }
    }
    workers.shutdown().await;
    assert_eq!(app.state.fan_out.resolutions(), 0, "nothing was shared");
    assert_eq!(app.state.fan_out.groups(), 0);
}

#[tokio::test]
async fn a_late_subscriber_replays_what_its_group_rendered_without_resolving_it_again() {
    let (app, owner, _, execution) = queued_run().await;
    let variables = json!({ "executionId": execution, "afterSeq": 0 });
    let mut early = WsClient::connect_as(&app, Some(&owner.access_token)).await;
    subscribe_all(&mut early, 1, EXECUTION_EVENTS, &variables).await;
    until_each_has_one(&mut early, 1, "executionEvents").await;
    assert_eq!(app.state.fan_out.resolutions(), 1);

    let mut late = WsClient::connect_as(&app, Some(&owner.access_token)).await;
    subscribe_all(&mut late, 1, EXECUTION_EVENTS, &variables).await;
    let replayed = until_each_has_one(&mut late, 1, "executionEvents").await;
    assert_eq!(replayed[0]["seq"], 1);
    assert_eq!(
        app.state.fan_out.resolutions(),
        1,
        "seq 1 came from the group"
    );

    let workers = start_workers(&app).await;
    let rest = until_all_complete(&mut late, 1, "executionEvents").await;
    until_all_complete(&mut early, 1, "executionEvents").await;
    workers.shutdown().await;
    assert_eq!(
        kinds(&rest["0"]),
        [
            "EXECUTION_STARTED",
            "STEP_STARTED",
            "STEP_SUCCEEDED",
            "EXECUTION_SUCCEEDED"
        ]
    );
    assert_eq!(app.state.fan_out.resolutions(), 5);
}

#[tokio::test]
async fn an_invalid_document_of_a_shared_field_is_refused_as_before() {
    let (app, owner, _, execution) = queued_run().await;
    let mut client = WsClient::connect_as(&app, Some(&owner.access_token)).await;
    client
        .subscribe(
            "bad",
            "subscription($executionId: ID!) { executionEvents(executionId: $executionId) { seq nope } }",
            json!({ "executionId": execution }),
        )
        .await;
    let message = client.next_json().await;
    assert_eq!(message["type"], "error", "{message}");
    assert_eq!(message["id"], "bad");
    assert_eq!(
        message["payload"][0]["extensions"]["reason"], "VALIDATION_FAILED",
        "{message}"
    );
}

#[tokio::test]
async fn a_shared_selection_reaches_the_workflow_its_lists_and_the_steps_without_errors() {
    let (app, owner, _, execution) = queued_run().await;
    let query = "subscription($executionId: ID!) {
      executionEvents(executionId: $executionId) {
        seq
        execution {
          input priority
          steps { stepId status }
          events(first: 2) { totalCount nodes { seq } }
          workflow {
            name
            activeVersion { number }
            executions(first: 2) { totalCount nodes { id } }
            versions(first: 1) { nodes { number } }
          }
        }
      }
    }";
    let variables = json!({ "executionId": execution });
    let mut client = WsClient::connect_as(&app, Some(&owner.access_token)).await;
    subscribe_all(&mut client, 2, query, &variables).await;
    let workers = start_workers(&app).await;
    let runs = until_all_complete(&mut client, 2, "executionEvents").await;
    workers.shutdown().await;
    for events in runs.values() {
        assert_eq!(events.len(), 5);
        let last = &events[4]["execution"];
        assert_eq!(last["steps"][0]["status"], "SUCCEEDED");
        assert_eq!(last["events"]["totalCount"], 5);
        assert_eq!(last["workflow"]["activeVersion"]["number"], 1);
        assert_eq!(last["workflow"]["executions"]["totalCount"], 1);
    }
    assert_eq!(
        app.state.fan_out.resolutions(),
        5,
        "one group rendered them"
    );
}
