//! Driving: one round polls the ring and hands each completion to its op,
//! waking the futures that wait; [`Drive`] runs rounds beside the
//! application's tasks on any executor, and `block_on` runs one future
//! to completion between rounds, with the handle's spawned tasks (its own
//! executor, `tasks.rs`) and no other.

use super::Shared;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// One round: pushes queued entries and cancels, polls the ring (submit,
/// SPDK's thread, completions), records every completion (waking the
/// handle's own tasks at once, by index) and, with the state released,
/// wakes the other wakers and as many SQ waiters as the SQ has room for.
/// Returns how many completions were recorded.
pub(super) fn drive_once(shared: &Shared) -> usize {
    let (one, mut many, recorded) = {
        let mut guard = shared.borrow_mut();
        let state = &mut *guard;
        shared.tasks.next_round();
        if !state.cancels.is_empty() {
            state.push_queued_cancels();
        }
        if !state.unpushed.is_empty() {
            state.push_unpushed();
        }
        state.ring.poll();
        let mut recorded = 0;
        // In place (`reap`): each completion is copied once, into its op's
        // slot. The handle's own tasks are woken here, others after.
        while let Some(done) = state.ring.reap() {
            recorded += 1;
            if let Some(waker) = state.ops.record(done, &shared.tasks) {
                state.to_wake.push(waker);
            }
        }
        state.wake_sq_waiters();
        match state.to_wake.len() {
            0 => return recorded,
            // The common case at depth 1: no buffer moved out and back.
            1 => (state.to_wake.pop(), Vec::new(), recorded),
            _ => (None, std::mem::take(&mut state.to_wake), recorded),
        }
    };
    // A woken executor may poll (or drop) a future at once: never with the
    // state borrowed.
    if let Some(waker) = one {
        waker.wake();
        return recorded;
    }
    for waker in many.drain(..) {
        waker.wake();
    }
    // Hand the buffer back, so that its capacity is reused next round.
    let mut state = shared.borrow_mut();
    if state.to_wake.capacity() < many.capacity() {
        state.to_wake = many;
    }
    recorded
}

/// The future of [`AsyncRing::drive`](super::AsyncRing::drive): polls the
/// ring every time it is polled, then yields (waking itself), so the
/// executor runs the tasks it woke before the next round. It never
/// completes; drop it (or the executor) to stop driving.
#[must_use = "futures do nothing unless awaited or spawned"]
pub struct Drive {
    shared: Shared,
}

impl Drive {
    pub(super) fn new(shared: Shared) -> Drive {
        Drive { shared }
    }
}

impl Future for Drive {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        drive_once(&self.shared);
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

pub(super) fn block_on<F: Future>(shared: &Shared, future: F) -> F::Output {
    let tasks = &shared.tasks;
    let _running = tasks.enter();
    let mut future = std::pin::pin!(future);
    tasks.wake_main();
    loop {
        // Poll only when woken: a join of many ops costs nothing on
        // rounds that completed none of them.
        if tasks.take_main_woken() {
            if let Poll::Ready(output) = tasks.poll_main(future.as_mut()) {
                return output;
            }
        }
        tasks.run_ready();
        drive_once(shared);
    }
}
