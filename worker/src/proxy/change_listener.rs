//! The change listener: follows `sgcache_changed` notifications on a connection of its own
//! and keeps the answer cache ([`super::answer_cache`]) live only while it hears them (and
//! its own heartbeat, sent through the read pool: a connection can die silently).

use std::sync::Arc;
use std::time::{Duration, Instant};

use sgcache::sql::{Db, PgLimits};
use sgcache::storage::notify;
use tokio_util::sync::CancellationToken;

use super::cache_db::CacheDb;

/// Listens for change notifications while the proxy runs and keeps `cache.results` live only
/// while it hears them. Reconnects after losing the connection (answers kept meanwhile are
/// dropped: notifications may have been missed).
pub async fn listen(cache: Arc<CacheDb>, stop: CancellationToken) {
    if !cache.results.enabled() {
        return;
    }
    let mut delay = RETRY_FIRST;
    // Said once per outage: a standby behind the address refuses LISTEN at every attempt.
    let mut reported = false;
    loop {
        if let Some(Db::Sqlite(_)) = cache.db() {
            tracing::info!(
                "SQLite cache: answers are not kept in memory (no change notifications)"
            );
            return;
        }
        if let Some(Db::Postgres(pool)) = cache.db() {
            let started = Instant::now();
            match follow(&cache, pool, &stop).await {
                Ok(()) => return, // stopped
                Err(e) if !reported => {
                    reported = true;
                    tracing::warn!(error = %e, "change notifications lost; answers are not kept in memory until they are back")
                }
                Err(e) => tracing::debug!(error = %e, "change notifications still unavailable"),
            }
            if cache.results.is_live() && started.elapsed() >= STEADY {
                // It worked for a while: retry soon, and say so if it fails again.
                delay = RETRY_FIRST;
                reported = false;
            }
            cache.results.set_live(false);
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(RETRY_MAX);
    }
}

/// One connection's worth of listening; returns `Ok` when stopped, `Err` when the connection
/// is lost or a table lacks its trigger.
async fn follow(
    cache: &CacheDb,
    pool: &sqlx::PgPool,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    // Its own connection: a listener holds the connection it takes for as long as it lives,
    // and taking it from the proxy's pool would leave one less for reads (none at
    // `maxConnections: 1`).
    // The same session limits and checks as the read pool: never listening on a standby.
    let options = (*pool.connect_options()).clone();
    let gate = sgcache::pg_server::Gate::of(&options);
    gate.admit(&options).await?;
    let own = sgcache::sql::pg_pool_options(1, Duration::from_secs(10), &PgLimits::WORKER, gate)
        .connect_with(options)
        .await?;
    let mut listener = sqlx::postgres::PgListener::connect_with(&own).await?;
    // Report a lost connection at once (Ok(None)) instead of first reconnecting, which can
    // take the whole acquire timeout while the database is down: answers must stop being
    // served as soon as changes may go unheard.
    listener.eager_reconnect(false);
    // The channel of this cache's schema: other caches in the database use their own.
    let channel = notify::channel_of(cache.db().expect("a pool")).await?;
    listener.listen(&channel).await?;
    let missing = notify::untriggered_tables(cache.db().expect("a pool")).await?;
    if !missing.is_empty() {
        anyhow::bail!(
            "tables without a change trigger (run `sgcache-worker migrate`): {missing:?}"
        );
    }
    cache.results.set_live(true);
    tracing::info!("listening for changes; keeping answers in memory");
    // A connection can die without a word (a network partition): our own heartbeat, sent
    // through the read pool, must keep coming back on the listening connection.
    let token = format!("~heartbeat:{}", uuid::Uuid::new_v4());
    let mut tick = tokio::time::interval(HEARTBEAT);
    let mut heard = Instant::now();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = tick.tick() => {
                if heard.elapsed() > HEARTBEAT * 3 {
                    anyhow::bail!("no heartbeat heard back for {:?}", heard.elapsed());
                }
                // Bounded: a query on a dead connection may never return.
                tokio::time::timeout(HEARTBEAT, heartbeat(cache.db().expect("a pool"), &channel, &token))
                    .await
                    .map_err(|_| anyhow::anyhow!("the heartbeat did not get through"))??;
            }
            note = listener.try_recv() => match note? {
                Some(n) if n.payload() == token => heard = Instant::now(),
                Some(n) => {
                    cache.results.changed(n.payload());
                    if notify::SERVING_STATE_TABLES.contains(&n.payload()) {
                        crate::ready_signal::announce(); // another process moved field states
                    }
                }
                None => anyhow::bail!("the notification connection closed"),
            },
        }
    }
}

/// First and longest pause before listening again after the connection was lost.
const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(15);
/// Listening this long counts as working again: the next loss is retried soon and logged.
const STEADY: Duration = Duration::from_secs(30);

/// How often the listener checks that it still hears its own notifications.
const HEARTBEAT: Duration = Duration::from_secs(5);

async fn heartbeat(db: &Db, channel: &str, token: &str) -> anyhow::Result<()> {
    let mut q = db.sql();
    q.push("SELECT pg_notify(")
        .push_bind(sgcache::sql::SqlValue::Text(channel.into()))
        .push(", ")
        .push_bind(sgcache::sql::SqlValue::Text(token.into()))
        .push(")::text");
    db.fetch_all(&q).await?;
    Ok(())
}
