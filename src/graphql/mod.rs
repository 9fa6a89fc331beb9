//! Schema assembly, per-request context and the document limits.
//!
//! Each domain contributes its own `Query`/`Mutation` objects; they are
//! merged here. The SDL in `schema.graphql` is [`sdl`]'s output, and a test
//! fails when the two drift apart.

pub mod context;
pub mod document_guard;
pub mod field_order;
pub mod limits;
pub mod loaders;
pub mod persisted;

use async_graphql::{MergedObject, MergedSubscription, Schema, SchemaBuilder};

use crate::auth::account_schema::AccountMutation;
use crate::auth::api_keys_schema::ApiKeyMutation;
use crate::auth::mfa_schema::MfaMutation;
use crate::auth::schema::{AuthMutation, AuthQuery};
use crate::config::Settings;
use crate::executions::schema::{ExecutionMutation, ExecutionQuery, ExecutionSubscription};
use crate::orgs::members_schema::MembersMutation;
use crate::orgs::schema::{OrgMutation, OrgQuery};
use crate::workflows::catalog_schema::{CatalogMutation, CatalogQuery};
use crate::workflows::schema::{WorkflowMutation, WorkflowQuery};
use crate::workflows::triggers_schema::TriggerMutation;

/// Root query: the viewer and what they can reach.
#[derive(MergedObject, Default)]
#[graphql(name = "Query")]
pub struct QueryRoot(
    AuthQuery,
    OrgQuery,
    WorkflowQuery,
    CatalogQuery,
    ExecutionQuery,
);

/// Root mutation.
#[derive(MergedObject, Default)]
#[graphql(name = "Mutation")]
pub struct MutationRoot(
    AuthMutation,
    AccountMutation,
    MfaMutation,
    OrgMutation,
    MembersMutation,
    ApiKeyMutation,
    WorkflowMutation,
    CatalogMutation,
    TriggerMutation,
    ExecutionMutation,
);

/// Root subscription: live execution events.
#[derive(MergedSubscription, Default)]
#[graphql(name = "Subscription")]
pub struct SubscriptionRoot(ExecutionSubscription);

/// The FlowPilot GraphQL schema.
pub type AppSchema = Schema<QueryRoot, MutationRoot, SubscriptionRoot>;

fn builder() -> SchemaBuilder<QueryRoot, MutationRoot, SubscriptionRoot> {
    Schema::build(
        QueryRoot::default(),
        MutationRoot::default(),
        SubscriptionRoot::default(),
    )
}

/// The schema as served, with the depth, complexity and introspection
/// settings applied.
pub fn build_schema(settings: &Settings) -> AppSchema {
    let mut builder = builder()
        .limit_depth(settings.max_query_depth)
        .limit_complexity(settings.max_query_complexity)
        .limit_recursive_depth(settings.max_query_depth.max(32))
        .extension(document_guard::DocumentGuard::new(
            settings.documents.clone(),
        ))
        .extension(field_order::FieldOrder);
    if !settings.introspection {
        builder = builder.disable_introspection();
    }
    builder.finish()
}

/// The schema definition language of the API, as in `schema.graphql`.
pub fn sdl() -> String {
    builder().finish().sdl()
}
