//! Errors: errno values keep their number and name, NVMe status keeps SCT and
//! SC, lookups keep the name that was not found, and start-up errors say what
//! to change.

use std::fmt;
use std::time::Duration;

/// A positive errno value as SPDK reports it (SPDK returns `-errno`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Errno(pub i32);

impl Errno {
    pub const EPERM: Errno = Errno(libc::EPERM);
    pub const ENOENT: Errno = Errno(libc::ENOENT);
    pub const ENXIO: Errno = Errno(libc::ENXIO);
    pub const EIO: Errno = Errno(libc::EIO);
    pub const EBADF: Errno = Errno(libc::EBADF);
    pub const ENOMEM: Errno = Errno(libc::ENOMEM);
    pub const EBUSY: Errno = Errno(libc::EBUSY);
    pub const EEXIST: Errno = Errno(libc::EEXIST);
    pub const ENODEV: Errno = Errno(libc::ENODEV);
    pub const EINVAL: Errno = Errno(libc::EINVAL);
    pub const ENOSPC: Errno = Errno(libc::ENOSPC);
    pub const ERANGE: Errno = Errno(libc::ERANGE);
    pub const ETIME: Errno = Errno(libc::ETIME);
    pub const ENOTSUP: Errno = Errno(libc::ENOTSUP);
    pub const EALREADY: Errno = Errno(libc::EALREADY);
    pub const ECANCELED: Errno = Errno(libc::ECANCELED);

    /// From an SPDK return code, which is `-errno` on failure.
    pub fn from_rc(rc: i32) -> Errno {
        Errno(rc.saturating_abs())
    }

    /// The symbolic name (`"ENOMEM"`), for the values SPDK commonly returns.
    pub fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            libc::EPERM => "EPERM",
            libc::ENOENT => "ENOENT",
            libc::EINTR => "EINTR",
            libc::EIO => "EIO",
            libc::ENXIO => "ENXIO",
            libc::E2BIG => "E2BIG",
            libc::EBADF => "EBADF",
            libc::EAGAIN => "EAGAIN",
            libc::ENOMEM => "ENOMEM",
            libc::EACCES => "EACCES",
            libc::EFAULT => "EFAULT",
            libc::EBUSY => "EBUSY",
            libc::EEXIST => "EEXIST",
            libc::EXDEV => "EXDEV",
            libc::ENODEV => "ENODEV",
            libc::ENOTDIR => "ENOTDIR",
            libc::EISDIR => "EISDIR",
            libc::EINVAL => "EINVAL",
            libc::ENFILE => "ENFILE",
            libc::EMFILE => "EMFILE",
            libc::EFBIG => "EFBIG",
            libc::ENOSPC => "ENOSPC",
            libc::EROFS => "EROFS",
            libc::EPIPE => "EPIPE",
            libc::EDOM => "EDOM",
            libc::ERANGE => "ERANGE",
            libc::ENAMETOOLONG => "ENAMETOOLONG",
            libc::ENOSYS => "ENOSYS",
            libc::ENODATA => "ENODATA",
            libc::ETIME => "ETIME",
            libc::EPROTO => "EPROTO",
            libc::EBADMSG => "EBADMSG",
            libc::EOVERFLOW => "EOVERFLOW",
            libc::EILSEQ => "EILSEQ",
            libc::ENOTSUP => "ENOTSUP",
            libc::EADDRINUSE => "EADDRINUSE",
            libc::ECONNRESET => "ECONNRESET",
            libc::ENOTCONN => "ENOTCONN",
            libc::ETIMEDOUT => "ETIMEDOUT",
            libc::ECONNREFUSED => "ECONNREFUSED",
            libc::EHOSTUNREACH => "EHOSTUNREACH",
            libc::EALREADY => "EALREADY",
            libc::EINPROGRESS => "EINPROGRESS",
            libc::ECANCELED => "ECANCELED",
            libc::EPROTOTYPE => "EPROTOTYPE",
            libc::ENOMSG => "ENOMSG",
            _ => return None,
        })
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let description = std::io::Error::from_raw_os_error(self.0);
        let text = description.to_string();
        // io::Error appends " (os error N)"; keep only the description.
        let text = text.split(" (os error").next().unwrap_or(&text);
        match self.name() {
            Some(name) => write!(f, "{name} (errno {}): {text}", self.0),
            None => write!(f, "errno {}: {text}", self.0),
        }
    }
}

/// The status an NVMe controller returned for a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct NvmeStatus {
    /// Status Code Type (0 generic, 1 command specific, 2 media, 3 path, 7 vendor).
    pub sct: u8,
    /// Status Code within its type.
    pub sc: u8,
    /// Command-specific completion dword 0.
    pub cdw0: u32,
    /// Do Not Retry.
    pub dnr: bool,
    /// More status information is available in the error log.
    pub more: bool,
}

impl NvmeStatus {
    /// True for Generic / Successful Completion.
    pub fn is_success(&self) -> bool {
        self.sct == 0 && self.sc == 0
    }
}

impl fmt::Display for NvmeStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.sct {
            0 => "generic",
            1 => "command specific",
            2 => "media/data integrity",
            3 => "path",
            7 => "vendor specific",
            _ => "reserved",
        };
        write!(f, "SCT {:#x} ({kind}), SC {:#04x}", self.sct, self.sc)?;
        if self.dnr {
            f.write_str(", do not retry")?;
        }
        if self.more {
            f.write_str(", more info in error log")?;
        }
        Ok(())
    }
}

/// Every error spdk-ring returns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An SPDK call failed with this errno.
    #[error("SPDK call failed: {0}")]
    Errno(Errno),
    /// An NVMe command completed with an error status.
    #[error("NVMe command failed: {0}")]
    Nvme(NvmeStatus),
    /// No bdev has this name.
    #[error("bdev not found: {0:?}")]
    BdevNotFound(String),
    /// The environment can be initialised once per process (a DPDK limit).
    #[error(
        "the SPDK environment was already initialised in this process; it can be initialised \
         only once per process (keep one SpdkRuntime/SpdkApp/SpdkEnv for the process lifetime)"
    )]
    EnvAlreadyInitialized,
    /// An SPDK call that needs the environment was made before it existed.
    #[error(
        "the SPDK environment is not initialised: start an SpdkRuntime, SpdkApp or SpdkEnv first"
    )]
    EnvNotInitialized,
    /// `spdk_env_init` failed.
    #[error("SPDK environment initialisation failed ({errno}): {hint}")]
    EnvInit { errno: Errno, hint: String },
    /// Subsystem start-up or JSON configuration failed.
    #[error("SPDK {stage} failed ({errno}); SPDK's log above names the failing step")]
    Subsystem { stage: &'static str, errno: Errno },
    /// A caller-supplied value is unusable.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The call needs an SPDK thread on this OS thread.
    #[error(
        "no SPDK thread is attached to this OS thread: use SpdkRuntime, SpdkThread::attach or \
         SpdkThread::spawn"
    )]
    NoThread,
    /// One OS thread carries at most one SPDK thread.
    #[error("this OS thread already has SPDK thread {0:?} attached")]
    ThreadAlreadyAttached(String),
    /// A bdev was opened for reading only and written to.
    #[error("bdev {0:?} is open read-only")]
    ReadOnly(String),
    /// SPDK did not call back within the allowed time.
    #[error("SPDK did not finish {what} within {after:?}")]
    Timeout { what: &'static str, after: Duration },
    /// No NVMe controller could be attached at this transport id.
    #[error("could not attach an NVMe controller at {trid}; SPDK's log above says why")]
    NvmeConnect { trid: String },
    /// The object is still in use by other handles or in-flight entries.
    #[error("busy: {0}")]
    Busy(String),
    /// A JSON configuration file could not be read.
    #[error("cannot read JSON config {path}: {message}")]
    ConfigFile { path: String, message: String },
}

impl Error {
    /// From an SPDK `-errno` return code.
    pub fn from_rc(rc: i32) -> Error {
        Error::Errno(Errno::from_rc(rc))
    }

    /// The errno this error carries, if any.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            Error::Errno(e)
            | Error::EnvInit { errno: e, .. }
            | Error::Subsystem { errno: e, .. } => Some(*e),
            _ => None,
        }
    }
}

/// `Result` with spdk-ring's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_keeps_number_and_name() {
        let e = Errno::from_rc(-libc::ENOMEM);
        assert_eq!(e, Errno::ENOMEM);
        assert_eq!(e.name(), Some("ENOMEM"));
        assert_eq!(e.to_string(), "ENOMEM (errno 12): Cannot allocate memory");
        assert_eq!(Error::from_rc(-libc::ENODEV).errno(), Some(Errno::ENODEV));
    }

    #[test]
    fn unknown_errno_still_shows_its_number() {
        assert_eq!(Errno(4000).name(), None);
        assert!(Errno(4000).to_string().starts_with("errno 4000: "));
    }

    #[test]
    fn nvme_status_keeps_sct_and_sc() {
        let s = NvmeStatus {
            sct: 2,
            sc: 0x81,
            cdw0: 0,
            dnr: true,
            more: false,
        };
        let text = Error::Nvme(s).to_string();
        assert_eq!(
            text,
            "NVMe command failed: SCT 0x2 (media/data integrity), SC 0x81, do not retry"
        );
        assert!(!s.is_success());
        assert!(NvmeStatus::default().is_success());
    }

    #[test]
    fn not_found_carries_the_name() {
        assert_eq!(
            Error::BdevNotFound("Malloc9".into()).to_string(),
            "bdev not found: \"Malloc9\""
        );
    }
}
