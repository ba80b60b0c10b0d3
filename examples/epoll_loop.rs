//! `epoll_loop`: the ring inside a plain epoll loop that also serves a
//! timerfd, with SPDK in interrupt mode (see the ring's docs, "Embedding in
//! an event loop").
//!
//! An AIO bdev over a temporary file in tmpfs (`/dev/shm`), created through
//! the JSON configuration. The loop sleeps in `epoll_wait` on the ring's fd
//! and a timerfd ticking every 20 ms; each tick writes a block with a
//! pattern, then reads it back and checks it. Then it measures:
//! - the process's CPU time over an idle second (the loop asleep);
//! - I/O latency through the loop: one read at a time, from the push in the
//!   loop to its completion seen by the loop (median, p99). On tmpfs the
//!   kernel completes an AIO read inside `io_submit`, so the loop does not
//!   sleep in between: this is the cost of the interrupt-mode path;
//! - wake-up latency from sleep: another OS thread sends the loop's SPDK
//!   thread a message every millisecond while the loop sleeps in
//!   `epoll_wait`; from the send to the message running in the loop.
//!
//! `--poll-mode` runs the same in SPDK's default poll mode, where the ring
//! has no fd and the loop must spin (`epoll_wait` with a zero timeout and a
//! poll each turn): that is the figure interrupt mode is compared with.
//!
//! `cargo run --release --example epoll_loop [-- --poll-mode] [--latency-ios N]`

#[cfg(not(spdk))]
fn main() {
    eprintln!("epoll_loop: this build has no SPDK; see README.md for how to enable it.");
    std::process::exit(2);
}

#[cfg(spdk)]
fn main() {
    let mut poll_mode = false;
    let mut latency_ios = 2000usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--poll-mode" => poll_mode = true,
            "--latency-ios" => {
                latency_ios = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| usage())
            }
            _ => usage(),
        }
    }
    if let Err(e) = demo::run(poll_mode, latency_ios) {
        eprintln!("epoll_loop: {e}");
        std::process::exit(1);
    }
}

#[cfg(spdk)]
fn usage() -> ! {
    eprintln!("usage: epoll_loop [--poll-mode] [--latency-ios N]");
    std::process::exit(2);
}

#[cfg(spdk)]
mod demo {
    use spdk_ring::{opcode, BdevDesc, DmaBuf, JsonConfig, OpenMode, Ring, SpdkRuntime, Target};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
    use std::time::{Duration, Instant};

    const BLOCK: usize = 4096;
    const TICK: Duration = Duration::from_millis(20);
    const BLOCKS_CHECKED: u64 = 16;
    const RING_TOKEN: u64 = 1;
    const TIMER_TOKEN: u64 = 2;

    type Result<T> = std::result::Result<T, String>;

    /// Removes the backing file however the demo ends.
    struct TempFile(std::path::PathBuf);
    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    pub fn run(poll_mode: bool, latency_ios: usize) -> Result<()> {
        let dir = std::path::Path::new("/dev/shm");
        let dir = if dir.is_dir() {
            dir.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let file = TempFile(dir.join(format!("epoll_loop-{}.img", std::process::id())));
        std::fs::File::create(&file.0)
            .and_then(|f| f.set_len(16 << 20))
            .map_err(|e| format!("creating {}: {e}", file.0.display()))?;
        let path = file.0.to_str().ok_or("temporary path is not UTF-8")?;

        let rt = SpdkRuntime::builder()
            .name("epoll_loop")
            .no_huge(true)
            .mem_size_mb(1024)
            .interrupt_mode(!poll_mode)
            .json_config(
                JsonConfig::new()
                    .aio_bdev("Aio0", path, BLOCK as u32)
                    .to_json(),
            )
            .build()
            .map_err(|e| e.to_string())?;
        let desc = BdevDesc::open("Aio0", OpenMode::ReadWrite).map_err(|e| e.to_string())?;
        let mut ring = Ring::new(32).map_err(|e| e.to_string())?;
        let disk = ring.register_bdev(&desc).map_err(|e| e.to_string())?;
        let mode = if poll_mode { "poll" } else { "interrupt" };
        println!(
            "SPDK {} in {mode} mode; AIO bdev over {path}",
            spdk_ring::SPDK_VERSION
        );

        let epoll = Epoll::new()?;
        if let Some(fd) = ring.fd() {
            epoll.add(fd.as_raw_fd(), RING_TOKEN)?;
        }
        let timer = timerfd(TICK)?;
        epoll.add(timer.as_raw_fd(), TIMER_TOKEN)?;

        serve_ticks(&mut ring, disk, &epoll, &timer, poll_mode)?;
        disarm(&timer)?;
        idle_second(&mut ring, &epoll, poll_mode);
        latency(&mut ring, disk, &epoll, poll_mode, latency_ios)?;
        wake_latency(&mut ring, &epoll, poll_mode, latency_ios / 2)?;

        // Clean exit: the ring, then the descriptor, then SPDK.
        drop(ring);
        drop(desc);
        drop(rt);
        println!("done");
        Ok(())
    }

    /// One turn of the loop: waits for the ring or the timer (poll mode:
    /// does not wait), polls the ring, and says whether the timer ticked.
    fn turn(ring: &mut Ring, epoll: &Epoll, poll_mode: bool, limit: Duration) -> (bool, bool) {
        let timeout = if poll_mode {
            Duration::ZERO
        } else {
            ring.next_timeout().map_or(limit, |t| t.min(limit))
        };
        let (mut ring_ready, mut ticked) = (poll_mode, false);
        for token in epoll.wait(timeout) {
            ring_ready |= token == RING_TOKEN;
            ticked |= token == TIMER_TOKEN;
        }
        if ring_ready || ring.next_timeout() == Some(Duration::ZERO) {
            ring.poll();
        }
        (ring_ready, ticked)
    }

    /// Each tick writes a block; each write's completion reads it back;
    /// each read is checked against what was written.
    fn serve_ticks(
        ring: &mut Ring,
        disk: Target,
        epoll: &Epoll,
        timer: &OwnedFd,
        poll_mode: bool,
    ) -> Result<()> {
        let pattern = |block: u64| -> Vec<u8> {
            (0..BLOCK)
                .map(|i| (i as u64 ^ block.wrapping_mul(0x9E37)) as u8)
                .collect()
        };
        let (mut next_block, mut verified) = (0u64, 0u64);
        let started = Instant::now();
        while verified < BLOCKS_CHECKED {
            if started.elapsed() > Duration::from_secs(10) {
                return Err(format!("only {verified} blocks verified in 10 s"));
            }
            let (_, ticked) = turn(ring, epoll, poll_mode, Duration::from_secs(1));
            if ticked {
                read_timer(timer);
                if next_block < BLOCKS_CHECKED {
                    let buf =
                        DmaBuf::from_slice(&pattern(next_block)).map_err(|e| e.to_string())?;
                    let write = opcode::Write::new(disk, buf, next_block).build();
                    ring.push(write.user_data(next_block << 1))
                        .map_err(|_| "SQ full")?;
                    next_block += 1;
                }
            }
            while let Some(mut done) = ring.next_completion() {
                let (block, is_read) = (done.user_data() >> 1, done.user_data() & 1 == 1);
                done.result().map_err(|e| format!("block {block}: {e:?}"))?;
                let buf = done.take_buf().ok_or("I/O without its buffer")?;
                if is_read {
                    if buf.as_slice() != pattern(block).as_slice() {
                        return Err(format!("block {block} read back differs"));
                    }
                    verified += 1;
                } else {
                    let read = opcode::Read::new(disk, buf, block).build();
                    ring.push(read.user_data(block << 1 | 1))
                        .map_err(|_| "SQ full")?;
                }
            }
        }
        println!(
            "served {BLOCKS_CHECKED} timer ticks: each wrote a block, read it back, data identical"
        );
        Ok(())
    }

    /// The process's CPU time over one second with nothing to do.
    fn idle_second(ring: &mut Ring, epoll: &Epoll, poll_mode: bool) {
        let (cpu0, started) = (process_cpu(), Instant::now());
        let mut wakes = 0u64;
        while started.elapsed() < Duration::from_secs(1) {
            let left = Duration::from_secs(1).saturating_sub(started.elapsed());
            if turn(ring, epoll, poll_mode, left).0 {
                wakes += 1;
            }
        }
        let (cpu, wall) = (process_cpu() - cpu0, started.elapsed());
        println!(
            "idle: {:.1} ms CPU over {:.3} s = {:.2} % of a core ({wakes} {})",
            cpu.as_secs_f64() * 1e3,
            wall.as_secs_f64(),
            100.0 * cpu.as_secs_f64() / wall.as_secs_f64(),
            if poll_mode { "polls" } else { "wake-ups" }
        );
    }

    /// One 4 KiB read at a time: from the push in the loop to the
    /// completion the loop sees after it was woken.
    fn latency(
        ring: &mut Ring,
        disk: Target,
        epoll: &Epoll,
        poll_mode: bool,
        ios: usize,
    ) -> Result<()> {
        if ios == 0 {
            return Ok(());
        }
        let mut buf = Some(DmaBuf::alloc(BLOCK, BLOCK).map_err(|e| e.to_string())?);
        let mut samples = Vec::with_capacity(ios);
        for i in 0..ios {
            let read = opcode::Read::new(disk, buf.take().expect("returned"), (i % 64) as u64);
            let pushed = Instant::now();
            ring.push(read.build().user_data(i as u64))
                .map_err(|_| "SQ full")?;
            while buf.is_none() {
                if pushed.elapsed() > Duration::from_secs(5) {
                    return Err(format!("read {i} did not complete in 5 s"));
                }
                turn(ring, epoll, poll_mode, Duration::from_secs(1));
                if let Some(mut done) = ring.next_completion() {
                    done.result().map_err(|e| format!("read {i}: {e:?}"))?;
                    buf = done.take_buf();
                    samples.push(pushed.elapsed());
                }
            }
        }
        let (median, p99) = median_p99(samples);
        println!(
            "I/O latency (push to completion seen, {ios} reads one at a time): \
             median {median:.1} us, p99 {p99:.1} us"
        );
        Ok(())
    }

    /// From another OS thread's message send to the message running in
    /// the loop, which sleeps in `epoll_wait` in between (interrupt mode).
    fn wake_latency(ring: &mut Ring, epoll: &Epoll, poll_mode: bool, wakes: usize) -> Result<()> {
        if wakes == 0 {
            return Ok(());
        }
        let (tx, rx) = std::sync::mpsc::channel::<Duration>();
        let handle = ring.thread().handle();
        let sender = std::thread::spawn(move || {
            for _ in 0..wakes {
                std::thread::sleep(Duration::from_millis(1));
                let (tx, sent) = (tx.clone(), Instant::now());
                if handle
                    .send(move || {
                        let _ = tx.send(sent.elapsed());
                    })
                    .is_err()
                {
                    return;
                }
            }
        });
        let mut samples = Vec::with_capacity(wakes);
        let started = Instant::now();
        while samples.len() < wakes {
            if started.elapsed() > Duration::from_secs(30) {
                return Err(format!(
                    "only {} of {wakes} messages arrived",
                    samples.len()
                ));
            }
            turn(ring, epoll, poll_mode, Duration::from_secs(1));
            samples.extend(rx.try_iter());
        }
        sender.join().map_err(|_| "the sender panicked")?;
        let (median, p99) = median_p99(samples);
        println!(
            "wake-up latency from sleep (another thread's message to it running in the \
             loop, {wakes} messages 1 ms apart): median {median:.1} us, p99 {p99:.1} us"
        );
        Ok(())
    }

    /// Median and 99th percentile, in microseconds.
    fn median_p99(mut samples: Vec<Duration>) -> (f64, f64) {
        samples.sort_unstable();
        let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
        (at(0.5).as_secs_f64() * 1e6, at(0.99).as_secs_f64() * 1e6)
    }

    /// A plain epoll set.
    struct Epoll(OwnedFd);

    impl Epoll {
        fn new() -> Result<Epoll> {
            // SAFETY: creates a new fd; owned at once if valid.
            let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
            if fd < 0 {
                return Err(format!(
                    "epoll_create1: {}",
                    std::io::Error::last_os_error()
                ));
            }
            // SAFETY: fd is new and ours.
            Ok(Epoll(unsafe { OwnedFd::from_raw_fd(fd) }))
        }

        /// Watches `fd` for readability, level-triggered.
        fn add(&self, fd: RawFd, token: u64) -> Result<()> {
            let mut event = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: token,
            };
            // SAFETY: both fds are open; event is valid for the call.
            let rc =
                unsafe { libc::epoll_ctl(self.0.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut event) };
            if rc != 0 {
                return Err(format!("epoll_ctl: {}", std::io::Error::last_os_error()));
            }
            Ok(())
        }

        /// The tokens of the fds that are ready, waiting up to `timeout`
        /// (rounded up to epoll's milliseconds).
        fn wait(&self, timeout: Duration) -> Vec<u64> {
            let ms = timeout.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32;
            let mut events = [libc::epoll_event { events: 0, u64: 0 }; 4];
            // SAFETY: events has room for the 4 entries we allow.
            let n = unsafe { libc::epoll_wait(self.0.as_raw_fd(), events.as_mut_ptr(), 4, ms) };
            events[..n.max(0) as usize].iter().map(|e| e.u64).collect()
        }
    }

    fn timerfd(period: Duration) -> Result<OwnedFd> {
        // SAFETY: creates a new fd; owned at once if valid.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(format!(
                "timerfd_create: {}",
                std::io::Error::last_os_error()
            ));
        }
        // SAFETY: fd is new and ours.
        let timer = unsafe { OwnedFd::from_raw_fd(fd) };
        set_timer(&timer, period)?;
        Ok(timer)
    }

    fn set_timer(timer: &OwnedFd, period: Duration) -> Result<()> {
        let ts = libc::timespec {
            tv_sec: period.as_secs() as libc::time_t,
            tv_nsec: period.subsec_nanos() as libc::c_long,
        };
        let spec = libc::itimerspec {
            it_interval: ts,
            it_value: ts,
        };
        // SAFETY: timer is an open timerfd; spec is valid.
        let rc =
            unsafe { libc::timerfd_settime(timer.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
        if rc != 0 {
            return Err(format!(
                "timerfd_settime: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(())
    }

    fn disarm(timer: &OwnedFd) -> Result<()> {
        set_timer(timer, Duration::ZERO)
    }

    fn read_timer(timer: &OwnedFd) {
        let mut expirations = 0u64;
        // SAFETY: reads 8 bytes into a live u64 from an open timerfd.
        unsafe { libc::read(timer.as_raw_fd(), (&mut expirations as *mut u64).cast(), 8) };
    }

    fn process_cpu() -> Duration {
        // SAFETY: getrusage fills the zeroed struct we pass.
        let usage = unsafe {
            let mut usage: libc::rusage = std::mem::zeroed();
            libc::getrusage(libc::RUSAGE_SELF, &mut usage);
            usage
        };
        let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
        tv(usage.ru_utime) + tv(usage.ru_stime)
    }
}
