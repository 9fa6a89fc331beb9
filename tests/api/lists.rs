//! Lists of executions (`workflow.executions`, `organization.executions`)
//! and of an execution's events (`execution.events`): pages, cursors,
//! filters, and a statement count that does not grow with the page.

use serde_json::{Value, json};

use crate::support::{Session, TestApp};

const ORGANIZATION_EXECUTIONS: &str = "
query($id: ID!, $first: Int, $after: String, $filter: ExecutionFilterInput) {
  organization(id: $id) {
    executions(first: $first, after: $after, filter: $filter) {
      edges { cursor node { id status queuedAt workflow { name } steps { stepId status } } }
      pageInfo { hasNextPage hasPreviousPage endCursor }
    }
  }
}";

const WORKFLOW_EXECUTIONS: &str = "
query($id: ID!, $first: Int, $after: String, $filter: ExecutionFilterInput) {
  workflow(id: $id) {
    executions(first: $first, after: $after, filter: $filter) {
      edges { node { id status queuedAt } }
      pageInfo { hasNextPage endCursor }
    }
  }
}";

/// An app with no workers (executions stay QUEUED) and no reaper, so the
/// database is touched only by the requests.
async fn quiet_app() -> TestApp {
    TestApp::spawn_with(|settings| {
        settings.workers = 0;
        settings.reaper_interval_ms = 3_600_000;
    })
    .await
}

async fn setup(app: &TestApp) -> (Session, String, String) {
    let owner = app.user().await;
    let organization = app.organization(&owner, "Acme").await;
    let steps = json!([{ "id": "a", "kind": "TRANSFORM", "config": { "output": 1 } }]);
    let workflow = app.workflow(&owner, &organization, steps).await;
    (owner, organization, workflow)
}

async fn page(app: &TestApp, owner: &Session, query: &str, variables: Value) -> Value {
    let response = app.graphql_as(&owner.access_token, query, variables).await;
    let data = response.data();
    data.get("organization")
        .filter(|v| !v.is_null())
        .unwrap_or(&data["workflow"])["executions"]
        .clone()
}

fn ids(connection: &Value) -> Vec<String> {
    connection["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|edge| edge["node"]["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn executions_are_listed_newest_first_with_cursors_that_survive_inserts() {
    let app = quiet_app().await;
    let (owner, organization, workflow) = setup(&app).await;
    let mut started = Vec::new();
    for n in 0..5 {
        started.push(app.run(&owner, &workflow, json!({ "n": n })).await);
    }
    let newest_first: Vec<String> = started.iter().rev().cloned().collect();

    let vars =
        |first: i32, after: Value| json!({ "id": organization, "first": first, "after": after });
    let first = page(&app, &owner, ORGANIZATION_EXECUTIONS, vars(2, Value::Null)).await;
    assert_eq!(ids(&first), newest_first[..2]);
    assert_eq!(first["pageInfo"]["hasNextPage"], true);
    assert_eq!(first["pageInfo"]["hasPreviousPage"], false);
    assert_eq!(
        first["edges"][0]["node"]["workflow"]["name"],
        "Test workflow"
    );

    let second = page(
        &app,
        &owner,
        ORGANIZATION_EXECUTIONS,
        vars(2, first["pageInfo"]["endCursor"].clone()),
    )
    .await;
    assert_eq!(ids(&second), newest_first[2..4]);
    assert_eq!(second["pageInfo"]["hasPreviousPage"], true);

    // A new execution lands at the head of the list, not in the next page.
    app.run(&owner, &workflow, json!({ "n": 5 })).await;
    let third = page(
        &app,
        &owner,
        ORGANIZATION_EXECUTIONS,
        vars(2, second["pageInfo"]["endCursor"].clone()),
    )
    .await;
    assert_eq!(ids(&third), newest_first[4..]);
    assert_eq!(third["pageInfo"]["hasNextPage"], false);

    let everything = page(
        &app,
        &owner,
        ORGANIZATION_EXECUTIONS,
        json!({ "id": organization }),
    )
    .await;
    assert_eq!(ids(&everything).len(), 6, "first defaults to 20");
}

#[tokio::test]
async fn page_sizes_and_cursors_out_of_bounds_are_bad_input() {
    let app = quiet_app().await;
    let (owner, organization, _) = setup(&app).await;
    for (variables, field) in [
        (json!({ "id": organization, "first": 101 }), "first"),
        (json!({ "id": organization, "first": -1 }), "first"),
        (
            json!({ "id": organization, "after": "bm90LWEtY3Vyc29y" }),
            "after",
        ),
        (json!({ "id": organization, "after": "%%%" }), "after"),
    ] {
        let response = app
            .graphql_as(
                &owner.access_token,
                ORGANIZATION_EXECUTIONS,
                variables.clone(),
            )
            .await;
        assert_eq!(response.error_code(), "BAD_USER_INPUT", "{variables}");
        assert_eq!(response.error_field(), field, "{variables}");
    }
}

#[tokio::test]
async fn a_workflows_executions_are_its_own_and_filter_by_status_and_time() {
    let app = quiet_app().await;
    let (owner, organization, workflow) = setup(&app).await;
    let steps = json!([{ "id": "b", "kind": "TRANSFORM", "config": { "output": 2 } }]);
    let other = app.workflow(&owner, &organization, steps).await;
    let mut mine = Vec::new();
    for _ in 0..3 {
        mine.push(app.run(&owner, &workflow, json!({})).await);
    }
    app.run(&owner, &other, json!({})).await;
    let cancelled = app
        .graphql_as(
            &owner.access_token,
            "mutation($input: CancelExecutionInput!) { cancelExecution(input: $input) { status } }",
            json!({ "input": { "executionId": mine[0] } }),
        )
        .await;
    assert_eq!(cancelled.data()["cancelExecution"]["status"], "CANCELLED");

    let list = |filter: Value| {
        page(
            &app,
            &owner,
            WORKFLOW_EXECUTIONS,
            json!({ "id": workflow, "filter": filter }),
        )
    };
    let all = list(Value::Null).await;
    assert_eq!(
        ids(&all),
        [mine[2].clone(), mine[1].clone(), mine[0].clone()]
    );
    assert_eq!(
        ids(&list(json!({ "status": "CANCELLED" })).await),
        [mine[0].clone()]
    );
    assert_eq!(
        ids(&list(json!({ "status": ["QUEUED", "RUNNING"] })).await),
        [mine[2].clone(), mine[1].clone()]
    );

    let middle_queued_at = all["edges"][1]["node"]["queuedAt"].clone();
    assert_eq!(
        ids(&list(json!({ "since": middle_queued_at })).await),
        [mine[2].clone(), mine[1].clone()],
        "since includes its own instant"
    );
    assert_eq!(
        ids(&list(json!({ "until": middle_queued_at })).await),
        [mine[0].clone()]
    );
    let response = app
        .graphql_as(
            &owner.access_token,
            WORKFLOW_EXECUTIONS,
            json!({ "id": workflow, "filter": { "since": middle_queued_at, "until": middle_queued_at } }),
        )
        .await;
    assert_eq!(response.error_code(), "BAD_USER_INPUT");
    assert_eq!(response.error_field(), "filter.until");
}

#[tokio::test]
async fn listing_executions_costs_the_same_statements_for_a_page_of_2_or_of_20() {
    let app = quiet_app().await;
    let (owner, organization, workflow) = setup(&app).await;
    for _ in 0..20 {
        app.run(&owner, &workflow, json!({})).await;
    }
    let mut counts = Vec::new();
    for first in [2, 20] {
        let before = app.state.sql_statements.get();
        let listed = page(
            &app,
            &owner,
            ORGANIZATION_EXECUTIONS,
            json!({ "id": organization, "first": first }),
        )
        .await;
        counts.push(app.state.sql_statements.get() - before);
        assert_eq!(ids(&listed).len(), first as usize);
        assert_eq!(listed["edges"][0]["node"]["steps"][0]["stepId"], "a");
    }
    assert_eq!(
        counts[0], counts[1],
        "statements grew with the page: {counts:?}"
    );
    // The session with its user, the organization with the viewer's role,
    // the page, its workflows, its steps.
    assert_eq!(counts[1], 5, "{counts:?}");
}

#[tokio::test]
async fn an_executions_events_are_paged_in_order() {
    let app = TestApp::spawn().await;
    let (owner, _, workflow) = setup(&app).await;
    let id = app.run(&owner, &workflow, json!({})).await;
    let finished = app.finished_execution(&owner, &id).await;
    let last_seq = finished["lastEventSeq"].as_i64().unwrap();
    // queued, started, step started, step succeeded, succeeded
    assert_eq!(last_seq, 5);

    let events = |first: i32, after: Value| {
        let app = &app;
        let owner = &owner;
        let id = id.clone();
        async move {
            app.graphql_as(
                &owner.access_token,
                "query($id: ID!, $first: Int, $after: String) { execution(id: $id) {
                    events(first: $first, after: $after) {
                        edges { cursor node { seq kind stepId } }
                        pageInfo { hasNextPage hasPreviousPage endCursor }
                    } } }",
                json!({ "id": id, "first": first, "after": after }),
            )
            .await
            .data()["execution"]["events"]
                .clone()
        }
    };
    let seqs = |page: &Value| -> Vec<i64> {
        page["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["node"]["seq"].as_i64().unwrap())
            .collect()
    };
    let first = events(3, Value::Null).await;
    assert_eq!(seqs(&first), [1, 2, 3]);
    assert_eq!(first["edges"][0]["node"]["kind"], "EXECUTION_QUEUED");
    assert_eq!(first["edges"][2]["node"]["stepId"], "a");
    assert_eq!(first["pageInfo"]["hasNextPage"], true);
    let rest = events(3, first["pageInfo"]["endCursor"].clone()).await;
    assert_eq!(seqs(&rest), [4, 5]);
    assert_eq!(rest["edges"][1]["node"]["kind"], "EXECUTION_SUCCEEDED");
    assert_eq!(
        (
            rest["pageInfo"]["hasNextPage"].clone(),
            rest["pageInfo"]["hasPreviousPage"].clone()
        ),
        (json!(false), json!(true))
    );
}
