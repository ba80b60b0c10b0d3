//! Against a real NVMe controller: SPDK's own `nvmf_tgt` runs as a child
//! process exporting a malloc namespace over NVMe/TCP on 127.0.0.1.
//!
//! * `nvme_bdev`: this process attaches it as bdev `Nvme0n1` through JSON
//!   config; data round-trips through the ring, and raw NVMe commands
//!   (passthru) report the controller's exact status (SCT/SC).
//! * `nvme_direct`: the NVMe driver API without the bdev layer: transport
//!   ids, connect, discovery probe, identify data, namespaces, detach.
//!
//! `nvmf_tgt` is found as `$SPDK_NVMF_TGT`, on `PATH`, or in
//! `/usr/local/bin`; it is killed when the tests end, even if one fails.

#[path = "common/skipped.rs"]
#[macro_use]
mod skipped;
report_skipped_without_spdk!();

#[cfg(spdk)]
#[path = "common/mod.rs"]
mod common;

/// Pushes one entry and waits for its completion.
#[cfg(spdk)]
fn run_one(ring: &mut spdk_ring::Ring, entry: spdk_ring::Entry) -> spdk_ring::Completion {
    ring.push(entry).unwrap();
    ring.submit_and_wait(1, common::WAIT).unwrap();
    ring.next_completion().unwrap()
}

/// A DMA buffer with a pattern unique to `seed`.
#[cfg(spdk)]
fn filled(len: usize, seed: u8) -> spdk_ring::DmaBuf {
    let mut b = spdk_ring::DmaBuf::alloc(len, 0).unwrap();
    for (i, x) in b.iter_mut().enumerate() {
        *x = (i as u8).wrapping_mul(13).wrapping_add(seed);
    }
    b
}

#[cfg(spdk)]
#[path = "common/nvmf.rs"]
mod target;

#[cfg(spdk)]
mod nvme_bdev {
    use super::common::*;
    use super::target::{target, NAMESPACE_BLOCKS, NQN};
    use spdk_ring::{
        opcode, BdevDesc, DmaBuf, Errno, IoTypes, NvmeCommand, OpenMode, Ring, SpdkThread,
    };

    /// The base configuration plus the NVMe/TCP controller of the target.
    pub fn with_nvme_controller() -> spdk_ring::JsonConfig {
        let port = target().port;
        base_config().method(
            "bdev_nvme_attach_controller",
            format!(
                "{{\"name\": \"Nvme0\", \"trtype\": \"tcp\", \"adrfam\": \"ipv4\", \"traddr\": \"127.0.0.1\", \
                 \"trsvcid\": \"{port}\", \"subnqn\": \"{NQN}\"}}"
            ),
        )
    }

    struct Rig {
        ring: Ring,
        _desc: BdevDesc,
        _thread: SpdkThread,
        target: spdk_ring::Target,
    }

    fn rig(name: &str) -> Rig {
        fixture_with(with_nvme_controller);
        let thread = SpdkThread::attach(name).unwrap();
        let desc = BdevDesc::open("Nvme0n1", OpenMode::ReadWrite).unwrap();
        let mut ring = Ring::new(16).unwrap();
        let target = ring.register_bdev(&desc).unwrap();
        Rig {
            ring,
            _desc: desc,
            _thread: thread,
            target,
        }
    }

    impl Rig {
        fn run(&mut self, entry: spdk_ring::Entry) -> spdk_ring::Completion {
            super::run_one(&mut self.ring, entry)
        }
    }

    use super::filled;

    /// An NVMe I/O command on LBAs `slba..slba+blocks` (NLB is zero-based).
    fn nvme_io(opcode: u8, slba: u64, blocks: u32) -> NvmeCommand {
        NvmeCommand {
            opcode,
            nsid: 1,
            cdw10: slba as u32,
            cdw11: (slba >> 32) as u32,
            cdw12: blocks - 1,
            ..Default::default()
        }
    }

    const NVME_WRITE: u8 = 0x01;
    const NVME_READ: u8 = 0x02;
    const NVME_COMPARE: u8 = 0x05;

    #[test]
    fn nvme_bdev_over_tcp_round_trips_data_through_the_ring() {
        let mut r = rig("nvme-data");
        let bdev = r._desc.bdev();
        assert_eq!(
            (bdev.block_size(), bdev.num_blocks()),
            (512, NAMESPACE_BLOCKS)
        );
        assert!(bdev.supports(IoTypes::NVME_IO | IoTypes::READ | IoTypes::WRITE));
        for (i, blocks) in [1usize, 8, 64].into_iter().enumerate() {
            let lba = 100 * i as u64;
            let out = filled(blocks * 512, i as u8);
            let expect = out.to_vec();
            assert_eq!(
                r.run(opcode::Write::new(r.target, out, lba).build())
                    .result(),
                Ok(blocks as u64 * 512)
            );
            let mut back = r.run(
                opcode::Read::new(
                    r.target,
                    DmaBuf::alloc_zeroed(blocks * 512, 0).unwrap(),
                    lba,
                )
                .build(),
            );
            assert_eq!(back.result(), Ok(blocks as u64 * 512));
            assert_eq!(back.take_buf().unwrap().as_slice(), &expect[..]);
        }
    }

    #[test]
    fn nvme_passthru_moves_data_and_reports_the_controllers_status() {
        let mut r = rig("nvme-passthru");
        let data = filled(4 * 512, 99);
        let expect = data.to_vec();
        let write = opcode::NvmePassthru::new(r.target, nvme_io(NVME_WRITE, 2000, 4))
            .buf(data)
            .build();
        let done = r.run(write.user_data(1));
        assert_eq!(done.result(), Ok(2048));
        // The regular read path sees what the raw write put there.
        let mut back =
            r.run(opcode::Read::new(r.target, DmaBuf::alloc(2048, 0).unwrap(), 2000).build());
        assert_eq!(back.take_buf().unwrap().as_slice(), &expect[..]);

        // A read past the namespace's end: Generic / LBA Out of Range (0x80).
        let beyond = opcode::NvmePassthru::new(r.target, nvme_io(NVME_READ, NAMESPACE_BLOCKS, 1))
            .buf(DmaBuf::alloc(512, 0).unwrap())
            .build();
        let mut done = r.run(beyond.user_data(2));
        let failure = done.result().unwrap_err();
        let status = failure
            .nvme_status()
            .expect("an NVMe-backed bdev reports the NVMe status");
        assert_eq!((status.sct, status.sc), (0, 0x80), "{failure}");
        assert_eq!(failure.errno(), Errno::EIO);
        assert!(done.take_buf().is_some(), "the buffer comes back on error");

        // Compare against different data: Media Error / Compare Failure (0x85).
        let other = filled(4 * 512, 7);
        let compare = opcode::NvmePassthru::new(r.target, nvme_io(NVME_COMPARE, 2000, 4))
            .buf(other)
            .build();
        let done = r.run(compare.user_data(3));
        let failure = done.result().unwrap_err();
        assert_eq!(failure.errno(), Errno(libc::EILSEQ));
        let status = failure.nvme_status().unwrap();
        assert_eq!((status.sct, status.sc), (2, 0x85), "{failure}");
        // And the same data compares equal.
        let same = DmaBuf::from_slice(&expect).unwrap();
        let compare = opcode::NvmePassthru::new(r.target, nvme_io(NVME_COMPARE, 2000, 4))
            .buf(same)
            .build();
        assert!(r.run(compare.user_data(4)).is_ok());
    }
}

#[cfg(spdk)]
mod nvme_direct {
    use super::common::*;
    use super::target::{target, NAMESPACE_BLOCKS, NQN};
    use spdk_ring::nvme::{ControllerOptions, NvmeController, Transport, TransportId};
    use spdk_ring::Error;
    use std::time::{Duration, Instant};

    fn env() {
        fixture_with(super::nvme_bdev::with_nvme_controller);
    }

    #[test]
    fn transport_ids_parse_print_and_reject_garbage() {
        env();
        let trid: TransportId =
            format!("trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:4420 subnqn:{NQN}")
                .parse()
                .unwrap();
        assert_eq!(trid.transport(), Transport::Tcp);
        assert_eq!(
            (trid.traddr().as_str(), trid.trsvcid().as_str()),
            ("127.0.0.1", "4420")
        );
        assert_eq!(trid.subnqn(), NQN);
        let again = TransportId::parse(&trid.to_string()).unwrap();
        assert_eq!(
            (again.traddr(), again.trsvcid(), again.subnqn()),
            (trid.traddr(), trid.trsvcid(), trid.subnqn())
        );
        let pcie = TransportId::pcie("0000:04:00.0").unwrap();
        assert_eq!(
            (pcie.transport(), pcie.traddr().as_str()),
            (Transport::Pcie, "0000:04:00.0")
        );
        // SPDK takes an unknown trtype as a custom transport, upper-cased.
        let custom = TransportId::parse("trtype:bogus traddr:x").unwrap();
        assert_eq!(custom.transport(), Transport::Other("BOGUS".into()));
        for bad in ["", "no colon here", "trtype:TCP\0"] {
            assert!(
                matches!(TransportId::parse(bad), Err(Error::InvalidArgument(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn connect_reads_identify_data_and_namespaces() {
        env();
        let trid = TransportId::tcp("127.0.0.1", target().port, NQN).unwrap();
        let options = ControllerOptions {
            keep_alive_timeout_ms: Some(10_000),
            ..Default::default()
        };
        let ctrlr = NvmeController::connect(&trid, &options).unwrap();
        let data = ctrlr.data();
        assert_eq!(data.model_number, "spdk-ring test");
        assert_eq!(data.serial_number, "SPDKRING0001");
        assert_eq!(data.subnqn, NQN);
        assert!(data.num_namespaces >= 1);
        assert_eq!(ctrlr.transport_id().subnqn(), NQN);
        let namespaces = ctrlr.namespaces();
        assert_eq!(
            namespaces.iter().map(|n| n.id()).collect::<Vec<_>>(),
            [1, 2],
            "{namespaces:?}"
        );
        assert_eq!(namespaces[1].num_sectors(), 1024);
        let ns = namespaces[0];
        assert_eq!(
            (ns.id(), ns.sector_size(), ns.num_sectors()),
            (1, 512, NAMESPACE_BLOCKS)
        );
        assert_eq!(ns.size_bytes(), NAMESPACE_BLOCKS * 512);
        assert_eq!(ns.metadata_size(), 0);
        let identify = ns.data();
        assert_eq!(
            (identify.size, identify.capacity),
            (NAMESPACE_BLOCKS, NAMESPACE_BLOCKS)
        );
        assert!(identify.num_lba_formats >= 1);
        assert!(ctrlr.namespace(3).is_none());
        ctrlr.process_admin_completions().unwrap();
    }

    #[test]
    fn connecting_to_a_closed_port_fails_cleanly() {
        env();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let trid = TransportId::tcp("127.0.0.1", port, NQN).unwrap();
        let start = Instant::now();
        let err = NvmeController::connect(&trid, &ControllerOptions::default()).unwrap_err();
        assert!(
            matches!(err, Error::NvmeConnect { ref trid } if trid.contains(&port.to_string())),
            "{err}"
        );
        assert!(start.elapsed() < Duration::from_secs(30));
    }

    #[test]
    fn discovery_probe_attaches_the_exported_subsystem() {
        env();
        let discovery = TransportId::tcp(
            "127.0.0.1",
            target().port,
            "nqn.2014-08.org.nvmexpress.discovery",
        )
        .unwrap();
        let found = NvmeController::probe(&discovery, &ControllerOptions::default()).unwrap();
        let nqns: Vec<String> = found.iter().map(|c| c.data().subnqn).collect();
        assert_eq!(nqns, [NQN]);
    }

    #[test]
    fn controllers_detach_when_dropped_and_can_reconnect() {
        env();
        let trid = TransportId::tcp("127.0.0.1", target().port, NQN).unwrap();
        let first = NvmeController::connect(&trid, &ControllerOptions::default()).unwrap();
        // SPDK shares an attached controller and counts references; each
        // handle's drop releases one, the last one detaches.
        let second = NvmeController::connect(&trid, &ControllerOptions::default()).unwrap();
        assert_eq!(first.as_ptr(), second.as_ptr());
        drop(first);
        assert_eq!(
            second.namespaces().len(),
            2,
            "still attached after one handle dropped"
        );
        drop(second);
        let again = NvmeController::connect(&trid, &ControllerOptions::default()).unwrap();
        assert_eq!(again.namespaces().len(), 2);
    }
}

#[cfg(spdk)]
mod nvme_ring {
    use super::common::*;
    use super::target::{target, NAMESPACE_BLOCKS, NQN};
    use spdk_ring::nvme::{ControllerOptions, NvmeController, TransportId};
    use spdk_ring::{opcode, DmaBuf, EntryFlags, Errno, NvmeCommand, Ring, SpdkThread};

    struct NsRig {
        ring: Ring,
        target: spdk_ring::Target,
        _thread: SpdkThread,
    }

    /// A ring on a fresh SPDK thread with namespace 1 of the target
    /// registered; the controller handle is dropped at once: the ring's
    /// registration keeps it attached.
    fn ns_rig(name: &str) -> NsRig {
        ns_rig_sized(name, 32, 64)
    }

    fn ns_rig_sized(name: &str, sq: u32, qpair_entries: u32) -> NsRig {
        fixture_with(super::nvme_bdev::with_nvme_controller);
        let thread = SpdkThread::attach(name).unwrap();
        let trid = TransportId::tcp("127.0.0.1", target().port, NQN).unwrap();
        let ctrlr = NvmeController::connect(&trid, &ControllerOptions::default()).unwrap();
        let mut ring = Ring::new(sq).unwrap();
        let target = ring
            .register_nvme_namespace(&ctrlr, 1, Some(qpair_entries))
            .unwrap();
        drop(ctrlr);
        NsRig {
            ring,
            target,
            _thread: thread,
        }
    }

    impl NsRig {
        fn run(&mut self, entry: spdk_ring::Entry) -> spdk_ring::Completion {
            super::run_one(&mut self.ring, entry)
        }
    }

    use super::filled;

    #[test]
    fn nvme_namespace_entries_move_data_and_report_status() {
        let mut r = ns_rig("nvme-ring");
        let t = r.target;
        // Namespace blocks 20000.. belong to this test.
        for (i, blocks) in [1usize, 8, 128].into_iter().enumerate() {
            let lba = 20_000 + 200 * i as u64;
            let out = filled(blocks * 512, i as u8);
            let expect = out.to_vec();
            assert_eq!(
                r.run(opcode::NvmeWrite::new(t, out, lba).build()).result(),
                Ok(blocks as u64 * 512)
            );
            let mut back = r.run(
                opcode::NvmeRead::new(t, DmaBuf::alloc_zeroed(blocks * 512, 0).unwrap(), lba)
                    .build(),
            );
            assert_eq!(
                back.take_buf().unwrap().as_slice(),
                &expect[..],
                "{blocks} blocks"
            );
            let same = DmaBuf::from_slice(&expect).unwrap();
            assert!(r
                .run(opcode::NvmeCompare::new(t, same, lba).build())
                .is_ok());
        }
        // Miscompare: the controller's status, and EILSEQ.
        let done = r.run(opcode::NvmeCompare::new(t, filled(512, 200), 20_000).build());
        let failure = done.result().unwrap_err();
        assert_eq!(failure.errno(), Errno(libc::EILSEQ));
        let status = failure.nvme_status().unwrap();
        assert_eq!((status.sct, status.sc), (2, 0x85));

        // Write zeroes and deallocate read back as zeros (malloc namespace).
        for (i, zeroing) in [true, false].into_iter().enumerate() {
            let lba = 21_000 + 100 * i as u64;
            r.run(opcode::NvmeWrite::new(t, filled(4096, 9), lba).build());
            let entry = if zeroing {
                opcode::NvmeWriteZeroes::new(t, lba, 8).build()
            } else {
                opcode::NvmeDeallocate::new(t, lba, 8).build()
            };
            assert_eq!(r.run(entry).result(), Ok(0), "zeroing={zeroing}");
            let mut back = r.run(opcode::NvmeRead::new(t, filled(4096, 1), lba).build());
            assert!(
                back.take_buf().unwrap().iter().all(|&b| b == 0),
                "zeroing={zeroing}"
            );
        }
        assert_eq!(
            r.run(opcode::NvmeFlush::new(t, 0, 1).build()).result(),
            Ok(0)
        );

        // A raw read past the end: LBA Out of Range from the controller, no hang.
        let cmd = NvmeCommand {
            opcode: 0x02,
            cdw10: NAMESPACE_BLOCKS as u32,
            ..Default::default()
        };
        let done = r.run(
            opcode::NvmeIoRaw::new(t, cmd)
                .buf(DmaBuf::alloc(512, 0).unwrap())
                .build(),
        );
        let status = done.result().unwrap_err().nvme_status().unwrap();
        assert_eq!((status.sct, status.sc), (0, 0x80));
        // The ring's own checks catch ranges before they reach the controller.
        let done = r.run(
            opcode::NvmeRead::new(t, DmaBuf::alloc(512, 0).unwrap(), NAMESPACE_BLOCKS).build(),
        );
        assert_eq!(done.errno(), Some(Errno::EINVAL));
        assert!(!r.ring.is_failed(t));
    }

    #[test]
    fn vectored_nvme_io_scatters_and_gathers_across_buffers() {
        let mut r = ns_rig("nvme-vectored");
        let t = r.target;
        // Namespace blocks 23000..23020 belong to this test.
        let lba = 23_000;
        let sizes = [512usize, 1536, 4096, 512, 1024];
        let parts: Vec<DmaBuf> = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| filled(n, 30 + i as u8))
            .collect();
        let flat: Vec<u8> = parts.iter().flat_map(|b| b.to_vec()).collect();
        let done = r.run(opcode::NvmeWritev::new(t, parts, lba).build());
        assert_eq!(done.result(), Ok(flat.len() as u64));
        // Read back in one buffer, and scattered with a different split.
        let mut one = r.run(
            opcode::NvmeRead::new(t, DmaBuf::alloc_zeroed(flat.len(), 0).unwrap(), lba).build(),
        );
        assert_eq!(one.take_buf().unwrap().as_slice(), &flat[..]);
        let split: Vec<DmaBuf> = [2048usize, 512, 5120]
            .iter()
            .map(|&n| DmaBuf::alloc_zeroed(n, 0).unwrap())
            .collect();
        let mut back = r.run(opcode::NvmeReadv::new(t, split, lba).build());
        assert_eq!(back.result(), Ok(flat.len() as u64));
        let got: Vec<u8> = back.take_bufs().iter().flat_map(|b| b.to_vec()).collect();
        assert_eq!(got, flat);
        // num_blocks shorter than the buffers: only those blocks move.
        let bufs = vec![filled(1024, 90), filled(1024, 91)];
        let done = r.run(opcode::NvmeWritev::new(t, bufs, lba).num_blocks(3).build());
        assert_eq!(done.result(), Ok(3 * 512));
        let mut back =
            r.run(opcode::NvmeRead::new(t, DmaBuf::alloc_zeroed(2048, 0).unwrap(), lba).build());
        let back = back.take_buf().unwrap();
        assert_eq!(&back[..1024], &filled(1024, 90)[..]);
        assert_eq!(&back[1024..1536], &filled(1024, 91)[..512]);
        assert_eq!(
            &back[1536..],
            &flat[1536..2048],
            "the 4th block was not written"
        );
        // Bad scatter lists never reach the controller.
        for (bufs, why) in [
            (Vec::new(), "no buffers"),
            (vec![filled(700, 1)], "not a whole number of blocks"),
            (
                (0..spdk_ring::MAX_IOVECS + 1)
                    .map(|_| filled(512, 2))
                    .collect(),
                "too many buffers",
            ),
        ] {
            let done = r.run(opcode::NvmeReadv::new(t, bufs, lba).build());
            assert_eq!(done.errno(), Some(Errno::EINVAL), "{why}");
        }
        assert!(!r.ring.is_failed(t));
    }

    #[test]
    fn nvme_chains_and_deep_queues_complete_every_entry() {
        let mut r = ns_rig_sized("nvme-deep", 128, 16);
        let t = r.target;
        // A LINK chain: write then read back the same blocks.
        let link = EntryFlags::LINK;
        r.ring
            .push(
                opcode::NvmeWrite::new(t, filled(1024, 3), 22_000)
                    .build()
                    .user_data(1)
                    .flags(link),
            )
            .unwrap();
        r.ring
            .push(
                opcode::NvmeRead::new(t, DmaBuf::alloc(1024, 0).unwrap(), 22_000)
                    .build()
                    .user_data(2),
            )
            .unwrap();
        r.ring.submit_and_wait(2, WAIT).unwrap();
        let mut done: Vec<_> = r.ring.completions().collect();
        assert_eq!(
            done.iter().map(|c| c.user_data()).collect::<Vec<_>>(),
            [1, 2]
        );
        assert_eq!(done[1].take_buf().unwrap().as_slice(), &filled(1024, 3)[..]);

        // Up to 256 in flight on a 16-entry qpair: ENOMEM is waited out.
        let total = 2000u64;
        let (mut issued, mut completed) = (0u64, 0u64);
        let deadline = std::time::Instant::now() + WAIT;
        while completed < total {
            while issued < total && r.ring.sq_space() > 0 {
                let buf = DmaBuf::alloc(512, 0).unwrap();
                r.ring
                    .push(
                        opcode::NvmeRead::new(t, buf, issued % 1000)
                            .build()
                            .user_data(issued),
                    )
                    .unwrap();
                issued += 1;
            }
            r.ring.poll();
            for c in r.ring.completions() {
                assert_eq!(c.result(), Ok(512), "entry {}", c.user_data());
                completed += 1;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{completed} of {total}"
            );
        }
    }

    #[test]
    fn killing_the_target_fails_in_flight_entries_and_reconnect_recovers() {
        use super::target::PrivateTarget;
        use std::time::{Duration, Instant};
        fixture_with(super::nvme_bdev::with_nvme_controller);
        let mut victim = PrivateTarget::start();
        let thread = SpdkThread::attach("nvme-kill").unwrap();
        let trid = TransportId::tcp("127.0.0.1", victim.port, NQN).unwrap();
        let options = ControllerOptions {
            keep_alive_timeout_ms: Some(2_000),
            ..Default::default()
        };
        let ctrlr = NvmeController::connect(&trid, &options).unwrap();
        let mut ring = Ring::new(64).unwrap();
        let t = ring.register_nvme_namespace(&ctrlr, 1, None).unwrap();
        let malloc = spdk_ring::BdevDesc::open("Malloc0", spdk_ring::OpenMode::ReadOnly).unwrap();
        let other = ring.register_bdev(&malloc).unwrap();

        for i in 0..32u64 {
            ring.push(
                opcode::NvmeRead::new(t, DmaBuf::alloc(4096, 0).unwrap(), i * 8)
                    .build()
                    .user_data(i),
            )
            .unwrap();
        }
        ring.submit();
        victim.kill();
        // Every in-flight entry completes (success if it beat the kill,
        // otherwise an error), within a bounded time; none is lost.
        let start = Instant::now();
        let mut done = 0;
        let mut failures = 0;
        while done < 32 {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "only {done} of 32 completed"
            );
            ring.poll();
            for c in ring.completions() {
                done += 1;
                if c.errno().is_some() {
                    failures += 1;
                }
            }
        }
        // New entries fail fast once the qpair is known to be down.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ring.is_failed(t) {
            assert!(
                Instant::now() < deadline,
                "the qpair was never reported failed ({failures} failures)"
            );
            ring.push(
                opcode::NvmeRead::new(t, DmaBuf::alloc(512, 0).unwrap(), 0)
                    .build()
                    .user_data(100),
            )
            .unwrap();
            ring.submit_and_wait(1, WAIT).unwrap();
            ring.completions().for_each(drop);
        }
        ring.push(
            opcode::NvmeRead::new(t, DmaBuf::alloc(512, 0).unwrap(), 0)
                .build()
                .user_data(101),
        )
        .unwrap();
        ring.submit_and_wait(1, WAIT).unwrap();
        assert_eq!(
            ring.next_completion().unwrap().errno(),
            Some(Errno(libc::ENXIO))
        );
        // The other target keeps working.
        ring.push(
            opcode::Read::new(other, DmaBuf::alloc(512, 0).unwrap(), 0)
                .build()
                .user_data(102),
        )
        .unwrap();
        ring.submit_and_wait(1, WAIT).unwrap();
        assert_eq!(ring.next_completion().unwrap().result(), Ok(512));

        // The target comes back: an explicit reconnect, then I/O works again.
        victim.restart();
        ring.reconnect_nvme(t).unwrap();
        assert!(!ring.is_failed(t));
        ring.push(
            opcode::NvmeRead::new(t, DmaBuf::alloc(512, 0).unwrap(), 0)
                .build()
                .user_data(103),
        )
        .unwrap();
        ring.submit_and_wait(1, WAIT).unwrap();
        assert_eq!(ring.next_completion().unwrap().result(), Ok(512));
        drop(ring);
        drop(malloc);
        drop(ctrlr);
        drop(thread);
    }

    #[test]
    fn admin_identify_reads_controller_and_namespace_data() {
        let mut r = ns_rig("nvme-admin");
        // Identify Controller (CNS 1) and Identify Namespace 1 (CNS 0).
        let identify = |cns: u32, nsid: u32| NvmeCommand {
            opcode: 0x06,
            nsid,
            cdw10: cns,
            ..Default::default()
        };
        let mut done = r.run(
            opcode::NvmeAdminRaw::new(r.target, identify(1, 0))
                .buf(DmaBuf::alloc_zeroed(4096, 0).unwrap())
                .build(),
        );
        assert_eq!(done.result(), Ok(4096));
        let data = done.take_buf().unwrap();
        assert_eq!(String::from_utf8_lossy(&data[24..38]), "spdk-ring test");
        let mut done = r.run(
            opcode::NvmeAdminRaw::new(r.target, identify(0, 1))
                .buf(DmaBuf::alloc_zeroed(4096, 0).unwrap())
                .build(),
        );
        let data = done.take_buf().unwrap();
        let nsze = u64::from_le_bytes(data[0..8].try_into().unwrap());
        assert_eq!(nsze, NAMESPACE_BLOCKS);
        // An invalid admin opcode: the controller's status (Invalid Opcode, 0/0x01).
        let bogus = NvmeCommand {
            opcode: 0xC3,
            ..Default::default()
        };
        let status = r
            .run(opcode::NvmeAdminRaw::new(r.target, bogus).build())
            .result()
            .unwrap_err()
            .nvme_status()
            .unwrap();
        assert_eq!((status.sct, status.sc), (0, 0x01));
    }

    #[test]
    fn admin_completions_reaped_by_another_thread_reach_the_ring() {
        use std::sync::mpsc;
        let mut r = ns_rig("nvme-admin-owner");
        let (go, started) = mpsc::channel::<()>();
        let (finished, done_reaping) = mpsc::channel::<u32>();
        // Another thread connected to the same controller processes its
        // admin queue while our command is in flight, running our callback.
        let reaper = std::thread::spawn(move || {
            let _thread = SpdkThread::attach("nvme-admin-reaper").unwrap();
            let trid = TransportId::tcp("127.0.0.1", target().port, NQN).unwrap();
            let ctrlr = NvmeController::connect(&trid, &ControllerOptions::default()).unwrap();
            started.recv().unwrap();
            // Until it reaped something (ours, unless a keep-alive came
            // first), however loaded the machine is.
            let until = std::time::Instant::now() + WAIT;
            let mut reaped = 0;
            while reaped == 0 && std::time::Instant::now() < until {
                reaped += ctrlr.process_admin_completions().unwrap();
            }
            finished.send(reaped).unwrap();
        });
        let identify = NvmeCommand {
            opcode: 0x06,
            cdw10: 1,
            ..Default::default()
        };
        r.ring
            .push(
                opcode::NvmeAdminRaw::new(r.target, identify)
                    .buf(DmaBuf::alloc_zeroed(4096, 0).unwrap())
                    .build()
                    .user_data(7),
            )
            .unwrap();
        r.ring.submit();
        go.send(()).unwrap();
        // It completed our command (among whatever else was pending).
        assert!(done_reaping.recv().unwrap() >= 1);
        reaper.join().unwrap();
        r.ring.submit_and_wait(1, WAIT).unwrap();
        let mut done = r.ring.next_completion().unwrap();
        assert_eq!((done.user_data(), done.result()), (7, Ok(4096)));
        let data = done.take_buf().unwrap();
        assert_eq!(String::from_utf8_lossy(&data[24..38]), "spdk-ring test");
    }

    #[test]
    fn cancel_of_an_in_flight_nvme_command_requests_an_abort() {
        fixture_with(super::nvme_bdev::with_nvme_controller);
        let _thread = SpdkThread::attach("nvme-cancel").unwrap();
        let trid = TransportId::tcp("127.0.0.1", target().port, NQN).unwrap();
        let ctrlr = NvmeController::connect(&trid, &ControllerOptions::default()).unwrap();
        let mut ring = Ring::new(8).unwrap();
        // Namespace 2 takes 2 s per I/O.
        let slow = ring.register_nvme_namespace(&ctrlr, 2, None).unwrap();
        let start = std::time::Instant::now();
        ring.push(
            opcode::NvmeRead::new(slow, DmaBuf::alloc(512, 0).unwrap(), 0)
                .build()
                .user_data(1),
        )
        .unwrap();
        ring.submit();
        ring.push(opcode::Cancel::new(1).build().user_data(2))
            .unwrap();
        // The cancel completes at once: an Abort command was sent.
        ring.submit_and_wait(1, WAIT).unwrap();
        let cancel = ring.next_completion().unwrap();
        assert_eq!((cancel.user_data(), cancel.result()), (2, Ok(0)));
        assert!(start.elapsed() < std::time::Duration::from_secs(1));
        // The read then completes with its real result. SPDK's NVMe/TCP
        // target (this machine's, 26.09-pre) does not abort a command the
        // delay bdev is executing, so it succeeds; a target that aborts it
        // reports Generic / Command Abort Requested (0x07) as ECANCELED.
        ring.submit_and_wait(1, WAIT).unwrap();
        let read = ring.next_completion().unwrap();
        assert_eq!(read.user_data(), 1);
        match read.result() {
            Ok(bytes) => assert_eq!(bytes, 512),
            Err(failure) => {
                assert_eq!(failure.errno(), Errno::ECANCELED, "{failure}");
                let status = failure.nvme_status().unwrap();
                assert_eq!((status.sct, status.sc), (0, 0x07));
            }
        }
        // The target tears the aborted command's qpair down for a while
        // after the host frees it, and rejects a connect reusing its queue
        // id meanwhile: a new registration must still succeed at once.
        drop(ring);
        let mut ring = Ring::new(8).unwrap();
        let fast = ring.register_nvme_namespace(&ctrlr, 1, None).unwrap();
        let done = super::run_one(
            &mut ring,
            opcode::NvmeRead::new(fast, DmaBuf::alloc(512, 0).unwrap(), 0).build(),
        );
        assert_eq!(done.result(), Ok(512));
    }
}
