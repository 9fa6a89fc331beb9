//! The engine's mechanisms driven directly: claim order, exactly-once
//! claims, lease fencing, the transition function's guard, hand-back at
//! shutdown and recovery of a lost worker's execution.

use std::collections::HashSet;
use std::time::Duration;

use chrono::Utc;
use entity::status::{ExecutionStatus, StepStatus};
use entity::{execution, execution_event, step_run};
use flowpilot::engine::journal::{self, EngineError, ExecutionUpdate, StepUpdate};
use flowpilot::engine::state::ExecutionChange;
use flowpilot::orgs::principal::Principal;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder};
use serde_json::json;
use uuid::Uuid;

use crate::support::ws::WsClient;
use crate::support::{Session, TestApp, run_request};

const LEASE: Duration = Duration::from_secs(30);

/// A server without workers (and a reaper that only runs when a test
/// calls it), a signed-in owner and a workflow `a -> b`.
async fn idle_app() -> (TestApp, Session, Uuid) {
    let app = TestApp::spawn_with(|settings| {
        settings.workers = 0;
        settings.reaper_interval_ms = 3_600_000;
    })
    .await;
    let owner = app.user().await;
    let organization = app.organization(&owner, "Acme").await;
    let workflow = app
        .workflow(
            &owner,
            &organization,
            json!([
                { "id": "a", "kind": "TRANSFORM", "config": { "output": "{{ input.n }}" } },
                { "id": "b", "kind": "TRANSFORM", "needs": ["a"], "config": { "output": "b got {{ steps.a.output }}" } }
            ]),
        )
        .await;
    (app, owner, workflow.parse().unwrap())
}

async fn enqueue(app: &TestApp, owner: &Session, workflow: Uuid) -> Uuid {
    let user = Principal::User(owner.user_id.parse().unwrap());
    flowpilot::executions::service::run_workflow(
        &app.state,
        user,
        run_request(workflow, json!({ "n": 1 })),
    )
    .await
    .unwrap()
    .execution
    .id
}

/// The run of step `a` of `execution_id`.
async fn step_a(app: &TestApp, execution_id: Uuid) -> step_run::Model {
    step_run::Entity::find()
        .filter(step_run::Column::ExecutionId.eq(execution_id))
        .filter(step_run::Column::StepId.eq("a"))
        .one(&app.state.db)
        .await
        .unwrap()
        .unwrap()
}

async fn event_count(app: &TestApp, execution_id: Uuid) -> u64 {
    execution_event::Entity::find()
        .filter(execution_event::Column::ExecutionId.eq(execution_id))
        .count(&app.state.db)
        .await
        .unwrap()
}

#[tokio::test]
async fn claims_take_the_highest_priority_then_the_oldest_due_execution() {
    let (app, owner, workflow) = idle_app().await;
    let oldest = enqueue(&app, &owner, workflow).await;
    let not_due = enqueue(&app, &owner, workflow).await;
    let urgent = enqueue(&app, &owner, workflow).await;
    execution::Entity::update_many()
        .col_expr(
            execution::Column::RunAfter,
            Expr::value(Utc::now() + chrono::Duration::hours(1)),
        )
        .filter(execution::Column::Id.eq(not_due))
        .exec(&app.state.db)
        .await
        .unwrap();
    execution::Entity::update_many()
        .col_expr(execution::Column::Priority, Expr::value(10))
        .filter(execution::Column::Id.eq(urgent))
        .exec(&app.state.db)
        .await
        .unwrap();

    let first = journal::claim_next_execution(&app.state, "w1", LEASE)
        .await
        .unwrap()
        .unwrap();
    let second = journal::claim_next_execution(&app.state, "w1", LEASE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((first.execution.id, second.execution.id), (urgent, oldest));
    assert!(
        journal::claim_next_execution(&app.state, "w1", LEASE)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(first.execution.status, ExecutionStatus::Running);
    assert_eq!(first.lease.epoch, 1);
    assert_eq!(first.execution.last_event_seq, 2);
}

#[tokio::test]
async fn concurrent_claimers_take_each_execution_exactly_once() {
    let (app, owner, workflow) = idle_app().await;
    let mut queued = HashSet::new();
    for _ in 0..20 {
        queued.insert(enqueue(&app, &owner, workflow).await);
    }
    let claimers = (0..6).map(|n| {
        let state = app.state.clone();
        tokio::spawn(async move {
            let mut claimed = Vec::new();
            while let Some(c) = journal::claim_next_execution(&state, &format!("w{n}"), LEASE)
                .await
                .unwrap()
            {
                claimed.push(c.execution.id);
            }
            claimed
        })
    });
    let mut all = Vec::new();
    for claimer in claimers {
        all.extend(claimer.await.unwrap());
    }
    assert_eq!(
        all.len(),
        20,
        "an execution was claimed twice or not at all"
    );
    assert_eq!(all.into_iter().collect::<HashSet<_>>(), queued);
}

#[tokio::test]
async fn one_claim_takes_several_executions_but_no_more_of_a_workflow_than_its_limit_leaves_room_for()
 {
    let (app, owner, workflow) = idle_app().await;
    let mut queued = HashSet::new();
    for _ in 0..4 {
        queued.insert(enqueue(&app, &owner, workflow).await);
    }
    let limit = |max: Option<i32>| {
        entity::workflow::Entity::update_many()
            .col_expr(entity::workflow::Column::MaxConcurrency, Expr::value(max))
            .filter(entity::workflow::Column::Id.eq(workflow))
            .exec(&app.state.db)
    };
    limit(Some(2)).await.unwrap();

    let first = journal::claim_executions(&app.state, "w", LEASE, 8)
        .await
        .unwrap();
    assert_eq!(first.len(), 2, "{first:?}");
    assert!(
        journal::claim_executions(&app.state, "w", LEASE, 8)
            .await
            .unwrap()
            .is_empty(),
        "the limit is full"
    );
    limit(None).await.unwrap();
    let rest = journal::claim_executions(&app.state, "w", LEASE, 8)
        .await
        .unwrap();
    assert_eq!(rest.len(), 2, "{rest:?}");

    let claimed: HashSet<Uuid> = first.iter().chain(&rest).map(|c| c.execution.id).collect();
    assert_eq!(claimed, queued);
    for claim in first.iter().chain(&rest) {
        assert_eq!(claim.execution.status, ExecutionStatus::Running);
        assert_eq!(claim.lease.epoch, 1);
        assert_eq!(
            event_kinds(&app, claim.execution.id).await,
            ["EXECUTION_QUEUED", "EXECUTION_STARTED"]
        );
    }
}

#[tokio::test]
async fn a_claim_logs_each_start_with_the_execution_as_it_started_and_hands_over_its_step_runs() {
    let (app, owner, workflow) = idle_app().await;
    for _ in 0..3 {
        enqueue(&app, &owner, workflow).await;
    }
    let claimed = journal::claim_executions(&app.state, "w", LEASE, 8)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 3);
    for claim in &claimed {
        let row = execution::Entity::find_by_id(claim.execution.id)
            .one(&app.state.db)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(claim.execution, row);
        assert_eq!(row.last_event_seq, 2);
        assert!(row.started_at.is_some());
        let events = flowpilot::events::log::events_after(&app.state.db, row.id, 1)
            .await
            .unwrap();
        let [started] = <[_; 1]>::try_from(events).unwrap();
        let expected = flowpilot::events::log::ExecutionEventRecord::of_change(
            &row,
            flowpilot::events::log::EventKind::ExecutionStarted,
            None,
            started.occurred_at,
        );
        assert_eq!(started.execution, expected.execution);
        assert_eq!(
            (started.seq, started.kind, started.step),
            (2, expected.kind, None)
        );
        let mut steps: Vec<&str> = claim.steps.iter().map(|s| s.step_id.as_str()).collect();
        steps.sort_unstable();
        assert_eq!(steps, ["a", "b"]);
        assert!(claim.steps.iter().all(|s| s.execution_id == row.id));
    }
}

#[tokio::test]
async fn records_written_at_once_commit_only_where_their_lease_still_holds() {
    let (app, owner, workflow) = idle_app().await;
    for _ in 0..3 {
        enqueue(&app, &owner, workflow).await;
    }
    let claimed = journal::claim_executions(&app.state, "w", LEASE, 3)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 3);
    let ids: Vec<Uuid> = claimed.iter().map(|c| c.execution.id).collect();
    // The last one's lease is taken over before its worker writes.
    execution::Entity::update_many()
        .col_expr(execution::Column::LeaseEpoch, Expr::value(2))
        .filter(execution::Column::Id.eq(ids[2]))
        .exec(&app.state.db)
        .await
        .unwrap();
    let mut records = Vec::new();
    for claim in claimed {
        let step = step_a(&app, claim.execution.id).await;
        let mut record = journal::Record::new(claim.execution, claim.lease);
        record
            .change_step(
                &step,
                StepStatus::Running,
                StepUpdate::default(),
                Utc::now(),
            )
            .unwrap();
        records.push(record);
    }
    // The first writer leads; the two that arrive while it writes are
    // written together after it.
    let [mut a, mut b, mut c] = <[journal::Record; 3]>::try_from(records).unwrap();
    let (a, b, c) = tokio::join!(
        a.write(&app.state),
        b.write(&app.state),
        c.write(&app.state)
    );
    assert!(a.is_ok() && b.is_ok(), "{a:?} {b:?}");
    assert!(matches!(c, Err(EngineError::LeaseLost)), "{c:?}");

    for (id, started) in [(ids[0], true), (ids[1], true), (ids[2], false)] {
        let mut expected = vec!["EXECUTION_QUEUED", "EXECUTION_STARTED"];
        if started {
            expected.push("STEP_STARTED");
        }
        assert_eq!(event_kinds(&app, id).await, expected);
        let step = step_a(&app, id).await;
        let status = if started {
            StepStatus::Running
        } else {
            StepStatus::Pending
        };
        assert_eq!(step.status, status);
        let row = execution::Entity::find_by_id(id)
            .one(&app.state.db)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.last_event_seq, if started { 3 } else { 2 });
    }
}

#[tokio::test]
async fn a_worker_whose_lease_was_taken_over_writes_nothing() {
    let (app, owner, workflow) = idle_app().await;
    let id = enqueue(&app, &owner, workflow).await;
    let claimed = journal::claim_next_execution(&app.state, "old-worker", LEASE)
        .await
        .unwrap()
        .unwrap();
    // The execution is claimed again, even under the same worker id (as
    // after a requeue): only the epoch tells the two leases apart.
    execution::Entity::update_many()
        .col_expr(
            execution::Column::LeaseEpoch,
            Expr::value(claimed.lease.epoch + 1),
        )
        .filter(execution::Column::Id.eq(id))
        .exec(&app.state.db)
        .await
        .unwrap();
    let before = event_count(&app, id).await;

    let step = journal::change_step(
        &app.state,
        &claimed.lease,
        "a",
        StepStatus::Running,
        StepUpdate::default(),
    )
    .await;
    assert!(matches!(step, Err(EngineError::LeaseLost)), "{step:?}");
    let finish = journal::change_execution(
        &app.state,
        &claimed.lease,
        ExecutionChange::To(ExecutionStatus::Succeeded),
        ExecutionUpdate::default(),
    )
    .await;
    assert!(matches!(finish, Err(EngineError::LeaseLost)), "{finish:?}");
    assert!(matches!(
        journal::renew_lease(&app.state, &claimed.lease, LEASE).await,
        Err(EngineError::LeaseLost)
    ));

    assert_eq!(event_count(&app, id).await, before);
    let row = execution::Entity::find_by_id(id)
        .one(&app.state.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (row.status, row.last_event_seq),
        (ExecutionStatus::Running, 2)
    );
}

#[tokio::test]
async fn an_illegal_step_transition_is_refused_and_not_applied() {
    let (app, owner, workflow) = idle_app().await;
    let id = enqueue(&app, &owner, workflow).await;
    let claimed = journal::claim_next_execution(&app.state, "w", LEASE)
        .await
        .unwrap()
        .unwrap();
    let skipped_ahead = journal::change_step(
        &app.state,
        &claimed.lease,
        "a",
        StepStatus::Succeeded,
        StepUpdate::default(),
    )
    .await;
    assert!(
        matches!(skipped_ahead, Err(EngineError::Illegal(_))),
        "{skipped_ahead:?}"
    );
    let step = step_a(&app, id).await;
    assert_eq!(step.status, StepStatus::Pending);
    assert_eq!(event_count(&app, id).await, 2);
}

#[tokio::test]
async fn shutdown_hands_running_executions_back_to_the_queue() {
    let app = TestApp::spawn_with(|settings| {
        settings.workers = 1;
        // The worker holds on to a long DELAY instead of parking it.
        settings.park_after_ms = 3_600_000;
    })
    .await;
    let owner = app.user().await;
    let organization = app.organization(&owner, "Acme").await;
    let workflow = app
        .workflow(
            &owner,
            &organization,
            json!([
                { "id": "quick", "kind": "TRANSFORM", "config": { "output": 1 } },
                { "id": "wait", "kind": "DELAY", "needs": ["quick"], "config": { "ms": 600000 } }
            ]),
        )
        .await;
    let id = app.run(&owner, &workflow, json!({})).await;
    let mut client = WsClient::connect_as(&app, Some(&owner.access_token)).await;
    client.subscribe_events("s", &id, 0).await;
    // queued, started, quick started, quick succeeded, wait started
    let seen = client.events_until_seq("s", 5).await;
    assert_eq!(seen.last().unwrap()["stepId"], "wait");

    let mut app = app;
    app.settings.workers = 0;
    let app = app.restart().await;
    let id: Uuid = id.parse().unwrap();
    let row = execution::Entity::find_by_id(id)
        .one(&app.state.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (row.status, row.lease_owner),
        (ExecutionStatus::Queued, None)
    );
    let kinds = event_kinds(&app, id).await;
    assert_eq!(
        kinds[5..],
        ["STEP_RETRYING", "EXECUTION_REQUEUED"],
        "{kinds:?}"
    );
    let steps = step_run::Entity::find()
        .filter(step_run::Column::ExecutionId.eq(id))
        .all(&app.state.db)
        .await
        .unwrap();
    let status_of = |step: &str| steps.iter().find(|s| s.step_id == step).map(|s| s.status);
    assert_eq!(status_of("quick"), Some(StepStatus::Succeeded));
    assert_eq!(status_of("wait"), Some(StepStatus::Retrying));
}

#[tokio::test]
async fn the_reaper_requeues_a_lost_workers_execution_and_it_resumes_where_it_stopped() {
    let (app, owner, workflow) = idle_app().await;
    let id = enqueue(&app, &owner, workflow).await;
    let dead = journal::claim_next_execution(&app.state, "dead-worker", LEASE)
        .await
        .unwrap()
        .unwrap();
    let lease = &dead.lease;
    journal::change_step(
        &app.state,
        lease,
        "a",
        StepStatus::Running,
        StepUpdate::default(),
    )
    .await
    .unwrap();
    let output = StepUpdate {
        output: Some(json!(1)),
        ..StepUpdate::default()
    };
    journal::change_step(&app.state, lease, "a", StepStatus::Succeeded, output)
        .await
        .unwrap();
    journal::change_step(
        &app.state,
        lease,
        "b",
        StepStatus::Running,
        StepUpdate::default(),
    )
    .await
    .unwrap();

    // The dead worker never renews. Before its lease ends nothing happens;
    // after, the reaper requeues the execution.
    assert_eq!(
        flowpilot::engine::reaper::reap_once(&app.state)
            .await
            .unwrap(),
        0
    );
    app.clock.advance(chrono::Duration::seconds(31));
    assert_eq!(
        flowpilot::engine::reaper::reap_once(&app.state)
            .await
            .unwrap(),
        1
    );
    let late_write = journal::change_step(
        &app.state,
        lease,
        "b",
        StepStatus::Succeeded,
        StepUpdate::default(),
    )
    .await;
    assert!(
        matches!(late_write, Err(EngineError::LeaseLost)),
        "{late_write:?}"
    );

    let mut app = app;
    app.settings.workers = 1;
    let app = app.restart().await;
    let execution = app.finished_execution(&owner, &id.to_string()).await;
    assert_eq!(execution["status"], "SUCCEEDED");
    assert_eq!(execution["output"], "b got 1");
    assert_eq!(
        execution["steps"][0]["attempt"], 1,
        "a finished step never runs again"
    );
    assert_eq!(
        execution["steps"][1]["attempt"], 2,
        "the interrupted step ran again"
    );
    let kinds = event_kinds(&app, id).await;
    assert_eq!(
        kinds[5..7],
        ["STEP_RETRYING", "EXECUTION_REQUEUED"],
        "{kinds:?}"
    );
}

#[tokio::test]
async fn a_heartbeat_keeps_a_long_steps_lease_alive() {
    let app = TestApp::spawn_with(|settings| {
        settings.workers = 1;
        settings.lease_secs = 3;
        settings.reaper_interval_ms = 100;
    })
    .await;
    let owner = app.user().await;
    let organization = app.organization(&owner, "Acme").await;
    let workflow = app
        .workflow(
            &owner,
            &organization,
            json!([{ "id": "long", "kind": "DELAY", "config": { "ms": 4500 } }]),
        )
        .await;
    let id = app.run(&owner, &workflow, json!({})).await;
    let execution = app.finished_execution(&owner, &id).await;
    assert_eq!(execution["status"], "SUCCEEDED");
    assert_eq!(execution["steps"][0]["attempt"], 1);
    let kinds = event_kinds(&app, id.parse().unwrap()).await;
    assert!(
        !kinds.iter().any(|k| k == "EXECUTION_REQUEUED"),
        "the lease lapsed: {kinds:?}"
    );
}

async fn event_kinds(app: &TestApp, execution_id: Uuid) -> Vec<String> {
    execution_event::Entity::find()
        .filter(execution_event::Column::ExecutionId.eq(execution_id))
        .order_by_asc(execution_event::Column::Seq)
        .all(&app.state.db)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect()
}
