//! The in-process event path (DESIGN.md §6 target: ≥ 3,000,000 events/s on the
//! 2-core reference machine), on a fresh engine and data directory per sample:
//!
//! - `engine/decode_100k`: JSON → validated events only.
//! - `engine/decode_100k_general`: the same with the general decoder only
//!   (serde_json), without the one-pass reader of the common shape: the
//!   two side by side in one run.
//! - `engine/submit_100k`: validated events → durable log (group commit,
//!   fdatasync) → routed to shards → applied → each touched customer rescored.
//! - `engine/decode_and_submit_100k`: both, the whole in-process path.
//! - `engine/item_stats_100k_batched`: the recommendation statistics of the
//!   same events' purchases as the engine keeps them: each batch of 500
//!   purchases (a shard's part of a load generator request) recorded (the
//!   customer's profile) and then applied to the product statistics with one
//!   lock per segment, as the statistics thread does. `engine/item_stats_100k_each`: the same purchases applied one at a
//!   time (a lock per product per purchase), side by side.
//! - `engine/recover_100k`: opening a directory whose log holds the 100k
//!   events and no snapshot: the log replayed (one thread per shard), then
//!   every customer rescored and the recommendations refreshed, as at a
//!   restart. Each sample opens its own copy of the directory.
//!
//! Events come from the synthetic shop (`patron_workload::EventStream`): 20,000
//! customers, baskets of 1–4 items, refunds and consent events, submitted in
//! batches of 10,000.
//!
//! Run: `cargo bench -p patron-benches --bench engine` (or `benches/record.sh engine`).

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use patron_model::{CurrencyTable, Event, EventKind, EventSink, Validator};
use patron_state::items::basket_lines;
use patron_state::{Engine, EngineConfig, ItemStats, Observed, ProductCatalog, PurchaseProfile};
use patron_workload::{EventStream, ShopConfig};

use patron_alloc as _;

const EVENTS: usize = 100_000;
const BATCH: usize = 10_000;
/// Purchases per statistics batch: a shard's part of one `patron loadgen`
/// request (1,000 events over the default two shards).
const SHARD_BATCH: usize = 500;

fn validator() -> Validator {
    Validator { max_ahead_ms: i64::MAX / 4, ..Validator::new(CurrencyTable::default()) }
}

fn fresh_engine() -> (tempfile::TempDir, Engine) {
    let dir = tempfile::tempdir().expect("temp dir");
    let (engine, _) = Engine::open(EngineConfig::new(dir.path())).expect("engine opens");
    (dir, engine)
}

fn submit_all(engine: &Engine, events: Vec<Event>) {
    let mut events = events.into_iter().peekable();
    while events.peek().is_some() {
        let batch: Vec<Event> = events.by_ref().take(BATCH).collect();
        engine.submit(batch).expect("accepted");
    }
}

fn engine_path(c: &mut Criterion) {
    let lines: Vec<String> = EventStream::new(ShopConfig::default(), 7).take(EVENTS).collect();
    let validator = validator();
    let decoded: Vec<Event> = lines.iter().map(|l| validator.decode(l.as_bytes()).expect("valid")).collect();
    let mut group = c.benchmark_group("engine");
    group.sample_size(10);
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.bench_function("decode_100k", |b| {
        b.iter(|| lines.iter().map(|l| validator.decode(black_box(l.as_bytes()))).filter(Result::is_ok).count())
    });
    group.bench_function("decode_100k_general", |b| {
        b.iter(|| lines.iter().map(|l| validator.decode_general(black_box(l.as_bytes()))).filter(Result::is_ok).count())
    });
    group.bench_function("submit_100k", |b| {
        b.iter_batched(
            || (fresh_engine(), decoded.clone()),
            |((_dir, engine), events)| submit_all(&engine, events),
            BatchSize::PerIteration,
        )
    });
    group.bench_function("decode_and_submit_100k", |b| {
        b.iter_batched(
            fresh_engine,
            |(_dir, engine)| {
                let events: Vec<Event> = lines.iter().filter_map(|l| validator.decode(l.as_bytes()).ok()).collect();
                submit_all(&engine, events);
            },
            BatchSize::PerIteration,
        )
    });
    // Customers as indices, so that both statistics benches look profiles up alike.
    let mut customers = std::collections::HashMap::new();
    let purchases: Vec<(usize, &Event)> = decoded
        .iter()
        .filter(|e| matches!(&e.kind, EventKind::Purchase(p) if !p.items.is_empty()))
        .map(|e| {
            let next = customers.len();
            (*customers.entry(e.customer_id.as_str()).or_insert(next), e)
        })
        .collect();
    let fresh_stats =
        || (ProductCatalog::default(), ItemStats::default(), vec![PurchaseProfile::default(); customers.len()]);
    group.throughput(Throughput::Elements(purchases.len() as u64));
    group.bench_function("item_stats_100k_batched", |b| {
        b.iter_batched(
            fresh_stats,
            |(catalog, stats, mut profiles)| {
                let mut observed = Observed::default();
                for batch in purchases.chunks(SHARD_BATCH) {
                    for &(customer, event) in batch {
                        let EventKind::Purchase(p) = &event.kind else { continue };
                        let lines = basket_lines(p, &catalog);
                        stats.record(&mut observed, &mut profiles[customer], event.timestamp.day(), lines, 64);
                    }
                    stats.apply(&mut observed);
                }
                stats
            },
            BatchSize::PerIteration,
        )
    });
    group.bench_function("item_stats_100k_each", |b| {
        b.iter_batched(
            fresh_stats,
            |(catalog, stats, mut profiles)| {
                for &(customer, event) in &purchases {
                    let EventKind::Purchase(p) = &event.kind else { continue };
                    let lines: Vec<_> = basket_lines(p, &catalog).collect();
                    stats.observe(&mut profiles[customer], event.timestamp.day(), &lines, 64);
                }
                stats
            },
            BatchSize::PerIteration,
        )
    });
    group.throughput(Throughput::Elements(EVENTS as u64));
    let (logged, engine) = fresh_engine();
    submit_all(&engine, decoded.clone());
    drop(engine);
    group.bench_function("recover_100k", |b| {
        b.iter_batched(
            || copy_dir(logged.path()),
            |copy| {
                let opened = Engine::open(EngineConfig::new(copy.path())).expect("engine recovers");
                (copy, opened)
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

/// A copy of a data directory (its log; no snapshot was written), without the lock file.
fn copy_dir(from: &std::path::Path) -> tempfile::TempDir {
    fn copy(from: &std::path::Path, to: &std::path::Path) {
        std::fs::create_dir_all(to).expect("create directory");
        for entry in std::fs::read_dir(from).expect("list directory").flatten() {
            let (path, target) = (entry.path(), to.join(entry.file_name()));
            if path.is_dir() {
                copy(&path, &target);
            } else if entry.file_name() != "LOCK" {
                std::fs::copy(&path, &target).expect("copy file");
            }
        }
    }
    let dir = tempfile::tempdir().expect("temp dir");
    copy(from, dir.path());
    dir
}

criterion_group!(benches, engine_path);
criterion_main!(benches);
