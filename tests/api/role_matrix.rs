//! The policy table, checked through the API: for every `Action`, a member
//! holding exactly its minimum role may perform it, one holding the role
//! just below gets FORBIDDEN, and an outsider gets NOT_FOUND. Each attempt
//! has an organization of its own, so no attempt changes what another sees.
//! Adding an action without an operation here does not compile.

use entity::role::Role;
use flowpilot::orgs::policy::{Action, minimum_role};
use serde_json::{Value, json};

use crate::api_keys::CREATE_API_KEY;
use crate::invitations::INVITE;
use crate::members::{
    AUDIT_LOG, MEMBERS, TRANSFER_OWNERSHIP, UPDATE_MEMBER_ROLE, UPDATE_ORGANIZATION,
};
use crate::support::{GqlResponse, Session, TestApp, unique_email};

const ORGANIZATION: &str = "query($id: ID!) { organization(id: $id) { id name viewerRole } }";
const WORKFLOW: &str = "query($id: ID!) { workflow(id: $id) { id name activeVersion { number } } }";
const CREATE_WORKFLOW: &str =
    "mutation($input: CreateWorkflowInput!) { createWorkflow(input: $input) { id } }";
const UPDATE_WORKFLOW: &str =
    "mutation($input: UpdateWorkflowInput!) { updateWorkflow(input: $input) { id name revision } }";
const RUN_WORKFLOW: &str =
    "mutation($input: RunWorkflowInput!) { runWorkflow(input: $input) { id status } }";
const CANCEL_EXECUTION: &str =
    "mutation($input: CancelExecutionInput!) { cancelExecution(input: $input) { id status } }";
const EXECUTION: &str = "query($id: ID!) { execution(id: $id) { id status } }";
const CREATE_SCHEDULE_TRIGGER: &str = "mutation($input: CreateScheduleTriggerInput!) {
  createScheduleTrigger(input: $input) { id kind }
}";
const DELETE_ORGANIZATION: &str = "mutation($input: DeleteOrganizationInput!) { deleteOrganization(input: $input) { organizationId cancelledExecutions } }";

/// A workflow that stays busy for a minute, so its executions can be
/// cancelled.
fn slow_steps() -> Value {
    json!([{ "id": "wait", "kind": "DELAY", "config": { "ms": 60000 } }])
}

/// A slow workflow in `organization`; returns its id.
async fn slow_workflow(app: &TestApp, owner: &Session, organization: &str) -> String {
    app.workflow(owner, organization, slow_steps()).await
}

/// A QUEUED execution of a slow workflow in `organization`; returns its id.
async fn queued_execution(app: &TestApp, owner: &Session, organization: &str) -> String {
    let workflow = slow_workflow(app, owner, organization).await;
    app.run(owner, &workflow, json!({})).await
}

/// The role just below `role`, if there is one.
fn role_below(role: Role) -> Option<Role> {
    match role {
        Role::Owner => Some(Role::Admin),
        Role::Admin => Some(Role::Editor),
        Role::Editor => Some(Role::Viewer),
        Role::Viewer => None,
    }
}

/// An operation that performs one action, in an organization made for it.
struct Case {
    organization: String,
    operation: &'static str,
    variables: Value,
}

impl Case {
    /// Makes an organization owned by `owner`, with whatever `action`
    /// needs in it, and the operation performing `action` there.
    async fn new(app: &TestApp, owner: &Session, action: Action) -> Self {
        let organization = app.organization(owner, "Matrix").await;
        let org = organization.as_str();
        let (operation, variables) = match action {
            Action::ViewOrganization => (ORGANIZATION, json!({ "id": org })),
            Action::ViewWorkflow => (
                WORKFLOW,
                json!({ "id": slow_workflow(app, owner, org).await }),
            ),
            Action::CreateWorkflow => (
                CREATE_WORKFLOW,
                json!({ "input": {
                    "organizationId": org, "name": "New", "definition": { "steps": slow_steps() }
                } }),
            ),
            Action::UpdateWorkflow => (
                UPDATE_WORKFLOW,
                json!({ "input": { "workflowId": slow_workflow(app, owner, org).await, "revision": 1, "name": "Renamed" } }),
            ),
            Action::RunWorkflow => (
                RUN_WORKFLOW,
                json!({ "input": { "workflowId": slow_workflow(app, owner, org).await } }),
            ),
            Action::CancelExecution => (
                CANCEL_EXECUTION,
                json!({ "input": { "executionId": queued_execution(app, owner, org).await } }),
            ),
            Action::ManageTriggers => (
                CREATE_SCHEDULE_TRIGGER,
                json!({ "input": {
                    "workflowId": slow_workflow(app, owner, org).await, "cron": "0 0 * * *"
                } }),
            ),
            Action::ViewExecution => (
                EXECUTION,
                json!({ "id": queued_execution(app, owner, org).await }),
            ),
            Action::ViewMembers => (MEMBERS, json!({ "id": org })),
            Action::UpdateOrganization => (
                UPDATE_ORGANIZATION,
                json!({ "organizationId": org, "name": "Renamed" }),
            ),
            Action::ManageMembers => {
                let viewer = app.member(org, Role::Viewer).await;
                (
                    UPDATE_MEMBER_ROLE,
                    json!({ "organizationId": org, "userId": viewer.user_id, "role": "EDITOR" }),
                )
            }
            Action::ManageInvitations => (
                INVITE,
                json!({ "organizationId": org, "email": unique_email(), "role": "VIEWER" }),
            ),
            Action::ViewAuditLog => (AUDIT_LOG, json!({ "id": org })),
            Action::ManageApiKeys => (
                CREATE_API_KEY,
                json!({ "input": { "organizationId": org, "name": "Matrix key", "role": "VIEWER" } }),
            ),
            Action::DeleteOrganization => (
                DELETE_ORGANIZATION,
                json!({ "input": { "organizationId": org } }),
            ),
            Action::TransferOwnership => {
                let heir = app.member(org, Role::Viewer).await;
                (
                    TRANSFER_OWNERSHIP,
                    json!({ "organizationId": org, "userId": heir.user_id }),
                )
            }
        };
        Self {
            organization,
            operation,
            variables,
        }
    }

    /// Runs the operation as `session`.
    async fn attempt_as(&self, app: &TestApp, session: &Session) -> GqlResponse {
        app.graphql_as(
            &session.access_token,
            self.operation,
            self.variables.clone(),
        )
        .await
    }

    /// Runs the operation as a new member holding exactly `role`.
    async fn attempt_with_role(&self, app: &TestApp, role: Role) -> GqlResponse {
        let member = app.member(&self.organization, role).await;
        self.attempt_as(app, &member).await
    }
}

/// A server whose executions stay QUEUED, so each can still be cancelled.
async fn app_without_workers() -> TestApp {
    TestApp::spawn_with(|settings| settings.workers = 0).await
}

#[tokio::test]
async fn every_action_is_allowed_from_its_minimum_role_and_forbidden_just_below() {
    let app = app_without_workers().await;
    let owner = app.user().await;
    for action in Action::ALL {
        let minimum = minimum_role(action);
        let allowed = Case::new(&app, &owner, action)
            .await
            .attempt_with_role(&app, minimum)
            .await;
        assert!(
            allowed.body.get("errors").is_none(),
            "{action:?} as {minimum:?}: {}",
            allowed.body
        );
        if let Some(below) = role_below(minimum) {
            let refused = Case::new(&app, &owner, action)
                .await
                .attempt_with_role(&app, below)
                .await;
            assert_eq!(
                refused.error_code(),
                "FORBIDDEN",
                "{action:?} as {below:?}: {}",
                refused.body
            );
        }
    }
}

#[tokio::test]
async fn every_action_is_not_found_to_an_outsider() {
    let app = app_without_workers().await;
    let owner = app.user().await;
    let outsider = app.user().await;
    for action in Action::ALL {
        let response = Case::new(&app, &owner, action)
            .await
            .attempt_as(&app, &outsider)
            .await;
        assert_eq!(
            response.error_code(),
            "NOT_FOUND",
            "{action:?}: {}",
            response.body
        );
        assert!(
            !response.body.to_string().contains("Matrix"),
            "{action:?}: {}",
            response.body
        );
    }
}
