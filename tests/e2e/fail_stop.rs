//! Fail-stop and free async workers, on the real binary (issue 16).
//!
//! - A shard writer that panics (a test hook, `PATRON_FAIL_AT`, panics it
//!   under its write lock, as a bug would) stops ingest with 503, turns
//!   `/ready` false, names the cause in `/metrics` and the log, and a restart
//!   recovers every durable event.
//! - A shard writer held inside its lock (`PATRON_PAUSE_AT`) makes lookups of
//!   its customers wait, but never `/health`, `/ready` or `/metrics`: the
//!   lookups wait on the blocking pool, not on the two async workers.

use std::path::Path;
use std::time::Duration;

use patron_tests::Server;
use serde_json::Value;

fn event(id: &str, customer: &str) -> String {
    format!(
        r#"{{"type":"purchase","event_id":"{id}","customer_id":"{customer}","timestamp":"2026-01-05T10:00:00Z","revenue":"12.50"}}"#
    )
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new().timeout(Duration::from_secs(60)).build()
}

fn call(request: ureq::Request, body: Option<&str>) -> (u16, Option<String>, Value) {
    let answer = match body {
        Some(body) => request.set("Content-Type", "application/x-ndjson").send_string(body),
        None => request.call(),
    };
    match answer {
        Ok(r) => (r.status(), r.header("Retry-After").map(str::to_owned), r.into_json().unwrap_or(Value::Null)),
        Err(ureq::Error::Status(code, r)) => {
            (code, r.header("Retry-After").map(str::to_owned), r.into_json().unwrap_or(Value::Null))
        }
        Err(e) => panic!("{e}"),
    }
}

fn post_events(server: &Server, ids: &[(String, String)]) -> (u16, Option<String>, Value) {
    let body: Vec<String> = ids.iter().map(|(id, customer)| event(id, customer)).collect();
    call(agent().post(&format!("{}/v1/events", server.url)), Some(&body.join("\n")))
}

fn lookup(url: &str, customer: &str) -> u16 {
    call(agent().get(&format!("{url}/v1/customers/{customer}")), None).0
}

fn text(url: &str) -> (u16, String) {
    match ureq::AgentBuilder::new().timeout(Duration::from_secs(10)).build().get(url).call() {
        Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
        Err(e) => panic!("{url} did not answer: {e}"),
    }
}

fn wait_for(path: &Path, what: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !path.exists() {
        assert!(std::time::Instant::now() < deadline, "{what} never happened");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_panicking_shard_stops_ingest_turns_ready_false_and_a_restart_recovers_every_durable_event() {
    let dir = tempfile::tempdir().unwrap();
    let (data, trigger, log) = (dir.path().join("data"), dir.path().join("panic-now"), dir.path().join("server.log"));
    let fail_at = format!("shard-apply:{}", trigger.display());
    let flags = ["--shards", "2", "--refit-interval", "3600", "--snapshot-interval", "3600"];
    let server = Server::start_logged(&data, &flags, &[("PATRON_FAIL_AT", &fail_at)], &log);
    let before: Vec<(String, String)> = (0..200).map(|i| (format!("e{i}"), format!("c{i}"))).collect();
    let (status, _, body) = post_events(&server, &before);
    assert_eq!((status, body["accepted"].as_u64()), (200, Some(200)), "{body}");

    std::fs::write(&trigger, b"").unwrap();
    let failing: Vec<(String, String)> = (200..210).map(|i| (format!("e{i}"), format!("c{i}"))).collect();
    let (status, retry_after, body) = post_events(&server, &failing);
    assert_eq!(status, 503, "a batch whose shard panicked is not acknowledged: {body}");
    assert_eq!(body["error"]["code"], "shard_failed", "{body}");
    assert!(retry_after.is_some(), "503 without Retry-After");
    // Every later request is refused, whichever shard it goes to.
    std::fs::remove_file(&trigger).unwrap();
    let later: Vec<(String, String)> = (210..220).map(|i| (format!("e{i}"), format!("c{i}"))).collect();
    let (status, _, body) = post_events(&server, &later);
    assert_eq!((status, body["error"]["code"].as_str()), (503, Some("shard_failed")), "{body}");

    let (status, ready) = text(&format!("{}/ready", server.url));
    assert_eq!(status, 503, "{ready}");
    assert!(ready.contains("failed") && ready.contains("restart"), "/ready says why: {ready}");
    let (status, metrics) = text(&format!("{}/metrics", server.url));
    assert_eq!(status, 200);
    assert!(metrics.contains("\npatron_ready 0\n"), "{metrics}");
    let failure = metrics.lines().find(|l| l.starts_with("patron_failure{")).unwrap_or_else(|| panic!("{metrics}"));
    assert!(failure.contains("shard=\"") && failure.contains("injected at shard-apply"), "{failure}");
    // A customer of the failed shard cannot be read: 503, never a made-up 404.
    let answers: Vec<u16> = before.iter().map(|(_, c)| lookup(&server.url, c)).collect();
    assert!(answers.iter().all(|&s| s == 200 || s == 503), "{answers:?}");
    assert!(answers.contains(&503), "the failed shard's customers answer 503");
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("failed") && logged.contains("injected at shard-apply"),
        "the log names the cause:\n{logged}"
    );

    server.kill_dash_nine();
    let server = Server::start(&data, &flags);
    assert_eq!(text(&format!("{}/ready", server.url)).0, 200, "a restart recovers");
    // The acknowledged events, and the refused ones that were already durable.
    for (_, customer) in before.iter().chain(&failing) {
        assert_eq!(lookup(&server.url, customer), 200, "{customer}");
    }
    // Events refused before they were logged are not there; a retry applies
    // them, and a retry of the durable ones is a duplicate.
    assert_eq!(lookup(&server.url, "c210"), 404);
    let (status, _, body) = post_events(&server, &[failing.clone(), later.clone()].concat());
    assert_eq!(status, 200, "{body}");
    assert_eq!((body["accepted"].as_u64(), body["duplicates"].as_u64()), (Some(10), Some(10)), "{body}");
}

#[test]
fn regression_lookups_waiting_for_a_shard_lock_do_not_stall_the_async_workers() {
    let dir = tempfile::tempdir().unwrap();
    let hold = dir.path().join("hold-the-shard");
    let held = dir.path().join("hold-the-shard.paused");
    let pause_at = format!("shard-apply:{}", hold.display());
    let flags = ["--shards", "1", "--refit-interval", "3600", "--snapshot-interval", "3600"];
    let server = Server::start_with_env(&dir.path().join("data"), &flags, &[("PATRON_PAUSE_AT", &pause_at)]);
    let first: Vec<(String, String)> = (0..40).map(|i| (format!("e{i}"), format!("c{i}"))).collect();
    assert_eq!(post_events(&server, &first).0, 200);

    // Hold the one shard writer inside its write lock.
    std::fs::write(&hold, b"").unwrap();
    let url = server.url.clone();
    let ingest = std::thread::spawn(move || {
        let body = event("held", "c-held");
        call(agent().post(&format!("{url}/v1/events")), Some(&body)).0
    });
    wait_for(&held, "the shard writer pausing in its lock");
    // Far more waiting lookups than async workers.
    let lookups: Vec<_> = (0..32)
        .map(|i| {
            let url = server.url.clone();
            std::thread::spawn(move || lookup(&url, &format!("c{i}")))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    for probe in ["/health", "/ready", "/metrics"] {
        let (status, body) = text(&format!("{}{probe}", server.url));
        assert_eq!(status, 200, "{probe} answers while lookups wait for the shard: {body}");
    }
    assert!(lookups.iter().all(|l| !l.is_finished()), "lookups wait for the held shard");
    std::fs::remove_file(&hold).unwrap();
    assert_eq!(ingest.join().unwrap(), 200);
    for lookup in lookups {
        assert_eq!(lookup.join().unwrap(), 200);
    }
    // Each lookup was timed into its route's histogram (labelled by the route's
    // pattern, never by the customer id).
    let (_, metrics) = text(&format!("{}/metrics", server.url));
    let count =
        r#"patron_http_request_duration_seconds_count{method="GET",route="/v1/customers/{id}",status="200"} 32"#;
    assert!(metrics.lines().any(|l| l == count), "{metrics}");
    assert!(!metrics.contains("c17"), "no customer id in the metrics");
}
