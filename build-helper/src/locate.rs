//! Finding SPDK: `SPDK_DIR` (an install prefix or a build tree) first, else
//! pkg-config's own search path (`PKG_CONFIG_PATH`, then the defaults, which
//! include `/usr/local`).

use crate::pkgconfig::{summarize_error, PkgConfig, SearchPath};
use crate::version::SpdkVersion;
use std::fmt;
use std::path::{Path, PathBuf};

/// pkg-config modules the bindings cannot do without.
pub const SPDK_REQUIRED_MODULES: &[&str] = &[
    "spdk_event",
    "spdk_event_bdev",
    "spdk_init",
    "spdk_blob_bdev",
    "spdk_blob",
    "spdk_nvme",
    "spdk_env_dpdk",
    "spdk_syslibs",
];

/// Linked when the installation has them: the bdev, accel, sock and keyring
/// modules (malloc, null, error, delay, AIO, NVMe bdevs; posix sockets for
/// NVMe/TCP) and the env RPCs.
pub const SPDK_OPTIONAL_MODULES: &[&str] = &[
    "spdk_bdev_modules",
    "spdk_accel_modules",
    "spdk_sock_modules",
    "spdk_keyring_modules",
    "spdk_env_dpdk_rpc",
];

/// A usable SPDK installation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpdkInstall {
    /// Human-readable description of where it was found.
    pub origin: String,
    /// The pkg-config directory added in front of the search path, if any.
    pub pkg_config_dir: Option<PathBuf>,
    pub modules: Vec<String>,
    /// `pkg-config --static --libs` for `modules`.
    pub libs: String,
    /// `pkg-config --static --libs libdpdk`, when DPDK has a `.pc`: the
    /// system libraries a *static* DPDK needs, which SPDK's own `.pc` files
    /// leave out.
    pub dpdk_libs: Option<String>,
    pub include_dirs: Vec<PathBuf>,
    pub version: SpdkVersion,
    /// Files whose change should re-run the build script.
    pub watched_files: Vec<PathBuf>,
}

/// The outcome of looking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Located {
    Found(SpdkInstall),
    /// Nothing was configured and pkg-config knows no SPDK: build without it.
    Absent {
        why: String,
    },
}

/// SPDK was asked for (or half found) but cannot be used: the build stops
/// with this one-line message (what was looked for, and where) instead of
/// silently leaving SPDK out or failing later at the link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocateError {
    SpdkDirInvalid {
        dir: PathBuf,
        looked_in: Vec<PathBuf>,
    },
    /// Required modules whose `.pc` file is nowhere in the search path.
    ModulesMissing {
        origin: String,
        missing: Vec<String>,
        searched: String,
    },
    /// A `.pc` file that exists but pkg-config cannot resolve (a file it
    /// requires is missing).
    Unresolvable {
        pc_file: PathBuf,
        problem: String,
        searched: String,
    },
    PkgConfig {
        origin: String,
        message: String,
        searched: String,
    },
    VersionUnknown {
        origin: String,
        looked_in: Vec<PathBuf>,
    },
}

impl fmt::Display for LocateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LocateError::SpdkDirInvalid { dir, looked_in } => write!(
                f,
                "SPDK_DIR={} has no spdk_bdev.pc (looked in {}); point SPDK_DIR at an SPDK install prefix or build tree, or unset it",
                dir.display(),
                display_paths(looked_in)
            ),
            LocateError::ModulesMissing { origin, missing, searched } => write!(
                f,
                "SPDK found via {origin} has no {} in pkg-config's search path ({searched}); rebuild or reinstall SPDK with them",
                missing.iter().map(|m| format!("{m}.pc")).collect::<Vec<_>>().join(", ")
            ),
            LocateError::Unresolvable { pc_file, problem, searched } => write!(
                f,
                "{} is installed but pkg-config cannot use it: {problem}; searched {searched}; finish SPDK's `make install`, or add the directory holding the missing files to PKG_CONFIG_PATH",
                pc_file.display()
            ),
            LocateError::PkgConfig { origin, message, searched } => write!(
                f,
                "pkg-config failed for SPDK found via {origin}: {message}; searched {searched}"
            ),
            LocateError::VersionUnknown { origin, looked_in } => write!(
                f,
                "SPDK found via {origin} but spdk/version.h is not under {} (SPDK's headers not installed?)",
                display_paths(looked_in)
            ),
        }
    }
}

impl std::error::Error for LocateError {}

fn display_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Looks for SPDK. `spdk_dir` is the value of `SPDK_DIR`, if set.
pub fn locate(spdk_dir: Option<&Path>, host: &dyn PkgConfig) -> Result<Located, LocateError> {
    let mut search = host.search_path();
    let (pkg_config_dir, origin) = match spdk_dir {
        Some(dir) => {
            let looked_in: Vec<PathBuf> =
                ["lib/pkgconfig", "lib64/pkgconfig", "build/lib/pkgconfig"]
                    .iter()
                    .map(|sub| dir.join(sub))
                    .collect();
            let Some(found) = looked_in
                .iter()
                .find(|d| host.file_exists(&d.join("spdk_bdev.pc")))
            else {
                return Err(LocateError::SpdkDirInvalid {
                    dir: dir.to_path_buf(),
                    looked_in,
                });
            };
            (
                Some(found.clone()),
                format!("SPDK_DIR ({})", found.display()),
            )
        }
        None => {
            if host.query(None, &["--exists", "spdk_bdev"]).is_err() {
                return match search.find("spdk_bdev.pc", host) {
                    Some(pc_file) => Err(unresolvable(host, &search, "spdk_bdev", pc_file)),
                    None => Ok(Located::Absent {
                        why: format!("no spdk_bdev.pc in pkg-config's search path ({search})"),
                    }),
                };
            }
            (None, "pkg-config".to_string())
        }
    };
    search.extra = pkg_config_dir.clone();
    let extra = pkg_config_dir.as_deref();
    let pkg_config_error = |message: String| LocateError::PkgConfig {
        origin: origin.clone(),
        message: summarize_error(&message),
        searched: search.to_string(),
    };

    let mut missing = Vec::new();
    for module in SPDK_REQUIRED_MODULES {
        if host.query(extra, &["--exists", module]).is_ok() {
            continue;
        }
        match search.find(&format!("{module}.pc"), host) {
            Some(pc_file) => return Err(unresolvable(host, &search, module, pc_file)),
            None => missing.push(module.to_string()),
        }
    }
    if !missing.is_empty() {
        return Err(LocateError::ModulesMissing {
            origin,
            missing,
            searched: search.to_string(),
        });
    }
    let mut modules: Vec<String> = SPDK_REQUIRED_MODULES
        .iter()
        .map(|m| m.to_string())
        .collect();
    // Optional modules go before the env and system libraries they need.
    let optional = SPDK_OPTIONAL_MODULES
        .iter()
        .filter(|m| host.query(extra, &["--exists", m]).is_ok())
        .map(|m| m.to_string());
    let tail = modules.split_off(modules.len() - 2);
    modules.extend(optional);
    modules.extend(tail);

    let mut args: Vec<&str> = vec!["--libs", "--static"];
    args.extend(modules.iter().map(String::as_str));
    let libs = host.query(extra, &args).map_err(pkg_config_error)?;
    args[0] = "--cflags";
    args.remove(1);
    let cflags = host.query(extra, &args).map_err(pkg_config_error)?;

    let include_dirs: Vec<PathBuf> = cflags
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("-I"))
        .map(PathBuf::from)
        .fold(Vec::new(), |mut acc, d| {
            if !acc.contains(&d) {
                acc.push(d);
            }
            acc
        });
    let (version_header, version) = include_dirs
        .iter()
        .map(|d| d.join("spdk/version.h"))
        .find_map(|h| {
            let v = SpdkVersion::parse_header(&host.read_file(&h)?)?;
            Some((h, v))
        })
        .ok_or_else(|| LocateError::VersionUnknown {
            origin: origin.clone(),
            looked_in: include_dirs.clone(),
        })?;

    let dpdk_libs = host.query(extra, &["--libs", "--static", "libdpdk"]).ok();

    let mut watched_files = vec![version_header];
    if let Some(dir) = &pkg_config_dir {
        watched_files.push(dir.join("spdk_bdev.pc"));
    }
    Ok(Located::Found(SpdkInstall {
        origin,
        pkg_config_dir,
        modules,
        libs: libs.trim().to_string(),
        dpdk_libs,
        include_dirs,
        version,
        watched_files,
    }))
}

/// `module`'s `.pc` file exists, yet pkg-config refused it: its own words why.
fn unresolvable(
    host: &dyn PkgConfig,
    search: &SearchPath,
    module: &str,
    pc_file: PathBuf,
) -> LocateError {
    let stderr = host
        .query(
            search.extra.as_deref(),
            &["--print-errors", "--exists", module],
        )
        .err()
        .unwrap_or_default();
    LocateError::Unresolvable {
        pc_file,
        problem: summarize_error(&stderr),
        searched: search.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::HashMap;

    /// Replays recorded pkg-config answers; records what was asked.
    #[derive(Default)]
    struct Recorded {
        modules: Vec<&'static str>,
        /// Modules whose `.pc` pkg-config refuses, with what it says then.
        refused: HashMap<&'static str, &'static str>,
        search: SearchPath,
        libs: &'static str,
        dpdk_libs: &'static str,
        cflags: &'static str,
        files: HashMap<PathBuf, String>,
        expected_dir: Option<PathBuf>,
        asked: RefCell<Vec<String>>,
    }

    impl PkgConfig for Recorded {
        fn query(&self, extra: Option<&Path>, args: &[&str]) -> Result<String, String> {
            self.asked.borrow_mut().push(args.join(" "));
            if extra.map(Path::to_path_buf) != self.expected_dir {
                return Err(format!("unexpected extra dir {extra:?}"));
            }
            match args[0] {
                "--print-errors" => Err(self.refused.get(args[2]).unwrap_or(&"").to_string()),
                "--exists" if self.refused.contains_key(args[1]) => Err(String::new()),
                "--exists" if self.modules.contains(&args[1]) => Ok(String::new()),
                "--exists" => Err(String::new()),
                "--libs" if args.contains(&"libdpdk") => Ok(self.dpdk_libs.to_string()),
                "--libs" => Ok(self.libs.to_string()),
                "--cflags" => Ok(self.cflags.to_string()),
                other => Err(format!("unexpected {other}")),
            }
        }
        fn file_exists(&self, path: &Path) -> bool {
            self.files.contains_key(path)
        }
        fn read_file(&self, path: &Path) -> Option<String> {
            self.files.get(path).cloned()
        }
        fn search_path(&self) -> SearchPath {
            self.search.clone()
        }
    }

    /// pkg-config's own directories on Debian 12, nothing in PKG_CONFIG_PATH.
    fn debian_search_path() -> SearchPath {
        SearchPath {
            defaults: crate::pkgconfig::parse_dir_list(include_str!(
                "../tests/fixtures/pc-path-debian.txt"
            )),
            ..Default::default()
        }
    }

    const DEBIAN_SEARCHED: &str =
        "PKG_CONFIG_PATH unset, then /usr/local/lib/x86_64-linux-gnu/pkgconfig:\
        /usr/local/lib/pkgconfig:/usr/local/share/pkgconfig:/usr/lib/x86_64-linux-gnu/pkgconfig:\
        /usr/lib/pkgconfig:/usr/share/pkgconfig";

    const ALL_MODULES: &[&str] = &[
        "spdk_bdev",
        "spdk_event",
        "spdk_event_bdev",
        "spdk_init",
        "spdk_blob_bdev",
        "spdk_blob",
        "spdk_nvme",
        "spdk_env_dpdk",
        "spdk_syslibs",
        "spdk_bdev_modules",
        "spdk_sock_modules",
        "spdk_env_dpdk_rpc",
    ];

    fn recorded_usr_local() -> Recorded {
        let mut files = HashMap::new();
        files.insert(
            PathBuf::from("/usr/local/include/spdk/version.h"),
            include_str!("../tests/fixtures/version-26.09-pre.txt").to_string(),
        );
        Recorded {
            modules: ALL_MODULES.to_vec(),
            libs: include_str!("../tests/fixtures/libs-static-usr-local.txt"),
            dpdk_libs: include_str!("../tests/fixtures/libdpdk-static-debian.txt"),
            cflags: include_str!("../tests/fixtures/cflags-usr-local.txt"),
            files,
            search: debian_search_path(),
            ..Default::default()
        }
    }

    #[test]
    fn finds_default_prefix_install_through_pkg_config() {
        let host = recorded_usr_local();
        let Located::Found(install) = locate(None, &host).unwrap() else {
            panic!("not found")
        };
        assert_eq!(install.origin, "pkg-config");
        assert_eq!(install.include_dirs, [PathBuf::from("/usr/local/include")]);
        assert_eq!(install.version.to_string(), "26.09.0-pre");
        // Optional modules present are inserted before env and syslibs;
        // absent ones (accel, keyring) are skipped.
        assert_eq!(
            install.modules,
            [
                "spdk_event",
                "spdk_event_bdev",
                "spdk_init",
                "spdk_blob_bdev",
                "spdk_blob",
                "spdk_nvme",
                "spdk_bdev_modules",
                "spdk_sock_modules",
                "spdk_env_dpdk_rpc",
                "spdk_env_dpdk",
                "spdk_syslibs",
            ]
        );
        assert!(install.libs.starts_with("-L/usr/local/lib -lspdk_event "));
        assert!(install.dpdk_libs.unwrap().contains("-lnuma"));
    }

    #[test]
    fn absent_spdk_is_not_an_error_and_names_the_search_path() {
        let host = Recorded {
            search: debian_search_path(),
            ..Default::default()
        };
        assert_eq!(
            locate(None, &host).unwrap(),
            Located::Absent {
                why: format!("no spdk_bdev.pc in pkg-config's search path ({DEBIAN_SEARCHED})")
            }
        );
    }

    /// The install of the recorded wall: spdk_bdev.pc in place, spdk_util.pc
    /// (which nearly every SPDK module requires) gone.
    fn recorded_without_spdk_util() -> Recorded {
        let mut host = recorded_usr_local();
        host.files.insert(
            PathBuf::from("/usr/local/lib/pkgconfig/spdk_bdev.pc"),
            String::new(),
        );
        host.refused.insert(
            "spdk_bdev",
            include_str!("../tests/fixtures/pkgconf-exists-spdk_bdev-without-spdk_util.txt"),
        );
        host
    }

    #[test]
    fn half_installed_spdk_is_one_line_naming_the_missing_pc_file() {
        let host = recorded_without_spdk_util();
        let text = locate(None, &host).unwrap_err().to_string();
        assert!(!text.contains('\n'), "{text}");
        assert!(
            text.starts_with(
                "/usr/local/lib/pkgconfig/spdk_bdev.pc is installed but pkg-config cannot use it: \
                 missing spdk_util.pc (required by spdk_accel.pc); searched "
            ),
            "{text}"
        );
        assert!(text.contains(DEBIAN_SEARCHED), "{text}");
    }

    #[test]
    fn spdk_dir_module_with_a_missing_requirement_is_named() {
        let mut host = recorded_usr_local();
        let dir = PathBuf::from("/srv/spdk/build/lib/pkgconfig");
        host.files.insert(dir.join("spdk_bdev.pc"), String::new());
        host.files
            .insert(dir.join("spdk_env_dpdk.pc"), String::new());
        host.expected_dir = Some(dir.clone());
        host.refused.insert(
            "spdk_env_dpdk",
            include_str!("../tests/fixtures/pkgconf-libs-without-spdk_dpdklibs.txt"),
        );
        let err = locate(Some(Path::new("/srv/spdk")), &host).unwrap_err();
        assert_eq!(
            err,
            LocateError::Unresolvable {
                pc_file: dir.join("spdk_env_dpdk.pc"),
                problem: "missing spdk_dpdklibs.pc (required by spdk_env_dpdk.pc)".into(),
                searched: format!("{}, then {DEBIAN_SEARCHED}", dir.display()),
            }
        );
    }

    #[test]
    fn spdk_dir_build_tree_is_searched_first() {
        let mut host = recorded_usr_local();
        let dir = PathBuf::from("/srv/spdk/build/lib/pkgconfig");
        host.files.insert(dir.join("spdk_bdev.pc"), String::new());
        host.expected_dir = Some(dir.clone());
        let Located::Found(install) = locate(Some(Path::new("/srv/spdk")), &host).unwrap() else {
            panic!("not found")
        };
        assert_eq!(install.pkg_config_dir, Some(dir.clone()));
        assert!(install.origin.contains("SPDK_DIR"));
        assert!(install.watched_files.contains(&dir.join("spdk_bdev.pc")));
    }

    #[test]
    fn wrong_spdk_dir_is_a_clear_error() {
        let host = recorded_usr_local();
        let err = locate(Some(Path::new("/nowhere")), &host).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("SPDK_DIR=/nowhere has no spdk_bdev.pc"),
            "{text}"
        );
        assert!(text.contains("/nowhere/build/lib/pkgconfig"), "{text}");
    }

    #[test]
    fn missing_required_module_is_named_with_the_search_path() {
        let mut host = recorded_usr_local();
        host.modules.retain(|m| *m != "spdk_blob_bdev");
        let err = locate(None, &host).unwrap_err();
        assert_eq!(
            err,
            LocateError::ModulesMissing {
                origin: "pkg-config".into(),
                missing: vec!["spdk_blob_bdev".into()],
                searched: DEBIAN_SEARCHED.into(),
            }
        );
        assert!(err
            .to_string()
            .starts_with("SPDK found via pkg-config has no spdk_blob_bdev.pc in pkg-config's search path (PKG_CONFIG_PATH unset, then /usr/local/lib/x86_64-linux-gnu/pkgconfig:"));
    }

    #[test]
    fn missing_version_header_is_reported() {
        let mut host = recorded_usr_local();
        host.files.clear();
        let err = locate(None, &host).unwrap_err();
        assert!(matches!(err, LocateError::VersionUnknown { .. }));
    }
}
