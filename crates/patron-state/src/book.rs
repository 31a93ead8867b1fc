//! All customers' records, keyed by customer id, and the event-time watermark.
//!
//! This is the single-writer core that the batch path drives directly and the
//! streaming engine shards: records live in fixed-size chunks, the index maps
//! ids to slots, and applying an event touches exactly one record.
//!
//! Growth never moves existing data in bulk. A flat `Vec` of records doubles
//! by copying every record (hundreds of MB at a million customers) while the
//! shard's write lock is held, which stalled ingestion for 100 ms and more
//! (bench-results/loadgen/NOTES.md). Chunks of [`CHUNK`] records are allocated
//! once and never reallocated, and the index is split into [`INDEX_PARTS`]
//! maps so that one rehash moves a small fraction of the keys.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::ops::{Index, IndexMut};
use std::sync::Mutex;

use rayon::prelude::*;

use patron_model::{CustomerId, Event, EventSink, SinkError, SubmitOutcome, Timestamp};

use crate::catalog::ProductCatalog;
use crate::dedup::{Admission, DedupIndex, IdHasher};
use crate::items::ItemStats;
use crate::record::{Applied, CustomerRecord, DEFAULT_HISTORY, Tracking};

/// Records per chunk of [`Records`] (a power of two).
pub const CHUNK: usize = 4096;

/// Maps making up a book's id index.
pub const INDEX_PARTS: usize = 64;

/// Customer records in slot order, stored in chunks that are never reallocated.
#[derive(Debug, Default)]
pub struct Records {
    chunks: Vec<Vec<CustomerRecord>>,
    len: usize,
}

impl Records {
    /// Number of records.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The record in `slot`.
    pub fn get(&self, slot: usize) -> Option<&CustomerRecord> {
        self.chunks.get(slot / CHUNK).and_then(|chunk| chunk.get(slot % CHUNK))
    }

    /// The record in `slot`, mutably.
    pub fn get_mut(&mut self, slot: usize) -> Option<&mut CustomerRecord> {
        self.chunks.get_mut(slot / CHUNK).and_then(|chunk| chunk.get_mut(slot % CHUNK))
    }

    /// All records in slot order.
    pub fn iter(&self) -> std::iter::Flatten<std::slice::Iter<'_, Vec<CustomerRecord>>> {
        self.into_iter()
    }

    /// All records in slot order, in parallel (`collect` keeps the order).
    pub fn par_iter(&self) -> impl ParallelIterator<Item = &CustomerRecord> {
        self.chunks.par_iter().flat_map_iter(|chunk| chunk.iter())
    }

    /// Up to `max` records from `start`, contiguous and within one chunk
    /// (empty when `start` is past the end).
    pub fn run_from(&self, start: usize, max: usize) -> &[CustomerRecord] {
        match self.chunks.get(start / CHUNK) {
            Some(chunk) => {
                let from = (start % CHUNK).min(chunk.len());
                &chunk[from..chunk.len().min(from.saturating_add(max))]
            }
            None => &[],
        }
    }

    /// Appends a record; returns its slot.
    fn push(&mut self, record: CustomerRecord) -> usize {
        if self.len.is_multiple_of(CHUNK) {
            self.chunks.push(Vec::with_capacity(CHUNK));
        }
        if let Some(chunk) = self.chunks.last_mut() {
            chunk.push(record);
        }
        self.len += 1;
        self.len - 1
    }

    /// Removes the record in `slot`, moving the last record into it.
    fn swap_remove(&mut self, slot: usize) -> Option<CustomerRecord> {
        if slot >= self.len {
            return None;
        }
        let last = self.chunks.last_mut()?.pop()?;
        if self.chunks.last().is_some_and(Vec::is_empty) {
            self.chunks.pop();
        }
        self.len -= 1;
        if slot == self.len {
            return Some(last);
        }
        self.get_mut(slot).map(|target| std::mem::replace(target, last))
    }
}

impl Index<usize> for Records {
    type Output = CustomerRecord;

    fn index(&self, slot: usize) -> &CustomerRecord {
        &self.chunks[slot / CHUNK][slot % CHUNK]
    }
}

impl<'a> IntoIterator for &'a Records {
    type Item = &'a CustomerRecord;
    type IntoIter = std::iter::Flatten<std::slice::Iter<'a, Vec<CustomerRecord>>>;

    fn into_iter(self) -> Self::IntoIter {
        self.chunks.iter().flatten()
    }
}

impl IndexMut<usize> for Records {
    fn index_mut(&mut self, slot: usize) -> &mut CustomerRecord {
        &mut self.chunks[slot / CHUNK][slot % CHUNK]
    }
}

/// Customer id → slot, split into [`INDEX_PARTS`] maps by hash.
#[derive(Debug)]
struct SlotIndex {
    router: RandomState,
    parts: Vec<HashMap<CustomerId, usize>>,
}

impl Default for SlotIndex {
    fn default() -> Self {
        Self { router: RandomState::new(), parts: (0..INDEX_PARTS).map(|_| HashMap::new()).collect() }
    }
}

impl SlotIndex {
    fn part(&self, id: &CustomerId) -> usize {
        (self.router.hash_one(id) % INDEX_PARTS as u64) as usize
    }

    fn get(&self, id: &CustomerId) -> Option<usize> {
        self.parts[self.part(id)].get(id).copied()
    }

    fn insert(&mut self, id: CustomerId, slot: usize) {
        let part = self.part(&id);
        self.parts[part].insert(id, slot);
    }

    fn remove(&mut self, id: &CustomerId) -> Option<usize> {
        let part = self.part(id);
        self.parts[part].remove(id)
    }
}

/// Every known customer.
#[derive(Debug)]
pub struct CustomerBook {
    catalog: std::sync::Arc<ProductCatalog>,
    items: std::sync::Arc<ItemStats>,
    history_limit: usize,
    index: SlotIndex,
    records: Records,
    hasher: IdHasher,
    dedup: DedupIndex,
    watermark: Option<Timestamp>,
    accepted: u64,
    duplicates: u64,
    beyond_horizon: u64,
}

impl Default for CustomerBook {
    fn default() -> Self {
        Self::with_catalog(Default::default(), Default::default(), DEFAULT_HISTORY)
    }
}

impl CustomerBook {
    /// An empty book with its own catalogue and the default history limit.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty book interning products in `catalog` and updating `items`
    /// (both shared with other shards), keeping `history_limit` products per
    /// customer profile. It remembers every event id it applied (no horizon)
    /// until [`Self::with_dedup`] says otherwise.
    pub fn with_catalog(
        catalog: std::sync::Arc<ProductCatalog>,
        items: std::sync::Arc<ItemStats>,
        history_limit: usize,
    ) -> Self {
        Self {
            catalog,
            items,
            history_limit,
            index: SlotIndex::default(),
            records: Records::default(),
            hasher: IdHasher::random(),
            dedup: DedupIndex::new(None),
            watermark: None,
            accepted: 0,
            duplicates: 0,
            beyond_horizon: 0,
        }
    }

    /// Recognises duplicates with `hasher`'s fingerprints in `dedup` (the
    /// engine's shards share one hasher and each has its own index).
    pub fn with_dedup(mut self, hasher: IdHasher, dedup: DedupIndex) -> Self {
        (self.hasher, self.dedup) = (hasher, dedup);
        self
    }

    /// The remembered event fingerprints.
    pub fn dedup(&self) -> &DedupIndex {
        &self.dedup
    }

    /// Forgets event fingerprints beyond the horizon before this book's
    /// watermark (at a snapshot's cut only; see [`crate::dedup`]).
    pub fn forget_beyond_horizon(&mut self) -> usize {
        match self.watermark {
            Some(w) => self.dedup.forget_beyond_horizon(w.day()),
            None => 0,
        }
    }

    /// Switches to the catalogue and statistics shared with the other shards
    /// (a book restored on its own thread before they were known).
    pub fn share(&mut self, catalog: std::sync::Arc<ProductCatalog>, items: std::sync::Arc<ItemStats>) {
        (self.catalog, self.items) = (catalog, items);
    }

    /// The product catalogue.
    pub fn catalog(&self) -> &ProductCatalog {
        &self.catalog
    }

    /// The product statistics.
    pub fn items(&self) -> &ItemStats {
        &self.items
    }

    /// Applies one validated event unless its id was already applied for its
    /// customer (or is beyond the deduplication horizon); advances the
    /// watermark (largest event time seen).
    pub fn apply(&mut self, event: &Event) -> Applied {
        self.apply_at(event).1
    }

    /// [`Self::apply`], also returning the slot of the record it changed.
    pub fn apply_at(&mut self, event: &Event) -> (Option<usize>, Applied) {
        let fingerprint = self.hasher.event_fingerprint(&event.customer_id, &event.event_id);
        match self.dedup.admit(fingerprint, event.timestamp.day()) {
            Admission::New => {}
            Admission::Duplicate => {
                self.duplicates += 1;
                return (None, Applied::Duplicate);
            }
            Admission::BeyondHorizon { remembered_from_day } => {
                self.beyond_horizon += 1;
                return (None, Applied::BeyondHorizon { remembered_from_day });
            }
        }
        let slot = match self.index.get(&event.customer_id) {
            Some(slot) => slot,
            None => {
                let slot = self.records.push(CustomerRecord::new(event.customer_id.clone()));
                self.index.insert(event.customer_id.clone(), slot);
                slot
            }
        };
        let tracking = Tracking { catalog: &self.catalog, items: &self.items, history_limit: self.history_limit };
        self.records[slot].apply_tracking(event, Some(tracking));
        self.accepted += 1;
        self.watermark = Some(self.watermark.map_or(event.timestamp, |w| w.max(event.timestamp)));
        (Some(slot), Applied::Accepted)
    }

    /// Removes a customer entirely (erasure); returns whether they existed.
    /// The last record moves into the freed slot.
    pub fn remove(&mut self, customer_id: &CustomerId) -> bool {
        let Some(slot) = self.index.remove(customer_id) else { return false };
        self.records.swap_remove(slot);
        if let Some(moved) = self.records.get(slot) {
            let moved = moved.customer_id.clone();
            self.index.insert(moved, slot);
        }
        true
    }

    /// Adds a record restored from a snapshot (its id must be new to the book).
    pub fn insert_record(&mut self, record: CustomerRecord) {
        let id = record.customer_id.clone();
        let slot = self.records.push(record);
        self.index.insert(id, slot);
    }

    /// Mutable access to the record in `slot`.
    pub fn record_mut(&mut self, slot: usize) -> Option<&mut CustomerRecord> {
        self.records.get_mut(slot)
    }

    /// All records, in first-seen order (erasure moves the last into the gap).
    pub fn records(&self) -> &Records {
        &self.records
    }

    /// One customer's record.
    pub fn get(&self, customer_id: &CustomerId) -> Option<&CustomerRecord> {
        self.index.get(customer_id).and_then(|slot| self.records.get(slot))
    }

    /// Number of customers.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether the book is empty.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The largest event time applied so far ("now" under the event clock).
    pub fn watermark(&self) -> Option<Timestamp> {
        self.watermark
    }

    /// Events applied and duplicates ignored.
    pub fn counts(&self) -> (u64, u64) {
        (self.accepted, self.duplicates)
    }

    /// Events refused as older than the deduplication horizon.
    pub fn beyond_horizon(&self) -> u64 {
        self.beyond_horizon
    }

    /// Restores the watermark saved with a snapshot (the records alone do not
    /// hold it: refunds and consents advance it too).
    pub fn restore_watermark(&mut self, watermark: Option<Timestamp>) {
        self.watermark = watermark;
    }
}

/// A [`CustomerBook`] behind a lock, usable as an [`EventSink`].
#[derive(Debug, Default)]
pub struct SharedBook(Mutex<CustomerBook>);

impl SharedBook {
    /// Wraps a book.
    pub fn new(book: CustomerBook) -> Self {
        Self(Mutex::new(book))
    }

    /// Takes the book back.
    pub fn into_inner(self) -> CustomerBook {
        self.0.into_inner().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl EventSink for SharedBook {
    fn submit(&self, events: Vec<Event>) -> Result<SubmitOutcome, SinkError> {
        let mut book = self.0.lock().map_err(|_| SinkError::Unavailable("state lock poisoned".into()))?;
        let mut outcome = SubmitOutcome::default();
        for event in &events {
            match book.apply(event) {
                Applied::Accepted => outcome.accepted += 1,
                Applied::Duplicate => outcome.duplicates += 1,
                Applied::BeyondHorizon { .. } => {
                    unreachable!("a book without a horizon never refuses an old event")
                }
            }
        }
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(i: usize) -> CustomerId {
        CustomerId::new(&format!("c{i}")).expect("valid id")
    }

    fn records(n: usize) -> Records {
        let mut records = Records::default();
        for i in 0..n {
            assert_eq!(records.push(CustomerRecord::new(id(i))), i);
        }
        records
    }

    #[test]
    fn records_span_chunks_in_slot_order() {
        let records = records(2 * CHUNK + 5);
        assert_eq!(records.len(), 2 * CHUNK + 5);
        assert_eq!(records.chunks.len(), 3);
        assert!(records.chunks.iter().all(|chunk| chunk.capacity() == CHUNK));
        let ids: Vec<String> = records.iter().map(|r| r.customer_id.as_str().to_owned()).collect();
        let expected: Vec<String> = (0..records.len()).map(|i| format!("c{i}")).collect();
        assert_eq!(ids, expected);
        let parallel: Vec<String> = records.par_iter().map(|r| r.customer_id.as_str().to_owned()).collect();
        assert_eq!(parallel, expected);
        assert_eq!(records[CHUNK].customer_id, id(CHUNK));
        assert!(records.get(records.len()).is_none());
    }

    #[test]
    fn run_from_stays_within_one_chunk() {
        let records = records(CHUNK + 10);
        assert_eq!(records.run_from(0, 100).len(), 100);
        assert_eq!(records.run_from(CHUNK - 3, 100).len(), 3);
        let tail = records.run_from(CHUNK, 100);
        assert_eq!((tail.len(), &tail[0].customer_id), (10, &id(CHUNK)));
        assert!(records.run_from(CHUNK + 10, 100).is_empty());
        assert!(records.run_from(10 * CHUNK, 100).is_empty());
    }

    #[test]
    fn swap_remove_moves_the_last_record_across_chunks() {
        let mut records = records(CHUNK + 1);
        let removed = records.swap_remove(3).expect("slot 3 exists");
        assert_eq!(removed.customer_id, id(3));
        assert_eq!(records[3].customer_id, id(CHUNK));
        assert_eq!((records.len(), records.chunks.len()), (CHUNK, 1));
        let last = records.swap_remove(CHUNK - 1).expect("last slot exists");
        assert_eq!(last.customer_id, id(CHUNK - 1));
        assert!(records.swap_remove(CHUNK).is_none());
    }

    #[test]
    fn book_finds_every_customer_after_removals() {
        let mut book = CustomerBook::new();
        for i in 0..CHUNK + 100 {
            book.insert_record(CustomerRecord::new(id(i)));
        }
        for i in (0..CHUNK + 100).step_by(7) {
            assert!(book.remove(&id(i)));
            assert!(!book.remove(&id(i)));
        }
        for i in 0..CHUNK + 100 {
            let found = book.get(&id(i)).map(|r| r.customer_id.clone());
            assert_eq!(found, (i % 7 != 0).then(|| id(i)), "customer {i}");
        }
        assert_eq!(book.len(), CHUNK + 100 - (CHUNK + 100).div_ceil(7));
    }
}
