//! Exactly-once application of events over a horizon of event time.
//!
//! The idempotency key is `(customer_id, event_id)` (DESIGN.md §2). Each shard
//! remembers a 64-bit keyed fingerprint of every key it applied, with the UTC
//! day of the event, in flat hash tables: a re-sent event is recognised
//! however many other events of the customer came in between (the 8-id ring
//! per customer it replaces forgot an order after eight newer ones, so
//! replaying a file twice double-counted most customers).
//!
//! Memory is bounded by a horizon of event time (default 35 days): at each
//! snapshot a shard forgets the fingerprints of events older than its
//! watermark minus the horizon, and from then on *refuses* any event that old
//! with a reason, because it can no longer tell whether that event was applied.
//! The cut never passes the oldest event accepted since the previous snapshot:
//! while old history is still arriving (a backfill, a file sorted by customer
//! rather than by time) nothing it could repeat is forgotten, and once only
//! recent events arrive the cut moves up to the horizon. Between snapshots
//! nothing is forgotten at all. So the index holds the horizon's events plus
//! the stragglers of at most two snapshot intervals.
//!
//! The forgetting happens only at the snapshot's cut, which is a fixed point
//! of every shard's event order, so recovery (snapshot, then log replay) makes
//! exactly the decisions the live engine made.
//!
//! Fingerprints are keyed SipHash-1-3: a client who can choose ids cannot
//! aim for collisions without the key, which is random per data directory and
//! stored in the snapshot. A false duplicate needs two different keys of the
//! same shard to collide in 64 bits: about one in 10^10 events with a billion
//! remembered.

use std::hash::Hasher;

use hashbrown::HashTable;
use patron_model::EventId;
use patron_model::codec::{self, ByteReader};
use siphasher::sip::SipHasher13;

use crate::orders::OrderLedger;

/// Default horizon of event time over which duplicates are recognised.
pub const DEFAULT_DEDUP_HORIZON_DAYS: u32 = 35;

/// The keyed hash of customer and event ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdHasher {
    key: [u64; 2],
}

impl IdHasher {
    /// A hasher with a fresh random key.
    pub fn random() -> Self {
        use std::hash::{BuildHasher, RandomState};
        // std's RandomState is seeded from the operating system's generator;
        // two of them give two independent 64-bit draws.
        let draw = |salt: u64| RandomState::new().hash_one(salt);
        Self { key: [draw(0x5041_5452), draw(0x4f4e_4b45)] }
    }

    /// A hasher with a known key (restored from a snapshot).
    pub fn from_key(key: [u64; 2]) -> Self {
        Self { key }
    }

    /// The key, to be stored with the state it hashed.
    pub fn key(&self) -> [u64; 2] {
        self.key
    }

    fn sip(&self) -> SipHasher13 {
        SipHasher13::new_with_keys(self.key[0], self.key[1])
    }

    /// The hash of a customer id: the index probe and the event fingerprints
    /// start from it, so an event hashes its customer id once.
    pub fn customer_hash(&self, customer: &str) -> u64 {
        self.customer_hash_bytes(customer.as_bytes())
    }

    /// [`Self::customer_hash`] of an id's bytes.
    pub fn customer_hash_bytes(&self, customer: &[u8]) -> u64 {
        let mut h = self.sip();
        h.write(customer);
        h.finish()
    }

    /// The shard of a customer among `shards`, from its [`Self::customer_hash`]:
    /// routing, the index probe and the fingerprint share one hash. The hash
    /// is multiplied before its high half picks the shard, so the shard does
    /// not fix the bits the index itself selects by (its top and low bits).
    pub fn shard(customer_hash: u64, shards: usize) -> usize {
        let mixed = customer_hash.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32;
        ((mixed * shards.max(1) as u64) >> 32) as usize
    }

    /// The fingerprint of `(customer, event)`, from [`Self::customer_hash`].
    pub fn event_fingerprint(&self, customer_hash: u64, event: &EventId) -> u64 {
        let mut h = self.sip();
        h.write_u64(customer_hash);
        h.write(event.as_str().as_bytes());
        h.finish()
    }

    /// The fingerprint of `(customer, order)` in the order ledger
    /// ([`crate::orders`]), from [`Self::customer_hash`].
    pub fn order_fingerprint(&self, customer_hash: u64, order: &str) -> u64 {
        let mut h = self.sip();
        h.write_u64(customer_hash);
        h.write_u8(b'#');
        h.write(order.as_bytes());
        h.finish()
    }
}

/// What the index says of an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Not seen before: apply it (it is now remembered).
    New,
    /// Already applied.
    Duplicate,
    /// Older than what the index still remembers: refused, because it may
    /// have been applied before its fingerprint was forgotten.
    BeyondHorizon {
        /// The first day still remembered (days since 1970-01-01, UTC).
        remembered_from_day: i32,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Remembered {
    fingerprint: u64,
    day: i32,
}

/// Tables a hash-keyed index is split into, so growing one never rehashes
/// more than 1/64 of it: a single table of tens of millions of entries took
/// a shard's writer (and the lock a scan waits for) away for 100–200 ms each
/// time it doubled.
pub(crate) const PARTS: usize = 64;

/// The part of a [`PARTS`]-way split index a hash belongs to. Bits 32–37:
/// hashbrown places entries by the low bits and tags them with the top seven,
/// so selecting parts by either would leave each part's tables with fewer
/// distinct home buckets or tags (more collisions, more key comparisons).
pub(crate) fn part_of(hash: u64) -> usize {
    (hash >> 32) as usize % PARTS
}

/// An entry of a [`Parts`] table: keyed by a fingerprint that is already a
/// keyed hash, so it is its own table hash.
pub(crate) trait Fingerprinted {
    fn fingerprint(&self) -> u64;
}

impl Fingerprinted for Remembered {
    fn fingerprint(&self) -> u64 {
        self.fingerprint
    }
}

/// Entries keyed by fingerprint, split into [`PARTS`] tables by [`part_of`].
#[derive(Clone, Debug)]
pub(crate) struct Parts<T>(Vec<HashTable<T>>);

impl<T: Fingerprinted> Parts<T> {
    pub(crate) fn new() -> Self {
        Self((0..PARTS).map(|_| HashTable::new()).collect())
    }

    pub(crate) fn len(&self) -> usize {
        self.0.iter().map(HashTable::len).sum()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.iter().all(HashTable::is_empty)
    }

    pub(crate) fn capacity(&self) -> usize {
        self.0.iter().map(HashTable::capacity).sum()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.0.iter().flat_map(HashTable::iter)
    }

    pub(crate) fn get(&self, fingerprint: u64) -> Option<&T> {
        self.0[part_of(fingerprint)].find(fingerprint, |o| o.fingerprint() == fingerprint)
    }

    pub(crate) fn get_mut(&mut self, fingerprint: u64) -> Option<&mut T> {
        self.0[part_of(fingerprint)].find_mut(fingerprint, |o| o.fingerprint() == fingerprint)
    }

    pub(crate) fn retain(&mut self, keep: impl Fn(&T) -> bool) {
        for table in &mut self.0 {
            table.retain(|r| keep(r));
            table.shrink_to(table.len(), T::fingerprint);
        }
    }

    pub(crate) fn reserve(&mut self, total: usize) {
        for table in &mut self.0 {
            table.reserve(total / PARTS, T::fingerprint);
        }
    }

    /// Inserts `r` unless its fingerprint is there; whether it was new.
    pub(crate) fn insert(&mut self, r: T) -> bool {
        let fingerprint = r.fingerprint();
        let table = &mut self.0[part_of(fingerprint)];
        match table.entry(fingerprint, |o| o.fingerprint() == fingerprint, T::fingerprint) {
            hashbrown::hash_table::Entry::Occupied(_) => false,
            hashbrown::hash_table::Entry::Vacant(slot) => {
                slot.insert(r);
                true
            }
        }
    }
}

/// One shard's remembered event fingerprints.
#[derive(Clone, Debug)]
pub struct DedupIndex {
    table: Parts<Remembered>,
    /// Orders open to refunds, over the same horizon.
    orders: OrderLedger,
    horizon_days: Option<u32>,
    /// Fingerprints of events before this day have been forgotten.
    remembered_from_day: i32,
    /// The oldest day of an event admitted since the last cut (`i32::MAX`: none).
    oldest_since_cut: i32,
}

impl Default for DedupIndex {
    fn default() -> Self {
        Self::new(Some(DEFAULT_DEDUP_HORIZON_DAYS))
    }
}

impl PartialEq for DedupIndex {
    fn eq(&self, other: &Self) -> bool {
        self.horizon_days == other.horizon_days
            && self.remembered_from_day == other.remembered_from_day
            && self.oldest_since_cut == other.oldest_since_cut
            && self.table.len() == other.table.len()
            && self.table.iter().all(|r| other.table.get(r.fingerprint) == Some(r))
            && self.orders == other.orders
    }
}

impl DedupIndex {
    /// An empty index forgetting events older than `horizon_days` before the
    /// watermark (`None`: remembers everything, as `patron score` does).
    pub fn new(horizon_days: Option<u32>) -> Self {
        Self {
            table: Parts::new(),
            orders: OrderLedger::default(),
            horizon_days,
            remembered_from_day: i32::MIN,
            oldest_since_cut: i32::MAX,
        }
    }

    /// This index, refusing events before `day` (for state whose earlier
    /// event ids were never remembered).
    pub fn remembering_from(mut self, day: i32) -> Self {
        self.remembered_from_day = self.remembered_from_day.max(day);
        self.table.retain(|r| r.day >= day);
        self.orders.forget_before(day);
        self
    }

    /// Adds what `other` remembers; refuses what either refuses.
    pub fn absorb(&mut self, other: &DedupIndex) {
        self.remembered_from_day = self.remembered_from_day.max(other.remembered_from_day);
        self.oldest_since_cut = self.oldest_since_cut.min(other.oldest_since_cut);
        let from = self.remembered_from_day;
        self.table.retain(|r| r.day >= from);
        for r in other.table.iter().filter(|r| r.day >= from) {
            self.admit(r.fingerprint, r.day);
        }
        self.orders.forget_before(from);
        self.orders.absorb(&other.orders, from);
    }

    /// The orders open to refunds.
    pub fn orders(&self) -> &OrderLedger {
        &self.orders
    }

    /// The orders open to refunds, to open or refund one.
    pub fn orders_mut(&mut self) -> &mut OrderLedger {
        &mut self.orders
    }

    /// What [`Self::admit`] would say, without remembering anything.
    pub fn peek(&self, fingerprint: u64, day: i32) -> Admission {
        if day < self.remembered_from_day {
            Admission::BeyondHorizon { remembered_from_day: self.remembered_from_day }
        } else if self.table.get(fingerprint).is_some() {
            Admission::Duplicate
        } else {
            Admission::New
        }
    }

    /// Checks an event and remembers it if it is new.
    pub fn admit(&mut self, fingerprint: u64, day: i32) -> Admission {
        if day < self.remembered_from_day {
            return Admission::BeyondHorizon { remembered_from_day: self.remembered_from_day };
        }
        if self.table.insert(Remembered { fingerprint, day }) {
            self.oldest_since_cut = self.oldest_since_cut.min(day);
            Admission::New
        } else {
            Admission::Duplicate
        }
    }

    /// Forgets events older than the horizon before `watermark_day`, but
    /// none from the oldest day admitted since the previous call on; returns
    /// how many were forgotten. Call only at a snapshot's cut (see the module
    /// documentation).
    pub fn forget_beyond_horizon(&mut self, watermark_day: i32) -> usize {
        let still_arriving = std::mem::replace(&mut self.oldest_since_cut, i32::MAX);
        let Some(horizon) = self.horizon_days else { return 0 };
        let cut = watermark_day.saturating_sub(horizon.min(i32::MAX as u32) as i32).min(still_arriving);
        if cut <= self.remembered_from_day {
            return 0;
        }
        self.remembered_from_day = cut;
        let before = self.table.len();
        self.table.retain(|r| r.day >= cut);
        self.orders.forget_before(cut);
        before - self.table.len()
    }

    /// Events remembered.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// The first day still remembered (`None` before anything was forgotten).
    pub fn remembered_from_day(&self) -> Option<i32> {
        (self.remembered_from_day != i32::MIN).then_some(self.remembered_from_day)
    }

    /// The configured horizon in days (`None`: unbounded).
    pub fn horizon_days(&self) -> Option<u32> {
        self.horizon_days
    }

    /// Bytes the tables occupy: per bucket of the event table one 16-byte
    /// entry and one control byte (buckets being a power of two at most 7/8
    /// full), plus the order ledger's ([`OrderLedger::memory_bytes`]).
    pub fn memory_bytes(&self) -> usize {
        self.table.capacity() * (std::mem::size_of::<Remembered>() + 1) + self.orders.memory_bytes()
    }

    /// Appends the index in the fixed-width layout of snapshot version 5 (tests write old files with it): `remembered_from_day i32 │
    /// oldest_since_cut i32 │ count u64 │ (fingerprint u64, day i32)…`.
    #[cfg(test)]
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.remembered_from_day.to_le_bytes());
        out.extend_from_slice(&self.oldest_since_cut.to_le_bytes());
        out.extend_from_slice(&(self.table.len() as u64).to_le_bytes());
        for r in self.table.iter() {
            out.extend_from_slice(&r.fingerprint.to_le_bytes());
            out.extend_from_slice(&r.day.to_le_bytes());
        }
    }

    /// Appends the index in the compact snapshot layout (version 6):
    /// `remembered_from_day i32 │ oldest_since_cut i32 │ count u64 │ base_day i32 │
    /// bytes u64 │ (fingerprint u64, day − base_day varint)…`. The days of a
    /// horizon differ by a few dozen, so an entry takes 9 bytes instead of 12;
    /// `bytes` lets a reader find the next index without decoding this one.
    /// Version 11 appends the order ledger (see [`crate::orders`]).
    pub fn encode_compact(&self, out: &mut Vec<u8>) {
        let base_day = self.table.iter().map(|r| r.day).min().unwrap_or(0);
        out.extend_from_slice(&self.remembered_from_day.to_le_bytes());
        out.extend_from_slice(&self.oldest_since_cut.to_le_bytes());
        out.extend_from_slice(&(self.table.len() as u64).to_le_bytes());
        out.extend_from_slice(&base_day.to_le_bytes());
        let length_at = out.len();
        out.extend_from_slice(&0u64.to_le_bytes());
        let start = out.len();
        for r in self.table.iter() {
            out.extend_from_slice(&r.fingerprint.to_le_bytes());
            codec::put_varint(out, (i64::from(r.day) - i64::from(base_day)) as u64);
        }
        let length = (out.len() - start) as u64;
        out[length_at..start].copy_from_slice(&length.to_le_bytes());
        self.orders.encode(out);
    }

    /// Reads what [`Self::encode_compact`] wrote, with this run's horizon
    /// (`with_orders`: the order ledger follows, from version 11 on);
    /// `None` if the bytes are not a valid index.
    pub fn decode_compact(r: &mut ByteReader<'_>, horizon_days: Option<u32>, with_orders: bool) -> Option<Self> {
        let remembered_from_day = r.u32()? as i32;
        let oldest_since_cut = r.u32()? as i32;
        let count = usize::try_from(r.u64()?).ok()?;
        let base_day = i64::from(r.u32()? as i32);
        let length = usize::try_from(r.u64()?).ok()?;
        let mut entries = ByteReader::new(r.take(length)?, 0);
        let mut index = Self::new(horizon_days);
        index.remembered_from_day = remembered_from_day;
        index.table.reserve(count.min(length / 9));
        for _ in 0..count {
            let fingerprint = entries.u64()?;
            let day = i32::try_from(base_day + i64::try_from(entries.varint()?).ok()?).ok()?;
            if index.admit(fingerprint, day) != Admission::New {
                return None;
            }
        }
        if entries.remaining() != 0 {
            return None;
        }
        if with_orders {
            index.orders = OrderLedger::decode(r)?;
        } else {
            index.orders.forget_before(remembered_from_day);
        }
        index.oldest_since_cut = oldest_since_cut;
        Some(index)
    }

    /// Reads the fixed-width layout of snapshot version 5, with this run's horizon; `None` if
    /// the bytes are not a valid index.
    pub fn decode(r: &mut ByteReader<'_>, horizon_days: Option<u32>) -> Option<Self> {
        let remembered_from_day = r.u32()? as i32;
        let oldest_since_cut = r.u32()? as i32;
        let count = usize::try_from(r.u64()?).ok()?;
        let mut index = Self::new(horizon_days);
        index.remembered_from_day = remembered_from_day;
        index.table.reserve(count.min(r.remaining() / 12));
        for _ in 0..count {
            let fingerprint = r.u64()?;
            let day = r.u32()? as i32;
            if index.admit(fingerprint, day) != Admission::New {
                return None;
            }
        }
        index.orders.forget_before(remembered_from_day);
        index.oldest_since_cut = oldest_since_cut;
        Some(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(hasher: &IdHasher, customer: &str, event: &str) -> u64 {
        hasher.event_fingerprint(hasher.customer_hash(customer), &EventId::new(event).unwrap())
    }

    #[test]
    fn an_event_is_new_once_however_many_others_come_between() {
        let hasher = IdHasher::from_key([1, 2]);
        let mut index = DedupIndex::new(Some(35));
        assert_eq!(index.admit(fp(&hasher, "c", "e0"), 100), Admission::New);
        for i in 1..10_000 {
            assert_eq!(index.admit(fp(&hasher, "c", &format!("e{i}")), 100), Admission::New);
        }
        assert_eq!(index.admit(fp(&hasher, "c", "e0"), 100), Admission::Duplicate);
        // The same event id of another customer is another event.
        assert_eq!(index.admit(fp(&hasher, "d", "e0"), 100), Admission::New);
    }

    #[test]
    fn ids_cannot_be_split_differently_to_collide() {
        let hasher = IdHasher::from_key([7, 9]);
        assert_ne!(fp(&hasher, "ab", "c"), fp(&hasher, "a", "bc"), "the customer part has a fixed width");
        assert_ne!(fp(&hasher, "ab", "c"), fp(&IdHasher::from_key([7, 10]), "ab", "c"), "the key matters");
    }

    #[test]
    fn beyond_the_horizon_events_are_refused_never_applied_twice() {
        let mut index = DedupIndex::new(Some(35));
        assert_eq!(index.admit(1, 10), Admission::New);
        assert_eq!(index.admit(2, 60), Admission::New);
        // Before any forgetting, old events are still remembered exactly.
        assert_eq!(index.admit(1, 10), Admission::Duplicate);
        assert_eq!(index.admit(4, 70), Admission::New);
        assert_eq!(index.forget_beyond_horizon(100), 0, "day 10 arrived since the last cut: nothing forgotten");
        assert_eq!(index.admit(5, 99), Admission::New);
        assert_eq!(index.forget_beyond_horizon(100), 2, "days 10 and 60 are before 100 - 35");
        assert_eq!(index.admit(4, 70), Admission::Duplicate, "day 70 is still remembered");
        assert_eq!(index.remembered_from_day(), Some(65));
        assert_eq!(index.admit(1, 10), Admission::BeyondHorizon { remembered_from_day: 65 });
        assert_eq!(index.admit(3, 64), Admission::BeyondHorizon { remembered_from_day: 65 });
        assert_eq!(index.admit(2, 65), Admission::New, "day 60 was forgotten, day 65 is remembered");
        assert_eq!(index.admit(2, 65), Admission::Duplicate);
        assert_eq!(index.forget_beyond_horizon(90), 0, "the cut never moves back");
    }

    #[test]
    fn shards_are_balanced_and_independent_of_the_index_bits() {
        let hasher = IdHasher::from_key([7, 9]);
        for shards in [1, 2, 3, 8] {
            let mut per_shard = vec![0usize; shards];
            let mut top_bits = vec![[0usize; 4]; shards];
            for i in 0..40_000 {
                let hash = hasher.customer_hash(&format!("customer-{i}"));
                let shard = IdHasher::shard(hash, shards);
                per_shard[shard] += 1;
                top_bits[shard][(hash >> 62) as usize] += 1;
            }
            let expected = 40_000 / shards;
            for (shard, &n) in per_shard.iter().enumerate() {
                assert!(n.abs_diff(expected) < expected / 20, "{shards} shards: shard {shard} has {n}");
                for &m in &top_bits[shard] {
                    assert!(m.abs_diff(n / 4) < n / 20, "{shards} shards: the index's top bits lean in shard {shard}");
                }
            }
        }
    }

    #[test]
    fn parts_leave_every_tag_and_home_bucket_in_use() {
        // Regression: parts chosen by the top six bits left two of hashbrown's
        // 128 tags in each part, so most probes compared keys needlessly.
        let hasher = IdHasher::from_key([1, 2]);
        let mut tags = vec![std::collections::HashSet::new(); PARTS];
        let mut homes = vec![std::collections::HashSet::new(); PARTS];
        for i in 0..200_000 {
            let hash = hasher.customer_hash(&format!("c{i}"));
            tags[part_of(hash)].insert(hash >> 57);
            homes[part_of(hash)].insert(hash & 0xff);
        }
        assert!(tags.iter().all(|t| t.len() == 128), "every part sees every tag");
        assert!(homes.iter().all(|h| h.len() == 256), "and every low byte");
    }

    #[test]
    fn an_unbounded_index_forgets_nothing() {
        let mut index = DedupIndex::new(None);
        index.admit(1, 0);
        assert_eq!(index.forget_beyond_horizon(1_000_000), 0);
        assert_eq!(index.admit(1, 0), Admission::Duplicate);
    }

    #[test]
    fn the_index_round_trips_and_truncation_is_caught() {
        let mut index = DedupIndex::new(Some(35));
        for i in 0..100u64 {
            index.admit(i.wrapping_mul(0x9e37_79b9_7f4a_7c15), 100 + i as i32);
        }
        index.forget_beyond_horizon(150);
        let mut bytes = Vec::new();
        index.encode(&mut bytes);
        let back = DedupIndex::decode(&mut ByteReader::new(&bytes, 0), Some(35)).unwrap();
        assert_eq!(back, index);
        for cut in 0..bytes.len() {
            assert!(DedupIndex::decode(&mut ByteReader::new(&bytes[..cut], 0), Some(35)).is_none(), "cut at {cut}");
        }
        // Orders ride in the compact layout only (version 11).
        index.orders_mut().open(42, 140, 1_900);
        index.orders_mut().open(43, 149, 0);
        let mut compact = Vec::new();
        index.encode_compact(&mut compact);
        assert!(compact.len() < bytes.len(), "{} against {} bytes", compact.len(), bytes.len());
        let mut reader = ByteReader::new(&compact, 0);
        assert_eq!(DedupIndex::decode_compact(&mut reader, Some(35), true), Some(index.clone()));
        assert_eq!(reader.remaining(), 0);
        for cut in 0..compact.len() {
            let mut r = ByteReader::new(&compact[..cut], 0);
            assert!(DedupIndex::decode_compact(&mut r, Some(35), true).is_none(), "cut at {cut}");
        }
        let mut empty = Vec::new();
        DedupIndex::new(None).encode_compact(&mut empty);
        assert_eq!(
            DedupIndex::decode_compact(&mut ByteReader::new(&empty, 0), None, true),
            Some(DedupIndex::new(None))
        );
    }
}
