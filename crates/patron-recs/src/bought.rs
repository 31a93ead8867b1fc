//! Every product a customer ever bought, exactly: what the discover list
//! ("only products the customer never bought", DESIGN.md) filters against.
//!
//! Why not the purchase profile: it is bounded and evicts the products least
//! likely to be bought again, which are exactly the ones a discover list must
//! still know about. A grocery evaluation found 4,376 discover entries that
//! the household had bought before (issue 17).
//!
//! Design constraints:
//! - **No false negatives.** `contains` is exact: a sorted array of product
//!   indexes, 4 bytes each, binary-searched.
//! - **Bounded.** At most [`MAX_BOUGHT`] products (16 KiB). A customer past
//!   that (a reseller, a test account) is marked incomplete, and the discover
//!   list is then empty for them: an empty list is a smaller failure than a
//!   leaked one.
//! - **Upgrades.** Snapshots before version 7 have no such set. A restored
//!   customer's set is then the profile's products, and it is exact only if
//!   the profile never evicted anything (fewer products than its limit);
//!   otherwise it is incomplete until the customer's events rebuild it.

use patron_model::codec::{self, ByteReader};

/// Most products remembered per customer.
pub const MAX_BOUGHT: usize = 4096;

/// Whether a [`BoughtSet`] holds every product bought.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Completeness {
    /// Every product the customer bought is in the set.
    #[default]
    Exact,
    /// Some product bought is missing (the bound was reached, or the set was
    /// rebuilt from an evicting profile).
    Incomplete,
    /// Rebuilt from a profile of an old snapshot; exact if the profile never
    /// evicted, which only its owner's history limit can tell
    /// ([`BoughtSet::settle_inherited`]).
    Inherited,
}

/// The products a customer ever bought (see the module docs).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BoughtSet {
    /// Ascending, distinct.
    products: Vec<u32>,
    completeness: Completeness,
}

impl BoughtSet {
    /// Records a purchase of `product`.
    pub fn insert(&mut self, product: u32) {
        if let Err(at) = self.products.binary_search(&product) {
            if self.products.len() >= MAX_BOUGHT {
                self.completeness = Completeness::Incomplete;
            } else {
                self.products.insert(at, product);
            }
        }
    }

    /// Whether the customer bought `product` (exact while [`Self::is_exact`]).
    pub fn contains(&self, product: u32) -> bool {
        self.products.binary_search(&product).is_ok()
    }

    /// Whether every product bought is in the set, so that "not in the set"
    /// means "never bought".
    pub fn is_exact(&self) -> bool {
        self.completeness == Completeness::Exact
    }

    /// Products in the set.
    pub fn len(&self) -> usize {
        self.products.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.products.is_empty()
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.products.capacity() * size_of::<u32>()
    }

    /// The products of a profile restored from a snapshot that had no set
    /// (before version 7); see [`Self::settle_inherited`].
    /// An empty profile never held a product, so its set is exact at once.
    pub fn inherited(products: impl IntoIterator<Item = u32>) -> Self {
        let mut products: Vec<u32> = products.into_iter().collect();
        products.sort_unstable();
        products.dedup();
        let completeness = if products.is_empty() { Completeness::Exact } else { Completeness::Inherited };
        Self { products, completeness }
    }

    /// Decides an inherited set: exact when its profile held fewer than
    /// `history_limit` products (it never evicted one), incomplete otherwise.
    pub fn settle_inherited(&mut self, profile_len: usize, history_limit: usize) {
        if self.completeness == Completeness::Inherited {
            self.completeness =
                if profile_len < history_limit { Completeness::Exact } else { Completeness::Incomplete };
        }
    }

    /// Appends the set: a varint of `len << 1 | incomplete`, then the first
    /// product and the gaps between the next ones as varints.
    pub fn encode_compact(&self, out: &mut Vec<u8>) {
        codec::put_varint(out, (self.products.len() as u64) << 1 | u64::from(!self.is_exact()));
        let mut previous = 0;
        for &product in &self.products {
            codec::put_varint(out, u64::from(product - previous));
            previous = product;
        }
    }

    /// Reads a set written by [`Self::encode_compact`]; `None` if the bytes
    /// are not one (cut short, too long, not ascending).
    pub fn decode_compact(r: &mut ByteReader<'_>) -> Option<Self> {
        let head = r.varint()?;
        let len = usize::try_from(head >> 1).ok().filter(|&n| n <= MAX_BOUGHT)?;
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
        Some(Self { products, completeness })
    }

    /// The largest product index held.
    pub fn max_product(&self) -> Option<u32> {
        self.products.last().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_product_inserted_is_contained_and_no_other() {
        let mut set = BoughtSet::default();
        for p in [7, 3, 9, 3, 0, 7] {
            set.insert(p);
        }
        assert_eq!(set.len(), 4);
        assert!([0, 3, 7, 9].iter().all(|&p| set.contains(p)));
        assert!([1, 2, 4, 8, 10].iter().all(|&p| !set.contains(p)));
        assert!(set.is_exact());
    }

    #[test]
    fn past_the_bound_the_set_says_it_is_incomplete() {
        let mut set = BoughtSet::default();
        for p in 0..MAX_BOUGHT as u32 {
            set.insert(p * 2);
        }
        assert!(set.is_exact());
        set.insert(0);
        assert!(set.is_exact(), "a product already held is not a new one");
        set.insert(1);
        assert!(!set.is_exact() && !set.contains(1) && set.len() == MAX_BOUGHT);
    }

    #[test]
    fn the_compact_encoding_round_trips_and_refuses_bad_bytes() {
        let mut set = BoughtSet::default();
        for p in [5, 1_000_000, 17, 0] {
            set.insert(p);
        }
        let mut bytes = Vec::new();
        set.encode_compact(&mut bytes);
        assert_eq!(BoughtSet::decode_compact(&mut ByteReader::new(&bytes, 0)), Some(set.clone()));
        for cut in 0..bytes.len() {
            assert!(BoughtSet::decode_compact(&mut ByteReader::new(&bytes[..cut], 0)).is_none(), "cut at {cut}");
        }
        // A repeated product (a zero gap after the first) is not a set.
        let mut repeated = Vec::new();
        for v in [4u64, 3, 0] {
            codec::put_varint(&mut repeated, v);
        }
        assert!(BoughtSet::decode_compact(&mut ByteReader::new(&repeated, 0)).is_none());
        let mut incomplete = BoughtSet::inherited([1, 2]);
        incomplete.settle_inherited(64, 64);
        let mut bytes = Vec::new();
        incomplete.encode_compact(&mut bytes);
        let back = BoughtSet::decode_compact(&mut ByteReader::new(&bytes, 0)).unwrap();
        assert!(!back.is_exact() && back.contains(2));
    }

    #[test]
    fn an_inherited_set_is_exact_only_if_its_profile_never_evicted() {
        let mut never_full = BoughtSet::inherited([3, 1]);
        never_full.settle_inherited(2, 64);
        assert!(never_full.is_exact());
        let mut full = BoughtSet::inherited(0..64);
        full.settle_inherited(64, 64);
        assert!(!full.is_exact());
        let mut settled = full.clone();
        settled.settle_inherited(1, 64);
        assert_eq!(settled, full, "settling happens once");
    }
}
