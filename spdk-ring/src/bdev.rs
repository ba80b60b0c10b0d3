//! Block devices: lookup, descriptors and I/O channels.
//!
//! SPDK frees a bdev once it is unregistered and its last descriptor is
//! closed, so a raw `spdk_bdev` pointer is only safe while a descriptor is
//! open. [`Bdev`] is therefore a snapshot taken at lookup, [`BdevDesc`] is
//! the open handle (it owns its SPDK thread), and [`IoChannel`] owns its
//! descriptor, so it cannot outlive it.

use crate::error::{Error, Result};
use crate::thread::SpdkThread;
use bitflags::bitflags;
use spdk_ring_sys as sys;
use std::cell::Cell;
use std::ffi::{c_void, CStr, CString};
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::rc::Rc;

bitflags! {
    /// The I/O types a bdev supports.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct IoTypes: u32 {
        const READ = 1 << 0;
        const WRITE = 1 << 1;
        const UNMAP = 1 << 2;
        const FLUSH = 1 << 3;
        const RESET = 1 << 4;
        const NVME_ADMIN = 1 << 5;
        const NVME_IO = 1 << 6;
        const WRITE_ZEROES = 1 << 7;
        const COMPARE = 1 << 8;
        const COMPARE_AND_WRITE = 1 << 9;
        const ABORT = 1 << 10;
        const COPY = 1 << 11;
    }
}

const IO_TYPE_MAP: [(IoTypes, sys::spdk_bdev_io_type); 12] = [
    (IoTypes::READ, sys::SPDK_BDEV_IO_TYPE_READ),
    (IoTypes::WRITE, sys::SPDK_BDEV_IO_TYPE_WRITE),
    (IoTypes::UNMAP, sys::SPDK_BDEV_IO_TYPE_UNMAP),
    (IoTypes::FLUSH, sys::SPDK_BDEV_IO_TYPE_FLUSH),
    (IoTypes::RESET, sys::SPDK_BDEV_IO_TYPE_RESET),
    (IoTypes::NVME_ADMIN, sys::SPDK_BDEV_IO_TYPE_NVME_ADMIN),
    (IoTypes::NVME_IO, sys::SPDK_BDEV_IO_TYPE_NVME_IO),
    (IoTypes::WRITE_ZEROES, sys::SPDK_BDEV_IO_TYPE_WRITE_ZEROES),
    (IoTypes::COMPARE, sys::SPDK_BDEV_IO_TYPE_COMPARE),
    (
        IoTypes::COMPARE_AND_WRITE,
        sys::SPDK_BDEV_IO_TYPE_COMPARE_AND_WRITE,
    ),
    (IoTypes::ABORT, sys::SPDK_BDEV_IO_TYPE_ABORT),
    (IoTypes::COPY, sys::SPDK_BDEV_IO_TYPE_COPY),
];

/// What a bdev looked like when it was looked up or read from a descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bdev {
    name: String,
    product_name: String,
    block_size: u32,
    num_blocks: u64,
    io_types: IoTypes,
    _not_send: PhantomData<*const ()>,
}

impl Bdev {
    /// Looks a bdev up by name; [`Error::BdevNotFound`] carries the name.
    /// Needs an SPDK thread on this OS thread ([`Error::NoThread`]
    /// otherwise): SPDK's bdev list lock may only be taken from one.
    pub fn lookup(name: &str) -> Result<Bdev> {
        let _thread = SpdkThread::require_current()?;
        let cname = CString::new(name).map_err(|_| Error::BdevNotFound(name.to_string()))?;
        // SAFETY: the environment is up; the name is NUL-terminated. The
        // returned pointer is read immediately, on this thread, before any
        // poll could let SPDK free it.
        unsafe {
            let bdev = sys::spdk_bdev_get_by_name(cname.as_ptr());
            NonNull::new(bdev)
                .map(|b| Bdev::snapshot(b))
                .ok_or_else(|| Error::BdevNotFound(name.to_string()))
        }
    }

    /// # Safety
    /// `bdev` must be a live bdev for the duration of the call.
    unsafe fn snapshot(bdev: NonNull<sys::spdk_bdev>) -> Bdev {
        let b = bdev.as_ptr();
        // SAFETY: b is live (caller's contract); the getters return
        // NUL-terminated strings owned by the bdev, copied here.
        unsafe {
            let mut io_types = IoTypes::empty();
            for (flag, ty) in IO_TYPE_MAP {
                if sys::spdk_bdev_io_type_supported(b, ty) {
                    io_types |= flag;
                }
            }
            Bdev {
                name: CStr::from_ptr(sys::spdk_bdev_get_name(b))
                    .to_string_lossy()
                    .into_owned(),
                product_name: CStr::from_ptr(sys::spdk_bdev_get_product_name(b))
                    .to_string_lossy()
                    .into_owned(),
                block_size: sys::spdk_bdev_get_block_size(b),
                num_blocks: sys::spdk_bdev_get_num_blocks(b),
                io_types,
                _not_send: PhantomData,
            }
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }
    /// The module's product name, e.g. "Malloc disk" or "Null disk".
    pub fn product_name(&self) -> &str {
        &self.product_name
    }
    /// Logical block size in bytes.
    pub fn block_size(&self) -> u32 {
        self.block_size
    }
    pub fn num_blocks(&self) -> u64 {
        self.num_blocks
    }
    pub fn size_bytes(&self) -> u64 {
        self.num_blocks * u64::from(self.block_size)
    }
    pub fn io_types(&self) -> IoTypes {
        self.io_types
    }
    pub fn supports(&self, io: IoTypes) -> bool {
        self.io_types.contains(io)
    }

    /// Opens this bdev (by name) on the current SPDK thread.
    pub fn open(&self, mode: OpenMode) -> Result<BdevDesc> {
        BdevDesc::open(&self.name, mode)
    }
}

/// Read-only or read-write access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    ReadOnly,
    ReadWrite,
}

pub(crate) struct DescInner {
    desc: Cell<*mut sys::spdk_bdev_desc>,
    name: String,
    mode: OpenMode,
    removed: Cell<bool>,
    /// Descriptors are closed on the thread that opened them.
    thread: SpdkThread,
}

impl Drop for DescInner {
    fn drop(&mut self) {
        let desc = self.desc.get();
        if !desc.is_null() {
            // SAFETY: desc was opened on self.thread, which is alive (held)
            // and the only SPDK thread of this OS thread, so it is current.
            unsafe { sys::spdk_bdev_close(desc) };
        }
    }
}

unsafe extern "C" fn bdev_event(
    event: sys::spdk_bdev_event_type,
    _bdev: *mut sys::spdk_bdev,
    ctx: *mut c_void,
) {
    // SAFETY: ctx is the DescInner registered at open; SPDK stops calling
    // after spdk_bdev_close, which runs before DescInner's memory is freed.
    // Events are delivered on the opening thread, so the Cell is not shared.
    let inner = unsafe { &*(ctx as *const DescInner) };
    if event == sys::SPDK_BDEV_EVENT_REMOVE {
        inner.removed.set(true);
        REMOVALS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Removal events delivered so far, on any thread.
static REMOVALS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many bdev removals SPDK reported: rings compare it with what they
/// saw last instead of asking every descriptor on every poll. (A removal
/// on another thread makes a ring look once for nothing; that is rare.)
#[inline]
pub(crate) fn removal_events() -> u64 {
    REMOVALS.load(std::sync::atomic::Ordering::Relaxed)
}

/// An open bdev. Close it by dropping it, on the thread that opened it
/// (it is `!Send`); it keeps that SPDK thread alive until then.
///
/// When SPDK reports the bdev is being removed, [`is_removed`](Self::is_removed)
/// turns true; drop the descriptor (and its channels) to let removal finish.
#[derive(Clone)]
pub struct BdevDesc {
    pub(crate) inner: Rc<DescInner>,
}

impl std::fmt::Debug for BdevDesc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BdevDesc")
            .field("name", &self.inner.name)
            .field("mode", &self.inner.mode)
            .field("removed", &self.inner.removed.get())
            .finish()
    }
}

impl BdevDesc {
    /// Opens bdev `name` on the SPDK thread of this OS thread.
    pub fn open(name: &str, mode: OpenMode) -> Result<BdevDesc> {
        let thread = SpdkThread::require_current()?;
        let cname = CString::new(name).map_err(|_| Error::BdevNotFound(name.to_string()))?;
        let inner = Rc::new(DescInner {
            desc: Cell::new(std::ptr::null_mut()),
            name: name.to_string(),
            mode,
            removed: Cell::new(false),
            thread,
        });
        let mut desc = std::ptr::null_mut();
        // SAFETY: we are on inner.thread; the event context is the Rc's
        // stable heap address, valid until close (done in DescInner::drop).
        let rc = unsafe {
            sys::spdk_bdev_open_ext(
                cname.as_ptr(),
                mode == OpenMode::ReadWrite,
                Some(bdev_event),
                Rc::as_ptr(&inner) as *mut c_void,
                &mut desc,
            )
        };
        match rc {
            0 => {
                inner.desc.set(desc);
                Ok(BdevDesc { inner })
            }
            rc if rc == -libc::ENODEV => Err(Error::BdevNotFound(name.to_string())),
            rc => Err(Error::from_rc(rc)),
        }
    }

    /// The bdev as it is now.
    pub fn bdev(&self) -> Bdev {
        // SAFETY: an open descriptor keeps its bdev alive.
        unsafe {
            let b = sys::spdk_bdev_desc_get_bdev(self.inner.desc.get());
            Bdev::snapshot(NonNull::new(b).expect("an open descriptor has a bdev"))
        }
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    pub fn mode(&self) -> OpenMode {
        self.inner.mode
    }

    /// True once SPDK sent a REMOVE event for the bdev (hot-remove or delete).
    pub fn is_removed(&self) -> bool {
        self.inner.removed.get()
    }

    /// The thread the descriptor lives on.
    pub fn thread(&self) -> &SpdkThread {
        &self.inner.thread
    }

    /// An I/O channel for this descriptor on its thread.
    pub fn io_channel(&self) -> Result<IoChannel> {
        // SAFETY: desc is open and we are on its thread (it is !Send and its
        // thread is the only SPDK thread of this OS thread).
        let ch = unsafe { sys::spdk_bdev_get_io_channel(self.inner.desc.get()) };
        let ptr = NonNull::new(ch).ok_or(Error::Errno(crate::error::Errno::ENOMEM))?;
        Ok(IoChannel {
            ptr,
            desc: self.clone(),
        })
    }

    pub fn as_ptr(&self) -> *mut sys::spdk_bdev_desc {
        self.inner.desc.get()
    }
}

/// A per-thread I/O channel of one descriptor. It owns a reference to the
/// descriptor, so the descriptor cannot close while the channel exists.
pub struct IoChannel {
    ptr: NonNull<sys::spdk_io_channel>,
    desc: BdevDesc,
}

impl IoChannel {
    pub fn desc(&self) -> &BdevDesc {
        &self.desc
    }

    pub fn as_ptr(&self) -> *mut sys::spdk_io_channel {
        self.ptr.as_ptr()
    }
}

impl std::fmt::Debug for IoChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoChannel")
            .field("bdev", &self.desc.inner.name)
            .finish()
    }
}

impl Drop for IoChannel {
    fn drop(&mut self) {
        // SAFETY: the channel was obtained on this thread and is released
        // once; the descriptor (held in self.desc) is still open.
        unsafe { sys::spdk_put_io_channel(self.ptr.as_ptr()) }
    }
}
