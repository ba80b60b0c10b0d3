//! Copies a range of one bdev to another with N concurrent async tasks and
//! verifies the copy, on SPDK embedded in an ordinary `main` (no
//! hugepages, no root, two malloc bdevs from a built-in configuration).
//!
//! Run: `cargo run --release --features futures --example async_copy -- [--tasks 16] [--mib 32] [--chunk-kib 128]`

#[cfg(not(spdk))]
fn main() {
    eprintln!(
        "async_copy: this build has no SPDK. Install SPDK under /usr/local, or set \
         SPDK_DIR=/path/to/spdk or PKG_CONFIG_PATH=/path/to/spdk/lib/pkgconfig, then rebuild."
    );
    std::process::exit(2);
}

#[cfg(spdk)]
fn main() -> Result<(), spdk_ring::Error> {
    use futures::executor::LocalPool;
    use futures::task::LocalSpawnExt;
    use spdk_ring::{
        AsyncRing, BdevDesc, DmaBuf, JsonConfig, LogLevel, OpenMode, Ring, SpdkRuntime, Target,
    };
    use std::cell::Cell;
    use std::rc::Rc;
    use std::time::Instant;

    const BLOCK_SIZE: u32 = 512;
    let arg = |name: &str, default: u64| -> u64 {
        let args: Vec<String> = std::env::args().collect();
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map(|v| v.parse().expect("a number"))
            .unwrap_or(default)
    };
    let tasks = arg("--tasks", 16).max(1);
    let bytes = arg("--mib", 32) << 20;
    let chunk = (arg("--chunk-kib", 128) << 10).clamp(u64::from(BLOCK_SIZE), bytes);
    let (chunk_blocks, total_blocks) =
        (chunk / u64::from(BLOCK_SIZE), bytes / u64::from(BLOCK_SIZE));

    let _rt = SpdkRuntime::builder()
        .name("async_copy")
        .no_huge(true)
        .mem_size_mb(1024)
        .log_level(LogLevel::Error)
        .json_config(
            JsonConfig::new()
                .malloc_bdev("Source", total_blocks, BLOCK_SIZE)
                .malloc_bdev("Copy", total_blocks, BLOCK_SIZE)
                .to_json(),
        )
        .build()?;
    let (src_desc, dst_desc) = (
        BdevDesc::open("Source", OpenMode::ReadWrite)?,
        BdevDesc::open("Copy", OpenMode::ReadWrite)?,
    );
    let ring = AsyncRing::new(Ring::new(tasks as u32 * 2)?);
    let (src, dst) = (
        ring.register_bdev(&src_desc)?,
        ring.register_bdev(&dst_desc)?,
    );

    /// What lives at byte `at` of the source: recognisable per chunk.
    fn byte_at(at: u64) -> u8 {
        (at.wrapping_mul(2_654_435_761) >> 13) as u8
    }

    // Fill the source, one chunk at a time, through block_on.
    ring.block_on(async {
        let mut buf = DmaBuf::alloc(chunk as usize, 0)?;
        for lba in (0..total_blocks).step_by(chunk_blocks as usize) {
            let base = lba * u64::from(BLOCK_SIZE);
            for (i, b) in buf.iter_mut().enumerate() {
                *b = byte_at(base + i as u64);
            }
            let (written, back) = ring.write(src, buf, lba).await;
            written?;
            buf = back;
        }
        Ok::<(), spdk_ring::Error>(())
    })?;

    // The copy: `tasks` tasks take chunks from a shared cursor, each with
    // its own buffer, read from the source and write to the copy.
    async fn copier(
        ring: AsyncRing,
        (src, dst): (Target, Target),
        cursor: Rc<Cell<u64>>,
        (chunk_blocks, total_blocks): (u64, u64),
        mut buf: DmaBuf,
    ) -> Result<u64, spdk_ring::Error> {
        let mut copied = 0;
        loop {
            let lba = cursor.get();
            if lba >= total_blocks {
                return Ok(copied);
            }
            cursor.set(lba + chunk_blocks);
            let (read, back) = ring.read(src, buf, lba).await;
            read?;
            let (written, back) = ring.write(dst, back, lba).await;
            copied += written?;
            buf = back;
        }
    }
    let started = Instant::now();
    let cursor = Rc::new(Cell::new(0u64));
    let mut pool = LocalPool::new();
    pool.spawner()
        .spawn_local(ring.drive())
        .expect("the pool accepts tasks");
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let task = copier(
            ring.clone(),
            (src, dst),
            cursor.clone(),
            (chunk_blocks, total_blocks),
            DmaBuf::alloc(chunk as usize, 0)?,
        );
        handles.push(
            pool.spawner()
                .spawn_local_with_handle(task)
                .expect("the pool accepts tasks"),
        );
    }
    let mut copied = 0;
    for result in pool.run_until(futures::future::join_all(handles)) {
        copied += result?;
    }
    let elapsed = started.elapsed();
    drop(pool);
    println!(
        "copied {} MiB with {tasks} tasks in {:.1} ms ({:.0} MiB/s)",
        copied >> 20,
        elapsed.as_secs_f64() * 1e3,
        (copied >> 20) as f64 / elapsed.as_secs_f64()
    );

    // Verify: read both back and compare with what was written.
    let mismatches = ring.block_on(async {
        let mut mismatches = 0u64;
        let (mut a, mut b) = (
            DmaBuf::alloc(chunk as usize, 0)?,
            DmaBuf::alloc(chunk as usize, 0)?,
        );
        for lba in (0..total_blocks).step_by(chunk_blocks as usize) {
            let ((read_src, back_a), (read_dst, back_b)) =
                futures::join!(ring.read(src, a, lba), ring.read(dst, b, lba));
            read_src?;
            read_dst?;
            let base = lba * u64::from(BLOCK_SIZE);
            mismatches += back_b
                .iter()
                .zip(back_a.iter())
                .enumerate()
                .filter(|&(i, (&copy, &orig))| copy != orig || orig != byte_at(base + i as u64))
                .count() as u64;
            (a, b) = (back_a, back_b);
        }
        Ok::<u64, spdk_ring::Error>(mismatches)
    })?;
    if mismatches != 0 || copied != bytes {
        eprintln!("copy differs: {mismatches} bytes wrong, {copied} of {bytes} copied");
        std::process::exit(1);
    }
    println!("verified: the copy is identical ({} bytes)", bytes);
    let stats = ring.stats();
    println!(
        "async layer: {} completions, {} futures dropped in flight, {} stale",
        stats.completed, stats.abandoned, stats.stale
    );
    drop(ring);
    Ok(())
}
