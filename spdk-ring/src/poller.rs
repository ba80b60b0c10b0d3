//! Pollers: Rust closures that SPDK runs on an SPDK thread, on every
//! `spdk_thread_poll` or once per period, beside the thread's messages and
//! the ring's I/O.
//!
//! A [`Poller`] owns its closure in one heap allocation made at
//! registration; SPDK calls it through a trampoline that allocates nothing.
//! The allocation is freed only once SPDK can no longer call the closure:
//! when the handle drops (`spdk_poller_unregister` guarantees SPDK never
//! calls the function again), or, if the handle is dropped from inside its
//! own closure, by the trampoline after the closure returns.
//!
//! # Panics
//! A panic in a poller never unwinds into SPDK. The trampoline contains it,
//! stops the poller for good (it is paused and its closure is never called
//! again; [`Poller::has_panicked`] says so) and keeps the payload for the
//! thread: the next [`SpdkThread::poll`] on this OS thread (and so
//! [`Ring::poll`](crate::Ring::poll) and
//! [`SpdkRuntime::poll`](crate::SpdkRuntime::poll), which call it) resumes
//! the panic on the caller's side, after SPDK's poll has finished. If
//! several pollers panic before that, the first payload is resumed and the
//! rest are dropped (the panic hook has already printed each). A poll made
//! from inside a poller's closure leaves the payload to the outermost poll.
//! The thread itself is unaffected: catch the resumed panic and keep polling. Under
//! [`SpdkApp`](crate::SpdkApp) the framework's reactor polls the thread, so
//! nothing resumes the payload: check [`Poller::has_panicked`].
//!
//! # Sleeping
//! A registered period-0 poller keeps a thread busy: every poll runs it, and
//! [`SpdkThread::is_idle`] is false while any poller is registered and not
//! paused. In SPDK's interrupt mode (see
//! [`interrupt_mode`](crate::interrupt_mode)) the same holds for the
//! thread's fd: SPDK keeps a period-0 poller's eventfd readable, so a loop
//! sleeping on it never sleeps; a periodic poller gets a timerfd and lets
//! the loop sleep until it is due.

use crate::error::{Errno, Error, Result};
use crate::thread::SpdkThread;
use spdk_ring_sys as sys;
use std::any::Any;
use std::cell::{Cell, UnsafeCell};
use std::ffi::{c_int, c_void, CString};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::ptr::{addr_of, NonNull};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// What a poller reports to SPDK after each run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PollerStatus {
    /// Nothing to do this time (`SPDK_POLLER_IDLE`): SPDK counts the poll
    /// as idle time.
    Idle,
    /// Did work (`SPDK_POLLER_BUSY`): SPDK counts the poll as busy time and
    /// `spdk_thread_poll` returns > 0.
    Busy,
}

impl PollerStatus {
    fn to_rc(self) -> c_int {
        match self {
            PollerStatus::Idle => sys::SPDK_POLLER_IDLE as c_int,
            PollerStatus::Busy => sys::SPDK_POLLER_BUSY as c_int,
        }
    }
}

/// The contained poller panics of one OS thread.
struct Contained {
    /// The first one not yet resumed.
    payload: Cell<Option<Box<dyn Any + Send>>>,
    /// How many poller closures are running: a poll from inside one leaves
    /// the payload to the outermost poll, so that the closure that polled
    /// is not blamed for another poller's panic.
    depth: Cell<u32>,
}

thread_local! {
    static CONTAINED: Contained = const {
        Contained {
            payload: Cell::new(None),
            depth: Cell::new(0),
        }
    };
}

/// Payloads kept in `CONTAINED`, over all OS threads: a plain load in the
/// check every poll makes (a thread-local costs a call there).
static PANICS_KEPT: AtomicUsize = AtomicUsize::new(0);

fn keep_panic(payload: Box<dyn Any + Send>) {
    CONTAINED.with(|contained| {
        let first = contained.payload.take();
        if first.is_none() {
            PANICS_KEPT.fetch_add(1, Ordering::Relaxed);
        }
        contained.payload.set(Some(first.unwrap_or(payload)));
    });
}

/// Resumes a panic a poller on this OS thread contained, if any (called by
/// [`SpdkThread::poll`] after SPDK's poll returns; not inside a poller).
#[inline]
pub(crate) fn resume_contained_panic() {
    if PANICS_KEPT.load(Ordering::Relaxed) != 0 {
        resume_kept_panic();
    }
}

#[cold]
#[inline(never)]
fn resume_kept_panic() {
    let payload = CONTAINED.with(|contained| match contained.depth.get() {
        0 => contained.payload.take(),
        _ => None,
    });
    if let Some(payload) = payload {
        PANICS_KEPT.fetch_sub(1, Ordering::Relaxed);
        resume_contained(payload);
    }
}

fn add_depth(delta: i32) {
    CONTAINED.with(|contained| {
        contained
            .depth
            .set(contained.depth.get().wrapping_add_signed(delta))
    });
}

#[cold]
#[inline(never)]
fn resume_contained(payload: Box<dyn Any + Send>) -> ! {
    resume_unwind(payload)
}

/// The flags SPDK's calls and the handle share.
struct RunState {
    /// SPDK's poller, set right after registration (before SPDK can call).
    raw: Cell<*mut sys::spdk_poller>,
    /// The closure is executing: the handle must not free it.
    running: Cell<bool>,
    /// The handle was dropped while the closure ran: the trampoline frees
    /// the registration when the closure returns.
    orphaned: Cell<bool>,
    /// The closure panicked: it is never called again.
    panicked: Cell<bool>,
}

/// The one allocation per registration. `F` is last so that the handle can
/// hold it as `Registration<dyn FnMut() -> PollerStatus>`.
struct Registration<F: ?Sized> {
    state: RunState,
    closure: UnsafeCell<F>,
}

type ErasedRegistration = Registration<dyn FnMut() -> PollerStatus>;

/// Called by SPDK with the registration as `arg`.
unsafe extern "C" fn run_poller<F: FnMut() -> PollerStatus + 'static>(arg: *mut c_void) -> c_int {
    let registration = arg as *mut Registration<F>;
    // SAFETY: arg is the registration, which lives until SPDK can no longer
    // call us (see the module docs); only the flags are borrowed, so the
    // closure's `&mut` below aliases nothing.
    let state = unsafe { &*addr_of!((*registration).state) };
    // A nested spdk_thread_poll from inside the closure must not call it
    // again (that would alias its `&mut`), nor may a panicked one run.
    if state.running.get() || state.panicked.get() {
        return PollerStatus::Idle.to_rc();
    }
    state.running.set(true);
    // SAFETY: as above; `running` proves this is the only live `&mut`.
    let closure = unsafe { UnsafeCell::raw_get(addr_of!((*registration).closure)) };
    add_depth(1);
    // SAFETY: see `closure`.
    let outcome = catch_unwind(AssertUnwindSafe(|| unsafe { (*closure)() }));
    add_depth(-1);
    state.running.set(false);
    let status = match outcome {
        Ok(status) => status,
        Err(payload) => {
            state.panicked.set(true);
            keep_panic(payload);
            PollerStatus::Idle
        }
    };
    if state.orphaned.get() {
        // SAFETY: the handle is gone and has unregistered the poller, so
        // SPDK never calls us again and nobody else frees this; `state` is
        // not used after this point.
        let free = AssertUnwindSafe(|| drop(unsafe { Box::from_raw(registration) }));
        if let Err(payload) = catch_unwind(free) {
            keep_panic(payload);
        }
    } else if state.panicked.get() {
        // SAFETY: the poller is registered (the handle is alive) and we are
        // on its thread; pausing from its own callback takes effect once we
        // return.
        unsafe { sys::spdk_poller_pause(state.raw.get()) };
    }
    status.to_rc()
}

/// A Rust closure registered as an SPDK poller on the current SPDK thread.
/// Dropping the handle unregisters it (from inside the closure too).
///
/// `!Send` and `!Sync`: SPDK pollers belong to the thread that registered
/// them. The handle keeps that thread alive.
///
/// ```no_run
/// use spdk_ring::{Poller, PollerStatus, SpdkRuntime};
/// use std::cell::Cell;
/// use std::rc::Rc;
/// use std::time::Duration;
///
/// let runtime = SpdkRuntime::builder().no_huge(true).build()?;
/// let ticks = Rc::new(Cell::new(0u64));
/// let counter = ticks.clone();
/// let stats = Poller::register(Duration::from_millis(10), move || {
///     counter.set(counter.get() + 1);
///     PollerStatus::Busy
/// })?;
/// while ticks.get() < 10 {
///     runtime.poll();
/// }
/// stats.pause();
/// drop(stats); // unregisters; the closure is freed
/// # Ok::<(), spdk_ring::Error>(())
/// ```
pub struct Poller {
    registration: NonNull<ErasedRegistration>,
    period: Duration,
    thread: SpdkThread,
}

impl std::fmt::Debug for Poller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Poller")
            .field("thread", &self.thread.name())
            .field("period", &self.period)
            .field("panicked", &self.has_panicked())
            .finish()
    }
}

impl Poller {
    /// Registers `f` on the current SPDK thread, to run on every poll of
    /// the thread when `period` is zero, else about once per `period`
    /// (rounded up to whole microseconds; it runs at the first poll after
    /// the period elapsed).
    ///
    /// Fails with [`Error::NoThread`] when the calling OS thread has no SPDK
    /// thread, and [`Error::InvalidArgument`] for a period SPDK cannot
    /// count in ticks.
    pub fn register(period: Duration, f: impl FnMut() -> PollerStatus + 'static) -> Result<Poller> {
        Poller::register_inner(None, period, f)
    }

    /// [`register`](Self::register) with a name, which SPDK shows in its
    /// poller listings (the `thread_get_pollers` RPC); SPDK truncates long
    /// names.
    pub fn register_named(
        name: &str,
        period: Duration,
        f: impl FnMut() -> PollerStatus + 'static,
    ) -> Result<Poller> {
        let name = CString::new(name)
            .map_err(|_| Error::InvalidArgument("poller name contains NUL".into()))?;
        Poller::register_inner(Some(name), period, f)
    }

    fn register_inner<F: FnMut() -> PollerStatus + 'static>(
        name: Option<CString>,
        period: Duration,
        f: F,
    ) -> Result<Poller> {
        let thread = SpdkThread::require_current()?;
        if !is_current_spdk_thread(&thread) {
            return Err(Error::NoThread);
        }
        let period_us = period_micros(period)?;
        let registration = Box::into_raw(Box::new(Registration {
            state: RunState {
                raw: Cell::new(std::ptr::null_mut()),
                running: Cell::new(false),
                orphaned: Cell::new(false),
                panicked: Cell::new(false),
            },
            closure: UnsafeCell::new(f),
        }));
        let arg = registration as *mut c_void;
        let name_ptr = name.as_ref().map_or(std::ptr::null(), |n| n.as_ptr());
        // SAFETY: this OS thread runs `thread` (checked above); SPDK copies
        // the name; arg stays valid until SPDK can no longer call run_poller
        // with it (see the module docs).
        let raw = unsafe {
            sys::spdk_poller_register_named(Some(run_poller::<F>), arg, period_us, name_ptr)
        };
        if raw.is_null() {
            // SAFETY: SPDK refused the poller, so nothing else holds arg.
            drop(unsafe { Box::from_raw(registration) });
            return Err(Error::Errno(Errno::ENOMEM));
        }
        // SAFETY: registration is live and only ours until the next poll.
        unsafe { (*registration).state.raw.set(raw) };
        let erased: *mut ErasedRegistration = registration;
        Ok(Poller {
            // SAFETY: from Box::into_raw, so not null.
            registration: unsafe { NonNull::new_unchecked(erased) },
            period,
            thread,
        })
    }

    fn state(&self) -> &RunState {
        // SAFETY: the registration lives at least as long as the handle;
        // only the flags are borrowed (the closure may be running).
        unsafe { &*addr_of!((*self.registration.as_ptr()).state) }
    }

    fn raw(&self) -> *mut sys::spdk_poller {
        self.state().raw.get()
    }

    /// Stops running the closure until [`resume`](Self::resume). Takes
    /// effect at once: SPDK never calls a pausing poller (it moves it to
    /// its paused list during the next poll, which a poll from inside the
    /// closure itself also respects).
    ///
    /// # Panics
    /// If called where the poller's SPDK thread is not the current one.
    pub fn pause(&self) {
        self.assert_on_thread("pause");
        // SAFETY: the poller is registered (the handle is alive) and this is
        // its thread; pausing twice is allowed.
        unsafe { sys::spdk_poller_pause(self.raw()) }
    }

    /// Runs the closure again after [`pause`](Self::pause) (a periodic
    /// poller waits a full period first). A poller that panicked stays
    /// stopped.
    ///
    /// # Panics
    /// If called where the poller's SPDK thread is not the current one.
    pub fn resume(&self) {
        self.assert_on_thread("resume");
        if self.has_panicked() {
            return;
        }
        // SAFETY: the poller is registered and this is its thread; resuming
        // a running poller is allowed.
        unsafe { sys::spdk_poller_resume(self.raw()) }
    }

    /// Whether the closure panicked (and so is never called again).
    pub fn has_panicked(&self) -> bool {
        self.state().panicked.get()
    }

    /// The period it was registered with (zero: every poll).
    pub fn period(&self) -> Duration {
        self.period
    }

    /// The SPDK thread it runs on.
    pub fn thread(&self) -> &SpdkThread {
        &self.thread
    }

    fn assert_on_thread(&self, what: &str) {
        assert!(
            is_current_spdk_thread(&self.thread),
            "spdk-ring: Poller::{what} called while SPDK thread {:?} is not the current one",
            self.thread.name()
        );
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        if !is_current_spdk_thread(&self.thread) {
            // SPDK would refuse to unregister, so it may still call the
            // closure: keep it alive.
            eprintln!(
                "spdk-ring: a Poller was dropped while its SPDK thread {:?} was not the current \
                 one; leaking it",
                self.thread.name()
            );
            return;
        }
        let mut raw = self.raw();
        // SAFETY: registered on this (current) thread, unregistered once.
        // Afterwards SPDK never calls run_poller with this registration.
        unsafe { sys::spdk_poller_unregister(&mut raw) };
        let state = self.state();
        if state.running.get() {
            // Dropped from inside the closure: run_poller frees it on return.
            state.orphaned.set(true);
        } else {
            // SAFETY: from Box::into_raw in register_inner; SPDK will not
            // call the closure again and it is not running.
            drop(unsafe { Box::from_raw(self.registration.as_ptr()) });
        }
    }
}

fn is_current_spdk_thread(thread: &SpdkThread) -> bool {
    // SAFETY: reads this OS thread's current-thread slot.
    unsafe { sys::spdk_get_thread() == thread.as_ptr() }
}

/// `period` in whole microseconds (rounded up), if SPDK's conversion to
/// ticks cannot overflow.
fn period_micros(period: Duration) -> Result<u64> {
    let micros = u64::try_from(period.as_nanos().div_ceil(1000)).ok();
    let ticks_hz = crate::clock::ticks_hz().max(1);
    match micros {
        Some(us) if us / 1_000_000 <= u64::MAX / ticks_hz => Ok(us),
        _ => Err(Error::InvalidArgument(format!(
            "poller period {period:?} is too long for SPDK's tick counter"
        ))),
    }
}
