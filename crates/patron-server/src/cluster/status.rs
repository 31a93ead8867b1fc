//! The fleet as the broker sees it (`patron cluster status`,
//! `GET /v1/cluster/status`) and one node's figures for Prometheus.

use std::collections::BTreeMap;

use anyhow::Result;
use patron_cluster::fleet_model::{Round, current_round};
use patron_cluster::node::{NodeEntry, SnapshotRecord, lease_map, live_nodes, partition_key};
use patron_cluster::{Broker, BrokerOptions, ClusterError, Node};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Serialize;

/// The whole fleet.
#[derive(Debug, Serialize)]
pub(crate) struct FleetStatus {
    /// Live nodes and their HTTP addresses.
    pub(crate) nodes: BTreeMap<String, NodeEntry>,
    /// Messages in the event stream, and its last sequence.
    pub(crate) stream_messages: u64,
    pub(crate) stream_last_sequence: u64,
    /// The latest model round: the fleet's models and where their refit is.
    pub(crate) model_round: Option<Round>,
    pub(crate) partitions: Vec<PartitionRow>,
}

/// One partition.
#[derive(Debug, Serialize)]
pub(crate) struct PartitionRow {
    pub(crate) partition: u32,
    /// Lease holder (none while it moves).
    pub(crate) owner: Option<String>,
    /// Last stream sequence the owner applied, and the partition's messages
    /// after it (as the owner last heard from the broker); filled in from the
    /// owner's `GET /v1/cluster/status` by `patron cluster status`.
    pub(crate) applied_sequence: Option<u64>,
    pub(crate) lag_messages: Option<u64>,
    /// The events in them, estimated by the owner (see `PartitionStatus::lag_events`).
    pub(crate) lag_events: Option<u64>,
    /// The newest snapshot: the sequence it covers and who wrote it.
    pub(crate) snapshot_sequence: Option<u64>,
    pub(crate) snapshot_node: Option<String>,
}

/// Reads the fleet's state from the broker.
pub(crate) async fn fleet_status(broker: &Broker, partitions: u32) -> Result<FleetStatus, ClusterError> {
    let nodes = live_nodes(&broker.nodes).await?;
    let owners = lease_map(broker, partitions).await?;
    let info = broker
        .events
        .get_info()
        .await
        .map_err(|e| ClusterError::Broker { action: "read the event stream", source: Box::new(e) })?;
    let mut rows = Vec::with_capacity(partitions as usize);
    for partition in 0..partitions {
        let record = match broker.partitions.get(partition_key(partition)).await {
            Ok(Some(bytes)) => serde_json::from_slice::<SnapshotRecord>(&bytes).ok(),
            _ => None,
        };
        rows.push(PartitionRow {
            partition,
            owner: owners.get(&partition).cloned(),
            applied_sequence: None,
            lag_messages: None,
            lag_events: None,
            snapshot_sequence: record.as_ref().map(|r| r.sequence),
            snapshot_node: record.map(|r| r.node),
        });
    }
    Ok(FleetStatus {
        nodes,
        stream_messages: info.state.messages,
        stream_last_sequence: info.state.last_sequence,
        model_round: current_round(&broker.fleet).await?.map(|(round, _)| round),
        partitions: rows,
    })
}

/// How many partitions the fleet uses: the highest partition key any lease,
/// consumer or snapshot names, plus one (the CLI does not know the flag).
async fn partitions_in_use(broker: &Broker) -> u32 {
    let mut highest = None;
    for bucket in [&broker.leases, &broker.partitions] {
        if let Ok(mut keys) = bucket.keys().await {
            use futures_util::StreamExt;
            while let Some(Ok(key)) = keys.next().await {
                if let Some(n) = key.strip_prefix('p').and_then(|n| n.parse::<u32>().ok()) {
                    highest = highest.max(Some(n));
                }
            }
        }
    }
    highest.map_or(0, |h| h + 1)
}

/// `patron cluster status`.
pub(crate) fn run(nats: &str, as_json: bool) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let status = runtime.block_on(async {
        let broker = Broker::connect(&BrokerOptions {
            url: nats.to_owned(),
            replicas: 1,
            lease_time: std::time::Duration::from_secs(10),
            connection_name: "patron cluster status".into(),
        })
        .await?;
        let partitions = partitions_in_use(&broker).await;
        fleet_status(&broker, partitions).await
    })?;
    let mut status = status;
    fill_from_owners(&mut status);
    if as_json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(());
    }
    println!("nodes ({}):", status.nodes.len());
    for (id, entry) in &status.nodes {
        println!("  {id:<20} {}", entry.http);
    }
    println!("event stream: {} messages, last sequence {}", status.stream_messages, status.stream_last_sequence);
    match &status.model_round {
        None => println!("models: no fleet refit yet (partitions serve the provisional models)"),
        Some(round) => println!(
            "models: round {} {:?}{}; serving round {}",
            round.epoch,
            round.phase,
            round.error.as_deref().map(|e| format!(" ({e})")).unwrap_or_default(),
            round.models_epoch.map_or_else(|| "none".to_owned(), |e| e.to_string()),
        ),
    }
    println!(
        "{:>9}  {:<20} {:>12} {:>12} {:>14} {:>12}  snapshot by",
        "partition", "owner", "applied", "lag (msgs)", "lag (events~)", "snapshot"
    );
    let dash = || "-".to_owned();
    for row in &status.partitions {
        println!(
            "{:>9}  {:<20} {:>12} {:>12} {:>14} {:>12}  {}",
            row.partition,
            row.owner.clone().unwrap_or_else(|| "(moving)".into()),
            row.applied_sequence.map_or_else(dash, |s| s.to_string()),
            row.lag_messages.map_or_else(dash, |s| s.to_string()),
            row.lag_events.map_or_else(dash, |s| s.to_string()),
            row.snapshot_sequence.map_or_else(dash, |s| s.to_string()),
            row.snapshot_node.clone().unwrap_or_else(dash),
        );
    }
    Ok(())
}

/// Fills each partition's applied sequence and lag from its owner's
/// `GET /v1/cluster/status` (an owner that does not answer leaves them empty).
fn fill_from_owners(status: &mut FleetStatus) {
    let mut held = BTreeMap::new();
    for entry in status.nodes.values() {
        let url = format!("{}/v1/cluster/status", entry.http);
        let Ok(response) = ureq::get(&url).timeout(std::time::Duration::from_secs(5)).call() else { continue };
        let Ok(body) = response.into_json::<serde_json::Value>() else { continue };
        for row in body["held"].as_array().into_iter().flatten() {
            if let Some(partition) = row["partition"].as_u64() {
                let lag = (row["lag_messages"].as_u64(), row["lag_events"].as_u64());
                held.insert(partition as u32, (row["applied_sequence"].as_u64(), lag));
            }
        }
    }
    for row in &mut status.partitions {
        if let Some((applied, (messages, events))) = held.get(&row.partition) {
            (row.applied_sequence, row.lag_messages, row.lag_events) = (*applied, *messages, *events);
        }
    }
}

/// `/metrics` of a node: which node owns each partition, and for the
/// partitions this node holds, the applied sequence and the lag.
pub(crate) fn metrics_text(node: &Node, owners: &BTreeMap<u32, String>) -> Result<String> {
    type Labels = Vec<(String, String)>;
    let mut registry = Registry::default();
    let owner = Family::<Labels, Gauge>::default();
    let applied = Family::<Labels, Gauge>::default();
    let lag_messages = Family::<Labels, Gauge>::default();
    let lag_events = Family::<Labels, Gauge>::default();
    let lag_seconds = Family::<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    let restoring = Family::<Labels, Gauge>::default();
    let applied_events = Family::<Labels, Gauge>::default();
    let models_epoch = Family::<Labels, Gauge>::default();
    for (partition, holder) in owners {
        owner.get_or_create(&vec![("partition".into(), partition.to_string()), ("node".into(), holder.clone())]).set(1);
    }
    for status in node.statuses() {
        let labels = vec![("partition".to_owned(), status.partition.to_string())];
        applied.get_or_create(&labels).set(status.applied_sequence as i64);
        lag_messages.get_or_create(&labels).set(status.lag_messages as i64);
        lag_events.get_or_create(&labels).set(status.lag_events as i64);
        lag_seconds.get_or_create(&labels).set(status.lag_seconds);
        restoring.get_or_create(&labels).set(i64::from(status.restoring));
        applied_events.get_or_create(&labels).set(status.applied_events as i64);
        models_epoch.get_or_create(&labels).set(status.models_epoch as i64);
    }
    registry.register("patron_cluster_partition_owner", "1 for the node holding the partition's lease", owner);
    registry.register(
        "patron_cluster_partition_applied_sequence",
        "Last stream sequence applied (partitions this node holds)",
        applied,
    );
    registry.register(
        "patron_cluster_partition_lag_messages",
        "Messages of the partition not yet applied",
        lag_messages,
    );
    registry.register(
        "patron_cluster_partition_lag_events",
        "Events not yet applied, estimated: messages waiting times the mean events per applied message",
        lag_events,
    );
    registry.register(
        "patron_cluster_partition_lag_seconds",
        "Age of the newest applied message while more wait (0 when caught up)",
        lag_seconds,
    );
    registry.register("patron_cluster_partition_restoring", "1 while the partition is being restored", restoring);
    registry.register(
        "patron_cluster_partition_applied_events",
        "Events applied since this node took the partition",
        applied_events,
    );
    registry.register(
        "patron_cluster_partition_models_epoch",
        "Model round whose fits and labels the partition serves (0: none since this node took it)",
        models_epoch,
    );
    let mut text = String::new();
    encode(&mut text, &registry)?;
    Ok(text)
}
