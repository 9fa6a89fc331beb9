//! The per-request set of loaders. Each batches the loads of one pass over
//! the query (see `batch`) into one statement and caches nothing, so a
//! subscription that resolves many events never sees stale rows.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dataloader::Loader;
use sea_orm::DatabaseConnection;
use uuid::Uuid;

use super::batch::{Batcher, Passes};
use crate::clock::Clock;
use crate::error::LoadError;
use crate::executions::loaders::{
    ExecutionLoader, RecentExecutionsLoader, StepRunsByExecutionLoader,
};
use crate::orgs::loaders::{ApiKeyLoader, MembershipsByUserLoader, OrganizationLoader, UserLoader};
use crate::pagination::{List, Page};
use crate::state::AppState;
use crate::workflows::loaders::{
    TriggerLoader, TriggersByWorkflowLoader, WorkflowLoader, WorkflowVersionLoader,
};

/// Every loader a request may use.
pub struct Loaders {
    pub organizations: Batcher<OrganizationLoader>,
    pub memberships_by_user: Batcher<MembershipsByUserLoader>,
    pub users: Batcher<UserLoader>,
    pub api_keys: Batcher<ApiKeyLoader>,
    pub workflows: Batcher<WorkflowLoader>,
    pub workflow_versions: Batcher<WorkflowVersionLoader>,
    pub triggers: Batcher<TriggerLoader>,
    pub triggers_by_workflow: Batcher<TriggersByWorkflowLoader>,
    pub executions: Batcher<ExecutionLoader>,
    pub step_runs: Batcher<StepRunsByExecutionLoader>,
    pub recent_executions: Batcher<RecentExecutionsLoader>,
    /// Pages and counts of every paginated list, by parent.
    pub lists: Batcher<Lists>,
}

impl Loaders {
    /// A fresh set over the state's database, batching by `passes`.
    pub fn new(state: &AppState, passes: &Arc<Passes>) -> Self {
        let db = || state.db.clone();
        Self {
            organizations: Batcher::new(OrganizationLoader(db()), passes.clone()),
            memberships_by_user: Batcher::new(MembershipsByUserLoader(db()), passes.clone()),
            users: Batcher::new(UserLoader(db()), passes.clone()),
            api_keys: Batcher::new(ApiKeyLoader(db()), passes.clone()),
            workflows: Batcher::new(WorkflowLoader(db()), passes.clone()),
            workflow_versions: Batcher::new(WorkflowVersionLoader(db()), passes.clone()),
            triggers: Batcher::new(TriggerLoader(db()), passes.clone()),
            triggers_by_workflow: Batcher::new(TriggersByWorkflowLoader(db()), passes.clone()),
            executions: Batcher::new(ExecutionLoader(db()), passes.clone()),
            step_runs: Batcher::new(StepRunsByExecutionLoader(db()), passes.clone()),
            recent_executions: Batcher::new(RecentExecutionsLoader(db()), passes.clone()),
            lists: Batcher::new(
                Lists {
                    db: db(),
                    clock: state.clock.clone(),
                },
                passes.clone(),
            ),
        }
    }
}

/// One parent's page of `list`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PageOf<L> {
    pub parent: Uuid,
    pub list: L,
}

/// How many items one parent's `list` holds.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CountOf<L> {
    pub parent: Uuid,
    pub list: L,
}

/// Reads the pages (and counts) of lists for many parents: one statement
/// for each distinct list (filters, order and window) in a batch, however
/// many parents ask for it.
pub struct Lists {
    db: DatabaseConnection,
    clock: Clock,
}

/// The parents of each distinct list among `keys`.
fn parents_by_list<L: List>(keys: impl Iterator<Item = (Uuid, L)>) -> HashMap<L, Vec<Uuid>> {
    let mut lists: HashMap<L, Vec<Uuid>> = HashMap::new();
    for (parent, list) in keys {
        lists.entry(list).or_default().push(parent);
    }
    lists
}

impl<L: List> Loader<PageOf<L>> for Lists {
    type Value = Page<L::Item>;
    type Error = LoadError;

    async fn load(
        &self,
        keys: &[PageOf<L>],
    ) -> Result<HashMap<PageOf<L>, Self::Value>, Self::Error> {
        let mut loaded = HashMap::new();
        let lists = parents_by_list(keys.iter().map(|key| (key.parent, key.list.clone())));
        for (list, parents) in lists {
            for (parent, page) in list.pages(&self.db, self.clock.now(), &parents).await? {
                let list = list.clone();
                loaded.insert(PageOf { parent, list }, page);
            }
        }
        Ok(loaded)
    }
}

impl<L: List> Loader<CountOf<L>> for Lists {
    type Value = u64;
    type Error = LoadError;

    async fn load(
        &self,
        keys: &[CountOf<L>],
    ) -> Result<HashMap<CountOf<L>, Self::Value>, Self::Error> {
        let mut loaded = HashMap::new();
        let lists = parents_by_list(keys.iter().map(|key| (key.parent, key.list.clone())));
        for (list, parents) in lists {
            for (parent, count) in list.counts(&self.db, self.clock.now(), &parents).await? {
                let list = list.clone();
                loaded.insert(CountOf { parent, list }, count);
            }
        }
        Ok(loaded)
    }
}
