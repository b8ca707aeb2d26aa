//! `wrk` as a load generator: a C program on epoll that spends far less CPU per request than
//! a Rust client on the same two cores, so a storm's figures say more about the server than
//! about the generator. Runs `wrk` (Debian's package) with a Lua script that posts the given
//! bodies in turn, and reads its summary.

use std::time::Duration;

/// What `wrk --latency` reported.
#[derive(Debug, PartialEq)]
pub struct WrkRun {
    pub requests: u64,
    pub secs: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Non-2xx answers and socket errors (connect, read, write, timeout).
    pub errors: u64,
    /// CPU seconds `wrk` used.
    pub cpu_secs: f64,
}

/// `connections` connections on two threads for `secs`, posting `bodies` (in turn) to `url`;
/// with `gzip`, asking for compressed answers as `shotgun_api3` does (`wrk` does not read
/// bodies, so nothing is inflated on its side).
pub async fn run(
    url: &str,
    connections: usize,
    secs: f64,
    bodies: &[String],
    gzip: bool,
) -> anyhow::Result<WrkRun> {
    let dir = tempfile::tempdir()?;
    let script = dir.path().join("storm.lua");
    std::fs::write(&script, script_text(bodies, gzip))?;
    let cpu_before = crate::cpu::ended_children_seconds();
    let out = tokio::process::Command::new("wrk")
        .arg("-t2")
        .arg(format!("-c{connections}"))
        .arg(format!("-d{}s", secs.ceil() as u64))
        .arg("--timeout")
        .arg("120s")
        .arg("--latency")
        .arg("-s")
        .arg(&script)
        .arg(url)
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| anyhow::anyhow!("cannot run wrk (apt-get install wrk): {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(
        out.status.success(),
        "wrk failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut run =
        parse(&text).ok_or_else(|| anyhow::anyhow!("cannot read wrk's summary:\n{text}"))?;
    // Waited for by `output`: its CPU is now among this process's ended children's.
    run.cpu_secs = crate::cpu::ended_children_seconds() - cpu_before;
    Ok(run)
}

/// A Lua script posting `bodies` in turn (one pre-built request when there is one body).
fn script_text(bodies: &[String], gzip: bool) -> String {
    // Long brackets need no escaping, at a level no body can close.
    let level = (8..)
        .map(|n| "=".repeat(n))
        .find(|l| !bodies.iter().any(|b| b.contains(&format!("]{l}]"))))
        .expect("a level");
    let mut s = String::from(
        "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json; charset=utf-8\"\n",
    );
    if gzip {
        s.push_str("wrk.headers[\"Accept-Encoding\"] = \"gzip\"\n");
    }
    if let [only] = bodies {
        s.push_str(&format!("wrk.body = [{level}[{only}]{level}]\n"));
        return s;
    }
    s.push_str("local bodies = {\n");
    for b in bodies {
        s.push_str(&format!("  [{level}[{b}]{level}],\n"));
    }
    s.push_str(
        "}\nlocal i = 0\nrequest = function()\n  i = i % #bodies + 1\n  \
         return wrk.format(nil, nil, nil, bodies[i])\nend\n",
    );
    s
}

/// Reads `wrk --latency`'s summary.
fn parse(text: &str) -> Option<WrkRun> {
    let mut run = WrkRun {
        requests: 0,
        secs: 0.0,
        p50_ms: f64::NAN,
        p99_ms: f64::NAN,
        errors: 0,
        cpu_secs: 0.0,
    };
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["50%", v] => run.p50_ms = duration_ms(v)?,
            ["99%", v] => run.p99_ms = duration_ms(v)?,
            [n, "requests", "in", secs, ..] => {
                run.requests = n.parse().ok()?;
                run.secs = duration_ms(secs.trim_end_matches(','))? / 1000.0;
            }
            ["Non-2xx", "or", "3xx", "responses:", n] => run.errors += n.parse::<u64>().ok()?,
            ["Socket", "errors:", rest @ ..] => {
                run.errors += rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>();
            }
            _ => {}
        }
    }
    (run.requests > 0 && run.secs > 0.0).then_some(run)
}

/// `123.45us`, `12.3ms`, `1.02s`, `2.00m` as milliseconds.
fn duration_ms(v: &str) -> Option<f64> {
    let split = v.find(|c: char| c.is_ascii_alphabetic())?;
    let (n, unit) = v.split_at(split);
    let n: f64 = n.parse().ok()?;
    let unit = match unit {
        "us" => Duration::from_nanos(1_000),
        "ms" => Duration::from_millis(1),
        "s" => Duration::from_secs(1),
        "m" => Duration::from_secs(60),
        "h" => Duration::from_secs(3600),
        _ => return None,
    };
    Some(n * unit.as_secs_f64() * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUMMARY: &str = "Running 6s test @ http://127.0.0.1:4000/api3/json
  2 threads and 5000 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   105.21ms   40.17ms   1.20s    91.02%
    Req/Sec    20.10k     3.01k   27.00k    70.00%
  Latency Distribution
     50%   98.50ms
     75%  110.00ms
     90%  150.00ms
     99%    1.02s
  240000 requests in 6.01s, 90.00MB read
  Socket errors: connect 3, read 0, write 1, timeout 2
  Non-2xx or 3xx responses: 7
Requests/sec:  39933.44
Transfer/sec:     14.98MB
";

    #[test]
    fn reads_the_summary() {
        assert_eq!(
            parse(SUMMARY),
            Some(WrkRun {
                requests: 240_000,
                secs: 6.01,
                p50_ms: 98.5,
                p99_ms: 1020.0,
                errors: 13,
                cpu_secs: 0.0,
            })
        );
        assert_eq!(parse("wrk: connection refused"), None);
    }

    #[test]
    fn durations_in_every_unit() {
        assert_eq!(duration_ms("250.00us"), Some(0.25));
        assert_eq!(duration_ms("2.00m"), Some(120_000.0));
        assert_eq!(duration_ms("12"), None);
    }

    #[test]
    fn one_body_is_prebuilt_and_several_rotate() {
        let one = script_text(&["{\"a\":\"]]\"}".into()], false);
        assert!(one.contains("wrk.body = [========[{\"a\":\"]]\"}]========]"));
        let closing = script_text(&["]========]".into()], false);
        assert!(closing.contains("wrk.body = [=========[]========]]=========]"));
        assert!(!one.contains("request = function"));
        assert!(!one.contains("Accept-Encoding"));
        let two = script_text(&["1".into(), "2".into()], true);
        assert!(two.contains("request = function") && two.contains("[========[2]========],"));
        assert!(two.contains("wrk.headers[\"Accept-Encoding\"] = \"gzip\""));
    }
}
