//! Pagination for lists: `first` (default 20, at most 100) items after an
//! opaque `after` cursor, or the `last` items before a `before` cursor. A
//! cursor encodes the position of an item, so a page is a keyset query and
//! stays stable while rows are inserted.
//!
//! A list nested under another list (each workflow's executions, each
//! organization's members) is read for all its parents at once: a
//! [`ListQuery`] numbers each parent's rows in list order with
//! `ROW_NUMBER() OVER (PARTITION BY parent …)` and keeps each parent's
//! window, in one statement on both backends, whatever the number of
//! parents.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Alias, Asterisk, Expr, ExprTrait, Func, Query, WindowStatement};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait, Order,
    QueryFilter, QueryOrder, QuerySelect, QueryTrait, Select, Value,
};
use uuid::Uuid;

use crate::error::{AppError, AppResult};

/// Items in a page when `first` is not given.
pub const DEFAULT_PAGE_SIZE: u64 = 20;
/// Most items a page may hold.
pub const MAX_PAGE_SIZE: u64 = 100;

/// One page of a list, in list order.
#[derive(Clone, Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Whether items follow the last one.
    pub has_next_page: bool,
    /// Whether items come before the first one.
    pub has_previous_page: bool,
}

impl<T> Page<T> {
    /// A page with nothing before, in or after it.
    pub fn empty() -> Self {
        Self {
            items: Vec::new(),
            has_next_page: false,
            has_previous_page: false,
        }
    }

    /// The same page holding `items` instead (its items turned into
    /// others, one for one).
    pub fn with_items<U>(self, items: Vec<U>) -> Page<U> {
        Page {
            items,
            has_next_page: self.has_next_page,
            has_previous_page: self.has_previous_page,
        }
    }

    /// The page of `window` from up to `limit + 1` rows read in reading
    /// order (backwards for `last`).
    fn of_window<P>(mut rows: Vec<T>, window: &Window<P>) -> Self {
        let more = rows.len() as u64 > window.limit;
        rows.truncate(window.limit as usize);
        if window.from_end {
            rows.reverse();
            Self {
                items: rows,
                has_next_page: window.before.is_some(),
                has_previous_page: more,
            }
        } else {
            Self {
                items: rows,
                has_next_page: more,
                has_previous_page: window.after.is_some(),
            }
        }
    }
}

/// The part of a list a page holds: the first `limit` items after `after`
/// (and before `before`), or with `from_end` the last `limit` items before
/// `before` (and after `after`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Window<P> {
    pub limit: u64,
    pub after: Option<P>,
    pub before: Option<P>,
    pub from_end: bool,
}

impl<P: FromStr> Window<P> {
    /// The window that `first`, `after`, `last` and `before` ask for, with
    /// cursors of `kind`; BAD_USER_INPUT naming the argument otherwise.
    pub fn parse(
        kind: &str,
        first: Option<i32>,
        after: Option<&str>,
        last: Option<i32>,
        before: Option<&str>,
    ) -> AppResult<Self> {
        let (limit, from_end) = match (first, last) {
            (Some(_), Some(_)) => {
                return Err(AppError::bad_input(
                    "last",
                    "first and last cannot be given together",
                ));
            }
            (None, Some(last)) => (size_argument("last", Some(last))?, true),
            (first, None) => (size_argument("first", first)?, false),
        };
        Ok(Self {
            limit,
            after: after
                .map(|cursor| decode_cursor_of("after", kind, cursor))
                .transpose()?,
            before: before
                .map(|cursor| decode_cursor_of("before", kind, cursor))
                .transpose()?,
            from_end,
        })
    }
}

impl<P> Window<P> {
    /// The first `limit` items.
    pub fn first(limit: u64) -> Self {
        Self {
            limit,
            after: None,
            before: None,
            from_end: false,
        }
    }

    /// The same window with its cursors turned by `f`.
    pub fn map<Q>(self, f: impl Fn(P) -> Q) -> Window<Q> {
        Window {
            limit: self.limit,
            after: self.after.map(&f),
            before: self.before.map(&f),
            from_end: self.from_end,
        }
    }
}

/// A list position as the values of the list's order columns.
pub trait Key {
    fn values(&self) -> Vec<Value>;
}

impl Key for i32 {
    fn values(&self) -> Vec<Value> {
        vec![(*self).into()]
    }
}

impl Key for Position {
    fn values(&self) -> Vec<Value> {
        vec![self.at.into(), self.id.into()]
    }
}

/// A list whose parents' pages are read together: its filters, order and
/// window, the same for every parent. The GraphQL layer batches the pages
/// asked for the same list of many parents into one call.
pub trait List: Clone + Eq + Hash + Send + Sync + 'static {
    type Item: Clone + Send + Sync + 'static;

    /// Each parent's page (a parent without items has an empty page), read
    /// at `now`.
    fn pages(
        &self,
        db: &DatabaseConnection,
        now: DateTime<Utc>,
        parents: &[Uuid],
    ) -> impl Future<Output = Result<HashMap<Uuid, Page<Self::Item>>, DbErr>> + Send;

    /// How many items each parent's list holds at `now`, whatever the
    /// window.
    fn counts(
        &self,
        db: &DatabaseConnection,
        now: DateTime<Utc>,
        parents: &[Uuid],
    ) -> impl Future<Output = Result<HashMap<Uuid, u64>, DbErr>> + Send;
}

/// A list whose items are one table's rows as they are: its query and
/// window say all.
pub trait RowList: Clone + Eq + Hash + Send + Sync + 'static {
    type Entity: EntityTrait<Model: Clone + Send + Sync>;
    type Key: Key + Send + Sync;

    /// The list's rows when read at `now`.
    fn query(&self, now: DateTime<Utc>) -> ListQuery<Self::Entity>;

    fn window(&self) -> &Window<Self::Key>;
}

impl<L: RowList> List for L {
    type Item = <L::Entity as EntityTrait>::Model;

    async fn pages(
        &self,
        db: &DatabaseConnection,
        now: DateTime<Utc>,
        parents: &[Uuid],
    ) -> Result<HashMap<Uuid, Page<Self::Item>>, DbErr> {
        self.query(now).pages(db, parents, self.window()).await
    }

    async fn counts(
        &self,
        db: &DatabaseConnection,
        now: DateTime<Utc>,
        parents: &[Uuid],
    ) -> Result<HashMap<Uuid, u64>, DbErr> {
        self.query(now).counts(db, parents).await
    }
}

/// The rows of a list of many parents: `select` carries the list's filters,
/// `parent` is the column that names a row's parent (`parent_of` reads it),
/// and the list is ordered by `order` (the last column unique), all
/// ascending or all descending.
pub struct ListQuery<E: EntityTrait> {
    pub select: Select<E>,
    pub parent: E::Column,
    pub parent_of: fn(&E::Model) -> Uuid,
    pub order: Vec<E::Column>,
    pub ascending: bool,
}

/// The column the windowed read numbers each parent's rows in.
const ROW_IN_PAGE: &str = "row_in_page";

impl<E: EntityTrait> ListQuery<E> {
    /// Each parent's page of `window`, in one statement.
    pub async fn pages<P: Key>(
        self,
        db: &DatabaseConnection,
        parents: &[Uuid],
        window: &Window<P>,
    ) -> Result<HashMap<Uuid, Page<E::Model>>, DbErr> {
        if parents.is_empty() {
            return Ok(HashMap::new());
        }
        let mut select = self
            .select
            .filter(self.parent.is_in(parents.iter().copied()));
        if let Some(after) = &window.after {
            select = select.filter(beyond(&self.order, after.values(), self.ascending));
        }
        if let Some(before) = &window.before {
            select = select.filter(beyond(&self.order, before.values(), !self.ascending));
        }
        let reading = if self.ascending != window.from_end {
            Order::Asc
        } else {
            Order::Desc
        };
        let rows = if let [_] = parents {
            for column in &self.order {
                select = select.order_by(*column, reading.clone());
            }
            select.limit(window.limit + 1).all(db).await?
        } else {
            let mut numbering = WindowStatement::partition_by((E::default(), self.parent));
            for column in &self.order {
                numbering.order_by((E::default(), *column), reading.clone());
            }
            let mut rows = select.into_query();
            rows.expr_window_as(
                Expr::cust("ROW_NUMBER()"),
                numbering,
                Alias::new(ROW_IN_PAGE),
            );
            let windowed = Query::select()
                .column(Asterisk)
                .from_subquery(rows, Alias::new("numbered"))
                .and_where(Expr::col(Alias::new(ROW_IN_PAGE)).lte(window.limit as i64 + 1))
                .order_by(Alias::new(ROW_IN_PAGE), Order::Asc)
                .to_owned();
            let statement = db.get_database_backend().build(&windowed);
            E::find().from_raw_sql(statement).all(db).await?
        };
        let mut by_parent: HashMap<Uuid, Vec<E::Model>> = HashMap::new();
        for row in rows {
            by_parent
                .entry((self.parent_of)(&row))
                .or_default()
                .push(row);
        }
        Ok(parents
            .iter()
            .map(|parent| {
                let rows = by_parent.remove(parent).unwrap_or_default();
                (*parent, Page::of_window(rows, window))
            })
            .collect())
    }

    /// How many rows each parent has, in one statement.
    pub async fn counts(
        self,
        db: &impl ConnectionTrait,
        parents: &[Uuid],
    ) -> Result<HashMap<Uuid, u64>, DbErr> {
        if parents.is_empty() {
            return Ok(HashMap::new());
        }
        let counted: Vec<(Uuid, i64)> = self
            .select
            .filter(self.parent.is_in(parents.iter().copied()))
            .select_only()
            .column(self.parent)
            .column_as(
                Expr::expr(Func::count(Expr::col((E::default(), self.parent)))),
                "count",
            )
            .group_by(self.parent)
            .into_tuple()
            .all(db)
            .await?;
        let mut counts: HashMap<Uuid, u64> = parents.iter().map(|p| (*p, 0)).collect();
        counts.extend(counted.into_iter().map(|(p, n)| (p, n as u64)));
        Ok(counts)
    }
}

/// The rows past `values` of the `columns` in (`greater`: ascending)
/// order: `(a, b) > (x, y)` as `a > x OR (a = x AND b > y)`.
fn beyond<C: ColumnTrait>(columns: &[C], values: Vec<Value>, greater: bool) -> Condition {
    let mut condition = Condition::any();
    for (i, (column, value)) in columns.iter().zip(values.iter()).enumerate() {
        let mut step = Condition::all();
        for (earlier, equal) in columns.iter().zip(values.iter()).take(i) {
            step = step.add(earlier.eq(equal.clone()));
        }
        step = step.add(if greater {
            column.gt(value.clone())
        } else {
            column.lt(value.clone())
        });
        condition = condition.add(step);
    }
    condition
}

/// The page size the argument `name` asks for.
fn size_argument(name: &str, size: Option<i32>) -> AppResult<u64> {
    match size {
        None => Ok(DEFAULT_PAGE_SIZE),
        Some(n) if (0..=MAX_PAGE_SIZE as i32).contains(&n) => Ok(n as u64),
        Some(_) => Err(AppError::bad_input(
            name,
            format!("{name} must be from 0 to {MAX_PAGE_SIZE}"),
        )),
    }
}

/// A cursor for the position `key` in a list of `kind`.
pub fn encode_cursor(kind: &str, key: impl fmt::Display) -> String {
    URL_SAFE_NO_PAD.encode(format!("{kind}:{key}"))
}

/// The position a cursor of `kind`, given as `argument`, names;
/// BAD_USER_INPUT on `argument` for anything else.
fn decode_cursor_of<T: FromStr>(argument: &str, kind: &str, cursor: &str) -> AppResult<T> {
    let invalid = || AppError::bad_input(argument, "this cursor is not one this list gave");
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    text.strip_prefix(kind)
        .and_then(|rest| rest.strip_prefix(':'))
        .and_then(|key| key.parse().ok())
        .ok_or_else(invalid)
}

/// A place in a list ordered by (time, id), newest or oldest first: the
/// last row seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Position {
    pub at: DateTime<Utc>,
    pub id: Uuid,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = self.at.timestamp_nanos_opt().unwrap_or_default();
        write!(f, "{nanos}/{}", self.id)
    }
}

impl FromStr for Position {
    type Err = ();

    fn from_str(key: &str) -> Result<Self, ()> {
        let (nanos, id) = key.split_once('/').ok_or(())?;
        Ok(Self {
            at: DateTime::from_timestamp_nanos(nanos.parse().map_err(|_| ())?),
            id: id.parse().map_err(|_| ())?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_decodes_only_for_its_own_kind() {
        let cursor = encode_cursor("event", 42);
        assert_eq!(
            decode_cursor_of::<i32>("after", "event", &cursor).unwrap(),
            42
        );
        assert!(decode_cursor_of::<i32>("after", "execution", &cursor).is_err());
        assert!(decode_cursor_of::<i32>("after", "event", "not base64!").is_err());
    }

    #[test]
    fn a_position_reads_back_as_written() {
        let position = Position {
            at: DateTime::from_timestamp_nanos(1_700_000_000_123_456_789),
            id: Uuid::now_v7(),
        };
        let cursor = encode_cursor("execution", position);
        assert_eq!(
            decode_cursor_of::<Position>("after", "execution", &cursor).unwrap(),
            position
        );
    }

    #[test]
    fn a_window_takes_first_or_last_and_at_most_100() {
        let window = Window::<i32>::parse("event", None, None, None, None).unwrap();
        assert_eq!((window.limit, window.from_end), (20, false));
        let window = Window::<i32>::parse("event", None, None, Some(100), None).unwrap();
        assert_eq!((window.limit, window.from_end), (100, true));
        assert!(Window::<i32>::parse("event", Some(101), None, None, None).is_err());
        assert!(Window::<i32>::parse("event", None, None, Some(-1), None).is_err());
        assert!(Window::<i32>::parse("event", Some(1), None, Some(1), None).is_err());
        let before = encode_cursor("event", 7);
        let window = Window::<i32>::parse("event", None, None, Some(2), Some(&before)).unwrap();
        assert_eq!(window.before, Some(7));
        assert!(Window::<i32>::parse("event", None, Some(&before), None, Some("x")).is_err());
    }

    #[test]
    fn the_extra_row_tells_of_more_in_the_reading_direction() {
        let forward = Window::<i32>::first(2);
        let page = Page::of_window(vec![1, 2, 3], &forward);
        assert_eq!(
            (page.items, page.has_next_page, page.has_previous_page),
            (vec![1, 2], true, false)
        );
        let backward = Window {
            limit: 2,
            after: None,
            before: Some(9),
            from_end: true,
        };
        // Read backwards (newest first), shown in list order.
        let page = Page::of_window(vec![8, 7, 6], &backward);
        assert_eq!(
            (page.items, page.has_next_page, page.has_previous_page),
            (vec![7, 8], true, true)
        );
        let page = Page::of_window(vec![8], &backward);
        assert_eq!((page.items, page.has_previous_page), (vec![8], false));
    }
}
