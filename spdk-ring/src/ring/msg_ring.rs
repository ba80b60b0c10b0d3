//! [`MsgRing`](super::opcode::MsgRing) entries, once started: the core
//! runs them as `Immediate` entries, and the driver hands them here to put
//! the message into the target ring's mailbox. The target's `poll` posts it
//! (`forward/mod.rs`, `take_returns_and_messages`).

use super::forward::{Message, Shared};
use super::RingSender;
use crate::queue::{IoError, IoResult, Refused, Sent};
use std::sync::atomic::Ordering;

/// Sends a message for the CQ of the ring behind `to`: the sender's result.
pub(super) fn send(to: &RingSender, user_data: u64, value: u32) -> IoResult {
    to.shared.post_message(Message { user_data, value })?;
    Ok(0)
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
