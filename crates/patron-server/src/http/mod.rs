//! The HTTP API of `patron serve` (DESIGN.md §5), one module per duty:
//!
//! - [`events`]: `POST /v1/events` (one JSON object, a JSON array, or
//!   NDJSON). The answer comes after the accepted events are durable and
//!   applied. With `?source=`, [`sources`] reads the body in a source's format.
//! - [`customers`]: `GET /v1/customers/{id}`, its recommendations, and
//!   erasure (`DELETE`, admin).
//! - [`sql`]: `POST /v1/sql`.
//! - [`campaigns`]: `POST /v1/campaigns`, `GET /v1/campaigns[/{id}]`,
//!   `POST /v1/campaigns/{id}/close` (role `campaign`).
//! - [`admin`]: refit, neighbour refresh, snapshot, the rejected events,
//!   `/health` and `/ready`.
//! - `/metrics` is [`crate::metrics`]; `GET /` is [`crate::status_page`].
//!
//! Every handler keeps the async workers free: anything that takes a shard's
//! lock, walks the product statistics or computes a blend runs on the blocking
//! pool ([`blocking`]). A shard writer holds its lock for up to one chunk of
//! events, and this machine has two workers; a lookup waiting on them would
//! stall `/health` and every other connection.
//!
//! Errors are `{"error":{"code":…,"message":…}}` with a stable code.

pub(crate) mod admin;
pub(crate) mod campaigns;
pub(crate) mod customers;
pub(crate) mod events;
pub(crate) mod sources;
pub(crate) mod sql;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use patron_model::CurrencyTable;
use patron_sql::SqlEngine;
use patron_state::Engine;
use serde_json::json;

use crate::config::{Auth, Role, Verdict};
use crate::metrics::Metrics;
use crate::rejected::RejectedStore;

/// What every handler shares.
pub(crate) struct AppState {
    pub(crate) engine: Arc<Engine>,
    pub(crate) auth: Auth,
    pub(crate) currencies: CurrencyTable,
    pub(crate) ingest: IngestLimits,
    /// Request bytes being received, decoded or made durable.
    pub(crate) inflight_bytes: Arc<AtomicU64>,
    pub(crate) rejected: Arc<RejectedStore>,
    pub(crate) sql: Arc<SqlEngine>,
    pub(crate) metrics: Metrics,
    /// Where pgwire listens, once bound (the status page's psql line).
    pub(crate) pg_addr: std::sync::OnceLock<SocketAddr>,
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

/// Bounds of the ingest endpoint.
#[derive(Clone, Copy, Debug)]
pub(crate) struct IngestLimits {
    /// Largest body, bytes.
    pub(crate) body_limit: usize,
    /// Cap on request bytes being received, decoded or made durable.
    pub(crate) max_inflight_bytes: u64,
}

/// The error body every endpoint answers with.
pub(crate) fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({"error": {"code": code, "message": message.into()}}))).into_response()
}

/// A refused request, answered as [`error`] does: handlers return
/// `Result<Response, ApiError>` and use `?` on their checks.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    /// A `400` with its stable code.
    pub(crate) fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self { status: StatusCode::BAD_REQUEST, code, message: message.into() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error(self.status, self.code, self.message)
    }
}

/// `response` with `Retry-After: seconds`.
pub(crate) fn with_retry_after(mut response: Response, seconds: u64) -> Response {
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}

/// Runs `work` on the blocking pool: it may take a shard's lock (held by its
/// writer for up to one chunk of events), walk the product statistics, fsync
/// or fit. A panicked task answers 500.
pub(crate) async fn blocking(work: impl FnOnce() -> Response + Send + 'static) -> Response {
    match tokio::task::spawn_blocking(work).await {
        Ok(response) => response,
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    }
}

/// Routes, each group behind the role it needs; `/health` and `/ready` are
/// open. Every matched route is timed into the latency histograms.
pub(crate) fn router(state: Arc<AppState>) -> Router {
    let guarded = |routes: Router<Arc<AppState>>, role: Role| {
        routes.route_layer(axum::middleware::from_fn_with_state((state.clone(), role), authorize))
    };
    Router::new()
        .merge(guarded(Router::new().route("/v1/events", post(events::post_events)), Role::Ingest))
        .merge(guarded(
            Router::new()
                .route("/v1/customers/{id}", get(customers::get_customer))
                .route("/v1/customers/{id}/recommendations", get(customers::get_recommendations))
                .route("/v1/sql", post(sql::post_sql))
                .route("/metrics", get(crate::metrics::get_metrics))
                .route("/", get(crate::status_page::page)),
            Role::Query,
        ))
        .merge(guarded(
            Router::new()
                .route("/v1/customers/{id}", delete(customers::delete_customer))
                .route("/v1/admin/refit", post(admin::post_refit))
                .route("/v1/admin/recommendations/refresh", post(admin::post_refresh_recommendations))
                .route("/v1/admin/snapshot", post(admin::post_snapshot))
                .route("/v1/admin/rejected", get(admin::get_rejected)),
            Role::Admin,
        ))
        .merge(guarded(
            Router::new()
                .route("/v1/campaigns", post(campaigns::post_campaign).get(campaigns::list_campaigns))
                .route("/v1/campaigns/{id}", get(campaigns::get_campaign))
                .route("/v1/campaigns/{id}/close", post(campaigns::close_campaign)),
            Role::Campaign,
        ))
        .route("/health", get(|| async { "ok\n" }))
        .route("/ready", get(admin::ready))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), crate::metrics::time_request))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not_found", "no such endpoint") })
        .with_state(state)
}

async fn authorize(
    State((state, role)): State<(Arc<AppState>, Role)>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match auth_refusal(&state.auth, &request, role) {
        None => next.run(request).await,
        Some(refusal) => refusal,
    }
}

/// The 401 or 403 for a request without a token that has `role`, or `None`
/// when it may go on (the single-node and the cluster routers both check here).
pub(crate) fn auth_refusal(auth: &Auth, request: &axum::extract::Request, role: Role) -> Option<Response> {
    let header = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    match auth.check(header, role) {
        Verdict::Allowed => None,
        Verdict::Unauthenticated => {
            let mut response = error(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "send Authorization: Bearer <token> with a configured token",
            );
            // A browser asks for credentials only on a Basic challenge: the status
            // page gets one (the token is the password), the API keeps Bearer.
            let challenge = if request.uri().path() == "/" { crate::status_page::CHALLENGE } else { "Bearer" };
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
            Some(response)
        }
        Verdict::Forbidden => {
            Some(error(StatusCode::FORBIDDEN, "forbidden", format!("this token lacks the {role:?} role")))
        }
    }
}

/// A typed query string, or the JSON error naming what is wrong with it
/// (axum's own rejection is plain text).
pub(crate) fn query<T>(
    query: Result<axum::extract::Query<T>, axum::extract::rejection::QueryRejection>,
) -> Result<T, ApiError> {
    query.map(|q| q.0).map_err(|rejection| ApiError::bad_request("invalid_query", rejection.body_text()))
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Method, Request};
    use patron_sql::SqlLimits;
    use patron_state::EngineConfig;
    use tower::ServiceExt;

    use super::*;
    use crate::config::Config;
    use crate::runtime::app_state;

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
                CurrencyTable::default(),
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
}
