//! Scaling study of the in-process engine (issue 6): how ingest throughput,
//! batch latency, memory, refit and recovery grow with the number of
//! customers and of shards, on a real data directory (durable log, group
//! commit, fdatasync).
//!
//! For each `customers × shards` point, on a fresh engine:
//! 1. the synthetic shop (`patron_workload::EventStream`, 10,000 products)
//!    generates about 3 events per customer, in chunks of 500,000 (not timed);
//! 2. each chunk is decoded and validated in parallel (timed: `decode_per_s`)
//!    and submitted in batches of 2,000 with 8 batches in flight, as the HTTP
//!    server does (timed: `submit_per_s`; per-batch latency from submit to
//!    durable + applied answer);
//! 3. the models are refitted and every customer rescored (`refit_s`); a
//!    snapshot is written (`snapshot_s`);
//! 4. the engine is shut down and the data directory reopened in a fresh
//!    process (`recovery_s`: snapshot load + log replay + recommendation
//!    refresh); that process's RSS growth is the memory of the recovered
//!    state (`recovered_bytes_per_customer`, product statistics included).
//!
//! `combined_per_s` is what one process doing both decode and submit on the
//! same cores sustains: 1 / (1/decode + 1/submit).
//!
//! Run: `cargo run --release -p patron-benches --example scaling -- OUT.json [customers,…] [shards,…]`
//! (defaults `10000,100000,1000000,10000000` at 2 shards, then `1,4` shards
//! at 1,000,000 customers). `benches/scaling.sh` runs it and files the result.

use std::error::Error;
use std::sync::mpsc;
use std::time::Instant;

use patron_model::{CurrencyTable, Event, Validator};
use patron_state::{CustomerRecord, Engine, EngineConfig};
use patron_workload::{EventStream, ShopConfig};
use rayon::prelude::*;

use patron_alloc as _;

const EVENTS_PER_CUSTOMER: usize = 3;
const CHUNK_EVENTS: usize = 500_000;
const BATCH: usize = 2_000;
const IN_FLIGHT: usize = 8;

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// Submits `events` in batches with up to [`IN_FLIGHT`] outstanding; returns
/// each batch's latency in ms.
fn submit(engine: &Engine, events: Vec<Event>) -> Result<Vec<f64>, Box<dyn Error>> {
    let (done, answers) = mpsc::channel::<Result<f64, String>>();
    let mut latencies = Vec::new();
    let mut in_flight = 0;
    let mut events = events.into_iter().peekable();
    while events.peek().is_some() {
        if in_flight == IN_FLIGHT {
            latencies.push(answers.recv()??);
            in_flight -= 1;
        }
        let batch: Vec<Event> = events.by_ref().take(BATCH).collect();
        let done = done.clone();
        let started = Instant::now();
        engine.submit_with(batch, move |outcome| {
            let answer = outcome.map(|_| started.elapsed().as_secs_f64() * 1e3).map_err(|e| e.to_string());
            let _ = done.send(answer);
        });
        in_flight += 1;
    }
    for _ in 0..in_flight {
        latencies.push(answers.recv()??);
    }
    Ok(latencies)
}

fn run_point(customers: usize, shards: usize) -> Result<String, Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    let config = || EngineConfig { shards, ..EngineConfig::new(dir.path()) };
    let validator = Validator { max_ahead_ms: i64::MAX / 4, ..Validator::new(CurrencyTable::default()) };
    let shop = ShopConfig { customers, products: 10_000, id_prefix: format!("s{customers}"), ..ShopConfig::default() };
    let mut stream = EventStream::new(shop, 20_261_123);
    let (engine, _) = Engine::open(config())?;
    let target = customers * EVENTS_PER_CUSTOMER;
    let (mut events, mut decode_s, mut submit_s) = (0usize, 0.0f64, 0.0f64);
    let mut latencies = Vec::new();
    while events < target {
        let lines: Vec<String> = stream.by_ref().take(CHUNK_EVENTS.min(target - events)).collect();
        if lines.is_empty() {
            break;
        }
        events += lines.len();
        let started = Instant::now();
        let decoded: Vec<Event> = lines.par_iter().filter_map(|l| validator.decode(l.as_bytes()).ok()).collect();
        decode_s += started.elapsed().as_secs_f64();
        drop(lines);
        let started = Instant::now();
        latencies.extend(submit(&engine, decoded)?);
        submit_s += started.elapsed().as_secs_f64();
        eprint!("\r  {customers} customers × {shards} shards: {events}/{target} events");
    }
    eprintln!();
    let loaded_customers: usize = engine.shard_sizes().iter().sum();
    let accepted = engine.stats().accepted.load(std::sync::atomic::Ordering::Relaxed);
    let rss_loaded = patron_benches::rss_bytes();
    let started = Instant::now();
    engine.refit()?;
    let refit_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let snapshot = engine.snapshot()?;
    let snapshot_s = started.elapsed().as_secs_f64();
    let product_stats_bytes = engine.item_stats().memory_bytes();
    engine.shutdown();
    drop(stream);

    // Recovery in a fresh process, so its RSS is the recovered state alone
    // (this process's allocator keeps the memory the first engine freed).
    let recovery = std::process::Command::new(std::env::current_exe()?)
        .args(["--recover", &dir.path().display().to_string(), &shards.to_string()])
        .output()?;
    if !recovery.status.success() {
        return Err(format!("recovery failed: {}", String::from_utf8_lossy(&recovery.stderr)).into());
    }
    let recovered = String::from_utf8(recovery.stdout)?;
    let field = |i: usize| -> Result<f64, Box<dyn Error>> {
        Ok(recovered.split_whitespace().nth(i).ok_or("short recovery answer")?.parse::<f64>()?)
    };
    let (recovery_s, recovered_customers, state_bytes) = (field(0)?, field(1)? as usize, field(2)? as u64);

    latencies.sort_by(f64::total_cmp);
    let decode_per_s = events as f64 / decode_s;
    let submit_per_s = events as f64 / submit_s;
    Ok(format!(
        "{{\"customers\": {loaded_customers}, \"shop_customers\": {customers}, \"shards\": {shards}, \
         \"events\": {events}, \"accepted\": {accepted}, \
         \"decode_per_s\": {decode_per_s:.0}, \"submit_per_s\": {submit_per_s:.0}, \
         \"combined_per_s\": {combined:.0}, \
         \"batch_latency_ms\": {{\"p50\": {p50:.3}, \"p99\": {p99:.3}, \"max\": {max:.3}, \"count\": {count}}}, \
         \"refit_s\": {refit_s:.3}, \"snapshot_s\": {snapshot_s:.3}, \"snapshot_bytes\": {snapshot_bytes}, \
         \"recovery_s\": {recovery_s:.3}, \"recovered_customers\": {recovered_customers}, \
         \"rss_after_load_bytes\": {rss_loaded}, \"recovered_state_bytes\": {state_bytes}, \
         \"recovered_bytes_per_customer\": {per_customer:.1}, \"product_stats_bytes\": {product_stats_bytes}, \
         \"record_inline_bytes\": {record_inline}}}",
        combined = 1.0 / (1.0 / decode_per_s + 1.0 / submit_per_s),
        p50 = percentile(&latencies, 0.5),
        p99 = percentile(&latencies, 0.99),
        max = latencies.last().copied().unwrap_or(0.0),
        count = latencies.len(),
        snapshot_bytes = snapshot.bytes,
        per_customer = state_bytes as f64 / recovered_customers.max(1) as f64,
        record_inline = size_of::<CustomerRecord>(),
    ))
}

fn list(arg: Option<String>, default: &[usize]) -> Result<Vec<usize>, Box<dyn Error>> {
    match arg {
        Some(s) => {
            Ok(s.split(',').filter(|v| !v.trim().is_empty()).map(|v| v.trim().parse()).collect::<Result<_, _>>()?)
        }
        None => Ok(default.to_vec()),
    }
}

/// `--recover DIR SHARDS`: opens the engine on DIR and prints the seconds it
/// took, the customers recovered and the RSS growth in bytes.
fn recover(dir: &str, shards: &str) -> Result<(), Box<dyn Error>> {
    let before = patron_benches::rss_bytes();
    let started = Instant::now();
    let (engine, _) = Engine::open(EngineConfig { shards: shards.parse()?, ..EngineConfig::new(dir) })?;
    let seconds = started.elapsed().as_secs_f64();
    let customers: usize = engine.shard_sizes().iter().sum();
    println!("{seconds} {customers} {}", patron_benches::rss_bytes().saturating_sub(before));
    engine.shutdown();
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    patron_alloc::configure();
    let mut args = std::env::args().skip(1);
    let out = args.next().ok_or("usage: scaling OUT.json [customers,…] [shards,…]")?;
    if out == "--recover" {
        let (dir, shards) = (args.next().ok_or("--recover DIR SHARDS")?, args.next().ok_or("--recover DIR SHARDS")?);
        return recover(&dir, &shards);
    }
    let sizes = list(args.next(), &[10_000, 100_000, 1_000_000, 10_000_000])?;
    let shard_counts = list(args.next(), &[1, 4])?;
    let mut points = Vec::new();
    for &customers in &sizes {
        points.push(("customers", run_point(customers, 2)?));
        eprintln!("{}", points.last().map_or("", |p| p.1.as_str()));
    }
    let shard_size = 1_000_000.min(sizes.iter().copied().max().unwrap_or(1_000_000));
    for &shards in &shard_counts {
        points.push(("shards", run_point(shard_size, shards)?));
        eprintln!("{}", points.last().map_or("", |p| p.1.as_str()));
    }
    let body: Vec<String> =
        points.iter().map(|(axis, p)| format!("  {{\"axis\": \"{axis}\", \"point\": {p}}}")).collect();
    let json = format!("[\n{}\n]\n", body.join(",\n"));
    std::fs::write(&out, json)?;
    eprintln!("wrote {out}");
    Ok(())
}
