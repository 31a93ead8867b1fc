//! Product statistics updated per purchase, and the kernel that turns them
//! into each product's nearest neighbours (the "bought with" signal).
//!
//! Design constraints:
//! - **Per event, bounded work.** A basket of `k` distinct products (at most
//!   [`ItemConfig::max_basket_products`] take part in pairs) and `r` recent
//!   products of the same customer cost `O(k · (k + r) · C)`, with `C` the
//!   counters per product. Nothing scans the catalogue on the event path.
//! - **Bounded memory per product.** Co-purchases are kept in a weighted
//!   Space-Saving summary (Metwally, Agrawal & El Abbadi 2005) of at most `C`
//!   counters (default 128, 16 bytes each: at most 2 KiB per product). Any product whose true co-purchase
//!   weight with `i` exceeds `W_i / C` (`W_i` = all of `i`'s co-purchase
//!   weight) is held, and every held weight overestimates the truth by at most
//!   its recorded `error ≤ W_i / C`. The neighbour kernel ranks by the lower
//!   bound `weight − error`, so an evicted-and-returned rare product cannot
//!   ride on the weight it inherited.
//! - **Time decay without rewriting.** Weights are forward-decayed (Cormode et
//!   al. 2009): an event on `day` adds `2^((day − landmark)/half_life)`; the
//!   ratio of two such sums is the ratio of the decayed sums as of any "now",
//!   so similarities need no periodic decay pass. The landmark is fixed
//!   (2020-01-01). Co-purchase weights are `f32`, their exponent clamped to
//!   ±120 half-lives (1900 to 2140 with the 365-day default); the trend's
//!   weights are `f64`, clamped to ±1,000 half-lives (1938 to 2102 with the
//!   30-day default), so a 30-day trend means the same in 1997 as in 2035.
//! - **Off the answer's path, in batches.** A purchase is first recorded
//!   ([`ItemStats::record`]: the customer's profile decides new or repeat
//!   buyer) into an [`Observed`] batch, then applied ([`ItemStats::apply`])
//!   to products of any shard. Products live in [`SEGMENTS`] segments
//!   (`index % SEGMENTS`), each behind its own lock, taken once per segment
//!   per batch. The engine applies batches on a thread of their own
//!   (`patron_state`'s item feed).
//! - **Refresh off the event path.** [`ItemStats::refresh`] runs on the rayon
//!   pool and holds one segment's read lock at a time; the result is an
//!   immutable [`RecsModel`] that readers share.
//!
//! ```text
//! purchase ─► profile (buy again) ─► Observed batch ─► product counters + co-purchase summaries ─► refresh (rayon) ─► RecsModel
//! ```

use std::sync::RwLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use patron_model::Purchase;
use patron_model::codec::{self, ByteReader};
use patron_score::Similarity;
use rayon::prelude::*;

use crate::catalog::ProductCatalog;
use crate::profile::{ProductHistory, ProfileChange, PurchaseProfile};

/// Segments the product statistics are split into (one lock each).
pub const SEGMENTS: usize = 64;

/// Day number of 2020-01-01, the forward-decay landmark.
const LANDMARK_DAY: i32 = 18_262;

/// Exponential time decay expressed as forward-decay weights.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Decay {
    /// Days after which an event counts half.
    pub half_life_days: f64,
}

/// Half-lives from the landmark that an `f32` weight can hold (2^±120 is finite).
const F32_HALF_LIVES: f64 = 120.0;

/// Half-lives from the landmark that an `f64` weight can hold, with room to
/// sum 2^24 events at the very edge (2^1000 · 2^24 is still finite).
const F64_HALF_LIVES: f64 = 1_000.0;

impl Decay {
    fn half_lives_from_landmark(self, day: i32) -> f64 {
        (i64::from(day) - i64::from(LANDMARK_DAY)) as f64 / self.half_life_days.max(1.0)
    }

    /// The weight of an event on `day`, relative to the fixed landmark, as the
    /// co-purchase counters keep it (`f32`): ±120 half-lives, so with the
    /// 365-day default, events from 1900 to 2140 keep their order.
    pub fn weight(self, day: i32) -> f32 {
        self.half_lives_from_landmark(day).clamp(-F32_HALF_LIVES, F32_HALF_LIVES).exp2() as f32
    }

    /// `2^((day − landmark)/half_life)` in `f64`: ±1,000 half-lives, so the
    /// 30-day trend decay tells days apart from 1938 to 2102.
    pub fn factor(self, day: i32) -> f64 {
        self.half_lives_from_landmark(day).clamp(-F64_HALF_LIVES, F64_HALF_LIVES).exp2()
    }
}

/// Tuning of the product statistics.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ItemConfig {
    /// Co-purchase counters kept per product.
    pub counters_per_product: usize,
    /// Products of one basket that form pairs (the rest still count as orders).
    pub max_basket_products: usize,
    /// A product bought within this many days before a basket pairs with it.
    pub cross_basket_days: i32,
    /// Recent products (per customer) that pair with a new basket.
    pub cross_basket_products: usize,
    /// Weight of a cross-basket pair relative to a same-basket pair.
    pub cross_basket_weight: f32,
    /// Decay of co-purchase and order weights.
    pub co_purchase_decay: Decay,
    /// Half-life of a customer's own purchase counts (buy again), in that
    /// customer's purchase occasions.
    pub repeat_half_life_occasions: f64,
    /// Neighbours kept per product by the refresh kernel.
    pub neighbours: usize,
    /// Similarity measure of the refresh kernel.
    pub similarity: Similarity,
    /// Popular products kept per category (and overall).
    pub popular_per_category: usize,
    /// Short decay of the product's orders, against which the long one
    /// tells a product still selling from one that stopped (seasonal,
    /// discontinued): see [`RecsModel::trend`].
    pub trend_decay: Decay,
}

impl Default for ItemConfig {
    fn default() -> Self {
        Self {
            counters_per_product: 128,
            max_basket_products: 50,
            cross_basket_days: 30,
            cross_basket_products: 8,
            cross_basket_weight: 0.5,
            co_purchase_decay: Decay { half_life_days: 365.0 },
            repeat_half_life_occasions: 8.0,
            neighbours: 50,
            similarity: Similarity::default(),
            popular_per_category: 20,
            trend_decay: Decay { half_life_days: 30.0 },
        }
    }
}

/// One co-purchase counter of the Space-Saving summary.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CoCounter {
    /// The other product.
    pub product: u32,
    /// Orders (or order pairs) counted, including any inherited on eviction.
    pub count: u32,
    /// Forward-decayed co-purchase weight (an overestimate by at most `error`).
    pub weight: f32,
    /// Weight inherited from the evicted counter this one replaced.
    pub error: f32,
}

impl CoCounter {
    /// The guaranteed part of the weight.
    pub fn lower_bound(&self) -> f32 {
        (self.weight - self.error).max(0.0)
    }
}

/// A weighted Space-Saving summary of at most `capacity` counters.
///
/// Every basket adds to several of these, and with the default 128 counters a
/// full summary is searched twice per add (for the product, then for the
/// smallest weight), so the fields are kept column by column: the search
/// reads 4 bytes per counter in 16-lane blocks instead of 16-byte records
/// one at a time (`bench-results/loadgen/NOTES.md`, the hot-path profile).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TopCounters {
    products: Vec<u32>,
    /// The weights' bits. Weights are kept non-negative ([`TopCounters::add`]
    /// clamps), and the bits of non-negative floats order like the floats,
    /// so the smallest weight is an integer minimum.
    weight_bits: Vec<u32>,
    counts: Vec<u32>,
    errors: Vec<f32>,
}

/// A co-purchase weight as the counters keep it: negative and NaN count as 0,
/// so that the weights' bits order like the weights.
fn non_negative(weight: f32) -> f32 {
    if weight > 0.0 { weight } else { 0.0 }
}

/// Lanes compared at once when searching counters.
const SEARCH_LANES: usize = 16;

/// The first index of `value` in `values`: blocks of [`SEARCH_LANES`] are
/// compared whole (the compiler turns a block into one vector compare),
/// and only the block that holds it is searched one by one.
fn first_index_of(values: &[u32], value: u32) -> Option<usize> {
    let blocks = values.chunks_exact(SEARCH_LANES);
    let tail = blocks.remainder();
    for (b, block) in blocks.enumerate() {
        if block.iter().fold(false, |found, &v| found | (v == value)) {
            return block.iter().position(|&v| v == value).map(|i| b * SEARCH_LANES + i);
        }
    }
    tail.iter().position(|&v| v == value).map(|i| values.len() - tail.len() + i)
}

impl TopCounters {
    /// Adds `weight` for `product`, replacing the smallest counter when full
    /// (the first of equally small ones). A negative or NaN weight counts as 0.
    pub fn add(&mut self, product: u32, weight: f32, capacity: usize) {
        let weight = non_negative(weight);
        if let Some(i) = first_index_of(&self.products, product) {
            self.weight_bits[i] = (f32::from_bits(self.weight_bits[i]) + weight).to_bits();
            self.counts[i] = self.counts[i].saturating_add(1);
            return;
        }
        if capacity == 0 {
            return;
        }
        if self.products.len() < capacity {
            self.push(CoCounter { product, count: 1, weight, error: 0.0 });
            return;
        }
        let Some(smallest) = self.weight_bits.iter().copied().min() else { return };
        let Some(i) = first_index_of(&self.weight_bits, smallest) else { return };
        let inherited = f32::from_bits(smallest);
        self.products[i] = product;
        self.counts[i] = self.counts[i].saturating_add(1);
        self.weight_bits[i] = (inherited + weight).to_bits();
        self.errors[i] = inherited;
    }

    /// Appends a counter as it is (restoring a snapshot); a negative or NaN weight counts as 0.
    pub fn push(&mut self, counter: CoCounter) {
        let weight = non_negative(counter.weight);
        self.products.push(counter.product);
        self.weight_bits.push(weight.to_bits());
        self.counts.push(counter.count);
        self.errors.push(counter.error);
    }

    /// The counters, in no particular order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = CoCounter> + '_ {
        (0..self.products.len()).map(|i| CoCounter {
            product: self.products[i],
            count: self.counts[i],
            weight: f32::from_bits(self.weight_bits[i]),
            error: self.errors[i],
        })
    }

    /// Number of counters.
    pub fn len(&self) -> usize {
        self.products.len()
    }

    /// Whether there are no counters.
    pub fn is_empty(&self) -> bool {
        self.products.is_empty()
    }

    /// Bytes held by the counters.
    pub fn memory_bytes(&self) -> usize {
        self.products.capacity() * size_of::<u32>()
            + self.weight_bits.capacity() * size_of::<u32>()
            + self.counts.capacity() * size_of::<u32>()
            + self.errors.capacity() * size_of::<f32>()
    }
}

/// Running statistics of one product.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProductStats {
    /// Orders containing it.
    pub orders: u64,
    /// Distinct buyers (exact while each buyer's bounded profile holds it).
    pub customers: u64,
    /// Buyers who bought it on at least two days.
    pub repeat_customers: u64,
    /// Units sold (quantities rounded to whole units).
    pub units: i64,
    /// Revenue, base-currency minor units.
    pub revenue_minor: i64,
    /// Forward-decayed orders ([`ItemConfig::co_purchase_decay`]).
    pub order_weight: f64,
    /// Forward-decayed orders with the short [`ItemConfig::trend_decay`].
    pub recent_order_weight: f64,
    /// Category index + 1 (0: none stated).
    pub category: u32,
    /// Products bought with it.
    pub co_purchases: TopCounters,
}

/// One line of a basket as the statistics see it.
#[derive(Clone, Copy, Debug)]
pub struct BasketLine<'a> {
    /// Product index in the catalogue.
    pub product: u32,
    /// Category, if the shop sent one.
    pub category: Option<&'a str>,
    /// Units bought.
    pub units: i64,
    /// Line revenue, base-currency minor units.
    pub revenue_minor: i64,
}

/// The lines of a purchase with products interned in `catalog`; revenue is
/// the unit price times quantity, or an even share of the order's revenue
/// when the shop sent no prices.
pub fn basket_lines<'a>(
    purchase: &'a Purchase,
    catalog: &'a ProductCatalog,
) -> impl ExactSizeIterator<Item = BasketLine<'a>> + 'a {
    let share = purchase.revenue_minor / purchase.items.len().max(1) as i64;
    purchase.items.iter().map(move |item| {
        let units = item.quantity.to_f64();
        BasketLine {
            product: catalog.intern(&item.product_id),
            category: item.category.as_deref(),
            units: units.round() as i64,
            revenue_minor: item.unit_price_minor.map_or(share, |p| (p as f64 * units).round() as i64),
        }
    })
}

/// One distinct product of a basket, its lines merged (category interned).
#[derive(Clone, Copy, Debug)]
struct MergedLine {
    product: u32,
    /// Category index + 1 (0: none stated).
    category: u32,
    units: i64,
    revenue_minor: i64,
}

/// A basket's part of an [`Observed`] batch: `paired` products of it, then
/// `recent` ones of the same customer, from `start` in [`Observed`]'s products.
#[derive(Clone, Copy, Debug)]
struct ObservedBasket {
    start: u32,
    paired: u32,
    recent: u32,
    co_weight: f32,
    trend_weight: f64,
}

/// How a basket touches one product's statistics.
#[derive(Clone, Copy, Debug)]
enum Touch {
    /// Bought in the basket.
    Bought { line: MergedLine, change: ProfileChange, in_pairs: bool },
    /// Bought recently by the same customer: pairs back with the basket.
    Recent { product: u32 },
}

impl Touch {
    fn product(&self) -> u32 {
        match self {
            Touch::Bought { line, .. } => line.product,
            Touch::Recent { product } => *product,
        }
    }
}

/// Purchases a shard writer recorded ([`ItemStats::record`]) that have not
/// yet reached the product statistics ([`ItemStats::apply`]).
///
/// The customer's side of a purchase (their profile, which says whether they
/// are a new or repeat buyer) is decided when it is recorded; what is left is
/// arithmetic on product statistics, which [`ItemStats::apply`] does for a
/// whole batch with one lock per segment, in the order of recording. So the
/// statistics end the same whether a purchase is applied at once or later in
/// a batch. A batch's buffers are reused: recording allocates nothing once
/// they have grown.
#[derive(Debug, Default)]
pub struct Observed {
    baskets: Vec<ObservedBasket>,
    products: Vec<u32>,
    touches: Vec<(u32, Touch)>,
    lines: Vec<MergedLine>,
    recent: Vec<ProductHistory>,
    by_segment: Vec<u32>,
}

impl Observed {
    /// Purchases recorded and not yet applied.
    pub fn baskets(&self) -> usize {
        self.baskets.len()
    }

    /// Whether nothing waits to be applied.
    pub fn is_empty(&self) -> bool {
        self.baskets.is_empty()
    }

    fn clear(&mut self) {
        self.baskets.clear();
        self.products.clear();
        self.touches.clear();
    }
}

#[derive(Debug, Default)]
struct Categories {
    names: Vec<Box<str>>,
    /// Looked up for every purchase line: hashbrown's seeded foldhash, not SipHash.
    index: hashbrown::HashMap<Box<str>, u32>,
}

/// Statistics of every product, shared by all shard writers.
#[derive(Debug)]
pub struct ItemStats {
    config: ItemConfig,
    segments: Box<[RwLock<Vec<ProductStats>>]>,
    categories: RwLock<Categories>,
    /// Bytes of every product's co-purchase counters as of the last
    /// [`ItemStats::refresh`] (which reads every summary anyway), so that
    /// `/metrics` takes no lock and walks nothing.
    counter_bytes: AtomicUsize,
}

impl Default for ItemStats {
    fn default() -> Self {
        Self::new(ItemConfig::default())
    }
}

fn locate(product: u32) -> (usize, usize) {
    (product as usize % SEGMENTS, product as usize / SEGMENTS)
}

impl ItemStats {
    /// Empty statistics.
    pub fn new(config: ItemConfig) -> Self {
        Self {
            config,
            segments: (0..SEGMENTS).map(|_| RwLock::new(Vec::new())).collect(),
            categories: RwLock::new(Categories::default()),
            counter_bytes: AtomicUsize::new(0),
        }
    }

    /// The tuning in use.
    pub fn config(&self) -> &ItemConfig {
        &self.config
    }

    fn category_index(&self, name: &str) -> u32 {
        if let Some(&i) = self.categories.read().ok().and_then(|c| c.index.get(name).copied()).as_ref() {
            return i;
        }
        let mut c = self.categories.write().unwrap_or_else(|p| p.into_inner());
        if let Some(&i) = c.index.get(name) {
            return i;
        }
        let i = c.names.len() as u32 + 1;
        c.names.push(name.into());
        c.index.insert(name.into(), i);
        i
    }

    /// Category names; index `c − 1` is category `c` of [`ProductStats::category`].
    pub fn category_names(&self) -> Vec<Box<str>> {
        self.categories.read().map(|c| c.names.clone()).unwrap_or_default()
    }

    /// Sets `product`'s statistics (restoring a snapshot).
    fn put(&self, product: u32, stats: ProductStats) {
        let (segment, slot) = locate(product);
        let mut products = self.segments[segment].write().unwrap_or_else(|p| p.into_inner());
        if products.len() <= slot {
            products.resize_with(slot + 1, ProductStats::default);
        }
        products[slot] = stats;
    }

    /// A copy of `product`'s statistics (without its co-purchase counters).
    pub fn product(&self, product: u32) -> Option<ProductStats> {
        let (segment, slot) = locate(product);
        let products = self.segments[segment].read().ok()?;
        products.get(slot).map(|p| ProductStats {
            orders: p.orders,
            customers: p.customers,
            repeat_customers: p.repeat_customers,
            units: p.units,
            revenue_minor: p.revenue_minor,
            order_weight: p.order_weight,
            recent_order_weight: p.recent_order_weight,
            category: p.category,
            co_purchases: TopCounters::default(),
        })
    }

    /// Records one purchase of a customer whose history is `profile` (updated
    /// too, keeping at most `profile_limit` products) and applies it: one
    /// [`Self::record`] and one [`Self::apply`].
    pub fn observe(&self, profile: &mut PurchaseProfile, day: i32, basket: &[BasketLine<'_>], profile_limit: usize) {
        let mut observed = Observed::default();
        self.record(&mut observed, profile, day, basket.iter().copied(), profile_limit);
        self.apply(&mut observed);
    }

    /// Records one purchase on `day` of a customer whose history is `profile`
    /// into `observed`: the profile is updated now (keeping at most
    /// `profile_limit` products), the product statistics when `observed` is
    /// applied.
    pub fn record<'a>(
        &self,
        observed: &mut Observed,
        profile: &mut PurchaseProfile,
        day: i32,
        basket: impl IntoIterator<Item = BasketLine<'a>>,
        profile_limit: usize,
    ) {
        let config = &self.config;
        let Observed { baskets, products, touches, lines, recent, .. } = observed;
        // Distinct products in first-seen order, their lines merged; the first stated category counts.
        lines.clear();
        for line in basket {
            match lines.iter_mut().find(|d| d.product == line.product) {
                Some(d) => {
                    d.units = d.units.saturating_add(line.units);
                    d.revenue_minor = d.revenue_minor.saturating_add(line.revenue_minor);
                    if d.category == 0
                        && let Some(c) = line.category
                    {
                        d.category = self.category_index(c);
                    }
                }
                None => lines.push(MergedLine {
                    product: line.product,
                    category: line.category.map_or(0, |c| self.category_index(c)),
                    units: line.units,
                    revenue_minor: line.revenue_minor,
                }),
            }
        }
        if lines.is_empty() {
            return;
        }
        profile.recent_into(day - config.cross_basket_days, day, config.cross_basket_products, recent);
        let repeat_weight = profile.begin_basket(day, config.repeat_half_life_occasions);
        let start = products.len();
        let paired = lines.len().min(config.max_basket_products);
        products.extend(lines[..paired].iter().map(|l| l.product));
        let recent_start = products.len();
        products.extend(recent.iter().map(|e| e.product).filter(|r| !lines.iter().any(|d| d.product == *r)));
        let basket = baskets.len() as u32;
        baskets.push(ObservedBasket {
            start: start as u32,
            paired: paired as u32,
            recent: (products.len() - recent_start) as u32,
            co_weight: config.co_purchase_decay.weight(day),
            trend_weight: config.trend_decay.factor(day),
        });
        for (i, line) in lines.iter().enumerate() {
            let change = profile.record(line.product, day, repeat_weight, profile_limit);
            touches.push((basket, Touch::Bought { line: *line, change, in_pairs: i < paired }));
        }
        touches.extend(products[recent_start..].iter().map(|&product| (basket, Touch::Recent { product })));
    }

    /// Applies the purchases `observed` holds to the product statistics, in
    /// the order they were recorded, taking each segment's lock once, and
    /// empties it for reuse.
    pub fn apply(&self, observed: &mut Observed) {
        let Observed { baskets, products, touches, by_segment, .. } = observed;
        // A stable counting sort of the touches by segment.
        let mut starts = [0u32; SEGMENTS + 1];
        for (_, touch) in touches.iter() {
            starts[locate(touch.product()).0 + 1] += 1;
        }
        for s in 0..SEGMENTS {
            starts[s + 1] += starts[s];
        }
        let mut next = starts;
        by_segment.resize(touches.len(), 0);
        for (i, (_, touch)) in touches.iter().enumerate() {
            let segment = locate(touch.product()).0;
            by_segment[next[segment] as usize] = i as u32;
            next[segment] += 1;
        }
        for segment in 0..SEGMENTS {
            let order = &by_segment[starts[segment] as usize..starts[segment + 1] as usize];
            if order.is_empty() {
                continue;
            }
            let mut stats = self.segments[segment].write().unwrap_or_else(|p| p.into_inner());
            for &i in order {
                let (basket, touch) = touches[i as usize];
                let slot = locate(touch.product()).1;
                if stats.len() <= slot {
                    stats.resize_with(slot + 1, ProductStats::default);
                }
                self.apply_touch(&mut stats[slot], touch, &baskets[basket as usize], products);
            }
        }
        observed.clear();
    }

    fn apply_touch(&self, stats: &mut ProductStats, touch: Touch, basket: &ObservedBasket, products: &[u32]) {
        let config = &self.config;
        let capacity = config.counters_per_product;
        let start = basket.start as usize;
        let paired = &products[start..start + basket.paired as usize];
        let recent = &products[start + paired.len()..start + paired.len() + basket.recent as usize];
        let cross = basket.co_weight * config.cross_basket_weight;
        match touch {
            Touch::Bought { line, change, in_pairs } => {
                stats.orders += 1;
                stats.units = stats.units.saturating_add(line.units);
                stats.revenue_minor = stats.revenue_minor.saturating_add(line.revenue_minor);
                stats.order_weight += f64::from(basket.co_weight);
                stats.recent_order_weight += basket.trend_weight;
                if line.category != 0 {
                    stats.category = line.category;
                }
                match change {
                    ProfileChange::NewProduct => stats.customers += 1,
                    ProfileChange::FirstRepeat => stats.repeat_customers += 1,
                    ProfileChange::LaterRepeat | ProfileChange::SameOccasion => {}
                }
                if in_pairs {
                    for &other in paired.iter().filter(|&&o| o != line.product) {
                        stats.co_purchases.add(other, basket.co_weight, capacity);
                    }
                    for &other in recent {
                        stats.co_purchases.add(other, cross, capacity);
                    }
                }
            }
            // The recent products pair back with the new basket.
            Touch::Recent { .. } => {
                for &product in paired {
                    stats.co_purchases.add(product, cross, capacity);
                }
            }
        }
    }

    /// Number of products with statistics.
    pub fn len(&self) -> usize {
        self.segments
            .iter()
            .enumerate()
            .map(|(s, seg)| seg.read().map_or(0, |p| if p.is_empty() { 0 } else { (p.len() - 1) * SEGMENTS + s + 1 }))
            .max()
            .unwrap_or(0)
    }

    /// Whether no product was seen.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes held by the statistics: the products' records now, their
    /// co-purchase counters (at allocated capacity) as of the last refresh or
    /// restore. Walks nothing: one read lock per segment for its length.
    pub fn memory_bytes(&self) -> usize {
        let products: usize =
            self.segments.iter().map(|seg| seg.read().map_or(0, |p| p.capacity() * size_of::<ProductStats>())).sum();
        products + self.counter_bytes.load(Ordering::Relaxed)
    }

    /// Bytes of every product's co-purchase counters, read now (walks every product).
    fn walk_counter_bytes(&self) -> usize {
        self.segments
            .iter()
            .map(|seg| seg.read().map_or(0, |p| p.iter().map(|s| s.co_purchases.memory_bytes()).sum::<usize>()))
            .sum()
    }

    /// Computes every product's top neighbours, repurchase rate, trend as of
    /// `now_day` and the popular products per category (rayon; one segment
    /// lock at a time).
    pub fn refresh(&self, now_day: i32) -> RecsModel {
        let config = &self.config;
        let products = self.len();
        // Pass 1: per-product order weights and rates, the denominators of every similarity.
        let mut order_weight = vec![0.0f64; products];
        let mut recent_weight = vec![0.0f64; products];
        let mut customers = vec![0u64; products];
        let mut repeat_customers = vec![0u64; products];
        let mut category = vec![0u32; products];
        let firsts: Vec<Vec<ProductTotals>> = self
            .segments
            .par_iter()
            .enumerate()
            .map(|(s, seg)| {
                seg.read().map_or_else(
                    |_| Vec::new(),
                    |p| {
                        p.iter()
                            .enumerate()
                            .map(|(slot, st)| ProductTotals {
                                product: slot * SEGMENTS + s,
                                counter_bytes: st.co_purchases.memory_bytes(),
                                order_weight: st.order_weight,
                                recent_order_weight: st.recent_order_weight,
                                customers: st.customers,
                                repeat_customers: st.repeat_customers,
                                category: st.category,
                            })
                            .collect()
                    },
                )
            })
            .collect();
        let counter_bytes = firsts.iter().flatten().map(|t| t.counter_bytes).sum();
        self.counter_bytes.store(counter_bytes, Ordering::Relaxed);
        for t in firsts.into_iter().flatten().filter(|t| t.product < products) {
            let p = t.product;
            (order_weight[p], recent_weight[p], customers[p], repeat_customers[p], category[p]) =
                (t.order_weight, t.recent_order_weight, t.customers, t.repeat_customers, t.category);
        }
        // Trend: the product's share of recent orders over its share of all
        // (decayed) orders; 1 for a product selling as it always did.
        let long_now = f64::from(config.co_purchase_decay.weight(now_day));
        let short_now = config.trend_decay.factor(now_day);
        let (long_total, short_total) = (order_weight.iter().sum::<f64>(), recent_weight.iter().sum::<f64>());
        let trend: Vec<f32> = order_weight
            .iter()
            .zip(&recent_weight)
            .map(|(&long, &short)| {
                if long <= 0.0 || short_total <= 0.0 {
                    return 1.0;
                }
                let ratio = (short / short_now) / (long / long_now);
                let typical = (short_total / short_now) / (long_total / long_now);
                (ratio / typical) as f32
            })
            .collect();
        let total_customers: u64 = customers.iter().sum();
        let prior = if total_customers == 0 {
            0.0
        } else {
            repeat_customers.iter().sum::<u64>() as f64 / total_customers as f64
        };
        let repurchase: Vec<f32> = customers
            .iter()
            .zip(&repeat_customers)
            .map(|(&c, &r)| {
                ((r as f64 + prior * REPURCHASE_PRIOR_BUYERS) / (c as f64 + REPURCHASE_PRIOR_BUYERS)) as f32
            })
            .collect();
        // Pass 2: neighbours, segment by segment.
        let k = config.neighbours;
        let lists: Vec<Vec<(usize, Vec<Neighbour>)>> = self
            .segments
            .par_iter()
            .enumerate()
            .map(|(s, seg)| {
                let Ok(p) = seg.read() else { return Vec::new() };
                p.iter()
                    .enumerate()
                    .filter(|(_, st)| !st.co_purchases.is_empty())
                    .map(|(slot, st)| {
                        let product = slot * SEGMENTS + s;
                        let mut list: Vec<Neighbour> = st
                            .co_purchases
                            .iter()
                            .filter_map(|c| {
                                let other = order_weight.get(c.product as usize).copied().unwrap_or(0.0);
                                let score = config.similarity.score(
                                    f64::from(c.lower_bound()),
                                    c.count,
                                    st.order_weight,
                                    other,
                                );
                                (score > 0.0).then_some(Neighbour {
                                    product: c.product,
                                    score: score as f32,
                                    co_purchases: c.count,
                                })
                            })
                            .collect();
                        list.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.product.cmp(&b.product)));
                        list.truncate(k);
                        (product, list)
                    })
                    .collect()
            })
            .collect();
        let mut per_product: Vec<Vec<Neighbour>> = vec![Vec::new(); products];
        for (p, list) in lists.into_iter().flatten() {
            if p < products {
                per_product[p] = list;
            }
        }
        let mut offsets = Vec::with_capacity(products + 1);
        let mut neighbours = Vec::with_capacity(per_product.iter().map(Vec::len).sum());
        offsets.push(0u32);
        for list in per_product {
            neighbours.extend(list);
            offsets.push(neighbours.len() as u32);
        }
        let popular = popular_by_category(&order_weight, &category, config.popular_per_category);
        RecsModel {
            trend,
            offsets,
            neighbours,
            repurchase,
            repurchase_prior: prior as f32,
            category,
            popular,
            category_names: self.category_names(),
        }
    }

    /// Appends the snapshot layout of every product's statistics.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let names = self.category_names();
        out.extend_from_slice(&(names.len() as u32).to_le_bytes());
        for n in &names {
            codec::put_str(out, n);
        }
        let products = self.len();
        out.extend_from_slice(&(products as u32).to_le_bytes());
        for p in 0..products as u32 {
            let (segment, slot) = locate(p);
            let guard = self.segments[segment].read().unwrap_or_else(|e| e.into_inner());
            let empty = ProductStats::default();
            let st = guard.get(slot).unwrap_or(&empty);
            for v in [st.orders, st.customers, st.repeat_customers] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(&st.units.to_le_bytes());
            out.extend_from_slice(&st.revenue_minor.to_le_bytes());
            out.extend_from_slice(&st.order_weight.to_le_bytes());
            out.extend_from_slice(&st.recent_order_weight.to_le_bytes());
            out.extend_from_slice(&st.category.to_le_bytes());
            out.extend_from_slice(&(st.co_purchases.len() as u16).to_le_bytes());
            for c in st.co_purchases.iter() {
                out.extend_from_slice(&c.product.to_le_bytes());
                out.extend_from_slice(&c.count.to_le_bytes());
                out.extend_from_slice(&c.weight.to_le_bytes());
                out.extend_from_slice(&c.error.to_le_bytes());
            }
        }
    }

    /// Reads what [`Self::encode`] wrote into empty statistics with `config`.
    pub fn decode(reader: &mut ByteReader<'_>, config: ItemConfig) -> Option<Self> {
        let stats = Self::new(config);
        for _ in 0..reader.u32()? {
            stats.category_index(reader.str()?);
        }
        let f32_of = |r: &mut ByteReader<'_>| r.array().map(f32::from_le_bytes).filter(|v| v.is_finite());
        for p in 0..reader.u32()? {
            let mut st = ProductStats {
                orders: reader.u64()?,
                customers: reader.u64()?,
                repeat_customers: reader.u64()?,
                units: reader.i64()?,
                revenue_minor: reader.i64()?,
                order_weight: f64::from_le_bytes(reader.array()?),
                recent_order_weight: f64::from_le_bytes(reader.array()?),
                category: reader.u32()?,
                co_purchases: TopCounters::default(),
            };
            for _ in 0..reader.u16()? {
                let (product, count) = (reader.u32()?, reader.u32()?);
                let (weight, error) = (f32_of(reader)?, f32_of(reader)?);
                st.co_purchases.push(CoCounter { product, count, weight, error });
            }
            stats.put(p, st);
        }
        stats.counter_bytes.store(stats.walk_counter_bytes(), Ordering::Relaxed);
        Some(stats)
    }
}

/// One product's totals gathered by the first pass of the refresh.
struct ProductTotals {
    product: usize,
    counter_bytes: usize,
    order_weight: f64,
    recent_order_weight: f64,
    customers: u64,
    repeat_customers: u64,
    category: u32,
}

/// Pseudo-buyers pulling a product's repurchase rate towards the catalogue's.
const REPURCHASE_PRIOR_BUYERS: f64 = 5.0;

/// One neighbour of a product.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Neighbour {
    /// The similar product.
    pub product: u32,
    /// Similarity under the configured measure.
    pub score: f32,
    /// Orders behind the pair (from the co-purchase counter).
    pub co_purchases: u32,
}

/// What the recommenders read: an immutable result of [`ItemStats::refresh`].
#[derive(Clone, Debug, Default)]
pub struct RecsModel {
    trend: Vec<f32>,
    offsets: Vec<u32>,
    neighbours: Vec<Neighbour>,
    repurchase: Vec<f32>,
    repurchase_prior: f32,
    category: Vec<u32>,
    /// `popular[0]`: the most ordered products overall; `popular[c]`: in category `c`.
    popular: Vec<Vec<(u32, f32)>>,
    category_names: Vec<Box<str>>,
}

impl RecsModel {
    /// Products covered.
    pub fn products(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    /// The neighbours of `product`, best first (empty if unknown).
    pub fn neighbours(&self, product: u32) -> &[Neighbour] {
        let p = product as usize;
        match (self.offsets.get(p), self.offsets.get(p + 1)) {
            (Some(&from), Some(&to)) => &self.neighbours[from as usize..to as usize],
            _ => &[],
        }
    }

    /// Share of a product's buyers who re-bought it (the catalogue's share for unknown products).
    pub fn repurchase_rate(&self, product: u32) -> f32 {
        self.repurchase.get(product as usize).copied().unwrap_or(self.repurchase_prior)
    }

    /// How the product sells lately compared with its history, relative to
    /// the whole catalogue (1: as usual; near 0: it stopped selling).
    pub fn trend(&self, product: u32) -> f32 {
        self.trend.get(product as usize).copied().unwrap_or(1.0)
    }

    /// Category index + 1 of `product` (0: none).
    pub fn category(&self, product: u32) -> u32 {
        self.category.get(product as usize).copied().unwrap_or(0)
    }

    /// Name of category `c` (index + 1), if any.
    pub fn category_name(&self, c: u32) -> Option<&str> {
        c.checked_sub(1).and_then(|i| self.category_names.get(i as usize)).map(|n| &**n)
    }

    /// The most ordered products of category `c` (0: overall), with their decayed order weight.
    pub fn popular(&self, c: u32) -> &[(u32, f32)] {
        self.popular.get(c as usize).map_or(&[], Vec::as_slice)
    }

    /// Neighbour entries held (for memory reports).
    pub fn neighbour_entries(&self) -> usize {
        self.neighbours.len()
    }
}

fn popular_by_category(order_weight: &[f64], category: &[u32], keep: usize) -> Vec<Vec<(u32, f32)>> {
    let categories = category.iter().copied().max().unwrap_or(0) as usize;
    let mut by: Vec<Vec<(u32, f32)>> = vec![Vec::new(); categories + 1];
    let push = |list: &mut Vec<(u32, f32)>, p: u32, w: f32| {
        list.push((p, w));
        if list.len() > keep * 4 {
            list.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            list.truncate(keep);
        }
    };
    for (p, (&w, &c)) in order_weight.iter().zip(category).enumerate() {
        if w > 0.0 {
            push(&mut by[0], p as u32, w as f32);
            if c > 0 {
                push(&mut by[c as usize], p as u32, w as f32);
            }
        }
    }
    for list in &mut by {
        list.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        list.truncate(keep);
    }
    by
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    fn line(product: u32) -> BasketLine<'static> {
        BasketLine { product, category: Some("mugs"), units: 1, revenue_minor: 100 }
    }

    #[test]
    fn space_saving_keeps_heavy_hitters_and_bounds_the_error() {
        let mut t = TopCounters::default();
        // Item 0 is heavy (weight 50); 200 singletons churn through 8 counters.
        for i in 0..200u32 {
            if i % 4 == 0 {
                t.add(0, 1.0, 8);
            }
            t.add(1000 + i, 0.25, 8);
        }
        let heavy = t.iter().find(|c| c.product == 0).unwrap();
        let total = 50.0 + 200.0 * 0.25;
        assert!(heavy.lower_bound() <= 50.0 && heavy.weight >= 50.0);
        assert!(t.iter().all(|c| c.error <= total / 8.0));
        assert_eq!(t.len(), 8);
    }

    /// The column layout must evict exactly as the plain record layout did:
    /// the first counter of the smallest weight.
    #[test]
    fn top_counters_evict_like_a_scan_of_records() {
        fn reference_add(counters: &mut Vec<CoCounter>, product: u32, weight: f32, capacity: usize) {
            if let Some(c) = counters.iter_mut().find(|c| c.product == product) {
                c.weight += weight;
                c.count = c.count.saturating_add(1);
            } else if counters.len() < capacity {
                counters.push(CoCounter { product, count: 1, weight, error: 0.0 });
            } else if let Some(min) = counters.iter_mut().min_by(|a, b| a.weight.total_cmp(&b.weight)) {
                *min = CoCounter { product, count: min.count + 1, weight: min.weight + weight, error: min.weight };
            }
        }
        let mut rng = StdRng::seed_from_u64(0x9e37_79b9_7f4a_7c15_u64);
        let mut next = move || rng.random::<u64>();
        for capacity in [1, 7, 16, 17, 40, 128] {
            let (mut columns, mut reference) = (TopCounters::default(), Vec::new());
            for _ in 0..20_000 {
                let r = next();
                // Few distinct weights, so ties for the smallest are common.
                let (product, weight) = ((r % 300) as u32, [0.25f32, 0.5, 1.0][(r >> 32) as usize % 3]);
                columns.add(product, weight, capacity);
                reference_add(&mut reference, product, weight, capacity);
            }
            assert_eq!(columns.iter().collect::<Vec<_>>(), reference, "capacity {capacity}");
        }
    }

    /// Deferring purchases into batches (the engine's path) must leave the
    /// statistics exactly as applying each at once does (the evaluation's
    /// path), evictions and categories included.
    #[test]
    fn batched_purchases_end_in_the_same_statistics_as_one_at_a_time() {
        const CATEGORIES: [Option<&str>; 4] = [None, Some("mugs"), Some("tea"), Some("pots")];
        let mut rng = StdRng::seed_from_u64(0x2545_f491_4f6c_dd1d_u64);
        let mut next = move || rng.random::<u64>();
        let config = ItemConfig { counters_per_product: 8, max_basket_products: 3, ..ItemConfig::default() };
        let (one_by_one, batched) = (ItemStats::new(config), ItemStats::new(config));
        let mut profiles = vec![(PurchaseProfile::default(), PurchaseProfile::default()); 30];
        let mut observed = Observed::default();
        for i in 0..6_000u64 {
            let r = next();
            let customer = (r % 30) as usize;
            let day = 20_000 + (i / 40) as i32;
            let basket: Vec<BasketLine<'static>> = (0..1 + (r >> 8) % 5)
                .map(|k| {
                    let r = next();
                    BasketLine {
                        product: ((r % 90) as u32 + k as u32) % 90,
                        category: CATEGORIES[(r >> 20) as usize % 4],
                        units: 1 + (r >> 24) as i64 % 3,
                        revenue_minor: 100 + (r >> 30) as i64 % 900,
                    }
                })
                .collect();
            let (alone, deferred) = &mut profiles[customer];
            one_by_one.observe(alone, day, &basket, 16);
            batched.record(&mut observed, deferred, day, basket.iter().copied(), 16);
            if next() % 50 == 0 {
                batched.apply(&mut observed);
            }
        }
        batched.apply(&mut observed);
        assert!(profiles.iter().all(|(a, b)| a == b));
        let (mut a, mut b) = (Vec::new(), Vec::new());
        one_by_one.encode(&mut a);
        batched.encode(&mut b);
        assert!(a == b, "the two paths' statistics differ");
        assert_eq!(one_by_one.category_names(), batched.category_names());
    }

    #[test]
    fn product_stats_memory_is_read_without_walking_the_products() {
        let stats = ItemStats::default();
        let mut profile = PurchaseProfile::default();
        for day in 0..400 {
            let basket: Vec<BasketLine<'static>> = (0..4).map(|k| line((day * 7 + k * 13) % 500)).collect();
            stats.observe(&mut profile, 20_000 + day as i32, &basket, 32);
        }
        let records: usize =
            stats.segments.iter().map(|seg| seg.read().unwrap().capacity() * size_of::<ProductStats>()).sum();
        assert_eq!(stats.memory_bytes(), records, "counters are counted at the refresh");
        stats.refresh(20_400);
        let walked = stats.walk_counter_bytes();
        assert!(walked > 500 * 16, "{walked}");
        assert_eq!(stats.memory_bytes(), records + walked);
        let mut bytes = Vec::new();
        stats.encode(&mut bytes);
        let restored = ItemStats::decode(&mut ByteReader::new(&bytes, 0), ItemConfig::default()).unwrap();
        assert_eq!(restored.counter_bytes.load(Ordering::Relaxed), restored.walk_counter_bytes());
    }

    #[test]
    fn baskets_update_orders_buyers_repeats_and_pairs() {
        let stats = ItemStats::default();
        let (mut alice, mut bob) = (PurchaseProfile::default(), PurchaseProfile::default());
        stats.observe(&mut alice, 20_000, &[line(0), line(1), line(1)], 32);
        stats.observe(&mut alice, 20_001, &[line(0)], 32);
        stats.observe(&mut bob, 20_000, &[line(0), line(2)], 32);
        let p0 = stats.product(0).unwrap();
        assert_eq!((p0.orders, p0.customers, p0.repeat_customers), (3, 2, 1));
        let p1 = stats.product(1).unwrap();
        assert_eq!((p1.orders, p1.units, p1.revenue_minor), (1, 2, 200), "one order, two lines merged");
        assert_eq!(p1.category, 1);
        assert_eq!(stats.category_names(), vec![Box::<str>::from("mugs")]);
        assert_eq!(stats.len(), 3);
        let model = stats.refresh(20_001);
        // 0 was bought with 1 (once) and with 2 (once); alice's second basket
        // re-bought 0 a day after 1, but 0 itself is in that basket, so only 1 pairs across.
        let n0: Vec<u32> = model.neighbours(0).iter().map(|n| n.product).collect();
        assert_eq!(n0.len(), 2);
        assert!(n0.contains(&1) && n0.contains(&2));
        assert_eq!(model.neighbours(2)[0].product, 0);
        assert_eq!(model.popular(0)[0].0, 0, "product 0 is the most ordered");
        assert_eq!(model.popular(1).len(), 3);
        assert!(model.repurchase_rate(0) > model.repurchase_rate(2));
        // Round trip through the snapshot layout.
        let mut bytes = Vec::new();
        stats.encode(&mut bytes);
        let back = ItemStats::decode(&mut ByteReader::new(&bytes, 0), ItemConfig::default()).unwrap();
        let mut again = Vec::new();
        back.encode(&mut again);
        assert_eq!(bytes, again);
        assert!(ItemStats::decode(&mut ByteReader::new(&bytes[..bytes.len() - 3], 0), ItemConfig::default()).is_none());
    }

    /// With the exponent clamped at ±120 half-lives for both decays, 30-day
    /// trend weights were all equal before 2010 and after 2029: every product
    /// had a trend of 1, selling or not.
    #[test]
    fn regression_the_trend_tells_a_selling_product_from_a_stopped_one_in_1997_and_2035() {
        for year_start in [9_862, 23_741, 47_119] {
            // 1997-01-01, 2035-01-01 and 2099-01-01 (days since 1970).
            let stats = ItemStats::default();
            let mut profile = PurchaseProfile::default();
            let now = year_start + 300;
            for day in 0..60 {
                // Product 0 sells in the last 60 days; product 1 sold the same amount and stopped 90 days ago.
                stats.observe(&mut profile, now - day, &[line(0)], 32);
                stats.observe(&mut profile, now - 90 - day, &[line(1)], 32);
                stats.observe(&mut profile, now - day * 4, &[line(2)], 32);
            }
            let model = stats.refresh(now);
            let (selling, stopped) = (model.trend(0), model.trend(1));
            assert!(selling > 1.2 && stopped < 0.5, "from day {year_start}: selling {selling}, stopped {stopped}");
        }
    }

    #[test]
    fn forward_decay_halves_per_half_life() {
        let d = Decay { half_life_days: 100.0 };
        assert!((d.factor(LANDMARK_DAY + 100) / d.factor(LANDMARK_DAY) - 2.0).abs() < 1e-12);
        assert!((f64::from(d.weight(LANDMARK_DAY + 300)) / d.factor(LANDMARK_DAY + 400) - 0.5).abs() < 1e-6);
        assert!(d.factor(i32::MAX).is_finite() && d.factor(i32::MIN) > 0.0);
    }
}
