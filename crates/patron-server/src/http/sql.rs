//! `POST /v1/sql`: one read-only SQL statement; the answer is JSON, CSV,
//! Arrow IPC or a text table by `Accept`. [`LiveView`] is what the SQL tables
//! read, here and in the offline `patron query`.
//!
//! Queries run on the SQL engine's own threads with its own limits (see
//! `patron_sql`), so the handler only awaits them.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use patron_sql::{LiveSource, RejectedRow, ResultFormat, SqlError};
use patron_state::Engine;

use super::{AppState, error, with_retry_after};
use crate::rejected::{REJECTED_KEPT, RejectedStore};

/// What the SQL tables read: the engine and the rejected-event store.
pub(crate) struct LiveView {
    pub(crate) engine: Arc<Engine>,
    pub(crate) rejected: Arc<RejectedStore>,
    pub(crate) base: patron_model::Currency,
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
            .newest(REJECTED_KEPT)
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

/// Longest SQL text accepted.
const MAX_SQL_BYTES: usize = 1 << 20;

/// `POST /v1/sql`: the body is one SQL statement (read-only, bounded; see
/// `patron_sql`); the answer is JSON, CSV, Arrow IPC or a text table by `Accept`.
pub(crate) async fn post_sql(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    let (sql, format) = match sql_request(&headers, body).await {
        Ok(request) => request,
        Err(refusal) => return refusal,
    };
    let access = state.auth.sql_access(headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()));
    let result = state.sql.run(&sql, access.unwrap_or(patron_sql::Access::Query)).await;
    sql_answer(result, format)
}

/// The statement and the answer's format of a `POST /v1/sql`, or the refusal.
pub(crate) async fn sql_request(headers: &HeaderMap, body: Body) -> Result<(String, ResultFormat), Response> {
    // SQL text is not counted against the ingest budget; the same reader gives
    // it the body timeouts and drains an oversized body before answering.
    let body = match super::events::read_body(body, MAX_SQL_BYTES, None, None).await {
        Ok(body) => body,
        Err(super::events::BodyError::TooLarge(_)) => {
            return Err(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "sql_too_long",
                format!("SQL statements are limited to {} MiB", MAX_SQL_BYTES >> 20),
            ));
        }
        Err(other) => return Err(other.into_response()),
    };
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let Some(format) = ResultFormat::from_accept(accept) else {
        return Err(error(
            StatusCode::NOT_ACCEPTABLE,
            "not_acceptable",
            "Accept one of application/json, text/csv, application/vnd.apache.arrow.stream, text/plain",
        ));
    };
    match String::from_utf8(body.to_vec()) {
        Ok(sql) => Ok((sql, format)),
        Err(_) => Err(error(StatusCode::BAD_REQUEST, "invalid_utf8", "the SQL body must be UTF-8 text")),
    }
}

/// The HTTP answer to a query's result.
pub(crate) fn sql_answer(result: Result<patron_sql::QueryResult, SqlError>, format: ResultFormat) -> Response {
    match result.and_then(|result| patron_sql::encode(&result, format)) {
        Ok(bytes) => ([(header::CONTENT_TYPE, format.content_type())], bytes).into_response(),
        Err(e) => sql_error(&e),
    }
}

/// The HTTP answer to a failed query.
pub(crate) fn sql_error(e: &SqlError) -> Response {
    let (status, code) = match e {
        SqlError::Refused(_) => (StatusCode::FORBIDDEN, "read_only"),
        SqlError::Empty | SqlError::SeveralStatements(_) | SqlError::Syntax(_) => {
            (StatusCode::BAD_REQUEST, "sql_syntax")
        }
        SqlError::Plan(_) | SqlError::Pattern(_) => (StatusCode::BAD_REQUEST, "sql_invalid"),
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
