//! Included by every SPDK integration test binary, with or without SPDK.

/// Without SPDK, a binary's only test: ignored, its reason saying how to
/// enable the SPDK integration tests (libtest prints it).
macro_rules! report_skipped_without_spdk {
    () => {
        #[cfg(not(spdk))]
        #[test]
        #[ignore = "SPDK was not found when this was built, so the SPDK integration tests were \
                    skipped. Install SPDK under /usr/local, or set SPDK_DIR=/path/to/spdk or \
                    PKG_CONFIG_PATH=/path/to/spdk/lib/pkgconfig, then run cargo test again"]
        fn spdk_integration_tests_skipped() {}
    };
}
