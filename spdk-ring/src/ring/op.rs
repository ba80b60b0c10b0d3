//! The operation model: what an entry asks for (`IoOp`, `IoKind`, blob ops),
//! the buffers it carries while in flight, and how they come back.

use crate::blob::{Blob, BlobId, PreparedBlobOpts, StoreInner};
use crate::dma::DmaBuf;
use crate::pinned::Pinned;
use spdk_ring_sys as sys;
use std::cell::Cell;
use std::ptr::NonNull;
use std::rc::Rc;

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
    Blob(BlobOp),
    /// [`MsgRing`](super::opcode::MsgRing): an `Immediate` entry, sent when
    /// it starts (`msg_ring.rs`).
    MsgRing {
        to: super::RingSender,
        user_data: u64,
        value: u32,
    },
}

/// `io_units` of a blob I/O that covers its whole buffer.
pub(crate) const WHOLE_BUFFER_UNITS: u64 = u64::MAX;

/// A blob entry's payload; buffers and blob handles live here in flight.
pub(crate) enum BlobOp {
    Read {
        blob: Blob,
        buf: DmaBuf,
        offset: u64,
        units: u64,
    },
    Write {
        blob: Blob,
        buf: DmaBuf,
        offset: u64,
        units: u64,
    },
    Readv {
        blob: Blob,
        bufs: Vec<DmaBuf>,
        offset: u64,
        units: u64,
    },
    Writev {
        blob: Blob,
        bufs: Vec<DmaBuf>,
        offset: u64,
        units: u64,
    },
    Unmap {
        blob: Blob,
        offset: u64,
        units: u64,
    },
    WriteZeroes {
        blob: Blob,
        offset: u64,
        units: u64,
    },
    Create {
        opts: Box<PreparedBlobOpts>,
    },
    Open {
        id: BlobId,
        opened: OpenedBlob,
    },
    IterFirst {
        opened: OpenedBlob,
    },
    IterNext {
        blob: Blob,
        opened: OpenedBlob,
    },
    Resize {
        blob: Blob,
        clusters: u64,
    },
    SyncMetadata {
        blob: Blob,
    },
    Delete {
        id: BlobId,
    },
    Close {
        blob: Blob,
    },
}

impl std::fmt::Debug for BlobOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            BlobOp::Read { .. } => "BlobRead",
            BlobOp::Write { .. } => "BlobWrite",
            BlobOp::Readv { .. } => "BlobReadv",
            BlobOp::Writev { .. } => "BlobWritev",
            BlobOp::Unmap { .. } => "BlobUnmap",
            BlobOp::WriteZeroes { .. } => "BlobWriteZeroes",
            BlobOp::Create { .. } => "BlobCreate",
            BlobOp::Open { .. } => "BlobOpen",
            BlobOp::IterFirst { .. } => "BlobIterFirst",
            BlobOp::IterNext { .. } => "BlobIterNext",
            BlobOp::Resize { .. } => "BlobResize",
            BlobOp::SyncMetadata { .. } => "BlobSyncMetadata",
            BlobOp::Delete { .. } => "BlobDelete",
            BlobOp::Close { .. } => "BlobClose",
        };
        f.write_str(name)
    }
}

impl BlobOp {
    /// What the completion hands back: buffers, or the opened blob.
    pub(crate) fn into_buffers(self) -> Buffers {
        match self {
            BlobOp::Read { buf, .. } | BlobOp::Write { buf, .. } => Buffers::one(buf),
            BlobOp::Readv { bufs, .. } | BlobOp::Writev { bufs, .. } => Buffers::many(bufs),
            BlobOp::Open { mut opened, .. }
            | BlobOp::IterFirst { mut opened }
            | BlobOp::IterNext { mut opened, .. } => Buffers::blob(opened.take()),
            _ => Buffers::default(),
        }
    }
}

/// Where a `BlobOpen` callback leaves the opened blob until the caller
/// takes it from the completion; closed if nobody does.
pub(crate) struct OpenedBlob {
    pub(crate) store: Rc<StoreInner>,
    /// At a fixed address while the entry moves (SPDK's callback writes it).
    pub(crate) blob: Pinned<Cell<*mut sys::spdk_blob>>,
}

impl OpenedBlob {
    pub(crate) fn new(store: Rc<StoreInner>) -> OpenedBlob {
        OpenedBlob {
            store,
            blob: Pinned::from_value(Cell::new(std::ptr::null_mut())),
        }
    }

    pub(crate) fn take(&mut self) -> Option<Blob> {
        let blob = NonNull::new(self.blob.replace(std::ptr::null_mut()))?;
        Some(Blob::adopt(blob, self.store.clone()))
    }
}

impl Drop for OpenedBlob {
    fn drop(&mut self) {
        // An opened blob nobody took is closed (by Blob's drop).
        drop(self.take());
    }
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
    pub(crate) fn take_single_buf(&mut self) -> Option<DmaBuf> {
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
    pub(crate) fn take_all_bufs(&mut self) -> Vec<DmaBuf> {
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
    pub(crate) fn take_opened_blob(&mut self) -> Option<crate::blob::Blob> {
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

impl Buffers {
    /// The buffer of a single-buffer entry.
    #[inline]
    pub(crate) fn take_one(&mut self) -> Option<DmaBuf> {
        self.one.take()
    }

    pub(crate) fn has_buffers(&self) -> bool {
        self.one.is_some() || matches!(&self.rest, Rest::Many(b) if !b.is_empty())
    }

    pub(crate) fn take_all(&mut self) -> Vec<DmaBuf> {
        match self.one.take() {
            Some(buf) => vec![buf],
            None => match &mut self.rest {
                Rest::Many(bufs) => std::mem::take(bufs),
                Rest::Blob(_) => Vec::new(),
            },
        }
    }

    pub(crate) fn take_blob(&mut self) -> Option<crate::blob::Blob> {
        match std::mem::take(&mut self.rest) {
            Rest::Blob(blob) => Some(blob),
            many => {
                self.rest = many;
                None
            }
        }
    }
}
