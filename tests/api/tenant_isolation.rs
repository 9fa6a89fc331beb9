//! Tenant isolation, field by field: every root field of the schema (found
//! by introspection over HTTP, so a new field cannot slip past) has an
//! entry in one table, [`CASES`], that says whether it reaches
//! organization-scoped data. For each field that does, two intruders try it
//! on organization A's objects: (1) a signed-in user who is OWNER of another
//! organization B and (2) an ADMIN API key of organization B. They must get
//! the refusal the table names (NOT_FOUND for A's organization, workflows,
//! workflow versions, triggers, executions, members, invitations and API
//! keys; FORBIDDEN where only a user may call the field at all), no data,
//! nothing that names A, and no way in afterwards, and A's owner must then
//! read A exactly as before.
//! `executionEvents` is tried over the WebSocket: a `next` carrying
//! NOT_FOUND, then `complete`. Fields that reach no organization are listed
//! with a one-line reason; the user-only ones among them are checked to
//! answer FORBIDDEN to a key. The table fails the coverage test when the
//! schema has a root field it does not name, or names one the schema lost.

use std::fmt;

use entity::role::Role;
use entity::{trigger, workflow};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::{Value, json};

use crate::invitations::INVITE;
use crate::members::{
    LEAVE_ORGANIZATION, REMOVE_MEMBER, TRANSFER_OWNERSHIP, UPDATE_MEMBER_ROLE, UPDATE_ORGANIZATION,
};
use crate::support::ws::WsClient;
use crate::support::{PASSWORD, Session, TestApp, unique_email};

// The table

/// The root type a field hangs off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Root {
    Query,
    Mutation,
    Subscription,
}

/// The error an intruder must get: `extensions.code` and, for bad input,
/// `extensions.field`.
#[derive(Clone, Copy, Debug)]
struct Refusal {
    code: &'static str,
    field: Option<&'static str>,
}

const NOT_FOUND: Refusal = Refusal {
    code: "NOT_FOUND",
    field: None,
};
const FORBIDDEN: Refusal = Refusal {
    code: "FORBIDDEN",
    field: None,
};
/// An invitation token presented by someone it was not sent to.
const NOT_YOUR_TOKEN: Refusal = Refusal {
    code: "BAD_USER_INPUT",
    field: Some("token"),
};

/// What a root field can reach, and so what is checked.
#[derive(Clone, Copy, Debug)]
enum Reach {
    /// Names one of organization A's objects. B's owner gets `user`, B's
    /// ADMIN key gets `key`; neither gets data or a way in, and A's owner
    /// reads A unchanged afterwards. An arm of [`World::attempt`] tries it.
    Organization { user: Refusal, key: Refusal },
    /// Reaches no organization, and only a user may call it: an API key
    /// gets FORBIDDEN (an arm of [`World::attempt_user_only`] checks it).
    UserOnly(&'static str),
    /// Reaches no organization: nothing of A to try. The string says why.
    Unscoped(&'static str),
}

/// One root field and what it reaches.
#[derive(Clone, Copy, Debug)]
struct Case {
    root: Root,
    field: &'static str,
    reach: Reach,
}

/// NOT_FOUND to both intruders.
const fn scoped(root: Root, field: &'static str) -> Case {
    Case {
        root,
        field,
        reach: Reach::Organization {
            user: NOT_FOUND,
            key: NOT_FOUND,
        },
    }
}

/// NOT_FOUND to B's owner; FORBIDDEN to B's key, which may not call the
/// field for any organization (so the answer tells nothing about A).
const fn scoped_user_only(root: Root, field: &'static str) -> Case {
    Case {
        root,
        field,
        reach: Reach::Organization {
            user: NOT_FOUND,
            key: FORBIDDEN,
        },
    }
}

const fn user_only(root: Root, field: &'static str, why: &'static str) -> Case {
    Case {
        root,
        field,
        reach: Reach::UserOnly(why),
    }
}

const fn unscoped(root: Root, field: &'static str, why: &'static str) -> Case {
    Case {
        root,
        field,
        reach: Reach::Unscoped(why),
    }
}

/// Every root field of the schema, and what it reaches.
const CASES: &[Case] = &[
    // Query
    unscoped(
        Root::Query,
        "viewer",
        "the caller's own account and memberships (null for an API key)",
    ),
    scoped(Root::Query, "organization"),
    scoped(Root::Query, "organizationBySlug"),
    scoped(Root::Query, "workflow"),
    scoped(Root::Query, "workflowVersion"),
    scoped(Root::Query, "execution"),
    scoped(Root::Query, "node"),
    scoped(Root::Query, "nodes"),
    unscoped(
        Root::Query,
        "stepKinds",
        "describes the step kinds the server knows; the same for everyone",
    ),
    unscoped(
        Root::Query,
        "validateWorkflowDefinition",
        "checks a definition given in the request; reads and saves nothing",
    ),
    // Mutation: accounts, sessions, second factors
    unscoped(
        Root::Mutation,
        "register",
        "creates a new account; no organization involved",
    ),
    unscoped(
        Root::Mutation,
        "login",
        "trades credentials for the account's own tokens",
    ),
    user_only(Root::Mutation, "logout", "ends the caller's own session"),
    unscoped(
        Root::Mutation,
        "logoutAll",
        "ends the caller's own sessions",
    ),
    unscoped(
        Root::Mutation,
        "revokeSession",
        "ends one of the caller's own sessions (NOT_FOUND for anyone else's)",
    ),
    unscoped(
        Root::Mutation,
        "revokeOtherSessions",
        "ends the caller's own other sessions",
    ),
    unscoped(
        Root::Mutation,
        "refreshSession",
        "exchanges the caller's own refresh token",
    ),
    unscoped(
        Root::Mutation,
        "verifyEmail",
        "a token mailed to the account's own address",
    ),
    unscoped(
        Root::Mutation,
        "resendVerificationEmail",
        "mails the caller's own address",
    ),
    user_only(
        Root::Mutation,
        "changePassword",
        "the caller's own password",
    ),
    unscoped(
        Root::Mutation,
        "requestPasswordReset",
        "mails an address a link; answers true whoever asks",
    ),
    unscoped(
        Root::Mutation,
        "resetPassword",
        "a token mailed to the account's own address",
    ),
    user_only(Root::Mutation, "setupMfa", "the caller's own second factor"),
    unscoped(
        Root::Mutation,
        "enableMfa",
        "the caller's own second factor",
    ),
    unscoped(
        Root::Mutation,
        "regenerateBackupCodes",
        "the caller's own backup codes",
    ),
    unscoped(
        Root::Mutation,
        "disableMfa",
        "the caller's own second factor",
    ),
    unscoped(
        Root::Mutation,
        "completeMfaLogin",
        "finishes the caller's own sign-in with its challenge token",
    ),
    // Mutation: organizations and their members
    user_only(
        Root::Mutation,
        "createOrganization",
        "makes a new organization owned by the caller; reaches no existing one",
    ),
    scoped(Root::Mutation, "updateOrganization"),
    scoped(Root::Mutation, "updateMemberRole"),
    scoped(Root::Mutation, "removeMember"),
    scoped_user_only(Root::Mutation, "leaveOrganization"),
    scoped(Root::Mutation, "transferOwnership"),
    scoped(Root::Mutation, "inviteMember"),
    // Reaches A through the token of an invitation addressed to someone else.
    Case {
        root: Root::Mutation,
        field: "acceptInvitation",
        reach: Reach::Organization {
            user: NOT_YOUR_TOKEN,
            key: FORBIDDEN,
        },
    },
    scoped(Root::Mutation, "revokeInvitation"),
    scoped(Root::Mutation, "createApiKey"),
    scoped(Root::Mutation, "revokeApiKey"),
    scoped(Root::Mutation, "deleteOrganization"),
    // Mutation: workflows and executions
    scoped(Root::Mutation, "createWorkflow"),
    scoped(Root::Mutation, "updateWorkflow"),
    scoped(Root::Mutation, "createWorkflowVersion"),
    scoped(Root::Mutation, "publishWorkflowVersion"),
    scoped(Root::Mutation, "archiveWorkflow"),
    scoped(Root::Mutation, "unarchiveWorkflow"),
    scoped(Root::Mutation, "duplicateWorkflow"),
    scoped(Root::Mutation, "runWorkflow"),
    scoped(Root::Mutation, "cancelExecution"),
    scoped(Root::Mutation, "retryExecution"),
    // Mutation: triggers
    scoped(Root::Mutation, "createScheduleTrigger"),
    scoped(Root::Mutation, "createWebhookTrigger"),
    scoped(Root::Mutation, "setTriggerEnabled"),
    scoped(Root::Mutation, "deleteTrigger"),
    // Subscription
    scoped(Root::Subscription, "executionEvents"),
    scoped(Root::Subscription, "organizationExecutionEvents"),
    scoped(Root::Subscription, "executionUpdated"),
];

/// The table's entry for `field` of `root`.
fn case_for(root: Root, field: &str) -> Option<&'static Case> {
    CASES
        .iter()
        .find(|case| case.root == root && case.field == field)
}

const ROOT_FIELDS: &str = "{ __schema {
  queryType { fields { name } }
  mutationType { fields { name } }
  subscriptionType { fields { name } }
} }";

/// Every root field the running server's schema has, by introspection.
async fn root_fields(app: &TestApp) -> Vec<(Root, String)> {
    let response = app.graphql(ROOT_FIELDS, json!({})).await;
    let schema = &response.data()["__schema"];
    let mut fields = Vec::new();
    for (root, key) in [
        (Root::Query, "queryType"),
        (Root::Mutation, "mutationType"),
        (Root::Subscription, "subscriptionType"),
    ] {
        // A schema without mutations or subscriptions answers null there.
        for field in schema[key]["fields"].as_array().into_iter().flatten() {
            let name = field["name"].as_str().expect("a field name");
            fields.push((root, name.to_owned()));
        }
    }
    assert!(!fields.is_empty(), "introspection found no root fields");
    fields
}

// The operations

/// Organization A's name; no refusal may contain it.
const ORGANIZATION_A_NAME: &str = "Acme";
/// The slug derived from it.
const ORGANIZATION_A_SLUG: &str = "acme";
/// The page an invitation link opens.
const ACCEPT_PATH: &str = "/accept-invitation";

const ORGANIZATION: &str = "query($id: ID!) { organization(id: $id) { id name slug viewerRole } }";
const BY_SLUG: &str = "query($slug: String!) { organizationBySlug(slug: $slug) { id name slug } }";
const WORKFLOW: &str = "query($id: ID!) { workflow(id: $id) { id name organization { id } } }";
const EXECUTION: &str = "query($id: ID!) { execution(id: $id) { id status input } }";
const NODE: &str = "query($id: ID!) { node(id: $id) { id ... on Workflow { name } } }";
const NODES: &str = "query($ids: [ID!]!) {
  nodes(ids: $ids) { id ... on Organization { name } ... on Execution { input } }
}";
const WORKFLOW_VERSION: &str = "query($id: ID!) {
  workflowVersion(id: $id) { id number message definition { steps { id } } workflow { id name } }
}";
const ACCEPT_INVITATION: &str = "mutation($token: String!) {
  acceptInvitation(input: { token: $token }) { id name viewerRole }
}";
const REVOKE_INVITATION: &str = "mutation($invitationId: ID!) {
  revokeInvitation(input: { invitationId: $invitationId }) { id revokedAt }
}";
const CREATE_API_KEY: &str = "mutation($organizationId: ID!, $name: String!, $role: Role!) {
  createApiKey(input: { organizationId: $organizationId, name: $name, role: $role }) {
    apiKey { id prefix role } key
  }
}";
const REVOKE_API_KEY: &str = "mutation($apiKeyId: ID!) {
  revokeApiKey(input: { apiKeyId: $apiKeyId }) { id revokedAt }
}";
const DELETE_ORGANIZATION: &str = "mutation($organizationId: ID!) {
  deleteOrganization(input: { organizationId: $organizationId }) { organizationId cancelledExecutions }
}";
const CREATE_WORKFLOW: &str =
    "mutation($input: CreateWorkflowInput!) { createWorkflow(input: $input) { id } }";
const UPDATE_WORKFLOW: &str =
    "mutation($input: UpdateWorkflowInput!) { updateWorkflow(input: $input) { id name revision } }";
const RUN_WORKFLOW: &str =
    "mutation($input: RunWorkflowInput!) { runWorkflow(input: $input) { id status } }";
const CREATE_WORKFLOW_VERSION: &str = "mutation($input: CreateWorkflowVersionInput!) {
  createWorkflowVersion(input: $input) { id number workflow { id name } }
}";
const PUBLISH_WORKFLOW_VERSION: &str = "mutation($input: PublishWorkflowVersionInput!) {
  publishWorkflowVersion(input: $input) { id name activeVersion { number } }
}";
const ARCHIVE_WORKFLOW: &str =
    "mutation($input: WorkflowInput!) { archiveWorkflow(input: $input) { id name archivedAt } }";
const UNARCHIVE_WORKFLOW: &str =
    "mutation($input: WorkflowInput!) { unarchiveWorkflow(input: $input) { id name archivedAt } }";
const DUPLICATE_WORKFLOW: &str = "mutation($input: DuplicateWorkflowInput!) {
  duplicateWorkflow(input: $input) { id name organization { id name } }
}";
const CANCEL_EXECUTION: &str =
    "mutation($input: CancelExecutionInput!) { cancelExecution(input: $input) { id status } }";
const RETRY_EXECUTION: &str =
    "mutation($input: RetryExecutionInput!) { retryExecution(input: $input) { id status } }";
const CREATE_SCHEDULE_TRIGGER: &str = "mutation($input: CreateScheduleTriggerInput!) {
  createScheduleTrigger(input: $input) { id kind enabled workflow { id name } }
}";
const CREATE_WEBHOOK_TRIGGER: &str = "mutation($input: CreateWebhookTriggerInput!) {
  createWebhookTrigger(input: $input) { trigger { id kind workflow { id name } } url path }
}";
const SET_TRIGGER_ENABLED: &str = "mutation($input: SetTriggerEnabledInput!) {
  setTriggerEnabled(input: $input) { id enabled schedule { nextRunAt } workflow { id name } }
}";
const DELETE_TRIGGER: &str = "mutation($input: DeleteTriggerInput!) {
  deleteTrigger(input: $input) { triggerId workflow { id name } }
}";
const CREATE_ORGANIZATION: &str =
    "mutation($input: CreateOrganizationInput!) { createOrganization(input: $input) { id } }";
const CHANGE_PASSWORD: &str =
    "mutation($input: ChangePasswordInput!) { changePassword(input: $input) { revokedSessions } }";

/// Everything of organization A its owner can read, in one request: what
/// any change by an intruder would show up in.
const EXECUTION_EVENTS: &str = "subscription($id: ID!) {
  executionEvents(executionId: $id) { seq kind executionStatus execution { id status } }
}";
const ORGANIZATION_EXECUTION_EVENTS: &str = "subscription($organization: ID!) {
  organizationExecutionEvents(organizationId: $organization) {
    __typename
    ... on ExecutionEvent { seq executionId kind }
    ... on StreamResync { reason }
  }
}";
const EXECUTION_UPDATED: &str = "subscription($id: ID!) {
  executionUpdated(executionId: $id) { id status lastEventSeq }
}";
const SNAPSHOT: &str = "query($organization: ID!, $slow: ID!, $fast: ID!, $draft: ID!) {
  organization(id: $organization) {
    id name slug
    members(first: 100) { nodes { user { id } role joinedAt } }
    invitations(first: 100) { nodes { id email role expiresAt revokedAt } }
    apiKeys(first: 100, includeRevoked: true) { nodes { id name prefix role expiresAt revokedAt } }
    executions(first: 100) { nodes { id status lastEventSeq triggerKind trigger { id } } }
    auditLog(first: 100) { nodes { id action targetType targetId } }
    workflows(first: 100) { nodes { id name tags archivedAt revision updatedAt } }
    archivedWorkflows: workflows(first: 100, filter: { archived: true }) {
      nodes { id name tags archivedAt revision updatedAt }
    }
  }
  slow: workflow(id: $slow) {
    id name description maxConcurrency revision tags archivedAt activeVersion { number }
    versions(first: 100) { nodes { id number message isActive definition { steps { id } } } }
    triggers {
      id kind enabled lastFiredAt createdAt
      schedule { cron timeZone input nextRunAt } webhook { tokenPrefix }
    }
  }
  fast: workflow(id: $fast) {
    id name description maxConcurrency revision tags archivedAt activeVersion { number }
    versions(first: 100) { nodes { id number message isActive definition { steps { id } } } }
    triggers {
      id kind enabled lastFiredAt createdAt
      schedule { cron timeZone input nextRunAt } webhook { tokenPrefix }
    }
  }
  draft: workflowVersion(id: $draft) { id number message isActive createdAt author { id } }
}";

/// One step that waits a minute: its execution stays RUNNING throughout.
fn slow_steps() -> Value {
    json!([{ "id": "wait", "kind": "DELAY", "config": { "ms": 60000 } }])
}

/// One step that finishes at once.
fn fast_steps() -> Value {
    json!([{ "id": "a", "kind": "TRANSFORM", "config": { "output": "{{ input }}" } }])
}

// The world the intruders try

/// Organization A and what is in it.
struct OrganizationA {
    owner: Session,
    id: String,
    /// Its executions run a minute; `running_execution` is one of them.
    slow_workflow: String,
    fast_workflow: String,
    running_execution: String,
    /// A SUCCEEDED execution of `fast_workflow`, which could be retried.
    finished_execution: String,
    /// An EDITOR besides the owner.
    member: Session,
    /// A pending invitation, to an address with no account, and its token.
    invitation: String,
    invitation_token: String,
    /// The id of an EDITOR API key.
    api_key: String,
    /// Version 2 of `fast_workflow`, made and not published.
    draft_version: String,
    /// An archived workflow, for `unarchiveWorkflow` to try.
    archived_workflow: String,
    /// A schedule of `slow_workflow`, made disabled so that it never fires
    /// while the test runs, for `setTriggerEnabled` to try to switch on.
    schedule_trigger: String,
    /// An enabled webhook of `fast_workflow`, for `deleteTrigger` to try.
    webhook_trigger: String,
}

/// Organizations A and B on one server, and B's two intruders.
struct World {
    app: TestApp,
    a: OrganizationA,
    owner_b: Session,
    organization_b: String,
    /// An ADMIN API key of organization B.
    key_b: String,
}

/// Who tries to reach organization A.
#[derive(Clone, Copy)]
enum Intruder<'w> {
    /// The signed-in OWNER of organization B.
    Owner(&'w Session),
    /// An ADMIN API key of organization B.
    Key(&'w str),
}

impl<'w> Intruder<'w> {
    /// The bearer token it sends.
    fn token(self) -> &'w str {
        match self {
            Self::Owner(session) => &session.access_token,
            Self::Key(key) => key,
        }
    }

    /// The refusal the table expects for it.
    fn expects(self, user: Refusal, key: Refusal) -> Refusal {
        match self {
            Self::Owner(_) => user,
            Self::Key(_) => key,
        }
    }
}

impl fmt::Display for Intruder<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Owner(_) => "organization B's owner",
            Self::Key(_) => "organization B's ADMIN key",
        })
    }
}

impl World {
    /// Organization A with two workflows (one with an unpublished second
    /// version, each with a trigger), an archived workflow, a running and a
    /// finished execution, an EDITOR member, a pending invitation and an
    /// API key; organization B with its owner and an ADMIN key.
    async fn set_up() -> Self {
        let app = TestApp::spawn().await;

        let owner = app.user().await;
        let id = app.organization(&owner, ORGANIZATION_A_NAME).await;
        let slow_workflow = app.workflow(&owner, &id, slow_steps()).await;
        let fast_workflow = app.workflow(&owner, &id, fast_steps()).await;
        let finished_execution = app.run(&owner, &fast_workflow, json!({ "n": 1 })).await;
        let finished = app.finished_execution(&owner, &finished_execution).await;
        assert_eq!(finished["status"], "SUCCEEDED", "{finished}");
        let running_execution = app.run(&owner, &slow_workflow, json!({})).await;
        wait_until_step_started(&app, &owner, &running_execution).await;
        let member = app.member(&id, Role::Editor).await;

        let invitee = unique_email();
        let invited = app
            .graphql_as(
                &owner.access_token,
                INVITE,
                json!({ "organizationId": id, "email": invitee, "role": "VIEWER" }),
            )
            .await;
        let invitation = invited.data()["inviteMember"]["id"]
            .as_str()
            .expect("invitation id")
            .to_owned();
        let invitation_token = app.mailed_token(&invitee, ACCEPT_PATH, "fpi_", 1).await;

        let created = app
            .graphql_as(
                &owner.access_token,
                CREATE_API_KEY,
                json!({ "organizationId": id, "name": "Acme CI", "role": "EDITOR" }),
            )
            .await;
        let api_key = created.data()["createApiKey"]["apiKey"]["id"]
            .as_str()
            .expect("API key id")
            .to_owned();

        let drafted = app
            .graphql_as(
                &owner.access_token,
                CREATE_WORKFLOW_VERSION,
                json!({ "input": {
                    "workflowId": fast_workflow,
                    "definition": { "steps": fast_steps() },
                    "message": "Draft",
                } }),
            )
            .await;
        let draft_version = drafted.data()["createWorkflowVersion"]["id"]
            .as_str()
            .expect("version id")
            .to_owned();
        let archived_workflow = app.workflow(&owner, &id, fast_steps()).await;
        let archived = app
            .graphql_as(
                &owner.access_token,
                ARCHIVE_WORKFLOW,
                json!({ "input": { "workflowId": archived_workflow } }),
            )
            .await;
        assert!(
            !archived.data()["archiveWorkflow"]["archivedAt"].is_null(),
            "{}",
            archived.body
        );

        let scheduled = app
            .graphql_as(
                &owner.access_token,
                CREATE_SCHEDULE_TRIGGER,
                json!({ "input": {
                    "workflowId": slow_workflow, "cron": "0 0 * * *", "enabled": false
                } }),
            )
            .await;
        let schedule_trigger = scheduled.data()["createScheduleTrigger"]["id"]
            .as_str()
            .expect("trigger id")
            .to_owned();
        let hooked = app
            .graphql_as(
                &owner.access_token,
                CREATE_WEBHOOK_TRIGGER,
                json!({ "input": { "workflowId": fast_workflow } }),
            )
            .await;
        let webhook_trigger = hooked.data()["createWebhookTrigger"]["trigger"]["id"]
            .as_str()
            .expect("trigger id")
            .to_owned();

        let owner_b = app.user().await;
        let organization_b = app.organization(&owner_b, "Beta").await;
        let key_b = crate::api_keys::api_key(&app, &owner_b, &organization_b, "ADMIN").await;

        Self {
            app,
            a: OrganizationA {
                owner,
                id,
                slow_workflow,
                fast_workflow,
                running_execution,
                finished_execution,
                member,
                invitation,
                invitation_token,
                api_key,
                draft_version,
                archived_workflow,
                schedule_trigger,
                webhook_trigger,
            },
            owner_b,
            organization_b,
            key_b,
        }
    }

    /// Runs `query` with the intruder's token; answers the response body.
    async fn send(&self, intruder: Intruder<'_>, query: &str, variables: Value) -> Value {
        self.app
            .graphql_as(intruder.token(), query, variables)
            .await
            .body
    }

    /// Tries organization-scoped root `field` on A's objects as `intruder`;
    /// answers the response body (or, for a subscription, the `next`
    /// payload). One arm per [`Reach::Organization`] entry of the table.
    async fn attempt(&self, field: &str, intruder: Intruder<'_>) -> Value {
        let a = &self.a;
        let org = a.id.as_str();
        match field {
            // Query
            "organization" => {
                self.send(intruder, ORGANIZATION, json!({ "id": org }))
                    .await
            }
            "organizationBySlug" => {
                self.send(intruder, BY_SLUG, json!({ "slug": ORGANIZATION_A_SLUG }))
                    .await
            }
            "workflow" => {
                self.send(intruder, WORKFLOW, json!({ "id": a.slow_workflow }))
                    .await
            }
            "execution" => {
                self.send(intruder, EXECUTION, json!({ "id": a.running_execution }))
                    .await
            }
            "workflowVersion" => {
                self.send(intruder, WORKFLOW_VERSION, json!({ "id": a.draft_version }))
                    .await
            }
            "node" => {
                self.send(intruder, NODE, json!({ "id": a.slow_workflow }))
                    .await
            }
            "nodes" => {
                let ids = json!([org, a.slow_workflow, a.draft_version, a.running_execution]);
                self.send(intruder, NODES, json!({ "ids": ids })).await
            }
            // Organizations and members
            "updateOrganization" => {
                let variables =
                    json!({ "organizationId": org, "name": "Taken over", "slug": "taken-over" });
                self.send(intruder, UPDATE_ORGANIZATION, variables).await
            }
            "updateMemberRole" => {
                let variables =
                    json!({ "organizationId": org, "userId": a.member.user_id, "role": "ADMIN" });
                self.send(intruder, UPDATE_MEMBER_ROLE, variables).await
            }
            "removeMember" => {
                let variables = json!({ "organizationId": org, "userId": a.member.user_id });
                self.send(intruder, REMOVE_MEMBER, variables).await
            }
            "leaveOrganization" => {
                let variables = json!({ "organizationId": org });
                self.send(intruder, LEAVE_ORGANIZATION, variables).await
            }
            "transferOwnership" => {
                let variables = json!({ "organizationId": org, "userId": a.member.user_id });
                self.send(intruder, TRANSFER_OWNERSHIP, variables).await
            }
            "inviteMember" => {
                let variables =
                    json!({ "organizationId": org, "email": unique_email(), "role": "ADMIN" });
                self.send(intruder, INVITE, variables).await
            }
            "acceptInvitation" => {
                let variables = json!({ "token": a.invitation_token });
                self.send(intruder, ACCEPT_INVITATION, variables).await
            }
            "revokeInvitation" => {
                let variables = json!({ "invitationId": a.invitation });
                self.send(intruder, REVOKE_INVITATION, variables).await
            }
            "createApiKey" => {
                let variables =
                    json!({ "organizationId": org, "name": "Planted", "role": "ADMIN" });
                self.send(intruder, CREATE_API_KEY, variables).await
            }
            "revokeApiKey" => {
                let variables = json!({ "apiKeyId": a.api_key });
                self.send(intruder, REVOKE_API_KEY, variables).await
            }
            "deleteOrganization" => {
                let variables = json!({ "organizationId": org });
                self.send(intruder, DELETE_ORGANIZATION, variables).await
            }
            // Workflows and executions
            "createWorkflow" => {
                let input = json!({
                    "organizationId": org, "name": "Planted", "definition": { "steps": fast_steps() }
                });
                self.send(intruder, CREATE_WORKFLOW, json!({ "input": input }))
                    .await
            }
            "updateWorkflow" => {
                let input =
                    json!({ "workflowId": a.slow_workflow, "revision": 1, "name": "Taken over" });
                self.send(intruder, UPDATE_WORKFLOW, json!({ "input": input }))
                    .await
            }
            "createWorkflowVersion" => {
                let input = json!({
                    "workflowId": a.slow_workflow,
                    "definition": { "steps": fast_steps() },
                    "message": "Planted",
                });
                self.send(intruder, CREATE_WORKFLOW_VERSION, json!({ "input": input }))
                    .await
            }
            "publishWorkflowVersion" => {
                let input = json!({ "workflowId": a.fast_workflow, "versionId": a.draft_version });
                self.send(
                    intruder,
                    PUBLISH_WORKFLOW_VERSION,
                    json!({ "input": input }),
                )
                .await
            }
            "archiveWorkflow" => {
                let input = json!({ "workflowId": a.fast_workflow });
                self.send(intruder, ARCHIVE_WORKFLOW, json!({ "input": input }))
                    .await
            }
            "unarchiveWorkflow" => {
                let input = json!({ "workflowId": a.archived_workflow });
                self.send(intruder, UNARCHIVE_WORKFLOW, json!({ "input": input }))
                    .await
            }
            "duplicateWorkflow" => {
                let input = json!({ "workflowId": a.slow_workflow, "name": "Planted" });
                self.send(intruder, DUPLICATE_WORKFLOW, json!({ "input": input }))
                    .await
            }
            "runWorkflow" => {
                let input = json!({ "workflowId": a.fast_workflow, "input": { "n": 2 } });
                self.send(intruder, RUN_WORKFLOW, json!({ "input": input }))
                    .await
            }
            "cancelExecution" => {
                let input = json!({ "executionId": a.running_execution });
                self.send(intruder, CANCEL_EXECUTION, json!({ "input": input }))
                    .await
            }
            "retryExecution" => {
                let input = json!({ "executionId": a.finished_execution });
                self.send(intruder, RETRY_EXECUTION, json!({ "input": input }))
                    .await
            }
            // Triggers
            "createScheduleTrigger" => {
                let input = json!({
                    "workflowId": a.slow_workflow,
                    "cron": "*/5 * * * *",
                    "input": { "planted": true },
                });
                self.send(intruder, CREATE_SCHEDULE_TRIGGER, json!({ "input": input }))
                    .await
            }
            "createWebhookTrigger" => {
                let input = json!({ "workflowId": a.fast_workflow });
                self.send(intruder, CREATE_WEBHOOK_TRIGGER, json!({ "input": input }))
                    .await
            }
            "setTriggerEnabled" => {
                let input = json!({ "triggerId": a.schedule_trigger, "enabled": true });
                self.send(intruder, SET_TRIGGER_ENABLED, json!({ "input": input }))
                    .await
            }
            "deleteTrigger" => {
                let input = json!({ "triggerId": a.webhook_trigger });
                self.send(intruder, DELETE_TRIGGER, json!({ "input": input }))
                    .await
            }
            // Subscription
            "executionEvents" => {
                let variables = json!({ "id": a.running_execution });
                self.subscribe_as(intruder, EXECUTION_EVENTS, variables)
                    .await
            }
            "organizationExecutionEvents" => {
                let variables = json!({ "organization": a.id });
                self.subscribe_as(intruder, ORGANIZATION_EXECUTION_EVENTS, variables)
                    .await
            }
            "executionUpdated" => {
                let variables = json!({ "id": a.running_execution });
                self.subscribe_as(intruder, EXECUTION_UPDATED, variables)
                    .await
            }
            other => panic!(
                "the table says root field {other} reaches organization A, but `attempt` has no arm for it"
            ),
        }
    }

    /// Calls user-only root `field` with an API key; answers the body.
    async fn attempt_user_only(&self, field: &str, key: &str) -> Value {
        let (query, variables) = match field {
            "createOrganization" => (
                CREATE_ORGANIZATION,
                json!({ "input": { "name": "Made with a key" } }),
            ),
            "logout" => ("mutation { logout }", json!({})),
            "setupMfa" => ("mutation { setupMfa { secret otpauthUri } }", json!({})),
            "changePassword" => (
                CHANGE_PASSWORD,
                json!({ "input": {
                    "currentPassword": PASSWORD, "newPassword": "an entirely different passphrase"
                } }),
            ),
            other => panic!(
                "the table says root field {other} is user-only, but `attempt_user_only` has no arm for it"
            ),
        };
        self.app.graphql_as(key, query, variables).await.body
    }

    /// A subscription to something of A over the WebSocket, signed in as
    /// `intruder`: the operation must answer one `next`, then `complete`;
    /// answers that `next`'s payload.
    async fn subscribe_as(&self, intruder: Intruder<'_>, query: &str, variables: Value) -> Value {
        let mut client = WsClient::connect_as(&self.app, Some(intruder.token())).await;
        client.subscribe("intruder", query, variables).await;
        let message = client.next_json().await;
        assert_eq!(
            (message["type"].as_str(), message["id"].as_str()),
            (Some("next"), Some("intruder")),
            "{query} as {intruder}: {message}"
        );
        assert_eq!(
            client.next_json().await,
            json!({ "type": "complete", "id": "intruder" }),
            "{query} as {intruder}: the refused operation completes"
        );
        client.close().await;
        message["payload"].clone()
    }

    /// Organization A as its owner reads it, and how many workflows and
    /// triggers it has in the database (so a workflow or trigger planted
    /// anywhere shows, listed or not).
    async fn snapshot(&self) -> Value {
        let a = &self.a;
        let response = self
            .app
            .graphql_as(
                &a.owner.access_token,
                SNAPSHOT,
                json!({
                    "organization": a.id,
                    "slow": a.slow_workflow,
                    "fast": a.fast_workflow,
                    "draft": a.draft_version,
                }),
            )
            .await;
        let mut snapshot = response.data().clone();
        let organization: uuid::Uuid = a.id.parse().expect("organization id");
        let workflows = workflow::Entity::find()
            .filter(workflow::Column::OrganizationId.eq(organization))
            .count(&self.app.state.db)
            .await
            .expect("count the workflows");
        snapshot["workflowsInDatabase"] = json!(workflows);
        let triggers = trigger::Entity::find()
            .filter(trigger::Column::OrganizationId.eq(organization))
            .count(&self.app.state.db)
            .await
            .expect("count the triggers");
        snapshot["triggersInDatabase"] = json!(triggers);
        snapshot
    }

    /// `snapshot` shows A's two triggers as made: the disabled schedule on
    /// the slow workflow and the enabled webhook on the fast one.
    #[track_caller]
    fn assert_triggers_as_made(&self, snapshot: &Value) {
        let ids_and_flags = |workflow: &str| -> Vec<Value> {
            snapshot[workflow]["triggers"]
                .as_array()
                .unwrap_or_else(|| panic!("{workflow} has no triggers: {snapshot}"))
                .iter()
                .map(|t| json!({ "id": t["id"], "kind": t["kind"], "enabled": t["enabled"] }))
                .collect()
        };
        let schedule =
            json!({ "id": self.a.schedule_trigger, "kind": "SCHEDULE", "enabled": false });
        let webhook = json!({ "id": self.a.webhook_trigger, "kind": "WEBHOOK", "enabled": true });
        assert_eq!(ids_and_flags("slow"), [schedule], "{snapshot}");
        assert_eq!(ids_and_flags("fast"), [webhook], "{snapshot}");
        assert_eq!(snapshot["triggersInDatabase"], 2, "{snapshot}");
    }

    /// The intruder works in its own organization with `role`: its
    /// refusals come from A being another organization, not from a broken
    /// credential.
    async fn assert_at_home(&self, intruder: Intruder<'_>, role: &str) {
        let body = self
            .send(intruder, ORGANIZATION, json!({ "id": self.organization_b }))
            .await;
        assert!(body.get("errors").is_none(), "{intruder} at home: {body}");
        assert_eq!(
            body["data"]["organization"]["viewerRole"], role,
            "{intruder} at home: {body}"
        );
    }

    /// The intruder still cannot read organization A.
    async fn assert_still_outside(&self, intruder: Intruder<'_>, after: &str) {
        let body = self
            .send(intruder, ORGANIZATION, json!({ "id": self.a.id }))
            .await;
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "NOT_FOUND",
            "after {after}, {intruder} reads organization A: {body}"
        );
    }

    /// Tries every root field the schema has as `intruder`, whose own role
    /// in organization B is `role_in_b`.
    async fn check_every_root_field(&self, intruder: Intruder<'_>, role_in_b: &str) {
        self.assert_at_home(intruder, role_in_b).await;
        let before = self.snapshot().await;
        self.assert_triggers_as_made(&before);
        let mut tried = Vec::new();
        for (root, field) in root_fields(&self.app).await {
            let case = case_for(root, &field)
                .unwrap_or_else(|| panic!("root field {field} has no tenant-isolation case"));
            match case.reach {
                Reach::Unscoped(_) => continue,
                Reach::UserOnly(_) => {
                    let Intruder::Key(key) = intruder else {
                        continue;
                    };
                    let body = self.attempt_user_only(&field, key).await;
                    assert_refused(&field, intruder, &body, FORBIDDEN);
                }
                Reach::Organization { user, key } => {
                    let body = self.attempt(&field, intruder).await;
                    assert_refused(&field, intruder, &body, intruder.expects(user, key));
                    self.assert_still_outside(intruder, &field).await;
                }
            }
            assert_eq!(
                self.snapshot().await,
                before,
                "{field} as {intruder} changed what A's owner reads of organization A"
            );
            tried.push(field);
        }
        assert!(
            tried.iter().any(|field| field == "organization"),
            "{intruder} tried {tried:?}"
        );
        self.assert_at_home(intruder, role_in_b).await;
    }
}

/// Waits (through the event stream) until the execution's step has
/// started, after which nothing about it changes for a minute.
async fn wait_until_step_started(app: &TestApp, owner: &Session, execution: &str) {
    let mut client = WsClient::connect_as(app, Some(&owner.access_token)).await;
    client.subscribe_events("started", execution, 0).await;
    loop {
        let message = client.next_json().await;
        assert_eq!(message["type"], "next", "{message}");
        let event = &message["payload"]["data"]["executionEvents"];
        if event["kind"] == "STEP_STARTED" {
            assert_eq!(event["executionStatus"], "RUNNING", "{event}");
            break;
        }
    }
    client.close().await;
}

/// `body` is a refusal of `field` with `expected`, with no data and no
/// trace of organization A.
#[track_caller]
fn assert_refused(field: &str, intruder: Intruder<'_>, body: &Value, expected: Refusal) {
    let error = &body["errors"][0];
    assert_eq!(
        error["extensions"]["code"], expected.code,
        "{field} as {intruder}: {body}"
    );
    if let Some(name) = expected.field {
        assert_eq!(
            error["extensions"]["field"], name,
            "{field} as {intruder}: {body}"
        );
    }
    let data = &body["data"];
    // A list field answers each item it may not give as null.
    let nothing = data.is_null()
        || data[field].is_null()
        || data[field]
            .as_array()
            .is_some_and(|items| items.iter().all(Value::is_null));
    assert!(nothing, "{field} as {intruder} answered data: {body}");
    assert!(
        !body.to_string().contains(ORGANIZATION_A_NAME),
        "{field} as {intruder} names organization A: {body}"
    );
}

// The tests

#[tokio::test]
async fn every_root_field_has_an_isolation_case() {
    let app = TestApp::spawn().await;
    let fields = root_fields(&app).await;
    let mut problems = Vec::new();
    for (root, field) in &fields {
        if case_for(*root, field).is_none() {
            problems.push(format!(
                "root field {field} has no tenant-isolation case ({root:?})"
            ));
        }
    }
    for (index, case) in CASES.iter().enumerate() {
        let reason = match case.reach {
            Reach::UserOnly(why) | Reach::Unscoped(why) => Some(why),
            Reach::Organization { .. } => None,
        };
        if reason.is_some_and(|why| why.trim().is_empty() || why.contains('\n')) {
            problems.push(format!(
                "{} is listed as reaching no organization without a one-line reason",
                case.field
            ));
        }
        if !fields
            .iter()
            .any(|(root, field)| *root == case.root && field == case.field)
        {
            problems.push(format!(
                "the tenant-isolation table names {:?} field {}, which the schema no longer has",
                case.root, case.field
            ));
        }
        if CASES[..index]
            .iter()
            .any(|earlier| earlier.root == case.root && earlier.field == case.field)
        {
            problems.push(format!(
                "the tenant-isolation table names {:?} field {} twice",
                case.root, case.field
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[tokio::test]
async fn another_organizations_user_cannot_reach_organization_a() {
    let world = World::set_up().await;
    world
        .check_every_root_field(Intruder::Owner(&world.owner_b), "OWNER")
        .await;
}

#[tokio::test]
async fn another_organizations_api_key_cannot_reach_organization_a() {
    let world = World::set_up().await;
    world
        .check_every_root_field(Intruder::Key(&world.key_b), "ADMIN")
        .await;
}

#[tokio::test]
async fn a_version_of_organization_a_cannot_be_published_or_run_through_organization_bs_workflow() {
    let app = TestApp::spawn_with(|settings| settings.workers = 0).await;
    let owner_a = app.user().await;
    let organization_a = app.organization(&owner_a, ORGANIZATION_A_NAME).await;
    let workflow_a = app.workflow(&owner_a, &organization_a, fast_steps()).await;
    let drafted = app
        .graphql_as(
            &owner_a.access_token,
            CREATE_WORKFLOW_VERSION,
            json!({ "input": { "workflowId": workflow_a, "definition": { "steps": slow_steps() } } }),
        )
        .await;
    let version_a = drafted.data()["createWorkflowVersion"]["id"]
        .as_str()
        .expect("version id")
        .to_owned();

    let owner_b = app.user().await;
    let organization_b = app.organization(&owner_b, "Beta").await;
    let workflow_b = app.workflow(&owner_b, &organization_b, fast_steps()).await;
    let key_b = crate::api_keys::api_key(&app, &owner_b, &organization_b, "ADMIN").await;
    let workflow_state = "query($id: ID!) { workflow(id: $id) {
      activeVersion { number definition { steps { id } } }
      executions { nodes { id } }
    } }";
    let read = |token: &str, id: &str| {
        let app = &app;
        let (token, id) = (token.to_owned(), id.to_owned());
        async move {
            app.graphql_as(&token, workflow_state, json!({ "id": id }))
                .await
                .data()["workflow"]
                .clone()
        }
    };
    let a_before = read(owner_a.access_token.as_str(), workflow_a.as_str()).await;
    let b_before = read(owner_b.access_token.as_str(), workflow_b.as_str()).await;

    for (who, token) in [
        ("B's owner", owner_b.access_token.as_str()),
        ("B's key", key_b.as_str()),
    ] {
        let published = app
            .graphql_as(
                token,
                PUBLISH_WORKFLOW_VERSION,
                json!({ "input": { "workflowId": workflow_b, "versionId": version_a } }),
            )
            .await;
        assert_eq!(
            published.error_code(),
            "NOT_FOUND",
            "{who}: {}",
            published.body
        );
        assert!(
            !published.body.to_string().contains(ORGANIZATION_A_NAME),
            "{who}: {}",
            published.body
        );
        let ran = app
            .graphql_as(
                token,
                RUN_WORKFLOW,
                json!({ "input": { "workflowId": workflow_b, "versionId": version_a } }),
            )
            .await;
        assert_eq!(ran.error_code(), "NOT_FOUND", "{who}: {}", ran.body);
        let read_version = app
            .graphql_as(token, WORKFLOW_VERSION, json!({ "id": version_a }))
            .await;
        assert_eq!(
            read_version.error_code(),
            "NOT_FOUND",
            "{who}: {}",
            read_version.body
        );
    }

    assert_eq!(
        read(owner_a.access_token.as_str(), workflow_a.as_str()).await,
        a_before
    );
    assert_eq!(
        read(owner_b.access_token.as_str(), workflow_b.as_str()).await,
        b_before
    );
    assert_eq!(b_before["executions"]["nodes"], json!([]));
    assert_eq!(
        b_before["activeVersion"]["definition"]["steps"],
        json!([{ "id": "a" }])
    );
}
