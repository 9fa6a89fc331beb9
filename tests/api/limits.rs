//! Guards against abusive requests: depth, complexity, body size, batches
//! and introspection; and codes on errors raised before any resolver runs.

use serde_json::{Value, json};

use crate::support::{GqlResponse, TestApp};

/// The introspection query GraphiQL sends, with every option on and the
/// deepest type reference graphql-js asks for.
const GRAPHIQL_INTROSPECTION: &str = r#"
query IntrospectionQuery {
  __schema {
    description
    queryType { name }
    mutationType { name }
    subscriptionType { name }
    types { ...FullType }
    directives { name description isRepeatable locations args(includeDeprecated: true) { ...InputValue } }
  }
}
fragment FullType on __Type {
  kind name description specifiedByURL
  fields(includeDeprecated: true) {
    name description
    args(includeDeprecated: true) { ...InputValue }
    type { ...TypeRef }
    isDeprecated deprecationReason
  }
  inputFields(includeDeprecated: true) { ...InputValue }
  interfaces { ...TypeRef }
  enumValues(includeDeprecated: true) { name description isDeprecated deprecationReason }
  possibleTypes { ...TypeRef }
}
fragment InputValue on __InputValue {
  name description type { ...TypeRef } defaultValue isDeprecated deprecationReason
}
fragment TypeRef on __Type {
  kind name
  ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name
    ofType { kind name ofType { kind name ofType { kind name ofType { kind name } } } } } } } } }
}
"#;

/// graphql-js's `getIntrospectionQuery()` with its defaults, as
/// graphql-codegen's URL loader sends it.
const CODEGEN_INTROSPECTION: &str = r#"
query IntrospectionQuery {
  __schema {
    queryType { name }
    mutationType { name }
    subscriptionType { name }
    types { ...FullType }
    directives { name description locations args { ...InputValue } }
  }
}
fragment FullType on __Type {
  kind name description
  fields(includeDeprecated: true) {
    name description args { ...InputValue } type { ...TypeRef } isDeprecated deprecationReason
  }
  inputFields { ...InputValue }
  interfaces { ...TypeRef }
  enumValues(includeDeprecated: true) { name description isDeprecated deprecationReason }
  possibleTypes { ...TypeRef }
}
fragment InputValue on __InputValue { name description type { ...TypeRef } defaultValue }
fragment TypeRef on __Type {
  kind name
  ofType { kind name ofType { kind name ofType { kind name ofType { kind name
    ofType { kind name ofType { kind name ofType { kind name } } } } } } }
}
"#;

async fn post_raw(app: &TestApp, body: Value) -> GqlResponse {
    let response = app
        .http()
        .post(app.url("/graphql"))
        .json(&body)
        .send()
        .await
        .unwrap();
    GqlResponse::from(response).await
}

#[tokio::test]
async fn graphiqls_introspection_query_passes_the_default_limits() {
    let app = TestApp::spawn().await;
    let response = app.graphql(GRAPHIQL_INTROSPECTION, json!({})).await;
    let schema = &response.data()["__schema"];
    assert_eq!(schema["queryType"]["name"], "Query");
    let types = schema["types"].as_array().unwrap();
    assert!(types.iter().any(|t| t["name"] == "Organization"));
}

#[tokio::test]
async fn graphql_codegens_introspection_query_passes_the_default_limits() {
    let app = TestApp::spawn().await;
    let response = app.graphql(CODEGEN_INTROSPECTION, json!({})).await;
    let types = response.data()["__schema"]["types"].as_array().unwrap();
    assert!(types.iter().any(|t| t["name"] == "Execution"));
}

#[tokio::test]
async fn a_query_deeper_than_the_limit_is_rejected() {
    let app = TestApp::spawn().await;
    let deep = format!(
        "{{ __schema {{ types {{ {}name{} }} }} }}",
        "ofType { ".repeat(20),
        " }".repeat(20)
    );
    let response = app.graphql(&deep, json!({})).await;
    assert_eq!(response.error_code(), "BAD_USER_INPUT");
    assert!(
        response
            .error_message()
            .to_lowercase()
            .contains("nested too deep"),
        "{}",
        response.error_message()
    );
    assert_eq!(response.body["data"], Value::Null);
}

#[tokio::test]
async fn a_query_more_complex_than_the_limit_is_rejected() {
    let app = TestApp::spawn_with(|s| s.max_query_complexity = 50).await;
    let aliases: String = (0..30).map(|i| format!("v{i}: viewer {{ id }} ")).collect();
    let response = app.graphql(&format!("{{ {aliases} }}"), json!({})).await;
    assert_eq!(response.error_code(), "BAD_USER_INPUT");
    assert!(
        response.error_message().to_lowercase().contains("complex"),
        "{}",
        response.error_message()
    );
}

#[tokio::test]
async fn a_body_over_one_mebibyte_is_refused_with_413() {
    let app = TestApp::spawn().await;
    let padding = " ".repeat(1024 * 1024);
    let response = app
        .http()
        .post(app.url("/graphql"))
        .json(&json!({ "query": format!("{{ viewer {{ id }} }}{padding}") }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
}

#[tokio::test]
async fn a_batch_within_the_limit_answers_each_operation() {
    let app = TestApp::spawn().await;
    let response = app
        .http()
        .post(app.url("/graphql"))
        .json(&json!([{ "query": "{ viewer { id } }" }, { "query": "{ __typename }" }]))
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!([{ "data": { "viewer": null } }, { "data": { "__typename": "Query" } }])
    );
}

#[tokio::test]
async fn a_batch_over_the_limit_is_refused() {
    let app = TestApp::spawn().await;
    let batch: Vec<Value> = (0..11)
        .map(|_| json!({ "query": "{ __typename }" }))
        .collect();
    let response = post_raw(&app, Value::Array(batch)).await;
    assert_eq!(response.status, 400);
    assert_eq!(response.error_code(), "BAD_USER_INPUT");
}

#[tokio::test]
async fn an_empty_batch_is_a_coded_400() {
    let app = TestApp::spawn().await;
    let response = post_raw(&app, json!([])).await;
    assert_eq!(response.status, 400);
    assert_eq!(response.error_code(), "BAD_USER_INPUT");
}

#[tokio::test]
async fn a_syntax_error_says_where_and_what_was_expected_without_quoting_the_query() {
    let app = TestApp::spawn().await;
    let response = app.graphql("query { secretWord", json!({})).await;
    let message = response.error_message();
    assert!(
        message.starts_with("the document does not parse at line 1, column"),
        "{message}"
    );
    assert!(message.contains("expected"), "{message}");
    assert!(!message.contains("secretWord"), "{message}");
    assert_eq!(
        response.body["errors"][0]["extensions"]["reason"],
        "PARSE_FAILED"
    );
}

#[tokio::test]
async fn introspection_can_be_turned_off() {
    let app = TestApp::spawn_with(|settings| settings.introspection = false).await;
    let response = app
        .graphql("{ __schema { queryType { name } } }", json!({}))
        .await;
    // The schema is hidden, not broken: the field resolves to null.
    assert_eq!(response.body, json!({ "data": { "__schema": null } }));
    let ordinary = app.graphql("{ viewer { id } }", json!({})).await;
    assert_eq!(ordinary.data()["viewer"], Value::Null);
}

#[tokio::test]
async fn a_body_that_is_not_a_graphql_request_gets_a_coded_400() {
    let app = TestApp::spawn().await;
    let response = app
        .http()
        .post(app.url("/graphql"))
        .header("content-type", "application/json")
        .body("{ this is not json")
        .send()
        .await
        .unwrap();
    let response = GqlResponse::from(response).await;
    assert_eq!(response.status, 400);
    assert_eq!(response.error_code(), "BAD_USER_INPUT");
}

#[tokio::test]
async fn one_request_cannot_ask_for_many_password_checks() {
    let app = TestApp::spawn().await;
    let logins: String = (0..6)
        .map(|i| format!("l{i}: login(input: {{ email: \"a@example.com\", password: \"wrong password\" }}) {{ __typename }} "))
        .collect();
    let response = app
        .graphql(&format!("mutation {{ {logins} }}"), json!({}))
        .await;
    assert_eq!(response.error_code(), "BAD_USER_INPUT");
    assert!(
        response.error_message().to_lowercase().contains("complex"),
        "{}",
        response.error_message()
    );
}

#[tokio::test]
async fn syntax_and_validation_errors_carry_bad_user_input() {
    let app = TestApp::spawn().await;
    let syntax = app.graphql("{ viewer { id ", json!({})).await;
    assert_eq!(syntax.error_code(), "BAD_USER_INPUT");
    let unknown_field = app
        .graphql("{ viewer { favouriteColour } }", json!({}))
        .await;
    assert_eq!(unknown_field.error_code(), "BAD_USER_INPUT");
    let missing_input = app
        .graphql(
            "mutation { register(input: { email: \"a@b.co\" }) { accessToken } }",
            json!({}),
        )
        .await;
    assert_eq!(missing_input.error_code(), "BAD_USER_INPUT");
}
