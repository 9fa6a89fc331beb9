//! FlowPilot's integration tests: one binary, one module per area. Each
//! test starts the real server in-process on port 0 with its own database
//! and talks to it over HTTP as clients do.
//!
//! Backends: SQLite by default; PostgreSQL when `FLOWPILOT_TEST_DATABASE_URL`
//! is set, Redis when `FLOWPILOT_TEST_REDIS_URL` is set.

mod support;

mod access_changes;
mod api_keys;
mod auth;
mod browsers;
mod cancellation;
mod concurrency;
mod database_restarts;
mod email_flows;
mod engine;
mod executions;
mod graphql_http;
mod health;
mod hostile_documents;
mod hostile_sign_ins;
mod hostile_steps;
mod http_steps;
mod invitations;
mod legacy_ws;
mod limits;
mod lists;
mod lockout;
mod members;
mod mfa;
mod nested_lists;
mod nodes;
mod org_deletion;
mod organization_streams;
mod orgs;
mod processes;
mod rate_limits;
mod readme_walkthrough;
mod retries;
mod role_matrix;
mod runs;
mod scale;
mod schema_sdl;
mod secrets_at_rest;
mod sessions;
mod shared_subscriptions;
mod shutdown;
mod slow_consumers;
mod sse;
mod startup;
mod step_kinds;
mod stream_resume;
mod subscriptions;
mod tenant_isolation;
mod triggers;
mod websocket_closes;
mod workflow_lists;
mod workflow_versions;
mod workflows;
