//! Workflows: definitions (the DAG model and its validation), immutable
//! versions, the catalog an organization lists (tags, archiving, copies),
//! the triggers that start workflows (schedules and webhooks), and the
//! templates steps use. `service`, `versions`, `catalog` and `triggers` hold
//! the rules and the database work; the `*schema` modules expose them.

pub mod catalog;
pub mod catalog_schema;
pub mod definition;
pub mod loaders;
pub mod scheduler;
pub mod schema;
pub mod service;
pub mod step_configs;
pub mod template;
pub mod triggers;
pub mod triggers_schema;
pub mod versions;
