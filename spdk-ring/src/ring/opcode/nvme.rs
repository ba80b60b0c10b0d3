//! NVMe entries: raw I/O and admin commands, and the NVMe names of the
//! block entries for namespace targets registered with
//! [`Ring::register_nvme_namespace`](crate::Ring::register_nvme_namespace)
//! (the same builders, mapped to NVMe commands by the target).

use super::block::{Compare, Flush, Read, Readv, Unmap, Write, WriteZeroes, Writev};
use super::io_entry;
use crate::dma::DmaBuf;
use crate::ring::op::{IoKind, NvmeCommand};
use crate::ring::{Entry, Target};

/// A [`Read`] on a namespace target ([`Ring::register_nvme_namespace`](crate::Ring::register_nvme_namespace)): the same builder, mapped to an NVMe command.
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

opcode! {
    /// Sends a raw NVMe I/O command to an NVMe-backed bdev or a namespace,
    /// with an optional data buffer. The completion's error keeps the NVMe
    /// status.
    pub struct NvmePassthru {
        target: Target,
        cmd: NvmeCommand,
        ;;
        /// The data buffer the command transfers (its whole length).
        buf: DmaBuf => Option<DmaBuf> = Some(buf), default None;
    }
    pub fn build(self) -> Entry {
        io_entry(self.target, IoKind::NvmePassthru { cmd: self.cmd, buf: self.buf })
    }
}

opcode! {
    /// Sends a raw NVMe *admin* command (Identify, Get Log Page, ...) to the
    /// controller behind a target: an NVMe namespace target's controller, or
    /// an NVMe-backed bdev that supports admin passthru. The namespace id is
    /// the caller's to set.
    pub struct NvmeAdminRaw {
        target: Target,
        cmd: NvmeCommand,
        ;;
        /// The data buffer the command transfers (its whole length).
        buf: DmaBuf => Option<DmaBuf> = Some(buf), default None;
    }
    pub fn build(self) -> Entry {
        io_entry(self.target, IoKind::NvmeAdmin { cmd: self.cmd, buf: self.buf })
    }
}
