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
//! - `weight` is a forward-decayed sum (see [`crate::items::Decay`]): one
//!   unit per occasion, scaled by `2^((day − landmark) / half_life)`. It only
//!   ever grows, and dividing by the current day's factor gives the decayed
//!   count as of now.
//! - 16 bytes per entry; 32 entries (the default) bound a customer's history
//!   to 512 bytes plus the `Vec` header.

use patron_model::codec::ByteReader;

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
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PurchaseProfile {
    entries: Vec<ProductHistory>,
}

impl PurchaseProfile {
    /// The products, in no particular order.
    pub fn entries(&self) -> &[ProductHistory] {
        &self.entries
    }

    /// The entry of `product`, if held.
    pub fn get(&self, product: u32) -> Option<&ProductHistory> {
        self.entries.iter().find(|e| e.product == product)
    }

    /// Whether the customer bought `product` (as far as the bounded profile knows).
    pub fn contains(&self, product: u32) -> bool {
        self.get(product).is_some()
    }

    /// Number of products held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing was bought.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
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
                self.entries.swap_remove(i);
            }
            self.entries.truncate(limit - 1);
        }
        self.entries.push(ProductHistory { product, occasions: 1, last_day: day, weight });
        ProfileChange::NewProduct
    }

    /// Products bought in `[from_day, before_day)`, most recent first, at most `max`.
    pub fn recent(&self, from_day: i32, before_day: i32, max: usize) -> Vec<u32> {
        let mut recent: Vec<&ProductHistory> =
            self.entries.iter().filter(|e| e.last_day >= from_day && e.last_day < before_day).collect();
        recent.sort_by(|a, b| b.last_day.cmp(&a.last_day).then(b.weight.total_cmp(&a.weight)));
        recent.into_iter().take(max).map(|e| e.product).collect()
    }

    /// Appends the snapshot layout: count u16, then (product u32, occasions u16, last_day i32, weight f32) each.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.entries.len() as u16).to_le_bytes());
        for e in &self.entries {
            out.extend_from_slice(&e.product.to_le_bytes());
            out.extend_from_slice(&e.occasions.to_le_bytes());
            out.extend_from_slice(&e.last_day.to_le_bytes());
            out.extend_from_slice(&e.weight.to_le_bytes());
        }
    }

    /// Reads what [`Self::encode`] wrote; `None` if cut short or not finite.
    pub fn decode(reader: &mut ByteReader<'_>) -> Option<Self> {
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
        Some(Self { entries })
    }
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
        let mut bytes = Vec::new();
        p.encode(&mut bytes);
        assert_eq!(PurchaseProfile::decode(&mut ByteReader::new(&bytes, 0)), Some(p.clone()));
        assert!(PurchaseProfile::decode(&mut ByteReader::new(&bytes[..bytes.len() - 1], 0)).is_none());
        let mut none = PurchaseProfile::default();
        none.record(9, 1, 1.0, 0);
        assert!(none.is_empty());
    }
}
