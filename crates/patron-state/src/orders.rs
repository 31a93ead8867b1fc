//! Orders open to refunds: what remains of each recent order, so that a
//! refund naming its order nets against it.
//!
//! A refund that names its order lowers that order's occasion value, the
//! number the spend model (Gamma-Gamma) is fitted on, and not only the
//! customer's revenue; a refund larger than what remains of its order is
//! refused with the amount that remains. So a 5,000 refund of a 19 order, or
//! the cancellation of an 80,995-unit order, cannot leave a customer with a
//! huge occasion value and a tiny (or negative) revenue.
//!
//! Each shard keeps, per order, a keyed 64-bit fingerprint of
//! `(customer, order id)`, the order's UTC day and what remains of its value:
//! 24 bytes, in tables split like the deduplication index. The ledger lives
//! inside that index ([`crate::dedup::DedupIndex`]) and shares its horizon and
//! its cut: orders older than the first remembered day are forgotten at the
//! same snapshot cut as event ids, so recovery makes the decisions the live
//! engine made. A refund naming an order no longer remembered falls back to
//! lowering revenue only (see `crate::book`).

use patron_model::CustomerId;
use patron_model::codec::{self, ByteReader};

use crate::dedup::{Fingerprinted, Parts};

/// One order's remaining value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct OpenOrder {
    fingerprint: u64,
    /// What is left after refunds, minor units of the base currency.
    remaining_minor: i64,
    /// The UTC day of its purchase (the occasion it belongs to).
    day: i32,
}

impl Fingerprinted for OpenOrder {
    fn fingerprint(&self) -> u64 {
        self.fingerprint
    }
}

/// An order a refund can net against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OrderBalance {
    /// What remains of the order, minor units.
    pub remaining_minor: i64,
    /// The UTC day of the order's purchase.
    pub day: i32,
}

/// One shard's orders open to refunds.
#[derive(Clone, Debug)]
pub struct OrderLedger {
    table: Parts<OpenOrder>,
    /// Orders before this day may have been forgotten (or never recorded:
    /// state restored from a snapshot older than the ledger).
    known_from_day: i32,
}

impl Default for OrderLedger {
    fn default() -> Self {
        Self { table: Parts::new(), known_from_day: i32::MIN }
    }
}

impl PartialEq for OrderLedger {
    fn eq(&self, other: &Self) -> bool {
        self.known_from_day == other.known_from_day
            && self.table.len() == other.table.len()
            && self.table.iter().all(|o| other.table.get(o.fingerprint) == Some(o))
    }
}

impl OrderLedger {
    /// Records a purchase of `value_minor` on `day` for the order with
    /// `fingerprint`; another purchase event of the same order adds to it.
    pub fn open(&mut self, fingerprint: u64, day: i32, value_minor: i64) {
        match self.table.get_mut(fingerprint) {
            Some(order) => order.remaining_minor = order.remaining_minor.saturating_add(value_minor),
            None => {
                self.table.insert(OpenOrder { fingerprint, remaining_minor: value_minor, day });
            }
        }
    }

    /// The order with `fingerprint`, if remembered.
    pub fn balance(&self, fingerprint: u64) -> Option<OrderBalance> {
        self.table.get(fingerprint).map(|o| OrderBalance { remaining_minor: o.remaining_minor, day: o.day })
    }

    /// Takes `amount_minor` off the order (checked by the caller against
    /// [`Self::balance`]).
    pub fn refund(&mut self, fingerprint: u64, amount_minor: i64) {
        if let Some(order) = self.table.get_mut(fingerprint) {
            order.remaining_minor = order.remaining_minor.saturating_sub(amount_minor);
        }
    }

    /// Whether an order of `day` would still be here: before that day,
    /// orders may have been forgotten.
    pub fn remembers_day(&self, day: i32) -> bool {
        day >= self.known_from_day
    }

    /// Forgets orders before `day`; returns how many.
    pub(crate) fn forget_before(&mut self, day: i32) -> usize {
        self.known_from_day = self.known_from_day.max(day);
        let before = self.table.len();
        self.table.retain(|o| o.day >= day);
        before - self.table.len()
    }

    /// Adds the orders of `other` this ledger lacks.
    pub(crate) fn absorb(&mut self, other: &OrderLedger, from_day: i32) {
        self.known_from_day = self.known_from_day.max(other.known_from_day);
        for order in other.table.iter().filter(|o| o.day >= from_day) {
            self.table.insert(*order);
        }
    }

    /// Orders remembered.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether no order is remembered.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Bytes the tables occupy (entries and control bytes).
    pub fn memory_bytes(&self) -> usize {
        self.table.capacity() * (std::mem::size_of::<OpenOrder>() + 1)
    }

    /// Appends the ledger: `known_from_day zigzag │ count u64 │
    /// (fingerprint u64, remaining zigzag, day zigzag)…`.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        codec::put_zigzag(out, i64::from(self.known_from_day));
        out.extend_from_slice(&(self.table.len() as u64).to_le_bytes());
        for o in self.table.iter() {
            out.extend_from_slice(&o.fingerprint.to_le_bytes());
            codec::put_zigzag(out, o.remaining_minor);
            codec::put_zigzag(out, i64::from(o.day));
        }
    }

    /// Reads what [`Self::encode`] wrote; `None` if the bytes are not a ledger.
    pub(crate) fn decode(r: &mut ByteReader<'_>) -> Option<Self> {
        let known_from_day = r.zigzag_i32()?;
        let count = usize::try_from(r.u64()?).ok()?;
        let mut ledger = Self { known_from_day, ..Self::default() };
        ledger.table.reserve(count.min(r.remaining() / 10));
        for _ in 0..count {
            let fingerprint = r.u64()?;
            let remaining_minor = r.zigzag()?;
            let day = r.zigzag_i32()?;
            if !ledger.table.insert(OpenOrder { fingerprint, remaining_minor, day }) {
                return None;
            }
        }
        Some(ledger)
    }
}

/// An amount in minor units, shown in major units.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Amount {
    /// Minor units of the base currency.
    pub minor: i64,
    /// Digits of the minor unit (2 for EUR).
    pub exponent: u32,
}

impl std::fmt::Display for Amount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&patron_model::Decimal { mantissa: i128::from(self.minor), scale: self.exponent }.to_text())
    }
}

/// Why a refund was refused (not applied, its event id not used up).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RefundRefusal {
    /// The customer never bought anything here.
    #[error("customer_id: {0} has no purchases, so there is nothing to refund")]
    NoPurchases(CustomerId),
    /// The refund names an order this customer never placed.
    #[error(
        "order_id: customer {customer} has no order {order:?} (a refund nets against its order, which must be sent first)"
    )]
    UnknownOrder {
        /// The customer.
        customer: CustomerId,
        /// The order named.
        order: Box<str>,
    },
    /// A refund of what remains of an order already refunded in full.
    #[error("order_id: order {0:?} was already refunded in full")]
    NothingLeft(Box<str>),
    /// A refund of what remains of an order too old to be remembered.
    #[error(
        "amount: missing, and order {0:?} is older than the orders still remembered (the deduplication horizon), so what remains of it is unknown; send the amount"
    )]
    OrderForgotten(Box<str>),
    /// More than remains of the order.
    #[error("amount: {amount} exceeds the {remaining} that remains of order {order:?}")]
    ExceedsOrder {
        /// The order named.
        order: Box<str>,
        /// The refund.
        amount: Amount,
        /// What remains of the order.
        remaining: Amount,
    },
    /// More than the customer paid, net of earlier refunds.
    #[error("amount: {amount} exceeds the customer's net revenue of {revenue} (what they paid less earlier refunds)")]
    ExceedsRevenue {
        /// The refund.
        amount: Amount,
        /// The customer's revenue less earlier refunds.
        revenue: Amount,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refund_lowers_what_remains_and_a_second_purchase_of_the_order_adds_to_it() {
        let mut ledger = OrderLedger::default();
        ledger.open(7, 100, 1_900);
        ledger.open(7, 101, 100);
        ledger.refund(7, 500);
        assert_eq!(ledger.balance(7), Some(OrderBalance { remaining_minor: 1_500, day: 100 }));
        assert_eq!(ledger.balance(8), None);
    }

    #[test]
    fn the_ledger_round_trips_and_forgets_by_day() {
        let mut ledger = OrderLedger::default();
        for i in 0..1_000u64 {
            ledger.open(i.wrapping_mul(0x9e37_79b9_7f4a_7c15), (i % 50) as i32, i as i64 * 3);
        }
        let mut bytes = Vec::new();
        ledger.encode(&mut bytes);
        let mut reader = ByteReader::new(&bytes, 0);
        let back = OrderLedger::decode(&mut reader).expect("decodes");
        assert_eq!((back == ledger, reader.remaining()), (true, 0));
        assert_eq!(ledger.forget_before(25), 500);
        assert!(ledger.balance(0).is_none(), "day 0 was forgotten");
        assert_eq!((ledger.remembers_day(24), ledger.remembers_day(25)), (false, true));
        assert!(OrderLedger::decode(&mut ByteReader::new(&bytes[..bytes.len() - 1], 0)).is_none());
    }
}
