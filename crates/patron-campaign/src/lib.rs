//! Campaign math (issue 19): who is held out, and whether the campaign paid off.
//!
//! A campaign contacts a treatment group and holds out a control group drawn
//! from the same audience. Because the split is random, the control group
//! shows what the treatment group would have done without the campaign, and
//! the difference between the groups is what the campaign caused. This crate
//! holds the two pieces of that which are pure arithmetic, so the engine, the
//! SQL tables and the tests share one definition:
//! - [`mod@channel`]: the channels a campaign contacts through;
//! - [`mod@split`]: the deterministic assignment of a customer to a group;
//! - [`mod@uplift`]: incremental conversions, revenue, margin and ROI, each with a
//!   95% confidence interval.
#![deny(missing_docs)]

pub mod channel;
pub mod split;
pub mod uplift;

pub use channel::Channel;
pub use split::{Group, SplitError, assign, check_control_share};
pub use uplift::{CampaignEconomics, GroupOutcome, Interval, Uplift, uplift};
