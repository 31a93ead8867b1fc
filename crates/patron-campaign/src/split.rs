//! The treatment/control split.
//!
//! Each member is assigned by a hash of (campaign id, customer id), not by a
//! random draw: the same campaign over the same audience gives the same split
//! on every node and after every restart, and a member's group can be
//! recomputed without being stored. The hash is SipHash-1-3 under a fixed
//! key, whose output is specified and stable across versions, so the split
//! is too. Its top 53 bits, read as a number in [0, 1), below `control_share`
//! put the member in control: each member is held out with exactly that
//! probability, independently of the others, so the control share of a large
//! audience holds to within sampling error (binomial: ±2·√(s(1 − s)/n)).

use std::hash::Hasher;

use siphasher::sip::SipHasher13;

/// A campaign member's group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Group {
    /// Contacted.
    Treatment,
    /// Held out, not contacted: what the treatment group would have done anyway.
    Control,
}

impl Group {
    /// The group's name in SQL and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Treatment => "treatment",
            Self::Control => "control",
        }
    }
}

/// Why a control share is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SplitError {
    /// Not a number strictly between 0 and 1.
    #[error(
        "control_share must be more than 0 and less than 1 (a campaign needs both groups to measure anything), got {0}"
    )]
    ControlShare(f64),
}

/// Checks a control share: strictly between 0 and 1.
pub fn check_control_share(control_share: f64) -> Result<f64, SplitError> {
    if control_share > 0.0 && control_share < 1.0 {
        Ok(control_share)
    } else {
        Err(SplitError::ControlShare(control_share))
    }
}

/// The group of `customer_id` in `campaign_id` with `control_share` held out.
pub fn assign(campaign_id: &str, customer_id: &str, control_share: f64) -> Group {
    let mut hasher = SipHasher13::new_with_keys(0x7061_7472_6f6e_2d63, 0x616d_7061_6967_6e73);
    // Lengths first, so ("ab", "c") and ("a", "bc") hash apart.
    hasher.write_u64(campaign_id.len() as u64);
    hasher.write(campaign_id.as_bytes());
    hasher.write_u64(customer_id.len() as u64);
    hasher.write(customer_id.as_bytes());
    let unit = (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64;
    if unit < control_share { Group::Control } else { Group::Treatment }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_campaign_and_customer_always_get_the_same_group() {
        let first: Vec<Group> = (0..1000).map(|i| assign("winback-2026-12", &format!("c-{i}"), 0.1)).collect();
        let again: Vec<Group> = (0..1000).map(|i| assign("winback-2026-12", &format!("c-{i}"), 0.1)).collect();
        assert_eq!(first, again);
        let other: Vec<Group> = (0..1000).map(|i| assign("winback-2027-01", &format!("c-{i}"), 0.1)).collect();
        assert_ne!(first, other, "another campaign draws another split");
    }

    #[test]
    fn the_control_share_holds_to_within_sampling_error() {
        for share in [0.05, 0.1, 0.5] {
            let n = 200_000;
            let control = (0..n).filter(|i| assign("c", &i.to_string(), share) == Group::Control).count();
            let observed = control as f64 / n as f64;
            let sd = (share * (1.0 - share) / n as f64).sqrt();
            assert!((observed - share).abs() < 4.0 * sd, "share {share}: observed {observed}");
        }
    }

    #[test]
    fn a_larger_share_only_moves_members_into_control() {
        for i in 0..10_000 {
            let id = format!("c-{i}");
            if assign("c", &id, 0.1) == Group::Control {
                assert_eq!(assign("c", &id, 0.2), Group::Control);
            }
        }
    }

    #[test]
    fn control_shares_outside_zero_to_one_are_refused() {
        for bad in [0.0, 1.0, -0.1, 1.5, f64::NAN] {
            assert!(check_control_share(bad).is_err(), "{bad}");
        }
        assert_eq!(check_control_share(0.1), Ok(0.1));
    }
}
