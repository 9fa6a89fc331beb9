//! A stopping server lets steps in flight finish within the grace period,
//! then hands the rest back so another instance resumes them at once.

use entity::status::{ExecutionStatus, StepStatus};
use entity::{execution, execution_event, step_run};
use flowpilot::egress::PrivateAccess;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use serde_json::json;
use uuid::Uuid;

use crate::support::target::Target;
use crate::support::{Session, TestApp};

/// A server allowed to call the target, with `grace_ms` to stop, running a
/// workflow of a slow HTTP call then a TRANSFORM that needs it.
async fn slow_call_in_flight(grace_ms: u64, call_ms: u64) -> (TestApp, Target, Session, String) {
    let target = Target::start().await;
    let app = TestApp::spawn_with(|settings| {
        settings.http_allow_private = PrivateAccess::All;
        settings.shutdown_grace_ms = grace_ms;
        settings.workers = 1;
    })
    .await;
    let owner = app.user().await;
    let organization = app.organization(&owner, "Acme").await;
    let steps = json!([
        { "id": "call", "kind": "HTTP", "config": { "url": target.url(&format!("/slow/{call_ms}")) } },
        { "id": "after", "kind": "TRANSFORM", "needs": ["call"],
          "config": { "output": "{{ steps.call.output.body.slept }}" } }
    ]);
    let workflow = app.workflow(&owner, &organization, steps).await;
    let id = app.run(&owner, &workflow, json!({})).await;
    target.wait_for(&format!("/slow/{call_ms}")).await;
    (app, target, owner, id)
}

async fn step_statuses(app: &TestApp, id: Uuid) -> Vec<(String, StepStatus)> {
    step_run::Entity::find()
        .filter(step_run::Column::ExecutionId.eq(id))
        .order_by_asc(step_run::Column::Position)
        .all(&app.state.db)
        .await
        .unwrap()
        .into_iter()
        .map(|s| (s.step_id, s.status))
        .collect()
}

async fn event_kinds(app: &TestApp, id: Uuid) -> Vec<String> {
    execution_event::Entity::find()
        .filter(execution_event::Column::ExecutionId.eq(id))
        .order_by_asc(execution_event::Column::Seq)
        .all(&app.state.db)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect()
}

#[tokio::test]
async fn a_stopping_server_lets_a_step_in_flight_finish_and_hands_back_the_rest() {
    let (mut app, target, owner, id) = slow_call_in_flight(10_000, 700).await;
    // Stop while the call is in flight, with no worker in the next server.
    app.settings.workers = 0;
    let app = app.restart().await;
    let uuid: Uuid = id.parse().unwrap();
    assert_eq!(
        step_statuses(&app, uuid).await,
        [
            ("call".to_owned(), StepStatus::Succeeded),
            ("after".to_owned(), StepStatus::Pending)
        ],
        "the call finished within the grace period and nothing new started"
    );
    let row = execution::Entity::find_by_id(uuid)
        .one(&app.state.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (row.status, row.lease_owner),
        (ExecutionStatus::Queued, None)
    );
    assert_eq!(
        event_kinds(&app, uuid).await.last().unwrap(),
        "EXECUTION_REQUEUED"
    );

    // The next server with a worker resumes at once, without calling again.
    let mut app = app;
    app.settings.workers = 1;
    let app = app.restart().await;
    let execution = app.finished_execution(&owner, &id).await;
    assert_eq!(execution["status"], "SUCCEEDED", "{execution}");
    assert_eq!(target.received().len(), 1, "the call ran exactly once");
}

#[tokio::test]
async fn a_step_still_running_when_the_grace_period_ends_runs_again_with_the_same_key() {
    let (mut app, target, owner, id) = slow_call_in_flight(200, 1500).await;
    app.settings.workers = 0;
    let app = app.restart().await;
    let uuid: Uuid = id.parse().unwrap();
    assert_eq!(
        step_statuses(&app, uuid).await,
        [
            ("call".to_owned(), StepStatus::Retrying),
            ("after".to_owned(), StepStatus::Pending)
        ]
    );

    let mut app = app;
    app.settings.workers = 1;
    let app = app.restart().await;
    let execution = app.finished_execution(&owner, &id).await;
    assert_eq!(execution["status"], "SUCCEEDED", "{execution}");
    let keys: Vec<String> = target
        .received()
        .into_iter()
        .map(|r| r.headers["idempotency-key"].clone())
        .collect();
    let key = format!("{id}:call");
    assert_eq!(
        keys,
        [key.clone(), key],
        "the call ran again with the same key"
    );
}
