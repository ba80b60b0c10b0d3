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
use crate::queue::{Driver, IoError, NvmeStatus, StartOutcome, TargetId, Token};
use spdk_ring_sys as sys;
use std::cell::{Cell, RefCell, UnsafeCell};
use std::collections::VecDeque;
use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::NonNull;

pub(crate) mod blob;
pub(crate) mod lane;

/// Queue ids set aside after a rejected qpair connect, before waiting instead.
const QPAIR_QIDS_SKIPPED: usize = 4;
/// How long qpair allocation keeps retrying a rejected connect.
const QPAIR_ALLOC_BUDGET: std::time::Duration = std::time::Duration::from_secs(5);

/// Most buffers one vectored entry may carry.
pub const MAX_IOVECS: usize = 32;

/// A core event produced by an SPDK callback.
#[derive(Debug)]
pub(crate) enum Event {
    Done {
        token: Token,
        target: u32,
        result: Result<u64, IoError>,
        /// Lane completions SPDK had reported before this one.
        lane_before: u64,
    },
    Unblock {
        target: u32,
    },
}

/// Where callbacks leave their events. Its address is stable (boxed) and it
/// outlives every callback: the ring quiesces before freeing it.
pub(crate) struct Inbox {
    /// Slots whose I/O finished, in completion order (the common event).
    pub(crate) done: IndexRing,
    /// Everything else: unblocks, admin completions, and (never in
    /// practice) an I/O completion that found `done` full.
    pub(crate) events: RefCell<VecDeque<Event>>,
    /// Set if a callback body panicked (the panic is contained there and
    /// re-raised by the ring on the caller's side).
    pub(crate) callback_panicked: Cell<bool>,
    /// Completions of admin commands, which arrive on whichever thread
    /// processes the controller's admin queue.
    pub(crate) admin: AdminMailbox,
    /// The driver's per-slot scatter lists, for the NVMe SGL callbacks
    /// (null until the driver exists).
    pub(crate) sgl_table: Cell<*const SlotIovecs>,
    /// The lane's count of finished entries (null until the driver exists):
    /// each core completion notes it, so the ring hands the two paths'
    /// completions to the core in the order SPDK reported them.
    pub(crate) lane_finished: Cell<*const Cell<u64>>,
}

/// The thread-safe part of the inbox. A controller's admin queue is shared
/// by every thread using the controller, and any of them (another ring, or
/// a caller of `NvmeController::process_admin_completions`) may run our
/// admin callbacks; admin commands are rare, so a lock is fine here.
pub(crate) struct AdminMailbox {
    pub(crate) done: std::sync::Mutex<Vec<Event>>,
    pub(crate) callback_panicked: std::sync::atomic::AtomicBool,
}

/// A fixed FIFO of slot indices in `Cell`s, so callbacks (possibly inside a
/// submit call) can append to it through a shared reference. The inbox's
/// holds slots whose I/O finished, oldest first, read by the ring between
/// SPDK calls. An in-flight I/O finishes once before its
/// slot can start another, so `max_in_flight` cells never overflow; if one
/// ever did, the completion would go to the growable queue, not be lost.
pub(crate) struct IndexRing {
    cells: Box<[Cell<u32>]>,
    head: Cell<u32>,
    len: Cell<u32>,
}

impl IndexRing {
    pub(crate) fn with_capacity(n: usize) -> IndexRing {
        IndexRing {
            cells: (0..n.max(1)).map(|_| Cell::new(0)).collect(),
            head: Cell::new(0),
            len: Cell::new(0),
        }
    }

    /// Appends `index`; false if full.
    #[inline]
    pub(crate) fn push(&self, index: u32) -> bool {
        let (len, cap) = (self.len.get(), self.cells.len() as u32);
        if len == cap {
            return false;
        }
        let mut at = self.head.get() + len;
        if at >= cap {
            at -= cap;
        }
        self.cells[at as usize].set(index);
        self.len.set(len + 1);
        true
    }

    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.len.get() == 0
    }

    #[inline]
    pub(crate) fn pop(&self) -> Option<u32> {
        let len = self.len.get();
        if len == 0 {
            return None;
        }
        let head = self.head.get();
        let index = self.cells[head as usize].get();
        let next = head + 1;
        self.head.set(if next == self.cells.len() as u32 {
            0
        } else {
            next
        });
        self.len.set(len - 1);
        Some(index)
    }
}

impl Inbox {
    /// An inbox for `n` I/Os in flight at once.
    pub(crate) fn with_capacity(n: usize) -> Inbox {
        Inbox {
            done: IndexRing::with_capacity(n),
            // Room for an event per in-flight entry, as when every
            // completion went through here (admin commands still do).
            events: RefCell::new(VecDeque::with_capacity(n)),
            callback_panicked: Cell::new(false),
            sgl_table: Cell::new(std::ptr::null()),
            lane_finished: Cell::new(std::ptr::null()),
            admin: AdminMailbox {
                done: std::sync::Mutex::new(Vec::new()),
                callback_panicked: std::sync::atomic::AtomicBool::new(false),
            },
        }
    }

    /// Moves finished admin commands into `events`; returns how many.
    pub(crate) fn collect_admin(&self) -> u32 {
        let mut done = self.admin.done.lock().unwrap_or_else(|e| e.into_inner());
        let n = done.len() as u32;
        // Admin callbacks may run on another thread: they are ordered after
        // the lane completions reported before they were collected, here.
        let lane_now = self.lane_callbacks();
        self.events
            .borrow_mut()
            .extend(done.drain(..).map(|event| match event {
                Event::Done {
                    token,
                    target,
                    result,
                    ..
                } => Event::Done {
                    token,
                    target,
                    result,
                    lane_before: lane_now,
                },
                other => other,
            }));
        if self
            .admin
            .callback_panicked
            .swap(false, std::sync::atomic::Ordering::Relaxed)
        {
            self.callback_panicked.set(true);
        }
        n
    }

    /// Lane completions SPDK reported so far (ring thread only).
    #[inline]
    pub(crate) fn lane_callbacks(&self) -> u64 {
        let counter = self.lane_finished.get();
        if counter.is_null() {
            return 0;
        }
        // SAFETY: set by the driver to its lane's counter, which lives as
        // long as the driver, and the driver is dropped before the inbox;
        // read on the ring's thread only.
        unsafe { (*counter).get() }
    }

    fn post(&self, event: Event) {
        // A callback never runs while the ring borrows the inbox: the ring
        // only borrows it to drain, outside any SPDK call.
        self.events.borrow_mut().push_back(event);
    }

    /// Records that the I/O of `slot` finished with `result`.
    #[inline]
    fn finished(&self, slot: &SlotCtx, result: Result<u64, IoError>) {
        slot.set_result(result);
        let lane_before = self.lane_callbacks();
        slot.lane_before.set(lane_before);
        if !self.done.push(slot.index) {
            self.post(Event::Done {
                token: slot.token.get(),
                target: slot.target.get(),
                result,
                lane_before,
            });
        }
    }
}

/// Per in-flight slot: the callback argument SPDK holds. One per core slot,
/// in a boxed slice that never moves while the ring lives.
pub(crate) struct SlotCtx {
    inbox: *const Inbox,
    /// This context's index in the slot table (= its tokens' index).
    index: u32,
    pub(crate) token: Cell<Token>,
    pub(crate) target: Cell<u32>,
    /// The result, written by the callback and read when the ring drains
    /// the inbox, as plain words (`Ok` value, errno or 0, NVMe status):
    /// read back with the widths they were written with, they never stall
    /// the load on the store.
    value: Cell<u64>,
    errno: Cell<i32>,
    nvme: Cell<Option<crate::error::NvmeStatus>>,
    /// Bytes a successful completion reports.
    bytes: Cell<u64>,
    /// Attach the NVMe status to failures (NVMe-backed bdev).
    nvme_backed: Cell<bool>,
    /// Lane completions SPDK had reported when this one came.
    pub(crate) lane_before: Cell<u64>,
}

impl SlotCtx {
    #[inline]
    fn set_result(&self, result: Result<u64, IoError>) {
        match result {
            Ok(value) => {
                self.value.set(value);
                self.errno.set(0);
            }
            Err(e) => {
                // 0 means success here; a failure always carries an errno.
                self.errno
                    .set(if e.errno == 0 { libc::EIO } else { e.errno });
                self.nvme.set(e.nvme);
            }
        }
    }

    /// What the callback recorded.
    #[inline]
    pub(crate) fn result(&self) -> Result<u64, IoError> {
        match self.errno.get() {
            0 => Ok(self.value.get()),
            errno => Err(IoError {
                errno,
                nvme: self.nvme.get(),
            }),
        }
    }
}

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

/// The scatter list of the slot whose context is `cb_arg`.
///
/// # Safety
/// `cb_arg` is the `SlotCtx` an NVMe vectored command was submitted with,
/// on the ring's thread, while that command is in flight.
unsafe fn slot_sgl<'a>(cb_arg: *mut c_void) -> Option<&'a mut SlotSgl> {
    // SAFETY: per the contract, cb_arg is a live SlotCtx whose inbox points
    // at the driver's scatter lists (set at creation, stable while the ring
    // lives); the slot's list belongs to its in-flight command alone, and
    // SPDK calls these callbacks one at a time on the ring's thread.
    unsafe {
        let slot = &*(cb_arg as *const SlotCtx);
        let table = (*slot.inbox).sgl_table.get();
        if table.is_null() {
            return None;
        }
        Some(&mut *(*table.add(slot.index as usize)).get())
    }
}

/// SPDK restarts the scatter list of a vectored NVMe command at `offset`.
unsafe extern "C" fn nvme_reset_sgl(cb_arg: *mut c_void, offset: u32) {
    // SAFETY: SPDK passes back the cb_arg the command was submitted with.
    if let Some(sgl) = unsafe { slot_sgl(cb_arg) } {
        sgl.reset(offset as usize);
    }
}

/// SPDK asks for the next segment of a vectored NVMe command. Cannot panic.
unsafe extern "C" fn nvme_next_sge(
    cb_arg: *mut c_void,
    address: *mut *mut c_void,
    length: *mut u32,
) -> libc::c_int {
    // SAFETY: SPDK passes back the cb_arg the command was submitted with,
    // and valid out-pointers.
    unsafe {
        match slot_sgl(cb_arg).and_then(SlotSgl::next_segment) {
            Some((a, l)) => {
                *address = a;
                *length = l;
                0
            }
            None => {
                *address = std::ptr::null_mut();
                *length = 0;
                -libc::EINVAL
            }
        }
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

/// The I/O queue pair a ring owns on an NVMe namespace. It holds the
/// controller, so the controller stays attached until the qpair is freed.
pub(crate) struct NvmeQueue {
    qpair: NonNull<sys::spdk_nvme_qpair>,
    ns: NonNull<sys::spdk_nvme_ns>,
    nsid: u32,
    /// `process_completions` reported the qpair failed (transport loss).
    pub(crate) failed: bool,
    /// A submission answered ENOMEM; unblock when requests come back.
    nomem: bool,
    ctrlr: NvmeController,
}

impl Drop for NvmeQueue {
    fn drop(&mut self) {
        // SAFETY: dropped only when nothing is in flight on the qpair (the
        // ring quiesces first), on the ring's thread; freed once.
        unsafe { sys::spdk_nvme_ctrlr_free_io_qpair(self.qpair.as_ptr()) };
    }
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

/// A registered bdev or NVMe namespace, the io_uring "fixed file" of this ring.
pub(crate) struct TargetState {
    /// For NVMe namespace targets (no channel, descriptor or bdev).
    pub(crate) nvme: Option<NvmeQueue>,
    /// `None` once released (unregistered, or removed and drained).
    channel: Option<IoChannel>,
    desc: Option<BdevDesc>,
    bdev: *mut sys::spdk_bdev,
    block_size: u32,
    num_blocks: u64,
    io_types: IoTypes,
    writable: bool,
    nvme_backed: bool,
    pub(crate) removed: bool,
    pub(crate) unregistered: bool,
    pub(crate) in_flight: u32,
    wait: Pinned<WaitCtx>,
    /// For blobstore targets (no channel, descriptor or bdev).
    pub(crate) blob: Option<blob::BlobTarget>,
}

impl TargetState {
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

unsafe extern "C" fn io_done(bdev_io: *mut sys::spdk_bdev_io, success: bool, ctx: *mut c_void) {
    // SAFETY: ctx is a SlotCtx of a live ring (the ring quiesces before
    // freeing slots); the bdev_io is ours to inspect and free once.
    let slot = unsafe { &*(ctx as *const SlotCtx) };
    let inbox = unsafe { &*slot.inbox };
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let result = if success {
            Ok(slot.bytes.get())
        } else {
            // SAFETY: bdev_io is valid until freed below.
            Err(unsafe { failure_of(bdev_io, slot.nvme_backed.get()) })
        };
        inbox.finished(slot, result);
    }));
    if outcome.is_err() {
        inbox.callback_panicked.set(true);
    }
    // SAFETY: every completed bdev_io must be freed exactly once.
    unsafe { sys::spdk_bdev_free_io(bdev_io) };
}

/// Maps SPDK's status of a failed bdev_io to an errno (and NVMe status).
unsafe fn failure_of(bdev_io: *mut sys::spdk_bdev_io, nvme_backed: bool) -> IoError {
    let (mut cdw0, mut sct, mut sc) = (0u32, 0i32, 0i32);
    let mut aio = 0i32;
    // SAFETY: bdev_io is a completed, not yet freed I/O (caller's contract).
    unsafe {
        sys::spdk_bdev_io_get_nvme_status(bdev_io, &mut cdw0, &mut sct, &mut sc);
        sys::spdk_bdev_io_get_aio_status(bdev_io, &mut aio);
    }
    let errno = match errno_for_nvme(sct as u32, sc as u32) {
        libc::EIO if aio < 0 => -aio,
        errno => errno,
    };
    let nvme = nvme_backed.then_some(NvmeStatus {
        sct: sct as u8,
        sc: sc as u8,
        cdw0,
        dnr: false,
        more: false,
    });
    IoError { errno, nvme }
}

unsafe extern "C" fn io_wait_done(ctx: *mut c_void) {
    // SAFETY: ctx is the boxed WaitCtx registered in start(); targets (and
    // their WaitCtx) are never freed while a wait is queued.
    let wait = unsafe { &*(ctx as *const WaitCtx) };
    wait.waiting.set(false);
    // SAFETY: the inbox outlives every callback.
    let inbox = unsafe { &*wait.inbox };
    inbox.post(Event::Unblock {
        target: wait.target,
    });
}

unsafe extern "C" fn abort_done(
    bdev_io: *mut sys::spdk_bdev_io,
    _success: bool,
    _ctx: *mut c_void,
) {
    // SAFETY: the abort's own bdev_io, freed once. Its outcome needs no
    // report: the aborted entry completes through its own callback.
    unsafe { sys::spdk_bdev_free_io(bdev_io) };
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

/// Blocks of an I/O over `buf_len` bytes: the explicit count, which the
/// buffer must hold, or the whole buffer, which must be whole blocks.
fn blocks_for(buf_len: usize, num_blocks: u32, block_size: u32) -> Result<u64, i32> {
    let bs = u64::from(block_size);
    let len = buf_len as u64;
    match num_blocks {
        0 => Err(libc::EINVAL),
        WHOLE_BUFFER if len % bs != 0 => Err(libc::EINVAL),
        WHOLE_BUFFER => Ok(len / bs),
        n if u64::from(n) * bs > len => Err(libc::EINVAL),
        n => Ok(u64::from(n)),
    }
}

impl SpdkDriver {
    pub(crate) fn new(
        ring_id: u32,
        slots: usize,
        inbox: *const Inbox,
        lane_slots: usize,
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
        let lane = lane::Lane::new(lane_slots);
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

    pub(crate) fn add_target(&mut self, desc: &BdevDesc, channel: IoChannel) -> u32 {
        let bdev = desc.bdev();
        let index = self.targets.len() as u32;
        // SAFETY: an open descriptor has a live bdev.
        let bdev_ptr = unsafe { sys::spdk_bdev_desc_get_bdev(desc.as_ptr()) };
        self.targets.push(TargetState {
            nvme: None,
            channel: Some(channel),
            desc: Some(desc.clone()),
            bdev: bdev_ptr,
            block_size: bdev.block_size(),
            num_blocks: bdev.num_blocks(),
            io_types: bdev.io_types(),
            writable: desc.mode() == OpenMode::ReadWrite,
            nvme_backed: bdev.supports(IoTypes::NVME_IO),
            removed: false,
            unregistered: false,
            in_flight: 0,
            wait: WaitCtx::new(self.inbox, index),
            blob: None,
        });
        index
    }

    /// Registers namespace `nsid` of `ctrlr` with a new I/O qpair.
    pub(crate) fn add_nvme_target(
        &mut self,
        ctrlr: &NvmeController,
        nsid: u32,
        io_queue_size: Option<u32>,
    ) -> crate::error::Result<u32> {
        use crate::error::Error;
        let ns = ctrlr
            .namespace(nsid)
            .ok_or_else(|| Error::InvalidArgument(format!("namespace {nsid} is not active")))?;
        let (block_size, num_blocks) = (ns.sector_size(), ns.num_sectors());
        let ns = NonNull::new(ns.as_ptr()).expect("an active namespace");
        let mut opts = sys::spdk_nvme_io_qpair_opts::default();
        // SAFETY: opts is writable and its true size is passed; the
        // controller is attached (we hold it).
        unsafe {
            sys::spdk_nvme_ctrlr_get_default_io_qpair_opts(
                ctrlr.as_ptr(),
                &mut opts,
                std::mem::size_of_val(&opts),
            );
        }
        if let Some(n) = io_queue_size {
            // Both the queue and the requests SPDK preallocates for it:
            // beyond n outstanding commands, submission answers ENOMEM.
            opts.io_queue_size = n;
            opts.io_queue_requests = n;
        }
        let qpair = alloc_io_qpair(ctrlr, &opts)?;
        let index = self.targets.len() as u32;
        self.nvme_targets += 1;
        self.targets.push(TargetState {
            nvme: Some(NvmeQueue {
                qpair,
                ns,
                nsid,
                failed: false,
                nomem: false,
                ctrlr: ctrlr.clone(),
            }),
            channel: None,
            desc: None,
            bdev: std::ptr::null_mut(),
            block_size,
            num_blocks,
            io_types: IoTypes::READ
                | IoTypes::WRITE
                | IoTypes::FLUSH
                | IoTypes::WRITE_ZEROES
                | IoTypes::UNMAP
                | IoTypes::COMPARE
                | IoTypes::ABORT
                | IoTypes::NVME_ADMIN
                | IoTypes::NVME_IO,
            writable: true,
            nvme_backed: true,
            removed: false,
            unregistered: false,
            in_flight: 0,
            wait: WaitCtx::new(self.inbox, index),
            blob: None,
        });
        Ok(index)
    }

    /// Reconnects a failed NVMe target's qpair, resetting its controller
    /// first if the controller failed too.
    pub(crate) fn reconnect_nvme(&mut self, index: u32) -> crate::error::Result<()> {
        use crate::error::{Errno, Error};
        let q = self
            .targets
            .get_mut(index as usize)
            .and_then(|t| t.nvme.as_mut())
            .ok_or(Error::Errno(Errno::EBADF))?;
        // SAFETY: controller and qpair are this target's, on the ring's
        // thread; both calls are synchronous.
        unsafe {
            let ctrlr = q.ctrlr.as_ptr();
            let mut rc = sys::spdk_nvme_ctrlr_reconnect_io_qpair(q.qpair.as_ptr());
            if rc != 0 {
                // The controller's association is gone too (a restarted
                // target does not know its id): reset the controller, which
                // reconnects its admin queue, then the qpair.
                rc = sys::spdk_nvme_ctrlr_reset(ctrlr);
                if rc == 0 {
                    rc = sys::spdk_nvme_ctrlr_reconnect_io_qpair(q.qpair.as_ptr());
                }
            }
            if rc != 0 && rc != -libc::EISCONN {
                return Err(Error::from_rc(rc));
            }
        }
        q.failed = false;
        Ok(())
    }

    /// Processes completions on every NVMe qpair, and the admin queue (with
    /// keep-alive) of their controllers at most every `ADMIN_POLL_TICKS`.
    /// Processes the NVMe qpairs (and admin queues when due), if any.
    #[inline]
    pub(crate) fn poll_nvme(&mut self) {
        if self.nvme_targets != 0 {
            self.poll_nvme_queues();
        }
    }

    #[inline(never)]
    fn poll_nvme_queues(&mut self) {
        // SAFETY: the inbox outlives the driver's use of it.
        let inbox = unsafe { &*self.inbox };
        let mut admin_due = None;
        for (index, t) in self.targets.iter_mut().enumerate() {
            let Some(q) = t.nvme.as_mut() else { continue };
            // Failed qpairs are still processed: SPDK completes their
            // outstanding requests (aborted) from here.
            // SAFETY: the qpair is ours, used from the ring's thread.
            let rc = unsafe { sys::spdk_nvme_qpair_process_completions(q.qpair.as_ptr(), 0) };
            if rc < 0 {
                q.failed = true;
            }
            if q.nomem && (rc > 0 || t.in_flight == 0) {
                q.nomem = false;
                inbox.post(Event::Unblock {
                    target: index as u32,
                });
            }
            let now = *admin_due.get_or_insert_with(crate::clock::ticks);
            if self.admin_in_flight > 0 || now >= self.next_admin_poll {
                // Also keep-alive. Errors show on the qpair.
                let _ = q.ctrlr.process_admin_completions();
            }
        }
        if let Some(now) = admin_due {
            if now >= self.next_admin_poll {
                self.next_admin_poll = now + crate::clock::ticks_hz() / 100;
            }
        }
        if self.admin_in_flight > 0 {
            // Ours may have been completed by another thread, too.
            // SAFETY: as above.
            self.admin_in_flight -= unsafe { &*self.inbox }.collect_admin();
        }
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
            if t.unregistered && t.in_flight == 0 {
                // NVMe qpair, or blob channel (and the store reference).
                t.nvme = None;
                t.blob = None;
            }
            pending |= t.unregistered && (t.nvme.is_some() || t.blob.is_some());
            if t.channel.is_none() {
                continue;
            }
            if !t.removed && t.desc.as_ref().is_some_and(BdevDesc::is_removed) {
                t.removed = true;
            }
            if !(t.removed || t.unregistered) {
                continue;
            }
            if t.is_idle() && !running_in_lane(&self.lane) {
                t.channel = None;
                t.desc = None;
            } else {
                pending = true;
            }
            // The lane fails its new entries as the core does from now on.
            self.sync_lane_target(index as u32);
        }
        self.review_targets = pending;
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
        let Some(channel) = &t.channel else { return };
        let wait = &mut *t.wait;
        wait.entry.bdev = t.bdev;
        wait.entry.cb_fn = Some(io_wait_done);
        wait.entry.cb_arg = wait as *mut WaitCtx as *mut c_void;
        wait.waiting.set(true);
        // SAFETY: the entry lives in a Box kept until its callback ran; the
        // bdev and channel are this target's, on this thread.
        let rc = unsafe { sys::spdk_bdev_queue_io_wait(t.bdev, channel.as_ptr(), &mut wait.entry) };
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
        if t.blob.is_some() {
            return match &mut op.kind {
                IoKind::Blob(blob_op) => self.start_blob(token, index, blob_op),
                _ => failed(libc::EINVAL),
            };
        }
        if let IoKind::Blob(_) = op.kind {
            return failed(libc::EINVAL);
        }
        if t.nvme.is_some() {
            return self.start_nvme(token, index, op);
        }
        if t.removed || t.channel.is_none() {
            return failed(libc::ENODEV);
        }
        let (Some(desc), Some(channel)) = (&t.desc, &t.channel) else {
            return failed(libc::ENODEV);
        };
        let (desc, ch) = (desc.as_ptr(), channel.as_ptr());
        let slot = &self.slots[token.index() as usize];
        let ctx = slot as *const SlotCtx as *mut c_void;
        let bs = t.block_size;
        let in_range =
            |offset: u64, n: u64| offset.checked_add(n).is_some_and(|end| end <= t.num_blocks);
        let needs = |io: IoTypes| t.io_types.contains(io);
        if let IoKind::Write { .. }
        | IoKind::Writev { .. }
        | IoKind::WriteZeroes { .. }
        | IoKind::Unmap { .. }
        | IoKind::Raw { write: true, .. } = op.kind
        {
            if !t.writable {
                return failed(libc::EBADF);
            }
        }
        let is_write = matches!(
            op.kind,
            IoKind::Write { .. } | IoKind::Writev { .. } | IoKind::Raw { write: true, .. }
        );
        let range_op: (IoTypes, RangeFn) = match op.kind {
            IoKind::WriteZeroes { .. } => {
                (IoTypes::WRITE_ZEROES, sys::spdk_bdev_write_zeroes_blocks)
            }
            IoKind::Unmap { .. } => (IoTypes::UNMAP, sys::spdk_bdev_unmap_blocks),
            _ => (IoTypes::FLUSH, sys::spdk_bdev_flush_blocks),
        };
        let rw_io = if is_write {
            IoTypes::WRITE
        } else {
            IoTypes::READ
        };
        // SAFETY (for every call below): desc and ch are this target's open
        // descriptor and channel on this thread; buffers are owned by `op`,
        // which the core keeps in its slot until completion, so their memory
        // stays valid and unaliased while SPDK uses it; lengths were checked
        // against the buffers; ctx is this entry's stable slot context.
        let rc = unsafe {
            match &mut op.kind {
                IoKind::Read {
                    buf,
                    offset_blocks,
                    num_blocks,
                }
                | IoKind::Write {
                    buf,
                    offset_blocks,
                    num_blocks,
                } => {
                    if !needs(rw_io) {
                        return failed(libc::ENOTSUP);
                    }
                    let n = match blocks_for(buf.len(), *num_blocks, bs) {
                        Ok(n) => n,
                        Err(e) => return failed(e),
                    };
                    if !in_range(*offset_blocks, n) {
                        return failed(libc::EINVAL);
                    }
                    self.arm(slot, token, index, n * u64::from(bs));
                    let f = if is_write {
                        sys::spdk_bdev_write_blocks
                    } else {
                        sys::spdk_bdev_read_blocks
                    };
                    f(
                        desc,
                        ch,
                        buf.as_mut_ptr().cast(),
                        *offset_blocks,
                        n,
                        Some(io_done),
                        ctx,
                    )
                }
                IoKind::Readv {
                    bufs,
                    offset_blocks,
                    num_blocks,
                }
                | IoKind::Writev {
                    bufs,
                    offset_blocks,
                    num_blocks,
                } => {
                    if !needs(rw_io) {
                        return failed(libc::ENOTSUP);
                    }
                    let n = match self.load_sgl(token, bufs, *num_blocks, bs) {
                        Ok(n) => n,
                        Err(e) => return failed(e),
                    };
                    if !in_range(*offset_blocks, n) {
                        return failed(libc::EINVAL);
                    }
                    let iovs = &mut (*self.iovecs[token.index() as usize].get()).iovs;
                    self.arm(slot, token, index, n * u64::from(bs));
                    let f = if is_write {
                        sys::spdk_bdev_writev_blocks
                    } else {
                        sys::spdk_bdev_readv_blocks
                    };
                    f(
                        desc,
                        ch,
                        iovs.as_mut_ptr().cast(),
                        bufs.len() as i32,
                        *offset_blocks,
                        n,
                        Some(io_done),
                        ctx,
                    )
                }
                IoKind::WriteZeroes {
                    offset_blocks,
                    num_blocks,
                }
                | IoKind::Unmap {
                    offset_blocks,
                    num_blocks,
                }
                | IoKind::Flush {
                    offset_blocks,
                    num_blocks,
                } => {
                    let (io, f) = range_op;
                    if !needs(io) {
                        return failed(libc::ENOTSUP);
                    }
                    if *num_blocks == 0 || !in_range(*offset_blocks, *num_blocks) {
                        return failed(libc::EINVAL);
                    }
                    self.arm(slot, token, index, 0);
                    f(desc, ch, *offset_blocks, *num_blocks, Some(io_done), ctx)
                }
                IoKind::Compare {
                    buf,
                    offset_blocks,
                    num_blocks,
                } => {
                    if !needs(IoTypes::COMPARE) {
                        return failed(libc::ENOTSUP);
                    }
                    let n = match blocks_for(buf.len(), *num_blocks, bs) {
                        Ok(n) => n,
                        Err(e) => return failed(e),
                    };
                    if !in_range(*offset_blocks, n) {
                        return failed(libc::EINVAL);
                    }
                    self.arm(slot, token, index, n * u64::from(bs));
                    sys::spdk_bdev_compare_blocks(
                        desc,
                        ch,
                        buf.as_mut_ptr().cast(),
                        *offset_blocks,
                        n,
                        Some(io_done),
                        ctx,
                    )
                }
                IoKind::Reset => {
                    if !needs(IoTypes::RESET) {
                        return failed(libc::ENOTSUP);
                    }
                    self.arm(slot, token, index, 0);
                    sys::spdk_bdev_reset(desc, ch, Some(io_done), ctx)
                }
                IoKind::NvmePassthru { cmd, buf } => {
                    if !needs(IoTypes::NVME_IO) {
                        return failed(libc::ENOTSUP);
                    }
                    let raw = to_nvme_cmd(cmd);
                    let (ptr, len) = raw_buffer(buf);
                    self.arm(slot, token, index, len as u64);
                    sys::spdk_bdev_nvme_io_passthru(desc, ch, &raw, ptr, len, Some(io_done), ctx)
                }
                IoKind::NvmeAdmin { cmd, buf } => {
                    if !needs(IoTypes::NVME_ADMIN) {
                        return failed(libc::ENOTSUP);
                    }
                    let raw = to_nvme_cmd(cmd);
                    let (ptr, len) = raw_buffer(buf);
                    self.arm(slot, token, index, len as u64);
                    sys::spdk_bdev_nvme_admin_passthru(desc, ch, &raw, ptr, len, Some(io_done), ctx)
                }
                IoKind::Blob(_) => return failed(libc::EINVAL),
                IoKind::Raw {
                    ptr,
                    len,
                    offset_blocks,
                    ..
                } => {
                    if !needs(rw_io) {
                        return failed(libc::ENOTSUP);
                    }
                    if ptr.is_null() {
                        return failed(libc::EFAULT);
                    }
                    let n = match blocks_for(*len, WHOLE_BUFFER, bs) {
                        Ok(n) if n > 0 => n,
                        _ => return failed(libc::EINVAL),
                    };
                    if !in_range(*offset_blocks, n) {
                        return failed(libc::EINVAL);
                    }
                    self.arm(slot, token, index, *len as u64);
                    let f = if is_write {
                        sys::spdk_bdev_write_blocks
                    } else {
                        sys::spdk_bdev_read_blocks
                    };
                    f(desc, ch, ptr.cast(), *offset_blocks, n, Some(io_done), ctx)
                }
            }
        };
        match rc {
            0 => {
                self.targets[index as usize].in_flight += 1;
                StartOutcome::Started
            }
            rc if rc == -libc::ENOMEM => {
                self.enomem_retries += 1;
                self.wait_for_memory(index);
                StartOutcome::NoMem
            }
            rc => failed(-rc),
        }
    }

    fn cancel_outside(&mut self, user_data: u64) -> Option<Result<(), ()>> {
        self.lane_cancel(user_data)
    }

    fn abort(&mut self, token: Token, target: TargetId, _op: &mut IoOp) -> Result<(), ()> {
        let t = self.targets.get(target.0 as usize).ok_or(())?;
        if let Some(q) = &t.nvme {
            let slot = &self.slots[token.index() as usize] as *const SlotCtx as *mut c_void;
            // SAFETY: controller and qpair are this target's; `slot` is the
            // exact callback argument the command was submitted with, which
            // is how SPDK finds it. The abort's own completion needs no report.
            let rc = unsafe {
                sys::spdk_nvme_ctrlr_cmd_abort_ext(
                    q.ctrlr.as_ptr(),
                    q.qpair.as_ptr(),
                    slot,
                    Some(nvme_abort_done),
                    std::ptr::null_mut(),
                )
            };
            return if rc == 0 { Ok(()) } else { Err(()) };
        }
        let slot = &self.slots[token.index() as usize] as *const SlotCtx as *mut c_void;
        raw_abort(t, slot)
    }
}

/// Asks SPDK to abort the bdev I/O of `target` submitted with callback
/// argument `cb_arg` (which is how SPDK finds it). `Err(())`: the bdev
/// cannot abort, or the target has no channel any more.
fn raw_abort(t: &TargetState, cb_arg: *mut c_void) -> Result<(), ()> {
    if !t.io_types.contains(IoTypes::ABORT) {
        return Err(());
    }
    let (Some(desc), Some(channel)) = (&t.desc, &t.channel) else {
        return Err(());
    };
    // SAFETY: desc/channel are open on this thread; cb_arg is only compared
    // by SPDK, never dereferenced.
    let rc = unsafe {
        sys::spdk_bdev_abort(
            desc.as_ptr(),
            channel.as_ptr(),
            cb_arg,
            Some(abort_done),
            std::ptr::null_mut(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(())
    }
}

unsafe extern "C" fn nvme_done(ctx: *mut c_void, cpl: *const sys::spdk_nvme_cpl) {
    // SAFETY: ctx is a SlotCtx of a live ring (the ring quiesces before
    // freeing slots); cpl is valid for the duration of the callback.
    let (slot, cpl) = unsafe { (&*(ctx as *const SlotCtx), &*cpl) };
    // SAFETY: as above.
    let inbox = unsafe { &*slot.inbox };
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let result = if sys::spdk_nvme_cpl_is_error(cpl) {
            Err(nvme_failure(cpl))
        } else {
            Ok(slot.bytes.get())
        };
        inbox.finished(slot, result);
    }));
    if outcome.is_err() {
        inbox.callback_panicked.set(true);
    }
}

/// Admin commands' callback: may run on any thread (see [`AdminMailbox`]).
unsafe extern "C" fn nvme_admin_done(ctx: *mut c_void, cpl: *const sys::spdk_nvme_cpl) {
    // SAFETY: ctx is a SlotCtx of a live ring (the ring waits for its admin
    // commands before freeing slots); cpl is valid during the callback. The
    // slot's fields were written before submission and are only read while
    // the command is in flight; SPDK's controller lock, taken by submission
    // and by admin processing, orders those writes before these reads.
    let (slot, cpl) = unsafe { (&*(ctx as *const SlotCtx), &*cpl) };
    // SAFETY: only the Sync mailbox of the inbox is touched from here.
    let mailbox = unsafe { &*std::ptr::addr_of!((*slot.inbox).admin) };
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let result = if sys::spdk_nvme_cpl_is_error(cpl) {
            Err(nvme_failure(cpl))
        } else {
            Ok(slot.bytes.get())
        };
        let event = Event::Done {
            token: slot.token.get(),
            target: slot.target.get(),
            result,
            // Set when the ring's thread collects it.
            lane_before: 0,
        };
        mailbox
            .done
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(event);
    }));
    if outcome.is_err() {
        mailbox
            .callback_panicked
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

unsafe extern "C" fn nvme_abort_done(_ctx: *mut c_void, _cpl: *const sys::spdk_nvme_cpl) {
    // The aborted command completes through its own callback.
}

/// The errno an NVMe status stands for.
fn errno_for_nvme(sct: u32, sc: u32) -> i32 {
    match (sct, sc) {
        (sys::SPDK_NVME_SCT_GENERIC, sys::SPDK_NVME_SC_ABORTED_BY_REQUEST)
        | (sys::SPDK_NVME_SCT_GENERIC, sys::SPDK_NVME_SC_ABORTED_SQ_DELETION) => libc::ECANCELED,
        (sys::SPDK_NVME_SCT_MEDIA_ERROR, sys::SPDK_NVME_SC_COMPARE_FAILURE) => libc::EILSEQ,
        _ => libc::EIO,
    }
}

/// A failed NVMe completion, with every status field.
fn nvme_failure(cpl: &sys::spdk_nvme_cpl) -> IoError {
    let (sct, sc) = sys::spdk_nvme_cpl_status(cpl);
    // SAFETY: plain 16-bit view of the status word.
    let raw = unsafe { cpl.__bindgen_anon_1.status_raw };
    IoError {
        errno: errno_for_nvme(u32::from(sct), u32::from(sc)),
        nvme: Some(NvmeStatus {
            sct: sct as u8,
            sc: sc as u8,
            cdw0: cpl.cdw0,
            more: raw & (1 << 14) != 0,
            dnr: raw & (1 << 15) != 0,
        }),
    }
}

impl SpdkDriver {
    /// Starts an entry on an NVMe namespace target.
    fn start_nvme(&mut self, token: Token, index: u32, op: &mut IoOp) -> StartOutcome {
        let t = &self.targets[index as usize];
        let q = t.nvme.as_ref().expect("checked by the caller");
        if q.failed {
            return failed(libc::ENXIO);
        }
        let (ns, qp, ctrlr) = (q.ns.as_ptr(), q.qpair.as_ptr(), q.ctrlr.as_ptr());
        let slot = &self.slots[token.index() as usize];
        let ctx = slot as *const SlotCtx as *mut c_void;
        let bs = t.block_size;
        let capacity = t.num_blocks;
        // NVMe counts blocks in 16 bits (zero-based) per command.
        let valid = |offset: u64, n: u64| {
            (1..=65536).contains(&n) && offset.checked_add(n).is_some_and(|end| end <= capacity)
        };
        let nsid = q.nsid;
        let mut admin = false;
        let vectored_command = match op.kind {
            IoKind::Writev { .. } => sys::spdk_nvme_ns_cmd_writev,
            _ => sys::spdk_nvme_ns_cmd_readv,
        };
        let rw_command = match op.kind {
            IoKind::Read { .. } => sys::spdk_nvme_ns_cmd_read,
            IoKind::Write { .. } => sys::spdk_nvme_ns_cmd_write,
            _ => sys::spdk_nvme_ns_cmd_compare,
        };
        // SAFETY (for every call below): ns, qpair and controller are this
        // target's, used from the ring's thread; buffers are owned by `op`,
        // which the core keeps until completion, and their lengths were
        // checked; ctx is this entry's stable slot context.
        let rc = unsafe {
            match &mut op.kind {
                IoKind::Read {
                    buf,
                    offset_blocks,
                    num_blocks,
                }
                | IoKind::Write {
                    buf,
                    offset_blocks,
                    num_blocks,
                }
                | IoKind::Compare {
                    buf,
                    offset_blocks,
                    num_blocks,
                } => {
                    let n = match blocks_for(buf.len(), *num_blocks, bs) {
                        Ok(n) if valid(*offset_blocks, n) => n,
                        _ => return failed(libc::EINVAL),
                    };
                    self.arm(slot, token, index, n * u64::from(bs));
                    rw_command(
                        ns,
                        qp,
                        buf.as_mut_ptr().cast(),
                        *offset_blocks,
                        n as u32,
                        Some(nvme_done),
                        ctx,
                        0,
                    )
                }
                IoKind::WriteZeroes {
                    offset_blocks,
                    num_blocks,
                } => {
                    if !valid(*offset_blocks, *num_blocks) {
                        return failed(libc::EINVAL);
                    }
                    self.arm(slot, token, index, 0);
                    sys::spdk_nvme_ns_cmd_write_zeroes(
                        ns,
                        qp,
                        *offset_blocks,
                        *num_blocks as u32,
                        Some(nvme_done),
                        ctx,
                        0,
                    )
                }
                IoKind::Unmap {
                    offset_blocks,
                    num_blocks,
                } => {
                    // Deallocate ranges are 32-bit counts; SPDK copies the range.
                    let end_ok = offset_blocks
                        .checked_add(*num_blocks)
                        .is_some_and(|end| end <= capacity);
                    if *num_blocks == 0 || *num_blocks > u64::from(u32::MAX) || !end_ok {
                        return failed(libc::EINVAL);
                    }
                    let range = sys::spdk_nvme_dsm_range {
                        length: *num_blocks as u32,
                        starting_lba: *offset_blocks,
                        ..Default::default()
                    };
                    self.arm(slot, token, index, 0);
                    sys::spdk_nvme_ns_cmd_dataset_management(
                        ns,
                        qp,
                        sys::SPDK_NVME_DSM_ATTR_DEALLOCATE,
                        &range,
                        1,
                        Some(nvme_done),
                        ctx,
                    )
                }
                IoKind::Flush { .. } => {
                    self.arm(slot, token, index, 0);
                    sys::spdk_nvme_ns_cmd_flush(ns, qp, Some(nvme_done), ctx)
                }
                IoKind::NvmePassthru { cmd, buf } => {
                    let mut raw = to_nvme_cmd(cmd);
                    raw.nsid = nsid;
                    let (ptr, len) = raw_buffer(buf);
                    let Ok(len32) = u32::try_from(len) else {
                        return failed(libc::EINVAL);
                    };
                    self.arm(slot, token, index, len as u64);
                    sys::spdk_nvme_ctrlr_cmd_io_raw(
                        ctrlr,
                        qp,
                        &mut raw,
                        ptr,
                        len32,
                        Some(nvme_done),
                        ctx,
                    )
                }
                IoKind::Raw {
                    write,
                    ptr,
                    len,
                    offset_blocks,
                } => {
                    if ptr.is_null() {
                        return failed(libc::EFAULT);
                    }
                    let n = match blocks_for(*len, WHOLE_BUFFER, bs) {
                        Ok(n) if valid(*offset_blocks, n) => n,
                        _ => return failed(libc::EINVAL),
                    };
                    let f = if *write {
                        sys::spdk_nvme_ns_cmd_write
                    } else {
                        sys::spdk_nvme_ns_cmd_read
                    };
                    self.arm(slot, token, index, *len as u64);
                    f(
                        ns,
                        qp,
                        ptr.cast(),
                        *offset_blocks,
                        n as u32,
                        Some(nvme_done),
                        ctx,
                        0,
                    )
                }
                IoKind::NvmeAdmin { cmd, buf } => {
                    let mut raw = to_nvme_cmd(cmd);
                    let (ptr, len) = raw_buffer(buf);
                    let Ok(len32) = u32::try_from(len) else {
                        return failed(libc::EINVAL);
                    };
                    self.arm(slot, token, index, len as u64);
                    admin = true;
                    sys::spdk_nvme_ctrlr_cmd_admin_raw(
                        ctrlr,
                        &mut raw,
                        ptr,
                        len32,
                        Some(nvme_admin_done),
                        ctx,
                    )
                }
                IoKind::Readv {
                    bufs,
                    offset_blocks,
                    num_blocks,
                }
                | IoKind::Writev {
                    bufs,
                    offset_blocks,
                    num_blocks,
                } => {
                    // The slot's own list, walked by SPDK through the SGL
                    // callbacks while this command is in flight.
                    let n = match self.load_sgl(token, bufs, *num_blocks, bs) {
                        Ok(n) if valid(*offset_blocks, n) => n,
                        _ => return failed(libc::EINVAL),
                    };
                    self.arm(slot, token, index, n * u64::from(bs));
                    vectored_command(
                        ns,
                        qp,
                        *offset_blocks,
                        n as u32,
                        Some(nvme_done),
                        ctx,
                        0,
                        Some(nvme_reset_sgl),
                        Some(nvme_next_sge),
                    )
                }
                IoKind::Reset => return failed(libc::ENOTSUP),
                IoKind::Blob(_) => return failed(libc::EINVAL),
            }
        };
        match rc {
            0 => {
                let t = &mut self.targets[index as usize];
                t.in_flight += 1;
                if admin {
                    self.admin_in_flight += 1;
                }
                StartOutcome::Started
            }
            rc if rc == -libc::ENOMEM => {
                self.enomem_retries += 1;
                if let Some(q) = self.targets[index as usize].nvme.as_mut() {
                    q.nomem = true;
                }
                StartOutcome::NoMem
            }
            rc => failed(-rc),
        }
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

    fn arm(&self, slot: &SlotCtx, token: Token, target: u32, bytes: u64) {
        slot.token.set(token);
        slot.target.set(target);
        slot.bytes.set(bytes);
        slot.nvme_backed
            .set(self.targets[target as usize].nvme_backed);
    }
}

fn to_nvme_cmd(cmd: &NvmeCommand) -> sys::spdk_nvme_cmd {
    let mut raw = sys::spdk_nvme_cmd::default();
    raw.set_opc(u16::from(cmd.opcode));
    raw.nsid = cmd.nsid;
    raw.__bindgen_anon_1.cdw10 = cmd.cdw10;
    raw.__bindgen_anon_2.cdw11 = cmd.cdw11;
    raw.__bindgen_anon_3.cdw12 = cmd.cdw12;
    raw.__bindgen_anon_4.cdw13 = cmd.cdw13;
    raw.cdw14 = cmd.cdw14;
    raw.cdw15 = cmd.cdw15;
    raw
}

#[cfg(test)]
mod tests {
    use super::{blocks_for, SlotSgl, MAX_IOVECS, WHOLE_BUFFER};

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

    #[test]
    fn block_counts_are_validated_against_buffers() {
        assert_eq!(blocks_for(4096, WHOLE_BUFFER, 512), Ok(8));
        assert_eq!(blocks_for(4000, WHOLE_BUFFER, 512), Err(libc::EINVAL));
        assert_eq!(blocks_for(4096, 4, 512), Ok(4));
        assert_eq!(blocks_for(4096, 9, 512), Err(libc::EINVAL));
        assert_eq!(blocks_for(4096, 0, 512), Err(libc::EINVAL));
        assert_eq!(
            blocks_for(4096, super::super::op::encode_num_blocks(u64::MAX), 512),
            Err(libc::EINVAL)
        );
    }
}
#[cfg(test)]
mod nvme_cmd_layout {
    #[test]
    fn dwords_land_at_their_nvme_offsets() {
        let cmd = super::NvmeCommand {
            opcode: 0x01,
            nsid: 7,
            cdw10: 10,
            cdw11: 11,
            cdw12: 12,
            cdw13: 13,
            cdw14: 14,
            cdw15: 15,
        };
        let raw = super::to_nvme_cmd(&cmd);
        assert_eq!(std::mem::size_of_val(&raw), 64);
        // SAFETY: spdk_nvme_cmd is 64 bytes of plain data.
        let bytes: [u8; 64] = unsafe { std::mem::transmute(raw) };
        let dword = |i: usize| u32::from_le_bytes(bytes[i * 4..i * 4 + 4].try_into().unwrap());
        assert_eq!(bytes[0], 0x01);
        assert_eq!(dword(1), 7);
        assert_eq!(
            (10..16).map(dword).collect::<Vec<_>>(),
            [10, 11, 12, 13, 14, 15]
        );
    }
}

/// Allocates and connects an I/O qpair, riding out a fabrics target that
/// still holds a queue id the host has freed.
///
/// The host hands out the lowest free queue id, but a target tears a
/// disconnected qpair down asynchronously (seconds, if it was aborting a
/// command) and until then rejects a connect reusing its id ("duplicate
/// QID"). So after a failure the lowest free id is set aside and the next
/// attempt gets a different one; past a few, attempts wait 20 ms apart.
/// The set-aside ids are returned before this function returns.
fn alloc_io_qpair(
    ctrlr: &NvmeController,
    opts: &sys::spdk_nvme_io_qpair_opts,
) -> crate::error::Result<NonNull<sys::spdk_nvme_qpair>> {
    let deadline = std::time::Instant::now() + QPAIR_ALLOC_BUDGET;
    let mut skipped: Vec<u16> = Vec::new();
    let result = loop {
        // SAFETY: the controller is attached (we hold it); opts is
        // initialised and its true size is passed.
        let qpair = unsafe {
            sys::spdk_nvme_ctrlr_alloc_io_qpair(ctrlr.as_ptr(), opts, std::mem::size_of_val(opts))
        };
        if let Some(qpair) = NonNull::new(qpair) {
            break Ok(qpair);
        }
        // SAFETY: as above.
        if unsafe { sys::spdk_nvme_ctrlr_is_failed(ctrlr.as_ptr()) } {
            break Err(crate::error::Error::Errno(crate::error::Errno::ENXIO));
        }
        if std::time::Instant::now() >= deadline {
            break Err(crate::error::Error::Errno(crate::error::Errno::ENOMEM));
        }
        if skipped.len() < QPAIR_QIDS_SKIPPED {
            // SAFETY: as above; the id is returned with free_qid below.
            let qid = unsafe { sys::spdk_nvme_ctrlr_alloc_qid(ctrlr.as_ptr()) };
            if let Ok(qid) = u16::try_from(qid) {
                skipped.push(qid);
                continue;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    for qid in skipped {
        // SAFETY: qid came from spdk_nvme_ctrlr_alloc_qid on this controller.
        unsafe { sys::spdk_nvme_ctrlr_free_qid(ctrlr.as_ptr(), qid) };
    }
    result
}
