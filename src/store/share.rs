//! One statement for concurrent requests: an id-list statement (`Store::fetch_for_ids`) that is already running
//! for other requests does not start again for each new one. Callers of the same statement (same text, same
//! binds besides the id list, same row type) queue behind at most [`IN_FLIGHT`] running ones, and every caller
//! that queued meanwhile joins one next statement for all of their ids; each gets the rows of its own ids. A
//! queue that has waited [`STALL`] runs beside the running statement.
//!
//! Why: the database's cost of these statements is mostly per statement (a round trip, a plan lookup, a
//! snapshot), not per id, so under load a statement for the ids of eight requests costs little more than one
//! for the ids of one (a comment page statement for eight posts ran 2.9 times the posts per second of one per
//! post in `pgbench`). A quiet service never waits: a caller runs at once while fewer than [`IN_FLIGHT`] of its
//! statement run.
//!
//! Freshness: a caller only ever joins a statement that has not started yet, so what it reads is at least as
//! new as the moment it asked, as if it had run its own statement (what the cache's and the replicas'
//! guarantees rest on). If the caller leading a queued statement goes away (its request cancelled), the others
//! run their own.

use std::any::{Any, TypeId};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{oneshot, watch};

use crate::error::AppError;

/// How many of one statement run at once before callers queue for a shared next one. Measured on the `detail`
/// workload (32 connections, 2 cores): one gave 2,310-2,360 req/s at 0.28 statements per request, two 1,890-2,350
/// at 0.42-0.53, four 1,640, none (every caller its own) 1,090; more at once only spends the CPU the service
/// and the database share on more statements.
pub(crate) const IN_FLIGHT: usize = 1;

/// How long a queued statement waits for the running one before it runs beside it anyway: one slow statement
/// (a large batch, a cold page) must not hold up every request that needs the same relation.
const STALL: Duration = Duration::from_millis(25);

/// A statement: its text (the PostgreSQL text names it on both backends), its other binds, its row type.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct Statement {
    text: String,
    extra: Vec<i64>,
    rows: TypeId,
}

impl Statement {
    pub(crate) fn new<T: 'static>(text: &str, extra: &[i64]) -> Self {
        Self {
            text: text.to_owned(),
            extra: extra.to_vec(),
            rows: TypeId::of::<T>(),
        }
    }
}

/// What a shared statement returned: its rows (a `Vec<T>` of the statement's row type), or its error.
type Outcome = Option<Result<Arc<dyn Any + Send + Sync>, Arc<AppError>>>;

/// The statement queued behind the running ones.
struct Next {
    ids: Vec<i64>,
    seen: HashSet<i64>,
    /// Gives the queue's leader its turn, with everybody's ids.
    turn: oneshot::Sender<Vec<i64>>,
    /// Where the leader publishes the rows for the others.
    done: Arc<watch::Sender<Outcome>>,
}

#[derive(Default)]
struct Lane {
    running: usize,
    next: Option<Next>,
}

/// The lanes of one pool's statements.
#[derive(Default)]
pub(crate) struct Sharing {
    lanes: Mutex<HashMap<Statement, Lane>>,
}

impl std::fmt::Debug for Sharing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sharing").finish_non_exhaustive()
    }
}

enum Role {
    Run,
    Lead(oneshot::Receiver<Vec<i64>>, Arc<watch::Sender<Outcome>>),
    Join(watch::Receiver<Outcome>),
}

/// A running statement's place in its lane, given back (to the queue's leader, if any) when dropped.
struct Slot<'a> {
    sharing: &'a Sharing,
    statement: &'a Statement,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.sharing.give_back(self.statement);
    }
}

/// A queue leader's wait for its turn. If the leader goes away while it waits (its request cancelled), its
/// queued statement goes with it, so its followers run their own at once instead of waiting on a statement
/// nobody will run; and a turn it was given but never took is given back. A turn left taken would count a
/// statement running forever: every later caller would queue behind it, and once a queue's leader went away
/// with nothing running to hand its turn on, every caller of that statement would wait until its timeout.
struct Queued<'a> {
    sharing: &'a Sharing,
    statement: &'a Statement,
    done: &'a Arc<watch::Sender<Outcome>>,
    turn: oneshot::Receiver<Vec<i64>>,
    /// The leader has its place (a `Slot` gives it back), or runs without one.
    settled: bool,
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let taken = {
            let mut lanes = self.sharing.lanes.lock().unwrap_or_else(|p| p.into_inner());
            match lanes.get_mut(self.statement) {
                Some(lane)
                    if lane
                        .next
                        .as_ref()
                        .is_some_and(|n| Arc::ptr_eq(&n.done, self.done)) =>
                {
                    lane.next = None;
                    false
                }
                // No longer queued: the turn was handed over (under the lock, so it is in the channel now).
                _ => true,
            }
        };
        if taken && self.turn.try_recv().is_ok() {
            self.sharing.give_back(self.statement);
        }
    }
}

impl Sharing {
    /// Gives a running statement's place back: to the queue's leader, if any, or to the lane.
    fn give_back(&self, statement: &Statement) {
        let mut lanes = self.lanes.lock().unwrap_or_else(|p| p.into_inner());
        let Some(lane) = lanes.get_mut(statement) else {
            return;
        };
        if let Some(next) = lane.next.take() {
            // The place passes to the queue's leader; if it is gone, its followers see `done` closed and run
            // their own statements.
            if next.turn.send(next.ids).is_ok() {
                return;
            }
        }
        lane.running = lane.running.saturating_sub(1);
        if lane.running == 0 {
            lanes.remove(statement);
        }
    }

    /// Takes the queued statement `done` belongs to out of the queue to run beside the running ones (with a place
    /// of its own), if it is still queued: its ids. `None`: its turn has just been given.
    fn stalled(
        &self,
        statement: &Statement,
        done: &Arc<watch::Sender<Outcome>>,
    ) -> Option<Vec<i64>> {
        let mut lanes = self.lanes.lock().unwrap_or_else(|p| p.into_inner());
        let lane = lanes.get_mut(statement)?;
        if !lane
            .next
            .as_ref()
            .is_some_and(|n| Arc::ptr_eq(&n.done, done))
        {
            return None;
        }
        let next = lane.next.take()?;
        lane.running += 1;
        Some(next.ids)
    }

    /// Rows of `statement` for `ids` (each row's id by `key`; without `key`, every row: a statement without an
    /// id list), through `fetch` (which runs the statement for the ids it is given): at once, or in a
    /// statement shared with concurrent callers.
    pub(crate) async fn rows<T, F, Fut>(
        &self,
        statement: Statement,
        ids: &[i64],
        key: Option<fn(&T) -> i64>,
        fetch: F,
    ) -> Result<Vec<T>, AppError>
    where
        T: Clone + Send + Sync + 'static,
        F: FnOnce(Vec<i64>) -> Fut,
        Fut: Future<Output = Result<Vec<T>, AppError>>,
    {
        let role = {
            let mut lanes = self.lanes.lock().unwrap_or_else(|p| p.into_inner());
            let lane = lanes.entry(statement.clone()).or_default();
            match &mut lane.next {
                None if lane.running < IN_FLIGHT => {
                    lane.running += 1;
                    Role::Run
                }
                Some(next) => {
                    for id in ids {
                        if next.seen.insert(*id) {
                            next.ids.push(*id);
                        }
                    }
                    Role::Join(next.done.subscribe())
                }
                None => {
                    let (turn, my_turn) = oneshot::channel();
                    let done = Arc::new(watch::channel(None).0);
                    lane.next = Some(Next {
                        ids: ids.to_vec(),
                        seen: ids.iter().copied().collect(),
                        turn,
                        done: Arc::clone(&done),
                    });
                    Role::Lead(my_turn, done)
                }
            }
        };
        match role {
            Role::Run => {
                let _slot = Slot {
                    sharing: self,
                    statement: &statement,
                };
                fetch(ids.to_vec()).await
            }
            Role::Lead(turn, done) => {
                let mut queued = Queued {
                    sharing: self,
                    statement: &statement,
                    done: &done,
                    turn,
                    settled: false,
                };
                let all = match tokio::time::timeout(STALL, &mut queued.turn).await {
                    Ok(turn) => turn.ok(),
                    Err(_) => match self.stalled(&statement, &done) {
                        Some(all) => Some(all),
                        None => (&mut queued.turn).await.ok(),
                    },
                };
                queued.settled = true;
                drop(queued);
                let Some(all) = all else {
                    return fetch(ids.to_vec()).await;
                };
                let _slot = Slot {
                    sharing: self,
                    statement: &statement,
                };
                let alone = all.len() == ids.len();
                let rows = fetch(all).await;
                if alone && done.receiver_count() == 0 {
                    return rows;
                }
                match rows {
                    Ok(rows) => {
                        let rows = Arc::new(rows);
                        let shared: Arc<dyn Any + Send + Sync> = rows.clone();
                        done.send_replace(Some(Ok(shared)));
                        Ok(own(&rows, ids, key))
                    }
                    Err(err) => {
                        let err = Arc::new(err);
                        done.send_replace(Some(Err(Arc::clone(&err))));
                        Err(echo(&err))
                    }
                }
            }
            Role::Join(mut done) => {
                // `None`: the leader went away before publishing; run alone.
                let outcome = done
                    .wait_for(Option::is_some)
                    .await
                    .ok()
                    .and_then(|o| o.clone());
                match outcome {
                    Some(Ok(rows)) => match rows.downcast::<Vec<T>>() {
                        Ok(rows) => Ok(own(&rows, ids, key)),
                        Err(_) => fetch(ids.to_vec()).await,
                    },
                    Some(Err(err)) => Err(echo(&err)),
                    None => fetch(ids.to_vec()).await,
                }
            }
        }
    }
}

/// The rows of `ids` among a shared statement's.
fn own<T: Clone>(rows: &[T], ids: &[i64], key: Option<fn(&T) -> i64>) -> Vec<T> {
    let Some(key) = key else {
        return rows.to_vec();
    };
    if ids.len() <= 8 {
        rows.iter()
            .filter(|r| ids.contains(&key(r)))
            .cloned()
            .collect()
    } else {
        let ids: HashSet<i64> = ids.iter().copied().collect();
        rows.iter()
            .filter(|r| ids.contains(&key(r)))
            .cloned()
            .collect()
    }
}

/// A shared statement's error, for each caller that shared it.
fn echo(err: &AppError) -> AppError {
    match err {
        AppError::Unavailable(message) => AppError::Unavailable(message.clone()),
        other => AppError::Internal(anyhow::anyhow!("a shared statement failed: {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::Pin;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// A statement that takes a while (less than `STALL`), counting how often it ran; each row is its id times
    /// ten.
    async fn slow(ids: Vec<i64>, runs: &AtomicUsize) -> Result<Vec<(i64, i64)>, AppError> {
        runs.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(STALL / 3).await;
        Ok(ids.into_iter().map(|id| (id, id * 10)).collect())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_statement_running_long_does_not_hold_up_the_next() {
        let sharing = Arc::new(Sharing::default());
        let st = || Statement::new::<(i64, i64)>("SELECT", &[]);
        let long = {
            let sharing = Arc::clone(&sharing);
            tokio::spawn(async move {
                sharing
                    .rows(st(), &[1], Some(|r: &(i64, i64)| r.0), |ids| async move {
                        tokio::time::sleep(STALL * 20).await;
                        Ok(ids.into_iter().map(|id| (id, 0)).collect())
                    })
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(5)).await;
        let started = std::time::Instant::now();
        let runs = AtomicUsize::new(0);
        let rows = sharing
            .rows(st(), &[2], Some(|r: &(i64, i64)| r.0), |ids| {
                slow(ids, &runs)
            })
            .await
            .expect("rows");
        assert_eq!(rows, vec![(2, 20)]);
        assert!(
            started.elapsed() < STALL * 10,
            "ran beside the long one after about STALL: {:?}",
            started.elapsed()
        );
        long.await.expect("task").expect("rows");
        assert!(
            sharing.lanes.lock().expect("lanes").is_empty(),
            "lanes are let go"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn callers_beyond_the_running_statements_share_one_and_get_their_own_rows() {
        let sharing = Arc::new(Sharing::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let calls = (0..20i64).map(|i| {
            let (sharing, runs) = (Arc::clone(&sharing), Arc::clone(&runs));
            tokio::spawn(async move {
                let ids = vec![i, 100 + i % 3];
                let st = Statement::new::<(i64, i64)>("SELECT", &[]);
                let rows = sharing
                    .rows(st, &ids, Some(|r: &(i64, i64)| r.0), |ids| slow(ids, &runs))
                    .await
                    .expect("rows");
                (ids, rows)
            })
        });
        for call in futures_util::future::join_all(calls).await {
            let (ids, mut rows) = call.expect("task");
            rows.sort();
            let want: Vec<(i64, i64)> = ids.iter().map(|id| (*id, id * 10)).collect();
            let mut want = want;
            want.sort();
            want.dedup();
            assert_eq!(rows, want, "each caller gets exactly the rows of its ids");
        }
        // Two ran at once, every other caller queued into one shared statement after them.
        assert_eq!(runs.load(Ordering::SeqCst), IN_FLIGHT + 1);
        assert!(
            sharing.lanes.lock().expect("lanes").is_empty(),
            "lanes are let go"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn different_statements_and_quiet_callers_do_not_wait() {
        let sharing = Sharing::default();
        let runs = AtomicUsize::new(0);
        for text in ["A", "B", "A"] {
            let st = Statement::new::<(i64, i64)>(text, &[]);
            let rows = sharing
                .rows(st, &[1], Some(|r: &(i64, i64)| r.0), |ids| slow(ids, &runs))
                .await
                .expect("rows");
            assert_eq!(rows, vec![(1, 10)]);
        }
        assert_eq!(runs.load(Ordering::SeqCst), 3);
    }

    /// Polls `f` once, as a runtime would when the caller first asks.
    fn poll_once<F: Future + Unpin>(f: &mut F) -> std::task::Poll<F::Output> {
        let waker = std::task::Waker::noop();
        std::pin::Pin::new(f).poll(&mut std::task::Context::from_waker(waker))
    }

    type Rows<'a> = Pin<Box<dyn Future<Output = Result<Vec<(i64, i64)>, AppError>> + 'a>>;

    /// Rows of `ids` for a caller of `sharing`'s one statement, through `fetch`.
    fn ask<'a, Fut>(
        sharing: &'a Sharing,
        id: i64,
        fetch: impl FnOnce(Vec<i64>) -> Fut + 'a,
    ) -> Rows<'a>
    where
        Fut: Future<Output = Result<Vec<(i64, i64)>, AppError>> + 'a,
    {
        let st = Statement::new::<(i64, i64)>("SELECT", &[]);
        Box::pin(async move {
            sharing
                .rows(st, &[id], Some(|r: &(i64, i64)| r.0), fetch)
                .await
        })
    }

    async fn tens(ids: Vec<i64>) -> Result<Vec<(i64, i64)>, AppError> {
        Ok(ids.into_iter().map(|id| (id, id * 10)).collect())
    }

    /// A statement running until `release` is sent, and a caller queued behind it, leading the next one.
    fn running_and_queued(sharing: &Sharing) -> (oneshot::Sender<()>, Rows<'_>, Rows<'_>) {
        let (release, released) = oneshot::channel::<()>();
        let mut running = ask(sharing, 1, |ids| async move {
            let _ = released.await;
            tens(ids).await
        });
        assert!(poll_once(&mut running).is_pending(), "runs");
        let mut leader = ask(sharing, 2, tens);
        assert!(poll_once(&mut leader).is_pending(), "queues, leading");
        (release, running, leader)
    }

    /// A queue's leader that goes away while the statement before it runs takes its queued statement along: its
    /// follower runs its own at once rather than wait on a statement nobody will run.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_leader_gone_while_queued_leaves_no_statement_to_wait_on() {
        let sharing = Sharing::default();
        let (release, running, leader) = running_and_queued(&sharing);
        let mut follower = ask(&sharing, 3, tens);
        assert!(
            poll_once(&mut follower).is_pending(),
            "joins the queued statement"
        );
        drop(leader);
        let rows = tokio::time::timeout(STALL / 2, follower)
            .await
            .expect("the follower runs its own while the first statement still runs")
            .expect("rows");
        assert_eq!(rows, vec![(3, 30)]);
        let _ = release.send(());
        running.await.expect("rows");
        assert!(
            sharing.lanes.lock().expect("lanes").is_empty(),
            "lanes are let go"
        );
    }

    /// A leader given its turn that goes away before taking it gives the turn back: the next caller runs at once
    /// (a turn left taken would make every later one wait `STALL`, and could leave a queue nobody runs).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_turn_given_to_a_leader_that_went_away_is_given_back() {
        let sharing = Sharing::default();
        let (release, running, leader) = running_and_queued(&sharing);
        let _ = release.send(());
        running.await.expect("rows");
        // The running statement has handed its place to the leader, which goes away without taking it.
        drop(leader);
        assert!(
            sharing.lanes.lock().expect("lanes").is_empty(),
            "the place is given back"
        );
        let rows = tokio::time::timeout(STALL / 2, ask(&sharing, 4, tens))
            .await
            .expect("the next caller runs at once")
            .expect("rows");
        assert_eq!(rows, vec![(4, 40)]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cancelled_leader_leaves_its_followers_to_run_their_own() {
        let sharing = Arc::new(Sharing::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let st = || Statement::new::<(i64, i64)>("SELECT", &[]);
        let spawn = |id: i64| {
            let (sharing, runs) = (Arc::clone(&sharing), Arc::clone(&runs));
            tokio::spawn(async move {
                sharing
                    .rows(st(), &[id], Some(|r: &(i64, i64)| r.0), |ids| {
                        slow(ids, &runs)
                    })
                    .await
            })
        };
        let running: Vec<_> = (0..IN_FLIGHT as i64).map(spawn).collect();
        tokio::time::sleep(Duration::from_millis(1)).await;
        let leader = spawn(10);
        tokio::time::sleep(Duration::from_millis(1)).await;
        let follower = spawn(11);
        tokio::time::sleep(Duration::from_millis(1)).await;
        leader.abort();
        let rows = tokio::time::timeout(Duration::from_secs(2), follower)
            .await
            .expect("the follower is not left waiting")
            .expect("task")
            .expect("rows");
        assert_eq!(rows, vec![(11, 110)]);
        for r in running {
            r.await.expect("task").expect("rows");
        }
        assert!(
            sharing.lanes.lock().expect("lanes").is_empty(),
            "lanes are let go"
        );
    }
}
