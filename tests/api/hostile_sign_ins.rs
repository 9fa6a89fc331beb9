//! A flood of sign-ins against a spawned `flowpilot serve`: batches of
//! aliased `login`s are hashed by a fixed pool of threads behind a bounded
//! queue, so memory stays flat, excess checks are RATE_LIMITED, and cheap
//! queries are answered meanwhile.

use futures::future::join_all;
use serde_json::{Value, json};

use crate::support::spawned::Spawned;
use crate::support::{PASSWORD, TestApp, unique_email};

#[tokio::test]
async fn a_flood_of_batched_sign_ins_keeps_memory_flat_and_the_api_answering() {
    let app = TestApp::spawn_with(|s| s.run_engine = false).await;
    let email = unique_email();
    app.register(&email).await;
    let server = Spawned::start(&app, &[("FLOWPILOT_PASSWORD_HASHERS", "2")]).await;
    let logins: String = (0..5)
        .map(|i| {
            format!(
                "l{i}: login(input: {{ email: \"{email}\", password: \"{PASSWORD}\" }}) {{ __typename }} "
            )
        })
        .collect();
    let operation = json!({ "query": format!("mutation {{ {logins} }}") });
    // One sign-in first, so the baseline holds a hasher's working memory.
    let warm = server.post(None, &json!([operation.clone()])).await;
    assert!(warm.status().is_success());
    let before = server.peak_memory_kib();
    let batch = Value::Array(vec![operation; 10]);
    let floods = (0..4).map(|_| async {
        let answers: Value = server.post(None, &batch).await.json().await.unwrap();
        answers
    });
    let (answers, cheap) = futures::future::join(
        join_all(floods),
        server.graphql(None, "{ __typename }", json!({})),
    )
    .await;
    assert_eq!(cheap.data()["__typename"], "Query");
    let (mut signed_in, mut limited) = (0, 0);
    for answer in answers.iter().flat_map(|a| a.as_array().unwrap()) {
        for i in 0..5 {
            if answer["data"][format!("l{i}")]["__typename"] == "AuthPayload" {
                signed_in += 1;
            }
        }
        for error in answer["errors"].as_array().into_iter().flatten() {
            assert_eq!(error["extensions"]["code"], "RATE_LIMITED", "{error}");
            limited += 1;
        }
    }
    assert!(signed_in > 0, "{answers:?}");
    // Forty first sign-ins arrive at once for two hashers and sixteen places.
    assert!(limited > 0, "none was refused: {answers:?}");
    assert!(signed_in + limited <= 4 * 10 * 5);
    let grown_mib = server.peak_memory_kib().saturating_sub(before) / 1024;
    // Two hashers at 19 MiB each, whatever the number asked for at once.
    assert!(grown_mib < 80, "the peak grew by {grown_mib} MiB");
}
