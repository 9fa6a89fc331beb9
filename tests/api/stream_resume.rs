//! Resuming `organizationExecutionEvents` from a cursor: a dashboard that
//! resubscribes with the `cursor` of the last item it received gets, from
//! the log, exactly the events it missed — on either backend, and when
//! events committed out of timestamp order — or one `StreamResync` first
//! when the cursor is too old or too much happened since.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use flowpilot::events::log::{self, EventKind, ExecutionEventRecord};
use flowpilot::events::watermark::StreamCursor;
use flowpilot::events::{BusMessage, Topic};
use sea_orm::{ActiveModelTrait, DatabaseTransaction, IntoActiveModel, Set, TransactionTrait};
use serde_json::{Value, json};

use crate::organization_streams::{
    ORGANIZATION_EVENTS, assert_nothing_more, assert_only_events, finished, items_of, of_execution,
    read_until, refusal, seqs, two_steps, watch,
};
use crate::support::ws::WsClient;
use crate::support::{Session, TestApp};

/// Subscribes `client` as operation `op` to the stream after `cursor`.
async fn resume(client: &mut WsClient, op: &str, organization: &str, cursor: &str) {
    let variables = json!({ "organizationId": organization, "after": cursor });
    client.subscribe(op, ORGANIZATION_EVENTS, variables).await;
}

/// The cursor of the last item of operation `op`.
fn last_cursor(items: &[Value]) -> String {
    let last = items.last().expect("an item");
    last["cursor"].as_str().expect("a cursor").to_owned()
}

async fn acme_with(app: &TestApp) -> (Session, String, String) {
    let owner = app.user().await;
    let organization = app.organization(&owner, "Acme").await;
    let workflow = app.workflow(&owner, &organization, two_steps()).await;
    (owner, organization, workflow)
}

#[tokio::test]
async fn a_dashboard_resuming_from_its_last_cursor_gets_exactly_what_it_missed() {
    let app = TestApp::spawn().await;
    let (owner, organization, workflow) = acme_with(&app).await;
    let mut client = WsClient::connect_as(&app, Some(&owner.access_token)).await;
    watch(&mut client, "org", &organization, Value::Null, Value::Null).await;

    // The dashboard sees the first run get under way, then goes away.
    let first = app.run(&owner, &workflow, json!({})).await;
    let items = read_until(&mut client, |items| {
        of_execution(items_of(items, "org"), &first).len() >= 3
    })
    .await;
    let seen = items_of(&items, "org").to_vec();
    assert_only_events(&seen);
    let cursor = last_cursor(&seen);
    let seen_seqs = seqs(&of_execution(&seen, &first));
    client.close().await;

    // Meanwhile the first run finishes and a second runs whole.
    let second = app.run(&owner, &workflow, json!({})).await;
    app.await_finished(&first).await;
    app.await_finished(&second).await;

    let mut client = WsClient::connect_as(&app, Some(&owner.access_token)).await;
    resume(&mut client, "again", &organization, &cursor).await;
    let items = read_until(&mut client, |items| {
        finished(items_of(items, "again"), &first) && finished(items_of(items, "again"), &second)
    })
    .await;
    let missed = items_of(&items, "again");
    assert_only_events(missed);
    let last_seen = *seen_seqs.last().unwrap();
    assert_eq!(
        seqs(&of_execution(missed, &first)),
        ((last_seen + 1)..=7).collect::<Vec<_>>(),
        "saw {seen_seqs:?} before"
    );
    assert_eq!(
        seqs(&of_execution(missed, &second)),
        (1..=7).collect::<Vec<_>>()
    );
    assert_nothing_more(&mut client).await;

    // And it streams on live.
    let third = app.run(&owner, &workflow, json!({})).await;
    let items = read_until(&mut client, |items| {
        finished(items_of(items, "again"), &third)
    })
    .await;
    assert_eq!(
        seqs(&of_execution(items_of(&items, "again"), &third)),
        (1..=7).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn resuming_from_the_initial_cursor_replays_every_run_since_and_execution_events_carry_no_cursor()
 {
    let app = TestApp::spawn().await;
    let (owner, organization, workflow) = acme_with(&app).await;
    let mut client = WsClient::connect_as(&app, Some(&owner.access_token)).await;
    let cursor = watch(&mut client, "org", &organization, Value::Null, Value::Null).await;
    client.close().await;
    let run = app.run(&owner, &workflow, json!({})).await;
    app.await_finished(&run).await;

    let mut client = WsClient::connect_as(&app, Some(&owner.access_token)).await;
    resume(&mut client, "again", &organization, &cursor).await;
    let items = read_until(&mut client, |items| {
        finished(items_of(items, "again"), &run)
    })
    .await;
    let missed = items_of(&items, "again");
    assert_only_events(missed);
    assert_eq!(
        seqs(&of_execution(missed, &run)),
        (1..=7).collect::<Vec<_>>()
    );
    assert_eq!(missed.len(), 7, "{missed:?}");

    client
        .subscribe(
            "one",
            "subscription($id: ID!) { executionEvents(executionId: $id) { seq cursor } }",
            json!({ "id": run }),
        )
        .await;
    let event = client.next_json().await;
    assert_eq!(
        event["payload"]["data"]["executionEvents"]["seq"], 1,
        "{event}"
    );
    assert_eq!(
        event["payload"]["data"]["executionEvents"]["cursor"],
        Value::Null
    );
}

/// Appends a REQUEUED event to queued `execution` in `txn`, stamped
/// `occurred_at`, as an engine writing it would.
async fn append_event(
    txn: &DatabaseTransaction,
    app: &TestApp,
    execution: &str,
    occurred_at: DateTime<Utc>,
) -> ExecutionEventRecord {
    let row = app.execution_row(execution).await;
    let next_seq = row.last_event_seq + 1;
    let mut active = row.into_active_model();
    active.last_event_seq = Set(next_seq);
    let updated = active.update(txn).await.expect("the execution updates");
    log::append(
        txn,
        &updated,
        EventKind::ExecutionRequeued,
        None,
        occurred_at,
    )
    .await
    .expect("the event appends")
}

async fn publish(app: &TestApp, event: &ExecutionEventRecord) {
    let topic = Topic::Organization(event.execution.organization_id);
    let message = BusMessage::ExecutionEvent(Box::new(event.clone()));
    app.state.bus.publish(topic, message).await;
}

#[tokio::test]
async fn an_event_committed_after_a_later_stamped_one_is_not_lost_on_resume() {
    let app = TestApp::spawn_with(|settings| {
        settings.run_engine = false;
        settings.stream_recheck_ms = 200;
    })
    .await;
    let (owner, organization, workflow) = acme_with(&app).await;
    let slow = app.run(&owner, &workflow, json!({})).await;
    let fast = app.run(&owner, &workflow, json!({})).await;
    let mut client = WsClient::connect_as(&app, Some(&owner.access_token)).await;
    watch(&mut client, "org", &organization, Value::Null, Value::Null).await;
    let postgres = app.state.db.get_database_backend() == sea_orm::DatabaseBackend::Postgres;

    // Worker one stamps its event first; on PostgreSQL its transaction is
    // open all along (SQLite has one writer: it commits last instead).
    let early = Utc::now() - TimeDelta::seconds(5);
    let slow_txn = if postgres {
        let txn = app.state.db.begin().await.unwrap();
        Some((append_event(&txn, &app, &slow, early).await, txn))
    } else {
        None
    };
    // Worker two commits a later-stamped event, which the dashboard gets.
    let txn = app.state.db.begin().await.unwrap();
    let fast_2 = append_event(&txn, &app, &fast, Utc::now()).await;
    txn.commit().await.unwrap();
    publish(&app, &fast_2).await;
    let items = read_until(&mut client, |items| !items_of(items, "org").is_empty()).await;
    assert_eq!(seqs(&of_execution(items_of(&items, "org"), &fast)), [2]);
    // Quiet for a re-check interval, the stream reads a new watermark; a
    // third event, after it, carries a cursor past both.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let txn = app.state.db.begin().await.unwrap();
    let fast_3 = append_event(&txn, &app, &fast, Utc::now()).await;
    txn.commit().await.unwrap();
    publish(&app, &fast_3).await;
    let items = read_until(&mut client, |items| !items_of(items, "org").is_empty()).await;
    assert_eq!(seqs(&of_execution(items_of(&items, "org"), &fast)), [3]);
    let cursor = last_cursor(items_of(&items, "org"));
    client.close().await;

    // Then worker one commits its earlier-stamped event; nobody hears it.
    let slow_2 = match slow_txn {
        Some((event, txn)) => {
            txn.commit().await.unwrap();
            event
        }
        None => {
            let txn = app.state.db.begin().await.unwrap();
            let event = append_event(&txn, &app, &slow, early).await;
            txn.commit().await.unwrap();
            event
        }
    };
    assert!(slow_2.occurred_at < fast_2.occurred_at);
    let watermark = StreamCursor::decode(&cursor).unwrap().watermark;
    assert!(
        watermark.covers(fast_2.position),
        "the cursor's watermark is past the later-stamped event"
    );
    assert!(!watermark.covers(slow_2.position));

    let mut client = WsClient::connect_as(&app, Some(&owner.access_token)).await;
    resume(&mut client, "again", &organization, &cursor).await;
    let items = read_until(&mut client, |items| !items_of(items, "again").is_empty()).await;
    let missed = items_of(&items, "again");
    assert_only_events(missed);
    assert_eq!(seqs(&of_execution(missed, &slow)), [2], "{missed:?}");
    assert_nothing_more(&mut client).await;
}

#[tokio::test]
async fn a_cursor_older_than_a_day_resumes_with_one_cursor_expired_resync() {
    let app = TestApp::spawn().await;
    let (owner, organization, workflow) = acme_with(&app).await;
    let mut client = WsClient::connect_as(&app, Some(&owner.access_token)).await;
    let cursor = watch(&mut client, "org", &organization, Value::Null, Value::Null).await;
    let mut old = StreamCursor::decode(&cursor).unwrap();
    old.issued_at -= TimeDelta::hours(25);
    let run = app.run(&owner, &workflow, json!({})).await;
    app.await_finished(&run).await;

    let mut client = WsClient::connect_as(&app, Some(&owner.access_token)).await;
    resume(&mut client, "again", &organization, &old.encode()).await;
    let resync = read_until(&mut client, |items| !items_of(items, "again").is_empty()).await;
    let resync = &items_of(&resync, "again")[0];
    assert_eq!(
        (resync["__typename"].as_str(), resync["reason"].as_str()),
        (Some("StreamResync"), Some("CURSOR_EXPIRED")),
        "{resync}"
    );
    assert!(resync["cursor"].is_string(), "{resync}");
    assert_nothing_more(&mut client).await;
}

#[tokio::test]
async fn a_dashboard_that_missed_more_than_the_replay_limit_resumes_with_one_too_far_behind_resync_then_streams_on()
 {
    let app = TestApp::spawn_with(|settings| settings.stream_replay_limit = 3).await;
    let (owner, organization, workflow) = acme_with(&app).await;
    let mut client = WsClient::connect_as(&app, Some(&owner.access_token)).await;
    let cursor = watch(&mut client, "org", &organization, Value::Null, Value::Null).await;
    client.close().await;
    let missed = app.run(&owner, &workflow, json!({})).await;
    app.await_finished(&missed).await;

    let mut client = WsClient::connect_as(&app, Some(&owner.access_token)).await;
    resume(&mut client, "again", &organization, &cursor).await;
    let items = read_until(&mut client, |items| !items_of(items, "again").is_empty()).await;
    let resync = &items_of(&items, "again")[0];
    assert_eq!(
        (resync["__typename"].as_str(), resync["reason"].as_str()),
        (Some("StreamResync"), Some("TOO_FAR_BEHIND")),
        "{resync}"
    );
    let run = app.run(&owner, &workflow, json!({})).await;
    let items = read_until(&mut client, |items| {
        finished(items_of(items, "again"), &run)
    })
    .await;
    let live = items_of(&items, "again");
    assert_only_events(live);
    assert_eq!(seqs(&of_execution(live, &run)), (1..=7).collect::<Vec<_>>());
    assert_eq!(live.len(), 7, "{live:?}");
}

#[tokio::test]
async fn a_cursor_the_stream_never_gave_is_bad_user_input_naming_after() {
    let app = TestApp::spawn().await;
    let (owner, organization, _) = acme_with(&app).await;
    let mut client = WsClient::connect_as(&app, Some(&owner.access_token)).await;
    // Not base64, too short, and a format version to come.
    for (n, cursor) in [
        "not a cursor",
        "AAAA",
        "AnMAAAGiT0wXqAAAAAAAAAABAAAAAAAAAAEAAAAAAAAAAA",
    ]
    .iter()
    .enumerate()
    {
        let op = format!("bad{n}");
        resume(&mut client, &op, &organization, cursor).await;
        let error = refusal(&mut client, &op).await;
        assert_eq!(error["extensions"]["code"], "BAD_USER_INPUT", "{error}");
        assert_eq!(error["extensions"]["field"], "after", "{error}");
    }
    // A good one still works on the same socket.
    let cursor = watch(&mut client, "good", &organization, Value::Null, Value::Null).await;
    assert!(StreamCursor::decode(&cursor).is_ok());
}

#[tokio::test]
async fn a_filtered_dashboard_resumes_with_only_what_its_filter_admits() {
    let app = TestApp::spawn().await;
    let (owner, organization, shown) = acme_with(&app).await;
    let hidden = app.workflow(&owner, &organization, two_steps()).await;
    let filter = json!({ "workflowIds": [shown], "kinds": ["EXECUTION_SUCCEEDED"] });
    let mut client = WsClient::connect_as(&app, Some(&owner.access_token)).await;
    let variables = json!({ "organizationId": organization, "filter": filter });
    client
        .subscribe("org", ORGANIZATION_EVENTS, variables)
        .await;
    let initial = read_until(&mut client, |items| !items_of(items, "org").is_empty()).await;
    let cursor = last_cursor(items_of(&initial, "org"));
    client.close().await;
    let runs = [
        app.run(&owner, &shown, json!({})).await,
        app.run(&owner, &hidden, json!({})).await,
    ];
    for run in &runs {
        app.await_finished(run).await;
    }

    let mut client = WsClient::connect_as(&app, Some(&owner.access_token)).await;
    let variables = json!({ "organizationId": organization, "filter": filter, "after": cursor });
    client
        .subscribe("again", ORGANIZATION_EVENTS, variables)
        .await;
    let items = read_until(&mut client, |items| !items_of(items, "again").is_empty()).await;
    let missed = items_of(&items, "again");
    assert_eq!(missed.len(), 1, "{missed:?}");
    assert_eq!(missed[0]["executionId"], runs[0].as_str(), "{missed:?}");
    assert_eq!(missed[0]["kind"], "EXECUTION_SUCCEEDED", "{missed:?}");
    assert_nothing_more(&mut client).await;
}

#[tokio::test]
async fn an_execution_under_way_whose_event_was_never_published_reaches_a_new_dashboard_whole() {
    let app = TestApp::spawn_with(|settings| {
        settings.run_engine = false;
        settings.stream_recheck_ms = 3_600_000;
    })
    .await;
    let (owner, organization, workflow) = acme_with(&app).await;
    let running = app.run(&owner, &workflow, json!({})).await;
    let mut client = WsClient::connect_as(&app, Some(&owner.access_token)).await;
    watch(&mut client, "org", &organization, Value::Null, Value::Null).await;

    // Its second event commits but its publish is lost; its third arrives.
    for _ in 0..2 {
        let txn = app.state.db.begin().await.unwrap();
        let event = append_event(&txn, &app, &running, Utc::now()).await;
        txn.commit().await.unwrap();
        if event.seq == 3 {
            publish(&app, &event).await;
        }
    }
    let items = read_until(&mut client, |items| {
        of_execution(items_of(items, "org"), &running).len() >= 2
    })
    .await;
    assert_eq!(
        seqs(&of_execution(items_of(&items, "org"), &running)),
        [2, 3]
    );

    // A message without a position (from an instance that does not send
    // it) is read from the log, once.
    let txn = app.state.db.begin().await.unwrap();
    let mut fourth = append_event(&txn, &app, &running, Utc::now()).await;
    txn.commit().await.unwrap();
    fourth.position = 0;
    publish(&app, &fourth).await;
    publish(&app, &fourth).await;
    let items = read_until(&mut client, |items| !items_of(items, "org").is_empty()).await;
    assert_eq!(seqs(&of_execution(items_of(&items, "org"), &running)), [4]);
    let cursor = StreamCursor::decode(&last_cursor(items_of(&items, "org"))).unwrap();
    assert!(
        cursor.seen.contains(&(running.parse().unwrap(), 4)),
        "{cursor:?}"
    );
    assert_nothing_more(&mut client).await;
}

#[test]
fn a_cursor_from_the_future_is_not_usable() {
    let now = Utc::now();
    let cursor = |issued_at| StreamCursor {
        issued_at,
        ..StreamCursor::decode("AXMAAAGiT0wXqAAAAAAAAAABAAAAAAAAAAEAAAAAAAAAAA").unwrap()
    };
    let window = TimeDelta::hours(24);
    assert!(cursor(now - TimeDelta::hours(1)).is_usable(window, now));
    assert!(!cursor(now - TimeDelta::hours(25)).is_usable(window, now));
    assert!(!cursor(now + TimeDelta::hours(1)).is_usable(window, now));
}
