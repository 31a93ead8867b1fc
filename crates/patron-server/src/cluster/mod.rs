//! `patron serve --nats URL`: a node of a fleet (see `patron_cluster`).
//!
//! The node's HTTP API is the single-node API's core, answered across the
//! fleet:
//! - `POST /v1/events` validates exactly as a single node does, publishes
//!   each partition's events as one message, and answers once the broker has
//!   acknowledged every message (durable there). `accepted` counts events the
//!   broker stored; `duplicates` those it already had (a retried request).
//! - `GET /v1/customers/{id}` answers from the partition's engine when this
//!   node holds it, and otherwise forwards the request to the owner.
//! - `GET /v1/cluster/status`, `/metrics` (per partition: owner, applied
//!   sequence, lag, model round), `/ready` (false while a partition is
//!   restoring), `POST /v1/admin/snapshot` (every held partition, and its
//!   export) and `POST /v1/admin/refit` (a model round for the whole fleet,
//!   see `patron_cluster::fleet_model`).
//!
//! - `POST /v1/sql` answers over the partitions this node holds ([`sql`]).
//!
//! Fleet-wide SQL runs over the Parquet exports (`patron query --fleet`).

pub(crate) mod export;
pub(crate) mod sql;
pub(crate) mod status;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use patron_cluster::fleet_model;
use patron_cluster::node::{lease_map, live_nodes, partition_key};
use patron_cluster::{Broker, BrokerOptions, Node, NodeOptions, encode_batches, partition_of};
use patron_model::{CurrencyTable, Event};
use patron_state::{EngineConfig, ScoringConfig};
use serde_json::{Value, json};

use crate::cli::{FleetArgs, ServeArgs};
use crate::config::{Auth, Config, Role};
use crate::http::events::{IngestQuery, Intake, Intaken};
use crate::http::{IngestLimits, error, with_retry_after};
use crate::rejected::RejectedStore;

/// Header on a forwarded lookup: the receiver answers itself or says the
/// partition is moving, and never forwards again (no loops while leases move).
const FORWARDED_HEADER: &str = "x-patron-forwarded-by";

/// What the handlers share.
pub(crate) struct ClusterState {
    node: Arc<Node>,
    currencies: CurrencyTable,
    auth: Auth,
    ingest: IngestLimits,
    inflight_bytes: AtomicU64,
    rejected: RejectedStore,
    partitions: u32,
}

/// Runs a node until Ctrl-C or SIGTERM, then hands its partitions over.
pub(crate) fn run(args: &ServeArgs, nats: &str) -> Result<()> {
    crate::runtime::init_logging("info");
    let fleet = &args.fleet;
    let config = args.config.as_deref().map(Config::load).transpose()?.unwrap_or_default();
    let auth = Auth::new(&config.auth);
    let addr = crate::runtime::listen_addr(args.listen.http, "--http", &auth)?;
    let currencies = config.currencies(args.currency.as_deref())?;
    let scoring = ScoringConfig { model: args.model.into(), clv: config.clv, ..ScoringConfig::default() };
    let runtime = crate::runtime::runtime()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
        let bound = listener.local_addr()?;
        let node_id = fleet.node_id.clone().unwrap_or_else(|| default_node_id(bound.port()));
        let broker = Broker::connect(&BrokerOptions {
            url: nats.to_owned(),
            replicas: fleet.nats_replicas.max(1),
            lease_time: fleet.lease_time,
            connection_name: format!("patron {node_id}"),
        })
        .await
        .context("cluster mode needs a NATS server with JetStream (see the README's \"Running a fleet\")")?;
        let node = Node::new(broker, node_options(args, fleet, &node_id, bound, &currencies, scoring));
        let state = Arc::new(ClusterState {
            node: node.clone(),
            currencies,
            auth,
            ingest: IngestLimits { body_limit: args.body_limit, max_inflight_bytes: args.max_inflight_bytes },
            inflight_bytes: AtomicU64::new(0),
            rejected: RejectedStore::default(),
            partitions: fleet.partitions,
        });
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let control = tokio::spawn(node.clone().run(stopped.clone()));
        let rounds = tokio::spawn(fleet_model::run(node.clone(), args.refit_interval, stopped));
        println!("node {node_id} of the fleet on {nats} ({} partitions)", fleet.partitions);
        println!("listening on http://{bound}");
        use std::io::Write;
        let _ = std::io::stdout().flush();
        crate::http_listen::serve_http(listener, router(state), None, crate::runtime::shutdown_signal()).await;
        let _ = stop.send(true);
        let _ = rounds.await;
        let _ = control.await;
        tracing::info!("shut down: every partition was handed over after a last snapshot");
        anyhow::Ok(())
    })
}

fn default_node_id(port: u16) -> String {
    let host = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_owned()).unwrap_or_default();
    format!("{}-{port}", if host.is_empty() { "node" } else { host.as_str() })
}

fn node_options(
    args: &ServeArgs,
    fleet: &FleetArgs,
    node_id: &str,
    bound: std::net::SocketAddr,
    currencies: &CurrencyTable,
    scoring: ScoringConfig,
) -> NodeOptions {
    let base = currencies.base;
    let (currencies, clock, horizon, shards) =
        (currencies.clone(), args.clock.into(), args.dedup_horizon.0, args.shards.unwrap_or(1));
    let engine = Arc::new(move |dir: &std::path::Path| {
        let mut config = EngineConfig::new(dir);
        config.currencies = currencies.clone();
        config.scoring = scoring;
        config.clock = clock;
        config.dedup_horizon_days = horizon;
        // Many partitions share the node's cores: one writer thread each.
        config.shards = shards;
        config
    });
    let on_snapshot = fleet.export_dir.clone().map(|dir| export::hook(dir, node_id.to_owned(), base));
    NodeOptions {
        node_id: node_id.to_owned(),
        partitions: fleet.partitions,
        data_dir: args.data_dir.clone(),
        http_address: fleet.advertise.clone().unwrap_or_else(|| format!("http://{bound}")),
        lease_time: fleet.lease_time,
        snapshot_every: args.snapshot_interval,
        engine,
        on_snapshot,
    }
}

fn router(state: Arc<ClusterState>) -> Router {
    let guarded = |routes: Router<Arc<ClusterState>>, role: Role| {
        routes.route_layer(axum::middleware::from_fn_with_state((state.clone(), role), authorize))
    };
    Router::new()
        .merge(guarded(Router::new().route("/v1/events", post(post_events)), Role::Ingest))
        .merge(guarded(
            Router::new()
                .route("/v1/customers/{id}", get(get_customer))
                .route("/v1/cluster/status", get(get_status))
                .route("/v1/sql", post(sql::post_sql))
                .route("/metrics", get(get_metrics)),
            Role::Query,
        ))
        .merge(guarded(
            Router::new().route("/v1/admin/snapshot", post(post_snapshot)).route("/v1/admin/refit", post(post_refit)),
            Role::Admin,
        ))
        .route("/health", get(|| async { "ok\n" }))
        .route("/ready", get(ready))
        .fallback(|| async {
            error(StatusCode::NOT_FOUND, "not_found", "no such endpoint (cluster mode serves events, customers, SQL over this node's partitions, status, metrics, refit and snapshots; fleet-wide SQL runs on the fleet export)")
        })
        .with_state(state)
}

async fn authorize(
    State((state, role)): State<(Arc<ClusterState>, Role)>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match crate::http::auth_refusal(&state.auth, &request, role) {
        None => next.run(request).await,
        Some(refusal) => refusal,
    }
}

async fn post_events(
    State(state): State<Arc<ClusterState>>,
    query: Result<axum::extract::Query<IngestQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let intake = Intake {
        limits: state.ingest,
        inflight_bytes: &state.inflight_bytes,
        currencies: &state.currencies,
        rejected: &state.rejected,
    };
    let Intaken { decoded, rejected, invalid_count, ignored } = match intake.read(query, &headers, body).await {
        Ok(intaken) => intaken,
        Err(refusal) => return refusal,
    };
    let mut per_partition: BTreeMap<u32, Vec<Event>> = BTreeMap::new();
    for event in decoded.events {
        per_partition.entry(partition_of(event.customer_id.as_str(), state.partitions)).or_default().push(event);
    }
    let batches = per_partition.iter().flat_map(|(partition, events)| encode_batches(*partition, events)).collect();
    match state.node.broker().publish(batches).await {
        Ok(summary) => {
            let answered: Vec<Value> = rejected.iter().map(|(i, e)| json!({"index": i, "error": e})).collect();
            let mut answer = json!({
                "accepted": summary.events, "duplicates": summary.duplicate_events,
                "rejected": answered, "rejected_count": invalid_count,
            });
            if let (Some(ignored), Some(fields)) = (ignored, answer.as_object_mut()) {
                fields.insert("ignored".into(), ignored);
            }
            axum::Json(answer).into_response()
        }
        // Nothing was acknowledged for sure: the producer retries the whole
        // request, and the message ids make the retry harmless.
        Err(e) => with_retry_after(error(StatusCode::SERVICE_UNAVAILABLE, "broker_unavailable", e.to_string()), 1),
    }
}

async fn get_customer(State(state): State<Arc<ClusterState>>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let customer_id = match crate::http::customers::customer_id(&id) {
        Ok(c) => c,
        Err(refusal) => return refusal.into_response(),
    };
    let partition = partition_of(customer_id.as_str(), state.partitions);
    if let Some(engine) = state.node.engine(partition) {
        let currencies = state.currencies.clone();
        return crate::http::blocking(move || {
            crate::http::customers::customer_json(&engine, &currencies, &customer_id).unwrap_or_else(|| {
                error(StatusCode::NOT_FOUND, "customer_not_found", format!("no customer {:?}", customer_id.as_str()))
            })
        })
        .await;
    }
    let moving = |why: String| with_retry_after(error(StatusCode::SERVICE_UNAVAILABLE, "partition_moving", why), 1);
    if headers.contains_key(FORWARDED_HEADER) {
        return moving(format!("partition {partition} is not restored on this node yet"));
    }
    let owner = match owner_address(&state.node, partition).await {
        Ok(Some(owner)) if owner.0 != state.node.options().node_id => owner,
        Ok(_) => return moving(format!("partition {partition} has no restored owner at the moment")),
        Err(e) => {
            return with_retry_after(error(StatusCode::SERVICE_UNAVAILABLE, "broker_unavailable", e.to_string()), 1);
        }
    };
    let url = format!("{}/v1/customers/{}", owner.1, percent_encode(customer_id.as_str()));
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let me = state.node.options().node_id.clone();
    crate::http::blocking(move || forward(&url, authorization.as_deref(), &me)).await
}

/// The owner of `partition` and its HTTP address, from the lease and node buckets.
async fn owner_address(node: &Node, partition: u32) -> Result<Option<(String, String)>, patron_cluster::ClusterError> {
    let Some(owner) = node
        .broker()
        .leases
        .get(partition_key(partition))
        .await
        .map_err(|e| patron_cluster::ClusterError::Broker { action: "read a lease", source: Box::new(e) })?
    else {
        return Ok(None);
    };
    let owner = String::from_utf8_lossy(&owner).into_owned();
    let nodes = live_nodes(&node.broker().nodes).await?;
    Ok(nodes.get(&owner).map(|entry| (owner.clone(), entry.http.clone())))
}

fn forward(url: &str, authorization: Option<&str>, me: &str) -> Response {
    let mut request = ureq::get(url).timeout(Duration::from_secs(10)).set(FORWARDED_HEADER, me);
    if let Some(value) = authorization {
        request = request.set("authorization", value);
    }
    let (status, response) = match request.call() {
        Ok(response) => (response.status(), response),
        Err(ureq::Error::Status(status, response)) => (status, response),
        Err(e) => {
            return with_retry_after(
                error(StatusCode::SERVICE_UNAVAILABLE, "owner_unreachable", format!("the partition's owner: {e}")),
                1,
            );
        }
    };
    let retry_after = response.header("retry-after").map(str::to_owned);
    let mut body = Vec::new();
    if let Err(e) = std::io::Read::read_to_end(&mut response.into_reader(), &mut body) {
        return error(StatusCode::BAD_GATEWAY, "owner_unreachable", format!("reading the owner's answer: {e}"));
    }
    let mut answer = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response();
    if let Some(value) = retry_after.and_then(|v| v.parse().ok()) {
        answer.headers_mut().insert(header::RETRY_AFTER, value);
    }
    answer
}

/// A customer id as one path segment.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

async fn ready(State(state): State<Arc<ClusterState>>) -> Response {
    let statuses = state.node.statuses();
    let restoring: Vec<u32> = statuses.iter().filter(|s| s.restoring).map(|s| s.partition).collect();
    if let Some(failed) = statuses.iter().find(|s| s.failure.is_some()) {
        let why = format!("partition {}: {}", failed.partition, failed.failure.clone().unwrap_or_default());
        return error(StatusCode::SERVICE_UNAVAILABLE, "partition_failed", why);
    }
    if restoring.is_empty() {
        "ready\n".into_response()
    } else {
        error(StatusCode::SERVICE_UNAVAILABLE, "restoring", format!("restoring partitions {restoring:?}"))
    }
}

async fn get_status(State(state): State<Arc<ClusterState>>) -> Response {
    match status::fleet_status(state.node.broker(), state.partitions).await {
        Ok(fleet) => {
            let mut value = serde_json::to_value(&fleet).unwrap_or(Value::Null);
            value["node"] = state.node.options().node_id.clone().into();
            value["held"] = serde_json::to_value(state.node.statuses()).unwrap_or(Value::Null);
            axum::Json(value).into_response()
        }
        Err(e) => with_retry_after(error(StatusCode::SERVICE_UNAVAILABLE, "broker_unavailable", e.to_string()), 1),
    }
}

async fn get_metrics(State(state): State<Arc<ClusterState>>) -> Response {
    let owners = lease_map(state.node.broker(), state.partitions).await.unwrap_or_default();
    match status::metrics_text(&state.node, &owners) {
        Ok(text) => ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    }
}

/// How long `POST /v1/admin/refit` waits for the round and for this node's
/// partitions to install it.
const REFIT_WAIT: Duration = Duration::from_secs(600);

/// `POST /v1/admin/refit`: runs a model round for the whole fleet that
/// includes every event acknowledged before the request, and answers once it
/// finished and this node's partitions serve its models: the fitted
/// parameters, as a single node answers.
async fn post_refit(State(state): State<Arc<ClusterState>>) -> Response {
    let started = std::time::Instant::now();
    let unavailable = |e: patron_cluster::ClusterError| {
        with_retry_after(error(StatusCode::SERVICE_UNAVAILABLE, "broker_unavailable", e.to_string()), 1)
    };
    let node = &state.node;
    let round = match fleet_model::refit(node, REFIT_WAIT).await {
        Ok(Some(round)) => round,
        Ok(None) => {
            let why = format!("the model round did not finish within {}s", REFIT_WAIT.as_secs());
            return error(StatusCode::GATEWAY_TIMEOUT, "refit_timeout", why);
        }
        Err(e) => return unavailable(e),
    };
    if round.phase == fleet_model::Phase::Failed {
        let why = round.error.clone().unwrap_or_default();
        return error(StatusCode::UNPROCESSABLE_ENTITY, "fit_failed", format!("model round {}: {why}", round.epoch));
    }
    let deadline = std::time::Instant::now() + REFIT_WAIT;
    let behind = || node.statuses().into_iter().filter(|s| s.models_epoch < round.epoch).map(|s| s.partition);
    while behind().next().is_some() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let behind: Vec<u32> = behind().collect();
    if !behind.is_empty() {
        let why =
            format!("model round {} finished, but partitions {behind:?} of this node do not serve it yet", round.epoch);
        return error(StatusCode::GATEWAY_TIMEOUT, "refit_not_installed", why);
    }
    // From the broker: a node that holds no partition answers with them too.
    let fits = match fleet_model::round_fits(node, round.epoch).await {
        Ok(fits) => fits,
        Err(e) => return unavailable(e),
    };
    let mut body = crate::output::model_params_json(&fits);
    body["seconds"] = started.elapsed().as_secs_f64().into();
    body["round"] = serde_json::to_value(&round).unwrap_or(Value::Null);
    axum::Json(body).into_response()
}

async fn post_snapshot(State(state): State<Arc<ClusterState>>) -> Response {
    let held = state.node.statuses().len();
    let done = state.node.snapshot_all(Duration::from_secs(120)).await;
    let partitions: Vec<Value> = done.iter().map(|(p, seq)| json!({"partition": p, "sequence": seq})).collect();
    let body = json!({"partitions": partitions, "held": held});
    if done.len() == held {
        axum::Json(body).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
    }
}
