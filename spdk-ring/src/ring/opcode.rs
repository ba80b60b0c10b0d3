//! Typed entry builders, one per operation, in the manner of io_uring's
//! `opcode` module: required arguments in `new`, optional ones as builder
//! methods, then [`build`](Read::build) gives an [`Entry`] to which
//! `.user_data(..)` and `.flags(..)` apply.
//!
//! Offsets and lengths are in **blocks** of the target bdev
//! (`offset_blocks`, `num_blocks`). When `num_blocks` is not given, an I/O
//! covers its whole buffer, which must then be a multiple of the block size.
//! Invalid combinations are not push errors: the entry completes with an
//! errno, see [`Ring`](super::Ring) for the table.

use super::entry::Entry;
use super::op::{encode_num_blocks, IoKind, IoOp, NvmeCommand, WHOLE_BUFFER};
use super::Target;
use crate::dma::DmaBuf;
use crate::queue::{EntryKind, Submission};
use std::time::Duration;

#[path = "blob_opcode.rs"]
mod blob;
pub use blob::{
    BlobClose, BlobCreate, BlobDelete, BlobIterFirst, BlobIterNext, BlobOpen, BlobRead, BlobReadv,
    BlobResize, BlobSyncMetadata, BlobUnmap, BlobWrite, BlobWriteZeroes, BlobWritev,
};

fn io_entry(target: Target, kind: IoKind) -> Entry {
    Entry::from_submission(Submission::io(
        super::TargetId(target.index),
        IoOp {
            target_ring: target.ring_id,
            kind,
        },
        0,
    ))
}

/// Does nothing and completes `Ok(0)`; useful as a chain link or barrier.
#[derive(Debug, Default)]
pub struct Nop;

impl Nop {
    pub fn new() -> Self {
        Nop
    }
    pub fn build(self) -> Entry {
        Entry::from_submission(Submission::nop(0))
    }
}

macro_rules! buffer_io {
    ($(#[$doc:meta])* $name:ident, $kind:ident) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name {
            target: Target,
            buf: DmaBuf,
            offset_blocks: u64,
            num_blocks: u32,
        }

        impl $name {
            /// An I/O of the whole buffer at `offset_blocks`.
            pub fn new(target: Target, buf: DmaBuf, offset_blocks: u64) -> Self {
                $name { target, buf, offset_blocks, num_blocks: WHOLE_BUFFER }
            }
            /// Transfer only `n` blocks (the buffer must hold them).
            pub fn num_blocks(mut self, n: u64) -> Self {
                self.num_blocks = encode_num_blocks(n);
                self
            }
            pub fn build(self) -> Entry {
                io_entry(
                    self.target,
                    IoKind::$kind { buf: self.buf, offset_blocks: self.offset_blocks, num_blocks: self.num_blocks },
                )
            }
        }
    };
}

buffer_io!(
    /// Reads blocks into a DMA buffer, which the completion hands back.
    Read,
    Read
);
buffer_io!(
    /// Writes a DMA buffer to blocks; the completion hands the buffer back.
    Write,
    Write
);
buffer_io!(
    /// Compares blocks with a DMA buffer: `Ok` when equal, `EILSEQ` (and,
    /// on NVMe, Media Error / Compare Failure) when not.
    Compare,
    Compare
);

/// NVMe names for the entries, for namespace targets registered with
/// [`Ring::register_nvme_namespace`](super::Ring::register_nvme_namespace):
/// the same builders, mapped to NVMe commands by the target.
pub type NvmeRead = Read;
/// See [`NvmeRead`].
pub type NvmeWrite = Write;
/// See [`NvmeRead`].
pub type NvmeCompare = Compare;
/// A read scattered over several buffers (an SGL, walked by SPDK); see [`NvmeRead`].
pub type NvmeReadv = Readv;
/// A write gathered from several buffers; see [`NvmeRead`].
pub type NvmeWritev = Writev;
/// See [`NvmeRead`] (Flush ignores the range on NVMe: it flushes the namespace).
pub type NvmeFlush = Flush;
/// See [`NvmeRead`] (at most 65536 blocks per command).
pub type NvmeWriteZeroes = WriteZeroes;
/// Dataset Management / Deallocate of one range; see [`NvmeRead`].
pub type NvmeDeallocate = Unmap;
/// A caller-built NVMe I/O command (the namespace id is filled in); see [`NvmeRead`].
pub type NvmeIoRaw = NvmePassthru;

macro_rules! vectored_io {
    ($(#[$doc:meta])* $name:ident, $kind:ident) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name {
            target: Target,
            bufs: Vec<DmaBuf>,
            offset_blocks: u64,
            num_blocks: u32,
        }

        impl $name {
            /// An I/O over all buffers in order (at most
            /// [`MAX_IOVECS`](super::MAX_IOVECS) of them).
            pub fn new(target: Target, bufs: Vec<DmaBuf>, offset_blocks: u64) -> Self {
                $name { target, bufs, offset_blocks, num_blocks: WHOLE_BUFFER }
            }
            /// Transfer only `n` blocks (the buffers must hold them).
            pub fn num_blocks(mut self, n: u64) -> Self {
                self.num_blocks = encode_num_blocks(n);
                self
            }
            pub fn build(self) -> Entry {
                io_entry(
                    self.target,
                    IoKind::$kind { bufs: self.bufs, offset_blocks: self.offset_blocks, num_blocks: self.num_blocks },
                )
            }
        }
    };
}

vectored_io!(
    /// Scatter read into several buffers; all come back in the completion.
    Readv,
    Readv
);
vectored_io!(
    /// Gather write from several buffers; all come back in the completion.
    Writev,
    Writev
);

macro_rules! range_op {
    ($(#[$doc:meta])* $name:ident, $kind:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy)]
        pub struct $name {
            target: Target,
            offset_blocks: u64,
            num_blocks: u64,
        }

        impl $name {
            pub fn new(target: Target, offset_blocks: u64, num_blocks: u64) -> Self {
                $name { target, offset_blocks, num_blocks }
            }
            pub fn build(self) -> Entry {
                io_entry(self.target, IoKind::$kind { offset_blocks: self.offset_blocks, num_blocks: self.num_blocks })
            }
        }
    };
}

range_op!(
    /// Writes zeros to a block range without a buffer.
    WriteZeroes,
    WriteZeroes
);
range_op!(
    /// Deallocates (trims) a block range.
    Unmap,
    Unmap
);
range_op!(
    /// Makes previous writes to a block range durable.
    Flush,
    Flush
);

/// Resets the bdev (aborting what it has in flight, per its module).
#[derive(Debug, Clone, Copy)]
pub struct Reset {
    target: Target,
}

impl Reset {
    pub fn new(target: Target) -> Self {
        Reset { target }
    }
    pub fn build(self) -> Entry {
        io_entry(self.target, IoKind::Reset)
    }
}

/// Sends a raw NVMe I/O command to an NVMe-backed bdev, with an optional
/// data buffer. The completion's error keeps the NVMe status.
#[derive(Debug)]
pub struct NvmePassthru {
    target: Target,
    cmd: NvmeCommand,
    buf: Option<DmaBuf>,
}

impl NvmePassthru {
    pub fn new(target: Target, cmd: NvmeCommand) -> Self {
        NvmePassthru {
            target,
            cmd,
            buf: None,
        }
    }
    /// The data buffer the command transfers (its whole length).
    pub fn buf(mut self, buf: DmaBuf) -> Self {
        self.buf = Some(buf);
        self
    }
    pub fn build(self) -> Entry {
        io_entry(
            self.target,
            IoKind::NvmePassthru {
                cmd: self.cmd,
                buf: self.buf,
            },
        )
    }
}

/// Sends a raw NVMe *admin* command (Identify, Get Log Page, ...) to the
/// controller behind a target: an NVMe namespace target's controller, or an
/// NVMe-backed bdev that supports admin passthru. The namespace id is the
/// caller's to set.
#[derive(Debug)]
pub struct NvmeAdminRaw {
    target: Target,
    cmd: NvmeCommand,
    buf: Option<DmaBuf>,
}

impl NvmeAdminRaw {
    pub fn new(target: Target, cmd: NvmeCommand) -> Self {
        NvmeAdminRaw {
            target,
            cmd,
            buf: None,
        }
    }
    /// The data buffer the command transfers (its whole length).
    pub fn buf(mut self, buf: DmaBuf) -> Self {
        self.buf = Some(buf);
        self
    }
    pub fn build(self) -> Entry {
        io_entry(
            self.target,
            IoKind::NvmeAdmin {
                cmd: self.cmd,
                buf: self.buf,
            },
        )
    }
}

/// Cancels the first live entry with `user_data`: not started → it
/// completes `ECANCELED` and this `Ok(0)`; in flight → abort is requested
/// (this `Ok(0)`, or `EALREADY` where the bdev cannot abort); unknown →
/// `ENOENT`.
#[derive(Debug, Clone, Copy)]
pub struct Cancel {
    user_data: u64,
}

impl Cancel {
    pub fn new(user_data: u64) -> Self {
        Cancel { user_data }
    }
    pub fn build(self) -> Entry {
        Entry::from_submission(Submission::new(
            EntryKind::Cancel {
                user_data: self.user_data,
            },
            0,
        ))
    }
}

/// Completes `ETIME` after `after`, or `Ok(0)` once `count` other entries
/// have completed (when `count` is set), whichever is first.
#[derive(Debug, Clone, Copy)]
pub struct Timeout {
    after: Duration,
    count: u32,
}

impl Timeout {
    pub fn new(after: Duration) -> Self {
        Timeout { after, count: 0 }
    }
    pub fn count(mut self, completions: u32) -> Self {
        self.count = completions;
        self
    }
    pub fn build(self) -> Entry {
        let after_ns = u64::try_from(self.after.as_nanos()).unwrap_or(u64::MAX);
        Entry::from_submission(Submission::new(
            EntryKind::Timeout {
                after_ns,
                count: self.count,
            },
            0,
        ))
    }
}

/// Bounds the entry before it, which must carry `LINK`: if that entry has
/// not completed within `after`, it is aborted and this completes `ETIME`;
/// otherwise this completes `ECANCELED`.
#[derive(Debug, Clone, Copy)]
pub struct LinkTimeout {
    after: Duration,
}

impl LinkTimeout {
    pub fn new(after: Duration) -> Self {
        LinkTimeout { after }
    }
    pub fn build(self) -> Entry {
        let after_ns = u64::try_from(self.after.as_nanos()).unwrap_or(u64::MAX);
        Entry::from_submission(Submission::new(EntryKind::LinkTimeout { after_ns }, 0))
    }
}

/// Read or write through caller-managed memory, for callers with their own
/// DMA allocator. Nothing comes back in the completion.
#[derive(Debug)]
pub struct RawIo {
    target: Target,
    write: bool,
    ptr: *mut u8,
    len: usize,
    offset_blocks: u64,
}

impl RawIo {
    /// # Safety
    /// `ptr..ptr+len` must be DMA-capable memory (from SPDK's allocator)
    /// that stays valid, and is neither read nor written by anyone else,
    /// until this entry's completion has been taken from the ring (or the
    /// ring is dropped). `len` must be a multiple of the block size.
    pub unsafe fn read(target: Target, ptr: *mut u8, len: usize, offset_blocks: u64) -> Self {
        RawIo {
            target,
            write: false,
            ptr,
            len,
            offset_blocks,
        }
    }

    /// # Safety
    /// As for [`read`](Self::read); the memory is only read by SPDK.
    pub unsafe fn write(target: Target, ptr: *const u8, len: usize, offset_blocks: u64) -> Self {
        RawIo {
            target,
            write: true,
            ptr: ptr as *mut u8,
            len,
            offset_blocks,
        }
    }

    pub fn build(self) -> Entry {
        io_entry(
            self.target,
            IoKind::Raw {
                write: self.write,
                ptr: self.ptr,
                len: self.len,
                offset_blocks: self.offset_blocks,
            },
        )
    }
}
