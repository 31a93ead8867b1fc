//! One customer's purchase counts by product, bounded: the input of "buy again"
//! and the recent history that cross-basket co-purchases are drawn from.
//!
//! Design constraints:
//! - At most `limit` products per customer (the engine's `history_limit`).
//!   When a new product arrives at a full profile, the entry with the lowest
//!   time-decayed weight is evicted: the products least likely to be re-bought
//!   go first, so the buy-again list keeps what matters with bounded memory.
//! - `occasions` counts distinct UTC days on which the product was bought (the
//!   same occasion rule as the purchase models); a late event for an earlier
//!   day than `last_day` counts as a new occasion unless it is that same day.
//! - `weight` is a forward-decayed sum whose clock is the customer's own
//!   purchase occasions, not the calendar: an occasion counts
//!   `2^(−n / half_life)` after `n` later occasions of the same customer.
//!   What a customer bought in their last basket weighs the same whether
//!   that was a week or a year ago; what matters is what they bought since.
//!   (Evaluated against calendar-day decay on UCI Online Retail; see
//!   `bench-results/recs/`.) Weights are stored as `2^(occasion / half_life)`
//!   relative to an origin that moves forward when the exponent passes 64,
//!   so they stay finite in `f32` for any number of occasions.
//! - 16 bytes per entry plus 16 for the clock; 64 entries (the default)
//!   bound a customer's history to about 1 KiB.
//! - **What it forgot, it still knows it bought.** An evicted product goes
//!   to [`ForgottenProducts`], so that [`PurchaseProfile::ever_bought`] is
//!   exact: the discover list must never show a product bought long ago.

use patron_model::codec::{self, ByteReader};

use crate::forgotten::ForgottenProducts;

/// One product in a customer's history.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProductHistory {
    /// Product index in the catalogue.
    pub product: u32,
    /// Distinct days it was bought on (saturating).
    pub occasions: u16,
    /// Latest day it was bought.
    pub last_day: i32,
    /// Forward-decayed occasion count.
    pub weight: f32,
}

/// What recording one product purchase changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProfileChange {
    /// The product is new to this profile (the customer is a new buyer of it,
    /// unless an earlier entry was evicted).
    NewProduct,
    /// A second occasion: the customer has now re-bought it.
    FirstRepeat,
    /// A third or later occasion.
    LaterRepeat,
    /// Another order on the same day: not a new occasion.
    SameOccasion,
}

/// A customer's bounded purchase counts by product.
#[derive(Clone, Debug, PartialEq)]
pub struct PurchaseProfile {
    entries: Vec<ProductHistory>,
    /// Purchase occasions (distinct days) seen, minus the weights' origin.
    occasions_since_origin: u32,
    /// Day of the latest occasion (`i32::MIN`: none).
    last_day: i32,
    /// Weight of one occasion now: `2^(occasions_since_origin / half_life)`.
    unit: f32,
    /// Products evicted from `entries` (`None`: none ever was).
    forgotten: Option<Box<ForgottenProducts>>,
}

impl Default for PurchaseProfile {
    fn default() -> Self {
        Self { entries: Vec::new(), occasions_since_origin: 0, last_day: i32::MIN, unit: 1.0, forgotten: None }
    }
}

/// Exponent past which the weights are rescaled to a new origin.
const RESCALE_EXPONENT: f64 = 64.0;

impl PurchaseProfile {
    /// Heap bytes held by the entries.
    pub fn heap_bytes(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<ProductHistory>()
            + self.forgotten.as_ref().map_or(0, |f| size_of::<ForgottenProducts>() + f.heap_bytes())
    }

    /// The products, in no particular order.
    pub fn entries(&self) -> &[ProductHistory] {
        &self.entries
    }

    /// The entry of `product`, if held.
    pub fn get(&self, product: u32) -> Option<&ProductHistory> {
        self.entries.iter().find(|e| e.product == product)
    }

    /// Whether the profile holds `product` (it may have evicted others).
    pub fn contains(&self, product: u32) -> bool {
        self.get(product).is_some()
    }

    /// Whether the customer ever bought `product`: held, or evicted. Exact
    /// while [`Self::knows_every_product`].
    pub fn ever_bought(&self, product: u32) -> bool {
        self.contains(product) || self.forgotten.as_ref().is_some_and(|f| f.contains(product))
    }

    /// Whether [`Self::ever_bought`] is exact (no evicted product was lost).
    pub fn knows_every_product(&self) -> bool {
        self.forgotten.as_ref().is_none_or(|f| f.is_exact())
    }

    /// Products evicted so far (remembered in the forgotten set).
    pub fn forgotten_len(&self) -> usize {
        self.forgotten.as_ref().map_or(0, |f| f.len())
    }

    /// The largest product index the profile knows of, held or evicted.
    pub fn max_product(&self) -> Option<u32> {
        let held = self.entries.iter().map(|e| e.product).max();
        held.max(self.forgotten.as_ref().and_then(|f| f.max_product()))
    }

    /// Decides what a profile restored from a snapshot without the evicted
    /// products (before version 7) knows: a profile that held fewer than
    /// `history_limit` products never evicted one, so nothing is missing;
    /// otherwise it may have, and the discover list stays empty for it.
    pub fn settle_inherited(&mut self, history_limit: usize) {
        if self.forgotten.as_ref().is_some_and(|f| f.is_inherited()) {
            if self.entries.len() < history_limit {
                self.forgotten = None;
            } else if let Some(f) = &mut self.forgotten {
                f.mark_incomplete();
            }
        }
    }

    fn forget(&mut self, product: u32) {
        self.forgotten.get_or_insert_with(Default::default).insert(product);
    }

    /// Number of products held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing was bought.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Starts a basket bought on `day`: a new occasion when the day is later
    /// than the last one. Returns the weight one product of it adds.
    pub fn begin_basket(&mut self, day: i32, half_life_occasions: f64) -> f32 {
        if day > self.last_day {
            if self.last_day != i32::MIN {
                self.occasions_since_origin += 1;
            }
            self.last_day = day;
            let exponent = f64::from(self.occasions_since_origin) / half_life_occasions.max(0.01);
            if exponent > RESCALE_EXPONENT {
                let shrink = (-exponent).exp2() as f32;
                for e in &mut self.entries {
                    e.weight *= shrink;
                }
                self.occasions_since_origin = 0;
                self.unit = 1.0;
            } else {
                self.unit = exponent.exp2() as f32;
            }
        }
        self.unit
    }

    /// A weight of this profile as a decayed occasion count as of its latest occasion.
    pub fn decayed(&self, weight: f32) -> f64 {
        f64::from(weight) / f64::from(self.unit)
    }

    /// Records a purchase of `product` on `day` whose decayed unit is
    /// `weight`, keeping at most `limit` products (0 keeps none).
    pub fn record(&mut self, product: u32, day: i32, weight: f32, limit: usize) -> ProfileChange {
        if let Some(entry) = self.entries.iter_mut().find(|e| e.product == product) {
            if entry.last_day == day {
                return ProfileChange::SameOccasion;
            }
            entry.occasions = entry.occasions.saturating_add(1);
            entry.last_day = entry.last_day.max(day);
            entry.weight += weight;
            return if entry.occasions == 2 { ProfileChange::FirstRepeat } else { ProfileChange::LaterRepeat };
        }
        if limit == 0 {
            self.forget(product);
            return ProfileChange::NewProduct;
        }
        if self.entries.len() >= limit {
            let weakest = self
                .entries
                .iter()
                .enumerate()
                .min_by(|(_, a), (_, b)| a.weight.total_cmp(&b.weight).then(a.last_day.cmp(&b.last_day)))
                .map(|(i, _)| i);
            if let Some(i) = weakest {
                let evicted = self.entries.swap_remove(i);
                self.forget(evicted.product);
            }
            while self.entries.len() > limit - 1 {
                if let Some(evicted) = self.entries.pop() {
                    self.forget(evicted.product);
                }
            }
        }
        self.entries.push(ProductHistory { product, occasions: 1, last_day: day, weight });
        ProfileChange::NewProduct
    }

    /// Products bought in `[from_day, before_day)`, most recent first, at most `max`.
    pub fn recent(&self, from_day: i32, before_day: i32, max: usize) -> Vec<u32> {
        let mut recent = Vec::new();
        self.recent_into(from_day, before_day, max, &mut recent);
        recent.into_iter().map(|e| e.product).collect()
    }

    /// [`Self::recent`] into a buffer the caller reuses (the event path
    /// allocates nothing): entries bought in `[from_day, before_day)`, most
    /// recent first, then heaviest; equal ones in profile order.
    pub fn recent_into(&self, from_day: i32, before_day: i32, max: usize, out: &mut Vec<ProductHistory>) {
        out.clear();
        let before = |a: &ProductHistory, b: &ProductHistory| {
            b.last_day.cmp(&a.last_day).then(b.weight.total_cmp(&a.weight)) == std::cmp::Ordering::Less
        };
        for e in self.entries.iter().filter(|e| e.last_day >= from_day && e.last_day < before_day) {
            // Full, and not ahead of the last kept: most entries of a long profile stop here.
            if out.len() >= max && out.last().is_none_or(|last| !before(e, last)) {
                continue;
            }
            // After every entry that is not behind it: a stable insertion.
            let at = out.iter().position(|o| before(e, o)).unwrap_or(out.len());
            out.insert(at, *e);
            out.truncate(max);
        }
    }

    /// Appends the fixed-width layout of snapshot versions 3 to 5: occasions
    /// u32, last_day i32, unit f32, count u16, then (product u32, occasions
    /// u16, last_day i32, weight f32) each. Only tests write it, to check
    /// that old files are still read.
    pub fn encode_fixed_width(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.occasions_since_origin.to_le_bytes());
        out.extend_from_slice(&self.last_day.to_le_bytes());
        out.extend_from_slice(&self.unit.to_le_bytes());
        out.extend_from_slice(&(self.entries.len() as u16).to_le_bytes());
        for e in &self.entries {
            out.extend_from_slice(&e.product.to_le_bytes());
            out.extend_from_slice(&e.occasions.to_le_bytes());
            out.extend_from_slice(&e.last_day.to_le_bytes());
            out.extend_from_slice(&e.weight.to_le_bytes());
        }
    }

    /// Appends the compact snapshot layout: occasions varint, last_day
    /// zigzag, unit f32, count varint, then per product: product varint,
    /// occasions varint, days before the profile's last day zigzag, weight
    /// f32; then (version 7) the evicted products
    /// ([`ForgottenProducts::encode_compact`]; one zero byte for none).
    pub fn encode_compact(&self, out: &mut Vec<u8>) {
        codec::put_varint(out, u64::from(self.occasions_since_origin));
        codec::put_zigzag(out, i64::from(self.last_day));
        out.extend_from_slice(&self.unit.to_le_bytes());
        codec::put_varint(out, self.entries.len() as u64);
        for e in &self.entries {
            codec::put_varint(out, u64::from(e.product));
            codec::put_varint(out, u64::from(e.occasions));
            codec::put_zigzag(out, i64::from(self.last_day) - i64::from(e.last_day));
            out.extend_from_slice(&e.weight.to_le_bytes());
        }
        match &self.forgotten {
            // An unsettled inherited set is written as what it may be: incomplete.
            Some(f) if f.is_inherited() => {
                let mut unknown = ForgottenProducts::default();
                unknown.mark_incomplete();
                unknown.encode_compact(out);
            }
            Some(f) => f.encode_compact(out),
            None => ForgottenProducts::default().encode_compact(out),
        }
    }

    /// Reads what [`Self::encode_compact`] wrote; `None` if cut short, out of
    /// range or not finite. Without `with_forgotten` (snapshot version 6) the
    /// evicted products are not there: see [`Self::settle_inherited`].
    pub fn decode_compact(reader: &mut ByteReader<'_>, with_forgotten: bool) -> Option<Self> {
        let occasions_since_origin = reader.varint_u32()?;
        let last_day = reader.zigzag_i32()?;
        let unit = f32::from_le_bytes(reader.array()?);
        if !(unit.is_finite() && unit >= 1.0) {
            return None;
        }
        let count = usize::try_from(reader.varint()?).ok()?;
        let mut entries = Vec::with_capacity(count.min(reader.remaining() / 7));
        for _ in 0..count {
            let product = reader.varint_u32()?;
            let occasions = u16::try_from(reader.varint()?).ok()?;
            let last = i32::try_from(i64::from(last_day) - reader.zigzag()?).ok()?;
            let weight = f32::from_le_bytes(reader.array()?);
            if !weight.is_finite() || occasions == 0 {
                return None;
            }
            entries.push(ProductHistory { product, occasions, last_day: last, weight });
        }
        let forgotten = if with_forgotten {
            let f = ForgottenProducts::decode_compact(reader)?;
            (!f.is_empty() || !f.is_exact()).then(|| Box::new(f))
        } else {
            inherited(&entries)
        };
        Some(Self { entries, occasions_since_origin, last_day, unit, forgotten })
    }

    /// Reads the fixed-width layout of snapshot versions 3 to 5; `None` if cut short or not finite.
    pub fn decode(reader: &mut ByteReader<'_>) -> Option<Self> {
        let occasions_since_origin = reader.u32()?;
        let last_day = i32::from_le_bytes(reader.array()?);
        let unit = f32::from_le_bytes(reader.array()?);
        if !(unit.is_finite() && unit >= 1.0) {
            return None;
        }
        let count = reader.u16()?;
        let mut entries = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            let product = reader.u32()?;
            let occasions = reader.u16()?;
            let last_day = i32::from_le_bytes(reader.array()?);
            let weight = f32::from_le_bytes(reader.array()?);
            if !weight.is_finite() || occasions == 0 {
                return None;
            }
            entries.push(ProductHistory { product, occasions, last_day, weight });
        }
        let forgotten = inherited(&entries);
        Some(Self { entries, occasions_since_origin, last_day, unit, forgotten })
    }
}

/// The evicted products of a profile from a snapshot that did not keep them:
/// none for an empty profile, else unknown until settled.
fn inherited(entries: &[ProductHistory]) -> Option<Box<ForgottenProducts>> {
    (!entries.is_empty()).then(|| Box::new(ForgottenProducts::inherited()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn occasions_count_days_and_the_weakest_product_is_evicted() {
        let mut p = PurchaseProfile::default();
        assert_eq!(p.record(1, 10, 1.0, 3), ProfileChange::NewProduct);
        assert_eq!(p.record(1, 10, 1.0, 3), ProfileChange::SameOccasion);
        assert_eq!(p.record(1, 12, 1.5, 3), ProfileChange::FirstRepeat);
        assert_eq!(p.record(1, 14, 2.0, 3), ProfileChange::LaterRepeat);
        p.record(2, 12, 1.5, 3);
        p.record(3, 13, 1.7, 3);
        // Full: product 4 evicts the lightest entry (2, weight 1.5).
        p.record(4, 14, 2.0, 3);
        let mut held: Vec<u32> = p.entries().iter().map(|e| e.product).collect();
        held.sort_unstable();
        assert_eq!(held, [1, 3, 4]);
        assert_eq!(p.get(1).map(|e| (e.occasions, e.last_day, e.weight)), Some((3, 14, 4.5)));
        assert_eq!(p.recent(13, 15, 5), [1, 4, 3]);
        assert_eq!(p.recent(13, 14, 5), [3]);
        assert!(p.ever_bought(2) && !p.contains(2) && p.knows_every_product(), "evicted, and still known");
        assert!(!p.ever_bought(5));
        let mut bytes = Vec::new();
        p.encode_fixed_width(&mut bytes);
        // The fixed-width layout (versions 3 to 5) has no evicted products.
        let old = PurchaseProfile::decode(&mut ByteReader::new(&bytes, 0)).unwrap();
        assert_eq!(old.entries(), p.entries());
        assert!(PurchaseProfile::decode(&mut ByteReader::new(&bytes[..bytes.len() - 1], 0)).is_none());
        let (mut full, mut roomy) = (old.clone(), old);
        full.settle_inherited(3);
        roomy.settle_inherited(64);
        assert!(!full.knows_every_product(), "a full profile may have evicted");
        assert!(roomy.knows_every_product(), "a profile below its limit never evicted");
        let mut compact = Vec::new();
        p.encode_compact(&mut compact);
        assert!(compact.len() < bytes.len(), "{} against {} bytes", compact.len(), bytes.len());
        assert_eq!(PurchaseProfile::decode_compact(&mut ByteReader::new(&compact, 0), true), Some(p.clone()));
        for cut in 0..compact.len() {
            assert!(PurchaseProfile::decode_compact(&mut ByteReader::new(&compact[..cut], 0), true).is_none());
        }
        let mut empty = Vec::new();
        PurchaseProfile::default().encode_compact(&mut empty);
        let back = PurchaseProfile::decode_compact(&mut ByteReader::new(&empty, 0), true);
        assert_eq!(back, Some(PurchaseProfile::default()));
        let mut none = PurchaseProfile::default();
        none.record(9, 1, 1.0, 0);
        assert!(none.is_empty() && none.ever_bought(9), "a profile of no products still knows what was bought");
    }

    #[test]
    fn a_profile_is_48_bytes_inline() {
        // Every customer pays this; the evicted products cost 8 of it until
        // the profile first fills (the memory target is 150 bytes per customer).
        assert_eq!(size_of::<PurchaseProfile>(), 48);
    }

    #[test]
    fn a_customer_who_never_filled_the_profile_holds_no_forgotten_set() {
        let mut p = PurchaseProfile::default();
        for product in 0..64 {
            p.record(product, 10, 1.0, 64);
        }
        assert_eq!((p.len(), p.forgotten_len()), (64, 0));
        assert!(p.forgotten.is_none(), "nothing was evicted: no allocation");
        p.record(64, 11, 1.0, 64);
        assert_eq!((p.len(), p.forgotten_len()), (64, 1));
        assert!((0..=64).all(|product| p.ever_bought(product)));
    }

    #[test]
    fn decay_counts_the_customers_own_occasions_and_stays_finite() {
        let mut p = PurchaseProfile::default();
        // Half-life of one occasion: after two more occasions a purchase counts a quarter.
        let w = p.begin_basket(100, 1.0);
        p.record(1, 100, w, 8);
        assert_eq!(p.begin_basket(100, 1.0), w, "same day, same occasion");
        for day in [400, 900] {
            let w = p.begin_basket(day, 1.0);
            p.record(2, day, w, 8);
        }
        assert!((p.decayed(p.get(1).unwrap().weight) - 0.25).abs() < 1e-9);
        assert!((p.decayed(p.get(2).unwrap().weight) - 1.5).abs() < 1e-9);
        // Thousands of occasions: the origin moves, ratios survive.
        for day in 1000..6000 {
            let w = p.begin_basket(day, 1.0);
            p.record(3, day, w, 8);
        }
        let e3 = p.decayed(p.get(3).unwrap().weight);
        assert!(e3.is_finite() && (e3 - 2.0).abs() < 1e-3, "{e3}");
        assert!(p.entries().iter().all(|e| e.weight.is_finite()));
    }

    #[test]
    fn recent_into_keeps_the_order_of_a_stable_sort_with_ties() {
        // Many ties on day and weight: the order among equals must be the profile's.
        let mut p = PurchaseProfile::default();
        for product in 0..40u32 {
            let day = 100 + (product * 7 % 5) as i32;
            p.record(product, day, 1.0 + (product % 3) as f32, 64);
        }
        let mut reference: Vec<&ProductHistory> =
            p.entries().iter().filter(|e| e.last_day >= 101 && e.last_day < 104).collect();
        reference.sort_by(|a, b| b.last_day.cmp(&a.last_day).then(b.weight.total_cmp(&a.weight)));
        let mut out = Vec::new();
        for max in [0, 1, 5, 8, 13, 64] {
            p.recent_into(101, 104, max, &mut out);
            let expected: Vec<u32> = reference.iter().take(max).map(|e| e.product).collect();
            assert_eq!(out.iter().map(|e| e.product).collect::<Vec<_>>(), expected, "max {max}");
        }
    }
}
