//! Arrow batches of the recommendation tables (`recommendations`,
//! `similar_products`, `products`), shared by the SQL endpoint and the batch
//! command so both write the same rows.

use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int32Array, Int64Array, StringArray};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use patron_model::{products_schema, recommendations_schema, similar_products_schema};
use rayon::prelude::*;

use crate::book::Row;
use crate::catalog::ProductCatalog;
use crate::items::{ItemStats, RecsModel};
use crate::recommend::{BlendConfig, ListKind, Recommendation, recommend};
use crate::{Result, StateError};

/// The top `k` of every customer in `records` (at most `max_customers`),
/// in record order; customers who objected to every channel are left out.
pub fn recommend_all<'a>(
    records: impl IntoParallelIterator<Item = Row<'a>>,
    model: &RecsModel,
    blend: &BlendConfig,
    k: usize,
    new_only: bool,
    max_customers: usize,
) -> Vec<(&'a str, Vec<Recommendation>)> {
    records
        .into_par_iter()
        .filter(|r| !r.objects_to_targeting())
        .take_any(max_customers)
        .map(|r| {
            let kind = if new_only { ListKind::Discover } else { ListKind::Main };
            (r.customer_id(), recommend(&r.history().purchases, model, blend, k, kind))
        })
        .collect()
}

/// Keeps the columns of `schema` named in `projection` (all without one).
fn projected(schema: SchemaRef, columns: Vec<ArrayRef>, projection: Option<&[usize]>) -> Result<RecordBatch> {
    let batch = RecordBatch::try_new(schema, columns).map_err(|e| StateError::Arrow(e.to_string()))?;
    match projection {
        Some(p) => batch.project(p).map_err(|e| StateError::Arrow(e.to_string())),
        None => Ok(batch),
    }
}

/// Rows of the `recommendations` table: rank from 1 per customer.
pub fn recommendations_batch(
    lists: &[(&str, Vec<Recommendation>)],
    catalog: &ProductCatalog,
    model: &RecsModel,
    projection: Option<&[usize]>,
) -> Result<RecordBatch> {
    let rows = lists.iter().map(|(_, l)| l.len()).sum();
    let (mut customer, mut rank, mut product, mut score, mut reason) = (
        Vec::with_capacity(rows),
        Vec::with_capacity(rows),
        Vec::with_capacity(rows),
        Vec::with_capacity(rows),
        Vec::with_capacity(rows),
    );
    for (id, list) in lists {
        for (i, r) in list.iter().enumerate() {
            customer.push(*id);
            rank.push(i as i32 + 1);
            product.push(catalog.name(r.product).map_or_else(|| format!("#{}", r.product), |p| p.as_str().to_owned()));
            score.push(r.score);
            reason.push(r.reason.label(catalog, model));
        }
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(customer)),
        Arc::new(Int32Array::from(rank)),
        Arc::new(StringArray::from(product)),
        Arc::new(Float64Array::from(score)),
        Arc::new(StringArray::from(reason)),
    ];
    projected(recommendations_schema(), columns, projection)
}

/// Rows of `similar_products` for `products` (indices), neighbours best first.
pub fn similar_products_batch(
    products: &[u32],
    catalog: &ProductCatalog,
    model: &RecsModel,
    projection: Option<&[usize]>,
) -> Result<RecordBatch> {
    let (mut product, mut similar, mut rank, mut score, mut co) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let name = |p: u32| catalog.name(p).map_or_else(|| format!("#{p}"), |n| n.as_str().to_owned());
    for &p in products {
        let neighbours = model.neighbours(p);
        if neighbours.is_empty() {
            continue;
        }
        let own = name(p);
        for (i, n) in neighbours.iter().enumerate() {
            product.push(own.clone());
            similar.push(name(n.product));
            rank.push(i as i32 + 1);
            score.push(f64::from(n.score));
            co.push(i64::from(n.co_purchases));
        }
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(product)),
        Arc::new(StringArray::from(similar)),
        Arc::new(Int32Array::from(rank)),
        Arc::new(Float64Array::from(score)),
        Arc::new(Int64Array::from(co)),
    ];
    projected(similar_products_schema(), columns, projection)
}

/// Rows of `products` for `products` (indices): counters from the product
/// statistics, revenue in major units of the base currency.
pub fn products_batch(
    products: &[u32],
    catalog: &ProductCatalog,
    items: &ItemStats,
    minor_per_major: f64,
    projection: Option<&[usize]>,
) -> Result<RecordBatch> {
    let categories = items.category_names();
    let n = products.len();
    let (mut id, mut category, mut orders, mut customers, mut units, mut revenue) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for &p in products {
        id.push(catalog.name(p).map_or_else(|| format!("#{p}"), |n| n.as_str().to_owned()));
        let stats = items.product(p).unwrap_or_default();
        category.push(stats.category.checked_sub(1).and_then(|c| categories.get(c as usize)).map(|c| c.to_string()));
        orders.push(stats.orders as i64);
        customers.push(stats.customers as i64);
        units.push(stats.units);
        revenue.push(stats.revenue_minor as f64 / minor_per_major);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(id)),
        Arc::new(StringArray::from(category)),
        Arc::new(Int64Array::from(orders)),
        Arc::new(Int64Array::from(customers)),
        Arc::new(Int64Array::from(units)),
        Arc::new(Float64Array::from(revenue)),
    ];
    projected(products_schema(), columns, projection)
}
