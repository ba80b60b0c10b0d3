//! Many cores: a ring per core, entries forwarded between them
//! (`RingSender`), `MsgRing`, and what happens when a ring is dropped
//! first. SPDK runs on two cores (`-m 0x3`, no hugepages); the "remote"
//! ring lives on an SPDK thread pinned to core 1, the test's own ring on
//! the test thread. `cargo test forward` and `cargo test msg_ring` select
//! these tests. Its own process: it counts allocations with a global
//! allocator.

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
mod remote {
    use super::common::*;
    use spdk_ring::{opcode, BdevDesc, JsonConfig, OpenMode, Ring, RingSender, SpdkThread, Target};
    use std::sync::mpsc::{channel, Receiver, Sender};
    use std::time::{Duration, Instant};

    pub const SLOW_US: u64 = 100_000;

    pub fn config() -> JsonConfig {
        base_config().malloc_bdev("SlowBase", 8192, 512).method(
            "bdev_delay_create",
            format!(
                "{{\"name\": \"Slow0\", \"base_bdev_name\": \"SlowBase\", \
                 \"avg_read_latency\": {SLOW_US}, \"p99_read_latency\": {SLOW_US}, \
                 \"avg_write_latency\": {SLOW_US}, \"p99_write_latency\": {SLOW_US}}}"
            ),
        )
    }

    pub fn start() {
        fixture_on_cores(config, Some("0x3"));
    }

    /// What a ring reaped: (user_data, result or errno).
    pub type Reaped = Vec<(u64, Result<u64, i32>)>;

    /// What the remote thread is told to do.
    pub enum Ctl {
        /// Stop (false) or resume (true) polling.
        Poll(bool),
        /// Stop (false) or resume (true) reaping its own CQ.
        Reap(bool),
        /// Push this many Nops (to fill its CQ).
        Nops(u32),
        /// Drop the ring, keep the thread.
        DropRing,
        /// Count this thread's allocations (`counting`), or stop.
        CountAllocs(bool),
        /// Nothing: its answer comes, like every answer, after a poll
        /// that followed it.
        Sync,
        Exit,
    }

    /// A ring on an SPDK thread pinned to core 1, polling until told
    /// otherwise; it reports what it reaped from its own CQ.
    pub struct Remote {
        pub sender: RingSender,
        pub target: Target,
        ctl: Sender<Ctl>,
        acks: Receiver<()>,
        handle: Option<spdk_ring::JoinHandle<Reaped>>,
    }

    impl Remote {
        /// A remote ring of `sq` entries (CQ twice it) with `forward`
        /// entries each way, with `bdev` registered.
        pub fn start(bdev: &'static str, sq: u32, forward: u32) -> Remote {
            start();
            let (setup_tx, setup_rx) = channel();
            let (ctl_tx, ctl_rx) = channel::<Ctl>();
            let (ack_tx, acks) = channel();
            let handle = spdk_ring::cores::spawn_pinned("remote", 1, move |_: &SpdkThread| {
                let desc = BdevDesc::open(bdev, OpenMode::ReadWrite).unwrap();
                let mut ring = Some(Ring::builder(sq).forward_entries(forward).build().unwrap());
                let target = ring.as_mut().unwrap().register_bdev(&desc).unwrap();
                setup_tx
                    .send((ring.as_ref().unwrap().sender(), target))
                    .unwrap();
                let (mut polling, mut reaping) = (true, true);
                // Preallocated: the allocation test counts this thread.
                let mut reaped = Vec::with_capacity(100_000);
                loop {
                    let mut answers = 0;
                    for ctl in ctl_rx.try_iter() {
                        match ctl {
                            Ctl::Poll(on) => polling = on,
                            Ctl::Reap(on) => reaping = on,
                            Ctl::Nops(n) => {
                                for i in 0..n {
                                    let nop =
                                        opcode::Nop::new().build().user_data(u64::MAX - i as u64);
                                    ring.as_mut().unwrap().push(nop).unwrap();
                                }
                            }
                            Ctl::DropRing => drop(ring.take()),
                            Ctl::CountAllocs(on) => super::counting::COUNT_HERE.with(|c| c.set(on)),
                            Ctl::Sync => {}
                            Ctl::Exit => return reaped,
                        }
                        answers += 1;
                    }
                    if let Some(ring) = ring.as_mut().filter(|_| polling) {
                        ring.poll();
                        while let Some(done) = reaping.then(|| ring.reap()).flatten() {
                            let result = done.result().map_err(|e| e.errno().0);
                            reaped.push((done.user_data(), result));
                        }
                    } else {
                        std::thread::yield_now();
                    }
                    for _ in 0..answers {
                        ack_tx.send(()).unwrap();
                    }
                }
            })
            .unwrap();
            let (sender, target) = setup_rx.recv_timeout(WAIT).expect("remote ring ready");
            Remote {
                sender,
                target,
                ctl: ctl_tx,
                acks,
                handle: Some(handle),
            }
        }

        /// Tells the remote thread, and waits until it has done it and
        /// polled its ring once more (if it polls).
        pub fn tell(&self, ctl: Ctl) {
            self.ctl.send(ctl).unwrap();
            self.acks.recv_timeout(WAIT).expect("remote thread answers");
        }

        /// Stops the thread; what its ring reaped from its own CQ.
        pub fn finish(mut self) -> Reaped {
            self.ctl.send(Ctl::Exit).unwrap();
            self.handle.take().unwrap().join().unwrap()
        }
    }

    /// Polls `ring` until `n` completions were reaped; (user_data, result
    /// or errno, buffer) in CQ order.
    pub fn collect(
        ring: &mut Ring,
        n: usize,
    ) -> Vec<(u64, Result<u64, i32>, Option<spdk_ring::DmaBuf>)> {
        let deadline = Instant::now() + WAIT;
        let mut out = Vec::new();
        while out.len() < n {
            assert!(
                Instant::now() < deadline,
                "only {} of {n} completions",
                out.len()
            );
            ring.poll();
            for mut done in ring.completions() {
                let buf = done.take_buf();
                out.push((
                    done.user_data(),
                    done.result().map_err(|e| e.errno().0),
                    buf,
                ));
            }
        }
        // Nothing more may come.
        let quiet = Instant::now() + Duration::from_millis(50);
        while Instant::now() < quiet {
            ring.poll();
            assert_eq!(ring.cq_len(), 0, "more completions than entries");
        }
        out
    }
}

#[cfg(spdk)]
fn pattern(seed: u64) -> spdk_ring::DmaBuf {
    let mut buf = spdk_ring::DmaBuf::alloc(4096, 0).unwrap();
    for (i, b) in buf.as_mut_slice().iter_mut().enumerate() {
        *b = (seed.wrapping_mul(31).wrapping_add(i as u64 * 7) % 251) as u8;
    }
    buf
}

/// Writes forwarded to core 1's ring land, each completes exactly once in
/// the forwarding ring's CQ with its user_data and its buffer, and reading
/// back locally finds the data.
#[cfg(spdk)]
#[test]
fn forward_writes_through_core1_complete_once_and_read_back_locally() {
    use remote::*;
    use spdk_ring::{opcode, BdevDesc, ForwardEntry, OpenMode, Ring, SpdkThread};
    let core1 = Remote::start("Malloc0", 64, 32);
    let _thread = SpdkThread::attach("forward-local").unwrap();
    let desc = BdevDesc::open("Malloc0", OpenMode::ReadWrite).unwrap();
    let mut ring = Ring::new(64).unwrap();
    let local = ring.register_bdev(&desc).unwrap();
    let n = 200u64;
    let mut next = 0;
    let mut out = Vec::new();
    while next < n || out.len() < n as usize {
        while next < n {
            let entry =
                ForwardEntry::from(opcode::Write::new(core1.target, pattern(next), next * 8));
            match ring.forward(&core1.sender, entry.user_data(next)) {
                Ok(()) => next += 1,
                Err(e) => {
                    assert_eq!(e.entry.get_user_data(), next, "handed back untouched");
                    break;
                }
            }
        }
        ring.poll();
        for mut done in ring.completions() {
            out.push((done.user_data(), done.result(), done.take_buf()));
        }
    }
    assert_eq!(ring.forwarded_out(), 0);
    let mut seen = vec![0; n as usize];
    for (user_data, result, buf) in out {
        seen[user_data as usize] += 1;
        assert_eq!(result, Ok(4096), "entry {user_data}");
        let buf = buf.expect("the buffer comes back");
        assert_eq!(buf.as_slice(), pattern(user_data).as_slice());
    }
    assert!(seen.iter().all(|&s| s == 1), "each exactly once: {seen:?}");
    // Read back locally, through this ring's own target.
    for i in 0..n {
        let read = spdk_ring::DmaBuf::alloc(4096, 0).unwrap();
        ring.push(opcode::Read::new(local, read, i * 8).build().user_data(i))
            .unwrap();
        let done = collect(&mut ring, 1);
        assert_eq!(done[0].1, Ok(4096));
        assert_eq!(
            done[0].2.as_ref().unwrap().as_slice(),
            pattern(i).as_slice()
        );
    }
    assert!(
        core1.finish().is_empty(),
        "forwarded entries never reach the target's CQ"
    );
}

/// Errors of forwarded entries are the target ring's: an entry naming the
/// forwarding ring's own target fails EBADF, one beyond the bdev EINVAL.
#[cfg(spdk)]
#[test]
fn forward_errors_are_checked_by_the_target_ring() {
    use remote::*;
    use spdk_ring::{opcode, BdevDesc, ForwardEntry, OpenMode, Ring, SpdkThread};
    let core1 = Remote::start("Malloc0", 16, 16);
    let _thread = SpdkThread::attach("forward-errors").unwrap();
    let desc = BdevDesc::open("Malloc0", OpenMode::ReadWrite).unwrap();
    let mut ring = Ring::new(16).unwrap();
    let local = ring.register_bdev(&desc).unwrap();
    let buf = || spdk_ring::DmaBuf::alloc(4096, 0).unwrap();
    let entries = [
        ForwardEntry::from(opcode::Read::new(local, buf(), 0)).user_data(1),
        ForwardEntry::from(opcode::Read::new(
            core1.target,
            buf(),
            common::MALLOC_BLOCKS,
        ))
        .user_data(2),
        ForwardEntry::from(opcode::Flush::new(core1.target, 0, 8)).user_data(3),
    ];
    for e in entries {
        ring.forward(&core1.sender, e).unwrap();
    }
    let mut done = collect(&mut ring, 3);
    done.sort_by_key(|d| d.0);
    assert_eq!(done[0].1, Err(libc::EBADF));
    assert!(done[0].2.is_some(), "the buffer comes back on failure too");
    assert_eq!(done[1].1, Err(libc::EINVAL));
    assert_eq!(done[2].1, Ok(0));
    assert!(done[2].2.is_none());
    core1.finish();
}

/// A full target mailbox hands the entry back (with its buffer), and so
/// does a forwarding ring with as many entries out as it can take back;
/// nothing is lost, and once the target polls every entry completes once.
#[cfg(spdk)]
#[test]
fn forward_backpressure_hands_the_entry_back() {
    use remote::*;
    use spdk_ring::{opcode, ForwardEntry, Ring, SpdkThread};
    let core1 = Remote::start("Null0", 16, 8);
    core1.tell(Ctl::Poll(false));
    let _thread = SpdkThread::attach("forward-backpressure").unwrap();
    let mut ring = Ring::builder(64).forward_entries(64).build().unwrap();
    let read =
        |i: u64| ForwardEntry::from(opcode::Read::new(core1.target, pattern(i), i)).user_data(i);
    for i in 0..8 {
        ring.forward(&core1.sender, read(i)).unwrap();
    }
    let back = ring.forward(&core1.sender, read(8)).unwrap_err();
    assert_eq!(back.entry.get_user_data(), 8);
    // The buffer is still in the entry: push it locally instead.
    let _local_entry = back.entry.into_entry();
    core1.tell(Ctl::Poll(true));
    let done = collect(&mut ring, 8);
    let mut ids: Vec<u64> = done.iter().map(|d| d.0).collect();
    ids.sort();
    assert_eq!(ids, (0..8).collect::<Vec<_>>());
    assert!(done.iter().all(|d| d.1 == Ok(4096) && d.2.is_some()));

    // The forwarding side's limit: 4 out, the fifth comes back.
    core1.tell(Ctl::Poll(false));
    let mut small = Ring::builder(8).forward_entries(4).build().unwrap();
    for i in 0..4 {
        small.forward(&core1.sender, read(i)).unwrap();
    }
    assert_eq!(small.forwarded_out(), 4);
    assert!(small.forward(&core1.sender, read(4)).is_err());
    core1.tell(Ctl::Poll(true));
    assert_eq!(collect(&mut small, 4).len(), 4);
    assert_eq!(small.forwarded_out(), 0);
    small.forward(&core1.sender, read(5)).unwrap();
    assert_eq!(collect(&mut small, 1)[0].0, 5);
    core1.finish();
}

/// The target ring is dropped with forwarded entries in flight (on a
/// 100 ms delay bdev) and more waiting in its mailbox: the first finish
/// and come back with their result, the others come back ECANCELED, each
/// exactly once with its buffer; forwarding to it afterwards completes
/// ECANCELED at once.
#[cfg(spdk)]
#[test]
fn forward_target_dropped_with_entries_in_flight() {
    use remote::*;
    use spdk_ring::{opcode, BdevDesc, ForwardEntry, OpenMode, Ring, SpdkThread};
    let core1 = Remote::start("Slow0", 16, 8);
    let _thread = SpdkThread::attach("forward-target-drop").unwrap();
    let mut ring = Ring::builder(32).build().unwrap();
    let write = |i: u64| {
        ForwardEntry::from(opcode::Write::new(core1.target, pattern(i), i * 8)).user_data(i)
    };
    // 8 start on core 1 (its forward slots), 8 wait in its mailbox.
    let mut next = 0;
    let deadline = std::time::Instant::now() + common::WAIT;
    while next < 16 {
        assert!(std::time::Instant::now() < deadline);
        if ring.forward(&core1.sender, write(next)).is_ok() {
            next += 1;
        }
        ring.poll();
    }
    assert_eq!(ring.cq_len(), 0, "nothing finished yet (100 ms delay)");
    core1.tell(Ctl::DropRing);
    assert!(core1.sender.is_closed());
    ring.forward(&core1.sender, write(16)).unwrap();
    let done = collect(&mut ring, 17);
    let mut seen = [0; 17];
    let (mut ok, mut cancelled) = (Vec::new(), 0);
    for (user_data, result, buf) in done {
        seen[user_data as usize] += 1;
        assert!(buf.is_some(), "entry {user_data}: the buffer comes back");
        match result {
            Ok(4096) => ok.push(user_data),
            Err(libc::ECANCELED) => cancelled += 1,
            other => panic!("entry {user_data}: {other:?}"),
        }
    }
    assert_eq!(seen, [1; 17], "each exactly once");
    assert_eq!(
        (ok.len(), cancelled),
        (8, 9),
        "8 in flight finished, 9 cancelled"
    );
    // What finished is on the disk.
    let desc = BdevDesc::open("Slow0", OpenMode::ReadWrite).unwrap();
    let disk = ring.register_bdev(&desc).unwrap();
    for i in ok {
        let read = spdk_ring::DmaBuf::alloc(4096, 0).unwrap();
        ring.push(opcode::Read::new(disk, read, i * 8).build())
            .unwrap();
        let back = collect(&mut ring, 1);
        assert_eq!(
            back[0].2.as_ref().unwrap().as_slice(),
            pattern(i).as_slice()
        );
    }
    core1.finish();
}

/// The forwarding ring is dropped first: its entries still run to the end
/// on core 1 (the data lands), their completions are discarded there, and
/// core 1's ring goes on serving others.
#[cfg(spdk)]
#[test]
fn forward_sender_dropped_first_entries_still_finish() {
    use remote::*;
    use spdk_ring::{opcode, BdevDesc, ForwardEntry, OpenMode, Ring, SpdkThread};
    let core1 = Remote::start("Slow0", 16, 16);
    let _thread = SpdkThread::attach("forward-sender-drop").unwrap();
    let base = 512;
    {
        let mut ring = Ring::new(16).unwrap();
        for i in 0..8 {
            let entry = opcode::Write::new(core1.target, pattern(1000 + i), (base + i) * 8);
            ring.forward(&core1.sender, ForwardEntry::from(entry))
                .unwrap();
        }
        ring.poll();
        assert_eq!(ring.forwarded_out(), 8);
    }
    // Core 1's ring still serves other rings.
    let mut ring = Ring::new(16).unwrap();
    let flush = ForwardEntry::from(opcode::Flush::new(core1.target, 0, 8)).user_data(77);
    ring.forward(&core1.sender, flush).unwrap();
    let done = collect(&mut ring, 1);
    assert_eq!((done[0].0, done[0].1), (77, Ok(0)));
    // The writes land (after the delay): read back locally until they have.
    let desc = BdevDesc::open("Slow0", OpenMode::ReadWrite).unwrap();
    let disk = ring.register_bdev(&desc).unwrap();
    let deadline = std::time::Instant::now() + common::WAIT;
    for i in 0..8 {
        loop {
            let read = spdk_ring::DmaBuf::alloc(4096, 0).unwrap();
            ring.push(opcode::Read::new(disk, read, (base + i) * 8).build())
                .unwrap();
            let back = collect(&mut ring, 1);
            if back[0].2.as_ref().unwrap().as_slice() == pattern(1000 + i).as_slice() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "write {i} never landed"
            );
        }
    }
    assert!(core1.finish().is_empty());
}

/// Many producer threads, each with its own ring, forward to one ring on
/// core 1 at once: every entry completes exactly once in its own ring.
#[cfg(spdk)]
#[test]
fn forward_many_producers_every_entry_completes_once() {
    use remote::*;
    use spdk_ring::{opcode, ForwardEntry, Ring, SpdkThread};
    let core1 = Remote::start("Null0", 32, 16);
    let (sender, target) = (core1.sender.clone(), core1.target);
    let producers: Vec<_> = (0..4u64)
        .map(|p| {
            let sender = sender.clone();
            SpdkThread::spawn(&format!("producer-{p}"), move |_| {
                let mut ring = Ring::builder(16).forward_entries(8).build().unwrap();
                let n = 5_000u64;
                let mut seen = vec![0u8; n as usize];
                let mut bufs: Vec<_> = (0..8)
                    .map(|_| spdk_ring::DmaBuf::alloc(4096, 0).unwrap())
                    .collect();
                let (mut next, mut done) = (0, 0);
                let deadline = std::time::Instant::now() + common::WAIT;
                while done < n {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "producer {p} stalled at {done}"
                    );
                    while next < n {
                        let Some(buf) = bufs.pop() else { break };
                        let entry = ForwardEntry::from(opcode::Read::new(target, buf, next % 1024));
                        match ring.forward(&sender, entry.user_data(p << 32 | next)) {
                            Ok(()) => next += 1,
                            Err(e) => {
                                bufs.push(e.entry.into_buf().unwrap());
                                break;
                            }
                        }
                    }
                    ring.poll();
                    for mut c in ring.completions() {
                        assert_eq!(c.user_data() >> 32, p);
                        assert_eq!(c.result(), Ok(4096));
                        seen[(c.user_data() & 0xffff_ffff) as usize] += 1;
                        bufs.push(c.take_buf().unwrap());
                        done += 1;
                    }
                }
                seen.iter().all(|&s| s == 1)
            })
            .unwrap()
        })
        .collect();
    for p in producers {
        assert!(p.join().unwrap(), "every entry exactly once");
    }
    core1.finish();
}

/// Forwarding, running forwarded entries and taking their completions
/// back allocate nothing, on either thread, in steady state.
#[cfg(spdk)]
#[test]
fn forward_and_msg_ring_allocate_nothing_per_entry() {
    use counting::{ALLOCATIONS, COUNT_HERE};
    use remote::*;
    use spdk_ring::{opcode, EntryFlags, ForwardEntry, Ring, SpdkThread};
    use std::sync::atomic::Ordering;
    let core1 = Remote::start("Null0", 64, 32);
    let _thread = SpdkThread::attach("forward-alloc").unwrap();
    let mut ring = Ring::builder(64).forward_entries(32).build().unwrap();
    let mut bufs: Vec<_> = (0..32)
        .map(|_| spdk_ring::DmaBuf::alloc(4096, 0).unwrap())
        .collect();
    let run = |ring: &mut Ring, bufs: &mut Vec<spdk_ring::DmaBuf>, n: u64| {
        let (mut sent, mut done) = (0, 0);
        let deadline = std::time::Instant::now() + common::WAIT;
        while done < n {
            assert!(std::time::Instant::now() < deadline, "stalled at {done}");
            while sent < n {
                let Some(buf) = bufs.pop() else { break };
                let entry = ForwardEntry::from(opcode::Read::new(core1.target, buf, sent % 1024));
                match ring.forward(&core1.sender, entry.user_data(sent)) {
                    Ok(()) => sent += 1,
                    Err(e) => {
                        bufs.push(e.entry.into_buf().unwrap());
                        break;
                    }
                }
            }
            if sent % 64 == 0 {
                let msg = opcode::MsgRing::new(&core1.sender, sent, 1).build();
                let _ = ring.push(msg.flags(EntryFlags::SKIP_SUCCESS));
            }
            ring.poll();
            while let Some(mut c) = ring.reap() {
                if let Some(buf) = c.take_buf() {
                    bufs.push(buf);
                    done += 1;
                }
            }
        }
    };
    run(&mut ring, &mut bufs, 5_000);
    core1.tell(Ctl::CountAllocs(true));
    COUNT_HERE.with(|c| c.set(true));
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    run(&mut ring, &mut bufs, 50_000);
    let allocated = ALLOCATIONS.load(Ordering::Relaxed) - before;
    COUNT_HERE.with(|c| c.set(false));
    core1.tell(Ctl::CountAllocs(false));
    assert_eq!(allocated, 0, "allocations over 50 000 forwarded reads");
    core1.finish();
}

/// Messages reach the target's CQ with their user_data and value, in the
/// order each sender sent them (two senders at once); the sender gets its
/// own completion unless it set `SKIP_SUCCESS`.
#[cfg(spdk)]
#[test]
fn msg_ring_delivers_in_order_per_sender() {
    use remote::*;
    use spdk_ring::{opcode, EntryFlags, Ring, SpdkThread};
    let core1 = Remote::start("Null0", 64, 64);
    let send_all = |ring: &mut Ring, sender: &spdk_ring::RingSender, who: u64, skip: bool| {
        let flags = if skip {
            EntryFlags::SKIP_SUCCESS
        } else {
            EntryFlags::empty()
        };
        let mut own = 0;
        let mut i = 0;
        let deadline = std::time::Instant::now() + common::WAIT;
        while i < 500u64 {
            assert!(std::time::Instant::now() < deadline);
            let msg = opcode::MsgRing::new(sender, who << 32 | i, (i * 3) as u32).build();
            ring.push(msg.user_data(i).flags(flags)).unwrap();
            // It is sent when it starts: in this submit.
            ring.submit();
            // A full target mailbox answers EOVERFLOW: send it again.
            let mut resend = false;
            for done in ring.completions() {
                assert_eq!(done.user_data(), i);
                match done.result() {
                    Ok(0) => own += 1,
                    Err(e) if e.errno().0 == libc::EOVERFLOW => resend = true,
                    other => panic!("{other:?}"),
                }
            }
            if resend {
                std::thread::yield_now();
            } else {
                i += 1;
            }
        }
        own
    };
    let other_sender = core1.sender.clone();
    let other = SpdkThread::spawn("msg-sender-2", move |_| {
        let mut ring = Ring::new(16).unwrap();
        send_all(&mut ring, &other_sender, 2, true)
    })
    .unwrap();
    let _thread = SpdkThread::attach("msg-sender-1").unwrap();
    let mut ring = Ring::new(16).unwrap();
    let own = send_all(&mut ring, &core1.sender, 1, false);
    assert_eq!(own, 500, "one own completion per message");
    assert_eq!(other.join().unwrap(), 0, "SKIP_SUCCESS: no own completion");
    core1.tell(Ctl::Sync);
    let got = core1.finish();
    for who in [1u64, 2] {
        let mine: Vec<_> = got.iter().filter(|(u, _)| u >> 32 == who).collect();
        assert_eq!(mine.len(), 500, "sender {who}");
        for (i, (user_data, result)) in mine.into_iter().enumerate() {
            assert_eq!(*user_data, who << 32 | i as u64, "sender {who}: in order");
            assert_eq!(*result, Ok(i as u64 * 3));
        }
    }
}

/// A target whose CQ overflows answers EOVERFLOW until it is drained; a
/// gone target answers ENXIO.
#[cfg(spdk)]
#[test]
fn msg_ring_eoverflow_on_an_overflowing_target_and_enxio_on_a_gone_one() {
    use remote::*;
    use spdk_ring::{opcode, Ring, SpdkThread};
    // CQ of 8.
    let core1 = Remote::start("Null0", 4, 4);
    let _thread = SpdkThread::attach("msg-overflow").unwrap();
    let mut ring = Ring::new(16).unwrap();
    let send = |ring: &mut Ring, user_data: u64| {
        let msg = opcode::MsgRing::new(&core1.sender, 7, 1).build();
        ring.push(msg.user_data(user_data)).unwrap();
        ring.submit();
        let done: Vec<_> = ring.completions().collect();
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].user_data(), user_data);
        done[0].result().map_err(|e| e.errno().0)
    };
    assert_eq!(send(&mut ring, 1), Ok(0));
    core1.tell(Ctl::Reap(false));
    // 12 Nops into a CQ of 8, not reaped: it overflows.
    for _ in 0..3 {
        core1.tell(Ctl::Nops(4));
    }
    assert_eq!(send(&mut ring, 2), Err(libc::EOVERFLOW));
    // Reaped, and one more poll to publish that it no longer overflows.
    core1.tell(Ctl::Reap(true));
    core1.tell(Ctl::Sync);
    assert_eq!(send(&mut ring, 3), Ok(0));
    // Core 1 takes it before its ring goes (a message still in the
    // mailbox of a ring being dropped is dropped with it).
    core1.tell(Ctl::Sync);
    core1.tell(Ctl::DropRing);
    assert_eq!(send(&mut ring, 4), Err(libc::ENXIO));
    let got = core1.finish();
    let messages: Vec<_> = got.iter().filter(|(u, _)| *u == 7).collect();
    assert_eq!(
        messages.len(),
        2,
        "the two messages sent Ok arrived: {got:?}"
    );
}

/// The block (of 512 bytes, in a part of Malloc0 no other test writes) a
/// LINKed write and message hand over, and the message's tag.
#[cfg(spdk)]
const HANDOFF_BLOCK: u64 = 8000;
#[cfg(spdk)]
const HANDOFF_TAG: u64 = 0xda7a;

/// A ring on core 1 that waits for a message (`HANDOFF_TAG`, value = a
/// block), then reads that block of Malloc0 on its own descriptor and ring;
/// `None` if it was told to stop before any message came (any other
/// completion panics it).
#[cfg(spdk)]
fn handoff_reader() -> (
    spdk_ring::RingSender,
    std::sync::mpsc::Sender<()>,
    spdk_ring::JoinHandle<Option<Vec<u8>>>,
) {
    use spdk_ring::{opcode, BdevDesc, OpenMode, Ring, SpdkThread};
    let (setup_tx, setup_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let handle = spdk_ring::cores::spawn_pinned("handoff-reader", 1, move |_: &SpdkThread| {
        let desc = BdevDesc::open("Malloc0", OpenMode::ReadOnly).unwrap();
        let mut ring = Ring::new(8).unwrap();
        let disk = ring.register_bdev(&desc).unwrap();
        setup_tx.send(ring.sender()).unwrap();
        let block = loop {
            if stop_rx.try_recv().is_ok() {
                // Anything that came meanwhile still counts.
                ring.poll();
                if let Some(c) = ring.completions().next() {
                    panic!("unexpected completion {:?}", c.user_data());
                }
                return None;
            }
            ring.poll();
            if let Some(done) = ring.completions().next() {
                assert_eq!(done.user_data(), HANDOFF_TAG);
                break done.result().unwrap();
            }
        };
        let buf = spdk_ring::DmaBuf::alloc(4096, 0).unwrap();
        ring.push(opcode::Read::new(disk, buf, block).build())
            .unwrap();
        ring.submit_and_wait(1, common::WAIT).unwrap();
        let mut done = ring.completions().next().unwrap();
        assert_eq!(done.result(), Ok(4096));
        Some(done.take_buf().unwrap().as_slice().to_vec())
    })
    .unwrap();
    let sender = setup_rx.recv_timeout(common::WAIT).unwrap();
    (sender, stop_tx, handle)
}

/// A write LINKed to a `MsgRing`: the message reaches core 1 only once the
/// write succeeded, and core 1, reading the block it names, finds the data.
#[cfg(spdk)]
#[test]
fn msg_ring_linked_after_a_write_hands_the_data_to_another_core() {
    use spdk_ring::{opcode, BdevDesc, EntryFlags, OpenMode, Ring, SpdkThread};
    remote::start();
    let (core1, _stop, reader) = handoff_reader();
    let _thread = SpdkThread::attach("handoff-writer").unwrap();
    let desc = BdevDesc::open("Malloc0", OpenMode::ReadWrite).unwrap();
    let mut ring = Ring::new(8).unwrap();
    let disk = ring.register_bdev(&desc).unwrap();
    let written = pattern(HANDOFF_BLOCK);
    let expected = written.as_slice().to_vec();
    let write = opcode::Write::new(disk, written, HANDOFF_BLOCK)
        .build()
        .user_data(1);
    ring.push(write.flags(EntryFlags::LINK)).unwrap();
    let tell = opcode::MsgRing::new(&core1, HANDOFF_TAG, HANDOFF_BLOCK as u32).build();
    ring.push(tell.user_data(2)).unwrap();
    let got = remote::collect(&mut ring, 2);
    let got: Vec<_> = got.iter().map(|(u, r, _)| (*u, *r)).collect();
    assert_eq!(got, [(1, Ok(4096)), (2, Ok(0))]);
    let read_back = reader.join().unwrap().expect("the message came");
    assert!(read_back == expected, "core 1 read what core 0 wrote");
}

/// A write LINKed to a `MsgRing` that fails cancels the message
/// (`ECANCELED`): core 1 hears nothing.
#[cfg(spdk)]
#[test]
fn msg_ring_linked_after_a_failed_write_is_cancelled_and_never_sent() {
    use spdk_ring::{opcode, BdevDesc, EntryFlags, OpenMode, Ring, SpdkThread};
    remote::start();
    let (core1, stop, reader) = handoff_reader();
    let _thread = SpdkThread::attach("handoff-failed-writer").unwrap();
    let desc = BdevDesc::open("Malloc0", OpenMode::ReadWrite).unwrap();
    let mut ring = Ring::new(8).unwrap();
    let disk = ring.register_bdev(&desc).unwrap();
    let (_, blocks) = ring.target_geometry(disk).unwrap();
    // Past the end of the bdev: the write fails EINVAL.
    let write = opcode::Write::new(disk, pattern(1), blocks)
        .build()
        .user_data(1);
    ring.push(write.flags(EntryFlags::LINK)).unwrap();
    let tell = opcode::MsgRing::new(&core1, HANDOFF_TAG, 0).build();
    ring.push(tell.user_data(2)).unwrap();
    let got = remote::collect(&mut ring, 2);
    let got: Vec<_> = got.iter().map(|(u, r, _)| (*u, *r)).collect();
    assert_eq!(got, [(1, Err(libc::EINVAL)), (2, Err(libc::ECANCELED))]);
    // Time for a message, had one been sent, to reach core 1.
    std::thread::sleep(std::time::Duration::from_millis(50));
    stop.send(()).unwrap();
    assert_eq!(reader.join().unwrap(), None, "core 1 heard nothing");
}

/// One ring per core: `Cores::of_env` is the environment's mask (0x3), and
/// `Cores::spawn` runs a worker pinned to each core, each opening its own
/// descriptor and ring and doing its I/O there.
#[cfg(spdk)]
#[test]
fn forward_cores_one_ring_per_core_pinned() {
    use spdk_ring::{opcode, BdevDesc, Cores, OpenMode, Ring};
    remote::start();
    let cores = Cores::of_env().unwrap();
    assert_eq!(cores.as_slice(), [0, 1]);
    let workers = cores
        .spawn("per-core", |core, _thread| {
            // SAFETY: sched_getcpu only reads the calling thread's CPU.
            let cpu = unsafe { libc::sched_getcpu() };
            let desc = BdevDesc::open("Null0", OpenMode::ReadOnly).unwrap();
            let mut ring = Ring::new(32).unwrap();
            let disk = ring.register_bdev(&desc).unwrap();
            let mut ok = 0;
            for i in 0..1000u64 {
                let buf = spdk_ring::DmaBuf::alloc(4096, 0).unwrap();
                ring.push(opcode::Read::new(disk, buf, i).build()).unwrap();
                ring.submit_and_wait(1, common::WAIT).unwrap();
                ok += ring
                    .completions()
                    .filter(|c| c.result() == Ok(4096))
                    .count();
            }
            (core, cpu, ok)
        })
        .unwrap();
    let results: Vec<_> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    assert_eq!(
        results,
        [(0, 0, 1000), (1, 1, 1000)],
        "(core, cpu it ran on, reads ok)"
    );
    // A core the machine lacks is the worker's error, from `join`.
    let missing = spdk_ring::cores::spawn_pinned("no-such-core", 1023, |_| ()).unwrap();
    let err = missing.join().unwrap_err();
    assert!(
        matches!(err, spdk_ring::Error::Errno(e) if e.0 == libc::EINVAL),
        "{err}"
    );
}
