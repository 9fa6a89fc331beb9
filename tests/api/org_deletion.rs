//! `deleteOrganization`: only an OWNER deletes an organization. Its queued
//! and running executions are cancelled through the engine first (the
//! payload counts them, and a subscriber to a running one sees it end
//! CANCELLED before its stream completes); then the organization, its
//! workflows, executions, memberships, invitations, keys and audit log are
//! gone: reads of them answer NOT_FOUND, its keys UNAUTHENTICATED, and no
//! one's memberships list it. The owner's other organizations are untouched.
//! An ADMIN (member or key) is FORBIDDEN, an outsider and a second
//! deletion NOT_FOUND.

use entity::role::Role;
use serde_json::{Value, json};

use crate::api_keys::api_key;
use crate::members::{assert_code, owner_and_organization};
use crate::support::ws::WsClient;
use crate::support::{GqlResponse, Session, TestApp};

const DELETE_ORGANIZATION: &str = "mutation($organizationId: ID!) {
  deleteOrganization(input: { organizationId: $organizationId }) { organizationId cancelledExecutions }
}";
const ORGANIZATION: &str = "query($id: ID!) { organization(id: $id) { id name viewerRole } }";
const WORKFLOW: &str = "query($id: ID!) { workflow(id: $id) { id name } }";
const EXECUTION: &str = "query($id: ID!) { execution(id: $id) { id status } }";
const MEMBERSHIPS: &str = "{ viewer { memberships { organization { id } } } }";

/// A one-minute DELAY: an execution of it keeps running (or queued) for
/// as long as any test here lasts.
fn slow_steps() -> Value {
    json!([{ "id": "wait", "kind": "DELAY", "config": { "ms": 60000 } }])
}

/// A one-step workflow that finishes at once.
fn fast_steps() -> Value {
    json!([{ "id": "a", "kind": "TRANSFORM", "config": { "output": 1 } }])
}

/// A server with a single worker that holds on to a long DELAY instead of
/// parking it: one execution runs, any other stays QUEUED meanwhile.
async fn app_with_one_busy_worker() -> TestApp {
    TestApp::spawn_with(|settings| {
        settings.workers = 1;
        settings.park_after_ms = 3_600_000;
    })
    .await
}

/// `deleteOrganization` of `organization`, sent with `token` (an access
/// token or an API key).
async fn delete(app: &TestApp, token: &str, organization: &str) -> GqlResponse {
    app.graphql_as(
        token,
        DELETE_ORGANIZATION,
        json!({ "organizationId": organization }),
    )
    .await
}

/// `query` for the object with `id`, sent with `token`.
async fn read(app: &TestApp, token: &str, query: &str, id: &str) -> GqlResponse {
    app.graphql_as(token, query, json!({ "id": id })).await
}

/// The ids of the organizations `session` is a member of.
async fn membership_ids(app: &TestApp, session: &Session) -> Vec<String> {
    let response = app
        .graphql_as(&session.access_token, MEMBERSHIPS, json!({}))
        .await;
    response.data()["viewer"]["memberships"]
        .as_array()
        .unwrap_or_else(|| panic!("no memberships in {}", response.body))
        .iter()
        .map(|m| {
            m["organization"]["id"]
                .as_str()
                .expect("organization id")
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn deleting_an_organization_cancels_its_queued_and_running_executions_first() {
    let app = app_with_one_busy_worker().await;
    let (_, owner, acme) = owner_and_organization(&app).await;
    let beta = app.organization(&owner, "Beta").await;

    // A finished execution is not counted.
    let fast = app.workflow(&owner, &acme, fast_steps()).await;
    let finished = app.run(&owner, &fast, json!({})).await;
    assert_eq!(
        app.finished_execution(&owner, &finished).await["status"],
        "SUCCEEDED"
    );

    // One running (the worker holds it: queued, started, DELAY started)...
    let slow = app.workflow(&owner, &acme, slow_steps()).await;
    let running = app.run(&owner, &slow, json!({})).await;
    let mut subscriber = WsClient::connect_as(&app, Some(&owner.access_token)).await;
    subscriber.subscribe_events("running", &running, 0).await;
    let seen = subscriber.events_until_seq("running", 3).await;
    assert_eq!(seen.last().unwrap()["kind"], "STEP_STARTED", "{seen:?}");
    // ...one queued behind it, and one of the other organization queued too.
    let queued = app.run(&owner, &slow, json!({})).await;
    let beta_workflow = app.workflow(&owner, &beta, fast_steps()).await;
    let beta_execution = app.run(&owner, &beta_workflow, json!({})).await;

    let response = delete(&app, &owner.access_token, &acme).await;
    assert_eq!(
        response.data()["deleteOrganization"],
        json!({ "organizationId": acme, "cancelledExecutions": 2 })
    );

    let rest = subscriber.events_until_complete("running").await;
    let last = rest
        .last()
        .unwrap_or_else(|| panic!("the stream completed without a CANCELLED event"));
    assert_eq!(last["kind"], "EXECUTION_CANCELLED", "{rest:?}");
    assert_eq!(last["executionStatus"], "CANCELLED");
    assert_eq!(last["execution"]["id"], running.as_str());
    assert_eq!(last["execution"]["status"], "CANCELLED");

    for id in [&finished, &running, &queued] {
        assert_code(
            &read(&app, &owner.access_token, EXECUTION, id).await,
            "NOT_FOUND",
        );
    }
    // The other organization's execution was left alone: the worker, free
    // again, runs it to the end.
    assert_eq!(
        app.finished_execution(&owner, &beta_execution).await["status"],
        "SUCCEEDED"
    );
}

#[tokio::test]
async fn a_deleted_organization_and_its_workflows_and_executions_answer_not_found() {
    let app = TestApp::spawn_with(|settings| settings.workers = 0).await;
    let (_, owner, acme) = owner_and_organization(&app).await;
    let workflow = app.workflow(&owner, &acme, slow_steps()).await;
    let execution = app.run(&owner, &workflow, json!({})).await;

    let response = delete(&app, &owner.access_token, &acme).await;
    assert_eq!(
        response.data()["deleteOrganization"],
        json!({ "organizationId": acme, "cancelledExecutions": 1 })
    );

    for (query, id) in [
        (ORGANIZATION, &acme),
        (WORKFLOW, &workflow),
        (EXECUTION, &execution),
    ] {
        let response = read(&app, &owner.access_token, query, id).await;
        assert_code(&response, "NOT_FOUND");
    }
}

#[tokio::test]
async fn a_deleted_organization_leaves_every_members_memberships() {
    let app = TestApp::spawn().await;
    let (_, owner, acme) = owner_and_organization(&app).await;
    let beta = app.organization(&owner, "Beta").await;
    let admin = app.member(&acme, Role::Admin).await;
    assert_eq!(
        membership_ids(&app, &admin).await,
        std::slice::from_ref(&acme)
    );

    delete(&app, &owner.access_token, &acme).await.data();

    assert_eq!(membership_ids(&app, &owner).await, [beta]);
    assert!(membership_ids(&app, &admin).await.is_empty());
    assert_code(
        &read(&app, &admin.access_token, ORGANIZATION, &acme).await,
        "NOT_FOUND",
    );
}

#[tokio::test]
async fn the_keys_of_a_deleted_organization_are_unauthenticated() {
    let app = TestApp::spawn().await;
    let (_, owner, acme) = owner_and_organization(&app).await;
    let key = api_key(&app, &owner, &acme, "VIEWER").await;
    let before = read(&app, &key, ORGANIZATION, &acme).await;
    assert_eq!(before.data()["organization"]["id"], acme.as_str());

    delete(&app, &owner.access_token, &acme).await.data();

    assert_code(
        &read(&app, &key, ORGANIZATION, &acme).await,
        "UNAUTHENTICATED",
    );
    assert_code(
        &app.graphql_as(&key, "{ viewer { id } }", json!({})).await,
        "UNAUTHENTICATED",
    );
}

#[tokio::test]
async fn deleting_one_organization_leaves_the_owners_other_organization_untouched() {
    let app = TestApp::spawn_with(|settings| settings.workers = 0).await;
    let (_, owner, acme) = owner_and_organization(&app).await;
    let beta = app.organization(&owner, "Beta").await;
    let beta_member = app.member(&beta, Role::Editor).await;
    let beta_key = api_key(&app, &owner, &beta, "VIEWER").await;
    let beta_workflow = app.workflow(&owner, &beta, slow_steps()).await;
    let beta_execution = app.run(&owner, &beta_workflow, json!({})).await;
    let acme_workflow = app.workflow(&owner, &acme, slow_steps()).await;
    app.run(&owner, &acme_workflow, json!({})).await;

    let response = delete(&app, &owner.access_token, &acme).await;
    assert_eq!(
        response.data()["deleteOrganization"]["cancelledExecutions"],
        1,
        "only the deleted organization's execution is cancelled"
    );

    let organization = read(&app, &owner.access_token, ORGANIZATION, &beta).await;
    assert_eq!(
        organization.data()["organization"],
        json!({ "id": beta, "name": "Beta", "viewerRole": "OWNER" })
    );
    let workflow = read(&app, &owner.access_token, WORKFLOW, &beta_workflow).await;
    assert_eq!(workflow.data()["workflow"]["id"], beta_workflow.as_str());
    let execution = read(&app, &owner.access_token, EXECUTION, &beta_execution).await;
    assert_eq!(
        execution.data()["execution"],
        json!({ "id": beta_execution, "status": "QUEUED" })
    );
    let by_member = read(&app, &beta_member.access_token, ORGANIZATION, &beta).await;
    assert_eq!(by_member.data()["organization"]["viewerRole"], "EDITOR");
    let by_key = read(&app, &beta_key, ORGANIZATION, &beta).await;
    assert_eq!(by_key.data()["organization"]["viewerRole"], "VIEWER");
}

#[tokio::test]
async fn an_admin_member_or_an_admin_key_is_forbidden_and_an_outsider_gets_not_found() {
    let app = TestApp::spawn().await;
    let (_, owner, acme) = owner_and_organization(&app).await;
    let admin = app.member(&acme, Role::Admin).await;
    let admin_key = api_key(&app, &owner, &acme, "ADMIN").await;
    let outsider = app.user().await;

    let by_admin = delete(&app, &admin.access_token, &acme).await;
    assert_code(&by_admin, "FORBIDDEN");
    assert_eq!(by_admin.body["data"], Value::Null, "{}", by_admin.body);
    assert_code(&delete(&app, &admin_key, &acme).await, "FORBIDDEN");
    let by_outsider = delete(&app, &outsider.access_token, &acme).await;
    assert_code(&by_outsider, "NOT_FOUND");

    // Nothing was deleted: the organization and the key still work.
    let still_there = read(&app, &owner.access_token, ORGANIZATION, &acme).await;
    assert_eq!(still_there.data()["organization"]["id"], acme.as_str());
    let by_key = read(&app, &admin_key, ORGANIZATION, &acme).await;
    assert_eq!(by_key.data()["organization"]["viewerRole"], "ADMIN");
    assert_eq!(
        membership_ids(&app, &admin).await,
        std::slice::from_ref(&acme),
        "the admin is still a member"
    );
}

#[tokio::test]
async fn deleting_an_organization_twice_is_not_found() {
    let app = TestApp::spawn().await;
    let (_, owner, acme) = owner_and_organization(&app).await;

    let first = delete(&app, &owner.access_token, &acme).await;
    assert_eq!(
        first.data()["deleteOrganization"]["organizationId"],
        acme.as_str()
    );
    let second = delete(&app, &owner.access_token, &acme).await;
    assert_code(&second, "NOT_FOUND");
    assert_eq!(second.body["data"], Value::Null, "{}", second.body);
}
