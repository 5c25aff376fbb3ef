//! Single-flight: concurrent misses of one key on one instance run the work once and share its result.
//!
//! The first caller runs the work itself, and the others wait for its result: running it on a task of its own
//! costs every miss a spawn and two wake-ups across threads, 3-7% of a miss's throughput on two cores. If the
//! first caller goes away before the work finishes (its client disconnected), its work is dropped with it
//! (statements cancelled, connections returned to the pool) and the callers waiting start over: one of them
//! runs its own work.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

/// In-flight work by key: where its result will be announced.
pub struct SingleFlight<K, V> {
    flights: Arc<Mutex<HashMap<K, watch::Receiver<Option<V>>>>>,
}

impl<K, V> Default for SingleFlight<K, V> {
    fn default() -> Self {
        Self {
            flights: Arc::new(Mutex::new(HashMap::new())),
        }
    }
}

/// The running caller's hold on its flight: on drop (finished or abandoned) the flight is forgotten, and an
/// unfinished one's waiting callers learn that nobody will answer them.
struct Leading<K: Eq + Hash, V> {
    flights: Arc<Mutex<HashMap<K, watch::Receiver<Option<V>>>>>,
    key: Option<K>,
}

impl<K: Eq + Hash, V> Drop for Leading<K, V> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.flights
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&key);
        }
    }
}

impl<K, V> SingleFlight<K, V>
where
    K: Eq + Hash + Clone,
    V: Clone,
{
    /// The result of `work` for `key`: run now by this caller if no call for `key` is in flight, otherwise the
    /// running one's. The second value says whether this call ran its work.
    pub async fn run<F>(&self, key: K, work: F) -> (V, bool)
    where
        F: Future<Output = V>,
    {
        loop {
            let waiting = {
                let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
                match flights.get(&key) {
                    Some(flight) => Ok(flight.clone()),
                    None => {
                        let (announce, flight) = watch::channel(None);
                        flights.insert(key.clone(), flight);
                        Err(announce)
                    }
                }
            };
            match waiting {
                Ok(mut flight) => {
                    // An error: the running caller went away without a result; start over.
                    if let Ok(value) = flight.wait_for(Option::is_some).await
                        && let Some(value) = value.as_ref()
                    {
                        return (value.clone(), false);
                    }
                }
                Err(announce) => {
                    let leading = Leading {
                        flights: Arc::clone(&self.flights),
                        key: Some(key),
                    };
                    let value = work.await;
                    announce.send_replace(Some(value.clone()));
                    drop(leading);
                    return (value, true);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn concurrent_calls_share_one_run() {
        let flights: Arc<SingleFlight<u8, usize>> = Arc::default();
        let runs = Arc::new(AtomicUsize::new(0));
        let calls = (0..8).map(|_| {
            let flights = Arc::clone(&flights);
            let runs = Arc::clone(&runs);
            tokio::spawn(async move {
                flights
                    .run(1, async move {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        runs.fetch_add(1, Ordering::SeqCst) + 100
                    })
                    .await
            })
        });
        let results = futures_util::future::join_all(calls).await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        let leaders = results
            .iter()
            .filter(|r| matches!(r, Ok((100, true))))
            .count();
        assert_eq!(leaders, 1);
        assert!(results.iter().all(|r| matches!(r, Ok((100, _)))));
        // Finished flights are forgotten: the next call runs again.
        let (v, leader) = flights.run(1, async { 7 }).await;
        assert_eq!((v, leader), (7, true));
    }

    /// The running caller goes away (its request dropped) before its work finishes: a waiting caller is not
    /// stranded, it runs its own work.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_caller_left_by_the_running_one_runs_its_own_work() {
        let flights: Arc<SingleFlight<u8, &'static str>> = Arc::default();
        let first = {
            let flights = Arc::clone(&flights);
            tokio::spawn(async move {
                flights
                    .run(1, async {
                        tokio::time::sleep(Duration::from_secs(60)).await;
                        "never"
                    })
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let second = {
            let flights = Arc::clone(&flights);
            tokio::spawn(async move { flights.run(1, async { "second" }).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!second.is_finished(), "waits for the running caller");
        first.abort();
        let answer = tokio::time::timeout(Duration::from_secs(5), second)
            .await
            .expect("not stranded")
            .expect("no panic");
        assert_eq!(answer, ("second", true));
        assert!(flights.flights.lock().expect("lock").is_empty());
    }
}
