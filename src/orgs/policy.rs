//! Role-based access control: one table of (action, minimum role).
//!
//! Every organization-scoped field and mutation asks [`authorize`] with the
//! viewer's role. A viewer with no role in the organization never reaches
//! this point: the service answers NOT_FOUND before, so non-members learn
//! nothing about the organization.

use entity::role::Role;

use super::principal::Principal;
use crate::error::{AppError, AppResult};

/// Why a role was refused.
const ROLE_FORBIDS: &str = "your role does not allow this action";

/// Something a member may do inside an organization.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Read the organization's own fields (name, slug, the viewer's role).
    ViewOrganization,
    /// Read workflows, their versions and definitions.
    ViewWorkflow,
    /// Create workflows.
    CreateWorkflow,
    /// Change a workflow's name, description and limits.
    UpdateWorkflow,
    /// Start executions of a workflow.
    RunWorkflow,
    /// Cancel an execution.
    CancelExecution,
    /// Create, switch on and off, and delete a workflow's schedules and
    /// webhooks.
    ManageTriggers,
    /// Read executions, their steps and events.
    ViewExecution,
    /// List the organization's members.
    ViewMembers,
    /// Rename the organization or change its slug.
    UpdateOrganization,
    /// Change members' roles and remove members (OWNERs only by OWNERs).
    ManageMembers,
    /// Invite people, list and revoke invitations.
    ManageInvitations,
    /// Read the audit log.
    ViewAuditLog,
    /// Create, list and revoke API keys (keys never create keys).
    ManageApiKeys,
    /// Make another member an OWNER in the caller's place.
    TransferOwnership,
    /// Delete the organization and everything it owns.
    DeleteOrganization,
}

impl Action {
    /// Every action, for tests that must cover each one.
    pub const ALL: [Self; 16] = [
        Self::ViewOrganization,
        Self::ViewWorkflow,
        Self::CreateWorkflow,
        Self::UpdateWorkflow,
        Self::RunWorkflow,
        Self::CancelExecution,
        Self::ManageTriggers,
        Self::ViewExecution,
        Self::ViewMembers,
        Self::UpdateOrganization,
        Self::ManageMembers,
        Self::ManageInvitations,
        Self::ViewAuditLog,
        Self::ManageApiKeys,
        Self::TransferOwnership,
        Self::DeleteOrganization,
    ];
}

/// The least privileged role allowed to perform `action`.
pub const fn minimum_role(action: Action) -> Role {
    match action {
        Action::ViewOrganization
        | Action::ViewWorkflow
        | Action::ViewExecution
        | Action::ViewMembers => Role::Viewer,
        Action::CreateWorkflow
        | Action::UpdateWorkflow
        | Action::RunWorkflow
        | Action::CancelExecution
        | Action::ManageTriggers => Role::Editor,
        Action::UpdateOrganization
        | Action::ManageMembers
        | Action::ManageInvitations
        | Action::ViewAuditLog
        | Action::ManageApiKeys => Role::Admin,
        Action::TransferOwnership | Action::DeleteOrganization => Role::Owner,
    }
}

/// Rank of a role: higher may do everything lower may.
pub const fn rank(role: Role) -> u8 {
    match role {
        Role::Owner => 4,
        Role::Admin => 3,
        Role::Editor => 2,
        Role::Viewer => 1,
    }
}

/// Whether `role` may perform `action`.
pub const fn allows(role: Role, action: Action) -> bool {
    rank(role) >= rank(minimum_role(action))
}

/// FORBIDDEN unless `role` may perform `action`.
pub fn authorize(role: Role, action: Action) -> AppResult<()> {
    if allows(role, action) {
        Ok(())
    } else {
        Err(AppError::Forbidden(ROLE_FORBIDS))
    }
}

/// FORBIDDEN unless `actor` may move a member from `current` to `new` (None:
/// not a member): it takes ManageMembers, and only an OWNER may make an
/// OWNER or change one.
pub fn authorize_role_change(
    actor: Role,
    current: Option<Role>,
    new: Option<Role>,
) -> AppResult<()> {
    authorize(actor, Action::ManageMembers)?;
    let touches_owner = current == Some(Role::Owner) || new == Some(Role::Owner);
    if touches_owner && actor != Role::Owner {
        return Err(AppError::Forbidden(
            "only an OWNER may make an OWNER or change one",
        ));
    }
    Ok(())
}

/// FORBIDDEN unless `creator`, holding `role`, may make an API key: it
/// takes ManageApiKeys, and a key never makes keys, so that a leaked key
/// cannot mint successors that outlive its revocation.
pub fn authorize_key_creation(creator: Principal, role: Role) -> AppResult<()> {
    if let Principal::ApiKey(_) = creator {
        return Err(AppError::Forbidden("an API key cannot create API keys"));
    }
    authorize(role, Action::ManageApiKeys)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL_ROLES: [Role; 4] = [Role::Owner, Role::Admin, Role::Editor, Role::Viewer];

    #[test]
    fn roles_rank_owner_over_admin_over_editor_over_viewer() {
        let ranks: Vec<u8> = ALL_ROLES.iter().map(|r| rank(*r)).collect();
        assert!(ranks.windows(2).all(|pair| pair[0] > pair[1]));
    }

    #[test]
    fn only_owners_make_or_change_owners() {
        let (owner, admin, editor) = (Role::Owner, Role::Admin, Role::Editor);
        assert!(authorize_role_change(admin, Some(Role::Viewer), Some(Role::Admin)).is_ok());
        assert!(authorize_role_change(admin, Some(Role::Viewer), Some(owner)).is_err());
        assert!(authorize_role_change(admin, Some(owner), Some(Role::Admin)).is_err());
        assert!(authorize_role_change(admin, Some(owner), None).is_err());
        assert!(authorize_role_change(owner, Some(owner), Some(Role::Admin)).is_ok());
        assert!(authorize_role_change(owner, None, Some(owner)).is_ok());
        assert!(authorize_role_change(editor, Some(Role::Viewer), None).is_err());
    }

    #[test]
    fn admins_make_keys_and_keys_never_do() {
        let key = Principal::ApiKey(super::super::principal::KeyGrant {
            key_id: uuid::Uuid::now_v7(),
            organization_id: uuid::Uuid::now_v7(),
            role: Role::Admin,
        });
        let user = Principal::User(uuid::Uuid::now_v7());
        assert!(authorize_key_creation(user, Role::Admin).is_ok());
        assert!(authorize_key_creation(user, Role::Editor).is_err());
        assert!(authorize_key_creation(key, Role::Admin).is_err());
    }

    #[test]
    fn every_role_may_view_its_organization() {
        for role in ALL_ROLES {
            assert!(
                authorize(role, Action::ViewOrganization).is_ok(),
                "{role:?}"
            );
        }
    }

    #[test]
    fn the_policy_table_grants_what_the_design_says() {
        let expected = [
            (Action::ViewOrganization, Role::Viewer),
            (Action::ViewWorkflow, Role::Viewer),
            (Action::ViewExecution, Role::Viewer),
            (Action::CreateWorkflow, Role::Editor),
            (Action::UpdateWorkflow, Role::Editor),
            (Action::RunWorkflow, Role::Editor),
            (Action::CancelExecution, Role::Editor),
            (Action::ManageTriggers, Role::Editor),
            (Action::ViewMembers, Role::Viewer),
            (Action::UpdateOrganization, Role::Admin),
            (Action::ManageMembers, Role::Admin),
            (Action::ManageInvitations, Role::Admin),
            (Action::ViewAuditLog, Role::Admin),
            (Action::ManageApiKeys, Role::Admin),
            (Action::TransferOwnership, Role::Owner),
            (Action::DeleteOrganization, Role::Owner),
        ];
        assert_eq!(expected.len(), Action::ALL.len(), "every action has a row");
        for (action, minimum) in expected {
            assert_eq!(minimum_role(action), minimum, "{action:?}");
            let minimum_position = ALL_ROLES.iter().position(|r| *r == minimum);
            for role in ALL_ROLES {
                let allowed = ALL_ROLES.iter().position(|r| *r == role) <= minimum_position;
                assert_eq!(
                    authorize(role, action).is_ok(),
                    allowed,
                    "{role:?} {action:?}"
                );
            }
        }
    }
}
