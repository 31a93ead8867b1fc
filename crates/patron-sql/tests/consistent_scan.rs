//! A full scan of `customers` holds no lock while it derives its columns,
//! yet every row it returns is from one cut of the event stream: writers that
//! touch a chunk the scan still holds copy that chunk instead of changing it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arrow::array::{Array, Int64Array};
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
    // One shard: each batch is applied atomically, so a consistent view sees
    // every customer with the same number of orders.
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
        let result = runtime
            .block_on(sql.run("SELECT min(orders), max(orders), count(*) FROM customers", Access::Admin))
            .unwrap();
        let batch = &result.batches[0];
        let column = |i: usize| batch.column(i).as_any().downcast_ref::<Int64Array>().unwrap().value(0);
        let (min, max, count) = (column(0), column(1), column(2));
        assert_eq!(count, customers as i64);
        assert_eq!(min, max, "one cut: every customer has the same number of orders");
        seen.insert(min);
        if finished {
            break;
        }
    }
    writer.join().unwrap();
    assert!(seen.contains(&13), "the last scan sees every batch: {seen:?}");
    assert!(seen.len() > 1, "scans ran while the writer changed the chunks: {seen:?}");
}
