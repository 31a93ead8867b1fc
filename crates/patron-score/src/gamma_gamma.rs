//! Gamma-Gamma spend model (Fader, Hardie & Lee 2005, "RFM and CLV: using
//! iso-value curves for customer base analysis").
//!
//! The value of each occasion is Gamma(p, ν) with ν ~ Gamma(q, γ) across
//! customers; it is fitted on customers with at least one repeat occasion and a
//! positive mean repeat value, and gives each customer's expected order value
//! as a credibility-weighted blend of the population mean and their own mean.

use serde::{Deserialize, Serialize};

use crate::special::ln_gamma;

/// One customer's spend summary: the mean value of their repeat occasions.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct SpendHistory {
    /// x: repeat occasions the mean is taken over.
    pub repeat_occasions: u32,
    /// z̄: mean value of the repeat occasions (first occasion excluded).
    pub mean_repeat_value: f64,
}

impl SpendHistory {
    /// Whether this customer carries information for the Gamma-Gamma fit.
    pub fn is_informative(&self) -> bool {
        self.repeat_occasions > 0 && self.mean_repeat_value > 0.0 && self.mean_repeat_value.is_finite()
    }
}

/// Gamma-Gamma parameters.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct GammaGammaParams {
    /// Shape of the per-occasion value distribution.
    pub p: f64,
    /// Shape of the distribution of ν across customers.
    pub q: f64,
    /// Scale of the distribution of ν across customers (money units).
    pub gamma: f64,
}

impl GammaGammaParams {
    /// Parameters by their contract names.
    pub fn named(&self) -> [(&'static str, f64); 3] {
        [("p", self.p), ("q", self.q), ("gamma", self.gamma)]
    }

    /// Log-density of one customer's mean spend (the form lifetimes and CLVTools fit).
    pub fn log_likelihood(&self, s: SpendHistory) -> f64 {
        let Self { p, q, gamma } = *self;
        let x = f64::from(s.repeat_occasions);
        let m = s.mean_repeat_value;
        ln_gamma(p * x + q) - ln_gamma(p * x) - ln_gamma(q) + q * gamma.ln() + (p * x - 1.0) * m.ln() + p * x * x.ln()
            - (p * x + q) * (gamma + m * x).ln()
    }

    /// Mean order value over the population, p·γ / (q − 1); `None` when q ≤ 1
    /// (the mean does not exist).
    pub fn population_mean(&self) -> Option<f64> {
        (self.q > 1.0).then(|| self.p * self.gamma / (self.q - 1.0))
    }

    /// Expected value of this customer's future orders. Customers without an
    /// informative spend history get the population mean.
    pub fn expected_order_value(&self, s: SpendHistory) -> Option<f64> {
        if !s.is_informative() {
            return self.population_mean();
        }
        let x = f64::from(s.repeat_occasions);
        let denom = self.p * x + self.q - 1.0;
        (denom > 0.0).then(|| self.p * (self.gamma + x * s.mean_repeat_value) / denom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_value_blends_population_and_own_mean() {
        let gg = GammaGammaParams { p: 6.25, q: 3.74, gamma: 15.44 };
        let pop = gg.population_mean().unwrap();
        let few = gg.expected_order_value(SpendHistory { repeat_occasions: 1, mean_repeat_value: 100.0 }).unwrap();
        let many = gg.expected_order_value(SpendHistory { repeat_occasions: 50, mean_repeat_value: 100.0 }).unwrap();
        assert!(pop < few && few < many && many < 100.0);
        let none = gg.expected_order_value(SpendHistory { repeat_occasions: 0, mean_repeat_value: 0.0 }).unwrap();
        assert_eq!(none, pop);
        assert!(GammaGammaParams { q: 0.9, ..gg }.population_mean().is_none());
    }
}
