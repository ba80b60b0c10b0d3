//! Build-time support for `spdk-ring-sys`: find SPDK, read its version, and
//! turn `pkg-config --static --libs` output into cargo link directives.
//!
//! Everything here is plain text processing behind small traits, so the logic
//! is unit-tested on recorded pkg-config output without SPDK installed.

pub mod link;
pub mod locate;
pub mod pkgconfig;
pub mod version;

pub use link::{LibKind, LinkItem, LinkPlan, MissingLibraries};
pub use locate::{
    locate, LocateError, Located, SpdkInstall, SPDK_OPTIONAL_MODULES, SPDK_REQUIRED_MODULES,
};
pub use pkgconfig::{summarize_error, PkgConfig, SearchPath, SystemPkgConfig};
pub use version::SpdkVersion;
