//! The set-up the null-bdev benches share: an embedded no-huge SPDK with
//! one null bdev (`Null0`, 4 KiB blocks) opened read-only, and criterion
//! sized so that a whole bench stays short on a 2-core machine.

use criterion::Criterion;
use spdk_ring::{BdevDesc, JsonConfig, LogLevel, OpenMode, SpdkRuntime};
use std::time::Duration;

/// SPDK on this thread with `Null0`, and a descriptor of it.
pub fn start(name: &str) -> (SpdkRuntime, BdevDesc) {
    let rt = SpdkRuntime::builder()
        .name(name)
        .no_huge(true)
        .mem_size_mb(1024)
        .log_level(LogLevel::Error)
        .json_config(
            JsonConfig::new()
                .null_bdev("Null0", 1 << 20, 4096)
                .to_json(),
        )
        .build()
        .expect("SPDK starts in no-huge mode");
    let desc = BdevDesc::open("Null0", OpenMode::ReadOnly).expect("Null0 exists");
    (rt, desc)
}

/// Criterion with short warm-up and measurement, overridable from the
/// command line.
pub fn criterion() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20)
        .configure_from_args()
}
