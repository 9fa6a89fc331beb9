//! HTTP steps against a local target server: the request as rendered, the
//! response as recorded, the idempotency key, limits, and the refusal of
//! addresses that are not public.

use flowpilot::egress::PrivateAccess;
use serde_json::{Value, json};

use crate::support::target::Target;
use crate::support::{Session, TestApp};

async fn app_allowing(access: &str) -> TestApp {
    let access = PrivateAccess::parse(access).unwrap();
    TestApp::spawn_with(|settings| settings.http_allow_private = access).await
}

/// Runs a one-workflow execution of `steps` with `input` and returns it finished.
async fn run_steps(app: &TestApp, steps: Value, input: Value) -> (Session, Value) {
    let owner = app.user().await;
    let organization = app.organization(&owner, "Acme").await;
    let workflow = app.workflow(&owner, &organization, steps).await;
    let id = app.run(&owner, &workflow, input).await;
    let execution = app.finished_execution(&owner, &id).await;
    (owner, execution)
}

fn step<'a>(execution: &'a Value, step_id: &str) -> &'a Value {
    execution["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stepId"] == step_id)
        .unwrap_or_else(|| panic!("no step {step_id} in {execution}"))
}

#[tokio::test]
async fn an_http_step_sends_the_rendered_request_and_records_the_response() {
    let target = Target::start().await;
    let app = app_allowing("true").await;
    let steps = json!([
        { "id": "call", "kind": "HTTP", "config": {
            "method": "post",
            "url": "{{ input.base }}/echo",
            "headers": { "X-Trace": "trace-{{ input.trace }}", "Authorization": "Bearer {{ input.token }}" },
            "body": { "n": "{{ input.n }}", "note": "hello" }
        } },
        { "id": "use", "kind": "TRANSFORM", "needs": ["call"],
          "config": { "output": "{{ steps.call.output.body.body.n + 1 }}" } }
    ]);
    let input = json!({ "base": target.url(""), "trace": "t1", "token": "sekret-token", "n": 7 });
    let (_, execution) = run_steps(&app, steps, input).await;
    assert_eq!(execution["status"], "SUCCEEDED", "{execution}");

    let received = target.received();
    assert_eq!(received.len(), 1);
    let request = &received[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.headers["x-trace"], "trace-t1");
    assert_eq!(request.headers["authorization"], "Bearer sekret-token");
    assert_eq!(request.headers["content-type"], "application/json");
    let key = format!("{}:call", execution["id"].as_str().unwrap());
    assert_eq!(request.headers["idempotency-key"], key);
    let sent: Value = serde_json::from_str(&request.body).unwrap();
    assert_eq!(sent, json!({ "n": 7, "note": "hello" }));

    let call = step(&execution, "call");
    assert_eq!(call["output"]["status"], 200);
    assert_eq!(call["output"]["truncated"], false);
    assert_eq!(
        call["output"]["body"]["body"],
        json!({ "n": 7, "note": "hello" }),
        "a JSON response is recorded parsed"
    );
    assert_eq!(
        call["output"]["headers"]["content-type"],
        "application/json"
    );
    assert_eq!(call["output"]["headers"]["set-cookie"], "[redacted]");
    assert_eq!(call["input"]["headers"]["Authorization"], "[redacted]");
    assert_eq!(call["input"]["headers"]["X-Trace"], "trace-t1");
    assert!(
        !call["input"].to_string().contains("sekret-token"),
        "the step's recorded input leaves the credential out: {}",
        call["input"]
    );
    assert_eq!(step(&execution, "use")["output"], 8);
}

#[tokio::test]
async fn private_loopback_and_mapped_addresses_are_refused_without_the_setting() {
    let target = Target::start().await;
    let app = TestApp::spawn().await;
    let port = target.address.port();
    for url in [
        format!("http://127.0.0.1:{port}/echo"),
        format!("http://localhost:{port}/echo"),
        format!("http://[::ffff:127.0.0.1]:{port}/echo"),
        format!("http://[::1]:{port}/echo"),
        format!("http://2130706433:{port}/echo"),
    ] {
        let steps = json!([{ "id": "call", "kind": "HTTP", "config": { "url": url } }]);
        let (_, execution) = run_steps(&app, steps, json!({})).await;
        assert_eq!(execution["status"], "FAILED", "{url}: {execution}");
        let error = step(&execution, "call")["error"].as_str().unwrap();
        assert!(error.contains("not a public address"), "{url}: {error}");
    }
    assert!(
        target.received().is_empty(),
        "no request reached the target"
    );
}

#[tokio::test]
async fn a_redirect_is_checked_again_and_refused_when_it_leads_to_a_refused_address() {
    let target = Target::start().await;
    // Only 127.0.0.1 is allowed, so 127.0.0.2 stands for a private address.
    let app = app_allowing("127.0.0.1").await;
    let port = target.address.port();
    let redirect_to = |to: &str| format!("{}?to={to}", target.url("/redirect"));
    let steps = json!([
        { "id": "allowed", "kind": "HTTP",
          "config": { "url": redirect_to(&format!("http://127.0.0.1:{port}/echo")) } },
        { "id": "refused", "kind": "HTTP", "needs": ["allowed"],
          "config": { "url": redirect_to(&format!("http://127.0.0.2:{port}/echo")) } }
    ]);
    let (_, execution) = run_steps(&app, steps, json!({})).await;
    assert_eq!(step(&execution, "allowed")["output"]["status"], 200);
    assert_eq!(execution["status"], "FAILED");
    let error = step(&execution, "refused")["error"].as_str().unwrap();
    assert!(error.contains("on a redirect"), "{error}");
    assert!(error.contains("127.0.0.2"), "{error}");
    let paths: Vec<String> = target.received().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/redirect", "/echo", "/redirect"]);
}

#[tokio::test]
async fn a_failing_status_is_retried_with_the_same_idempotency_key() {
    let target = Target::start().await;
    let app = app_allowing("true").await;
    let steps = json!([{
        "id": "call", "kind": "HTTP",
        "config": { "url": target.url("/flaky/2") },
        "retry": { "maxAttempts": 3, "initialBackoffMs": 10, "factor": 1, "maxBackoffMs": 10, "jitter": 0 }
    }]);
    let (_, execution) = run_steps(&app, steps, json!({})).await;
    assert_eq!(execution["status"], "SUCCEEDED", "{execution}");
    assert_eq!(step(&execution, "call")["attempt"], 3);
    assert_eq!(
        step(&execution, "call")["output"]["body"],
        json!({ "calls": 3 })
    );
    let keys: Vec<String> = target
        .received()
        .into_iter()
        .map(|r| r.headers["idempotency-key"].clone())
        .collect();
    let key = format!("{}:call", execution["id"].as_str().unwrap());
    assert_eq!(keys, [key.clone(), key.clone(), key]);
}

#[tokio::test]
async fn a_client_error_fails_the_step_with_the_status_and_the_body() {
    let target = Target::start().await;
    let app = app_allowing("true").await;
    let steps = json!([{ "id": "call", "kind": "HTTP",
        "config": { "method": "DELETE", "url": format!("{}?token=abc", target.url("/status/404")) } }]);
    let (_, execution) = run_steps(&app, steps, json!({})).await;
    assert_eq!(execution["status"], "FAILED");
    let error = step(&execution, "call")["error"].as_str().unwrap();
    assert!(error.contains("404"), "{error}");
    assert!(error.contains("status 404"), "the body is quoted: {error}");
    assert!(!error.contains("abc"), "the query is left out: {error}");
    assert_eq!(target.received()[0].method, "DELETE");
}

#[tokio::test]
async fn a_large_response_is_cut_at_the_limit_and_marked_truncated() {
    let target = Target::start().await;
    let access = PrivateAccess::All;
    let app = TestApp::spawn_with(|settings| {
        settings.http_allow_private = access;
        settings.http_max_response_bytes = 1000;
    })
    .await;
    let steps = json!([
        { "id": "big", "kind": "HTTP", "config": { "url": target.url("/bytes/50000") } },
        { "id": "small", "kind": "HTTP", "config": { "url": target.url("/bytes/1000") } }
    ]);
    let (_, execution) = run_steps(&app, steps, json!({})).await;
    assert_eq!(execution["status"], "SUCCEEDED", "{execution}");
    let big = &step(&execution, "big")["output"];
    assert_eq!(big["truncated"], true);
    assert_eq!(big["body"].as_str().unwrap().len(), 1000);
    let small = &step(&execution, "small")["output"];
    assert_eq!(small["truncated"], false);
    assert_eq!(small["body"].as_str().unwrap().len(), 1000);
}

#[tokio::test]
async fn a_slow_response_fails_the_attempt_at_the_step_timeout() {
    let target = Target::start().await;
    let app = app_allowing("true").await;
    let steps = json!([{ "id": "call", "kind": "HTTP", "timeoutMs": 200,
        "config": { "url": target.url("/slow/5000") } }]);
    let (_, execution) = run_steps(&app, steps, json!({})).await;
    assert_eq!(execution["status"], "FAILED");
    let error = step(&execution, "call")["error"].as_str().unwrap();
    assert!(error.contains("timed out"), "{error}");
}

#[tokio::test]
async fn http_step_configs_are_checked_when_the_workflow_is_saved() {
    let app = TestApp::spawn().await;
    let owner = app.user().await;
    let organization = app.organization(&owner, "Acme").await;
    let cases = [
        (json!({ "method": "GET" }), "url"),
        (json!({ "url": "ftp://example.com/file" }), "url"),
        (json!({ "url": "not a url" }), "url"),
        (
            json!({ "url": "https://example.com", "method": "BREW" }),
            "method",
        ),
        (
            json!({ "url": "https://example.com", "headers": { "Bad Name": "x" } }),
            "headers.Bad Name",
        ),
        (
            json!({ "url": "https://example.com", "headers": { "X-N": 5 } }),
            "headers.X-N",
        ),
        (
            json!({ "url": "https://example.com", "timeout": 5 }),
            "timeout",
        ),
    ];
    for (config, field) in cases {
        let response = app
            .graphql_as(
                &owner.access_token,
                "mutation($input: CreateWorkflowInput!) { createWorkflow(input: $input) { id } }",
                json!({ "input": { "organizationId": organization, "name": "h",
                    "definition": { "steps": [{ "id": "call", "kind": "HTTP", "config": config }] } } }),
            )
            .await;
        assert_eq!(response.error_code(), "BAD_USER_INPUT", "{config}");
        assert_eq!(
            response.error_field(),
            format!("definition.steps[0].config.{field}"),
            "{config}"
        );
    }
}
