//! Clean WebSocket closes (RFC 6455 §5.5.1): a client's Close frame is
//! answered with a Close frame of the same code on both protocols, so
//! graphql-ws's lazy close and `dispose()` end with `wasClean: true`.

use serde_json::json;

use crate::support::TestApp;
use crate::support::ws::WsClient;

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
