//! The hostile-input corpus (issue 12): a real `patron serve` process, real
//! HTTP, raw TCP and `psql` clients, and the bodies, headers and SQL that once
//! lost acknowledged data, bricked the data directory or killed the process.
//! After the corpus the server must be alive and ready, every acknowledged
//! event must be there (also after a crash and restart), and its peak RSS must
//! stay under [`PEAK_RSS_BOUND`].

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use patron_tests::Server;
use serde_json::Value;

/// Peak resident memory allowed over the whole corpus (a debug build idles at
/// about 100 MiB; the corpus sends bodies of up to 16 MiB).
const PEAK_RSS_BOUND: u64 = 1 << 30;

const INGEST: &str = "hostile-ingest-token-0001";
const QUERY: &str = "hostile-query-token-00001";
const ADMIN: &str = "hostile-admin-token-00001";

fn start(data: &std::path::Path, config: &std::path::Path) -> Server {
    Server::start(data, &["--config", config.to_str().unwrap(), "--refit-interval", "3600", "--body-limit", "16777216"])
}

fn config(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("patron.toml");
    std::fs::write(
        &path,
        format!(
            "[[auth.tokens]]\ntoken = \"{INGEST}\"\nroles = [\"ingest\"]\n[[auth.tokens]]\ntoken = \"{QUERY}\"\nroles = [\"query\"]\n[[auth.tokens]]\ntoken = \"{ADMIN}\"\nroles = [\"admin\"]\n"
        ),
    )
    .unwrap();
    path
}

fn request(method: &str, url: &str, token: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, Value, usize) {
    let mut request = ureq::request(method, url).set("Authorization", &format!("Bearer {token}"));
    for (name, value) in headers {
        request = request.set(name, value);
    }
    let response = match request.send_bytes(body) {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {url}: {e}"),
    };
    let status = response.status();
    let text = response.into_string().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null), text.len())
}

/// `POST /v1/events` with the ingest token: status, answer and answer size.
fn post_events(server: &Server, content_type: &str, body: &[u8]) -> (u16, Value, usize) {
    request("POST", &format!("{}/v1/events", server.url), INGEST, &[("Content-Type", content_type)], body)
}

fn events(server: &Server, body: &str) -> (u16, Value) {
    let (status, answer, _) = post_events(server, "application/x-ndjson", body.as_bytes());
    (status, answer)
}

fn sql(server: &Server, token: &str, text: &str) -> (u16, Value) {
    let (status, answer, _) = request("POST", &format!("{}/v1/sql", server.url), token, &[], text.as_bytes());
    (status, answer)
}

fn purchase(id: &str, customer: &str, revenue: &str) -> String {
    format!(
        r#"{{"type":"purchase","event_id":"{id}","customer_id":"{customer}","timestamp":"2026-01-05T10:00:00Z","revenue":"{revenue}"}}"#
    )
}

fn assert_alive_and_ready(server: &Server) {
    let health = ureq::get(&format!("{}/health", server.url)).call().map(|r| r.status());
    let ready = ureq::get(&format!("{}/ready", server.url)).call().map(|r| r.status());
    assert_eq!((health.ok(), ready.ok()), (Some(200), Some(200)), "the server must stay alive and ready");
}

fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

fn psql(server: &Server, password: &str, text: &str) -> std::process::Output {
    Command::new("psql")
        .args(["-h", &server.pg.ip().to_string(), "-p", &server.pg.port().to_string(), "-U", "analyst", "-d", "patron"])
        .args(["-X", "-w", "--csv", "-t", "-v", "ON_ERROR_STOP=1", "-c", text])
        .env("PGPASSWORD", password)
        .output()
        .expect("psql is installed (.ci/run installs postgresql-client)")
}

fn chain(op: &str, terms: usize) -> String {
    format!("SELECT {}", vec!["1"; terms].join(op))
}

#[test]
fn the_hostile_corpus_neither_loses_data_nor_kills_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let data = dir.path().join("data");
    let server = start(&data, &config);
    let mut acknowledged: Vec<String> = Vec::new();

    // 1. Amounts that once summed past 64 bits: each is refused by name; the
    //    good events beside them are kept, and later batches are whole.
    let huge = "92233720368547758";
    let body = [purchase("big-1", "victim", huge), purchase("big-2", "victim", huge), purchase("ok-0", "c-0", "5")];
    let (status, answer) = events(&server, &body.join("\n"));
    assert_eq!((status, answer["accepted"].as_u64(), answer["rejected_count"].as_u64()), (200, Some(1), Some(2)));
    assert!(answer["rejected"][0]["error"].as_str().unwrap().starts_with("revenue:"), "{answer}");
    acknowledged.push("c-0".into());
    let six: Vec<String> = (1..=6).map(|i| purchase(&format!("ok-{i}"), &format!("c-{i}"), "10")).collect();
    let (status, answer) = events(&server, &six.join("\n"));
    assert_eq!((status, answer["accepted"].as_u64()), (200, Some(6)), "{answer}");
    acknowledged.extend((1..=6).map(|i| format!("c-{i}")));
    let quantity = r#"{"type":"purchase","event_id":"q","customer_id":"c-q","timestamp":"2026-01-05T10:00:00Z","items":[{"sku":"a","quantity":9000000000000000000,"price":"1"}]}"#;
    let (_, answer) = events(&server, quantity);
    assert!(answer["rejected"][0]["error"].as_str().unwrap().starts_with("items[0].quantity"), "{answer}");
    assert_alive_and_ready(&server);

    // 2. Long SQL expressions: refused with sql_too_complex over HTTP and psql,
    //    while the longest allowed ones run (the stacks have room for them).
    for text in [
        chain("+", 1_200),
        format!("SELECT * FROM customers WHERE {}", vec!["customer_id = 'x'"; 1_000].join(" OR ")),
        format!("SELECT * FROM customers WHERE {}", vec!["orders > 0"; 2_000].join(" AND ")),
        chain(" || ", 3_000),
    ] {
        let (status, answer) = sql(&server, QUERY, &text);
        assert_eq!((status, answer["error"]["code"].as_str()), (400, Some("sql_too_complex")), "{answer}");
    }
    let (status, answer) = sql(&server, QUERY, &chain("+", 1_001));
    assert_eq!(
        (status, answer[0].as_object().and_then(|o| o.values().next()).and_then(Value::as_i64)),
        (200, Some(1_001))
    );
    let ors = format!("SELECT count(*) AS n FROM customers WHERE {}", vec!["orders > 0"; 500].join(" OR ")); // 999 operators
    assert_eq!(sql(&server, QUERY, &ors).0, 200);
    let refused = psql(&server, QUERY, &chain(" || ", 3_000));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("too complex"), "{refused:?}");
    let allowed = psql(&server, QUERY, &format!("SELECT {}", vec!["'1'"; 1_001].join(" || ")));
    assert_eq!(String::from_utf8_lossy(&allowed.stdout).trim(), "1".repeat(1_001), "{allowed:?}");
    assert_alive_and_ready(&server);

    // 3. Results are bounded in bytes, and repeat() refuses before building.
    for text in ["SELECT repeat('x', 1000000000)", "SELECT repeat('x', 2147483647)", "SELECT lpad('x', 2147483647)"] {
        let started = Instant::now();
        let (status, answer) = sql(&server, QUERY, text);
        assert_eq!(status, 422, "{text}: {answer}");
        assert!(started.elapsed() < Duration::from_secs(5), "{text} was refused only after {:?}", started.elapsed());
    }
    let (status, answer) = sql(&server, QUERY, "SELECT repeat('x', 1000)");
    assert_eq!(status, 200, "{answer}");

    // 4. Rejections hold bounded memory, whatever their size.
    let big_value = "7".repeat(15 << 20);
    for i in 0..4 {
        let raw = purchase(&format!("fat-{i}"), "c-fat", &format!("x{big_value}"));
        let (status, answer) = events(&server, &raw);
        assert_eq!((status, answer["rejected_count"].as_u64()), (200, Some(1)));
        assert!(answer.to_string().len() < 4096, "the answer quotes the value short");
    }
    // 5. A million rejections in one 2 MB body: counted, a few described.
    let ones = format!("[{}]", vec!["1"; 1_000_000].join(","));
    let (status, answer, size) = post_events(&server, "application/json", ones.as_bytes());
    assert_eq!((status, answer["rejected_count"].as_u64()), (200, Some(1_000_000)));
    assert!(size < 64 << 10, "the answer to a million rejections is {size} bytes");

    // 6. Idle uploads hold only what they sent, and time out.
    let addr = server.url.trim_start_matches("http://").to_owned();
    let idle: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut s = TcpStream::connect(&addr).unwrap();
            write!(
                s,
                "POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {INGEST}\r\nContent-Type: application/x-ndjson\r\nContent-Length: 16777216\r\n\r\n{{"
            )
            .unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let (status, answer) = events(&server, &purchase("during-idle", "c-idle", "3"));
    assert_eq!(status, 200, "a producer is served while idle uploads wait: {answer}");
    acknowledged.push("c-idle".into());
    let mut first = idle.into_iter().next().unwrap();
    first.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut reply = String::new();
    let _ = first.read_to_string(&mut reply);
    assert!(reply.starts_with("HTTP/1.1 408"), "a stalled upload is answered 408: {reply:?}");
    // Headers that never finish are dropped too.
    let mut slow = TcpStream::connect(&addr).unwrap();
    slow.write_all(b"POST /v1/events HTTP/1.1\r\nHost: x\r\n").unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    let _ = slow.read_to_end(&mut rest);
    assert!(started.elapsed() < Duration::from_secs(25), "unfinished headers were held {:?}", started.elapsed());
    // A truncated chunked body is incomplete, not too large.
    let mut chunked = TcpStream::connect(&addr).unwrap();
    write!(
        chunked,
        "POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {INGEST}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{{\"ty"
    )
    .unwrap();
    chunked.shutdown(std::net::Shutdown::Write).unwrap();
    chunked.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut reply = String::new();
    let _ = chunked.read_to_string(&mut reply);
    assert!(!reply.contains("413"), "a truncated chunked body is not 413: {reply:?}");

    // 7. rejected_events needs the admin role over SQL, as over HTTP; every table × role.
    for table in ["customers", "recommendations", "similar_products", "products", "model_params", "engine_stats"] {
        for token in [QUERY, ADMIN] {
            let (status, answer) = sql(&server, token, &format!("SELECT * FROM {table} LIMIT 1"));
            assert_eq!(status, 200, "{table} with {token}: {answer}");
        }
    }
    let (status, answer) = sql(&server, QUERY, "SELECT raw FROM rejected_events");
    assert_eq!((status, answer["error"]["code"].as_str()), (403, Some("forbidden")), "{answer}");
    let (status, _) = sql(&server, QUERY, "WITH r AS (SELECT * FROM rejected_events) SELECT count(*) FROM r");
    assert_eq!(status, 403, "a CTE does not hide the table");
    let (status, _) = sql(&server, ADMIN, "SELECT raw FROM rejected_events LIMIT 1");
    assert_eq!(status, 200);
    let denied = psql(&server, QUERY, "SELECT raw FROM rejected_events");
    assert!(String::from_utf8_lossy(&denied.stderr).contains("permission denied"), "{denied:?}");
    assert!(psql(&server, ADMIN, "SELECT count(*) FROM rejected_events").status.success());

    // 8. Erasure finds escaped spellings of the id among the rejected events.
    let escaped =
        r#"{"type":"visit","event_id":"v","customer_id":"plain\u0076ictim42","timestamp":"2026-01-05T10:00:00Z"}"#;
    assert_eq!(events(&server, escaped).0, 200);
    let (status, _, _) = request("DELETE", &format!("{}/v1/customers/plainvictim42", server.url), ADMIN, &[], b"");
    assert_eq!(status, 404, "the customer never existed, but their rejected events are erased");
    let (_, kept, _) = request("GET", &format!("{}/v1/admin/rejected?limit=10000", server.url), ADMIN, &[], b"");
    assert!(!kept.to_string().contains("ictim42"), "an escaped spelling survived erasure");

    // Minor cases: each gets a clear answer.
    let (status, answer, _) = request(
        "POST",
        &format!("{}/v1/events", server.url),
        INGEST,
        &[("Content-Encoding", "gzip")],
        b"\x1f\x8b\x08\x00",
    );
    assert_eq!((status, answer["error"]["code"].as_str()), (415, Some("unsupported_encoding")));
    let bom = [b"\xEF\xBB\xBF".as_slice(), purchase("bom", "c-bom", "2").as_bytes()].concat();
    let (status, answer, _) = request("POST", &format!("{}/v1/events", server.url), INGEST, &[], &bom);
    assert_eq!((status, answer["accepted"].as_u64()), (200, Some(1)), "{answer}");
    acknowledged.push("c-bom".into());
    // 1.7676072e12 ms is 2026-01-05T10:00:00Z, within the deduplication horizon of the other events.
    let exponent = purchase("exp", "c-exp", "2").replace(r#""2026-01-05T10:00:00Z""#, "1.7676072e12");
    assert_eq!(events(&server, &exponent).1["accepted"].as_u64(), Some(1));
    acknowledged.push("c-exp".into());
    let nul = purchase("nul", "c\\u0000x", "2");
    assert!(events(&server, &nul).1["rejected"][0]["error"].as_str().unwrap().contains("control character"));

    // pgwire asks for SCRAM-SHA-256, never for a clear-text password (psql logged in above through it).
    let mut pg = TcpStream::connect(server.pg).unwrap();
    let params = b"user\0analyst\0database\0patron\0\0";
    let mut startup = ((8 + params.len()) as i32).to_be_bytes().to_vec();
    startup.extend_from_slice(&196_608i32.to_be_bytes());
    startup.extend_from_slice(params);
    pg.write_all(&startup).unwrap();
    let mut reply = [0u8; 64];
    pg.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let n = pg.read(&mut reply).unwrap();
    assert_eq!((reply[0], i32::from_be_bytes(reply[5..9].try_into().unwrap())), (b'R', 10), "{:?}", &reply[..n]);
    assert!(String::from_utf8_lossy(&reply[9..n]).contains("SCRAM-SHA-256"));

    // After the corpus: alive, ready, bounded, and every acknowledged customer is there.
    assert_alive_and_ready(&server);
    let rss = peak_rss(server.pid());
    eprintln!("peak RSS over the hostile corpus: {} MiB", rss >> 20);
    assert!(rss < PEAK_RSS_BOUND, "peak RSS {rss} bytes over the corpus");
    let present = |server: &Server| {
        let list = acknowledged.iter().map(|c| format!("'{c}'")).collect::<Vec<_>>().join(",");
        let (_, rows) =
            sql(server, ADMIN, &format!("SELECT count(*) AS n FROM customers WHERE customer_id IN ({list})"));
        rows[0]["n"].as_u64()
    };
    assert_eq!(present(&server), Some(acknowledged.len() as u64));
    // A crash and restart keeps them all: the directory is not bricked.
    server.kill_dash_nine();
    let server = start(&data, &config);
    assert_alive_and_ready(&server);
    assert_eq!(present(&server), Some(acknowledged.len() as u64));
}

/// The backend corpus (`fixtures/bad_input/backends.jsonl`, issue 20): events
/// as backends send them, each with the answer it must get, in order, on one
/// real server. Afterwards the refused refunds must have left no trace.
#[test]
fn backend_payloads_get_their_specific_answers_and_refused_refunds_leave_no_trace() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let server = start(&dir.path().join("data"), &config);
    let corpus = std::fs::read_to_string(patron_tests::fixture("bad_input/backends.jsonl")).unwrap();
    for line in corpus.lines().filter(|l| !l.trim().is_empty()) {
        let case: Value = serde_json::from_str(line).unwrap();
        let name = case["case"].as_str().unwrap();
        let query = case["source"].as_str().map(|s| format!("?source={s}")).unwrap_or_default();
        let url = format!("{}/v1/events{query}", server.url);
        let (status, answer, _) =
            request("POST", &url, INGEST, &[("Content-Type", "application/json")], case["send"].to_string().as_bytes());
        assert_eq!(status, 200, "{name}: {answer}");
        assert_eq!(answer["accepted"], case["accepted"], "{name}: {answer}");
        assert_eq!(answer["duplicates"].as_u64().unwrap_or(0), case["duplicates"].as_u64().unwrap_or(0), "{name}");
        let errors: Vec<&str> = answer["rejected"]
            .as_array()
            .map(|r| r.iter().filter_map(|e| e["error"].as_str()).collect())
            .unwrap_or_default();
        let expected: Vec<&str> = case["errors"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
        assert_eq!(errors, expected, "{name}: {answer}");
    }
    let (status, rows) = sql(
        &server,
        QUERY,
        "SELECT customer_id, revenue FROM customers WHERE customer_id IN ('shopper', 'ghost', 'ga4-user') ORDER BY 1",
    );
    assert_eq!(status, 200, "{rows}");
    assert_eq!(
        rows,
        serde_json::json!([{"customer_id": "ga4-user", "revenue": 0.0}, {"customer_id": "shopper", "revenue": 15.0}]),
        "only the Segment refund of 4 and the GA4 full refund applied"
    );
    let (_, stats) = sql(&server, ADMIN, "SELECT value FROM engine_stats WHERE name = 'events_refused_refunds'");
    assert_eq!(stats[0]["value"].as_f64(), Some(5.0), "{stats}");

    // Channels beyond the three are kept and queryable, across a snapshot,
    // a later statement in the log tail, and a kill -9.
    let consents = |server: &Server| {
        sql(
            server,
            QUERY,
            "SELECT customer_id, channel, consent, CAST(stated_at AS VARCHAR) AS at FROM channel_consents",
        )
        .1
    };
    let expected = serde_json::json!([
        {"customer_id": "shopper", "channel": "postal", "consent": false, "at": "2026-01-05T10:03:00"},
        {"customer_id": "shopper", "channel": "whatsapp", "consent": true, "at": "2026-01-05T10:03:00"},
    ]);
    assert_eq!(consents(&server), expected);
    assert_eq!(request("POST", &format!("{}/v1/admin/snapshot", server.url), ADMIN, &[], b"").0, 200);
    let later = r#"{"type":"consent","event_id":"k-6","customer_id":"shopper","timestamp":"2026-01-08T09:00:00Z","channels":{"whatsapp":"opted_out"}}"#;
    let older = r#"{"type":"consent","event_id":"k-7","customer_id":"shopper","timestamp":"2026-01-01T09:00:00Z","channels":{"postal":true}}"#;
    assert_eq!(events(&server, &format!("{later}\n{older}")).1["accepted"], 2);
    let expected = serde_json::json!([
        {"customer_id": "shopper", "channel": "postal", "consent": false, "at": "2026-01-05T10:03:00"},
        {"customer_id": "shopper", "channel": "whatsapp", "consent": false, "at": "2026-01-08T09:00:00"},
    ]);
    assert_eq!(consents(&server), expected, "the latest statement by event time wins, per channel");
    let data = dir.path().join("data");
    server.kill_dash_nine();
    let server = start(&data, &config);
    assert_eq!(consents(&server), expected, "after kill -9: snapshot and log tail");
    assert_eq!(request("DELETE", &format!("{}/v1/customers/shopper", server.url), ADMIN, &[], b"").0, 200);
    assert_eq!(consents(&server), serde_json::json!([]), "erased with the customer");
}
