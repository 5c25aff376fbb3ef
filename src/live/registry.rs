//! Running subscriptions and live queries, grouped and indexed by tag.
//!
//! - A **group** is one operation (document, operation name, variables) run in one viewer scope. Everyone who
//!   subscribes to the same operation in the same scope joins the same group and receives the same results:
//!   one execution serves them all.
//! - The **index** maps each tag a group's last run read to the group. The dispatcher reads the bus and wakes
//!   exactly the groups a change names (`Signal::Resync` wakes every group).
//! - A group's task runs its operation when woken. Wake-ups are coalesced by `Notify`'s single permit: at most
//!   one run is in flight, and any number of wake-ups during it schedule exactly one more, which sees every
//!   change that arrived meanwhile.
//! - Each member reads the group's results from a bounded broadcast; a member that falls behind is told so
//!   (`Next::Overflow`) and its transport disconnects it. Identical consecutive results are sent once.
//! - A group ends when its last member leaves, or when a run says it is the last (`Emission::last`).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use futures_util::future::BoxFuture;
use tokio::sync::{Notify, broadcast};
use tokio::task::AbortHandle;

use super::{Bus, Change, LiveMetrics, Signal, Trigger};

/// Results kept for members that have not read them yet.
const GROUP_CAPACITY: usize = 64;

/// One result to send.
#[derive(Clone, Debug)]
pub struct Emission {
    /// The serialised GraphQL response.
    pub body: bytes::Bytes,
    /// The operation is over after this one (a subscription whose object is gone, a viewer that no longer exists).
    pub last: bool,
}

/// What one run of a group's operation produced.
#[derive(Default)]
pub struct Execution {
    pub emissions: Vec<Emission>,
    /// Every tag the run read: the changes that wake the group next.
    pub tags: Vec<String>,
}

/// Runs a group's operation for a trigger.
pub type Runner = Arc<dyn Fn(Trigger) -> BoxFuture<'static, Execution> + Send + Sync>;

/// What a group runs, for the gauges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Subscription,
    LiveQuery,
}

/// Refused: the instance runs `FOLIO_LIVE_MAX_SUBSCRIPTIONS` already.
#[derive(Debug)]
pub struct Full(pub usize);

struct Group {
    id: u64,
    key: String,
    kind: Kind,
    run: Runner,
    wake: Notify,
    pending: Mutex<Vec<Arc<Change>>>,
    out: broadcast::Sender<Arc<Emission>>,
    /// Members, counted under the registry's lock.
    members: AtomicUsize,
    task: Mutex<Option<AbortHandle>>,
    /// The tags it is indexed under.
    tags: Mutex<Vec<String>>,
}

#[derive(Default)]
struct State {
    groups: HashMap<u64, Arc<Group>>,
    by_key: HashMap<String, u64>,
    index: HashMap<String, HashSet<u64>>,
}

pub struct Registry {
    state: Mutex<State>,
    next_id: AtomicU64,
    /// Members of every group; at most `max`.
    members: AtomicUsize,
    max: usize,
    metrics: LiveMetrics,
}

impl Registry {
    pub fn new(max: usize, metrics: LiveMetrics) -> Self {
        Self {
            state: Mutex::new(State::default()),
            next_id: AtomicU64::new(1),
            members: AtomicUsize::new(0),
            max,
            metrics,
        }
    }

    pub fn metrics(&self) -> &LiveMetrics {
        &self.metrics
    }

    /// Starts the dispatcher: reads `bus` and wakes the groups each change names. Needs a Tokio runtime.
    pub fn start(self: &Arc<Self>, bus: &Bus) {
        let mut signals = bus.subscribe();
        let registry = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let signal = signals.recv().await;
                let Some(registry) = registry.upgrade() else {
                    return;
                };
                match signal {
                    Ok(Signal::Changed(change)) => registry.wake_tagged(&change),
                    Ok(Signal::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => {
                        registry.wake_all()
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }

    /// Joins the group running `key`, creating it (indexed under `tags`, running `runner()`) if there is none.
    pub fn join(
        self: &Arc<Self>,
        key: String,
        kind: Kind,
        tags: Vec<String>,
        runner: impl FnOnce() -> Runner,
    ) -> Result<Membership, Full> {
        if self.members.fetch_add(1, Ordering::AcqRel) >= self.max {
            self.members.fetch_sub(1, Ordering::AcqRel);
            return Err(Full(self.max));
        }
        let mut state = self.lock();
        let group = match state.by_key.get(&key).and_then(|id| state.groups.get(id)) {
            Some(group) => {
                let group = Arc::clone(group);
                // A member's first run may have read more than the group's last (it is fresher): wake on both.
                let extra: Vec<String> = {
                    let known = group.tags.lock().unwrap_or_else(|p| p.into_inner());
                    tags.into_iter().filter(|t| !known.contains(t)).collect()
                };
                Self::index(&mut state, &group, extra);
                group
            }
            None => {
                let (out, _) = broadcast::channel(GROUP_CAPACITY);
                let group = Arc::new(Group {
                    id: self.next_id.fetch_add(1, Ordering::Relaxed),
                    key: key.clone(),
                    kind,
                    run: runner(),
                    wake: Notify::new(),
                    pending: Mutex::new(Vec::new()),
                    out,
                    members: AtomicUsize::new(0),
                    task: Mutex::new(None),
                    tags: Mutex::new(Vec::new()),
                });
                state.by_key.insert(key, group.id);
                state.groups.insert(group.id, Arc::clone(&group));
                Self::index(&mut state, &group, tags);
                let task = tokio::spawn(Arc::clone(self).drive(Arc::clone(&group)));
                *group.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task.abort_handle());
                group
            }
        };
        group.members.fetch_add(1, Ordering::AcqRel);
        let receiver = group.out.subscribe();
        drop(state);
        self.gauge(kind).inc();
        Ok(Membership {
            registry: Arc::clone(self),
            group,
            receiver,
            last_sent: None,
        })
    }

    /// Members of every group, for tests and the load example.
    pub fn running(&self) -> usize {
        self.members.load(Ordering::Acquire)
    }

    fn gauge(&self, kind: Kind) -> &prometheus::IntGauge {
        match kind {
            Kind::Subscription => &self.metrics.subscriptions,
            Kind::LiveQuery => &self.metrics.live_queries,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds `tags` to the group's index entries.
    fn index(state: &mut State, group: &Group, tags: Vec<String>) {
        let mut known = group.tags.lock().unwrap_or_else(|p| p.into_inner());
        for tag in tags {
            if !known.contains(&tag) {
                state.index.entry(tag.clone()).or_default().insert(group.id);
                known.push(tag);
            }
        }
    }

    /// Removes the group's index entries.
    fn unindex(state: &mut State, group: &Group) {
        let tags = std::mem::take(&mut *group.tags.lock().unwrap_or_else(|p| p.into_inner()));
        for tag in tags {
            if let Some(ids) = state.index.get_mut(&tag) {
                ids.remove(&group.id);
                if ids.is_empty() {
                    state.index.remove(&tag);
                }
            }
        }
    }

    fn wake_tagged(&self, change: &Arc<Change>) {
        let state = self.lock();
        let mut woken = HashSet::new();
        for tag in &change.tags {
            let Some(ids) = state.index.get(tag) else {
                continue;
            };
            for id in ids {
                if woken.insert(*id)
                    && let Some(group) = state.groups.get(id)
                {
                    group
                        .pending
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(Arc::clone(change));
                    group.wake.notify_one();
                }
            }
        }
    }

    fn wake_all(&self) {
        for group in self.lock().groups.values() {
            group.wake.notify_one();
        }
    }

    /// A group's task: runs its operation whenever woken, re-indexes it under what the run read, and sends the
    /// results to its members.
    async fn drive(self: Arc<Self>, group: Arc<Group>) {
        loop {
            group.wake.notified().await;
            let changes =
                std::mem::take(&mut *group.pending.lock().unwrap_or_else(|p| p.into_inner()));
            self.metrics.reexecutions.inc();
            let execution = (group.run)(Trigger::Changed(changes)).await;
            {
                let mut state = self.lock();
                if !state.groups.contains_key(&group.id) {
                    return;
                }
                // A run that failed before reading anything (the database unreachable) keeps the tags it had.
                if !execution.tags.is_empty() {
                    Self::unindex(&mut state, &group);
                    Self::index(&mut state, &group, execution.tags);
                }
            }
            for emission in execution.emissions {
                let last = emission.last;
                let _ = group.out.send(Arc::new(emission));
                if last {
                    self.retire(&group);
                    return;
                }
            }
        }
    }

    /// Takes the group out of the registry: new subscribers start a new one; members keep what was sent.
    fn retire(&self, group: &Group) {
        let mut state = self.lock();
        if state.groups.remove(&group.id).is_some() {
            if state.by_key.get(&group.key) == Some(&group.id) {
                state.by_key.remove(&group.key);
            }
            Self::unindex(&mut state, group);
        }
    }

    fn leave(&self, group: &Group) {
        if group.members.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.retire(group);
            if let Some(task) = group.task.lock().unwrap_or_else(|p| p.into_inner()).take() {
                task.abort();
            }
        }
        self.members.fetch_sub(1, Ordering::AcqRel);
        self.gauge(group.kind).dec();
    }
}

/// What a member receives next.
pub enum Next {
    Emission(Arc<Emission>),
    /// The member fell further behind than the group keeps: its transport should drop it.
    Overflow,
    /// The group is over.
    End,
}

/// One subscriber's place in a group; leaving is dropping it.
pub struct Membership {
    registry: Arc<Registry>,
    group: Arc<Group>,
    receiver: broadcast::Receiver<Arc<Emission>>,
    last_sent: Option<bytes::Bytes>,
}

impl Membership {
    /// Notes what the subscriber was sent before joining (its first result), so an identical one is not repeated.
    pub fn sent(&mut self, body: bytes::Bytes) {
        self.last_sent = Some(body);
    }

    /// The next result that differs from the last one sent.
    pub async fn next(&mut self) -> Next {
        loop {
            match self.receiver.recv().await {
                Ok(emission) => {
                    if !emission.last && self.last_sent.as_ref() == Some(&emission.body) {
                        continue;
                    }
                    self.last_sent = Some(emission.body.clone());
                    return Next::Emission(emission);
                }
                Err(broadcast::error::RecvError::Lagged(_)) => return Next::Overflow,
                Err(broadcast::error::RecvError::Closed) => return Next::End,
            }
        }
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.registry.leave(&self.group);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use futures_util::FutureExt;
    use tokio::sync::Semaphore;

    use super::*;

    fn metrics() -> LiveMetrics {
        let gauge = |n: &str| prometheus::IntGauge::new(n, "test").expect("gauge");
        let counter = |n: &str| prometheus::IntCounter::new(n, "test").expect("counter");
        LiveMetrics {
            connections: gauge("c"),
            subscriptions: gauge("s"),
            live_queries: gauge("l"),
            events_sent: counter("e"),
            reexecutions: counter("r"),
            slow_consumers: counter("o"),
            bus_errors: counter("b"),
        }
    }

    fn change(tag: &str) -> Change {
        Change {
            tags: vec![tag.to_owned()],
            events: Vec::new(),
        }
    }

    /// Waits until `cond` holds (the dispatcher and the group run on other worker threads).
    async fn until(cond: impl Fn() -> bool) {
        for _ in 0..500 {
            if cond() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        panic!("condition not reached");
    }

    /// On worker threads, where wake-ups may be deferred: wake-ups during a run schedule exactly one more run,
    /// which sees every change; tags outside the group's wake nothing; identical members share runs.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wake_ups_during_a_run_schedule_exactly_one_more() {
        let bus = Bus::new(None, "test:", metrics().bus_errors);
        let registry = Arc::new(Registry::new(10, metrics()));
        registry.start(&bus);
        let runs = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(Semaphore::new(0));
        let runner = {
            let (runs, seen, gate) = (runs.clone(), seen.clone(), gate.clone());
            move || -> Runner {
                Arc::new(move |trigger| {
                    let (runs, seen, gate) = (runs.clone(), seen.clone(), gate.clone());
                    async move {
                        runs.fetch_add(1, Ordering::SeqCst);
                        if let Trigger::Changed(changes) = trigger {
                            seen.fetch_add(changes.len(), Ordering::SeqCst);
                        }
                        // Held until the test lets it finish.
                        if let Ok(permit) = gate.acquire().await {
                            permit.forget();
                        }
                        tokio::task::yield_now().await;
                        Execution {
                            emissions: vec![Emission {
                                body: bytes::Bytes::from(format!(
                                    "run {}",
                                    runs.load(Ordering::SeqCst)
                                )),
                                last: false,
                            }],
                            tags: vec!["Post:1".to_owned()],
                        }
                    }
                    .boxed()
                })
            }
        };
        let mut first = registry
            .join(
                "k".into(),
                Kind::LiveQuery,
                vec!["Post:1".into()],
                runner.clone(),
            )
            .expect("joins");
        let mut second = registry
            .join("k".into(), Kind::LiveQuery, vec!["Post:1".into()], runner)
            .expect("joins");

        bus.publish(change("Post:2")).await;
        bus.publish(change("Post:1")).await;
        until(|| runs.load(Ordering::SeqCst) == 1).await;
        // Five changes while the run is held: they must add exactly one run.
        for _ in 0..5 {
            bus.publish(change("Post:1")).await;
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        gate.add_permits(1);
        until(|| runs.load(Ordering::SeqCst) == 2).await;
        gate.add_permits(1);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 2, "exactly one more run");
        assert_eq!(
            seen.load(Ordering::SeqCst),
            6,
            "the second run saw all five changes"
        );
        for member in [&mut first, &mut second] {
            for expected in ["run 1", "run 2"] {
                match member.next().await {
                    Next::Emission(e) => assert_eq!(e.body, expected),
                    _ => panic!("expected {expected}"),
                }
            }
        }
        assert_eq!(registry.running(), 2);
        drop(first);
        drop(second);
        assert_eq!(registry.running(), 0);
        // The group is gone: a change wakes nothing.
        bus.publish(change("Post:1")).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_instance_limit_refuses_and_frees() {
        let registry = Arc::new(Registry::new(1, metrics()));
        let runner = || -> Runner { Arc::new(|_| async { Execution::default() }.boxed()) };
        let held = registry
            .join("a".into(), Kind::Subscription, Vec::new(), runner)
            .expect("first");
        assert!(
            registry
                .join("b".into(), Kind::Subscription, Vec::new(), runner)
                .is_err()
        );
        drop(held);
        assert!(
            registry
                .join("b".into(), Kind::Subscription, Vec::new(), runner)
                .is_ok()
        );
    }
}
