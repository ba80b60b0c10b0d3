//! Embedded start-up: SPDK inside an ordinary `main`, driven by polling.
//!
//! [`SpdkRuntime`] brings up the environment, the thread library, an SPDK
//! thread on the *calling* OS thread (the app thread), every subsystem, and
//! the bdevs of a JSON configuration, then hands control back. The caller
//! owns the loop: it polls the runtime (or a ring on its thread) whenever it
//! likes. This is the model for database hot loops and foreign event loops.
//!
//! ```no_run
//! use spdk_ring::{Bdev, SpdkRuntime, JsonConfig};
//! let config = JsonConfig::new().malloc_bdev("Malloc0", 16384, 512);
//! let rt = SpdkRuntime::builder()
//!     .name("example")
//!     .no_huge(true)
//!     .mem_size_mb(256)
//!     .json_config(config.to_json())
//!     .build()?;
//! let bdev = Bdev::lookup("Malloc0")?;
//! assert_eq!(bdev.block_size(), 512);
//! rt.poll();
//! # Ok::<(), spdk_ring::Error>(())
//! ```

use crate::env::{claim_init, env_init_error, finish_init, EnvOwner, EnvToken, SpdkEnvBuilder};
use crate::error::{Errno, Error, Result};
use crate::thread::{ensure_thread_lib, finish_thread_lib, SpdkThread};
use spdk_ring_sys as sys;
use std::cell::Cell;
use std::ffi::c_void;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// How long start-up, configuration and shutdown steps may take before
/// they fail with [`Error::Timeout`] instead of hanging.
pub const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// A one-shot result slot shared with an SPDK callback. The callback owns
/// one reference, so the slot outlives the wait even if the wait times out.
type RcSlot = Rc<Cell<Option<i32>>>;

unsafe extern "C" fn rc_slot_done(rc: i32, ctx: *mut c_void) {
    // SAFETY: ctx is the reference leaked by `slot_ctx`, delivered once,
    // on the thread that created it.
    let slot = unsafe { Rc::from_raw(ctx as *const Cell<Option<i32>>) };
    slot.set(Some(rc));
}

unsafe extern "C" fn unit_slot_done(ctx: *mut c_void) {
    // SAFETY: as in rc_slot_done.
    unsafe { rc_slot_done(0, ctx) }
}

fn slot_ctx(slot: &RcSlot) -> *mut c_void {
    Rc::into_raw(slot.clone()) as *mut c_void
}

/// Polls `thread` until the callback fills `slot`.
fn wait_rc(
    thread: &SpdkThread,
    slot: &RcSlot,
    what: &'static str,
    timeout: Duration,
) -> Result<i32> {
    if thread.poll_until(timeout, || slot.get().is_some()) {
        Ok(slot.get().expect("checked"))
    } else {
        Err(Error::Timeout {
            what,
            after: timeout,
        })
    }
}

/// Where the JSON configuration comes from.
#[derive(Debug, Clone)]
enum ConfigSource {
    Text(String),
    File(PathBuf),
}

/// Options for [`SpdkRuntime`]. Environment options are SPDK's defaults
/// unless set; see [`SpdkEnvBuilder`].
#[derive(Debug, Clone)]
pub struct SpdkRuntimeBuilder {
    env: SpdkEnvBuilder,
    config: Option<ConfigSource>,
    thread_name: String,
    stop_on_config_error: bool,
    step_timeout: Duration,
}

impl Default for SpdkRuntimeBuilder {
    fn default() -> Self {
        SpdkRuntimeBuilder {
            env: SpdkEnvBuilder::default(),
            config: None,
            thread_name: "app".into(),
            stop_on_config_error: true,
            step_timeout: DEFAULT_STEP_TIMEOUT,
        }
    }
}

impl SpdkRuntimeBuilder {
    /// Replaces all environment options at once.
    pub fn env(mut self, env: SpdkEnvBuilder) -> Self {
        self.env = env;
        self
    }
    crate::env::env_setters!(.env);

    /// JSON configuration text, in SPDK's `{"subsystems": [...]}` format.
    pub fn json_config(mut self, json: impl Into<String>) -> Self {
        self.config = Some(ConfigSource::Text(json.into()));
        self
    }
    /// JSON configuration file, as `spdk_tgt --json` takes.
    pub fn json_config_file(mut self, path: impl AsRef<Path>) -> Self {
        self.config = Some(ConfigSource::File(path.as_ref().to_path_buf()));
        self
    }
    /// Keep starting when a configuration entry fails (default: stop).
    pub fn ignore_config_errors(mut self, yes: bool) -> Self {
        self.stop_on_config_error = !yes;
        self
    }
    /// Name of the SPDK thread created on the calling OS thread.
    pub fn thread_name(mut self, name: impl Into<String>) -> Self {
        self.thread_name = name.into();
        self
    }
    /// Limit for each start-up and shutdown step.
    pub fn step_timeout(mut self, timeout: Duration) -> Self {
        self.step_timeout = timeout;
        self
    }

    /// Starts SPDK on the calling OS thread and returns once every
    /// subsystem is up and the configuration is applied.
    pub fn build(self) -> Result<SpdkRuntime> {
        let json =
            match &self.config {
                None => None,
                Some(ConfigSource::Text(text)) => Some(text.clone()),
                Some(ConfigSource::File(path)) => Some(std::fs::read_to_string(path).map_err(
                    |e| Error::ConfigFile {
                        path: path.display().to_string(),
                        message: e.to_string(),
                    },
                )?),
            };
        if json.as_deref().is_some_and(|j| j.trim().is_empty()) {
            return Err(Error::InvalidArgument("JSON configuration is empty".into()));
        }
        let (opts, args) = self.env.to_env_opts()?;
        claim_init()?;
        self.env.start_logging();
        crate::thread::want_interrupt_mode(self.env.interrupt_mode);
        // SAFETY: opts comes from spdk_env_opts_init; its strings live in
        // `args`, which the env token keeps for the environment's lifetime.
        let rc = unsafe { sys::spdk_env_init(&opts) };
        let env = finish_init(EnvOwner::Env, args, rc == 0)
            .ok_or_else(|| env_init_error(rc, &self.env))?;
        ensure_thread_lib()?;
        let thread = SpdkThread::attach(&self.thread_name)?;
        let mut rt = SpdkRuntime {
            thread: Some(thread),
            subsystems_up: false,
            step_timeout: self.step_timeout,
            _env: env,
        };
        rt.start_subsystems(json.as_deref(), self.stop_on_config_error)?;
        Ok(rt)
    }
}

/// SPDK running embedded on the calling OS thread. See the module docs.
///
/// Dropping it shuts the subsystems down (polling until they are), exits
/// the app thread and finishes the thread library. Drop descriptors, rings
/// and other SPDK threads first. The environment itself is finished when
/// the last [`DmaBuf`](crate::DmaBuf) is gone too; it cannot be started
/// again in the same process.
pub struct SpdkRuntime {
    thread: Option<SpdkThread>,
    subsystems_up: bool,
    step_timeout: Duration,
    _env: Arc<EnvToken>,
}

impl SpdkRuntime {
    pub fn builder() -> SpdkRuntimeBuilder {
        SpdkRuntimeBuilder::default()
    }

    /// The app thread (the calling OS thread's SPDK thread).
    pub fn thread(&self) -> &SpdkThread {
        self.thread.as_ref().expect("present until drop")
    }

    /// Runs the app thread's messages and pollers once.
    pub fn poll(&self) -> i32 {
        self.thread().poll()
    }

    fn start_subsystems(&mut self, json: Option<&str>, stop_on_error: bool) -> Result<()> {
        let timeout = self.step_timeout;
        // Startup-state RPCs (such as bdev_set_options) apply before init,
        // runtime-state ones (bdev creation) after, as spdk_app_start does.
        if let Some(json) = json {
            self.apply_config(json, stop_on_error, "JSON config (startup methods)")?;
        }
        let slot = RcSlot::default();
        // SAFETY: we are on the app thread; the callback gets its own
        // reference to the slot.
        unsafe { sys::spdk_subsystem_init(Some(rc_slot_done), slot_ctx(&slot)) };
        let rc = wait_rc(self.thread(), &slot, "subsystem initialisation", timeout)?;
        if rc != 0 {
            return Err(Error::Subsystem {
                stage: "subsystem initialisation",
                errno: Errno::from_rc(rc),
            });
        }
        self.subsystems_up = true;
        // SAFETY: plain setter; subsystems are up.
        unsafe { sys::spdk_rpc_set_state(sys::SPDK_RPC_RUNTIME) };
        if let Some(json) = json {
            self.apply_config(json, stop_on_error, "JSON config (runtime methods)")?;
        }
        Ok(())
    }

    fn apply_config(&self, json: &str, stop_on_error: bool, stage: &'static str) -> Result<()> {
        let pending = self.start_config(json, stop_on_error)?;
        let rc = wait_rc(self.thread(), &pending.slot, stage, self.step_timeout)?;
        if rc != 0 {
            return Err(Error::Subsystem {
                stage,
                errno: Errno::from_rc(rc),
            });
        }
        Ok(())
    }

    fn start_config(&self, json: &str, stop_on_error: bool) -> Result<ConfigLoad> {
        if json.trim().is_empty() {
            return Err(Error::InvalidArgument("JSON configuration is empty".into()));
        }
        let slot = RcSlot::default();
        let mut bytes = json.as_bytes().to_vec();
        // SAFETY: on the app thread; SPDK copies the JSON before returning;
        // the callback receives its own slot reference.
        unsafe {
            sys::spdk_subsystem_load_config(
                bytes.as_mut_ptr().cast(),
                bytes.len() as isize,
                Some(rc_slot_done),
                slot_ctx(&slot),
                stop_on_error,
            )
        };
        Ok(ConfigLoad { slot })
    }

    /// Applies runtime JSON-RPC methods (for example `bdev_malloc_create`
    /// or `bdev_malloc_delete`) in SPDK's configuration format, polling
    /// until they are done.
    pub fn load_config(&self, json: &str) -> Result<()> {
        self.apply_config(json, true, "JSON config")
    }

    /// Starts applying a configuration without waiting; poll the runtime
    /// (or any loop on this thread) and check [`ConfigLoad::result`].
    /// Use this when completion depends on other work on this thread, such
    /// as a bdev delete that waits for a descriptor to close.
    pub fn start_load_config(&self, json: &str) -> Result<ConfigLoad> {
        self.start_config(json, true)
    }
}

/// A configuration being applied by [`SpdkRuntime::start_load_config`].
pub struct ConfigLoad {
    slot: RcSlot,
}

impl ConfigLoad {
    /// `None` while running; then the outcome.
    pub fn result(&self) -> Option<Result<()>> {
        self.slot.get().map(|rc| {
            if rc == 0 {
                Ok(())
            } else {
                Err(Error::Subsystem {
                    stage: "JSON config",
                    errno: Errno::from_rc(rc),
                })
            }
        })
    }
}

impl Drop for SpdkRuntime {
    fn drop(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        if self.subsystems_up {
            let slot = RcSlot::default();
            // SAFETY: on the app thread that initialised the subsystems.
            unsafe { sys::spdk_subsystem_fini(Some(unit_slot_done), slot_ctx(&slot)) };
            if let Err(e) = wait_rc(&thread, &slot, "subsystem shutdown", self.step_timeout) {
                eprintln!(
                    "spdk-ring: {e}; a descriptor, ring or SPDK thread probably still exists. \
                     Leaving SPDK running."
                );
                std::mem::forget(thread);
                // SPDK still runs: the environment must never be finished.
                std::mem::forget(self._env.clone());
                return;
            }
        }
        drop(thread);
        finish_thread_lib();
    }
}
