//! Relay connections over the lists of `pagination`: each parent's page is
//! read through the request's batched `lists` loader, so the same list
//! under every item of a list costs one statement, and `totalCount` is
//! counted (batched the same way) only when a query selects it.

use std::str::FromStr;

use async_graphql::connection::{Connection, Edge};
use async_graphql::{Context, Object, OutputType};
use futures::future::BoxFuture;
use uuid::Uuid;

use super::context::RequestContext;
use super::loaders::{CountOf, PageOf};
use crate::error::{AppError, AppResult};
use crate::pagination::{List, Page, Window};

/// The paging arguments of a connection field.
pub struct PageArgs {
    first: Option<i32>,
    after: Option<String>,
    last: Option<i32>,
    before: Option<String>,
}

impl PageArgs {
    pub fn new(
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> Self {
        Self {
            first,
            after,
            last,
            before,
        }
    }

    /// The window asked for, with cursors of `kind`.
    pub fn window<P: FromStr>(&self, kind: &str) -> AppResult<Window<P>> {
        Window::parse(
            kind,
            self.first,
            self.after.as_deref(),
            self.last,
            self.before.as_deref(),
        )
    }
}

/// A Relay connection of `T`s with `totalCount`.
pub type ListConnection<T> = Connection<String, T, TotalCount>;

/// The `totalCount` of a connection: what to count, counted when asked.
pub struct TotalCount(Box<dyn Count>);

#[Object]
impl TotalCount {
    /// How many items the whole list holds, with its filters, whatever the
    /// page; counted only when selected.
    async fn total_count(&self, ctx: &Context<'_>) -> async_graphql::Result<i32> {
        let count = self.0.count(ctx).await?;
        Ok(i32::try_from(count).unwrap_or(i32::MAX))
    }
}

/// A count that can be loaded.
trait Count: Send + Sync {
    fn count<'a>(&'a self, ctx: &'a Context<'_>) -> BoxFuture<'a, AppResult<u64>>;
}

impl<L: List> Count for CountOf<L> {
    fn count<'a>(&'a self, ctx: &'a Context<'_>) -> BoxFuture<'a, AppResult<u64>> {
        Box::pin(async move {
            let lists = &RequestContext::of(ctx).loaders().lists;
            Ok(lists.load_one(self.clone()).await?.unwrap_or(0))
        })
    }
}

/// The connection of `parent`'s page of `list`, read together with the
/// same list of the other parents resolved in this pass; `edge` gives each
/// item's cursor and node.
pub async fn list_connection<L: List, N: OutputType>(
    ctx: &Context<'_>,
    parent: Uuid,
    list: L,
    mut edge: impl FnMut(L::Item) -> async_graphql::Result<(String, N)>,
) -> async_graphql::Result<ListConnection<N>> {
    let lists = &RequestContext::of(ctx).loaders().lists;
    let key = PageOf {
        parent,
        list: list.clone(),
    };
    let page = lists
        .load_one(key)
        .await
        .map_err(AppError::from)?
        .unwrap_or_else(Page::empty);
    let total = TotalCount(Box::new(CountOf { parent, list }));
    let mut connection =
        Connection::with_additional_fields(page.has_previous_page, page.has_next_page, total);
    for item in page.items {
        let (cursor, node) = edge(item)?;
        connection.edges.push(Edge::new(cursor, node));
    }
    Ok(connection)
}
