//! # spdk-ring
//!
//! An io_uring-style API for SPDK: each SPDK thread gets a submission ring
//! and a completion ring; callers push typed entries tagged with a `u64`
//! `user_data`, call `poll`, and drain completions synchronously. No async
//! runtime is involved; the caller owns the loop.
//!
//! This crate also provides the safe handles the ring builds on:
//! [`SpdkRuntime`] (SPDK embedded in an ordinary `main`, driven by
//! polling), [`SpdkApp`] (the classic `spdk_app_start` framework),
//! [`SpdkThread`], [`Poller`], [`DmaBuf`], [`Bdev`], [`BdevDesc`] and
//! [`IoChannel`].
//!
//! ## Building
//! The SPDK API is compiled in when the build finds an installed SPDK
//! (`SPDK_DIR`, or pkg-config, which searches `/usr/local`). Without SPDK
//! only the SPDK-independent parts ([`Error`], [`JsonConfig`]) exist and
//! the build prints a warning saying how to enable the rest;
//! [`SPDK_AVAILABLE`] tells which build this is.
//!
//! ## Logging
//! With the `log` feature (on by default), SPDK's own log lines become
//! records of the `log` facade (target `spdk::<component>`, such as
//! `spdk::bdev`) once a logger is installed before SPDK starts; otherwise,
//! or with [`LogOutput::Stderr`], SPDK prints them to stderr as it always
//! does. See [`LogOutput`].
//!
//! ## Thread safety
//! | Type | Send | Sync | Why |
//! |------|------|------|-----|
//! | [`SpdkThread`], [`CurrentThread`] | no | no | bound to the OS thread that attached it |
//! | [`ThreadHandle`] | yes | yes | only sends messages, which SPDK makes thread-safe |
//! | [`Bdev`] | no | no | conservative: describes a device owned by SPDK threads |
//! | [`BdevDesc`] | no | no | must be closed on the thread that opened it |
//! | [`IoChannel`] | no | no | per-thread by definition |
//! | [`DmaBuf`] | yes | no | can move between threads; never shared during I/O |
//! | [`Ring`] | no | no | belongs to one SPDK thread |
//! | [`Poller`] | no | no | registered on one SPDK thread |
//! | [`nvme::NvmeController`] | no | no | operated from the thread that attached it |
//! | [`nvme::NvmeNamespace`] | no | no | borrowed from its controller |

// Every unsafe operation in its own block, and every block says why it holds.
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod config;
pub mod error;
// Used by the SPDK driver; FFI-free, so it is built and tested (Miri too) everywhere.
#[cfg_attr(not(spdk), allow(dead_code))]
mod pinned;
pub mod queue;

pub use config::JsonConfig;
pub use error::{Errno, Error, NvmeStatus, Result};

/// Whether this build has SPDK (see the crate docs).
pub const SPDK_AVAILABLE: bool = cfg!(spdk);

#[cfg(spdk)]
pub mod app;
#[cfg(all(spdk, feature = "futures"))]
pub mod async_ring;
#[cfg(spdk)]
pub mod bdev;
#[cfg(spdk)]
pub mod blob;
#[cfg(spdk)]
pub mod clock;
#[cfg(spdk)]
pub mod cores;
#[cfg(spdk)]
pub mod dma;
#[cfg(spdk)]
pub mod env;
#[cfg(all(spdk, feature = "log"))]
mod log;
#[cfg(spdk)]
pub mod nvme;
#[cfg(spdk)]
pub mod poller;
#[cfg(spdk)]
pub mod ring;
#[cfg(spdk)]
pub mod runtime;
#[cfg(spdk)]
pub mod thread;

#[cfg(spdk)]
pub use app::{SpdkApp, SpdkAppBuilder};
#[cfg(all(spdk, feature = "futures"))]
pub use async_ring::{AsyncRing, AsyncStats};
#[cfg(spdk)]
pub use bdev::{Bdev, BdevDesc, IoChannel, IoTypes, OpenMode};
#[cfg(spdk)]
pub use cores::Cores;
#[cfg(spdk)]
pub use dma::{DmaBuf, DEFAULT_DMA_ALIGN};
#[cfg(spdk)]
pub use env::{is_initialized as env_is_initialized, LogLevel, LogOutput, SpdkEnv, SpdkEnvBuilder};
#[cfg(spdk)]
pub use poller::{Poller, PollerStatus};
pub use queue::{CompletionFlags, EntryFlags};
#[cfg(spdk)]
pub use ring::{
    opcode, Completion, CompletionRef, Entry, EntryFootprint, ForwardEntry, ForwardError,
    IoFailure, NvmeCommand, PushError, Ring, RingBuilder, RingSender, RingStats, Target,
    MAX_IOVECS, NVME_INTERRUPT_POLL_PERIOD, NVME_KEEP_ALIVE_POLL_PERIOD,
};
#[cfg(spdk)]
pub use runtime::{ConfigLoad, SpdkRuntime, SpdkRuntimeBuilder, DEFAULT_STEP_TIMEOUT};
#[cfg(spdk)]
pub use thread::{interrupt_mode, CurrentThread, JoinHandle, SpdkThread, ThreadHandle};

/// The SPDK release this build was compiled against, e.g. `"26.09.0-pre"`.
#[cfg(spdk)]
pub const SPDK_VERSION: &str = spdk_ring_sys::SPDK_VERSION_STRING;

/// [`SPDK_VERSION`] as `major * 10000 + minor * 100 + patch` (26.09.0 is
/// 260900), for code that adapts across SPDK releases.
#[cfg(spdk)]
pub const SPDK_VERSION_NUMBER: u32 = parse_version_number(env!("SPDK_RING_SPDK_VERSION_NUMBER"));

#[cfg(spdk)]
const fn parse_version_number(digits: &str) -> u32 {
    let bytes = digits.as_bytes();
    let mut value = 0u32;
    let mut i = 0;
    while i < bytes.len() {
        value = value * 10 + (bytes[i] - b'0') as u32;
        i += 1;
    }
    value
}

/// Raw bindings, for what the safe API does not cover yet.
#[cfg(spdk)]
pub use spdk_ring_sys as sys;
