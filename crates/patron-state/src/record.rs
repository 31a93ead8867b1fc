//! One customer's running summary, updated per event in O(log occasions).
//!
//! Invariants:
//! - `occasion_days` is sorted and unique: purchases on the same UTC calendar
//!   day are one occasion (the BTYD convention), in whatever order they arrive.
//! - `first_occasion_value_minor` is the value of the earliest occasion day, so
//!   the mean repeat value is `(total − first) / x` exactly even when an earlier
//!   purchase arrives late.
//! - Money is base-currency minor units; refunds reduce `revenue_minor` but not
//!   the occasion values the spend model is fitted on (refunds rarely name the
//!   occasion they undo).

use patron_model::{Consent, CustomerId, Event, EventId, EventKind, Timestamp};
use patron_score::{ScoreInput, Scores, Segments, SpendHistory};

/// How many recent event ids per customer are remembered for idempotency.
pub const DEDUP_WINDOW: usize = 8;

/// A customer's state.
#[derive(Clone, Debug)]
pub struct CustomerRecord {
    /// The customer.
    pub customer_id: CustomerId,
    occasion_days: Vec<i32>,
    first_occasion_value_minor: i64,
    total_occasion_value_minor: i64,
    /// Purchase events (orders).
    pub orders: u64,
    /// Gross purchases minus refunds, minor units.
    pub revenue_minor: i64,
    /// Refunded so far, minor units.
    pub refunded_minor: i64,
    /// Earliest purchase time.
    pub first_purchase_at: Option<Timestamp>,
    /// Latest purchase time.
    pub last_purchase_at: Option<Timestamp>,
    /// Consent per channel (`None`: never stated).
    pub consent: Consent,
    consent_at: [Option<Timestamp>; 3],
    recent_event_ids: [u64; DEDUP_WINDOW],
    recent_next: usize,
    recent_len: usize,
    /// Latest model scores (streaming engine; None until first scored).
    pub scores: Option<Scores>,
    /// Labels from the latest population kernel run.
    pub segments: Option<Segments>,
}

/// Whether an event changed the record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// First time this event id was seen for this customer.
    Accepted,
    /// Already applied; ignored.
    Duplicate,
}

/// 64-bit FNV-1a of the event id. Fingerprints outlive the process (they will
/// be in snapshots), so the hash is fixed by definition rather than std's
/// `DefaultHasher`, whose algorithm may change between Rust releases.
fn fingerprint(id: &EventId) -> u64 {
    id.as_str().bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

impl CustomerRecord {
    /// An empty record.
    pub fn new(customer_id: CustomerId) -> Self {
        Self {
            customer_id,
            occasion_days: Vec::new(),
            first_occasion_value_minor: 0,
            total_occasion_value_minor: 0,
            orders: 0,
            revenue_minor: 0,
            refunded_minor: 0,
            first_purchase_at: None,
            last_purchase_at: None,
            consent: Consent::default(),
            consent_at: [None; 3],
            recent_event_ids: [0; DEDUP_WINDOW],
            recent_next: 0,
            recent_len: 0,
            scores: None,
            segments: None,
        }
    }

    /// Applies one event of this customer.
    pub fn apply(&mut self, event: &Event) -> Applied {
        let fp = fingerprint(&event.event_id);
        if self.recent_event_ids[..self.recent_len].contains(&fp) {
            return Applied::Duplicate;
        }
        self.recent_event_ids[self.recent_next] = fp;
        self.recent_next = (self.recent_next + 1) % DEDUP_WINDOW;
        self.recent_len = (self.recent_len + 1).min(DEDUP_WINDOW);
        match &event.kind {
            EventKind::Purchase(p) => self.purchase(event.timestamp, p.revenue_minor),
            EventKind::Refund(r) => {
                self.revenue_minor -= r.amount_minor;
                self.refunded_minor += r.amount_minor;
            }
            EventKind::Consent(c) => {
                // Last writer by event time wins, per channel.
                for (slot, (state, new)) in [
                    (&mut self.consent.email, c.email),
                    (&mut self.consent.sms, c.sms),
                    (&mut self.consent.push, c.push),
                ]
                .into_iter()
                .enumerate()
                {
                    if let Some(value) = new
                        && self.consent_at[slot].is_none_or(|at| at <= event.timestamp)
                    {
                        *state = Some(value);
                        self.consent_at[slot] = Some(event.timestamp);
                    }
                }
            }
        }
        Applied::Accepted
    }

    fn purchase(&mut self, at: Timestamp, value_minor: i64) {
        let day = at.day();
        self.orders += 1;
        self.revenue_minor += value_minor;
        self.total_occasion_value_minor += value_minor;
        self.first_purchase_at = Some(self.first_purchase_at.map_or(at, |t| t.min(at)));
        self.last_purchase_at = Some(self.last_purchase_at.map_or(at, |t| t.max(at)));
        match self.occasion_days.binary_search(&day) {
            Ok(0) => self.first_occasion_value_minor += value_minor,
            Ok(_) => {}
            Err(pos) => {
                self.occasion_days.insert(pos, day);
                if pos == 0 {
                    self.first_occasion_value_minor = value_minor;
                }
            }
        }
    }

    /// Whether the customer has bought anything.
    pub fn has_purchased(&self) -> bool {
        !self.occasion_days.is_empty()
    }

    /// Purchase occasions (distinct UTC days with a purchase).
    pub fn occasions(&self) -> u32 {
        self.occasion_days.len() as u32
    }

    /// Day of the first occasion.
    pub fn first_day(&self) -> Option<i32> {
        self.occasion_days.first().copied()
    }

    /// Day of the last occasion.
    pub fn last_day(&self) -> Option<i32> {
        self.occasion_days.last().copied()
    }

    /// Value of all purchase occasions, minor units (gross of refunds).
    pub fn total_occasion_value_minor(&self) -> i64 {
        self.total_occasion_value_minor
    }

    /// Mean value of the repeat occasions in minor units (0 without repeats).
    pub fn mean_repeat_value_minor(&self) -> f64 {
        let x = self.occasions().saturating_sub(1);
        if x == 0 {
            return 0.0;
        }
        (self.total_occasion_value_minor - self.first_occasion_value_minor) as f64 / f64::from(x)
    }

    /// Model inputs as of `now_day`; `None` for customers who never bought.
    /// `minor_per_major` converts spend to major units.
    pub fn score_input(&self, now_day: i32, minor_per_major: f64) -> Option<ScoreInput> {
        let (first, last) = (self.first_day()?, self.last_day()?);
        let frequency = self.occasions() - 1;
        let recency_days = (last - first) as u32;
        let tenure_days = ((now_day - first).max(last - first)) as u32;
        Some(ScoreInput {
            frequency,
            recency_days,
            tenure_days,
            spend: SpendHistory {
                repeat_occasions: frequency,
                mean_repeat_value: self.mean_repeat_value_minor() / minor_per_major,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use patron_model::{CurrencyTable, Validator};

    fn purchase(id: &str, at: &str, revenue: &str) -> Event {
        let json = format!(
            r#"{{"type":"purchase","event_id":"{id}","customer_id":"c","timestamp":"{at}T12:00:00Z","revenue":"{revenue}"}}"#
        );
        Validator::new(CurrencyTable::default()).decode(json.as_bytes()).unwrap()
    }

    #[test]
    fn same_day_purchases_are_one_occasion_and_order_does_not_matter() {
        let events = [
            purchase("a", "1997-01-01", "10"),
            purchase("b", "1997-01-01", "5"),
            purchase("c", "1997-02-01", "20"),
            purchase("d", "1997-03-01", "40"),
        ];
        let mut in_order = CustomerRecord::new(CustomerId::new("c").unwrap());
        let mut reversed = in_order.clone();
        for e in &events {
            in_order.apply(e);
        }
        for e in events.iter().rev() {
            reversed.apply(e);
        }
        for r in [&in_order, &reversed] {
            assert_eq!(r.occasions(), 3);
            assert_eq!(r.orders, 4);
            assert_eq!(r.revenue_minor, 7500);
            assert_eq!(r.mean_repeat_value_minor(), 3000.0, "first day (15.00) excluded");
            let input = r.score_input(r.first_day().unwrap() + 100, 100.0).unwrap();
            assert_eq!((input.frequency, input.recency_days, input.tenure_days), (2, 59, 100));
        }
    }

    #[test]
    fn fingerprint_is_the_published_fnv1a() {
        // Reference value of FNV-1a 64 for "a" (Fowler/Noll/Vo test vectors).
        assert_eq!(fingerprint(&EventId::new("a").unwrap()), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn duplicate_event_ids_apply_once() {
        let mut r = CustomerRecord::new(CustomerId::new("c").unwrap());
        assert_eq!(r.apply(&purchase("a", "1997-01-01", "10")), Applied::Accepted);
        assert_eq!(r.apply(&purchase("a", "1997-01-01", "10")), Applied::Duplicate);
        assert_eq!(r.revenue_minor, 1000);
    }
}
