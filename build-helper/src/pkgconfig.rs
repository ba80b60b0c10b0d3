//! The two things discovery needs from the host, behind a trait so tests can
//! replay recorded answers: running pkg-config and looking at files.

use std::path::{Path, PathBuf};
use std::process::Command;

/// What discovery asks of the machine it runs on.
pub trait PkgConfig {
    /// Runs pkg-config with `args`; `extra_dir` is searched before
    /// `PKG_CONFIG_PATH` and the defaults. Returns stdout, or stderr on failure.
    fn query(&self, extra_dir: Option<&Path>, args: &[&str]) -> Result<String, String>;
    fn file_exists(&self, path: &Path) -> bool;
    fn read_file(&self, path: &Path) -> Option<String>;
}

/// The real host: the `pkg-config` binary (or `$PKG_CONFIG`) and the file system.
pub struct SystemPkgConfig;

impl PkgConfig for SystemPkgConfig {
    fn query(&self, extra_dir: Option<&Path>, args: &[&str]) -> Result<String, String> {
        let program = std::env::var("PKG_CONFIG").unwrap_or_else(|_| "pkg-config".into());
        let mut cmd = Command::new(&program);
        cmd.args(args);
        if let Some(dir) = extra_dir {
            let mut paths: Vec<PathBuf> = vec![dir.to_path_buf()];
            if let Some(existing) = std::env::var_os("PKG_CONFIG_PATH") {
                paths.extend(std::env::split_paths(&existing));
            }
            let joined = std::env::join_paths(paths).map_err(|e| e.to_string())?;
            cmd.env("PKG_CONFIG_PATH", joined);
        }
        let out = cmd.output().map_err(|e| {
            format!("could not run `{program}`: {e} (install pkg-config, or set PKG_CONFIG)")
        })?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    fn file_exists(&self, path: &Path) -> bool {
        path.is_file()
    }

    fn read_file(&self, path: &Path) -> Option<String> {
        std::fs::read_to_string(path).ok()
    }
}
