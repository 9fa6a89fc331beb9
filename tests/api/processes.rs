//! Real `flowpilot` processes on one PostgreSQL (and Redis): several share
//! the queue without claiming anything twice or overrunning a limit, and
//! one killed with SIGKILL mid-run loses nothing. These need
//! `FLOWPILOT_TEST_DATABASE_URL` and `FLOWPILOT_TEST_REDIS_URL`.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use entity::status::ExecutionStatus;
use entity::{execution, execution_event};
use flowpilot::config::Settings;
use flowpilot::events::{BusMessage, BusSignal, Topic};
use flowpilot::orgs::principal::Principal;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use serde_json::json;
use uuid::Uuid;

use crate::support::require_multi_instance_backends;
use crate::support::spawned::serve_command;
use crate::support::{TestApp, run_request};

/// A `flowpilot serve` process on the test's database and Redis prefix,
/// killed when dropped.
fn server_process(settings: &Settings, extra: &[(&str, &str)]) -> tokio::process::Child {
    let mut command = serve_command(settings, 0);
    for (name, value) in extra {
        command.env(name, value);
    }
    command.spawn().expect("flowpilot serve starts")
}

/// Waits (on the bus) until every execution in `ids` has ended.
async fn await_all_finished(
    app: &TestApp,
    organization: Uuid,
    ids: &HashSet<Uuid>,
    within: Duration,
    subscription: &mut flowpilot::events::bus::Subscription,
) {
    let _ = organization;
    let deadline = tokio::time::Instant::now() + within;
    let mut finished = HashSet::new();
    // Some may have ended before we listened: count those from the database.
    for row in execution::Entity::find()
        .filter(execution::Column::Id.is_in(ids.iter().copied()))
        .all(&app.state.db)
        .await
        .unwrap()
    {
        if row.status.is_terminal() {
            finished.insert(row.id);
        }
    }
    while finished.len() < ids.len() {
        match tokio::time::timeout_at(deadline, subscription.recv())
            .await
            .expect("all executions finish in time")
        {
            Some(BusSignal::Message(BusMessage::ExecutionEvent(event))) if event.is_terminal() => {
                finished.insert(event.execution.id);
            }
            Some(BusSignal::Lagged | BusSignal::Reconnected) => {
                for row in execution::Entity::find()
                    .filter(execution::Column::Id.is_in(ids.iter().copied()))
                    .all(&app.state.db)
                    .await
                    .unwrap()
                {
                    if row.status.is_terminal() {
                        finished.insert(row.id);
                    }
                }
            }
            Some(_) => {}
            None => panic!("the bus closed"),
        }
    }
}

#[tokio::test]
#[ignore = "needs PostgreSQL and Redis"]
async fn two_server_processes_share_200_executions_without_a_double_claim_or_an_overrun_limit() {
    require_multi_instance_backends();
    let app = TestApp::spawn_with(|settings| settings.workers = 0).await;
    let owner = app.user().await;
    let organization = app.organization(&owner, "Acme").await;
    let response = app
        .graphql_as(
            &owner.access_token,
            "mutation($input: CreateWorkflowInput!) { createWorkflow(input: $input) { id } }",
            json!({ "input": {
                "organizationId": organization, "name": "limited", "maxConcurrency": 3,
                "definition": { "steps": [{ "id": "a", "kind": "DELAY", "config": { "ms": 10 } }] }
            } }),
        )
        .await;
    let workflow: Uuid = response.data()["createWorkflow"]["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let organization: Uuid = organization.parse().unwrap();
    let mut events = app
        .state
        .bus
        .subscribe(Topic::Organization(organization))
        .await;
    let user = Principal::User(owner.user_id.parse().unwrap());
    let mut ids = HashSet::new();
    for n in 0..200 {
        let run = flowpilot::executions::service::run_workflow(
            &app.state,
            user,
            run_request(workflow, json!({ "n": n })),
        )
        .await
        .unwrap();
        ids.insert(run.execution.id);
    }

    let _a = server_process(
        &app.settings,
        &[
            ("FLOWPILOT_WORKERS", "4"),
            ("FLOWPILOT_POLL_INTERVAL_MS", "100"),
        ],
    );
    let _b = server_process(
        &app.settings,
        &[
            ("FLOWPILOT_WORKERS", "4"),
            ("FLOWPILOT_POLL_INTERVAL_MS", "100"),
        ],
    );
    await_all_finished(
        &app,
        organization,
        &ids,
        Duration::from_secs(120),
        &mut events,
    )
    .await;

    let rows = execution::Entity::find()
        .filter(execution::Column::Id.is_in(ids.iter().copied()))
        .all(&app.state.db)
        .await
        .unwrap();
    assert!(rows.iter().all(|r| r.status == ExecutionStatus::Succeeded));
    assert!(
        rows.iter().all(|r| r.attempt == 1 && r.lease_epoch == 1),
        "an execution was claimed twice"
    );
    // Sweep the run spans: never more than three at once.
    let mut edges: Vec<(chrono::DateTime<chrono::Utc>, i32)> = Vec::new();
    for row in &rows {
        edges.push((row.started_at.unwrap(), 1));
        edges.push((row.finished_at.unwrap(), -1));
    }
    edges.sort_by_key(|(at, delta)| (*at, *delta));
    let (mut running, mut most) = (0, 0);
    for (_, delta) in edges {
        running += delta;
        most = most.max(running);
    }
    assert!(
        most <= 3,
        "{most} executions ran at once under a limit of 3"
    );
    assert!(
        most >= 2,
        "the two processes never ran executions side by side"
    );
}

#[tokio::test]
#[ignore = "needs PostgreSQL and Redis"]
async fn a_server_killed_mid_run_loses_nothing_and_another_finishes_every_execution() {
    require_multi_instance_backends();
    let app = TestApp::spawn_with(|settings| settings.workers = 0).await;
    let owner = app.user().await;
    let organization = app.organization(&owner, "Acme").await;
    let workflow: Uuid = app
        .workflow(
            &owner,
            &organization,
            json!([
                { "id": "prepare", "kind": "TRANSFORM", "config": { "output": "{{ input.n }}" } },
                { "id": "wait", "kind": "DELAY", "needs": ["prepare"], "config": { "ms": 300 } },
                { "id": "report", "kind": "TRANSFORM", "needs": ["wait"], "config": { "output": "n={{ steps.prepare.output }}" } }
            ]),
        )
        .await
        .parse()
        .unwrap();
    let organization: Uuid = organization.parse().unwrap();
    let mut events = app
        .state
        .bus
        .subscribe(Topic::Organization(organization))
        .await;
    let user = Principal::User(owner.user_id.parse().unwrap());
    let mut ids = HashSet::new();
    for n in 0..50 {
        let run = flowpilot::executions::service::run_workflow(
            &app.state,
            user,
            run_request(workflow, json!({ "n": n })),
        )
        .await
        .unwrap();
        ids.insert(run.execution.id);
    }
    let quick = [
        ("FLOWPILOT_WORKERS", "4"),
        ("FLOWPILOT_LEASE_SECS", "3"),
        ("FLOWPILOT_REAPER_INTERVAL_MS", "200"),
        ("FLOWPILOT_POLL_INTERVAL_MS", "100"),
    ];

    let mut doomed = server_process(&app.settings, &quick);
    // Let it get well into the batch: some finished, some mid-run.
    let mut finished = 0;
    while finished < 10 {
        match tokio::time::timeout(Duration::from_secs(60), events.recv())
            .await
            .expect("the first server makes progress")
        {
            Some(BusSignal::Message(BusMessage::ExecutionEvent(event))) if event.is_terminal() => {
                finished += 1
            }
            Some(_) => {}
            None => panic!("the bus closed"),
        }
    }
    doomed.start_kill().expect("SIGKILL");
    doomed.wait().await.unwrap();

    let _survivor = server_process(&app.settings, &quick);
    await_all_finished(
        &app,
        organization,
        &ids,
        Duration::from_secs(120),
        &mut events,
    )
    .await;

    let rows = execution::Entity::find()
        .filter(execution::Column::Id.is_in(ids.iter().copied()))
        .all(&app.state.db)
        .await
        .unwrap();
    assert_eq!(rows.len(), 50);
    assert!(
        rows.iter().all(|r| r.status == ExecutionStatus::Succeeded),
        "not all 50 succeeded"
    );
    assert!(
        rows.iter().any(|r| r.attempt > 1),
        "the kill interrupted no execution"
    );
    let all_events = execution_event::Entity::find()
        .filter(execution_event::Column::ExecutionId.is_in(ids.iter().copied()))
        .order_by_asc(execution_event::Column::ExecutionId)
        .order_by_asc(execution_event::Column::Seq)
        .all(&app.state.db)
        .await
        .unwrap();
    let mut by_execution: HashMap<Uuid, Vec<&execution_event::Model>> = HashMap::new();
    for event in &all_events {
        by_execution
            .entry(event.execution_id)
            .or_default()
            .push(event);
    }
    for (id, log) in by_execution {
        let seqs: Vec<i32> = log.iter().map(|e| e.seq).collect();
        assert_eq!(
            seqs,
            (1..=seqs.len() as i32).collect::<Vec<_>>(),
            "a gap in the events of {id}"
        );
        let mut succeeded: HashMap<String, usize> = HashMap::new();
        let mut started_after_success = Vec::new();
        for event in &log {
            let step = event.payload["step"]["step_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            match event.kind.as_str() {
                "STEP_SUCCEEDED" => *succeeded.entry(step).or_default() += 1,
                "STEP_STARTED" if succeeded.contains_key(&step) => started_after_success.push(step),
                _ => {}
            }
        }
        assert!(
            succeeded.values().all(|n| *n == 1),
            "a step of {id} succeeded twice: {succeeded:?}"
        );
        assert!(
            started_after_success.is_empty(),
            "a completed step of {id} ran again: {started_after_success:?}"
        );
    }
}
