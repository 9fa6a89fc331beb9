//! Forward pagination for lists: `first` (default 20, at most 100) and an
//! opaque `after` cursor that encodes the position of the last item seen, so
//! a page is a keyset query and stays stable while rows are inserted.

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, Condition};
use uuid::Uuid;

use crate::error::{AppError, AppResult};

/// Items in a page when `first` is not given.
pub const DEFAULT_PAGE_SIZE: u64 = 20;
/// Most items a page may hold.
pub const MAX_PAGE_SIZE: u64 = 100;

/// One page of a list, in list order.
#[derive(Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Whether items follow the last one.
    pub has_next_page: bool,
}

impl<T> Page<T> {
    /// A page from up to `limit + 1` rows read: the extra row only tells
    /// that more follow.
    pub fn from_rows(mut rows: Vec<T>, limit: u64) -> Self {
        let has_next_page = rows.len() as u64 > limit;
        rows.truncate(limit as usize);
        Self {
            items: rows,
            has_next_page,
        }
    }
}

/// The page size `first` asks for.
pub fn page_size(first: Option<i32>) -> AppResult<u64> {
    match first {
        None => Ok(DEFAULT_PAGE_SIZE),
        Some(n) if (0..=MAX_PAGE_SIZE as i32).contains(&n) => Ok(n as u64),
        Some(_) => Err(AppError::bad_input(
            "first",
            format!("first must be from 0 to {MAX_PAGE_SIZE}"),
        )),
    }
}

/// A cursor for the position `key` in a list of `kind`.
pub fn encode_cursor(kind: &str, key: impl fmt::Display) -> String {
    URL_SAFE_NO_PAD.encode(format!("{kind}:{key}"))
}

/// The position a cursor of `kind` names; BAD_USER_INPUT on `after` for
/// anything else.
pub fn decode_cursor<T: FromStr>(kind: &str, cursor: &str) -> AppResult<T> {
    let invalid = || AppError::bad_input("after", "this cursor is not one this list gave");
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    text.strip_prefix(kind)
        .and_then(|rest| rest.strip_prefix(':'))
        .and_then(|key| key.parse().ok())
        .ok_or_else(invalid)
}

/// `after` decoded, when given.
pub fn decode_after<T: FromStr>(kind: &str, after: Option<&str>) -> AppResult<Option<T>> {
    after.map(|cursor| decode_cursor(kind, cursor)).transpose()
}

/// A place in a list ordered by (time, id), newest or oldest first: the
/// last row seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    pub at: DateTime<Utc>,
    pub id: Uuid,
}

impl Position {
    /// The rows after this position in (`at_column` desc, `id_column` desc)
    /// order, for a keyset query.
    pub fn rows_after(self, at_column: impl ColumnTrait, id_column: impl ColumnTrait) -> Condition {
        Condition::any().add(at_column.lt(self.at)).add(
            Condition::all()
                .add(at_column.eq(self.at))
                .add(id_column.lt(self.id)),
        )
    }

    /// The rows after this position in (`at_column` asc, `id_column` asc)
    /// order, for an oldest-first keyset query.
    pub fn rows_after_ascending(
        self,
        at_column: impl ColumnTrait,
        id_column: impl ColumnTrait,
    ) -> Condition {
        Condition::any().add(at_column.gt(self.at)).add(
            Condition::all()
                .add(at_column.eq(self.at))
                .add(id_column.gt(self.id)),
        )
    }
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
        assert_eq!(decode_cursor::<i32>("event", &cursor).unwrap(), 42);
        assert!(decode_cursor::<i32>("execution", &cursor).is_err());
        assert!(decode_cursor::<i32>("event", "not base64!").is_err());
    }

    #[test]
    fn a_position_reads_back_as_written() {
        let position = Position {
            at: DateTime::from_timestamp_nanos(1_700_000_000_123_456_789),
            id: Uuid::now_v7(),
        };
        let cursor = encode_cursor("execution", position);
        assert_eq!(
            decode_cursor::<Position>("execution", &cursor).unwrap(),
            position
        );
    }

    #[test]
    fn the_page_size_defaults_to_20_and_is_at_most_100() {
        assert_eq!(page_size(None).unwrap(), 20);
        assert_eq!(page_size(Some(100)).unwrap(), 100);
        assert!(page_size(Some(101)).is_err());
        assert!(page_size(Some(-1)).is_err());
    }

    #[test]
    fn the_extra_row_sets_has_next_page_and_is_dropped() {
        let page = Page::from_rows(vec![1, 2, 3], 2);
        assert_eq!((page.items, page.has_next_page), (vec![1, 2], true));
        let page = Page::from_rows(vec![1, 2], 2);
        assert_eq!((page.items, page.has_next_page), (vec![1, 2], false));
    }
}
