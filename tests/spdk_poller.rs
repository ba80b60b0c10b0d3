//! SPDK integration tests of `Poller`: every-poll and periodic pollers,
//! pause/resume, unregistering from outside and from inside the closure,
//! contained panics, busy/idle reaching SPDK's thread statistics, and no
//! allocation per call (a counting global allocator, so its own binary).
//!
//! Each test attaches its own SPDK thread, so no other poller runs on it.

#[cfg(spdk)]
#[path = "common/mod.rs"]
mod common;

#[path = "common/skipped.rs"]
#[macro_use]
mod skipped;
report_skipped_without_spdk!();

#[cfg(spdk)]
#[path = "common/counting.rs"]
mod counting;

#[cfg(spdk)]
mod support {
    pub use super::common::*;
    pub use spdk_ring::{Error, Poller, PollerStatus, SpdkThread};
    pub use std::cell::{Cell, RefCell};
    pub use std::rc::Rc;
    pub use std::time::{Duration, Instant};

    /// A fresh SPDK thread on this test's OS thread.
    pub fn thread(name: &str) -> SpdkThread {
        fixture();
        SpdkThread::attach(name).unwrap()
    }

    /// A shared run counter and a closure that bumps it.
    pub fn counting(status: PollerStatus) -> (Rc<Cell<u32>>, impl FnMut() -> PollerStatus) {
        let runs = Rc::new(Cell::new(0));
        let counter = runs.clone();
        (runs, move || {
            counter.set(counter.get() + 1);
            status
        })
    }

    /// Counts its own drops: captured by a closure, it tells how many times
    /// the closure's state was dropped.
    pub struct DropCounter(pub Rc<Cell<u32>>);
    impl Drop for DropCounter {
        fn drop(&mut self) {
            self.0.set(self.0.get() + 1);
        }
    }

    /// Polls for `time`, returning how many polls ran.
    pub fn poll_for(thread: &SpdkThread, time: Duration) -> u32 {
        let deadline = Instant::now() + time;
        let mut polls = 0;
        while Instant::now() < deadline {
            thread.poll();
            polls += 1;
        }
        polls
    }

    pub fn thread_stats() -> spdk_ring::sys::spdk_thread_stats {
        let mut stats = spdk_ring::sys::spdk_thread_stats::default();
        // SAFETY: the calling OS thread has a current SPDK thread; stats is
        // a valid out-pointer.
        let rc = unsafe { spdk_ring::sys::spdk_thread_get_stats(&mut stats) };
        assert_eq!(rc, 0);
        stats
    }
}

#[cfg(spdk)]
#[test]
fn poller_with_period_zero_runs_on_every_poll() {
    use support::*;
    let thread = thread("poller-every");
    let (runs, tick) = counting(PollerStatus::Busy);
    let poller = Poller::register(Duration::ZERO, tick).unwrap();
    assert_eq!(runs.get(), 0, "registering does not run it");
    for expected in 1..=50 {
        assert!(thread.poll() > 0, "a busy poller makes the poll busy");
        assert_eq!(runs.get(), expected);
    }
    assert_eq!(poller.period(), Duration::ZERO);
    assert!(
        !thread.is_idle(),
        "a registered poller keeps the thread busy"
    );
    drop(poller);
    drop(thread);
}

#[cfg(spdk)]
#[test]
fn poller_with_10ms_period_runs_about_10_times_in_100ms() {
    use support::*;
    let thread = thread("poller-period");
    let (runs, tick) = counting(PollerStatus::Idle);
    let poller = Poller::register_named("ten-ms", Duration::from_millis(10), tick).unwrap();
    let polls = poll_for(&thread, Duration::from_millis(100));
    let runs = runs.get();
    // Bounded, not timed: the machine may deschedule this thread.
    assert!((3..=20).contains(&runs), "{runs} runs in 100 ms");
    assert!(
        polls > runs * 10,
        "{polls} polls: it ran far less than every poll"
    );
    drop(poller);
}

#[cfg(spdk)]
#[test]
fn poller_pause_stops_it_and_resume_restarts_it() {
    use support::*;
    let thread = thread("poller-pause");
    let (runs, tick) = counting(PollerStatus::Busy);
    let poller = Poller::register(Duration::ZERO, tick).unwrap();
    for _ in 0..5 {
        thread.poll();
    }
    assert_eq!(runs.get(), 5);

    poller.pause();
    assert!(
        !thread.is_idle(),
        "SPDK moves a pausing poller at its next poll"
    );
    for _ in 0..5 {
        thread.poll();
    }
    assert_eq!(runs.get(), 5, "a paused poller does not run");
    assert!(thread.is_idle(), "a paused poller leaves the thread idle");
    poller.pause(); // pausing twice is harmless

    poller.resume();
    for _ in 0..5 {
        thread.poll();
    }
    assert_eq!(runs.get(), 10, "a resumed poller runs on every poll again");
    assert!(!thread.is_idle());

    // Paused and resumed before SPDK finished pausing it: it never stops.
    poller.pause();
    poller.resume();
    thread.poll();
    assert_eq!(runs.get(), 11);
}

#[cfg(spdk)]
#[test]
fn poller_periodic_pause_and_resume() {
    use support::*;
    let thread = thread("poller-pause-timed");
    let (runs, tick) = counting(PollerStatus::Idle);
    let poller = Poller::register(Duration::from_millis(1), tick).unwrap();
    assert!(thread.poll_until(WAIT, || runs.get() >= 2));
    poller.pause();
    let paused_at = runs.get();
    poll_for(&thread, Duration::from_millis(30));
    assert_eq!(
        runs.get(),
        paused_at,
        "a paused periodic poller does not run"
    );
    assert!(thread.is_idle());
    poller.resume();
    assert!(thread.poll_until(WAIT, || runs.get() >= paused_at + 2));
}

#[cfg(spdk)]
#[test]
fn poller_dropped_outside_its_callback_stops_and_frees_its_state_once() {
    use support::*;
    let thread = thread("poller-drop-out");
    for period in [Duration::ZERO, Duration::from_micros(100)] {
        let drops = Rc::new(Cell::new(0));
        let state = DropCounter(drops.clone());
        let runs = Rc::new(Cell::new(0));
        let counter = runs.clone();
        let poller = Poller::register(period, move || {
            let _keep = &state;
            counter.set(counter.get() + 1);
            PollerStatus::Busy
        })
        .unwrap();
        assert!(thread.poll_until(WAIT, || runs.get() >= 3));
        drop(poller);
        assert_eq!(drops.get(), 1, "dropping the handle frees the closure");
        let ran = runs.get();
        poll_for(&thread, Duration::from_millis(5));
        assert_eq!(runs.get(), ran, "{period:?}: it never runs again");
        assert_eq!(drops.get(), 1, "freed exactly once");
        assert_eq!(
            Rc::strong_count(&runs),
            1,
            "the closure's captures are gone"
        );
        assert!(thread.is_idle());
    }
}

#[cfg(spdk)]
#[test]
fn poller_dropped_inside_its_own_callback_stops_and_frees_its_state_once() {
    use support::*;
    let thread = thread("poller-drop-in");
    for period in [Duration::ZERO, Duration::from_micros(100)] {
        let drops = Rc::new(Cell::new(0));
        let state = DropCounter(drops.clone());
        let slot: Rc<RefCell<Option<Poller>>> = Rc::new(RefCell::new(None));
        let own = slot.clone();
        let runs = Rc::new(Cell::new(0));
        let counter = runs.clone();
        let seen_during_drop = Rc::new(Cell::new(u32::MAX));
        let seen = seen_during_drop.clone();
        let drops_seen = drops.clone();
        let poller = Poller::register(period, move || {
            let _keep = &state;
            counter.set(counter.get() + 1);
            if counter.get() == 3 {
                // Unregisters itself; the closure (and `state`) must
                // survive until it returns.
                drop(own.borrow_mut().take());
                seen.set(drops_seen.get());
            }
            PollerStatus::Busy
        })
        .unwrap();
        *slot.borrow_mut() = Some(poller);
        assert!(thread.poll_until(WAIT, || runs.get() >= 3));
        assert!(slot.borrow().is_none());
        assert_eq!(seen_during_drop.get(), 0, "not freed while it ran");
        assert_eq!(drops.get(), 1, "freed when the callback returned");
        poll_for(&thread, Duration::from_millis(5));
        assert_eq!(runs.get(), 3, "{period:?}: it never runs again");
        assert_eq!(drops.get(), 1, "freed exactly once");
        assert_eq!(
            Rc::strong_count(&slot),
            1,
            "the closure's captures are gone"
        );
        assert!(thread.is_idle());
    }
}

#[cfg(spdk)]
#[test]
fn poller_panic_is_reported_and_the_thread_keeps_working() {
    use std::panic::{catch_unwind, AssertUnwindSafe};
    use support::*;
    let thread = thread("poller-panic");
    let drops = Rc::new(Cell::new(0));
    let state = DropCounter(drops.clone());
    let calls = Rc::new(Cell::new(0));
    let counter = calls.clone();
    let faulty = Poller::register(Duration::ZERO, move || {
        let _keep = &state;
        counter.set(counter.get() + 1);
        if counter.get() == 2 {
            panic!("poller boom");
        }
        PollerStatus::Busy
    })
    .unwrap();
    let (healthy_runs, tick) = counting(PollerStatus::Busy);
    let healthy = Poller::register(Duration::ZERO, tick).unwrap();

    thread.poll();
    let resumed = catch_unwind(AssertUnwindSafe(|| thread.poll()))
        .expect_err("the poll during which the poller panicked resumes the panic");
    assert_eq!(resumed.downcast_ref::<&str>(), Some(&"poller boom"));
    assert!(faulty.has_panicked());
    assert!(!healthy.has_panicked());

    // The thread keeps working: the other poller and messages run, and
    // the panicked one is never called again, even when resumed.
    faulty.resume();
    let message_ran = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = message_ran.clone();
    thread
        .handle()
        .send(move || flag.store(true, std::sync::atomic::Ordering::SeqCst))
        .unwrap();
    let before = healthy_runs.get();
    for _ in 0..10 {
        thread.poll();
    }
    assert_eq!(calls.get(), 2, "a panicked poller is not called again");
    assert_eq!(healthy_runs.get(), before + 10);
    assert!(message_ran.load(std::sync::atomic::Ordering::SeqCst));
    drop(healthy);
    thread.poll(); // SPDK removes an unregistered poller at its next poll
    assert!(thread.is_idle(), "the panicked poller was paused");
    assert_eq!(drops.get(), 0);
    drop(faulty);
    assert_eq!(drops.get(), 1, "its state is freed once, with the handle");
}

#[cfg(spdk)]
#[test]
fn poller_panic_during_a_poll_nested_in_another_poller_blames_only_the_panicking_one() {
    use std::panic::{catch_unwind, AssertUnwindSafe};
    use support::*;
    let thread = thread("poller-nested-panic");
    let faulty = Poller::register(Duration::ZERO, || panic!("nested boom")).unwrap();
    // A timed poller leaves SPDK's timer tree while it runs, so SPDK
    // supports a poll from inside it.
    let inner_thread = thread.clone();
    let nested_polls = Rc::new(Cell::new(0));
    let counter = nested_polls.clone();
    let outer = Poller::register(Duration::from_micros(1), move || {
        inner_thread.poll();
        counter.set(counter.get() + 1);
        PollerStatus::Busy
    })
    .unwrap();
    let resumed = catch_unwind(AssertUnwindSafe(|| {
        thread.poll_until(WAIT, || nested_polls.get() >= 1)
    }))
    .expect_err("the outermost poll resumes the panic");
    assert_eq!(resumed.downcast_ref::<&str>(), Some(&"nested boom"));
    assert!(faulty.has_panicked());
    assert!(
        !outer.has_panicked(),
        "the poller that polled is not blamed"
    );
    let ran = nested_polls.get();
    assert!(thread.poll_until(WAIT, || nested_polls.get() > ran));
    drop((faulty, outer));
}

#[cfg(spdk)]
#[test]
fn poller_busy_and_idle_reach_spdk_thread_stats() {
    use support::*;
    let thread = thread("poller-stats");
    let status = Rc::new(Cell::new(PollerStatus::Idle));
    let reported = status.clone();
    let poller = Poller::register(Duration::ZERO, move || reported.get()).unwrap();
    thread.poll();

    let start = thread_stats();
    for _ in 0..100 {
        assert_eq!(thread.poll(), 0, "an idle poller leaves the poll idle");
    }
    let idle = thread_stats();
    assert_eq!(idle.busy_tsc, start.busy_tsc, "idle polls add no busy time");
    assert!(idle.idle_tsc > start.idle_tsc);

    status.set(PollerStatus::Busy);
    for _ in 0..100 {
        assert!(thread.poll() > 0, "a busy poller makes the poll busy");
    }
    let busy = thread_stats();
    assert!(busy.busy_tsc > idle.busy_tsc);
    assert_eq!(busy.idle_tsc, idle.idle_tsc, "busy polls add no idle time");
    drop(poller);
}

#[cfg(spdk)]
#[test]
fn poller_registration_needs_an_spdk_thread() {
    use support::*;
    fixture();
    let outcome = std::thread::spawn(|| {
        Poller::register(Duration::ZERO, || PollerStatus::Idle)
            .map(drop)
            .unwrap_err()
    })
    .join()
    .unwrap();
    assert_eq!(outcome, Error::NoThread);
    assert!(outcome.to_string().contains("no SPDK thread is attached"));
}

#[cfg(spdk)]
#[test]
fn poller_rejects_bad_names_and_periods() {
    use support::*;
    let _thread = thread("poller-bad-args");
    let bad_name = Poller::register_named("a\0b", Duration::ZERO, || PollerStatus::Idle);
    assert!(matches!(bad_name, Err(Error::InvalidArgument(_))));
    let too_long = Poller::register(Duration::MAX, || PollerStatus::Idle);
    assert!(matches!(too_long, Err(Error::InvalidArgument(_))));
}

#[cfg(spdk)]
#[test]
fn poller_calls_allocate_nothing() {
    use counting::{ALLOCATIONS, COUNT_HERE};
    use std::sync::atomic::Ordering;
    use support::*;
    let thread = thread("poller-alloc");
    let (every_runs, every) = counting(PollerStatus::Busy);
    let (timed_runs, timed) = counting(PollerStatus::Idle);
    let every = Poller::register(Duration::ZERO, every).unwrap();
    let timed = Poller::register(Duration::from_micros(10), timed).unwrap();
    for _ in 0..1_000 {
        thread.poll();
    }
    COUNT_HERE.with(|c| c.set(true));
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let (every_before, timed_before) = (every_runs.get(), timed_runs.get());
    for _ in 0..20_000 {
        thread.poll();
    }
    let allocated = ALLOCATIONS.load(Ordering::Relaxed) - before;
    COUNT_HERE.with(|c| c.set(false));
    assert_eq!(every_runs.get() - every_before, 20_000);
    assert!(
        timed_runs.get() > timed_before,
        "the periodic poller ran too"
    );
    assert_eq!(allocated, 0, "{allocated} heap allocations in 20000 polls");
    drop((every, timed));
}
