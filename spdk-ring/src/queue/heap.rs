//! An indexed min-heap of slots, used for timer deadlines and completion-count goals.
//!
//! `std::collections::BinaryHeap` cannot remove arbitrary elements, and lazy
//! deletion would let stale entries pile up past the preallocated capacity.
//! This heap remembers each slot's position, so disarming a timer is an O(log n)
//! removal and the heap never holds more than one item per slot: it never grows
//! beyond its initial capacity.

use super::lists::NIL;

#[derive(Copy, Clone, Debug)]
struct Item {
    key: u64,
    /// Tie breaker (submission sequence) so equal keys fire in submission order.
    tie: u64,
    slot: u32,
}

impl Item {
    fn before(&self, other: &Item) -> bool {
        (self.key, self.tie) < (other.key, other.tie)
    }
}

/// Min-heap keyed by `(key, tie)` holding at most one item per slot.
#[derive(Debug)]
pub(super) struct SlotHeap {
    items: Vec<Item>,
    /// Position of each slot in `items`, or [`NIL`].
    positions: Vec<u32>,
}

impl SlotHeap {
    /// Bytes preallocated per slot.
    pub(super) fn bytes_per_slot() -> usize {
        std::mem::size_of::<Item>() + std::mem::size_of::<u32>()
    }

    pub(super) fn new(slots: usize) -> Self {
        Self {
            items: Vec::with_capacity(slots),
            positions: vec![NIL; slots],
        }
    }

    pub(super) fn contains(&self, slot: u32) -> bool {
        self.positions[slot as usize] != NIL
    }

    /// Adds `slot`; it must not be present already.
    pub(super) fn insert(&mut self, slot: u32, key: u64, tie: u64) {
        debug_assert!(!self.contains(slot), "slot already in heap");
        let pos = self.items.len();
        self.items.push(Item { key, tie, slot });
        self.positions[slot as usize] = pos as u32;
        self.sift_up(pos);
    }

    /// Removes `slot` if present; returns whether it was.
    pub(super) fn remove(&mut self, slot: u32) -> bool {
        let pos = self.positions[slot as usize];
        if pos == NIL {
            return false;
        }
        let pos = pos as usize;
        self.positions[slot as usize] = NIL;
        let last = self.items.len() - 1;
        if pos != last {
            self.items.swap(pos, last);
            self.items.pop();
            self.positions[self.items[pos].slot as usize] = pos as u32;
            self.sift_down(pos);
            self.sift_up(pos);
        } else {
            self.items.pop();
        }
        true
    }

    /// Smallest key currently held.
    #[inline]
    pub(super) fn min_key(&self) -> Option<u64> {
        self.items.first().map(|item| item.key)
    }

    /// Removes and returns the minimum slot if its key is `<= limit`.
    pub(super) fn pop_due(&mut self, limit: u64) -> Option<u32> {
        let first = *self.items.first()?;
        if first.key > limit {
            return None;
        }
        self.remove(first.slot);
        Some(first.slot)
    }

    fn sift_up(&mut self, mut pos: usize) {
        while pos > 0 {
            let parent = (pos - 1) / 2;
            if !self.items[pos].before(&self.items[parent]) {
                break;
            }
            self.swap(pos, parent);
            pos = parent;
        }
    }

    fn sift_down(&mut self, mut pos: usize) {
        loop {
            let left = 2 * pos + 1;
            if left >= self.items.len() {
                break;
            }
            let right = left + 1;
            let mut smallest = left;
            if right < self.items.len() && self.items[right].before(&self.items[left]) {
                smallest = right;
            }
            if !self.items[smallest].before(&self.items[pos]) {
                break;
            }
            self.swap(pos, smallest);
            pos = smallest;
        }
    }

    fn swap(&mut self, a: usize, b: usize) {
        self.items.swap(a, b);
        self.positions[self.items[a].slot as usize] = a as u32;
        self.positions[self.items[b].slot as usize] = b as u32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn pops_in_key_then_tie_order() {
        let mut heap = SlotHeap::new(4);
        heap.insert(0, 30, 0);
        heap.insert(1, 10, 5);
        heap.insert(2, 10, 2);
        heap.insert(3, 20, 1);
        assert_eq!(heap.min_key(), Some(10));
        assert_eq!(heap.pop_due(5), None);
        let order: Vec<u32> = std::iter::from_fn(|| heap.pop_due(u64::MAX)).collect();
        assert_eq!(order, [2, 1, 3, 0]);
    }

    #[test]
    fn remove_from_middle() {
        let mut heap = SlotHeap::new(3);
        heap.insert(0, 1, 0);
        heap.insert(1, 2, 0);
        heap.insert(2, 3, 0);
        assert!(heap.remove(1));
        assert!(!heap.remove(1));
        assert!(!heap.contains(1));
        assert_eq!(heap.pop_due(10), Some(0));
        assert_eq!(heap.pop_due(10), Some(2));
        assert_eq!(heap.pop_due(10), None);
    }

    proptest! {
        #![proptest_config(crate::queue::mock::proptest_config(64, 4))]
        #[test]
        fn behaves_like_a_sorted_set(ops in proptest::collection::vec((0u32..8, 0u64..20, any::<bool>()), 0..60)) {
            let mut heap = SlotHeap::new(8);
            let mut model: Vec<(u64, u64, u32)> = Vec::new();
            for (tie, (slot, key, insert)) in ops.into_iter().enumerate() {
                let tie = tie as u64;
                if insert && !heap.contains(slot) {
                    heap.insert(slot, key, tie);
                    model.push((key, tie, slot));
                } else {
                    prop_assert_eq!(heap.remove(slot), model.iter().any(|m| m.2 == slot));
                    model.retain(|m| m.2 != slot);
                }
                model.sort();
                prop_assert_eq!(heap.min_key(), model.first().map(|m| m.0));
            }
            for expected in model {
                prop_assert_eq!(heap.pop_due(u64::MAX), Some(expected.2));
            }
        }
    }
}
