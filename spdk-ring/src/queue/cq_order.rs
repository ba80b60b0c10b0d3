//! The order of the CQ when some completions are stored outside the core.
//!
//! The ring's lane keeps its completions in its own slots; the core keeps
//! its own in the CQ and the backlog. Both are FIFOs, and together they are
//! one CQ: the core decides, when each completion is posted, whether it
//! overflowed, and hands them out in posting order. [`CqOrder`] records how
//! the two FIFOs interleave, as runs of consecutive completions from one
//! store. While no outside completion is ready it holds nothing, so a ring
//! without outside completions pays one emptiness test per post and pop.

use std::collections::VecDeque;

use super::types::CompletionFlags;

/// Which store holds the oldest ready completion.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum CqFront {
    /// No completion is ready.
    Empty,
    /// The core's own CQ.
    Own,
    /// The outside store's oldest completion, with the flags the core gave it.
    Outside(CompletionFlags),
}

/// Consecutive ready completions of one store (and, outside, one flag).
#[derive(Copy, Clone, Debug)]
struct Run {
    outside: bool,
    overflowed: bool,
    len: u32,
}

/// The interleaving of own and outside completions, oldest run first.
/// Empty whenever no outside completion is ready: then every ready
/// completion is the core's own and the CQ's order is its own. The oldest
/// run lives apart from the rest, so the hot path (one run of lane
/// completions) never touches the deque.
pub(super) struct CqOrder {
    /// The oldest run; `len == 0` when there is none.
    front: Run,
    /// The runs after it.
    rest: VecDeque<Run>,
}

const NO_RUN: Run = Run {
    outside: false,
    overflowed: false,
    len: 0,
};

impl CqOrder {
    /// Room for the runs `outside_capacity` outside completions can make
    /// (each starts at most one run and ends at most one own run), so
    /// steady state never allocates.
    pub(super) fn with_capacity(outside_capacity: usize) -> CqOrder {
        CqOrder {
            front: NO_RUN,
            rest: VecDeque::with_capacity(2 * outside_capacity + 2),
        }
    }

    /// True while no outside completion is ready.
    #[inline]
    pub(super) fn is_empty(&self) -> bool {
        self.front.len == 0
    }

    /// Records `n` outside completions posted after everything ready,
    /// `own_ready` of which are the core's own (they precede these).
    #[inline]
    pub(super) fn push_outside(&mut self, own_ready: usize, overflowed: bool, n: u32) {
        if self.is_empty() && own_ready > 0 {
            self.front = Run {
                outside: false,
                overflowed: false,
                len: own_ready as u32,
            };
        }
        self.push(Run {
            outside: true,
            overflowed,
            len: n,
        });
    }

    /// Records `n` unflagged outside completions when they extend the only
    /// run, an unflagged outside one (or there is none, nor anything own
    /// ready: the caller checks); false, recording nothing, otherwise.
    #[inline]
    pub(super) fn extend_outside_front(&mut self, n: u32) -> bool {
        let front = &mut self.front;
        let fits = front.len == 0 || (front.outside && !front.overflowed);
        if !fits || !self.rest.is_empty() {
            return false;
        }
        *front = Run {
            outside: true,
            overflowed: false,
            len: front.len + n,
        };
        true
    }

    /// Records one own completion posted after everything ready. Nothing
    /// to record while no outside completion is ready.
    #[inline]
    pub(super) fn push_own(&mut self) {
        if !self.is_empty() {
            self.push(Run {
                outside: false,
                overflowed: false,
                len: 1,
            });
        }
    }

    #[inline]
    fn push(&mut self, run: Run) {
        let back = match self.rest.back_mut() {
            Some(back) => back,
            None if self.front.len == 0 => {
                self.front = run;
                return;
            }
            None => &mut self.front,
        };
        if back.outside == run.outside && back.overflowed == run.overflowed {
            back.len += run.len;
        } else {
            self.rest.push_back(run);
        }
    }

    /// Which store the oldest ready completion is in, given whether the
    /// core has any of its own ready.
    #[inline]
    pub(super) fn front(&self, own_ready: bool) -> CqFront {
        match self.front {
            Run { len: 0, .. } if own_ready => CqFront::Own,
            Run { len: 0, .. } => CqFront::Empty,
            Run { outside: false, .. } => CqFront::Own,
            Run {
                overflowed: false, ..
            } => CqFront::Outside(CompletionFlags::empty()),
            Run { .. } => CqFront::Outside(CompletionFlags::OVERFLOWED),
        }
    }

    /// The oldest completion was taken: from the outside store if
    /// `outside`, leaving `outside_left` outside completions ready. Once the
    /// last one went, the runs left are all own and are dropped, which puts
    /// own-only rings back on the empty fast path.
    #[inline]
    pub(super) fn pop(&mut self, outside: bool, outside_left: u32) {
        if !outside && self.front.len == 0 {
            return;
        }
        debug_assert!(
            self.front.len > 0,
            "an outside completion is always in a run"
        );
        debug_assert_eq!(
            self.front.outside, outside,
            "popped from the store in front"
        );
        self.front.len -= 1;
        if outside_left == 0 {
            self.front.len = 0;
            if !self.rest.is_empty() {
                self.clear_rest();
            }
        } else if self.front.len == 0 {
            self.next_run();
        }
    }

    #[cold]
    #[inline(never)]
    fn clear_rest(&mut self) {
        self.rest.clear();
    }

    #[cold]
    #[inline(never)]
    fn next_run(&mut self) {
        self.front = self.rest.pop_front().unwrap_or(NO_RUN);
    }

    /// Outside completions recorded (for the queue's invariant checks).
    #[cfg(test)]
    pub(super) fn outside_len(&self) -> u64 {
        std::iter::once(&self.front)
            .chain(&self.rest)
            .filter(|r| r.outside)
            .map(|r| u64::from(r.len))
            .sum()
    }
}
