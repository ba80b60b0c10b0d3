//! ENOMEM storms: a bdev_io pool far smaller than the queue depth. SPDK's
//! ENOMEM must never reach the caller, and nothing may be lost, duplicated
//! or reordered. Its own process: the pool size is a start-up option.

#[cfg(spdk)]
#[path = "common/mod.rs"]
mod common;

#[path = "common/skipped.rs"]
#[macro_use]
mod skipped;
report_skipped_without_spdk!();

#[cfg(spdk)]
mod storms {
    use super::common::*;
    use spdk_ring::{opcode, BdevDesc, DmaBuf, EntryFlags, OpenMode, Ring, SpdkThread};
    use std::time::Instant;

    /// 64 bdev_ios for the whole process, 4 cached per thread.
    pub fn tiny_pool() -> spdk_ring::JsonConfig {
        base_config()
            .bdev_option("bdev_io_pool_size", 64)
            .bdev_option("bdev_io_cache_size", 4)
    }

    /// One storm at a time: a thread's first bdev channel takes its cache
    /// from the shared pool, and SPDK refuses the channel (ENOMEM) while
    /// another test's storm holds the whole pool.
    static ONE_STORM_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

    pub fn exclusive() -> std::sync::MutexGuard<'static, ()> {
        ONE_STORM_AT_A_TIME
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    #[test]
    fn deep_queues_on_a_tiny_pool_lose_nothing() {
        let _storm = exclusive();
        fixture_with(tiny_pool);
        let _thread = SpdkThread::attach("enomem").unwrap();
        let desc = BdevDesc::open("Null0", OpenMode::ReadOnly).unwrap();
        let mut ring = Ring::new(512).unwrap();
        let t = ring.register_bdev(&desc).unwrap();
        let total = 50_000u64;
        let mut bufs: Vec<DmaBuf> = (0..512).map(|_| DmaBuf::alloc(4096, 0).unwrap()).collect();
        let mut seen = vec![false; total as usize];
        let (mut issued, mut done) = (0u64, 0u64);
        let start = Instant::now();
        while done < total {
            while issued < total {
                let Some(buf) = bufs.pop() else { break };
                ring.push(
                    opcode::Read::new(t, buf, issued % NULL_BLOCKS)
                        .build()
                        .user_data(issued),
                )
                .unwrap();
                issued += 1;
            }
            ring.poll();
            for mut c in ring.completions() {
                assert_eq!(c.result(), Ok(4096), "entry {}", c.user_data());
                assert!(
                    !std::mem::replace(&mut seen[c.user_data() as usize], true),
                    "duplicate"
                );
                bufs.push(c.take_buf().unwrap());
                done += 1;
            }
            assert!(start.elapsed().as_secs() < 60, "stalled at {done}/{total}");
        }
        assert!(seen.iter().all(|&s| s));
        assert!(
            ring.stats().enomem_retries > 100,
            "only {} ENOMEM answers: no storm",
            ring.stats().enomem_retries
        );
    }

    #[test]
    fn writes_to_one_block_under_enomem_land_in_submission_order() {
        let _storm = exclusive();
        fixture_with(tiny_pool);
        let _thread = SpdkThread::attach("enomem-order").unwrap();
        let desc = BdevDesc::open("Malloc0", OpenMode::ReadWrite).unwrap();
        let mut ring = Ring::new(256).unwrap();
        let t = ring.register_bdev(&desc).unwrap();
        // 200 writes of distinct fillers to block 100, then a read behind a
        // DRAIN: it must see the last write.
        for i in 0..200u64 {
            let mut buf = DmaBuf::alloc(512, 0).unwrap();
            buf.fill(i as u8);
            ring.push(opcode::Write::new(t, buf, 100).build().user_data(i))
                .unwrap();
        }
        let read = opcode::Read::new(t, DmaBuf::alloc(512, 0).unwrap(), 100).build();
        ring.push(read.user_data(1000).flags(EntryFlags::DRAIN))
            .unwrap();
        let mut got = Vec::new();
        let start = Instant::now();
        while got.len() < 201 {
            ring.poll();
            got.extend(ring.completions());
            assert!(start.elapsed().as_secs() < 60);
        }
        assert!(got.iter().all(|c| c.is_ok()));
        assert!(ring.stats().enomem_retries > 0, "the pool never ran out");
        assert_eq!(
            ring.stats().lane_ios,
            200,
            "the writes ran (and waited) on the lane"
        );
        let mut last = got.pop().unwrap();
        assert_eq!(last.user_data(), 1000);
        assert!(last.take_buf().unwrap().iter().all(|&b| b == 199));
    }

    #[test]
    fn chains_survive_enomem_in_order() {
        let _storm = exclusive();
        fixture_with(tiny_pool);
        let _thread = SpdkThread::attach("enomem-chains").unwrap();
        let desc = BdevDesc::open("Null0", OpenMode::ReadOnly).unwrap();
        let mut ring = Ring::new(512).unwrap();
        let t = ring.register_bdev(&desc).unwrap();
        // 128 chains of 4 reads each, pushed at once: 128 heads compete for
        // 64 bdev_ios.
        for chain in 0..128u64 {
            for link in 0..4u64 {
                let flags = if link < 3 {
                    EntryFlags::LINK
                } else {
                    EntryFlags::empty()
                };
                let entry = opcode::Read::new(t, DmaBuf::alloc(4096, 0).unwrap(), chain).build();
                ring.push(entry.user_data(chain * 4 + link).flags(flags))
                    .unwrap();
            }
        }
        let mut order = Vec::new();
        let start = Instant::now();
        while order.len() < 512 {
            ring.poll();
            for c in ring.completions() {
                assert!(c.is_ok(), "{c:?}");
                order.push(c.user_data());
            }
            assert!(start.elapsed().as_secs() < 60);
        }
        assert!(ring.stats().enomem_retries > 0, "the pool never ran out");
        for chain in 0..128u64 {
            let positions: Vec<usize> = (0..4)
                .map(|l| order.iter().position(|&u| u == chain * 4 + l).unwrap())
                .collect();
            assert!(
                positions.windows(2).all(|w| w[0] < w[1]),
                "chain {chain} out of order"
            );
        }
    }
}

/// The same storm through the async layer: 20 000 reads from 512 tasks
/// on a 512-entry ring over 64 bdev_ios; every one completes once, Ok.
#[cfg(all(spdk, feature = "futures"))]
mod async_storms {
    use super::common::*;
    use futures::executor::LocalPool;
    use futures::task::LocalSpawnExt;
    use spdk_ring::{AsyncRing, BdevDesc, DmaBuf, OpenMode, Ring, SpdkThread};
    use std::cell::RefCell;
    use std::rc::Rc;

    #[test]
    fn async_tasks_on_a_tiny_pool_lose_nothing() {
        let _storm = super::storms::exclusive();
        fixture_with(super::storms::tiny_pool);
        let _thread = SpdkThread::attach("enomem-async").unwrap();
        let desc = BdevDesc::open("Null0", OpenMode::ReadOnly).unwrap();
        let ring = AsyncRing::new(Ring::new(512).unwrap());
        let t = ring.register_bdev(&desc).unwrap();
        let (tasks, per_task) = (512u64, 40u64);
        let seen = Rc::new(RefCell::new(vec![0u8; (tasks * per_task) as usize]));
        let mut pool = LocalPool::new();
        pool.spawner().spawn_local(ring.drive()).unwrap();
        let handles: Vec<_> = (0..tasks)
            .map(|task| {
                let (ring, seen) = (ring.clone(), seen.clone());
                pool.spawner()
                    .spawn_local_with_handle(async move {
                        let mut buf = DmaBuf::alloc(4096, 0).unwrap();
                        for k in 0..per_task {
                            let io = task * per_task + k;
                            let (read, back) = ring.read(t, buf, io % NULL_BLOCKS).await;
                            assert_eq!(read, Ok(4096), "read {io}");
                            seen.borrow_mut()[io as usize] += 1;
                            buf = back;
                        }
                    })
                    .unwrap()
            })
            .collect();
        pool.run_until(futures::future::join_all(handles));
        assert!(
            seen.borrow().iter().all(|&n| n == 1),
            "each read completed once"
        );
        let retries = ring.with_ring(|r| r.stats().enomem_retries);
        assert!(retries > 100, "only {retries} ENOMEM answers: no storm");
        assert_eq!(ring.stats().completed, tasks * per_task);
        drop(pool);
        assert!(ring.into_inner(WAIT).is_ok());
    }
}
