//! Sessions: refresh rotation with a reuse grace period and reuse
//! detection, logout, listing and revoking sessions, and the open
//! subscriptions of an ended session closing with 4403.

use base64::Engine;
use chrono::Duration;
use serde_json::{Value, json};

use crate::support::ws::WsClient;
use crate::support::{GqlResponse, PASSWORD, Session, TestApp, unique_email};

const REFRESH: &str = "mutation($input: RefreshSessionInput!) {
  refreshSession(input: $input) { accessToken refreshToken user { id } } }";
const VIEWER: &str = "{ viewer { id } }";
const SESSIONS: &str = "{ viewer { sessions { edges { node { id userAgent ip current createdAt lastSeenAt expiresAt } } pageInfo { hasNextPage } } } }";

async fn refresh(app: &TestApp, refresh_token: &str) -> GqlResponse {
    app.graphql(
        REFRESH,
        json!({ "input": { "refreshToken": refresh_token } }),
    )
    .await
}

fn refreshed(response: &GqlResponse) -> Session {
    Session::from_payload(&response.data()["refreshSession"])
}

async fn works(app: &TestApp, access_token: &str) -> bool {
    let response = app.graphql_as(access_token, VIEWER, json!({})).await;
    response.body.get("errors").is_none() && response.body["data"]["viewer"]["id"].is_string()
}

/// Signs `email` in again with a user agent of its own.
async fn login_from(app: &TestApp, email: &str, user_agent: &str) -> Session {
    let response = app
        .login(email, PASSWORD, &[("user-agent", user_agent)])
        .await;
    Session::from_payload(&response.data()["login"])
}

fn session_nodes(response: &GqlResponse) -> Vec<Value> {
    response.data()["viewer"]["sessions"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|edge| edge["node"].clone())
        .collect()
}

#[tokio::test]
async fn a_rotated_token_presented_again_within_the_grace_period_gets_another_pair() {
    let app = TestApp::spawn().await;
    let first = app.user().await;
    let second = refreshed(&refresh(&app, &first.refresh_token).await);
    app.clock.advance(Duration::seconds(9));
    let beside = refreshed(&refresh(&app, &first.refresh_token).await);
    assert_ne!(beside.refresh_token, second.refresh_token);
    assert!(
        works(&app, &second.access_token).await,
        "the first new pair still works"
    );
    assert!(works(&app, &beside.access_token).await);
    assert!(
        refresh(&app, &second.refresh_token)
            .await
            .body
            .get("errors")
            .is_none()
    );
}

#[tokio::test]
async fn concurrent_refreshes_of_one_token_inside_the_grace_period_both_succeed() {
    let app = TestApp::spawn().await;
    let session = app.user().await;
    let (a, b) = tokio::join!(
        refresh(&app, &session.refresh_token),
        refresh(&app, &session.refresh_token)
    );
    let (a, b) = (refreshed(&a), refreshed(&b));
    assert_ne!(a.refresh_token, b.refresh_token);
    assert!(works(&app, &a.access_token).await);
    assert!(works(&app, &b.access_token).await);
}

#[tokio::test]
async fn a_rotated_token_presented_after_the_grace_period_revokes_the_session_on_every_instance() {
    let app = TestApp::spawn().await;
    let other_instance = TestApp::start(app.settings.clone()).await;
    let first = app.user().await;
    let second = refreshed(&refresh(&app, &first.refresh_token).await);
    let mut socket = WsClient::connect_as(&other_instance, Some(&second.access_token)).await;

    app.clock.advance(Duration::seconds(11));
    let reused = refresh(&app, &first.refresh_token).await;
    assert_eq!(reused.error_code(), "UNAUTHENTICATED");

    assert!(!works(&app, &second.access_token).await);
    assert!(!works(&other_instance, &second.access_token).await);
    let descendant = refresh(&other_instance, &second.refresh_token).await;
    assert_eq!(descendant.error_code(), "UNAUTHENTICATED");
    socket.expect_close(4403).await;
    other_instance.stop().await;
}

#[tokio::test]
async fn the_reuse_grace_period_is_a_setting() {
    let app = TestApp::spawn_with(|settings| settings.refresh_reuse_grace_secs = 0).await;
    let first = app.user().await;
    let second = refreshed(&refresh(&app, &first.refresh_token).await);
    app.clock.advance(Duration::seconds(1));
    assert_eq!(
        refresh(&app, &first.refresh_token).await.error_code(),
        "UNAUTHENTICATED"
    );
    assert!(!works(&app, &second.access_token).await);
}

#[tokio::test]
async fn logging_out_ends_the_session_at_once_and_closes_its_subscriptions() {
    let app = TestApp::spawn().await;
    let email = unique_email();
    let session = app.register(&email).await;
    let other = login_from(&app, &email, "other-device").await;
    let mut socket = WsClient::connect_as(&app, Some(&session.access_token)).await;
    let mut other_socket = WsClient::connect_as(&app, Some(&other.access_token)).await;

    let response = app
        .graphql_as(&session.access_token, "mutation { logout }", json!({}))
        .await;
    assert_eq!(response.data()["logout"], true);
    socket.expect_close(4403).await;
    assert!(!works(&app, &session.access_token).await);
    assert_eq!(
        refresh(&app, &session.refresh_token).await.error_code(),
        "UNAUTHENTICATED"
    );

    assert!(
        works(&app, &other.access_token).await,
        "another session is untouched"
    );
    other_socket.send(json!({ "type": "ping" })).await;
    assert_eq!(other_socket.next_json().await["type"], "pong");
}

#[tokio::test]
async fn logging_out_everywhere_ends_every_session() {
    let app = TestApp::spawn().await;
    let email = unique_email();
    let session = app.register(&email).await;
    let other = login_from(&app, &email, "other-device").await;
    let response = app
        .graphql_as(&session.access_token, "mutation { logoutAll }", json!({}))
        .await;
    assert_eq!(response.data()["logoutAll"], 2);
    assert!(!works(&app, &session.access_token).await);
    assert!(!works(&app, &other.access_token).await);
}

#[tokio::test]
async fn sessions_are_listed_with_their_device_and_can_be_revoked() {
    let app = TestApp::spawn().await;
    let email = unique_email();
    let first = app.register(&email).await;
    let laptop = login_from(&app, &email, "Laptop/1.0").await;
    let phone = login_from(&app, &email, "Phone/2.0").await;

    let listed = session_nodes(
        &app.graphql_as(&laptop.access_token, SESSIONS, json!({}))
            .await,
    );
    assert_eq!(listed.len(), 3);
    assert_eq!(listed[0]["userAgent"], "Phone/2.0", "newest first");
    assert_eq!(listed[1]["userAgent"], "Laptop/1.0");
    assert_eq!(listed[1]["current"], true);
    assert_eq!(listed.iter().filter(|s| s["current"] == true).count(), 1);
    assert_eq!(listed[0]["ip"], "127.0.0.1");
    assert!(listed[0]["expiresAt"].is_string());

    let phone_id = listed[0]["id"].clone();
    let revoke = "mutation($input: RevokeSessionInput!) { revokeSession(input: $input) }";
    let response = app
        .graphql_as(
            &laptop.access_token,
            revoke,
            json!({ "input": { "sessionId": phone_id } }),
        )
        .await;
    assert_eq!(response.data()["revokeSession"], true);
    assert!(!works(&app, &phone.access_token).await);
    let again = app
        .graphql_as(
            &laptop.access_token,
            revoke,
            json!({ "input": { "sessionId": phone_id } }),
        )
        .await;
    assert_eq!(again.error_code(), "NOT_FOUND", "an ended session is gone");

    // Someone else's session is NOT_FOUND, and stays alive.
    let stranger = app.user().await;
    let theirs = session_nodes(
        &app.graphql_as(&stranger.access_token, SESSIONS, json!({}))
            .await,
    );
    let response = app
        .graphql_as(
            &laptop.access_token,
            revoke,
            json!({ "input": { "sessionId": theirs[0]["id"] } }),
        )
        .await;
    assert_eq!(response.error_code(), "NOT_FOUND");
    assert!(works(&app, &stranger.access_token).await);

    let response = app
        .graphql_as(
            &laptop.access_token,
            "mutation { revokeOtherSessions }",
            json!({}),
        )
        .await;
    assert_eq!(response.data()["revokeOtherSessions"], 1);
    assert!(!works(&app, &first.access_token).await);
    let left = session_nodes(
        &app.graphql_as(&laptop.access_token, SESSIONS, json!({}))
            .await,
    );
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["current"], true);
}

#[tokio::test]
async fn a_lapsed_session_is_not_listed() {
    let app = TestApp::spawn().await;
    let email = unique_email();
    app.register(&email).await;
    app.clock.advance(Duration::days(7) + Duration::minutes(1));
    let fresh = login_from(&app, &email, "Later/1.0").await;
    let listed = session_nodes(
        &app.graphql_as(&fresh.access_token, SESSIONS, json!({}))
            .await,
    );
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["userAgent"], "Later/1.0");
}

fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

fn sign(claims: &Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(
            b"test-jwt-secret-that-is-long-enough-for-flowpilot",
        ),
    )
    .unwrap()
}

#[tokio::test]
async fn tokens_with_our_signature_but_the_wrong_audience_issuer_or_type_are_refused() {
    let app = TestApp::spawn().await;
    let session = app.user().await;
    let claims = claims_of(&session.access_token);
    assert!(
        works(&app, &sign(&claims)).await,
        "re-signing the same claims works"
    );
    for (field, value) in [
        ("aud", json!("another-api")),
        ("iss", json!("someone-else")),
        ("typ", json!("refresh")),
        ("exp", json!(claims["iat"])),
        ("iat", json!(claims["iat"].as_i64().unwrap() + 3600)),
    ] {
        let mut forged = claims.clone();
        forged[field] = value;
        let response = app.graphql_as(&sign(&forged), VIEWER, json!({})).await;
        assert_eq!(response.error_code(), "UNAUTHENTICATED", "{field}");
    }
    let response = app
        .graphql_as(&session.refresh_token, VIEWER, json!({}))
        .await;
    assert_eq!(
        response.error_code(),
        "UNAUTHENTICATED",
        "a refresh token is no access token"
    );
}
