//! Where each shard should live: rendezvous (highest-random-weight) hashing over the live
//! members that run the shard's role.
//!
//! Owns the placement function and the plan of moves between two placements. A join or a leave
//! moves only the shards whose winner changed, about 1/N of them. The hash is specified here
//! (FNV-1a mixed with SplitMix64), never `std`'s `DefaultHasher`, so every node and every release
//! computes the same placement. Pure: no clock, no I/O.

use std::collections::BTreeMap;

use crate::actors::EntityKind;

/// A live member that may own shards of a kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub node_id: String,
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

fn splitmix64(mut value: u64) -> u64 {
    value = value.wrapping_add(0x9e37_79b9_7f4a_7c15);
    value = (value ^ (value >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    value = (value ^ (value >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    value ^ (value >> 31)
}

/// The weight of `node_id` for one shard; the highest weight wins the shard.
pub fn weight(node_id: &str, kind: EntityKind, shard: u32) -> u64 {
    let mut key = Vec::with_capacity(node_id.len() + 16);
    key.extend_from_slice(node_id.as_bytes());
    key.push(0);
    key.extend_from_slice(kind.as_str().as_bytes());
    key.push(0);
    key.extend_from_slice(&shard.to_be_bytes());
    splitmix64(fnv1a(&key))
}

/// The member that should own `shard` of `kind`, or `None` when no member runs the role.
/// Ties (practically impossible) go to the smaller node id, so every node agrees.
pub fn owner_of(kind: EntityKind, shard: u32, candidates: &[Candidate]) -> Option<&Candidate> {
    candidates.iter().max_by(|left, right| {
        weight(&left.node_id, kind, shard)
            .cmp(&weight(&right.node_id, kind, shard))
            .then_with(|| right.node_id.cmp(&left.node_id))
    })
}

/// The desired owner of every shard of `kind`.
pub fn placement(kind: EntityKind, shards: u32, candidates: &[Candidate]) -> BTreeMap<u32, String> {
    (0..shards)
        .filter_map(|shard| {
            owner_of(kind, shard, candidates).map(|owner| (shard, owner.node_id.clone()))
        })
        .collect()
}

/// A shard that should change hands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedMove {
    pub shard: u32,
    pub from: Option<String>,
    pub to: String,
}

/// The moves from `current` owners to `desired` ones, at most `limit` per round (Akka's bounded
/// rebalance), in shard order. Unowned shards come first: serving them matters more than
/// balancing.
pub fn plan_moves(
    current: &BTreeMap<u32, String>,
    desired: &BTreeMap<u32, String>,
    limit: usize,
) -> Vec<PlannedMove> {
    let mut unowned = Vec::new();
    let mut rebalance = Vec::new();
    for (shard, to) in desired {
        match current.get(shard) {
            None => unowned.push(PlannedMove {
                shard: *shard,
                from: None,
                to: to.clone(),
            }),
            Some(from) if from != to => rebalance.push(PlannedMove {
                shard: *shard,
                from: Some(from.clone()),
                to: to.clone(),
            }),
            Some(_) => {}
        }
    }
    unowned.extend(rebalance);
    unowned.truncate(limit);
    unowned
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn members(names: &[&str]) -> Vec<Candidate> {
        names
            .iter()
            .map(|name| Candidate {
                node_id: (*name).to_string(),
            })
            .collect()
    }

    #[test]
    fn the_hash_is_specified_and_stable() {
        // Pinned values: a change here changes every cluster's placement.
        assert_eq!(
            weight("node-a", EntityKind::Ticket, 0),
            weight("node-a", EntityKind::Ticket, 0)
        );
        assert_ne!(
            weight("node-a", EntityKind::Ticket, 0),
            weight("node-a", EntityKind::Order, 0)
        );
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn shards_spread_roughly_evenly() {
        let nodes = members(&["node-1", "node-2", "node-3"]);
        let plan = placement(EntityKind::Ticket, 256, &nodes);
        assert_eq!(plan.len(), 256);
        for node in &nodes {
            let owned = plan
                .values()
                .filter(|owner| **owner == node.node_id)
                .count();
            assert!((50..=120).contains(&owned), "{} owns {owned}", node.node_id);
        }
    }

    #[test]
    fn no_member_no_owner() {
        assert!(owner_of(EntityKind::Order, 3, &[]).is_none());
    }

    #[test]
    fn moves_are_bounded_and_unowned_first() {
        let current: BTreeMap<u32, String> = [(0, "a".to_string()), (1, "a".to_string())].into();
        let desired: BTreeMap<u32, String> = [
            (0, "b".to_string()),
            (1, "a".to_string()),
            (2, "b".to_string()),
        ]
        .into();
        let moves = plan_moves(&current, &desired, 1);
        assert_eq!(
            moves,
            vec![PlannedMove {
                shard: 2,
                from: None,
                to: "b".into()
            }]
        );
        assert_eq!(plan_moves(&current, &desired, 10).len(), 2);
    }

    proptest! {
        /// A join moves only shards to the newcomer, and about 1/N of them.
        #[test]
        fn a_join_moves_only_shards_to_the_new_member(count in 1usize..8, seed in any::<u32>()) {
            let before: Vec<Candidate> = (0..count).map(|n| Candidate { node_id: format!("node-{seed}-{n}") }).collect();
            let mut after = before.clone();
            after.push(Candidate { node_id: format!("node-{seed}-new") });
            let old = placement(EntityKind::Ticket, 256, &before);
            let new = placement(EntityKind::Ticket, 256, &after);
            let mut moved = 0;
            for (shard, owner) in &new {
                if old.get(shard) != Some(owner) {
                    prop_assert_eq!(owner, &format!("node-{seed}-new"));
                    moved += 1;
                }
            }
            let expected = 256.0 / (count as f64 + 1.0);
            prop_assert!((moved as f64) < expected * 1.8 + 8.0, "moved {} expected about {}", moved, expected);
        }

        /// A leave moves only the leaver's shards.
        #[test]
        fn a_leave_moves_only_the_leavers_shards(count in 2usize..8, seed in any::<u32>()) {
            let before: Vec<Candidate> = (0..count).map(|n| Candidate { node_id: format!("node-{seed}-{n}") }).collect();
            let after = before[1..].to_vec();
            let old = placement(EntityKind::Order, 128, &before);
            let new = placement(EntityKind::Order, 128, &after);
            for (shard, owner) in &old {
                if owner != &before[0].node_id {
                    prop_assert_eq!(new.get(shard), Some(owner));
                }
            }
        }
    }
}
