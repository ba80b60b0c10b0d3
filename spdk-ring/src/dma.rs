//! DMA-capable buffers from SPDK's memory (`spdk_malloc` with
//! `SPDK_MALLOC_DMA`), the only memory SPDK devices may read and write.

use crate::env::{live_env, EnvToken};
use crate::error::{Errno, Error, Result};
use spdk_ring_sys as sys;
use std::cell::Cell;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::sync::Arc;

/// Alignment used by [`DmaBuf::alloc`] when none is given: one 4 KiB page.
pub const DEFAULT_DMA_ALIGN: usize = 4096;

/// An owned, DMA-capable byte buffer.
///
/// `Send` (it can move to another thread) but not `Sync`: while I/O is in
/// flight the ring owns the buffer, so it is never shared with SPDK and safe
/// code at once. The buffer keeps the SPDK environment alive until it is
/// freed.
pub struct DmaBuf {
    // Kept to three words: buffers travel inside every ring entry.
    ptr: NonNull<u8>,
    len: usize,
    _env: Arc<EnvToken>,
    _not_sync: PhantomData<Cell<()>>,
}

// SAFETY: the buffer is uniquely owned memory from SPDK's thread-safe
// allocator; spdk_free may be called from any thread.
unsafe impl Send for DmaBuf {}

impl DmaBuf {
    /// `len` bytes aligned to `align` (a power of two, 0 for
    /// [`DEFAULT_DMA_ALIGN`]). Contents are unspecified.
    pub fn alloc(len: usize, align: usize) -> Result<DmaBuf> {
        Self::allocate(len, align, false)
    }

    /// Like [`alloc`](Self::alloc), filled with zeros.
    pub fn alloc_zeroed(len: usize, align: usize) -> Result<DmaBuf> {
        Self::allocate(len, align, true)
    }

    /// A zeroed buffer holding a copy of `data`, aligned to a page.
    pub fn from_slice(data: &[u8]) -> Result<DmaBuf> {
        let mut buf = Self::alloc(data.len(), 0)?;
        buf.copy_from_slice(data);
        Ok(buf)
    }

    fn allocate(len: usize, align: usize, zeroed: bool) -> Result<DmaBuf> {
        let align = if align == 0 { DEFAULT_DMA_ALIGN } else { align };
        if len == 0 {
            return Err(Error::InvalidArgument(
                "DMA buffer length must be > 0".into(),
            ));
        }
        if !align.is_power_of_two() {
            return Err(Error::InvalidArgument(format!(
                "alignment {align} is not a power of two"
            )));
        }
        let env = live_env()?;
        // SAFETY: the environment is initialised (env token held); the
        // arguments are validated; a null return is handled.
        let raw = unsafe {
            let numa = sys::SPDK_ENV_NUMA_ID_ANY;
            let flags = sys::SPDK_MALLOC_DMA;
            if zeroed {
                sys::spdk_zmalloc(len, align, std::ptr::null_mut(), numa, flags)
            } else {
                sys::spdk_malloc(len, align, std::ptr::null_mut(), numa, flags)
            }
        };
        let ptr = NonNull::new(raw as *mut u8).ok_or(Error::Errno(Errno::ENOMEM))?;
        Ok(DmaBuf {
            ptr,
            len,
            _env: env,
            _not_sync: PhantomData,
        })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: empty buffers cannot be allocated.
    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn as_slice(&self) -> &[u8] {
        self
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        self
    }

    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }
}

impl Deref for DmaBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: ptr points to len bytes owned by self for its lifetime;
        // the bytes come from C memory, which Rust treats as initialised.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for DmaBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in deref, and &mut self guarantees exclusivity.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl std::fmt::Debug for DmaBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DmaBuf").field("len", &self.len).finish()
    }
}

impl Drop for DmaBuf {
    fn drop(&mut self) {
        // SAFETY: ptr came from spdk_malloc/spdk_zmalloc, is freed once, and
        // the environment is still alive (we hold a token).
        unsafe { sys::spdk_free(self.ptr.as_ptr().cast()) }
    }
}
