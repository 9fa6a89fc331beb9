//! FlowPilot: a workflow-automation backend served as one GraphQL API.
//!
//! The binary in `main.rs` parses settings and calls [`app::App`]; tests
//! build the same `App` in-process. Dependencies point one way:
//! `app -> http -> graphql -> {domain}::schema -> {domain}::service ->
//! {engine, events} -> state -> entity`; the `layering` test holds the
//! engine, the events and the services to it.

pub mod app;
pub mod auth;
pub mod bench;
pub mod clock;
pub mod config;
pub mod db;
pub mod egress;
pub mod engine;
pub mod error;
pub mod events;
pub mod executions;
pub mod graphql;
pub mod http;
#[cfg(test)]
mod layering;
pub mod limits;
pub mod mail;
pub mod orgs;
pub mod pagination;
pub mod state;
pub mod telemetry;
pub mod workflows;
