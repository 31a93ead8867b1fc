//! The live `model_quality` table: each refit's predictions, frozen, judged
//! against what customers have done since, by the measures `patron backtest`
//! reports offline (`patron_score::assess`).
//!
//! Why nothing is stored per customer: a refit's prediction for a customer
//! is a function of the fitted parameters and of the customer's (x, t_x, T)
//! on the refit's day, and the customer's occasion days, which the state
//! keeps anyway, still hold that history: the occasions up to the refit's
//! day are the calibration period, the later ones what happened since. So
//! a refit is frozen by keeping its [`ModelFits`], a few hundred bytes.
//!
//! The split is by UTC day, the unit occasions are counted in: a purchase
//! on the refit's own day counts as before the refit, even if it arrived
//! after it. Revenue is not kept per occasion, so the live report has no
//! decile lift (the backtest has).

use patron_model::Timestamp;
use patron_score::{History, HoldoutCase, PredictionQuality, PurchaseModel, assess, predict_holdout};
use rayon::prelude::*;

use crate::scoring::ModelFits;

/// Refits kept for the table, newest last.
pub const KEPT_REFITS: usize = 4;

/// One customer's history split at a refit's day.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrozenCase {
    /// x at the refit: occasions up to its day, less the first.
    pub repeats: u32,
    /// t_x at the refit, days.
    pub recency_days: u32,
    /// T at the refit, days.
    pub tenure_days: u32,
    /// Occasions on later days.
    pub since: u32,
}

/// `occasion_days` (ascending, unique) split at `refit_day`; `None` for a
/// customer who had not bought by then.
pub fn split_at(occasion_days: &[i32], refit_day: i32) -> Option<FrozenCase> {
    let before = occasion_days.partition_point(|&d| d <= refit_day);
    let (&first, &last) = (occasion_days.first()?, occasion_days[..before].last()?);
    Some(FrozenCase {
        repeats: u32::try_from(before - 1).ok()?,
        recency_days: u32::try_from(last - first).ok()?,
        tenure_days: u32::try_from(refit_day - first).ok()?,
        since: u32::try_from(occasion_days.len() - before).ok()?,
    })
}

/// One row of `model_quality`: a frozen refit judged now.
#[derive(Clone, Debug, PartialEq)]
pub struct QualityRow {
    /// When the refit was made (its watermark).
    pub fitted_at: Timestamp,
    /// The purchase model judged (the configured one).
    pub model: PurchaseModel,
    /// "Now": the end of the period judged.
    pub judged_at: Timestamp,
    /// Days from the refit's day to now's.
    pub days_since: f64,
    /// Expected against actual purchases, error, AUC and Brier score.
    pub quality: PredictionQuality,
}

/// Judges `fits`' `model` on `cases` over the days from the refit's day to
/// `now`'s; `None` when that model's fit had failed.
pub fn judge(fits: &ModelFits, model: PurchaseModel, cases: &[FrozenCase], now: Timestamp) -> Option<QualityRow> {
    let fit = fits.params(model)?;
    let unit = fits.time_unit.days();
    let days_since = f64::from((now.day() - fits.fitted_at.day()).max(0));
    let judged: Vec<HoldoutCase> = cases
        .par_iter()
        .filter_map(|c| {
            let history = History::new(c.repeats, f64::from(c.recency_days) / unit, f64::from(c.tenure_days) / unit);
            let predicted = predict_holdout(&fit.params, history, days_since / unit).ok()?;
            Some(HoldoutCase {
                calibration_repeats: c.repeats,
                expected_orders: predicted.expected_orders,
                actual_orders: c.since,
                p_purchase: predicted.p_purchase,
                predicted_value: 0.0,
                actual_revenue: 0.0,
            })
        })
        .collect();
    Some(QualityRow { fitted_at: fits.fitted_at, model, judged_at: now, days_since, quality: assess(&judged) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_history_splits_at_the_refit_day_which_counts_as_before() {
        let days = [10, 14, 20, 31];
        assert_eq!(split_at(&days, 9), None, "not a customer yet");
        assert_eq!(split_at(&days, 10), Some(FrozenCase { repeats: 0, recency_days: 0, tenure_days: 0, since: 3 }));
        assert_eq!(split_at(&days, 20), Some(FrozenCase { repeats: 2, recency_days: 10, tenure_days: 10, since: 1 }));
        assert_eq!(split_at(&days, 40), Some(FrozenCase { repeats: 3, recency_days: 21, tenure_days: 30, since: 0 }));
        assert_eq!(split_at(&[], 40), None);
    }
}
