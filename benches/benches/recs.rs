//! Recommendation kernels at catalogue scale (issue 5; DESIGN.md §3):
//!
//! - `recs/observe_basket`: the per-event update of one purchase (3 lines on
//!   average, Zipf-popular products) into a customer's profile and the shared
//!   product statistics, on statistics already warmed by 10,000,000
//!   customers' worth of purchases over 1,000,000 products.
//! - `recs/refresh_1m_products`: the rayon kernel that recomputes every
//!   product's top neighbours, repurchase rate, trend and popular lists.
//! - `recs/recommend_one`: one customer's top 10 from the largest profile
//!   among the sampled customers (its size is printed): the work behind
//!   `GET /v1/customers/{id}/recommendations`.
//!
//! The setup prints the memory the statistics hold per product and the
//! profiles per customer (the bounds of DESIGN.md §6).
//!
//! Run: `cargo bench -p patron-benches --bench recs` (or `benches/record.sh recs`);
//! `PATRON_BENCH_CUSTOMERS` / `PATRON_BENCH_PRODUCTS` shrink the warm-up.

use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use patron_state::items::{BasketLine, ItemConfig, ItemStats};
use patron_state::{BlendConfig, ListKind, PurchaseProfile, recommend};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};
use rayon::prelude::*;

// mimalloc, as in the binary, so allocation costs match production.
use patron_alloc as _;

const CATEGORIES: u32 = 1_000;
const FIRST_DAY: i32 = 19_000;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// One customer's purchases: 1 to 8 baskets of 1 to 5 Zipf-popular products.
fn customer_baskets(rng: &mut StdRng, zipf: &Zipf<f64>, products: u32) -> Vec<(i32, Vec<u32>)> {
    let baskets = 1 + rng.random_range(0..8usize).min(rng.random_range(0..8));
    let mut day = FIRST_DAY + rng.random_range(0..365);
    (0..baskets)
        .map(|_| {
            day += rng.random_range(1..60);
            let lines = 1 + rng.random_range(0..5usize).min(rng.random_range(0..5));
            (day, (0..lines).map(|_| (zipf.sample(rng) as u32 - 1) % products).collect())
        })
        .collect()
}

fn lines(products: &[u32]) -> Vec<BasketLine<'static>> {
    const NAMES: [&str; 4] = ["a", "b", "c", "d"];
    products
        .iter()
        .map(|&p| BasketLine {
            product: p,
            category: Some(NAMES[(p % CATEGORIES) as usize % 4]),
            units: 1,
            revenue_minor: 999,
        })
        .collect()
}

fn recs(c: &mut Criterion) {
    let customers = env_or("PATRON_BENCH_CUSTOMERS", 10_000_000);
    let products = env_or("PATRON_BENCH_PRODUCTS", 1_000_000) as u32;
    let zipf = Zipf::new(f64::from(products), 1.1).expect("valid Zipf");
    let stats = ItemStats::new(ItemConfig::default());
    let limit = patron_state::record::DEFAULT_HISTORY;
    let started = Instant::now();
    // Warm-up: every customer's baskets in order (customers in parallel, the
    // statistics shared as between shard writers); keep a sample of profiles.
    let (events, profile_bytes, sampled): (u64, u64, Vec<PurchaseProfile>) = (0..customers)
        .into_par_iter()
        .chunks(10_000)
        .map(|chunk| {
            let mut rng = StdRng::seed_from_u64(chunk[0] as u64);
            let (mut events, mut bytes, mut kept) = (0u64, 0u64, Vec::new());
            for i in chunk {
                let mut profile = PurchaseProfile::default();
                for (day, basket) in customer_baskets(&mut rng, &zipf, products) {
                    stats.observe(&mut profile, day, &lines(&basket), limit);
                    events += 1;
                }
                bytes += (size_of::<PurchaseProfile>() + profile.len() * 16) as u64;
                if i % 1000 == 0 {
                    kept.push(profile);
                }
            }
            (events, bytes, kept)
        })
        .reduce(
            || (0, 0, Vec::new()),
            |a, mut b| {
                b.2.extend(a.2);
                (a.0 + b.0, a.1 + b.1, b.2)
            },
        );
    let held = stats.memory_bytes();
    eprintln!(
        "warm-up: {customers} customers, {events} purchases over {} products in {:.1}s; product statistics {} MiB \
         ({:.0} bytes per product seen); profiles {:.0} bytes per customer on average (bound {} products = {} bytes)",
        stats.len(),
        started.elapsed().as_secs_f64(),
        held >> 20,
        held as f64 / stats.len().max(1) as f64,
        profile_bytes as f64 / customers as f64,
        limit,
        size_of::<PurchaseProfile>() + limit * 16
    );
    let now = FIRST_DAY + 900;
    let mut group = c.benchmark_group("recs");
    group.sample_size(10);
    group.bench_function("refresh_1m_products", |b| b.iter(|| black_box(stats.refresh(now))));
    let model = stats.refresh(now);
    eprintln!(
        "model: {} products, {} neighbour entries ({} MiB)",
        model.products(),
        model.neighbour_entries(),
        (model.neighbour_entries() * 12 + model.products() * 12) >> 20
    );
    group.sample_size(50);
    let mut rng = StdRng::seed_from_u64(7);
    let baskets: Vec<(i32, Vec<BasketLine<'static>>)> = (0..4096)
        .map(|_| (now + rng.random_range(0..30), lines(&customer_baskets(&mut rng, &zipf, products)[0].1)))
        .collect();
    let mut profiles = sampled.clone();
    let mut next = 0usize;
    group.bench_function("observe_basket", |b| {
        b.iter(|| {
            let (day, basket) = &baskets[next % baskets.len()];
            let profile = &mut profiles[next % sampled.len().max(1)];
            stats.observe(profile, *day, basket, limit);
            next += 1;
        })
    });
    let full = sampled.iter().max_by_key(|p| p.len()).cloned().unwrap_or_default();
    eprintln!("recommend_one profile: {} products", full.len());
    let blend = BlendConfig::default();
    group.bench_function("recommend_one", |b| {
        b.iter(|| black_box(recommend(&full, &model, &blend, 10, ListKind::Main)))
    });
    group.finish();
}

criterion_group!(benches, recs);
criterion_main!(benches);
