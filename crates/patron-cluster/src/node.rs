//! One node of a fleet: its membership, the partitions it holds, and for each
//! of them a worker that restores, applies and snapshots.
//!
//! The control loop runs every third of the lease time. It renews this
//! node's entry among the live nodes, computes which partitions this node
//! should own among the live ones ([`desired_owner`]), takes the free ones,
//! renews the ones it holds, and hands over the ones that should move (a last
//! snapshot, then the lease is deleted so the new owner need not wait for it
//! to expire). A node that dies stops renewing; its leases expire and the
//! survivors take its partitions from their newest snapshots.
//!
//! A worker applies only while its lease is fresh: it notes when it last
//! *sent* a renewal (the broker's expiry counts from a later instant), and
//! stops applying once three quarters of the lease time have passed since.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use async_nats::jetstream::kv;
use futures_util::StreamExt;
use patron_model::{Event, SinkError, SubmitOutcome};
use patron_state::{Engine, EngineConfig};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::broker::Broker;
use crate::message::decode_batch;
use crate::partition::{desired_owner, subject};
use crate::{ClusterError, Result, broker_error};

/// Builds the engine settings for a partition's directory.
pub type EngineFactory = Arc<dyn Fn(&Path) -> EngineConfig + Send + Sync>;

/// Called after each snapshot of a partition (the server exports Parquet here).
pub type SnapshotHook = Arc<dyn Fn(u32, &Arc<Engine>, u64) + Send + Sync>;

/// How a node runs.
#[derive(Clone)]
pub struct NodeOptions {
    /// This node's id, unique in the fleet.
    pub node_id: String,
    /// Partitions in the fleet (the same on every node).
    pub partitions: u32,
    /// Where partition states live: `<data_dir>/partitions/p<NNN>`.
    pub data_dir: PathBuf,
    /// This node's HTTP address as other nodes reach it (for forwarding).
    pub http_address: String,
    /// How long a lease lives without renewal.
    pub lease_time: Duration,
    /// How often a partition with new events is snapshotted.
    pub snapshot_every: Duration,
    /// Engine settings per partition.
    pub engine: EngineFactory,
    /// Runs after each snapshot.
    pub on_snapshot: Option<SnapshotHook>,
}

/// The record of a partition's newest snapshot, in `patron_partitions`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SnapshotRecord {
    /// Stream sequence of the last message the snapshot includes.
    pub sequence: u64,
    /// Object name in `patron_snapshots`.
    pub object: String,
    /// The engine's file name for it (restored under `snapshots/`).
    pub file_name: String,
    /// Node that wrote it.
    pub node: String,
}

/// A live node's entry in `patron_nodes`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeEntry {
    /// Its HTTP address.
    pub http: String,
}

/// Where a held partition is.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PartitionStatus {
    /// Which.
    pub partition: u32,
    /// Still restoring its snapshot or creating its consumer.
    pub restoring: bool,
    /// Last stream sequence applied.
    pub applied_sequence: u64,
    /// Messages in the stream after it, as the broker last said.
    pub lag_messages: u64,
    /// Events in those messages, estimated as the messages times the mean
    /// events per message this node applied for the partition (a message
    /// holds one request's events of the partition; only delivery reveals how many).
    pub lag_events: u64,
    /// Seconds between the newest applied message's publication and now.
    pub lag_seconds: f64,
    /// Events applied since this node took it.
    pub applied_events: u64,
    /// The model round whose fits and cuts it serves (0: none installed
    /// since this node took it; see [`crate::fleet_model`]).
    pub models_epoch: u64,
    /// Why applying stopped, if it did.
    pub failure: Option<String>,
}

/// A partition this node holds.
struct Held {
    partition: u32,
    lease_revision: AtomicU64,
    /// When the last successful renewal was sent.
    renewed_at: Mutex<Instant>,
    engine: RwLock<Option<Arc<Engine>>>,
    restoring: AtomicBool,
    applied_sequence: AtomicU64,
    /// Stream sequence the newest uploaded snapshot covers.
    snapshot_sequence: AtomicU64,
    applied_events: AtomicU64,
    applied_messages: AtomicU64,
    models_epoch: AtomicU64,
    lag_messages: AtomicU64,
    /// Publication time of the newest applied message, ms since the epoch.
    newest_published_ms: AtomicU64,
    failure: Mutex<Option<String>>,
    /// Set to ask the worker for a snapshot now.
    snapshot_asked: AtomicBool,
    /// Snapshots written since this node took the partition.
    snapshots_taken: AtomicU64,
    /// `true` asks the worker to stop; it snapshots first unless the lease is lost.
    stop: watch::Sender<Stop>,
    worker: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    Run,
    /// Hand over: snapshot, then stop.
    HandOver,
    /// The lease is gone: stop at once, write nothing.
    Lost,
}

impl Held {
    fn lease_fresh(&self, lease_time: Duration) -> bool {
        self.renewed_at.lock().map(|at| at.elapsed() < lease_time * 3 / 4).unwrap_or(false)
    }

    fn status(&self) -> PartitionStatus {
        let newest = self.newest_published_ms.load(Ordering::Relaxed);
        let lag_messages = self.lag_messages.load(Ordering::Relaxed);
        let lag_seconds =
            if newest == 0 || lag_messages == 0 { 0.0 } else { (now_ms().saturating_sub(newest)) as f64 / 1e3 };
        PartitionStatus {
            partition: self.partition,
            restoring: self.restoring.load(Ordering::Relaxed),
            applied_sequence: self.applied_sequence.load(Ordering::Relaxed),
            lag_messages,
            lag_events: {
                let (events, messages) =
                    (self.applied_events.load(Ordering::Relaxed), self.applied_messages.load(Ordering::Relaxed));
                if messages == 0 {
                    lag_messages
                } else {
                    (lag_messages as f64 * events as f64 / messages as f64).round() as u64
                }
            },
            lag_seconds,
            applied_events: self.applied_events.load(Ordering::Relaxed),
            models_epoch: self.models_epoch.load(Ordering::Relaxed),
            failure: self.failure.lock().ok().and_then(|f| f.clone()),
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The key of a partition in the lease and partition buckets.
pub fn partition_key(partition: u32) -> String {
    format!("p{partition:03}")
}

/// A running node.
pub struct Node {
    broker: Broker,
    options: NodeOptions,
    held: Mutex<BTreeMap<u32, Arc<Held>>>,
    /// One per partition: a restore waits here until the release of the same
    /// partition on this node has shut its engine down and removed its directory.
    directories: Vec<tokio::sync::Mutex<()>>,
}

impl Node {
    /// A node on `broker`; call [`Node::run`] to start it.
    pub fn new(broker: Broker, options: NodeOptions) -> Arc<Self> {
        let directories = (0..options.partitions).map(|_| tokio::sync::Mutex::new(())).collect();
        Arc::new(Self { broker, options, held: Mutex::new(BTreeMap::new()), directories })
    }

    /// The broker handles.
    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    /// The settings.
    pub fn options(&self) -> &NodeOptions {
        &self.options
    }

    /// The model round `partition` serves on this node, if this node holds it
    /// (0: none installed since this node took it).
    pub fn models_epoch(&self, partition: u32) -> Option<u64> {
        let held = self.held.lock().ok()?.get(&partition).cloned()?;
        Some(held.models_epoch.load(Ordering::Relaxed))
    }

    /// The last stream sequence applied to `partition`, if this node holds it.
    pub fn applied_sequence(&self, partition: u32) -> Option<u64> {
        let held = self.held.lock().ok()?.get(&partition).cloned()?;
        Some(held.applied_sequence.load(Ordering::Relaxed))
    }

    /// The engine of `partition` if this node holds it and has restored it.
    pub fn engine(&self, partition: u32) -> Option<Arc<Engine>> {
        let held = self.held.lock().ok()?.get(&partition).cloned()?;
        if held.restoring.load(Ordering::Relaxed) {
            return None;
        }
        held.engine.read().ok()?.clone()
    }

    /// Every partition this node holds, restored or not.
    pub fn statuses(&self) -> Vec<PartitionStatus> {
        let held: Vec<Arc<Held>> = self.held.lock().map(|h| h.values().cloned().collect()).unwrap_or_default();
        held.iter().map(|h| h.status()).collect()
    }

    /// Notes that `engine`, as `partition`'s, serves the models of round
    /// `epoch` (ignored if the partition has moved to another engine since).
    pub fn note_models(&self, partition: u32, engine: &Arc<Engine>, epoch: u64) {
        let Some(held) = self.held.lock().ok().and_then(|h| h.get(&partition).cloned()) else { return };
        if held.engine.read().ok().and_then(|e| e.clone()).is_some_and(|e| Arc::ptr_eq(&e, engine)) {
            held.models_epoch.store(epoch, Ordering::Relaxed);
        }
    }

    /// Engines of the restored partitions this node holds.
    pub fn engines(&self) -> Vec<(u32, Arc<Engine>)> {
        let held: Vec<Arc<Held>> = self.held.lock().map(|h| h.values().cloned().collect()).unwrap_or_default();
        held.iter()
            .filter(|h| !h.restoring.load(Ordering::Relaxed))
            .filter_map(|h| Some((h.partition, h.engine.read().ok()?.clone()?)))
            .collect()
    }

    /// Asks every held partition to snapshot now (and so to export), and
    /// waits until each has, or until `timeout`. Returns the partitions
    /// snapshotted with the stream sequence each covers.
    pub async fn snapshot_all(&self, timeout: Duration) -> Vec<(u32, u64)> {
        let held: Vec<Arc<Held>> = self.held.lock().map(|h| h.values().cloned().collect()).unwrap_or_default();
        let asked: Vec<(Arc<Held>, u64)> = held
            .into_iter()
            .map(|h| {
                let before = h.snapshots_taken.load(Ordering::Acquire);
                h.snapshot_asked.store(true, Ordering::Release);
                (h, before)
            })
            .collect();
        let deadline = Instant::now() + timeout;
        let mut done = Vec::new();
        for (h, before) in asked {
            while h.snapshots_taken.load(Ordering::Acquire) == before && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if h.snapshots_taken.load(Ordering::Acquire) > before {
                done.push((h.partition, h.snapshot_sequence.load(Ordering::Acquire)));
            }
        }
        done
    }

    /// Runs the control loop until `shutdown` turns true, then hands every
    /// partition over (a last snapshot each) and leaves the fleet.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let tick = self.options.lease_time / 3;
        loop {
            if let Err(e) = self.control_step().await {
                tracing::warn!("cluster control step failed: {e}");
            }
            tokio::select! {
                () = tokio::time::sleep(tick) => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                break;
            }
        }
        let held: Vec<u32> = self.held.lock().map(|h| h.keys().copied().collect()).unwrap_or_default();
        for partition in held {
            self.release(partition, Stop::HandOver).await;
        }
        let _ = self.broker.nodes.delete(&self.options.node_id).await;
    }

    /// The live nodes and their HTTP addresses.
    pub async fn live_nodes(&self) -> Result<BTreeMap<String, NodeEntry>> {
        live_nodes(&self.broker.nodes).await
    }

    async fn control_step(self: &Arc<Self>) -> Result<()> {
        let me = self.options.node_id.clone();
        // Renewals first: a slow handover or restore, or a failed read of the
        // live nodes, must never delay them.
        let held: Vec<Arc<Held>> = self.held.lock().map(|h| h.values().cloned().collect()).unwrap_or_default();
        let mut renewals = Vec::with_capacity(held.len());
        for held in &held {
            let failed = held.worker.lock().is_ok_and(|w| w.as_ref().is_some_and(|t| t.is_finished()));
            if failed {
                // The worker stopped on an error: give the partition up cleanly;
                // the desired owner (perhaps this node) restarts it from its snapshot.
                self.spawn_release(held.partition, Stop::Lost, true);
            } else {
                renewals.push(self.renew(held));
            }
        }
        // All at once: while the broker elects a leader each request may wait
        // for its timeout, and one after the other they would outlast the lease.
        futures_util::future::join_all(renewals).await;
        let entry = serde_json::to_vec(&NodeEntry { http: self.options.http_address.clone() }).unwrap_or_default();
        self.broker.nodes.put(&me, entry.into()).await.map_err(|e| broker_error("renew the node entry", e))?;
        let mut live: Vec<String> = self.live_nodes().await?.into_keys().collect();
        if !live.contains(&me) {
            live.push(me.clone());
        }
        for partition in 0..self.options.partitions {
            let desired = desired_owner(&live, partition) == Some(me.as_str());
            let holds = self.held.lock().is_ok_and(|h| h.contains_key(&partition));
            match (holds, desired) {
                (true, false) => self.spawn_release(partition, Stop::HandOver, true),
                (false, true) => self.take(partition).await,
                _ => {}
            }
        }
        Ok(())
    }

    /// Releases `partition` in the background, so the control loop keeps renewing the others.
    fn spawn_release(self: &Arc<Self>, partition: u32, how: Stop, delete_lease: bool) {
        let Some(held) = self.held.lock().ok().and_then(|mut h| h.remove(&partition)) else { return };
        let node = self.clone();
        tokio::spawn(async move { node.finish_release(held, how, delete_lease).await });
    }

    async fn renew(self: &Arc<Self>, held: &Arc<Held>) {
        let sent = Instant::now();
        let key = partition_key(held.partition);
        let revision = held.lease_revision.load(Ordering::Relaxed);
        match self.broker.leases.update(&key, self.options.node_id.clone().into(), revision).await {
            Ok(next) => {
                held.lease_revision.store(next, Ordering::Relaxed);
                if let Ok(mut at) = held.renewed_at.lock() {
                    *at = sent;
                }
            }
            // Another revision: the lease expired and may be someone else's now.
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                tracing::warn!(partition = held.partition, "lost the lease ({e}); stopping without writing");
                self.spawn_release(held.partition, Stop::Lost, false);
            }
            // The broker did not answer (a server died and its buckets are
            // electing a leader): keep the partition and try again next tick.
            // The worker pauses once the lease is no longer fresh, and goes on
            // where it was when a renewal succeeds, which proves nobody took it.
            Err(e) => tracing::warn!(partition = held.partition, "cannot renew the lease now ({e}); will retry"),
        }
    }

    async fn take(self: &Arc<Self>, partition: u32) {
        let sent = Instant::now();
        let key = partition_key(partition);
        let Ok(revision) = self.broker.leases.create(&key, self.options.node_id.clone().into()).await else {
            return; // Another node holds it; its lease will expire or it will hand it over.
        };
        tracing::info!(partition, "took the lease");
        let (stop, stop_rx) = watch::channel(Stop::Run);
        let held = Arc::new(Held {
            partition,
            lease_revision: AtomicU64::new(revision),
            renewed_at: Mutex::new(sent),
            engine: RwLock::new(None),
            restoring: AtomicBool::new(true),
            applied_sequence: AtomicU64::new(0),
            snapshot_sequence: AtomicU64::new(0),
            applied_events: AtomicU64::new(0),
            applied_messages: AtomicU64::new(0),
            models_epoch: AtomicU64::new(0),
            lag_messages: AtomicU64::new(0),
            newest_published_ms: AtomicU64::new(0),
            failure: Mutex::new(None),
            snapshot_asked: AtomicBool::new(false),
            snapshots_taken: AtomicU64::new(0),
            stop,
            worker: Mutex::new(None),
        });
        if let Ok(mut map) = self.held.lock() {
            map.insert(partition, held.clone());
        }
        let node = self.clone();
        let worker_held = held.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = node.work(&worker_held, stop_rx).await {
                tracing::error!(partition, "partition worker stopped: {e}");
                if let Ok(mut failure) = worker_held.failure.lock() {
                    *failure = Some(e.to_string());
                }
            }
        });
        if let Ok(mut worker) = held.worker.lock() {
            *worker = Some(task);
        }
    }

    /// Stops the worker of `partition` (`HandOver`: after a last snapshot)
    /// and deletes the lease if this node still holds it.
    async fn release(&self, partition: u32, how: Stop) {
        let Some(held) = self.held.lock().ok().and_then(|mut h| h.remove(&partition)) else { return };
        self.finish_release(held, how, how == Stop::HandOver).await;
    }

    async fn finish_release(&self, held: Arc<Held>, how: Stop, delete_lease: bool) {
        let partition = held.partition;
        let _ = held.stop.send(how);
        let task = held.worker.lock().ok().and_then(|mut w| w.take());
        if let Some(task) = task {
            let _ = task.await;
        }
        let _directory = self.directories[partition as usize].lock().await;
        let engine = held.engine.write().ok().and_then(|mut e| e.take());
        if let Some(engine) = engine {
            // Other holders of the Arc (a query) finish first; the last one shuts it down.
            if let Ok(engine) = Arc::try_unwrap(engine) {
                let _ = tokio::task::spawn_blocking(move || engine.shutdown()).await;
                // The next owner, this node included, restores from the broker.
                let dir = self.options.data_dir.join("partitions").join(partition_key(partition));
                if let Err(e) = std::fs::remove_dir_all(&dir) {
                    tracing::warn!(partition, "cannot remove {}: {e}", dir.display());
                }
            }
        }
        // Last: another owner (or this node again) may take it from here.
        if delete_lease {
            let revision = held.lease_revision.load(Ordering::Relaxed);
            let _ = self.broker.leases.delete_expect_revision(partition_key(partition), Some(revision)).await;
            tracing::info!(partition, "released the partition");
        }
    }

    /// Restores `held`, then applies its stream until told to stop.
    async fn work(&self, held: &Arc<Held>, stop: watch::Receiver<Stop>) -> Result<()> {
        let partition = held.partition;
        let (engine, record, record_revision) = self.restore(partition).await?;
        let engine = Arc::new(engine);
        let mut written = Written {
            revision: record_revision,
            sequence: record.as_ref().map_or(0, |r| r.sequence),
            object: record.map(|r| r.object),
        };
        held.applied_sequence.store(written.sequence, Ordering::Relaxed);
        held.snapshot_sequence.store(written.sequence, Ordering::Release);
        if let Ok(mut slot) = held.engine.write() {
            *slot = Some(engine.clone());
        }
        let mut messages = self.consumer(partition, written.sequence + 1).await?;
        held.restoring.store(false, Ordering::Relaxed);
        tracing::info!(partition, from = written.sequence + 1, "applying");
        let mut last_snapshot = Instant::now();
        loop {
            match *stop.borrow() {
                Stop::Lost => return Ok(()),
                Stop::HandOver => break,
                Stop::Run => {}
            }
            let asked = held.snapshot_asked.swap(false, Ordering::AcqRel);
            let due = last_snapshot.elapsed() >= self.options.snapshot_every
                && held.applied_sequence.load(Ordering::Relaxed) > written.sequence;
            if asked || due {
                written = self.snapshot(held, &engine, &written).await?;
                last_snapshot = Instant::now();
            }
            // Waits at most half a second, so a stop or a request is seen soon.
            self.apply_some(held, &engine, &mut messages).await?;
        }
        if held.applied_sequence.load(Ordering::Relaxed) > written.sequence && held.lease_fresh(self.options.lease_time)
        {
            self.snapshot(held, &engine, &written).await?;
        }
        Ok(())
    }

    /// A fresh directory for `partition`, with the newest snapshot in it, opened.
    async fn restore(&self, partition: u32) -> Result<(Engine, Option<SnapshotRecord>, Option<u64>)> {
        let _directory = self.directories[partition as usize].lock().await;
        let key = partition_key(partition);
        let dir = self.options.data_dir.join("partitions").join(&key);
        let io = |action: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| ClusterError::Io { partition, action, path, source }
        };
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(io("remove the stale directory", &dir))?;
        }
        let snapshots = dir.join("snapshots");
        std::fs::create_dir_all(&snapshots).map_err(io("create", &snapshots))?;
        let entry = self.broker.partitions.entry(&key).await.map_err(|e| broker_error("read a snapshot record", e))?;
        let (record, revision) = match entry {
            Some(entry) if entry.operation == kv::Operation::Put => {
                let record: SnapshotRecord =
                    serde_json::from_slice(&entry.value).map_err(|e| broker_error("read a snapshot record", e))?;
                let path = snapshots.join(&record.file_name);
                let mut object =
                    self.broker.snapshots.get(&record.object).await.map_err(|e| broker_error("fetch a snapshot", e))?;
                let mut file = tokio::fs::File::create(&path).await.map_err(io("create", &path))?;
                tokio::io::copy(&mut object, &mut file).await.map_err(io("download into", &path))?;
                file.sync_all().await.map_err(io("sync", &path))?;
                tracing::info!(partition, sequence = record.sequence, "restored the snapshot");
                (Some(record), Some(entry.revision))
            }
            _ => (None, None),
        };
        let config = (self.options.engine)(&dir);
        let engine = tokio::task::spawn_blocking(move || Engine::open(config))
            .await
            .map_err(|source| ClusterError::Task { partition, action: "open", source })?
            .map_err(|source| ClusterError::State { partition, source })?
            .0;
        Ok((engine, record, revision))
    }

    /// This partition's messages from stream sequence `start` on, in order and
    /// without gaps: an ordered consumer, which the client recreates from the
    /// last sequence it delivered whenever it sees a gap or misses heartbeats
    /// (a broker that fails over can lose a pull in flight; with a durable
    /// consumer and cumulative acknowledgements, that message would be skipped).
    /// The progress that matters is the snapshot's sequence, not the broker's.
    async fn consumer(&self, partition: u32, start: u64) -> Result<pull::Ordered> {
        let consumer = self
            .broker
            .events
            .create_consumer(pull::OrderedConfig {
                filter_subject: subject(partition),
                deliver_policy: DeliverPolicy::ByStartSequence { start_sequence: start.max(1) },
                ..Default::default()
            })
            .await
            .map_err(|e| broker_error("create a partition consumer", e))?;
        consumer.messages().await.map_err(|e| broker_error("read a partition", e))
    }

    /// Takes what has arrived (waiting up to half a second, at most 4,096
    /// messages) and applies it.
    async fn apply_some(&self, held: &Held, engine: &Arc<Engine>, messages: &mut pull::Ordered) -> Result<()> {
        if !held.lease_fresh(self.options.lease_time) {
            tokio::time::sleep(Duration::from_millis(100)).await;
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
        let mut events: Vec<Event> = Vec::new();
        let mut last = None;
        let mut taken: u64 = 0;
        while taken < 4_096 {
            // After the first message, take only what is already there.
            let wait_until = if last.is_some() { tokio::time::Instant::now() } else { deadline };
            let Ok(next) = tokio::time::timeout_at(wait_until, messages.next()).await else { break };
            let Some(message) = next else {
                return Err(broker_error("read a partition", std::io::Error::other("the message stream ended")));
            };
            let message = message.map_err(|e| broker_error("read a partition", e))?;
            let info = message
                .info()
                .map_err(|source| ClusterError::Broker { action: "read a message's sequence", source })?;
            let (sequence, pending, published) =
                (info.stream_sequence, info.pending, info.published.unix_timestamp_nanos() / 1_000_000);
            taken += 1;
            if sequence <= held.applied_sequence.load(Ordering::Relaxed) {
                continue; // Already applied (the consumer restarted behind it).
            }
            match decode_batch(&message.payload) {
                Ok(batch) => events.extend(batch),
                Err(e) => tracing::error!(partition = held.partition, sequence, "skipping a message: {e}"),
            }
            last = Some((sequence, pending, published.max(0) as u64));
        }
        let Some((sequence, pending, published)) = last else { return Ok(()) };
        // Fenced again: the wait may have been long. The events wait until a
        // renewal succeeds (nobody took the partition meanwhile); once the
        // lease is lost for good the worker stops, and the partition restarts
        // from its snapshot wherever it is taken next.
        while !held.lease_fresh(self.options.lease_time) {
            if *held.stop.borrow() != Stop::Run {
                return Err(ClusterError::LeaseExpired { partition: held.partition });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let count = events.len() as u64;
        let outcome =
            submit(engine, events).await.map_err(|source| ClusterError::Apply { partition: held.partition, source })?;
        if !outcome.refused.is_empty() {
            tracing::warn!(partition = held.partition, refused = outcome.refused.len(), "events refused on apply");
        }
        held.applied_sequence.store(sequence, Ordering::Relaxed);
        held.applied_events.fetch_add(count, Ordering::Relaxed);
        held.applied_messages.fetch_add(taken, Ordering::Relaxed);
        held.lag_messages.store(pending, Ordering::Relaxed);
        held.newest_published_ms.store(published, Ordering::Relaxed);
        Ok(())
    }

    /// Snapshots `engine`, uploads it, and records it (compare-and-set on the
    /// record's revision: a node that lost the partition cannot overwrite the
    /// new owner's record), then deletes the snapshot it replaces.
    async fn snapshot(&self, held: &Held, engine: &Arc<Engine>, previous: &Written) -> Result<Written> {
        let partition = held.partition;
        let sequence = held.applied_sequence.load(Ordering::Relaxed);
        let snapshotting = engine.clone();
        let report = tokio::task::spawn_blocking(move || snapshotting.snapshot())
            .await
            .map_err(|source| ClusterError::Task { partition, action: "snapshot", source })?
            .map_err(|source| ClusterError::State { partition, source })?;
        // One object per snapshot: the record names it only once it is whole.
        let object =
            format!("{}/{sequence:020}-{}", partition_key(partition), held.snapshots_taken.load(Ordering::Relaxed));
        let mut file = tokio::fs::File::open(&report.path).await.map_err(|source| ClusterError::Io {
            partition,
            action: "read",
            path: report.path.clone(),
            source,
        })?;
        self.broker
            .snapshots
            .put(object.as_str(), &mut file)
            .await
            .map_err(|e| broker_error("upload a snapshot", e))?;
        let file_name = report.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let record = SnapshotRecord { sequence, object: object.clone(), file_name, node: self.options.node_id.clone() };
        let value: bytes::Bytes =
            serde_json::to_vec(&record).map_err(|e| broker_error("encode a snapshot record", e))?.into();
        let key = partition_key(partition);
        let recorded = match previous.revision {
            Some(revision) => self
                .broker
                .partitions
                .update(&key, value, revision)
                .await
                .map_err(|e| broker_error("record a snapshot", e)),
            None => self.broker.partitions.create(&key, value).await.map_err(|e| broker_error("record a snapshot", e)),
        };
        let revision = match recorded {
            Ok(revision) => revision,
            Err(e) => {
                // Another node recorded one since: it owns the partition now.
                let _ = self.broker.snapshots.delete(&object).await;
                return Err(e);
            }
        };
        if let Some(old) = previous.object.as_deref().filter(|old| *old != object) {
            let _ = self.broker.snapshots.delete(old).await;
        }
        tracing::info!(partition, sequence, bytes = report.bytes, "snapshot uploaded");
        if let Some(hook) = &self.options.on_snapshot {
            let (hook, engine) = (hook.clone(), engine.clone());
            let _ = tokio::task::spawn_blocking(move || hook(partition, &engine, sequence)).await;
        }
        held.snapshot_sequence.store(sequence, Ordering::Release);
        held.snapshots_taken.fetch_add(1, Ordering::AcqRel);
        Ok(Written { revision: Some(revision), sequence, object: Some(object) })
    }
}

/// The newest snapshot a worker recorded (or restored).
struct Written {
    /// Revision of its record, for the next compare-and-set.
    revision: Option<u64>,
    /// Stream sequence it covers.
    sequence: u64,
    /// Its object.
    object: Option<String>,
}

/// Applies `events` and waits until they are durable and applied, retrying
/// while the engine's queue is full.
async fn submit(engine: &Arc<Engine>, events: Vec<Event>) -> std::result::Result<SubmitOutcome, SinkError> {
    loop {
        let (tx, rx) = tokio::sync::oneshot::channel();
        engine.submit_with(events.clone(), move |r| {
            let _ = tx.send(r);
        });
        match rx.await {
            Ok(Err(SinkError::Overloaded { retry_after_ms })) => {
                tokio::time::sleep(Duration::from_millis(retry_after_ms)).await;
            }
            Ok(result) => return result,
            Err(_) => return Err(SinkError::Unavailable("the partition's engine stopped".into())),
        }
    }
}

/// The live nodes in `bucket` and their entries.
pub async fn live_nodes(bucket: &kv::Store) -> Result<BTreeMap<String, NodeEntry>> {
    let mut keys = bucket.keys().await.map_err(|e| broker_error("list live nodes", e))?;
    let mut live = BTreeMap::new();
    while let Some(key) = keys.next().await {
        let key = key.map_err(|e| broker_error("list live nodes", e))?;
        if let Ok(Some(value)) = bucket.get(key.as_str()).await
            && let Ok(entry) = serde_json::from_slice::<NodeEntry>(&value)
        {
            live.insert(key, entry);
        }
    }
    Ok(live)
}

/// Who holds each partition, as the lease bucket says now.
pub async fn lease_map(broker: &Broker, partitions: u32) -> Result<BTreeMap<u32, String>> {
    let mut map = BTreeMap::new();
    for partition in 0..partitions {
        if let Some(owner) =
            broker.leases.get(partition_key(partition)).await.map_err(|e| broker_error("read a lease", e))?
        {
            map.insert(partition, String::from_utf8_lossy(&owner).into_owned());
        }
    }
    Ok(map)
}
