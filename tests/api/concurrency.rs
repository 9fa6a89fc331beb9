//! Concurrency limits: `maxConcurrency` per workflow (and `updateWorkflow`
//! to change it) and a per-organization cap, enforced when claiming.

use std::time::Duration;

use entity::role::Role;
use entity::status::ExecutionStatus;
use flowpilot::engine::journal::{self, Claimed, ExecutionUpdate};
use flowpilot::engine::state::{ExecutionChange, RequeueReason};
use serde_json::{Value, json};

use crate::support::{GqlResponse, Session, TestApp};

const LEASE: Duration = Duration::from_secs(30);
const UPDATE: &str = "mutation($input: UpdateWorkflowInput!) {
  updateWorkflow(input: $input) { id name description maxConcurrency revision }
}";

async fn idle_app(org_cap: u32) -> (TestApp, Session, String) {
    let app = TestApp::spawn_with(|settings| {
        settings.workers = 0;
        settings.org_max_concurrency = org_cap;
    })
    .await;
    let owner = app.user().await;
    let organization = app.organization(&owner, "Acme").await;
    (app, owner, organization)
}

async fn limited_workflow(
    app: &TestApp,
    owner: &Session,
    organization: &str,
    limit: Option<i64>,
) -> String {
    let response = app
        .graphql_as(
            &owner.access_token,
            "mutation($input: CreateWorkflowInput!) { createWorkflow(input: $input) { id maxConcurrency revision } }",
            json!({ "input": {
                "organizationId": organization, "name": "limited", "maxConcurrency": limit,
                "definition": { "steps": [{ "id": "a", "kind": "TRANSFORM", "config": { "output": 1 } }] }
            } }),
        )
        .await;
    let workflow = &response.data()["createWorkflow"];
    assert_eq!(workflow["maxConcurrency"], json!(limit));
    assert_eq!(workflow["revision"], 1);
    workflow["id"].as_str().unwrap().to_owned()
}

async fn claim(app: &TestApp) -> Option<Claimed> {
    journal::claim_next_execution(&app.state, "w", LEASE)
        .await
        .unwrap()
}

async fn finish(app: &TestApp, claimed: &Claimed) {
    let done = ExecutionChange::To(ExecutionStatus::Succeeded);
    journal::change_execution(&app.state, &claimed.lease, done, ExecutionUpdate::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_workflow_never_has_more_executions_started_than_its_limit() {
    let (app, owner, organization) = idle_app(0).await;
    let workflow = limited_workflow(&app, &owner, &organization, Some(2)).await;
    let mut queued = Vec::new();
    for _ in 0..3 {
        queued.push(app.run(&owner, &workflow, json!({})).await);
    }
    let first = claim(&app).await.expect("room for the first");
    let second = claim(&app).await.expect("room for the second");
    assert!(claim(&app).await.is_none(), "a third started while two run");
    finish(&app, &first).await;
    let third = claim(&app).await.expect("room again once one finished");
    assert_eq!(third.execution.id.to_string(), queued[2]);
    drop(second);
}

#[tokio::test]
async fn a_parked_execution_keeps_its_place_against_the_limit() {
    let (app, owner, organization) = idle_app(0).await;
    let workflow = limited_workflow(&app, &owner, &organization, Some(1)).await;
    let older = app.run(&owner, &workflow, json!({})).await;
    app.run(&owner, &workflow, json!({})).await;
    let running = claim(&app).await.unwrap();
    assert_eq!(running.execution.id.to_string(), older);
    let park = ExecutionChange::Requeue(RequeueReason::Parked);
    journal::change_execution(&app.state, &running.lease, park, ExecutionUpdate::default())
        .await
        .unwrap();
    // Parked, it still counts: the next claim resumes it, not the newer one.
    let resumed = claim(&app).await.unwrap();
    assert_eq!(resumed.execution.id.to_string(), older);
    assert!(claim(&app).await.is_none());
}

#[tokio::test]
async fn an_organization_cap_holds_across_its_workflows_and_no_further() {
    let (app, owner, organization) = idle_app(1).await;
    let one = limited_workflow(&app, &owner, &organization, None).await;
    let two = limited_workflow(&app, &owner, &organization, None).await;
    app.run(&owner, &one, json!({})).await;
    app.run(&owner, &two, json!({})).await;
    let other_org = app.organization(&owner, "Elsewhere").await;
    let other = limited_workflow(&app, &owner, &other_org, None).await;
    let elsewhere = app.run(&owner, &other, json!({})).await;

    let first = claim(&app).await.unwrap();
    let next = claim(&app).await.expect("another organization has room");
    assert_eq!(next.execution.id.to_string(), elsewhere);
    assert!(
        claim(&app).await.is_none(),
        "the organization's cap was exceeded"
    );
    finish(&app, &first).await;
    assert!(claim(&app).await.is_some());
}

#[tokio::test]
async fn a_limit_of_one_runs_executions_one_after_another() {
    let app = TestApp::spawn_with(|settings| settings.workers = 4).await;
    let owner = app.user().await;
    let organization = app.organization(&owner, "Acme").await;
    let response = app
        .graphql_as(
            &owner.access_token,
            "mutation($input: CreateWorkflowInput!) { createWorkflow(input: $input) { id } }",
            json!({ "input": {
                "organizationId": organization, "name": "serial", "maxConcurrency": 1,
                "definition": { "steps": [{ "id": "a", "kind": "DELAY", "config": { "ms": 100 } }] }
            } }),
        )
        .await;
    let workflow = response.data()["createWorkflow"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(app.run(&owner, &workflow, json!({})).await);
    }
    let mut spans = Vec::new();
    for id in &ids {
        let execution = app.finished_execution(&owner, id).await;
        assert_eq!(execution["status"], "SUCCEEDED");
        let at = |field: &str| {
            execution[field]
                .as_str()
                .unwrap()
                .parse::<chrono::DateTime<chrono::Utc>>()
                .unwrap()
        };
        spans.push((at("startedAt"), at("finishedAt")));
    }
    spans.sort();
    assert!(
        spans.windows(2).all(|pair| pair[1].0 >= pair[0].1),
        "two ran at once: {spans:?}"
    );
}

async fn update(app: &TestApp, session: &Session, input: Value) -> GqlResponse {
    app.graphql_as(&session.access_token, UPDATE, json!({ "input": input }))
        .await
}

#[tokio::test]
async fn update_workflow_changes_settings_at_the_revision_read_and_refuses_stale_ones() {
    let (app, owner, organization) = idle_app(0).await;
    let workflow = limited_workflow(&app, &owner, &organization, Some(3)).await;
    let updated = update(&app, &owner, json!({ "workflowId": workflow, "revision": 1, "name": "Renamed", "description": "now described" })).await;
    assert_eq!(
        updated.data()["updateWorkflow"],
        json!({ "id": workflow, "name": "Renamed", "description": "now described", "maxConcurrency": 3, "revision": 2 })
    );

    let stale = update(
        &app,
        &owner,
        json!({ "workflowId": workflow, "revision": 1, "maxConcurrency": 5 }),
    )
    .await;
    assert_eq!(stale.error_code(), "CONFLICT");

    let cleared = update(&app, &owner, json!({ "workflowId": workflow, "revision": 2, "maxConcurrency": null, "description": null })).await;
    let cleared = &cleared.data()["updateWorkflow"];
    assert_eq!(
        (
            cleared["maxConcurrency"].clone(),
            cleared["description"].clone(),
            cleared["revision"].clone()
        ),
        (Value::Null, Value::Null, json!(3))
    );
    assert_eq!(
        cleared["name"], "Renamed",
        "a field left out stays as it was"
    );
}

#[tokio::test]
async fn update_workflow_checks_role_and_input() {
    let (app, owner, organization) = idle_app(0).await;
    let workflow = limited_workflow(&app, &owner, &organization, None).await;
    let viewer = app.member(&organization, Role::Viewer).await;
    let refused = update(
        &app,
        &viewer,
        json!({ "workflowId": workflow, "revision": 1, "name": "x" }),
    )
    .await;
    assert_eq!(refused.error_code(), "FORBIDDEN");
    let bad = update(
        &app,
        &owner,
        json!({ "workflowId": workflow, "revision": 1, "maxConcurrency": 0 }),
    )
    .await;
    assert_eq!(bad.error_code(), "BAD_USER_INPUT");
    assert_eq!(bad.error_field(), "maxConcurrency");
}
