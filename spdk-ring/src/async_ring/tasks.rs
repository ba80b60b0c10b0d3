//! Tasks spawned on the handle ([`AsyncRing::spawn`](super::AsyncRing::spawn)),
//! run by [`block_on`](super::AsyncRing::block_on) between ring rounds: an
//! executor built for one thread and one ring, so that waking a task costs
//! what pushing an index costs.
//!
//! A task's [`Waker`] is plain data, no pointer and no reference count:
//! the executor's number, the task's slot and the slot's generation.
//! Cloning and dropping it cost nothing. Woken on the thread whose
//! `block_on` is running this executor, it pushes the slot onto the ready
//! queue; woken anywhere else (another thread, or after `block_on`
//! returned), it goes through a locked inbox that the executor empties at
//! its next round. A wake for a slot that moved on (its task finished) is
//! dropped: its generation no longer matches.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};

type TaskFuture = Pin<Box<dyn Future<Output = ()>>>;

/// Names a task: executor, slot, slot generation, packed in the one word
/// a waker carries (so comparing two is comparing words).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TaskRef(usize);

/// The slot `block_on`'s own future wakes (no spawned task has it).
const MAIN: u32 = u32::MAX;
/// Bits of the word that carry the generation and the executor.
const GENERATION_BITS: u32 = 12;
const EXECUTOR_BITS: u32 = 64 - 32 - GENERATION_BITS;

// The word is a u64 in a pointer-sized waker data word.
const _: () = assert!(usize::BITS == 64, "spdk-ring supports 64-bit targets only");

impl TaskRef {
    fn new(executor: u32, index: u32, generation: u32) -> TaskRef {
        let generation = u64::from(generation) & ((1 << GENERATION_BITS) - 1);
        let executor = u64::from(executor) & ((1 << EXECUTOR_BITS) - 1);
        TaskRef(
            ((executor << (32 + GENERATION_BITS)) | (generation << 32) | u64::from(index)) as usize,
        )
    }

    fn index(self) -> u32 {
        self.0 as u32
    }

    /// The generation's low `GENERATION_BITS`.
    fn generation(self) -> u32 {
        ((self.0 as u64 >> 32) & ((1 << GENERATION_BITS) - 1)) as u32
    }

    fn executor(self) -> u32 {
        (self.0 as u64 >> (32 + GENERATION_BITS)) as u32
    }

    fn waker(self) -> Waker {
        // SAFETY: the vtable's functions accept any data word (it is
        // decoded, never dereferenced), and clone/drop own nothing.
        unsafe { Waker::from_raw(RawWaker::new(self.0 as *const (), &VTABLE)) }
    }
}

static VTABLE: RawWakerVTable = RawWakerVTable::new(clone_raw, wake_raw, wake_raw, drop_raw);

fn clone_raw(data: *const ()) -> RawWaker {
    RawWaker::new(data, &VTABLE)
}

fn drop_raw(_: *const ()) {}

fn wake_raw(data: *const ()) {
    let task = TaskRef(data as usize);
    let woken_here = RUNNING.try_with(|running| {
        let tasks = running.get();
        if tasks.is_null() {
            return false;
        }
        // SAFETY: `RUNNING` points at an executor only while its
        // `block_on` runs on this thread (set and cleared by `Running`),
        // so the executor is alive and on this thread.
        let tasks = unsafe { &*tasks };
        if tasks.id != task.executor() {
            return false;
        }
        tasks.wake_here(task.index(), task.generation());
        true
    });
    if woken_here != Ok(true) {
        wake_remote(task);
    }
}

thread_local! {
    /// The executor whose `block_on` runs on this thread, if any.
    static RUNNING: Cell<*const Tasks> = const { Cell::new(std::ptr::null()) };
}

/// Wakes that came from elsewhere, emptied by the executor's next round.
#[derive(Default)]
struct Inbox {
    pending: AtomicBool,
    woken: Mutex<Vec<TaskRef>>,
}

/// Every live executor's inbox, by executor number: only wakes from
/// another thread (or from outside `block_on`) look here.
static INBOXES: Mutex<Vec<(u32, Weak<Inbox>)>> = Mutex::new(Vec::new());

fn wake_remote(task: TaskRef) {
    let inbox = {
        let inboxes = INBOXES.lock().unwrap_or_else(|e| e.into_inner());
        inboxes
            .iter()
            .find(|(executor, _)| *executor == task.executor())
            .and_then(|(_, inbox)| inbox.upgrade())
    };
    // No inbox: the executor is gone, and its tasks with it.
    if let Some(inbox) = inbox {
        inbox
            .woken
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(task);
        inbox.pending.store(true, Ordering::Release);
    }
}

struct TaskSlot {
    generation: u32,
    /// On the ready queue (so a second wake adds nothing).
    queued: bool,
    /// None while free, or while the task is being polled.
    future: Option<TaskFuture>,
}

/// The slots and the ready queue, borrowed together and never across a poll.
struct Queue {
    slots: Vec<TaskSlot>,
    free: Vec<u32>,
    /// Woken tasks (slot, generation), in the order they were woken.
    ready: Vec<(u32, u32)>,
}

/// The waker data of no task (`MAIN` never has a generation other than 0).
const NOT_POLLING: usize = usize::MAX;

/// The spawned tasks of one handle and the queue of those woken.
pub(super) struct Tasks {
    id: u32,
    queue: RefCell<Queue>,
    main_woken: Cell<bool>,
    /// The waker data of the task being polled (or `NOT_POLLING`): ops
    /// polled with exactly that waker wake the task by index.
    polling: Cell<usize>,
    /// Rounds of the ring so far (completions are recorded only in rounds).
    rounds: Cell<u32>,
    live: Cell<usize>,
    inbox: Arc<Inbox>,
}

impl Tasks {
    pub(super) fn new() -> Tasks {
        static NEXT_ID: AtomicU32 = AtomicU32::new(0);
        let inbox = Arc::new(Inbox::default());
        let mut inboxes = INBOXES.lock().unwrap_or_else(|e| e.into_inner());
        assert!(
            inboxes.len() < 1 << EXECUTOR_BITS,
            "spdk-ring: fewer than 2^{EXECUTOR_BITS} async handles at once"
        );
        // Live executors' numbers are unique (a waker carries only its low
        // bits), so a wake from elsewhere can never reach the wrong one.
        let id = loop {
            let id = NEXT_ID.fetch_add(1, Ordering::Relaxed) & ((1 << EXECUTOR_BITS) - 1);
            if inboxes.iter().all(|(live, _)| *live != id) {
                break id;
            }
        };
        inboxes.push((id, Arc::downgrade(&inbox)));
        drop(inboxes);
        Tasks {
            id,
            queue: RefCell::new(Queue {
                slots: Vec::new(),
                free: Vec::new(),
                ready: Vec::new(),
            }),
            main_woken: Cell::new(false),
            polling: Cell::new(NOT_POLLING),
            rounds: Cell::new(0),
            live: Cell::new(0),
            inbox,
        }
    }

    /// Tasks spawned and not finished.
    pub(super) fn live(&self) -> usize {
        self.live.get()
    }

    #[inline]
    fn task_ref(&self, index: u32, generation: u32) -> TaskRef {
        TaskRef::new(self.id, index, generation)
    }

    /// The task being polled, if `waker` is its own waker.
    #[inline]
    pub(crate) fn polled_task(&self, waker: &Waker) -> Option<TaskRef> {
        let task = self.polling_task()?;
        std::mem::ManuallyDrop::new(task.waker())
            .will_wake(waker)
            .then_some(task)
    }

    /// The task being polled, whatever waker its futures see.
    #[inline]
    pub(crate) fn polling_task(&self) -> Option<TaskRef> {
        let data = self.polling.get();
        (data != NOT_POLLING).then_some(TaskRef(data))
    }

    /// Counts a ring round.
    #[inline]
    pub(crate) fn next_round(&self) {
        self.rounds.set(self.rounds.get().wrapping_add(1));
    }

    #[inline]
    pub(crate) fn round(&self) -> u32 {
        self.rounds.get()
    }

    /// Adds a task, ready to run at the next round.
    pub(super) fn spawn(&self, future: TaskFuture) {
        let mut queue = self.queue.borrow_mut();
        let queue = &mut *queue;
        let index = match queue.free.pop() {
            Some(index) => index,
            None => {
                let index = u32::try_from(queue.slots.len())
                    .ok()
                    .filter(|&i| i != MAIN)
                    .expect("spdk-ring: fewer than 2^32 - 1 tasks at once");
                queue.slots.push(TaskSlot {
                    generation: 0,
                    queued: false,
                    future: None,
                });
                index
            }
        };
        let slot = &mut queue.slots[index as usize];
        slot.future = Some(future);
        slot.queued = true;
        queue.ready.push((index, slot.generation));
        self.live.set(self.live.get() + 1);
    }

    /// Wakes a task of this executor (an op's completion came).
    #[inline]
    pub(crate) fn wake_task(&self, task: TaskRef) {
        debug_assert_eq!(task.executor(), self.id);
        self.wake_here(task.index(), task.generation());
    }

    #[inline]
    fn wake_here(&self, index: u32, generation: u32) {
        if index == MAIN {
            self.main_woken.set(true);
            return;
        }
        let mut queue = self.queue.borrow_mut();
        let queue = &mut *queue;
        let Some(slot) = queue.slots.get_mut(index as usize) else {
            return;
        };
        if slot.queued || slot.generation & ((1 << GENERATION_BITS) - 1) != generation {
            return;
        }
        slot.queued = true;
        queue.ready.push((index, slot.generation));
    }

    /// Moves the wakes that came through the inbox onto the ready queue.
    #[inline]
    fn take_inbox(&self) {
        if self.inbox.pending.load(Ordering::Relaxed) {
            self.take_inbox_slow();
        }
    }

    #[cold]
    fn take_inbox_slow(&self) {
        self.inbox.pending.store(false, Ordering::Relaxed);
        let woken =
            std::mem::take(&mut *self.inbox.woken.lock().unwrap_or_else(|e| e.into_inner()));
        for task in woken {
            self.wake_here(task.index(), task.generation());
        }
    }

    /// Polls every task woken before this call (those they wake wait for
    /// the next round). Returns how many ran.
    #[inline]
    pub(super) fn run_ready(&self) -> usize {
        // Inlined up to here: `block_on` without spawned tasks pays a test.
        self.take_inbox();
        if self.queue.borrow().ready.is_empty() {
            return 0;
        }
        self.run_woken()
    }

    #[inline(never)]
    fn run_woken(&self) -> usize {
        let woken = self.queue.borrow().ready.len();
        let mut ran = 0;
        for at in 0..woken {
            let (index, generation, future) = {
                let mut queue = self.queue.borrow_mut();
                let (index, generation) = queue.ready[at];
                let slot = &mut queue.slots[index as usize];
                if slot.generation != generation {
                    continue;
                }
                slot.queued = false;
                let Some(future) = slot.future.take() else {
                    continue;
                };
                (index, generation, future)
            };
            ran += 1;
            self.poll_task(index, generation, future);
        }
        // Those woken meanwhile move to the front, for the next round.
        let mut queue = self.queue.borrow_mut();
        let len = queue.ready.len();
        if len > woken {
            queue.ready.copy_within(woken..len, 0);
        }
        queue.ready.truncate(len - woken);
        ran
    }

    /// Polls one task with its own waker; puts it back, or frees its slot.
    #[inline]
    fn poll_task(&self, index: u32, generation: u32, mut future: TaskFuture) {
        let task = self.task_ref(index, generation);
        let waker = std::mem::ManuallyDrop::new(task.waker());
        let mut cx = Context::from_waker(&waker);
        // A panic out of this poll is cleaned up by `Running`'s drop.
        self.polling.set(task.0);
        let poll = future.as_mut().poll(&mut cx);
        self.polling.set(NOT_POLLING);
        match poll {
            Poll::Pending => {
                self.queue.borrow_mut().slots[index as usize].future = Some(future);
            }
            Poll::Ready(()) => {
                self.free_slot(index);
                // Its captures (handles, buffers) go now, outside any borrow.
                drop(future);
            }
        }
    }

    /// A finished (or panicked) task's slot goes back to the free list.
    fn free_slot(&self, index: u32) {
        {
            let mut queue = self.queue.borrow_mut();
            let slot = &mut queue.slots[index as usize];
            slot.generation = slot.generation.wrapping_add(1);
            slot.queued = false;
            queue.free.push(index);
        }
        self.live.set(self.live.get() - 1);
    }

    /// Polls `block_on`'s own future with its waker.
    pub(super) fn poll_main<F: Future>(&self, future: Pin<&mut F>) -> Poll<F::Output> {
        let task = self.task_ref(MAIN, 0);
        let waker = std::mem::ManuallyDrop::new(task.waker());
        let mut cx = Context::from_waker(&waker);
        self.polling.set(task.0);
        let poll = future.poll(&mut cx);
        self.polling.set(NOT_POLLING);
        poll
    }

    /// Whether the main future was woken since the last call.
    pub(super) fn take_main_woken(&self) -> bool {
        self.take_inbox();
        self.main_woken.replace(false)
    }

    pub(super) fn wake_main(&self) {
        self.main_woken.set(true);
    }

    /// Marks this executor as the one running on this thread until the
    /// guard is dropped.
    pub(super) fn enter(&self) -> Running<'_> {
        let previous = RUNNING.with(|running| running.replace(self));
        assert!(
            previous.is_null(),
            "spdk-ring: AsyncRing::block_on called inside block_on on the same thread"
        );
        Running { tasks: self }
    }

    /// Drops every unfinished task (their captures with them).
    pub(super) fn clear(&self) {
        let futures: Vec<TaskFuture> = {
            let mut queue = self.queue.borrow_mut();
            let queue = &mut *queue;
            let mut futures = Vec::new();
            for (index, slot) in queue.slots.iter_mut().enumerate() {
                if let Some(future) = slot.future.take() {
                    slot.generation = slot.generation.wrapping_add(1);
                    slot.queued = false;
                    queue.free.push(index as u32);
                    futures.push(future);
                }
            }
            queue.ready.clear();
            futures
        };
        self.live.set(self.live.get() - futures.len());
        drop(futures);
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        INBOXES
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(id, _)| *id != self.id);
    }
}

/// Clears [`RUNNING`] when `block_on` returns or unwinds. Unwinding from
/// a task's poll (the task panicked), it also clears the polling mark and
/// frees the task's slot (the unwind dropped its future), so the executor
/// is consistent for the next `block_on`; the hot path pays nothing.
pub(super) struct Running<'a> {
    tasks: &'a Tasks,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        RUNNING.with(|running| running.set(std::ptr::null()));
        let tasks = self.tasks;
        let polled = tasks.polling.replace(NOT_POLLING);
        if polled != NOT_POLLING {
            let task = TaskRef(polled);
            if task.index() != MAIN {
                tasks.free_slot(task.index());
            }
        }
    }
}

/// A spawned task's output, for [`JoinHandle`].
struct JoinState<T> {
    output: Cell<Option<T>>,
    waiter: Cell<Option<Waker>>,
    /// The task is gone: it returned (its output, if not taken yet, is in
    /// `output`), or it was dropped unfinished.
    ended: Cell<bool>,
}

/// Awaits a task spawned with [`AsyncRing::spawn`](super::AsyncRing::spawn):
/// its output. Dropping it detaches the task (it runs on).
///
/// # Panics
/// When polled after its task was dropped unfinished (by
/// [`AsyncRing::drop_tasks`](super::AsyncRing::drop_tasks), or because it
/// panicked): there is no output to wait for.
#[must_use = "dropping a JoinHandle detaches its task"]
pub struct JoinHandle<T> {
    state: Rc<JoinState<T>>,
}

impl<T> Future for JoinHandle<T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        if let Some(output) = self.state.output.take() {
            return Poll::Ready(output);
        }
        assert!(
            !self.state.ended.get(),
            "spdk-ring: awaited a task that was dropped unfinished (drop_tasks, or it panicked)"
        );
        self.state.waiter.set(Some(cx.waker().clone()));
        Poll::Pending
    }
}

/// Ends a task for its [`JoinHandle`] however the task goes: returned,
/// dropped unfinished, or unwound.
struct Ending<T> {
    state: Rc<JoinState<T>>,
}

impl<T> Drop for Ending<T> {
    fn drop(&mut self) {
        self.state.ended.set(true);
        if let Some(waiter) = self.state.waiter.take() {
            waiter.wake();
        }
    }
}

/// Boxes `future` as a task that hands its output to a [`JoinHandle`].
pub(super) fn task_with_handle<T: 'static>(
    future: impl Future<Output = T> + 'static,
) -> (TaskFuture, JoinHandle<T>) {
    let state = Rc::new(JoinState {
        output: Cell::new(None),
        waiter: Cell::new(None),
        ended: Cell::new(false),
    });
    let handle = JoinHandle {
        state: state.clone(),
    };
    let task = Box::pin(HandingOver {
        future: Box::pin(future),
        ending: Ending { state },
    });
    (task, handle)
}

/// A spawned task: its future, and where its output goes. The future is
/// boxed apart so that this stays `Unpin` (no projection of a pin).
struct HandingOver<F, T> {
    future: Pin<Box<F>>,
    ending: Ending<T>,
}

impl<F: Future<Output = T>, T> Future for HandingOver<F, T> {
    type Output = ();

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let output = std::task::ready!(self.future.as_mut().poll(cx));
        self.ending.state.output.set(Some(output));
        Poll::Ready(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waker_data_round_trips() {
        let (executor, index, generation) = (
            (1 << EXECUTOR_BITS) - 1,
            0xFFFF_FFFE,
            (1 << GENERATION_BITS) - 1,
        );
        let task = TaskRef::new(executor, index, generation);
        assert_eq!(
            (task.executor(), task.index(), task.generation()),
            (executor, index, generation)
        );
        assert_eq!(TaskRef(task.0), task);
    }

    #[test]
    fn tasks_run_when_woken_and_finish_once() {
        let tasks = Tasks::new();
        let _running = tasks.enter();
        let polls = Rc::new(Cell::new(0));
        let stored: Rc<RefCell<Option<Waker>>> = Rc::default();
        let (p, s) = (polls.clone(), stored.clone());
        let (task, handle) = task_with_handle(std::future::poll_fn(move |cx| {
            p.set(p.get() + 1);
            if p.get() == 3 {
                return Poll::Ready(7);
            }
            *s.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        }));
        tasks.spawn(task);
        assert_eq!((tasks.run_ready(), polls.get()), (1, 1));
        // Not woken: not polled.
        assert_eq!(tasks.run_ready(), 0);
        let waker = stored.borrow_mut().take().unwrap();
        waker.wake_by_ref();
        waker.wake_by_ref();
        assert_eq!((tasks.run_ready(), polls.get()), (1, 2));
        // Woken from another thread: through the inbox.
        let waker = stored.borrow_mut().take().unwrap();
        std::thread::spawn(move || waker.wake()).join().unwrap();
        assert_eq!((tasks.run_ready(), polls.get()), (1, 3));
        assert_eq!(tasks.live(), 0);
        let mut handle = std::pin::pin!(handle);
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        assert_eq!(handle.as_mut().poll(&mut cx), Poll::Ready(7));
    }

    #[test]
    fn a_task_that_panics_leaves_the_executor_consistent() {
        let tasks = Tasks::new();
        tasks.spawn(Box::pin(async { panic!("task panics") }));
        // As in `block_on`: the guard lives where the panic ends.
        let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _running = tasks.enter();
            tasks.run_ready()
        }));
        assert!(unwound.is_err());
        assert_eq!(tasks.live(), 0, "the panicked task's slot is free");
        assert!(
            tasks.polling_task().is_none(),
            "no task is marked as polled"
        );
        let (task, handle) = task_with_handle(async { 5 });
        tasks.spawn(task);
        assert_eq!(tasks.run_ready(), 1);
        let mut handle = std::pin::pin!(handle);
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        assert_eq!(handle.as_mut().poll(&mut cx), Poll::Ready(5));
    }

    #[test]
    fn a_join_handle_of_a_dropped_task_panics_instead_of_waiting_for_ever() {
        struct Flag(AtomicBool);
        impl std::task::Wake for Flag {
            fn wake(self: Arc<Self>) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let tasks = Tasks::new();
        let _running = tasks.enter();
        let (task, handle) = task_with_handle(std::future::pending::<u8>());
        tasks.spawn(task);
        assert_eq!(tasks.run_ready(), 1);
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let waker = Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);
        let mut handle = Box::pin(handle);
        assert!(handle.as_mut().poll(&mut cx).is_pending());
        tasks.clear();
        assert!(flag.0.load(Ordering::Relaxed), "the awaiting side is woken");
        let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = handle.as_mut().poll(&mut cx);
        }));
        assert!(polled.is_err(), "a dropped task's handle says so");
    }

    #[test]
    fn a_stale_wake_does_not_run_the_slot_s_next_task() {
        let tasks = Tasks::new();
        let _running = tasks.enter();
        let first_waker: Rc<RefCell<Option<Waker>>> = Rc::default();
        let keep = first_waker.clone();
        tasks.spawn(Box::pin(std::future::poll_fn(move |cx| {
            *keep.borrow_mut() = Some(cx.waker().clone());
            Poll::Ready(())
        })));
        assert_eq!(tasks.run_ready(), 1);
        let polls = Rc::new(Cell::new(0));
        let p = polls.clone();
        tasks.spawn(Box::pin(std::future::poll_fn(move |_| {
            p.set(p.get() + 1);
            Poll::<()>::Pending
        })));
        assert_eq!(tasks.run_ready(), 1);
        first_waker.borrow_mut().take().unwrap().wake();
        assert_eq!((tasks.run_ready(), polls.get()), (0, 1));
        tasks.clear();
        assert_eq!(tasks.live(), 0);
    }
}
