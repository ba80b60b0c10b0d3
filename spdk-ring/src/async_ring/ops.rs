//! The per-op table: one slot per entry the async layer took, from the
//! moment its future was made until its completion has been handed to the
//! future (or, for a dropped future, until the completion came and was
//! discarded).
//!
//! An entry's `user_data` names its slot: the index in the low 32 bits,
//! the slot's generation in the high 32. A slot's generation changes every
//! time it is freed, so a completion can only ever reach the op it was
//! pushed for: a late one whose slot moved on is counted as stale and
//! discarded, never handed to a newer future.
//!
//! The lifecycle, as in io_uring runtimes (the waiter, a task or a waker,
//! is recorded whenever the future is polled before its completion came):
//!
//! ```text
//!  Free ──made──▶ InRing ──completion──▶ Completed ──polled──▶ Free
//!   │               │                        └───── dropped ──▶ Free
//!   │               └── dropped ──▶ Ignored ──completion──▶ Free
//!   └──made, SQ full──▶ Unpushed ──room──▶ InRing
//!                         └── dropped ──▶ Withdrawn ──its turn to push──▶ Free
//! ```
//!
//! A completion is kept in parts: the result, the flags and the one buffer
//! a lane completion carries; any other completion whole. The table grows
//! to the most ops ever live at once and then reuses its slots: steady
//! state allocates nothing.

use super::tasks::{TaskRef, Tasks};
use crate::dma::DmaBuf;
use crate::queue::{self, CompletionFlags};
use crate::ring::{Completion, CompletionRef, IoFailure};
use std::task::Waker;

/// `user_data` of the adapter's own `Cancel` entries: their completions
/// are discarded. No op has it (generation `u32::MAX` is never used).
pub(crate) const CANCEL_USER_DATA: u64 = u64::MAX;

/// Names one op: its slot and the slot's generation when it was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OpId {
    index: u32,
    generation: u32,
}

impl OpId {
    #[inline]
    pub(crate) fn user_data(self) -> u64 {
        (u64::from(self.generation) << 32) | u64::from(self.index)
    }

    #[inline]
    fn from_user_data(user_data: u64) -> OpId {
        OpId {
            index: user_data as u32,
            generation: (user_data >> 32) as u32,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Free,
    /// Made while the SQ was full: the entry waits in the handle's queue.
    Unpushed,
    /// Dropped while unpushed: the entry is dropped when its turn comes.
    Withdrawn,
    InRing,
    /// The completion came and waits in the slot for its future.
    Completed,
    /// The future was dropped while the entry was in the ring: the
    /// completion is discarded when it comes, and only then is the slot free.
    Ignored,
}

/// Who is woken when an op's completion comes.
pub(crate) enum Waiter {
    Nobody,
    /// A task of the handle's own executor, woken by index: no waker call.
    Task(TaskRef),
    /// Any other waker (another executor's, a combinator's).
    Waker(Waker),
}

impl Waiter {
    /// The waiter for a future polled with `waker`.
    #[inline]
    pub(crate) fn of(waker: &Waker, tasks: &Tasks) -> Waiter {
        match tasks.polled_task(waker) {
            Some(task) => Waiter::Task(task),
            None => Waiter::Waker(waker.clone()),
        }
    }

    /// Whether a future polled with `waker` is already this waiter.
    #[inline]
    fn is(&self, waker: &Waker, tasks: &Tasks) -> bool {
        match self {
            Waiter::Task(task) => tasks.polled_task(waker) == Some(*task),
            Waiter::Waker(old) => old.will_wake(waker),
            Waiter::Nobody => false,
        }
    }
}

struct OpSlot {
    generation: u32,
    phase: Phase,
    flags: CompletionFlags,
    /// The next free slot, while this one is free.
    next_free: u32,
    waiter: Waiter,
    /// Once completed: the result, and the single buffer of a lane
    /// completion; any other completion waits whole in the table's
    /// `wholes` (kept apart so that a slot stays small).
    result: queue::IoResult,
    buf: Option<DmaBuf>,
    has_whole: bool,
}

impl OpSlot {
    /// Frees this slot (at `index`) onto the free list headed by `free`,
    /// with a new generation.
    #[inline]
    fn free_onto(&mut self, index: u32, free: &mut u32) {
        self.phase = Phase::Free;
        // Never u32::MAX, so no op's user_data is CANCEL_USER_DATA.
        self.generation = if self.generation >= u32::MAX - 1 {
            0
        } else {
            self.generation + 1
        };
        self.next_free = *free;
        *free = index;
    }
}

/// An op's completion, read in its slot by the future that takes it.
pub(crate) struct OpDone<'a> {
    id: OpId,
    slot: &'a mut OpSlot,
    /// The whole completion beside the slot, when it is not a lane's.
    whole: Option<&'a mut Option<Completion>>,
}

impl OpDone<'_> {
    #[inline]
    pub(crate) fn result(&self) -> Result<u64, IoFailure> {
        self.slot.result.map_err(IoFailure::from_queue)
    }

    /// The buffer of a single-buffer entry.
    #[inline]
    pub(crate) fn take_buf(&mut self) -> Option<DmaBuf> {
        match &mut self.whole {
            None => self.slot.buf.take(),
            Some(whole) => whole.as_mut()?.take_buf(),
        }
    }

    /// The buffers of any entry (one for a single-buffer entry).
    pub(crate) fn take_bufs(&mut self) -> Vec<DmaBuf> {
        match &mut self.whole {
            None => self.slot.buf.take().into_iter().collect(),
            Some(whole) => whole
                .as_mut()
                .map(Completion::take_bufs)
                .unwrap_or_default(),
        }
    }

    /// The whole completion, with everything not taken yet.
    pub(crate) fn into_completion(self) -> Completion {
        match self.whole.and_then(Option::take) {
            Some(whole) => whole,
            None => Completion::from_parts(
                self.id.user_data(),
                self.slot.result,
                self.slot.flags,
                self.slot.buf.take(),
            ),
        }
    }
}

/// No free slot: the table grows.
const NO_SLOT: u32 = u32::MAX;

/// What the layer has counted since the handle was made
/// ([`AsyncRing::stats`](super::AsyncRing::stats)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AsyncStats {
    /// Completions handed to their futures.
    pub completed: u64,
    /// Futures dropped while their entry was in the ring.
    pub abandoned: u64,
    /// Completions of abandoned entries that came and were discarded.
    pub discarded: u64,
    /// Buffers those discarded completions brought back (and dropped).
    pub discarded_buffers: u64,
    /// `Cancel` entries pushed for abandoned entries.
    pub cancels_pushed: u64,
    /// Completions whose `user_data` named no live op (a slot already
    /// reused, or not the layer's): discarded. Always 0 unless something
    /// pushed entries around the layer.
    pub stale: u64,
}

pub(crate) struct OpTable {
    slots: Vec<OpSlot>,
    /// Beside each slot: a completed core completion, whole (rare; the
    /// lane's go into the slot).
    wholes: Vec<Option<Completion>>,
    /// Head of the free slots' list, through `next_free`.
    free: u32,
    /// Ops not free.
    live: usize,
    /// Of those, ignored: their completions are still due.
    ignored: usize,
    pub(crate) stats: AsyncStats,
}

impl OpTable {
    pub(crate) fn with_capacity(n: usize) -> OpTable {
        let mut table = OpTable {
            slots: Vec::with_capacity(n),
            wholes: Vec::with_capacity(n),
            free: NO_SLOT,
            live: 0,
            ignored: 0,
            stats: AsyncStats::default(),
        };
        for _ in 0..n {
            table.grow();
        }
        table
    }

    /// Adds a free slot.
    #[cold]
    fn grow(&mut self) {
        let index = u32::try_from(self.slots.len())
            .ok()
            .filter(|&i| i != NO_SLOT)
            .expect("spdk-ring: fewer than 2^32 - 1 ops at once");
        self.slots.push(OpSlot {
            generation: 0,
            phase: Phase::Free,
            flags: CompletionFlags::empty(),
            next_free: self.free,
            waiter: Waiter::Nobody,
            result: Ok(0),
            buf: None,
            has_whole: false,
        });
        self.wholes.push(None);
        self.free = index;
    }

    /// Ops whose entry is queued, in the ring, or whose completion waits
    /// for its future.
    pub(crate) fn live(&self) -> usize {
        self.live
    }

    /// Entries of dropped futures whose completions have not come yet.
    pub(crate) fn ignored(&self) -> usize {
        self.ignored
    }

    /// Slots in the table (the most ops ever live at once, or the initial size).
    pub(crate) fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Takes a free slot for an entry about to be pushed.
    #[inline]
    pub(crate) fn take(&mut self, waiter: Waiter) -> OpId {
        if self.free == NO_SLOT {
            self.grow();
        }
        let index = self.free;
        let slot = &mut self.slots[index as usize];
        debug_assert_eq!(slot.phase, Phase::Free);
        self.free = slot.next_free;
        slot.phase = Phase::InRing;
        slot.waiter = waiter;
        self.live += 1;
        OpId {
            index,
            generation: slot.generation,
        }
    }

    /// The entry of `id` found the SQ full: it waits in the handle's queue.
    pub(crate) fn set_unpushed(&mut self, id: OpId) {
        self.slots[id.index as usize].phase = Phase::Unpushed;
    }

    /// The queued entry of `id` has its turn: true if it is to be pushed
    /// now, false if its future is gone (its slot is then freed, and the
    /// caller drops the entry).
    pub(crate) fn pushing_unpushed(&mut self, id: OpId) -> bool {
        let slot = &mut self.slots[id.index as usize];
        match slot.phase {
            Phase::Unpushed => {
                slot.phase = Phase::InRing;
                true
            }
            Phase::Withdrawn => {
                self.release(id.index);
                false
            }
            other => unreachable!("a queued entry's op is {other:?}"),
        }
    }

    /// The queued entry of `id` could not be pushed after all (the SQ filled).
    pub(crate) fn back_to_unpushed(&mut self, id: OpId) {
        self.slots[id.index as usize].phase = Phase::Unpushed;
    }

    #[inline]
    fn release(&mut self, index: u32) {
        let slot = &mut self.slots[index as usize];
        slot.free_onto(index, &mut self.free);
        self.live -= 1;
    }

    /// The future of `id` asks for its completion. If it came, `take` reads
    /// what the future needs (the result, the buffers) straight from the
    /// slot, which is then freed with whatever `take` left. If not, the
    /// future's waiter is recorded (when it is not already) and None returned.
    #[inline(always)]
    pub(crate) fn poll_op_with<T>(
        &mut self,
        id: OpId,
        waker: &Waker,
        tasks: &Tasks,
        take: impl FnOnce(OpDone<'_>) -> T,
    ) -> Option<T> {
        let slot = &mut self.slots[id.index as usize];
        debug_assert_eq!(slot.generation, id.generation);
        if slot.phase != Phase::Completed {
            debug_assert!(matches!(slot.phase, Phase::InRing | Phase::Unpushed));
            if !slot.waiter.is(waker, tasks) {
                slot.waiter = Waiter::of(waker, tasks);
            }
            return None;
        }
        let whole = if slot.has_whole {
            Some(&mut self.wholes[id.index as usize])
        } else {
            None
        };
        let output = take(OpDone { id, slot, whole });
        let slot = &mut self.slots[id.index as usize];
        // What `take` left (buffers of another shape) goes with the op.
        if slot.has_whole {
            slot.has_whole = false;
            self.wholes[id.index as usize] = None;
        }
        slot.buf = None;
        slot.free_onto(id.index, &mut self.free);
        self.live -= 1;
        self.stats.completed += 1;
        Some(output)
    }

    /// The future of `id` was dropped. Returns true if its entry is still
    /// in the ring (the caller then asks for a cancel); a completion that
    /// already came is dropped here, with its buffers.
    pub(crate) fn abandon(&mut self, id: OpId) -> bool {
        let slot = &mut self.slots[id.index as usize];
        debug_assert_eq!(slot.generation, id.generation);
        slot.waiter = Waiter::Nobody;
        match slot.phase {
            Phase::Completed => {
                slot.has_whole = false;
                let (buf, whole) = (slot.buf.take(), self.wholes[id.index as usize].take());
                self.release(id.index);
                drop((buf, whole));
                false
            }
            Phase::InRing => {
                slot.phase = Phase::Ignored;
                self.ignored += 1;
                self.stats.abandoned += 1;
                true
            }
            Phase::Unpushed => {
                slot.phase = Phase::Withdrawn;
                false
            }
            other => unreachable!("an op dropped while {other:?}"),
        }
    }

    /// Records a completion reaped from the ring, read in its ring slot
    /// and moved once, straight into the op's slot. A task of `tasks`
    /// waiting for it is woken here; any other waker is returned, to be
    /// woken once the state is released.
    #[inline]
    pub(crate) fn record(&mut self, done: CompletionRef<'_>, tasks: &Tasks) -> Option<Waker> {
        let user_data = done.user_data();
        let id = OpId::from_user_data(user_data);
        let slot = match self.slots.get_mut(id.index as usize) {
            Some(slot) if slot.generation == id.generation && slot.phase == Phase::InRing => slot,
            Some(slot) if slot.generation == id.generation && slot.phase == Phase::Ignored => {
                self.discard(id, done);
                return None;
            }
            _ => {
                if user_data != CANCEL_USER_DATA {
                    self.stats.stale += 1;
                }
                return None;
            }
        };
        (slot.result, slot.flags) = done.raw_parts();
        match done.into_lane_buf() {
            Ok(buf) => slot.buf = buf,
            Err(core) => {
                slot.has_whole = true;
                self.wholes[id.index as usize] = Some(core.into_owned());
            }
        }
        slot.phase = Phase::Completed;
        match std::mem::replace(&mut slot.waiter, Waiter::Nobody) {
            Waiter::Task(task) => {
                tasks.wake_task(task);
                None
            }
            Waiter::Waker(waker) => Some(waker),
            Waiter::Nobody => None,
        }
    }

    /// The completion of an ignored op: its future is gone. The buffers
    /// are dropped now, then the slot freed.
    #[cold]
    fn discard(&mut self, id: OpId, mut done: CompletionRef<'_>) {
        let buffers = match done.take_buf() {
            Some(_single) => 1,
            None => done.take_bufs().len() as u64,
        };
        drop(done);
        self.ignored -= 1;
        self.stats.discarded += 1;
        self.stats.discarded_buffers += buffers;
        self.release(id.index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_round_trips_and_never_collides_with_the_cancel_tag() {
        let id = OpId {
            index: 7,
            generation: u32::MAX - 1,
        };
        assert_eq!(OpId::from_user_data(id.user_data()), id);
        assert_ne!(id.user_data(), CANCEL_USER_DATA);
    }

    #[test]
    fn a_freed_slot_comes_back_with_a_new_generation() {
        let mut table = OpTable::with_capacity(1);
        let tasks = Tasks::new();
        let first = table.take(Waiter::Nobody);
        let waker = futures::task::noop_waker_ref();
        assert!(table
            .poll_op_with(first, waker, &tasks, |done| done.into_completion())
            .is_none());
        // Abandoned in flight: the slot stays taken until its completion.
        assert!(table.abandon(first));
        let second = table.take(Waiter::Nobody);
        assert_ne!(first.index, second.index, "the ignored slot is not reused");
        assert_eq!((table.live(), table.ignored(), table.capacity()), (2, 1, 2));
        table.set_unpushed(second);
        assert!(
            !table.abandon(second),
            "an unpushed op has nothing to cancel"
        );
        assert!(
            !table.pushing_unpushed(second),
            "a withdrawn entry is dropped"
        );
        assert_eq!(table.live(), 1);
    }
}
