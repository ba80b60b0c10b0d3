//! Finds SPDK (see `spdk-ring-build-helper`), links it and generates the
//! bindings. Without SPDK the crate builds empty and says so once.

use spdk_ring_build_helper::{locate, LinkPlan, Located, SpdkInstall, SystemPkgConfig};
use std::env;
use std::path::{Path, PathBuf};

const HOW_TO_ENABLE: &str = "install SPDK under /usr/local (pkg-config finds it there), or set \
     SPDK_DIR=/path/to/spdk (an install prefix or a build tree) or \
     PKG_CONFIG_PATH=/path/to/spdk/lib/pkgconfig, then rebuild";

fn main() {
    for var in [
        "SPDK_DIR",
        "PKG_CONFIG_PATH",
        "PKG_CONFIG",
        "SPDK_RING_NO_SPDK",
        "PKG_CONFIG_LIBDIR",
        "LIBRARY_PATH",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    println!("cargo:rerun-if-changed=wrapper.h");
    println!("cargo::rustc-check-cfg=cfg(spdk)");

    if env::var_os("SPDK_RING_NO_SPDK").is_some_and(|v| !v.is_empty() && v != "0") {
        build_without_spdk("SPDK_RING_NO_SPDK is set");
        return;
    }
    let spdk_dir = env::var_os("SPDK_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    match locate(spdk_dir.as_deref(), &SystemPkgConfig) {
        Ok(Located::Found(install)) => build_with_spdk(&install),
        Ok(Located::Absent { why }) => build_without_spdk(&why),
        Err(e) => panic!("spdk-ring-sys: {e}"),
    }
}

fn build_without_spdk(why: &str) {
    println!(
        "cargo:warning=SPDK not found ({why}): spdk-ring is built WITHOUT SPDK; its SPDK API, \
         examples and SPDK integration tests are compiled out. To enable them: {HOW_TO_ENABLE}."
    );
    println!("cargo:found=0");
}

fn build_with_spdk(install: &SpdkInstall) {
    for file in &install.watched_files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    let default_dirs = default_lib_dirs();
    let file_exists = |p: &Path| p.is_file();
    let mut plan = LinkPlan::from_pkg_config(&install.libs, &default_dirs, &file_exists);
    if let Some(dpdk_libs) = &install.dpdk_libs {
        plan.add_static_dpdk_dependencies(dpdk_libs, &default_dirs, &file_exists);
    }
    if let Some(missing) = plan.missing_libraries(&link_time_dirs(&default_dirs), &file_exists) {
        panic!(
            "spdk-ring-sys: SPDK found via {}: {missing}",
            install.origin
        );
    }
    for line in plan.cargo_directives() {
        println!("{line}");
    }
    if !plan.unhandled.is_empty() {
        println!(
            "cargo:warning=spdk-ring-sys: pkg-config flags without a cargo equivalent were not applied: {}",
            plan.unhandled.join(" ")
        );
    }

    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    bindgen::Builder::default()
        .header("wrapper.h")
        .clang_args(
            install
                .include_dirs
                .iter()
                .map(|d| format!("-I{}", d.display())),
        )
        .allowlist_function("spdk_.*")
        .allowlist_type("spdk_.*")
        .allowlist_var("SPDK_.*")
        // Formats the va_list SPDK hands its log callback (spdk-ring's `log`
        // bridge), declared with bindgen's own va_list type.
        .allowlist_function("vsnprintf")
        // Packed structs that contain bitfield types bindgen gives
        // `#[repr(align)]`, which Rust rejects (E0588): kept opaque (correct
        // size and alignment); spdk-ring reads the few fields it needs.
        .opaque_type("spdk_nvme_ctrlr_data")
        // A bitfield struct bindgen lays out as 8 bytes instead of 4, which
        // shifted every field of spdk_nvme_cmd after cdw10 (caught by the
        // layout assertions below, which stay on for that reason).
        .opaque_type("spdk_nvme_feat_async_event_configuration.*")
        .opaque_type("spdk_bdev_ext_io_opts")
        .blocklist_type("spdk_nvmf_fabric_.*_rsp")
        .blocklist_type("spdk_nvme_tcp_(cmd|rsp)")
        .prepend_enum_name(false)
        .derive_default(true)
        .layout_tests(true)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .generate()
        .unwrap_or_else(|e| {
            panic!(
                "spdk-ring-sys: bindgen failed on SPDK {}: {e}",
                install.version
            )
        })
        .write_to_file(out.join("bindings.rs"))
        .expect("write bindings.rs");

    let v = &install.version;
    println!("cargo::rustc-cfg=spdk");
    println!("cargo:found=1");
    println!("cargo:version={v}");
    println!("cargo:version_number={}", v.as_number());
    println!("cargo:static={}", plan.is_static());
    println!("cargo:rustc-env=SPDK_RING_SYS_SPDK_VERSION={v}");
    println!(
        "cargo:rustc-env=SPDK_RING_SYS_SPDK_ORIGIN={}",
        install.origin
    );
}

/// Where the linker looks when pkg-config prints no `-L` (a distribution's DPDK).
fn default_lib_dirs() -> Vec<PathBuf> {
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let multiarch = format!("{arch}-linux-gnu");
    [
        "/usr/local/lib",
        &format!("/usr/lib/{multiarch}"),
        "/usr/lib",
        &format!("/lib/{multiarch}"),
        "/usr/lib64",
    ]
    .iter()
    .map(PathBuf::from)
    .collect()
}

/// `default_dirs` and `LIBRARY_PATH` (which the C compiler driver hands the
/// linker): where a library must be for the link to find it.
fn link_time_dirs(default_dirs: &[PathBuf]) -> Vec<PathBuf> {
    let from_env = env::var_os("LIBRARY_PATH")
        .map(|dirs| env::split_paths(&dirs).collect::<Vec<_>>())
        .unwrap_or_default();
    from_env
        .into_iter()
        .filter(|d| !d.as_os_str().is_empty())
        .chain(default_dirs.iter().cloned())
        .collect()
}
