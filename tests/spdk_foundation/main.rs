//! SPDK integration tests of the foundation: environment, embedded runtime,
//! threads, DMA buffers, bdevs, descriptors and channels.
//!
//! One process, one SPDK environment: every test shares the runtime that
//! `common::fixture()` starts on its own OS thread, and attaches its own
//! SPDK thread to the OS thread libtest runs it on.

#[cfg(spdk)]
#[path = "../common/mod.rs"]
mod common;

#[path = "../common/skipped.rs"]
#[macro_use]
mod skipped;
report_skipped_without_spdk!();

#[cfg(spdk)]
mod env_and_runtime {
    use super::common::*;
    use spdk_ring::{Error, JsonConfig, SpdkApp, SpdkEnv, SpdkRuntime};

    #[test]
    fn env_initialises_in_no_huge_mode() {
        fixture();
        assert!(spdk_ring::env_is_initialized());
        // This machine has no hugepages reserved, so a working DMA
        // allocation shows the no-huge memory is in use.
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
        let huge_total = meminfo
            .lines()
            .find(|l| l.starts_with("HugePages_Total:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or("0");
        if huge_total == "0" {
            let buf = spdk_ring::DmaBuf::alloc_zeroed(1 << 20, 0).unwrap();
            assert_eq!(buf.len(), 1 << 20);
        }
        let mut parts = spdk_ring::SPDK_VERSION
            .split(['.', '-'])
            .map(|p| p.parse::<u32>().unwrap_or(0));
        let (major, minor, patch) = (
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap(),
        );
        assert!(major >= 23, "{}", spdk_ring::SPDK_VERSION);
        assert_eq!(
            spdk_ring::SPDK_VERSION_NUMBER,
            major * 10_000 + minor * 100 + patch
        );
    }

    #[test]
    fn second_initialisation_is_rejected_cleanly() {
        fixture();
        let env = SpdkEnv::builder().no_huge(true).mem_size_mb(64).build();
        assert_eq!(env.unwrap_err(), Error::EnvAlreadyInitialized);
        let rt = SpdkRuntime::builder().no_huge(true).mem_size_mb(64).build();
        assert_eq!(rt.err(), Some(Error::EnvAlreadyInitialized));
        let app = SpdkApp::builder()
            .no_huge(true)
            .mem_size_mb(64)
            .run(|_| unreachable!());
        assert_eq!(app, Err(Error::EnvAlreadyInitialized));
    }

    #[test]
    fn bad_options_fail_before_touching_spdk() {
        let err = SpdkRuntime::builder().no_huge(true).build().err().unwrap();
        assert!(
            matches!(err, Error::InvalidArgument(ref m) if m.contains("mem_size_mb")),
            "{err}"
        );
        let err = SpdkRuntime::builder()
            .no_huge(true)
            .mem_size_mb(64)
            .json_config_file("/nonexistent/config.json")
            .build()
            .err()
            .unwrap();
        assert!(
            matches!(err, Error::ConfigFile { ref path, .. } if path == "/nonexistent/config.json")
        );
    }

    #[test]
    fn runtime_config_creates_and_deletes_bdevs() {
        let fx = fixture();
        let _t = spdk_ring::SpdkThread::attach("config").unwrap();
        let json = JsonConfig::new()
            .malloc_bdev("Created1", 128, 4096)
            .to_json();
        fx.load_config(json).recv().unwrap().unwrap();
        let bdev = spdk_ring::Bdev::lookup("Created1").unwrap();
        assert_eq!((bdev.block_size(), bdev.num_blocks()), (4096, 128));
        fx.bdev_method("bdev_malloc_delete", "{\"name\": \"Created1\"}".into())
            .recv()
            .unwrap()
            .unwrap();
        assert_eq!(
            spdk_ring::Bdev::lookup("Created1").unwrap_err(),
            Error::BdevNotFound("Created1".into())
        );
    }

    #[test]
    fn failing_config_method_reports_the_errno() {
        let fx = fixture();
        // Malloc0 already exists: SPDK refuses a second bdev of that name.
        let json = JsonConfig::new().malloc_bdev("Malloc0", 8, 512).to_json();
        let err = fx.load_config(json).recv().unwrap().unwrap_err();
        assert!(matches!(err, Error::Subsystem { .. }), "{err}");
        assert!(err.errno().is_some());
    }
}

#[cfg(spdk)]
mod bdevs {
    use super::common::*;
    use spdk_ring::{Bdev, BdevDesc, DmaBuf, Error, IoTypes, OpenMode, SpdkThread};

    #[test]
    fn json_config_creates_malloc_and_null_bdevs_with_their_geometry() {
        fixture();
        let _t = SpdkThread::attach("geometry").unwrap();
        let malloc = Bdev::lookup("Malloc0").unwrap();
        assert_eq!(malloc.name(), "Malloc0");
        assert_eq!(malloc.product_name(), "Malloc disk");
        assert_eq!(malloc.block_size(), MALLOC_BLOCK_SIZE);
        assert_eq!(malloc.num_blocks(), MALLOC_BLOCKS);
        assert_eq!(
            malloc.size_bytes(),
            MALLOC_BLOCKS * u64::from(MALLOC_BLOCK_SIZE)
        );
        assert!(malloc
            .supports(IoTypes::READ | IoTypes::WRITE | IoTypes::UNMAP | IoTypes::WRITE_ZEROES));
        assert!(!malloc.supports(IoTypes::NVME_IO));

        let null = Bdev::lookup("Null0").unwrap();
        assert_eq!(null.product_name(), "Null disk");
        assert_eq!(
            (null.block_size(), null.num_blocks()),
            (NULL_BLOCK_SIZE, NULL_BLOCKS)
        );
        assert!(null.supports(IoTypes::READ | IoTypes::WRITE));
    }

    #[test]
    fn lookup_of_missing_bdev_names_it() {
        fixture();
        let _t = SpdkThread::attach("lookup-missing").unwrap();
        assert_eq!(
            Bdev::lookup("NoSuchBdev").unwrap_err(),
            Error::BdevNotFound("NoSuchBdev".into())
        );
        let err = BdevDesc::open("NoSuchBdev", OpenMode::ReadOnly).unwrap_err();
        assert_eq!(err, Error::BdevNotFound("NoSuchBdev".into()));
    }

    #[test]
    fn lookup_and_open_need_an_spdk_thread() {
        fixture();
        assert_eq!(Bdev::lookup("Malloc0").unwrap_err(), Error::NoThread);
        assert_eq!(
            BdevDesc::open("Malloc0", OpenMode::ReadOnly).unwrap_err(),
            Error::NoThread
        );
    }

    #[test]
    fn read_write_descriptor_round_trips_data() {
        fixture();
        let thread = SpdkThread::attach("rw-roundtrip").unwrap();
        let desc = Bdev::lookup("Malloc0")
            .unwrap()
            .open(OpenMode::ReadWrite)
            .unwrap();
        assert_eq!(desc.mode(), OpenMode::ReadWrite);
        assert_eq!(desc.bdev().num_blocks(), MALLOC_BLOCKS);
        let ch = desc.io_channel().unwrap();
        let len = 8 * MALLOC_BLOCK_SIZE as usize;
        let mut out = DmaBuf::alloc(len, 0).unwrap();
        for (i, b) in out.iter_mut().enumerate() {
            *b = (i * 7 + 3) as u8;
        }
        // Blocks 4096.. are this test's own region of Malloc0.
        assert_eq!(raw_io(&thread, &ch, true, &mut out, 4096, 8), Ok(true));
        let mut back = DmaBuf::alloc_zeroed(len, 0).unwrap();
        assert_eq!(raw_io(&thread, &ch, false, &mut back, 4096, 8), Ok(true));
        assert_eq!(back.as_slice(), out.as_slice());
    }

    #[test]
    fn read_only_descriptor_reads_but_spdk_refuses_its_writes() {
        fixture();
        let thread = SpdkThread::attach("ro").unwrap();
        let ro = BdevDesc::open("Malloc0", OpenMode::ReadOnly).unwrap();
        let also_ro = BdevDesc::open("Malloc0", OpenMode::ReadOnly).unwrap();
        assert_eq!(ro.mode(), OpenMode::ReadOnly);
        let ch = ro.io_channel().unwrap();
        let mut buf = DmaBuf::alloc(MALLOC_BLOCK_SIZE as usize, 0).unwrap();
        assert_eq!(raw_io(&thread, &ch, false, &mut buf, 0, 1), Ok(true));
        assert_eq!(
            raw_io(&thread, &ch, true, &mut buf, 0, 1),
            Err(-libc::EBADF)
        );
        drop(also_ro);
    }

    #[test]
    fn descriptor_receives_remove_when_its_bdev_is_deleted_and_drops_cleanly() {
        let fx = fixture();
        fx.load_config(
            spdk_ring::JsonConfig::new()
                .malloc_bdev("Doomed", 64, 512)
                .to_json(),
        )
        .recv()
        .unwrap()
        .unwrap();
        let thread = SpdkThread::attach("remove").unwrap();
        let desc = BdevDesc::open("Doomed", OpenMode::ReadWrite).unwrap();
        let ch = desc.io_channel().unwrap();
        assert!(!desc.is_removed());

        let deleted = fx.bdev_method("bdev_malloc_delete", "{\"name\": \"Doomed\"}".into());
        assert!(
            thread.poll_until(WAIT, || desc.is_removed()),
            "no REMOVE event"
        );
        // Removal waits for our descriptor: it must not finish while it is open.
        assert!(deleted.try_recv().is_err());
        drop(ch);
        drop(desc);
        let result = loop {
            thread.poll();
            if let Ok(r) = deleted.try_recv() {
                break r;
            }
        };
        result.unwrap();
        assert_eq!(
            Bdev::lookup("Doomed").unwrap_err(),
            Error::BdevNotFound("Doomed".into())
        );
    }
}

#[cfg(spdk)]
mod dma {
    use super::common::*;
    use spdk_ring::{DmaBuf, Error};

    #[test]
    fn buffers_are_aligned_as_asked() {
        fixture();
        for align in [0usize, 64, 512, 4096, 1 << 16] {
            let buf = DmaBuf::alloc(1000, align).unwrap();
            let want = if align == 0 {
                spdk_ring::DEFAULT_DMA_ALIGN
            } else {
                align
            };
            assert_eq!(buf.as_ptr() as usize % want, 0, "align {align}");
            assert_eq!(buf.len(), 1000);
        }
    }

    #[test]
    fn zeroed_buffers_are_zero_even_over_reused_memory() {
        fixture();
        for _ in 0..4 {
            let mut dirty = DmaBuf::alloc(1 << 16, 4096).unwrap();
            dirty.fill(0xA5);
        }
        let clean = DmaBuf::alloc_zeroed(1 << 16, 4096).unwrap();
        assert!(clean.iter().all(|&b| b == 0));
        let copy = DmaBuf::from_slice(b"spdk-ring").unwrap();
        assert_eq!(&copy[..], b"spdk-ring");
    }

    #[test]
    fn invalid_sizes_and_alignments_are_errors() {
        fixture();
        assert!(matches!(
            DmaBuf::alloc(0, 0),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            DmaBuf::alloc(64, 3),
            Err(Error::InvalidArgument(_))
        ));
        // Far more than the 1 GiB environment has.
        assert_eq!(
            DmaBuf::alloc(64 << 30, 0).unwrap_err(),
            Error::Errno(spdk_ring::Errno::ENOMEM)
        );
    }

    #[test]
    fn buffers_move_to_other_threads_and_free_there() {
        fixture();
        let mut buf = DmaBuf::alloc(4096, 0).unwrap();
        buf.fill(7);
        let sum = std::thread::spawn(move || buf.iter().map(|&b| u64::from(b)).sum::<u64>())
            .join()
            .unwrap();
        assert_eq!(sum, 7 * 4096);
    }
}

#[cfg(spdk)]
mod threads {
    use super::common::*;
    use spdk_ring::{BdevDesc, Errno, Error, OpenMode, SpdkThread};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    #[test]
    fn spawned_thread_has_its_own_spdk_thread_and_exits_cleanly() {
        fixture();
        let worker = SpdkThread::spawn("worker-io", |thread| {
            let current = SpdkThread::current().expect("attached");
            assert_eq!(current.id(), thread.id());
            let desc = BdevDesc::open("Null0", OpenMode::ReadOnly).unwrap();
            let ch = desc.io_channel().unwrap();
            drop(ch);
            (thread.name().to_string(), thread.id())
        })
        .unwrap();
        let (name, id) = worker.join().unwrap();
        assert_eq!(name, "worker-io");
        let here = SpdkThread::attach("spawn-parent").unwrap();
        assert_ne!(here.id(), id);
    }

    #[test]
    fn panics_in_spawned_threads_reach_the_joiner() {
        fixture();
        let handle = SpdkThread::spawn("panicker", |_| panic!("boom")).unwrap();
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handle.join()));
        assert!(caught.is_err());
    }

    #[test]
    fn last_poll_ticks_is_the_time_of_the_thread_s_last_poll() {
        use spdk_ring::clock;
        fixture();
        assert_eq!(clock::last_poll_ticks(), None, "no SPDK thread here yet");
        let thread = SpdkThread::attach("clocked").unwrap();
        let before = clock::ticks();
        thread.poll();
        let after = clock::ticks();
        let polled = clock::last_poll_ticks().unwrap();
        assert!(
            before <= polled && polled <= after,
            "{before} <= {polled} <= {after}"
        );
        // Not the counter: unchanged until the next poll.
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert_eq!(clock::last_poll_ticks(), Some(polled));
        thread.poll();
        assert!(clock::last_poll_ticks().unwrap() > polled);
        drop(thread);
        assert_eq!(clock::last_poll_ticks(), None);
    }

    #[test]
    fn one_spdk_thread_per_os_thread() {
        fixture();
        assert!(SpdkThread::current().is_none());
        let first = SpdkThread::attach("first").unwrap();
        assert_eq!(
            SpdkThread::attach("second").unwrap_err(),
            Error::ThreadAlreadyAttached("first".into())
        );
        drop(first);
        assert!(SpdkThread::current().is_none());
        let again = SpdkThread::attach("again").unwrap();
        assert_eq!(again.name(), "again");
    }

    #[test]
    fn thread_handle_delivers_messages_and_refuses_after_exit() {
        fixture();
        let (tx, rx) = std::sync::mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stop_seen = stop.clone();
        let worker = SpdkThread::spawn("mailbox", move |thread| {
            tx.send(thread.handle()).unwrap();
            thread.poll_until(WAIT, || stop_seen.load(Ordering::Acquire))
        })
        .unwrap();
        let handle = rx.recv().unwrap();
        assert_eq!(handle.name(), "mailbox");
        let flag = stop.clone();
        handle
            .send(move || flag.store(true, Ordering::Release))
            .unwrap();
        assert!(worker.join().unwrap(), "message was not delivered");
        assert_eq!(handle.send(|| {}).unwrap_err(), Error::Errno(Errno::ENODEV));
    }
}
