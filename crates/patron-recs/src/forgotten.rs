//! The products a purchase profile evicted: with the profile's own products,
//! every product the customer ever bought, exactly. The discover list ("only
//! products the customer never bought", DESIGN.md) filters against both.
//!
//! Why: the profile is bounded and evicts the products least likely to be
//! bought again, which are exactly the ones a discover list must still know
//! about. A grocery evaluation found 4,376 discover entries that the
//! household had bought before (issue 17).
//!
//! Design constraints:
//! - **No false negatives, and cheap on the event path.** Product indexes,
//!   4 bytes each, in one array: a sorted, distinct prefix and a short
//!   unsorted tail that evictions append to (one cache line touched per
//!   basket). When the tail grows past half the prefix it is sorted in.
//!   Lookups (the discover list only) binary-search the prefix and scan the
//!   tail. A sorted insert per eviction, and then a hash set, each cost a
//!   saturated profile about 0.5 µs per basket in `recs/observe_basket`,
//!   mostly cache misses.
//! - **Nothing for most customers.** Only what was evicted is kept, and the
//!   profile holds it behind an `Option<Box<_>>`: a customer who never filled
//!   their profile (64 products by default) pays 8 bytes and no allocation.
//! - **Bounded.** At most [`MAX_FORGOTTEN`] products (16 KiB). A customer
//!   past that (a reseller, a test account) is marked incomplete, and the
//!   discover list is then empty for them: an empty list is a smaller failure
//!   than a leaked one.
//! - **Upgrades.** Snapshots before version 7 do not have it. A restored
//!   profile that never reached its limit never evicted, so nothing is
//!   missing; a full one may have, and is marked incomplete.

use patron_model::codec::{self, ByteReader};

/// Most evicted products remembered per customer.
pub const MAX_FORGOTTEN: usize = 4096;

/// Whether a [`ForgottenProducts`] holds every product evicted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Completeness {
    /// Every product evicted is in the set.
    #[default]
    Exact,
    /// Some evicted product is missing (the bound was reached, or the profile
    /// came from an old snapshot after it had evicted).
    Incomplete,
    /// The profile came from a snapshot without this set; whether it ever
    /// evicted only its owner's history limit can tell
    /// ([`crate::PurchaseProfile::settle_inherited`]).
    Inherited,
}

/// The products a profile evicted (see the module docs).
#[derive(Clone, Debug, Default)]
pub struct ForgottenProducts {
    /// `products[..sorted]` ascending and distinct; the rest as evicted.
    products: Vec<u32>,
    sorted: usize,
    completeness: Completeness,
}

impl PartialEq for ForgottenProducts {
    fn eq(&self, other: &Self) -> bool {
        self.completeness == other.completeness && self.distinct() == other.distinct()
    }
}

impl Eq for ForgottenProducts {}

impl ForgottenProducts {
    /// Remembers an evicted `product`.
    pub fn insert(&mut self, product: u32) {
        if self.products.len() >= MAX_FORGOTTEN {
            self.compact();
        }
        if self.sorted >= MAX_FORGOTTEN {
            // Full: only a product already held keeps the set exact.
            if !self.contains(product) {
                self.completeness = Completeness::Incomplete;
            }
            return;
        }
        self.products.push(product);
        if self.products.len() - self.sorted > (self.sorted / 2).max(16) {
            self.compact();
        }
    }

    /// Sorts the tail into the prefix; past the bound, keeps the first
    /// [`MAX_FORGOTTEN`] and marks the set incomplete.
    fn compact(&mut self) {
        self.products.sort_unstable();
        self.products.dedup();
        if self.products.len() > MAX_FORGOTTEN {
            self.products.truncate(MAX_FORGOTTEN);
            self.completeness = Completeness::Incomplete;
        }
        self.sorted = self.products.len();
    }

    /// The products, ascending and distinct.
    fn distinct(&self) -> Vec<u32> {
        let mut all = self.products.clone();
        all.sort_unstable();
        all.dedup();
        all
    }

    /// Whether `product` was evicted (exact while [`Self::is_exact`]).
    pub fn contains(&self, product: u32) -> bool {
        self.products[..self.sorted].binary_search(&product).is_ok() || self.products[self.sorted..].contains(&product)
    }

    /// Whether every product evicted is in the set.
    pub fn is_exact(&self) -> bool {
        self.completeness == Completeness::Exact
    }

    /// Products in the set.
    pub fn len(&self) -> usize {
        if self.sorted == self.products.len() { self.sorted } else { self.distinct().len() }
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.products.is_empty()
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.products.capacity() * size_of::<u32>()
    }

    /// The set of a profile restored from a snapshot that had none (before
    /// version 7); see [`crate::PurchaseProfile::settle_inherited`].
    pub fn inherited() -> Self {
        Self { products: Vec::new(), sorted: 0, completeness: Completeness::Inherited }
    }

    /// Whether this set still waits for [`crate::PurchaseProfile::settle_inherited`].
    pub fn is_inherited(&self) -> bool {
        self.completeness == Completeness::Inherited
    }

    /// Marks the set as missing evicted products.
    pub fn mark_incomplete(&mut self) {
        self.completeness = Completeness::Incomplete;
    }

    /// Appends the set: a varint of `len << 1 | incomplete`, then the
    /// smallest product and the gaps between the next ones as varints.
    pub fn encode_compact(&self, out: &mut Vec<u8>) {
        let distinct = self.distinct();
        codec::put_varint(out, (distinct.len() as u64) << 1 | u64::from(!self.is_exact()));
        let mut previous = 0;
        for product in distinct {
            codec::put_varint(out, u64::from(product - previous));
            previous = product;
        }
    }

    /// Reads a set written by [`Self::encode_compact`]; `None` if the bytes
    /// are not one (cut short, too long, not ascending).
    pub fn decode_compact(r: &mut ByteReader<'_>) -> Option<Self> {
        let head = r.varint()?;
        let len = usize::try_from(head >> 1).ok().filter(|&n| n <= MAX_FORGOTTEN)?;
        let mut products = Vec::with_capacity(len.min(r.remaining()));
        let mut previous = 0u32;
        for i in 0..len {
            let gap = u32::try_from(r.varint()?).ok()?;
            if i > 0 && gap == 0 {
                return None;
            }
            previous = previous.checked_add(gap)?;
            products.push(previous);
        }
        let completeness = if head & 1 == 1 { Completeness::Incomplete } else { Completeness::Exact };
        Some(Self { sorted: products.len(), products, completeness })
    }

    /// The largest product index held.
    pub fn max_product(&self) -> Option<u32> {
        self.products.iter().copied().max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_product_inserted_is_contained_and_no_other() {
        let mut set = ForgottenProducts::default();
        for p in [7, 3, 9, 3, 0, 7] {
            set.insert(p);
        }
        assert_eq!(set.len(), 4);
        assert!([0, 3, 7, 9].iter().all(|&p| set.contains(p)));
        assert!([1, 2, 4, 8, 10].iter().all(|&p| !set.contains(p)));
        assert!(set.is_exact());
    }

    #[test]
    fn products_in_the_unsorted_tail_and_the_sorted_prefix_are_both_found() {
        let mut set = ForgottenProducts::default();
        for p in (0..1000u32).map(|i| (i * 7919) % 1000).chain([5, 5, 999]) {
            set.insert(p);
            assert!(set.contains(p), "{p} right after its insert");
        }
        assert_eq!(set.len(), 1000);
        assert!((0..1000).all(|p| set.contains(p)) && !set.contains(1000));
    }

    #[test]
    fn past_the_bound_the_set_says_it_is_incomplete() {
        let mut set = ForgottenProducts::default();
        for p in 0..MAX_FORGOTTEN as u32 {
            set.insert(p * 2);
        }
        assert!(set.is_exact());
        set.insert(0);
        assert!(set.is_exact(), "a product already held is not a new one");
        set.insert(1);
        assert!(!set.is_exact() && !set.contains(1) && set.len() == MAX_FORGOTTEN);
    }

    #[test]
    fn the_compact_encoding_round_trips_and_refuses_bad_bytes() {
        let mut set = ForgottenProducts::default();
        for p in [5, 1_000_000, 17, 0] {
            set.insert(p);
        }
        let mut bytes = Vec::new();
        set.encode_compact(&mut bytes);
        assert_eq!(ForgottenProducts::decode_compact(&mut ByteReader::new(&bytes, 0)), Some(set.clone()));
        for cut in 0..bytes.len() {
            assert!(
                ForgottenProducts::decode_compact(&mut ByteReader::new(&bytes[..cut], 0)).is_none(),
                "cut at {cut}"
            );
        }
        // A repeated product (a zero gap after the first) is not a set.
        let mut repeated = Vec::new();
        for v in [4u64, 3, 0] {
            codec::put_varint(&mut repeated, v);
        }
        assert!(ForgottenProducts::decode_compact(&mut ByteReader::new(&repeated, 0)).is_none());
        let mut incomplete = ForgottenProducts::default();
        incomplete.insert(2);
        incomplete.mark_incomplete();
        let mut bytes = Vec::new();
        incomplete.encode_compact(&mut bytes);
        let back = ForgottenProducts::decode_compact(&mut ByteReader::new(&bytes, 0)).unwrap();
        assert!(!back.is_exact() && back.contains(2));
    }
}
