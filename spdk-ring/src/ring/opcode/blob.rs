//! Blob entries, for targets from
//! [`Ring::register_blobstore`](crate::Ring::register_blobstore).
//!
//! Offsets and lengths are in **io units** of the store
//! ([`Blobstore::io_unit_size`](crate::blob::Blobstore::io_unit_size)).
//! Without `num_units`, a read or write covers its whole buffer, which must
//! be a multiple of the io unit. Entries hold their blob, so it stays open
//! while they are in flight. Errors complete the entry:
//!
//! | Condition | errno |
//! |-----------|-------|
//! | beyond the blob's size, zero length, buffer too short or not whole io units | `EINVAL` |
//! | a blob of another store than the target's | `EINVAL` |
//! | blob entry on a bdev/NVMe target, or bdev entry on a blobstore target | `EINVAL` |
//! | `BlobOpen`/`BlobDelete` of an id that does not exist; `BlobIterNext` after the last blob | `ENOENT` |
//! | `BlobDelete` of an open blob; `BlobClose`/`BlobIterNext` of a blob other handles hold | `EBUSY` |
//! | `BlobResize` beyond the free clusters | `ENOSPC` |
//!
//! ENOMEM from the blobstore (out of channel operations) is never
//! reported: the ring keeps at most a quarter of the store's
//! `max_channel_ops` data entries in flight per channel, so SPDK does not
//! run out in the middle of an I/O, and an ENOMEM that still happens makes
//! the entry wait and retry in order.

use super::io_entry;
use crate::blob::{Blob, BlobId, BlobOptions, Blobstore, PreparedBlobOpts, StoreInner};
use crate::dma::DmaBuf;
use crate::ring::op::{BlobOp, IoKind, OpenedBlob, WHOLE_BUFFER_UNITS};
use crate::ring::{Entry, Target};
use std::rc::Rc;

fn blob_entry(target: Target, op: BlobOp) -> Entry {
    io_entry(target, IoKind::Blob(op))
}

/// A length in io units as a setter takes it; the largest one stands for
/// "the whole buffer", so it is kept just below.
fn unit_count(n: u64) -> u64 {
    n.min(WHOLE_BUFFER_UNITS - 1)
}

opcode! {
    /// Reads from a blob into a DMA buffer (never-written clusters of a
    /// thin blob read as zeros); the completion hands the buffer back.
    pub struct BlobRead {
        target: Target,
        blob: &Blob => Blob = blob.clone(),
        buf: DmaBuf,
        offset_units: u64,
        ;;
        /// Transfer only `n` io units (the buffer must hold them); default:
        /// the whole buffer.
        num_units: u64 => u64 = unit_count(num_units), default WHOLE_BUFFER_UNITS;
    }
    pub fn build(self) -> Entry {
        let (blob, buf, offset, units) = (self.blob, self.buf, self.offset_units, self.num_units);
        blob_entry(self.target, BlobOp::Read { blob, buf, offset, units })
    }
}

opcode! {
    /// Writes a DMA buffer to a blob (allocating clusters of a thin blob).
    pub struct BlobWrite {
        target: Target,
        blob: &Blob => Blob = blob.clone(),
        buf: DmaBuf,
        offset_units: u64,
        ;;
        /// Transfer only `n` io units (the buffer must hold them); default:
        /// the whole buffer.
        num_units: u64 => u64 = unit_count(num_units), default WHOLE_BUFFER_UNITS;
    }
    pub fn build(self) -> Entry {
        let (blob, buf, offset, units) = (self.blob, self.buf, self.offset_units, self.num_units);
        blob_entry(self.target, BlobOp::Write { blob, buf, offset, units })
    }
}

opcode! {
    /// Scatter read from a blob (at most [`MAX_IOVECS`](crate::MAX_IOVECS)
    /// buffers); all come back in the completion.
    pub struct BlobReadv {
        target: Target,
        blob: &Blob => Blob = blob.clone(),
        bufs: Vec<DmaBuf>,
        offset_units: u64,
        ;;
        /// Transfer only `n` io units (the buffers must hold them); default:
        /// all of them.
        num_units: u64 => u64 = unit_count(num_units), default WHOLE_BUFFER_UNITS;
    }
    pub fn build(self) -> Entry {
        let (blob, bufs, offset, units) = (self.blob, self.bufs, self.offset_units, self.num_units);
        blob_entry(self.target, BlobOp::Readv { blob, bufs, offset, units })
    }
}

opcode! {
    /// Gather write to a blob (at most [`MAX_IOVECS`](crate::MAX_IOVECS)
    /// buffers); all come back in the completion.
    pub struct BlobWritev {
        target: Target,
        blob: &Blob => Blob = blob.clone(),
        bufs: Vec<DmaBuf>,
        offset_units: u64,
        ;;
        /// Transfer only `n` io units (the buffers must hold them); default:
        /// all of them.
        num_units: u64 => u64 = unit_count(num_units), default WHOLE_BUFFER_UNITS;
    }
    pub fn build(self) -> Entry {
        let (blob, bufs, offset, units) = (self.blob, self.bufs, self.offset_units, self.num_units);
        blob_entry(self.target, BlobOp::Writev { blob, bufs, offset, units })
    }
}

opcode! {
    /// Releases `num_units` io units of a blob from `offset_units` (thin
    /// blobs read them back as zeros).
    pub struct BlobUnmap {
        target: Target,
        blob: &Blob => Blob = blob.clone(),
        offset_units: u64,
        num_units: u64,
        ;;
    }
    pub fn build(self) -> Entry {
        let (blob, offset, units) = (self.blob, self.offset_units, self.num_units);
        blob_entry(self.target, BlobOp::Unmap { blob, offset, units })
    }
}

opcode! {
    /// Writes zeros to `num_units` io units of a blob from `offset_units`.
    pub struct BlobWriteZeroes {
        target: Target,
        blob: &Blob => Blob = blob.clone(),
        offset_units: u64,
        num_units: u64,
        ;;
    }
    pub fn build(self) -> Entry {
        let (blob, offset, units) = (self.blob, self.offset_units, self.num_units);
        blob_entry(self.target, BlobOp::WriteZeroes { blob, offset, units })
    }
}

/// Creates a blob; the completion's result is the new blob's id. Written
/// by hand: its `new` is fallible.
#[derive(Debug)]
pub struct BlobCreate {
    target: Target,
    opts: Box<PreparedBlobOpts>,
}

impl BlobCreate {
    /// Fails for an xattr name containing NUL.
    pub fn new(target: Target, options: &BlobOptions) -> crate::Result<Self> {
        Ok(BlobCreate {
            target,
            opts: PreparedBlobOpts::new(options)?,
        })
    }
    pub fn build(self) -> Entry {
        blob_entry(self.target, BlobOp::Create { opts: self.opts })
    }
}

opcode! {
    /// Opens a blob of `store` (the target's store); the completion's result
    /// is its id and [`Completion::take_blob`](crate::Completion::take_blob)
    /// gives the [`Blob`].
    pub struct BlobOpen {
        target: Target,
        store: &Blobstore => Rc<StoreInner> = store.inner.clone(),
        id: BlobId,
        ;;
    }
    pub fn build(self) -> Entry {
        let opened = OpenedBlob::new(self.store);
        blob_entry(self.target, BlobOp::Open { id: self.id, opened })
    }
}

opcode! {
    /// Resizes a blob to `clusters` (persisted by [`BlobSyncMetadata`]).
    pub struct BlobResize {
        target: Target,
        blob: &Blob => Blob = blob.clone(),
        clusters: u64,
        ;;
    }
    pub fn build(self) -> Entry {
        let (blob, clusters) = (self.blob, self.clusters);
        blob_entry(self.target, BlobOp::Resize { blob, clusters })
    }
}

opcode! {
    /// Writes a blob's metadata (size, xattrs) to the device.
    pub struct BlobSyncMetadata {
        target: Target,
        blob: &Blob => Blob = blob.clone(),
        ;;
    }
    pub fn build(self) -> Entry {
        blob_entry(self.target, BlobOp::SyncMetadata { blob: self.blob })
    }
}

opcode! {
    /// Deletes a blob by id (`EBUSY` while it is open).
    pub struct BlobDelete {
        target: Target,
        id: BlobId,
        ;;
    }
    pub fn build(self) -> Entry {
        blob_entry(self.target, BlobOp::Delete { id: self.id })
    }
}

opcode! {
    /// Closes a blob, taking the handle (`EBUSY` if clones of it or entries in
    /// flight still hold it; they close it when the last is dropped).
    pub struct BlobClose {
        target: Target,
        blob: Blob,
        ;;
    }
    pub fn build(self) -> Entry {
        blob_entry(self.target, BlobOp::Close { blob: self.blob })
    }
}

opcode! {
    /// Starts iterating a store's blobs: opens the first one. The result is
    /// its id and [`Completion::take_blob`](crate::Completion::take_blob)
    /// gives it; `ENOENT` when the store has no blobs.
    pub struct BlobIterFirst {
        target: Target,
        store: &Blobstore => Rc<StoreInner> = store.inner.clone(),
        ;;
    }
    pub fn build(self) -> Entry {
        let opened = OpenedBlob::new(self.store);
        blob_entry(self.target, BlobOp::IterFirst { opened })
    }
}

opcode! {
    /// Continues an iteration: closes `blob` (the previous step's, taking the
    /// handle; `EBUSY` if other handles hold it) and opens the next blob,
    /// handed over as by [`BlobIterFirst`]; `ENOENT` after the last.
    pub struct BlobIterNext {
        target: Target,
        blob: Blob,
        ;;
    }
    pub fn build(self) -> Entry {
        let opened = OpenedBlob::new(self.blob.inner.store.clone());
        blob_entry(self.target, BlobOp::IterNext { blob: self.blob, opened })
    }
}
