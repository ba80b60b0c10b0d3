//! SPDK integration tests of the ring over bdevs: data integrity on malloc,
//! throughput smoke on null, injected failures on the error bdev, timeouts
//! and cancellation on the delay bdev, hot-remove, and every bad input.
//!
//! One SPDK runtime per process (see `common`); each test attaches its own
//! SPDK thread and creates the bdevs it mutates under names of its own.

#[cfg(spdk)]
#[path = "../common/mod.rs"]
mod common;

#[path = "../common/skipped.rs"]
#[macro_use]
mod skipped;
report_skipped_without_spdk!();

#[cfg(spdk)]
mod support {
    pub use super::common::*;
    pub use spdk_ring::{
        opcode, BdevDesc, Completion, CompletionFlags, DmaBuf, EntryFlags, Errno, JsonConfig,
        OpenMode, Ring, SpdkThread, Target,
    };
    pub use std::time::{Duration, Instant};

    /// A ring on a fresh SPDK thread of this test's OS thread, with one bdev
    /// registered. Fields drop in order: ring, descriptor, thread.
    pub struct Rig {
        pub ring: Ring,
        pub desc: BdevDesc,
        pub thread: SpdkThread,
        pub target: Target,
    }

    pub fn rig(bdev: &str, mode: OpenMode, sq: u32) -> Rig {
        fixture();
        let thread = SpdkThread::attach(&format!("test-{bdev}")).unwrap();
        let desc = BdevDesc::open(bdev, mode).unwrap();
        let mut ring = Ring::new(sq).unwrap();
        let target = ring.register_bdev(&desc).unwrap();
        Rig {
            ring,
            desc,
            thread,
            target,
        }
    }

    pub fn create(json: JsonConfig) {
        fixture()
            .load_config(json.to_json())
            .recv()
            .unwrap()
            .unwrap();
    }

    pub fn rpc(method: &str, params: String) {
        fixture()
            .bdev_method(method, params)
            .recv()
            .unwrap()
            .unwrap();
    }

    /// A delay bdev `name` (every I/O takes `latency_us`) over a fresh malloc bdev.
    pub fn delay_bdev(name: &str, latency_us: u64) {
        let base = format!("{name}Base");
        create(JsonConfig::new().malloc_bdev(&base, 1024, 512));
        rpc(
            "bdev_delay_create",
            format!(
                "{{\"name\": \"{name}\", \"base_bdev_name\": \"{base}\", \"avg_read_latency\": {latency_us}, \
                 \"p99_read_latency\": {latency_us}, \"avg_write_latency\": {latency_us}, \
                 \"p99_write_latency\": {latency_us}}}"
            ),
        );
    }

    impl Rig {
        /// Pushes one entry, waits for its completion and returns it.
        pub fn run(&mut self, entry: spdk_ring::Entry) -> Completion {
            self.ring.push(entry).expect("SQ has room");
            self.wait_all(1).pop().unwrap()
        }

        /// Polls until `n` completions arrived; returns them in order.
        pub fn wait_all(&mut self, n: usize) -> Vec<Completion> {
            let mut out = Vec::with_capacity(n);
            let deadline = Instant::now() + WAIT;
            while out.len() < n {
                assert!(
                    Instant::now() < deadline,
                    "only {} of {n} completions within {WAIT:?}",
                    out.len()
                );
                self.ring.poll();
                out.extend(self.ring.completions());
            }
            out
        }
    }
}

#[cfg(spdk)]
mod data {
    use super::support::*;

    #[test]
    fn writes_then_reads_back_patterns_across_sizes_and_offsets() {
        let mut r = rig("Malloc0", OpenMode::ReadWrite, 64);
        let bs = MALLOC_BLOCK_SIZE as usize;
        // Blocks 0..4096 of Malloc0 belong to this test.
        let mut offset = 0u64;
        for (i, blocks) in [1usize, 2, 7, 8, 64, 255, 256].into_iter().enumerate() {
            let len = blocks * bs;
            let written = pattern(len, i as u64);
            let expect = written.to_vec();
            let done = r.run(
                opcode::Write::new(r.target, written, offset)
                    .build()
                    .user_data(i as u64),
            );
            assert_eq!(done.user_data(), i as u64);
            assert_eq!(done.result(), Ok(len as u64));
            let mut done = r.run(
                opcode::Read::new(r.target, DmaBuf::alloc_zeroed(len, 0).unwrap(), offset).build(),
            );
            assert_eq!(done.result(), Ok(len as u64));
            assert_eq!(
                done.take_buf().unwrap().as_slice(),
                &expect[..],
                "{blocks} blocks at {offset}"
            );
            offset += blocks as u64 + 3;
        }
        assert!(offset < 4096);
    }

    #[test]
    fn partial_num_blocks_moves_only_those_blocks() {
        let mut r = rig("Malloc0", OpenMode::ReadWrite, 8);
        let base = 4200;
        r.run(
            opcode::Write::new(r.target, DmaBuf::alloc_zeroed(4 * 512, 0).unwrap(), base).build(),
        );
        let done = r.run(
            opcode::Write::new(r.target, pattern(4 * 512, 9), base)
                .num_blocks(1)
                .build(),
        );
        assert_eq!(done.result(), Ok(512));
        let mut back =
            r.run(opcode::Read::new(r.target, DmaBuf::alloc(4 * 512, 0).unwrap(), base).build());
        let back = back.take_buf().unwrap();
        assert_eq!(&back[..512], &pattern(512, 9)[..]);
        assert!(back[512..].iter().all(|&b| b == 0));
    }

    #[test]
    fn vectored_io_round_trips_through_several_buffers() {
        let mut r = rig("Malloc0", OpenMode::ReadWrite, 8);
        let sizes = [512usize, 1024, 4096, 512, 2048];
        let bufs: Vec<DmaBuf> = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| pattern(n, 100 + i as u64))
            .collect();
        let flat: Vec<u8> = bufs.iter().flat_map(|b| b.to_vec()).collect();
        let done = r.run(
            opcode::Writev::new(r.target, bufs, 5000)
                .build()
                .user_data(77),
        );
        assert_eq!(done.result(), Ok(flat.len() as u64));
        // Read back with a different split.
        let reads: Vec<DmaBuf> = [4096usize, 4096]
            .iter()
            .map(|&n| DmaBuf::alloc_zeroed(n, 0).unwrap())
            .collect();
        let mut done = r.run(opcode::Readv::new(r.target, reads, 5000).build());
        assert_eq!(done.result(), Ok(8192));
        let back: Vec<u8> = done.take_bufs().iter().flat_map(|b| b.to_vec()).collect();
        assert_eq!(back, flat);
    }

    #[test]
    fn write_zeroes_and_unmap_read_back_as_zeros() {
        let mut r = rig("Malloc0", OpenMode::ReadWrite, 8);
        let base = 5100;
        for (i, zeroing) in [true, false].into_iter().enumerate() {
            let at = base + i as u64 * 16;
            r.run(opcode::Write::new(r.target, pattern(8 * 512, 5), at).build());
            let entry = if zeroing {
                opcode::WriteZeroes::new(r.target, at, 8).build()
            } else {
                opcode::Unmap::new(r.target, at, 8).build()
            };
            assert_eq!(r.run(entry).result(), Ok(0));
            let mut back = r.run(opcode::Read::new(r.target, pattern(8 * 512, 6), at).build());
            assert!(
                back.take_buf().unwrap().iter().all(|&b| b == 0),
                "zeroing={zeroing}"
            );
        }
        assert_eq!(
            r.run(opcode::Flush::new(r.target, base, 32).build())
                .result(),
            Ok(0)
        );
    }

    #[test]
    fn reset_completes_and_data_survives_it() {
        let mut r = rig("Malloc0", OpenMode::ReadWrite, 8);
        r.run(opcode::Write::new(r.target, pattern(512, 42), 5200).build());
        assert_eq!(
            r.run(opcode::Reset::new(r.target).build().user_data(3))
                .result(),
            Ok(0)
        );
        let mut back =
            r.run(opcode::Read::new(r.target, DmaBuf::alloc(512, 0).unwrap(), 5200).build());
        assert_eq!(back.take_buf().unwrap().as_slice(), &pattern(512, 42)[..]);
    }

    #[test]
    fn raw_pointer_io_uses_caller_managed_memory() {
        let mut r = rig("Malloc0", OpenMode::ReadWrite, 8);
        // The caller keeps ownership: these buffers outlive the entries,
        // and nothing touches them until the completions are taken.
        let src = pattern(2048, 77);
        let mut dst = DmaBuf::alloc_zeroed(2048, 0).unwrap();
        // SAFETY: src is SPDK DMA memory, valid and unused until the write's
        // completion is taken below.
        let write = unsafe { opcode::RawIo::write(r.target, src.as_ptr(), src.len(), 5300) };
        assert_eq!(r.run(write.build()).result(), Ok(2048));
        // SAFETY: as above, for dst and the read.
        let read = unsafe { opcode::RawIo::read(r.target, dst.as_mut_ptr(), dst.len(), 5300) };
        let mut done = r.run(read.build());
        assert_eq!(done.result(), Ok(2048));
        assert!(done.take_buf().is_none(), "raw entries carry no buffer");
        assert_eq!(dst.as_slice(), src.as_slice());
        // SAFETY: an odd length never reaches SPDK (EINVAL).
        let bad = unsafe { opcode::RawIo::read(r.target, dst.as_mut_ptr(), 1000, 0) };
        assert_eq!(r.run(bad.build()).errno(), Some(Errno::EINVAL));
    }

    #[test]
    fn null_bdev_sustains_a_deep_queue() {
        let mut r = rig("Null0", OpenMode::ReadOnly, 128);
        let total = 100_000u64;
        let depth = 64;
        let mut bufs: Vec<DmaBuf> = (0..depth)
            .map(|_| DmaBuf::alloc(4096, 0).unwrap())
            .collect();
        let (mut issued, mut done, mut seen) = (0u64, 0u64, vec![false; total as usize]);
        let start = Instant::now();
        while done < total {
            while issued < total {
                let Some(buf) = bufs.pop() else { break };
                let lba = (issued * 7919) % NULL_BLOCKS;
                r.ring
                    .push(
                        opcode::Read::new(r.target, buf, lba)
                            .build()
                            .user_data(issued),
                    )
                    .unwrap();
                issued += 1;
            }
            r.ring.poll();
            for mut c in r.ring.completions() {
                assert_eq!(c.result(), Ok(4096));
                assert!(
                    !std::mem::replace(&mut seen[c.user_data() as usize], true),
                    "duplicate completion"
                );
                bufs.push(c.take_buf().unwrap());
                done += 1;
            }
            assert!(start.elapsed() < Duration::from_secs(60));
        }
        assert!(seen.iter().all(|&s| s));
        assert_eq!(r.ring.stats().overflowed, 0);
    }
}

#[cfg(spdk)]
mod reap_in_place {
    use super::support::*;

    /// Polls until `n` completions are ready (without taking them).
    fn wait_ready(r: &mut Rig, n: usize) {
        let deadline = Instant::now() + WAIT;
        while r.ring.cq_len() < n {
            assert!(Instant::now() < deadline, "{n} completions within {WAIT:?}");
            r.ring.poll();
        }
    }

    #[test]
    fn reaped_completions_carry_results_buffers_and_order() {
        let mut r = rig("Malloc0", OpenMode::ReadWrite, 16);
        // Blocks 5600..5610 and 5800..5810 of Malloc0 belong to this test.
        let base = 5600u64;
        for i in 0..4u64 {
            let entry = opcode::Write::new(r.target, pattern(1024, 40 + i), base + 2 * i).build();
            r.ring.push(entry.user_data(i)).unwrap();
        }
        wait_ready(&mut r, 4);
        for i in 0..4u64 {
            let mut done = r.ring.reap().expect("a completion is ready");
            assert_eq!(done.user_data(), i, "FIFO order");
            assert_eq!(done.result(), Ok(1024));
            assert!(done.is_ok() && done.errno().is_none());
            assert_eq!(done.flags(), CompletionFlags::empty());
            let buf = done.take_buf().expect("a write hands its buffer back");
            assert_eq!(&buf[..], &pattern(1024, 40 + i)[..]);
            assert!(done.take_buf().is_none(), "taken once");
        }
        assert!(r.ring.reap().is_none());
        assert_eq!(r.ring.in_flight(), 0);

        // Vectored read back through reap; a bad entry reports its errno.
        let bufs = vec![
            DmaBuf::alloc_zeroed(2048, 0).unwrap(),
            DmaBuf::alloc_zeroed(2048, 0).unwrap(),
        ];
        r.ring
            .push(
                opcode::Readv::new(r.target, bufs, base)
                    .build()
                    .user_data(10),
            )
            .unwrap();
        let past_end = opcode::Read::new(r.target, DmaBuf::alloc(512, 0).unwrap(), u64::MAX - 1);
        r.ring.push(past_end.build().user_data(11)).unwrap();
        wait_ready(&mut r, 2);
        // The bad entry fails at submission, so it completes first.
        let mut done = r.ring.reap().unwrap();
        assert_eq!(done.user_data(), 11);
        assert_eq!(done.errno(), Some(Errno::EINVAL));
        assert_eq!(
            done.take_buf().map(|b| b.len()),
            Some(512),
            "handed back on error"
        );
        drop(done);
        let mut done = r.ring.reap().unwrap();
        assert_eq!((done.user_data(), done.result()), (10, Ok(4096)));
        assert!(
            done.take_buf().is_none(),
            "a vectored entry has no single buffer"
        );
        let back: Vec<u8> = done.take_bufs().iter().flat_map(|b| b.to_vec()).collect();
        let written: Vec<u8> = (0..2)
            .flat_map(|i| pattern(1024, 40 + i).to_vec())
            .collect();
        assert_eq!(&back[..2048], &written[..]);
    }

    #[test]
    fn dropping_forgetting_and_owning_reaped_completions() {
        let mut r = rig("Malloc0", OpenMode::ReadWrite, 8);
        for i in 0..3u64 {
            let entry = opcode::Write::new(r.target, pattern(512, i), 5800 + i).build();
            r.ring.push(entry.user_data(i)).unwrap();
        }
        wait_ready(&mut r, 3);
        // Dropped without taking anything: popped, its buffer freed with it.
        drop(r.ring.reap().unwrap());
        assert_eq!(r.ring.cq_len(), 2);
        // Forgotten: still first in line, minus the buffer already taken.
        let mut done = r.ring.reap().unwrap();
        assert_eq!(done.user_data(), 1);
        let buf = done.take_buf().unwrap();
        std::mem::forget(done);
        let mut again = r.ring.reap().unwrap();
        assert_eq!(again.user_data(), 1);
        assert!(again.take_buf().is_none());
        drop(again);
        drop(buf);
        // Owned: the buffers come along.
        let mut owned: Completion = r.ring.reap().unwrap().into_owned();
        assert_eq!((owned.user_data(), owned.result()), (2, Ok(512)));
        assert_eq!(&owned.take_buf().unwrap()[..], &pattern(512, 2)[..]);
        assert!(r.ring.reap().is_none());
        // The slots came back: the ring runs a full SQ again.
        for i in 0..8u64 {
            let entry = opcode::Read::new(r.target, DmaBuf::alloc(512, 0).unwrap(), 5800).build();
            r.ring.push(entry.user_data(i)).unwrap();
        }
        assert_eq!(r.wait_all(8).len(), 8);
    }
}

#[cfg(spdk)]
mod errors {
    use super::support::*;

    fn error_bdev(base: &str) -> String {
        create(JsonConfig::new().malloc_bdev(base, 1024, 512));
        rpc(
            "bdev_error_create",
            format!("{{\"base_name\": \"{base}\"}}"),
        );
        format!("EE_{base}")
    }

    fn inject(name: &str, io_type: &str, num: u32) {
        rpc(
            "bdev_error_inject_error",
            format!("{{\"name\": \"{name}\", \"io_type\": \"{io_type}\", \"error_type\": \"failure\", \"num\": {num}}}"),
        );
    }

    #[test]
    fn injected_failures_complete_with_eio_and_return_the_buffer() {
        let name = error_bdev("ErrBase1");
        let mut r = rig(&name, OpenMode::ReadWrite, 8);
        inject(&name, "write", 1);
        let mut done = r.run(
            opcode::Write::new(r.target, pattern(512, 1), 0)
                .build()
                .user_data(5),
        );
        assert_eq!(done.user_data(), 5);
        assert_eq!(done.errno(), Some(Errno::EIO));
        assert_eq!(
            done.result().unwrap_err().nvme_status(),
            None,
            "not an NVMe-backed bdev"
        );
        assert_eq!(
            done.take_buf().unwrap().len(),
            512,
            "buffer handed back on error"
        );
        // The injection was for one I/O only.
        assert_eq!(
            r.run(opcode::Write::new(r.target, pattern(512, 1), 0).build())
                .result(),
            Ok(512)
        );
    }

    #[test]
    fn a_failed_link_cancels_the_rest_of_its_chain_in_order() {
        let name = error_bdev("ErrBase2");
        let mut r = rig(&name, OpenMode::ReadWrite, 16);
        inject(&name, "read", 1);
        let t = r.target;
        let link = EntryFlags::LINK;
        r.ring
            .push(
                opcode::Write::new(t, pattern(512, 2), 8)
                    .build()
                    .user_data(1)
                    .flags(link),
            )
            .unwrap();
        r.ring
            .push(
                opcode::Read::new(t, DmaBuf::alloc(512, 0).unwrap(), 8)
                    .build()
                    .user_data(2)
                    .flags(link),
            )
            .unwrap();
        r.ring
            .push(
                opcode::Write::new(t, pattern(512, 3), 9)
                    .build()
                    .user_data(3)
                    .flags(link),
            )
            .unwrap();
        r.ring
            .push(opcode::Nop::new().build().user_data(4))
            .unwrap();
        // An unlinked entry after the chain is unaffected.
        r.ring
            .push(opcode::Nop::new().build().user_data(5))
            .unwrap();
        let mut all = r.wait_all(5);
        all.sort_by_key(|c| c.user_data());
        let results: Vec<_> = all.iter().map(|c| (c.user_data(), c.errno())).collect();
        assert_eq!(
            results,
            [
                (1, None),
                (2, Some(Errno::EIO)),
                (3, Some(Errno::ECANCELED)),
                (4, Some(Errno::ECANCELED)),
                (5, None)
            ]
        );
        // The cancelled write never ran: block 9 still reads as it was.
        let mut back = r.run(opcode::Read::new(t, DmaBuf::alloc(512, 0).unwrap(), 9).build());
        assert_ne!(back.take_buf().unwrap().as_slice(), &pattern(512, 3)[..]);
    }

    #[test]
    fn chain_completions_arrive_in_chain_order() {
        let mut r = rig("Malloc0", OpenMode::ReadWrite, 16);
        let t = r.target;
        for i in 0..8u64 {
            let flags = if i < 7 {
                EntryFlags::LINK
            } else {
                EntryFlags::empty()
            };
            r.ring
                .push(
                    opcode::Write::new(t, pattern(512, i), 6000 + i)
                        .build()
                        .user_data(i)
                        .flags(flags),
                )
                .unwrap();
        }
        let order: Vec<u64> = r.wait_all(8).iter().map(|c| c.user_data()).collect();
        assert_eq!(order, (0..8).collect::<Vec<_>>());
    }
}

#[cfg(spdk)]
mod bad_input {
    use super::support::*;

    #[test]
    fn invalid_entries_complete_with_exact_errnos() {
        let mut r = rig("Malloc0", OpenMode::ReadWrite, 16);
        let t = r.target;
        let cases: Vec<(spdk_ring::Entry, Errno)> = vec![
            // Out-of-range LBA, and a range running past the end.
            (
                opcode::Read::new(t, DmaBuf::alloc(512, 0).unwrap(), MALLOC_BLOCKS).build(),
                Errno::EINVAL,
            ),
            (
                opcode::Read::new(t, DmaBuf::alloc(1024, 0).unwrap(), MALLOC_BLOCKS - 1).build(),
                Errno::EINVAL,
            ),
            (
                opcode::WriteZeroes::new(t, u64::MAX, 2).build(),
                Errno::EINVAL,
            ),
            // Length not a multiple of the block size.
            (
                opcode::Write::new(t, DmaBuf::alloc(1000, 0).unwrap(), 0).build(),
                Errno::EINVAL,
            ),
            // Buffer shorter than the requested blocks, and zero blocks.
            (
                opcode::Read::new(t, DmaBuf::alloc(512, 0).unwrap(), 0)
                    .num_blocks(2)
                    .build(),
                Errno::EINVAL,
            ),
            (opcode::Unmap::new(t, 0, 0).build(), Errno::EINVAL),
            (opcode::Readv::new(t, Vec::new(), 0).build(), Errno::EINVAL),
            // Unsupported I/O type on a malloc bdev.
            (
                opcode::NvmePassthru::new(t, spdk_ring::NvmeCommand::default()).build(),
                Errno::ENOTSUP,
            ),
        ];
        let n = cases.len();
        let want: Vec<Errno> = cases.iter().map(|c| c.1).collect();
        for (i, (entry, _)) in cases.into_iter().enumerate() {
            r.ring.push(entry.user_data(i as u64)).unwrap();
        }
        let mut all = r.wait_all(n);
        all.sort_by_key(|c| c.user_data());
        let got: Vec<Errno> = all.iter().map(|c| c.errno().expect("must fail")).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn too_many_iovecs_are_rejected() {
        let mut r = rig("Malloc0", OpenMode::ReadOnly, 4);
        let bufs: Vec<DmaBuf> = (0..=spdk_ring::MAX_IOVECS)
            .map(|_| DmaBuf::alloc(512, 0).unwrap())
            .collect();
        let mut done = r.run(opcode::Readv::new(r.target, bufs, 0).build());
        assert_eq!(done.errno(), Some(Errno::EINVAL));
        assert_eq!(done.take_bufs().len(), spdk_ring::MAX_IOVECS + 1);
    }

    #[test]
    fn writes_through_a_read_only_registration_fail_with_ebadf() {
        let mut r = rig("Malloc0", OpenMode::ReadOnly, 8);
        let t = r.target;
        for entry in [
            opcode::Write::new(t, pattern(512, 0), 0).build(),
            opcode::WriteZeroes::new(t, 0, 1).build(),
            opcode::Unmap::new(t, 0, 1).build(),
        ] {
            assert_eq!(r.run(entry).errno(), Some(Errno::EBADF));
        }
        assert_eq!(
            r.run(opcode::Read::new(t, DmaBuf::alloc(512, 0).unwrap(), 0).build())
                .result(),
            Ok(512)
        );
    }

    #[test]
    fn foreign_and_unregistered_targets_fail_with_ebadf() {
        let mut r = rig("Malloc0", OpenMode::ReadOnly, 8);
        let mut other = Ring::new(4).unwrap();
        let foreign = other
            .register_bdev(&BdevDesc::open("Null0", OpenMode::ReadOnly).unwrap())
            .unwrap();
        let done = r.run(opcode::Read::new(foreign, DmaBuf::alloc(4096, 0).unwrap(), 0).build());
        assert_eq!(done.errno(), Some(Errno::EBADF));

        r.ring.unregister(r.target).unwrap();
        let done = r.run(opcode::Read::new(r.target, DmaBuf::alloc(512, 0).unwrap(), 0).build());
        assert_eq!(done.errno(), Some(Errno::EBADF));
        assert_eq!(
            r.ring.unregister(r.target).unwrap_err(),
            spdk_ring::Error::Errno(Errno::EBADF)
        );
    }

    #[test]
    fn ring_sizes_are_validated() {
        fixture();
        let _t = SpdkThread::attach("ring-sizes").unwrap();
        let err = Ring::builder(8).cq_entries(4).build().err().unwrap();
        assert!(
            matches!(err, spdk_ring::Error::InvalidArgument(ref m) if m.contains("cq")),
            "{err}"
        );
        assert!(matches!(
            Ring::new(0).err().unwrap(),
            spdk_ring::Error::InvalidArgument(_)
        ));
        let mut ring = Ring::builder(4).max_targets(1).build().unwrap();
        let desc = BdevDesc::open("Malloc0", OpenMode::ReadOnly).unwrap();
        ring.register_bdev(&desc).unwrap();
        let err = ring.register_bdev(&desc).unwrap_err();
        assert!(
            matches!(err, spdk_ring::Error::InvalidArgument(ref m) if m.contains("max_targets")),
            "{err}"
        );
    }

    #[test]
    fn a_ring_needs_an_spdk_thread() {
        fixture();
        assert_eq!(Ring::new(4).err().unwrap(), spdk_ring::Error::NoThread);
    }

    #[test]
    fn a_full_sq_hands_the_entry_back() {
        let mut r = rig("Malloc0", OpenMode::ReadOnly, 2);
        r.ring
            .push(opcode::Nop::new().build().user_data(1))
            .unwrap();
        r.ring
            .push(opcode::Nop::new().build().user_data(2))
            .unwrap();
        let err = r.ring.push(
            opcode::Read::new(r.target, DmaBuf::alloc(512, 0).unwrap(), 0)
                .build()
                .user_data(3),
        );
        let entry = err.unwrap_err().entry;
        assert_eq!(entry.get_user_data(), 3);
        assert_eq!(r.ring.sq_space(), 0);
        r.wait_all(2);
        assert_eq!(
            r.run(entry).result(),
            Ok(512),
            "the returned entry is still usable"
        );
    }

    #[test]
    fn a_descriptor_of_another_thread_cannot_be_registered() {
        fixture();
        let worker_desc_result = SpdkThread::spawn("other-thread", |_| {
            let desc = BdevDesc::open("Malloc0", OpenMode::ReadOnly).unwrap();
            // The ring on this thread accepts it; a ring elsewhere cannot
            // get at it because BdevDesc is !Send (checked at compile time).
            let mut ring = Ring::new(2).unwrap();
            ring.register_bdev(&desc).is_ok()
        })
        .unwrap()
        .join()
        .unwrap();
        assert!(worker_desc_result);
    }
}

#[cfg(spdk)]
mod ordering_and_cancel {
    use super::support::*;

    #[test]
    fn drain_waits_for_everything_before_it_and_holds_back_what_follows() {
        delay_bdev("DelayDrain", 20_000);
        let mut r = rig("DelayDrain", OpenMode::ReadWrite, 16);
        let t = r.target;
        for i in 0..4 {
            r.ring
                .push(
                    opcode::Write::new(t, pattern(512, i), i)
                        .build()
                        .user_data(i),
                )
                .unwrap();
        }
        r.ring
            .push(
                opcode::Nop::new()
                    .build()
                    .user_data(100)
                    .flags(EntryFlags::DRAIN),
            )
            .unwrap();
        r.ring
            .push(opcode::Nop::new().build().user_data(101))
            .unwrap();
        let order: Vec<u64> = r.wait_all(6).iter().map(|c| c.user_data()).collect();
        let drain_at = order.iter().position(|&u| u == 100).unwrap();
        assert_eq!(drain_at, 4, "{order:?}");
        assert_eq!(order[5], 101);
    }

    #[test]
    fn timeouts_fire_with_etime_or_complete_by_count() {
        let mut r = rig("Malloc0", OpenMode::ReadOnly, 8);
        let start = Instant::now();
        let done = r.run(
            opcode::Timeout::new(Duration::from_millis(30))
                .build()
                .user_data(9),
        );
        assert_eq!(done.errno(), Some(Errno::ETIME));
        assert!(start.elapsed() >= Duration::from_millis(30));

        r.ring
            .push(
                opcode::Timeout::new(Duration::from_secs(60))
                    .count(2)
                    .build()
                    .user_data(1),
            )
            .unwrap();
        r.ring
            .push(opcode::Nop::new().build().user_data(2))
            .unwrap();
        r.ring
            .push(opcode::Nop::new().build().user_data(3))
            .unwrap();
        let mut all = r.wait_all(3);
        all.sort_by_key(|c| c.user_data());
        assert_eq!(
            all[0].result(),
            Ok(0),
            "completed by count, long before 60 s"
        );
    }

    /// A read bounded by a LinkTimeout of `after`: (read, link timeout).
    fn read_with_link_timeout(r: &mut Rig, after: Duration) -> (Completion, Completion) {
        let read = opcode::Read::new(r.target, DmaBuf::alloc(512, 0).unwrap(), 0).build();
        r.ring
            .push(read.user_data(1).flags(EntryFlags::LINK))
            .unwrap();
        r.ring
            .push(opcode::LinkTimeout::new(after).build().user_data(2))
            .unwrap();
        let mut all = r.wait_all(2);
        all.sort_by_key(|c| c.user_data());
        let timeout = all.pop().unwrap();
        (all.pop().unwrap(), timeout)
    }

    #[test]
    fn link_timeout_aborts_a_slow_io() {
        delay_bdev("DelayLinkTimeout", 2_000_000);
        let mut r = rig("DelayLinkTimeout", OpenMode::ReadWrite, 8);
        let start = Instant::now();
        let (read, timeout) = read_with_link_timeout(&mut r, Duration::from_millis(50));
        assert_eq!(read.errno(), Some(Errno::ECANCELED), "the read was aborted");
        assert_eq!(timeout.errno(), Some(Errno::ETIME));
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "aborted, not waited out"
        );
    }

    #[test]
    fn link_timeout_is_cancelled_when_the_io_wins() {
        let mut r = rig("Malloc0", OpenMode::ReadOnly, 8);
        let (read, timeout) = read_with_link_timeout(&mut r, Duration::from_secs(30));
        assert_eq!(read.result(), Ok(512));
        assert_eq!(timeout.errno(), Some(Errno::ECANCELED));
    }

    #[test]
    fn cancel_covers_unstarted_in_flight_and_unknown_entries() {
        delay_bdev("DelayCancel", 1_000_000);
        let mut r = rig("DelayCancel", OpenMode::ReadWrite, 16);
        let t = r.target;
        // 1 is in flight on the slow bdev; 2 waits for it in a LINK chain.
        let read = opcode::Read::new(t, DmaBuf::alloc(512, 0).unwrap(), 0).build();
        r.ring
            .push(read.user_data(1).flags(EntryFlags::LINK))
            .unwrap();
        r.ring
            .push(opcode::Nop::new().build().user_data(2))
            .unwrap();
        r.ring.poll();
        r.ring
            .push(opcode::Cancel::new(2).build().user_data(10))
            .unwrap();
        r.ring
            .push(opcode::Cancel::new(12345).build().user_data(11))
            .unwrap();
        r.ring
            .push(opcode::Cancel::new(1).build().user_data(12))
            .unwrap();
        let start = Instant::now();
        let mut all = r.wait_all(5);
        all.sort_by_key(|c| c.user_data());
        let got: Vec<_> = all.iter().map(|c| (c.user_data(), c.errno())).collect();
        assert_eq!(
            got,
            [
                (1, Some(Errno::ECANCELED)),
                (2, Some(Errno::ECANCELED)),
                (10, None),
                (11, Some(Errno::ENOENT)),
                (12, None)
            ]
        );
        assert!(
            start.elapsed() < Duration::from_millis(900),
            "the slow read was aborted"
        );
    }

    /// An error bdev whose reads are held ("pending") until resumed, on
    /// top of `base`; it can abort exactly when `base` can.
    fn pending_error_bdev(base: &str) -> String {
        rpc(
            "bdev_error_create",
            format!("{{\"base_name\": \"{base}\"}}"),
        );
        let name = format!("EE_{base}");
        rpc(
            "bdev_error_inject_error",
            format!("{{\"name\": \"{name}\", \"io_type\": \"read\", \"error_type\": \"pending\", \"num\": 1}}"),
        );
        name
    }

    /// Holds one read in the error bdev `name`, cancels it and checks the
    /// cancel's errno (`None` for success), then resumes the read and checks
    /// it completes with its real result.
    fn cancel_held_read(name: &str, abortable: bool, cancel_errno: Option<Errno>) {
        let mut r = rig(name, OpenMode::ReadOnly, 8);
        assert_eq!(r.desc.bdev().supports(spdk_ring::IoTypes::ABORT), abortable);
        let read = opcode::Read::new(r.target, DmaBuf::alloc(512, 0).unwrap(), 0).build();
        r.ring.push(read.user_data(1)).unwrap();
        r.ring.poll();
        let cancel = r.run(opcode::Cancel::new(1).build().user_data(2));
        assert_eq!(cancel.errno(), cancel_errno);
        rpc(
            "bdev_error_resume_pending",
            format!("{{\"name\": \"{name}\"}}"),
        );
        let read = r.wait_all(1).pop().unwrap();
        assert_eq!((read.user_data(), read.result()), (1, Ok(512)));
    }

    /// Plain reads and writes pushed while the core is empty take the lane;
    /// once the core holds something, they queue in the core. Whichever way
    /// they go, they start in push order and the queue counts add up.
    #[test]
    fn lane_and_core_entries_keep_push_order_and_counts() {
        create(JsonConfig::new().malloc_bdev("LaneOrder", 64, 512));
        let mut r = rig("LaneOrder", OpenMode::ReadWrite, 16);
        let t = r.target;
        let write = |seed: u64| opcode::Write::new(t, pattern(512, seed), 7).build();
        // Lane, lane, then a Nop makes the core busy, so the next write and
        // the DRAIN read go to the core behind the lane's writes.
        r.ring.push(write(1).user_data(1)).unwrap();
        r.ring.push(write(2).user_data(2)).unwrap();
        r.ring
            .push(opcode::Nop::new().build().user_data(3))
            .unwrap();
        r.ring.push(write(4).user_data(4)).unwrap();
        let read = opcode::Read::new(t, DmaBuf::alloc(512, 0).unwrap(), 7).build();
        r.ring
            .push(read.user_data(5).flags(EntryFlags::DRAIN))
            .unwrap();
        assert_eq!(r.ring.sq_len(), 5);
        assert_eq!(r.ring.sq_space(), 11);
        assert_eq!(
            r.ring.submit(),
            5,
            "all left the SQ (the DRAIN read waits in a slot)"
        );
        assert_eq!(r.ring.sq_len(), 0);
        assert!(r.ring.in_flight() >= 3, "{}", r.ring.in_flight());
        let mut done = r.wait_all(5);
        assert_eq!(r.ring.in_flight(), 0);
        assert_eq!(r.ring.cq_len(), 0);
        let mut last = done.pop().unwrap();
        assert_eq!(last.user_data(), 5, "the DRAIN read completes last");
        let got = last.take_buf().unwrap();
        assert_eq!(&got[..], &pattern(512, 4)[..], "it reads the last write");
        let mut users: Vec<u64> = done.iter().map(|c| c.user_data()).collect();
        users.sort_unstable();
        assert_eq!(users, [1, 2, 3, 4]);
        assert!(done.iter().all(|c| c.is_ok()));
        // The core is empty again: the next plain read takes the lane.
        let read = opcode::Read::new(t, DmaBuf::alloc(512, 0).unwrap(), 7).build();
        assert_eq!(r.run(read.user_data(6)).result(), Ok(512));
        assert_eq!(r.ring.stats().lane_ios, 3);
    }

    /// A count Timeout counts completions of entries on the lane too.
    #[test]
    fn count_timeouts_count_lane_completions() {
        let mut r = rig("Null0", OpenMode::ReadOnly, 8);
        let t = r.target;
        for i in 0..2 {
            let read = opcode::Read::new(t, DmaBuf::alloc(4096, 0).unwrap(), i).build();
            r.ring.push(read.user_data(i)).unwrap();
        }
        r.ring
            .push(
                opcode::Timeout::new(Duration::from_secs(60))
                    .count(2)
                    .build()
                    .user_data(9),
            )
            .unwrap();
        let start = Instant::now();
        let mut all = r.wait_all(3);
        assert_eq!(r.ring.stats().lane_ios, 2);
        let timeout = all.pop().unwrap();
        assert_eq!((timeout.user_data(), timeout.result()), (9, Ok(0)));
        assert!(all.iter().all(|c| c.result() == Ok(4096)));
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "by count, not by time"
        );
    }

    #[test]
    fn plain_reads_take_the_lane_again_once_core_completions_are_taken() {
        let mut r = rig("Null0", OpenMode::ReadOnly, 8);
        let t = r.target;
        // Both ways of taking completions: owned (`completions`) and in
        // place (`reap`). Each leaves the core idle, and the very next
        // plain read, pushed before any poll, must take the lane.
        for in_place in [false, true] {
            r.ring
                .push(opcode::Nop::new().build().user_data(1))
                .unwrap();
            r.ring.submit_and_wait(1, WAIT).unwrap();
            if in_place {
                loop {
                    let Some(done) = r.ring.reap() else { break };
                    assert_eq!((done.user_data(), done.result()), (1, Ok(0)));
                }
            } else {
                let nops: Vec<_> = r.ring.completions().collect();
                assert_eq!(nops.len(), 1);
            }
            let before = r.ring.stats().lane_ios;
            let read = opcode::Read::new(t, DmaBuf::alloc(4096, 0).unwrap(), 5).build();
            r.ring.push(read.user_data(2)).unwrap();
            let done = r.wait_all(1);
            assert_eq!((done[0].user_data(), done[0].result()), (2, Ok(4096)));
            assert_eq!(r.ring.stats().lane_ios, before + 1, "in_place: {in_place}");
        }
    }

    #[test]
    fn lane_completions_before_a_count_timeout_do_not_count_for_it() {
        // The core is idle throughout the first three reads, so it hears of
        // them only when the Timeout arrives: they must not satisfy it.
        let mut r = rig("Null0", OpenMode::ReadOnly, 8);
        let t = r.target;
        for i in 0..3 {
            let read = opcode::Read::new(t, DmaBuf::alloc(4096, 0).unwrap(), i).build();
            r.ring.push(read.user_data(i)).unwrap();
        }
        let reads = r.wait_all(3);
        assert!(reads.iter().all(|c| c.result() == Ok(4096)));
        assert_eq!(r.ring.stats().lane_ios, 3);
        let timeout = opcode::Timeout::new(Duration::from_millis(200))
            .count(2)
            .build();
        r.ring.push(timeout.user_data(9)).unwrap();
        let done = r.wait_all(1);
        assert_eq!(done[0].user_data(), 9);
        assert_eq!(done[0].errno(), Some(Errno::ETIME), "expired by time");
    }

    #[test]
    fn cancel_requests_an_abort_and_the_io_keeps_its_real_result() {
        // Malloc supports abort, so the error bdev over it advertises it; the
        // held read is not found by the base, so it finishes normally later.
        create(JsonConfig::new().malloc_bdev("PendMalloc", 64, 512));
        cancel_held_read(&pending_error_bdev("PendMalloc"), true, None);
    }

    #[test]
    fn cancel_of_in_flight_io_on_a_bdev_without_abort_is_ealready() {
        // AIO cannot abort, so neither can the error bdev over it.
        let file = std::env::temp_dir().join(format!("spdk-ring-aio-{}", std::process::id()));
        std::fs::write(&file, vec![0u8; 1 << 20]).unwrap();
        let params = format!(
            "{{\"name\": \"PendAio\", \"filename\": \"{}\", \"block_size\": 512}}",
            file.display()
        );
        rpc("bdev_aio_create", params);
        cancel_held_read(&pending_error_bdev("PendAio"), false, Some(Errno::EALREADY));
        let _ = std::fs::remove_file(&file);
    }

    /// The issue-16 case: plain reads on the lane overflow a small CQ
    /// exactly as the same reads do through the core.
    #[test]
    fn a_full_cq_flags_and_counts_lane_completions_as_the_core_does() {
        fixture();
        let _t = SpdkThread::attach("lane-overflow").unwrap();
        let desc = BdevDesc::open("Malloc0", OpenMode::ReadOnly).unwrap();
        let mut seen = Vec::new();
        for lane in [true, false] {
            let mut ring = Ring::builder(4)
                .cq_entries(4)
                .max_in_flight(64)
                .lane(lane)
                .build()
                .unwrap();
            let t = ring.register_bdev(&desc).unwrap();
            for i in 0..64u64 {
                let read = opcode::Read::new(t, DmaBuf::alloc(4096, 0).unwrap(), i * 8).build();
                ring.push(read.user_data(i)).unwrap();
                if ring.sq_space() == 0 {
                    ring.poll();
                }
            }
            let deadline = Instant::now() + WAIT;
            while ring.in_flight() + ring.sq_len() > 0 {
                assert!(Instant::now() < deadline);
                ring.poll();
            }
            assert_eq!(ring.stats().lane_ios, if lane { 64 } else { 0 });
            assert_eq!(ring.cq_len(), 4, "lane: {lane}");
            assert_eq!(ring.stats().overflowed, 60, "lane: {lane}");
            let mut got = Vec::new();
            // Half owned, half in place: both forms carry the flag.
            for _ in 0..32 {
                let c = ring.next_completion().unwrap();
                got.push((c.user_data(), c.result(), c.flags()));
            }
            loop {
                let Some(c) = ring.reap() else { break };
                got.push((c.user_data(), c.result(), c.flags()));
            }
            assert_eq!(got.len(), 64);
            let flagged: Vec<u64> = got
                .iter()
                .filter(|c| c.2.contains(CompletionFlags::OVERFLOWED))
                .map(|c| c.0)
                .collect();
            assert_eq!(flagged.len(), 60, "lane: {lane}");
            assert!(got.iter().all(|c| c.1 == Ok(4096)));
            assert_eq!(ring.cq_len(), 0);
            seen.push(got);
        }
        assert_eq!(seen[0], seen[1], "lane and core hand out the same");
    }

    #[test]
    fn a_small_cq_overflows_into_the_backlog_without_losing_completions() {
        fixture();
        let _t = SpdkThread::attach("overflow").unwrap();
        let mut ring = Ring::builder(32).cq_entries(32).build().unwrap();
        for i in 0..32 {
            ring.push(opcode::Nop::new().build().user_data(i)).unwrap();
        }
        ring.poll();
        for i in 32..64 {
            ring.push(opcode::Nop::new().build().user_data(i)).unwrap();
        }
        ring.poll();
        assert!(
            ring.stats().overflowed >= 32,
            "overflowed {}",
            ring.stats().overflowed
        );
        let got: Vec<(u64, bool)> = ring
            .completions()
            .map(|c| {
                (
                    c.user_data(),
                    c.flags().contains(CompletionFlags::OVERFLOWED),
                )
            })
            .collect();
        let expect: Vec<(u64, bool)> = (0..64).map(|i| (i, i >= 32)).collect();
        assert_eq!(
            got, expect,
            "in order; the second half waited in the backlog"
        );
    }
}

#[cfg(spdk)]
mod lifecycle {
    use super::support::*;

    #[test]
    fn hot_remove_completes_in_flight_fails_new_entries_and_releases_the_bdev() {
        delay_bdev("Hot0", 100_000);
        let mut r = rig("Hot0", OpenMode::ReadWrite, 16);
        let other = r
            .ring
            .register_bdev(&BdevDesc::open("Malloc0", OpenMode::ReadOnly).unwrap())
            .unwrap();
        for i in 0..4 {
            r.ring
                .push(
                    opcode::Read::new(r.target, DmaBuf::alloc(512, 0).unwrap(), i)
                        .build()
                        .user_data(i),
                )
                .unwrap();
        }
        r.ring.poll();
        assert_eq!(r.ring.in_flight(), 4);
        let deleted = fixture().bdev_method("bdev_delay_delete", "{\"name\": \"Hot0\"}".into());
        let deadline = Instant::now() + WAIT;
        while !r.ring.is_removed(r.target) {
            assert!(Instant::now() < deadline, "no REMOVE event");
            r.ring.poll();
        }
        // New entries for the removed bdev fail fast; the other target works.
        r.ring
            .push(
                opcode::Read::new(r.target, DmaBuf::alloc(512, 0).unwrap(), 0)
                    .build()
                    .user_data(50),
            )
            .unwrap();
        r.ring
            .push(
                opcode::Read::new(other, DmaBuf::alloc(512, 0).unwrap(), 0)
                    .build()
                    .user_data(60),
            )
            .unwrap();
        let mut all = r.wait_all(6);
        all.sort_by_key(|c| c.user_data());
        for c in &all[..4] {
            // In-flight reads finish with their real result: success, or
            // ECANCELED when the delay module aborts them on removal.
            assert!(
                matches!(c.result(), Ok(512)) || c.errno() == Some(Errno::ECANCELED),
                "{c:?}"
            );
        }
        assert_eq!(all[4].errno(), Some(Errno::ENODEV));
        assert_eq!(all[5].result(), Ok(512));
        // The ring released its channel: the descriptor is the last holder.
        drop(std::mem::replace(
            &mut r.desc,
            BdevDesc::open("Malloc0", OpenMode::ReadOnly).unwrap(),
        ));
        let result = loop {
            r.ring.poll();
            if let Ok(res) = deleted.try_recv() {
                break res;
            }
            assert!(Instant::now() < deadline + WAIT, "delete never finished");
        };
        result.unwrap();
    }

    #[test]
    fn dropping_a_ring_with_io_in_flight_waits_for_spdk_first() {
        delay_bdev("DropDelay", 50_000);
        let r = rig("DropDelay", OpenMode::ReadWrite, 16);
        let Rig {
            mut ring,
            desc,
            thread,
            target,
        } = r;
        for i in 0..8 {
            ring.push(
                opcode::Write::new(target, pattern(512, i), i)
                    .build()
                    .user_data(i),
            )
            .unwrap();
        }
        ring.poll();
        assert_eq!(ring.in_flight(), 8);
        let start = Instant::now();
        drop(ring);
        assert!(
            start.elapsed() >= Duration::from_millis(20),
            "drop returned before SPDK finished"
        );
        // The writes really happened (the buffers were alive throughout).
        let mut ring = Ring::new(4).unwrap();
        let t = ring.register_bdev(&desc).unwrap();
        ring.push(opcode::Read::new(t, DmaBuf::alloc(512, 0).unwrap(), 7).build())
            .unwrap();
        ring.submit_and_wait(1, WAIT).unwrap();
        let mut c = ring.next_completion().unwrap();
        assert_eq!(c.take_buf().unwrap().as_slice(), &pattern(512, 7)[..]);
        drop(ring);
        drop(desc);
        drop(thread);
    }

    #[test]
    fn submit_and_wait_times_out_cleanly() {
        let mut r = rig("Malloc0", OpenMode::ReadOnly, 4);
        let err = r
            .ring
            .submit_and_wait(1, Duration::from_millis(20))
            .unwrap_err();
        assert!(matches!(err, spdk_ring::Error::Timeout { .. }));
    }
}

#[cfg(spdk)]
mod soak {
    use super::support::*;
    use std::collections::HashMap;

    /// Random mixes of every entry kind and flag on two real bdevs (one
    /// read-only), pushed as the SQ allows: every user_data completes
    /// exactly once, LINK chains complete in order, and only the errnos the
    /// semantics allow appear. Seeded, bounded, and quick.
    #[test]
    fn random_mixed_workloads_complete_every_entry_exactly_once() {
        let mut r = rig("Malloc0", OpenMode::ReadWrite, 64);
        let null = BdevDesc::open("Null0", OpenMode::ReadOnly).unwrap();
        let ro = r.ring.register_bdev(&null).unwrap();
        let rw = r.target;
        // Full SQs keep the core busy; small bursts let it empty, so plain
        // reads and writes take the lane and the rest meets them there.
        for (seed, bursty) in [
            (1u64, false),
            (7, false),
            (42, false),
            (3, true),
            (11, true),
        ] {
            let lane_before = r.ring.stats().lane_ios;
            let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            let mut next = move |n: u64| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng % n
            };
            let total = 3000u64;
            let mut chain_of: HashMap<u64, u64> = HashMap::new();
            let (mut pushed, mut chain_id, mut in_chain) = (0u64, 0u64, false);
            let mut seen: HashMap<u64, (usize, Option<Errno>)> = HashMap::new();
            let deadline = Instant::now() + WAIT;
            while seen.len() < total as usize {
                assert!(
                    Instant::now() < deadline,
                    "seed {seed}: {} of {total} completed",
                    seen.len()
                );
                // A burst starts once the last one is done: its first plain
                // reads and writes take the lane, the rest meet them in the core.
                let burst = match bursty {
                    false => u64::MAX,
                    true if r.ring.in_flight() + r.ring.sq_len() > 0 => 0,
                    true => 1 + next(6),
                };
                let mut this_round = 0;
                while pushed < total && r.ring.sq_space() > 0 && this_round < burst {
                    this_round += 1;
                    let ud = pushed;
                    // Malloc0 blocks 7000..8000 belong to this test.
                    let lba = 7000 + next(990);
                    let entry = match next(10) {
                        0..=2 => opcode::Read::new(rw, DmaBuf::alloc(512, 0).unwrap(), lba).build(),
                        3..=4 => opcode::Write::new(rw, pattern(1024, ud), lba).build(),
                        5 => opcode::Read::new(ro, DmaBuf::alloc(4096, 0).unwrap(), next(1000))
                            .build(),
                        6 => opcode::WriteZeroes::new(rw, lba, 2).build(),
                        7 => opcode::Nop::new().build(),
                        8 => opcode::Timeout::new(Duration::from_micros(next(200))).build(),
                        _ => opcode::Cancel::new(next(pushed + 1)).build(),
                    };
                    let mut flags = EntryFlags::empty();
                    if next(4) == 0 {
                        flags |= EntryFlags::LINK;
                    }
                    if next(25) == 0 {
                        flags |= EntryFlags::DRAIN;
                    }
                    if in_chain || flags.contains(EntryFlags::LINK) {
                        chain_of.insert(ud, chain_id);
                    }
                    in_chain = flags.contains(EntryFlags::LINK);
                    if !in_chain {
                        chain_id += 1;
                    }
                    r.ring.push(entry.user_data(ud).flags(flags)).unwrap();
                    pushed += 1;
                }
                // io_uring rule: submit ends a chain still open at the SQ's end.
                if in_chain && r.ring.sq_len() > 0 {
                    in_chain = false;
                    chain_id += 1;
                }
                r.ring.poll();
                for c in r.ring.completions() {
                    let order = seen.len();
                    let previous = seen.insert(c.user_data(), (order, c.errno()));
                    assert!(
                        previous.is_none(),
                        "seed {seed}: {} completed twice",
                        c.user_data()
                    );
                    if let Some(e) = c.errno() {
                        let allowed = [
                            Errno::ECANCELED,
                            Errno::ETIME,
                            Errno::ENOENT,
                            Errno::EALREADY,
                            Errno::EINVAL,
                        ];
                        assert!(
                            allowed.contains(&e),
                            "seed {seed}: {} failed with {e}",
                            c.user_data()
                        );
                    }
                }
            }
            let mut members: HashMap<u64, Vec<u64>> = HashMap::new();
            for (ud, chain) in &chain_of {
                members.entry(*chain).or_default().push(*ud);
            }
            for (chain, mut uds) in members {
                uds.sort_unstable();
                let orders: Vec<usize> = uds.iter().map(|u| seen[u].0).collect();
                assert!(
                    orders.windows(2).all(|w| w[0] < w[1]),
                    "seed {seed}: chain {chain} {uds:?} completed out of order: {orders:?}"
                );
            }
            assert_eq!(r.ring.in_flight(), 0);
            if bursty {
                let on_lane = r.ring.stats().lane_ios - lane_before;
                assert!(on_lane > 100, "seed {seed}: {on_lane} entries on the lane");
            }
        }
    }
}
