//! What browsers need across origins: a preflight that allows the headers
//! Apollo, urql, OpenTelemetry and Sentry send, cached for a while, and
//! WebSockets opened only from allowed origins when origins are configured.

use reqwest::StatusCode;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::support::TestApp;

const APP_ORIGIN: &str = "https://app.example.com";

async fn preflight(app: &TestApp, headers: &str) -> reqwest::Response {
    app.http()
        .request(reqwest::Method::OPTIONS, app.url("/graphql"))
        .header("origin", APP_ORIGIN)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", headers)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_preflight_allows_the_headers_of_common_clients_and_may_be_cached() {
    let app = TestApp::spawn_with(|settings| settings.cors_origins = vec![APP_ORIGIN.into()]).await;
    let asked = "content-type,authorization,apollographql-client-name,apollographql-client-version,traceparent,baggage,sentry-trace";
    let answer = preflight(&app, asked).await;
    assert!(answer.status().is_success(), "{}", answer.status());
    let headers = answer.headers();
    assert_eq!(headers["access-control-allow-origin"], APP_ORIGIN);
    let allowed = headers["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    for name in asked.split(',') {
        assert!(allowed.contains(name), "{name} is not allowed: {allowed}");
    }
    assert_eq!(headers["access-control-max-age"], "600");
}

#[tokio::test]
async fn the_allowed_headers_are_a_setting() {
    let app = TestApp::spawn_with(|settings| {
        settings.cors_origins = vec![APP_ORIGIN.into()];
        settings.cors_allow_headers = vec!["content-type".into(), "x-tenant".into()];
    })
    .await;
    let answer = preflight(&app, "content-type,x-tenant").await;
    let allowed = answer.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(allowed.contains("x-tenant"), "{allowed}");
    assert!(!allowed.contains("authorization"), "{allowed}");
}

/// The status of a WebSocket upgrade sent with `origin` (or none).
async fn upgrade_status(app: &TestApp, origin: Option<&str>) -> u16 {
    let mut request = format!("ws://{}/graphql/ws", app.address)
        .into_client_request()
        .unwrap();
    let headers = request.headers_mut();
    headers.insert(
        "sec-websocket-protocol",
        HeaderValue::from_static("graphql-transport-ws"),
    );
    if let Some(origin) = origin {
        headers.insert("origin", HeaderValue::from_str(origin).unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((_, response)) => response.status().as_u16(),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("the handshake failed: {other}"),
    }
}

#[tokio::test]
async fn a_websocket_from_an_origin_not_allowed_is_refused_with_403() {
    let app = TestApp::spawn_with(|settings| {
        settings.cors_origins = vec![APP_ORIGIN.into()];
        settings.public_url = "https://api.example.com".into();
    })
    .await;
    assert_eq!(
        upgrade_status(&app, Some("https://evil.example.net")).await,
        StatusCode::FORBIDDEN.as_u16()
    );
    assert_eq!(upgrade_status(&app, Some(APP_ORIGIN)).await, 101);
    assert_eq!(
        upgrade_status(&app, Some("https://api.example.com")).await,
        101
    );
    // Not a browser: no Origin.
    assert_eq!(upgrade_status(&app, None).await, 101);

    // Without configured origins, any page may connect (the default).
    let open = TestApp::spawn().await;
    assert_eq!(
        upgrade_status(&open, Some("https://evil.example.net")).await,
        101
    );
}
