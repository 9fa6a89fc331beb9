//! Several instances on one PostgreSQL and one Redis behave as one. These
//! tests need `FLOWPILOT_TEST_DATABASE_URL` and `FLOWPILOT_TEST_REDIS_URL`
//! (CI sets both); without them they return at once.

use std::collections::HashSet;
use std::time::Duration;

use entity::execution;
use entity::status::ExecutionStatus;
use flowpilot::events::{BusMessage, BusSignal, Topic};
use flowpilot::orgs::principal::Principal;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::json;
use uuid::Uuid;

use crate::support::require_multi_instance_backends;
use crate::support::ws::WsClient;
use crate::support::{TestApp, run_request};

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
#[ignore = "needs PostgreSQL and Redis"]
async fn a_subscriber_on_one_instance_streams_an_execution_run_on_another() {
    require_multi_instance_backends();
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
#[ignore = "needs PostgreSQL and Redis"]
async fn executions_enqueued_through_two_instances_are_each_claimed_exactly_once() {
    require_multi_instance_backends();
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
    let user = Principal::User(owner.user_id.parse().unwrap());
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
            run_request(workflow, json!({ "n": n })),
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
#[ignore = "needs PostgreSQL and Redis"]
async fn a_wake_up_from_one_instance_starts_work_on_another_before_its_poll() {
    require_multi_instance_backends();
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

/// A Redis server of this test's own, so it can be cut off and restarted
/// without touching other tests. Stopped when dropped.
pub(crate) struct PrivateRedis {
    port: u16,
    process: Option<std::process::Child>,
}

impl PrivateRedis {
    /// Starts `redis-server` on a free port, or `None` when it is not installed.
    pub(crate) async fn start() -> Option<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let mut redis = Self {
            port,
            process: None,
        };
        redis.launch().await?;
        Some(redis)
    }

    pub(crate) async fn launch(&mut self) -> Option<()> {
        let process = std::process::Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .ok()?;
        self.process = Some(process);
        let client = redis::Client::open(self.url()).ok()?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::time::Instant::now() < deadline {
            if let Ok(mut connection) = client.get_multiplexed_async_connection().await
                && redis::cmd("PING")
                    .query_async::<String>(&mut connection)
                    .await
                    .is_ok()
            {
                return Some(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub(crate) fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            let _ = process.kill();
            let _ = process.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `/health/cache`'s `redis` field, polled until it reads `expected`.
pub(crate) async fn await_redis_health(app: &TestApp, expected: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let body: serde_json::Value = app.get("/health/cache").await.json().await.unwrap();
        if body["redis"] == expected {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/health/cache never said {expected}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
#[ignore = "needs a redis-server binary"]
async fn events_published_while_redis_is_down_reach_subscribers_after_it_returns() {
    let mut redis = PrivateRedis::start()
        .await
        .expect("needs a redis-server binary");
    let app = TestApp::spawn_with(|settings| {
        settings.redis_url = Some(redis.url());
        settings.workers = 1;
    })
    .await;
    let owner = app.user().await;
    let organization = app.organization(&owner, "Acme").await;
    let workflow = app
        .workflow(
            &owner,
            &organization,
            json!([
                { "id": "wait", "kind": "DELAY", "config": { "ms": 300 } },
                { "id": "done", "kind": "TRANSFORM", "needs": ["wait"], "config": { "output": "done" } }
            ]),
        )
        .await;
    let id = app.run(&owner, &workflow, json!({})).await;
    let mut client = WsClient::connect_as(&app, Some(&owner.access_token)).await;
    client.subscribe_events("s", &id, 0).await;
    let before = client.events_until_seq("s", 3).await;

    // Redis goes away; the execution finishes meanwhile, its last events
    // published into the void.
    redis.stop();
    app.await_finished(&id).await;

    // When Redis is back, the subscriber is told to refill from the log.
    redis
        .launch()
        .await
        .expect("redis restarts on the same port");
    let after = client.events_until_complete("s").await;
    let seqs: Vec<i64> = before
        .iter()
        .chain(&after)
        .map(|e| e["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(
        seqs,
        (1..=7).collect::<Vec<_>>(),
        "a gap or a duplicate across the outage"
    );
    await_redis_health(&app, "connected").await;
}

#[tokio::test]
#[ignore = "needs a redis-server binary"]
async fn health_cache_follows_redis_down_and_back() {
    let mut redis = PrivateRedis::start()
        .await
        .expect("needs a redis-server binary");
    let app = TestApp::spawn_with(|settings| settings.redis_url = Some(redis.url())).await;
    await_redis_health(&app, "connected").await;

    redis.stop();
    let response = app.get("/health/cache").await;
    assert_eq!(response.status(), 503);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(
        body["redis"] == "down" || body["redis"] == "reconnecting",
        "{body}"
    );
    // The API itself keeps answering without Redis.
    let session = app.user().await;
    assert!(!session.access_token.is_empty());

    redis
        .launch()
        .await
        .expect("redis restarts on the same port");
    await_redis_health(&app, "connected").await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL and Redis"]
async fn a_cancel_through_one_instance_stops_the_execution_running_on_another() {
    require_multi_instance_backends();
    let a = TestApp::spawn_with(|settings| {
        settings.workers = 1;
        // The worker holds on to a long DELAY instead of parking it.
        settings.park_after_ms = 3_600_000;
    })
    .await;
    let b = second_instance(&a, |settings| settings.workers = 0).await;
    let owner = a.user().await;
    let organization = a.organization(&owner, "Acme").await;
    let workflow = a
        .workflow(
            &owner,
            &organization,
            json!([{ "id": "wait", "kind": "DELAY", "config": { "ms": 60000 } }]),
        )
        .await;
    let id = a.run(&owner, &workflow, json!({})).await;
    let mut client = WsClient::connect_as(&b, Some(&owner.access_token)).await;
    client.subscribe_events("x", &id, 0).await;
    client.events_until_seq("x", 3).await;

    let cancelled = b
        .graphql_as(
            &owner.access_token,
            "mutation($input: CancelExecutionInput!) { cancelExecution(input: $input) { id } }",
            json!({ "input": { "executionId": id } }),
        )
        .await;
    cancelled.data();
    // A's heartbeat would take 10 s: this arrives over the control topic.
    let rest = tokio::time::timeout(Duration::from_secs(5), client.events_until_complete("x"))
        .await
        .expect("cancelled on A well before its heartbeat");
    assert_eq!(rest.last().unwrap()["kind"], "EXECUTION_CANCELLED");
}
