//! Commit watermarks, and the cursor a dashboard resumes its stream from.
//!
//! Timestamps cannot say which events a dashboard has seen: two workers
//! commit in whatever order their transactions finish, so an event stamped
//! earlier can become visible later. A [`Watermark`] says exactly which
//! events had committed at one moment. On PostgreSQL it is a transaction
//! snapshot (`pg_current_snapshot()`: every transaction id below `xmin` had
//! finished, none from `xmax` on had, and `in_progress` lists those between
//! still running), and an event's `position` is the id of the transaction
//! that wrote it. On SQLite, where one writer commits at a time, an event's
//! position is a counter bumped as it is written, and a watermark is that
//! counter's value: it covers every position up to it.
//!
//! A [`StreamCursor`] is what a dashboard has seen: every admitted event its
//! watermark covers, and, per execution, the newest seq it was sent beyond
//! that. It is opaque to clients (URL-safe base64 of a small binary record),
//! holds no secret and reads the same on every instance.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, TimeDelta, Utc};
use sea_orm::{ConnectionTrait, DatabaseBackend, DbErr, Statement};
use uuid::Uuid;

/// Which database a watermark was read from: a cursor of one means nothing
/// on the other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Postgres,
    Sqlite,
}

/// Which events had committed at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Watermark {
    source: Source,
    xmin: i64,
    xmax: i64,
    in_progress: Vec<i64>,
}

/// The SQL expression that gives an event its position as it is written.
pub fn position_of_this_write(backend: DatabaseBackend) -> &'static str {
    match backend {
        DatabaseBackend::Postgres => "pg_current_xact_id()::text::bigint",
        _ => "(SELECT last FROM event_positions WHERE id = 1) + 1",
    }
}

impl Watermark {
    /// What has committed now.
    pub async fn now(conn: &impl ConnectionTrait) -> Result<Self, DbErr> {
        let backend = conn.get_database_backend();
        match backend {
            DatabaseBackend::Postgres => {
                let row = conn
                    .query_one_raw(Statement::from_string(
                        backend,
                        "SELECT pg_current_snapshot()::text AS snapshot",
                    ))
                    .await?
                    .ok_or_else(|| DbErr::Custom("no snapshot".to_owned()))?;
                let text: String = row.try_get("", "snapshot")?;
                Self::parse_snapshot(&text)
                    .ok_or_else(|| DbErr::Custom(format!("unreadable snapshot {text:?}")))
            }
            _ => {
                let row = conn
                    .query_one_raw(Statement::from_string(
                        backend,
                        "SELECT last FROM event_positions WHERE id = 1",
                    ))
                    .await?
                    .ok_or_else(|| DbErr::Custom("no event position counter".to_owned()))?;
                let last: i64 = row.try_get("", "last")?;
                Ok(Self::counter(last))
            }
        }
    }

    /// A SQLite watermark: everything up to `last` has committed.
    fn counter(last: i64) -> Self {
        Self {
            source: Source::Sqlite,
            xmin: last + 1,
            xmax: last + 1,
            in_progress: Vec::new(),
        }
    }

    /// Reads `pg_snapshot`'s text form, `xmin:xmax:xip,xip,…`.
    fn parse_snapshot(text: &str) -> Option<Self> {
        let mut parts = text.trim().splitn(3, ':');
        let xmin = parts.next()?.parse().ok()?;
        let xmax = parts.next()?.parse().ok()?;
        let in_progress = match parts.next()? {
            "" => Vec::new(),
            list => list
                .split(',')
                .map(|xid| xid.parse().ok())
                .collect::<Option<Vec<i64>>>()?,
        };
        Some(Self {
            source: Source::Postgres,
            xmin,
            xmax,
            in_progress,
        })
    }

    pub fn source(&self) -> Source {
        self.source
    }

    /// Whether the event at `position` had committed. Position 0 is
    /// unknown (an event from an instance that does not send it): covered
    /// by none.
    pub fn covers(&self, position: i64) -> bool {
        position != 0
            && (position < self.xmin
                || (position < self.xmax && !self.in_progress.contains(&position)))
    }

    /// The positions it does not cover: every one from the first, and the
    /// listed ones below it.
    pub fn uncovered(&self) -> (i64, &[i64]) {
        (self.xmax, &self.in_progress)
    }
}

/// Why a cursor could not be read.
#[derive(Debug, PartialEq, Eq)]
pub struct UnreadableCursor;

/// What a dashboard has seen, to resume its stream from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamCursor {
    pub issued_at: DateTime<Utc>,
    /// Every admitted event it covers was sent.
    pub watermark: Watermark,
    /// The newest seq sent per execution, of events it does not cover.
    pub seen: Vec<(Uuid, i32)>,
}

/// The format version written first.
const VERSION: u8 = 1;
/// Longest cursor read, in characters.
const MAX_ENCODED: usize = 64 * 1024;

impl StreamCursor {
    /// Whether it was issued within `window` before `now` (and not in the
    /// future, beyond a few minutes of clock skew between instances).
    pub fn is_usable(&self, window: TimeDelta, now: DateTime<Utc>) -> bool {
        self.issued_at <= now + TimeDelta::minutes(5) && now - self.issued_at <= window
    }

    /// The opaque text clients hold.
    pub fn encode(&self) -> String {
        let mut bytes =
            Vec::with_capacity(32 + 8 * self.watermark.in_progress.len() + 20 * self.seen.len());
        bytes.push(VERSION);
        bytes.push(match self.watermark.source {
            Source::Postgres => b'p',
            Source::Sqlite => b's',
        });
        bytes.extend(self.issued_at.timestamp_millis().to_be_bytes());
        bytes.extend(self.watermark.xmin.to_be_bytes());
        bytes.extend(self.watermark.xmax.to_be_bytes());
        put_len(&mut bytes, self.watermark.in_progress.len());
        for xid in &self.watermark.in_progress {
            bytes.extend(xid.to_be_bytes());
        }
        put_len(&mut bytes, self.seen.len());
        for (execution_id, seq) in &self.seen {
            bytes.extend(execution_id.as_bytes());
            bytes.extend(seq.to_be_bytes());
        }
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Reads what [`Self::encode`] wrote.
    pub fn decode(text: &str) -> Result<Self, UnreadableCursor> {
        if text.len() > MAX_ENCODED {
            return Err(UnreadableCursor);
        }
        let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| UnreadableCursor)?;
        let mut reader = Reader(&bytes);
        if reader.take::<1>()? != [VERSION] {
            return Err(UnreadableCursor);
        }
        let source = match reader.take::<1>()? {
            [b'p'] => Source::Postgres,
            [b's'] => Source::Sqlite,
            _ => return Err(UnreadableCursor),
        };
        let issued_at = DateTime::from_timestamp_millis(i64::from_be_bytes(reader.take()?))
            .ok_or(UnreadableCursor)?;
        let xmin = i64::from_be_bytes(reader.take()?);
        let xmax = i64::from_be_bytes(reader.take()?);
        let in_progress = (0..reader.len()?)
            .map(|_| reader.take().map(i64::from_be_bytes))
            .collect::<Result<Vec<_>, _>>()?;
        let seen = (0..reader.len()?)
            .map(|_| {
                let id = Uuid::from_bytes(reader.take()?);
                Ok((id, i32::from_be_bytes(reader.take()?)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if !reader.0.is_empty() || xmin > xmax {
            return Err(UnreadableCursor);
        }
        Ok(Self {
            issued_at,
            watermark: Watermark {
                source,
                xmin,
                xmax,
                in_progress,
            },
            seen,
        })
    }
}

fn put_len(bytes: &mut Vec<u8>, len: usize) {
    let len = u32::try_from(len).unwrap_or(u32::MAX);
    bytes.extend(len.to_be_bytes());
}

/// Reads a cursor's bytes front to back.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], UnreadableCursor> {
        let (head, rest) = self.0.split_first_chunk::<N>().ok_or(UnreadableCursor)?;
        self.0 = rest;
        Ok(*head)
    }

    /// A count, which cannot exceed what the remaining bytes could hold.
    fn len(&mut self) -> Result<usize, UnreadableCursor> {
        let len = u32::from_be_bytes(self.take()?) as usize;
        if len > self.0.len() {
            return Err(UnreadableCursor);
        }
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_covers_what_finished_before_it_and_nothing_still_running() {
        let snapshot = Watermark::parse_snapshot("100:110:103,107").unwrap();
        assert!(snapshot.covers(99));
        assert!(!snapshot.covers(0));
        assert!(snapshot.covers(104));
        assert!(!snapshot.covers(103));
        assert!(!snapshot.covers(107));
        assert!(!snapshot.covers(110));
        assert!(Watermark::parse_snapshot("5:5:").unwrap().covers(4));
        assert_eq!(Watermark::parse_snapshot("5:x:"), None);
    }

    #[test]
    fn a_counter_covers_every_position_up_to_it() {
        let counter = Watermark::counter(41);
        assert!(counter.covers(41));
        assert!(!counter.covers(42));
    }

    #[test]
    fn a_cursor_reads_back_as_it_was_written() {
        let cursor = StreamCursor {
            issued_at: DateTime::from_timestamp_millis(1_765_000_000_123).unwrap(),
            watermark: Watermark::parse_snapshot("100:110:103,107").unwrap(),
            seen: vec![(Uuid::now_v7(), 4), (Uuid::now_v7(), 9)],
        };
        assert_eq!(StreamCursor::decode(&cursor.encode()), Ok(cursor));
    }

    #[test]
    fn a_cursor_cut_short_padded_or_of_another_format_is_unreadable() {
        let cursor = StreamCursor {
            issued_at: Utc::now(),
            watermark: Watermark::counter(7),
            seen: vec![(Uuid::now_v7(), 2)],
        };
        let bytes = URL_SAFE_NO_PAD.decode(cursor.encode()).unwrap();
        let short = URL_SAFE_NO_PAD.encode(&bytes[..bytes.len() - 1]);
        let long = URL_SAFE_NO_PAD.encode([bytes.as_slice(), &[0]].concat());
        let mut other = bytes.clone();
        other[0] = 2;
        for text in [
            short,
            long,
            URL_SAFE_NO_PAD.encode(other),
            "not a cursor!".to_owned(),
            "A".repeat(MAX_ENCODED + 1),
        ] {
            assert_eq!(
                StreamCursor::decode(&text),
                Err(UnreadableCursor),
                "{text:.40}"
            );
        }
    }

    #[test]
    fn a_count_larger_than_the_bytes_left_is_refused_before_anything_is_allocated() {
        let mut bytes = vec![VERSION, b's'];
        bytes.extend(0i64.to_be_bytes());
        bytes.extend(1i64.to_be_bytes());
        bytes.extend(1i64.to_be_bytes());
        bytes.extend(u32::MAX.to_be_bytes());
        assert_eq!(
            StreamCursor::decode(&URL_SAFE_NO_PAD.encode(bytes)),
            Err(UnreadableCursor)
        );
    }
}
