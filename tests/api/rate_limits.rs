//! Rate limits on sign-in and registration: per email and per client IP,
//! with a retry-after, across instances when Redis holds the counts.

use std::net::IpAddr;

use chrono::Duration;
use serde_json::json;

use crate::support::{GqlResponse, PASSWORD, TestApp, unique_email};

async fn login_from(app: &TestApp, email: &str, forwarded_for: Option<&str>) -> GqlResponse {
    let headers: Vec<(&str, &str)> = forwarded_for
        .map(|ip| ("x-forwarded-for", ip))
        .into_iter()
        .collect();
    app.login(email, PASSWORD, &headers).await
}

fn code(response: &GqlResponse) -> Option<String> {
    response.body["errors"][0]["extensions"]["code"]
        .as_str()
        .map(str::to_owned)
}

#[tokio::test]
async fn sign_ins_over_the_email_limit_are_refused_with_a_retry_after() {
    let app = TestApp::spawn_with(|settings| settings.rate_limit_per_email = 3).await;
    let email = unique_email();
    app.register(&email).await;
    for _ in 0..3 {
        assert_eq!(code(&login_from(&app, &email, None).await), None);
    }
    let limited = login_from(&app, &email.to_uppercase(), None).await;
    assert_eq!(
        limited.error_code(),
        "RATE_LIMITED",
        "the email is compared without case"
    );
    let retry_after = limited.body["errors"][0]["extensions"]["retryAfter"]
        .as_u64()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");

    let other = unique_email();
    assert_ne!(
        code(&login_from(&app, &other, None).await).as_deref(),
        Some("RATE_LIMITED")
    );
    app.clock.advance(Duration::seconds(61));
    assert_eq!(code(&login_from(&app, &email, None).await), None);
}

#[tokio::test]
async fn registration_is_limited_per_client_address() {
    let app = TestApp::spawn_with(|settings| settings.rate_limit_per_ip = 2).await;
    app.user().await;
    app.user().await;
    let response = app
        .graphql(
            "mutation($input: RegisterInput!) { register(input: $input) { accessToken } }",
            json!({ "input": { "email": "third@example.com", "password": PASSWORD, "displayName": "T" } }),
        )
        .await;
    assert_eq!(response.error_code(), "RATE_LIMITED");
}

#[tokio::test]
async fn the_client_address_comes_from_x_forwarded_for_only_behind_a_trusted_proxy() {
    let untrusted = TestApp::spawn_with(|settings| settings.rate_limit_per_ip = 2).await;
    for n in 0..2 {
        let forwarded = format!("203.0.113.{n}");
        login_from(&untrusted, "a@example.com", Some(&forwarded)).await;
    }
    let spoofed = login_from(&untrusted, "a@example.com", Some("203.0.113.9")).await;
    assert_eq!(
        spoofed.error_code(),
        "RATE_LIMITED",
        "a client cannot pick its own address"
    );

    let loopback: IpAddr = "127.0.0.1".parse().unwrap();
    let behind_proxy = TestApp::spawn_with(|settings| {
        settings.rate_limit_per_ip = 2;
        settings.trusted_proxies = vec![loopback];
    })
    .await;
    for _ in 0..2 {
        login_from(&behind_proxy, "a@example.com", Some("203.0.113.1")).await;
    }
    let limited = login_from(&behind_proxy, "a@example.com", Some("203.0.113.1")).await;
    assert_eq!(limited.error_code(), "RATE_LIMITED");
    let other_client = login_from(&behind_proxy, "a@example.com", Some("203.0.113.2")).await;
    assert_ne!(code(&other_client).as_deref(), Some("RATE_LIMITED"));
}

#[tokio::test]
async fn with_redis_a_limit_holds_across_instances() {
    let app = TestApp::spawn_with(|settings| settings.rate_limit_per_email = 2).await;
    let second = TestApp::start(app.settings.clone()).await;
    let email = unique_email();
    login_from(&app, &email, None).await;
    login_from(&app, &email, None).await;
    let third = login_from(&second, &email, None).await;
    if app.settings.redis_url.is_some() {
        assert_eq!(third.error_code(), "RATE_LIMITED", "the count is shared");
    } else {
        // Without Redis each instance counts for itself.
        assert_ne!(code(&third).as_deref(), Some("RATE_LIMITED"));
    }
    second.stop().await;
}

#[tokio::test]
async fn each_sign_in_of_a_batch_counts_towards_the_limit_by_itself() {
    let app = TestApp::spawn_with(|settings| settings.rate_limit_per_email = 3).await;
    let email = unique_email();
    app.register(&email).await;
    let login = json!({
        "query": "mutation($input: LoginInput!) { login(input: $input) { __typename } }",
        "variables": { "input": { "email": email, "password": PASSWORD } }
    });
    let answers: serde_json::Value = app
        .http()
        .post(app.url("/graphql"))
        .json(&json!([login, login, login, login, login]))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let answers = answers.as_array().unwrap();
    let signed_in = answers
        .iter()
        .filter(|a| a["data"]["login"]["__typename"] == "AuthPayload")
        .count();
    let limited = answers
        .iter()
        .filter(|a| a["errors"][0]["extensions"]["code"] == "RATE_LIMITED")
        .count();
    assert_eq!((signed_in, limited), (3, 2), "{answers:?}");
}
