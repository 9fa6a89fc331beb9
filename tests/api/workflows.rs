//! Creating and reading workflows: validation with field paths, versions,
//! and who may do what.

use entity::role::Role;
use serde_json::{Value, json};

use crate::support::{GqlResponse, Session, TestApp};

const CREATE: &str = "mutation($input: CreateWorkflowInput!) {
  createWorkflow(input: $input) {
    id name description
    organization { id viewerRole }
    activeVersion { number definition { steps { id kind needs config } } }
  }
}";
const WORKFLOW: &str = "query($id: ID!) { workflow(id: $id) { id name activeVersion { number } } }";

async fn create(
    app: &TestApp,
    session: &Session,
    organization_id: &str,
    steps: Value,
) -> GqlResponse {
    app.graphql_as(
        &session.access_token,
        CREATE,
        json!({ "input": { "organizationId": organization_id, "name": " Nightly report ", "description": "Builds it", "definition": { "steps": steps } } }),
    )
    .await
}

fn two_steps() -> Value {
    json!([
        { "id": "fetch", "kind": "TRANSFORM", "config": { "output": { "n": "{{ input.n }}" } } },
        { "id": "report", "kind": "TRANSFORM", "needs": ["fetch"], "config": { "output": "n={{ steps.fetch.output.n }}" } }
    ])
}

#[tokio::test]
async fn an_editor_creates_a_workflow_whose_first_version_is_active() {
    let app = TestApp::spawn().await;
    let owner = app.user().await;
    let organization = app.organization(&owner, "Acme").await;
    let editor = app.member(&organization, Role::Editor).await;
    let response = create(&app, &editor, &organization, two_steps()).await;
    let workflow = &response.data()["createWorkflow"];
    assert_eq!(workflow["name"], "Nightly report");
    assert_eq!(workflow["description"], "Builds it");
    assert_eq!(
        workflow["organization"],
        json!({ "id": organization, "viewerRole": "EDITOR" })
    );
    assert_eq!(workflow["activeVersion"]["number"], 1);
    assert_eq!(
        workflow["activeVersion"]["definition"]["steps"],
        json!([
            { "id": "fetch", "kind": "TRANSFORM", "needs": [], "config": { "output": { "n": "{{ input.n }}" } } },
            { "id": "report", "kind": "TRANSFORM", "needs": ["fetch"], "config": { "output": "n={{ steps.fetch.output.n }}" } }
        ])
    );

    let id = workflow["id"].as_str().unwrap();
    let read = app
        .graphql_as(&owner.access_token, WORKFLOW, json!({ "id": id }))
        .await;
    assert_eq!(read.data()["workflow"]["activeVersion"]["number"], 1);
}

#[tokio::test]
async fn a_viewer_reads_workflows_but_cannot_create_them() {
    let app = TestApp::spawn().await;
    let owner = app.user().await;
    let organization = app.organization(&owner, "Acme").await;
    let viewer = app.member(&organization, Role::Viewer).await;
    let refused = create(&app, &viewer, &organization, two_steps()).await;
    assert_eq!(refused.error_code(), "FORBIDDEN");

    let id = app.workflow(&owner, &organization, two_steps()).await;
    let read = app
        .graphql_as(&viewer.access_token, WORKFLOW, json!({ "id": id }))
        .await;
    assert_eq!(read.data()["workflow"]["id"].as_str(), Some(id.as_str()));
}

#[tokio::test]
async fn outsiders_get_not_found_for_workflows_and_their_organization() {
    let app = TestApp::spawn().await;
    let owner = app.user().await;
    let outsider = app.user().await;
    let organization = app.organization(&owner, "Acme").await;
    let id = app.workflow(&owner, &organization, two_steps()).await;

    let read = app
        .graphql_as(&outsider.access_token, WORKFLOW, json!({ "id": id }))
        .await;
    assert_eq!(read.error_code(), "NOT_FOUND");
    assert_eq!(read.body["data"]["workflow"], Value::Null);

    let create_there = create(&app, &outsider, &organization, two_steps()).await;
    assert_eq!(create_there.error_code(), "NOT_FOUND");
}

#[tokio::test]
async fn invalid_definitions_are_bad_user_input_pointing_at_the_field() {
    let app = TestApp::spawn().await;
    let owner = app.user().await;
    let organization = app.organization(&owner, "Acme").await;
    let delay = |id: &str, needs: Value| json!({ "id": id, "kind": "DELAY", "needs": needs, "config": { "ms": 1 } });
    let cases = [
        (json!([]), "definition.steps"),
        (
            json!([delay("Bad-Id", json!([]))]),
            "definition.steps[0].id",
        ),
        (
            json!([delay("a", json!([])), delay("a", json!([]))]),
            "definition.steps[1].id",
        ),
        (
            json!([delay("a", json!(["ghost"]))]),
            "definition.steps[0].needs[0]",
        ),
        (
            json!([delay("a", json!(["a"]))]),
            "definition.steps[0].needs[0]",
        ),
        (
            json!([delay("a", json!(["b"])), delay("b", json!(["a"]))]),
            "definition.steps[0].needs",
        ),
        (
            json!([{ "id": "a", "kind": "DELAY", "config": { "ms": 1, "seconds": 2 } }]),
            "definition.steps[0].config.seconds",
        ),
        (
            json!([{ "id": "a", "kind": "DELAY", "config": { "ms": -5 } }]),
            "definition.steps[0].config.ms",
        ),
        (
            json!([{ "id": "a", "kind": "FAIL", "config": {} }]),
            "definition.steps[0].config.message",
        ),
        (
            json!([{ "id": "a", "kind": "TRANSFORM", "config": "not an object" }]),
            "definition.steps[0].config",
        ),
        (
            json!([delay("a", json!([])), { "id": "b", "kind": "TRANSFORM", "config": { "output": { "x": ["ok", "{{ input.n + }}"] } } }]),
            "definition.steps[1].config.output.x[1]",
        ),
    ];
    for (steps, field) in cases {
        let response = create(&app, &owner, &organization, steps.clone()).await;
        assert_eq!(response.error_code(), "BAD_USER_INPUT", "{steps}");
        assert_eq!(response.error_field(), field, "{steps}");
    }
}

#[tokio::test]
async fn a_blank_workflow_name_is_bad_user_input() {
    let app = TestApp::spawn().await;
    let owner = app.user().await;
    let organization = app.organization(&owner, "Acme").await;
    let response = app
        .graphql_as(
            &owner.access_token,
            CREATE,
            json!({ "input": { "organizationId": organization, "name": "  ", "definition": { "steps": two_steps() } } }),
        )
        .await;
    assert_eq!(response.error_code(), "BAD_USER_INPUT");
    assert_eq!(response.error_field(), "name");
}
