//! The HTTP stage, in criterion: `POST /v1/events` of NDJSON bodies against
//! a release `patron serve` on a fresh data directory (durable answers: the
//! log is synced before each answer), from four client threads at once, as
//! `patron loadgen --rate 0 --connections 4` does. Each measured iteration
//! sends four bodies of 1,000 new events, one per thread, so the time per
//! event includes HTTP, decoding, the log's group commit, applying and
//! rescoring, on the same 2 cores as the clients. The bodies are built
//! before the clock starts (untimed setup).
//!
//! - `http/post_4x1000_events`: the figure above.
//!
//! The server's CPU per event, the figure the budget is stated in,
//! comes from `patron loadgen --server-pid` (it reads `/proc/<pid>/stat`);
//! this bench is the stage's regression guard.
//!
//! Run: `cargo bench -p patron-server --bench http` (or `benches/record.sh http`).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use patron_workload::{EventStream, ShopConfig};

const CLIENTS: usize = 4;
const EVENTS_PER_BODY: usize = 1_000;

/// A server on a fresh directory, stopped when dropped.
struct Server {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut child = Command::new(env!("CARGO_BIN_EXE_patron"))
            .args(["serve", "--http", "127.0.0.1:0", "--pg", "127.0.0.1:0", "--flight", "127.0.0.1:0"])
            .args(["--refit-interval", "3600", "--snapshot-interval", "3600", "--data-dir"])
            .arg(dir.path().join("data"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("patron serve starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let url = BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|line| line.strip_prefix("listening on ").map(str::to_owned))
            .expect("the server says where it listens");
        Self { child, url, _dir: dir }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http(c: &mut Criterion) {
    let server = Server::start();
    let endpoint = format!("{}/v1/events", server.url);
    let agents: Vec<ureq::Agent> =
        (0..CLIENTS).map(|_| ureq::AgentBuilder::new().timeout(Duration::from_secs(60)).build()).collect();
    // A million customers arriving over the last four years: new and returning
    // customers, as in `patron loadgen`, and no event ahead of the server's clock.
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    let shop = ShopConfig {
        customers: 1_000_000,
        arrival_days: 4 * 365,
        start_ms: now_ms - 4 * 365 * 86_400_000,
        id_prefix: "bench".into(),
        ..ShopConfig::default()
    };
    let mut stream = EventStream::new(shop, 11);
    let mut next_body = move || {
        let mut body = String::with_capacity(EVENTS_PER_BODY * 200);
        for line in stream.by_ref().take(EVENTS_PER_BODY) {
            body.push_str(&line);
            body.push('\n');
        }
        body
    };
    let mut group = c.benchmark_group("http");
    group.sample_size(20);
    group.throughput(Throughput::Elements((CLIENTS * EVENTS_PER_BODY) as u64));
    group.bench_function("post_4x1000_events", |b| {
        b.iter_custom(|iterations| {
            let bodies: Vec<Vec<String>> =
                (0..CLIENTS).map(|_| (0..iterations).map(|_| next_body()).collect()).collect();
            let started = Instant::now();
            std::thread::scope(|scope| {
                for (agent, bodies) in agents.iter().zip(bodies) {
                    let endpoint = &endpoint;
                    scope.spawn(move || {
                        for body in bodies {
                            let answer = agent
                                .post(endpoint)
                                .set("content-type", "application/x-ndjson")
                                .send_string(&body)
                                .expect("the server answers 200");
                            let _ = answer.into_string();
                        }
                    });
                }
            });
            started.elapsed()
        })
    });
    group.finish();
}

criterion_group!(benches, http);
criterion_main!(benches);
