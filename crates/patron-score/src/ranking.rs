//! Recommendation math: item-to-item similarity from co-purchase counts, and
//! the ranking metrics the offline evaluation reports.
//!
//! Co-purchase weights are time-decayed sums (see `patron_state::items`); every
//! measure here is a ratio of such sums, so it does not depend on the decay's
//! reference time.
//!
//! ```
//! use patron_score::{Similarity, hit_rate, ndcg};
//! // 8 baskets hold both items, 20 hold `i`, 10 hold `j`.
//! let cosine = Similarity::Cosine.score(8.0, 8, 20.0, 10.0);
//! assert!((cosine - 8.0 / 200f64.sqrt()).abs() < 1e-12);
//! // The list [a, b, c] against the basket {c}: a hit at rank 3.
//! assert_eq!(hit_rate(&["a", "b", "c"], &["c"]), 1.0);
//! assert!((ndcg(&["a", "b", "c"], &["c"]) - 0.5).abs() < 1e-12);
//! ```

use serde::{Deserialize, Serialize};

/// How co-purchases become a similarity that discounts popularity.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "measure")]
pub enum Similarity {
    /// `c_ij / sqrt(n_i n_j)`: co-purchases over the geometric mean of the two products' orders.
    Cosine,
    /// Cosine times `count / (count + shrinkage)`: pairs seen together only a
    /// few times are pulled towards zero, so chance co-occurrences of rare
    /// products do not outrank well-supported ones.
    ShrunkCosine {
        /// Pseudo-count (co-purchase orders) at which a pair keeps half its cosine.
        shrinkage: f64,
    },
    /// `c_ij / (n_i + n_j − c_ij)`: the share of orders holding either
    /// product that hold both.
    Jaccard,
}

impl Similarity {
    /// The similarity of `i` → `j` given their decayed co-purchase weight
    /// `co`, the number of orders behind it `count`, and each product's
    /// decayed order weight. 0 when any weight is not positive.
    pub fn score(self, co: f64, count: u32, orders_i: f64, orders_j: f64) -> f64 {
        if !(co > 0.0 && orders_i > 0.0 && orders_j > 0.0) {
            return 0.0;
        }
        match self {
            Self::Cosine => co / (orders_i * orders_j).sqrt(),
            Self::ShrunkCosine { shrinkage } => {
                let count = f64::from(count);
                co / (orders_i * orders_j).sqrt() * count / (count + shrinkage.max(0.0))
            }
            Self::Jaccard => co / (orders_i + orders_j - co).max(co),
        }
    }

    /// Short name for reports.
    pub fn name(self) -> String {
        match self {
            Self::Cosine => "cosine".into(),
            Self::ShrunkCosine { shrinkage } => format!("shrunk_cosine({shrinkage})"),
            Self::Jaccard => "jaccard".into(),
        }
    }
}

impl Default for Similarity {
    /// Chosen by `patron eval-recs` on UCI Online Retail (see bench-results/recs).
    fn default() -> Self {
        Self::ShrunkCosine { shrinkage: 5.0 }
    }
}

/// 1 if any of `ranked` is relevant, else 0.
pub fn hit_rate<T: PartialEq>(ranked: &[T], relevant: &[T]) -> f64 {
    f64::from(u8::from(ranked.iter().any(|r| relevant.contains(r))))
}

/// Share of the relevant items that appear in `ranked`.
pub fn recall<T: PartialEq>(ranked: &[T], relevant: &[T]) -> f64 {
    if relevant.is_empty() {
        return 0.0;
    }
    ranked.iter().filter(|r| relevant.contains(r)).count() as f64 / relevant.len() as f64
}

/// Normalised discounted cumulative gain with binary relevance: the gain of a
/// hit at rank `i` (from 1) is `1 / log2(i + 1)`, normalised by the gain of
/// the best possible list of the same length.
pub fn ndcg<T: PartialEq>(ranked: &[T], relevant: &[T]) -> f64 {
    let gain = |rank: usize| 1.0 / ((rank + 1) as f64).log2();
    let dcg: f64 = ranked.iter().enumerate().filter(|(_, r)| relevant.contains(r)).map(|(i, _)| gain(i + 1)).sum();
    let ideal: f64 = (1..=relevant.len().min(ranked.len())).map(gain).sum();
    if ideal == 0.0 { 0.0 } else { dcg / ideal }
}

/// Average precision at the list's length: the mean over hits of the
/// precision at each hit's rank, divided by `min(|relevant|, |ranked|)`.
pub fn average_precision<T: PartialEq>(ranked: &[T], relevant: &[T]) -> f64 {
    let denominator = relevant.len().min(ranked.len());
    if denominator == 0 {
        return 0.0;
    }
    let mut hits = 0;
    let mut sum = 0.0;
    for (i, r) in ranked.iter().enumerate() {
        if relevant.contains(r) {
            hits += 1;
            sum += f64::from(hits) / (i + 1) as f64;
        }
    }
    sum / denominator as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_match_a_hand_worked_list() {
        // Ranked [a, b, c, d, e], relevant {b, e, z}: hits at ranks 2 and 5.
        let ranked = ["a", "b", "c", "d", "e"];
        let relevant = ["b", "e", "z"];
        assert_eq!(hit_rate(&ranked, &relevant), 1.0);
        assert!((recall(&ranked, &relevant) - 2.0 / 3.0).abs() < 1e-12);
        // DCG = 1/log2(3) + 1/log2(6); IDCG = 1 + 1/log2(3) + 1/2.
        let dcg = 1.0 / 3f64.log2() + 1.0 / 6f64.log2();
        let idcg = 1.0 + 1.0 / 3f64.log2() + 0.5;
        assert!((ndcg(&ranked, &relevant) - dcg / idcg).abs() < 1e-12);
        // AP = (1/2 + 2/5) / 3.
        assert!((average_precision(&ranked, &relevant) - 0.3).abs() < 1e-12);
        assert_eq!(hit_rate(&ranked, &["q"]), 0.0);
        assert_eq!(ndcg::<&str>(&[], &["q"]), 0.0);
    }

    #[test]
    fn shrinkage_prefers_well_supported_pairs() {
        let shrunk = Similarity::ShrunkCosine { shrinkage: 5.0 };
        // Same cosine (0.5), different support.
        let rare = shrunk.score(1.0, 1, 2.0, 2.0);
        let common = shrunk.score(50.0, 50, 100.0, 100.0);
        assert!(common > rare);
        assert_eq!(Similarity::Cosine.score(1.0, 1, 2.0, 2.0), Similarity::Cosine.score(50.0, 50, 100.0, 100.0));
        assert!((Similarity::Jaccard.score(2.0, 2, 4.0, 6.0) - 0.25).abs() < 1e-12);
        assert_eq!(Similarity::Cosine.score(0.0, 0, 1.0, 1.0), 0.0);
        assert_eq!(Similarity::Cosine.score(1.0, 1, 0.0, 1.0), 0.0);
    }
}
