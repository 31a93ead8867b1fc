//! A 90% interval of each customer's CLV from the uncertainty of the fitted
//! parameters: the delta method on the log scale.
//!
//! CLV = margin · m(p, q, γ; spend) · P(alive) · D(x, T) (see [`crate::clv`]),
//! so ln CLV is a sum of a Gamma-Gamma term and a purchase-model term. The
//! two models are separate maximum-likelihood fits, so their estimates are
//! taken as independent, and to first order
//!
//! ```text
//! Var[ln CLV] ≈ gᵀ Σ_purchase g + hᵀ Σ_spend h,
//! g = ∂ ln(P(alive)·D) / ∂ ln θ,   h = ∂ ln m / ∂ ln(p, q, γ),
//! ```
//!
//! where Σ are the covariances of the log-parameters from the observed
//! information ([`crate::fit::Uncertainty`]) and the gradients are central
//! differences in log-parameters (8 whole-population scorings plus 6
//! order-value evaluations per customer). The interval is
//! CLV · exp(∓1.645 · sd[ln CLV]): positive, and wider above than below, as
//! the distribution of a product of positive estimates is.
//!
//! What it leaves out: the randomness of the customer's own future purchases
//! (it is the uncertainty of the *expected* CLV, not a range for what this
//! customer will spend), model misspecification, terms beyond first order,
//! and the sampling error of the fallback order value used when there is no
//! Gamma-Gamma fit. The test module checks it against a Monte Carlo draw of
//! the parameters from the same normal distribution.

use rayon::prelude::*;

use crate::Result;
use crate::clv::{ScoreInput, Scorer, Scores};
use crate::gamma_gamma::GammaGammaParams;

/// z of a two-sided 90% normal interval.
pub const CLV_INTERVAL_Z: f64 = 1.644_853_626_951_472_2;

/// Step of the central differences, in log-parameters.
const STEP: f64 = 1e-4;

/// Covariances of the logarithms of the fitted parameters, as the fits
/// report them ([`crate::FitReport::log_covariance`]).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ParameterCovariance {
    /// Of the purchase model's four parameters.
    pub purchase: Option<[[f64; 4]; 4]>,
    /// Of Gamma-Gamma's (p, q, γ).
    pub spend: Option<[[f64; 3]; 3]>,
}

impl ParameterCovariance {
    /// From the row-major matrices of two fit reports (`None` for a matrix of
    /// the wrong size or with a non-finite entry).
    pub fn from_row_major(purchase: &[f64], spend: &[f64]) -> Self {
        Self { purchase: square(purchase), spend: square(spend) }
    }
}

fn square<const N: usize>(values: &[f64]) -> Option<[[f64; N]; N]> {
    (values.len() == N * N && values.iter().all(|v| v.is_finite()))
        .then(|| std::array::from_fn(|i| std::array::from_fn(|j| values[i * N + j])))
}

/// The 90% interval `(low, high)` of a CLV whose logarithm has standard deviation `log_spread`.
pub fn clv_interval(clv: f64, log_spread: f64) -> (f64, f64) {
    let factor = (CLV_INTERVAL_Z * log_spread).exp();
    (clv / factor, clv * factor)
}

fn quadratic_form<const N: usize>(v: &[f64; N], m: &[[f64; N]; N]) -> f64 {
    (0..N).map(|i| (0..N).map(|j| v[i] * m[i][j] * v[j]).sum::<f64>()).sum()
}

/// d ln f / d ln θ from f at θ·e^{+STEP} and θ·e^{−STEP}; 0 where f is 0 on both sides.
fn log_slope(up: f64, down: f64) -> f64 {
    if up == 0.0 && down == 0.0 { 0.0 } else { (up.ln() - down.ln()) / (2.0 * STEP) }
}

impl Scorer {
    /// [`Self::score_all`] with each customer's `clv_log_spread` from `covariance`.
    pub fn score_all_with_intervals(
        &self,
        inputs: &[ScoreInput],
        covariance: &ParameterCovariance,
    ) -> Result<Vec<Scores>> {
        let mut scores = self.score_all(inputs)?;
        let spreads = self.clv_log_spreads(inputs, covariance)?;
        scores.par_iter_mut().zip(spreads).for_each(|(s, spread)| s.clv_log_spread = spread);
        Ok(scores)
    }

    /// The standard deviation of ln CLV of every input from `covariance`, in
    /// the order of `inputs`; `None` for everyone when the purchase fit has no
    /// covariance (or the Gamma-Gamma fit in use has none), and for a
    /// customer whose gradient is not finite.
    pub fn clv_log_spreads(&self, inputs: &[ScoreInput], covariance: &ParameterCovariance) -> Result<Vec<Option<f64>>> {
        let Some(purchase_cov) = covariance.purchase else { return Ok(vec![None; inputs.len()]) };
        let spend = match (self.spend(), covariance.spend) {
            (Some(gg), Some(cov)) => Some((gg, cov)),
            (Some(_), None) => return Ok(vec![None; inputs.len()]),
            (None, _) => None,
        };
        let theta = self.purchase().named().map(|(_, v)| v);
        let mut slopes = vec![[0.0; 4]; inputs.len()];
        for j in 0..4 {
            let clv_at = |sign: f64| -> Result<Vec<f64>> {
                let mut moved = theta;
                moved[j] *= (sign * STEP).exp();
                let scorer = self.with_purchase(self.purchase().with_values(moved));
                Ok(scorer.score_all(inputs)?.into_iter().map(|s| s.clv).collect())
            };
            let (up, down) = (clv_at(1.0)?, clv_at(-1.0)?);
            slopes.par_iter_mut().zip(up.par_iter().zip(&down)).for_each(|(g, (u, d))| g[j] = log_slope(*u, *d));
        }
        Ok(inputs
            .par_iter()
            .zip(&slopes)
            .map(|(input, g)| {
                let mut variance = quadratic_form(g, &purchase_cov);
                if let Some((gg, cov)) = spend {
                    variance += quadratic_form(&order_value_slopes(&gg, input)?, &cov);
                }
                let sd = variance.max(0.0).sqrt();
                sd.is_finite().then_some(sd)
            })
            .collect())
    }
}

/// d ln m / d ln (p, q, γ) of one customer's expected order value; `None`
/// where a moved fit has no expected value.
fn order_value_slopes(gg: &GammaGammaParams, input: &ScoreInput) -> Option<[f64; 3]> {
    let base = [gg.p, gg.q, gg.gamma];
    let value_at = |j: usize, sign: f64| {
        let mut v = base;
        v[j] *= (sign * STEP).exp();
        GammaGammaParams { p: v[0], q: v[1], gamma: v[2] }.expected_order_value(input.spend)
    };
    let mut slopes = [0.0; 3];
    for (j, slope) in slopes.iter_mut().enumerate() {
        *slope = log_slope(value_at(j, 1.0)?, value_at(j, -1.0)?);
    }
    Some(slopes)
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use rand_distr::{Distribution, StandardNormal};

    use super::*;
    use crate::clv::ClvConfig;
    use crate::gamma_gamma::SpendHistory;
    use crate::purchase::{BetaGeoParams, PurchaseParams};

    /// A plausible covariance of CDNOW's log-parameters (weeks): the
    /// standard errors lifetimes reports, with a strong r–α correlation.
    fn covariance() -> ParameterCovariance {
        let sd = [0.0126 / 0.243, 0.378 / 4.414, 0.186 / 0.793, 0.705 / 2.426];
        let corr = [[1.0, 0.9, 0.1, 0.1], [0.9, 1.0, 0.1, 0.1], [0.1, 0.1, 1.0, 0.9], [0.1, 0.1, 0.9, 1.0]];
        let gg_sd = [0.15, 0.08, 0.2];
        let gg_corr = [[1.0, -0.3, 0.2], [-0.3, 1.0, 0.7], [0.2, 0.7, 1.0]];
        ParameterCovariance {
            purchase: Some(std::array::from_fn(|i| std::array::from_fn(|j| sd[i] * sd[j] * corr[i][j]))),
            spend: Some(std::array::from_fn(|i| std::array::from_fn(|j| gg_sd[i] * gg_sd[j] * gg_corr[i][j]))),
        }
    }

    fn scorer(purchase: PurchaseParams, spend: GammaGammaParams) -> Scorer {
        Scorer::new(purchase, Some(spend), 35.0, &ClvConfig::default(), 7.0)
    }

    fn customers() -> Vec<ScoreInput> {
        [(0, 0, 270), (2, 210, 270), (5, 60, 270), (12, 265, 270), (1, 7, 30)]
            .into_iter()
            .map(|(x, tx, t)| ScoreInput {
                frequency: x,
                recency_days: tx,
                tenure_days: t,
                spend: SpendHistory { repeat_occasions: x, mean_repeat_value: if x > 0 { 40.0 } else { 0.0 } },
                now_day: 10_000,
            })
            .collect()
    }

    /// The delta interval against the 5% and 95% quantiles of CLV under
    /// 4,000 parameter draws from the normal distribution the interval
    /// assumes (log-parameters, Cholesky factor of Σ).
    #[test]
    fn the_delta_interval_matches_the_quantiles_of_simulated_parameters() {
        let bg = BetaGeoParams { r: 0.243, alpha: 4.414, a: 0.793, b: 2.426 };
        let gg = GammaGammaParams { p: 6.25, q: 3.74, gamma: 15.44 };
        let base = scorer(PurchaseParams::BgNbd(bg), gg);
        let inputs = customers();
        let cov = covariance();
        let spreads = base.clv_log_spreads(&inputs, &cov).unwrap();
        let clv: Vec<f64> = base.score_all(&inputs).unwrap().iter().map(|s| s.clv).collect();

        let purchase_factor = cholesky(cov.purchase.unwrap());
        let spend_factor = cholesky(cov.spend.unwrap());
        let mut rng = StdRng::seed_from_u64(7);
        let draws = 4000;
        let mut simulated: Vec<Vec<f64>> = vec![Vec::with_capacity(draws); inputs.len()];
        for _ in 0..draws {
            let z: [f64; 4] = std::array::from_fn(|_| StandardNormal.sample(&mut rng));
            let w: [f64; 3] = std::array::from_fn(|_| StandardNormal.sample(&mut rng));
            let shift = |factor: &[[f64; 4]; 4], i: usize| (0..4).map(|k| factor[i][k] * z[k]).sum::<f64>();
            let theta = [bg.r, bg.alpha, bg.a, bg.b];
            let moved: [f64; 4] = std::array::from_fn(|i| theta[i] * shift(&purchase_factor, i).exp());
            let gg_shift = |i: usize| (0..3).map(|k| spend_factor[i][k] * w[k]).sum::<f64>();
            let moved_gg = GammaGammaParams {
                p: gg.p * gg_shift(0).exp(),
                q: gg.q * gg_shift(1).exp(),
                gamma: gg.gamma * gg_shift(2).exp(),
            };
            let drawn = scorer(PurchaseParams::BgNbd(bg).with_values(moved), moved_gg);
            for (i, s) in drawn.score_all(&inputs).unwrap().iter().enumerate() {
                simulated[i].push(s.clv);
            }
        }
        for (i, sims) in simulated.iter_mut().enumerate() {
            sims.sort_by(f64::total_cmp);
            let (lo, hi) = (sims[draws / 20], sims[draws * 19 / 20]);
            let (low, high) = clv_interval(clv[i], spreads[i].unwrap());
            // First-order propagation of a ~10-20% parameter uncertainty: the
            // simulated quantiles agree to a few percent of CLV.
            assert!((low - lo).abs() < 0.06 * clv[i], "customer {i}: delta low {low}, simulated {lo} (clv {})", clv[i]);
            assert!(
                (high - hi).abs() < 0.06 * clv[i],
                "customer {i}: delta high {high}, simulated {hi} (clv {})",
                clv[i]
            );
            assert!(low < clv[i] && clv[i] < high);
        }
    }

    #[test]
    fn without_a_covariance_there_is_no_interval() {
        let gg = GammaGammaParams { p: 6.25, q: 3.74, gamma: 15.44 };
        let s = scorer(PurchaseParams::BgNbd(BetaGeoParams { r: 0.243, alpha: 4.414, a: 0.793, b: 2.426 }), gg);
        let inputs = customers();
        assert!(s.clv_log_spreads(&inputs, &ParameterCovariance::default()).unwrap().iter().all(Option::is_none));
        let only_purchase = ParameterCovariance { spend: None, ..covariance() };
        assert!(s.clv_log_spreads(&inputs, &only_purchase).unwrap().iter().all(Option::is_none));
        assert_eq!(ParameterCovariance::from_row_major(&[1.0; 16], &[1.0; 8]).spend, None);
        assert!(ParameterCovariance::from_row_major(&[1.0; 16], &[1.0; 9]).spend.is_some());
    }

    fn cholesky<const N: usize>(m: [[f64; N]; N]) -> [[f64; N]; N] {
        let mut l = [[0.0; N]; N];
        for i in 0..N {
            for j in 0..=i {
                let s: f64 = (0..j).map(|k| l[i][k] * l[j][k]).sum();
                l[i][j] = if i == j { (m[i][i] - s).sqrt() } else { (m[i][j] - s) / l[j][j] };
            }
        }
        l
    }
}
