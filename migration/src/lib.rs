//! Database migrations for FlowPilot, run by `flowpilot migrate` and at
//! start-up. A migration that has shipped is never edited: every change to
//! the schema is a new migration appended to [`Migrator::migrations`].

pub use sea_orm_migration::prelude::*;

mod m20261124_000001_identity_and_organizations;
mod m20261124_000002_workflows_and_executions;
mod m20261124_000003_execution_reruns;
mod m20261124_000004_retries_and_timeouts;
mod m20261124_000005_concurrency_limits;
mod m20261124_000006_execution_lists;
mod m20261124_000007_session_lifecycle;
mod m20261124_000008_login_attempts_and_lockout;
mod m20261124_000009_email_passwords_and_mfa;
mod m20261124_000010_invitations_and_audit_log;
mod m20261124_000011_api_keys;
mod m20261124_000012_workflow_lists;
mod m20261124_000013_triggers;
mod m20261207_000014_claims_without_progress;
mod m20261207_000015_trusted_documents;
mod m20261207_000016_event_positions;
mod m20261207_000017_claim_order;

/// The ordered list of FlowPilot's migrations.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261124_000001_identity_and_organizations::Migration),
            Box::new(m20261124_000002_workflows_and_executions::Migration),
            Box::new(m20261124_000003_execution_reruns::Migration),
            Box::new(m20261124_000004_retries_and_timeouts::Migration),
            Box::new(m20261124_000005_concurrency_limits::Migration),
            Box::new(m20261124_000006_execution_lists::Migration),
            Box::new(m20261124_000007_session_lifecycle::Migration),
            Box::new(m20261124_000008_login_attempts_and_lockout::Migration),
            Box::new(m20261124_000009_email_passwords_and_mfa::Migration),
            Box::new(m20261124_000010_invitations_and_audit_log::Migration),
            Box::new(m20261124_000011_api_keys::Migration),
            Box::new(m20261124_000012_workflow_lists::Migration),
            Box::new(m20261124_000013_triggers::Migration),
            Box::new(m20261207_000014_claims_without_progress::Migration),
            Box::new(m20261207_000015_trusted_documents::Migration),
            Box::new(m20261207_000016_event_positions::Migration),
            Box::new(m20261207_000017_claim_order::Migration),
        ]
    }
}
