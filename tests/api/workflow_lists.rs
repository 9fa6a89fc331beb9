//! An organization's workflows as a list: tags (set with `updateWorkflow`),
//! archiving and unarchiving, duplication, `organization.workflows` with
//! its filters (search, tags, archived) and orders in keyset pages,
//! `createdBy`, `lastExecution` and `recentExecutions`, and a dashboard
//! query (with each workflow's triggers) whose SQL statement count does not
//! grow with the page.

use chrono::{DateTime, Duration, Utc};
use entity::role::Role;
use serde_json::{Value, json};

use crate::members::{a_second_passes, assert_bad_input, assert_code, nodes, time};
use crate::support::{GqlResponse, Session, TestApp};

const CREATE: &str = "mutation($input: CreateWorkflowInput!) {
  createWorkflow(input: $input) { id name createdBy { id displayName email } }
}";
const UPDATE: &str = "mutation($input: UpdateWorkflowInput!) {
  updateWorkflow(input: $input) { id name revision tags }
}";
const WORKFLOW: &str = "query($id: ID!) { workflow(id: $id) {
  id name description tags archivedAt maxConcurrency revision
  createdBy { id displayName email }
} }";
const ARCHIVE: &str = "mutation($input: WorkflowInput!) {
  archiveWorkflow(input: $input) { id archivedAt }
}";
const UNARCHIVE: &str = "mutation($input: WorkflowInput!) {
  unarchiveWorkflow(input: $input) { id archivedAt }
}";
const RUN: &str =
    "mutation($input: RunWorkflowInput!) { runWorkflow(input: $input) { id status } }";
/// Everything a duplicate should or should not share with its original.
const COPY_FIELDS: &str = "
  id name description tags maxConcurrency archivedAt
  organization { id }
  createdBy { id }
  activeVersion { number definition {
    timeoutMs
    steps { id kind needs config timeoutMs retry { maxAttempts initialBackoffMs factor maxBackoffMs jitter } }
  } }
  versions(first: 100) { edges { node { number } } }
  executions { edges { node { id } } }
  lastExecution { id }
";
const EXECUTION_SUMMARY: &str = "query($id: ID!, $limit: Int!) { workflow(id: $id) {
  lastExecution { id status workflow { id } }
  recentExecutions(limit: $limit) { id status }
} }";
const EXECUTION_SUMMARY_DEFAULT: &str = "query($id: ID!) { workflow(id: $id) {
  lastExecution { id }
  recentExecutions { id }
} }";
/// The dashboard's query, as the spec gives it: creators, active versions,
/// triggers and the last 5 executions.
const DASHBOARD: &str = "query($id: ID!, $first: Int!) { organization(id: $id) { workflows(first: $first) { edges { node {
  id name tags createdBy { id displayName } activeVersion { number author { id } }
  triggers { id kind enabled schedule { cron timeZone nextRunAt } webhook { tokenPrefix } lastFiredAt }
  lastExecution { id status } recentExecutions(limit: 5) { id status } } } } } }";
const CREATE_SCHEDULE_TRIGGER: &str = "mutation($input: CreateScheduleTriggerInput!) {
  createScheduleTrigger(input: $input) { id kind }
}";
const CREATE_WEBHOOK_TRIGGER: &str = "mutation($input: CreateWebhookTriggerInput!) {
  createWebhookTrigger(input: $input) { trigger { id kind } path }
}";

/// Every order `organization.workflows` knows.
const ORDERS: [&str; 4] = [
    "CREATED_AT_DESC",
    "CREATED_AT_ASC",
    "UPDATED_AT_DESC",
    "NAME_ASC",
];

// Helpers

/// An app that runs no engine: no workers (executions stay QUEUED), no
/// reaper and no scheduler (schedules never fire), so the database is
/// touched only by the requests.
async fn quiet_app() -> TestApp {
    TestApp::spawn_with(|settings| settings.run_engine = false).await
}

fn one_step() -> Value {
    json!([{ "id": "a", "kind": "TRANSFORM", "config": { "output": 1 } }])
}

/// An owner and their organization "Acme".
async fn owner_and_organization(app: &TestApp) -> (Session, String) {
    let owner = app.user().await;
    let organization = app.organization(&owner, "Acme").await;
    (owner, organization)
}

/// `createWorkflow` named `name`, sent with `token` (an access token or a
/// key); answers the created workflow.
async fn create_named(app: &TestApp, token: &str, organization: &str, name: &str) -> Value {
    let response = app
        .graphql_as(
            token,
            CREATE,
            json!({ "input": { "organizationId": organization, "name": name, "definition": { "steps": one_step() } } }),
        )
        .await;
    response.data()["createWorkflow"].clone()
}

/// A workflow named `name`; answers its id.
async fn named(app: &TestApp, session: &Session, organization: &str, name: &str) -> String {
    id_of(&create_named(app, &session.access_token, organization, name).await)
}

/// The workflow as `token` reads it.
async fn read(app: &TestApp, token: &str, workflow: &str) -> Value {
    let response = app
        .graphql_as(token, WORKFLOW, json!({ "id": workflow }))
        .await;
    response.data()["workflow"].clone()
}

/// `updateWorkflow` at the current revision with `change` (e.g.
/// `{ "tags": [...] }`) merged into the input.
async fn update(app: &TestApp, token: &str, workflow: &str, change: Value) -> GqlResponse {
    let revision = read(app, token, workflow).await["revision"].clone();
    let mut input = json!({ "workflowId": workflow, "revision": revision });
    for (key, value) in change.as_object().expect("a change object") {
        input[key.as_str()] = value.clone();
    }
    app.graphql_as(token, UPDATE, json!({ "input": input }))
        .await
}

/// Sets the workflow's tags as `session`; answers them as stored.
async fn tag(app: &TestApp, session: &Session, workflow: &str, tags: Value) -> Value {
    let response = update(
        app,
        &session.access_token,
        workflow,
        json!({ "tags": tags }),
    )
    .await;
    response.data()["updateWorkflow"]["tags"].clone()
}

async fn archive(app: &TestApp, token: &str, workflow: &str) -> GqlResponse {
    app.graphql_as(
        token,
        ARCHIVE,
        json!({ "input": { "workflowId": workflow } }),
    )
    .await
}

async fn unarchive(app: &TestApp, token: &str, workflow: &str) -> GqlResponse {
    app.graphql_as(
        token,
        UNARCHIVE,
        json!({ "input": { "workflowId": workflow } }),
    )
    .await
}

/// `duplicateWorkflow` with `input` (`workflowId`, maybe `name`); the
/// answer selects [`COPY_FIELDS`].
async fn duplicate(app: &TestApp, token: &str, input: Value) -> GqlResponse {
    let query = format!(
        "mutation($input: DuplicateWorkflowInput!) {{ duplicateWorkflow(input: $input) {{ {COPY_FIELDS} }} }}"
    );
    app.graphql_as(token, &query, json!({ "input": input }))
        .await
}

/// The workflow read with [`COPY_FIELDS`].
async fn read_for_copy(app: &TestApp, token: &str, workflow: &str) -> Value {
    let query = format!("query($id: ID!) {{ workflow(id: $id) {{ {COPY_FIELDS} }} }}");
    let response = app
        .graphql_as(token, &query, json!({ "id": workflow }))
        .await;
    response.data()["workflow"].clone()
}

/// The `organization.workflows` query passing exactly the arguments
/// `args` has (of `first`, `after`, `filter`, `orderBy`). An argument left
/// out is left out of the query too, so its default applies: a variable
/// the request leaves out would be passed as null.
fn list_query(args: &Value) -> String {
    let mut parameters = vec!["$id: ID!".to_owned()];
    let mut arguments = Vec::new();
    for (name, kind) in [
        ("first", "Int"),
        ("after", "String"),
        ("filter", "WorkflowFilterInput"),
        // Non-null: `orderBy` has a default, and a nullable variable
        // may not stand in a non-null argument.
        ("orderBy", "WorkflowOrder!"),
    ] {
        if args.get(name).is_some() {
            parameters.push(format!("${name}: {kind}"));
            arguments.push(format!("{name}: ${name}"));
        }
    }
    let arguments = if arguments.is_empty() {
        String::new()
    } else {
        format!("({})", arguments.join(", "))
    };
    format!(
        "query({}) {{ organization(id: $id) {{ workflows{arguments} {{
          edges {{ cursor node {{ id name tags archivedAt }} }}
          pageInfo {{ hasNextPage hasPreviousPage endCursor }}
        }} }} }}",
        parameters.join(", ")
    )
}

/// `organization.workflows` with `args` (an object with any of `first`,
/// `after`, `filter`, `orderBy`).
async fn list_response(app: &TestApp, token: &str, organization: &str, args: Value) -> GqlResponse {
    let query = list_query(&args);
    let mut variables = args;
    variables["id"] = json!(organization);
    app.graphql_as(token, &query, variables).await
}

/// The `workflows` connection `list_response` answers.
async fn list(app: &TestApp, session: &Session, organization: &str, args: Value) -> Value {
    let response = list_response(app, &session.access_token, organization, args).await;
    response.data()["organization"]["workflows"].clone()
}

/// Names of a connection's workflows, in order.
fn names(connection: &Value) -> Vec<String> {
    nodes(connection)
        .iter()
        .map(|node| node["name"].as_str().expect("name").to_owned())
        .collect()
}

/// Ids of a connection's workflows, in order.
fn ids(connection: &Value) -> Vec<String> {
    nodes(connection).iter().map(id_of).collect()
}

fn id_of(node: &Value) -> String {
    node["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {node}"))
        .to_owned()
}

/// Ids of a list of executions (not a connection).
fn execution_ids(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(id_of)
        .collect()
}

/// An id that names nothing.
fn unknown_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

// Tags

#[tokio::test]
async fn tags_are_trimmed_lower_cased_deduplicated_and_sorted() {
    let app = quiet_app().await;
    let (owner, organization) = owner_and_organization(&app).await;
    let workflow = named(&app, &owner, &organization, "Tagged").await;
    assert_eq!(
        read(&app, &owner.access_token, &workflow).await["tags"],
        json!([])
    );

    let longest = "t".repeat(32);
    let stored = tag(
        &app,
        &owner,
        &workflow,
        json!([
            " Prod ",
            "billing",
            "PROD",
            "team:data",
            "v1.2",
            "a-b_c",
            "prod",
            longest
        ]),
    )
    .await;
    assert_eq!(
        stored,
        json!(["a-b_c", "billing", "prod", "team:data", longest, "v1.2"])
    );
    assert_eq!(
        read(&app, &owner.access_token, &workflow).await["tags"],
        stored
    );
}

#[tokio::test]
async fn giving_tags_replaces_them_and_leaving_them_out_keeps_them() {
    let app = quiet_app().await;
    let (owner, organization) = owner_and_organization(&app).await;
    let workflow = named(&app, &owner, &organization, "Tagged").await;
    let token = owner.access_token.as_str();

    assert_eq!(
        tag(&app, &owner, &workflow, json!(["alpha", "beta"])).await,
        json!(["alpha", "beta"])
    );
    assert_eq!(
        tag(&app, &owner, &workflow, json!(["gamma"])).await,
        json!(["gamma"])
    );

    let renamed = update(&app, token, &workflow, json!({ "name": "Renamed" })).await;
    assert_eq!(renamed.data()["updateWorkflow"]["tags"], json!(["gamma"]));
    assert_eq!(renamed.data()["updateWorkflow"]["name"], "Renamed");

    assert_eq!(tag(&app, &owner, &workflow, json!([])).await, json!([]));
    assert_eq!(read(&app, token, &workflow).await["tags"], json!([]));
}

#[tokio::test]
async fn an_invalid_tag_is_bad_user_input_naming_its_index() {
    let app = quiet_app().await;
    let (owner, organization) = owner_and_organization(&app).await;
    let workflow = named(&app, &owner, &organization, "Tagged").await;
    let token = owner.access_token.as_str();
    tag(&app, &owner, &workflow, json!(["kept"])).await;
    let before = read(&app, token, &workflow).await;

    let cases = [
        (json!(["ok", ""]), "tags[1]"),
        (json!(["   "]), "tags[0]"),
        (json!(["has space"]), "tags[0]"),
        (json!(["a/b"]), "tags[0]"),
        (json!(["ok", "fine", "émoji"]), "tags[2]"),
        (json!(["t".repeat(33)]), "tags[0]"),
        (json!(["ok", format!(" {} ", "t".repeat(33))]), "tags[1]"),
    ];
    for (tags, field) in cases {
        let response = update(&app, token, &workflow, json!({ "tags": tags.clone() })).await;
        assert_eq!(response.error_code(), "BAD_USER_INPUT", "{tags}");
        assert_eq!(response.error_field(), field, "{tags}");
    }
    assert_eq!(
        read(&app, token, &workflow).await,
        before,
        "refused tags changed nothing"
    );
}

#[tokio::test]
async fn more_than_20_tags_is_bad_user_input_on_tags() {
    let app = quiet_app().await;
    let (owner, organization) = owner_and_organization(&app).await;
    let workflow = named(&app, &owner, &organization, "Tagged").await;
    let token = owner.access_token.as_str();

    let twenty: Vec<String> = (0..20).map(|n| format!("tag{n:02}")).collect();
    assert_eq!(
        tag(&app, &owner, &workflow, json!(twenty)).await,
        json!(twenty)
    );

    let twenty_one: Vec<String> = (0..21).map(|n| format!("tag{n:02}")).collect();
    let response = update(&app, token, &workflow, json!({ "tags": twenty_one })).await;
    assert_bad_input(&response, "tags");
    assert_eq!(read(&app, token, &workflow).await["tags"], json!(twenty));
}

// Archiving

#[tokio::test]
async fn archiving_sets_archived_at_and_archiving_twice_is_a_conflict() {
    let app = quiet_app().await;
    let (owner, organization) = owner_and_organization(&app).await;
    let editor = app.member(&organization, Role::Editor).await;
    let workflow = named(&app, &owner, &organization, "Old").await;
    let token = editor.access_token.as_str();
    assert_eq!(
        read(&app, token, &workflow).await["archivedAt"],
        Value::Null
    );

    let before: DateTime<Utc> = app.clock.now();
    let archived = archive(&app, token, &workflow).await;
    let archived_at = archived.data()["archiveWorkflow"]["archivedAt"].clone();
    let when = time(&archived_at);
    // Allowing for a DateTime rendered to less than microseconds.
    let slack = Duration::seconds(1);
    assert!(
        when >= before - slack && when <= app.clock.now() + slack,
        "{archived_at}"
    );
    assert_eq!(
        read(&app, token, &workflow).await["archivedAt"],
        archived_at
    );

    let again = archive(&app, token, &workflow).await;
    assert_code(&again, "CONFLICT");
    assert_eq!(
        read(&app, token, &workflow).await["archivedAt"],
        archived_at
    );

    let restored = unarchive(&app, token, &workflow).await;
    assert_eq!(
        restored.data()["unarchiveWorkflow"]["archivedAt"],
        Value::Null
    );
    assert_eq!(
        read(&app, token, &workflow).await["archivedAt"],
        Value::Null
    );

    let again = unarchive(&app, token, &workflow).await;
    assert_code(&again, "CONFLICT");
    assert_eq!(
        read(&app, token, &workflow).await["archivedAt"],
        Value::Null
    );
}

#[tokio::test]
async fn an_archived_workflow_cannot_run_until_it_is_unarchived() {
    let app = quiet_app().await;
    let (owner, organization) = owner_and_organization(&app).await;
    let workflow = named(&app, &owner, &organization, "Old").await;
    let token = owner.access_token.as_str();
    let active = app
        .graphql_as(
            token,
            "query($id: ID!) { workflow(id: $id) { activeVersion { id } } }",
            json!({ "id": workflow }),
        )
        .await;
    let version = id_of(&active.data()["workflow"]["activeVersion"]);
    archive(&app, token, &workflow).await.data();

    for input in [
        json!({ "workflowId": workflow }),
        json!({ "workflowId": workflow, "versionId": version }),
    ] {
        let refused = app
            .graphql_as(token, RUN, json!({ "input": input.clone() }))
            .await;
        assert_code(&refused, "CONFLICT");
        assert_eq!(refused.body["data"], Value::Null, "{input}");
    }
    let summary = app
        .graphql_as(token, EXECUTION_SUMMARY_DEFAULT, json!({ "id": workflow }))
        .await;
    assert_eq!(
        summary.data()["workflow"],
        json!({ "lastExecution": null, "recentExecutions": [] })
    );

    unarchive(&app, token, &workflow).await.data();
    let execution = app.run(&owner, &workflow, json!({})).await;
    let summary = app
        .graphql_as(token, EXECUTION_SUMMARY_DEFAULT, json!({ "id": workflow }))
        .await;
    assert_eq!(
        summary.data()["workflow"]["lastExecution"]["id"].as_str(),
        Some(execution.as_str())
    );
}

#[tokio::test]
async fn archived_workflows_are_left_out_of_lists_unless_asked_for() {
    let app = quiet_app().await;
    let (owner, organization) = owner_and_organization(&app).await;
    let token = owner.access_token.as_str();
    let kept = named(&app, &owner, &organization, "report kept").await;
    a_second_passes(&app);
    let archived = named(&app, &owner, &organization, "report archived").await;
    a_second_passes(&app);
    let other = named(&app, &owner, &organization, "cleanup").await;
    archive(&app, token, &archived).await.data();

    let listed = list(&app, &owner, &organization, json!({})).await;
    assert_eq!(ids(&listed), [other.clone(), kept.clone()]);
    assert!(
        nodes(&listed).iter().all(|n| n["archivedAt"].is_null()),
        "{listed}"
    );
    let explicit = list(
        &app,
        &owner,
        &organization,
        json!({ "filter": { "archived": false } }),
    )
    .await;
    assert_eq!(ids(&explicit), [other.clone(), kept.clone()]);

    let only_archived = list(
        &app,
        &owner,
        &organization,
        json!({ "filter": { "archived": true } }),
    )
    .await;
    assert_eq!(ids(&only_archived), std::slice::from_ref(&archived));
    assert!(!nodes(&only_archived)[0]["archivedAt"].is_null());
    let archived_reports = list(
        &app,
        &owner,
        &organization,
        json!({ "filter": { "archived": true, "search": "report" } }),
    )
    .await;
    assert_eq!(ids(&archived_reports), std::slice::from_ref(&archived));
    let reports = list(
        &app,
        &owner,
        &organization,
        json!({ "filter": { "search": "report" } }),
    )
    .await;
    assert_eq!(ids(&reports), std::slice::from_ref(&kept));

    unarchive(&app, token, &archived).await.data();
    let listed = list(&app, &owner, &organization, json!({})).await;
    assert_eq!(ids(&listed), [other, archived, kept]);
    let only_archived = list(
        &app,
        &owner,
        &organization,
        json!({ "filter": { "archived": true } }),
    )
    .await;
    assert_eq!(ids(&only_archived), Vec::<String>::new());
}

#[tokio::test]
async fn a_viewer_cannot_archive_or_unarchive_and_an_outsider_finds_nothing() {
    let app = quiet_app().await;
    let (owner, organization) = owner_and_organization(&app).await;
    let viewer = app.member(&organization, Role::Viewer).await;
    let viewer_key = crate::api_keys::api_key(&app, &owner, &organization, "VIEWER").await;
    let outsider = app.user().await;
    let live = named(&app, &owner, &organization, "Live").await;
    let archived = named(&app, &owner, &organization, "Archived").await;
    archive(&app, &owner.access_token, &archived).await.data();

    for token in [viewer.access_token.as_str(), viewer_key.as_str()] {
        assert_code(&archive(&app, token, &live).await, "FORBIDDEN");
        assert_code(&unarchive(&app, token, &archived).await, "FORBIDDEN");
    }
    assert_code(
        &archive(&app, &outsider.access_token, &live).await,
        "NOT_FOUND",
    );
    assert_code(
        &unarchive(&app, &outsider.access_token, &archived).await,
        "NOT_FOUND",
    );
    assert_code(
        &archive(&app, &owner.access_token, &unknown_id()).await,
        "NOT_FOUND",
    );

    assert_eq!(
        read(&app, &owner.access_token, &live).await["archivedAt"],
        Value::Null
    );
    assert!(!read(&app, &owner.access_token, &archived).await["archivedAt"].is_null());
}

// Duplicating

#[tokio::test]
async fn a_duplicate_copies_the_active_version_description_tags_and_limit_and_nothing_else() {
    let app = quiet_app().await;
    let (owner, organization) = owner_and_organization(&app).await;
    let editor = app.member(&organization, Role::Editor).await;
    let token = owner.access_token.as_str();
    let created = app
        .graphql_as(
            token,
            CREATE,
            json!({ "input": {
                "organizationId": organization, "name": "Nightly report", "description": "Builds it",
                "maxConcurrency": 3,
                "definition": { "steps": one_step() }
            } }),
        )
        .await;
    let original = id_of(&created.data()["createWorkflow"]);
    tag(&app, &owner, &original, json!(["prod", "billing"])).await;
    app.run(&owner, &original, json!({})).await;

    // Version 2 is the active one; version 3 is newer but not published.
    let definition = |steps: Value| json!({ "steps": steps, "timeoutMs": 60000 });
    let active_steps = json!([
        { "id": "fetch", "kind": "TRANSFORM", "config": { "output": 2 }, "retry": { "maxAttempts": 3 }, "timeoutMs": 5000 },
        { "id": "report", "kind": "TRANSFORM", "needs": ["fetch"], "config": { "output": "{{ steps.fetch.output }}" } }
    ]);
    let add_version = |steps: Value| {
        let app = &app;
        let original = original.clone();
        let definition = definition(steps);
        async move {
            let response = app
                .graphql_as(
                    token,
                    "mutation($input: CreateWorkflowVersionInput!) { createWorkflowVersion(input: $input) { id } }",
                    json!({ "input": { "workflowId": original, "definition": definition } }),
                )
                .await;
            id_of(&response.data()["createWorkflowVersion"])
        }
    };
    let two = add_version(active_steps).await;
    add_version(json!([{ "id": "unpublished", "kind": "TRANSFORM", "config": { "output": 3 } }]))
        .await;
    app.graphql_as(
        token,
        "mutation($input: PublishWorkflowVersionInput!) { publishWorkflowVersion(input: $input) { id } }",
        json!({ "input": { "workflowId": original, "versionId": two } }),
    )
    .await
    .data();
    let original_before = read_for_copy(&app, token, &original).await;
    assert_eq!(original_before["activeVersion"]["number"], 2);

    let response = duplicate(
        &app,
        &editor.access_token,
        json!({ "workflowId": original }),
    )
    .await;
    let copy = response.data()["duplicateWorkflow"].clone();
    let copy_id = id_of(&copy);
    assert_ne!(copy_id, original);
    assert_eq!(copy["name"], "Nightly report (copy)");
    assert_eq!(copy["description"], "Builds it");
    assert_eq!(copy["tags"], json!(["billing", "prod"]));
    assert_eq!(copy["maxConcurrency"], 3);
    assert_eq!(copy["archivedAt"], Value::Null);
    assert_eq!(
        copy["organization"]["id"].as_str(),
        Some(organization.as_str())
    );
    assert_eq!(
        copy["createdBy"]["id"].as_str(),
        Some(editor.user_id.as_str())
    );
    assert_eq!(copy["activeVersion"]["number"], 1);
    assert_eq!(
        copy["activeVersion"]["definition"], original_before["activeVersion"]["definition"],
        "the copy's version 1 is the original's active version"
    );
    assert_eq!(
        copy["versions"]["edges"],
        json!([{ "node": { "number": 1 } }])
    );
    assert_eq!(copy["executions"]["edges"], json!([]));
    assert_eq!(copy["lastExecution"], Value::Null);

    assert_eq!(read_for_copy(&app, token, &copy_id).await, copy);
    assert_eq!(
        read_for_copy(&app, token, &original).await,
        original_before,
        "the original is as it was"
    );
    let listed = list(&app, &owner, &organization, json!({})).await;
    assert_eq!(ids(&listed), [copy_id, original]);
}

#[tokio::test]
async fn a_duplicate_takes_the_name_given_or_the_original_name_with_copy() {
    let app = quiet_app().await;
    let (owner, organization) = owner_and_organization(&app).await;
    let token = owner.access_token.as_str();
    let original = named(&app, &owner, &organization, "Nightly report").await;

    let chosen = duplicate(
        &app,
        token,
        json!({ "workflowId": original, "name": "Weekly report" }),
    )
    .await;
    assert_eq!(chosen.data()["duplicateWorkflow"]["name"], "Weekly report");
    let default = duplicate(&app, token, json!({ "workflowId": original })).await;
    assert_eq!(
        default.data()["duplicateWorkflow"]["name"],
        "Nightly report (copy)"
    );

    let long_name = "n".repeat(100);
    let long = named(&app, &owner, &organization, &long_name).await;
    let copy = duplicate(&app, token, json!({ "workflowId": long })).await;
    let copy_name = copy.data()["duplicateWorkflow"]["name"]
        .as_str()
        .expect("name")
        .to_owned();
    assert_eq!(copy_name.chars().count(), 100, "{copy_name}");
    assert!(copy_name.starts_with(&long_name[..93]), "{copy_name}");
}

#[tokio::test]
async fn duplicating_an_archived_workflow_makes_a_copy_that_is_not_archived() {
    let app = quiet_app().await;
    let (owner, organization) = owner_and_organization(&app).await;
    let token = owner.access_token.as_str();
    let original = named(&app, &owner, &organization, "Retired").await;
    archive(&app, token, &original).await.data();

    let copy = duplicate(&app, token, json!({ "workflowId": original })).await;
    let copy = copy.data()["duplicateWorkflow"].clone();
    assert_eq!(copy["archivedAt"], Value::Null);
    assert!(!read(&app, token, &original).await["archivedAt"].is_null());
    let listed = list(&app, &owner, &organization, json!({})).await;
    assert_eq!(ids(&listed), [id_of(&copy)]);
    app.run(&owner, &id_of(&copy), json!({})).await;
}

#[tokio::test]
async fn a_viewer_cannot_duplicate_and_an_outsider_finds_nothing() {
    let app = quiet_app().await;
    let (owner, organization) = owner_and_organization(&app).await;
    let viewer = app.member(&organization, Role::Viewer).await;
    let viewer_key = crate::api_keys::api_key(&app, &owner, &organization, "VIEWER").await;
    let outsider = app.user().await;
    let original = named(&app, &owner, &organization, "Original").await;

    for token in [viewer.access_token.as_str(), viewer_key.as_str()] {
        let refused = duplicate(&app, token, json!({ "workflowId": original })).await;
        assert_code(&refused, "FORBIDDEN");
    }
    let refused = duplicate(
        &app,
        &outsider.access_token,
        json!({ "workflowId": original }),
    )
    .await;
    assert_code(&refused, "NOT_FOUND");
    assert_eq!(refused.body["data"], Value::Null, "{}", refused.body);
    let unknown = duplicate(
        &app,
        &owner.access_token,
        json!({ "workflowId": unknown_id() }),
    )
    .await;
    assert_code(&unknown, "NOT_FOUND");

    let listed = list(&app, &owner, &organization, json!({})).await;
    assert_eq!(ids(&listed), [original]);
}

// The organization's list

#[tokio::test]
async fn search_matches_part_of_the_name_in_any_case_with_percent_and_underscore_taken_literally() {
    let app = quiet_app().await;
    let (owner, organization) = owner_and_organization(&app).await;
    for name in [
        "Nightly Report",
        "weekly report",
        "100% done",
        "1000 done",
        "a_b",
        "axb",
    ] {
        named(&app, &owner, &organization, name).await;
        a_second_passes(&app);
    }
    let search = |text: &str| {
        let (app, owner, organization) = (&app, &owner, &organization);
        let args = json!({ "filter": { "search": text }, "orderBy": "NAME_ASC" });
        async move { names(&list(app, owner, organization, args).await) }
    };
    assert_eq!(search("REPORT").await, ["Nightly Report", "weekly report"]);
    assert_eq!(search("ightly").await, ["Nightly Report"]);
    assert_eq!(search("%").await, ["100% done"]);
    assert_eq!(search("0%").await, ["100% done"]);
    assert_eq!(search("_").await, ["a_b"]);
    assert_eq!(search("a_b").await, ["a_b"]);
    assert_eq!(search("nothing like it").await, Vec::<String>::new());
    assert_eq!(
        search("").await.len(),
        6,
        "an empty search matches everything"
    );
}

#[tokio::test]
async fn a_tags_filter_keeps_workflows_having_every_tag() {
    let app = quiet_app().await;
    let (owner, organization) = owner_and_organization(&app).await;
    let both = named(&app, &owner, &organization, "both").await;
    tag(&app, &owner, &both, json!(["billing", "prod"])).await;
    let prod = named(&app, &owner, &organization, "prod only").await;
    tag(&app, &owner, &prod, json!(["prod"])).await;
    let billing = named(&app, &owner, &organization, "billing only").await;
    tag(&app, &owner, &billing, json!(["billing", "team:data"])).await;
    named(&app, &owner, &organization, "untagged").await;

    let tagged = |tags: Value| {
        let (app, owner, organization) = (&app, &owner, &organization);
        let args = json!({ "filter": { "tags": tags }, "orderBy": "NAME_ASC" });
        async move { names(&list(app, owner, organization, args).await) }
    };
    assert_eq!(tagged(json!(["prod"])).await, ["both", "prod only"]);
    assert_eq!(tagged(json!(["billing"])).await, ["billing only", "both"]);
    assert_eq!(tagged(json!(["prod", "billing"])).await, ["both"]);
    assert_eq!(
        tagged(json!(["prod", "team:data"])).await,
        Vec::<String>::new()
    );
    assert_eq!(tagged(json!(["nowhere"])).await, Vec::<String>::new());
    assert_eq!(
        tagged(json!([])).await.len(),
        4,
        "no tags asked for, none required"
    );

    let listed = list(
        &app,
        &owner,
        &organization,
        json!({ "filter": { "tags": ["prod"], "search": "ONLY" } }),
    )
    .await;
    assert_eq!(names(&listed), ["prod only"]);
    assert_eq!(nodes(&listed)[0]["tags"], json!(["prod"]));
}

#[tokio::test]
async fn each_order_lists_workflows_as_named() {
    let app = quiet_app().await;
    let (owner, organization) = owner_and_organization(&app).await;
    let token = owner.access_token.as_str();
    named(&app, &owner, &organization, "charlie").await;
    a_second_passes(&app);
    named(&app, &owner, &organization, "alpha").await;
    a_second_passes(&app);
    named(&app, &owner, &organization, "bravo").await;
    a_second_passes(&app);
    // Editing charlie makes it the most recently updated.
    let charlie = list(
        &app,
        &owner,
        &organization,
        json!({ "filter": { "search": "charlie" } }),
    )
    .await;
    update(
        &app,
        token,
        &ids(&charlie)[0],
        json!({ "description": "edited" }),
    )
    .await
    .data();

    let expected = [
        ("CREATED_AT_DESC", ["bravo", "alpha", "charlie"]),
        ("CREATED_AT_ASC", ["charlie", "alpha", "bravo"]),
        ("UPDATED_AT_DESC", ["charlie", "bravo", "alpha"]),
        ("NAME_ASC", ["alpha", "bravo", "charlie"]),
    ];
    for (order, names_in_order) in expected {
        let listed = list(&app, &owner, &organization, json!({ "orderBy": order })).await;
        assert_eq!(names(&listed), names_in_order, "{order}");
    }
    let default = list(&app, &owner, &organization, json!({})).await;
    assert_eq!(
        names(&default),
        ["bravo", "alpha", "charlie"],
        "CREATED_AT_DESC by default"
    );
}

#[tokio::test]
async fn workflows_with_the_same_name_are_ordered_by_id_and_each_paged_once() {
    let app = quiet_app().await;
    let (owner, organization) = owner_and_organization(&app).await;
    let mut same = Vec::new();
    for _ in 0..4 {
        same.push(named(&app, &owner, &organization, "same").await);
    }
    named(&app, &owner, &organization, "earlier").await;
    named(&app, &owner, &organization, "later").await;
    same.sort();

    let mut walked = Vec::new();
    let mut after = Value::Null;
    loop {
        let mut args = json!({ "first": 1, "orderBy": "NAME_ASC" });
        if !after.is_null() {
            args["after"] = after.clone();
        }
        let page = list(&app, &owner, &organization, args).await;
        walked.extend(nodes(&page).iter().map(|n| (n["name"].clone(), id_of(n))));
        if page["pageInfo"]["hasNextPage"] == false {
            break;
        }
        after = page["pageInfo"]["endCursor"].clone();
        assert!(walked.len() <= 6, "the walk does not end: {walked:?}");
    }
    let walked_names: Vec<Value> = walked.iter().map(|(name, _)| name.clone()).collect();
    assert_eq!(
        walked_names,
        [
            json!("earlier"),
            json!("later"),
            json!("same"),
            json!("same"),
            json!("same"),
            json!("same")
        ]
    );
    let same_walked: Vec<String> = walked[2..].iter().map(|(_, id)| id.clone()).collect();
    assert_eq!(same_walked, same, "ties in ascending id order");
}

#[tokio::test]
async fn paging_walks_every_workflow_once_while_new_ones_are_created_between_pages() {
    let app = quiet_app().await;
    let owner = app.user().await;
    for order in ORDERS {
        // An organization per order, so every walk starts from the same list.
        let organization = app.organization(&owner, order).await;
        for n in 0..5 {
            named(&app, &owner, &organization, &format!("w{n}")).await;
            a_second_passes(&app);
        }

        let mut walked: Vec<String> = Vec::new();
        let mut after = Value::Null;
        let mut pages = 0;
        loop {
            let mut args = json!({ "first": 2, "orderBy": order });
            if !after.is_null() {
                args["after"] = after.clone();
            }
            let page = list(&app, &owner, &organization, args).await;
            walked.extend(names(&page));
            pages += 1;
            if pages == 1 {
                // Newer than everything, and named before and after every
                // name listed so far.
                named(&app, &owner, &organization, "a-new").await;
                a_second_passes(&app);
                named(&app, &owner, &organization, "z-new").await;
                a_second_passes(&app);
            }
            if page["pageInfo"]["hasNextPage"] == false {
                break;
            }
            after = page["pageInfo"]["endCursor"].clone();
            assert!(pages < 10, "{order}: the walk does not end: {walked:?}");
        }
        let expected: &[&str] = match order {
            // New workflows are at the head, before the cursor.
            "CREATED_AT_DESC" | "UPDATED_AT_DESC" => &["w4", "w3", "w2", "w1", "w0"],
            // New workflows are at the tail, after the cursor.
            "CREATED_AT_ASC" => &["w0", "w1", "w2", "w3", "w4", "a-new", "z-new"],
            // "a-new" sorts before the cursor, "z-new" after.
            "NAME_ASC" => &["w0", "w1", "w2", "w3", "w4", "z-new"],
            other => panic!("no expectation for {other}"),
        };
        assert_eq!(walked, expected, "{order}");
    }
}

#[tokio::test]
async fn a_cursor_from_one_order_is_bad_user_input_in_another() {
    let app = quiet_app().await;
    let (owner, organization) = owner_and_organization(&app).await;
    let token = owner.access_token.as_str();
    for name in ["one", "two", "three"] {
        named(&app, &owner, &organization, name).await;
        a_second_passes(&app);
    }
    let mut cursors = Vec::new();
    for order in ORDERS {
        let page = list(
            &app,
            &owner,
            &organization,
            json!({ "first": 1, "orderBy": order }),
        )
        .await;
        assert_eq!(page["pageInfo"]["hasNextPage"], true, "{order}");
        cursors.push((order, page["pageInfo"]["endCursor"].clone()));
    }
    for (from, cursor) in &cursors {
        for order in ORDERS {
            let response = list_response(
                &app,
                token,
                &organization,
                json!({ "first": 1, "after": cursor, "orderBy": order }),
            )
            .await;
            if order == *from {
                let page = &response.data()["organization"]["workflows"];
                assert_eq!(nodes(page).len(), 1, "{from} cursor in its own order");
            } else {
                assert_eq!(
                    response.error_code(),
                    "BAD_USER_INPUT",
                    "{from} cursor in {order}"
                );
                assert_eq!(response.error_field(), "after", "{from} cursor in {order}");
            }
        }
    }
    // The default order is CREATED_AT_DESC: its cursors work without orderBy.
    let (_, created_desc) = &cursors[0];
    let default = list_response(
        &app,
        token,
        &organization,
        json!({ "first": 1, "after": created_desc }),
    )
    .await;
    assert_eq!(nodes(&default.data()["organization"]["workflows"]).len(), 1);
    let (_, name_asc) = &cursors[3];
    let default = list_response(
        &app,
        token,
        &organization,
        json!({ "first": 1, "after": name_asc }),
    )
    .await;
    assert_bad_input(&default, "after");

    for (args, field) in [
        (json!({ "first": 101 }), "first"),
        (json!({ "first": -1 }), "first"),
        (json!({ "after": "%%%" }), "after"),
        (json!({ "after": "bm90LWEtY3Vyc29y" }), "after"),
    ] {
        let response = list_response(&app, token, &organization, args.clone()).await;
        assert_eq!(response.error_code(), "BAD_USER_INPUT", "{args}");
        assert_eq!(response.error_field(), field, "{args}");
    }
}

#[tokio::test]
async fn a_viewer_lists_workflows_and_an_outsider_finds_nothing() {
    let app = quiet_app().await;
    let (owner, organization) = owner_and_organization(&app).await;
    let viewer = app.member(&organization, Role::Viewer).await;
    let viewer_key = crate::api_keys::api_key(&app, &owner, &organization, "VIEWER").await;
    let outsider = app.user().await;
    let workflow = named(&app, &owner, &organization, "Visible").await;

    let listed = list(&app, &viewer, &organization, json!({})).await;
    assert_eq!(ids(&listed), std::slice::from_ref(&workflow));
    let by_key = list_response(&app, &viewer_key, &organization, json!({})).await;
    assert_eq!(ids(&by_key.data()["organization"]["workflows"]), [workflow]);

    let refused = list_response(&app, &outsider.access_token, &organization, json!({})).await;
    assert_code(&refused, "NOT_FOUND");
    assert_eq!(
        refused.body["data"]["organization"],
        Value::Null,
        "{}",
        refused.body
    );
}

// Who made it, and its latest executions

#[tokio::test]
async fn created_by_names_the_user_who_made_a_workflow_and_is_null_for_an_api_key() {
    let app = quiet_app().await;
    let (owner, organization) = owner_and_organization(&app).await;
    let editor = app.member(&organization, Role::Editor).await;
    let key = crate::api_keys::api_key(&app, &owner, &organization, "EDITOR").await;

    let by_editor = create_named(&app, &editor.access_token, &organization, "By hand").await;
    assert_eq!(
        by_editor["createdBy"]["id"].as_str(),
        Some(editor.user_id.as_str())
    );
    assert_eq!(by_editor["createdBy"]["displayName"], "Test User");
    let read_back = read(&app, &owner.access_token, &id_of(&by_editor)).await;
    assert_eq!(read_back["createdBy"], by_editor["createdBy"]);

    let by_key = create_named(&app, &key, &organization, "By key").await;
    assert_eq!(by_key["createdBy"], Value::Null, "{by_key}");
    let read_back = read(&app, &owner.access_token, &id_of(&by_key)).await;
    assert_eq!(read_back["createdBy"], Value::Null);
    let version = app
        .graphql_as(
            &owner.access_token,
            "query($id: ID!) { workflow(id: $id) { activeVersion { number author { id } } } }",
            json!({ "id": id_of(&by_key) }),
        )
        .await;
    assert_eq!(
        version.data()["workflow"]["activeVersion"],
        json!({ "number": 1, "author": null })
    );

    let copied_by_key = duplicate(&app, &key, json!({ "workflowId": id_of(&by_editor) })).await;
    assert_eq!(
        copied_by_key.data()["duplicateWorkflow"]["createdBy"],
        Value::Null
    );
}

#[tokio::test]
async fn last_execution_and_recent_executions_are_the_workflows_newest_runs() {
    let app = quiet_app().await;
    let (owner, organization) = owner_and_organization(&app).await;
    let token = owner.access_token.as_str();
    let workflow = named(&app, &owner, &organization, "Busy").await;
    let other = named(&app, &owner, &organization, "Other").await;

    let idle = app
        .graphql_as(
            token,
            EXECUTION_SUMMARY,
            json!({ "id": workflow, "limit": 5 }),
        )
        .await;
    assert_eq!(
        idle.data()["workflow"],
        json!({ "lastExecution": null, "recentExecutions": [] })
    );

    let mut runs = Vec::new();
    for n in 0..7 {
        runs.push(app.run(&owner, &workflow, json!({ "n": n })).await);
        app.run(&owner, &other, json!({ "n": n })).await;
    }
    let newest_first: Vec<String> = runs.iter().rev().cloned().collect();

    let summary = |limit: i64| {
        let (app, workflow) = (&app, &workflow);
        async move {
            app.graphql_as(
                token,
                EXECUTION_SUMMARY,
                json!({ "id": workflow, "limit": limit }),
            )
            .await
            .data()["workflow"]
                .clone()
        }
    };
    let two = summary(2).await;
    assert_eq!(execution_ids(&two["recentExecutions"]), newest_first[..2]);
    assert_eq!(
        two["lastExecution"]["id"].as_str(),
        Some(newest_first[0].as_str())
    );
    assert_eq!(two["lastExecution"]["status"], "QUEUED");
    assert_eq!(
        two["lastExecution"]["workflow"]["id"].as_str(),
        Some(workflow.as_str())
    );
    assert_eq!(
        execution_ids(&summary(1).await["recentExecutions"]),
        newest_first[..1]
    );
    assert_eq!(
        execution_ids(&summary(20).await["recentExecutions"]),
        newest_first
    );

    let default = app
        .graphql_as(token, EXECUTION_SUMMARY_DEFAULT, json!({ "id": workflow }))
        .await;
    let default = &default.data()["workflow"];
    assert_eq!(
        execution_ids(&default["recentExecutions"]),
        newest_first[..5],
        "5 by default"
    );
    assert_eq!(
        default["lastExecution"]["id"],
        default["recentExecutions"][0]["id"]
    );

    for limit in [0, -1, 21] {
        let response = app
            .graphql_as(
                token,
                EXECUTION_SUMMARY,
                json!({ "id": workflow, "limit": limit }),
            )
            .await;
        assert_eq!(response.error_code(), "BAD_USER_INPUT", "limit {limit}");
        assert_eq!(response.error_field(), "limit", "limit {limit}");
    }
}

// The dashboard

/// A workflow made for the dashboard.
struct DashboardWorkflow {
    id: String,
    /// Its executions, oldest first.
    runs: Vec<String>,
    /// Its triggers, oldest first.
    triggers: Vec<MadeTrigger>,
}

/// A trigger as it was made.
struct MadeTrigger {
    id: String,
    /// A webhook's token's first 10 characters; None for a schedule.
    token_prefix: Option<String>,
}

/// A schedule at 03:00 UTC every day on `workflow`; answers its id.
async fn nightly_schedule(app: &TestApp, token: &str, workflow: &str) -> String {
    let response = app
        .graphql_as(
            token,
            CREATE_SCHEDULE_TRIGGER,
            json!({ "input": { "workflowId": workflow, "cron": "0 3 * * *" } }),
        )
        .await;
    let created = &response.data()["createScheduleTrigger"];
    assert_eq!(created["kind"], "SCHEDULE", "{created}");
    id_of(created)
}

/// A webhook on `workflow`; answers its id and its token's first 10
/// characters.
async fn webhook(app: &TestApp, token: &str, workflow: &str) -> (String, String) {
    let response = app
        .graphql_as(
            token,
            CREATE_WEBHOOK_TRIGGER,
            json!({ "input": { "workflowId": workflow } }),
        )
        .await;
    let created = &response.data()["createWebhookTrigger"];
    assert_eq!(created["trigger"]["kind"], "WEBHOOK", "{created}");
    let path = created["path"].as_str().expect("path");
    let secret = path
        .strip_prefix("/hooks/")
        .unwrap_or_else(|| panic!("not a webhook path: {path}"));
    assert!(secret.starts_with("fph_"), "{path}");
    (
        id_of(&created["trigger"]),
        secret.chars().take(10).collect(),
    )
}

/// `node`'s triggers are `made`, oldest first, as the dashboard selects
/// them: enabled, never fired, a schedule's next run at 03:00 UTC after
/// `began` (before it was made) and at most a day after `now` (after), a
/// webhook's token prefix.
#[track_caller]
fn assert_dashboard_triggers(
    node: &Value,
    made: &[MadeTrigger],
    began: DateTime<Utc>,
    now: DateTime<Utc>,
) {
    let listed = node["triggers"]
        .as_array()
        .unwrap_or_else(|| panic!("no triggers: {node}"));
    let listed_ids: Vec<String> = listed.iter().map(id_of).collect();
    let made_ids: Vec<String> = made.iter().map(|t| t.id.clone()).collect();
    assert_eq!(listed_ids, made_ids, "{node}");
    for (trigger, expected) in listed.iter().zip(made) {
        assert_eq!(trigger["enabled"], true, "{node}");
        assert_eq!(trigger["lastFiredAt"], Value::Null, "{node}");
        match &expected.token_prefix {
            None => {
                assert_eq!(trigger["kind"], "SCHEDULE", "{node}");
                assert_eq!(trigger["webhook"], Value::Null, "{node}");
                assert_eq!(trigger["schedule"]["cron"], "0 3 * * *", "{node}");
                assert_eq!(trigger["schedule"]["timeZone"], "UTC", "{node}");
                let next = time(&trigger["schedule"]["nextRunAt"]);
                assert_eq!(next.format("%H:%M:%S").to_string(), "03:00:00", "{node}");
                assert!(
                    next > began && next <= now + Duration::days(1),
                    "next run {next} for a schedule made between {began} and {now}: {node}"
                );
            }
            Some(prefix) => {
                assert_eq!(trigger["kind"], "WEBHOOK", "{node}");
                assert_eq!(trigger["schedule"], Value::Null, "{node}");
                assert_eq!(
                    trigger["webhook"],
                    json!({ "tokenPrefix": prefix }),
                    "{node}"
                );
            }
        }
    }
}

#[tokio::test]
async fn the_dashboard_query_costs_the_same_statements_for_10_or_100_workflows() {
    let app = quiet_app().await;
    let began = app.clock.now();
    let (owner, organization) = owner_and_organization(&app).await;
    let token = owner.access_token.as_str();
    let mut made: Vec<DashboardWorkflow> = Vec::new();
    let mut counts = Vec::new();
    for (total, first) in [(10, 10), (100, 100)] {
        while made.len() < total {
            let index = made.len();
            let workflow = named(&app, &owner, &organization, &format!("dashboard {index}")).await;
            let mut runs = Vec::new();
            for n in 0..6 {
                runs.push(app.run(&owner, &workflow, json!({ "n": n })).await);
            }
            // A schedule on each workflow, and a webhook too on every
            // other one.
            let mut triggers = vec![MadeTrigger {
                id: nightly_schedule(&app, token, &workflow).await,
                token_prefix: None,
            }];
            if index % 2 == 1 {
                let (id, prefix) = webhook(&app, token, &workflow).await;
                triggers.push(MadeTrigger {
                    id,
                    token_prefix: Some(prefix),
                });
            }
            made.push(DashboardWorkflow {
                id: workflow,
                runs,
                triggers,
            });
        }
        let variables = json!({ "id": organization, "first": first });
        // Once unmeasured: whatever a request writes at most once a minute
        // (a session's lastSeenAt) is written here, not in the count.
        app.graphql_as(token, DASHBOARD, variables.clone())
            .await
            .data();
        let before = app.state.sql_statements.get();
        let response = app.graphql_as(token, DASHBOARD, variables).await;
        counts.push(app.state.sql_statements.get() - before);

        let now = app.clock.now();
        let listed = nodes(&response.data()["organization"]["workflows"]);
        assert_eq!(listed.len(), first, "a full page");
        let mut seen: Vec<String> = listed.iter().map(id_of).collect();
        seen.sort();
        let mut expected: Vec<String> = made.iter().map(|w| w.id.clone()).collect();
        expected.sort();
        assert_eq!(seen, expected);
        for node in &listed {
            let workflow = made
                .iter()
                .find(|w| w.id == id_of(node))
                .expect("a workflow made here");
            let newest_five: Vec<String> = workflow.runs.iter().rev().take(5).cloned().collect();
            assert_eq!(
                execution_ids(&node["recentExecutions"]),
                newest_five,
                "{node}"
            );
            assert!(
                node["recentExecutions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|e| e["status"] == "QUEUED"),
                "{node}"
            );
            assert_eq!(
                node["lastExecution"]["id"], node["recentExecutions"][0]["id"],
                "{node}"
            );
            assert_eq!(node["lastExecution"]["status"], "QUEUED");
            assert_eq!(node["tags"], json!([]));
            assert_eq!(
                node["createdBy"]["id"].as_str(),
                Some(owner.user_id.as_str())
            );
            assert_eq!(node["createdBy"]["displayName"], "Test User");
            assert_eq!(node["activeVersion"]["number"], 1);
            assert_eq!(
                node["activeVersion"]["author"]["id"].as_str(),
                Some(owner.user_id.as_str())
            );
            assert_dashboard_triggers(node, &workflow.triggers, began, now);
        }
    }
    assert_eq!(
        counts[0], counts[1],
        "statements grew with the page: {counts:?}"
    );
    assert!(
        counts[1] <= 8,
        "the dashboard took {} statements, authentication included: {counts:?}",
        counts[1]
    );
}
