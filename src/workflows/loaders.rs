//! DataLoaders for workflows and their versions.

use std::collections::HashMap;

use async_graphql::dataloader::Loader;
use entity::{workflow, workflow_version};
use sea_orm::DatabaseConnection;
use uuid::Uuid;

use super::service;
use crate::graphql::loaders::LoadError;

/// Workflows by id.
pub struct WorkflowLoader(pub DatabaseConnection);

impl Loader<Uuid> for WorkflowLoader {
    type Value = workflow::Model;
    type Error = LoadError;

    async fn load(&self, ids: &[Uuid]) -> Result<HashMap<Uuid, Self::Value>, Self::Error> {
        Ok(service::workflows_by_id(&self.0, ids).await?)
    }
}

/// Workflow versions by id.
pub struct WorkflowVersionLoader(pub DatabaseConnection);

impl Loader<Uuid> for WorkflowVersionLoader {
    type Value = workflow_version::Model;
    type Error = LoadError;

    async fn load(&self, ids: &[Uuid]) -> Result<HashMap<Uuid, Self::Value>, Self::Error> {
        Ok(service::versions_by_id(&self.0, ids).await?)
    }
}
