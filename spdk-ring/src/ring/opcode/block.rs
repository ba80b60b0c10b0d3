//! Block entries for bdev targets (and, under their NVMe names, namespace
//! targets): reads and writes of DMA buffers, vectored forms, range
//! operations, reset, and raw I/O through caller-managed memory.

use super::io_entry;
use crate::dma::DmaBuf;
use crate::ring::op::{encode_num_blocks, IoKind, WHOLE_BUFFER};
use crate::ring::{Entry, Target};

opcode! {
    /// Reads blocks into a DMA buffer, which the completion hands back.
    pub struct Read {
        target: Target,
        buf: DmaBuf,
        offset_blocks: u64,
        ;;
        /// Transfer only `n` blocks (the buffer must hold them); default:
        /// the whole buffer.
        num_blocks: u64 => u32 = encode_num_blocks(num_blocks), default WHOLE_BUFFER;
    }
    pub fn build(self) -> Entry {
        let (buf, offset_blocks, num_blocks) = (self.buf, self.offset_blocks, self.num_blocks);
        io_entry(self.target, IoKind::Read { buf, offset_blocks, num_blocks })
    }
}

opcode! {
    /// Writes a DMA buffer to blocks; the completion hands the buffer back.
    pub struct Write {
        target: Target,
        buf: DmaBuf,
        offset_blocks: u64,
        ;;
        /// Transfer only `n` blocks (the buffer must hold them); default:
        /// the whole buffer.
        num_blocks: u64 => u32 = encode_num_blocks(num_blocks), default WHOLE_BUFFER;
    }
    pub fn build(self) -> Entry {
        let (buf, offset_blocks, num_blocks) = (self.buf, self.offset_blocks, self.num_blocks);
        io_entry(self.target, IoKind::Write { buf, offset_blocks, num_blocks })
    }
}

opcode! {
    /// Compares blocks with a DMA buffer: `Ok` when equal, `EILSEQ` (and,
    /// on NVMe, Media Error / Compare Failure) when not.
    pub struct Compare {
        target: Target,
        buf: DmaBuf,
        offset_blocks: u64,
        ;;
        /// Compare only `n` blocks (the buffer must hold them); default:
        /// the whole buffer.
        num_blocks: u64 => u32 = encode_num_blocks(num_blocks), default WHOLE_BUFFER;
    }
    pub fn build(self) -> Entry {
        let (buf, offset_blocks, num_blocks) = (self.buf, self.offset_blocks, self.num_blocks);
        io_entry(self.target, IoKind::Compare { buf, offset_blocks, num_blocks })
    }
}

opcode! {
    /// Scatter read into several buffers (at most
    /// [`MAX_IOVECS`](crate::MAX_IOVECS)); all come back in the completion.
    pub struct Readv {
        target: Target,
        bufs: Vec<DmaBuf>,
        offset_blocks: u64,
        ;;
        /// Transfer only `n` blocks (the buffers must hold them); default:
        /// all of them.
        num_blocks: u64 => u32 = encode_num_blocks(num_blocks), default WHOLE_BUFFER;
    }
    pub fn build(self) -> Entry {
        let (bufs, offset_blocks, num_blocks) = (self.bufs, self.offset_blocks, self.num_blocks);
        io_entry(self.target, IoKind::Readv { bufs, offset_blocks, num_blocks })
    }
}

opcode! {
    /// Gather write from several buffers (at most
    /// [`MAX_IOVECS`](crate::MAX_IOVECS)); all come back in the completion.
    pub struct Writev {
        target: Target,
        bufs: Vec<DmaBuf>,
        offset_blocks: u64,
        ;;
        /// Transfer only `n` blocks (the buffers must hold them); default:
        /// all of them.
        num_blocks: u64 => u32 = encode_num_blocks(num_blocks), default WHOLE_BUFFER;
    }
    pub fn build(self) -> Entry {
        let (bufs, offset_blocks, num_blocks) = (self.bufs, self.offset_blocks, self.num_blocks);
        io_entry(self.target, IoKind::Writev { bufs, offset_blocks, num_blocks })
    }
}

opcode! {
    /// Writes zeros to a block range without a buffer.
    pub struct WriteZeroes {
        target: Target,
        offset_blocks: u64,
        num_blocks: u64,
        ;;
    }
    pub fn build(self) -> Entry {
        let (offset_blocks, num_blocks) = (self.offset_blocks, self.num_blocks);
        io_entry(self.target, IoKind::WriteZeroes { offset_blocks, num_blocks })
    }
}

opcode! {
    /// Deallocates (trims) a block range.
    pub struct Unmap {
        target: Target,
        offset_blocks: u64,
        num_blocks: u64,
        ;;
    }
    pub fn build(self) -> Entry {
        let (offset_blocks, num_blocks) = (self.offset_blocks, self.num_blocks);
        io_entry(self.target, IoKind::Unmap { offset_blocks, num_blocks })
    }
}

opcode! {
    /// Makes previous writes to a block range durable.
    pub struct Flush {
        target: Target,
        offset_blocks: u64,
        num_blocks: u64,
        ;;
    }
    pub fn build(self) -> Entry {
        let (offset_blocks, num_blocks) = (self.offset_blocks, self.num_blocks);
        io_entry(self.target, IoKind::Flush { offset_blocks, num_blocks })
    }
}

opcode! {
    /// Resets the bdev (aborting what it has in flight, per its module).
    pub struct Reset {
        target: Target,
        ;;
    }
    pub fn build(self) -> Entry {
        io_entry(self.target, IoKind::Reset)
    }
}

/// Read or write through caller-managed memory, for callers with their own
/// DMA allocator. Nothing comes back in the completion. Written by hand:
/// its constructors are `unsafe` (the one lifetime promise of this module).
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
        let (write, ptr, len, offset_blocks) = (self.write, self.ptr, self.len, self.offset_blocks);
        io_entry(
            self.target,
            IoKind::Raw {
                write,
                ptr,
                len,
                offset_blocks,
            },
        )
    }
}
