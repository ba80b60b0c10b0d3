//! What the async layer (`futures` feature) costs per I/O over the ring:
//! one 4 KiB read on a null bdev at several queue depths, through the ring
//! as `ring_null` measures it, and through `AsyncRing` with `depth` loops
//! of `read().await` spawned on the handle's own executor (`spawn`, run by
//! `block_on`), joined under `block_on` (no executor), and spawned on
//! `LocalPool` beside `drive` (an executor's wake and poll included). A
//! closing table prints each with its difference from the ring.
//!
//! Needs SPDK (it starts an embedded no-huge runtime); without it, it says
//! it was skipped and exits.

#[cfg(not(spdk))]
fn main() {
    println!("async_null: skipped: this build has no SPDK (see README.md to enable it)");
}

#[cfg(spdk)]
#[path = "common/ring_job.rs"]
mod ring_job;

#[cfg(spdk)]
#[path = "common/null_bench.rs"]
mod null_bench;

#[cfg(spdk)]
fn main() {
    use criterion::{BenchmarkId, Throughput};

    let (rt, desc) = null_bench::start("bench_async_null");
    let mut c = null_bench::criterion();
    let mut group = c.benchmark_group("null_4k_read_async");
    for depth in [1usize, 8, 32, 128] {
        group.throughput(Throughput::Elements(1));
        group.bench_with_input(BenchmarkId::new("ring", depth), &depth, |b, &depth| {
            let mut job = ring_job::RingJob::new(&desc, depth);
            b.iter_custom(|ios| job.run(ios));
        });
        group.bench_with_input(BenchmarkId::new("spawn", depth), &depth, |b, &depth| {
            let job = async_job::AsyncJob::new(&desc, depth);
            b.iter_custom(|ios| job.run_spawned(ios));
        });
        group.bench_with_input(BenchmarkId::new("block_on", depth), &depth, |b, &depth| {
            let job = async_job::AsyncJob::new(&desc, depth);
            b.iter_custom(|ios| job.run_block_on(ios));
        });
        group.bench_with_input(
            BenchmarkId::new("local_pool", depth),
            &depth,
            |b, &depth| {
                let job = async_job::AsyncJob::new(&desc, depth);
                b.iter_custom(|ios| job.run_local_pool(ios));
            },
        );
    }
    group.finish();
    c.final_summary();
    print_async_cost(&desc);
    drop(desc);
    drop(rt);
}

/// What the layer adds per I/O at each depth: the best of three
/// alternating timed runs of each path.
#[cfg(spdk)]
fn print_async_cost(desc: &spdk_ring::BdevDesc) {
    const IOS: u64 = 500_000;
    println!("\nnull_4k_read_async, ns per I/O (best of 3 alternating runs of {IOS} I/Os):");
    println!(
        "{:>6} {:>8} {:>8} {:>10} {:>12} {:>13} {:>16} {:>18}",
        "depth",
        "ring",
        "spawn",
        "block_on",
        "local_pool",
        "spawn costs",
        "block_on costs",
        "local_pool costs"
    );
    for depth in [1usize, 8, 32, 128] {
        let mut ring_job = ring_job::RingJob::new(desc, depth);
        let job = async_job::AsyncJob::new(desc, depth);
        let per_io = |d: std::time::Duration| d.as_nanos() as f64 / IOS as f64;
        let (mut ring, mut spawn, mut block_on, mut pool) =
            (f64::MAX, f64::MAX, f64::MAX, f64::MAX);
        for _ in 0..3 {
            ring = ring.min(per_io(ring_job.run(IOS)));
            spawn = spawn.min(per_io(job.run_spawned(IOS)));
            block_on = block_on.min(per_io(job.run_block_on(IOS)));
            pool = pool.min(per_io(job.run_local_pool(IOS)));
        }
        println!(
            "{depth:>6} {ring:>8.1} {spawn:>8.1} {block_on:>10.1} {pool:>12.1} {:>13.1} {:>16.1} {:>18.1}",
            spawn - ring,
            block_on - ring,
            pool - ring
        );
    }
}

/// `depth` loops of `read().await` on an `AsyncRing`, until `ios` are done.
#[cfg(spdk)]
mod async_job {
    use futures::executor::LocalPool;
    use futures::task::LocalSpawnExt;
    use spdk_ring::{AsyncRing, BdevDesc, DmaBuf, Ring, Target};
    use std::cell::{Cell, RefCell};
    use std::rc::Rc;
    use std::task::{Poll, Waker};
    use std::time::{Duration, Instant};

    pub struct AsyncJob {
        ring: AsyncRing,
        target: Target,
        bufs: Rc<RefCell<Vec<DmaBuf>>>,
        depth: usize,
    }

    /// Readers not returned yet, and who waits for the last.
    struct Running {
        readers: Cell<usize>,
        waiter: RefCell<Option<Waker>>,
    }

    impl Running {
        fn returned(&self) {
            self.readers.set(self.readers.get() - 1);
            if self.readers.get() == 0 {
                if let Some(waiter) = self.waiter.borrow_mut().take() {
                    waiter.wake();
                }
            }
        }
    }

    /// Ready once every reader has returned; woken by the last (a future
    /// that asked to be polled at every pass would add its own cost to
    /// every round).
    fn all_returned(running: &Running) -> impl std::future::Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            if running.readers.get() == 0 {
                Poll::Ready(())
            } else {
                *running.waiter.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
    }

    /// Reads until `left` reaches zero; hands its buffer back to `bufs`.
    async fn reader(
        ring: AsyncRing,
        target: Target,
        left: Rc<Cell<u64>>,
        running: Rc<Running>,
        bufs: Rc<RefCell<Vec<DmaBuf>>>,
        mut lba: u64,
    ) {
        let mut buf = bufs.borrow_mut().pop().expect("one buffer per reader");
        while left.get() > 0 {
            left.set(left.get() - 1);
            lba = (lba + 7919) % (1 << 20);
            let (read, back) = ring.read(target, buf, lba).await;
            debug_assert!(read.is_ok());
            buf = back;
        }
        bufs.borrow_mut().push(buf);
        running.returned();
    }

    impl AsyncJob {
        pub fn new(desc: &BdevDesc, depth: usize) -> AsyncJob {
            let ring = AsyncRing::new(Ring::new(depth as u32).expect("ring"));
            let target = ring.register_bdev(desc).expect("register");
            let bufs = (0..depth)
                .map(|_| DmaBuf::alloc(4096, 0).expect("dma"))
                .collect();
            AsyncJob {
                ring,
                target,
                bufs: Rc::new(RefCell::new(bufs)),
                depth,
            }
        }

        fn readers(&self, ios: u64) -> (Rc<Running>, Vec<impl std::future::Future<Output = ()>>) {
            let left = Rc::new(Cell::new(ios));
            let running = Rc::new(Running {
                readers: Cell::new(self.depth),
                waiter: RefCell::default(),
            });
            let readers = (0..self.depth)
                .map(|i| {
                    reader(
                        self.ring.clone(),
                        self.target,
                        left.clone(),
                        running.clone(),
                        self.bufs.clone(),
                        i as u64 * 4099,
                    )
                })
                .collect();
            (running, readers)
        }

        /// The readers spawned on the handle's executor, run by `block_on`.
        pub fn run_spawned(&self, ios: u64) -> Duration {
            let (running, readers) = self.readers(ios);
            for reader in readers {
                drop(self.ring.spawn(reader));
            }
            let start = Instant::now();
            self.ring.block_on(all_returned(&running));
            start.elapsed()
        }

        /// The readers joined under `block_on`.
        pub fn run_block_on(&self, ios: u64) -> Duration {
            let (_, readers) = self.readers(ios);
            let start = Instant::now();
            self.ring.block_on(futures::future::join_all(readers));
            start.elapsed()
        }

        /// The readers as tasks on a `LocalPool`, with `drive` beside them.
        pub fn run_local_pool(&self, ios: u64) -> Duration {
            let (running, readers) = self.readers(ios);
            let mut pool = LocalPool::new();
            pool.spawner()
                .spawn_local(self.ring.drive())
                .expect("spawn");
            for reader in readers {
                pool.spawner().spawn_local(reader).expect("spawn");
            }
            let start = Instant::now();
            pool.run_until(all_returned(&running));
            start.elapsed()
        }
    }
}
