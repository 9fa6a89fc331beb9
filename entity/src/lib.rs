//! SeaORM entities for every FlowPilot table, one module per table.
//!
//! This crate holds column definitions and relations only: no business rules,
//! no validation and nothing GraphQL sees directly. Services in the
//! `flowpilot` crate read and write these models and convert them into their
//! own types at the edge.

pub mod api_key;
pub mod audit_entry;
pub mod execution;
pub mod execution_event;
pub mod invitation;
pub mod login_attempt;
pub mod membership;
pub mod mfa_backup_code;
pub mod one_time_token;
pub mod organization;
pub mod refresh_token;
pub mod role;
pub mod status;
pub mod step_run;
pub mod trigger;
pub mod trusted_document;
pub mod user;
pub mod user_session;
pub mod workflow;
pub mod workflow_version;
