//! DMA-capable buffers from SPDK's memory (`spdk_malloc` with
//! `SPDK_MALLOC_DMA`), the only memory SPDK devices may read and write.

use crate::env::{live_env, EnvToken};
use crate::error::{Errno, Error, Result};
use spdk_ring_sys as sys;
use std::cell::Cell;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};

/// Alignment used by [`DmaBuf::alloc`] when none is given: one 4 KiB page.
pub const DEFAULT_DMA_ALIGN: usize = 4096;

/// An owned, DMA-capable byte buffer.
///
/// `Send` (it can move to another thread) but not `Sync`: while I/O is in
/// flight the ring owns the buffer, so it is never shared with SPDK and safe
/// code at once. The buffer keeps the SPDK environment alive until it is
/// freed.
pub struct DmaBuf {
    // Two words, which Rust moves in registers: buffers go in and out of a
    // ring entry on every I/O. The environment hold is shared (`HOLD`).
    ptr: NonNull<u8>,
    len: usize,
    _not_sync: PhantomData<Cell<()>>,
}

/// The live buffers' shared hold on the environment: the first buffer
/// takes it, the last one freed lets it go (which may finish SPDK).
struct BufferHold {
    live: usize,
    env: Option<Arc<EnvToken>>,
}

static HOLD: Mutex<BufferHold> = Mutex::new(BufferHold { live: 0, env: None });

fn lock_hold() -> std::sync::MutexGuard<'static, BufferHold> {
    HOLD.lock().unwrap_or_else(|p| p.into_inner())
}

/// Counts one more buffer, holding the environment if it is the first.
fn hold_env() -> Result<()> {
    let mut hold = lock_hold();
    if hold.live == 0 {
        hold.env = Some(live_env()?);
    }
    hold.live += 1;
    Ok(())
}

/// Counts one buffer less; the last one releases the environment (outside
/// the lock, as finishing SPDK takes time).
fn release_env() {
    let env = {
        let mut hold = lock_hold();
        hold.live -= 1;
        if hold.live == 0 {
            hold.env.take()
        } else {
            None
        }
    };
    drop(env);
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
        hold_env()?;
        // SAFETY: the environment is initialised (held above); the
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
        let Some(ptr) = NonNull::new(raw as *mut u8) else {
            release_env();
            return Err(Error::Errno(Errno::ENOMEM));
        };
        Ok(DmaBuf {
            ptr,
            len,
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
        // the environment is still alive (this buffer counts in `HOLD`).
        unsafe { sys::spdk_free(self.ptr.as_ptr().cast()) }
        release_env();
    }
}

const _: () = assert!(std::mem::size_of::<DmaBuf>() == 2 * std::mem::size_of::<usize>());
const _: () = assert!(std::mem::size_of::<Option<DmaBuf>>() == std::mem::size_of::<DmaBuf>());
