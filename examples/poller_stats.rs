//! A statistics poller beside ring I/O: reads keep a null bdev busy while a
//! 100 ms SPDK poller on the same thread prints the I/O rate, with no second
//! loop and no locks (the poller and the I/O loop share plain `Cell`s).
//!
//! Run: `cargo run --release --example poller_stats`

#[cfg(not(spdk))]
fn main() {
    eprintln!(
        "poller_stats: this build has no SPDK. Install SPDK under /usr/local, or set \
         SPDK_DIR=/path/to/spdk or PKG_CONFIG_PATH=/path/to/spdk/lib/pkgconfig, then rebuild."
    );
    std::process::exit(2);
}

#[cfg(spdk)]
fn main() -> Result<(), spdk_ring::Error> {
    use spdk_ring::{
        opcode, BdevDesc, DmaBuf, JsonConfig, LogLevel, OpenMode, Poller, PollerStatus, Ring,
        SpdkRuntime,
    };
    use std::cell::Cell;
    use std::rc::Rc;
    use std::time::{Duration, Instant};

    const BDEV: &str = "Null0";
    const BLOCKS: u64 = 1 << 18;
    const BLOCK_SIZE: u32 = 4096;
    const DEPTH: usize = 32;
    const RUN_FOR: Duration = Duration::from_secs(1);
    const TICK: Duration = Duration::from_millis(100);

    let rt = SpdkRuntime::builder()
        .name("poller_stats")
        .no_huge(true)
        .mem_size_mb(1024)
        .log_level(LogLevel::Error)
        .json_config(
            JsonConfig::new()
                .null_bdev(BDEV, BLOCKS, BLOCK_SIZE)
                .to_json(),
        )
        .build()?;
    let desc = BdevDesc::open(BDEV, OpenMode::ReadOnly)?;
    let mut ring = Ring::new(DEPTH as u32 * 2)?;
    let disk = ring.register_bdev(&desc)?;

    // Counted by the I/O loop, read by the poller: the same SPDK thread.
    let completed = Rc::new(Cell::new(0u64));
    let ticks = Rc::new(Cell::new(0u32));
    let stats = {
        let completed = completed.clone();
        let ticks = ticks.clone();
        let mut last = (Instant::now(), 0u64);
        Poller::register_named("io-stats", TICK, move || {
            let (now, total) = (Instant::now(), completed.get());
            let rate = (total - last.1) as f64 / now.duration_since(last.0).as_secs_f64();
            println!("{rate:>8.0} reads/s ({total} so far)");
            last = (now, total);
            ticks.set(ticks.get() + 1);
            PollerStatus::Busy
        })?
    };

    let mut bufs: Vec<DmaBuf> = (0..DEPTH)
        .map(|_| DmaBuf::alloc(BLOCK_SIZE as usize, 0))
        .collect::<Result<_, _>>()?;
    let mut next_lba = 0u64;
    let deadline = Instant::now() + RUN_FOR;
    while Instant::now() < deadline {
        while let Some(buf) = bufs.pop() {
            let read = opcode::Read::new(disk, buf, next_lba % BLOCKS).build();
            ring.push(read.user_data(next_lba))
                .expect("the SQ has room");
            next_lba += 1;
        }
        // Runs the SPDK thread once: the bdev completions and, every
        // 100 ms, the statistics poller.
        ring.poll();
        for mut done in ring.completions() {
            done.result()?;
            bufs.push(done.take_buf().expect("a read returns its buffer"));
            completed.set(completed.get() + 1);
        }
    }
    drop(stats); // unregisters the poller
    println!(
        "{} reads in {RUN_FOR:?}; the statistics poller ticked {} times",
        completed.get(),
        ticks.get()
    );

    drop(ring);
    drop(desc);
    drop(rt);
    Ok(())
}
