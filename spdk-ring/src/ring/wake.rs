//! The ring in someone else's event loop (interrupt mode): its fd, what
//! makes the fd readable, and [`Ring::next_timeout`]. See the module docs'
//! section [Embedding in an event loop](super#embedding-in-an-event-loop).
//!
//! A ring built while SPDK runs in interrupt mode owns an epoll set, its
//! fd, which nests four level-triggered fds:
//!
//! | fd | readable while |
//! |----|----------------|
//! | the SPDK thread's fd group | the thread has work: a message, a due timed poller, a bdev's completion fd (the AIO bdev's eventfd) |
//! | `work`, an eventfd of the ring's | the CQ holds completions, or entries were pushed and not yet handed to SPDK |
//! | `remote`, an eventfd | another OS thread called [`RingWaker::wake`] and no poll has run since |
//! | `timer`, a timerfd | the earliest Timeout/LinkTimeout is due, or NVMe qpairs (no fd over TCP) are due a poll |
//!
//! The ring keeps `work` and `timer` true after every `poll`, after a
//! drained CQ and on a push into a quiet ring; nothing else writes them.
//! A push into a quiet ring wakes `work`. So that the lane's push path
//! needs no test for it, a quiet fd keeps the ring's `core_idle` false:
//! that push takes the core's path, which tests `fd_quiet`. In poll mode
//! none of this exists: the cost is that test on the core's push path,
//! `&& !fd_quiet` where `core_idle` is refreshed after a poll, and a test
//! of an empty `Option` in `poll` and at the end of a reap loop.

use super::driver::NvmePollNeed;
use super::Ring;
use crate::error::{Errno, Error, Result};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How often a ring in interrupt mode polls its NVMe targets while I/O or
/// admin commands are in flight on them. NVMe over TCP has no completion
/// fd a ring can wait on (SPDK's `bdev_nvme` answers `ENOTSUP` for it
/// too), so the ring's timerfd ticks at this period instead: such I/O
/// completes up to this much later than in poll mode, and the ring wakes
/// its loop up to 10 000 times a second while it has NVMe I/O in flight.
pub const NVME_INTERRUPT_POLL_PERIOD: Duration = Duration::from_micros(100);

/// How often a ring in interrupt mode polls NVMe targets without I/O, for
/// the admin queue's keep-alive (SPDK's default keep-alive timeout is 10 s).
pub const NVME_KEEP_ALIVE_POLL_PERIOD: Duration = Duration::from_secs(1);

/// What [`AsFd`]/[`AsRawFd`] say when a ring has no fd.
const NO_FD_IN_POLL_MODE: &str = "spdk-ring: a ring has an fd only in interrupt mode \
    (build the runtime with interrupt_mode(true)); Ring::fd() returns None in poll mode";

/// The fds of a ring in interrupt mode.
pub(crate) struct RingFd {
    epoll: OwnedFd,
    work: OwnedFd,
    timer: OwnedFd,
    /// What `timer` is armed for now, so settling only calls into the
    /// kernel when that changes.
    timer_state: TimerState,
    waker: Arc<RingWaker>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimerState {
    Off,
    /// Once, at a deadline of the ring's queue (its nanosecond clock).
    At(u64),
    /// Periodically (NVMe qpairs need polling).
    Every(Duration),
}

/// Makes a ring's fd readable from any OS thread (`Send + Sync`), so that
/// a loop sleeping on it calls `poll`: what other rings' forwarded entries,
/// returned completions and messages use (`forward/mod.rs`,
/// `Shared::notify_target`). The ring's `poll` consumes the wake before it
/// looks for the work the waker left.
pub(crate) struct RingWaker {
    remote: OwnedFd,
    /// Set after every write to `remote`: the ring reads `remote` only when
    /// it sees this, so a poll without a wake costs one load.
    pending: AtomicBool,
}

impl RingWaker {
    /// Wakes the ring: its fd is readable until its next `poll` has run.
    /// Leave the work where that poll looks before calling this.
    pub(crate) fn wake(&self) {
        eventfd_signal(self.remote.as_fd());
        // Stored after the write: a poll that clears the flag then reads
        // the eventfd consumes every write whose flag it cleared.
        self.pending.store(true, Ordering::SeqCst);
    }

    /// On the ring's thread, before a poll looks for work.
    fn consume(&self) {
        if self.pending.load(Ordering::Relaxed) && self.pending.swap(false, Ordering::SeqCst) {
            eventfd_clear(self.remote.as_fd());
        }
    }
}

impl RingFd {
    /// What other threads wake this ring's fd with.
    pub(crate) fn waker(&self) -> Arc<RingWaker> {
        self.waker.clone()
    }

    /// The epoll set over the SPDK thread's fd and the ring's own fds.
    pub(crate) fn new(thread_fd: BorrowedFd<'_>) -> Result<Box<RingFd>> {
        // SAFETY: plain syscalls creating new fds, each owned at once.
        let (epoll, work, remote, timer) = unsafe {
            (
                owned(libc::epoll_create1(libc::EPOLL_CLOEXEC))?,
                owned(libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC))?,
                owned(libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC))?,
                owned(libc::timerfd_create(
                    libc::CLOCK_MONOTONIC,
                    libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
                ))?,
            )
        };
        for fd in [
            thread_fd.as_raw_fd(),
            work.as_raw_fd(),
            remote.as_raw_fd(),
            timer.as_raw_fd(),
        ] {
            // Level-triggered (no EPOLLET): readable for as long as it is.
            let mut event = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: fd as u64,
            };
            // SAFETY: both fds are open; event is a valid epoll_event.
            check(unsafe {
                libc::epoll_ctl(epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut event)
            })?;
        }
        Ok(Box::new(RingFd {
            epoll,
            work,
            timer,
            timer_state: TimerState::Off,
            waker: Arc::new(RingWaker {
                remote,
                pending: AtomicBool::new(false),
            }),
        }))
    }

    /// Arms `timer` for `want` unless it already is; a periodic timer's
    /// expirations are read, so it is readable only once per period.
    fn set_timer(&mut self, want: TimerState, now_ns: u64) {
        let rearm = match (want, self.timer_state) {
            (TimerState::Every(_), current) if current == want => {
                eventfd_clear(self.timer.as_fd()); // timerfds read like eventfds
                false
            }
            // Due already: armed again so that it is readable now.
            (TimerState::At(due), _) if due <= now_ns => true,
            (_, current) => current != want,
        };
        if !rearm {
            return;
        }
        let spec = |d: Duration| libc::timespec {
            tv_sec: d.as_secs() as libc::time_t,
            tv_nsec: d.subsec_nanos() as libc::c_long,
        };
        let zero = Duration::ZERO;
        let (value, interval) = match want {
            TimerState::Off => (zero, zero),
            // A zero value disarms: due deadlines get one nanosecond.
            TimerState::At(due) => (
                Duration::from_nanos(due.saturating_sub(now_ns).max(1)),
                zero,
            ),
            TimerState::Every(period) => (period, period),
        };
        let new = libc::itimerspec {
            it_interval: spec(interval),
            it_value: spec(value),
        };
        // SAFETY: timer is our open timerfd; new is a valid itimerspec.
        // Arming or disarming also resets its expiration count.
        let rc =
            unsafe { libc::timerfd_settime(self.timer.as_raw_fd(), 0, &new, std::ptr::null_mut()) };
        debug_assert_eq!(rc, 0, "timerfd_settime on our own timerfd");
        self.timer_state = want;
    }
}

impl Ring {
    /// The ring's fd in interrupt mode (`None` in poll mode): register it
    /// for `EPOLLIN` in your loop (level-triggered) and call
    /// [`poll`](Ring::poll) when it is readable. It is readable exactly
    /// while `poll` (or reaping) can make progress: SPDK work on the
    /// thread, completions in the CQ, entries pushed and not yet handed to
    /// SPDK, a due Timeout, NVMe qpairs due a poll, or a wake from another
    /// thread. See [Embedding in an event loop](crate::ring#embedding-in-an-event-loop).
    ///
    /// [`AsFd`] and [`AsRawFd`] give the same fd, and panic in poll mode.
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.wake.as_ref().map(|w| w.epoll.as_fd())
    }

    /// How long the caller may go without calling [`poll`](Ring::poll)
    /// if nothing else happens: `Some(ZERO)` when completions are ready or
    /// entries wait to be handed to SPDK (and, in poll mode, while SPDK has
    /// pollers that run on every poll, which is how poll mode completes
    /// I/O), the time to the earliest Timeout/LinkTimeout deadline or SPDK
    /// timed poller, [`NVME_INTERRUPT_POLL_PERIOD`] while NVMe I/O is in
    /// flight in interrupt mode, or `None` when only an event can bring
    /// work. A loop passes it to `epoll_wait` beside the ring's fd, rounded
    /// up to the call's resolution.
    ///
    /// In interrupt mode the fd already covers timed work (the ring arms a
    /// timerfd, SPDK's timed pollers have theirs), so `next_timeout` is a
    /// convenience there; it does not ask the kernel whether the fd is
    /// readable (that is what `epoll_wait` is for).
    pub fn next_timeout(&self) -> Option<Duration> {
        let interrupt = self.wake.is_some();
        let ready = self.cq_len() > 0
            || if interrupt {
                !self.fd_quiet
            } else {
                self.sq_len() > 0 || self.thread.has_active_pollers()
            };
        if ready {
            return Some(Duration::ZERO);
        }
        let earliest = |a: Option<Duration>, b: Duration| Some(a.map_or(b, |a| a.min(b)));
        let mut next = None;
        if let Some(due) = self.queue.next_deadline() {
            next = earliest(
                next,
                Duration::from_nanos(due.saturating_sub(self.now_ns())),
            );
        }
        if let Some(due) = self.thread.next_poller_due_ticks() {
            let ticks = due.saturating_sub(crate::clock::ticks());
            let ns = u128::from(ticks) * 1_000_000_000 / u128::from(self.ticks_hz);
            next = earliest(next, Duration::from_nanos(ns as u64));
        }
        match self.driver.nvme_poll_need() {
            NvmePollNeed::None => {}
            NvmePollNeed::InFlight if !interrupt => return Some(Duration::ZERO),
            NvmePollNeed::InFlight => next = earliest(next, NVME_INTERRUPT_POLL_PERIOD),
            NvmePollNeed::KeepAlive => next = earliest(next, NVME_KEEP_ALIVE_POLL_PERIOD),
        }
        next
    }

    /// `push` into a quiet ring (always through the core: a quiet fd keeps
    /// `core_idle` false): the entry waits for `poll`, so the fd must say so.
    #[cold]
    #[inline(never)]
    pub(super) fn wake_fd_for_push(&mut self) {
        if let Some(w) = &self.wake {
            eventfd_signal(w.work.as_fd());
            self.fd_quiet = false;
        }
    }

    /// `poll` in interrupt mode: consumes wakes from other threads before
    /// the poll looks for work, runs the poll, hands SPDK what the poll's
    /// completions made room for, then sets the fd to what is left.
    #[inline(never)]
    pub(super) fn poll_with_fd(&mut self) -> usize {
        let Some(wake) = self.wake.take() else {
            return self.poll();
        };
        wake.waker.consume();
        // Without `wake`, this is the poll-mode poll.
        self.poll();
        if self.sq_len() > 0 {
            self.submit();
        }
        self.wake = Some(wake);
        self.settle_fd();
        if self.fd_quiet {
            self.core_idle = false;
        }
        self.cq_len()
    }

    /// Makes `work` readable exactly while the loop has something to do,
    /// and arms `timer` for what only time brings.
    fn settle_fd(&mut self) {
        // Entries still in the SQ after a submit wait for room that an
        // in-flight completion (an event on the thread's fd) makes; with
        // nothing in flight, nothing would wake the loop for them.
        let busy = self.cq_len() > 0
            || (self.sq_len() > 0 && self.in_flight() == 0)
            || self.forwarding.has_leftover();
        let timer = match self.driver.nvme_poll_need() {
            NvmePollNeed::InFlight => TimerState::Every(NVME_INTERRUPT_POLL_PERIOD),
            need => match self.queue.next_deadline() {
                Some(due)
                    if need == NvmePollNeed::None
                        || due.saturating_sub(self.now_ns())
                            < NVME_KEEP_ALIVE_POLL_PERIOD.as_nanos() as u64 =>
                {
                    TimerState::At(due)
                }
                _ if need == NvmePollNeed::KeepAlive => {
                    TimerState::Every(NVME_KEEP_ALIVE_POLL_PERIOD)
                }
                _ => TimerState::Off,
            },
        };
        let now_ns = if matches!(timer, TimerState::At(_)) {
            self.now_ns()
        } else {
            0
        };
        let quiet = self.fd_quiet;
        let Some(w) = self.wake.as_mut() else { return };
        if busy && quiet {
            eventfd_signal(w.work.as_fd());
        } else if !busy && !quiet {
            eventfd_clear(w.work.as_fd());
        }
        self.fd_quiet = !busy;
        w.set_timer(timer, now_ns);
    }

    /// The end of a reap loop in interrupt mode: an empty CQ and SQ leave
    /// the loop nothing to do (entries still in the SQ are settled by the
    /// next poll).
    #[inline(never)]
    pub(super) fn quiet_fd_if_drained(&mut self) {
        if !self.fd_quiet && self.sq_len() == 0 && !self.forwarding.has_leftover() {
            if let Some(w) = &self.wake {
                eventfd_clear(w.work.as_fd());
                self.fd_quiet = true;
            }
        }
        if self.fd_quiet {
            self.core_idle = false;
        }
    }

    /// `submit_and_wait` in interrupt mode: sleeps on the fd until it is
    /// readable, the next timeout, or `limit`.
    pub(super) fn wait_for_fd(&self, limit: Duration) {
        let Some(fd) = self.fd() else { return };
        let wait = self.next_timeout().map_or(limit, |t| t.min(limit));
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // Rounded up: a loop that wakes early only polls again.
        let ms = wait.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32;
        // SAFETY: pfd is one valid pollfd on an open fd.
        unsafe { libc::poll(&mut pfd, 1, ms) };
    }
}

impl AsFd for Ring {
    /// The ring's fd (see [`Ring::fd`]).
    ///
    /// # Panics
    /// In poll mode, where a ring has no fd.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd().expect(NO_FD_IN_POLL_MODE)
    }
}

impl AsRawFd for Ring {
    /// The ring's fd (see [`Ring::fd`]).
    ///
    /// # Panics
    /// In poll mode, where a ring has no fd.
    fn as_raw_fd(&self) -> RawFd {
        self.as_fd().as_raw_fd()
    }
}

/// Takes ownership of a new fd, or the errno of the call that failed.
///
/// # Safety
/// `fd`, if not negative, is a new fd nothing else owns.
unsafe fn owned(fd: libc::c_int) -> Result<OwnedFd> {
    check(fd)?;
    // SAFETY: the caller's promise.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn check(rc: libc::c_int) -> Result<libc::c_int> {
    if rc < 0 {
        let errno = std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO);
        return Err(Error::Errno(Errno::from_rc(errno)));
    }
    Ok(rc)
}

/// Adds one to an eventfd (readable until read). Cannot fail short of the
/// counter's overflow, when the fd is readable anyway.
fn eventfd_signal(fd: BorrowedFd<'_>) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a live u64 to an open eventfd.
    unsafe { libc::write(fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
}

/// Reads an eventfd (or a timerfd) to zero; `EAGAIN` when it already is.
fn eventfd_clear(fd: BorrowedFd<'_>) {
    let mut count: u64 = 0;
    // SAFETY: reads 8 bytes into a live u64 from an open fd.
    unsafe { libc::read(fd.as_raw_fd(), (&mut count as *mut u64).cast(), 8) };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waker() -> RingWaker {
        // SAFETY: a new eventfd, owned at once.
        let remote = unsafe { owned(libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)) };
        RingWaker {
            remote: remote.unwrap(),
            pending: AtomicBool::new(false),
        }
    }

    fn readable(fd: BorrowedFd<'_>) -> bool {
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd on an open fd.
        unsafe { libc::poll(&mut pfd, 1, 0) == 1 }
    }

    #[test]
    fn interrupt_waker_makes_the_fd_readable_until_a_poll_consumes_it() {
        let w = waker();
        assert!(!readable(w.remote.as_fd()));
        w.wake();
        w.wake();
        assert!(readable(w.remote.as_fd()));
        w.consume();
        assert!(!readable(w.remote.as_fd()));
        w.consume();
        assert!(!readable(w.remote.as_fd()));
    }

    #[test]
    fn interrupt_waker_from_other_threads_never_leaves_a_count_without_its_flag() {
        // The failure this rules out: an fd readable for ever with the flag
        // clear (a consume that never reads it), which would spin a loop.
        let w = Arc::new(waker());
        let wakers: Vec<_> = (0..4)
            .map(|_| {
                let w = w.clone();
                std::thread::spawn(move || (0..2000).for_each(|_| w.wake()))
            })
            .collect();
        while !wakers.iter().all(|t| t.is_finished()) {
            w.consume();
        }
        wakers.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(readable(w.remote.as_fd()), w.pending.load(Ordering::SeqCst));
        w.consume();
        assert!(!readable(w.remote.as_fd()));
    }
}
