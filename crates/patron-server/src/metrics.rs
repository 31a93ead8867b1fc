//! `GET /metrics`: the server's state for Prometheus, in the OpenMetrics
//! text format, through the `prometheus-client` crate.
//!
//! Two kinds of figure:
//! - **Request latency**, observed as requests finish, into one histogram per
//!   route, method and status ([`time_request`]).
//! - **Engine state**, read from the engine's own counters at each scrape
//!   ([`EngineFigures`]). The engine keeps atomics that its threads bump
//!   anyway; copying them into a second set of metric objects on every event
//!   would add work to the hot path for nothing.
//!
//! A failed shard shows as `patron_ready 0` plus a `patron_failure` sample
//! whose labels say which shard and why, so that an alert can quote the cause.
//! A scrape walks the product statistics' segments under their read locks, so
//! it runs on the blocking pool.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::extract::{MatchedPath, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use patron_sql::SqlEngine;
use patron_state::Engine;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::http::{AppState, blocking, error};
use crate::rejected::RejectedStore;

/// The content type of the OpenMetrics text format.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Labels of a request's latency.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    /// The route's pattern (`/v1/customers/{id}`), never the raw path: one
    /// series per route, and no customer id in the metrics.
    route: String,
    status: u16,
}

type RequestHistograms = Family<RequestLabels, Histogram, fn() -> Histogram>;

/// Buckets from 50 µs to about 3.3 s, doubling: an acknowledgement waits for
/// an fsync (milliseconds), a lookup takes microseconds, a refit seconds.
fn request_histogram() -> Histogram {
    Histogram::new(exponential_buckets(50e-6, 2.0, 17))
}

/// The registry behind `/metrics`.
pub(crate) struct Metrics {
    registry: Registry,
    requests: RequestHistograms,
}

impl Metrics {
    /// The request histograms plus the engine's figures, read from `figures` at each scrape.
    pub(crate) fn new(figures: EngineFigures) -> Self {
        let mut registry = Registry::default();
        let requests = RequestHistograms::new_with_constructor(request_histogram);
        registry.register(
            "patron_http_request_duration_seconds",
            "Time from a matched request to its answer, by route, method and status.",
            requests.clone(),
        );
        registry.register_collector(Box::new(figures));
        Self { registry, requests }
    }

    /// The OpenMetrics text of every metric.
    fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::with_capacity(16 << 10);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Middleware: observes each matched request's latency.
pub(crate) async fn time_request(
    State(state): State<Arc<AppState>>,
    matched: Option<MatchedPath>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let route = matched.map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let response = next.run(request).await;
    let labels = RequestLabels { method, route, status: response.status().as_u16() };
    state.metrics.requests.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
    response
}

/// `GET /metrics`.
pub(crate) async fn get_metrics(State(state): State<Arc<AppState>>) -> Response {
    blocking(move || match state.metrics.encode() {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(e) => error(axum::http::StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    })
    .await
}

/// What the engine-state figures are read from at each scrape.
pub(crate) struct EngineFigures {
    pub(crate) engine: Arc<Engine>,
    pub(crate) rejected: Arc<RejectedStore>,
    pub(crate) sql: Arc<SqlEngine>,
    pub(crate) inflight_bytes: Arc<AtomicU64>,
    pub(crate) started: Instant,
}

impl std::fmt::Debug for EngineFigures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineFigures").finish_non_exhaustive()
    }
}

/// Writes one unlabelled sample with its HELP and TYPE lines.
fn sample(encoder: &mut DescriptorEncoder, name: &str, help: &str, metric: &impl EncodeMetric) -> std::fmt::Result {
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

/// A label value as OpenMetrics quotes it (the crate writes values as given).
fn label_value(text: &str) -> String {
    text.replace('\\', r"\\").replace('"', "\\\"").replace('\n', r"\n")
}

fn counter(value: u64) -> ConstCounter<u64> {
    ConstCounter::new(value)
}

fn gauge(value: u64) -> ConstGauge<i64> {
    ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX))
}

fn seconds(value: f64) -> ConstGauge<f64> {
    ConstGauge::new(value)
}

impl Collector for EngineFigures {
    fn encode(&self, mut out: DescriptorEncoder) -> std::fmt::Result {
        let e = &self.engine;
        let s = e.stats();
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let failure = e.failure();
        sample(
            &mut out,
            "patron_ready",
            "1 while the engine accepts events; 0 once a shard has failed (see patron_failure).",
            &gauge(u64::from(failure.is_none())),
        )?;
        if let Some(failure) = failure {
            let shard = failure.shard.map_or_else(|| "product_statistics".to_owned(), |s| s.to_string());
            let help = "A failed shard writer (fail-stop): ingest is refused until a restart recovers the log.";
            let gauge = gauge(1);
            let mut family = out.encode_descriptor("patron_failure", help, None, gauge.metric_type())?;
            let labels = [("shard", shard), ("reason", label_value(&failure.reason))];
            gauge.encode(family.encode_family(&labels)?)?;
        }
        sample(&mut out, "patron_events_accepted", "Events applied.", &counter(load(&s.accepted)))?;
        sample(&mut out, "patron_events_duplicate", "Events ignored as duplicates.", &counter(load(&s.duplicates)))?;
        sample(
            &mut out,
            "patron_events_rejected",
            "Events rejected by validation, refused as beyond the deduplication horizon, or campaign responses refused.",
            &counter(self.rejected.total()),
        )?;
        let (remembered, dedup_bytes) = e.dedup_usage();
        sample(
            &mut out,
            "patron_dedup_remembered_events",
            "Event ids remembered for deduplication.",
            &gauge(remembered as u64),
        )?;
        sample(&mut out, "patron_dedup_bytes", "Memory of the deduplication indexes.", &gauge(dedup_bytes as u64))?;
        sample(
            &mut out,
            "patron_shard_queue_batches",
            "Batches waiting for shard writers.",
            &gauge(load(&s.queued_batches)),
        )?;
        sample(&mut out, "patron_refits", "Completed model refits.", &counter(load(&s.refits)))?;
        sample(
            &mut out,
            "patron_last_refit_seconds",
            "Duration of the latest refit.",
            &seconds(load(&s.last_refit_micros) as f64 / 1e6),
        )?;
        sample(
            &mut out,
            "patron_recommendation_refreshes",
            "Completed refreshes of the product neighbours.",
            &counter(load(&s.recs_refreshes)),
        )?;
        sample(
            &mut out,
            "patron_last_recommendation_refresh_seconds",
            "Duration of the latest neighbour refresh.",
            &seconds(load(&s.last_recs_refresh_micros) as f64 / 1e6),
        )?;
        sample(
            &mut out,
            "patron_product_stats_bytes",
            "Memory held by the product statistics (co-purchase counters as of the last recommendation refresh).",
            &gauge(e.item_stats_memory_bytes() as u64),
        )?;
        sample(
            &mut out,
            "patron_product_stats_batches_behind",
            "Batches of acknowledged purchases the product statistics thread has yet to apply.",
            &gauge(e.item_stats_behind()),
        )?;
        sample(
            &mut out,
            "patron_uptime_seconds",
            "Seconds since start.",
            &seconds(self.started.elapsed().as_secs_f64()),
        )?;
        sample(
            &mut out,
            "patron_inflight_request_bytes",
            "Request bytes being decoded or made durable.",
            &gauge(load(&self.inflight_bytes)),
        )?;
        if let Some(w) = e.wal_stats() {
            sample(&mut out, "patron_wal_syncs", "fdatasync calls of the write-ahead log.", &counter(load(&w.syncs)))?;
            sample(&mut out, "patron_wal_bytes", "Bytes written to the log.", &counter(load(&w.bytes)))?;
            sample(
                &mut out,
                "patron_wal_sync_seconds",
                "Time spent in fdatasync.",
                &ConstCounter::new(load(&w.sync_nanos) as f64 / 1e9),
            )?;
            sample(
                &mut out,
                "patron_wal_last_sync_seconds",
                "Latest fdatasync duration.",
                &seconds(load(&w.last_sync_nanos) as f64 / 1e9),
            )?;
            sample(
                &mut out,
                "patron_wal_max_sync_seconds",
                "Slowest fdatasync since start (a log sync holds back every acknowledgement).",
                &seconds(load(&w.max_sync_nanos) as f64 / 1e9),
            )?;
        }
        let (queries, failed) = self.sql.query_counts();
        sample(&mut out, "patron_sql_queries", "SQL queries run (all front ends).", &counter(queries))?;
        sample(&mut out, "patron_sql_queries_failed", "SQL queries refused or failed.", &counter(failed))?;
        let scans = self.sql.counters();
        sample(
            &mut out,
            "patron_sql_rows_read",
            "Customer and product records read by SQL scans.",
            &counter(load(&scans.rows_read)),
        )?;
        sample(
            &mut out,
            "patron_sql_max_shard_lock_seconds",
            "Longest time one SQL scan held a shard's read lock (ingestion into that shard waits meanwhile).",
            &seconds(load(&scans.max_lock_micros) as f64 / 1e6),
        )?;
        let sizes = e.shard_sizes();
        let first = gauge(0);
        let mut family =
            out.encode_descriptor("patron_shard_customers", "Customers per shard.", None, first.metric_type())?;
        for (shard, customers) in sizes.iter().enumerate() {
            gauge(*customers as u64).encode(family.encode_family(&[("shard", shard.to_string())])?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_quoted_as_openmetrics_asks() {
        assert_eq!(label_value(r#"a "b" c\d"#), r#"a \"b\" c\\d"#);
        assert_eq!(label_value("one\ntwo"), r"one\ntwo");
    }
}
