//! Subscriptions whose subscribers share one resolution per event.
//!
//! Every subscription goes through [`subscribe`]. When its operation is one
//! root field that streams one execution (`executionEvents`,
//! `executionUpdated`) and its selection reaches no field that depends on
//! who is asking beyond their role ([`VIEWER_DEPENDENT`]), the subscriber
//! joins the group of subscribers with the same document, variables and
//! role (`events::fan_out`). Each subscriber keeps its own authorization
//! (checked as it subscribes, its membership watched as before), its own
//! replay from the log and its own live stream; only turning an event into
//! the bytes of a `next` payload is shared: the group resolves it through
//! the schema once, on its own context, and every subscriber that reaches
//! that event sends the same bytes. A late joiner that replays events the
//! group already rendered gets them from the group's recent renderings
//! ([`RENDERED_KEPT`]); older ones are rendered again.
//!
//! Anything else (other fields, a document that does not parse, a
//! subscriber the field refuses) runs on its own as before, so errors read
//! exactly as they always did.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use async_graphql::parser::types::{ExecutableDocument, OperationType, Selection, SelectionSet};
use async_graphql::{ID, OutputType, Request, Response, ServerError, Value};
use futures::future::Shared;
use futures::stream::BoxStream;
use futures::{FutureExt, Stream, StreamExt};
use tokio::sync::{mpsc, oneshot, watch};

use super::AppSchema;
use super::batch::InPasses;
use super::context::{RequestContext, Viewer};
use super::document_guard::{self, operation};
use super::limits::finish_response;
use crate::auth::service::DeviceInfo;
use crate::error::AppResult;
use crate::events::fan_out::ShareKey;
use crate::executions::schema::{execution_events_of, execution_updates_of};
use crate::limits::DocumentLimits;
use entity::role::Role;

/// Fields whose value depends on who asks, not only on their role: a
/// selection that reaches one is resolved for each subscriber.
pub const VIEWER_DEPENDENT: &[&str] = &[
    "viewerRole",
    "apiKeys",
    "auditLog",
    "members",
    "invitations",
    "me",
    "sessions",
    "memberships",
];

/// Renderings a group keeps for late joiners, newest first out last.
const RENDERED_KEPT: usize = 256;

/// What a transport sends for a subscription, one message per item.
pub enum Delivery {
    /// A response resolved for this subscriber alone (the first may be a
    /// request error: the operation was refused).
    Response(Box<Response>),
    /// A `next` payload rendered once for the subscriber's group.
    Rendered(Arc<str>),
    /// The member's access ended: the transport ends the subscription as
    /// it does for a response that ended it. The payload is the error a
    /// transport that sends one last `next` sends.
    AccessChanged(Arc<str>),
}

/// One item a subscriber would be sent, with the `seq` that names it among
/// its group's renderings (`None`: rendered for this subscriber alone, as
/// an error is).
pub struct Keyed<T> {
    pub seq: Option<i32>,
    pub item: async_graphql::Result<T>,
}

impl<T> Keyed<T> {
    /// An item named by its seq, or an error (rendered for its subscriber
    /// alone).
    pub fn of(item: AppResult<(i32, T)>) -> Self {
        match item {
            Ok((seq, item)) => Self {
                seq: Some(seq),
                item: Ok(item),
            },
            Err(err) => Self {
                seq: None,
                item: Err(err.into()),
            },
        }
    }
}

/// Runs `request` as a subscription for `context`'s viewer: shared with
/// the subscribers of the same document, variables and role where it can
/// be, on its own otherwise.
pub async fn subscribe(
    schema: AppSchema,
    context: Arc<RequestContext>,
    request: Request,
) -> BoxStream<'static, Delivery> {
    let limits = context.state.config.settings.documents.clone();
    match SharedField::of(&request, &limits) {
        Some(SharedField::ExecutionEvents {
            execution_id,
            after_seq,
        }) => {
            if let Ok((role, items)) = execution_events_of(&context, &execution_id, after_seq).await
            {
                return joined(schema, context, request, role, items).boxed();
            }
        }
        Some(SharedField::ExecutionUpdated { execution_id }) => {
            if let Ok((role, items)) = execution_updates_of(&context, &execution_id).await {
                return joined(schema, context, request, role, items).boxed();
            }
        }
        None => {}
    }
    alone(schema, context, request, limits).boxed()
}

/// The subscription run for this subscriber alone.
fn alone(
    schema: AppSchema,
    context: Arc<RequestContext>,
    request: Request,
    limits: DocumentLimits,
) -> impl Stream<Item = Delivery> {
    let passes = context.passes.clone();
    InPasses::new(schema.execute_stream(request.data(context)), passes)
        .map(move |response| Delivery::Response(Box::new(finish_response(response, &limits))))
}

/// The subscriber's own `items`, each rendered by its group.
fn joined<T: OutputType + Send + Sync + 'static>(
    schema: AppSchema,
    context: Arc<RequestContext>,
    request: Request,
    role: Role,
    items: BoxStream<'static, Keyed<T>>,
) -> impl Stream<Item = Delivery> {
    let key = ShareKey {
        document: request.query.clone(),
        operation_name: request.operation_name.clone(),
        variables: serde_json::to_string(&request.variables).unwrap_or_default(),
        role,
    };
    let fan_out = context.state.fan_out.clone();
    let group = fan_out.join(key.clone(), || {
        Group::<T>::start(schema, &context, request, key)
    });
    // Only the access watch is kept: the context itself is freed once the
    // subscriber's stream is open.
    let access_ended = context.access_ended.clone();
    drop(context);
    async_stream::stream! {
        if let Err(errors) = group.ready().await {
            yield Delivery::Response(Box::new(Response::from_errors(errors)));
            return;
        }
        let mut items = items;
        // `let … else`, not `while let`: the item is not kept while its
        // render and delivery are awaited.
        loop {
            let Some(Keyed { seq, item }) = items.next().await else {
                return;
            };
            let ended = item.is_err() && access_ended.get().is_some();
            let seq = seq.filter(|_| item.is_ok());
            // Boxed: a subscriber that waits for its next item holds no
            // room for an item being rendered.
            let Some(payload) = Box::pin(group.render(seq, item)).await else {
                return;
            };
            if ended {
                yield Delivery::AccessChanged(payload);
                return;
            }
            yield Delivery::Rendered(payload);
        }
    }
}

/// The root fields a group can share, with the arguments a subscriber's
/// own stream is opened with.
enum SharedField {
    ExecutionEvents { execution_id: ID, after_seq: i32 },
    ExecutionUpdated { execution_id: ID },
}

impl SharedField {
    /// The shared field `request` runs, if it runs one and nothing in its
    /// selection depends on the viewer. Parses under the same bounds as
    /// every document; a document refused there runs alone, to be refused.
    fn of(request: &Request, limits: &DocumentLimits) -> Option<Self> {
        let document = document_guard::parse(&request.query, limits).ok()?;
        let operation = operation(&document, request.operation_name.as_deref())?;
        if operation.ty != OperationType::Subscription || !operation.directives.is_empty() {
            return None;
        }
        let [root] = operation.selection_set.node.items.as_slice() else {
            return None;
        };
        let Selection::Field(field) = &root.node else {
            return None;
        };
        let field = &field.node;
        if !field.directives.is_empty() || reaches_viewer(&document, &field.selection_set.node) {
            return None;
        }
        let argument = |name: &str| -> Option<Option<async_graphql::Value>> {
            let Some((_, value)) = field.arguments.iter().find(|(n, _)| n.node == name) else {
                return Some(None);
            };
            let value = value.node.clone().into_const_with(|variable| {
                match request.variables.get(&variable) {
                    Some(value) => Ok(value.clone()),
                    None => operation
                        .variable_definitions
                        .iter()
                        .find(|definition| definition.node.name.node == variable)
                        .and_then(|definition| definition.node.default_value.as_ref())
                        .map(|value| value.node.clone())
                        .ok_or(()),
                }
            });
            value.ok().map(Some)
        };
        let execution_id = match argument("executionId")? {
            Some(Value::String(id)) => ID(id),
            _ => return None,
        };
        match field.name.node.as_str() {
            "executionEvents" => {
                let after_seq = match argument("afterSeq")? {
                    None | Some(Value::Null) => 0,
                    Some(Value::Number(n)) => i32::try_from(n.as_i64()?).ok()?,
                    Some(_) => return None,
                };
                Some(Self::ExecutionEvents {
                    execution_id,
                    after_seq,
                })
            }
            "executionUpdated" => Some(Self::ExecutionUpdated { execution_id }),
            _ => None,
        }
    }
}

/// Whether `selection` (its fragments followed, each once) selects a field
/// of [`VIEWER_DEPENDENT`].
fn reaches_viewer(document: &ExecutableDocument, selection: &SelectionSet) -> bool {
    let mut followed = std::collections::HashSet::new();
    let mut pending = vec![selection];
    while let Some(set) = pending.pop() {
        for item in &set.items {
            match &item.node {
                Selection::Field(field) => {
                    if VIEWER_DEPENDENT.contains(&field.node.name.node.as_str()) {
                        return true;
                    }
                    pending.push(&field.node.selection_set.node);
                }
                Selection::InlineFragment(fragment) => {
                    pending.push(&fragment.node.selection_set.node);
                }
                Selection::FragmentSpread(spread) => {
                    let name = &spread.node.fragment_name.node;
                    if followed.insert(name.clone())
                        && let Some(fragment) = document.fragments.get(name)
                    {
                        pending.push(&fragment.node.selection_set.node);
                    }
                }
            }
        }
    }
    false
}

/// Whether a group's document was accepted: `Err` holds why not.
type Readiness = Option<Result<(), Vec<ServerError>>>;

type Render<T> = (async_graphql::Result<T>, oneshot::Sender<Arc<str>>);

/// Subscribers of one document, variables and role, and the task that
/// renders their events.
struct Group<T> {
    renders: mpsc::UnboundedSender<Render<T>>,
    rendered: Mutex<BTreeMap<i32, Shared<oneshot::Receiver<Arc<str>>>>>,
    ready: watch::Receiver<Readiness>,
    fan_out: crate::events::fan_out::FanOut,
    key: ShareKey,
}

/// What a group's root field streams: the items its subscribers ask it to
/// render, and where each answer goes. Found in the group's context by the
/// shared fields' resolvers.
pub struct Feed<T> {
    items: Mutex<Option<mpsc::UnboundedReceiver<Render<T>>>>,
    answers: Arc<Mutex<VecDeque<oneshot::Sender<Arc<str>>>>>,
    ready: Arc<watch::Sender<Readiness>>,
}

impl<T: Send + 'static> Feed<T> {
    /// The items to render, in the order asked; the field's resolver
    /// returns them as its stream (once: a second call streams nothing).
    pub fn items(&self) -> impl Stream<Item = async_graphql::Result<T>> + use<T> {
        let items = lock(&self.items).take();
        let answers = self.answers.clone();
        // The resolver runs once the document passed validation.
        self.ready.send_replace(Some(Ok(())));
        futures::stream::unfold(items, move |items| {
            let answers = answers.clone();
            async move {
                let mut items = items?;
                let (item, answer) = items.recv().await?;
                lock(&answers).push_back(answer);
                Some((item, Some(items)))
            }
        })
    }
}

impl<T: OutputType + Send + Sync + 'static> Group<T> {
    /// Starts rendering for a new group, on a context of its own that
    /// carries the role's view and nobody's credentials.
    fn start(
        schema: AppSchema,
        subscriber: &RequestContext,
        request: Request,
        key: ShareKey,
    ) -> Arc<Self> {
        let (renders, items) = mpsc::unbounded_channel();
        let (ready_tx, ready) = watch::channel(None);
        let ready_tx = Arc::new(ready_tx);
        let answers = Arc::new(Mutex::new(VecDeque::new()));
        let feed = Feed {
            items: Mutex::new(Some(items)),
            answers: answers.clone(),
            ready: ready_tx.clone(),
        };
        let state = subscriber.state.clone();
        let context = RequestContext::new(state.clone(), Viewer::Anonymous, DeviceInfo::default());
        let passes = context.passes.clone();
        let limits = state.config.settings.documents.clone();
        let counter = state.fan_out.clone();
        let responses = InPasses::new(
            schema.execute_stream(request.data(context).data(feed)),
            passes,
        );
        tokio::spawn(async move {
            let mut responses = responses;
            while let Some(response) = responses.next().await {
                let response = finish_response(response, &limits);
                let answer = lock(&answers).pop_front();
                let Some(answer) = answer else {
                    // Nothing asked for this: the document was refused
                    // before the field ran.
                    ready_tx.send_replace(Some(Err(response.errors)));
                    break;
                };
                counter.resolved();
                let payload = serde_json::to_string(&response)
                    .unwrap_or_else(|_| r#"{"data":null}"#.to_owned());
                let _ = answer.send(payload.into());
            }
        });
        Arc::new(Self {
            renders,
            rendered: Mutex::new(BTreeMap::new()),
            ready,
            fan_out: state.fan_out.clone(),
            key,
        })
    }

    /// Waits until the group's document was accepted or refused.
    async fn ready(&self) -> Result<(), Vec<ServerError>> {
        let mut ready = self.ready.clone();
        let outcome = match ready.wait_for(Option::is_some).await {
            Ok(outcome) => outcome.clone(),
            Err(_) => return Ok(()),
        };
        outcome.unwrap_or(Ok(()))
    }

    /// The payload of `item`: rendered by an earlier subscriber when `seq`
    /// names one the group keeps, rendered now otherwise. `None` once the
    /// group can no longer render.
    async fn render(&self, seq: Option<i32>, item: async_graphql::Result<T>) -> Option<Arc<str>> {
        let waiting = {
            let mut rendered = lock(&self.rendered);
            match seq.and_then(|seq| rendered.get(&seq).cloned()) {
                Some(waiting) => waiting,
                None => {
                    let (answer, waiting) = oneshot::channel();
                    let waiting = waiting.shared();
                    self.renders.send((item, answer)).ok()?;
                    if let Some(seq) = seq {
                        rendered.insert(seq, waiting.clone());
                        if rendered.len() > RENDERED_KEPT {
                            rendered.pop_first();
                        }
                    }
                    waiting
                }
            }
        };
        waiting.await.ok()
    }
}

impl<T> Drop for Group<T> {
    fn drop(&mut self) {
        self.fan_out.forget(&self.key);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
