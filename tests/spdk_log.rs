//! SPDK's log lines as `log` records (the `log` feature), with real SPDK.
//!
//! This process runs the shared embedded runtime with a capturing logger
//! installed first, so its lines are routed. The app framework and the
//! stderr choice each need a process of their own (SPDK starts once per
//! process and its log output is process-wide): those tests run this binary
//! again on one ignored entry point each and check what it printed.

#[cfg(all(spdk, feature = "log"))]
#[path = "common/mod.rs"]
mod common;

#[path = "common/skipped.rs"]
#[macro_use]
mod skipped;
report_skipped_without_spdk!();

#[cfg(all(spdk, not(feature = "log")))]
#[test]
#[ignore = "built without the `log` feature, so there is no log bridge to test; \
            SPDK keeps its own stderr output"]
fn log_bridge_tests_skipped() {}

#[cfg(all(spdk, feature = "log"))]
mod bridge {
    use super::common::*;
    use log::{Level, LevelFilter, Log, Metadata, Record};
    use spdk_ring::{
        BdevDesc, Error, JsonConfig, LogLevel, LogOutput, OpenMode, SpdkApp, SpdkRuntime,
        SpdkThread,
    };
    use std::process::{Command, Output};
    use std::sync::{Mutex, Once};

    /// Names the entry point a child process is to run.
    const CHILD_VAR: &str = "SPDK_RING_LOG_TEST_CHILD";

    #[derive(Debug, Clone)]
    struct Captured {
        level: Level,
        target: String,
        message: String,
        file: Option<String>,
        line: Option<u32>,
        function: Option<String>,
    }

    static RECORDS: Mutex<Vec<Captured>> = Mutex::new(Vec::new());

    struct Capture;

    impl Log for Capture {
        fn enabled(&self, _: &Metadata) -> bool {
            true
        }
        fn log(&self, record: &Record) {
            let function = record
                .key_values()
                .get(log::kv::Key::from("function"))
                .map(|v| v.to_string());
            RECORDS.lock().unwrap().push(Captured {
                level: record.level(),
                target: record.target().to_string(),
                message: record.args().to_string(),
                file: record.file().map(str::to_string),
                line: record.line(),
                function,
            });
        }
        fn flush(&self) {}
    }

    /// Installed before SPDK starts, so `LogOutput::Auto` routes.
    fn install_capture() {
        static ONCE: Once = Once::new();
        ONCE.call_once(|| {
            log::set_logger(&Capture).unwrap();
            log::set_max_level(LevelFilter::Trace);
        });
    }

    fn records_with(text: &str) -> Vec<Captured> {
        let records = RECORDS.lock().unwrap();
        records
            .iter()
            .filter(|r| r.message.contains(text))
            .cloned()
            .collect()
    }

    fn the_record_with(text: &str) -> Captured {
        let found = records_with(text);
        assert_eq!(found.len(), 1, "one record with {text:?}: {found:?}");
        found[0].clone()
    }

    #[test]
    fn log_record_for_a_missing_bdev_is_info_from_spdk_bdev() {
        install_capture();
        fixture();
        let _t = SpdkThread::attach("log-missing").unwrap();
        let err = BdevDesc::open("LogMissing0", OpenMode::ReadOnly).unwrap_err();
        assert_eq!(err, Error::BdevNotFound("LogMissing0".into()));
        // SPDK_NOTICELOG in bdev.c, delivered on this thread before open returned.
        let record = the_record_with("LogMissing0");
        assert_eq!(record.level, Level::Info);
        assert_eq!(record.target, "spdk::bdev");
        assert_eq!(
            record.message,
            "Currently unable to find bdev with name: LogMissing0"
        );
        assert!(
            record
                .file
                .as_deref()
                .is_some_and(|f| f.ends_with("bdev.c")),
            "{record:?}"
        );
        assert!(record.line.is_some_and(|l| l > 0), "{record:?}");
        assert!(
            record
                .function
                .as_deref()
                .is_some_and(|f| f.contains("bdev_open")),
            "{record:?}"
        );
    }

    #[test]
    fn log_record_for_a_rejected_malloc_bdev_is_error_from_spdk_bdev_malloc() {
        install_capture();
        let params = r#"{"name": "LogBadBlocks", "num_blocks": 16, "block_size": 500}"#;
        let outcome = fixture()
            .bdev_method("bdev_malloc_create", params.into())
            .recv()
            .unwrap();
        assert!(
            matches!(outcome, Err(Error::Subsystem { .. })),
            "{outcome:?}"
        );
        let record = the_record_with("Data block size must be 512 bytes aligned");
        assert_eq!(record.level, Level::Error);
        assert_eq!(record.target, "spdk::bdev_malloc");
        assert!(
            record
                .file
                .as_deref()
                .is_some_and(|f| f.ends_with("bdev_malloc.c")),
            "{record:?}"
        );
    }

    /// Runs `entry` (one of the ignored tests below) in a new process of
    /// this binary; it must have run and passed.
    fn run_child(entry: &str) -> Output {
        let out = Command::new(std::env::current_exe().unwrap())
            .args(["--ignored", "--exact", "--test-threads=1", "--nocapture"])
            .arg(format!("bridge::{entry}"))
            .env(CHILD_VAR, entry)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "child {entry}: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
            out.status
        );
        out
    }

    /// Whether this process was started by `run_child` for `entry`.
    fn is_child_for(entry: &str) -> bool {
        std::env::var(CHILD_VAR).is_ok_and(|v| v == entry)
    }

    #[test]
    fn log_output_stderr_keeps_spdk_lines_out_of_log() {
        let out = run_child("child_runtime_with_stderr_output");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("*NOTICE*: Currently unable to find bdev with name: LogStderrMissing"),
            "SPDK's own line on stderr:\n{stderr}"
        );
    }

    #[test]
    fn log_records_come_from_the_app_framework_instead_of_stderr() {
        let out = run_child("child_app_framework");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("unable to find bdev"),
            "routed, so not printed:\n{stderr}"
        );
    }

    #[test]
    #[ignore = "entry point of log_output_stderr_keeps_spdk_lines_out_of_log's child process"]
    fn child_runtime_with_stderr_output() {
        if !is_child_for("child_runtime_with_stderr_output") {
            return;
        }
        install_capture();
        let rt = SpdkRuntime::builder()
            .name("spdk_ring_log_stderr")
            .no_huge(true)
            .mem_size_mb(1024)
            .log_level(LogLevel::Notice)
            .log_output(LogOutput::Stderr)
            .build()
            .unwrap();
        let err = BdevDesc::open("LogStderrMissing", OpenMode::ReadOnly).unwrap_err();
        assert_eq!(err, Error::BdevNotFound("LogStderrMissing".into()));
        drop(rt);
        let routed = RECORDS.lock().unwrap();
        assert!(
            routed.iter().all(|r| !r.target.starts_with("spdk")),
            "{routed:?}"
        );
    }

    #[test]
    #[ignore = "entry point of log_records_come_from_the_app_framework_instead_of_stderr's \
                child process"]
    fn child_app_framework() {
        if !is_child_for("child_app_framework") {
            return;
        }
        install_capture();
        SpdkApp::builder()
            .name("spdk_ring_log_app")
            .no_huge(true)
            .mem_size_mb(1024)
            .log_level(LogLevel::Notice)
            .json_config(JsonConfig::new().null_bdev("LogAppNull", 64, 512).to_json())
            .run(|_thread| {
                let missing = BdevDesc::open("LogAppMissing", OpenMode::ReadOnly);
                assert!(matches!(missing, Err(Error::BdevNotFound(_))));
                SpdkApp::stop(0);
            })
            .unwrap_or_else(|e| panic!("{e}; SPDK said: {:#?}", RECORDS.lock().unwrap()));
        let record = the_record_with("LogAppMissing");
        assert_eq!(record.level, Level::Info);
        assert_eq!(record.target, "spdk::bdev");
        // A start-up line of spdk_app_start, from after its own spdk_log_open.
        let cores = the_record_with("Total cores available: ");
        assert_eq!(
            (cores.level, cores.target.as_str()),
            (Level::Info, "spdk::app")
        );
    }
}
