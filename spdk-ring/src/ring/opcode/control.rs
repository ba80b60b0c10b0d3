//! Entries that name no target: Nop, Cancel, the timers and MsgRing.

use crate::queue::{EntryKind, Submission};
use crate::ring::op::{IoKind, IoOp};
use crate::ring::{Entry, RingSender};
use std::time::Duration;

fn control_entry(kind: EntryKind<crate::ring::op::IoOp>) -> Entry {
    Entry::from_submission(Submission::new(kind, 0))
}

fn nanos(after: Duration) -> u64 {
    u64::try_from(after.as_nanos()).unwrap_or(u64::MAX)
}

opcode! {
    /// Does nothing and completes `Ok(0)`; useful as a chain link or barrier.
    #[derive(Default)]
    pub struct Nop {
        ;;
    }
    pub fn build(self) -> Entry {
        control_entry(EntryKind::Nop)
    }
}

opcode! {
    /// Cancels the first live entry with `user_data`: not started → it
    /// completes `ECANCELED` and this `Ok(0)`; in flight → abort is requested
    /// (this `Ok(0)`, or `EALREADY` where the bdev cannot abort); unknown →
    /// `ENOENT`.
    #[derive(Clone, Copy)]
    pub struct Cancel {
        user_data: u64,
        ;;
    }
    pub fn build(self) -> Entry {
        control_entry(EntryKind::Cancel { user_data: self.user_data })
    }
}

opcode! {
    /// Completes `ETIME` after `after`, or `Ok(0)` once `count` other entries
    /// have completed (when `count` is set), whichever is first.
    #[derive(Clone, Copy)]
    pub struct Timeout {
        after: Duration,
        ;;
        /// Complete `Ok(0)` once this many other entries have completed.
        count: u32, default 0;
    }
    pub fn build(self) -> Entry {
        control_entry(EntryKind::Timeout { after_ns: nanos(self.after), count: self.count })
    }
}

opcode! {
    /// Bounds the entry before it, which must carry `LINK`: if that entry has
    /// not completed within `after`, it is aborted and this completes `ETIME`;
    /// otherwise this completes `ECANCELED`.
    #[derive(Clone, Copy)]
    pub struct LinkTimeout {
        after: Duration,
        ;;
    }
    pub fn build(self) -> Entry {
        control_entry(EntryKind::LinkTimeout { after_ns: nanos(self.after) })
    }
}

opcode! {
    /// io_uring's `IORING_OP_MSG_RING`: posts a completion carrying
    /// `user_data` and `Ok(value)` into the CQ of the ring behind `to`
    /// (another thread's, or this one's), which takes it in its next `poll`.
    /// Messages are sent in the order their entries start: for entries
    /// without LINK or DRAIN, push order, so one sender's messages arrive in
    /// the order it pushed them.
    ///
    /// The entry is sent when it starts, like a `Nop`: after what it is
    /// LINKed to succeeded (a failure cancels it, `ECANCELED`, and nothing is
    /// sent), after every earlier entry under DRAIN. Its own completion, with
    /// the entry's `user_data`, is `Ok(0)`; `EOVERFLOW` when the target's CQ
    /// was overflowing at its last poll or its message mailbox
    /// (`RingBuilder::forward_entries`) is full; `ENXIO` when the target ring
    /// is gone. With [`EntryFlags::SKIP_SUCCESS`](crate::EntryFlags) only a
    /// failure posts it. Allocates nothing, takes no lock.
    ///
    /// ```no_run
    /// # fn demo(ring: &mut spdk_ring::Ring, disk: spdk_ring::Target,
    /// #         buf: spdk_ring::DmaBuf, core1: &spdk_ring::RingSender) {
    /// use spdk_ring::{opcode, EntryFlags};
    /// // Tell core 1 that block 8 is written, once it is.
    /// let write = opcode::Write::new(disk, buf, 8).build().user_data(1);
    /// ring.push(write.flags(EntryFlags::LINK)).expect("SQ has room");
    /// let tell = opcode::MsgRing::new(core1, 0xfeed, 8).build();
    /// ring.push(tell.flags(EntryFlags::SKIP_SUCCESS)).expect("SQ has room");
    /// // Once the write succeeded (in a later poll), core 1's CQ gets
    /// // (0xfeed, Ok(8)); if it fails, core 1 gets nothing and this ring
    /// // gets the write's error and the message's ECANCELED.
    /// # }
    /// ```
    #[derive(Clone)]
    pub struct MsgRing {
        to: &RingSender => RingSender = to.clone(),
        user_data: u64,
        value: u32,
        ;;
    }
    pub fn build(self) -> Entry {
        let op = IoOp {
            // No target: the ring id is not checked.
            target_ring: 0,
            kind: IoKind::MsgRing { to: self.to, user_data: self.user_data, value: self.value },
        };
        control_entry(EntryKind::Immediate { op })
    }
}
