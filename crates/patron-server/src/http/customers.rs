//! One customer: `GET /v1/customers/{id}` (the `customers` row scored on read,
//! plus recommendations), `GET /v1/customers/{id}/recommendations`, and
//! erasure (`DELETE /v1/customers/{id}`, admin).
//!
//! Lookups take the customer's shard read lock and blends run for a while,
//! so both run on the blocking pool (see [`super::blocking`]).

use std::sync::Arc;

use anyhow::{Result, bail};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use patron_model::{CurrencyTable, CustomerId, Timestamp};
use patron_state::customer_row::{RowClock, customer_batch};
use patron_state::{Chunk, Engine, Groups};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, AppState, blocking, error, with_retry_after};

/// Recommendations shown inside `GET /v1/customers/{id}`.
const CUSTOMER_VIEW_RECOMMENDATIONS: usize = 5;

/// Longest recommendation list served.
const MAX_RECOMMENDATIONS: usize = 100;

/// List length when `k` is not given.
const DEFAULT_RECOMMENDATIONS: usize = 10;

/// The path's customer id, or the 400 that says why it is not one.
pub(crate) fn customer_id(id: &str) -> Result<CustomerId, ApiError> {
    CustomerId::new(id).map_err(|_| ApiError::bad_request("invalid_customer_id", "customer ids are 1 to 256 bytes"))
}

/// The answer for a customer the engine does not hold. While a shard has
/// failed, its customers cannot be read, so "not found" would be a guess:
/// the answer is then 503 with the failure.
fn not_found(state: &AppState, id: &str) -> Response {
    match state.engine.failure() {
        Some(failure) => {
            with_retry_after(error(StatusCode::SERVICE_UNAVAILABLE, "shard_failed", failure.to_string()), 5)
        }
        None => error(StatusCode::NOT_FOUND, "customer_not_found", format!("no customer {id:?}")),
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
pub(crate) async fn get_customer(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let customer_id = customer_id(&id)?;
    Ok(blocking(move || customer_view(&state, &customer_id).unwrap_or_else(|| not_found(&state, &id))).await)
}

/// The customer's JSON view; `None` when the engine does not hold them.
fn customer_view(state: &AppState, customer_id: &CustomerId) -> Option<Response> {
    customer_json(&state.engine, &state.currencies, customer_id)
}

/// The JSON view of a customer `engine` holds (`None` if it does not): in
/// cluster mode, the engine is the one of the customer's partition.
pub(crate) fn customer_json(engine: &Engine, currencies: &CurrencyTable, customer_id: &CustomerId) -> Option<Response> {
    let record = engine.customer(customer_id)?;
    let models = engine.models();
    let now = engine.now().unwrap_or_else(Timestamp::now);
    let minor = currencies.base.minor_per_major();
    // Scored on read: current to the second, with the models in use.
    let scores = record
        .score_input(now.day(), minor)
        .and_then(|i| models.scorer.score(&i).ok())
        .map(|s| s.with_spread_of(record.scores.as_ref()));
    let mut row = Chunk::with_capacity(1);
    row.push(record.customer_id.as_str(), record.summary, scores, record.segments);
    let clock = RowClock::new(now, minor, engine.scoring_config());
    let object = customer_batch(patron_model::customers_schema(), &row.view(Groups::ALL), &clock)
        .map_err(anyhow::Error::from)
        .and_then(|batch| row_json(&batch, 0));
    let mut object = match object {
        Ok(object) => object,
        Err(e) => return Some(error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())),
    };
    object.insert("provisional".to_owned(), models.provisional.into());
    object.insert(
        "recommendations".to_owned(),
        recommendation_rows(engine, customer_id, CUSTOMER_VIEW_RECOMMENDATIONS, false).into(),
    );
    Some(axum::Json(Value::Object(object)).into_response())
}

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

/// The query string of `GET /v1/customers/{id}/recommendations`. An unknown
/// parameter (a typo such as `new-only`) is refused, not ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RecommendationsQuery {
    /// List length, 1 to [`MAX_RECOMMENDATIONS`] (default 10).
    k: Option<String>,
    /// Only products the customer never bought (`true`/`false`, `1`/`0`).
    new_only: Option<String>,
}

impl RecommendationsQuery {
    /// `(k, new_only)`, or the 400 naming the bad parameter.
    fn parse(&self) -> Result<(usize, bool), ApiError> {
        let k = match self.k.as_deref().map(str::parse::<usize>) {
            None => DEFAULT_RECOMMENDATIONS,
            Some(Ok(k)) if (1..=MAX_RECOMMENDATIONS).contains(&k) => k,
            Some(_) => {
                let message = format!("k must be a whole number from 1 to {MAX_RECOMMENDATIONS}");
                return Err(ApiError::bad_request("invalid_k", message));
            }
        };
        let new_only = match self.new_only.as_deref() {
            None | Some("false" | "0") => false,
            Some("true" | "1") => true,
            Some(other) => {
                let message = format!("new_only must be true or false, got {other:?}");
                return Err(ApiError::bad_request("invalid_new_only", message));
            }
        };
        Ok((k, new_only))
    }
}

/// `GET /v1/customers/{id}/recommendations?k=10&new_only=false`.
pub(crate) async fn get_recommendations(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    query: Result<Query<RecommendationsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let customer_id = customer_id(&id)?;
    let (k, new_only) = super::query(query)?.parse()?;
    Ok(blocking(move || {
        if state.engine.customer(&customer_id).is_none() {
            return not_found(&state, &id);
        }
        let rows = recommendation_rows(&state.engine, &customer_id, k, new_only);
        axum::Json(json!({"customer_id": customer_id.as_str(), "k": k, "new_only": new_only, "recommendations": rows}))
            .into_response()
    })
    .await)
}

/// Erasure (admin): the customer leaves memory, every snapshot and every log
/// segment; rejected events that name them are dropped from memory too.
pub(crate) async fn delete_customer(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let customer_id = customer_id(&id)?;
    Ok(blocking(move || match state.engine.erase(&customer_id) {
        Ok(existed) => {
            state.rejected.erase(customer_id.as_str());
            if existed {
                axum::Json(json!({"erased": true, "customer_id": customer_id.as_str()})).into_response()
            } else {
                error(
                    StatusCode::NOT_FOUND,
                    "customer_not_found",
                    format!("no customer {id:?} (nothing left to erase)"),
                )
            }
        }
        Err(e) => with_retry_after(error(StatusCode::SERVICE_UNAVAILABLE, "erase_failed", e.to_string()), 5),
    })
    .await)
}
