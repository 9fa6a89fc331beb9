//! Hostile GraphQL documents against a spawned `flowpilot serve`: fragments
//! that multiply, the same shape on `Subscription`, NUL characters in
//! arguments, parse errors that would echo megabytes, and responses with
//! thousands of errors. Each is refused at once with its code and reason,
//! on every transport, while cheap queries keep being answered and memory
//! stays flat.

use std::time::Duration;

use futures::future::join_all;
use serde_json::{Value, json};

use crate::support::spawned::Spawned;
use crate::support::ws::WsClient;
use crate::support::{GqlResponse, TestApp};

/// `query{__typename ...F0} fragment F0 on Query{__typename ...F1 ...F1} …`:
/// 2^n fields once expanded, in about 40 bytes per fragment.
pub fn doubling_fragments(operation: &str, on: &str, n: usize) -> String {
    let mut document = format!("{operation}{{__typename ...F0}}");
    for i in 0..n {
        document.push_str(&format!(
            " fragment F{i} on {on}{{__typename ...F{next} ...F{next}}}",
            next = i + 1
        ));
    }
    document.push_str(&format!(" fragment F{n} on {on}{{__typename}}"));
    document
}

fn extension<'a>(error: &'a Value, name: &str) -> &'a str {
    error["extensions"][name].as_str().unwrap_or_default()
}

/// Asserts `errors[0]` is the refusal for going over `limit`.
fn assert_limit(body: &Value, limit: &str) {
    let error = &body["errors"][0];
    assert_eq!(extension(error, "code"), "BAD_USER_INPUT", "{body}");
    assert_eq!(extension(error, "reason"), "LIMIT_EXCEEDED", "{body}");
    assert_eq!(extension(error, "limit"), limit, "{body}");
}

/// An app whose own engine is off, so the spawned server runs everything.
async fn app() -> TestApp {
    TestApp::spawn_with(|s| s.run_engine = false).await
}

#[tokio::test]
async fn doubling_fragments_are_refused_at_once_while_cheap_queries_are_answered() {
    let app = app().await;
    let server = Spawned::start(&app, &[]).await;
    for n in [22, 26, 30, 60] {
        let document = doubling_fragments("query", "Query", n);
        assert!(document.len() < 3_000, "the n={n} document is small");
        let response = server.graphql(None, &document, json!({})).await;
        assert_limit(&response.body, "fields");
    }
    // Eight at once, with a cheap query among them: every one is answered.
    let hostile = doubling_fragments("query", "Query", 30);
    let refusals = (0..8).map(|_| server.graphql(None, &hostile, json!({})));
    let (refused, cheap) = tokio::time::timeout(
        Duration::from_secs(30),
        futures::future::join(
            join_all(refusals),
            server.graphql(None, "{ __typename }", json!({})),
        ),
    )
    .await
    .expect("every request is answered");
    for response in refused {
        assert_limit(&response.body, "fields");
    }
    assert_eq!(cheap.data()["__typename"], "Query");
    // A batch refuses each hostile operation by itself.
    let batch = json!([
        { "query": hostile },
        { "query": "{ __typename }" },
    ]);
    let answers: Value = server.post(None, &batch).await.json().await.unwrap();
    assert_limit(&answers[0], "fields");
    assert_eq!(answers[1]["data"]["__typename"], "Query");
}

#[tokio::test]
async fn the_doubling_shape_on_subscription_is_refused_small_on_every_transport() {
    let app = app().await;
    let server = Spawned::start(&app, &[]).await;
    let before = server.peak_memory_kib();
    for n in [20, 30] {
        let document = doubling_fragments("subscription", "Subscription", n);
        // HTTP: one short refusal, not megabytes of validation errors.
        let response = server
            .post(None, &json!({ "query": document }))
            .await
            .text()
            .await
            .unwrap();
        assert!(response.len() < 4_096, "{} bytes", response.len());
        assert_limit(&serde_json::from_str(&response).unwrap(), "fields");
        // WebSocket: the operation ends with the same error.
        let mut client = WsClient::connect_as_to(server.address, None).await;
        client
            .send(json!({ "id": "1", "type": "subscribe", "payload": { "query": document } }))
            .await;
        let message = client.next_json().await;
        assert_eq!(message["type"], "error", "{message}");
        assert_limit(&json!({ "errors": message["payload"] }), "fields");
        client.close().await;
        // SSE: the stream answers with the refusal.
        let sse = server
            .http()
            .post(server.url("/graphql/stream"))
            .header("accept", "text/event-stream")
            .json(&json!({ "query": document }))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(sse.contains("LIMIT_EXCEEDED"), "{sse}");
        assert!(sse.len() < 4_096, "{} bytes", sse.len());
    }
    let grown_mib = server.peak_memory_kib().saturating_sub(before) / 1024;
    assert!(grown_mib < 50, "the peak grew by {grown_mib} MiB");
}

#[tokio::test]
async fn nul_characters_in_arguments_and_webhook_bodies_are_bad_user_input() {
    let app = app().await;
    let owner = app.user().await;
    let organization = app.organization(&owner, "Nul Org").await;
    let steps = json!([{ "id": "a", "kind": "TRANSFORM", "config": { "output": 1 } }]);
    let workflow = app.workflow(&owner, &organization, steps).await;
    let server = Spawned::start(&app, &[]).await;
    let token = Some(owner.access_token.as_str());
    let nul = "a\u{0}b";
    let cases: Vec<(Option<&str>, &str, Value)> = vec![
        (
            None,
            r#"{ organizationBySlug(slug: "a\u0000b") { id } }"#,
            json!({}),
        ),
        (
            None,
            "mutation($input: LoginInput!) { login(input: $input) { __typename } }",
            json!({ "input": { "email": format!("{nul}@example.com"), "password": "whatever-it-is" } }),
        ),
        (
            token,
            "mutation($input: CreateWorkflowInput!) { createWorkflow(input: $input) { id } }",
            json!({ "input": { "organizationId": organization, "name": nul, "definition": { "steps": [] } } }),
        ),
        (
            token,
            "query($org: ID!, $search: String) { organization(id: $org) { workflows(filter: { search: $search }) { totalCount } } }",
            json!({ "org": organization, "search": nul }),
        ),
        (
            token,
            "mutation($input: RunWorkflowInput!) { runWorkflow(input: $input) { id } }",
            json!({ "input": { "workflowId": workflow, "input": { "name": nul } } }),
        ),
        (
            token,
            "mutation($input: RunWorkflowInput!) { runWorkflow(input: $input) { id } }",
            json!({ "input": { "workflowId": workflow, "idempotencyKey": nul } }),
        ),
        (
            token,
            "mutation($input: CreateScheduleTriggerInput!) { createScheduleTrigger(input: $input) { id } }",
            json!({ "input": { "workflowId": workflow, "cron": "0 * * * *", "timeZone": "UTC", "input": { "k": nul } } }),
        ),
    ];
    for (token, query, variables) in cases {
        let response = server.graphql(token, query, variables).await;
        assert_eq!(
            response.error_code(),
            "BAD_USER_INPUT",
            "{query}: {}",
            response.body
        );
        assert!(
            response.error_message().contains("NUL"),
            "{query}: {}",
            response.body
        );
    }
    // A webhook body with a NUL starts nothing: 400.
    let hook = app
        .graphql_as(
            &owner.access_token,
            "mutation($input: CreateWebhookTriggerInput!) { createWebhookTrigger(input: $input) { path } }",
            json!({ "input": { "workflowId": workflow } }),
        )
        .await;
    let path = hook.data()["createWebhookTrigger"]["path"]
        .as_str()
        .unwrap();
    let delivered = server
        .http()
        .post(server.url(path))
        .header("content-type", "application/json")
        .body(r#"{"name": "a\u0000b"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(delivered.status(), 400);
    let body: Value = delivered.json().await.unwrap();
    assert!(body.to_string().contains("NUL"), "{body}");
}

#[tokio::test]
async fn a_parse_error_does_not_echo_the_document_back() {
    let app = app().await;
    let server = Spawned::start(&app, &[]).await;
    // One 900 KB line that breaks at its very end.
    let document = format!("{{ {} $$$ }}", "__typename ".repeat(90_000));
    let limits = [("FLOWPILOT_MAX_QUERY_TOKENS", "1000000")];
    let lenient = Spawned::start(&app, &limits).await;
    for target in [&server, &lenient] {
        let text = target
            .post(None, &json!({ "query": document }))
            .await
            .text()
            .await
            .unwrap();
        assert!(text.len() < 2_048, "{} bytes: {}", text.len(), &text[..200]);
        let body: Value = serde_json::from_str(&text).unwrap();
        let reason = extension(&body["errors"][0], "reason");
        assert!(
            reason == "PARSE_FAILED" || reason == "LIMIT_EXCEEDED",
            "{body}"
        );
    }
    // Within the token limit, the syntax error itself is reported.
    let response = lenient.graphql(None, &document, json!({})).await;
    assert_eq!(
        extension(&response.body["errors"][0], "reason"),
        "PARSE_FAILED"
    );
    assert_eq!(response.error_code(), "BAD_USER_INPUT");
}

#[tokio::test]
async fn a_response_keeps_at_most_fifty_errors_and_sums_up_the_rest() {
    let app = app().await;
    let server = Spawned::start(&app, &[]).await;
    let aliases: String = (0..100)
        .map(|i| format!("o{i}: organization(id: \"not-a-uuid\") {{ id }} "))
        .collect();
    let response: GqlResponse = server
        .graphql(None, &format!("{{ {aliases} }}"), json!({}))
        .await;
    let errors = response.body["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 50, "{}", response.body);
    assert_eq!(errors[49]["message"], "51 more errors were left out");
    assert_eq!(extension(&errors[49], "limit"), "errors");
}

#[tokio::test]
async fn documents_over_the_token_alias_directive_and_nesting_limits_are_refused() {
    let app = app().await;
    let server = Spawned::start(&app, &[]).await;
    let cases = [
        (format!("{{ {} }}", "__typename ".repeat(16_000)), "tokens"),
        (
            format!(
                "{{ {} }}",
                (0..101)
                    .map(|i| format!("a{i}: __typename "))
                    .collect::<String>()
            ),
            "aliases",
        ),
        (
            format!("{{ __typename {} }}", "@include(if: true) ".repeat(51)),
            "directives",
        ),
        (
            format!(
                "{{ organizationBySlug(slug: {}\"x\"{}) {{ id }} }}",
                "[".repeat(70),
                "]".repeat(70)
            ),
            "nesting",
        ),
    ];
    for (document, limit) in cases {
        let response = server.graphql(None, &document, json!({})).await;
        assert_limit(&response.body, limit);
    }
}

#[tokio::test]
async fn a_response_over_the_size_limit_is_one_error_naming_the_limit() {
    let app = app().await;
    let server = Spawned::start(&app, &[("FLOWPILOT_MAX_RESPONSE_BYTES", "2000")]).await;
    let response = server
        .graphql(
            None,
            "{ __schema { types { name description } } }",
            json!({}),
        )
        .await;
    assert_limit(&response.body, "responseBytes");
    assert_eq!(response.body["data"], Value::Null);
    let small = server.graphql(None, "{ __typename }", json!({})).await;
    assert_eq!(small.data()["__typename"], "Query");
}
