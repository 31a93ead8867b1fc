//! Did the campaign pay off? Treatment against control, with intervals.
//!
//! Statistics (all intervals 95%, two-sided):
//! - **Conversion** (the share of members who bought in the campaign window):
//!   the difference p_t − p_c with the Agresti–Caffo interval, a Wald interval
//!   on proportions with one success and one failure added to each group,
//!   which keeps its coverage near 95% where the plain Wald interval does
//!   not (small groups, rates near 0 or 1).
//! - **Orders and revenue per member**: the difference of means with Welch's
//!   interval (unequal variances, Welch–Satterthwaite degrees of freedom),
//!   members who did not buy counting as 0. Revenue per member is heavy
//!   tailed; the interval relies on the central limit theorem and is honest
//!   for groups of hundreds of members or more, not for a handful.
//! - **Incremental** conversions, orders and revenue: the per-member
//!   difference times the treatment group's size (what the contacted members
//!   did beyond what they would have done anyway), interval likewise.
//!   Incremental margin is incremental revenue times the margin.
//! - **ROI** = (incremental margin − contact cost) / contact cost. The cost is
//!   known exactly, so the ROI interval is the margin interval mapped the same way.
//!
//! A result is significant when its interval excludes 0 ([`Interval::excludes_zero`]);
//! until then the campaign has not shown an effect, whatever the estimate says.

/// What one group did in the campaign window.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct GroupOutcome {
    /// Members in the group.
    pub members: u64,
    /// Members who bought at least once.
    pub buyers: u64,
    /// Orders.
    pub orders: u64,
    /// Σ over members of (their orders)².
    pub orders_squares: f64,
    /// Revenue, base-currency major units.
    pub revenue: f64,
    /// Σ over members of (their revenue)².
    pub revenue_squares: f64,
}

impl GroupOutcome {
    /// Adds one member's window: their orders and revenue.
    pub fn add_member(&mut self, orders: u64, revenue: f64) {
        self.members += 1;
        self.buyers += u64::from(orders > 0);
        self.orders += orders;
        self.orders_squares += (orders as f64).powi(2);
        self.revenue += revenue;
        self.revenue_squares += revenue * revenue;
    }

    /// Buyers per member (0 without members).
    pub fn conversion_rate(&self) -> f64 {
        if self.members == 0 { 0.0 } else { self.buyers as f64 / self.members as f64 }
    }

    /// Mean and sample variance of a per-member quantity from its sums.
    fn moments(&self, sum: f64, squares: f64) -> (f64, f64) {
        let n = self.members as f64;
        let mean = sum / n;
        let variance = ((squares - n * mean * mean) / (n - 1.0)).max(0.0);
        (mean, variance)
    }
}

/// An estimate with its 95% confidence interval.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Interval {
    /// The point estimate.
    pub estimate: f64,
    /// Lower end.
    pub low: f64,
    /// Upper end.
    pub high: f64,
}

impl Interval {
    /// Whether the interval leaves out 0: the effect is significant at 5%.
    pub fn excludes_zero(&self) -> bool {
        self.low > 0.0 || self.high < 0.0
    }

    fn scaled(self, factor: f64) -> Self {
        let (a, b) = (self.low * factor, self.high * factor);
        Self { estimate: self.estimate * factor, low: a.min(b), high: a.max(b) }
    }

    fn shifted(self, by: f64) -> Self {
        Self { estimate: self.estimate + by, low: self.low + by, high: self.high + by }
    }
}

/// What contacting costs and what revenue is worth.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CampaignEconomics {
    /// Share of revenue that is margin (the `[clv] margin`).
    pub margin: f64,
    /// Cost of one contact, base-currency major units.
    pub cost_per_contact: f64,
    /// Treatment members contacted.
    pub contacted: u64,
}

/// The campaign's effect: treatment against control.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Uplift {
    /// p_treatment − p_control.
    pub conversion_difference: Interval,
    /// Buyers the campaign added among the treatment members.
    pub incremental_conversions: Interval,
    /// Orders it added.
    pub incremental_orders: Interval,
    /// Revenue it added.
    pub incremental_revenue: Interval,
    /// Margin it added.
    pub incremental_margin: Interval,
    /// Contact cost.
    pub cost: f64,
    /// (incremental margin − cost) / cost; `None` when nothing was spent.
    pub roi: Option<Interval>,
}

/// Two-sided 95% normal quantile.
const Z_975: f64 = 1.959_963_984_540_054;

/// The 97.5% quantile of Student's t with `df` degrees of freedom, by the
/// Cornish–Fisher expansion around the normal quantile (Abramowitz & Stegun
/// 26.7.5): within 0.1% of the exact value from 3 degrees of freedom up.
fn t_975(df: f64) -> f64 {
    let z = Z_975;
    let (z3, z5, z7, z9) = (z.powi(3), z.powi(5), z.powi(7), z.powi(9));
    z + (z3 + z) / (4.0 * df)
        + (5.0 * z5 + 16.0 * z3 + 3.0 * z) / (96.0 * df * df)
        + (3.0 * z7 + 19.0 * z5 + 17.0 * z3 - 15.0 * z) / (384.0 * df.powi(3))
        + (79.0 * z9 + 776.0 * z7 + 1482.0 * z5 - 1920.0 * z3 - 945.0 * z) / (92160.0 * df.powi(4))
}

/// Welch's interval of mean_t − mean_c from each group's mean, variance and size.
fn welch(treatment: (f64, f64, f64), control: (f64, f64, f64)) -> Interval {
    let ((mt, vt, nt), (mc, vc, nc)) = (treatment, control);
    let (st, sc) = (vt / nt, vc / nc);
    let se = (st + sc).sqrt();
    let estimate = mt - mc;
    if se == 0.0 {
        return Interval { estimate, low: estimate, high: estimate };
    }
    let df = (st + sc).powi(2) / (st * st / (nt - 1.0) + sc * sc / (nc - 1.0));
    let half = t_975(df.max(1.0)) * se;
    Interval { estimate, low: estimate - half, high: estimate + half }
}

/// The campaign's effect, or `None` while a group has fewer than two members.
pub fn uplift(treatment: &GroupOutcome, control: &GroupOutcome, economics: &CampaignEconomics) -> Option<Uplift> {
    if treatment.members < 2 || control.members < 2 {
        return None;
    }
    let (nt, nc) = (treatment.members as f64, control.members as f64);
    let adjusted = |g: &GroupOutcome| (g.buyers as f64 + 1.0) / (g.members as f64 + 2.0);
    let (pt, pc) = (adjusted(treatment), adjusted(control));
    let half = Z_975 * (pt * (1.0 - pt) / (nt + 2.0) + pc * (1.0 - pc) / (nc + 2.0)).sqrt();
    let conversion_difference = Interval {
        estimate: treatment.conversion_rate() - control.conversion_rate(),
        low: pt - pc - half,
        high: pt - pc + half,
    };
    let per_member = |sum: fn(&GroupOutcome) -> f64, squares: fn(&GroupOutcome) -> f64| {
        let (mt, vt) = treatment.moments(sum(treatment), squares(treatment));
        let (mc, vc) = control.moments(sum(control), squares(control));
        welch((mt, vt, nt), (mc, vc, nc))
    };
    let orders = per_member(|g| g.orders as f64, |g| g.orders_squares);
    let revenue = per_member(|g| g.revenue, |g| g.revenue_squares);
    let incremental_revenue = revenue.scaled(nt);
    let incremental_margin = incremental_revenue.scaled(economics.margin);
    let cost = economics.cost_per_contact * economics.contacted as f64;
    let roi = (cost > 0.0).then(|| incremental_margin.shifted(-cost).scaled(1.0 / cost));
    Some(Uplift {
        conversion_difference,
        incremental_conversions: conversion_difference.scaled(nt),
        incremental_orders: orders.scaled(nt),
        incremental_revenue,
        incremental_margin,
        cost,
        roi,
    })
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use rand_distr::{Distribution, Gamma};

    use super::*;
    use crate::split::{Group, assign};

    /// An audience of `n` split 90/10, where a member buys with probability
    /// `base` (control) or `base × (1 + lift)` (treatment), spending a
    /// Gamma-distributed amount per order.
    fn campaign(n: usize, base: f64, lift: f64, seed: u64) -> (GroupOutcome, GroupOutcome) {
        let mut rng = StdRng::seed_from_u64(seed);
        let spend = Gamma::new(2.0, 30.0).unwrap();
        let (mut treatment, mut control) = (GroupOutcome::default(), GroupOutcome::default());
        for i in 0..n {
            let group = assign("planted", &format!("c-{seed}-{i}"), 0.1);
            let p = if group == Group::Treatment { base * (1.0 + lift) } else { base };
            let orders = if rng.random::<f64>() < p { 1 + u64::from(rng.random::<f64>() < 0.3) } else { 0 };
            let revenue: f64 = (0..orders).map(|_| spend.sample(&mut rng)).sum();
            match group {
                Group::Treatment => treatment.add_member(orders, revenue),
                Group::Control => control.add_member(orders, revenue),
            }
        }
        (treatment, control)
    }

    const ECONOMICS: CampaignEconomics = CampaignEconomics { margin: 0.3, cost_per_contact: 0.05, contacted: 0 };

    #[test]
    fn a_planted_ten_percent_uplift_on_100k_members_is_found_and_a_planted_zero_is_not() {
        let (base, lift) = (0.2, 0.1);
        let (treatment, control) = campaign(100_000, base, lift, 1);
        let economics = CampaignEconomics { contacted: treatment.members, ..ECONOMICS };
        let found = uplift(&treatment, &control, &economics).unwrap();
        let planted = base * lift * treatment.members as f64;
        let c = found.incremental_conversions;
        assert!(c.low <= planted && planted <= c.high, "planted {planted} outside [{}, {}]", c.low, c.high);
        assert!(c.excludes_zero(), "{c:?}");

        let (treatment, control) = campaign(100_000, base, 0.0, 2);
        let null = uplift(&treatment, &control, &economics).unwrap();
        for interval in [null.incremental_conversions, null.incremental_orders, null.incremental_revenue] {
            assert!(interval.low <= 0.0 && 0.0 <= interval.high, "{interval:?}");
        }
    }

    /// The intervals cover the true effect about 95% of the time (400
    /// simulated campaigns of 20,000 members; 95% ± 2.5 points is 2.3
    /// standard errors of a coverage estimate).
    #[test]
    fn intervals_cover_the_true_effect_95_percent_of_the_time() {
        let (base, lift, runs) = (0.1, 0.2, 400);
        let spend_mean = 60.0 * 1.3;
        let (mut conversions, mut revenue) = (0, 0);
        for seed in 0..runs {
            let (treatment, control) = campaign(20_000, base, lift, 100 + seed);
            let u = uplift(&treatment, &control, &CampaignEconomics { contacted: 1, ..ECONOMICS }).unwrap();
            let true_difference = base * lift;
            let d = u.conversion_difference;
            conversions += usize::from(d.low <= true_difference && true_difference <= d.high);
            let per_member = u.incremental_revenue.scaled(1.0 / treatment.members as f64);
            let true_revenue = true_difference * spend_mean;
            revenue += usize::from(per_member.low <= true_revenue && true_revenue <= per_member.high);
        }
        for (name, covered) in [("conversion", conversions), ("revenue", revenue)] {
            let coverage = covered as f64 / f64::from(runs as u32);
            assert!((0.925..=0.975).contains(&coverage), "{name}: {coverage}");
        }
    }

    #[test]
    fn roi_maps_the_margin_interval_through_the_known_cost() {
        let (treatment, control) = campaign(50_000, 0.2, 0.1, 3);
        let economics = CampaignEconomics { contacted: treatment.members, ..ECONOMICS };
        let u = uplift(&treatment, &control, &economics).unwrap();
        let roi = u.roi.unwrap();
        let cost = 0.05 * treatment.members as f64;
        assert!((roi.estimate - (u.incremental_margin.estimate - cost) / cost).abs() < 1e-12);
        assert!((roi.low - (u.incremental_margin.low - cost) / cost).abs() < 1e-12);
        let free = CampaignEconomics { cost_per_contact: 0.0, ..economics };
        assert_eq!(uplift(&treatment, &control, &free).unwrap().roi, None);
        assert_eq!(uplift(&treatment, &GroupOutcome::default(), &economics), None, "no control yet");
    }

    #[test]
    fn the_t_quantile_matches_tables() {
        // Student's t, 97.5%: df 3 → 3.182, 10 → 2.228, 30 → 2.042, 1000 → 1.962.
        for (df, table) in [(3.0, 3.182), (10.0, 2.228), (30.0, 2.042), (1000.0, 1.962)] {
            assert!((t_975(df) - table).abs() < 2e-3 * table, "df {df}: {}", t_975(df));
        }
    }
}
