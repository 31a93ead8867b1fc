//! The product catalogue: product ids interned to dense `u32` indices, shared
//! by every shard writer (a `DashMap`, so lookups of known products take no
//! global lock). Per-customer purchase history stores these 4-byte indices
//! instead of strings, which keeps it within the memory budget.
//!
//! Every purchase line looks its product up here, so the map hashes with
//! foldhash (hashbrown's default, seeded per process) rather than SipHash:
//! SipHash of the id was about 1% of the server's ingest samples.

use std::sync::RwLock;

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use hashbrown::DefaultHashBuilder;
use patron_model::ProductId;

/// Product ids ↔ dense indices.
#[derive(Debug, Default)]
pub struct ProductCatalog {
    index: DashMap<ProductId, u32, DefaultHashBuilder>,
    names: RwLock<Vec<ProductId>>,
}

impl ProductCatalog {
    /// A catalogue whose product `i` is `names[i]` (restored from a snapshot).
    pub fn from_names(names: Vec<ProductId>) -> Self {
        let index = names.iter().enumerate().map(|(i, p)| (p.clone(), i as u32)).collect();
        Self { index, names: RwLock::new(names) }
    }

    /// The index of `product`, adding it if new.
    pub fn intern(&self, product: &ProductId) -> u32 {
        if let Some(i) = self.index.get(product) {
            return *i;
        }
        let mut names = self.names.write().unwrap_or_else(|p| p.into_inner());
        match self.index.entry(product.clone()) {
            Entry::Occupied(e) => *e.get(),
            Entry::Vacant(v) => {
                let i = names.len() as u32;
                names.push(product.clone());
                v.insert(i);
                i
            }
        }
    }

    /// Whether `product` is known (no allocation when the id is invalid).
    pub fn contains(&self, product: &str) -> bool {
        ProductId::new(product).is_ok_and(|p| self.index.contains_key(&p))
    }

    /// The index of `product`, if known (never adds it).
    pub fn index_of(&self, product: &str) -> Option<u32> {
        let id = ProductId::new(product).ok()?;
        self.index.get(&id).map(|i| *i)
    }

    /// The product with index `i`.
    pub fn name(&self, i: u32) -> Option<ProductId> {
        self.names.read().ok()?.get(i as usize).cloned()
    }

    /// Number of products.
    pub fn len(&self) -> usize {
        self.names.read().map_or(0, |n| n.len())
    }

    /// Whether no product is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every product, in index order.
    pub fn names(&self) -> Vec<ProductId> {
        self.names.read().map(|n| n.clone()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interning_is_stable_and_shared_across_threads() {
        let catalog = std::sync::Arc::new(ProductCatalog::default());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let c = catalog.clone();
                std::thread::spawn(move || {
                    (0..500).map(|i| c.intern(&ProductId::new(&format!("p{i}")).unwrap())).collect::<Vec<_>>()
                })
            })
            .collect();
        let results: Vec<Vec<u32>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert!(results.windows(2).all(|w| w[0] == w[1]), "every thread sees the same index per product");
        assert_eq!(catalog.len(), 500);
        let restored = ProductCatalog::from_names(catalog.names());
        for i in [0u32, 17, 499] {
            let name = catalog.name(i).unwrap();
            assert_eq!(restored.intern(&name), i);
        }
    }
}
