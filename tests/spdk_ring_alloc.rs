//! Zero heap allocations per I/O in steady state, counted by a global
//! allocator over a long run on the null bdev. Its own process: a global
//! allocator is per binary.

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
#[test]
fn steady_state_io_allocates_nothing() {
    use common::*;
    use counting::{ALLOCATIONS, COUNT_HERE};
    use spdk_ring::{opcode, BdevDesc, DmaBuf, EntryFlags, OpenMode, Ring, SpdkThread};
    use std::sync::atomic::Ordering;

    fixture();
    let thread = SpdkThread::attach("alloc-count").unwrap();
    let desc = BdevDesc::open("Null0", OpenMode::ReadWrite).unwrap();
    let mut ring = Ring::new(64).unwrap();
    let t = ring.register_bdev(&desc).unwrap();
    let depth = 32u64;
    let mut bufs: Vec<DmaBuf> = (0..depth)
        .map(|_| DmaBuf::alloc(4096, 0).unwrap())
        .collect();
    let mut next = 0u64;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    // Reaps through owned completions, or in place with `reap`. Plain reads
    // only run on the lane; the mix keeps the core busy, so it runs there.
    let mut run =
        |ring: &mut Ring, bufs: &mut Vec<DmaBuf>, ios: u64, in_place: bool, mixed: bool| {
            let mut done = 0;
            while done < ios {
                assert!(
                    std::time::Instant::now() < deadline,
                    "stalled after {done} of {ios} I/Os"
                );
                while let Some(buf) = bufs.pop() {
                    let lba = next % NULL_BLOCKS;
                    // Mix reads, writes, a LINK pair and a DRAIN now and then.
                    let entry = match next % 16 {
                        _ if !mixed => opcode::Read::new(t, buf, lba).build(),
                        0 => opcode::Write::new(t, buf, lba)
                            .build()
                            .flags(EntryFlags::LINK),
                        7 => opcode::Read::new(t, buf, lba)
                            .build()
                            .flags(EntryFlags::DRAIN),
                        _ => opcode::Read::new(t, buf, lba).build(),
                    };
                    ring.push(entry.user_data(next)).unwrap();
                    next += 1;
                }
                ring.poll();
                if in_place {
                    while let Some(mut c) = ring.reap() {
                        assert_eq!(c.result(), Ok(4096));
                        bufs.push(c.take_buf().unwrap());
                        done += 1;
                    }
                } else {
                    for mut c in ring.completions() {
                        assert_eq!(c.result(), Ok(4096));
                        bufs.push(c.take_buf().unwrap());
                        done += 1;
                    }
                }
            }
        };
    for (in_place, mixed) in [(false, false), (true, false), (false, true), (true, true)] {
        run(&mut ring, &mut bufs, 5_000, in_place, mixed);
    }
    COUNT_HERE.with(|c| c.set(true));
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let lane_before = ring.stats().lane_ios;
    run(&mut ring, &mut bufs, 75_000, false, false);
    run(&mut ring, &mut bufs, 75_000, true, false);
    let on_lane = ring.stats().lane_ios - lane_before;
    run(&mut ring, &mut bufs, 75_000, false, true);
    run(&mut ring, &mut bufs, 75_000, true, true);
    let on_lane_mixed = ring.stats().lane_ios - lane_before - on_lane;
    let allocated = ALLOCATIONS.load(Ordering::Relaxed) - before;
    COUNT_HERE.with(|c| c.set(false));
    // Both paths ran: plain reads on the lane (all but the few pushed while
    // the mixed warm-up still had entries in the core), the mix in the core.
    assert!(on_lane >= 149_000, "{on_lane} plain reads on the lane");
    assert!(
        on_lane_mixed < 75_000,
        "{on_lane_mixed} of the mix on the lane"
    );
    assert_eq!(
        allocated, 0,
        "{allocated} heap allocations during 300000 steady-state I/Os"
    );
    drop(ring);
    drop(desc);
    drop(thread);
}

/// The async path allocates nothing per I/O either: 128 000 reads from 32
/// tasks on `LocalPool` (with `drive`), 100 000 through `block_on`, and
/// 128 000 from 32 tasks spawned on the handle's own executor.
#[cfg(all(spdk, feature = "futures"))]
#[test]
fn async_steady_state_io_allocates_nothing() {
    use common::*;
    use counting::{ALLOCATIONS, COUNT_HERE};
    use futures::executor::LocalPool;
    use futures::task::LocalSpawnExt;
    use spdk_ring::{AsyncRing, BdevDesc, DmaBuf, OpenMode, Ring, SpdkThread, Target};
    use std::cell::Cell;
    use std::rc::Rc;
    use std::sync::atomic::Ordering;
    use std::task::Poll;

    fixture();
    let thread = SpdkThread::attach("alloc-count-async").unwrap();
    let desc = BdevDesc::open("Null0", OpenMode::ReadOnly).unwrap();
    let ring = AsyncRing::new(Ring::new(64).unwrap());
    let t = ring.register_bdev(&desc).unwrap();

    /// Reads in a loop until `stop`, counting them in `done`.
    async fn reader(ring: AsyncRing, t: Target, done: Rc<Cell<u64>>, stop: Rc<Cell<bool>>) {
        let mut buf = DmaBuf::alloc(4096, 0).unwrap();
        let mut lba = 0;
        while !stop.get() {
            let (read, back) = ring.read(t, buf, lba % NULL_BLOCKS).await;
            assert_eq!(read, Ok(4096));
            buf = back;
            lba += 7;
            done.set(done.get() + 1);
        }
    }

    /// Warms `run` up with 20 000 I/Os, then counts the heap allocations
    /// of `run(n)` (`done` counts the I/Os): there must be none.
    fn assert_allocates_nothing(label: &str, n: u64, done: &Cell<u64>, mut run: impl FnMut(u64)) {
        run(20_000);
        COUNT_HERE.with(|c| c.set(true));
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        let first = done.get();
        run(n);
        let counted = done.get() - first;
        let allocated = ALLOCATIONS.load(Ordering::Relaxed) - before;
        COUNT_HERE.with(|c| c.set(false));
        assert!(counted >= n);
        assert_eq!(
            allocated, 0,
            "{allocated} heap allocations during {counted} async I/Os {label}"
        );
    }

    /// Ready once `done` reaches `target`; until then it asks to be polled
    /// again at every pass.
    fn reached(done: &Cell<u64>, target: u64) -> impl std::future::Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            if done.get() >= target {
                Poll::Ready(())
            } else {
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        })
    }

    // LocalPool: tasks spawned once, then counted while they run.
    let (done, stop) = (Rc::new(Cell::new(0u64)), Rc::new(Cell::new(false)));
    let mut pool = LocalPool::new();
    pool.spawner().spawn_local(ring.drive()).unwrap();
    for _ in 0..32 {
        let task = reader(ring.clone(), t, done.clone(), stop.clone());
        pool.spawner().spawn_local(task).unwrap();
    }
    assert_allocates_nothing("on LocalPool", 128_000, &done, |n| {
        pool.run_until(reached(&done, done.get() + n));
    });
    // Dropping the pool drops the readers mid-read: their entries are
    // cancelled and discarded by the layer.
    drop(pool);

    // block_on: four readers joined in place (no allocation to join them).
    let (done, stop) = (Rc::new(Cell::new(0u64)), Rc::new(Cell::new(false)));
    assert_allocates_nothing("under block_on", 100_000, &done, |ios| {
        let target = done.get() + ios;
        let stopper = async {
            reached(&done, target).await;
            stop.set(true);
        };
        stop.set(false);
        let r = |ring: &AsyncRing| reader(ring.clone(), t, done.clone(), stop.clone());
        let (a, b, c, d) = (r(&ring), r(&ring), r(&ring), r(&ring));
        ring.block_on(async { futures::join!(a, b, c, d, stopper) });
    });

    // The handle's executor: 32 readers spawned (one allocation each, not
    // counted), run by block_on.
    let (done, stop) = (Rc::new(Cell::new(0u64)), Rc::new(Cell::new(false)));
    let readers: Vec<_> = (0..32)
        .map(|_| ring.spawn(reader(ring.clone(), t, done.clone(), stop.clone())))
        .collect();
    assert_allocates_nothing("on spawned tasks", 128_000, &done, |n| {
        ring.block_on(reached(&done, done.get() + n));
    });
    stop.set(true);
    ring.block_on(futures::future::join_all(readers));
    assert_eq!(ring.tasks(), 0);
    assert_eq!(ring.stats().stale, 0);
    drop(ring);
    drop(desc);
    drop(thread);
}
