//! Batches the loads asked for in one pass over a query's fields into one
//! call of a loader (an async-graphql `Loader`).
//!
//! async-graphql resolves the items of a list, and their fields, by polling
//! them together, so the items of a list ask for their rows close
//! together: within one poll of the request (a pass), or a few when
//! `FuturesUnordered` cuts polls short (it does once two of its futures
//! woke themselves, and a nested one that polled all its futures counts as
//! woken). The transports run every operation (and subscription stream) in
//! [`InPasses`], which ends a pass whenever a poll of it returns (outside
//! async-graphql's extensions, whose hooks would cost a boxed future per
//! field).
//! The first load of a key type opens a batch, later loads join it, and
//! the batch runs the loader once a pass has settled: no load opened or
//! joined any batch of the request in it, no batch finished in it, none
//! was running, and every load of a finished batch has resumed (a
//! `FuturesUnordered` may leave some for later passes). So
//! every item that was going to ask has asked, and the rows that running
//! batches bring (and the loads their fields then make) are waited for:
//! the request's loads run in waves, one statement per key type and
//! wave. async-graphql's own DataLoader closes a batch after a timer (1 ms)
//! instead, which splits a slow pass into two statements, splits loads by
//! when the database happened to answer, and holds back a request that is
//! quicker: here the number of statements depends only on the query and
//! the data, and nothing waits on a clock. A waiting batch never wakes
//! itself, so it does not cut polls short, and while batches run it
//! sleeps until the last of them ends.
//!
//! Every load of a batch awaits the same shared future, so the batch runs
//! as long as any of them is still wanted. Nothing is cached between
//! batches: a subscription that resolves many events never sees stale rows.

use std::any::{Any, TypeId};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use async_graphql::dataloader::Loader;
use futures::future::{BoxFuture, FutureExt, Shared, WeakShared};
use futures::stream::Stream;

/// What a batch of `K`s loaded, shared by every load in it.
type Outcome<K, V, E> = Result<Arc<HashMap<K, V>>, E>;

/// A batch's outcome, awaited by each of its loads.
type Pending<K, V, E> = Shared<BoxFuture<'static, Outcome<K, V, E>>>;

/// The passes of one request over its fields.
#[derive(Default)]
pub struct Passes(Mutex<PassState>);

#[derive(Default)]
struct PassState {
    /// Whether an [`InPasses`] ends the passes; without one a batch yields
    /// once instead.
    counted: bool,
    /// Whether, in the pass under way, a load opened or joined a batch or
    /// a batch finished (its loads resume in this pass or the next, and
    /// may ask for more).
    active: bool,
    /// Batches running their loader.
    loading: usize,
    /// Loads whose batch has finished and that have not yet resumed: they
    /// resume in the passes to come (a `FuturesUnordered` may leave some
    /// for a later pass) and may ask for more.
    unresumed: usize,
    /// Passes that ended settled: nothing was active in them, and no batch
    /// was running.
    settled: u64,
    /// Batches waiting for a settled pass.
    waiting: Vec<Waker>,
}

impl Passes {
    fn state(&self) -> MutexGuard<'_, PassState> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The request's poll that was under way has returned. Waiting batches
    /// are woken when the pass settled (they run) or when it was active
    /// (another pass tells whether more will come); while batches run or
    /// their loads have yet to resume, the last of those wakes them instead.
    fn end(&self) {
        let waiting = {
            let mut state = self.state();
            state.counted = true;
            let active = std::mem::take(&mut state.active);
            let busy = state.loading > 0 || state.unresumed > 0;
            if !active && !busy {
                state.settled += 1;
            } else if !active {
                return;
            }
            std::mem::take(&mut state.waiting)
        };
        for waker in waiting {
            waker.wake();
        }
    }

    /// Counts a batch as running until the guard is dropped.
    fn loading(&self) -> Loading<'_> {
        self.state().loading += 1;
        Loading(self)
    }

    /// Ready once a pass has settled after `settled` had.
    async fn settled_after(&self, settled: u64) {
        let mut yielded = false;
        futures::future::poll_fn(|cx| {
            let mut state = self.state();
            if state.settled > settled {
                Poll::Ready(())
            } else if state.counted {
                // Every load of a batch polls it: one waker of each is enough.
                if !state.waiting.iter().any(|w| w.will_wake(cx.waker())) {
                    state.waiting.push(cx.waker().clone());
                }
                Poll::Pending
            } else if !yielded {
                yielded = true;
                cx.waker().wake_by_ref();
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await
    }
}

/// A batch running its loader.
struct Loading<'a>(&'a Passes);

/// The loads waiting on one batch.
#[derive(Default)]
struct Waiters {
    live: usize,
    /// Whether the batch has finished.
    done: bool,
}

/// One load waiting on a batch, until it resumes (or is dropped).
struct Waiting {
    passes: Arc<Passes>,
    batch: Arc<Mutex<Waiters>>,
}

impl Waiting {
    fn new(passes: &Arc<Passes>, batch: &Arc<Mutex<Waiters>>) -> Self {
        lock(batch).live += 1;
        Self {
            passes: passes.clone(),
            batch: batch.clone(),
        }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let mut batch = lock(&self.batch);
        batch.live -= 1;
        if !batch.done {
            return;
        }
        let waiting = {
            let mut state = self.passes.state();
            state.unresumed -= 1;
            if state.unresumed > 0 {
                return;
            }
            std::mem::take(&mut state.waiting)
        };
        for waker in waiting {
            waker.wake();
        }
    }
}

impl Passes {
    /// `batch` finished: its live loads are yet to resume.
    fn finished(&self, batch: &Mutex<Waiters>) {
        let mut batch = lock(batch);
        batch.done = true;
        self.state().unresumed += batch.live;
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Drop for Loading<'_> {
    fn drop(&mut self) {
        let waiting = {
            let mut state = self.0.state();
            state.loading -= 1;
            state.active = true;
            std::mem::take(&mut state.waiting)
        };
        for waker in waiting {
            waker.wake();
        }
    }
}

/// Loads through `T`, one call per pass and key type.
pub struct Batcher<T> {
    inner: Arc<Inner<T>>,
}

struct Inner<T> {
    loader: T,
    passes: Arc<Passes>,
    /// The open batch of each key type (an `Option<Open<K, …>>`).
    open: Mutex<HashMap<TypeId, Box<dyn Any + Send>>>,
}

/// A batch still taking keys. Its outcome is held by its loads only: a
/// batch whose loads were all dropped (a failed sibling, a closed
/// connection) is dropped with them, and the next load opens another.
struct Open<K, V, E> {
    keys: HashSet<K>,
    outcome: WeakShared<BoxFuture<'static, Outcome<K, V, E>>>,
    waiters: Arc<Mutex<Waiters>>,
}

impl<T: Send + Sync + 'static> Batcher<T> {
    /// Batches loads by the passes of `passes`.
    pub fn new(loader: T, passes: Arc<Passes>) -> Self {
        Self {
            inner: Arc::new(Inner {
                loader,
                passes,
                open: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The value of `key`, loaded with the other keys of this pass.
    pub async fn load_one<K>(&self, key: K) -> Result<Option<T::Value>, T::Error>
    where
        T: Loader<K>,
        T::Error: Sync,
        K: Send + Sync + Hash + Eq + Clone + 'static,
    {
        let (outcome, _waiting) = self.join(std::iter::once(key.clone()));
        let outcome = outcome.await?;
        Ok(outcome.get(&key).cloned())
    }

    /// The values of `keys` that exist, loaded with the other keys of this
    /// pass.
    pub async fn load_many<K>(
        &self,
        keys: impl IntoIterator<Item = K>,
    ) -> Result<HashMap<K, T::Value>, T::Error>
    where
        T: Loader<K>,
        T::Error: Sync,
        K: Send + Sync + Hash + Eq + Clone + 'static,
    {
        let keys: Vec<K> = keys.into_iter().collect();
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        let (outcome, _waiting) = self.join(keys.iter().cloned());
        let outcome = outcome.await?;
        Ok(keys
            .into_iter()
            .filter_map(|key| outcome.get(&key).cloned().map(|value| (key, value)))
            .collect())
    }

    /// Adds `keys` to the open batch of their type, opening one if none is;
    /// the load waits on the outcome while it holds the [`Waiting`].
    fn join<K>(&self, keys: impl Iterator<Item = K>) -> (Pending<K, T::Value, T::Error>, Waiting)
    where
        T: Loader<K>,
        T::Error: Sync,
        K: Send + Sync + Hash + Eq + Clone + 'static,
    {
        let mut open = lock(&self.inner.open);
        let slot = open
            .entry(TypeId::of::<K>())
            .or_insert_with(|| Box::new(None::<Open<K, T::Value, T::Error>>))
            .downcast_mut::<Option<Open<K, T::Value, T::Error>>>()
            .expect("a key type has one kind of batch");
        let settled = {
            let mut passes = self.inner.passes.state();
            passes.active = true;
            passes.settled
        };
        if let Some(batch) = slot
            && let Some(outcome) = batch.outcome.upgrade()
        {
            batch.keys.extend(keys);
            let waiting = Waiting::new(&self.inner.passes, &batch.waiters);
            return (outcome, waiting);
        }
        let inner = self.inner.clone();
        let waiters = Arc::new(Mutex::new(Waiters::default()));
        let batch = waiters.clone();
        let outcome = async move {
            inner.passes.settled_after(settled).await;
            let keys = inner.close::<K>();
            let _loading = inner.passes.loading();
            let outcome = inner.loader.load(&keys).await.map(Arc::new);
            inner.passes.finished(&batch);
            outcome
        }
        .boxed()
        .shared();
        let waiting = Waiting::new(&self.inner.passes, &waiters);
        *slot = Some(Open {
            keys: keys.collect(),
            outcome: outcome.downgrade().expect("a batch has not run yet"),
            waiters,
        });
        (outcome, waiting)
    }
}

impl<T: Send + Sync + 'static> Inner<T> {
    /// Closes the open batch of `K`s: loads asked for from now on open the
    /// next one.
    fn close<K>(&self) -> Vec<K>
    where
        T: Loader<K>,
        T::Error: Sync,
        K: Send + Sync + Hash + Eq + Clone + 'static,
    {
        let mut open = lock(&self.open);
        open.get_mut(&TypeId::of::<K>())
            .and_then(|slot| slot.downcast_mut::<Option<Open<K, T::Value, T::Error>>>())
            .and_then(Option::take)
            .map(|batch| batch.keys.into_iter().collect())
            .unwrap_or_default()
    }
}

/// A request's execution (a future, or a subscription's stream) whose
/// every poll is a pass of its batches. The transports run every
/// operation in one.
pub struct InPasses<F> {
    inner: Pin<Box<F>>,
    passes: Arc<Passes>,
}

impl<F> InPasses<F> {
    pub fn new(inner: F, passes: Arc<Passes>) -> Self {
        passes.state().counted = true;
        Self {
            inner: Box::pin(inner),
            passes,
        }
    }
}

impl<F: Future> Future for InPasses<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let polled = self.inner.as_mut().poll(cx);
        self.passes.end();
        polled
    }
}

impl<S: Stream> Stream for InPasses<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let polled = self.inner.as_mut().poll_next(cx);
        self.passes.end();
        polled
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Doubles numbers, counting its calls and refusing 13.
    #[derive(Default)]
    struct Doubler {
        calls: AtomicUsize,
        largest_batch: AtomicUsize,
    }

    impl Loader<u32> for Doubler {
        type Value = u32;
        type Error = String;

        async fn load(&self, keys: &[u32]) -> Result<HashMap<u32, u32>, String> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.largest_batch.fetch_max(keys.len(), Ordering::SeqCst);
            if keys.contains(&13) {
                return Err("unlucky".to_owned());
            }
            Ok(keys.iter().map(|k| (*k, k * 2)).collect())
        }
    }

    /// A batcher over a `Doubler`, and the passes that run it.
    fn doubler() -> (Batcher<Doubler>, Arc<Passes>) {
        let passes = Arc::new(Passes::default());
        (Batcher::new(Doubler::default(), passes.clone()), passes)
    }

    #[tokio::test]
    async fn loads_polled_together_run_as_one_call_however_many() {
        let (batcher, passes) = doubler();
        let loads = (100..300u32).map(|n| batcher.load_one(n));
        let values = InPasses::new(futures::future::join_all(loads), passes).await;
        assert_eq!(values[7], Ok(Some(214)));
        assert_eq!(values[199], Ok(Some(598)));
        assert_eq!(batcher.inner.loader.calls.load(Ordering::SeqCst), 1);
        assert_eq!(
            batcher.inner.loader.largest_batch.load(Ordering::SeqCst),
            200
        );
    }

    #[tokio::test]
    async fn a_load_asked_after_a_batch_ran_opens_the_next_one() {
        let (batcher, passes) = doubler();
        let one = InPasses::new(batcher.load_one(1), passes.clone()).await;
        assert_eq!(one, Ok(Some(2)));
        let many = InPasses::new(batcher.load_many([2, 3]), passes).await;
        assert_eq!(many.unwrap()[&3], 6);
        assert_eq!(batcher.inner.loader.calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_dropped_load_leaves_the_rest_of_its_batch_running() {
        let (batcher, passes) = doubler();
        passes.state().counted = true;
        let mut first = Box::pin(batcher.load_one(1));
        let mut second = Box::pin(batcher.load_one(2));
        assert!(futures::poll!(first.as_mut()).is_pending());
        assert!(futures::poll!(second.as_mut()).is_pending());
        drop(first);
        let second = InPasses::new(second, passes).await;
        assert_eq!(second, Ok(Some(4)));
        assert_eq!(batcher.inner.loader.calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_batch_whose_loads_were_all_dropped_gives_way_to_a_new_one() {
        let (batcher, passes) = doubler();
        let mut dropped = Box::pin(batcher.load_one(1));
        assert!(futures::poll!(dropped.as_mut()).is_pending());
        drop(dropped);
        assert_eq!(
            Arc::strong_count(&batcher.inner),
            1,
            "nothing holds the batcher"
        );
        let later = InPasses::new(batcher.load_many([2, 3]), passes).await;
        assert_eq!(later.unwrap().len(), 2);
        assert_eq!(batcher.inner.loader.largest_batch.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn an_error_reaches_every_load_of_its_batch() {
        let (batcher, passes) = doubler();
        let both = futures::future::join(batcher.load_one(13), batcher.load_one(1));
        let (a, b) = InPasses::new(both, passes).await;
        assert_eq!(a, Err("unlucky".to_owned()));
        assert_eq!(b, Err("unlucky".to_owned()));
    }

    #[tokio::test]
    async fn a_load_outside_counted_passes_still_runs() {
        let batcher = Batcher::new(Doubler::default(), Arc::default());
        assert_eq!(batcher.load_one(4).await, Ok(Some(8)));
    }
}
