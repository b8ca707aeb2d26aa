//! Reconciles a cache as soon as its backfill progresses, so `Ready` and the backfill's
//! progress in the status follow the scanner within the database's notification delay rather
//! than at the next requeue (up to 1 s for a young backfill, 30 s for a long one).
//!
//! While a reconcile finds fields still to fill, one task per cache waits on the cache's change
//! notifications ([`CacheDatabase::backfill_progressed`]) and, when fewer fields are left,
//! sends the cache to the controller (`Controller::reconcile_on`). The requeue stays as it was:
//! the wake only comes earlier, never instead.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::runtime::reflector::ObjectRef;
use kube::ResourceExt;
use tokio::sync::mpsc;

use crate::crd::ShotgunCache;
use crate::db::{CacheDatabase, Connection};

/// How long one task waits before it ends (the next reconcile starts another while the
/// backfill lasts): bounded, so a cache deleted meanwhile holds no connection for long.
pub const WAIT_AT_MOST: Duration = Duration::from_secs(30);

/// The caches followed now, and where their wakes go.
pub struct BackfillWakes {
    tx: mpsc::UnboundedSender<ObjectRef<ShotgunCache>>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<ObjectRef<ShotgunCache>>>>,
    followed: Mutex<HashSet<ObjectRef<ShotgunCache>>>,
}

impl Default for BackfillWakes {
    fn default() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        BackfillWakes {
            tx,
            rx: Mutex::new(Some(rx)),
            followed: Mutex::default(),
        }
    }
}

impl BackfillWakes {
    /// The wakes, for `Controller::reconcile_on` (once).
    pub fn take_receiver(&self) -> Option<mpsc::UnboundedReceiver<ObjectRef<ShotgunCache>>> {
        self.rx.lock().expect("lock").take()
    }

    /// Follows `cache`'s backfill (`pending` fields left to fill) unless a task does already.
    pub fn follow(
        self: &Arc<Self>,
        db: Arc<dyn CacheDatabase>,
        cache: &ShotgunCache,
        conn: Connection,
        pending: usize,
    ) {
        let target = ObjectRef::from_obj(cache);
        if pending == 0 || !self.followed.lock().expect("lock").insert(target.clone()) {
            return;
        }
        let wakes = self.clone();
        let name = cache.name_any();
        tokio::spawn(async move {
            let progressed = db.backfill_progressed(&conn, pending, WAIT_AT_MOST).await;
            wakes.followed.lock().expect("lock").remove(&target);
            match progressed {
                Ok(true) => {
                    // Closed only when the controller stopped: nothing left to wake.
                    let _ = wakes.tx.send(target);
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::debug!(cache = %name, error = %e, "cannot follow the backfill; the requeue will")
                }
            }
        });
    }

    /// Whether a task follows `cache` now.
    pub fn follows(&self, cache: &ShotgunCache) -> bool {
        self.followed
            .lock()
            .expect("lock")
            .contains(&ObjectRef::from_obj(cache))
    }
}
