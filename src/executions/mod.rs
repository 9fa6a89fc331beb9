//! Executions as clients see them: starting one, reading it, and streaming
//! its events. Running them is the engine's job.

pub mod loaders;
pub mod schema;
pub mod service;
