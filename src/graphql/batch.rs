//! Deterministic per-request batching: the DataLoader pattern, dispatched when the request goes idle instead
//! of after a timer.
//!
//! async-graphql's `DataLoader` collects keys for a fixed delay in a spawned task. When resolvers are slow to
//! reach their loads (a debug build, a busy machine, a wide page) the window closes early and one relation
//! splits into many statements (a page of 50 posts ran 22 statements in our tests with a 250 µs window), and
//! every level of every request pays the delay.
//!
//! Here, as graphql-js's DataLoader does with its job queue: a load registers its key in the relation's open
//! batch and waits at the batch's gate. `Batched` wraps the whole execution of a request; when the execution
//! returns `Pending` without having woken itself, nothing in the request can make progress without I/O, so every
//! sibling that will ask for a key has asked, once the wake-ups the runtime deferred (a sibling's `yield_now`, a
//! sibling out of cooperative budget) have been delivered too (see `Marker`). Then every open batch is
//! dispatched, one statement each. The
//! batch itself is a `Shared` future, so if the resolver driving it is dropped (its subtree failed), another
//! waiter drives it and nobody waits forever.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};

use crate::error::AppError;

/// Loads many keys with one statement.
pub trait BatchFn<K>: Send + Sync + 'static {
    type Value: Clone + Send + Sync + 'static;
    fn load(
        &self,
        keys: &[K],
    ) -> impl Future<Output = Result<HashMap<K, Self::Value>, AppError>> + Send;
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A batch's gate: closed while keys are being collected, opened by the dispatcher.
#[derive(Default)]
struct Gate {
    state: Mutex<(bool, Option<Waker>)>,
}

impl Gate {
    fn open(&self) {
        let waker = {
            let mut st = lock(&self.state);
            st.0 = true;
            st.1.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    fn wait(self: &Arc<Self>) -> GateWait {
        GateWait(Arc::clone(self))
    }
}

struct GateWait(Arc<Gate>);

impl Future for GateWait {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut st = lock(&self.0.state);
        if st.0 {
            Poll::Ready(())
        } else {
            st.1 = Some(cx.waker().clone());
            Poll::Pending
        }
    }
}

/// Something that can be dispatched: the open batch of one relation.
trait Dispatch: Send + Sync {
    /// Closes the open batch (if any) and opens its gate. Returns whether there was one.
    fn dispatch(&self) -> bool;
    /// Whether a batch is open (collecting keys).
    fn is_open(&self) -> bool;
}

/// The request's set of batchers, dispatched together when the request goes idle.
#[derive(Default)]
pub struct Dispatcher {
    batchers: Mutex<Vec<Arc<dyn Dispatch>>>,
}

impl Dispatcher {
    /// Dispatches every open batch; returns how many there were.
    fn dispatch_all(&self) -> usize {
        let batchers: Vec<Arc<dyn Dispatch>> = lock(&self.batchers).clone();
        batchers.iter().filter(|b| b.dispatch()).count()
    }

    /// Whether any batch is open.
    fn any_open(&self) -> bool {
        lock(&self.batchers).iter().any(|b| b.is_open())
    }
}

type Outcome<K, V> = Result<Arc<HashMap<K, V>>, Arc<AppError>>;

struct Open<K, V> {
    keys: Arc<Mutex<Vec<K>>>,
    gate: Arc<Gate>,
    run: Shared<BoxFuture<'static, Outcome<K, V>>>,
}

/// Batches loads of one relation (key type) for one request.
pub struct Batcher<K, V> {
    open: Arc<Mutex<Option<Open<K, V>>>>,
    /// Values already fetched by a parent's statement (see `prefetch.rs`): a load of one of these keys is
    /// answered at once, without a batch or a wait.
    primed: Mutex<HashMap<K, V>>,
}

struct OpenSlot<K, V>(Arc<Mutex<Option<Open<K, V>>>>);

impl<K: Send + Sync, V: Send + Sync> Dispatch for OpenSlot<K, V> {
    fn dispatch(&self) -> bool {
        match lock(&self.0).take() {
            Some(open) => {
                open.gate.open();
                true
            }
            None => false,
        }
    }

    fn is_open(&self) -> bool {
        lock(&self.0).is_some()
    }
}

/// The most keys one statement asks for; a larger batch is dispatched at once and the next key opens another.
const MAX_BATCH: usize = 1_000;

impl<K, V> Batcher<K, V>
where
    K: Clone + Eq + Hash + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// A batcher dispatched by `dispatcher`.
    pub fn new(dispatcher: &Dispatcher) -> Self {
        let open: Arc<Mutex<Option<Open<K, V>>>> = Arc::default();
        lock(&dispatcher.batchers).push(Arc::new(OpenSlot(Arc::clone(&open))));
        Self {
            open,
            primed: Mutex::default(),
        }
    }

    /// Records `value` as the answer for `key`, so loads of it need no statement.
    pub fn prime(&self, key: K, value: V) {
        lock(&self.primed).insert(key, value);
    }

    /// Loads `key` together with every other key its sibling resolvers ask for. Must run inside `Batched`.
    pub async fn load_one<L>(&self, loader: &Arc<L>, key: K) -> Result<Option<V>, AppError>
    where
        L: BatchFn<K, Value = V>,
    {
        if let Some(value) = lock(&self.primed).get(&key) {
            return Ok(Some(value.clone()));
        }
        let run = self.register(loader, key.clone());
        let map = run.await.map_err(AppError::from)?;
        Ok(map.get(&key).cloned())
    }

    /// Adds `key` to the open batch (opening one if needed) and returns the batch's shared result.
    fn register<L>(&self, loader: &Arc<L>, key: K) -> Shared<BoxFuture<'static, Outcome<K, V>>>
    where
        L: BatchFn<K, Value = V>,
    {
        let mut slot = lock(&self.open);
        let open = slot.take().unwrap_or_else(|| Self::new_batch(loader));
        let run = open.run.clone();
        let full = {
            let mut keys = lock(&open.keys);
            keys.push(key);
            keys.len() >= MAX_BATCH
        };
        if full {
            open.gate.open();
        } else {
            *slot = Some(open);
        }
        run
    }

    /// A new batch: its run waits at the gate, then loads the (deduplicated) keys collected by then.
    fn new_batch<L>(loader: &Arc<L>) -> Open<K, V>
    where
        L: BatchFn<K, Value = V>,
    {
        let keys: Arc<Mutex<Vec<K>>> = Arc::default();
        let gate: Arc<Gate> = Arc::default();
        let (loader, batch_keys, wait) = (Arc::clone(loader), Arc::clone(&keys), gate.wait());
        let run = async move {
            wait.await;
            let keys: Vec<K> = {
                let keys = lock(&batch_keys);
                let unique: HashSet<&K> = keys.iter().collect();
                unique.into_iter().cloned().collect()
            };
            loader.load(&keys).await.map(Arc::new).map_err(Arc::new)
        }
        .boxed()
        .shared();
        Open { keys, gate, run }
    }
}

/// Runs a request's execution, dispatching its open batches whenever it can make no progress without them.
pub struct Batched<F> {
    inner: Pin<Box<F>>,
    dispatcher: Arc<Dispatcher>,
    /// The wakers handed to the execution and to the scheduler, kept across polls while the task's waker stays
    /// the same, so a poll costs no allocation and resolvers' stored wakers stay current.
    wakers: Option<Wakers>,
}

struct Wakers {
    note: Arc<NoteWake>,
    note_waker: Waker,
    marker: Arc<Marker>,
    marker_waker: Waker,
}

impl<F: Future> Batched<F> {
    pub fn new(dispatcher: Arc<Dispatcher>, inner: F) -> Self {
        Self {
            inner: Box::pin(inner),
            dispatcher,
            wakers: None,
        }
    }
}

/// Forwards wakes to the task and notes that one happened since the execution was last polled.
struct NoteWake {
    task: Waker,
    woken: AtomicBool,
}

impl Wake for NoteWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::SeqCst);
        self.task.wake_by_ref();
    }
}

/// Handed to the scheduler's deferred wake-ups right before each poll of the execution.
///
/// A runtime holds some wake-ups back until its worker has run out of work (a sibling's `yield_now`, a sibling
/// out of cooperative budget), then wakes them newest first. A marker deferred before a poll is therefore woken
/// only after every wake-up that poll deferred on the same worker, whichever worker it was. The scheduler holds
/// a clone of the marker's `Arc` while it is deferred, so the `Arc`'s count says how many are still out: when
/// none is, every wake-up any poll of the execution deferred has been delivered.
struct Marker {
    task: Waker,
    /// The execution looked idle with batches open: wake the task as markers come back.
    checking: Arc<AtomicBool>,
}

impl Wake for Marker {
    fn wake(self: Arc<Self>) {
        let (task, checking) = (self.task.clone(), Arc::clone(&self.checking));
        // Released before `checking` is read (the poll sets `checking` before it counts the markers out), so
        // either the poll sees this marker back or this wake sees the poll waiting.
        drop(self);
        std::sync::atomic::fence(Ordering::SeqCst);
        if checking.load(Ordering::SeqCst) {
            task.wake();
        }
    }
    fn wake_by_ref(self: &Arc<Self>) {
        // Only outside a runtime, which wakes at once instead of deferring: nothing was held back.
        if self.checking.load(Ordering::SeqCst) {
            self.task.wake_by_ref();
        }
    }
}

impl Wakers {
    fn new(task: &Waker) -> Self {
        let note = Arc::new(NoteWake {
            task: task.clone(),
            woken: AtomicBool::new(false),
        });
        let marker = Arc::new(Marker {
            task: task.clone(),
            checking: Arc::default(),
        });
        Self {
            note_waker: Waker::from(Arc::clone(&note)),
            marker_waker: Waker::from(Arc::clone(&marker)),
            note,
            marker,
        }
    }

    /// Markers the scheduler still holds (the count less this struct's two references).
    fn markers_out(&self) -> usize {
        std::sync::atomic::fence(Ordering::SeqCst);
        Arc::strong_count(&self.marker).saturating_sub(2)
    }

    fn checking(&self) -> bool {
        self.marker.checking.load(Ordering::SeqCst)
    }

    fn set_checking(&self, on: bool) {
        self.marker.checking.store(on, Ordering::SeqCst);
    }
}

impl<F> Unpin for Batched<F> {}

impl<F: Future> Future for Batched<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        let reusable = this
            .wakers
            .as_ref()
            .is_some_and(|w| w.note.task.will_wake(cx.waker()));
        if !reusable {
            this.wakers = Some(Wakers::new(cx.waker()));
        }
        let Some(w) = this.wakers.as_ref() else {
            return Poll::Pending;
        };
        if w.checking() {
            if w.note.woken.load(Ordering::SeqCst) {
                // A sibling woke since the execution looked idle: it may be about to load. Poll it.
                w.set_checking(false);
            } else if w.markers_out() == 0 {
                // Idle last time, and every wake-up deferred since has come back without waking anything: every
                // sibling that will ask for a key has asked. Dispatch, then let the loads run.
                w.set_checking(false);
                this.dispatcher.dispatch_all();
            } else {
                // Markers are still out; each one that comes back wakes the task again.
                return Poll::Pending;
            }
        }
        loop {
            // Behind this marker, on this worker, come back any wake-ups the poll below defers.
            let _ = std::pin::pin!(tokio::task::yield_now())
                .as_mut()
                .poll(&mut Context::from_waker(&w.marker_waker));
            w.note.woken.store(false, Ordering::SeqCst);
            if let Poll::Ready(out) = this
                .inner
                .as_mut()
                .poll(&mut Context::from_waker(&w.note_waker))
            {
                return Poll::Ready(out);
            }
            if w.note.woken.load(Ordering::SeqCst) {
                // Something is ready to run again at once (a resolver yielded): not idle yet. The task has been
                // woken, so the executor polls us again.
                return Poll::Pending;
            }
            if !this.dispatcher.any_open() {
                // Waiting on I/O only.
                return Poll::Pending;
            }
            // Looks idle with batches open; but a sibling whose wake-up the runtime deferred may be about to run
            // and load. Wait for the markers to come back (see `Marker`).
            w.set_checking(true);
            if w.markers_out() > 0 {
                return Poll::Pending;
            }
            // Nothing deferred (not on a runtime that defers, or already delivered): dispatch now.
            w.set_checking(false);
            this.dispatcher.dispatch_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    struct Double(AtomicUsize);

    impl BatchFn<i64> for Double {
        type Value = i64;
        async fn load(&self, keys: &[i64]) -> Result<HashMap<i64, i64>, AppError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            tokio::task::yield_now().await;
            Ok(keys
                .iter()
                .filter(|k| **k >= 0)
                .map(|k| (*k, k * 2))
                .collect())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn siblings_share_one_batch_and_missing_keys_are_none() {
        let loader = Arc::new(Double(AtomicUsize::new(0)));
        let dispatcher = Arc::new(Dispatcher::default());
        let batcher = Batcher::new(&dispatcher);
        let work = async {
            // Siblings reach their load at different depths of awaiting; one batch serves them all.
            let loads = (-1_i64..300).map(|k| {
                let (batcher, loader) = (&batcher, &loader);
                async move {
                    for _ in 0..(k.rem_euclid(4)) {
                        tokio::task::yield_now().await;
                    }
                    batcher.load_one(loader, k).await
                }
            });
            let results = futures_util::future::join_all(loads).await;
            let again = batcher.load_one(&loader, 5).await;
            (results, again)
        };
        let (results, again) = Batched::new(Arc::clone(&dispatcher), work).await;
        assert_eq!(results[0].as_ref().ok(), Some(&None));
        assert_eq!(results[11].as_ref().ok(), Some(&Some(20)));
        assert_eq!(again.ok(), Some(Some(10)));
        assert_eq!(
            loader.0.load(Ordering::SeqCst),
            2,
            "one batch for the siblings, one for the later load"
        );
    }

    /// On worker threads tokio defers some wake-ups until the task yields: `yield_now`'s, and a task's whose
    /// cooperative budget ran out. A poll can then look idle while a sibling is about to run. Many requests at
    /// once, spawned like the server's, each with siblings that yield or exhaust their budget before loading:
    /// each request still loads its siblings with one batch.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn on_worker_threads_deferred_wake_ups_do_not_split_a_batch() {
        let mut requests = Vec::new();
        for _ in 0..32 {
            requests.push(tokio::spawn(async {
                let loader = Arc::new(Double(AtomicUsize::new(0)));
                let dispatcher = Arc::new(Dispatcher::default());
                let batcher = Batcher::new(&dispatcher);
                let work = async {
                    let loads = (0_i64..60).map(|k| {
                        let (batcher, loader) = (&batcher, &loader);
                        async move {
                            match k % 3 {
                                0 => {}
                                1 => {
                                    for _ in 0..3 {
                                        tokio::task::yield_now().await;
                                    }
                                }
                                _ => {
                                    for _ in 0..300 {
                                        tokio::task::consume_budget().await;
                                    }
                                }
                            }
                            batcher.load_one(loader, k).await
                        }
                    });
                    futures_util::future::join_all(loads).await
                };
                let results = Batched::new(dispatcher, work).await;
                let all = results
                    .iter()
                    .enumerate()
                    .all(|(k, r)| r.as_ref().ok() == Some(&Some(k as i64 * 2)));
                (all, loader.0.load(Ordering::SeqCst))
            }));
        }
        let mut total = 0;
        let mut most = 0;
        for request in requests {
            let (all, batches) = request.await.expect("request task");
            assert!(all, "every sibling got its value");
            total += batches;
            most = most.max(batches);
        }
        eprintln!("worker threads: {total} batches for 32 requests, at most {most} for one");
        // Each request's siblings reach their loads across deferred wake-ups, on whichever worker runs it, and
        // with the rest of the suite competing for the CPU: still exactly one batch per request.
        assert_eq!(
            (total, most),
            (32, 1),
            "batches for 32 requests, most for one"
        );
    }

    /// Counts the polls of the future it wraps.
    struct Counted<F>(Pin<Box<F>>, Arc<AtomicUsize>);

    impl<F: Future> Future for Counted<F> {
        type Output = F::Output;
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
            self.1.fetch_add(1, Ordering::SeqCst);
            self.0.as_mut().poll(cx)
        }
    }

    struct Slow;

    impl BatchFn<i64> for Slow {
        type Value = i64;
        async fn load(&self, keys: &[i64]) -> Result<HashMap<i64, i64>, AppError> {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            Ok(keys.iter().map(|k| (*k, *k)).collect())
        }
    }

    /// The markers handed to the scheduler on every poll wake the task only while it is checking for idleness:
    /// a request waiting on its statement is not polled over and over.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waiting_on_a_statement_does_not_spin() {
        let polls = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&polls);
        // Spawned, so it runs on a worker thread, where the scheduler defers wake-ups (the test's body does not).
        let request = tokio::spawn(async move {
            let loader = Arc::new(Slow);
            let dispatcher = Arc::new(Dispatcher::default());
            let batcher = Batcher::new(&dispatcher);
            let work = async {
                let loads = (0_i64..10).map(|k| batcher.load_one(&loader, k));
                futures_util::future::join_all(loads).await
            };
            let results = Batched::new(dispatcher, Counted(Box::pin(work), counter)).await;
            results.iter().all(|r| r.is_ok())
        });
        assert!(request.await.expect("request task"));
        let polls = polls.load(Ordering::SeqCst);
        assert!(polls <= 6, "{polls} polls for one 100 ms statement");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dropped_driver_does_not_strand_the_others() {
        let loader = Arc::new(Double(AtomicUsize::new(0)));
        let dispatcher = Arc::new(Dispatcher::default());
        let batcher = Batcher::new(&dispatcher);
        let work = async {
            let mut first = Box::pin(batcher.load_one(&loader, 1));
            let waker = futures_util::task::noop_waker();
            assert!(
                first
                    .as_mut()
                    .poll(&mut Context::from_waker(&waker))
                    .is_pending()
            );
            let second = batcher.load_one(&loader, 2);
            drop(first);
            second.await
        };
        assert_eq!(Batched::new(dispatcher, work).await.ok(), Some(Some(4)));
    }
}
