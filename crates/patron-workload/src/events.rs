//! A deterministic stream of realistic producer events (wire JSON), in event
//! time order: customers arrive over the first months, buy by the BG/NBD
//! process (Poisson purchases at rate λ, leaving with probability p after each
//! repeat purchase), fill baskets of 1–4 items with Zipf-popular products
//! within Zipf-popular categories at per-product prices, sometimes refund an
//! order a few days later, and sometimes state marketing consent.
//!
//! With [`ShopConfig::planted_tastes`] the shop also has a structure whose
//! truth is known, for judging recommendations on data no default was tuned
//! on: each customer has a home category that 80% of their baskets start in,
//! and each product has one complement (in its category) that joins it in the
//! basket half of the time. Without it the stream is exactly as before.
//!
//! [`EventStream::plant_campaign`] plants a campaign's effect whose truth is
//! known: from the contact on, the treatment members buy at `1 + uplift` times
//! their rate (the remaining wait to each one's next purchase shrinks by that
//! factor, which for exponential waits is the same as the higher rate from
//! now on), and they answer the contact with `campaign_response` events.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Beta, Distribution, Exp, Gamma, LogNormal, Zipf};

use crate::Population;

/// Shape of the synthetic shop.
#[derive(Clone, Debug, PartialEq)]
pub struct ShopConfig {
    /// Customers who will arrive.
    pub customers: usize,
    /// Products in the catalogue.
    pub products: usize,
    /// Product categories.
    pub categories: usize,
    /// Days over which customers arrive.
    pub arrival_days: u32,
    /// Event time of day 0, epoch milliseconds.
    pub start_ms: i64,
    /// Share of orders refunded later.
    pub refund_share: f64,
    /// Share of customers who send a consent event.
    pub consent_share: f64,
    /// Prefix of customer and event ids (keeps separate runs apart).
    pub id_prefix: String,
    /// Purchase and dropout process (α in days).
    pub population: Population,
    /// Plant customer tastes and product complements (see the module docs).
    pub planted_tastes: bool,
}

impl Default for ShopConfig {
    fn default() -> Self {
        Self {
            customers: 20_000,
            products: 2_000,
            categories: 20,
            arrival_days: 180,
            start_ms: 1_735_689_600_000, // 2025-01-01T00:00:00Z
            refund_share: 0.03,
            consent_share: 0.3,
            id_prefix: "demo".into(),
            population: Population::default(),
            planted_tastes: false,
        }
    }
}

#[derive(Debug)]
enum Pending {
    Purchase { customer: usize },
    Refund { customer: usize, order: u64, amount_cents: u64 },
    Response { customer: usize, response: &'static str },
}

/// How treatment members answer a planted campaign's contact: each gets
/// `delivered`; then these shares open, click (of all members) and unsubscribe.
const OPEN_SHARE: f64 = 0.35;
const CLICK_SHARE: f64 = 0.12;
const UNSUBSCRIBE_SHARE: f64 = 0.01;

struct Customer {
    rate: f64,
    dropout: f64,
    purchases: u32,
    /// The category most baskets start in (planted tastes only).
    home: Option<usize>,
}

/// Share of a tasteful customer's baskets that start in their home category.
const HOME_SHARE: f64 = 0.8;

/// Chance that a product's complement joins it in the basket.
const COMPLEMENT_SHARE: f64 = 0.5;

/// Iterator over wire-format events (one JSON object per item), in event time order.
pub struct EventStream {
    config: ShopConfig,
    rng: StdRng,
    customers: Vec<Customer>,
    queue: BinaryHeap<Reverse<(i64, u64, usize)>>,
    pending: Vec<Option<Pending>>,
    next_order: u64,
    product_category: Vec<usize>,
    product_price_cents: Vec<u64>,
    category_products: Vec<Vec<usize>>,
    category_zipf: Zipf<f64>,
    consent_sent: Vec<bool>,
    outbox: Vec<String>,
    /// The planted campaign's id, once one is planted.
    campaign: Option<String>,
}

const MS_PER_DAY: f64 = 86_400_000.0;

impl EventStream {
    /// A stream for `config`, deterministic in `seed`.
    pub fn new(config: ShopConfig, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let p = config.population.purchase;
        let rates = Gamma::new(p.r, 1.0 / p.alpha).ok();
        let dropouts = Beta::new(p.a, p.b).ok();
        let customers: Vec<Customer> = (0..config.customers)
            .map(|_| Customer {
                rate: rates.map_or(0.05, |g| g.sample(&mut rng)).max(1e-6),
                dropout: dropouts.map_or(0.2, |d| d.sample(&mut rng)),
                purchases: 0,
                home: None,
            })
            .collect();
        let categories = config.categories.max(1);
        let product_category: Vec<usize> = (0..config.products.max(1)).map(|i| i % categories).collect();
        let price: Option<LogNormal<f64>> = LogNormal::new(3.2, 0.8).ok();
        let product_price_cents: Vec<u64> = product_category
            .iter()
            .map(|_| (price.map_or(25.0, |d| d.sample(&mut rng)) * 100.0).round().clamp(99.0, 99_999.0) as u64)
            .collect();
        let mut category_products = vec![Vec::new(); categories];
        for (product, &category) in product_category.iter().enumerate() {
            category_products[category].push(product);
        }
        let mut stream = Self {
            queue: BinaryHeap::with_capacity(customers.len()),
            pending: Vec::with_capacity(customers.len()),
            customers,
            next_order: 0,
            product_category,
            product_price_cents,
            category_products,
            category_zipf: Zipf::new(categories as f64, 1.1).unwrap_or_else(|_| Zipf::new(1.0, 1.0).expect("valid")),
            consent_sent: vec![false; config.customers],
            outbox: Vec::new(),
            campaign: None,
            rng,
            config,
        };
        for customer in 0..stream.customers.len() {
            let arrival = stream.rng.random::<f64>() * f64::from(stream.config.arrival_days) * MS_PER_DAY;
            stream.schedule(stream.config.start_ms + arrival as i64, Pending::Purchase { customer });
        }
        stream
    }

    /// Plants campaign `campaign_id`'s effect at event time `at_ms` on the
    /// treatment members `treated` (customer ids of this stream; others are
    /// ignored): they buy at `1 + uplift` times their rate from then on, and
    /// answer with responses (delivered, then some opened, clicked or
    /// unsubscribed). Returns how many members it reached.
    pub fn plant_campaign(
        &mut self,
        campaign_id: &str,
        treated: impl IntoIterator<Item = String>,
        uplift: f64,
        at_ms: i64,
    ) -> usize {
        let prefix = format!("{}-c", self.config.id_prefix);
        let mut members = vec![false; self.customers.len()];
        for id in treated {
            if let Some(i) = id.strip_prefix(&prefix).and_then(|n| n.parse::<usize>().ok())
                && i < members.len()
            {
                members[i] = true;
            }
        }
        let factor = (1.0 + uplift).max(1e-6);
        for (customer, c) in self.customers.iter_mut().enumerate() {
            if members[customer] {
                c.rate *= factor;
            }
        }
        // The waits already drawn shrink by the same factor.
        let queued = std::mem::take(&mut self.queue).into_vec();
        for Reverse((when, seq, slot)) in queued {
            let sooner = match &self.pending[slot] {
                Some(Pending::Purchase { customer }) if members[*customer] && when > at_ms => {
                    at_ms + ((when - at_ms) as f64 / factor) as i64
                }
                _ => when,
            };
            self.queue.push(Reverse((sooner.max(at_ms), seq, slot)));
        }
        self.campaign = Some(campaign_id.to_owned());
        let hour = 3_600_000;
        let mut reached = 0;
        for customer in (0..members.len()).filter(|&c| members[c]) {
            reached += 1;
            self.schedule(at_ms + hour, Pending::Response { customer, response: "delivered" });
            let draw = self.rng.random::<f64>();
            let later = if draw < UNSUBSCRIBE_SHARE {
                Some("unsubscribed")
            } else if draw < UNSUBSCRIBE_SHARE + CLICK_SHARE {
                Some("clicked")
            } else if draw < UNSUBSCRIBE_SHARE + OPEN_SHARE {
                Some("opened")
            } else {
                None
            };
            if let Some(response) = later {
                self.schedule(at_ms + 6 * hour, Pending::Response { customer, response });
            }
        }
        reached
    }

    fn schedule(&mut self, at_ms: i64, what: Pending) {
        let slot = self.pending.len();
        self.pending.push(Some(what));
        self.queue.push(Reverse((at_ms, slot as u64, slot)));
    }

    fn zipf_category(&mut self) -> usize {
        (self.category_zipf.sample(&mut self.rng) as usize).saturating_sub(1).min(self.category_products.len() - 1)
    }

    /// The planted complement of `product`: the product one category-stride
    /// away, in the same category, pairing 0 with `categories`, and so on.
    fn complement(&self, product: usize) -> Option<usize> {
        let stride = self.category_products.len();
        let partner = if (product / stride).is_multiple_of(2) { product + stride } else { product - stride };
        (partner < self.product_category.len()).then_some(partner)
    }

    fn pick_product(&mut self, customer: usize) -> usize {
        let home = self.customers[customer].home;
        let category = match home {
            Some(home) if self.rng.random::<f64>() < HOME_SHARE => home,
            _ => self.zipf_category(),
        };
        let products = &self.category_products[category];
        let within = Zipf::new(products.len() as f64, 1.2).map_or(1.0, |z| z.sample(&mut self.rng));
        products[(within as usize).saturating_sub(1).min(products.len() - 1)]
    }

    /// Appends one line of `product` (a random quantity) to `items`; returns its cents.
    fn basket_line(&mut self, product: usize, items: &mut Vec<String>) -> u64 {
        let quantity = if self.rng.random::<f64>() < 0.85 { 1 } else { 2 };
        let cents = self.product_price_cents[product];
        items.push(format!(
            r#"{{"product_id":"p{product}","category":"cat{}","quantity":{quantity},"price":"{}.{:02}"}}"#,
            self.product_category[product],
            cents / 100,
            cents % 100
        ));
        cents * quantity
    }

    fn purchase(&mut self, customer: usize, at_ms: i64) -> String {
        let order = self.next_order;
        self.next_order += 1;
        let prefix = self.config.id_prefix.clone();
        if self.config.planted_tastes && self.customers[customer].home.is_none() {
            self.customers[customer].home = Some(self.zipf_category());
        }
        let basket = 1 + (self.rng.random::<f64>().powi(2) * 4.0) as usize;
        let mut items = Vec::with_capacity(basket);
        let mut total_cents = 0;
        for _ in 0..basket {
            let product = self.pick_product(customer);
            total_cents += self.basket_line(product, &mut items);
            if self.config.planted_tastes
                && self.rng.random::<f64>() < COMPLEMENT_SHARE
                && let Some(partner) = self.complement(product)
            {
                total_cents += self.basket_line(partner, &mut items);
            }
        }
        if self.rng.random::<f64>() < self.config.refund_share {
            let later = at_ms + (1.0 + self.rng.random::<f64>() * 14.0) as i64 * MS_PER_DAY as i64;
            self.schedule(later, Pending::Refund { customer, order, amount_cents: total_cents });
        }
        let c = &mut self.customers[customer];
        c.purchases += 1;
        let leaves = c.purchases > 1 && self.rng.random::<f64>() < c.dropout;
        if !leaves && let Ok(gap) = Exp::new(c.rate) {
            let next = at_ms + (gap.sample(&mut self.rng) * MS_PER_DAY) as i64;
            self.schedule(next.max(at_ms + 1), Pending::Purchase { customer });
        }
        format!(
            r#"{{"type":"purchase","event_id":"{prefix}-o{order}","customer_id":"{prefix}-c{customer}","timestamp":{at_ms},"items":[{}]}}"#,
            items.join(",")
        )
    }
}

impl Iterator for EventStream {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        if let Some(queued) = self.outbox.pop() {
            return Some(queued);
        }
        // Slots are taken exactly once, so a popped slot always holds an event.
        let Reverse((at_ms, _, slot)) = self.queue.pop()?;
        let what = self.pending[slot].take()?;
        let prefix = self.config.id_prefix.clone();
        Some(match what {
            Pending::Purchase { customer } => {
                let event = self.purchase(customer, at_ms);
                if !self.consent_sent[customer] && self.rng.random::<f64>() < self.config.consent_share {
                    self.consent_sent[customer] = true;
                    let (email, sms) = (self.rng.random::<f64>() < 0.7, self.rng.random::<f64>() < 0.3);
                    self.outbox.push(format!(
                        r#"{{"type":"consent","event_id":"{prefix}-k{customer}","customer_id":"{prefix}-c{customer}","timestamp":{},"channels":{{"email":{email},"sms":{sms},"push":false}}}}"#,
                        at_ms + 60_000
                    ));
                }
                event
            }
            Pending::Response { customer, response } => format!(
                r#"{{"type":"campaign_response","event_id":"{prefix}-m{customer}-{response}","customer_id":"{prefix}-c{customer}","timestamp":{at_ms},"campaign_id":"{}","response":"{response}"}}"#,
                self.campaign.as_deref().unwrap_or("")
            ),
            Pending::Refund { customer, order, amount_cents } => format!(
                r#"{{"type":"refund","event_id":"{prefix}-r{order}","customer_id":"{prefix}-c{customer}","order_id":"{prefix}-o{order}","timestamp":{at_ms},"amount":"{}.{:02}"}}"#,
                amount_cents / 100,
                amount_cents % 100
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_is_deterministic_time_ordered_and_varied() {
        let config = ShopConfig { customers: 500, ..ShopConfig::default() };
        let a: Vec<String> = EventStream::new(config.clone(), 3).take(3000).collect();
        let b: Vec<String> = EventStream::new(config, 3).take(3000).collect();
        assert_eq!(a, b);
        let kinds = |k: &str| a.iter().filter(|e| e.contains(&format!("\"type\":\"{k}\""))).count();
        assert!(
            kinds("purchase") > 2000 && kinds("refund") > 10 && kinds("consent") > 50,
            "{} {} {}",
            kinds("purchase"),
            kinds("refund"),
            kinds("consent")
        );
        let times: Vec<i64> = a
            .iter()
            .filter(|e| e.contains("\"purchase\""))
            .map(|e| e.split("\"timestamp\":").nth(1).unwrap().split(',').next().unwrap().parse().unwrap())
            .collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "purchases come in event-time order");
        assert!(a.iter().any(|e| e.matches("product_id").count() > 1), "some baskets have several items");
    }

    /// FNV-1a of the first 20,000 events of the default shop, seed 7.
    fn digest(config: ShopConfig) -> u64 {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for event in EventStream::new(config, 7).take(20_000) {
            for byte in event.bytes() {
                hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
            }
        }
        hash
    }

    #[test]
    fn without_planted_tastes_the_stream_is_the_one_benchmarks_were_run_on() {
        // The value the generator gave before planted tastes existed.
        assert_eq!(digest(ShopConfig::default()), 0x83fe_1938_14ba_fc0f);
        assert_ne!(digest(ShopConfig { planted_tastes: true, ..ShopConfig::default() }), 0x83fe_1938_14ba_fc0f);
    }

    /// The planted campaign doubles the treated customers' purchases after the
    /// contact (against the untreated half), answers each contact, and
    /// leaves the stream before the contact as it was.
    #[test]
    fn a_planted_campaign_raises_the_treated_rate_and_sends_responses() {
        let config = ShopConfig { customers: 6_000, arrival_days: 30, ..ShopConfig::default() };
        let contact = config.start_ms + 60 * 86_400_000;
        let window_end = contact + 60 * 86_400_000;
        let mut stream = EventStream::new(config.clone(), 9);
        let mut before = Vec::new();
        for event in stream.by_ref() {
            let at: i64 = event
                .split("\"timestamp\":")
                .nth(1)
                .and_then(|r| r.split([',', '}']).next()?.parse().ok())
                .unwrap_or(0);
            before.push(event);
            if at > contact {
                break;
            }
        }
        let untouched: Vec<String> = EventStream::new(config, 9).take(before.len()).collect();
        assert_eq!(before, untouched, "nothing changes before the contact");
        let treated: Vec<String> = (0..6_000).step_by(2).map(|i| format!("demo-c{i}")).collect();
        assert_eq!(stream.plant_campaign("camp", treated, 1.0, contact), 3_000);
        let (mut purchases, mut delivered, mut engaged) = ([0usize; 2], 0, 0);
        for event in stream {
            let at: i64 = event
                .split("\"timestamp\":")
                .nth(1)
                .and_then(|r| r.split([',', '}']).next()?.parse().ok())
                .unwrap_or(0);
            if at >= window_end {
                break;
            }
            let customer: usize = event
                .split("\"customer_id\":\"demo-c")
                .nth(1)
                .and_then(|r| r.split('"').next()?.parse().ok())
                .unwrap_or(1);
            if event.contains("\"type\":\"purchase\"") {
                purchases[customer % 2] += 1;
            } else if event.contains("campaign_response") {
                assert_eq!(customer % 2, 0, "only treated members answer: {event}");
                assert!(event.contains("\"campaign_id\":\"camp\""), "{event}");
                delivered += usize::from(event.contains("delivered"));
                engaged += usize::from(event.contains("opened") || event.contains("clicked"));
            }
        }
        let ratio = purchases[0] as f64 / purchases[1] as f64;
        assert!((1.7..2.3).contains(&ratio), "treated bought {ratio:.2}× the untreated: {purchases:?}");
        assert_eq!(delivered, 3_000);
        assert!((800..1_300).contains(&engaged), "{engaged} opened or clicked");
    }

    #[test]
    fn planted_tastes_give_each_customer_a_home_category_and_each_product_a_complement() {
        let config = ShopConfig { customers: 2_000, planted_tastes: true, ..ShopConfig::default() };
        let stream = EventStream::new(config.clone(), 5);
        let categories = config.categories;
        let (mut pairs, mut lines) = (0, 0);
        let mut by_customer: std::collections::HashMap<String, Vec<String>> = Default::default();
        for event in stream.take(60_000).filter(|e| e.contains("\"purchase\"")) {
            let products: Vec<usize> = event
                .split("\"product_id\":\"p")
                .skip(1)
                .filter_map(|rest| rest.split('"').next()?.parse().ok())
                .collect();
            lines += products.len();
            pairs += products.windows(2).filter(|w| w[0].abs_diff(w[1]) == categories).count();
            let customer = event.split("\"customer_id\":\"").nth(1).and_then(|r| r.split('"').next()).unwrap_or("");
            let first_category = event.split("\"category\":\"").nth(1).and_then(|r| r.split('"').next()).unwrap_or("");
            by_customer.entry(customer.to_owned()).or_default().push(first_category.to_owned());
        }
        // About half of the picked products bring their complement along.
        assert!(pairs * 4 > lines, "{pairs} complement pairs in {lines} lines");
        // A customer's baskets mostly start in one category.
        let (mut home, mut baskets) = (0, 0);
        for firsts in by_customer.values().filter(|f| f.len() >= 5) {
            let mut counts: std::collections::HashMap<&String, usize> = Default::default();
            for f in firsts {
                *counts.entry(f).or_default() += 1;
            }
            home += counts.values().max().copied().unwrap_or(0);
            baskets += firsts.len();
        }
        assert!(home as f64 > 0.75 * baskets as f64, "{home} of {baskets} baskets start in the home category");
    }
}
