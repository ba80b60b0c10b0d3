//! Quickstart: SPDK embedded in an ordinary `main` (no hugepages, no root),
//! a malloc bdev from a built-in configuration, and one write and one read
//! through the ring, compared byte for byte.
//!
//! Run: `cargo run --release --example quickstart`

#[cfg(not(spdk))]
fn main() {
    eprintln!(
        "quickstart: this build has no SPDK. Install SPDK under /usr/local, or set \
         SPDK_DIR=/path/to/spdk or PKG_CONFIG_PATH=/path/to/spdk/lib/pkgconfig, then rebuild."
    );
    std::process::exit(2);
}

#[cfg(spdk)]
fn main() -> Result<(), spdk_ring::Error> {
    use spdk_ring::{
        opcode, BdevDesc, DmaBuf, EntryFlags, JsonConfig, LogLevel, OpenMode, Ring, SpdkRuntime,
    };
    use std::time::{Duration, Instant};

    const BDEV: &str = "Malloc0";
    const BLOCK_SIZE: u32 = 512;
    const IO_BYTES: usize = 64 * 1024;
    const OFFSET_BLOCKS: u64 = 2048;

    let started = Instant::now();
    let rt = SpdkRuntime::builder()
        .name("quickstart")
        .no_huge(true)
        .mem_size_mb(1024)
        .log_level(LogLevel::Error)
        .json_config(
            JsonConfig::new()
                .malloc_bdev(BDEV, 65536, BLOCK_SIZE)
                .to_json(),
        )
        .build()?;
    println!(
        "SPDK {} started embedded (no hugepages) in {:?}",
        spdk_ring::SPDK_VERSION,
        started.elapsed()
    );

    let desc = BdevDesc::open(BDEV, OpenMode::ReadWrite)?;
    let bdev = desc.bdev();
    println!(
        "bdev {} ({}): {} blocks of {} bytes = {} MiB",
        bdev.name(),
        bdev.product_name(),
        bdev.num_blocks(),
        bdev.block_size(),
        bdev.size_bytes() >> 20
    );

    let mut ring = Ring::new(16)?;
    let disk = ring.register_bdev(&desc)?;

    let mut pattern = DmaBuf::alloc(IO_BYTES, 0)?;
    for (i, byte) in pattern.iter_mut().enumerate() {
        *byte = (i % 251) as u8;
    }
    let expected = pattern.to_vec();

    // The read is linked to the write: it starts only if the write succeeded.
    let write = opcode::Write::new(disk, pattern, OFFSET_BLOCKS)
        .build()
        .user_data(1)
        .flags(EntryFlags::LINK);
    let read = opcode::Read::new(disk, DmaBuf::alloc_zeroed(IO_BYTES, 0)?, OFFSET_BLOCKS)
        .build()
        .user_data(2);
    ring.push(write).expect("the SQ has room");
    ring.push(read).expect("the SQ has room");

    let io_started = Instant::now();
    ring.submit_and_wait(2, Duration::from_secs(10))?;
    let elapsed = io_started.elapsed();
    let mut read_back = None;
    for mut done in ring.completions() {
        let bytes = done.result()?;
        let what = if done.user_data() == 1 {
            "write"
        } else {
            "read"
        };
        println!("{what:5} of {bytes} bytes at block {OFFSET_BLOCKS}: ok");
        if done.user_data() == 2 {
            read_back = done.take_buf();
        }
    }
    let read_back = read_back.expect("the read completed");
    if read_back.as_slice() != expected.as_slice() {
        eprintln!("MISMATCH: data read back differs from the pattern written");
        std::process::exit(1);
    }
    println!(
        "read back {IO_BYTES} bytes identical to the pattern written ({elapsed:?} for both I/Os)"
    );

    drop(ring);
    drop(desc);
    drop(rt);
    println!("SPDK shut down cleanly");
    Ok(())
}
