//! `patron serve` as a real process, driven by a real HTTP client.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use patron_tests::{Server, cdnow_calibration, fixture};
use serde_json::Value;

fn post(url: &str, content_type: &str, body: &str) -> (u16, Value) {
    match ureq::post(url).set("Content-Type", content_type).send_string(body) {
        Ok(r) => (r.status(), r.into_json().unwrap_or(Value::Null)),
        Err(ureq::Error::Status(code, r)) => (code, r.into_json().unwrap_or(Value::Null)),
        Err(e) => panic!("{url}: {e}"),
    }
}

fn get(url: &str) -> (u16, Value) {
    match ureq::get(url).call() {
        Ok(r) => (r.status(), r.into_json().unwrap_or(Value::Null)),
        Err(ureq::Error::Status(code, r)) => (code, r.into_json().unwrap_or(Value::Null)),
        Err(e) => panic!("{url}: {e}"),
    }
}

#[test]
fn streaming_cdnow_over_http_equals_batch_scoring() {
    let dir = tempfile::tempdir().unwrap();
    let (csv, events) = cdnow_calibration();
    let server = Server::start(&dir.path().join("data"), &["--currency", "USD", "--refit-interval", "3600"]);
    for chunk in events.chunks(700) {
        let (status, body) = post(&format!("{}/v1/events", server.url), "application/x-ndjson", &chunk.join("\n"));
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["accepted"], chunk.len(), "{body}");
    }
    let (status, streamed) = post(&format!("{}/v1/admin/refit", server.url), "text/plain", "");
    assert_eq!(status, 200, "{streamed}");

    let csv_path = dir.path().join("calibration.csv");
    std::fs::write(&csv_path, csv).unwrap();
    // Batch scoring at the same "now" (the latest event) and in the same unit (days).
    let batch = patron_tests::score_in_days(&csv_path, &dir.path().join("batch"));
    assert_eq!(streamed["models"], batch["models"], "same events, same summaries, same fits");

    let (status, customer) = get(&format!("{}/v1/customers/1", server.url));
    assert_eq!(status, 200);
    assert_eq!((customer["frequency"].as_u64(), customer["recency_days"].as_f64()), (Some(2), Some(213.0)));
    assert_eq!(customer["provisional"], false);
    assert!(customer["clv"].as_f64().unwrap() > 0.0);
    assert!(customer["rfm_segment"].is_string());
    let (status, missing) = get(&format!("{}/v1/customers/nobody", server.url));
    assert_eq!((status, missing["error"]["code"].as_str()), (404, Some("customer_not_found")));
}

#[test]
fn bad_input_gets_specific_errors_and_the_good_events_around_it_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--body-limit", "100000"]);
    let ok = |id: &str, ts: &str| {
        format!(r#"{{"type":"purchase","event_id":"{id}","customer_id":"c-{id}","timestamp":"{ts}","revenue":"5"}}"#)
    };
    let corpus = [
        (ok("good-1", "2026-01-05T10:00:00Z"), None),
        ("{not json".to_owned(), Some("invalid JSON")),
        (format!("{}{}", "[".repeat(40), "]".repeat(40)), Some("nested deeper")),
        (r#"{"type":"purchase","event_id":"n1","customer_id":"c","timestamp":"2026-01-05T10:00:00Z","items":[{"sku":"a","quantity":1,"price":"NaN"}]}"#.to_owned(), Some("items[0].price")),
        (r#"{"type":"purchase","event_id":"n2","customer_id":"c","timestamp":"2026-01-05T10:00:00Z","revenue":-4}"#.to_owned(), Some("revenue: must not be negative")),
        (r#"{"type":"purchase","event_id":"n3","customer_id":"c","timestamp":"2026-01-05T10:00:00Z","items":[{"sku":"a","quantity":0,"price":"1"}]}"#.to_owned(), Some("items[0].quantity: must not be 0")),
        (ok("future", "2099-01-01T00:00:00Z"), Some("ahead of the server clock")),
        (ok("ancient", "1980-01-01T00:00:00Z"), Some("before 1990")),
        (r#"{"type":"purchase","event_id":"n4","customer_id":"c","timestamp":"2026-01-05T10:00:00Z","currency":"XXX","revenue":"1"}"#.to_owned(), Some("currency")),
        (ok("good-1", "2026-01-05T10:00:00Z"), None), // duplicate
        (ok("good-2", "2025-06-01T10:00:00Z"), None), // out of order: earlier than good-1
    ];
    let body: Vec<&str> = corpus.iter().map(|(line, _)| line.as_str()).collect();
    let (status, answer) = post(&format!("{}/v1/events", server.url), "application/x-ndjson", &body.join("\n"));
    assert_eq!(status, 200, "{answer}");
    assert_eq!((answer["accepted"].as_u64(), answer["duplicates"].as_u64()), (Some(2), Some(1)), "{answer}");
    let rejected = answer["rejected"].as_array().unwrap();
    let expected: Vec<(usize, &str)> = corpus.iter().enumerate().filter_map(|(i, (_, e))| e.map(|e| (i, e))).collect();
    assert_eq!(rejected.len(), expected.len(), "{answer}");
    for (r, (index, needle)) in rejected.iter().zip(&expected) {
        assert_eq!(r["index"].as_u64(), Some(*index as u64));
        assert!(r["error"].as_str().unwrap().contains(needle), "index {index}: {r} should mention {needle:?}");
    }
    // Invalid UTF-8 inside an event is rejected, not a crash.
    let bytes: Vec<u8> =
        [ok("u8", "2026-01-05T10:00:00Z").replace("u8", "u\u{FFFD}8").as_bytes(), b"\n{\"type\":\"purchase\xff\"}"]
            .concat();
    let response =
        ureq::post(&format!("{}/v1/events", server.url)).set("Content-Type", "application/x-ndjson").send_bytes(&bytes);
    let answer: Value = response.unwrap().into_json().unwrap();
    assert_eq!((answer["accepted"].as_u64(), answer["rejected"][0]["index"].as_u64()), (Some(1), Some(1)), "{answer}");
    // A body over the limit is 413 with a JSON error.
    let huge = ok("x", "2026-01-05T10:00:00Z").repeat(2000);
    let (status, answer) = post(&format!("{}/v1/events", server.url), "application/x-ndjson", &huge);
    assert_eq!((status, answer["error"]["code"].as_str()), (413, Some("body_too_large")));
    // Still serving, with the good events applied.
    let (status, customer) = get(&format!("{}/v1/customers/c-good-2", server.url));
    assert_eq!((status, customer["orders"].as_u64()), (200, Some(1)));
    let metrics = ureq::get(&format!("{}/metrics", server.url)).call().unwrap().into_string().unwrap();
    assert!(metrics.contains("patron_events_rejected_total 9"), "{metrics}");
    let (_, kept) = get(&format!("{}/v1/admin/rejected?limit=2", server.url));
    assert_eq!(kept["total"], 9);
    let newest = &kept["rejected"][0];
    assert_eq!((newest["position"].as_u64(), newest["source"].as_str()), (Some(1), Some("http")), "{kept}");
    assert!(newest["raw"].as_str().unwrap().contains("purchase"), "{kept}");
}

/// Real crashes under concurrent load: after each SIGKILL and restart, every
/// acknowledged event is applied exactly once.
#[test]
fn kill_dash_nine_under_load_loses_no_acknowledged_event() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cycles = 50;
    let mut acked_total: Vec<String> = Vec::new();
    for cycle in 0..cycles {
        let server = Server::start(&data, &["--refit-interval", "3600"]);
        let acked = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..3)
            .map(|t| {
                let (url, acked, stop) = (server.url.clone(), acked.clone(), stop.clone());
                std::thread::spawn(move || {
                    for i in 0.. {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let id = format!("k{cycle}-{t}-{i}");
                        let body = format!(
                            r#"{{"type":"purchase","event_id":"{id}","customer_id":"{id}","timestamp":"2026-01-05T10:00:00Z","revenue":"1"}}"#
                        );
                        match ureq::post(&format!("{url}/v1/events")).timeout(Duration::from_secs(5)).send_string(&body) {
                            Ok(r) if r.status() == 200 => acked.lock().unwrap().push(id),
                            _ => break, // the server died mid-request: not acknowledged
                        }
                    }
                })
            })
            .collect();
        // Every other cycle takes a snapshot under load, so crashes also land
        // during and after snapshots, and recovery starts from one.
        std::thread::sleep(Duration::from_millis(75 + (cycle as u64 * 53) % 125));
        if cycle % 2 == 1 {
            let _ = ureq::post(&format!("{}/v1/admin/snapshot", server.url)).timeout(Duration::from_secs(5)).call();
        }
        std::thread::sleep(Duration::from_millis(75 + (cycle as u64 * 31) % 125));
        server.kill_dash_nine();
        stop.store(true, Ordering::Relaxed);
        for c in clients {
            let _ = c.join();
        }
        acked_total.extend(acked.lock().unwrap().drain(..));
    }
    let server = Server::start(&data, &["--refit-interval", "3600"]);
    let unique: HashSet<&String> = acked_total.iter().collect();
    assert_eq!(unique.len(), acked_total.len());
    assert!(acked_total.len() > 100, "the clients made progress: {}", acked_total.len());
    for id in &acked_total {
        let (status, customer) = get(&format!("{}/v1/customers/{id}", server.url));
        assert_eq!((status, customer["orders"].as_u64()), (200, Some(1)), "acknowledged event {id}");
    }
}

/// A tmpfs mounted for one test, unmounted when dropped.
struct SmallDisk {
    dir: std::path::PathBuf,
}

impl SmallDisk {
    /// Mounts a tmpfs of `size` (as `mount -o size=` takes it) at `dir`; needs root.
    fn mount(dir: &std::path::Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(dir).unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("mount runs");
        assert!(mounted.success(), "mounting a {size} tmpfs at {} needs root", dir.display());
        SmallDisk { dir: dir.to_path_buf() }
    }

    fn grow(&self, size: &str) {
        let status = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.dir)
            .status()
            .expect("mount runs");
        assert!(status.success(), "remounting {} with {size}", self.dir.display());
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.dir).status();
    }
}

#[test]
fn a_full_disk_answers_503_keeps_queries_working_and_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let disk = SmallDisk::mount(&data, "12m");
    let server = Server::start(&data, &["--refit-interval", "3600", "--snapshot-interval", "3600"]);
    let events = format!("{}/v1/events", server.url);
    let mut acked: Vec<String> = Vec::new();
    let mut refusal = None;
    for batch in 0..2_000 {
        let ids: Vec<String> = (0..500).map(|i| format!("full-{batch}-{i}")).collect();
        let body: String = ids
            .iter()
            .map(|id| {
                format!(
                    "{{\"type\":\"purchase\",\"event_id\":\"{id}\",\"customer_id\":\"{id}\",\"timestamp\":\"2026-01-05T10:00:00Z\",\"revenue\":\"1\"}}\n"
                )
            })
            .collect();
        match ureq::post(&events).set("Content-Type", "application/x-ndjson").send_string(&body) {
            Ok(r) if r.status() == 200 => acked.extend(ids),
            Ok(r) => panic!("unexpected status {}", r.status()),
            Err(ureq::Error::Status(code, r)) => {
                refusal = Some((code, r.header("Retry-After").map(str::to_owned)));
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    let (code, retry_after) = refusal.expect("a 12 MB disk fills up");
    assert_eq!(code, 503, "a full disk is a temporary refusal");
    assert!(retry_after.is_some_and(|s| s.parse::<u64>().is_ok()), "with Retry-After");
    assert!(acked.len() >= 10_000, "the disk took events before it filled: {}", acked.len());
    // Reads keep working and see exactly what was acknowledged.
    let (status, first) = get(&format!("{}/v1/customers/{}", server.url, acked[0]));
    assert_eq!((status, first["orders"].as_u64()), (200, Some(1)));
    let (status, rows) = post(&format!("{}/v1/sql", server.url), "text/plain", "SELECT count(*) AS n FROM customers");
    assert_eq!((status, rows[0]["n"].as_u64()), (200, Some(acked.len() as u64)));
    // Space comes back; after a restart every acknowledged event is there and ingest works again.
    server.kill_dash_nine();
    disk.grow("256m");
    let server = Server::start(&data, &["--refit-interval", "3600", "--snapshot-interval", "3600"]);
    let (status, rows) = post(&format!("{}/v1/sql", server.url), "text/plain", "SELECT count(*) AS n FROM customers");
    assert_eq!((status, rows[0]["n"].as_u64()), (200, Some(acked.len() as u64)), "nothing acknowledged is lost");
    for id in [&acked[0], &acked[acked.len() / 2], &acked[acked.len() - 1]] {
        let (status, customer) = get(&format!("{}/v1/customers/{id}", server.url));
        assert_eq!((status, customer["orders"].as_u64()), (200, Some(1)), "acknowledged event {id}");
    }
    let (status, _) = post(
        &format!("{}/v1/events", server.url),
        "application/x-ndjson",
        r#"{"type":"purchase","event_id":"after","customer_id":"after","timestamp":"2026-01-05T10:00:00Z","revenue":"1"}"#,
    );
    assert_eq!(status, 200, "ingest works again once there is space");
    drop(server);
}

/// kill -9 between every pair of steps of a snapshot and of an erasure, on
/// the real file system: the server aborts at a named crash point
/// (`PATRON_CRASH_AT`), restarts, and must hold every acknowledged event;
/// an erasure cut short is finished by asking again, and then no byte of
/// the customer is left in the data directory, through another restart.
#[test]
fn a_crash_at_any_step_of_a_snapshot_or_an_erasure_loses_nothing_and_leaves_no_erased_byte() {
    let points = [
        ("snapshot", "snapshot-written"),
        ("snapshot", "snapshot-renamed"),
        ("snapshot", "snapshot-published"),
        ("snapshot", "snapshot-pruned"),
        ("erase", "erase-logged"),
        ("erase", "erase-rolled"),
        ("erase", "snapshot-written"),
        ("erase", "snapshot-published"),
        ("erase", "erase-snapshotted"),
    ];
    let flags = ["--refit-interval", "3600", "--snapshot-interval", "3600"];
    for (round, (action, point)) in points.iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let server = Server::start_with_env(&data, &flags, &[("PATRON_CRASH_AT", point)]);
        let ids: Vec<String> = (0..40).map(|i| format!("r{round}-c{i}")).collect();
        for (i, id) in ids.iter().enumerate() {
            let body = format!(
                r#"{{"type":"purchase","event_id":"{id}-{i}","customer_id":"{id}","timestamp":"2026-01-05T10:00:00Z","revenue":"1","items":[{{"sku":"sku-{}","price":"1"}}]}}"#,
                i % 5
            );
            assert_eq!(post(&format!("{}/v1/events", server.url), "application/x-ndjson", &body).0, 200);
        }
        let victim = &ids[7];
        let crashed = match *action {
            "snapshot" => ureq::post(&format!("{}/v1/admin/snapshot", server.url)).call(),
            _ => ureq::delete(&format!("{}/v1/customers/{victim}", server.url)).call(),
        };
        assert!(crashed.is_err(), "{action} at {point}: the server died before answering");
        assert!(server.wait_for_exit(Duration::from_secs(10)).is_some_and(|s| !s.success()), "{point}: aborted");
        let server = Server::start(&data, &flags);
        // The products table waits for the statistics thread: after it, none of its batches is pending.
        let (status, products) =
            post(&format!("{}/v1/sql", server.url), "text/plain", "SELECT sum(orders) AS n FROM products");
        assert_eq!(status, 200, "{products}");
        let metrics = ureq::get(&format!("{}/metrics", server.url)).call().unwrap().into_string().unwrap();
        assert!(metrics.contains("\npatron_product_stats_batches_behind 0\n"), "{point}: {metrics}");
        for id in ids.iter().filter(|id| *action != "erase" || *id != victim) {
            let (status, customer) = get(&format!("{}/v1/customers/{id}", server.url));
            assert_eq!((status, customer["orders"].as_u64()), (200, Some(1)), "{action} at {point}: {id}");
        }
        if *action == "erase" {
            let (status, _) = get(&format!("{}/v1/customers/{victim}", server.url));
            assert!(status == 200 || status == 404, "{point}: {status}");
            let answer = ureq::delete(&format!("{}/v1/customers/{victim}", server.url)).call();
            // 404 when the erasure had reached the log before the crash: it is finished all the same.
            let status = match answer {
                Ok(r) => r.status(),
                Err(ureq::Error::Status(code, _)) => code,
                Err(e) => panic!("{point}: {e}"),
            };
            assert!([200, 204, 404].contains(&status), "{point}: erasing again answers {status}");
            server.kill_dash_nine();
            for path in files_under(&data) {
                let bytes = std::fs::read(&path).unwrap_or_default();
                assert!(
                    !bytes.windows(victim.len()).any(|w| w == victim.as_bytes()),
                    "{point}: {} still holds {victim}",
                    path.display()
                );
            }
            let server = Server::start(&data, &flags);
            assert_eq!(get(&format!("{}/v1/customers/{victim}", server.url)).0, 404, "{point}: stays erased");
        }
    }
}

#[test]
fn replay_pushes_a_file_and_the_server_fits_what_batch_scoring_fits() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &["--currency", "USD", "--refit-interval", "3600"]);
    let input = fixture("cdnow/cdnow_transactions.csv");
    let replay = |server: &Server| {
        let output = patron_tests::patron(&[
            "replay",
            "--input",
            input.to_str().unwrap(),
            "--url",
            &server.url,
            "--currency",
            "USD",
        ]);
        let text = patron_tests::transcript(&output);
        assert!(output.status.success(), "{text}");
        text
    };
    let text = replay(&server);
    assert!(text.contains("6919 events accepted, 0 duplicates, 0 rejected here, 0 rejected by the server"), "{text}");
    let (status, streamed) = post(&format!("{}/v1/admin/refit", server.url), "text/plain", "");
    assert_eq!(status, 200, "{streamed}");
    let batch = patron_tests::score_in_days(&input, &dir.path().join("batch"));
    assert_eq!(streamed["models"], batch["models"]);

    // Replaying the same file again applies nothing: every customer (most of
    // them have more than the 8 events the old per-customer ring remembered)
    // is exactly as before, over SQL, through a snapshot and a restart too.
    let state = |server: &Server| {
        let sql =
            "SELECT customer_id, orders, revenue, frequency, first_purchase_at FROM customers ORDER BY customer_id";
        let (status, body) = post(&format!("{}/v1/sql", server.url), "text/plain", sql);
        assert_eq!(status, 200, "{body}");
        body
    };
    let once = state(&server);
    assert_eq!(once.as_array().map(Vec::len), Some(2357));
    let text = replay(&server);
    assert!(text.contains("0 events accepted, 6919 duplicates, 0 rejected here, 0 rejected by the server"), "{text}");
    assert_eq!(state(&server), once);
    let (status, body) = post(&format!("{}/v1/admin/snapshot", server.url), "text/plain", "");
    assert_eq!(status, 200, "{body}");
    server.kill_dash_nine();
    let server = Server::start(&dir.path().join("data"), &["--currency", "USD", "--refit-interval", "3600"]);
    let text = replay(&server);
    // The refit and the snapshot each wrote a snapshot, and the second one
    // keeps fingerprints only within the dedup horizon (35 days): older
    // events are refused as beyond it, the rest are duplicates. Nothing is applied.
    assert!(text.contains(": 0 events accepted, ") && text.contains(" 0 rejected here, "), "after a restart: {text}");
    let count = |label: &str| -> u64 {
        let before = text.split(label).next().unwrap_or_default();
        before.rsplit([' ', ',']).find(|w| !w.is_empty()).and_then(|n| n.parse().ok()).unwrap_or(0)
    };
    assert_eq!(count(" duplicates") + count(" rejected by the server"), 6919, "{text}");
    assert_eq!(state(&server), once);

    let broken = fixture("broken/transactions_broken.csv");
    let output = patron_tests::patron(&[
        "replay",
        "--input",
        broken.to_str().unwrap(),
        "--url",
        &server.url,
        "--currency",
        "USD",
    ]);
    let text = patron_tests::transcript(&output);
    assert!(text.contains("rejected line 4: date:") && text.contains("8 rejected here"), "{text}");
}

#[test]
fn a_public_address_needs_tokens_and_tokens_are_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let refused =
        patron_tests::patron(&["serve", "--data-dir", dir.path().join("a").to_str().unwrap(), "--http", "0.0.0.0:0"]);
    assert!(!refused.status.success());
    assert!(patron_tests::transcript(&refused).contains("refusing to listen on --http 0.0.0.0:0 without auth tokens"));

    let config = dir.path().join("patron.toml");
    std::fs::write(&config, "[[auth.tokens]]\ntoken = \"producer-secret-0123456789\"\nroles = [\"ingest\"]\n").unwrap();
    let server = Server::start(&dir.path().join("b"), &["--config", config.to_str().unwrap()]);
    let event =
        r#"{"type":"purchase","event_id":"o1","customer_id":"c1","timestamp":"2025-01-01T00:00:00Z","revenue":"5"}"#;
    let (status, body) = post(&format!("{}/v1/events", server.url), "application/json", event);
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("unauthenticated")));
    let accepted = ureq::post(&format!("{}/v1/events", server.url))
        .set("Authorization", "Bearer producer-secret-0123456789")
        .send_string(event)
        .unwrap();
    assert_eq!(accepted.status(), 200);
    let (status, _) = get(&format!("{}/v1/customers/c1", server.url));
    assert_eq!(status, 401, "reading needs a query or admin token");
}

/// Every file under `dir`, recursively.
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() { out.extend(files_under(&path)) } else { out.push(path) }
    }
    out
}

#[test]
fn erasure_leaves_no_byte_of_the_customer_in_the_data_directory_and_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &["--refit-interval", "3600"]);
    let event = |id: &str, customer: &str, day: u32| {
        format!(
            r#"{{"type":"purchase","event_id":"{id}","customer_id":"{customer}","timestamp":"2025-01-{day:02}T10:00:00Z","revenue":"9.50"}}"#
        )
    };
    let secret = "erase-me-4711-jane.doe";
    let mut batch: Vec<String> = (1..=5).map(|d| event(&format!("s{d}"), secret, d)).collect();
    batch.extend((1..=50).map(|i| event(&format!("o{i}"), &format!("other-{i}"), 1 + i % 20)));
    let (status, _) = post(&format!("{}/v1/events", server.url), "application/x-ndjson", &batch.join("\n"));
    assert_eq!(status, 200);
    // The customer is now in a snapshot and in the log; add more after the snapshot.
    let (status, _) = post(&format!("{}/v1/admin/snapshot", server.url), "text/plain", "");
    assert_eq!(status, 200);
    let later = [event("s6", secret, 6), event("o99", "other-99", 7)].join("\n");
    post(&format!("{}/v1/events", server.url), "application/x-ndjson", &later);
    let holds_secret = || {
        files_under(&data)
            .into_iter()
            .filter(|f| std::fs::read(f).unwrap().windows(secret.len()).any(|w| w == secret.as_bytes()))
            .collect::<Vec<_>>()
    };
    assert!(!holds_secret().is_empty(), "before erasure the customer is on disk");

    let response = ureq::delete(&format!("{}/v1/customers/{secret}", server.url)).call().unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(get(&format!("{}/v1/customers/{secret}", server.url)).0, 404);
    assert!(holds_secret().is_empty(), "still on disk: {:?}", holds_secret());
    assert_eq!(get(&format!("{}/v1/customers/other-99", server.url)).0, 200, "others are kept");

    server.kill_dash_nine();
    let server = Server::start(&data, &["--refit-interval", "3600"]);
    assert_eq!(get(&format!("{}/v1/customers/{secret}", server.url)).0, 404, "a restart does not bring them back");
    assert_eq!(get(&format!("{}/v1/customers/other-7", server.url)).0, 200);
    let gone = match ureq::delete(&format!("{}/v1/customers/{secret}", server.url)).call() {
        Err(ureq::Error::Status(code, _)) => code,
        other => panic!("{other:?}"),
    };
    assert_eq!(gone, 404);
}

fn rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("VmRSS:").map(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().unwrap_or(0))
            })
        })
        .unwrap_or(0)
        * 1024
}

/// Offered load far above what a small configuration admits: refusals are fast
/// 429/503 with Retry-After, every acknowledged event is applied, RSS stays bounded.
#[test]
fn overload_is_refused_quickly_without_losing_acknowledged_events() {
    // The log writer is held (PATRON_PAUSE_AT) while the pause file exists, so
    // its queue and the in-flight bytes fill up whatever the machine's speed:
    // every refusal given while it is held was given without waiting for the log.
    let dir = tempfile::tempdir().unwrap();
    let pause = dir.path().join("hold-the-log");
    std::fs::write(&pause, b"").unwrap();
    let hold = format!("log-write:{}", pause.display());
    let server = Server::start_with_env(
        &dir.path().join("data"),
        &["--refit-interval", "3600", "--max-inflight-bytes", "400000", "--log-queue", "2"],
        &[("PATRON_PAUSE_AT", &hold)],
    );
    let held = Arc::new(AtomicBool::new(true));
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let refused = Arc::new(Mutex::new(Vec::<(u16, bool, bool)>::new()));
    let clients: Vec<_> = (0..16)
        .map(|t| {
            let (url, acked, refused, held) = (server.url.clone(), acked.clone(), refused.clone(), held.clone());
            std::thread::spawn(move || {
                for round in 0..12 {
                    let ids: Vec<String> = (0..400).map(|i| format!("ov-{t}-{round}-{i}")).collect();
                    let body: Vec<String> = ids
                        .iter()
                        .map(|id| format!(r#"{{"type":"purchase","event_id":"{id}","customer_id":"{id}","timestamp":"2026-01-05T10:00:00Z","revenue":"1"}}"#))
                        .collect();
                    match ureq::post(&format!("{url}/v1/events")).set("Content-Type", "application/x-ndjson").send_string(&body.join("\n")) {
                        Ok(r) if r.status() == 200 => acked.lock().unwrap().extend(ids),
                        Err(ureq::Error::Status(code, r)) => {
                            let while_held = held.load(Ordering::SeqCst);
                            refused.lock().unwrap().push((code, r.header("Retry-After").is_some(), while_held))
                        }
                        other => panic!("unexpected answer: {other:?}"),
                    }
                }
            })
        })
        .collect();
    // Hold the log until the clients have been refused a good many times.
    let mut peak_rss = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while refused.lock().unwrap().len() < 32 {
        assert!(std::time::Instant::now() < deadline, "no refusals while the log was held");
        peak_rss = peak_rss.max(rss_bytes(server.pid()));
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(acked.lock().unwrap().is_empty(), "nothing is acknowledged while the log cannot write");
    held.store(false, Ordering::SeqCst);
    std::fs::remove_file(&pause).unwrap();
    while clients.iter().any(|c| !c.is_finished()) {
        peak_rss = peak_rss.max(rss_bytes(server.pid()));
        std::thread::sleep(Duration::from_millis(20));
    }
    for c in clients {
        c.join().unwrap();
    }
    let refused = refused.lock().unwrap();
    assert!(refused.iter().filter(|r| r.2).count() >= 32, "refused while the log was held: {}", refused.len());
    for (code, retry_after, _) in refused.iter() {
        assert!(*code == 429 || *code == 503, "{code}");
        assert!(*retry_after, "{code} without Retry-After");
    }
    assert!(peak_rss < 200 << 20, "server RSS reached {} MiB", peak_rss >> 20);
    let acked = acked.lock().unwrap();
    assert!(!acked.is_empty(), "requests waiting for the log are acknowledged once it writes");
    let metrics = ureq::get(&format!("{}/metrics", server.url)).call().unwrap().into_string().unwrap();
    let accepted: usize = metrics
        .lines()
        .find_map(|l| l.strip_prefix("patron_events_accepted_total "))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0) as usize;
    assert_eq!(accepted, acked.len(), "exactly the acknowledged events were applied");
    for id in acked.iter().step_by(97) {
        assert_eq!(get(&format!("{}/v1/customers/{id}", server.url)).0, 200, "{id}");
    }
    eprintln!("overload: {} acknowledged, {} refused, peak RSS {} MiB", acked.len(), refused.len(), peak_rss >> 20);
}

#[test]
fn an_event_beyond_the_dedup_horizon_is_refused_at_its_index_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &["--dedup-horizon", "2d", "--refit-interval", "3600"]);
    // One customer, so every event lands in the same shard: each shard forgets
    // relative to its own watermark, and shards are chosen by a keyed hash.
    let event = |id: &str, day: &str| {
        format!(
            r#"{{"type":"purchase","event_id":"{id}","customer_id":"c-1","timestamp":"{day}T10:00:00Z","revenue":"5"}}"#
        )
    };
    let events = |body: &[String]| post(&format!("{}/v1/events", server.url), "application/x-ndjson", &body.join("\n"));
    let snapshot = || assert_eq!(post(&format!("{}/v1/admin/snapshot", server.url), "text/plain", "").0, 200);
    events(&[event("old", "2025-01-01"), event("new", "2025-03-01")]);
    snapshot();
    events(&[event("recent", "2025-03-01")]);
    snapshot();
    let body = vec![event("fresh", "2025-03-01"), "{not json".to_owned(), event("old", "2025-01-01")];
    let (status, answer) = events(&body);
    assert_eq!(status, 200, "{answer}");
    assert_eq!((answer["accepted"].as_u64(), answer["rejected_count"].as_u64()), (Some(1), Some(2)), "{answer}");
    assert_eq!(answer["rejected"][0]["index"], 1);
    assert_eq!(answer["rejected"][1]["index"], 2, "the refused event is named by its position in the body");
    let reason = answer["rejected"][1]["error"].as_str().unwrap();
    assert!(reason.starts_with("timestamp:") && reason.contains("2025-02-27"), "{reason}");
    let (status, customer) = get(&format!("{}/v1/customers/c-1", server.url));
    assert_eq!((status, customer["orders"].as_u64()), (200, Some(4)), "old, new, recent, fresh: old applied once");
    let sql = "SELECT value FROM engine_stats WHERE name = 'events_beyond_dedup_horizon'";
    let (_, stats) = post(&format!("{}/v1/sql", server.url), "text/plain", sql);
    assert_eq!(stats[0]["value"], 1.0, "{stats}");
}
