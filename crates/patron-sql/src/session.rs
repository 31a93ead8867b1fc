//! The read-only, bounded SQL session every front end shares (HTTP, pgwire,
//! Flight SQL, `patron query`).
//!
//! Safety is layered, because `SessionContext::sql` alone would run DDL, DML,
//! `COPY … TO` and `CREATE EXTERNAL TABLE` (DESIGN.md §8):
//! 1. the parsed statement must be a query (`SELECT`, `WITH`, `VALUES`,
//!    `EXPLAIN` of one); anything else is refused by name before planning;
//! 2. the plan is verified again with DDL, DML and statements disallowed
//!    (this catches `SELECT … INTO`);
//! 3. the runtime has no object store and no spill directory, so even a plan
//!    that reached a file reader or a spilling operator could not touch a file;
//! 4. execution is bounded: a memory pool, a wall-clock timeout, a row cap and
//!    a byte cap on results and a cap on concurrent queries, each failing with
//!    its own error;
//! 5. admission (see `admission`): statements too complex to parse safely are
//!    refused before parsing, functions that build huge values are bounded,
//!    and `rejected_events` needs the admin role.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::common::DataFusionError;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::object_store::ObjectStoreRegistry;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use datafusion::sql::parser::{DFParser, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::{self, Statement};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use futures_util::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::admission::{self, Access};
use crate::campaign_tables;
use crate::consent_table;
use crate::pg_functions;
use crate::pg_semantics;
use crate::segment_table;
use crate::tables::{self, LiveSource, ScanCounters, Shared};

/// Limits of every SQL query.
#[derive(Clone, Copy, Debug)]
pub struct SqlLimits {
    /// Memory DataFusion operators may reserve, across running queries.
    pub memory_bytes: usize,
    /// Wall-clock limit of one query's execution.
    pub timeout: Duration,
    /// Most rows one result may have (a larger result is refused, never cut).
    pub max_rows: usize,
    /// Most bytes one result may hold in Arrow form; also the most one call of
    /// `repeat`, `lpad`, `rpad`, `array_repeat` or `range` may build.
    pub max_result_bytes: usize,
    /// Queries running at once; more wait up to `queue_wait`, then are refused.
    pub max_concurrent: usize,
    /// How long a query waits for a free slot.
    pub queue_wait: Duration,
}

impl Default for SqlLimits {
    fn default() -> Self {
        Self {
            memory_bytes: 1 << 30,
            timeout: Duration::from_secs(30),
            max_rows: 1_000_000,
            max_result_bytes: 256 << 20,
            max_concurrent: 4,
            queue_wait: Duration::from_secs(5),
        }
    }
}

/// Why a query did not run.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    /// Not a read-only query.
    #[error("{0} is not allowed: Patron's SQL endpoint is read-only (SELECT, WITH, VALUES, EXPLAIN, SHOW)")]
    Refused(String),
    /// Empty input.
    #[error("no SQL statement was given")]
    Empty,
    /// More than one statement in one request.
    #[error("one statement per request, got {0}")]
    SeveralStatements(usize),
    /// Did not parse.
    #[error("SQL syntax error: {0}")]
    Syntax(String),
    /// Parsed but could not be planned (unknown table, column, type error…).
    #[error("{0}")]
    Plan(String),
    /// Ran longer than the limit.
    #[error("query cancelled after {0:?} (the per-query time limit); narrow it with WHERE or LIMIT")]
    Timeout(Duration),
    /// The result has too many rows.
    #[error("result exceeds {0} rows (the per-query row cap); add a LIMIT or aggregate")]
    TooManyRows(usize),
    /// The result holds too many bytes.
    #[error("result exceeds {0} bytes (the per-query result-size cap); select fewer or narrower columns")]
    TooLarge(usize),
    /// Too long or too deeply nested to parse and plan safely.
    #[error("statement too complex: {0}")]
    TooComplex(String),
    /// The caller's role may not read a table.
    #[error("permission denied: {0}")]
    Forbidden(String),
    /// The memory pool is exhausted.
    #[error("query needs more memory than the per-query budget: {0}")]
    Memory(String),
    /// Every query slot stayed busy.
    #[error("too many concurrent queries ({0} running); retry shortly")]
    Busy(usize),
    /// Failed while running.
    #[error("query failed: {0}")]
    Execution(String),
    /// The threads that execute queries could not be started.
    #[error("cannot start the SQL execution threads: {0}")]
    Threads(#[source] std::io::Error),
    /// A `to_char` pattern field Patron cannot format as PostgreSQL does.
    #[error(transparent)]
    Pattern(#[from] pg_functions::PatternError),
}

impl SqlError {
    /// SQLSTATE for the PostgreSQL wire protocol.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            Self::Refused(_) => "25006", // read_only_sql_transaction
            Self::Empty | Self::SeveralStatements(_) | Self::Syntax(_) => "42601",
            Self::TooComplex(_) => "54001", // statement_too_complex
            Self::Forbidden(_) => "42501",  // insufficient_privilege
            Self::Plan(_) => "42P01",
            Self::Pattern(_) => "22007", // invalid_datetime_format
            Self::Timeout(_) => "57014",
            Self::TooManyRows(_) | Self::TooLarge(_) | Self::Memory(_) => "53200",
            Self::Busy(_) => "53300",
            Self::Execution(_) | Self::Threads(_) => "XX000",
        }
    }

    /// Whether the client's request was at fault (4xx) rather than the server (5xx).
    pub fn is_client_error(&self) -> bool {
        !matches!(self, Self::Busy(_) | Self::Execution(_) | Self::Threads(_))
    }

    fn from_datafusion(error: DataFusionError) -> Self {
        match error.find_root() {
            DataFusionError::ResourcesExhausted(m) => Self::Memory(m.clone()),
            DataFusionError::SQL(e, _) => Self::Syntax(e.to_string()),
            DataFusionError::Plan(_) | DataFusionError::SchemaError(..) | DataFusionError::NotImplemented(_) => {
                Self::Plan(error.find_root().to_string())
            }
            other => Self::Execution(other.to_string()),
        }
    }
}

/// A query's answer.
#[derive(Debug)]
pub struct QueryResult {
    /// Columns.
    pub schema: SchemaRef,
    /// Rows.
    pub batches: Vec<RecordBatch>,
}

impl QueryResult {
    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

/// A query's answer as it is computed ([`SqlEngine::execute_stream`]).
#[derive(Debug)]
pub struct QueryStream {
    /// Columns.
    pub schema: SchemaRef,
    receiver: tokio::sync::mpsc::Receiver<Result<RecordBatch, SqlError>>,
}

impl QueryStream {
    /// The batches, as the plan makes them.
    pub fn into_batches(self) -> impl futures_util::Stream<Item = Result<RecordBatch, SqlError>> + Send + 'static {
        futures_util::stream::unfold(self.receiver, |mut receiver| async move {
            receiver.recv().await.map(|batch| (batch, receiver))
        })
    }
}

/// A runtime object store registry with no store at all: no file, no URL.
#[derive(Debug)]
struct NoObjectStores;

impl ObjectStoreRegistry for NoObjectStores {
    fn register_store(
        &self,
        _url: &url::Url,
        _store: Arc<dyn object_store::ObjectStore>,
    ) -> Option<Arc<dyn object_store::ObjectStore>> {
        None
    }

    fn get_store(&self, url: &url::Url) -> datafusion::error::Result<Arc<dyn object_store::ObjectStore>> {
        Err(DataFusionError::Plan(format!("{url} is not readable: Patron's SQL endpoint reads no files or URLs")))
    }
}

/// What statements a read-only session accepts.
pub(crate) enum Verdict {
    /// Plan and run it.
    Query,
    /// A harmless session statement drivers send (`SET application_name`,
    /// `BEGIN`, `SHOW …`), or `FETCH`/`CLOSE` of a cursor: the wire layer
    /// answers it without touching the engine.
    Cosmetic,
    /// `COPY … TO STDOUT`: a read whose rows go to the client in COPY
    /// format (pgwire only; [`crate::copy_out`] refuses the other forms).
    CopyOut,
    /// `DECLARE … CURSOR FOR query`: a read whose rows the client fetches
    /// in parts (pgwire only).
    DeclareCursor,
    /// A savepoint statement, which drivers send around their own lookups
    /// (psycopg's `conn.transaction()` inside SQLAlchemy's transaction): a
    /// read-only session has nothing to roll back, so the wire layer answers
    /// with this command tag and does nothing.
    NoOp(&'static str),
    /// Refused, with what it was.
    Refused(String),
}

/// Session variables clients set at connect time; setting them changes nothing here.
const COSMETIC_SETTINGS: &[&str] = &[
    "extra_float_digits",
    "application_name",
    "datestyle",
    "client_encoding",
    "search_path",
    "timezone",
    "time zone",
    "intervalstyle",
    "client_min_messages",
    "bytea_output",
    "standard_conforming_strings",
    "statement_timeout",
];

fn statement_kind(statement: &Statement) -> String {
    let text = statement.to_string().to_uppercase();
    let words: Vec<&str> = text.split_whitespace().collect();
    match words.as_slice() {
        [verb @ ("CREATE" | "DROP" | "ALTER" | "TRUNCATE"), object, ..] => format!("{verb} {object}"),
        [verb, ..] => (*verb).to_owned(),
        [] => "an empty statement".to_owned(),
    }
}

/// Classifies a parsed statement.
pub(crate) fn classify(statement: &Statement) -> Verdict {
    match statement {
        Statement::Query(_) | Statement::ShowTables { .. } | Statement::ShowColumns { .. } => Verdict::Query,
        Statement::Explain { statement: inner, .. } => match classify(inner) {
            Verdict::Query => Verdict::Query,
            Verdict::Cosmetic | Verdict::NoOp(_) | Verdict::CopyOut | Verdict::DeclareCursor => {
                Verdict::Refused("EXPLAIN of a session statement".into())
            }
            refused => refused,
        },
        Statement::Savepoint { .. } => Verdict::NoOp("SAVEPOINT"),
        Statement::ReleaseSavepoint { .. } => Verdict::NoOp("RELEASE"),
        Statement::Rollback { savepoint: Some(_), .. } => Verdict::NoOp("ROLLBACK"),
        Statement::StartTransaction { .. } | Statement::Commit { .. } | Statement::Rollback { .. } => Verdict::Cosmetic,
        Statement::ShowVariable { .. } | Statement::ShowStatus { .. } => Verdict::Cosmetic,
        Statement::Fetch { .. } | Statement::Close { .. } => Verdict::Cosmetic,
        Statement::Copy { .. } => Verdict::CopyOut,
        Statement::Declare { stmts }
            if stmts.iter().all(|d| d.declare_type == Some(ast::DeclareType::Cursor) && d.for_query.is_some()) =>
        {
            Verdict::DeclareCursor
        }
        Statement::Set(set) => match set {
            ast::Set::SingleAssignment { variable, .. } => {
                let name = variable.to_string().to_lowercase();
                if COSMETIC_SETTINGS.contains(&name.as_str()) {
                    Verdict::Cosmetic
                } else {
                    Verdict::Refused(format!("SET {name}"))
                }
            }
            ast::Set::SetTimeZone { .. } | ast::Set::SetNames { .. } => Verdict::Cosmetic,
            _ => Verdict::Refused("this SET".into()),
        },
        other => Verdict::Refused(statement_kind(other)),
    }
}

/// The second line of defence: the plan itself holds no DDL, DML or statement.
fn verify_read_only(plan: &LogicalPlan) -> Result<(), SqlError> {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
        .verify_plan(plan)
        .map_err(|e| SqlError::Refused(e.find_root().to_string()))
}

/// The shared SQL engine: one DataFusion context over the live tables.
pub struct SqlEngine {
    ctx: Arc<SessionContext>,
    executor: Executor,
    limits: SqlLimits,
    slots: Arc<Semaphore>,
    /// One more slot that only key lookups may take (see [`tables::is_key_lookup`]).
    lookup_slot: Arc<Semaphore>,
    counters: Arc<ScanCounters>,
    queries: AtomicU64,
    failed: AtomicU64,
}

impl std::fmt::Debug for SqlEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlEngine").field("limits", &self.limits).finish_non_exhaustive()
    }
}

/// Wraps every join of a physical plan in a [`CooperativeExec`]. A join can
/// emit millions of batches without polling its inputs (a cross join of three
/// tables emits each left row × each probe batch), so the operator above it
/// never returns `Pending` and a cancelled query would keep its thread until it
/// finished, which may be never. A cooperative stream spends tokio's task
/// budget on every batch and yields when it runs out: that is where an aborted
/// query stops.
fn cooperative_joins(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>, DataFusionError> {
    plan.transform_up(|node| {
        if node.name().contains("Join") {
            let wrapped: Arc<dyn ExecutionPlan> = Arc::new(CooperativeExec::new(node));
            Ok(Transformed::yes(wrapped))
        } else {
            Ok(Transformed::no(node))
        }
    })
    .map(|transformed| transformed.data)
}

/// The threads queries execute on: a tokio runtime of their own, apart from the
/// one that serves HTTP, pgwire and Flight SQL. DataFusion's operators are
/// CPU-bound and yield only between batches; on shared workers a heavy query
/// (a cross join, a large aggregate) would delay the timer that should cancel
/// it, and the ingest requests that should never wait for an analyst.
struct Executor {
    /// `Some` until dropped: a runtime must be shut down without blocking,
    /// because the engine may be dropped inside another runtime.
    runtime: Option<tokio::runtime::Runtime>,
}

impl Executor {
    fn start() -> Result<Self, SqlError> {
        let threads = std::thread::available_parallelism().map_or(2, usize::from);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("patron-sql-exec")
            .thread_stack_size(crate::SQL_THREAD_STACK_BYTES)
            .enable_time()
            .build()
            .map_err(SqlError::Threads)?;
        Ok(Self { runtime: Some(runtime) })
    }

    fn spawn<F>(&self, future: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match &self.runtime {
            Some(runtime) => runtime.spawn(future),
            // Unreachable while the engine is alive; the caller's runtime is a safe fallback.
            None => tokio::spawn(future),
        }
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl SqlEngine {
    /// A session over `source` with `limits`.
    pub fn new(source: Arc<dyn LiveSource>, limits: SqlLimits) -> Result<Self, SqlError> {
        let ctx = Self::base_context(limits)?;
        let counters = Arc::new(ScanCounters::default());
        let shared = Shared { source, counters: counters.clone() };
        let register = |name: &str, table: Arc<dyn datafusion::catalog::TableProvider>| {
            ctx.register_table(name, table).map(|_| ()).map_err(SqlError::from_datafusion)
        };
        register("customers", Arc::new(tables::CustomersTable(shared.clone())))?;
        register("recommendations", Arc::new(tables::RecommendationsTable(shared.clone())))?;
        register("similar_products", Arc::new(tables::ProductTable::similar_products(shared.clone())))?;
        register("products", Arc::new(tables::ProductTable::products(shared.clone())))?;
        register("model_params", Arc::new(tables::model_params_table(shared.clone())))?;
        register("model_quality", Arc::new(tables::model_quality_table(shared.clone())))?;
        register("rejected_events", Arc::new(tables::rejected_events_table(shared.clone())))?;
        register("campaigns", Arc::new(campaign_tables::campaigns_table(shared.clone())))?;
        register("campaign_members", Arc::new(campaign_tables::campaign_members_table(shared.clone())))?;
        register("campaign_results", Arc::new(campaign_tables::campaign_results_table(shared.clone())))?;
        register("channel_consents", Arc::new(consent_table::channel_consents_table(shared.clone())))?;
        register("segment_definitions", Arc::new(segment_table::segment_definitions_table(shared.clone())))?;
        register("engine_stats", Arc::new(tables::engine_stats_table(shared)))?;
        Self::with_context(ctx, counters, limits)
    }

    /// A session over fixed tables, such as a fleet's Parquet export read into
    /// memory: the same dialect, functions, read-only rule and limits as a
    /// live session, without an engine behind it.
    pub fn over_tables(
        tables: Vec<(String, SchemaRef, Vec<RecordBatch>)>,
        limits: SqlLimits,
    ) -> Result<Self, SqlError> {
        let ctx = Self::base_context(limits)?;
        for (name, schema, batches) in tables {
            let table =
                datafusion::datasource::MemTable::try_new(schema, vec![batches]).map_err(SqlError::from_datafusion)?;
            ctx.register_table(name.as_str(), Arc::new(table)).map_err(SqlError::from_datafusion)?;
        }
        Self::with_context(ctx, Arc::new(ScanCounters::default()), limits)
    }

    /// The context every session starts from: memory limit, no disk, no
    /// object stores, the PostgreSQL dialect, and Patron's functions.
    fn base_context(limits: SqlLimits) -> Result<SessionContext, SqlError> {
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_limit(limits.memory_bytes, 1.0)
            .with_disk_manager_builder(DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled))
            .with_object_store_registry(Arc::new(NoObjectStores))
            .build_arc()
            .map_err(SqlError::from_datafusion)?;
        let config = SessionConfig::new()
            .with_information_schema(true)
            .set_bool("datafusion.execution.enable_recursive_ctes", false)
            .set_str("datafusion.sql_parser.dialect", "PostgreSQL");
        let ctx = SessionContext::new_with_config_rt(config, runtime);
        admission::bounded_functions(&ctx, limits.max_result_bytes);
        pg_functions::register(&ctx);
        crate::describe::register_functions(&ctx);
        Ok(ctx)
    }

    fn with_context(ctx: SessionContext, counters: Arc<ScanCounters>, limits: SqlLimits) -> Result<Self, SqlError> {
        Ok(Self {
            ctx: Arc::new(ctx),
            executor: Executor::start()?,
            slots: Arc::new(Semaphore::new(limits.max_concurrent.max(1))),
            lookup_slot: Arc::new(Semaphore::new(1)),
            limits,
            counters,
            queries: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        })
    }

    /// The DataFusion context (the wire front ends add their catalogs to it).
    pub fn context(&self) -> &Arc<SessionContext> {
        &self.ctx
    }

    /// The limits in force.
    pub fn limits(&self) -> SqlLimits {
        self.limits
    }

    /// What scans did so far.
    pub fn counters(&self) -> &ScanCounters {
        &self.counters
    }

    /// Queries run, and how many of them failed.
    pub fn query_counts(&self) -> (u64, u64) {
        (self.queries.load(Ordering::Relaxed), self.failed.load(Ordering::Relaxed))
    }

    /// Parses one statement (PostgreSQL dialect), after refusing text too
    /// complex to parse safely.
    pub fn parse(sql: &str) -> Result<DfStatement, SqlError> {
        admission::check_complexity(sql)?;
        let mut statements = DFParser::parse_sql_with_dialect(sql, &PostgreSqlDialect {})
            .map_err(|e| SqlError::Syntax(e.to_string()))?;
        match statements.len() {
            0 => Err(SqlError::Empty),
            1 => statements.pop_front().ok_or(SqlError::Empty),
            n => Err(SqlError::SeveralStatements(n)),
        }
    }

    /// Refuses anything but a query (or `EXPLAIN` of one).
    fn check(statement: &DfStatement) -> Result<(), SqlError> {
        match statement {
            DfStatement::Statement(s) => match classify(s) {
                Verdict::Query => Ok(()),
                Verdict::Cosmetic | Verdict::NoOp(_) => Err(SqlError::Refused(statement_kind(s))),
                Verdict::CopyOut | Verdict::DeclareCursor => Err(SqlError::Refused(format!(
                    "{} over HTTP (it is answered over the PostgreSQL protocol; here, ask for text/csv)",
                    statement_kind(s)
                ))),
                Verdict::Refused(what) => Err(SqlError::Refused(what)),
            },
            DfStatement::Explain(explain) => Self::check(&explain.statement),
            DfStatement::CreateExternalTable(_) => Err(SqlError::Refused("CREATE EXTERNAL TABLE".into())),
            DfStatement::CopyTo(_) => Err(SqlError::Refused("COPY".into())),
            _ => Err(SqlError::Refused("this statement".into())),
        }
    }

    /// Plans a parsed statement that is a query and only reads tables
    /// `access` allows, re-verifying the plan.
    pub async fn plan_parsed(&self, mut statement: DfStatement, access: Access) -> Result<LogicalPlan, SqlError> {
        Self::check(&statement)?;
        if let DfStatement::Statement(inner) = &mut statement {
            pg_functions::rewrite(inner)?;
        }
        let tables = self.ctx.state().resolve_table_references(&statement).map_err(SqlError::from_datafusion)?;
        for table in &tables {
            admission::check_table(table.table(), access)?;
        }
        let plan = self.ctx.state().statement_to_plan(statement).await.map_err(SqlError::from_datafusion)?;
        // On the plan as written, so its schema (what clients are told the
        // columns are) already has the types PostgreSQL's answers have.
        let plan = pg_semantics::postgres_semantics(plan).map_err(SqlError::from_datafusion)?;
        verify_read_only(&plan)?;
        Ok(plan)
    }

    /// Plans a statement from the PostgreSQL front end's parser.
    pub async fn plan(&self, statement: &Statement, access: Access) -> Result<LogicalPlan, SqlError> {
        self.plan_parsed(DfStatement::Statement(Box::new(statement.clone())), access).await
    }

    /// Parses, checks, plans and runs `sql` within the limits, as `access` allows.
    pub async fn run(&self, sql: &str, access: Access) -> Result<QueryResult, SqlError> {
        let result = async {
            let statement = Self::parse(sql)?;
            let plan = self.plan_parsed(statement, access).await?;
            self.execute_unchecked(plan).await
        }
        .await;
        self.count(&result);
        result
    }

    /// Runs a plan made by [`SqlEngine::plan`] (possibly with parameters bound since).
    pub async fn execute(&self, plan: LogicalPlan) -> Result<QueryResult, SqlError> {
        verify_read_only(&plan)?;
        let result = self.execute_unchecked(plan).await;
        self.count(&result);
        result
    }

    fn count(&self, result: &Result<QueryResult, SqlError>) {
        self.queries.fetch_add(1, Ordering::Relaxed);
        if result.is_err() {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A query slot: an ordinary one, or, when all are taken, the slot
    /// reserved for key lookups if the plan is one, waiting at most the queue wait.
    async fn slot(&self, plan: &LogicalPlan) -> Result<OwnedSemaphorePermit, SqlError> {
        let busy = || SqlError::Busy(self.limits.max_concurrent);
        // Long scans may hold every ordinary slot; a key lookup then takes the
        // slot reserved for lookups instead of waiting behind them.
        match self.slots.clone().try_acquire_owned() {
            Ok(slot) => Ok(slot),
            Err(_) => {
                let queue = if tables::is_key_lookup(plan) { &self.lookup_slot } else { &self.slots };
                tokio::time::timeout(self.limits.queue_wait, queue.clone().acquire_owned())
                    .await
                    .map_err(|_| busy())?
                    .map_err(|_| busy())
            }
        }
    }

    /// Runs a plan and hands its batches over as they are computed, for the
    /// bulk paths (`COPY … TO STDOUT`, cursors): no row or byte limit, since
    /// nothing is held, and no time limit, since the client sets the pace.
    /// At most two batches wait between the plan and the reader, so memory
    /// stays bounded whatever the size of the answer; the query holds its
    /// slot until the stream is read to the end or dropped, and dropping it
    /// cancels the plan.
    pub async fn execute_stream(&self, plan: LogicalPlan) -> Result<QueryStream, SqlError> {
        verify_read_only(&plan)?;
        let result = async {
            let slot = self.slot(&plan).await?;
            let frame = self.ctx.execute_logical_plan(plan).await.map_err(SqlError::from_datafusion)?;
            let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
            let task_context = Arc::new(frame.task_ctx());
            let physical = frame.create_physical_plan().await.map_err(SqlError::from_datafusion)?;
            let physical = cooperative_joins(physical).map_err(SqlError::from_datafusion)?;
            let (sender, receiver) = tokio::sync::mpsc::channel(2);
            self.executor.spawn(async move {
                let _slot = slot;
                let mut stream = match datafusion::physical_plan::execute_stream(physical, task_context) {
                    Ok(stream) => stream,
                    Err(e) => {
                        let _ = sender.send(Err(SqlError::from_datafusion(e))).await;
                        return;
                    }
                };
                while let Some(batch) = stream.next().await {
                    let failed = batch.is_err();
                    // A send fails when the reader is gone: stop, which drops the plan.
                    if sender.send(batch.map_err(SqlError::from_datafusion)).await.is_err() || failed {
                        return;
                    }
                }
            });
            Ok(QueryStream { schema, receiver })
        }
        .await;
        self.queries.fetch_add(1, Ordering::Relaxed);
        if result.is_err() {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    async fn execute_unchecked(&self, plan: LogicalPlan) -> Result<QueryResult, SqlError> {
        let _slot = self.slot(&plan).await?;
        let ctx = self.ctx.clone();
        let (max_rows, max_bytes) = (self.limits.max_rows, self.limits.max_result_bytes);
        let started = Instant::now();
        // Run on the execution threads so the timeout below, and every other
        // connection, is served even while operators keep those threads busy;
        // aborting the task drops the stream, which cancels the plan.
        let task = self.executor.spawn(async move {
            let frame = ctx.execute_logical_plan(plan).await.map_err(SqlError::from_datafusion)?;
            let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
            let task_context = Arc::new(frame.task_ctx());
            let physical = frame.create_physical_plan().await.map_err(SqlError::from_datafusion)?;
            let physical = cooperative_joins(physical).map_err(SqlError::from_datafusion)?;
            let mut stream =
                datafusion::physical_plan::execute_stream(physical, task_context).map_err(SqlError::from_datafusion)?;
            let mut batches = Vec::new();
            let (mut rows, mut bytes) = (0usize, 0usize);
            while let Some(batch) = stream.next().await {
                let batch = batch.map_err(SqlError::from_datafusion)?;
                rows += batch.num_rows();
                bytes += batch.get_array_memory_size();
                if rows > max_rows {
                    return Err(SqlError::TooManyRows(max_rows));
                }
                if bytes > max_bytes {
                    return Err(SqlError::TooLarge(max_bytes));
                }
                batches.push(batch);
            }
            Ok(QueryResult { schema, batches })
        });
        let abort = task.abort_handle();
        match tokio::time::timeout(self.limits.timeout, task).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(SqlError::Execution(format!("query task failed: {join}"))),
            Err(_) => {
                abort.abort();
                tracing::warn!(elapsed = ?started.elapsed(), "SQL query cancelled by the time limit");
                Err(SqlError::Timeout(self.limits.timeout))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (issue 13): a cancelled `SELECT count(*) FROM customers a,
    /// customers b, customers c` kept its thread, because the cross join
    /// emitted batches without ever returning `Pending`.
    #[tokio::test]
    async fn cancelled_cross_joins_yield_because_every_join_is_cooperative() {
        let ctx = SessionContext::new();
        let sql = "SELECT count(*) FROM (VALUES (1), (2)) a(x), (VALUES (3)) b(y), (VALUES (4), (5)) c(z) \
                   WHERE a.x + b.y + c.z > 0";
        let frame = ctx.sql(sql).await.unwrap();
        let task_context = Arc::new(frame.task_ctx());
        let physical = cooperative_joins(frame.create_physical_plan().await.unwrap()).unwrap();
        let shown = datafusion::physical_plan::displayable(physical.as_ref()).indent(true).to_string();
        let lines: Vec<&str> = shown.lines().collect();
        let joins: Vec<usize> = (0..lines.len()).filter(|&i| lines[i].contains("Join")).collect();
        assert!(!joins.is_empty(), "{shown}");
        for i in joins {
            assert!(
                i > 0 && lines[i - 1].contains("CooperativeExec"),
                "a join without a yield point above it:\n{shown}"
            );
        }
        // The wrapped plan still computes the same answer.
        let batches = datafusion::physical_plan::collect(physical, task_context).await.unwrap();
        let count = batches[0].column(0).as_any().downcast_ref::<arrow::array::Int64Array>().unwrap().value(0);
        assert_eq!(count, 4);
    }
}
