//! The per-request set of DataLoaders. They batch the loads of one
//! execution step of a query into one statement and cache nothing, so a
//! subscription that resolves many events never sees stale rows.

use async_graphql::dataloader::DataLoader;

use crate::executions::loaders::{
    ExecutionLoader, RecentExecutionsLoader, StepRunsByExecutionLoader,
};
use crate::orgs::loaders::{ApiKeyLoader, MembershipsByUserLoader, OrganizationLoader, UserLoader};
use crate::state::AppState;
use crate::workflows::loaders::{
    TriggerLoader, TriggersByWorkflowLoader, WorkflowLoader, WorkflowVersionLoader,
};

/// Every DataLoader a request may use.
pub struct Loaders {
    pub organizations: DataLoader<OrganizationLoader>,
    pub memberships_by_user: DataLoader<MembershipsByUserLoader>,
    pub users: DataLoader<UserLoader>,
    pub api_keys: DataLoader<ApiKeyLoader>,
    pub workflows: DataLoader<WorkflowLoader>,
    pub workflow_versions: DataLoader<WorkflowVersionLoader>,
    pub triggers: DataLoader<TriggerLoader>,
    pub triggers_by_workflow: DataLoader<TriggersByWorkflowLoader>,
    pub executions: DataLoader<ExecutionLoader>,
    pub step_runs: DataLoader<StepRunsByExecutionLoader>,
    pub recent_executions: DataLoader<RecentExecutionsLoader>,
}

impl Loaders {
    /// A fresh set over the state's database.
    pub fn new(state: &AppState) -> Self {
        let db = || state.db.clone();
        Self {
            organizations: DataLoader::new(OrganizationLoader(db()), tokio::spawn),
            memberships_by_user: DataLoader::new(MembershipsByUserLoader(db()), tokio::spawn),
            users: DataLoader::new(UserLoader(db()), tokio::spawn),
            api_keys: DataLoader::new(ApiKeyLoader(db()), tokio::spawn),
            workflows: DataLoader::new(WorkflowLoader(db()), tokio::spawn),
            workflow_versions: DataLoader::new(WorkflowVersionLoader(db()), tokio::spawn),
            triggers: DataLoader::new(TriggerLoader(db()), tokio::spawn),
            triggers_by_workflow: DataLoader::new(TriggersByWorkflowLoader(db()), tokio::spawn),
            executions: DataLoader::new(ExecutionLoader(db()), tokio::spawn),
            step_runs: DataLoader::new(StepRunsByExecutionLoader(db()), tokio::spawn),
            recent_executions: DataLoader::new(RecentExecutionsLoader(db()), tokio::spawn),
        }
    }
}
