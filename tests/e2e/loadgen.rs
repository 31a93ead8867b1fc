//! `patron loadgen` against a real server: the JSON result carries the keys
//! capacity testers rely on, and its counts agree with the server's own.

use patron_tests::{Server, patron, post_json, transcript};
use serde_json::Value;

#[test]
fn loadgen_counts_agree_with_the_server_and_the_result_has_every_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(&dir.path().join("data"), &["--currency", "EUR", "--refit-interval", "3600"]);
    let out = dir.path().join("run.json");
    let pid = server.pid().to_string();
    let output = patron(&[
        "loadgen",
        "--url",
        &server.url,
        "--rate",
        "5000",
        "--duration",
        "2s",
        "--warmup",
        "250ms",
        "--batch",
        "250",
        "--customers",
        "5000",
        "--malformed",
        "0.01",
        "--duplicates",
        "0.01",
        "--marker-every",
        "50ms",
        "--sql-every",
        "0s",
        "--server-pid",
        &pid,
        "--out",
        out.to_str().expect("utf-8"),
    ]);
    let text = transcript(&output);
    assert!(output.status.success(), "{text}");
    let run: Value = serde_json::from_slice(&std::fs::read(&out).expect("result written")).expect("JSON");
    for key in ["events_per_s", "rejected", "peak_rss_bytes", "command", "commit", "config"] {
        assert!(!run[key].is_null(), "{key} missing: {run}");
    }
    for histogram in ["http_latency_ms", "freshness_ms"] {
        for p in ["p50", "p90", "p99", "p999", "max"] {
            assert!(run[histogram][p].as_f64().is_some_and(|v| v > 0.0), "{histogram}.{p}: {run}");
        }
        let h = &run[histogram];
        assert!(h["p50"].as_f64() <= h["p99"].as_f64() && h["p99"].as_f64() <= h["max"].as_f64(), "{h}");
        let cdf: Vec<(f64, f64)> = h["cdf"]
            .as_array()
            .expect("a CDF for plots")
            .iter()
            .map(|point| (point[0].as_f64().unwrap_or(-1.0), point[1].as_f64().unwrap_or(-1.0)))
            .collect();
        assert_eq!((cdf.first().map(|p| p.0), cdf.last().map(|p| p.0)), (Some(0.0), Some(1.0)), "{h}");
        assert!(cdf.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1), "{h}");
        assert_eq!(cdf.last().map(|p| p.1), h["max"].as_f64(), "{h}");
    }
    assert!(run["report"]["shops"].as_u64() >= Some(1), "{run}");
    assert!(run["report"]["server_max_sync_ms"].as_f64().is_some_and(|ms| ms > 0.0), "read from /metrics: {run}");
    assert!(run["report"]["max_send_delay_ms"].as_f64().is_some_and(|ms| ms >= 0.0), "{run}");
    assert!(run["machine"]["cores"].as_u64() >= Some(1), "{run}");
    // The server's own cost, read from /proc: CPU seconds over accepted events.
    let cpu_per_event = run["server_cpu_us_per_event"].as_f64().unwrap_or(-1.0);
    let expected = run["report"]["server_cpu_seconds"].as_f64().unwrap_or(-1.0) * 1e6
        / run["report"]["accepted"].as_f64().unwrap_or(f64::NAN);
    assert!(cpu_per_event > 0.0 && (cpu_per_event - expected).abs() < 1e-6 * expected, "{run}");
    // In open loop the bodies the schedule sends are built before the clock starts.
    let prebuilt = run["report"]["prebuilt_events"].as_u64().unwrap_or(0);
    assert!((10_000..=10_000 + 250).contains(&prebuilt), "5,000/s for 2 s and one batch spare: {run}");
    // The analyst ran the GROUP BY back to back beside the load.
    assert_eq!(run["config"]["sql_every_ms"].as_u64(), Some(0), "{run}");
    assert!(run["sql_latency_ms"]["count"].as_u64() >= Some(2), "{run}");
    assert!(run["sql_latency_ms"]["p50"].as_f64().is_some_and(|ms| ms > 0.0), "{run}");
    assert_eq!(run["report"]["sql_failures"].as_u64(), Some(0), "{run}");
    assert!(run["report"]["server_max_scan_lock_ms"].as_f64().is_some_and(|ms| ms >= 0.0), "{run}");
    assert!(text.contains("analyst SQL"), "{text}");
    let report = &run["report"];
    let count = |k: &str| report[k].as_u64().unwrap_or(u64::MAX);
    assert_eq!(count("failed_requests"), 0, "{report}");
    assert_eq!(count("markers_lost"), 0, "{report}");
    assert!(count("sent") >= 9_000, "about 10,000 events in 2 s at 5,000/s: {report}");
    assert_eq!(count("accepted") + count("duplicates") + count("rejected"), count("sent"), "{report}");
    assert_eq!(count("rejected"), count("malformed_sent"), "every malformed event, and nothing else, is rejected");
    assert!(count("malformed_sent") > 0 && count("duplicates") > 0, "{report}");
    assert!(count("duplicates") <= count("duplicates_sent"), "{report}");
    // A refund that overtook its order on another connection is sent again,
    // and counted once by its final answer (it is in neither count above).
    assert!(report["refunds_resent"].as_u64().is_some(), "{report}");
    // The server's own counters agree: nothing acknowledged is missing.
    let stats = post_json(
        &format!("{}/v1/sql", server.url),
        "text/plain",
        "SELECT name, value FROM engine_stats WHERE name IN ('events_accepted', 'events_rejected', 'events_duplicate') ORDER BY name",
    )
    .1;
    let stat = |i: usize| stats[i]["value"].as_f64().unwrap_or(-1.0) as u64;
    // The server counted each overtaking refund's first refusal too.
    let refused_then_resent = count("refunds_resent");
    assert_eq!(
        (stat(0), stat(1), stat(2)),
        (count("accepted"), count("duplicates"), count("rejected") + refused_then_resent),
        "{stats} {report}"
    );
}

#[test]
fn loadgen_says_clearly_when_the_server_is_not_there() {
    let output =
        patron(&["loadgen", "--url", "http://127.0.0.1:9", "--duration", "1s", "--warmup", "0s", "--out", "/dev/null"]);
    assert!(!output.status.success());
    let text = transcript(&output);
    assert!(text.contains("cannot reach http://127.0.0.1:9/health"), "{text}");
    let output = patron(&["loadgen", "--duration", "5 parsecs"]);
    assert!(transcript(&output).contains("--duration"), "{}", transcript(&output));
    let output = patron(&["loadgen", "--duration", "2s", "--warmup", "2s"]);
    let text = transcript(&output);
    assert!(!output.status.success() && text.contains("--warmup (2s) must be shorter than --duration (2s)"), "{text}");
}
