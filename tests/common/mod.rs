//! Shared by the SPDK integration test binaries: one SPDK runtime per
//! process, running on its own OS thread, plus raw-I/O helpers that check
//! the foundation against SPDK itself.
#![allow(dead_code)]

use spdk_ring::{DmaBuf, Error, IoChannel, JsonConfig, LogLevel, SpdkRuntime, SpdkThread};
use std::cell::Cell;
use std::ffi::c_void;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

pub const MALLOC_BLOCKS: u64 = 8192;
pub const MALLOC_BLOCK_SIZE: u32 = 512;
pub const NULL_BLOCKS: u64 = 1 << 20;
pub const NULL_BLOCK_SIZE: u32 = 4096;
pub const WAIT: Duration = Duration::from_secs(20);

enum Request {
    LoadConfig(String, Sender<Result<(), Error>>),
    Shutdown,
}

/// The process-wide SPDK runtime, started on first use on a dedicated
/// "spdk-app" OS thread that polls it for the rest of the process.
pub struct Fixture {
    requests: Mutex<Sender<Request>>,
    app_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

static FIXTURE: OnceLock<Fixture> = OnceLock::new();

/// Whether the runtime starts in SPDK's interrupt mode (set before the
/// first use, by a binary whose tests all want it: the mode is per process).
static INTERRUPT_MODE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Starts the runtime in interrupt mode: call before the first fixture use.
pub fn use_interrupt_mode() {
    INTERRUPT_MODE.store(true, std::sync::atomic::Ordering::Relaxed);
}

pub fn base_config() -> JsonConfig {
    JsonConfig::new()
        .malloc_bdev("Malloc0", MALLOC_BLOCKS, MALLOC_BLOCK_SIZE)
        .null_bdev("Null0", NULL_BLOCKS, NULL_BLOCK_SIZE)
}

/// The runtime with [`base_config`].
pub fn fixture() -> &'static Fixture {
    fixture_with(base_config)
}

/// The runtime, started with `config()` if this is the first use in the
/// process (a test binary that needs other start-up options calls this
/// before anything else).
pub fn fixture_with(config: fn() -> JsonConfig) -> &'static Fixture {
    fixture_on_cores(config, None)
}

/// [`fixture_with`], the environment on the cores of `core_mask` (SPDK's
/// default, one core, when `None`).
pub fn fixture_on_cores(
    config: fn() -> JsonConfig,
    core_mask: Option<&'static str>,
) -> &'static Fixture {
    FIXTURE.get_or_init(|| {
        let json = config().to_json();
        let (req_tx, req_rx) = channel::<Request>();
        let (ready_tx, ready_rx) = channel::<Result<(), Error>>();
        let app = std::thread::Builder::new()
            .name("spdk-app".into())
            .spawn(move || app_thread(json, core_mask, req_rx, ready_tx))
            .expect("spawn spdk-app thread");
        ready_rx
            .recv()
            .expect("spdk-app thread reports start-up")
            .expect("SPDK runtime starts in no-huge mode");
        // SAFETY: registers a plain function; it runs once at process exit.
        unsafe { libc::atexit(shut_down_at_exit) };
        Fixture {
            requests: Mutex::new(req_tx),
            app_thread: Mutex::new(Some(app)),
        }
    })
}

/// libtest exits the process when the tests are done; SPDK must be shut
/// down (by dropping the runtime on its thread) before C destructors run.
extern "C" fn shut_down_at_exit() {
    let Some(fx) = FIXTURE.get() else { return };
    let Ok(requests) = fx.requests.lock() else {
        return;
    };
    if requests.send(Request::Shutdown).is_ok() {
        if let Some(app) = fx.app_thread.lock().ok().and_then(|mut a| a.take()) {
            let _ = app.join();
        }
    }
}

fn app_thread(
    json: String,
    core_mask: Option<&'static str>,
    requests: Receiver<Request>,
    ready: Sender<Result<(), Error>>,
) {
    let mut builder = SpdkRuntime::builder();
    if let Some(mask) = core_mask {
        builder = builder.core_mask(mask);
    }
    let rt = match builder
        .name("spdk_ring_test")
        .no_huge(true)
        .mem_size_mb(1024)
        .log_level(LogLevel::Error)
        .interrupt_mode(INTERRUPT_MODE.load(std::sync::atomic::Ordering::Relaxed))
        .json_config(json)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    // One configuration load at a time: each runs its own temporary RPC server.
    let mut waiting = std::collections::VecDeque::new();
    let mut running = None;
    loop {
        rt.poll();
        waiting.extend(requests.try_iter());
        if let Some((load, reply)) = &running {
            let load: &spdk_ring::ConfigLoad = load;
            if let Some(result) = load.result() {
                let _ = (reply as &Sender<Result<(), Error>>).send(result);
                running = None;
            }
        }
        if running.is_none() {
            match waiting.pop_front() {
                Some(Request::Shutdown) => return,
                Some(Request::LoadConfig(json, reply)) => match rt.start_load_config(&json) {
                    Ok(load) => running = Some((load, reply)),
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                },
                None => idle_wait(&rt),
            }
        }
    }
}

/// Between polls of the app thread: in interrupt mode it sleeps on the
/// thread's fd (so an idle test process stays idle), checking requests
/// every 5 ms; in poll mode it naps briefly.
fn idle_wait(rt: &SpdkRuntime) {
    match rt.thread().interrupt_fd() {
        Some(fd) => {
            use std::os::fd::AsRawFd;
            let mut pfd = libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd on the thread's open fd.
            unsafe { libc::poll(&mut pfd, 1, 5) };
        }
        None => std::thread::sleep(Duration::from_micros(50)),
    }
}

impl Fixture {
    /// Applies runtime RPC methods on the app thread; the receiver gets
    /// the outcome (which may wait on work of other threads).
    pub fn load_config(&self, json: String) -> Receiver<Result<(), Error>> {
        let (tx, rx) = channel();
        self.requests
            .lock()
            .unwrap()
            .send(Request::LoadConfig(json, tx))
            .expect("spdk-app thread is running");
        rx
    }

    pub fn bdev_method(&self, method: &str, params: String) -> Receiver<Result<(), Error>> {
        self.load_config(JsonConfig::new().method(method, params).to_json())
    }
}

/// Outcome of one raw bdev I/O, set by its callback.
type IoSlot = Cell<Option<bool>>;

unsafe extern "C" fn raw_io_done(
    io: *mut spdk_ring::sys::spdk_bdev_io,
    success: bool,
    ctx: *mut c_void,
) {
    // SAFETY: ctx is the IoSlot that raw_io keeps alive until this runs;
    // the bdev_io is ours to free.
    unsafe {
        (*(ctx as *const IoSlot)).set(Some(success));
        spdk_ring::sys::spdk_bdev_free_io(io);
    }
}

/// One blocking read or write straight through SPDK (no ring): the
/// submit return code, then whether the I/O succeeded.
pub fn raw_io(
    thread: &SpdkThread,
    ch: &IoChannel,
    write: bool,
    buf: &mut DmaBuf,
    offset_blocks: u64,
    num_blocks: u64,
) -> Result<bool, i32> {
    let slot: IoSlot = Cell::new(None);
    let ctx = &slot as *const IoSlot as *mut c_void;
    // SAFETY: desc and channel are open on this thread; buf is large enough
    // (callers pass num_blocks * block size <= buf.len()) and stays borrowed
    // until the callback has run (we poll for it below, bounded: on time-out
    // we abort the process rather than let SPDK write into a freed buffer).
    let rc = unsafe {
        let f = if write {
            spdk_ring::sys::spdk_bdev_write_blocks
        } else {
            spdk_ring::sys::spdk_bdev_read_blocks
        };
        f(
            ch.desc().as_ptr(),
            ch.as_ptr(),
            buf.as_mut_ptr().cast(),
            offset_blocks,
            num_blocks,
            Some(raw_io_done),
            ctx,
        )
    };
    if rc != 0 {
        return Err(rc);
    }
    if !thread.poll_until(WAIT, || slot.get().is_some()) {
        eprintln!("raw I/O did not complete within {WAIT:?}");
        std::process::abort();
    }
    Ok(slot.get().unwrap())
}

/// A DMA buffer of `len` bytes holding a pattern unique to (seed, byte
/// index), so a read back proves which write it came from.
pub fn pattern(len: usize, seed: u64) -> DmaBuf {
    let mut buf = DmaBuf::alloc(len, 0).unwrap();
    for (i, b) in buf.iter_mut().enumerate() {
        *b = ((i as u64)
            .wrapping_mul(31)
            .wrapping_add(seed.wrapping_mul(131))
            % 251) as u8;
    }
    buf
}
