//! A bag of feature occurrences: how often each distinct feature occurs in a stretch of
//! text, counted in a small open-addressing table.
//!
//! Serving turns every text into such counts and then into scores. Sorting the
//! occurrences to count them cost more than everything after it, and a counter as long
//! as the vocabulary would touch memory in proportion to the vocabulary; this table is
//! sized to the text instead (twice its distinct features, rounded up to a power of two), and
//! is cleared by visiting only the slots it used, so one table serves a whole text and
//! then each of its segments.

/// An empty slot holds feature `EMPTY`; feature indices are below the vocabulary size,
/// which the model file bounds far under `u32::MAX`.
const EMPTY: u32 = u32::MAX;

/// Smallest table; a short text still gets a few cache lines.
const MIN_SLOTS: usize = 16;

#[derive(Debug, Clone)]
pub struct Bag {
    /// (feature, count); `EMPTY` marks a free slot.
    slots: Vec<(u32, u32)>,
    /// Slots in use, in the order their features were first seen.
    used: Vec<u32>,
}

impl Default for Bag {
    fn default() -> Self {
        Self::with_capacity(0)
    }
}

impl Bag {
    /// A bag that holds `distinct` distinct features without growing. A caller that
    /// knows only the number of occurrences can pass it, capped at the vocabulary size.
    pub fn with_capacity(distinct: usize) -> Self {
        Self { slots: vec![(EMPTY, 0); slots_for(distinct)], used: Vec::new() }
    }

    /// Empties the bag, keeping its table when it is large enough for `distinct`
    /// features (and not wastefully larger).
    pub fn clear(&mut self, distinct: usize) {
        let wanted = slots_for(distinct);
        if self.slots.len() < wanted || self.slots.len() > 8 * wanted.max(1 << 12) {
            self.slots = vec![(EMPTY, 0); wanted];
        } else {
            for &slot in &self.used {
                self.slots[slot as usize] = (EMPTY, 0);
            }
        }
        self.used.clear();
    }

    /// Counts one occurrence of `feature`.
    pub fn add(&mut self, feature: u32) {
        debug_assert_ne!(feature, EMPTY);
        // Kept at most half full, so probes stay short and always find a free slot.
        if 2 * (self.used.len() + 1) > self.slots.len() {
            self.grow();
        }
        let mask = self.slots.len() - 1;
        let mut slot = spread(feature) & mask;
        loop {
            let entry = &mut self.slots[slot];
            if entry.0 == feature {
                entry.1 += 1;
                return;
            }
            if entry.0 == EMPTY {
                *entry = (feature, 1);
                self.used.push(slot as u32);
                return;
            }
            slot = (slot + 1) & mask;
        }
    }

    /// Number of distinct features.
    pub fn len(&self) -> usize {
        self.used.len()
    }

    pub fn is_empty(&self) -> bool {
        self.used.is_empty()
    }

    /// Each distinct feature with its count, in the order the features were first added.
    pub fn iter(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.used.iter().map(|&slot| self.slots[slot as usize])
    }

    fn grow(&mut self) {
        let entries: Vec<(u32, u32)> = self.iter().collect();
        self.slots = vec![(EMPTY, 0); 2 * self.slots.len()];
        self.used.clear();
        let mask = self.slots.len() - 1;
        for (feature, count) in entries {
            let mut slot = spread(feature) & mask;
            while self.slots[slot].0 != EMPTY {
                slot = (slot + 1) & mask;
            }
            self.slots[slot] = (feature, count);
            self.used.push(slot as u32);
        }
    }
}

fn slots_for(distinct: usize) -> usize {
    distinct.saturating_mul(2).max(MIN_SLOTS).checked_next_power_of_two().unwrap_or(1 << (usize::BITS - 1))
}

/// Feature indices are dense small integers; Fibonacci hashing spreads neighbours
/// (a word's character n-grams are often adjacent in the vocabulary) across the table.
fn spread(feature: u32) -> usize {
    (u64::from(feature).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counted(bag: &Bag) -> Vec<(u32, u32)> {
        let mut pairs: Vec<(u32, u32)> = bag.iter().collect();
        pairs.sort_unstable();
        pairs
    }

    #[test]
    fn counts_each_feature_in_first_seen_order() {
        let mut bag = Bag::with_capacity(5);
        for feature in [7, 3, 7, 0, 7, 3] {
            bag.add(feature);
        }
        assert_eq!(bag.iter().collect::<Vec<_>>(), [(7, 3), (3, 2), (0, 1)]);
        assert_eq!(bag.len(), 3);
    }

    #[test]
    fn grows_past_its_capacity_and_clears_for_reuse() {
        let mut bag = Bag::with_capacity(0);
        let mut expected = std::collections::BTreeMap::new();
        let mut state = 11u64;
        for _ in 0..5_000 {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let feature = ((state >> 33) % 3_000) as u32;
            bag.add(feature);
            *expected.entry(feature).or_insert(0u32) += 1;
        }
        assert_eq!(counted(&bag), expected.into_iter().collect::<Vec<_>>());

        bag.clear(3);
        assert!(bag.is_empty());
        bag.add(42);
        bag.add(42);
        assert_eq!(counted(&bag), [(42, 2)]);
    }

    #[test]
    fn a_huge_table_is_given_back_for_a_small_text() {
        let mut bag = Bag::with_capacity(1 << 20);
        bag.clear(10);
        assert!(bag.slots.len() <= 1 << 15);
    }
}
