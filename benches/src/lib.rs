//! Shared inputs for Patron's criterion benches: synthetic populations drawn
//! from the BG/NBD process (see `patron-workload`), built once per bench.

use patron_model::{CustomerId, Event, EventId, EventKind, Timestamp};
use patron_score::{ClvConfig, GammaGammaParams, History, PurchaseParams, ScoreInput, Scorer};
use patron_workload::{Population, synthetic_customers};

/// Seed of every bench population, so runs compare like with like.
pub const SEED: u64 = 20_261_123;

/// `n` customers of the default (CDNOW-like, days) population.
pub fn customers(n: usize) -> Vec<ScoreInput> {
    synthetic_customers(&Population::default(), n, SEED)
}

/// The same customers as model histories in days.
pub fn histories(customers: &[ScoreInput]) -> Vec<History> {
    customers.iter().map(|c| History::new(c.frequency, f64::from(c.recency_days), f64::from(c.tenure_days))).collect()
}

/// A scorer with the population's true parameters and default CLV settings.
pub fn scorer(model: fn(patron_score::BetaGeoParams) -> PurchaseParams) -> Scorer {
    let population = Population::default();
    let spend: GammaGammaParams = population.spend;
    Scorer::new(model(population.purchase), Some(spend), 35.0, &ClvConfig::default(), 1.0)
}

/// Customer `index`'s purchases as events (customer `c{index}`, no items):
/// the first purchase, then the repeats spread evenly over the recency
/// window, with `now_day` as the common "now".
pub fn purchase_events(index: usize, input: &ScoreInput, now_day: i32) -> Vec<Event> {
    let first = now_day - input.tenure_days as i32;
    let customer = CustomerId::new(&format!("c{index}")).expect("valid id");
    let occasions = input.frequency + 1;
    (0..occasions)
        .map(|k| {
            let day = if input.frequency == 0 {
                first
            } else {
                first + (i64::from(input.recency_days) * i64::from(k) / i64::from(input.frequency)) as i32
            };
            let value = if k == 0 { 25.0 } else { input.spend.mean_repeat_value };
            Event {
                event_id: EventId::new(&format!("e{index}-{k}")).expect("valid id"),
                customer_id: customer.clone(),
                timestamp: Timestamp::from_millis(i64::from(day) * 86_400_000 + 3_600_000),
                kind: EventKind::Purchase(patron_model::Purchase {
                    order_id: None,
                    items: Vec::new(),
                    revenue_minor: (value * 100.0).round() as i64,
                    acquisition: None,
                }),
            }
        })
        .collect()
}

/// This process's resident set size (Linux `/proc/self/status`; 0 elsewhere).
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<u64>().ok()))
        .map_or(0, |kb| kb * 1024)
}
