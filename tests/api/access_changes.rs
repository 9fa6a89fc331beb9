//! Access changes reach open subscriptions at once: a member whose
//! membership ends (removed by an admin, or by leaving) or whose role is
//! lowered (EDITOR to VIEWER) while subscribed to `executionEvents` of an
//! execution of the organization has their socket closed with 4403, on
//! this instance or another. Other members' subscriptions to the same
//! execution keep streaming. On a new socket, a removed member subscribing
//! again gets NOT_FOUND, a lowered one streams on at their new role, and
//! the member's subscriptions in other organizations stream on.
//!
//! The executions watched here run a one-minute DELAY that a single worker
//! holds in place, so they keep running for as long as a test lasts.

use entity::role::Role;
use serde_json::{Value, json};

use crate::members::{
    LEAVE_ORGANIZATION, REMOVE_MEMBER, UPDATE_MEMBER_ROLE, owner_and_organization,
};
use crate::support::ws::WsClient;
use crate::support::{GqlResponse, Session, TestApp};

const CANCEL: &str =
    "mutation($input: CancelExecutionInput!) { cancelExecution(input: $input) { id status } }";

/// A one-minute DELAY.
fn slow_steps() -> Value {
    json!([{ "id": "wait", "kind": "DELAY", "config": { "ms": 60000 } }])
}

/// A server with one worker that holds on to a long DELAY instead of
/// parking it, an owner with "Acme", and a running execution there.
async fn running_execution() -> (TestApp, Session, String, String) {
    let app = TestApp::spawn_with(|settings| {
        settings.workers = 1;
        settings.park_after_ms = 3_600_000;
    })
    .await;
    let (_, owner, organization) = owner_and_organization(&app).await;
    let workflow = app.workflow(&owner, &organization, slow_steps()).await;
    let execution = app.run(&owner, &workflow, json!({})).await;
    (app, owner, organization, execution)
}

/// A socket of `session` subscribed, as operation `op`, to `execution`,
/// once it has streamed the first three events (queued, started, the
/// DELAY started): the execution is running and nothing more comes until
/// something changes.
async fn watching(app: &TestApp, session: &Session, execution: &str, op: &str) -> WsClient {
    let mut client = WsClient::connect_as(app, Some(&session.access_token)).await;
    client.subscribe_events(op, execution, 0).await;
    let seen = client.events_until_seq(op, 3).await;
    assert_eq!(seen.last().unwrap()["kind"], "STEP_STARTED", "{seen:?}");
    client
}

/// Asserts that operation `op` ends now: a `next` whose first error's code
/// is `code`, then `complete`.
async fn assert_ended_with(client: &mut WsClient, op: &str, code: &str) {
    let message = client.next_json().await;
    assert_eq!(
        (message["type"].as_str(), message["id"].as_str()),
        (Some("next"), Some(op)),
        "{message}"
    );
    assert_eq!(
        message["payload"]["errors"][0]["extensions"]["code"], code,
        "{message}"
    );
    assert_eq!(
        client.next_json().await,
        json!({ "type": "complete", "id": op })
    );
}

/// Asserts the socket is open and has nothing else to say: a ping's pong
/// is the next message.
async fn assert_answers_ping(client: &mut WsClient) {
    client.send(json!({ "type": "ping" })).await;
    let message = client.next_json().await;
    assert_eq!(message["type"], "pong", "{message}");
}

/// Asserts operation `op` streams to the end of a cancelled execution.
async fn assert_streams_to_cancellation(client: &mut WsClient, op: &str) {
    let rest = client.events_until_complete(op).await;
    let last = rest
        .last()
        .unwrap_or_else(|| panic!("{op} completed without events"));
    assert_eq!(last["kind"], "EXECUTION_CANCELLED", "{rest:?}");
    assert_eq!(last["executionStatus"], "CANCELLED");
}

async fn remove(app: &TestApp, actor: &Session, organization: &str, user_id: &str) -> GqlResponse {
    app.graphql_as(
        &actor.access_token,
        REMOVE_MEMBER,
        json!({ "organizationId": organization, "userId": user_id }),
    )
    .await
}

async fn cancel(app: &TestApp, session: &Session, execution: &str) -> GqlResponse {
    app.graphql_as(
        &session.access_token,
        CANCEL,
        json!({ "input": { "executionId": execution } }),
    )
    .await
}

#[tokio::test]
async fn removing_a_member_closes_their_socket_with_4403() {
    let (app, owner, organization, execution) = running_execution().await;
    let editor = app.member(&organization, Role::Editor).await;
    let mut socket = watching(&app, &editor, &execution, "events").await;

    let response = remove(&app, &owner, &organization, &editor.user_id).await;
    assert_eq!(response.data()["removeMember"], true);

    socket.expect_close(4403).await;
}

#[tokio::test]
async fn another_members_subscription_to_the_same_execution_keeps_streaming_after_a_removal() {
    let (app, owner, organization, execution) = running_execution().await;
    let editor = app.member(&organization, Role::Editor).await;
    let viewer = app.member(&organization, Role::Viewer).await;
    let mut removed = watching(&app, &editor, &execution, "removed").await;
    let mut staying = watching(&app, &viewer, &execution, "staying").await;

    remove(&app, &owner, &organization, &editor.user_id)
        .await
        .data();
    removed.expect_close(4403).await;

    // The execution goes on: cancelling it reaches the member who stayed.
    let response = cancel(&app, &owner, &execution).await;
    assert_eq!(
        response.data()["cancelExecution"]["id"].as_str(),
        Some(execution.as_str())
    );
    assert_streams_to_cancellation(&mut staying, "staying").await;
}

#[tokio::test]
async fn lowering_an_editor_to_viewer_closes_their_socket_and_on_a_new_one_they_stream_on_as_viewer()
 {
    let (app, owner, organization, execution) = running_execution().await;
    let editor = app.member(&organization, Role::Editor).await;
    let mut lowered = watching(&app, &editor, &execution, "lowered").await;
    let mut owners = watching(&app, &owner, &execution, "owner").await;

    let response = app
        .graphql_as(
            &owner.access_token,
            UPDATE_MEMBER_ROLE,
            json!({ "organizationId": organization, "userId": editor.user_id, "role": "VIEWER" }),
        )
        .await;
    assert_eq!(response.data()["updateMemberRole"]["role"], "VIEWER");
    lowered.expect_close(4403).await;

    // A VIEWER may still watch: subscribing again, from the last seq seen,
    // streams on.
    let mut again = WsClient::connect_as(&app, Some(&editor.access_token)).await;
    again.subscribe_events("again", &execution, 3).await;
    cancel(&app, &owner, &execution).await.data();
    assert_streams_to_cancellation(&mut again, "again").await;
    // The owner's subscription to the same execution is untouched.
    assert_streams_to_cancellation(&mut owners, "owner").await;
}

#[tokio::test]
async fn a_member_who_leaves_has_their_socket_closed_with_4403() {
    let (app, owner, organization, execution) = running_execution().await;
    let editor = app.member(&organization, Role::Editor).await;
    let mut leaving = watching(&app, &editor, &execution, "leaving").await;
    let mut owners = watching(&app, &owner, &execution, "owner").await;

    let response = app
        .graphql_as(
            &editor.access_token,
            LEAVE_ORGANIZATION,
            json!({ "organizationId": organization }),
        )
        .await;
    assert_eq!(response.data()["leaveOrganization"], true);
    leaving.expect_close(4403).await;

    cancel(&app, &owner, &execution).await.data();
    assert_streams_to_cancellation(&mut owners, "owner").await;
}

#[tokio::test]
async fn a_removed_member_subscribing_again_gets_not_found() {
    let (app, owner, organization, execution) = running_execution().await;
    let editor = app.member(&organization, Role::Editor).await;
    let mut socket = watching(&app, &editor, &execution, "before").await;

    remove(&app, &owner, &organization, &editor.user_id)
        .await
        .data();
    socket.expect_close(4403).await;

    let mut fresh = WsClient::connect_as(&app, Some(&editor.access_token)).await;
    fresh.subscribe_events("fresh", &execution, 0).await;
    assert_ended_with(&mut fresh, "fresh", "NOT_FOUND").await;
    assert_answers_ping(&mut fresh).await;
}

#[tokio::test]
async fn a_removed_members_subscriptions_in_other_organizations_stream_on_from_a_new_socket() {
    let (app, owner, acme, acme_execution) = running_execution().await;
    let editor = app.member(&acme, Role::Editor).await;
    let mut socket = watching(&app, &editor, &acme_execution, "acme").await;

    // The editor's own organization, with an execution that stays QUEUED
    // behind the one the only worker is running.
    let beta = app.organization(&editor, "Beta").await;
    let beta_workflow = app.workflow(&editor, &beta, slow_steps()).await;
    let beta_execution = app.run(&editor, &beta_workflow, json!({})).await;
    socket.subscribe_events("beta", &beta_execution, 0).await;
    let queued = socket.events_until_seq("beta", 1).await;
    assert_eq!(queued[0]["kind"], "EXECUTION_QUEUED", "{queued:?}");

    remove(&app, &owner, &acme, &editor.user_id).await.data();
    socket.expect_close(4403).await;

    let mut again = WsClient::connect_as(&app, Some(&editor.access_token)).await;
    again.subscribe_events("beta", &beta_execution, 1).await;
    cancel(&app, &editor, &beta_execution).await.data();
    assert_streams_to_cancellation(&mut again, "beta").await;
}

#[tokio::test]
async fn a_removal_on_one_instance_closes_the_socket_open_on_another() {
    let (app, owner, organization, execution) = running_execution().await;
    let other_instance = TestApp::start(app.settings.clone()).await;
    let editor = app.member(&organization, Role::Editor).await;
    let mut socket = watching(&other_instance, &editor, &execution, "events").await;

    let response = remove(&app, &owner, &organization, &editor.user_id).await;
    assert_eq!(response.data()["removeMember"], true);

    socket.expect_close(4403).await;
    other_instance.stop().await;
}
