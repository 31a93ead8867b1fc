//! The boundary between ingestion and state: ingest hands validated batches to
//! an [`EventSink`] and never depends on how state is kept.

use crate::event::Event;

/// What a sink did with a batch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SubmitOutcome {
    /// Events applied for the first time.
    pub accepted: usize,
    /// Events whose id was already applied for the same customer.
    pub duplicates: usize,
    /// Events the sink refused after validation, in batch order (neither
    /// applied nor counted as duplicates).
    pub refused: Vec<Refused>,
}

/// An event a sink refused, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    /// Its position in the submitted batch.
    pub index: usize,
    /// Why, in words that name the field at fault.
    pub reason: String,
}

/// Why a sink refused a batch (nothing of it was applied).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    /// Queues are full; retry later.
    #[error("overloaded, retry after {retry_after_ms} ms")]
    Overloaded {
        /// Suggested wait.
        retry_after_ms: u64,
    },
    /// The sink cannot accept events at all (e.g. fail-stopped after an I/O error).
    #[error("unavailable: {0}")]
    Unavailable(String),
}

/// Receives validated events.
pub trait EventSink: Send + Sync {
    /// Applies a batch; duplicates (same event id, same customer) are counted, not applied.
    fn submit(&self, events: Vec<Event>) -> Result<SubmitOutcome, SinkError>;
}
