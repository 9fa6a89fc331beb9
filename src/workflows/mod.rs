//! Workflows: definitions (the DAG model and its validation), immutable
//! versions, the catalog an organization lists (tags, archiving, copies),
//! and the templates steps use. `service`, `versions` and `catalog` hold the
//! rules and the database work; `schema` and `catalog_schema` expose them.

pub mod catalog;
pub mod catalog_schema;
pub mod definition;
pub mod loaders;
pub mod schema;
pub mod service;
pub mod step_configs;
pub mod template;
pub mod versions;
