//! Bdev targets: entries mapped onto `spdk_bdev_*` calls on the ring's
//! own channel, their completion, ENOMEM waits and aborts.

use super::*;

impl SpdkDriver {
    /// Starts an entry on the bdev target `index` (registered, not a
    /// blobstore or NVMe namespace: `start` checked).
    pub(super) fn start_bdev(&mut self, token: Token, index: u32, op: &mut IoOp) -> StartOutcome {
        let t = &self.targets[index as usize];
        let Some((desc, channel)) = t.bdev_channel().filter(|_| !t.removed) else {
            return failed(libc::ENODEV);
        };
        let (desc, ch) = (desc.as_ptr(), channel.as_ptr());
        let slot = &self.slots[token.index() as usize];
        let ctx = slot as *const SlotCtx as *mut c_void;
        let bs = t.block_size;
        let in_range =
            |offset: u64, n: u64| offset.checked_add(n).is_some_and(|end| end <= t.num_blocks);
        let needs = |io: IoTypes| t.io_types.contains(io);
        // Plain writes are checked by `RwChecks` below, in the lane's order.
        if let IoKind::Writev { .. }
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
        // The contract of every SPDK call below (each block names its part):
        // desc and ch are this target's open descriptor and channel on this
        // thread; buffers are owned by `op`, which the core keeps in its
        // slot until completion, so their memory stays valid and unaliased
        // while SPDK uses it; lengths were checked against the buffers; ctx
        // is this entry's stable slot context.
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
            } => {
                // The lane's checks, in the same order (see `check`).
                let checks = &t.checks;
                let Some(n) = checks.pass(is_write, buf.len(), *offset_blocks, *num_blocks) else {
                    return failed(checks.errno(is_write, buf.len(), *num_blocks));
                };
                self.arm(slot, token, index, n * u64::from(bs));
                let f = if is_write {
                    sys::spdk_bdev_write_blocks
                } else {
                    sys::spdk_bdev_read_blocks
                };
                let data = buf.as_mut_ptr().cast();
                // SAFETY: the contract above; `buf` holds the n blocks.
                unsafe { f(desc, ch, data, *offset_blocks, n, Some(io_done), ctx) }
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
                // SAFETY: this entry is being started; nothing else
                // uses its slot's scatter list.
                let n = match unsafe { self.load_sgl(token, bufs, *num_blocks, bs) } {
                    Ok(n) => n,
                    Err(e) => return failed(e),
                };
                if !in_range(*offset_blocks, n) {
                    return failed(libc::EINVAL);
                }
                // SAFETY: the slot's scatter list, just loaded; nothing
                // else refers to it until SPDK reads it in the call below.
                let iovs = unsafe { &mut (*self.iovecs[token.index() as usize].get()).iovs };
                self.arm(slot, token, index, n * u64::from(bs));
                let f = if is_write {
                    sys::spdk_bdev_writev_blocks
                } else {
                    sys::spdk_bdev_readv_blocks
                };
                let (iov, iovcnt) = (iovs.as_mut_ptr().cast(), bufs.len() as i32);
                // SAFETY: the contract above; the scatter list covers
                // the buffers, which hold the n blocks.
                unsafe { f(desc, ch, iov, iovcnt, *offset_blocks, n, Some(io_done), ctx) }
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
                // SAFETY: the contract above (no buffer).
                unsafe { f(desc, ch, *offset_blocks, *num_blocks, Some(io_done), ctx) }
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
                let data = buf.as_mut_ptr().cast();
                // SAFETY: the contract above; `buf` holds the n blocks.
                unsafe {
                    sys::spdk_bdev_compare_blocks(
                        desc,
                        ch,
                        data,
                        *offset_blocks,
                        n,
                        Some(io_done),
                        ctx,
                    )
                }
            }
            IoKind::Reset => {
                if !needs(IoTypes::RESET) {
                    return failed(libc::ENOTSUP);
                }
                self.arm(slot, token, index, 0);
                // SAFETY: the contract above (no buffer).
                unsafe { sys::spdk_bdev_reset(desc, ch, Some(io_done), ctx) }
            }
            IoKind::NvmePassthru { cmd, buf } => {
                if !needs(IoTypes::NVME_IO) {
                    return failed(libc::ENOTSUP);
                }
                let raw = to_nvme_cmd(cmd);
                let (ptr, len) = raw_buffer(buf);
                self.arm(slot, token, index, len as u64);
                // SAFETY: the contract above; ptr and len are the
                // optional buffer's (null and 0 without one).
                unsafe {
                    sys::spdk_bdev_nvme_io_passthru(desc, ch, &raw, ptr, len, Some(io_done), ctx)
                }
            }
            IoKind::NvmeAdmin { cmd, buf } => {
                if !needs(IoTypes::NVME_ADMIN) {
                    return failed(libc::ENOTSUP);
                }
                let raw = to_nvme_cmd(cmd);
                let (ptr, len) = raw_buffer(buf);
                self.arm(slot, token, index, len as u64);
                // SAFETY: as for the I/O passthru above.
                unsafe {
                    sys::spdk_bdev_nvme_admin_passthru(desc, ch, &raw, ptr, len, Some(io_done), ctx)
                }
            }
            IoKind::Blob(_) | IoKind::MsgRing { .. } => return failed(libc::EINVAL),
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
                // SAFETY: the contract above, except that the memory is
                // the caller's, who promised (RawIo's `unsafe` builders)
                // it stays valid and unaliased until the completion.
                unsafe { f(desc, ch, ptr.cast(), *offset_blocks, n, Some(io_done), ctx) }
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
}

/// # Safety
/// SPDK calls it once per bdev I/O the core started, with `ctx` the entry's
/// `SlotCtx` and `bdev_io` not yet freed.
pub(super) unsafe extern "C" fn io_done(
    bdev_io: *mut sys::spdk_bdev_io,
    success: bool,
    ctx: *mut c_void,
) {
    // SAFETY: ctx is a SlotCtx of a live ring (the ring quiesces before
    // freeing slots); the bdev_io is ours to inspect and free once.
    let slot = unsafe { &*(ctx as *const SlotCtx) };
    // SAFETY: a slot's inbox outlives the ring's slots.
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
pub(super) unsafe fn failure_of(bdev_io: *mut sys::spdk_bdev_io, nvme_backed: bool) -> IoError {
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

/// # Safety
/// SPDK calls it once per `spdk_bdev_queue_io_wait`, with `ctx` the target's
/// `WaitCtx`.
pub(super) unsafe extern "C" fn io_wait_done(ctx: *mut c_void) {
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

/// # Safety
/// SPDK calls it once per `spdk_bdev_abort`, with the abort's own `bdev_io`.
pub(super) unsafe extern "C" fn abort_done(
    bdev_io: *mut sys::spdk_bdev_io,
    _success: bool,
    _ctx: *mut c_void,
) {
    // SAFETY: the abort's own bdev_io, freed once. Its outcome needs no
    // report: the aborted entry completes through its own callback.
    unsafe { sys::spdk_bdev_free_io(bdev_io) };
}

/// Asks SPDK to abort the bdev I/O of `target` submitted with callback
/// argument `cb_arg` (which is how SPDK finds it). `Err(())`: the bdev
/// cannot abort, or the target has no channel any more.
pub(super) fn raw_abort(t: &TargetState, cb_arg: *mut c_void) -> Result<(), ()> {
    if !t.io_types.contains(IoTypes::ABORT) {
        return Err(());
    }
    let Some((desc, channel)) = t.bdev_channel() else {
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
