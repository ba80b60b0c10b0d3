//! Targets of a ring, like io_uring's fixed files: registering bdevs, NVMe
//! namespaces and blobstores (each takes the ring's own channel or qpair
//! now, so no entry looks anything up later), their state, unregistering.

use super::{driver, Ring, Target};
use crate::bdev::BdevDesc;
use crate::error::{Errno, Error, Result};
use std::rc::Rc;

impl Ring {
    /// Registers an open bdev: the ring takes its own I/O channel on its
    /// thread now, so no entry looks anything up later.
    pub fn register_bdev(&mut self, desc: &BdevDesc) -> Result<Target> {
        if !Rc::ptr_eq(&desc.thread().inner, &self.thread.inner) {
            return Err(Error::InvalidArgument(
                "the descriptor was opened on another SPDK thread than the ring's".into(),
            ));
        }
        if desc.is_removed() {
            return Err(Error::Errno(Errno::ENODEV));
        }
        self.check_room_for_target()?;
        let channel = desc.io_channel()?;
        let index = self.driver.add_target(desc, channel);
        Ok(self.registered(index))
    }

    /// Registers namespace `nsid` of an NVMe controller: the ring allocates
    /// its own I/O queue pair (of `io_queue_size` entries and requests, or
    /// SPDK's defaults), owned by the ring and used from its thread. When
    /// the qpair is full, entries wait (ENOMEM is retried in order). The ring keeps
    /// the controller attached while the target is registered.
    pub fn register_nvme_namespace(
        &mut self,
        ctrlr: &crate::nvme::NvmeController,
        nsid: u32,
        io_queue_size: Option<u32>,
    ) -> Result<Target> {
        self.check_room_for_target()?;
        let index = self.driver.add_nvme_target(ctrlr, nsid, io_queue_size)?;
        Ok(self.registered(index))
    }

    /// Registers a blobstore: the ring takes its own I/O channel on the
    /// store now. Blob entries (data and metadata) name the returned target;
    /// the registration keeps the store loaded until the ring is dropped or
    /// the target unregistered.
    pub fn register_blobstore(&mut self, store: &crate::blob::Blobstore) -> Result<Target> {
        self.check_room_for_target()?;
        let index = self.driver.add_blob_target(store)?;
        Ok(self.registered(index))
    }

    /// True once an NVMe target's queue pair failed (transport loss): its
    /// new entries complete `ENXIO`.
    pub fn is_failed(&self, target: Target) -> bool {
        self.driver
            .target(target.index)
            .and_then(|t| t.nvme())
            .is_some_and(|q| q.failed)
    }

    /// Reconnects an NVMe target whose queue pair failed (for example after
    /// the fabric connection dropped and the target came back). Entries that
    /// were in flight at the failure have already completed with errors.
    pub fn reconnect_nvme(&mut self, target: Target) -> Result<()> {
        if target.ring_id != self.ring_id {
            return Err(Error::Errno(Errno::EBADF));
        }
        self.driver.reconnect_nvme(target.index)
    }

    /// Stops accepting entries for `target`, whatever its kind (they
    /// complete `EBADF`), and releases its channel (bdev or blobstore) or
    /// qpair (NVMe) once its in-flight I/O has completed; a blobstore is
    /// then no longer held.
    pub fn unregister(&mut self, target: Target) -> Result<()> {
        let t = self.valid_target_mut(target)?;
        t.unregistered = true;
        self.driver.review_targets = true;
        self.driver.release_idle_targets();
        Ok(())
    }

    fn valid_target_mut(&mut self, target: Target) -> Result<&mut driver::TargetState> {
        let ring_id = self.ring_id;
        match self.driver.targets.get_mut(target.index as usize) {
            Some(t) if target.ring_id == ring_id && !t.unregistered => Ok(t),
            _ => Err(Error::Errno(Errno::EBADF)),
        }
    }

    /// Block size and block count of a registered target.
    pub fn target_geometry(&self, target: Target) -> Option<(u32, u64)> {
        (target.ring_id == self.ring_id)
            .then(|| self.driver.block_geometry(target.index))
            .flatten()
    }

    /// True once the target's bdev reported removal; its new entries
    /// complete `ENODEV`.
    pub fn is_removed(&self, target: Target) -> bool {
        self.driver.target(target.index).is_some_and(|t| t.removed)
    }

    fn check_room_for_target(&self) -> Result<()> {
        let registered = self.driver.targets.len();
        if registered >= self.queue.config().max_targets as usize {
            return Err(Error::InvalidArgument(format!(
                "ring already has {registered} targets registered (RingBuilder::max_targets)"
            )));
        }
        Ok(())
    }

    /// The handle of the target just added at `index`, once both paths
    /// know its checks and the inbox has room for its events.
    fn registered(&mut self, index: u32) -> Target {
        self.driver.refresh_target(index);
        self.inbox.events.borrow_mut().reserve(1);
        Target {
            ring_id: self.ring_id,
            index,
        }
    }
}
