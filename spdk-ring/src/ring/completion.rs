//! Completions as callers see them: owned ([`Completion`]) or read in
//! place in the ring's slot ([`CompletionRef`]), and why an entry failed
//! ([`IoFailure`]).

use super::driver::lane::{Lane, SlotPtr};
use super::op::{Buffers, IoOp};
use crate::dma::DmaBuf;
use crate::error::{Errno, NvmeStatus};
use crate::queue::{self, CompletionFlags, IoError};
use std::fmt;

/// Why an entry failed: the errno, and for NVMe-backed targets the NVMe
/// status the controller returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoFailure {
    errno: Errno,
    nvme: Option<NvmeStatus>,
}

impl IoFailure {
    pub(crate) fn from_queue(e: IoError) -> IoFailure {
        IoFailure {
            errno: Errno(e.errno),
            nvme: e.nvme,
        }
    }
    pub fn errno(&self) -> Errno {
        self.errno
    }
    pub fn nvme_status(&self) -> Option<NvmeStatus> {
        self.nvme
    }
}

impl fmt::Display for IoFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.nvme {
            Some(status) => write!(f, "{} (NVMe {status})", self.errno),
            None => write!(f, "{}", self.errno),
        }
    }
}

impl std::error::Error for IoFailure {}

impl From<IoFailure> for crate::Error {
    fn from(e: IoFailure) -> crate::Error {
        match e.nvme {
            Some(status) => crate::Error::Nvme(status),
            None => crate::Error::Errno(e.errno),
        }
    }
}

/// What both completion forms report, as plain words.
#[derive(Clone, Copy, Debug)]
struct Outcome {
    user_data: u64,
    result: queue::IoResult,
    flags: CompletionFlags,
}

/// The accessors of [`Outcome`] both completion forms offer, written once.
macro_rules! outcome_accessors {
    () => {
        /// The `user_data` of the entry.
        #[inline]
        pub fn user_data(&self) -> u64 {
            self.outcome.user_data
        }

        /// Bytes transferred (0 for entries that move no data), or the failure.
        #[inline]
        pub fn result(&self) -> Result<u64, IoFailure> {
            self.outcome.result.map_err(IoFailure::from_queue)
        }

        #[inline]
        pub fn is_ok(&self) -> bool {
            self.outcome.result.is_ok()
        }

        /// [`CompletionFlags::OVERFLOWED`] if it waited in the CQ overflow backlog.
        pub fn flags(&self) -> CompletionFlags {
            self.outcome.flags
        }

        /// The errno, if the entry failed.
        pub fn errno(&self) -> Option<Errno> {
            self.outcome.result.err().map(|e| Errno(e.errno))
        }
    };
}

/// A completion: the entry's `user_data`, its result (bytes transferred or
/// the failure) and, for I/O entries, the buffers it borrowed — on success
/// and on error alike.
pub struct Completion {
    outcome: Outcome,
    bufs: Buffers,
}

/// A completion read in place, straight from the ring's slot, as
/// [`Ring::reap`](super::Ring::reap) hands it out; dropping it pops it
/// (and drops whatever buffers were not taken). It offers what
/// [`Completion`] does; [`CompletionRef::into_owned`] turns it into one.
///
/// Forgetting it (`mem::forget`) leaves the completion first in line: the
/// next `reap` sees it again, without the buffers already taken.
pub struct CompletionRef<'a> {
    source: Source<'a>,
    outcome: Outcome,
}

/// Where the completion sits: the core's CQ, or the lane's.
enum Source<'a> {
    Core(&'a mut queue::RingQueue<IoOp>),
    /// The lane, the slot at its front, and the core that orders the CQ.
    Lane(&'a mut Lane, &'a mut queue::RingQueue<IoOp>, SlotPtr),
}

impl<'a> CompletionRef<'a> {
    #[inline]
    pub(crate) fn front(queue: &'a mut queue::RingQueue<IoOp>) -> Option<CompletionRef<'a>> {
        let front = queue.front_completion()?;
        let outcome = Outcome {
            user_data: front.user_data,
            result: front.result,
            flags: front.flags,
        };
        Some(CompletionRef {
            source: Source::Core(queue),
            outcome,
        })
    }

    /// The lane's oldest completion, in `slot`, first in the CQ with `flags`.
    #[inline]
    pub(crate) fn lane(
        lane: &'a mut Lane,
        queue: &'a mut queue::RingQueue<IoOp>,
        slot: SlotPtr,
        flags: CompletionFlags,
    ) -> CompletionRef<'a> {
        let (user_data, result) = lane.outcome(slot);
        CompletionRef {
            source: Source::Lane(lane, queue, slot),
            outcome: Outcome {
                user_data,
                result,
                flags,
            },
        }
    }

    outcome_accessors!();

    /// The op still in the core's slot, if this is a core I/O entry.
    #[inline]
    fn op(&mut self) -> Option<&mut IoOp> {
        match &mut self.source {
            Source::Core(queue) => queue.front_completion()?.op,
            Source::Lane(..) => None,
        }
    }

    /// Takes back the buffer of a single-buffer entry (Read, Write,
    /// NvmePassthru, BlobRead, BlobWrite), moved straight out of the slot.
    #[inline]
    pub fn take_buf(&mut self) -> Option<DmaBuf> {
        match &mut self.source {
            Source::Lane(lane, _, slot) => lane.take_buf(*slot),
            Source::Core(_) => self.op()?.take_single_buf(),
        }
    }

    /// Takes back the buffers of a vectored entry (Readv, Writev); a
    /// single-buffer entry gives a one-element vector.
    pub fn take_bufs(&mut self) -> Vec<DmaBuf> {
        if let Source::Lane(lane, _, slot) = &mut self.source {
            return lane.take_buf(*slot).into_iter().collect();
        }
        self.op().map(IoOp::take_all_bufs).unwrap_or_default()
    }

    /// Takes the blob a successful `BlobOpen`, `BlobIterFirst` or
    /// `BlobIterNext` opened; one not taken is closed when this is dropped.
    pub fn take_blob(&mut self) -> Option<crate::blob::Blob> {
        self.op()?.take_opened_blob()
    }

    /// The raw result and the flags, for the async layer's op slots.
    #[cfg(feature = "futures")]
    #[inline(always)]
    pub(crate) fn raw_parts(&self) -> (queue::IoResult, CompletionFlags) {
        (self.outcome.result, self.outcome.flags)
    }

    /// Pops a lane completion, handing back its buffer, all inlined (the
    /// async layer's record loop); a core completion comes back untouched,
    /// for `into_owned`.
    #[cfg(feature = "futures")]
    #[inline(always)]
    pub(crate) fn into_lane_buf(self) -> Result<Option<DmaBuf>, CompletionRef<'a>> {
        if !matches!(self.source, Source::Lane(..)) {
            return Err(self);
        }
        let mut this = std::mem::ManuallyDrop::new(self);
        let Source::Lane(lane, queue, slot) = &mut this.source else {
            unreachable!("checked above")
        };
        let buf = lane.take_buf(*slot);
        lane.pop_front(*slot);
        queue.pop_outside();
        Ok(buf)
    }

    /// The completion as an owned [`Completion`] (with every buffer not
    /// taken yet), popping it.
    pub fn into_owned(mut self) -> Completion {
        let bufs = match &mut self.source {
            Source::Lane(lane, _, slot) => {
                lane.take_buf(*slot).map(Buffers::one).unwrap_or_default()
            }
            Source::Core(_) => self.op().map(IoOp::take_buffers).unwrap_or_default(),
        };
        Completion {
            outcome: self.outcome,
            bufs,
        }
    }
}

impl Drop for CompletionRef<'_> {
    // Always inlined: as a call it costs a hot loop about 40 instructions
    // per completion (registers saved around the lane's few stores).
    #[inline(always)]
    fn drop(&mut self) {
        match &mut self.source {
            Source::Lane(lane, queue, slot) => {
                lane.pop_front(*slot);
                queue.pop_outside();
            }
            Source::Core(queue) => discard_core_front(queue),
        }
    }
}

/// The core's half of dropping a [`CompletionRef`], out of line: its drop
/// glue is large, and keeping it apart lets the lane's half inline.
#[inline(never)]
fn discard_core_front(queue: &mut queue::RingQueue<IoOp>) {
    queue.discard_front();
}

impl fmt::Debug for CompletionRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompletionRef")
            .field("user_data", &self.user_data())
            .field("result", &self.result())
            .field("flags", &self.flags())
            .finish_non_exhaustive()
    }
}

impl Completion {
    /// A completion put together from its parts (the async layer keeps
    /// them apart until a future asks for the whole).
    #[cfg(feature = "futures")]
    pub(crate) fn from_parts(
        user_data: u64,
        result: queue::IoResult,
        flags: CompletionFlags,
        buf: Option<DmaBuf>,
    ) -> Completion {
        Completion {
            outcome: Outcome {
                user_data,
                result,
                flags,
            },
            bufs: buf.map(Buffers::one).unwrap_or_default(),
        }
    }

    #[inline]
    pub(crate) fn from_queue(c: queue::Completion<Buffers>) -> Completion {
        Completion {
            outcome: Outcome {
                user_data: c.user_data,
                result: c.result,
                flags: c.flags,
            },
            bufs: c.op.unwrap_or_default(),
        }
    }

    outcome_accessors!();

    /// Takes back the buffer of a single-buffer entry (Read, Write,
    /// NvmePassthru).
    #[inline]
    pub fn take_buf(&mut self) -> Option<DmaBuf> {
        self.bufs.take_one()
    }

    /// Takes back the buffers of a vectored entry (Readv, Writev); a
    /// single-buffer entry gives a one-element vector.
    pub fn take_bufs(&mut self) -> Vec<DmaBuf> {
        self.bufs.take_all()
    }

    /// Takes the blob a successful [`BlobOpen`](super::opcode::BlobOpen),
    /// [`BlobIterFirst`](super::opcode::BlobIterFirst) or
    /// [`BlobIterNext`](super::opcode::BlobIterNext) opened. A blob not
    /// taken is closed when the completion is dropped.
    pub fn take_blob(&mut self) -> Option<crate::blob::Blob> {
        self.bufs.take_blob()
    }
}

impl fmt::Debug for Completion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Completion")
            .field("user_data", &self.user_data())
            .field("result", &self.result())
            .field("flags", &self.flags())
            .field("has_buffers", &self.bufs.has_buffers())
            .finish()
    }
}
