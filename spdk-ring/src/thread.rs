//! SPDK threads: lightweight scheduling contexts (message queue + pollers)
//! that run wherever `spdk_thread_poll` is called. spdk-ring binds each one
//! to a single OS thread, at most one per OS thread.
//!
//! Lifetimes are enforced by ownership: an [`SpdkThread`] is a reference
//! counted handle, and descriptors, channels and rings hold one, so the SPDK
//! thread exits only after everything that must be released on it is gone.

use crate::env::{live_env, EnvToken};
use crate::error::{Errno, Error, Result};
use spdk_ring_sys as sys;
use std::cell::RefCell;
use std::ffi::{c_void, CStr, CString};
use std::marker::PhantomData;
use std::ops::Deref;
use std::os::fd::BorrowedFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::NonNull;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long dropping a thread waits for SPDK to release its resources
/// before it gives up and leaks the thread (never hangs, never frees early).
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Who initialised SPDK's thread library.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ThreadLib {
    Down,
    /// spdk-ring did, and finishes it.
    Ours,
    /// SPDK's application framework did (`SpdkApp`), and finishes it.
    Framework,
}

static THREAD_LIB: Mutex<ThreadLib> = Mutex::new(ThreadLib::Down);

/// Whether the environment's builder asked for SPDK's interrupt mode
/// (`SpdkEnvBuilder::interrupt_mode`), for [`ensure_thread_lib`].
static INTERRUPT_MODE_WANTED: AtomicBool = AtomicBool::new(false);

/// Records the environment's choice of interrupt mode; it takes effect when
/// the thread library starts (SPDK allows it only before).
pub(crate) fn want_interrupt_mode(yes: bool) {
    INTERRUPT_MODE_WANTED.store(yes, Ordering::Relaxed);
}

/// Whether SPDK runs in interrupt mode: process-wide, chosen when SPDK
/// starts (`interrupt_mode(true)` on [`SpdkRuntime`](crate::SpdkRuntime),
/// [`SpdkEnv`](crate::SpdkEnv) or [`SpdkApp`](crate::SpdkApp) builders).
/// Then every SPDK thread has an fd that is readable when it has work,
/// and [`Ring`](crate::Ring)s have one too (see the ring's
/// [event-loop docs](crate::ring#embedding-in-an-event-loop)).
pub fn interrupt_mode() -> bool {
    // SAFETY: reads a process-wide flag; valid at any time.
    unsafe { sys::spdk_interrupt_mode_is_enabled() }
}

/// Initialises SPDK's thread library once (threads are polled by their
/// creators, so no scheduler callback is installed), in interrupt mode if
/// the environment asked for it.
pub(crate) fn ensure_thread_lib() -> Result<()> {
    let mut lib = THREAD_LIB.lock().unwrap_or_else(|p| p.into_inner());
    if *lib == ThreadLib::Down {
        if INTERRUPT_MODE_WANTED.load(Ordering::Relaxed) && !interrupt_mode() {
            // SAFETY: the thread library is not initialised (checked above
            // under the lock), which is SPDK's one precondition.
            let rc = unsafe { sys::spdk_interrupt_mode_enable() };
            if rc != 0 {
                return Err(Error::from_rc(if rc < 0 { rc } else { -libc::ENOTSUP }));
            }
        }
        // SAFETY: the environment is initialised (callers hold a token);
        // no callback and no per-thread context are requested.
        let rc = unsafe { sys::spdk_thread_lib_init(None, 0) };
        if rc != 0 {
            return Err(Error::from_rc(rc));
        }
        *lib = ThreadLib::Ours;
    }
    Ok(())
}

/// Records that SPDK's framework runs the thread library.
pub(crate) fn thread_lib_is_framework(yes: bool) {
    *THREAD_LIB.lock().unwrap_or_else(|p| p.into_inner()) = if yes {
        ThreadLib::Framework
    } else {
        ThreadLib::Down
    };
}

/// Finishes the thread library if spdk-ring started it and no SPDK thread
/// is left.
pub(crate) fn finish_thread_lib() {
    let mut lib = THREAD_LIB.lock().unwrap_or_else(|p| p.into_inner());
    // SAFETY: reading a counter maintained by the thread library.
    if *lib == ThreadLib::Ours && unsafe { sys::spdk_thread_get_count() } == 0 {
        // SAFETY: every SPDK thread has been destroyed.
        unsafe { sys::spdk_thread_lib_fini() };
        *lib = ThreadLib::Down;
    }
}

thread_local! {
    /// The SPDK thread attached to this OS thread (weak: ownership decides
    /// when it exits, not this registry).
    static ATTACHED: RefCell<Weak<ThreadInner>> = const { RefCell::new(Weak::new()) };
}

/// The thread pointer as shared with [`ThreadHandle`]s on other OS threads:
/// `None` once the thread has started exiting.
struct Mailbox {
    thread: Mutex<Option<ThreadPtr>>,
}

#[derive(Clone, Copy)]
struct ThreadPtr(NonNull<sys::spdk_thread>);
// SAFETY: spdk_thread_send_msg is thread-safe; the pointer is only used for it
// while the mailbox lock proves the thread is not yet destroyed.
unsafe impl Send for ThreadPtr {}

pub(crate) struct ThreadInner {
    ptr: NonNull<sys::spdk_thread>,
    name: String,
    id: u64,
    mailbox: Arc<Mailbox>,
    /// False for threads SPDK's own framework created (`SpdkApp`): those
    /// are exited by the framework, not by us.
    owned: bool,
    _env: Arc<EnvToken>,
}

impl ThreadInner {
    /// Whether this thread waits on its fd group (interrupt mode), as
    /// opposed to running its pollers on every poll.
    fn in_interrupt_mode(&self) -> bool {
        // SAFETY: ptr is a live thread; the fd group exists exactly when
        // interrupt mode is enabled process-wide, and is only read here.
        interrupt_mode()
            && unsafe { !sys::spdk_thread_get_interrupt_fd_group(self.ptr.as_ptr()).is_null() }
    }
}

impl Drop for ThreadInner {
    fn drop(&mut self) {
        let ptr = self.ptr.as_ptr();
        *self
            .mailbox
            .thread
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = None;
        if !self.owned {
            return;
        }
        // SAFETY: ptr is a live thread created by us and bound to this OS
        // thread; exit is requested once, then the thread is polled here
        // until SPDK reports it exited (its channels and pollers released).
        unsafe {
            sys::spdk_set_thread(ptr);
            // An exiting thread in interrupt mode asks the scheduler to
            // reschedule it, and we installed none: SPDK wants threads back
            // in poll mode before they exit.
            if self.in_interrupt_mode() {
                sys::spdk_thread_set_interrupt_mode(false);
            }
            sys::spdk_thread_exit(ptr);
            let deadline = Instant::now() + EXIT_TIMEOUT;
            while !sys::spdk_thread_is_exited(ptr) {
                sys::spdk_thread_poll(ptr, 0, 0);
                if Instant::now() > deadline {
                    eprintln!(
                        "spdk-ring: SPDK thread {:?} did not exit within {EXIT_TIMEOUT:?} \
                         (something still holds an I/O channel or poller on it); leaking it",
                        self.name
                    );
                    sys::spdk_set_thread(std::ptr::null_mut());
                    return;
                }
            }
            sys::spdk_thread_destroy(ptr);
            sys::spdk_set_thread(std::ptr::null_mut());
        }
    }
}

/// An SPDK thread attached to the current OS thread. Clones share it; it
/// exits when the last clone and every object that lives on it are dropped.
///
/// `!Send` and `!Sync`: it belongs to the OS thread that attached it.
#[derive(Clone)]
pub struct SpdkThread {
    pub(crate) inner: Rc<ThreadInner>,
}

impl std::fmt::Debug for SpdkThread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpdkThread")
            .field("name", &self.inner.name)
            .field("id", &self.inner.id)
            .finish()
    }
}

impl SpdkThread {
    /// Creates an SPDK thread and binds it to the calling OS thread.
    ///
    /// Fails with [`Error::ThreadAlreadyAttached`] if this OS thread already
    /// has one, and [`Error::EnvNotInitialized`] before the environment.
    pub fn attach(name: &str) -> Result<SpdkThread> {
        let env = live_env()?;
        if let Some(existing) = SpdkThread::current() {
            return Err(Error::ThreadAlreadyAttached(existing.name().to_string()));
        }
        // SAFETY: reading the calling OS thread's current-thread slot.
        let foreign = unsafe { sys::spdk_get_thread() };
        if !foreign.is_null() {
            // SAFETY: foreign is the live thread SPDK has bound here.
            let name = unsafe { CStr::from_ptr(sys::spdk_thread_get_name(foreign)) };
            return Err(Error::ThreadAlreadyAttached(
                name.to_string_lossy().into_owned(),
            ));
        }
        ensure_thread_lib()?;
        let cname = CString::new(name)
            .map_err(|_| Error::InvalidArgument("thread name contains NUL".into()))?;
        // SAFETY: the thread library is initialised; a null cpumask means any core.
        let raw = unsafe { sys::spdk_thread_create(cname.as_ptr(), std::ptr::null()) };
        let ptr = NonNull::new(raw).ok_or(Error::Errno(Errno::ENOMEM))?;
        // SAFETY: ptr was just created and is bound to this OS thread only.
        let id = unsafe {
            sys::spdk_set_thread(ptr.as_ptr());
            sys::spdk_thread_get_id(ptr.as_ptr())
        };
        Ok(SpdkThread::register(ptr, name.to_string(), id, true, env))
    }

    /// Wraps `ptr` (bound to this OS thread) and records it as attached.
    fn register(
        ptr: NonNull<sys::spdk_thread>,
        name: String,
        id: u64,
        owned: bool,
        env: Arc<EnvToken>,
    ) -> SpdkThread {
        let inner = Rc::new(ThreadInner {
            ptr,
            name,
            id,
            mailbox: Arc::new(Mailbox {
                thread: Mutex::new(Some(ThreadPtr(ptr))),
            }),
            owned,
            _env: env,
        });
        ATTACHED.with(|a| *a.borrow_mut() = Rc::downgrade(&inner));
        SpdkThread { inner }
    }

    /// Wraps the SPDK thread that SPDK's framework runs on this OS thread,
    /// without taking over its exit.
    pub(crate) fn adopt_framework_thread() -> Result<SpdkThread> {
        if let Some(existing) = SpdkThread::current() {
            return Ok(existing.thread.clone());
        }
        let env = live_env()?;
        // SAFETY: reading the current-thread slot of this OS thread.
        let ptr = NonNull::new(unsafe { sys::spdk_get_thread() }).ok_or(Error::NoThread)?;
        // SAFETY: ptr is the live thread the framework is running now.
        let (name, id) = unsafe {
            (
                CStr::from_ptr(sys::spdk_thread_get_name(ptr.as_ptr()))
                    .to_string_lossy()
                    .into_owned(),
                sys::spdk_thread_get_id(ptr.as_ptr()),
            )
        };
        Ok(SpdkThread::register(ptr, name, id, false, env))
    }

    /// The SPDK thread attached to this OS thread by spdk-ring, if any.
    pub fn current() -> Option<CurrentThread> {
        ATTACHED
            .with(|a| a.borrow().upgrade())
            .map(|inner| CurrentThread {
                thread: SpdkThread { inner },
                _not_send: PhantomData,
            })
    }

    /// Like [`current`](Self::current), as an error when there is none.
    pub(crate) fn require_current() -> Result<SpdkThread> {
        SpdkThread::current()
            .map(|c| c.thread)
            .ok_or(Error::NoThread)
    }

    /// Runs `f` on a new OS thread with its own SPDK thread, which exits
    /// cleanly when `f` returns (or panics).
    pub fn spawn<F, T>(name: &str, f: F) -> Result<JoinHandle<T>>
    where
        F: FnOnce(&SpdkThread) -> T + Send + 'static,
        T: Send + 'static,
    {
        SpdkThread::spawn_with_setup(name, || Ok(()), f)
    }

    /// [`spawn`](Self::spawn), running `setup` on the new OS thread before
    /// its SPDK thread is attached (pinning, in `cores`).
    pub(crate) fn spawn_with_setup<F, T>(
        name: &str,
        setup: impl FnOnce() -> Result<()> + Send + 'static,
        f: F,
    ) -> Result<JoinHandle<T>>
    where
        F: FnOnce(&SpdkThread) -> T + Send + 'static,
        T: Send + 'static,
    {
        live_env()?;
        let thread_name = name.to_string();
        let os = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                setup()?;
                let thread = SpdkThread::attach(&thread_name)?;
                Ok(f(&thread))
            })
            .map_err(|e| Error::Errno(Errno(e.raw_os_error().unwrap_or(libc::EAGAIN))))?;
        Ok(JoinHandle { os })
    }

    /// Runs queued messages and pollers once. Returns > 0 if work was done.
    ///
    /// # Panics
    /// Resumes the panic of a [`Poller`](crate::Poller) on this OS thread
    /// that panicked during this or an earlier poll (contained while SPDK
    /// ran it; see [`poller`](crate::poller)).
    pub fn poll(&self) -> i32 {
        // SAFETY: the thread is alive (self holds it) and bound to this OS thread.
        let rc = unsafe { sys::spdk_thread_poll(self.inner.ptr.as_ptr(), 0, 0) };
        crate::poller::resume_contained_panic();
        rc
    }

    /// Polls until `done()` holds or `timeout` passes.
    pub fn poll_until(&self, timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if done() {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            self.poll();
        }
    }

    /// The thread's interrupt fd in interrupt mode (see [`interrupt_mode`]):
    /// an epoll fd, level-triggered, readable when [`poll`](Self::poll)
    /// has work to run (a message, a due timed poller, an fd such as the
    /// AIO bdev's completion eventfd). `None` in poll mode.
    ///
    /// A [`Ring`](crate::Ring) has an fd of its own that nests this one;
    /// use this one for a thread without a ring.
    pub fn interrupt_fd(&self) -> Option<BorrowedFd<'_>> {
        if !self.inner.in_interrupt_mode() {
            return None;
        }
        // SAFETY: the thread is alive and has an fd group (checked above).
        let fd = unsafe { sys::spdk_thread_get_interrupt_fd(self.inner.ptr.as_ptr()) };
        // SAFETY: the fd group's epoll fd stays open until the thread is
        // destroyed, which `self` (borrowed for the fd's lifetime) prevents.
        (fd >= 0).then(|| unsafe { BorrowedFd::borrow_raw(fd) })
    }

    /// When SPDK's earliest timed poller on this thread is due, in ticks
    /// of [`clock::ticks`](crate::clock::ticks); `None` without one.
    pub(crate) fn next_poller_due_ticks(&self) -> Option<u64> {
        // SAFETY: live thread, read on the OS thread it is bound to.
        let due = unsafe { sys::spdk_thread_next_poller_expiration(self.inner.ptr.as_ptr()) };
        (due != 0).then_some(due)
    }

    /// Whether a poller runs on every poll (period 0, not paused): then
    /// the thread always has work, in poll mode.
    pub(crate) fn has_active_pollers(&self) -> bool {
        // SAFETY: live thread.
        unsafe { sys::spdk_thread_has_active_pollers(self.inner.ptr.as_ptr()) != 0 }
    }

    /// True when no message is queued and no poller is active.
    pub fn is_idle(&self) -> bool {
        // SAFETY: live thread.
        unsafe { sys::spdk_thread_is_idle(self.inner.ptr.as_ptr()) }
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// SPDK's numeric id of this thread.
    pub fn id(&self) -> u64 {
        self.inner.id
    }

    /// A `Send + Sync` handle for sending work to this thread from anywhere.
    pub fn handle(&self) -> ThreadHandle {
        ThreadHandle {
            mailbox: self.inner.mailbox.clone(),
            name: self.inner.name.clone(),
        }
    }

    /// Number of SPDK threads in the process.
    pub fn count() -> u32 {
        // SAFETY: reads a counter; valid whether or not the library is up.
        unsafe { sys::spdk_thread_get_count() }
    }

    pub fn as_ptr(&self) -> *mut sys::spdk_thread {
        self.inner.ptr.as_ptr()
    }
}

/// The SPDK thread of the calling OS thread, from [`SpdkThread::current`].
/// Holding it keeps the thread alive, so it can never dangle.
pub struct CurrentThread {
    thread: SpdkThread,
    _not_send: PhantomData<*mut ()>,
}

impl Deref for CurrentThread {
    type Target = SpdkThread;
    fn deref(&self) -> &SpdkThread {
        &self.thread
    }
}

/// Sends closures to an SPDK thread from any OS thread.
#[derive(Clone)]
pub struct ThreadHandle {
    mailbox: Arc<Mailbox>,
    name: String,
}

type Message = Box<dyn FnOnce() + Send + 'static>;

unsafe extern "C" fn run_message(ctx: *mut c_void) {
    // SAFETY: ctx came from Box::into_raw in ThreadHandle::send and SPDK
    // delivers each message exactly once.
    let message = unsafe { Box::from_raw(ctx as *mut Message) };
    if catch_unwind(AssertUnwindSafe(message)).is_err() {
        eprintln!("spdk-ring: a message sent to an SPDK thread panicked; the panic was contained");
    }
}

impl ThreadHandle {
    /// Queues `f` to run on the thread during one of its polls. Fails with
    /// `ESHUTDOWN`-like [`Errno::ENODEV`] once the thread is exiting.
    pub fn send(&self, f: impl FnOnce() + Send + 'static) -> Result<()> {
        let guard = self
            .mailbox
            .thread
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let Some(ThreadPtr(ptr)) = *guard else {
            return Err(Error::Errno(Errno::ENODEV));
        };
        let message: Box<Message> = Box::new(Box::new(f));
        let ctx = Box::into_raw(message) as *mut c_void;
        // SAFETY: the lock proves the thread is not destroyed; send_msg is
        // thread-safe and takes ownership of ctx on success.
        let rc = unsafe { sys::spdk_thread_send_msg(ptr.as_ptr(), Some(run_message), ctx) };
        if rc != 0 {
            // SAFETY: SPDK rejected the message, so ctx is still ours.
            drop(unsafe { Box::from_raw(ctx as *mut Message) });
            return Err(Error::from_rc(rc));
        }
        Ok(())
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Waits for a thread started by [`SpdkThread::spawn`].
pub struct JoinHandle<T> {
    os: std::thread::JoinHandle<Result<T>>,
}

impl<T> JoinHandle<T> {
    /// The closure's value; its panic is resumed here; attaching errors are returned.
    pub fn join(self) -> Result<T> {
        match self.os.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    pub fn is_finished(&self) -> bool {
        self.os.is_finished()
    }
}
