//! Tables a guest fills, kept to a fixed size: the VMM accounts for what
//! the guest does by port, by MMIO address and so on, and a guest chooses
//! how many distinct ports and addresses it touches. Each such table keeps
//! its first `limit` distinct keys and adds everything after them to one
//! "other" entry beside it, so the VMM's memory and its account stay
//! within a size fixed in advance whatever the guest does, and the totals
//! stay exact: the kept entries and the other entry together hold every
//! event.
//!
//! Why the first keys and not the busiest: a kept entry then holds every
//! event of its key (nothing of it is ever moved to the other entry), and
//! the table needs no eviction, so an event costs one map lookup. A guest
//! that touches many keys early can only push its own later keys into the
//! other entry; a real guest stays far below the limits (Linux touches 8
//! ports and about 20 MMIO addresses per virtio device).

use std::collections::BTreeMap;

/// Where an event for `key` is counted: its own entry (made if `map` has
/// fewer than `limit` keys), else `other`.
pub fn entry_or_other<'a, K: Ord, V: Default>(
    map: &'a mut BTreeMap<K, V>,
    other: &'a mut V,
    limit: usize,
    key: K,
) -> &'a mut V {
    if map.len() < limit {
        return map.entry(key).or_default();
    }
    match map.get_mut(&key) {
        Some(value) => value,
        None => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_keys_are_kept_and_the_rest_summed_exactly() {
        let mut map = BTreeMap::new();
        let mut other = 0u64;
        for key in [5u16, 1, 5, 9, 1, 7, 5, 9] {
            *entry_or_other(&mut map, &mut other, 2, key) += 1;
        }
        // 5 and 1 came first: every one of their events is theirs.
        assert_eq!(map, BTreeMap::from([(1, 2), (5, 3)]));
        assert_eq!(other, 3, "9, 7, 9");
        assert_eq!(map.values().sum::<u64>() + other, 8);
    }

    #[test]
    fn a_zero_limit_keeps_nothing_apart() {
        let mut map: BTreeMap<u64, u64> = BTreeMap::new();
        let mut other = 0;
        *entry_or_other(&mut map, &mut other, 0, 1) += 1;
        assert!(map.is_empty());
        assert_eq!(other, 1);
    }

    proptest::proptest! {
        #[test]
        fn any_sequence_stays_bounded_and_exact(
            keys in proptest::collection::vec(0u16..2000, 0..3000),
            limit in 0usize..100,
        ) {
            let mut map = BTreeMap::new();
            let mut other = 0u64;
            for &key in &keys {
                *entry_or_other(&mut map, &mut other, limit, key) += 1;
            }
            proptest::prop_assert!(map.len() <= limit);
            proptest::prop_assert_eq!(map.values().sum::<u64>() + other, keys.len() as u64);
            // A kept key holds all of its events.
            for (key, n) in &map {
                proptest::prop_assert_eq!(*n, keys.iter().filter(|k| *k == key).count() as u64);
            }
        }
    }
}
