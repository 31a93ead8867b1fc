//! All customers of a shard, keyed by customer id, and the event-time watermark.
//!
//! This is the single-writer core that the batch path drives directly and the
//! streaming engine shards: customers live in columnar chunks
//! ([`crate::chunk`]) that SQL scans share copy-on-write, what only the writer
//! reads (occasion days, purchase profiles) lives beside them, and one index
//! maps ids to slots. Applying an event touches exactly one row.
//!
//! Growth never moves existing data in bulk: chunks of [`CHUNK`] rows are
//! allocated once (a flat `Vec` that doubles by copying every customer while
//! the write lock is held stalled ingestion for 100 ms and more,
//! bench-results/loadgen/NOTES.md), and the index is split into
//! `dedup::PARTS` tables so that one rehash moves a small fraction of it.
//!
//! The index stores only slots (4 bytes per customer plus a control byte per
//! bucket): each id is stored once, in its chunk, and a probe compares the id
//! there. Its hash is the book's keyed SipHash, so a client choosing ids
//! cannot aim them at one bucket chain.

use std::sync::{Arc, Mutex};

use hashbrown::HashTable;
use rayon::prelude::*;

use patron_model::{CustomerId, Event, EventKind, EventSink, Refund, Response, SinkError, SubmitOutcome, Timestamp};
use patron_score::{Scores, Segments};

use crate::campaigns::ShardCampaigns;
use crate::catalog::ProductCatalog;
pub use crate::chunk::CHUNK;
use crate::chunk::Chunk;
use crate::dedup::{Admission, DedupIndex, IdHasher};
use crate::items::{ItemStats, Observed};
use crate::orders::{Amount, RefundRefusal};
use crate::record::{Applied, CustomerRecord, DEFAULT_HISTORY, History, Summary, Tracking};

/// What a refund takes once checked against the state.
#[derive(Clone, Copy, Debug)]
struct Settled {
    /// The amount, minor units (what remains of the order when the refund
    /// states none).
    amount_minor: i64,
    /// The remembered order it nets against (fingerprint, day); `None`:
    /// revenue only (no order named, or one old enough to be forgotten).
    order: Option<(u64, i32)>,
}

/// One customer as stored: a row of a chunk and its history.
#[derive(Clone, Copy, Debug)]
pub struct Row<'a> {
    chunk: &'a Chunk,
    row: usize,
    history: &'a History,
}

impl<'a> Row<'a> {
    /// The customer id.
    pub fn customer_id(&self) -> &'a str {
        self.chunk.id(self.row)
    }

    /// The running summary.
    pub fn summary(&self) -> &'a Summary {
        &self.chunk.summaries()[self.row]
    }

    /// Occasion days and purchase profile.
    pub fn history(&self) -> &'a History {
        self.history
    }

    /// Latest scores.
    pub fn scores(&self) -> Option<Scores> {
        self.chunk.scores(self.row)
    }

    /// Latest labels.
    pub fn segments(&self) -> Option<Segments> {
        self.chunk.segments(self.row)
    }

    /// The customer as an owned record (`None` only if the stored id no
    /// longer validates, which storing validated ids rules out).
    pub fn to_record(&self) -> Option<CustomerRecord> {
        Some(CustomerRecord {
            customer_id: CustomerId::new(self.customer_id()).ok()?,
            summary: *self.summary(),
            history: self.history.clone(),
            scores: self.scores(),
            segments: self.segments(),
        })
    }
}

impl std::ops::Deref for Row<'_> {
    type Target = Summary;

    fn deref(&self) -> &Summary {
        self.summary()
    }
}

/// Customers in slot order: columnar chunks shared copy-on-write, and the
/// writer's histories beside them.
#[derive(Debug, Default)]
pub struct Records {
    chunks: Vec<Arc<Chunk>>,
    /// Also copy-on-write: a snapshot streams them while the writer goes on.
    histories: Vec<Arc<Vec<History>>>,
    len: usize,
}

impl Records {
    /// Number of customers.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The customer in `slot`.
    pub fn row(&self, slot: usize) -> Option<Row<'_>> {
        let (c, r) = (slot / CHUNK, slot % CHUNK);
        let chunk = self.chunks.get(c)?;
        (r < chunk.len()).then(|| Row { chunk, row: r, history: &self.histories[c][r] })
    }

    /// The customer in `slot`, owned.
    pub fn get(&self, slot: usize) -> Option<CustomerRecord> {
        self.row(slot).and_then(|r| r.to_record())
    }

    /// The id in `slot`.
    pub fn id(&self, slot: usize) -> Option<&str> {
        self.chunks.get(slot / CHUNK).filter(|c| slot % CHUNK < c.len()).map(|c| c.id(slot % CHUNK))
    }

    /// The id bytes in `slot`.
    fn id_bytes(&self, slot: usize) -> Option<&[u8]> {
        self.chunks.get(slot / CHUNK).filter(|c| slot % CHUNK < c.len()).map(|c| c.id_bytes(slot % CHUNK))
    }

    /// All customers in slot order.
    pub fn iter(&self) -> impl Iterator<Item = Row<'_>> {
        self.chunks.iter().zip(&self.histories).flat_map(|(chunk, histories)| {
            histories.iter().enumerate().map(move |(row, history)| Row { chunk, row, history })
        })
    }

    /// All customers in slot order, in parallel (`collect` keeps the order).
    pub fn par_iter(&self) -> impl IndexedParallelIterator<Item = Row<'_>> {
        (0..self.len).into_par_iter().map(move |slot| {
            let (c, r) = (slot / CHUNK, slot % CHUNK);
            Row { chunk: &self.chunks[c], row: r, history: &self.histories[c][r] }
        })
    }

    /// The chunks, for a scan to share: cloning them is the whole cost of a
    /// consistent view.
    pub fn chunks(&self) -> &[Arc<Chunk>] {
        &self.chunks
    }

    /// Everything a snapshot writes, shared copy-on-write: the chunks and the
    /// histories beside them.
    pub fn section(&self) -> crate::snapshot::Section {
        crate::snapshot::Section { chunks: self.chunks.clone(), histories: self.histories.clone() }
    }

    /// Up to `max` slots from `start`, within one chunk (an empty range past the end).
    pub fn run_from(&self, start: usize, max: usize) -> std::ops::Range<usize> {
        let end = self.len.min((start / CHUNK + 1) * CHUNK).min(start.saturating_add(max));
        start..end.max(start)
    }

    /// Bytes of the chunks (ids, summaries, scores, labels) and of the
    /// histories (occasion days and purchase profiles), allocations included.
    pub fn memory_bytes(&self) -> (usize, usize) {
        let columns = self.chunks.iter().map(|c| c.memory_bytes()).sum();
        let history = self
            .histories
            .iter()
            .map(|h| h.capacity() * std::mem::size_of::<History>() + h.iter().map(History::heap_bytes).sum::<usize>())
            .sum();
        (columns, history)
    }

    /// Appends the customers of `records` (emptied) in order, filling each
    /// chunk in one go; returns the first one's slot.
    fn push_all(&mut self, records: &mut Vec<CustomerRecord>) -> usize {
        let first = self.len;
        let mut pending = records.drain(..).peekable();
        while pending.peek().is_some() {
            self.open_chunk_when_full();
            let (Some(chunk), Some(histories)) = (self.chunks.last_mut(), self.histories.last_mut()) else { break };
            let (mut rows, histories) = (Arc::make_mut(chunk).rows_mut(), Arc::make_mut(histories));
            while rows.len() < CHUNK {
                let Some(record) = pending.next() else { break };
                rows.push(record.customer_id.as_str(), record.summary, record.scores, record.segments);
                histories.push(record.history);
                self.len += 1;
            }
        }
        first
    }

    /// Starts a new chunk when the last one is full (or there is none).
    fn open_chunk_when_full(&mut self) {
        if self.len.is_multiple_of(CHUNK) {
            self.chunks.push(Arc::new(Chunk::with_capacity(CHUNK)));
            self.histories.push(Arc::new(Vec::with_capacity(CHUNK)));
        }
    }

    /// Appends a customer; returns its slot.
    fn push(&mut self, record: CustomerRecord) -> usize {
        self.open_chunk_when_full();
        if let (Some(chunk), Some(histories)) = (self.chunks.last_mut(), self.histories.last_mut()) {
            Arc::make_mut(chunk).push(record.customer_id.as_str(), record.summary, record.scores, record.segments);
            Arc::make_mut(histories).push(record.history);
        }
        self.len += 1;
        self.len - 1
    }

    /// The summary and history in `slot`, to change (the chunk is copied
    /// first if a scan still holds it).
    pub fn row_mut(&mut self, slot: usize) -> Option<(&mut Summary, &mut History)> {
        let (c, r) = (slot / CHUNK, slot % CHUNK);
        let history = Arc::make_mut(self.histories.get_mut(c)?).get_mut(r)?;
        Some((Arc::make_mut(&mut self.chunks[c]).summary_mut(r), history))
    }

    /// Sets the scores in `slot`.
    pub fn set_scores(&mut self, slot: usize, scores: Option<Scores>) {
        if slot < self.len {
            Arc::make_mut(&mut self.chunks[slot / CHUNK]).set_scores(slot % CHUNK, scores);
        }
    }

    /// Sets scores of customers in chunk `chunk`, given as (row in the chunk,
    /// scores): the chunk's score columns are made unique once for all of them.
    pub fn set_chunk_scores(&mut self, chunk: usize, scores: &[(usize, Option<Scores>)]) {
        let Some(chunk) = self.chunks.get_mut(chunk) else { return };
        let rows = chunk.len();
        let mut columns = Arc::make_mut(chunk).scores_mut();
        for &(row, row_scores) in scores.iter().filter(|(row, _)| *row < rows) {
            columns.set(row, row_scores);
        }
    }

    /// Sets the labels in `slot`.
    pub fn set_segments(&mut self, slot: usize, segments: Option<Segments>) {
        if slot < self.len {
            Arc::make_mut(&mut self.chunks[slot / CHUNK]).set_segments(slot % CHUNK, segments);
        }
    }

    /// Removes the customer in `slot`, moving the last one into it.
    fn swap_remove(&mut self, slot: usize) -> bool {
        if slot >= self.len {
            return false;
        }
        let last = self.len - 1;
        let (lc, lr) = (last / CHUNK, last % CHUNK);
        if slot != last {
            let (c, r) = (slot / CHUNK, slot % CHUNK);
            let source = self.chunks[lc].clone();
            Arc::make_mut(&mut self.chunks[c]).overwrite(r, &source, lr);
            let moved = std::mem::take(&mut Arc::make_mut(&mut self.histories[lc])[lr]);
            Arc::make_mut(&mut self.histories[c])[r] = moved;
        }
        Arc::make_mut(&mut self.chunks[lc]).pop();
        Arc::make_mut(&mut self.histories[lc]).pop();
        if self.chunks[lc].is_empty() {
            self.chunks.pop();
            self.histories.pop();
        }
        self.len -= 1;
        true
    }
}

/// Customer id → slot, split into `dedup::PARTS` tables by hash. Stores
/// slots only; the ids are the chunks'.
#[derive(Debug)]
struct SlotIndex {
    parts: Vec<HashTable<u32>>,
}

impl Default for SlotIndex {
    fn default() -> Self {
        Self { parts: (0..crate::dedup::PARTS).map(|_| HashTable::new()).collect() }
    }
}

impl SlotIndex {
    fn part(hash: u64) -> usize {
        // The same split as the dedup index (see `dedup::part_of` for the bits).
        crate::dedup::part_of(hash)
    }

    fn get(&self, hash: u64, id: &str, records: &Records) -> Option<usize> {
        let id = Some(id.as_bytes());
        self.parts[Self::part(hash)].find(hash, |&slot| records.id_bytes(slot as usize) == id).map(|&s| s as usize)
    }

    fn insert(&mut self, hash: u64, slot: usize, records: &Records, hasher: &IdHasher) {
        // Growth rehashes one part: the ids are hashed again from the chunks.
        let rehash = |&s: &u32| records.id_bytes(s as usize).map_or(0, |id| hasher.customer_hash_bytes(id));
        self.parts[Self::part(hash)].insert_unique(hash, slot as u32, rehash);
    }

    fn remove(&mut self, hash: u64, id: &str, records: &Records) -> Option<usize> {
        let part = &mut self.parts[Self::part(hash)];
        let id = Some(id.as_bytes());
        let entry = part.find_entry(hash, |&slot| records.id_bytes(slot as usize) == id).ok()?;
        let (slot, _) = entry.remove();
        Some(slot as usize)
    }

    /// Points the entry of the customer in `from` at `to` (after a move).
    fn relocate(&mut self, hash: u64, from: usize, to: usize) {
        if let Some(slot) = self.parts[Self::part(hash)].find_mut(hash, |&s| s as usize == from) {
            *slot = to as u32;
        }
    }

    fn memory_bytes(&self) -> usize {
        self.parts.iter().map(|p| p.capacity() * (std::mem::size_of::<u32>() + 1)).sum()
    }

    /// Room for `additional` more customers spread evenly over the parts (a
    /// restore knows how many it brings, and growing would hash every id again).
    fn reserve(&mut self, additional: usize, records: &Records, hasher: &IdHasher) {
        let rehash = |&s: &u32| records.id_bytes(s as usize).map_or(0, |id| hasher.customer_hash_bytes(id));
        // Hashes spread binomially: 1/8 more than the mean covers every part but by chance.
        let per_part = additional.div_ceil(self.parts.len()) * 9 / 8;
        self.parts.iter_mut().for_each(|part| part.reserve(per_part, rehash));
    }
}

/// Every known customer.
#[derive(Debug)]
pub struct CustomerBook {
    catalog: Arc<ProductCatalog>,
    items: Arc<ItemStats>,
    /// Purchases recorded by [`Self::apply_deferring`], not yet in `items`.
    observed: Observed,
    history_limit: usize,
    index: SlotIndex,
    records: Records,
    hasher: IdHasher,
    dedup: DedupIndex,
    watermark: Option<Timestamp>,
    accepted: u64,
    duplicates: u64,
    beyond_horizon: u64,
    campaigns: ShardCampaigns,
    /// Digits of the base currency's minor unit, to state amounts in refusals.
    money_exponent: u32,
    /// Customers who stated consent on a channel beyond email, sms and push,
    /// so that listing those consents visits them alone.
    with_other_consent: hashbrown::HashSet<CustomerId>,
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
    pub fn with_catalog(catalog: Arc<ProductCatalog>, items: Arc<ItemStats>, history_limit: usize) -> Self {
        Self {
            catalog,
            items,
            observed: Observed::default(),
            history_limit,
            index: SlotIndex::default(),
            records: Records::default(),
            hasher: IdHasher::random(),
            dedup: DedupIndex::new(None),
            watermark: None,
            accepted: 0,
            duplicates: 0,
            beyond_horizon: 0,
            campaigns: ShardCampaigns::default(),
            money_exponent: 2,
            with_other_consent: hashbrown::HashSet::new(),
        }
    }

    /// Hashes ids with `hasher` and recognises duplicates with its
    /// fingerprints in `dedup` (the engine's shards share one hasher, and each
    /// has its own index).
    pub fn with_dedup(mut self, hasher: IdHasher, dedup: DedupIndex) -> Self {
        if hasher != self.hasher {
            self.hasher = hasher;
            self.index = SlotIndex::default();
            for slot in 0..self.records.len() {
                if let Some(id) = self.records.id(slot) {
                    let hash = self.hasher.customer_hash(id);
                    self.index.insert(hash, slot, &self.records, &self.hasher);
                }
            }
        }
        self.dedup = dedup;
        self
    }

    /// This book, stating amounts in refusals with `exponent` digits after
    /// the point (the base currency's; 2 unless said).
    pub fn with_money_exponent(mut self, exponent: u32) -> Self {
        self.money_exponent = exponent;
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
    pub fn share(&mut self, catalog: Arc<ProductCatalog>, items: Arc<ItemStats>) {
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
        let hash = self.hasher.customer_hash(event.customer_id.as_str());
        self.apply_hashed(event, hash)
    }

    /// [`Self::apply_at`] with the customer's [`IdHasher::customer_hash`]
    /// already computed (by whoever routed the event here): the one hash of
    /// the id serves the index probe and the fingerprint.
    pub fn apply_hashed(&mut self, event: &Event, hash: u64) -> (Option<usize>, Applied) {
        let applied = self.apply_deferring(event, hash);
        self.items.apply(&mut self.observed);
        applied
    }

    /// [`Self::apply_hashed`], except that a purchase reaches the product
    /// statistics only when the batch [`Self::take_observed`] hands out is
    /// applied ([`ItemStats::apply`]); the customer's own record, profile
    /// included, is updated now.
    pub fn apply_deferring(&mut self, event: &Event, hash: u64) -> (Option<usize>, Applied) {
        debug_assert_eq!(hash, self.hasher.customer_hash(event.customer_id.as_str()));
        // A response the campaign refuses must not use up its event id.
        let unsubscribes_from = match &event.kind {
            EventKind::CampaignResponse(r) => match self.campaigns.admit_response(&event.customer_id, &r.campaign_id) {
                Ok(channel) => (r.response == Response::Unsubscribed).then_some(channel),
                Err(refusal) => return (None, Applied::Refused(refusal.into())),
            },
            _ => None,
        };
        let fingerprint = self.hasher.event_fingerprint(hash, &event.event_id);
        // A refund is checked against what it refunds, unless it is a
        // duplicate (which is reported as such below, not refused).
        let settled = match &event.kind {
            EventKind::Refund(r) if self.dedup.peek(fingerprint, event.timestamp.day()) == Admission::New => {
                match self.settle_refund(event, r, hash) {
                    Ok(settled) => Some(settled),
                    Err(refusal) => return (None, Applied::Refused(refusal.into())),
                }
            }
            _ => None,
        };
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
        let slot = match self.index.get(hash, event.customer_id.as_str(), &self.records) {
            Some(slot) => slot,
            None => {
                let slot = self.records.push(CustomerRecord::new(event.customer_id.clone()));
                self.index.insert(hash, slot, &self.records, &self.hasher);
                slot
            }
        };
        let tracking = Tracking {
            catalog: &self.catalog,
            items: &self.items,
            history_limit: self.history_limit,
            observed: &mut self.observed,
        };
        if let Some((summary, history)) = self.records.row_mut(slot) {
            match (&event.kind, settled) {
                (EventKind::Refund(_), Some(Settled { amount_minor, order: Some((order, day)) })) => {
                    summary.refund_order(history, day, amount_minor);
                    self.dedup.orders_mut().refund(order, amount_minor);
                }
                (EventKind::Refund(_), Some(Settled { amount_minor, order: None })) => {
                    summary.refund_revenue(amount_minor);
                }
                (EventKind::Purchase(p), _) => {
                    let order = p.order_id.as_deref().unwrap_or(event.event_id.as_str());
                    let day = event.timestamp.day();
                    self.dedup.orders_mut().open(self.hasher.order_fingerprint(hash, order), day, p.revenue_minor);
                    summary.apply(history, event, Some(tracking));
                }
                _ => summary.apply(history, event, Some(tracking)),
            }
            if let Some(channel) = unsubscribes_from {
                summary.apply_consent(&crate::campaigns::unsubscribe(channel), event.timestamp);
            }
        }
        if let EventKind::Consent(c) = &event.kind
            && !c.other.is_empty()
            && !self.with_other_consent.contains(&event.customer_id)
        {
            self.with_other_consent.insert(event.customer_id.clone());
        }
        if !self.campaigns.is_empty() {
            self.attribute(event, settled.map_or(0, |s| s.amount_minor));
        }
        self.accepted += 1;
        self.watermark = Some(self.watermark.map_or(event.timestamp, |w| w.max(event.timestamp)));
        (Some(slot), Applied::Accepted)
    }

    /// What a new refund takes and what it nets against (see [`Settled`]);
    /// refused beyond what remains.
    fn settle_refund(&self, event: &Event, refund: &Refund, hash: u64) -> Result<Settled, RefundRefusal> {
        let amount = |minor| Amount { minor, exponent: self.money_exponent };
        let customer = &event.customer_id;
        let summary = self
            .index
            .get(hash, customer.as_str(), &self.records)
            .and_then(|slot| self.records.row(slot))
            .map(|row| row.summary())
            .filter(|s| s.has_purchased())
            .ok_or_else(|| RefundRefusal::NoPurchases(customer.clone()))?;
        let ledger = self.dedup.orders();
        let mut settled = Settled { amount_minor: refund.amount_minor.unwrap_or(0), order: None };
        if let Some(order) = &refund.order_id {
            let fingerprint = self.hasher.order_fingerprint(hash, order);
            match ledger.balance(fingerprint) {
                Some(balance) => {
                    let wanted = refund.amount_minor.unwrap_or(balance.remaining_minor);
                    if wanted > balance.remaining_minor {
                        return Err(RefundRefusal::ExceedsOrder {
                            order: order.clone(),
                            amount: amount(wanted),
                            remaining: amount(balance.remaining_minor),
                        });
                    }
                    if wanted <= 0 {
                        return Err(RefundRefusal::NothingLeft(order.clone()));
                    }
                    settled = Settled { amount_minor: wanted, order: Some((fingerprint, balance.day)) };
                }
                // Every order of this customer would still be remembered.
                None if summary.first_day().is_some_and(|day| ledger.remembers_day(day)) => {
                    return Err(RefundRefusal::UnknownOrder { customer: customer.clone(), order: order.clone() });
                }
                // Forgotten: a stated amount lowers revenue only; "what
                // remains" cannot be known any more.
                None if refund.amount_minor.is_none() => return Err(RefundRefusal::OrderForgotten(order.clone())),
                None => {}
            }
        }
        // Refunds in all never exceed what was paid, whatever they name.
        if settled.amount_minor > summary.revenue_minor {
            return Err(RefundRefusal::ExceedsRevenue {
                amount: amount(settled.amount_minor),
                revenue: amount(summary.revenue_minor.max(0)),
            });
        }
        Ok(settled)
    }

    /// What an applied event means to the customer's campaigns
    /// (`refunded_minor`: what a refund took, settled against its order).
    fn attribute(&mut self, event: &Event, refunded_minor: i64) {
        let (customer, at) = (&event.customer_id, event.timestamp);
        match &event.kind {
            EventKind::Purchase(p) => self.campaigns.attribute(customer, at, 1, p.revenue_minor),
            EventKind::Refund(_) => self.campaigns.attribute(customer, at, 0, -refunded_minor),
            EventKind::CampaignResponse(r) => self.campaigns.respond(customer, &r.campaign_id, r.response, at),
            EventKind::Consent(_) | EventKind::Customer(_) => {}
        }
    }

    /// Each customer's consent on channels beyond email, sms and push (only
    /// customers who stated any are visited).
    pub fn other_consents(&self) -> impl Iterator<Item = (&CustomerId, &[crate::record::OtherConsent])> {
        self.with_other_consent.iter().filter_map(|id| {
            let hash = self.hasher.customer_hash(id.as_str());
            let slot = self.index.get(hash, id.as_str(), &self.records)?;
            Some((id, self.records.row(slot)?.history().other_consent()))
        })
    }

    /// This shard's campaign memberships.
    pub fn campaigns(&self) -> &ShardCampaigns {
        &self.campaigns
    }

    /// This shard's campaign memberships, to create, close or restore campaigns.
    pub fn campaigns_mut(&mut self) -> &mut ShardCampaigns {
        &mut self.campaigns
    }

    /// The purchases recorded by [`Self::apply_deferring`] since the last
    /// call, for [`ItemStats::apply`]; `empty` (a batch already applied, so
    /// its buffers are reused) takes their place.
    pub fn take_observed(&mut self, empty: Observed) -> Observed {
        debug_assert!(empty.is_empty());
        std::mem::replace(&mut self.observed, empty)
    }

    /// Removes a customer entirely (erasure); returns whether they existed.
    /// The last record moves into the freed slot.
    pub fn remove(&mut self, customer_id: &CustomerId) -> bool {
        let hash = self.hasher.customer_hash(customer_id.as_str());
        self.campaigns.remove(customer_id);
        self.with_other_consent.remove(customer_id);
        let Some(slot) = self.index.remove(hash, customer_id.as_str(), &self.records) else { return false };
        let last = self.records.len() - 1;
        self.records.swap_remove(slot);
        if slot != last
            && let Some(moved) = self.records.id(slot)
        {
            let moved_hash = self.hasher.customer_hash(moved);
            self.index.relocate(moved_hash, last, slot);
        }
        true
    }

    /// Room for `additional` more customers in the id index.
    pub fn reserve(&mut self, additional: usize) {
        self.index.reserve(additional, &self.records, &self.hasher);
    }

    /// Adds restored customers (emptying `records`), which must be new to this
    /// book; a batch fills whole chunks at once.
    pub fn insert_records(&mut self, records: &mut Vec<CustomerRecord>) {
        for record in records.iter_mut() {
            record.history.purchases.settle_inherited(self.history_limit);
            if !record.history.other_consent().is_empty() {
                self.with_other_consent.insert(record.customer_id.clone());
            }
        }
        let hashes: Vec<u64> = records.iter().map(|r| self.hasher.customer_hash(r.customer_id.as_str())).collect();
        let first = self.records.push_all(records);
        for (slot, hash) in (first..).zip(hashes) {
            self.index.insert(hash, slot, &self.records, &self.hasher);
        }
    }

    /// Adds a record restored from a snapshot (its id must be new to the book).
    pub fn insert_record(&mut self, mut record: CustomerRecord) {
        record.history.purchases.settle_inherited(self.history_limit);
        if !record.history.other_consent().is_empty() {
            self.with_other_consent.insert(record.customer_id.clone());
        }
        let hash = self.hasher.customer_hash(record.customer_id.as_str());
        let slot = self.records.push(record);
        self.index.insert(hash, slot, &self.records, &self.hasher);
    }

    /// Sets the scores of the customer in `slot`.
    pub fn set_scores(&mut self, slot: usize, scores: Option<Scores>) {
        self.records.set_scores(slot, scores);
    }

    /// Sets the scores of customers in chunk `chunk` (see [`Records::set_chunk_scores`]).
    pub fn set_chunk_scores(&mut self, chunk: usize, scores: &[(usize, Option<Scores>)]) {
        self.records.set_chunk_scores(chunk, scores);
    }

    /// Sets the labels of the customer in `slot`.
    pub fn set_segments(&mut self, slot: usize, segments: Option<Segments>) {
        self.records.set_segments(slot, segments);
    }

    /// All records, in first-seen order (erasure moves the last into the gap).
    pub fn records(&self) -> &Records {
        &self.records
    }

    /// One customer as stored.
    pub fn row(&self, customer_id: &CustomerId) -> Option<Row<'_>> {
        self.slot_of(customer_id).and_then(|slot| self.records.row(slot))
    }

    /// One customer, owned.
    pub fn get(&self, customer_id: &CustomerId) -> Option<CustomerRecord> {
        self.row(customer_id).and_then(|r| r.to_record())
    }

    /// The slot of a customer.
    pub fn slot_of(&self, customer_id: &CustomerId) -> Option<usize> {
        let hash = self.hasher.customer_hash(customer_id.as_str());
        self.index.get(hash, customer_id.as_str(), &self.records)
    }

    /// Bytes of the state: chunks plus index (what the `customers` table is
    /// derived from), and histories (occasion days and purchase profiles).
    pub fn memory_bytes(&self) -> (usize, usize) {
        let (columns, history) = self.records.memory_bytes();
        (columns + self.index.memory_bytes(), history)
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
        for (index, event) in events.iter().enumerate() {
            match book.apply(event) {
                Applied::Accepted => outcome.accepted += 1,
                Applied::Duplicate => outcome.duplicates += 1,
                Applied::BeyondHorizon { remembered_from_day } => outcome
                    .refused
                    .push(patron_model::Refused { index, reason: crate::beyond_horizon_reason(remembered_from_day) }),
                Applied::Refused(refusal) => {
                    outcome.refused.push(patron_model::Refused { index, reason: refusal.to_string() });
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

    fn book(n: usize) -> CustomerBook {
        let mut book = CustomerBook::new();
        for i in 0..n {
            book.insert_record(CustomerRecord::new(id(i)));
        }
        book
    }

    #[test]
    fn records_span_chunks_in_slot_order() {
        let book = book(2 * CHUNK + 5);
        let records = book.records();
        assert_eq!(records.len(), 2 * CHUNK + 5);
        assert_eq!(records.chunks().len(), 3);
        let ids: Vec<String> = records.iter().map(|r| r.customer_id().to_owned()).collect();
        let expected: Vec<String> = (0..records.len()).map(|i| format!("c{i}")).collect();
        assert_eq!(ids, expected);
        let parallel: Vec<String> = records.par_iter().map(|r| r.customer_id().to_owned()).collect();
        assert_eq!(parallel, expected);
        assert_eq!(records.id(CHUNK), Some(id(CHUNK).as_str()));
        assert!(records.row(records.len()).is_none());
    }

    #[test]
    fn restored_batches_equal_records_inserted_one_by_one() {
        let record = |i: usize| {
            let mut r = CustomerRecord::new(id(i));
            r.summary.orders = i as u64;
            r.summary.revenue_minor = 7 * i as i64;
            r
        };
        let one_by_one = {
            let mut book = CustomerBook::new();
            (0..2 * CHUNK + 300).for_each(|i| book.insert_record(record(i)));
            book
        };
        // A partly filled chunk first, then batches that cross chunk ends.
        let mut batched = CustomerBook::new();
        batched.reserve(2 * CHUNK + 300);
        (0..100).for_each(|i| batched.insert_record(record(i)));
        for batch in [100..CHUNK + 50, CHUNK + 50..CHUNK + 50, CHUNK + 50..2 * CHUNK + 300] {
            let mut records: Vec<CustomerRecord> = batch.map(record).collect();
            batched.insert_records(&mut records);
            assert!(records.is_empty());
        }
        assert_eq!(batched.len(), one_by_one.len());
        assert_eq!(batched.records().chunks().len(), 3);
        for i in 0..2 * CHUNK + 300 {
            assert_eq!(batched.slot_of(&id(i)), Some(i), "customer {i}");
            assert_eq!(batched.get(&id(i)), one_by_one.get(&id(i)), "customer {i}");
        }
    }

    #[test]
    fn chunk_scores_set_at_once_equal_scores_set_one_by_one_and_spare_a_held_view() {
        let scores = |i: usize| {
            (!i.is_multiple_of(3)).then(|| Scores {
                p_alive: 1.0 / (i + 1) as f64,
                expected_orders_90d: i as f64,
                expected_order_value: 2.0 * i as f64,
                clv: 3.0 * i as f64,
                p_purchase_30d: 0.25,
                expected_orders_365d: 4.0 * i as f64,
                next_order_day: i.is_multiple_of(2).then_some(10_000.5),
                clv_log_spread: i.is_multiple_of(4).then_some(0.25),
            })
        };
        let (mut one_by_one, mut at_once) = (book(CHUNK + 10), book(CHUNK + 10));
        let held = at_once.records().chunks()[1].view(crate::chunk::Groups::ALL);
        for slot in 0..CHUNK + 10 {
            one_by_one.set_scores(slot, scores(slot));
        }
        for chunk in 0..2 {
            let rows: Vec<(usize, Option<Scores>)> =
                at_once.records().run_from(chunk * CHUNK, CHUNK).map(|slot| (slot % CHUNK, scores(slot))).collect();
            at_once.set_chunk_scores(chunk, &rows);
        }
        for i in 0..CHUNK + 10 {
            assert_eq!(at_once.get(&id(i)), one_by_one.get(&id(i)), "customer {i}");
        }
        let scored = held.scores().scored.as_ref().expect("the view took the scores");
        assert!(scored.iter().all(|s| !s), "a view taken before keeps the scores it saw");
    }

    #[test]
    fn run_from_stays_within_one_chunk() {
        let book = book(CHUNK + 10);
        let records = book.records();
        assert_eq!(records.run_from(0, 100), 0..100);
        assert_eq!(records.run_from(CHUNK - 3, 100), CHUNK - 3..CHUNK);
        assert_eq!(records.run_from(CHUNK, 100), CHUNK..CHUNK + 10);
        assert!(records.run_from(CHUNK + 10, 100).is_empty());
        assert!(records.run_from(10 * CHUNK, 100).is_empty());
    }

    #[test]
    fn book_finds_every_customer_after_removals_across_chunks() {
        let mut book = book(CHUNK + 100);
        for i in (0..CHUNK + 100).step_by(7) {
            assert!(book.remove(&id(i)));
            assert!(!book.remove(&id(i)));
        }
        for i in 0..CHUNK + 100 {
            let found = book.get(&id(i)).map(|r| r.customer_id.clone());
            assert_eq!(found, (i % 7 != 0).then(|| id(i)), "customer {i}");
        }
        assert_eq!(book.len(), CHUNK + 100 - (CHUNK + 100).div_ceil(7));
        // Every id is stored once: in its chunk, at the slot the index names.
        for slot in 0..book.len() {
            let stored = CustomerId::new(book.records().id(slot).unwrap()).unwrap();
            assert_eq!(book.slot_of(&stored), Some(slot));
        }
    }

    #[test]
    fn regression_a_shared_book_with_a_horizon_refuses_old_events_instead_of_panicking() {
        let validator = patron_model::Validator::new(patron_model::CurrencyTable::default());
        let purchase = |id: &str, day: &str| {
            let json = format!(
                r#"{{"type":"purchase","event_id":"{id}","customer_id":"c","timestamp":"{day}T00:00:00Z","revenue":"5"}}"#
            );
            validator.decode(json.as_bytes()).unwrap()
        };
        let mut book = CustomerBook::new().with_dedup(IdHasher::from_key([1, 2]), DedupIndex::new(Some(1)));
        book.apply(&purchase("a", "2025-01-10"));
        book.forget_beyond_horizon();
        book.apply(&purchase("b", "2025-01-10"));
        book.forget_beyond_horizon();
        let shared = SharedBook::new(book);
        let outcome = shared.submit(vec![purchase("c", "2025-01-10"), purchase("old", "2025-01-01")]).unwrap();
        assert_eq!((outcome.accepted, outcome.refused.len(), outcome.refused[0].index), (1, 1, 1));
    }

    #[test]
    fn a_writer_copies_a_chunk_a_scan_holds_and_the_scan_keeps_its_view() {
        let mut book = book(10);
        let validator = patron_model::Validator::new(patron_model::CurrencyTable::default());
        let purchase = |i: usize| {
            let json = format!(
                r#"{{"type":"purchase","event_id":"e{i}","customer_id":"c3","timestamp":"2025-01-0{}T00:00:00Z","revenue":"5"}}"#,
                1 + i
            );
            validator.decode(json.as_bytes()).unwrap()
        };
        book.apply(&purchase(0));
        let held: Vec<Arc<Chunk>> = book.records().chunks().to_vec();
        book.apply(&purchase(1));
        assert_eq!(held[0].summaries()[3].orders, 1, "the scan's view is as of its start");
        assert_eq!(book.get(&id(3)).unwrap().orders, 2);
        assert!(!Arc::ptr_eq(&held[0], &book.records().chunks()[0]), "the writer wrote to a copy");
        drop(held);
        book.apply(&purchase(2));
        assert_eq!(book.get(&id(3)).unwrap().orders, 3);
    }

    fn event(json: &str) -> Event {
        patron_model::Validator::new(patron_model::CurrencyTable::default()).decode(json.as_bytes()).unwrap()
    }

    fn order(id: &str, customer: &str, day: &str, revenue: &str) -> Event {
        event(&format!(
            r#"{{"type":"purchase","event_id":"{id}","customer_id":"{customer}","timestamp":"{day}T10:00:00Z","revenue":"{revenue}"}}"#
        ))
    }

    fn refund(id: &str, customer: &str, order: Option<&str>, day: &str, amount: &str) -> Event {
        let order = order.map(|o| format!(r#","order_id":"{o}""#)).unwrap_or_default();
        event(&format!(
            r#"{{"type":"refund","event_id":"{id}","customer_id":"{customer}"{order},"timestamp":"{day}T12:00:00Z","amount":"{amount}"}}"#
        ))
    }

    fn refusal(applied: Applied) -> String {
        match applied {
            Applied::Refused(refusal) => refusal.to_string(),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_refund_naming_its_order_lowers_that_occasion_value() {
        let mut book = CustomerBook::new();
        let c = CustomerId::new("c").unwrap();
        book.apply(&order("o-1", "c", "2025-01-01", "19"));
        book.apply(&order("o-2", "c", "2025-02-01", "100"));
        book.apply(&order("o-3", "c", "2025-03-01", "20"));
        assert_eq!(book.get(&c).unwrap().mean_repeat_value_minor(), 6_000.0);
        assert_eq!(book.apply(&refund("r-1", "c", Some("o-2"), "2025-03-02", "40")), Applied::Accepted);
        let r = book.get(&c).unwrap();
        assert_eq!((r.revenue_minor, r.total_occasion_value_minor()), (9_900, 9_900));
        assert_eq!(r.mean_repeat_value_minor(), 4_000.0, "the spend model sees what was kept");
        // The first occasion's value drops when its order is refunded.
        book.apply(&refund("r-2", "c", Some("o-1"), "2025-03-02", "19"));
        let r = book.get(&c).unwrap();
        assert_eq!((r.revenue_minor, r.mean_repeat_value_minor()), (8_000, 4_000.0));
        assert_eq!(r.refunds_without_order_minor(), 0);
    }

    #[test]
    fn regression_a_refund_larger_than_its_order_is_refused_and_keeps_its_id() {
        let mut book = CustomerBook::new();
        book.apply(&order("o-1", "c", "2025-01-01", "19"));
        let reason = refusal(book.apply(&refund("r-1", "c", Some("o-1"), "2025-01-02", "5000")));
        assert_eq!(reason, r#"amount: 5000.00 exceeds the 19.00 that remains of order "o-1""#);
        assert_eq!(book.get(&CustomerId::new("c").unwrap()).unwrap().revenue_minor, 1_900, "nothing applied");
        // Refunds add up against the order; the refused id was not used up.
        assert_eq!(book.apply(&refund("r-1", "c", Some("o-1"), "2025-01-02", "15")), Applied::Accepted);
        let reason = refusal(book.apply(&refund("r-2", "c", Some("o-1"), "2025-01-02", "5")));
        assert!(reason.contains("the 4.00 that remains"), "{reason}");
        assert_eq!(book.apply(&refund("r-1", "c", Some("o-1"), "2025-01-02", "15")), Applied::Duplicate);
    }

    #[test]
    fn regression_a_refund_for_an_unknown_customer_or_order_is_refused() {
        let mut book = CustomerBook::new();
        let reason = refusal(book.apply(&refund("r-1", "ghost", Some("o-1"), "2025-01-02", "5")));
        assert_eq!(reason, "customer_id: ghost has no purchases, so there is nothing to refund");
        assert!(book.is_empty(), "no prospect with negative revenue is created");
        book.apply(&order("o-1", "c", "2025-01-01", "19"));
        let reason = refusal(book.apply(&refund("r-1", "c", Some("o-9"), "2025-01-02", "5")));
        assert!(reason.starts_with(r#"order_id: customer c has no order "o-9""#), "{reason}");
        // Another customer's order is not this customer's.
        book.apply(&order("o-2", "d", "2025-01-01", "50"));
        assert!(matches!(book.apply(&refund("r-2", "c", Some("o-2"), "2025-01-02", "5")), Applied::Refused(_)));
    }

    #[test]
    fn a_refund_without_its_order_lowers_revenue_within_what_was_paid() {
        let mut book = CustomerBook::new();
        book.apply(&order("o-1", "c", "2025-01-01", "19"));
        let reason = refusal(book.apply(&refund("r-1", "c", None, "2025-01-02", "20")));
        assert!(reason.starts_with("amount: 20.00 exceeds the customer's net revenue of 19.00"), "{reason}");
        assert_eq!(book.apply(&refund("r-1", "c", None, "2025-01-02", "9")), Applied::Accepted);
        let r = book.get(&CustomerId::new("c").unwrap()).unwrap();
        assert_eq!(
            (r.revenue_minor, r.total_occasion_value_minor(), r.refunds_without_order_minor()),
            (1_000, 1_900, 900)
        );
    }

    #[test]
    fn a_refund_without_an_amount_takes_what_remains_of_its_order() {
        let whole = |id: &str, order: &str, day: &str| {
            event(&format!(
                r#"{{"type":"refund","event_id":"{id}","customer_id":"c","order_id":"{order}","timestamp":"{day}T12:00:00Z"}}"#
            ))
        };
        let mut book = CustomerBook::new().with_dedup(IdHasher::from_key([1, 2]), DedupIndex::new(Some(10)));
        book.apply(&order("o-1", "c", "2025-01-01", "19"));
        book.forget_beyond_horizon();
        book.apply(&order("o-2", "c", "2025-03-01", "30"));
        book.apply(&order("o-3", "c", "2025-03-02", "12"));
        book.forget_beyond_horizon();
        book.apply(&refund("r-1", "c", Some("o-2"), "2025-03-03", "10"));
        assert_eq!(book.apply(&whole("r-2", "o-2", "2025-03-04")), Applied::Accepted);
        let r = book.get(&CustomerId::new("c").unwrap()).unwrap();
        assert_eq!((r.revenue_minor, r.total_occasion_value_minor()), (3_100, 3_100), "the 20.00 left of o-2");
        let reason = refusal(book.apply(&whole("r-3", "o-2", "2025-03-05")));
        assert_eq!(reason, r#"order_id: order "o-2" was already refunded in full"#);
        let reason = refusal(book.apply(&whole("r-4", "o-1", "2025-03-05")));
        assert!(reason.starts_with(r#"amount: missing, and order "o-1" is older than the orders still remembered"#));
    }

    #[test]
    fn a_refund_of_an_order_older_than_the_horizon_lowers_revenue_only() {
        let mut book = CustomerBook::new().with_dedup(IdHasher::from_key([1, 2]), DedupIndex::new(Some(10)));
        book.apply(&order("o-1", "c", "2025-01-01", "19"));
        book.forget_beyond_horizon();
        book.apply(&order("o-2", "c", "2025-03-01", "30"));
        book.forget_beyond_horizon();
        assert_eq!(book.dedup().orders().len(), 1, "o-1 is forgotten with the event ids of its day");
        assert_eq!(book.apply(&refund("r-1", "c", Some("o-1"), "2025-03-02", "19")), Applied::Accepted);
        let r = book.get(&CustomerId::new("c").unwrap()).unwrap();
        assert_eq!((r.revenue_minor, r.total_occasion_value_minor()), (3_000, 4_900));
        let reason = refusal(book.apply(&refund("r-2", "c", Some("o-1"), "2025-03-02", "40")));
        assert!(reason.contains("net revenue of 30.00"), "{reason}");
    }
}
