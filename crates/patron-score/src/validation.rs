//! Holdout validation: how well predictions made at the end of a calibration
//! period describe what customers did in the holdout period after it.
//!
//! The measures are the ones the BTYD literature reports (Fader, Hardie & Lee
//! 2005, §5: expected against actual holdout purchases per number of
//! calibration repeats) plus the ones a marketing team asks of any score:
//! error per customer (MAE, RMSE), ranking of who buys again (AUC) and how
//! honest the probabilities are (Brier score), and how much of the holdout
//! revenue the top deciles by predicted value bring (decile lift).
//!
//! Every function here takes plain predictions, so a model and any baseline
//! are judged by one definition.

use serde::Serialize;

use crate::{History, PurchaseParams, Result};

/// What a purchase model fitted at the end of a calibration period predicts
/// for one customer over the `horizon` after it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HoldoutPrediction {
    /// Expected purchases in the horizon.
    pub expected_orders: f64,
    /// P(alive) at the end of the calibration period.
    pub p_alive: f64,
    /// Probability of at least one purchase in the horizon.
    pub p_purchase: f64,
}

/// The predictions for `history` (in the model's time unit) over `horizon`
/// (same unit): the one definition `patron backtest` and the live
/// `model_quality` table both judge.
pub fn predict_holdout(params: &PurchaseParams, history: History, horizon: f64) -> Result<HoldoutPrediction> {
    let p_alive = params.p_alive(history)?;
    Ok(HoldoutPrediction {
        expected_orders: params.expected_purchases(horizon, history)?,
        p_alive,
        p_purchase: p_alive * params.p_purchase_if_alive(horizon, history.frequency, history.tenure),
    })
}

/// One customer's predictions at the calibration end and what happened after.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HoldoutCase {
    /// Repeat purchases in the calibration period (the x of the calibration table).
    pub calibration_repeats: u32,
    /// Predicted purchases in the holdout period.
    pub expected_orders: f64,
    /// Purchases (occasions) in the holdout period.
    pub actual_orders: u32,
    /// Predicted probability of at least one holdout purchase.
    pub p_purchase: f64,
    /// Predicted value, used only to rank customers (CLV, or a baseline's revenue).
    pub predicted_value: f64,
    /// Revenue in the holdout period.
    pub actual_revenue: f64,
}

/// The summary of a set of predictions against the holdout.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PredictionQuality {
    /// Customers judged.
    pub customers: usize,
    /// Mean predicted holdout purchases per customer.
    pub mean_expected_orders: f64,
    /// Mean actual holdout purchases per customer.
    pub mean_actual_orders: f64,
    /// Mean absolute error of the holdout purchases.
    pub mae: f64,
    /// Root mean squared error of the holdout purchases.
    pub rmse: f64,
    /// Area under the ROC curve of `p_purchase` for "bought in the holdout"
    /// (ties count one half); `None` when everyone or no one bought.
    pub auc: Option<f64>,
    /// Mean squared error of `p_purchase` against bought (1) or not (0).
    pub brier: f64,
    /// Holdout revenue by decile of predicted value, best decile first.
    pub decile_lift: Vec<DecileRow>,
}

/// One decile of customers ranked by predicted value.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct DecileRow {
    /// 1 = the tenth with the highest predicted value.
    pub decile: u8,
    /// Customers in the decile.
    pub customers: f64,
    /// Their holdout revenue.
    pub actual_revenue: f64,
    /// Their share of all holdout revenue.
    pub revenue_share: f64,
    /// `revenue_share` over the decile's share of customers (1 = no better than random).
    pub lift: f64,
}

/// One line of the calibration table.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct CalibrationRow {
    /// Calibration repeat purchases (the last line holds this many or more).
    pub calibration_repeats: u32,
    /// Whether the line holds every customer with at least that many repeats.
    pub or_more: bool,
    /// Customers on the line.
    pub customers: usize,
    /// Their mean predicted holdout purchases.
    pub expected_orders: f64,
    /// Their mean actual holdout purchases.
    pub actual_orders: f64,
}

/// Judges `cases`: error, ranking, calibration of probabilities, decile lift.
pub fn assess(cases: &[HoldoutCase]) -> PredictionQuality {
    let n = cases.len().max(1) as f64;
    let (mut abs, mut sq, mut brier, mut expected, mut actual) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for c in cases {
        let error = c.expected_orders - f64::from(c.actual_orders);
        abs += error.abs();
        sq += error * error;
        let bought = if c.actual_orders > 0 { 1.0 } else { 0.0 };
        brier += (c.p_purchase - bought).powi(2);
        expected += c.expected_orders;
        actual += f64::from(c.actual_orders);
    }
    let scores: Vec<f64> = cases.iter().map(|c| c.p_purchase).collect();
    let labels: Vec<bool> = cases.iter().map(|c| c.actual_orders > 0).collect();
    PredictionQuality {
        customers: cases.len(),
        mean_expected_orders: expected / n,
        mean_actual_orders: actual / n,
        mae: abs / n,
        rmse: (sq / n).sqrt(),
        auc: auc(&scores, &labels),
        brier: brier / n,
        decile_lift: decile_lift(cases),
    }
}

/// Area under the ROC curve: the chance that a random positive scores above a
/// random negative, ties counting one half (the Mann–Whitney U statistic over
/// the product of the class sizes). `None` without both classes.
pub fn auc(scores: &[f64], labels: &[bool]) -> Option<f64> {
    let mut order: Vec<usize> = (0..scores.len().min(labels.len())).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let positives = order.iter().filter(|&&i| labels[i]).count();
    let negatives = order.len() - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    // Sum of the positives' ranks, tied scores sharing their mean rank.
    let mut rank_sum = 0.0;
    let mut start = 0;
    while start < order.len() {
        let mut end = start;
        while end < order.len() && scores[order[end]] == scores[order[start]] {
            end += 1;
        }
        let mean_rank = (start + end + 1) as f64 / 2.0;
        rank_sum += mean_rank * order[start..end].iter().filter(|&&i| labels[i]).count() as f64;
        start = end;
    }
    let p = positives as f64;
    Some((rank_sum - p * (p + 1.0) / 2.0) / (p * negatives as f64))
}

/// Holdout revenue by decile of `predicted_value`. Customers with equal
/// predictions are not ordered by accident: a block of ties spread over
/// several deciles gives each of them its mean revenue per customer, so a
/// baseline that predicts zero for most customers is judged fairly.
pub fn decile_lift(cases: &[HoldoutCase]) -> Vec<DecileRow> {
    let n = cases.len();
    let mut rows: Vec<DecileRow> = (1..=10)
        .map(|d| DecileRow { decile: d, customers: 0.0, actual_revenue: 0.0, revenue_share: 0.0, lift: 0.0 })
        .collect();
    if n == 0 {
        return rows;
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| cases[b].predicted_value.total_cmp(&cases[a].predicted_value));
    let decile_end = |d: usize| (d + 1) as f64 * n as f64 / 10.0;
    let mut start = 0;
    while start < n {
        let mut end = start;
        while end < n && cases[order[end]].predicted_value == cases[order[start]].predicted_value {
            end += 1;
        }
        let mean = order[start..end].iter().map(|&i| cases[i].actual_revenue).sum::<f64>() / (end - start) as f64;
        // Spread positions [start, end) over the deciles, fractionally at the edges.
        for (d, row) in rows.iter_mut().enumerate() {
            let lo = (d as f64 * n as f64 / 10.0).max(start as f64);
            let hi = decile_end(d).min(end as f64);
            if hi > lo {
                row.customers += hi - lo;
                row.actual_revenue += (hi - lo) * mean;
            }
        }
        start = end;
    }
    let total: f64 = rows.iter().map(|r| r.actual_revenue).sum();
    for row in &mut rows {
        if total > 0.0 && row.customers > 0.0 {
            row.revenue_share = row.actual_revenue / total;
            row.lift = row.revenue_share / (row.customers / n as f64);
        }
    }
    rows
}

/// Mean expected against mean actual holdout purchases per number of
/// calibration repeats `0..last`, the last line holding `last` or more.
pub fn calibration_table(cases: &[HoldoutCase], last: u32) -> Vec<CalibrationRow> {
    let mut rows: Vec<CalibrationRow> = (0..=last)
        .map(|x| CalibrationRow {
            calibration_repeats: x,
            or_more: x == last,
            customers: 0,
            expected_orders: 0.0,
            actual_orders: 0.0,
        })
        .collect();
    for c in cases {
        let row = &mut rows[c.calibration_repeats.min(last) as usize];
        row.customers += 1;
        row.expected_orders += c.expected_orders;
        row.actual_orders += f64::from(c.actual_orders);
    }
    for row in &mut rows {
        if row.customers > 0 {
            row.expected_orders /= row.customers as f64;
            row.actual_orders /= row.customers as f64;
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(expected: f64, actual: u32, p: f64, value: f64, revenue: f64) -> HoldoutCase {
        HoldoutCase {
            calibration_repeats: actual.min(3),
            expected_orders: expected,
            actual_orders: actual,
            p_purchase: p,
            predicted_value: value,
            actual_revenue: revenue,
        }
    }

    #[test]
    fn auc_is_the_share_of_correctly_ordered_pairs_with_ties_as_halves() {
        // Pairs (positive, negative): (0.9, 0.1) right, (0.9, 0.5) right,
        // (0.5, 0.1) right, (0.5, 0.5) tie -> 3.5 of 4.
        let got = auc(&[0.9, 0.5, 0.5, 0.1], &[true, true, false, false]).unwrap();
        assert!((got - 0.875).abs() < 1e-12, "{got}");
        assert_eq!(auc(&[0.2, 0.4], &[true, true]), None);
        assert!((auc(&[0.1, 0.9], &[true, false]).unwrap()).abs() < 1e-12);
    }

    #[test]
    fn errors_and_brier_follow_their_definitions() {
        let cases = [case(1.0, 0, 0.5, 0.0, 0.0), case(1.0, 3, 1.0, 0.0, 0.0)];
        let q = assess(&cases);
        assert!((q.mae - 1.5).abs() < 1e-12);
        assert!((q.rmse - (2.5f64).sqrt()).abs() < 1e-12);
        assert!((q.brier - 0.125).abs() < 1e-12);
        assert_eq!(q.auc, Some(1.0));
    }

    #[test]
    fn a_perfect_ranking_puts_the_revenue_in_the_first_decile() {
        let cases: Vec<HoldoutCase> =
            (0..100).map(|i| case(0.0, 0, 0.0, f64::from(i), if i >= 90 { 10.0 } else { 0.0 })).collect();
        let lift = decile_lift(&cases);
        assert!((lift[0].revenue_share - 1.0).abs() < 1e-12);
        assert!((lift[0].lift - 10.0).abs() < 1e-12);
        assert_eq!(lift[9].actual_revenue, 0.0);
    }

    #[test]
    fn tied_predictions_share_their_mean_revenue_across_deciles() {
        // All predictions equal: no ranking information, every decile gets a tenth.
        let cases: Vec<HoldoutCase> = (0..20).map(|i| case(0.0, 0, 0.0, 1.0, f64::from(i % 2) * 4.0)).collect();
        for row in decile_lift(&cases) {
            assert!((row.revenue_share - 0.1).abs() < 1e-12, "{row:?}");
            assert!((row.lift - 1.0).abs() < 1e-12);
        }
    }

    #[test]
    fn calibration_table_groups_by_repeats_with_an_or_more_line() {
        let cases = [case(0.5, 0, 0.0, 0.0, 0.0), case(1.5, 1, 0.0, 0.0, 0.0), case(2.5, 3, 0.0, 0.0, 0.0)];
        let table = calibration_table(&cases, 2);
        assert_eq!(table.len(), 3);
        assert_eq!(table[0].customers, 1);
        assert!((table[1].expected_orders - 1.5).abs() < 1e-12);
        assert!(table[2].or_more && table[2].customers == 1 && table[2].actual_orders == 3.0);
    }
}
