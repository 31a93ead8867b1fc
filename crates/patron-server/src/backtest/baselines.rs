//! The two baselines every backtest figure is set against: what a marketer
//! predicts without a model.
//!
//! - **Same as last period**: each customer buys in the holdout what they
//!   bought in the last stretch of the calibration period (scaled to the
//!   holdout's length), and buys at all if they bought then.
//! - **RFM**: customers fall into cells of recency quintile × frequency
//!   (1, 2, 3, 4, 5+ purchase days); each cell predicts what its customers
//!   did next in the past — learned from the cells as of the start of that
//!   last stretch and what those customers did during it. No holdout data
//!   is used to learn either baseline.

use std::collections::HashMap;

use patron_model::Timestamp;
use patron_score::HoldoutCase;
use patron_state::CustomerBook;

/// One customer's purchases in one period.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct PeriodTotals {
    /// Purchase occasions (distinct days).
    pub(crate) occasions: u32,
    /// Revenue, major units.
    pub(crate) revenue: f64,
    /// Day of the last occasion.
    pub(crate) last_day: Option<i32>,
}

impl PeriodTotals {
    /// The totals of every customer of `book` with a purchase.
    pub(crate) fn by_customer(book: &CustomerBook, minor_per_major: f64) -> HashMap<String, PeriodTotals> {
        book.records()
            .iter()
            .filter(|r| r.has_purchased())
            .map(|r| {
                let totals = PeriodTotals {
                    occasions: r.occasions(),
                    revenue: r.revenue_minor as f64 / minor_per_major,
                    last_day: r.last_day(),
                };
                (r.customer_id().to_owned(), totals)
            })
            .collect()
    }
}

/// A baseline's predictions for one customer.
#[derive(Clone, Copy, Debug, Default)]
struct Guess {
    orders: f64,
    p_purchase: f64,
    value: f64,
}

/// The RFM cell of a customer: recency quintile (0 = most recent) × frequency (1..5+).
type Cell = (usize, u32);

/// A baseline and its predictions by customer id.
pub(crate) struct Baseline {
    name: &'static str,
    description: &'static str,
    guesses: HashMap<String, Guess>,
}

impl Baseline {
    /// Both baselines, or only "same as last period" when no customer bought
    /// before the window (nothing to learn RFM cells from). `scale` is the
    /// holdout's length over the window's.
    pub(crate) fn all(
        calibration: &CustomerBook,
        early: &CustomerBook,
        calibration_end: Timestamp,
        window_start: Timestamp,
        scale: f64,
        minor_per_major: f64,
    ) -> Vec<Baseline> {
        let now = PeriodTotals::by_customer(calibration, minor_per_major);
        let before = PeriodTotals::by_customer(early, minor_per_major);
        let in_window = |id: &str, totals: &PeriodTotals| {
            let earlier = before.get(id).copied().unwrap_or_default();
            (totals.occasions - earlier.occasions.min(totals.occasions), totals.revenue - earlier.revenue)
        };
        let last_period = now
            .iter()
            .map(|(id, totals)| {
                let (orders, revenue) = in_window(id, totals);
                let guess = Guess {
                    orders: f64::from(orders) * scale,
                    p_purchase: if orders > 0 { 1.0 } else { 0.0 },
                    value: revenue * scale,
                };
                (id.clone(), guess)
            })
            .collect();
        let mut baselines = vec![Baseline {
            name: "last_period",
            description: "each customer repeats what they bought in the last window of the calibration period, scaled to the holdout's length",
            guesses: last_period,
        }];
        if before.is_empty() {
            return baselines;
        }
        // Learn: cells as of the window's start, outcomes during the window.
        let early_cells = cells(&before, window_start.day());
        let mut learned: HashMap<Cell, (f64, f64, f64, f64)> = HashMap::new();
        for (id, cell) in &early_cells {
            let Some(totals) = now.get(id) else { continue };
            let (orders, revenue) = in_window(id, totals);
            let entry = learned.entry(*cell).or_default();
            entry.0 += 1.0;
            entry.1 += f64::from(orders);
            entry.2 += revenue;
            entry.3 += if orders > 0 { 1.0 } else { 0.0 };
        }
        let all = learned.values().fold((0.0, 0.0, 0.0, 0.0), |a, v| (a.0 + v.0, a.1 + v.1, a.2 + v.2, a.3 + v.3));
        let guess_of = |(n, orders, revenue, bought): (f64, f64, f64, f64)| Guess {
            orders: orders / n * scale,
            p_purchase: 1.0 - (1.0 - bought / n).powf(scale),
            value: revenue / n * scale,
        };
        let fallback = guess_of(all);
        // Apply: cells as of the calibration end.
        let rfm = cells(&now, calibration_end.day())
            .into_iter()
            .map(|(id, cell)| (id, learned.get(&cell).map_or(fallback, |&c| guess_of(c))))
            .collect();
        baselines.push(Baseline {
            name: "rfm",
            description: "recency quintile x frequency (1..5+) cells; each predicts what its customers did in the last window of the calibration period, learned from the cells at the window's start",
            guesses: rfm,
        });
        baselines
    }

    pub(crate) fn name(&self) -> &'static str {
        self.name
    }

    pub(crate) fn description(&self) -> &'static str {
        self.description
    }

    /// The model's cases with this baseline's predictions in place of the model's.
    pub(crate) fn cases(&self, ids: &[&str], model_cases: &[HoldoutCase]) -> Vec<HoldoutCase> {
        ids.iter()
            .zip(model_cases)
            .map(|(id, case)| {
                let guess = self.guesses.get(*id).copied().unwrap_or_default();
                HoldoutCase {
                    expected_orders: guess.orders,
                    p_purchase: guess.p_purchase,
                    predicted_value: guess.value,
                    ..*case
                }
            })
            .collect()
    }
}

/// Each customer's RFM cell as of `day`: recency quintiles within this
/// population, frequency capped at 5 purchase days.
fn cells(totals: &HashMap<String, PeriodTotals>, day: i32) -> Vec<(String, Cell)> {
    let recency = |t: &PeriodTotals| t.last_day.map_or(i32::MAX, |last| day - last);
    let mut sorted: Vec<i32> = totals.values().map(recency).collect();
    sorted.sort_unstable();
    let cuts: Vec<i32> = (1..5).map(|k| sorted[k * sorted.len() / 5]).collect();
    totals
        .iter()
        .map(|(id, t)| {
            let r = recency(t);
            (id.clone(), (cuts.iter().filter(|&&c| r >= c).count(), t.occasions.clamp(1, 5)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(occasions: u32, last_day: i32) -> PeriodTotals {
        PeriodTotals { occasions, revenue: f64::from(occasions) * 10.0, last_day: Some(last_day) }
    }

    #[test]
    fn cells_rank_recency_within_the_population_and_cap_frequency() {
        let population: HashMap<String, PeriodTotals> =
            (0..10).map(|i| (i.to_string(), totals(i as u32 + 1, 100 - i))).collect();
        let cells: HashMap<String, Cell> = cells(&population, 100).into_iter().collect();
        // Customer 0 bought on day 100 (most recent), customer 9 on day 91.
        assert_eq!(cells["0"], (0, 1));
        assert_eq!(cells["9"], (4, 5));
        assert_eq!(cells["4"].1, 5);
    }
}
