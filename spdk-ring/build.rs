//! Mirrors what `spdk-ring-sys` found: `cfg(spdk)` compiles in the SPDK API.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(spdk)");
    println!("cargo:rerun-if-env-changed=DEP_SPDK_FOUND");
    if std::env::var("DEP_SPDK_FOUND").as_deref() == Ok("1") {
        println!("cargo::rustc-cfg=spdk");
    }
}
