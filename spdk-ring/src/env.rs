//! The SPDK environment (DPDK EAL, DMA-able memory): configured through
//! [`SpdkEnvBuilder`], initialised once per process.
//!
//! DPDK cannot initialise twice in one process, so a second initialisation
//! returns [`Error::EnvAlreadyInitialized`]. The environment is torn down
//! when the last holder goes: the [`SpdkEnv`] (or runtime/app) *and* every
//! [`DmaBuf`](crate::DmaBuf) keep it alive, so no buffer can be freed into a
//! finished environment.

use crate::error::{Errno, Error, Result};
use spdk_ring_sys as sys;
use std::ffi::CString;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, Weak};

const UNINITIALISED: u8 = 0;
const INITIALISING: u8 = 1;
const READY: u8 = 2;
const FAILED: u8 = 3;
const FINISHED: u8 = 4;

static STATE: AtomicU8 = AtomicU8::new(UNINITIALISED);
static LIVE: Mutex<Option<Weak<EnvToken>>> = Mutex::new(None);

/// How the environment was started, which decides how it is finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EnvOwner {
    /// `spdk_env_init`; finished with `spdk_env_fini`.
    Env,
    /// `spdk_app_start`; finished with `spdk_app_fini`.
    App,
}

/// Shared proof that the environment is up; the last one finishes it.
#[derive(Debug)]
pub(crate) struct EnvToken {
    owner: EnvOwner,
    /// Strings handed to `spdk_env_init`, kept for the environment's lifetime.
    _args: Vec<CString>,
}

impl Drop for EnvToken {
    fn drop(&mut self) {
        // SAFETY: this is the last holder of the environment: no DmaBuf,
        // runtime or app refers to it any more, and it was initialised.
        unsafe {
            match self.owner {
                EnvOwner::Env => sys::spdk_env_fini(),
                EnvOwner::App => sys::spdk_app_fini(),
            }
        }
        STATE.store(FINISHED, Ordering::Release);
    }
}

/// Claims the once-per-process initialisation, or says why it cannot.
pub(crate) fn claim_init() -> Result<()> {
    match STATE.compare_exchange(
        UNINITIALISED,
        INITIALISING,
        Ordering::AcqRel,
        Ordering::Acquire,
    ) {
        Ok(_) => Ok(()),
        Err(FAILED) => Err(Error::EnvInit {
            errno: Errno::EALREADY,
            hint: "an earlier initialisation in this process failed and DPDK cannot retry; \
                   restart the process"
                .into(),
        }),
        Err(_) => Err(Error::EnvAlreadyInitialized),
    }
}

/// Records the outcome of a claimed initialisation.
pub(crate) fn finish_init(owner: EnvOwner, args: Vec<CString>, ok: bool) -> Option<Arc<EnvToken>> {
    if !ok {
        STATE.store(FAILED, Ordering::Release);
        return None;
    }
    let token = Arc::new(EnvToken { owner, _args: args });
    *LIVE.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::downgrade(&token));
    STATE.store(READY, Ordering::Release);
    Some(token)
}

/// A handle on the live environment, for objects that must not outlive it.
pub(crate) fn live_env() -> Result<Arc<EnvToken>> {
    LIVE.lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .and_then(Weak::upgrade)
        .ok_or(Error::EnvNotInitialized)
}

/// True once the environment is up and until it is finished.
pub fn is_initialized() -> bool {
    STATE.load(Ordering::Acquire) == READY
}

/// SPDK's log levels, for what SPDK prints to stderr (when it keeps its
/// own output, see [`LogOutput`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogLevel {
    Disabled,
    Error,
    #[default]
    Warning,
    Notice,
    Info,
    Debug,
}

impl LogLevel {
    pub(crate) fn to_sys(self) -> sys::spdk_log_level {
        match self {
            LogLevel::Disabled => sys::SPDK_LOG_DISABLED,
            LogLevel::Error => sys::SPDK_LOG_ERROR,
            LogLevel::Warning => sys::SPDK_LOG_WARN,
            LogLevel::Notice => sys::SPDK_LOG_NOTICE,
            LogLevel::Info => sys::SPDK_LOG_INFO,
            LogLevel::Debug => sys::SPDK_LOG_DEBUG,
        }
    }

    /// Sets what SPDK prints from now on.
    pub fn apply(self) {
        // SAFETY: a plain setter of a global; any level value is valid.
        unsafe { sys::spdk_log_set_print_level(self.to_sys()) }
    }
}

/// Where SPDK's log lines go.
///
/// With the `log` feature (on by default) they can become records of the
/// [`log`](https://docs.rs/log) facade: SPDK's ERROR, WARN, NOTICE, INFO and
/// DEBUG as `Error`, `Warn`, `Info`, `Debug` and `Trace`; target
/// `spdk::<source file stem>` (`spdk::bdev` for SPDK's `bdev.c`, `spdk` for
/// lines without a source file); SPDK's file and line as the record's, its
/// function as the `function` key-value. The `log` logger's filter then
/// decides what is kept ([`LogLevel`] only filters SPDK's own stderr output).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogOutput {
    /// `log` records if a logger is active when SPDK starts (its maximum
    /// level is above `Off`: install the logger first), else SPDK's own
    /// stderr output, so that SPDK's errors are never silently lost.
    /// Without the `log` feature, always stderr.
    #[default]
    Auto,
    /// SPDK's own stderr lines, filtered by [`LogLevel`].
    Stderr,
    /// Always `log` records.
    ///
    /// ```no_run
    /// use spdk_ring::{BdevDesc, LogOutput, OpenMode, SpdkRuntime};
    ///
    /// struct Stderr;
    /// impl log::Log for Stderr {
    ///     fn enabled(&self, _: &log::Metadata) -> bool {
    ///         true
    ///     }
    ///     fn log(&self, record: &log::Record) {
    ///         eprintln!("{} {}: {}", record.level(), record.target(), record.args());
    ///     }
    ///     fn flush(&self) {}
    /// }
    ///
    /// log::set_logger(&Stderr).unwrap();
    /// log::set_max_level(log::LevelFilter::Info);
    /// let _rt = SpdkRuntime::builder()
    ///     .no_huge(true)
    ///     .mem_size_mb(1024)
    ///     .log_output(LogOutput::RustLog)
    ///     .build()?;
    /// // Prints "INFO spdk::bdev: Currently unable to find bdev with name: Missing".
    /// assert!(BdevDesc::open("Missing", OpenMode::ReadOnly).is_err());
    /// # Ok::<(), spdk_ring::Error>(())
    /// ```
    #[cfg(feature = "log")]
    RustLog,
}

impl LogOutput {
    /// SPDK's log callback for this choice; `None` keeps SPDK's stderr output.
    fn callback(self) -> sys::spdk_log_cb {
        match self {
            LogOutput::Stderr => None,
            #[cfg(feature = "log")]
            LogOutput::RustLog => crate::log::CALLBACK,
            #[cfg(feature = "log")]
            LogOutput::Auto if ::log::max_level() > ::log::LevelFilter::Off => crate::log::CALLBACK,
            LogOutput::Auto => None,
        }
    }
}

/// Environment options. Defaults are SPDK's own (hugepages, PCI scanning,
/// core 0), except the log level, which is [`LogLevel::Warning`].
///
/// For machines without hugepages or device access use
/// [`no_huge`](Self::no_huge) with a [`mem_size_mb`](Self::mem_size_mb),
/// which also disables PCI.
#[derive(Debug, Clone)]
pub struct SpdkEnvBuilder {
    pub(crate) name: String,
    pub(crate) core_mask: Option<String>,
    pub(crate) mem_size_mb: Option<u32>,
    pub(crate) shm_id: Option<i32>,
    pub(crate) main_core: Option<i32>,
    pub(crate) no_pci: bool,
    pub(crate) no_huge: bool,
    pub(crate) log_level: LogLevel,
    pub(crate) log_output: LogOutput,
    pub(crate) interrupt_mode: bool,
}

impl Default for SpdkEnvBuilder {
    fn default() -> Self {
        SpdkEnvBuilder {
            name: "spdk-ring".into(),
            core_mask: None,
            mem_size_mb: None,
            shm_id: None,
            main_core: None,
            no_pci: false,
            no_huge: false,
            log_level: LogLevel::default(),
            log_output: LogOutput::default(),
            interrupt_mode: false,
        }
    }
}

/// The environment setters, for builders that keep a [`SpdkEnvBuilder`] in
/// a field named `env` (the runtime and app builders delegate to it).
macro_rules! env_setters {
    ($($field:tt)*) => {
        /// Process name for DPDK (hugepage file prefixes, shared memory).
        pub fn name(mut self, name: impl Into<String>) -> Self {
            self$($field)*.name = name.into();
            self
        }
        /// CPU mask such as `"0x1"` or a DPDK core list such as `"[0,2]"`.
        pub fn core_mask(mut self, mask: impl Into<String>) -> Self {
            self$($field)*.core_mask = Some(mask.into());
            self
        }
        /// Memory to reserve for DMA buffers and SPDK's pools, in MiB.
        pub fn mem_size_mb(mut self, mb: u32) -> Self {
            self$($field)*.mem_size_mb = Some(mb);
            self
        }
        /// Shared-memory id for multi-process setups; none by default.
        pub fn shm_id(mut self, id: i32) -> Self {
            self$($field)*.shm_id = Some(id);
            self
        }
        /// The core the calling thread is the main lcore of.
        pub fn main_core(mut self, core: i32) -> Self {
            self$($field)*.main_core = Some(core);
            self
        }
        /// Skip PCI device scanning (no local NVMe devices are used).
        pub fn no_pci(mut self, yes: bool) -> Self {
            self$($field)*.no_pci = yes;
            self
        }
        /// Use ordinary memory instead of hugepages (needs no root); implies
        /// `no_pci` and requires `mem_size_mb`.
        pub fn no_huge(mut self, yes: bool) -> Self {
            self$($field)*.no_huge = yes;
            self$($field)*.no_pci |= yes;
            self
        }
        /// What SPDK prints to stderr when it keeps its own output (see
        /// [`log_output`](Self::log_output)).
        pub fn log_level(mut self, level: $crate::env::LogLevel) -> Self {
            self$($field)*.log_level = level;
            self
        }
        /// Where SPDK's log lines go: `log` records or SPDK's own stderr
        /// output (default [`LogOutput::Auto`](crate::LogOutput::Auto)).
        pub fn log_output(mut self, output: $crate::env::LogOutput) -> Self {
            self$($field)*.log_output = output;
            self
        }
        /// SPDK's interrupt mode (default off: poll mode), process-wide:
        /// SPDK threads wait on an fd instead of running their pollers on
        /// every poll, so a program can sleep in `epoll_wait` until there
        /// is work, and a [`Ring`](crate::Ring) gets a pollable fd. Bdevs
        /// whose pollers run on every poll (null, malloc) keep that fd
        /// readable; see the ring's
        /// [event-loop docs](crate::ring#embedding-in-an-event-loop).
        /// For [`SpdkRuntime`](crate::SpdkRuntime) and `SpdkEnv`;
        /// [`SpdkApp`](crate::SpdkApp) refuses it (`InvalidArgument`): a ring
        /// on an app thread in interrupt mode hung in testing, and is not
        /// supported yet.
        pub fn interrupt_mode(mut self, yes: bool) -> Self {
            self$($field)*.interrupt_mode = yes;
            self
        }
    };
}
pub(crate) use env_setters;

impl SpdkEnvBuilder {
    env_setters!();

    pub(crate) fn validate(&self) -> Result<()> {
        if self.name.is_empty() || self.name.contains('\0') {
            return Err(Error::InvalidArgument(
                "env name must be non-empty text without NUL".into(),
            ));
        }
        if self.no_huge && self.mem_size_mb.unwrap_or(0) == 0 {
            return Err(Error::InvalidArgument(
                "no_huge needs an explicit mem_size_mb (for example 256)".into(),
            ));
        }
        if self.mem_size_mb.is_some_and(|mb| mb > i32::MAX as u32) {
            return Err(Error::InvalidArgument("mem_size_mb is too large".into()));
        }
        if let Some(mask) = &self.core_mask {
            if mask.is_empty() || mask.contains('\0') {
                return Err(Error::InvalidArgument(format!(
                    "core mask {mask:?} is empty or has NUL"
                )));
            }
        }
        Ok(())
    }

    /// Sets SPDK's print level and, for `log` records, installs the
    /// callback (before SPDK starts, so start-up lines are routed too).
    /// Returns the callback, for `spdk_app_opts.log`.
    pub(crate) fn start_logging(&self) -> sys::spdk_log_cb {
        self.log_level.apply();
        let callback = self.log_output.callback();
        if callback.is_some() {
            // SAFETY: SPDK only stores the pointer; the callback is a plain
            // function that lives as long as the process.
            unsafe { sys::spdk_log_open(callback) };
        }
        callback
    }

    /// Fills `spdk_env_opts` and keeps the strings they point to.
    pub(crate) fn to_env_opts(&self) -> Result<(sys::spdk_env_opts, Vec<CString>)> {
        self.validate()?;
        let mut opts = sys::spdk_env_opts {
            opts_size: std::mem::size_of::<sys::spdk_env_opts>(),
            ..Default::default()
        };
        // SAFETY: opts is a valid, writable spdk_env_opts with opts_size set
        // as the function requires.
        unsafe { sys::spdk_env_opts_init(&mut opts) };
        let mut keep = Vec::new();
        let name = CString::new(self.name.as_str()).expect("validated: no NUL");
        opts.name = name.as_ptr();
        keep.push(name);
        if let Some(mask) = &self.core_mask {
            let mask = CString::new(mask.as_str()).expect("validated: no NUL");
            opts.core_mask = mask.as_ptr();
            keep.push(mask);
        }
        if let Some(mb) = self.mem_size_mb {
            opts.mem_size = mb as i32;
        }
        if let Some(id) = self.shm_id {
            opts.shm_id = id;
        }
        if let Some(core) = self.main_core {
            opts.main_core = core;
        }
        opts.no_pci = self.no_pci;
        opts.no_huge = self.no_huge;
        Ok((opts, keep))
    }

    /// Initialises the environment only (no threads, no subsystems): for
    /// programs that use the NVMe driver directly or start their own
    /// subsystems. Most programs want [`SpdkRuntime`](crate::SpdkRuntime).
    pub fn build(self) -> Result<SpdkEnv> {
        let (opts, args) = self.to_env_opts()?;
        claim_init()?;
        self.start_logging();
        crate::thread::want_interrupt_mode(self.interrupt_mode);
        // SAFETY: opts is initialised by spdk_env_opts_init and its strings
        // (in `args`) outlive the environment via the token.
        let rc = unsafe { sys::spdk_env_init(&opts) };
        match finish_init(EnvOwner::Env, args, rc == 0) {
            Some(token) => Ok(SpdkEnv { _token: token }),
            None => Err(env_init_error(rc, &self)),
        }
    }
}

pub(crate) fn env_init_error(rc: i32, b: &SpdkEnvBuilder) -> Error {
    let hint = if b.no_huge {
        "check that mem_size_mb fits in free memory and that the core mask names existing cores"
    } else {
        "hugepages may be missing (run SPDK's scripts/setup.sh as root, or use no_huge(true) with \
         mem_size_mb), or the core mask names cores that do not exist"
    };
    Error::EnvInit {
        errno: Errno::from_rc(rc),
        hint: hint.into(),
    }
}

/// The initialised environment. Keep it for the life of the program: it can
/// be created once per process.
#[derive(Debug)]
pub struct SpdkEnv {
    _token: Arc<EnvToken>,
}

impl SpdkEnv {
    /// Options with SPDK's defaults.
    pub fn builder() -> SpdkEnvBuilder {
        SpdkEnvBuilder::default()
    }

    /// Number of cores the environment runs on.
    pub fn core_count(&self) -> u32 {
        // SAFETY: the environment is initialised (self holds it).
        unsafe { sys::spdk_env_get_core_count() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_huge_needs_memory_size_and_disables_pci() {
        let b = SpdkEnv::builder().no_huge(true);
        assert!(b.no_pci);
        assert!(
            matches!(b.validate(), Err(Error::InvalidArgument(m)) if m.contains("mem_size_mb"))
        );
        assert!(b.mem_size_mb(64).validate().is_ok());
    }

    #[test]
    fn names_with_nul_are_rejected_before_spdk_sees_them() {
        let err = SpdkEnv::builder().name("a\0b").validate().unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)));
        let err = SpdkEnv::builder().core_mask("").validate().unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)));
    }
}
