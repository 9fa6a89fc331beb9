//! Ending open connections and streams whose access ended: the one place
//! that decides, for open sockets and subscriptions, whether a session, an
//! API key or a membership still grants what it granted.
//!
//! A WebSocket is authorized once, at `connection_init`, and a subscription
//! once, when it starts; both may stay open for hours. Two kinds of watch
//! keep them honest:
//!
//! - a connection watches its credential (a session or an API key): when it
//!   is revoked, expires or disappears, the connection closes;
//! - a subscription of a member watches their membership: when it is
//!   removed or its role lowered, the subscription ends with
//!   [`AppError::AccessChanged`] (FORBIDDEN), on which a WebSocket closes
//!   with 4403.
//!
//! Changes reach every instance on the control topic. As a fallback for a
//! lost message, each instance re-checks everything it watches every few
//! seconds, with one batched query per kind.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use entity::role::Role;
use entity::{api_key, membership, user_session};
use futures::{Stream, StreamExt};
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QuerySelect};
use tokio::sync::watch;
use uuid::Uuid;

use crate::clock::Clock;
use crate::error::{AppError, AppResult};
use crate::events::bus::{BusMessage, BusSignal, Subscription};
use crate::orgs::policy;

/// Why access ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// Revoked, or deleted with its user or organization.
    Revoked,
    /// Its own expiry passed.
    Expired,
    /// A membership was removed or its role lowered.
    Changed,
}

/// Watched keys, each with the reason its access ended once it has.
struct Registry<K> {
    watched: Arc<Mutex<HashMap<K, watch::Sender<Option<Ending>>>>>,
}

impl<K> Clone for Registry<K> {
    fn clone(&self) -> Self {
        Self {
            watched: self.watched.clone(),
        }
    }
}

impl<K> Default for Registry<K> {
    fn default() -> Self {
        Self {
            watched: Arc::default(),
        }
    }
}

/// One watch on a key; dropping it stops watching.
pub struct Watch<K: Eq + Hash + Clone> {
    key: K,
    ended: watch::Receiver<Option<Ending>>,
    registry: Registry<K>,
}

impl<K: Eq + Hash + Clone> Watch<K> {
    /// Resolves once access has ended (at once if it already has), with
    /// why.
    pub async fn ended(&mut self) -> Ending {
        match self.ended.wait_for(Option::is_some).await {
            Ok(ending) => ending.unwrap_or(Ending::Revoked),
            // The registry is gone with its instance: nothing is vouched for.
            Err(_) => Ending::Revoked,
        }
    }
}

impl<K: Eq + Hash + Clone> Drop for Watch<K> {
    fn drop(&mut self) {
        let mut watched = self.registry.lock();
        // This watch's receiver is still alive here, so "only us" is 1.
        if watched
            .get(&self.key)
            .is_some_and(|sender| sender.receiver_count() <= 1)
        {
            watched.remove(&self.key);
        }
    }
}

impl<K: Eq + Hash + Clone> Registry<K> {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, watch::Sender<Option<Ending>>>> {
        self.watched
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn watch(&self, key: K) -> Watch<K> {
        let ended = self
            .lock()
            .entry(key.clone())
            .or_insert_with(|| watch::channel(None).0)
            .subscribe();
        Watch {
            key,
            ended,
            registry: self.clone(),
        }
    }

    fn end(&self, keys: impl IntoIterator<Item = (K, Ending)>) {
        let watched = self.lock();
        for (key, ending) in keys {
            if let Some(sender) = watched.get(&key) {
                sender.send_if_modified(|held| {
                    let first = held.is_none();
                    if first {
                        *held = Some(ending);
                    }
                    first
                });
            }
        }
    }

    fn keys(&self) -> Vec<K> {
        self.lock().keys().cloned().collect()
    }
}

/// A member's access to an organization as a subscription was granted it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MembershipGrant {
    pub organization_id: Uuid,
    pub user_id: Uuid,
    pub role: Role,
}

/// A connection's watch on its credential.
pub type CredentialWatch = Watch<Uuid>;
/// A subscription's watch on its member's membership.
pub type MembershipWatch = Watch<MembershipGrant>;

/// The credentials and memberships that connections and subscriptions on
/// this instance were authorized with.
#[derive(Clone, Default)]
pub struct Revocations {
    /// Session ids and API key ids (both UUID v7, so they never collide).
    credentials: Registry<Uuid>,
    memberships: Registry<MembershipGrant>,
}

impl Revocations {
    /// Starts watching a session or an API key for a connection.
    pub fn watch_credential(&self, credential_id: Uuid) -> CredentialWatch {
        self.credentials.watch(credential_id)
    }

    /// Starts watching a membership for a subscription.
    pub fn watch_membership(&self, grant: MembershipGrant) -> MembershipWatch {
        self.memberships.watch(grant)
    }

    /// Closes the connections of these sessions or API keys on this instance.
    pub fn revoke(&self, credential_ids: &[Uuid]) {
        self.credentials
            .end(credential_ids.iter().map(|id| (*id, Ending::Revoked)));
    }

    /// Applies control messages as they come, and re-checks everything
    /// watched every `interval`, until `stop`.
    pub async fn run(
        self,
        db: DatabaseConnection,
        clock: Clock,
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
                    Some(BusSignal::Message(BusMessage::ApiKeysRevoked { key_ids })) => {
                        self.revoke(&key_ids);
                    }
                    Some(BusSignal::Message(BusMessage::MembershipsChanged { organization_id })) => {
                        self.report(self.recheck_memberships(&db, Some(organization_id)).await);
                    }
                    // A lag or a reconnect may have hidden a change.
                    Some(BusSignal::Lagged | BusSignal::Reconnected) => self.recheck(&db, &clock).await,
                    Some(BusSignal::Message(_)) => {}
                    // Without a bus, the re-check alone keeps watch.
                    None => bus_open = false,
                },
                _ = ticker.tick() => self.recheck(&db, &clock).await,
                _ = stop.changed() => return,
            }
        }
    }

    fn report(&self, result: Result<(), sea_orm::DbErr>) {
        if let Err(err) = result {
            tracing::warn!(error = %err, "re-checking open connections failed");
        }
    }

    async fn recheck(&self, db: &DatabaseConnection, clock: &Clock) {
        self.report(self.recheck_credentials(db, clock).await);
        self.report(self.recheck_memberships(db, None).await);
    }

    /// Ends the watched credentials that are no longer live: revoked,
    /// expired or deleted (with their user or organization).
    async fn recheck_credentials(
        &self,
        db: &DatabaseConnection,
        clock: &Clock,
    ) -> Result<(), sea_orm::DbErr> {
        let ids = self.credentials.keys();
        if ids.is_empty() {
            return Ok(());
        }
        let now = clock.now();
        // Each watched credential that still exists, with its revocation
        // and expiry: sessions, then API keys.
        type Liveness = (Uuid, Option<DateTime<Utc>>, Option<DateTime<Utc>>);
        let sessions: Vec<Liveness> = user_session::Entity::find()
            .select_only()
            .columns([
                user_session::Column::Id,
                user_session::Column::RevokedAt,
                user_session::Column::ExpiresAt,
            ])
            .filter(user_session::Column::Id.is_in(ids.iter().copied()))
            .into_tuple()
            .all(db)
            .await?;
        let keys: Vec<Liveness> = api_key::Entity::find()
            .select_only()
            .columns([
                api_key::Column::Id,
                api_key::Column::RevokedAt,
                api_key::Column::ExpiresAt,
            ])
            .filter(api_key::Column::Id.is_in(ids.iter().copied()))
            .into_tuple()
            .all(db)
            .await?;
        let found: HashMap<Uuid, (bool, Option<DateTime<Utc>>)> = sessions
            .into_iter()
            .chain(keys)
            .map(|(id, revoked_at, expires_at)| (id, (revoked_at.is_some(), expires_at)))
            .collect();
        self.credentials
            .end(ids.into_iter().filter_map(|id| match found.get(&id) {
                None | Some((true, _)) => Some((id, Ending::Revoked)),
                Some((false, Some(expires_at))) if *expires_at <= now => {
                    Some((id, Ending::Expired))
                }
                Some((false, _)) => None,
            }));
        Ok(())
    }

    /// Ends the watched memberships (of one organization, or all) that are
    /// gone or now hold a lower role than they were granted with.
    async fn recheck_memberships(
        &self,
        db: &DatabaseConnection,
        organization_id: Option<Uuid>,
    ) -> Result<(), sea_orm::DbErr> {
        let grants: Vec<MembershipGrant> = self
            .memberships
            .keys()
            .into_iter()
            .filter(|grant| organization_id.is_none_or(|id| grant.organization_id == id))
            .collect();
        if grants.is_empty() {
            return Ok(());
        }
        let organizations: HashSet<Uuid> = grants.iter().map(|g| g.organization_id).collect();
        let users: HashSet<Uuid> = grants.iter().map(|g| g.user_id).collect();
        let current: HashMap<(Uuid, Uuid), Role> = membership::Entity::find()
            .filter(membership::Column::OrganizationId.is_in(organizations))
            .filter(membership::Column::UserId.is_in(users))
            .all(db)
            .await?
            .into_iter()
            .map(|m| ((m.organization_id, m.user_id), m.role))
            .collect();
        self.memberships.end(
            grants
                .into_iter()
                .filter(|grant| {
                    current
                        .get(&(grant.organization_id, grant.user_id))
                        .is_none_or(|role| policy::rank(*role) < policy::rank(grant.role))
                })
                .map(|grant| (grant, Ending::Changed)),
        );
        Ok(())
    }
}

/// Raised when a stream of a request ended because its member's access
/// did. Transports read it (a WebSocket closes 4403 `access changed`)
/// rather than parse the error the stream ended with.
#[derive(Clone, Debug, Default)]
pub struct AccessEnded(Arc<std::sync::OnceLock<Ending>>);

impl AccessEnded {
    /// Records why access ended; the first reason stays.
    pub fn raise(&self, ending: Ending) {
        let _ = self.0.set(ending);
    }

    /// Why access ended, once it has.
    pub fn get(&self) -> Option<Ending> {
        self.0.get().copied()
    }
}

/// `stream` until `watch` sees the membership end, then one
/// [`AppError::AccessChanged`] and the end, with `ended` raised. A stream
/// that ends by itself ends as it would.
pub fn until_membership_ends<T: Send + 'static>(
    stream: impl Stream<Item = AppResult<T>> + Send + 'static,
    watch: Option<MembershipWatch>,
    ended: AccessEnded,
) -> impl Stream<Item = AppResult<T>> + Send + 'static {
    type Inner<T> = Pin<Box<dyn Stream<Item = AppResult<T>> + Send>>;
    let Some(watch) = watch else {
        return stream.boxed();
    };
    let state: Option<(Inner<T>, MembershipWatch)> = Some((stream.boxed(), watch));
    futures::stream::unfold(state, move |state| {
        let ended = ended.clone();
        async move {
            let (mut stream, mut watch) = state?;
            tokio::select! {
                biased;
                ending = watch.ended() => {
                    ended.raise(ending);
                    Some((Err(AppError::AccessChanged), None))
                }
                item = stream.next() => item.map(|item| (item, Some((stream, watch)))),
            }
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_watch_ends_when_its_credential_is_revoked_and_not_for_others() {
        let revocations = Revocations::default();
        let (mine, other) = (Uuid::now_v7(), Uuid::now_v7());
        let mut watch = revocations.watch_credential(mine);
        revocations.revoke(&[other]);
        let early = tokio::time::timeout(Duration::from_millis(50), watch.ended()).await;
        assert!(
            early.is_err(),
            "another credential's revocation ended this watch"
        );
        revocations.revoke(&[mine]);
        tokio::time::timeout(Duration::from_secs(1), watch.ended())
            .await
            .expect("the watch ended");
    }

    #[tokio::test]
    async fn dropping_the_last_watch_of_a_credential_forgets_it() {
        let revocations = Revocations::default();
        let session = Uuid::now_v7();
        let first = revocations.watch_credential(session);
        let second = revocations.watch_credential(session);
        drop(first);
        assert_eq!(revocations.credentials.keys(), [session]);
        drop(second);
        assert!(revocations.credentials.keys().is_empty());
    }

    #[tokio::test]
    async fn a_stream_ends_with_forbidden_once_its_membership_ends() {
        let revocations = Revocations::default();
        let grant = MembershipGrant {
            organization_id: Uuid::now_v7(),
            user_id: Uuid::now_v7(),
            role: Role::Editor,
        };
        let watch = revocations.watch_membership(grant);
        let endless = futures::stream::pending::<AppResult<u32>>();
        let ended = AccessEnded::default();
        let mut stream = Box::pin(until_membership_ends(endless, Some(watch), ended.clone()));
        assert_eq!(ended.get(), None);
        revocations.memberships.end([(grant, Ending::Changed)]);
        let item = tokio::time::timeout(Duration::from_secs(1), stream.next())
            .await
            .expect("the stream answered");
        assert!(matches!(item, Some(Err(AppError::AccessChanged))));
        assert_eq!(ended.get(), Some(Ending::Changed));
        assert!(stream.next().await.is_none());
    }

    #[tokio::test]
    async fn a_stream_that_finishes_by_itself_ends_without_an_error() {
        let revocations = Revocations::default();
        let grant = MembershipGrant {
            organization_id: Uuid::now_v7(),
            user_id: Uuid::now_v7(),
            role: Role::Viewer,
        };
        let watch = revocations.watch_membership(grant);
        let items = futures::stream::iter([Ok(1), Ok(2)]);
        let ended = AccessEnded::default();
        let collected: Vec<u32> = until_membership_ends(items, Some(watch), ended.clone())
            .map(|item| item.expect("no error"))
            .collect()
            .await;
        assert_eq!(collected, [1, 2]);
        assert_eq!(ended.get(), None);
    }
}
