//! The streaming engine: sharded customer state behind a write-ahead log.
//!
//! Design constraints:
//! - **Durable, then applied.** A batch is appended to the log; only when the
//!   log reports it durable are its events routed to the shards and applied.
//!   Every score a reader sees is backed by durable events, and the producer's
//!   answer (accepted / duplicates) is sent after apply.
//! - **One writer per shard.** Events are routed by a hash of the customer id
//!   to a shard thread over a bounded crossbeam channel; the shard's book is
//!   behind a lock that its writer takes once per batch and readers share.
//! - **O(1) per event.** Applying an event touches one record; the customer is
//!   then rescored with the current model snapshot (provisional defaults until
//!   the first fit).
//! - **Kernels off the event path.** [`Engine::refit`] gathers inputs under
//!   short read locks, fits and scores on the rayon pool, then writes scores
//!   and segments back shard by shard.
//! - **Exactly once over a horizon.** Each shard remembers the fingerprint
//!   of every event it applied within the deduplication horizon
//!   ([`crate::dedup`]); an event older than what it remembers is refused
//!   with a reason, never applied twice. The index is part of the snapshot.
//! - **Recovery = newest readable snapshot + log tail**, before anything is
//!   accepted. [`Engine::snapshot`] cuts consistently by logging a checkpoint
//!   marker: each shard hands over its chunks (shared copy-on-write) when the
//!   marker reaches it, and the snapshot is streamed from them.
//!
//! ```text
//! submit ─► WAL (group commit, fdatasync) ─► route by hash(customer) ─► shard thread: apply + rescore ─► answer
//!                                                                         ▲
//!                                              refit: gather ─► fit ─► score_all ─► segments ─► write back
//! ```

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam::channel::{Receiver, Sender, bounded};
use patron_model::{
    CurrencyTable, CustomerId, Event, EventSink, Refused, SinkError, SubmitOutcome, Timestamp, Validator, check_bounds,
    decode_event, encode_event,
};
use patron_score::{
    BetaGeoParams, ClvConfig, GammaGammaParams, PopulationRanks, PurchaseModel, PurchaseParams, ScoreCache, ScoreInput,
    Scorer, Scores, SegmentCuts, SegmentInput, Segments,
};
use patron_storage::{RealDisk, Storage, crash_point};
use patron_wal::{RecoveryReport, Wal, WalError, WalOptions};
use rayon::prelude::*;

use crate::book::CustomerBook;
use crate::campaigns::{self, CampaignDefinition, GroupResult, GroupSums, Member, MemberSeed};
use crate::catalog::ProductCatalog;
use crate::chunk::CHUNK;
use crate::dedup::{DEFAULT_DEDUP_HORIZON_DAYS, DedupIndex, IdHasher};
use crate::item_feed::{self, FeedSender, ItemFeed};
use crate::items::{ItemConfig, ItemStats, Observed, RecsModel};
use crate::recommend::{BlendConfig, ListKind, Recommendation, recommend};
use crate::record::{Applied, CustomerRecord, Refusal};
use crate::scoring::{FitInputs, ModelFits, ScoringConfig, parameter_covariance, scorer_for};
use crate::snapshot::{
    Cut, Section, ShardState, SharedState, Snapshot, SnapshotError, SnapshotFile, list_snapshots, write_snapshot,
};
use crate::{Result, StateError};

/// What "now" is for scoring.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Clock {
    /// The latest event time applied (default): replaying history gives the same scores as running live.
    #[default]
    Event,
    /// The system clock.
    Wall,
}

/// How the engine is set up.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// What "now" is for scoring.
    pub clock: Clock,
    /// Directory of the log (and, later, snapshots).
    pub data_dir: PathBuf,
    /// Shard writer threads.
    pub shards: usize,
    /// Batches that may wait per shard.
    pub shard_queue: usize,
    /// Models, CLV and segment settings.
    pub scoring: ScoringConfig,
    /// Base currency and rates.
    pub currencies: CurrencyTable,
    /// Log tuning.
    pub wal: WalOptions,
    /// Products kept per customer purchase profile (for recommendations).
    pub history_limit: usize,
    /// Product statistics tuning.
    pub items: ItemConfig,
    /// Recommendation blend.
    pub blend: BlendConfig,
    /// Days of event time before the watermark over which duplicates are
    /// recognised (`None`: forever, and memory grows with every event).
    pub dedup_horizon_days: Option<u32>,
    /// Where the log, snapshots and quarantine are kept: the real file system,
    /// or a simulated disk in tests.
    pub storage: Arc<dyn Storage>,
}

impl EngineConfig {
    /// Defaults for `data_dir`: one shard per core.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            clock: Clock::Event,
            data_dir: data_dir.into(),
            shards: std::thread::available_parallelism().map_or(2, |n| n.get()),
            shard_queue: 256,
            scoring: ScoringConfig::default(),
            currencies: CurrencyTable::default(),
            wal: WalOptions::default(),
            history_limit: crate::record::DEFAULT_HISTORY,
            items: ItemConfig::default(),
            blend: BlendConfig::default(),
            dedup_horizon_days: Some(DEFAULT_DEDUP_HORIZON_DAYS),
            storage: Arc::new(RealDisk),
        }
    }
}

/// The models in use.
#[derive(Debug)]
pub struct ModelState {
    /// Scores customers.
    pub scorer: Scorer,
    /// The fit behind `scorer` (None while provisional).
    pub fits: Option<ModelFits>,
    /// Whether the scores come from documented defaults rather than a fit.
    pub provisional: bool,
}

/// Provisional models used before the first fit: the published CDNOW
/// estimates in days (MBG/NBD from lifetimes' fit of the same sample).
pub fn provisional_models(config: &ScoringConfig) -> ModelState {
    let bg = BetaGeoParams { r: 0.243, alpha: 4.414 * 7.0, a: 0.793, b: 2.426 };
    let mbg = BetaGeoParams { r: 0.525, alpha: 6.183 * 7.0, a: 0.891, b: 1.614 };
    let purchase = match config.model {
        PurchaseModel::BgNbd => PurchaseParams::BgNbd(bg),
        PurchaseModel::MbgNbd | PurchaseModel::ParetoNbd => PurchaseParams::MbgNbd(mbg),
    };
    let spend = GammaGammaParams { p: 6.25, q: 3.74, gamma: 15.44 };
    let clv: ClvConfig = config.clv;
    ModelState { scorer: Scorer::new(purchase, Some(spend), 35.17, &clv, 1.0), fits: None, provisional: true }
}

/// Counters for `/metrics` and `engine_stats`.
#[derive(Debug, Default)]
pub struct EngineStats {
    /// Events applied for the first time.
    pub accepted: AtomicU64,
    /// Events ignored as duplicates.
    pub duplicates: AtomicU64,
    /// Events refused as older than the deduplication horizon remembers.
    pub beyond_horizon: AtomicU64,
    /// Campaign responses refused (unknown campaign, not a member).
    pub refused_responses: AtomicU64,
    /// Refunds refused (no purchases, unknown order, more than remains).
    pub refused_refunds: AtomicU64,
    /// Batches waiting in shard queues.
    pub queued_batches: AtomicU64,
    /// Completed refits.
    pub refits: AtomicU64,
    /// Duration of the latest refit, microseconds.
    pub last_refit_micros: AtomicU64,
    /// Completed refreshes of the recommendation model.
    pub recs_refreshes: AtomicU64,
    /// Duration of the latest recommendation refresh, microseconds.
    pub last_recs_refresh_micros: AtomicU64,
}

type Answer = Box<dyn FnOnce(std::result::Result<SubmitOutcome, SinkError>) + Send>;

struct Completion {
    remaining: AtomicUsize,
    accepted: AtomicUsize,
    duplicates: AtomicUsize,
    refused: Mutex<Vec<Refused>>,
    answer: Mutex<Option<Answer>>,
}

impl Completion {
    /// Answers with `error` now (the first failure wins; later parts are ignored).
    fn fail(&self, error: SinkError) {
        let answer = self.answer.lock().map(|mut a| a.take()).unwrap_or(None);
        if let Some(answer) = answer {
            answer(Err(error));
        }
    }

    fn new(parts: usize, answer: Option<Answer>) -> Self {
        Self {
            remaining: AtomicUsize::new(parts),
            accepted: AtomicUsize::new(0),
            duplicates: AtomicUsize::new(0),
            refused: Mutex::new(Vec::new()),
            answer: Mutex::new(answer),
        }
    }

    fn finish_part(&self, part: SubmitOutcome) {
        self.accepted.fetch_add(part.accepted, Ordering::Relaxed);
        self.duplicates.fetch_add(part.duplicates, Ordering::Relaxed);
        if !part.refused.is_empty() {
            self.refused.lock().unwrap_or_else(|p| p.into_inner()).extend(part.refused);
        }
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            let answer = self.answer.lock().map(|mut a| a.take()).unwrap_or(None);
            if let Some(answer) = answer {
                let mut refused = std::mem::take(&mut *self.refused.lock().unwrap_or_else(|p| p.into_inner()));
                refused.sort_by_key(|r| r.index);
                answer(Ok(SubmitOutcome {
                    accepted: self.accepted.load(Ordering::Relaxed),
                    duplicates: self.duplicates.load(Ordering::Relaxed),
                    refused,
                }));
            }
        }
    }
}

/// Why an event beyond the deduplication horizon is refused.
pub fn beyond_horizon_reason(remembered_from_day: i32) -> String {
    format!(
        "timestamp: the event is older than {}, the first day whose event ids are still remembered (the deduplication \
         horizon), so it may already have been applied; it was not applied again (a larger dedup horizon keeps more)",
        Timestamp::start_of_day(remembered_from_day).to_rfc3339()
    )
}

/// Every buyer of an engine scored with one fit, waiting for the labels'
/// cuts ([`Engine::score_population`]).
pub struct ScoredPopulation {
    models: ModelState,
    gathered: Vec<Vec<Gathered>>,
    scores: Vec<Scores>,
    segment_inputs: Vec<SegmentInput>,
}

impl ScoredPopulation {
    /// This population's ranked columns, for the cuts of the labels.
    pub fn ranks(&self) -> PopulationRanks {
        PopulationRanks::of(&self.segment_inputs)
    }
}

/// One buyer's inputs to the refit kernel, gathered under a shard's read lock.
struct Gathered {
    slot: usize,
    customer_id: String,
    input: ScoreInput,
    occasions: u32,
    revenue: f64,
    occasion_value_minor: i64,
}

struct ShardBatch {
    events: Vec<Event>,
    /// Each event's customer hash (routing computed it; the shard reuses it).
    hashes: Vec<u64>,
    /// Each event's position in the submitted batch.
    positions: Vec<usize>,
    completion: Arc<Completion>,
}

/// Items handed to a shard's thread at a time by [`fan_out`].
const FAN_OUT_BATCH: usize = 4096;

/// Runs `feed` on this thread while one scoped thread per worker takes, in
/// order, what `feed` sends it (`send(worker, item)`), in batches of
/// [`FAN_OUT_BATCH`]. Restore and log replay both fill the shards this way.
/// Returns what `feed` returned, or the panic that stopped a worker.
fn fan_out<T: Send, R>(
    workers: Vec<impl FnMut(T) + Send>,
    feed: impl FnOnce(&mut dyn FnMut(usize, T)) -> R,
) -> std::result::Result<R, String> {
    let count = workers.len();
    std::thread::scope(|scope| {
        let (senders, handles): (Vec<_>, Vec<_>) = workers
            .into_iter()
            .map(|mut work| {
                let (tx, rx) = bounded::<Vec<T>>(8);
                (tx, scope.spawn(move || rx.iter().flatten().for_each(&mut work)))
            })
            .unzip();
        let mut pending: Vec<Vec<T>> = (0..count).map(|_| Vec::with_capacity(FAN_OUT_BATCH)).collect();
        let fed = feed(&mut |worker, item| {
            pending[worker].push(item);
            if pending[worker].len() == FAN_OUT_BATCH {
                let full = std::mem::replace(&mut pending[worker], Vec::with_capacity(FAN_OUT_BATCH));
                // A worker stops only when its sender is dropped, or when it panicked (reported below).
                let _ = senders[worker].send(full);
            }
        });
        for (sender, rest) in senders.iter().zip(pending) {
            let _ = sender.send(rest);
        }
        drop(senders);
        for handle in handles {
            handle.join().map_err(|panic| panic_message(&*panic))?;
        }
        Ok(fed)
    })
}

/// A snapshot's customers placed in one book per shard.
struct Restored {
    snapshot: Snapshot,
    books: Vec<CustomerBook>,
    /// The key that hashed the customers into their shards and indexes.
    hasher: IdHasher,
    /// Whether customers were routed again (another shard count, or a file
    /// that placed them by an older hash): the per-shard dedup indexes no
    /// longer match the shards.
    rerouted: bool,
}

fn empty_book(config: &EngineConfig, hasher: IdHasher) -> CustomerBook {
    CustomerBook::with_catalog(Default::default(), Default::default(), config.history_limit)
        .with_dedup(hasher, DedupIndex::new(None))
        .with_money_exponent(config.currencies.base.exponent())
}

/// Reads the snapshot at `path` into one book per shard. When it was written
/// with this shard count and key (version 6), each shard's blocks are decoded
/// into its book on its own thread; otherwise every customer is routed to
/// its shard again. The books still need [`CustomerBook::share`] once the
/// catalogue is known.
fn restore_snapshot(path: &Path, config: &EngineConfig, shards: usize) -> std::result::Result<Restored, SnapshotError> {
    let file = SnapshotFile::open(&*config.storage, path)?;
    let Some(hasher) = file.id_key().filter(|_| file.shard_count() == shards) else {
        return restore_by_routing(file, config, shards);
    };
    let books = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..shards)
            .map(|shard| {
                let file = &file;
                scope.spawn(move || {
                    let mut book = empty_book(config, hasher);
                    book.reserve(file.shard_customers(shard));
                    // A chunk's worth at a time: each chunk is filled in one go.
                    let mut batch = Vec::with_capacity(CHUNK);
                    file.decode_shard(shard, &mut |record| {
                        batch.push(record);
                        if batch.len() == CHUNK {
                            book.insert_records(&mut batch);
                        }
                    })?;
                    book.insert_records(&mut batch);
                    Ok::<_, SnapshotError>(book)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|worker| worker.join().map_err(|panic| SnapshotError::ThreadPanicked(panic_message(&*panic)))?)
            .collect::<std::result::Result<Vec<_>, SnapshotError>>()
    })?;
    let snapshot = file.finish(config.items, config.dedup_horizon_days)?;
    Ok(Restored { snapshot, books, hasher, rerouted: false })
}

/// [`restore_snapshot`] for a snapshot written with another shard count, or
/// before version 6 (customers placed by another hash; the key, if any, at
/// the end of the file, so they are decoded first and routed after).
fn restore_by_routing(
    file: SnapshotFile,
    config: &EngineConfig,
    shards: usize,
) -> std::result::Result<Restored, SnapshotError> {
    let (snapshot, books, hasher) = match file.id_key() {
        Some(hasher) => {
            let books = route_into_books(config, shards, hasher, |route| file.decode_all(route))?;
            (file.finish(config.items, config.dedup_horizon_days)?, books, hasher)
        }
        None => {
            let mut records = Vec::with_capacity(usize::try_from(file.records()).unwrap_or(0).min(1 << 24));
            file.decode_all(&mut |record| records.push(record))?;
            let snapshot = file.finish(config.items, config.dedup_horizon_days)?;
            let hasher = snapshot.id_key.unwrap_or_else(IdHasher::random);
            let books = route_into_books(config, shards, hasher, |route| {
                records.into_iter().for_each(route);
                Ok(())
            })?;
            (snapshot, books, hasher)
        }
    };
    Ok(Restored { snapshot, books, hasher, rerouted: true })
}

/// Books filled by `feed`, each customer routed to its shard by `hasher`
/// while one thread per shard inserts what reaches it.
fn route_into_books(
    config: &EngineConfig,
    shards: usize,
    hasher: IdHasher,
    feed: impl FnOnce(&mut dyn FnMut(CustomerRecord)) -> std::result::Result<(), SnapshotError>,
) -> std::result::Result<Vec<CustomerBook>, SnapshotError> {
    let mut books: Vec<CustomerBook> = (0..shards).map(|_| empty_book(config, hasher)).collect();
    let workers: Vec<_> = books.iter_mut().map(|book| move |record| book.insert_record(record)).collect();
    let fed = fan_out(workers, |send| {
        feed(&mut |record: CustomerRecord| {
            let shard = IdHasher::shard(hasher.customer_hash(record.customer_id.as_str()), shards);
            send(shard, record);
        })
    })
    .map_err(SnapshotError::ThreadPanicked)?;
    fed.map(|()| books)
}

/// Gives each shard's book its deduplication state and the key `hasher`:
/// the snapshot's per-shard indexes and watermarks when its customers kept
/// their shards; the union of its indexes in every shard when they were
/// routed again (correct, at the cost of memory until the horizon passes);
/// for a version 3 snapshot, which had no index, an index that refuses events
/// before the snapshot's watermark day (they may have been applied).
fn with_dedup_state(
    books: Vec<CustomerBook>,
    snapshot: Option<&mut Snapshot>,
    horizon: Option<u32>,
    hasher: IdHasher,
    rerouted: bool,
) -> Vec<CustomerBook> {
    let shards = books.len();
    let as_time = |ms: i64| (ms != i64::MIN).then(|| Timestamp::from_millis(ms));
    let Some(snapshot) = snapshot else {
        return books.into_iter().map(|b| b.with_dedup(hasher, DedupIndex::new(horizon))).collect();
    };
    let watermark = as_time(snapshot.watermark_ms);
    let sections = std::mem::take(&mut snapshot.dedup);
    let states: Vec<(Option<Timestamp>, DedupIndex)> = if snapshot.id_key.is_none() {
        let from_day = watermark.map_or(i32::MIN, Timestamp::day);
        vec![(watermark, DedupIndex::new(horizon).remembering_from(from_day)); shards]
    } else if !rerouted && sections.len() == shards {
        sections.into_iter().map(|(ms, index)| (as_time(ms), index)).collect()
    } else {
        let mut union = DedupIndex::new(horizon);
        sections.iter().for_each(|(_, index)| union.absorb(index));
        vec![(watermark, union); shards]
    };
    books
        .into_iter()
        .zip(states)
        .map(|(mut book, (watermark, index))| {
            book.restore_watermark(watermark);
            book.with_dedup(hasher, index)
        })
        .collect()
}

/// One shard's part of a snapshot, taken at the cut in the time it takes to
/// clone `Arc`s and the dedup table; encoded and written after the shard
/// has gone back to its events.
struct ShardImage {
    section: Section,
    /// The shard's own watermark.
    watermark_ms: i64,
    dedup: DedupIndex,
    /// The shard's campaign memberships.
    members: Vec<(CustomerId, Member)>,
}

enum ShardMessage {
    Events(ShardBatch),
    /// Remove a customer; answers whether they existed.
    Erase(CustomerId, Sender<bool>),
    /// Hand over the book's chunks now (everything logged before the
    /// checkpoint marker has been applied), forgetting old fingerprints first.
    /// Then wait at the gate while the shared product statistics are serialised.
    Checkpoint(Sender<ShardImage>, Arc<CheckpointGate>),
    /// Add a campaign with the shard's members; answers once added.
    Campaign(Arc<CampaignDefinition>, Vec<MemberSeed>, Sender<()>),
    /// Freeze a campaign's results; answers once frozen.
    CloseCampaign(Arc<str>, Sender<()>),
}

/// Holds every shard writer still between "my book is serialised" and "the
/// product statistics are serialised", so the statistics are cut at the same
/// point of the log as the books.
struct CheckpointGate {
    paused: std::sync::Barrier,
    resume: std::sync::Barrier,
}

impl CheckpointGate {
    fn hold(&self) {
        self.paused.wait();
        self.resume.wait();
    }
}

/// Payload of the log record that marks a snapshot cut (never valid NDJSON).
const CHECKPOINT_MARKER: &[u8] = b"\0patron-checkpoint";

/// Prefix of the log record that erases a customer (followed by the id).
const ERASE_PREFIX: &[u8] = b"\0patron-erase:";

/// Prefix of the log record that creates a campaign ([`campaigns::encode_creation`]).
const CAMPAIGN_PREFIX: &[u8] = b"\0patron-campaign:";

/// Prefix of the log record that closes a campaign ([`campaigns::encode_close`]).
const CLOSE_CAMPAIGN_PREFIX: &[u8] = b"\0patron-campaign-close:";

/// What [`Engine::snapshot`] did.
#[derive(Clone, Debug)]
pub struct SnapshotReport {
    /// The snapshot file.
    pub path: PathBuf,
    /// Log sequence numbers below this are covered.
    pub next_seq: u64,
    /// Customers written.
    pub customers: u64,
    /// File size.
    pub bytes: u64,
    /// Whole log segments deleted after it.
    pub removed_segments: usize,
}

impl Inner {
    /// The customer's keyed hash and the shard that owns them.
    fn route(&self, customer: &CustomerId) -> (u64, usize) {
        let hash = self.hasher.customer_hash(customer.as_str());
        (hash, IdHasher::shard(hash, self.shards.len()))
    }

    /// A campaign's members, split by the shard each belongs to.
    fn seeds_per_shard(&self, seeds: Vec<MemberSeed>) -> Vec<Vec<MemberSeed>> {
        let mut per_shard: Vec<Vec<MemberSeed>> = (0..self.shards.len()).map(|_| Vec::new()).collect();
        for seed in seeds {
            per_shard[self.route(&seed.customer_id).1].push(seed);
        }
        per_shard
    }

    fn campaigns_mut(&self) -> std::sync::RwLockWriteGuard<'_, Vec<CampaignDefinition>> {
        self.campaigns.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Marks a campaign closed (the first close wins).
    fn close_in_registry(&self, close: &campaigns::Close) {
        if let Some(d) = self.campaigns_mut().iter_mut().find(|d| d.campaign_id == close.campaign_id)
            && d.closed_at.is_none()
        {
            d.closed_at = Some(close.closed_at);
            d.clv_change_at_close = close.clv_change;
        }
    }

    /// The day customers are scored as of between refits. Under the event
    /// clock it is the day of the last refit (a customer's own later purchase
    /// moves theirs on, in `score_input`), so a customer's scores depend only
    /// on their record and the models, never on how events from other
    /// customers interleaved: a restart that replays the same log recomputes
    /// exactly what was served. Before any fit, the same holds with no refit
    /// day: each customer is scored as of their own latest purchase (day 0
    /// is before every event), not as of the watermark, which depends on how
    /// the shards' events interleaved. Under the wall clock, today.
    fn scoring_day(&self, models: &ModelState) -> i32 {
        match (self.config.clock, &models.fits) {
            (Clock::Event, Some(fits)) => fits.fitted_at.day(),
            (Clock::Event, None) => 0,
            (Clock::Wall, _) => self.now().map_or(0, Timestamp::day),
        }
    }

    fn now(&self) -> Option<Timestamp> {
        match self.config.clock {
            Clock::Wall => Some(Timestamp::now()),
            Clock::Event => {
                let ms = self.watermark_ms.load(Ordering::Relaxed).max(self.clock_floor_ms.load(Ordering::Relaxed));
                (ms != i64::MIN).then(|| Timestamp::from_millis(ms))
            }
        }
    }
}

/// The first shard writer (or the product statistics thread they feed) that
/// died, and why. Once set, the engine is fail-stop: it refuses events
/// instead of answering for part of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardFailure {
    /// Which shard; `None`: the product statistics thread.
    pub shard: Option<usize>,
    /// The panic message.
    pub reason: String,
}

impl std::fmt::Display for ShardFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.shard {
            Some(shard) => write!(f, "shard {shard} failed")?,
            None => write!(f, "the product statistics thread failed")?,
        }
        write!(f, " ({}); ingest is stopped, restart the server to recover it from the log", self.reason)
    }
}

/// A logged event (or a whole log record) that recovery could not apply. It is
/// reported, copied to `<data dir>/quarantine/`, and skipped, so one bad record
/// never makes every restart fail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quarantined {
    /// Sequence number of the log record.
    pub seq: u64,
    /// Position of the event in the record (`None`: the record did not decode).
    pub index: Option<usize>,
    /// The customer, when the event decoded.
    pub customer_id: Option<CustomerId>,
    /// Why it was not applied.
    pub reason: String,
    /// The copy in the quarantine directory.
    pub file: PathBuf,
}

/// The text of a caught panic.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

/// Directory of quarantined log contents, under the data directory.
const QUARANTINE_DIR: &str = "quarantine";

/// Writes one quarantined item to `dir/name` (overwritten when recovery runs
/// again over the same record, so repeated restarts do not pile up copies).
/// The copy is fsynced, and so is the directory: the log record it came from
/// is deleted once a later snapshot covers it, and the copy must outlive that.
fn write_quarantine(storage: &dyn Storage, dir: &Path, name: &str, bytes: &[u8]) -> Result<PathBuf> {
    let path = dir.join(name);
    let failed = |source| StateError::Quarantine { path: path.clone(), source };
    storage.create_dir_all(dir).map_err(failed)?;
    match storage.remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(failed(e)),
        _ => {}
    }
    let file = storage.create_new(&path).map_err(failed)?;
    file.write_all_at(bytes, 0).map_err(failed)?;
    file.sync_all().map_err(failed)?;
    storage.sync_dir(dir).map_err(failed)?;
    Ok(path)
}

/// Figures of one shard that its writer publishes whenever it changes the
/// book, before it answers: readers such as `/metrics` then never wait for
/// a shard lock that a batch holds.
#[derive(Debug, Default)]
struct ShardGauges {
    customers: AtomicUsize,
    remembered: AtomicUsize,
    dedup_bytes: AtomicUsize,
}

impl ShardGauges {
    fn publish(&self, book: &CustomerBook) {
        self.customers.store(book.len(), Ordering::Relaxed);
        self.remembered.store(book.dedup().len(), Ordering::Relaxed);
        self.dedup_bytes.store(book.dedup().memory_bytes(), Ordering::Relaxed);
    }
}

struct Inner {
    failure: OnceLock<ShardFailure>,
    catalog: Arc<ProductCatalog>,
    items: Arc<ItemStats>,
    recs: RwLock<Arc<RecsModel>>,
    shards: Vec<RwLock<CustomerBook>>,
    models: RwLock<Arc<ModelState>>,
    /// The last refits' models, oldest first, for `model_quality` ([`crate::quality`]).
    frozen: Mutex<std::collections::VecDeque<Arc<ModelState>>>,
    watermark_ms: AtomicI64,
    /// The fit time of the installed models: "now" does not go back before
    /// it. Only a fleet's models can be ahead of a partition's own events.
    clock_floor_ms: AtomicI64,
    /// The key of every shard's event fingerprints (stored in snapshots).
    hasher: IdHasher,
    stats: EngineStats,
    /// Batches of purchases on their way to `items` (see [`crate::item_feed`]).
    item_feed: ItemFeed,
    /// Per shard, what `/metrics` reads without a shard lock.
    gauges: Vec<ShardGauges>,
    /// Every campaign, in creation order, as of the last log record routed
    /// to the shards (updated in log order, so a snapshot's cut reads it right).
    campaigns: RwLock<Vec<CampaignDefinition>>,
    /// Held while a campaign is created or closed: one at a time, so an id is
    /// checked and logged without a race.
    campaign_writes: Mutex<()>,
    config: EngineConfig,
}

/// The streaming engine. Implements [`EventSink`] (blocking) and offers
/// [`Engine::submit_with`] for callers that must not block.
pub struct Engine {
    inner: Arc<Inner>,
    quarantined: Mutex<Vec<Quarantined>>,
    wal: Option<Wal>,
    senders: Vec<Sender<ShardMessage>>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("shards", &self.inner.shards.len()).finish_non_exhaustive()
    }
}

/// First byte of a log payload of binary-encoded events ([`patron_model::encode_event`]).
/// Payloads starting with `{` are NDJSON (the first log format), still replayed.
const BINARY_EVENTS: u8 = 1;

/// A typical event's size in the log (a purchase of one to four lines), for
/// sizing buffers; a wrong guess costs only a regrowth.
const ENCODED_EVENT_BYTES: usize = 160;

/// Encodes events as log payloads of at most `max_payload` bytes each (an
/// event larger than that gets a record of its own, which the log refuses).
fn split_for_log(events: Vec<Event>, max_payload: usize) -> Vec<(Vec<u8>, Vec<Event>)> {
    let mut records = Vec::new();
    // Sized for the whole batch up front (within one record): growing by
    // doubling copies into fresh pages that the kernel zeroes first.
    let presized = (events.len() * ENCODED_EVENT_BYTES).clamp(64 << 10, max_payload.max(64 << 10));
    let new_payload = || {
        let mut p = Vec::with_capacity(presized);
        p.push(BINARY_EVENTS);
        p
    };
    let (mut payload, mut members, mut one) = (new_payload(), Vec::new(), Vec::with_capacity(256));
    for e in events {
        one.clear();
        encode_event(&e, &mut one);
        if !members.is_empty() && payload.len() + one.len() > max_payload {
            records.push((std::mem::replace(&mut payload, new_payload()), std::mem::take(&mut members)));
        }
        payload.extend_from_slice(&one);
        members.push(e);
    }
    if !members.is_empty() {
        records.push((payload, members));
    }
    records
}

/// The events of one log payload (binary, or NDJSON from the first log format).
fn decode_payload(payload: &[u8], validator: &Validator) -> std::result::Result<Vec<Event>, String> {
    match payload.first() {
        Some(&BINARY_EVENTS) => {
            let (mut events, mut pos) = (Vec::new(), 1);
            while pos < payload.len() {
                events.push(decode_event(payload, &mut pos).ok_or_else(|| format!("undecodable event at byte {pos}"))?);
            }
            Ok(events)
        }
        _ => payload
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|line| validator.decode(line).map_err(|e| e.to_string()))
            .collect(),
    }
}

/// One entry of the log for a shard's replaying thread.
enum Replayed {
    /// An event at `index` of the record `seq`, with its customer's hash.
    Event { seq: u64, index: usize, event: Event, hash: u64 },
    /// An erasure.
    Erase(CustomerId),
    /// A campaign's creation, with the shard's members.
    Campaign(Arc<CampaignDefinition>, Vec<MemberSeed>),
    /// A campaign's close.
    CloseCampaign(Arc<str>),
}

/// Applies one replayed entry to its shard's book; an event whose apply
/// panics is quarantined instead (the rest of the log still applies).
fn replay_into(
    book: &mut CustomerBook,
    replayed: Replayed,
    inner: &Inner,
    config: &EngineConfig,
    quarantine: &(impl Fn(u64, Option<usize>, Option<&Event>, String, &[u8]) + Sync),
) {
    let (seq, index, event, hash) = match replayed {
        Replayed::Erase(customer) => {
            book.remove(&customer);
            return;
        }
        Replayed::Campaign(definition, seeds) => {
            book.campaigns_mut().create(&definition, seeds);
            return;
        }
        Replayed::CloseCampaign(id) => {
            book.campaigns_mut().close(&id);
            return;
        }
        Replayed::Event { seq, index, event, hash } => (seq, index, event, hash),
    };
    let apply = || {
        #[cfg(test)]
        if event.customer_id.as_str() == PANIC_IN_TESTS {
            panic!("a panic injected by a test");
        }
        book.apply_hashed(&event, hash).1
    };
    match catch_unwind(AssertUnwindSafe(apply)) {
        Ok(applied) => {
            inner.watermark_ms.fetch_max(event.timestamp.millis(), Ordering::Relaxed);
            let counter = match applied {
                Applied::Accepted => &inner.stats.accepted,
                Applied::Duplicate => &inner.stats.duplicates,
                Applied::BeyondHorizon { .. } => &inner.stats.beyond_horizon,
                Applied::Refused(Refusal::Response(_)) => &inner.stats.refused_responses,
                Applied::Refused(Refusal::Refund(_)) => &inner.stats.refused_refunds,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        Err(panic) => {
            let reason = format!("applying it panicked: {}", panic_message(&*panic));
            let json = event.to_json(config.currencies.base).to_string().into_bytes();
            quarantine(seq, Some(index), Some(&event), reason, &json);
        }
    }
}

impl Engine {
    /// Opens the engine: replays the log into the shards, then starts the
    /// shard writers. Returns what recovery found.
    pub fn open(config: EngineConfig) -> Result<(Self, RecoveryReport)> {
        let shards = config.shards.max(1);
        // The newest readable snapshot, then the log from where it ends.
        let snapshot_dir = config.data_dir.join("snapshots");
        let mut snapshot_errors = Vec::new();
        let snapshots = list_snapshots(&*config.storage, &snapshot_dir)
            .map_err(|source| StateError::ListSnapshots { dir: snapshot_dir.clone(), source })?;
        let (mut loaded, mut restored) = (None, None);
        for (_, path) in &snapshots {
            match restore_snapshot(path, &config, shards) {
                Ok(Restored { snapshot, books, hasher, rerouted }) => {
                    (loaded, restored) = (Some(snapshot), Some((books, hasher, rerouted)));
                    break;
                }
                Err(e) => snapshot_errors.push((path.clone(), e)),
            }
        }
        let catalog = Arc::new(
            loaded
                .as_mut()
                .map_or_else(ProductCatalog::default, |s| ProductCatalog::from_names(std::mem::take(&mut s.products))),
        );
        let items = Arc::new(loaded.as_mut().map_or_else(
            || ItemStats::new(config.items),
            |s| std::mem::replace(&mut s.items, ItemStats::new(config.items)),
        ));
        let (books, hasher, rerouted): (Vec<CustomerBook>, IdHasher, bool) = match restored {
            Some((books, hasher, rerouted)) => {
                let shared = books
                    .into_iter()
                    .map(|mut book| {
                        book.share(catalog.clone(), items.clone());
                        book
                    })
                    .collect();
                (shared, hasher, rerouted)
            }
            None => {
                let fresh = (0..shards)
                    .map(|_| CustomerBook::with_catalog(catalog.clone(), items.clone(), config.history_limit))
                    .collect();
                (fresh, IdHasher::random(), false)
            }
        };
        let exponent = config.currencies.base.exponent();
        let mut books: Vec<CustomerBook> =
            with_dedup_state(books, loaded.as_mut(), config.dedup_horizon_days, hasher, rerouted)
                .into_iter()
                .map(|book| book.with_money_exponent(exponent))
                .collect();
        let (definitions, members) = campaigns::decode_snapshot(loaded.as_ref().map_or(&[][..], |s| &s.campaigns))
            .ok_or(StateError::CampaignsUnreadable)?;
        let mut per_shard: Vec<Vec<(CustomerId, Member)>> = (0..books.len()).map(|_| Vec::new()).collect();
        for (customer, member) in members {
            per_shard[IdHasher::shard(hasher.customer_hash(customer.as_str()), books.len())].push((customer, member));
        }
        for (book, members) in books.iter_mut().zip(per_shard) {
            book.campaigns_mut().restore(&definitions, members);
        }
        // The models fitted before the snapshot score the log tail and everyone
        // after it, as they did before the restart (provisional ones if none).
        let models = loaded
            .as_mut()
            .and_then(|s| s.models.take())
            .and_then(|fits| {
                let scorer = scorer_for(&fits, &config.scoring).ok()?;
                Some(ModelState { scorer, fits: Some(fits), provisional: false })
            })
            .unwrap_or_else(|| provisional_models(&config.scoring));
        let models = Arc::new(models);
        // The snapshot's refit is judged again after a restart; older ones are not kept.
        let frozen = if models.fits.is_some() { vec![models.clone()] } else { Vec::new() };
        let inner = Arc::new(Inner {
            failure: OnceLock::new(),
            shards: books.into_iter().map(RwLock::new).collect(),
            catalog,
            items,
            recs: RwLock::new(Arc::new(RecsModel::default())),
            models: RwLock::new(models),
            frozen: Mutex::new(frozen.into()),
            watermark_ms: AtomicI64::new(i64::MIN),
            clock_floor_ms: AtomicI64::new(i64::MIN),
            hasher,
            stats: EngineStats::default(),
            item_feed: ItemFeed::default(),
            gauges: (0..shards).map(|_| ShardGauges::default()).collect(),
            campaigns: RwLock::new(definitions),
            campaign_writes: Mutex::new(()),
            config: config.clone(),
        });
        let mut start_seq = 0;
        let kept_spreads = loaded.as_ref().is_some_and(|s| s.keeps_spreads);
        if let Some(snapshot) = loaded {
            start_seq = snapshot.next_seq;
            inner.watermark_ms.store(snapshot.watermark_ms, Ordering::Relaxed);
        }
        // Events in the log were validated when they arrived; only the clock rule is relaxed on replay.
        let replay_validator = Validator { max_ahead_ms: i64::MAX / 4, ..Validator::new(config.currencies.clone()) };
        let quarantine_dir = config.data_dir.join(QUARANTINE_DIR);
        let mut quarantined: Vec<Quarantined> = Vec::new();
        let mut quarantine_error: Option<StateError> = None;
        let mut first_logged: Option<u64> = None;
        let (wal, mut report) = {
            let mut books: Vec<_> = inner.shards.iter().map(|s| s.write().unwrap_or_else(|p| p.into_inner())).collect();
            let quarantine =
                Mutex::new(|seq: u64, index: Option<usize>, event: Option<&Event>, reason: String, bytes: &[u8]| {
                    let name = match index {
                        Some(i) => format!("log-seq-{seq}-event-{i}.json"),
                        None => format!("log-seq-{seq}.bin"),
                    };
                    match write_quarantine(&*config.storage, &quarantine_dir, &name, bytes) {
                        Ok(file) => quarantined.push(Quarantined {
                            seq,
                            index,
                            customer_id: event.map(|e| e.customer_id.clone()),
                            reason,
                            file,
                        }),
                        Err(e) => {
                            quarantine_error.get_or_insert(e);
                        }
                    }
                });
            let quarantine = |seq: u64, index: Option<usize>, event: Option<&Event>, reason: String, bytes: &[u8]| {
                let mut write = quarantine.lock().unwrap_or_else(PoisonError::into_inner);
                (*write)(seq, index, event, reason, bytes);
            };
            // The log is read and decoded on this thread; each shard's events
            // are applied by a thread of their own, in log order per shard
            // (a customer's events and erasures all reach one shard).
            let workers: Vec<_> = books
                .iter_mut()
                .map(|guard| {
                    let book: &mut CustomerBook = guard;
                    let (inner, config, quarantine) = (&inner, &config, &quarantine);
                    move |replayed| replay_into(book, replayed, inner, config, quarantine)
                })
                .collect();
            let opened = fan_out(workers, |send| {
                let replay = |seq: u64, _count: u32, payload: &[u8]| {
                    first_logged.get_or_insert(seq);
                    if seq < start_seq || payload == CHECKPOINT_MARKER {
                        return;
                    }
                    if let Some(body) = payload.strip_prefix(CAMPAIGN_PREFIX) {
                        match campaigns::decode_creation(body) {
                            Some((definition, seeds)) => {
                                let definition = Arc::new(definition);
                                for (shard, seeds) in inner.seeds_per_shard(seeds).into_iter().enumerate() {
                                    send(shard, Replayed::Campaign(definition.clone(), seeds));
                                }
                                inner.campaigns_mut().push((*definition).clone());
                            }
                            None => quarantine(seq, None, None, "the campaign record does not decode".into(), payload),
                        }
                        return;
                    }
                    if let Some(body) = payload.strip_prefix(CLOSE_CAMPAIGN_PREFIX) {
                        match campaigns::decode_close(body) {
                            Some(close) => {
                                inner.close_in_registry(&close);
                                for shard in 0..inner.shards.len() {
                                    send(shard, Replayed::CloseCampaign(close.campaign_id.clone()));
                                }
                            }
                            None => quarantine(seq, None, None, "the campaign close does not decode".into(), payload),
                        }
                        return;
                    }
                    if let Some(id) = payload.strip_prefix(ERASE_PREFIX) {
                        if let Some(customer) = std::str::from_utf8(id).ok().and_then(|id| CustomerId::new(id).ok()) {
                            send(inner.route(&customer).1, Replayed::Erase(customer));
                        }
                        return;
                    }
                    let events = match decode_payload(payload, &replay_validator) {
                        Ok(events) => events,
                        Err(e) => {
                            quarantine(seq, None, None, format!("the record does not decode: {e}"), payload);
                            return;
                        }
                    };
                    for (index, event) in events.into_iter().enumerate() {
                        // Bounds that an older version did not enforce are enforced here too.
                        if let Err(e) = check_bounds(&event) {
                            let json = event.to_json(config.currencies.base).to_string().into_bytes();
                            quarantine(seq, Some(index), Some(&event), e.to_string(), &json);
                            continue;
                        }
                        let (hash, shard) = inner.route(&event.customer_id);
                        send(shard, Replayed::Event { seq, index, event, hash });
                    }
                };
                Wal::open_on(config.storage.clone(), &config.data_dir.join("wal"), config.wal, start_seq, replay)
            })
            .map_err(|message| StateError::ReplayPanicked { message })?;
            opened.map_err(StateError::Log)?
        };
        if let Some(e) = quarantine_error {
            return Err(e);
        }
        // The log must reach back to where the snapshot ends, or events would be missing.
        let log_start = first_logged.unwrap_or(report.next_seq);
        if log_start > start_seq {
            return Err(StateError::LogGap {
                log_start,
                state_start: start_seq,
                unreadable_snapshots: snapshot_errors,
            });
        }
        report.events = inner.stats.accepted.load(Ordering::Relaxed) + inner.stats.duplicates.load(Ordering::Relaxed);
        for (shard, gauges) in inner.shards.iter().zip(&inner.gauges) {
            gauges.publish(&shard.read().unwrap_or_else(|p| p.into_inner()));
        }
        let mut senders = Vec::with_capacity(shards);
        let mut threads = Vec::with_capacity(shards);
        let (feed, feed_receiver) = item_feed::channels();
        let feed_thread = {
            let inner = inner.clone();
            std::thread::Builder::new()
                .name("patron-items".to_owned())
                .spawn(move || item_feeder(&inner, feed_receiver))
                .map_err(|source| StateError::SpawnThread { name: "product statistics", source })?
        };
        for shard in 0..shards {
            let (tx, rx) = bounded(config.shard_queue);
            senders.push(tx);
            let inner = inner.clone();
            let feed = feed.clone();
            let handle = std::thread::Builder::new()
                .name(format!("patron-shard-{shard}"))
                .spawn(move || shard_writer(&inner, shard, &rx, &feed))
                .map_err(|source| StateError::SpawnThread { name: "shard writer", source })?;
            threads.push(handle);
        }
        drop(feed);
        // Joined after the shard writers, whose feed senders end its loop.
        threads.push(feed_thread);
        let engine = Self { inner, quarantined: Mutex::new(quarantined), wal: Some(wal), senders, threads };
        engine.rescore_all(kept_spreads);
        engine.refresh_recommendations();
        Ok((engine, report))
    }

    /// Submits validated events without blocking; `answer` runs once they are
    /// durable and applied (or refused). A full log queue is `Overloaded`.
    pub fn submit_with(
        &self,
        events: Vec<Event>,
        answer: impl FnOnce(std::result::Result<SubmitOutcome, SinkError>) + Send + 'static,
    ) {
        if let Some(failure) = self.failure() {
            answer(Err(SinkError::Unavailable(failure.to_string())));
            return;
        }
        if events.is_empty() {
            answer(Ok(SubmitOutcome::default()));
            return;
        }
        let Some(wal) = &self.wal else {
            answer(Err(SinkError::Unavailable("engine is shutting down".into())));
            return;
        };
        // A batch larger than a log record may hold becomes several records;
        // the caller is answered once all of them are durable and applied.
        let records = split_for_log(events, wal.max_payload());
        let total = Arc::new(Completion::new(records.len(), Some(Box::new(answer))));
        let mut first_index = 0;
        for (payload, events) in records {
            let total = total.clone();
            let offset = first_index;
            first_index += events.len();
            let part: Answer = Box::new(move |result| match result {
                Ok(mut outcome) => {
                    outcome.refused.iter_mut().for_each(|r| r.index += offset);
                    total.finish_part(outcome);
                }
                Err(e) => total.fail(e),
            });
            self.submit_record(wal, payload, events, part);
        }
    }

    /// Logs one record and, once durable, routes its events to the shards.
    fn submit_record(&self, wal: &Wal, payload: Vec<u8>, events: Vec<Event>, answer: Answer) {
        let count = events.len() as u32;
        let senders = self.senders.clone();
        let inner = self.inner.clone();
        let answer_slot = Arc::new(Mutex::new(Some(answer)));
        let on_durable = {
            let answer_slot = answer_slot.clone();
            move |result: patron_wal::Result<patron_wal::Appended>| {
                let take = || answer_slot.lock().map(|mut a| a.take()).unwrap_or(None);
                if let Err(e) = result {
                    if let Some(answer) = take() {
                        answer(Err(SinkError::Unavailable(e.to_string())));
                    }
                    return;
                }
                type Part = (Vec<Event>, Vec<u64>, Vec<usize>);
                // Each shard's share, with room for an uneven split (see `split_for_log` on growth).
                let share = events.len() / senders.len() + events.len() / (4 * senders.len()) + 16;
                let mut parts: Vec<Part> = (0..senders.len())
                    .map(|_| (Vec::with_capacity(share), Vec::with_capacity(share), Vec::with_capacity(share)))
                    .collect();
                for (index, e) in events.into_iter().enumerate() {
                    let (hash, shard) = inner.route(&e.customer_id);
                    let part = &mut parts[shard];
                    part.0.push(e);
                    part.1.push(hash);
                    part.2.push(index);
                }
                let busy = parts.iter().filter(|p| !p.0.is_empty()).count();
                let completion = Arc::new(Completion::new(busy, take()));
                for (shard, (events, hashes, positions)) in
                    parts.into_iter().enumerate().filter(|(_, p)| !p.0.is_empty())
                {
                    inner.stats.queued_batches.fetch_add(1, Ordering::Relaxed);
                    let part = ShardBatch { events, hashes, positions, completion: completion.clone() };
                    // Blocking here holds the log writer: backpressure all the way back.
                    if senders[shard].send(ShardMessage::Events(part)).is_err() {
                        // Durable but not applied: never answer as if it were (a restart applies it from the log).
                        let reason = inner.failure.get().map_or_else(
                            || format!("shard {shard} stopped; the events are logged and a restart applies them"),
                            ToString::to_string,
                        );
                        completion.fail(SinkError::Unavailable(reason));
                    }
                }
            }
        };
        if let Err(e) = wal.submit(payload, count, on_durable) {
            let refusal = match e {
                WalError::Full => SinkError::Overloaded { retry_after_ms: 100 },
                other => SinkError::Unavailable(other.to_string()),
            };
            if let Some(answer) = answer_slot.lock().map(|mut a| a.take()).unwrap_or(None) {
                answer(Err(refusal));
            }
        }
    }

    /// The shard writer that died, if one did: the engine then refuses events,
    /// erasures and snapshots, and `/ready` turns false.
    pub fn failure(&self) -> Option<&ShardFailure> {
        self.inner.failure.get()
    }

    /// What recovery could not apply and copied to the quarantine directory
    /// (less what erasures removed since).
    pub fn quarantined(&self) -> Vec<Quarantined> {
        self.quarantined.lock().map(|q| q.clone()).unwrap_or_default()
    }

    /// Deletes the quarantined copies that hold `customer`: events of theirs,
    /// and undecodable records whose bytes contain their id.
    fn erase_quarantined(&self, customer: &CustomerId) -> Result<()> {
        let Ok(mut quarantined) = self.quarantined.lock() else { return Ok(()) };
        let storage = &*self.inner.config.storage;
        let needle = customer.as_str().as_bytes();
        let mut failed: Option<StateError> = None;
        quarantined.retain(|q| {
            let holds = match &q.customer_id {
                Some(id) => id == customer,
                None => storage.read(&q.file).is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle)),
            };
            if holds && let Err(source) = storage.remove_file(&q.file) {
                failed.get_or_insert(StateError::Quarantine { path: q.file.clone(), source });
                return true;
            }
            !holds
        });
        // The removals must outlive a power cut, or the customer comes back with them.
        let dir = self.inner.config.data_dir.join(QUARANTINE_DIR);
        if failed.is_none()
            && let Err(source) = storage.sync_dir(&dir)
            && source.kind() != std::io::ErrorKind::NotFound
        {
            failed = Some(StateError::Quarantine { path: dir, source });
        }
        failed.map_or(Ok(()), Err)
    }

    /// The shard that owns a customer: [`IdHasher::shard`] of the keyed hash
    /// of their id (the key is the data directory's, so stable across restarts).
    pub fn shard_of(&self, customer: &CustomerId) -> usize {
        self.inner.route(customer).1
    }

    /// A customer's record (with scores), if known.
    pub fn customer(&self, id: &CustomerId) -> Option<CustomerRecord> {
        self.inner.shards[self.shard_of(id)].read().ok()?.get(id)
    }

    /// The models in use.
    pub fn models(&self) -> Arc<ModelState> {
        self.inner.models.read().map(|m| m.clone()).unwrap_or_else(|p| p.into_inner().clone())
    }

    /// The event-time watermark ("now" under the event clock).
    pub fn watermark(&self) -> Option<Timestamp> {
        let ms = self.inner.watermark_ms.load(Ordering::Relaxed);
        (ms != i64::MIN).then(|| Timestamp::from_millis(ms))
    }

    /// "Now" for scoring: the watermark (event clock) or the system clock.
    /// `None` under the event clock before any event.
    pub fn now(&self) -> Option<Timestamp> {
        self.inner.now()
    }

    /// Counters.
    pub fn stats(&self) -> &EngineStats {
        &self.inner.stats
    }

    /// The log's counters.
    pub fn wal_stats(&self) -> Option<&patron_wal::WalStats> {
        self.wal.as_ref().map(Wal::stats)
    }

    /// The shared product catalogue (names of the product indices).
    pub fn catalog(&self) -> &ProductCatalog {
        &self.inner.catalog
    }

    /// The shared product statistics, with every purchase acknowledged
    /// before the call applied (waits for the statistics thread to catch up).
    pub fn item_stats(&self) -> &ItemStats {
        self.inner.item_feed.settle();
        &self.inner.items
    }

    /// Bytes held by the product statistics, read without waiting for
    /// purchases still on their way to them.
    pub fn item_stats_memory_bytes(&self) -> usize {
        self.inner.items.memory_bytes()
    }

    /// Batches of acknowledged purchases not yet in the product statistics.
    pub fn item_stats_behind(&self) -> u64 {
        self.inner.item_feed.behind()
    }

    /// The latest recommendation model (neighbours, repurchase rates, popular products).
    pub fn recs_model(&self) -> Arc<RecsModel> {
        self.inner.recs.read().map(|m| m.clone()).unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Recomputes every product's neighbours from the current statistics
    /// (rayon; ingestion continues, each statistics segment is read-locked
    /// in turn) and publishes the new model.
    pub fn refresh_recommendations(&self) -> Arc<RecsModel> {
        let started = Instant::now();
        let now_day = self.now().map_or(0, Timestamp::day);
        let model = Arc::new(self.item_stats().refresh(now_day));
        if let Ok(mut current) = self.inner.recs.write() {
            *current = model.clone();
        }
        self.inner.stats.recs_refreshes.fetch_add(1, Ordering::Relaxed);
        self.inner.stats.last_recs_refresh_micros.store(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        model
    }

    /// The top `k` recommendations of a customer (`new_only`: products they
    /// never bought); `None` for an unknown customer, empty for one who
    /// objected to every channel. A lookup: no other customer is read.
    pub fn recommendations(&self, id: &CustomerId, k: usize, new_only: bool) -> Option<Vec<Recommendation>> {
        let shard = self.shard_of(id);
        // Copied out, so the blend runs without the shard's lock.
        let profile = {
            let book = self.inner.shards[shard].read().ok()?;
            let row = book.row(id)?;
            if row.objects_to_targeting() {
                return Some(Vec::new());
            }
            row.history().purchases.clone()
        };
        let kind = if new_only { ListKind::Discover } else { ListKind::Main };
        Some(recommend(&profile, &self.recs_model(), &self.inner.config.blend, k, kind))
    }

    /// The scoring configuration in use (model, CLV settings, segment thresholds).
    pub fn scoring_config(&self) -> &ScoringConfig {
        &self.inner.config.scoring
    }

    /// The recommendation blend in use.
    pub fn blend(&self) -> &BlendConfig {
        &self.inner.config.blend
    }

    /// Bytes of the customer state: the columns and id index the `customers`
    /// table is derived from, and the writer-only histories (occasion days and
    /// purchase profiles). The dedup index is [`Self::dedup_usage`].
    pub fn state_memory(&self) -> Result<(usize, usize)> {
        let per_shard = self.with_books(CustomerBook::memory_bytes)?;
        Ok(per_shard.into_iter().fold((0, 0), |(c, h), (a, b)| (c + a, h + b)))
    }

    /// Event ids remembered for deduplication, and the bytes their indexes
    /// take, as of each shard's last change (no shard lock is taken).
    pub fn dedup_usage(&self) -> (usize, usize) {
        let gauges = &self.inner.gauges;
        gauges.iter().fold((0, 0), |(n, m), g| {
            (n + g.remembered.load(Ordering::Relaxed), m + g.dedup_bytes.load(Ordering::Relaxed))
        })
    }

    /// Customers per shard, as of each shard's last change (no shard lock is taken).
    pub fn shard_sizes(&self) -> Vec<usize> {
        self.inner.gauges.iter().map(|g| g.customers.load(Ordering::Relaxed)).collect()
    }

    /// How many shards the customers are spread over.
    pub fn shard_count(&self) -> usize {
        self.inner.shards.len()
    }

    /// Runs `f` on one shard's book under its read lock (the shard's writer
    /// waits meanwhile). `None` for an unknown shard or a poisoned lock.
    pub fn with_shard<T>(&self, shard: usize, f: impl FnOnce(&CustomerBook) -> T) -> Option<T> {
        self.inner.shards.get(shard)?.read().ok().map(|book| f(&book))
    }

    /// The column groups `groups` of every shard's chunks at one instant: all
    /// read locks are held together for as long as cloning those groups'
    /// `Arc`s takes (microseconds), so the view is one cut of the event
    /// stream. Readers derive their columns after the locks are gone; a writer
    /// that changes a group still held copies that group. Fails (never a
    /// partial view) if a shard's lock is poisoned.
    pub fn customer_views(&self, groups: crate::chunk::Groups) -> Result<Vec<Vec<crate::chunk::ChunkView>>> {
        let guards = self
            .inner
            .shards
            .iter()
            .enumerate()
            .map(|(shard, lock)| {
                lock.read().map_err(|_| {
                    StateError::ShardFailed(ShardFailure {
                        shard: Some(shard),
                        reason: "its lock is poisoned".to_owned(),
                    })
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(guards.iter().map(|book| book.records().chunks().iter().map(|c| c.view(groups)).collect()).collect())
    }

    /// Every kept refit's predictions for the configured model, judged
    /// against what its customers have done since, oldest refit first (see
    /// [`crate::quality`]). Each shard's read lock is held while its
    /// customers' histories are split at the refits' days (no model is
    /// evaluated under it).
    pub fn model_quality(&self) -> Result<Vec<crate::quality::QualityRow>> {
        let Some(now) = self.now() else { return Ok(Vec::new()) };
        let frozen: Vec<Arc<ModelState>> =
            self.inner.frozen.lock().unwrap_or_else(PoisonError::into_inner).iter().cloned().collect();
        let fits: Vec<&ModelFits> = frozen.iter().filter_map(|m| m.fits.as_ref()).collect();
        let days: Vec<i32> = fits.iter().map(|f| f.fitted_at.day()).collect();
        let per_shard = self.with_books(|book| {
            let mut cases = vec![Vec::new(); days.len()];
            for row in book.records().iter() {
                let occasions = row.history().occasion_days();
                for (out, &day) in cases.iter_mut().zip(&days) {
                    out.extend(crate::quality::split_at(occasions, day));
                }
            }
            cases
        })?;
        let model = self.inner.config.scoring.model;
        Ok(fits
            .iter()
            .enumerate()
            .filter_map(|(k, fits)| {
                let cases: Vec<crate::quality::FrozenCase> =
                    per_shard.iter().flat_map(|shard| shard[k].iter().copied()).collect();
                crate::quality::judge(fits, model, &cases, now)
            })
            .collect())
    }

    /// Runs `f` over every shard's book under its read lock, in shard order.
    /// A poisoned lock (a writer panicked while changing that shard) is an
    /// error: a view of part of the population must not pass for the whole.
    pub fn with_books<T>(&self, mut f: impl FnMut(&CustomerBook) -> T) -> Result<Vec<T>> {
        self.inner
            .shards
            .iter()
            .enumerate()
            .map(|(shard, lock)| {
                lock.read().map(|book| f(&book)).map_err(|_| {
                    StateError::ShardFailed(ShardFailure {
                        shard: Some(shard),
                        reason: "its lock is poisoned".to_owned(),
                    })
                })
            })
            .collect()
    }

    /// Scores every recovered customer as the live engine last scored them:
    /// with the models in use, as of the scoring day ([`Inner::scoring_day`]),
    /// and with the CLV interval width the snapshot kept (`kept_spreads`;
    /// older snapshots did not keep it, and then the intervals are computed
    /// afresh, as a refit would). A snapshot keeps models, labels and widths,
    /// not scores.
    fn rescore_all(&self, kept_spreads: bool) {
        let models = self.models();
        let now_day = self.inner.scoring_day(&models);
        let minor = self.inner.config.currencies.base.minor_per_major();
        let covariance = match &models.fits {
            Some(fits) if !kept_spreads => parameter_covariance(fits, &self.inner.config.scoring),
            _ => Default::default(),
        };
        // Shard by shard, each scored by the whole-population kernel (parallel inside).
        for shard in &self.inner.shards {
            let Ok(mut book) = shard.write() else { continue };
            let (slots, inputs): (Vec<usize>, Vec<ScoreInput>) = book
                .records()
                .iter()
                .enumerate()
                .filter_map(|(slot, r)| r.score_input(now_day, minor).map(|input| (slot, input)))
                .unzip();
            // Should one history fail the kernel, score one by one (without intervals)
            // so that it costs only that customer its scores.
            let mut scores: Vec<Option<Scores>> = match models.scorer.score_all_with_intervals(&inputs, &covariance) {
                Ok(scores) => scores.into_iter().map(Some).collect(),
                Err(_) => {
                    let mut cache = ScoreCache::default();
                    inputs.iter().map(|input| models.scorer.score_cached(input, &mut cache).ok()).collect()
                }
            };
            if kept_spreads {
                for (s, &slot) in scores.iter_mut().zip(&slots) {
                    let kept = book.records().row(slot).and_then(|r| r.scores());
                    *s = s.map(|s| s.with_spread_of(kept.as_ref()));
                }
            }
            // Chunk by chunk: its score columns are made unique once, not per customer.
            let mut run = Vec::with_capacity(CHUNK);
            let mut rows = slots.iter().zip(scores).peekable();
            for chunk in 0..book.len().div_ceil(CHUNK) {
                run.clear();
                while let Some((&slot, s)) = rows.next_if(|(slot, _)| **slot / CHUNK == chunk) {
                    run.push((slot % CHUNK, s));
                }
                book.set_chunk_scores(chunk, &run);
            }
            // Whatever cannot be scored holds no scores, not a snapshot's placeholder.
            let unscorable: Vec<usize> = (0..book.len())
                .filter(|&slot| {
                    book.records()
                        .row(slot)
                        .is_some_and(|r| r.scores().is_some() && r.score_input(now_day, minor).is_none())
                })
                .collect();
            for slot in unscorable {
                book.set_scores(slot, None);
            }
        }
    }

    /// Writes a snapshot of every customer at a consistent cut of the log, keeps
    /// the two newest snapshots, and deletes log segments the older one covers.
    pub fn snapshot(&self) -> Result<SnapshotReport> {
        self.snapshot_keeping(2)
    }

    /// Erases a customer: a tombstone is logged (so a crash cannot bring them
    /// back), they are removed from memory, then a new segment and snapshot
    /// are started and every older snapshot and log segment is deleted, so no
    /// file in the data directory holds them any more. Returns whether they existed.
    pub fn erase(&self, customer: &CustomerId) -> Result<bool> {
        if let Some(failure) = self.failure() {
            return Err(StateError::ShardFailed(failure.clone()));
        }
        let wal = self.wal.as_ref().ok_or(StateError::ShuttingDown)?;
        let (tx, rx) = bounded(1);
        let sender = self.senders[self.shard_of(customer)].clone();
        let target = customer.clone();
        let payload = [ERASE_PREFIX, customer.as_str().as_bytes()].concat();
        wal.submit(payload, 1, move |result| {
            // In log order: the customer's earlier events reach the shard first.
            let answer = result.map_err(StateError::Log).and_then(|_| {
                let (reply, existed) = bounded(1);
                sender.send(ShardMessage::Erase(target, reply)).map_err(|_| StateError::ShardStopped)?;
                Ok(existed)
            });
            let _ = tx.send(answer);
        })
        .map_err(StateError::Log)?;
        let existed = rx.recv().map_err(|_| StateError::LogStopped)??.recv().map_err(|_| StateError::ShardStopped)?;
        crash_point("erase-logged");
        wal.roll().map_err(StateError::Log)?;
        crash_point("erase-rolled");
        self.snapshot_keeping(1)?;
        crash_point("erase-snapshotted");
        self.erase_quarantined(customer)?;
        Ok(existed)
    }

    /// Creates a campaign with its frozen membership: one log record holds
    /// both, so the answer (after it is durable and every shard added its
    /// members) means a crash cannot lose either. Ids are never reused.
    pub fn create_campaign(
        &self,
        definition: CampaignDefinition,
        seeds: Vec<MemberSeed>,
    ) -> Result<CampaignDefinition> {
        if let Some(failure) = self.failure() {
            return Err(StateError::ShardFailed(failure.clone()));
        }
        let wal = self.wal.as_ref().ok_or(StateError::ShuttingDown)?;
        let _one_at_a_time = self.inner.campaign_writes.lock().unwrap_or_else(PoisonError::into_inner);
        if self.campaign(&definition.campaign_id).is_some() {
            return Err(StateError::CampaignExists(definition.campaign_id.to_string()));
        }
        let definition = CampaignDefinition {
            members: seeds.len() as u64,
            closed_at: None,
            clv_change_at_close: [None, None],
            ..definition
        };
        let mut payload = CAMPAIGN_PREFIX.to_vec();
        campaigns::encode_creation(&definition, &seeds, &mut payload);
        if payload.len() > wal.max_payload() {
            return Err(StateError::CampaignTooLarge {
                members: seeds.len(),
                bytes: payload.len(),
                max: wal.max_payload(),
            });
        }
        let shared = Arc::new(definition.clone());
        // The members' earlier events reach their shards first.
        self.log_and_tell_shards(wal, payload, move |inner, replies| {
            inner.campaigns_mut().push((*shared).clone());
            let per_shard = inner.seeds_per_shard(seeds);
            per_shard
                .into_iter()
                .zip(replies)
                .map(|(seeds, reply)| ShardMessage::Campaign(shared.clone(), seeds, reply))
                .collect()
        })?;
        crash_point("campaign-created");
        Ok(definition)
    }

    /// Closes a campaign at `closed_at`, freezing its results; closing a
    /// closed campaign changes nothing. Returns the campaign as it stands.
    pub fn close_campaign(&self, campaign_id: &str, closed_at: Timestamp) -> Result<CampaignDefinition> {
        if let Some(failure) = self.failure() {
            return Err(StateError::ShardFailed(failure.clone()));
        }
        let wal = self.wal.as_ref().ok_or(StateError::ShuttingDown)?;
        let _one_at_a_time = self.inner.campaign_writes.lock().unwrap_or_else(PoisonError::into_inner);
        let existing = self.campaign(campaign_id).ok_or_else(|| StateError::UnknownCampaign(campaign_id.to_owned()))?;
        if existing.closed_at.is_some() {
            return Ok(existing);
        }
        // The CLV changes as of now are frozen with the window.
        let now = self.campaign_results()?;
        let groups = now.iter().find(|(d, _)| &*d.campaign_id == campaign_id).map(|(_, g)| g);
        let close = campaigns::Close {
            campaign_id: campaign_id.into(),
            closed_at,
            clv_change: groups.map_or([None, None], |[t, c]| [t.clv_change, c.clv_change]),
        };
        let mut payload = CLOSE_CAMPAIGN_PREFIX.to_vec();
        campaigns::encode_close(&close, &mut payload);
        self.log_and_tell_shards(wal, payload, move |inner, replies| {
            inner.close_in_registry(&close);
            replies.into_iter().map(|reply| ShardMessage::CloseCampaign(close.campaign_id.clone(), reply)).collect()
        })?;
        self.campaign(campaign_id).ok_or_else(|| StateError::UnknownCampaign(campaign_id.to_owned()))
    }

    /// Logs `payload`; once it is durable, in log order, `in_log_order` makes
    /// one message per shard (each with its shard's reply channel), which are
    /// sent; returns once every shard has answered.
    fn log_and_tell_shards(
        &self,
        wal: &Wal,
        payload: Vec<u8>,
        in_log_order: impl FnOnce(&Inner, Vec<Sender<()>>) -> Vec<ShardMessage> + Send + 'static,
    ) -> Result<()> {
        let (tx, rx) = bounded(1);
        let (senders, inner) = (self.senders.clone(), self.inner.clone());
        wal.submit(payload, 1, move |result| {
            let answer = result.map_err(StateError::Log).and_then(|_| {
                let (replies, answers): (Vec<_>, Vec<_>) = senders.iter().map(|_| bounded(1)).unzip();
                for (sender, message) in senders.iter().zip(in_log_order(&inner, replies)) {
                    sender.send(message).map_err(|_| StateError::ShardStopped)?;
                }
                Ok(answers)
            });
            let _ = tx.send(answer);
        })
        .map_err(StateError::Log)?;
        for answer in rx.recv().map_err(|_| StateError::LogStopped)?? {
            answer.recv().map_err(|_| StateError::ShardStopped)?;
        }
        Ok(())
    }

    /// Every campaign, in creation order.
    pub fn campaigns(&self) -> Vec<CampaignDefinition> {
        self.inner.campaigns.read().map(|d| d.clone()).unwrap_or_else(|p| p.into_inner().clone())
    }

    /// The campaign `campaign_id`.
    pub fn campaign(&self, campaign_id: &str) -> Option<CampaignDefinition> {
        let definitions = self.inner.campaigns.read().unwrap_or_else(PoisonError::into_inner);
        definitions.iter().find(|d| &*d.campaign_id == campaign_id).cloned()
    }

    /// Every campaign with its treatment and control results, with the
    /// configured margin, in creation order.
    pub fn campaign_results(&self) -> Result<Vec<(CampaignDefinition, [GroupResult; 2])>> {
        let minor = self.inner.config.currencies.base.minor_per_major();
        let per_shard = self.with_books(|book| {
            campaigns::shard_sums(book.campaigns(), minor, |c| book.row(c).and_then(|r| r.scores()).map(|s| s.clv))
        })?;
        let mut sums: std::collections::HashMap<Arc<str>, [GroupSums; 2]> = std::collections::HashMap::new();
        for shard in per_shard {
            for (id, groups) in shard {
                let total = sums.entry(id).or_default();
                total[0].merge(&groups[0]);
                total[1].merge(&groups[1]);
            }
        }
        let margin = self.inner.config.scoring.clv.margin;
        Ok(self
            .campaigns()
            .into_iter()
            .map(|d| {
                let groups = sums.get(&d.campaign_id).copied().unwrap_or_default();
                let rows = campaigns::results(&d, &groups, margin, minor);
                (d, rows)
            })
            .collect())
    }

    /// [`Self::snapshot`], keeping the `keep` newest snapshots and truncating
    /// the log before the oldest kept one.
    fn snapshot_keeping(&self, keep: usize) -> Result<SnapshotReport> {
        if let Some(failure) = self.failure() {
            return Err(StateError::ShardFailed(failure.clone()));
        }
        let wal = self.wal.as_ref().ok_or(StateError::ShuttingDown)?;
        let (tx, rx) = bounded(1);
        let senders = self.senders.clone();
        let inner = self.inner.clone();
        wal.submit(CHECKPOINT_MARKER.to_vec(), 1, move |result| {
            let answer = result.map_err(StateError::Log).map(|appended| {
                // Runs in log order: every earlier record has already been routed to the shards.
                let gate = Arc::new(CheckpointGate {
                    paused: std::sync::Barrier::new(senders.len() + 1),
                    resume: std::sync::Barrier::new(senders.len() + 1),
                });
                let replies: Vec<_> = senders
                    .iter()
                    .map(|s| {
                        let (reply, image) = bounded(1);
                        if s.send(ShardMessage::Checkpoint(reply, gate.clone())).is_err() {
                            // A stopped shard cannot reach the gate: stand in for it. Its
                            // reply channel is dropped, so the snapshot below is refused
                            // rather than written without that shard's customers.
                            let gate = gate.clone();
                            std::thread::spawn(move || gate.hold());
                        }
                        image
                    })
                    .collect();
                // In log order too: exactly the campaigns created before the marker.
                let definitions = inner.campaigns.read().map(|d| d.clone()).unwrap_or_else(|p| p.into_inner().clone());
                (appended.first_seq, replies, gate, definitions)
            });
            let _ = tx.send(answer);
        })
        .map_err(StateError::Log)?;
        let (marker_seq, replies, gate, definitions) = rx.recv().map_err(|_| StateError::LogStopped)??;
        let (mut images, mut shard_failed) = (Vec::new(), false);
        for reply in replies {
            match reply.recv() {
                Ok(image) => images.push(image),
                Err(_) => shard_failed = true,
            }
        }
        // Every shard writer now waits at the gate: the statistics hold exactly the events before the marker.
        gate.paused.wait();
        let mut items = Vec::new();
        self.item_stats().encode(&mut items);
        gate.resume.wait();
        if shard_failed {
            return Err(StateError::ShardStopped);
        }
        let dir = self.inner.config.data_dir.join("snapshots");
        let next_seq = marker_seq + 1;
        let watermark = self.inner.watermark_ms.load(Ordering::Relaxed);
        let io = |source: std::io::Error| StateError::Snapshot { dir: dir.clone(), source };
        // Taken after the shards answered, so it covers every product their records name.
        let products = self.inner.catalog.names();
        let models = self.models();
        let mut campaign_bytes = Vec::new();
        if !definitions.is_empty() {
            let members: Vec<Vec<(CustomerId, Member)>> =
                images.iter_mut().map(|image| std::mem::take(&mut image.members)).collect();
            campaigns::encode_snapshot(&definitions, &members, &mut campaign_bytes);
        }
        let shared = SharedState {
            products: &products,
            items: &items,
            models: models.fits.as_ref(),
            hasher: self.inner.hasher,
            campaigns: &campaign_bytes,
        };
        let shards: Vec<ShardState<'_>> = images
            .iter()
            .map(|image| ShardState { section: &image.section, watermark_ms: image.watermark_ms, dedup: &image.dedup })
            .collect();
        let customers = images.iter().map(|image| image.section.len()).sum::<usize>() as u64;
        let storage = &*self.inner.config.storage;
        let (path, bytes) =
            write_snapshot(storage, &dir, Cut { next_seq, watermark_ms: watermark }, &shards, &shared).map_err(io)?;
        drop(shards);
        drop(images);
        crash_point("snapshot-published");
        let kept = list_snapshots(storage, &dir).map_err(io)?;
        // Older snapshots, and the temporary files of snapshots that failed
        // half-way: an erasure must leave no copy of the customer behind.
        let unfinished =
            storage.list(&dir).map_err(io)?.into_iter().filter(|p| p.extension().is_some_and(|e| e == "tmp"));
        let removed: Vec<PathBuf> = kept.iter().skip(keep).map(|(_, old)| old.clone()).chain(unfinished).collect();
        for old in &removed {
            storage.remove_file(old).map_err(io)?;
        }
        // The removals must survive a power cut too, or the customer comes back with them.
        if !removed.is_empty() {
            storage.sync_dir(&dir).map_err(io)?;
        }
        let oldest_kept = kept.iter().take(keep).map(|k| k.0).min().unwrap_or(next_seq);
        crash_point("snapshot-pruned");
        let removed_segments = wal.truncate_before(oldest_kept).map_err(StateError::Log)?;
        Ok(SnapshotReport { path, next_seq, customers, bytes, removed_segments })
    }

    /// Refits every model on all customers and rescores everyone with the
    /// configured one (rayon), then refreshes the recommendation model (also
    /// when the fit fails, which keeps the previous models).
    pub fn refit(&self) -> Result<Arc<ModelState>> {
        let refitted = self.refit_models();
        self.refresh_recommendations();
        refitted
    }

    /// [`Self::refit`], then a snapshot, so that the models and the CLV
    /// interval widths the refit serves are durable and a restart serves
    /// them again. The refit stands if the snapshot fails (the error says
    /// so); a crash between the two restarts with the previous refit's scores.
    pub fn refit_durably(&self) -> Result<Arc<ModelState>> {
        let models = self.refit()?;
        self.snapshot().map_err(|e| StateError::RefitNotDurable(Box::new(e)))?;
        Ok(models)
    }

    fn refit_models(&self) -> Result<Arc<ModelState>> {
        let started = Instant::now();
        let now = self.now().ok_or(StateError::NoEvents)?;
        let gathered = self.gather(now)?;
        let inputs = FitInputs::of_buyers(
            gathered.iter().flatten().map(|g| (g.input, g.occasions, g.occasion_value_minor)),
            Some(now),
        );
        let config = &self.inner.config.scoring;
        let minor = self.inner.config.currencies.base.minor_per_major();
        let fits = inputs.fit(now, config.time_unit, Some(config.model), minor);
        let scored = self.score_gathered(gathered, fits)?;
        let cuts = scored.ranks().cuts(&config.segments);
        Ok(self.install_scored(scored, &cuts, started))
    }

    /// What this engine's buyers contribute to a fit of a population that
    /// spans several engines (a fleet's partitions): see [`FitInputs`].
    pub fn fit_inputs(&self) -> Result<FitInputs> {
        let now = self.watermark().unwrap_or_else(|| Timestamp::from_millis(0));
        let gathered = self.gather(now)?;
        Ok(FitInputs::of_buyers(
            gathered.iter().flatten().map(|g| (g.input, g.occasions, g.occasion_value_minor)),
            self.watermark(),
        ))
    }

    /// Scores every buyer with `fits` as of their `fitted_at`, which becomes
    /// this engine's "now" when they are installed. The labels wait for the
    /// population's cuts: [`ScoredPopulation::ranks`] is this engine's share
    /// of the population, and [`Self::install_population`] applies the cuts.
    pub fn score_population(&self, fits: ModelFits) -> Result<ScoredPopulation> {
        let gathered = self.gather(fits.fitted_at)?;
        self.score_gathered(gathered, fits)
    }

    /// Installs what [`Self::score_population`] scored with the labels of
    /// `cuts`, and serves `scored`'s models from now on. "Now" does not go
    /// back before their fit time, even where this engine's own events are older.
    pub fn install_population(&self, scored: ScoredPopulation, cuts: &SegmentCuts) -> Arc<ModelState> {
        self.install_scored(scored, cuts, Instant::now())
    }

    /// Gathers every buyer's inputs as of `now`, under short read locks.
    fn gather(&self, now: Timestamp) -> Result<Vec<Vec<Gathered>>> {
        let minor = self.inner.config.currencies.base.minor_per_major();
        self.with_books(|book| {
            book.records()
                .iter()
                .enumerate()
                .filter_map(|(slot, r)| {
                    r.score_input(now.day(), minor).map(|input| Gathered {
                        slot,
                        customer_id: r.customer_id().to_owned(),
                        input,
                        occasions: r.occasions(),
                        revenue: r.revenue_minor as f64 / minor,
                        occasion_value_minor: r.total_occasion_value_minor(),
                    })
                })
                .collect()
        })
    }

    /// Scores gathered buyers with `fits`, off the locks (rayon).
    fn score_gathered(&self, gathered: Vec<Vec<Gathered>>, fits: ModelFits) -> Result<ScoredPopulation> {
        let config = &self.inner.config.scoring;
        let scorer = scorer_for(&fits, config)?;
        let inputs: Vec<ScoreInput> = gathered.iter().flatten().map(|g| g.input).collect();
        let scores = scorer
            .score_all_with_intervals(&inputs, &parameter_covariance(&fits, config))
            .map_err(StateError::Scoring)?;
        let all: Vec<&Gathered> = gathered.iter().flatten().collect();
        let segment_inputs: Vec<SegmentInput> = all
            .par_iter()
            .zip(scores.par_iter())
            .map(|(g, s)| SegmentInput {
                days_since_last_purchase: f64::from(g.input.tenure_days - g.input.recency_days),
                occasions: g.occasions,
                revenue: g.revenue,
                clv: s.clv,
                p_alive: s.p_alive,
            })
            .collect();
        Ok(ScoredPopulation {
            models: ModelState { scorer, fits: Some(fits), provisional: false },
            gathered,
            scores,
            segment_inputs,
        })
    }

    /// Writes scores and labels back shard by shard and serves the models.
    fn install_scored(&self, scored: ScoredPopulation, cuts: &SegmentCuts, started: Instant) -> Arc<ModelState> {
        let config = &self.inner.config.scoring;
        let ScoredPopulation { models, gathered, scores, segment_inputs } = scored;
        let segments: Vec<Segments> = segment_inputs.par_iter().map(|i| cuts.label(i, &config.segments)).collect();
        if let Some(fits) = &models.fits {
            self.inner.clock_floor_ms.fetch_max(fits.fitted_at.millis(), Ordering::Relaxed);
        }
        let mut offset = 0;
        for (shard, rows) in gathered.iter().enumerate() {
            if let Ok(mut book) = self.inner.shards[shard].write() {
                for (i, row) in rows.iter().enumerate() {
                    // An erasure may have moved records since they were gathered.
                    if book.records().id(row.slot) == Some(row.customer_id.as_str()) {
                        book.set_scores(row.slot, Some(scores[offset + i]));
                        book.set_segments(row.slot, Some(segments[offset + i]));
                    }
                }
            }
            offset += rows.len();
        }
        let state = Arc::new(models);
        if let Ok(mut models) = self.inner.models.write() {
            *models = state.clone();
        }
        {
            let mut frozen = self.inner.frozen.lock().unwrap_or_else(PoisonError::into_inner);
            if frozen.len() == crate::quality::KEPT_REFITS {
                frozen.pop_front();
            }
            frozen.push_back(state.clone());
        }
        self.inner.stats.refits.fetch_add(1, Ordering::Relaxed);
        self.inner.stats.last_refit_micros.store(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        state
    }

    /// Stops accepting events, lets queued ones finish, and joins the threads.
    pub fn shutdown(mut self) {
        self.close();
    }

    fn close(&mut self) {
        self.wal.take(); // the log writer finishes queued records and hands them to the shards
        self.senders.clear();
        // Shard writers first: the statistics thread ends when they are gone.
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.close();
    }
}

impl EventSink for Engine {
    fn submit(&self, events: Vec<Event>) -> std::result::Result<SubmitOutcome, SinkError> {
        let (tx, rx) = bounded(1);
        self.submit_with(events, move |r| {
            let _ = tx.send(r);
        });
        rx.recv().map_err(|_| SinkError::Unavailable("engine stopped".into()))?
    }
}

/// Rescores one customer after an event, keeping the CLV interval's width
/// from the last whole-population scoring ([`Scores::with_spread_of`]).
fn rescore(book: &mut CustomerBook, slot: usize, scorer: &Scorer, cache: &mut ScoreCache, now_day: i32, minor: f64) {
    let row = book.records().row(slot);
    let input = row.and_then(|r| r.score_input(now_day, minor));
    let earlier = row.and_then(|r| r.scores());
    if let Some(input) = input {
        let scores = scorer.score_cached(&input, cache).ok().map(|s| s.with_spread_of(earlier.as_ref()));
        book.set_scores(slot, scores);
    }
}

/// Events a shard writer applies per hold of its write lock. A request's
/// part for a shard (1,000 events from the load generator) would otherwise
/// hold it for milliseconds, and every lookup of that shard, on a tokio
/// worker, would wait that long.
const APPLY_CHUNK: usize = 256;

/// Customer id whose events make a shard writer panic, in this crate's tests only.
#[cfg(test)]
const PANIC_IN_TESTS: &str = "\u{1}panic-in-tests";

/// Applies one batch under the shard's write lock and rescores the customers it
/// touched; returns what became of the events (refusals at their `positions`),
/// or why the shard cannot go on.
fn apply_batch(
    inner: &Inner,
    shard: usize,
    batch: &ShardBatch,
    models: &ModelState,
    cache: &mut ScoreCache,
    spare: Observed,
) -> std::result::Result<(SubmitOutcome, Observed), String> {
    let minor = inner.config.currencies.base.minor_per_major();
    let mut outcome = SubmitOutcome::default();
    let events = &batch.events;
    let mut spare = Some(spare);
    let mut observed = None;
    let mut touched = Vec::with_capacity(APPLY_CHUNK.min(events.len()));
    for start in (0..events.len()).step_by(APPLY_CHUNK) {
        let end = (start + APPLY_CHUNK).min(events.len());
        let mut book = inner.shards[shard]
            .write()
            .map_err(|_| "its lock is poisoned (another thread panicked while writing it)".to_owned())?;
        #[cfg(test)]
        if events[start..end].iter().any(|e| e.customer_id.as_str() == PANIC_IN_TESTS) {
            panic!("a panic injected by a test");
        }
        // End-to-end tests hold the write lock here, or panic under it.
        patron_storage::pause_point("shard-apply");
        patron_storage::fail_point("shard-apply");
        for ((event, &hash), &index) in
            events[start..end].iter().zip(&batch.hashes[start..end]).zip(&batch.positions[start..end])
        {
            inner.watermark_ms.fetch_max(event.timestamp.millis(), Ordering::Relaxed);
            match book.apply_deferring(event, hash) {
                (slot, Applied::Accepted) => {
                    outcome.accepted += 1;
                    touched.extend(slot);
                }
                (_, Applied::Duplicate) => outcome.duplicates += 1,
                (_, Applied::BeyondHorizon { remembered_from_day }) => {
                    inner.stats.beyond_horizon.fetch_add(1, Ordering::Relaxed);
                    outcome.refused.push(Refused { index, reason: beyond_horizon_reason(remembered_from_day) });
                }
                (_, Applied::Refused(refusal)) => {
                    let counter = match refusal {
                        Refusal::Response(_) => &inner.stats.refused_responses,
                        Refusal::Refund(_) => &inner.stats.refused_refunds,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    outcome.refused.push(Refused { index, reason: refusal.to_string() });
                }
            }
        }
        let now_day = inner.scoring_day(models);
        touched.sort_unstable();
        touched.dedup();
        for slot in touched.drain(..) {
            rescore(&mut book, slot, &models.scorer, cache, now_day, minor);
        }
        inner.gauges[shard].publish(&book);
        if end == events.len() {
            observed = spare.take().map(|spare| book.take_observed(spare));
        }
    }
    Ok((outcome, observed.or(spare).unwrap_or_default()))
}

/// The product statistics thread (see [`crate::item_feed`]). A batch whose
/// apply panics stops the engine as a failed shard would: statistics that
/// silently miss purchases would mislead every recommendation after them.
fn item_feeder(inner: &Inner, receiver: item_feed::FeedReceiver) {
    receiver.run(&inner.item_feed, |observed| {
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| inner.items.apply(observed))) {
            let failure =
                ShardFailure { shard: None, reason: format!("applying a batch panicked: {}", panic_message(&*panic)) };
            report_shard_failure(&failure);
            let _ = inner.failure.set(failure);
            *observed = Observed::default();
        }
    });
}

/// The engine has no logger of its own (the server installs one); a dying
/// shard is printed to stderr so it is never silent.
fn report_shard_failure(failure: &ShardFailure) {
    eprintln!("patron: {failure}");
}

fn shard_writer(inner: &Inner, shard: usize, rx: &Receiver<ShardMessage>, feed: &FeedSender) {
    // The memo belongs to one model version: cleared whenever the models change.
    let mut cache = ScoreCache::default();
    let mut cached_for: Option<Arc<ModelState>> = None;
    while let Ok(message) = rx.recv() {
        let batch = match message {
            ShardMessage::Events(batch) => batch,
            ShardMessage::Erase(customer, reply) => {
                let existed = inner.shards[shard].write().is_ok_and(|mut book| {
                    let existed = book.remove(&customer);
                    inner.gauges[shard].publish(&book);
                    existed
                });
                let _ = reply.send(existed);
                continue;
            }
            ShardMessage::Campaign(definition, seeds, reply) => {
                if let Ok(mut book) = inner.shards[shard].write() {
                    book.campaigns_mut().create(&definition, seeds);
                    let _ = reply.send(());
                }
                continue;
            }
            ShardMessage::CloseCampaign(id, reply) => {
                if let Ok(mut book) = inner.shards[shard].write() {
                    book.campaigns_mut().close(&id);
                    let _ = reply.send(());
                }
                continue;
            }
            ShardMessage::Checkpoint(reply, gate) => {
                // The one place fingerprints are forgotten: the snapshot's cut (see crate::dedup).
                let image = inner.shards[shard].write().ok().map(|mut book| {
                    book.forget_beyond_horizon();
                    inner.gauges[shard].publish(&book);
                    let watermark_ms = book.watermark().map_or(i64::MIN, Timestamp::millis);
                    let members = book.campaigns().members().map(|(c, m)| (c.clone(), m.clone())).collect();
                    ShardImage { section: book.records().section(), watermark_ms, dedup: book.dedup().clone(), members }
                });
                // A poisoned lock sends nothing: the snapshot is then refused.
                if let Some(image) = image {
                    let _ = reply.send(image);
                }
                gate.hold();
                continue;
            }
        };
        inner.stats.queued_batches.fetch_sub(1, Ordering::Relaxed);
        let models = inner.models.read().map(|m| m.clone()).unwrap_or_else(|p| p.into_inner().clone());
        if !cached_for.as_ref().is_some_and(|c| Arc::ptr_eq(c, &models)) {
            cache.clear();
            cached_for = Some(models.clone());
        }
        let spare = feed.spare();
        let applied = catch_unwind(AssertUnwindSafe(|| apply_batch(inner, shard, &batch, &models, &mut cache, spare)))
            .map_err(|panic| panic_message(&*panic))
            .and_then(|applied| {
                applied.and_then(|(outcome, observed)| {
                    feed.send(&inner.item_feed, observed)
                        .map(|()| outcome)
                        .map_err(|_| "the product statistics thread has stopped".to_owned())
                })
            });
        let outcome = match applied {
            Ok(outcome) => outcome,
            Err(reason) => {
                // Fail-stop: the book may be half-updated and its lock is poisoned.
                let failure = ShardFailure { shard: Some(shard), reason };
                report_shard_failure(&failure);
                let _ = inner.failure.set(failure.clone());
                batch.completion.fail(SinkError::Unavailable(failure.to_string()));
                return;
            }
        };
        inner.stats.accepted.fetch_add(outcome.accepted as u64, Ordering::Relaxed);
        inner.stats.duplicates.fetch_add(outcome.duplicates as u64, Ordering::Relaxed);
        batch.completion.finish_part(outcome);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events() -> Vec<Event> {
        let v = Validator::new(CurrencyTable::default());
        (0..50)
            .map(|i| {
                let json = format!(
                    r#"{{"type":"purchase","event_id":"e{i}","customer_id":"c{}","timestamp":"2025-01-01T00:00:00Z","items":[{{"sku":"s{i}","quantity":2,"price":"1.25"}}]}}"#,
                    i % 7
                );
                v.decode(json.as_bytes()).unwrap()
            })
            .collect()
    }

    #[test]
    fn batches_split_into_records_that_fit_and_decode_back() {
        let events = events();
        let records = split_for_log(events.clone(), 400);
        assert!(records.len() > 1 && records.iter().all(|(p, _)| p.len() <= 400));
        let validator = Validator::new(CurrencyTable::default());
        let back: Vec<Event> = records.iter().flat_map(|(p, _)| decode_payload(p, &validator).unwrap()).collect();
        assert_eq!(back, events);
    }

    fn purchase(event_id: &str, customer_id: &str, revenue_minor: i64) -> Event {
        Event {
            event_id: patron_model::EventId::new(event_id).unwrap(),
            customer_id: CustomerId::new(customer_id).unwrap(),
            timestamp: Timestamp::parse_rfc3339("2025-01-01T00:00:00Z").unwrap(),
            kind: patron_model::EventKind::Purchase(patron_model::Purchase {
                order_id: None,
                items: Vec::new(),
                revenue_minor,
                acquisition: None,
            }),
        }
    }

    fn open(dir: &Path, shards: usize) -> Engine {
        let mut config = EngineConfig::new(dir);
        config.shards = shards;
        Engine::open(config).unwrap().0
    }

    /// Issue 12: a shard that died answered `200 {"accepted":3}` for a 6-event
    /// batch, and the snapshot at shutdown left its customers out.
    #[test]
    fn a_batch_larger_than_one_hold_of_the_lock_is_applied_and_rescored_whole() {
        let dir = tempfile::tempdir().unwrap();
        let engine = open(dir.path(), 1);
        let n = 3 * APPLY_CHUNK + 7;
        // 40 customers, so each appears in every chunk; the last event repeats the first.
        let mut events: Vec<Event> = (0..n).map(|i| purchase(&format!("e{i}"), &format!("c{}", i % 40), 100)).collect();
        events.push(events[0].clone());
        let outcome = engine.submit(events).unwrap();
        assert_eq!((outcome.accepted, outcome.duplicates), (n, 1));
        assert_eq!(engine.shard_sizes(), [40]);
        assert_eq!(engine.dedup_usage().0, n);
        for c in 0..40 {
            let record = engine.customer(&CustomerId::new(&format!("c{c}")).unwrap()).unwrap();
            assert_eq!(record.orders as usize, n / 40 + usize::from(c < n % 40), "customer c{c}");
            assert!(record.scores.is_some(), "customer c{c} is rescored");
        }
    }

    #[test]
    fn a_snapshot_holds_the_product_statistics_of_every_acknowledged_purchase() {
        let dir = tempfile::tempdir().unwrap();
        let engine = open(dir.path(), 2);
        let events = events();
        for chunk in events.chunks(5) {
            assert_eq!(engine.submit(chunk.to_vec()).unwrap().accepted, chunk.len());
        }
        engine.snapshot().unwrap();
        let mut before = Vec::new();
        engine.item_stats().encode(&mut before);
        assert_eq!(engine.item_stats_behind(), 0);
        let total_orders: u64 =
            (0..engine.catalog().len() as u32).filter_map(|p| engine.item_stats().product(p)).map(|p| p.orders).sum();
        assert_eq!(total_orders, events.len() as u64, "one order per purchase line");
        drop(engine);
        // The log after the snapshot is empty: the statistics come back from the snapshot alone.
        let engine = open(dir.path(), 2);
        let mut after = Vec::new();
        engine.item_stats().encode(&mut after);
        assert!(before == after, "the restored statistics differ from the snapshot's engine");
    }

    #[test]
    fn regression_a_poisoned_shard_fails_views_of_the_whole_population_instead_of_skipping_it() {
        let dir = tempfile::tempdir().unwrap();
        let engine = open(dir.path(), 2);
        let good: Vec<Event> = (0..6).map(|i| purchase(&format!("e{i}"), &format!("c{i}"), 100)).collect();
        engine.submit(good).unwrap();
        assert_eq!(engine.with_books(CustomerBook::len).unwrap().iter().sum::<usize>(), 6);
        assert!(engine.submit(vec![purchase("boom", PANIC_IN_TESTS, 1)]).is_err());
        assert!(matches!(engine.with_books(CustomerBook::len), Err(StateError::ShardFailed(_))));
        assert!(matches!(engine.state_memory(), Err(StateError::ShardFailed(_))));
        assert!(
            matches!(engine.refit(), Err(StateError::ShardFailed(_))),
            "a refit on part of the customers is refused"
        );
    }

    #[test]
    fn regression_a_dead_shard_refuses_events_instead_of_answering_for_part_of_them() {
        let dir = tempfile::tempdir().unwrap();
        let engine = open(dir.path(), 2);
        let good: Vec<Event> = (0..6).map(|i| purchase(&format!("e{i}"), &format!("c{i}"), 100)).collect();
        assert_eq!(engine.submit(good.clone()).unwrap().accepted, 6);
        let error = engine.submit(vec![purchase("boom", PANIC_IN_TESTS, 1)]).unwrap_err();
        assert!(matches!(&error, SinkError::Unavailable(m) if m.contains("injected")), "{error:?}");
        let failure = engine.failure().expect("the failure is recorded").clone();
        assert_eq!(failure.shard, Some(engine.shard_of(&CustomerId::new(PANIC_IN_TESTS).unwrap())));
        let later: Vec<Event> = (10..16).map(|i| purchase(&format!("e{i}"), &format!("c{i}"), 100)).collect();
        let error = engine.submit(later).unwrap_err();
        assert!(matches!(&error, SinkError::Unavailable(m) if m.contains("restart")), "{error:?}");
        assert!(matches!(engine.snapshot(), Err(StateError::ShardFailed(f)) if f == failure));
        assert!(matches!(engine.erase(&CustomerId::new("c1").unwrap()), Err(StateError::ShardFailed(_))));
        drop(engine);
        // The log still has every acknowledged event; a restart applies them all.
        let engine = open(dir.path(), 2);
        assert!(engine.failure().is_none());
        for i in 0..6 {
            assert!(engine.customer(&CustomerId::new(&format!("c{i}")).unwrap()).is_some(), "c{i}");
        }
    }

    /// Replay applies each shard's events on a thread of its own: an event
    /// whose apply panics there is quarantined, and every other event, in
    /// every shard, applies in log order (orders and erasures included).
    #[test]
    fn replay_by_shard_threads_quarantines_a_panicking_event_and_applies_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let engine = open(dir.path(), 4);
        let events: Vec<Event> = (0..400).map(|i| purchase(&format!("e{i}"), &format!("c{}", i % 40), 100)).collect();
        assert_eq!(engine.submit(events).unwrap().accepted, 400);
        assert!(engine.erase(&CustomerId::new("c7").unwrap()).unwrap());
        assert_eq!(engine.submit(vec![purchase("after", "c7", 100)]).unwrap().accepted, 1);
        assert!(engine.submit(vec![purchase("boom", PANIC_IN_TESTS, 1)]).is_err(), "the live shard dies");
        drop(engine);
        let engine = open(dir.path(), 4);
        let quarantined = engine.quarantined();
        assert_eq!(quarantined.len(), 1, "{quarantined:?}");
        assert!(quarantined[0].reason.contains("applying it panicked"), "{:?}", quarantined[0]);
        for c in (0..40).filter(|&c| c != 7) {
            let customer = engine.customer(&CustomerId::new(&format!("c{c}")).unwrap()).expect("replayed");
            assert_eq!(customer.summary.orders, 10, "c{c}");
        }
        let erased_then_back = engine.customer(&CustomerId::new("c7").unwrap()).expect("bought after the erasure");
        assert_eq!(erased_then_back.summary.orders, 1, "the erasure replays between its events");
    }

    /// Issue 12: two logged purchases of 92233720368547758 EUR (accepted by an
    /// older version) overflowed on replay, and every restart panicked.
    #[test]
    fn regression_an_old_directory_with_overflowing_amounts_starts_and_quarantines_them() {
        let dir = tempfile::tempdir().unwrap();
        let huge = 9_223_372_036_854_775_800;
        {
            let engine = open(dir.path(), 1);
            engine.submit(vec![purchase("ok-1", "victim", 500), purchase("big-1", "victim", huge)]).unwrap();
            engine.submit(vec![purchase("big-2", "victim", huge), purchase("ok-2", "bystander", 700)]).unwrap();
            // Dropped without a snapshot, as after kill -9: recovery replays the log.
        }
        let engine = open(dir.path(), 1);
        let quarantined = engine.quarantined();
        assert_eq!(quarantined.len(), 2, "{quarantined:?}");
        for q in &quarantined {
            assert_eq!(q.customer_id.as_ref().map(CustomerId::as_str), Some("victim"));
            assert!(q.reason.contains("revenue"), "{}", q.reason);
            assert!(std::fs::read_to_string(&q.file).unwrap().contains("big-"), "{}", q.file.display());
        }
        assert_eq!((quarantined[0].index, quarantined[1].index), (Some(1), Some(0)));
        let victim = engine.customer(&CustomerId::new("victim").unwrap()).unwrap();
        assert_eq!(victim.revenue_minor, 500, "only the in-bounds purchase applies");
        assert_eq!(engine.customer(&CustomerId::new("bystander").unwrap()).unwrap().revenue_minor, 700);
        // Erasing the customer removes the quarantined copies too.
        assert!(engine.erase(&CustomerId::new("victim").unwrap()).unwrap());
        assert!(quarantined.iter().all(|q| !q.file.exists()));
        assert!(engine.quarantined().is_empty());
    }

    #[test]
    fn sums_saturate_instead_of_wrapping() {
        let mut record = CustomerRecord::new(CustomerId::new("c").unwrap());
        for i in 0..3 {
            record.apply(&purchase(&format!("e{i}"), "c", i64::MAX / 2));
        }
        assert_eq!(record.revenue_minor, i64::MAX);
        assert_eq!(record.total_occasion_value_minor(), i64::MAX);
    }

    #[test]
    fn ndjson_payloads_of_the_first_log_format_still_replay() {
        let events = events();
        let table = CurrencyTable::default();
        let ndjson: Vec<u8> = events.iter().flat_map(|e| format!("{}\n", e.to_json(table.base)).into_bytes()).collect();
        assert_eq!(decode_payload(&ndjson, &Validator::new(table)).unwrap(), events);
    }
}
