//! LINK chains from async code: `N` entries pushed together (or not at
//! all), each but the last flagged `LINK`, and awaited as one: the future
//! is ready when every entry has completed, with their completions in
//! order. A failed member completes the rest `ECANCELED`, as in the ring.

use super::ops::OpId;
use super::Shared;
use crate::queue::EntryFlags;
use crate::ring::{Completion, Entry};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// The future of [`AsyncRing::submit_linked`](super::AsyncRing::submit_linked).
#[must_use = "futures do nothing unless awaited"]
pub struct SubmitLinked<const N: usize> {
    shared: Shared,
    stage: Stage<N>,
}

enum Stage<const N: usize> {
    Unpushed([Entry; N]),
    /// In the ring; a member's completion once its future took it.
    Pushed([OpId; N], [Option<Completion>; N]),
    Done,
}

impl<const N: usize> SubmitLinked<N> {
    pub(super) fn new(shared: Shared, entries: [Entry; N]) -> SubmitLinked<N> {
        let mut position = 0;
        let entries = entries.map(|entry| {
            position += 1;
            // Every member's completion is awaited: no SKIP_SUCCESS.
            let flags = entry.get_flags().difference(EntryFlags::SKIP_SUCCESS);
            if position < N {
                entry.flags(flags | EntryFlags::LINK)
            } else {
                entry.flags(flags.difference(EntryFlags::LINK))
            }
        });
        SubmitLinked {
            shared,
            stage: Stage::Unpushed(entries),
        }
    }
}

impl<const N: usize> Future for SubmitLinked<N> {
    type Output = [Completion; N];

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<[Completion; N]> {
        let this = self.get_mut();
        let inner = &*this.shared;
        let mut state = inner.borrow_mut();
        let (ids, mut done) = match std::mem::replace(&mut this.stage, Stage::Done) {
            Stage::Unpushed(entries) => match state.try_push_all(entries, cx.waker(), &inner.tasks)
            {
                Ok(ids) => (ids, std::array::from_fn(|_| None)),
                Err(entries) => {
                    state.wait_for_sq_room(cx.waker());
                    this.stage = Stage::Unpushed(entries);
                    return Poll::Pending;
                }
            },
            Stage::Pushed(ids, done) => (ids, done),
            Stage::Done => panic!("spdk-ring: a SubmitLinked future was polled after it completed"),
        };
        let mut all = true;
        for (id, slot) in ids.iter().zip(done.iter_mut()) {
            if slot.is_none() {
                *slot = state
                    .ops
                    .poll_op_with(*id, cx.waker(), &inner.tasks, |done| done.into_completion());
                all &= slot.is_some();
            }
        }
        if all {
            return Poll::Ready(done.map(|c| c.expect("every member completed")));
        }
        this.stage = Stage::Pushed(ids, done);
        Poll::Pending
    }
}

impl<const N: usize> Drop for SubmitLinked<N> {
    fn drop(&mut self) {
        if let Stage::Pushed(ids, done) = &self.stage {
            let mut state = self.shared.borrow_mut();
            for (id, taken) in ids.iter().zip(done) {
                if taken.is_none() {
                    state.abandon(*id);
                }
            }
        }
    }
}
