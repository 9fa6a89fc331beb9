//! DataLoaders for execution data outside an event's snapshot.

use std::collections::HashMap;

use async_graphql::dataloader::Loader;
use entity::{execution, step_run};
use sea_orm::DatabaseConnection;
use uuid::Uuid;

use super::service;
use crate::graphql::loaders::LoadError;

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
