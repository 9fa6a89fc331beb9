//! An organization's members and settings: listing members, changing and
//! taking away roles, leaving, handing ownership over, renaming, finding an
//! organization by slug, and the audit log that records every such change.
//! Invitations have a module of their own; the operations and helpers other
//! modules share are `pub(crate)` here.

use chrono::{DateTime, Duration, Utc};
use entity::role::Role;
use serde_json::{Value, json};

use crate::support::{GqlResponse, Session, TestApp, unique_email};

const ORGANIZATION: &str = "query($id: ID!) { organization(id: $id) { id name slug viewerRole } }";
const BY_SLUG: &str =
    "query($slug: String!) { organizationBySlug(slug: $slug) { id name slug viewerRole } }";
pub(crate) const MEMBERS: &str = "query($id: ID!, $first: Int, $after: String) {
  organization(id: $id) { members(first: $first, after: $after) {
    edges { cursor node { user { id displayName email } role joinedAt } }
    pageInfo { hasNextPage endCursor }
  } }
}";
pub(crate) const AUDIT_LOG: &str = "query($id: ID!) { organization(id: $id) { auditLog {
  edges { node { id action actor { id displayName email } targetType targetId details createdAt } }
} } }";
pub(crate) const UPDATE_ORGANIZATION: &str =
    "mutation($organizationId: ID!, $name: String, $slug: String) {
  updateOrganization(input: { organizationId: $organizationId, name: $name, slug: $slug }) {
    id name slug viewerRole
  }
}";
pub(crate) const UPDATE_MEMBER_ROLE: &str =
    "mutation($organizationId: ID!, $userId: ID!, $role: Role!) {
  updateMemberRole(input: { organizationId: $organizationId, userId: $userId, role: $role }) {
    user { id } role
  }
}";
pub const REMOVE_MEMBER: &str = "mutation($organizationId: ID!, $userId: ID!) {
  removeMember(input: { organizationId: $organizationId, userId: $userId })
}";
pub(crate) const LEAVE_ORGANIZATION: &str = "mutation($organizationId: ID!) {
  leaveOrganization(input: { organizationId: $organizationId })
}";
pub(crate) const TRANSFER_OWNERSHIP: &str = "mutation($organizationId: ID!, $userId: ID!) {
  transferOwnership(input: { organizationId: $organizationId, userId: $userId }) { id viewerRole }
}";

// Helpers shared with the invitation and role matrix tests

/// A new user with a known address who is a member of `organization` with
/// `role`; the address comes first.
pub(crate) async fn registered_member(
    app: &TestApp,
    organization: &str,
    role: Role,
) -> (String, Session) {
    let email = unique_email();
    let session = app.register(&email).await;
    flowpilot::orgs::service::add_member(
        &app.state,
        organization.parse().expect("organization id"),
        session.user_id.parse().expect("user id"),
        role,
    )
    .await
    .expect("membership added");
    (email, session)
}

/// Moves the clock on a second, so that what happens next is recorded
/// strictly later than what came before.
pub(crate) fn a_second_passes(app: &TestApp) {
    app.clock.advance(Duration::seconds(1));
}

/// The members of `organization` as `session` lists them (first page).
pub(crate) async fn members(app: &TestApp, session: &Session, organization: &str) -> Vec<Value> {
    let response = app
        .graphql_as(
            &session.access_token,
            MEMBERS,
            json!({ "id": organization }),
        )
        .await;
    nodes(&response.data()["organization"]["members"])
}

/// The audit log of `organization` as `session` reads it, newest first.
pub(crate) async fn audit_log(app: &TestApp, session: &Session, organization: &str) -> Vec<Value> {
    let response = app
        .graphql_as(
            &session.access_token,
            AUDIT_LOG,
            json!({ "id": organization }),
        )
        .await;
    nodes(&response.data()["organization"]["auditLog"])
}

/// Who did what to what, from an audit entry; details are checked apart.
pub(crate) fn who_did_what(entry: &Value) -> Value {
    json!({
        "action": entry["action"],
        "actor": entry["actor"]["id"],
        "targetType": entry["targetType"],
        "targetId": entry["targetId"],
    })
}

/// The nodes of a Relay connection, in order.
pub(crate) fn nodes(connection: &Value) -> Vec<Value> {
    connection["edges"]
        .as_array()
        .unwrap_or_else(|| panic!("not a connection: {connection}"))
        .iter()
        .map(|edge| edge["node"].clone())
        .collect()
}

#[track_caller]
pub(crate) fn assert_code(response: &GqlResponse, code: &str) {
    assert_eq!(response.error_code(), code, "{}", response.body);
}

#[track_caller]
pub(crate) fn assert_bad_input(response: &GqlResponse, field: &str) {
    assert_code(response, "BAD_USER_INPUT");
    assert_eq!(response.error_field(), field, "{}", response.body);
}

/// An owner with a known address and their new organization "Acme".
pub(crate) async fn owner_and_organization(app: &TestApp) -> (String, Session, String) {
    let email = unique_email();
    let owner = app.register(&email).await;
    let organization = app.organization(&owner, "Acme").await;
    (email, owner, organization)
}

/// A time as GraphQL gives it.
pub(crate) fn time(value: &Value) -> DateTime<Utc> {
    value
        .as_str()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("not an RFC 3339 time: {value}"))
}

// Helpers of this module

async fn read_organization(app: &TestApp, session: &Session, organization: &str) -> GqlResponse {
    app.graphql_as(
        &session.access_token,
        ORGANIZATION,
        json!({ "id": organization }),
    )
    .await
}

async fn by_slug(app: &TestApp, session: &Session, slug: &str) -> GqlResponse {
    app.graphql_as(&session.access_token, BY_SLUG, json!({ "slug": slug }))
        .await
}

/// The role `session` holds in `organization`, as `viewerRole` says.
async fn role_in(app: &TestApp, session: &Session, id: &str) -> Value {
    read_organization(app, session, id).await.data()["organization"]["viewerRole"].clone()
}

/// `updateOrganization` with `changes` (`name`, `slug`).
async fn update_organization(
    app: &TestApp,
    actor: &Session,
    organization: &str,
    mut changes: Value,
) -> GqlResponse {
    changes["organizationId"] = json!(organization);
    app.graphql_as(&actor.access_token, UPDATE_ORGANIZATION, changes)
        .await
}

async fn change_role(
    app: &TestApp,
    actor: &Session,
    organization: &str,
    user_id: &str,
    role: &str,
) -> GqlResponse {
    app.graphql_as(
        &actor.access_token,
        UPDATE_MEMBER_ROLE,
        json!({ "organizationId": organization, "userId": user_id, "role": role }),
    )
    .await
}

async fn remove(app: &TestApp, actor: &Session, organization: &str, user_id: &str) -> GqlResponse {
    app.graphql_as(
        &actor.access_token,
        REMOVE_MEMBER,
        json!({ "organizationId": organization, "userId": user_id }),
    )
    .await
}

async fn leave(app: &TestApp, member: &Session, organization: &str) -> GqlResponse {
    app.graphql_as(
        &member.access_token,
        LEAVE_ORGANIZATION,
        json!({ "organizationId": organization }),
    )
    .await
}

async fn transfer(
    app: &TestApp,
    actor: &Session,
    organization: &str,
    user_id: &str,
) -> GqlResponse {
    app.graphql_as(
        &actor.access_token,
        TRANSFER_OWNERSHIP,
        json!({ "organizationId": organization, "userId": user_id }),
    )
    .await
}

// Listing members

#[tokio::test]
async fn members_are_listed_oldest_first_with_their_user_role_and_joining_time() {
    let app = TestApp::spawn().await;
    let (owner_email, owner, organization) = owner_and_organization(&app).await;
    app.clock.advance(Duration::minutes(1));
    let (editor_email, editor) = registered_member(&app, &organization, Role::Editor).await;
    app.clock.advance(Duration::minutes(1));
    let (viewer_email, viewer) = registered_member(&app, &organization, Role::Viewer).await;

    let listed = members(&app, &owner, &organization).await;
    let expected = [
        (&owner, &owner_email, "OWNER"),
        (&editor, &editor_email, "EDITOR"),
        (&viewer, &viewer_email, "VIEWER"),
    ];
    assert_eq!(listed.len(), expected.len(), "{listed:?}");
    for (member, (session, email, role)) in listed.iter().zip(expected) {
        assert_eq!(
            member["user"],
            json!({ "id": session.user_id, "displayName": "Test User", "email": email })
        );
        assert_eq!(member["role"], role);
    }
    let joined: Vec<DateTime<Utc>> = listed.iter().map(|m| time(&m["joinedAt"])).collect();
    assert!(
        joined[1] - joined[0] >= Duration::minutes(1)
            && joined[2] - joined[1] >= Duration::minutes(1),
        "joinedAt is when each joined: {joined:?}"
    );
}

#[tokio::test]
async fn members_come_in_pages_that_follow_the_cursor() {
    let app = TestApp::spawn().await;
    let (_, owner, organization) = owner_and_organization(&app).await;
    let mut joined_in_order = vec![owner.user_id.clone()];
    for _ in 0..4 {
        a_second_passes(&app);
        joined_in_order.push(app.member(&organization, Role::Viewer).await.user_id);
    }

    // Five members in pages of two: three pages.
    let mut paged = Vec::new();
    let mut has_next = Vec::new();
    let mut after = Value::Null;
    for _ in 0..3 {
        let response = app
            .graphql_as(
                &owner.access_token,
                MEMBERS,
                json!({ "id": organization, "first": 2, "after": after }),
            )
            .await;
        let connection = &response.data()["organization"]["members"];
        paged.extend(
            nodes(connection)
                .iter()
                .map(|m| m["user"]["id"].as_str().unwrap().to_owned()),
        );
        has_next.push(connection["pageInfo"]["hasNextPage"].clone());
        after = connection["pageInfo"]["endCursor"].clone();
    }
    assert_eq!(paged, joined_in_order);
    assert_eq!(has_next, [json!(true), json!(true), json!(false)]);
}

#[tokio::test]
async fn a_viewer_lists_the_members_and_an_outsider_gets_not_found() {
    let app = TestApp::spawn().await;
    let (_, owner, organization) = owner_and_organization(&app).await;
    let viewer = app.member(&organization, Role::Viewer).await;
    let outsider = app.user().await;

    let roles: Vec<Value> = members(&app, &viewer, &organization)
        .await
        .iter()
        .map(|m| m["role"].clone())
        .collect();
    assert_eq!(roles, [json!("OWNER"), json!("VIEWER")]);

    let response = app
        .graphql_as(
            &outsider.access_token,
            MEMBERS,
            json!({ "id": organization }),
        )
        .await;
    assert_code(&response, "NOT_FOUND");
    assert_eq!(response.body["data"]["organization"], Value::Null);
    assert!(!response.body.to_string().contains(&owner.user_id));
}

#[tokio::test]
async fn a_user_summary_tells_only_the_id_display_name_and_email() {
    let app = TestApp::spawn().await;
    let response = app
        .graphql(
            "{ __type(name: \"UserSummary\") { fields { name } } }",
            json!({}),
        )
        .await;
    let mut fields: Vec<&str> = response.data()["__type"]["fields"]
        .as_array()
        .expect("UserSummary is an object type")
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    fields.sort_unstable();
    assert_eq!(fields, ["displayName", "email", "id"]);
}

// Changing roles

#[tokio::test]
async fn an_admin_promotes_a_viewer_to_editor() {
    let app = TestApp::spawn().await;
    let (_, owner, organization) = owner_and_organization(&app).await;
    let admin = app.member(&organization, Role::Admin).await;
    let viewer = app.member(&organization, Role::Viewer).await;

    let response = change_role(&app, &admin, &organization, &viewer.user_id, "EDITOR").await;
    assert_eq!(
        response.data()["updateMemberRole"],
        json!({ "user": { "id": viewer.user_id }, "role": "EDITOR" })
    );
    assert_eq!(role_in(&app, &viewer, &organization).await, "EDITOR");
    assert_eq!(role_in(&app, &owner, &organization).await, "OWNER");
}

#[tokio::test]
async fn an_admin_can_neither_make_an_owner_nor_change_one_but_an_owner_can() {
    let app = TestApp::spawn().await;
    let (_, owner, organization) = owner_and_organization(&app).await;
    let admin = app.member(&organization, Role::Admin).await;
    let viewer = app.member(&organization, Role::Viewer).await;

    let making = change_role(&app, &admin, &organization, &viewer.user_id, "OWNER").await;
    assert_code(&making, "FORBIDDEN");
    let changing = change_role(&app, &admin, &organization, &owner.user_id, "ADMIN").await;
    assert_code(&changing, "FORBIDDEN");
    assert_eq!(role_in(&app, &viewer, &organization).await, "VIEWER");
    assert_eq!(role_in(&app, &owner, &organization).await, "OWNER");

    let made = change_role(&app, &owner, &organization, &viewer.user_id, "OWNER").await;
    assert_eq!(made.data()["updateMemberRole"]["role"], "OWNER");
    let changed = change_role(&app, &owner, &organization, &viewer.user_id, "EDITOR").await;
    assert_eq!(changed.data()["updateMemberRole"]["role"], "EDITOR");
}

#[tokio::test]
async fn the_last_owner_cannot_step_down_until_there_is_a_second_owner() {
    let app = TestApp::spawn().await;
    let (_, owner, organization) = owner_and_organization(&app).await;
    let admin = app.member(&organization, Role::Admin).await;

    let alone = change_role(&app, &owner, &organization, &owner.user_id, "ADMIN").await;
    assert_code(&alone, "CONFLICT");
    assert_eq!(role_in(&app, &owner, &organization).await, "OWNER");

    change_role(&app, &owner, &organization, &admin.user_id, "OWNER")
        .await
        .data();
    let stepped_down = change_role(&app, &owner, &organization, &owner.user_id, "ADMIN").await;
    assert_eq!(stepped_down.data()["updateMemberRole"]["role"], "ADMIN");
    assert_eq!(role_in(&app, &owner, &organization).await, "ADMIN");
}

#[tokio::test]
async fn changing_the_role_of_someone_who_is_not_a_member_is_not_found() {
    let app = TestApp::spawn().await;
    let (_, owner, organization) = owner_and_organization(&app).await;
    let stranger = app.user().await;
    let response = change_role(&app, &owner, &organization, &stranger.user_id, "EDITOR").await;
    assert_code(&response, "NOT_FOUND");
}

// Removing and leaving

#[tokio::test]
async fn a_removed_member_gets_not_found_for_the_organization_at_once() {
    let app = TestApp::spawn().await;
    let (_, owner, organization) = owner_and_organization(&app).await;
    let admin = app.member(&organization, Role::Admin).await;
    let editor = app.member(&organization, Role::Editor).await;
    assert_eq!(role_in(&app, &editor, &organization).await, "EDITOR");

    let response = remove(&app, &admin, &organization, &editor.user_id).await;
    assert_eq!(response.data()["removeMember"], true);
    assert_code(
        &read_organization(&app, &editor, &organization).await,
        "NOT_FOUND",
    );
    let left: Vec<Value> = members(&app, &owner, &organization)
        .await
        .iter()
        .map(|m| m["user"]["id"].clone())
        .collect();
    assert_eq!(left, [json!(owner.user_id), json!(admin.user_id)]);
}

#[tokio::test]
async fn an_admin_cannot_remove_an_owner_and_the_last_owner_cannot_remove_themselves() {
    let app = TestApp::spawn().await;
    let (_, owner, organization) = owner_and_organization(&app).await;
    let admin = app.member(&organization, Role::Admin).await;

    assert_code(
        &remove(&app, &admin, &organization, &owner.user_id).await,
        "FORBIDDEN",
    );
    assert_code(
        &remove(&app, &owner, &organization, &owner.user_id).await,
        "CONFLICT",
    );
    assert_eq!(role_in(&app, &owner, &organization).await, "OWNER");
}

#[tokio::test]
async fn a_member_leaves_but_the_last_owner_cannot() {
    let app = TestApp::spawn().await;
    let (_, owner, organization) = owner_and_organization(&app).await;
    let editor = app.member(&organization, Role::Editor).await;

    let response = leave(&app, &editor, &organization).await;
    assert_eq!(response.data()["leaveOrganization"], true);
    assert_code(
        &read_organization(&app, &editor, &organization).await,
        "NOT_FOUND",
    );

    assert_code(&leave(&app, &owner, &organization).await, "CONFLICT");
    assert_eq!(role_in(&app, &owner, &organization).await, "OWNER");
}

// Transferring ownership

#[tokio::test]
async fn transferring_ownership_makes_the_target_owner_and_the_caller_admin() {
    let app = TestApp::spawn().await;
    let (_, owner, organization) = owner_and_organization(&app).await;
    let editor = app.member(&organization, Role::Editor).await;

    let response = transfer(&app, &owner, &organization, &editor.user_id).await;
    assert_eq!(
        response.data()["transferOwnership"],
        json!({ "id": organization, "viewerRole": "ADMIN" })
    );
    assert_eq!(role_in(&app, &editor, &organization).await, "OWNER");
    assert_eq!(role_in(&app, &owner, &organization).await, "ADMIN");
}

#[tokio::test]
async fn only_an_owner_transfers_ownership_and_only_to_another_member() {
    let app = TestApp::spawn().await;
    let (_, owner, organization) = owner_and_organization(&app).await;
    let admin = app.member(&organization, Role::Admin).await;
    let editor = app.member(&organization, Role::Editor).await;
    let stranger = app.user().await;

    assert_code(
        &transfer(&app, &admin, &organization, &editor.user_id).await,
        "FORBIDDEN",
    );
    assert_bad_input(
        &transfer(&app, &owner, &organization, &owner.user_id).await,
        "userId",
    );
    assert_code(
        &transfer(&app, &owner, &organization, &stranger.user_id).await,
        "NOT_FOUND",
    );
    assert_eq!(role_in(&app, &owner, &organization).await, "OWNER");
    assert_eq!(role_in(&app, &editor, &organization).await, "EDITOR");
}

// Renaming and slugs

#[tokio::test]
async fn an_admin_renames_the_organization_and_changes_its_slug() {
    let app = TestApp::spawn().await;
    let (_, owner, organization) = owner_and_organization(&app).await;
    let admin = app.member(&organization, Role::Admin).await;

    let response = update_organization(
        &app,
        &admin,
        &organization,
        json!({ "name": "Acme Labs", "slug": "acme-labs" }),
    )
    .await;
    assert_eq!(
        response.data()["updateOrganization"],
        json!({ "id": organization, "name": "Acme Labs", "slug": "acme-labs", "viewerRole": "ADMIN" })
    );
    let found = by_slug(&app, &owner, "acme-labs").await;
    assert_eq!(
        found.data()["organizationBySlug"]["id"],
        organization.as_str()
    );
    assert_code(&by_slug(&app, &owner, "acme").await, "NOT_FOUND");

    let renamed = update_organization(
        &app,
        &admin,
        &organization,
        json!({ "name": "Acme Research" }),
    )
    .await;
    assert_eq!(
        renamed.data()["updateOrganization"]["slug"],
        "acme-labs",
        "a field left out stays as it was"
    );
}

#[tokio::test]
async fn a_malformed_slug_or_a_blank_name_is_bad_user_input() {
    let app = TestApp::spawn().await;
    let (_, owner, organization) = owner_and_organization(&app).await;
    let too_long = "a".repeat(65);
    for slug in [
        "",
        "Acme",
        "acme--labs",
        "-acme",
        "acme-",
        "acme labs",
        "acmé",
        too_long.as_str(),
    ] {
        let response =
            update_organization(&app, &owner, &organization, json!({ "slug": slug })).await;
        assert_bad_input(&response, "slug");
    }
    let blank = update_organization(&app, &owner, &organization, json!({ "name": "   " })).await;
    assert_bad_input(&blank, "name");

    let unchanged = read_organization(&app, &owner, &organization).await;
    assert_eq!(unchanged.data()["organization"]["slug"], "acme");
    assert_eq!(unchanged.data()["organization"]["name"], "Acme");
}

#[tokio::test]
async fn a_slug_another_organization_uses_is_a_conflict() {
    let app = TestApp::spawn().await;
    let (_, owner, organization) = owner_and_organization(&app).await;
    let someone_else = app.user().await;
    app.organization(&someone_else, "Beta").await;

    let response =
        update_organization(&app, &owner, &organization, json!({ "slug": "beta" })).await;
    assert_code(&response, "CONFLICT");
    assert_eq!(
        read_organization(&app, &owner, &organization).await.data()["organization"]["slug"],
        "acme"
    );
}

#[tokio::test]
async fn an_editor_cannot_update_the_organization() {
    let app = TestApp::spawn().await;
    let (_, owner, organization) = owner_and_organization(&app).await;
    let editor = app.member(&organization, Role::Editor).await;
    let response =
        update_organization(&app, &editor, &organization, json!({ "name": "Mine now" })).await;
    assert_code(&response, "FORBIDDEN");
    assert_eq!(
        read_organization(&app, &owner, &organization).await.data()["organization"]["name"],
        "Acme"
    );
}

#[tokio::test]
async fn organization_by_slug_finds_it_for_members_and_looks_the_same_for_outsiders_and_unknown_slugs()
 {
    let app = TestApp::spawn().await;
    let (_, _owner, organization) = owner_and_organization(&app).await;
    let viewer = app.member(&organization, Role::Viewer).await;
    let outsider = app.user().await;

    let found = by_slug(&app, &viewer, "acme").await;
    assert_eq!(
        found.data()["organizationBySlug"],
        json!({ "id": organization, "name": "Acme", "slug": "acme", "viewerRole": "VIEWER" })
    );

    let foreign = by_slug(&app, &outsider, "acme").await;
    let unknown = by_slug(&app, &outsider, "no-such-organization").await;
    assert_code(&foreign, "NOT_FOUND");
    assert_eq!(foreign.body["data"]["organizationBySlug"], Value::Null);
    assert!(!foreign.body.to_string().contains(&organization));
    // Only the slug asked for differs, and it is not echoed back.
    assert_eq!(foreign.body, unknown.body);
}

// The audit log

#[tokio::test]
async fn the_audit_log_records_each_change_with_its_actor_newest_first() {
    let app = TestApp::spawn().await;
    let (owner_email, owner, organization) = owner_and_organization(&app).await;
    let admin = app.member(&organization, Role::Admin).await;
    let viewer = app.member(&organization, Role::Viewer).await;
    let editor = app.member(&organization, Role::Editor).await;
    let leaver = app.member(&organization, Role::Viewer).await;

    let changes = json!({ "name": "Acme Labs", "slug": "acme-labs" });
    update_organization(&app, &admin, &organization, changes)
        .await
        .data();
    a_second_passes(&app);
    update_organization(
        &app,
        &admin,
        &organization,
        json!({ "name": "Acme Research" }),
    )
    .await
    .data();
    a_second_passes(&app);
    change_role(&app, &admin, &organization, &viewer.user_id, "EDITOR")
        .await
        .data();
    a_second_passes(&app);
    remove(&app, &admin, &organization, &editor.user_id)
        .await
        .data();
    a_second_passes(&app);
    leave(&app, &leaver, &organization).await.data();
    a_second_passes(&app);
    transfer(&app, &owner, &organization, &admin.user_id)
        .await
        .data();

    // The former owner is an ADMIN now, which is enough to read the log.
    let log = audit_log(&app, &owner, &organization).await;
    let entry = |action: &str, actor: &Session, target_type: &str, target_id: &str| json!({ "action": action, "actor": actor.user_id, "targetType": target_type, "targetId": target_id });
    assert_eq!(
        log.iter().map(who_did_what).collect::<Vec<_>>(),
        [
            entry("OWNERSHIP_TRANSFERRED", &owner, "member", &admin.user_id),
            entry("MEMBER_LEFT", &leaver, "member", &leaver.user_id),
            entry("MEMBER_REMOVED", &admin, "member", &editor.user_id),
            entry("MEMBER_ROLE_CHANGED", &admin, "member", &viewer.user_id),
            entry(
                "ORGANIZATION_UPDATED",
                &admin,
                "organization",
                &organization
            ),
            entry(
                "ORGANIZATION_UPDATED",
                &admin,
                "organization",
                &organization
            ),
        ]
    );
    assert_eq!(
        log[0]["actor"],
        json!({ "id": owner.user_id, "displayName": "Test User", "email": owner_email })
    );
    assert_eq!(
        log[3]["details"],
        json!({ "from": "VIEWER", "to": "EDITOR" })
    );
    assert_eq!(
        log[4]["details"],
        json!({ "name": { "from": "Acme Labs", "to": "Acme Research" } }),
        "only what changed"
    );
    assert_eq!(
        log[5]["details"],
        json!({
            "name": { "from": "Acme", "to": "Acme Labs" },
            "slug": { "from": "acme", "to": "acme-labs" }
        })
    );
    let times: Vec<DateTime<Utc>> = log.iter().map(|e| time(&e["createdAt"])).collect();
    assert!(times.windows(2).all(|pair| pair[0] > pair[1]), "{times:?}");
}

#[tokio::test]
async fn an_editor_cannot_read_the_audit_log_but_an_admin_can() {
    let app = TestApp::spawn().await;
    let (_, owner, organization) = owner_and_organization(&app).await;
    let admin = app.member(&organization, Role::Admin).await;
    let editor = app.member(&organization, Role::Editor).await;
    update_organization(&app, &owner, &organization, json!({ "name": "Acme Labs" }))
        .await
        .data();

    let refused = app
        .graphql_as(
            &editor.access_token,
            AUDIT_LOG,
            json!({ "id": organization }),
        )
        .await;
    assert_code(&refused, "FORBIDDEN");
    assert_eq!(refused.body["data"]["organization"], Value::Null);

    let log = audit_log(&app, &admin, &organization).await;
    assert_eq!(log.len(), 1);
    assert_eq!(log[0]["action"], "ORGANIZATION_UPDATED");
}
