//! The query side on 1,000,000 customers in a real engine (every customer's
//! purchases submitted through the durable log, models fitted):
//!
//! - `tables/customers_batch_1m`: the whole `customers` table as one Arrow
//!   batch from a scored book (`patron_state::customers_batch`, the batch
//!   scoring output path): the record → column transposition alone.
//! - `sql/scan_two_columns_1m`: `SELECT rfm_segment, clv FROM customers`
//!   through DataFusion: the live scan builds only the projected columns,
//!   one partition per shard under its read lock.
//! - `sql/aggregate_1m`: `SELECT rfm_segment, count(*), avg(clv) FROM
//!   customers GROUP BY 1`, the DESIGN.md §6 aggregate (target ≤ 200 ms at
//!   10M, so ≤ 20 ms at this size if it scaled linearly).
//! - `sql/point_lookup`: `SELECT * FROM customers WHERE customer_id = …`,
//!   answered by index lookup (filter pushdown); parse and plan included.
//!   Over pgwire the protocol adds its share (`benches/examples/sql_capacity.rs`).
//!
//! Run: `cargo bench -p patron-benches --features sql --bench sql`
//! (builds DataFusion in release the first time).

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use patron_model::{Currency, EventSink};
use patron_sql::{LiveSource, SqlEngine, SqlLimits};
use patron_state::{CustomerBook, Engine, EngineConfig, ScoringConfig, customers_batch, fit_models, score_book};
use patron_workload::{Population, synthetic_customers};

use patron_alloc as _;

const CUSTOMERS: usize = 1_000_000;
const NOW_DAY: i32 = 20_000;

struct View(Arc<Engine>);

impl LiveSource for View {
    fn engine(&self) -> &Engine {
        &self.0
    }

    fn base_currency(&self) -> Currency {
        Currency::from_code("EUR").expect("EUR is known")
    }
}

fn sql(c: &mut Criterion) {
    let population = synthetic_customers(&Population::default(), CUSTOMERS, patron_benches::SEED);
    let events: Vec<_> = population
        .iter()
        .enumerate()
        .flat_map(|(i, input)| patron_benches::purchase_events(i, input, NOW_DAY))
        .collect();

    // The batch path: one book, scored, turned into the customers table.
    let mut book = CustomerBook::new();
    events.iter().for_each(|e| {
        book.apply(e);
    });
    let currency = Currency::from_code("EUR").expect("EUR is known");
    let now = book.watermark().expect("events applied");
    let config = ScoringConfig::default();
    let fits = fit_models(&book, now, config.time_unit, currency);
    let scored = score_book(&book, &fits, &config, now, currency).expect("scored");
    let mut group = c.benchmark_group("tables");
    group.sample_size(10);
    group.bench_function("customers_batch_1m", |b| {
        b.iter(|| customers_batch(black_box(&book), &scored, currency, &ScoringConfig::default()))
    });
    group.finish();
    drop((book, scored));

    // The live path: a real engine with a durable log, queried through DataFusion.
    let dir = tempfile::tempdir().expect("temp dir");
    let (engine, _) = Engine::open(EngineConfig::new(dir.path())).expect("engine opens");
    for chunk in events.chunks(50_000) {
        engine.submit(chunk.to_vec()).expect("accepted");
    }
    engine.refit().expect("models fit");
    let engine = Arc::new(engine);
    let limits = SqlLimits {
        max_rows: usize::MAX,
        max_result_bytes: usize::MAX,
        timeout: std::time::Duration::from_secs(600),
        ..SqlLimits::default()
    };
    let sql = SqlEngine::new(Arc::new(View(engine.clone())), limits).expect("SQL engine");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let run = |query: &str| runtime.block_on(sql.run(query, patron_sql::Access::Admin)).expect("query runs").rows();
    let mut group = c.benchmark_group("sql");
    group.sample_size(10);
    group
        .bench_function("scan_two_columns_1m", |b| b.iter(|| run(black_box("SELECT rfm_segment, clv FROM customers"))));
    group.bench_function("aggregate_1m", |b| {
        b.iter(|| run(black_box("SELECT rfm_segment, count(*), avg(clv) FROM customers GROUP BY 1")))
    });
    group.sample_size(100);
    let mut next = 0usize;
    group.bench_function("point_lookup", |b| {
        b.iter(|| {
            next = (next + 7_919) % CUSTOMERS;
            run(&format!("SELECT * FROM customers WHERE customer_id = 'c{next}'"))
        })
    });
    group.finish();
}

criterion_group!(benches, sql);
criterion_main!(benches);
