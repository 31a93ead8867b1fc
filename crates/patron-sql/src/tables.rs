//! The SQL tables of DESIGN.md §4 as DataFusion table providers over the live
//! engine. Nothing is copied ahead of a query: each scan builds Arrow batches
//! from the sharded state when it executes, one partition per shard (so
//! DataFusion builds shards in parallel), each shard read under its own read
//! lock so a shard's rows are one consistent cut while ingestion continues on
//! the other shards.
//!
//! Only the projected columns are built. `customer_id = '…'` and
//! `customer_id IN (…)` (and `product_id` on the product tables) are answered
//! `Exact` to DataFusion and looked up in the shard index, so a point query
//! reads one record, never the table; [`ScanCounters::rows_read`] proves it.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use arrow::array::{ArrayRef, Float64Array, Int64Array, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::expr::InList;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::ExecutionPlan;
use patron_model::{
    Currency, CustomerId, Timestamp, customers_schema, products_schema, recommendations_schema, similar_products_schema,
};
use patron_score::PredictionQuality;
use patron_state::customer_row::{RowClock, customer_batch, schema_groups};
use patron_state::{
    Chunk, ChunkView, CustomerBook, Engine, products_batch, recommend_all, recommendations_batch,
    similar_products_batch,
};

use crate::exec::{LazyScanExec, PartitionFn, StreamFn};

/// One rejected event, as kept by the ingest front end.
#[derive(Clone, Debug)]
pub struct RejectedRow {
    /// When it arrived.
    pub received_at: Timestamp,
    /// Where it came from (`http`, a file name…).
    pub source: String,
    /// Index within its request or line in its file.
    pub position: u64,
    /// Why it was rejected.
    pub error: String,
    /// The raw record (truncated).
    pub raw: String,
}

/// What the SQL tables read: the engine plus what the front end keeps beside it.
pub trait LiveSource: Send + Sync + 'static {
    /// The engine whose state the tables show.
    fn engine(&self) -> &Engine;
    /// Base currency (money columns are in it).
    fn base_currency(&self) -> Currency;
    /// The newest rejected events, oldest first.
    fn rejected(&self) -> Vec<RejectedRow> {
        Vec::new()
    }
    /// Extra `engine_stats` rows from the front end (e.g. `events_rejected`).
    fn extra_stats(&self) -> Vec<(String, f64)> {
        Vec::new()
    }
}

/// Work done by scans, for `engine_stats`, `/metrics` and the pushdown test.
#[derive(Debug, Default)]
pub struct ScanCounters {
    /// Table scans executed (partitions).
    pub scans: AtomicU64,
    /// Customer or product records read by scans.
    pub rows_read: AtomicU64,
    /// Longest time one scan held a shard's read lock, microseconds.
    pub max_lock_micros: AtomicU64,
    /// Total time scans held shard read locks, microseconds.
    pub total_lock_micros: AtomicU64,
}

impl ScanCounters {
    fn record(&self, rows: usize, held: std::time::Duration) {
        let micros = u64::try_from(held.as_micros()).unwrap_or(u64::MAX);
        self.scans.fetch_add(1, Ordering::Relaxed);
        self.rows_read.fetch_add(rows as u64, Ordering::Relaxed);
        self.total_lock_micros.fetch_add(micros, Ordering::Relaxed);
        self.max_lock_micros.fetch_max(micros, Ordering::Relaxed);
    }
}

/// Shared by every table of one SQL catalog.
#[derive(Clone)]
pub(crate) struct Shared {
    pub(crate) source: Arc<dyn LiveSource>,
    pub(crate) counters: Arc<ScanCounters>,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

pub(crate) fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, None)
}

fn project(schema: &SchemaRef, projection: Option<&Vec<usize>>) -> Result<SchemaRef> {
    match projection {
        None => Ok(schema.clone()),
        Some(p) => Ok(Arc::new(schema.project(p)?)),
    }
}

fn string_literal(value: &ScalarValue) -> Option<String> {
    match value {
        ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) | ScalarValue::Utf8View(Some(s)) => {
            Some(s.clone())
        }
        _ => None,
    }
}

/// The keys an `=` or `IN` filter on `column` allows, if `expr` is one.
fn key_values(expr: &Expr, column: &str) -> Option<Vec<String>> {
    match expr {
        Expr::BinaryExpr(BinaryExpr { left, op: Operator::Eq, right }) => match (left.as_ref(), right.as_ref()) {
            (Expr::Column(c), Expr::Literal(v, _)) | (Expr::Literal(v, _), Expr::Column(c)) if c.name == column => {
                string_literal(v).map(|s| vec![s])
            }
            _ => None,
        },
        // The optimiser rewrites a short `IN` list into a chain of `OR`s.
        Expr::BinaryExpr(BinaryExpr { left, op: Operator::Or, right }) => {
            let mut keys = key_values(left, column)?;
            keys.extend(key_values(right, column)?);
            Some(keys)
        }
        Expr::InList(InList { expr, list, negated: false }) => match expr.as_ref() {
            Expr::Column(c) if c.name == column => list
                .iter()
                .map(|e| match e {
                    Expr::Literal(v, _) => string_literal(v),
                    _ => None,
                })
                .collect(),
            _ => None,
        },
        _ => None,
    }
}

/// The index key of each large table (the column whose `=`/`IN` filter is a lookup).
const KEYED_TABLES: &[(&str, &str)] = &[
    ("customers", "customer_id"),
    ("recommendations", "customer_id"),
    ("products", "product_id"),
    ("similar_products", "product_id"),
];

/// Whether a plan only looks rows up by key: every scan of a large table sits
/// under a filter on its key (`customer_id = …`, `IN (…)`), and the other
/// scans are of small tables (parameters, statistics, catalogs). Such queries
/// may use the SQL slot reserved for lookups, so long scans cannot starve them.
pub(crate) fn is_key_lookup(plan: &datafusion::logical_expr::LogicalPlan) -> bool {
    use datafusion::common::tree_node::TreeNodeRecursion;
    use datafusion::logical_expr::LogicalPlan;
    use datafusion::logical_expr::utils::split_conjunction;
    let (mut large_scans, mut keyed) = (Vec::new(), Vec::new());
    let visited = plan.apply_with_subqueries(|node| {
        match node {
            LogicalPlan::TableScan(scan) => {
                if let Some((table, key)) = KEYED_TABLES.iter().find(|(t, _)| *t == scan.table_name.table()) {
                    large_scans.push((*table, *key));
                }
            }
            LogicalPlan::Filter(filter) => {
                for conjunct in split_conjunction(&filter.predicate) {
                    keyed.extend(
                        KEYED_TABLES.iter().filter(|(_, key)| key_values(conjunct, key).is_some()).map(|(_, k)| *k),
                    );
                }
            }
            _ => {}
        }
        Ok(TreeNodeRecursion::Continue)
    });
    visited.is_ok() && large_scans.iter().all(|(_, key)| keyed.contains(key))
}

fn pushdown_for(filters: &[&Expr], column: &str) -> Vec<TableProviderFilterPushDown> {
    filters
        .iter()
        .map(|f| {
            if key_values(f, column).is_some() {
                TableProviderFilterPushDown::Exact
            } else {
                TableProviderFilterPushDown::Unsupported
            }
        })
        .collect()
}

/// The keys every pushed filter allows (their intersection), or `None` for a full scan.
fn key_set(filters: &[Expr], column: &str) -> Option<BTreeSet<String>> {
    let mut keys: Option<BTreeSet<String>> = None;
    for filter in filters {
        if let Some(values) = key_values(filter, column) {
            let values: BTreeSet<String> = values.into_iter().collect();
            keys = Some(match keys {
                None => values,
                Some(k) => k.intersection(&values).cloned().collect(),
            });
        }
    }
    keys
}

fn describe(keys: &Option<BTreeSet<String>>, column: &str, limit: Option<usize>) -> String {
    let lookup = match keys {
        Some(k) => format!("lookup {column} ({} keys)", k.len()),
        None => "full scan".to_owned(),
    };
    match limit {
        Some(l) => format!("{lookup}, limit={l}"),
        None => lookup,
    }
}

// ---------------------------------------------------------------- customers

/// `customers` (DESIGN.md §4): scores as last computed by the engine (at the
/// customer's latest event or the latest refit), `updated_at` = query time.
///
/// A full scan takes, from every shard's chunks at one instant, the column
/// groups its projected columns need (all read locks held together while
/// their `Arc`s are cloned: microseconds) and derives the columns after the
/// locks are released; writers meanwhile copy a group the scan still holds
/// instead of waiting for it. Every row of the answer is
/// therefore from the same cut of the event stream. A lookup by
/// `customer_id` copies the matching rows under the lock of their shard.
#[derive(Debug)]
pub(crate) struct CustomersTable(pub(crate) Shared);

#[async_trait]
impl TableProvider for CustomersTable {
    fn schema(&self) -> SchemaRef {
        customers_schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(pushdown_for(filters, "customer_id"))
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let schema = project(&customers_schema(), projection)?;
        let keys = key_set(filters, "customer_id");
        let detail = describe(&keys, "customer_id", limit);
        let engine = self.0.source.engine();
        let shards = engine.shard_count();
        let started = Instant::now();
        // Only the column groups the projected columns are derived from.
        let groups = schema_groups(&schema);
        // Each partition: the chunks it derives its rows from.
        let parts: Vec<Vec<ChunkView>> = match &keys {
            None => {
                let mut cut = engine.customer_views(groups).map_err(state_error)?;
                if let Some(limit) = limit {
                    let mut rows = 0;
                    for chunks in &mut cut {
                        let keep = chunks
                            .iter()
                            .take_while(|c| {
                                let before = rows;
                                rows += c.len();
                                before < limit
                            })
                            .count();
                        chunks.truncate(keep);
                    }
                }
                cut
            }
            Some(keys) => {
                let mut by_shard: Vec<Vec<CustomerId>> = vec![Vec::new(); shards];
                for key in keys {
                    if let Ok(id) = CustomerId::new(key) {
                        by_shard[engine.shard_of(&id)].push(id);
                    }
                }
                let mut parts = Vec::new();
                for (shard, ids) in by_shard.into_iter().enumerate().filter(|(_, ids)| !ids.is_empty()) {
                    let found = engine
                        .with_shard(shard, |book| {
                            let mut chunk = Chunk::with_capacity(ids.len());
                            for row in ids.iter().filter_map(|id| book.row(id)) {
                                chunk.push(row.customer_id(), *row.summary(), row.scores(), row.segments());
                            }
                            chunk
                        })
                        .ok_or_else(|| DataFusionError::Execution(format!("shard {shard} is unavailable")))?;
                    parts.push(vec![found.view(groups)]);
                }
                parts
            }
        };
        let rows: usize = parts.iter().flatten().map(|c| c.len()).sum();
        self.0.counters.record(rows, started.elapsed());
        let partitions = parts.len();
        let clock = RowClock::new(
            engine.now().unwrap_or_else(Timestamp::now),
            self.0.source.base_currency().minor_per_major(),
            engine.scoring_config(),
        );
        let out_schema = schema.clone();
        let stream: StreamFn = Arc::new(move |partition| {
            let chunks = parts.get(partition).cloned().unwrap_or_default();
            let out_schema = out_schema.clone();
            Box::new(
                chunks
                    .into_iter()
                    .filter(|c| !c.is_empty())
                    .map(move |chunk| customer_batch(out_schema.clone(), &chunk, &clock).map_err(state_error)),
            )
        });
        Ok(Arc::new(LazyScanExec::streamed("customers", detail, schema, partitions, stream)))
    }
}

// ---------------------------------------------------------- recommendations

/// Recommendations per customer in the `recommendations` table.
pub const RECOMMENDATIONS_PER_CUSTOMER: usize = 10;

/// Customers computed per shard read lock in a full scan of `recommendations`.
pub(crate) const RECOMMENDATION_SCAN_CHUNK: usize = 1024;

pub(crate) fn state_error(e: patron_state::StateError) -> DataFusionError {
    DataFusionError::Execution(e.to_string())
}

/// `recommendations`: computed on demand from each customer's profile and
/// the latest neighbour model. `customer_id = …` / `IN (…)` compute only
/// those customers. A full scan computes a shard's customers in chunks of
/// [`RECOMMENDATION_SCAN_CHUNK`], each under its own short read lock (a list
/// costs tens of microseconds, so one lock over millions of customers would
/// stall that shard's ingestion for minutes); it stops at `LIMIT` rows. The
/// chunks are not one consistent cut: a customer erased or added between two
/// chunks may be missed.
#[derive(Debug)]
pub(crate) struct RecommendationsTable(pub(crate) Shared);

#[async_trait]
impl TableProvider for RecommendationsTable {
    fn schema(&self) -> SchemaRef {
        recommendations_schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(pushdown_for(filters, "customer_id"))
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let schema = project(&recommendations_schema(), projection)?;
        let keys = key_set(filters, "customer_id");
        let detail = describe(&keys, "customer_id", limit);
        let shards = self.0.source.engine().shard_count();
        let partitions = if keys.is_some() { 1 } else { shards };
        let shared = self.0.clone();
        let projection: Option<Vec<usize>> = projection.cloned();
        let k = RECOMMENDATIONS_PER_CUSTOMER;
        let build: PartitionFn = Arc::new(move |partition| {
            let engine = shared.source.engine();
            let model = engine.recs_model();
            let started = Instant::now();
            let batch = match &keys {
                Some(keys) => {
                    let ids: Vec<CustomerId> = keys.iter().filter_map(|k| CustomerId::new(k).ok()).collect();
                    let lists: Vec<(&str, Vec<patron_state::Recommendation>)> = ids
                        .iter()
                        .filter_map(|id| engine.recommendations(id, k, false).map(|list| (id.as_str(), list)))
                        .collect();
                    shared.counters.record(lists.len(), started.elapsed());
                    recommendations_batch(&lists, engine.catalog(), &model, projection.as_deref())
                }
                None => {
                    let mut out = Vec::new();
                    let (mut start, mut rows) = (0usize, 0usize);
                    let wanted = limit.unwrap_or(usize::MAX);
                    while rows < wanted {
                        let chunk_started = Instant::now();
                        let read = |book: &CustomerBook| {
                            let slots = book.records().run_from(start, RECOMMENDATION_SCAN_CHUNK);
                            if slots.is_empty() {
                                return None;
                            }
                            let chunk: Vec<_> = slots.filter_map(|slot| book.records().row(slot)).collect();
                            let max = (wanted - rows).div_ceil(k).max(1);
                            let lists = recommend_all(chunk.clone(), &model, engine.blend(), k, false, max);
                            let batch = recommendations_batch(&lists, engine.catalog(), &model, projection.as_deref());
                            Some((chunk.len(), batch))
                        };
                        let Some((read_customers, batch)) = engine
                            .with_shard(partition, read)
                            .ok_or_else(|| DataFusionError::Execution(format!("shard {partition} is unavailable")))?
                        else {
                            break;
                        };
                        let batch = batch.map_err(state_error)?;
                        shared.counters.record(read_customers, chunk_started.elapsed());
                        (start, rows) = (start + read_customers, rows + batch.num_rows());
                        out.push(batch);
                    }
                    return Ok(out);
                }
            };
            Ok(vec![batch.map_err(state_error)?])
        });
        Ok(Arc::new(LazyScanExec::new("recommendations", detail, schema, partitions, build)))
    }
}

/// Product indices for a scan of a product table: the keys that exist, or
/// every product up to `limit`.
fn product_indices(
    catalog: &patron_state::ProductCatalog,
    keys: &Option<BTreeSet<String>>,
    limit: Option<usize>,
) -> Vec<u32> {
    match keys {
        Some(keys) => keys.iter().filter_map(|k| catalog.index_of(k)).collect(),
        None => (0..catalog.len().min(limit.unwrap_or(usize::MAX)) as u32).collect(),
    }
}

/// Builds a product table's batch for the given product indices and projection.
type ProductRows = fn(&Shared, &[u32], Option<&[usize]>) -> patron_state::Result<RecordBatch>;

/// A table keyed by `product_id`: `similar_products` (each product's
/// neighbours from the latest refresh of the neighbour kernel) and `products`
/// (every product seen, with its counters from the product statistics).
/// `product_id = …` / `IN (…)` read only those products.
pub(crate) struct ProductTable {
    pub(crate) shared: Shared,
    pub(crate) name: &'static str,
    pub(crate) schema: SchemaRef,
    pub(crate) rows: ProductRows,
}

impl fmt::Debug for ProductTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProductTable").field("name", &self.name).finish()
    }
}

impl ProductTable {
    /// `similar_products`.
    pub(crate) fn similar_products(shared: Shared) -> Self {
        let rows: ProductRows = |shared, products, projection| {
            let engine = shared.source.engine();
            similar_products_batch(products, engine.catalog(), &engine.recs_model(), projection)
        };
        Self { shared, name: "similar_products", schema: similar_products_schema(), rows }
    }

    /// `products`: revenue in major units of the base currency.
    pub(crate) fn products(shared: Shared) -> Self {
        let rows: ProductRows = |shared, products, projection| {
            let engine = shared.source.engine();
            let minor = shared.source.base_currency().minor_per_major();
            products_batch(products, engine.catalog(), engine.item_stats(), minor, projection)
        };
        Self { shared, name: "products", schema: products_schema(), rows }
    }
}

#[async_trait]
impl TableProvider for ProductTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(pushdown_for(filters, "product_id"))
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let schema = project(&self.schema, projection)?;
        let keys = key_set(filters, "product_id");
        let detail = describe(&keys, "product_id", limit);
        let shared = self.shared.clone();
        let projection: Option<Vec<usize>> = projection.cloned();
        let rows = self.rows;
        let build: PartitionFn = Arc::new(move |_| {
            // LIMIT bounds the products read; a product may give several rows.
            let products = product_indices(shared.source.engine().catalog(), &keys, limit);
            shared.counters.record(products.len(), std::time::Duration::ZERO);
            Ok(vec![rows(&shared, &products, projection.as_deref()).map_err(state_error)?])
        });
        Ok(Arc::new(LazyScanExec::new(self.name, detail, schema, 1, build)))
    }
}

// ------------------------------------------------- small tables built whole

/// A table whose rows are computed whole on each scan (they are small).
pub(crate) struct ComputedTable {
    pub(crate) name: &'static str,
    pub(crate) schema: SchemaRef,
    pub(crate) rows: Arc<dyn Fn() -> Result<Vec<ArrayRef>> + Send + Sync>,
}

impl fmt::Debug for ComputedTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ComputedTable").field("name", &self.name).finish()
    }
}

#[async_trait]
impl TableProvider for ComputedTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let schema = project(&self.schema, projection)?;
        let full = self.schema.clone();
        let rows = self.rows.clone();
        let projection = projection.cloned();
        let build: PartitionFn = Arc::new(move |_| {
            let batch = RecordBatch::try_new(full.clone(), rows()?)?;
            Ok(vec![match &projection {
                Some(p) => batch.project(p)?,
                None => batch,
            }])
        });
        Ok(Arc::new(LazyScanExec::new(self.name, "computed".into(), schema, 1, build)))
    }
}

/// One `model_params` row.
struct ParamRow {
    model: String,
    param: &'static str,
    value: f64,
    log_likelihood: f64,
    customers: i64,
    fitted_at: i64,
    std_error: Option<f64>,
    warning: Option<String>,
}

/// What every `model_params` row of one fit repeats.
struct FitSummary<'a> {
    log_likelihood: f64,
    customers: u64,
    std_errors: &'a [f64],
    boundary: &'a [patron_score::AtBound],
}

impl<'a> FitSummary<'a> {
    fn of<P>(fit: &'a patron_score::FitReport<P>) -> Self {
        Self {
            log_likelihood: fit.log_likelihood,
            customers: fit.customers,
            std_errors: &fit.std_errors,
            boundary: &fit.boundary,
        }
    }
}

/// `model_params`: one row per fitted parameter of every model.
pub(crate) fn model_params_table(shared: Shared) -> ComputedTable {
    let schema = Arc::new(Schema::new(vec![
        Field::new("model", DataType::Utf8, false),
        Field::new("param", DataType::Utf8, false),
        Field::new("value", DataType::Float64, false),
        Field::new("log_likelihood", DataType::Float64, true),
        Field::new("customers", DataType::Int64, true),
        Field::new("fitted_at", timestamp_type(), true),
        // Appended by issue 18: from the fit's observed information (NULL where it gave none).
        Field::new("std_error", DataType::Float64, true),
        // Appended by issue 18: why this parameter is on the edge of what the
        // data can identify and what that means for the scores (NULL inside).
        Field::new("warning", DataType::Utf8, true),
    ]));
    let rows = Arc::new(move || -> Result<Vec<ArrayRef>> {
        let models = shared.source.engine().models();
        let mut out: Vec<ParamRow> = Vec::new();
        if let Some(fits) = &models.fits {
            let at = fits.fitted_at.micros();
            let mut push = |model: &str, named: &[(&'static str, f64)], fit: FitSummary| {
                for (i, &(param, value)) in named.iter().enumerate() {
                    out.push(ParamRow {
                        model: model.to_owned(),
                        param,
                        value,
                        log_likelihood: fit.log_likelihood,
                        customers: fit.customers as i64,
                        fitted_at: at,
                        std_error: fit.std_errors.get(i).copied().filter(|v| v.is_finite()),
                        warning: fit.boundary.iter().find(|b| b.parameter == param).map(|b| b.meaning.clone()),
                    });
                }
            };
            for (model, fit) in &fits.purchase {
                if let Ok(f) = fit {
                    push(model.name(), &f.params.named(), FitSummary::of(f));
                }
            }
            if let Ok(f) = &fits.gamma_gamma {
                push("gamma_gamma", &f.params.named(), FitSummary::of(f));
            }
        }
        Ok(vec![
            Arc::new(out.iter().map(|r| Some(r.model.as_str())).collect::<StringArray>()),
            Arc::new(out.iter().map(|r| Some(r.param)).collect::<StringArray>()),
            Arc::new(out.iter().map(|r| Some(r.value)).collect::<Float64Array>()),
            Arc::new(out.iter().map(|r| Some(r.log_likelihood)).collect::<Float64Array>()),
            Arc::new(out.iter().map(|r| Some(r.customers)).collect::<Int64Array>()),
            Arc::new(out.iter().map(|r| Some(r.fitted_at)).collect::<TimestampMicrosecondArray>()),
            Arc::new(out.iter().map(|r| r.std_error).collect::<Float64Array>()),
            Arc::new(out.iter().map(|r| r.warning.as_deref()).collect::<StringArray>()),
        ])
    });
    ComputedTable { name: "model_params", schema, rows }
}

/// `model_quality`: each kept refit's predictions of the configured model,
/// judged against what its customers have done since (one row per refit,
/// oldest first; see `patron_state::quality`).
pub(crate) fn model_quality_table(shared: Shared) -> ComputedTable {
    let schema = Arc::new(Schema::new(vec![
        Field::new("fitted_at", timestamp_type(), false),
        Field::new("model", DataType::Utf8, false),
        Field::new("judged_at", timestamp_type(), false),
        Field::new("days_since", DataType::Float64, false),
        Field::new("customers", DataType::Int64, false),
        Field::new("expected_orders", DataType::Float64, false),
        Field::new("actual_orders", DataType::Float64, false),
        Field::new("mae", DataType::Float64, false),
        Field::new("rmse", DataType::Float64, false),
        Field::new("auc", DataType::Float64, true),
        Field::new("brier", DataType::Float64, false),
    ]));
    let rows = Arc::new(move || -> Result<Vec<ArrayRef>> {
        let rows = shared.source.engine().model_quality().map_err(state_error)?;
        let number = |f: fn(&PredictionQuality) -> f64| -> ArrayRef {
            Arc::new(rows.iter().map(|r| Some(f(&r.quality))).collect::<Float64Array>())
        };
        Ok(vec![
            Arc::new(rows.iter().map(|r| Some(r.fitted_at.micros())).collect::<TimestampMicrosecondArray>()),
            Arc::new(rows.iter().map(|r| Some(r.model.name())).collect::<StringArray>()),
            Arc::new(rows.iter().map(|r| Some(r.judged_at.micros())).collect::<TimestampMicrosecondArray>()),
            Arc::new(rows.iter().map(|r| Some(r.days_since)).collect::<Float64Array>()),
            Arc::new(rows.iter().map(|r| Some(r.quality.customers as i64)).collect::<Int64Array>()),
            number(|q| q.mean_expected_orders),
            number(|q| q.mean_actual_orders),
            number(|q| q.mae),
            number(|q| q.rmse),
            Arc::new(rows.iter().map(|r| r.quality.auc).collect::<Float64Array>()),
            number(|q| q.brier),
        ])
    });
    ComputedTable { name: "model_quality", schema, rows }
}

/// `rejected_events`: the bounded store of the newest rejections.
pub(crate) fn rejected_events_table(shared: Shared) -> ComputedTable {
    let schema = Arc::new(Schema::new(vec![
        Field::new("received_at", timestamp_type(), false),
        Field::new("source", DataType::Utf8, false),
        Field::new("position", DataType::Int64, false),
        Field::new("error", DataType::Utf8, false),
        Field::new("raw", DataType::Utf8, false),
    ]));
    let rows = Arc::new(move || -> Result<Vec<ArrayRef>> {
        let rejected = shared.source.rejected();
        Ok(vec![
            Arc::new(rejected.iter().map(|r| Some(r.received_at.micros())).collect::<TimestampMicrosecondArray>()),
            Arc::new(rejected.iter().map(|r| Some(r.source.as_str())).collect::<StringArray>()),
            Arc::new(rejected.iter().map(|r| Some(r.position as i64)).collect::<Int64Array>()),
            Arc::new(rejected.iter().map(|r| Some(r.error.as_str())).collect::<StringArray>()),
            Arc::new(rejected.iter().map(|r| Some(r.raw.as_str())).collect::<StringArray>()),
        ])
    });
    ComputedTable { name: "rejected_events", schema, rows }
}

/// Every `engine_stats` row, in a stable order.
pub(crate) fn engine_stats_rows(shared: &Shared) -> Vec<(String, f64)> {
    let engine = shared.source.engine();
    let stats = engine.stats();
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
    let customers: usize = engine.shard_sizes().iter().sum();
    let models = engine.models();
    let seconds = |t: Option<Timestamp>| t.map_or(f64::NAN, |t| t.micros() as f64 / 1e6);
    let mut rows = vec![
        ("events_accepted".to_owned(), load(&stats.accepted)),
        ("events_duplicate".to_owned(), load(&stats.duplicates)),
        ("events_beyond_dedup_horizon".to_owned(), load(&stats.beyond_horizon)),
        ("events_refused_responses".to_owned(), load(&stats.refused_responses)),
        ("events_refused_refunds".to_owned(), load(&stats.refused_refunds)),
        ("customers".to_owned(), customers as f64),
        ("products".to_owned(), engine.catalog().len() as f64),
        ("shards".to_owned(), engine.shard_count() as f64),
        ("queued_batches".to_owned(), load(&stats.queued_batches)),
        ("watermark_epoch_s".to_owned(), seconds(engine.watermark())),
        ("models_provisional".to_owned(), if models.provisional { 1.0 } else { 0.0 }),
        ("last_fit_epoch_s".to_owned(), seconds(models.fits.as_ref().map(|f| f.fitted_at))),
        ("refits".to_owned(), load(&stats.refits)),
        ("last_refit_ms".to_owned(), load(&stats.last_refit_micros) / 1e3),
        ("recommendation_refreshes".to_owned(), load(&stats.recs_refreshes)),
        ("last_recommendation_refresh_ms".to_owned(), load(&stats.last_recs_refresh_micros) / 1e3),
        ("product_stats_bytes".to_owned(), engine.item_stats_memory_bytes() as f64),
    ];
    // NaN, not part of the population, when a shard has failed.
    let (state_bytes, history_bytes) =
        engine.state_memory().map_or((f64::NAN, f64::NAN), |(state, history)| (state as f64, history as f64));
    rows.push(("customer_state_bytes".to_owned(), state_bytes));
    rows.push(("customer_history_bytes".to_owned(), history_bytes));
    let (remembered, dedup_bytes) = engine.dedup_usage();
    rows.push(("dedup_remembered_events".to_owned(), remembered as f64));
    rows.push(("dedup_bytes".to_owned(), dedup_bytes as f64));
    if let Some(wal) = engine.wal_stats() {
        rows.push(("log_bytes".to_owned(), load(&wal.bytes)));
        rows.push(("log_records".to_owned(), load(&wal.records)));
        rows.push(("log_syncs".to_owned(), load(&wal.syncs)));
    }
    let c = &shared.counters;
    rows.push(("sql_scans".to_owned(), load(&c.scans)));
    rows.push(("sql_rows_read".to_owned(), load(&c.rows_read)));
    rows.push(("sql_max_shard_lock_ms".to_owned(), load(&c.max_lock_micros) / 1e3));
    rows.extend(shared.source.extra_stats());
    rows
}

/// `engine_stats(name, value)`.
pub(crate) fn engine_stats_table(shared: Shared) -> ComputedTable {
    let schema = Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("value", DataType::Float64, true),
    ]));
    let rows = Arc::new(move || -> Result<Vec<ArrayRef>> {
        let rows = engine_stats_rows(&shared);
        Ok(vec![
            Arc::new(rows.iter().map(|r| Some(r.0.as_str())).collect::<StringArray>()),
            Arc::new(rows.iter().map(|r| (!r.1.is_nan()).then_some(r.1)).collect::<Float64Array>()),
        ])
    });
    ComputedTable { name: "engine_stats", schema, rows }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::{col, lit};

    #[test]
    fn equality_and_in_on_the_key_are_pushed_down_and_nothing_else() {
        let eq = col("customer_id").eq(lit("c1"));
        let flipped = lit("c2").eq(col("customer_id"));
        let within = col("customer_id").in_list(vec![lit("a"), lit("b")], false);
        let not_in = col("customer_id").in_list(vec![lit("a")], true);
        let either = col("customer_id").eq(lit("a")).or(col("customer_id").eq(lit("b")));
        let mixed = col("customer_id").eq(lit("a")).or(col("clv").gt(lit(1.0)));
        let other = col("clv").gt(lit(1.0));
        let numeric = col("customer_id").eq(lit(5));
        assert_eq!(key_values(&eq, "customer_id"), Some(vec!["c1".to_owned()]));
        assert_eq!(key_values(&flipped, "customer_id"), Some(vec!["c2".to_owned()]));
        assert_eq!(key_values(&within, "customer_id"), Some(vec!["a".to_owned(), "b".to_owned()]));
        assert_eq!(key_values(&either, "customer_id"), Some(vec!["a".to_owned(), "b".to_owned()]));
        assert_eq!(key_values(&mixed, "customer_id"), None);
        assert_eq!(key_values(&not_in, "customer_id"), None);
        assert_eq!(key_values(&other, "customer_id"), None);
        assert_eq!(key_values(&numeric, "customer_id"), None);
        assert_eq!(key_values(&eq, "product_id"), None);
    }

    #[test]
    fn key_lookups_are_told_from_scans() {
        use datafusion::logical_expr::table_scan;
        let schema = Schema::new(vec![
            Field::new("customer_id", DataType::Utf8, false),
            Field::new("clv", DataType::Float64, true),
        ]);
        let scan = |table: &str| table_scan(Some(table), &schema, None).unwrap();
        let filtered = |table: &str, predicate: Expr| scan(table).filter(predicate).unwrap().build().unwrap();
        let key = col("customer_id").eq(lit("c1"));
        assert!(is_key_lookup(&filtered("customers", key.clone())));
        assert!(is_key_lookup(&filtered("customers", key.clone().and(col("clv").gt(lit(1.0))))));
        assert!(is_key_lookup(&filtered("recommendations", col("customer_id").in_list(vec![lit("a")], false))));
        assert!(is_key_lookup(&scan("model_params").build().unwrap()), "small tables are lookups");
        assert!(!is_key_lookup(&scan("customers").build().unwrap()));
        assert!(!is_key_lookup(&filtered("customers", col("clv").gt(lit(1.0)))));
        assert!(!is_key_lookup(&filtered("customers", key.or(col("clv").gt(lit(1.0))))));
    }

    #[test]
    fn several_key_filters_intersect() {
        let filters =
            vec![col("customer_id").in_list(vec![lit("a"), lit("b")], false), col("customer_id").eq(lit("b"))];
        assert_eq!(key_set(&filters, "customer_id"), Some(BTreeSet::from(["b".to_owned()])));
        assert_eq!(key_set(&[col("clv").gt(lit(1.0))], "customer_id"), None);
    }
}
