//! One model for the fleet: the BTYD fits and the labels' cuts describe the
//! whole population, not each partition's share of it.
//!
//! A refit is a *round*, recorded under the key `round` of `patron_fleet`
//! and driven by the leader, the node that holds partition 0's lease:
//!
//! ```text
//! leader: round e, inputs ─► every partition's owner puts e/inputs/pNNN (FitInputs)
//! leader: all in ─► merge, fit at the fleet's "now" ─► e/fits; round e, ranks
//!                   every owner scores its partitions with e/fits ─► e/ranks/pNNN
//! leader: all in ─► merge ranks ─► e/cuts; round e, done
//!                   every owner installs e/fits and e/cuts into its partitions
//! ```
//!
//! The fits are those of one node holding every customer, bit for bit: the
//! inputs are counted tables and integer sums that merge exactly
//! ([`FitInputs`]), and the labels compare against order statistics of the
//! merged ranks ([`PopulationRanks`]). "Now" is the fleet's latest event time
//! (or the leader's clock under the wall clock); every partition scores at
//! it, also one whose own events end earlier.
//!
//! A partition that moves keeps its models: the new owner installs the last
//! finished round into it after the restore. A round that stalls (a partition
//! without an owner for long) fails after [`ROUND_TIMEOUT`] and the next one
//! starts over; the models in use stay until a round finishes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use async_nats::jetstream::{kv, object_store};
use futures_util::StreamExt;
use patron_model::Timestamp;
use patron_state::{Clock, Engine, FitInputs, ModelFits, PopulationRanks, ScoredPopulation, SegmentCuts};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use tokio::sync::watch;

use crate::node::{Node, partition_key};
use crate::{ClusterError, Result, broker_error};

/// The key of the current round in `patron_fleet`.
pub const ROUND_KEY: &str = "round";

/// How long a round may wait for every partition's answer.
pub const ROUND_TIMEOUT: Duration = Duration::from_secs(120);

/// How often a node looks at the round.
const TICK: Duration = Duration::from_millis(200);

/// Where a round is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Owners put their partitions' fit inputs.
    Inputs,
    /// The fits are out; owners put their partitions' ranks.
    Ranks,
    /// The cuts are out; owners install fits and cuts.
    Done,
    /// The round ended without models (see `error`).
    Failed,
}

/// The current round, as `patron_fleet` holds it (JSON).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Round {
    /// Increases by one per round.
    pub epoch: u64,
    /// Where it is.
    pub phase: Phase,
    /// When it started (Unix milliseconds).
    pub started_ms: u64,
    /// The event stream's last sequence when it started.
    pub stream_sequence: u64,
    /// The fleet's "now" of the fits (Unix milliseconds), once fitted.
    pub now_ms: Option<i64>,
    /// Buyers in the fit.
    pub buyers: Option<u64>,
    /// Why it failed.
    pub error: Option<String>,
    /// The newest finished round: the models every partition serves.
    pub models_epoch: Option<u64>,
}

impl Round {
    /// Whether no round is running.
    pub fn finished(&self) -> bool {
        matches!(self.phase, Phase::Done | Phase::Failed)
    }
}

fn object_name(epoch: u64, what: &str) -> String {
    format!("e{epoch}/{what}")
}

fn inputs_name(epoch: u64, partition: u32) -> String {
    object_name(epoch, &format!("inputs/{}", partition_key(partition)))
}

fn ranks_name(epoch: u64, partition: u32) -> String {
    object_name(epoch, &format!("ranks/{}", partition_key(partition)))
}

/// The current round and its revision, if one was ever started.
pub async fn current_round(fleet: &kv::Store) -> Result<Option<(Round, u64)>> {
    let entry = fleet.entry(ROUND_KEY).await.map_err(|e| broker_error("read the model round", e))?;
    match entry {
        Some(entry) if entry.operation == kv::Operation::Put => {
            let round = serde_json::from_slice(&entry.value).map_err(|e| broker_error("read the model round", e))?;
            Ok(Some((round, entry.revision)))
        }
        _ => Ok(None),
    }
}

/// Starts a new round unless one is running; returns its epoch (the running
/// one's if there is one). Any node may start one; the leader drives it.
pub async fn start_round(node: &Node) -> Result<u64> {
    let fleet = &node.broker().fleet;
    loop {
        let current = current_round(fleet).await?;
        if let Some((round, _)) = current.as_ref().filter(|(r, _)| !r.finished()) {
            return Ok(round.epoch);
        }
        let stream_sequence = stream_sequence(node).await?;
        let epoch = current.as_ref().map_or(1, |(r, _)| r.epoch + 1);
        let round = Round {
            epoch,
            phase: Phase::Inputs,
            started_ms: now_ms(),
            stream_sequence,
            now_ms: None,
            buyers: None,
            error: None,
            models_epoch: current.as_ref().and_then(|(r, _)| r.models_epoch),
        };
        let value = encode_round(&round)?;
        let written = match current {
            Some((_, revision)) => fleet.update(ROUND_KEY, value, revision).await.is_ok(),
            None => fleet.create(ROUND_KEY, value).await.is_ok(),
        };
        if written {
            tracing::info!(epoch, "model round started");
            return Ok(epoch);
        }
        // Another node started one at the same moment: read it again.
    }
}

/// A refit of the fleet that includes every event acknowledged before the
/// call: waits out a round that is already running (it may have started
/// before those events), then starts one, and waits until it finished or
/// `timeout` passed. `None` on timeout.
pub async fn refit(node: &Node, timeout: Duration) -> Result<Option<Round>> {
    let deadline = Instant::now() + timeout;
    if let Some((running, _)) = current_round(&node.broker().fleet).await?.filter(|(r, _)| !r.finished())
        && wait_for_round(node, running.epoch, timeout).await?.is_none()
    {
        return Ok(None);
    }
    let epoch = start_round(node).await?;
    wait_for_round(node, epoch, deadline.saturating_duration_since(Instant::now())).await
}

/// Waits until round `epoch` (or a later one) has finished, or `timeout`.
pub async fn wait_for_round(node: &Node, epoch: u64, timeout: Duration) -> Result<Option<Round>> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some((round, _)) = current_round(&node.broker().fleet).await?
            && (round.epoch > epoch || (round.epoch == epoch && round.finished()))
        {
            return Ok(Some(round));
        }
        tokio::time::sleep(TICK).await;
    }
    Ok(None)
}

async fn stream_sequence(node: &Node) -> Result<u64> {
    let mut events = node.broker().events.clone();
    let info = events.info().await.map_err(|e| broker_error("read the event stream's state", e))?;
    Ok(info.state.last_sequence)
}

fn encode_round(round: &Round) -> Result<bytes::Bytes> {
    Ok(serde_json::to_vec(round).map_err(|e| broker_error("encode the model round", e))?.into())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

async fn put_object(store: &object_store::ObjectStore, name: &str, bytes: Vec<u8>) -> Result<()> {
    store.put(name, &mut bytes.as_slice()).await.map_err(|e| broker_error("upload a model object", e))?;
    Ok(())
}

async fn get_object(store: &object_store::ObjectStore, name: &str) -> Result<Vec<u8>> {
    let mut object = store.get(name).await.map_err(|e| broker_error("fetch a model object", e))?;
    let mut bytes = Vec::new();
    object.read_to_end(&mut bytes).await.map_err(|e| broker_error("fetch a model object", e))?;
    Ok(bytes)
}

fn to_cbor<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    ciborium::into_writer(value, &mut bytes).map_err(|e| broker_error("encode a model object", e))?;
    Ok(bytes)
}

fn from_cbor<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    ciborium::from_reader(bytes).map_err(|e| broker_error("decode a model object", e))
}

/// Names of a round's objects under `prefix`.
async fn listed(store: &object_store::ObjectStore, prefix: &str) -> Result<BTreeSet<String>> {
    let mut list = store.list().await.map_err(|e| broker_error("list the model objects", e))?;
    let mut names = BTreeSet::new();
    while let Some(info) = list.next().await {
        let info = info.map_err(|e| broker_error("list the model objects", e))?;
        if !info.deleted && info.name.starts_with(prefix) {
            names.insert(info.name);
        }
    }
    Ok(names)
}

async fn blocking<T: Send + 'static>(
    partition: u32,
    action: &'static str,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work).await.map_err(|source| ClusterError::Task { partition, action, source })
}

/// What this node did for the rounds, per partition.
#[derive(Default)]
struct Progress {
    epoch: u64,
    inputs_sent: BTreeSet<u32>,
    /// Scored at the ranks phase, waiting for the cuts (the engine it was scored on).
    scored: BTreeMap<u32, (u64, Weak<Engine>, ScoredPopulation)>,
    ranks_sent: BTreeSet<u32>,
    fits: Option<(u64, ModelFits)>,
    cuts: Option<(u64, SegmentCuts)>,
    /// When this node, as leader, last started a periodic round.
    last_started: Option<Instant>,
}

/// Takes part in the rounds until `shutdown`; as the leader, drives them
/// and starts one every `every` when new events arrived.
pub async fn run(node: Arc<Node>, every: Duration, mut shutdown: watch::Receiver<bool>) {
    let mut progress = Progress::default();
    loop {
        if let Err(e) = step(&node, every, &mut progress).await {
            tracing::warn!("model round: {e}");
        }
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = shutdown.changed() => return,
        }
    }
}

async fn step(node: &Arc<Node>, every: Duration, progress: &mut Progress) -> Result<()> {
    let leading = node.engine(0).is_some();
    let current = current_round(&node.broker().fleet).await?;
    if leading {
        let due = progress.last_started.is_none_or(|at| at.elapsed() >= every);
        let idle = current.as_ref().is_none_or(|(r, _)| r.finished());
        if due && idle {
            progress.last_started = Some(Instant::now());
            let moved_on = match &current {
                Some((round, _)) => stream_sequence(node).await? > round.stream_sequence,
                None => stream_sequence(node).await? > 0,
            };
            if moved_on {
                start_round(node).await?;
            }
        }
    }
    let Some((round, revision)) = current else { return Ok(()) };
    if round.epoch != progress.epoch {
        progress.epoch = round.epoch;
        progress.inputs_sent.clear();
        progress.ranks_sent.clear();
        progress.scored.clear();
    }
    match round.phase {
        Phase::Inputs => send_inputs(node, &round, progress).await?,
        Phase::Ranks => send_ranks(node, &round, progress).await?,
        Phase::Done | Phase::Failed => {}
    }
    if let Some(epoch) = round.models_epoch {
        install(node, epoch, progress).await?;
    }
    if leading {
        lead(node, round, revision).await?;
    }
    Ok(())
}

/// Whether `partition` has applied every message it had in the stream when
/// `round` started (so a refit includes what was acknowledged before it).
async fn caught_up_to_round(node: &Node, partition: u32, round: &Round) -> Result<bool> {
    let events = &node.broker().events;
    let last = match events.get_last_raw_message_by_subject(&crate::partition::subject(partition)).await {
        Ok(message) => message.sequence,
        Err(e) if e.kind() == async_nats::jetstream::stream::LastRawMessageErrorKind::NoMessageFound => 0,
        Err(e) => return Err(broker_error("read a partition's last sequence", e)),
    };
    // A message published after the round started stands for the last one
    // before it: the ordered partition is past that once it applied up to the round's start.
    let needed = last.min(round.stream_sequence);
    Ok(node.applied_sequence(partition).is_some_and(|applied| applied >= needed))
}

async fn send_inputs(node: &Node, round: &Round, progress: &mut Progress) -> Result<()> {
    for (partition, engine) in node.engines() {
        if progress.inputs_sent.contains(&partition) || !caught_up_to_round(node, partition, round).await? {
            continue;
        }
        let inputs = blocking(partition, "gather the fit inputs of", move || engine.fit_inputs()).await?;
        let inputs = inputs.map_err(|source| ClusterError::State { partition, source })?;
        put_object(&node.broker().models, &inputs_name(round.epoch, partition), to_cbor(&inputs)?).await?;
        progress.inputs_sent.insert(partition);
    }
    Ok(())
}

/// The fits round `epoch` published.
pub async fn round_fits(node: &Node, epoch: u64) -> Result<ModelFits> {
    let bytes = get_object(&node.broker().models, &object_name(epoch, "fits")).await?;
    ModelFits::from_bytes(&bytes).ok_or_else(|| broker_error("decode the fleet's fits", BadObject))
}

async fn fits_of(node: &Node, epoch: u64, progress: &mut Progress) -> Result<ModelFits> {
    if let Some((e, fits)) = &progress.fits
        && *e == epoch
    {
        return Ok(fits.clone());
    }
    let fits = round_fits(node, epoch).await?;
    progress.fits = Some((epoch, fits.clone()));
    Ok(fits)
}

async fn send_ranks(node: &Node, round: &Round, progress: &mut Progress) -> Result<()> {
    for (partition, engine) in node.engines() {
        if progress.ranks_sent.contains(&partition) {
            continue;
        }
        let fits = fits_of(node, round.epoch, progress).await?;
        let weak = Arc::downgrade(&engine);
        let scored = blocking(partition, "score", move || engine.score_population(fits)).await?;
        let scored = scored.map_err(|source| ClusterError::State { partition, source })?;
        put_object(&node.broker().models, &ranks_name(round.epoch, partition), to_cbor(&scored.ranks())?).await?;
        progress.scored.insert(partition, (round.epoch, weak, scored));
        progress.ranks_sent.insert(partition);
    }
    Ok(())
}

/// Installs the models of round `epoch` into every held partition that does
/// not serve them yet (after the round, or after a partition moved here).
async fn install(node: &Node, epoch: u64, progress: &mut Progress) -> Result<()> {
    for (partition, engine) in node.engines() {
        // The partition's holder on this node says which round it serves;
        // a partition taken (again) since starts at none.
        if node.models_epoch(partition) == Some(epoch) {
            continue;
        }
        let weak = Arc::downgrade(&engine);
        let fits = fits_of(node, epoch, progress).await?;
        let cuts = match &progress.cuts {
            Some((e, cuts)) if *e == epoch => *cuts,
            _ => {
                let cuts: SegmentCuts =
                    from_cbor(&get_object(&node.broker().models, &object_name(epoch, "cuts")).await?)?;
                progress.cuts = Some((epoch, cuts));
                cuts
            }
        };
        let installing = engine.clone();
        // Scored for this round's ranks on this very engine, or (a partition
        // taken over since) scored now.
        let scored =
            progress.scored.remove(&partition).filter(|(e, w, _)| *e == epoch && w.ptr_eq(&weak)).map(|(.., s)| s);
        blocking(partition, "install the fleet's models into", move || {
            let scored = match scored {
                Some(scored) => scored,
                None => engine.score_population(fits)?,
            };
            engine.install_population(scored, &cuts);
            // As a single node's refit does; the neighbours are the partition's own.
            engine.refresh_recommendations();
            Ok::<_, patron_state::StateError>(())
        })
        .await?
        .map_err(|source| ClusterError::State { partition, source })?;
        node.note_models(partition, &installing, epoch);
        tracing::info!(partition, epoch, "installed the fleet's models");
    }
    Ok(())
}

/// The leader's part: moves the round on once every partition answered.
async fn lead(node: &Node, round: Round, revision: u64) -> Result<()> {
    let partitions = node.options().partitions;
    let store = &node.broker().models;
    let timed_out = now_ms().saturating_sub(round.started_ms) > ROUND_TIMEOUT.as_millis() as u64;
    let next = match round.phase {
        Phase::Done | Phase::Failed => return Ok(()),
        Phase::Inputs | Phase::Ranks => {
            let what = if round.phase == Phase::Inputs { "inputs" } else { "ranks" };
            let names = listed(store, &object_name(round.epoch, &format!("{what}/"))).await?;
            let missing: Vec<u32> = (0..partitions)
                .filter(|p| {
                    let name = if round.phase == Phase::Inputs {
                        inputs_name(round.epoch, *p)
                    } else {
                        ranks_name(round.epoch, *p)
                    };
                    !names.contains(&name)
                })
                .collect();
            if !missing.is_empty() {
                if !timed_out {
                    return Ok(());
                }
                let error = format!("partitions {missing:?} sent no {what} within {}s", ROUND_TIMEOUT.as_secs());
                Round { phase: Phase::Failed, error: Some(error), ..round }
            } else if round.phase == Phase::Inputs {
                fit(node, round).await?
            } else {
                cut(node, round).await?
            }
        }
    };
    let finished = next.finished().then_some((next.epoch, next.phase));
    node.broker()
        .fleet
        .update(ROUND_KEY, encode_round(&next)?, revision)
        .await
        .map_err(|e| broker_error("move the model round on", e))?;
    if let Some((epoch, phase)) = finished {
        tracing::info!(epoch, ?phase, error = next.error.as_deref().unwrap_or(""), "model round finished");
        // Only the round in use and the newest one are read again.
        let names = listed(store, "e").await?;
        for name in names {
            let old = name.strip_prefix('e').and_then(|rest| rest.split('/').next()?.parse::<u64>().ok());
            if old.is_some_and(|old| old != epoch && Some(old) != next.models_epoch) {
                let _ = store.delete(&name).await;
            }
        }
    }
    Ok(())
}

/// Every partition's object of a round, decoded.
async fn every_partition<T: serde::de::DeserializeOwned>(node: &Node, name: impl Fn(u32) -> String) -> Result<Vec<T>> {
    let mut parts = Vec::with_capacity(node.options().partitions as usize);
    for partition in 0..node.options().partitions {
        parts.push(from_cbor(&get_object(&node.broker().models, &name(partition)).await?)?);
    }
    Ok(parts)
}

/// Merges the inputs, fits at the fleet's "now" and publishes the fits.
async fn fit(node: &Node, round: Round) -> Result<Round> {
    let parts: Vec<FitInputs> = every_partition(node, |p| inputs_name(round.epoch, p)).await?;
    let config = (node.options().engine)(Path::new("."));
    let fitted = blocking(0, "fit the fleet's models for", move || {
        let merged = FitInputs::merge(&parts);
        let now = match config.clock {
            Clock::Event => merged.watermark(),
            Clock::Wall => Some(Timestamp::now()),
        };
        let scoring = config.scoring;
        let minor = config.currencies.base.minor_per_major();
        let fits = now.map(|now| merged.fit(now, scoring.time_unit, Some(scoring.model), minor));
        (merged.buyers(), fits, scoring.model)
    })
    .await?;
    let (buyers, fits, model) = fitted;
    let failed =
        |error: String| Round { phase: Phase::Failed, buyers: Some(buyers), error: Some(error), ..round.clone() };
    let Some(fits) = fits else { return Ok(failed("no events yet".into())) };
    if buyers == 0 {
        return Ok(failed("no buyers yet".into()));
    }
    if fits.params(model).is_none() {
        let why = fits.purchase.iter().find(|(m, _)| *m == model).and_then(|(_, r)| r.as_ref().err().cloned());
        return Ok(failed(format!("the {model} fit failed: {}", why.unwrap_or_default())));
    }
    let bytes = fits.to_bytes().ok_or_else(|| broker_error("encode the fleet's fits", BadObject))?;
    put_object(&node.broker().models, &object_name(round.epoch, "fits"), bytes).await?;
    tracing::info!(epoch = round.epoch, buyers, "fitted the fleet's models");
    Ok(Round { phase: Phase::Ranks, now_ms: Some(fits.fitted_at.millis()), buyers: Some(buyers), ..round })
}

/// Merges the ranks and publishes the labels' cuts.
async fn cut(node: &Node, round: Round) -> Result<Round> {
    let parts: Vec<PopulationRanks> = every_partition(node, |p| ranks_name(round.epoch, p)).await?;
    let segments = (node.options().engine)(Path::new(".")).scoring.segments;
    let cuts =
        blocking(0, "rank the fleet's population for", move || PopulationRanks::merge(&parts).cuts(&segments)).await?;
    put_object(&node.broker().models, &object_name(round.epoch, "cuts"), to_cbor(&cuts)?).await?;
    Ok(Round { phase: Phase::Done, models_epoch: Some(round.epoch), ..round })
}

/// A model object that does not decode.
#[derive(Debug, thiserror::Error)]
#[error("the object is damaged or from another version")]
struct BadObject;
