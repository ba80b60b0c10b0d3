//! The thin SPDK layer under the queue core: maps entries onto
//! `spdk_bdev_*` calls (bdev targets) or `spdk_nvme_*` commands on the
//! ring's own qpairs (NVMe namespace targets), and SPDK's callbacks onto
//! core events.
//!
//! Callbacks never touch the core. An I/O callback leaves its result in
//! its slot's context and the slot's index in the [`Inbox`], a preallocated
//! ring the ring drains after each `spdk_thread_poll`, so a callback that
//! SPDK runs synchronously inside a submit call is as safe as one that runs
//! later.

use super::op::{IoKind, IoOp, NvmeCommand, WHOLE_BUFFER};
use crate::bdev::{BdevDesc, IoChannel, IoTypes, OpenMode};
use crate::nvme::NvmeController;
use crate::pinned::Pinned;
use crate::queue::{Driver, IoError, IoResult, NvmeStatus, StartOutcome, TargetId, Token};
use spdk_ring_sys as sys;
use std::cell::{Cell, UnsafeCell};
use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::NonNull;

mod bdev;
pub(crate) mod blob;
mod check;
mod inbox;
pub(crate) mod lane;
mod nvme;

use bdev::{failure_of, io_wait_done, raw_abort};
use check::{blocks_for, RwChecks};
pub(crate) use nvme::NvmePollNeed;
use nvme::{errno_for_nvme, to_nvme_cmd, NvmeQueue};

pub(crate) use inbox::{Event, Inbox, SlotCtx};

/// Most buffers one vectored entry may carry.
pub const MAX_IOVECS: usize = 32;

/// The scatter list of one slot's vectored I/O, and how far an NVMe request
/// walking it (`nvme_reset_sgl`, `nvme_next_sge`) has got. Kept apart from
/// [`SlotCtx`] so the contexts every I/O touches stay small and dense.
pub(crate) struct SlotSgl {
    pub(crate) iovs: [libc::iovec; MAX_IOVECS],
    /// Segments in use.
    count: usize,
    /// The next segment to hand to SPDK, and how many of its bytes the
    /// request already covered.
    next: usize,
    skip: usize,
}

type SlotIovecs = UnsafeCell<SlotSgl>;

impl SlotSgl {
    /// Restarts the walk `offset` bytes into the list.
    fn reset(&mut self, offset: usize) {
        let mut left = offset;
        let mut next = 0;
        for iov in self.iovs.iter().take(self.count) {
            if left < iov.iov_len {
                break;
            }
            left -= iov.iov_len;
            next += 1;
        }
        self.next = next;
        self.skip = left;
    }

    /// The next segment (address, length), or `None` past the end.
    fn next_segment(&mut self) -> Option<(*mut c_void, u32)> {
        let iov = self.iovs.iter().take(self.count).nth(self.next)?;
        let len = u32::try_from(iov.iov_len.checked_sub(self.skip)?).ok()?;
        // The skip stays within the segment (checked just above).
        let address = iov.iov_base.cast::<u8>().wrapping_add(self.skip).cast();
        self.next += 1;
        self.skip = 0;
        Some((address, len))
    }
}

/// The io-wait registration of one target, boxed so SPDK can link it.
#[repr(C)]
struct WaitCtx {
    entry: sys::spdk_bdev_io_wait_entry,
    inbox: *const Inbox,
    target: u32,
    waiting: Cell<bool>,
}

impl WaitCtx {
    fn new(inbox: *const Inbox, target: u32) -> Pinned<WaitCtx> {
        Pinned::from_value(WaitCtx {
            entry: sys::spdk_bdev_io_wait_entry {
                bdev: std::ptr::null_mut(),
                cb_fn: None,
                cb_arg: std::ptr::null_mut(),
                dep_unblock: false,
                pad: [0; 7],
                link: Default::default(),
            },
            inbox,
            target,
            waiting: Cell::new(false),
        })
    }
}

/// A caller's optional data buffer as SPDK takes it.
fn raw_buffer(buf: &mut Option<crate::dma::DmaBuf>) -> (*mut c_void, usize) {
    match buf {
        Some(b) => (b.as_mut_ptr().cast::<c_void>(), b.len()),
        None => (std::ptr::null_mut(), 0),
    }
}

/// What serves a target's entries.
pub(crate) enum Backend {
    /// A bdev, through the ring's own channel; both `None` once released
    /// (unregistered, or removed and drained).
    Bdev {
        channel: Option<IoChannel>,
        desc: Option<BdevDesc>,
        bdev: *mut sys::spdk_bdev,
    },
    /// An NVMe namespace, through the ring's own qpair.
    Nvme(NvmeQueue),
    /// A blobstore, through the ring's own channel on it.
    Blob(blob::BlobTarget),
    /// An unregistered NVMe or blobstore target whose qpair or channel
    /// (and store reference) was released.
    Released,
}

/// A registered target, the io_uring "fixed file" of this ring: its
/// backend and what every path checks against.
pub(crate) struct TargetState {
    pub(crate) backend: Backend,
    block_size: u32,
    num_blocks: u64,
    io_types: IoTypes,
    writable: bool,
    nvme_backed: bool,
    pub(crate) removed: bool,
    pub(crate) unregistered: bool,
    pub(crate) in_flight: u32,
    /// Read and write checks, shared with the lane (`refresh_target`).
    checks: RwChecks,
    wait: Pinned<WaitCtx>,
}

impl TargetState {
    pub(crate) fn nvme(&self) -> Option<&NvmeQueue> {
        match &self.backend {
            Backend::Nvme(q) => Some(q),
            _ => None,
        }
    }

    pub(crate) fn nvme_mut(&mut self) -> Option<&mut NvmeQueue> {
        match &mut self.backend {
            Backend::Nvme(q) => Some(q),
            _ => None,
        }
    }

    pub(crate) fn blob(&self) -> Option<&blob::BlobTarget> {
        match &self.backend {
            Backend::Blob(b) => Some(b),
            _ => None,
        }
    }

    pub(crate) fn blob_mut(&mut self) -> Option<&mut blob::BlobTarget> {
        match &mut self.backend {
            Backend::Blob(b) => Some(b),
            _ => None,
        }
    }

    /// A bdev target's descriptor and channel, while it holds them.
    fn bdev_channel(&self) -> Option<(&BdevDesc, &IoChannel)> {
        match &self.backend {
            Backend::Bdev {
                desc: Some(desc),
                channel: Some(channel),
                ..
            } => Some((desc, channel)),
            _ => None,
        }
    }

    /// True once nothing of SPDK's refers to this target any more.
    fn is_idle(&self) -> bool {
        self.in_flight == 0 && !self.wait.waiting.get()
    }
}

pub(crate) struct SpdkDriver {
    ring_id: u32,
    /// When the NVMe controllers' admin queues are next processed (ticks).
    next_admin_poll: u64,
    /// Admin commands submitted and not yet collected: while any, admin
    /// queues are processed on every poll.
    admin_in_flight: u32,
    /// Submissions SPDK refused with ENOMEM (each retried later).
    pub(crate) enomem_retries: u64,
    /// NVMe namespace targets ever registered: without any, `poll_nvme`
    /// has nothing to do.
    nvme_targets: u32,
    pub(crate) targets: Vec<TargetState>,
    pub(crate) slots: Pinned<[SlotCtx]>,
    iovecs: Pinned<[SlotIovecs]>,
    inbox: *const Inbox,
    /// Per-slot state of blob calls, once a blobstore is registered.
    blob: Option<blob::BlobState>,
    /// The light path for plain reads and writes (see [`lane`]).
    pub(crate) lane: lane::Lane,
    /// A target was unregistered or removed and still holds SPDK resources:
    /// `release_idle_targets` has work until it has released them.
    pub(crate) review_targets: bool,
    /// `bdev::removal_events()` when targets were last reviewed.
    removals_seen: u64,
}

/// The shape shared by write-zeroes, unmap and flush.
type RangeFn = unsafe extern "C" fn(
    *mut sys::spdk_bdev_desc,
    *mut sys::spdk_io_channel,
    u64,
    u64,
    sys::spdk_bdev_io_completion_cb,
    *mut c_void,
) -> i32;

fn failed(errno: i32) -> StartOutcome {
    StartOutcome::Failed(IoError::errno(errno))
}

impl SpdkDriver {
    pub(crate) fn new(
        ring_id: u32,
        slots: usize,
        inbox: *const Inbox,
        lane_slots: usize,
        lane_io: bool,
    ) -> SpdkDriver {
        let slots: Pinned<[SlotCtx]> = Pinned::new(
            (0..slots)
                .map(|index| SlotCtx {
                    inbox,
                    index: index as u32,
                    token: Cell::new(Token::from_u64(0)),
                    target: Cell::new(0),
                    value: Cell::new(0),
                    errno: Cell::new(0),
                    nvme: Cell::new(None),
                    bytes: Cell::new(0),
                    nvme_backed: Cell::new(false),
                    lane_before: Cell::new(0),
                })
                .collect(),
        );
        let empty = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        let iovecs: Pinned<[SlotIovecs]> = Pinned::new(
            (0..slots.len())
                .map(|_| {
                    UnsafeCell::new(SlotSgl {
                        iovs: [empty; MAX_IOVECS],
                        count: 0,
                        next: 0,
                        skip: 0,
                    })
                })
                .collect(),
        );
        // SAFETY: the inbox outlives the driver; the table never moves.
        unsafe { &*inbox }.sgl_table.set(iovecs.as_ptr());
        let lane = lane::Lane::new(lane_slots, lane_io);
        // SAFETY: as above; the lane's counter is pinned with its shared part.
        unsafe { &*inbox }
            .lane_finished
            .set(lane.finished_counter());
        SpdkDriver {
            ring_id,
            next_admin_poll: 0,
            admin_in_flight: 0,
            enomem_retries: 0,
            nvme_targets: 0,
            targets: Vec::new(),
            slots,
            iovecs,
            inbox,
            blob: None,
            lane,
            review_targets: false,
            removals_seen: 0,
        }
    }

    fn arm(&self, slot: &SlotCtx, token: Token, target: u32, bytes: u64) {
        slot.token.set(token);
        slot.target.set(target);
        slot.bytes.set(bytes);
        slot.nvme_backed
            .set(self.targets[target as usize].nvme_backed);
    }

    /// Loads `bufs` into the scatter list of `token`'s slot, ready to walk
    /// from its start, and returns the blocks the entry moves (see
    /// [`blocks_for`]); EINVAL for no buffers or more than [`MAX_IOVECS`].
    ///
    /// # Safety
    /// The slot's entry is being started: nothing else uses its list.
    unsafe fn load_sgl(
        &self,
        token: Token,
        bufs: &mut [crate::dma::DmaBuf],
        num_blocks: u32,
        block_size: u32,
    ) -> Result<u64, i32> {
        if bufs.is_empty() || bufs.len() > MAX_IOVECS {
            return Err(libc::EINVAL);
        }
        // SAFETY: per the contract, this slot's list is ours alone.
        let sgl = unsafe { &mut *self.iovecs[token.index() as usize].get() };
        for (iov, buf) in sgl.iovs.iter_mut().zip(bufs.iter_mut()) {
            *iov = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            };
        }
        sgl.count = bufs.len();
        sgl.reset(0);
        blocks_for(bufs.iter().map(|b| b.len()).sum(), num_blocks, block_size)
    }

    pub(crate) fn add_target(&mut self, desc: &BdevDesc, channel: IoChannel) -> u32 {
        let bdev = desc.bdev();
        let index = self.targets.len() as u32;
        // SAFETY: an open descriptor has a live bdev.
        let bdev_ptr = unsafe { sys::spdk_bdev_desc_get_bdev(desc.as_ptr()) };
        self.targets.push(TargetState {
            backend: Backend::Bdev {
                channel: Some(channel),
                desc: Some(desc.clone()),
                bdev: bdev_ptr,
            },
            block_size: bdev.block_size(),
            num_blocks: bdev.num_blocks(),
            io_types: bdev.io_types(),
            writable: desc.mode() == OpenMode::ReadWrite,
            nvme_backed: bdev.supports(IoTypes::NVME_IO),
            removed: false,
            unregistered: false,
            in_flight: 0,
            checks: RwChecks::NONE,
            wait: WaitCtx::new(self.inbox, index),
        });
        index
    }

    pub(crate) fn target(&self, index: u32) -> Option<&TargetState> {
        self.targets.get(index as usize)
    }

    pub(crate) fn block_geometry(&self, index: u32) -> Option<(u32, u64)> {
        self.target(index).map(|t| (t.block_size, t.num_blocks))
    }

    /// Notes a completion for a target's in-flight count.
    pub(crate) fn note_done(&mut self, target: u32) {
        if let Some(t) = self.targets.get_mut(target as usize) {
            t.in_flight = t.in_flight.saturating_sub(1);
        }
    }

    /// Releases channels of removed or unregistered targets that SPDK no
    /// longer uses, so their descriptors can close.
    #[inline]
    pub(crate) fn release_idle_targets(&mut self) {
        let removals = crate::bdev::removal_events();
        if self.review_targets || removals != self.removals_seen {
            self.removals_seen = removals;
            self.review_and_release_targets();
        }
    }

    #[inline(never)]
    fn review_and_release_targets(&mut self) {
        let mut pending = false;
        for index in 0..self.targets.len() {
            let running_in_lane = |lane: &lane::Lane| lane.runs_on(index as u32);
            let t = &mut self.targets[index];
            let holds_queue = matches!(t.backend, Backend::Nvme(_) | Backend::Blob(_));
            if t.unregistered && t.in_flight == 0 && holds_queue {
                // NVMe qpair, or blob channel (and the store reference).
                t.backend = Backend::Released;
            }
            pending |= t.unregistered && matches!(t.backend, Backend::Nvme(_) | Backend::Blob(_));
            let Some((desc, _)) = t.bdev_channel() else {
                continue;
            };
            if !t.removed && desc.is_removed() {
                t.removed = true;
            }
            if !(t.removed || t.unregistered) {
                continue;
            }
            if t.is_idle() && !running_in_lane(&self.lane) {
                if let Backend::Bdev { channel, desc, .. } = &mut t.backend {
                    *channel = None;
                    *desc = None;
                }
            } else {
                pending = true;
            }
            self.refresh_target(index as u32);
        }
        self.review_targets = pending;
    }

    /// Brings the checks of target `index` and the lane's record of it up
    /// to date with its state (registered, unregistered, removed), so both
    /// paths fail its entries alike from now on.
    pub(crate) fn refresh_target(&mut self, index: u32) {
        let Some(t) = self.targets.get_mut(index as usize) else {
            return;
        };
        t.checks = RwChecks::of(t);
        self.lane.record_target(index, t);
    }

    /// True when no target has anything of SPDK's pending.
    pub(crate) fn all_idle(&self) -> bool {
        self.targets.iter().all(TargetState::is_idle)
    }

    fn wait_for_memory(&mut self, index: u32) {
        let t = &mut self.targets[index as usize];
        if t.wait.waiting.get() {
            return;
        }
        let Backend::Bdev {
            channel: Some(channel),
            bdev,
            ..
        } = &t.backend
        else {
            return;
        };
        let bdev = *bdev;
        let wait = &mut *t.wait;
        wait.entry.bdev = bdev;
        wait.entry.cb_fn = Some(io_wait_done);
        wait.entry.cb_arg = wait as *mut WaitCtx as *mut c_void;
        wait.waiting.set(true);
        // SAFETY: the entry lives in a Box kept until its callback ran; the
        // bdev and channel are this target's, on this thread.
        let rc = unsafe { sys::spdk_bdev_queue_io_wait(bdev, channel.as_ptr(), &mut wait.entry) };
        if rc != 0 {
            // Memory came back between the failed submit and now: retry
            // on the next poll instead of waiting for a callback.
            wait.waiting.set(false);
            // SAFETY: the inbox outlives the driver's use of it.
            unsafe { &*self.inbox }.post(Event::Unblock { target: index });
        }
    }
}

impl Driver<IoOp> for SpdkDriver {
    fn start(&mut self, token: Token, target: TargetId, op: &mut IoOp) -> StartOutcome {
        let index = target.0;
        if op.target_ring != self.ring_id {
            return failed(libc::EBADF);
        }
        let Some(t) = self.targets.get(index as usize) else {
            return failed(libc::EBADF);
        };
        if t.unregistered {
            return failed(libc::EBADF);
        }
        if t.blob().is_some() {
            return match &mut op.kind {
                IoKind::Blob(blob_op) => self.start_blob(token, index, blob_op),
                _ => failed(libc::EINVAL),
            };
        }
        if let IoKind::Blob(_) = op.kind {
            return failed(libc::EINVAL);
        }
        if t.nvme().is_some() {
            return self.start_nvme(token, index, op);
        }
        self.start_bdev(token, index, op)
    }

    fn run_immediate(&mut self, op: &mut IoOp) -> IoResult {
        match &op.kind {
            IoKind::MsgRing {
                to,
                user_data,
                value,
            } => super::msg_ring::send(to, *user_data, *value),
            _ => Err(IoError::errno(libc::EINVAL)),
        }
    }

    fn cancel_outside(&mut self, user_data: u64) -> Option<Result<(), ()>> {
        self.lane_cancel(user_data)
    }

    fn abort(&mut self, token: Token, target: TargetId, _op: &mut IoOp) -> Result<(), ()> {
        let t = self.targets.get(target.0 as usize).ok_or(())?;
        let slot = &self.slots[token.index() as usize] as *const SlotCtx as *mut c_void;
        match t.nvme() {
            Some(q) => q.abort(slot),
            None => raw_abort(t, slot),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{SlotSgl, MAX_IOVECS};

    #[test]
    fn scatter_lists_restart_at_any_offset_and_end_cleanly() {
        let mut backing = [0u8; 700];
        let base = backing.as_mut_ptr();
        let empty = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        let mut sgl = SlotSgl {
            iovs: [empty; MAX_IOVECS],
            count: 3,
            next: 0,
            skip: 0,
        };
        for (i, (at, len)) in [(0usize, 100usize), (100, 200), (300, 400)]
            .into_iter()
            .enumerate()
        {
            sgl.iovs[i] = libc::iovec {
                iov_base: base.wrapping_add(at).cast(),
                iov_len: len,
            };
        }
        let walk = |sgl: &mut SlotSgl| {
            std::iter::from_fn(|| sgl.next_segment())
                .map(|(a, l)| (a as usize - base as usize, l))
                .collect::<Vec<_>>()
        };
        sgl.reset(0);
        assert_eq!(walk(&mut sgl), [(0, 100), (100, 200), (300, 400)]);
        sgl.reset(150);
        assert_eq!(walk(&mut sgl), [(150, 150), (300, 400)]);
        sgl.reset(300);
        assert_eq!(
            walk(&mut sgl),
            [(300, 400)],
            "a boundary starts the next segment"
        );
        sgl.reset(700);
        assert_eq!(walk(&mut sgl), [], "past the end: nothing, no panic");
        sgl.reset(5000);
        assert_eq!(walk(&mut sgl), []);
    }
}
