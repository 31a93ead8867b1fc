//! The fleet export: at every snapshot, a partition's `customers` and
//! `products` tables as Parquet under `<export-dir>/p<NNN>/`, for fleet-wide
//! SQL on engines that read Parquet (`patron query --fleet`, DuckDB, Trino).
//!
//! Each file is written under a temporary name, synced and renamed, so a
//! reader sees a whole file, old or new. `manifest.json` is renamed into
//! place last and names the set: the stream sequence and watermark it covers
//! and the node that wrote it. A node that lost the partition cannot replace
//! a newer set: a manifest with a higher sequence is never overwritten.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use arrow::record_batch::RecordBatch;
use patron_cluster::node::{SnapshotHook, partition_key};
use patron_sql::{SqlEngine, SqlLimits};
use patron_state::Engine;
use serde::{Deserialize, Serialize};

use crate::http::sql::LiveView;

/// Tables exported per partition.
pub(crate) const EXPORTED_TABLES: [&str; 2] = ["customers", "products"];

/// `manifest.json` of one partition's export.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub(crate) struct Manifest {
    pub(crate) partition: u32,
    /// Stream sequence of the last message the set includes.
    pub(crate) sequence: u64,
    /// Latest event time applied (RFC 3339), if any.
    pub(crate) watermark: Option<String>,
    pub(crate) node: String,
    /// File name (in the partition's directory) per table.
    pub(crate) files: std::collections::BTreeMap<String, String>,
    pub(crate) rows: std::collections::BTreeMap<String, usize>,
}

/// The snapshot hook that exports to `dir`.
pub(crate) fn hook(dir: PathBuf, node_id: String, base: patron_model::Currency) -> SnapshotHook {
    Arc::new(move |partition: u32, engine: &Arc<Engine>, sequence: u64| {
        if let Err(e) = export(&dir, &node_id, base, partition, engine, sequence) {
            tracing::warn!(partition, "export to {} failed: {e:#}", dir.display());
        }
    })
}

fn export(
    dir: &Path,
    node_id: &str,
    base: patron_model::Currency,
    partition: u32,
    engine: &Arc<Engine>,
    sequence: u64,
) -> Result<()> {
    let target = dir.join(partition_key(partition));
    std::fs::create_dir_all(&target).with_context(|| format!("cannot create {}", target.display()))?;
    if read_manifest(&target).is_some_and(|m| m.sequence > sequence) {
        return Ok(()); // A newer owner exported already.
    }
    let mut files = std::collections::BTreeMap::new();
    let mut rows = std::collections::BTreeMap::new();
    for (table, batch) in partition_tables(engine, base)? {
        let name = format!("{table}.parquet");
        crate::output::write_parquet(&target.join(&name), &batch)?;
        rows.insert(table.to_owned(), RecordBatch::num_rows(&batch));
        files.insert(table.to_owned(), name);
    }
    let manifest = Manifest {
        partition,
        sequence,
        watermark: engine.watermark().map(|w| w.to_rfc3339()),
        node: node_id.to_owned(),
        files,
        rows,
    };
    crate::output::write_json(&target.join("manifest.json"), &serde_json::to_value(&manifest)?)
}

/// A partition's exported tables, read from its engine now (blocking: call
/// from a blocking task of the runtime).
pub(crate) fn partition_tables(
    engine: &Arc<Engine>,
    base: patron_model::Currency,
) -> Result<Vec<(&'static str, RecordBatch)>> {
    let limits = SqlLimits { max_rows: usize::MAX, max_result_bytes: usize::MAX, ..SqlLimits::default() };
    let sql = SqlEngine::new(Arc::new(LiveView::new(engine.clone(), base)), limits)?;
    let handle = tokio::runtime::Handle::current();
    let mut tables = Vec::with_capacity(EXPORTED_TABLES.len());
    for table in EXPORTED_TABLES {
        let result = handle.block_on(sql.run(&format!("SELECT * FROM {table}"), patron_sql::Access::Query))?;
        tables.push((table, arrow::compute::concat_batches(&result.schema, &result.batches)?));
    }
    Ok(tables)
}

/// The manifest in a partition's export directory, if it is readable.
pub(crate) fn read_manifest(partition_dir: &Path) -> Option<Manifest> {
    let text = std::fs::read(partition_dir.join("manifest.json")).ok()?;
    serde_json::from_slice(&text).ok()
}
