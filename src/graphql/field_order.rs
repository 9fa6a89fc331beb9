//! Responses in the order the query asked for.
//!
//! async-graphql resolves an object's fields concurrently and adds each to
//! the response map when it finishes, so two identical requests can come
//! back in different orders. The GraphQL spec orders a result's entries as
//! the selection set lists them, fragments merged in place where their type
//! condition applies (CollectFields). [`FieldOrder`] puts every object of
//! every result — queries, mutations, each event of a subscription — back
//! into that order once it is resolved, on every transport.
//!
//! The walk follows the document and the schema's types: an object whose
//! field type is an interface or a union is matched to the member type whose
//! collected fields are exactly its keys; failing that, keys take the order
//! of their first appearance in the selection.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextExecute, NextPrepareRequest, NextSubscribe,
};
use async_graphql::indexmap::IndexMap;
use async_graphql::parser::types::{
    ExecutableDocument, Field, OperationType, Selection, SelectionSet,
};
use async_graphql::registry::{MetaTypeName, Registry};
use async_graphql::{Name, Request, Response, ServerResult, Value};
use futures::StreamExt;
use futures::stream::BoxStream;

/// Restores the requested field order in every response.
pub struct FieldOrder;

impl ExtensionFactory for FieldOrder {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(OrderExtension::default())
    }
}

/// The document and operation of one request, kept from its preparation
/// until its results are ordered (for a subscription, until it ends).
#[derive(Default)]
struct OrderExtension {
    prepared: Arc<Mutex<Option<Arc<Prepared>>>>,
}

struct Prepared {
    document: ExecutableDocument,
    operation_name: Option<String>,
}

fn prepared(slot: &Mutex<Option<Arc<Prepared>>>) -> Option<Arc<Prepared>> {
    slot.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
}

#[async_graphql::async_trait::async_trait]
impl Extension for OrderExtension {
    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        mut request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        // The document guard ahead of this extension has parsed the query;
        // a request it refused never gets here.
        let document = request.parsed_query()?.clone();
        *self
            .prepared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::new(Prepared {
            document,
            operation_name: request.operation_name.clone(),
        }));
        next.run(ctx, request).await
    }

    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> Response {
        let mut response = next.run(ctx, operation_name).await;
        if let Some(prepared) = prepared(&self.prepared) {
            order_response(&mut response, &prepared, &ctx.schema_env.registry);
        }
        response
    }

    fn subscribe<'s>(
        &self,
        ctx: &ExtensionContext<'_>,
        stream: BoxStream<'s, Response>,
        next: NextSubscribe<'_>,
    ) -> BoxStream<'s, Response> {
        // The stream is built before the request is prepared, so the
        // document is looked up as each event arrives.
        let slot = self.prepared.clone();
        let env = ctx.schema_env.clone();
        next.run(ctx, stream)
            .map(move |mut response| {
                if let Some(prepared) = prepared(&slot) {
                    order_response(&mut response, &prepared, &env.registry);
                }
                response
            })
            .boxed()
    }
}

/// Orders `response.data` as the prepared operation selects it.
fn order_response(response: &mut Response, prepared: &Prepared, registry: &Registry) {
    let Some(operation) =
        super::document_guard::operation(&prepared.document, prepared.operation_name.as_deref())
    else {
        return;
    };
    let root = match operation.ty {
        OperationType::Query => Some(registry.query_type.as_str()),
        OperationType::Mutation => registry.mutation_type.as_deref(),
        OperationType::Subscription => registry.subscription_type.as_deref(),
    };
    let Some(root) = root else {
        return;
    };
    let orderer = Orderer {
        document: &prepared.document,
        registry,
    };
    orderer.order(&mut response.data, root, &[&operation.selection_set.node]);
}

/// The fields one object type collects from a selection, by response key
/// in order, each with every field node that contributes to it.
type Collected<'d> = IndexMap<&'d str, Vec<&'d Field>>;

struct Orderer<'d> {
    document: &'d ExecutableDocument,
    registry: &'d Registry,
}

impl<'d> Orderer<'d> {
    /// Orders `value`, of type `type_name` (any wrapping), selected by the
    /// merged `selections`.
    fn order(&self, value: &mut Value, type_name: &str, selections: &[&'d SelectionSet]) {
        match value {
            Value::List(items) => {
                for item in items {
                    self.order(item, type_name, selections);
                }
            }
            Value::Object(map) => self.order_object(map, type_name, selections),
            _ => {}
        }
    }

    fn order_object(
        &self,
        map: &mut IndexMap<Name, Value>,
        type_name: &str,
        selections: &[&'d SelectionSet],
    ) {
        let concrete = self.concrete_type(map, type_name, selections);
        let collected = self.collect(concrete.as_deref(), selections);
        let mut ordered = IndexMap::with_capacity(map.len());
        for (key, fields) in &collected {
            let Some((name, mut value)) = map.shift_remove_entry(*key) else {
                continue;
            };
            if let Some(field_type) = concrete
                .as_deref()
                .and_then(|parent| self.field_type(parent, fields[0]))
            {
                let nested: Vec<&SelectionSet> = fields
                    .iter()
                    .map(|field| &field.selection_set.node)
                    .filter(|set| !set.items.is_empty())
                    .collect();
                if !nested.is_empty() {
                    self.order(&mut value, &field_type, &nested);
                }
            }
            ordered.insert(name, value);
        }
        // Anything the selection does not name keeps its place at the end.
        ordered.extend(map.drain(..));
        *map = ordered;
    }

    /// The object type of `map`: `type_name` itself when it is an object
    /// type, else the one member of the interface or union whose collected
    /// fields are exactly the keys present.
    fn concrete_type(
        &self,
        map: &IndexMap<Name, Value>,
        type_name: &str,
        selections: &[&'d SelectionSet],
    ) -> Option<String> {
        let meta = self.registry.types.get(type_name)?;
        let Some(members) = meta.possible_types() else {
            return Some(type_name.to_owned());
        };
        members
            .iter()
            .find(|member| {
                let collected = self.collect(Some(member), selections);
                collected.len() == map.len() && collected.keys().all(|key| map.contains_key(*key))
            })
            .cloned()
    }

    /// CollectFields for an object of type `object` (None: unknown, every
    /// fragment applies).
    fn collect(&self, object: Option<&str>, selections: &[&'d SelectionSet]) -> Collected<'d> {
        let mut collected = Collected::new();
        let mut visited = HashSet::new();
        for set in selections {
            self.collect_into(object, set, &mut collected, &mut visited);
        }
        collected
    }

    fn collect_into(
        &self,
        object: Option<&str>,
        set: &'d SelectionSet,
        collected: &mut Collected<'d>,
        visited: &mut HashSet<&'d str>,
    ) {
        for selection in &set.items {
            match &selection.node {
                Selection::Field(field) => collected
                    .entry(field.node.response_key().node.as_str())
                    .or_default()
                    .push(&field.node),
                Selection::FragmentSpread(spread) => {
                    let name = spread.node.fragment_name.node.as_str();
                    if !visited.insert(name) {
                        continue;
                    }
                    let Some(fragment) = self.document.fragments.get(name) else {
                        continue;
                    };
                    let condition = fragment.node.type_condition.node.on.node.as_str();
                    if self.applies(condition, object) {
                        self.collect_into(
                            object,
                            &fragment.node.selection_set.node,
                            collected,
                            visited,
                        );
                    }
                }
                Selection::InlineFragment(inline) => {
                    let applies = inline.node.type_condition.as_ref().is_none_or(|condition| {
                        self.applies(condition.node.on.node.as_str(), object)
                    });
                    if applies {
                        self.collect_into(
                            object,
                            &inline.node.selection_set.node,
                            collected,
                            visited,
                        );
                    }
                }
            }
        }
    }

    /// Whether a fragment on `condition` applies to an object of `object`.
    fn applies(&self, condition: &str, object: Option<&str>) -> bool {
        let Some(object) = object else {
            return true;
        };
        condition == object
            || self
                .registry
                .types
                .get(condition)
                .is_some_and(|meta| meta.is_possible_type(object))
    }

    /// The named type of `field` on `parent`.
    fn field_type(&self, parent: &str, field: &Field) -> Option<String> {
        let name = field.name.node.as_str();
        let ty = match name {
            "__schema" => return Some("__Schema".to_owned()),
            "__type" => return Some("__Type".to_owned()),
            _ => &self.registry.types.get(parent)?.field_by_name(name)?.ty,
        };
        Some(MetaTypeName::concrete_typename(ty).to_owned())
    }
}
