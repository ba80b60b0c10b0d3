//! Typed entry builders, one per operation, in the manner of io_uring's
//! `opcode` module: required arguments in `new`, optional ones as builder
//! methods, then [`build`](Read::build) gives an [`Entry`] to which
//! `.user_data(..)` and `.flags(..)` apply.
//!
//! Offsets and lengths are in **blocks** of the target bdev or namespace
//! (`offset_blocks`, `num_blocks`), or in **io units** of a blobstore for
//! blob entries (`offset_units`, `num_units`). When the length is not given,
//! an I/O covers its whole buffer, which must then be a multiple of the
//! block size (io unit). Invalid combinations are not push errors: the
//! entry completes with an errno, see [`Ring`](super::Ring) for the table.
//!
//! Every builder is written once, by the `opcode!` macro: its fields, its optional
//! fields with their defaults, and how it becomes an entry.

use super::entry::Entry;
use super::op::IoOp;
use super::Target;
use crate::queue::Submission;

/// Writes one builder: a struct, `new` taking the required fields in
/// order, one setter per optional field (which starts at its default), and
/// the given `build`. A field may take one type and store another
/// (`name: Taken => Stored = conversion`), for handles held by value.
macro_rules! opcode {
    (
        $(#[$outer:meta])*
        pub struct $name:ident {
            $( $field:ident : $taken:ty $(=> $stored:ty = $conv:expr)? ),* $(,)?
            ;;
            $(
                $(#[$opt_doc:meta])*
                $opt:ident : $opt_taken:ty $(=> $opt_stored:ty = $opt_conv:expr)?, default $default:expr;
            )*
        }
        pub fn build($self:ident) -> Entry $build:block
    ) => {
        $(#[$outer])*
        #[derive(Debug)]
        pub struct $name {
            $( $field: opcode!(@stored $taken $(, $stored)?), )*
            $( $opt: opcode!(@stored $opt_taken $(, $opt_stored)?), )*
        }

        impl $name {
            /// The entry from its required fields, in order; optional
            /// fields start at their defaults.
            #[allow(clippy::new_without_default)]
            pub fn new($( $field: $taken ),*) -> Self {
                $name {
                    $( $field: opcode!(@convert $field $(, $conv)?), )*
                    $( $opt: $default, )*
                }
            }

            $(
                $(#[$opt_doc])*
                pub fn $opt(mut self, $opt: $opt_taken) -> Self {
                    self.$opt = opcode!(@convert $opt $(, $opt_conv)?);
                    self
                }
            )*

            pub fn build($self) -> Entry $build
        }
    };
    (@stored $taken:ty) => { $taken };
    (@stored $taken:ty, $stored:ty) => { $stored };
    (@convert $field:ident) => { $field };
    (@convert $field:ident, $conv:expr) => { $conv };
}

mod blob;
mod block;
mod control;
mod nvme;

pub use blob::{
    BlobClose, BlobCreate, BlobDelete, BlobIterFirst, BlobIterNext, BlobOpen, BlobRead, BlobReadv,
    BlobResize, BlobSyncMetadata, BlobUnmap, BlobWrite, BlobWriteZeroes, BlobWritev,
};
pub use block::{Compare, Flush, RawIo, Read, Readv, Reset, Unmap, Write, WriteZeroes, Writev};
pub use control::{Cancel, LinkTimeout, MsgRing, Nop, Timeout};
pub use nvme::{
    NvmeAdminRaw, NvmeCompare, NvmeDeallocate, NvmeFlush, NvmeIoRaw, NvmePassthru, NvmeRead,
    NvmeReadv, NvmeWrite, NvmeWriteZeroes, NvmeWritev,
};

/// An I/O entry for `target`.
fn io_entry(target: Target, kind: super::op::IoKind) -> Entry {
    Entry::from_submission(Submission::io(
        super::TargetId(target.index),
        IoOp {
            target_ring: target.ring_id,
            kind,
        },
        0,
    ))
}
