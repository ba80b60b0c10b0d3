//! `MsgRing`, after io_uring's `IORING_OP_MSG_RING`: a completion posted
//! into another ring's CQ, carrying a `user_data` and a value.

use super::forward::{Message, Shared};
use super::Ring;
use super::RingSender;
use crate::queue::{IoError, Refused, Sent};
use std::sync::atomic::Ordering;

/// A message for [`Ring::msg_ring`]: the target ring's CQ gets a completion
/// with `user_data` and `Ok(value)`; the sending ring gets its own
/// completion (`own_user_data`): `Ok(0)`, or `EOVERFLOW` (the target's CQ
/// was overflowing at its last poll, or its message mailbox is full), or
/// `ENXIO` (the target ring is gone). With `skip_success`, only a failure
/// posts the sender's completion.
///
/// Messages from one sending thread reach the target's CQ in the order
/// they were sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsgRing {
    user_data: u64,
    value: u32,
    own_user_data: u64,
    skip_success: bool,
}

impl MsgRing {
    /// A message whose completion in the target ring carries `user_data`
    /// and `Ok(value)`.
    pub fn new(user_data: u64, value: u32) -> MsgRing {
        MsgRing {
            user_data,
            value,
            own_user_data: 0,
            skip_success: false,
        }
    }

    /// The `user_data` of the sender's own completion (default 0).
    pub fn own_user_data(mut self, user_data: u64) -> MsgRing {
        self.own_user_data = user_data;
        self
    }

    /// Post the sender's completion only if the message failed (io_uring's
    /// `IOSQE_CQE_SKIP_SUCCESS`; default `false`).
    pub fn skip_success(mut self, skip: bool) -> MsgRing {
        self.skip_success = skip;
        self
    }
}

impl Shared {
    /// Queues a message for this ring's CQ.
    fn post_message(&self, message: Message) -> Result<(), IoError> {
        if self.overflowing.load(Ordering::Relaxed) {
            return Err(IoError::errno(libc::EOVERFLOW));
        }
        match self.messages.send(message, drop) {
            Ok(Sent::Queued) => {
                self.notify_target();
                Ok(())
            }
            Ok(Sent::Closed) | Err(Refused::Closed(_)) => Err(IoError::errno(libc::ENXIO)),
            Err(Refused::Full(_)) => Err(IoError::errno(libc::EOVERFLOW)),
        }
    }
}

impl Ring {
    /// Posts `msg` into the CQ of the ring behind `to` (see [`MsgRing`]);
    /// the target takes it in its next `poll`. This ring's own completion
    /// is in its CQ when this returns.
    ///
    /// Hands the message back, unsent, when this ring has no room left for
    /// its own completion (every lane slot holds an entry or an unreaped
    /// completion): reap, then retry. Allocates nothing, takes no lock.
    ///
    /// ```no_run
    /// # fn demo(ring: &mut spdk_ring::Ring, other: &spdk_ring::RingSender) {
    /// use spdk_ring::MsgRing;
    /// ring.msg_ring(other, MsgRing::new(0xfeed, 42).own_user_data(1))
    ///     .expect("room for our completion");
    /// for done in ring.completions() {
    ///     assert_eq!((done.user_data(), done.result()), (1, Ok(0)));
    /// }
    /// # }
    /// ```
    pub fn msg_ring(&mut self, to: &RingSender, msg: MsgRing) -> Result<(), MsgRing> {
        if !self.driver.lane.has_room() {
            return Err(msg);
        }
        let result = to.shared.post_message(Message {
            user_data: msg.user_data,
            value: msg.value,
        });
        if result.is_ok() && msg.skip_success {
            return Ok(());
        }
        // Cannot fail: a slot is free.
        let _ = self
            .driver
            .lane
            .post_completion(msg.own_user_data, result.map(|()| 0), None);
        self.queue.post_outside(1);
        Ok(())
    }
}
