//! Special functions the models need: log-gamma, digamma and the Gaussian
//! hypergeometric function ₂F₁.
//!
//! Why not a general special-functions crate: the models reach ₂F₁ only on
//! `0 ≤ z < 1` with real parameters, and the hot paths need a variant of the
//! series that stays exact where the textbook formula divides by zero
//! (see [`crate::purchase`]). A small, tested implementation is easier to reason
//! about than a general one.

use crate::{Result, ScoreError};

/// Natural log of |Γ(x)|, accurate to a few ulps (libm's `lgamma`).
#[inline]
pub fn ln_gamma(x: f64) -> f64 {
    libm::lgamma(x)
}

/// ln B(a, b) = ln Γ(a) + ln Γ(b) − ln Γ(a + b), for positive arguments.
#[inline]
pub fn ln_beta(a: f64, b: f64) -> f64 {
    ln_gamma(a) + ln_gamma(b) - ln_gamma(a + b)
}

/// The digamma function ψ(x) = d/dx ln Γ(x) for x > 0.
///
/// Shifts the argument above 10 with ψ(x) = ψ(x + 1) − 1/x, then uses the
/// asymptotic series, whose truncation error is below 1e-16 there.
pub fn digamma(mut x: f64) -> f64 {
    let mut shift = 0.0;
    while x < 10.0 {
        shift -= 1.0 / x;
        x += 1.0;
    }
    let inv = 1.0 / x;
    let inv2 = inv * inv;
    // Σ B₂ₖ / (2k x^{2k}) for k = 1..7 (Bernoulli numbers), Horner form.
    let series = inv2
        * (1.0 / 12.0
            - inv2
                * (1.0 / 120.0
                    - inv2
                        * (1.0 / 252.0
                            - inv2 * (1.0 / 240.0 - inv2 * (1.0 / 132.0 - inv2 * (691.0 / 32760.0 - inv2 / 12.0))))));
    shift + x.ln() - 0.5 * inv - series
}

/// ln(e^a + e^b) without overflow.
#[inline]
pub fn log_add_exp(a: f64, b: f64) -> f64 {
    let (hi, lo) = if a >= b { (a, b) } else { (b, a) };
    if lo == f64::NEG_INFINITY {
        return hi;
    }
    hi + (lo - hi).exp().ln_1p()
}

/// Upper bound on series terms before ₂F₁ gives up. At z = 0.999 the series
/// needs about 40,000 terms; the models stay far below this bound for any
/// horizon shorter than a century.
pub(crate) const MAX_TERMS: usize = 5_000_000;

/// The Gaussian hypergeometric function ₂F₁(a, b; c; z) for real parameters and
/// `0 ≤ z < 1`.
///
/// Sums the power series with a term recurrence. Parameters may be negative
/// (c must not be a non-positive integer); the sum may be negative, which
/// happens in the BG/NBD model for one-time buyers when a + b < 1.
///
/// ```
/// # use patron_score::special::hyp2f1;
/// // ₂F₁(1, 1; 2; z) = −ln(1 − z) / z
/// let z = 0.75_f64;
/// let exact = -(1.0 - z).ln() / z;
/// assert!((hyp2f1(1.0, 1.0, 2.0, z).unwrap() - exact).abs() < 1e-14);
/// ```
pub fn hyp2f1(a: f64, b: f64, c: f64, z: f64) -> Result<f64> {
    hyp2f1_bounded(a, b, c, z, MAX_TERMS)
}

/// [`hyp2f1`] that gives up after `max_terms` series terms (z ≤ 1 − 20/max_terms
/// always converges within the bound).
pub fn hyp2f1_bounded(a: f64, b: f64, c: f64, z: f64, max_terms: usize) -> Result<f64> {
    if !(0.0..1.0).contains(&z) || !a.is_finite() || !b.is_finite() || !c.is_finite() {
        return Err(ScoreError::Domain {
            function: "hyp2f1",
            detail: format!("needs finite a, b, c and 0 <= z < 1, got a={a} b={b} c={c} z={z}"),
        });
    }
    if c <= 0.0 && c == c.floor() {
        return Err(ScoreError::Domain { function: "hyp2f1", detail: format!("c = {c} is a non-positive integer") });
    }
    series_tail(a, b, c, z, 1.0, 0, max_terms).map(|tail| 1.0 + tail)
}

/// Σ_{n≥1} tₙ where t₀ = `first` and t_{n+1} = tₙ · (a + n + offset)(b + n + offset) z
/// / ((c + n + offset)(n + offset + 1)), i.e. the ₂F₁ series without its leading 1
/// when `first = 1` and `offset = 0`. Stops once the terms are monotonically
/// shrinking and below 1e-17 of the sum.
pub(crate) fn series_tail(a: f64, b: f64, c: f64, z: f64, first: f64, offset: usize, max_terms: usize) -> Result<f64> {
    let mut term = first;
    let mut sum = 0.0_f64;
    for n in offset..offset + max_terms {
        let k = n as f64;
        let ratio = (a + k) * (b + k) / ((c + k) * (k + 1.0)) * z;
        term *= ratio;
        sum += term;
        if term == 0.0 {
            return Ok(sum);
        }
        // Once |ratio| < 1 and the parameters are all passed, terms only shrink.
        if ratio.abs() < 1.0
            && k + 1.0 > -c
            && k + 1.0 > -a
            && k + 1.0 > -b
            && term.abs() <= 1e-17 * sum.abs().max(f64::MIN_POSITIVE)
        {
            return Ok(sum);
        }
        if !sum.is_finite() {
            break;
        }
    }
    Err(ScoreError::NotConverged {
        function: "hyp2f1",
        detail: format!("series did not converge within {max_terms} terms for a={a} b={b} c={c} z={z}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digamma_matches_known_values() {
        // ψ(1) = −γ, ψ(1/2) = −γ − 2 ln 2, ψ(10) from tables.
        let euler = 0.577_215_664_901_532_9;
        assert!((digamma(1.0) + euler).abs() < 1e-14);
        assert!((digamma(0.5) + euler + 2.0 * 2f64.ln()).abs() < 1e-14);
        assert!((digamma(10.0) - 2.251_752_589_066_721).abs() < 1e-14);
        assert!((digamma(0.01) - -100.560_885_457_869_3).abs() < 1e-10);
    }

    #[test]
    fn digamma_is_derivative_of_ln_gamma() {
        for &x in &[0.05, 0.3, 1.7, 4.2, 33.0, 250.5] {
            let h = 1e-5 * x;
            let numeric = (ln_gamma(x + h) - ln_gamma(x - h)) / (2.0 * h);
            assert!((digamma(x) - numeric).abs() < 1e-6 * (1.0 + numeric.abs()), "x={x}");
        }
    }

    #[test]
    fn hyp2f1_closed_forms() {
        for &z in &[0.0, 0.1, 0.5, 0.9, 0.99, 0.999] {
            // ₂F₁(a, b; b; z) = (1 − z)^(−a)
            let v = hyp2f1(0.37, 2.5, 2.5, z).unwrap();
            assert!((v - (1.0 - z).powf(-0.37)).abs() < 1e-12 * v.abs(), "z={z}");
            // ₂F₁(1/2, 1; 3/2; −x²)… use ₂F₁(1/2, 1/2; 3/2; z²) = asin(z)/z
            if z > 0.0 {
                let s = z.sqrt();
                let v = hyp2f1(0.5, 0.5, 1.5, z).unwrap();
                assert!((v - s.asin() / s).abs() < 1e-12, "z={z}");
            }
        }
    }

    #[test]
    fn hyp2f1_rejects_outside_domain() {
        assert!(hyp2f1(1.0, 1.0, 2.0, 1.0).is_err());
        assert!(hyp2f1(1.0, 1.0, -2.0, 0.5).is_err());
        assert!(hyp2f1(f64::NAN, 1.0, 2.0, 0.5).is_err());
    }

    #[test]
    fn log_add_exp_is_stable() {
        assert_eq!(log_add_exp(1000.0, f64::NEG_INFINITY), 1000.0);
        assert!((log_add_exp(1000.0, 1000.0) - (1000.0 + 2f64.ln())).abs() < 1e-12);
        assert!((log_add_exp(-1000.0, -1001.0) - (-1000.0 + (1.0 + (-1f64).exp()).ln())).abs() < 1e-12);
    }
}
