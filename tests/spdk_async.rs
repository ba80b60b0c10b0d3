//! The `futures` feature against real SPDK: data round trips through every
//! async method on malloc, NVMe/TCP (SPDK's `nvmf_tgt` as a child process)
//! and blobs; many futures on a small ring; dropping futures in flight;
//! timeouts; the ring's errnos; two executors, `block_on` and two handles
//! on one executor. Every test name contains `async`, so
//! `cargo test --features futures async` runs them all.

#[path = "common/skipped.rs"]
#[macro_use]
mod skipped;
report_skipped_without_spdk!();

#[cfg(spdk)]
#[path = "common/mod.rs"]
mod common;

#[cfg(spdk)]
#[path = "common/nvmf.rs"]
mod target;

#[cfg(spdk)]
mod support {
    pub use super::common::*;
    pub use futures::executor::LocalPool;
    pub use futures::task::LocalSpawnExt;
    pub use spdk_ring::{
        opcode, AsyncRing, BdevDesc, DmaBuf, Errno, JsonConfig, OpenMode, Ring, SpdkThread, Target,
    };
    pub use std::time::{Duration, Instant};

    /// The base bdevs plus an NVMe/TCP controller on the test's own
    /// `nvmf_tgt` (bdev `AsyncNvme0n1`).
    pub fn config() -> JsonConfig {
        let port = super::target::target().port;
        base_config().method(
            "bdev_nvme_attach_controller",
            format!(
                "{{\"name\": \"AsyncNvme0\", \"trtype\": \"tcp\", \"adrfam\": \"ipv4\", \
                 \"traddr\": \"127.0.0.1\", \"trsvcid\": \"{port}\", \"subnqn\": \"{}\"}}",
                super::target::NQN
            ),
        )
    }

    pub fn rpc(method: &str, params: String) {
        fixture_with(config)
            .bdev_method(method, params)
            .recv()
            .unwrap()
            .unwrap();
    }

    /// A malloc bdev of its own for one test.
    pub fn malloc(name: &str, blocks: u64) {
        rpc(
            "bdev_malloc_create",
            format!("{{\"name\": \"{name}\", \"num_blocks\": {blocks}, \"block_size\": 512}}"),
        );
    }

    /// A delay bdev `name` (every I/O takes `latency_us`) over a fresh malloc bdev.
    pub fn delay_bdev(name: &str, latency_us: u64) {
        let base = format!("{name}Base");
        malloc(&base, 2048);
        rpc(
            "bdev_delay_create",
            format!(
                "{{\"name\": \"{name}\", \"base_bdev_name\": \"{base}\", \"avg_read_latency\": {latency_us}, \
                 \"p99_read_latency\": {latency_us}, \"avg_write_latency\": {latency_us}, \
                 \"p99_write_latency\": {latency_us}}}"
            ),
        );
    }

    pub fn zeroed(len: usize) -> DmaBuf {
        DmaBuf::alloc_zeroed(len, 0).unwrap()
    }

    /// An async ring of `sq` entries on a fresh SPDK thread, with `bdev` registered.
    pub struct Rig {
        pub ring: AsyncRing,
        pub target: Target,
        pub desc: BdevDesc,
        pub _thread: SpdkThread,
    }

    pub fn rig(name: &str, bdev: &str, mode: OpenMode, sq: u32) -> Rig {
        fixture_with(config);
        let thread = SpdkThread::attach(name).unwrap();
        let desc = BdevDesc::open(bdev, mode).unwrap();
        let ring = AsyncRing::new(Ring::new(sq).unwrap());
        let target = ring.register_bdev(&desc).unwrap();
        Rig {
            ring,
            target,
            desc,
            _thread: thread,
        }
    }

    impl Rig {
        /// Gives the ring back (no future left) and checks it is idle.
        pub fn finish(self) {
            let ring = self
                .ring
                .into_inner(WAIT)
                .expect("no future left and every dropped entry completed");
            assert_eq!((ring.in_flight(), ring.sq_len(), ring.cq_len()), (0, 0, 0));
            drop(ring);
        }
    }

    /// Writes `seed`'s pattern at `lba`, reads it back and compares; both
    /// through the convenience methods.
    pub async fn write_read_check(ring: &AsyncRing, t: Target, lba: u64, len: usize, seed: u64) {
        let out = pattern(len, seed);
        let expect = out.to_vec();
        let (written, _out) = ring.write(t, out, lba).await;
        assert_eq!(written, Ok(len as u64), "write at {lba}");
        let (read, back) = ring.read(t, zeroed(len), lba).await;
        assert_eq!(read, Ok(len as u64), "read at {lba}");
        assert!(back[..] == expect[..], "data read back at {lba}");
    }
}

#[cfg(spdk)]
mod data {
    use super::support::*;

    /// Every bdev method and `submit`, run by `block_on`.
    #[test]
    fn async_methods_round_trip_data_on_malloc_with_block_on() {
        malloc("AsyncData", 4096);
        let r = rig("async-data", "AsyncData", OpenMode::ReadWrite, 16);
        let (ring, t) = (&r.ring, r.target);
        ring.block_on(async {
            write_read_check(ring, t, 0, 4096, 1).await;
            write_read_check(ring, t, 100, 512, 2).await;
            // Vectored: three buffers out, two back.
            let parts = [pattern(512, 3), pattern(1024, 4), pattern(512, 5)];
            let expect: Vec<u8> = parts.iter().flat_map(|p| p.to_vec()).collect();
            let (written, bufs) = ring.writev(t, parts.into(), 200).await;
            assert_eq!((written, bufs.len()), (Ok(2048), 3));
            let (read, bufs) = ring.readv(t, vec![zeroed(1536), zeroed(512)], 200).await;
            assert_eq!((read, bufs.len()), (Ok(2048), 2));
            let back: Vec<u8> = bufs.iter().flat_map(|b| b.to_vec()).collect();
            assert_eq!(back, expect);
            assert_eq!(ring.flush(t, 0, 4096).await, Ok(0));
            // The generic form, with the buffers back in the completion.
            let mut done = ring
                .submit(opcode::Write::new(t, pattern(4096, 6), 300).build())
                .await;
            assert_eq!(done.result(), Ok(4096));
            assert!(done.take_buf().is_some());
            let mut done = ring
                .submit(opcode::Read::new(t, zeroed(4096), 300).build())
                .await;
            assert_eq!(done.result(), Ok(4096));
            assert_eq!(done.take_buf().unwrap().to_vec(), pattern(4096, 6).to_vec());
            let same = ring
                .submit(opcode::Compare::new(t, pattern(4096, 6), 300).build())
                .await;
            assert_eq!(same.result(), Ok(4096));
            let differs = ring
                .submit(opcode::Compare::new(t, pattern(4096, 7), 300).build())
                .await;
            assert_eq!(differs.errno(), Some(Errno(libc::EILSEQ)));
            let zeroes = ring
                .submit(opcode::WriteZeroes::new(t, 300, 8).build())
                .await;
            assert_eq!(zeroes.result(), Ok(0), "moves no buffer");
            let (read, back) = ring.read(t, pattern(4096, 8), 300).await;
            assert_eq!(read, Ok(4096));
            assert!(back.iter().all(|&b| b == 0));
        });
        assert_eq!(r.ring.stats().stale, 0);
        r.finish();
    }

    /// The same data path on `LocalPool`, with `drive` spawned beside 64
    /// tasks, each with its own blocks.
    #[test]
    fn async_tasks_on_local_pool_round_trip_data() {
        malloc("AsyncPool", 4096);
        let r = rig("async-pool", "AsyncPool", OpenMode::ReadWrite, 16);
        let mut pool = LocalPool::new();
        let spawner = pool.spawner();
        spawner.spawn_local(r.ring.drive()).unwrap();
        let tasks: Vec<_> = (0..64u64)
            .map(|i| {
                let (ring, t) = (r.ring.clone(), r.target);
                spawner
                    .spawn_local_with_handle(async move {
                        for round in 0..4 {
                            write_read_check(&ring, t, i * 64 + round * 8, 4096, i * 4 + round)
                                .await;
                        }
                        i
                    })
                    .unwrap()
            })
            .collect();
        let done = pool.run_until(futures::future::join_all(tasks));
        assert_eq!(done, (0..64).collect::<Vec<_>>());
        assert_eq!(r.ring.stats().completed, 64 * 4 * 2);
        drop(pool); // and its drive future
        r.finish();
    }

    /// async-executor's `LocalExecutor` runs the same tasks.
    #[test]
    fn async_tasks_on_async_executor_round_trip_data() {
        malloc("AsyncExec", 4096);
        let r = rig("async-exec", "AsyncExec", OpenMode::ReadWrite, 16);
        let ex = async_executor::LocalExecutor::new();
        let driver = ex.spawn(r.ring.drive());
        let tasks: Vec<_> = (0..32u64)
            .map(|i| {
                let (ring, t) = (r.ring.clone(), r.target);
                ex.spawn(async move { write_read_check(&ring, t, i * 8, 4096, 100 + i).await })
            })
            .collect();
        futures::executor::block_on(ex.run(futures::future::join_all(tasks)));
        drop(driver);
        drop(ex);
        assert_eq!(r.ring.stats().completed, 64);
        r.finish();
    }

    /// NVMe/TCP: the bdev over the controller, and the namespace itself.
    #[test]
    fn async_round_trips_on_nvme_tcp_bdev_and_namespace() {
        use spdk_ring::nvme::{ControllerOptions, NvmeController, TransportId};
        let r = rig("async-nvme", "AsyncNvme0n1", OpenMode::ReadWrite, 16);
        let (ring, t) = (&r.ring, r.target);
        let trid = TransportId::tcp(
            "127.0.0.1",
            crate::target::target().port,
            crate::target::NQN,
        )
        .unwrap();
        let ctrlr = NvmeController::connect(&trid, &ControllerOptions::default()).unwrap();
        let ns = ring.register_nvme_namespace(&ctrlr, 1, Some(64)).unwrap();
        drop(ctrlr);
        ring.block_on(async {
            // Blocks 30000.. of namespace 1 belong to this test.
            write_read_check(ring, t, 30_000, 4096, 11).await;
            let (written, _) = ring.nvme_write(ns, pattern(8192, 12), 30_100).await;
            assert_eq!(written, Ok(8192));
            let (read, back) = ring.nvme_read(ns, zeroed(8192), 30_100).await;
            assert_eq!(read, Ok(8192));
            assert_eq!(back.to_vec(), pattern(8192, 12).to_vec());
            // What one path wrote, the other reads.
            let (read, back) = ring.read(t, zeroed(8192), 30_100).await;
            assert_eq!(
                (read, back.to_vec()),
                (Ok(8192), pattern(8192, 12).to_vec())
            );
            let (written, _) = ring
                .writev(ns, vec![pattern(512, 13), pattern(512, 14)], 30_200)
                .await;
            assert_eq!(written, Ok(1024));
            let (read, bufs) = ring.readv(t, vec![zeroed(1024)], 30_200).await;
            assert_eq!(read, Ok(1024));
            let expect: Vec<u8> = [pattern(512, 13).to_vec(), pattern(512, 14).to_vec()].concat();
            assert_eq!(bufs[0].to_vec(), expect);
            assert_eq!(ring.flush(ns, 30_000, 8).await, Ok(0));
            // A miscompare: EILSEQ with the controller's status (Media
            // Error / Compare Failure), as the ring reports it.
            let miscompare = ring
                .submit(opcode::NvmeCompare::new(ns, pattern(8192, 99), 30_100).build())
                .await;
            let failure = miscompare.result().unwrap_err();
            assert_eq!(failure.errno(), Errno(libc::EILSEQ));
            let status = failure.nvme_status().expect("the controller's status");
            assert_eq!((status.sct, status.sc), (2, 0x85));
            // Beyond the namespace: the ring's EINVAL.
            let (read, _) = ring.nvme_read(ns, zeroed(512), 1 << 40).await;
            assert_eq!(read.unwrap_err().errno(), Errno::EINVAL);
        });
        r.finish();
    }

    /// Blob data and metadata entries through the async layer.
    #[test]
    fn async_round_trips_on_blobs() {
        use spdk_ring::blob::{BlobOptions, Blobstore, BlobstoreOptions};
        malloc("AsyncBlob", 65536);
        fixture_with(config);
        let _thread = SpdkThread::attach("async-blob").unwrap();
        let store = Blobstore::init(
            "AsyncBlob",
            &BlobstoreOptions {
                cluster_size: Some(1 << 20),
                ..Default::default()
            },
        )
        .unwrap();
        let ring = AsyncRing::new(Ring::new(16).unwrap());
        let t = ring.register_blobstore(&store).unwrap();
        let blob = store
            .open_blob(
                store
                    .create_blob(&BlobOptions {
                        clusters: 1,
                        ..Default::default()
                    })
                    .unwrap(),
            )
            .unwrap();
        ring.block_on(async {
            // Metadata: grow to 3 clusters and persist.
            let resized = ring
                .submit(opcode::BlobResize::new(t, &blob, 3).build())
                .await;
            assert_eq!(resized.result(), Ok(0));
            let synced = ring
                .submit(opcode::BlobSyncMetadata::new(t, &blob).build())
                .await;
            assert_eq!(synced.result(), Ok(0));
            assert_eq!(blob.num_clusters(), 3);
            // Data, within a cluster and across the first boundary.
            let units = blob.num_io_units();
            for (offset, len) in [(0u64, 4096usize), (2040, 8192), (units - 1, 512)] {
                let (written, _) = ring
                    .blob_write(t, &blob, pattern(len, offset), offset)
                    .await;
                assert_eq!(written, Ok(len as u64), "write at {offset}");
                let (read, back) = ring.blob_read(t, &blob, zeroed(len), offset).await;
                assert_eq!(read, Ok(len as u64), "read at {offset}");
                assert_eq!(back.to_vec(), pattern(len, offset).to_vec(), "at {offset}");
            }
            let (beyond, _) = ring.blob_read(t, &blob, zeroed(512), units).await;
            assert_eq!(beyond.unwrap_err().errno(), Errno::EINVAL);
        });
        drop(blob);
        ring.into_inner(WAIT).ok().unwrap();
        drop(store);
    }
}

#[cfg(spdk)]
mod load {
    use super::support::*;

    /// 10 000 futures on an 8-entry ring: they wait for SQ room, none fails.
    #[test]
    fn async_ten_thousand_futures_on_a_small_ring_all_complete() {
        malloc("AsyncMany", 10_240);
        let r = rig("async-many", "AsyncMany", OpenMode::ReadWrite, 8);
        let mut pool = LocalPool::new();
        let spawner = pool.spawner();
        spawner.spawn_local(r.ring.drive()).unwrap();
        let tasks: Vec<_> = (0..10_000u64)
            .map(|i| {
                let (ring, t) = (r.ring.clone(), r.target);
                spawner
                    .spawn_local_with_handle(async move {
                        write_read_check(&ring, t, i, 512, i).await;
                    })
                    .unwrap()
            })
            .collect();
        let start = Instant::now();
        pool.run_until(futures::future::join_all(tasks));
        assert!(start.elapsed() < Duration::from_secs(120));
        let stats = r.ring.stats();
        assert_eq!(
            (stats.completed, stats.abandoned, stats.stale),
            (20_000, 0, 0)
        );
        // One slot per op made, pushed or queued for SQ room (each task
        // had its write made before any finished), all free again now.
        assert!(
            r.ring.op_slots() <= 10_016,
            "{} op slots",
            r.ring.op_slots()
        );
        assert_eq!(r.ring.pending(), 0);
        drop(pool);
        r.finish();
    }

    /// Entries linked by `submit_linked` run in order; a failed member
    /// cancels the rest; a single `submit` never links to a neighbour.
    #[test]
    fn async_linked_chains_complete_in_order_and_cancel_after_a_failure() {
        malloc("AsyncChain", 1024);
        let r = rig("async-chain", "AsyncChain", OpenMode::ReadWrite, 8);
        let (ring, t) = (&r.ring, r.target);
        ring.block_on(async {
            let [write, read] = ring
                .submit_linked([
                    opcode::Write::new(t, pattern(4096, 21), 8).build(),
                    opcode::Read::new(t, zeroed(4096), 8).build(),
                ])
                .await;
            assert_eq!((write.result(), read.result()), (Ok(4096), Ok(4096)));
            let mut read = read;
            assert_eq!(
                read.take_buf().unwrap().to_vec(),
                pattern(4096, 21).to_vec()
            );
            // A bad member (beyond the bdev) cancels what follows it.
            let [bad, after] = ring
                .submit_linked([
                    opcode::Read::new(t, zeroed(512), 1 << 30).build(),
                    opcode::Write::new(t, pattern(512, 22), 8).build(),
                ])
                .await;
            assert_eq!(bad.errno(), Some(Errno::EINVAL));
            assert_eq!(after.errno(), Some(Errno::ECANCELED));
            // A LINK flag on a single submit is cleared: a failure does
            // not cancel the next, independent, entry.
            let linked_bad = ring.submit(
                opcode::Read::new(t, zeroed(512), 1 << 30)
                    .build()
                    .flags(spdk_ring::EntryFlags::LINK),
            );
            let next = ring.read(t, zeroed(512), 8);
            let (bad, (next, _)) = futures::join!(linked_bad, next);
            assert_eq!(bad.errno(), Some(Errno::EINVAL));
            assert_eq!(next, Ok(512));
            // SKIP_SUCCESS is cleared too: a future resolves on its
            // completion, alone or in a chain (bounded, so a regression
            // fails instead of hanging).
            let skip = spdk_ring::EntryFlags::SKIP_SUCCESS;
            let alone = ring.submit(opcode::Nop::new().build().flags(skip));
            let done = ring.timeout(std::time::Duration::from_secs(5), alone).await;
            assert_eq!(
                done.expect("a SKIP_SUCCESS entry still completes").result(),
                Ok(0)
            );
            let chain = ring.submit_linked([
                opcode::Nop::new().build().flags(skip),
                opcode::Nop::new().build().flags(skip),
            ]);
            let [first, second] = ring
                .timeout(std::time::Duration::from_secs(5), chain)
                .await
                .expect("SKIP_SUCCESS members of a chain still complete");
            assert_eq!((first.result(), second.result()), (Ok(0), Ok(0)));
        });
        r.finish();
    }
}

#[cfg(spdk)]
mod cancel {
    use super::support::*;
    use futures::FutureExt;

    /// 1 000 reads in flight on a slow bdev, all dropped: each entry gets a
    /// cancel, each late completion is discarded with its buffer, no slot
    /// is reused before its completion came, later futures get only their
    /// own completions, and the ring is given back idle.
    #[test]
    fn async_dropping_a_thousand_in_flight_futures_loses_nothing() {
        delay_bdev("AsyncSlow", 300_000);
        malloc("AsyncAfterDrop", 2048);
        fixture_with(config);
        let _thread = SpdkThread::attach("async-drop").unwrap();
        let slow = BdevDesc::open("AsyncSlow", OpenMode::ReadOnly).unwrap();
        let fast = BdevDesc::open("AsyncAfterDrop", OpenMode::ReadWrite).unwrap();
        let ring = AsyncRing::new(Ring::new(1024).unwrap());
        let (ts, tf) = (
            ring.register_bdev(&slow).unwrap(),
            ring.register_bdev(&fast).unwrap(),
        );
        let mut reads: Vec<_> = (0..1000u64)
            .map(|i| ring.read(ts, zeroed(512), i).boxed_local())
            .collect();
        // Push them all, then let a few rounds hand them to SPDK.
        ring.block_on(async {
            for read in reads.iter_mut() {
                assert!(futures::poll!(read).is_pending());
            }
            ring.sleep(Duration::from_millis(20)).await;
        });
        assert_eq!(ring.with_ring(|r| r.in_flight()), 1000);
        assert_eq!(ring.pending(), 1000);
        let slots = ring.op_slots();
        let completed = ring.stats().completed;
        drop(reads);
        let stats = ring.stats();
        assert_eq!((stats.abandoned, stats.completed), (1000, completed));
        // The slots stay taken until the completions come.
        assert_eq!(ring.pending(), 1000);
        // Meanwhile new futures use other slots and get their own data.
        ring.block_on(async {
            let checks = (0..64u64).map(|i| write_read_check(&ring, tf, i * 8, 4096, 500 + i));
            futures::future::join_all(checks).await;
        });
        let deadline = Instant::now() + WAIT;
        while ring.stats().discarded < 1000 {
            assert!(Instant::now() < deadline, "{:?}", ring.stats());
            ring.block_on(ring.sleep(Duration::from_millis(10)));
        }
        let stats = ring.stats();
        assert_eq!(stats.discarded, 1000);
        assert_eq!(
            stats.discarded_buffers, 1000,
            "every buffer came back to the ring"
        );
        assert_eq!(stats.cancels_pushed, 1000);
        assert_eq!(stats.stale, 0);
        assert_eq!(ring.pending(), 0);
        assert_eq!(ring.op_slots(), slots.max(ring.op_slots()));
        // Reused slots (new generations) carry the right completions.
        ring.block_on(async {
            let checks =
                (0..64u64).map(|i| write_read_check(&ring, tf, i * 8 + 1024, 4096, 900 + i));
            futures::future::join_all(checks).await;
        });
        assert_eq!(ring.stats().stale, 0);
        let ring = ring.into_inner(WAIT).ok().unwrap();
        assert_eq!((ring.in_flight(), ring.sq_len(), ring.cq_len()), (0, 0, 0));
        drop(ring);
    }

    /// 1 500 tasks, each writing its own block and reading it back, both
    /// under `timeout`s drawn at random around the delay bdev's latency, so
    /// that about half the futures are dropped in flight at random moments.
    /// Afterwards every dropped entry's completion has been discarded, no
    /// completion went astray, and each block holds either nothing or
    /// exactly what its task wrote (a cancelled write may have landed).
    #[test]
    fn async_random_timeouts_drop_futures_without_crossing_completions() {
        use std::cell::RefCell;
        use std::rc::Rc;
        delay_bdev("AsyncRandom", 3_000);
        fixture_with(config);
        let _thread = SpdkThread::attach("async-random").unwrap();
        let desc = BdevDesc::open("AsyncRandom", OpenMode::ReadWrite).unwrap();
        let ring = AsyncRing::new(Ring::new(64).unwrap());
        let t = ring.register_bdev(&desc).unwrap();
        const TASKS: u64 = 1500;
        // What each task saw: (write Ok?, read back Ok and equal?).
        let seen = Rc::new(RefCell::new(vec![(false, false); TASKS as usize]));
        let mut pool = LocalPool::new();
        pool.spawner().spawn_local(ring.drive()).unwrap();
        let mut rng = 0x2545_F491_4F6C_DD1Du64;
        let mut draw = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            Duration::from_micros(1_000 + rng % 5_000)
        };
        let tasks: Vec<_> = (0..TASKS)
            .map(|i| {
                let (ring, seen) = (ring.clone(), seen.clone());
                let (write_within, read_within) = (draw(), draw());
                pool.spawner()
                    .spawn_local_with_handle(async move {
                        let write = ring.timeout(write_within, ring.write(t, pattern(512, i), i));
                        let Ok((written, _)) = write.await else {
                            return;
                        };
                        assert_eq!(written, Ok(512), "write {i}");
                        seen.borrow_mut()[i as usize].0 = true;
                        let read = ring.timeout(read_within, ring.read(t, zeroed(512), i));
                        if let Ok((read, back)) = read.await {
                            assert_eq!(read, Ok(512), "read {i}");
                            assert_eq!(back.to_vec(), pattern(512, i).to_vec(), "block {i}");
                            seen.borrow_mut()[i as usize].1 = true;
                        }
                    })
                    .unwrap()
            })
            .collect();
        pool.run_until(futures::future::join_all(tasks));
        drop(pool);
        let deadline = Instant::now() + WAIT;
        while ring.pending() > 0 {
            assert!(Instant::now() < deadline, "{:?}", ring.stats());
            ring.block_on(ring.sleep(Duration::from_millis(5)));
        }
        let stats = ring.stats();
        assert!(
            stats.abandoned > 300,
            "too few drops to mean much: {stats:?}"
        );
        assert_eq!(stats.discarded, stats.abandoned, "{stats:?}");
        assert_eq!(stats.stale, 0);
        let seen = seen.borrow();
        let written = seen.iter().filter(|s| s.0).count();
        assert!(
            written > 300 && written < TASKS as usize - 100,
            "{written} writes in time"
        );
        // Every block: zeros, or exactly its own pattern (never another's).
        ring.block_on(async {
            for i in 0..TASKS {
                let (read, back) = ring.read(t, zeroed(512), i).await;
                assert_eq!(read, Ok(512));
                let own = back.to_vec() == pattern(512, i).to_vec();
                if seen[i as usize].0 {
                    assert!(own, "block {i} lost a write that completed");
                } else {
                    assert!(
                        own || back.iter().all(|&b| b == 0),
                        "block {i} holds foreign data"
                    );
                }
            }
        });
        assert!(ring.into_inner(WAIT).is_ok());
    }

    /// A future dropped before its entry was pushed (SQ full) leaves nothing behind.
    #[test]
    fn async_dropping_a_future_waiting_for_sq_room_cancels_nothing() {
        delay_bdev("AsyncSlowFull", 50_000);
        let r = rig("async-full", "AsyncSlowFull", OpenMode::ReadOnly, 4);
        let (ring, t) = (&r.ring, r.target);
        let mut reads: Vec<_> = (0..12u64)
            .map(|i| ring.read(t, zeroed(512), i).boxed_local())
            .collect();
        ring.block_on(async {
            for read in reads.iter_mut() {
                assert!(futures::poll!(read).is_pending());
            }
        });
        // Every entry was taken when its future was made: 4 went into the
        // SQ, the other 8 wait in the handle's queue for room.
        assert_eq!(ring.pending(), 12);
        assert_eq!(ring.with_ring(|r| r.sq_len() + r.in_flight()), 4);
        let waiting = reads.split_off(4);
        drop(waiting);
        assert_eq!(ring.stats().abandoned, 0);
        assert_eq!(
            ring.pending(),
            12,
            "queued entries leave when their turn comes"
        );
        let done = ring.block_on(futures::future::join_all(reads));
        assert!(done.iter().all(|(read, _)| *read == Ok(512)));
        // The dropped ones were never pushed: nothing to cancel, no slot kept.
        assert_eq!(ring.pending(), 0);
        assert_eq!(
            (ring.stats().cancels_pushed, ring.stats().completed),
            (0, 4)
        );
        r.finish();
    }

    /// `into_inner` refuses while a future or another handle lives.
    #[test]
    fn async_into_inner_waits_for_every_future_and_handle() {
        malloc("AsyncInner", 1024);
        let r = rig("async-inner", "AsyncInner", OpenMode::ReadWrite, 4);
        let read = r.ring.read(r.target, zeroed(512), 0);
        let Err(ring) = r.ring.into_inner(WAIT) else {
            panic!("a future lives")
        };
        drop(read);
        let clone = ring.clone();
        let Err(ring) = ring.into_inner(WAIT) else {
            panic!("a clone lives")
        };
        drop(clone);
        let Ok(ring) = ring.into_inner(WAIT) else {
            panic!("nothing left")
        };
        // The sync API works on the ring given back.
        let mut ring = ring;
        ring.push(
            opcode::Read::new(r.target, zeroed(512), 0)
                .build()
                .user_data(7),
        )
        .unwrap();
        ring.submit_and_wait(1, WAIT).unwrap();
        let done = ring.next_completion().unwrap();
        assert_eq!((done.user_data(), done.result()), (7, Ok(512)));
    }
}

#[cfg(spdk)]
mod timers {
    use super::support::*;

    #[test]
    fn async_timeout_fires_on_a_delay_bdev_and_not_on_a_fast_one() {
        delay_bdev("AsyncTimed", 2_000_000);
        malloc("AsyncQuick", 1024);
        fixture_with(config);
        let _thread = SpdkThread::attach("async-timeout").unwrap();
        let slow = BdevDesc::open("AsyncTimed", OpenMode::ReadOnly).unwrap();
        let fast = BdevDesc::open("AsyncQuick", OpenMode::ReadOnly).unwrap();
        let ring = AsyncRing::new(Ring::new(16).unwrap());
        let (ts, tf) = (
            ring.register_bdev(&slow).unwrap(),
            ring.register_bdev(&fast).unwrap(),
        );
        ring.block_on(async {
            // LinkTimeout: the ring aborts the slow read after 50 ms.
            let start = Instant::now();
            let timed = ring
                .submit_with_timeout(
                    opcode::Read::new(ts, zeroed(512), 0).build(),
                    Duration::from_millis(50),
                )
                .await;
            assert!(timed.timed_out);
            assert_eq!(timed.completion.errno(), Some(Errno::ECANCELED));
            assert!(
                start.elapsed() < Duration::from_millis(1500),
                "{:?}",
                start.elapsed()
            );
            // On the fast bdev it does not fire, and the data comes back.
            let mut timed = ring
                .submit_with_timeout(
                    opcode::Read::new(tf, zeroed(512), 0).build(),
                    Duration::from_secs(5),
                )
                .await;
            assert!(!timed.timed_out);
            assert_eq!(timed.completion.result(), Ok(512));
            assert!(timed.completion.take_buf().is_some());
            // The combinator over any future: it drops the slow read.
            let start = Instant::now();
            let late = ring
                .timeout(Duration::from_millis(50), ring.read(ts, zeroed(512), 1))
                .await;
            assert_eq!(late.err(), Some(spdk_ring::async_ring::Elapsed));
            assert!(start.elapsed() >= Duration::from_millis(50));
            assert!(
                start.elapsed() < Duration::from_millis(1500),
                "{:?}",
                start.elapsed()
            );
            let quick = ring
                .timeout(Duration::from_secs(5), ring.read(tf, zeroed(512), 1))
                .await;
            assert_eq!(quick.map(|(read, _)| read), Ok(Ok(512)));
            // sleep waits at least its time.
            let start = Instant::now();
            ring.sleep(Duration::from_millis(30)).await;
            assert!(start.elapsed() >= Duration::from_millis(30));
        });
        // The read dropped by the first `timeout`, and the timer of the
        // second, dropped when the read won.
        assert_eq!(ring.stats().abandoned, 2);
        let ring = ring.into_inner(WAIT).ok().unwrap();
        assert_eq!(ring.in_flight(), 0);
    }
}

#[cfg(spdk)]
mod errors {
    use super::support::*;

    /// Bad input completes with exactly the ring's errnos, buffer returned.
    #[test]
    fn async_bad_input_reports_the_rings_errnos() {
        malloc("AsyncBad", 1024);
        let r = rig("async-bad", "AsyncBad", OpenMode::ReadOnly, 8);
        let (ring, t) = (&r.ring, r.target);
        let other = AsyncRing::new(Ring::new(4).unwrap());
        let foreign = other.register_bdev(&r.desc).unwrap();
        ring.block_on(async {
            let (write, buf) = ring.write(t, pattern(512, 1), 0).await;
            assert_eq!(
                write.unwrap_err().errno(),
                Errno::EBADF,
                "read-only descriptor"
            );
            assert_eq!(buf.len(), 512, "the buffer comes back on failure");
            let (read, _) = ring.read(foreign, zeroed(512), 0).await;
            assert_eq!(
                read.unwrap_err().errno(),
                Errno::EBADF,
                "another ring's target"
            );
            let (read, _) = ring.read(t, zeroed(100), 0).await;
            assert_eq!(read.unwrap_err().errno(), Errno::EINVAL, "not whole blocks");
            let (read, _) = ring.read(t, zeroed(1024), 1023).await;
            assert_eq!(read.unwrap_err().errno(), Errno::EINVAL, "beyond the bdev");
            let (read, bufs) = ring.readv(t, Vec::new(), 0).await;
            assert_eq!((read.unwrap_err().errno(), bufs.len()), (Errno::EINVAL, 0));
            let cancel = ring.submit(opcode::Cancel::new(12345).build()).await;
            assert_eq!(cancel.errno(), Some(Errno::ENOENT));
        });
        ring.unregister(t).unwrap();
        ring.block_on(async {
            let (read, _) = ring.read(t, zeroed(512), 0).await;
            assert_eq!(read.unwrap_err().errno(), Errno::EBADF, "unregistered");
        });
        drop(other);
        r.finish();
    }
}

#[cfg(spdk)]
mod spawn {
    use super::support::*;

    /// Tasks spawned on the handle's own executor write and read back
    /// their blocks under `block_on`, their outputs come through their
    /// `JoinHandle`s, and a wake from another thread (a oneshot sent by a
    /// std thread while `block_on` runs) reaches its task.
    #[test]
    fn async_spawned_tasks_round_trip_data_and_take_wakes_from_other_threads() {
        malloc("AsyncSpawn", 4096);
        let r = rig("async-spawn", "AsyncSpawn", OpenMode::ReadWrite, 16);
        let handles: Vec<_> = (0..64u64)
            .map(|i| {
                let (ring, t) = (r.ring.clone(), r.target);
                r.ring.spawn(async move {
                    write_read_check(&ring, t, i * 8, 4096, i).await;
                    i
                })
            })
            .collect();
        assert_eq!(r.ring.tasks(), 64, "spawned tasks run only under block_on");
        let total: u64 = r.ring.block_on(async {
            let mut sum = 0;
            for handle in handles {
                sum += handle.await;
            }
            sum
        });
        assert_eq!(total, (0..64).sum::<u64>());
        assert_eq!(r.ring.tasks(), 0);

        let (tx, rx) = futures::channel::oneshot::channel::<u64>();
        let (ring, t) = (r.ring.clone(), r.target);
        let remote = r.ring.spawn(async move {
            let lba = rx.await.expect("sent");
            let (read, back) = ring.read(t, zeroed(4096), lba).await;
            assert_eq!(read, Ok(4096));
            back[..] == pattern(4096, 5)[..]
        });
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            tx.send(5 * 8).unwrap();
        });
        assert!(
            r.ring.block_on(remote),
            "the task woken from another thread read task 5's block"
        );
        sender.join().unwrap();
        assert_eq!(r.ring.stats().completed, 64 * 2 + 1);
        r.finish();
    }

    /// A future's entry goes into the ring when the future is made; tasks
    /// dropped with `drop_tasks` cancel their entries in flight, whose
    /// completions the layer then discards; the ring comes back clean.
    #[test]
    fn async_dropped_tasks_cancel_their_entries() {
        delay_bdev("AsyncSpawnSlow", 100_000);
        let r = rig("async-spawn-drop", "AsyncSpawnSlow", OpenMode::ReadOnly, 8);
        let read = r.ring.read(r.target, zeroed(512), 0);
        assert_eq!(r.ring.with_ring(|ring| ring.sq_len() + ring.in_flight()), 1);
        drop(read);
        assert_eq!(r.ring.stats().abandoned, 1);
        for i in 0..6 {
            let (ring, t) = (r.ring.clone(), r.target);
            // Detached: the tasks run on without their handles.
            drop(
                r.ring
                    .spawn(async move { ring.read(t, zeroed(512), i).await }),
            );
        }
        r.ring.block_on(r.ring.sleep(Duration::from_millis(10)));
        assert_eq!((r.ring.tasks(), r.ring.pending()), (6, 7));
        r.ring.drop_tasks();
        assert_eq!(r.ring.tasks(), 0);
        assert_eq!(r.ring.stats().abandoned, 7);
        r.ring.block_on(r.ring.sleep(Duration::from_millis(300)));
        let stats = r.ring.stats();
        assert_eq!((stats.discarded, stats.discarded_buffers), (7, 7));
        assert_eq!(r.ring.pending(), 0);
        r.finish();
    }

    /// Two handles on one thread, one executor: a task of handle A awaits
    /// ops of handle B, whose ring is driven by B's `drive` spawned on A.
    /// B sees a foreign waker (A's task), takes the general `Waker` path,
    /// and its completions wake A's task; the data round trips through
    /// both rings.
    #[test]
    fn async_a_task_awaits_ops_of_another_handle_driven_on_its_executor() {
        malloc("AsyncTwoHandles", 1024);
        let a = rig(
            "async-two-handles",
            "AsyncTwoHandles",
            OpenMode::ReadWrite,
            8,
        );
        let desc_b = BdevDesc::open("AsyncTwoHandles", OpenMode::ReadWrite).unwrap();
        let b = AsyncRing::new(Ring::new(8).unwrap());
        let t_b = b.register_bdev(&desc_b).unwrap();
        drop(a.ring.spawn(b.drive()));
        let (ring_a, t_a, ring_b) = (a.ring.clone(), a.target, b.clone());
        let task = a.ring.spawn(async move {
            let mut matches = 0;
            for i in 0..16u64 {
                // Written through B, read back through A and through B.
                let (written, _) = ring_b.write(t_b, pattern(512, i), i).await;
                assert_eq!(written, Ok(512));
                let (read, back) = ring_a.read(t_a, zeroed(512), i).await;
                assert_eq!(read, Ok(512));
                let (again, back_b) = ring_b.read(t_b, zeroed(512), i).await;
                assert_eq!(again, Ok(512));
                matches += usize::from(back[..] == pattern(512, i)[..] && back_b[..] == back[..]);
            }
            matches
        });
        let bounded = a.ring.timeout(Duration::from_secs(5), task);
        assert_eq!(a.ring.block_on(bounded), Ok(16));
        assert_eq!((b.stats().completed, a.ring.stats().completed), (32, 16));
        // The drive task holds a handle of B: dropped, B comes back clean.
        a.ring.drop_tasks();
        let ring_b = b.into_inner(WAIT).expect("no future or handle of B left");
        assert_eq!(
            (ring_b.in_flight(), ring_b.sq_len(), ring_b.cq_len()),
            (0, 0, 0)
        );
        drop(ring_b);
        drop(desc_b);
        a.finish();
    }

    /// An op future made in one task and awaited later (after rounds in
    /// which its completion came), or awaited by another task, still
    /// resolves with its data: the "nothing can have come yet" shortcut of
    /// a first poll holds only in the round and the task that made it.
    #[test]
    fn async_op_futures_awaited_later_or_elsewhere_resolve() {
        malloc("AsyncLater", 1024);
        let r = rig("async-later", "AsyncLater", OpenMode::ReadWrite, 8);
        let (ring, t) = (r.ring.clone(), r.target);
        let written = r.ring.block_on(ring.write(t, pattern(512, 9), 3));
        assert_eq!(written.0, Ok(512));
        let later = r.ring.spawn(async move {
            let read = ring.read(t, zeroed(512), 3);
            // Rounds pass (and the read completes) before it is polled.
            ring.sleep(Duration::from_millis(5)).await;
            let (n, buf) = read.await;
            (n, buf[..] == pattern(512, 9)[..])
        });
        // Bounded: a read that never resolved would hang here otherwise.
        let bounded = r.ring.timeout(Duration::from_secs(5), later);
        assert_eq!(r.ring.block_on(bounded), Ok((Ok(512), true)));
        let (ring, t) = (r.ring.clone(), r.target);
        // Made in a task, handed out, awaited by block_on's own future.
        #[allow(clippy::async_yields_async)] // the point: the future is handed out unawaited
        let maker = r.ring.spawn(async move { ring.read(t, zeroed(512), 3) });
        let bounded = r
            .ring
            .timeout(Duration::from_secs(5), async { maker.await.await });
        let (n, buf) = r.ring.block_on(bounded).expect("resolved in time");
        assert_eq!(n, Ok(512));
        assert!(buf[..] == pattern(512, 9)[..]);
        r.finish();
    }
}
