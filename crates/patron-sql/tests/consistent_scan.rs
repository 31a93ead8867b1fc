//! A full scan of `customers` holds no lock while it derives its columns,
//! yet every row it returns is from one cut of the event stream: writers that
//! touch a chunk the scan still holds copy that chunk instead of changing it.
//! (A shard writer releases its lock every 256 events, so the cut can fall
//! inside a request: it is a prefix of the shard's events, not of its requests.)

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arrow::array::{Array, AsArray, Int64Array};
use patron_model::{Currency, CurrencyTable, EventSink, Validator};
use patron_sql::{Access, LiveSource, SqlEngine, SqlLimits};
use patron_state::{CHUNK, Engine, EngineConfig};

struct View(Arc<Engine>);

impl LiveSource for View {
    fn engine(&self) -> &Engine {
        &self.0
    }

    fn base_currency(&self) -> Currency {
        Currency::from_code("EUR").expect("EUR is known")
    }
}

#[test]
fn a_scan_sees_one_cut_while_writers_change_the_chunks_it_reads() {
    let dir = tempfile::tempdir().unwrap();
    // One shard, and every round buys once for customers c0, c1, … in order:
    // a consistent view sees customers c0..ck with one order more than the rest.
    let config = EngineConfig { shards: 1, ..EngineConfig::new(dir.path()) };
    let engine = Arc::new(Engine::open(config).unwrap().0);
    let customers = 3 * CHUNK;
    let validator = Validator::new(CurrencyTable::default());
    let round = |r: usize| -> Vec<patron_model::Event> {
        (0..customers)
            .map(|c| {
                let json = format!(
                    r#"{{"type":"purchase","event_id":"r{r}-c{c}","customer_id":"c{c}","timestamp":"2025-01-01T00:00:{:02}Z","revenue":"1"}}"#,
                    r % 60
                );
                validator.decode(json.as_bytes()).unwrap()
            })
            .collect()
    };
    engine.submit(round(0)).unwrap();
    let sql = SqlEngine::new(Arc::new(View(engine.clone())), SqlLimits::default()).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (engine, done) = (engine.clone(), done.clone());
        let batches: Vec<_> = (1..=12).map(round).collect();
        std::thread::spawn(move || {
            for batch in batches {
                engine.submit(batch).unwrap();
            }
            done.store(true, Ordering::Release);
        })
    };
    let mut seen = std::collections::BTreeSet::new();
    loop {
        let finished = done.load(Ordering::Acquire);
        let result = runtime.block_on(sql.run("SELECT customer_id, orders FROM customers", Access::Admin)).unwrap();
        let mut orders = vec![-1i64; customers];
        for batch in &result.batches {
            let ids = batch.column(0).as_string::<i32>();
            let counts = batch.column(1).as_any().downcast_ref::<Int64Array>().unwrap();
            for row in 0..batch.num_rows() {
                let index: usize = ids.value(row).trim_start_matches('c').parse().unwrap();
                orders[index] = counts.value(row);
            }
        }
        let (min, max) = (orders.iter().min().copied().unwrap(), orders.iter().max().copied().unwrap());
        assert!(min >= 1 && max - min <= 1, "one cut: orders differ by at most one ({min}..{max})");
        let ahead = orders.iter().take_while(|&&o| o == max).count();
        assert!(
            orders[ahead..].iter().all(|&o| o == min),
            "one cut: the customers one order ahead are a prefix of the round (c0..c{ahead})"
        );
        seen.insert(min);
        if finished {
            break;
        }
    }
    writer.join().unwrap();
    assert!(seen.contains(&13), "the last scan sees every batch: {seen:?}");
    assert!(seen.len() > 1, "scans ran while the writer changed the chunks: {seen:?}");
}
