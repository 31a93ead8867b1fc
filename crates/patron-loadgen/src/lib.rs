//! Patron's capacity harness: drives a running server over HTTP with a
//! realistic event stream and measures what a capacity tester needs.
//!
//! Design constraints:
//! - **Realistic input.** Events come from `patron_workload::EventStream`
//!   (customers arriving over time and buying by the BG/NBD process,
//!   Zipf-popular products within categories, multi-item baskets, refunds,
//!   consent changes), moved so the stream ends at the wall clock, plus a
//!   configurable share of malformed and duplicate events.
//! - **Open or closed loop.** With a target rate, batches are scheduled at
//!   fixed times and latency is measured from the *scheduled* time, so a
//!   slow server cannot hide its queueing (no coordinated omission). With
//!   rate 0, each connection sends its next batch when the previous answer
//!   arrives.
//! - **Freshness by observation.** Marker purchases of new customers ride in
//!   ordinary batches; a poller asks `GET /v1/customers/{id}` until the
//!   customer exists, and the time from the batch's send to that answer is
//!   the event → visible-score freshness.
//! - **The server's cost, not the client's.** Request bodies are built
//!   before the clock starts (up to [`LoadConfig::prebuild_bytes`]), so that
//!   on a machine the two share, sending costs the client almost nothing;
//!   the server's CPU seconds per accepted event are read from
//!   `/proc/<pid>/stat` and reported next to the rate.
//! - **Histograms, not averages.** Latencies go into HDR histograms (3
//!   significant digits) and are reported as p50/p90/p99/p99.9/max.
//!
//! ```text
//! generator ─► bounded queue ─► N connections (POST /v1/events) ─► latency histograms
//!     └─ markers ─► poller (GET /v1/customers/{id}) ─► freshness histogram
//! monitor: server RSS and CPU from /proc/<pid>, accepted events per second
//! ```

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam::channel::{Receiver, Sender, bounded, unbounded};
use hdrhistogram::Histogram;
use patron_workload::{EventStream, ShopConfig};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

/// What to run.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    /// Base URL of the server.
    pub url: String,
    /// Target events per second (0: as fast as the server accepts).
    pub rate: u64,
    /// How long to send.
    pub duration: Duration,
    /// Sent first and not measured: latency, freshness markers and the
    /// timeline's rate start after it (the server's first allocations and
    /// the client's start-up are not steady state).
    pub warmup: Duration,
    /// Customers in the synthetic shop.
    pub customers: usize,
    /// Products in its catalogue.
    pub products: usize,
    /// Concurrent connections.
    pub connections: usize,
    /// Events per request.
    pub batch: usize,
    /// Share of extra malformed events (each must be rejected).
    pub malformed_share: f64,
    /// Share of events sent a second time (each must count as a duplicate).
    pub duplicate_share: f64,
    /// Campaign responses to mix in: the campaign, and their share of the
    /// events. Each goes to a random treatment member of the campaign, read
    /// from the server's `campaign_members` before the run (each must be accepted).
    pub responses: Option<(String, f64)>,
    /// Time between freshness markers.
    pub marker_every: Duration,
    /// Bearer token with the ingest and query roles.
    pub token: Option<String>,
    /// The server's process id, for RSS and CPU (read from `/proc`).
    pub server_pid: Option<u32>,
    /// Seed of the synthetic shop.
    pub seed: u64,
    /// Plant customer tastes and product complements in the shop
    /// (`ShopConfig::planted_tastes`; for judging recommendations).
    pub planted_tastes: bool,
    /// An analyst beside the load: runs [`Self::sql`] over `POST /v1/sql`
    /// every this often (zero: back to back) while events are sent.
    pub sql_every: Option<Duration>,
    /// The analyst's query.
    pub sql: String,
    /// Bytes of request bodies built before the clock starts (0: build
    /// them while sending). A run that outlasts them goes on with bodies
    /// built as it sends, and the report says how many were prebuilt.
    pub prebuild_bytes: usize,
}

/// The analyst's default query: the full-table aggregate of DESIGN.md §6.
pub const DEFAULT_ANALYST_SQL: &str = "SELECT rfm_segment, count(*), avg(clv) FROM customers GROUP BY 1";

/// Default [`LoadConfig::prebuild_bytes`]: 4.2 million of the generator's
/// events (18 s at 230,000 events/s), built in about 16 s on the 2-core
/// reference machine.
pub const DEFAULT_PREBUILD_BYTES: usize = 1 << 30;

impl Default for LoadConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8080".into(),
            rate: 0,
            duration: Duration::from_secs(10),
            warmup: Duration::ZERO,
            customers: 100_000,
            products: 10_000,
            connections: 4,
            batch: 1_000,
            malformed_share: 0.001,
            duplicate_share: 0.001,
            responses: None,
            marker_every: Duration::from_millis(100),
            token: None,
            server_pid: None,
            seed: 42,
            planted_tastes: false,
            sql_every: None,
            sql: DEFAULT_ANALYST_SQL.to_owned(),
            prebuild_bytes: DEFAULT_PREBUILD_BYTES,
        }
    }
}

/// Errors of the harness.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A setting is out of range.
    #[error("invalid setting: {0}")]
    Config(String),
    /// The server did not answer before the run.
    #[error("cannot reach {url}: {reason}")]
    Unreachable {
        /// The URL tried.
        url: String,
        /// What went wrong.
        reason: String,
    },
}

/// Percentiles of a latency histogram, milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest value.
    pub max: f64,
    /// Values recorded.
    pub count: u64,
    /// The distribution for plots: `[quantile, ms]` at [`CDF_QUANTILES`].
    pub cdf: Vec<[f64; 2]>,
}

/// Quantiles kept in [`Percentiles::cdf`]: dense in the tail, where latency
/// distributions differ.
pub const CDF_QUANTILES: [f64; 19] =
    [0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999, 0.9995, 0.9999, 1.0];

impl Percentiles {
    fn of(h: &Histogram<u64>) -> Self {
        let ms = |micros: u64| micros as f64 / 1000.0;
        if h.is_empty() {
            return Self::default();
        }
        Self {
            p50: ms(h.value_at_quantile(0.5)),
            p90: ms(h.value_at_quantile(0.9)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
            count: h.len(),
            cdf: CDF_QUANTILES.iter().map(|&q| [q, ms(h.value_at_quantile(q))]).collect(),
        }
    }
}

/// One second of the run.
#[derive(Clone, Debug, Serialize)]
pub struct Tick {
    /// Seconds since the start.
    pub second: f64,
    /// Events accepted in that second.
    pub accepted_per_s: f64,
    /// Server RSS at the end of it, if known.
    pub rss_bytes: Option<u64>,
    /// Slowest request answered in that second, ms.
    pub max_http_latency_ms: f64,
    /// Latest the client handed a batch to a connection after its
    /// scheduled time in that second, ms (open loop; 0 in closed loop).
    pub max_send_delay_ms: f64,
}

/// What a run measured (the JSON result without the provenance).
#[derive(Clone, Debug, Serialize)]
pub struct LoadReport {
    /// Accepted (durable) events per second over the sending period.
    pub events_per_s: f64,
    /// Events sent (good, malformed and duplicate).
    pub sent: u64,
    /// Events the server accepted.
    pub accepted: u64,
    /// Events the server reported as duplicates.
    pub duplicates: u64,
    /// Events the server rejected.
    pub rejected: u64,
    /// Malformed events sent (all should be rejected).
    pub malformed_sent: u64,
    /// Duplicate events sent (all should be reported as duplicates).
    pub duplicates_sent: u64,
    /// Requests answered 429/503 and sent again after `Retry-After`.
    pub overload_retries: u64,
    /// Refunds sent again because they overtook their order on another
    /// connection (the shop's years are compressed into seconds); each is
    /// counted once, by its final answer.
    pub refunds_resent: u64,
    /// Requests that failed otherwise (their events are not counted as accepted).
    pub failed_requests: u64,
    /// Seconds spent sending.
    pub seconds: f64,
    /// Request latency (send, or scheduled send in open loop, to answer).
    pub http_latency_ms: Percentiles,
    /// Marker event sent → visible in `GET /v1/customers/{id}`.
    pub freshness_ms: Percentiles,
    /// Markers never seen within 10 s.
    pub markers_lost: u64,
    /// Largest server RSS seen (needs the server's pid).
    pub peak_rss_bytes: Option<u64>,
    /// Server CPU seconds (user + system) during the run.
    pub server_cpu_seconds: Option<f64>,
    /// Server CPU microseconds per accepted event (user + system over the
    /// whole run, warm-up included, like the accepted count).
    pub server_cpu_us_per_event: Option<f64>,
    /// Events in bodies built before the clock started; the rest were built
    /// while sending, on the same machine.
    pub prebuilt_events: u64,
    /// Accepted events per second, second by second.
    pub timeline: Vec<Tick>,
    /// Shops the generator went through (a new one starts when a shop's
    /// history reaches the wall clock).
    pub shops: u32,
    /// Latest the client handed a batch to a connection after its
    /// scheduled time, ms (open loop): the most the client itself adds to
    /// the measured latency.
    pub max_send_delay_ms: f64,
    /// The server's slowest log fdatasync since it started, ms (from its
    /// `/metrics`): a slow sync holds back every acknowledgement behind it.
    pub server_max_sync_ms: Option<f64>,
    /// The analyst's query latency (with `sql_every`), after the warm-up.
    pub sql_latency_ms: Option<Percentiles>,
    /// Analyst queries that failed.
    pub sql_failures: u64,
    /// The longest a SQL scan held a shard's lock on the server, ms (its
    /// `engine_stats`), with `sql_every`.
    pub server_max_scan_lock_ms: Option<f64>,
}

/// Counters a progress display can read while the run goes on.
#[derive(Debug, Default)]
pub struct Live {
    /// Events built before the clock starts (see [`LoadConfig::prebuild_bytes`]).
    pub prebuilt: AtomicU64,
    /// Events sent.
    pub sent: AtomicU64,
    /// Events accepted.
    pub accepted: AtomicU64,
    /// Requests in error.
    pub failed: AtomicU64,
    /// Slowest request answered since the monitor last looked, µs.
    pub max_latency_micros: AtomicU64,
    /// Latest the client handed a batch to a connection after its
    /// scheduled time, since the monitor last looked, µs (open loop).
    pub max_send_delay_micros: AtomicU64,
}

/// One request's worth of events.
struct Batch {
    body: String,
    events: u64,
    scheduled: Instant,
    markers: Vec<String>,
    /// Malformed events in it.
    malformed: u64,
    /// Deliberate duplicates in it.
    duplicates: u64,
}

impl Batch {
    /// Puts a marker purchase for a new customer `{run}-marker-{n}` first.
    fn add_marker(&mut self, run: &str, n: u64) {
        let customer = format!("{run}-marker-{n}");
        let line = format!(
            r#"{{"type":"purchase","event_id":"{customer}","customer_id":"{customer}","timestamp":{},"revenue":"1.00"}}"#,
            now_ms()
        );
        self.body.insert_str(0, &format!("{line}\n"));
        self.events += 1;
        self.markers.push(customer);
    }
}

/// Batches generated ahead of the schedule, so a slow moment of the
/// generator (a new shop, a large allocation) does not delay sending.
const PREPARED_BATCHES: usize = 128;

/// The event source: the synthetic shop, shifted to end at the wall clock,
/// with malformed and duplicate events mixed in.
struct Generator {
    config: LoadConfig,
    run: String,
    stream: EventStream,
    /// The next shop, built on its own thread while this one is sent:
    /// building a 1M-customer shop takes long enough to stall an open-loop
    /// schedule, which would be measured as server latency.
    next: Option<std::thread::JoinHandle<EventStream>>,
    generation: u32,
    rng: StdRng,
    recent: Vec<String>,
    malformed_sent: u64,
    duplicates_sent: u64,
    markers: u64,
    /// The campaign and its treatment members, when responses are mixed in.
    responders: Option<(String, Vec<String>)>,
    responses_sent: u64,
}

/// What the mixed-in responses say, in proportion: most are deliveries,
/// some opens and clicks, a few unsubscribes and bounces.
const RESPONSE_MIX: [(&str, f64); 5] =
    [("delivered", 0.6), ("opened", 0.25), ("clicked", 0.1), ("bounced", 0.04), ("unsubscribed", 0.01)];

/// Malformed events of several kinds; every one must be rejected.
const MALFORMED: [&str; 5] = [
    r#"{"type":"purchase","event_id":"EID","timestamp":1700000000000,"revenue":"1"}"#,
    r#"{"type":"purchase","event_id":"EID","customer_id":"c","timestamp":"not a time","revenue":"1"}"#,
    r#"{"type":"purchase","event_id":"EID","customer_id":"c","timestamp":1700000000000,"items":[{"sku":"s","quantity":0,"price":"1"}]}"#,
    r#"{"type":"purchase","event_id":"EID","customer_id":"c","timestamp":1700000000000,"currency":"XYZ","revenue":"1"}"#,
    r#"{"type":"purchase","event_id":"EID","#,
];

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn event_time(line: &str) -> Option<i64> {
    line.split("\"timestamp\":").nth(1)?.split([',', '}']).next()?.trim().parse().ok()
}

impl Generator {
    fn new(config: &LoadConfig) -> Self {
        let run = format!("lg{}", now_ms());
        let mut generator = Self {
            stream: EventStream::new(ShopConfig::default(), 0),
            next: None,
            config: config.clone(),
            generation: 0,
            rng: StdRng::seed_from_u64(config.seed),
            recent: Vec::with_capacity(1024),
            malformed_sent: 0,
            duplicates_sent: 0,
            markers: 0,
            responders: None,
            responses_sent: 0,
            run,
        };
        generator.restart();
        generator
    }

    /// Shop number `generation` (new ids), its history starting three years ago.
    fn shop(&self, generation: u32) -> (ShopConfig, u64) {
        let shop = ShopConfig {
            customers: self.config.customers,
            products: self.config.products,
            start_ms: now_ms() - 3 * 365 * 86_400_000,
            id_prefix: format!("{}-{}", self.run, generation),
            planted_tastes: self.config.planted_tastes,
            ..ShopConfig::default()
        };
        (shop, self.config.seed + u64::from(generation))
    }

    /// Switches to the next shop (prepared in the background when possible)
    /// and starts preparing the one after it.
    fn restart(&mut self) {
        self.generation += 1;
        let prepared = self.next.take().and_then(|handle| handle.join().ok());
        self.stream = match prepared {
            Some(stream) => stream,
            None => {
                let (shop, seed) = self.shop(self.generation);
                EventStream::new(shop, seed)
            }
        };
        let (shop, seed) = self.shop(self.generation + 1);
        self.next = Some(std::thread::spawn(move || EventStream::new(shop, seed)));
    }

    fn next_event(&mut self) -> String {
        loop {
            match self.stream.next() {
                // Events after the wall clock would be rejected as from the future: start a new shop.
                Some(line) if event_time(&line).is_some_and(|t| t <= now_ms()) => return line,
                _ => self.restart(),
            }
        }
    }

    /// A campaign response when `roll` (uniform, shifted past the other
    /// mixed-in kinds) falls in the responses' share.
    fn response(&mut self, roll: f64) -> Option<String> {
        let share = self.config.responses.as_ref().map_or(0.0, |r| r.1);
        if !(0.0..share).contains(&roll) {
            return None;
        }
        let (campaign, members) = self.responders.as_ref().filter(|(_, m)| !m.is_empty())?;
        let customer = &members[self.rng.random_range(0..members.len())];
        let mut pick: f64 = self.rng.random();
        let response = RESPONSE_MIX.iter().find(|(_, p)| {
            pick -= p;
            pick < 0.0
        });
        let response = response.map_or("delivered", |r| r.0);
        self.responses_sent += 1;
        Some(format!(
            r#"{{"type":"campaign_response","event_id":"{}-resp{}","customer_id":"{customer}","timestamp":{},"campaign_id":"{campaign}","response":"{response}"}}"#,
            self.run,
            self.responses_sent,
            now_ms()
        ))
    }

    /// A batch with a marker first when `marker`.
    fn batch(&mut self, scheduled: Instant, marker: bool) -> Batch {
        let mut batch = self.unmarked_batch(scheduled, marker as u64);
        if marker {
            self.markers += 1;
            batch.add_marker(&self.run, self.markers);
        }
        batch
    }

    /// `config.batch` events, less `room` left for markers.
    fn unmarked_batch(&mut self, scheduled: Instant, room: u64) -> Batch {
        let mut body = String::with_capacity(self.config.batch * 220);
        let mut events = 0u64;
        let push = |body: &mut String, events: &mut u64, line: &str| {
            body.push_str(line);
            body.push('\n');
            *events += 1;
        };
        let (malformed_before, duplicates_before) = (self.malformed_sent, self.duplicates_sent);
        while events + room < self.config.batch as u64 {
            let roll: f64 = self.rng.random();
            if roll < self.config.malformed_share {
                let kind = MALFORMED[self.malformed_sent as usize % MALFORMED.len()];
                let line = kind.replace("EID", &format!("{}-bad{}", self.run, self.malformed_sent));
                self.malformed_sent += 1;
                push(&mut body, &mut events, &line);
            } else if let Some(line) = self.response(roll - self.config.malformed_share - self.config.duplicate_share) {
                push(&mut body, &mut events, &line);
            } else if roll < self.config.malformed_share + self.config.duplicate_share && !self.recent.is_empty() {
                let i = self.rng.random_range(0..self.recent.len());
                let line = self.recent.swap_remove(i);
                self.duplicates_sent += 1;
                push(&mut body, &mut events, &line);
            } else {
                let line = self.next_event();
                push(&mut body, &mut events, &line);
                if self.recent.len() < 1024 {
                    self.recent.push(line);
                } else {
                    let i = self.rng.random_range(0..self.recent.len());
                    self.recent[i] = line;
                }
            }
        }
        Batch {
            body,
            events,
            scheduled,
            markers: Vec::new(),
            malformed: self.malformed_sent - malformed_before,
            duplicates: self.duplicates_sent - duplicates_before,
        }
    }
}

#[derive(Default)]
struct WorkerTotals {
    accepted: u64,
    duplicates: u64,
    rejected: u64,
    overload_retries: u64,
    failed: u64,
    refunds_resent: u64,
}

/// Times a refund that overtook its order is sent again, 20 ms apart.
const REFUND_RESENDS: u32 = 5;

/// The refunds of `body` the server refused because their order was not
/// there yet. The shop's history is compressed into seconds and batches go
/// out on several connections, so a refund can overtake its order; a real
/// producer, whose refunds come days later, resends such a refund, and so
/// does the generator.
fn overtaken_refunds(body: &str, answer: &serde_json::Value) -> Vec<String> {
    let lines: Vec<&str> = body.lines().collect();
    answer["rejected"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| {
            r["error"].as_str().is_some_and(|e| {
                (e.starts_with("customer_id:") && e.contains("has no purchases"))
                    || (e.starts_with("order_id:") && e.contains("has no order"))
            })
        })
        .filter_map(|r| lines.get(usize::try_from(r["index"].as_u64()?).ok()?).copied())
        .filter(|line| line.contains(r#""type":"refund""#))
        .map(str::to_owned)
        .collect()
}

/// The treatment members of `campaign`, from the server's `campaign_members`.
fn treatment_members(config: &LoadConfig, campaign: &str) -> Result<Vec<String>, LoadError> {
    let url = format!("{}/v1/sql", config.url.trim_end_matches('/'));
    let sql = format!(
        "SELECT customer_id FROM campaign_members WHERE campaign_id = '{}' AND \"group\" = 'treatment'",
        campaign.replace('\'', "''")
    );
    let unreachable = |reason: String| LoadError::Unreachable { url: url.clone(), reason };
    let rows: Vec<serde_json::Value> = authorised(agent().post(&url), config.token.as_deref())
        .set("Accept", "application/json")
        .send_string(&sql)
        .map_err(|e| unreachable(e.to_string()))?
        .into_json()
        .map_err(|e| unreachable(e.to_string()))?;
    Ok(rows.iter().filter_map(|r| r["customer_id"].as_str().map(str::to_owned)).collect())
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new().timeout(Duration::from_secs(60)).build()
}

fn authorised(request: ureq::Request, token: Option<&str>) -> ureq::Request {
    match token {
        Some(t) => request.set("Authorization", &format!("Bearer {t}")),
        None => request,
    }
}

/// Sends batches until the queue closes; returns its totals and latency histogram.
fn connection(
    config: &LoadConfig,
    batches: &Receiver<Batch>,
    sent_markers: &Sender<(String, Instant)>,
    live: &Live,
    measure_from: Instant,
) -> (WorkerTotals, Histogram<u64>) {
    let agent = agent();
    let url = format!("{}/v1/events", config.url.trim_end_matches('/'));
    let mut totals = WorkerTotals::default();
    let mut latency = histogram();
    while let Ok(batch) = batches.recv() {
        let start = if config.rate == 0 { Instant::now() } else { batch.scheduled };
        loop {
            let request =
                authorised(agent.post(&url).set("Content-Type", "application/x-ndjson"), config.token.as_deref());
            match request.send_string(&batch.body) {
                Ok(response) => {
                    let body: serde_json::Value = response.into_json().unwrap_or_default();
                    let count = |k: &str| body[k].as_u64().unwrap_or(0);
                    totals.accepted += count("accepted");
                    totals.duplicates += count("duplicates");
                    // `rejected` describes at most the first 100; `rejected_count` counts them all.
                    totals.rejected += body["rejected_count"]
                        .as_u64()
                        .unwrap_or_else(|| body["rejected"].as_array().map_or(0, |r| r.len() as u64));
                    live.accepted.fetch_add(count("accepted"), Ordering::Relaxed);
                    let overtaken = overtaken_refunds(&batch.body, &body);
                    if !overtaken.is_empty() {
                        totals.rejected -= overtaken.len() as u64;
                        resend_refunds(&agent, &url, config, overtaken, &mut totals, live);
                    }
                    for m in &batch.markers {
                        let _ = sent_markers.send((m.clone(), start));
                    }
                    break;
                }
                Err(ureq::Error::Status(429 | 503, response)) => {
                    totals.overload_retries += 1;
                    let wait = response.header("Retry-After").and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.1);
                    std::thread::sleep(Duration::from_secs_f64(wait.clamp(0.01, 5.0)));
                }
                Err(_) => {
                    totals.failed += 1;
                    live.failed.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
        }
        let micros = start.elapsed().as_micros() as u64;
        live.max_latency_micros.fetch_max(micros, Ordering::Relaxed);
        if start >= measure_from {
            let _ = latency.record(micros);
        }
    }
    (totals, latency)
}

/// Sends `refunds` again until their orders are there (see
/// [`overtaken_refunds`]), counting each once by its final answer.
fn resend_refunds(
    agent: &ureq::Agent,
    url: &str,
    config: &LoadConfig,
    mut refunds: Vec<String>,
    totals: &mut WorkerTotals,
    live: &Live,
) {
    for attempt in 1..=REFUND_RESENDS {
        std::thread::sleep(Duration::from_millis(20));
        totals.refunds_resent += refunds.len() as u64;
        let body = refunds.join("\n");
        let request = authorised(agent.post(url).set("Content-Type", "application/x-ndjson"), config.token.as_deref());
        let Ok(response) = request.send_string(&body) else {
            if attempt == REFUND_RESENDS {
                totals.rejected += refunds.len() as u64;
            }
            continue;
        };
        let answer: serde_json::Value = response.into_json().unwrap_or_default();
        let count = |k: &str| answer[k].as_u64().unwrap_or(0);
        totals.accepted += count("accepted");
        totals.duplicates += count("duplicates");
        live.accepted.fetch_add(count("accepted"), Ordering::Relaxed);
        let still = overtaken_refunds(&body, &answer);
        let other_rejections = count("rejected_count").saturating_sub(still.len() as u64);
        totals.rejected += other_rejections;
        if still.is_empty() {
            return;
        }
        if attempt == REFUND_RESENDS {
            totals.rejected += still.len() as u64;
        }
        refunds = still;
    }
}

/// An empty latency histogram in microseconds, 3 significant figures.
fn histogram() -> Histogram<u64> {
    Histogram::<u64>::new(3).expect("3 significant figures is a valid precision")
}

/// Polls for markers until `done` and none is pending (or each waited 10 s).
fn poll_markers(
    config: &LoadConfig,
    markers: &Receiver<(String, Instant)>,
    done: &AtomicBool,
) -> (Histogram<u64>, u64) {
    let agent = agent();
    let base = config.url.trim_end_matches('/').to_owned();
    let mut freshness = histogram();
    let (mut pending, mut lost): (Vec<(String, Instant)>, u64) = (Vec::new(), 0);
    loop {
        pending.extend(markers.try_iter());
        if pending.is_empty() && done.load(Ordering::Acquire) {
            break;
        }
        pending.retain(|(customer, sent)| {
            let url = format!("{base}/v1/customers/{customer}");
            match authorised(agent.get(&url), config.token.as_deref()).call() {
                Ok(_) => {
                    let _ = freshness.record(sent.elapsed().as_micros() as u64);
                    false
                }
                Err(_) if sent.elapsed() > Duration::from_secs(10) => {
                    lost += 1;
                    false
                }
                Err(_) => true,
            }
        });
        std::thread::sleep(Duration::from_millis(1));
    }
    (freshness, lost)
}

/// One unlabelled value from the server's Prometheus `/metrics`, if it has it.
fn server_metric(config: &LoadConfig, name: &str) -> Option<f64> {
    let url = format!("{}/metrics", config.url.trim_end_matches('/'));
    let text = authorised(agent().get(&url), config.token.as_deref()).call().ok()?.into_string().ok()?;
    text.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// RSS bytes and CPU seconds of `pid` (Linux `/proc`; CPU in 100 Hz ticks).
fn process_usage(pid: u32) -> Option<(u64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib: u64 =
        status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some((rss_kib * 1024, ticks as f64 / 100.0))
}

/// What [`dump`] wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Dumped {
    /// Lines written.
    pub events: u64,
    /// Of which malformed on purpose.
    pub malformed: u64,
    /// Of which repeated on purpose.
    pub duplicates: u64,
}

/// Writes `events` lines of the generator's stream as NDJSON instead of
/// sending them (the same events for `patron replay`, `patron score` or
/// another system's loader in a comparison).
pub fn dump(config: &LoadConfig, events: u64, out: &mut impl std::io::Write) -> std::io::Result<Dumped> {
    let mut generator = Generator::new(&LoadConfig { batch: config.batch.clamp(1, 10_000), ..config.clone() });
    let mut written = 0;
    while written < events {
        let batch = generator.batch(Instant::now(), false);
        let keep = (events - written).min(batch.events) as usize;
        for line in batch.body.lines().take(keep) {
            out.write_all(line.as_bytes())?;
            out.write_all(b"\n")?;
        }
        written += keep as u64;
    }
    out.flush()?;
    Ok(Dumped { events: written, malformed: generator.malformed_sent, duplicates: generator.duplicates_sent })
}

/// Builds the bodies the run will send first, before its clock starts: as
/// many as [`LoadConfig::prebuild_bytes`] holds, and in open loop no more
/// than the schedule sends. `live.prebuilt` counts them as they are built.
fn prebuild(generator: &mut Generator, config: &LoadConfig, live: &Live) -> Vec<Batch> {
    let scheduled_events = match config.rate {
        0 => u64::MAX,
        rate => (rate as f64 * config.duration.as_secs_f64()).ceil() as u64 + config.batch as u64,
    };
    let (mut batches, mut bytes, mut events) = (Vec::new(), 0, 0);
    while bytes < config.prebuild_bytes && events < scheduled_events {
        let batch = generator.unmarked_batch(Instant::now(), 0);
        bytes += batch.body.len();
        events += batch.events;
        live.prebuilt.fetch_add(batch.events, Ordering::Relaxed);
        batches.push(batch);
    }
    batches
}

/// Runs the load described by `config`; `live` is updated as it goes.
pub fn run(config: &LoadConfig, live: &Live) -> Result<LoadReport, LoadError> {
    if config.connections == 0 || config.batch == 0 {
        return Err(LoadError::Config("--connections and --batch must be at least 1".into()));
    }
    if !(0.0..0.5).contains(&config.malformed_share) || !(0.0..0.5).contains(&config.duplicate_share) {
        return Err(LoadError::Config("--malformed and --duplicates are shares below 0.5".into()));
    }
    let health = format!("{}/health", config.url.trim_end_matches('/'));
    agent().get(&health).call().map_err(|e| LoadError::Unreachable { url: health.clone(), reason: e.to_string() })?;
    let responders = match &config.responses {
        Some((campaign, share)) => {
            if !(0.0..0.5).contains(share) {
                return Err(LoadError::Config("--responses is a share below 0.5".into()));
            }
            let members = treatment_members(config, campaign)?;
            if members.is_empty() {
                return Err(LoadError::Config(format!(
                    "campaign {campaign:?} has no treatment members on the server to send responses for"
                )));
            }
            Some((campaign.clone(), members))
        }
        None => None,
    };
    let (batch_tx, batch_rx) = bounded::<Batch>(config.connections * 2);
    let (marker_tx, marker_rx) = unbounded();
    let done_sending = AtomicBool::new(false);
    let markers_done = AtomicBool::new(false);
    let timeline = Mutex::new(Vec::new());
    let peak_rss = AtomicU64::new(0);
    let mut generator = Generator::new(config);
    generator.responders = responders;
    let run_id = generator.run.clone();
    let prebuilt = prebuild(&mut generator, config, live);
    let prebuilt_events: u64 = prebuilt.iter().map(|b| b.events).sum();
    let cpu_before = config.server_pid.and_then(process_usage).map(|u| u.1);
    let (prepared_tx, prepared_rx) = bounded::<Batch>(PREPARED_BATCHES);
    let started = Instant::now();
    let measure_from = started + config.warmup;
    let (mut sent_malformed, mut sent_duplicates, mut sent_markers) = (0u64, 0u64, 0u64);
    let mut max_send_delay = Duration::ZERO;
    let (worker_results, (freshness, markers_lost), send_seconds, shops, analyst) = std::thread::scope(|scope| {
        let producer = scope.spawn(move || {
            for batch in prebuilt {
                if prepared_tx.send(batch).is_err() {
                    return generator.generation;
                }
            }
            while prepared_tx.send(generator.unmarked_batch(Instant::now(), 0)).is_ok() {}
            generator.generation
        });
        let workers: Vec<_> = (0..config.connections)
            .map(|_| {
                let (rx, markers) = (batch_rx.clone(), marker_tx.clone());
                scope.spawn(move || connection(config, &rx, &markers, live, measure_from))
            })
            .collect();
        drop(marker_tx);
        let poller = scope.spawn(|| poll_markers(config, &marker_rx, &markers_done));
        let done = &done_sending;
        let analyst = config.sql_every.map(|every| scope.spawn(move || analyst(config, every, done, measure_from)));
        let monitor = scope.spawn(|| {
            let (mut last, mut last_at) = (0u64, Instant::now());
            while !done_sending.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(250));
                if last_at.elapsed() < Duration::from_secs(1) {
                    continue;
                }
                let accepted = live.accepted.load(Ordering::Relaxed);
                let rss = config.server_pid.and_then(process_usage).map(|u| u.0);
                if let Some(r) = rss {
                    peak_rss.fetch_max(r, Ordering::Relaxed);
                }
                let rate = (accepted - last) as f64 / last_at.elapsed().as_secs_f64();
                let ms = |slowest: &AtomicU64| slowest.swap(0, Ordering::Relaxed) as f64 / 1e3;
                if let Ok(mut t) = timeline.lock() {
                    t.push(Tick {
                        second: started.elapsed().as_secs_f64(),
                        accepted_per_s: rate,
                        rss_bytes: rss,
                        max_http_latency_ms: ms(&live.max_latency_micros),
                        max_send_delay_ms: ms(&live.max_send_delay_micros),
                    });
                }
                (last, last_at) = (accepted, Instant::now());
            }
        });
        // Generator: open loop on a fixed schedule, or as fast as the queue takes batches.
        let interval = (config.rate > 0).then(|| Duration::from_secs_f64(config.batch as f64 / config.rate as f64));
        let (mut index, mut next_marker) = (0u32, measure_from);
        while started.elapsed() < config.duration {
            let scheduled = interval.map_or_else(Instant::now, |i| started + i * index);
            if let Some(wait) = scheduled.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let marker = scheduled >= next_marker;
            if marker {
                next_marker = scheduled + config.marker_every;
            }
            let Ok(mut batch) = prepared_rx.recv() else { break };
            batch.scheduled = scheduled;
            if marker {
                sent_markers += 1;
                batch.add_marker(&run_id, sent_markers);
            }
            if config.rate > 0 {
                let late = Instant::now().saturating_duration_since(scheduled);
                live.max_send_delay_micros.fetch_max(late.as_micros() as u64, Ordering::Relaxed);
                max_send_delay = max_send_delay.max(late);
            }
            (sent_malformed, sent_duplicates) = (sent_malformed + batch.malformed, sent_duplicates + batch.duplicates);
            live.sent.fetch_add(batch.events, Ordering::Relaxed);
            if batch_tx.send(batch).is_err() {
                break;
            }
            index += 1;
        }
        drop(batch_tx);
        drop(prepared_rx);
        let shops = producer.join().unwrap_or(0);
        let results: Vec<(WorkerTotals, Histogram<u64>)> = workers.into_iter().filter_map(|w| w.join().ok()).collect();
        let send_seconds = started.elapsed().as_secs_f64();
        done_sending.store(true, Ordering::Release);
        markers_done.store(true, Ordering::Release);
        let _ = monitor.join();
        let freshness = poller.join().unwrap_or_else(|_| (histogram(), 0));
        let analyst = analyst.map(|a| a.join().unwrap_or_else(|_| (histogram(), 0)));
        (results, freshness, send_seconds, shops, analyst)
    });
    let mut latency = histogram();
    let mut totals = WorkerTotals::default();
    for (t, h) in &worker_results {
        let _ = latency.add(h);
        totals.accepted += t.accepted;
        totals.duplicates += t.duplicates;
        totals.rejected += t.rejected;
        totals.overload_retries += t.overload_retries;
        totals.refunds_resent += t.refunds_resent;
        totals.failed += t.failed;
    }
    let usage_after = config.server_pid.and_then(process_usage);
    let server_max_sync_ms = server_metric(config, "patron_wal_max_sync_seconds").map(|s| s * 1e3);
    if let Some((rss, _)) = usage_after {
        peak_rss.fetch_max(rss, Ordering::Relaxed);
    }
    let peak = peak_rss.load(Ordering::Relaxed);
    let server_cpu_seconds = match (cpu_before, usage_after) {
        (Some(before), Some((_, after))) => Some(after - before),
        _ => None,
    };
    Ok(LoadReport {
        events_per_s: totals.accepted as f64 / send_seconds.max(1e-9),
        sent: live.sent.load(Ordering::Relaxed),
        accepted: totals.accepted,
        duplicates: totals.duplicates,
        rejected: totals.rejected,
        malformed_sent: sent_malformed,
        duplicates_sent: sent_duplicates,
        overload_retries: totals.overload_retries,
        refunds_resent: totals.refunds_resent,
        failed_requests: totals.failed,
        seconds: send_seconds,
        http_latency_ms: Percentiles::of(&latency),
        freshness_ms: Percentiles::of(&freshness),
        markers_lost,
        peak_rss_bytes: (peak > 0).then_some(peak),
        server_cpu_seconds,
        server_cpu_us_per_event: server_cpu_seconds
            .filter(|_| totals.accepted > 0)
            .map(|seconds| seconds * 1e6 / totals.accepted as f64),
        prebuilt_events,
        timeline: timeline.into_inner().unwrap_or_default(),
        shops,
        max_send_delay_ms: max_send_delay.as_secs_f64() * 1e3,
        server_max_sync_ms,
        sql_latency_ms: analyst.as_ref().map(|(h, _)| Percentiles::of(h)),
        sql_failures: analyst.as_ref().map_or(0, |a| a.1),
        server_max_scan_lock_ms: analyst.as_ref().and_then(|_| server_stat(config, "sql_max_shard_lock_ms")),
    })
}

/// Runs the analyst's query every `every` until `done`; returns the latency
/// histogram (queries started after `measure_from`) and the failures.
fn analyst(config: &LoadConfig, every: Duration, done: &AtomicBool, measure_from: Instant) -> (Histogram<u64>, u64) {
    let agent = agent();
    let url = format!("{}/v1/sql", config.url.trim_end_matches('/'));
    let (mut latency, mut failures) = (histogram(), 0);
    while !done.load(Ordering::Acquire) {
        let started = Instant::now();
        let answer = authorised(agent.post(&url), config.token.as_deref())
            .set("Accept", "application/json")
            .send_string(&config.sql)
            .map_err(|e| e.to_string())
            .and_then(|r| r.into_string().map_err(|e| e.to_string()));
        match answer {
            Ok(_) if started >= measure_from => {
                let _ = latency.record(started.elapsed().as_micros() as u64);
            }
            Ok(_) => {}
            Err(_) => failures += 1,
        }
        if let Some(wait) = (started + every).checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    (latency, failures)
}

/// One row of the server's `engine_stats`, if it answers.
fn server_stat(config: &LoadConfig, name: &str) -> Option<f64> {
    let url = format!("{}/v1/sql", config.url.trim_end_matches('/'));
    let sql = format!("SELECT value FROM engine_stats WHERE name = '{name}'");
    let rows: serde_json::Value =
        authorised(agent().post(&url), config.token.as_deref()).send_string(&sql).ok()?.into_json().ok()?;
    rows.get(0)?.get("value")?.as_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_refunds_refused_for_a_missing_order_are_sent_again() {
        let body = [
            r#"{"type":"refund","event_id":"r1","customer_id":"c1","order_id":"o1","timestamp":1,"amount":"5"}"#,
            r#"{"type":"refund","event_id":"r2","customer_id":"c2","order_id":"o2","timestamp":1,"amount":"5"}"#,
            r#"{"type":"purchase","event_id":"o3","customer_id":"c3","timestamp":1,"revenue":"5"}"#,
            r#"{"type":"refund","event_id":"r4","customer_id":"c4","order_id":"o4","timestamp":1,"amount":"500"}"#,
        ]
        .join("\n");
        let answer = serde_json::json!({"rejected": [
            {"index": 0, "error": "customer_id: c1 has no purchases, so there is nothing to refund"},
            {"index": 1, "error": "order_id: customer c2 has no order \"o2\" (a refund nets against its order, which must be sent first)"},
            {"index": 2, "error": "customer_id: missing"},
            {"index": 3, "error": "amount: 500.00 exceeds the 5.00 that remains of order \"o4\""},
        ]});
        let again = overtaken_refunds(&body, &answer);
        assert_eq!(again.len(), 2);
        assert!(again[0].contains(r#""event_id":"r1""#) && again[1].contains(r#""event_id":"r2""#));
    }

    #[test]
    fn batches_mix_in_the_configured_malformed_and_duplicate_shares() {
        let config = LoadConfig { batch: 2000, malformed_share: 0.05, duplicate_share: 0.05, ..LoadConfig::default() };
        let mut generator = Generator::new(&config);
        let batch = generator.batch(Instant::now(), true);
        assert_eq!(batch.events, 2000);
        assert_eq!(batch.body.lines().count(), 2000);
        assert_eq!(batch.markers.len(), 1);
        let now = now_ms();
        let times: Vec<i64> = batch.body.lines().filter_map(event_time).collect();
        assert!(times.iter().all(|&t| t <= now + 1), "nothing from the future");
        let (bad, dup) = (generator.malformed_sent, generator.duplicates_sent);
        assert!((50..=160).contains(&bad) && (40..=160).contains(&dup), "{bad} malformed, {dup} duplicates");
        assert!(batch.body.contains(r#""currency":"XYZ""#) && batch.body.contains(r#""quantity":0"#));
    }

    #[test]
    fn campaign_responses_are_mixed_in_at_their_share_for_treatment_members_only() {
        let config = LoadConfig {
            batch: 4000,
            malformed_share: 0.0,
            duplicate_share: 0.0,
            responses: Some(("winback".into(), 0.1)),
            ..LoadConfig::default()
        };
        let mut generator = Generator::new(&config);
        let members: Vec<String> = (0..50).map(|i| format!("member-{i}")).collect();
        generator.responders = Some(("winback".into(), members.clone()));
        let batch = generator.batch(Instant::now(), false);
        let responses: Vec<&str> = batch.body.lines().filter(|l| l.contains("campaign_response")).collect();
        assert!((300..=500).contains(&responses.len()), "{} responses in 4000 events", responses.len());
        for line in &responses {
            let customer = line.split("\"customer_id\":\"").nth(1).and_then(|r| r.split('"').next()).unwrap();
            assert!(members.iter().any(|m| m == customer), "{line}");
            assert!(line.contains("\"campaign_id\":\"winback\""), "{line}");
        }
        assert!(
            responses.iter().any(|l| l.contains("\"opened\"")) && responses.iter().any(|l| l.contains("\"delivered\""))
        );
    }

    #[test]
    fn dump_writes_exactly_the_events_asked_for() {
        let config = LoadConfig { batch: 300, malformed_share: 0.0, duplicate_share: 0.0, ..LoadConfig::default() };
        let mut out = Vec::new();
        let dumped = dump(&config, 1000, &mut out).unwrap();
        assert_eq!(dumped, Dumped { events: 1000, malformed: 0, duplicates: 0 });
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 1000);
        assert!(text.lines().all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()));
    }

    #[test]
    fn percentiles_read_the_histogram_in_milliseconds() {
        let mut h = Histogram::<u64>::new(3).unwrap();
        for micros in 1..=1000u64 {
            h.record(micros * 1000).unwrap();
        }
        let p = Percentiles::of(&h);
        assert!((p.p50 - 500.0).abs() < 1.0 && (p.p99 - 990.0).abs() < 1.0 && (p.max - 1000.0).abs() < 1.0, "{p:?}");
        assert_eq!(p.count, 1000);
        assert_eq!(p.cdf.len(), CDF_QUANTILES.len());
        assert!(p.cdf.windows(2).all(|w| w[0][0] < w[1][0] && w[0][1] <= w[1][1]), "{:?}", p.cdf);
        assert!((p.cdf[0][1] - 1.0).abs() < 0.01 && (p.cdf[CDF_QUANTILES.len() - 1][1] - p.max).abs() < 1e-9);
    }
}
