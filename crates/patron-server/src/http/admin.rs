//! Operations: `POST /v1/admin/refit`, `/v1/admin/recommendations/refresh`,
//! `/v1/admin/snapshot`, `GET /v1/admin/rejected` (admin role), and the open
//! probes `/health` and `/ready`.
//!
//! Refits, refreshes and snapshots run for seconds and fsync, so they run on
//! the blocking pool.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, AppState, blocking, error, with_retry_after};
use crate::rejected::REJECTED_KEPT;

/// `/ready`: 200 while the engine accepts events; 503 with the reason once a
/// shard has failed (fail-stop), so a load balancer stops sending traffic.
pub(crate) async fn ready(State(state): State<Arc<AppState>>) -> Response {
    match state.engine.failure() {
        None => "ready\n".into_response(),
        Some(failure) => error(StatusCode::SERVICE_UNAVAILABLE, "shard_failed", failure.to_string()),
    }
}

/// `POST /v1/admin/snapshot`: writes a snapshot now and prunes the log behind it.
pub(crate) async fn post_snapshot(State(state): State<Arc<AppState>>) -> Response {
    let started = Instant::now();
    blocking(move || match state.engine.snapshot() {
        Ok(report) => axum::Json(json!({
            "path": report.path.display().to_string(), "next_seq": report.next_seq, "customers": report.customers,
            "bytes": report.bytes, "removed_segments": report.removed_segments, "seconds": started.elapsed().as_secs_f64(),
        }))
        .into_response(),
        Err(e) => with_retry_after(error(StatusCode::SERVICE_UNAVAILABLE, "snapshot_failed", e.to_string()), 5),
    })
    .await
}

/// `POST /v1/admin/recommendations/refresh`: recomputes every product's
/// neighbours now (the periodic refit does it too).
pub(crate) async fn post_refresh_recommendations(State(state): State<Arc<AppState>>) -> Response {
    let started = Instant::now();
    blocking(move || {
        let model = state.engine.refresh_recommendations();
        axum::Json(json!({
            "products": model.products(),
            "neighbour_entries": model.neighbour_entries(),
            "seconds": started.elapsed().as_secs_f64(),
        }))
        .into_response()
    })
    .await
}

/// `POST /v1/admin/refit`: fits the models on every customer now, then
/// writes a snapshot so that a restart serves the same scores.
pub(crate) async fn post_refit(State(state): State<Arc<AppState>>) -> Response {
    let started = Instant::now();
    blocking(move || match state.engine.refit_durably() {
        Ok(models) => {
            let mut body = models.fits.as_ref().map_or(json!({}), crate::output::model_params_json);
            body["seconds"] = started.elapsed().as_secs_f64().into();
            axum::Json(body).into_response()
        }
        Err(e @ patron_state::StateError::RefitNotDurable(_)) => {
            error(StatusCode::INTERNAL_SERVER_ERROR, "refit_not_durable", e.to_string())
        }
        Err(e) => error(StatusCode::UNPROCESSABLE_ENTITY, "fit_failed", e.to_string()),
    })
    .await
}

/// The query string of `GET /v1/admin/rejected`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RejectedQuery {
    /// Most rejected events to list, newest first (default 100; at most the
    /// store's [`REJECTED_KEPT`]).
    limit: Option<usize>,
}

/// `GET /v1/admin/rejected?limit=N`: the newest rejected events with their reasons.
pub(crate) async fn get_rejected(
    State(state): State<Arc<AppState>>,
    query: Result<Query<RejectedQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let limit = super::query(query)?.limit.unwrap_or(100).min(REJECTED_KEPT);
    let rows: Vec<Value> = state
        .rejected
        .newest(limit)
        .into_iter()
        .map(|r| {
            json!({"received_at": r.received_at.to_rfc3339(), "source": r.source, "position": r.position,
                   "error": r.error, "raw": r.raw})
        })
        .collect();
    Ok(axum::Json(json!({"rejected": rows, "total": state.rejected.total()})).into_response())
}
