//! Deterministic synthetic customers drawn from the generative processes the
//! models assume, for benchmarks, capacity tests and model-recovery tests.
//!
//! Each customer: purchase rate λ ~ Gamma(r, α), dropout probability
//! p ~ Beta(a, b) (BG/NBD: after each repeat purchase the customer leaves with
//! probability p), purchases as a Poisson process in whole UTC days over a
//! tenure drawn uniformly from the given range, and occasion values from the
//! Gamma-Gamma process. The same seed gives the same customers on any machine
//! and thread count.
//!
//! ```
//! use patron_score::BetaGeoParams;
//! use patron_workload::{Population, synthetic_customers};
//! let population = Population::default();
//! let a = synthetic_customers(&population, 1_000, 7);
//! assert_eq!(a, synthetic_customers(&population, 1_000, 7));
//! assert!(a.iter().all(|c| c.recency_days <= c.tenure_days));
//! ```
#![deny(missing_docs)]

mod events;

pub use events::{EventStream, ShopConfig};

use patron_score::{BetaGeoParams, GammaGammaParams, ScoreInput, SpendHistory};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Beta, Distribution, Exp, Gamma};
use rayon::prelude::*;

/// Parameters of a synthetic customer population (time in days).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Population {
    /// BG/NBD purchase and dropout process, α in days.
    pub purchase: BetaGeoParams,
    /// Gamma-Gamma spend process.
    pub spend: GammaGammaParams,
    /// Shortest tenure (days since first purchase).
    pub min_tenure_days: u32,
    /// Longest tenure.
    pub max_tenure_days: u32,
}

impl Default for Population {
    /// The published CDNOW estimates (α converted to days), tenures up to two years.
    fn default() -> Self {
        Self {
            purchase: BetaGeoParams { r: 0.243, alpha: 4.414 * 7.0, a: 0.793, b: 2.426 },
            spend: GammaGammaParams { p: 6.25, q: 3.74, gamma: 15.44 },
            min_tenure_days: 1,
            max_tenure_days: 730,
        }
    }
}

/// Customers generated per independently seeded block (keeps results
/// independent of the thread count).
const BLOCK: usize = 16_384;

/// `n` synthetic customers; deterministic in (`population`, `n`, `seed`).
pub fn synthetic_customers(population: &Population, n: usize, seed: u64) -> Vec<ScoreInput> {
    (0..n.div_ceil(BLOCK))
        .into_par_iter()
        .flat_map_iter(|block| {
            let mut rng = StdRng::seed_from_u64(seed ^ (block as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let count = BLOCK.min(n - block * BLOCK);
            (0..count).map(move |_| one_customer(population, &mut rng)).collect::<Vec<_>>()
        })
        .collect()
}

fn one_customer(population: &Population, rng: &mut StdRng) -> ScoreInput {
    let BetaGeoParams { r, alpha, a, b } = population.purchase;
    let rate = Gamma::new(r, 1.0 / alpha).map_or(0.0, |g| g.sample(rng));
    let dropout = Beta::new(a, b).map_or(0.5, |d| d.sample(rng));
    let tenure_days =
        rng.random_range(population.min_tenure_days..=population.max_tenure_days.max(population.min_tenure_days));
    let GammaGammaParams { p, q, gamma } = population.spend;
    let spend_rate = Gamma::new(q, 1.0 / gamma).map_or(1.0, |g| g.sample(rng));
    let occasion_value = Gamma::new(p, 1.0 / spend_rate).ok();
    let (mut frequency, mut last_day, mut value_sum) = (0u32, 0u32, 0.0);
    if let Ok(gap) = Exp::new(rate.max(1e-12)) {
        let mut t = 0.0;
        loop {
            t += gap.sample(rng);
            if t >= f64::from(tenure_days) + 1.0 {
                break;
            }
            let day = t as u32;
            if day > last_day {
                frequency += 1;
                last_day = day;
                value_sum += occasion_value.map_or(0.0, |g| g.sample(rng));
            }
            if rng.random::<f64>() < dropout {
                break;
            }
        }
    }
    ScoreInput {
        frequency,
        recency_days: last_day,
        tenure_days,
        spend: SpendHistory {
            repeat_occasions: frequency,
            mean_repeat_value: if frequency > 0 { value_sum / f64::from(frequency) } else { 0.0 },
        },
        now_day: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use patron_score::{History, PurchaseModel, fit_gamma_gamma, fit_purchase_model};

    /// Fitting data drawn from known parameters gives them back: checks the
    /// generator and the fit against each other on 100k customers.
    #[test]
    fn fit_recovers_the_generating_parameters() {
        let population = Population::default();
        let customers = synthetic_customers(&population, 100_000, 42);
        let histories: Vec<History> = customers
            .iter()
            .map(|c| History::new(c.frequency, f64::from(c.recency_days), f64::from(c.tenure_days)))
            .collect();
        let fit = fit_purchase_model(PurchaseModel::BgNbd, &histories).unwrap();
        let truth = population.purchase;
        for ((name, got), want) in fit.params.named().iter().zip([truth.r, truth.alpha, truth.a, truth.b]) {
            assert!((got - want).abs() < 0.15 * want, "{name}: fitted {got}, generated with {want}");
        }
        let spends: Vec<SpendHistory> = customers.iter().map(|c| c.spend).collect();
        let gg = fit_gamma_gamma(&spends).unwrap();
        let mean = gg.params.population_mean().unwrap();
        let true_mean = population.spend.population_mean().unwrap();
        assert!((mean - true_mean).abs() < 0.1 * true_mean, "population mean order value {mean} vs {true_mean}");
    }
}
