//! One customer's running summary, updated per event in O(log occasions).
//!
//! A customer is split by how it is read:
//! - [`Summary`]: fixed-size numbers (80 bytes, `Copy`), what the `customers`
//!   table is derived from. The state keeps summaries in columnar chunks that
//!   SQL scans share (see `crate::chunk`).
//! - [`History`]: what only the writer reads: the occasion days (to place a
//!   late purchase) and the bounded purchase profile (recommendations).
//! - [`CustomerRecord`]: both, owned, with the id, scores and labels: the form
//!   single-customer views (HTTP, recommendations, tests) work with.
//!
//! Invariants:
//! - `History::occasion_days` is sorted and unique: purchases on the same UTC
//!   calendar day are one occasion (the BTYD convention), in whatever order
//!   they arrive; `Summary::occasions` is its length.
//! - `first_occasion_value_minor` is the value of the earliest occasion day, so
//!   the mean repeat value is `(total − first) / x` exactly even when an earlier
//!   purchase arrives late.
//! - Money is base-currency minor units. A refund that names a remembered
//!   order ([`crate::orders`]) lowers that order's occasion value as well as
//!   `revenue_minor`, so the spend model is fitted on what was kept; a refund
//!   without an order lowers `revenue_minor` only (it does not say which
//!   occasion it undoes).
//! - Money sums saturate at the 64-bit limit instead of wrapping or panicking.
//!   Validation bounds each amount at `patron_model::MAX_AMOUNT_MINOR` (10^14),
//!   so a sum reaches the limit only after some 92,000 maximal events of one
//!   customer; it then stays at the limit rather than turning negative.

use patron_model::codec::{self, ByteReader};
use patron_model::{Acquisition, ChannelConsent, Consent, CustomerId, Event, EventKind, Timestamp};
use patron_score::{LifecycleStage, ScoreInput, Scores, SegmentConfig, Segments, SpendHistory, lifecycle_stage};

use crate::catalog::ProductCatalog;
use crate::items::{ItemStats, Observed, basket_lines};
use crate::profile::PurchaseProfile;

/// Default number of products kept in a customer's purchase profile
/// (evaluated on UCI Online Retail: 16 products lost 10 points of HitRate@10
/// against 64; see `bench-results/recs/`).
pub const DEFAULT_HISTORY: usize = 64;

/// "No time" in the millisecond fields of a [`Summary`].
const NO_TIME: i64 = i64::MIN;

/// Where purchases feed the recommendation statistics.
#[derive(Debug)]
pub struct Tracking<'a> {
    /// Interns product ids.
    pub catalog: &'a ProductCatalog,
    /// Product statistics shared by all customers.
    pub items: &'a ItemStats,
    /// Products kept per customer profile.
    pub history_limit: usize,
    /// Where the purchase waits for [`ItemStats::apply`].
    pub observed: &'a mut Observed,
}

/// A customer's fixed-size running summary (80 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summary {
    /// Purchase events (orders).
    pub orders: u64,
    occasions: u32,
    /// The acquisition channel's code ([`crate::channel`]), or `NO_CHANNEL`.
    acquisition_channel: u32,
    /// What it cost to win the customer, minor units; [`NO_COST`]: not stated.
    acquisition_cost_minor: i64,
    /// When each channel's consent was last stated, in seconds since
    /// 1990-01-01 (validation refuses earlier events; `u32` reaches 2126),
    /// 0: never. Consent changes within one second are ordered by arrival.
    consent_at_s: [u32; 3],
    /// Consent per channel (`None`: never stated).
    pub consent: Consent,
    first_occasion_value_minor: i64,
    total_occasion_value_minor: i64,
    /// Gross purchases minus refunds, minor units (what was refunded without
    /// naming an order is the difference from `total_occasion_value_minor`,
    /// which is net of refunds that named theirs, so it needs no field).
    pub revenue_minor: i64,
    first_purchase_ms: i64,
    last_purchase_ms: i64,
}

/// "Not stated" in [`Summary`]'s acquisition cost (costs are never negative).
const NO_COST: i64 = -1;

/// 1990-01-01T00:00:00Z in Unix milliseconds: the epoch of [`Summary`]'s consent times.
const CONSENT_EPOCH_MS: i64 = 631_152_000_000;

#[cfg(test)]
impl Summary {
    /// A buyer with `occasions` purchase days and nothing else, for tests of the labels.
    pub(crate) fn buyer_of_occasions(occasions: u32) -> Self {
        Self { orders: u64::from(occasions), occasions, ..Self::default() }
    }
}

/// An event time as [`Summary`] keeps consent times (1 or more: 0 is "never").
fn consent_second(at: Timestamp) -> u32 {
    u32::try_from((at.millis() - CONSENT_EPOCH_MS).div_euclid(1000)).unwrap_or(u32::MAX).max(1)
}

impl Default for Summary {
    fn default() -> Self {
        Self {
            orders: 0,
            occasions: 0,
            acquisition_channel: crate::channel::NO_CHANNEL,
            acquisition_cost_minor: NO_COST,
            consent: Consent::default(),
            first_occasion_value_minor: 0,
            total_occasion_value_minor: 0,
            revenue_minor: 0,
            first_purchase_ms: NO_TIME,
            last_purchase_ms: NO_TIME,
            consent_at_s: [0; 3],
        }
    }
}

/// What only the writer of a customer reads.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct History {
    occasion_days: Vec<i32>,
    /// Purchase counts by product (bounded, and what it evicted), for recommendations.
    pub purchases: PurchaseProfile,
    /// Consent on channels beyond email, sms and push, in channel-code
    /// order.
    #[expect(clippy::box_collection, reason = "8 bytes for the many customers without any, against 24 for a Vec")]
    other_consent: Option<Box<Vec<OtherConsent>>>,
}

/// Consent on a channel beyond email, sms and push.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OtherConsent {
    /// The channel's code ([`crate::channel`]).
    channel: u32,
    /// Given or refused.
    pub given: bool,
    /// When it was stated, as [`Summary`] keeps consent times.
    at_s: u32,
}

impl OtherConsent {
    /// The channel's name.
    pub fn channel(&self) -> std::sync::Arc<str> {
        crate::channel::name(self.channel).unwrap_or_else(|| "".into())
    }

    /// When it was stated.
    pub fn stated_at(&self) -> Timestamp {
        Timestamp::from_millis(CONSENT_EPOCH_MS + i64::from(self.at_s) * 1000)
    }
}

impl History {
    /// The UTC days with at least one purchase, ascending.
    pub fn occasion_days(&self) -> &[i32] {
        &self.occasion_days
    }

    /// Consent on channels beyond email, sms and push.
    pub fn other_consent(&self) -> &[OtherConsent] {
        self.other_consent.as_deref().map_or(&[], Vec::as_slice)
    }

    /// Applies consent on other channels stated at `at`: per channel, the
    /// last statement by event time wins (as for the three).
    fn apply_other_consent(&mut self, stated: &[ChannelConsent], at: Timestamp) {
        if stated.is_empty() {
            return;
        }
        let at_s = consent_second(at);
        let kept = self.other_consent.get_or_insert_with(Default::default);
        for c in stated {
            let channel = crate::channel::intern(&c.channel);
            match kept.binary_search_by_key(&channel, |o| o.channel) {
                Ok(i) if kept[i].at_s <= at_s => kept[i] = OtherConsent { channel, given: c.given, at_s },
                Ok(_) => {}
                Err(i) => kept.insert(i, OtherConsent { channel, given: c.given, at_s }),
            }
        }
    }

    /// Heap bytes held (occasion days, the profile's entries and evicted
    /// products, other channels' consent).
    pub fn heap_bytes(&self) -> usize {
        let other = self.other_consent.as_ref().map_or(0, |o| 24 + o.capacity() * std::mem::size_of::<OtherConsent>());
        self.occasion_days.capacity() * 4 + self.purchases.heap_bytes() + other
    }
}

/// What became of an event (the idempotency check is the book's, see
/// [`crate::dedup`]).
#[derive(Clone, Debug, PartialEq, Eq)]
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
    /// Refused with a reason (a campaign response the campaign does not
    /// accept, a refund beyond what was paid): not applied.
    Refused(Refusal),
}

/// Why an event was refused after validation: what the state knows makes it
/// impossible to apply. Its event id is not used up.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// A campaign response.
    #[error(transparent)]
    Response(#[from] crate::campaigns::ResponseRefusal),
    /// A refund.
    #[error(transparent)]
    Refund(#[from] crate::orders::RefundRefusal),
}

fn time(ms: i64) -> Option<Timestamp> {
    (ms != NO_TIME).then(|| Timestamp::from_millis(ms))
}

impl Summary {
    /// Applies one event of this customer; with `tracking`, a purchase also
    /// updates the purchase profile in `history` and the shared product
    /// statistics when `tracking`'s batch is applied. (Duplicates are the book's concern.)
    pub fn apply(&mut self, history: &mut History, event: &Event, tracking: Option<Tracking<'_>>) {
        match &event.kind {
            EventKind::Purchase(p) => {
                self.purchase(history, event.timestamp, p.revenue_minor);
                if let Some(acquisition) = &p.acquisition {
                    self.acquired(acquisition);
                }
                if let Some(t) = tracking.filter(|_| !p.items.is_empty()) {
                    let lines = basket_lines(p, t.catalog);
                    t.items.record(t.observed, &mut history.purchases, event.timestamp.day(), lines, t.history_limit);
                }
            }
            // Without its order (which only the book knows), a refund lowers
            // revenue; one of "what remains" needs the book to settle it.
            EventKind::Refund(r) => self.refund_revenue(r.amount_minor.unwrap_or(0)),
            EventKind::Consent(c) => {
                self.apply_consent(&c.channels, event.timestamp);
                history.apply_other_consent(&c.other, event.timestamp);
            }
            EventKind::Customer(acquisition) => self.acquired(acquisition),
            // Its effect (membership, consent) needs the campaign: the book applies it.
            EventKind::CampaignResponse(_) => {}
        }
    }

    /// Applies consent stated at `at`: per channel, the last statement by
    /// event time wins.
    pub fn apply_consent(&mut self, c: &Consent, at: Timestamp) {
        let at = consent_second(at);
        for (slot, (state, new)) in
            [(&mut self.consent.email, c.email), (&mut self.consent.sms, c.sms), (&mut self.consent.push, c.push)]
                .into_iter()
                .enumerate()
        {
            if let Some(value) = new
                && self.consent_at_s[slot] <= at
            {
                *state = Some(value);
                self.consent_at_s[slot] = at;
            }
        }
    }

    /// Takes what an event states about the acquisition; the latest
    /// statement applied wins, field by field.
    fn acquired(&mut self, acquisition: &Acquisition) {
        if let Some(cost) = acquisition.cost_minor {
            self.acquisition_cost_minor = cost;
        }
        if let Some(channel) = &acquisition.channel {
            self.acquisition_channel = crate::channel::intern(channel);
        }
    }

    /// Applies a refund of `amount_minor` netted against an order of
    /// `order_day`: that occasion's value drops with the revenue.
    pub fn refund_order(&mut self, history: &History, order_day: i32, amount_minor: i64) {
        self.revenue_minor = self.revenue_minor.saturating_sub(amount_minor);
        self.total_occasion_value_minor = self.total_occasion_value_minor.saturating_sub(amount_minor).max(0);
        if history.occasion_days.first() == Some(&order_day) {
            self.first_occasion_value_minor =
                self.first_occasion_value_minor.saturating_sub(amount_minor).clamp(0, self.total_occasion_value_minor);
        }
    }

    /// Applies a refund of `amount_minor` that names no remembered order:
    /// revenue drops, no occasion's value does.
    pub fn refund_revenue(&mut self, amount_minor: i64) {
        self.revenue_minor = self.revenue_minor.saturating_sub(amount_minor);
    }

    /// Refunded without naming an order, minor units.
    pub fn refunds_without_order_minor(&self) -> i64 {
        self.total_occasion_value_minor.saturating_sub(self.revenue_minor)
    }

    /// What it cost to win the customer, minor units, when stated.
    pub fn acquisition_cost_minor(&self) -> Option<i64> {
        (self.acquisition_cost_minor != NO_COST).then_some(self.acquisition_cost_minor)
    }

    /// The channel's code ([`crate::channel`]); 0 when no channel was stated.
    pub fn acquisition_channel_code(&self) -> u32 {
        self.acquisition_channel
    }

    fn purchase(&mut self, history: &mut History, at: Timestamp, value_minor: i64) {
        let day = at.day();
        self.orders += 1;
        self.revenue_minor = self.revenue_minor.saturating_add(value_minor);
        self.total_occasion_value_minor = self.total_occasion_value_minor.saturating_add(value_minor);
        let ms = at.millis();
        self.first_purchase_ms = if self.first_purchase_ms == NO_TIME { ms } else { self.first_purchase_ms.min(ms) };
        self.last_purchase_ms = self.last_purchase_ms.max(ms);
        match history.occasion_days.binary_search(&day) {
            Ok(0) => self.first_occasion_value_minor = self.first_occasion_value_minor.saturating_add(value_minor),
            Ok(_) => {}
            Err(pos) => {
                history.occasion_days.insert(pos, day);
                self.occasions += 1;
                if pos == 0 {
                    self.first_occasion_value_minor = value_minor;
                }
            }
        }
    }

    /// Earliest purchase time.
    pub fn first_purchase_at(&self) -> Option<Timestamp> {
        time(self.first_purchase_ms)
    }

    /// Latest purchase time.
    pub fn last_purchase_at(&self) -> Option<Timestamp> {
        time(self.last_purchase_ms)
    }

    /// Lifecycle stage with `scores` (the latest, or fresh ones): `prospect`
    /// before any purchase; without scores yet, `first_time` or `repeat`. The
    /// one rule every view of a customer applies.
    pub fn lifecycle_with(&self, scores: Option<&Scores>, config: &SegmentConfig) -> LifecycleStage {
        let repeats = self.occasions.saturating_sub(1);
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
        self.occasions > 0
    }

    /// Purchase occasions (distinct UTC days with a purchase).
    pub fn occasions(&self) -> u32 {
        self.occasions
    }

    /// Day of the first occasion.
    pub fn first_day(&self) -> Option<i32> {
        self.first_purchase_at().map(Timestamp::day)
    }

    /// Day of the last occasion.
    pub fn last_day(&self) -> Option<i32> {
        self.last_purchase_at().map(Timestamp::day)
    }

    /// Value of all purchase occasions, minor units (gross of refunds).
    pub fn total_occasion_value_minor(&self) -> i64 {
        self.total_occasion_value_minor
    }

    /// Mean value of the repeat occasions in minor units (0 without repeats).
    pub fn mean_repeat_value_minor(&self) -> f64 {
        let x = self.occasions.saturating_sub(1);
        if x == 0 {
            return 0.0;
        }
        (self.total_occasion_value_minor.saturating_sub(self.first_occasion_value_minor)) as f64 / f64::from(x)
    }

    /// Model inputs as of `now_day`; `None` for customers who never bought.
    /// `minor_per_major` converts spend to major units.
    pub fn score_input(&self, now_day: i32, minor_per_major: f64) -> Option<ScoreInput> {
        let (first, last) = (self.first_day()?, self.last_day()?);
        let frequency = self.occasions.saturating_sub(1);
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
            now_day: now_day.max(last),
        })
    }
}

/// A customer's state, owned: the id, summary, history, scores and labels.
/// Derefs to its [`Summary`].
#[derive(Clone, Debug, PartialEq)]
pub struct CustomerRecord {
    /// The customer.
    pub customer_id: CustomerId,
    /// The running summary.
    pub summary: Summary,
    /// Occasion days and purchase profile.
    pub history: History,
    /// Latest model scores (streaming engine; None until first scored).
    pub scores: Option<Scores>,
    /// Labels from the latest population kernel run.
    pub segments: Option<Segments>,
}

impl std::ops::Deref for CustomerRecord {
    type Target = Summary;

    fn deref(&self) -> &Summary {
        &self.summary
    }
}

impl CustomerRecord {
    /// An empty record.
    pub fn new(customer_id: CustomerId) -> Self {
        Self { customer_id, summary: Summary::default(), history: History::default(), scores: None, segments: None }
    }

    /// Applies one event of this customer (without product statistics). The
    /// record does not check for duplicates: its book does.
    pub fn apply(&mut self, event: &Event) {
        self.summary.apply(&mut self.history, event, None);
    }

    /// Applies one event; with `tracking`, a purchase also updates this
    /// customer's purchase profile and the shared product statistics.
    pub fn apply_tracking(&mut self, event: &Event, tracking: Option<Tracking<'_>>) {
        self.summary.apply(&mut self.history, event, tracking);
    }

    /// Lifecycle stage from the latest scores (see [`Summary::lifecycle_with`]).
    pub fn lifecycle(&self, config: &SegmentConfig) -> LifecycleStage {
        self.summary.lifecycle_with(self.scores.as_ref(), config)
    }

    /// Purchase counts by product.
    pub fn purchases(&self) -> &PurchaseProfile {
        &self.history.purchases
    }
}

/// Appends the durable part of a customer in the fixed-width layout of
/// snapshot versions 3 to 5 (tests write old files with it).
#[cfg(test)]
pub(crate) fn encode_customer(id: &str, summary: &Summary, history: &History, out: &mut Vec<u8>) {
    codec::put_str(out, id);
    out.extend_from_slice(&(history.occasion_days.len() as u32).to_le_bytes());
    for d in &history.occasion_days {
        out.extend_from_slice(&d.to_le_bytes());
    }
    for v in [summary.first_occasion_value_minor, summary.total_occasion_value_minor] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&summary.orders.to_le_bytes());
    for v in [
        summary.revenue_minor,
        summary.refunds_without_order_minor(),
        summary.first_purchase_ms,
        summary.last_purchase_ms,
    ] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    for c in [summary.consent.email, summary.consent.sms, summary.consent.push] {
        out.push(codec::flag(c));
    }
    for s in summary.consent_at_s {
        let ms = if s == 0 { NO_TIME } else { CONSENT_EPOCH_MS + i64::from(s) * 1000 };
        out.extend_from_slice(&ms.to_le_bytes());
    }
    history.purchases.encode_fixed_width(out);
}

/// Milliseconds per UTC day.
const DAY_MS: i64 = 86_400_000;

/// Appends a customer in the compact snapshot layout (version 6): what the
/// state cannot recompute (summary, history, population labels), with
/// variable-length integers, so a snapshot is about half the size of the
/// fixed-width layout and costs half the disk time. Scores are not kept: they
/// are recomputed with the models stored beside the customers.
///
/// ```text
/// id (varint length + UTF-8) │ occasion days: count varint, first zigzag, gaps varint… │
/// first and total occasion value zigzag │ orders varint │ revenue, refunded zigzag │
/// (only with occasions) first and last purchase: ms into their day, varint │
/// consent flags u8 (2 bits each) │ consent times varint ×3 │ labels: 0, or 1 + 7 codes │
/// CLV interval width: 0, or 1 + f32 (version 8) │
/// acquisition: u8 (bit 0 cost, bit 1 channel) │ cost varint │ channel (varint length + UTF-8) (version 9) │
/// other channels' consent: count varint │ (name varint length + UTF-8, given u8, time varint)… (version 11) │
/// purchase profile (PurchaseProfile::encode_compact; version 7 adds its evicted products)
/// ```
pub fn encode_customer_compact(id: &str, summary: &Summary, history: &History, kept: Kept, out: &mut Vec<u8>) {
    codec::put_varint(out, id.len() as u64);
    out.extend_from_slice(id.as_bytes());
    let days = &history.occasion_days;
    codec::put_varint(out, days.len() as u64);
    if let Some(&first) = days.first() {
        codec::put_zigzag(out, i64::from(first));
        for gap in days.windows(2) {
            codec::put_varint(out, (i64::from(gap[1]) - i64::from(gap[0])) as u64);
        }
    }
    codec::put_zigzag(out, summary.first_occasion_value_minor);
    codec::put_zigzag(out, summary.total_occasion_value_minor);
    codec::put_varint(out, summary.orders);
    codec::put_zigzag(out, summary.revenue_minor);
    codec::put_zigzag(out, summary.refunds_without_order_minor());
    if !days.is_empty() {
        for ms in [summary.first_purchase_ms, summary.last_purchase_ms] {
            codec::put_varint(out, ms.rem_euclid(DAY_MS) as u64);
        }
    }
    let c = &summary.consent;
    out.push(codec::flag(c.email) | codec::flag(c.sms) << 2 | codec::flag(c.push) << 4);
    for s in summary.consent_at_s {
        codec::put_varint(out, u64::from(s));
    }
    match kept.segments {
        None => out.push(0),
        Some(g) => {
            out.push(1);
            out.extend_from_slice(&g.codes());
        }
    }
    match kept.clv_log_spread {
        None => out.push(0),
        Some(spread) => {
            out.push(1);
            // Served in single precision (chunk::Timing), so this is exact.
            out.extend_from_slice(&(spread as f32).to_le_bytes());
        }
    }
    let cost = summary.acquisition_cost_minor();
    let channel = crate::channel::name(summary.acquisition_channel);
    out.push(u8::from(cost.is_some()) | u8::from(channel.is_some()) << 1);
    if let Some(cost) = cost {
        codec::put_varint(out, cost as u64);
    }
    if let Some(channel) = channel {
        codec::put_varint(out, channel.len() as u64);
        out.extend_from_slice(channel.as_bytes());
    }
    let other = history.other_consent();
    codec::put_varint(out, other.len() as u64);
    for o in other {
        let name = o.channel();
        codec::put_varint(out, name.len() as u64);
        out.extend_from_slice(name.as_bytes());
        out.push(u8::from(o.given));
        codec::put_varint(out, u64::from(o.at_s));
    }
    history.purchases.encode_compact(out);
}

/// What a snapshot version's compact customers hold beyond version 6's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompactLayout {
    /// The profile holds its evicted products (version 7); see
    /// [`PurchaseProfile::settle_inherited`] otherwise.
    pub with_forgotten: bool,
    /// The CLV interval width (version 8).
    pub with_spread: bool,
    /// The acquisition cost and channel (version 9).
    pub with_acquisition: bool,
    /// Consent on other channels (version 11).
    pub with_other_consent: bool,
}

impl CompactLayout {
    /// What [`encode_customer_compact`] writes now.
    pub const CURRENT: Self =
        Self { with_forgotten: true, with_spread: true, with_acquisition: true, with_other_consent: true };
}

/// What a snapshot keeps of a customer's model outputs: the labels of the
/// last population run and the CLV interval width of the last
/// whole-population scoring. The scores themselves are recomputed.
#[derive(Clone, Copy, Debug, Default)]
pub struct Kept {
    /// Labels, if segmented.
    pub segments: Option<Segments>,
    /// Standard deviation of ln CLV, if an interval was computed.
    pub clv_log_spread: Option<f64>,
}

/// Scores that carry only the CLV interval width a snapshot kept: recovery
/// rescores every customer ([`crate::Engine::open`]) and replaces the rest
/// before anything reads them.
fn awaiting_rescore(clv_log_spread: f64) -> Scores {
    Scores {
        p_alive: f64::NAN,
        expected_orders_90d: f64::NAN,
        expected_order_value: f64::NAN,
        clv: f64::NAN,
        p_purchase_30d: f64::NAN,
        expected_orders_365d: f64::NAN,
        next_order_day: None,
        clv_log_spread: Some(clv_log_spread),
    }
}

fn decode_flag(bits: u8) -> Option<Option<bool>> {
    match bits {
        0 => Some(None),
        1 => Some(Some(false)),
        2 => Some(Some(true)),
        _ => None,
    }
}

impl CustomerRecord {
    /// Appends the durable part of the record in the fixed-width layout.
    #[cfg(test)]
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        encode_customer(self.customer_id.as_str(), &self.summary, &self.history, out);
    }

    /// Reads a record written by [`encode_customer_compact`] in `layout`;
    /// `None` if the bytes are not a valid record (cut short, out of range,
    /// inconsistent).
    pub fn decode_compact(r: &mut ByteReader<'_>, layout: CompactLayout) -> Option<Self> {
        let CompactLayout { with_forgotten, with_spread, with_acquisition, with_other_consent } = layout;
        let id_len = usize::try_from(r.varint()?).ok()?;
        let customer_id = CustomerId::new(std::str::from_utf8(r.take(id_len)?).ok()?).ok()?;
        let count = usize::try_from(r.varint()?).ok()?;
        let mut occasion_days = Vec::with_capacity(count.min(r.remaining()));
        if count > 0 {
            let mut day = r.zigzag_i32()?;
            occasion_days.push(day);
            for _ in 1..count {
                let gap = i32::try_from(r.varint()?).ok().filter(|&g| g > 0)?;
                day = day.checked_add(gap)?;
                occasion_days.push(day);
            }
        }
        let mut record = CustomerRecord::new(customer_id);
        let s = &mut record.summary;
        s.occasions = u32::try_from(count).ok()?;
        s.first_occasion_value_minor = r.zigzag()?;
        s.total_occasion_value_minor = r.zigzag()?;
        s.orders = r.varint()?;
        s.revenue_minor = r.zigzag()?;
        r.zigzag()?; // refunded without an order: total occasion value − revenue
        if let (Some(&first), Some(&last)) = (occasion_days.first(), occasion_days.last()) {
            for (day, ms) in [(first, &mut s.first_purchase_ms), (last, &mut s.last_purchase_ms)] {
                let into_day = i64::try_from(r.varint()?).ok().filter(|&m| m < DAY_MS)?;
                *ms = i64::from(day) * DAY_MS + into_day;
            }
        }
        let flags = r.u8()?;
        s.consent = Consent {
            email: decode_flag(flags & 3)?,
            sms: decode_flag(flags >> 2 & 3)?,
            push: decode_flag(flags >> 4 & 3)?,
        };
        for slot in &mut s.consent_at_s {
            *slot = r.varint_u32()?;
        }
        record.segments = match r.u8()? {
            0 => None,
            1 => Some(Segments::from_codes(r.array::<7>()?)?),
            _ => return None,
        };
        if with_spread {
            record.scores = match r.u8()? {
                0 => None,
                1 => Some(awaiting_rescore(f64::from(f32::from_le_bytes(r.array::<4>()?)))),
                _ => return None,
            };
        }
        if with_acquisition {
            let stated = r.u8()?;
            if stated & !3 != 0 {
                return None;
            }
            let s = &mut record.summary;
            if stated & 1 != 0 {
                s.acquisition_cost_minor = i64::try_from(r.varint()?).ok()?;
            }
            if stated & 2 != 0 {
                let len = usize::try_from(r.varint()?).ok()?;
                let name = std::str::from_utf8(r.take(len)?).ok()?;
                s.acquisition_channel = crate::channel::intern(name);
            }
        }
        let mut other_consent = Vec::new();
        if with_other_consent {
            for _ in 0..r.varint()? {
                let len = usize::try_from(r.varint()?).ok()?;
                let channel = crate::channel::intern(std::str::from_utf8(r.take(len)?).ok()?);
                let given = match r.u8()? {
                    0 => false,
                    1 => true,
                    _ => return None,
                };
                let at_s = r.varint_u32()?;
                other_consent.push(OtherConsent { channel, given, at_s });
            }
            // Codes differ between runs: keep them in this run's code order.
            other_consent.sort_by_key(|o| o.channel);
            if other_consent.windows(2).any(|w| w[0].channel == w[1].channel) {
                return None;
            }
        }
        let purchases = PurchaseProfile::decode_compact(r, with_forgotten)?;
        let other_consent = (!other_consent.is_empty()).then(|| Box::new(other_consent));
        record.history = History { occasion_days, purchases, other_consent };
        Some(record)
    }

    /// Reads a record in the fixed-width layout (snapshot versions 3 to 5) at `*pos`, advancing it;
    /// `None` if the bytes are not a valid record. `with_ring`: the record
    /// comes from a version 3 snapshot, whose records still carried a ring of
    /// 8 recent event fingerprints and its two cursor bytes (skipped).
    pub fn decode(bytes: &[u8], pos: &mut usize, with_ring: bool) -> Option<Self> {
        let mut r = ByteReader::new(bytes, *pos);
        let customer_id = CustomerId::new(r.str()?).ok()?;
        let days = r.u32()? as usize;
        let mut occasion_days = Vec::with_capacity(days.min(bytes.len() / 4));
        for _ in 0..days {
            occasion_days.push(r.u32()? as i32);
        }
        if occasion_days.windows(2).any(|w| w[0] >= w[1]) {
            return None;
        }
        let mut record = CustomerRecord::new(customer_id);
        let s = &mut record.summary;
        s.occasions = u32::try_from(occasion_days.len()).ok()?;
        s.first_occasion_value_minor = r.i64()?;
        s.total_occasion_value_minor = r.i64()?;
        s.orders = r.u64()?;
        s.revenue_minor = r.i64()?;
        r.i64()?; // refunded without an order: total occasion value − revenue
        s.first_purchase_ms = r.i64()?;
        s.last_purchase_ms = r.i64()?;
        s.consent = Consent { email: r.flag()?, sms: r.flag()?, push: r.flag()? };
        for slot in &mut s.consent_at_s {
            let ms = r.i64()?;
            *slot = if ms == NO_TIME { 0 } else { consent_second(Timestamp::from_millis(ms)) };
        }
        // The occasion days and the purchase times describe the same purchases.
        if s.first_day() != occasion_days.first().copied() || s.last_day() != occasion_days.last().copied() {
            return None;
        }
        if with_ring {
            r.take(8 * 8 + 2)?;
        }
        record.history = History { occasion_days, purchases: PurchaseProfile::decode(&mut r)?, other_consent: None };
        *pos = r.position();
        Some(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use patron_model::{CurrencyTable, Validator};
    use patron_score::{Relationship, RfmSegment, ValueTier};

    fn purchase(id: &str, at: &str, revenue: &str) -> Event {
        let json = format!(
            r#"{{"type":"purchase","event_id":"{id}","customer_id":"c","timestamp":"{at}T12:00:00Z","revenue":"{revenue}"}}"#
        );
        Validator::new(CurrencyTable::default()).decode(json.as_bytes()).unwrap()
    }

    #[test]
    fn a_summary_is_80_bytes() {
        // The memory target (150 bytes per customer) is mostly this: the
        // acquisition took the refunded total's place (it is derived).
        assert_eq!(std::mem::size_of::<Summary>(), 80);
    }

    #[test]
    fn the_later_consent_by_event_time_wins_per_channel() {
        let validator = Validator::new(CurrencyTable::default());
        let consent = |at: &str, email: bool| {
            let json = format!(
                r#"{{"type":"consent","event_id":"k{at}{email}","customer_id":"c","timestamp":"{at}","channels":{{"email":{email}}}}}"#
            );
            validator.decode(json.as_bytes()).unwrap()
        };
        let mut r = CustomerRecord::new(CustomerId::new("c").unwrap());
        r.apply(&consent("2025-01-02T00:00:00Z", true));
        r.apply(&consent("2025-01-01T00:00:00Z", false));
        assert_eq!(r.consent.email, Some(true), "an older statement arriving late does not win");
        r.apply(&consent("2025-01-02T00:00:00Z", false));
        assert_eq!(r.consent.email, Some(false), "the same second: the later arrival wins");
        r.apply(&consent("1990-01-01T00:00:00Z", true));
        assert_eq!(r.consent.email, Some(false));
    }

    #[test]
    fn other_channels_keep_the_latest_statement_and_survive_the_compact_layout() {
        let validator = Validator::new(CurrencyTable::default());
        let consent = |id: &str, at: &str, channels: &str| {
            let json = format!(
                r#"{{"type":"consent","event_id":"{id}","customer_id":"c","timestamp":"{at}","channels":{channels}}}"#
            );
            validator.decode(json.as_bytes()).unwrap()
        };
        let mut r = CustomerRecord::new(CustomerId::new("c").unwrap());
        r.apply(&consent("k1", "2025-01-02T00:00:00Z", r#"{"whatsapp":true,"postal":false}"#));
        r.apply(&consent("k2", "2025-01-01T00:00:00Z", r#"{"whatsapp":false,"line":true}"#));
        let kept = |r: &CustomerRecord| -> Vec<(String, bool)> {
            let mut v: Vec<(String, bool)> =
                r.history.other_consent().iter().map(|o| (o.channel().to_string(), o.given)).collect();
            v.sort();
            v
        };
        let expected = vec![("line".to_owned(), true), ("postal".to_owned(), false), ("whatsapp".to_owned(), true)];
        assert_eq!(kept(&r), expected, "an older statement arriving late does not win");
        assert_eq!(r.consent, Consent::default(), "the three contract channels are untouched");
        let mut bytes = Vec::new();
        encode_customer_compact("c", &r.summary, &r.history, Kept::default(), &mut bytes);
        let back = CustomerRecord::decode_compact(&mut ByteReader::new(&bytes, 0), CompactLayout::CURRENT).unwrap();
        assert_eq!(kept(&back), expected);
        let whatsapp = back.history.other_consent().iter().find(|o| &*o.channel() == "whatsapp").unwrap();
        assert_eq!(whatsapp.stated_at(), Timestamp::parse_date_or_rfc3339("2025-01-02T00:00:00Z").unwrap());
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
        r.segments = Some(Segments {
            rfm_r: 5,
            rfm_f: 4,
            rfm_m: 1,
            rfm_segment: RfmSegment::CantLoseThem,
            value_tier: ValueTier::ALL[2],
            relationship: Relationship::ALL[1],
            lifecycle_stage: LifecycleStage::Loyal,
        });
        let compact = compact_round_trip(&r);
        assert!(compact < bytes.len() / 2, "{compact} compact bytes against {}", bytes.len());
        compact_round_trip(&CustomerRecord::new(CustomerId::new("never-bought").unwrap()));
    }

    /// Encodes `r` compactly, checks it decodes to `r` and that every
    /// truncation is refused; returns the encoded size.
    fn compact_round_trip(r: &CustomerRecord) -> usize {
        let mut bytes = Vec::new();
        let kept = Kept { segments: r.segments, clv_log_spread: r.scores.and_then(|s| s.clv_log_spread) };
        encode_customer_compact(r.customer_id.as_str(), &r.summary, &r.history, kept, &mut bytes);
        let mut reader = ByteReader::new(&bytes, 0);
        assert_eq!(CustomerRecord::decode_compact(&mut reader, CompactLayout::CURRENT).as_ref(), Some(r));
        assert_eq!(reader.remaining(), 0);
        for cut in 0..bytes.len() {
            let decoded =
                CustomerRecord::decode_compact(&mut ByteReader::new(&bytes[..cut], 0), CompactLayout::CURRENT);
            assert!(decoded.is_none(), "cut at {cut}");
        }
        bytes.len()
    }

    #[test]
    fn an_acquisition_is_kept_and_the_latest_statement_wins() {
        let validator = Validator::new(CurrencyTable::default());
        let mut r = CustomerRecord::new(CustomerId::new("won").unwrap());
        assert_eq!((r.acquisition_cost_minor(), r.acquisition_channel_code()), (None, crate::channel::NO_CHANNEL));
        let first = r#"{"type":"purchase","event_id":"o1","customer_id":"won","timestamp":"2025-01-01T10:00:00Z","revenue":"30","acquisition_cost":"12.5","acquisition_channel":"record-test-search"}"#;
        r.apply(&validator.decode(first.as_bytes()).unwrap());
        assert_eq!(r.acquisition_cost_minor(), Some(1250));
        assert_eq!(crate::channel::name(r.acquisition_channel_code()).as_deref(), Some("record-test-search"));
        let restated = r#"{"type":"customer","event_id":"k1","customer_id":"won","timestamp":"2025-01-02T10:00:00Z","acquisition_cost":"9"}"#;
        r.apply(&validator.decode(restated.as_bytes()).unwrap());
        assert_eq!(r.acquisition_cost_minor(), Some(900), "the latest cost");
        assert_eq!(
            crate::channel::name(r.acquisition_channel_code()).as_deref(),
            Some("record-test-search"),
            "a statement without a channel keeps the channel"
        );
        let refund =
            r#"{"type":"refund","event_id":"r1","customer_id":"won","timestamp":"2025-01-03T10:00:00Z","amount":"5"}"#;
        r.apply(&validator.decode(refund.as_bytes()).unwrap());
        assert_eq!((r.revenue_minor, r.refunds_without_order_minor()), (2500, 500));
        compact_round_trip(&r);
    }

    #[test]
    fn the_clv_interval_width_survives_a_snapshot_and_only_it() {
        let mut r = CustomerRecord::new(CustomerId::new("spread").unwrap());
        r.history.purchases.record(3, 20_000, 1.0, 5);
        r.scores = Some(awaiting_rescore(f64::from(0.1234_f32)));
        let mut bytes = Vec::new();
        let kept = Kept { segments: None, clv_log_spread: Some(f64::from(0.1234_f32)) };
        encode_customer_compact(r.customer_id.as_str(), &r.summary, &r.history, kept, &mut bytes);
        let decoded = CustomerRecord::decode_compact(&mut ByteReader::new(&bytes, 0), CompactLayout::CURRENT).unwrap();
        let scores = decoded.scores.expect("a width");
        assert_eq!(scores.clv_log_spread, Some(f64::from(0.1234_f32)), "exactly the served width");
        assert!(scores.clv.is_nan() && scores.p_alive.is_nan(), "nothing else is kept: recovery rescores");
        compact_round_trip(&CustomerRecord::new(CustomerId::new("no-width").unwrap()));
    }

    #[test]
    fn purchases_feed_the_profile_and_product_statistics_and_round_trip() {
        let catalog = ProductCatalog::default();
        let items = ItemStats::default();
        let mut observed = Observed::default();
        let validator = Validator::new(CurrencyTable::default());
        let mut r = CustomerRecord::new(CustomerId::new("c").unwrap());
        for i in 0..10 {
            let json = format!(
                r#"{{"type":"purchase","event_id":"o{i}","customer_id":"c","timestamp":"2025-01-{:02}T10:00:00Z","items":[{{"sku":"a{i}","price":"1"}},{{"sku":"shared","price":"2","quantity":3}}]}}"#,
                i + 1
            );
            let event = validator.decode(json.as_bytes()).unwrap();
            let tracking = Tracking { catalog: &catalog, items: &items, history_limit: 5, observed: &mut observed };
            r.apply_tracking(&event, Some(tracking));
        }
        assert_eq!(observed.baskets(), 10);
        assert!(
            items.product(catalog.intern(&patron_model::ProductId::new("shared").unwrap())).is_none(),
            "not yet applied"
        );
        items.apply(&mut observed);
        assert!(observed.is_empty());
        assert_eq!(r.history.purchases.len(), 5, "bounded by the history limit");
        let shared = catalog.intern(&patron_model::ProductId::new("shared").unwrap());
        assert_eq!(r.history.purchases.get(shared).map(|e| e.occasions), Some(10));
        let stats = items.product(shared).unwrap();
        assert_eq!((stats.orders, stats.customers, stats.repeat_customers, stats.units), (10, 1, 1, 30));
        assert_eq!(stats.revenue_minor, 10 * 600);
        assert_eq!(catalog.len(), 11, "ten distinct products plus the shared one");
        let mut bytes = Vec::new();
        r.encode(&mut bytes);
        // Every product bought is still known: 5 held, 6 evicted.
        assert_eq!((r.history.purchases.len(), r.history.purchases.forgotten_len()), (5, 6));
        assert!(r.history.purchases.knows_every_product());
        // The fixed-width layout (snapshots before version 7) does not keep
        // the evicted products: the profile is full, so it may have evicted.
        let mut old = CustomerRecord::decode(&bytes, &mut 0, false).unwrap();
        assert_eq!(old.summary, r.summary);
        assert_eq!(old.history.purchases.entries(), r.history.purchases.entries());
        old.history.purchases.settle_inherited(5);
        assert!(!old.history.purchases.knows_every_product());
        compact_round_trip(&r);
        // Version 6: the compact layout without the evicted products (for a
        // profile that evicted none, the last byte, an empty set, is missing).
        let mut light = CustomerRecord::new(CustomerId::new("light").unwrap());
        light.history.purchases.record(3, 20_000, 1.0, 5);
        let mut v7 = Vec::new();
        encode_customer_compact(light.customer_id.as_str(), &light.summary, &light.history, Kept::default(), &mut v7);
        // Version 7 had neither the width byte, the acquisition byte nor the
        // other channels' count (all 0 here): they come right before the profile.
        let mut profile = Vec::new();
        light.history.purchases.encode_compact(&mut profile);
        assert_eq!(v7.remove(v7.len() - profile.len() - 1), 0, "no other channels (version 11)");
        assert_eq!(v7.remove(v7.len() - profile.len() - 1), 0, "no acquisition");
        assert_eq!(v7.remove(v7.len() - profile.len() - 1), 0, "no width");
        let v7_layout = CompactLayout {
            with_forgotten: true,
            with_spread: false,
            with_acquisition: false,
            with_other_consent: false,
        };
        let v7_read = CustomerRecord::decode_compact(&mut ByteReader::new(&v7, 0), v7_layout).unwrap();
        assert_eq!(v7_read.history, light.history);
        let v6_layout = CompactLayout { with_forgotten: false, ..v7_layout };
        let mut old = CustomerRecord::decode_compact(&mut ByteReader::new(&v7[..v7.len() - 1], 0), v6_layout).unwrap();
        assert!(!old.history.purchases.knows_every_product(), "unknown until settled");
        old.history.purchases.settle_inherited(5);
        assert_eq!(old.history, light.history, "one product of five: nothing was evicted");
    }
}
