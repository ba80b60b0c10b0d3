//! The lane's slots and the lists they move through: a slot is one cache
//! line, SPDK's callback argument, and linked through itself into the
//! free stack, the queue of entries waiting to start, and the finished list.

use crate::dma::DmaBuf;
use crate::queue::NvmeStatus;
use std::cell::Cell;
use std::ffi::c_void;
use std::ptr::{null, NonNull};

/// One lane entry, from `push` until its completion is reaped; SPDK's
/// callback argument while it runs. One cache line: everything an I/O
/// touches on this path is here.
#[repr(C, align(64))]
pub(crate) struct LaneSlot {
    pub(super) shared: *const LaneShared,
    /// The next slot of the list this one is in (free, queued or done).
    pub(super) next: Cell<*const LaneSlot>,
    pub(super) buf: Cell<Option<DmaBuf>>,
    pub(super) user_data: Cell<u64>,
    /// The offset in blocks until the I/O starts; then its start sequence
    /// number (Cancel acts on the oldest match).
    pub(super) position: Cell<u64>,
    /// `num_blocks` as pushed until the I/O starts; then the bytes a
    /// success reports; `-errno` once it failed (as io_uring's `res`).
    pub(super) amount: Cell<i64>,
    pub(super) target: Cell<u32>,
    pub(super) write: Cell<bool>,
    /// Failures carry an NVMe status (NVMe-backed bdev).
    pub(super) nvme_backed: Cell<bool>,
    /// SPDK holds the I/O: set when it starts, cleared by its callback
    /// (what Cancel and a target's release look for).
    pub(super) in_flight: Cell<bool>,
}

const _: () = assert!(std::mem::size_of::<LaneSlot>() == 64);

/// A slot of this lane. Slots live in the lane's pinned table, which never
/// moves or shrinks while the lane exists, so these pointers stay valid.
pub(crate) type SlotPtr = NonNull<LaneSlot>;

/// A FIFO of slots linked through their `next` field. It holds only slots
/// of the lane it belongs to; a slot is in at most one list at a time.
pub(super) struct SlotQueue {
    pub(super) head: Cell<*const LaneSlot>,
    pub(super) tail: Cell<*const LaneSlot>,
    pub(super) len: Cell<u32>,
}

impl SlotQueue {
    pub(super) fn new() -> SlotQueue {
        SlotQueue {
            head: Cell::new(null()),
            tail: Cell::new(null()),
            len: Cell::new(0),
        }
    }

    #[inline]
    pub(super) fn push_back(&self, slot: &LaneSlot) {
        slot.next.set(null());
        let tail = self.tail.get();
        if tail.is_null() {
            self.head.set(slot);
        } else {
            // SAFETY: tail is a slot of this lane (see `SlotQueue`).
            unsafe { (*tail).next.set(slot) };
        }
        self.tail.set(slot);
        self.len.set(self.len.get() + 1);
    }

    #[inline]
    pub(super) fn front(&self) -> Option<SlotPtr> {
        NonNull::new(self.head.get().cast_mut())
    }

    /// Links `slot` right after `prev`, or first when `prev` is null.
    pub(super) fn insert_after(&self, prev: *const LaneSlot, slot: &LaneSlot) {
        if prev.is_null() {
            slot.next.set(self.head.get());
            self.head.set(slot);
        } else {
            // SAFETY: prev is a slot of this lane in this list (see `SlotQueue`).
            let prev = unsafe { &*prev };
            slot.next.set(prev.next.get());
            prev.next.set(slot);
        }
        if slot.next.get().is_null() {
            self.tail.set(slot);
        }
        self.len.set(self.len.get() + 1);
    }

    #[inline]
    pub(super) fn pop_front(&self) -> Option<SlotPtr> {
        let head = self.front()?;
        self.pop_known_front(head);
        Some(head)
    }

    /// Unlinks `head`, which the caller read from [`SlotQueue::front`].
    #[inline]
    pub(super) fn pop_known_front(&self, head: SlotPtr) {
        // SAFETY: head is a slot of this lane (see `SlotQueue`).
        let next = unsafe { head.as_ref() }.next.get();
        self.head.set(next);
        if next.is_null() {
            self.tail.set(null());
        }
        self.len.set(self.len.get() - 1);
    }

    #[inline]
    pub(super) fn len(&self) -> u32 {
        self.len.get()
    }
}

/// What callbacks write besides their slot, at a fixed address.
pub(crate) struct LaneShared {
    /// Finished slots, oldest first.
    pub(super) done: SlotQueue,
    /// First slot, to turn a slot back into an index (rare paths only).
    pub(super) base: Cell<*const LaneSlot>,
    /// NVMe status of failures on NVMe-backed bdevs, per slot (rarely
    /// touched, so kept out of the slots).
    pub(super) nvme: Box<[Cell<Option<NvmeStatus>>]>,
    /// Lane entries SPDK finished (core completions note it, see the
    /// module docs).
    pub(super) spdk_done: Cell<u64>,
}

impl LaneShared {
    /// The index of `slot` in the lane's table.
    pub(super) fn index_of(&self, slot: &LaneSlot) -> usize {
        // SAFETY: both pointers are into the same slot table.
        unsafe { (slot as *const LaneSlot).offset_from(self.base.get()) as usize }
    }
}

/// Out of line: the rare case, kept off the caller's reap loop.
#[cold]
#[inline(never)]
pub(super) fn drop_buf(slot: &LaneSlot) {
    drop(slot.buf.take());
}

pub(super) fn slot_holds_buf(slot: &LaneSlot) -> bool {
    // SAFETY: single-threaded; no reference into the cell is live.
    unsafe { (*slot.buf.as_ptr()).is_some() }
}

pub(super) fn slot_buf_len(slot: &LaneSlot) -> usize {
    // Read the buffer without moving it out of the cell.
    // SAFETY: single-threaded; no reference into the cell is live.
    unsafe { (*slot.buf.as_ptr()).as_ref().map_or(0, DmaBuf::len) }
}

pub(super) fn slot_buf_ptr(slot: &LaneSlot) -> *mut c_void {
    // SAFETY: as above; the pointer stays valid while the slot owns the buffer.
    unsafe {
        (*slot.buf.as_ptr())
            .as_mut()
            .map_or(std::ptr::null_mut(), |b| b.as_mut_ptr().cast())
    }
}
