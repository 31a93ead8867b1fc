//! `patron serve`: the HTTP API over the streaming engine (DESIGN.md §5).
//!
//! - `POST /v1/events`: one JSON object, a JSON array, or NDJSON. Decoding and
//!   validation run off the async workers; valid events are kept even when
//!   others in the body are rejected; the answer comes after the accepted
//!   events are durable and applied.
//! - `GET /v1/customers/{id}`: the `customers` columns, scored on read with the
//!   current models at the current watermark (O(1)), plus `recommendations`.
//! - `GET /v1/customers/{id}/recommendations?k=10&new_only=false`.
//! - `POST /v1/admin/refit`, `POST /v1/admin/recommendations/refresh`,
//!   `GET /metrics`, `GET /health`, `GET /ready`.
//! - `GET /`: the status page (query role), see [`crate::status_page`].
//! - `GET /v1/admin/rejected?limit=N`: the newest rejected events with their
//!   reasons (bounded store; the SQL issue will also expose it as `rejected_events`).
//!
//! Errors are `{"error":{"code":…,"message":…}}` with a stable code.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use patron_model::{CurrencyTable, CustomerId, Timestamp};
use patron_sql::pg::{PasswordCheck, PgHandlers};
use patron_sql::{LiveSource, RejectedRow, ResultFormat, SqlEngine, SqlError, SqlLimits};
use patron_state::customer_row::{RowClock, customer_batch};
use patron_state::{Chunk, Groups};
use patron_state::{Engine, EngineConfig, ScoringConfig};
use serde_json::{Value, json};

use crate::cli::{ListenArgs, ServeArgs};
use crate::config::{Auth, Config, Role, Verdict};
use crate::events::{RejectedEvent, RejectedStore, post_events};

pub(crate) struct AppState {
    engine: Arc<Engine>,
    auth: Auth,
    currencies: CurrencyTable,
    ingest: IngestLimits,
    /// Request bytes being received, decoded or made durable.
    inflight_bytes: AtomicU64,
    rejected: Arc<RejectedStore>,
    sql: Arc<SqlEngine>,
    started: Instant,
    /// Where pgwire listens, once bound (the status page's psql line).
    pg_addr: std::sync::OnceLock<SocketAddr>,
}

/// Bounds of the ingest endpoint.
#[derive(Clone, Copy, Debug)]
pub(crate) struct IngestLimits {
    /// Largest body, bytes.
    pub(crate) body_limit: usize,
    /// Cap on request bytes being received, decoded or made durable.
    pub(crate) max_inflight_bytes: u64,
}

/// What the SQL tables read: the engine and the rejected-event store.
pub(crate) struct LiveView {
    engine: Arc<Engine>,
    rejected: Arc<RejectedStore>,
    base: patron_model::Currency,
}

impl LiveView {
    /// A view of an engine with no rejected events (offline queries).
    pub(crate) fn new(engine: Arc<Engine>, base: patron_model::Currency) -> Self {
        Self { engine, rejected: Arc::new(RejectedStore::default()), base }
    }
}

impl LiveSource for LiveView {
    fn engine(&self) -> &Engine {
        &self.engine
    }

    fn base_currency(&self) -> patron_model::Currency {
        self.base
    }

    fn rejected(&self) -> Vec<RejectedRow> {
        let mut rows: Vec<RejectedRow> = self
            .rejected
            .newest(crate::events::REJECTED_KEPT)
            .into_iter()
            .map(|r| RejectedRow {
                received_at: r.received_at,
                source: r.source.to_owned(),
                position: r.position,
                error: r.error,
                raw: r.raw,
            })
            .collect();
        rows.reverse();
        rows
    }

    fn extra_stats(&self) -> Vec<(String, f64)> {
        vec![("events_rejected".to_owned(), self.rejected.total() as f64)]
    }
}

pub(crate) fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({"error": {"code": code, "message": message.into()}}))).into_response()
}

pub(crate) fn with_retry_after(mut response: Response, seconds: u64) -> Response {
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}

/// Routes, each group behind the role it needs; `/health` and `/ready` are open.
pub(crate) fn router(state: Arc<AppState>) -> Router {
    let guarded = |routes: Router<Arc<AppState>>, role: Role| {
        routes.route_layer(axum::middleware::from_fn_with_state((state.clone(), role), authorize))
    };
    Router::new()
        .merge(guarded(Router::new().route("/v1/events", post(post_events)), Role::Ingest))
        .merge(guarded(
            Router::new()
                .route("/v1/customers/{id}", get(get_customer))
                .route("/v1/customers/{id}/recommendations", get(get_recommendations))
                .route("/v1/sql", post(post_sql))
                .route("/metrics", get(metrics))
                .route("/", get(crate::status_page::page)),
            Role::Query,
        ))
        .merge(guarded(
            Router::new()
                .route("/v1/customers/{id}", axum::routing::delete(delete_customer))
                .route("/v1/admin/refit", post(post_refit))
                .route("/v1/admin/recommendations/refresh", post(post_refresh_recommendations))
                .route("/v1/admin/snapshot", post(post_snapshot))
                .route("/v1/admin/rejected", get(get_rejected)),
            Role::Admin,
        ))
        .route("/health", get(|| async { "ok\n" }))
        .route("/ready", get(ready))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not_found", "no such endpoint") })
        .with_state(state)
}

async fn authorize(
    State((state, role)): State<(Arc<AppState>, Role)>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let header = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let request_path = request.uri().path().to_owned();
    match state.auth.check(header, role) {
        Verdict::Allowed => next.run(request).await,
        Verdict::Unauthenticated => {
            let mut response = error(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "send Authorization: Bearer <token> with a configured token",
            );
            // A browser asks for credentials only on a Basic challenge: the status
            // page gets one (the token is the password), the API keeps Bearer.
            let challenge = if request_path == "/" { crate::status_page::CHALLENGE } else { "Bearer" };
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
            response
        }
        Verdict::Forbidden => error(StatusCode::FORBIDDEN, "forbidden", format!("this token lacks the {role:?} role")),
    }
}

/// `/ready`: 200 while the engine accepts events; 503 with the reason once a
/// shard has failed (fail-stop), so a load balancer stops sending traffic.
async fn ready(State(state): State<Arc<AppState>>) -> Response {
    match state.engine.failure() {
        None => "ready\n".into_response(),
        Some(failure) => error(StatusCode::SERVICE_UNAVAILABLE, "shard_failed", failure.to_string()),
    }
}

/// One row of a batch as a JSON object: numbers, strings, booleans, and
/// timestamps in RFC 3339 (UTC). Non-finite doubles and nulls are `null`. A
/// column of another type is an error (the caller answers 500), never a
/// made-up value in a 200.
fn row_json(batch: &arrow::record_batch::RecordBatch, row: usize) -> Result<serde_json::Map<String, Value>> {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{DataType, Float64Type, Int32Type, Int64Type, TimeUnit, TimestampMicrosecondType};
    let mut object = serde_json::Map::new();
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        let value = if column.is_null(row) {
            Value::Null
        } else {
            match column.data_type() {
                DataType::Utf8 => column.as_string::<i32>().value(row).into(),
                DataType::Utf8View => column.as_string_view().value(row).into(),
                DataType::Int64 => column.as_primitive::<Int64Type>().value(row).into(),
                DataType::Int32 => column.as_primitive::<Int32Type>().value(row).into(),
                DataType::Float64 => column.as_primitive::<Float64Type>().value(row).into(),
                DataType::Boolean => column.as_boolean().value(row).into(),
                DataType::Timestamp(TimeUnit::Microsecond, _) => {
                    let micros = column.as_primitive::<TimestampMicrosecondType>().value(row);
                    Timestamp::from_millis(micros.div_euclid(1000)).to_rfc3339().into()
                }
                other => bail!("column {} has type {other}, which the JSON view does not render", field.name()),
            }
        };
        object.insert(field.name().clone(), value);
    }
    Ok(object)
}

/// `GET /v1/customers/{id}`: the `customers` row of the one row definition
/// (`patron_state::customer_row`), scored on read with the current models at
/// the current watermark, plus `provisional` and the top recommendations.
async fn get_customer(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    let Ok(customer_id) = CustomerId::new(&id) else {
        return error(StatusCode::BAD_REQUEST, "invalid_customer_id", "customer ids are 1 to 256 bytes");
    };
    let Some(record) = state.engine.customer(&customer_id) else {
        return error(StatusCode::NOT_FOUND, "customer_not_found", format!("no customer {id:?}"));
    };
    let models = state.engine.models();
    let now = state.engine.now().unwrap_or_else(Timestamp::now);
    let minor = state.currencies.base.minor_per_major();
    // Scored on read: current to the second, with the models in use.
    let scores = record.score_input(now.day(), minor).and_then(|i| models.scorer.score(&i).ok());
    let mut row = Chunk::with_capacity(1);
    row.push(record.customer_id.as_str(), record.summary, scores, record.segments);
    let clock = RowClock { now, minor_per_major: minor, segments: state.engine.scoring_config().segments };
    let batch = match customer_batch(patron_model::customers_schema(), &row.view(Groups::ALL), &clock) {
        Ok(batch) => batch,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    };
    let mut object = match row_json(&batch, 0) {
        Ok(object) => object,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    };
    object.insert("provisional".to_owned(), models.provisional.into());
    object.insert(
        "recommendations".to_owned(),
        recommendation_rows(&state.engine, &customer_id, CUSTOMER_VIEW_RECOMMENDATIONS, false).into(),
    );
    axum::Json(Value::Object(object)).into_response()
}

/// Recommendations shown inside `GET /v1/customers/{id}`.
const CUSTOMER_VIEW_RECOMMENDATIONS: usize = 5;

/// Longest recommendation list served.
const MAX_RECOMMENDATIONS: usize = 100;

/// A customer's top `k` as rows of the `recommendations` table (empty for an unknown customer).
fn recommendation_rows(engine: &Engine, customer: &CustomerId, k: usize, new_only: bool) -> Vec<Value> {
    let Some(list) = engine.recommendations(customer, k, new_only) else { return Vec::new() };
    let model = engine.recs_model();
    list.iter()
        .enumerate()
        .map(|(i, r)| {
            json!({
                "customer_id": customer.as_str(),
                "rank": i + 1,
                "product_id": engine.catalog().name(r.product).map(|p| p.as_str().to_owned()),
                "score": r.score,
                "reason": r.reason.label(engine.catalog(), &model),
            })
        })
        .collect()
}

/// `GET /v1/customers/{id}/recommendations?k=10&new_only=false`.
async fn get_recommendations(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    axum::extract::Query(query): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Response {
    let Ok(customer_id) = CustomerId::new(&id) else {
        return error(StatusCode::BAD_REQUEST, "invalid_customer_id", "customer ids are 1 to 256 bytes");
    };
    let k = match query.get("k").map(|k| k.parse::<usize>()) {
        None => 10,
        Some(Ok(k)) if (1..=MAX_RECOMMENDATIONS).contains(&k) => k,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_k",
                format!("k must be a whole number from 1 to {MAX_RECOMMENDATIONS}"),
            );
        }
    };
    let new_only = match query.get("new_only").map(String::as_str) {
        None | Some("false") | Some("0") => false,
        Some("true") | Some("1") => true,
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_new_only",
                format!("new_only must be true or false, got {other:?}"),
            );
        }
    };
    if state.engine.customer(&customer_id).is_none() {
        return error(StatusCode::NOT_FOUND, "customer_not_found", format!("no customer {id:?}"));
    }
    let rows = recommendation_rows(&state.engine, &customer_id, k, new_only);
    axum::Json(json!({"customer_id": customer_id.as_str(), "k": k, "new_only": new_only, "recommendations": rows}))
        .into_response()
}

/// Longest SQL text accepted.
const MAX_SQL_BYTES: usize = 1 << 20;

/// `POST /v1/sql`: the body is one SQL statement (read-only, bounded; see
/// `patron_sql`); the answer is JSON, CSV, Arrow IPC or a text table by `Accept`.
async fn post_sql(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    // SQL text is not counted against the ingest budget; the same reader gives
    // it the body timeouts and drains an oversized body before answering.
    let body = match crate::events::read_body(body, MAX_SQL_BYTES, None, None).await {
        Ok(body) => body,
        Err(crate::events::BodyError::TooLarge(_)) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "sql_too_long",
                format!("SQL statements are limited to {} MiB", MAX_SQL_BYTES >> 20),
            );
        }
        Err(other) => return other.into_response(),
    };
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let Some(format) = ResultFormat::from_accept(accept) else {
        return error(
            StatusCode::NOT_ACCEPTABLE,
            "not_acceptable",
            "Accept one of application/json, text/csv, application/vnd.apache.arrow.stream, text/plain",
        );
    };
    let Ok(sql) = std::str::from_utf8(&body) else {
        return error(StatusCode::BAD_REQUEST, "invalid_utf8", "the SQL body must be UTF-8 text");
    };
    let access = state.auth.sql_access(headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()));
    let encoded = match state.sql.run(sql, access.unwrap_or(patron_sql::Access::Query)).await {
        Ok(result) => patron_sql::encode(&result, format),
        Err(e) => Err(e),
    };
    match encoded {
        Ok(bytes) => ([(header::CONTENT_TYPE, format.content_type())], bytes).into_response(),
        Err(e) => sql_error(&e),
    }
}

/// The HTTP answer to a failed query.
fn sql_error(e: &SqlError) -> Response {
    let (status, code) = match e {
        SqlError::Refused(_) => (StatusCode::FORBIDDEN, "read_only"),
        SqlError::Empty | SqlError::SeveralStatements(_) | SqlError::Syntax(_) => {
            (StatusCode::BAD_REQUEST, "sql_syntax")
        }
        SqlError::Plan(_) => (StatusCode::BAD_REQUEST, "sql_invalid"),
        SqlError::Timeout(_) => (StatusCode::UNPROCESSABLE_ENTITY, "query_timeout"),
        SqlError::TooManyRows(_) => (StatusCode::UNPROCESSABLE_ENTITY, "too_many_rows"),
        SqlError::TooLarge(_) => (StatusCode::UNPROCESSABLE_ENTITY, "result_too_large"),
        SqlError::TooComplex(_) => (StatusCode::BAD_REQUEST, "sql_too_complex"),
        SqlError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
        SqlError::Memory(_) => (StatusCode::UNPROCESSABLE_ENTITY, "query_memory"),
        SqlError::Busy(_) => {
            return with_retry_after(error(StatusCode::SERVICE_UNAVAILABLE, "sql_busy", e.to_string()), 1);
        }
        SqlError::Execution(_) | SqlError::Threads(_) => (StatusCode::INTERNAL_SERVER_ERROR, "sql_failed"),
    };
    error(status, code, e.to_string())
}

/// The newest rejected events (at most `limit`, default 100), newest first.
async fn get_rejected(
    State(state): State<Arc<AppState>>,
    axum::extract::Query(query): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Response {
    let limit = query.get("limit").and_then(|l| l.parse::<usize>().ok()).unwrap_or(100);
    let rows: Vec<Value> = state
        .rejected
        .newest(limit)
        .into_iter()
        .map(|r| {
            json!({"received_at": r.received_at.to_rfc3339(), "source": r.source, "position": r.position,
                   "error": r.error, "raw": r.raw})
        })
        .collect();
    axum::Json(json!({"rejected": rows, "total": state.rejected.total()})).into_response()
}

/// Runs an engine operation on the blocking pool (it may fsync or fit for a
/// while). An engine error becomes `failure` (a 503 carries Retry-After); a
/// panicked task becomes 500.
async fn on_engine<T: Send + 'static>(
    state: &AppState,
    operation: impl FnOnce(&Engine) -> patron_state::Result<T> + Send + 'static,
    failure: (StatusCode, &'static str),
) -> Result<T, Response> {
    let engine = state.engine.clone();
    match tokio::task::spawn_blocking(move || operation(&engine)).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => {
            let response = error(failure.0, failure.1, e.to_string());
            Err(if failure.0 == StatusCode::SERVICE_UNAVAILABLE { with_retry_after(response, 5) } else { response })
        }
        Err(e) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())),
    }
}

/// Erasure (admin): the customer leaves memory, every snapshot and every log
/// segment; rejected events that mention them are dropped from memory too.
async fn delete_customer(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    let Ok(customer_id) = CustomerId::new(&id) else {
        return error(StatusCode::BAD_REQUEST, "invalid_customer_id", "customer ids are 1 to 256 bytes");
    };
    let target = customer_id.clone();
    let existed =
        match on_engine(&state, move |e| e.erase(&target), (StatusCode::SERVICE_UNAVAILABLE, "erase_failed")).await {
            Ok(existed) => existed,
            Err(response) => return response,
        };
    state.rejected.erase(customer_id.as_str());
    if existed {
        axum::Json(json!({"erased": true, "customer_id": customer_id.as_str()})).into_response()
    } else {
        error(StatusCode::NOT_FOUND, "customer_not_found", format!("no customer {id:?} (nothing left to erase)"))
    }
}

async fn post_snapshot(State(state): State<Arc<AppState>>) -> Response {
    let started = Instant::now();
    match on_engine(&state, Engine::snapshot, (StatusCode::SERVICE_UNAVAILABLE, "snapshot_failed")).await {
        Ok(report) => axum::Json(json!({
            "path": report.path.display().to_string(), "next_seq": report.next_seq, "customers": report.customers,
            "bytes": report.bytes, "removed_segments": report.removed_segments, "seconds": started.elapsed().as_secs_f64(),
        }))
        .into_response(),
        Err(response) => response,
    }
}

/// Recomputes every product's neighbours now (the periodic refit does it too).
async fn post_refresh_recommendations(State(state): State<Arc<AppState>>) -> Response {
    let started = Instant::now();
    let refreshed =
        on_engine(&state, |e| Ok(e.refresh_recommendations()), (StatusCode::INTERNAL_SERVER_ERROR, "internal"));
    match refreshed.await {
        Ok(model) => axum::Json(json!({
            "products": model.products(),
            "neighbour_entries": model.neighbour_entries(),
            "seconds": started.elapsed().as_secs_f64(),
        }))
        .into_response(),
        Err(response) => response,
    }
}

async fn post_refit(State(state): State<Arc<AppState>>) -> Response {
    let started = Instant::now();
    match on_engine(&state, Engine::refit, (StatusCode::UNPROCESSABLE_ENTITY, "fit_failed")).await {
        Ok(models) => {
            let mut body = models.fits.as_ref().map_or(json!({}), crate::output::model_params_json);
            body["seconds"] = started.elapsed().as_secs_f64().into();
            axum::Json(body).into_response()
        }
        Err(response) => response,
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    use std::fmt::Write;
    let e = &state.engine;
    let s = e.stats();
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: f64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
    };
    metric("patron_events_accepted_total", "counter", "Events applied.", s.accepted.load(Ordering::Relaxed) as f64);
    metric(
        "patron_events_duplicate_total",
        "counter",
        "Events ignored as duplicates.",
        s.duplicates.load(Ordering::Relaxed) as f64,
    );
    metric(
        "patron_events_rejected_total",
        "counter",
        "Events rejected by validation or refused as beyond the deduplication horizon.",
        state.rejected.total() as f64,
    );
    let (remembered, dedup_bytes) = e.dedup_usage();
    metric("patron_dedup_remembered_events", "gauge", "Event ids remembered for deduplication.", remembered as f64);
    metric("patron_dedup_bytes", "gauge", "Memory of the deduplication indexes.", dedup_bytes as f64);
    metric(
        "patron_shard_queue_batches",
        "gauge",
        "Batches waiting for shard writers.",
        s.queued_batches.load(Ordering::Relaxed) as f64,
    );
    metric("patron_refits_total", "counter", "Completed model refits.", s.refits.load(Ordering::Relaxed) as f64);
    metric(
        "patron_last_refit_seconds",
        "gauge",
        "Duration of the latest refit.",
        s.last_refit_micros.load(Ordering::Relaxed) as f64 / 1e6,
    );
    metric(
        "patron_recommendation_refreshes_total",
        "counter",
        "Completed refreshes of the product neighbours.",
        s.recs_refreshes.load(Ordering::Relaxed) as f64,
    );
    metric(
        "patron_last_recommendation_refresh_seconds",
        "gauge",
        "Duration of the latest neighbour refresh.",
        s.last_recs_refresh_micros.load(Ordering::Relaxed) as f64 / 1e6,
    );
    metric(
        "patron_product_stats_bytes",
        "gauge",
        "Memory held by the product statistics (co-purchase counters as of the last recommendation refresh).",
        state.engine.item_stats_memory_bytes() as f64,
    );
    metric(
        "patron_product_stats_batches_behind",
        "gauge",
        "Batches of acknowledged purchases the product statistics thread has yet to apply.",
        state.engine.item_stats_behind() as f64,
    );
    metric("patron_uptime_seconds", "gauge", "Seconds since start.", state.started.elapsed().as_secs_f64());
    metric(
        "patron_inflight_request_bytes",
        "gauge",
        "Request bytes being decoded or made durable.",
        state.inflight_bytes.load(Ordering::Relaxed) as f64,
    );
    if let Some(w) = e.wal_stats() {
        metric(
            "patron_wal_syncs_total",
            "counter",
            "fdatasync calls of the write-ahead log.",
            w.syncs.load(Ordering::Relaxed) as f64,
        );
        metric(
            "patron_wal_bytes_total",
            "counter",
            "Bytes written to the log.",
            w.bytes.load(Ordering::Relaxed) as f64,
        );
        metric(
            "patron_wal_sync_seconds_total",
            "counter",
            "Time spent in fdatasync.",
            w.sync_nanos.load(Ordering::Relaxed) as f64 / 1e9,
        );
        metric(
            "patron_wal_last_sync_seconds",
            "gauge",
            "Latest fdatasync duration.",
            w.last_sync_nanos.load(Ordering::Relaxed) as f64 / 1e9,
        );
        metric(
            "patron_wal_max_sync_seconds",
            "gauge",
            "Slowest fdatasync since start (a log sync holds back every acknowledgement).",
            w.max_sync_nanos.load(Ordering::Relaxed) as f64 / 1e9,
        );
    }
    let (queries, failed) = state.sql.query_counts();
    metric("patron_sql_queries_total", "counter", "SQL queries run (all front ends).", queries as f64);
    metric("patron_sql_queries_failed_total", "counter", "SQL queries refused or failed.", failed as f64);
    let scans = state.sql.counters();
    metric(
        "patron_sql_rows_read_total",
        "counter",
        "Customer and product records read by SQL scans.",
        scans.rows_read.load(Ordering::Relaxed) as f64,
    );
    metric(
        "patron_sql_max_shard_lock_seconds",
        "gauge",
        "Longest time one SQL scan held a shard's read lock (ingestion into that shard waits meanwhile).",
        scans.max_lock_micros.load(Ordering::Relaxed) as f64 / 1e6,
    );
    let _ = writeln!(out, "# HELP patron_shard_customers Customers per shard.\n# TYPE patron_shard_customers gauge");
    for (i, n) in e.shard_sizes().iter().enumerate() {
        let _ = writeln!(out, "patron_shard_customers{{shard=\"{i}\"}} {n}");
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

/// Installs the log subscriber (RUST_LOG, default `default`).
pub(crate) fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default.into());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

/// The HTTP, pgwire and Flight SQL addresses, each checked by [`listen_addr`].
pub(crate) fn listen_addrs(listen: &ListenArgs, auth: &Auth) -> Result<(SocketAddr, SocketAddr, SocketAddr)> {
    Ok((
        listen_addr(listen.http, "--http", auth)?,
        listen_addr(listen.pg, "--pg", auth)?,
        listen_addr(listen.flight, "--flight", auth)?,
    ))
}

/// A listen address (`flag` names it in the refusal); without auth tokens only
/// loopback addresses are allowed.
pub(crate) fn listen_addr(addr: SocketAddr, flag: &str, auth: &Auth) -> Result<SocketAddr> {
    if !addr.ip().is_loopback() && !auth.enabled() {
        bail!(
            "refusing to listen on {flag} {addr} without auth tokens: anyone who can reach it could write and read customer data; add [[auth.tokens]] to patron.toml (--config) or bind 127.0.0.1"
        );
    }
    Ok(addr)
}

/// Opens the engine on `data_dir`: recovery first, then a fit if there is data.
pub(crate) fn open_engine(
    data_dir: &std::path::Path,
    base: patron_model::Currency,
    model: patron_score::PurchaseModel,
    shards: Option<usize>,
    log_queue: Option<usize>,
    clock: patron_state::Clock,
    dedup_horizon: crate::units::DedupHorizon,
) -> Result<Engine> {
    let mut config = EngineConfig::new(data_dir);
    config.clock = clock;
    config.dedup_horizon_days = dedup_horizon.0;
    if let Some(depth) = log_queue {
        config.wal.queue_depth = depth.max(1);
    }
    config.currencies = CurrencyTable::only(base);
    config.scoring = ScoringConfig { model, ..ScoringConfig::default() };
    if let Some(shards) = shards {
        config.shards = shards;
    }
    let opened = Instant::now();
    let (engine, report) = Engine::open(config).with_context(|| format!("cannot open {}", data_dir.display()))?;
    tracing::info!(
        events = report.events,
        records = report.records,
        segments = report.segments,
        seconds = opened.elapsed().as_secs_f64(),
        replay_seconds = report.replay_micros as f64 / 1e6,
        "recovered {} events from the write-ahead log (replayed in {:.2} s, {:.0} events/s)",
        report.events,
        report.replay_micros as f64 / 1e6,
        report.events as f64 * 1e6 / report.replay_micros.max(1) as f64
    );
    if let Some(torn) = &report.torn_tail {
        tracing::warn!(
            "dropped a torn tail of {} bytes at offset {} of {} ({}); it was never acknowledged",
            torn.dropped_bytes,
            torn.offset,
            torn.segment.display(),
            torn.reason
        );
    }
    for q in engine.quarantined() {
        tracing::warn!(
            seq = q.seq,
            index = q.index,
            "a logged {} was not applied and was copied to {}: {}",
            if q.index.is_some() { "event" } else { "record" },
            q.file.display(),
            q.reason
        );
    }
    if report.events > 0 {
        match engine.refit() {
            Ok(_) => tracing::info!("models fitted on the recovered customers"),
            Err(e) => tracing::warn!("no fit yet ({e}); scores are provisional"),
        }
    }
    Ok(engine)
}

/// Shared state of the HTTP handlers.
pub(crate) fn app_state(
    engine: Engine,
    base: patron_model::Currency,
    ingest: IngestLimits,
    auth: Auth,
    sql_limits: SqlLimits,
) -> Result<Arc<AppState>> {
    let engine = Arc::new(engine);
    let rejected = Arc::new(RejectedStore::default());
    // What recovery quarantined is shown beside the rejected events, so an
    // operator finds it where bad input is looked for.
    let quarantined = engine.quarantined();
    rejected.record(
        quarantined.len() as u64,
        quarantined.into_iter().map(|q| {
            let raw = std::fs::read(&q.file).unwrap_or_default();
            let error = format!(
                "quarantined at recovery (log record {}{}): {}; copy in {}",
                q.seq,
                q.index.map_or_else(String::new, |i| format!(", event {i}")),
                q.reason,
                q.file.display()
            );
            RejectedEvent::new("recovery", q.seq, error, &raw)
        }),
    );
    let view = LiveView { engine: engine.clone(), rejected: rejected.clone(), base };
    let sql = Arc::new(SqlEngine::new(Arc::new(view), sql_limits).context("cannot set up the SQL session")?);
    Ok(Arc::new(AppState {
        engine,
        auth,
        currencies: CurrencyTable::only(base),
        ingest,
        inflight_bytes: AtomicU64::new(0),
        rejected,
        sql,
        started: Instant::now(),
        pg_addr: std::sync::OnceLock::new(),
    }))
}

impl AppState {
    /// The SQL session over the engine.
    pub(crate) fn sql(&self) -> &Arc<SqlEngine> {
        &self.sql
    }

    /// The engine behind the API.
    pub(crate) fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Bounds of the ingest endpoint.
    pub(crate) fn ingest_limits(&self) -> IngestLimits {
        self.ingest
    }

    /// Request bytes in flight (see [`IngestLimits::max_inflight_bytes`]).
    pub(crate) fn inflight_bytes(&self) -> &AtomicU64 {
        &self.inflight_bytes
    }

    /// The engine's base currency and rates.
    pub(crate) fn currencies(&self) -> &CurrencyTable {
        &self.currencies
    }

    /// Rejected events kept for inspection.
    pub(crate) fn rejected(&self) -> &RejectedStore {
        &self.rejected
    }

    /// Where pgwire listens, when it does.
    pub(crate) fn pg_addr(&self) -> Option<SocketAddr> {
        self.pg_addr.get().copied()
    }
}

/// Serves the API on `listener` until `shutdown` resolves, refitting every
/// `refit_every` and snapshotting every `snapshot_every` when new events
/// arrived, and snapshotting once more on the way out.
pub(crate) async fn serve(
    state: Arc<AppState>,
    listener: tokio::net::TcpListener,
    sql_listeners: Option<SqlListeners>,
    refit_every: Duration,
    snapshot_every: Duration,
    tls: Option<crate::tls::Tls>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let (sql_stop, sql_stopped) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut stopped = sql_stopped.clone();
        async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        }
    };
    let mut sql_tasks = Vec::new();
    if let Some(l) = sql_listeners {
        if let Ok(addr) = l.pg.local_addr() {
            let _ = state.pg_addr.set(addr);
        }
        let (pg_tls, flight_tls) = (tls.as_ref().map(|t| t.pg.clone()), tls.as_ref().map(|t| t.flight.clone()));
        sql_tasks.push(tokio::spawn(patron_sql::pg::serve(l.pg, l.pg_handlers, pg_tls, stopped())));
        let flight = patron_sql::flight::serve(l.flight, l.flight_service, flight_tls, stopped());
        sql_tasks.push(tokio::spawn(async move {
            if let Err(e) = flight.await {
                tracing::warn!("Flight SQL stopped: {e}");
            }
        }));
    }
    let engine = state.engine.clone();
    let snapshots = tokio::spawn(async move {
        let mut last_seen = 0;
        loop {
            tokio::time::sleep(snapshot_every).await;
            let accepted = engine.stats().accepted.load(Ordering::Relaxed);
            if accepted == last_seen {
                continue;
            }
            last_seen = accepted;
            let engine = engine.clone();
            match tokio::task::spawn_blocking(move || engine.snapshot()).await {
                Ok(Ok(r)) => {
                    tracing::info!(customers = r.customers, removed_segments = r.removed_segments, "snapshot written")
                }
                Ok(Err(e)) => tracing::warn!("periodic snapshot failed: {e}"),
                Err(e) => tracing::warn!("periodic snapshot panicked: {e}"),
            }
        }
    });
    let engine = state.engine.clone();
    let refits = tokio::spawn(async move {
        let mut last_seen = u64::MAX;
        loop {
            tokio::time::sleep(refit_every).await;
            let accepted = engine.stats().accepted.load(Ordering::Relaxed);
            if accepted == last_seen || accepted == 0 {
                continue;
            }
            last_seen = accepted;
            let engine = engine.clone();
            match tokio::task::spawn_blocking(move || engine.refit()).await {
                Ok(Ok(_)) => tracing::info!("periodic refit done"),
                Ok(Err(e)) => tracing::warn!("periodic refit failed: {e}"),
                Err(e) => tracing::warn!("periodic refit panicked: {e}"),
            }
        }
    });
    crate::http_listen::serve_http(listener, router(state.clone()), tls.map(|t| t.http), shutdown).await;
    let _ = sql_stop.send(true);
    for task in sql_tasks {
        let _ = task.await;
    }
    refits.abort();
    snapshots.abort();
    let engine = state.engine.clone();
    match tokio::task::spawn_blocking(move || engine.snapshot()).await {
        Ok(Ok(r)) => tracing::info!(customers = r.customers, "final snapshot written"),
        Ok(Err(e)) => tracing::warn!("final snapshot failed (the log still has every event): {e}"),
        Err(e) => tracing::warn!("final snapshot panicked: {e}"),
    }
    Ok(())
}

/// Opens the engine (recovery first), then listens until Ctrl-C or SIGTERM.
pub(crate) fn run(args: &ServeArgs) -> Result<()> {
    init_logging("info");
    let config = args.config.as_deref().map(Config::load).transpose()?.unwrap_or_default();
    let auth = Auth::new(&config.auth);
    let (addr, pg_addr, flight_addr) = listen_addrs(&args.listen, &auth)?;
    let tls = match &config.tls {
        Some(t) => Some(crate::tls::Tls::load(&t.cert, &t.key).context("[tls] in the configuration")?),
        None => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let base = patron_model::Currency::from_code(&args.currency)
        .with_context(|| format!("--currency {:?} is not an ISO 4217 code Patron knows", args.currency))?;
    let engine = open_engine(
        &args.data_dir,
        base,
        args.model.into(),
        args.shards,
        args.log_queue,
        args.clock.into(),
        args.dedup_horizon,
    )?;
    if auth.enabled() {
        tracing::info!("auth: {} bearer tokens configured", config.auth.tokens.len());
    } else {
        tracing::warn!("no auth tokens configured: accepting every request, on loopback {addr} only");
    }
    let password_check = pg_password_check(&auth);
    let limits = SqlLimits {
        memory_bytes: args.sql_memory,
        timeout: args.sql_timeout,
        max_rows: args.sql_max_rows,
        max_result_bytes: args.sql_max_result_bytes,
        max_concurrent: args.sql_concurrency.max(1),
        ..SqlLimits::default()
    };
    let ingest = IngestLimits { body_limit: args.body_limit, max_inflight_bytes: args.max_inflight_bytes };
    let state = app_state(engine, base, ingest, auth, limits)?;
    let runtime = runtime()?;
    let (refit_every, snapshot_every) = (args.refit_interval, args.snapshot_interval);
    runtime.block_on(async move {
        let pg = SqlListeners::bind(pg_addr, flight_addr, &state, password_check).await?;
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
        println!("{}", pg.banner());
        println!("listening on {scheme}://{}", listener.local_addr()?);
        use std::io::Write;
        let _ = std::io::stdout().flush();
        serve(state, listener, Some(pg), refit_every, snapshot_every, tls, shutdown_signal()).await?;
        tracing::info!("shut down: queued events were written and applied before exit");
        anyhow::Ok(())
    })
}

/// The pgwire password rule: a token with the `query` role (any user name),
/// whose roles decide whether `rejected_events` is readable;
/// `None` (no password asked) when no tokens are configured.
pub(crate) fn pg_password_check(auth: &Auth) -> Option<PasswordCheck> {
    auth.enabled().then(|| {
        let auth = auth.clone();
        Arc::new(move |password: &str| auth.sql_access_of_token(password)) as PasswordCheck
    })
}

/// The SQL listeners of a server: PostgreSQL wire protocol and Flight SQL.
pub(crate) struct SqlListeners {
    pg: tokio::net::TcpListener,
    pg_handlers: Arc<PgHandlers>,
    flight: tokio::net::TcpListener,
    flight_service: patron_sql::flight::PatronFlightSql,
}

impl SqlListeners {
    /// Binds both addresses and prepares the front ends over the state's SQL session.
    pub(crate) async fn bind(
        pg_addr: SocketAddr,
        flight_addr: SocketAddr,
        state: &AppState,
        check: Option<PasswordCheck>,
    ) -> Result<Self> {
        let pg_handlers = Arc::new(
            PgHandlers::new(state.sql().clone(), state.auth.sql_tokens().as_deref()).context("cannot set up pgwire")?,
        );
        let flight_service = patron_sql::flight::PatronFlightSql::new(state.sql().clone(), check);
        let pg = tokio::net::TcpListener::bind(pg_addr)
            .await
            .with_context(|| format!("cannot listen for pgwire on {pg_addr}"))?;
        let flight = tokio::net::TcpListener::bind(flight_addr)
            .await
            .with_context(|| format!("cannot listen for Flight SQL on {flight_addr}"))?;
        Ok(Self { pg, pg_handlers, flight, flight_service })
    }

    /// The bound pgwire address.
    pub(crate) fn pg_addr(&self) -> Result<SocketAddr> {
        Ok(self.pg.local_addr()?)
    }

    /// The lines printed at startup: where SQL clients connect.
    pub(crate) fn banner(&self) -> String {
        let pg = match self.pg.local_addr() {
            Ok(a) => format!("pgwire on {a} (psql -h {} -p {} -U patron)", a.ip(), a.port()),
            Err(e) => format!("pgwire address unknown: {e}"),
        };
        let flight = match self.flight.local_addr() {
            Ok(a) => format!("flight-sql on {a} (grpc://{a})"),
            Err(e) => format!("flight-sql address unknown: {e}"),
        };
        format!("{pg}\n{flight}")
    }
}

/// The tokio runtime of every command that runs SQL: its threads get
/// [`patron_sql::SQL_THREAD_STACK_BYTES`] of stack, because parsing, planning
/// and evaluating expressions recurse (issue 12: a 1,200-term sum overflowed
/// the default 2 MiB and aborted the process).
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(patron_sql::SQL_THREAD_STACK_BYTES)
        .build()
        .context("cannot start tokio")
}

/// Resolves on Ctrl-C or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! { () = ctrl_c => {}, () = terminate => {} }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{Method, Request};
    use patron_model::Currency;
    use tower::ServiceExt;

    const INGEST: &str = "ingest-token-0123456789";
    const QUERY: &str = "query-token-0123456789";
    const ADMIN: &str = "admin-token-0123456789";

    fn app_with_tokens(dir: &std::path::Path) -> Router {
        let config = Config::parse(&format!(
            "[[auth.tokens]]\ntoken = \"{INGEST}\"\nroles = [\"ingest\"]\n\
             [[auth.tokens]]\ntoken = \"{QUERY}\"\nroles = [\"query\"]\n\
             [[auth.tokens]]\ntoken = \"{ADMIN}\"\nroles = [\"admin\"]\n"
        ))
        .unwrap();
        let mut engine_config = EngineConfig::new(dir);
        engine_config.shards = 1;
        let (engine, _) = Engine::open(engine_config).unwrap();
        router(
            app_state(
                engine,
                Currency::from_code("EUR").unwrap(),
                IngestLimits { body_limit: 1 << 20, max_inflight_bytes: 1 << 30 },
                Auth::new(&config.auth),
                SqlLimits::default(),
            )
            .unwrap(),
        )
    }

    /// Every endpoint × {no token, unknown token, ingest, query, admin}.
    #[tokio::test]
    async fn auth_matrix() {
        let dir = tempfile::tempdir().unwrap();
        let app = app_with_tokens(dir.path());
        let event = r#"{"type":"purchase","event_id":"o1","customer_id":"c1","timestamp":"2025-01-01T00:00:00Z","revenue":"5"}"#;
        // (method, path, role needed; None = open)
        let endpoints = [
            (Method::POST, "/v1/events", Some(Role::Ingest)),
            (Method::GET, "/v1/customers/c1", Some(Role::Query)),
            (Method::GET, "/metrics", Some(Role::Query)),
            (Method::POST, "/v1/admin/refit", Some(Role::Admin)),
            (Method::GET, "/v1/customers/c1/recommendations", Some(Role::Query)),
            (Method::POST, "/v1/admin/recommendations/refresh", Some(Role::Admin)),
            (Method::GET, "/v1/admin/rejected", Some(Role::Admin)),
            (Method::POST, "/v1/admin/snapshot", Some(Role::Admin)),
            (Method::DELETE, "/v1/customers/c1", Some(Role::Admin)),
            (Method::GET, "/health", None),
            (Method::GET, "/ready", None),
        ];
        let callers: [(Option<&str>, &[Role]); 5] = [
            (None, &[]),
            (Some("not-a-configured-token-at-all"), &[]),
            (Some(INGEST), &[Role::Ingest]),
            (Some(QUERY), &[Role::Query]),
            (Some(ADMIN), &[Role::Ingest, Role::Query, Role::Admin]),
        ];
        for (method, path, needed) in &endpoints {
            for (token, roles) in &callers {
                let mut request = Request::builder().method(method.clone()).uri(*path);
                if let Some(t) = token {
                    request = request.header("Authorization", format!("Bearer {t}"));
                }
                let body = if *path == "/v1/events" { Body::from(event) } else { Body::empty() };
                let response = app.clone().oneshot(request.body(body).unwrap()).await.unwrap();
                let status = response.status();
                let what = format!("{method} {path} with {token:?}");
                match needed {
                    None => assert_eq!(status, StatusCode::OK, "{what}"),
                    Some(_) if token.is_none() || roles.is_empty() => {
                        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}");
                        assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer", "{what}");
                    }
                    Some(role) if roles.contains(role) => {
                        assert!(
                            status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
                            "{what}: {status}"
                        );
                    }
                    Some(_) => assert_eq!(status, StatusCode::FORBIDDEN, "{what}"),
                }
            }
        }
    }

    #[test]
    fn non_loopback_needs_tokens() {
        let (public, loopback) = ("0.0.0.0:8080".parse().unwrap(), "127.0.0.1:8080".parse().unwrap());
        let refusal = listen_addr(public, "--pg", &Auth::default()).unwrap_err().to_string();
        assert!(refusal.contains("without auth tokens") && refusal.contains("--pg 0.0.0.0:8080"), "{refusal}");
        assert!(listen_addr(loopback, "--http", &Auth::default()).is_ok());
        let config = Config::parse("[[auth.tokens]]\ntoken = \"0123456789abcdef\"\nroles = [\"admin\"]\n").unwrap();
        assert!(listen_addr(public, "--http", &Auth::new(&config.auth)).is_ok());
    }
}
