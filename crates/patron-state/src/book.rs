//! All customers' records, keyed by customer id, and the event-time watermark.
//!
//! This is the single-writer core that the batch path drives directly and the
//! streaming engine will shard: records live in one `Vec`, the index maps ids
//! to slots, and applying an event touches exactly one record.

use std::collections::HashMap;
use std::sync::Mutex;

use patron_model::{CustomerId, Event, EventSink, SinkError, SubmitOutcome, Timestamp};

use crate::catalog::ProductCatalog;
use crate::items::ItemStats;
use crate::record::{Applied, CustomerRecord, DEFAULT_HISTORY, Tracking};

/// Every known customer.
#[derive(Debug)]
pub struct CustomerBook {
    catalog: std::sync::Arc<ProductCatalog>,
    items: std::sync::Arc<ItemStats>,
    history_limit: usize,
    index: HashMap<CustomerId, usize>,
    records: Vec<CustomerRecord>,
    watermark: Option<Timestamp>,
    accepted: u64,
    duplicates: u64,
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
    /// customer profile.
    pub fn with_catalog(
        catalog: std::sync::Arc<ProductCatalog>,
        items: std::sync::Arc<ItemStats>,
        history_limit: usize,
    ) -> Self {
        Self {
            catalog,
            items,
            history_limit,
            index: HashMap::new(),
            records: Vec::new(),
            watermark: None,
            accepted: 0,
            duplicates: 0,
        }
    }

    /// The product catalogue.
    pub fn catalog(&self) -> &ProductCatalog {
        &self.catalog
    }

    /// The product statistics.
    pub fn items(&self) -> &ItemStats {
        &self.items
    }

    /// Applies one validated event; advances the watermark (largest event time seen).
    pub fn apply(&mut self, event: &Event) -> Applied {
        self.apply_at(event).1
    }

    /// [`Self::apply`], also returning the record's slot.
    pub fn apply_at(&mut self, event: &Event) -> (usize, Applied) {
        let slot = match self.index.get(&event.customer_id) {
            Some(&slot) => slot,
            None => {
                self.records.push(CustomerRecord::new(event.customer_id.clone()));
                self.index.insert(event.customer_id.clone(), self.records.len() - 1);
                self.records.len() - 1
            }
        };
        let tracking = Tracking { catalog: &self.catalog, items: &self.items, history_limit: self.history_limit };
        let applied = self.records[slot].apply_tracking(event, Some(tracking));
        match applied {
            Applied::Accepted => {
                self.accepted += 1;
                self.watermark = Some(self.watermark.map_or(event.timestamp, |w| w.max(event.timestamp)));
            }
            Applied::Duplicate => self.duplicates += 1,
        }
        (slot, applied)
    }

    /// Removes a customer entirely (erasure); returns whether they existed.
    /// The last record moves into the freed slot.
    pub fn remove(&mut self, customer_id: &CustomerId) -> bool {
        let Some(slot) = self.index.remove(customer_id) else { return false };
        self.records.swap_remove(slot);
        if let Some(moved) = self.records.get(slot) {
            self.index.insert(moved.customer_id.clone(), slot);
        }
        true
    }

    /// Adds a record restored from a snapshot (its id must be new to the book).
    pub fn insert_record(&mut self, record: CustomerRecord) {
        self.index.insert(record.customer_id.clone(), self.records.len());
        self.records.push(record);
    }

    /// Mutable access to the record in `slot`.
    pub fn record_mut(&mut self, slot: usize) -> Option<&mut CustomerRecord> {
        self.records.get_mut(slot)
    }

    /// All records, in first-seen order.
    pub fn records(&self) -> &[CustomerRecord] {
        &self.records
    }

    /// One customer's record.
    pub fn get(&self, customer_id: &CustomerId) -> Option<&CustomerRecord> {
        self.index.get(customer_id).map(|&slot| &self.records[slot])
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
            }
        }
        Ok(outcome)
    }
}
