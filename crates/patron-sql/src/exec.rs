//! One execution node for every Patron table: each partition is a closure that
//! makes its record batches when DataFusion executes it (never at planning
//! time, so `EXPLAIN` is free). Costly partitions (recommendations, products)
//! are built whole on the blocking pool so they do not stall the async
//! workers; the `customers` scan is streamed, one chunk's batch each time the
//! plan above asks for one, so an aggregate consumes a batch while it is
//! still in cache and no partition is ever held in memory whole.

use std::fmt;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties, ReplaceChildrenOptions,
};
use futures_util::StreamExt;

/// Builds one partition's batches.
pub(crate) type PartitionFn = Arc<dyn Fn(usize) -> Result<Vec<RecordBatch>> + Send + Sync>;

/// One partition's batches, each made when it is pulled.
pub(crate) type BatchIter = Box<dyn Iterator<Item = Result<RecordBatch>> + Send>;

/// Makes the iterator of one partition (cheap: the work is in its `next`).
pub(crate) type StreamFn = Arc<dyn Fn(usize) -> BatchIter + Send + Sync>;

#[derive(Clone)]
enum Partitions {
    Built(PartitionFn),
    Streamed(StreamFn),
}

/// A leaf node whose partitions are produced by a closure.
pub(crate) struct LazyScanExec {
    table: &'static str,
    detail: String,
    schema: SchemaRef,
    partitions: usize,
    build: Partitions,
    properties: Arc<PlanProperties>,
}

impl LazyScanExec {
    /// `detail` is shown by `EXPLAIN` (what was pushed down).
    pub(crate) fn new(
        table: &'static str,
        detail: String,
        schema: SchemaRef,
        partitions: usize,
        build: PartitionFn,
    ) -> Self {
        Self::with(table, detail, schema, partitions, Partitions::Built(build))
    }

    /// Like [`Self::new`], with partitions whose batches are made as they are pulled.
    pub(crate) fn streamed(
        table: &'static str,
        detail: String,
        schema: SchemaRef,
        partitions: usize,
        stream: StreamFn,
    ) -> Self {
        Self::with(table, detail, schema, partitions, Partitions::Streamed(stream))
    }

    fn with(table: &'static str, detail: String, schema: SchemaRef, partitions: usize, build: Partitions) -> Self {
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(partitions.max(1)),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Self { table, detail, schema, partitions: partitions.max(1), build, properties }
    }
}

impl fmt::Debug for LazyScanExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LazyScanExec").field("table", &self.table).field("detail", &self.detail).finish()
    }
}

impl DisplayAs for LazyScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PatronScan: table={}, partitions={}, {}", self.table, self.partitions, self.detail)
    }
}

impl ExecutionPlan for LazyScanExec {
    fn name(&self) -> &str {
        "PatronScan"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        Vec::new()
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.is_empty() { Ok(self) } else { Err(DataFusionError::Internal("PatronScan has no children".into())) }
    }

    #[allow(deprecated)]
    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(datafusion::physical_plan::ChildrenPropertiesMode::Recompute),
        )
    }

    fn execute(&self, partition: usize, _context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        if partition >= self.partitions {
            return Err(DataFusionError::Internal(format!(
                "PatronScan of {} has {} partitions, asked for {partition}",
                self.table, self.partitions
            )));
        }
        let build = match &self.build {
            Partitions::Streamed(stream) => {
                let batches = futures_util::stream::iter(stream(partition));
                return Ok(Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), batches)));
            }
            Partitions::Built(build) => build.clone(),
        };
        let batches = futures_util::stream::once(async move {
            let built = tokio::task::spawn_blocking(move || build(partition))
                .await
                .map_err(|e| DataFusionError::External(Box::new(e)))?;
            built.map(|batches| futures_util::stream::iter(batches.into_iter().map(Ok)))
        });
        let flat = batches
            .map(|r: Result<_>| match r {
                Ok(s) => s.left_stream(),
                Err(e) => futures_util::stream::once(async move { Err(e) }).right_stream(),
            })
            .flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), flat)))
    }
}
