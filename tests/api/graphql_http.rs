//! GraphQL as standard clients speak it: the requested field order on
//! every transport, GraphQL over HTTP (GET, media types and status codes),
//! persisted queries and trusted documents, and the offline GraphiQL page.

use reqwest::StatusCode;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use serde_json::{Value, json};

use crate::support::spawned::{Spawned, flowpilot_command};
use crate::support::ws::WsClient;
use crate::support::{GqlResponse, TestApp, require_multi_instance_backends};

const GRAPHQL_RESPONSE: &str = "application/graphql-response+json";

/// The keys of a JSON object, in order.
fn keys(value: &Value) -> Vec<&str> {
    value
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {value}"))
        .keys()
        .map(String::as_str)
        .collect()
}

/// `/graphql` with `parameters` in its query string.
fn graphql_url(app: &TestApp, parameters: &[(&str, &str)]) -> String {
    url::Url::parse_with_params(&app.url("/graphql"), parameters)
        .unwrap()
        .to_string()
}

fn sha256_hex(text: &str) -> String {
    flowpilot::auth::tokens::hash_token(text)
}

const ORDERED: &str = "query Ordered($org: ID!) {
  zeta: viewer { id email }
  organization(id: $org) { ...OrgFields id viewerRole }
  stepKinds { kind }
  alpha: viewer { email id }
  __typename
}
fragment OrgFields on Organization { slug name }";

fn assert_ordered(data: &Value) {
    assert_eq!(
        keys(data),
        ["zeta", "organization", "stepKinds", "alpha", "__typename"]
    );
    assert_eq!(keys(&data["zeta"]), ["id", "email"]);
    assert_eq!(keys(&data["alpha"]), ["email", "id"]);
    assert_eq!(
        keys(&data["organization"]),
        ["slug", "name", "id", "viewerRole"]
    );
}

#[tokio::test]
async fn twenty_identical_requests_all_answer_in_the_query_s_field_order() {
    let app = TestApp::spawn().await;
    let owner = app.user().await;
    let organization = app.organization(&owner, "Acme").await;
    for _ in 0..20 {
        let response = app
            .graphql_as(&owner.access_token, ORDERED, json!({ "org": organization }))
            .await;
        assert_ordered(response.data());
    }
}

#[tokio::test]
async fn each_operation_of_a_batch_answers_in_its_own_field_order() {
    let app = TestApp::spawn().await;
    let owner = app.user().await;
    let organization = app.organization(&owner, "Acme").await;
    let response = app
        .http()
        .post(app.url("/graphql"))
        .bearer_auth(&owner.access_token)
        .json(&json!([
            { "query": ORDERED, "variables": { "org": organization } },
            { "query": "{ b: __typename viewer { email id } a: __typename }" },
        ]))
        .send()
        .await
        .unwrap();
    let body = GqlResponse::from(response).await.body;
    assert_ordered(&body[0]["data"]);
    assert_eq!(keys(&body[1]["data"]), ["b", "viewer", "a"]);
    assert_eq!(keys(&body[1]["data"]["viewer"]), ["email", "id"]);
}

const EVENTS_IN_ORDER: &str = "subscription($id: ID!) {
  executionEvents(executionId: $id, afterSeq: 0) { seq kind executionId ...Status }
}
fragment Status on ExecutionEvent { executionStatus occurredAt }";

#[tokio::test]
async fn subscription_events_over_websocket_keep_the_selection_order() {
    let app = TestApp::spawn().await;
    let owner = app.user().await;
    let id = app.one_step_execution(&owner).await;
    let mut client = WsClient::connect_as(&app, Some(&owner.access_token)).await;
    client
        .subscribe("e", EVENTS_IN_ORDER, json!({ "id": id }))
        .await;
    let events = client.data_until_complete("e", "executionEvents").await;
    assert!(events.len() >= 3, "{events:?}");
    for event in &events {
        assert_eq!(
            keys(event),
            [
                "seq",
                "kind",
                "executionId",
                "executionStatus",
                "occurredAt"
            ]
        );
    }
}

#[tokio::test]
async fn get_runs_a_query_from_url_parameters() {
    let app = TestApp::spawn().await;
    let response = app
        .http()
        .get(graphql_url(
            &app,
            &[
                (
                    "query",
                    "query Kind($k: String!) { __type(name: $k) { name } }",
                ),
                ("variables", r#"{"k":"Workflow"}"#),
                ("operationName", "Kind"),
            ],
        ))
        .send()
        .await
        .unwrap();
    let response = GqlResponse::from(response).await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.data()["__type"]["name"], "Workflow");
}

#[tokio::test]
async fn get_refuses_a_mutation_with_405_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let email = crate::support::unique_email();
    let mutation = format!(
        r#"mutation {{ register(input: {{ email: "{email}", password: "a long enough passphrase 1", displayName: "G" }}) {{ accessToken }} }}"#
    );
    let response = app
        .http()
        .get(graphql_url(&app, &[("query", mutation.as_str())]))
        .header(ACCEPT, GRAPHQL_RESPONSE)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(response.headers()["allow"], "GET, POST");
    let body = GqlResponse::from(response).await;
    assert_eq!(body.error_code(), "BAD_USER_INPUT");
    // The account was not created: registering it over POST works.
    let registered = app.graphql(&mutation, json!({})).await;
    assert!(registered.data()["register"]["accessToken"].is_string());
}

/// Posts `body` as JSON, accepting `accept` when given.
async fn post(app: &TestApp, accept: Option<&str>, body: Value) -> (StatusCode, String, Value) {
    let mut request = app.http().post(app.url("/graphql")).json(&body);
    if let Some(accept) = accept {
        request = request.header(ACCEPT, accept);
    }
    let response = request.send().await.unwrap();
    let content_type = response.headers()[CONTENT_TYPE]
        .to_str()
        .unwrap()
        .to_owned();
    let response = GqlResponse::from(response).await;
    (response.status, content_type, response.body)
}

#[tokio::test]
async fn a_request_that_never_ran_is_400_without_data_under_graphql_response_json() {
    let app = TestApp::spawn().await;
    for (body, reason) in [
        (json!({ "query": "{" }), "PARSE_FAILED"),
        (json!({ "query": "{ noSuchField }" }), "VALIDATION_FAILED"),
        (
            json!({ "query": "query Q($id: ID!) { __typename }", "variables": { "id": null } }),
            "VALIDATION_FAILED",
        ),
        (
            json!({ "query": "query A { __typename }", "operationName": "B" }),
            "VALIDATION_FAILED",
        ),
    ] {
        let (status, content_type, answer) = post(&app, Some(GRAPHQL_RESPONSE), body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert!(content_type.starts_with(GRAPHQL_RESPONSE), "{content_type}");
        assert!(answer.get("data").is_none(), "{body}: {answer}");
        assert_eq!(answer["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
        assert_eq!(
            answer["errors"][0]["extensions"]["reason"], reason,
            "{body}"
        );

        // Clients written for application/json keep 200 and `data: null`.
        let (status, content_type, answer) = post(&app, None, body.clone()).await;
        assert_eq!(status, StatusCode::OK, "{body}: {answer}");
        assert!(
            content_type.starts_with("application/json"),
            "{content_type}"
        );
        assert_eq!(answer["data"], Value::Null);
        assert_eq!(
            answer["errors"][0]["extensions"]["reason"], reason,
            "{body}"
        );
    }
}

#[tokio::test]
async fn an_operation_that_ran_is_200_with_data_under_graphql_response_json() {
    let app = TestApp::spawn().await;
    // A field error: the operation ran, so data is there.
    let (status, _, answer) = post(
        &app,
        Some(GRAPHQL_RESPONSE),
        json!({ "query": "{ organization(id: \"00000000-0000-0000-0000-000000000000\") { id } __typename }" }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert!(answer.get("data").is_some(), "{answer}");
    assert!(answer["errors"].is_array(), "{answer}");
}

#[tokio::test]
async fn a_body_that_is_not_json_is_refused_by_media_type_and_shape() {
    let app = TestApp::spawn().await;
    let without_type = app
        .http()
        .post(app.url("/graphql"))
        .body(r#"{"query":"{ __typename }"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(without_type.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    for body in [
        json!({ "query": 0 }),
        json!({ "query": "{ __typename }", "variables": "x" }),
        json!({ "query": "{ __typename }", "extensions": ["x"] }),
        json!({ "query": "{ __typename }", "operationName": false }),
        json!({ "qeury": "{ __typename }" }),
        json!([]),
        json!("{ __typename }"),
    ] {
        let (status, _, answer) = post(&app, Some(GRAPHQL_RESPONSE), body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert_eq!(answer["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
    }
}

/// An Apollo persisted-query request: the hash, and the text when given.
fn persisted(query: Option<&str>, hash: &str) -> Value {
    let mut body = json!({
        "extensions": { "persistedQuery": { "version": 1, "sha256Hash": hash } }
    });
    if let Some(query) = query {
        body["query"] = json!(query);
    }
    body
}

async fn get_persisted(app: &TestApp, hash: &str) -> GqlResponse {
    let extensions = json!({ "persistedQuery": { "version": 1, "sha256Hash": hash } });
    let response = app
        .http()
        .get(graphql_url(app, &[("extensions", &extensions.to_string())]))
        .send()
        .await
        .unwrap();
    GqlResponse::from(response).await
}

#[tokio::test]
async fn a_persisted_query_is_not_found_then_registered_then_runs_by_hash_over_post_and_get() {
    let app = TestApp::spawn().await;
    let query = "query Kinds { stepKinds { kind } }";
    let hash = sha256_hex(query);

    let (_, _, missing) = post(&app, None, persisted(None, &hash)).await;
    assert_eq!(
        missing["errors"][0]["extensions"]["code"],
        "PERSISTED_QUERY_NOT_FOUND"
    );
    assert_eq!(missing["errors"][0]["message"], "PersistedQueryNotFound");
    assert_eq!(
        get_persisted(&app, &hash).await.error_code(),
        "PERSISTED_QUERY_NOT_FOUND"
    );

    // A text that is not the hash's is refused, and not stored.
    let (_, _, mismatch) = post(&app, None, persisted(Some("{ __typename }"), &hash)).await;
    assert_eq!(
        mismatch["errors"][0]["extensions"]["code"],
        "BAD_USER_INPUT"
    );

    let (status, _, registered) = post(&app, None, persisted(Some(query), &hash)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(registered["data"]["stepKinds"].is_array(), "{registered}");

    let (_, _, by_hash) = post(&app, None, persisted(None, &hash)).await;
    assert_eq!(by_hash["data"], registered["data"]);
    let over_get = get_persisted(&app, &hash).await;
    assert_eq!(over_get.data(), &registered["data"]);
}

#[tokio::test]
async fn a_persisted_query_that_does_not_validate_is_not_stored() {
    let app = TestApp::spawn().await;
    let query = "{ noSuchField }";
    let hash = sha256_hex(query);
    let (_, _, refused) = post(&app, None, persisted(Some(query), &hash)).await;
    assert_eq!(
        refused["errors"][0]["extensions"]["reason"],
        "VALIDATION_FAILED"
    );
    let (_, _, missing) = post(&app, None, persisted(None, &hash)).await;
    assert_eq!(
        missing["errors"][0]["extensions"]["code"],
        "PERSISTED_QUERY_NOT_FOUND"
    );
}

#[tokio::test]
#[ignore = "needs PostgreSQL and Redis"]
async fn a_persisted_query_registered_on_one_instance_runs_by_hash_on_another() {
    require_multi_instance_backends();
    let a = TestApp::spawn().await;
    let b = TestApp::start(a.settings.clone()).await;
    let query = format!(
        "query Kinds{} {{ stepKinds {{ kind }} }}",
        std::process::id()
    );
    let hash = sha256_hex(&query);
    let (_, _, registered) = post(&a, None, persisted(Some(&query), &hash)).await;
    assert!(registered["data"]["stepKinds"].is_array(), "{registered}");
    let (_, _, on_b) = post(&b, None, persisted(None, &hash)).await;
    assert_eq!(on_b["data"], registered["data"]);
}

#[tokio::test]
async fn with_trusted_documents_only_registered_documents_run() {
    let app = TestApp::spawn_with(|settings| settings.trusted_documents = true).await;
    let registered = "query Kinds { stepKinds { kind } }";
    let document =
        flowpilot::graphql::persisted::TrustedDocument::new(registered.to_owned(), None).unwrap();
    let hash = document.hash.clone();
    flowpilot::graphql::persisted::add_trusted_documents(&app.state.db, vec![document])
        .await
        .unwrap();

    // By hash alone, and by its full text.
    let (_, _, by_hash) = post(&app, None, persisted(None, &hash)).await;
    assert!(by_hash["data"]["stepKinds"].is_array(), "{by_hash}");
    let (_, _, by_text) = post(&app, None, json!({ "query": registered })).await;
    assert_eq!(by_text["data"], by_hash["data"]);

    // Anything else, even with its own hash, is not allowed.
    let other = "{ __typename }";
    for body in [
        json!({ "query": other }),
        persisted(Some(other), &sha256_hex(other)),
        persisted(None, &sha256_hex(other)),
    ] {
        let (status, _, refused) = post(&app, Some(GRAPHQL_RESPONSE), body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(
            refused["errors"][0]["extensions"]["code"], "PERSISTED_QUERY_NOT_ALLOWED",
            "{body}"
        );
    }
    // Subscriptions are held to the same list.
    let mut client = WsClient::connect_as(&app, None).await;
    client
        .subscribe(
            "s",
            "subscription { executionEvents(executionId: \"x\") { seq } }",
            json!({}),
        )
        .await;
    let message = client.next_json().await;
    assert_eq!(message["type"], "error", "{message}");
    assert_eq!(
        message["payload"][0]["extensions"]["code"],
        "PERSISTED_QUERY_NOT_ALLOWED"
    );
}

#[tokio::test]
async fn a_browser_gets_graphiql_served_from_this_server_under_a_same_origin_policy() {
    let app = TestApp::spawn().await;
    let page = app
        .http()
        .get(app.url("/graphql"))
        .header(ACCEPT, "text/html,application/xhtml+xml,*/*;q=0.8")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let policy = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(policy.starts_with("default-src 'self'"), "{policy}");
    assert!(policy.contains("script-src 'self';"), "{policy}");
    let html = page.text().await.unwrap();
    assert!(!html.contains("https://"), "the page loads from elsewhere");
    let assets: Vec<&str> = html
        .split("src=\"")
        .chain(html.split("href=\""))
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .filter(|path| path.starts_with("/graphiql/"))
        .collect();
    assert!(assets.len() >= 5, "{assets:?}");
    for asset in assets {
        let response = app.get(asset).await;
        assert_eq!(response.status(), StatusCode::OK, "{asset}");
        assert!(
            !response.bytes().await.unwrap().is_empty(),
            "{asset} is empty"
        );
    }
    assert_eq!(
        app.get("/graphiql/../Cargo.toml").await.status(),
        StatusCode::NOT_FOUND
    );
    // An API client asking the same URL without a query is told so.
    let api = app.get("/graphql").await;
    assert_eq!(api.status(), StatusCode::BAD_REQUEST);
}

/// Runs `flowpilot documents <args>` over `app`'s database; answers the
/// exit status and what it printed.
async fn documents_command(app: &TestApp, args: &[&str]) -> (bool, String, String) {
    let output = flowpilot_command(&app.settings)
        .arg("documents")
        .args(args)
        .output()
        .await
        .expect("flowpilot documents runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn documents_added_from_files_and_manifests_are_what_a_trusted_server_runs() {
    let app = TestApp::spawn().await;
    let folder = std::env::temp_dir().join(format!("fp-documents-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&folder).unwrap();
    let file_document = "query Kinds { stepKinds { kind } }\n";
    let manifest_document = "query Me { viewer { id } }";
    let file = folder.join("kinds.graphql");
    std::fs::write(&file, file_document).unwrap();
    let manifest = folder.join("persisted-documents.json");
    std::fs::write(
        &manifest,
        json!({ sha256_hex(manifest_document): manifest_document }).to_string(),
    )
    .unwrap();
    let wrong = folder.join("wrong.json");
    std::fs::write(
        &wrong,
        json!({ sha256_hex("other"): "{ __typename }" }).to_string(),
    )
    .unwrap();
    let (file, manifest, wrong) = (
        file.to_str().unwrap(),
        manifest.to_str().unwrap(),
        wrong.to_str().unwrap(),
    );

    // A manifest whose hash is not its document's is refused, and nothing
    // of the same run is added.
    let (ok, _, stderr) = documents_command(&app, &["add", file, wrong]).await;
    assert!(!ok);
    assert!(stderr.contains("SHA-256"), "{stderr}");
    let (_, listed, _) = documents_command(&app, &["list"]).await;
    assert_eq!(listed, "");

    let (ok, stdout, stderr) = documents_command(&app, &["add", file, manifest]).await;
    assert!(ok, "{stderr}");
    assert_eq!(stdout.trim(), "2 documents added, 0 already registered");
    let (_, again, _) = documents_command(&app, &["add", file]).await;
    assert_eq!(again.trim(), "0 documents added, 1 already registered");
    let (_, listed, _) = documents_command(&app, &["list"]).await;
    assert!(
        listed.contains(&format!("{} Kinds", sha256_hex(file_document))),
        "{listed}"
    );
    assert!(
        listed.contains(&format!("{} Me", sha256_hex(manifest_document))),
        "{listed}"
    );
    std::fs::remove_dir_all(&folder).ok();

    let server = Spawned::start(&app, &[("FLOWPILOT_TRUSTED_DOCUMENTS", "true")]).await;
    let by_text = server.graphql(None, file_document, json!({})).await;
    assert!(by_text.data()["stepKinds"].is_array());
    let by_hash = server
        .post(None, &persisted(None, &sha256_hex(manifest_document)))
        .await;
    let by_hash = GqlResponse::from(by_hash).await;
    assert_eq!(by_hash.data()["viewer"], Value::Null);
    let other = server.graphql(None, "{ __typename }", json!({})).await;
    assert_eq!(other.error_code(), "PERSISTED_QUERY_NOT_ALLOWED");
}
