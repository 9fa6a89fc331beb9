//! Lists nested under lists: whatever a client selects under a page of
//! items, each list (and each `totalCount`) is read for the whole page at
//! once, so the statements of a request do not grow with the page size.
//! The query here is written from the schema by introspection, so a list
//! added later is covered without editing the test. Also: backward paging
//! (`last`, `before`) and `totalCount` on the connections.

use std::collections::HashMap;

use serde_json::{Value, json};

use crate::support::{Session, TestApp};

const INTROSPECTION: &str = "{ __schema { types {
  name kind possibleTypes { name }
  fields { name args { name defaultValue type { ...T } } type { ...T } }
} } }
fragment T on __Type { kind name ofType { kind name ofType { kind name ofType { kind name } } } }";

const CREATE_WORKFLOW_VERSION: &str = "mutation($input: CreateWorkflowVersionInput!) {
  createWorkflowVersion(input: $input) { id }
}";
const CREATE_SCHEDULE_TRIGGER: &str = "mutation($input: CreateScheduleTriggerInput!) {
  createScheduleTrigger(input: $input) { id }
}";
const INVITE: &str = "mutation($organizationId: ID!, $email: String!) {
  inviteMember(input: { organizationId: $organizationId, email: $email, role: VIEWER }) { id }
}";
const CREATE_API_KEY: &str = "mutation($organizationId: ID!, $name: String!) {
  createApiKey(input: { organizationId: $organizationId, name: $name, role: VIEWER }) { key }
}";

/// The types of the schema, by name, as introspection describes them.
struct Types(HashMap<String, Value>);

/// A field's type with NON_NULL taken away: whether it is a list, and the
/// named type inside.
struct Shape<'a> {
    list: bool,
    name: &'a str,
    kind: &'a str,
}

fn shape(mut ty: &Value) -> Shape<'_> {
    let mut list = false;
    while ty["name"].is_null() {
        list |= ty["kind"] == "LIST";
        ty = &ty["ofType"];
    }
    Shape {
        list,
        name: ty["name"].as_str().unwrap(),
        kind: ty["kind"].as_str().unwrap(),
    }
}

/// Arguments a generated selection gives: the page size to paging
/// arguments; a field with any other argument that must be given is left
/// out.
fn arguments(field: &Value, first: usize) -> Option<String> {
    let mut given = Vec::new();
    for argument in field["args"].as_array().unwrap() {
        let name = argument["name"].as_str().unwrap();
        if name == "first" {
            given.push(format!("first: {first}"));
        } else if argument["type"]["kind"] == "NON_NULL" && argument["defaultValue"].is_null() {
            return None;
        }
    }
    Some(if given.is_empty() {
        String::new()
    } else {
        format!("({})", given.join(", "))
    })
}

impl Types {
    async fn of(app: &TestApp, session: &Session) -> Self {
        let response = app
            .graphql_as(&session.access_token, INTROSPECTION, json!({}))
            .await;
        let types = response.data()["__schema"]["types"].as_array().unwrap();
        Self(
            types
                .iter()
                .map(|t| (t["name"].as_str().unwrap().to_owned(), t.clone()))
                .collect(),
        )
    }

    fn is_connection(&self, name: &str) -> bool {
        name.ends_with("Connection")
            && self.0[name]["fields"]
                .as_array()
                .is_some_and(|fields| fields.iter().any(|f| f["name"] == "nodes"))
    }

    /// Every field of `type_name` that needs no argument but a page size:
    /// all leaves, every list and connection while `lists` more levels of
    /// lists may follow (each with `first`), and single objects `hops` deep
    /// below each list.
    fn select(&self, type_name: &str, lists: usize, hops: usize, first: usize) -> String {
        let ty = &self.0[type_name];
        if ty["kind"] == "INTERFACE" || ty["kind"] == "UNION" {
            let members: Vec<String> = ty["possibleTypes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|member| {
                    let name = member["name"].as_str().unwrap();
                    format!(
                        "... on {name} {{ {} }}",
                        self.select(name, lists, hops, first)
                    )
                })
                .collect();
            return format!("__typename {}", members.join(" "));
        }
        let mut parts = vec!["__typename".to_owned()];
        for field in ty["fields"].as_array().unwrap() {
            let name = field["name"].as_str().unwrap();
            let Some(args) = arguments(field, first) else {
                continue;
            };
            let inner = shape(&field["type"]);
            if !matches!(inner.kind, "OBJECT" | "INTERFACE" | "UNION") {
                parts.push(name.to_owned());
            } else if self.is_connection(inner.name) {
                if lists > 0 {
                    let item = shape(
                        &self.0[inner.name]["fields"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .find(|f| f["name"] == "nodes")
                            .unwrap()["type"],
                    )
                    .name;
                    let nodes = self.select(item, lists - 1, 1, first);
                    parts.push(format!(
                        "{name}{args} {{ totalCount pageInfo {{ hasNextPage hasPreviousPage startCursor endCursor }} edges {{ cursor }} nodes {{ {nodes} }} }}"
                    ));
                }
            } else if inner.list {
                if lists > 0 {
                    let items = self.select(inner.name, lists - 1, 1, first);
                    parts.push(format!("{name}{args} {{ {items} }}"));
                }
            } else if hops > 0 {
                let object = self.select(inner.name, lists, hops - 1, first);
                parts.push(format!("{name}{args} {{ {object} }}"));
            }
        }
        parts.join(" ")
    }
}

/// An organization with more than two of everything a list under it can
/// hold: members, invitations, API keys, audit entries, workflows with
/// versions, schedules and finished two-step executions (each with its
/// steps and events). Answers the ids of the organization, its workflows
/// and its executions.
async fn populated(app: &TestApp, owner: &Session) -> Vec<String> {
    let organization = app.organization(owner, "Acme").await;
    let token = &owner.access_token;
    for n in 0..3 {
        app.member(&organization, entity::role::Role::Viewer).await;
        let email = format!("invited{n}-{}@example.com", uuid::Uuid::new_v4());
        let variables = json!({ "organizationId": organization, "email": email });
        app.graphql_as(token, INVITE, variables).await.data();
        let variables = json!({ "organizationId": organization, "name": format!("key {n}") });
        app.graphql_as(token, CREATE_API_KEY, variables)
            .await
            .data();
    }
    let steps = json!([
        { "id": "a", "kind": "TRANSFORM", "config": { "output": 1 } },
        { "id": "b", "kind": "TRANSFORM", "config": { "output": 2 }, "needs": ["a"] }
    ]);
    let mut ids = vec![organization.clone()];
    let mut executions = Vec::new();
    for _ in 0..3 {
        let workflow = app.workflow(owner, &organization, steps.clone()).await;
        for hour in 0..3 {
            let input =
                json!({ "input": { "workflowId": workflow, "definition": { "steps": steps } } });
            app.graphql_as(token, CREATE_WORKFLOW_VERSION, input)
                .await
                .data();
            let schedule = json!({ "input": {
                "workflowId": workflow, "cron": format!("0 {hour} * * *"), "timeZone": "UTC"
            } });
            app.graphql_as(token, CREATE_SCHEDULE_TRIGGER, schedule)
                .await
                .data();
            executions.push(app.run(owner, &workflow, json!({})).await);
        }
        ids.push(workflow);
    }
    for execution in &executions {
        app.await_finished(execution).await;
    }
    ids.extend(executions);
    ids
}

/// The statements `query` costs, and its answer (without errors).
async fn measured(app: &TestApp, owner: &Session, query: &str, ids: &[String]) -> (u64, Value) {
    let variables = json!({ "ids": ids });
    let before = app.state.sql_statements.get();
    let response = app.graphql_as(&owner.access_token, query, variables).await;
    let spent = app.state.sql_statements.get() - before;
    (spent, response.data().clone())
}

/// Every list item in `value`, at any depth.
fn items(value: &Value) -> usize {
    match value {
        Value::Array(items) => items.len() + items.iter().map(self::items).sum::<usize>(),
        Value::Object(fields) => fields.values().map(self::items).sum(),
        _ => 0,
    }
}

#[tokio::test]
async fn every_list_two_levels_under_a_list_costs_the_same_statements_at_page_size_2_and_20() {
    let mut app = TestApp::spawn_with(|settings| {
        settings.max_query_depth = 64;
        settings.max_query_complexity = 1_000_000;
        settings.documents.max_query_fields = 100_000;
        settings.documents.max_query_tokens = 1_000_000;
    })
    .await;
    let owner = app.user().await;
    let ids = populated(&app, &owner).await;
    // Measured without the engine, whose statements would count too.
    app.settings.run_engine = false;
    let app = app.restart().await;
    let types = Types::of(&app, &owner).await;
    let query = |first: usize| {
        format!(
            "query($ids: [ID!]!) {{ viewer {{ {} }} nodes(ids: $ids) {{ {} }} }}",
            types.select("User", 3, 1, first),
            types.select("Node", 2, 1, first),
        )
    };
    let (small, large) = (query(2), query(20));
    for list in [
        "workflows(first: 2)",
        "executions(first: 2)",
        "versions(first: 2)",
        "triggers {",
        "members(first: 2)",
        "invitations(first: 2)",
        "auditLog(first: 2)",
        "apiKeys(first: 2)",
        "events(first: 2)",
        "steps {",
        "memberships {",
        "recentExecutions {",
    ] {
        assert!(small.contains(list), "the query selects {list}");
    }

    // Once unmeasured: whatever a request writes at most once a minute
    // (a session's lastSeenAt) is written here, not in the counts.
    measured(&app, &owner, &small, &ids).await;
    let (at_2, page_of_2) = measured(&app, &owner, &small, &ids).await;
    let (at_20, page_of_20) = measured(&app, &owner, &large, &ids).await;
    assert!(
        items(&page_of_20) > 2 * items(&page_of_2),
        "the larger pages hold more: {} and {} items",
        items(&page_of_2),
        items(&page_of_20)
    );
    assert_eq!(at_2, at_20, "statements grew with the page size");
}

const EVENTS: &str = "query($id: ID!, $first: Int, $after: String, $last: Int, $before: String) {
  execution(id: $id) {
    events(first: $first, after: $after, last: $last, before: $before) {
      totalCount
      edges { cursor node { seq } }
      pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
    }
  }
}";

fn seqs(events: &Value) -> Vec<i64> {
    events["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|edge| edge["node"]["seq"].as_i64().unwrap())
        .collect()
}

#[tokio::test]
async fn last_and_before_page_backwards_through_a_list() {
    let app = TestApp::spawn().await;
    let owner = app.user().await;
    let execution = app.one_step_execution(&owner).await;
    app.await_finished(&execution).await;
    let events = |mut variables: Value| {
        variables["id"] = json!(execution);
        let request = app.graphql_as(&owner.access_token, EVENTS, variables);
        async move { request.await.data()["execution"]["events"].clone() }
    };
    let all = events(json!({})).await;
    let total = all["totalCount"].as_i64().unwrap();
    assert!(total >= 4, "{all}");
    let every: Vec<i64> = (1..=total).collect();
    assert_eq!(seqs(&all), every);

    let newest = events(json!({ "last": 2 })).await;
    assert_eq!(seqs(&newest), every[every.len() - 2..]);
    assert_eq!(newest["pageInfo"]["hasPreviousPage"], true);
    assert_eq!(newest["pageInfo"]["hasNextPage"], false);
    assert_eq!(newest["totalCount"], total);

    let before = newest["pageInfo"]["startCursor"].clone();
    let earlier = events(json!({ "last": 2, "before": before })).await;
    assert_eq!(seqs(&earlier), every[every.len() - 4..every.len() - 2]);
    assert_eq!(earlier["pageInfo"]["hasNextPage"], true);

    // Back to the start, then forward again from a page's start.
    let oldest = events(json!({ "last": 100, "before": earlier["pageInfo"]["startCursor"] })).await;
    assert_eq!(seqs(&oldest), every[..every.len() - 4]);
    assert_eq!(oldest["pageInfo"]["hasPreviousPage"], false);
    let between = events(json!({
        "first": 100,
        "after": oldest["pageInfo"]["endCursor"],
        "before": newest["pageInfo"]["startCursor"],
    }))
    .await;
    assert_eq!(seqs(&between), seqs(&earlier));
}

#[tokio::test]
async fn first_and_last_together_are_refused_naming_last() {
    let app = TestApp::spawn().await;
    let owner = app.user().await;
    let execution = app.one_step_execution(&owner).await;
    let response = app
        .graphql_as(
            &owner.access_token,
            EVENTS,
            json!({ "id": execution, "first": 1, "last": 1 }),
        )
        .await;
    assert_eq!(response.error_code(), "BAD_USER_INPUT");
    assert_eq!(response.error_field(), "last");
    let response = app
        .graphql_as(
            &owner.access_token,
            EVENTS,
            json!({ "id": execution, "last": 1, "before": "bm90LWEtY3Vyc29y" }),
        )
        .await;
    assert_eq!(response.error_code(), "BAD_USER_INPUT");
    assert_eq!(response.error_field(), "before");
}

const WORKFLOW_COUNTS: &str = "query($id: ID!) {
  organization(id: $id) {
    workflows(first: 1) {
      totalCount
      nodes {
        all: executions(first: 1) { totalCount }
        failed: executions(first: 1, filter: { status: FAILED }) { totalCount }
        versions(last: 1) { totalCount nodes { number } }
      }
    }
  }
}";

#[tokio::test]
async fn total_count_counts_the_whole_filtered_list_whatever_the_page() {
    let app = TestApp::spawn_with(|settings| settings.workers = 0).await;
    let owner = app.user().await;
    let organization = app.organization(&owner, "Acme").await;
    let steps = json!([{ "id": "a", "kind": "TRANSFORM", "config": { "output": 1 } }]);
    let first = app.workflow(&owner, &organization, steps.clone()).await;
    let second = app.workflow(&owner, &organization, steps.clone()).await;
    for _ in 0..3 {
        app.run(&owner, &second, json!({})).await;
    }
    app.run(&owner, &first, json!({})).await;
    let input = json!({ "input": { "workflowId": second, "definition": { "steps": steps } } });
    app.graphql_as(&owner.access_token, CREATE_WORKFLOW_VERSION, input)
        .await
        .data();

    let response = app
        .graphql_as(
            &owner.access_token,
            WORKFLOW_COUNTS,
            json!({ "id": organization }),
        )
        .await;
    let workflows = &response.data()["organization"]["workflows"];
    assert_eq!(workflows["totalCount"], 2);
    // Newest first: the second workflow.
    let newest = &workflows["nodes"][0];
    assert_eq!(newest["all"]["totalCount"], 3);
    assert_eq!(newest["failed"]["totalCount"], 0);
    assert_eq!(newest["versions"]["totalCount"], 2);
    assert_eq!(newest["versions"]["nodes"][0]["number"], 1, "the oldest");
}
