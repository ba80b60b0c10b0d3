//! SPDK's completion callback for lane entries: the result goes into the
//! slot and the slot onto the finished list; nothing else is touched.

use super::slot::LaneSlot;
use crate::ring::driver::failure_of;
use spdk_ring_sys as sys;
use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// # Safety
/// SPDK calls it once per lane I/O, with `ctx` the entry's `LaneSlot` and
/// `bdev_io` not yet freed.
pub(super) unsafe extern "C" fn lane_io_done(
    bdev_io: *mut sys::spdk_bdev_io,
    success: bool,
    ctx: *mut c_void,
) {
    // SAFETY: ctx is a LaneSlot of a live ring (the ring quiesces before
    // freeing the lane).
    let slot = unsafe { &*(ctx as *const LaneSlot) };
    if !success {
        // SAFETY: as here; bdev_io is the failed I/O, not freed yet.
        return unsafe { lane_io_failed(bdev_io, slot) };
    }
    // SAFETY: bdev_io finished and is not freed yet.
    unsafe { lane_io_finished(bdev_io, slot) }
}

/// Posts `slot` as done and frees its `bdev_io`.
///
/// # Safety
/// `slot` is a lane slot of a live ring whose I/O just finished as
/// `bdev_io`, which is not freed yet.
#[inline(always)]
unsafe fn lane_io_finished(bdev_io: *mut sys::spdk_bdev_io, slot: &LaneSlot) {
    // SAFETY: the shared part lives as long as the slots.
    let shared = unsafe { &*slot.shared };
    slot.in_flight.set(false);
    shared.spdk_done.set(shared.spdk_done.get() + 1);
    shared.done.push_back(slot);
    // SAFETY: every completed bdev_io must be freed exactly once.
    unsafe { sys::spdk_bdev_free_io(bdev_io) };
}

/// [`lane_io_done`] for a failure: the errno (and NVMe status) go into the
/// slot first. Out of line, so the success path saves no registers.
///
/// # Safety
/// As for [`lane_io_finished`].
#[cold]
#[inline(never)]
unsafe fn lane_io_failed(bdev_io: *mut sys::spdk_bdev_io, slot: &LaneSlot) {
    // SAFETY: the shared part lives as long as the slots.
    let shared = unsafe { &*slot.shared };
    let recorded = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the caller's contract: bdev_io is not freed yet.
        let e = unsafe { failure_of(bdev_io, slot.nvme_backed.get()) };
        let errno = if e.errno == 0 { libc::EIO } else { e.errno };
        slot.amount.set(-i64::from(errno));
        if let Some(cell) = shared.nvme.get(shared.index_of(slot)) {
            cell.set(e.nvme);
        }
    }));
    if recorded.is_err() {
        // Nothing above panics; if it ever did, the slot still completes.
        slot.amount.set(-i64::from(libc::EIO));
    }
    // SAFETY: the caller's contract.
    unsafe { lane_io_finished(bdev_io, slot) }
}
