//! Time from async code, on the ring's own timers: `sleep` (a `Timeout`
//! entry), `timeout` (any future raced against one; the loser is dropped,
//! which cancels its entries), and `submit_with_timeout` (an entry bounded
//! by a `LinkTimeout`: the ring aborts it when the time is up).

use crate::ring::Completion;
use std::fmt;

/// The future given to [`AsyncRing::timeout`](super::AsyncRing::timeout)
/// did not finish in time; it was dropped (its entries cancelled).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("deadline elapsed")
    }
}

impl std::error::Error for Elapsed {}

/// What [`AsyncRing::submit_with_timeout`](super::AsyncRing::submit_with_timeout)
/// returns: the entry's completion, and whether its `LinkTimeout` fired.
#[derive(Debug)]
pub struct TimedCompletion {
    /// The entry's own completion. When the timeout fired and SPDK could
    /// abort the entry, it failed `ECANCELED`; a bdev that cannot abort
    /// finishes it with its real result.
    pub completion: Completion,
    /// The `LinkTimeout` completed `ETIME`: the entry took longer than
    /// the time allowed.
    pub timed_out: bool,
}
