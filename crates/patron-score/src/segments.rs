//! Population-relative labels: RFM quintile scores and named segments, value
//! tier, relationship (value × loyalty) and lifecycle stage.
//!
//! The rules are written out in the README ("Segments"); this module is their
//! single source. Quintile scores are exact (a sort of the population), and a
//! customer's score is 1 + ⌊5 · (share of customers strictly worse)⌋, so tied
//! customers always share a score.

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
        /// Bought recently, often and for a lot.
        Champions => "Champions",
        /// Buy regularly and spend well.
        Loyal => "Loyal",
        /// Recent customers with more than one purchase.
        PotentialLoyalist => "Potential Loyalist",
        /// Bought for the first time very recently.
        New => "New",
        /// Bought once, recently.
        Promising => "Promising",
        /// Middling recency, above-average frequency and spend.
        NeedAttention => "Need Attention",
        /// Middling recency, low frequency and spend.
        AboutToSleep => "About to Sleep",
        /// Used to buy often or for a lot, not seen for a while.
        AtRisk => "At Risk",
        /// Best customers by frequency and spend, not seen for a while.
        CantLoseThem => "Can't Lose Them",
        /// Low recency, frequency and spend.
        Hibernating => "Hibernating",
        /// The lowest recency, low frequency and spend.
        Lost => "Lost",
    }
);

labels!(
    /// Value tier by CLV.
    ValueTier {
        /// Top 20% by CLV.
        MostValuable => "most_valuable",
        /// High expected purchases, low revenue so far.
        Potential => "potential",
        /// Everyone else.
        LowValue => "low_value",
    }
);

labels!(
    /// Value versus loyalty (Reinartz & Kumar): the two axes are separate.
    Relationship {
        /// High CLV and likely alive.
        TrueFriend => "true_friend",
        /// High CLV, unlikely to stay: profitable, not loyal.
        Butterfly => "butterfly",
        /// Likely alive, low CLV: loyal, not profitable.
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
        /// Many occasions and likely alive.
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
    /// Share of customers with the highest expected purchases that may be `potential`.
    pub potential_share: f64,
    /// P(alive) at or above which a customer counts as loyal for `relationship`.
    pub loyal_p_alive: f64,
    /// P(alive) below which a buyer is `at_risk`.
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
            potential_share: 0.4,
            loyal_p_alive: 0.5,
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
    /// Expected purchases in the next 90 days.
    pub expected_orders_90d: f64,
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

/// Sorted copy of the finite values, for rank queries. Quintiles and shares
/// compare against a few precomputed order statistics, so labelling a
/// customer costs a handful of comparisons, not a binary search per metric.
struct Ranks(Vec<f64>);

impl Ranks {
    fn new(values: impl ParallelIterator<Item = f64>) -> Self {
        let mut v: Vec<f64> = values.filter(|v| v.is_finite()).collect();
        v.par_sort_unstable_by(f64::total_cmp);
        Self(v)
    }

    /// Smallest count m with m/n ≥ k/5, i.e. ⌈k·n/5⌉, for k = 1..=4.
    fn quintile_counts(&self) -> [usize; 4] {
        let n = self.0.len();
        std::array::from_fn(|k| ((k + 1) * n).div_ceil(5))
    }

    /// Scorer where a higher value is better: 1 + ⌊5 · share strictly below⌋.
    fn higher_better(&self) -> QuintileCuts {
        // #{x < v} ≥ m  ⟺  sorted[m − 1] < v
        QuintileCuts {
            cuts: self.quintile_counts().map(|m| if m == 0 { f64::NEG_INFINITY } else { self.0[m - 1] }),
            strict_below: true,
        }
    }

    /// Scorer where a lower value is better: 1 + ⌊5 · share strictly above⌋.
    fn lower_better(&self) -> QuintileCuts {
        // #{x > v} ≥ m  ⟺  #{x ≤ v} ≤ n − m  ⟺  sorted[n − m] > v
        let n = self.0.len();
        QuintileCuts {
            cuts: self.quintile_counts().map(|m| if m == 0 { f64::INFINITY } else { self.0[n - m] }),
            strict_below: false,
        }
    }

    /// Test for "share of values strictly above v is below `share`".
    fn top_share(&self, share: f64) -> TopShare {
        // #{x > v} < s·n  ⟺  #{x ≤ v} > n − s·n  ⟺  #{x ≤ v} ≥ m  ⟺  sorted[m − 1] ≤ v
        let n = self.0.len();
        let m = (n as f64 - share * n as f64).floor() as usize + 1;
        TopShare(if m == 0 {
            f64::NEG_INFINITY
        } else if m > n {
            f64::INFINITY
        } else {
            self.0[m - 1]
        })
    }
}

/// Four order statistics that split a population into quintile scores.
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
struct TopShare(f64);

impl TopShare {
    fn contains(&self, v: f64) -> bool {
        self.0 <= v
    }
}

/// Quintile scores 1–5 of `values` (5 = best); ties share a score.
pub fn quintile_scores(values: &[f64], higher_is_better: bool) -> Vec<u8> {
    let ranks = Ranks::new(values.par_iter().copied());
    let cuts = if higher_is_better { ranks.higher_better() } else { ranks.lower_better() };
    values.par_iter().map(|&v| cuts.score(v)).collect()
}

/// The named segment of an (R, F, M) score triple; first matching rule wins.
pub fn rfm_segment(r: u8, f: u8, m: u8) -> RfmSegment {
    let fm = f64::from(f + m) / 2.0;
    match r {
        _ if r >= 4 && fm >= 4.5 => RfmSegment::Champions,
        _ if r >= 3 && fm >= 3.5 => RfmSegment::Loyal,
        4 | 5 if f >= 2 => RfmSegment::PotentialLoyalist,
        5 => RfmSegment::New,
        4 => RfmSegment::Promising,
        3 if fm >= 2.5 => RfmSegment::NeedAttention,
        3 => RfmSegment::AboutToSleep,
        _ if fm >= 4.5 => RfmSegment::CantLoseThem,
        _ if fm >= 3.0 => RfmSegment::AtRisk,
        2 => RfmSegment::Hibernating,
        _ => RfmSegment::Lost,
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
    let recency = Ranks::new(inputs.par_iter().map(|i| i.days_since_last_purchase)).lower_better();
    let frequency = Ranks::new(inputs.par_iter().map(|i| f64::from(i.occasions))).higher_better();
    let monetary_ranks = Ranks::new(inputs.par_iter().map(|i| i.revenue));
    let monetary = monetary_ranks.higher_better();
    let revenue_top_half = monetary_ranks.top_share(0.5);
    let clv_ranks = Ranks::new(inputs.par_iter().map(|i| i.clv));
    let (clv_top_half, clv_most_valuable) = (clv_ranks.top_share(0.5), clv_ranks.top_share(config.most_valuable_share));
    let expected_top = Ranks::new(inputs.par_iter().map(|i| i.expected_orders_90d)).top_share(config.potential_share);
    inputs
        .par_iter()
        .map(|i| {
            let rfm_r = recency.score(i.days_since_last_purchase);
            let rfm_f = frequency.score(f64::from(i.occasions));
            let rfm_m = monetary.score(i.revenue);
            let high_value = clv_top_half.contains(i.clv);
            let value_tier = if clv_most_valuable.contains(i.clv) {
                ValueTier::MostValuable
            } else if expected_top.contains(i.expected_orders_90d) && !revenue_top_half.contains(i.revenue) {
                ValueTier::Potential
            } else {
                ValueTier::LowValue
            };
            let loyal = i.p_alive >= config.loyal_p_alive;
            let relationship = match (high_value, loyal) {
                (true, true) => Relationship::TrueFriend,
                (true, false) => Relationship::Butterfly,
                (false, true) => Relationship::Barnacle,
                (false, false) => Relationship::Stranger,
            };
            Segments {
                rfm_r,
                rfm_f,
                rfm_m,
                rfm_segment: rfm_segment(rfm_r, rfm_f, rfm_m),
                value_tier,
                relationship,
                lifecycle_stage: lifecycle_stage(i.occasions.saturating_sub(1), i.p_alive, config),
            }
        })
        .collect()
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
            let ranks = Ranks::new(values.par_iter().copied());
            let (hi, lo, top) = (ranks.higher_better(), ranks.lower_better(), ranks.top_share(share));
            for &v in &values {
                prop_assert_eq!(hi.score(v), (1.0 + (5.0 * below(v)).floor()).min(5.0) as u8, "higher v={}", v);
                prop_assert_eq!(lo.score(v), (1.0 + (5.0 * above(v)).floor()).min(5.0) as u8, "lower v={}", v);
                prop_assert_eq!(top.contains(v), above(v) < share, "top share {} v={}", share, v);
            }
        });
    }

    #[test]
    fn every_score_triple_has_exactly_one_segment_and_all_segments_occur() {
        let mut seen = std::collections::HashSet::new();
        for r in 1..=5 {
            for f in 1..=5 {
                for m in 1..=5 {
                    seen.insert(rfm_segment(r, f, m));
                }
            }
        }
        assert_eq!(seen.len(), RfmSegment::ALL.len());
        assert_eq!(rfm_segment(5, 5, 5), RfmSegment::Champions);
        assert_eq!(rfm_segment(1, 5, 5), RfmSegment::CantLoseThem);
        assert_eq!(rfm_segment(5, 1, 1), RfmSegment::New);
        assert_eq!(rfm_segment(1, 1, 1), RfmSegment::Lost);
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
            expected_orders_90d: 1.0,
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
