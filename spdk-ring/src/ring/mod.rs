//! The ring: a submission queue and a completion queue on one SPDK thread.
//!
//! ```no_run
//! use spdk_ring::{opcode, BdevDesc, DmaBuf, OpenMode, Ring, SpdkRuntime, JsonConfig};
//! let rt = SpdkRuntime::builder()
//!     .no_huge(true)
//!     .mem_size_mb(1024)
//!     .json_config(JsonConfig::new().malloc_bdev("Malloc0", 8192, 512).to_json())
//!     .build()?;
//! let desc = BdevDesc::open("Malloc0", OpenMode::ReadWrite)?;
//! let mut ring = Ring::new(64)?;
//! let disk = ring.register_bdev(&desc)?;
//!
//! let buf = DmaBuf::from_slice(&[0xAB; 4096])?;
//! ring.push(opcode::Write::new(disk, buf, 0).build().user_data(1)).expect("SQ has room");
//! ring.submit_and_wait(1, std::time::Duration::from_secs(5))?;
//! for mut done in ring.completions() {
//!     assert_eq!(done.user_data(), 1);
//!     assert_eq!(done.result(), Ok(4096));
//!     let _buf_back = done.take_buf();
//! }
//! # Ok::<(), spdk_ring::Error>(())
//! ```
//!
//! `completions()` and `next_completion()` hand out owned [`Completion`]s.
//! Hot loops use [`Ring::reap`] instead, which reads each completion in its
//! slot ([`CompletionRef`]) and moves the buffer straight out of it.
//!
//! ## Errors of entries
//! Bad entries never reach SPDK; they complete with an errno:
//!
//! | Condition | errno |
//! |-----------|-------|
//! | target not registered with this ring, or unregistered | `EBADF` |
//! | write, write-zeroes or unmap on a read-only descriptor | `EBADF` |
//! | bdev removed (hot-remove, delete) | `ENODEV` |
//! | I/O type the bdev does not support | `ENOTSUP` |
//! | `offset + num_blocks` beyond the bdev, zero blocks | `EINVAL` |
//! | buffer not a whole number of blocks (no `num_blocks`), or shorter than `num_blocks` | `EINVAL` |
//! | more than [`MAX_IOVECS`] buffers, or none | `EINVAL` |
//! | `LinkTimeout` not right after a `LINK` entry | `EINVAL` |
//! | a later entry of a failed `LINK` chain | `ECANCELED` |
//! | `MsgRing`: the target's CQ overflowing, or its message mailbox full | `EOVERFLOW` |
//! | `MsgRing`: the target ring is gone | `ENXIO` |
//!
//! SPDK's own failures keep their errno (`EIO` for a generic device error,
//! `ECANCELED` for an aborted I/O, `EILSEQ` for a compare miscompare) and,
//! on NVMe-backed bdevs, the NVMe status ([`IoFailure::nvme_status`]).
//! `ENOMEM` from SPDK is never reported: the entry waits for memory and is
//! retried in order.
//!
//! ## Two paths, one set of rules
//! A plain `Read` or `Write` on a bdev, without flags, pushed while the
//! ring's core holds nothing (no queued, running or unreaped entry), takes
//! a lighter path, the lane: a one-cache-line slot that is also SPDK's
//! callback argument. Every other entry, and every entry pushed while the
//! core is busy, goes through the core, which implements LINK, DRAIN,
//! Cancel, timeouts and overflow. The difference is not observable except
//! in speed: lane entries are older than every core entry, start first,
//! are waited for by DRAIN, found first by Cancel, and their completions
//! are posted to the core in the order SPDK reported them, among the
//! core's own: one CQ bound, one overflow flag and count, one order, and
//! count Timeouts count them. An ENOMEM stops the lane in order until
//! SPDK's io-wait callback, as it stops a target's line in the core.
//! `Ring::in_flight`, `sq_len` and `cq_len` count both.
//!
//! [`RingBuilder::lane`]`(false)` sends every entry through the core, a
//! diagnostic: a differential test runs random programs both ways and
//! requires identical observations.
//!
//! ## Completion queue overflow
//! The CQ never drops a completion. If it is full, completions wait in a
//! backlog, flagged [`CompletionFlags::OVERFLOWED`](crate::CompletionFlags)
//! and counted in [`RingStats::overflowed`]; draining the CQ refills it from the
//! backlog in order, and `cq_len` never exceeds the CQ's size. The backlog
//! of core entries allocates; lane entries wait in their own slots. Size
//! the CQ (default: twice the SQ) so that draining once per poll keeps it
//! from filling.
//!
//! ## Embedding in an event loop
//! With SPDK in interrupt mode (`interrupt_mode(true)` on the
//! [`SpdkRuntime`](crate::SpdkRuntime) builder; process-wide, off by
//! default), a ring has an fd ([`Ring::fd`], [`AsFd`](std::os::fd::AsFd))
//! that a foreign loop (epoll, mio, libevent, asio) watches for readability
//! beside its own fds. It is level-triggered and readable exactly while
//! [`Ring::poll`] or reaping can make progress: SPDK work on the ring's
//! thread (a message, a due timed poller, a bdev completion fd), completions
//! in the CQ, entries pushed and not yet handed to SPDK, a due Timeout or
//! LinkTimeout, NVMe qpairs due a poll, or a wake from another thread.
//!
//! ```no_run
//! # fn demo(ring: &mut spdk_ring::Ring) {
//! use std::os::fd::AsRawFd;
//! // Once: register the ring's fd (EPOLLIN, level-triggered).
//! let epfd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
//! let mut ev = libc::epoll_event { events: libc::EPOLLIN as u32, u64: 0 };
//! unsafe { libc::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, ring.as_raw_fd(), &mut ev) };
//! loop {
//!     // Sleep until the fd is readable or the ring's next deadline.
//!     let ms = ring.next_timeout().map_or(-1, |t| t.as_nanos().div_ceil(1_000_000) as i32);
//!     let mut events = [libc::epoll_event { events: 0, u64: 0 }; 8];
//!     unsafe { libc::epoll_wait(epfd, events.as_mut_ptr(), 8, ms) };
//!     // Whatever woke the loop: poll, then reap (and push new work).
//!     ring.poll();
//!     while let Some(done) = ring.next_completion() {
//!         let _ = (done.user_data(), done.result());
//!     }
//! }
//! # }
//! ```
//!
//! What the loop must do: call `poll` when the fd is readable (or the
//! timeout passed), and reap until the CQ is empty; pushing needs no call
//! (a push makes the fd readable). The fd stays readable while completions
//! wait unreaped, so a loop that only polls spins. Passing
//! [`Ring::next_timeout`] to `epoll_wait` is optional in interrupt mode
//! (the ring arms a timerfd of its own for Timeout and LinkTimeout
//! deadlines and NVMe polling) but harmless.
//!
//! Which bdevs let the loop sleep: those whose channels wait on an fd in
//! interrupt mode, such as the AIO bdev (its completion eventfd; also over
//! a file in tmpfs). Those whose pollers run on every poll (null, malloc; in
//! SPDK's code also the software accel module's) keep the thread's fd readable for as long
//! as the ring holds a channel to them: they give correct results, but
//! the loop never sleeps. NVMe namespaces attached directly over TCP have
//! no completion fd: while they have I/O in flight, the ring's timerfd
//! polls them every [`NVME_INTERRUPT_POLL_PERIOD`] (100 µs), and every
//! [`NVME_KEEP_ALIVE_POLL_PERIOD`] (1 s) otherwise, for the admin queue's
//! keep-alive.
//!
//! In poll mode (the default) a ring has no fd ([`Ring::fd`] is `None`;
//! `AsFd` panics, saying so) and `next_timeout` is `Some(ZERO)` whenever
//! SPDK has pollers that run on every poll: poll mode is for hot loops.
//! [`Ring::submit_and_wait`] sleeps on the fd in interrupt mode.
//!
//! ## Where an entry goes (a map of `ring/`)
//!
//! One stage per file, in the order an entry meets them:
//!
//! | Stage | Lane (plain read/write on an idle core) | Core (everything else) |
//! |-------|------------------------------------------|------------------------|
//! | built | `opcode/` (`block.rs`, `nvme.rs`, `blob.rs`, `control.rs`: one `opcode!` each) into `op.rs` (what it asks) and `entry.rs` | same |
//! | pushed | `mod.rs` `Ring::push` → `driver/lane/mod.rs` (`Lane::push`) | `mod.rs` → `queue/ring.rs` (`RingQueue::push`) |
//! | checked | `driver/check.rs` (`RwChecks`, per target) | `driver/check.rs` for bdev reads and writes; `driver/{bdev,nvme,blob}.rs` for the rest |
//! | started | `driver/lane/mod.rs` (`lane_start`) | `queue/ring.rs` decides, `driver/mod.rs` dispatches to `driver/{bdev,nvme,blob}.rs` |
//! | finished by SPDK | `driver/lane/done.rs` (slot onto the finished list) | `driver/{bdev,nvme,blob}.rs` callbacks → `driver/inbox.rs` |
//! | posted to the CQ | `mod.rs` `drain_inbox` admits lane completions in SPDK's order → `queue/cq_order.rs` | `mod.rs` `drain_inbox` → `queue/ring.rs` (`complete`) |
//! | reaped | `mod.rs` `Ring::reap` → `completion.rs` (`CompletionRef`, lane form) | `completion.rs` (core form) |
//!
//! An entry forwarded from another thread's ring (`forward/`) is built as a
//! `ForwardEntry` from a block builder, sent through the target ring's
//! mailbox (`forward/mod.rs`, `queue/mailbox.rs`), started by the target's
//! `poll` through its driver in a slot past the core's (`forward/run.rs`),
//! finished by SPDK into the target's inbox like a core entry, handed back
//! from `drain_inbox` to the forwarding ring's return mailbox, and posted
//! by that ring's `poll` into its CQ in a lane slot (`post_completion`).
//! A `MsgRing` (`opcode/control.rs`) goes through the core like a `Nop`,
//! under LINK and DRAIN; when it starts, the core hands it to the driver
//! (`driver/mod.rs`, `run_immediate`), which puts the message into the
//! target's mailbox (`msg_ring.rs`); the target's `poll` posts it in a lane
//! slot, as it does a forwarded entry's completion.
//!
//! In interrupt mode, `wake.rs` keeps the ring's fd true at each of these
//! stages (pushed, posted, reaped) and answers `next_timeout`.
//!
//! Targets (registration, removal, unregistering) are in `targets.rs` and
//! `driver/mod.rs` (`refresh_target`); the lane's slots and lists in
//! `driver/lane/slot.rs`.

mod completion;
mod driver;
mod entry;
pub mod forward;
mod msg_ring;
mod op;
pub mod opcode;
mod targets;
mod wake;

pub use completion::{Completion, CompletionRef, IoFailure};
pub use driver::MAX_IOVECS;
pub use entry::{Entry, PushError};
pub use forward::{ForwardEntry, ForwardError, RingSender};
pub use op::NvmeCommand;
pub use wake::{NVME_INTERRUPT_POLL_PERIOD, NVME_KEEP_ALIVE_POLL_PERIOD};

use crate::error::{Error, Result};
use crate::pinned::Pinned;
use crate::queue::{CqFront, QueueConfig, RingQueue, TargetId};
use crate::thread::SpdkThread;
use driver::{Event, Inbox, SpdkDriver};
use std::mem::ManuallyDrop;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// How long dropping a ring waits for SPDK to return its in-flight I/O.
const QUIESCE_TIMEOUT: Duration = Duration::from_secs(30);

static NEXT_RING_ID: AtomicU32 = AtomicU32::new(1);

/// A bdev registered with a ring: the handle entries name it by, like a
/// fixed file in io_uring. Only valid with the ring that issued it;
/// registration slots are never reused, so a handle cannot come to name
/// another bdev.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Target {
    ring_id: u32,
    index: u32,
}

/// Where entries whose handle belongs to another ring are queued: any
/// valid index does, the driver fails them with `EBADF` by their ring id.
const FOREIGN_TARGET: TargetId = TargetId(0);

/// Bytes a ring preallocates per queue entry, for sizing rings. An entry
/// stays in one slot from `push` until its completion is taken, so every
/// SQ entry, in-flight entry and CQ entry brings one slot; the SQ and CQ
/// themselves hold only slot indices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryFootprint {
    /// One submission queue entry: its index plus its slot.
    pub sq_entry: usize,
    /// One completion queue entry: its index plus its slot.
    pub cq_entry: usize,
    /// One in-flight entry: its slot.
    pub in_flight_slot: usize,
    /// One lane slot (a ring has `max_in_flight` of them, preallocated):
    /// the slot and its failure status.
    pub lane_slot: usize,
}

impl EntryFootprint {
    pub fn get() -> EntryFootprint {
        use std::mem::size_of;
        // Per slot: the queued entry plus the SPDK callback context (the
        // iovecs for vectored I/O, `MAX_IOVECS` per slot, come on top).
        let slot =
            crate::queue::RingQueue::<op::IoOp>::bytes_per_slot() + size_of::<driver::SlotCtx>();
        EntryFootprint {
            sq_entry: size_of::<u32>() + slot,
            cq_entry: size_of::<u32>() + slot,
            in_flight_slot: slot,
            lane_slot: driver::lane::Lane::bytes_per_slot(),
        }
    }
}

/// A ring's counters ([`Ring::stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RingStats {
    /// Completions that ever had to wait in the overflow backlog (each was
    /// flagged [`CompletionFlags::OVERFLOWED`](crate::CompletionFlags)).
    pub overflowed: u64,
    /// How often SPDK answered a submission with ENOMEM (out of
    /// `bdev_io`s); each such entry waited and was retried in order.
    pub enomem_retries: u64,
    /// I/Os started from the lane, the light path for plain reads and
    /// writes pushed while the core holds nothing (see the module docs).
    pub lane_ios: u64,
}

/// Sizes of a [`Ring`].
#[derive(Debug, Clone, Copy)]
pub struct RingBuilder {
    sq_entries: u32,
    cq_entries: Option<u32>,
    max_in_flight: Option<u32>,
    max_targets: u32,
    lane: bool,
    forward_entries: Option<u32>,
}

impl RingBuilder {
    /// Completion queue size (at least the SQ size; default twice it).
    pub fn cq_entries(mut self, n: u32) -> Self {
        self.cq_entries = Some(n);
        self
    }
    /// Entries that may be taken from the SQ and not yet completed at once
    /// (default: the CQ size).
    pub fn max_in_flight(mut self, n: u32) -> Self {
        self.max_in_flight = Some(n);
        self
    }

    /// How many bdevs may be registered (default 16).
    pub fn max_targets(mut self, n: u32) -> Self {
        self.max_targets = n;
        self
    }

    /// A diagnostic: whether plain reads and writes may take the lane (see
    /// the [module docs](self#two-paths-one-set-of-rules); default `true`).
    /// With `false` every entry goes through the core. What the ring
    /// reports does not change, only its speed: this is how the tests hold
    /// the two paths equal, and a way to rule the lane out when chasing a
    /// problem.
    pub fn lane(mut self, enabled: bool) -> Self {
        self.lane = enabled;
        self
    }

    /// Entries other rings may have forwarded to this one and not yet
    /// finished, and entries this ring may have forwarded and not yet taken
    /// back, and messages waiting for it; each direction is preallocated
    /// (default: the SQ size; at least 1). See [`forward`].
    pub fn forward_entries(mut self, n: u32) -> Self {
        self.forward_entries = Some(n);
        self
    }

    /// Creates the ring on the current OS thread's SPDK thread.
    pub fn build(self) -> Result<Ring> {
        let thread = SpdkThread::require_current()?;
        let cq = self.cq_entries.unwrap_or(self.sq_entries.saturating_mul(2));
        let config = QueueConfig {
            sq_entries: self.sq_entries,
            cq_entries: cq,
            max_in_flight: self.max_in_flight.unwrap_or(cq),
            max_targets: self.max_targets,
        };
        let queue = RingQueue::new(config).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        // Tokens name the queue's slots; only in-flight entries complete through the inbox.
        let slots = queue.slot_count();
        // Forwarded entries run in driver slots of their own, past the core's.
        let forward_entries = self.forward_entries.unwrap_or(config.sq_entries).max(1);
        let inbox = Pinned::from_value(Inbox::with_capacity(
            config.max_in_flight as usize + forward_entries as usize + 8,
        ));
        let ring_id = NEXT_RING_ID.fetch_add(1, Ordering::Relaxed);
        // Without the lane for I/O, its slots still carry completions from
        // other rings (forward returns, messages).
        let lane_slots = config.max_in_flight as usize;
        let driver = SpdkDriver::new(
            ring_id,
            slots + forward_entries as usize,
            &*inbox,
            lane_slots,
            self.lane,
        );
        let ticks_hz = crate::clock::ticks_hz().max(1);
        let wake = thread.interrupt_fd().map(wake::RingFd::new).transpose()?;
        let waker = wake.as_ref().map(|w| w.waker());
        let forwarding = forward::Forwarding::new(ring_id, forward_entries, slots as u32, waker);
        Ok(Ring {
            queue: ManuallyDrop::new(queue),
            driver: ManuallyDrop::new(driver),
            inbox: ManuallyDrop::new(inbox),
            forwarding: ManuallyDrop::new(forwarding),
            thread,
            ring_id,
            ticks_hz,
            sq_entries: config.sq_entries,
            // A quiet fd sends pushes to the core, which wakes it.
            core_idle: wake.is_none(),
            fd_quiet: wake.is_some(),
            wake,
        })
    }
}

/// A submission ring and completion ring on one SPDK thread. `!Send`: it
/// lives on the thread that created it, which it keeps alive.
///
/// See the [module docs](self) for the error table and overflow contract.
pub struct Ring {
    // Dropped by hand, in this order, only once SPDK has returned every
    // callback; leaked if it never does.
    queue: ManuallyDrop<RingQueue<op::IoOp>>,
    driver: ManuallyDrop<SpdkDriver>,
    inbox: ManuallyDrop<Pinned<Inbox>>,
    /// Entries forwarded to and from other rings, and messages (`forward`).
    forwarding: ManuallyDrop<forward::Forwarding>,
    thread: SpdkThread,
    ring_id: u32,
    ticks_hz: u64,
    /// SQ capacity, shared by the core's SQ and the lane's.
    sq_entries: u32,
    /// True only while the core is idle (`RingQueue::is_idle`), so that
    /// `push` can pick the lane with one load: cleared by every push into
    /// the core (the only way to make it busy), set again where the ring
    /// looks anyway (after a poll, a submit, or a drained CQ).
    core_idle: bool,
    /// Interrupt mode only: true while the ring's fd says it has nothing
    /// to do, so a push must wake it (see `wake.rs`). While it is true,
    /// `core_idle` is false: pushes take the core's path, which wakes the
    /// fd, and the lane's path stays free of the test. Always false in
    /// poll mode.
    fd_quiet: bool,
    /// The ring's fd and what makes it readable; `None` in poll mode.
    wake: Option<Box<wake::RingFd>>,
}

impl Ring {
    /// A ring with `sq_entries` submission entries and default sizes.
    pub fn new(sq_entries: u32) -> Result<Ring> {
        Ring::builder(sq_entries).build()
    }

    pub fn builder(sq_entries: u32) -> RingBuilder {
        RingBuilder {
            sq_entries,
            cq_entries: None,
            max_in_flight: None,
            max_targets: 16,
            lane: true,
            forward_entries: None,
        }
    }

    /// Queues an entry; when the SQ is full the entry comes back in the
    /// error, untouched.
    #[inline]
    pub fn push(&mut self, mut entry: Entry) -> std::result::Result<(), PushError> {
        // An idle core's SQ is empty: the lane's is the whole SQ.
        debug_assert!(!self.core_idle || self.queue.is_idle());
        if self.driver.lane.has_room() && self.core_idle {
            if self.driver.lane.sq_len() >= self.sq_entries as usize {
                return Err(PushError { entry });
            }
            entry = match self.push_to_lane(entry) {
                Ok(()) => return Ok(()),
                Err(entry) => entry,
            };
        }
        self.push_to_core(entry)
    }

    /// Queues an entry in the core (every entry the lane does not take).
    #[inline(never)]
    fn push_to_core(&mut self, mut entry: Entry) -> std::result::Result<(), PushError> {
        if self.queue.sq_len() + self.driver.lane.sq_len() >= self.sq_entries as usize {
            return Err(PushError { entry });
        }
        if let crate::queue::EntryKind::Io { target, op } = &mut entry.submission.kind {
            // An entry built with another ring's handle must not reach this
            // ring's target of the same index.
            if op.target_ring != self.ring_id {
                *target = FOREIGN_TARGET;
            }
        }
        self.core_idle = false;
        if self.fd_quiet {
            // Only here, never on the lane: a quiet fd keeps `core_idle` false.
            self.wake_fd_for_push();
        }
        self.queue.push(entry.submission).map_err(|e| PushError {
            entry: Entry::from_submission(e.into_submission()),
        })
    }

    /// Queues a plain read or write on the lane (see `driver::lane`);
    /// hands back any other entry.
    #[inline]
    fn push_to_lane(&mut self, entry: Entry) -> std::result::Result<(), Entry> {
        use crate::queue::{EntryKind, Submission};
        use driver::lane::LaneIo;
        use op::{IoKind, IoOp};
        let lane_ok = |flags: crate::queue::EntryFlags, target_ring: u32, target: TargetId| {
            flags.is_empty() && target_ring == self.ring_id && self.driver.lane_serves(target.0)
        };
        // Two arms rather than an or-pattern plus a separate `write` test:
        // the or-pattern measured about 2 % slower here.
        let io = match entry.submission {
            Submission {
                kind:
                    EntryKind::Io {
                        target,
                        op:
                            IoOp {
                                target_ring,
                                kind:
                                    IoKind::Read {
                                        buf,
                                        offset_blocks,
                                        num_blocks,
                                    },
                            },
                    },
                user_data,
                flags,
            } if lane_ok(flags, target_ring, target) => LaneIo {
                target: target.0,
                write: false,
                buf,
                offset_blocks,
                num_blocks,
                user_data,
            },
            Submission {
                kind:
                    EntryKind::Io {
                        target,
                        op:
                            IoOp {
                                target_ring,
                                kind:
                                    IoKind::Write {
                                        buf,
                                        offset_blocks,
                                        num_blocks,
                                    },
                            },
                    },
                user_data,
                flags,
            } if lane_ok(flags, target_ring, target) => LaneIo {
                target: target.0,
                write: true,
                buf,
                offset_blocks,
                num_blocks,
                user_data,
            },
            submission => return Err(Entry::from_submission(submission)),
        };
        let ring_id = self.ring_id;
        self.driver
            .lane
            .push(io)
            .map_err(|io| io.into_entry(ring_id))
    }

    /// Hands queued entries to SPDK. Returns how many left the SQ.
    pub fn submit(&mut self) -> usize {
        let before = self.driver.lane.sq_len();
        let failed = self.driver.lane_submit();
        self.queue.post_outside(failed);
        let started = before - self.driver.lane.sq_len();
        self.sync_lane();
        if !self.queue.has_work() {
            return started;
        }
        let now = self.clock_for_timers();
        if self.driver.lane.sq_len() == 0 {
            started + self.queue.submit(&mut *self.driver, now)
        } else {
            // Core entries are younger than the lane's: they wait for it.
            self.queue.advance(&mut *self.driver, now);
            started
        }
    }

    /// Tells the core what the lane holds, unless the core is idle: then
    /// nothing in it depends on that count. It catches up in `submit`,
    /// before it takes any entry from its SQ.
    #[inline]
    fn sync_lane(&mut self) {
        self.core_idle = self.queue.is_idle() && !self.fd_quiet;
        if !self.core_idle {
            let pending = self.driver.lane.pending();
            self.queue
                .set_outside_pending(u32::try_from(pending).unwrap_or(u32::MAX));
        }
    }

    /// Posts to the core the lane completions SPDK reported before the
    /// core completion that noted `lane_before` (`u64::MAX`: all).
    #[inline]
    fn admit_lane(&mut self, lane_before: u64) {
        let n = self.driver.lane.admit_until(lane_before);
        if n != 0 {
            self.queue.post_outside(n);
        }
    }

    /// Submits, runs the SPDK thread once (its messages, pollers and the
    /// bdev completions), processes what completed, and returns how many
    /// completions are ready.
    pub fn poll(&mut self) -> usize {
        if self.wake.is_some() {
            return self.poll_with_fd();
        }
        self.submit();
        self.thread.poll();
        self.driver.poll_nvme();
        self.driver.poll_blob();
        self.process_events();
        self.poll_forwarding();
        self.sync_lane();
        if self.queue.has_work() {
            let now = self.clock_for_timers();
            self.queue.advance(&mut *self.driver, now);
        }
        self.cq_len()
    }

    /// Polls until at least `min` completions are ready or `timeout`
    /// passes ([`Error::Timeout`]). Returns the number ready.
    pub fn submit_and_wait(&mut self, min: usize, timeout: Duration) -> Result<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            let ready = self.poll();
            if ready >= min {
                return Ok(ready);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::Timeout {
                    what: "the requested completions",
                    after: timeout,
                });
            }
            if self.wake.is_some() {
                self.wait_for_fd(deadline - now);
            }
        }
    }

    /// Drains ready completions, oldest first.
    pub fn completions(&mut self) -> impl Iterator<Item = Completion> + '_ {
        std::iter::from_fn(move || self.next_completion())
    }

    /// Takes one completion, if any is ready.
    #[inline]
    pub fn next_completion(&mut self) -> Option<Completion> {
        match self.queue.front() {
            CqFront::Outside(flags) => {
                let slot = self.driver.lane.front()?;
                let done = CompletionRef::lane(&mut self.driver.lane, &mut self.queue, slot, flags);
                Some(done.into_owned())
            }
            CqFront::Own => self
                .queue
                .pop_completion_map(op::IoOp::take_buffers)
                .map(Completion::from_queue),
            CqFront::Empty => {
                // The end of a drain: it may have left the core idle.
                self.core_idle = self.queue.is_idle();
                if self.wake.is_some() {
                    self.quiet_fd_if_drained();
                }
                None
            }
        }
    }

    /// Takes the oldest completion in place: the returned handle reads it
    /// straight from the ring's slot, and dropping the handle pops it. The
    /// same data as [`Ring::next_completion`] without first copying the
    /// completion out, which makes it the faster form for hot loops.
    ///
    /// The handle borrows the ring, so drop it before pushing. A `while let`
    /// would hold that borrow for the whole loop body; `let ... else` ends
    /// it with the handle:
    ///
    /// ```no_run
    /// # fn demo(ring: &mut spdk_ring::Ring, target: spdk_ring::Target) {
    /// use spdk_ring::opcode;
    /// ring.poll();
    /// loop {
    ///     let Some(mut done) = ring.reap() else { break };
    ///     let (slot, ok) = (done.user_data(), done.is_ok());
    ///     let buf = done.take_buf().expect("reads return their buffer");
    ///     drop(done); // pops it
    ///     if ok {
    ///         let entry = opcode::Read::new(target, buf, slot * 8).build();
    ///         ring.push(entry.user_data(slot)).expect("room in the SQ");
    ///     }
    /// }
    /// # }
    /// ```
    #[inline]
    pub fn reap(&mut self) -> Option<CompletionRef<'_>> {
        match self.queue.front() {
            CqFront::Outside(flags) => {
                let slot = self.driver.lane.front()?;
                Some(CompletionRef::lane(
                    &mut self.driver.lane,
                    &mut self.queue,
                    slot,
                    flags,
                ))
            }
            CqFront::Own => CompletionRef::front(&mut self.queue),
            CqFront::Empty => {
                // The end of a reap loop: reaping may have left the core idle.
                self.core_idle = self.queue.is_idle();
                if self.wake.is_some() {
                    self.quiet_fd_if_drained();
                }
                None
            }
        }
    }

    /// The ring's counters since it was built.
    pub fn stats(&self) -> RingStats {
        RingStats {
            overflowed: self.queue.overflowed(),
            enomem_retries: self.driver.enomem_retries,
            lane_ios: self.driver.lane.started_total(),
        }
    }

    pub fn sq_space(&self) -> usize {
        self.sq_entries as usize - self.sq_len()
    }

    pub fn sq_len(&self) -> usize {
        self.queue.sq_len() + self.driver.lane.sq_len()
    }

    /// Completions ready in the CQ (at most its size; beyond it they wait
    /// in the overflow backlog).
    pub fn cq_len(&self) -> usize {
        self.queue.cq_len()
    }

    /// Entries taken from the SQ and not yet completed.
    pub fn in_flight(&self) -> usize {
        self.queue.in_flight() + self.driver.lane.running() as usize
    }

    pub fn thread(&self) -> &SpdkThread {
        &self.thread
    }

    /// The time, when a timer may need it: reading the clock costs several
    /// nanoseconds per poll, which an I/O-only ring does not pay. The core
    /// uses `now` only for Timeout and LinkTimeout entries.
    fn clock_for_timers(&self) -> u64 {
        if self.queue.has_timer_entries() {
            self.now_ns()
        } else {
            0
        }
    }

    fn now_ns(&self) -> u64 {
        let ticks = crate::clock::ticks();
        (u128::from(ticks) * 1_000_000_000 / u128::from(self.ticks_hz)) as u64
    }

    /// Feeds what callbacks recorded into the core; re-raises, on the
    /// caller's side, a panic that a callback contained.
    #[inline]
    fn process_events(&mut self) {
        let inbox = &self.inbox;
        if inbox.done.is_empty()
            && inbox.events.borrow().is_empty()
            && !inbox.callback_panicked.get()
        {
            // Nothing came through the inbox (lane-only polls).
            self.admit_lane(u64::MAX);
            self.driver.release_idle_targets();
            return;
        }
        if self.drain_inbox() {
            panic!(
                "spdk-ring: an SPDK completion callback panicked (contained at the FFI boundary)"
            );
        }
    }

    /// Returns whether a callback panicked since the last drain.
    #[inline(never)]
    fn drain_inbox(&mut self) -> bool {
        while let Some(index) = self.inbox.done.pop() {
            if index >= self.forwarding.base {
                self.forwarded_done(index);
                continue;
            }
            let lane_before = self.driver.slots[index as usize].lane_before.get();
            self.admit_lane(lane_before);
            let target = self.driver.slots[index as usize].target.get();
            self.driver.note_done(target);
            // Read the result only now, right before it goes into its slot:
            // kept across the call above it would be spilled to the stack
            // and read back wider than written, stalling on every I/O.
            let ctx = &self.driver.slots[index as usize];
            let (token, result) = (ctx.token.get(), ctx.result());
            self.queue.complete(token, result);
        }
        if !self.inbox.events.borrow().is_empty() {
            self.drain_events();
        }
        self.admit_lane(u64::MAX);
        self.driver.release_idle_targets();
        self.inbox.callback_panicked.replace(false)
    }

    /// The rarer events: unblocks, admin completions, overflowed I/O ones.
    #[inline(never)]
    fn drain_events(&mut self) {
        loop {
            let event = self.inbox.events.borrow_mut().pop_front();
            let Some(event) = event else { break };
            match event {
                Event::Done {
                    token,
                    target,
                    result,
                    ..
                } if token.index() >= self.forwarding.base => {
                    self.driver.note_done(target);
                    self.forwarding.finished(token.index(), result);
                }
                Event::Done {
                    token,
                    target,
                    result,
                    lane_before,
                } => {
                    self.admit_lane(lane_before);
                    self.driver.note_done(target);
                    self.queue.complete(token, result);
                }
                Event::Unblock { target } => {
                    self.driver.lane_unblock(target);
                    self.queue.unblock(TargetId(target));
                }
            }
        }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        self.close_forwarding();
        let cancelled = self.driver.lane.cancel_queued();
        self.queue.post_outside(cancelled);
        self.queue.cancel_unstarted();
        let deadline = Instant::now() + QUIESCE_TIMEOUT;
        loop {
            // Freeing lane slots ends their targets' in-flight counts.
            self.driver.lane.discard_finished();
            if self.queue.is_quiescent()
                && self.driver.lane.held_by_spdk() == 0
                && self.driver.all_idle()
            {
                break;
            }
            if Instant::now() > deadline {
                eprintln!(
                    "spdk-ring: SPDK did not return the ring's in-flight I/O within \
                     {QUIESCE_TIMEOUT:?}; leaking its buffers and channels rather than freeing \
                     memory SPDK may still use"
                );
                return;
            }
            self.thread.poll();
            self.driver.poll_nvme();
            self.driver.poll_blob();
            self.drain_inbox();
        }
        // SAFETY: SPDK holds nothing of ours any more (quiescent: no I/O in
        // flight, no io-wait queued), and each field is dropped once, here.
        unsafe {
            ManuallyDrop::drop(&mut self.queue);
            ManuallyDrop::drop(&mut self.driver);
            ManuallyDrop::drop(&mut self.inbox);
            ManuallyDrop::drop(&mut self.forwarding);
        }
    }
}
