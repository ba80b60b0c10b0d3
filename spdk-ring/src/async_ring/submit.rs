//! The op future: pushes one entry (waiting for SQ room if it must), then
//! waits for its completion. Dropped while its entry is in the ring, it
//! leaves the entry to the ring and asks for a cancel (see `ops.rs`).

use super::ops::{OpId, OpTable};
use super::Shared;
use crate::ring::{Completion, Entry};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

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

impl Submit {
    /// Pushes the entry (or waits for SQ room), then waits for its
    /// completion, which `take` takes from the op table: one poll loop for
    /// every future of a single entry, whatever it keeps of the completion.
    #[inline]
    fn poll_with<T>(
        &mut self,
        cx: &mut Context<'_>,
        take: impl FnOnce(&mut OpTable, OpId, &Waker) -> Option<T>,
    ) -> Poll<T> {
        let mut state = self.shared.borrow_mut();
        match std::mem::replace(&mut self.stage, Stage::Done) {
            Stage::Unpushed(entry) => match state.try_push(entry) {
                Ok(id) => {
                    // The completion comes in a later drive: record the waker now.
                    let early = state.ops.poll_op(id, cx.waker());
                    debug_assert!(early.is_none());
                    self.stage = Stage::Pushed(id);
                    Poll::Pending
                }
                Err(entry) => {
                    state.wait_for_sq_room(cx.waker());
                    self.stage = Stage::Unpushed(entry);
                    Poll::Pending
                }
            },
            Stage::Pushed(id) => match take(&mut state.ops, id, cx.waker()) {
                Some(output) => Poll::Ready(output),
                None => {
                    self.stage = Stage::Pushed(id);
                    Poll::Pending
                }
            },
            Stage::Done => panic!("spdk-ring: a Submit future was polled after it completed"),
        }
    }
}

impl Future for Submit {
    type Output = Completion;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Completion> {
        self.get_mut()
            .poll_with(cx, |ops, id, waker| ops.poll_op(id, waker))
    }
}

/// A [`Submit`] that resolves to what `take` keeps of the completion (the
/// result and the buffers, for `read`, `write`, …), read in the op's slot
/// instead of moving the whole completion out first.
pub(super) struct SubmitTaking<F> {
    submit: Submit,
    take: F,
}

impl<F> SubmitTaking<F> {
    pub(super) fn new(submit: Submit, take: F) -> SubmitTaking<F> {
        SubmitTaking { submit, take }
    }
}

impl<T, F: Fn(&mut Completion) -> T + Unpin> Future for SubmitTaking<F> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let this = self.get_mut();
        let take = &this.take;
        this.submit
            .poll_with(cx, |ops, id, waker| ops.poll_op_with(id, waker, take))
    }
}

impl Drop for Submit {
    fn drop(&mut self) {
        if let Stage::Pushed(id) = self.stage {
            self.shared.borrow_mut().abandon(id);
        }
    }
}
