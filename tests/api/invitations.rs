//! Invitations: an ADMIN invites an address with a role, the link goes out
//! by mail, and the account with that address accepts it once within 7
//! days; revoking or re-inviting ends a link. Mail is read from the
//! capturing mailer; time moves only through `app.clock`.

use chrono::Duration;
use entity::role::Role;
use serde_json::{Value, json};

use crate::members::{
    LEAVE_ORGANIZATION, a_second_passes, assert_bad_input, assert_code, audit_log, members, nodes,
    owner_and_organization, registered_member, time, who_did_what,
};
use crate::support::{GqlResponse, PASSWORD, Session, TestApp, unique_email};

pub(crate) const INVITE: &str = "mutation($organizationId: ID!, $email: String!, $role: Role!) {
  inviteMember(input: { organizationId: $organizationId, email: $email, role: $role }) {
    id email role createdAt expiresAt revokedAt
  }
}";
const ACCEPT: &str = "mutation($token: String!) {
  acceptInvitation(input: { token: $token }) { id name viewerRole }
}";
const REVOKE: &str = "mutation($invitationId: ID!) {
  revokeInvitation(input: { invitationId: $invitationId }) { id email role revokedAt }
}";
const INVITATIONS: &str = "query($id: ID!) { organization(id: $id) { invitations {
  edges { node { id email role createdAt expiresAt revokedAt } }
} } }";
const ORGANIZATION: &str = "query($id: ID!) { organization(id: $id) { id viewerRole } }";

/// The page an invitation link opens.
const ACCEPT_PATH: &str = "/accept-invitation";

async fn invite(
    app: &TestApp,
    actor: &Session,
    organization: &str,
    email: &str,
    role: &str,
) -> GqlResponse {
    app.graphql_as(
        &actor.access_token,
        INVITE,
        json!({ "organizationId": organization, "email": email, "role": role }),
    )
    .await
}

/// Invites `email` as `role` and returns the invitation's id.
async fn invited(
    app: &TestApp,
    actor: &Session,
    organization: &str,
    email: &str,
    role: &str,
) -> String {
    let response = invite(app, actor, organization, email, role).await;
    response.data()["inviteMember"]["id"]
        .as_str()
        .expect("invitation id")
        .to_owned()
}

async fn accept(app: &TestApp, session: &Session, token: &str) -> GqlResponse {
    app.graphql_as(&session.access_token, ACCEPT, json!({ "token": token }))
        .await
}

async fn revoke(app: &TestApp, actor: &Session, invitation: &str) -> GqlResponse {
    app.graphql_as(
        &actor.access_token,
        REVOKE,
        json!({ "invitationId": invitation }),
    )
    .await
}

/// The pending invitations of `organization`, newest first.
async fn pending(app: &TestApp, admin: &Session, organization: &str) -> Vec<Value> {
    let response = app
        .graphql_as(
            &admin.access_token,
            INVITATIONS,
            json!({ "id": organization }),
        )
        .await;
    nodes(&response.data()["organization"]["invitations"])
}

async fn read_organization(app: &TestApp, session: &Session, organization: &str) -> GqlResponse {
    app.graphql_as(
        &session.access_token,
        ORGANIZATION,
        json!({ "id": organization }),
    )
    .await
}

/// The token of the `nth` (from 1) invitation link mailed to `email`.
async fn mailed_token(app: &TestApp, email: &str, nth: usize) -> String {
    app.mailed_token(email, ACCEPT_PATH, "fpi_", nth).await
}

/// Signs in again: moving the clock by days ends the earlier sessions.
async fn sign_in(app: &TestApp, email: &str) -> Session {
    Session::from_payload(&app.login(email, PASSWORD, &[]).await.data()["login"])
}

// Inviting and accepting

#[tokio::test]
async fn inviting_mails_a_link_and_lists_the_invitation_as_pending() {
    let app = TestApp::spawn().await;
    let (_, owner, organization) = owner_and_organization(&app).await;
    let email = unique_email();

    let response = invite(&app, &owner, &organization, &email, "EDITOR").await;
    let invitation = response.data()["inviteMember"].clone();
    assert_eq!(invitation["email"], email.as_str());
    assert_eq!(invitation["role"], "EDITOR");
    assert_eq!(invitation["revokedAt"], Value::Null);
    assert_eq!(
        time(&invitation["expiresAt"]) - time(&invitation["createdAt"]),
        Duration::days(7)
    );

    let subject = app
        .mails_with_link(&email, ACCEPT_PATH, 1)
        .await
        .remove(0)
        .subject;
    assert!(subject.contains("invited"), "{subject}");
    // Checks that the link opens the app and carries an `fpi_` token.
    mailed_token(&app, &email, 1).await;
    assert_eq!(pending(&app, &owner, &organization).await, [invitation]);
}

#[tokio::test]
async fn the_invited_address_accepts_and_becomes_a_member_with_the_invited_role() {
    let app = TestApp::spawn().await;
    let (_, owner, organization) = owner_and_organization(&app).await;
    let email = unique_email();
    invited(&app, &owner, &organization, &email, "EDITOR").await;
    let token = mailed_token(&app, &email, 1).await;

    // The address had no account yet when it was invited.
    let invitee = app.register(&email).await;
    let response = accept(&app, &invitee, &token).await;
    assert_eq!(
        response.data()["acceptInvitation"],
        json!({ "id": organization, "name": "Acme", "viewerRole": "EDITOR" })
    );
    let read = read_organization(&app, &invitee, &organization).await;
    assert_eq!(read.data()["organization"]["viewerRole"], "EDITOR");
    let listed = members(&app, &owner, &organization).await;
    assert_eq!(listed[1]["user"]["id"], invitee.user_id.as_str());
    assert_eq!(listed[1]["role"], "EDITOR");
    assert_eq!(
        pending(&app, &owner, &organization).await,
        Vec::<Value>::new()
    );
}

#[tokio::test]
async fn an_invitation_link_works_only_once() {
    let app = TestApp::spawn().await;
    let (_, owner, organization) = owner_and_organization(&app).await;
    let email = unique_email();
    let invitee = app.register(&email).await;
    invited(&app, &owner, &organization, &email, "VIEWER").await;
    let token = mailed_token(&app, &email, 1).await;
    accept(&app, &invitee, &token).await.data();

    assert_bad_input(&accept(&app, &invitee, &token).await, "token");
    // Not even once they have left, when only the used link stands in the way.
    let left = app
        .graphql_as(
            &invitee.access_token,
            LEAVE_ORGANIZATION,
            json!({ "organizationId": organization }),
        )
        .await;
    assert_eq!(left.data()["leaveOrganization"], true);
    assert_bad_input(&accept(&app, &invitee, &token).await, "token");
    assert_code(
        &read_organization(&app, &invitee, &organization).await,
        "NOT_FOUND",
    );
}

#[tokio::test]
async fn only_the_invited_address_can_accept() {
    let app = TestApp::spawn().await;
    let (_, owner, organization) = owner_and_organization(&app).await;
    let email = unique_email();
    invited(&app, &owner, &organization, &email, "EDITOR").await;
    let token = mailed_token(&app, &email, 1).await;

    let someone_else = app.user().await;
    assert_bad_input(&accept(&app, &someone_else, &token).await, "token");
    assert_code(
        &read_organization(&app, &someone_else, &organization).await,
        "NOT_FOUND",
    );

    let invitee = app.register(&email).await;
    let response = accept(&app, &invitee, &token).await;
    assert_eq!(
        response.data()["acceptInvitation"]["viewerRole"],
        "EDITOR",
        "the refused attempt did not use the link up"
    );
}

#[tokio::test]
async fn accepting_when_already_a_member_is_a_conflict() {
    let app = TestApp::spawn().await;
    let (_, owner, organization) = owner_and_organization(&app).await;
    let email = unique_email();
    invited(&app, &owner, &organization, &email, "EDITOR").await;
    let token = mailed_token(&app, &email, 1).await;
    // They joined some other way in the meantime.
    let invitee = app.register(&email).await;
    flowpilot::orgs::service::add_member(
        &app.state,
        organization.parse().unwrap(),
        invitee.user_id.parse().unwrap(),
        Role::Viewer,
    )
    .await
    .unwrap();

    assert_code(&accept(&app, &invitee, &token).await, "CONFLICT");
    let read = read_organization(&app, &invitee, &organization).await;
    assert_eq!(read.data()["organization"]["viewerRole"], "VIEWER");
}

#[tokio::test]
async fn an_invitation_link_works_for_seven_days_and_no_longer() {
    let app = TestApp::spawn().await;
    let (owner_email, owner, organization) = owner_and_organization(&app).await;
    let (early, late) = (unique_email(), unique_email());
    invited(&app, &owner, &organization, &early, "VIEWER").await;
    invited(&app, &owner, &organization, &late, "VIEWER").await;
    let early_token = mailed_token(&app, &early, 1).await;
    let late_token = mailed_token(&app, &late, 1).await;

    app.clock.advance(Duration::days(7) - Duration::minutes(1));
    let early_invitee = app.register(&early).await;
    let response = accept(&app, &early_invitee, &early_token).await;
    assert_eq!(response.data()["acceptInvitation"]["viewerRole"], "VIEWER");

    app.clock.advance(Duration::minutes(2));
    let late_invitee = app.register(&late).await;
    assert_bad_input(&accept(&app, &late_invitee, &late_token).await, "token");
    let owner = sign_in(&app, &owner_email).await;
    assert_eq!(
        pending(&app, &owner, &organization).await,
        Vec::<Value>::new(),
        "an expired invitation is no longer pending"
    );
}

// Revoking and replacing

#[tokio::test]
async fn a_revoked_invitation_link_stops_working_and_cannot_be_revoked_again() {
    let app = TestApp::spawn().await;
    let (_, owner, organization) = owner_and_organization(&app).await;
    let admin = app.member(&organization, Role::Admin).await;
    let email = unique_email();
    let id = invited(&app, &owner, &organization, &email, "EDITOR").await;
    let token = mailed_token(&app, &email, 1).await;

    let response = revoke(&app, &admin, &id).await;
    let revoked = &response.data()["revokeInvitation"];
    assert_eq!(revoked["id"], id.as_str());
    assert_eq!(revoked["email"], email.as_str());
    assert!(revoked["revokedAt"].is_string(), "{revoked}");
    assert_eq!(
        pending(&app, &owner, &organization).await,
        Vec::<Value>::new()
    );

    let invitee = app.register(&email).await;
    assert_bad_input(&accept(&app, &invitee, &token).await, "token");
    assert_code(&revoke(&app, &admin, &id).await, "CONFLICT");
}

#[tokio::test]
async fn reinviting_an_address_replaces_the_earlier_link() {
    let app = TestApp::spawn().await;
    let (_, owner, organization) = owner_and_organization(&app).await;
    let email = unique_email();
    invited(&app, &owner, &organization, &email, "VIEWER").await;
    a_second_passes(&app);
    let second = invited(&app, &owner, &organization, &email, "EDITOR").await;
    let first_token = mailed_token(&app, &email, 1).await;
    let second_token = mailed_token(&app, &email, 2).await;
    assert_ne!(first_token, second_token);

    let listed = pending(&app, &owner, &organization).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(
        (&listed[0]["id"], &listed[0]["role"]),
        (&json!(second), &json!("EDITOR"))
    );

    let invitee = app.register(&email).await;
    assert_bad_input(&accept(&app, &invitee, &first_token).await, "token");
    let response = accept(&app, &invitee, &second_token).await;
    assert_eq!(response.data()["acceptInvitation"]["viewerRole"], "EDITOR");
}

#[tokio::test]
async fn an_invitation_needs_a_well_formed_address_that_is_not_yet_a_member() {
    let app = TestApp::spawn().await;
    let (_, owner, organization) = owner_and_organization(&app).await;
    let (member_email, _) = registered_member(&app, &organization, Role::Viewer).await;

    let member = invite(&app, &owner, &organization, &member_email, "EDITOR").await;
    assert_code(&member, "CONFLICT");
    let malformed = invite(&app, &owner, &organization, "not-an-email", "EDITOR").await;
    assert_bad_input(&malformed, "email");
    assert_eq!(
        pending(&app, &owner, &organization).await,
        Vec::<Value>::new()
    );
    assert!(
        app.mailer
            .captured()
            .iter()
            .all(|m| !m.body.contains(ACCEPT_PATH)),
        "no invitation went out"
    );
}

// Who may invite

#[tokio::test]
async fn only_an_owner_invites_an_owner() {
    let app = TestApp::spawn().await;
    let (_, owner, organization) = owner_and_organization(&app).await;
    let admin = app.member(&organization, Role::Admin).await;
    let email = unique_email();

    let refused = invite(&app, &admin, &organization, &email, "OWNER").await;
    assert_code(&refused, "FORBIDDEN");
    let allowed = invite(&app, &admin, &organization, &email, "ADMIN").await;
    assert_eq!(allowed.data()["inviteMember"]["role"], "ADMIN");

    invited(&app, &owner, &organization, &email, "OWNER").await;
    let token = mailed_token(&app, &email, 2).await;
    let invitee = app.register(&email).await;
    let response = accept(&app, &invitee, &token).await;
    assert_eq!(response.data()["acceptInvitation"]["viewerRole"], "OWNER");
}

#[tokio::test]
async fn an_editor_can_neither_invite_nor_list_invitations() {
    let app = TestApp::spawn().await;
    let (_, owner, organization) = owner_and_organization(&app).await;
    let editor = app.member(&organization, Role::Editor).await;
    invited(&app, &owner, &organization, &unique_email(), "VIEWER").await;

    let email = unique_email();
    assert_code(
        &invite(&app, &editor, &organization, &email, "VIEWER").await,
        "FORBIDDEN",
    );
    assert!(app.mailer.captured().iter().all(|m| m.to != email));
    let listing = app
        .graphql_as(
            &editor.access_token,
            INVITATIONS,
            json!({ "id": organization }),
        )
        .await;
    assert_code(&listing, "FORBIDDEN");
    assert_eq!(listing.body["data"]["organization"], Value::Null);
}

#[tokio::test]
async fn an_outsider_revoking_an_invitation_gets_not_found() {
    let app = TestApp::spawn().await;
    let (_, owner, organization) = owner_and_organization(&app).await;
    let id = invited(&app, &owner, &organization, &unique_email(), "VIEWER").await;
    let outsider = app.user().await;

    assert_code(&revoke(&app, &outsider, &id).await, "NOT_FOUND");
    let listed = pending(&app, &owner, &organization).await;
    assert_eq!(listed.len(), 1, "still pending: {listed:?}");
    assert_eq!(listed[0]["revokedAt"], Value::Null);
}

// The audit log

#[tokio::test]
async fn the_audit_log_records_invitations_created_accepted_and_revoked() {
    let app = TestApp::spawn().await;
    let (_, owner, organization) = owner_and_organization(&app).await;
    let admin = app.member(&organization, Role::Admin).await;
    let (joining, withdrawn) = (unique_email(), unique_email());

    let accepted_id = invited(&app, &admin, &organization, &joining, "EDITOR").await;
    a_second_passes(&app);
    let invitee = app.register(&joining).await;
    let token = mailed_token(&app, &joining, 1).await;
    accept(&app, &invitee, &token).await.data();
    a_second_passes(&app);
    let revoked_id = invited(&app, &owner, &organization, &withdrawn, "VIEWER").await;
    a_second_passes(&app);
    revoke(&app, &owner, &revoked_id).await.data();

    let log = audit_log(&app, &admin, &organization).await;
    let entry = |action: &str, actor: &Session, invitation: &str| json!({ "action": action, "actor": actor.user_id, "targetType": "invitation", "targetId": invitation });
    assert_eq!(
        log.iter().map(who_did_what).collect::<Vec<_>>(),
        [
            entry("INVITATION_REVOKED", &owner, &revoked_id),
            entry("INVITATION_CREATED", &owner, &revoked_id),
            entry("INVITATION_ACCEPTED", &invitee, &accepted_id),
            entry("INVITATION_CREATED", &admin, &accepted_id),
        ]
    );
    assert_eq!(
        log[1]["details"],
        json!({ "email": withdrawn, "role": "VIEWER" })
    );
    assert_eq!(
        log[3]["details"],
        json!({ "email": joining, "role": "EDITOR" })
    );
}
