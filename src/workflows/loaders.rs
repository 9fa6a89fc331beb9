//! DataLoaders for workflows, their versions and their triggers.

use std::collections::HashMap;

use async_graphql::dataloader::Loader;
use entity::{trigger, workflow, workflow_version};
use sea_orm::DatabaseConnection;
use uuid::Uuid;

use super::{service, triggers};
use crate::error::LoadError;

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

/// Triggers by id.
pub struct TriggerLoader(pub DatabaseConnection);

impl Loader<Uuid> for TriggerLoader {
    type Value = trigger::Model;
    type Error = LoadError;

    async fn load(&self, ids: &[Uuid]) -> Result<HashMap<Uuid, Self::Value>, Self::Error> {
        Ok(triggers::triggers_by_id(&self.0, ids).await?)
    }
}

/// Each workflow's triggers, oldest first, by workflow id.
pub struct TriggersByWorkflowLoader(pub DatabaseConnection);

impl Loader<Uuid> for TriggersByWorkflowLoader {
    type Value = Vec<trigger::Model>;
    type Error = LoadError;

    async fn load(&self, ids: &[Uuid]) -> Result<HashMap<Uuid, Self::Value>, Self::Error> {
        Ok(triggers::by_workflow(&self.0, ids).await?)
    }
}
