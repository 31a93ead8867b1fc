//! One execution node for every Patron table: each partition is a closure that
//! builds its record batches when DataFusion executes it (never at planning
//! time, so `EXPLAIN` is free), on the blocking pool so a large shard does not
//! stall the async workers that serve other connections.

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

/// A leaf node whose partitions are produced by a closure.
pub(crate) struct LazyScanExec {
    table: &'static str,
    detail: String,
    schema: SchemaRef,
    partitions: usize,
    build: PartitionFn,
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
        let build = self.build.clone();
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
