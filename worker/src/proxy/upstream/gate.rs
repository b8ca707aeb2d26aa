//! The site's share of concurrency: at most `maxConcurrent` requests of this replica at the
//! site at once; beyond that requests wait in a queue, one lane per principal, and a freed
//! turn goes to the next lane in round-robin order. A storm from one principal therefore
//! queues behind itself, and another principal's single read waits for at most one turn per
//! busy lane. The queue is bounded in length (`maxQueued`) and in time (`maxWait`): only those
//! two answer "busy".

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// Whose turn a request takes: a principal's credential digest, or one of the lanes below.
pub type Lane = [u8; 32];

/// Requests without credentials (malformed bodies, `info`).
pub const ANONYMOUS: Lane = [0; 32];
/// The proxy's own background requests (trust checks, verification, refreshes).
pub const BACKGROUND: Lane = [0xff; 32];

/// Why a request got no turn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Busy {
    /// `maxQueued` requests were waiting already.
    QueueFull,
    /// No turn came within `maxWait`.
    WaitExpired,
}

impl Busy {
    pub fn label(self) -> &'static str {
        match self {
            Busy::QueueFull => "site_queue_full",
            Busy::WaitExpired => "site_wait_expired",
        }
    }
}

#[derive(Clone, Debug)]
pub struct GateLimits {
    pub max_concurrent: usize,
    pub max_queued: usize,
    pub max_wait: Duration,
}

impl GateLimits {
    pub fn from_spec(spec: &sgcache::spec::ProxySiteSpec) -> Self {
        GateLimits {
            max_concurrent: spec.max_concurrent.max(1) as usize,
            max_queued: spec.max_queued as usize,
            max_wait: spec.max_wait.duration(),
        }
    }
}

impl Default for GateLimits {
    fn default() -> Self {
        GateLimits::from_spec(&sgcache::spec::ProxySiteSpec::default())
    }
}

struct Waiter {
    id: u64,
    turn: oneshot::Sender<()>,
}

#[derive(Default)]
struct State {
    running: usize,
    queued: usize,
    next_id: u64,
    lanes: HashMap<Lane, VecDeque<Waiter>>,
    /// Lanes with waiters, in the order their next turn comes.
    order: VecDeque<Lane>,
}

impl State {
    /// Hands a freed turn to the next waiter, round-robin over lanes; false when nobody waits.
    fn hand_over(&mut self) -> bool {
        while let Some(lane) = self.order.pop_front() {
            let Some(waiters) = self.lanes.get_mut(&lane) else {
                continue;
            };
            let next = waiters.pop_front();
            if waiters.is_empty() {
                self.lanes.remove(&lane);
            } else {
                self.order.push_back(lane);
            }
            if let Some(w) = next {
                self.queued -= 1;
                // A waiter whose request went away takes no turn.
                if w.turn.send(()).is_ok() {
                    return true;
                }
            }
        }
        false
    }

    fn remove(&mut self, lane: &Lane, id: u64) {
        let Some(waiters) = self.lanes.get_mut(lane) else {
            return;
        };
        if let Some(at) = waiters.iter().position(|w| w.id == id) {
            waiters.remove(at);
            self.queued -= 1;
        }
        if waiters.is_empty() {
            self.lanes.remove(lane);
            self.order.retain(|l| l != lane);
        }
    }
}

pub struct Gate {
    limits: GateLimits,
    state: Arc<Mutex<State>>,
}

/// A request's place in the queue. Dropped before its turn came (timed out, or the request
/// went away), it leaves the queue, and a turn handed to it in the meantime goes on to the
/// next waiter: no count drifts and no turn is lost.
struct Place<'a> {
    gate: &'a Gate,
    lane: Lane,
    id: u64,
    rx: oneshot::Receiver<()>,
    /// It got its turn: nothing to give up.
    served: bool,
}

impl Place<'_> {
    /// Closes the channel; whether a turn had arrived in it.
    fn take_turn(&mut self) -> bool {
        self.rx.close();
        self.rx.try_recv().is_ok()
    }
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        if self.served {
            return;
        }
        let had_turn = self.take_turn();
        let mut state = self.gate.lock();
        state.remove(&self.lane, self.id);
        if had_turn && !state.hand_over() {
            state.running -= 1;
        }
    }
}

/// A turn at the site; the next waiter gets it when this is dropped.
pub struct Turn {
    state: Arc<Mutex<State>>,
    /// How long the request waited for it.
    pub waited: Duration,
}

impl Drop for Turn {
    fn drop(&mut self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if !state.hand_over() {
            state.running -= 1;
        }
    }
}

impl Gate {
    pub fn new(limits: GateLimits) -> Gate {
        Gate {
            limits,
            state: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Requests at the site now, and waiting for a turn.
    pub fn load(&self) -> (usize, usize) {
        let s = self.lock();
        (s.running, s.queued)
    }

    /// A turn for a request of `lane`: at once if one is free and nobody waits, else after
    /// the queue.
    pub async fn enter(&self, lane: Lane) -> Result<Turn, Busy> {
        let start = Instant::now();
        let (id, rx) = {
            let mut s = self.lock();
            if s.running < self.limits.max_concurrent && s.queued == 0 {
                s.running += 1;
                return Ok(self.turn(start));
            }
            if s.queued >= self.limits.max_queued {
                return Err(Busy::QueueFull);
            }
            let (tx, rx) = oneshot::channel();
            s.next_id += 1;
            let id = s.next_id;
            s.queued += 1;
            let waiters = s.lanes.entry(lane).or_default();
            if waiters.is_empty() {
                s.order.push_back(lane);
            }
            s.lanes
                .get_mut(&lane)
                .expect("just added")
                .push_back(Waiter { id, turn: tx });
            (id, rx)
        };
        self.wait(lane, id, rx, start).await
    }

    async fn wait(
        &self,
        lane: Lane,
        id: u64,
        rx: oneshot::Receiver<()>,
        start: Instant,
    ) -> Result<Turn, Busy> {
        let mut place = Place {
            gate: self,
            lane,
            id,
            rx,
            served: false,
        };
        let left = self.limits.max_wait.saturating_sub(start.elapsed());
        let got = matches!(tokio::time::timeout(left, &mut place.rx).await, Ok(Ok(())));
        // On time-out, a turn handed over in the same instant is taken rather than lost.
        if got || place.take_turn() {
            place.served = true;
            return Ok(self.turn(start));
        }
        Err(Busy::WaitExpired)
    }

    fn turn(&self, start: Instant) -> Turn {
        Turn {
            state: self.state.clone(),
            waited: start.elapsed(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(max_concurrent: usize, max_queued: usize, max_wait_ms: u64) -> Arc<Gate> {
        Arc::new(Gate::new(GateLimits {
            max_concurrent,
            max_queued,
            max_wait: Duration::from_millis(max_wait_ms),
        }))
    }

    #[tokio::test]
    async fn turns_are_bounded_and_handed_over() {
        let g = gate(2, 10, 1000);
        let a = g.enter([1; 32]).await.unwrap();
        let _b = g.enter([1; 32]).await.unwrap();
        assert_eq!(g.load(), (2, 0));
        let g2 = g.clone();
        let third = tokio::spawn(async move { g2.enter([1; 32]).await.map(|_| ()) });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(g.load(), (2, 1));
        drop(a);
        assert_eq!(third.await.unwrap(), Ok(()));
        assert_eq!(g.load(), (1, 0), "the third's turn ended with its task");
    }

    #[tokio::test]
    async fn a_full_queue_and_an_expired_wait_are_busy() {
        let g = gate(1, 1, 50);
        let _held = g.enter([1; 32]).await.unwrap();
        let g2 = g.clone();
        let waiting = tokio::spawn(async move { g2.enter([1; 32]).await.map(|_| ()) });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(g.enter([2; 32]).await.err(), Some(Busy::QueueFull));
        assert_eq!(waiting.await.unwrap(), Err(Busy::WaitExpired));
        assert_eq!(g.load(), (1, 0), "an expired waiter leaves the queue");
    }

    #[tokio::test]
    async fn lanes_take_turns() {
        // One turn, held; principal A queues five requests, then B one. When turns free up,
        // B's comes second, not sixth.
        let g = gate(1, 100, 5000);
        let held = g.enter([9; 32]).await.unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (i, lane) in [[1u8; 32]; 5].into_iter().chain([[2u8; 32]]).enumerate() {
            let (g, order) = (g.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let _turn = g.enter(lane).await.unwrap();
                order
                    .lock()
                    .unwrap()
                    .push(if lane[0] == 2 { "B" } else { "A" });
                tokio::time::sleep(Duration::from_millis(5)).await;
                i
            }));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        drop(held);
        for t in tasks {
            t.await.unwrap();
        }
        let order = order.lock().unwrap().clone();
        assert_eq!(order, ["A", "B", "A", "A", "A", "A"]);
    }

    #[tokio::test]
    async fn a_waiter_that_went_away_takes_no_turn() {
        let g = gate(1, 10, 5000);
        let held = g.enter([1; 32]).await.unwrap();
        let g2 = g.clone();
        let gone = tokio::spawn(async move { g2.enter([2; 32]).await.map(|_| ()) });
        tokio::time::sleep(Duration::from_millis(10)).await;
        gone.abort();
        let _ = gone.await;
        assert_eq!(g.load(), (1, 0), "it left the queue");
        drop(held);
        assert_eq!(g.load(), (0, 0));
        assert!(g.enter([3; 32]).await.is_ok());
    }
}
