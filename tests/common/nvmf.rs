//! SPDK's own `nvmf_tgt` as a child process serving NVMe/TCP on 127.0.0.1:
//! one shared per test process ([`target`]), or one per test
//! ([`PrivateTarget`]) that the test may kill and restart. Included by the
//! test binaries that need an NVMe controller.
#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

pub const NQN: &str = "nqn.2016-06.io.spdk:spdk-ring-test";
/// Namespace 1: a fast malloc namespace of this many 512-byte blocks.
/// Namespace 2: 1024 blocks behind a delay bdev (2 s per I/O), for
/// aborts.
pub const NAMESPACE_BLOCKS: u64 = 32768;

pub struct NvmfTarget {
    child: Mutex<Option<Child>>,
    pub port: u16,
    #[allow(dead_code)]
    log: PathBuf,
}

static TARGET: OnceLock<NvmfTarget> = OnceLock::new();

fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("SPDK_NVMF_TGT") {
        return PathBuf::from(path);
    }
    let on_path = std::env::var_os("PATH").map(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("nvmf_tgt"))
            .find(|p| p.is_file())
    });
    on_path
        .flatten()
        .unwrap_or_else(|| PathBuf::from("/usr/local/bin/nvmf_tgt"))
}

fn config(port: u16) -> String {
    format!(
        r#"{{"subsystems": [
  {{"subsystem": "bdev", "config": [
{{"method": "bdev_malloc_create",
  "params": {{"name": "TgtMalloc0", "num_blocks": {NAMESPACE_BLOCKS}, "block_size": 512}}}},
{{"method": "bdev_malloc_create",
  "params": {{"name": "TgtMalloc1", "num_blocks": 1024, "block_size": 512}}}},
{{"method": "bdev_delay_create", "params": {{"name": "TgtSlow", "base_bdev_name": "TgtMalloc1",
  "avg_read_latency": 2000000, "p99_read_latency": 2000000,
  "avg_write_latency": 2000000, "p99_write_latency": 2000000}}}}]}},
  {{"subsystem": "nvmf", "config": [
{{"method": "nvmf_create_transport", "params": {{"trtype": "TCP"}}}},
{{"method": "nvmf_create_subsystem", "params": {{"nqn": "{NQN}", "allow_any_host": true,
  "serial_number": "SPDKRING0001", "model_number": "spdk-ring test"}}}},
{{"method": "nvmf_subsystem_add_ns", "params": {{"nqn": "{NQN}", "namespace": {{"bdev_name": "TgtMalloc0", "nsid": 1}}}}}},
{{"method": "nvmf_subsystem_add_ns", "params": {{"nqn": "{NQN}", "namespace": {{"bdev_name": "TgtSlow", "nsid": 2}}}}}},
{{"method": "nvmf_subsystem_add_listener", "params": {{"nqn": "{NQN}", "listen_address":
  {{"trtype": "TCP", "adrfam": "IPv4", "traddr": "127.0.0.1", "trsvcid": "{port}"}}}}}}
  ]}}
]}}"#
    )
}

/// `nvmf_tgt` serving [`NQN`] on `port`, with its log in `dir`.
fn command(port: u16, dir: &std::path::Path) -> Command {
    std::fs::create_dir_all(dir).unwrap();
    let config_path = dir.join("nvmf_tgt.json");
    std::fs::write(&config_path, config(port)).unwrap();
    let mut command = Command::new(binary());
    command
        .args([
            "--no-huge",
            "-s",
            "512",
            "-m",
            "0x2",
            "--disable-cpumask-locks",
            "--json",
        ])
        .arg(&config_path)
        .arg("-r")
        .arg(dir.join("rpc.sock"))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.join("nvmf_tgt.log")).unwrap())
        .stderr(Stdio::inherit());
    // SAFETY: prctl is async-signal-safe, as pre_exec requires: the
    // target dies with its parent even if this process is killed.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    command
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until `child` listens on `port` (or panics with its log).
fn wait_listening(child: &mut Child, port: u16, dir: &std::path::Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(dir.join("nvmf_tgt.log")).unwrap_or_default();
            panic!("nvmf_tgt exited ({status}); log: {log}");
        }
        assert!(
            Instant::now() < deadline,
            "nvmf_tgt did not listen on port {port} within 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts the shared target once per process and waits until it listens.
pub fn target() -> &'static NvmfTarget {
    TARGET.get_or_init(|| {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("spdk-ring-nvmf-{}", std::process::id()));
        let mut command = command(port, &dir);
        // PR_SET_PDEATHSIG follows the spawning *thread*, so spawn from
        // one that lives as long as the process, not a test's thread.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("nvmf-target-owner".into())
            .spawn(move || {
                tx.send(command.spawn()).unwrap();
                loop {
                    std::thread::park();
                }
            })
            .unwrap();
        let mut child = rx.recv().unwrap().unwrap_or_else(|e| {
            panic!(
                "cannot start {} (set SPDK_NVMF_TGT): {e}",
                binary().display()
            )
        });
        // SAFETY: registers a plain function; it runs once at process exit.
        unsafe { libc::atexit(kill_at_exit) };
        wait_listening(&mut child, port, &dir);
        NvmfTarget {
            child: Mutex::new(Some(child)),
            port,
            log: dir.join("nvmf_tgt.log"),
        }
    })
}

/// A target of one test's own, which the test may kill and restart;
/// killed when dropped.
pub struct PrivateTarget {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
}

impl PrivateTarget {
    pub fn start() -> PrivateTarget {
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("spdk-ring-nvmf-{}-{port}", std::process::id()));
        let mut t = PrivateTarget {
            child: None,
            port,
            dir,
        };
        t.restart();
        t
    }

    /// Kills the target outright (no shutdown: the host sees the
    /// connection drop).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        self.kill();
        let mut child = command(self.port, &self.dir)
            .spawn()
            .expect("start nvmf_tgt");
        wait_listening(&mut child, self.port, &self.dir);
        self.child = Some(child);
    }
}

impl Drop for PrivateTarget {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

extern "C" fn kill_at_exit() {
    if let Some(t) = TARGET.get() {
        if let Some(mut child) = t.child.lock().ok().and_then(|mut c| c.take()) {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Its config, log and RPC socket.
        if let Some(dir) = t.log.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
