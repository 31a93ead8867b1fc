//! The recommender's core, apart from the customer records it serves.
//!
//! - [`catalog`]: product ids interned to dense indexes, shared by every shard.
//! - [`profile`]: one customer's bounded purchase counts (buy again, and the
//!   recent history co-purchases are drawn from).
//! - [`forgotten`]: the products a profile evicted, so that it still knows
//!   exactly what was ever bought (the discover list's filter).
//! - [`items`]: the shared product statistics (co-purchase summaries,
//!   popularity, trend) and the neighbour refresh.
//! - [`mod@recommend`]: the per-customer blend.
//!
//! Why a crate of its own: none of this reads a customer record, a log or a
//! snapshot, so it builds and tests without them, and `patron-state` uses it
//! from below inside each shard's update and at the snapshot's cut.

pub mod catalog;
pub mod forgotten;
pub mod items;
pub mod profile;
pub mod recommend;

pub use catalog::ProductCatalog;
pub use forgotten::ForgottenProducts;
pub use items::{ItemConfig, ItemStats, Observed, RecsModel};
pub use profile::PurchaseProfile;
pub use recommend::{BlendConfig, DiscoverWeights, ListKind, Reason, Recommendation, recommend};
