//! The common operations as methods: buffers move in and come back with
//! the result, `(Result<bytes, IoFailure>, buffer)`, on success and on
//! failure alike, in the manner of tokio-uring. Each is [`AsyncRing::submit`]
//! of the entry its name says.

use super::ops::OpDone;
use super::submit::{Submit, SubmitTaking};
use super::AsyncRing;
use crate::blob::Blob;
use crate::dma::DmaBuf;
use crate::ring::{opcode, Entry, IoFailure, Target};
use std::future::Future;

/// The completion's result and its single buffer.
#[inline]
fn with_buf(mut done: OpDone<'_>) -> (Result<u64, IoFailure>, DmaBuf) {
    let buf = done
        .take_buf()
        .expect("single-buffer entries hand their buffer back");
    (done.result(), buf)
}

/// The completion's result and its buffers.
fn with_bufs(mut done: OpDone<'_>) -> (Result<u64, IoFailure>, Vec<DmaBuf>) {
    let bufs = done.take_bufs();
    (done.result(), bufs)
}

impl AsyncRing {
    /// The op of the entry `make` builds: a convenience method's entry is
    /// built where it is pushed from (no flags to clear: the builders set
    /// none).
    #[inline(always)]
    fn submit_made(&self, make: impl FnOnce() -> Entry) -> Submit {
        Submit::new(self.shared.clone(), make)
    }

    #[inline(always)]
    fn submit_buf(
        &self,
        make: impl FnOnce() -> Entry,
    ) -> impl Future<Output = (Result<u64, IoFailure>, DmaBuf)> {
        SubmitTaking::new(self.submit_made(make), with_buf)
    }

    fn submit_bufs(
        &self,
        make: impl FnOnce() -> Entry,
    ) -> impl Future<Output = (Result<u64, IoFailure>, Vec<DmaBuf>)> {
        SubmitTaking::new(self.submit_made(make), with_bufs)
    }

    /// Reads `buf.len()` bytes at block `offset_blocks` of a bdev.
    #[inline]
    pub fn read(
        &self,
        target: Target,
        buf: DmaBuf,
        offset_blocks: u64,
    ) -> impl Future<Output = (Result<u64, IoFailure>, DmaBuf)> {
        self.submit_buf(move || opcode::Read::new(target, buf, offset_blocks).build())
    }

    /// Writes `buf` at block `offset_blocks` of a bdev.
    #[inline]
    pub fn write(
        &self,
        target: Target,
        buf: DmaBuf,
        offset_blocks: u64,
    ) -> impl Future<Output = (Result<u64, IoFailure>, DmaBuf)> {
        self.submit_buf(move || opcode::Write::new(target, buf, offset_blocks).build())
    }

    /// Scatter read into `bufs` (at most [`MAX_IOVECS`](crate::MAX_IOVECS)).
    pub fn readv(
        &self,
        target: Target,
        bufs: Vec<DmaBuf>,
        offset_blocks: u64,
    ) -> impl Future<Output = (Result<u64, IoFailure>, Vec<DmaBuf>)> {
        self.submit_bufs(move || opcode::Readv::new(target, bufs, offset_blocks).build())
    }

    /// Gather write from `bufs` (at most [`MAX_IOVECS`](crate::MAX_IOVECS)).
    pub fn writev(
        &self,
        target: Target,
        bufs: Vec<DmaBuf>,
        offset_blocks: u64,
    ) -> impl Future<Output = (Result<u64, IoFailure>, Vec<DmaBuf>)> {
        self.submit_bufs(move || opcode::Writev::new(target, bufs, offset_blocks).build())
    }

    /// Makes earlier writes to `num_blocks` blocks at `offset_blocks` durable.
    pub fn flush(
        &self,
        target: Target,
        offset_blocks: u64,
        num_blocks: u64,
    ) -> impl Future<Output = Result<u64, IoFailure>> {
        let op =
            self.submit_made(move || opcode::Flush::new(target, offset_blocks, num_blocks).build());
        SubmitTaking::new(op, |done: OpDone<'_>| done.result())
    }

    /// Reads at `slba` of an NVMe namespace target (register it with
    /// [`AsyncRing::register_nvme_namespace`]).
    pub fn nvme_read(
        &self,
        target: Target,
        buf: DmaBuf,
        slba: u64,
    ) -> impl Future<Output = (Result<u64, IoFailure>, DmaBuf)> {
        self.submit_buf(move || opcode::NvmeRead::new(target, buf, slba).build())
    }

    /// Writes at `slba` of an NVMe namespace target.
    pub fn nvme_write(
        &self,
        target: Target,
        buf: DmaBuf,
        slba: u64,
    ) -> impl Future<Output = (Result<u64, IoFailure>, DmaBuf)> {
        self.submit_buf(move || opcode::NvmeWrite::new(target, buf, slba).build())
    }

    /// Reads at io unit `offset_units` of a blob (its blobstore registered
    /// with [`AsyncRing::register_blobstore`]).
    pub fn blob_read(
        &self,
        target: Target,
        blob: &Blob,
        buf: DmaBuf,
        offset_units: u64,
    ) -> impl Future<Output = (Result<u64, IoFailure>, DmaBuf)> {
        // Built before: the future must not borrow the blob.
        let entry = opcode::BlobRead::new(target, blob, buf, offset_units).build();
        self.submit_buf(move || entry)
    }

    /// Writes at io unit `offset_units` of a blob.
    pub fn blob_write(
        &self,
        target: Target,
        blob: &Blob,
        buf: DmaBuf,
        offset_units: u64,
    ) -> impl Future<Output = (Result<u64, IoFailure>, DmaBuf)> {
        // Built before: the future must not borrow the blob.
        let entry = opcode::BlobWrite::new(target, blob, buf, offset_units).build();
        self.submit_buf(move || entry)
    }
}
