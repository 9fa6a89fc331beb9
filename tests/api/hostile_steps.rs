//! Hostile step configs and outside services, run by a spawned `flowpilot
//! serve`: templates that loop or allocate without end, results too large
//! or unstorable, credentials on redirects, and executions that can never
//! progress. Each attempt fails with a clear error while the API answers,
//! and nothing is left running.

use std::time::Duration;

use entity::status::{ExecutionStatus, StepStatus};
use entity::{execution, step_run};
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter, Set};
use serde_json::{Value, json};

use crate::support::spawned::Spawned;
use crate::support::target::Target;
use crate::support::{Session, TestApp};

/// An app whose own engine is off, so the spawned server runs everything.
async fn app() -> TestApp {
    TestApp::spawn_with(|s| s.run_engine = false).await
}

/// A user who owns an organization.
async fn owner(app: &TestApp) -> (Session, String) {
    let owner = app.user().await;
    let organization = app.organization(&owner, "Hostile Org").await;
    (owner, organization)
}

/// Runs a one-workflow definition of `steps` and waits for its end.
async fn run_to_end(app: &TestApp, owner: &(Session, String), steps: Value) -> execution::Model {
    let workflow = app.workflow(&owner.0, &owner.1, steps).await;
    let id = app.run(&owner.0, &workflow, json!({})).await;
    await_end(app, &id).await
}

/// Waits (reading the database) until the execution has ended.
async fn await_end(app: &TestApp, id: &str) -> execution::Model {
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let row = app.execution_row(id).await;
            if row.status.is_terminal() {
                return row;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("execution {id} did not end"))
}

async fn steps_of(app: &TestApp, execution_id: uuid::Uuid) -> Vec<step_run::Model> {
    step_run::Entity::find()
        .filter(step_run::Column::ExecutionId.eq(execution_id))
        .all(&app.state.db)
        .await
        .unwrap()
}

/// The most steps of the execution that were running at one moment, from
/// their start and finish times.
async fn most_running_at_once(app: &TestApp, execution_id: uuid::Uuid) -> usize {
    let spans: Vec<_> = steps_of(app, execution_id)
        .await
        .into_iter()
        .map(|s| (s.started_at.unwrap(), s.finished_at.unwrap()))
        .collect();
    spans
        .iter()
        .map(|(start, _)| {
            spans
                .iter()
                .filter(|(s, f)| s <= start && start < f)
                .count()
        })
        .max()
        .unwrap_or(0)
}

const NESTED_LOOPS: &str = "{% for a in range(1000) %}{% for b in range(1000) %}{% for c in range(1000) %}x{% endfor %}{% endfor %}{% endfor %}";

#[tokio::test]
async fn a_template_that_loops_without_end_fails_on_fuel_while_the_api_answers() {
    let app = app().await;
    let owner = owner(&app).await;
    let server = Spawned::start(&app, &[]).await;
    let steps =
        json!([{ "id": "loop", "kind": "TRANSFORM", "config": { "output": NESTED_LOOPS } }]);
    let workflow = app.workflow(&owner.0, &owner.1, steps).await;
    let mut runs = Vec::new();
    for _ in 0..4 {
        runs.push(app.run(&owner.0, &workflow, json!({})).await);
    }
    assert!(server.health().await);
    let cheap = server.graphql(None, "{ __typename }", json!({})).await;
    assert_eq!(cheap.data()["__typename"], "Query");
    for id in runs {
        let row = await_end(&app, &id).await;
        assert_eq!(row.status, ExecutionStatus::Failed);
        let error = row.error.unwrap_or_default();
        assert!(error.contains("FLOWPILOT_TEMPLATE_FUEL"), "{error}");
    }
}

#[tokio::test]
async fn a_step_timeout_and_a_cancel_reach_an_attempt_while_it_renders() {
    let app = app().await;
    let owner = owner(&app).await;
    // Fuel for far longer than the test waits.
    let server = Spawned::start(&app, &[("FLOWPILOT_TEMPLATE_FUEL", "200000000")]).await;
    let timed = json!([{ "id": "loop", "kind": "TRANSFORM", "timeoutMs": 300,
        "config": { "output": NESTED_LOOPS } }]);
    let row = run_to_end(&app, &owner, timed).await;
    assert_eq!(row.status, ExecutionStatus::Failed);
    assert!(
        row.error
            .as_deref()
            .unwrap_or_default()
            .contains("timed out after 300 ms"),
        "{:?}",
        row.error
    );
    let untimed =
        json!([{ "id": "loop", "kind": "TRANSFORM", "config": { "output": NESTED_LOOPS } }]);
    let workflow = app.workflow(&owner.0, &owner.1, untimed).await;
    let id = app.run(&owner.0, &workflow, json!({})).await;
    tokio::time::timeout(Duration::from_secs(30), async {
        while app.execution_row(&id).await.status != ExecutionStatus::Running {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the execution starts");
    let cancelled = server
        .graphql(
            Some(&owner.0.access_token),
            "mutation($input: CancelExecutionInput!) { cancelExecution(input: $input) { id } }",
            json!({ "input": { "executionId": id } }),
        )
        .await;
    cancelled.data();
    assert_eq!(
        await_end(&app, &id).await.status,
        ExecutionStatus::Cancelled
    );
    assert!(server.health().await);
    // Both abandoned renderings were killed, not left to burn their fuel.
    tokio::time::timeout(Duration::from_secs(10), async {
        while server.render_workers() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("no rendering process is left running");
}

#[tokio::test]
async fn oversized_results_fail_their_attempt_and_memory_stays_bounded() {
    let app = app().await;
    let owner = owner(&app).await;
    let server = Spawned::start(&app, &[]).await;
    // Warm up: one ordinary run, so the baseline holds what any run needs.
    let ordinary =
        json!([{ "id": "a", "kind": "TRANSFORM", "config": { "output": "{{ 1 + 1 }}" } }]);
    assert_eq!(
        run_to_end(&app, &owner, ordinary).await.status,
        ExecutionStatus::Succeeded
    );
    let before = server.peak_memory_kib();
    let definitions = [
        json!([{ "id": "big", "kind": "TRANSFORM", "config": { "output": "{{ 'a' * 100000000 }}" } }]),
        json!([{ "id": "big", "kind": "TRANSFORM", "config": { "output": "x{{ 'a' * 100000000 }}" } }]),
        json!([{ "id": "big", "kind": "FAIL", "config": { "message": "{{ 'a' * 100000000 }}" } }]),
        json!([{ "id": "big", "kind": "FAIL", "config": { "message": "{{ 'ab' * 600000 }}" } }]),
    ];
    for steps in definitions {
        for _ in 0..2 {
            let row = run_to_end(&app, &owner, steps.clone()).await;
            assert_eq!(row.status, ExecutionStatus::Failed);
            let error = row.error.unwrap_or_default();
            assert!(
                error.contains("FLOWPILOT_MAX_STEP_OUTPUT_BYTES"),
                "{}",
                &error[..200.min(error.len())]
            );
            assert!(error.len() < 4_096);
        }
    }
    let grown_mib = server.peak_memory_kib().saturating_sub(before) / 1024;
    // Templates render in processes of their own: the server holds only
    // what it stores, at most the output limit.
    assert!(grown_mib < 50, "the peak grew by {grown_mib} MiB");
}

#[tokio::test]
async fn a_template_that_doubles_a_string_stops_at_the_memory_cap_of_its_renderer() {
    let app = app().await;
    let owner = owner(&app).await;
    let server = Spawned::start(&app, &[]).await;
    let before = server.peak_memory_kib();
    // 400 MB in four instructions: no fuel or byte budget sees it coming.
    let doubling = "{% set a = 'a' * 50000000 %}{% set b = a ~ a %}{% set c = b ~ b %}{% set d = c ~ c %}{{ d | length }}";
    let steps = json!([{ "id": "grow", "kind": "TRANSFORM", "config": { "output": doubling } }]);
    for _ in 0..3 {
        let row = run_to_end(&app, &owner, steps.clone()).await;
        assert_eq!(row.status, ExecutionStatus::Failed);
        let error = row.error.unwrap_or_default();
        assert!(error.contains("FLOWPILOT_TEMPLATE_MEMORY_BYTES"), "{error}");
    }
    // The renderer that died is replaced: an ordinary template still renders.
    let ordinary =
        json!([{ "id": "a", "kind": "TRANSFORM", "config": { "output": "{{ 'x' ~ 'y' }}" } }]);
    let row = run_to_end(&app, &owner, ordinary).await;
    assert_eq!(row.status, ExecutionStatus::Succeeded, "{:?}", row.error);
    assert_eq!(row.output, Some(json!("xy")));
    let grown_mib = server.peak_memory_kib().saturating_sub(before) / 1024;
    assert!(grown_mib < 50, "the server's peak grew by {grown_mib} MiB");
}

#[tokio::test]
async fn steps_of_one_execution_run_at_most_the_limit_at_once() {
    let app = app().await;
    let owner = owner(&app).await;
    let target = Target::start().await;
    let limits = [
        ("FLOWPILOT_MAX_PARALLEL_STEPS", "2"),
        ("FLOWPILOT_HTTP_ALLOW_PRIVATE", "true"),
    ];
    let _server = Spawned::start(&app, &limits).await;
    let steps: Vec<Value> = (0..6)
        .map(|i| json!({ "id": format!("s{i}"), "kind": "HTTP", "config": { "url": target.url("/slow/300") } }))
        .collect();
    let row = run_to_end(&app, &owner, Value::Array(steps)).await;
    assert_eq!(row.status, ExecutionStatus::Succeeded, "{:?}", row.error);
    let most_at_once = most_running_at_once(&app, row.id).await;
    assert_eq!(most_at_once, 2);
}

#[tokio::test]
async fn two_hundred_parallel_steps_run_at_most_thirty_two_at_once() {
    let app = app().await;
    let owner = owner(&app).await;
    let target = Target::start().await;
    let _server = Spawned::start(&app, &[("FLOWPILOT_HTTP_ALLOW_PRIVATE", "true")]).await;
    let steps: Vec<Value> = (0..200)
        .map(|i| json!({ "id": format!("s{i}"), "kind": "HTTP", "config": { "url": target.url("/slow/100") } }))
        .collect();
    let row = run_to_end(&app, &owner, Value::Array(steps)).await;
    assert_eq!(row.status, ExecutionStatus::Succeeded, "{:?}", row.error);
    let most_at_once = most_running_at_once(&app, row.id).await;
    assert!((2..=32).contains(&most_at_once), "{most_at_once} at once");
}

#[tokio::test]
async fn nul_characters_in_step_results_are_stored_replaced_on_every_backend() {
    let app = app().await;
    let owner = owner(&app).await;
    let target = Target::start().await;
    let _server = Spawned::start(&app, &[("FLOWPILOT_HTTP_ALLOW_PRIVATE", "true")]).await;
    let steps = json!([
        { "id": "made", "kind": "TRANSFORM", "config": { "output": "{{ 'a\\u0000b' }}" } },
        { "id": "fetched", "kind": "HTTP", "config": { "url": target.url("/nul") } },
    ]);
    let row = run_to_end(&app, &owner, steps).await;
    assert_eq!(row.status, ExecutionStatus::Succeeded, "{:?}", row.error);
    let output = row.output.unwrap();
    assert_eq!(output["made"], "a\u{FFFD}b");
    assert_eq!(output["fetched"]["body"]["text"], "a\u{FFFD}b");
    assert_eq!(output["fetched"]["body"]["a\u{FFFD}key"], 1);
}

#[tokio::test]
async fn credential_headers_stay_with_their_origin_on_redirects() {
    let app = app().await;
    let owner = owner(&app).await;
    let (origin, elsewhere) = (Target::start().await, Target::start().await);
    let _server = Spawned::start(&app, &[("FLOWPILOT_HTTP_ALLOW_PRIVATE", "true")]).await;
    let redirect = |to: String| {
        let to: String = url::form_urlencoded::byte_serialize(to.as_bytes()).collect();
        origin.url(&format!("/redirect?status=307&to={to}"))
    };
    let headers = json!({
        "Authorization": "Bearer step-secret",
        "Cookie": "session=step-secret",
        "Proxy-Authorization": "Basic step-secret",
        "X-Api-Key": "step-secret",
        "X-Trace": "kept"
    });
    let steps = json!([
        { "id": "away", "kind": "HTTP", "config": { "method": "POST", "url": redirect(elsewhere.url("/echo")),
            "headers": headers, "body": { "n": 1 } } },
        { "id": "home", "kind": "HTTP", "needs": ["away"], "config": { "method": "POST",
            "url": redirect(origin.url("/echo")), "headers": headers, "body": { "n": 2 } } },
    ]);
    let row = run_to_end(&app, &owner, steps).await;
    assert_eq!(row.status, ExecutionStatus::Succeeded, "{:?}", row.error);
    let away = elsewhere
        .received()
        .into_iter()
        .find(|r| r.path == "/echo")
        .expect("the redirect reached the other origin");
    assert_eq!(away.method, "POST");
    assert_eq!(away.body, r#"{"n":1}"#);
    assert_eq!(
        away.headers.get("x-trace").map(String::as_str),
        Some("kept")
    );
    for credential in [
        "authorization",
        "cookie",
        "proxy-authorization",
        "x-api-key",
    ] {
        assert!(
            !away.headers.contains_key(credential),
            "{credential} followed the redirect: {:?}",
            away.headers
        );
    }
    let home = origin
        .received()
        .into_iter()
        .find(|r| r.path == "/echo")
        .expect("the same-origin redirect was followed");
    assert_eq!(
        home.headers.get("x-api-key").map(String::as_str),
        Some("step-secret")
    );
    assert_eq!(home.body, r#"{"n":2}"#);
}

#[tokio::test]
async fn an_execution_claimed_repeatedly_without_progress_is_failed_with_the_reason() {
    let app = app().await;
    let owner = owner(&app).await;
    let steps = json!([{ "id": "a", "kind": "TRANSFORM", "config": { "output": 1 } }]);
    let workflow = app.workflow(&owner.0, &owner.1, steps).await;
    let id = app.run(&owner.0, &workflow, json!({})).await;
    // Five claims before this one ended without a step's outcome (their
    // workers died, or their results could not be stored).
    let mut row = app.execution_row(&id).await.into_active_model();
    row.claims_without_progress = Set(5);
    row.update(&app.state.db).await.unwrap();
    let worker = app.isolated_worker(|s| s.run_engine = true).await;
    let row = await_end(&app, &id).await;
    worker.stop().await;
    assert_eq!(row.status, ExecutionStatus::Failed);
    let error = row.error.unwrap_or_default();
    assert!(
        error.contains("claimed 5 times without progress"),
        "{error}"
    );
    let steps = steps_of(&app, row.id).await;
    assert!(
        steps.iter().all(|s| s.status == StepStatus::Cancelled),
        "{steps:?}"
    );
}

#[tokio::test]
async fn hand_backs_at_shutdown_do_not_count_as_claims_without_progress() {
    let target = Target::start().await;
    let mut app = TestApp::spawn_with(|s| {
        s.http_allow_private = flowpilot::egress::PrivateAccess::All;
        s.shutdown_grace_ms = 0;
        s.steps.max_claims_without_progress = 1;
    })
    .await;
    let owner = owner(&app).await;
    let steps =
        json!([{ "id": "slow", "kind": "HTTP", "config": { "url": target.url("/slow/1000") } }]);
    let workflow = app.workflow(&owner.0, &owner.1, steps).await;
    let id = app.run(&owner.0, &workflow, json!({})).await;
    for restarts in 1..=3 {
        // The step is running: stop the server, which hands it back.
        tokio::time::timeout(Duration::from_secs(20), async {
            while target.received().len() < restarts {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the step runs again");
        app = app.restart().await;
    }
    let row = await_end(&app, &id).await;
    // With at most one claim without progress, three hand-backs that
    // counted would have failed it.
    assert_eq!(row.status, ExecutionStatus::Succeeded, "{:?}", row.error);
}

#[tokio::test]
async fn a_definition_whose_constants_would_fold_into_gigabytes_is_saved_without_building_them() {
    let app = app().await;
    let owner = owner(&app).await;
    let server = Spawned::start(&app, &[]).await;
    let before = server.peak_memory_kib();
    let folding = "{{ ('a' * 100000000) ~ ('a' * 100000000) ~ ('a' * 100000000) }}";
    let response = server
        .graphql(
            Some(&owner.0.access_token),
            "mutation($input: CreateWorkflowInput!) { createWorkflow(input: $input) { id } }",
            json!({ "input": { "organizationId": owner.1, "name": "Folding", "definition": { "steps": [
                { "id": "big", "kind": "TRANSFORM", "config": { "output": folding } },
                { "id": "fail", "kind": "FAIL", "needs": ["big"], "config": { "message": folding } },
            ] } } }),
        )
        .await;
    let workflow = response.data()["createWorkflow"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let id = app.run(&owner.0, &workflow, json!({})).await;
    let row = await_end(&app, &id).await;
    assert_eq!(row.status, ExecutionStatus::Failed);
    assert!(
        row.error
            .as_deref()
            .unwrap_or_default()
            .contains("FLOWPILOT_TEMPLATE_MEMORY_BYTES"),
        "{:?}",
        row.error
    );
    let grown_mib = server.peak_memory_kib().saturating_sub(before) / 1024;
    assert!(grown_mib < 50, "the server's peak grew by {grown_mib} MiB");
}
