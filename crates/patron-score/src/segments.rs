//! Population-relative labels: RFM quintile scores and named segments, value
//! tier, relationship (value × loyalty) and lifecycle stage.
//!
//! This module is the single source of the rules; [`definitions`] puts them
//! in words for the `segment_definitions` table and the README repeats them.
//! Quintile scores are exact (a sort of the population), and a customer's
//! score is 1 + ⌊5 · (share of customers strictly worse)⌋, so tied customers
//! always share a score.
//!
//! Labels that speak about the same thing read one notion of it, so they
//! cannot contradict each other:
//! - **alive or not** is the lifecycle stage (P(alive) against two
//!   thresholds). The named RFM segment is chosen among the names that fit
//!   the stage ([`Aliveness`]): a lapsed customer is never a "Champion", and
//!   RFM "At Risk" is always lifecycle `at_risk`. Relationship's loyalty axis
//!   is the same test.
//! - **high value** is CLV in the top half (the median, as the contract of
//!   `relationship` says). Value tier splits high value into `most_valuable`
//!   and `potential`; everyone below the median is `low_value`, which is
//!   exactly relationship's low-value row.
//!
//! The RFM segment and the relationship are therefore derived at read from
//! the stored scores and tier and the current stage ([`rfm_segment`],
//! [`relationship`]), as the stage itself is.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

macro_rules! labels {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name { $($(#[$vmeta])* $variant),+ }
        impl $name {
            /// All labels, in report order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            /// The label as stored in the `customers` table.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
            /// A small code for columnar storage: the position in [`Self::ALL`].
            pub fn code(self) -> u8 {
                self as u8
            }
            /// The label of a [`Self::code`] (`None` for a code no label has).
            pub fn from_code(code: u8) -> Option<Self> {
                Self::ALL.get(usize::from(code)).copied()
            }
        }
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { f.write_str(self.as_str()) }
        }
    };
}

labels!(
    /// Named RFM segment.
    RfmSegment {
        /// Alive, bought recently, often and for a lot.
        Champions => "Champions",
        /// Alive, buy often and spend well.
        Loyal => "Loyal",
        /// Alive, recent, more than one purchase.
        PotentialLoyalist => "Potential Loyalist",
        /// Alive, among the most recent first purchases.
        New => "New",
        /// Alive, bought once, recently.
        Promising => "Promising",
        /// Alive, neither recent nor frequent nor big spenders.
        NeedAttention => "Need Attention",
        /// At risk, low frequency and spend.
        AboutToSleep => "About to Sleep",
        /// At risk, used to buy often or for a lot.
        AtRisk => "At Risk",
        /// At risk, among the best by frequency and spend.
        CantLoseThem => "Can't Lose Them",
        /// Lapsed, used to buy often or for a lot.
        Hibernating => "Hibernating",
        /// Lapsed, low frequency and spend.
        Lost => "Lost",
    }
);

labels!(
    /// Value tier by CLV.
    ValueTier {
        /// Top 20% by CLV.
        MostValuable => "most_valuable",
        /// High value (CLV in the top half), not among the most valuable.
        Potential => "potential",
        /// CLV in the bottom half.
        LowValue => "low_value",
    }
);

labels!(
    /// Value versus loyalty (Reinartz & Kumar): the two axes are separate.
    Relationship {
        /// High value and alive.
        TrueFriend => "true_friend",
        /// High value, at risk or lapsed: profitable, not loyal.
        Butterfly => "butterfly",
        /// Alive, low value: loyal, not profitable.
        Barnacle => "barnacle",
        /// Neither.
        Stranger => "stranger",
    }
);

labels!(
    /// Where a customer is in their relationship with the shop.
    LifecycleStage {
        /// Gave consent, never bought.
        Prospect => "prospect",
        /// One purchase occasion.
        FirstTime => "first_time",
        /// More than one occasion.
        Repeat => "repeat",
        /// Many occasions and alive.
        Loyal => "loyal",
        /// P(alive) has dropped below the at-risk threshold.
        AtRisk => "at_risk",
        /// P(alive) has dropped below the lapsed threshold.
        Lapsed => "lapsed",
    }
);

/// Thresholds of the labels (README, "Segments").
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SegmentConfig {
    /// Share of customers labelled `most_valuable` (top by CLV).
    pub most_valuable_share: f64,
    /// Share of customers of high value (top by CLV): `most_valuable` and
    /// `potential`, and relationship's high-value row. 0.5 is the median.
    pub high_value_share: f64,
    /// P(alive) below which a buyer is `at_risk` (and not loyal for `relationship`).
    pub at_risk_p_alive: f64,
    /// P(alive) below which a buyer is `lapsed`.
    pub lapsed_p_alive: f64,
    /// Repeat occasions from which a likely-alive buyer is `loyal`.
    pub loyal_min_repeat_occasions: u32,
}

impl Default for SegmentConfig {
    fn default() -> Self {
        Self {
            most_valuable_share: 0.2,
            high_value_share: 0.5,
            at_risk_p_alive: 0.5,
            lapsed_p_alive: 0.2,
            loyal_min_repeat_occasions: 3,
        }
    }
}

/// What the labels are computed from, per buyer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SegmentInput {
    /// Days since the last purchase occasion (T − t_x).
    pub days_since_last_purchase: f64,
    /// Purchase occasions (x + 1).
    pub occasions: u32,
    /// Net revenue so far.
    pub revenue: f64,
    /// Customer lifetime value.
    pub clv: f64,
    /// P(alive).
    pub p_alive: f64,
}

/// A buyer's labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segments {
    /// Recency score 1–5 (5 = most recent).
    pub rfm_r: u8,
    /// Frequency score 1–5.
    pub rfm_f: u8,
    /// Monetary score 1–5.
    pub rfm_m: u8,
    /// Named RFM segment.
    pub rfm_segment: RfmSegment,
    /// Value tier.
    pub value_tier: ValueTier,
    /// Value × loyalty quadrant.
    pub relationship: Relationship,
    /// Lifecycle stage.
    pub lifecycle_stage: LifecycleStage,
}

impl Segments {
    /// The seven labels as one-byte codes, in column order (`rfm_r`, `rfm_f`,
    /// `rfm_m`, `rfm_segment`, `value_tier`, `relationship`,
    /// `lifecycle_stage`): how the state's label columns and the snapshots keep them.
    pub fn codes(&self) -> [u8; 7] {
        [
            self.rfm_r,
            self.rfm_f,
            self.rfm_m,
            self.rfm_segment.code(),
            self.value_tier.code(),
            self.relationship.code(),
            self.lifecycle_stage.code(),
        ]
    }

    /// The labels of [`Segments::codes`]; `None` if a code names no label.
    pub fn from_codes(codes: [u8; 7]) -> Option<Self> {
        let [rfm_r, rfm_f, rfm_m, segment, tier, relationship, lifecycle] = codes;
        Some(Self {
            rfm_r,
            rfm_f,
            rfm_m,
            rfm_segment: RfmSegment::from_code(segment)?,
            value_tier: ValueTier::from_code(tier)?,
            relationship: Relationship::from_code(relationship)?,
            lifecycle_stage: LifecycleStage::from_code(lifecycle)?,
        })
    }
}

/// One population column's finite values, sorted, as runs of equal values:
/// everything a rank query needs, in a form that merges exactly. A fleet's
/// partitions each send theirs, and the merge ranks the whole population as
/// one sort of every value would. Quintiles and shares compare against a few
/// order statistics taken from it, so labelling a customer costs a handful of
/// comparisons, not a binary search per metric.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ValueRuns {
    /// Distinct values, ascending (`f64::total_cmp`).
    values: Vec<f64>,
    /// Number of values up to and including each run.
    ends: Vec<u64>,
}

impl ValueRuns {
    fn new(values: impl ParallelIterator<Item = f64>) -> Self {
        let mut v: Vec<f64> = values.filter(|v| v.is_finite()).collect();
        v.par_sort_unstable_by(f64::total_cmp);
        Self::from_sorted_runs(v.into_iter().map(|value| (value, 1)))
    }

    /// `(value, count)` pairs in ascending order, equal values combined.
    fn from_sorted_runs(runs: impl Iterator<Item = (f64, u64)>) -> Self {
        let mut out = Self::default();
        let mut total = 0;
        for (value, count) in runs {
            total += count;
            match (out.values.last(), out.ends.last_mut()) {
                (Some(last), Some(end)) if last.to_bits() == value.to_bits() => *end = total,
                _ => {
                    out.values.push(value);
                    out.ends.push(total);
                }
            }
        }
        out
    }

    /// The runs of every part together.
    pub fn merge<'a>(parts: impl IntoIterator<Item = &'a ValueRuns>) -> Self {
        let mut runs: Vec<(f64, u64)> = parts.into_iter().flat_map(ValueRuns::runs).collect();
        runs.par_sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
        Self::from_sorted_runs(runs.into_iter())
    }

    fn runs(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        self.values.iter().zip(self.ends.iter().zip(starts)).map(|(&v, (&end, start))| (v, end - start))
    }

    /// Number of values.
    pub fn len(&self) -> u64 {
        self.ends.last().copied().unwrap_or(0)
    }

    /// Whether there are no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The value of rank `i` (0 = smallest); `i < len()`.
    fn nth(&self, i: u64) -> f64 {
        self.values[self.ends.partition_point(|&end| end <= i)]
    }

    /// Smallest count m with m/n ≥ k/5, i.e. ⌈k·n/5⌉, for k = 1..=4.
    fn quintile_counts(&self) -> [u64; 4] {
        let n = self.len();
        std::array::from_fn(|k| ((k as u64 + 1) * n).div_ceil(5))
    }

    /// Scorer where a higher value is better: 1 + ⌊5 · share strictly below⌋.
    fn higher_better(&self) -> QuintileCuts {
        // #{x < v} ≥ m  ⟺  sorted[m − 1] < v
        QuintileCuts {
            cuts: self.quintile_counts().map(|m| if m == 0 { f64::NEG_INFINITY } else { self.nth(m - 1) }),
            strict_below: true,
        }
    }

    /// Scorer where a lower value is better: 1 + ⌊5 · share strictly above⌋.
    fn lower_better(&self) -> QuintileCuts {
        // #{x > v} ≥ m  ⟺  #{x ≤ v} ≤ n − m  ⟺  sorted[n − m] > v
        let n = self.len();
        QuintileCuts {
            cuts: self.quintile_counts().map(|m| if m == 0 { f64::INFINITY } else { self.nth(n - m) }),
            strict_below: false,
        }
    }

    /// Test for "share of values strictly above v is below `share`".
    fn top_share(&self, share: f64) -> TopShare {
        // #{x > v} < s·n  ⟺  #{x ≤ v} > n − s·n  ⟺  #{x ≤ v} ≥ m  ⟺  sorted[m − 1] ≤ v
        let n = self.len();
        let m = (n as f64 - share * n as f64).floor() as u64 + 1;
        TopShare(if m == 0 {
            f64::NEG_INFINITY
        } else if m > n {
            f64::INFINITY
        } else {
            self.nth(m - 1)
        })
    }
}

/// Four order statistics that split a population into quintile scores.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
struct QuintileCuts {
    cuts: [f64; 4],
    strict_below: bool,
}

impl QuintileCuts {
    fn score(&self, v: f64) -> u8 {
        let passed = if self.strict_below {
            self.cuts.iter().filter(|&&c| c < v).count()
        } else {
            self.cuts.iter().filter(|&&c| c > v).count()
        };
        1 + passed as u8
    }
}

/// Threshold of a "top share" membership test.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
struct TopShare(f64);

impl TopShare {
    fn contains(&self, v: f64) -> bool {
        self.0 <= v
    }
}

/// The ranked columns a population's labels are relative to. A fleet merges
/// its partitions' with [`PopulationRanks::merge`] and labels every partition
/// with the one set of [`SegmentCuts`] that results, so its labels are the
/// ones a single node holding every customer would give.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PopulationRanks {
    /// Days since the last purchase.
    pub recency: ValueRuns,
    /// Purchase occasions.
    pub frequency: ValueRuns,
    /// Net revenue.
    pub monetary: ValueRuns,
    /// Customer lifetime value.
    pub clv: ValueRuns,
}

impl PopulationRanks {
    /// The ranked columns of `inputs` (a rayon kernel).
    pub fn of(inputs: &[SegmentInput]) -> Self {
        Self {
            recency: ValueRuns::new(inputs.par_iter().map(|i| i.days_since_last_purchase)),
            frequency: ValueRuns::new(inputs.par_iter().map(|i| f64::from(i.occasions))),
            monetary: ValueRuns::new(inputs.par_iter().map(|i| i.revenue)),
            clv: ValueRuns::new(inputs.par_iter().map(|i| i.clv)),
        }
    }

    /// The columns of all parts' populations together.
    pub fn merge(parts: &[PopulationRanks]) -> Self {
        Self {
            recency: ValueRuns::merge(parts.iter().map(|p| &p.recency)),
            frequency: ValueRuns::merge(parts.iter().map(|p| &p.frequency)),
            monetary: ValueRuns::merge(parts.iter().map(|p| &p.monetary)),
            clv: ValueRuns::merge(parts.iter().map(|p| &p.clv)),
        }
    }

    /// The order statistics the labels of this population compare against.
    pub fn cuts(&self, config: &SegmentConfig) -> SegmentCuts {
        SegmentCuts {
            recency: self.recency.lower_better(),
            frequency: self.frequency.higher_better(),
            monetary: self.monetary.higher_better(),
            high_value: self.clv.top_share(config.high_value_share),
            most_valuable: self.clv.top_share(config.most_valuable_share),
        }
    }
}

/// The thresholds that label a buyer relative to a population: a few order
/// statistics of it ([`PopulationRanks::cuts`]).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct SegmentCuts {
    recency: QuintileCuts,
    frequency: QuintileCuts,
    monetary: QuintileCuts,
    high_value: TopShare,
    most_valuable: TopShare,
}

impl SegmentCuts {
    /// The labels of one buyer.
    pub fn label(&self, i: &SegmentInput, config: &SegmentConfig) -> Segments {
        let rfm_r = self.recency.score(i.days_since_last_purchase);
        let rfm_f = self.frequency.score(f64::from(i.occasions));
        let rfm_m = self.monetary.score(i.revenue);
        let value_tier = if self.most_valuable.contains(i.clv) {
            ValueTier::MostValuable
        } else if self.high_value.contains(i.clv) {
            ValueTier::Potential
        } else {
            ValueTier::LowValue
        };
        let lifecycle_stage = lifecycle_stage(i.occasions.saturating_sub(1), i.p_alive, config);
        let aliveness = lifecycle_stage.aliveness().unwrap_or(Aliveness::Alive);
        Segments {
            rfm_r,
            rfm_f,
            rfm_m,
            rfm_segment: rfm_segment(rfm_r, rfm_f, rfm_m, aliveness),
            value_tier,
            relationship: relationship(value_tier, aliveness),
            lifecycle_stage,
        }
    }
}

/// Quintile scores 1–5 of `values` (5 = best); ties share a score.
pub fn quintile_scores(values: &[f64], higher_is_better: bool) -> Vec<u8> {
    let ranks = ValueRuns::new(values.par_iter().copied());
    let cuts = if higher_is_better { ranks.higher_better() } else { ranks.lower_better() };
    values.par_iter().map(|&v| cuts.score(v)).collect()
}

/// Whether a buyer is still buying, as the purchase model sees it: the one
/// notion of aliveness every label reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Aliveness {
    /// P(alive) at or above the at-risk threshold (or not scored yet).
    Alive,
    /// P(alive) below the at-risk threshold, at or above the lapsed one.
    AtRisk,
    /// P(alive) below the lapsed threshold.
    Lapsed,
}

impl LifecycleStage {
    /// The aliveness this stage states (`None` for a prospect, who never bought).
    pub fn aliveness(self) -> Option<Aliveness> {
        match self {
            Self::Prospect => None,
            Self::FirstTime | Self::Repeat | Self::Loyal => Some(Aliveness::Alive),
            Self::AtRisk => Some(Aliveness::AtRisk),
            Self::Lapsed => Some(Aliveness::Lapsed),
        }
    }
}

impl RfmSegment {
    /// The aliveness every customer with this name has.
    pub fn aliveness(self) -> Aliveness {
        match self {
            Self::Champions
            | Self::Loyal
            | Self::PotentialLoyalist
            | Self::New
            | Self::Promising
            | Self::NeedAttention => Aliveness::Alive,
            Self::AboutToSleep | Self::AtRisk | Self::CantLoseThem => Aliveness::AtRisk,
            Self::Hibernating | Self::Lost => Aliveness::Lapsed,
        }
    }
}

/// The named segment of an (R, F, M) score triple, among the names of the
/// buyer's aliveness; first matching rule wins, with FM = (F + M) / 2.
pub fn rfm_segment(r: u8, f: u8, m: u8, aliveness: Aliveness) -> RfmSegment {
    let fm = f64::from(f + m) / 2.0;
    match aliveness {
        Aliveness::Alive => match r {
            _ if r >= 4 && fm >= 4.5 => RfmSegment::Champions,
            _ if fm >= 3.5 => RfmSegment::Loyal,
            4 | 5 if f >= 2 => RfmSegment::PotentialLoyalist,
            5 => RfmSegment::New,
            4 => RfmSegment::Promising,
            _ => RfmSegment::NeedAttention,
        },
        Aliveness::AtRisk if fm >= 4.5 => RfmSegment::CantLoseThem,
        Aliveness::AtRisk if fm >= 3.0 => RfmSegment::AtRisk,
        Aliveness::AtRisk => RfmSegment::AboutToSleep,
        Aliveness::Lapsed if fm >= 3.0 => RfmSegment::Hibernating,
        Aliveness::Lapsed => RfmSegment::Lost,
    }
}

/// The value × loyalty quadrant: high value is any tier but `low_value`,
/// loyal is alive.
pub fn relationship(tier: ValueTier, aliveness: Aliveness) -> Relationship {
    match (tier != ValueTier::LowValue, aliveness == Aliveness::Alive) {
        (true, true) => Relationship::TrueFriend,
        (true, false) => Relationship::Butterfly,
        (false, true) => Relationship::Barnacle,
        (false, false) => Relationship::Stranger,
    }
}

/// Lifecycle stage of a buyer (prospects, who never bought, are labelled by the caller).
pub fn lifecycle_stage(repeat_occasions: u32, p_alive: f64, config: &SegmentConfig) -> LifecycleStage {
    if p_alive < config.lapsed_p_alive {
        LifecycleStage::Lapsed
    } else if p_alive < config.at_risk_p_alive {
        LifecycleStage::AtRisk
    } else if repeat_occasions >= config.loyal_min_repeat_occasions {
        LifecycleStage::Loyal
    } else if repeat_occasions >= 1 {
        LifecycleStage::Repeat
    } else {
        LifecycleStage::FirstTime
    }
}

/// Labels every buyer relative to the whole population (a rayon kernel).
pub fn segment_population(inputs: &[SegmentInput], config: &SegmentConfig) -> Vec<Segments> {
    let cuts = PopulationRanks::of(inputs).cuts(config);
    inputs.par_iter().map(|i| cuts.label(i, config)).collect()
}

/// One label's rule, in words, with the thresholds in force.
#[derive(Clone, Debug, PartialEq)]
pub struct SegmentDefinition {
    /// The `customers` column holding the label.
    pub family: &'static str,
    /// The label as stored.
    pub label: &'static str,
    /// When a customer gets it.
    pub rule: String,
    /// The configured thresholds the rule reads, as `name = value` pairs.
    pub thresholds: String,
}

/// Every label's rule in words, with the thresholds of `config`: the rows of
/// the `segment_definitions` table.
pub fn definitions(config: &SegmentConfig) -> Vec<SegmentDefinition> {
    let c = config;
    let alive = format!("at_risk_p_alive = {}", c.at_risk_p_alive);
    let at_risk = format!("at_risk_p_alive = {}, lapsed_p_alive = {}", c.at_risk_p_alive, c.lapsed_p_alive);
    let lapsed = format!("lapsed_p_alive = {}", c.lapsed_p_alive);
    let tiers = format!("most_valuable_share = {}, high_value_share = {}", c.most_valuable_share, c.high_value_share);
    let row = |family, label: &'static str, rule: &str, thresholds: &str| SegmentDefinition {
        family,
        label,
        rule: rule.to_owned(),
        thresholds: thresholds.to_owned(),
    };
    let rfm = |segment: RfmSegment, rule: &str| {
        let thresholds = match segment.aliveness() {
            Aliveness::Alive => &alive,
            Aliveness::AtRisk => &at_risk,
            Aliveness::Lapsed => &lapsed,
        };
        row("rfm_segment", segment.as_str(), rule, thresholds)
    };
    let most_valuable = format!("CLV in the top {}% of buyers", c.most_valuable_share * 100.0);
    let potential = format!("CLV in the top {}% of buyers (high value), not most_valuable", c.high_value_share * 100.0);
    let repeat = format!("alive; 1 to {} repeat purchase days", c.loyal_min_repeat_occasions.saturating_sub(1));
    let loyal = format!("alive; {} or more repeat purchase days", c.loyal_min_repeat_occasions);
    vec![
        rfm(
            RfmSegment::Champions,
            "alive (lifecycle first_time, repeat or loyal); R >= 4 and FM >= 4.5, where FM = (F + M) / 2",
        ),
        rfm(RfmSegment::Loyal, "alive; not Champions; FM >= 3.5"),
        rfm(RfmSegment::PotentialLoyalist, "alive; R >= 4 and F >= 2; not above"),
        rfm(RfmSegment::New, "alive; R = 5; not above"),
        rfm(RfmSegment::Promising, "alive; R = 4; not above"),
        rfm(RfmSegment::NeedAttention, "alive; R <= 3 and FM < 3.5"),
        rfm(RfmSegment::CantLoseThem, "at risk (lifecycle at_risk); FM >= 4.5"),
        rfm(RfmSegment::AtRisk, "at risk; 3 <= FM < 4.5"),
        rfm(RfmSegment::AboutToSleep, "at risk; FM < 3"),
        rfm(RfmSegment::Hibernating, "lapsed (lifecycle lapsed); FM >= 3"),
        rfm(RfmSegment::Lost, "lapsed; FM < 3"),
        row("value_tier", ValueTier::MostValuable.as_str(), &most_valuable, &tiers),
        row("value_tier", ValueTier::Potential.as_str(), &potential, &tiers),
        row("value_tier", ValueTier::LowValue.as_str(), "CLV in the bottom half of buyers (not high value)", &tiers),
        row(
            "relationship",
            Relationship::TrueFriend.as_str(),
            "high value (most_valuable or potential) and alive",
            &alive,
        ),
        row("relationship", Relationship::Butterfly.as_str(), "high value, at risk or lapsed", &alive),
        row("relationship", Relationship::Barnacle.as_str(), "low_value and alive", &alive),
        row("relationship", Relationship::Stranger.as_str(), "low_value, at risk or lapsed", &alive),
        row(
            "lifecycle_stage",
            LifecycleStage::Prospect.as_str(),
            "no purchase yet (a consent or an acquisition only)",
            "",
        ),
        row("lifecycle_stage", LifecycleStage::Lapsed.as_str(), "bought; p_alive < lapsed_p_alive", &lapsed),
        row(
            "lifecycle_stage",
            LifecycleStage::AtRisk.as_str(),
            "bought; lapsed_p_alive <= p_alive < at_risk_p_alive",
            &at_risk,
        ),
        row(
            "lifecycle_stage",
            LifecycleStage::Loyal.as_str(),
            &loyal,
            &format!("{alive}, loyal_min_repeat_occasions = {}", c.loyal_min_repeat_occasions),
        ),
        row(
            "lifecycle_stage",
            LifecycleStage::Repeat.as_str(),
            &repeat,
            &format!("{alive}, loyal_min_repeat_occasions = {}", c.loyal_min_repeat_occasions),
        ),
        row(
            "lifecycle_stage",
            LifecycleStage::FirstTime.as_str(),
            "alive; one purchase day (or bought, not yet scored)",
            &alive,
        ),
    ]
}

#[cfg(test)]
mod tests {

    #[test]
    fn segments_round_trip_through_their_codes() {
        for (i, &rfm_segment) in RfmSegment::ALL.iter().enumerate() {
            let segments = Segments {
                rfm_r: 1 + (i % 5) as u8,
                rfm_f: 5 - (i % 5) as u8,
                rfm_m: 3,
                rfm_segment,
                value_tier: ValueTier::ALL[i % ValueTier::ALL.len()],
                relationship: Relationship::ALL[i % Relationship::ALL.len()],
                lifecycle_stage: LifecycleStage::ALL[i % LifecycleStage::ALL.len()],
            };
            assert_eq!(Segments::from_codes(segments.codes()), Some(segments));
        }
        let mut bad = [1, 1, 1, 0, 0, 0, 0];
        bad[3] = RfmSegment::ALL.len() as u8;
        assert_eq!(Segments::from_codes(bad), None, "a code past the last label");
    }
    use super::*;

    #[test]
    fn quintiles_split_distinct_values_evenly_and_keep_ties_together() {
        let values: Vec<f64> = (0..100).map(f64::from).collect();
        let scores = quintile_scores(&values, true);
        for s in 1..=5u8 {
            assert_eq!(scores.iter().filter(|&&v| v == s).count(), 20);
        }
        assert_eq!(quintile_scores(&values, false)[0], 5);
        let ties = quintile_scores(&[1.0, 1.0, 1.0, 2.0, 3.0], true);
        assert_eq!(ties, vec![1, 1, 1, 4, 5]);
    }

    /// The threshold shortcuts agree with the definitions, ties included.
    #[test]
    fn cuts_match_the_rank_definitions() {
        use proptest::prelude::*;
        proptest!(|(values in proptest::collection::vec(0u8..12, 1..200), share in 0.0f64..1.0)| {
            let values: Vec<f64> = values.into_iter().map(f64::from).collect();
            let n = values.len() as f64;
            let below = |v: f64| values.iter().filter(|&&x| x < v).count() as f64 / n;
            let above = |v: f64| values.iter().filter(|&&x| x > v).count() as f64 / n;
            let ranks = ValueRuns::new(values.par_iter().copied());
            let (hi, lo, top) = (ranks.higher_better(), ranks.lower_better(), ranks.top_share(share));
            for &v in &values {
                prop_assert_eq!(hi.score(v), (1.0 + (5.0 * below(v)).floor()).min(5.0) as u8, "higher v={}", v);
                prop_assert_eq!(lo.score(v), (1.0 + (5.0 * above(v)).floor()).min(5.0) as u8, "lower v={}", v);
                prop_assert_eq!(top.contains(v), above(v) < share, "top share {} v={}", share, v);
            }
        });
    }

    /// A fleet labels each partition with cuts merged from every partition's
    /// ranks; the labels must be those of one population holding everyone.
    #[test]
    fn cuts_from_merged_partition_ranks_label_as_the_whole_population_does() {
        use proptest::prelude::*;
        let input = (0u8..30, 1u32..8, 0u16..500, 0u16..2000, 0u8..=10).prop_map(|(d, o, r, c, p)| SegmentInput {
            days_since_last_purchase: f64::from(d),
            occasions: o,
            revenue: f64::from(r) / 4.0,
            clv: f64::from(c) / 8.0,
            p_alive: f64::from(p) / 10.0,
        });
        proptest!(|(inputs in proptest::collection::vec(input, 1..300), split in proptest::collection::vec(0usize..4, 300))| {
            let config = SegmentConfig::default();
            let whole = segment_population(&inputs, &config);
            let mut parts = vec![Vec::new(); 4];
            for (i, input) in inputs.iter().enumerate() {
                parts[split[i]].push(*input);
            }
            let ranks: Vec<PopulationRanks> = parts.iter().map(|p| PopulationRanks::of(p)).collect();
            let merged = PopulationRanks::merge(&ranks);
            prop_assert_eq!(&merged, &PopulationRanks::of(&inputs));
            let cuts = merged.cuts(&config);
            for (i, input) in inputs.iter().enumerate() {
                prop_assert_eq!(cuts.label(input, &config), whole[i]);
            }
        });
    }

    #[test]
    fn every_score_triple_has_exactly_one_segment_of_its_aliveness_and_all_segments_occur() {
        let mut seen = std::collections::HashSet::new();
        for aliveness in [Aliveness::Alive, Aliveness::AtRisk, Aliveness::Lapsed] {
            for r in 1..=5 {
                for f in 1..=5 {
                    for m in 1..=5 {
                        let segment = rfm_segment(r, f, m, aliveness);
                        assert_eq!(segment.aliveness(), aliveness, "{segment} for ({r}, {f}, {m})");
                        seen.insert(segment);
                    }
                }
            }
        }
        assert_eq!(seen.len(), RfmSegment::ALL.len());
        assert_eq!(rfm_segment(5, 5, 5, Aliveness::Alive), RfmSegment::Champions);
        assert_eq!(rfm_segment(5, 5, 5, Aliveness::Lapsed), RfmSegment::Hibernating);
        assert_eq!(rfm_segment(1, 5, 5, Aliveness::AtRisk), RfmSegment::CantLoseThem);
        assert_eq!(rfm_segment(1, 5, 5, Aliveness::Alive), RfmSegment::Loyal);
        assert_eq!(rfm_segment(5, 1, 1, Aliveness::Alive), RfmSegment::New);
        assert_eq!(rfm_segment(1, 1, 1, Aliveness::Lapsed), RfmSegment::Lost);
    }

    /// Regression (issue 21): one run had 669 Champions with lifecycle
    /// `lapsed`, RFM "At Risk" customers that were mostly lifecycle `lapsed`,
    /// and `low_value` customers labelled `butterfly` (high value). On any
    /// population, the labels that speak of the same thing now agree.
    #[test]
    fn regression_labels_never_contradict_each_other() {
        use proptest::prelude::*;
        let buyer = (0.0f64..400.0, 1u32..30, 0.0f64..2000.0, 0.0f64..3000.0, 0.0f64..=1.0);
        proptest!(|(buyers in proptest::collection::vec(buyer, 1..300))| {
            let inputs: Vec<SegmentInput> = buyers
                .iter()
                .map(|&(days, occasions, revenue, clv, p_alive)| SegmentInput {
                    days_since_last_purchase: days,
                    occasions,
                    revenue,
                    clv,
                    p_alive,
                })
                .collect();
            let config = SegmentConfig::default();
            let mut clvs: Vec<f64> = inputs.iter().map(|i| i.clv).collect();
            clvs.sort_by(f64::total_cmp);
            for (input, labels) in inputs.iter().zip(segment_population(&inputs, &config)) {
                let aliveness = labels.lifecycle_stage.aliveness();
                prop_assert_eq!(Some(labels.rfm_segment.aliveness()), aliveness);
                let high_value = labels.value_tier != ValueTier::LowValue;
                let strictly_above = clvs.iter().filter(|&&c| c > input.clv).count() as f64;
                prop_assert_eq!(high_value, strictly_above < 0.5 * clvs.len() as f64, "high value is the top half by CLV");
                let relationship_high = matches!(labels.relationship, Relationship::TrueFriend | Relationship::Butterfly);
                prop_assert_eq!(relationship_high, high_value);
                let relationship_loyal = matches!(labels.relationship, Relationship::TrueFriend | Relationship::Barnacle);
                prop_assert_eq!(relationship_loyal, aliveness == Some(Aliveness::Alive));
                if labels.rfm_segment == RfmSegment::Champions {
                    prop_assert!(labels.rfm_r >= 4);
                }
            }
        });
    }

    #[test]
    fn definitions_cover_every_label_once_and_state_the_thresholds_in_force() {
        let config = SegmentConfig { at_risk_p_alive: 0.6, most_valuable_share: 0.1, ..SegmentConfig::default() };
        let rows = definitions(&config);
        let mut families: Vec<(&str, Vec<&str>)> = vec![
            ("rfm_segment", RfmSegment::ALL.iter().map(|l| l.as_str()).collect()),
            ("value_tier", ValueTier::ALL.iter().map(|l| l.as_str()).collect()),
            ("relationship", Relationship::ALL.iter().map(|l| l.as_str()).collect()),
            ("lifecycle_stage", LifecycleStage::ALL.iter().map(|l| l.as_str()).collect()),
        ];
        for (family, labels) in &mut families {
            let mut defined: Vec<&str> = rows.iter().filter(|r| r.family == *family).map(|r| r.label).collect();
            defined.sort_unstable();
            labels.sort_unstable();
            assert_eq!(&defined, labels, "{family}");
        }
        assert_eq!(rows.len(), families.iter().map(|(_, l)| l.len()).sum::<usize>());
        let at_risk = rows.iter().find(|r| r.family == "lifecycle_stage" && r.label == "at_risk").unwrap();
        assert!(at_risk.thresholds.contains("at_risk_p_alive = 0.6"), "{at_risk:?}");
        let top = rows.iter().find(|r| r.label == "most_valuable").unwrap();
        assert!(top.rule.contains("top 10%"), "{top:?}");
    }

    #[test]
    fn lifecycle_follows_thresholds() {
        let c = SegmentConfig::default();
        assert_eq!(lifecycle_stage(0, 0.9, &c), LifecycleStage::FirstTime);
        assert_eq!(lifecycle_stage(1, 0.9, &c), LifecycleStage::Repeat);
        assert_eq!(lifecycle_stage(5, 0.9, &c), LifecycleStage::Loyal);
        assert_eq!(lifecycle_stage(5, 0.3, &c), LifecycleStage::AtRisk);
        assert_eq!(lifecycle_stage(5, 0.1, &c), LifecycleStage::Lapsed);
    }

    #[test]
    fn value_and_loyalty_are_separate_axes() {
        let buyer = |clv: f64, p_alive: f64| SegmentInput {
            days_since_last_purchase: 10.0,
            occasions: 3,
            revenue: 100.0,
            clv,
            p_alive,
        };
        let inputs = [buyer(500.0, 0.9), buyer(400.0, 0.1), buyer(1.0, 0.9), buyer(2.0, 0.1)];
        let labels: Vec<Relationship> =
            segment_population(&inputs, &SegmentConfig::default()).iter().map(|s| s.relationship).collect();
        assert_eq!(
            labels,
            vec![Relationship::TrueFriend, Relationship::Butterfly, Relationship::Barnacle, Relationship::Stranger]
        );
    }
}
