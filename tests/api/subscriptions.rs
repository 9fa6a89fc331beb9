//! `/graphql/ws`: the graphql-transport-ws protocol frame by frame, and
//! `executionEvents` replaying then streaming without gaps or duplicates.

use serde_json::{Value, json};

use crate::support::ws::WsClient;
use crate::support::{Session, TestApp};

/// A server whose executions stay queued (no workers), with a workflow.
/// A server without workers, an owner, their organization "Acme" and a
/// one-step workflow there: runs stay QUEUED.
pub(crate) async fn idle_app() -> (TestApp, Session, String, String) {
    let app = TestApp::spawn_with(|settings| settings.workers = 0).await;
    let owner = app.user().await;
    let organization = app.organization(&owner, "Acme").await;
    let workflow = app
        .workflow(
            &owner,
            &organization,
            json!([{ "id": "a", "kind": "TRANSFORM", "config": { "output": 1 } }]),
        )
        .await;
    (app, owner, organization, workflow)
}

pub(crate) fn seqs(events: &[Value]) -> Vec<i64> {
    events.iter().map(|e| e["seq"].as_i64().unwrap()).collect()
}

#[tokio::test]
async fn connection_init_is_acknowledged_and_ping_gets_pong() {
    let app = TestApp::spawn().await;
    let session = app.user().await;
    let mut client = WsClient::connect_as(&app, Some(&session.access_token)).await;
    client.send(json!({ "type": "ping" })).await;
    assert_eq!(client.next_json().await["type"], "pong");
    client.send(json!({ "type": "pong" })).await;
    client.send(json!({ "type": "ping" })).await;
    assert_eq!(
        client.next_json().await["type"],
        "pong",
        "an unsolicited pong is ignored"
    );
}

#[tokio::test]
async fn no_connection_init_in_time_closes_with_4408() {
    let app = TestApp::spawn_with(|settings| settings.ws_init_timeout_secs = 1).await;
    let mut client = WsClient::connect(&app).await;
    client.expect_close(4408).await;
}

#[tokio::test]
async fn a_second_connection_init_closes_with_4429() {
    let app = TestApp::spawn().await;
    let mut client = WsClient::connect_as(&app, None).await;
    client.send(json!({ "type": "connection_init" })).await;
    client.expect_close(4429).await;
}

#[tokio::test]
async fn subscribing_before_the_ack_closes_with_4401() {
    let (app, owner, _, workflow) = idle_app().await;
    let id = app.run(&owner, &workflow, json!({})).await;
    let mut client = WsClient::connect(&app).await;
    client.subscribe_events("1", &id, 0).await;
    client.expect_close(4401).await;
}

#[tokio::test]
async fn a_refused_token_closes_with_4403() {
    let app = TestApp::spawn().await;
    let mut client = WsClient::connect(&app).await;
    client.send(json!({ "type": "connection_init", "payload": { "authorization": "Bearer not-a-token" } })).await;
    client.expect_close(4403).await;
}

#[tokio::test]
async fn a_duplicate_operation_id_closes_with_4409() {
    let (app, owner, _, workflow) = idle_app().await;
    let id = app.run(&owner, &workflow, json!({})).await;
    let mut client = WsClient::connect_as(&app, Some(&owner.access_token)).await;
    client.subscribe_events("same", &id, 0).await;
    assert_eq!(
        client.next_json().await["payload"]["data"]["executionEvents"]["seq"],
        1
    );
    client.subscribe_events("same", &id, 0).await;
    let reason = client.expect_close(4409).await;
    assert_eq!(reason, "Subscriber for same already exists");
}

#[tokio::test]
async fn unparseable_or_unknown_messages_close_with_4400() {
    let app = TestApp::spawn().await;
    for text in [
        "{ not json",
        r#"{"type":"shout"}"#,
        r#"{"type":"subscribe","id":"1"}"#,
    ] {
        let mut client = WsClient::connect(&app).await;
        client.send_text(text).await;
        client.expect_close(4400).await;
    }
}

#[tokio::test]
async fn a_client_without_the_subprotocol_is_closed_with_4406() {
    let app = TestApp::spawn().await;
    let mut client = WsClient::connect_with_protocol(&app, None).await;
    client.expect_close(4406).await;
}

#[tokio::test]
async fn completing_an_operation_frees_its_id() {
    let (app, owner, _, workflow) = idle_app().await;
    let id = app.run(&owner, &workflow, json!({})).await;
    let mut client = WsClient::connect_as(&app, Some(&owner.access_token)).await;
    client.subscribe_events("op", &id, 0).await;
    assert_eq!(client.next_json().await["type"], "next");
    client.send(json!({ "type": "complete", "id": "op" })).await;
    client.subscribe_events("op", &id, 0).await;
    let message = client.next_json().await;
    assert_eq!(
        (message["type"].as_str(), message["id"].as_str()),
        (Some("next"), Some("op")),
        "{message}"
    );
    assert_eq!(message["payload"]["data"]["executionEvents"]["seq"], 1);
}

#[tokio::test]
async fn an_invalid_subscription_gets_an_error_message() {
    let app = TestApp::spawn().await;
    let session = app.user().await;
    let mut client = WsClient::connect_as(&app, Some(&session.access_token)).await;
    client
        .send(json!({ "type": "subscribe", "id": "bad", "payload": { "query": "subscription { executionEvents { nope } }" } }))
        .await;
    let message = client.next_json().await;
    assert_eq!(message["type"], "error", "{message}");
    assert_eq!(message["id"], "bad");
    assert_eq!(
        message["payload"][0]["extensions"]["code"],
        "BAD_USER_INPUT"
    );
}

#[tokio::test]
async fn an_outsider_subscribing_gets_not_found_and_the_operation_completes() {
    let (app, owner, _, workflow) = idle_app().await;
    let id = app.run(&owner, &workflow, json!({})).await;
    let outsider = app.user().await;
    let mut client = WsClient::connect_as(&app, Some(&outsider.access_token)).await;
    client.subscribe_events("x", &id, 0).await;
    let message = client.next_json().await;
    assert_eq!(message["type"], "next", "{message}");
    assert_eq!(
        message["payload"]["errors"][0]["extensions"]["code"],
        "NOT_FOUND"
    );
    assert_eq!(
        client.next_json().await,
        json!({ "type": "complete", "id": "x" })
    );
}

#[tokio::test]
async fn an_anonymous_connection_cannot_subscribe_to_executions() {
    let (app, owner, _, workflow) = idle_app().await;
    let id = app.run(&owner, &workflow, json!({})).await;
    let mut client = WsClient::connect_as(&app, None).await;
    client.subscribe_events("x", &id, 0).await;
    let message = client.next_json().await;
    assert_eq!(
        message["payload"]["errors"][0]["extensions"]["code"], "UNAUTHENTICATED",
        "{message}"
    );
}

#[tokio::test]
async fn a_subscriber_gets_every_event_in_order_then_complete() {
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
    let mut client = WsClient::connect_as(&app, Some(&owner.access_token)).await;
    client.subscribe_events("run", &id, 0).await;
    let events = client.events_until_complete("run").await;

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
    assert_eq!(events[5]["stepId"], "b");
    assert_eq!(events[5]["stepOutput"], 5);
    let last = events.last().unwrap();
    assert_eq!(last["executionStatus"], "SUCCEEDED");
    assert_eq!(
        last["execution"],
        json!({ "id": id, "status": "SUCCEEDED", "output": 5, "error": null, "lastEventSeq": 7 })
    );
    assert!(events.iter().all(|e| e["executionId"] == id.as_str()));
}

#[tokio::test]
async fn a_subscriber_joining_mid_run_with_after_seq_gets_exactly_the_rest() {
    let app = TestApp::spawn().await;
    let owner = app.user().await;
    let organization = app.organization(&owner, "Acme").await;
    let workflow = app
        .workflow(
            &owner,
            &organization,
            json!([
                { "id": "first", "kind": "DELAY", "config": { "ms": 300 } },
                { "id": "second", "kind": "DELAY", "needs": ["first"], "config": { "ms": 300 } },
                { "id": "third", "kind": "TRANSFORM", "needs": ["second"], "config": { "output": "done" } }
            ]),
        )
        .await;
    let id = app.run(&owner, &workflow, json!({})).await;
    let mut early = WsClient::connect_as(&app, Some(&owner.access_token)).await;
    early.subscribe_events("early", &id, 0).await;
    // Wait until `first` has started (queued, started, STEP_STARTED = seq 3).
    let seen = early.events_until_seq("early", 3).await;
    assert_eq!(seen.last().unwrap()["kind"], "STEP_STARTED");

    // The late subscriber asks from seq 1: seqs 2 and 3 come from the log,
    // the rest live, handed over without a gap or a duplicate.
    let mut late = WsClient::connect_as(&app, Some(&owner.access_token)).await;
    late.subscribe_events("late", &id, 1).await;
    let from_late = late.events_until_complete("late").await;
    let rest_early = early.events_until_complete("early").await;

    assert_eq!(seqs(&from_late), (2..=9).collect::<Vec<_>>());
    assert_eq!(
        from_late[..2],
        seen[1..3],
        "replayed events equal the live ones"
    );
    assert_eq!(
        from_late[2..],
        rest_early[..],
        "both subscribers see the same live events"
    );
    assert_eq!(from_late.last().unwrap()["kind"], "EXECUTION_SUCCEEDED");
}

#[tokio::test]
async fn subscribing_after_the_end_replays_and_completes() {
    let app = TestApp::spawn().await;
    let owner = app.user().await;
    let organization = app.organization(&owner, "Acme").await;
    let workflow = app
        .workflow(
            &owner,
            &organization,
            json!([{ "id": "a", "kind": "TRANSFORM", "config": { "output": 1 } }]),
        )
        .await;
    let id = app.run(&owner, &workflow, json!({})).await;
    app.finished_execution(&owner, &id).await;

    let mut client = WsClient::connect_as(&app, Some(&owner.access_token)).await;
    client.subscribe_events("all", &id, 2).await;
    assert_eq!(seqs(&client.events_until_complete("all").await), [3, 4, 5]);
    client.subscribe_events("none", &id, 5).await;
    assert!(client.events_until_complete("none").await.is_empty());
}

#[tokio::test]
async fn graphiql_subscribes_through_the_websocket_endpoint() {
    let app = TestApp::spawn().await;
    let html = app
        .http()
        .get(app.url("/graphql"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let script = html
        .split("src=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .find(|path| path.starts_with("/graphiql/flowpilot-graphiql.js"))
        .expect("the page loads its own script");
    let script = app.get(script).await.text().await.unwrap();
    assert!(
        script.contains("/graphql/ws"),
        "GraphiQL has no subscription endpoint"
    );
}

#[tokio::test]
async fn an_after_seq_beyond_the_last_event_is_bad_user_input() {
    let (app, owner, _, workflow) = idle_app().await;
    let id = app.run(&owner, &workflow, json!({})).await;
    let mut client = WsClient::connect_as(&app, Some(&owner.access_token)).await;
    client.subscribe_events("ahead", &id, 5).await;
    let message = client.next_json().await;
    assert_eq!(
        message["payload"]["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{message}"
    );
    assert_eq!(
        message["payload"]["errors"][0]["extensions"]["field"],
        "afterSeq"
    );
}

#[tokio::test]
async fn open_sockets_close_with_1001_when_the_server_shuts_down() {
    let (app, owner, _, workflow) = idle_app().await;
    let id = app.run(&owner, &workflow, json!({})).await;
    let mut client = WsClient::connect_as(&app, Some(&owner.access_token)).await;
    client.subscribe_events("open", &id, 0).await;
    assert_eq!(client.next_json().await["type"], "next");
    app.stop().await;
    client.expect_close(1001).await;
}

#[tokio::test]
async fn events_the_bus_never_delivered_reach_the_stream_through_the_recheck() {
    let app = TestApp::spawn_with(|settings| {
        settings.workers = 0;
        settings.stream_recheck_ms = 200;
    })
    .await;
    let owner = app.user().await;
    let organization = app.organization(&owner, "Acme").await;
    let workflow = app
        .workflow(
            &owner,
            &organization,
            json!([{ "id": "a", "kind": "TRANSFORM", "config": { "output": 1 } }]),
        )
        .await;
    let id = app.run(&owner, &workflow, json!({})).await;
    let mut client = WsClient::connect_as(&app, Some(&owner.access_token)).await;
    client.subscribe_events("quiet", &id, 0).await;
    assert_eq!(client.events_until_seq("quiet", 1).await.len(), 1);

    // Its worker's events are committed but never published to this server.
    let worker = app.isolated_worker(|_| {}).await;

    let events = client.events_until_complete("quiet").await;
    assert_eq!(seqs(&events), (2..=5).collect::<Vec<_>>());
    assert_eq!(events.last().unwrap()["kind"], "EXECUTION_SUCCEEDED");
    worker.stop().await;
}

#[tokio::test]
async fn events_the_bus_delivers_twice_or_out_of_order_reach_the_subscriber_once_and_in_order() {
    let app = TestApp::spawn_with(|settings| {
        settings.workers = 0;
        settings.stream_recheck_ms = 3_600_000;
    })
    .await;
    let owner = app.user().await;
    let organization = app.organization(&owner, "Acme").await;
    let workflow = app
        .workflow(
            &owner,
            &organization,
            json!([{ "id": "a", "kind": "TRANSFORM", "config": { "output": 1 } }]),
        )
        .await;
    let id = app.run(&owner, &workflow, json!({})).await;
    let mut client = WsClient::connect_as(&app, Some(&owner.access_token)).await;
    client.subscribe_events("mixed", &id, 0).await;
    assert_eq!(client.events_until_seq("mixed", 1).await.len(), 1);
    // The run happens where this server's bus cannot hear it; then its
    // events arrive duplicated and out of order.
    let worker = app.isolated_worker(|_| {}).await;
    app.await_finished(&id).await;
    worker.stop().await;
    app.republish(&id, &[2, 2, 4, 3, 5]).await;

    let events = client.events_until_complete("mixed").await;
    assert_eq!(seqs(&events), [2, 3, 4, 5]);
}
