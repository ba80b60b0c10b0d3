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

/// The tick count at the end of this thread's last `spdk_thread_poll`
/// (SPDK's `spdk_thread_get_last_tsc`): after [`Ring::poll`](crate::Ring::poll)
/// returns, the time of that poll, read without touching the counter. A
/// round's timestamp for every completion it handed out, as a hot loop
/// reads [`ticks`] once per poll. `None` on a thread with no SPDK thread.
///
/// ```no_run
/// # fn demo(ring: &mut spdk_ring::Ring) {
/// ring.poll();
/// let polled_at = spdk_ring::clock::last_poll_ticks().expect("an SPDK thread");
/// assert!(polled_at <= spdk_ring::clock::ticks());
/// # }
/// ```
#[inline]
pub fn last_poll_ticks() -> Option<u64> {
    // SAFETY: returns this OS thread's SPDK thread, or null; touches nothing.
    let thread = unsafe { sys::spdk_get_thread() };
    if thread.is_null() {
        return None;
    }
    // SAFETY: `thread` is this thread's live SPDK thread (it cannot exit
    // while we run on it); the call reads one field.
    Some(unsafe { sys::spdk_thread_get_last_tsc(thread) })
}
