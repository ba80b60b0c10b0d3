//! `asyncperf`: `ringperf`'s load through the async layer (`futures`
//! feature): one task per queue slot, each awaiting `read`/`write` on an
//! `AsyncRing` in a loop. `ASYNCPERF_EXECUTOR` picks what runs them:
//! `spawn` (default: spawned on the handle's own executor, run by
//! `block_on`), `local_pool` (futures' `LocalPool` with `drive` beside),
//! `block_on` (the slots joined in one future under `block_on`) or
//! `local_executor` (async-executor's `LocalExecutor` with `drive`). Same flags (bdevperf's) and report as
//! `ringperf`, one core; the ratio of the two is what async costs.
//!
//! `cargo run --release --features futures --example asyncperf -- -q 128 -o 4096 -w randread -t 5`

#[cfg(spdk)]
#[path = "perf/mod.rs"]
mod perf;

#[cfg(not(spdk))]
fn main() {
    eprintln!("asyncperf: this build has no SPDK; see README.md for how to enable it.");
    std::process::exit(2);
}

#[cfg(spdk)]
fn main() {
    use perf::{Options, Report};
    let options = Options::from_args_or_exit("asyncperf");
    match run(&options) {
        Ok(report) => {
            Report::print_table(std::slice::from_ref(&report));
            if options.report_json {
                println!(
                    "{{\"tool\": \"asyncperf\", \"results\": [{}]}}",
                    report.json(&options)
                );
            }
        }
        Err(e) => {
            eprintln!("asyncperf: {e}");
            std::process::exit(1);
        }
    }
}

#[cfg(spdk)]
fn run(o: &perf::Options) -> Result<perf::Report, String> {
    use futures::executor::LocalPool;
    use futures::task::LocalSpawnExt;
    use perf::{Histogram, Pattern, Report};
    use spdk_ring::{clock, AsyncRing, BdevDesc, DmaBuf, Ring, Target};
    use std::cell::{Cell, RefCell};
    use std::rc::Rc;

    let err = |e: spdk_ring::Error| e.to_string();
    let cores = o.cores()?;
    if cores.len() != 1 || o.nvme.is_some() {
        return Err("asyncperf runs one core (-m with one bit) on a bdev (-T)".into());
    }
    perf::pin_to_core(cores[0]);
    let rt = o.start_runtime("asyncperf")?;
    let desc = BdevDesc::open(&o.bdev, o.open_mode()).map_err(err)?;
    let bdev = desc.bdev();
    let depth = o.queue_depth;
    let ring = AsyncRing::new(Ring::builder(depth as u32).build().map_err(err)?);
    let target = ring.register_bdev(&desc).map_err(err)?;
    let align = perf::bdevperf_buf_align(&desc);

    /// What the tasks share: the offsets, the counts, the histogram, the end.
    struct Job {
        pattern: RefCell<Pattern>,
        latency: RefCell<Histogram>,
        ios: Cell<u64>,
        errors: Cell<u64>,
        running: Cell<usize>,
        deadline: u64,
        /// The round's clock: (the poll's own timestamp, `clock::ticks()`
        /// read at the round's first completion).
        round_clock: Cell<(u64, u64)>,
        /// Woken by the last slot to return.
        all_returned: RefCell<Option<std::task::Waker>>,
    }
    let hz = clock::ticks_hz();
    let start = clock::ticks();
    let job = Rc::new(Job {
        pattern: RefCell::new(Pattern::new(
            o,
            bdev.block_size(),
            bdev.num_blocks(),
            0x9E37_79B9,
        )?),
        latency: RefCell::new(Histogram::new()),
        ios: Cell::new(0),
        errors: Cell::new(0),
        running: Cell::new(depth),
        deadline: start + o.seconds * hz,
        round_clock: Cell::new((0, start)),
        all_returned: RefCell::new(None),
    });

    /// The clock, read once per ring round, as ringperf reads it once per
    /// poll: the first completion of a round (told apart by the poll's own
    /// timestamp, which costs no counter read) reads it for all.
    fn round_now(job: &Job) -> u64 {
        let polled = clock::last_poll_ticks().expect("slots run on the ring's SPDK thread");
        let (round, now) = job.round_clock.get();
        if round == polled {
            return now;
        }
        let now = clock::ticks();
        job.round_clock.set((polled, now));
        now
    }

    /// One queue slot: an I/O in flight at all times until the deadline.
    /// Times are the round's; an I/O starts when the last ended.
    async fn slot(ring: AsyncRing, target: Target, job: Rc<Job>, mut buf: DmaBuf, mut at: u64) {
        loop {
            let (offset, read) = job.pattern.borrow_mut().next();
            let (result, back) = if read {
                ring.read(target, buf, offset).await
            } else {
                ring.write(target, buf, offset).await
            };
            let now = round_now(&job);
            job.latency.borrow_mut().record(now - at);
            if result.is_ok() {
                job.ios.set(job.ios.get() + 1);
            } else {
                job.errors.set(job.errors.get() + 1);
            }
            buf = back;
            at = now;
            if now >= job.deadline {
                job.running.set(job.running.get() - 1);
                if job.running.get() == 0 {
                    if let Some(main) = job.all_returned.borrow_mut().take() {
                        main.wake();
                    }
                }
                return;
            }
        }
    }

    let mut tasks = Vec::with_capacity(depth);
    for _ in 0..depth {
        let buf = DmaBuf::alloc(o.io_size, align).map_err(err)?;
        tasks.push(slot(ring.clone(), target, job.clone(), buf, start));
    }
    // Until every slot's task has returned (the drive task never does):
    // polled at the start and when the last slot wakes it.
    let all_returned = || {
        std::future::poll_fn(|cx| {
            if job.running.get() == 0 {
                std::task::Poll::Ready(())
            } else {
                *job.all_returned.borrow_mut() = Some(cx.waker().clone());
                std::task::Poll::Pending
            }
        })
    };
    match std::env::var("ASYNCPERF_EXECUTOR").as_deref() {
        Ok("block_on") => {
            // No executor: the slots joined in one future, run by block_on,
            // which polls it once after each round that completed something.
            ring.block_on(futures::future::join_all(tasks));
        }
        Ok("spawn") | Err(_) => {
            // The handle's own executor: the slots spawned on the ring,
            // run by block_on between rounds.
            let slots: Vec<_> = tasks.into_iter().map(|task| ring.spawn(task)).collect();
            ring.block_on(all_returned());
            drop(slots);
        }
        Ok("local_executor") => {
            // async-executor's LocalExecutor instead of LocalPool.
            let ex = async_executor::LocalExecutor::new();
            let _drive = ex.spawn(ring.drive());
            let slots: Vec<_> = tasks.into_iter().map(|task| ex.spawn(task)).collect();
            futures::executor::block_on(ex.run(all_returned()));
            drop(slots);
        }
        Ok("local_pool") => {
            let mut pool = LocalPool::new();
            let spawner = pool.spawner();
            spawner
                .spawn_local(ring.drive())
                .map_err(|e| e.to_string())?;
            for task in tasks {
                spawner.spawn_local(task).map_err(|e| e.to_string())?;
            }
            pool.run_until(all_returned());
        }
        Ok(other) => {
            return Err(format!(
                "ASYNCPERF_EXECUTOR={other}: expected local_pool, spawn, block_on or local_executor"
            ))
        }
    }
    let end = clock::ticks();
    drop(ring);
    drop(desc);
    drop(rt);
    Ok(Report {
        label: format!("{} (core {}, async)", o.bdev, cores[0]),
        ios: job.ios.get(),
        errors: job.errors.get(),
        seconds: (end - start) as f64 / hz as f64,
        io_size: o.io_size,
        latency: Some(job.latency.replace(Histogram::new())),
        ticks_hz: hz,
    })
}
