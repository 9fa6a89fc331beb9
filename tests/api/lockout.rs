//! Lockout after repeated failed sign-ins, the record of every attempt, and
//! the mail that tells the owner, with time moved through the `Clock`.

use chrono::Duration;
use entity::login_attempt;
use sea_orm::{EntityTrait, QueryOrder};
use serde_json::{Value, json};

use crate::support::{GqlResponse, PASSWORD, TestApp, unique_email};

async fn login(app: &TestApp, email: &str, password: &str) -> GqlResponse {
    app.login(email, password, &[]).await
}

fn succeeded(response: &GqlResponse) -> bool {
    response.body.get("errors").is_none()
        && response.body["data"]["login"]["__typename"] == "AuthPayload"
}

/// The error a refused sign-in gets, without its request-specific parts.
fn refusal(response: &GqlResponse) -> Value {
    let error = &response.body["errors"][0];
    json!({ "message": error["message"], "code": error["extensions"]["code"], "data": response.body["data"] })
}

async fn registered(app: &TestApp) -> String {
    let email = unique_email();
    app.register(&email).await;
    email
}

#[tokio::test]
async fn the_sixth_sign_in_is_refused_even_with_the_right_password_until_the_lock_ends() {
    let app = TestApp::spawn().await;
    let email = registered(&app).await;
    let wrong = login(&app, &email, "not-the-password").await;
    for _ in 0..4 {
        assert_eq!(
            refusal(&login(&app, &email, "not-the-password").await),
            refusal(&wrong)
        );
    }
    let locked = login(&app, &email, PASSWORD).await;
    assert!(!succeeded(&locked));
    assert_eq!(
        refusal(&locked),
        refusal(&wrong),
        "a lock answers like a wrong password"
    );
    let unknown = login(&app, "nobody-here@example.com", PASSWORD).await;
    assert_eq!(refusal(&unknown), refusal(&wrong));

    login(&app, &email, "not-the-password").await;
    let mails: Vec<_> = app
        .mailer
        .captured()
        .into_iter()
        .filter(|m| m.to == email && m.subject.contains("locked"))
        .collect();
    assert_eq!(mails.len(), 1, "the owner is told once: {mails:?}");

    app.clock.advance(Duration::minutes(14));
    assert!(
        !succeeded(&login(&app, &email, PASSWORD).await),
        "still locked"
    );
    app.clock
        .advance(Duration::minutes(1) + Duration::seconds(1));
    assert!(succeeded(&login(&app, &email, PASSWORD).await));
}

#[tokio::test]
async fn failures_spread_beyond_the_window_do_not_lock() {
    let app = TestApp::spawn().await;
    let email = registered(&app).await;
    for _ in 0..4 {
        login(&app, &email, "not-the-password").await;
    }
    app.clock.advance(Duration::minutes(16));
    for _ in 0..4 {
        login(&app, &email, "not-the-password").await;
    }
    assert!(succeeded(&login(&app, &email, PASSWORD).await));
}

#[tokio::test]
async fn a_successful_sign_in_starts_the_count_again() {
    let app = TestApp::spawn().await;
    let email = registered(&app).await;
    for _ in 0..4 {
        login(&app, &email, "not-the-password").await;
    }
    assert!(succeeded(&login(&app, &email, PASSWORD).await));
    for _ in 0..4 {
        login(&app, &email, "not-the-password").await;
    }
    assert!(succeeded(&login(&app, &email, PASSWORD).await));
}

#[tokio::test]
async fn the_threshold_and_the_durations_are_settings() {
    let app = TestApp::spawn_with(|settings| {
        settings.lockout_threshold = 2;
        settings.lockout_secs = 60;
    })
    .await;
    let email = registered(&app).await;
    login(&app, &email, "not-the-password").await;
    login(&app, &email, "not-the-password").await;
    assert!(!succeeded(&login(&app, &email, PASSWORD).await));
    app.clock.advance(Duration::seconds(61));
    assert!(succeeded(&login(&app, &email, PASSWORD).await));
}

#[tokio::test]
async fn every_attempt_is_recorded_with_its_email_address_and_reason() {
    let app = TestApp::spawn_with(|settings| settings.lockout_threshold = 1).await;
    let email = registered(&app).await;
    login(&app, "Nobody@Example.com", PASSWORD).await;
    login(&app, &email, "not-the-password").await;
    login(&app, &email, PASSWORD).await;
    app.clock.advance(Duration::minutes(16));
    login(&app, &email, PASSWORD).await;

    let attempts = login_attempt::Entity::find()
        .order_by_asc(login_attempt::Column::AttemptedAt)
        .all(&app.state.db)
        .await
        .unwrap();
    let seen: Vec<(String, bool, String, bool)> = attempts
        .iter()
        .map(|a| {
            (
                a.email.clone(),
                a.succeeded,
                a.reason.clone(),
                a.user_id.is_some(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (
                "nobody@example.com".to_owned(),
                false,
                "unknown_email".to_owned(),
                false
            ),
            (email.clone(), false, "wrong_password".to_owned(), true),
            (email.clone(), false, "locked".to_owned(), true),
            (email.clone(), true, "ok".to_owned(), true),
        ]
    );
    assert!(
        attempts
            .iter()
            .all(|a| a.ip.as_deref() == Some("127.0.0.1"))
    );
}
