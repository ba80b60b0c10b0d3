//! The op future. Its entry is pushed when the future is made (as
//! tokio-uring does), or queued in the handle when the SQ is full and
//! pushed, in order, as rounds free room; the future only waits for the
//! completion. Dropped before that, it leaves the entry to the ring and
//! asks for a cancel (see `ops.rs`).

use super::ops::{OpDone, OpId, Waiter};
use super::tasks::TaskRef;
use super::Shared;
use crate::ring::{Completion, Entry};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// The future of [`AsyncRing::submit`](super::AsyncRing::submit): the
/// entry's [`Completion`], with its buffers.
#[must_use = "the entry is in the ring already; dropping the future cancels it"]
pub struct Submit {
    shared: Shared,
    /// None once the completion was handed out.
    op: Option<OpId>,
    /// The task that made the future (already the op's waiter) and the
    /// ring round then, until the first poll: polled by that task, with
    /// its own waker, in the same round, the future has nothing to record
    /// and its completion cannot have come (completions are recorded only
    /// in rounds).
    made_in: Option<(TaskRef, u32)>,
}

impl Submit {
    /// Takes an op and pushes the entry `make` builds, tagged with the op.
    #[inline(always)]
    pub(super) fn new(shared: Shared, make: impl FnOnce() -> Entry) -> Submit {
        let task = shared.tasks.polling_task();
        let waiter = task.map_or(Waiter::Nobody, Waiter::Task);
        let id = shared.borrow_mut().submit(make, waiter);
        let made_in = task.map(|task| (task, shared.tasks.round()));
        Submit {
            shared,
            op: Some(id),
            made_in,
        }
    }

    /// Waits for the completion, from which `take` takes what the future
    /// resolves to: one poll for every future of a single entry. The first
    /// poll, by the task that made the future in the same round, is
    /// inlined: there is nothing to record and nothing can have come.
    #[inline(always)]
    fn poll_with<T>(
        &mut self,
        cx: &mut Context<'_>,
        take: impl FnOnce(OpDone<'_>) -> T,
    ) -> Poll<T> {
        if let Some((task, round)) = self.made_in.take() {
            let tasks = &self.shared.tasks;
            if tasks.round() == round && tasks.polled_task(cx.waker()) == Some(task) {
                return Poll::Pending;
            }
        }
        self.poll_table(cx, take)
    }

    /// Asks the op table for the completion (recording the waiter if it
    /// has not come).
    #[inline(always)]
    fn poll_table<T>(
        &mut self,
        cx: &mut Context<'_>,
        take: impl FnOnce(OpDone<'_>) -> T,
    ) -> Poll<T> {
        let id = self
            .op
            .expect("spdk-ring: a Submit future was polled after it completed");
        let inner = &*self.shared;
        let output = inner
            .borrow_mut()
            .ops
            .poll_op_with(id, cx.waker(), &inner.tasks, take);
        match output {
            Some(output) => {
                self.op = None;
                Poll::Ready(output)
            }
            None => Poll::Pending,
        }
    }
}

impl Future for Submit {
    type Output = Completion;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Completion> {
        self.get_mut().poll_with(cx, |done| done.into_completion())
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
    #[inline(always)]
    pub(super) fn new(submit: Submit, take: F) -> SubmitTaking<F> {
        SubmitTaking { submit, take }
    }
}

impl<T, F: Fn(OpDone<'_>) -> T + Unpin> Future for SubmitTaking<F> {
    type Output = T;

    #[inline(always)]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let this = self.get_mut();
        this.submit.poll_with(cx, &this.take)
    }
}

impl Drop for Submit {
    #[inline]
    fn drop(&mut self) {
        if let Some(id) = self.op {
            self.shared.borrow_mut().abandon(id);
        }
    }
}
