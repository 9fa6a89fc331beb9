//! Running workflows end to end: outputs, failures, skips and permissions.

use entity::execution_event;
use entity::role::Role;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use serde_json::{Value, json};

use crate::support::TestApp;

const EXECUTION: &str = "query($id: ID!) { execution(id: $id) { id status } }";

fn statuses(execution: &Value) -> Vec<(String, String)> {
    execution["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["stepId"].as_str().unwrap().to_owned(),
                s["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_workflow_runs_its_steps_in_order_and_succeeds_with_the_sink_output() {
    let app = TestApp::spawn().await;
    let owner = app.user().await;
    let organization = app.organization(&owner, "Acme").await;
    let workflow = app
        .workflow(
            &owner,
            &organization,
            json!([
                { "id": "double", "kind": "TRANSFORM", "config": { "output": { "n": "{{ input.n * 2 }}", "tags": "{{ input.tags }}" } } },
                { "id": "pause", "kind": "DELAY", "needs": ["double"], "config": { "ms": 20 } },
                { "id": "report", "kind": "TRANSFORM", "needs": ["pause", "double"], "config": { "output": "n is {{ steps.double.output.n }}" } }
            ]),
        )
        .await;
    let id = app
        .run(&owner, &workflow, json!({ "n": 21, "tags": ["a", "b"] }))
        .await;
    let execution = app.finished_execution(&owner, &id).await;

    assert_eq!(execution["status"], "SUCCEEDED");
    assert_eq!(execution["output"], "n is 42");
    assert_eq!(execution["error"], Value::Null);
    assert_eq!(execution["input"], json!({ "n": 21, "tags": ["a", "b"] }));
    assert!(execution["startedAt"].is_string() && execution["finishedAt"].is_string());
    let steps = execution["steps"].as_array().unwrap();
    assert_eq!(
        steps[0]["output"],
        json!({ "n": 42, "tags": ["a", "b"] }),
        "a sole expression keeps its type"
    );
    assert_eq!(
        steps[0]["input"],
        json!({ "output": { "n": 42, "tags": ["a", "b"] } })
    );
    assert!(
        steps
            .iter()
            .all(|s| s["status"] == "SUCCEEDED" && s["attempt"] == 1),
        "{steps:?}"
    );
    // queued, started, 3 × (step started, step succeeded), succeeded
    assert_eq!(execution["lastEventSeq"], 9);
}

#[tokio::test]
async fn the_event_log_holds_every_seq_once_with_the_changes_in_order() {
    let app = TestApp::spawn().await;
    let owner = app.user().await;
    let organization = app.organization(&owner, "Acme").await;
    let workflow = app
        .workflow(
            &owner,
            &organization,
            json!([{ "id": "only", "kind": "TRANSFORM", "config": { "output": 1 } }]),
        )
        .await;
    let id = app.run(&owner, &workflow, json!({})).await;
    app.finished_execution(&owner, &id).await;

    let rows = execution_event::Entity::find()
        .filter(execution_event::Column::ExecutionId.eq(id.parse::<uuid::Uuid>().unwrap()))
        .order_by_asc(execution_event::Column::Seq)
        .all(&app.state.db)
        .await
        .unwrap();
    let seqs: Vec<i32> = rows.iter().map(|r| r.seq).collect();
    let kinds: Vec<&str> = rows.iter().map(|r| r.kind.as_str()).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
    assert_eq!(
        kinds,
        [
            "EXECUTION_QUEUED",
            "EXECUTION_STARTED",
            "STEP_STARTED",
            "STEP_SUCCEEDED",
            "EXECUTION_SUCCEEDED"
        ]
    );
}

#[tokio::test]
async fn several_sinks_give_an_output_keyed_by_step_id() {
    let app = TestApp::spawn().await;
    let owner = app.user().await;
    let organization = app.organization(&owner, "Acme").await;
    let workflow = app
        .workflow(
            &owner,
            &organization,
            json!([
                { "id": "root", "kind": "TRANSFORM", "config": { "output": "{{ input.word }}" } },
                { "id": "upper", "kind": "TRANSFORM", "needs": ["root"], "config": { "output": "{{ steps.root.output | upper }}" } },
                { "id": "length", "kind": "TRANSFORM", "needs": ["root"], "config": { "output": "{{ steps.root.output | length }}" } }
            ]),
        )
        .await;
    let id = app.run(&owner, &workflow, json!({ "word": "flow" })).await;
    let execution = app.finished_execution(&owner, &id).await;
    assert_eq!(execution["status"], "SUCCEEDED");
    assert_eq!(execution["output"], json!({ "upper": "FLOW", "length": 4 }));
}

#[tokio::test]
async fn a_failing_step_fails_the_execution_and_cancels_the_rest() {
    let app = TestApp::spawn().await;
    let owner = app.user().await;
    let organization = app.organization(&owner, "Acme").await;
    let workflow = app
        .workflow(
            &owner,
            &organization,
            json!([
                { "id": "boom", "kind": "FAIL", "config": { "message": "bad input {{ input.n }}" } },
                { "id": "slow", "kind": "DELAY", "config": { "ms": 60000 } },
                { "id": "after", "kind": "TRANSFORM", "needs": ["boom"], "config": { "output": 1 } }
            ]),
        )
        .await;
    let id = app.run(&owner, &workflow, json!({ "n": 7 })).await;
    let execution = app.finished_execution(&owner, &id).await;
    assert_eq!(execution["status"], "FAILED");
    assert_eq!(execution["error"], "step `boom` failed: bad input 7");
    assert_eq!(execution["output"], Value::Null);
    let by_step = statuses(&execution);
    assert_eq!(
        by_step,
        [
            ("boom".into(), "FAILED".into()),
            ("slow".into(), "CANCELLED".into()),
            ("after".into(), "CANCELLED".into())
        ]
    );
    assert_eq!(execution["steps"][0]["error"], "bad input 7");
}

#[tokio::test]
async fn an_unknown_template_variable_fails_its_step() {
    let app = TestApp::spawn().await;
    let owner = app.user().await;
    let organization = app.organization(&owner, "Acme").await;
    let workflow = app
        .workflow(&owner, &organization, json!([{ "id": "a", "kind": "TRANSFORM", "config": { "output": "{{ input.missing }}" } }]))
        .await;
    let id = app.run(&owner, &workflow, json!({})).await;
    let execution = app.finished_execution(&owner, &id).await;
    assert_eq!(execution["status"], "FAILED");
    assert_eq!(execution["steps"][0]["status"], "FAILED");
    assert!(
        execution["error"].as_str().unwrap().contains("undefined"),
        "{}",
        execution["error"]
    );
}

#[tokio::test]
async fn editors_run_workflows_and_viewers_may_not() {
    let app = TestApp::spawn().await;
    let owner = app.user().await;
    let organization = app.organization(&owner, "Acme").await;
    let editor = app.member(&organization, Role::Editor).await;
    let viewer = app.member(&organization, Role::Viewer).await;
    let workflow = app
        .workflow(
            &owner,
            &organization,
            json!([{ "id": "a", "kind": "TRANSFORM", "config": { "output": 1 } }]),
        )
        .await;

    let id = app.run(&editor, &workflow, json!({})).await;
    let refused = app
        .graphql_as(
            &viewer.access_token,
            "mutation($input: RunWorkflowInput!) { runWorkflow(input: $input) { id } }",
            json!({ "input": { "workflowId": workflow } }),
        )
        .await;
    assert_eq!(refused.error_code(), "FORBIDDEN");

    let read = app
        .graphql_as(&viewer.access_token, EXECUTION, json!({ "id": id }))
        .await;
    assert_eq!(read.data()["execution"]["id"].as_str(), Some(id.as_str()));
}

#[tokio::test]
async fn outsiders_get_not_found_for_executions_and_cannot_run_workflows() {
    let app = TestApp::spawn().await;
    let owner = app.user().await;
    let outsider = app.user().await;
    let organization = app.organization(&owner, "Acme").await;
    let workflow = app
        .workflow(
            &owner,
            &organization,
            json!([{ "id": "a", "kind": "TRANSFORM", "config": { "output": 1 } }]),
        )
        .await;
    let id = app.run(&owner, &workflow, json!({})).await;

    let read = app
        .graphql_as(&outsider.access_token, EXECUTION, json!({ "id": id }))
        .await;
    assert_eq!(read.error_code(), "NOT_FOUND");
    assert_eq!(read.body["data"]["execution"], Value::Null);
    let run = app
        .graphql_as(
            &outsider.access_token,
            "mutation($input: RunWorkflowInput!) { runWorkflow(input: $input) { id } }",
            json!({ "input": { "workflowId": workflow } }),
        )
        .await;
    assert_eq!(run.error_code(), "NOT_FOUND");
}

#[tokio::test]
async fn independent_steps_run_at_the_same_time() {
    let app = TestApp::spawn().await;
    let owner = app.user().await;
    let organization = app.organization(&owner, "Acme").await;
    let workflow = app
        .workflow(
            &owner,
            &organization,
            json!([
                { "id": "left", "kind": "DELAY", "config": { "ms": 200 } },
                { "id": "right", "kind": "DELAY", "config": { "ms": 200 } },
                { "id": "join", "kind": "TRANSFORM", "needs": ["left", "right"], "config": { "output": "both" } }
            ]),
        )
        .await;
    let id = app.run(&owner, &workflow, json!({})).await;
    app.finished_execution(&owner, &id).await;
    let rows = execution_event::Entity::find()
        .filter(execution_event::Column::ExecutionId.eq(id.parse::<uuid::Uuid>().unwrap()))
        .order_by_asc(execution_event::Column::Seq)
        .all(&app.state.db)
        .await
        .unwrap();
    let kinds: Vec<&str> = rows.iter().map(|r| r.kind.as_str()).collect();
    // Both delays start before either finishes.
    assert_eq!(
        kinds[2..6],
        [
            "STEP_STARTED",
            "STEP_STARTED",
            "STEP_SUCCEEDED",
            "STEP_SUCCEEDED"
        ],
        "{kinds:?}"
    );
}

#[tokio::test]
async fn a_false_condition_skips_the_steps_behind_it_and_a_true_one_runs_them() {
    let app = TestApp::spawn().await;
    let owner = app.user().await;
    let organization = app.organization(&owner, "Acme").await;
    let workflow = app
        .workflow(
            &owner,
            &organization,
            json!([
                { "id": "big", "kind": "CONDITION", "config": { "if": "input.n > 10" } },
                { "id": "small", "kind": "CONDITION", "config": { "if": "input.n <= 10" } },
                { "id": "shout", "kind": "TRANSFORM", "needs": ["big"], "config": { "output": "BIG {{ input.n }}" } },
                { "id": "after_shout", "kind": "TRANSFORM", "needs": ["shout"], "config": { "output": "echo" } },
                { "id": "whisper", "kind": "TRANSFORM", "needs": ["small"], "config": { "output": "small {{ input.n }}" } }
            ]),
        )
        .await;
    let id = app.run(&owner, &workflow, json!({ "n": 3 })).await;
    let execution = app.finished_execution(&owner, &id).await;
    assert_eq!(execution["status"], "SUCCEEDED");
    assert_eq!(
        statuses(&execution),
        [
            ("big".into(), "SUCCEEDED".into()),
            ("small".into(), "SUCCEEDED".into()),
            ("shout".into(), "SKIPPED".into()),
            ("after_shout".into(), "SKIPPED".into()),
            ("whisper".into(), "SUCCEEDED".into()),
        ]
    );
    assert_eq!(execution["steps"][0]["output"], json!({ "result": false }));
    assert_eq!(execution["steps"][1]["output"], json!({ "result": true }));
    // Sinks: the skipped one is left out of the output.
    assert_eq!(execution["output"], json!({ "whisper": "small 3" }));
}

#[tokio::test]
async fn a_condition_that_does_not_compile_is_bad_user_input() {
    let app = TestApp::spawn().await;
    let owner = app.user().await;
    let organization = app.organization(&owner, "Acme").await;
    let response = app
        .graphql_as(
            &owner.access_token,
            "mutation($input: CreateWorkflowInput!) { createWorkflow(input: $input) { id } }",
            json!({ "input": { "organizationId": organization, "name": "c", "definition": { "steps": [
                { "id": "c", "kind": "CONDITION", "config": { "if": "input.n >" } }
            ] } } }),
        )
        .await;
    assert_eq!(response.error_code(), "BAD_USER_INPUT");
    assert_eq!(response.error_field(), "definition.steps[0].config.if");
}

#[tokio::test]
async fn an_input_with_the_largest_and_smallest_numbers_reads_back_as_sent() {
    let app = TestApp::spawn_with(|settings| settings.workers = 0).await;
    let owner = app.user().await;
    let organization = app.organization(&owner, "Acme").await;
    let workflow = app
        .workflow(
            &owner,
            &organization,
            json!([{ "id": "a", "kind": "TRANSFORM", "config": { "output": 1 } }]),
        )
        .await;
    let input = json!({ "max": -1.797_693_134_862_315_7e308, "tiny": 1e-300, "big": 1e300 });
    let id = app.run(&owner, &workflow, input.clone()).await;
    let read = app
        .graphql_as(
            &owner.access_token,
            "query($id: ID!) { execution(id: $id) { input } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(read.data()["execution"]["input"], input);
}
