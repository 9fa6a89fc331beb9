//! Role-based access control: one table of (action, minimum role).
//!
//! Every organization-scoped field and mutation asks [`authorize`] with the
//! viewer's role. A viewer with no role in the organization never reaches
//! this point: the service answers NOT_FOUND before, so non-members learn
//! nothing about the organization.

use entity::role::Role;

use crate::error::{AppError, AppResult};

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
    /// Read executions, their steps and events.
    ViewExecution,
}

/// The least privileged role allowed to perform `action`.
pub const fn minimum_role(action: Action) -> Role {
    match action {
        Action::ViewOrganization | Action::ViewWorkflow | Action::ViewExecution => Role::Viewer,
        Action::CreateWorkflow
        | Action::UpdateWorkflow
        | Action::RunWorkflow
        | Action::CancelExecution => Role::Editor,
    }
}

/// Rank of a role: higher may do everything lower may.
const fn rank(role: Role) -> u8 {
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
        Err(AppError::Forbidden)
    }
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
        ];
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
