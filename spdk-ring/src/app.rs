//! The classic SPDK application framework (`spdk_app_start`), for programs
//! that hand their main thread to SPDK's reactors. Programs that keep their
//! own loop use [`SpdkRuntime`](crate::SpdkRuntime) instead.
//!
//! ```no_run
//! use spdk_ring::{Bdev, SpdkApp, JsonConfig};
//! SpdkApp::builder()
//!     .name("app")
//!     .no_huge(true)
//!     .mem_size_mb(256)
//!     .json_config(JsonConfig::new().null_bdev("Null0", 1024, 512).to_json())
//!     .run(|_thread| {
//!         let bdev = Bdev::lookup("Null0").expect("configured above");
//!         println!("{} has {} blocks", bdev.name(), bdev.num_blocks());
//!         SpdkApp::stop(0);
//!     })?;
//! # Ok::<(), spdk_ring::Error>(())
//! ```

use crate::env::{claim_init, finish_init, EnvOwner, SpdkEnvBuilder};
use crate::error::{Errno, Error, Result};
use crate::thread::{thread_lib_is_framework, SpdkThread};
use spdk_ring_sys as sys;
use std::any::Any;
use std::ffi::{c_void, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// Options for [`SpdkApp`]; SPDK's defaults unless set, except that no
/// JSON-RPC server is started unless [`rpc_addr`](Self::rpc_addr) is given.
/// The environment options are those of [`SpdkEnvBuilder`]; the core mask is
/// the reactor mask.
#[derive(Debug, Clone, Default)]
pub struct SpdkAppBuilder {
    env: SpdkEnvBuilder,
    json_config_file: Option<PathBuf>,
    json_config: Option<String>,
    rpc_addr: Option<String>,
}

impl SpdkAppBuilder {
    crate::env::env_setters!(.env);

    /// JSON configuration file.
    pub fn json_config_file(mut self, path: impl AsRef<Path>) -> Self {
        self.json_config_file = Some(path.as_ref().to_path_buf());
        self
    }
    /// JSON configuration text (used when no file is given).
    pub fn json_config(mut self, json: impl Into<String>) -> Self {
        self.json_config = Some(json.into());
        self
    }
    /// Start SPDK's JSON-RPC server on this UNIX socket path or `ip:port`.
    pub fn rpc_addr(mut self, addr: impl Into<String>) -> Self {
        self.rpc_addr = Some(addr.into());
        self
    }

    /// Starts the framework on the calling thread and runs `start` on the
    /// app reactor once the subsystems and configuration are up. Returns
    /// after someone calls [`SpdkApp::stop`] and the framework has shut
    /// down. A panic in `start` stops the app and is resumed here.
    pub fn run<F>(self, start: F) -> Result<()>
    where
        F: FnOnce(&SpdkThread) + 'static,
    {
        let env = &self.env;
        env.validate()?;
        let mut keep: Vec<CString> = Vec::new();
        let mut cstr = |s: &str, what: &str| -> Result<*const libc::c_char> {
            let c = CString::new(s)
                .map_err(|_| Error::InvalidArgument(format!("{what} contains NUL")))?;
            let p = c.as_ptr();
            keep.push(c);
            Ok(p)
        };
        if env.interrupt_mode {
            // SPDK's reactors would sleep on their threads' fds while a ring
            // on the app thread waits for `poll`: a hang we have seen and
            // not yet solved. Refused rather than left to hang.
            return Err(Error::InvalidArgument(
                "interrupt mode is not supported with SpdkApp yet; use SpdkRuntime or SpdkEnv \
                 with interrupt_mode(true)"
                    .into(),
            ));
        }
        let mut opts = sys::spdk_app_opts::default();
        // SAFETY: opts is writable and opts_size is its true size.
        unsafe { sys::spdk_app_opts_init(&mut opts, std::mem::size_of::<sys::spdk_app_opts>()) };
        opts.name = cstr(&env.name, "name")?;
        opts.rpc_addr = match &self.rpc_addr {
            Some(addr) => cstr(addr, "rpc_addr")?,
            None => std::ptr::null(),
        };
        if let Some(mask) = &env.core_mask {
            opts.reactor_mask = cstr(mask, "core mask")?;
        }
        let mut json_bytes = Vec::new();
        if let Some(path) = &self.json_config_file {
            if !path.is_file() {
                return Err(Error::ConfigFile {
                    path: path.display().to_string(),
                    message: "no such file".into(),
                });
            }
            opts.json_config_file = cstr(&path.to_string_lossy(), "config path")?;
        } else if let Some(json) = &self.json_config {
            json_bytes = json.as_bytes().to_vec();
            opts.json_data = json_bytes.as_mut_ptr().cast();
            opts.json_data_size = json_bytes.len();
        }
        if let Some(core) = env.main_core {
            opts.main_core = core;
        }
        if let Some(mb) = env.mem_size_mb {
            opts.mem_size = mb as i32;
        }
        if let Some(id) = env.shm_id {
            opts.shm_id = id;
        }
        opts.no_pci = env.no_pci;
        opts.no_huge = env.no_huge;
        opts.print_level = env.log_level.to_sys();

        claim_init()?;
        // spdk_app_start opens its log again with opts.log, after the
        // environment is up; installing it now routes start-up lines too.
        opts.log = env.start_logging();
        let env = finish_init(EnvOwner::App, keep, true).expect("ok=true yields a token");
        let mut state = StartState::<F> {
            start: Some(start),
            panic: None,
        };
        thread_lib_is_framework(true);
        // SAFETY: opts and its strings (kept by the env token) and
        // json_bytes outlive the call; `state` outlives it too and the
        // trampoline matches F.
        let rc = unsafe {
            sys::spdk_app_start(
                &mut opts,
                Some(start_trampoline::<F>),
                (&mut state as *mut StartState<F>).cast(),
            )
        };
        drop(json_bytes);
        thread_lib_is_framework(false);
        // The last env holder runs spdk_app_fini (DmaBufs may still hold it).
        drop(env);
        if let Some(panic) = state.panic {
            std::panic::resume_unwind(panic);
        }
        if rc != 0 {
            return Err(Error::Subsystem {
                stage: "spdk_app_start",
                errno: Errno::from_rc(rc),
            });
        }
        Ok(())
    }
}

struct StartState<F> {
    start: Option<F>,
    panic: Option<Box<dyn Any + Send>>,
}

unsafe extern "C" fn start_trampoline<F: FnOnce(&SpdkThread)>(ctx: *mut c_void) {
    // SAFETY: ctx is the StartState<F> that run() keeps alive across
    // spdk_app_start; the start callback runs once, on this thread.
    let state = unsafe { &mut *(ctx as *mut StartState<F>) };
    let Some(start) = state.start.take() else {
        return;
    };
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let thread =
            SpdkThread::adopt_framework_thread().expect("the app reactor has an SPDK thread");
        start(&thread);
    }));
    if let Err(panic) = outcome {
        state.panic = Some(panic);
        SpdkApp::stop(-libc::ECANCELED);
    }
}

/// Handle on the framework started by [`SpdkAppBuilder::run`].
pub struct SpdkApp;

impl SpdkApp {
    pub fn builder() -> SpdkAppBuilder {
        SpdkAppBuilder::default()
    }

    /// Asks the framework to shut down; `run` then returns (an error if
    /// `rc` is non-zero). Call from an SPDK thread of the app.
    pub fn stop(rc: i32) {
        // SAFETY: spdk_app_stop only queues the shutdown.
        unsafe { sys::spdk_app_stop(rc) }
    }
}
