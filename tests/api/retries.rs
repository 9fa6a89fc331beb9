//! Retry policies, step timeouts and execution timeouts.

use std::time::Duration;

use chrono::Duration as Span;
use entity::status::ExecutionStatus;
use flowpilot::engine::journal::{self, ExecutionUpdate};
use flowpilot::engine::state::{ExecutionChange, RequeueReason};
use flowpilot::orgs::principal::Principal;
use serde_json::{Value, json};

use crate::support::{GqlResponse, Session, TestApp, run_request};

async fn owner_and_org(app: &TestApp) -> (Session, String) {
    let owner = app.user().await;
    let organization = app.organization(&owner, "Acme").await;
    (owner, organization)
}

async fn create(
    app: &TestApp,
    owner: &Session,
    organization: &str,
    definition: Value,
) -> GqlResponse {
    app.graphql_as(
        &owner.access_token,
        "mutation($input: CreateWorkflowInput!) { createWorkflow(input: $input) {
            id activeVersion { definition { timeoutMs steps { id retry { maxAttempts initialBackoffMs factor maxBackoffMs jitter } timeoutMs } } }
        } }",
        json!({ "input": { "organizationId": organization, "name": "r", "definition": definition } }),
    )
    .await
}

async fn step_kinds(app: &TestApp, execution_id: &str) -> Vec<String> {
    use entity::execution_event;
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
    execution_event::Entity::find()
        .filter(
            execution_event::Column::ExecutionId.eq(execution_id.parse::<uuid::Uuid>().unwrap()),
        )
        .order_by_asc(execution_event::Column::Seq)
        .all(&app.state.db)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect()
}

#[tokio::test]
async fn a_definition_keeps_its_retry_policies_and_timeouts() {
    let app = TestApp::spawn().await;
    let (owner, organization) = owner_and_org(&app).await;
    let response = create(
        &app,
        &owner,
        &organization,
        json!({ "timeoutMs": 60000, "steps": [
            { "id": "a", "kind": "DELAY", "config": { "ms": 1 }, "timeoutMs": 500, "retry": { "maxAttempts": 4, "factor": 3 } }
        ] }),
    )
    .await;
    let definition = &response.data()["createWorkflow"]["activeVersion"]["definition"];
    assert_eq!(definition["timeoutMs"], 60000);
    assert_eq!(definition["steps"][0]["timeoutMs"], 500);
    assert_eq!(
        definition["steps"][0]["retry"],
        json!({ "maxAttempts": 4, "initialBackoffMs": 1000, "factor": 3.0, "maxBackoffMs": 60000, "jitter": 0.0 })
    );
}

#[tokio::test]
async fn retry_policies_and_timeouts_out_of_bounds_are_bad_user_input() {
    let app = TestApp::spawn().await;
    let (owner, organization) = owner_and_org(&app).await;
    let step = |extra: Value| {
        let mut step = json!({ "id": "a", "kind": "DELAY", "config": { "ms": 1 } });
        step.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        json!({ "steps": [step] })
    };
    let cases = [
        (
            step(json!({ "retry": { "maxAttempts": 0 } })),
            "definition.steps[0].retry.maxAttempts",
        ),
        (
            step(json!({ "retry": { "maxAttempts": 2, "jitter": 1.5 } })),
            "definition.steps[0].retry.jitter",
        ),
        (
            step(
                json!({ "retry": { "maxAttempts": 2, "initialBackoffMs": 5000, "maxBackoffMs": 10 } }),
            ),
            "definition.steps[0].retry.maxBackoffMs",
        ),
        (
            step(json!({ "timeoutMs": 0 })),
            "definition.steps[0].timeoutMs",
        ),
        (
            json!({ "timeoutMs": 0, "steps": [{ "id": "a", "kind": "DELAY", "config": { "ms": 1 } }] }),
            "definition.timeoutMs",
        ),
    ];
    for (definition, field) in cases {
        let response = create(&app, &owner, &organization, definition.clone()).await;
        assert_eq!(response.error_code(), "BAD_USER_INPUT", "{definition}");
        assert_eq!(response.error_field(), field, "{definition}");
    }
}

#[tokio::test]
async fn a_failing_step_is_retried_as_its_policy_says_then_fails() {
    let app = TestApp::spawn().await;
    let (owner, organization) = owner_and_org(&app).await;
    let workflow = app
        .workflow(
            &owner,
            &organization,
            json!([{ "id": "flaky", "kind": "FAIL", "config": { "message": "down" }, "retry": { "maxAttempts": 3, "initialBackoffMs": 20 } }]),
        )
        .await;
    let id = app.run(&owner, &workflow, json!({})).await;
    let execution = app.finished_execution(&owner, &id).await;
    assert_eq!(execution["status"], "FAILED");
    assert_eq!(execution["error"], "step `flaky` failed: down");
    assert_eq!(
        (
            execution["steps"][0]["attempt"].as_i64(),
            execution["steps"][0]["status"].as_str()
        ),
        (Some(3), Some("FAILED"))
    );
    let kinds = step_kinds(&app, &id).await;
    assert_eq!(
        kinds[2..],
        [
            "STEP_STARTED",
            "STEP_RETRYING",
            "STEP_STARTED",
            "STEP_RETRYING",
            "STEP_STARTED",
            "STEP_FAILED",
            "EXECUTION_FAILED"
        ]
    );
}

#[tokio::test]
async fn a_step_that_runs_too_long_fails_the_attempt_and_is_retried() {
    let app = TestApp::spawn().await;
    let (owner, organization) = owner_and_org(&app).await;
    let workflow = app
        .workflow(
            &owner,
            &organization,
            json!([{ "id": "slow", "kind": "DELAY", "config": { "ms": 60000 }, "timeoutMs": 50, "retry": { "maxAttempts": 2, "initialBackoffMs": 10 } }]),
        )
        .await;
    let id = app.run(&owner, &workflow, json!({})).await;
    let execution = app.finished_execution(&owner, &id).await;
    assert_eq!(execution["status"], "FAILED");
    assert_eq!(execution["steps"][0]["attempt"], 2);
    assert_eq!(
        execution["steps"][0]["error"],
        "the attempt timed out after 50 ms"
    );
}

#[tokio::test]
async fn an_execution_past_its_timeout_ends_timed_out_and_cancels_what_runs() {
    let app = TestApp::spawn().await;
    let (owner, organization) = owner_and_org(&app).await;
    let response = create(
        &app,
        &owner,
        &organization,
        json!({ "timeoutMs": 300, "steps": [
            { "id": "long", "kind": "DELAY", "config": { "ms": 60000 } },
            { "id": "next", "kind": "TRANSFORM", "needs": ["long"], "config": { "output": 1 } }
        ] }),
    )
    .await;
    let workflow = response.data()["createWorkflow"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let id = app.run(&owner, &workflow, json!({})).await;
    let execution = app.finished_execution(&owner, &id).await;
    assert_eq!(execution["status"], "TIMED_OUT");
    assert_eq!(execution["error"], "the execution timed out after 300 ms");
    assert!(
        execution["steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["status"] == "CANCELLED"),
        "{execution}"
    );
}

#[tokio::test]
async fn a_queued_execution_times_out_from_its_first_start_while_it_waits() {
    let app = TestApp::spawn_with(|settings| {
        settings.workers = 0;
        settings.reaper_interval_ms = 3_600_000;
    })
    .await;
    let (owner, organization) = owner_and_org(&app).await;
    let response = create(&app, &owner, &organization, json!({ "timeoutMs": 60000, "steps": [{ "id": "a", "kind": "DELAY", "config": { "ms": 1 } }] })).await;
    let workflow: uuid::Uuid = response.data()["createWorkflow"]["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let user = Principal::User(owner.user_id.parse().unwrap());
    let queued = flowpilot::executions::service::run_workflow(
        &app.state,
        user,
        run_request(workflow, json!({})),
    )
    .await
    .unwrap();
    // Started once, then back in the queue (as when handed back or parked).
    let claimed = journal::claim_next_execution(&app.state, "w", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    assert!(claimed.execution.timeout_at.is_some());
    let back = ExecutionChange::Requeue(RequeueReason::HandedBack);
    journal::change_execution(&app.state, &claimed.lease, back, ExecutionUpdate::default())
        .await
        .unwrap();

    assert_eq!(
        flowpilot::engine::reaper::reap_once(&app.state)
            .await
            .unwrap(),
        0
    );
    let id = queued.execution.id;
    let still_queued = entity::execution::Entity::find_by_id(id);
    use sea_orm::EntityTrait;
    assert_eq!(
        still_queued
            .clone()
            .one(&app.state.db)
            .await
            .unwrap()
            .unwrap()
            .status,
        ExecutionStatus::Queued
    );
    app.clock.advance(Span::seconds(61));
    flowpilot::engine::reaper::reap_once(&app.state)
        .await
        .unwrap();
    let row = still_queued.one(&app.state.db).await.unwrap().unwrap();
    assert_eq!(row.status, ExecutionStatus::TimedOut);
    assert_eq!(
        row.error.as_deref(),
        Some("the execution timed out after 60000 ms")
    );
}

/// A server that parks any wait over 100 ms and polls the queue often.
async fn parking_app() -> TestApp {
    TestApp::spawn_with(|settings| {
        settings.workers = 1;
        settings.park_after_ms = 100;
        settings.poll_interval_ms = 50;
    })
    .await
}

#[tokio::test]
async fn a_long_backoff_parks_the_execution_until_the_retry_is_due() {
    let app = parking_app().await;
    let (owner, organization) = owner_and_org(&app).await;
    let workflow = app
        .workflow(&owner, &organization, json!([{ "id": "flaky", "kind": "FAIL", "config": { "message": "down" }, "retry": { "maxAttempts": 2, "initialBackoffMs": 400 } }]))
        .await;
    let id = app.run(&owner, &workflow, json!({})).await;
    let execution = app.finished_execution(&owner, &id).await;
    assert_eq!(execution["status"], "FAILED");
    assert_eq!(
        step_kinds(&app, &id).await,
        [
            "EXECUTION_QUEUED",
            "EXECUTION_STARTED",
            "STEP_STARTED",
            "STEP_RETRYING",
            "EXECUTION_REQUEUED",
            "EXECUTION_STARTED",
            "STEP_STARTED",
            "STEP_FAILED",
            "EXECUTION_FAILED"
        ]
    );
}

#[tokio::test]
async fn a_long_delay_parks_and_ends_when_it_was_due() {
    let app = parking_app().await;
    let (owner, organization) = owner_and_org(&app).await;
    let workflow = app
        .workflow(
            &owner,
            &organization,
            json!([{ "id": "pause", "kind": "DELAY", "config": { "ms": 600 } }]),
        )
        .await;
    let id = app.run(&owner, &workflow, json!({})).await;
    let execution = app.finished_execution(&owner, &id).await;
    assert_eq!(execution["status"], "SUCCEEDED");
    let kinds = step_kinds(&app, &id).await;
    assert_eq!(
        kinds[3..5],
        ["STEP_RETRYING", "EXECUTION_REQUEUED"],
        "{kinds:?}"
    );
    // Resumed, the DELAY kept the end it was given when it first started.
    let started: chrono::DateTime<chrono::Utc> =
        execution["startedAt"].as_str().unwrap().parse().unwrap();
    let until: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(execution["steps"][0]["input"]["until"].clone()).unwrap();
    let planned = until - started;
    assert!(
        planned >= Span::milliseconds(600) && planned < Span::milliseconds(900),
        "planned {planned}"
    );
}

#[tokio::test]
async fn a_crash_does_not_restart_a_delay_from_zero() {
    let app = TestApp::spawn_with(|settings| {
        settings.workers = 0;
        settings.reaper_interval_ms = 3_600_000;
    })
    .await;
    let (owner, organization) = owner_and_org(&app).await;
    let workflow: uuid::Uuid = app
        .workflow(
            &owner,
            &organization,
            json!([{ "id": "pause", "kind": "DELAY", "config": { "ms": 600000 } }]),
        )
        .await
        .parse()
        .unwrap();
    let user = Principal::User(owner.user_id.parse().unwrap());
    let queued = flowpilot::executions::service::run_workflow(
        &app.state,
        user,
        run_request(workflow, json!({})),
    )
    .await
    .unwrap();
    // A worker started the ten-minute DELAY nearly ten minutes ago, then died.
    let dead = journal::claim_next_execution(&app.state, "dead", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    let until = app.clock.now() + Span::milliseconds(300);
    let input = json!({ "ms": 600000, "until": until });
    let started = journal::StepUpdate {
        input: Some(input),
        ..journal::StepUpdate::default()
    };
    journal::change_step(
        &app.state,
        &dead.lease,
        "pause",
        entity::status::StepStatus::Running,
        started,
    )
    .await
    .unwrap();
    app.clock.advance(Span::seconds(31));
    assert_eq!(
        flowpilot::engine::reaper::reap_once(&app.state)
            .await
            .unwrap(),
        1
    );

    let mut app = app;
    app.settings.workers = 1;
    let app = app.restart().await;
    let id = queued.execution.id.to_string();
    let execution =
        tokio::time::timeout(Duration::from_secs(15), app.finished_execution(&owner, &id))
            .await
            .expect("the DELAY waited only for what was left, not ten minutes");
    assert_eq!(execution["status"], "SUCCEEDED");
    assert_eq!(execution["steps"][0]["input"]["until"], json!(until));
}
