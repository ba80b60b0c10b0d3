//! The op future: pushes one entry (waiting for SQ room if it must), then
//! waits for its completion. Dropped while its entry is in the ring, it
//! leaves the entry to the ring and asks for a cancel (see `ops.rs`).

use super::ops::OpId;
use super::Shared;
use crate::ring::{Completion, Entry};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// The future of [`AsyncRing::submit`](super::AsyncRing::submit): the
/// entry's [`Completion`], with its buffers.
#[must_use = "futures do nothing unless awaited"]
pub struct Submit {
    shared: Shared,
    stage: Stage,
}

enum Stage {
    /// Not in the ring yet: the SQ was full, or the future was not polled.
    Unpushed(Entry),
    /// In the ring, under this op.
    Pushed(OpId),
    Done,
}

impl Submit {
    pub(super) fn new(shared: Shared, entry: Entry) -> Submit {
        Submit {
            shared,
            stage: Stage::Unpushed(entry),
        }
    }
}

impl Future for Submit {
    type Output = Completion;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Completion> {
        let this = self.get_mut();
        let mut state = this.shared.borrow_mut();
        match std::mem::replace(&mut this.stage, Stage::Done) {
            Stage::Unpushed(entry) => match state.try_push(entry) {
                Ok(id) => {
                    // The completion comes in a later drive: record the waker now.
                    let early = state.ops.poll_op(id, cx.waker());
                    debug_assert!(early.is_none());
                    this.stage = Stage::Pushed(id);
                    Poll::Pending
                }
                Err(entry) => {
                    state.wait_for_sq_room(cx.waker());
                    this.stage = Stage::Unpushed(entry);
                    Poll::Pending
                }
            },
            Stage::Pushed(id) => match state.ops.poll_op(id, cx.waker()) {
                Some(done) => Poll::Ready(done),
                None => {
                    this.stage = Stage::Pushed(id);
                    Poll::Pending
                }
            },
            Stage::Done => panic!("spdk-ring: a Submit future was polled after it completed"),
        }
    }
}

impl Drop for Submit {
    fn drop(&mut self) {
        if let Stage::Pushed(id) = self.stage {
            self.shared.borrow_mut().abandon(id);
        }
    }
}
