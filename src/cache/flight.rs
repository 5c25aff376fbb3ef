//! Single-flight: concurrent misses of one key on one instance run the work once and share its result.
//!
//! The work runs in its own task, so it finishes (and releases its database connection) even if every caller
//! waiting for it goes away.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use futures_util::future::{BoxFuture, FutureExt, Shared};

type Flight<V> = Shared<BoxFuture<'static, Option<V>>>;

/// In-flight work by key.
pub struct SingleFlight<K, V> {
    flights: Arc<Mutex<HashMap<K, Flight<V>>>>,
}

impl<K, V> Default for SingleFlight<K, V> {
    fn default() -> Self {
        Self {
            flights: Arc::new(Mutex::new(HashMap::new())),
        }
    }
}

impl<K, V> SingleFlight<K, V>
where
    K: Eq + Hash + Clone + Send + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// The result of `work` for `key`: started now if no call for `key` is in flight, otherwise the running
    /// one's. `None` if the work panicked. The second value says whether this call started the work.
    pub async fn run<F>(&self, key: K, work: F) -> (Option<V>, bool)
    where
        F: Future<Output = V> + Send + 'static,
    {
        let (flight, leader) = {
            let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
            match flights.get(&key) {
                Some(flight) => (flight.clone(), false),
                None => {
                    let map = Arc::clone(&self.flights);
                    let done_key = key.clone();
                    let task = tokio::spawn(async move {
                        let value = work.await;
                        map.lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .remove(&done_key);
                        value
                    });
                    let flights_on_panic = Arc::clone(&self.flights);
                    let panic_key = key.clone();
                    let flight = async move {
                        match task.await {
                            Ok(value) => Some(value),
                            Err(err) => {
                                tracing::error!(error = %err, "cached execution failed");
                                flights_on_panic
                                    .lock()
                                    .unwrap_or_else(|p| p.into_inner())
                                    .remove(&panic_key);
                                None
                            }
                        }
                    }
                    .boxed()
                    .shared();
                    flights.insert(key, flight.clone());
                    (flight, true)
                }
            }
        };
        (flight.await, leader)
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
            .filter(|r| matches!(r, Ok((Some(100), true))))
            .count();
        assert_eq!(leaders, 1);
        assert!(results.iter().all(|r| matches!(r, Ok((Some(100), _)))));
        // Finished flights are forgotten: the next call runs again.
        let (v, leader) = flights.run(1, async { 7 }).await;
        assert_eq!((v, leader), (Some(7), true));
    }
}
