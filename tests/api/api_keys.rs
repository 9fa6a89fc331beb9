//! API keys: an ADMIN makes a key that acts in one organization with one
//! role (never OWNER). The key (`fp_` and 43 base64url characters) is shown
//! once; listings show only its first 11 characters. A key does what its
//! role allows in its own organization, finds nothing in any other, is
//! nobody (`viewer` is null) and may do nothing only a person may do. It
//! stops working the moment it is revoked or expires, and revoking it
//! closes the sockets opened with it (4403). `lastUsedAt` is written at
//! most once a minute. Making and revoking keys is audited, and whatever a
//! key changes is audited with the key as the actor and no user. Time moves
//! only through `app.clock`.
//!
//! Other modules make keys with [`api_key`], or send [`CREATE_API_KEY`]
//! with `{ "input": CreateApiKeyInput }`.

use chrono::{DateTime, Duration, Utc};
use entity::role::Role;
use serde_json::{Value, json};

use crate::invitations::INVITE;
use crate::members::{
    LEAVE_ORGANIZATION, MEMBERS, UPDATE_MEMBER_ROLE, a_second_passes, assert_bad_input,
    assert_code, nodes, owner_and_organization, time,
};
use crate::support::ws::WsClient;
use crate::support::{GqlResponse, PASSWORD, Session, TestApp, unique_email};

/// Makes a key; variables `{ "input": CreateApiKeyInput }`. The `apiKey`
/// selection is the one this module's listings use, so they compare equal.
pub(crate) const CREATE_API_KEY: &str = "mutation($input: CreateApiKeyInput!) {
  createApiKey(input: $input) {
    key
    apiKey { id name prefix role createdBy { id displayName email } createdAt lastUsedAt expiresAt revokedAt }
  }
}";

/// Makes a key for `organization_id` with `role` (the GraphQL enum name:
/// "ADMIN", "EDITOR" or "VIEWER") as `admin`; returns the `fp_…` key.
/// Panics with the response when the server refuses.
pub(crate) async fn api_key(
    app: &TestApp,
    admin: &Session,
    organization_id: &str,
    role: &str,
) -> String {
    let response = app
        .graphql_as(
            &admin.access_token,
            CREATE_API_KEY,
            json!({ "input": {
                "organizationId": organization_id,
                "name": format!("{} key", role.to_lowercase()),
                "role": role,
            } }),
        )
        .await;
    assert!(
        response.body.get("errors").is_none(),
        "createApiKey failed: {}",
        response.body
    );
    response.body["data"]["createApiKey"]["key"]
        .as_str()
        .unwrap_or_else(|| panic!("no key in {}", response.body))
        .to_owned()
}

const API_KEYS: &str = "query($id: ID!, $first: Int, $after: String) {
  organization(id: $id) { apiKeys(first: $first, after: $after) {
    edges { cursor node { id name prefix role createdBy { id displayName email } createdAt lastUsedAt expiresAt revokedAt } }
    pageInfo { hasNextPage endCursor }
  } }
}";
const API_KEYS_WITH_REVOKED: &str = "query($id: ID!) {
  organization(id: $id) { apiKeys(includeRevoked: true) {
    edges { node { id name prefix role createdBy { id displayName email } createdAt lastUsedAt expiresAt revokedAt } }
  } }
}";
const REVOKE_API_KEY: &str = "mutation($apiKeyId: ID!) {
  revokeApiKey(input: { apiKeyId: $apiKeyId }) {
    id name prefix role createdBy { id displayName email } createdAt lastUsedAt expiresAt revokedAt
  }
}";
const AUDIT_LOG: &str = "query($id: ID!) { organization(id: $id) { auditLog {
  edges { node { action actor { id } actorApiKey { id name prefix } targetType targetId details } }
} } }";
const ORGANIZATION: &str = "query($id: ID!) { organization(id: $id) { id name viewerRole } }";
const WORKFLOW: &str = "query($id: ID!) { workflow(id: $id) { id name } }";
const EXECUTION: &str = "query($id: ID!) { execution(id: $id) { id status } }";
const EXECUTIONS: &str =
    "query($id: ID!) { organization(id: $id) { executions { edges { node { id } } } } }";
const CREATE_WORKFLOW: &str =
    "mutation($input: CreateWorkflowInput!) { createWorkflow(input: $input) { id name } }";
const RUN_WORKFLOW: &str =
    "mutation($input: RunWorkflowInput!) { runWorkflow(input: $input) { id status } }";
const VIEWER: &str = "{ viewer { id } }";
const MEMBERSHIPS: &str = "{ viewer { memberships { organization { id } } } }";
const CREATE_ORGANIZATION: &str =
    "mutation($input: CreateOrganizationInput!) { createOrganization(input: $input) { id } }";
const CHANGE_PASSWORD: &str = "mutation($input: ChangePasswordInput!) {
  changePassword(input: $input) { user { id } revokedSessions } }";
const ACCEPT_INVITATION: &str =
    "mutation($token: String!) { acceptInvitation(input: { token: $token }) { id } }";

/// A server whose executions stay QUEUED (no workers).
async fn app_without_workers() -> TestApp {
    TestApp::spawn_with(|settings| settings.workers = 0).await
}

/// A one-step workflow definition.
fn one_step() -> Value {
    json!([{ "id": "a", "kind": "TRANSFORM", "config": { "output": 1 } }])
}

fn key_input(organization: &str, name: &str, role: &str) -> Value {
    json!({ "organizationId": organization, "name": name, "role": role })
}

/// `createApiKey` with `input`, sent with `token` (an access token or a key).
async fn create(app: &TestApp, token: &str, input: Value) -> GqlResponse {
    app.graphql_as(token, CREATE_API_KEY, json!({ "input": input }))
        .await
}

/// A key `admin` made: the key itself and the `ApiKey` as created.
async fn created(
    app: &TestApp,
    admin: &Session,
    organization: &str,
    name: &str,
    role: &str,
) -> (String, Value) {
    let response = create(
        app,
        &admin.access_token,
        key_input(organization, name, role),
    )
    .await;
    let payload = &response.data()["createApiKey"];
    (
        payload["key"].as_str().expect("key").to_owned(),
        payload["apiKey"].clone(),
    )
}

fn id_of(node: &Value) -> String {
    node["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {node}"))
        .to_owned()
}

async fn revoke(app: &TestApp, token: &str, api_key_id: &str) -> GqlResponse {
    app.graphql_as(token, REVOKE_API_KEY, json!({ "apiKeyId": api_key_id }))
        .await
}

/// The first page of keys `session` lists, without revoked ones.
async fn listed(app: &TestApp, session: &Session, organization: &str) -> Vec<Value> {
    let response = app
        .graphql_as(
            &session.access_token,
            API_KEYS,
            json!({ "id": organization }),
        )
        .await;
    nodes(&response.data()["organization"]["apiKeys"])
}

/// Every key of `organization`, revoked ones too.
async fn listed_with_revoked(app: &TestApp, session: &Session, organization: &str) -> Vec<Value> {
    let response = app
        .graphql_as(
            &session.access_token,
            API_KEYS_WITH_REVOKED,
            json!({ "id": organization }),
        )
        .await;
    nodes(&response.data()["organization"]["apiKeys"])
}

/// `lastUsedAt` of key `id` as the listing shows it.
async fn last_used_at(app: &TestApp, admin: &Session, organization: &str, id: &str) -> Value {
    listed(app, admin, organization)
        .await
        .into_iter()
        .find(|key| key["id"] == id)
        .unwrap_or_else(|| panic!("key {id} is not listed"))["lastUsedAt"]
        .clone()
}

/// The audit log as `session` reads it, newest first.
async fn audit_entries(app: &TestApp, session: &Session, organization: &str) -> Vec<Value> {
    let response = app
        .graphql_as(
            &session.access_token,
            AUDIT_LOG,
            json!({ "id": organization }),
        )
        .await;
    nodes(&response.data()["organization"]["auditLog"])
}

/// Who (a user, or a key) did what to what, from an audit entry.
fn who_acted(entry: &Value) -> Value {
    json!({
        "action": entry["action"],
        "actor": entry["actor"]["id"],
        "actorApiKey": entry["actorApiKey"]["id"],
        "targetType": entry["targetType"],
        "targetId": entry["targetId"],
    })
}

async fn read_organization(app: &TestApp, token: &str, organization: &str) -> GqlResponse {
    app.graphql_as(token, ORGANIZATION, json!({ "id": organization }))
        .await
}

/// Whether `key` still gets in: reading its organization succeeds.
async fn works(app: &TestApp, key: &str, organization: &str) -> bool {
    let response = read_organization(app, key, organization).await;
    response.body.get("errors").is_none()
        && response.body["data"]["organization"]["id"] == organization
}

#[track_caller]
fn assert_key_format(key: &str) {
    let random = key
        .strip_prefix("fp_")
        .unwrap_or_else(|| panic!("a key starts with fp_: {key}"));
    assert_eq!(
        random.chars().count(),
        43,
        "43 characters follow fp_: {key}"
    );
    assert!(
        random
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        "base64url characters only: {key}"
    );
}

/// A time whole to the second, an hour or so after `now`.
fn an_hour_after(now: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(now.timestamp() + 3600, 0).expect("a valid time")
}

// Making keys

#[tokio::test]
async fn creating_a_key_shows_it_once_and_lists_it_by_its_prefix() {
    let app = TestApp::spawn().await;
    let (owner_email, owner, organization) = owner_and_organization(&app).await;

    let before = app.clock.now();
    let response = create(
        &app,
        &owner.access_token,
        key_input(&organization, "Deploy bot", "EDITOR"),
    )
    .await;
    let after = app.clock.now();
    let payload = response.data()["createApiKey"].clone();
    let key = payload["key"].as_str().expect("key").to_owned();
    assert_key_format(&key);

    let made = &payload["apiKey"];
    assert_eq!(made["prefix"], &key[..11]);
    assert!(key.starts_with(made["prefix"].as_str().unwrap()));
    assert_eq!(made["name"], "Deploy bot");
    assert_eq!(made["role"], "EDITOR");
    assert_eq!(
        made["createdBy"],
        json!({ "id": owner.user_id, "displayName": "Test User", "email": owner_email })
    );
    let created_at = time(&made["createdAt"]);
    assert!(
        before <= created_at && created_at <= after,
        "createdAt {created_at} is when it was made ({before} to {after})"
    );
    assert_eq!(made["lastUsedAt"], Value::Null);
    assert_eq!(made["expiresAt"], Value::Null);
    assert_eq!(made["revokedAt"], Value::Null);

    let listing = app
        .graphql_as(&owner.access_token, API_KEYS, json!({ "id": organization }))
        .await;
    assert_eq!(
        nodes(&listing.data()["organization"]["apiKeys"]),
        std::slice::from_ref(made)
    );
    assert!(
        !listing.body.to_string().contains(&key),
        "the listing never shows the key: {}",
        listing.body
    );

    let (second, _) = created(&app, &owner, &organization, "Another", "VIEWER").await;
    assert_key_format(&second);
    assert_ne!(second, key);
}

#[tokio::test]
async fn an_api_key_as_listed_has_no_field_for_the_key_itself() {
    let app = TestApp::spawn().await;
    let response = app
        .graphql(
            "{ __type(name: \"ApiKey\") { fields { name } } }",
            json!({}),
        )
        .await;
    let fields: Vec<&str> = response.data()["__type"]["fields"]
        .as_array()
        .expect("ApiKey is an object type")
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert!(fields.contains(&"prefix"), "{fields:?}");
    for secret in ["key", "secret", "keyHash", "hash", "token"] {
        assert!(
            !fields.contains(&secret),
            "ApiKey exposes {secret}: {fields:?}"
        );
    }
}

#[tokio::test]
async fn a_key_needs_a_name_of_one_to_a_hundred_characters_a_role_below_owner_and_a_future_expiry()
{
    let app = TestApp::spawn().await;
    let (_, owner, organization) = owner_and_organization(&app).await;

    let too_long = "a".repeat(101);
    for name in ["", "   ", too_long.as_str()] {
        let response = create(
            &app,
            &owner.access_token,
            key_input(&organization, name, "VIEWER"),
        )
        .await;
        assert_bad_input(&response, "name");
    }
    let owner_role = create(
        &app,
        &owner.access_token,
        key_input(&organization, "All powerful", "OWNER"),
    )
    .await;
    assert_bad_input(&owner_role, "role");
    let now = app.clock.now();
    for expires_at in [now - Duration::minutes(1), now] {
        let mut input = key_input(&organization, "Already over", "VIEWER");
        input["expiresAt"] = json!(expires_at.to_rfc3339());
        let response = create(&app, &owner.access_token, input).await;
        assert_bad_input(&response, "expiresAt");
    }
    assert_eq!(
        listed_with_revoked(&app, &owner, &organization).await,
        Vec::<Value>::new(),
        "no key was made"
    );

    let (_, padded) = created(&app, &owner, &organization, "  Deploy bot  ", "VIEWER").await;
    assert_eq!(padded["name"], "Deploy bot", "the name is trimmed");
    let longest = "a".repeat(100);
    let (_, long_named) = created(&app, &owner, &organization, &longest, "ADMIN").await;
    assert_eq!(long_named["name"], longest.as_str());
    let expires = an_hour_after(app.clock.now());
    let mut input = key_input(&organization, "For an hour", "EDITOR");
    input["expiresAt"] = json!(expires.to_rfc3339());
    let response = create(&app, &owner.access_token, input).await;
    assert_eq!(
        time(&response.data()["createApiKey"]["apiKey"]["expiresAt"]),
        expires
    );
}

// Who may make keys

#[tokio::test]
async fn an_admin_makes_keys_an_editor_is_forbidden_and_an_outsider_gets_not_found() {
    let app = TestApp::spawn().await;
    let (_, owner, organization) = owner_and_organization(&app).await;
    let admin = app.member(&organization, Role::Admin).await;
    let editor = app.member(&organization, Role::Editor).await;
    let outsider = app.user().await;

    let refused = create(
        &app,
        &editor.access_token,
        key_input(&organization, "Mine", "VIEWER"),
    )
    .await;
    assert_code(&refused, "FORBIDDEN");
    let listing = app
        .graphql_as(
            &editor.access_token,
            API_KEYS,
            json!({ "id": organization }),
        )
        .await;
    assert_code(&listing, "FORBIDDEN");
    assert_eq!(listing.body["data"]["organization"], Value::Null);

    let foreign = create(
        &app,
        &outsider.access_token,
        key_input(&organization, "Theirs", "VIEWER"),
    )
    .await;
    assert_code(&foreign, "NOT_FOUND");
    assert!(
        !foreign.body.to_string().contains("Acme"),
        "{}",
        foreign.body
    );
    let foreign_listing = app
        .graphql_as(
            &outsider.access_token,
            API_KEYS,
            json!({ "id": organization }),
        )
        .await;
    assert_code(&foreign_listing, "NOT_FOUND");
    assert_eq!(
        listed(&app, &owner, &organization).await,
        Vec::<Value>::new()
    );

    let (_, made) = created(&app, &admin, &organization, "Admin's", "EDITOR").await;
    assert_eq!(made["createdBy"]["id"], admin.user_id.as_str());
    assert_eq!(listed(&app, &owner, &organization).await, [made]);
}

#[tokio::test]
async fn no_api_key_can_make_another_key_not_even_an_admin_key() {
    let app = TestApp::spawn().await;
    let (_, owner, organization) = owner_and_organization(&app).await;
    for role in ["VIEWER", "EDITOR", "ADMIN"] {
        let key = api_key(&app, &owner, &organization, role).await;
        let response = create(&app, &key, key_input(&organization, "Spawned", "VIEWER")).await;
        assert_eq!(
            response.error_code(),
            "FORBIDDEN",
            "a {role} key: {}",
            response.body
        );
    }
    let names: Vec<Value> = listed(&app, &owner, &organization)
        .await
        .iter()
        .map(|k| k["name"].clone())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(!names.contains(&json!("Spawned")), "{names:?}");
}

// Acting with a key

#[tokio::test]
async fn a_viewer_key_reads_the_organization_its_workflows_executions_and_members_but_cannot_run_a_workflow()
 {
    let app = app_without_workers().await;
    let (_, owner, organization) = owner_and_organization(&app).await;
    let workflow = app.workflow(&owner, &organization, one_step()).await;
    let execution = app.run(&owner, &workflow, json!({})).await;
    let key = api_key(&app, &owner, &organization, "VIEWER").await;

    let read = read_organization(&app, &key, &organization).await;
    assert_eq!(
        read.data()["organization"],
        json!({ "id": organization, "name": "Acme", "viewerRole": "VIEWER" })
    );
    let read = app
        .graphql_as(&key, WORKFLOW, json!({ "id": workflow }))
        .await;
    assert_eq!(read.data()["workflow"]["id"], workflow.as_str());
    let read = app
        .graphql_as(&key, EXECUTION, json!({ "id": execution }))
        .await;
    assert_eq!(
        read.data()["execution"],
        json!({ "id": execution, "status": "QUEUED" })
    );
    let read = app
        .graphql_as(&key, MEMBERS, json!({ "id": organization }))
        .await;
    let member_ids: Vec<Value> = nodes(&read.data()["organization"]["members"])
        .iter()
        .map(|m| m["user"]["id"].clone())
        .collect();
    assert_eq!(member_ids, [json!(owner.user_id)]);

    let run = app
        .graphql_as(
            &key,
            RUN_WORKFLOW,
            json!({ "input": { "workflowId": workflow } }),
        )
        .await;
    assert_code(&run, "FORBIDDEN");
    let executions = app
        .graphql_as(
            &owner.access_token,
            EXECUTIONS,
            json!({ "id": organization }),
        )
        .await;
    assert_eq!(
        nodes(&executions.data()["organization"]["executions"]).len(),
        1,
        "the viewer key started nothing"
    );
}

#[tokio::test]
async fn an_editor_key_creates_and_runs_workflows_but_cannot_invite() {
    let app = app_without_workers().await;
    let (_, owner, organization) = owner_and_organization(&app).await;
    let key = api_key(&app, &owner, &organization, "EDITOR").await;

    let read = read_organization(&app, &key, &organization).await;
    assert_eq!(read.data()["organization"]["viewerRole"], "EDITOR");

    let made = app
        .graphql_as(
            &key,
            CREATE_WORKFLOW,
            json!({ "input": {
                "organizationId": organization,
                "name": "Keyed workflow",
                "definition": { "steps": one_step() }
            } }),
        )
        .await;
    let workflow = id_of(&made.data()["createWorkflow"]);
    let run = app
        .graphql_as(
            &key,
            RUN_WORKFLOW,
            json!({ "input": { "workflowId": workflow } }),
        )
        .await;
    assert_eq!(run.data()["runWorkflow"]["status"], "QUEUED");
    let execution = id_of(&run.data()["runWorkflow"]);
    let seen = app
        .graphql_as(&owner.access_token, EXECUTION, json!({ "id": execution }))
        .await;
    assert_eq!(seen.data()["execution"]["status"], "QUEUED");

    let email = unique_email();
    let invite = app
        .graphql_as(
            &key,
            INVITE,
            json!({ "organizationId": organization, "email": email, "role": "VIEWER" }),
        )
        .await;
    assert_code(&invite, "FORBIDDEN");
    assert!(app.mailer.captured().iter().all(|m| m.to != email));
}

#[tokio::test]
async fn an_admin_key_invites_changes_roles_below_owner_and_reads_the_audit_log() {
    let app = TestApp::spawn().await;
    let (_, owner, organization) = owner_and_organization(&app).await;
    let viewer = app.member(&organization, Role::Viewer).await;
    let key = api_key(&app, &owner, &organization, "ADMIN").await;

    let read = read_organization(&app, &key, &organization).await;
    assert_eq!(read.data()["organization"]["viewerRole"], "ADMIN");

    let email = unique_email();
    let invite = app
        .graphql_as(
            &key,
            INVITE,
            json!({ "organizationId": organization, "email": email, "role": "EDITOR" }),
        )
        .await;
    assert_eq!(invite.data()["inviteMember"]["email"], email.as_str());
    assert_eq!(invite.data()["inviteMember"]["role"], "EDITOR");
    app.mails_with_link(&email, "/accept-invitation", 1).await;

    let promoted = app
        .graphql_as(
            &key,
            UPDATE_MEMBER_ROLE,
            json!({ "organizationId": organization, "userId": viewer.user_id, "role": "EDITOR" }),
        )
        .await;
    assert_eq!(
        promoted.data()["updateMemberRole"],
        json!({ "user": { "id": viewer.user_id }, "role": "EDITOR" })
    );
    let demoting_the_owner = app
        .graphql_as(
            &key,
            UPDATE_MEMBER_ROLE,
            json!({ "organizationId": organization, "userId": owner.user_id, "role": "ADMIN" }),
        )
        .await;
    assert_code(&demoting_the_owner, "FORBIDDEN");
    let making_an_owner = app
        .graphql_as(
            &key,
            UPDATE_MEMBER_ROLE,
            json!({ "organizationId": organization, "userId": viewer.user_id, "role": "OWNER" }),
        )
        .await;
    assert_code(&making_an_owner, "FORBIDDEN");
    let owner_read = read_organization(&app, &owner.access_token, &organization).await;
    assert_eq!(owner_read.data()["organization"]["viewerRole"], "OWNER");

    let log = app
        .graphql_as(&key, AUDIT_LOG, json!({ "id": organization }))
        .await;
    let actions: Vec<Value> = nodes(&log.data()["organization"]["auditLog"])
        .iter()
        .map(|e| e["action"].clone())
        .collect();
    assert!(
        actions.contains(&json!("MEMBER_ROLE_CHANGED")),
        "{actions:?}"
    );
}

#[tokio::test]
async fn a_key_finds_nothing_in_another_organization_even_one_its_creator_owns() {
    let app = app_without_workers().await;
    let (_, owner, organization) = owner_and_organization(&app).await;
    let other = app.organization(&owner, "Beta").await;
    let workflow = app.workflow(&owner, &other, one_step()).await;
    let execution = app.run(&owner, &workflow, json!({})).await;
    let other_key = api_key(&app, &owner, &other, "VIEWER").await;
    let other_key_id = id_of(&listed(&app, &owner, &other).await[0]);
    let key = api_key(&app, &owner, &organization, "ADMIN").await;

    let read = read_organization(&app, &key, &other).await;
    assert_code(&read, "NOT_FOUND");
    assert_eq!(read.body["data"]["organization"], Value::Null);
    assert!(!read.body.to_string().contains("Beta"), "{}", read.body);

    let attempts = [
        (WORKFLOW, json!({ "id": workflow })),
        (EXECUTION, json!({ "id": execution })),
        (API_KEYS, json!({ "id": other })),
        (RUN_WORKFLOW, json!({ "input": { "workflowId": workflow } })),
        (
            CREATE_WORKFLOW,
            json!({ "input": {
                "organizationId": other, "name": "Intruder", "definition": { "steps": one_step() }
            } }),
        ),
        (
            INVITE,
            json!({ "organizationId": other, "email": unique_email(), "role": "VIEWER" }),
        ),
        (
            UPDATE_MEMBER_ROLE,
            json!({ "organizationId": other, "userId": owner.user_id, "role": "VIEWER" }),
        ),
        (REVOKE_API_KEY, json!({ "apiKeyId": other_key_id })),
    ];
    for (operation, variables) in attempts {
        let response = app.graphql_as(&key, operation, variables).await;
        assert_eq!(
            response.error_code(),
            "NOT_FOUND",
            "{operation}: {}",
            response.body
        );
    }

    assert!(
        works(&app, &other_key, &other).await,
        "the other organization's key was not revoked"
    );
    let executions = app
        .graphql_as(&owner.access_token, EXECUTIONS, json!({ "id": other }))
        .await;
    assert_eq!(
        nodes(&executions.data()["organization"]["executions"]).len(),
        1,
        "nothing was started in the other organization"
    );
    let owner_read = read_organization(&app, &owner.access_token, &other).await;
    assert_eq!(owner_read.data()["organization"]["viewerRole"], "OWNER");
}

#[tokio::test]
async fn the_viewer_of_a_key_is_null_without_an_error() {
    let app = TestApp::spawn().await;
    let (_, owner, organization) = owner_and_organization(&app).await;
    let key = api_key(&app, &owner, &organization, "ADMIN").await;
    let response = app.graphql_as(&key, VIEWER, json!({})).await;
    assert_eq!(response.data()["viewer"], Value::Null);
}

#[tokio::test]
async fn a_key_may_do_nothing_only_a_person_may_do() {
    let app = TestApp::spawn().await;
    let (owner_email, owner, organization) = owner_and_organization(&app).await;
    let key = api_key(&app, &owner, &organization, "ADMIN").await;
    let invited = unique_email();
    app.graphql_as(
        &owner.access_token,
        INVITE,
        json!({ "organizationId": organization, "email": invited, "role": "VIEWER" }),
    )
    .await
    .data();
    let token = app
        .mailed_token(&invited, "/accept-invitation", "fpi_", 1)
        .await;

    let attempts = [
        (
            "createOrganization",
            CREATE_ORGANIZATION,
            json!({ "input": { "name": "Keyed" } }),
        ),
        ("logout", "mutation { logout }", json!({})),
        ("setupMfa", "mutation { setupMfa { secret } }", json!({})),
        (
            "changePassword",
            CHANGE_PASSWORD,
            json!({ "input": { "currentPassword": PASSWORD, "newPassword": "a brand new passphrase for keys" } }),
        ),
        (
            "leaveOrganization",
            LEAVE_ORGANIZATION,
            json!({ "organizationId": organization }),
        ),
        (
            "acceptInvitation",
            ACCEPT_INVITATION,
            json!({ "token": token }),
        ),
        (
            "createApiKey",
            CREATE_API_KEY,
            json!({ "input": key_input(&organization, "Spawned", "VIEWER") }),
        ),
    ];
    for (name, operation, variables) in attempts {
        let response = app.graphql_as(&key, operation, variables).await;
        assert_eq!(
            response.error_code(),
            "FORBIDDEN",
            "{name}: {}",
            response.body
        );
    }

    assert!(
        works(&app, &key, &organization).await,
        "the key still works"
    );
    let memberships = app
        .graphql_as(&owner.access_token, MEMBERSHIPS, json!({}))
        .await;
    assert_eq!(
        memberships.data()["viewer"]["memberships"],
        json!([{ "organization": { "id": organization } }]),
        "no organization was made"
    );
    let signed_in = app.login(&owner_email, PASSWORD, &[]).await;
    assert!(
        signed_in.data()["login"]["accessToken"].is_string(),
        "the password is unchanged"
    );
}

// Keys that do not work

#[tokio::test]
async fn an_unknown_key_is_unauthenticated() {
    let app = TestApp::spawn().await;
    let (_, owner, organization) = owner_and_organization(&app).await;
    let key = api_key(&app, &owner, &organization, "ADMIN").await;

    let made_up = format!("fp_{}", "A".repeat(43));
    let mut altered = key[..key.len() - 1].to_owned();
    altered.push(if key.ends_with('A') { 'B' } else { 'A' });
    for wrong in [made_up.as_str(), altered.as_str(), &key[..11]] {
        let response = read_organization(&app, wrong, &organization).await;
        assert_eq!(
            response.error_code(),
            "UNAUTHENTICATED",
            "{wrong}: {}",
            response.body
        );
    }
    assert!(works(&app, &key, &organization).await);
}

#[tokio::test]
async fn a_key_works_until_it_expires_and_then_is_unauthenticated() {
    let app = TestApp::spawn().await;
    let (_, owner, organization) = owner_and_organization(&app).await;
    let expires = an_hour_after(app.clock.now());
    let mut input = key_input(&organization, "Temporary", "VIEWER");
    input["expiresAt"] = json!(expires.to_rfc3339());
    let response = create(&app, &owner.access_token, input).await;
    let key = response.data()["createApiKey"]["key"]
        .as_str()
        .expect("key")
        .to_owned();

    app.clock.advance(Duration::minutes(58));
    assert!(works(&app, &key, &organization).await, "before its expiry");
    app.clock.advance(Duration::minutes(3));
    assert!(app.clock.now() > expires);
    let response = read_organization(&app, &key, &organization).await;
    assert_code(&response, "UNAUTHENTICATED");
}

// lastUsedAt

#[tokio::test]
async fn last_used_at_is_null_until_the_key_is_used_and_then_the_time_of_use() {
    let app = TestApp::spawn().await;
    let (_, owner, organization) = owner_and_organization(&app).await;
    let (key, made) = created(&app, &owner, &organization, "Reporting", "VIEWER").await;
    let id = id_of(&made);
    assert_eq!(made["lastUsedAt"], Value::Null);
    assert_eq!(
        last_used_at(&app, &owner, &organization, &id).await,
        Value::Null,
        "making and listing a key is no use of it"
    );

    app.clock.advance(Duration::minutes(5));
    let before = app.clock.now();
    read_organization(&app, &key, &organization).await.data();
    let after = app.clock.now();
    let used = time(&last_used_at(&app, &owner, &organization, &id).await);
    assert!(
        before <= used && used <= after,
        "lastUsedAt {used} is when it was used ({before} to {after})"
    );
}

#[tokio::test]
async fn last_used_at_is_written_again_only_after_a_minute() {
    let app = TestApp::spawn().await;
    let (_, owner, organization) = owner_and_organization(&app).await;
    let (key, made) = created(&app, &owner, &organization, "Reporting", "VIEWER").await;
    let id = id_of(&made);
    read_organization(&app, &key, &organization).await.data();
    let first = last_used_at(&app, &owner, &organization, &id).await;
    let first_time = time(&first);

    app.clock.advance(Duration::seconds(30));
    read_organization(&app, &key, &organization).await.data();
    assert_eq!(
        last_used_at(&app, &owner, &organization, &id).await,
        first,
        "not written again within a minute"
    );

    app.clock.advance(Duration::seconds(31));
    let before = app.clock.now();
    read_organization(&app, &key, &organization).await.data();
    let after = app.clock.now();
    let later = time(&last_used_at(&app, &owner, &organization, &id).await);
    assert!(
        before <= later && later <= after,
        "lastUsedAt {later} is the latest use ({before} to {after})"
    );
    assert!(
        later - first_time > Duration::minutes(1),
        "{first_time} {later}"
    );
}

// Revoking keys

#[tokio::test]
async fn revoking_a_key_stops_it_at_once_and_closes_its_open_sockets() {
    let app = app_without_workers().await;
    let (_, owner, organization) = owner_and_organization(&app).await;
    let workflow = app.workflow(&owner, &organization, one_step()).await;
    let execution = app.run(&owner, &workflow, json!({})).await;
    let (key, made) = created(&app, &owner, &organization, "Dashboard", "VIEWER").await;
    let id = id_of(&made);

    let mut socket = WsClient::connect_as(&app, Some(&key)).await;
    socket.subscribe_events("events", &execution, 0).await;
    let first = socket.next_json().await;
    assert_eq!(
        (&first["type"], &first["id"]),
        (&json!("next"), &json!("events")),
        "the key streams events: {first}"
    );
    let mut owner_socket = WsClient::connect_as(&app, Some(&owner.access_token)).await;
    assert!(works(&app, &key, &organization).await);

    let before = app.clock.now();
    let response = revoke(&app, &owner.access_token, &id).await;
    let after = app.clock.now();
    let revoked = response.data()["revokeApiKey"].clone();
    assert_eq!(revoked["id"], id.as_str());
    for field in ["name", "prefix", "role", "createdBy", "createdAt"] {
        assert_eq!(revoked[field], made[field], "{field}");
    }
    let revoked_at = time(&revoked["revokedAt"]);
    assert!(
        before <= revoked_at && revoked_at <= after,
        "revokedAt {revoked_at} is when it was revoked ({before} to {after})"
    );

    let refused = read_organization(&app, &key, &organization).await;
    assert_code(&refused, "UNAUTHENTICATED");
    socket.expect_close(4403).await;
    owner_socket.send(json!({ "type": "ping" })).await;
    assert_eq!(
        owner_socket.next_json().await["type"],
        "pong",
        "a socket of the owner's stays open"
    );

    let mut reconnecting = WsClient::connect(&app).await;
    reconnecting
        .send(json!({
            "type": "connection_init",
            "payload": { "authorization": format!("Bearer {key}") }
        }))
        .await;
    reconnecting.expect_close(4403).await;
}

#[tokio::test]
async fn revoking_a_revoked_key_again_returns_it_unchanged_and_is_audited_once() {
    let app = TestApp::spawn().await;
    let (_, owner, organization) = owner_and_organization(&app).await;
    let (_, made) = created(&app, &owner, &organization, "Old CI", "EDITOR").await;
    let id = id_of(&made);

    let first = revoke(&app, &owner.access_token, &id).await.data()["revokeApiKey"].clone();
    assert!(first["revokedAt"].is_string(), "{first}");
    a_second_passes(&app);
    let again = revoke(&app, &owner.access_token, &id).await;
    assert_eq!(again.data()["revokeApiKey"], first, "the same revokedAt");

    let revocations = audit_entries(&app, &owner, &organization)
        .await
        .into_iter()
        .filter(|e| e["action"] == "API_KEY_REVOKED")
        .count();
    assert_eq!(revocations, 1);
}

#[tokio::test]
async fn revoked_keys_are_listed_only_when_asked_for() {
    let app = TestApp::spawn().await;
    let (_, owner, organization) = owner_and_organization(&app).await;
    let (_, kept) = created(&app, &owner, &organization, "Kept", "VIEWER").await;
    a_second_passes(&app);
    let (_, gone) = created(&app, &owner, &organization, "Gone", "VIEWER").await;
    revoke(&app, &owner.access_token, &id_of(&gone))
        .await
        .data();

    let ids = |keys: &[Value]| keys.iter().map(id_of).collect::<Vec<_>>();
    assert_eq!(
        ids(&listed(&app, &owner, &organization).await),
        [id_of(&kept)]
    );
    let everything = listed_with_revoked(&app, &owner, &organization).await;
    assert_eq!(
        ids(&everything),
        [id_of(&gone), id_of(&kept)],
        "newest first"
    );
    assert!(everything[0]["revokedAt"].is_string(), "{}", everything[0]);
    assert_eq!(everything[1]["revokedAt"], Value::Null);
}

#[tokio::test]
async fn only_an_admin_of_the_organization_revokes_a_key() {
    let app = TestApp::spawn().await;
    let (_, owner, organization) = owner_and_organization(&app).await;
    let editor = app.member(&organization, Role::Editor).await;
    let admin = app.member(&organization, Role::Admin).await;
    let outsider = app.user().await;
    let (key, made) = created(&app, &owner, &organization, "Target", "VIEWER").await;
    let id = id_of(&made);
    let editor_key = api_key(&app, &owner, &organization, "EDITOR").await;

    assert_code(&revoke(&app, &editor.access_token, &id).await, "FORBIDDEN");
    assert_code(&revoke(&app, &editor_key, &id).await, "FORBIDDEN");
    assert_code(
        &revoke(&app, &outsider.access_token, &id).await,
        "NOT_FOUND",
    );
    assert!(works(&app, &key, &organization).await, "still not revoked");

    let revoked = revoke(&app, &admin.access_token, &id).await;
    assert!(revoked.data()["revokeApiKey"]["revokedAt"].is_string());
    assert!(!works(&app, &key, &organization).await);
}

// The audit log

#[tokio::test]
async fn making_and_revoking_a_key_is_audited_with_the_user_who_did_it() {
    let app = TestApp::spawn().await;
    let (_, owner, organization) = owner_and_organization(&app).await;
    let admin = app.member(&organization, Role::Admin).await;
    let (key, made) = created(&app, &admin, &organization, "Deploy", "EDITOR").await;
    let id = id_of(&made);
    a_second_passes(&app);
    revoke(&app, &owner.access_token, &id).await.data();

    let log = audit_entries(&app, &owner, &organization).await;
    assert_eq!(
        log.iter().map(who_acted).collect::<Vec<_>>(),
        [
            json!({ "action": "API_KEY_REVOKED", "actor": owner.user_id, "actorApiKey": null, "targetType": "api_key", "targetId": id }),
            json!({ "action": "API_KEY_CREATED", "actor": admin.user_id, "actorApiKey": null, "targetType": "api_key", "targetId": id }),
        ]
    );
    assert_eq!(log[1]["details"]["name"], "Deploy");
    assert_eq!(log[1]["details"]["role"], "EDITOR");
    let whole_log = serde_json::to_string(&log).unwrap();
    assert!(
        !whole_log.contains(&key),
        "the audit log never holds the key: {whole_log}"
    );
}

#[tokio::test]
async fn a_key_revoked_by_an_admin_key_is_audited_with_that_key_as_the_actor() {
    let app = TestApp::spawn().await;
    let (_, owner, organization) = owner_and_organization(&app).await;
    let (admin_key, automation) = created(&app, &owner, &organization, "Automation", "ADMIN").await;
    let automation_id = id_of(&automation);
    a_second_passes(&app);
    let (old_key, old) = created(&app, &owner, &organization, "Old CI", "EDITOR").await;
    let old_id = id_of(&old);
    a_second_passes(&app);

    let response = revoke(&app, &admin_key, &old_id).await;
    assert!(response.data()["revokeApiKey"]["revokedAt"].is_string());
    assert!(!works(&app, &old_key, &organization).await);
    assert!(works(&app, &admin_key, &organization).await);

    let log = audit_entries(&app, &owner, &organization).await;
    assert_eq!(
        log.iter().map(who_acted).collect::<Vec<_>>(),
        [
            json!({ "action": "API_KEY_REVOKED", "actor": null, "actorApiKey": automation_id, "targetType": "api_key", "targetId": old_id }),
            json!({ "action": "API_KEY_CREATED", "actor": owner.user_id, "actorApiKey": null, "targetType": "api_key", "targetId": old_id }),
            json!({ "action": "API_KEY_CREATED", "actor": owner.user_id, "actorApiKey": null, "targetType": "api_key", "targetId": automation_id }),
        ]
    );
    assert_eq!(log[0]["actor"], Value::Null);
    assert_eq!(log[0]["actorApiKey"]["name"], "Automation");
    assert_eq!(log[0]["actorApiKey"]["prefix"], &admin_key[..11]);
}

#[tokio::test]
async fn changes_an_admin_key_makes_are_audited_with_the_key_as_the_actor_and_no_user() {
    let app = TestApp::spawn().await;
    let (_, owner, organization) = owner_and_organization(&app).await;
    let viewer = app.member(&organization, Role::Viewer).await;
    let (key, made) = created(&app, &owner, &organization, "Provisioner", "ADMIN").await;
    let key_id = id_of(&made);
    a_second_passes(&app);
    app.graphql_as(
        &key,
        UPDATE_MEMBER_ROLE,
        json!({ "organizationId": organization, "userId": viewer.user_id, "role": "EDITOR" }),
    )
    .await
    .data();
    a_second_passes(&app);
    let invited = app
        .graphql_as(
            &key,
            INVITE,
            json!({ "organizationId": organization, "email": unique_email(), "role": "VIEWER" }),
        )
        .await;
    let invitation = id_of(&invited.data()["inviteMember"]);

    let log = audit_entries(&app, &owner, &organization).await;
    assert_eq!(
        log.iter().map(who_acted).collect::<Vec<_>>(),
        [
            json!({ "action": "INVITATION_CREATED", "actor": null, "actorApiKey": key_id, "targetType": "invitation", "targetId": invitation }),
            json!({ "action": "MEMBER_ROLE_CHANGED", "actor": null, "actorApiKey": key_id, "targetType": "member", "targetId": viewer.user_id }),
            json!({ "action": "API_KEY_CREATED", "actor": owner.user_id, "actorApiKey": null, "targetType": "api_key", "targetId": key_id }),
        ]
    );
    assert_eq!(
        log[1]["details"],
        json!({ "from": "VIEWER", "to": "EDITOR" })
    );
    assert_eq!(log[1]["actorApiKey"]["name"], "Provisioner");
}

// Listing

#[tokio::test]
async fn keys_are_listed_newest_first_in_pages_that_follow_the_cursor() {
    let app = TestApp::spawn().await;
    let (_, owner, organization) = owner_and_organization(&app).await;
    let mut made = Vec::new();
    for n in 0..5 {
        a_second_passes(&app);
        let (_, key) = created(&app, &owner, &organization, &format!("Key {n}"), "VIEWER").await;
        made.push(id_of(&key));
    }
    made.reverse();

    // Five keys in pages of two: three pages.
    let mut paged = Vec::new();
    let mut has_next = Vec::new();
    let mut after = Value::Null;
    for _ in 0..3 {
        let response = app
            .graphql_as(
                &owner.access_token,
                API_KEYS,
                json!({ "id": organization, "first": 2, "after": after }),
            )
            .await;
        let connection = &response.data()["organization"]["apiKeys"];
        paged.extend(nodes(connection).iter().map(id_of));
        has_next.push(connection["pageInfo"]["hasNextPage"].clone());
        after = connection["pageInfo"]["endCursor"].clone();
    }
    assert_eq!(paged, made);
    assert_eq!(has_next, [json!(true), json!(true), json!(false)]);
}

#[tokio::test]
async fn revoking_a_key_on_one_instance_closes_its_socket_on_another() {
    let app = app_without_workers().await;
    let other_instance = TestApp::start(app.settings.clone()).await;
    let (_, owner, organization) = owner_and_organization(&app).await;
    let (key, made) = created(&app, &owner, &organization, "Dashboard", "VIEWER").await;
    let mut socket = WsClient::connect_as(&other_instance, Some(&key)).await;

    revoke(&app, &owner.access_token, &id_of(&made))
        .await
        .data();

    socket.expect_close(4403).await;
    let refused = read_organization(&other_instance, &key, &organization).await;
    assert_code(&refused, "UNAUTHENTICATED");
    other_instance.stop().await;
}
