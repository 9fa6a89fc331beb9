//! The flows that run through the owner's mailbox or change a password:
//! email verification, changing and resetting a password, the password
//! policy, upgrading weaker hashes, and the rate limits on mailing links.
//! Mail is read from the capturing mailer (polled, since some goes out in
//! the background); time moves only through `app.clock`.

use std::time::Instant;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use chrono::{DateTime, Duration, Utc};
use entity::user;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::json;
use uuid::Uuid;

use crate::support::{GqlResponse, PASSWORD, Session, TestApp, unique_email};

/// A strong password none of the users starts with.
const NEW_PASSWORD: &str = "a fresh and rather long passphrase";
/// How a hash made with the designed argon2id parameters starts.
const DESIGNED_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$";

const VIEWER: &str = "{ viewer { id emailVerified } }";
const REGISTER: &str = "mutation($input: RegisterInput!) {
  register(input: $input) { accessToken } }";
const REFRESH: &str = "mutation($input: RefreshSessionInput!) {
  refreshSession(input: $input) { accessToken refreshToken user { id } } }";
const VERIFY_EMAIL: &str = "mutation($input: VerifyEmailInput!) {
  verifyEmail(input: $input) { email verifiedAt } }";
const RESEND: &str = "mutation { resendVerificationEmail }";
const CHANGE_PASSWORD: &str = "mutation($input: ChangePasswordInput!) {
  changePassword(input: $input) { user { id } revokedSessions } }";
const REQUEST_RESET: &str = "mutation($input: RequestPasswordResetInput!) {
  requestPasswordReset(input: $input) }";
const RESET_PASSWORD: &str = "mutation($input: ResetPasswordInput!) {
  resetPassword(input: $input) }";

/// A kind of link FlowPilot mails: the app page it opens and how its token
/// starts.
struct Link {
    path: &'static str,
    prefix: &'static str,
}

const VERIFY_LINK: Link = Link {
    path: "/verify-email",
    prefix: "fpv_",
};
const RESET_LINK: Link = Link {
    path: "/reset-password",
    prefix: "fpp_",
};

/// The token of the `nth` (from 1) link of this kind mailed to `email`.
async fn mailed_token(app: &TestApp, email: &str, link: &Link, nth: usize) -> String {
    app.mailed_token(email, link.path, link.prefix, nth).await
}

async fn registered(app: &TestApp) -> (String, Session) {
    let email = unique_email();
    let session = app.register(&email).await;
    (email, session)
}

async fn sign_in(app: &TestApp, email: &str, password: &str) -> Session {
    Session::from_payload(&app.login(email, password, &[]).await.data()["login"])
}

async fn signs_in(app: &TestApp, email: &str, password: &str) -> bool {
    let response = app.login(email, password, &[]).await;
    response.body.get("errors").is_none()
        && response.body["data"]["login"]["__typename"] == "AuthPayload"
}

/// Whether `access_token` is still accepted.
async fn works(app: &TestApp, access_token: &str) -> bool {
    let response = app.graphql_as(access_token, VIEWER, json!({})).await;
    response.body.get("errors").is_none() && response.body["data"]["viewer"]["id"].is_string()
}

async fn email_verified(app: &TestApp, access_token: &str) -> bool {
    app.graphql_as(access_token, VIEWER, json!({})).await.data()["viewer"]["emailVerified"]
        .as_bool()
        .expect("emailVerified is a Boolean")
}

async fn refresh(app: &TestApp, refresh_token: &str) -> GqlResponse {
    app.graphql(
        REFRESH,
        json!({ "input": { "refreshToken": refresh_token } }),
    )
    .await
}

async fn verify_email(app: &TestApp, token: &str) -> GqlResponse {
    app.graphql(VERIFY_EMAIL, json!({ "input": { "token": token } }))
        .await
}

async fn resend(app: &TestApp, access_token: &str) -> GqlResponse {
    app.graphql_as(access_token, RESEND, json!({})).await
}

async fn change_password(
    app: &TestApp,
    access_token: &str,
    current: &str,
    new: &str,
) -> GqlResponse {
    app.graphql_as(
        access_token,
        CHANGE_PASSWORD,
        json!({ "input": { "currentPassword": current, "newPassword": new } }),
    )
    .await
}

async fn request_reset(app: &TestApp, email: &str) -> GqlResponse {
    app.graphql(REQUEST_RESET, json!({ "input": { "email": email } }))
        .await
}

async fn reset_password(app: &TestApp, token: &str, new_password: &str) -> GqlResponse {
    app.graphql(
        RESET_PASSWORD,
        json!({ "input": { "token": token, "newPassword": new_password } }),
    )
    .await
}

/// Asks for a reset of `email` and returns the mailed token.
async fn reset_token(app: &TestApp, email: &str) -> String {
    assert_eq!(
        request_reset(app, email).await.data()["requestPasswordReset"],
        true
    );
    mailed_token(app, email, &RESET_LINK, 1).await
}

#[track_caller]
fn assert_bad_input(response: &GqlResponse, field: &str) {
    assert_eq!(response.error_code(), "BAD_USER_INPUT", "{}", response.body);
    assert_eq!(response.error_field(), field, "{}", response.body);
}

// Email verification

#[tokio::test]
async fn the_link_mailed_at_registration_verifies_the_email_once() {
    let app = TestApp::spawn().await;
    let (email, session) = registered(&app).await;
    let mail = app
        .mails_with_link(&email, VERIFY_LINK.path, 1)
        .await
        .remove(0);
    assert!(mail.subject.contains("Verify"), "{}", mail.subject);
    let token = mailed_token(&app, &email, &VERIFY_LINK, 1).await;
    assert!(!email_verified(&app, &session.access_token).await);

    // Ten minutes on, so a time from the system clock would stand out.
    app.clock.advance(Duration::minutes(10));
    let before = app.clock.now();
    let response = verify_email(&app, &token).await;
    let after = app.clock.now();
    let verification = &response.data()["verifyEmail"];
    assert_eq!(verification["email"], email.as_str());
    let verified_at: DateTime<Utc> = verification["verifiedAt"]
        .as_str()
        .expect("verifiedAt")
        .parse()
        .expect("verifiedAt is an RFC 3339 time");
    assert!(
        before - Duration::seconds(1) <= verified_at && verified_at <= after + Duration::seconds(1),
        "verifiedAt {verified_at} is the server's now ({before})"
    );
    assert!(email_verified(&app, &session.access_token).await);

    assert_bad_input(&verify_email(&app, &token).await, "token");
    assert_bad_input(&verify_email(&app, "fpv_no-such-token").await, "token");
}

#[tokio::test]
async fn a_verification_link_works_for_a_day_and_no_longer() {
    let app = TestApp::spawn().await;
    let (early, _) = registered(&app).await;
    let (late, _) = registered(&app).await;
    let early_token = mailed_token(&app, &early, &VERIFY_LINK, 1).await;
    let late_token = mailed_token(&app, &late, &VERIFY_LINK, 1).await;

    app.clock
        .advance(Duration::hours(23) + Duration::minutes(59));
    assert_eq!(
        verify_email(&app, &early_token).await.data()["verifyEmail"]["email"],
        early.as_str()
    );
    app.clock.advance(Duration::minutes(2));
    assert_bad_input(&verify_email(&app, &late_token).await, "token");
}

#[tokio::test]
async fn a_resent_verification_link_replaces_the_earlier_one_until_the_email_is_verified() {
    let app = TestApp::spawn().await;
    let (email, session) = registered(&app).await;
    let first = mailed_token(&app, &email, &VERIFY_LINK, 1).await;

    assert_eq!(
        resend(&app, &session.access_token).await.data()["resendVerificationEmail"],
        true
    );
    let second = mailed_token(&app, &email, &VERIFY_LINK, 2).await;
    assert_ne!(first, second);
    assert_bad_input(&verify_email(&app, &first).await, "token");
    assert_eq!(
        verify_email(&app, &second).await.data()["verifyEmail"]["email"],
        email.as_str()
    );

    let response = resend(&app, &session.access_token).await;
    assert_eq!(response.error_code(), "CONFLICT", "already verified");
}

#[tokio::test]
async fn resending_verification_and_changing_the_password_need_a_signed_in_user() {
    let app = TestApp::spawn().await;
    let response = app.graphql(RESEND, json!({})).await;
    assert_eq!(response.error_code(), "UNAUTHENTICATED");
    let response = app
        .graphql(
            CHANGE_PASSWORD,
            json!({ "input": { "currentPassword": PASSWORD, "newPassword": NEW_PASSWORD } }),
        )
        .await;
    assert_eq!(response.error_code(), "UNAUTHENTICATED");
}

#[tokio::test]
async fn an_unverified_user_can_sign_in() {
    let app = TestApp::spawn().await;
    let (email, _) = registered(&app).await;
    let session = sign_in(&app, &email, PASSWORD).await;
    assert!(!email_verified(&app, &session.access_token).await);
}

// Changing a password

#[tokio::test]
async fn changing_the_password_needs_the_current_one_and_a_strong_new_one() {
    let app = TestApp::spawn().await;
    let (email, session) = registered(&app).await;
    let other = sign_in(&app, &email, PASSWORD).await;

    let token = &session.access_token;
    let wrong = change_password(&app, token, "not-the-password", NEW_PASSWORD).await;
    assert_bad_input(&wrong, "currentPassword");
    for weak in ["short", "password123"] {
        let response = change_password(&app, token, PASSWORD, weak).await;
        assert_bad_input(&response, "newPassword");
    }

    assert!(
        works(&app, &other.access_token).await,
        "a refused change ends no session"
    );
    assert!(
        signs_in(&app, &email, PASSWORD).await,
        "and keeps the password"
    );
}

#[tokio::test]
async fn changing_the_password_ends_every_other_session_at_once() {
    let app = TestApp::spawn().await;
    let (email, current) = registered(&app).await;
    let laptop = sign_in(&app, &email, PASSWORD).await;
    let phone = sign_in(&app, &email, PASSWORD).await;

    let response = change_password(&app, &current.access_token, PASSWORD, NEW_PASSWORD).await;
    let payload = &response.data()["changePassword"];
    assert_eq!(payload["revokedSessions"], 2);
    assert_eq!(payload["user"]["id"], current.user_id.as_str());

    for other in [&laptop, &phone] {
        assert!(!works(&app, &other.access_token).await);
        assert_eq!(
            refresh(&app, &other.refresh_token).await.error_code(),
            "UNAUTHENTICATED"
        );
    }
    assert!(
        works(&app, &current.access_token).await,
        "the current session stays"
    );
    assert!(
        refresh(&app, &current.refresh_token)
            .await
            .body
            .get("errors")
            .is_none()
    );

    assert!(!signs_in(&app, &email, PASSWORD).await);
    assert!(signs_in(&app, &email, NEW_PASSWORD).await);
}

// The password policy and stored hashes

#[tokio::test]
async fn new_passwords_that_are_short_or_common_are_refused_at_registration() {
    let app = TestApp::spawn().await;
    let email = unique_email();
    for weak in ["short", "1234567890", "Password1234", "QWERTYUIOP"] {
        let input = json!({ "email": email, "password": weak, "displayName": "Test User" });
        let response = app.graphql(REGISTER, json!({ "input": input })).await;
        assert_bad_input(&response, "password");
    }
    // Nothing was created: the address is still free.
    app.register(&email).await;
}

/// A PHC hash of `password` with weaker argon2id parameters than ours.
fn weaker_hash(password: &str) -> String {
    let params = Params::new(4096, 1, 1, None).expect("valid argon2 parameters");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(password.as_bytes(), &SaltString::generate(&mut OsRng))
        .expect("hashing works")
        .to_string()
}

async fn stored_hash(app: &TestApp, user_id: Uuid) -> String {
    user::Entity::find_by_id(user_id)
        .one(&app.state.db)
        .await
        .unwrap()
        .expect("the user exists")
        .password_hash
}

#[tokio::test]
async fn a_hash_made_with_weaker_parameters_is_upgraded_at_the_next_sign_in() {
    let app = TestApp::spawn().await;
    let (email, session) = registered(&app).await;
    let user_id: Uuid = session.user_id.parse().expect("user id is a UUID");
    let weaker = weaker_hash(PASSWORD);
    user::Entity::update_many()
        .col_expr(user::Column::PasswordHash, Expr::value(weaker.clone()))
        .filter(user::Column::Id.eq(user_id))
        .exec(&app.state.db)
        .await
        .unwrap();

    assert!(
        signs_in(&app, &email, PASSWORD).await,
        "the weaker hash still verifies"
    );
    // The rewrite may happen after the answer: give it a moment.
    let deadline = Instant::now() + std::time::Duration::from_secs(5);
    let mut stored = stored_hash(&app, user_id).await;
    while stored == weaker && Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        stored = stored_hash(&app, user_id).await;
    }
    assert!(stored.starts_with(DESIGNED_HASH), "{stored}");
    assert!(signs_in(&app, &email, PASSWORD).await);
}

// Resetting a forgotten password

#[tokio::test]
async fn reset_requests_are_answered_alike_but_mailed_only_to_known_emails() {
    let app = TestApp::spawn().await;
    let (known, _) = registered(&app).await;
    let unknown = unique_email();
    for email in [&unknown, &known] {
        assert_eq!(
            request_reset(&app, email).await.data()["requestPasswordReset"],
            true
        );
    }
    mailed_token(&app, &known, &RESET_LINK, 1).await;
    let captured = app.mailer.captured();
    assert!(captured.iter().all(|m| m.to != unknown), "{captured:?}");

    assert_bad_input(&request_reset(&app, "not-an-email").await, "email");
}

#[tokio::test]
async fn a_reset_link_sets_a_new_password_once_and_ends_every_session() {
    let app = TestApp::spawn().await;
    let (email, first) = registered(&app).await;
    let second = sign_in(&app, &email, PASSWORD).await;
    let token = reset_token(&app, &email).await;

    let response = reset_password(&app, &token, NEW_PASSWORD).await;
    assert_eq!(response.data()["resetPassword"], true);
    for session in [&first, &second] {
        assert!(!works(&app, &session.access_token).await);
        assert_eq!(
            refresh(&app, &session.refresh_token).await.error_code(),
            "UNAUTHENTICATED"
        );
    }
    assert!(!signs_in(&app, &email, PASSWORD).await);
    assert!(signs_in(&app, &email, NEW_PASSWORD).await);

    let again = reset_password(&app, &token, "yet another long passphrase").await;
    assert_bad_input(&again, "token");
    assert!(
        signs_in(&app, &email, NEW_PASSWORD).await,
        "a used link changes nothing"
    );
    assert_bad_input(
        &reset_password(&app, "fpp_no-such-token", NEW_PASSWORD).await,
        "token",
    );
}

#[tokio::test]
async fn a_weak_new_password_is_refused_and_leaves_the_reset_link_usable() {
    let app = TestApp::spawn().await;
    let (email, _) = registered(&app).await;
    let token = reset_token(&app, &email).await;
    for weak in ["short", "qwertyuiop"] {
        assert_bad_input(&reset_password(&app, &token, weak).await, "newPassword");
    }
    assert!(
        signs_in(&app, &email, PASSWORD).await,
        "the password is unchanged"
    );

    let response = reset_password(&app, &token, NEW_PASSWORD).await;
    assert_eq!(response.data()["resetPassword"], true);
    assert!(signs_in(&app, &email, NEW_PASSWORD).await);
}

#[tokio::test]
async fn a_reset_link_works_for_an_hour_and_no_longer() {
    let app = TestApp::spawn().await;
    let (early, _) = registered(&app).await;
    let (late, _) = registered(&app).await;
    let early_token = reset_token(&app, &early).await;
    let late_token = reset_token(&app, &late).await;

    app.clock.advance(Duration::minutes(59));
    let response = reset_password(&app, &early_token, NEW_PASSWORD).await;
    assert_eq!(response.data()["resetPassword"], true);
    app.clock.advance(Duration::minutes(2));
    assert_bad_input(
        &reset_password(&app, &late_token, NEW_PASSWORD).await,
        "token",
    );
    assert!(
        signs_in(&app, &late, PASSWORD).await,
        "the password is unchanged"
    );
}

#[tokio::test]
async fn a_reset_lifts_a_lockout() {
    let app = TestApp::spawn().await;
    let (email, _) = registered(&app).await;
    for _ in 0..5 {
        assert!(!signs_in(&app, &email, "not-the-password").await);
    }
    assert!(
        !signs_in(&app, &email, PASSWORD).await,
        "the account is locked"
    );

    let token = reset_token(&app, &email).await;
    let response = reset_password(&app, &token, NEW_PASSWORD).await;
    assert_eq!(response.data()["resetPassword"], true);
    assert!(
        signs_in(&app, &email, NEW_PASSWORD).await,
        "no wait for the lock to end"
    );
}

#[tokio::test]
async fn a_reset_marks_the_email_verified() {
    let app = TestApp::spawn().await;
    let (email, session) = registered(&app).await;
    assert!(!email_verified(&app, &session.access_token).await);

    let token = reset_token(&app, &email).await;
    let response = reset_password(&app, &token, NEW_PASSWORD).await;
    assert_eq!(response.data()["resetPassword"], true);
    let fresh = sign_in(&app, &email, NEW_PASSWORD).await;
    assert!(email_verified(&app, &fresh.access_token).await);
}

// Rate limits on mailing links

async fn app_limiting_each_email_to_two() -> TestApp {
    TestApp::spawn_with(|settings| {
        settings.rate_limit_per_ip = 100;
        settings.rate_limit_per_email = 2;
    })
    .await
}

fn one_window(app: &TestApp) -> Duration {
    Duration::seconds(i64::try_from(app.settings.rate_limit_window_secs).expect("window fits"))
}

#[track_caller]
fn assert_rate_limited(app: &TestApp, response: &GqlResponse) {
    assert_eq!(response.error_code(), "RATE_LIMITED", "{}", response.body);
    let retry_after = response.body["errors"][0]["extensions"]["retryAfter"]
        .as_f64()
        .unwrap_or_else(|| panic!("no retryAfter in {}", response.body));
    let window = app.settings.rate_limit_window_secs as f64;
    assert!(retry_after > 0.0 && retry_after <= window, "{retry_after}");
}

#[tokio::test]
async fn password_reset_requests_over_the_email_limit_wait_for_the_next_window() {
    let app = app_limiting_each_email_to_two().await;
    let (email, _) = registered(&app).await;
    for _ in 0..2 {
        assert_eq!(
            request_reset(&app, &email).await.data()["requestPasswordReset"],
            true
        );
    }
    assert_rate_limited(&app, &request_reset(&app, &email).await);
    assert_eq!(
        request_reset(&app, &unique_email()).await.data()["requestPasswordReset"],
        true,
        "another email has a count of its own"
    );

    app.clock.advance(one_window(&app));
    assert_eq!(
        request_reset(&app, &email).await.data()["requestPasswordReset"],
        true
    );
}

#[tokio::test]
async fn verification_resends_over_the_email_limit_wait_for_the_next_window() {
    let app = app_limiting_each_email_to_two().await;
    let (_, session) = registered(&app).await;
    for _ in 0..2 {
        assert_eq!(
            resend(&app, &session.access_token).await.data()["resendVerificationEmail"],
            true
        );
    }
    assert_rate_limited(&app, &resend(&app, &session.access_token).await);
    let (_, other) = registered(&app).await;
    assert_eq!(
        resend(&app, &other.access_token).await.data()["resendVerificationEmail"],
        true,
        "another user has a count of their own"
    );

    app.clock.advance(one_window(&app));
    assert_eq!(
        resend(&app, &session.access_token).await.data()["resendVerificationEmail"],
        true
    );
}
