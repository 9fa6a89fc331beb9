//! Schema assembly, per-request context and the document limits.
//!
//! Each domain contributes its own `Query`/`Mutation` objects; they are
//! merged here. The SDL in `schema.graphql` is [`sdl`]'s output, and a test
//! fails when the two drift apart.

pub mod batch;
pub mod connection;
pub mod context;
pub mod document_guard;
pub mod field_order;
pub mod limits;
pub mod loaders;
pub mod node;
pub mod persisted;
pub mod scalars;
pub mod shared;

use async_graphql::{MergedObject, MergedSubscription, SDLExportOptions, Schema, SchemaBuilder};

use crate::auth::account_schema::AccountMutation;
use crate::auth::api_keys_schema::ApiKey;
use crate::auth::api_keys_schema::ApiKeyMutation;
use crate::auth::mfa_schema::MfaMutation;
use crate::auth::schema::Session;
use crate::auth::schema::{AuthMutation, AuthQuery};
use crate::config::Settings;
use crate::executions::schema::{Execution, ExecutionEvent};
use crate::executions::schema::{ExecutionMutation, ExecutionQuery, ExecutionSubscription};
use crate::orgs::members_schema::MembersMutation;
use crate::orgs::members_schema::{AuditEntry, Invitation, Member};
use crate::orgs::schema::{OrgMutation, OrgQuery};
use crate::workflows::catalog_schema::{CatalogMutation, CatalogQuery};
use crate::workflows::schema::{Workflow, WorkflowVersion};
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
    node::NodeQuery,
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
    .override_output_type_description::<chrono::DateTime<chrono::Utc>>(
        scalars::DATE_TIME_DESCRIPTION,
    )
    .override_output_type_description::<Page<ApiKey>>("A page of API keys.")
    .override_output_type_description::<Page<AuditEntry>>("A page of audit log entries.")
    .override_output_type_description::<Page<Execution>>("A page of executions.")
    .override_output_type_description::<Page<ExecutionEvent>>("A page of execution events.")
    .override_output_type_description::<Page<Invitation>>("A page of invitations.")
    .override_output_type_description::<Page<Member>>("A page of members.")
    .override_output_type_description::<Page<Session>>("A page of sessions.")
    .override_output_type_description::<Page<Workflow>>("A page of workflows.")
    .override_output_type_description::<Page<WorkflowVersion>>("A page of workflow versions.")
}

/// A Relay connection as the schema names it (`XConnection`).
type Page<T> = connection::ListConnection<T>;

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

/// The schema without the server's limits and extensions: what a bare
/// async-graphql router would serve (for `flowpilot bench`).
pub fn bare_schema() -> AppSchema {
    builder().finish()
}

/// The schema definition language of the API, as in `schema.graphql`.
pub fn sdl() -> String {
    builder()
        .finish()
        .sdl_with_options(SDLExportOptions::new().include_specified_by())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every named thing of the schema that has no description, as
    /// `Type`, `Type.field`, `Type.field(arg)` or `Enum.VALUE`.
    async fn undescribed() -> Vec<String> {
        let query = "{ __schema { types {
            name description
            fields(includeDeprecated: true) { name description args { name description } }
            inputFields { name description }
            enumValues(includeDeprecated: true) { name description }
        } } }";
        let response = builder().finish().execute(query).await;
        assert!(response.errors.is_empty(), "{:?}", response.errors);
        let data = response.data.into_json().unwrap();
        let described = |item: &serde_json::Value| {
            item["description"]
                .as_str()
                .is_some_and(|text| !text.trim().is_empty())
        };
        let mut missing = Vec::new();
        for ty in data["__schema"]["types"].as_array().unwrap() {
            let name = ty["name"].as_str().unwrap();
            if name.starts_with("__") || ["String", "Int", "Float", "Boolean", "ID"].contains(&name)
            {
                continue;
            }
            if !described(ty) {
                missing.push(name.to_owned());
            }
            let list = |key: &str| ty[key].as_array().cloned().unwrap_or_default();
            for field in list("fields").iter().chain(list("inputFields").iter()) {
                let field_name = field["name"].as_str().unwrap();
                if !described(field) {
                    missing.push(format!("{name}.{field_name}"));
                }
                for arg in field["args"].as_array().into_iter().flatten() {
                    if !described(arg) {
                        missing.push(format!(
                            "{name}.{field_name}({})",
                            arg["name"].as_str().unwrap()
                        ));
                    }
                }
            }
            for value in list("enumValues") {
                if !described(&value) {
                    missing.push(format!("{name}.{}", value["name"].as_str().unwrap()));
                }
            }
        }
        missing
    }

    #[tokio::test]
    async fn every_type_field_argument_and_enum_value_has_a_description() {
        let missing = undescribed().await;
        assert!(
            missing.is_empty(),
            "{} without a description:\n{}",
            missing.len(),
            missing.join("\n")
        );
    }
}
