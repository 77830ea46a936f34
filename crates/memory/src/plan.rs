//! Static memory planning: values whose lifetimes do not overlap share a slot, so a plan needs
//! as many buffers as its widest point rather than one per value.

use std::collections::BTreeMap;

/// When a value is produced and when it is last read, as step indices in execution order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValueLifetime {
    /// Step that writes the value.
    pub first: usize,
    /// Last step that reads it (equal to `first` when nothing reads it).
    pub last: usize,
    /// Size in bytes when known ahead of time, zero when it depends on run-time shapes.
    pub bytes: usize,
}

/// The result of [`plan_slots`]: the slot of every value and the size of every slot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryPlan {
    /// `slot_of[v]` is the slot holding value `v`.
    pub slot_of: Vec<usize>,
    /// Largest known size of the values sharing each slot.
    pub slot_bytes: Vec<usize>,
}

impl MemoryPlan {
    /// Number of distinct buffers the plan needs.
    pub fn slot_count(&self) -> usize {
        self.slot_bytes.len()
    }

    /// Bytes needed by all slots together (known sizes only).
    pub fn total_bytes(&self) -> usize {
        self.slot_bytes.iter().sum()
    }
}

/// For a pool that hands out buffers by size class: the largest number of buffers of each
/// class alive at the same step. Reserving that many per class before the first run lets every
/// run, the first included, be served without allocating. Values of unknown size are skipped.
pub fn peak_buffers_by_class(
    lifetimes: &[ValueLifetime],
    class_of: impl Fn(usize) -> usize,
) -> BTreeMap<usize, usize> {
    let mut events: BTreeMap<usize, BTreeMap<usize, i64>> = BTreeMap::new();
    for life in lifetimes.iter().filter(|l| l.bytes > 0) {
        let class = class_of(life.bytes);
        *events
            .entry(life.first)
            .or_default()
            .entry(class)
            .or_default() += 1;
        *events
            .entry(life.last.max(life.first) + 1)
            .or_default()
            .entry(class)
            .or_default() -= 1;
    }
    let mut live: BTreeMap<usize, i64> = BTreeMap::new();
    let mut peak: BTreeMap<usize, usize> = BTreeMap::new();
    for changes in events.values() {
        // frees scheduled for this step happen before this step's allocations
        for (&class, &delta) in changes.iter().filter(|(_, &d)| d < 0) {
            *live.entry(class).or_default() += delta;
        }
        for (&class, &delta) in changes.iter().filter(|(_, &d)| d > 0) {
            let n = live.entry(class).or_default();
            *n += delta;
            let p = peak.entry(class).or_default();
            *p = (*p).max(*n as usize);
        }
    }
    peak
}

/// Assigns slots greedily in order of first use, preferring the free slot whose size is
/// closest to the value's size. A slot becomes free after the last read of its value.
pub fn plan_slots(lifetimes: &[ValueLifetime]) -> MemoryPlan {
    let mut order: Vec<usize> = (0..lifetimes.len()).collect();
    order.sort_by_key(|&v| (lifetimes[v].first, v));
    let mut plan = MemoryPlan {
        slot_of: vec![0; lifetimes.len()],
        slot_bytes: Vec::new(),
    };
    // (slot, free from step)
    let mut busy_until: Vec<usize> = Vec::new();
    for v in order {
        let life = lifetimes[v];
        let candidate = (0..plan.slot_bytes.len())
            .filter(|&s| busy_until[s] < life.first)
            .min_by_key(|&s| plan.slot_bytes[s].abs_diff(life.bytes));
        let slot = match candidate {
            Some(s) => s,
            None => {
                plan.slot_bytes.push(0);
                busy_until.push(0);
                plan.slot_bytes.len() - 1
            }
        };
        plan.slot_of[v] = slot;
        plan.slot_bytes[slot] = plan.slot_bytes[slot].max(life.bytes);
        busy_until[slot] = life.last.max(life.first);
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn life(first: usize, last: usize, bytes: usize) -> ValueLifetime {
        ValueLifetime { first, last, bytes }
    }

    #[test]
    fn chain_needs_two_slots() {
        // a -> b -> c -> d: each value dies when the next is computed from it.
        let lifetimes = [
            life(0, 1, 10),
            life(1, 2, 10),
            life(2, 3, 10),
            life(3, 3, 10),
        ];
        let plan = plan_slots(&lifetimes);
        assert_eq!(plan.slot_count(), 2);
        assert_ne!(plan.slot_of[0], plan.slot_of[1]);
        assert_eq!(plan.slot_of[0], plan.slot_of[2]);
    }

    #[test]
    fn peak_counts_live_values_per_class() {
        // three 100-byte values alive together at step 1, then one
        let lifetimes = [
            life(0, 1, 100),
            life(1, 2, 100),
            life(1, 1, 100),
            life(3, 3, 100),
            life(0, 3, 5000),
        ];
        let peak = peak_buffers_by_class(&lifetimes, crate::pool::size_class);
        assert_eq!(peak[&128], 3);
        assert_eq!(peak[&8192], 1);
    }

    #[test]
    fn overlapping_values_never_share() {
        let lifetimes = [life(0, 5, 8), life(1, 2, 8), life(3, 4, 8), life(2, 6, 8)];
        let plan = plan_slots(&lifetimes);
        for a in 0..lifetimes.len() {
            for b in a + 1..lifetimes.len() {
                let (la, lb) = (lifetimes[a], lifetimes[b]);
                let overlap = la.first <= lb.last && lb.first <= la.last;
                if overlap {
                    assert_ne!(plan.slot_of[a], plan.slot_of[b], "{a} and {b}");
                }
            }
        }
    }
}
