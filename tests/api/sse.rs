//! `POST /graphql/stream`: GraphQL over Server-Sent Events in graphql-sse's
//! distinct connections mode. One request per operation; each result is an
//! event `next` whose data is the JSON result, `complete` (with empty
//! data) ends the stream and the response. Refused credentials answer 401
//! and a body that is not a GraphQL request 400, as JSON; a stream whose
//! session ends, or whose member is removed, gets a FORBIDDEN result, then
//! `complete`.

use std::time::Duration;

use entity::role::Role;
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use serde_json::{Value, json};

use crate::members::REMOVE_MEMBER;
use crate::subscriptions::idle_app;
use crate::support::ws::{EXECUTION_EVENTS, WAIT};
use crate::support::{GqlResponse, TestApp};

const ORGANIZATION_EVENTS: &str = "subscription($organizationId: ID!) {
  organizationExecutionEvents(organizationId: $organizationId) {
    __typename
    ... on ExecutionEvent { seq kind executionId executionStatus }
    ... on StreamResync { reason occurredAt }
  }
}";

/// One event of the stream.
#[derive(Debug)]
struct SseEvent {
    event: String,
    data: String,
}

/// An open `text/event-stream` response, read frame by frame.
struct SseStream {
    response: reqwest::Response,
    buffer: Vec<u8>,
}

impl SseStream {
    /// The next event, or `None` once the response has ended; fails if
    /// nothing comes within [`WAIT`].
    async fn next_event(&mut self) -> Option<SseEvent> {
        tokio::time::timeout(WAIT, self.read_event())
            .await
            .expect("an event (or the end) within the wait")
    }

    /// The next event if one comes within `wait`; fails if the response ends.
    async fn event_within(&mut self, wait: Duration) -> Option<SseEvent> {
        tokio::time::timeout(wait, self.read_event())
            .await
            .ok()
            .map(|event| event.expect("an event, not the end of the response"))
    }

    /// Reads until a whole frame holding an event is buffered. Only the
    /// chunk read awaits, and it loses nothing when cancelled, so a timeout
    /// around this leaves the stream readable.
    async fn read_event(&mut self) -> Option<SseEvent> {
        loop {
            while let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let frame: Vec<u8> = self.buffer.drain(..end + 2).collect();
                let frame = String::from_utf8(frame).expect("UTF-8 frame");
                if let Some(event) = parse_frame(&frame) {
                    return Some(event);
                }
            }
            match self.response.chunk().await.expect("the stream reads") {
                Some(chunk) => self.buffer.extend_from_slice(&chunk),
                None => {
                    assert!(
                        self.buffer.iter().all(u8::is_ascii_whitespace),
                        "the response ended inside a frame: {:?}",
                        String::from_utf8_lossy(&self.buffer)
                    );
                    return None;
                }
            }
        }
    }

    /// The data of the next event, which must be `next`.
    async fn next_result(&mut self) -> Value {
        let event = self.next_event().await.expect("a next event, not the end");
        assert_eq!(event.event, "next", "{event:?}");
        serde_json::from_str(&event.data).expect("JSON data")
    }

    /// Asserts the next event is `complete` and the response then ends.
    async fn expect_complete_and_end(&mut self) {
        let event = self.next_event().await.expect("complete, not the end");
        assert_eq!(event.event, "complete", "{event:?}");
        assert_eq!(event.data, "", "{event:?}");
        let after = self.next_event().await;
        assert!(after.is_none(), "an event after complete: {after:?}");
    }
}

/// The event in one frame; `None` for a frame of comments only.
fn parse_frame(frame: &str) -> Option<SseEvent> {
    let mut event = None;
    let mut data: Option<String> = None;
    for line in frame.lines() {
        if line.is_empty() || line.starts_with(':') {
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => event = Some(value.to_owned()),
            "data" => match data.as_mut() {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => data = Some(value.to_owned()),
            },
            _ => {}
        }
    }
    if event.is_none() && data.is_none() {
        return None;
    }
    Some(SseEvent {
        event: event.unwrap_or_else(|| "message".to_owned()),
        data: data.unwrap_or_default(),
    })
}

/// Posts `query` to `/graphql/stream` as graphql-sse clients do.
async fn post_stream(
    app: &TestApp,
    token: Option<&str>,
    query: &str,
    variables: Value,
) -> reqwest::Response {
    let mut request = app
        .http()
        .post(app.url("/graphql/stream"))
        .header(ACCEPT, "text/event-stream")
        .json(&json!({ "query": query, "variables": variables, "operationName": null }));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("POST /graphql/stream succeeds")
}

/// Opens a stream, asserting the server answered with one.
async fn open_stream(app: &TestApp, token: &str, query: &str, variables: Value) -> SseStream {
    let response = post_stream(app, Some(token), query, variables).await;
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );
    SseStream {
        response,
        buffer: Vec::new(),
    }
}

#[tokio::test]
async fn a_subscription_to_execution_events_streams_every_event_in_order_then_completes() {
    let app = TestApp::spawn().await;
    let owner = app.user().await;
    let organization = app.organization(&owner, "Acme").await;
    let workflow = app
        .workflow(
            &owner,
            &organization,
            json!([
                { "id": "a", "kind": "DELAY", "config": { "ms": 50 } },
                { "id": "b", "kind": "TRANSFORM", "needs": ["a"], "config": { "output": "{{ input.n }}" } }
            ]),
        )
        .await;
    let id = app.run(&owner, &workflow, json!({ "n": 5 })).await;
    let mut stream = open_stream(
        &app,
        &owner.access_token,
        EXECUTION_EVENTS,
        json!({ "executionId": id, "afterSeq": 0 }),
    )
    .await;

    let mut events = Vec::new();
    loop {
        let event = stream
            .next_event()
            .await
            .expect("events until complete, not the end");
        match event.event.as_str() {
            "next" => {
                let result: Value = serde_json::from_str(&event.data).expect("JSON data");
                assert!(result.get("errors").is_none(), "error in stream: {result}");
                events.push(result["data"]["executionEvents"].clone());
            }
            "complete" => {
                assert_eq!(event.data, "");
                break;
            }
            other => panic!("unexpected event {other}: {event:?}"),
        }
    }
    let after = stream.next_event().await;
    assert!(after.is_none(), "an event after complete: {after:?}");

    let seqs: Vec<i64> = events.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=7).collect::<Vec<_>>());
    assert_eq!(events[0]["kind"], "EXECUTION_QUEUED");
    let last = events.last().unwrap();
    assert_eq!(last["kind"], "EXECUTION_SUCCEEDED");
    assert_eq!(
        last["execution"],
        json!({ "id": id, "status": "SUCCEEDED", "output": 5, "error": null, "lastEventSeq": 7 })
    );
    assert!(events.iter().all(|e| e["executionId"] == id.as_str()));
}

#[tokio::test]
async fn a_query_over_sse_yields_one_next_then_complete() {
    let app = TestApp::spawn().await;
    let session = app.user().await;
    let mut stream = open_stream(&app, &session.access_token, "{ viewer { id } }", json!({})).await;
    let result = stream.next_result().await;
    assert!(result.get("errors").is_none(), "{result}");
    assert_eq!(result["data"]["viewer"]["id"], session.user_id.as_str());
    stream.expect_complete_and_end().await;
}

#[tokio::test]
async fn an_invalid_token_is_403_unauthenticated_and_a_body_that_is_not_a_request_is_400() {
    let app = TestApp::spawn().await;

    let refused = GqlResponse::from(
        post_stream(&app, Some("not-a-token"), "{ viewer { id } }", json!({})).await,
    )
    .await;
    // A token that will never work: 403 (an expired one is 401; see
    // websocket_closes).
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(refused.error_code(), "UNAUTHENTICATED");

    for body in ["{ not json", r#"{"nope":1}"#] {
        let response = app
            .http()
            .post(app.url("/graphql/stream"))
            .header(ACCEPT, "text/event-stream")
            .header(CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .expect("POST /graphql/stream succeeds");
        let response = GqlResponse::from(response).await;
        assert_eq!(response.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(response.error_code(), "BAD_USER_INPUT", "{body}");
    }
}

#[tokio::test]
async fn an_outsider_subscribing_to_another_organizations_execution_gets_not_found_then_complete() {
    let (app, owner, _, workflow) = idle_app().await;
    let id = app.run(&owner, &workflow, json!({})).await;
    let outsider = app.user().await;
    let mut stream = open_stream(
        &app,
        &outsider.access_token,
        EXECUTION_EVENTS,
        json!({ "executionId": id, "afterSeq": 0 }),
    )
    .await;
    let result = stream.next_result().await;
    assert_eq!(
        result["errors"][0]["extensions"]["code"], "NOT_FOUND",
        "{result}"
    );
    stream.expect_complete_and_end().await;
}

#[tokio::test]
async fn logging_out_while_an_organization_stream_is_open_ends_it_with_forbidden_then_complete() {
    let (app, owner, organization, workflow) = idle_app().await;
    let mut stream = open_stream(
        &app,
        &owner.access_token,
        ORGANIZATION_EVENTS,
        json!({ "organizationId": organization }),
    )
    .await;

    // The stream's first item, its INITIAL resync, shows it is live.
    let initial = stream
        .event_within(Duration::from_secs(10))
        .await
        .expect("the stream's first item");
    let result: Value = serde_json::from_str(&initial.data).expect("JSON data");
    let streamed = &result["data"]["organizationExecutionEvents"];
    assert_eq!(
        (streamed["__typename"].as_str(), streamed["reason"].as_str()),
        (Some("StreamResync"), Some("INITIAL")),
        "{result}"
    );
    app.run(&owner, &workflow, json!({})).await;
    let event = stream
        .event_within(Duration::from_secs(10))
        .await
        .expect("the organization stream delivered an event");
    assert_eq!(event.event, "next", "{event:?}");
    let result: Value = serde_json::from_str(&event.data).expect("JSON data");
    assert!(result.get("errors").is_none(), "{result}");
    let streamed = &result["data"]["organizationExecutionEvents"];
    assert_eq!(streamed["__typename"], "ExecutionEvent", "{result}");
    assert_eq!(streamed["kind"], "EXECUTION_QUEUED", "{result}");

    let response = app
        .graphql_as(&owner.access_token, "mutation { logout }", json!({}))
        .await;
    assert_eq!(response.data()["logout"], true);

    // Events of earlier runs may still be on their way; the session's end
    // is the last result.
    let ended = loop {
        let result = stream.next_result().await;
        if result.get("errors").is_some() {
            break result;
        }
        assert_eq!(
            result["data"]["organizationExecutionEvents"]["kind"], "EXECUTION_QUEUED",
            "{result}"
        );
    };
    assert_eq!(
        ended["errors"][0]["extensions"]["code"], "FORBIDDEN",
        "{ended}"
    );
    stream.expect_complete_and_end().await;
}

#[tokio::test]
async fn removing_a_member_ends_their_stream_with_forbidden_access_changed_then_complete() {
    let (app, owner, organization, workflow) = idle_app().await;
    let viewer = app.member(&organization, Role::Viewer).await;
    let execution = app.run(&owner, &workflow, json!({})).await;
    let mut stream = open_stream(
        &app,
        &viewer.access_token,
        EXECUTION_EVENTS,
        json!({ "executionId": execution, "afterSeq": 0 }),
    )
    .await;
    let queued = stream.next_result().await;
    assert_eq!(queued["data"]["executionEvents"]["seq"], 1, "{queued}");

    let removed = app
        .graphql_as(
            &owner.access_token,
            REMOVE_MEMBER,
            json!({ "organizationId": organization, "userId": viewer.user_id }),
        )
        .await;
    assert_eq!(removed.data()["removeMember"], true);

    let ended = stream.next_result().await;
    let extensions = &ended["errors"][0]["extensions"];
    assert_eq!(
        (extensions["code"].as_str(), extensions["reason"].as_str()),
        (Some("FORBIDDEN"), Some("ACCESS_CHANGED")),
        "{ended}"
    );
    stream.expect_complete_and_end().await;
}

#[tokio::test]
async fn events_over_sse_keep_the_selection_order() {
    let app = TestApp::spawn().await;
    let owner = app.user().await;
    let id = app.one_step_execution(&owner).await;
    let query = "subscription($id: ID!) {
      executionEvents(executionId: $id, afterSeq: 0) { seq kind ...Rest }
    }
    fragment Rest on ExecutionEvent { executionId executionStatus }";
    let mut stream = open_stream(&app, &owner.access_token, query, json!({ "id": id })).await;
    let mut seen = 0;
    loop {
        let event = stream.next_event().await.expect("events until complete");
        if event.event == "complete" {
            break;
        }
        let result: Value = serde_json::from_str(&event.data).expect("JSON data");
        let fields: Vec<&str> = result["data"]["executionEvents"]
            .as_object()
            .expect("an event")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(fields, ["seq", "kind", "executionId", "executionStatus"]);
        seen += 1;
    }
    assert!(seen >= 3, "{seen} events");
}
