//! The lane: a second, lighter path for the commonest entry, a plain
//! single-buffer read or write on a bdev.
//!
//! The core ([`RingQueue`](crate::queue::RingQueue)) implements LINK, DRAIN,
//! Cancel, timers and CQ overflow, and every entry it carries pays for that
//! machinery. An unflagged read or write needs none of it while the core
//! holds nothing, so such entries take the lane instead: a one-cache-line
//! slot that is also SPDK's callback argument. Slots are linked through
//! themselves into three lists (free, waiting to start, finished), so
//! moving an entry along touches only the slot and a list head, and the
//! callback appends to the finished list directly.
//!
//! The ordering rules stay the core's. An entry takes the lane only while
//! the core is idle (nothing in its SQ, nothing live, no completion
//! waiting), so every lane entry is older than every core entry. Hence:
//! - lane entries start before the core's SQ is looked at, and the core
//!   takes nothing from its SQ while a lane entry still waits to start;
//! - a DRAIN entry waits until the lane holds nothing live
//!   ([`RingQueue::set_outside_pending`](crate::queue::RingQueue::set_outside_pending));
//! - Cancel searches the lane first (its entries are the oldest);
//! - the core posts lane completions like its own
//!   ([`RingQueue::post_outside`](crate::queue::RingQueue::post_outside)):
//!   they share the CQ's bound, overflow flag and count, its order, and
//!   count-based Timeouts.
//!
//! Completions reach the core in the order SPDK reported them, whichever
//! path an entry took: each core completion notes how many lane
//! completions SPDK had reported before it, and the ring admits those
//! first when it drains the core's. Until admitted, a finished lane slot
//! is still in flight, as a core entry is until the ring drains it.
//!
//! An ENOMEM from SPDK stops the lane at that entry, in order, until the
//! target's io-wait callback fires.

mod done;
mod slot;

pub(crate) use slot::SlotPtr;

use super::check::RwChecks;
use super::{raw_abort, Backend, SpdkDriver, TargetState};
use crate::dma::DmaBuf;
use crate::pinned::Pinned;
use crate::queue::{IoError, NvmeStatus, ECANCELED};
use done::lane_io_done;
use slot::{drop_buf, slot_buf_len, slot_buf_ptr, slot_holds_buf, LaneShared, LaneSlot, SlotQueue};
use spdk_ring_sys as sys;
use std::cell::Cell;
use std::ffi::c_void;
use std::ptr::{null, NonNull};

/// The lane of one ring: its slots (one per in-flight entry the ring
/// allows) and the lists they move through.
pub(crate) struct Lane {
    /// The slot table and the callbacks' shared part: the lists, the slots
    /// and SPDK hold pointers into both (hence `Pinned`, not `Box`).
    slots: Pinned<[LaneSlot]>,
    shared: Pinned<LaneShared>,
    /// Free slots, a stack linked through `next`.
    free: Cell<*const LaneSlot>,
    /// Pushed, not started, oldest first.
    sq: SlotQueue,
    /// Entries started so far; each start's number orders Cancel's search.
    started: u64,
    /// The target whose ENOMEM stopped the lane, until its io-wait fires.
    blocked_on: Option<u32>,
    /// The last of the finished slots at the front of `shared.done` that
    /// the core has posted (null when none); the rest finished in SPDK and
    /// wait to be admitted.
    admitted_last: *const LaneSlot,
    /// SPDK's completions admitted so far (of `shared.spdk_done`).
    admitted_spdk: u64,
    /// Per registered target, by index.
    targets: Vec<LaneTarget>,
    /// Whether reads and writes may take the lane (`RingBuilder::lane`);
    /// without, its slots carry only completions made elsewhere
    /// ([`Lane::post_completion`]).
    serves_io: bool,
}

/// What the lane needs of a target, worked out when the target changes
/// (registration, unregistration, removal) instead of on every I/O.
/// One cache line, so finding a target's record is a shift.
#[derive(Clone, Copy)]
#[repr(align(64))]
struct LaneTarget {
    desc: *mut sys::spdk_bdev_desc,
    ch: *mut sys::spdk_io_channel,
    /// The core's checks, shared (see `check`).
    checks: RwChecks,
    nvme_backed: bool,
    /// A bdev target: lane entries may name it.
    served: bool,
}

const _: () = assert!(std::mem::size_of::<LaneTarget>() == 64);

impl LaneTarget {
    const NOT_SERVED: LaneTarget = LaneTarget {
        desc: std::ptr::null_mut(),
        ch: std::ptr::null_mut(),
        checks: RwChecks::NONE,
        nvme_backed: false,
        served: false,
    };

    fn of(t: &TargetState) -> LaneTarget {
        if !matches!(t.backend, Backend::Bdev { .. }) {
            return LaneTarget::NOT_SERVED;
        }
        let (desc, ch) = match t.bdev_channel() {
            Some((desc, channel)) => (desc.as_ptr(), channel.as_ptr()),
            None => (std::ptr::null_mut(), std::ptr::null_mut()),
        };
        LaneTarget {
            desc,
            ch,
            checks: t.checks,
            nvme_backed: t.nvme_backed,
            served: true,
        }
    }
}

/// The single-buffer read or write a lane slot is filled with.
pub(crate) struct LaneIo {
    pub(crate) target: u32,
    pub(crate) write: bool,
    pub(crate) buf: DmaBuf,
    pub(crate) offset_blocks: u64,
    pub(crate) num_blocks: u32,
    pub(crate) user_data: u64,
}

impl LaneIo {
    /// Back into the entry it was taken from.
    pub(crate) fn into_entry(self, ring_id: u32) -> crate::ring::Entry {
        use crate::queue::{Submission, TargetId};
        use crate::ring::op::{IoKind, IoOp};
        let (buf, offset_blocks, num_blocks) = (self.buf, self.offset_blocks, self.num_blocks);
        let kind = if self.write {
            IoKind::Write {
                buf,
                offset_blocks,
                num_blocks,
            }
        } else {
            IoKind::Read {
                buf,
                offset_blocks,
                num_blocks,
            }
        };
        let op = IoOp {
            target_ring: ring_id,
            kind,
        };
        crate::ring::Entry::from_submission(Submission::io(
            TargetId(self.target),
            op,
            self.user_data,
        ))
    }
}

impl Lane {
    pub(crate) fn new(slots: usize, serves_io: bool) -> Lane {
        let shared = Pinned::from_value(LaneShared {
            done: SlotQueue::new(),
            base: Cell::new(null()),
            nvme: (0..slots).map(|_| Cell::new(None)).collect(),
            spdk_done: Cell::new(0),
        });
        let slots: Box<[LaneSlot]> = (0..slots)
            .map(|_| LaneSlot {
                shared: &*shared,
                next: Cell::new(null()),
                buf: Cell::new(None),
                user_data: Cell::new(0),
                position: Cell::new(0),
                amount: Cell::new(0),
                target: Cell::new(0),
                write: Cell::new(false),
                nvme_backed: Cell::new(false),
                in_flight: Cell::new(false),
            })
            .collect();
        let slots = Pinned::new(slots);
        let lane = Lane {
            slots,
            shared,
            free: Cell::new(null()),
            sq: SlotQueue::new(),
            started: 0,
            blocked_on: None,
            admitted_last: null(),
            admitted_spdk: 0,
            targets: Vec::new(),
            serves_io,
        };
        lane.shared.base.set(lane.slots.as_ptr());
        // Lowest index on top, so a lightly loaded lane reuses few lines.
        for slot in lane.slots.iter().rev() {
            lane.push_free(slot);
        }
        lane
    }

    /// Records what the lane needs of target `index`, whose checks are
    /// up to date.
    pub(crate) fn record_target(&mut self, index: u32, t: &TargetState) {
        let index = index as usize;
        if self.targets.len() <= index {
            self.targets.resize(index + 1, LaneTarget::NOT_SERVED);
        }
        self.targets[index] = if self.serves_io {
            LaneTarget::of(t)
        } else {
            LaneTarget::NOT_SERVED
        };
    }

    /// Bytes preallocated per lane slot: the slot and its failure status.
    pub(crate) fn bytes_per_slot() -> usize {
        std::mem::size_of::<LaneSlot>() + std::mem::size_of::<Option<NvmeStatus>>()
    }

    /// The slot behind `slot`.
    #[inline]
    fn slot(&self, slot: SlotPtr) -> &LaneSlot {
        // SAFETY: every SlotPtr the lane hands out or keeps points into its
        // own table, which lives as long as the lane.
        unsafe { slot.as_ref() }
    }

    #[inline]
    fn push_free(&self, slot: &LaneSlot) {
        slot.next.set(self.free.get());
        self.free.set(slot);
    }

    #[inline]
    fn pop_free(&self) -> Option<&LaneSlot> {
        let top = NonNull::new(self.free.get().cast_mut())?;
        let slot = self.slot(top);
        self.free.set(slot.next.get());
        Some(slot)
    }

    /// Whether a slot is free for [`Lane::push`].
    #[inline]
    pub(crate) fn has_room(&self) -> bool {
        !self.free.get().is_null()
    }

    /// Queues `io`; hands it back when no slot is free.
    #[inline]
    pub(crate) fn push(&mut self, io: LaneIo) -> Result<(), LaneIo> {
        let Some(slot) = self.pop_free() else {
            return Err(io);
        };
        // SAFETY: a free slot holds no buffer (reaping dropped it), so
        // overwriting skips a drop that would do nothing.
        unsafe { slot.buf.as_ptr().write(Some(io.buf)) };
        slot.user_data.set(io.user_data);
        slot.position.set(io.offset_blocks);
        slot.amount.set(i64::from(io.num_blocks));
        slot.target.set(io.target);
        slot.write.set(io.write);
        self.sq.push_back(slot);
        Ok(())
    }

    #[inline]
    pub(crate) fn sq_len(&self) -> usize {
        self.sq.len() as usize
    }

    /// Entries started and not admitted: in flight, as the core counts
    /// its own until it drains their completions.
    pub(crate) fn running(&self) -> u64 {
        self.started - self.admitted_spdk
    }

    /// Entries SPDK still holds (what dropping the ring waits for).
    pub(crate) fn held_by_spdk(&self) -> u64 {
        self.started - self.shared.spdk_done.get()
    }

    /// The counter of SPDK's completions, for the core's callbacks to note.
    pub(crate) fn finished_counter(&self) -> *const Cell<u64> {
        &self.shared.spdk_done
    }

    /// Lane entries the core must wait for before a DRAIN: queued or running.
    pub(crate) fn pending(&self) -> u64 {
        u64::from(self.sq.len()) + self.running()
    }

    /// Whether an I/O on `target` is running in the lane (it holds the
    /// target's channel). A scan: only asked for removed or unregistered
    /// targets, so the I/O path keeps no per-target count.
    pub(crate) fn runs_on(&self, target: u32) -> bool {
        self.slots
            .iter()
            .any(|s| s.in_flight.get() && s.target.get() == target)
    }

    /// Entries that started on the lane so far.
    pub(crate) fn started_total(&self) -> u64 {
        self.started
    }

    /// Admits the completions SPDK reported before the core's completion
    /// that noted `lane_before` (`u64::MAX`: all of them), oldest first.
    /// Returns how many, for the caller to post to the core.
    #[inline]
    pub(crate) fn admit_until(&mut self, lane_before: u64) -> u32 {
        let upto = lane_before.min(self.shared.spdk_done.get());
        if upto <= self.admitted_spdk {
            return 0;
        }
        let n = (upto - self.admitted_spdk) as u32;
        // Every slot past the admitted ones finished in SPDK (bad entries
        // are admitted as they finish), oldest first.
        self.admitted_last = if upto == self.shared.spdk_done.get() {
            self.shared.done.tail.get()
        } else {
            self.nth_unadmitted(n)
        };
        self.admitted_spdk = upto;
        n
    }

    /// The `n`th (from 1) finished slot after the admitted ones.
    #[cold]
    fn nth_unadmitted(&self, n: u32) -> *const LaneSlot {
        let mut slot = if self.admitted_last.is_null() {
            self.shared.done.head.get()
        } else {
            // SAFETY: admitted_last is a slot of this lane, in `done`.
            unsafe { (*self.admitted_last).next.get() }
        };
        for _ in 1..n {
            // SAFETY: the first `n` slots after the admitted ones exist.
            slot = unsafe { (*slot).next.get() };
        }
        slot
    }

    /// The oldest admitted slot, if any.
    #[inline]
    pub(crate) fn front(&self) -> Option<SlotPtr> {
        if self.admitted_last.is_null() {
            return None;
        }
        self.shared.done.front()
    }

    /// User data and result of a finished slot.
    #[inline]
    pub(crate) fn outcome(&self, slot: SlotPtr) -> (u64, Result<u64, IoError>) {
        let slot = self.slot(slot);
        let amount = slot.amount.get();
        let result = if amount >= 0 {
            Ok(amount as u64)
        } else {
            Err(self.failure(slot, amount))
        };
        (slot.user_data.get(), result)
    }

    #[cold]
    fn failure(&self, slot: &LaneSlot, amount: i64) -> IoError {
        IoError {
            errno: (-amount) as i32,
            nvme: self.shared.nvme[self.shared.index_of(slot)].get(),
        }
    }

    /// Moves the buffer out of a finished slot.
    #[inline]
    pub(crate) fn take_buf(&mut self, slot: SlotPtr) -> Option<DmaBuf> {
        self.slot(slot).buf.take()
    }

    /// Why `slot` may not start (see `check`).
    #[cold]
    #[inline(never)]
    fn start_errno(&self, slot: &LaneSlot) -> i32 {
        let Some(t) = self.targets.get(slot.target.get() as usize) else {
            return libc::EBADF;
        };
        t.checks.errno(
            slot.write.get(),
            slot_buf_len(slot),
            slot.amount.get() as u32,
        )
    }

    /// Lane entries that finished at once (bad entries, cancellations):
    /// admitted right away, as the core posts an entry that fails to
    /// start, so they go before SPDK's completions not admitted yet.
    fn finish_now(&mut self, slot: SlotPtr, errno: i32) {
        let slot = self.slot(slot);
        slot.amount.set(-i64::from(errno));
        self.shared.nvme[self.shared.index_of(slot)].set(None);
        self.shared.done.insert_after(self.admitted_last, slot);
        self.admitted_last = slot;
    }

    /// A completion made outside SPDK's callbacks (a forwarded entry's
    /// return, a message from another ring) in a free slot, admitted at
    /// once like [`Lane::finish_now`]: the caller posts it to the core
    /// (`RingQueue::post_outside`), so it shares the CQ's bound, overflow
    /// flag and order. Hands `buf` back when no slot is free.
    pub(crate) fn post_completion(
        &mut self,
        user_data: u64,
        result: Result<u64, IoError>,
        buf: Option<DmaBuf>,
    ) -> Result<(), Option<DmaBuf>> {
        let Some(slot) = self.pop_free() else {
            return Err(buf);
        };
        slot.buf.set(buf);
        slot.user_data.set(user_data);
        let index = self.shared.index_of(slot);
        match result {
            // Bytes and message values stay far below i64::MAX.
            Ok(value) => slot.amount.set(i64::try_from(value).unwrap_or(i64::MAX)),
            Err(e) => {
                let errno = if e.errno == 0 { libc::EIO } else { e.errno };
                slot.amount.set(-i64::from(errno));
                self.shared.nvme[index].set(e.nvme);
            }
        }
        self.shared.done.insert_after(self.admitted_last, slot);
        self.admitted_last = slot;
        Ok(())
    }

    /// Pops the admitted front slot: its buffer (if not taken) drops, the
    /// slot is free again.
    #[inline(always)]
    pub(crate) fn pop_front(&mut self, front: SlotPtr) {
        debug_assert_eq!(self.front(), Some(front));
        self.shared.done.pop_known_front(front);
        if self.admitted_last == front.as_ptr().cast_const() {
            self.admitted_last = null();
        }
        let slot = self.slot(front);
        // Usually taken already: look before taking, so the common case
        // writes nothing back.
        if slot_holds_buf(slot) {
            drop_buf(slot);
        }
        self.push_free(slot);
    }

    /// Ring shutdown: every entry still queued finishes ECANCELED, and every
    /// finished slot, admitted or not, is freed. Returns how many were queued.
    pub(crate) fn cancel_queued(&mut self) -> u32 {
        let mut cancelled = 0;
        while let Some(slot) = self.sq.pop_front() {
            self.finish_now(slot, ECANCELED);
            cancelled += 1;
        }
        cancelled
    }

    /// Ring shutdown: frees every finished slot, admitted or not (their
    /// completions are no longer wanted).
    pub(crate) fn discard_finished(&mut self) {
        self.admit_until(u64::MAX);
        while let Some(front) = self.front() {
            self.pop_front(front);
        }
    }
}

impl SpdkDriver {
    /// Whether entries for `target` may take the lane: a registered bdev
    /// (NVMe namespaces and blobstores go through the core).
    #[inline]
    pub(crate) fn lane_serves(&self, target: u32) -> bool {
        self.lane
            .targets
            .get(target as usize)
            .is_some_and(|t| t.served)
    }

    /// Starts queued lane entries, oldest first, until the lane is empty or
    /// SPDK answers ENOMEM. Returns how many failed to start: they finished
    /// at once, admitted, for the caller to post to the core.
    pub(crate) fn lane_submit(&mut self) -> u32 {
        let mut failed = 0;
        if self.lane.blocked_on.is_some() {
            return failed;
        }
        while let Some(slot) = self.lane.sq.front() {
            match self.lane_start(slot) {
                // Still the front: only `push` adds to this queue.
                Ok(()) => self.lane.sq.pop_known_front(slot),
                Err(LaneStartError::NoMem(target)) => {
                    self.enomem_retries += 1;
                    self.lane.blocked_on = Some(target);
                    self.wait_for_memory(target);
                    break;
                }
                Err(LaneStartError::Failed(errno)) => {
                    self.lane.sq.pop_known_front(slot);
                    self.lane.finish_now(slot, errno);
                    failed += 1;
                }
            }
        }
        failed
    }

    /// The io-wait of `target` fired.
    pub(crate) fn lane_unblock(&mut self, target: u32) {
        if self.lane.blocked_on == Some(target) {
            self.lane.blocked_on = None;
        }
    }

    #[inline]
    fn lane_start(&mut self, slot: SlotPtr) -> Result<(), LaneStartError> {
        let lane = &mut self.lane;
        // SAFETY: a queued slot of this lane (see `Lane::slot`); taken
        // from the pointer directly so `lane.started` stays writable.
        let slot = unsafe { slot.as_ref() };
        let target = slot.target.get();
        let write = slot.write.get();
        // As pushed: a u32 count.
        let num_blocks = slot.amount.get() as u32;
        let offset = slot.position.get();
        // Every check in one hot test; which one failed, and so the errno,
        // is worked out again off the hot path.
        let checked = lane.targets.get(target as usize).and_then(|t| {
            let n = t
                .checks
                .pass(write, slot_buf_len(slot), offset, num_blocks)?;
            Some((t, n))
        });
        let Some((t, n)) = checked else {
            return Err(LaneStartError::Failed(lane.start_errno(slot)));
        };
        let ptr = slot_buf_ptr(slot);
        slot.nvme_backed.set(t.nvme_backed);
        let f = if write {
            sys::spdk_bdev_write_blocks
        } else {
            sys::spdk_bdev_read_blocks
        };
        let ctx = slot as *const LaneSlot as *mut c_void;
        // Recorded before the call: SPDK may complete the I/O inside it.
        slot.amount
            .set((n * u64::from(t.checks.block_size())) as i64);
        slot.position.set(lane.started);
        slot.in_flight.set(true);
        lane.started += 1;
        // SAFETY: desc and ch are the target's open descriptor and channel
        // on this thread (its record is refreshed when either goes away);
        // the buffer is owned by the slot until the completion is reaped, so
        // SPDK's use of it ends first; its length covers n blocks (checked
        // above); ctx is the slot's stable address.
        let rc = unsafe { f(t.desc, t.ch, ptr, offset, n, Some(lane_io_done), ctx) };
        if rc != 0 {
            // Not started: back to how it was queued.
            lane.started -= 1;
            slot.amount.set(i64::from(num_blocks));
            slot.position.set(offset);
            slot.in_flight.set(false);
            return Err(if rc == -libc::ENOMEM {
                LaneStartError::NoMem(target)
            } else {
                LaneStartError::Failed(-rc)
            });
        }
        Ok(())
    }

    /// Cancel's lane half: SPDK is asked to abort the oldest running lane
    /// entry with `user_data`. `None` when the lane runs no such entry.
    pub(crate) fn lane_cancel(&mut self, user_data: u64) -> Option<Result<(), ()>> {
        let lane = &self.lane;
        let slot = lane
            .slots
            .iter()
            .filter(|s| s.in_flight.get() && s.user_data.get() == user_data)
            .min_by_key(|s| s.position.get())?;
        // The lane's queue is empty here: the core takes no entry (a
        // Cancel neither) from its SQ while lane entries wait to start.
        debug_assert_eq!(lane.sq.len(), 0);
        let t = self.targets.get(slot.target.get() as usize)?;
        Some(raw_abort(t, slot as *const LaneSlot as *mut c_void))
    }
}

enum LaneStartError {
    NoMem(u32),
    Failed(i32),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(queue: &SlotQueue, lane: &Lane) -> Vec<usize> {
        let mut out = Vec::new();
        while let Some(slot) = queue.pop_front() {
            out.push(lane.shared.index_of(lane.slot(slot)));
        }
        out
    }

    #[test]
    fn the_free_stack_hands_out_every_slot_once_lowest_first() {
        let lane = Lane::new(4, true);
        let taken: Vec<usize> = std::iter::from_fn(|| lane.pop_free())
            .map(|s| lane.shared.index_of(s))
            .collect();
        assert_eq!(taken, [0, 1, 2, 3]);
        assert!(!lane.has_room());
        lane.push_free(&lane.slots[2]);
        assert!(lane.has_room());
        assert_eq!(lane.pop_free().map(|s| lane.shared.index_of(s)), Some(2));
    }

    #[test]
    fn slot_queues_are_fifo_through_empty_and_refill() {
        let lane = Lane::new(4, true);
        let q = SlotQueue::new();
        assert_eq!(q.front(), None);
        for i in [3, 0, 2] {
            q.push_back(&lane.slots[i]);
        }
        assert_eq!(q.len(), 3);
        let front = q.front().unwrap();
        q.pop_known_front(front);
        assert_eq!(lane.shared.index_of(lane.slot(front)), 3);
        assert_eq!(order(&q, &lane), [0, 2]);
        assert_eq!((q.len(), q.front()), (0, None));
        // Emptied, the tail must not still point at the last slot.
        q.push_back(&lane.slots[1]);
        q.push_back(&lane.slots[3]);
        assert_eq!(order(&q, &lane), [1, 3]);
    }

    #[test]
    fn a_slot_reports_bytes_or_its_errno() {
        let mut lane = Lane::new(2, true);
        let slot = NonNull::from(&lane.slots[1]);
        lane.slots[1].user_data.set(7);
        lane.slots[1].amount.set(4096);
        assert_eq!(lane.outcome(slot), (7, Ok(4096)));
        lane.finish_now(slot, libc::EINVAL);
        let (_, result) = lane.outcome(slot);
        assert_eq!(result.unwrap_err().errno, libc::EINVAL);
        assert_eq!(lane.front(), Some(slot));
    }
}
