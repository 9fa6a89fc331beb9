//! Relay's `node(id:)` and `nodes(ids:)`: any organization, workflow,
//! version or execution by its id, held to the viewer's organizations
//! (NOT_FOUND otherwise), in a number of statements that does not grow
//! with the ids asked for.

use serde_json::{Value, json};

use crate::support::{Session, TestApp};

const NODES: &str = "query Nodes($ids: [ID!]!) {
  nodes(ids: $ids) {
    __typename
    id
    ... on Organization { name }
    ... on Workflow { name }
    ... on WorkflowVersion { number }
    ... on Execution { status }
  }
}";

/// An owner's organization, workflow, its active version and an
/// execution, by id.
async fn objects(app: &TestApp, owner: &Session) -> Vec<String> {
    let organization = app.organization(owner, "Acme").await;
    let workflow = app
        .workflow(
            owner,
            &organization,
            json!([{ "id": "a", "kind": "TRANSFORM", "config": { "output": 1 } }]),
        )
        .await;
    let version = app
        .graphql_as(
            &owner.access_token,
            "query($id: ID!) { workflow(id: $id) { activeVersion { id } } }",
            json!({ "id": workflow }),
        )
        .await
        .data()["workflow"]["activeVersion"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let execution = app.run(owner, &workflow, json!({})).await;
    vec![organization, workflow, version, execution]
}

async fn nodes(app: &TestApp, session: &Session, ids: &[String]) -> Vec<Value> {
    app.graphql_as(&session.access_token, NODES, json!({ "ids": ids }))
        .await
        .data()["nodes"]
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test]
async fn nodes_answers_each_kind_by_id_in_the_order_asked() {
    let app = TestApp::spawn().await;
    let owner = app.user().await;
    let ids = objects(&app, &owner).await;
    let mut asked = ids.clone();
    asked.reverse();
    let found = nodes(&app, &owner, &asked).await;
    let kinds: Vec<&str> = found
        .iter()
        .map(|n| n["__typename"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["Execution", "WorkflowVersion", "Workflow", "Organization"]
    );
    for (node, id) in found.iter().zip(&asked) {
        assert_eq!(node["id"], id.as_str());
    }
    assert_eq!(found[3]["name"], "Acme");
    assert_eq!(found[1]["number"], 1);

    let one = app
        .graphql_as(
            &owner.access_token,
            "query($id: ID!) { node(id: $id) { id ... on Workflow { name } } }",
            json!({ "id": ids[1] }),
        )
        .await;
    assert_eq!(one.data()["node"]["name"], "Test workflow");
}

#[tokio::test]
async fn another_organization_s_objects_are_not_found_by_an_outsider() {
    let app = TestApp::spawn().await;
    let owner = app.user().await;
    let outsider = app.user().await;
    app.organization(&outsider, "Elsewhere").await;
    let ids = objects(&app, &owner).await;
    let mut asked = ids.clone();
    asked.push("00000000-0000-0000-0000-000000000000".to_owned());
    let answer = app
        .graphql_as(&outsider.access_token, NODES, json!({ "ids": asked }))
        .await
        .body;
    let found = answer["data"]["nodes"]
        .as_array()
        .unwrap_or_else(|| panic!("{answer}"));
    assert_eq!(found.len(), 5);
    assert!(found.iter().all(Value::is_null), "{answer}");
    let errors = answer["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 5, "{answer}");
    for (index, error) in errors.iter().enumerate() {
        assert_eq!(error["extensions"]["code"], "NOT_FOUND", "{answer}");
        assert_eq!(error["path"], json!(["nodes", index]), "{answer}");
    }
    assert!(!answer.to_string().contains("Acme"), "{answer}");
    for id in &ids {
        let one = app
            .graphql_as(
                &outsider.access_token,
                "query($id: ID!) { node(id: $id) { id } }",
                json!({ "id": id }),
            )
            .await;
        assert_eq!(one.error_code(), "NOT_FOUND");
        assert_eq!(one.body["data"]["node"], Value::Null);
    }
}

#[tokio::test]
async fn nodes_costs_the_same_statements_for_four_ids_or_forty() {
    // No workers, reaper or scheduler: only this request's statements count.
    let app = TestApp::spawn_with(|settings| {
        settings.workers = 0;
        settings.reaper_interval_ms = 3_600_000;
        settings.scheduler_interval_ms = 3_600_000;
    })
    .await;
    let owner = app.user().await;
    let ids = objects(&app, &owner).await;
    let mut counts = Vec::new();
    for repeat in [1, 10] {
        let asked: Vec<String> = (0..repeat).flat_map(|_| ids.clone()).collect();
        let before = app.state.sql_statements.get();
        let found = nodes(&app, &owner, &asked).await;
        counts.push(app.state.sql_statements.get() - before);
        assert!(found.iter().all(Value::is_object), "{found:?}");
    }
    assert_eq!(
        counts[0], counts[1],
        "statements grew with the ids: {counts:?}"
    );
    // The session with its user, the viewer's memberships, one lookup per
    // kind, and the workflows of the versions.
    assert!(counts[1] <= 9, "{counts:?}");
}

#[tokio::test]
async fn nodes_refuses_more_than_a_hundred_ids() {
    let app = TestApp::spawn().await;
    let owner = app.user().await;
    let ids: Vec<String> = (0..101)
        .map(|_| "00000000-0000-0000-0000-000000000000".to_owned())
        .collect();
    let response = app
        .graphql_as(&owner.access_token, NODES, json!({ "ids": ids }))
        .await;
    assert_eq!(response.error_code(), "BAD_USER_INPUT");
    assert_eq!(response.error_field(), "ids");
}
