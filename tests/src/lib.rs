//! Support for Patron's end-to-end tests: the real `patron` binary, fixtures
//! and readers for its output files.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

pub mod nats;

/// Path of a file under `fixtures/`.
pub fn fixture(path: &str) -> PathBuf {
    workspace_root().join("fixtures").join(path)
}

/// The repository root: the nearest directory holding `fixtures/` above the
/// running test's crate. Cargo's run-time `CARGO_MANIFEST_DIR` comes first: a
/// test binary compiled in another checkout sharing the target directory
/// would otherwise look for fixtures there. The crate may be `tests/` or one
/// under `crates/`.
pub fn workspace_root() -> PathBuf {
    let manifest_dir =
        std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    manifest_dir
        .ancestors()
        .skip(1)
        .find(|dir| dir.join("fixtures").is_dir())
        .map_or_else(|| manifest_dir.join(".."), Path::to_path_buf)
}

/// The `patron` binary that `cargo test --workspace` built beside this test
/// executable. It is not built again here: `cargo build -p patron-server`
/// would unify features differently from the test build and compile DataFusion
/// a second time (issue 13). `patron-server` has an integration test so that
/// the test build always includes the binary.
pub fn patron_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let test_exe = std::env::current_exe().expect("the test knows its own path");
        // target/<profile>/deps/<test> → target/<profile>/patron
        let binary = test_exe
            .parent()
            .and_then(Path::parent)
            .map(|profile| profile.join(format!("patron{}", std::env::consts::EXE_SUFFIX)))
            .expect("the test executable lives in target/<profile>/deps");
        assert!(
            binary.exists(),
            "{} is missing: run the tests with `tests/run` or `cargo test --workspace`, which build it",
            binary.display()
        );
        binary
    })
}

/// The Python interpreter with the test clients: the project's `.venv` (made
/// by `tests/run`) when it exists, else `python3` from `PATH`.
pub fn python() -> PathBuf {
    let venv = workspace_root().join(".venv/bin/python3");
    if venv.exists() { venv } else { PathBuf::from("python3") }
}

/// Runs `patron` with `args`.
pub fn patron(args: &[&str]) -> Output {
    Command::new(patron_binary()).args(args).output().expect("patron runs")
}

/// `patron query --data-dir DATA [flags…] --format FORMAT SQL`: a query on a
/// data directory offline (no server may hold it).
pub fn query_offline(data: &Path, flags: &[&str], format: &str, sql: &str) -> Output {
    let mut args = vec!["query", "--data-dir", data.to_str().expect("utf-8 path")];
    args.extend_from_slice(flags);
    args.extend_from_slice(&["--format", format, sql]);
    patron(&args)
}

/// Text of stdout and stderr together, for assertion messages.
pub fn transcript(output: &Output) -> String {
    format!("{}\n{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// Runs `patron score` on `input` into `out` with `flags`; panics with the
/// transcript on failure. Returns `model_params.json` and the transcript.
pub fn run_score(input: &Path, out: &Path, flags: &[&str]) -> (serde_json::Value, String) {
    let mut args =
        vec!["score", "--input", input.to_str().expect("utf-8 path"), "--out", out.to_str().expect("utf-8 path")];
    args.extend_from_slice(flags);
    let output = patron(&args);
    let text = transcript(&output);
    assert!(output.status.success(), "{text}");
    let params = std::fs::read(out.join("model_params.json")).expect("model_params.json written");
    (serde_json::from_slice(&params).expect("valid JSON"), text)
}

/// `patron score` with the CDNOW calibration settings (observation end
/// 1997-09-30, weeks, USD) plus `extra` flags.
pub fn score_like_cdnow(input: &Path, out: &Path, extra: &[&str]) -> (serde_json::Value, String) {
    let mut flags = vec!["--observation-end", "1997-09-30", "--time-unit", "weeks", "--currency", "USD"];
    flags.extend_from_slice(extra);
    run_score(input, out, &flags)
}

/// `serve`/`demo` flags that put every listener on an ephemeral loopback port.
pub const EPHEMERAL_LISTENERS: [&str; 6] = ["--http", "127.0.0.1:0", "--pg", "127.0.0.1:0", "--flight", "127.0.0.1:0"];

/// A `patron serve` child process on an ephemeral loopback port.
pub struct Server {
    child: std::process::Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The pgwire listener, `127.0.0.1:PORT`.
    pub pg: std::net::SocketAddr,
    /// The Flight SQL listener, `127.0.0.1:PORT`.
    pub flight: std::net::SocketAddr,
}

impl Server {
    /// Starts `patron serve` on `data_dir` with `extra` flags and waits until it listens.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Server {
        Self::launch("serve", data_dir, extra, &[], None)
    }

    /// [`Self::start`] with extra environment variables (a crash point).
    pub fn start_with_env(data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        Self::launch("serve", data_dir, extra, env, None)
    }

    /// [`Self::start_with_env`], with the server's log (stderr) written to `log`.
    pub fn start_logged(data_dir: &Path, extra: &[&str], env: &[(&str, &str)], log: &Path) -> Server {
        Self::launch("serve", data_dir, extra, env, Some(log))
    }

    /// Starts `patron demo` (the README's main command) on `data_dir` with
    /// `extra` flags and waits until its API listens; it streams meanwhile.
    pub fn start_demo(data_dir: &Path, extra: &[&str]) -> Server {
        Self::launch("demo", data_dir, extra, &[], None)
    }

    fn launch(command: &str, data_dir: &Path, extra: &[&str], env: &[(&str, &str)], log: Option<&Path>) -> Server {
        use std::io::BufRead;
        let mut args = vec![command, "--data-dir", data_dir.to_str().expect("utf-8 path")];
        args.extend_from_slice(&EPHEMERAL_LISTENERS);
        args.extend_from_slice(extra);
        let mut child = Command::new(patron_binary())
            .args(&args)
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::piped())
            .stderr(match log {
                Some(path) => std::fs::File::create(path).expect("server log file").into(),
                None if std::env::var("PATRON_TEST_SERVER_LOGS").is_ok() => std::process::Stdio::inherit(),
                None => std::process::Stdio::null(),
            })
            .spawn()
            .unwrap_or_else(|e| panic!("patron {command} does not start: {e}"));
        let stdout = child.stdout.take().expect("stdout piped");
        let mut lines = std::io::BufReader::new(stdout).lines();
        let (mut pg, mut flight) = (None, None);
        let url = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(rest) = line.strip_prefix("pgwire on ") {
                        pg = rest.split_whitespace().next().and_then(|a| a.parse().ok());
                    }
                    if let Some(rest) = line.strip_prefix("flight-sql on ") {
                        flight = rest.split_whitespace().next().and_then(|a| a.parse().ok());
                    }
                    if let Some(url) = line.strip_prefix("listening on ") {
                        break url.to_owned();
                    }
                }
                _ => {
                    let status = child.wait().ok();
                    panic!("patron {command} exited before listening: {status:?}");
                }
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        let pg = pg.expect("patron prints its pgwire address before the HTTP one");
        let flight = flight.expect("patron prints its Flight SQL address before the HTTP one");
        Server { child, url, pg, flight }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, as a crash.
    pub fn kill_dash_nine(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the process to end on its own (a crash point), at most `limit`.
    pub fn wait_for_exit(mut self, limit: std::time::Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `patron score` in days with USD as the base currency and "now" = the latest
/// event (what a streaming server sees); returns its `model_params.json`.
pub fn score_in_days(input: &Path, out: &Path) -> serde_json::Value {
    run_score(input, out, &["--currency", "USD", "--top", "0"]).0
}

/// The CDNOW calibration purchases as (CSV rows, NDJSON events).
pub fn cdnow_calibration() -> (String, Vec<String>) {
    let mut csv = String::from("customer_id,date,cds,amount\n");
    let mut events = Vec::new();
    let mut reader = csv::Reader::from_path(fixture("cdnow/cdnow_transactions.csv")).unwrap();
    for (i, row) in reader.records().enumerate() {
        let row = row.unwrap();
        let d = &row[1];
        if d > "19970930" {
            continue;
        }
        csv.push_str(&format!("{},{},{},{}\n", &row[0], d, &row[2], &row[3]));
        events.push(format!(
            r#"{{"type":"purchase","event_id":"line-{}","customer_id":"{}","timestamp":"{}-{}-{}T00:00:00Z","currency":"USD","revenue":"{}"}}"#,
            i + 2, &row[0], &d[..4], &d[4..6], &d[6..], &row[3]
        ));
    }
    (csv, events)
}

/// POSTs `body` and returns the status and the JSON answer (Null if not JSON).
pub fn post_json(url: &str, content_type: &str, body: &str) -> (u16, serde_json::Value) {
    match ureq::post(url).set("Content-Type", content_type).send_string(body) {
        Ok(r) => (r.status(), r.into_json().unwrap_or(serde_json::Value::Null)),
        Err(ureq::Error::Status(code, r)) => (code, r.into_json().unwrap_or(serde_json::Value::Null)),
        Err(e) => panic!("{url}: {e}"),
    }
}

/// A GET returning JSON (also for error statuses).
pub fn get_json(url: &str) -> (u16, serde_json::Value) {
    match ureq::get(url).call() {
        Ok(r) => (r.status(), r.into_json().unwrap_or(serde_json::Value::Null)),
        Err(ureq::Error::Status(code, r)) => (code, r.into_json().unwrap_or(serde_json::Value::Null)),
        Err(e) => panic!("{url}: {e}"),
    }
}

/// A server holding `fixtures/shop/events.ndjson` (8 events accepted, 2
/// rejected) with its recommendation model refreshed.
pub fn shop_server(dir: &Path) -> Server {
    let server = Server::start(&dir.join("data"), &["--currency", "USD", "--refit-interval", "3600"]);
    let events = std::fs::read_to_string(fixture("shop/events.ndjson")).expect("shop fixture");
    let (status, body) = post_json(&format!("{}/v1/events", server.url), "application/x-ndjson", &events);
    assert_eq!(status, 200, "{body}");
    assert_eq!((body["accepted"].as_u64(), body["rejected"].as_array().map(Vec::len)), (Some(8), Some(2)), "{body}");
    let (status, body) = post_json(&format!("{}/v1/admin/recommendations/refresh", server.url), "application/json", "");
    assert_eq!((status, body["products"].as_u64()), (200, Some(4)), "{body}");
    server
}

/// Streams the CDNOW calibration purchases into `server` and refits, so its
/// state is what `patron score` computes for the same file in days.
pub fn load_cdnow(server: &Server) {
    let (_, events) = cdnow_calibration();
    for chunk in events.chunks(1000) {
        let (status, body) = post_json(&format!("{}/v1/events", server.url), "application/x-ndjson", &chunk.join("\n"));
        assert_eq!((status, body["accepted"].as_u64()), (200, Some(chunk.len() as u64)), "{body}");
    }
    let (status, body) = post_json(&format!("{}/v1/admin/refit", server.url), "text/plain", "");
    assert_eq!(status, 200, "{body}");
}
