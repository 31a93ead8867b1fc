//! `POST /v1/sql` on a node: the node's own partitions, read now.
//!
//! The tables are the export's (`customers`, `products`), one row set per
//! held partition, put together for the query: a node answers for the
//! customers it holds, as the fleet export answers for all of them. A
//! partition that is restoring is not in the answer; the `x-patron-partitions`
//! header lists the partitions that are.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use patron_sql::{SqlEngine, SqlLimits};

use super::ClusterState;
use super::export::{EXPORTED_TABLES, partition_tables};
use crate::http::error;
use crate::http::sql::{sql_answer, sql_error, sql_request};

/// The exported tables, each with its schema and no rows yet.
pub(crate) fn empty_tables() -> Vec<(String, SchemaRef, Vec<RecordBatch>)> {
    EXPORTED_TABLES
        .iter()
        .map(|&table| {
            let schema = match table {
                "customers" => patron_model::customers_schema(),
                _ => patron_model::products_schema(),
            };
            (table.to_owned(), schema, Vec::new())
        })
        .collect()
}

pub(crate) async fn post_sql(State(state): State<Arc<ClusterState>>, headers: HeaderMap, body: Body) -> Response {
    let (sql, format) = match sql_request(&headers, body).await {
        Ok(request) => request,
        Err(refusal) => return refusal,
    };
    let access = state.auth.sql_access(headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()));
    let engines = state.node.engines();
    let partitions: Vec<String> = engines.iter().map(|(p, _)| p.to_string()).collect();
    let base = state.currencies.base;
    let read = tokio::task::spawn_blocking(move || {
        let mut tables = empty_tables();
        for (_, engine) in &engines {
            for (name, batch) in partition_tables(engine, base)? {
                if let Some((_, schema, batches)) = tables.iter_mut().find(|(n, ..)| n == name) {
                    batches.push(RecordBatch::try_new(schema.clone(), batch.columns().to_vec())?);
                }
            }
        }
        anyhow::Ok(tables)
    })
    .await;
    let tables = match read {
        Ok(Ok(tables)) => tables,
        Ok(Err(e)) => return error(StatusCode::INTERNAL_SERVER_ERROR, "sql_failed", format!("{e:#}")),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, "sql_failed", e.to_string()),
    };
    let engine = match SqlEngine::over_tables(tables, SqlLimits::default()) {
        Ok(engine) => engine,
        Err(e) => return sql_error(&e),
    };
    let result = engine.run(&sql, access.unwrap_or(patron_sql::Access::Query)).await;
    let mut answer = sql_answer(result, format);
    if let Ok(value) = HeaderValue::from_str(&partitions.join(",")) {
        answer.headers_mut().insert("x-patron-partitions", value);
    }
    answer
}
