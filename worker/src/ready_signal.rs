//! Tells the proxy at once that fields changed state (a backfill finished, a rescan began), so
//! it re-reads its catalog of ready fields then instead of at its next periodic refresh: a
//! type is served from the cache the moment it is ready. Within one process (`all`, tests)
//! through a watch channel; across processes through PostgreSQL's change notifications on the
//! state tables (`proxy::results`).

use std::sync::LazyLock;

use tokio::sync::watch;

/// Bumped at each announcement; receivers only care that it moved.
static CHANGED: LazyLock<watch::Sender<u64>> = LazyLock::new(|| watch::channel(0).0);

/// Field states changed: every proxy of this process refreshes its catalog now.
pub fn announce() {
    CHANGED.send_modify(|n| *n = n.wrapping_add(1));
}

/// A receiver whose `changed()` completes at the next announcement.
pub fn subscribe() -> watch::Receiver<u64> {
    CHANGED.subscribe()
}
