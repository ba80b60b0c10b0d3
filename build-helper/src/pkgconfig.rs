//! The two things discovery needs from the host, behind a trait so tests can
//! replay recorded answers: running pkg-config and looking at files.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What discovery asks of the machine it runs on.
pub trait PkgConfig {
    /// Runs pkg-config with `args`; `extra_dir` is searched before
    /// `PKG_CONFIG_PATH` and the defaults. Returns stdout, or stderr on failure.
    fn query(&self, extra_dir: Option<&Path>, args: &[&str]) -> Result<String, String>;
    fn file_exists(&self, path: &Path) -> bool;
    fn read_file(&self, path: &Path) -> Option<String>;
    /// Where pkg-config looks for `.pc` files.
    fn search_path(&self) -> SearchPath;
}

/// The directories pkg-config searches, in order, for messages and for
/// telling "not installed" from "installed but unusable".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SearchPath {
    /// Searched first: the directory `SPDK_DIR` led to.
    pub extra: Option<PathBuf>,
    /// `PKG_CONFIG_PATH`.
    pub env_path: Vec<PathBuf>,
    /// pkg-config's own directories: `PKG_CONFIG_LIBDIR` if set, else its
    /// built-in `pc_path`; empty if unknown.
    pub defaults: Vec<PathBuf>,
    pub defaults_from_libdir: bool,
}

impl SearchPath {
    /// The first searched directory that holds `file_name`, as a path.
    pub fn find(&self, file_name: &str, host: &dyn PkgConfig) -> Option<PathBuf> {
        self.extra
            .iter()
            .chain(&self.env_path)
            .chain(&self.defaults)
            .map(|dir| dir.join(file_name))
            .find(|path| host.file_exists(path))
    }
}

/// Splits a `:`-separated list such as `pkg-config --variable pc_path pkg-config` prints.
pub fn parse_dir_list(list: &str) -> Vec<PathBuf> {
    list.trim()
        .split(':')
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .collect()
}

impl fmt::Display for SearchPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let join = |dirs: &[PathBuf]| {
            dirs.iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(":")
        };
        if let Some(extra) = &self.extra {
            write!(f, "{}, then ", extra.display())?;
        }
        if self.env_path.is_empty() {
            f.write_str("PKG_CONFIG_PATH unset")?;
        } else {
            write!(f, "PKG_CONFIG_PATH={}", join(&self.env_path))?;
        }
        match (self.defaults_from_libdir, self.defaults.is_empty()) {
            (true, _) => write!(f, ", then PKG_CONFIG_LIBDIR={}", join(&self.defaults)),
            (false, true) => f.write_str(", then pkg-config's defaults (unknown)"),
            (false, false) => write!(f, ", then {}", join(&self.defaults)),
        }
    }
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

    fn search_path(&self) -> SearchPath {
        let split = |dirs: OsString| -> Vec<PathBuf> { std::env::split_paths(&dirs).collect() };
        let libdir = std::env::var_os("PKG_CONFIG_LIBDIR");
        let defaults_from_libdir = libdir.is_some();
        let defaults = match libdir {
            Some(dirs) => split(dirs),
            None => self
                .query(None, &["--variable", "pc_path", "pkg-config"])
                .map(|out| parse_dir_list(&out))
                .unwrap_or_default(),
        };
        SearchPath {
            extra: None,
            env_path: std::env::var_os("PKG_CONFIG_PATH")
                .map(split)
                .unwrap_or_default()
                .into_iter()
                .filter(|d| !d.as_os_str().is_empty())
                .collect(),
            defaults,
            defaults_from_libdir,
        }
    }
}

/// One line for pkg-config's complaint, however long: the `.pc` files it
/// could not find and what needed them, or its lines joined.
pub fn summarize_error(stderr: &str) -> String {
    let mut missing: Vec<(&str, &str)> = Vec::new();
    for line in stderr.lines() {
        // "Package 'spdk_util', required by 'spdk_event', not found"
        let Some(rest) = line.trim().strip_prefix("Package '") else {
            continue;
        };
        let Some((package, rest)) = rest.split_once("', required by '") else {
            continue;
        };
        let Some(by) = rest.strip_suffix("', not found") else {
            continue;
        };
        if !missing.iter().any(|(m, _)| *m == package) {
            missing.push((package, by));
        }
    }
    if missing.is_empty() {
        let lines: Vec<&str> = stderr
            .lines()
            .map(|l| l.trim().trim_end_matches('.'))
            .filter(|l| !l.is_empty())
            .collect();
        return if lines.is_empty() {
            "pkg-config gave no reason".into()
        } else {
            lines.join("; ")
        };
    }
    let each: Vec<String> = missing
        .iter()
        .map(|(package, by)| match *by {
            "virtual:world" => format!("{package}.pc"),
            by => format!("{package}.pc (required by {by}.pc)"),
        })
        .collect();
    format!("missing {}", each.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_wall_of_missing_requirements_is_one_short_line() {
        let wall = include_str!("../tests/fixtures/pkgconf-exists-spdk_bdev-without-spdk_util.txt");
        assert!(wall.lines().count() > 600);
        assert_eq!(
            summarize_error(wall),
            "missing spdk_util.pc (required by spdk_accel.pc)"
        );
    }

    #[test]
    fn other_complaints_are_joined_on_one_line() {
        let too_old = include_str!("../tests/fixtures/pkgconf-libdpdk-too-old.txt");
        assert_eq!(
            summarize_error(too_old),
            "Package dependency requirement 'libdpdk >= 23.11' could not be satisfied; \
             Package 'libdpdk' has version '22.11.11', required version is '>= 23.11'"
        );
        assert_eq!(summarize_error(""), "pkg-config gave no reason");
    }

    #[test]
    fn search_path_says_where_pkg_config_looked() {
        let mut search = SearchPath {
            extra: Some(PathBuf::from("/srv/spdk/build/lib/pkgconfig")),
            env_path: vec![PathBuf::from("/opt/dpdk/lib/pkgconfig")],
            defaults: parse_dir_list("/usr/lib/pkgconfig:/usr/share/pkgconfig\n"),
            defaults_from_libdir: false,
        };
        assert_eq!(
            search.to_string(),
            "/srv/spdk/build/lib/pkgconfig, then PKG_CONFIG_PATH=/opt/dpdk/lib/pkgconfig, \
             then /usr/lib/pkgconfig:/usr/share/pkgconfig"
        );
        search.defaults_from_libdir = true;
        search.extra = None;
        assert!(search
            .to_string()
            .ends_with(", then PKG_CONFIG_LIBDIR=/usr/lib/pkgconfig:/usr/share/pkgconfig"));
        search.defaults.clear();
        search.defaults_from_libdir = false;
        assert!(search
            .to_string()
            .ends_with("then pkg-config's defaults (unknown)"));
    }
}
