//! Value types shared by the queue core and its driver: what goes in (a
//! [`Submission`]), what comes out (a [`Completion`]), and the [`Driver`]
//! contract that connects the core to the real I/O engine.

use std::fmt;

use bitflags::bitflags;

/// Operation was cancelled (by a `Cancel` entry, a failed chain, or shutdown).
pub const ECANCELED: i32 = 125;
/// A `Timeout` or `LinkTimeout` expired.
pub const ETIME: i32 = 62;
/// A `Cancel` entry found no live entry with the requested `user_data`.
pub const ENOENT: i32 = 2;
/// A `Cancel` entry found its target in flight on a target that cannot abort.
pub const EALREADY: i32 = 114;
/// The entry itself is malformed (bad link timeout, chain too long, unknown target).
pub const EINVAL: i32 = 22;
/// The target is gone (for drivers reporting hot-remove).
pub const ENODEV: i32 = 19;
/// Out of memory (for drivers that give up instead of answering `NoMem`).
pub const ENOMEM: i32 = 12;
/// Generic I/O error (for drivers mapping a failed NVMe status).
pub const EIO: i32 = 5;

/// Symbolic name of an errno value this module knows, so errors print readably.
pub fn errno_name(errno: i32) -> Option<&'static str> {
    crate::error::Errno(errno).name()
}

bitflags! {
    /// Flags of one entry: the io_uring `IOSQE_IO_LINK` / `IOSQE_IO_DRAIN` ordering pair, and
    /// `IOSQE_CQE_SKIP_SUCCESS`.
    #[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
    pub struct EntryFlags: u8 {
        /// The next pushed entry starts only after this one succeeds; a failure cancels the rest of the chain.
        const LINK = 1;
        /// Full barrier: start after every earlier entry completed, and hold back every later one until done.
        const DRAIN = 2;
        /// Post no completion if the entry succeeds (io_uring's `IOSQE_CQE_SKIP_SUCCESS`): its slot
        /// is freed with everything it holds, a LINK successor still starts, and count Timeouts do
        /// not count it. A failure is posted as usual.
        const SKIP_SUCCESS = 4;
    }
}

/// Index of a target registered with the driver (a namespace/qpair); small, so the core can keep a table.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct TargetId(pub u32);

/// What an entry does; the core interprets everything except the driver's opaque `Op`.
#[derive(Debug)]
pub enum EntryKind<Op> {
    /// An operation the driver starts on `target`; `op` (with its buffers) comes back in the completion.
    Io {
        /// Where the driver runs the operation; also the unit of ENOMEM blocking and start ordering.
        target: TargetId,
        /// The driver's operation; never inspected by the core.
        op: Op,
    },
    /// Completes `Ok(0)` as soon as ordering allows it to start; useful as a barrier or probe.
    Nop,
    /// Cancels the first live entry whose `user_data` matches.
    Cancel {
        /// The `user_data` of the entry to cancel.
        user_data: u64,
    },
    /// A timer: `Err(ETIME)` after `after_ns`, or `Ok(0)` once `count` other completions were posted.
    Timeout {
        /// Delay from the moment the timeout starts.
        after_ns: u64,
        /// Completions to wait for; 0 makes it a pure timer.
        count: u32,
    },
    /// Bounds the previous (linked) entry: if it runs longer than `after_ns`, it is aborted.
    LinkTimeout {
        /// Delay from the moment the previous entry starts.
        after_ns: u64,
    },
    /// An operation with no target that the driver carries out on the spot
    /// ([`Driver::run_immediate`]) once ordering lets it start, completing with its answer.
    Immediate {
        /// The driver's operation; never inspected by the core, dropped when the entry completes.
        op: Op,
    },
}

/// One submission queue entry, as pushed by the application.
#[derive(Debug)]
pub struct Submission<Op> {
    /// What to do.
    pub kind: EntryKind<Op>,
    /// Opaque value echoed in the completion, and the key `Cancel` matches on.
    pub user_data: u64,
    /// LINK / DRAIN ordering.
    pub flags: EntryFlags,
}

impl<Op> Submission<Op> {
    /// An entry without ordering flags.
    pub fn new(kind: EntryKind<Op>, user_data: u64) -> Self {
        Self {
            kind,
            user_data,
            flags: EntryFlags::empty(),
        }
    }

    /// Shorthand for an [`EntryKind::Io`] entry.
    pub fn io(target: TargetId, op: Op, user_data: u64) -> Self {
        Self::new(EntryKind::Io { target, op }, user_data)
    }

    /// Shorthand for an [`EntryKind::Nop`] entry.
    pub fn nop(user_data: u64) -> Self {
        Self::new(EntryKind::Nop, user_data)
    }

    /// Replaces the flags, for builder-style construction.
    pub fn with_flags(mut self, flags: EntryFlags) -> Self {
        self.flags = flags;
        self
    }
}

/// Names one occupancy of an in-flight slot; the generation makes late tokens of earlier occupants harmless.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct Token {
    index: u32,
    generation: u32,
}

impl Token {
    pub(super) fn new(index: u32, generation: u32) -> Self {
        Self { index, generation }
    }

    /// Packs the token into one integer, e.g. to pass as a C callback argument.
    pub fn to_u64(self) -> u64 {
        (u64::from(self.generation) << 32) | u64::from(self.index)
    }

    /// Inverse of [`Token::to_u64`]; any value is accepted, nonsense tokens are simply stale.
    pub fn from_u64(raw: u64) -> Self {
        Self {
            index: raw as u32,
            generation: (raw >> 32) as u32,
        }
    }

    /// Slot index in the in-flight table.
    pub fn index(self) -> u32 {
        self.index
    }

    /// How many times the slot had been reused when this token was issued.
    pub fn generation(self) -> u32 {
        self.generation
    }
}

pub use crate::error::NvmeStatus;

/// Why an entry failed: a positive libc-style errno, plus the NVMe status when the device reported one.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[error("{} (errno {}){}", ErrnoName(*.errno), .errno, NvmeSuffix(*.nvme))]
pub struct IoError {
    /// Positive errno (e.g. [`ECANCELED`]).
    pub errno: i32,
    /// Device status behind the errno, if any.
    pub nvme: Option<NvmeStatus>,
}

impl IoError {
    /// An error carrying only an errno.
    pub fn errno(errno: i32) -> Self {
        Self { errno, nvme: None }
    }

    /// An error carrying an errno and the NVMe status it was derived from.
    pub fn with_nvme(errno: i32, status: NvmeStatus) -> Self {
        Self {
            errno,
            nvme: Some(status),
        }
    }
}

struct ErrnoName(i32);

impl fmt::Display for ErrnoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(errno_name(self.0).unwrap_or("unknown error"))
    }
}

struct NvmeSuffix(Option<NvmeStatus>);

impl fmt::Display for NvmeSuffix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => Ok(()),
            Some(s) => {
                write!(f, ", NVMe sct {:#x} sc {:#x}", s.sct, s.sc)?;
                if s.dnr {
                    f.write_str(" dnr")?;
                }
                Ok(())
            }
        }
    }
}

/// Result of one entry: `Ok(bytes transferred or 0)` or the error.
pub type IoResult = Result<u64, IoError>;

bitflags! {
    /// What happened to a completion on its way to the caller (io_uring's CQE flags).
    #[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
    pub struct CompletionFlags: u8 {
        /// The CQ was full when this completed, so it waited in the overflow backlog.
        const OVERFLOWED = 1;
    }
}

/// One completion queue entry.
#[derive(Debug, PartialEq, Eq)]
pub struct Completion<Op> {
    /// The `user_data` of the finished entry.
    pub user_data: u64,
    /// How it finished.
    pub result: IoResult,
    /// How it was delivered.
    pub flags: CompletionFlags,
    /// The operation of an `Io` entry, on success and on every error, so its buffers come back; `None` otherwise.
    pub op: Option<Op>,
}

/// The driver's answer to [`Driver::start`].
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum StartOutcome {
    /// Submitted; the driver will report it later through `RingQueue::complete`.
    Started,
    /// The target is out of request resources; it stays blocked until `RingQueue::unblock`.
    NoMem,
    /// Rejected up front; the entry completes with this error right away.
    Failed(IoError),
}

/// The I/O engine the core drives. The core calls it only from `submit`/`advance`, never from `complete`.
pub trait Driver<Op> {
    /// Start an Io op on its target. `Started`: the driver later calls `RingQueue::complete(token, ..)`.
    /// `NoMem`: the entry stays first in line for `target`, and nothing more starts there until
    /// `RingQueue::unblock(target)`. `Failed`: the entry completes at once with that error.
    fn start(&mut self, token: Token, target: TargetId, op: &mut Op) -> StartOutcome;

    /// Ask for an in-flight op to be aborted. `Ok(())`: requested, the op still completes later via
    /// `RingQueue::complete`. `Err(())`: this target cannot abort.
    #[allow(clippy::result_unit_err)]
    fn abort(&mut self, token: Token, target: TargetId, op: &mut Op) -> Result<(), ()>;

    /// Carry out an [`EntryKind::Immediate`] op now; the entry completes with the answer. The
    /// default, for drivers without such ops, fails it EINVAL.
    fn run_immediate(&mut self, _op: &mut Op) -> IoResult {
        Err(IoError::errno(EINVAL))
    }

    /// Cancel for entries the driver runs outside the core (see
    /// `RingQueue::set_outside_pending`): acts on the oldest such entry with `user_data`.
    /// `None`: there is none. `Some(Ok(()))`: cancelled or abort requested (it completes outside
    /// the core). `Some(Err(()))`: running and its target cannot abort.
    #[allow(clippy::result_unit_err)]
    fn cancel_outside(&mut self, _user_data: u64) -> Option<Result<(), ()>> {
        None
    }
}

/// Sizes of the preallocated tables; nothing grows past them in normal operation.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct QueueConfig {
    /// Submission queue capacity: how many entries may wait for `submit`.
    pub sq_entries: u32,
    /// Completion queue capacity before completions spill into the backlog.
    pub cq_entries: u32,
    /// In-flight slots: entries taken from the SQ and not yet completed (waiting, running or armed).
    pub max_in_flight: u32,
    /// Number of target indexes (`TargetId(0..max_targets)`) the per-target table is sized for.
    pub max_targets: u32,
}

impl QueueConfig {
    /// Checks the sizes; [`crate::queue::RingQueue::new`] calls this.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (field, value) in [
            ("sq_entries", self.sq_entries),
            ("cq_entries", self.cq_entries),
            ("max_in_flight", self.max_in_flight),
            ("max_targets", self.max_targets),
        ] {
            if value == 0 {
                return Err(ConfigError::Zero { field });
            }
        }
        if self.cq_entries < self.sq_entries {
            return Err(ConfigError::CqSmallerThanSq {
                sq_entries: self.sq_entries,
                cq_entries: self.cq_entries,
            });
        }
        if self.max_in_flight == u32::MAX || self.slot_count() as u64 >= u64::from(u32::MAX) {
            return Err(ConfigError::TooManySlots(self.max_in_flight));
        }
        Ok(())
    }

    /// Slots the queue preallocates: an entry keeps its slot from `push` until its completion is
    /// popped, so there is one per SQ entry, in-flight entry and CQ entry.
    pub fn slot_count(&self) -> usize {
        self.sq_entries as usize + self.max_in_flight as usize + self.cq_entries as usize
    }
}

/// Why a [`QueueConfig`] was refused.
#[derive(Copy, Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A size was zero; every table needs at least one entry.
    #[error("{field} must be greater than zero")]
    Zero {
        /// Name of the offending field.
        field: &'static str,
    },
    /// The CQ must hold a full SQ worth of completions, like io_uring requires.
    #[error("cq_entries ({cq_entries}) must be at least sq_entries ({sq_entries})")]
    CqSmallerThanSq {
        /// Configured SQ size.
        sq_entries: u32,
        /// Configured CQ size.
        cq_entries: u32,
    },
    /// `u32::MAX` is reserved as the "no slot" marker; the SQ, in-flight and CQ sizes together
    /// must stay below it.
    #[error("max_in_flight ({0}) must be below u32::MAX, and sq_entries + max_in_flight + cq_entries too")]
    TooManySlots(u32),
}

/// The SQ was full; the submission is handed back untouched so nothing is lost.
#[derive(thiserror::Error)]
#[error("submission queue is full")]
pub struct PushError<Op> {
    /// The rejected submission.
    pub submission: Submission<Op>,
}

impl<Op> PushError<Op> {
    /// Takes the rejected submission back, e.g. to retry after reaping completions.
    pub fn into_submission(self) -> Submission<Op> {
        self.submission
    }
}

impl<Op> fmt::Debug for PushError<Op> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PushError")
            .field("user_data", &self.submission.user_data)
            .field("flags", &self.submission.flags)
            .finish_non_exhaustive()
    }
}
