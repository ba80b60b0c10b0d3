//! The per-op table: one slot per entry the async layer has pushed, from
//! its push until its completion has been handed to its future (or, for a
//! dropped future, until the completion came and was discarded).
//!
//! An entry's `user_data` names its slot: the index in the low 32 bits,
//! the slot's generation in the high 32. A slot's generation changes every
//! time it is freed, so a completion can only ever reach the op it was
//! pushed for: a late one whose slot moved on is counted as stale and
//! discarded, never handed to a newer future.
//!
//! The lifecycle, as in io_uring runtimes:
//!
//! ```text
//!  Free ──push──▶ Submitted ──poll──▶ Waiting(waker) ──completion──▶ Completed ──poll──▶ Free
//!                     │                    │                                  │
//!                     └──── future dropped ┴──▶ Ignored ──completion──▶ Free   └─ dropped ─▶ Free
//! ```
//!
//! The table grows to the most ops ever in the ring at once and then
//! reuses its slots: steady state allocates nothing.

use crate::ring::{Completion, CompletionRef};
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
    pub(crate) fn user_data(self) -> u64 {
        (u64::from(self.generation) << 32) | u64::from(self.index)
    }

    fn from_user_data(user_data: u64) -> OpId {
        OpId {
            index: user_data as u32,
            generation: (user_data >> 32) as u32,
        }
    }
}

enum OpState {
    Free,
    /// Pushed; its future has not asked for it since.
    Submitted,
    /// Pushed; the future waits with this waker.
    Waiting(Waker),
    /// The completion came; the future has not taken it yet.
    Completed(Completion),
    /// The future was dropped while the entry was in the ring: the
    /// completion is discarded when it comes, and only then is the slot free.
    Ignored,
}

struct OpSlot {
    generation: u32,
    state: OpState,
}

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

/// What to do after a completion was recorded.
pub(crate) enum Recorded {
    /// Wake this future.
    Wake(Waker),
    /// Nothing to wake (the future will look, or it is gone).
    Quiet,
}

pub(crate) struct OpTable {
    slots: Vec<OpSlot>,
    free: Vec<u32>,
    /// Ops not free: submitted, waiting, completed or ignored.
    live: usize,
    /// Of those, ignored: their completions are still due.
    ignored: usize,
    pub(crate) stats: AsyncStats,
}

impl OpTable {
    pub(crate) fn with_capacity(n: usize) -> OpTable {
        let mut table = OpTable {
            slots: Vec::with_capacity(n),
            free: Vec::with_capacity(n),
            live: 0,
            ignored: 0,
            stats: AsyncStats::default(),
        };
        for index in (0..n as u32).rev() {
            table.slots.push(OpSlot {
                generation: 0,
                state: OpState::Free,
            });
            table.free.push(index);
        }
        table
    }

    /// Ops whose entry is in the ring or whose completion waits for its future.
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
    pub(crate) fn take(&mut self) -> OpId {
        let index = match self.free.pop() {
            Some(index) => index,
            None => {
                let index = u32::try_from(self.slots.len()).expect("fewer than 2^32 ops");
                self.slots.push(OpSlot {
                    generation: 0,
                    state: OpState::Free,
                });
                index
            }
        };
        let slot = &mut self.slots[index as usize];
        debug_assert!(matches!(slot.state, OpState::Free));
        slot.state = OpState::Submitted;
        self.live += 1;
        OpId {
            index,
            generation: slot.generation,
        }
    }

    /// Returns a slot whose entry was never pushed (the SQ was full).
    /// Nothing in the ring carries its `user_data`, so its generation may stay.
    pub(crate) fn untake(&mut self, id: OpId) {
        let slot = &mut self.slots[id.index as usize];
        debug_assert!(slot.generation == id.generation && matches!(slot.state, OpState::Submitted));
        slot.state = OpState::Free;
        self.live -= 1;
        self.free.push(id.index);
    }

    fn release(&mut self, index: u32) {
        let slot = &mut self.slots[index as usize];
        slot.state = OpState::Free;
        // Never u32::MAX, so no op's user_data is CANCEL_USER_DATA.
        slot.generation = if slot.generation >= u32::MAX - 1 {
            0
        } else {
            slot.generation + 1
        };
        self.live -= 1;
        self.free.push(index);
    }

    /// The slot of `id`, if `id` is still its op.
    fn slot_of(&mut self, id: OpId) -> Option<&mut OpSlot> {
        self.slots
            .get_mut(id.index as usize)
            .filter(|slot| slot.generation == id.generation && !matches!(slot.state, OpState::Free))
    }

    /// The future of `id` asks for its completion: the completion, in its
    /// slot, if it came; else `waker` is recorded (cloned only when the one
    /// already recorded would not wake the same task) to be woken when it does.
    fn completed(&mut self, id: OpId, waker: &Waker) -> Option<&mut Completion> {
        let slot = self.slot_of(id).expect("a pending op keeps its slot");
        match &mut slot.state {
            OpState::Completed(done) => Some(done),
            OpState::Waiting(old) if old.will_wake(waker) => None,
            state @ (OpState::Submitted | OpState::Waiting(_)) => {
                *state = OpState::Waiting(waker.clone());
                None
            }
            OpState::Free | OpState::Ignored => unreachable!("polled after it was dropped"),
        }
    }

    /// As [`poll_op`](Self::poll_op), but `take` reads what its future
    /// needs (the result, the buffers) straight from the completion in its
    /// slot, which is then freed with whatever `take` left.
    #[inline]
    pub(crate) fn poll_op_with<T>(
        &mut self,
        id: OpId,
        waker: &Waker,
        take: impl FnOnce(&mut Completion) -> T,
    ) -> Option<T> {
        let output = take(self.completed(id, waker)?);
        self.release(id.index);
        self.stats.completed += 1;
        Some(output)
    }

    /// The future of `id` asks for its completion: takes it if it came
    /// (freeing the slot), else records `waker` to be woken when it does.
    pub(crate) fn poll_op(&mut self, id: OpId, waker: &Waker) -> Option<Completion> {
        self.completed(id, waker)?;
        let OpState::Completed(done) =
            std::mem::replace(&mut self.slots[id.index as usize].state, OpState::Free)
        else {
            unreachable!()
        };
        self.release(id.index);
        self.stats.completed += 1;
        Some(done)
    }

    /// The future of `id` was dropped. Returns true if its entry is still
    /// in the ring (the caller then asks for a cancel); a completion that
    /// already came is dropped here, with its buffers.
    pub(crate) fn abandon(&mut self, id: OpId) -> bool {
        let slot = self.slot_of(id).expect("a pending op keeps its slot");
        match std::mem::replace(&mut slot.state, OpState::Ignored) {
            OpState::Completed(done) => {
                self.release(id.index);
                drop(done);
                false
            }
            OpState::Submitted | OpState::Waiting(_) => {
                self.ignored += 1;
                self.stats.abandoned += 1;
                true
            }
            OpState::Free | OpState::Ignored => unreachable!("dropped twice"),
        }
    }

    /// Records a completion reaped from the ring, read in its ring slot:
    /// it is copied out once, straight into the op's slot.
    pub(crate) fn record(&mut self, mut done: CompletionRef<'_>) -> Recorded {
        let user_data = done.user_data();
        if user_data == CANCEL_USER_DATA {
            return Recorded::Quiet;
        }
        let id = OpId::from_user_data(user_data);
        let Some(slot) = self.slot_of(id) else {
            self.stats.stale += 1;
            return Recorded::Quiet;
        };
        match &mut slot.state {
            OpState::Waiting(_) | OpState::Submitted => {}
            OpState::Ignored => {
                // Its future is gone: drop the buffers now, then free the slot.
                let buffers = match done.take_buf() {
                    Some(_single) => 1,
                    None => done.take_bufs().len() as u64,
                };
                drop(done);
                self.ignored -= 1;
                self.stats.discarded += 1;
                self.stats.discarded_buffers += buffers;
                self.release(id.index);
                return Recorded::Quiet;
            }
            OpState::Completed(_) | OpState::Free => unreachable!("one completion per entry"),
        }
        match std::mem::replace(&mut slot.state, OpState::Completed(done.into_owned())) {
            OpState::Waiting(waker) => Recorded::Wake(waker),
            _ => Recorded::Quiet,
        }
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
        let first = table.take();
        let waker = futures::task::noop_waker_ref();
        assert!(table.poll_op(first, waker).is_none());
        // Abandoned in flight: the slot stays taken until its completion.
        assert!(table.abandon(first));
        let second = table.take();
        assert_ne!(first.index, second.index, "the ignored slot is not reused");
        assert_eq!((table.live(), table.ignored(), table.capacity()), (2, 1, 2));
        table.untake(second);
        assert_eq!(table.live(), 1);
    }
}
