//! Mirrors what `spdk-ring-sys` found: `cfg(spdk)` compiles in the SPDK API.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(spdk)");
    println!("cargo:rerun-if-env-changed=DEP_SPDK_FOUND");
    println!("cargo:rerun-if-env-changed=DEP_SPDK_VERSION_NUMBER");
    if std::env::var("DEP_SPDK_FOUND").as_deref() == Ok("1") {
        println!("cargo::rustc-cfg=spdk");
        // major * 10000 + minor * 100 + patch, for code adapting across releases.
        let number = std::env::var("DEP_SPDK_VERSION_NUMBER").unwrap_or_else(|_| "0".into());
        println!("cargo:rustc-env=SPDK_RING_SPDK_VERSION_NUMBER={number}");
    }
}
