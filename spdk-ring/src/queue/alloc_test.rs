//! Zero-allocation check for the steady state.
//!
//! Installs a counting global allocator for the lib's test binary. Only
//! allocations made by the current thread while counting is switched on are
//! counted, so tests running in parallel on other threads do not interfere.
//! This file holds the only `unsafe` of the module: `GlobalAlloc` is an unsafe
//! trait, and the impl merely forwards to `System`.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use super::{
    Driver, EntryFlags, EntryKind, QueueConfig, RingQueue, StartOutcome, Submission, TargetId,
    Token,
};

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn note_allocation() {
    let counting = COUNTING.try_with(Cell::get).unwrap_or(false);
    if counting {
        let _ = ALLOCATIONS.try_with(|count| count.set(count.get() + 1));
    }
}

struct CountingAllocator;

// SAFETY: every method forwards its arguments unchanged to `System`, which upholds the
// `GlobalAlloc` contract; the counting touches only const-initialised thread-locals without
// destructors, so it neither allocates nor re-enters the allocator.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// Counts allocations made by this thread while `f` runs.
fn allocations_during(f: impl FnOnce()) -> u64 {
    ALLOCATIONS.with(|count| count.set(0));
    COUNTING.with(|on| on.set(true));
    f();
    COUNTING.with(|on| on.set(false));
    ALLOCATIONS.with(Cell::get)
}

/// A driver that never allocates: started tokens go into a preallocated vector.
struct Buffer {
    _lba: u64,
}

struct PreallocatedDriver {
    running: Vec<Token>,
}

impl Driver<Buffer> for PreallocatedDriver {
    fn start(&mut self, token: Token, _target: TargetId, _op: &mut Buffer) -> StartOutcome {
        self.running.push(token);
        StartOutcome::Started
    }

    fn abort(&mut self, _token: Token, _target: TargetId, _op: &mut Buffer) -> Result<(), ()> {
        Ok(())
    }
}

const ENTRIES_PER_CYCLE: usize = 8;

/// One push/submit/complete/pop cycle mixing a LINK chain, a DRAIN barrier, a LinkTimeout, a
/// Timeout that expires, and a Cancel.
fn cycle(q: &mut RingQueue<Buffer>, driver: &mut PreallocatedDriver, cycle: u64, now: &mut u64) {
    let base = cycle * ENTRIES_PER_CYCLE as u64;
    let link = EntryFlags::LINK;
    let entries = [
        Submission::io(TargetId(0), Buffer { _lba: base }, base).with_flags(link),
        Submission::io(TargetId(1), Buffer { _lba: base }, base + 1),
        Submission::nop(base + 2).with_flags(EntryFlags::DRAIN),
        Submission::io(TargetId(0), Buffer { _lba: base }, base + 3).with_flags(link),
        Submission::new(EntryKind::LinkTimeout { after_ns: 1_000 }, base + 4),
        Submission::new(
            EntryKind::Timeout {
                after_ns: 5,
                count: 0,
            },
            base + 5,
        ),
        Submission::new(
            EntryKind::Timeout {
                after_ns: 1_000,
                count: 0,
            },
            base + 6,
        ),
        Submission::new(
            EntryKind::Cancel {
                user_data: base + 6,
            },
            base + 7,
        ),
    ];
    for entry in entries {
        assert!(q.push(entry).is_ok());
    }
    q.submit(driver, *now);
    while !driver.running.is_empty() {
        while let Some(token) = driver.running.pop() {
            assert!(q.complete(token, Ok(4096)));
        }
        q.advance(driver, *now);
    }
    *now += 10;
    q.advance(driver, *now);
    let mut reaped = 0;
    while let Some(completion) = q.pop_completion() {
        assert!(completion.user_data >= base);
        reaped += 1;
    }
    assert_eq!(reaped, ENTRIES_PER_CYCLE);
    assert_eq!(q.in_flight(), 0);
}

#[test]
fn steady_state_does_not_allocate() {
    let cycles: u64 = if cfg!(miri) { 100 } else { 100_000 };
    let mut q = RingQueue::new(QueueConfig {
        sq_entries: 16,
        cq_entries: 16,
        max_in_flight: 16,
        max_targets: 2,
    })
    .unwrap();
    let mut driver = PreallocatedDriver {
        running: Vec::with_capacity(16),
    };
    let mut now = 0;
    for warm_up in 0..10 {
        cycle(&mut q, &mut driver, warm_up, &mut now);
    }
    let allocations = allocations_during(|| {
        for n in 10..10 + cycles {
            cycle(&mut q, &mut driver, n, &mut now);
        }
    });
    assert_eq!(allocations, 0, "steady state allocated");
    assert_eq!(q.overflowed(), 0);
}

#[test]
fn counting_allocator_sees_allocations() {
    let allocations = allocations_during(|| {
        std::hint::black_box(vec![1u8; 32]);
    });
    assert!(allocations >= 1);
}
