//! async/await over the ring (the `futures` feature): a thin layer that
//! needs no runtime, only `std::future` and `std::task`.
//!
//! [`AsyncRing`] takes a [`Ring`] and turns each entry into a future of
//! its completion. Buffers move into the entry and come back with the
//! result, never borrowed across an `.await`:
//!
//! ```no_run
//! use spdk_ring::{AsyncRing, BdevDesc, DmaBuf, JsonConfig, OpenMode, Ring, SpdkRuntime};
//! let rt = SpdkRuntime::builder()
//!     .no_huge(true)
//!     .mem_size_mb(1024)
//!     .json_config(JsonConfig::new().malloc_bdev("Malloc0", 8192, 512).to_json())
//!     .build()?;
//! let desc = BdevDesc::open("Malloc0", OpenMode::ReadWrite)?;
//! let ring = AsyncRing::new(Ring::new(64)?);
//! let disk = ring.register_bdev(&desc)?;
//!
//! let data = ring.block_on(async {
//!     let (written, _buf) = ring.write(disk, DmaBuf::from_slice(&[0xAB; 4096])?, 0).await;
//!     assert_eq!(written?, 4096);
//!     let (read, buf) = ring.read(disk, DmaBuf::alloc(4096, 0)?, 0).await;
//!     assert_eq!(read?, 4096);
//!     Ok::<_, spdk_ring::Error>(buf)
//! })?;
//! assert!(data.iter().all(|&b| b == 0xAB));
//! # Ok::<(), spdk_ring::Error>(())
//! ```
//!
//! ## Driving
//! Something must poll the ring. Either
//! - [`AsyncRing::block_on`] runs one future to completion, polling the
//!   ring between its polls (no executor needed), and runs the tasks
//!   [`spawn`](AsyncRing::spawn)ed on the handle meanwhile. This is the
//!   handle's own executor, built for one thread and one ring: a task's
//!   waker is plain data (no reference count, nothing to clone), an op
//!   polled by its task records the task's index, and a completion wakes
//!   it by pushing that index: the cheapest way to run many I/O loops; or
//! - [`AsyncRing::drive`] is a future to spawn beside the application's
//!   tasks on another single-threaded executor (tested with
//!   `futures::executor::LocalPool` and `async_executor::LocalExecutor`):
//!   each time it runs it polls the ring once, wakes the tasks whose entries
//!   completed, and yields (waking itself), so it keeps the executor busy
//!   polling, as the ring's own poll loop would. It never completes.
//!
//! ```no_run
//! # fn demo(ring: spdk_ring::AsyncRing, disk: spdk_ring::Target) -> spdk_ring::Result<()> {
//! use spdk_ring::DmaBuf;
//! let readers: Vec<_> = (0..32)
//!     .map(|i| {
//!         let handle = ring.clone();
//!         ring.spawn(async move {
//!             let (read, _buf) = handle.read(disk, DmaBuf::alloc(4096, 0).unwrap(), i).await;
//!             read.unwrap()
//!         })
//!     })
//!     .collect();
//! let read: u64 = ring.block_on(futures::future::join_all(readers)).into_iter().sum();
//! assert_eq!(read, 32 * 4096);
//! # Ok(()) }
//! ```
//!
//! The same on `LocalPool`, with `drive` beside the tasks:
//!
//! ```no_run
//! # fn demo(ring: spdk_ring::AsyncRing, disk: spdk_ring::Target) -> spdk_ring::Result<()> {
//! use futures::executor::LocalPool;
//! use futures::task::LocalSpawnExt;
//! let mut pool = LocalPool::new();
//! pool.spawner().spawn_local(ring.drive()).unwrap();
//! let ios = (0..32).map(|i| {
//!     let ring = ring.clone();
//!     pool.spawner().spawn_local_with_handle(async move {
//!         let (read, _buf) = ring.read(disk, spdk_ring::DmaBuf::alloc(4096, 0).unwrap(), i).await;
//!         read.unwrap()
//!     }).unwrap()
//! });
//! let read: u64 = pool.run_until(futures::future::join_all(ios)).into_iter().sum();
//! assert_eq!(read, 32 * 4096);
//! # Ok(()) }
//! ```
//!
//! Spawned tasks run only while `block_on` runs on their handle. A task
//! woken from another thread (or after `block_on` returned) is queued
//! through a locked inbox and runs at the next round. A task holds what it
//! captured (handles too) until it finishes;
//! [`drop_tasks`](AsyncRing::drop_tasks) ends the unfinished ones.
//!
//! Everything is `!Send`, like the ring: the handle, its clones, its
//! futures and the executor stay on the ring's SPDK thread.
//!
//! ## The ring and the handle
//! The handle owns the ring: every entry on it is the layer's, so no
//! completion can go to the wrong API. The layer sets each entry's
//! `user_data` (a slot index and generation, see below), replacing the
//! caller's, clears `SKIP_SUCCESS` (a future needs its completion), and
//! clears `LINK` on a single [`submit`](AsyncRing::submit):
//! chains go through [`submit_linked`](AsyncRing::submit_linked), which
//! pushes all members at once. Targets are registered through the handle
//! (or on the ring before it is wrapped). [`AsyncRing::into_inner`] gives
//! the ring back once no future and no other handle is left; a ring never
//! wrapped is used synchronously as before. To cancel an op, drop its
//! future (or race it with [`timeout`](AsyncRing::timeout)): a `Cancel`
//! entry passed to `submit` names a `user_data`, and those are the layer's.
//!
//! ## Per-op state
//! A preallocated table (`ops.rs`) holds one slot per op made and not yet
//! handed to its future; an entry's `user_data` is its slot index plus the
//! slot's generation, so a late completion can never wake a newer future.
//! The table grows to the most ops ever live at once and is reused after:
//! in steady state an I/O allocates nothing (tested with a counting
//! allocator, on spawned tasks, on `LocalPool` and under `block_on`).
//!
//! ## Pushed when made
//! An entry is pushed when its future is made (as tokio-uring does), not at
//! its first poll: futures made in order are pushed in order, and the
//! future itself is small (a handle and an op id). When the SQ is full, the
//! entry waits in the handle's queue and rounds push queued entries, in
//! order, as room frees: any number of futures can wait on a small ring;
//! none fails for lack of room. Every op made takes a slot, queued or not.
//!
//! ## Dropping a future (cancel on drop)
//! A future dropped while its entry waits in the queue drops the entry (and
//! its buffers) when its turn comes. Dropped while the entry is in the ring, the buffers stay with
//! the ring until SPDK is done: the slot is marked ignored, a
//! [`Cancel`](crate::opcode::Cancel) is pushed for it (queued until the SQ
//! has room), the completion is dropped with its buffers when it comes, and
//! only then is the slot reused. Nothing is written into memory that was
//! handed back. [`AsyncStats`] counts what happened.
//!
//! ## Errors
//! Results carry exactly what the ring reports (see the
//! [ring's error table](crate::ring)): the same errnos, NVMe status, ENOMEM
//! retry and overflow behaviour, since every completion comes from it.
//!
//! ## Where an op goes (a map of `async_ring/`)
//! | Stage | File |
//! |-------|------|
//! | handle, registration, giving the ring back | `mod.rs` |
//! | convenience methods (`read`, `write`, …) | `io.rs` |
//! | pushed when made (or queued for SQ room), awaited, dropped | `submit.rs`; chains in `chain.rs` |
//! | slot, `user_data`, lifecycle, discarding late completions | `ops.rs` |
//! | ring polled, completions recorded, futures woken | `drive.rs` |
//! | spawned tasks, their wakers, the ready queue | `tasks.rs` |
//! | `sleep`, `timeout`, `submit_with_timeout` | `timeout.rs` |

mod chain;
mod drive;
mod io;
mod ops;
mod submit;
mod tasks;
mod timeout;

pub use chain::SubmitLinked;
pub use drive::Drive;
pub use ops::AsyncStats;
pub use submit::Submit;
pub use tasks::JoinHandle;
pub use timeout::{Elapsed, TimedCompletion};

use crate::bdev::BdevDesc;
use crate::error::Result;
use crate::ring::{opcode, Entry, Ring, Target};
use ops::{OpId, OpTable, Waiter, CANCEL_USER_DATA};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

/// What the handle, its clones and its futures share.
type Shared = Rc<Inner>;

/// The ring's state, and the tasks spawned on the handle (apart, since a
/// task borrows the state while it runs).
struct Inner {
    state: RefCell<State>,
    tasks: tasks::Tasks,
}

impl Inner {
    #[inline(always)]
    fn borrow_mut(&self) -> std::cell::RefMut<'_, State> {
        self.state.borrow_mut()
    }

    fn borrow(&self) -> std::cell::Ref<'_, State> {
        self.state.borrow()
    }
}

struct State {
    ring: Ring,
    ops: OpTable,
    /// Chains (`submit_linked`) waiting for SQ room for all their members,
    /// woken in order as rounds free it.
    sq_waiters: VecDeque<Waker>,
    /// `user_data` of abandoned entries whose Cancel found the SQ full.
    cancels: VecDeque<u64>,
    /// Entries made while the SQ was full, pushed in order as room frees.
    unpushed: VecDeque<(OpId, Entry)>,
    /// Wakers a round collects, woken once the state is released.
    to_wake: Vec<Waker>,
}

impl State {
    /// Takes an op, makes its entry, tags it with the op's `user_data` and
    /// pushes it, or queues it behind those already waiting when the SQ is
    /// full. The entry is made here so that it is built where it is pushed
    /// from (an entry is large: a finished one passed down was copied twice
    /// per I/O).
    #[inline(always)]
    fn submit(&mut self, make: impl FnOnce() -> Entry, waiter: Waiter) -> OpId {
        let id = self.ops.take(waiter);
        let entry = make().user_data(id.user_data());
        if self.unpushed.is_empty() {
            match self.ring.push(entry) {
                Ok(()) => return id,
                Err(full) => self.queue_unpushed(id, full.entry),
            }
        } else {
            self.queue_unpushed(id, entry);
        }
        id
    }

    #[cold]
    fn queue_unpushed(&mut self, id: OpId, entry: Entry) {
        self.ops.set_unpushed(id);
        self.unpushed.push_back((id, entry));
    }

    /// Pushes queued entries, in order, while the SQ has room.
    fn push_unpushed(&mut self) {
        while let Some((id, entry)) = self.unpushed.pop_front() {
            if !self.ops.pushing_unpushed(id) {
                continue; // its future is gone: the entry goes with it
            }
            if let Err(full) = self.ring.push(entry) {
                self.ops.back_to_unpushed(id);
                self.unpushed.push_front((id, full.entry));
                return;
            }
        }
    }

    /// Pushes a chain whole, or none of it.
    fn try_push_all<const N: usize>(
        &mut self,
        entries: [Entry; N],
        waker: &Waker,
        tasks: &tasks::Tasks,
    ) -> std::result::Result<[OpId; N], [Entry; N]> {
        let sq_entries = self.ring.sq_space() + self.ring.sq_len();
        assert!(
            N <= sq_entries,
            "spdk-ring: a chain of {N} entries can never fit an SQ of {sq_entries}"
        );
        if self.ring.sq_space() < N {
            return Err(entries);
        }
        if !self.unpushed.is_empty() {
            return Err(entries);
        }
        let ids = entries.map(|entry| {
            let id = self.ops.take(Waiter::of(waker, tasks));
            let pushed = self.ring.push(entry.user_data(id.user_data()));
            assert!(pushed.is_ok(), "the SQ had room for the whole chain");
            id
        });
        Ok(ids)
    }

    fn wait_for_sq_room(&mut self, waker: &Waker) {
        self.sq_waiters.push_back(waker.clone());
    }

    /// Moves to `to_wake` as many SQ waiters as the SQ has room for.
    fn wake_sq_waiters(&mut self) {
        if self.sq_waiters.is_empty() {
            return;
        }
        let room = self.ring.sq_space().min(self.sq_waiters.len());
        self.to_wake.extend(self.sq_waiters.drain(..room));
    }

    /// The future of `id` is gone: its entry is cancelled if still in the ring.
    #[inline]
    fn abandon(&mut self, id: OpId) {
        if self.ops.abandon(id) {
            self.cancels.push_back(id.user_data());
            self.push_queued_cancels();
        }
    }

    fn push_queued_cancels(&mut self) {
        while let Some(&user_data) = self.cancels.front() {
            let cancel = opcode::Cancel::new(user_data)
                .build()
                .user_data(CANCEL_USER_DATA);
            if self.ring.push(cancel).is_err() {
                return;
            }
            self.cancels.pop_front();
            self.ops.stats.cancels_pushed += 1;
        }
    }
}

/// A handle to a [`Ring`] for async code; clones share the ring. See the
/// [module docs](self).
#[derive(Clone)]
pub struct AsyncRing {
    shared: Shared,
}

impl AsyncRing {
    /// Takes the ring: from now on its entries are the layer's.
    pub fn new(ring: Ring) -> AsyncRing {
        let slots = ring.sq_space() * 2;
        AsyncRing {
            shared: Rc::new(Inner {
                state: RefCell::new(State {
                    ring,
                    ops: OpTable::with_capacity(slots),
                    sq_waiters: VecDeque::new(),
                    cancels: VecDeque::new(),
                    unpushed: VecDeque::new(),
                    to_wake: Vec::with_capacity(slots),
                }),
                tasks: tasks::Tasks::new(),
            }),
        }
    }

    /// Pushes `entry` (when the SQ has room) and resolves to its completion,
    /// with its buffers. Works for every entry family: bdev, NVMe, blob
    /// data and metadata, control. `user_data` is the layer's; `LINK` and
    /// `SKIP_SUCCESS` are cleared (see [`submit_linked`](Self::submit_linked)).
    #[inline(always)]
    pub fn submit(&self, entry: Entry) -> Submit {
        Submit::new(self.shared.clone(), || {
            // A future resolves on its completion: SKIP_SUCCESS would leave
            // it waiting for ever; chains go through `submit_linked`.
            let flags = entry
                .get_flags()
                .difference(crate::EntryFlags::LINK | crate::EntryFlags::SKIP_SUCCESS);
            entry.flags(flags)
        })
    }

    /// Pushes the entries as one LINK chain (each but the last flagged
    /// `LINK`) once the SQ has room for all, and resolves when every member
    /// has completed, with their completions in order.
    ///
    /// # Panics
    /// When polled, if `N` exceeds the SQ size (it could never be pushed).
    pub fn submit_linked<const N: usize>(&self, entries: [Entry; N]) -> SubmitLinked<N> {
        SubmitLinked::new(self.shared.clone(), entries)
    }

    /// Resolves after `after`, on a ring [`Timeout`](opcode::Timeout) entry.
    pub fn sleep(&self, after: Duration) -> impl Future<Output = ()> {
        let timer = self.submit(opcode::Timeout::new(after).build());
        async move {
            let done = timer.await;
            debug_assert_eq!(done.errno(), Some(crate::Errno::ETIME));
        }
    }

    /// Runs `future` for at most `after` (timed by a ring `Timeout`): its
    /// output, or [`Elapsed`] after dropping it, which cancels its entries.
    pub fn timeout<F: Future>(
        &self,
        after: Duration,
        future: F,
    ) -> impl Future<Output = std::result::Result<F::Output, Elapsed>> {
        let timer = self.sleep(after);
        async move {
            let mut future = std::pin::pin!(future);
            let mut timer = std::pin::pin!(timer);
            std::future::poll_fn(|cx| {
                if let Poll::Ready(output) = future.as_mut().poll(cx) {
                    return Poll::Ready(Ok(output));
                }
                if timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(Elapsed));
                }
                Poll::Pending
            })
            .await
        }
    }

    /// Pushes `entry` bounded by a [`LinkTimeout`](opcode::LinkTimeout): if
    /// it has not completed within `after`, the ring aborts it.
    pub fn submit_with_timeout(
        &self,
        entry: Entry,
        after: Duration,
    ) -> impl Future<Output = TimedCompletion> {
        let chain = self.submit_linked([entry, opcode::LinkTimeout::new(after).build()]);
        async move {
            let [completion, timer] = chain.await;
            TimedCompletion {
                completion,
                timed_out: timer.errno() == Some(crate::Errno::ETIME),
            }
        }
    }

    /// A future that drives the ring; spawn it on the executor that runs
    /// the tasks using this handle (see the [module docs](self#driving)).
    pub fn drive(&self) -> Drive {
        Drive::new(self.shared.clone())
    }

    /// Runs `future` to completion on this thread, polling the ring between
    /// its polls (no executor needed), and running the tasks
    /// [`spawn`](Self::spawn)ed on this handle meanwhile.
    ///
    /// # Panics
    /// If called from inside another `block_on` on the same thread; if a
    /// spawned task panics (the panic goes on through `block_on`).
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        drive::block_on(&self.shared, future)
    }

    /// Spawns a task on this handle's own executor: it runs while
    /// [`block_on`](Self::block_on) runs on this handle (now or later), and
    /// its output comes through the returned [`JoinHandle`]. A task's waker
    /// costs nothing to clone and pushes an index when woken: the cheapest
    /// way to run many I/O loops (see the [module docs](self#driving)).
    /// Allocates the task once; its I/Os allocate nothing.
    ///
    /// A task holds whatever it captured (handles included) until it
    /// finishes: [`drop_tasks`](Self::drop_tasks) ends the unfinished ones.
    pub fn spawn<T: 'static>(&self, future: impl Future<Output = T> + 'static) -> JoinHandle<T> {
        let (task, handle) = tasks::task_with_handle(future);
        self.shared.tasks.spawn(task);
        handle
    }

    /// Spawned tasks not finished yet.
    pub fn tasks(&self) -> usize {
        self.shared.tasks.live()
    }

    /// Drops every unfinished spawned task (the futures of their entries
    /// in flight are dropped too, which cancels those entries). Their
    /// [`JoinHandle`]s are woken and panic when polled: no output will come.
    pub fn drop_tasks(&self) {
        self.shared.tasks.clear();
    }

    /// Registers a bdev (see [`Ring::register_bdev`]).
    pub fn register_bdev(&self, desc: &BdevDesc) -> Result<Target> {
        self.shared.borrow_mut().ring.register_bdev(desc)
    }

    /// Registers namespace `nsid` of a controller (see
    /// [`Ring::register_nvme_namespace`]).
    pub fn register_nvme_namespace(
        &self,
        controller: &crate::nvme::NvmeController,
        nsid: u32,
        qpair_entries: Option<u32>,
    ) -> Result<Target> {
        self.shared
            .borrow_mut()
            .ring
            .register_nvme_namespace(controller, nsid, qpair_entries)
    }

    /// Registers a blobstore (see [`Ring::register_blobstore`]).
    pub fn register_blobstore(&self, store: &crate::blob::Blobstore) -> Result<Target> {
        self.shared.borrow_mut().ring.register_blobstore(store)
    }

    /// Unregisters a target (see [`Ring::unregister`]).
    pub fn unregister(&self, target: Target) -> Result<()> {
        self.shared.borrow_mut().ring.unregister(target)
    }

    /// Reads the ring (its counters, sizes, targets); pushing and reaping
    /// stay the layer's.
    pub fn with_ring<R>(&self, f: impl FnOnce(&Ring) -> R) -> R {
        f(&self.shared.borrow().ring)
    }

    /// What the layer counted (completions handed out, futures dropped in
    /// flight, completions discarded, cancels pushed).
    pub fn stats(&self) -> AsyncStats {
        self.shared.borrow().ops.stats
    }

    /// Ops in the ring or waiting for their future, including entries of
    /// dropped futures whose completions are still due.
    pub fn pending(&self) -> usize {
        self.shared.borrow().ops.live()
    }

    /// Slots the op table holds (it grows to the most ops ever pending).
    pub fn op_slots(&self) -> usize {
        self.shared.borrow().ops.capacity()
    }

    /// Gives the ring back. Fails (handing the handle back) while another
    /// handle or a future of this one exists (a `drive` future too), or if
    /// the entries of dropped futures do not complete within `timeout`
    /// (it polls the ring meanwhile).
    pub fn into_inner(self, timeout: Duration) -> std::result::Result<Ring, AsyncRing> {
        if Rc::strong_count(&self.shared) != 1 {
            return Err(self);
        }
        let deadline = Instant::now() + timeout;
        loop {
            {
                let state = self.shared.borrow();
                debug_assert_eq!(state.ops.live(), state.ops.ignored());
                if state.ops.live() == 0 && state.cancels.is_empty() && state.unpushed.is_empty() {
                    break;
                }
            }
            if Instant::now() >= deadline {
                return Err(self);
            }
            drive::drive_once(&self.shared);
        }
        match Rc::try_unwrap(self.shared) {
            Ok(inner) => Ok(inner.state.into_inner().ring),
            Err(shared) => Err(AsyncRing { shared }),
        }
    }
}

impl std::fmt::Debug for AsyncRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.shared.borrow();
        f.debug_struct("AsyncRing")
            .field("pending", &state.ops.live())
            .field("stats", &state.ops.stats)
            .finish_non_exhaustive()
    }
}
