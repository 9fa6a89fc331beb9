//! DataLoaders for execution data outside an event's snapshot.

use std::collections::HashMap;

use async_graphql::dataloader::Loader;
use entity::{execution, step_run};
use sea_orm::DatabaseConnection;
use uuid::Uuid;

use super::service;
use crate::error::LoadError;

/// Executions by id (for `input`, which events do not carry).
pub struct ExecutionLoader(pub DatabaseConnection);

impl Loader<Uuid> for ExecutionLoader {
    type Value = execution::Model;
    type Error = LoadError;

    async fn load(&self, ids: &[Uuid]) -> Result<HashMap<Uuid, Self::Value>, Self::Error> {
        Ok(service::executions_by_id(&self.0, ids).await?)
    }
}

/// Each execution's step runs.
pub struct StepRunsByExecutionLoader(pub DatabaseConnection);

impl Loader<Uuid> for StepRunsByExecutionLoader {
    type Value = Vec<step_run::Model>;
    type Error = LoadError;

    async fn load(&self, ids: &[Uuid]) -> Result<HashMap<Uuid, Self::Value>, Self::Error> {
        Ok(service::step_runs_by_execution(&self.0, ids).await?)
    }
}

/// The newest executions of a workflow, at most `limit` of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RecentExecutions {
    pub workflow_id: Uuid,
    pub limit: u32,
}

/// Each workflow's newest executions: one query for a whole list of
/// workflows, whatever limits its fields ask for.
pub struct RecentExecutionsLoader(pub DatabaseConnection);

impl Loader<RecentExecutions> for RecentExecutionsLoader {
    type Value = Vec<execution::Model>;
    type Error = LoadError;

    async fn load(
        &self,
        keys: &[RecentExecutions],
    ) -> Result<HashMap<RecentExecutions, Self::Value>, Self::Error> {
        let mut workflow_ids: Vec<Uuid> = keys.iter().map(|key| key.workflow_id).collect();
        workflow_ids.sort_unstable();
        workflow_ids.dedup();
        let most = keys.iter().map(|key| key.limit).max().unwrap_or(0);
        let recent = service::recent_by_workflow(&self.0, &workflow_ids, most).await?;
        Ok(keys
            .iter()
            .map(|key| {
                let mut executions = recent.get(&key.workflow_id).cloned().unwrap_or_default();
                executions.truncate(key.limit as usize);
                (*key, executions)
            })
            .collect())
    }
}
