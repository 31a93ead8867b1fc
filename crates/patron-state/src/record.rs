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
//! - Money sums saturate at the 64-bit limit instead of wrapping or panicking.
//!   Validation bounds each amount at `patron_model::MAX_AMOUNT_MINOR` (10^14),
//!   so a sum reaches the limit only after some 92,000 maximal events of one
//!   customer; it then stays at the limit rather than turning negative.

use patron_model::codec::{self, ByteReader};
use patron_model::{Consent, CustomerId, Event, EventKind, Timestamp};
use patron_score::{LifecycleStage, ScoreInput, Scores, SegmentConfig, Segments, SpendHistory, lifecycle_stage};

use crate::catalog::ProductCatalog;
use crate::items::{ItemStats, basket_lines};
use crate::profile::PurchaseProfile;

/// Default number of products kept in a customer's purchase profile
/// (evaluated on UCI Online Retail: 16 products lost 10 points of HitRate@10
/// against 64; see `bench-results/recs/`).
pub const DEFAULT_HISTORY: usize = 64;

/// Where purchases feed the recommendation statistics.
#[derive(Clone, Copy, Debug)]
pub struct Tracking<'a> {
    /// Interns product ids.
    pub catalog: &'a ProductCatalog,
    /// Product statistics shared by all customers.
    pub items: &'a ItemStats,
    /// Products kept per customer profile.
    pub history_limit: usize,
}

/// A customer's state.
#[derive(Clone, Debug, PartialEq)]
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
    /// Latest model scores (streaming engine; None until first scored).
    pub scores: Option<Scores>,
    /// Labels from the latest population kernel run.
    pub segments: Option<Segments>,
    /// Purchase counts by product (bounded), for recommendations.
    pub purchases: PurchaseProfile,
}

/// What became of an event (the idempotency check is the book's, see
/// [`crate::dedup`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// First time this event id was seen for this customer.
    Accepted,
    /// Already applied; ignored.
    Duplicate,
    /// Older than the deduplication horizon remembers: refused, not applied.
    BeyondHorizon {
        /// The first day still remembered (days since 1970-01-01, UTC).
        remembered_from_day: i32,
    },
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
            scores: None,
            segments: None,
            purchases: PurchaseProfile::default(),
        }
    }

    /// Applies one event of this customer (without product statistics). The
    /// record does not check for duplicates: its book does.
    pub fn apply(&mut self, event: &Event) {
        self.apply_tracking(event, None);
    }

    /// Applies one event; with `tracking`, a purchase also updates this
    /// customer's purchase profile and the shared product statistics.
    pub fn apply_tracking(&mut self, event: &Event, tracking: Option<Tracking<'_>>) {
        match &event.kind {
            EventKind::Purchase(p) => {
                self.purchase(event.timestamp, p.revenue_minor);
                if let Some(t) = tracking.filter(|_| !p.items.is_empty()) {
                    let lines = basket_lines(p, t.catalog);
                    t.items.observe(&mut self.purchases, event.timestamp.day(), &lines, t.history_limit);
                }
            }
            EventKind::Refund(r) => {
                self.revenue_minor = self.revenue_minor.saturating_sub(r.amount_minor);
                self.refunded_minor = self.refunded_minor.saturating_add(r.amount_minor);
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
    }

    fn purchase(&mut self, at: Timestamp, value_minor: i64) {
        let day = at.day();
        self.orders += 1;
        self.revenue_minor = self.revenue_minor.saturating_add(value_minor);
        self.total_occasion_value_minor = self.total_occasion_value_minor.saturating_add(value_minor);
        self.first_purchase_at = Some(self.first_purchase_at.map_or(at, |t| t.min(at)));
        self.last_purchase_at = Some(self.last_purchase_at.map_or(at, |t| t.max(at)));
        match self.occasion_days.binary_search(&day) {
            Ok(0) => self.first_occasion_value_minor = self.first_occasion_value_minor.saturating_add(value_minor),
            Ok(_) => {}
            Err(pos) => {
                self.occasion_days.insert(pos, day);
                if pos == 0 {
                    self.first_occasion_value_minor = value_minor;
                }
            }
        }
    }

    /// Lifecycle stage from the latest scores: `prospect` before any purchase;
    /// without scores yet, `first_time` or `repeat`.
    pub fn lifecycle(&self, config: &SegmentConfig) -> LifecycleStage {
        self.lifecycle_with(self.scores.as_ref(), config)
    }

    /// [`Self::lifecycle`] with other scores (the HTTP view scores on read):
    /// the one rule every view of a customer applies.
    pub fn lifecycle_with(&self, scores: Option<&Scores>, config: &SegmentConfig) -> LifecycleStage {
        let repeats = self.occasions().saturating_sub(1);
        match (scores, self.has_purchased()) {
            (_, false) => LifecycleStage::Prospect,
            (Some(scores), true) => lifecycle_stage(repeats, scores.p_alive, config),
            (None, true) if repeats == 0 => LifecycleStage::FirstTime,
            (None, true) => LifecycleStage::Repeat,
        }
    }

    /// Whether the customer objected to every channel (each consent stated
    /// and false): no targeting view, recommendations included, shows them.
    pub fn objects_to_targeting(&self) -> bool {
        [self.consent.email, self.consent.sms, self.consent.push].iter().all(|c| *c == Some(false))
    }

    /// Whether the customer ever bought.
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
        (self.total_occasion_value_minor.saturating_sub(self.first_occasion_value_minor)) as f64 / f64::from(x)
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

impl CustomerRecord {
    /// Appends the durable part of the record (everything but scores and
    /// segments, which are recomputed) in the snapshot layout.
    pub fn encode(&self, out: &mut Vec<u8>) {
        codec::put_str(out, self.customer_id.as_str());
        out.extend_from_slice(&(self.occasion_days.len() as u32).to_le_bytes());
        for d in &self.occasion_days {
            out.extend_from_slice(&d.to_le_bytes());
        }
        for v in [self.first_occasion_value_minor, self.total_occasion_value_minor] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&self.orders.to_le_bytes());
        for v in [self.revenue_minor, self.refunded_minor] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        let time = |t: Option<Timestamp>| t.map_or(i64::MIN, Timestamp::millis).to_le_bytes();
        out.extend_from_slice(&time(self.first_purchase_at));
        out.extend_from_slice(&time(self.last_purchase_at));
        for c in [self.consent.email, self.consent.sms, self.consent.push] {
            out.push(codec::flag(c));
        }
        for t in self.consent_at {
            out.extend_from_slice(&time(t));
        }
        self.purchases.encode(out);
    }

    /// Reads a record written by [`Self::encode`] at `*pos`, advancing it;
    /// `None` if the bytes are not a valid record. `with_ring`: the record
    /// comes from a version 3 snapshot, whose records still carried a ring of
    /// 8 recent event fingerprints and its two cursor bytes (skipped).
    pub fn decode(bytes: &[u8], pos: &mut usize, with_ring: bool) -> Option<Self> {
        let mut r = ByteReader::new(bytes, *pos);
        let customer_id = CustomerId::new(r.str()?).ok()?;
        let time = |r: &mut ByteReader<'_>| r.i64().map(|v| (v != i64::MIN).then(|| Timestamp::from_millis(v)));
        let days = r.u32()? as usize;
        let mut occasion_days = Vec::with_capacity(days.min(bytes.len() / 4));
        for _ in 0..days {
            occasion_days.push(r.u32()? as i32);
        }
        if occasion_days.windows(2).any(|w| w[0] >= w[1]) {
            return None;
        }
        let mut record = CustomerRecord::new(customer_id);
        record.occasion_days = occasion_days;
        record.first_occasion_value_minor = r.i64()?;
        record.total_occasion_value_minor = r.i64()?;
        record.orders = r.u64()?;
        record.revenue_minor = r.i64()?;
        record.refunded_minor = r.i64()?;
        record.first_purchase_at = time(&mut r)?;
        record.last_purchase_at = time(&mut r)?;
        record.consent = Consent { email: r.flag()?, sms: r.flag()?, push: r.flag()? };
        for slot in &mut record.consent_at {
            *slot = time(&mut r)?;
        }
        if with_ring {
            r.take(8 * 8 + 2)?;
        }
        record.purchases = PurchaseProfile::decode(&mut r)?;
        *pos = r.position();
        Some(record)
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
    fn records_round_trip_through_the_snapshot_codec_and_truncation_is_caught() {
        let mut r = CustomerRecord::new(CustomerId::new("c-42").unwrap());
        for (i, day) in [
            "1997-01-01",
            "1997-02-01",
            "1997-01-01",
            "1997-03-09",
            "1997-04-01",
            "1997-05-01",
            "1997-06-01",
            "1997-07-01",
            "1997-08-01",
            "1997-09-01",
        ]
        .iter()
        .enumerate()
        {
            r.apply(&purchase(&format!("e{i}"), day, "12.34"));
        }
        let consent = Validator::new(CurrencyTable::default())
            .decode(br#"{"type":"consent","event_id":"k","customer_id":"c","timestamp":"1997-02-02T00:00:00Z","channels":{"email":true,"sms":false}}"#)
            .unwrap();
        r.apply(&consent);
        let mut bytes = Vec::new();
        r.encode(&mut bytes);
        let mut pos = 0;
        assert_eq!(CustomerRecord::decode(&bytes, &mut pos, false), Some(r.clone()));
        assert_eq!(pos, bytes.len());
        for cut in 0..bytes.len() {
            assert!(CustomerRecord::decode(&bytes[..cut], &mut 0, false).is_none(), "cut at {cut}");
        }
    }

    #[test]
    fn purchases_feed_the_profile_and_product_statistics_and_round_trip() {
        let catalog = ProductCatalog::default();
        let items = ItemStats::default();
        let tracking = Tracking { catalog: &catalog, items: &items, history_limit: 5 };
        let validator = Validator::new(CurrencyTable::default());
        let mut r = CustomerRecord::new(CustomerId::new("c").unwrap());
        for i in 0..10 {
            let json = format!(
                r#"{{"type":"purchase","event_id":"o{i}","customer_id":"c","timestamp":"2025-01-{:02}T10:00:00Z","items":[{{"sku":"a{i}","price":"1"}},{{"sku":"shared","price":"2","quantity":3}}]}}"#,
                i + 1
            );
            let event = validator.decode(json.as_bytes()).unwrap();
            r.apply_tracking(&event, Some(tracking));
        }
        assert_eq!(r.purchases.len(), 5, "bounded by the history limit");
        let shared = catalog.intern(&patron_model::ProductId::new("shared").unwrap());
        assert_eq!(r.purchases.get(shared).map(|e| e.occasions), Some(10));
        let stats = items.product(shared).unwrap();
        assert_eq!((stats.orders, stats.customers, stats.repeat_customers, stats.units), (10, 1, 1, 30));
        assert_eq!(stats.revenue_minor, 10 * 600);
        assert_eq!(catalog.len(), 11, "ten distinct products plus the shared one");
        let mut bytes = Vec::new();
        r.encode(&mut bytes);
        assert_eq!(CustomerRecord::decode(&bytes, &mut 0, false), Some(r));
    }
}
