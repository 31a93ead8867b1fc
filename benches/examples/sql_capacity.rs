//! SQL at scale (DESIGN.md §6): with N customers (default 10,000,000) in a
//! real engine, in one run,
//! - `SELECT rfm_segment, count(*), avg(clv) FROM customers GROUP BY 1`
//!   in process through the same `SqlEngine` every front end uses;
//! - the same aggregate and a point lookup by `customer_id` over the
//!   PostgreSQL wire protocol from psycopg 3 (prepared, a bound parameter),
//!   with p50/p99 per statement measured by the client;
//! - the same aggregate in DuckDB over the same rows exported to Parquet;
//! - how long a query held a shard's read lock (ingestion into that shard
//!   waits meanwhile);
//! - the same aggregate in DataFusion over a `MemTable` of the same two
//!   columns: the floor of deriving columns from the live state;
//! - the bytes per customer of the state (columns and id index), of the
//!   writer-only histories, and of the deduplication index;
//! - a snapshot of everyone, and a restart (snapshot load + log tail).
//!
//! Targets: aggregate ≤ 200 ms and within 1.5× of DuckDB; point lookup p99
//! ≤ 2 ms; shard lock ≤ 5 ms; ≤ 150 bytes per customer; snapshot and
//! restart ≤ 5 s each. The state comes from the BG/NBD synthetic population
//! (`patron_workload::synthetic_customers`): every customer's purchases are
//! submitted as events through the durable log, then the models are fitted.
//!
//! Run (needs psycopg, duckdb and pyarrow: `.venv/bin/pip install duckdb` after
//! `tests/run` made `.venv`; the script runs with `.venv/bin/python` when it exists):
//! `cargo run -p patron-benches --features sql --example sql_capacity -- [customers] [out.json]`
//! (dev profile: dependencies and the SQL/state crates at opt-level 2).

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use patron_model::{Currency, EventSink, Timestamp};
use patron_sql::pg::PgHandlers;
use patron_sql::{LiveSource, SqlEngine, SqlLimits};
use patron_state::{Engine, EngineConfig};
use patron_workload::{Population, synthetic_customers};

use patron_alloc as _;

const AGGREGATE: &str = "SELECT rfm_segment, count(*), avg(clv) FROM customers GROUP BY 1";

struct View {
    engine: Arc<Engine>,
}

impl LiveSource for View {
    fn engine(&self) -> &Engine {
        &self.engine
    }

    fn base_currency(&self) -> Currency {
        Currency::from_code("EUR").expect("EUR is known")
    }
}

fn main() -> Result<()> {
    patron_alloc::configure();
    let args: Vec<String> = std::env::args().collect();
    let customers: usize = args.get(1).map_or(Ok(10_000_000), |a| a.parse()).context("customers must be a number")?;
    let out = args.get(2).cloned();
    let dir = tempfile::tempdir()?;
    let config = EngineConfig::new(dir.path());
    let (engine, _) = Engine::open(config.clone())?;
    let engine = Arc::new(engine);

    let started = Instant::now();
    let population = synthetic_customers(&Population::default(), customers, patron_benches::SEED);
    let now_day = 20_000;
    let mut events_total = 0usize;
    let mut batch = Vec::with_capacity(50_000);
    for (i, input) in population.iter().enumerate() {
        batch.extend(patron_benches::purchase_events(i, input, now_day));
        if batch.len() >= 50_000 {
            events_total += batch.len();
            engine.submit(std::mem::take(&mut batch)).map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        if i % 1_000_000 == 0 && i > 0 {
            eprintln!("  {i} customers, {events_total} events, {:.0} s", started.elapsed().as_secs_f64());
        }
    }
    events_total += batch.len();
    engine.submit(batch).map_err(|e| anyhow::anyhow!("{e}"))?;
    let load_seconds = started.elapsed().as_secs_f64();
    eprintln!("loaded {customers} customers ({events_total} events) in {load_seconds:.1} s; refitting");
    let fit_started = Instant::now();
    engine.refit()?;
    let refit_seconds = fit_started.elapsed().as_secs_f64();
    eprintln!("refit and rescore in {refit_seconds:.1} s; RSS {} MiB", patron_benches::rss_bytes() >> 20);

    let view: Arc<dyn LiveSource> = Arc::new(View { engine: engine.clone() });
    let limits = SqlLimits {
        max_rows: usize::MAX,
        max_result_bytes: usize::MAX,
        timeout: std::time::Duration::from_secs(600),
        ..SqlLimits::default()
    };
    let sql = Arc::new(SqlEngine::new(view, limits)?);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;

    // In-process aggregate: one warm-up, then 10 timed runs.
    let mut aggregate_ms = Vec::new();
    for run in 0..11 {
        let t = Instant::now();
        let result = runtime.block_on(sql.run(AGGREGATE, patron_sql::Access::Admin))?;
        if run > 0 {
            aggregate_ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
        assert!(result.rows() > 0);
    }
    aggregate_ms.sort_by(f64::total_cmp);
    let max_lock_ms = sql.counters().max_lock_micros.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1e3;
    eprintln!("aggregate in process: median {:.1} ms; longest shard lock {max_lock_ms:.1} ms", aggregate_ms[5]);

    // The floor: DataFusion over a MemTable holding exactly the two columns,
    // with the label column in each Arrow encoding a label could have.
    let columns = runtime.block_on(sql.run("SELECT rfm_segment, clv FROM customers", patron_sql::Access::Admin))?;
    let encodings = [
        ("utf8", datafusion::arrow::datatypes::DataType::Utf8),
        ("utf8view", datafusion::arrow::datatypes::DataType::Utf8View),
        (
            "dictionary_uint8",
            datafusion::arrow::datatypes::DataType::Dictionary(
                Box::new(datafusion::arrow::datatypes::DataType::UInt8),
                Box::new(datafusion::arrow::datatypes::DataType::Utf8),
            ),
        ),
    ];
    let mut memtable = serde_json::Map::new();
    for (name, label_type) in encodings {
        let schema = Arc::new(datafusion::arrow::datatypes::Schema::new(vec![
            datafusion::arrow::datatypes::Field::new("rfm_segment", label_type.clone(), true),
            datafusion::arrow::datatypes::Field::new("clv", datafusion::arrow::datatypes::DataType::Float64, true),
        ]));
        let batches = columns
            .batches
            .iter()
            .map(|b| {
                let label = datafusion::arrow::compute::cast(b.column(0), &label_type)?;
                Ok(datafusion::arrow::record_batch::RecordBatch::try_new(
                    schema.clone(),
                    vec![label, b.column(1).clone()],
                )?)
            })
            .collect::<Result<Vec<_>>>()?;
        let table = datafusion::datasource::MemTable::try_new(
            schema,
            batches.chunks(batches.len().div_ceil(2).max(1)).map(<[_]>::to_vec).collect(),
        )?;
        let floor = datafusion::prelude::SessionContext::new();
        floor.register_table("customers", Arc::new(table))?;
        let mut ms = Vec::new();
        for run in 0..11 {
            let t = Instant::now();
            let out = runtime.block_on(async { floor.sql(AGGREGATE).await?.collect().await })?;
            if run > 0 {
                ms.push(t.elapsed().as_secs_f64() * 1e3);
            }
            assert!(!out.is_empty());
        }
        ms.sort_by(f64::total_cmp);
        eprintln!("the same aggregate over a MemTable with {name} labels: median {:.1} ms", ms[5]);
        memtable.insert(name.to_owned(), serde_json::json!({"p50": ms[5], "min": ms[0], "max": ms[9]}));
    }
    drop(columns);
    let memtable_ms = memtable["utf8"]["p50"].as_f64().unwrap_or(f64::NAN);

    let (state_bytes, history_bytes) = engine.state_memory()?;
    let (remembered_events, dedup_bytes) = engine.dedup_usage();
    let per_customer = |bytes: usize| bytes as f64 / customers as f64;
    eprintln!(
        "memory per customer: state {:.1} B, histories {:.1} B, dedup {:.1} B ({:.1} B per remembered event)",
        per_customer(state_bytes),
        per_customer(history_bytes),
        per_customer(dedup_bytes),
        dedup_bytes as f64 / remembered_events.max(1) as f64
    );

    // Export the rows DuckDB will aggregate: the columns the query reads.
    let parquet_path = dir.path().join("customers.parquet");
    let export =
        runtime.block_on(sql.run("SELECT customer_id, rfm_segment, clv FROM customers", patron_sql::Access::Admin))?;
    {
        let file = std::fs::File::create(&parquet_path)?;
        let mut writer = parquet::arrow::ArrowWriter::try_new(file, export.schema.clone(), None)?;
        for batch in &export.batches {
            writer.write(batch)?;
        }
        writer.close()?;
    }
    drop(export);

    // pgwire on loopback, measured from psycopg together with DuckDB.
    let handlers = Arc::new(PgHandlers::new(sql.clone(), None)?);
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let pg_addr = listener.local_addr()?;
    let pg = runtime.spawn(patron_sql::pg::serve(listener, handlers, None, std::future::pending()));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/compare/sql_vs_duckdb.py");
    let venv = concat!(env!("CARGO_MANIFEST_DIR"), "/../.venv/bin/python");
    let python = if std::path::Path::new(venv).exists() { venv } else { "python3" };
    let output = std::process::Command::new(python)
        .args([script, &pg_addr.ip().to_string(), &pg_addr.port().to_string()])
        .arg(&parquet_path)
        .arg(customers.to_string())
        .output()
        .context("python3 runs")?;
    anyhow::ensure!(output.status.success(), "the client script failed: {}", String::from_utf8_lossy(&output.stderr));
    let clients: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    // Stop the pgwire task (it holds the engine) before the restart.
    pg.abort();
    let _ = runtime.block_on(pg);

    // Snapshot of everyone, then a restart from it.
    let started = Instant::now();
    let snapshot = engine.snapshot()?;
    let snapshot_seconds = started.elapsed().as_secs_f64();
    eprintln!("snapshot of {} customers ({} bytes) in {snapshot_seconds:.2} s", snapshot.customers, snapshot.bytes);
    // A restart from a copy of the data directory (this engine keeps its lock).
    let copy = tempfile::tempdir()?;
    let status = std::process::Command::new("cp").arg("-a").arg(dir.path().join(".")).arg(copy.path()).status()?;
    anyhow::ensure!(status.success(), "cannot copy the data directory");
    drop((sql, engine));
    let started = Instant::now();
    let (engine, _) = Engine::open(EngineConfig { data_dir: copy.path().to_owned(), ..config })?;
    let restart_seconds = started.elapsed().as_secs_f64();
    eprintln!("restart with {} customers in {restart_seconds:.2} s", engine.shard_sizes().iter().sum::<usize>());
    let duckdb_ms = clients["duckdb_aggregate_ms"]["p50"].as_f64().unwrap_or(f64::NAN);
    let machine = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|c| {
        c.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
    });
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    let report = serde_json::json!({
        "bench": "sql_capacity",
        "when": Timestamp::now().to_rfc3339(),
        "commit": commit,
        "command": args.join(" "),
        "profile": if cfg!(debug_assertions) {
            "dev (dependencies, patron-sql, patron-state and patron-score at opt-level 2)"
        } else {
            "release"
        },
        "machine": {"cpu": machine, "cores": std::thread::available_parallelism().map_or(0, |n| n.get())},
        "customers": customers,
        "events": events_total,
        "shards": engine.shard_count(),
        "load_seconds": load_seconds,
        "refit_seconds": refit_seconds,
        "rss_bytes_after_load": patron_benches::rss_bytes(),
        "aggregate_sql": AGGREGATE,
        "aggregate_in_process_ms": {"p50": aggregate_ms[5], "min": aggregate_ms[0], "max": aggregate_ms[9]},
        "max_shard_lock_ms": max_lock_ms,
        "aggregate_over_memtable_ms": memtable,
        "memtable_utf8_p50_ms": memtable_ms,
        "memory": {
            "state_bytes_per_customer": per_customer(state_bytes),
            "history_bytes_per_customer": per_customer(history_bytes),
            "dedup_bytes_per_customer": per_customer(dedup_bytes),
            "dedup_remembered_events": remembered_events,
            "dedup_bytes_per_remembered_event": dedup_bytes as f64 / remembered_events.max(1) as f64,
            "summary_bytes": std::mem::size_of::<patron_state::Summary>(),
        },
        "snapshot_seconds": snapshot_seconds,
        "snapshot_bytes": snapshot.bytes,
        "restart_seconds": restart_seconds,
        "pgwire": clients,
        "ratio_to_duckdb": aggregate_ms[5] / duckdb_ms,
        "targets": {
            "aggregate_ms": 200.0, "ratio_to_duckdb": 1.5, "point_lookup_p99_ms": 2.0, "max_shard_lock_ms": 5.0,
            "state_bytes_per_customer": 150.0, "snapshot_seconds": 5.0, "restart_seconds": 5.0,
        },
    });
    let text = serde_json::to_string_pretty(&report)?;
    println!("{text}");
    if let Some(out) = out {
        std::fs::write(&out, format!("{text}\n")).with_context(|| format!("cannot write {out}"))?;
    }
    Ok(())
}
