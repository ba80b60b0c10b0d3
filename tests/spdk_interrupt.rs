//! SPDK integration tests of interrupt mode: the ring's fd in an epoll
//! loop, an idle ring that sleeps, `next_timeout`, and a bdev that never
//! lets the loop sleep (null).
//!
//! Interrupt mode is process-wide and chosen before SPDK's thread library
//! starts, so these tests have their own binary. One test at a time
//! (`SERIAL`): the idle test measures the whole process's CPU time.

#[cfg(spdk)]
#[path = "common/mod.rs"]
mod common;

#[cfg(spdk)]
#[path = "common/nvmf.rs"]
mod nvmf;

#[path = "common/skipped.rs"]
#[macro_use]
mod skipped;
report_skipped_without_spdk!();

#[cfg(spdk)]
mod support {
    pub use super::common::*;
    pub use spdk_ring::{opcode, BdevDesc, DmaBuf, JsonConfig, OpenMode, Ring, SpdkThread};
    pub use std::os::fd::{AsRawFd, BorrowedFd};
    use std::sync::{Mutex, MutexGuard, OnceLock};
    pub use std::time::{Duration, Instant};

    pub const AIO_BLOCK_SIZE: u32 = 4096;

    /// The AIO bdev's backing file, in tmpfs (`/dev/shm`); unlinked once the
    /// bdev has it open.
    fn aio_path() -> &'static str {
        static PATH: OnceLock<String> = OnceLock::new();
        PATH.get_or_init(|| format!("/dev/shm/spdk-ring-interrupt-{}.img", std::process::id()))
    }

    fn config() -> JsonConfig {
        let file = std::fs::File::create(aio_path()).expect("create the AIO file in /dev/shm");
        file.set_len(8 << 20).expect("size the AIO file");
        JsonConfig::new()
            .aio_bdev("Aio0", aio_path(), AIO_BLOCK_SIZE)
            .null_bdev("Null0", NULL_BLOCKS, NULL_BLOCK_SIZE)
            .malloc_bdev("Malloc0", MALLOC_BLOCKS, MALLOC_BLOCK_SIZE)
    }

    /// The runtime, in interrupt mode, with `Aio0` and `Null0`; and the
    /// one-test-at-a-time lock.
    pub fn start() -> MutexGuard<'static, ()> {
        static SERIAL: Mutex<()> = Mutex::new(());
        let guard = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        use_interrupt_mode();
        fixture_with(config);
        let _ = std::fs::remove_file(aio_path());
        assert!(spdk_ring::interrupt_mode());
        guard
    }

    /// A ring on a fresh SPDK thread of this test's OS thread, with one
    /// bdev registered. Fields drop in order: ring, descriptor, thread.
    #[allow(dead_code)] // held for their drop order
    pub struct Rig {
        pub ring: Ring,
        pub desc: BdevDesc,
        pub thread: SpdkThread,
        pub target: spdk_ring::Target,
    }

    pub fn rig(bdev: &str, name: &str) -> Rig {
        let thread = SpdkThread::attach(name).unwrap();
        let desc = BdevDesc::open(bdev, OpenMode::ReadWrite).unwrap();
        let mut ring = Ring::new(32).unwrap();
        let target = ring.register_bdev(&desc).unwrap();
        // Let the thread finish what opening the channel queued.
        for _ in 0..10 {
            ring.poll();
        }
        Rig {
            ring,
            desc,
            thread,
            target,
        }
    }

    /// Whether `fd` is readable within `timeout` (poll(2)).
    pub fn readable(fd: BorrowedFd<'_>, timeout: Duration) -> bool {
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd on an open fd.
        let n = unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as i32) };
        assert!(n >= 0, "poll(2) failed");
        n == 1
    }

    /// A plain epoll set watching the ring's fd.
    pub struct Epoll(std::os::fd::OwnedFd);

    impl Epoll {
        pub fn new(ring: &Ring) -> Epoll {
            use std::os::fd::FromRawFd;
            // SAFETY: creates a new fd, owned at once.
            let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
            assert!(fd >= 0);
            // SAFETY: fd is the new epoll fd.
            let epoll = Epoll(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) });
            let mut event = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: 1,
            };
            // SAFETY: both fds are open; event is valid.
            let rc =
                unsafe { libc::epoll_ctl(fd, libc::EPOLL_CTL_ADD, ring.as_raw_fd(), &mut event) };
            assert_eq!(rc, 0);
            epoll
        }

        /// One `epoll_wait`, for at most `timeout` (`None`: no limit).
        /// Returns whether the ring's fd was reported.
        pub fn wait(&self, timeout: Option<Duration>) -> bool {
            let ms = timeout.map_or(-1, |t| t.as_nanos().div_ceil(1_000_000) as i32);
            let mut events = [libc::epoll_event { events: 0, u64: 0 }; 4];
            // SAFETY: events is a valid array of 4 entries.
            let n = unsafe { libc::epoll_wait(self.0.as_raw_fd(), events.as_mut_ptr(), 4, ms) };
            assert!(n >= 0, "epoll_wait failed");
            n > 0
        }
    }

    /// Runs an epoll loop (sleeping for `next_timeout`, at most `limit`)
    /// until `want` completions are reaped or `limit` passes; returns
    /// (user_data, result) of each and how many times the loop woke.
    pub fn epoll_until(
        ring: &mut Ring,
        epoll: &Epoll,
        want: usize,
        limit: Duration,
    ) -> (Vec<(u64, i64)>, u32, Vec<DmaBuf>) {
        let deadline = Instant::now() + limit;
        let (mut done, mut bufs, mut wakes) = (Vec::new(), Vec::new(), 0);
        while done.len() < want {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "only {} of {want} completions in {limit:?}",
                done.len()
            );
            let timeout = ring.next_timeout().map_or(left, |t| t.min(left));
            if epoll.wait(Some(timeout)) {
                wakes += 1;
            }
            ring.poll();
            for mut c in ring.completions() {
                let result = match c.result() {
                    Ok(n) => n as i64,
                    Err(e) => -(e.errno().0 as i64),
                };
                done.push((c.user_data(), result));
                if let Some(buf) = c.take_buf() {
                    bufs.push(buf);
                }
            }
        }
        (done, wakes, bufs)
    }

    /// CPU time of the whole process so far (user + system).
    pub fn process_cpu() -> Duration {
        // SAFETY: getrusage fills the zeroed struct we pass.
        let usage = unsafe {
            let mut usage: libc::rusage = std::mem::zeroed();
            assert_eq!(libc::getrusage(libc::RUSAGE_SELF, &mut usage), 0);
            usage
        };
        let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
        tv(usage.ru_utime) + tv(usage.ru_stime)
    }
}

#[cfg(spdk)]
use support::*;

#[cfg(spdk)]
#[test]
fn interrupt_aio_ring_fd_sleeps_when_idle_wakes_on_push_and_serves_epoll_loop() {
    let _serial = start();
    let mut rig = rig("Aio0", "interrupt-aio");
    let (ring, target) = (&mut rig.ring, rig.target);
    let fd = ring.fd().expect("a ring has an fd in interrupt mode");
    assert_eq!(ring.as_raw_fd(), fd.as_raw_fd());
    assert!(
        !readable(fd, Duration::from_millis(200)),
        "an idle ring's fd must not be readable"
    );
    assert_eq!(
        ring.next_timeout(),
        None,
        "nothing is due on an idle AIO ring"
    );

    let pattern: Vec<u8> = (0..8192u32).map(|i| (i * 7 + 3) as u8).collect();
    let buf = DmaBuf::from_slice(&pattern).unwrap();
    ring.push(opcode::Write::new(target, buf, 2).build().user_data(1))
        .unwrap();
    let fd = ring.fd().unwrap();
    assert!(
        readable(fd, Duration::ZERO),
        "a pushed entry makes the fd readable"
    );
    assert_eq!(ring.next_timeout(), Some(Duration::ZERO));

    let epoll = Epoll::new(ring);
    let (done, _, _) = epoll_until(ring, &epoll, 1, Duration::from_secs(5));
    assert_eq!(done, vec![(1, 8192)]);
    assert!(
        !readable(ring.fd().unwrap(), Duration::from_millis(50)),
        "with the CQ drained, the fd is quiet again"
    );

    let buf = DmaBuf::alloc(8192, 4096).unwrap();
    ring.push(opcode::Read::new(target, buf, 2).build().user_data(2))
        .unwrap();
    let (done, _, mut bufs) = epoll_until(ring, &epoll, 1, Duration::from_secs(5));
    assert_eq!(done, vec![(2, 8192)]);
    assert_eq!(bufs.pop().unwrap().as_slice(), &pattern[..]);
    assert!(!readable(ring.fd().unwrap(), Duration::from_millis(50)));
}

#[cfg(spdk)]
#[test]
fn interrupt_fd_stays_readable_while_completions_wait_in_the_cq() {
    let _serial = start();
    let mut rig = rig("Aio0", "interrupt-cq");
    let (ring, target) = (&mut rig.ring, rig.target);
    let epoll = Epoll::new(ring);
    ring.push(
        opcode::Read::new(target, DmaBuf::alloc(4096, 4096).unwrap(), 0)
            .build()
            .user_data(7),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while ring.cq_len() == 0 {
        assert!(Instant::now() < deadline, "the read did not complete");
        epoll.wait(Some(Duration::from_millis(100)));
        ring.poll();
    }
    // Not reaped: the loop still has work, however often it polls.
    ring.poll();
    assert!(readable(ring.fd().unwrap(), Duration::ZERO));
    assert_eq!(ring.next_timeout(), Some(Duration::ZERO));
    let done: Vec<u64> = ring.completions().map(|c| c.user_data()).collect();
    assert_eq!(done, vec![7]);
    assert!(!readable(ring.fd().unwrap(), Duration::from_millis(20)));
}

#[cfg(spdk)]
#[test]
fn idle_interrupt_ring_uses_under_5_percent_of_a_core() {
    let _serial = start();
    let mut rig = rig("Aio0", "interrupt-idle");
    let ring = &mut rig.ring;
    let epoll = Epoll::new(ring);
    let (start_cpu, started) = (process_cpu(), Instant::now());
    let mut wakes = 0;
    while started.elapsed() < Duration::from_secs(1) {
        let left = Duration::from_secs(1).saturating_sub(started.elapsed());
        let timeout = ring.next_timeout().map_or(left, |t| t.min(left));
        if epoll.wait(Some(timeout)) {
            wakes += 1;
            ring.poll();
        }
    }
    let cpu = process_cpu() - start_cpu;
    let wall = started.elapsed();
    eprintln!("idle second in interrupt mode: {cpu:?} CPU over {wall:?}, {wakes} wake-ups");
    assert!(
        cpu.as_secs_f64() < 0.05 * wall.as_secs_f64(),
        "an idle ring in interrupt mode used {cpu:?} of CPU in {wall:?}"
    );
    assert_eq!(wakes, 0, "nothing should wake an idle AIO ring");
}

#[cfg(spdk)]
#[test]
fn next_timeout_lets_an_epoll_loop_sleep_until_a_timeout_entry_fires() {
    let _serial = start();
    let mut rig = rig("Aio0", "interrupt-timeout");
    let ring = &mut rig.ring;
    let epoll = Epoll::new(ring);
    let after = Duration::from_millis(60);
    let pushed = Instant::now();
    ring.push(opcode::Timeout::new(after).build().user_data(9))
        .unwrap();
    ring.poll(); // arms it
    let first = ring
        .next_timeout()
        .expect("an armed Timeout has a deadline");
    assert!(
        first > Duration::ZERO && first <= after,
        "next_timeout {first:?} for a {after:?} Timeout"
    );
    let (done, wakes, _) = epoll_until(ring, &epoll, 1, Duration::from_secs(5));
    let elapsed = pushed.elapsed();
    assert_eq!(done, vec![(9, -(libc::ETIME as i64))]);
    assert!(elapsed >= after, "fired after {elapsed:?}");
    // Slept through: one wake for the deadline (plus rounding), not a spin.
    assert!(wakes <= 3, "{wakes} wake-ups for one Timeout");
    assert_eq!(ring.next_timeout(), None);
}

#[cfg(spdk)]
#[test]
fn interrupt_ring_fd_alone_fires_a_timeout_under_an_unbounded_epoll_wait() {
    let _serial = start();
    let mut rig = rig("Aio0", "interrupt-timerfd");
    let ring = &mut rig.ring;
    let epoll = Epoll::new(ring);
    let after = Duration::from_millis(30);
    let pushed = Instant::now();
    ring.push(opcode::Timeout::new(after).build().user_data(3))
        .unwrap();
    ring.poll();
    // No next_timeout passed to epoll_wait (only a cap far beyond the
    // deadline): the ring's timerfd must wake it.
    let mut wakes = 0;
    while ring.cq_len() == 0 {
        assert!(
            epoll.wait(Some(Duration::from_secs(2))),
            "the ring's fd did not fire for the Timeout"
        );
        wakes += 1;
        ring.poll();
    }
    assert!(pushed.elapsed() >= after);
    assert!(wakes <= 3, "{wakes} wake-ups for one Timeout");
    let done: Vec<_> = ring
        .completions()
        .map(|c| (c.user_data(), c.result().map_err(|e| e.errno().0)))
        .collect();
    assert_eq!(done, vec![(3, Err(libc::ETIME))]);
}

#[cfg(spdk)]
#[test]
fn interrupt_null_and_malloc_bdevs_give_correct_results_but_keep_the_fd_readable() {
    let _serial = start();
    for (bdev, block) in [("Null0", NULL_BLOCK_SIZE), ("Malloc0", MALLOC_BLOCK_SIZE)] {
        let mut rig = rig(bdev, &format!("interrupt-{bdev}"));
        let (ring, target) = (&mut rig.ring, rig.target);
        let epoll = Epoll::new(ring);
        for i in 0..8u64 {
            let buf = DmaBuf::from_slice(&vec![i as u8 + 1; block as usize]).unwrap();
            ring.push(opcode::Write::new(target, buf, i).build().user_data(i))
                .unwrap();
        }
        let (mut done, _, _) = epoll_until(ring, &epoll, 8, Duration::from_secs(5));
        done.sort_unstable();
        let want: Vec<(u64, i64)> = (0..8).map(|i| (i, block as i64)).collect();
        assert_eq!(done, want, "{bdev} writes");
        for i in 0..8u64 {
            let buf = DmaBuf::alloc(block as usize, 4096).unwrap();
            ring.push(opcode::Read::new(target, buf, i).build().user_data(i))
                .unwrap();
        }
        let (mut done, _, bufs) = epoll_until(ring, &epoll, 8, Duration::from_secs(5));
        done.sort_unstable();
        assert_eq!(done, want, "{bdev} reads");
        if bdev == "Malloc0" {
            // Malloc keeps data; null reads return whatever (zeroes or not).
            let mut firsts: Vec<u8> = bufs.iter().map(|b| b.as_slice()[0]).collect();
            firsts.sort_unstable();
            assert_eq!(firsts, (1..=8).collect::<Vec<u8>>());
            assert!(bufs
                .iter()
                .all(|b| b.as_slice().iter().all(|&x| x == b.as_slice()[0])));
        }
        // Their channels' pollers run on every poll (period 0): in
        // interrupt mode SPDK keeps their eventfds readable, so the loop
        // never sleeps while the ring holds such a channel.
        assert!(readable(ring.fd().unwrap(), Duration::ZERO), "{bdev}");
        ring.poll();
        assert!(readable(ring.fd().unwrap(), Duration::ZERO), "{bdev}");
    }
}

#[cfg(spdk)]
#[test]
fn interrupt_submit_and_wait_sleeps_on_the_fd() {
    let _serial = start();
    let mut rig = rig("Aio0", "interrupt-wait");
    let (ring, target) = (&mut rig.ring, rig.target);
    let (start_cpu, started) = (process_cpu(), Instant::now());
    ring.push(
        opcode::Timeout::new(Duration::from_millis(300))
            .build()
            .user_data(1),
    )
    .unwrap();
    assert_eq!(ring.submit_and_wait(1, Duration::from_secs(5)).unwrap(), 1);
    let (cpu, wall) = (process_cpu() - start_cpu, started.elapsed());
    assert!(wall >= Duration::from_millis(300));
    assert!(
        cpu.as_secs_f64() < 0.25 * wall.as_secs_f64(),
        "submit_and_wait spun: {cpu:?} of CPU in {wall:?}"
    );
    let _ = ring.completions().count();
    // And I/O through it, data intact.
    let buf = DmaBuf::from_slice(&[0x5a; 4096]).unwrap();
    ring.push(opcode::Write::new(target, buf, 9).build().user_data(2))
        .unwrap();
    ring.submit_and_wait(1, Duration::from_secs(5)).unwrap();
    assert_eq!(ring.next_completion().unwrap().result(), Ok(4096));
    ring.push(
        opcode::Read::new(target, DmaBuf::alloc(4096, 4096).unwrap(), 9)
            .build()
            .user_data(3),
    )
    .unwrap();
    ring.submit_and_wait(1, Duration::from_secs(5)).unwrap();
    let mut c = ring.next_completion().unwrap();
    assert_eq!(c.result(), Ok(4096));
    assert!(c.take_buf().unwrap().as_slice().iter().all(|&b| b == 0x5a));
}

#[cfg(spdk)]
#[test]
fn interrupt_thread_fd_is_exposed_and_poll_mode_has_none_is_documented() {
    let _serial = start();
    let thread = SpdkThread::attach("interrupt-thread").unwrap();
    let fd = thread
        .interrupt_fd()
        .expect("threads have an fd in interrupt mode");
    // A message for the thread makes its fd readable; polling runs it.
    let ran = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = ran.clone();
    let handle = thread.handle();
    std::thread::spawn(move || {
        handle
            .send(move || flag.store(true, std::sync::atomic::Ordering::SeqCst))
            .unwrap()
    })
    .join()
    .unwrap();
    assert!(readable(fd, Duration::from_secs(1)));
    thread.poll();
    assert!(ran.load(std::sync::atomic::Ordering::SeqCst));
    assert!(!readable(
        thread.interrupt_fd().unwrap(),
        Duration::from_millis(20)
    ));
}

#[cfg(spdk)]
#[test]
fn interrupt_nvme_tcp_namespace_completes_through_the_rings_timed_poll() {
    use spdk_ring::nvme::{ControllerOptions, NvmeController, TransportId};
    use spdk_ring::{NVME_INTERRUPT_POLL_PERIOD, NVME_KEEP_ALIVE_POLL_PERIOD};
    let _serial = start();
    let thread = SpdkThread::attach("interrupt-nvme").unwrap();
    let trid = TransportId::tcp("127.0.0.1", nvmf::target().port, nvmf::NQN).unwrap();
    let ctrlr = NvmeController::connect(&trid, &ControllerOptions::default()).unwrap();
    let mut ring = Ring::new(16).unwrap();
    let disk = ring.register_nvme_namespace(&ctrlr, 1, None).unwrap();
    ring.poll();
    // Idle, the namespace still needs its keep-alive.
    let idle = ring
        .next_timeout()
        .expect("an NVMe target is polled for keep-alive");
    assert!(idle > NVME_INTERRUPT_POLL_PERIOD && idle <= NVME_KEEP_ALIVE_POLL_PERIOD);

    let epoll = Epoll::new(&ring);
    let pattern: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
    let (lba, blocks) = (30_000u64, 8u64);
    let write = opcode::NvmeWrite::new(disk, DmaBuf::from_slice(&pattern).unwrap(), lba);
    ring.push(write.build().user_data(1)).unwrap();
    let read = opcode::NvmeRead::new(disk, DmaBuf::alloc(4096, 4096).unwrap(), lba);
    let mut results = Vec::new();
    let mut read_back = None;
    let started = Instant::now();
    let mut wakes = 0u32;
    let mut read = Some(read);
    while read_back.is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "NVMe I/O stuck: {results:?}"
        );
        // No next_timeout: the ring's timerfd must wake the loop for the
        // qpair, which has no fd over TCP.
        assert!(
            epoll.wait(Some(Duration::from_secs(2))),
            "nothing woke the loop for the NVMe qpair"
        );
        wakes += 1;
        ring.poll();
        let done: Vec<_> = ring.completions().collect();
        for mut c in done {
            results.push((c.user_data(), c.result().map_err(|e| e.errno().0)));
            if c.user_data() == 1 {
                let entry = read.take().unwrap().build().user_data(2);
                ring.push(entry).unwrap();
            } else {
                read_back = c.take_buf();
            }
        }
    }
    assert_eq!(results, vec![(1, Ok(blocks * 512)), (2, Ok(blocks * 512))]);
    assert_eq!(read_back.unwrap().as_slice(), &pattern[..]);
    eprintln!(
        "NVMe/TCP write + read in interrupt mode: {wakes} wake-ups, {:?}",
        started.elapsed()
    );
    drop(ring);
    drop(ctrlr);
    drop(thread);
}

/// Another thread's forwarded entry, and its `MsgRing` message, make an
/// idle interrupt-mode ring's fd readable: the loop sleeping on it wakes,
/// runs the entry, and the forwarding ring gets the completion back.
#[cfg(spdk)]
#[test]
fn interrupt_forward_and_msg_ring_wake_an_idle_target_ring() {
    use spdk_ring::{EntryFlags, ForwardEntry};
    use std::sync::mpsc::channel;
    let _serial = start();
    let mut rig = rig("Aio0", "interrupt-forward-target");
    let (ring, target) = (&mut rig.ring, rig.target);
    let epoll = Epoll::new(ring);
    assert!(
        !readable(ring.fd().unwrap(), Duration::from_millis(100)),
        "the target ring starts idle"
    );

    let sender = ring.sender();
    let (go_tx, go_rx) = channel::<()>();
    let (back_tx, back_rx) = channel::<(u64, i64, Vec<u8>)>();
    let pattern: Vec<u8> = (0..4096u32).map(|i| (i * 13 + 5) as u8).collect();
    let data = pattern.clone();
    let forwarder = SpdkThread::spawn("interrupt-forwarder", move |_| {
        let mut ring = Ring::new(8).unwrap();
        go_rx.recv().unwrap();
        let entry = ForwardEntry::from(opcode::Write::new(
            target,
            DmaBuf::from_slice(&data).unwrap(),
            6,
        ));
        ring.forward(&sender, entry.user_data(41)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            assert!(Instant::now() < deadline, "the forwarded write came back");
            ring.poll();
            if let Some(mut c) = ring.next_completion() {
                let result = c
                    .result()
                    .map_or_else(|e| -(e.errno().0 as i64), |n| n as i64);
                let buf = c.take_buf().unwrap();
                back_tx
                    .send((c.user_data(), result, buf.as_slice().to_vec()))
                    .unwrap();
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        // Then a message, once the target is idle again.
        go_rx.recv().unwrap();
        let msg = opcode::MsgRing::new(&sender, 77, 1234).build();
        ring.push(msg.flags(EntryFlags::SKIP_SUCCESS)).unwrap();
        ring.poll();
        assert_eq!(ring.sq_len(), 0, "the message left with the poll");
        assert!(
            ring.next_completion().is_none(),
            "a message sent with SKIP_SUCCESS posts nothing on success"
        );
    })
    .unwrap();

    // The write: the loop sleeps until the other thread forwards it.
    go_tx.send(()).unwrap();
    assert!(
        epoll.wait(Some(Duration::from_secs(5))),
        "a forwarded entry wakes the sleeping loop"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    let (user_data, result, written) = loop {
        assert!(Instant::now() < deadline, "the write did not come back");
        ring.poll();
        if let Ok(back) = back_rx.try_recv() {
            break back;
        }
        epoll.wait(Some(Duration::from_millis(10)));
    };
    assert_eq!((user_data, result), (41, 4096));
    assert_eq!(
        written, pattern,
        "the buffer travels back with the completion"
    );
    ring.poll();
    assert!(
        !readable(ring.fd().unwrap(), Duration::from_millis(100)),
        "idle again once the forwarded entry is done"
    );

    // The message: it lands in this ring's CQ, which wakes the loop.
    go_tx.send(()).unwrap();
    let (done, wakes, _) = epoll_until(ring, &epoll, 1, Duration::from_secs(5));
    assert_eq!(done, vec![(77, 1234)]);
    assert!(wakes >= 1, "the message woke the loop");
    forwarder.join().unwrap();

    // What the other thread wrote is on the bdev.
    ring.push(
        opcode::Read::new(target, DmaBuf::alloc(4096, 4096).unwrap(), 6)
            .build()
            .user_data(42),
    )
    .unwrap();
    let (done, _, mut bufs) = epoll_until(ring, &epoll, 1, Duration::from_secs(5));
    assert_eq!(done, vec![(42, 4096)]);
    assert_eq!(bufs.pop().unwrap().as_slice(), &pattern[..]);
}
