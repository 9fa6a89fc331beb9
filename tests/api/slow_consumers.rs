//! A subscriber that stops reading: its queue on the bus stops growing at
//! [`SUBSCRIBER_QUEUE`] signals however much is published, and when it
//! reads again both an execution stream and an organization stream catch
//! up exactly from the log; an organization stream that missed more than
//! `FLOWPILOT_STREAM_REPLAY_LIMIT` events says `StreamResync { reason:
//! LAGGED }` instead and goes on.
//!
//! The subscriptions run through the schema as the WebSocket and SSE
//! handlers run them, and "stops reading" is not polling the response
//! stream: a client that stops reading its socket does the same to the
//! server once the connection's bounded outbox is full, but how much the
//! kernel buffers first is not the test's to choose.

use std::time::{Duration, Instant};

use async_graphql::{Request, Response, Variables};
use flowpilot::auth::service::DeviceInfo;
use flowpilot::events::bus::{BusMessage, BusSignal, SUBSCRIBER_QUEUE, Topic};
use flowpilot::events::log::events_after;
use flowpilot::graphql::AppSchema;
use flowpilot::graphql::context::{RequestContext, Viewer};
use futures::StreamExt;
use futures::stream::BoxStream;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::organization_streams::ORGANIZATION_EVENTS;
use crate::support::ws::EXECUTION_EVENTS;
use crate::support::{Session, TestApp};

/// How long a test waits for an item or a queue to fill.
const WAIT: Duration = Duration::from_secs(30);

/// A delay long enough to stop reading in, then a quick step: a run emits
/// 7 events.
fn delay_then_transform() -> Value {
    json!([
        { "id": "wait", "kind": "DELAY", "config": { "ms": 500 } },
        { "id": "after", "kind": "TRANSFORM", "needs": ["wait"], "config": { "output": 1 } }
    ])
}

/// A subscription of `session` through the schema, as `/graphql/ws` runs it.
async fn subscribe(
    app: &TestApp,
    session: &Session,
    query: &str,
    variables: Value,
) -> BoxStream<'static, Response> {
    let schema: AppSchema = flowpilot::graphql::build_schema(&app.settings);
    let authorization = format!("Bearer {}", session.access_token);
    let viewer = Viewer::from_authorization(&app.state, Some(&authorization)).await;
    let device = DeviceInfo {
        ip: None,
        user_agent: None,
    };
    let context = RequestContext::new(app.state.clone(), viewer, device);
    let request = Request::new(query)
        .variables(Variables::from_json(variables))
        .data(context);
    schema.execute_stream(request).boxed()
}

/// The next item of `stream`, as JSON data of `field`.
async fn next_item(stream: &mut BoxStream<'static, Response>, field: &str) -> Option<Value> {
    let response = tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("an item within the wait")?;
    assert!(response.errors.is_empty(), "{:?}", response.errors);
    let data = response.data.into_json().expect("JSON data");
    Some(data[field].clone())
}

/// Republishes the newest event of `execution` (another execution of the
/// organization) `times` times, as a busy organization's traffic, and
/// returns once all of it has reached this server's subscribers (through
/// Redis that takes a while): a probe subscriber reads up to a last marker.
async fn flood(app: &TestApp, organization: Uuid, execution: Uuid, times: usize) {
    let topic = Topic::Organization(organization);
    let events = events_after(&app.state.db, execution, 0).await.unwrap();
    let newest = events.last().expect("an event to republish").clone();
    let mut probe = app.state.bus.subscribe(topic).await;
    for _ in 0..times {
        let message = BusMessage::ExecutionEvent(Box::new(newest.clone()));
        app.state.bus.publish(topic, message).await;
    }
    let marker = Uuid::now_v7();
    let last = BusMessage::CancelRequested {
        execution_id: marker,
    };
    app.state.bus.publish(topic, last).await;
    let delivered = tokio::time::timeout(WAIT, async {
        loop {
            match probe.recv().await {
                Some(BusSignal::Message(BusMessage::CancelRequested { execution_id }))
                    if execution_id == marker =>
                {
                    return;
                }
                Some(_) => {}
                None => panic!("the bus closed"),
            }
        }
    })
    .await;
    assert!(delivered.is_ok(), "the traffic never arrived");
}

/// Asserts the organization's queue here holds exactly the cap, though
/// three times as much was published.
fn assert_queue_capped(app: &TestApp, organization: Uuid) {
    let queued = app.state.bus.queued(Topic::Organization(organization));
    assert_eq!(queued, SUBSCRIBER_QUEUE);
}

/// An owner's organization with one finished run, whose events are
/// republished as traffic, and a workflow that waits half a second.
async fn busy_organization(app: &TestApp) -> (Session, Uuid, Uuid, String) {
    let owner = app.user().await;
    let organization = app.organization(&owner, "Acme").await;
    let workflow = app
        .workflow(&owner, &organization, delay_then_transform())
        .await;
    let traffic = app.run(&owner, &workflow, json!({})).await;
    app.finished_execution(&owner, &traffic).await;
    (
        owner,
        organization.parse().unwrap(),
        traffic.parse().unwrap(),
        workflow,
    )
}

#[tokio::test]
async fn an_execution_stream_that_stops_reading_is_capped_then_catches_up_exactly_from_the_log() {
    let app = TestApp::spawn().await;
    let (owner, organization, traffic, workflow) = busy_organization(&app).await;
    let id = app.run(&owner, &workflow, json!({})).await;
    let mut stream = subscribe(
        &app,
        &owner,
        EXECUTION_EVENTS,
        json!({ "executionId": id, "afterSeq": 0 }),
    )
    .await;
    let first = next_item(&mut stream, "executionEvents").await.unwrap();
    assert_eq!(first["seq"], 1);

    // The subscriber stops reading while the run finishes and three queues'
    // worth of traffic follows: its own events are pushed out of the queue.
    app.finished_execution(&owner, &id).await;
    flood(&app, organization, traffic, 3 * SUBSCRIBER_QUEUE).await;
    assert_queue_capped(&app, organization);

    let mut seqs = Vec::new();
    while let Some(event) = next_item(&mut stream, "executionEvents").await {
        assert_eq!(event["executionId"], id.as_str(), "{event}");
        seqs.push(event["seq"].as_i64().unwrap());
    }
    assert_eq!(seqs, (2..=7).collect::<Vec<_>>());
}

/// Subscribes `owner` to the organization's stream and reads its INITIAL
/// resync; then a run starts, and the stream's first event is its QUEUED.
async fn dashboard_with_one_run(
    app: &TestApp,
    owner: &Session,
    organization: Uuid,
    workflow: &str,
) -> (BoxStream<'static, Response>, String) {
    let mut stream = subscribe(
        app,
        owner,
        ORGANIZATION_EVENTS,
        json!({ "organizationId": organization }),
    )
    .await;
    let initial = next_item(&mut stream, "organizationExecutionEvents")
        .await
        .unwrap();
    assert_eq!(initial["reason"], "INITIAL", "{initial}");
    let run = app.run(owner, workflow, json!({})).await;
    let first = next_item(&mut stream, "organizationExecutionEvents")
        .await
        .unwrap();
    assert_eq!(first["executionId"], run.as_str(), "{first}");
    assert_eq!(first["seq"], 1);
    (stream, run)
}

/// Starts a run and reads `stream` until it has all 7 of its events, and
/// nothing else, in order.
async fn assert_a_new_run_arrives_whole(
    app: &TestApp,
    owner: &Session,
    workflow: &str,
    stream: &mut BoxStream<'static, Response>,
) {
    let run = app.run(owner, workflow, json!({})).await;
    let mut seqs = Vec::new();
    while seqs.last() != Some(&7) {
        let item = next_item(stream, "organizationExecutionEvents")
            .await
            .unwrap();
        assert_eq!(item["executionId"], run.as_str(), "{item}");
        seqs.push(item["seq"].as_i64().unwrap());
    }
    assert_eq!(seqs, (1..=7).collect::<Vec<_>>());
}

/// Reads `stream` until the bus's queue for `organization` is empty and
/// nothing more arrives; answers what it read.
async fn drain(
    app: &TestApp,
    stream: &mut BoxStream<'static, Response>,
    organization: Uuid,
) -> Vec<Value> {
    let topic = Topic::Organization(organization);
    let mut items = Vec::new();
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(Instant::now() < deadline, "the queue never drained");
        let item = tokio::time::timeout(
            Duration::from_millis(300),
            next_item(stream, "organizationExecutionEvents"),
        )
        .await;
        match item {
            Ok(item) => items.push(item.unwrap()),
            Err(_) if app.state.bus.queued(topic) == 0 => return items,
            Err(_) => {}
        }
    }
}

#[tokio::test]
async fn an_organization_stream_that_stops_reading_is_capped_then_catches_up_exactly_from_the_log()
{
    let app = TestApp::spawn().await;
    let (owner, organization, traffic, workflow) = busy_organization(&app).await;
    let (mut stream, before) = dashboard_with_one_run(&app, &owner, organization, &workflow).await;

    // The subscriber stops reading while the run finishes and three queues'
    // worth of traffic follows: the run's events are pushed out.
    app.finished_execution(&owner, &before).await;
    flood(&app, organization, traffic, 3 * SUBSCRIBER_QUEUE).await;
    assert_queue_capped(&app, organization);

    // It reads on: the run's missed events come from the log, once, in
    // order; the traffic's copies of an old event are nothing new.
    let items = drain(&app, &mut stream, organization).await;
    let seqs: Vec<i64> = items
        .iter()
        .map(|item| {
            assert_eq!(item["__typename"], "ExecutionEvent", "{item}");
            assert_eq!(item["executionId"], before.as_str(), "{item}");
            item["seq"].as_i64().unwrap()
        })
        .collect();
    assert_eq!(seqs, (2..=7).collect::<Vec<_>>());

    // Caught up, the stream goes on: a new run arrives whole.
    assert_a_new_run_arrives_whole(&app, &owner, &workflow, &mut stream).await;
}

#[tokio::test]
async fn an_organization_stream_that_missed_more_than_it_replays_is_resynced_and_goes_on() {
    let app = TestApp::spawn_with(|settings| settings.stream_replay_limit = 3).await;
    let (owner, organization, traffic, workflow) = busy_organization(&app).await;
    let (mut stream, before) = dashboard_with_one_run(&app, &owner, organization, &workflow).await;

    app.finished_execution(&owner, &before).await;
    flood(&app, organization, traffic, 3 * SUBSCRIBER_QUEUE).await;
    assert_queue_capped(&app, organization);

    let items = drain(&app, &mut stream, organization).await;
    let resync = items.first().expect("a resync");
    assert_eq!(
        (resync["__typename"].as_str(), resync["reason"].as_str()),
        (Some("StreamResync"), Some("LAGGED")),
        "{resync}"
    );
    assert!(resync["cursor"].is_string(), "{resync}");
    // What was still queued is older than the resync: nothing follows it.
    assert_eq!(items.len(), 1, "{items:?}");

    assert_a_new_run_arrives_whole(&app, &owner, &workflow, &mut stream).await;
}
