//! Forwarding: entries that one ring's thread hands to another ring to run,
//! and their completions coming back.
//!
//! Every ring has a shared part (`Shared`, behind an `Arc`) that other
//! threads reach through a [`RingSender`]: three bounded mailboxes
//! (`queue::Mailbox`, preallocated when the ring is built) and a doorbell.
//!
//! ```text
//!  ring A (core 0)                         ring B (core 1)
//!  forward(&b_sender, entry) ──inbox──►  poll: start through B's driver
//!                                          (B's targets, checks, channel)
//!  poll: returns → A's CQ   ◄──returns──   SPDK callback → result + buffer
//! ```
//!
//! - Only [`ForwardEntry`]s cross threads: they are made from the builders
//!   of single-buffer bdev and NVMe entries (`From<opcode::Read>` and the
//!   like), whose buffers are `DmaBuf`s; blob entries hold thread-bound
//!   handles and have no such conversion, so forwarding one does not
//!   compile.
//! - A forwarded entry runs on the target ring beside that ring's own
//!   entries but outside its ordering: LINK, DRAIN and Cancel on the target
//!   ring do not see it, and it never appears in the target ring's CQ.
//!   Nor do they on the forwarding ring: Cancel does not reach a forwarded
//!   entry, DRAIN does not wait for it, and `in_flight` does not count it
//!   ([`Ring::forwarded_out`] does).
//! - Its completion comes back to the forwarding ring's CQ with its
//!   `user_data`, its result and its buffer, through the same door as the
//!   lane's completions (a lane slot posted with `post_outside`): one CQ
//!   bound, one overflow flag and count, one order.
//! - Nothing blocks and nothing is allocated per entry: a full target
//!   mailbox, or a forwarding ring with as many entries out as its return
//!   mailbox holds, hands the entry back ([`ForwardError`]).
//!
//! **When a ring is dropped first.** Each forwarded entry completes exactly
//! once:
//! - the target ring goes: entries it already started finish (its drop waits
//!   for them, as for its own) and come back with their result; entries
//!   still queued in its mailbox come back `ECANCELED` with their buffers;
//!   forwarding to it from then on completes `ECANCELED` at once;
//! - the forwarding ring goes: entries it forwarded still run to the end on
//!   their target; their completions are discarded there (the buffers are
//!   freed), since no CQ is left to take them.

mod run;

use super::op::IoOp;
use super::wake::RingWaker;
use super::{opcode, Entry, Ring};
use crate::dma::DmaBuf;
use crate::queue::{EntryKind, IoError, IoResult, Mailbox, Refused, Sent, TargetId};
use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// An entry that may run on another thread's ring: a single-buffer bdev or
/// NVMe entry, made from its builder with `From`/`Into`.
///
/// ```no_run
/// # fn demo(ring: &mut spdk_ring::Ring, core1: &spdk_ring::RingSender,
/// #         disk_on_core1: spdk_ring::Target, buf: spdk_ring::DmaBuf) {
/// use spdk_ring::{opcode, ForwardEntry};
/// let entry = ForwardEntry::from(opcode::Write::new(disk_on_core1, buf, 0)).user_data(7);
/// ring.forward(core1, entry).expect("room to forward");
/// // ... later, in this ring's CQ: user_data 7, the result, the buffer.
/// # }
/// ```
///
/// The target handle must be one the *target* ring registered (an entry
/// naming another ring's target completes `EBADF`). Forwarded entries
/// carry no flags: LINK and DRAIN order entries within one ring. Vectored
/// entries are not forwarded (their completion would need a vector in the
/// forwarding ring's CQ, where a lane slot holds one buffer).
pub struct ForwardEntry {
    target: TargetId,
    op: IoOp,
    user_data: u64,
}

// SAFETY: a ForwardEntry is only made by the `From` impls below, from
// builders whose ops hold `DmaBuf`s (Send) and plain values: never a raw
// pointer (`RawIo`) nor a blob handle (`Rc`), the parts that make `IoOp`
// `!Send`.
unsafe impl Send for ForwardEntry {}

/// `From<builder>` for the builders whose entries may be forwarded.
macro_rules! forwardable {
    ($($builder:ident),*) => {$(
        impl From<opcode::$builder> for ForwardEntry {
            fn from(builder: opcode::$builder) -> ForwardEntry {
                ForwardEntry::from_io_entry(builder.build())
            }
        }
    )*};
}

forwardable!(
    Read,
    Write,
    Compare,
    WriteZeroes,
    Unmap,
    Flush,
    Reset,
    NvmePassthru
);

impl ForwardEntry {
    /// The caller's tag, returned in the forwarding ring's CQ.
    pub fn user_data(mut self, user_data: u64) -> ForwardEntry {
        self.user_data = user_data;
        self
    }

    pub fn get_user_data(&self) -> u64 {
        self.user_data
    }

    /// An I/O entry from one of the forwardable builders.
    fn from_io_entry(entry: Entry) -> ForwardEntry {
        let submission = entry.submission;
        match submission.kind {
            EntryKind::Io { target, op } => ForwardEntry {
                target,
                op,
                user_data: submission.user_data,
            },
            _ => unreachable!("the forwardable builders make I/O entries"),
        }
    }

    /// The entry's buffer (for one handed back by [`Ring::forward`] and
    /// not retried), dropping the rest.
    pub fn into_buf(mut self) -> Option<DmaBuf> {
        self.op.take_single_buf()
    }

    /// Back into an ordinary entry, e.g. to push it locally instead.
    pub fn into_entry(self) -> Entry {
        Entry::from_submission(crate::queue::Submission::io(
            self.target,
            self.op,
            self.user_data,
        ))
    }
}

impl fmt::Debug for ForwardEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ForwardEntry")
            .field("user_data", &self.user_data)
            .finish_non_exhaustive()
    }
}

/// [`Ring::forward`] did not take the entry: the target ring's mailbox is
/// full, or this ring has as many forwarded entries out as it can take
/// back. Poll (here and there) and retry; the entry is untouched.
#[derive(Debug)]
pub struct ForwardError {
    pub entry: ForwardEntry,
}

impl fmt::Display for ForwardError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no room to forward now (entry user_data {})",
            self.entry.user_data
        )
    }
}

impl std::error::Error for ForwardError {}

/// A handle to a ring for other threads: `Send + Clone`. Through it a ring
/// on another thread forwards entries ([`Ring::forward`]) or posts messages
/// ([`opcode::MsgRing`]) to this ring. It keeps the ring's mailboxes alive,
/// not the ring: once the ring is dropped, forwarded entries complete
/// `ECANCELED` and messages `ENXIO`.
#[derive(Clone)]
pub struct RingSender {
    pub(super) shared: Arc<Shared>,
}

impl RingSender {
    /// Whether the ring is gone (dropped, or being dropped).
    pub fn is_closed(&self) -> bool {
        self.shared.inbox.is_closed()
    }
}

impl fmt::Debug for RingSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RingSender")
            .field("ring_id", &self.shared.ring_id)
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// The part of a ring other threads reach: its mailboxes and doorbell.
pub(super) struct Shared {
    ring_id: u32,
    /// Entries other rings forwarded here, to run.
    pub(super) inbox: Mailbox<Forwarded>,
    /// Completions of entries this ring forwarded, coming back.
    pub(super) returns: Mailbox<Returned>,
    /// `MsgRing` messages for this ring's CQ.
    pub(super) messages: Mailbox<Message>,
    /// Rung by producers, answered by the ring's poll.
    doorbell: Doorbell,
    /// More completions were ready than the CQ holds at the ring's last poll.
    pub(super) overflowing: AtomicBool,
    /// Interrupt mode: makes the ring's fd readable (`wake.rs`).
    waker: Option<Arc<RingWaker>>,
}

impl Shared {
    fn new(ring_id: u32, capacity: usize, waker: Option<Arc<RingWaker>>) -> Shared {
        Shared {
            waker,
            ring_id,
            inbox: Mailbox::new(capacity),
            returns: Mailbox::new(capacity),
            messages: Mailbox::new(capacity),
            doorbell: Doorbell(AtomicBool::new(false)),
            overflowing: AtomicBool::new(false),
        }
    }

    /// Tells the ring that something arrived in one of its mailboxes:
    /// rings the doorbell its `poll` answers and, in interrupt mode, makes
    /// its fd readable so that a loop sleeping on it calls that `poll`.
    /// Every producer-side notification goes through here.
    #[inline]
    pub(super) fn notify_target(&self) {
        // A bell already rung is left alone: producers sending a burst
        // write its line once per poll of the ring, not once per entry; the
        // producer that rang it wakes the fd (after ringing, so the poll
        // that consumes the wake finds the bell).
        if !self.doorbell.0.load(Ordering::Relaxed) {
            self.doorbell.0.store(true, Ordering::Release);
            if let Some(waker) = &self.waker {
                waker.wake();
            }
        }
    }

    /// Whether the bell rang since the last call (ring thread).
    #[inline]
    fn answer_doorbell(&self) -> bool {
        self.doorbell.0.load(Ordering::Relaxed) && self.doorbell.0.swap(false, Ordering::Acquire)
    }

    /// Hands a completion back to this (forwarding) ring; discarded if the
    /// ring is gone.
    fn deliver(&self, returned: Returned) {
        match self.returns.send(returned, drop) {
            Ok(Sent::Queued) => self.notify_target(),
            // The forwarding ring is gone: nobody takes the completion.
            Ok(Sent::Closed) | Err(Refused::Closed(_)) => {}
            Err(Refused::Full(_)) => {
                // A ring forwards at most as many entries as its return
                // mailbox holds, so this cannot happen.
                debug_assert!(false, "a return mailbox overflowed");
            }
        }
    }
}

/// The doorbell on a cache line of its own: producers write it, and the
/// flags beside it are read by every send.
#[repr(align(128))]
struct Doorbell(AtomicBool);

/// An entry on its way to (or running on) its target ring.
pub(super) struct Forwarded {
    entry: ForwardEntry,
    reply_to: Arc<Shared>,
}

impl Forwarded {
    /// Sends the result, with the buffer, back to the forwarding ring.
    fn finish(mut self, result: IoResult) {
        let buf = self.entry.op.take_single_buf();
        self.reply_to.deliver(Returned {
            user_data: self.entry.user_data,
            result,
            buf,
        });
    }

    /// Its target ring went away before starting it.
    fn cancel(self) {
        self.finish(Err(IoError::errno(libc::ECANCELED)));
    }
}

/// A forwarded entry's completion on its way back.
pub(super) struct Returned {
    user_data: u64,
    result: IoResult,
    buf: Option<DmaBuf>,
}

/// A `MsgRing` message: a completion to post as it is.
pub(super) struct Message {
    pub(super) user_data: u64,
    pub(super) value: u32,
}

/// A ring's side of forwarding: its shared part, the forwarded entries it
/// runs for other rings, and how many of its own are out.
pub(super) struct Forwarding {
    pub(super) shared: Arc<Shared>,
    /// The first driver slot of forwarded entries: a completion whose slot
    /// index is at or above it belongs to one of them.
    pub(super) base: u32,
    /// Forwarded entries taken from the mailbox and not finished, by slot.
    running: Box<[Option<Forwarded>]>,
    /// Free slots of `running`.
    free: Vec<u32>,
    /// Slots whose start SPDK answered ENOMEM: retried first, in order.
    waiting: VecDeque<u32>,
    /// Entries this ring forwarded whose completion has not come back.
    outstanding: usize,
    /// Work left for the next poll (ENOMEM waits, or returns, messages or
    /// forwarded entries that found no room this time).
    leftover: bool,
    /// `RingQueue::overflowed` when the overflow state was last published.
    overflow_seen: u64,
}

impl Forwarding {
    /// Whether the last poll left forwarded entries, returns or messages
    /// for a later one (no room this time): the ring has work without a
    /// new wake, so its fd must stay readable.
    pub(super) fn has_leftover(&self) -> bool {
        self.leftover
    }

    /// `capacity` entries in each direction; forwarded entries use the
    /// driver slots from `base` on.
    pub(super) fn new(
        ring_id: u32,
        capacity: u32,
        base: u32,
        waker: Option<Arc<RingWaker>>,
    ) -> Forwarding {
        let n = capacity as usize;
        Forwarding {
            shared: Arc::new(Shared::new(ring_id, n, waker)),
            base,
            running: (0..n).map(|_| None).collect(),
            free: (0..capacity).rev().collect(),
            waiting: VecDeque::with_capacity(n),
            outstanding: 0,
            leftover: false,
            overflow_seen: 0,
        }
    }
}

impl Ring {
    /// A `Send + Clone` handle through which rings on other threads
    /// forward entries to this one ([`Ring::forward`]) or post messages
    /// into its CQ ([`opcode::MsgRing`]). This ring takes them in `poll`.
    pub fn sender(&self) -> RingSender {
        RingSender {
            shared: self.forwarding.shared.clone(),
        }
    }

    /// Has the ring behind `to` run `entry`; the completion comes back to
    /// this ring's CQ with the entry's `user_data` and buffer (see the
    /// [`forward`](self) module docs, also for rings dropped first).
    ///
    /// Hands the entry back when the target's mailbox is full, or when
    /// this ring has as many forwarded entries out as it can take back
    /// (`RingBuilder::forward_entries`). Allocates nothing, takes no lock.
    pub fn forward(
        &mut self,
        to: &RingSender,
        entry: ForwardEntry,
    ) -> std::result::Result<(), ForwardError> {
        let f = &mut self.forwarding;
        if f.outstanding >= f.shared.returns.capacity() {
            return Err(ForwardError { entry });
        }
        let forwarded = Forwarded {
            entry,
            reply_to: f.shared.clone(),
        };
        match to.shared.inbox.send(forwarded, Forwarded::cancel) {
            Ok(Sent::Queued) => to.shared.notify_target(),
            // The target went away meanwhile: the entry came back ECANCELED.
            Ok(Sent::Closed) => {}
            Err(Refused::Closed(forwarded)) => forwarded.cancel(),
            Err(Refused::Full(forwarded)) => {
                return Err(ForwardError {
                    entry: forwarded.entry,
                })
            }
        }
        f.outstanding += 1;
        Ok(())
    }

    /// Entries this ring forwarded whose completion has not reached its
    /// CQ yet.
    pub fn forwarded_out(&self) -> usize {
        self.forwarding.outstanding
    }

    /// `poll`'s part: forwarded entries to run, completions and messages to
    /// post. One load when nothing came.
    #[inline]
    pub(super) fn poll_forwarding(&mut self) {
        if self.forwarding.leftover || self.forwarding.shared.answer_doorbell() {
            self.forwarding.leftover = false;
            self.take_returns_and_messages();
            self.run_forwarded();
        }
        if self.queue.overflowed() != self.forwarding.overflow_seen
            || self.forwarding.shared.overflowing.load(Ordering::Relaxed)
        {
            self.publish_overflow();
        }
    }

    /// Posts forwarded entries' completions and messages to the CQ, while
    /// the lane has slots to carry them.
    #[inline(never)]
    fn take_returns_and_messages(&mut self) {
        let Forwarding {
            shared,
            outstanding,
            leftover,
            ..
        } = &mut *self.forwarding;
        let lane = &mut self.driver.lane;
        let mut posted = 0;
        while lane.has_room() {
            let Some(r) = shared.returns.pop() else { break };
            *outstanding -= 1;
            // Cannot fail: a slot is free.
            let _ = lane.post_completion(r.user_data, r.result, r.buf);
            posted += 1;
        }
        while lane.has_room() {
            let Some(m) = shared.messages.pop() else {
                break;
            };
            let _ = lane.post_completion(m.user_data, Ok(u64::from(m.value)), None);
            posted += 1;
        }
        let more = !shared.returns.is_empty() || !shared.messages.is_empty();
        if more && !lane.has_room() {
            *leftover = true;
        }
        self.queue.post_outside(posted);
    }

    #[cold]
    fn publish_overflow(&mut self) {
        self.forwarding.overflow_seen = self.queue.overflowed();
        let overflowing = self.queue.is_overflowing();
        self.forwarding
            .shared
            .overflowing
            .store(overflowing, Ordering::Relaxed);
    }

    /// Dropping the ring: no more forwarded entries or messages are taken;
    /// those waiting go back `ECANCELED` (messages are dropped), and
    /// completions still coming back to this ring are discarded.
    pub(super) fn close_forwarding(&mut self) {
        let f = &mut *self.forwarding;
        f.shared.inbox.close(Forwarded::cancel);
        while let Some(slot) = f.waiting.pop_front() {
            if let Some(forwarded) = f.running[slot as usize].take() {
                forwarded.cancel();
            }
            f.free.push(slot);
        }
        f.shared.messages.close(drop);
        f.shared.returns.close(drop);
    }
}
