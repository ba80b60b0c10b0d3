//! One ring per core: the cores of a mask, and SPDK threads pinned to them.
//!
//! The pattern (SPDK's own, with rings): one OS thread per core, pinned to
//! it, with its own SPDK thread; on it, the thread opens its own
//! descriptors, builds its ring and registers its targets. SPDK requires a
//! descriptor to be closed on the thread that opened it, and a channel or
//! qpair to be used from its own thread only, so nothing of that is shared:
//! threads hand each other work through [`RingSender`](crate::RingSender)s.
//!
//! ```no_run
//! use spdk_ring::{BdevDesc, Cores, OpenMode, Ring, SpdkRuntime};
//! let rt = SpdkRuntime::builder()
//!     .env(spdk_ring::SpdkEnv::builder().core_mask("0x3").no_huge(true).mem_size_mb(512))
//!     .build()?;
//! let cores = Cores::from_mask("0x3")?;
//! let workers = cores.spawn("worker", |core, _thread| -> spdk_ring::Result<u64> {
//!     let desc = BdevDesc::open("Null0", OpenMode::ReadWrite)?; // this thread's own
//!     let mut ring = Ring::new(128)?;
//!     let _disk = ring.register_bdev(&desc)?;
//!     // ... this core's loop ...
//!     Ok(u64::from(core))
//! })?;
//! for w in workers {
//!     w.join()??;
//! }
//! # drop(rt);
//! # Ok::<(), spdk_ring::Error>(())
//! ```
//!
//! SPDK's environment pins the thread that starts it to its main core, and
//! threads spawned from it inherit that affinity: without pinning, every
//! worker would share that one core. [`Cores::spawn`] pins each worker to
//! its core before it attaches its SPDK thread.

use crate::error::{Errno, Error, Result};
use crate::thread::{JoinHandle, SpdkThread};

/// A set of CPU cores, in increasing order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cores {
    cores: Vec<u32>,
}

impl Cores {
    /// The cores of a hexadecimal mask as SPDK takes it (`"0x3"` or `"3"`:
    /// cores 0 and 1).
    pub fn from_mask(mask: &str) -> Result<Cores> {
        let hex = mask.trim_start_matches("0x").trim_start_matches("0X");
        let bits = u128::from_str_radix(hex, 16)
            .map_err(|_| Error::InvalidArgument(format!("bad core mask {mask:?}")))?;
        let cores: Vec<u32> = (0..128).filter(|c| bits & (1 << c) != 0).collect();
        if cores.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "core mask {mask:?} selects no core"
            )));
        }
        Ok(Cores { cores })
    }

    /// The cores SPDK's environment was started on (its core mask).
    pub fn of_env() -> Result<Cores> {
        crate::env::live_env()?;
        let mut cores = Vec::new();
        // SAFETY: the environment is initialised (checked above); these
        // only read its core list. u32::MAX ends it.
        let mut core = unsafe { crate::sys::spdk_env_get_first_core() };
        while core != u32::MAX {
            cores.push(core);
            // SAFETY: as above.
            core = unsafe { crate::sys::spdk_env_get_next_core(core) };
        }
        Ok(Cores { cores })
    }

    pub fn as_slice(&self) -> &[u32] {
        &self.cores
    }

    pub fn len(&self) -> usize {
        self.cores.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cores.is_empty()
    }

    /// Runs `f(core, thread)` on one new OS thread per core, each pinned to
    /// its core and with its own SPDK thread (named `{name}-{core}`), which
    /// exits when `f` returns. The handles are in core order.
    pub fn spawn<F, T>(&self, name: &str, f: F) -> Result<Vec<JoinHandle<T>>>
    where
        F: Fn(u32, &SpdkThread) -> T + Send + Clone + 'static,
        T: Send + 'static,
    {
        self.cores
            .iter()
            .map(|&core| {
                let f = f.clone();
                spawn_pinned(&format!("{name}-{core}"), core, move |t| f(core, t))
            })
            .collect()
    }
}

/// Like [`SpdkThread::spawn`], with the new OS thread pinned to `core`
/// before its SPDK thread is attached. A pinning failure (no such core)
/// is the thread's result: [`JoinHandle::join`] returns it.
pub fn spawn_pinned<F, T>(name: &str, core: u32, f: F) -> Result<JoinHandle<T>>
where
    F: FnOnce(&SpdkThread) -> T + Send + 'static,
    T: Send + 'static,
{
    SpdkThread::spawn_with_setup(name, move || pin_current_thread(core), f)
}

/// Pins the calling OS thread to `core`.
pub fn pin_current_thread(core: u32) -> Result<()> {
    let core = core as usize;
    // SAFETY: cpu_set_t is plain data, zeroed is its empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    if core >= 8 * std::mem::size_of::<libc::cpu_set_t>() {
        return Err(Error::InvalidArgument(format!("no core {core}")));
    }
    // SAFETY: core is within the set (checked above).
    unsafe { libc::CPU_SET(core, &mut set) };
    // SAFETY: set is a valid cpu_set_t of the size given; 0 is this thread.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        let errno = std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EINVAL);
        return Err(Error::Errno(Errno(errno)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_masks_parse_like_spdk_takes_them() {
        assert_eq!(Cores::from_mask("0x3").unwrap().as_slice(), [0, 1]);
        assert_eq!(Cores::from_mask("a").unwrap().as_slice(), [1, 3]);
        assert_eq!(Cores::from_mask("0X10").unwrap().as_slice(), [4]);
        assert!(Cores::from_mask("0x0").is_err());
        assert!(Cores::from_mask("zz").is_err());
        assert!(Cores::from_mask("").is_err());
    }
}
