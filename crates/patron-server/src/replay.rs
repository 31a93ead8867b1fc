//! `patron replay`: pushes a file to a running server through the same readers,
//! column mapping and validation as `patron score`, as NDJSON batches over
//! HTTP, optionally paced, with a progress bar. Overload answers (429/503) are
//! retried after their `Retry-After`; events are never dropped silently.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use patron_ingest::{ReadOptions, ingest_file};
use patron_model::{Currency, CurrencyTable, Event, EventSink, SinkError, SubmitOutcome, Validator};
use serde_json::Value;

use crate::cli::ReplayArgs;

/// Attempts per batch while the server answers 429/503.
const MAX_ATTEMPTS: u32 = 120;

/// An [`EventSink`] that posts batches to `POST /v1/events`.
struct HttpSink {
    agent: ureq::Agent,
    endpoint: String,
    base: Currency,
    rate: Option<f64>,
    started: Instant,
    sent: AtomicU64,
    rejected_by_server: AtomicU64,
    retries: AtomicU64,
    first_server_rejection: Mutex<Option<String>>,
    bar: ProgressBar,
    /// Events per request.
    batch: usize,
    /// Requests in flight at once.
    connections: usize,
    /// Seconds from sending each request to its answer.
    latencies: Mutex<Vec<f64>>,
}

impl EventSink for HttpSink {
    fn submit(&self, events: Vec<Event>) -> std::result::Result<SubmitOutcome, SinkError> {
        // Requests of `batch` events, `connections` of them in flight at once.
        let chunks: Vec<&[Event]> = events.chunks(self.batch.max(1)).collect();
        let mut total = SubmitOutcome::default();
        for wave in chunks.chunks(self.connections.max(1)) {
            let outcomes: Vec<_> = std::thread::scope(|scope| {
                let handles: Vec<_> = wave.iter().map(|chunk| scope.spawn(|| self.post(chunk))).collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap_or_else(|_| Err(SinkError::Unavailable("request thread panicked".into()))))
                    .collect()
            });
            for outcome in outcomes {
                let outcome = outcome?;
                total.accepted += outcome.accepted;
                total.duplicates += outcome.duplicates;
            }
        }
        Ok(total)
    }
}

impl HttpSink {
    fn post(&self, events: &[Event]) -> std::result::Result<SubmitOutcome, SinkError> {
        let count = events.len() as u64;
        if let Some(rate) = self.rate {
            // Pace: the batch may start once the previous events' share of time has passed.
            let due = Duration::from_secs_f64(self.sent.load(Ordering::Relaxed) as f64 / rate);
            if let Some(wait) = due.checked_sub(self.started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        let mut body = String::with_capacity(events.len() * 200);
        for e in events {
            body.push_str(&e.to_json(self.base).to_string());
            body.push('\n');
        }
        for _ in 0..MAX_ATTEMPTS {
            let sent_at = Instant::now();
            let response =
                self.agent.post(&self.endpoint).set("Content-Type", "application/x-ndjson").send_string(&body);
            if response.is_ok()
                && let Ok(mut l) = self.latencies.lock()
            {
                l.push(sent_at.elapsed().as_secs_f64());
            }
            match response {
                Ok(r) => {
                    let answer: Value =
                        r.into_json().map_err(|e| SinkError::Unavailable(format!("bad answer: {e}")))?;
                    if let Some(rejected) = answer["rejected"].as_array().filter(|r| !r.is_empty()) {
                        // `rejected` describes at most the first 100; `rejected_count` counts them all.
                        let count = answer["rejected_count"].as_u64().unwrap_or(rejected.len() as u64);
                        self.rejected_by_server.fetch_add(count, Ordering::Relaxed);
                        if let Ok(mut first) = self.first_server_rejection.lock() {
                            first.get_or_insert_with(|| rejected[0].to_string());
                        }
                    }
                    self.sent.fetch_add(count, Ordering::Relaxed);
                    self.bar.inc(count);
                    return Ok(SubmitOutcome {
                        accepted: answer["accepted"].as_u64().unwrap_or(0) as usize,
                        duplicates: answer["duplicates"].as_u64().unwrap_or(0) as usize,
                        // The server's refusals are counted in `rejected_by_server` above.
                        refused: Vec::new(),
                    });
                }
                Err(ureq::Error::Status(code @ (429 | 503), r)) => {
                    let wait = r.header("Retry-After").and_then(|v| v.parse::<u64>().ok()).unwrap_or(1);
                    self.retries.fetch_add(1, Ordering::Relaxed);
                    self.bar.set_message(format!("server answered {code}, retrying in {wait}s"));
                    std::thread::sleep(Duration::from_secs(wait));
                }
                Err(ureq::Error::Status(code, r)) => {
                    let text = r.into_string().unwrap_or_default();
                    return Err(SinkError::Unavailable(format!("the server answered {code}: {text}")));
                }
                Err(e) => return Err(SinkError::Unavailable(format!("cannot reach {}: {e}", self.endpoint))),
            }
        }
        Err(SinkError::Overloaded { retry_after_ms: 1000 })
    }
}

pub(crate) fn run(args: &ReplayArgs) -> Result<()> {
    let started = Instant::now();
    let base = Currency::from_code(&args.currency)
        .with_context(|| format!("--currency {:?} is not an ISO 4217 code Patron knows", args.currency))?;
    let url = args.url.trim_end_matches('/');
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(60)).build();
    agent.get(&format!("{url}/health")).call().with_context(|| format!("no Patron server answers at {url}"))?;
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{spinner} sent {pos} events ({per_sec}) {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let sink = HttpSink {
        agent,
        endpoint: format!("{url}/v1/events"),
        base,
        rate: (args.rate > 0).then_some(args.rate as f64),
        started: Instant::now(),
        sent: AtomicU64::new(0),
        rejected_by_server: AtomicU64::new(0),
        retries: AtomicU64::new(0),
        first_server_rejection: Mutex::new(None),
        bar: bar.clone(),
        batch: args.batch,
        connections: args.connections,
        latencies: Mutex::new(Vec::new()),
    };
    let validator = Validator::new(CurrencyTable::only(base));
    let options = ReadOptions {
        format: args.format.map(Into::into),
        mapping: args.mapping.to_mapping(base.code()),
        source: args.source,
    };
    let report = ingest_file(&args.input, &options, &validator, &sink, &|read, total| {
        bar.set_message(format!("(read {} of {} bytes)", read, total));
    })
    .with_context(|| format!("cannot replay {}", args.input.display()))?;
    bar.finish_and_clear();
    if let Some(columns) = &report.columns {
        println!("Columns: {columns}; time format {}", report.time_format.as_deref().unwrap_or("unknown"));
    }
    if let Some(note) = report.refund_note() {
        println!("{note}");
    }
    for r in report.rejections.examples(patron_ingest::EXAMPLES_PER_FIELD) {
        eprintln!("  rejected line {}: {}", r.position, r.error);
    }
    let server_rejected = sink.rejected_by_server.load(Ordering::Relaxed);
    if let Some(first) = sink.first_server_rejection.lock().ok().and_then(|f| f.clone()) {
        eprintln!("  the server rejected {server_rejected} events, e.g. {first}");
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "Replayed {} records to {url} in {seconds:.1}s: {} events accepted, {} duplicates, {} rejected here, {} rejected by the server, {} overload retries ({:.0} events/s).",
        report.records,
        report.outcome.accepted,
        report.outcome.duplicates,
        report.rejections.total(),
        server_rejected,
        sink.retries.load(Ordering::Relaxed),
        report.events as f64 / seconds
    );
    if let Ok(mut l) = sink.latencies.lock()
        && !l.is_empty()
    {
        l.sort_by(f64::total_cmp);
        let at = |q: f64| l[((l.len() as f64 * q).ceil() as usize).clamp(1, l.len()) - 1] * 1000.0;
        println!(
            "Request latency (send to durable, applied, rescored answer) over {} requests of up to {} events, {} in flight: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms.",
            l.len(),
            args.batch,
            args.connections,
            at(0.5),
            at(0.9),
            at(0.99),
            at(1.0)
        );
    }
    if report.events == 0 {
        bail!("nothing could be read from {}", args.input.display());
    }
    Ok(())
}
