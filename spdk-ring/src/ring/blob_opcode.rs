//! Blob entries, for targets from
//! [`Ring::register_blobstore`](crate::Ring::register_blobstore).
//!
//! Offsets and lengths are in **io units** of the store
//! ([`Blobstore::io_unit_size`](crate::blob::Blobstore::io_unit_size)).
//! Without `io_units`, a read or write covers its whole buffer, which must
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
use crate::blob::{Blob, BlobId, BlobOptions, Blobstore, PreparedBlobOpts};
use crate::dma::DmaBuf;
use crate::ring::op::{BlobOp, IoKind, OpenedBlob, WHOLE_BUFFER_UNITS};
use crate::ring::{Entry, Target};

fn blob_entry(target: Target, op: BlobOp) -> Entry {
    io_entry(target, IoKind::Blob(op))
}

/// A blob read or write builder over `$field: $ty` (one buffer, or several).
macro_rules! blob_data_io {
    ($(#[$doc:meta])* $name:ident, $variant:ident, $field:ident: $ty:ty) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name {
            target: Target,
            blob: Blob,
            $field: $ty,
            offset: u64,
            units: u64,
        }

        impl $name {
            /// An I/O of all the memory given, at io unit `offset` of `blob`
            /// (at most [`MAX_IOVECS`](crate::MAX_IOVECS) buffers).
            pub fn new(target: Target, blob: &Blob, $field: $ty, offset: u64) -> Self {
                $name { target, blob: blob.clone(), $field, offset, units: WHOLE_BUFFER_UNITS }
            }
            /// Transfer only `n` io units (the memory must hold them).
            pub fn io_units(mut self, n: u64) -> Self {
                self.units = n.min(WHOLE_BUFFER_UNITS - 1);
                self
            }
            pub fn build(self) -> Entry {
                blob_entry(
                    self.target,
                    BlobOp::$variant { blob: self.blob, $field: self.$field, offset: self.offset, units: self.units },
                )
            }
        }
    };
}

blob_data_io!(
    /// Reads from a blob into a DMA buffer (never-written clusters of a
    /// thin blob read as zeros); the completion hands the buffer back.
    BlobRead,
    Read,
    buf: DmaBuf
);
blob_data_io!(
    /// Writes a DMA buffer to a blob (allocating clusters of a thin blob).
    BlobWrite,
    Write,
    buf: DmaBuf
);
blob_data_io!(
    /// Scatter read from a blob; all buffers come back in the completion.
    BlobReadv,
    Readv,
    bufs: Vec<DmaBuf>
);
blob_data_io!(
    /// Gather write to a blob; all buffers come back in the completion.
    BlobWritev,
    Writev,
    bufs: Vec<DmaBuf>
);

macro_rules! blob_range_io {
    ($(#[$doc:meta])* $name:ident, $variant:ident) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name {
            target: Target,
            blob: Blob,
            offset: u64,
            units: u64,
        }

        impl $name {
            /// `io_units` io units of `blob` from io unit `offset`.
            pub fn new(target: Target, blob: &Blob, offset: u64, io_units: u64) -> Self {
                $name { target, blob: blob.clone(), offset, units: io_units }
            }
            pub fn build(self) -> Entry {
                blob_entry(
                    self.target,
                    BlobOp::$variant { blob: self.blob, offset: self.offset, units: self.units },
                )
            }
        }
    };
}

blob_range_io!(
    /// Releases a range of a blob (thin blobs read it back as zeros).
    BlobUnmap,
    Unmap
);
blob_range_io!(
    /// Writes zeros to a range of a blob.
    BlobWriteZeroes,
    WriteZeroes
);

/// Creates a blob; the completion's result is the new blob's id.
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

/// Opens a blob of `store` (the target's store); the completion's result
/// is its id and [`Completion::take_blob`](crate::Completion::take_blob)
/// gives the [`Blob`].
#[derive(Debug)]
pub struct BlobOpen {
    target: Target,
    store: std::rc::Rc<crate::blob::StoreInner>,
    id: BlobId,
}

impl BlobOpen {
    pub fn new(target: Target, store: &Blobstore, id: BlobId) -> Self {
        BlobOpen {
            target,
            store: store.inner.clone(),
            id,
        }
    }
    pub fn build(self) -> Entry {
        blob_entry(
            self.target,
            BlobOp::Open {
                id: self.id,
                opened: OpenedBlob::new(self.store),
            },
        )
    }
}

/// Resizes a blob to `clusters` (persisted by [`BlobSyncMetadata`]).
#[derive(Debug)]
pub struct BlobResize {
    target: Target,
    blob: Blob,
    clusters: u64,
}

impl BlobResize {
    pub fn new(target: Target, blob: &Blob, clusters: u64) -> Self {
        BlobResize {
            target,
            blob: blob.clone(),
            clusters,
        }
    }
    pub fn build(self) -> Entry {
        blob_entry(
            self.target,
            BlobOp::Resize {
                blob: self.blob,
                clusters: self.clusters,
            },
        )
    }
}

/// Writes a blob's metadata (size, xattrs) to the device.
#[derive(Debug)]
pub struct BlobSyncMetadata {
    target: Target,
    blob: Blob,
}

impl BlobSyncMetadata {
    pub fn new(target: Target, blob: &Blob) -> Self {
        BlobSyncMetadata {
            target,
            blob: blob.clone(),
        }
    }
    pub fn build(self) -> Entry {
        blob_entry(self.target, BlobOp::SyncMetadata { blob: self.blob })
    }
}

/// Deletes a blob by id (`EBUSY` while it is open).
#[derive(Debug)]
pub struct BlobDelete {
    target: Target,
    id: BlobId,
}

impl BlobDelete {
    pub fn new(target: Target, id: BlobId) -> Self {
        BlobDelete { target, id }
    }
    pub fn build(self) -> Entry {
        blob_entry(self.target, BlobOp::Delete { id: self.id })
    }
}

/// Closes a blob, taking the handle (`EBUSY` if clones of it or entries in
/// flight still hold it; they close it when the last is dropped).
#[derive(Debug)]
pub struct BlobClose {
    target: Target,
    blob: Blob,
}

impl BlobClose {
    pub fn new(target: Target, blob: Blob) -> Self {
        BlobClose { target, blob }
    }
    pub fn build(self) -> Entry {
        blob_entry(self.target, BlobOp::Close { blob: self.blob })
    }
}

/// Starts iterating a store's blobs: opens the first one. The result is
/// its id and [`Completion::take_blob`](crate::Completion::take_blob) gives
/// it; `ENOENT` when the store has no blobs.
#[derive(Debug)]
pub struct BlobIterFirst {
    target: Target,
    store: std::rc::Rc<crate::blob::StoreInner>,
}

impl BlobIterFirst {
    pub fn new(target: Target, store: &Blobstore) -> Self {
        BlobIterFirst {
            target,
            store: store.inner.clone(),
        }
    }
    pub fn build(self) -> Entry {
        blob_entry(
            self.target,
            BlobOp::IterFirst {
                opened: OpenedBlob::new(self.store),
            },
        )
    }
}

/// Continues an iteration: closes `blob` (the previous step's, taking the
/// handle; `EBUSY` if other handles hold it) and opens the next blob,
/// handed over as by [`BlobIterFirst`]; `ENOENT` after the last.
#[derive(Debug)]
pub struct BlobIterNext {
    target: Target,
    blob: Blob,
}

impl BlobIterNext {
    pub fn new(target: Target, blob: Blob) -> Self {
        BlobIterNext { target, blob }
    }
    pub fn build(self) -> Entry {
        let opened = OpenedBlob::new(self.blob.inner.store.clone());
        blob_entry(
            self.target,
            BlobOp::IterNext {
                blob: self.blob,
                opened,
            },
        )
    }
}
