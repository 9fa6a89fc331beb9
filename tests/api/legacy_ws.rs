//! `/graphql/ws` speaking the legacy subscriptions-transport-ws protocol
//! (subprotocol `graphql-ws`) for older Apollo clients: `connection_init`,
//! `start`, `stop` and `connection_terminate` from the client; `data`,
//! `error`, `complete`, `connection_error` and `ka` keep-alives from the
//! server, with the same authorization rules and close codes as
//! graphql-transport-ws. Every read skips `ka` frames.

use entity::role::Role;
use serde_json::json;

use crate::members::REMOVE_MEMBER;
use crate::subscriptions::{idle_app, seqs};
use crate::support::TestApp;
use crate::support::ws::{Frame, WsClient};

const CANCEL: &str =
    "mutation($input: CancelExecutionInput!) { cancelExecution(input: $input) { id status } }";

/// Asserts the next message (keep-alives aside) is a `data` of operation
/// `id` carrying the event with `seq`.
async fn assert_data_with_seq(client: &mut WsClient, id: &str, seq: i64) {
    let message = client.next_legacy().await;
    assert_eq!(
        (message["type"].as_str(), message["id"].as_str()),
        (Some("data"), Some(id)),
        "{message}"
    );
    assert_eq!(
        message["payload"]["data"]["executionEvents"]["seq"], seq,
        "{message}"
    );
}

#[tokio::test]
async fn the_handshake_selects_graphql_ws_when_offered_alone_and_connection_init_is_acknowledged() {
    let app = TestApp::spawn().await;
    let session = app.user().await;
    let (mut client, selected) = WsClient::connect_offering(&app, "graphql-ws").await;
    assert_eq!(selected.as_deref(), Some("graphql-ws"));

    client
        .send(json!({
            "type": "connection_init",
            "payload": { "authorization": format!("Bearer {}", session.access_token) }
        }))
        .await;
    let message = client.next_legacy().await;
    assert_eq!(message["type"], "connection_ack", "{message}");
}

#[tokio::test]
async fn a_client_offering_both_protocols_gets_graphql_transport_ws() {
    let app = TestApp::spawn().await;
    let (_client, selected) =
        WsClient::connect_offering(&app, "graphql-ws, graphql-transport-ws").await;
    assert_eq!(selected.as_deref(), Some("graphql-transport-ws"));
}

#[tokio::test]
async fn starting_execution_events_streams_every_event_as_data_in_order_then_complete() {
    let app = TestApp::spawn().await;
    let owner = app.user().await;
    let organization = app.organization(&owner, "Acme").await;
    let workflow = app
        .workflow(
            &owner,
            &organization,
            json!([
                { "id": "a", "kind": "DELAY", "config": { "ms": 50 } },
                { "id": "b", "kind": "TRANSFORM", "needs": ["a"], "config": { "output": "{{ input.n }}" } }
            ]),
        )
        .await;
    let id = app.run(&owner, &workflow, json!({ "n": 5 })).await;
    let mut client = WsClient::connect_legacy_as(&app, Some(&owner.access_token)).await;
    client.start_events("run", &id, 0).await;

    // Read message by message so the final `complete` is checked exactly.
    let mut events = Vec::new();
    let last = loop {
        let message = client.next_legacy().await;
        assert_eq!(message["id"], "run", "{message}");
        if message["type"] != "data" {
            break message;
        }
        assert!(
            message["payload"].get("errors").is_none(),
            "error in stream: {message}"
        );
        events.push(message["payload"]["data"]["executionEvents"].clone());
    };
    assert_eq!(last, json!({ "type": "complete", "id": "run" }));

    assert_eq!(seqs(&events), (1..=7).collect::<Vec<_>>());
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "EXECUTION_QUEUED",
            "EXECUTION_STARTED",
            "STEP_STARTED",
            "STEP_SUCCEEDED",
            "STEP_STARTED",
            "STEP_SUCCEEDED",
            "EXECUTION_SUCCEEDED"
        ]
    );
    assert_eq!(events[5]["stepOutput"], 5);
    assert_eq!(
        events.last().unwrap()["execution"],
        json!({ "id": id, "status": "SUCCEEDED", "output": 5, "error": null, "lastEventSeq": 7 })
    );
    assert!(events.iter().all(|e| e["executionId"] == id.as_str()));
}

#[tokio::test]
async fn stop_ends_an_operation_so_it_gets_no_more_data_and_its_id_can_be_reused() {
    let (app, owner, _, workflow) = idle_app().await;
    let id = app.run(&owner, &workflow, json!({})).await;
    let mut client = WsClient::connect_legacy_as(&app, Some(&owner.access_token)).await;
    client.start_events("op", &id, 0).await;
    assert_data_with_seq(&mut client, "op", 1).await;
    client.send(json!({ "type": "stop", "id": "op" })).await;

    // A second operation on the same execution sees what happens next.
    client.start_events("watch", &id, 0).await;
    let first = client.next_legacy().await;
    assert_ne!(first["id"], "op", "a stopped operation spoke: {first}");
    assert_eq!(
        (first["type"].as_str(), first["id"].as_str()),
        (Some("data"), Some("watch")),
        "{first}"
    );
    assert_eq!(first["payload"]["data"]["executionEvents"]["seq"], 1);

    let response = app
        .graphql_as(
            &owner.access_token,
            CANCEL,
            json!({ "input": { "executionId": id } }),
        )
        .await;
    assert_eq!(response.data()["cancelExecution"]["status"], "CANCELLED");

    let mut watched = Vec::new();
    loop {
        let message = client.next_legacy().await;
        assert_ne!(
            message["id"], "op",
            "a stopped operation got a message: {message}"
        );
        match message["type"].as_str() {
            Some("data") => watched.push(message["payload"]["data"]["executionEvents"].clone()),
            Some("complete") => break,
            other => panic!("unexpected {other:?}: {message}"),
        }
    }
    let last = watched.last().expect("the cancellation was streamed");
    assert_eq!(last["kind"], "EXECUTION_CANCELLED", "{watched:?}");
    let last_seq = last["seq"].as_i64().unwrap();
    assert_eq!(seqs(&watched), (2..=last_seq).collect::<Vec<_>>());

    // The id is free again: a new operation under it replays the whole run.
    client.start_events("op", &id, 0).await;
    let replayed = client.legacy_events_until_complete("op").await;
    assert_eq!(seqs(&replayed), (1..=last_seq).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_query_sent_with_start_gets_one_data_then_complete() {
    let app = TestApp::spawn().await;
    let session = app.user().await;
    let mut client = WsClient::connect_legacy_as(&app, Some(&session.access_token)).await;
    client
        .send(json!({ "type": "start", "id": "q", "payload": { "query": "{ viewer { id } }" } }))
        .await;
    let message = client.next_legacy().await;
    assert_eq!(
        (message["type"].as_str(), message["id"].as_str()),
        (Some("data"), Some("q")),
        "{message}"
    );
    assert!(message["payload"].get("errors").is_none(), "{message}");
    assert_eq!(
        message["payload"]["data"]["viewer"]["id"],
        session.user_id.as_str()
    );
    assert_eq!(
        client.next_legacy().await,
        json!({ "type": "complete", "id": "q" })
    );
}

#[tokio::test]
async fn an_invalid_query_gets_an_error_message_with_its_id() {
    let app = TestApp::spawn().await;
    let session = app.user().await;
    let mut client = WsClient::connect_legacy_as(&app, Some(&session.access_token)).await;
    client
        .send(json!({
            "type": "start",
            "id": "bad",
            "payload": { "query": "subscription { executionEvents { nope } }" }
        }))
        .await;
    let message = client.next_legacy().await;
    assert_eq!(message["type"], "error", "{message}");
    assert_eq!(message["id"], "bad");
    assert!(message["payload"].is_array(), "{message}");
    assert_eq!(
        message["payload"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{message}"
    );

    // The connection stays usable, and the id was freed.
    client
        .send(json!({ "type": "start", "id": "bad", "payload": { "query": "{ viewer { id } }" } }))
        .await;
    let message = client.next_legacy().await;
    assert_eq!(
        (message["type"].as_str(), message["id"].as_str()),
        (Some("data"), Some("bad")),
        "{message}"
    );
}

#[tokio::test]
async fn refused_credentials_get_connection_error_then_close_4403() {
    let app = TestApp::spawn().await;
    let mut client = WsClient::connect_legacy(&app).await;
    client
        .send(json!({
            "type": "connection_init",
            "payload": { "authorization": "Bearer not-a-token" }
        }))
        .await;
    match client.next_frame().await {
        Frame::Json(message) => assert_eq!(
            message,
            json!({ "type": "connection_error", "payload": { "message": "invalid access token" } })
        ),
        Frame::Closed(code, reason) => {
            panic!("closed with {code:?} {reason:?} before connection_error")
        }
    }
    client.expect_close(4403).await;
}

#[tokio::test]
async fn start_before_the_ack_closes_with_4401() {
    let app = TestApp::spawn().await;
    let mut client = WsClient::connect_legacy(&app).await;
    client
        .send(json!({ "type": "start", "id": "1", "payload": { "query": "{ __typename }" } }))
        .await;
    client.expect_close(4401).await;
}

#[tokio::test]
async fn starting_with_an_id_in_use_closes_with_4409() {
    let (app, owner, _, workflow) = idle_app().await;
    let id = app.run(&owner, &workflow, json!({})).await;
    let mut client = WsClient::connect_legacy_as(&app, Some(&owner.access_token)).await;
    client.start_events("same", &id, 0).await;
    assert_data_with_seq(&mut client, "same", 1).await;
    client.start_events("same", &id, 0).await;
    let reason = client.expect_close(4409).await;
    assert_eq!(reason, "Subscriber for same already exists");
}

#[tokio::test]
async fn a_message_that_is_not_json_or_not_of_the_legacy_protocol_closes_with_4400() {
    let app = TestApp::spawn().await;
    for text in [
        "{ not json",
        r#"{"type":"shout"}"#,
        // graphql-transport-ws names, not the legacy protocol's.
        r#"{"type":"subscribe","id":"1","payload":{"query":"{ __typename }"}}"#,
        r#"{"type":"ping"}"#,
    ] {
        let mut client = WsClient::connect_legacy(&app).await;
        client.send_text(text).await;
        client.expect_close(4400).await;
    }
}

#[tokio::test]
async fn a_second_connection_init_closes_with_4429() {
    let app = TestApp::spawn().await;
    let session = app.user().await;
    let mut client = WsClient::connect_legacy_as(&app, Some(&session.access_token)).await;
    client
        .send(json!({
            "type": "connection_init",
            "payload": { "authorization": format!("Bearer {}", session.access_token) }
        }))
        .await;
    client.expect_close(4429).await;
}

#[tokio::test]
async fn connection_terminate_closes_with_1000() {
    let app = TestApp::spawn().await;
    let session = app.user().await;
    let mut client = WsClient::connect_legacy_as(&app, Some(&session.access_token)).await;
    client.send(json!({ "type": "connection_terminate" })).await;
    client.expect_close(1000).await;
}

#[tokio::test]
async fn logging_out_closes_the_sessions_open_legacy_socket_with_4403() {
    let (app, owner, _, workflow) = idle_app().await;
    let id = app.run(&owner, &workflow, json!({})).await;
    let mut client = WsClient::connect_legacy_as(&app, Some(&owner.access_token)).await;
    client.start_events("open", &id, 0).await;
    assert_data_with_seq(&mut client, "open", 1).await;

    let response = app
        .graphql_as(&owner.access_token, "mutation { logout }", json!({}))
        .await;
    assert_eq!(response.data()["logout"], true);
    client.expect_close(4403).await;
}

#[tokio::test]
async fn removing_a_member_closes_their_open_legacy_socket_with_4403() {
    let (app, owner, organization, workflow) = idle_app().await;
    let viewer = app.member(&organization, Role::Viewer).await;
    let id = app.run(&owner, &workflow, json!({})).await;
    let mut client = WsClient::connect_legacy_as(&app, Some(&viewer.access_token)).await;
    client.start_events("open", &id, 0).await;
    assert_data_with_seq(&mut client, "open", 1).await;

    let response = app
        .graphql_as(
            &owner.access_token,
            REMOVE_MEMBER,
            json!({ "organizationId": organization, "userId": viewer.user_id }),
        )
        .await;
    assert_eq!(response.data()["removeMember"], true);
    client.expect_close(4403).await;
}

#[tokio::test]
async fn a_keep_alive_follows_the_ack() {
    let app = TestApp::spawn().await;
    let session = app.user().await;
    let mut client = WsClient::connect_legacy(&app).await;
    client
        .send(json!({
            "type": "connection_init",
            "payload": { "authorization": format!("Bearer {}", session.access_token) }
        }))
        .await;
    assert_eq!(
        client.next_json().await,
        json!({ "type": "connection_ack" })
    );
    // The keep-alive interval's first tick fires at once; `next_json` waits
    // up to 20 s and does not skip `ka`.
    assert_eq!(client.next_json().await, json!({ "type": "ka" }));
}
