//! [`RingQueue`]: the submission queue, in-flight table and completion queue,
//! and the rules (LINK, DRAIN, Cancel, timeouts, ENOMEM) that decide what may
//! start when. See the [module docs](super) for the state machine.

use std::collections::VecDeque;
use std::fmt;
use std::mem;

use super::cq_order::{CqFront, CqOrder};
use super::heap::SlotHeap;
use super::lists::{Links, List, ListKind, NIL};
use super::types::{
    Completion, CompletionFlags, ConfigError, Driver, EntryFlags, EntryKind, IoError, IoResult,
    PushError, QueueConfig, StartOutcome, Submission, TargetId, Token, EALREADY, ECANCELED, EINVAL,
    ENOENT, ETIME,
};

/// Where an entry is in its life. An entry keeps one slot from `push` until its completion is
/// popped; only the stage changes (the SQ and CQ hold slot indices).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Stage {
    /// The slot holds nothing.
    Free,
    /// Pushed, still in the SQ.
    Queued,
    /// Taken from the SQ, not started yet (ordering, chain, ENOMEM or a free driver resource pending).
    Waiting,
    /// An Io entry the driver accepted; only `complete()` or shutdown ends it.
    InFlight,
    /// A Timeout, or a LinkTimeout whose target started: a timer is running.
    Armed,
    /// Completed, its index in the CQ.
    Done,
}

impl Stage {
    /// Taken from the SQ and not completed: counts against `max_in_flight`.
    fn is_live(self) -> bool {
        matches!(self, Stage::Waiting | Stage::InFlight | Stage::Armed)
    }
}

/// One preallocated cell: the entry lives here, unmoved, from `push` until its completion is
/// popped, so the op (with its buffers) is written once and read out once.
struct Slot<Op> {
    /// What the entry does (`Nop` while the slot is free).
    kind: EntryKind<Op>,
    user_data: u64,
    /// Admission order; equals push order because the SQ is FIFO.
    seq: u64,
    /// The result, once `Done`.
    result: StoredResult,
    /// Bumped each time an entry leaves the live stages, so tokens of earlier occupants go stale.
    generation: u32,
    /// Next chain member, or NIL.
    chain_next: u32,
    /// For a LinkTimeout attached to the previous entry: that entry's slot. NIL otherwise.
    link_target: u32,
    stage: Stage,
    flags: EntryFlags,
    /// How the completion was delivered (`OVERFLOWED` after a stay in the backlog).
    cflags: CompletionFlags,
    /// The previous chain member has not completed yet.
    chain_pending: bool,
    /// Cancelled while waiting behind a running chain member; completes ECANCELED when the chain reaches it.
    cancelled: bool,
    /// Started on admission (see `start_front_directly`) and running: counted in `direct_live`
    /// instead of being on the live list, which only ordering rules and Cancel need.
    direct: bool,
}

/// A slot's result as plain words. Written field by field from registers; an `IoResult` stored
/// whole is built on the stack first and copied in with wider loads than its stores, a
/// store-forwarding stall on every completion.
#[derive(Copy, Clone)]
struct StoredResult {
    value: u64,
    failed: bool,
    error: IoError,
}

impl Default for StoredResult {
    fn default() -> Self {
        StoredResult {
            value: 0,
            failed: false,
            error: IoError::errno(0),
        }
    }
}

impl StoredResult {
    #[inline(always)]
    fn set(&mut self, result: IoResult) {
        match result {
            Ok(value) => {
                self.value = value;
                self.failed = false;
            }
            Err(error) => {
                self.error = error;
                self.failed = true;
            }
        }
    }

    #[inline(always)]
    fn get(&self) -> IoResult {
        if self.failed {
            Err(self.error)
        } else {
            Ok(self.value)
        }
    }
}

/// What `release` reports about an entry leaving the live stages.
struct Released {
    chain_next: u32,
    link_target: u32,
    cancelled: bool,
}

#[derive(Debug)]
struct TargetState {
    /// Set by `StartOutcome::NoMem`, cleared by `unblock()`.
    blocked: bool,
    /// Ready, not-yet-started Io entries for this target, in push order (a chain member joins
    /// when its predecessor succeeds); only the head may start.
    waiting: List,
}

/// Test-only record of starts and posts, to check ordering properties that the driver cannot see.
#[cfg(test)]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(super) enum TraceEvent {
    /// An entry began executing (driver start attempt, Nop, Cancel, Timeout arm, EINVAL).
    Start(u64),
    /// A completion was posted (CQ or backlog).
    Post(u64),
}

/// What starting an entry turned out to require, computed while the entry is borrowed.
enum StartAction {
    Finish(IoResult),
    Started,
    Blocked(TargetId),
    ArmTimer { after_ns: u64, count: u32 },
    Cancel(u64),
}

/// The sans-I/O ring: push submissions, `submit`/`advance` with a [`Driver`], feed `complete` events,
/// and pop completions. See the [module docs](super) for the rules.
pub struct RingQueue<Op> {
    /// Timeout and LinkTimeout entries pushed and not yet completed.
    timer_entries: usize,
    config: QueueConfig,
    /// Slot indices of pushed entries, oldest first.
    sq: VecDeque<u32>,
    /// `sq_entries + max_in_flight + cq_entries` cells: every entry in the SQ, live or in the CQ.
    slots: Vec<Slot<Op>>,
    /// Unused slots (a stack, so a just-freed, cache-warm slot is reused first).
    free: Vec<u32>,
    links: Links,
    /// Live entries in push order, except the direct ones (`Slot::direct`): every direct entry
    /// started while no DRAIN was live, so it is older than any live DRAIN.
    live: List,
    /// Live direct entries.
    direct_live: u32,
    /// Entries queued or running outside the core (the ring's lane), all older than every entry
    /// in the core: a DRAIN waits for them, and they count against `max_in_flight`.
    outside_pending: u32,
    waiting: List,
    drains: List,
    targets: Vec<TargetState>,
    deadlines: SlotHeap,
    count_goals: SlotHeap,
    /// Slot indices of posted completions, oldest first.
    cq: VecDeque<u32>,
    /// Completions that did not fit in the CQ, moved out of their slots.
    backlog: VecDeque<Completion<Op>>,
    /// Completions posted outside the core (the ring's lane keeps them) and
    /// not popped yet: they share the CQ's bound and order.
    outside_ready: u32,
    /// How own and outside completions interleave (empty while no outside
    /// completion is ready).
    order: CqOrder,
    overflowed: u64,
    posted: u64,
    next_seq: u64,
    driver_in_flight: u32,
    /// Something happened that may let a waiting entry start.
    dirty: bool,
    /// Guards `settle_count_goals` against recursion through `finish`.
    settling: bool,
    /// Preallocated list of (slot, seq) pairs for passes that must not iterate a list they mutate.
    scratch: Vec<(u32, u64)>,
    #[cfg(test)]
    trace: Option<Vec<TraceEvent>>,
}

impl<Op> RingQueue<Op> {
    /// Validates `config` and preallocates every table, so steady-state operation never allocates.
    pub fn new(config: QueueConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let slots = config.slot_count();
        Ok(Self {
            timer_entries: 0,
            config,
            sq: VecDeque::with_capacity(config.sq_entries as usize),
            slots: (0..slots)
                .map(|_| Slot {
                    kind: EntryKind::Nop,
                    user_data: 0,
                    seq: 0,
                    result: StoredResult::default(),
                    generation: 0,
                    chain_next: NIL,
                    link_target: NIL,
                    stage: Stage::Free,
                    flags: EntryFlags::empty(),
                    cflags: CompletionFlags::empty(),
                    chain_pending: false,
                    cancelled: false,
                    direct: false,
                })
                .collect(),
            free: (0..slots as u32).rev().collect(),
            links: Links::new(slots),
            live: List::EMPTY,
            direct_live: 0,
            outside_pending: 0,
            waiting: List::EMPTY,
            drains: List::EMPTY,
            targets: (0..config.max_targets)
                .map(|_| TargetState {
                    blocked: false,
                    waiting: List::EMPTY,
                })
                .collect(),
            deadlines: SlotHeap::new(slots),
            count_goals: SlotHeap::new(slots),
            cq: VecDeque::with_capacity(config.cq_entries as usize),
            backlog: VecDeque::new(),
            outside_ready: 0,
            order: CqOrder::with_capacity(config.max_in_flight as usize),
            overflowed: 0,
            posted: 0,
            next_seq: 0,
            driver_in_flight: 0,
            dirty: false,
            settling: false,
            scratch: Vec::with_capacity(config.max_in_flight as usize),
            #[cfg(test)]
            trace: None,
        })
    }

    /// The sizes this queue was built with.
    pub fn config(&self) -> QueueConfig {
        self.config
    }

    /// Queues a submission for the next `submit`. A full SQ hands the submission back in the error.
    #[inline]
    pub fn push(&mut self, submission: Submission<Op>) -> Result<(), PushError<Op>> {
        if self.sq.len() >= self.config.sq_entries as usize {
            return Err(PushError { submission });
        }
        // Nothing between here and the move into the slot may panic: an unwind would drop
        // `submission` through its address, which keeps the caller's freshly built entry in a
        // stack copy that the slot copy then re-reads with wide loads (a store-forwarding
        // stall on every push). Without a panic path the entry goes from registers to the slot.
        // Cannot fail: the SQ, the live entries and the CQ each have their share of the slots.
        let Some(&slot) = self.free.last() else {
            return Err(PushError { submission });
        };
        let Some(cell) = self.slots.get_mut(slot as usize) else {
            return Err(PushError { submission });
        };
        self.free.pop();
        if is_timer(&submission.kind) {
            self.timer_entries += 1;
        }
        debug_assert!(matches!(cell.kind, EntryKind::Nop), "free slots hold Nop");
        // A free slot holds a `Nop`, which owns nothing: skip its drop glue.
        mem::forget(mem::replace(&mut cell.kind, submission.kind));
        cell.user_data = submission.user_data;
        cell.flags = submission.flags;
        cell.stage = Stage::Queued;
        cell.chain_next = NIL;
        cell.link_target = NIL;
        cell.chain_pending = false;
        cell.cancelled = false;
        cell.direct = false;
        self.sq.push_back(slot);
        Ok(())
    }

    /// Bytes preallocated per slot (entry, generation, list links, timer positions). A queue has
    /// [`RingQueue::slot_count`] slots: one per SQ entry, in-flight entry and CQ entry.
    pub fn bytes_per_slot() -> usize {
        mem::size_of::<Slot<Op>>() + Links::bytes_per_slot() + 2 * SlotHeap::bytes_per_slot()
    }

    /// How many slots the queue preallocated: tokens' indices are below this.
    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// Whether a Timeout or LinkTimeout entry is anywhere in the queue: only then does `now`
    /// matter, so a caller may skip reading the clock otherwise.
    pub fn has_timer_entries(&self) -> bool {
        self.timer_entries > 0
    }

    /// Entries pushed and not yet taken by `submit`.
    pub fn sq_len(&self) -> usize {
        self.sq.len()
    }

    /// How many more entries `push` accepts right now.
    pub fn sq_space(&self) -> usize {
        self.config.sq_entries as usize - self.sq.len()
    }

    /// Completions ready in the CQ proper, own and outside (not counting
    /// the overflow backlog).
    pub fn cq_len(&self) -> usize {
        self.ready_len().min(self.config.cq_entries as usize)
    }

    /// Every completion ready: CQ, backlog, and outside.
    fn ready_len(&self) -> usize {
        self.cq.len() + self.backlog.len() + self.outside_ready as usize
    }

    /// Which store holds the oldest ready completion.
    #[inline]
    pub fn front(&self) -> CqFront {
        self.order.front(!self.cq.is_empty())
    }

    /// Completions that did not fit in the CQ and wait in the backlog.
    pub fn backlog_len(&self) -> usize {
        self.backlog.len()
    }

    /// Whether more completions are ready than the CQ holds (some wait
    /// beyond its bound, own or outside).
    pub fn is_overflowing(&self) -> bool {
        self.ready_len() > self.config.cq_entries as usize
    }

    /// Total completions that ever went to the backlog; non-zero means the consumer fell behind.
    pub fn overflowed(&self) -> u64 {
        self.overflowed
    }

    /// Entries taken from the SQ and not yet completed (waiting, running in the driver, or armed timers).
    pub fn in_flight(&self) -> usize {
        self.live_count() as usize
    }

    fn live_count(&self) -> u32 {
        self.live.len() + self.direct_live
    }

    /// Live entries plus those outside the core: what `max_in_flight` bounds.
    fn occupied(&self) -> u32 {
        self.live_count().saturating_add(self.outside_pending)
    }

    /// Nothing in the SQ, nothing live, no completion waiting: an entry pushed now is younger than
    /// everything the core ever held, so it may run outside the core (see `set_outside_pending`).
    #[inline]
    pub fn is_idle(&self) -> bool {
        self.sq.is_empty()
            && self.live_count() == 0
            && self.cq.is_empty()
            && self.backlog.is_empty()
    }

    /// How many entries run outside the core (queued or in flight there). Every one of them was
    /// pushed while the core was idle, so each is older than every entry in the core: a DRAIN
    /// starts only once none is left, and they count against `max_in_flight`.
    #[inline]
    pub fn set_outside_pending(&mut self, n: u32) {
        if n != self.outside_pending {
            if n < self.outside_pending && self.waiting.head != NIL {
                // Fewer outside entries may let a DRAIN or a waiting entry start.
                self.dirty = true;
            }
            self.outside_pending = n;
        }
    }

    /// Whether `submit` or `advance` has anything to do: entries in the SQ, something that may
    /// let a waiting entry start, or an armed timer. Lets a caller skip both when idle.
    #[inline]
    pub fn has_work(&self) -> bool {
        !self.sq.is_empty() || self.dirty || self.deadlines.min_key().is_some()
    }

    /// Posts `n` completions stored outside the core (the ring's lane), after
    /// everything posted so far: they take their place in the CQ's order, its
    /// bound (beyond it they are flagged `OVERFLOWED` and counted), and count
    /// towards count-based Timeouts, one at a time so that a Timeout they
    /// satisfy posts right after the completion that did it. The caller keeps
    /// them in a FIFO of its own and pops them with [`RingQueue::pop_outside`]
    /// when [`RingQueue::front`] says one is first.
    #[inline]
    pub fn post_outside(&mut self, n: u32) {
        if n == 0 {
            return;
        }
        // The lane's steady state: only outside completions ready, room for these.
        if self.cq.is_empty()
            && self.backlog.is_empty()
            && self.outside_ready + n <= self.config.cq_entries
            && self.count_goals.min_key().is_none()
            && self.order.extend_outside_front(n)
        {
            self.outside_ready += n;
            self.posted += u64::from(n);
            return;
        }
        self.post_outside_general(n);
    }

    #[inline(never)]
    fn post_outside_general(&mut self, n: u32) {
        if self.count_goals.min_key().is_none() {
            self.post_outside_run(n);
        } else {
            for _ in 0..n {
                self.post_outside_run(1);
                self.settle_count_goals();
            }
        }
    }

    fn post_outside_run(&mut self, n: u32) {
        let own = self.cq.len() + self.backlog.len();
        let room = (self.config.cq_entries as usize).saturating_sub(self.ready_len());
        let fit = n.min(room.min(u32::MAX as usize) as u32);
        if fit > 0 {
            self.order.push_outside(own, false, fit);
        }
        if n > fit {
            self.overflowed += u64::from(n - fit);
            self.order.push_outside(own, true, n - fit);
        }
        self.outside_ready += n;
        self.posted += u64::from(n);
    }

    /// The oldest completion, an outside one, was taken by the caller.
    #[inline(always)]
    pub fn pop_outside(&mut self) {
        debug_assert!(matches!(self.front(), CqFront::Outside(_)));
        self.outside_ready -= 1;
        self.order.pop(true, self.outside_ready);
    }

    /// Whether the oldest ready completion is an own one (an outside one
    /// must be popped first).
    #[inline]
    fn own_in_front(&self) -> bool {
        self.order.is_empty() || self.order.front(true) == CqFront::Own
    }

    /// Entries in slots that have not started yet: behind a chain member, a DRAIN, an earlier entry of
    /// their target or a `NoMem` block (LinkTimeouts, which start with their target, not counted).
    pub fn waiting_len(&self) -> usize {
        self.waiting.len() as usize
    }

    /// Slots available for `submit` to take more entries.
    pub fn free_slots(&self) -> usize {
        self.config.max_in_flight.saturating_sub(self.occupied()) as usize
    }

    /// Ops the driver accepted (`Started`) and has not completed yet.
    pub fn started_in_driver(&self) -> usize {
        self.driver_in_flight as usize
    }

    /// No op is started in the driver and not yet completed: safe to tear the driver down.
    pub fn is_quiescent(&self) -> bool {
        self.driver_in_flight == 0
    }

    /// Whether `target` is blocked by an earlier `NoMem` and waits for `unblock`.
    pub fn is_blocked(&self, target: TargetId) -> bool {
        self.targets
            .get(target.0 as usize)
            .is_some_and(|state| state.blocked)
    }

    /// Earliest armed timer deadline, so a caller that blocks knows when to call `advance` again.
    pub fn next_deadline(&self) -> Option<u64> {
        self.deadlines.min_key()
    }

    /// Moves entries from the SQ into free slots (whole chains only) and starts whatever may start.
    /// `now` arms timers and fires expired ones. Returns how many entries left the SQ, including
    /// over-long chains that were completed with EINVAL.
    pub fn submit(&mut self, driver: &mut impl Driver<Op>, now: u64) -> usize {
        // io_uring rule: a chain still open at the end of the SQ ends there.
        if let Some(&last) = self.sq.back() {
            self.slots[last as usize].flags.remove(EntryFlags::LINK);
        }
        let mut taken = 0;
        // Once an entry took the general path, the rest do too, so starts stay in push order.
        let mut direct = true;
        while !self.sq.is_empty() {
            if direct && self.start_front_directly(driver) {
                taken += 1;
                continue;
            }
            direct = false;
            let chain_len = self.front_chain_len();
            if chain_len > self.config.max_in_flight as usize {
                self.reject_front_chain(chain_len);
            } else if chain_len <= self.free_slots() {
                self.admit_front_chain(chain_len);
            } else {
                break;
            }
            taken += chain_len;
        }
        self.advance(driver, now);
        taken
    }

    /// Fires timers due at `now` (a fired LinkTimeout asks the driver to abort its target) and starts
    /// every entry that became startable since the last call, e.g. after `complete` or `unblock`.
    pub fn advance(&mut self, driver: &mut impl Driver<Op>, now: u64) {
        loop {
            if self.deadlines.min_key().is_some() {
                self.fire_expired(driver, now);
            }
            if !self.dirty {
                break;
            }
            self.dirty = false;
            if self.waiting.head == NIL {
                // The start pass walks only the waiting entries: nothing to do.
                break;
            }
            self.start_pass(driver, now);
        }
    }

    /// Driver event: the op behind `token` finished. Returns false, and changes nothing, for a stale
    /// token (slot reused, already completed, or never started). Never calls the driver: entries this
    /// unblocks start on the next `submit`/`advance`.
    #[inline(always)]
    pub fn complete(&mut self, token: Token, result: IoResult) -> bool {
        let index = token.index();
        let Some(cell) = self.slots.get_mut(index as usize) else {
            return false;
        };
        if cell.generation != token.generation() || cell.stage != Stage::InFlight {
            return false;
        }
        if cell.direct
            && self.order.is_empty()
            && self.backlog.is_empty()
            && self.cq.len() < self.config.cq_entries as usize
            && self.count_goals.min_key().is_none()
        {
            // The common case, inlined into the caller so the result never goes through memory:
            // a direct entry is unlinked, without DRAIN or LinkTimeout, on no list, and its
            // completion fits in the CQ (no outside completion shares it) with no count goal to
            // settle.
            cell.generation = cell.generation.wrapping_add(1);
            cell.direct = false;
            cell.result.set(result);
            cell.cflags = CompletionFlags::empty();
            cell.stage = Stage::Done;
            self.direct_live -= 1;
            self.driver_in_flight -= 1;
            self.dirty = true;
            self.posted += 1;
            self.cq.push_back(index);
            #[cfg(test)]
            self.record(TraceEvent::Post(self.slots[index as usize].user_data));
            return true;
        }
        self.complete_general(index, result);
        true
    }

    /// `complete` for a valid token, every case.
    #[inline(never)]
    fn complete_general(&mut self, index: u32, result: IoResult) {
        if self.slots[index as usize].direct {
            let cell = &mut self.slots[index as usize];
            cell.generation = cell.generation.wrapping_add(1);
            cell.direct = false;
            self.direct_live -= 1;
            self.driver_in_flight -= 1;
            self.dirty = true;
            self.post(index, result);
            self.settle_count_goals();
        } else if self.slots[index as usize].chain_next == NIL {
            // No chain to walk (an Io entry is never a LinkTimeout itself).
            self.release(index);
            self.post(index, result);
            self.settle_count_goals();
        } else {
            self.finish(index, result);
        }
    }

    /// Lifts the `NoMem` block on `target`; its entries start, in order, on the next `submit`/`advance`.
    pub fn unblock(&mut self, target: TargetId) {
        if let Some(state) = self.targets.get_mut(target.0 as usize) {
            if state.blocked {
                state.blocked = false;
                self.dirty = true;
            }
        }
    }

    /// Takes the oldest completion; the CQ is refilled from the backlog so order is kept.
    #[inline]
    pub fn pop_completion(&mut self) -> Option<Completion<Op>> {
        if !self.own_in_front() {
            return None;
        }
        let slot = self.cq.pop_front()?;
        let cell = &mut self.slots[slot as usize];
        let op = match mem::replace(&mut cell.kind, EntryKind::Nop) {
            EntryKind::Io { op, .. } => Some(op),
            _ => None,
        };
        cell.stage = Stage::Free;
        let completion = Completion {
            user_data: cell.user_data,
            result: cell.result.get(),
            flags: cell.cflags,
            op,
        };
        self.free.push(slot);
        if let Some(spilled) = self.backlog.pop_front() {
            self.refill_cq(spilled);
        }
        self.order.pop(false, self.outside_ready);
        Some(completion)
    }

    /// Takes the oldest completion like [`RingQueue::pop_completion`], but instead of moving the
    /// whole op out of its slot, lends it to `take`, which moves out what the caller wants back
    /// (its buffers, say); the rest of the op is dropped in place. The completion carries what
    /// `take` returned (`None` for entries other than Io).
    #[inline]
    pub fn pop_completion_map<R>(
        &mut self,
        take: impl FnOnce(&mut Op) -> R,
    ) -> Option<Completion<R>> {
        let front = self.front_completion()?;
        let completion = Completion {
            user_data: front.user_data,
            result: front.result,
            flags: front.flags,
            op: front.op.map(take),
        };
        self.discard_front();
        Some(completion)
    }

    /// The oldest completion in place, without popping it: its fields, and the op lent so the
    /// caller can move its buffers out. [`RingQueue::discard_front`] pops it.
    #[inline]
    pub fn front_completion(&mut self) -> Option<FrontCompletion<'_, Op>> {
        if !self.own_in_front() {
            return None;
        }
        let &slot = self.cq.front()?;
        let cell = &mut self.slots[slot as usize];
        Some(FrontCompletion {
            user_data: cell.user_data,
            result: cell.result.get(),
            flags: cell.cflags,
            op: match &mut cell.kind {
                EntryKind::Io { op, .. } => Some(op),
                _ => None,
            },
        })
    }

    /// Pops the oldest completion, dropping what is left of its op; false if the CQ is empty.
    #[inline]
    pub fn discard_front(&mut self) -> bool {
        if !self.own_in_front() {
            return false;
        }
        let Some(slot) = self.cq.pop_front() else {
            return false;
        };
        let cell = &mut self.slots[slot as usize];
        cell.kind = EntryKind::Nop;
        cell.stage = Stage::Free;
        self.free.push(slot);
        if let Some(spilled) = self.backlog.pop_front() {
            self.refill_cq(spilled);
        }
        self.order.pop(false, self.outside_ready);
        true
    }

    /// Moves a backlogged completion into a slot at the CQ's tail.
    fn refill_cq(&mut self, spilled: Completion<Op>) {
        let slot = self.free.pop().expect("a popped completion freed a slot");
        let cell = &mut self.slots[slot as usize];
        cell.kind = match spilled.op {
            Some(op) => EntryKind::Io {
                target: TargetId(0),
                op,
            },
            None => EntryKind::Nop,
        };
        cell.user_data = spilled.user_data;
        cell.result.set(spilled.result);
        cell.cflags = spilled.flags;
        cell.stage = Stage::Done;
        self.cq.push_back(slot);
    }

    /// Draining iterator over completions (CQ, then backlog), oldest first.
    pub fn completions(&mut self) -> Completions<'_, Op> {
        Completions { queue: self }
    }

    /// Shutdown helper: every entry that has not started (in the SQ or waiting in a slot) and every
    /// armed timer completes with ECANCELED; ops already in the driver are left alone. A waiting chain
    /// member behind an op still in the driver is marked and completes ECANCELED right after that op,
    /// keeping chain order. Returns how many entries were cancelled this way.
    pub fn cancel_unstarted(&mut self) -> usize {
        let mut victims = mem::take(&mut self.scratch);
        victims.clear();
        let mut cur = self.live.head;
        while cur != NIL {
            let entry = self.entry(cur);
            if entry.stage != Stage::InFlight && !entry.cancelled {
                victims.push((cur, entry.seq));
            }
            cur = self.links.next(ListKind::Live, cur);
        }
        let mut cancelled = victims.len();
        for &(slot, seq) in &victims {
            // An earlier victim's chain failure may already have completed this one.
            let Some(entry) = self.live_entry_mut(slot, seq) else {
                continue;
            };
            if entry.stage == Stage::Waiting && (entry.chain_pending || entry.link_target != NIL) {
                entry.cancelled = true;
            } else {
                self.finish(slot, Err(IoError::errno(ECANCELED)));
            }
        }
        self.scratch = victims;
        while let Some(slot) = self.sq.pop_front() {
            self.post(slot, Err(IoError::errno(ECANCELED)));
            cancelled += 1;
        }
        self.settle_count_goals();
        cancelled
    }

    // ----- admission -------------------------------------------------------------------------

    /// The fast path for the common entry: an unlinked Io entry without DRAIN, while no DRAIN
    /// barrier is live, for a target that is neither blocked nor has an earlier ready entry
    /// waiting. The general path would start it in the very next pass anyway; starting it on
    /// admission skips the waiting lists. Returns false (touching nothing) when it does not apply.
    #[inline]
    fn start_front_directly(&mut self, driver: &mut impl Driver<Op>) -> bool {
        let Some(&slot) = self.sq.front() else {
            return false;
        };
        let cell = &self.slots[slot as usize];
        let EntryKind::Io { target, .. } = cell.kind else {
            return false;
        };
        if !cell.flags.is_empty()
            || self.drains.head != NIL
            || self.occupied() >= self.config.max_in_flight
        {
            return false;
        }
        match self.targets.get(target.0 as usize) {
            Some(state) if !state.blocked && state.waiting.head == NIL => {}
            _ => return false,
        }
        self.sq.pop_front();
        let seq = self.next_seq;
        self.next_seq += 1;
        self.direct_live += 1;
        let cell = &mut self.slots[slot as usize];
        cell.seq = seq;
        cell.stage = Stage::Waiting;
        cell.direct = true;
        let generation = cell.generation;
        #[cfg(test)]
        let user_data = cell.user_data;
        let EntryKind::Io { op, .. } = &mut cell.kind else {
            unreachable!("checked above")
        };
        let outcome = driver.start(Token::new(slot, generation), target, op);
        #[cfg(test)]
        self.record(TraceEvent::Start(user_data));
        match outcome {
            StartOutcome::Started => {
                self.slots[slot as usize].stage = Stage::InFlight;
                self.driver_in_flight += 1;
            }
            StartOutcome::NoMem => {
                // Back on the general path: first in its target's line, target blocked. It is
                // the newest live entry, so the live list stays in push order.
                self.slots[slot as usize].direct = false;
                self.direct_live -= 1;
                self.links.push_back(&mut self.live, ListKind::Live, slot);
                self.links
                    .push_back(&mut self.waiting, ListKind::Waiting, slot);
                let state = &mut self.targets[target.0 as usize];
                self.links
                    .push_back(&mut state.waiting, ListKind::Target, slot);
                state.blocked = true;
            }
            StartOutcome::Failed(error) => self.finish(slot, Err(error)),
        }
        true
    }

    /// Length of the chain at the front of the SQ (1 for an unlinked entry).
    fn front_chain_len(&self) -> usize {
        let mut len = 0;
        for &slot in &self.sq {
            len += 1;
            if !self.slots[slot as usize].flags.contains(EntryFlags::LINK) {
                break;
            }
        }
        len
    }

    /// A chain longer than the slot table could never run as a unit: every member fails EINVAL.
    fn reject_front_chain(&mut self, len: usize) {
        for _ in 0..len {
            let slot = self.sq.pop_front().expect("chain length within SQ");
            self.post(slot, Err(IoError::errno(EINVAL)));
        }
        self.settle_count_goals();
    }

    fn admit_front_chain(&mut self, len: usize) {
        let mut prev = NIL;
        for _ in 0..len {
            let slot = self.sq.pop_front().expect("chain length within SQ");
            let seq = self.next_seq;
            self.next_seq += 1;
            let cell = &self.slots[slot as usize];
            let drain = cell.flags.contains(EntryFlags::DRAIN);
            let link = cell.flags.contains(EntryFlags::LINK);
            // A LinkTimeout attaches to the previous chain member unless that is impossible
            // (chain head, previous is itself a LinkTimeout, or DRAIN which would wait for its own
            // target); such an invalid one runs as an ordinary entry that fails EINVAL.
            let attached = matches!(cell.kind, EntryKind::LinkTimeout { .. })
                && prev != NIL
                && !drain
                && !matches!(self.entry(prev).kind, EntryKind::LinkTimeout { .. });
            let chain_pending = prev != NIL && !attached;
            let target = match cell.kind {
                EntryKind::Io { target, .. } => Some(target),
                _ => None,
            };
            let cell = &mut self.slots[slot as usize];
            cell.seq = seq;
            cell.stage = Stage::Waiting;
            cell.chain_pending = chain_pending;
            cell.cancelled = false;
            cell.chain_next = NIL;
            cell.link_target = if attached { prev } else { NIL };
            self.links.push_back(&mut self.live, ListKind::Live, slot);
            if drain {
                self.links
                    .push_back(&mut self.drains, ListKind::Drain, slot);
            }
            if !attached {
                self.links
                    .push_back(&mut self.waiting, ListKind::Waiting, slot);
                // A chain member joins its target's line only once its predecessor succeeded
                // (see `finish`), so a waiting chain never holds back independent entries.
                if !chain_pending {
                    if let Some(target) = target {
                        if let Some(state) = self.targets.get_mut(target.0 as usize) {
                            self.links
                                .push_back(&mut state.waiting, ListKind::Target, slot);
                        }
                    }
                }
            }
            if prev != NIL {
                self.entry_mut(prev).chain_next = slot;
            }
            prev = if link { slot } else { NIL };
        }
        self.dirty = true;
    }

    // ----- starting --------------------------------------------------------------------------

    /// One walk over the waiting entries in push order, starting each one that may start.
    /// Candidates are collected first because starting (a Nop, a Cancel) can complete other entries.
    fn start_pass(&mut self, driver: &mut impl Driver<Op>, now: u64) {
        let mut candidates = mem::take(&mut self.scratch);
        candidates.clear();
        let barrier = self.drain_barrier();
        let mut cur = self.waiting.head;
        while cur != NIL {
            let entry = self.entry(cur);
            if let Some((drain_slot, drain_seq)) = barrier {
                if entry.seq > drain_seq {
                    break;
                }
                if cur == drain_slot {
                    if self.is_oldest_live(drain_slot) {
                        candidates.push((cur, entry.seq));
                    }
                    break;
                }
            }
            if !entry.chain_pending {
                candidates.push((cur, entry.seq));
            }
            cur = self.links.next(ListKind::Waiting, cur);
        }
        for &(slot, seq) in &candidates {
            if self.may_start(slot, seq) {
                let target = match self.entry(slot).kind {
                    EntryKind::Io { target, .. } => Some(target),
                    _ => None,
                };
                self.start_entry(slot, driver, now);
                // A chain member that joined its target's line late sits behind this entry but
                // ahead of it in push order: this walk already passed it, so walk again.
                if let Some(head) = target.and_then(|t| self.target_line_head(t)) {
                    if self.entry(head).seq < seq {
                        self.dirty = true;
                    }
                }
            }
        }
        self.scratch = candidates;
    }

    /// The next ready entry in `target`'s line, if any.
    fn target_line_head(&self, target: TargetId) -> Option<u32> {
        let head = self.targets.get(target.0 as usize)?.waiting.head;
        (head != NIL).then_some(head)
    }

    /// Whether `slot` (on the live list) is the oldest live entry: direct entries are older than
    /// any listed entry they share the ring with only while a DRAIN is live, so they count too.
    fn is_oldest_live(&self, slot: u32) -> bool {
        self.live.head == slot && self.direct_live == 0 && self.outside_pending == 0
    }

    /// The oldest live DRAIN entry: nothing after it may start, and it starts only when oldest overall.
    fn drain_barrier(&self) -> Option<(u32, u64)> {
        let slot = self.drains.head;
        (slot != NIL).then(|| (slot, self.entry(slot).seq))
    }

    fn may_start(&self, slot: u32, seq: u64) -> bool {
        let entry = &self.slots[slot as usize];
        if entry.seq != seq
            || entry.stage != Stage::Waiting
            || entry.chain_pending
            || entry.link_target != NIL
        {
            return false;
        }
        debug_assert!(
            !entry.cancelled,
            "cancelled entries are always chain-pending"
        );
        if let Some((drain_slot, drain_seq)) = self.drain_barrier() {
            let allowed = if slot == drain_slot {
                self.is_oldest_live(slot)
            } else {
                seq < drain_seq
            };
            if !allowed {
                return false;
            }
        }
        if let EntryKind::Io { target, .. } = &entry.kind {
            if let Some(state) = self.targets.get(target.0 as usize) {
                // Per-target FIFO among ready entries: only the oldest one may start.
                return !state.blocked && state.waiting.head == slot;
            }
        }
        true
    }

    fn start_entry(&mut self, slot: u32, driver: &mut impl Driver<Op>, now: u64) {
        #[cfg(test)]
        self.record(TraceEvent::Start(self.entry(slot).user_data));
        let entry = &mut self.slots[slot as usize];
        debug_assert!(entry.stage.is_live(), "started slot is live");
        let generation = entry.generation;
        let seq = entry.seq;
        let action = match &mut entry.kind {
            EntryKind::Io { target, op } => {
                let target = *target;
                if target.0 as usize >= self.targets.len() {
                    StartAction::Finish(Err(IoError::errno(EINVAL)))
                } else {
                    match driver.start(Token::new(slot, generation), target, op) {
                        StartOutcome::Started => StartAction::Started,
                        StartOutcome::NoMem => StartAction::Blocked(target),
                        StartOutcome::Failed(error) => StartAction::Finish(Err(error)),
                    }
                }
            }
            EntryKind::Nop => StartAction::Finish(Ok(0)),
            EntryKind::Cancel { user_data } => StartAction::Cancel(*user_data),
            EntryKind::Timeout { after_ns, count } => StartAction::ArmTimer {
                after_ns: *after_ns,
                count: *count,
            },
            // Only LinkTimeouts that could not attach reach here.
            EntryKind::LinkTimeout { .. } => StartAction::Finish(Err(IoError::errno(EINVAL))),
            EntryKind::Immediate { op } => StartAction::Finish(driver.run_immediate(op)),
        };
        match action {
            StartAction::Finish(result) => self.finish(slot, result),
            StartAction::Started => {
                self.entry_mut(slot).stage = Stage::InFlight;
                self.driver_in_flight += 1;
                self.unlink_waiting(slot);
                self.arm_link_timeout(slot, now);
            }
            StartAction::Blocked(target) => self.targets[target.0 as usize].blocked = true,
            StartAction::ArmTimer { after_ns, count } => {
                self.entry_mut(slot).stage = Stage::Armed;
                self.unlink_waiting(slot);
                self.deadlines
                    .insert(slot, now.saturating_add(after_ns), seq);
                if count > 0 {
                    self.count_goals
                        .insert(slot, self.posted + u64::from(count), seq);
                }
                self.arm_link_timeout(slot, now);
            }
            StartAction::Cancel(user_data) => {
                let result = self.cancel_first_match(slot, user_data, driver);
                self.finish(slot, result);
            }
        }
    }

    /// Puts a chain member that just became ready into its target's line at its push position
    /// (no-op for other kinds). Push order matters beyond fairness: a DRAIN entry in the line
    /// waits for every older entry, so an older entry queued behind it would deadlock both.
    fn enqueue_for_target(&mut self, slot: u32) {
        let (target, seq) = match self.entry(slot).kind {
            EntryKind::Io { target, .. } => (target, self.entry(slot).seq),
            _ => return,
        };
        let Some(head) = self.targets.get(target.0 as usize).map(|t| t.waiting.head) else {
            return;
        };
        let mut before = head;
        while before != NIL && self.entry(before).seq < seq {
            before = self.links.next(ListKind::Target, before);
        }
        let state = &mut self.targets[target.0 as usize];
        self.links
            .insert_before(&mut state.waiting, ListKind::Target, before, slot);
    }

    fn unlink_waiting(&mut self, slot: u32) {
        self.links
            .unlink(&mut self.waiting, ListKind::Waiting, slot);
        if let EntryKind::Io { target, .. } = self.entry(slot).kind {
            if let Some(state) = self.targets.get_mut(target.0 as usize) {
                self.links
                    .unlink(&mut state.waiting, ListKind::Target, slot);
            }
        }
    }

    /// The entry at `target` just started: arm the LinkTimeout attached to it, if any.
    fn arm_link_timeout(&mut self, target: u32, now: u64) {
        let next = self.entry(target).chain_next;
        if next == NIL {
            return;
        }
        let link_timeout = self.entry_mut(next);
        if link_timeout.link_target != target || link_timeout.cancelled {
            return;
        }
        let EntryKind::LinkTimeout { after_ns } = link_timeout.kind else {
            unreachable!("only LinkTimeouts attach to a target");
        };
        link_timeout.stage = Stage::Armed;
        let seq = link_timeout.seq;
        self.deadlines
            .insert(next, now.saturating_add(after_ns), seq);
    }

    /// Executes a Cancel entry: acts on the first live entry (push order) with `user_data`.
    fn cancel_first_match(
        &mut self,
        canceller: u32,
        user_data: u64,
        driver: &mut impl Driver<Op>,
    ) -> IoResult {
        // Entries outside the core are older than every entry in it: they come first.
        match driver.cancel_outside(user_data) {
            Some(Ok(())) => return Ok(0),
            Some(Err(())) => return Err(IoError::errno(EALREADY)),
            None => {}
        }
        let mut cur = self.live.head;
        while cur != NIL {
            let entry = self.entry(cur);
            if cur != canceller && entry.user_data == user_data && !entry.cancelled {
                break;
            }
            cur = self.links.next(ListKind::Live, cur);
        }
        if self.direct_live > 0 {
            // Direct entries are on no list: the oldest match among them may come first.
            let oldest_direct = (0..self.slots.len() as u32)
                .filter(|&i| {
                    let c = &self.slots[i as usize];
                    c.direct && c.user_data == user_data
                })
                .min_by_key(|&i| self.slots[i as usize].seq);
            if let Some(direct) = oldest_direct {
                if cur == NIL || self.slots[direct as usize].seq < self.entry(cur).seq {
                    cur = direct;
                }
            }
        }
        if cur == NIL {
            return Err(IoError::errno(ENOENT));
        }
        let entry = &mut self.slots[cur as usize];
        let generation = entry.generation;
        match entry.stage {
            Stage::Waiting => {
                if entry.chain_pending || entry.link_target != NIL {
                    // Completing now would overtake the running chain member before it.
                    entry.cancelled = true;
                } else {
                    self.finish(cur, Err(IoError::errno(ECANCELED)));
                }
                Ok(0)
            }
            Stage::InFlight => {
                let EntryKind::Io { target, op } = &mut entry.kind else {
                    unreachable!("only Io entries run in the driver");
                };
                match driver.abort(Token::new(cur, generation), *target, op) {
                    Ok(()) => Ok(0),
                    Err(()) => Err(IoError::errno(EALREADY)),
                }
            }
            Stage::Armed => {
                self.finish(cur, Err(IoError::errno(ECANCELED)));
                Ok(0)
            }
            Stage::Free | Stage::Queued | Stage::Done => unreachable!("found on the live list"),
        }
    }

    // ----- timers ----------------------------------------------------------------------------

    fn fire_expired(&mut self, driver: &mut impl Driver<Op>, now: u64) {
        while let Some(slot) = self.deadlines.pop_due(now) {
            let target = self.entry(slot).link_target;
            self.finish(slot, Err(IoError::errno(ETIME)));
            if target != NIL {
                self.abort_link_target(target, driver);
            }
        }
    }

    /// A LinkTimeout fired: stop its target. An Io target completes later with whatever the driver
    /// reports (if the driver cannot abort, its real result); a Timeout target is cancelled here.
    fn abort_link_target(&mut self, target: u32, driver: &mut impl Driver<Op>) {
        // The target may already be gone: the LinkTimeout's own completion can satisfy a count goal.
        let entry = &mut self.slots[target as usize];
        let generation = entry.generation;
        match (entry.stage, &mut entry.kind) {
            (Stage::InFlight, EntryKind::Io { target: id, op }) => {
                // Err(()) needs no action: the op's real result still arrives through complete().
                let _ = driver.abort(Token::new(target, generation), *id, op);
            }
            (Stage::Armed, EntryKind::Timeout { .. }) => {
                self.finish(target, Err(IoError::errno(ECANCELED)));
            }
            _ => {}
        }
    }

    /// Completes every armed count goal that the completions posted so far satisfy.
    #[inline]
    fn settle_count_goals(&mut self) {
        if self.settling || self.count_goals.min_key().is_none() {
            return;
        }
        self.settling = true;
        while let Some(slot) = self.count_goals.pop_due(self.posted) {
            self.finish(slot, Ok(0));
        }
        self.settling = false;
    }

    // ----- completion ------------------------------------------------------------------------

    /// Completes `slot` with `result` and walks its chain: the next member is released on success,
    /// or completes ECANCELED (and so on down the chain) on failure.
    fn finish(&mut self, slot: u32, result: IoResult) {
        let mut continuation = self.finish_one(slot, result);
        while let Some((next, chain_ok)) = continuation {
            let entry = self.entry_mut(next);
            if chain_ok && !entry.cancelled {
                entry.chain_pending = false;
                self.enqueue_for_target(next);
                break;
            }
            continuation = self.finish_one(next, Err(IoError::errno(ECANCELED)));
        }
        self.settle_count_goals();
    }

    /// Completes one entry (plus its attached LinkTimeout) and says how its chain continues:
    /// `Some((next member, previous succeeded))`, or `None` when nothing follows.
    fn finish_one(&mut self, slot: u32, result: IoResult) -> Option<(u32, bool)> {
        let entry = self.release(slot);
        let mut next = entry.chain_next;
        let mut chain_ok = result.is_ok();
        self.post(slot, result);
        if entry.link_target != NIL {
            // A LinkTimeout ending before its target: the chain continues from the target's result.
            self.entry_mut(entry.link_target).chain_next = next;
            return None;
        }
        if next != NIL && self.entry(next).link_target == slot {
            // The target finished first, so its LinkTimeout is moot.
            let link_timeout_slot = next;
            let link_timeout = self.release(link_timeout_slot);
            chain_ok &= !link_timeout.cancelled;
            next = link_timeout.chain_next;
            self.post(link_timeout_slot, Err(IoError::errno(ECANCELED)));
        }
        (next != NIL).then_some((next, chain_ok))
    }

    /// Takes a live entry out of every live structure (bumping its generation so old tokens go
    /// stale); its slot stays occupied until `post` puts it in the CQ.
    #[inline]
    fn release(&mut self, slot: u32) -> Released {
        let cell = &mut self.slots[slot as usize];
        debug_assert!(cell.stage.is_live(), "released slot is live");
        cell.generation = cell.generation.wrapping_add(1);
        let stage = cell.stage;
        let released = Released {
            chain_next: cell.chain_next,
            link_target: cell.link_target,
            cancelled: cell.cancelled,
        };
        let drain = cell.flags.contains(EntryFlags::DRAIN);
        let timer = is_timer(&cell.kind);
        let target = match cell.kind {
            EntryKind::Io { target, .. } => Some(target),
            _ => None,
        };
        if cell.direct {
            cell.direct = false;
            self.direct_live -= 1;
        } else {
            self.links.unlink(&mut self.live, ListKind::Live, slot);
        }
        if stage == Stage::InFlight {
            // Started entries left the waiting lists when they started.
            self.driver_in_flight -= 1;
        } else {
            self.links
                .unlink(&mut self.waiting, ListKind::Waiting, slot);
            if let Some(state) = target.and_then(|t| self.targets.get_mut(t.0 as usize)) {
                self.links
                    .unlink(&mut state.waiting, ListKind::Target, slot);
            }
        }
        if drain {
            self.links.unlink(&mut self.drains, ListKind::Drain, slot);
        }
        if timer {
            // Only Timeout and LinkTimeout entries ever arm a deadline or a count goal.
            self.deadlines.remove(slot);
            self.count_goals.remove(slot);
        }
        self.dirty = true;
        released
    }

    /// Appends the completion of the entry in `slot`. It overflowed if the CQ (own and outside
    /// completions) was full. Its index goes to the CQ while the CQ's own cells have room and
    /// nothing is backlogged, else the completion itself (moved out, freeing the slot) goes to
    /// the backlog. A success of an entry flagged `SKIP_SUCCESS` is not posted: its slot is freed
    /// at once.
    #[inline]
    fn post(&mut self, slot: u32, result: IoResult) {
        let cell = &mut self.slots[slot as usize];
        if is_timer(&cell.kind) {
            self.timer_entries -= 1;
        }
        if cell.flags.contains(EntryFlags::SKIP_SUCCESS) && result.is_ok() {
            cell.kind = EntryKind::Nop;
            cell.stage = Stage::Free;
            self.free.push(slot);
            return;
        }
        #[cfg(test)]
        self.record(TraceEvent::Post(self.slots[slot as usize].user_data));
        let overflowed = self.ready_len() >= self.config.cq_entries as usize;
        self.order.push_own();
        let cell = &mut self.slots[slot as usize];
        self.posted += 1;
        if overflowed {
            self.overflowed += 1;
        }
        if self.backlog.is_empty() && self.cq.len() < self.config.cq_entries as usize {
            cell.result.set(result);
            cell.cflags = if overflowed {
                CompletionFlags::OVERFLOWED
            } else {
                CompletionFlags::empty()
            };
            cell.stage = Stage::Done;
            self.cq.push_back(slot);
        } else {
            let op = match mem::replace(&mut cell.kind, EntryKind::Nop) {
                EntryKind::Io { op, .. } => Some(op),
                _ => None,
            };
            cell.stage = Stage::Free;
            self.backlog.push_back(Completion {
                user_data: cell.user_data,
                result,
                flags: CompletionFlags::OVERFLOWED,
                op,
            });
            self.free.push(slot);
        }
    }

    // ----- helpers ---------------------------------------------------------------------------

    fn entry(&self, slot: u32) -> &Slot<Op> {
        let entry = &self.slots[slot as usize];
        debug_assert!(entry.stage.is_live(), "slot is live");
        entry
    }

    fn entry_mut(&mut self, slot: u32) -> &mut Slot<Op> {
        let entry = &mut self.slots[slot as usize];
        debug_assert!(entry.stage.is_live(), "slot is live");
        entry
    }

    fn live_entry_mut(&mut self, slot: u32, seq: u64) -> Option<&mut Slot<Op>> {
        Some(&mut self.slots[slot as usize])
            .filter(|entry| entry.stage.is_live() && entry.seq == seq)
    }
}

#[cfg(test)]
impl<Op> RingQueue<Op> {
    fn record(&mut self, event: TraceEvent) {
        if let Some(trace) = &mut self.trace {
            trace.push(event);
        }
    }

    /// Starts recording [`TraceEvent`]s (allocates; never enabled by the allocation test).
    pub(super) fn enable_trace(&mut self) {
        self.trace = Some(Vec::new());
    }

    /// Takes the events recorded so far.
    pub(super) fn take_trace(&mut self) -> Vec<TraceEvent> {
        self.trace.as_mut().map(mem::take).unwrap_or_default()
    }

    /// Panics if the internal tables disagree with each other.
    pub(super) fn check_invariants(&self) {
        let stage_count = |stage: Stage| self.slots.iter().filter(|s| s.stage == stage).count();
        let live_slots: Vec<u32> = (0..self.slots.len() as u32)
            .filter(|&slot| self.slots[slot as usize].stage.is_live())
            .collect();
        assert_eq!(stage_count(Stage::Free), self.free.len());
        assert_eq!(stage_count(Stage::Queued), self.sq.len());
        assert_eq!(stage_count(Stage::Done), self.cq.len());
        assert!(self
            .sq
            .iter()
            .all(|&s| self.slots[s as usize].stage == Stage::Queued));
        assert!(self
            .cq
            .iter()
            .all(|&s| self.slots[s as usize].stage == Stage::Done));
        assert!(self
            .free
            .iter()
            .all(|&s| self.slots[s as usize].stage == Stage::Free));
        assert!(live_slots.len() <= self.config.max_in_flight as usize);
        let timers_in_slots = live_slots
            .iter()
            .filter(|&&slot| is_timer(&self.entry(slot).kind))
            .count();
        let timers_in_sq = self
            .sq
            .iter()
            .filter(|&&s| is_timer(&self.slots[s as usize].kind))
            .count();
        assert_eq!(self.timer_entries, timers_in_slots + timers_in_sq);
        let direct = live_slots
            .iter()
            .filter(|&&slot| self.slots[slot as usize].direct)
            .count();
        assert_eq!(direct, self.direct_live as usize);
        assert!(self
            .slots
            .iter()
            .all(|s| !s.direct || s.stage == Stage::InFlight));
        assert_eq!(self.live.len() as usize + direct, live_slots.len());
        let mut waiting = 0;
        let mut in_driver = 0;
        let mut prev_seq = None;
        let mut cur = self.live.head;
        while cur != NIL {
            let entry = self.entry(cur);
            assert!(prev_seq < Some(entry.seq), "live list in push order");
            prev_seq = Some(entry.seq);
            match entry.stage {
                Stage::Waiting if entry.link_target == NIL => waiting += 1,
                Stage::Waiting => {}
                Stage::InFlight => in_driver += 1,
                Stage::Armed => assert!(self.deadlines.contains(cur), "armed timer in heap"),
                Stage::Free | Stage::Queued | Stage::Done => panic!("dead slot on the live list"),
            }
            if entry.cancelled {
                assert!(entry.stage == Stage::Waiting);
                assert!(entry.chain_pending || entry.link_target != NIL);
            }
            cur = self.links.next(ListKind::Live, cur);
        }
        assert_eq!(self.waiting.len(), waiting);
        assert_eq!(self.driver_in_flight as usize, in_driver + direct);
        assert!(self.backlog.is_empty() || self.cq.len() == self.config.cq_entries as usize);
        assert_eq!(self.order.outside_len(), u64::from(self.outside_ready));
    }
}

impl<Op> fmt::Debug for RingQueue<Op> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RingQueue")
            .field("config", &self.config)
            .field("sq_len", &self.sq.len())
            .field("in_flight", &self.in_flight())
            .field("started_in_driver", &self.driver_in_flight)
            .field("cq_len", &self.cq.len())
            .field("backlog_len", &self.backlog.len())
            .field("overflowed", &self.overflowed)
            .finish_non_exhaustive()
    }
}

/// The oldest completion, seen in place by [`RingQueue::front_completion`].
pub struct FrontCompletion<'a, Op> {
    /// The entry's `user_data`.
    pub user_data: u64,
    /// Its result.
    pub result: IoResult,
    /// How it was delivered.
    pub flags: CompletionFlags,
    /// The op of an Io entry, still in its slot.
    pub op: Option<&'a mut Op>,
}

/// Draining iterator returned by [`RingQueue::completions`].
pub struct Completions<'a, Op> {
    queue: &'a mut RingQueue<Op>,
}

impl<Op> Iterator for Completions<'_, Op> {
    type Item = Completion<Op>;

    fn next(&mut self) -> Option<Completion<Op>> {
        self.queue.pop_completion()
    }
}

impl<Op> fmt::Debug for Completions<'_, Op> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Completions")
            .field(
                "remaining",
                &(self.queue.cq.len() + self.queue.backlog.len()),
            )
            .finish()
    }
}

fn is_timer<Op>(kind: &EntryKind<Op>) -> bool {
    matches!(
        kind,
        EntryKind::Timeout { .. } | EntryKind::LinkTimeout { .. }
    )
}
