//! Maximum-likelihood fits of the purchase models and the Gamma-Gamma model.
//!
//! - Customers with identical histories contribute identically, so histories
//!   are compressed to distinct (x, t_x, T) with a weight before any sum.
//! - Sums run over fixed chunks on the rayon pool and are added in chunk order,
//!   so a fit is bit-for-bit reproducible whatever the thread count.
//! - Parameters are optimised in log space (positivity for free) with BFGS and
//!   an Armijo line search. BG/NBD, MBG/NBD and Gamma-Gamma use analytic
//!   gradients whose log-gamma and digamma terms are computed once per distinct
//!   x; Pareto/NBD uses central differences.
//! - Time (and spend) is rescaled so the data lie in a unit range while
//!   optimising; parameters and the log-likelihood are reported unscaled.

use std::time::{Duration, Instant};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::gamma_gamma::{GammaGammaParams, SpendHistory};
use crate::purchase::{BetaGeoParams, History, ParetoParams, PurchaseModel, PurchaseParams};
use crate::special::{digamma, ln_beta, ln_gamma, log_add_exp};
use crate::{Result, ScoreError};

/// What a fit found and how it got there.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FitReport<P> {
    /// Fitted parameters, in the time (and money) unit of the input.
    pub params: P,
    /// Total log-likelihood at the optimum, over all customers.
    pub log_likelihood: f64,
    /// Customers the fit used.
    pub customers: u64,
    /// Distinct histories after compression.
    pub distinct_histories: usize,
    /// Optimiser iterations.
    pub iterations: usize,
    /// Log-likelihood (and gradient) evaluations.
    pub evaluations: usize,
    /// Wall time of the fit.
    pub seconds: f64,
    /// Standard error of each parameter, in the order of the parameters
    /// (`r, alpha, a, b`; `r, alpha, s, beta`; `p, q, gamma`), from the
    /// observed information: the inverse Hessian of the negative
    /// log-likelihood at the optimum ([`purchase_uncertainty`],
    /// [`gamma_gamma_uncertainty`]; the fits themselves leave this empty).
    /// Empty when that Hessian is not positive definite (the data do not pin
    /// the parameters down), or for fits kept from before standard errors existed.
    /// For a fit on a bound ([`Self::boundary`]), NaN for each parameter on
    /// its bound, and for the others the errors given those at their bound
    /// (from the Hessian's block of the free parameters).
    #[serde(default)]
    pub std_errors: Vec<f64>,
    /// Covariance matrix of the logarithms of the parameters (same order,
    /// row-major, N × N): the inverse of that Hessian in log-parameters. The
    /// CLV intervals propagate it. Empty when `std_errors` is, and for a fit
    /// on a bound.
    #[serde(default)]
    pub log_covariance: Vec<f64>,
    /// Parameters that ended on the edge of what the data can identify, each
    /// with what it means for the scores (empty for an interior optimum).
    #[serde(default)]
    pub boundary: Vec<AtBound>,
}

impl<P> FitReport<P> {
    /// The fit with the standard errors and covariance of `uncertainty`.
    /// A fit with a parameter on its bound keeps no covariance and no error
    /// for that parameter: the curvature there describes the edge of the
    /// box, not the data, and would give CLV intervals that look precise and
    /// are not. The free parameters keep their errors given the bound ones.
    pub fn with_uncertainty(mut self, uncertainty: Uncertainty) -> Self {
        if !self.boundary.is_empty() {
            self.std_errors = uncertainty.given_bound(&self.boundary);
            return self;
        }
        self.std_errors = uncertainty.std_errors;
        self.log_covariance = uncertainty.log_covariance;
        self
    }
}

/// What the observed information says about fitted parameters; both empty
/// when the Hessian is not positive definite or could not be computed in time.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Uncertainty {
    /// Standard error of each parameter.
    pub std_errors: Vec<f64>,
    /// Covariance of the parameters' logarithms, row-major N × N.
    pub log_covariance: Vec<f64>,
    /// The parameters' names, in order (for the errors of a fit on a bound,
    /// see [`FitReport::with_uncertainty`]); empty when the Hessian could not be computed.
    pub names: Vec<&'static str>,
    /// The parameters' values.
    pub values: Vec<f64>,
    /// The Hessian of the negative log-likelihood in the parameters'
    /// logarithms, row-major N × N.
    pub log_hessian: Vec<f64>,
}

impl Uncertainty {
    /// Standard errors with the parameters in `bound` held at their bound:
    /// NaN for every parameter of a mechanism that reached its bound (for a
    /// purchase model the rates r, α or the dropout, as in `check_one_limit`:
    /// the data pin neither of its two parameters), and for the others the
    /// delta method on the inverse of the Hessian's block of the free
    /// parameters. Empty when that block is not positive definite.
    fn given_bound(&self, bound: &[AtBound]) -> Vec<f64> {
        let n = self.names.len();
        if self.log_hessian.len() != n * n || self.values.len() != n {
            return Vec::new();
        }
        let is_bound = |i: usize| bound.iter().any(|b| b.parameter == self.names[i]);
        let mechanism = |i: usize| if n == 4 { i / 2 } else { i };
        let free: Vec<usize> =
            (0..n).filter(|&i| !(0..n).any(|j| is_bound(j) && mechanism(j) == mechanism(i))).collect();
        let block = |i: usize, j: usize| self.log_hessian[free[i] * n + free[j]];
        let diagonal: Option<Vec<f64>> = match free.len() {
            1 => (block(0, 0) > 0.0).then(|| vec![1.0 / block(0, 0)]),
            2 => invert_positive_definite::<2>(std::array::from_fn(|i| std::array::from_fn(|j| block(i, j))))
                .map(|inverse| (0..2).map(|i| inverse[i][i]).collect()),
            3 => invert_positive_definite::<3>(std::array::from_fn(|i| std::array::from_fn(|j| block(i, j))))
                .map(|inverse| (0..3).map(|i| inverse[i][i]).collect()),
            _ => None,
        };
        let Some(diagonal) = diagonal else { return Vec::new() };
        let mut errors = vec![f64::NAN; n];
        for (k, &i) in free.iter().enumerate() {
            errors[i] = self.values[i] * diagonal[k].sqrt();
        }
        errors
    }
}

/// The uncertainty of θ = e^φ from `hessian`, the Hessian of the total
/// negative log-likelihood in log-parameters φ at the optimum: inverted into
/// the covariance of φ, then the delta method se(θᵢ) = θᵢ √(H⁻¹)ᵢᵢ. Empty
/// if the Hessian is not positive definite.
fn uncertainty_from_hessian<const N: usize>(
    hessian: Option<[[f64; N]; N]>,
    names: [&'static str; N],
    theta: &[f64; N],
) -> Uncertainty {
    let Some(hessian) = hessian else { return Uncertainty::default() };
    let kept = Uncertainty {
        names: names.to_vec(),
        values: theta.to_vec(),
        log_hessian: hessian.iter().flatten().copied().collect(),
        ..Uncertainty::default()
    };
    let Some(covariance) = invert_positive_definite(hessian) else { return kept };
    Uncertainty {
        std_errors: (0..N).map(|i| theta[i] * covariance[i][i].sqrt()).collect(),
        log_covariance: covariance.iter().flatten().copied().collect(),
        ..kept
    }
}

/// Step of the central differences in log-parameters.
const HESSIAN_STEP: f64 = 1e-4;

/// The Hessian in log-parameters by central differences of `gradient` (of
/// the total negative log-likelihood in φ): 2N gradients, symmetrised.
fn hessian_from_gradient<const N: usize>(
    gradient: impl Fn(&[f64; N]) -> Option<[f64; N]>,
    phi: &[f64; N],
) -> Option<[[f64; N]; N]> {
    let mut hessian = [[0.0; N]; N];
    for j in 0..N {
        let (mut up, mut down) = (*phi, *phi);
        up[j] += HESSIAN_STEP;
        down[j] -= HESSIAN_STEP;
        let (g_up, g_down) = (gradient(&up)?, gradient(&down)?);
        for i in 0..N {
            hessian[i][j] = (g_up[i] - g_down[i]) / (2.0 * HESSIAN_STEP);
        }
    }
    let symmetric = std::array::from_fn(|i| std::array::from_fn(|j| 0.5 * (hessian[i][j] + hessian[j][i])));
    Some(symmetric).filter(|h: &[[f64; N]; N]| h.iter().flatten().all(|v| v.is_finite()))
}

/// The Hessian in log-parameters by central differences of `value` (the
/// total negative log-likelihood in φ): for models without an analytic gradient.
fn hessian_from_value<const N: usize>(
    value: impl Fn(&[f64; N]) -> Option<f64>,
    phi: &[f64; N],
) -> Option<[[f64; N]; N]> {
    let h = HESSIAN_STEP;
    let at = |moves: &[(usize, f64)]| {
        let mut point = *phi;
        for &(i, by) in moves {
            point[i] += by;
        }
        value(&point).filter(|v| v.is_finite())
    };
    let centre = at(&[])?;
    // The lower triangle, then mirrored.
    let mut lower = [[0.0; N]; N];
    for (i, row) in lower.iter_mut().enumerate() {
        for (j, cell) in row.iter_mut().enumerate().take(i + 1) {
            *cell = if i == j {
                (at(&[(i, h)])? - 2.0 * centre + at(&[(i, -h)])?) / (h * h)
            } else {
                (at(&[(i, h), (j, h)])? - at(&[(i, h), (j, -h)])? - at(&[(i, -h), (j, h)])? + at(&[(i, -h), (j, -h)])?)
                    / (4.0 * h * h)
            };
        }
    }
    let hessian = std::array::from_fn(|i| std::array::from_fn(|j| lower[i.max(j)][i.min(j)]));
    Some(hessian)
}

/// Standard errors and log-covariance of a purchase model's parameters on
/// `data` (in the order of [`PurchaseParams::named`]), from the observed information at `params`,
/// which should be the maximum-likelihood fit on `data`: the Hessian by
/// central differences of the analytic gradient (BG/NBD, MBG/NBD: 8
/// gradients) or of the value (Pareto/NBD: 33 values). Empty when that
/// Hessian is not positive definite, or when the evaluations run past
/// `budget` (a Pareto/NBD likelihood can take seconds on degenerate data,
/// and a refit must not stall on its errors any more than on its fit).
pub fn purchase_uncertainty(params: &PurchaseParams, data: &CompressedHistories, budget: Duration) -> Uncertainty {
    let deadline = Instant::now() + budget;
    let in_time = || Instant::now() < deadline;
    let theta: [f64; 4] = params.named().map(|(_, v)| v);
    let names: [&'static str; 4] = params.named().map(|(k, _)| k);
    let phi = theta.map(f64::ln);
    let hessian = match params {
        PurchaseParams::BgNbd(_) | PurchaseParams::MbgNbd(_) => {
            let modified = matches!(params, PurchaseParams::MbgNbd(_));
            hessian_from_gradient(
                |phi| {
                    let [r, alpha, a, b] = phi.map(f64::exp);
                    in_time().then_some(())?;
                    let (_, g) = beta_geo_objective(data, &BetaGeoParams { r, alpha, a, b }, modified);
                    Some([-g[0] * r, -g[1] * alpha, -g[2] * a, -g[3] * b])
                },
                &phi,
            )
        }
        PurchaseParams::ParetoNbd(_) => hessian_from_value(
            |phi| {
                let [r, alpha, s, beta] = phi.map(f64::exp);
                in_time().then_some(())?;
                purchase_log_likelihood(&PurchaseParams::ParetoNbd(ParetoParams { r, alpha, s, beta }), data)
                    .ok()
                    .map(|ll| -ll)
            },
            &phi,
        ),
    };
    uncertainty_from_hessian(hessian, names, &theta)
}

/// Standard errors and log-covariance of Gamma-Gamma's (p, q, γ) on `spends`, from the observed
/// information at `params` (the fit on `spends`): central differences of the
/// analytic gradient, 6 gradients. Empty when the Hessian is not positive definite.
pub fn gamma_gamma_uncertainty(params: &GammaGammaParams, spends: &[SpendHistory]) -> Uncertainty {
    let table = SpendTable::new(spends);
    let theta = [params.p, params.q, params.gamma];
    let hessian = hessian_from_gradient(
        |phi| {
            let [p, q, gamma] = phi.map(f64::exp);
            let (_, g) = table.objective(p, q, gamma);
            Some([-g[0] * p, -g[1] * q, -g[2] * gamma])
        },
        &theta.map(f64::ln),
    );
    uncertainty_from_hessian(hessian, ["p", "q", "gamma"], &theta)
}

/// The inverse of a symmetric positive definite matrix by its Cholesky
/// factor; `None` if it is not positive definite.
fn invert_positive_definite<const N: usize>(m: [[f64; N]; N]) -> Option<[[f64; N]; N]> {
    // m = L Lᵀ.
    let mut l = [[0.0; N]; N];
    for i in 0..N {
        for j in 0..=i {
            let sum: f64 = (0..j).map(|k| l[i][k] * l[j][k]).sum();
            if i == j {
                let d = m[i][i] - sum;
                if !(d > 0.0 && d.is_finite()) {
                    return None;
                }
                l[i][i] = d.sqrt();
            } else {
                l[i][j] = (m[i][j] - sum) / l[j][j];
            }
        }
    }
    // Columns of m⁻¹ from L y = eⱼ, then Lᵀ x = y.
    let mut inverse = [[0.0; N]; N];
    for column in 0..N {
        let mut y = [0.0; N];
        for i in 0..N {
            let e = if i == column { 1.0 } else { 0.0 };
            y[i] = (e - (0..i).map(|k| l[i][k] * y[k]).sum::<f64>()) / l[i][i];
        }
        let mut x = [0.0; N];
        for i in (0..N).rev() {
            x[i] = (y[i] - (i + 1..N).map(|k| l[k][i] * x[k]).sum::<f64>()) / l[i][i];
        }
        for (row, value) in inverse.iter_mut().zip(x) {
            row[column] = value;
        }
    }
    Some(inverse)
}

/// Histories compressed to distinct (x, t_x, T) with multiplicities, sorted by x.
#[derive(Clone, Debug, Default)]
pub struct CompressedHistories {
    frequency: Vec<u32>,
    recency: Vec<f64>,
    tenure: Vec<f64>,
    weight: Vec<f64>,
    /// Index into `distinct_frequencies` for each row.
    group: Vec<u32>,
    distinct_frequencies: Vec<u32>,
    customers: u64,
}

const CHUNK: usize = 4096;

impl CompressedHistories {
    /// Validates and compresses histories. Fails on the first impossible one.
    pub fn new(histories: &[History]) -> Result<Self> {
        Self::validate(histories.iter().copied())?;
        let mut keys: Vec<(u32, u64, u64)> =
            histories.par_iter().map(|h| (h.frequency, h.recency.to_bits(), h.tenure.to_bits())).collect();
        keys.par_sort_unstable();
        Ok(Self::from_sorted(keys.into_iter().map(|key| (key, 1))))
    }

    /// Validates and compresses histories given with their number of
    /// customers, in any order: the same table [`Self::new`] makes of the
    /// histories repeated that often (how a fleet fits on its partitions'
    /// tables together).
    pub fn from_counts(histories: &[(History, u64)]) -> Result<Self> {
        Self::validate(histories.iter().map(|(h, _)| *h))?;
        let mut keys: Vec<((u32, u64, u64), u64)> = histories
            .par_iter()
            .map(|(h, count)| ((h.frequency, h.recency.to_bits(), h.tenure.to_bits()), *count))
            .collect();
        keys.par_sort_unstable();
        Ok(Self::from_sorted(keys.into_iter()))
    }

    fn validate(histories: impl Iterator<Item = History>) -> Result<()> {
        for (index, h) in histories.enumerate() {
            if !(h.recency.is_finite() && h.tenure.is_finite() && h.recency >= 0.0 && h.recency <= h.tenure)
                || (h.frequency == 0 && h.recency != 0.0)
            {
                return Err(ScoreError::InvalidHistory { index, history: h });
            }
        }
        Ok(())
    }

    /// Keys `(x, t_x bits, T bits)` in ascending order, with their counts.
    fn from_sorted(keys: impl Iterator<Item = ((u32, u64, u64), u64)>) -> Self {
        let mut out = Self::default();
        for (key, count) in keys {
            out.customers += count;
            if out.frequency.last() == Some(&key.0)
                && out.recency.last().map(|v| v.to_bits()) == Some(key.1)
                && out.tenure.last().map(|v| v.to_bits()) == Some(key.2)
            {
                if let Some(w) = out.weight.last_mut() {
                    *w += count as f64;
                }
                continue;
            }
            if out.distinct_frequencies.last() != Some(&key.0) {
                out.distinct_frequencies.push(key.0);
            }
            out.group.push((out.distinct_frequencies.len() - 1) as u32);
            out.frequency.push(key.0);
            out.recency.push(f64::from_bits(key.1));
            out.tenure.push(f64::from_bits(key.2));
            out.weight.push(count as f64);
        }
        out
    }

    /// Number of distinct histories.
    pub fn len(&self) -> usize {
        self.frequency.len()
    }

    /// Whether there are no histories.
    pub fn is_empty(&self) -> bool {
        self.frequency.is_empty()
    }

    fn scaled(&self, time_scale: f64) -> Self {
        Self {
            recency: self.recency.iter().map(|v| v / time_scale).collect(),
            tenure: self.tenure.iter().map(|v| v / time_scale).collect(),
            ..self.clone()
        }
    }

    /// Every `stride`-th row with its weight: a sample that estimates the
    /// same per-customer mean (for [`minimize_warm`]).
    fn every(&self, stride: usize) -> Self {
        let pick = |column: &Vec<f64>| column.iter().step_by(stride).copied().collect::<Vec<f64>>();
        let weight = pick(&self.weight);
        Self {
            frequency: self.frequency.iter().step_by(stride).copied().collect(),
            recency: pick(&self.recency),
            tenure: pick(&self.tenure),
            customers: weight.iter().sum::<f64>() as u64,
            weight,
            group: self.group.iter().step_by(stride).copied().collect(),
            distinct_frequencies: self.distinct_frequencies.clone(),
        }
    }

    fn history(&self, i: usize) -> History {
        History::new(self.frequency[i], self.recency[i], self.tenure[i])
    }
}

/// Sums `f(range)` over fixed chunks of `0..len` in parallel, added in order.
fn chunked_sum<const N: usize>(len: usize, f: impl Fn(std::ops::Range<usize>) -> [f64; N] + Sync) -> [f64; N] {
    let parts: Vec<[f64; N]> =
        (0..len.div_ceil(CHUNK)).into_par_iter().map(|c| f(c * CHUNK..((c + 1) * CHUNK).min(len))).collect();
    let mut total = [0.0; N];
    for part in parts {
        for (t, p) in total.iter_mut().zip(part) {
            *t += p;
        }
    }
    total
}

/// Total log-likelihood of compressed histories under `params`.
pub fn purchase_log_likelihood(params: &PurchaseParams, data: &CompressedHistories) -> Result<f64> {
    match params {
        PurchaseParams::BgNbd(p) => Ok(beta_geo_objective(data, p, false).0),
        PurchaseParams::MbgNbd(p) => Ok(beta_geo_objective(data, p, true).0),
        PurchaseParams::ParetoNbd(_) => {
            let failed = std::sync::atomic::AtomicBool::new(false);
            let [ll] = chunked_sum(data.len(), |range| {
                let mut ll = 0.0;
                for i in range {
                    match params.log_likelihood(data.history(i)) {
                        Ok(v) => ll += data.weight[i] * v,
                        Err(_) => failed.store(true, std::sync::atomic::Ordering::Relaxed),
                    }
                }
                [ll]
            });
            if failed.into_inner() {
                return Err(ScoreError::NotConverged {
                    function: "pareto_nbd log-likelihood",
                    detail: format!("hyp2f1 failed for {params:?}"),
                });
            }
            Ok(ll)
        }
    }
}

/// BG/NBD-family log-likelihood and its gradient with respect to (r, α, a, b).
fn beta_geo_objective(data: &CompressedHistories, p: &BetaGeoParams, modified: bool) -> (f64, [f64; 4]) {
    let BetaGeoParams { r, alpha, a, b } = *p;
    let m = if modified { 1.0 } else { 0.0 };
    struct PerFrequency {
        constant: f64,
        d_r: f64,
        d_a: f64,
        d_b: f64,
        ln_dropped: f64,
        inv_b: f64,
        r_plus_x: f64,
    }
    let (psi_r, psi_b, psi_ab, ln_alpha, lb_ab, lg_r) =
        (digamma(r), digamma(b), digamma(a + b), alpha.ln(), ln_beta(a, b), ln_gamma(r));
    let per_x: Vec<PerFrequency> = data
        .distinct_frequencies
        .iter()
        .map(|&x| {
            let x = f64::from(x);
            let has_dropped = modified || x > 0.0;
            let psi_abx = digamma(a + b + x + m);
            PerFrequency {
                constant: ln_gamma(r + x) - lg_r + r * ln_alpha + ln_beta(a, b + x + m) - lb_ab,
                d_r: digamma(r + x) - psi_r + ln_alpha,
                d_a: psi_ab - psi_abx,
                d_b: psi_ab + digamma(b + x + m) - psi_b - psi_abx,
                ln_dropped: if has_dropped { a.ln() - (b + x - 1.0 + m).ln() } else { f64::NEG_INFINITY },
                inv_b: if has_dropped { 1.0 / (b + x - 1.0 + m) } else { 0.0 },
                r_plus_x: r + x,
            }
        })
        .collect();
    let [ll, g_r, g_alpha, g_a, g_b] = chunked_sum(data.len(), |range| {
        let mut acc = [0.0; 5];
        for i in range {
            let g = &per_x[data.group[i] as usize];
            let w = data.weight[i];
            let ln_at = (alpha + data.tenure[i]).ln();
            let ln_ax = (alpha + data.recency[i]).ln();
            let survived = -g.r_plus_x * ln_at;
            let dropped = g.ln_dropped - g.r_plus_x * ln_ax;
            let lse = log_add_exp(survived, dropped);
            let w_survived = (survived - lse).exp();
            let w_dropped = (dropped - lse).exp();
            acc[0] += w * (g.constant + lse);
            acc[1] += w * (g.d_r - w_survived * ln_at - w_dropped * ln_ax);
            acc[2] += w
                * (r / alpha
                    - g.r_plus_x * (w_survived / (alpha + data.tenure[i]) + w_dropped / (alpha + data.recency[i])));
            acc[3] += w * (g.d_a + w_dropped / a);
            acc[4] += w * (g.d_b - w_dropped * g.inv_b);
        }
        acc
    });
    (ll, [g_r, g_alpha, g_a, g_b])
}

/// Result of [`minimize`].
struct Minimum<const N: usize> {
    point: [f64; N],
    iterations: usize,
    evaluations: usize,
    /// Largest gradient component at `point`.
    gradient: f64,
    /// Whether the search stopped at its deadline.
    timed_out: bool,
    /// BFGS's approximation of the inverse Hessian at `point`.
    inverse_hessian: [[f64; N]; N],
}

/// Wall-time budget of one model's fit (all starting points together). A fit
/// on a million customers takes about 0.3 s; degenerate data can make a
/// Pareto/NBD likelihood evaluation take seconds, and a refit must not stall
/// the engine for minutes.
pub const FIT_TIME_BUDGET: Duration = Duration::from_secs(20);

/// A fit has converged when no gradient component (of the mean per-customer
/// log-likelihood, in log-parameters) exceeds this.
const CONVERGED_GRADIENT: f64 = 1e-5;

/// Optimiser iterations before a fit is declared not converged.
const MAX_ITERATIONS: usize = 200;

/// BFGS with an Armijo backtracking line search.
///
/// `objective(θ, want_gradient)` returns the value and, when asked (or when it
/// comes for free), the gradient. Line-search trials ask for the value only, so
/// a numeric gradient is paid once per accepted step, not once per trial.
/// Errors and non-finite values at trial points shrink the step.
fn minimize<const N: usize>(
    objective: impl FnMut(&[f64; N], bool) -> Option<(f64, Option<[f64; N]>)>,
    start: [f64; N],
    deadline: Instant,
) -> Option<Minimum<N>> {
    minimize_until(objective, start, None, deadline, LOG_PARAM_LIMIT + 1.0)
}

/// Rows a likelihood must have before its fit starts from a fit on a sample.
const WARM_START_ROWS: usize = 40_000;

/// Rows of the sample a warm start fits first.
const WARM_START_SAMPLE_ROWS: usize = 16_000;

/// The step between the rows of the warm start's sample, or `None` when
/// `rows` are few enough to fit directly.
fn warm_start_stride(rows: usize) -> Option<usize> {
    (rows >= WARM_START_ROWS).then_some(rows / WARM_START_SAMPLE_ROWS)
}

/// [`minimize`] from where a fit on a sample ended: its point and its
/// inverse Hessian. The objectives are per-customer means, and a sample of
/// every k-th distinct row estimates the same mean, so the sample's optimum
/// is close and its curvature is the full data's; the full likelihood then
/// needs a few evaluations instead of some twenty-five. The answer is the
/// full data's optimum either way: only the path there is shorter.
fn minimize_warm<const N: usize>(
    objective: impl FnMut(&[f64; N], bool) -> Option<(f64, Option<[f64; N]>)>,
    sample: &Minimum<N>,
    deadline: Instant,
) -> Option<Minimum<N>> {
    minimize_until(objective, sample.point, Some(sample.inverse_hessian), deadline, LOG_PARAM_LIMIT + 1.0)
}

/// [`minimize`] that gives up once a coordinate passes ±`runaway` (a
/// parameter far past the identification limit will not come back).
fn minimize_until<const N: usize>(
    mut objective: impl FnMut(&[f64; N], bool) -> Option<(f64, Option<[f64; N]>)>,
    start: [f64; N],
    initial_inverse_hessian: Option<[[f64; N]; N]>,
    deadline: Instant,
    runaway: f64,
) -> Option<Minimum<N>> {
    const GRADIENT_TOLERANCE: f64 = 1e-10;
    const MAX_STEP: f64 = 3.0;
    let finite = |g: &[f64; N]| g.iter().all(|v| v.is_finite());
    let mut x = start;
    let (mut fx, start_gradient) = objective(&x, true).filter(|(f, _)| f.is_finite())?;
    let mut g = start_gradient.filter(finite)?;
    let mut evaluations = 1;
    let warm = initial_inverse_hessian.is_some();
    let mut h = initial_inverse_hessian.unwrap_or_else(identity::<N>);
    let mut iterations = 0;
    let mut timed_out = false;
    while iterations < MAX_ITERATIONS {
        if g.iter().all(|v| v.abs() < GRADIENT_TOLERANCE) {
            break;
        }
        if Instant::now() >= deadline {
            timed_out = true;
            break;
        }
        iterations += 1;
        let mut d = mat_vec(&h, &g).map(|v| -v);
        let mut slope = dot(&g, &d);
        if slope >= 0.0 {
            h = identity::<N>();
            d = g.map(|v| -v);
            slope = dot(&g, &d);
        }
        let longest = d.iter().fold(0.0_f64, |m, v| m.max(v.abs()));
        let mut step = if longest > MAX_STEP { MAX_STEP / longest } else { 1.0 };
        let mut accepted = None;
        for _ in 0..60 {
            let trial: [f64; N] = std::array::from_fn(|i| x[i] + step * d[i]);
            evaluations += 1;
            if let Some((ft, gt)) = objective(&trial, false)
                && ft.is_finite()
                && ft <= fx + 1e-4 * step * slope
            {
                let gt = match gt {
                    Some(gt) => Some(gt),
                    None => {
                        evaluations += 1;
                        objective(&trial, true).and_then(|(_, gt)| gt)
                    }
                };
                if let Some(gt) = gt.filter(finite) {
                    accepted = Some((trial, ft, gt));
                    break;
                }
            }
            step *= 0.5;
        }
        let Some((xn, fnew, gn)) = accepted else {
            if h == identity::<N>() {
                break; // no descent possible along the gradient: as good as it gets
            }
            h = identity::<N>();
            continue;
        };
        if xn.iter().any(|v| v.abs() > runaway) {
            x = xn;
            g = gn;
            break;
        }
        let s: [f64; N] = std::array::from_fn(|i| xn[i] - x[i]);
        let y: [f64; N] = std::array::from_fn(|i| gn[i] - g[i]);
        let sy = dot(&s, &y);
        if sy > 1e-16 {
            if iterations == 1 && !warm {
                let scale = sy / dot(&y, &y);
                h = identity::<N>().map(|row| row.map(|v| v * scale));
            }
            h = bfgs_update(&h, &s, &y, sy);
        }
        let converged = (fx - fnew).abs() <= 1e-15 * (1.0 + fx.abs());
        x = xn;
        fx = fnew;
        g = gn;
        if converged && g.iter().all(|v| v.abs() < 1e-6) {
            break;
        }
    }
    let gradient = g.iter().fold(0.0_f64, |m, v| m.max(v.abs()));
    Some(Minimum { point: x, iterations, evaluations, gradient, timed_out, inverse_hessian: h })
}

fn identity<const N: usize>() -> [[f64; N]; N] {
    std::array::from_fn(|i| std::array::from_fn(|j| if i == j { 1.0 } else { 0.0 }))
}

fn dot<const N: usize>(a: &[f64; N], b: &[f64; N]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn mat_vec<const N: usize>(m: &[[f64; N]; N], v: &[f64; N]) -> [f64; N] {
    std::array::from_fn(|i| dot(&m[i], v))
}

/// H ← (I − ρ s yᵀ) H (I − ρ y sᵀ) + ρ s sᵀ, ρ = 1 / (sᵀy).
fn bfgs_update<const N: usize>(h: &[[f64; N]; N], s: &[f64; N], y: &[f64; N], sy: f64) -> [[f64; N]; N] {
    let rho = 1.0 / sy;
    let hy = mat_vec(h, y);
    let yhy = dot(y, &hy);
    std::array::from_fn(|i| {
        std::array::from_fn(|j| h[i][j] - rho * (s[i] * hy[j] + hy[i] * s[j]) + (rho * rho * yhy + rho) * s[i] * s[j])
    })
}

/// Central-difference gradient of `f` in log-parameter space.
fn numeric_gradient<const N: usize>(f: &impl Fn(&[f64; N]) -> Option<f64>, theta: &[f64; N]) -> Option<[f64; N]> {
    let mut g = [0.0; N];
    for i in 0..N {
        let h = 1e-6;
        let mut up = *theta;
        up[i] += h;
        let mut down = *theta;
        down[i] -= h;
        g[i] = (f(&up)? - f(&down)?) / (2.0 * h);
    }
    Some(g)
}

/// Largest |ln θ| a fitted parameter may reach (in scaled units, where the
/// data span 0…10) before the model is declared unidentified: beyond about
/// 6e-6 … 1.6e5 the likelihood has flattened into a limiting model (e.g. r, α → ∞
/// is a plain Poisson process) that the data cannot tell apart.
const LOG_PARAM_LIMIT: f64 = 12.0;

/// A log-parameter this close to ±[`LOG_PARAM_LIMIT`] after a search in the
/// box counts as on its bound.
const ON_BOUND: f64 = LOG_PARAM_LIMIT - 0.5;

/// [`minimize`] inside the box |θᵢ| < [`LOG_PARAM_LIMIT`], from `from`: the
/// search runs in φ with θ = L·tanh(φ/L), so a parameter whose likelihood
/// keeps rising towards a limiting model settles on the edge (its gradient in
/// φ vanishes there) while the others converge to their best values given it.
fn minimize_in_box<const N: usize>(
    mut objective: impl FnMut(&[f64; N], bool) -> Option<(f64, Option<[f64; N]>)>,
    from: &[f64; N],
    deadline: Instant,
) -> Option<Minimum<N>> {
    const L: f64 = LOG_PARAM_LIMIT;
    let inside = |phi: &[f64; N]| phi.map(|v| L * (v / L).tanh());
    let start = from.map(|v| if v.is_nan() { 0.0 } else { L * (v / L).clamp(-0.999, 0.999).atanh() });
    let in_phi = |phi: &[f64; N], want_gradient: bool| {
        let (value, gradient) = objective(&inside(phi), want_gradient)?;
        let chain = gradient.map(|g| std::array::from_fn(|i| g[i] * (1.0 - (phi[i] / L).tanh().powi(2))));
        Some((value, chain))
    };
    let found = minimize_until(in_phi, start, None, deadline, f64::INFINITY)?;
    Some(Minimum { point: inside(&found.point), ..found })
}

/// Largest standard error of a log-parameter (a factor of e either way)
/// for the parameters left free when the others sit on their bound.
const FREE_LOG_SD_LIMIT: f64 = 1.0;

/// A fit on the bound is a limiting model only when one mechanism reached
/// it, the purchase rates (r, α) or the dropout (a, b; s, β), and the data
/// pin down the other mechanism's parameters given it: their observed
/// information (central differences of the gradient, in log-parameters) is
/// positive definite with standard errors below [`FREE_LOG_SD_LIMIT`].
/// Anything else (three customers, say) is data that cannot identify the model.
fn check_one_limit(
    model: PurchaseModel,
    names: &[&'static str; 4],
    point: &[f64; 4],
    customers: f64,
    mut objective: impl FnMut(&[f64; 4], bool) -> Option<(f64, Option<[f64; 4]>)>,
) -> Result<()> {
    let on_bound = |i: usize| point[i].abs() >= ON_BOUND;
    let (rates_out, dropout_out) = (on_bound(0) || on_bound(1), on_bound(2) || on_bound(3));
    let refuse = |why: String| ScoreError::NotIdentified {
        model: model.name(),
        detail: format!("the likelihood has no interior optimum and {why}; the data cannot pin the parameters down"),
    };
    match (rates_out, dropout_out) {
        (false, false) => return Ok(()),
        (true, true) => return Err(refuse("both the purchase rates and the dropout run to their bounds".into())),
        _ => {}
    }
    let free = if rates_out { [2, 3] } else { [0, 1] };
    let step = 1e-4;
    let mut gradient_at = |i: usize, sign: f64| {
        let mut moved = *point;
        moved[i] += sign * step;
        objective(&moved, true).and_then(|(_, g)| g)
    };
    let mut hessian = [[0.0; 2]; 2];
    for (column, &i) in free.iter().enumerate() {
        let (Some(up), Some(down)) = (gradient_at(i, 1.0), gradient_at(i, -1.0)) else {
            return Err(refuse("the likelihood is not finite next to the optimum".into()));
        };
        for (row, &j) in free.iter().enumerate() {
            hessian[row][column] = (up[j] - down[j]) / (2.0 * step) * customers;
        }
    }
    let [[h00, h01], [h10, h11]] = hessian;
    let off = 0.5 * (h01 + h10);
    let determinant = h00 * h11 - off * off;
    let variances = [h11 / determinant, h00 / determinant];
    let determined = h00 > 0.0 && determinant > 0.0 && variances.iter().all(|v| v.sqrt() < FREE_LOG_SD_LIMIT);
    if !determined {
        let sds: Vec<String> =
            free.iter().zip(variances).map(|(&i, v)| format!("{} ±{:.2}", names[i], v.sqrt())).collect();
        return Err(refuse(format!(
            "{} run to the bound while the others stay loose (log-parameter standard errors {})",
            if rates_out { "the purchase rates" } else { "the dropout" },
            sds.join(", ")
        )));
    }
    Ok(())
}

/// A fitted parameter on the edge of what the data can identify, and what
/// that means for the scores built on it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AtBound {
    /// The parameter's name (`a`, `s`, …).
    pub parameter: String,
    /// Its fitted value, in the fit's time unit.
    pub value: f64,
    /// What the scores mean with it there.
    pub meaning: String,
}

impl std::fmt::Display for AtBound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} = {:.3e} is at its bound: {}", self.parameter, self.value, self.meaning)
    }
}

/// What a purchase-model parameter at its lower (`high` false) or upper bound
/// means for the scores.
fn boundary_meaning(model: PurchaseModel, parameter: &str, high: bool) -> &'static str {
    let pareto = model == PurchaseModel::ParetoNbd;
    match (parameter, high) {
        ("a", false) | ("b", true) if !pareto => {
            "almost no customer drops out after a purchase, so P(alive) stays near 1 however long a customer has \
             been silent; churn_risk cannot rank customers, and CLV treats every past buyer as still buying"
        }
        ("s", false) | ("beta", true) if pareto => {
            "dropout rates are all but zero, so P(alive) stays near 1 however long a customer has been silent; \
             churn_risk cannot rank customers, and CLV treats every past buyer as still buying"
        }
        ("a", true) | ("b", false) | ("s", true) | ("beta", false) => {
            "customers drop out almost at once, so P(alive) falls to near 0 soon after each purchase and CLV \
             rests on very few future purchases"
        }
        ("r", true) | ("alpha", true) => {
            "purchase rates hardly differ between customers (the gamma mixing is all but a point), so a \
             customer's own history moves their expected purchases little"
        }
        _ => {
            "purchase rates are spread so widely that the model leans on each customer's own history alone; \
             expect unstable predictions for customers with few purchases"
        }
    }
}

fn check_identified<const N: usize>(model: &'static str, names: &[&'static str], found: &Minimum<N>) -> Result<()> {
    for (name, value) in names.iter().zip(&found.point) {
        if !value.is_finite() || value.abs() > LOG_PARAM_LIMIT {
            return Err(ScoreError::NotIdentified {
                model,
                detail: format!(
                    "parameter {name} ran off to {:.3e}; the data cannot pin it down (too few customers, or no sign of dropout)",
                    value.exp()
                ),
            });
        }
    }
    // A search that ran out of time after meeting the convergence test is converged.
    if found.timed_out && found.gradient > CONVERGED_GRADIENT {
        return Err(ScoreError::NotConverged {
            function: model,
            detail: format!(
                "no optimum within its time budget ({} iterations, largest gradient component {:.2e})",
                found.iterations, found.gradient
            ),
        });
    }
    if found.gradient > CONVERGED_GRADIENT {
        return Err(ScoreError::NotConverged {
            function: model,
            detail: format!(
                "no optimum after {} iterations (largest gradient component {:.2e})",
                found.iterations, found.gradient
            ),
        });
    }
    Ok(())
}

/// Fits one purchase model by maximum likelihood over all customers.
///
/// Data that cannot identify the model is a clear error, never NaN or a
/// parameter at infinity:
///
/// ```
/// use patron_score::{fit_purchase_model, History, PurchaseModel};
/// let one_time_buyers: Vec<History> = (0..100).map(|i| History::new(0, 0.0, 30.0 + f64::from(i))).collect();
/// let err = fit_purchase_model(PurchaseModel::BgNbd, &one_time_buyers).unwrap_err();
/// assert!(err.to_string().contains("no customer has a repeat purchase"));
/// ```
///
/// (`tests/reference.rs` fits the CDNOW sample and compares with lifetimes.)
pub fn fit_purchase_model(model: PurchaseModel, histories: &[History]) -> Result<FitReport<PurchaseParams>> {
    let started = Instant::now();
    let data = CompressedHistories::new(histories)?;
    fit_compressed(model, &data, started, FIT_TIME_BUDGET)
}

/// [`fit_purchase_model`] on histories already compressed (lets several models
/// share one compression).
pub fn fit_purchase_model_compressed(
    model: PurchaseModel,
    data: &CompressedHistories,
) -> Result<FitReport<PurchaseParams>> {
    fit_purchase_model_within(model, data, FIT_TIME_BUDGET)
}

/// [`fit_purchase_model_compressed`] with its own wall-time budget (models
/// that are only reported, not used for scores, get a shorter one).
pub fn fit_purchase_model_within(
    model: PurchaseModel,
    data: &CompressedHistories,
    budget: Duration,
) -> Result<FitReport<PurchaseParams>> {
    fit_compressed(model, data, Instant::now(), budget)
}

fn fit_compressed(
    model: PurchaseModel,
    data: &CompressedHistories,
    started: Instant,
    budget: Duration,
) -> Result<FitReport<PurchaseParams>> {
    let deadline = started + budget;
    if data.is_empty() {
        return Err(ScoreError::NotIdentified { model: model.name(), detail: "no customers to fit".into() });
    }
    if data.distinct_frequencies.iter().all(|&x| x == 0) {
        return Err(ScoreError::NotIdentified {
            model: model.name(),
            detail: "no customer has a repeat purchase, so purchase rate and dropout cannot be told apart".into(),
        });
    }
    let max_tenure = data.tenure.iter().fold(0.0_f64, |m, &v| m.max(v));
    if max_tenure <= 0.0 {
        return Err(ScoreError::NotIdentified { model: model.name(), detail: "all customers have zero tenure".into() });
    }
    let time_scale = max_tenure / 10.0;
    let scaled = data.scaled(time_scale);
    let n = data.customers as f64;
    let names: [&'static str; 4] = match model {
        PurchaseModel::ParetoNbd => ["r", "alpha", "s", "beta"],
        _ => ["r", "alpha", "a", "b"],
    };
    let build = |theta: &[f64; 4]| build_purchase_params(model, theta);
    let mean_negative_ll = |theta: &[f64; 4]| -> Option<f64> {
        purchase_log_likelihood(&build(theta), &scaled).ok().map(|ll| -ll / n).filter(|v| v.is_finite())
    };
    let objective = purchase_objective(model, &scaled);
    let mut evaluations = 0;
    let sample = warm_start_stride(scaled.len()).map(|stride| scaled.every(stride));
    let sample_fit = sample.as_ref().and_then(|sample| {
        let found = minimize(purchase_objective(model, sample), [0.0; 4], deadline)?;
        evaluations += found.evaluations;
        (found.gradient <= CONVERGED_GRADIENT && found.point.iter().all(|v| v.abs() <= LOG_PARAM_LIMIT))
            .then_some(found)
    });
    let starts: [[f64; 4]; 3] = [[0.0; 4], [-1.0, 0.0, -0.5, 0.5], [0.5, 1.0, 0.5, 1.5]];
    let mut best: Option<(Minimum<4>, f64)> = None;
    for attempt in 0..=starts.len() {
        let found = match (attempt, &sample_fit) {
            (0, Some(sample)) => minimize_warm(objective, sample, deadline),
            (0, None) => continue,
            (i, _) => minimize(objective, starts[i - 1], deadline),
        };
        if let Some(found) = found {
            evaluations += found.evaluations;
            let value = mean_negative_ll(&found.point).unwrap_or(f64::INFINITY);
            let identified =
                found.point.iter().all(|v| v.abs() <= LOG_PARAM_LIMIT) && found.gradient <= CONVERGED_GRADIENT;
            if best.as_ref().is_none_or(|(_, b)| value < *b) {
                best = Some((found, value));
            }
            // A start that runs off towards a limiting model goes on in the
            // box below; trying the other starts would only run off again,
            // at the cost of a whole search each.
            let ran_off = best.as_ref().is_some_and(|(b, _)| b.point.iter().any(|v| v.abs() > LOG_PARAM_LIMIT));
            if (identified && value.is_finite()) || ran_off {
                break;
            }
        }
    }
    let Some((mut found, _)) = best else {
        return Err(ScoreError::NotIdentified {
            model: model.name(),
            detail: "the log-likelihood is not finite at any starting point".into(),
        });
    };
    let runs_off = |m: &Minimum<4>| m.point.iter().any(|v| !v.is_finite() || v.abs() > LOG_PARAM_LIMIT);
    if runs_off(&found) || found.gradient > CONVERGED_GRADIENT {
        // The likelihood keeps rising towards a limiting model (or the search
        // wanders along a flat ridge on the way there): find the best fit
        // inside the box instead, and say below which parameter sits on its edge.
        if let Some(bounded) = minimize_in_box(objective, &found.point, deadline) {
            evaluations += bounded.evaluations;
            found = bounded;
        }
    }
    check_identified(model.name(), &names, &found)?;
    check_one_limit(model, &names, &found.point, n, objective)?;
    let params = build(&found.point).rescale_time(1.0 / time_scale);
    let named = params.named();
    let boundary: Vec<AtBound> = (0..4)
        .filter(|&i| found.point[i].abs() >= ON_BOUND)
        .map(|i| AtBound {
            parameter: names[i].to_owned(),
            value: named[i].1,
            meaning: boundary_meaning(model, names[i], found.point[i] > 0.0).to_owned(),
        })
        .collect();
    let log_likelihood = purchase_log_likelihood(&params, data)?;
    if !log_likelihood.is_finite() {
        return Err(ScoreError::NotIdentified {
            model: model.name(),
            detail: "log-likelihood is not finite at the optimum".into(),
        });
    }
    Ok(FitReport {
        params,
        log_likelihood,
        customers: data.customers,
        distinct_histories: data.len(),
        iterations: found.iterations,
        evaluations,
        seconds: started.elapsed().as_secs_f64(),
        std_errors: Vec::new(),
        log_covariance: Vec::new(),
        boundary,
    })
}

/// An objective's value at a point and, when given, its gradient (`None`:
/// not finite there).
type Evaluation<const N: usize> = Option<(f64, Option<[f64; N]>)>;

/// The parameters of `model` at log-parameters `theta` (r, α, then a, b or s, β).
fn build_purchase_params(model: PurchaseModel, theta: &[f64; 4]) -> PurchaseParams {
    let [r, alpha, third, fourth] = theta.map(f64::exp);
    match model {
        PurchaseModel::BgNbd => PurchaseParams::BgNbd(BetaGeoParams { r, alpha, a: third, b: fourth }),
        PurchaseModel::MbgNbd => PurchaseParams::MbgNbd(BetaGeoParams { r, alpha, a: third, b: fourth }),
        PurchaseModel::ParetoNbd => PurchaseParams::ParetoNbd(ParetoParams { r, alpha, s: third, beta: fourth }),
    }
}

/// The mean negative log-likelihood per customer of `data` under `model`, in
/// log-parameters, with its gradient: analytic for the BG/NBD family (always
/// given), central differences for Pareto/NBD (only when asked).
fn purchase_objective(
    model: PurchaseModel,
    data: &CompressedHistories,
) -> impl Fn(&[f64; 4], bool) -> Evaluation<4> + Copy + '_ {
    let n = data.customers as f64;
    let mean_negative_ll = move |theta: &[f64; 4]| -> Option<f64> {
        purchase_log_likelihood(&build_purchase_params(model, theta), data)
            .ok()
            .map(|ll| -ll / n)
            .filter(|v| v.is_finite())
    };
    move |theta: &[f64; 4], want_gradient: bool| match build_purchase_params(model, theta) {
        PurchaseParams::BgNbd(p) | PurchaseParams::MbgNbd(p) => {
            let (ll, g) = beta_geo_objective(data, &p, model == PurchaseModel::MbgNbd);
            let params = [p.r, p.alpha, p.a, p.b];
            Some((-ll / n, Some(std::array::from_fn(|i| -g[i] * params[i] / n))))
        }
        PurchaseParams::ParetoNbd(_) => {
            let value = mean_negative_ll(theta)?;
            let gradient = if want_gradient { Some(numeric_gradient(&mean_negative_ll, theta)?) } else { None };
            Some((value, gradient))
        }
    }
}

/// The informative spends (a repeat occasion, positive mean value) in the
/// form Gamma-Gamma's likelihood needs, so that an evaluation costs one
/// logarithm and one division per customer. With x repeats and mean value m,
/// one customer's log-density is
/// lnΓ(px+q) − lnΓ(px) − lnΓ(q) + q ln γ + (px−1) ln m + px ln x − (px+q) ln(γ + mx):
/// the Γ terms depend on x alone and are summed once per distinct x, and the
/// ln m, ln x terms are linear in p, so their sums are taken once here.
/// Rows are the distinct (x, m) in sorted order with their counts, so the
/// sums, and the fit, do not depend on the order of the input.
#[derive(Clone, Debug, Default)]
struct SpendTable {
    /// x of each distinct row.
    repeats: Vec<f64>,
    /// Each row's total repeat spend, m·x (scaled by `scale`).
    totals: Vec<f64>,
    /// Customers with that row.
    weights: Vec<f64>,
    /// Distinct x with the number of customers that have it.
    per_repeats: Vec<(f64, f64)>,
    /// Σ x (ln m + ln x), with m scaled.
    linear_in_p: f64,
    /// Σ ln m, with m scaled.
    sum_ln_mean: f64,
    /// Customers.
    customers: f64,
}

impl SpendTable {
    /// The informative spends.
    fn new(spends: &[SpendHistory]) -> Self {
        // (x, m) as one integer: a positive f64's bits order like the number,
        // and one 128-bit compare sorts faster than a tuple's.
        let mut keys: Vec<u128> = spends
            .iter()
            .filter(|s| s.is_informative())
            .map(|s| u128::from(s.repeat_occasions) << 64 | u128::from(s.mean_repeat_value.to_bits()))
            .collect();
        keys.par_sort_unstable();
        let mut rows: Vec<(u32, u64, f64)> = Vec::with_capacity(keys.len());
        for key in keys {
            let (x, bits) = ((key >> 64) as u32, key as u64);
            match rows.last_mut() {
                Some((last_x, last_bits, w)) if *last_x == x && *last_bits == bits => *w += 1.0,
                _ => rows.push((x, bits, 1.0)),
            }
        }
        let mut per_repeats: Vec<(f64, f64)> = Vec::new();
        for &(x, _, w) in &rows {
            match per_repeats.last_mut() {
                Some((last, total)) if *last == f64::from(x) => *total += w,
                _ => per_repeats.push((f64::from(x), w)),
            }
        }
        let mean = f64::from_bits;
        let [linear_in_p, sum_ln_mean] = chunked_sum(rows.len(), |range| {
            rows[range].iter().fold([0.0, 0.0], |[linear, logs], &(x, bits, w)| {
                let (x, ln_m) = (f64::from(x), mean(bits).ln());
                [linear + w * x * (ln_m + x.ln()), logs + w * ln_m]
            })
        });
        Self {
            repeats: rows.iter().map(|&(x, ..)| f64::from(x)).collect(),
            totals: rows.iter().map(|&(x, bits, _)| f64::from(x) * mean(bits)).collect(),
            weights: rows.iter().map(|&(.., w)| w).collect(),
            per_repeats,
            linear_in_p,
            sum_ln_mean,
            customers: rows.iter().map(|&(.., w)| w).sum(),
        }
    }

    /// The same spends in units of `scale`: totals divided, and the sums of
    /// logarithms shifted by ln(scale).
    fn rescaled(mut self, scale: f64) -> Self {
        let repeats_total: f64 = self.repeats.iter().zip(&self.weights).map(|(x, w)| x * w).sum();
        self.totals.iter_mut().for_each(|t| *t /= scale);
        self.linear_in_p -= scale.ln() * repeats_total;
        self.sum_ln_mean -= scale.ln() * self.customers;
        self
    }

    /// Every `stride`-th row with its weight (for [`minimize_warm`]).
    fn every(&self, stride: usize) -> Self {
        let repeats: Vec<f64> = self.repeats.iter().step_by(stride).copied().collect();
        let totals: Vec<f64> = self.totals.iter().step_by(stride).copied().collect();
        let weights: Vec<f64> = self.weights.iter().step_by(stride).copied().collect();
        let mut per_repeats: Vec<(f64, f64)> = Vec::new();
        let (mut linear_in_p, mut sum_ln_mean) = (0.0, 0.0);
        for ((&x, &total), &w) in repeats.iter().zip(&totals).zip(&weights) {
            match per_repeats.last_mut() {
                Some((last, count)) if *last == x => *count += w,
                _ => per_repeats.push((x, w)),
            }
            let ln_mean = (total / x).ln();
            linear_in_p += w * x * (ln_mean + x.ln());
            sum_ln_mean += w * ln_mean;
        }
        let customers = weights.iter().sum();
        Self { repeats, totals, weights, per_repeats, linear_in_p, sum_ln_mean, customers }
    }

    /// Mean of the customers' mean spends, summed in the table's order.
    fn mean_spend(&self) -> f64 {
        let sum: f64 = self.repeats.iter().zip(&self.totals).zip(&self.weights).map(|((x, t), w)| w * t / x).sum();
        sum / self.customers
    }

    /// Whether two customers differ in (x, m): one alone cannot identify the model.
    fn has_two_distinct_customers(&self) -> bool {
        let first = self.repeats.first().zip(self.totals.first());
        self.repeats.iter().zip(&self.totals).any(|pair| Some(pair) != first)
    }

    /// Total log-likelihood and its gradient with respect to (p, q, γ).
    fn objective(&self, p: f64, q: f64, gamma: f64) -> (f64, [f64; 3]) {
        let n = self.customers;
        let (mut ll, mut gp, mut gq) = (0.0, 0.0, 0.0);
        for &(x, w) in &self.per_repeats {
            ll += w * (ln_gamma(p * x + q) - ln_gamma(p * x));
            let psi_pxq = digamma(p * x + q);
            gp += w * x * (psi_pxq - digamma(p * x));
            gq += w * psi_pxq;
        }
        let ln_g = gamma.ln();
        ll += n * (q * ln_g - ln_gamma(q)) + p * self.linear_in_p - self.sum_ln_mean;
        gp += self.linear_in_p;
        gq += n * (ln_g - digamma(q));
        let mut gg = n * q / gamma;
        // Σ (px+q) ln(γ+s), Σ x ln(γ+s), Σ ln(γ+s), Σ (px+q)/(γ+s).
        let [weighted_ln, x_ln, plain_ln, weighted_inverse] = chunked_sum(self.repeats.len(), |range| {
            let mut acc = [0.0; 4];
            let rows = self.repeats[range.clone()].iter().zip(&self.totals[range.clone()]).zip(&self.weights[range]);
            for ((&x, &total), &w) in rows {
                let (ln, shape) = ((gamma + total).ln(), p * x + q);
                acc[0] += w * shape * ln;
                acc[1] += w * x * ln;
                acc[2] += w * ln;
                acc[3] += w * shape / (gamma + total);
            }
            acc
        });
        ll -= weighted_ln;
        gp -= x_ln;
        gq -= plain_ln;
        gg -= weighted_inverse;
        (ll, [gp, gq, gg])
    }
}

/// The mean negative log-likelihood per customer of `table` in
/// log-parameters (p, q, γ), with its gradient.
fn spend_objective(table: &SpendTable) -> impl Fn(&[f64; 3], bool) -> Evaluation<3> + Copy + '_ {
    let n = table.customers;
    move |theta: &[f64; 3], _want_gradient: bool| {
        let [p, q, gamma] = theta.map(f64::exp);
        let (ll, [gp, gq, gg]) = table.objective(p, q, gamma);
        Some((-ll / n, Some([-gp * p / n, -gq * q / n, -gg * gamma / n])))
    }
}

/// Fits the Gamma-Gamma spend model on the informative customers (at least one
/// repeat occasion, positive mean repeat value); others are ignored.
pub fn fit_gamma_gamma(spends: &[SpendHistory]) -> Result<FitReport<GammaGammaParams>> {
    let started = Instant::now();
    // Spends are fitted in units of their mean, so the optimiser starts near
    // the answer whatever the currency.
    let unscaled = SpendTable::new(spends);
    if !unscaled.has_two_distinct_customers() {
        return Err(ScoreError::NotIdentified {
            model: "gamma_gamma",
            detail: format!(
                "needs at least two distinct repeat customers with positive spend, found {}",
                unscaled.repeats.len()
            ),
        });
    }
    let spend_scale = unscaled.mean_spend();
    let table = unscaled.rescaled(spend_scale);
    let (customers, n) = (table.customers as u64, table.customers);
    let deadline = started + FIT_TIME_BUDGET;
    let sample = warm_start_stride(table.repeats.len()).map(|stride| table.every(stride));
    let sample_fit = sample
        .as_ref()
        .and_then(|sample| minimize(spend_objective(sample), [0.0; 3], deadline))
        .filter(|found| found.gradient <= CONVERGED_GRADIENT && found.point.iter().all(|v| v.abs() <= LOG_PARAM_LIMIT));
    let found = match &sample_fit {
        Some(sample) => minimize_warm(spend_objective(&table), sample, deadline),
        None => minimize(spend_objective(&table), [0.0; 3], deadline),
    }
    .ok_or_else(|| ScoreError::NotIdentified {
        model: "gamma_gamma",
        detail: "the log-likelihood is not finite at the starting point".into(),
    })?;
    let sample_evaluations = sample_fit.as_ref().map_or(0, |s| s.evaluations);
    check_identified("gamma_gamma", &["p", "q", "gamma"], &found)?;
    let [p, q, gamma_scaled] = found.point.map(f64::exp);
    let params = GammaGammaParams { p, q, gamma: gamma_scaled * spend_scale };
    // The density of a mean spend m is that of m / scale, divided by scale.
    let log_likelihood = table.objective(p, q, gamma_scaled).0 - n * spend_scale.ln();
    Ok(FitReport {
        params,
        log_likelihood,
        customers,
        distinct_histories: table.repeats.len(),
        iterations: found.iterations,
        evaluations: found.evaluations + sample_evaluations,
        seconds: started.elapsed().as_secs_f64(),
        std_errors: Vec::new(),
        log_covariance: Vec::new(),
        boundary: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use rand_distr::{Distribution, Exp, Gamma};

    use super::*;

    /// Customers who never drop out: purchases at a gamma-distributed
    /// Poisson rate (r 0.8, α 20 days) over 200 to 400 days. The BG/NBD
    /// likelihood keeps rising as the dropout probability goes to 0.
    fn customers_who_never_leave() -> Vec<History> {
        let mut rng = StdRng::seed_from_u64(18);
        let rates = Gamma::new(0.8, 1.0 / 20.0).unwrap();
        (0..3000)
            .map(|i| {
                let tenure = 200.0 + f64::from(i % 200); // whole days, as real data come
                let wait = Exp::new(rates.sample(&mut rng)).unwrap();
                let (mut t, mut x, mut last) = (0.0, 0u32, 0.0);
                loop {
                    t += wait.sample(&mut rng);
                    if t > tenure {
                        break History::new(x, last, tenure);
                    }
                    (x, last) = (x + 1, t.floor());
                }
            })
            .collect()
    }

    #[test]
    fn a_fit_whose_likelihood_runs_to_a_limiting_model_ends_on_the_bound_with_a_warning() {
        let histories = customers_who_never_leave();
        for model in [PurchaseModel::BgNbd, PurchaseModel::MbgNbd] {
            let fit = fit_purchase_model(model, &histories).unwrap_or_else(|e| panic!("{model:?}: {e}"));
            let on_bound: Vec<String> = fit.boundary.iter().map(|b| b.parameter.clone()).collect();
            let dropout = ["a", "b"];
            assert!(
                !on_bound.is_empty() && on_bound.iter().all(|p| dropout.contains(&p.as_str())),
                "{model:?}: {:?} {:?}",
                fit.params,
                fit.boundary
            );
            assert!(fit.boundary.iter().all(|b| b.meaning.contains("P(alive) stays near 1")), "{:?}", fit.boundary);
            // The rate part is still identified, and close to the truth (mean rate r/α = 0.04 a day).
            let named = fit.params.named();
            let (r, alpha) = (named[0].1, named[1].1);
            assert!((r / alpha - 0.04).abs() < 0.006 && (0.5..1.2).contains(&r), "{model:?}: r {r} α {alpha}");
            // No error for the dropout, which ran to the edge of the box,
            // and no covariance, so no CLV intervals; the rate parameters
            // keep their errors given the limiting dropout.
            let data = CompressedHistories::new(&histories).unwrap();
            let uncertainty = purchase_uncertainty(&fit.params, &data, Duration::from_secs(5));
            let fit = fit.with_uncertainty(uncertainty);
            assert!(fit.log_covariance.is_empty(), "{model:?}");
            assert_eq!(fit.std_errors.len(), 4, "{model:?}");
            for (i, (name, value)) in fit.params.named().iter().enumerate() {
                let error = fit.std_errors[i];
                if dropout.contains(name) {
                    assert!(error.is_nan(), "{model:?} {name}: {error}");
                } else {
                    assert!(error > 0.0 && error < 0.5 * value, "{model:?} {name} = {value} ± {error}");
                }
            }
        }
    }

    /// The warm start (issue 18, item 2: fits at 50× lifetimes) shortens the
    /// path, not the answer: on data large enough to take it, the fits end
    /// where a search from the usual start on all the data ends.
    #[test]
    fn a_warm_started_fit_ends_where_a_cold_one_does() {
        let mut rng = StdRng::seed_from_u64(18);
        // The BG/NBD process with CDNOW-like parameters (r 0.25, α 30 days, a 0.8, b 2.4).
        let rates = Gamma::new(0.25, 1.0 / 30.0).unwrap();
        let dropouts = rand_distr::Beta::new(0.8, 2.4).unwrap();
        let values = Gamma::new(6.0, 1.0).unwrap();
        let histories: Vec<History> = (0..60_000)
            .map(|_| {
                let rate: f64 = rates.sample(&mut rng);
                let dropout: f64 = dropouts.sample(&mut rng);
                let tenure = 100.0 + 300.0 * rand::Rng::random::<f64>(&mut rng);
                let (mut t, mut x, mut last) = (0.0, 0u32, 0.0);
                loop {
                    t += Exp::new(rate.max(1e-6)).unwrap().sample(&mut rng);
                    if t > tenure {
                        break;
                    }
                    x += 1;
                    last = t;
                    if rand::Rng::random::<f64>(&mut rng) < dropout {
                        break;
                    }
                }
                History::new(x, last, tenure)
            })
            .collect();
        let data = CompressedHistories::new(&histories).unwrap();
        assert!(warm_start_stride(data.len()).is_some(), "{} rows take the warm start", data.len());
        let warm = fit_purchase_model_compressed(PurchaseModel::BgNbd, &data).unwrap();
        let time_scale = data.tenure.iter().fold(0.0_f64, |m, &v| m.max(v)) / 10.0;
        let scaled = data.scaled(time_scale);
        let deadline = Instant::now() + FIT_TIME_BUDGET;
        let cold = minimize(purchase_objective(PurchaseModel::BgNbd, &scaled), [0.0; 4], deadline).unwrap();
        let cold = build_purchase_params(PurchaseModel::BgNbd, &cold.point).rescale_time(1.0 / time_scale);
        // Both stop within the same tolerance of the optimum (lifetimes agrees to about 1e-7 at 1M).
        for ((name, w), (_, c)) in warm.params.named().iter().zip(cold.named()) {
            assert!((w - c).abs() < 1e-5 * c.abs(), "{name}: warm {w} cold {c}");
        }
        let cold_ll = purchase_log_likelihood(&cold, &data).unwrap();
        assert!(warm.log_likelihood >= cold_ll - 1e-9 * cold_ll.abs(), "{} vs {cold_ll}", warm.log_likelihood);

        let spends: Vec<SpendHistory> = (0..50_000u32)
            .map(|i| SpendHistory { repeat_occasions: 1 + i % 9, mean_repeat_value: values.sample(&mut rng) * 5.0 })
            .collect();
        let table = SpendTable::new(&spends);
        assert!(warm_start_stride(table.repeats.len()).is_some(), "{} spend rows", table.repeats.len());
        let warm = fit_gamma_gamma(&spends).unwrap();
        let scale = table.mean_spend();
        let rescaled = table.clone().rescaled(scale);
        let cold = minimize(spend_objective(&rescaled), [0.0; 3], deadline).unwrap();
        let [p, q, gamma] = cold.point.map(f64::exp);
        for (w, c) in [(warm.params.p, p), (warm.params.q, q), (warm.params.gamma, gamma * scale)] {
            assert!((w - c).abs() < 1e-5 * c.abs(), "warm {w} cold {c}");
        }
    }

    #[test]
    fn gamma_gamma_gradient_and_value_match_the_per_customer_density() {
        let spends: Vec<SpendHistory> = (0..500u32)
            .map(|i| SpendHistory { repeat_occasions: 1 + i % 7, mean_repeat_value: 5.0 + f64::from(i % 37) * 1.3 })
            .chain([SpendHistory { repeat_occasions: 0, mean_repeat_value: 0.0 }])
            .collect();
        let table = SpendTable::new(&spends);
        let (p, q, gamma) = (2.5, 3.1, 12.0);
        let (ll, gradient) = table.objective(p, q, gamma);
        let direct: f64 = spends
            .iter()
            .filter(|s| s.is_informative())
            .map(|s| GammaGammaParams { p, q, gamma }.log_likelihood(*s))
            .sum();
        assert!((ll - direct).abs() < 1e-9 * direct.abs(), "{ll} vs {direct}");
        let h = 1e-6;
        let at = |p, q, gamma| table.objective(p, q, gamma).0;
        let numeric = [
            (at(p + h, q, gamma) - at(p - h, q, gamma)) / (2.0 * h),
            (at(p, q + h, gamma) - at(p, q - h, gamma)) / (2.0 * h),
            (at(p, q, gamma + h) - at(p, q, gamma - h)) / (2.0 * h),
        ];
        for (analytic, numeric) in gradient.iter().zip(numeric) {
            assert!((analytic - numeric).abs() < 1e-5 * numeric.abs().max(1.0), "{analytic} vs {numeric}");
        }
    }

    #[test]
    fn analytic_gradient_matches_finite_differences() {
        let histories: Vec<History> = (0..300u32)
            .map(|i| {
                let x = i % 7;
                History::new(x, f64::from(x) * 3.1, 25.0 + f64::from(i % 11))
            })
            .collect();
        let data = CompressedHistories::new(&histories).unwrap();
        for modified in [false, true] {
            let p = BetaGeoParams { r: 0.7, alpha: 3.0, a: 0.9, b: 2.2 };
            let (_, g) = beta_geo_objective(&data, &p, modified);
            let f = |q: BetaGeoParams| beta_geo_objective(&data, &q, modified).0;
            let h = 1e-6;
            let numeric = [
                (f(BetaGeoParams { r: p.r + h, ..p }) - f(BetaGeoParams { r: p.r - h, ..p })) / (2.0 * h),
                (f(BetaGeoParams { alpha: p.alpha + h, ..p }) - f(BetaGeoParams { alpha: p.alpha - h, ..p }))
                    / (2.0 * h),
                (f(BetaGeoParams { a: p.a + h, ..p }) - f(BetaGeoParams { a: p.a - h, ..p })) / (2.0 * h),
                (f(BetaGeoParams { b: p.b + h, ..p }) - f(BetaGeoParams { b: p.b - h, ..p })) / (2.0 * h),
            ];
            for i in 0..4 {
                assert!(
                    (g[i] - numeric[i]).abs() < 1e-5 * (1.0 + numeric[i].abs()),
                    "modified={modified} i={i}: {} vs {}",
                    g[i],
                    numeric[i]
                );
            }
        }
    }

    #[test]
    fn compression_counts_every_customer_once() {
        let hs = [History::new(1, 2.0, 5.0), History::new(1, 2.0, 5.0), History::new(0, 0.0, 5.0)];
        let c = CompressedHistories::new(&hs).unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c.weight.iter().sum::<f64>(), 3.0);
    }

    #[test]
    fn impossible_history_is_rejected_with_its_index() {
        let hs = [History::new(1, 2.0, 5.0), History::new(1, 6.0, 5.0)];
        match CompressedHistories::new(&hs) {
            Err(ScoreError::InvalidHistory { index, .. }) => assert_eq!(index, 1),
            other => panic!("expected InvalidHistory, got {other:?}"),
        }
    }

    #[test]
    fn no_repeat_buyers_is_a_clear_error_not_nan() {
        let hs: Vec<History> = (0..50).map(|i| History::new(0, 0.0, 10.0 + f64::from(i))).collect();
        for model in PurchaseModel::ALL {
            match fit_purchase_model(model, &hs) {
                Err(ScoreError::NotIdentified { detail, .. }) => assert!(detail.contains("repeat")),
                other => panic!("{model}: expected NotIdentified, got {other:?}"),
            }
        }
    }

    #[test]
    fn three_customers_do_not_make_a_fit() {
        let hs = [History::new(1, 31.0, 60.0), History::new(1, 59.0, 59.0), History::new(0, 0.0, 45.0)];
        for model in PurchaseModel::ALL {
            let err = fit_purchase_model(model, &hs).expect_err("three customers cannot identify four parameters");
            assert!(
                matches!(err, ScoreError::NotIdentified { .. } | ScoreError::NotConverged { .. }),
                "{model}: {err}"
            );
        }
    }

    #[test]
    fn a_fit_out_of_time_fails_clearly() {
        let histories: Vec<History> =
            (0..200u32).map(|i| History::new(i % 4, f64::from(i % 4) * 5.0, 30.0 + f64::from(i % 9))).collect();
        let data = CompressedHistories::new(&histories).unwrap();
        let err = fit_compressed(PurchaseModel::ParetoNbd, &data, Instant::now(), Duration::ZERO).unwrap_err();
        assert!(err.to_string().contains("time budget"), "{err}");
    }

    #[test]
    fn identical_spend_is_not_identified() {
        let spends: Vec<SpendHistory> =
            (0..100).map(|_| SpendHistory { repeat_occasions: 2, mean_repeat_value: 10.0 }).collect();
        assert!(matches!(fit_gamma_gamma(&spends), Err(ScoreError::NotIdentified { .. })));
    }
}
