//! The FFI-free queueing core ("sans-I/O") behind the io_uring-style ring API.
//!
//! [`RingQueue`] owns every queue and every ordering rule; it never performs
//! I/O, never reads a clock and never looks inside the driver's `Op` type. The
//! driver (the SPDK glue) maps [`Driver::start`]/[`Driver::abort`] onto SPDK
//! calls and feeds SPDK callbacks back through [`RingQueue::complete`]. Time is
//! an input: every call that can arm or fire a timer takes `now` in nanoseconds
//! from an arbitrary, monotonic epoch.
//!
//! # Life of an entry
//!
//! ```text
//!  push ──► SQ ──submit──► slot: Waiting ──start──► InFlight (Io) ──complete()──► CQ
//!                 │                 │          └──► Armed (Timeout) ──fires/count──► CQ
//!                 │                 └── Nop / Cancel / Immediate / Failed / invalid ► CQ
//!                 └── chain longer than max_in_flight: EINVAL ──────────────────────► CQ
//! ```
//!
//! * **SQ** – a bounded FIFO (`sq_entries`). [`RingQueue::push`] hands the
//!   submission back in the error when full.
//! * **Slots** – an entry lives in one preallocated cell from `push` until its
//!   completion is popped, and never moves in between: the SQ and the CQ hold
//!   slot indices, so the op (with its buffers) is written once on `push` and
//!   read out once when reaped ([`RingQueue::pop_completion_map`] moves out
//!   only what the caller asks for, and [`RingQueue::front_completion`] lets
//!   the caller read the completion in its slot before
//!   [`RingQueue::discard_front`] pops it). There are
//!   `sq_entries + max_in_flight + cq_entries` slots
//!   ([`QueueConfig::slot_count`]); at most `max_in_flight` entries are live
//!   (taken by `submit` and not completed), whatever they are waiting for.
//!   Each time an entry stops being live its slot's generation is bumped, and
//!   a [`Token`] names (index, generation), so a late or duplicated
//!   `complete()` for an earlier occupant is ignored (`complete` returns
//!   `false`).
//! * **Starting** – `submit` and `advance` walk the waiting entries in push
//!   order and start each one whose gates are open:
//!   - *LINK*: a chain is a maximal run of entries each carrying LINK, plus the
//!     entry after the last one; a chain still open at the end of the SQ when
//!     `submit` runs ends there. A chain moves into slots as a unit (or waits),
//!     and a chain longer than `max_in_flight` completes entirely with EINVAL.
//!     A member starts only after the previous member completed `Ok`; after a
//!     failure every later member completes ECANCELED, in order.
//!   - *DRAIN*: the entry starts only when every earlier entry has completed,
//!     and no later entry starts until it has completed.
//!   - *Targets*: ready Io entries of one target start in push order. A chain
//!     member becomes ready (and takes its push-order place in its target's
//!     line) when its predecessor succeeds, so a waiting chain never holds back
//!     independent entries. A `NoMem` answer blocks the
//!     target with that entry first in line until [`RingQueue::unblock`]; other
//!     targets keep going. An Io entry for a target index outside
//!     `0..max_targets` completes EINVAL when it would start.
//! * **Timers** – `Timeout` arms when it starts; `LinkTimeout` arms when the
//!   entry before it starts and, if it fires first, aborts that entry through
//!   the driver. The chain after a LinkTimeout follows its target's result, not
//!   the LinkTimeout's own (ECANCELED when the target won, ETIME when the timer
//!   won). A LinkTimeout that heads a chain, follows another LinkTimeout, or
//!   carries DRAIN cannot attach and completes EINVAL when it would start.
//! * **Cancel** – acts on the first live entry (push order) with the given
//!   `user_data`, among entries already taken from the SQ: not started ->
//!   ECANCELED; in the driver -> [`Driver::abort`] (`Ok(0)`, or EALREADY if the
//!   target cannot abort); armed timer -> ECANCELED; none -> ENOENT. A not-yet
//!   started chain member whose predecessor is still running is only marked:
//!   it completes ECANCELED when the chain reaches it, so chains always complete
//!   in order. Entries still in the SQ are not searched (they are not submitted
//!   yet, as in io_uring), nor is the Cancel entry itself. An armed
//!   LinkTimeout can be cancelled too: it completes ECANCELED and the chain
//!   keeps following its target.
//!
//! * **Count timeouts** – `Timeout { count > 0 }` completes `Ok(0)` once
//!   `count` completions of any other entry were posted after it armed
//!   (rejected and cancelled entries count too).
//!
//! * **Immediate** – an op with no target ([`EntryKind::Immediate`]) that the
//!   driver carries out on the spot ([`Driver::run_immediate`]) when the entry
//!   starts; it obeys LINK and DRAIN like any entry and completes with the
//!   driver's answer.
//!
//! * **Skip success** – an entry flagged [`EntryFlags::SKIP_SUCCESS`] that
//!   succeeds posts nothing: its slot is freed where it would have been
//!   posted, its chain continues as after any success, and count timeouts do
//!   not count it. A failure (ECANCELED included) is posted as usual.
//!
//! [`RingQueue::complete`] never needs the driver: it only records the result
//! and resolves what follows without starting anything (chain failures, link
//! timeouts, count-based timeouts). Whatever becomes startable is started by
//! the next `submit`/`advance`, which is where the driver is lent to the core.
//!
//! # Completion queue and overflow contract
//!
//! The CQ holds `cq_entries` completions. The core never drops one: when the
//! CQ is full, further completions go to an unbounded backlog and
//! [`RingQueue::overflowed`] counts them. Completions are always delivered in
//! the order they were posted; popping from the CQ refills it from the
//! backlog. A backlogged completion is moved out of its slot (freeing it for
//! the entries behind it) and back into one when it reaches the CQ. The backlog is the only structure that may allocate, and only while
//! the consumer lags behind: it keeps its capacity afterwards, so a consumer
//! that reaps at least as fast as it submits never causes an allocation.
//! `overflowed() > 0` is the signal to reap more often or size the CQ larger.
//!
//! # Allocation
//!
//! [`RingQueue::new`] preallocates the slots, the SQ, the per-target
//! table, the timer heaps and the CQ. After that, push / submit / complete /
//! advance / pop never allocate (verified by a counting-allocator test), except
//! for the backlog described above.
//!
//! # Shutdown
//!
//! [`RingQueue::cancel_unstarted`] completes everything that has not started
//! (SQ, waiting entries, armed timers) with ECANCELED; then the driver
//! completes or aborts what it has in flight until [`RingQueue::is_quiescent`].
//! Every pushed submission completes exactly once.

#![deny(unsafe_code)]
#![warn(missing_docs)]

mod cq_order;
mod heap;
mod lists;
mod mailbox;
mod ring;
mod types;

#[cfg(test)]
mod alloc_test;
#[cfg(test)]
mod mock;
#[cfg(test)]
mod prop_tests;
#[cfg(test)]
mod tests;

pub use cq_order::CqFront;
pub use mailbox::{Mailbox, Refused, Sent};
pub use ring::{Completions, FrontCompletion, RingQueue};
pub use types::{
    errno_name, Completion, CompletionFlags, ConfigError, Driver, EntryFlags, EntryKind, IoError,
    IoResult, NvmeStatus, PushError, QueueConfig, StartOutcome, Submission, TargetId, Token,
    EALREADY, ECANCELED, EINVAL, EIO, ENODEV, ENOENT, ENOMEM, ETIME,
};
