//! Organizations, memberships and who may see them.

use entity::role::Role;
use serde_json::{Value, json};

use crate::support::{GqlResponse, Session, TestApp};

const CREATE: &str = "mutation($input: CreateOrganizationInput!) {
  createOrganization(input: $input) { id name slug viewerRole createdAt }
}";
const ORGANIZATION: &str = "query($id: ID!) { organization(id: $id) { id name slug viewerRole } }";
const MEMBERSHIPS: &str =
    "{ viewer { memberships { role organization { id name slug viewerRole } } } }";

async fn create(app: &TestApp, owner: &Session, name: &str) -> GqlResponse {
    app.graphql_as(
        &owner.access_token,
        CREATE,
        json!({ "input": { "name": name } }),
    )
    .await
}

fn uuid(id: &str) -> uuid::Uuid {
    id.parse().expect("id is a UUID")
}

#[tokio::test]
async fn creating_an_organization_makes_the_creator_its_owner() {
    let app = TestApp::spawn().await;
    let owner = app.user().await;
    let response = create(&app, &owner, "  Acme, Inc. ").await;
    let organization = &response.data()["createOrganization"];
    assert_eq!(organization["name"], "Acme, Inc.");
    assert_eq!(organization["slug"], "acme-inc");
    assert_eq!(organization["viewerRole"], "OWNER");

    let memberships = app
        .graphql_as(&owner.access_token, MEMBERSHIPS, json!({}))
        .await;
    assert_eq!(
        memberships.data()["viewer"]["memberships"],
        json!([{ "role": "OWNER", "organization": {
            "id": organization["id"], "name": "Acme, Inc.", "slug": "acme-inc", "viewerRole": "OWNER"
        } }])
    );
}

#[tokio::test]
async fn organizations_with_the_same_name_get_distinct_slugs() {
    let app = TestApp::spawn().await;
    let owner = app.user().await;
    let first = create(&app, &owner, "Acme").await;
    let second = create(&app, &owner, "ACME").await;
    let first_slug = first.data()["createOrganization"]["slug"]
        .as_str()
        .unwrap()
        .to_owned();
    let second_slug = second.data()["createOrganization"]["slug"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(first_slug, "acme");
    assert!(
        second_slug.starts_with("acme-") && second_slug.len() == "acme-".len() + 6,
        "{second_slug}"
    );
}

#[tokio::test]
async fn a_chosen_slug_is_kept_and_one_already_taken_is_a_conflict() {
    let app = TestApp::spawn().await;
    let owner = app.user().await;
    let with_slug = |name: &str, slug: &str| json!({ "input": { "name": name, "slug": slug } });
    let chosen = app
        .graphql_as(
            &owner.access_token,
            CREATE,
            with_slug("Acme, Inc.", "acme-hq"),
        )
        .await;
    assert_eq!(chosen.data()["createOrganization"]["slug"], "acme-hq");

    let taken = app
        .graphql_as(&owner.access_token, CREATE, with_slug("Other", "acme-hq"))
        .await;
    assert_eq!(taken.error_code(), "CONFLICT");
    let malformed = app
        .graphql_as(&owner.access_token, CREATE, with_slug("Other", "Acme HQ"))
        .await;
    assert_eq!(malformed.error_code(), "BAD_USER_INPUT");
    assert_eq!(malformed.error_field(), "slug");
    let memberships = app
        .graphql_as(&owner.access_token, MEMBERSHIPS, json!({}))
        .await;
    assert_eq!(
        memberships.data()["viewer"]["memberships"]
            .as_array()
            .map(Vec::len),
        Some(1),
        "neither refused request made an organization"
    );
}

#[tokio::test]
async fn a_blank_organization_name_is_bad_user_input() {
    let app = TestApp::spawn().await;
    let owner = app.user().await;
    let response = create(&app, &owner, "   ").await;
    assert_eq!(response.error_code(), "BAD_USER_INPUT");
    assert_eq!(response.error_field(), "name");
}

#[tokio::test]
async fn creating_an_organization_requires_signing_in() {
    let app = TestApp::spawn().await;
    let response = app
        .graphql(CREATE, json!({ "input": { "name": "Acme" } }))
        .await;
    assert_eq!(response.error_code(), "UNAUTHENTICATED");
}

#[tokio::test]
async fn a_member_reads_their_organization() {
    let app = TestApp::spawn().await;
    let owner = app.user().await;
    let id = app.organization(&owner, "Acme").await;
    let response = app
        .graphql_as(&owner.access_token, ORGANIZATION, json!({ "id": id }))
        .await;
    assert_eq!(response.data()["organization"]["name"], "Acme");
    assert_eq!(response.data()["organization"]["viewerRole"], "OWNER");
}

#[tokio::test]
async fn a_non_member_gets_not_found_and_no_data() {
    let app = TestApp::spawn().await;
    let owner = app.user().await;
    let outsider = app.user().await;
    let id = app.organization(&owner, "Acme").await;
    let response = app
        .graphql_as(&outsider.access_token, ORGANIZATION, json!({ "id": id }))
        .await;
    assert_eq!(response.error_code(), "NOT_FOUND");
    assert_eq!(response.body["data"]["organization"], Value::Null);
    assert!(!response.body.to_string().contains("Acme"));
}

#[tokio::test]
async fn an_unknown_organization_looks_the_same_as_a_foreign_one() {
    let app = TestApp::spawn().await;
    let owner = app.user().await;
    let outsider = app.user().await;
    let foreign = app.organization(&owner, "Acme").await;
    let unknown = uuid::Uuid::now_v7().to_string();
    let foreign_response = app
        .graphql_as(
            &outsider.access_token,
            ORGANIZATION,
            json!({ "id": foreign }),
        )
        .await;
    let unknown_response = app
        .graphql_as(
            &outsider.access_token,
            ORGANIZATION,
            json!({ "id": unknown }),
        )
        .await;
    assert_eq!(foreign_response.body, unknown_response.body);
}

#[tokio::test]
async fn a_malformed_organization_id_is_bad_user_input() {
    let app = TestApp::spawn().await;
    let owner = app.user().await;
    let response = app
        .graphql_as(
            &owner.access_token,
            ORGANIZATION,
            json!({ "id": "not-a-uuid" }),
        )
        .await;
    assert_eq!(response.error_code(), "BAD_USER_INPUT");
    assert_eq!(response.error_field(), "id");
}

#[tokio::test]
async fn reading_an_organization_requires_signing_in() {
    let app = TestApp::spawn().await;
    let owner = app.user().await;
    let id = app.organization(&owner, "Acme").await;
    let response = app.graphql(ORGANIZATION, json!({ "id": id })).await;
    assert_eq!(response.error_code(), "UNAUTHENTICATED");
}

#[tokio::test]
async fn a_member_sees_the_role_they_were_given() {
    let app = TestApp::spawn().await;
    let owner = app.user().await;
    let member = app.user().await;
    let id = app.organization(&owner, "Acme").await;
    flowpilot::orgs::service::add_member(
        &app.state,
        uuid(&id),
        uuid(&member.user_id),
        Role::Viewer,
    )
    .await
    .unwrap();
    let response = app
        .graphql_as(&member.access_token, ORGANIZATION, json!({ "id": id }))
        .await;
    assert_eq!(response.data()["organization"]["viewerRole"], "VIEWER");
    let memberships = app
        .graphql_as(&member.access_token, MEMBERSHIPS, json!({}))
        .await;
    assert_eq!(
        memberships.data()["viewer"]["memberships"][0]["role"],
        "VIEWER"
    );
}

#[tokio::test]
async fn adding_an_existing_member_again_is_a_conflict() {
    let app = TestApp::spawn().await;
    let owner = app.user().await;
    let id = app.organization(&owner, "Acme").await;
    let again = flowpilot::orgs::service::add_member(
        &app.state,
        uuid(&id),
        uuid(&owner.user_id),
        Role::Viewer,
    )
    .await;
    assert_eq!(again.unwrap_err().code(), "CONFLICT");
}

#[tokio::test]
async fn memberships_load_with_the_same_number_of_statements_however_many_there_are() {
    // Nothing in the background may touch the database while counting.
    let app = TestApp::spawn_with(|settings| {
        settings.workers = 0;
        settings.reaper_interval_ms = 3_600_000;
    })
    .await;
    let one = app.user().await;
    app.organization(&one, "Solo").await;
    let many = app.user().await;
    for n in 0..6 {
        app.organization(&many, &format!("Org {n}")).await;
    }

    let statements_for = |session: Session| {
        let app = &app;
        async move {
            let before = app.state.sql_statements.get();
            let response = app
                .graphql_as(&session.access_token, MEMBERSHIPS, json!({}))
                .await;
            let count = response.data()["viewer"]["memberships"]
                .as_array()
                .unwrap()
                .len();
            (count, app.state.sql_statements.get() - before)
        }
    };
    let (one_count, one_statements) = statements_for(one).await;
    let (many_count, many_statements) = statements_for(many).await;
    assert_eq!((one_count, many_count), (1, 6));
    assert_eq!(
        one_statements, many_statements,
        "statements grew with the number of memberships"
    );
    // The session with its user, the memberships, their organizations.
    assert_eq!(many_statements, 3);
}
