//! Several instances on one PostgreSQL and one Redis behave as one. These
//! tests need `FLOWPILOT_TEST_DATABASE_URL` and `FLOWPILOT_TEST_REDIS_URL`
//! (CI sets both); without them they return at once.

use std::collections::HashSet;
use std::time::Duration;

use entity::execution;
use entity::status::ExecutionStatus;
use flowpilot::events::{BusMessage, BusSignal, Topic};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::json;
use uuid::Uuid;

use crate::support::ws::WsClient;
use crate::support::{TestApp, postgres_url, redis_url};

fn multi_instance_backends() -> bool {
    let ready = postgres_url().is_some() && redis_url().is_some();
    if !ready {
        eprintln!("skipped: needs FLOWPILOT_TEST_DATABASE_URL and FLOWPILOT_TEST_REDIS_URL");
    }
    ready
}

/// A second instance on the first one's database and Redis prefix.
async fn second_instance(
    first: &TestApp,
    adjust: impl FnOnce(&mut flowpilot::config::Settings),
) -> TestApp {
    let mut settings = first.settings.clone();
    adjust(&mut settings);
    TestApp::start(settings).await
}

#[tokio::test]
async fn a_subscriber_on_one_instance_streams_an_execution_run_on_another() {
    if !multi_instance_backends() {
        return;
    }
    let a = TestApp::spawn_with(|settings| settings.workers = 1).await;
    let b = second_instance(&a, |settings| settings.workers = 0).await;
    let owner = a.user().await;
    let organization = a.organization(&owner, "Acme").await;
    let workflow = a
        .workflow(
            &owner,
            &organization,
            json!([
                { "id": "first", "kind": "DELAY", "config": { "ms": 50 } },
                { "id": "second", "kind": "TRANSFORM", "needs": ["first"], "config": { "output": "{{ input.word }}" } }
            ]),
        )
        .await;
    let id = a.run(&owner, &workflow, json!({ "word": "hello" })).await;

    let mut on_b = WsClient::connect_as(&b, Some(&owner.access_token)).await;
    on_b.subscribe_events("b", &id, 0).await;
    let events = on_b.events_until_complete("b").await;
    let seqs: Vec<i64> = events.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=7).collect::<Vec<_>>());
    assert_eq!(events.last().unwrap()["execution"]["output"], "hello");
}

#[tokio::test]
async fn executions_enqueued_through_two_instances_are_each_claimed_exactly_once() {
    if !multi_instance_backends() {
        return;
    }
    let a = TestApp::spawn_with(|settings| settings.workers = 4).await;
    let b = second_instance(&a, |settings| settings.workers = 4).await;
    let owner = a.user().await;
    let organization = a.organization(&owner, "Acme").await;
    let workflow: Uuid = a
        .workflow(
            &owner,
            &organization,
            json!([{ "id": "a", "kind": "DELAY", "config": { "ms": 5 } }]),
        )
        .await
        .parse()
        .unwrap();
    let user: Uuid = owner.user_id.parse().unwrap();
    let mut finished = a
        .state
        .bus
        .subscribe(Topic::Organization(organization.parse().unwrap()))
        .await;

    let mut queued = HashSet::new();
    for n in 0..100 {
        let via = if n % 2 == 0 { &a } else { &b };
        let found = flowpilot::executions::service::run_workflow(
            &via.state,
            user,
            workflow,
            json!({ "n": n }),
        )
        .await
        .unwrap();
        queued.insert(found.execution.id);
    }

    let mut succeeded = HashSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while succeeded.len() < queued.len() {
        let signal = tokio::time::timeout_at(deadline, finished.recv())
            .await
            .expect("all 100 finish within 60 s");
        match signal {
            Some(BusSignal::Message(BusMessage::ExecutionEvent(event))) if event.is_terminal() => {
                assert_eq!(event.execution.status, ExecutionStatus::Succeeded);
                succeeded.insert(event.execution.id);
            }
            Some(_) => {}
            None => panic!("the bus closed"),
        }
    }
    assert_eq!(succeeded, queued);
    let rows = execution::Entity::find()
        .filter(execution::Column::Id.is_in(queued.iter().copied()))
        .all(&a.state.db)
        .await
        .unwrap();
    assert!(
        rows.iter()
            .all(|row| row.attempt == 1 && row.lease_epoch == 1),
        "an execution was claimed twice"
    );
    assert!(
        rows.iter()
            .all(|row| row.status == ExecutionStatus::Succeeded)
    );
    drop(b);
}

#[tokio::test]
async fn a_wake_up_from_one_instance_starts_work_on_another_before_its_poll() {
    if !multi_instance_backends() {
        return;
    }
    // B would otherwise look for work only once a minute.
    let a = TestApp::spawn_with(|settings| settings.workers = 0).await;
    let b = second_instance(&a, |settings| {
        settings.workers = 1;
        settings.poll_interval_ms = 60_000;
    })
    .await;
    let owner = a.user().await;
    let organization = a.organization(&owner, "Acme").await;
    let workflow = a
        .workflow(
            &owner,
            &organization,
            json!([{ "id": "a", "kind": "TRANSFORM", "config": { "output": 1 } }]),
        )
        .await;
    // B's worker has looked once, found nothing, and now waits.
    let mut control = b.state.bus.subscribe(Topic::Control).await;
    let id = a.run(&owner, &workflow, json!({})).await;
    let wakeup = tokio::time::timeout(Duration::from_secs(10), control.recv())
        .await
        .expect("B hears the wake-up");
    assert!(matches!(
        wakeup,
        Some(BusSignal::Message(BusMessage::WorkerWakeup))
    ));

    let mut client = WsClient::connect_as(&a, Some(&owner.access_token)).await;
    client.subscribe_events("w", &id, 0).await;
    let events = tokio::time::timeout(Duration::from_secs(10), client.events_until_complete("w"))
        .await
        .expect("B runs the execution well before its 60 s poll");
    assert_eq!(events.last().unwrap()["executionStatus"], "SUCCEEDED");
}
