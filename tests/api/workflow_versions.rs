//! Workflow versions: `createWorkflowVersion` adds version n+1 (with an
//! optional message and the caller as author) without changing what runs;
//! `publishWorkflowVersion` makes a version active, and publishing an older
//! one is a rollback; `runWorkflow` with `versionId` runs a named version.
//! `workflowVersion(id)` and `workflow.versions` (newest first, in keyset
//! pages) read them. No mutation changes a version once it is made.
//!
//! Each version here has step ids of its own ("one", "two", …), so which
//! version an execution runs shows in its `steps` the moment it is queued;
//! where workers run, the output tells as well.

use entity::role::Role;
use serde_json::{Value, json};

use crate::members::{assert_bad_input, assert_code, nodes};
use crate::support::{GqlResponse, Session, TestApp};

const CREATE_VERSION: &str = "mutation($input: CreateWorkflowVersionInput!) {
  createWorkflowVersion(input: $input) {
    id number message createdAt isActive
    author { id displayName email }
    definition { steps { id kind needs config } }
    workflow { id activeVersion { id number } }
  }
}";
const PUBLISH: &str = "mutation($input: PublishWorkflowVersionInput!) {
  publishWorkflowVersion(input: $input) { id activeVersion { id number isActive } }
}";
const VERSION: &str = "query($id: ID!) {
  workflowVersion(id: $id) {
    id number message createdAt isActive
    author { id displayName email }
    definition { steps { id kind needs config } timeoutMs }
    workflow { id name activeVersion { number } }
  }
}";
const VERSIONS: &str = "query($id: ID!, $first: Int, $after: String) {
  workflow(id: $id) {
    activeVersion { id number }
    versions(first: $first, after: $after) {
      edges { cursor node { id number message isActive author { id } definition { steps { id } } } }
      pageInfo { hasNextPage hasPreviousPage endCursor }
    }
  }
}";
const RUN: &str = "mutation($input: RunWorkflowInput!) {
  runWorkflow(input: $input) { id status steps { stepId } }
}";
const RETRY: &str = "mutation($input: RetryExecutionInput!) {
  retryExecution(input: $input) { id status }
}";
const UPDATE_WORKFLOW: &str = "mutation($input: UpdateWorkflowInput!) {
  updateWorkflow(input: $input) { id name revision }
}";
const EXECUTIONS: &str =
    "query($id: ID!) { workflow(id: $id) { executions { edges { node { id } } } } }";
const MUTATION_FIELDS: &str = "{ __schema { mutationType { fields { name } } } }";

/// An app with no workers (executions stay QUEUED) and no reaper.
async fn quiet_app() -> TestApp {
    TestApp::spawn_with(|settings| {
        settings.workers = 0;
        settings.reaper_interval_ms = 3_600_000;
    })
    .await
}

/// A one-step definition whose step is called `id` and outputs `output`.
fn steps_named(id: &str, output: i64) -> Value {
    json!([{ "id": id, "kind": "TRANSFORM", "config": { "output": output } }])
}

/// An owner, their organization and a workflow whose version 1 has the
/// step "one" (output 1).
async fn setup(app: &TestApp) -> (Session, String, String) {
    let owner = app.user().await;
    let organization = app.organization(&owner, "Acme").await;
    let workflow = app
        .workflow(&owner, &organization, steps_named("one", 1))
        .await;
    (owner, organization, workflow)
}

/// `createWorkflowVersion` sent with `token` (an access token or a key);
/// `message` is left out when null.
async fn create_version(
    app: &TestApp,
    token: &str,
    workflow: &str,
    steps: Value,
    message: Value,
) -> GqlResponse {
    let mut input = json!({ "workflowId": workflow, "definition": { "steps": steps } });
    if !message.is_null() {
        input["message"] = message;
    }
    app.graphql_as(token, CREATE_VERSION, json!({ "input": input }))
        .await
}

/// Adds a version with `steps` as `session`; answers its id.
async fn new_version(app: &TestApp, session: &Session, workflow: &str, steps: Value) -> String {
    let response = create_version(app, &session.access_token, workflow, steps, Value::Null).await;
    id_of(&response.data()["createWorkflowVersion"])
}

async fn publish(app: &TestApp, token: &str, workflow: &str, version: &str) -> GqlResponse {
    app.graphql_as(
        token,
        PUBLISH,
        json!({ "input": { "workflowId": workflow, "versionId": version } }),
    )
    .await
}

/// `runWorkflow`, of the named version when `version` is given.
async fn run(app: &TestApp, token: &str, workflow: &str, version: Option<&str>) -> GqlResponse {
    let mut input = json!({ "workflowId": workflow, "input": {} });
    if let Some(version) = version {
        input["versionId"] = json!(version);
    }
    app.graphql_as(token, RUN, json!({ "input": input })).await
}

/// The step ids of the execution `runWorkflow` answered: which version ran.
fn step_ids(response: &GqlResponse) -> Vec<String> {
    let execution = &response.data()["runWorkflow"];
    assert_eq!(execution["status"], "QUEUED", "{execution}");
    execution["steps"]
        .as_array()
        .unwrap_or_else(|| panic!("no steps in {execution}"))
        .iter()
        .map(|step| step["stepId"].as_str().expect("stepId").to_owned())
        .collect()
}

/// The workflow's versions as `session` lists them (all of them, newest
/// first), and the number of its active version.
async fn versions(app: &TestApp, session: &Session, workflow: &str) -> (Vec<Value>, i64) {
    let response = app
        .graphql_as(
            &session.access_token,
            VERSIONS,
            json!({ "id": workflow, "first": 100 }),
        )
        .await;
    let found = &response.data()["workflow"];
    let active = found["activeVersion"]["number"]
        .as_i64()
        .unwrap_or_else(|| panic!("no active version in {found}"));
    (nodes(&found["versions"]), active)
}

/// (number, isActive) of each version, newest first.
fn numbers_and_flags(versions: &[Value]) -> Vec<(i64, bool)> {
    versions
        .iter()
        .map(|v| {
            (
                v["number"].as_i64().expect("number"),
                v["isActive"].as_bool().expect("isActive"),
            )
        })
        .collect()
}

/// The id of version `number` of the workflow.
async fn version_id(app: &TestApp, session: &Session, workflow: &str, number: i64) -> String {
    let (all, _) = versions(app, session, workflow).await;
    let found = all
        .iter()
        .find(|v| v["number"] == number)
        .unwrap_or_else(|| panic!("no version {number} in {all:?}"));
    id_of(found)
}

async fn read_version(app: &TestApp, token: &str, id: &str) -> GqlResponse {
    app.graphql_as(token, VERSION, json!({ "id": id })).await
}

fn id_of(node: &Value) -> String {
    node["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {node}"))
        .to_owned()
}

/// An id that names nothing.
fn unknown_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

// Creating versions

#[tokio::test]
async fn a_new_version_is_numbered_after_the_last_and_does_not_change_the_active_one() {
    let app = quiet_app().await;
    let (owner, organization, workflow) = setup(&app).await;
    let editor = app.member(&organization, Role::Editor).await;
    let two_steps = json!([
        { "id": "two", "kind": "TRANSFORM", "config": { "output": 2 } },
        { "id": "after_two", "kind": "TRANSFORM", "needs": ["two"], "config": { "output": "{{ steps.two.output }}" } }
    ]);

    let response = create_version(
        &app,
        &editor.access_token,
        &workflow,
        two_steps,
        json!("  Adds a second step  "),
    )
    .await;
    let version = &response.data()["createWorkflowVersion"];
    assert_eq!(version["number"], 2);
    assert_eq!(version["message"], "Adds a second step");
    assert_eq!(version["isActive"], false);
    assert_eq!(
        version["author"]["id"].as_str(),
        Some(editor.user_id.as_str())
    );
    assert_eq!(version["author"]["displayName"], "Test User");
    assert_eq!(
        version["definition"]["steps"],
        json!([
            { "id": "two", "kind": "TRANSFORM", "needs": [], "config": { "output": 2 } },
            { "id": "after_two", "kind": "TRANSFORM", "needs": ["two"], "config": { "output": "{{ steps.two.output }}" } }
        ])
    );
    assert_eq!(version["workflow"]["id"].as_str(), Some(workflow.as_str()));
    assert_eq!(version["workflow"]["activeVersion"]["number"], 1);

    let third = create_version(
        &app,
        &owner.access_token,
        &workflow,
        steps_named("three", 3),
        Value::Null,
    )
    .await;
    assert_eq!(third.data()["createWorkflowVersion"]["number"], 3);

    let (all, active) = versions(&app, &owner, &workflow).await;
    assert_eq!(active, 1);
    assert_eq!(numbers_and_flags(&all), [(3, false), (2, false), (1, true)]);
    let ran = run(&app, &owner.access_token, &workflow, None).await;
    assert_eq!(
        step_ids(&ran),
        ["one"],
        "a new version does not run until published"
    );
}

#[tokio::test]
async fn a_versions_author_is_its_maker_and_an_api_keys_version_has_none() {
    let app = quiet_app().await;
    let (owner, organization, workflow) = setup(&app).await;
    let key = crate::api_keys::api_key(&app, &owner, &organization, "EDITOR").await;

    let first = read_version(
        &app,
        &owner.access_token,
        &version_id(&app, &owner, &workflow, 1).await,
    )
    .await;
    let first = &first.data()["workflowVersion"];
    assert_eq!(
        first["author"]["id"].as_str(),
        Some(owner.user_id.as_str()),
        "createWorkflow's caller wrote version 1"
    );
    assert_eq!(first["message"], Value::Null, "{first}");

    let by_key = create_version(
        &app,
        &key,
        &workflow,
        steps_named("two", 2),
        json!("From CI"),
    )
    .await;
    let by_key = &by_key.data()["createWorkflowVersion"];
    assert_eq!(by_key["number"], 2);
    assert_eq!(by_key["author"], Value::Null, "{by_key}");
    assert_eq!(by_key["message"], "From CI");

    let reread = read_version(&app, &owner.access_token, &id_of(by_key)).await;
    assert_eq!(reread.data()["workflowVersion"]["author"], Value::Null);
    assert_eq!(reread.data()["workflowVersion"]["message"], "From CI");
}

#[tokio::test]
async fn a_blank_or_missing_message_is_null_and_a_long_one_is_bad_user_input() {
    let app = quiet_app().await;
    let (owner, _, workflow) = setup(&app).await;
    let token = owner.access_token.as_str();

    let blank = create_version(&app, token, &workflow, steps_named("two", 2), json!("   ")).await;
    assert_eq!(
        blank.data()["createWorkflowVersion"]["message"],
        Value::Null
    );
    let missing =
        create_version(&app, token, &workflow, steps_named("three", 3), Value::Null).await;
    assert_eq!(
        missing.data()["createWorkflowVersion"]["message"],
        Value::Null
    );

    let longest = "m".repeat(500);
    let fits = create_version(
        &app,
        token,
        &workflow,
        steps_named("four", 4),
        json!(format!("  {longest}  ")),
    )
    .await;
    let fits = &fits.data()["createWorkflowVersion"];
    assert_eq!(fits["number"], 4);
    assert_eq!(
        fits["message"].as_str(),
        Some(longest.as_str()),
        "trimmed, then 500 fit"
    );

    let too_long = create_version(
        &app,
        token,
        &workflow,
        steps_named("five", 5),
        json!("m".repeat(501)),
    )
    .await;
    assert_bad_input(&too_long, "message");
    let (all, _) = versions(&app, &owner, &workflow).await;
    assert_eq!(all.len(), 4, "the refused version was not made");
}

#[tokio::test]
async fn an_invalid_definition_for_a_new_version_is_bad_user_input_pointing_at_the_field() {
    let app = quiet_app().await;
    let (owner, _, workflow) = setup(&app).await;
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
            json!([delay("a", json!(["b"])), delay("b", json!(["a"]))]),
            "definition.steps[0].needs",
        ),
        (
            json!([{ "id": "a", "kind": "DELAY", "config": { "ms": -5 } }]),
            "definition.steps[0].config.ms",
        ),
        (
            json!([{ "id": "a", "kind": "FAIL", "config": {} }]),
            "definition.steps[0].config.message",
        ),
    ];
    for (steps, field) in cases {
        let response = create_version(
            &app,
            &owner.access_token,
            &workflow,
            steps.clone(),
            Value::Null,
        )
        .await;
        assert_eq!(response.error_code(), "BAD_USER_INPUT", "{steps}");
        assert_eq!(response.error_field(), field, "{steps}");
    }
    let (all, active) = versions(&app, &owner, &workflow).await;
    assert_eq!((all.len(), active), (1, 1), "no refused version was made");
}

// Publishing and running

#[tokio::test]
async fn publishing_a_version_makes_it_active_and_new_runs_use_it() {
    let app = quiet_app().await;
    let (owner, organization, workflow) = setup(&app).await;
    let editor = app.member(&organization, Role::Editor).await;
    let two = new_version(&app, &owner, &workflow, steps_named("two", 2)).await;

    let published = publish(&app, &editor.access_token, &workflow, &two).await;
    let published = &published.data()["publishWorkflowVersion"];
    assert_eq!(published["id"].as_str(), Some(workflow.as_str()));
    assert_eq!(
        published["activeVersion"]["id"].as_str(),
        Some(two.as_str())
    );
    assert_eq!(published["activeVersion"]["number"], 2);
    assert_eq!(published["activeVersion"]["isActive"], true);

    let (all, active) = versions(&app, &owner, &workflow).await;
    assert_eq!(active, 2);
    assert_eq!(numbers_and_flags(&all), [(2, true), (1, false)]);
    let read = read_version(&app, &owner.access_token, &two).await;
    assert_eq!(read.data()["workflowVersion"]["isActive"], true);
    assert_eq!(
        read.data()["workflowVersion"]["workflow"]["activeVersion"]["number"],
        2
    );

    let ran = run(&app, &editor.access_token, &workflow, None).await;
    assert_eq!(step_ids(&ran), ["two"]);
}

#[tokio::test]
async fn publishing_an_older_version_rolls_back_to_it() {
    let app = quiet_app().await;
    let (owner, _, workflow) = setup(&app).await;
    let token = owner.access_token.as_str();
    let one = version_id(&app, &owner, &workflow, 1).await;
    new_version(&app, &owner, &workflow, steps_named("two", 2)).await;
    let three = new_version(&app, &owner, &workflow, steps_named("three", 3)).await;

    publish(&app, token, &workflow, &three).await.data();
    assert_eq!(
        step_ids(&run(&app, token, &workflow, None).await),
        ["three"]
    );

    let rolled_back = publish(&app, token, &workflow, &one).await;
    assert_eq!(
        rolled_back.data()["publishWorkflowVersion"]["activeVersion"]["number"],
        1
    );
    let (all, active) = versions(&app, &owner, &workflow).await;
    assert_eq!(active, 1);
    assert_eq!(
        numbers_and_flags(&all),
        [(3, false), (2, false), (1, true)],
        "a rollback makes no new version"
    );
    assert_eq!(step_ids(&run(&app, token, &workflow, None).await), ["one"]);
}

#[tokio::test]
async fn running_a_named_version_runs_it_and_leaves_the_active_one_alone() {
    let app = quiet_app().await;
    let (owner, organization, workflow) = setup(&app).await;
    let editor = app.member(&organization, Role::Editor).await;
    let token = editor.access_token.as_str();
    let one = version_id(&app, &owner, &workflow, 1).await;
    let two = new_version(&app, &owner, &workflow, steps_named("two", 2)).await;
    let three = new_version(&app, &owner, &workflow, steps_named("three", 3)).await;
    publish(&app, &owner.access_token, &workflow, &two)
        .await
        .data();

    assert_eq!(
        step_ids(&run(&app, token, &workflow, Some(one.as_str())).await),
        ["one"]
    );
    assert_eq!(
        step_ids(&run(&app, token, &workflow, Some(two.as_str())).await),
        ["two"]
    );
    assert_eq!(
        step_ids(&run(&app, token, &workflow, Some(three.as_str())).await),
        ["three"],
        "a version need not be published to be run by name"
    );
    assert_eq!(step_ids(&run(&app, token, &workflow, None).await), ["two"]);

    let (all, active) = versions(&app, &owner, &workflow).await;
    assert_eq!(active, 2);
    assert_eq!(numbers_and_flags(&all), [(3, false), (2, true), (1, false)]);
}

#[tokio::test]
async fn a_version_of_another_workflow_is_not_found_to_run_or_publish() {
    let app = quiet_app().await;
    let (owner, organization, workflow) = setup(&app).await;
    let token = owner.access_token.as_str();
    let other = app
        .workflow(&owner, &organization, steps_named("elsewhere", 9))
        .await;
    let others_first = version_id(&app, &owner, &other, 1).await;
    let others_second = new_version(&app, &owner, &other, steps_named("elsewhere_two", 9)).await;

    for version in [others_first.clone(), others_second.clone(), unknown_id()] {
        let published = publish(&app, token, &workflow, &version).await;
        assert_code(&published, "NOT_FOUND");
        assert_eq!(published.error_message(), "workflow version not found");
        assert_eq!(published.body["data"], Value::Null, "{}", published.body);

        let ran = run(&app, token, &workflow, Some(version.as_str())).await;
        assert_code(&ran, "NOT_FOUND");
    }

    let (all, active) = versions(&app, &owner, &workflow).await;
    assert_eq!((numbers_and_flags(&all), active), (vec![(1, true)], 1));
    let (others, others_active) = versions(&app, &owner, &other).await;
    assert_eq!(
        (numbers_and_flags(&others), others_active),
        (vec![(2, false), (1, true)], 1)
    );
    let executions = app
        .graphql_as(token, EXECUTIONS, json!({ "id": workflow }))
        .await;
    assert_eq!(
        executions.data()["workflow"]["executions"]["edges"],
        json!([]),
        "no refused run was queued"
    );
}

#[tokio::test]
async fn an_execution_keeps_the_version_it_started_with() {
    let app = TestApp::spawn().await;
    let (owner, _, workflow) = setup(&app).await;
    let token = owner.access_token.as_str();
    let one = version_id(&app, &owner, &workflow, 1).await;

    let first = app.run(&owner, &workflow, json!({})).await;
    let finished = app.finished_execution(&owner, &first).await;
    assert_eq!(
        (finished["status"].clone(), finished["output"].clone()),
        (json!("SUCCEEDED"), json!(1))
    );

    let two = new_version(&app, &owner, &workflow, steps_named("two", 2)).await;
    publish(&app, token, &workflow, &two).await.data();

    let retried = app
        .graphql_as(token, RETRY, json!({ "input": { "executionId": first } }))
        .await;
    let retried = id_of(&retried.data()["retryExecution"]);
    let retried = app.finished_execution(&owner, &retried).await;
    assert_eq!(
        retried["output"], 1,
        "a retry runs its execution's version: {retried}"
    );
    assert_eq!(retried["steps"][0]["stepId"], "one");

    let latest = app.run(&owner, &workflow, json!({})).await;
    let latest = app.finished_execution(&owner, &latest).await;
    assert_eq!(latest["output"], 2, "{latest}");

    let named = run(&app, token, &workflow, Some(one.as_str())).await;
    let named = id_of(&named.data()["runWorkflow"]);
    let named = app.finished_execution(&owner, &named).await;
    assert_eq!(named["output"], 1, "{named}");
}

// Immutability

#[tokio::test]
async fn an_earlier_versions_definition_never_changes() {
    let app = quiet_app().await;
    let (owner, _, workflow) = setup(&app).await;
    let token = owner.access_token.as_str();
    let one = version_id(&app, &owner, &workflow, 1).await;
    let two = new_version(&app, &owner, &workflow, steps_named("two", 2)).await;
    let stable = |response: &GqlResponse| {
        let version = &response.data()["workflowVersion"];
        json!({
            "id": version["id"],
            "number": version["number"],
            "message": version["message"],
            "createdAt": version["createdAt"],
            "author": version["author"],
            "definition": version["definition"],
        })
    };
    let one_before = stable(&read_version(&app, token, &one).await);
    let two_before = stable(&read_version(&app, token, &two).await);
    assert_eq!(
        one_before["definition"],
        json!({ "steps": [{ "id": "one", "kind": "TRANSFORM", "needs": [], "config": { "output": 1 } }], "timeoutMs": null })
    );

    // Everything that touches a workflow and its versions.
    publish(&app, token, &workflow, &two).await.data();
    new_version(&app, &owner, &workflow, steps_named("three", 3)).await;
    let revision = app
        .graphql_as(
            token,
            "query($id: ID!) { workflow(id: $id) { revision } }",
            json!({ "id": workflow }),
        )
        .await
        .data()["workflow"]["revision"]
        .clone();
    app.graphql_as(
        token,
        UPDATE_WORKFLOW,
        json!({ "input": { "workflowId": workflow, "revision": revision, "name": "Renamed", "description": "Changed" } }),
    )
    .await
    .data();
    run(&app, token, &workflow, Some(one.as_str())).await.data();
    run(&app, token, &workflow, None).await.data();
    publish(&app, token, &workflow, &one).await.data();
    app.graphql_as(
        token,
        "mutation($input: DuplicateWorkflowInput!) { duplicateWorkflow(input: $input) { id } }",
        json!({ "input": { "workflowId": workflow } }),
    )
    .await
    .data();

    assert_eq!(stable(&read_version(&app, token, &one).await), one_before);
    assert_eq!(stable(&read_version(&app, token, &two).await), two_before);
    let (all, _) = versions(&app, &owner, &workflow).await;
    let listed: Vec<Value> = all
        .iter()
        .map(|v| v["definition"]["steps"][0]["id"].clone())
        .collect();
    assert_eq!(listed, [json!("three"), json!("two"), json!("one")]);
}

#[tokio::test]
async fn no_mutation_edits_or_deletes_a_version() {
    let app = TestApp::spawn().await;
    let response = app.graphql(MUTATION_FIELDS, json!({})).await;
    let about_versions: Vec<&str> = response.data()["__schema"]["mutationType"]["fields"]
        .as_array()
        .expect("mutation fields")
        .iter()
        .map(|field| field["name"].as_str().expect("a field name"))
        .filter(|name| name.to_lowercase().contains("version"))
        .collect();
    assert_eq!(
        about_versions,
        ["createWorkflowVersion", "publishWorkflowVersion"],
        "versions are made and published, never changed"
    );
}

// Who may

#[tokio::test]
async fn a_viewer_reads_versions_but_cannot_create_or_publish_them() {
    let app = quiet_app().await;
    let (owner, organization, workflow) = setup(&app).await;
    let viewer = app.member(&organization, Role::Viewer).await;
    let viewer_key = crate::api_keys::api_key(&app, &owner, &organization, "VIEWER").await;
    let two = new_version(&app, &owner, &workflow, steps_named("two", 2)).await;

    for token in [viewer.access_token.as_str(), viewer_key.as_str()] {
        let created =
            create_version(&app, token, &workflow, steps_named("three", 3), Value::Null).await;
        assert_code(&created, "FORBIDDEN");
        let published = publish(&app, token, &workflow, &two).await;
        assert_code(&published, "FORBIDDEN");
        let read = read_version(&app, token, &two).await;
        assert_eq!(read.data()["workflowVersion"]["number"], 2);
    }
    let (all, active) = versions(&app, &viewer, &workflow).await;
    assert_eq!(numbers_and_flags(&all), [(2, false), (1, true)]);
    assert_eq!(active, 1);
}

#[tokio::test]
async fn an_outsider_finds_no_workflow_or_version_to_create_publish_or_read() {
    let app = quiet_app().await;
    let (owner, _, workflow) = setup(&app).await;
    let outsider = app.user().await;
    let outsider_organization = app.organization(&outsider, "Elsewhere").await;
    let outsider_key =
        crate::api_keys::api_key(&app, &outsider, &outsider_organization, "ADMIN").await;
    let two = new_version(&app, &owner, &workflow, steps_named("two", 2)).await;

    for token in [outsider.access_token.as_str(), outsider_key.as_str()] {
        let created = create_version(
            &app,
            token,
            &workflow,
            steps_named("three", 3),
            json!("Mine"),
        )
        .await;
        assert_code(&created, "NOT_FOUND");
        let published = publish(&app, token, &workflow, &two).await;
        assert_code(&published, "NOT_FOUND");
        let read = read_version(&app, token, &two).await;
        assert_code(&read, "NOT_FOUND");
        assert_eq!(
            read.body["data"]["workflowVersion"],
            Value::Null,
            "{}",
            read.body
        );
    }
    let unknown_workflow = create_version(
        &app,
        &owner.access_token,
        &unknown_id(),
        steps_named("x", 0),
        Value::Null,
    )
    .await;
    assert_code(&unknown_workflow, "NOT_FOUND");

    let (all, active) = versions(&app, &owner, &workflow).await;
    assert_eq!(numbers_and_flags(&all), [(2, false), (1, true)]);
    assert_eq!(active, 1);
}

// Reading versions

#[tokio::test]
async fn the_workflow_version_query_reads_a_version_and_its_workflow() {
    let app = quiet_app().await;
    let (owner, organization, workflow) = setup(&app).await;
    let viewer = app.member(&organization, Role::Viewer).await;
    let created = create_version(
        &app,
        &owner.access_token,
        &workflow,
        steps_named("two", 2),
        json!("Second"),
    )
    .await;
    let created = created.data()["createWorkflowVersion"].clone();
    let id = id_of(&created);

    let read = read_version(&app, &viewer.access_token, &id).await;
    let version = &read.data()["workflowVersion"];
    assert_eq!(version["id"], created["id"]);
    assert_eq!(version["number"], 2);
    assert_eq!(version["message"], "Second");
    assert_eq!(version["createdAt"], created["createdAt"]);
    assert_eq!(version["isActive"], false);
    assert_eq!(version["author"], created["author"]);
    assert_eq!(
        version["author"]["id"].as_str(),
        Some(owner.user_id.as_str())
    );
    assert_eq!(
        version["definition"]["steps"],
        created["definition"]["steps"]
    );
    assert_eq!(version["workflow"]["id"].as_str(), Some(workflow.as_str()));
    assert_eq!(version["workflow"]["name"], "Test workflow");
    assert_eq!(version["workflow"]["activeVersion"]["number"], 1);

    let unknown = read_version(&app, &owner.access_token, &unknown_id()).await;
    assert_code(&unknown, "NOT_FOUND");
    assert_eq!(unknown.body["data"]["workflowVersion"], Value::Null);
}

#[tokio::test]
async fn versions_are_listed_newest_first_in_pages_that_survive_new_versions() {
    let app = quiet_app().await;
    let (owner, _, workflow) = setup(&app).await;
    let token = owner.access_token.as_str();
    for (n, name) in [(2, "two"), (3, "three"), (4, "four"), (5, "five")] {
        new_version(&app, &owner, &workflow, steps_named(name, n)).await;
    }
    let page = |first: i64, after: Value| {
        let app = &app;
        let workflow = workflow.clone();
        async move {
            let response = app
                .graphql_as(
                    token,
                    VERSIONS,
                    json!({ "id": workflow, "first": first, "after": after }),
                )
                .await;
            response.data()["workflow"]["versions"].clone()
        }
    };
    let numbers = |connection: &Value| -> Vec<i64> {
        nodes(connection)
            .iter()
            .map(|v| v["number"].as_i64().expect("number"))
            .collect()
    };

    let first = page(2, Value::Null).await;
    assert_eq!(numbers(&first), [5, 4]);
    assert_eq!(first["pageInfo"]["hasNextPage"], true);
    assert_eq!(first["pageInfo"]["hasPreviousPage"], false);

    // A new version lands at the head of the list, not in the next page.
    new_version(&app, &owner, &workflow, steps_named("six", 6)).await;
    let second = page(2, first["pageInfo"]["endCursor"].clone()).await;
    assert_eq!(numbers(&second), [3, 2]);
    assert_eq!(second["pageInfo"]["hasNextPage"], true);
    assert_eq!(second["pageInfo"]["hasPreviousPage"], true);
    let third = page(2, second["pageInfo"]["endCursor"].clone()).await;
    assert_eq!(numbers(&third), [1]);
    assert_eq!(third["pageInfo"]["hasNextPage"], false);

    let (all, _) = versions(&app, &owner, &workflow).await;
    assert_eq!(
        all.iter()
            .map(|v| v["number"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        [6, 5, 4, 3, 2, 1]
    );

    for (variables, field) in [
        (json!({ "id": workflow, "first": 101 }), "first"),
        (json!({ "id": workflow, "after": "%%%" }), "after"),
    ] {
        let response = app.graphql_as(token, VERSIONS, variables.clone()).await;
        assert_eq!(response.error_code(), "BAD_USER_INPUT", "{variables}");
        assert_eq!(response.error_field(), field, "{variables}");
    }
}
