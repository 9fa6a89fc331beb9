//! Streams wait out a database outage instead of ending.
//!
//! A stream reads the database only to fill a gap (or to start). When that
//! read fails because the database cannot be reached — a restart, a
//! failover — the read is retried with backoff while the stream stays open,
//! and the stream goes on complete once the database answers. Other
//! errors (a row that does not decode) still end the stream.

use std::future::Future;
use std::time::Duration;

use sea_orm::DbErr;

/// The first wait after a failed read.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Whether `err` says the database could not be reached or answer, which
/// a later attempt may not meet.
pub fn is_transient(err: &DbErr) -> bool {
    matches!(
        err,
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) | DbErr::Exec(_) | DbErr::Query(_)
    )
}

/// `attempt`, again after each transient failure (100 ms, doubling to 5 s
/// between attempts), until it succeeds or fails for another reason.
/// `what` names the read in the log.
pub async fn patiently<T, F, Fut>(what: &str, mut attempt: F) -> Result<T, DbErr>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, DbErr>>,
{
    let mut backoff = FIRST_BACKOFF;
    loop {
        match attempt().await {
            Err(err) if is_transient(&err) => {
                tracing::warn!(
                    error = %err,
                    retry_in_ms = u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX),
                    "{what} failed; the stream waits and tries again"
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use sea_orm::RuntimeErr;

    use super::*;

    #[tokio::test]
    async fn a_read_that_fails_while_the_database_is_away_is_tried_again_until_it_answers() {
        let attempts = AtomicU32::new(0);
        let answer = patiently("a test read", || async {
            if attempts.fetch_add(1, Ordering::SeqCst) < 3 {
                Err(DbErr::Conn(RuntimeErr::Internal(
                    "connection refused".into(),
                )))
            } else {
                Ok(7)
            }
        })
        .await;
        assert_eq!(answer.unwrap(), 7);
        assert_eq!(attempts.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn an_error_that_waiting_cannot_fix_ends_at_once() {
        let attempts = AtomicU32::new(0);
        let answer: Result<(), DbErr> = patiently("a test read", || async {
            attempts.fetch_add(1, Ordering::SeqCst);
            Err(DbErr::Custom("a row that does not decode".into()))
        })
        .await;
        assert!(answer.is_err());
        assert_eq!(attempts.load(Ordering::SeqCst), 1);
    }
}
