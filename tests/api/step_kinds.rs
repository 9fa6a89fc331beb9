//! What editors build on: `stepKinds` describes every step kind with the
//! JSON Schema of its config, and `validateWorkflowDefinition` answers every
//! problem of a definition without saving anything.

use serde_json::{Value, json};

use crate::support::TestApp;

const STEP_KINDS: &str = "{ stepKinds { kind description configSchema } }";
const VALIDATE: &str = "query($definition: WorkflowDefinitionInput!) {
  validateWorkflowDefinition(definition: $definition) { valid problems { field message } }
}";
const WORKFLOWS: &str = "query($id: ID!) { organization(id: $id) { workflows(filter: { archived: false }) { edges { node { id } } } } }";

fn fields(validation: &Value) -> Vec<&str> {
    validation["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .map(|problem| problem["field"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn every_step_kind_is_listed_with_a_description_and_the_schema_of_its_config() {
    let app = TestApp::spawn().await;
    let response = app.graphql(STEP_KINDS, json!({})).await;
    let kinds = response.data()["stepKinds"].as_array().unwrap().clone();
    let names: Vec<&str> = kinds.iter().map(|k| k["kind"].as_str().unwrap()).collect();
    assert_eq!(names, ["TRANSFORM", "DELAY", "FAIL", "CONDITION", "HTTP"]);
    for kind in &kinds {
        assert!(!kind["description"].as_str().unwrap().is_empty(), "{kind}");
        assert_eq!(kind["configSchema"]["type"], "object", "{kind}");
    }
    let http = &kinds[4]["configSchema"];
    assert_eq!(http["required"], json!(["url"]));
    assert_eq!(http["additionalProperties"], false);
    let delay = &kinds[1]["configSchema"];
    assert_eq!(delay["properties"]["ms"]["maximum"], 86_400_000);
    assert_eq!(kinds[3]["configSchema"]["required"], json!(["if"]));
}

#[tokio::test]
async fn validation_answers_every_problem_and_saves_nothing() {
    let app = TestApp::spawn().await;
    let owner = app.user().await;
    let organization = app.organization(&owner, "Acme").await;
    let definition = json!({ "timeoutMs": 0, "steps": [
        { "id": "Fetch", "kind": "HTTP", "config": { "url": "not a url" } },
        { "id": "wait", "kind": "DELAY", "needs": ["nowhere"], "config": { "ms": "soon" } },
        { "id": "wait", "kind": "TRANSFORM", "config": { "output": 1, "extra": true } },
    ] });
    let response = app
        .graphql_as(
            &owner.access_token,
            VALIDATE,
            json!({ "definition": definition }),
        )
        .await;
    let validation = &response.data()["validateWorkflowDefinition"];
    assert_eq!(validation["valid"], false);
    assert_eq!(
        fields(validation),
        [
            "definition.timeoutMs",
            "definition.steps[0].id",
            "definition.steps[0].config.url",
            "definition.steps[1].config.ms",
            "definition.steps[2].id",
            "definition.steps[2].config.extra",
            "definition.steps[1].needs[0]",
        ]
    );
    let listed = app
        .graphql_as(
            &owner.access_token,
            WORKFLOWS,
            json!({ "id": organization }),
        )
        .await;
    assert_eq!(
        listed.data()["organization"]["workflows"]["edges"],
        json!([])
    );
}

#[tokio::test]
async fn a_sound_definition_is_valid_with_no_problems() {
    let app = TestApp::spawn().await;
    let owner = app.user().await;
    let definition = json!({ "steps": [
        { "id": "check", "kind": "CONDITION", "config": { "if": "input.n > 1" } },
        { "id": "double", "kind": "TRANSFORM", "needs": ["check"], "config": { "output": "{{ input.n * 2 }}" } },
    ] });
    let response = app
        .graphql_as(
            &owner.access_token,
            VALIDATE,
            json!({ "definition": definition }),
        )
        .await;
    assert_eq!(
        response.data()["validateWorkflowDefinition"],
        json!({ "valid": true, "problems": [] })
    );
}

#[tokio::test]
async fn more_than_200_steps_is_a_problem_for_validation_and_for_saving() {
    let app = TestApp::spawn().await;
    let owner = app.user().await;
    let organization = app.organization(&owner, "Acme").await;
    let steps: Vec<Value> = (0..201)
        .map(|n| json!({ "id": format!("s{n}"), "kind": "DELAY", "config": { "ms": 0 } }))
        .collect();
    let response = app
        .graphql_as(
            &owner.access_token,
            VALIDATE,
            json!({ "definition": { "steps": steps.clone() } }),
        )
        .await;
    assert_eq!(
        fields(&response.data()["validateWorkflowDefinition"]),
        ["definition.steps"]
    );
    let created = app
        .graphql_as(
            &owner.access_token,
            "mutation($input: CreateWorkflowInput!) { createWorkflow(input: $input) { id } }",
            json!({ "input": { "organizationId": organization, "name": "Huge", "definition": { "steps": steps } } }),
        )
        .await;
    assert_eq!(created.error_code(), "BAD_USER_INPUT");
    assert_eq!(created.error_field(), "definition.steps");

    let two_hundred: Vec<Value> = (0..200)
        .map(|n| json!({ "id": format!("s{n}"), "kind": "DELAY", "config": { "ms": 0 } }))
        .collect();
    let response = app
        .graphql_as(
            &owner.access_token,
            VALIDATE,
            json!({ "definition": { "steps": two_hundred } }),
        )
        .await;
    assert_eq!(response.data()["validateWorkflowDefinition"]["valid"], true);
}

#[tokio::test]
async fn validating_a_definition_needs_a_signed_in_caller() {
    let app = TestApp::spawn().await;
    let definition = json!({ "steps": [{ "id": "a", "kind": "DELAY", "config": { "ms": 0 } }] });
    let response = app
        .graphql(VALIDATE, json!({ "definition": definition }))
        .await;
    assert_eq!(response.error_code(), "UNAUTHENTICATED");
}
