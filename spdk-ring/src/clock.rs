//! SPDK's time-stamp counter: a few nanoseconds to read, for per-I/O
//! latency measurement in hot loops.

use spdk_ring_sys as sys;

/// The current tick count.
#[inline]
pub fn ticks() -> u64 {
    // SAFETY: reads the CPU's time-stamp counter; no state is touched.
    unsafe { sys::spdk_get_ticks() }
}

/// Ticks per second (0 before the SPDK environment is initialised).
pub fn ticks_hz() -> u64 {
    // SAFETY: reads a value DPDK set at initialisation (0 before).
    unsafe { sys::spdk_get_ticks_hz() }
}
