//! Customer lifetime value and the per-customer scores built on the models.
//!
//! CLV = margin × E[order value] × Σ_m (E[purchases by end of period m] −
//! E[purchases by end of period m−1]) / (1 + d)^m, with monthly periods by
//! default (DESIGN.md §3). Because E\[purchases\] = K(x, T, t) · P(alive)
//! (see [`crate::purchase`]), CLV = margin × E[order value] × P(alive) × D(x, T)
//! with D(x, T) = Σ_m (K(t_m) − K(t_{m−1})) / (1 + d)^m.
//!
//! [`Scorer::score_all`] uses that factorisation: with whole-day x and T,
//! D and K(90 days) are computed once per distinct (x, T) pair present in the
//! population (a dense table indexed by x and T) and every customer then costs
//! a table lookup and one exponential.

use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::gamma_gamma::{GammaGammaParams, SpendHistory};
use crate::purchase::{History, PurchaseParams, logistic_complement};
use crate::{Result, ScoreError};

/// How CLV is computed.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClvConfig {
    /// Horizon in days (default 365).
    pub horizon_days: f64,
    /// Annual discount rate (default 0.10).
    pub annual_discount_rate: f64,
    /// Share of revenue that is margin (default 1.0).
    pub margin: f64,
    /// What keeping one customer costs a year, base-currency major units
    /// (default 0): `net_clv` subtracts it over the horizon, discounted like the margin.
    pub retention_cost_per_year: f64,
}

impl Default for ClvConfig {
    fn default() -> Self {
        Self { horizon_days: 365.0, annual_discount_rate: 0.10, margin: 1.0, retention_cost_per_year: 0.0 }
    }
}

/// Largest yearly retention cost accepted, major units.
pub const MAX_RETENTION_COST_PER_YEAR: f64 = 1e9;

/// Longest CLV horizon accepted: 100 years of monthly periods.
pub const MAX_HORIZON_DAYS: f64 = 36_500.0;

impl ClvConfig {
    /// Checks every setting's range (the names are `patron.toml`'s `[clv]` keys):
    /// a margin in [0, 1], a horizon of 1 day to 100 years, a discount rate in [0, 10).
    pub fn check(&self) -> Result<()> {
        let invalid = |setting, value, expected| Err(ScoreError::InvalidSetting { setting, value, expected });
        if !(0.0..=1.0).contains(&self.margin) {
            return invalid("margin", self.margin, "the share of revenue that is margin, from 0 to 1");
        }
        if !(1.0..=MAX_HORIZON_DAYS).contains(&self.horizon_days) {
            return invalid("horizon_days", self.horizon_days, "from 1 day to 36500 (100 years)");
        }
        if !(0.0..10.0).contains(&self.annual_discount_rate) {
            return invalid(
                "annual_discount_rate",
                self.annual_discount_rate,
                "a yearly rate from 0 (0%) below 10 (1000%)",
            );
        }
        if !(0.0..=MAX_RETENTION_COST_PER_YEAR).contains(&self.retention_cost_per_year) {
            return invalid(
                "retention_cost_per_year",
                self.retention_cost_per_year,
                "a yearly amount in the base currency, from 0 to 1e9",
            );
        }
        Ok(())
    }

    /// The retention cost of one customer over the horizon, discounted as
    /// the CLV's margin is: the yearly cost spread evenly over the same
    /// months, each month's share discounted at the end of the month.
    /// `net_clv` = `clv` − this (acquisition costs are not subtracted yet:
    /// events do not carry them).
    pub fn retention_cost_over_horizon(&self) -> f64 {
        let schedule = DiscountSchedule::monthly(self, 1.0);
        let month_days = schedule.period_ends.first().copied().unwrap_or(0.0);
        let per_month = self.retention_cost_per_year * month_days / 365.0;
        per_month * schedule.discount_factors.iter().sum::<f64>()
    }
}

/// Period ends and discount factors of a discounted-cash-flow CLV.
#[derive(Clone, Debug, PartialEq)]
pub struct DiscountSchedule {
    /// End of each period, in model time units.
    pub period_ends: Vec<f64>,
    /// 1 / (1 + rate)^m for period m = 1, 2, ….
    pub discount_factors: Vec<f64>,
}

impl DiscountSchedule {
    /// Monthly periods over the configured horizon: the horizon is split into
    /// round(horizon / (365/12)) equal months (at least one), discounted at the
    /// monthly equivalent of the annual rate.
    pub fn monthly(config: &ClvConfig, days_per_time_unit: f64) -> Self {
        let months = (config.horizon_days / (365.0 / 12.0)).round().max(1.0) as usize;
        let month_days = config.horizon_days / months as f64;
        let monthly_rate = (1.0 + config.annual_discount_rate).powf(1.0 / 12.0) - 1.0;
        Self::periods(month_days / days_per_time_unit, months, monthly_rate)
    }

    /// `periods` periods of `length` time units, each discounted at `rate`.
    pub fn periods(length: f64, periods: usize, rate: f64) -> Self {
        Self {
            period_ends: (1..=periods).map(|m| m as f64 * length).collect(),
            discount_factors: (1..=periods).map(|m| (1.0 + rate).powi(-(m as i32))).collect(),
        }
    }
}

/// D(x, T) = Σ_m (K(t_m) − K(t_{m−1})) · discount_m: discounted expected purchases
/// of a customer known to be alive.
pub fn discounted_purchases_if_alive(
    params: &PurchaseParams,
    schedule: &DiscountSchedule,
    frequency: u32,
    tenure: f64,
) -> Result<f64> {
    let mut previous = 0.0;
    let mut total = 0.0;
    for (&end, &factor) in schedule.period_ends.iter().zip(&schedule.discount_factors) {
        let k = params.expected_if_alive(end, frequency, tenure)?;
        total += (k - previous) * factor;
        previous = k;
    }
    Ok(total)
}

/// The inputs of one customer's scores, in whole days.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScoreInput {
    /// x: repeat occasions.
    pub frequency: u32,
    /// t_x in days.
    pub recency_days: u32,
    /// T in days.
    pub tenure_days: u32,
    /// Mean value of the repeat occasions.
    pub spend: SpendHistory,
    /// "Now" of the scores, in days since 1970-01-01 (the next order's date counts from it).
    pub now_day: i32,
}

/// One customer's model scores.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Scores {
    /// P(alive) under the configured purchase model.
    pub p_alive: f64,
    /// E[purchases in the next 90 days].
    pub expected_orders_90d: f64,
    /// Gamma-Gamma expected order value.
    pub expected_order_value: f64,
    /// Discounted expected margin over the horizon.
    pub clv: f64,
    /// P(at least one purchase in the next 30 days).
    pub p_purchase_30d: f64,
    /// E[purchases in the next 365 days].
    pub expected_orders_365d: f64,
    /// The median date of the next purchase if the customer is alive, in
    /// days since 1970-01-01 (`None` where the model cannot say).
    pub next_order_day: Option<f64>,
    /// Standard deviation of ln CLV from the uncertainty of the fitted
    /// parameters ([`crate::interval`]). Only whole-population scoring
    /// ([`Scorer::score_all_with_intervals`]) computes it; `None` elsewhere
    /// and where the fits give no covariance.
    pub clv_log_spread: Option<f64>,
}

impl Scores {
    /// These scores with the CLV interval width of `earlier` (the same
    /// customer's scores from the last whole-population scoring): a single
    /// customer's rescoring cannot give an interval, which needs the whole
    /// population rescored eight times, so between refits the relative width
    /// carries over to the new CLV.
    pub fn with_spread_of(self, earlier: Option<&Scores>) -> Self {
        Self { clv_log_spread: earlier.and_then(|s| s.clv_log_spread), ..self }
    }
}

/// The parts of a score that depend only on (x, T): what a customer alive at
/// T would do. Memoised per (x, T) by [`Scorer::score_cached`] and tabled by
/// [`Scorer::score_all`].
#[derive(Clone, Copy, Debug, PartialEq)]
struct IfAlive {
    /// K(90 days): expected purchases in 90 days.
    k90: f64,
    /// K(365 days).
    k365: f64,
    /// D(x, T): discounted expected purchases over the CLV horizon.
    discounted: f64,
    /// P(a purchase within 30 days).
    purchase_30d: f64,
    /// Median wait to the next purchase, in days.
    median_wait_days: Option<f64>,
}

/// Fitted models plus CLV settings: everything needed to score a customer.
#[derive(Clone, Debug)]
pub struct Scorer {
    purchase: PurchaseParams,
    spend: Option<GammaGammaParams>,
    fallback_order_value: f64,
    schedule: DiscountSchedule,
    margin: f64,
    days_per_time_unit: f64,
}

/// Memo of the (x, T)-only parts of a score for [`Scorer::score_cached`].
#[derive(Debug, Default)]
pub struct ScoreCache {
    values: std::collections::HashMap<(u32, u32), IfAlive>,
}

impl ScoreCache {
    /// Entries kept before the memo starts over (≈ 40 MB at most).
    pub const CAPACITY: usize = 1 << 20;

    /// Forgets everything (call when the scorer changes).
    pub fn clear(&mut self) {
        self.values.clear();
    }
}

/// Dense (x, T) tables beyond this many cells fall back to direct evaluation
/// for the customers outside them (2 M cells = 32 MB).
const TABLE_CELL_LIMIT: usize = 2 << 20;

impl Scorer {
    /// A scorer. `fallback_order_value` is used when there is no Gamma-Gamma fit
    /// or its population mean does not exist (q ≤ 1); pass the observed mean
    /// occasion value.
    pub fn new(
        purchase: PurchaseParams,
        spend: Option<GammaGammaParams>,
        fallback_order_value: f64,
        clv: &ClvConfig,
        days_per_time_unit: f64,
    ) -> Self {
        Self {
            purchase,
            spend,
            fallback_order_value,
            schedule: DiscountSchedule::monthly(clv, days_per_time_unit),
            margin: clv.margin,
            days_per_time_unit,
        }
    }

    /// The purchase model parameters in use.
    pub fn purchase(&self) -> &PurchaseParams {
        &self.purchase
    }

    /// The Gamma-Gamma parameters in use (`None`: the fallback order value).
    pub fn spend(&self) -> Option<GammaGammaParams> {
        self.spend
    }

    /// The same scorer with other purchase parameters (in this scorer's time unit).
    pub(crate) fn with_purchase(&self, purchase: PurchaseParams) -> Self {
        Self { purchase, ..self.clone() }
    }

    fn history(&self, input: &ScoreInput) -> History {
        History::new(
            input.frequency,
            f64::from(input.recency_days) / self.days_per_time_unit,
            f64::from(input.tenure_days) / self.days_per_time_unit,
        )
    }

    fn order_value(&self, spend: SpendHistory) -> f64 {
        self.spend.and_then(|gg| gg.expected_order_value(spend)).unwrap_or(self.fallback_order_value)
    }

    /// What a customer alive at T with `frequency` repeats would do (model time units in, days out).
    fn if_alive(&self, frequency: u32, tenure: f64) -> Result<IfAlive> {
        let days = |d: f64| d / self.days_per_time_unit;
        Ok(IfAlive {
            k90: self.purchase.expected_if_alive(days(90.0), frequency, tenure)?,
            k365: self.purchase.expected_if_alive(days(365.0), frequency, tenure)?,
            discounted: discounted_purchases_if_alive(&self.purchase, &self.schedule, frequency, tenure)?,
            purchase_30d: self.purchase.p_purchase_if_alive(days(30.0), frequency, tenure),
            median_wait_days: self
                .purchase
                .median_wait_if_alive(frequency, tenure)
                .map(|w| w * self.days_per_time_unit),
        })
    }

    /// Scores one customer directly (the per-event path).
    pub fn score(&self, input: &ScoreInput) -> Result<Scores> {
        let h = self.history(input);
        let p_alive = self.purchase.p_alive(h)?;
        Ok(self.assemble(input, p_alive, &self.if_alive(h.frequency, h.tenure)?))
    }

    /// [`Self::score`] with the (x, T)-only parts memoised in `cache`, which
    /// must only ever be used with this scorer (clear it when models change).
    /// Repeat (x, T) pairs — most events — then cost one exponential.
    pub fn score_cached(&self, input: &ScoreInput, cache: &mut ScoreCache) -> Result<Scores> {
        let h = self.history(input);
        let p_alive = self.purchase.p_alive(h)?;
        let key = (input.frequency, input.tenure_days);
        let if_alive = match cache.values.get(&key) {
            Some(&v) => v,
            None => {
                let v = self.if_alive(h.frequency, h.tenure)?;
                if cache.values.len() >= ScoreCache::CAPACITY {
                    cache.values.clear();
                }
                cache.values.insert(key, v);
                v
            }
        };
        Ok(self.assemble(input, p_alive, &if_alive))
    }

    fn assemble(&self, input: &ScoreInput, p_alive: f64, if_alive: &IfAlive) -> Scores {
        let expected_order_value = self.order_value(input.spend);
        Scores {
            p_alive,
            expected_orders_90d: if_alive.k90 * p_alive,
            expected_order_value,
            clv: self.margin * expected_order_value * p_alive * if_alive.discounted,
            p_purchase_30d: if_alive.purchase_30d * p_alive,
            expected_orders_365d: if_alive.k365 * p_alive,
            next_order_day: if_alive.median_wait_days.map(|w| f64::from(input.now_day) + w),
            clv_log_spread: None,
        }
    }

    /// Scores every customer in parallel; equal to calling [`Self::score`] on each.
    pub fn score_all(&self, inputs: &[ScoreInput]) -> Result<Vec<Scores>> {
        let (max_x, max_t) = inputs
            .par_iter()
            .map(|i| (i.frequency, i.tenure_days))
            .reduce(|| (0, 0), |a, b| (a.0.max(b.0), a.1.max(b.1)));
        let width = max_t as usize + 1;
        let rows = (max_x as usize + 1).min((TABLE_CELL_LIMIT / width).max(1));
        let in_table = |i: &ScoreInput| (i.frequency as usize) < rows;

        let marks: Vec<AtomicU64> = (0..(rows * width).div_ceil(64)).map(|_| AtomicU64::new(0)).collect();
        inputs.par_iter().filter(|i| in_table(i)).for_each(|i| {
            let cell = i.frequency as usize * width + i.tenure_days as usize;
            marks[cell / 64].fetch_or(1 << (cell % 64), Ordering::Relaxed);
        });
        let cells: Vec<usize> = marks
            .iter()
            .enumerate()
            .flat_map(|(w, bits)| {
                let bits = bits.load(Ordering::Relaxed);
                (0..64).filter(move |b| bits & (1 << b) != 0).map(move |b| w * 64 + b)
            })
            .collect();
        let values: Vec<IfAlive> = cells
            .par_iter()
            .map(|&cell| self.if_alive((cell / width) as u32, (cell % width) as f64 / self.days_per_time_unit))
            .collect::<Result<_>>()?;
        let unset = IfAlive {
            k90: f64::NAN,
            k365: f64::NAN,
            discounted: f64::NAN,
            purchase_30d: f64::NAN,
            median_wait_days: None,
        };
        let mut table = vec![unset; if cells.is_empty() { 0 } else { rows * width }];
        for (&cell, &v) in cells.iter().zip(&values) {
            table[cell] = v;
        }
        let alive = AliveKernel::new(&self.purchase, max_t, self.days_per_time_unit);

        inputs
            .par_iter()
            .map(|input| {
                let p_alive = alive.p_alive(input, || self.purchase.p_alive(self.history(input)))?;
                if in_table(input) {
                    let if_alive = &table[input.frequency as usize * width + input.tenure_days as usize];
                    Ok(self.assemble(input, p_alive, if_alive))
                } else {
                    let h = self.history(input);
                    Ok(self.assemble(input, p_alive, &self.if_alive(h.frequency, h.tenure)?))
                }
            })
            .collect()
    }
}

/// P(alive) for the BG/NBD family from a table of ln(α + d) per whole day d.
struct AliveKernel {
    ln_alpha_plus_day: Vec<f64>,
    beta_geo: Option<(f64, f64, f64, f64, bool)>,
}

impl AliveKernel {
    fn new(params: &PurchaseParams, max_tenure_days: u32, days_per_time_unit: f64) -> Self {
        let beta_geo = match params {
            PurchaseParams::BgNbd(p) => Some((p.r, p.alpha, p.a, p.b, false)),
            PurchaseParams::MbgNbd(p) => Some((p.r, p.alpha, p.a, p.b, true)),
            PurchaseParams::ParetoNbd(_) => None,
        };
        let ln_alpha_plus_day = match beta_geo {
            Some((_, alpha, ..)) => {
                (0..=max_tenure_days).map(|d| (alpha + f64::from(d) / days_per_time_unit).ln()).collect()
            }
            None => Vec::new(),
        };
        Self { ln_alpha_plus_day, beta_geo }
    }

    fn p_alive(&self, input: &ScoreInput, direct: impl FnOnce() -> Result<f64>) -> Result<f64> {
        let Some((r, _, a, b, modified)) = self.beta_geo else { return direct() };
        if !modified && input.frequency == 0 {
            return Ok(1.0);
        }
        let x = f64::from(input.frequency);
        let m = if modified { 1.0 } else { 0.0 };
        let (ln_t, ln_x) = match (
            self.ln_alpha_plus_day.get(input.tenure_days as usize),
            self.ln_alpha_plus_day.get(input.recency_days as usize),
        ) {
            (Some(t), Some(x)) => (*t, *x),
            _ => {
                return Err(ScoreError::InvalidInput(format!(
                    "recency {} days exceeds tenure {} days",
                    input.recency_days, input.tenure_days
                )));
            }
        };
        Ok(logistic_complement(a.ln() - (b + x - 1.0 + m).ln() + (r + x) * (ln_t - ln_x)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::purchase::BetaGeoParams;

    #[test]
    fn clv_settings_outside_their_range_are_named() {
        assert!(ClvConfig::default().check().is_ok());
        let named = |config: ClvConfig| match config.check() {
            Err(ScoreError::InvalidSetting { setting, .. }) => setting,
            other => panic!("{config:?} gave {other:?}"),
        };
        let base = ClvConfig::default();
        assert_eq!(named(ClvConfig { margin: 1.5, ..base }), "margin");
        assert_eq!(named(ClvConfig { margin: f64::NAN, ..base }), "margin");
        assert_eq!(named(ClvConfig { horizon_days: 0.0, ..base }), "horizon_days");
        assert_eq!(named(ClvConfig { horizon_days: 1e9, ..base }), "horizon_days");
        assert_eq!(named(ClvConfig { annual_discount_rate: -1.0, ..base }), "annual_discount_rate");
        assert_eq!(named(ClvConfig { annual_discount_rate: f64::INFINITY, ..base }), "annual_discount_rate");
        assert_eq!(named(ClvConfig { retention_cost_per_year: -5.0, ..base }), "retention_cost_per_year");
        assert_eq!(named(ClvConfig { retention_cost_per_year: f64::NAN, ..base }), "retention_cost_per_year");
        let settings =
            ClvConfig { margin: 0.3, horizon_days: 180.0, annual_discount_rate: 0.05, retention_cost_per_year: 12.0 };
        assert!(settings.check().is_ok());
    }

    #[test]
    fn retention_cost_is_spread_over_the_months_and_discounted_like_the_margin() {
        // No discounting: a year's cost over a year, half over half a year.
        let flat = ClvConfig { annual_discount_rate: 0.0, retention_cost_per_year: 24.0, ..ClvConfig::default() };
        assert!((flat.retention_cost_over_horizon() - 24.0).abs() < 1e-12);
        let half = ClvConfig { horizon_days: 182.5, ..flat };
        assert!((half.retention_cost_over_horizon() - 12.0).abs() < 1e-12);
        // 10% a year: twelve payments of 2 at the ends of months 1..12,
        // discounted at the monthly equivalent rate.
        let discounted = ClvConfig { annual_discount_rate: 0.1, ..flat };
        let monthly = 1.1f64.powf(1.0 / 12.0);
        let want: f64 = (1..=12).map(|m| 2.0 / monthly.powi(m)).sum();
        assert!((discounted.retention_cost_over_horizon() - want).abs() < 1e-12);
        assert_eq!(ClvConfig::default().retention_cost_over_horizon(), 0.0);
    }

    fn scorer(purchase: PurchaseParams) -> Scorer {
        Scorer::new(
            purchase,
            Some(GammaGammaParams { p: 6.25, q: 3.74, gamma: 15.44 }),
            35.0,
            &ClvConfig::default(),
            1.0,
        )
    }

    #[test]
    fn score_all_equals_score_one_by_one() {
        let bg = BetaGeoParams { r: 0.243, alpha: 30.9, a: 0.793, b: 2.426 };
        let pareto = crate::purchase::ParetoParams { r: 0.553, alpha: 74.0, s: 0.606, beta: 81.7 };
        let inputs: Vec<ScoreInput> = (0..2000u32)
            .map(|i| {
                let x = i % 9;
                let tenure = 20 + (i * 7) % 400;
                let recency = if x == 0 { 0 } else { (i * 13) % (tenure + 1) };
                ScoreInput {
                    frequency: x,
                    recency_days: recency,
                    tenure_days: tenure,
                    spend: SpendHistory { repeat_occasions: x, mean_repeat_value: f64::from(i % 50) },
                    now_day: 10_000,
                }
            })
            .collect();
        for purchase in [PurchaseParams::BgNbd(bg), PurchaseParams::MbgNbd(bg), PurchaseParams::ParetoNbd(pareto)] {
            let s = scorer(purchase);
            let all = s.score_all(&inputs).unwrap();
            for (input, got) in inputs.iter().zip(&all) {
                let want = s.score(input).unwrap();
                assert_eq!(got.next_order_day.is_some(), want.next_order_day.is_some());
                for (g, w) in [
                    (got.p_alive, want.p_alive),
                    (got.expected_orders_90d, want.expected_orders_90d),
                    (got.clv, want.clv),
                    (got.p_purchase_30d, want.p_purchase_30d),
                    (got.expected_orders_365d, want.expected_orders_365d),
                    (got.next_order_day.unwrap_or(0.0), want.next_order_day.unwrap_or(0.0)),
                ] {
                    assert!((g - w).abs() <= 1e-12 * w.abs().max(1e-300), "{purchase:?} {input:?}: {g} vs {w}");
                }
            }
        }
    }

    #[test]
    fn cached_scores_equal_direct_scores() {
        let s = scorer(PurchaseParams::MbgNbd(BetaGeoParams { r: 0.5, alpha: 40.0, a: 0.9, b: 1.6 }));
        let mut cache = ScoreCache::default();
        for i in 0..500u32 {
            let x = i % 6;
            let input = ScoreInput {
                frequency: x,
                recency_days: if x == 0 { 0 } else { i % 50 },
                tenure_days: 50 + i % 7,
                spend: SpendHistory { repeat_occasions: x, mean_repeat_value: 20.0 },
                now_day: 10_000,
            };
            assert_eq!(s.score_cached(&input, &mut cache).unwrap(), s.score(&input).unwrap());
        }
        assert_eq!(cache.values.len(), 6 * 7);
    }

    #[test]
    fn monthly_schedule_covers_the_horizon() {
        let s = DiscountSchedule::monthly(&ClvConfig::default(), 1.0);
        assert_eq!(s.period_ends.len(), 12);
        assert!((s.period_ends[11] - 365.0).abs() < 1e-9);
        assert!((s.discount_factors[11] - 1.0 / 1.1).abs() < 1e-12);
        let weeks = DiscountSchedule::monthly(&ClvConfig::default(), 7.0);
        assert!((weeks.period_ends[11] - 365.0 / 7.0).abs() < 1e-9);
    }

    #[test]
    fn margin_scales_clv_linearly() {
        let bg = PurchaseParams::MbgNbd(BetaGeoParams { r: 0.5, alpha: 40.0, a: 0.9, b: 1.6 });
        let input = ScoreInput {
            frequency: 3,
            recency_days: 100,
            tenure_days: 200,
            spend: SpendHistory { repeat_occasions: 3, mean_repeat_value: 20.0 },
            now_day: 10_000,
        };
        let full = scorer(bg).score(&input).unwrap();
        let gg = GammaGammaParams { p: 6.25, q: 3.74, gamma: 15.44 };
        let half = Scorer::new(bg, Some(gg), 35.0, &ClvConfig { margin: 0.5, ..ClvConfig::default() }, 1.0)
            .score(&input)
            .unwrap();
        assert!((half.clv * 2.0 - full.clv).abs() < 1e-12 * full.clv);
    }
}
