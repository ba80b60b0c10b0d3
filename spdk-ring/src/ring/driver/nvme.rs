//! NVMe namespace targets: the ring's own I/O qpair per namespace, entries
//! mapped onto `spdk_nvme_ns_cmd_*` and admin commands, completions and
//! scatter-list callbacks, reconnects after a transport failure.

use super::*;

/// How often a ring must be polled for its NVMe targets
/// ([`SpdkDriver::nvme_poll_need`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NvmePollNeed {
    /// No NVMe target: nothing to poll.
    None,
    /// Targets without I/O: only the admin queue's keep-alive.
    KeepAlive,
    /// I/O or admin commands in flight: their completions.
    InFlight,
}

/// Queue ids set aside after a rejected qpair connect, before waiting instead.
const QPAIR_QIDS_SKIPPED: usize = 4;
/// How long qpair allocation keeps retrying a rejected connect.
const QPAIR_ALLOC_BUDGET: std::time::Duration = std::time::Duration::from_secs(5);

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

impl NvmeQueue {
    /// Asks the controller to abort the command submitted with callback
    /// argument `cb_arg` (which is how SPDK finds it).
    pub(super) fn abort(&self, cb_arg: *mut c_void) -> Result<(), ()> {
        // SAFETY: controller and qpair are this queue's; `cb_arg` is the
        // exact callback argument the command was submitted with. The
        // abort's own completion needs no report.
        let rc = unsafe {
            sys::spdk_nvme_ctrlr_cmd_abort_ext(
                self.ctrlr.as_ptr(),
                self.qpair.as_ptr(),
                cb_arg,
                Some(nvme_abort_done),
                std::ptr::null_mut(),
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(())
        }
    }
}

impl Drop for NvmeQueue {
    fn drop(&mut self) {
        // SAFETY: dropped only when nothing is in flight on the qpair (the
        // ring quiesces first), on the ring's thread; freed once.
        unsafe { sys::spdk_nvme_ctrlr_free_io_qpair(self.qpair.as_ptr()) };
    }
}

impl SpdkDriver {
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
            backend: Backend::Nvme(NvmeQueue {
                qpair,
                ns,
                nsid,
                failed: false,
                nomem: false,
                ctrlr: ctrlr.clone(),
            }),
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
            checks: RwChecks::NONE,
            wait: WaitCtx::new(self.inbox, index),
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
            .and_then(|t| t.nvme_mut())
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

    /// What the NVMe targets need from a ring that sleeps (interrupt
    /// mode): qpairs over TCP have no fd, so their completions and the
    /// admin queue's keep-alive come only from polling.
    pub(crate) fn nvme_poll_need(&self) -> NvmePollNeed {
        if self.nvme_targets == 0 {
            return NvmePollNeed::None;
        }
        let busy = self.admin_in_flight > 0
            || self
                .targets
                .iter()
                .any(|t| t.in_flight > 0 && t.nvme().is_some());
        if busy {
            NvmePollNeed::InFlight
        } else {
            NvmePollNeed::KeepAlive
        }
    }

    #[inline(never)]
    fn poll_nvme_queues(&mut self) {
        // SAFETY: the inbox outlives the driver's use of it.
        let inbox = unsafe { &*self.inbox };
        let mut admin_due = None;
        for (index, t) in self.targets.iter_mut().enumerate() {
            let in_flight = t.in_flight;
            let Some(q) = t.nvme_mut() else { continue };
            // Failed qpairs are still processed: SPDK completes their
            // outstanding requests (aborted) from here.
            // SAFETY: the qpair is ours, used from the ring's thread.
            let rc = unsafe { sys::spdk_nvme_qpair_process_completions(q.qpair.as_ptr(), 0) };
            if rc < 0 {
                q.failed = true;
            }
            if q.nomem && (rc > 0 || in_flight == 0) {
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

    /// Starts an entry on an NVMe namespace target.
    pub(super) fn start_nvme(&mut self, token: Token, index: u32, op: &mut IoOp) -> StartOutcome {
        let t = &self.targets[index as usize];
        let q = t.nvme().expect("checked by the caller");
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
        // The contract of every SPDK call below (each block names its part):
        // ns, qpair and controller are this target's, used from the ring's
        // thread; buffers are owned by `op`, which the core keeps until
        // completion, and their lengths were checked; ctx is this entry's
        // stable slot context.
        let rc = match &mut op.kind {
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
                let data = buf.as_mut_ptr().cast();
                // SAFETY: the contract above; `buf` holds the n blocks.
                unsafe {
                    rw_command(
                        ns,
                        qp,
                        data,
                        *offset_blocks,
                        n as u32,
                        Some(nvme_done),
                        ctx,
                        0,
                    )
                }
            }
            IoKind::WriteZeroes {
                offset_blocks,
                num_blocks,
            } => {
                if !valid(*offset_blocks, *num_blocks) {
                    return failed(libc::EINVAL);
                }
                self.arm(slot, token, index, 0);
                // SAFETY: the contract above (no buffer).
                unsafe {
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
                // SAFETY: the contract above; SPDK copies the one range.
                unsafe {
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
            }
            IoKind::Flush { .. } => {
                self.arm(slot, token, index, 0);
                // SAFETY: the contract above (no buffer).
                unsafe { sys::spdk_nvme_ns_cmd_flush(ns, qp, Some(nvme_done), ctx) }
            }
            IoKind::NvmePassthru { cmd, buf } => {
                let mut raw = to_nvme_cmd(cmd);
                raw.nsid = nsid;
                let (ptr, len) = raw_buffer(buf);
                let Ok(len32) = u32::try_from(len) else {
                    return failed(libc::EINVAL);
                };
                self.arm(slot, token, index, len as u64);
                // SAFETY: the contract above; ptr and len are the
                // optional buffer's (null and 0 without one).
                unsafe {
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
                // SAFETY: the contract above, except that the memory is
                // the caller's, who promised (RawIo's `unsafe` builders)
                // it stays valid and unaliased until the completion.
                unsafe {
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
            }
            IoKind::NvmeAdmin { cmd, buf } => {
                let mut raw = to_nvme_cmd(cmd);
                let (ptr, len) = raw_buffer(buf);
                let Ok(len32) = u32::try_from(len) else {
                    return failed(libc::EINVAL);
                };
                self.arm(slot, token, index, len as u64);
                admin = true;
                // SAFETY: as for the I/O passthru above; the admin queue
                // is the controller's, its callback may run on any thread.
                unsafe {
                    sys::spdk_nvme_ctrlr_cmd_admin_raw(
                        ctrlr,
                        &mut raw,
                        ptr,
                        len32,
                        Some(nvme_admin_done),
                        ctx,
                    )
                }
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
                // SAFETY: this entry is being started; nothing else
                // uses its slot's scatter list.
                let n = match unsafe { self.load_sgl(token, bufs, *num_blocks, bs) } {
                    Ok(n) if valid(*offset_blocks, n) => n,
                    _ => return failed(libc::EINVAL),
                };
                self.arm(slot, token, index, n * u64::from(bs));
                // SAFETY: the contract above; the slot's scatter list
                // covers the buffers, which hold the n blocks, and stays
                // as loaded while SPDK walks it.
                unsafe {
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
            }
            IoKind::Reset => return failed(libc::ENOTSUP),
            IoKind::Blob(_) | IoKind::MsgRing { .. } => return failed(libc::EINVAL),
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
                if let Some(q) = self.targets[index as usize].nvme_mut() {
                    q.nomem = true;
                }
                StartOutcome::NoMem
            }
            rc => failed(-rc),
        }
    }
}

/// # Safety
/// SPDK calls it once per NVMe I/O command, on the ring's thread, with `ctx`
/// the entry's `SlotCtx` and `cpl` valid for the call.
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

/// Admin commands' callback: may run on any thread (see [`AdminMailbox`](super::inbox::AdminMailbox)).
///
/// # Safety
/// SPDK calls it once per admin command, on any thread, with `ctx` the
/// entry's `SlotCtx` and `cpl` valid for the call.
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

/// # Safety
/// SPDK calls it once per abort command; it reads nothing.
unsafe extern "C" fn nvme_abort_done(_ctx: *mut c_void, _cpl: *const sys::spdk_nvme_cpl) {
    // The aborted command completes through its own callback.
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
///
/// # Safety
/// As for [`slot_sgl`]: `cb_arg` is the `SlotCtx` of a vectored command in
/// flight, on the ring's thread.
unsafe extern "C" fn nvme_reset_sgl(cb_arg: *mut c_void, offset: u32) {
    // SAFETY: SPDK passes back the cb_arg the command was submitted with.
    if let Some(sgl) = unsafe { slot_sgl(cb_arg) } {
        sgl.reset(offset as usize);
    }
}

/// SPDK asks for the next segment of a vectored NVMe command. Cannot panic.
///
/// # Safety
/// As for [`nvme_reset_sgl`]; `address` and `length` are writable.
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

/// The errno an NVMe status stands for.
pub(super) fn errno_for_nvme(sct: u32, sc: u32) -> i32 {
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

pub(super) fn to_nvme_cmd(cmd: &NvmeCommand) -> sys::spdk_nvme_cmd {
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
