//! The classic framework (`spdk_app_start`) in its own process, since the
//! SPDK environment can be initialised once per process.

#[path = "common/skipped.rs"]
#[macro_use]
mod skipped;
report_skipped_without_spdk!();

#[cfg(spdk)]
#[test]
fn app_framework_runs_start_callback_with_configured_bdevs_and_shuts_down() {
    use spdk_ring::{
        Bdev, BdevDesc, DmaBuf, Error, JsonConfig, LogLevel, OpenMode, SpdkApp, SpdkThread,
    };
    use std::cell::RefCell;
    use std::rc::Rc;

    // The configuration comes from a file here (the runtime tests use text).
    let config_file =
        std::env::temp_dir().join(format!("spdk-ring-app-{}.json", std::process::id()));
    std::fs::write(
        &config_file,
        JsonConfig::new().null_bdev("AppNull0", 2048, 512).to_json(),
    )
    .unwrap();
    let seen: Rc<RefCell<Vec<String>>> = Rc::default();
    let record = seen.clone();
    // A buffer that outlives the app keeps the environment up until it goes.
    let kept: Rc<RefCell<Option<DmaBuf>>> = Rc::default();
    let keep = kept.clone();
    SpdkApp::builder()
        .name("spdk_ring_app_test")
        .no_huge(true)
        .mem_size_mb(1024)
        .log_level(LogLevel::Error)
        .json_config_file(&config_file)
        .run(move |thread| {
            let mut log = record.borrow_mut();
            log.push(format!("thread {}", thread.name()));
            let bdev = Bdev::lookup("AppNull0").unwrap();
            log.push(format!(
                "{} {}x{}",
                bdev.name(),
                bdev.num_blocks(),
                bdev.block_size()
            ));
            let desc = BdevDesc::open("AppNull0", OpenMode::ReadWrite).unwrap();
            log.push(format!("open {:?}", desc.mode()));
            drop(desc);
            let buf = DmaBuf::alloc_zeroed(4096, 0).unwrap();
            log.push(format!("dma {}", buf.len()));
            *keep.borrow_mut() = Some(DmaBuf::from_slice(&[0x5A; 512]).unwrap());
            assert_eq!(
                SpdkThread::attach("extra").unwrap_err(),
                Error::ThreadAlreadyAttached(thread.name().to_string())
            );
            SpdkApp::stop(0);
        })
        .unwrap();
    let _ = std::fs::remove_file(&config_file);
    let log = seen.borrow();
    assert_eq!(log.len(), 4, "{log:?}");
    assert!(log[0].starts_with("thread "));
    assert_eq!(
        &log[1..],
        ["AppNull0 2048x512", "open ReadWrite", "dma 4096"]
    );
    let outliving = kept
        .borrow_mut()
        .take()
        .expect("kept by the start callback");
    assert!(
        spdk_ring::env_is_initialized(),
        "a live buffer holds the environment"
    );
    assert!(outliving.iter().all(|&b| b == 0x5A));
    drop(outliving);
    assert!(
        !spdk_ring::env_is_initialized(),
        "the environment is finished once run returned and the last buffer is gone"
    );
}

/// Interrupt mode is refused by the app framework (a ring on an app thread
/// in interrupt mode hung in testing): a clear error, before SPDK starts,
/// and the start callback never runs.
#[cfg(spdk)]
#[test]
fn app_framework_refuses_interrupt_mode_before_starting_spdk() {
    use spdk_ring::{Error, SpdkApp};
    let result = SpdkApp::builder()
        .name("spdk_ring_app_interrupt_refused")
        .no_huge(true)
        .mem_size_mb(256)
        .interrupt_mode(true)
        .run(|_| panic!("the start callback must not run"));
    match result {
        Err(Error::InvalidArgument(message)) => {
            assert!(message.contains("interrupt mode"), "{message}")
        }
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
}
