//! A short run of the crash trials (`sgcache_tests::crash_trials`; the `crash-trials`
//! benchmark runs 100 kills): about ten SIGKILLs of `all`, `events` and `scanner` during writes
//! with and without events and through the proxy; nothing lost, nothing applied twice.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_kills_of_the_workers_lose_and_repeat_nothing() {
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| chrono::Utc::now().timestamp_nanos_opt().unwrap_or(7) as u64);
    let out = sgcache_tests::crash_trials::run(&sgcache_tests::worker::binary(), 10, seed)
        .await
        .expect("the trials ran");
    let line = sgcache_tests::crash_trials::describe(&out);
    eprintln!("{line}");
    assert!(out.kills >= 10, "{line}");
    assert!(
        out.kills_all > 0 && out.kills_events > 0 && out.kills_scanner > 0,
        "{line}"
    );
    assert!(
        out.site_writes > 50 && out.silent_writes > 10 && out.proxy_writes > 10,
        "too few writes: {line}"
    );
    assert!(out.batches > 3, "too few batches committed: {line}");
    assert!(out.differences.is_empty(), "{line}\n{:#?}", out.differences);
    assert!(
        out.log_differences.is_empty(),
        "{line}\n{:#?}",
        out.log_differences
    );
    assert!(
        out.applied_twice.is_empty(),
        "{line}\n{:#?}",
        out.applied_twice
    );
}
