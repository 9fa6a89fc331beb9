//! Closing the open connections of sessions that end.
//!
//! A WebSocket is authorized once, at `connection_init`, and may stay open
//! for hours; ending its session must end it too. Each connection watches
//! its session here. A revocation reaches every instance on the control
//! topic; as a fallback for a lost message, one batched query per instance
//! re-checks every watched session every few seconds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use entity::user_session;
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QuerySelect};
use tokio::sync::watch;
use uuid::Uuid;

use super::bus::{BusMessage, BusSignal, Subscription};

/// The sessions connections on this instance are open for.
#[derive(Clone, Default)]
pub struct Revocations {
    watched: Arc<Mutex<HashMap<Uuid, watch::Sender<bool>>>>,
}

/// One connection's watch on its session; dropping it stops watching.
pub struct SessionWatch {
    session_id: Uuid,
    revoked: watch::Receiver<bool>,
    registry: Revocations,
}

impl SessionWatch {
    /// Resolves once the session has ended (at once if it already has).
    pub async fn ended(&mut self) {
        let _ = self.revoked.wait_for(|revoked| *revoked).await;
    }
}

impl Drop for SessionWatch {
    fn drop(&mut self) {
        let mut watched = self.registry.lock();
        // This watch's receiver is still alive here, so "only us" is 1.
        if watched
            .get(&self.session_id)
            .is_some_and(|sender| sender.receiver_count() <= 1)
        {
            watched.remove(&self.session_id);
        }
    }
}

impl Revocations {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, watch::Sender<bool>>> {
        self.watched
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Starts watching `session_id` for a connection.
    pub fn watch(&self, session_id: Uuid) -> SessionWatch {
        let revoked = self
            .lock()
            .entry(session_id)
            .or_insert_with(|| watch::channel(false).0)
            .subscribe();
        SessionWatch {
            session_id,
            revoked,
            registry: self.clone(),
        }
    }

    /// Ends the connections of these sessions on this instance.
    pub fn revoke(&self, session_ids: &[Uuid]) {
        let watched = self.lock();
        for id in session_ids {
            if let Some(sender) = watched.get(id) {
                let _ = sender.send(true);
            }
        }
    }

    fn watched_ids(&self) -> Vec<Uuid> {
        self.lock().keys().copied().collect()
    }

    /// Applies revocations from the control topic as they come, and
    /// re-checks the watched sessions every `interval`, until `stop`.
    pub async fn run(
        self,
        db: DatabaseConnection,
        mut control: Subscription,
        interval: Duration,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut bus_open = true;
        loop {
            tokio::select! {
                signal = control.recv(), if bus_open => match signal {
                    Some(BusSignal::Message(BusMessage::SessionsRevoked { session_ids })) => {
                        self.revoke(&session_ids);
                    }
                    // A lag or a reconnect may have hidden a revocation.
                    Some(BusSignal::Lagged | BusSignal::Reconnected) => self.recheck(&db).await,
                    Some(BusSignal::Message(_)) => {}
                    // Without a bus, the re-check alone keeps watch.
                    None => bus_open = false,
                },
                _ = ticker.tick() => self.recheck(&db).await,
                _ = stop.changed() => return,
            }
        }
    }

    /// Ends the watched sessions the database says have ended.
    async fn recheck(&self, db: &DatabaseConnection) {
        let ids = self.watched_ids();
        if ids.is_empty() {
            return;
        }
        let ended: Result<Vec<Uuid>, _> = user_session::Entity::find()
            .select_only()
            .column(user_session::Column::Id)
            .filter(user_session::Column::Id.is_in(ids))
            .filter(user_session::Column::RevokedAt.is_not_null())
            .into_tuple()
            .all(db)
            .await;
        match ended {
            Ok(ended) => self.revoke(&ended),
            Err(err) => tracing::warn!(error = %err, "re-checking open sessions failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_watch_ends_when_its_session_is_revoked_and_not_for_others() {
        let revocations = Revocations::default();
        let (mine, other) = (Uuid::now_v7(), Uuid::now_v7());
        let mut watch = revocations.watch(mine);
        revocations.revoke(&[other]);
        let early = tokio::time::timeout(Duration::from_millis(50), watch.ended()).await;
        assert!(
            early.is_err(),
            "another session's revocation ended this watch"
        );
        revocations.revoke(&[mine]);
        tokio::time::timeout(Duration::from_secs(1), watch.ended())
            .await
            .expect("the watch ended");
    }

    #[tokio::test]
    async fn dropping_the_last_watch_of_a_session_forgets_it() {
        let revocations = Revocations::default();
        let session = Uuid::now_v7();
        let first = revocations.watch(session);
        let second = revocations.watch(session);
        drop(first);
        assert_eq!(revocations.watched_ids(), [session]);
        drop(second);
        assert!(revocations.watched_ids().is_empty());
    }
}
