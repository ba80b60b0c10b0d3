//! Submission entries and completions as callers see them.

use super::driver::blob_io::BlobOp;
use super::driver::lane::{Lane, SlotPtr};
use crate::dma::DmaBuf;
use crate::error::{Errno, NvmeStatus};
use crate::queue::{self, CompletionFlags, EntryFlags, IoError, Submission};
use std::fmt;

/// A submission entry, built by an [`opcode`](super::opcode) builder.
pub struct Entry {
    pub(crate) submission: Submission<IoOp>,
}

impl Entry {
    pub(crate) fn from_submission(submission: Submission<IoOp>) -> Entry {
        Entry { submission }
    }

    /// The caller's tag, returned unchanged in the completion.
    pub fn user_data(mut self, user_data: u64) -> Entry {
        self.submission.user_data = user_data;
        self
    }

    /// `LINK` and/or `DRAIN`, with io_uring's meaning.
    pub fn flags(mut self, flags: EntryFlags) -> Entry {
        self.submission.flags = flags;
        self
    }

    pub fn get_user_data(&self) -> u64 {
        self.submission.user_data
    }

    pub fn get_flags(&self) -> EntryFlags {
        self.submission.flags
    }
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("user_data", &self.submission.user_data)
            .field("flags", &self.submission.flags)
            .finish_non_exhaustive()
    }
}

/// The SQ was full; the entry is handed back untouched.
#[derive(Debug)]
pub struct PushError {
    pub entry: Entry,
}

impl fmt::Display for PushError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "submission queue is full (entry user_data {})",
            self.entry.get_user_data()
        )
    }
}

impl std::error::Error for PushError {}

/// A raw NVMe command for [`NvmePassthru`](super::opcode::NvmePassthru):
/// opcode, namespace and command dwords 10–15 (the driver fills the rest).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NvmeCommand {
    pub opcode: u8,
    pub nsid: u32,
    pub cdw10: u32,
    pub cdw11: u32,
    pub cdw12: u32,
    pub cdw13: u32,
    pub cdw14: u32,
    pub cdw15: u32,
}

/// What an I/O entry carries to the driver; buffers live here while in flight.
#[derive(Debug)]
pub(crate) struct IoOp {
    /// The ring the entry's target handle came from.
    pub(crate) target_ring: u32,
    pub(crate) kind: IoKind,
}

/// `num_blocks` of an I/O that covers its whole buffer. Block counts are
/// stored as `u32` to keep entries small (they are copied through the
/// queues); a count that does not fit is stored as 0, which fails `EINVAL`.
pub(crate) const WHOLE_BUFFER: u32 = u32::MAX;

pub(crate) fn encode_num_blocks(n: u64) -> u32 {
    u32::try_from(n)
        .ok()
        .filter(|&v| v != WHOLE_BUFFER)
        .unwrap_or(0)
}

#[derive(Debug)]
pub(crate) enum IoKind {
    Read {
        buf: DmaBuf,
        offset_blocks: u64,
        num_blocks: u32,
    },
    Write {
        buf: DmaBuf,
        offset_blocks: u64,
        num_blocks: u32,
    },
    Readv {
        bufs: Vec<DmaBuf>,
        offset_blocks: u64,
        num_blocks: u32,
    },
    Writev {
        bufs: Vec<DmaBuf>,
        offset_blocks: u64,
        num_blocks: u32,
    },
    Compare {
        buf: DmaBuf,
        offset_blocks: u64,
        num_blocks: u32,
    },
    WriteZeroes {
        offset_blocks: u64,
        num_blocks: u64,
    },
    Unmap {
        offset_blocks: u64,
        num_blocks: u64,
    },
    Flush {
        offset_blocks: u64,
        num_blocks: u64,
    },
    Reset,
    NvmePassthru {
        cmd: NvmeCommand,
        buf: Option<DmaBuf>,
    },
    NvmeAdmin {
        cmd: NvmeCommand,
        buf: Option<DmaBuf>,
    },
    Raw {
        write: bool,
        ptr: *mut u8,
        len: usize,
        offset_blocks: u64,
    },
    Blob(super::driver::blob_io::BlobOp),
}

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

/// A completion: the entry's `user_data`, its result (bytes transferred or
/// the failure) and, for I/O entries, the buffers it borrowed — on success
/// and on error alike.
pub struct Completion {
    user_data: u64,
    result: Result<u64, IoFailure>,
    flags: CompletionFlags,
    bufs: Buffers,
}

/// The buffers a completion hands back, moved out of the entry's op in its
/// slot (the rest of the op is not copied). Two plain fields rather than an
/// enum: every I/O moves this, and word-sized fields move without detours.
#[derive(Debug, Default)]
pub(crate) struct Buffers {
    /// The buffer of a single-buffer entry.
    one: Option<DmaBuf>,
    /// The buffers of a vectored entry, or the blob a blob-opening entry
    /// opened.
    rest: Rest,
}

/// The second half of [`Buffers`]: one word-sized enum, as small as the
/// `Vec` alone (the blob variant lives in the `Vec`'s niche).
#[derive(Debug)]
enum Rest {
    Many(Vec<DmaBuf>),
    Blob(crate::blob::Blob),
}

impl Default for Rest {
    fn default() -> Self {
        Rest::Many(Vec::new())
    }
}

const _: () = assert!(std::mem::size_of::<Rest>() == std::mem::size_of::<Vec<DmaBuf>>());

impl Buffers {
    pub(crate) fn one(buf: DmaBuf) -> Self {
        Buffers {
            one: Some(buf),
            rest: Rest::default(),
        }
    }

    pub(crate) fn many(bufs: Vec<DmaBuf>) -> Self {
        Buffers {
            one: None,
            rest: Rest::Many(bufs),
        }
    }

    pub(crate) fn blob(blob: Option<crate::blob::Blob>) -> Self {
        Buffers {
            one: None,
            rest: blob.map_or_else(Rest::default, Rest::Blob),
        }
    }
}

impl IoOp {
    /// Moves the caller's buffers out of a finished op.
    #[inline]
    pub(crate) fn take_buffers(&mut self) -> Buffers {
        let (one, many) = match std::mem::replace(&mut self.kind, IoKind::Reset) {
            IoKind::Read { buf, .. } | IoKind::Write { buf, .. } | IoKind::Compare { buf, .. } => {
                (Some(buf), Vec::new())
            }
            IoKind::Readv { bufs, .. } | IoKind::Writev { bufs, .. } => (None, bufs),
            IoKind::NvmePassthru { buf, .. } | IoKind::NvmeAdmin { buf, .. } => (buf, Vec::new()),
            IoKind::Blob(op) => return op.into_buffers(),
            _ => (None, Vec::new()),
        };
        Buffers {
            one,
            rest: Rest::Many(many),
        }
    }
}

impl IoOp {
    /// Moves the buffer of a finished single-buffer op out, in place.
    #[inline]
    fn take_single_buf(&mut self) -> Option<DmaBuf> {
        match &mut self.kind {
            IoKind::NvmePassthru { buf, .. } | IoKind::NvmeAdmin { buf, .. } => buf.take(),
            IoKind::Read { .. }
            | IoKind::Write { .. }
            | IoKind::Compare { .. }
            | IoKind::Blob(BlobOp::Read { .. } | BlobOp::Write { .. }) => {
                // The buffer is all that is left to hand back: the op goes.
                // (No panic path here: it would keep the op on the stack.)
                match std::mem::replace(&mut self.kind, IoKind::Reset) {
                    IoKind::Read { buf, .. }
                    | IoKind::Write { buf, .. }
                    | IoKind::Compare { buf, .. }
                    | IoKind::Blob(BlobOp::Read { buf, .. } | BlobOp::Write { buf, .. }) => {
                        Some(buf)
                    }
                    other => {
                        self.kind = other;
                        None
                    }
                }
            }
            _ => None,
        }
    }

    /// Moves the buffers of a finished op out, in place, as a vector.
    fn take_all_bufs(&mut self) -> Vec<DmaBuf> {
        if let Some(buf) = self.take_single_buf() {
            return vec![buf];
        }
        match &mut self.kind {
            IoKind::Readv { bufs, .. }
            | IoKind::Writev { bufs, .. }
            | IoKind::Blob(BlobOp::Readv { bufs, .. } | BlobOp::Writev { bufs, .. }) => {
                std::mem::take(bufs)
            }
            _ => Vec::new(),
        }
    }

    /// Moves the blob a finished open or iteration opened out, in place.
    fn take_opened_blob(&mut self) -> Option<crate::blob::Blob> {
        match &mut self.kind {
            IoKind::Blob(
                BlobOp::Open { opened, .. }
                | BlobOp::IterFirst { opened }
                | BlobOp::IterNext { opened, .. },
            ) => opened.take(),
            _ => None,
        }
    }
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
    user_data: u64,
    result: queue::IoResult,
    flags: CompletionFlags,
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
        let (user_data, result, flags) = (front.user_data, front.result, front.flags);
        Some(CompletionRef {
            source: Source::Core(queue),
            user_data,
            result,
            flags,
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
            user_data,
            result,
            flags,
        }
    }

    #[inline]
    pub fn user_data(&self) -> u64 {
        self.user_data
    }

    /// Bytes transferred (0 for entries that move no data), or the failure.
    #[inline]
    pub fn result(&self) -> Result<u64, IoFailure> {
        self.result.map_err(IoFailure::from_queue)
    }

    #[inline]
    pub fn is_ok(&self) -> bool {
        self.result.is_ok()
    }

    /// [`CompletionFlags::OVERFLOWED`] if it waited in the CQ overflow backlog.
    pub fn flags(&self) -> CompletionFlags {
        self.flags
    }

    /// The errno, if the entry failed.
    pub fn errno(&self) -> Option<Errno> {
        self.result.err().map(|e| Errno(e.errno))
    }

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
            user_data: self.user_data,
            result: self.result.map_err(IoFailure::from_queue),
            flags: self.flags,
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
            .field("user_data", &self.user_data)
            .field("result", &self.result)
            .field("flags", &self.flags())
            .finish_non_exhaustive()
    }
}

impl Buffers {
    fn take_all(&mut self) -> Vec<DmaBuf> {
        match self.one.take() {
            Some(buf) => vec![buf],
            None => match &mut self.rest {
                Rest::Many(bufs) => std::mem::take(bufs),
                Rest::Blob(_) => Vec::new(),
            },
        }
    }

    fn take_blob(&mut self) -> Option<crate::blob::Blob> {
        match std::mem::take(&mut self.rest) {
            Rest::Blob(blob) => Some(blob),
            many => {
                self.rest = many;
                None
            }
        }
    }
}

impl Completion {
    #[inline]
    pub(crate) fn from_queue(c: queue::Completion<Buffers>) -> Completion {
        Completion {
            user_data: c.user_data,
            result: c.result.map_err(IoFailure::from_queue),
            flags: c.flags,
            bufs: c.op.unwrap_or_default(),
        }
    }

    pub fn user_data(&self) -> u64 {
        self.user_data
    }

    /// Bytes transferred (0 for entries that move no data), or the failure.
    pub fn result(&self) -> Result<u64, IoFailure> {
        self.result
    }

    pub fn is_ok(&self) -> bool {
        self.result.is_ok()
    }

    /// [`CompletionFlags::OVERFLOWED`] if it waited in the CQ overflow backlog.
    pub fn flags(&self) -> CompletionFlags {
        self.flags
    }

    /// The errno, if the entry failed.
    pub fn errno(&self) -> Option<Errno> {
        self.result.err().map(|e| e.errno)
    }

    /// Takes back the buffer of a single-buffer entry (Read, Write,
    /// NvmePassthru).
    #[inline]
    pub fn take_buf(&mut self) -> Option<DmaBuf> {
        self.bufs.one.take()
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
            .field("user_data", &self.user_data)
            .field("result", &self.result)
            .field("flags", &self.flags)
            .field(
                "has_buffers",
                &(self.bufs.one.is_some()
                    || matches!(&self.bufs.rest, Rest::Many(b) if !b.is_empty())),
            )
            .finish()
    }
}
