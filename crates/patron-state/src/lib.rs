//! Patron's customer state: per-customer running summaries updated per event,
//! and the whole-population kernels (fit, score, segment) over them.
//!
//! The main types are [`CustomerBook`] (all records, implements
//! [`patron_model::EventSink`] through [`SharedBook`]) and the kernels in
//! [`scoring`]. The batch command and the streaming engine share this code, so
//! a file scored in batch and the same events streamed give the same customers.
//!
//! ```
//! use patron_model::{CurrencyTable, Validator};
//! use patron_state::CustomerBook;
//! let validator = Validator::new(CurrencyTable::default());
//! let mut book = CustomerBook::new();
//! for (id, day) in [("o-1", "2025-01-01"), ("o-2", "2025-01-01"), ("o-3", "2025-02-01")] {
//!     let json = format!(r#"{{"type":"purchase","event_id":"{id}","customer_id":"c-1","timestamp":"{day}T09:00:00Z","revenue":"10"}}"#);
//!     book.apply(&validator.decode(json.as_bytes()).unwrap());
//! }
//! let record = book.records().row(0).unwrap();
//! assert_eq!((record.orders, record.occasions()), (3, 2)); // same-day orders are one occasion
//! ```
#![deny(missing_docs)]

pub mod book;
pub mod campaigns;
pub mod channel;
pub mod chunk;
pub mod customer_row;
pub mod dedup;
pub mod engine;
pub mod evaluate;
mod item_feed;
pub mod orders;
pub mod quality;
pub mod record;
pub mod recs_tables;
pub mod scoring;
pub mod snapshot;

pub use book::{CustomerBook, Records, Row, SharedBook};
pub use chunk::{CHUNK, Chunk, ChunkMut, ChunkView, Groups, IdColumn};
pub use dedup::{DEFAULT_DEDUP_HORIZON_DAYS, DedupIndex, IdHasher};
pub use engine::{
    Clock, Engine, EngineConfig, EngineStats, ModelState, Quarantined, ScoredPopulation, ShardFailure, SnapshotReport,
    beyond_horizon_reason,
};
// What a fleet merges to label its partitions as one population.
pub use patron_score::{PopulationRanks, SegmentCuts};
// The recommender's core lives below this crate; its modules keep their paths here.
pub use orders::{OrderLedger, RefundRefusal};
pub use patron_recs::{
    BlendConfig, DiscoverWeights, ItemConfig, ItemStats, ListKind, Observed, ProductCatalog, PurchaseProfile, Reason,
    Recommendation, RecsModel, catalog, forgotten, items, profile, recommend,
};
pub use record::{Applied, CustomerRecord, History, OtherConsent, Refusal, Summary};
pub use recs_tables::{products_batch, recommend_all, recommendations_batch, similar_products_batch};
pub use scoring::{
    FitInputs, ModelFits, ScoredBook, ScoringConfig, TimeUnit, customers_batch, fit_models, parameter_covariance,
    score_book, scorer_for,
};

/// Errors of the state layer.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The configured purchase model could not be fitted.
    #[error("the configured model {model} is unavailable: {reason}")]
    ModelUnavailable {
        /// Which model.
        model: patron_score::PurchaseModel,
        /// Why its fit failed.
        reason: String,
    },
    /// A scoring kernel failed.
    #[error("scoring failed: {0}")]
    Scoring(#[source] patron_score::ScoreError),
    /// The write-ahead log failed to open or refused a write.
    #[error("write-ahead log: {0}")]
    Log(#[source] patron_wal::WalError),
    /// The snapshots directory could not be listed.
    #[error("cannot list snapshots in {}: {source}", dir.display())]
    ListSnapshots {
        /// The directory.
        dir: std::path::PathBuf,
        /// The I/O failure.
        #[source]
        source: std::io::Error,
    },
    /// A snapshot could not be written, or older ones removed.
    #[error("cannot write snapshot in {}: {source}", dir.display())]
    Snapshot {
        /// The snapshots directory.
        dir: std::path::PathBuf,
        /// The I/O failure.
        #[source]
        source: std::io::Error,
    },
    /// The log does not reach back to where the newest readable snapshot ends:
    /// starting would silently drop the events in between.
    #[error(
        "the log starts at sequence {log_start} but the state to recover starts at {state_start}{}; refusing to start without those events",
        unreadable_list(unreadable_snapshots)
    )]
    LogGap {
        /// First sequence number in the log.
        log_start: u64,
        /// First sequence number the recovered state needs.
        state_start: u64,
        /// Snapshots that could not be read, and why.
        unreadable_snapshots: Vec<(std::path::PathBuf, snapshot::SnapshotError)>,
    },
    /// A thread that replays the log panicked.
    #[error("a thread replaying the log panicked: {message}")]
    ReplayPanicked {
        /// The panic message.
        message: String,
    },
    /// A thread of the engine could not be started.
    #[error("cannot start the {name} thread: {source}")]
    SpawnThread {
        /// Which thread.
        name: &'static str,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// The engine is shutting down.
    #[error("the engine is shutting down")]
    ShuttingDown,
    /// The log writer went away before it answered.
    #[error("the log writer stopped")]
    LogStopped,
    /// A shard writer went away before it answered.
    #[error("a shard writer stopped")]
    ShardStopped,
    /// A refit succeeded and is served, but its snapshot failed: a restart
    /// before the next successful one serves the previous refit's scores.
    #[error("the refit is served but not durable (a restart would serve the previous refit): {0}")]
    RefitNotDurable(#[source] Box<StateError>),
    /// A refit was asked for before any event arrived.
    #[error("no events yet")]
    NoEvents,
    /// A shard writer died (a panic while applying events). Ingest, erasure
    /// and snapshots stop until a restart recovers the shard from the log.
    #[error("{0}")]
    ShardFailed(engine::ShardFailure),
    /// A quarantined copy of a logged record could not be written or deleted.
    #[error("quarantine file {}: {source}", path.display())]
    Quarantine {
        /// The file.
        path: std::path::PathBuf,
        /// The I/O failure.
        #[source]
        source: std::io::Error,
    },
    /// Building an Arrow batch failed.
    #[error("building the Arrow batch failed: {0}")]
    Arrow(String),
    /// A campaign with this id exists already.
    #[error("campaign_id: a campaign {0:?} exists already (ids are never reused, so results stay unambiguous)")]
    CampaignExists(String),
    /// No campaign has this id.
    #[error("no campaign {0:?}")]
    UnknownCampaign(String),
    /// The campaign's membership does not fit in one log record.
    #[error(
        "the audience of {members} members takes {bytes} bytes in the log, over the {max} a record may hold; narrow the audience or raise [wal] segment_bytes"
    )]
    CampaignTooLarge {
        /// Members.
        members: usize,
        /// Bytes of the log record.
        bytes: usize,
        /// Largest record the log takes.
        max: usize,
    },
    /// The snapshot's campaigns do not decode.
    #[error("the snapshot's campaigns do not decode")]
    CampaignsUnreadable,
}

/// " (unreadable snapshots: path: why; …)", or nothing when there are none.
fn unreadable_list(unreadable: &[(std::path::PathBuf, snapshot::SnapshotError)]) -> String {
    if unreadable.is_empty() {
        return String::new();
    }
    let each: Vec<String> = unreadable.iter().map(|(path, why)| format!("{}: {why}", path.display())).collect();
    format!(" (unreadable snapshots: {})", each.join("; "))
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, StateError>;
