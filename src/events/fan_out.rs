//! Subscribers that share one resolution per event.
//!
//! Subscribers of the same document with the same variables and the same
//! role would each be sent the same bytes for every event; the transports
//! keep one renderer per such group here and have it resolve and serialize
//! each event once. The registry knows the groups only by key and holds
//! them weakly: a group lives as long as one of its subscribers, and the
//! transports say what a group is (this module never sees GraphQL types).

use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use entity::role::Role;

/// What makes two subscriptions one group: the same operation of the same
/// document, the same variables (as the client sent them) and the same role.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ShareKey {
    pub document: String,
    pub operation_name: Option<String>,
    pub variables: String,
    pub role: Role,
}

/// The instance's shared subscription groups, and how many resolutions
/// they have made.
#[derive(Clone, Default)]
pub struct FanOut {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    groups: Mutex<HashMap<ShareKey, Weak<dyn Any + Send + Sync>>>,
    resolutions: AtomicU64,
}

impl FanOut {
    /// The live group of `key`, or a new one made by `start`. A group of
    /// another type under the same key (a transport changed its mind) is
    /// replaced.
    pub fn join<G: Any + Send + Sync>(
        &self,
        key: ShareKey,
        start: impl FnOnce() -> Arc<G>,
    ) -> Arc<G> {
        let mut groups = self.lock();
        if let Some(group) = groups.get(&key).and_then(Weak::upgrade)
            && let Ok(group) = group.downcast::<G>()
        {
            return group;
        }
        let group = start();
        let erased: Arc<dyn Any + Send + Sync> = group.clone();
        groups.insert(key, Arc::downgrade(&erased));
        group
    }

    /// Forgets `key` if its group has ended (called as a group is dropped;
    /// a group started since under the same key stays).
    pub fn forget(&self, key: &ShareKey) {
        let mut groups = self.lock();
        if groups
            .get(key)
            .is_some_and(|group| group.strong_count() == 0)
        {
            groups.remove(key);
        }
    }

    /// Counts one event resolved and serialized for a group.
    pub fn resolved(&self) {
        self.inner.resolutions.fetch_add(1, Ordering::Relaxed);
    }

    /// Events resolved for groups since start.
    pub fn resolutions(&self) -> u64 {
        self.inner.resolutions.load(Ordering::Relaxed)
    }

    /// Groups with at least one subscriber.
    pub fn groups(&self) -> usize {
        self.lock()
            .values()
            .filter(|group| group.strong_count() > 0)
            .count()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ShareKey, Weak<dyn Any + Send + Sync>>> {
        self.inner
            .groups
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(role: Role) -> ShareKey {
        ShareKey {
            document: "subscription { a }".to_owned(),
            operation_name: None,
            variables: "{}".to_owned(),
            role,
        }
    }

    #[test]
    fn subscribers_with_the_same_key_join_one_group_while_it_lives() {
        let fan_out = FanOut::default();
        let first = fan_out.join(key(Role::Viewer), || Arc::new(1_u8));
        let second = fan_out.join(key(Role::Viewer), || Arc::new(2_u8));
        let admin = fan_out.join(key(Role::Admin), || Arc::new(3_u8));
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(*admin, 3);
        assert_eq!(fan_out.groups(), 2);

        drop((first, second));
        fan_out.forget(&key(Role::Viewer));
        assert_eq!(fan_out.groups(), 1);
        let again = fan_out.join(key(Role::Viewer), || Arc::new(4_u8));
        assert_eq!(*again, 4);
    }

    #[test]
    fn forgetting_a_live_group_keeps_it() {
        let fan_out = FanOut::default();
        let group = fan_out.join(key(Role::Viewer), || Arc::new(1_u8));
        fan_out.forget(&key(Role::Viewer));
        let joined = fan_out.join(key(Role::Viewer), || Arc::new(2_u8));
        assert!(Arc::ptr_eq(&group, &joined));
    }
}
