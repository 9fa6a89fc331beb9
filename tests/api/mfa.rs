//! TOTP multi-factor sign-in: setting it up, the challenge a password alone
//! now gets, codes accepted once and only within one step of the server's
//! time, backup codes, and the limits on guessing (per challenge, lockout,
//! rate limit). Codes are computed from `app.clock`, which the tests move
//! instead of sleeping; a user's TOTP step is accepted once, so a test moves
//! the clock a step on before using another code.

use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};
use totp_rs::{Builder, Secret};

use crate::support::{GqlResponse, PASSWORD, Session, TestApp, unique_email};

const VIEWER: &str = "{ viewer { id mfaEnabled } }";
const SETUP: &str = "mutation { setupMfa { secret otpauthUri qrCodeSvg } }";
const ENABLE: &str = "mutation($input: EnableMfaInput!) {
  enableMfa(input: $input) { user { id mfaEnabled } backupCodes } }";
const REGENERATE: &str = "mutation($input: RegenerateBackupCodesInput!) {
  regenerateBackupCodes(input: $input) { user { id } backupCodes } }";
const DISABLE: &str = "mutation($input: DisableMfaInput!) {
  disableMfa(input: $input) { id mfaEnabled } }";
const LOGIN: &str = "mutation($input: LoginInput!) { login(input: $input) { __typename
  ... on AuthPayload { accessToken refreshToken user { id } }
  ... on MfaChallenge { challengeToken expiresAt } } }";
const COMPLETE: &str = "mutation($input: CompleteMfaLoginInput!) {
  completeMfaLogin(input: $input) { accessToken refreshToken user { id } } }";

/// The TOTP code an authenticator app shows for `secret_base32` at `at`.
pub(crate) fn code_at(secret_base32: &str, at: DateTime<Utc>) -> String {
    let secret = Secret::try_from_base32(secret_base32).expect("base32 secret");
    let totp = Builder::new().with_secret(secret).build().expect("totp");
    totp.generate(u64::try_from(at.timestamp()).expect("time after 1970"))
        .to_string()
}

/// Moves the clock one TOTP step on and returns the code of the new step,
/// which no earlier use can have spent.
pub(crate) fn next_step_code(app: &TestApp, secret: &str) -> String {
    app.clock.advance(Duration::seconds(30));
    code_at(secret, app.clock.now())
}

/// Six digits that are no code of `secret` within a minute of now.
fn wrong_code(app: &TestApp, secret: &str) -> String {
    let now = app.clock.now();
    let near: Vec<String> = (-2..=2)
        .map(|step| code_at(secret, now + Duration::seconds(30 * step)))
        .collect();
    ["000000", "111111", "222222", "333333", "444444", "555555"]
        .into_iter()
        .find(|candidate| near.iter().all(|code| code != *candidate))
        .expect("six candidates cannot all be near codes")
        .to_owned()
}

/// Moves the clock just past the next multiple of `period`, so a TOTP step
/// (or a rate-limit window) starts with nearly all its length ahead and a
/// test's requests cannot straddle its end.
fn move_to_start_of_next(app: &TestApp, period: Duration) {
    let period_ms = period.num_milliseconds();
    let into_period = app.clock.now().timestamp_millis().rem_euclid(period_ms);
    app.clock
        .advance(Duration::milliseconds(period_ms - into_period + 500));
}

/// `setupMfa` for `session`: the `MfaSetup` object.
async fn setup_mfa(app: &TestApp, session: &Session) -> Value {
    let response = app
        .graphql_as(&session.access_token, SETUP, json!({}))
        .await;
    response.data()["setupMfa"].clone()
}

async fn enable(app: &TestApp, session: &Session, code: &str) -> GqlResponse {
    app.graphql_as(
        &session.access_token,
        ENABLE,
        json!({ "input": { "code": code } }),
    )
    .await
}

fn strings(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|item| item.as_str().expect("a string").to_owned())
        .collect()
}

/// Sets MFA up and turns it on for `session` with a current code; returns
/// the base32 secret and the backup codes, as the client was shown them.
pub(crate) async fn enable_mfa(app: &TestApp, session: &Session) -> (String, Vec<String>) {
    let secret = setup_mfa(app, session).await["secret"]
        .as_str()
        .expect("secret")
        .to_owned();
    let response = enable(app, session, &code_at(&secret, app.clock.now())).await;
    let backup_codes = strings(&response.data()["enableMfa"]["backupCodes"]);
    (secret, backup_codes)
}

/// A registered user with MFA on, as their client knows them.
struct MfaUser {
    email: String,
    session: Session,
    secret: String,
    backup_codes: Vec<String>,
}

async fn user_with_mfa(app: &TestApp) -> MfaUser {
    let email = unique_email();
    let session = app.register(&email).await;
    let (secret, backup_codes) = enable_mfa(app, &session).await;
    MfaUser {
        email,
        session,
        secret,
        backup_codes,
    }
}

/// `login`, selecting both members of its result.
async fn sign_in(app: &TestApp, email: &str, password: &str) -> GqlResponse {
    app.graphql(
        LOGIN,
        json!({ "input": { "email": email, "password": password } }),
    )
    .await
}

/// Signs `email` in with the password and returns the challenge token.
pub(crate) async fn challenge(app: &TestApp, email: &str) -> String {
    let response = sign_in(app, email, PASSWORD).await;
    let login = &response.data()["login"];
    assert_eq!(login["__typename"], "MfaChallenge", "{}", response.body);
    login["challengeToken"]
        .as_str()
        .expect("challengeToken")
        .to_owned()
}

pub(crate) async fn complete(app: &TestApp, challenge_token: &str, code: &str) -> GqlResponse {
    app.graphql(
        COMPLETE,
        json!({ "input": { "challengeToken": challenge_token, "code": code } }),
    )
    .await
}

/// Signs `email` in with the password and answers the new challenge with
/// `code`.
async fn sign_in_with_code(app: &TestApp, email: &str, code: &str) -> GqlResponse {
    complete(app, &challenge(app, email).await, code).await
}

/// The session a successful `completeMfaLogin` gave.
#[track_caller]
pub(crate) fn signed_in(response: &GqlResponse) -> Session {
    Session::from_payload(&response.data()["completeMfaLogin"])
}

async fn viewer(app: &TestApp, access_token: &str) -> Value {
    let response = app.graphql_as(access_token, VIEWER, json!({})).await;
    response.data()["viewer"].clone()
}

async fn mfa_enabled(app: &TestApp, session: &Session) -> bool {
    viewer(app, &session.access_token).await["mfaEnabled"]
        .as_bool()
        .expect("mfaEnabled")
}

async fn regenerate(app: &TestApp, session: &Session, code: &str) -> GqlResponse {
    app.graphql_as(
        &session.access_token,
        REGENERATE,
        json!({ "input": { "code": code } }),
    )
    .await
}

async fn disable(app: &TestApp, session: &Session, password: &str, code: &str) -> GqlResponse {
    app.graphql_as(
        &session.access_token,
        DISABLE,
        json!({ "input": { "password": password, "code": code } }),
    )
    .await
}

/// Asserts the code was refused as input, not the request as a whole.
#[track_caller]
fn assert_code_refused(response: &GqlResponse) {
    assert_eq!(response.error_code(), "BAD_USER_INPUT", "{}", response.body);
    assert_eq!(response.error_field(), "code");
}

fn is_backup_code(code: &str) -> bool {
    let groups: Vec<&str> = code.split('-').collect();
    groups.len() == 4
        && groups.iter().all(|group| {
            group.len() == 4
                && group
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || ('2'..='7').contains(&c))
        })
}

#[tokio::test]
async fn mfa_is_on_only_once_a_code_from_the_set_up_secret_confirms_it() {
    let app = TestApp::spawn().await;
    let session = app.user().await;
    let setup = setup_mfa(&app, &session).await;
    let secret = setup["secret"].as_str().unwrap();
    assert!(
        !secret.is_empty() && Secret::try_from_base32(secret).is_ok() && !secret.contains('='),
        "unpadded base32: {secret}"
    );
    let uri = setup["otpauthUri"].as_str().unwrap();
    assert!(uri.starts_with("otpauth://totp/FlowPilot:"), "{uri}");
    assert!(uri.contains(&format!("secret={secret}")), "{uri}");
    assert!(uri.contains("issuer=FlowPilot"), "{uri}");
    let svg = setup["qrCodeSvg"].as_str().unwrap();
    assert!(svg.starts_with("<?xml") || svg.starts_with("<svg"), "{svg}");
    assert!(svg.contains("<svg"));
    assert!(!mfa_enabled(&app, &session).await);

    assert_code_refused(&enable(&app, &session, &wrong_code(&app, secret)).await);
    assert!(!mfa_enabled(&app, &session).await);

    let enabled = enable(&app, &session, &code_at(secret, app.clock.now())).await;
    let payload = &enabled.data()["enableMfa"];
    assert_eq!(payload["user"]["mfaEnabled"], true);
    let mut codes = strings(&payload["backupCodes"]);
    assert_eq!(codes.len(), 10);
    assert!(codes.iter().all(|code| is_backup_code(code)), "{codes:?}");
    codes.sort();
    codes.dedup();
    assert_eq!(codes.len(), 10, "the backup codes are distinct");
    assert!(mfa_enabled(&app, &session).await);

    let again = app
        .graphql_as(&session.access_token, SETUP, json!({}))
        .await;
    assert_eq!(again.error_code(), "CONFLICT", "MFA is already on");
    let twice = enable(&app, &session, &next_step_code(&app, secret)).await;
    assert_eq!(twice.error_code(), "CONFLICT");
}

#[tokio::test]
async fn enabling_needs_a_set_up_secret_and_takes_the_latest_one() {
    let app = TestApp::spawn().await;
    let session = app.user().await;
    assert_eq!(
        enable(&app, &session, "123456").await.error_code(),
        "CONFLICT",
        "no setupMfa first"
    );
    let first = setup_mfa(&app, &session).await["secret"].clone();
    let latest = setup_mfa(&app, &session).await["secret"].clone();
    assert_ne!(first, latest);
    let now = app.clock.now();
    assert_code_refused(&enable(&app, &session, &code_at(first.as_str().unwrap(), now)).await);
    enable(&app, &session, &code_at(latest.as_str().unwrap(), now))
        .await
        .data();
}

#[tokio::test]
async fn with_mfa_on_a_password_gets_a_challenge_that_a_current_code_completes() {
    let app = TestApp::spawn().await;
    let user = user_with_mfa(&app).await;
    let before = app.clock.now();
    let response = sign_in(&app, &user.email, PASSWORD).await;
    let login = &response.data()["login"];
    assert_eq!(login["__typename"], "MfaChallenge");
    assert!(login.get("accessToken").is_none(), "no tokens yet: {login}");
    let expires_at: DateTime<Utc> = login["expiresAt"].as_str().unwrap().parse().unwrap();
    let lifetime = expires_at - before;
    assert!(
        lifetime > Duration::minutes(5) - Duration::seconds(1)
            && lifetime < Duration::minutes(5) + Duration::seconds(5),
        "{lifetime}"
    );

    let challenge_token = login["challengeToken"].as_str().unwrap();
    let code = next_step_code(&app, &user.secret);
    let session = signed_in(&complete(&app, challenge_token, &code).await);
    assert_eq!(session.user_id, user.session.user_id);
    let seen = viewer(&app, &session.access_token).await;
    assert_eq!(seen["id"], user.session.user_id.as_str());
    assert_eq!(seen["mfaEnabled"], true);
    let refreshed = app
        .graphql(
            "mutation($input: RefreshSessionInput!) { refreshSession(input: $input) { accessToken } }",
            json!({ "input": { "refreshToken": session.refresh_token } }),
        )
        .await;
    assert!(refreshed.data()["refreshSession"]["accessToken"].is_string());
}

#[tokio::test]
async fn a_totp_code_is_accepted_once_and_never_the_one_that_enabled_mfa() {
    let app = TestApp::spawn().await;
    let email = unique_email();
    let session = app.register(&email).await;
    let secret = setup_mfa(&app, &session).await["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let enabling_code = code_at(&secret, app.clock.now());
    enable(&app, &session, &enabling_code).await.data();
    assert_code_refused(&sign_in_with_code(&app, &email, &enabling_code).await);

    let code = next_step_code(&app, &secret);
    signed_in(&sign_in_with_code(&app, &email, &code).await);
    assert_code_refused(&sign_in_with_code(&app, &email, &code).await);
    let next = next_step_code(&app, &secret);
    signed_in(&sign_in_with_code(&app, &email, &next).await);
}

#[tokio::test]
async fn codes_one_step_from_the_server_time_are_accepted_and_two_steps_are_not() {
    let app = TestApp::spawn().await;
    let user = user_with_mfa(&app).await;
    // Far past the enabling step, so no step near now has been used; at the
    // start of a step, so the server's step is the one computed here.
    app.clock.advance(Duration::minutes(5));
    move_to_start_of_next(&app, Duration::seconds(30));
    let now = app.clock.now();
    let code = |offset_secs: i64| code_at(&user.secret, now + Duration::seconds(offset_secs));

    let first = challenge(&app, &user.email).await;
    assert_code_refused(&complete(&app, &first, &code(60)).await);
    assert_code_refused(&complete(&app, &first, &code(-60)).await);
    signed_in(&complete(&app, &first, &code(-30)).await);
    // The later step after the earlier one, as "accepted once" refuses
    // earlier steps than the last used.
    let second = challenge(&app, &user.email).await;
    signed_in(&complete(&app, &second, &code(30)).await);
}

#[tokio::test]
async fn a_backup_code_signs_in_once_in_any_case_with_or_without_dashes() {
    let app = TestApp::spawn().await;
    let user = user_with_mfa(&app).await;
    let codes = &user.backup_codes;
    signed_in(&sign_in_with_code(&app, &user.email, &codes[0]).await);
    assert_code_refused(&sign_in_with_code(&app, &user.email, &codes[0]).await);
    for typed in [
        codes[1].to_uppercase(),
        codes[2].replace('-', ""),
        codes[3].to_uppercase().replace('-', ""),
    ] {
        signed_in(&sign_in_with_code(&app, &user.email, &typed).await);
    }
}

#[tokio::test]
async fn a_challenge_dies_after_five_wrong_codes() {
    // Lockout would stop the right code too; this is about the challenge.
    let app = TestApp::spawn_with(|settings| settings.lockout_threshold = 100).await;
    let user = user_with_mfa(&app).await;
    let challenge_token = challenge(&app, &user.email).await;
    let wrong = wrong_code(&app, &user.secret);
    for _ in 0..5 {
        assert_code_refused(&complete(&app, &challenge_token, &wrong).await);
    }
    let code = next_step_code(&app, &user.secret);
    let right = complete(&app, &challenge_token, &code).await;
    assert_eq!(right.error_code(), "UNAUTHENTICATED");
    let code = next_step_code(&app, &user.secret);
    signed_in(&sign_in_with_code(&app, &user.email, &code).await);
}

/// The error a refused sign-in gets, without its request-specific parts.
fn refusal(response: &GqlResponse) -> Value {
    let error = &response.body["errors"][0];
    json!({ "message": error["message"], "code": error["extensions"]["code"], "data": response.body["data"] })
}

#[tokio::test]
async fn wrong_codes_across_challenges_lock_the_account() {
    let app = TestApp::spawn().await;
    let user = user_with_mfa(&app).await;
    let wrong = wrong_code(&app, &user.secret);
    for _ in 0..4 {
        assert_code_refused(&sign_in_with_code(&app, &user.email, &wrong).await);
    }
    let last = challenge(&app, &user.email).await;
    assert_code_refused(&complete(&app, &last, &wrong).await);

    let code = next_step_code(&app, &user.secret);
    let right = complete(&app, &last, &code).await;
    assert!(
        right.body.get("errors").is_some() && right.body["data"]["completeMfaLogin"].is_null(),
        "a locked account is not signed in: {}",
        right.body
    );
    let locked = sign_in(&app, &user.email, PASSWORD).await;
    assert_eq!(locked.error_code(), "UNAUTHENTICATED");
    let wrong_password = sign_in(&app, &user.email, "not-the-password").await;
    assert_eq!(
        refusal(&locked),
        refusal(&wrong_password),
        "a lock answers like a wrong password"
    );
}

#[tokio::test]
async fn a_challenge_expires_after_five_minutes() {
    let app = TestApp::spawn().await;
    let user = user_with_mfa(&app).await;
    let early = challenge(&app, &user.email).await;
    let late = challenge(&app, &user.email).await;
    app.clock
        .advance(Duration::minutes(4) + Duration::seconds(50));
    let code = code_at(&user.secret, app.clock.now());
    signed_in(&complete(&app, &early, &code).await);
    app.clock.advance(Duration::seconds(11));
    let expired = complete(&app, &late, &user.backup_codes[0]).await;
    assert_eq!(expired.error_code(), "UNAUTHENTICATED");
}

#[tokio::test]
async fn a_challenge_signs_in_once_and_an_unknown_one_not_at_all() {
    let app = TestApp::spawn().await;
    let user = user_with_mfa(&app).await;
    let challenge_token = challenge(&app, &user.email).await;
    let code = next_step_code(&app, &user.secret);
    signed_in(&complete(&app, &challenge_token, &code).await);
    let reused = complete(&app, &challenge_token, &user.backup_codes[0]).await;
    assert_eq!(reused.error_code(), "UNAUTHENTICATED");
    let unknown = complete(&app, "not-a-challenge", &user.backup_codes[1]).await;
    assert_eq!(unknown.error_code(), "UNAUTHENTICATED");
}

#[tokio::test]
async fn regenerated_backup_codes_replace_the_old_ones() {
    let app = TestApp::spawn().await;
    let user = user_with_mfa(&app).await;
    assert_code_refused(&regenerate(&app, &user.session, &wrong_code(&app, &user.secret)).await);

    let code = next_step_code(&app, &user.secret);
    let response = regenerate(&app, &user.session, &code).await;
    let fresh = strings(&response.data()["regenerateBackupCodes"]["backupCodes"]);
    assert_eq!(fresh.len(), 10);
    assert!(fresh.iter().all(|code| is_backup_code(code)), "{fresh:?}");
    assert!(fresh.iter().all(|code| !user.backup_codes.contains(code)));

    let old = &user.backup_codes[0];
    assert_code_refused(&sign_in_with_code(&app, &user.email, old).await);
    signed_in(&sign_in_with_code(&app, &user.email, &fresh[0]).await);

    let without_mfa = app.user().await;
    assert_eq!(
        regenerate(&app, &without_mfa, "123456").await.error_code(),
        "CONFLICT"
    );
}

#[tokio::test]
async fn disabling_mfa_needs_the_password_and_a_code() {
    let app = TestApp::spawn().await;
    let user = user_with_mfa(&app).await;
    let code = next_step_code(&app, &user.secret);
    let wrong_password = disable(&app, &user.session, "not-the-password", &code).await;
    assert_eq!(wrong_password.error_code(), "BAD_USER_INPUT");
    assert_eq!(wrong_password.error_field(), "password");
    let wrong = wrong_code(&app, &user.secret);
    assert_code_refused(&disable(&app, &user.session, PASSWORD, &wrong).await);
    assert!(mfa_enabled(&app, &user.session).await);

    let code = next_step_code(&app, &user.secret);
    let disabled = disable(&app, &user.session, PASSWORD, &code).await;
    assert_eq!(disabled.data()["disableMfa"]["mfaEnabled"], false);
    assert!(!mfa_enabled(&app, &user.session).await);
    let login = sign_in(&app, &user.email, PASSWORD).await;
    assert_eq!(login.data()["login"]["__typename"], "AuthPayload");
    let again = disable(&app, &user.session, PASSWORD, &user.backup_codes[0]).await;
    assert_eq!(again.error_code(), "CONFLICT");
}

#[tokio::test]
async fn code_attempts_over_the_email_limit_are_refused_with_a_retry_after() {
    let app = TestApp::spawn_with(|settings| {
        settings.rate_limit_per_ip = 100;
        settings.rate_limit_per_email = 3;
        settings.lockout_threshold = 100;
    })
    .await;
    let user = user_with_mfa(&app).await;
    // A window of its own: enableMfa counted in the last one.
    move_to_start_of_next(&app, Duration::seconds(60));
    let challenge_token = challenge(&app, &user.email).await;
    let wrong = wrong_code(&app, &user.secret);
    for _ in 0..3 {
        assert_code_refused(&complete(&app, &challenge_token, &wrong).await);
    }
    let right = code_at(&user.secret, app.clock.now());
    let limited = complete(&app, &challenge_token, &right).await;
    assert_eq!(limited.error_code(), "RATE_LIMITED", "even the right code");
    let retry_after = limited.body["errors"][0]["extensions"]["retryAfter"]
        .as_u64()
        .unwrap_or_else(|| panic!("no retryAfter in {}", limited.body));
    assert!((1..=60).contains(&retry_after), "{retry_after}");

    app.clock.advance(Duration::seconds(61));
    let code = code_at(&user.secret, app.clock.now());
    signed_in(&complete(&app, &challenge_token, &code).await);
}

#[tokio::test]
async fn mfa_settings_need_a_signed_in_user() {
    let app = TestApp::spawn().await;
    let code = json!({ "input": { "code": "123456" } });
    for (query, variables) in [
        (SETUP, json!({})),
        (ENABLE, code.clone()),
        (REGENERATE, code),
        (
            DISABLE,
            json!({ "input": { "password": PASSWORD, "code": "123456" } }),
        ),
    ] {
        let response = app.graphql(query, variables).await;
        assert_eq!(response.error_code(), "UNAUTHENTICATED", "{query}");
    }
}
