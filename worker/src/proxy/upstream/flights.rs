//! Identical work in flight done once: the first request for a key starts it, every request
//! for the same key that arrives while it runs waits for the same answer.
//!
//! The work runs in a task of its own, so a waiter that goes away (a client that
//! disconnects, even the one that started it) cancels nothing for the others. The task takes
//! its key out of the map when it ends, panic included, so a later request never gets an
//! answer from before it arrived.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::future::{BoxFuture, FutureExt, Shared};

/// What identifies identical work (a digest of everything that makes two requests the same).
pub type FlightKey = [u8; 32];

/// The work panicked: every waiter gets this instead of an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Panicked;

type Answer<V> = Shared<BoxFuture<'static, Result<V, Panicked>>>;

type Map<V> = Mutex<HashMap<FlightKey, (u64, Answer<V>)>>;

pub struct Flights<V: Clone> {
    map: Arc<Map<V>>,
    next_id: AtomicU64,
}

impl<V: Clone> Default for Flights<V> {
    fn default() -> Self {
        Flights {
            map: Arc::default(),
            next_id: AtomicU64::new(0),
        }
    }
}

/// Removes a flight's key when its task ends, however it ends.
struct Landing<V: Clone> {
    map: Arc<Map<V>>,
    key: FlightKey,
    id: u64,
}

impl<V: Clone> Drop for Landing<V> {
    fn drop(&mut self) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.get(&self.key).is_some_and(|(id, _)| *id == self.id) {
            map.remove(&self.key);
        }
    }
}

impl<V: Clone + Send + Sync + 'static> Flights<V> {
    /// The answer of the flight for `key`: joined when one is under way (`true`), else
    /// started with `work` (`false`).
    pub async fn run<F>(
        &self,
        key: FlightKey,
        work: impl FnOnce() -> F,
    ) -> (Result<V, Panicked>, bool)
    where
        F: Future<Output = V> + Send + 'static,
    {
        let (answer, joined) = self.join_or_start(key, work);
        (answer.await, joined)
    }

    fn join_or_start<F>(&self, key: FlightKey, work: impl FnOnce() -> F) -> (Answer<V>, bool)
    where
        F: Future<Output = V> + Send + 'static,
    {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, answer)) = map.get(&key) {
            return (answer.clone(), true);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let landing = Landing {
            map: self.map.clone(),
            key,
            id,
        };
        let work = work();
        let task = tokio::spawn(async move {
            let _landing = landing;
            work.await
        });
        let answer = task.map(|r| r.map_err(|_| Panicked)).boxed().shared();
        map.insert(key, (id, answer.clone()));
        (answer, false)
    }

    /// Flights under way.
    pub fn under_way(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use super::*;

    fn counted(
        runs: &Arc<AtomicUsize>,
        wait: Duration,
        value: u32,
    ) -> impl FnOnce() -> BoxFuture<'static, u32> {
        let runs = runs.clone();
        move || {
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(wait).await;
                value
            }
            .boxed()
        }
    }

    #[tokio::test]
    async fn identical_work_in_flight_runs_once() {
        let flights = Arc::new(Flights::<u32>::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let mut waiters = Vec::new();
        for _ in 0..50 {
            let (f, r) = (flights.clone(), runs.clone());
            waiters.push(tokio::spawn(async move {
                f.run([1; 32], counted(&r, Duration::from_millis(50), 7))
                    .await
            }));
        }
        let mut joined = 0;
        for w in waiters {
            let (v, j) = w.await.unwrap();
            assert_eq!(v, Ok(7));
            joined += j as usize;
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(joined, 49);
        assert_eq!(flights.under_way(), 0, "the key leaves with its flight");
    }

    #[tokio::test]
    async fn different_keys_and_later_requests_start_their_own() {
        let flights = Flights::<u32>::default();
        let runs = Arc::new(AtomicUsize::new(0));
        let (a, b) = tokio::join!(
            flights.run([1; 32], counted(&runs, Duration::from_millis(20), 1)),
            flights.run([2; 32], counted(&runs, Duration::from_millis(20), 2)),
        );
        assert_eq!((a, b), ((Ok(1), false), (Ok(2), false)));
        let again = flights
            .run([1; 32], counted(&runs, Duration::ZERO, 3))
            .await;
        assert_eq!(
            again,
            (Ok(3), false),
            "a landed flight answers nobody later"
        );
        assert_eq!(runs.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_waiter_that_leaves_cancels_nothing() {
        let flights = Arc::new(Flights::<u32>::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let (f, r) = (flights.clone(), runs.clone());
        let first = tokio::spawn(async move {
            f.run([1; 32], counted(&r, Duration::from_millis(100), 9))
                .await
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let second = flights.run([1; 32], counted(&runs, Duration::ZERO, 0));
        first.abort(); // the one that started it goes away
        assert_eq!(second.await, (Ok(9), true));
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_panic_reaches_every_waiter_and_frees_the_key() {
        let flights = Flights::<u32>::default();
        let boom = || async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            panic!("planted")
        };
        let (a, b) = tokio::join!(flights.run([5; 32], boom), flights.run([5; 32], boom));
        assert_eq!((a.0, b.0), (Err(Panicked), Err(Panicked)));
        assert_eq!(flights.under_way(), 0);
        let after = flights.run([5; 32], || async { 1 }).await;
        assert_eq!(after, (Ok(1), false));
    }
}
