//! The JetStream resources a fleet shares, created on first use by whichever
//! node comes first (creation is idempotent, so nodes may race):
//!
//! - stream `PATRON_EVENTS` on `patron.events.>`: the event log, kept whole
//!   (snapshots let an owner start from the middle, but a new owner may need
//!   anything after the newest snapshot);
//! - key-value `patron_leases`: one key per partition, the owner's node id;
//!   entries expire after the lease time unless renewed;
//! - key-value `patron_nodes`: one key per live node, its HTTP address,
//!   expiring like a lease;
//! - key-value `patron_partitions`: per partition, the newest snapshot
//!   object and the stream sequence it covers;
//! - object store `patron_snapshots`: the snapshot files;
//! - key-value `patron_fleet`: the current model round ([`crate::fleet_model`]);
//! - object store `patron_models`: the rounds' inputs, fits, ranks and cuts.

use std::time::Duration;

use async_nats::jetstream::{self, kv, object_store, stream};
use bytes::Bytes;

use crate::message::EncodedBatch;
use crate::partition::{SUBJECT_PREFIX, subject};
use crate::{ClusterError, Result, broker_error};

/// The event stream's name.
pub const EVENT_STREAM: &str = "PATRON_EVENTS";
/// Partition leases.
pub const LEASE_BUCKET: &str = "patron_leases";
/// Live nodes.
pub const NODE_BUCKET: &str = "patron_nodes";
/// Per partition: the newest snapshot and the sequence it covers.
pub const PARTITION_BUCKET: &str = "patron_partitions";
/// Snapshot files.
pub const SNAPSHOT_STORE: &str = "patron_snapshots";
/// The model round.
pub const FLEET_BUCKET: &str = "patron_fleet";
/// The model rounds' objects.
pub const MODEL_STORE: &str = "patron_models";

/// How long the broker remembers message ids to drop republished copies.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// Handles on the shared resources.
#[derive(Clone)]
pub struct Broker {
    /// The connection.
    pub client: async_nats::Client,
    /// JetStream on it.
    pub jetstream: jetstream::Context,
    /// The event stream.
    pub events: stream::Stream,
    /// Partition leases.
    pub leases: kv::Store,
    /// Live nodes.
    pub nodes: kv::Store,
    /// Snapshot records.
    pub partitions: kv::Store,
    /// Snapshot files.
    pub snapshots: object_store::ObjectStore,
    /// The model round.
    pub fleet: kv::Store,
    /// The model rounds' objects.
    pub models: object_store::ObjectStore,
}

/// How the shared resources are created.
#[derive(Clone, Debug)]
pub struct BrokerOptions {
    /// Servers to connect to, comma separated (`nats://127.0.0.1:4222`).
    pub url: String,
    /// Copies of every stream and bucket (1, or 3 on a three-server cluster).
    pub replicas: usize,
    /// How long a lease or a node entry lives without renewal.
    pub lease_time: Duration,
    /// Name the connection shows on the broker's monitoring pages.
    pub connection_name: String,
}

impl Broker {
    /// Connects and makes sure every shared resource exists.
    pub async fn connect(options: &BrokerOptions) -> Result<Self> {
        let client = async_nats::ConnectOptions::new()
            .name(&options.connection_name)
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(5))
            .connect(options.url.split(',').map(str::trim).filter(|u| !u.is_empty()).collect::<Vec<&str>>())
            .await
            .map_err(|e| ClusterError::Connect { url: options.url.clone(), source: Box::new(e) })?;
        let mut jetstream = jetstream::new(client.clone());
        jetstream.set_timeout(Duration::from_secs(10));
        // A broker cluster that just started elects its JetStream leader
        // first; until then requests fail, so creation is retried a while.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            match Self::resources(client.clone(), jetstream.clone(), options).await {
                Ok(broker) => return Ok(broker),
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::info!("waiting for JetStream: {e}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn resources(
        client: async_nats::Client,
        jetstream: jetstream::Context,
        options: &BrokerOptions,
    ) -> Result<Self> {
        let events = jetstream
            .get_or_create_stream(stream::Config {
                name: EVENT_STREAM.into(),
                subjects: vec![format!("{SUBJECT_PREFIX}.>")],
                storage: stream::StorageType::File,
                num_replicas: options.replicas,
                duplicate_window: DUPLICATE_WINDOW,
                description: Some("Patron purchase events, one subject per partition".into()),
                ..Default::default()
            })
            .await
            .map_err(|e| broker_error("create the event stream", e))?;
        let bucket = |name: &str, max_age: Duration, history: i64| kv::Config {
            bucket: name.into(),
            max_age,
            history,
            storage: stream::StorageType::File,
            num_replicas: options.replicas,
            ..Default::default()
        };
        let leases = key_value(&jetstream, bucket(LEASE_BUCKET, options.lease_time, 1)).await?;
        let nodes = key_value(&jetstream, bucket(NODE_BUCKET, options.lease_time, 1)).await?;
        let partitions = key_value(&jetstream, bucket(PARTITION_BUCKET, Duration::ZERO, 1)).await?;
        let fleet = key_value(&jetstream, bucket(FLEET_BUCKET, Duration::ZERO, 1)).await?;
        let snapshots = object_store(&jetstream, SNAPSHOT_STORE, options.replicas).await?;
        let models = object_store(&jetstream, MODEL_STORE, options.replicas).await?;
        Ok(Self { client, jetstream, events, leases, nodes, partitions, snapshots, fleet, models })
    }

    /// Publishes `batches` and waits for every acknowledgement: once this
    /// returns, each batch is durable in the broker. Returns how many
    /// messages the broker recognised as already published.
    pub async fn publish(&self, batches: Vec<EncodedBatch>) -> Result<PublishSummary> {
        let mut pending = Vec::with_capacity(batches.len());
        for batch in batches {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", batch.message_id.as_str());
            let ack = self
                .jetstream
                .publish_with_headers(subject(batch.partition), headers, Bytes::from(batch.payload))
                .await
                .map_err(|e| broker_error("publish events", e))?;
            pending.push((ack, batch.events));
        }
        let mut summary = PublishSummary::default();
        for (ack, events) in pending {
            let ack = ack.await.map_err(|e| broker_error("publish events (acknowledgement)", e))?;
            summary.messages += 1;
            if ack.duplicate {
                summary.duplicate_events += events;
            } else {
                summary.events += events;
            }
            summary.last_sequence = summary.last_sequence.max(ack.sequence);
        }
        Ok(summary)
    }
}

/// What [`Broker::publish`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PublishSummary {
    /// Messages acknowledged.
    pub messages: usize,
    /// Events in messages stored for the first time.
    pub events: usize,
    /// Events in messages the broker had already stored (a retry).
    pub duplicate_events: usize,
    /// Highest stream sequence acknowledged.
    pub last_sequence: u64,
}

/// The object store `name`, created if missing (nodes may race, as for buckets).
async fn object_store(
    jetstream: &jetstream::Context,
    name: &str,
    replicas: usize,
) -> Result<object_store::ObjectStore> {
    if let Ok(store) = jetstream.get_object_store(name).await {
        return Ok(store);
    }
    let config = object_store::Config {
        bucket: name.into(),
        storage: stream::StorageType::File,
        num_replicas: replicas,
        ..Default::default()
    };
    match jetstream.create_object_store(config).await {
        Ok(store) => Ok(store),
        Err(create) => {
            jetstream.get_object_store(name).await.map_err(|_| broker_error("create an object store", create))
        }
    }
}

/// The bucket `config` names, created if missing (two nodes may race: the
/// loser reads what the winner created).
async fn key_value(jetstream: &jetstream::Context, config: kv::Config) -> Result<kv::Store> {
    if let Ok(store) = jetstream.get_key_value(config.bucket.as_str()).await {
        return Ok(store);
    }
    let name = config.bucket.clone();
    match jetstream.create_key_value(config).await {
        Ok(store) => Ok(store),
        Err(create) => {
            jetstream.get_key_value(name.as_str()).await.map_err(|_| broker_error("create a bucket", create))
        }
    }
}
