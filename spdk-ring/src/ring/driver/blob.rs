//! Blobstore targets: blob data and metadata entries mapped onto
//! `spdk_blob_io_*` and `spdk_bs_*`/`spdk_blob_*` calls.
//!
//! SPDK reports blob errors, ENOMEM included, only through the callback,
//! which may run inside the submitting call. Each in-flight slot therefore
//! has a [`BlobSlot`] that tells the callback whether it runs inside our
//! submit (`in_submit`): an ENOMEM there makes `start` answer `NoMem`, so
//! the core keeps the entry first in its target's line and retries it in
//! order; an ENOMEM that arrives later queues the slot for re-issue from
//! the call recorded in [`BlobCall`], and the target takes no new entries
//! until those are re-issued. ENOMEM never reaches the caller.

use super::{failed, Event, SlotCtx, SpdkDriver, MAX_IOVECS};
use crate::blob::{Blob, StoreInner};
use crate::dma::DmaBuf;
use crate::pinned::Pinned;
use crate::queue::{IoError, StartOutcome, Token};
use crate::ring::op::{BlobOp, WHOLE_BUFFER_UNITS};
use spdk_ring_sys as sys;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::ffi::c_void;
use std::ptr::NonNull;
use std::rc::Rc;

/// Channel operations one data entry may hold at once in SPDK: a user op
/// and a sequence, plus a cluster allocation (thin blobs) or the current
/// piece of an I/O split at a cluster boundary. Keeping in flight at most
/// `max_channel_ops / OPS_PER_ENTRY` data entries means SPDK does not run
/// out of channel operations in the middle of an I/O; further entries
/// wait in the ring, in order.
const OPS_PER_ENTRY: u32 = crate::blob::MIN_CHANNEL_OPS;

impl BlobOp {
    fn data_kind(&self) -> Option<DataKind> {
        Some(match self {
            BlobOp::Read { .. } => DataKind::Read,
            BlobOp::Write { .. } => DataKind::Write,
            BlobOp::Readv { .. } => DataKind::Readv,
            BlobOp::Writev { .. } => DataKind::Writev,
            BlobOp::Unmap { .. } => DataKind::Unmap,
            BlobOp::WriteZeroes { .. } => DataKind::WriteZeroes,
            _ => return None,
        })
    }
}

/// A registered blobstore: the store (kept loaded) and this ring's I/O
/// channel on it.
pub(crate) struct BlobTarget {
    pub(crate) store: Rc<StoreInner>,
    channel: NonNull<sys::spdk_io_channel>,
    io_unit: u64,
    /// Data entries allowed in flight on the channel (see `add_blob_target`).
    max_in_flight: u32,
    /// `start` answered `NoMem`; the target is unblocked when its in-flight
    /// count drops below `nomem_in_flight` (or reaches zero).
    nomem: bool,
    nomem_in_flight: u32,
}

impl Drop for BlobTarget {
    fn drop(&mut self) {
        // SAFETY: allocated on this thread for this store; freed once, when
        // nothing is in flight on it (targets drop after the ring quiesced).
        unsafe { sys::spdk_bs_free_io_channel(self.channel.as_ptr()) };
    }
}

/// How to re-issue a blob data call after an asynchronous ENOMEM. The
/// pointers stay valid: the entry (blob handle, buffers, iovecs) is in
/// flight until it completes.
#[derive(Clone, Copy)]
enum BlobCall {
    None,
    Data {
        kind: DataKind,
        blob: *mut sys::spdk_blob,
        channel: *mut sys::spdk_io_channel,
        payload: *mut c_void,
        iovcnt: i32,
        offset: u64,
        units: u64,
    },
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum DataKind {
    Read,
    Write,
    Readv,
    Writev,
    Unmap,
    WriteZeroes,
}

/// Per in-flight slot: the callback argument of blob calls.
pub(crate) struct BlobSlot {
    slot: *const SlotCtx,
    index: u32,
    in_submit: Cell<bool>,
    nomem: Cell<bool>,
    call: Cell<BlobCall>,
    /// A `BlobOpen`'s destination.
    opened: Cell<*const Cell<*mut sys::spdk_blob>>,
    retry: *const RefCell<VecDeque<u32>>,
}

/// The driver's blob state, created with the first blobstore registration.
pub(crate) struct BlobState {
    slots: Pinned<[BlobSlot]>,
    /// Slots whose call hit ENOMEM after the submit returned, oldest first.
    retry: Pinned<RefCell<VecDeque<u32>>>,
}

impl SpdkDriver {
    /// Registers a blobstore: a new I/O channel on this thread.
    pub(crate) fn add_blob_target(
        &mut self,
        store: &crate::blob::Blobstore,
    ) -> crate::error::Result<u32> {
        let inner = store.inner.clone();
        // SAFETY: the store is loaded; we are on an SPDK thread.
        let channel = unsafe { sys::spdk_bs_alloc_io_channel(inner.as_ptr()) };
        let channel = NonNull::new(channel).ok_or(crate::Error::Errno(crate::Errno::ENOMEM))?;
        if self.blob.is_none() {
            let retry = Pinned::from_value(RefCell::new(VecDeque::with_capacity(self.slots.len())));
            let slots = self
                .slots
                .iter()
                .enumerate()
                .map(|(i, slot)| BlobSlot {
                    slot,
                    index: i as u32,
                    in_submit: Cell::new(false),
                    nomem: Cell::new(false),
                    call: Cell::new(BlobCall::None),
                    opened: Cell::new(std::ptr::null()),
                    retry: &*retry,
                })
                .collect::<Box<[BlobSlot]>>();
            self.blob = Some(BlobState {
                slots: Pinned::new(slots),
                retry,
            });
        }
        let io_unit = store.io_unit_size();
        let units = store.total_data_clusters() * store.cluster_size() / io_unit.max(1);
        let index = self.targets.len() as u32;
        self.targets.push(super::TargetState {
            backend: super::Backend::Blob(BlobTarget {
                max_in_flight: (inner.max_channel_ops / OPS_PER_ENTRY).max(1),
                store: inner,
                channel,
                io_unit,
                nomem: false,
                nomem_in_flight: 0,
            }),
            block_size: io_unit as u32,
            num_blocks: units,
            io_types: crate::bdev::IoTypes::empty(),
            writable: true,
            nvme_backed: false,
            removed: false,
            unregistered: false,
            in_flight: 0,
            checks: super::check::RwChecks::NONE,
            wait: super::WaitCtx::new(self.inbox, index),
        });
        Ok(index)
    }

    /// Re-issues calls that hit ENOMEM asynchronously, in order, and
    /// unblocks blob targets whose memory may be back.
    /// Retries blob calls that ran out of channel operations, if any.
    #[inline]
    pub(crate) fn poll_blob(&mut self) {
        if self.blob.is_some() {
            self.retry_blob_calls();
        }
    }

    #[inline(never)]
    fn retry_blob_calls(&mut self) {
        let Some(state) = &self.blob else { return };
        loop {
            let Some(&i) = state.retry.borrow().front() else {
                break;
            };
            let bslot = &state.slots[i as usize];
            bslot.nomem.set(false);
            bslot.in_submit.set(true);
            // SAFETY: the call was recorded by start() for an entry still
            // in flight (it has not completed: its ENOMEM put it here).
            unsafe { issue(bslot.call.get(), bslot) };
            bslot.in_submit.set(false);
            if bslot.nomem.get() {
                bslot.nomem.set(false);
                break;
            }
            self.enomem_retries += 1;
            state.retry.borrow_mut().pop_front();
        }
        let retry_empty = state.retry.borrow().is_empty();
        // SAFETY: the inbox outlives the driver.
        let inbox = unsafe { &*self.inbox };
        for (index, t) in self.targets.iter_mut().enumerate() {
            let in_flight = t.in_flight;
            let Some(b) = t.blob_mut() else { continue };
            if b.nomem && retry_empty && (in_flight == 0 || in_flight < b.nomem_in_flight) {
                b.nomem = false;
                inbox.post(Event::Unblock {
                    target: index as u32,
                });
            }
        }
    }

    pub(crate) fn start_blob(&mut self, token: Token, index: u32, op: &mut BlobOp) -> StartOutcome {
        let retry_pending = self
            .blob
            .as_ref()
            .is_some_and(|s| !s.retry.borrow().is_empty());
        if retry_pending {
            // Calls waiting for re-issue go first.
            return self.blob_wait(index, false);
        }
        let t = &self.targets[index as usize];
        let at_cap = t.blob().is_some_and(|b| t.in_flight >= b.max_in_flight);
        if at_cap && op.data_kind().is_some() {
            return self.blob_wait(index, false);
        }
        match self.issue_blob(token, index, op) {
            StartOutcome::NoMem => self.blob_wait(index, true),
            StartOutcome::Started => {
                self.targets[index as usize].in_flight += 1;
                StartOutcome::Started
            }
            outcome => outcome,
        }
    }

    /// Validates and submits one blob entry; `NoMem` if SPDK answered
    /// ENOMEM inside the call.
    fn issue_blob(&self, token: Token, index: u32, op: &mut BlobOp) -> StartOutcome {
        let state = self.blob.as_ref().expect("a blob target exists");
        let b = self.targets[index as usize].blob().expect("a blob target");
        let slot = &self.slots[token.index() as usize];
        let bslot = &state.slots[token.index() as usize];
        let ctx = bslot as *const BlobSlot as *mut c_void;
        let bs = b.store.as_ptr();
        let io_unit = b.io_unit;
        let foreign = |blob: &Blob| !Rc::ptr_eq(&blob.inner.store, &b.store);
        let in_range = |blob: &Blob, offset: u64, units: u64| {
            // SAFETY: the blob is open (the entry holds it).
            let size = unsafe { sys::spdk_blob_get_num_io_units(blob.inner.as_ptr()) };
            units > 0 && offset.checked_add(units).is_some_and(|end| end <= size)
        };
        let units_of = |len: usize, units: u64| -> Result<u64, i32> {
            let len = len as u64;
            match units {
                WHOLE_BUFFER_UNITS if len == 0 || len % io_unit != 0 => Err(libc::EINVAL),
                WHOLE_BUFFER_UNITS => Ok(len / io_unit),
                n if !n.checked_mul(io_unit).is_some_and(|need| need <= len) => Err(libc::EINVAL),
                n => Ok(n),
            }
        };
        let data = |kind, blob: &Blob, payload: *mut c_void, iovcnt: usize, offset, units| {
            BlobCall::Data {
                kind,
                blob: blob.inner.as_ptr(),
                channel: b.channel.as_ptr(),
                payload,
                iovcnt: iovcnt as i32,
                offset,
                units,
            }
        };
        // The data call to make, and the bytes a success reports; or a
        // metadata call, made below.
        let mut call = BlobCall::None;
        let mut bytes = 0;
        let kind = op.data_kind();
        match op {
            BlobOp::Read {
                blob,
                buf,
                offset,
                units,
            }
            | BlobOp::Write {
                blob,
                buf,
                offset,
                units,
            } => {
                let kind = kind.expect("a data entry");
                if foreign(blob) {
                    return failed(libc::EINVAL);
                }
                let n = match units_of(buf.len(), *units) {
                    Ok(n) => n,
                    Err(e) => return failed(e),
                };
                if !in_range(blob, *offset, n) {
                    return failed(libc::EINVAL);
                }
                bytes = n * io_unit;
                call = data(kind, blob, buf.as_mut_ptr().cast(), 0, *offset, n);
            }
            BlobOp::Readv {
                blob,
                bufs,
                offset,
                units,
            }
            | BlobOp::Writev {
                blob,
                bufs,
                offset,
                units,
            } => {
                let kind = kind.expect("a data entry");
                if foreign(blob) || bufs.is_empty() || bufs.len() > MAX_IOVECS {
                    return failed(libc::EINVAL);
                }
                let total: usize = bufs.iter().map(DmaBuf::len).sum();
                let n = match units_of(total, *units) {
                    Ok(n) => n,
                    Err(e) => return failed(e),
                };
                if !in_range(blob, *offset, n) {
                    return failed(libc::EINVAL);
                }
                // SAFETY: this slot's iovec array; no other entry uses it
                // while this one is in flight.
                let iovs = unsafe { &mut (*self.iovecs[token.index() as usize].get()).iovs };
                for (iov, buf) in iovs.iter_mut().zip(bufs.iter_mut()) {
                    *iov = libc::iovec {
                        iov_base: buf.as_mut_ptr().cast(),
                        iov_len: buf.len(),
                    };
                }
                bytes = n * io_unit;
                call = data(kind, blob, iovs.as_mut_ptr().cast(), bufs.len(), *offset, n);
            }
            BlobOp::Unmap {
                blob,
                offset,
                units,
            }
            | BlobOp::WriteZeroes {
                blob,
                offset,
                units,
            } => {
                let kind = kind.expect("a data entry");
                if foreign(blob) || !in_range(blob, *offset, *units) {
                    return failed(libc::EINVAL);
                }
                call = data(kind, blob, std::ptr::null_mut(), 0, *offset, *units);
            }
            BlobOp::Open { opened, .. } | BlobOp::IterFirst { opened }
                if !Rc::ptr_eq(&opened.store, &b.store) =>
            {
                return failed(libc::EINVAL);
            }
            BlobOp::Resize { blob, .. }
            | BlobOp::SyncMetadata { blob }
            | BlobOp::Close { blob }
            | BlobOp::IterNext { blob, .. }
                if foreign(blob) =>
            {
                return failed(libc::EINVAL);
            }
            BlobOp::Close { blob } | BlobOp::IterNext { blob, .. }
                if Rc::strong_count(&blob.inner) > 1 =>
            {
                // Other handles, or entries in flight, still use it.
                return failed(libc::EBUSY);
            }
            _ => {}
        }
        slot.token.set(token);
        slot.target.set(index);
        slot.bytes.set(bytes);
        slot.nvme_backed.set(false);
        bslot.nomem.set(false);
        bslot.call.set(call);
        bslot.in_submit.set(true);
        // SAFETY: (every call) store, blobs and channel are live (held by
        // the target and the entry, which stays in flight until its
        // callback ran); buffers were checked against the lengths; ctx is
        // this entry's stable slot; we are on the store's metadata thread
        // (the ring and the store are both !Send, so on the same thread).
        unsafe {
            match op {
                BlobOp::Create { opts } => {
                    sys::spdk_bs_create_blob_ext(bs, opts.as_ptr(), Some(blob_created), ctx)
                }
                BlobOp::Open { id, opened } => {
                    bslot.opened.set(&*opened.blob);
                    sys::spdk_bs_open_blob(bs, *id, Some(blob_opened), ctx)
                }
                BlobOp::IterFirst { opened } => {
                    bslot.opened.set(&*opened.blob);
                    sys::spdk_bs_iter_first(bs, Some(blob_opened), ctx)
                }
                BlobOp::IterNext { blob, opened } => {
                    bslot.opened.set(&*opened.blob);
                    sys::spdk_bs_iter_next(bs, blob.inner.as_ptr(), Some(blob_opened), ctx)
                }
                BlobOp::Resize { blob, clusters } => {
                    sys::spdk_blob_resize(blob.inner.as_ptr(), *clusters, Some(blob_md_done), ctx)
                }
                BlobOp::SyncMetadata { blob } => {
                    sys::spdk_blob_sync_md(blob.inner.as_ptr(), Some(blob_md_done), ctx)
                }
                BlobOp::Delete { id } => sys::spdk_bs_delete_blob(bs, *id, Some(blob_md_done), ctx),
                BlobOp::Close { blob } => {
                    sys::spdk_blob_close(blob.inner.as_ptr(), Some(blob_md_done), ctx)
                }
                _ => issue(call, bslot),
            }
        }
        bslot.in_submit.set(false);
        if bslot.nomem.replace(false) {
            return StartOutcome::NoMem;
        }
        if let BlobOp::Close { blob } | BlobOp::IterNext { blob, .. } = op {
            // SPDK owns the close now; dropping the handle must not repeat it.
            blob.inner.mark_closed();
        }
        StartOutcome::Started
    }

    /// Holds the target's line until an entry completes; `enomem` counts
    /// it as an ENOMEM from SPDK.
    fn blob_wait(&mut self, index: u32, enomem: bool) -> StartOutcome {
        if enomem {
            self.enomem_retries += 1;
        }
        let t = &mut self.targets[index as usize];
        let in_flight = t.in_flight;
        if let Some(b) = t.blob_mut() {
            b.nomem = true;
            b.nomem_in_flight = in_flight;
        }
        StartOutcome::NoMem
    }
}

/// Issues a recorded data call.
///
/// # Safety
/// `call` was recorded for an entry in flight, whose blob, channel and
/// buffers are alive; `bslot` is that entry's slot.
unsafe fn issue(call: BlobCall, bslot: &BlobSlot) {
    let BlobCall::Data {
        kind,
        blob,
        channel,
        payload,
        iovcnt,
        offset,
        units,
    } = call
    else {
        return;
    };
    let ctx = bslot as *const BlobSlot as *mut c_void;
    let cb = Some(blob_io_done as unsafe extern "C" fn(*mut c_void, i32));
    // SAFETY: the caller's contract.
    unsafe {
        match kind {
            DataKind::Read => {
                sys::spdk_blob_io_read(blob, channel, payload, offset, units, cb, ctx)
            }
            DataKind::Write => {
                sys::spdk_blob_io_write(blob, channel, payload, offset, units, cb, ctx)
            }
            DataKind::Readv | DataKind::Writev => {
                let f = if kind == DataKind::Readv {
                    sys::spdk_blob_io_readv
                } else {
                    sys::spdk_blob_io_writev
                };
                f(
                    blob,
                    channel,
                    payload.cast(),
                    iovcnt,
                    offset,
                    units,
                    cb,
                    ctx,
                )
            }
            DataKind::Unmap => sys::spdk_blob_io_unmap(blob, channel, offset, units, cb, ctx),
            DataKind::WriteZeroes => {
                sys::spdk_blob_io_write_zeroes(blob, channel, offset, units, cb, ctx)
            }
        }
    }
}

/// Reports a blob callback's outcome, unless it is an ENOMEM to retry.
///
/// # Safety
/// `bslot` belongs to a live ring and an entry in flight.
unsafe fn report(bslot: &BlobSlot, bserrno: i32, ok: u64, retry_async: bool) {
    if bserrno == -libc::ENOMEM {
        if bslot.in_submit.get() {
            bslot.nomem.set(true);
            return;
        }
        if retry_async {
            // SAFETY: the retry queue lives as long as the driver, and is
            // never borrowed across an SPDK call.
            unsafe { &*bslot.retry }.borrow_mut().push_back(bslot.index);
            return;
        }
    }
    // SAFETY: the slot context and inbox outlive every callback.
    let slot = unsafe { &*bslot.slot };
    // SAFETY: as above.
    let inbox = unsafe { &*slot.inbox };
    let result = if bserrno == 0 {
        Ok(ok)
    } else {
        Err(IoError::errno(-bserrno))
    };
    inbox.post(Event::Done {
        token: slot.token.get(),
        target: slot.target.get(),
        result,
        lane_before: inbox.lane_callbacks(),
    });
}

/// # Safety
/// The blobstore calls it once per data operation, with `ctx` the entry's
/// `BlobSlot`.
unsafe extern "C" fn blob_io_done(ctx: *mut c_void, bserrno: i32) {
    // SAFETY: ctx is a BlobSlot of a live ring, its entry in flight.
    let bslot = unsafe { &*(ctx as *const BlobSlot) };
    // SAFETY: as above.
    let bytes = unsafe { &*bslot.slot }.bytes.get();
    // SAFETY: the slot belongs to a live ring and an entry in flight.
    contain(bslot, || unsafe { report(bslot, bserrno, bytes, true) });
}

/// # Safety
/// The blobstore calls it once per metadata operation, with `ctx` the
/// entry's `BlobSlot`.
unsafe extern "C" fn blob_md_done(ctx: *mut c_void, bserrno: i32) {
    // SAFETY: as in blob_io_done.
    let bslot = unsafe { &*(ctx as *const BlobSlot) };
    // SAFETY: as in blob_io_done.
    contain(bslot, || unsafe { report(bslot, bserrno, 0, false) });
}

/// # Safety
/// As for [`blob_md_done`], for a create.
unsafe extern "C" fn blob_created(ctx: *mut c_void, id: u64, bserrno: i32) {
    // SAFETY: as in blob_io_done.
    let bslot = unsafe { &*(ctx as *const BlobSlot) };
    // SAFETY: as in blob_io_done.
    contain(bslot, || unsafe { report(bslot, bserrno, id, false) });
}

/// # Safety
/// As for [`blob_md_done`], for an open or iteration step; `blob` is the
/// opened blob or null.
unsafe extern "C" fn blob_opened(ctx: *mut c_void, blob: *mut sys::spdk_blob, bserrno: i32) {
    // SAFETY: as in blob_io_done.
    let bslot = unsafe { &*(ctx as *const BlobSlot) };
    contain(bslot, || {
        if bserrno == 0 {
            // SAFETY: `opened` points into the entry's boxed OpenedBlob,
            // alive while the entry is in flight.
            unsafe { (*bslot.opened.get()).set(blob) };
            // SAFETY: an open blob.
            let id = unsafe { sys::spdk_blob_get_id(blob) };
            // SAFETY: as in blob_io_done.
            unsafe { report(bslot, 0, id, false) }
        } else {
            // SAFETY: as in blob_io_done.
            unsafe { report(bslot, bserrno, 0, false) }
        }
    });
}

/// Runs a callback body, containing a panic (re-raised by the ring).
fn contain(bslot: &BlobSlot, body: impl FnOnce()) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).is_err() {
        // SAFETY: the slot context and inbox outlive every callback.
        let inbox = unsafe { &*(*bslot.slot).inbox };
        inbox.callback_panicked.set(true);
    }
}

const _: () = assert!(MAX_IOVECS <= i32::MAX as usize);
