//! Forward pagination for lists: `first` (default 20, at most 100) and an
//! opaque `after` cursor that encodes the position of the last item seen, so
//! a page is a keyset query and stays stable while rows are inserted.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

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

/// A cursor for a position written as `kind:key`.
pub fn encode_cursor(kind: &str, key: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{kind}:{key}"))
}

/// The key of a cursor of `kind`; BAD_USER_INPUT on `after` otherwise.
pub fn decode_cursor(kind: &str, cursor: &str) -> AppResult<String> {
    let invalid = || AppError::bad_input("after", "this cursor is not one this list gave");
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    text.strip_prefix(kind)
        .and_then(|rest| rest.strip_prefix(':'))
        .map(str::to_owned)
        .ok_or_else(invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_decodes_only_for_its_own_kind() {
        let cursor = encode_cursor("event", "42");
        assert_eq!(decode_cursor("event", &cursor).unwrap(), "42");
        assert!(decode_cursor("execution", &cursor).is_err());
        assert!(decode_cursor("event", "not base64!").is_err());
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
