//! Workflow definitions as workers read them, kept once parsed: a version
//! never changes after it is created, so its parsed definition can be
//! reused by every execution of it without reading or parsing it again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use entity::workflow_version;
use sea_orm::{ConnectionTrait, DbErr, EntityTrait};
use uuid::Uuid;

use crate::workflows::definition::WorkflowDefinition;

/// Versions kept at most; when full, the cache starts over.
const KEPT: usize = 1024;

/// Parsed definitions of the versions this instance ran lately.
#[derive(Clone, Default)]
pub struct Definitions(Arc<Mutex<HashMap<Uuid, Arc<WorkflowDefinition>>>>);

/// A version's definition, or why it cannot be run.
pub enum Definition {
    Readable(Arc<WorkflowDefinition>),
    Unreadable(String),
}

impl Definitions {
    /// The definition of `version_id`, read and parsed once.
    pub async fn get(
        &self,
        conn: &impl ConnectionTrait,
        version_id: Uuid,
    ) -> Result<Definition, DbErr> {
        if let Some(known) = self.kept().get(&version_id) {
            return Ok(Definition::Readable(known.clone()));
        }
        let Some(version) = workflow_version::Entity::find_by_id(version_id)
            .one(conn)
            .await?
        else {
            return Ok(Definition::Unreadable(
                "its workflow version no longer exists".into(),
            ));
        };
        match WorkflowDefinition::from_stored(&version.definition) {
            Ok(definition) => {
                let definition = Arc::new(definition);
                let mut kept = self.kept();
                if kept.len() >= KEPT {
                    kept.clear();
                }
                kept.insert(version_id, definition.clone());
                Ok(Definition::Readable(definition))
            }
            Err(err) => Ok(Definition::Unreadable(format!(
                "its workflow version cannot be read: {err}"
            ))),
        }
    }

    fn kept(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Arc<WorkflowDefinition>>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
