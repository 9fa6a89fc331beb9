//! Triggers start a workflow without a person. A SCHEDULE trigger is a
//! 5-field cron pattern read in an IANA time zone, with the input its
//! executions get; the scheduler on every instance fires it when its
//! `nextRunAt` is due, exactly once per due run however many instances run,
//! once (not once per missed time) after downtime, never while it is
//! disabled, and without starting anything for an archived workflow. A
//! WEBHOOK trigger has a secret URL `/hooks/fph_…`, shown once and stored
//! only as a SHA-256; a POST's JSON body becomes a new execution's input.
//! EDITOR and up manage triggers, a workflow has at most 20, and each
//! execution tells what started it (`triggerKind`, `trigger`).
//!
//! Time moves only through `app.clock`. Schedule tests first move the clock
//! to just past a whole minute, so that no minute boundary passes in real
//! time while they wait; executions stay QUEUED (no workers).

use chrono::{Duration, Timelike};
use entity::role::Role;
use reqwest::StatusCode;
use sea_orm::EntityTrait;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::members::{
    a_second_passes, assert_bad_input, assert_code, audit_log, nodes, time, who_did_what,
};
use crate::support::{GqlResponse, Session, TestApp};

const CREATE_SCHEDULE: &str = "mutation($input: CreateScheduleTriggerInput!) {
  createScheduleTrigger(input: $input) {
    id kind enabled lastFiredAt createdAt
    schedule { cron timeZone input nextRunAt }
    webhook { tokenPrefix }
    workflow { id }
    createdBy { id displayName }
  }
}";
const CREATE_WEBHOOK: &str = "mutation($input: CreateWebhookTriggerInput!) {
  createWebhookTrigger(input: $input) {
    url path
    trigger {
      id kind enabled lastFiredAt createdAt
      schedule { cron timeZone input nextRunAt }
      webhook { tokenPrefix }
      workflow { id }
      createdBy { id displayName }
    }
  }
}";
const SET_ENABLED: &str = "mutation($input: SetTriggerEnabledInput!) {
  setTriggerEnabled(input: $input) {
    id kind enabled lastFiredAt createdAt
    schedule { cron timeZone input nextRunAt }
    webhook { tokenPrefix }
    workflow { id }
    createdBy { id displayName }
  }
}";
const DELETE: &str = "mutation($input: DeleteTriggerInput!) {
  deleteTrigger(input: $input) { triggerId workflow { id } }
}";
const TRIGGERS: &str = "query($id: ID!) {
  workflow(id: $id) {
    triggers {
      id kind enabled lastFiredAt createdAt
      schedule { cron timeZone input nextRunAt }
      webhook { tokenPrefix }
      workflow { id }
      createdBy { id displayName }
    }
  }
}";
const EXECUTIONS: &str = "query($id: ID!) {
  workflow(id: $id) {
    executions(first: 100) { edges { node { id triggerKind trigger { id } input status } } }
  }
}";
const EXECUTION: &str = "query($id: ID!) {
  execution(id: $id) { id status input triggerKind trigger { id kind } }
}";
const ARCHIVE: &str = "mutation($input: WorkflowInput!) {
  archiveWorkflow(input: $input) { id archivedAt }
}";

/// How long a test waits for the scheduler or a delivery to show.
const WAIT: std::time::Duration = std::time::Duration::from_secs(10);
/// How often it looks meanwhile.
const POLL: std::time::Duration = std::time::Duration::from_millis(50);
/// Many scheduler passes (20 ms apart): long enough for a second firing to
/// have shown, had there been one.
const SETTLE: std::time::Duration = std::time::Duration::from_millis(300);

// Creating schedules

#[tokio::test]
async fn creating_a_schedule_answers_it_due_at_the_next_whole_minute_and_lists_it() {
    let app = scheduling_app().await;
    let (owner, _, workflow) = setup(&app).await;
    align_to_a_minute(&[&app]);

    let before = app.clock.now();
    let response = create_schedule(
        &app,
        &owner.access_token,
        json!({ "workflowId": workflow, "cron": "* * * * *", "input": { "source": "cron" } }),
    )
    .await;
    let after = app.clock.now();
    let trigger = &response.data()["createScheduleTrigger"];
    assert_eq!(trigger["kind"], "SCHEDULE");
    assert_eq!(trigger["enabled"], true);
    assert_eq!(trigger["schedule"]["cron"], "* * * * *");
    assert_eq!(trigger["schedule"]["timeZone"], "UTC", "the default zone");
    assert_eq!(trigger["schedule"]["input"], json!({ "source": "cron" }));
    assert_eq!(trigger["webhook"], Value::Null);
    assert_eq!(trigger["lastFiredAt"], Value::Null);
    assert_eq!(trigger["workflow"]["id"].as_str(), Some(workflow.as_str()));
    assert_eq!(
        trigger["createdBy"]["id"].as_str(),
        Some(owner.user_id.as_str())
    );
    assert_eq!(trigger["createdBy"]["displayName"], "Test User");
    let created_at = time(&trigger["createdAt"]);
    let slack = Duration::seconds(1);
    assert!(
        created_at >= before - slack && created_at <= after + slack,
        "{trigger}"
    );

    let next = time(&trigger["schedule"]["nextRunAt"]);
    assert!(
        next > before && next <= after + Duration::seconds(60),
        "the next whole minute after {before}: {next}"
    );
    assert_eq!((next.second(), next.nanosecond()), (0, 0), "{next}");

    let listed = triggers(&app, &owner, &workflow).await;
    assert_eq!(listed.as_slice(), std::slice::from_ref(trigger));
}

#[tokio::test]
async fn a_schedules_next_run_is_read_in_its_time_zone() {
    let app = scheduling_app().await;
    let (owner, _, workflow) = setup(&app).await;
    let before = app.clock.now();

    let tokyo = create_schedule(
        &app,
        &owner.access_token,
        json!({ "workflowId": workflow, "cron": "0 9 * * *", "timeZone": "Asia/Tokyo" }),
    )
    .await;
    let tokyo = &tokyo.data()["createScheduleTrigger"]["schedule"];
    assert_eq!(tokyo["timeZone"], "Asia/Tokyo");
    assert_eq!(tokyo["input"], json!({}), "the default input");
    let next = time(&tokyo["nextRunAt"]);
    assert_eq!(
        (next.hour(), next.minute(), next.second()),
        (0, 0, 0),
        "09:00 in Tokyo is 00:00 UTC: {next}"
    );
    assert!(
        next > before && next <= app.clock.now() + Duration::days(1),
        "{next}"
    );

    let utc = create_schedule(
        &app,
        &owner.access_token,
        json!({ "workflowId": workflow, "cron": "0 9 * * *" }),
    )
    .await;
    let next = time(&utc.data()["createScheduleTrigger"]["schedule"]["nextRunAt"]);
    assert_eq!((next.hour(), next.minute(), next.second()), (9, 0, 0));
}

#[tokio::test]
async fn a_malformed_cron_or_unknown_time_zone_is_bad_user_input_and_makes_nothing() {
    let app = scheduling_app().await;
    let (owner, _, workflow) = setup(&app).await;
    for cron in [
        "* * * *",
        "0 * * * * *",
        "61 * * * *",
        "every minute",
        "",
        "0 0 30 2 *",
    ] {
        let response = create_schedule(
            &app,
            &owner.access_token,
            json!({ "workflowId": workflow, "cron": cron }),
        )
        .await;
        assert_bad_input(&response, "cron");
    }
    let response = create_schedule(
        &app,
        &owner.access_token,
        json!({ "workflowId": workflow, "cron": "0 9 * * *", "timeZone": "Mars/Olympus" }),
    )
    .await;
    assert_bad_input(&response, "timeZone");

    assert_eq!(triggers(&app, &owner, &workflow).await, Vec::<Value>::new());
}

// Firing schedules

#[tokio::test]
async fn a_due_schedule_fires_exactly_once_with_its_input() {
    let app = scheduling_app().await;
    let (owner, _, workflow) = setup(&app).await;
    align_to_a_minute(&[&app]);
    let created = schedule(&app, &owner, &workflow, "* * * * *").await;
    let id = id_of(&created);
    let first_due = time(&created["schedule"]["nextRunAt"]);
    tokio::time::sleep(SETTLE).await;
    assert_eq!(
        executions(&app, &owner, &workflow).await.len(),
        0,
        "nothing fires before it is due"
    );

    app.clock.advance(Duration::seconds(61));
    let fired = executions_when(&app, &owner, &workflow, 1).await;
    assert_eq!(fired.len(), 1, "{fired:?}");
    let execution = &fired[0];
    assert_eq!(execution["triggerKind"], "SCHEDULE");
    assert_eq!(execution["trigger"]["id"].as_str(), Some(id.as_str()));
    assert_eq!(execution["input"], json!({ "source": "cron" }));
    assert_eq!(execution["status"], "QUEUED");

    let now = app.clock.now();
    let after = trigger_of(&app, &owner, &workflow, &id).await;
    let last_fired = time(&after["lastFiredAt"]);
    assert!(last_fired >= first_due && last_fired <= now, "{after}");
    let next = time(&after["schedule"]["nextRunAt"]);
    assert!(next > now, "{next} is after {now}");
    assert_eq!(next, first_due + Duration::minutes(1), "{after}");

    tokio::time::sleep(SETTLE).await;
    assert_eq!(
        executions(&app, &owner, &workflow).await.len(),
        1,
        "one due run, one execution"
    );
}

#[tokio::test]
async fn after_downtime_a_schedule_fires_once_not_once_per_missed_time() {
    let app = scheduling_app().await;
    let (owner, _, workflow) = setup(&app).await;
    align_to_a_minute(&[&app]);
    let created = schedule(&app, &owner, &workflow, "* * * * *").await;
    let id = id_of(&created);
    let first_due = time(&created["schedule"]["nextRunAt"]);

    app.clock.advance(Duration::minutes(10));
    executions_when(&app, &owner, &workflow, 1).await;
    tokio::time::sleep(SETTLE).await;
    let fired = executions(&app, &owner, &workflow).await;
    assert_eq!(fired.len(), 1, "ten missed times, one run: {fired:?}");
    assert_eq!(fired[0]["trigger"]["id"].as_str(), Some(id.as_str()));

    let now = app.clock.now();
    let after = trigger_of(&app, &owner, &workflow, &id).await;
    let next = time(&after["schedule"]["nextRunAt"]);
    assert!(next > now, "{next} is after {now}");
    assert_eq!(next, first_due + Duration::minutes(10), "{after}");
    assert!(after["lastFiredAt"].is_string(), "{after}");
}

#[tokio::test]
async fn a_disabled_schedule_never_fires_and_reenabling_it_skips_the_runs_it_missed() {
    let app = scheduling_app().await;
    let (owner, _, workflow) = setup(&app).await;
    let token = owner.access_token.as_str();
    align_to_a_minute(&[&app]);

    let mut input = schedule_input(&workflow, "* * * * *");
    input["enabled"] = json!(false);
    let off = create_schedule(&app, token, input).await;
    let off = &off.data()["createScheduleTrigger"];
    assert_eq!(off["enabled"], false);
    assert_eq!(off["schedule"]["nextRunAt"], Value::Null, "{off}");
    let born_off = id_of(off);

    let switched_off = id_of(&schedule(&app, &owner, &workflow, "* * * * *").await);
    let response = set_enabled(&app, token, &switched_off, false).await;
    let answered = &response.data()["setTriggerEnabled"];
    assert_eq!(answered["enabled"], false);
    assert_eq!(answered["schedule"]["nextRunAt"], Value::Null, "{answered}");

    app.clock.advance(Duration::seconds(61));
    tokio::time::sleep(SETTLE).await;
    assert_eq!(executions(&app, &owner, &workflow).await.len(), 0);
    for listed in triggers(&app, &owner, &workflow).await {
        assert_eq!(listed["enabled"], false, "{listed}");
        assert_eq!(listed["schedule"]["nextRunAt"], Value::Null, "{listed}");
        assert_eq!(listed["lastFiredAt"], Value::Null, "{listed}");
    }

    for id in [&born_off, &switched_off] {
        let now = app.clock.now();
        let response = set_enabled(&app, token, id, true).await;
        let answered = &response.data()["setTriggerEnabled"];
        assert_eq!(answered["enabled"], true);
        let next = time(&answered["schedule"]["nextRunAt"]);
        assert!(
            next > now && next <= now + Duration::seconds(60),
            "the next time from now, {now}: {next}"
        );
    }
    tokio::time::sleep(SETTLE).await;
    assert_eq!(
        executions(&app, &owner, &workflow).await.len(),
        0,
        "the runs missed while disabled are not caught up"
    );

    app.clock.advance(Duration::seconds(61));
    executions_when(&app, &owner, &workflow, 2).await;
    tokio::time::sleep(SETTLE).await;
    let fired = executions(&app, &owner, &workflow).await;
    assert_eq!(fired.len(), 2, "{fired:?}");
    for id in [&born_off, &switched_off] {
        assert_eq!(
            fired
                .iter()
                .filter(|e| e["trigger"]["id"].as_str() == Some(id.as_str()))
                .count(),
            1,
            "{id}: {fired:?}"
        );
    }
}

#[tokio::test]
async fn an_archived_workflows_schedule_does_not_fire_but_moves_on() {
    let app = scheduling_app().await;
    let (owner, _, workflow) = setup(&app).await;
    align_to_a_minute(&[&app]);
    let created = schedule(&app, &owner, &workflow, "* * * * *").await;
    let id = id_of(&created);
    let first_due = time(&created["schedule"]["nextRunAt"]);
    archive(&app, &owner, &workflow).await;

    app.clock.advance(Duration::seconds(61));
    let moved = trigger_when(&app, &owner, &workflow, &id, |t| {
        t["schedule"]["nextRunAt"] != created["schedule"]["nextRunAt"]
    })
    .await;
    assert_eq!(
        time(&moved["schedule"]["nextRunAt"]),
        first_due + Duration::minutes(1),
        "{moved}"
    );
    assert_eq!(moved["lastFiredAt"], Value::Null, "{moved}");
    tokio::time::sleep(SETTLE).await;
    assert_eq!(executions(&app, &owner, &workflow).await.len(), 0);
}

#[tokio::test]
async fn two_instances_over_one_database_fire_each_due_schedule_exactly_once() {
    let a = scheduling_app().await;
    let b = TestApp::start(a.settings.clone()).await;
    let (owner, _, workflow) = setup(&a).await;
    align_to_a_minute(&[&a, &b]);
    let mut ids = Vec::new();
    for _ in 0..10 {
        ids.push(id_of(&schedule(&a, &owner, &workflow, "* * * * *").await));
    }

    for round in 1..=3usize {
        for app in [&a, &b] {
            app.clock.advance(Duration::seconds(61));
        }
        executions_when(&a, &owner, &workflow, 10 * round).await;
        tokio::time::sleep(SETTLE).await;
        let fired = executions(&a, &owner, &workflow).await;
        assert_eq!(fired.len(), 10 * round, "round {round}: {fired:?}");
        for id in &ids {
            let by_trigger = fired
                .iter()
                .filter(|e| e["trigger"]["id"].as_str() == Some(id.as_str()))
                .count();
            assert_eq!(by_trigger, round, "round {round}, trigger {id}");
        }
    }
}

#[tokio::test]
async fn an_instance_without_the_engine_fires_no_schedules() {
    let app = TestApp::spawn_with(|settings| {
        settings.workers = 0;
        settings.scheduler_interval_ms = 20;
        settings.run_engine = false;
    })
    .await;
    let (owner, _, workflow) = setup(&app).await;
    align_to_a_minute(&[&app]);
    let created = schedule(&app, &owner, &workflow, "* * * * *").await;
    let id = id_of(&created);

    app.clock.advance(Duration::seconds(61));
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(executions(&app, &owner, &workflow).await.len(), 0);
    let after = trigger_of(&app, &owner, &workflow, &id).await;
    assert_eq!(
        after["schedule"]["nextRunAt"], created["schedule"]["nextRunAt"],
        "no scheduler moved it on"
    );
    assert_eq!(after["lastFiredAt"], Value::Null);
}

#[tokio::test]
async fn a_deleted_schedule_fires_no_more_and_its_runs_stay_schedule_runs() {
    let app = scheduling_app().await;
    let (owner, _, workflow) = setup(&app).await;
    align_to_a_minute(&[&app]);
    let id = id_of(&schedule(&app, &owner, &workflow, "* * * * *").await);
    app.clock.advance(Duration::seconds(61));
    let fired = executions_when(&app, &owner, &workflow, 1).await;
    let execution_id = id_of(&fired[0]);

    delete_trigger(&app, &owner.access_token, &id).await.data();
    app.clock.advance(Duration::seconds(61));
    tokio::time::sleep(SETTLE).await;
    let after = executions(&app, &owner, &workflow).await;
    assert_eq!(after.len(), 1, "{after:?}");
    let execution = execution(&app, &owner, &execution_id).await;
    assert_eq!(execution["triggerKind"], "SCHEDULE");
    assert_eq!(execution["trigger"], Value::Null, "{execution}");
}

// Creating webhooks

#[tokio::test]
async fn creating_a_webhook_answers_its_secret_url_once_and_lists_its_token_prefix() {
    let app = quiet_app().await;
    let (owner, _, workflow) = setup(&app).await;

    let response =
        create_webhook(&app, &owner.access_token, json!({ "workflowId": workflow })).await;
    let payload = &response.data()["createWebhookTrigger"];
    let path = payload["path"].as_str().expect("path");
    let token = token_of(path);
    assert!(token.starts_with("fph_") && token.len() > 40, "{token}");
    assert!(
        token
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
        "{token}"
    );
    assert_eq!(
        payload["url"].as_str(),
        Some(format!("{}{path}", app.settings.public_url).as_str())
    );
    let trigger = &payload["trigger"];
    assert_eq!(trigger["kind"], "WEBHOOK");
    assert_eq!(trigger["enabled"], true);
    assert_eq!(trigger["schedule"], Value::Null);
    assert_eq!(
        trigger["webhook"]["tokenPrefix"].as_str(),
        Some(&token[..10])
    );
    assert_eq!(trigger["lastFiredAt"], Value::Null);
    assert_eq!(trigger["workflow"]["id"].as_str(), Some(workflow.as_str()));
    assert_eq!(
        trigger["createdBy"]["id"].as_str(),
        Some(owner.user_id.as_str())
    );

    let (second, second_path) = webhook(&app, &owner, &workflow).await;
    assert_ne!(second_path, path, "every webhook has a token of its own");
    let listed = triggers(&app, &owner, &workflow).await;
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(listed[0], *trigger, "oldest first");
    assert_eq!(listed[1]["id"].as_str(), Some(second.as_str()));
    let shown = serde_json::to_string(&listed).expect("JSON");
    assert!(
        !shown.contains(token) && !shown.contains(token_of(&second_path)),
        "the list never shows a token: {shown}"
    );
}

// Delivering to webhooks

#[tokio::test]
async fn a_post_to_a_webhook_queues_an_execution_with_the_body_as_input() {
    let app = quiet_app().await;
    let (owner, _, workflow) = setup(&app).await;
    let (id, path) = webhook(&app, &owner, &workflow).await;
    let body = json!({ "order": 42, "items": ["a", "b"], "customer": { "vip": true } });

    let before = app.clock.now();
    let (status, answer) = deliver(&app, &path, Some(body.to_string()), &[]).await;
    let after = app.clock.now();
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert_eq!(answer["status"], "QUEUED");
    let execution_id = answer["executionId"].as_str().expect("executionId");
    execution_id
        .parse::<uuid::Uuid>()
        .expect("the execution id is a UUID");

    let execution = execution(&app, &owner, execution_id).await;
    assert_eq!(execution["id"].as_str(), Some(execution_id));
    assert_eq!(execution["status"], "QUEUED");
    assert_eq!(execution["input"], body);
    assert_eq!(execution["triggerKind"], "WEBHOOK");
    assert_eq!(execution["trigger"]["id"].as_str(), Some(id.as_str()));
    assert_eq!(execution["trigger"]["kind"], "WEBHOOK");

    let fired = trigger_of(&app, &owner, &workflow, &id).await;
    let last_fired = time(&fired["lastFiredAt"]);
    let slack = Duration::seconds(1);
    assert!(
        last_fired >= before - slack && last_fired <= after + slack,
        "{fired}"
    );
}

#[tokio::test]
async fn an_empty_body_is_an_empty_input_and_a_body_that_is_not_json_is_bad_user_input() {
    let app = quiet_app().await;
    let (owner, _, workflow) = setup(&app).await;
    let (_, path) = webhook(&app, &owner, &workflow).await;

    let (status, answer) = deliver(&app, &path, None, &[]).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let execution_id = answer["executionId"].as_str().expect("executionId");
    assert_eq!(
        execution(&app, &owner, execution_id).await["input"],
        json!({})
    );

    let (status, answer) = deliver(&app, &path, Some("{\"order\": ".to_owned()), &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(answer["error"]["code"], "BAD_USER_INPUT", "{answer}");
    assert_eq!(
        executions(&app, &owner, &workflow).await.len(),
        1,
        "a refused delivery starts nothing"
    );
}

#[tokio::test]
async fn an_unknown_token_answers_404_and_a_get_answers_405() {
    let app = quiet_app().await;
    let (owner, _, workflow) = setup(&app).await;
    let (_, path) = webhook(&app, &owner, &workflow).await;

    for unknown in [
        "/hooks/fph_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".to_owned(),
        format!("{path}x"),
        "/hooks/nothing".to_owned(),
    ] {
        let (status, answer) = deliver(&app, &unknown, Some("{}".to_owned()), &[]).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{unknown}: {answer}");
        assert_eq!(
            answer,
            json!({ "error": { "code": "NOT_FOUND", "message": "webhook not found" } })
        );
    }
    assert_eq!(
        app.get(&path).await.status(),
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert_eq!(executions(&app, &owner, &workflow).await.len(), 0);
}

#[tokio::test]
async fn a_disabled_webhook_answers_404_and_starts_nothing_until_enabled_again() {
    let app = quiet_app().await;
    let (owner, _, workflow) = setup(&app).await;
    let token = owner.access_token.as_str();
    let response = create_webhook(
        &app,
        token,
        json!({ "workflowId": workflow, "enabled": false }),
    )
    .await;
    let payload = &response.data()["createWebhookTrigger"];
    assert_eq!(payload["trigger"]["enabled"], false);
    let id = id_of(&payload["trigger"]);
    let path = payload["path"].as_str().expect("path");
    let not_found = json!({ "error": { "code": "NOT_FOUND", "message": "webhook not found" } });

    let (status, answer) = deliver(&app, path, Some("{}".to_owned()), &[]).await;
    assert_eq!(
        (status, answer),
        (StatusCode::NOT_FOUND, not_found.clone()),
        "made disabled"
    );

    let enabled = set_enabled(&app, token, &id, true).await;
    assert_eq!(enabled.data()["setTriggerEnabled"]["enabled"], true);
    fire(&app, path, &json!({ "n": 1 })).await;

    let disabled = set_enabled(&app, token, &id, false).await;
    assert_eq!(disabled.data()["setTriggerEnabled"]["enabled"], false);
    let (status, answer) = deliver(&app, path, Some("{}".to_owned()), &[]).await;
    assert_eq!(
        (status, answer),
        (StatusCode::NOT_FOUND, not_found),
        "switched off"
    );

    let fired = executions(&app, &owner, &workflow).await;
    assert_eq!(fired.len(), 1, "{fired:?}");
    assert_eq!(fired[0]["input"], json!({ "n": 1 }));

    set_enabled(&app, token, &id, true).await.data();
    fire(&app, path, &json!({ "n": 2 })).await;
    assert_eq!(executions(&app, &owner, &workflow).await.len(), 2);
}

#[tokio::test]
async fn a_body_over_the_webhook_limit_is_payload_too_large_and_starts_nothing() {
    let app = TestApp::spawn_with(|settings| {
        settings.workers = 0;
        settings.webhook_max_body_bytes = 1024;
    })
    .await;
    let (owner, _, workflow) = setup(&app).await;
    let (_, path) = webhook(&app, &owner, &workflow).await;

    let large = json!({ "data": "x".repeat(2000) });
    let (status, answer) = deliver(&app, &path, Some(large.to_string()), &[]).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");
    assert_eq!(answer["error"]["code"], "PAYLOAD_TOO_LARGE", "{answer}");
    assert_eq!(executions(&app, &owner, &workflow).await.len(), 0);

    let small = json!({ "data": "x".repeat(900) });
    let execution_id = fire(&app, &path, &small).await;
    assert_eq!(execution(&app, &owner, &execution_id).await["input"], small);
    assert_eq!(executions(&app, &owner, &workflow).await.len(), 1);
}

#[tokio::test]
async fn an_idempotency_key_makes_a_repeated_delivery_answer_the_first_execution() {
    let app = quiet_app().await;
    let (owner, _, workflow) = setup(&app).await;
    let (_, path) = webhook(&app, &owner, &workflow).await;
    let body = Some(json!({ "order": 7 }).to_string());

    let mut ids = Vec::new();
    for key in ["k1", "k1", "k2"] {
        let (status, answer) =
            deliver(&app, &path, body.clone(), &[("Idempotency-Key", key)]).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{key}: {answer}");
        ids.push(
            answer["executionId"]
                .as_str()
                .expect("executionId")
                .to_owned(),
        );
    }
    assert_eq!(ids[0], ids[1], "the same key answers the first execution");
    assert_ne!(ids[0], ids[2], "another key starts another");
    let all = executions(&app, &owner, &workflow).await;
    assert_eq!(all.len(), 2, "{all:?}");
}

#[tokio::test]
async fn an_idempotency_key_is_scoped_to_its_webhook_and_apart_from_manual_runs() {
    let app = quiet_app().await;
    let (owner, _, workflow) = setup(&app).await;
    let (_, first_hook) = webhook(&app, &owner, &workflow).await;
    let (_, second_hook) = webhook(&app, &owner, &workflow).await;
    let manual = app
        .graphql_as(
            &owner.access_token,
            "mutation($input: RunWorkflowInput!) { runWorkflow(input: $input) { id } }",
            json!({ "input": { "workflowId": workflow, "input": {}, "idempotencyKey": "same" } }),
        )
        .await;
    let manual_id = manual.data()["runWorkflow"]["id"]
        .as_str()
        .expect("id")
        .to_owned();

    let mut ids = vec![manual_id];
    for path in [&first_hook, &second_hook] {
        let (status, answer) = deliver(
            &app,
            path,
            Some("{}".to_owned()),
            &[("Idempotency-Key", "same")],
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
        ids.push(
            answer["executionId"]
                .as_str()
                .expect("executionId")
                .to_owned(),
        );
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "one execution per source: {ids:?}");
    assert_eq!(executions(&app, &owner, &workflow).await.len(), 3);
}

#[tokio::test]
async fn a_webhook_of_an_archived_workflow_answers_409_conflict() {
    let app = quiet_app().await;
    let (owner, _, workflow) = setup(&app).await;
    let (_, path) = webhook(&app, &owner, &workflow).await;
    archive(&app, &owner, &workflow).await;

    let (status, answer) = deliver(&app, &path, Some("{}".to_owned()), &[]).await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    assert_eq!(answer["error"]["code"], "CONFLICT", "{answer}");
    assert_eq!(executions(&app, &owner, &workflow).await.len(), 0);
}

// Deleting triggers

#[tokio::test]
async fn deleting_a_webhook_stops_it_and_keeps_its_executions_without_it() {
    let app = quiet_app().await;
    let (owner, _, workflow) = setup(&app).await;
    let (id, path) = webhook(&app, &owner, &workflow).await;
    let execution_id = fire(&app, &path, &json!({ "n": 1 })).await;

    let deleted = delete_trigger(&app, &owner.access_token, &id).await;
    let deleted = &deleted.data()["deleteTrigger"];
    assert_eq!(deleted["triggerId"].as_str(), Some(id.as_str()));
    assert_eq!(deleted["workflow"]["id"].as_str(), Some(workflow.as_str()));

    let (status, answer) = deliver(&app, &path, Some("{}".to_owned()), &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
    assert_eq!(answer["error"]["code"], "NOT_FOUND");
    assert_eq!(triggers(&app, &owner, &workflow).await, Vec::<Value>::new());

    let kept = executions(&app, &owner, &workflow).await;
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(kept[0]["id"].as_str(), Some(execution_id.as_str()));
    let execution = execution(&app, &owner, &execution_id).await;
    assert_eq!(execution["triggerKind"], "WEBHOOK");
    assert_eq!(execution["trigger"], Value::Null, "{execution}");
    assert_eq!(execution["input"], json!({ "n": 1 }));

    let again = delete_trigger(&app, &owner.access_token, &id).await;
    assert_code(&again, "NOT_FOUND");
}

// Who may manage triggers

#[tokio::test]
async fn a_viewer_is_forbidden_an_outsider_gets_not_found_and_an_editor_manages_triggers() {
    let app = quiet_app().await;
    let (owner, organization, workflow) = setup(&app).await;
    let viewer = app.member(&organization, Role::Viewer).await;
    let editor = app.member(&organization, Role::Editor).await;
    let outsider = app.user().await;
    app.organization(&outsider, "Other").await;
    let existing = id_of(&schedule(&app, &owner, &workflow, "0 * * * *").await);

    for (who, code) in [(&viewer, "FORBIDDEN"), (&outsider, "NOT_FOUND")] {
        let token = who.access_token.as_str();
        let created = create_schedule(&app, token, schedule_input(&workflow, "0 * * * *")).await;
        assert_code(&created, code);
        let hooked = create_webhook(&app, token, json!({ "workflowId": workflow })).await;
        assert_code(&hooked, code);
        assert_code(&set_enabled(&app, token, &existing, false).await, code);
        assert_code(&delete_trigger(&app, token, &existing).await, code);
    }
    let unchanged = triggers(&app, &owner, &workflow).await;
    assert_eq!(unchanged.len(), 1, "{unchanged:?}");
    assert_eq!(unchanged[0]["enabled"], true);

    let token = editor.access_token.as_str();
    let created = create_schedule(&app, token, schedule_input(&workflow, "0 * * * *")).await;
    let created = &created.data()["createScheduleTrigger"];
    assert_eq!(
        created["createdBy"]["id"].as_str(),
        Some(editor.user_id.as_str())
    );
    let hooked = create_webhook(&app, token, json!({ "workflowId": workflow })).await;
    let hook = id_of(&hooked.data()["createWebhookTrigger"]["trigger"]);
    let switched = set_enabled(&app, token, &existing, false).await;
    assert_eq!(switched.data()["setTriggerEnabled"]["enabled"], false);
    let deleted = delete_trigger(&app, token, &existing).await;
    assert_eq!(
        deleted.data()["deleteTrigger"]["triggerId"].as_str(),
        Some(existing.as_str())
    );
    let left: Vec<String> = triggers(&app, &owner, &workflow)
        .await
        .iter()
        .map(id_of)
        .collect();
    assert_eq!(left, [id_of(created), hook]);
}

#[tokio::test]
async fn an_editor_api_key_manages_triggers_and_is_recorded_as_no_creator() {
    let app = quiet_app().await;
    let (owner, organization, workflow) = setup(&app).await;
    let key = crate::api_keys::api_key(&app, &owner, &organization, "EDITOR").await;
    let viewer_key = crate::api_keys::api_key(&app, &owner, &organization, "VIEWER").await;

    let refused = create_schedule(&app, &viewer_key, schedule_input(&workflow, "@hourly")).await;
    assert_code(&refused, "FORBIDDEN");

    let created = create_schedule(&app, &key, schedule_input(&workflow, "@hourly")).await;
    let created = &created.data()["createScheduleTrigger"];
    assert_eq!(created["schedule"]["cron"], "@hourly");
    assert_eq!(created["createdBy"], Value::Null, "{created}");
    let hooked = create_webhook(&app, &key, json!({ "workflowId": workflow })).await;
    let hook = &hooked.data()["createWebhookTrigger"]["trigger"];
    assert_eq!(hook["createdBy"], Value::Null, "{hook}");

    let switched = set_enabled(&app, &key, &id_of(created), false).await;
    assert_eq!(switched.data()["setTriggerEnabled"]["enabled"], false);
    delete_trigger(&app, &key, &id_of(hook)).await.data();
    let left = triggers(&app, &owner, &workflow).await;
    assert_eq!(left.len(), 1, "{left:?}");
}

// Limits

#[tokio::test]
async fn the_twenty_first_trigger_of_a_workflow_is_a_conflict() {
    let app = quiet_app().await;
    let (owner, organization, workflow) = setup(&app).await;
    let token = owner.access_token.as_str();
    let mut made = Vec::new();
    for _ in 0..10 {
        made.push(id_of(&schedule(&app, &owner, &workflow, "0 * * * *").await));
        made.push(webhook(&app, &owner, &workflow).await.0);
    }
    let listed: Vec<String> = triggers(&app, &owner, &workflow)
        .await
        .iter()
        .map(id_of)
        .collect();
    assert_eq!(listed, made, "twenty, oldest first");

    let schedule_21 = create_schedule(&app, token, schedule_input(&workflow, "0 * * * *")).await;
    assert_code(&schedule_21, "CONFLICT");
    let webhook_21 = create_webhook(&app, token, json!({ "workflowId": workflow })).await;
    assert_code(&webhook_21, "CONFLICT");
    assert_eq!(triggers(&app, &owner, &workflow).await.len(), 20);

    let other = app.workflow(&owner, &organization, one_step()).await;
    schedule(&app, &owner, &other, "0 * * * *").await;

    delete_trigger(&app, token, &made[0]).await.data();
    schedule(&app, &owner, &workflow, "0 * * * *").await;
    assert_eq!(triggers(&app, &owner, &workflow).await.len(), 20);
}

// What is stored and recorded

#[tokio::test]
async fn only_the_sha256_of_a_webhook_token_is_stored() {
    let app = quiet_app().await;
    let (owner, _, workflow) = setup(&app).await;
    let (id, path) = webhook(&app, &owner, &workflow).await;
    let token = token_of(&path);

    let stored = entity::trigger::Entity::find_by_id(id.parse::<uuid::Uuid>().expect("trigger id"))
        .one(&app.state.db)
        .await
        .expect("read the trigger")
        .expect("the trigger is stored");
    assert_eq!(stored.kind, "WEBHOOK");
    assert_eq!(
        stored.token_hash.as_deref(),
        Some(sha256_hex(token).as_str())
    );
    assert_eq!(stored.token_prefix.as_deref(), Some(&token[..10]));
    let row = format!("{stored:?}");
    assert!(!row.contains(token), "the row holds the token: {row}");
}

#[tokio::test]
async fn making_and_deleting_triggers_is_audited() {
    let app = quiet_app().await;
    let (owner, organization, workflow) = setup(&app).await;
    let scheduled = id_of(&schedule(&app, &owner, &workflow, "0 9 * * MON-FRI").await);
    a_second_passes(&app);
    let (hook, path) = webhook(&app, &owner, &workflow).await;
    a_second_passes(&app);
    delete_trigger(&app, &owner.access_token, &hook)
        .await
        .data();

    let log: Vec<Value> = audit_log(&app, &owner, &organization)
        .await
        .into_iter()
        .filter(|entry| {
            entry["action"]
                .as_str()
                .is_some_and(|action| action.starts_with("TRIGGER_"))
        })
        .collect();
    let expected = |action: &str, target: &str| {
        json!({
            "action": action,
            "actor": owner.user_id,
            "targetType": "trigger",
            "targetId": target
        })
    };
    assert_eq!(
        log.iter().map(who_did_what).collect::<Vec<_>>(),
        [
            expected("TRIGGER_DELETED", hook.as_str()),
            expected("TRIGGER_CREATED", hook.as_str()),
            expected("TRIGGER_CREATED", scheduled.as_str()),
        ]
    );
    assert_eq!(log[2]["details"]["kind"], "SCHEDULE");
    assert_eq!(log[1]["details"]["kind"], "WEBHOOK");
    assert_eq!(log[0]["details"]["kind"], "WEBHOOK");
    for entry in &log {
        assert_eq!(
            entry["details"]["workflowId"].as_str(),
            Some(workflow.as_str()),
            "{entry}"
        );
    }
    let whole_log = serde_json::to_string(&log).expect("JSON");
    assert!(
        !whole_log.contains(token_of(&path)),
        "the audit log never holds a token: {whole_log}"
    );
}

// Manual runs

#[tokio::test]
async fn a_manual_run_has_trigger_kind_manual_and_no_trigger() {
    let app = quiet_app().await;
    let (owner, _, workflow) = setup(&app).await;
    webhook(&app, &owner, &workflow).await;
    let execution_id = app.run(&owner, &workflow, json!({ "by": "hand" })).await;

    let execution = execution(&app, &owner, &execution_id).await;
    assert_eq!(execution["triggerKind"], "MANUAL");
    assert_eq!(execution["trigger"], Value::Null, "{execution}");
    let listed = executions(&app, &owner, &workflow).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["triggerKind"], "MANUAL");
    assert_eq!(listed[0]["trigger"], Value::Null);
}

// Helpers

/// A server with no workers (executions stay QUEUED).
async fn quiet_app() -> TestApp {
    TestApp::spawn_with(|settings| settings.workers = 0).await
}

/// A server with no workers whose scheduler looks every 20 ms.
async fn scheduling_app() -> TestApp {
    TestApp::spawn_with(|settings| {
        settings.workers = 0;
        settings.scheduler_interval_ms = 20;
    })
    .await
}

fn one_step() -> Value {
    json!([{ "id": "a", "kind": "TRANSFORM", "config": { "output": 1 } }])
}

/// An owner, their organization and a one-step workflow.
async fn setup(app: &TestApp) -> (Session, String, String) {
    let owner = app.user().await;
    let organization = app.organization(&owner, "Acme").await;
    let workflow = app.workflow(&owner, &organization, one_step()).await;
    (owner, organization, workflow)
}

/// Moves the clocks (which read the same time) to one second past the
/// next whole minute: a "* * * * *" schedule made now is due in about
/// 59 s, and no minute passes in real time while a test waits.
fn align_to_a_minute(apps: &[&TestApp]) {
    let into_minute = apps[0].clock.now().timestamp_millis().rem_euclid(60_000);
    for app in apps {
        app.clock
            .advance(Duration::milliseconds(61_000 - into_minute));
    }
}

/// `createScheduleTrigger`'s input for `cron` in UTC with the input
/// `{"source": "cron"}`.
fn schedule_input(workflow: &str, cron: &str) -> Value {
    json!({ "workflowId": workflow, "cron": cron, "input": { "source": "cron" } })
}

async fn create_schedule(app: &TestApp, token: &str, input: Value) -> GqlResponse {
    app.graphql_as(token, CREATE_SCHEDULE, json!({ "input": input }))
        .await
}

/// A schedule made with [`schedule_input`], as answered.
async fn schedule(app: &TestApp, session: &Session, workflow: &str, cron: &str) -> Value {
    let response =
        create_schedule(app, &session.access_token, schedule_input(workflow, cron)).await;
    response.data()["createScheduleTrigger"].clone()
}

async fn create_webhook(app: &TestApp, token: &str, input: Value) -> GqlResponse {
    app.graphql_as(token, CREATE_WEBHOOK, json!({ "input": input }))
        .await
}

/// A new webhook of `workflow`: its id and its path.
async fn webhook(app: &TestApp, session: &Session, workflow: &str) -> (String, String) {
    let response = create_webhook(
        app,
        &session.access_token,
        json!({ "workflowId": workflow }),
    )
    .await;
    let payload = &response.data()["createWebhookTrigger"];
    let path = payload["path"]
        .as_str()
        .unwrap_or_else(|| panic!("no path in {payload}"))
        .to_owned();
    (id_of(&payload["trigger"]), path)
}

async fn set_enabled(app: &TestApp, token: &str, trigger: &str, enabled: bool) -> GqlResponse {
    app.graphql_as(
        token,
        SET_ENABLED,
        json!({ "input": { "triggerId": trigger, "enabled": enabled } }),
    )
    .await
}

async fn delete_trigger(app: &TestApp, token: &str, trigger: &str) -> GqlResponse {
    app.graphql_as(token, DELETE, json!({ "input": { "triggerId": trigger } }))
        .await
}

async fn archive(app: &TestApp, session: &Session, workflow: &str) {
    let response = app
        .graphql_as(
            &session.access_token,
            ARCHIVE,
            json!({ "input": { "workflowId": workflow } }),
        )
        .await;
    assert!(
        response.data()["archiveWorkflow"]["archivedAt"].is_string(),
        "{}",
        response.body
    );
}

/// The workflow's triggers, oldest first.
async fn triggers(app: &TestApp, session: &Session, workflow: &str) -> Vec<Value> {
    let response = app
        .graphql_as(&session.access_token, TRIGGERS, json!({ "id": workflow }))
        .await;
    response.data()["workflow"]["triggers"]
        .as_array()
        .unwrap_or_else(|| panic!("no triggers in {}", response.body))
        .clone()
}

/// The trigger `id` as the workflow lists it.
async fn trigger_of(app: &TestApp, session: &Session, workflow: &str, id: &str) -> Value {
    let listed = triggers(app, session, workflow).await;
    listed
        .iter()
        .find(|t| t["id"].as_str() == Some(id))
        .unwrap_or_else(|| panic!("no trigger {id} in {listed:?}"))
        .clone()
}

/// The trigger `id` once `done` holds for it (waits up to 10 s).
async fn trigger_when(
    app: &TestApp,
    session: &Session,
    workflow: &str,
    id: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let found = trigger_of(app, session, workflow, id).await;
        if done(&found) {
            return found;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the trigger did not change in time: {found}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// The workflow's executions, newest first.
async fn executions(app: &TestApp, session: &Session, workflow: &str) -> Vec<Value> {
    let response = app
        .graphql_as(&session.access_token, EXECUTIONS, json!({ "id": workflow }))
        .await;
    nodes(&response.data()["workflow"]["executions"])
}

/// The workflow's executions once there are at least `count` (waits up to
/// 10 s).
async fn executions_when(
    app: &TestApp,
    session: &Session,
    workflow: &str,
    count: usize,
) -> Vec<Value> {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let found = executions(app, session, workflow).await;
        if found.len() >= count {
            return found;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {count} executions in time: {found:?}",
            found.len()
        );
        tokio::time::sleep(POLL).await;
    }
}

async fn execution(app: &TestApp, session: &Session, id: &str) -> Value {
    let response = app
        .graphql_as(&session.access_token, EXECUTION, json!({ "id": id }))
        .await;
    response.data()["execution"].clone()
}

/// POSTs `body` (none when `None`) to a webhook path with extra `headers`;
/// answers the status and the JSON body (null when empty).
async fn deliver(
    app: &TestApp,
    path: &str,
    body: Option<String>,
    headers: &[(&str, &str)],
) -> (StatusCode, Value) {
    let mut request = app.http().post(app.url(path));
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("POST to the webhook");
    let status = response.status();
    let text = response.text().await.expect("response body");
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"))
    };
    (status, body)
}

/// Delivers `body` and answers the id of the execution it queued.
async fn fire(app: &TestApp, path: &str, body: &Value) -> String {
    let (status, answer) = deliver(app, path, Some(body.to_string()), &[]).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert_eq!(answer["status"], "QUEUED", "{answer}");
    answer["executionId"]
        .as_str()
        .unwrap_or_else(|| panic!("no executionId in {answer}"))
        .to_owned()
}

/// The token in a webhook path.
fn token_of(path: &str) -> &str {
    path.strip_prefix("/hooks/")
        .unwrap_or_else(|| panic!("not a webhook path: {path}"))
}

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

fn id_of(node: &Value) -> String {
    node["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {node}"))
        .to_owned()
}
