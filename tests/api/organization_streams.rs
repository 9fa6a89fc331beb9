//! `organizationExecutionEvents`, the dashboard stream: every execution
//! event of an organization published from the moment of subscribing (no
//! replay), per execution in seq order without duplicates, narrowed by a
//! filter, coalesced per execution with `throttleMs`, and a `StreamResync`
//! when the server's Redis subscriber connection comes back. VIEWER and up
//! and the organization's API keys may watch it; it never completes on its
//! own, and its socket closes with 4403 when the member's access ends. And
//! `executionUpdated`: the execution now, then after each change, then
//! `complete` once it has finished.
//!
//! Neither the stream nor graphql-transport-ws acknowledges a
//! subscription, so a test gives a new one [`SETTLE`] to go live before it
//! runs anything, and reads (up to [`STREAM_WAIT`]) until it has what it
//! expects; a ping's pong then shows nothing else was sent.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use entity::role::Role;
use serde_json::{Value, json};

use crate::api_keys::api_key;
use crate::members::REMOVE_MEMBER;
use crate::scale::{PrivateRedis, await_redis_health};
use crate::support::require_multi_instance_backends;
use crate::support::ws::WsClient;
use crate::support::{Session, TestApp};

pub(crate) const ORGANIZATION_EVENTS: &str = "subscription(
  $organizationId: ID!, $filter: OrganizationStreamFilter, $throttleMs: Int, $after: String
) {
  organizationExecutionEvents(organizationId: $organizationId, filter: $filter, throttleMs: $throttleMs, after: $after) {
    __typename
    ... on ExecutionEvent { seq kind executionId executionStatus stepId cursor }
    ... on StreamResync { reason occurredAt cursor }
  }
}";
const EXECUTION_UPDATED: &str = "subscription($executionId: ID!) {
  executionUpdated(executionId: $executionId) {
    id status lastEventSeq output error startedAt finishedAt workflow { id }
  }
}";
const CANCEL: &str =
    "mutation($input: CancelExecutionInput!) { cancelExecution(input: $input) { id status } }";

/// How long a new subscription is given to go live.
pub(crate) const SETTLE: Duration = Duration::from_millis(300);
/// How long a test reads a stream for what it expects.
const STREAM_WAIT: Duration = Duration::from_secs(30);

const TERMINAL_KINDS: [&str; 4] = [
    "EXECUTION_SUCCEEDED",
    "EXECUTION_FAILED",
    "EXECUTION_CANCELLED",
    "EXECUTION_TIMED_OUT",
];
/// The events of a run of [`two_steps`], in order.
const TWO_STEP_KINDS: [&str; 7] = [
    "EXECUTION_QUEUED",
    "EXECUTION_STARTED",
    "STEP_STARTED",
    "STEP_SUCCEEDED",
    "STEP_STARTED",
    "STEP_SUCCEEDED",
    "EXECUTION_SUCCEEDED",
];

/// One TRANSFORM step: a run emits 5 events.
pub(crate) fn one_step() -> Value {
    json!([{ "id": "a", "kind": "TRANSFORM", "config": { "output": 1 } }])
}

/// Two quick TRANSFORM steps, one after the other: a run emits 7 events.
pub(crate) fn two_steps() -> Value {
    json!([
        { "id": "a", "kind": "TRANSFORM", "config": { "output": 1 } },
        { "id": "b", "kind": "TRANSFORM", "needs": ["a"], "config": { "output": "done" } }
    ])
}

/// Three quick TRANSFORM steps, one after the other: a run emits 9 events
/// within a few milliseconds.
fn three_steps() -> Value {
    json!([
        { "id": "a", "kind": "TRANSFORM", "config": { "output": 1 } },
        { "id": "b", "kind": "TRANSFORM", "needs": ["a"], "config": { "output": 2 } },
        { "id": "c", "kind": "TRANSFORM", "needs": ["b"], "config": { "output": 3 } }
    ])
}

/// A server with workers, an owner and their organization "Acme".
async fn acme() -> (TestApp, Session, String) {
    let app = TestApp::spawn().await;
    let owner = app.user().await;
    let organization = app.organization(&owner, "Acme").await;
    (app, owner, organization)
}

/// The variables of [`ORGANIZATION_EVENTS`]; `Value::Null` leaves an
/// argument out.
pub(crate) fn stream_variables(organization: &str, filter: Value, throttle_ms: Value) -> Value {
    json!({ "organizationId": organization, "filter": filter, "throttleMs": throttle_ms })
}

/// Subscribes `client` to the stream of `organization` as operation `op`
/// and reads its first item, the INITIAL resync that shows it is live;
/// answers its cursor.
pub(crate) async fn watch(
    client: &mut WsClient,
    op: &str,
    organization: &str,
    filter: Value,
    throttle_ms: Value,
) -> String {
    client
        .subscribe(
            op,
            ORGANIZATION_EVENTS,
            stream_variables(organization, filter, throttle_ms),
        )
        .await;
    initial_cursor(client, op).await
}

/// Reads the first item of stream `op`, which must be its INITIAL resync,
/// and answers its cursor.
pub(crate) async fn initial_cursor(client: &mut WsClient, op: &str) -> String {
    let message = client.next_json().await;
    assert_eq!(
        (message["id"].as_str(), message["type"].as_str()),
        (Some(op), Some("next")),
        "{message}"
    );
    let item = &message["payload"]["data"]["organizationExecutionEvents"];
    assert_eq!(
        (item["__typename"].as_str(), item["reason"].as_str()),
        (Some("StreamResync"), Some("INITIAL")),
        "{item}"
    );
    item["cursor"].as_str().expect("a cursor").to_owned()
}

/// Stream items received, by operation id.
pub(crate) type Items = HashMap<String, Vec<Value>>;

/// Reads `next` items of the socket's organization streams until `enough`
/// holds; anything else (an error, a `complete`) fails the test, and so
/// does waiting longer than [`STREAM_WAIT`].
pub(crate) async fn read_until(
    client: &mut WsClient,
    mut enough: impl FnMut(&Items) -> bool,
) -> Items {
    let mut items = Items::new();
    let reading = async {
        while !enough(&items) {
            let message = client.next_json().await;
            assert_eq!(message["type"], "next", "the stream stopped: {message}");
            assert!(
                message["payload"].get("errors").is_none(),
                "error in stream: {message}"
            );
            let op = message["id"].as_str().expect("operation id").to_owned();
            items
                .entry(op)
                .or_default()
                .push(message["payload"]["data"]["organizationExecutionEvents"].clone());
        }
    };
    let read = tokio::time::timeout(STREAM_WAIT, reading).await;
    assert!(
        read.is_ok(),
        "not everything expected arrived within {STREAM_WAIT:?}; got {items:?}"
    );
    items
}

/// The items of operation `op`.
pub(crate) fn items_of<'a>(items: &'a Items, op: &str) -> &'a [Value] {
    items.get(op).map(Vec::as_slice).unwrap_or_default()
}

/// `items` without their cursors, which differ from run to run.
fn without_cursors(items: &[Value]) -> Vec<Value> {
    items
        .iter()
        .map(|item| {
            let mut item = item.clone();
            item.as_object_mut().map(|fields| fields.remove("cursor"));
            item
        })
        .collect()
}

/// Whether `items` hold the terminal event of `execution`.
pub(crate) fn finished(items: &[Value], execution: &str) -> bool {
    items.iter().any(|item| {
        item["executionId"] == execution
            && TERMINAL_KINDS.contains(&item["kind"].as_str().unwrap_or_default())
    })
}

/// The events of `execution` among `items`, in the order received.
pub(crate) fn of_execution<'a>(items: &'a [Value], execution: &str) -> Vec<&'a Value> {
    items
        .iter()
        .filter(|item| item["executionId"] == execution)
        .collect()
}

pub(crate) fn seqs(events: &[&Value]) -> Vec<i64> {
    events
        .iter()
        .map(|event| event["seq"].as_i64().expect("seq"))
        .collect()
}

pub(crate) fn kinds<'a>(events: &[&'a Value]) -> Vec<&'a str> {
    events
        .iter()
        .map(|event| event["kind"].as_str().expect("kind"))
        .collect()
}

/// Asserts every item is an `ExecutionEvent` (no resync).
pub(crate) fn assert_only_events(items: &[Value]) {
    assert!(
        items
            .iter()
            .all(|item| item["__typename"] == "ExecutionEvent"),
        "{items:?}"
    );
}

/// Asserts `items` are events of `execution` only, seq 1 to `count` in
/// order.
pub(crate) fn assert_one_whole_run(items: &[Value], execution: &str, count: i64) {
    assert_only_events(items);
    assert!(
        items.iter().all(|event| event["executionId"] == execution),
        "an event of another execution: {items:?}"
    );
    assert_eq!(
        seqs(&of_execution(items, execution)),
        (1..=count).collect::<Vec<_>>()
    );
}

/// Asserts the socket has sent nothing more: a ping's pong comes next.
pub(crate) async fn assert_nothing_more(client: &mut WsClient) {
    assert_eq!(
        client.messages_before_pong().await,
        Vec::<Value>::new(),
        "messages after all that was expected"
    );
}

/// The error refusing operation `op`: an `error` message, or a `next`
/// with errors followed by `complete`.
pub(crate) async fn refusal(client: &mut WsClient, op: &str) -> Value {
    let message = client.next_json().await;
    assert_eq!(message["id"], op, "{message}");
    match message["type"].as_str() {
        Some("error") => message["payload"][0].clone(),
        Some("next") => {
            let error = message["payload"]["errors"][0].clone();
            assert!(error.is_object(), "a next without errors: {message}");
            assert_eq!(
                client.next_json().await,
                json!({ "type": "complete", "id": op })
            );
            error
        }
        _ => panic!("expected the operation to be refused: {message}"),
    }
}

/// Polls `/health/cache` until it says Redis is `down` or `reconnecting`.
async fn await_redis_outage(app: &TestApp) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let body: Value = app.get("/health/cache").await.json().await.unwrap();
        if body["redis"] == "down" || body["redis"] == "reconnecting" {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "/health/cache never noticed Redis was gone: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_organization_stream_delivers_every_event_of_its_executions_in_order_and_nothing_of_another_organization()
 {
    let (app, owner, organization) = acme().await;
    let workflow = app.workflow(&owner, &organization, two_steps()).await;
    let stranger = app.user().await;
    let beta = app.organization(&stranger, "Beta").await;
    let beta_workflow = app.workflow(&stranger, &beta, two_steps()).await;
    let mut client = WsClient::connect_as(&app, Some(&owner.access_token)).await;
    watch(&mut client, "org", &organization, Value::Null, Value::Null).await;

    // The other organization's execution runs to its end first: had any of
    // its events leaked, they would come before Acme's.
    let elsewhere = app.run(&stranger, &beta_workflow, json!({})).await;
    app.finished_execution(&stranger, &elsewhere).await;
    let first = app.run(&owner, &workflow, json!({})).await;
    let second = app.run(&owner, &workflow, json!({})).await;
    let items = read_until(&mut client, |items| {
        let org = items_of(items, "org");
        finished(org, &first) && finished(org, &second)
    })
    .await;

    let org = items_of(&items, "org");
    assert_only_events(org);
    for execution in [&first, &second] {
        let events = of_execution(org, execution);
        assert_eq!(
            seqs(&events),
            (1..=7).collect::<Vec<_>>(),
            "execution {execution}: {org:?}"
        );
        assert_eq!(kinds(&events), TWO_STEP_KINDS);
        assert_eq!(events[6]["executionStatus"], "SUCCEEDED");
    }
    assert!(
        of_execution(org, &elsewhere).is_empty(),
        "another organization's events leaked: {org:?}"
    );
    assert_eq!(org.len(), 14, "only the events of Acme's two runs: {org:?}");
    assert_nothing_more(&mut client).await;
    client.close().await;
}

#[tokio::test]
async fn a_workflow_filter_narrows_the_stream_to_that_workflows_executions() {
    let (app, owner, organization) = acme().await;
    let wanted = app.workflow(&owner, &organization, two_steps()).await;
    let other = app.workflow(&owner, &organization, one_step()).await;
    let mut client = WsClient::connect_as(&app, Some(&owner.access_token)).await;
    let filter = json!({ "workflowIds": [wanted.as_str()] });
    watch(&mut client, "wanted", &organization, filter, Value::Null).await;

    // The other workflow's run ends before the wanted one starts.
    let skipped = app.run(&owner, &other, json!({})).await;
    app.finished_execution(&owner, &skipped).await;
    let id = app.run(&owner, &wanted, json!({})).await;
    let items = read_until(&mut client, |items| {
        finished(items_of(items, "wanted"), &id)
    })
    .await;

    assert_one_whole_run(items_of(&items, "wanted"), &id, 7);
    assert_nothing_more(&mut client).await;
}

#[tokio::test]
async fn kind_and_status_filters_pass_only_the_events_they_name() {
    let (app, owner, organization) = acme().await;
    let succeeding = app.workflow(&owner, &organization, two_steps()).await;
    let failing = app
        .workflow(
            &owner,
            &organization,
            json!([{ "id": "boom", "kind": "FAIL", "config": { "message": "down" } }]),
        )
        .await;
    let mut client = WsClient::connect_as(&app, Some(&owner.access_token)).await;
    let by_kind = json!({ "kinds": ["EXECUTION_SUCCEEDED"] });
    watch(&mut client, "kinds", &organization, by_kind, Value::Null).await;
    let by_status = json!({ "statuses": ["SUCCEEDED"] });
    watch(
        &mut client,
        "statuses",
        &organization,
        by_status,
        Value::Null,
    )
    .await;

    // A failing run first: none of its events is a success.
    let failed = app.run(&owner, &failing, json!({})).await;
    assert_eq!(
        app.finished_execution(&owner, &failed).await["status"],
        "FAILED"
    );
    let id = app.run(&owner, &succeeding, json!({})).await;
    let items = read_until(&mut client, |items| {
        finished(items_of(items, "kinds"), &id) && finished(items_of(items, "statuses"), &id)
    })
    .await;

    // Of the succeeding run's 7 events, only the last is a success and
    // leaves the execution SUCCEEDED (after the others it is RUNNING).
    let success = json!({
        "__typename": "ExecutionEvent",
        "seq": 7,
        "kind": "EXECUTION_SUCCEEDED",
        "executionId": id,
        "executionStatus": "SUCCEEDED",
        "stepId": null
    });
    assert_eq!(
        without_cursors(items_of(&items, "kinds")),
        std::slice::from_ref(&success),
        "kinds: [EXECUTION_SUCCEEDED]"
    );
    assert_eq!(
        without_cursors(items_of(&items, "statuses")),
        std::slice::from_ref(&success),
        "statuses: [SUCCEEDED]"
    );
    assert_nothing_more(&mut client).await;
}

#[tokio::test]
async fn a_throttled_stream_coalesces_an_executions_events_and_ends_with_its_latest() {
    let (app, owner, organization) = acme().await;
    let workflow = app.workflow(&owner, &organization, three_steps()).await;
    let mut client = WsClient::connect_as(&app, Some(&owner.access_token)).await;
    // The same stream unthrottled, to compare with.
    watch(&mut client, "all", &organization, Value::Null, Value::Null).await;
    watch(
        &mut client,
        "throttled",
        &organization,
        Value::Null,
        json!(1000),
    )
    .await;

    let id = app.run(&owner, &workflow, json!({})).await;
    let mut all: Vec<Value> = Vec::new();
    let mut throttled: Vec<Value> = Vec::new();
    let mut arrivals: Vec<Instant> = Vec::new();
    let reading = async {
        while !(finished(&all, &id) && finished(&throttled, &id)) {
            let message = client.next_json().await;
            assert_eq!(message["type"], "next", "the stream stopped: {message}");
            assert!(
                message["payload"].get("errors").is_none(),
                "error in stream: {message}"
            );
            let item = message["payload"]["data"]["organizationExecutionEvents"].clone();
            match message["id"].as_str() {
                Some("all") => all.push(item),
                Some("throttled") => {
                    arrivals.push(Instant::now());
                    throttled.push(item);
                }
                _ => panic!("a message of no operation of ours: {message}"),
            }
        }
    };
    let read = tokio::time::timeout(STREAM_WAIT, reading).await;
    assert!(
        read.is_ok(),
        "the run did not end on both streams: all {all:?}, throttled {throttled:?}"
    );

    // Unthrottled: the run's 9 events.
    assert_eq!(
        seqs(&of_execution(&all, &id)),
        (1..=9).collect::<Vec<_>>(),
        "{all:?}"
    );
    // Throttled: fewer, each one of those 9 as it was, in order, the last
    // the run's end.
    assert_only_events(&throttled);
    assert!(
        throttled
            .iter()
            .all(|event| event["executionId"] == id.as_str()),
        "{throttled:?}"
    );
    assert!(throttled.len() < 9, "nothing was coalesced: {throttled:?}");
    let (throttled_events, all_events) = (without_cursors(&throttled), without_cursors(&all));
    assert!(
        throttled_events
            .iter()
            .all(|event| all_events.contains(event)),
        "a coalesced event differs from the event itself: {throttled:?} vs {all:?}"
    );
    let received = seqs(&of_execution(&throttled, &id));
    assert!(
        received.windows(2).all(|pair| pair[0] < pair[1]),
        "seqs not strictly increasing: {received:?}"
    );
    let last = throttled.last().unwrap();
    assert_eq!(
        (last["kind"].as_str(), last["seq"].as_i64()),
        (Some("EXECUTION_SUCCEEDED"), Some(9)),
        "{throttled:?}"
    );
    assert_eq!(last["executionStatus"], "SUCCEEDED");
    // At most one per interval: consecutive deliveries are about a second
    // apart (with room for scheduling jitter).
    assert!(
        arrivals
            .windows(2)
            .all(|pair| pair[1] - pair[0] >= Duration::from_millis(800)),
        "throttled events came closer than the interval: {:?}",
        arrivals
            .windows(2)
            .map(|pair| pair[1] - pair[0])
            .collect::<Vec<_>>()
    );
    assert_nothing_more(&mut client).await;
}

#[tokio::test]
async fn a_throttle_outside_one_to_sixty_thousand_ms_is_bad_user_input() {
    let (app, owner, organization) = acme().await;
    let mut client = WsClient::connect_as(&app, Some(&owner.access_token)).await;
    for (op, throttle_ms) in [("zero", 0), ("too-long", 60_001), ("negative", -1)] {
        client
            .subscribe(
                op,
                ORGANIZATION_EVENTS,
                stream_variables(&organization, Value::Null, json!(throttle_ms)),
            )
            .await;
        let error = refusal(&mut client, op).await;
        assert_eq!(
            error["extensions"]["code"], "BAD_USER_INPUT",
            "throttleMs {throttle_ms}: {error}"
        );
        assert_eq!(
            error["extensions"]["field"], "throttleMs",
            "throttleMs {throttle_ms}: {error}"
        );
    }
}

#[tokio::test]
async fn a_viewer_may_watch_the_stream_an_outsider_gets_not_found_and_an_anonymous_connection_unauthenticated()
 {
    let (app, owner, organization) = acme().await;
    let workflow = app.workflow(&owner, &organization, two_steps()).await;
    let viewer = app.member(&organization, Role::Viewer).await;
    let outsider = app.user().await;
    app.organization(&outsider, "Elsewhere").await;

    let mut outsiders = WsClient::connect_as(&app, Some(&outsider.access_token)).await;
    outsiders
        .subscribe(
            "outsider",
            ORGANIZATION_EVENTS,
            stream_variables(&organization, Value::Null, Value::Null),
        )
        .await;
    let error = refusal(&mut outsiders, "outsider").await;
    assert_eq!(error["extensions"]["code"], "NOT_FOUND", "{error}");

    let mut anonymous = WsClient::connect_as(&app, None).await;
    anonymous
        .subscribe(
            "anonymous",
            ORGANIZATION_EVENTS,
            stream_variables(&organization, Value::Null, Value::Null),
        )
        .await;
    let error = refusal(&mut anonymous, "anonymous").await;
    assert_eq!(error["extensions"]["code"], "UNAUTHENTICATED", "{error}");

    let mut viewers = WsClient::connect_as(&app, Some(&viewer.access_token)).await;
    watch(
        &mut viewers,
        "viewer",
        &organization,
        Value::Null,
        Value::Null,
    )
    .await;
    let id = app.run(&owner, &workflow, json!({})).await;
    let items = read_until(&mut viewers, |items| {
        finished(items_of(items, "viewer"), &id)
    })
    .await;
    let events = of_execution(items_of(&items, "viewer"), &id);
    assert_eq!(seqs(&events), (1..=7).collect::<Vec<_>>(), "{events:?}");
    assert_eq!(kinds(&events), TWO_STEP_KINDS);
}

#[tokio::test]
async fn an_organizations_viewer_api_key_may_watch_its_stream() {
    let (app, owner, organization) = acme().await;
    let workflow = app.workflow(&owner, &organization, two_steps()).await;
    let key = api_key(&app, &owner, &organization, "VIEWER").await;
    let mut client = WsClient::connect_as(&app, Some(&key)).await;
    watch(&mut client, "key", &organization, Value::Null, Value::Null).await;

    let id = app.run(&owner, &workflow, json!({})).await;
    let items = read_until(&mut client, |items| finished(items_of(items, "key"), &id)).await;
    let events = items_of(&items, "key");
    assert_only_events(events);
    let events = of_execution(events, &id);
    assert_eq!(seqs(&events), (1..=7).collect::<Vec<_>>(), "{events:?}");
    assert_eq!(kinds(&events), TWO_STEP_KINDS);
}

#[tokio::test]
async fn removing_a_member_closes_the_socket_of_their_stream_with_4403() {
    // No workers: a run stays QUEUED after its first event.
    let app = TestApp::spawn_with(|settings| settings.workers = 0).await;
    let owner = app.user().await;
    let organization = app.organization(&owner, "Acme").await;
    let workflow = app.workflow(&owner, &organization, one_step()).await;
    let viewer = app.member(&organization, Role::Viewer).await;
    let mut client = WsClient::connect_as(&app, Some(&viewer.access_token)).await;
    watch(&mut client, "org", &organization, Value::Null, Value::Null).await;

    // The stream is live: a run's first event reaches it.
    let id = app.run(&owner, &workflow, json!({})).await;
    let items = read_until(&mut client, |items| !items_of(items, "org").is_empty()).await;
    let queued = &items_of(&items, "org")[0];
    assert_eq!(
        (queued["executionId"].as_str(), queued["kind"].as_str()),
        (Some(id.as_str()), Some("EXECUTION_QUEUED")),
        "{queued}"
    );

    let removed = app
        .graphql_as(
            &owner.access_token,
            REMOVE_MEMBER,
            json!({ "organizationId": organization, "userId": viewer.user_id }),
        )
        .await;
    assert_eq!(removed.data()["removeMember"], true);
    client.expect_close(4403).await;
    // On a new socket, subscribing again finds nothing.
    let mut again = WsClient::connect_as(&app, Some(&viewer.access_token)).await;
    again
        .subscribe(
            "again",
            ORGANIZATION_EVENTS,
            stream_variables(&organization, Value::Null, Value::Null),
        )
        .await;
    let error = refusal(&mut again, "again").await;
    assert_eq!(error["extensions"]["code"], "NOT_FOUND", "{error}");
}

#[tokio::test]
async fn execution_updated_gives_a_queued_execution_as_it_is_then_after_each_change_until_it_succeeds()
 {
    // One worker, held by a one-minute DELAY until that is cancelled: the
    // execution watched stays QUEUED behind it until then.
    let app = TestApp::spawn_with(|settings| {
        settings.workers = 1;
        settings.park_after_ms = 3_600_000;
    })
    .await;
    let owner = app.user().await;
    let organization = app.organization(&owner, "Acme").await;
    let blocking = app
        .workflow(
            &owner,
            &organization,
            json!([{ "id": "wait", "kind": "DELAY", "config": { "ms": 60000 } }]),
        )
        .await;
    let blocker = app.run(&owner, &blocking, json!({})).await;
    let mut blocker_events = WsClient::connect_as(&app, Some(&owner.access_token)).await;
    blocker_events
        .subscribe_events("blocker", &blocker, 0)
        .await;
    let started = blocker_events.events_until_seq("blocker", 3).await;
    assert_eq!(started.last().unwrap()["kind"], "STEP_STARTED");

    let workflow = app
        .workflow(
            &owner,
            &organization,
            json!([
                { "id": "pause", "kind": "DELAY", "config": { "ms": 50 } },
                { "id": "done", "kind": "TRANSFORM", "needs": ["pause"], "config": { "output": "done" } }
            ]),
        )
        .await;
    let id = app.run(&owner, &workflow, json!({})).await;
    let mut client = WsClient::connect_as(&app, Some(&owner.access_token)).await;
    client
        .subscribe("updates", EXECUTION_UPDATED, json!({ "executionId": id }))
        .await;
    let message = client.next_json().await;
    assert_eq!(
        (message["type"].as_str(), message["id"].as_str()),
        (Some("next"), Some("updates")),
        "{message}"
    );
    let now = message["payload"]["data"]["executionUpdated"].clone();
    assert_eq!(
        now,
        json!({
            "id": id, "status": "QUEUED", "lastEventSeq": 1, "output": null, "error": null,
            "startedAt": null, "finishedAt": null, "workflow": { "id": workflow }
        }),
        "{message}"
    );

    // Freeing the worker lets the execution run.
    let cancelled = app
        .graphql_as(
            &owner.access_token,
            CANCEL,
            json!({ "input": { "executionId": blocker } }),
        )
        .await;
    assert_eq!(
        cancelled.data()["cancelExecution"]["id"].as_str(),
        Some(blocker.as_str())
    );
    let changes = client
        .data_until_complete("updates", "executionUpdated")
        .await;

    let updates: Vec<&Value> = std::iter::once(&now).chain(&changes).collect();
    const PROGRESSION: [&str; 3] = ["QUEUED", "RUNNING", "SUCCEEDED"];
    let rank = |status: &str| {
        PROGRESSION
            .iter()
            .position(|s| *s == status)
            .unwrap_or_else(|| panic!("unexpected status {status}"))
    };
    let statuses: Vec<&str> = updates
        .iter()
        .map(|update| update["status"].as_str().expect("status"))
        .collect();
    assert!(
        statuses
            .windows(2)
            .all(|pair| rank(pair[0]) <= rank(pair[1])),
        "statuses out of order: {statuses:?}"
    );
    assert!(statuses.contains(&"RUNNING"), "{statuses:?}");
    let last_seqs: Vec<i64> = updates
        .iter()
        .map(|update| update["lastEventSeq"].as_i64().expect("lastEventSeq"))
        .collect();
    assert!(
        last_seqs.windows(2).all(|pair| pair[0] < pair[1]),
        "lastEventSeq not increasing: {last_seqs:?}"
    );
    for update in &updates {
        assert_eq!(update["id"], id.as_str(), "{update}");
        assert_eq!(update["workflow"]["id"], workflow.as_str(), "{update}");
    }
    for running in updates
        .iter()
        .filter(|update| update["status"] == "RUNNING")
    {
        assert!(running["startedAt"].is_string(), "{running}");
        assert_eq!(
            (&running["finishedAt"], &running["output"]),
            (&Value::Null, &Value::Null),
            "{running}"
        );
    }
    let last = changes.last().expect("changes after the first state");
    assert_eq!(last["status"], "SUCCEEDED", "{changes:?}");
    assert_eq!(last["output"], "done");
    assert_eq!(last["error"], Value::Null);
    assert_eq!(last["lastEventSeq"], 7);
    assert!(
        last["startedAt"].is_string() && last["finishedAt"].is_string(),
        "{last}"
    );
}

#[tokio::test]
async fn execution_updated_on_a_finished_execution_gives_its_final_state_once_then_completes() {
    let (app, owner, organization) = acme().await;
    let workflow = app.workflow(&owner, &organization, one_step()).await;
    let id = app.run(&owner, &workflow, json!({})).await;
    let finished = app.finished_execution(&owner, &id).await;
    assert_eq!(finished["status"], "SUCCEEDED");

    let mut client = WsClient::connect_as(&app, Some(&owner.access_token)).await;
    client
        .subscribe("updates", EXECUTION_UPDATED, json!({ "executionId": id }))
        .await;
    let updates = client
        .data_until_complete("updates", "executionUpdated")
        .await;
    assert_eq!(
        updates,
        [json!({
            "id": id,
            "status": "SUCCEEDED",
            "lastEventSeq": finished["lastEventSeq"],
            "output": 1,
            "error": null,
            "startedAt": finished["startedAt"],
            "finishedAt": finished["finishedAt"],
            "workflow": { "id": workflow }
        })]
    );
}

#[tokio::test]
async fn execution_updated_for_an_outsider_is_not_found() {
    let app = TestApp::spawn_with(|settings| settings.workers = 0).await;
    let owner = app.user().await;
    let organization = app.organization(&owner, "Acme").await;
    let workflow = app.workflow(&owner, &organization, one_step()).await;
    let id = app.run(&owner, &workflow, json!({})).await;
    let outsider = app.user().await;
    app.organization(&outsider, "Elsewhere").await;

    let mut client = WsClient::connect_as(&app, Some(&outsider.access_token)).await;
    client
        .subscribe("updates", EXECUTION_UPDATED, json!({ "executionId": id }))
        .await;
    let error = refusal(&mut client, "updates").await;
    assert_eq!(error["extensions"]["code"], "NOT_FOUND", "{error}");
}

#[tokio::test]
#[ignore = "needs PostgreSQL, Redis and a redis-server binary"]
async fn when_redis_comes_back_the_stream_sends_what_committed_meanwhile_once_and_streams_on() {
    require_multi_instance_backends();
    let mut redis = PrivateRedis::start()
        .await
        .expect("needs a redis-server binary");
    let app = TestApp::spawn_with(|settings| settings.redis_url = Some(redis.url())).await;
    let owner = app.user().await;
    let organization = app.organization(&owner, "Acme").await;
    let workflow = app.workflow(&owner, &organization, two_steps()).await;
    await_redis_health(&app, "connected").await;
    let mut client = WsClient::connect_as(&app, Some(&owner.access_token)).await;
    watch(&mut client, "org", &organization, Value::Null, Value::Null).await;

    // The stream is live before the outage.
    let before = app.run(&owner, &workflow, json!({})).await;
    let items = read_until(&mut client, |items| {
        finished(items_of(items, "org"), &before)
    })
    .await;
    assert_only_events(items_of(&items, "org"));

    // A run starts and finishes while nothing can be published.
    redis.stop();
    await_redis_outage(&app).await;
    let during = app.run(&owner, &workflow, json!({})).await;
    app.await_finished(&during).await;
    redis
        .launch()
        .await
        .expect("redis restarts on the same port");
    await_redis_health(&app, "connected").await;
    let items = read_until(&mut client, |items| {
        finished(items_of(items, "org"), &during)
    })
    .await;
    assert_only_events(items_of(&items, "org"));
    assert_one_whole_run(items_of(&items, "org"), &during, 7);

    // And the stream goes on.
    let after = app.run(&owner, &workflow, json!({})).await;
    let items = read_until(&mut client, |items| {
        finished(items_of(items, "org"), &after)
    })
    .await;
    assert_one_whole_run(items_of(&items, "org"), &after, 7);
}

#[tokio::test]
#[ignore = "needs PostgreSQL and Redis"]
async fn a_subscriber_on_another_instance_receives_every_event_of_an_execution_in_order() {
    require_multi_instance_backends();
    let a = TestApp::spawn_with(|settings| settings.workers = 1).await;
    let mut settings = a.settings.clone();
    settings.workers = 0;
    let b = TestApp::start(settings).await;
    let owner = a.user().await;
    let organization = a.organization(&owner, "Acme").await;
    let workflow = a.workflow(&owner, &organization, two_steps()).await;
    let mut on_b = WsClient::connect_as(&b, Some(&owner.access_token)).await;
    watch(&mut on_b, "b", &organization, Value::Null, Value::Null).await;

    let id = a.run(&owner, &workflow, json!({})).await;
    let items = read_until(&mut on_b, |items| finished(items_of(items, "b"), &id)).await;
    let events = items_of(&items, "b");
    assert_only_events(events);
    let events = of_execution(events, &id);
    assert_eq!(seqs(&events), (1..=7).collect::<Vec<_>>(), "{events:?}");
    assert_eq!(kinds(&events), TWO_STEP_KINDS);
    assert_eq!(items_of(&items, "b").len(), 7, "{items:?}");
    assert_nothing_more(&mut on_b).await;
}

#[tokio::test]
async fn events_the_bus_never_delivered_reach_the_stream_through_the_recheck_up_to_the_terminal_one()
 {
    let app = TestApp::spawn_with(|settings| {
        settings.workers = 0;
        settings.stream_recheck_ms = 200;
    })
    .await;
    let owner = app.user().await;
    let organization = app.organization(&owner, "Acme").await;
    let workflow = app.workflow(&owner, &organization, two_steps()).await;
    let mut client = WsClient::connect_as(&app, Some(&owner.access_token)).await;
    watch(&mut client, "org", &organization, Value::Null, Value::Null).await;
    let id = app.run(&owner, &workflow, json!({})).await;
    let queued = read_until(&mut client, |items| !items_of(items, "org").is_empty()).await;
    assert_eq!(seqs(&of_execution(items_of(&queued, "org"), &id)), [1]);

    // Its worker's events are committed but never published to this server.
    let worker = app.isolated_worker(|_| {}).await;

    let rest = read_until(&mut client, |items| finished(items_of(items, "org"), &id)).await;
    let rest = items_of(&rest, "org");
    assert_only_events(rest);
    let events = of_execution(rest, &id);
    assert_eq!(seqs(&events), (2..=7).collect::<Vec<_>>(), "{rest:?}");
    assert_eq!(kinds(&events), TWO_STEP_KINDS[1..]);
    assert_nothing_more(&mut client).await;
    worker.stop().await;
    client.close().await;
}

#[tokio::test]
#[ignore = "needs a redis-server binary"]
async fn redis_killed_and_restarted_while_executions_run_leaves_every_subscriber_and_the_dashboard_gap_free()
 {
    let mut redis = PrivateRedis::start()
        .await
        .expect("needs a redis-server binary");
    let app = TestApp::spawn_with(|settings| {
        settings.redis_url = Some(redis.url());
        settings.workers = 4;
    })
    .await;
    let owner = app.user().await;
    let organization = app.organization(&owner, "Acme").await;
    // Eight short DELAYs in a row: a run emits 19 events over more than
    // a second and a half.
    let steps: Vec<Value> = (0..8)
        .map(|n| {
            let needs: Vec<String> = (n > 0).then(|| format!("s{}", n - 1)).into_iter().collect();
            json!({ "id": format!("s{n}"), "kind": "DELAY", "needs": needs, "config": { "ms": 200 } })
        })
        .collect();
    let workflow = app.workflow(&owner, &organization, json!(steps)).await;
    await_redis_health(&app, "connected").await;
    let mut dashboard = WsClient::connect_as(&app, Some(&owner.access_token)).await;
    watch(
        &mut dashboard,
        "org",
        &organization,
        Value::Null,
        Value::Null,
    )
    .await;

    let mut subscribers = Vec::new();
    for _ in 0..4 {
        let id = app.run(&owner, &workflow, json!({})).await;
        let mut client = WsClient::connect_as(&app, Some(&owner.access_token)).await;
        client.subscribe_events("events", &id, 0).await;
        subscribers.push((id, client));
    }
    // Every execution is under way when Redis goes, and goes on emitting
    // events while it is gone.
    let mut seen = Vec::new();
    for (_, client) in &mut subscribers {
        seen.push(client.events_until_seq("events", 3).await);
    }
    redis.stop();
    await_redis_outage(&app).await;
    let owned_ids: Vec<String> = subscribers.iter().map(|(id, _)| id.clone()).collect();
    let ids: Vec<&str> = owned_ids.iter().map(String::as_str).collect();
    let at_outage = last_event_seqs(&app, &ids).await;
    // Redis stays down until every execution has committed events nothing
    // could publish.
    let deadline = Instant::now() + STREAM_WAIT;
    loop {
        let now = last_event_seqs(&app, &ids).await;
        if now.iter().zip(&at_outage).all(|(now, then)| now > then) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not every execution moved on during the outage: {at_outage:?} then {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    redis
        .launch()
        .await
        .expect("redis restarts on the same port");

    for ((id, client), before) in subscribers.iter_mut().zip(seen) {
        let after = client.events_until_complete("events").await;
        let all: Vec<i64> = before
            .iter()
            .chain(&after)
            .map(|event| event["seq"].as_i64().expect("seq"))
            .collect();
        assert_eq!(all, (1..=19).collect::<Vec<_>>(), "execution {id}");
        assert_eq!(after.last().unwrap()["kind"], "EXECUTION_SUCCEEDED");
    }
    // The dashboard, subscribed before any run started, has every event
    // of every run once, in order, and no resync.
    let items = read_until(&mut dashboard, |items| {
        ids.iter().all(|id| finished(items_of(items, "org"), id))
    })
    .await;
    assert_only_events(items_of(&items, "org"));
    for id in &ids {
        let events = of_execution(items_of(&items, "org"), id);
        assert_eq!(
            seqs(&events),
            (1..=19).collect::<Vec<_>>(),
            "execution {id}"
        );
    }
}

/// The `last_event_seq` of each execution, read from the database.
async fn last_event_seqs(app: &TestApp, ids: &[&str]) -> Vec<i32> {
    let mut seqs = Vec::new();
    for id in ids {
        seqs.push(app.execution_row(id).await.last_event_seq);
    }
    seqs
}

/// A command's answer from `redis`.
async fn redis_query<T: redis::FromRedisValue>(redis: &PrivateRedis, command: &redis::Cmd) -> T {
    let client = redis::Client::open(redis.url()).expect("redis url");
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis connection");
    command.query_async(&mut connection).await.expect("answer")
}

/// How many connections subscribe to `channel`.
async fn subscribers_of(redis: &PrivateRedis, channel: &str) -> i64 {
    let mut command = redis::cmd("PUBSUB");
    command.arg("NUMSUB").arg(channel);
    let (_, count): (String, i64) = redis_query(redis, &command).await;
    count
}

/// How many connections to `redis` are in subscriber mode.
async fn subscriber_connections(redis: &PrivateRedis) -> usize {
    let mut command = redis::cmd("CLIENT");
    command.arg("LIST").arg("TYPE").arg("pubsub");
    let list: String = redis_query(redis, &command).await;
    list.lines().filter(|line| !line.trim().is_empty()).count()
}

#[tokio::test]
#[ignore = "needs a redis-server binary"]
async fn an_instance_keeps_one_subscriber_connection_and_an_organizations_channel_only_while_it_has_a_watcher()
 {
    let redis = PrivateRedis::start()
        .await
        .expect("needs a redis-server binary");
    let app = TestApp::spawn_with(|settings| settings.redis_url = Some(redis.url())).await;
    let owner = app.user().await;
    let acme = app.organization(&owner, "Acme").await;
    let beta = app.organization(&owner, "Beta").await;
    let workflow = app.workflow(&owner, &acme, one_step()).await;
    let prefix = &app.settings.redis_prefix;
    let (acme_channel, beta_channel) =
        (format!("{prefix}org:{acme}"), format!("{prefix}org:{beta}"));
    await_redis_health(&app, "connected").await;
    assert_eq!(subscribers_of(&redis, &acme_channel).await, 0);

    // Three dashboards on two organizations: two channels, one connection.
    let mut dashboards = Vec::new();
    for organization in [&acme, &acme, &beta] {
        let mut client = WsClient::connect_as(&app, Some(&owner.access_token)).await;
        watch(&mut client, "org", organization, Value::Null, Value::Null).await;
        dashboards.push(client);
    }
    assert_eq!(subscribers_of(&redis, &acme_channel).await, 1);
    assert_eq!(subscribers_of(&redis, &beta_channel).await, 1);
    assert_eq!(subscriber_connections(&redis).await, 1);

    // Acme's dashboards close; the instance leaves Acme's channel at its
    // next message there, and stays on Beta's.
    let beta_dashboard = dashboards.pop().unwrap();
    for client in dashboards {
        client.close().await;
    }
    let deadline = Instant::now() + STREAM_WAIT;
    while subscribers_of(&redis, &acme_channel).await > 0 {
        assert!(Instant::now() < deadline, "Acme's channel was never left");
        app.run(&owner, &workflow, json!({})).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(subscribers_of(&redis, &beta_channel).await, 1);
    assert_eq!(subscriber_connections(&redis).await, 1);
    beta_dashboard.close().await;
}

#[tokio::test]
async fn events_the_bus_delivers_twice_or_out_of_order_reach_the_dashboard_once_and_in_order() {
    let app = TestApp::spawn_with(|settings| {
        settings.workers = 0;
        settings.stream_recheck_ms = 3_600_000;
    })
    .await;
    let owner = app.user().await;
    let organization = app.organization(&owner, "Acme").await;
    let workflow = app.workflow(&owner, &organization, one_step()).await;
    let mut client = WsClient::connect_as(&app, Some(&owner.access_token)).await;
    watch(&mut client, "org", &organization, Value::Null, Value::Null).await;
    let id = app.run(&owner, &workflow, json!({})).await;
    let queued = read_until(&mut client, |items| !items_of(items, "org").is_empty()).await;
    assert_eq!(seqs(&of_execution(items_of(&queued, "org"), &id)), [1]);
    // The run happens where this server's bus cannot hear it; then its
    // events arrive duplicated and out of order.
    let worker = app.isolated_worker(|_| {}).await;
    app.await_finished(&id).await;
    worker.stop().await;
    app.republish(&id, &[2, 2, 4, 3, 5]).await;

    let rest = read_until(&mut client, |items| finished(items_of(items, "org"), &id)).await;
    let rest = items_of(&rest, "org");
    assert_only_events(rest);
    assert_eq!(seqs(&of_execution(rest, &id)), [2, 3, 4, 5]);
    assert_nothing_more(&mut client).await;
}

/// `executionUpdated` asking only for what each change carries.
const EXECUTION_UPDATED_SNAPSHOT: &str = "subscription($executionId: ID!) {
  executionUpdated(executionId: $executionId) {
    id status lastEventSeq output error queuedAt startedAt finishedAt
  }
}";

/// Reads `next` items of operation `op` until its `complete`.
async fn until_complete(client: &mut WsClient, op: &str, field: &str) -> Vec<Value> {
    let mut items = Vec::new();
    loop {
        let message = client.next_json().await;
        assert_eq!(message["id"], op, "{message}");
        match message["type"].as_str() {
            Some("next") => {
                assert!(message["payload"].get("errors").is_none(), "{message}");
                items.push(message["payload"]["data"][field].clone());
            }
            Some("complete") => return items,
            _ => panic!("unexpected {message}"),
        }
    }
}

#[tokio::test]
async fn live_changes_reach_many_subscribers_without_a_database_read() {
    let app = TestApp::spawn_with(|settings| {
        settings.run_engine = false;
        settings.stream_recheck_ms = 3_600_000;
    })
    .await;
    let owner = app.user().await;
    let organization = app.organization(&owner, "Acme").await;
    let workflow = app.workflow(&owner, &organization, two_steps()).await;
    let mut dashboard = WsClient::connect_as(&app, Some(&owner.access_token)).await;
    watch(
        &mut dashboard,
        "org",
        &organization,
        Value::Null,
        Value::Null,
    )
    .await;
    let id = app.run(&owner, &workflow, json!({})).await;
    let queued = read_until(&mut dashboard, |items| !items_of(items, "org").is_empty()).await;
    assert_eq!(seqs(&of_execution(items_of(&queued, "org"), &id)), [1]);

    // Ten state views, ten event views and a dashboard, all live.
    let mut states = Vec::new();
    let mut events = Vec::new();
    for _ in 0..10 {
        let mut state = WsClient::connect_as(&app, Some(&owner.access_token)).await;
        state
            .subscribe(
                "state",
                EXECUTION_UPDATED_SNAPSHOT,
                json!({ "executionId": id }),
            )
            .await;
        let now = state.next_json().await;
        assert_eq!(
            now["payload"]["data"]["executionUpdated"]["status"], "QUEUED",
            "{now}"
        );
        states.push(state);
        let mut event = WsClient::connect_as(&app, Some(&owner.access_token)).await;
        event.subscribe_events("events", &id, 0).await;
        assert_eq!(event.events_until_seq("events", 1).await.len(), 1);
        events.push(event);
    }
    // The run happens where this server's bus cannot hear it; then its
    // changes are published here, and every subscriber reads them to the
    // end.
    let worker = app
        .isolated_worker(|settings| settings.run_engine = true)
        .await;
    app.await_finished(&id).await;
    worker.stop().await;
    let log = app.logged_events(&id).await;
    let before = app.state.sql_statements.get();
    app.publish_events(&log, &[2, 3, 4, 5, 6, 7]).await;
    for state in &mut states {
        let changes = until_complete(state, "state", "executionUpdated").await;
        let seqs: Vec<i64> = changes
            .iter()
            .map(|change| change["lastEventSeq"].as_i64().expect("lastEventSeq"))
            .collect();
        assert_eq!(seqs, [2, 3, 4, 5, 6, 7]);
        let last = changes.last().unwrap();
        assert_eq!(
            (last["status"].as_str(), &last["output"]),
            (Some("SUCCEEDED"), &json!("done")),
            "{last}"
        );
        assert!(last["finishedAt"].is_string(), "{last}");
    }
    for event in &mut events {
        let rest = event.events_until_complete("events").await;
        assert_eq!(rest.len(), 6);
    }
    let items = read_until(&mut dashboard, |items| {
        finished(items_of(items, "org"), &id)
    })
    .await;
    assert_eq!(
        seqs(&of_execution(items_of(&items, "org"), &id)),
        [2, 3, 4, 5, 6, 7]
    );
    assert_eq!(
        app.state.sql_statements.get() - before,
        0,
        "21 subscribers read the database for 6 changes"
    );
}
