//! Workflows: definitions (the DAG model and its validation), immutable
//! versions, and the templates steps use.

pub mod definition;
pub mod loaders;
pub mod schema;
pub mod service;
pub mod template;
