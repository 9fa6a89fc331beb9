//! Registration, sign-in, access tokens and refresh rotation.

use base64::Engine;
use chrono::Duration;
use entity::{refresh_token, user, user_session};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::support::{GqlResponse, PASSWORD, Session, TestApp};

const REGISTER: &str = "mutation($input: RegisterInput!) {
  register(input: $input) { accessToken refreshToken accessTokenExpiresAt user { id email displayName memberships { role } } }
}";
const LOGIN: &str = "mutation($input: LoginInput!) {
  login(input: $input) { __typename ... on AuthPayload { accessToken refreshToken user { id email } } }
}";
const REFRESH: &str = "mutation($input: RefreshSessionInput!) {
  refreshSession(input: $input) { accessToken refreshToken user { id } }
}";
const VIEWER: &str = "{ viewer { id email displayName } }";

async fn register(app: &TestApp, email: &str, password: &str, display_name: &str) -> GqlResponse {
    app.graphql(
        REGISTER,
        json!({ "input": { "email": email, "password": password, "displayName": display_name } }),
    )
    .await
}

async fn login(app: &TestApp, email: &str, password: &str) -> GqlResponse {
    app.graphql(
        LOGIN,
        json!({ "input": { "email": email, "password": password } }),
    )
    .await
}

async fn refresh(app: &TestApp, refresh_token: &str) -> GqlResponse {
    app.graphql(
        REFRESH,
        json!({ "input": { "refreshToken": refresh_token } }),
    )
    .await
}

fn user_id(value: &str) -> uuid::Uuid {
    value.parse().expect("user id is a UUID")
}

#[tokio::test]
async fn registering_signs_the_new_user_in() {
    let app = TestApp::spawn().await;
    let response = register(&app, "ada@example.com", PASSWORD, "Ada Lovelace").await;
    let payload = &response.data()["register"];
    assert_eq!(payload["user"]["email"], "ada@example.com");
    assert_eq!(payload["user"]["displayName"], "Ada Lovelace");
    assert_eq!(payload["user"]["memberships"], json!([]));
    let expires_at: chrono::DateTime<chrono::Utc> = payload["accessTokenExpiresAt"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let ttl = expires_at - app.clock.now();
    assert!(
        ttl > Duration::minutes(14) && ttl <= Duration::minutes(15),
        "access token lives {ttl}"
    );

    let session = Session::from_payload(payload);
    let viewer = app
        .graphql_as(&session.access_token, VIEWER, json!({}))
        .await;
    assert_eq!(viewer.data()["viewer"]["id"], payload["user"]["id"]);
}

#[tokio::test]
async fn emails_are_trimmed_and_compared_without_regard_to_case() {
    let app = TestApp::spawn().await;
    let response = register(&app, "  Grace.Hopper@Example.COM ", PASSWORD, "Grace").await;
    assert_eq!(
        response.data()["register"]["user"]["email"],
        "grace.hopper@example.com"
    );

    let signed_in = login(&app, "GRACE.HOPPER@example.com", PASSWORD).await;
    assert_eq!(signed_in.data()["login"]["__typename"], "AuthPayload");

    let again = register(&app, "grace.hopper@EXAMPLE.com", PASSWORD, "Grace again").await;
    assert_eq!(again.error_code(), "CONFLICT");
    assert_eq!(again.body["data"], Value::Null);
}

#[tokio::test]
async fn malformed_emails_are_bad_user_input_on_the_email_field() {
    let app = TestApp::spawn().await;
    for email in [
        "",
        "ada",
        "ada@",
        "@example.com",
        "ada@example",
        "ada lovelace@example.com",
        "a@b@example.com",
    ] {
        let response = register(&app, email, PASSWORD, "Ada").await;
        assert_eq!(
            response.error_code(),
            "BAD_USER_INPUT",
            "{email:?} was accepted"
        );
        assert_eq!(response.error_field(), "email");
    }
}

#[tokio::test]
async fn short_passwords_are_bad_user_input_on_the_password_field() {
    let app = TestApp::spawn().await;
    let response = register(&app, "ada@example.com", "123456789", "Ada").await;
    assert_eq!(response.error_code(), "BAD_USER_INPUT");
    assert_eq!(response.error_field(), "password");
    assert!(
        response.error_message().contains("10"),
        "message: {}",
        response.error_message()
    );
}

#[tokio::test]
async fn blank_display_names_are_bad_user_input() {
    let app = TestApp::spawn().await;
    let response = register(&app, "ada@example.com", PASSWORD, "   ").await;
    assert_eq!(response.error_code(), "BAD_USER_INPUT");
    assert_eq!(response.error_field(), "displayName");
}

#[tokio::test]
async fn passwords_are_stored_as_argon2id_with_the_designed_parameters() {
    let app = TestApp::spawn().await;
    let session = app.register("ada@example.com").await;
    let stored = user::Entity::find_by_id(user_id(&session.user_id))
        .one(&app.state.db)
        .await
        .unwrap()
        .unwrap();
    assert!(
        stored
            .password_hash
            .starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{}",
        stored.password_hash
    );
    assert!(!stored.password_hash.contains(PASSWORD));
}

#[tokio::test]
async fn refresh_tokens_are_stored_only_as_hashes() {
    let app = TestApp::spawn().await;
    let session = app.user().await;
    let hash: String = Sha256::digest(session.refresh_token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let rows = refresh_token::Entity::find()
        .all(&app.state.db)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].token_hash, hash);
    assert_ne!(rows[0].token_hash, session.refresh_token);
}

#[tokio::test]
async fn a_session_records_the_device_it_was_opened_from() {
    let app = TestApp::spawn().await;
    let response = app
        .http()
        .post(app.url("/graphql"))
        .header("user-agent", "FlowPilotTest/1.0")
        .json(&json!({ "query": REGISTER, "variables": { "input": { "email": "ada@example.com", "password": PASSWORD, "displayName": "Ada" } } }))
        .send()
        .await
        .unwrap();
    let session = Session::from_payload(&GqlResponse::from(response).await.data()["register"]);
    let rows = user_session::Entity::find()
        .filter(user_session::Column::UserId.eq(user_id(&session.user_id)))
        .all(&app.state.db)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].user_agent.as_deref(), Some("FlowPilotTest/1.0"));
    assert_eq!(rows[0].ip.as_deref(), Some("127.0.0.1"));
}

#[tokio::test]
async fn logging_in_with_the_right_password_opens_a_new_session() {
    let app = TestApp::spawn().await;
    let registered = app.register("ada@example.com").await;
    let response = login(&app, "ada@example.com", PASSWORD).await;
    let payload = &response.data()["login"];
    assert_eq!(payload["__typename"], "AuthPayload");
    assert_eq!(
        payload["user"]["id"].as_str(),
        Some(registered.user_id.as_str())
    );
    let session = Session::from_payload(payload);
    assert_ne!(session.refresh_token, registered.refresh_token);
    let viewer = app
        .graphql_as(&session.access_token, VIEWER, json!({}))
        .await;
    assert_eq!(viewer.data()["viewer"]["email"], "ada@example.com");
}

#[tokio::test]
async fn a_wrong_password_and_an_unknown_email_get_the_same_answer() {
    let app = TestApp::spawn().await;
    app.register("ada@example.com").await;
    let wrong_password = login(&app, "ada@example.com", "not the right password").await;
    let unknown_email = login(&app, "nobody@example.com", PASSWORD).await;
    assert_eq!(wrong_password.error_code(), "UNAUTHENTICATED");
    assert_eq!(wrong_password.body, unknown_email.body);
    assert_eq!(wrong_password.status, unknown_email.status);
}

#[tokio::test]
async fn the_viewer_is_null_without_a_token() {
    let app = TestApp::spawn().await;
    let response = app.graphql(VIEWER, json!({})).await;
    assert_eq!(response.data()["viewer"], Value::Null);
}

#[tokio::test]
async fn a_token_signed_with_another_key_is_unauthenticated() {
    let app = TestApp::spawn().await;
    let session = app.user().await;
    let claims: Value = insecure_claims(&session.access_token);
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(b"some-other-secret-that-is-long-enough"),
    )
    .unwrap();
    let response = app.graphql_as(&forged, VIEWER, json!({})).await;
    assert_eq!(response.error_code(), "UNAUTHENTICATED");
    assert_eq!(response.body["data"]["viewer"], Value::Null);
}

#[tokio::test]
async fn an_unsigned_token_is_unauthenticated() {
    let app = TestApp::spawn().await;
    let session = app.user().await;
    let claims = insecure_claims(&session.access_token);
    let encode = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let unsigned = format!(
        "{}.{}.",
        encode(&json!({ "alg": "none", "typ": "JWT" })),
        encode(&claims)
    );
    let response = app.graphql_as(&unsigned, VIEWER, json!({})).await;
    assert_eq!(response.error_code(), "UNAUTHENTICATED");
}

#[tokio::test]
async fn a_malformed_authorization_header_is_unauthenticated() {
    let app = TestApp::spawn().await;
    for header in ["Basic dXNlcjpwYXNz", "Bearer not-a-jwt"] {
        let response = app
            .http()
            .post(app.url("/graphql"))
            .header("authorization", header)
            .json(&json!({ "query": VIEWER }))
            .send()
            .await
            .unwrap();
        assert_eq!(
            GqlResponse::from(response).await.error_code(),
            "UNAUTHENTICATED",
            "{header}"
        );
    }
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let app = TestApp::spawn().await;
    let session = app.user().await;
    let response = app
        .http()
        .post(app.url("/graphql"))
        .header("authorization", format!("bearer {}", session.access_token))
        .json(&json!({ "query": VIEWER }))
        .send()
        .await
        .unwrap();
    let response = GqlResponse::from(response).await;
    assert_eq!(
        response.data()["viewer"]["id"].as_str(),
        Some(session.user_id.as_str())
    );
}

#[tokio::test]
async fn an_expired_access_token_is_unauthenticated() {
    let app = TestApp::spawn().await;
    let session = app.user().await;
    app.clock
        .advance(Duration::minutes(15) + Duration::seconds(1));
    let response = app
        .graphql_as(&session.access_token, VIEWER, json!({}))
        .await;
    assert_eq!(response.error_code(), "UNAUTHENTICATED");
    assert!(
        response.error_message().contains("expired"),
        "{}",
        response.error_message()
    );
}

#[tokio::test]
async fn a_stale_token_does_not_stop_public_mutations() {
    let app = TestApp::spawn().await;
    let session = app.register("ada@example.com").await;
    app.clock.advance(Duration::minutes(20));
    let response = app
        .graphql_as(
            &session.access_token,
            REFRESH,
            json!({ "input": { "refreshToken": session.refresh_token } }),
        )
        .await;
    assert!(response.data()["refreshSession"]["accessToken"].is_string());
}

#[tokio::test]
async fn refreshing_returns_a_new_pair_that_works() {
    let app = TestApp::spawn().await;
    let session = app.user().await;
    let response = refresh(&app, &session.refresh_token).await;
    let renewed = Session::from_payload(&response.data()["refreshSession"]);
    assert_eq!(renewed.user_id, session.user_id);
    assert_ne!(renewed.refresh_token, session.refresh_token);
    let viewer = app
        .graphql_as(&renewed.access_token, VIEWER, json!({}))
        .await;
    assert_eq!(
        viewer.data()["viewer"]["id"].as_str(),
        Some(session.user_id.as_str())
    );
    let next = refresh(&app, &renewed.refresh_token).await;
    assert!(next.data()["refreshSession"]["refreshToken"].is_string());
}

#[tokio::test]
async fn an_unknown_refresh_token_is_refused() {
    let app = TestApp::spawn().await;
    let response = refresh(&app, "fpr_this-token-was-never-issued").await;
    assert_eq!(response.error_code(), "UNAUTHENTICATED");
}

#[tokio::test]
async fn a_refresh_token_expires_after_seven_days() {
    let app = TestApp::spawn().await;
    let session = app.user().await;
    app.clock.advance(Duration::days(7) + Duration::minutes(1));
    let response = refresh(&app, &session.refresh_token).await;
    assert_eq!(response.error_code(), "UNAUTHENTICATED");
}

fn insecure_claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("JWT has a payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url payload");
    serde_json::from_slice(&bytes).expect("JSON claims")
}
