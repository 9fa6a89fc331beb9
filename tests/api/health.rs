//! `/health`, `/health/db`, `/health/cache`, GraphiQL and request ids.

use serde_json::{Value, json};

use crate::support::{TestApp, redis_url};

#[tokio::test]
async fn health_says_the_process_is_up() {
    let app = TestApp::spawn().await;
    let response = app.get("/health").await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({ "status": "ok" })
    );
}

#[tokio::test]
async fn health_db_answers_after_a_database_round_trip() {
    let app = TestApp::spawn().await;
    let response = app.get("/health/db").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap()["status"], "ok");
}

#[tokio::test]
async fn health_db_is_unavailable_once_the_database_is_gone() {
    let app = TestApp::spawn().await;
    app.state.db.clone().close().await.unwrap();
    let response = app.get("/health/db").await;
    assert_eq!(response.status(), 503);
    assert_eq!(
        response.json::<Value>().await.unwrap()["status"],
        "unavailable"
    );
}

#[tokio::test]
async fn health_cache_names_the_bus_in_use() {
    let app = TestApp::spawn().await;
    let response = app.get("/health/cache").await;
    assert_eq!(response.status(), 200);
    let expected = match redis_url() {
        Some(_) => json!({ "status": "ok", "bus": "redis", "redis": "connected" }),
        None => json!({ "status": "ok", "bus": "in-process" }),
    };
    assert_eq!(response.json::<Value>().await.unwrap(), expected);
}

#[tokio::test]
async fn every_response_carries_a_generated_request_id() {
    let app = TestApp::spawn().await;
    let first = app.get("/health").await;
    let second = app.get("/health").await;
    let id = |r: &reqwest::Response| r.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(!id(&first).is_empty());
    assert_ne!(id(&first), id(&second));
}

#[tokio::test]
async fn a_request_id_sent_by_the_client_is_kept() {
    let app = TestApp::spawn().await;
    let response = app
        .http()
        .post(app.url("/graphql"))
        .header("x-request-id", "client-chosen-id-42")
        .json(&json!({ "query": "{ viewer { id } }" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "client-chosen-id-42");
}
