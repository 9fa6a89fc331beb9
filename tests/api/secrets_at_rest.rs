//! Secrets at rest: after every flow that hands a client a secret (a
//! password, tokens, links, a TOTP secret, backup codes, an API key, a
//! webhook URL), no value in any table of the database contains one of them
//! in plain text. The database is read generically, table by table, so a
//! new table cannot slip past.

use sea_orm::{ConnectionTrait, DbBackend, QueryResult, Statement};
use serde_json::json;
use sha2::{Digest, Sha256};
use totp_rs::Secret;

use crate::invitations::INVITE;
use crate::mfa::{challenge, complete, enable_mfa, next_step_code, signed_in};
use crate::support::{PASSWORD, Session, TestApp, link_token, unique_email};

const CREATE_WEBHOOK_TRIGGER: &str = "mutation($input: CreateWebhookTriggerInput!) {
  createWebhookTrigger(input: $input) { trigger { id } url path }
}";

/// The tokens of the `count` links to `path` mailed to `email`.
async fn mailed_tokens(app: &TestApp, email: &str, path: &str, count: usize) -> Vec<String> {
    app.mails_with_link(email, path, count)
        .await
        .iter()
        .map(|mail| link_token(&mail.body, path))
        .collect()
}

/// One value read from the database, lower-cased.
struct Cell {
    table: String,
    column: String,
    text: String,
}

/// The value in column `index` as text, if it reads as text, JSON or bytes
/// (bytes both as lossy UTF-8 and as hex).
fn as_text(row: &QueryResult, index: usize) -> Option<String> {
    if let Ok(text) = row.try_get_by_index::<Option<String>>(index) {
        return text;
    }
    if let Ok(json) = row.try_get_by_index::<Option<serde_json::Value>>(index) {
        return json.map(|json| json.to_string());
    }
    let bytes = row.try_get_by_index::<Option<Vec<u8>>>(index).ok()??;
    let text = String::from_utf8_lossy(&bytes);
    Some(format!("{text} {}", hex(&bytes)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Every readable value in every table of `app`'s database.
async fn every_value(app: &TestApp) -> Vec<Cell> {
    let db = &app.state.db;
    let backend = db.get_database_backend();
    let list_tables = match backend {
        DbBackend::Sqlite => "SELECT name FROM sqlite_master WHERE type = 'table'",
        _ => "SELECT tablename::text AS name FROM pg_tables WHERE schemaname = current_schema()",
    };
    let tables = db
        .query_all_raw(Statement::from_string(backend, list_tables))
        .await
        .expect("list the tables");
    let mut cells = Vec::new();
    for table in tables {
        let table: String = table.try_get("", "name").expect("table name");
        let rows = db
            .query_all_raw(Statement::from_string(
                backend,
                format!("SELECT * FROM \"{table}\""),
            ))
            .await
            .unwrap_or_else(|e| panic!("read {table}: {e}"));
        for row in rows {
            for (index, column) in row.column_names().into_iter().enumerate() {
                if let Some(text) = as_text(&row, index) {
                    cells.push(Cell {
                        table: table.clone(),
                        column,
                        text: text.to_lowercase(),
                    });
                }
            }
        }
    }
    cells
}

#[tokio::test]
async fn no_secret_a_client_was_given_is_stored_in_plain_text() {
    let app = TestApp::spawn().await;
    let email = unique_email();
    let registered = app.register(&email).await;
    let logged_in = Session::from_payload(&app.login(&email, PASSWORD, &[]).await.data()["login"]);
    let refreshed = app
        .graphql(
            "mutation($input: RefreshSessionInput!) {
               refreshSession(input: $input) { accessToken refreshToken user { id } } }",
            json!({ "input": { "refreshToken": logged_in.refresh_token } }),
        )
        .await;
    let refreshed = Session::from_payload(&refreshed.data()["refreshSession"]);
    let resent = app
        .graphql_as(
            &registered.access_token,
            "mutation { resendVerificationEmail }",
            json!({}),
        )
        .await;
    assert_eq!(resent.data()["resendVerificationEmail"], true);
    let requested = app
        .graphql(
            "mutation($input: RequestPasswordResetInput!) { requestPasswordReset(input: $input) }",
            json!({ "input": { "email": email } }),
        )
        .await;
    assert_eq!(requested.data()["requestPasswordReset"], true);
    let (totp_secret, backup_codes) = enable_mfa(&app, &registered).await;
    let challenge_token = challenge(&app, &email).await;
    let code = next_step_code(&app, &totp_secret);
    let second_factor = signed_in(&complete(&app, &challenge_token, &code).await);

    let organization = app.organization(&registered, "Secrets").await;
    let api_key = crate::api_keys::api_key(&app, &registered, &organization, "VIEWER").await;
    let invited = unique_email();
    let invite = json!({ "organizationId": organization, "email": invited, "role": "VIEWER" });
    app.graphql_as(&registered.access_token, INVITE, invite)
        .await
        .data();
    let invitation = app
        .mailed_token(&invited, "/accept-invitation", "fpi_", 1)
        .await;

    // A webhook, delivered to once, so its token has also passed through a
    // request path.
    let steps = json!([{ "id": "a", "kind": "TRANSFORM", "config": { "output": "{{ input }}" } }]);
    let workflow = app.workflow(&registered, &organization, steps).await;
    let hooked = app
        .graphql_as(
            &registered.access_token,
            CREATE_WEBHOOK_TRIGGER,
            json!({ "input": { "workflowId": workflow } }),
        )
        .await;
    let path = hooked.data()["createWebhookTrigger"]["path"]
        .as_str()
        .expect("the webhook's path")
        .to_owned();
    let webhook_token = path
        .strip_prefix("/hooks/")
        .unwrap_or_else(|| panic!("not a webhook path: {path}"))
        .to_owned();
    let token_body = webhook_token
        .strip_prefix("fph_")
        .unwrap_or_else(|| panic!("a webhook token starts with fph_: {webhook_token}"))
        .to_owned();
    let delivered = app
        .http()
        .post(app.url(&path))
        .json(&json!({ "n": 1 }))
        .send()
        .await
        .expect("POST the webhook");
    assert_eq!(delivered.status(), reqwest::StatusCode::ACCEPTED);
    let delivered: serde_json::Value = delivered.json().await.expect("a JSON answer");
    let execution = delivered["executionId"]
        .as_str()
        .unwrap_or_else(|| panic!("no executionId: {delivered}"));
    let finished = app.finished_execution(&registered, execution).await;
    assert_eq!(finished["status"], "SUCCEEDED", "{finished}");

    let mut secrets = vec![
        PASSWORD.to_owned(),
        challenge_token,
        api_key,
        invitation,
        webhook_token.clone(),
        token_body,
    ];
    for session in [&registered, &logged_in, &refreshed, &second_factor] {
        secrets.push(session.access_token.clone());
        secrets.push(session.refresh_token.clone());
    }
    let verification = mailed_tokens(&app, &email, "/verify-email", 2).await;
    let reset = mailed_tokens(&app, &email, "/reset-password", 1).await;
    assert!(
        verification.iter().all(|token| token.starts_with("fpv_"))
            && reset.iter().all(|token| token.starts_with("fpp_")),
        "{verification:?} {reset:?}"
    );
    secrets.extend(verification);
    secrets.extend(reset);
    for code in &backup_codes {
        secrets.push(code.clone());
        secrets.push(code.replace('-', ""));
    }
    let raw_secret = Secret::try_from_base32(&totp_secret).expect("base32 secret");
    secrets.push(hex(raw_secret.as_bytes()));
    secrets.push(totp_secret.clone());

    let cells = every_value(&app).await;
    assert!(
        cells.iter().any(|cell| cell.table == "users"
            && cell.column == "password_hash"
            && cell.text.starts_with("$argon2id$")),
        "the dump reads the users' password hashes"
    );
    assert!(
        cells
            .iter()
            .any(|cell| cell.table == "api_keys" && cell.column == "key_hash"),
        "the dump reads the API keys' hashes"
    );
    let webhook_hash = hex(&Sha256::digest(webhook_token.as_bytes()));
    assert!(
        cells.iter().any(|cell| cell.table == "triggers"
            && cell.column == "token_hash"
            && cell.text == webhook_hash),
        "the webhook's token is stored as its SHA-256, hex ({webhook_hash})"
    );
    for secret in &secrets {
        let secret = secret.to_lowercase();
        for cell in &cells {
            assert!(
                !cell.text.contains(&secret),
                "{}.{} holds a secret the client was given: {secret}",
                cell.table,
                cell.column
            );
        }
    }

    // The TOTP secret is kept (sealed), not thrown away: it still signs in.
    let code = next_step_code(&app, &totp_secret);
    signed_in(&complete(&app, &challenge(&app, &email).await, &code).await);
}
