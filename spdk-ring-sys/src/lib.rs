//! Raw bindings to SPDK, generated at build time from the installed headers
//! (see `wrapper.h`). Safe code lives in the `spdk-ring` crate.
//!
//! Built without SPDK (none found), this crate only exports [`SPDK_FOUND`]
//! as `false`; the build printed how to enable SPDK.

#![allow(non_upper_case_globals, non_camel_case_types, non_snake_case)]
#![allow(clippy::all)]

/// Whether SPDK was found when this crate was built.
pub const SPDK_FOUND: bool = cfg!(spdk);

#[cfg(spdk)]
#[allow(unnecessary_transmutes, clippy::all)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/bindings.rs"));
}
#[cfg(spdk)]
pub use generated::*;

#[cfg(spdk)]
mod inline;
#[cfg(spdk)]
pub use inline::*;

/// The SPDK release the bindings were generated from, e.g. `26.09.0-pre`.
#[cfg(spdk)]
pub const SPDK_VERSION_STRING: &str = env!("SPDK_RING_SYS_SPDK_VERSION");
