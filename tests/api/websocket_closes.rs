//! How WebSockets end, and what their close codes tell a client.
//!
//! - A client's Close frame is answered with a Close frame of the same code
//!   on both protocols (RFC 6455 §5.5.1), so graphql-ws's lazy close and
//!   `dispose()` end with `wasClean: true`.
//! - An expired access token at `connection_init` closes 4419, which
//!   graphql-ws retries (its `connectionParams` refreshes first); a token
//!   that will never work closes 4403, which it does not, with the reason.
//! - An open socket lives as long as its session or API key, not its
//!   access token, and closes 4403 `session expired` when that lapses.

use std::time::Duration as StdDuration;

use chrono::Duration;
use reqwest::StatusCode;
use serde_json::json;

use crate::support::TestApp;
use crate::support::ws::WsClient;

/// Sends `connection_init` with `token` on a new socket and answers the
/// close code and reason it ends with.
async fn refused_init(app: &TestApp, token: &str) -> (u16, String) {
    let mut client = WsClient::connect(app).await;
    client
        .send(json!({
            "type": "connection_init",
            "payload": { "authorization": format!("Bearer {token}") }
        }))
        .await;
    match client.next_frame().await {
        crate::support::ws::Frame::Closed(Some(code), reason) => (code, reason),
        other => panic!("expected a close, got {other:?}"),
    }
}

#[tokio::test]
async fn an_expired_access_token_closes_4419_and_a_refreshed_one_connects() {
    let app = TestApp::spawn().await;
    let session = app.user().await;
    app.clock.advance(Duration::minutes(16));
    assert_eq!(
        refused_init(&app, &session.access_token).await,
        (4419, "token expired".to_owned())
    );
    let refreshed = app
        .graphql(
            "mutation($input: RefreshSessionInput!) { refreshSession(input: $input) { accessToken } }",
            json!({ "input": { "refreshToken": session.refresh_token } }),
        )
        .await;
    let token = refreshed.data()["refreshSession"]["accessToken"]
        .as_str()
        .unwrap()
        .to_owned();
    WsClient::connect_as(&app, Some(&token)).await;
}

#[tokio::test]
async fn a_token_that_will_never_work_closes_4403_with_why() {
    let app = TestApp::spawn().await;
    let (code, reason) = refused_init(&app, "not-a-token").await;
    assert_eq!((code, reason.as_str()), (4403, "invalid access token"));

    let session = app.user().await;
    let logout = app
        .graphql_as(&session.access_token, "mutation { logout }", json!({}))
        .await;
    assert_eq!(logout.data()["logout"], true);
    let (code, reason) = refused_init(&app, &session.access_token).await;
    assert_eq!(code, 4403);
    assert!(reason.contains("session"), "{reason}");
}

#[tokio::test]
async fn an_open_socket_outlives_its_access_token_and_ends_when_its_session_lapses() {
    let app = TestApp::spawn_with(|settings| settings.stream_recheck_ms = 100).await;
    let session = app.user().await;
    let mut client = WsClient::connect_as(&app, Some(&session.access_token)).await;
    // Past the access token's 15 minutes, the socket still serves.
    app.clock.advance(Duration::minutes(20));
    tokio::time::sleep(StdDuration::from_millis(400)).await;
    client.subscribe("q", "{ viewer { id } }", json!({})).await;
    let answers = client.data_until_complete("q", "viewer").await;
    assert_eq!(answers[0]["id"], session.user_id.as_str());
    // Past the session's own expiry (its refresh token's 7 days), it ends.
    app.clock.advance(Duration::days(8));
    assert_eq!(client.expect_close(4403).await, "session expired");
}

#[tokio::test]
async fn over_sse_an_expired_token_is_401_with_a_bearer_challenge_and_a_bad_one_403() {
    let app = TestApp::spawn().await;
    let session = app.user().await;
    let stream = |token: String| {
        let request = app
            .http()
            .post(app.url("/graphql/stream"))
            .header("accept", "text/event-stream")
            .bearer_auth(token)
            .json(&json!({ "query": "{ viewer { id } }" }));
        async move { request.send().await.unwrap() }
    };
    let bad = stream("not-a-token".into()).await;
    assert_eq!(bad.status(), StatusCode::FORBIDDEN);
    app.clock.advance(Duration::minutes(16));
    let expired = stream(session.access_token.clone()).await;
    assert_eq!(expired.status(), StatusCode::UNAUTHORIZED);
    let challenge = expired.headers()["www-authenticate"].to_str().unwrap();
    assert!(
        challenge.starts_with("Bearer error=\"invalid_token\""),
        "{challenge}"
    );
}

#[tokio::test]
async fn a_client_close_is_answered_with_the_same_code_on_both_protocols() {
    let app = TestApp::spawn().await;
    let session = app.user().await;
    for protocol in ["graphql-transport-ws", "graphql-ws"] {
        for code in [1000, 1001, 4499] {
            // Before `connection_init`, and once acknowledged.
            let fresh = WsClient::connect_with_protocol(&app, Some(protocol)).await;
            assert_eq!(
                fresh.close_with(code).await,
                Some(code),
                "{protocol} {code}"
            );

            let mut signed_in = WsClient::connect_with_protocol(&app, Some(protocol)).await;
            signed_in
                .send(json!({
                    "type": "connection_init",
                    "payload": { "authorization": format!("Bearer {}", session.access_token) }
                }))
                .await;
            assert_eq!(signed_in.next_json().await["type"], "connection_ack");
            assert_eq!(
                signed_in.close_with(code).await,
                Some(code),
                "{protocol} {code} after connection_ack"
            );
        }
    }
}

#[tokio::test]
async fn a_server_close_arrives_as_a_close_frame_with_its_code() {
    let app = TestApp::spawn().await;
    let mut client = WsClient::connect(&app).await;
    client
        .send(json!({ "type": "subscribe", "id": "1", "payload": { "query": "{ __typename }" } }))
        .await;
    // Subscribing before `connection_init` is unauthorized (4401).
    let reason = client.expect_close(4401).await;
    assert!(!reason.is_empty());
}
