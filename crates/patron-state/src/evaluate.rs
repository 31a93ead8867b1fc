//! Offline evaluation of recommendations with a temporal leave-last-basket-out
//! split, against the baselines a skeptical reader would try first.
//!
//! Design constraints:
//! - **No look-ahead.** Purchases are replayed in time order through the same
//!   profile, product statistics, refresh kernel and blend the server uses.
//!   A test customer (two or more baskets) is asked for recommendations at the
//!   moment their last basket arrives, scored against it, and only then is
//!   the basket applied — so each test customer is trained on everything
//!   before their last basket, and other customers' later purchases never leak in.
//! - **Same clock for everyone.** The shared models (Patron's neighbours,
//!   item-kNN's neighbours, popularity) are refreshed at the first purchase of
//!   each day (every `refresh_days`), as a server refreshing on a schedule would.
//! - **Deterministic.** Inputs are ordered by time then input position; every
//!   ranking breaks ties by product index.
//! - **A temporal hold-out.** `replay_until` drops every purchase from that
//!   day on, as if the data ended there: tuning runs see only the early
//!   period. A test window keeps the test customers whose last basket falls
//!   in `[from, until)`; everything before is still replayed as history. A
//!   report on `from` = the tuning cut-off is then out of sample: no basket
//!   it scores was seen while the defaults were chosen.
//! - The **explore** subset keeps the test customers whose last basket holds a
//!   product they never bought; relevance is then those new products only, and
//!   each method recommends only products the customer never bought (Patron's
//!   discover list).
//!
//! Baselines: **popularity** (most ordered products so far), **buy again**
//! (the customer's own products by number of baskets, most recent first on
//! ties, full unbounded history) and **item-kNN** (cosine over basket
//! co-occurrence, exact, 50 neighbours per product, a candidate scores the sum
//! of its similarities to the customer's products).

use std::collections::HashMap;

use patron_model::{CustomerId, Event, EventKind};
use patron_score::{average_precision, hit_rate, ndcg, recall};
use rayon::prelude::*;
use serde::Serialize;

use crate::catalog::ProductCatalog;
use crate::items::{ItemConfig, ItemStats, RecsModel, basket_lines};
use crate::profile::PurchaseProfile;
use crate::recommend::{BlendConfig, ListKind, recommend};

/// Settings of one evaluation.
#[derive(Clone, Copy, Debug)]
pub struct EvalConfig {
    /// List length (the `@K` of every metric).
    pub k: usize,
    /// Days between refreshes of the shared models.
    pub refresh_days: i32,
    /// Product statistics tuning.
    pub items: ItemConfig,
    /// Blend weights.
    pub blend: BlendConfig,
    /// Products kept per customer profile.
    pub profile_limit: usize,
    /// Which test customers count, by the day of their last basket.
    pub window: TestWindow,
}

/// Days (since the epoch) a test customer's last basket may fall on:
/// `[from, until)`, each end open when `None`; and the day the data is cut at.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TestWindow {
    /// Purchases on or after this day are not replayed at all.
    pub replay_until_day: Option<i32>,
    /// First day counted.
    pub from_day: Option<i32>,
    /// First day no longer counted.
    pub until_day: Option<i32>,
}

impl TestWindow {
    /// Whether a last basket on `day` is tested.
    pub fn contains(&self, day: i32) -> bool {
        self.from_day.is_none_or(|from| day >= from) && self.until_day.is_none_or(|until| day < until)
    }
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            k: 10,
            refresh_days: 1,
            items: ItemConfig::default(),
            blend: BlendConfig::default(),
            profile_limit: crate::record::DEFAULT_HISTORY,
            window: TestWindow::default(),
        }
    }
}

/// Mean metrics of one method on one subset of test customers.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Metrics {
    /// Test customers in the subset.
    pub customers: u64,
    /// Share of customers with at least one relevant product in the list.
    pub hit_rate: f64,
    /// Mean share of the relevant products found.
    pub recall: f64,
    /// Mean normalised DCG (binary relevance).
    pub ndcg: f64,
    /// Mean average precision.
    pub map: f64,
    /// Distinct products recommended over the catalogue size.
    pub coverage: f64,
}

/// One method's results.
#[derive(Clone, Debug, Serialize)]
pub struct MethodReport {
    /// `patron`, `popularity`, `buy_again` or `item_knn`.
    pub method: String,
    /// On every test customer.
    pub all: Metrics,
    /// On the explore subset.
    pub explore: Metrics,
}

/// The result of [`evaluate`].
#[derive(Clone, Debug, Serialize)]
pub struct EvalReport {
    /// List length.
    pub k: usize,
    /// Customers with at least one purchase.
    pub customers: u64,
    /// Purchases (baskets) replayed.
    pub baskets: u64,
    /// Products in the catalogue at the end.
    pub products: u64,
    /// Customers with two or more baskets whose last basket is in the test window.
    pub test_customers: u64,
    /// The test window.
    pub window: TestWindow,
    /// Test customers whose last basket holds a product new to them.
    pub explore_customers: u64,
    /// Patron's similarity measure.
    pub similarity: String,
    /// Every method, Patron first.
    pub methods: Vec<MethodReport>,
}

#[derive(Default)]
struct Accumulator {
    customers: u64,
    hit_rate: f64,
    recall: f64,
    ndcg: f64,
    map: f64,
    recommended: Vec<bool>,
}

impl Accumulator {
    fn add(&mut self, list: &[u32], relevant: &[u32]) {
        self.customers += 1;
        self.hit_rate += hit_rate(list, relevant);
        self.recall += recall(list, relevant);
        self.ndcg += ndcg(list, relevant);
        self.map += average_precision(list, relevant);
        for &p in list {
            let p = p as usize;
            if self.recommended.len() <= p {
                self.recommended.resize(p + 1, false);
            }
            self.recommended[p] = true;
        }
    }

    fn finish(&self, products: usize) -> Metrics {
        let n = self.customers.max(1) as f64;
        Metrics {
            customers: self.customers,
            hit_rate: self.hit_rate / n,
            recall: self.recall / n,
            ndcg: self.ndcg / n,
            map: self.map / n,
            coverage: self.recommended.iter().filter(|&&r| r).count() as f64 / products.max(1) as f64,
        }
    }
}

/// Exact item-to-item cosine over basket co-occurrence (the item-kNN baseline).
#[derive(Default)]
struct ItemKnn {
    baskets: Vec<u32>,
    co: Vec<HashMap<u32, u32>>,
    neighbours: Vec<Vec<(u32, f32)>>,
}

const KNN_NEIGHBOURS: usize = 50;

impl ItemKnn {
    fn observe(&mut self, products: &[u32]) {
        let max = products.iter().copied().max().map_or(0, |m| m as usize + 1);
        if self.baskets.len() < max {
            self.baskets.resize(max, 0);
            self.co.resize_with(max, HashMap::new);
        }
        for &p in products {
            self.baskets[p as usize] += 1;
            for &q in products.iter().filter(|&&q| q != p) {
                *self.co[p as usize].entry(q).or_default() += 1;
            }
        }
    }

    fn refresh(&mut self) {
        let baskets = &self.baskets;
        self.neighbours = self
            .co
            .par_iter()
            .enumerate()
            .map(|(p, co)| {
                let mut list: Vec<(u32, f32)> = co
                    .iter()
                    .map(|(&q, &c)| {
                        (q, (f64::from(c) / (f64::from(baskets[p]) * f64::from(baskets[q as usize])).sqrt()) as f32)
                    })
                    .collect();
                list.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                list.truncate(KNN_NEIGHBOURS);
                list
            })
            .collect();
    }

    fn recommend(&self, history: &[u32], k: usize, exclude: impl Fn(u32) -> bool) -> Vec<u32> {
        let mut scores: HashMap<u32, f64> = HashMap::new();
        for &h in history {
            for &(q, s) in self.neighbours.get(h as usize).map_or(&[][..], Vec::as_slice) {
                if !exclude(q) {
                    *scores.entry(q).or_default() += f64::from(s);
                }
            }
        }
        top_k(scores.into_iter().collect(), k)
    }

    fn popular(&self, n: usize) -> Vec<u32> {
        top_k(self.baskets.iter().enumerate().map(|(p, &b)| (p as u32, f64::from(b))).collect(), n)
    }
}

fn top_k(mut scored: Vec<(u32, f64)>, k: usize) -> Vec<u32> {
    scored.retain(|s| s.1 > 0.0);
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    scored.into_iter().take(k).map(|s| s.0).collect()
}

/// A customer's full history for the baselines: baskets per product and the
/// position of the latest one.
#[derive(Default)]
struct FullHistory {
    products: HashMap<u32, (u32, u64)>,
}

impl FullHistory {
    fn most_bought(&self, k: usize) -> Vec<u32> {
        let mut all: Vec<(u32, u32, u64)> = self.products.iter().map(|(&p, &(n, last))| (p, n, last)).collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then(b.2.cmp(&a.2)).then(a.0.cmp(&b.0)));
        all.into_iter().take(k).map(|a| a.0).collect()
    }
}

/// Replays `events` and evaluates Patron and the baselines (see the module docs).
pub fn evaluate(events: &[Event], config: &EvalConfig, progress: &dyn Fn(u64, u64)) -> EvalReport {
    let catalog = ProductCatalog::default();
    let stats = ItemStats::new(config.items);
    let mut purchases: Vec<(usize, &Event)> = events
        .iter()
        .enumerate()
        .filter(|(_, e)| matches!(e.kind, EventKind::Purchase(ref p) if !p.items.is_empty()))
        .filter(|(_, e)| config.window.replay_until_day.is_none_or(|until| e.timestamp.day() < until))
        .collect();
    purchases.sort_by_key(|(position, e)| (e.timestamp, *position));
    // Baskets per customer, and the day of their last one.
    let mut baskets_left: HashMap<&CustomerId, (u32, i32)> = HashMap::new();
    for (_, e) in &purchases {
        let entry = baskets_left.entry(&e.customer_id).or_default();
        *entry = (entry.0 + 1, e.timestamp.day());
    }
    let test_customers =
        baskets_left.values().filter(|&&(n, last)| n >= 2 && config.window.contains(last)).count() as u64;
    let customers = baskets_left.len() as u64;
    const METHODS: [&str; 4] = ["patron", "popularity", "buy_again", "item_knn"];
    let mut all: Vec<Accumulator> = METHODS.iter().map(|_| Accumulator::default()).collect();
    let mut explore: Vec<Accumulator> = METHODS.iter().map(|_| Accumulator::default()).collect();
    let mut profiles: HashMap<&CustomerId, PurchaseProfile> = HashMap::new();
    let mut histories: HashMap<&CustomerId, FullHistory> = HashMap::new();
    let mut knn = ItemKnn::default();
    let mut model = RecsModel::default();
    let mut popular: Vec<u32> = Vec::new();
    let mut next_refresh = i32::MIN;
    let k = config.k;
    let total = purchases.len() as u64;
    for (seq, (_, event)) in purchases.iter().enumerate() {
        let EventKind::Purchase(purchase) = &event.kind else { continue };
        let day = event.timestamp.day();
        if day >= next_refresh {
            model = stats.refresh(day);
            knn.refresh();
            popular = knn.popular(k + 500);
            next_refresh = day + config.refresh_days.max(1);
        }
        let lines: Vec<_> = basket_lines(purchase, &catalog).collect();
        let mut basket: Vec<u32> = lines.iter().map(|l| l.product).collect();
        basket.sort_unstable();
        basket.dedup();
        let left = baskets_left.get_mut(&event.customer_id).map_or(0, |(n, _)| {
            *n -= 1;
            *n
        });
        let profile = profiles.entry(&event.customer_id).or_default();
        let history = histories.entry(&event.customer_id).or_default();
        if left == 0 && !history.products.is_empty() && config.window.contains(day) {
            let owned = |p: u32| history.products.contains_key(&p);
            let mut owned_list: Vec<u32> = history.products.keys().copied().collect();
            owned_list.sort_unstable();
            let patron = |new_only: bool| {
                let kind = if new_only { ListKind::Discover } else { ListKind::Main };
                recommend(profile, &model, &config.blend, k, kind).into_iter().map(|r| r.product).collect::<Vec<u32>>()
            };
            let buy_again = history.most_bought(k);
            let lists_all = [
                patron(false),
                popular.iter().copied().take(k).collect(),
                buy_again.clone(),
                knn.recommend(&owned_list, k, |_| false),
            ];
            for (acc, list) in all.iter_mut().zip(&lists_all) {
                acc.add(list, &basket);
            }
            let new_items: Vec<u32> = basket.iter().copied().filter(|&p| !owned(p)).collect();
            if !new_items.is_empty() {
                let lists_new = [
                    patron(true),
                    popular.iter().copied().filter(|&p| !owned(p)).take(k).collect(),
                    buy_again,
                    knn.recommend(&owned_list, k, owned),
                ];
                for (acc, list) in explore.iter_mut().zip(&lists_new) {
                    acc.add(list, &new_items);
                }
            }
        }
        stats.observe(profile, day, &lines, config.profile_limit);
        for &p in &basket {
            let entry = history.products.entry(p).or_default();
            *entry = (entry.0 + 1, seq as u64);
        }
        knn.observe(&basket);
        if seq % 1024 == 0 {
            progress(seq as u64, total);
        }
    }
    progress(total, total);
    let products = catalog.len();
    let explore_customers = explore[0].customers;
    EvalReport {
        k,
        customers,
        baskets: total,
        products: products as u64,
        test_customers,
        window: config.window,
        explore_customers,
        similarity: config.items.similarity.name(),
        methods: METHODS
            .iter()
            .zip(all.iter().zip(&explore))
            .map(|(name, (a, e))| MethodReport {
                method: (*name).to_owned(),
                all: a.finish(products),
                explore: e.finish(products),
            })
            .collect(),
    }
}
