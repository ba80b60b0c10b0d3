//! Turns `pkg-config --static --libs` output into an ordered, deduplicated
//! link plan and the cargo directives that express it.
//!
//! SPDK's bdev modules, subsystems and DPDK's drivers register themselves from
//! C constructors; nothing references them by symbol, so a plain static link
//! drops them. Their archives are therefore linked whole (`+whole-archive`).
//! A whole archive must appear exactly once (a second copy defines every
//! symbol twice), while an ordinary library is kept at its *last* position so
//! that every earlier user of it is satisfied.

use std::fmt;
use std::path::{Path, PathBuf};

/// How one library is linked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LibKind {
    /// A static archive linked in full (`static:+whole-archive`).
    WholeArchive,
    /// A static archive from which only referenced objects are taken.
    Static,
    /// A shared library.
    Dylib,
}

/// One library of the plan, in link order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkItem {
    pub name: String,
    pub kind: LibKind,
}

/// The result of planning: where to search, what to link in which order,
/// and the flags that had no cargo equivalent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkPlan {
    pub search_dirs: Vec<PathBuf>,
    pub libs: Vec<LinkItem>,
    /// Flags passed through unchanged (`-Wl,...` other than the whole-archive
    /// markers); cargo cannot forward these to dependents, so the build
    /// script reports them.
    pub unhandled: Vec<String>,
}

/// SPDK or DPDK libraries the plan links that no searched directory holds
/// (neither `lib<name>.a` nor `lib<name>.so`): a half-finished install,
/// or a DPDK without a library this SPDK links. Said in one line instead
/// of the linker's "cannot find -l..." and undefined references.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingLibraries {
    pub names: Vec<String>,
    pub looked_in: Vec<PathBuf>,
}

impl fmt::Display for MissingLibraries {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let files: Vec<String> = self.names.iter().map(|n| format!("lib{n}")).collect();
        let dirs: Vec<String> = self
            .looked_in
            .iter()
            .map(|d| d.display().to_string())
            .collect();
        write!(
            f,
            "SPDK's pkg-config files link {}, but no .a or .so of {} is in {}",
            files.join(", "),
            if files.len() == 1 { "it" } else { "them" },
            dirs.join(", ")
        )?;
        if self.names.iter().any(|n| n.starts_with("spdk_")) {
            f.write_str("; SPDK's install is incomplete: run its `make install` again")?;
        }
        if self.names.iter().any(|n| n.starts_with("rte_")) {
            f.write_str(
                "; the DPDK found lacks libraries this SPDK links: build SPDK against a DPDK that \
                 has them (README: Getting SPDK)",
            )?;
        }
        Ok(())
    }
}

/// One token of pkg-config output, classified.
#[derive(Debug, PartialEq, Eq)]
enum Token<'a> {
    SearchDir(&'a str),
    Lib(&'a str),
    ArchivePath(&'a Path),
    WholeArchiveOn,
    WholeArchiveOff,
    Other(&'a str),
}

fn tokenize(libs: &str) -> Vec<Token<'_>> {
    let mut out = Vec::new();
    let mut words = libs.split_whitespace();
    while let Some(word) = words.next() {
        let token = if word == "-L" {
            match words.next() {
                Some(dir) => Token::SearchDir(dir),
                None => Token::Other(word),
            }
        } else if let Some(dir) = word.strip_prefix("-L") {
            Token::SearchDir(dir)
        } else if word == "-l" {
            match words.next() {
                Some(name) => Token::Lib(name),
                None => Token::Other(word),
            }
        } else if let Some(name) = word.strip_prefix("-l") {
            Token::Lib(name)
        } else if word == "-pthread" {
            Token::Lib("pthread")
        } else if word == "-Wl,--whole-archive" || word == "-Wl,-whole-archive" {
            Token::WholeArchiveOn
        } else if word == "-Wl,--no-whole-archive" || word == "-Wl,-no-whole-archive" {
            Token::WholeArchiveOff
        } else if word.ends_with(".a") && !word.starts_with('-') {
            Token::ArchivePath(Path::new(word))
        } else {
            Token::Other(word)
        };
        out.push(token);
    }
    out
}

/// Libraries that self-register through constructors and so must be linked
/// whole when they are static: all of SPDK's and DPDK's.
pub fn registers_from_constructors(name: &str) -> bool {
    name.starts_with("spdk_") || name.starts_with("rte_")
}

impl LinkPlan {
    /// Plans the link for `libs`, the output of `pkg-config --static --libs`.
    ///
    /// `default_dirs` are searched for static archives after the `-L`
    /// directories (the linker's own defaults, where pkg-config prints no
    /// `-L`, as for a distribution's DPDK). `file_exists` is injected so the
    /// planning is testable without the files.
    pub fn from_pkg_config(
        libs: &str,
        default_dirs: &[PathBuf],
        file_exists: &dyn Fn(&Path) -> bool,
    ) -> LinkPlan {
        let mut plan = LinkPlan::default();
        let mut wanted: Vec<LinkItem> = Vec::new();
        let mut in_whole_region = false;

        for token in tokenize(libs) {
            match token {
                Token::SearchDir(dir) => plan.add_search_dir(PathBuf::from(dir)),
                Token::WholeArchiveOn => in_whole_region = true,
                Token::WholeArchiveOff => in_whole_region = false,
                Token::Other(flag) => plan.unhandled.push(flag.to_string()),
                Token::ArchivePath(path) => {
                    let Some(name) = archive_lib_name(path) else {
                        plan.unhandled.push(path.display().to_string());
                        continue;
                    };
                    if let Some(dir) = path.parent() {
                        plan.add_search_dir(dir.to_path_buf());
                    }
                    let kind = if in_whole_region || registers_from_constructors(&name) {
                        LibKind::WholeArchive
                    } else {
                        LibKind::Static
                    };
                    wanted.push(LinkItem { name, kind });
                }
                Token::Lib(name) => {
                    let has_static = plan
                        .search_dirs
                        .iter()
                        .chain(default_dirs)
                        .any(|dir| file_exists(&dir.join(format!("lib{name}.a"))));
                    let kind = match (
                        has_static,
                        in_whole_region || registers_from_constructors(name),
                    ) {
                        (true, true) => LibKind::WholeArchive,
                        // Other static archives (ISA-L, OpenSSL, ...) stay
                        // shared: linking them whole buys nothing and the
                        // system's copy is what the loader already trusts.
                        _ => LibKind::Dylib,
                    };
                    wanted.push(LinkItem {
                        name: name.to_string(),
                        kind,
                    });
                }
            }
        }
        plan.libs = dedup_preserving_link_semantics(wanted);
        plan
    }

    fn add_search_dir(&mut self, dir: PathBuf) {
        if !self.search_dirs.contains(&dir) {
            self.search_dirs.push(dir);
        }
    }

    /// Adds what a *static* DPDK needs from the system, taken from
    /// `pkg-config --static --libs libdpdk` (SPDK's `.pc` files list DPDK's
    /// archives but not their dependencies). Every non-DPDK `-l` whose
    /// shared library the linker can find is appended as a shared library;
    /// the linker's `--as-needed` drops those nothing uses. Does nothing
    /// when DPDK is linked shared (its `.so` files carry their own needs).
    pub fn add_static_dpdk_dependencies(
        &mut self,
        dpdk_libs: &str,
        default_dirs: &[PathBuf],
        file_exists: &dyn Fn(&Path) -> bool,
    ) {
        let dpdk_is_static = self
            .libs
            .iter()
            .any(|l| l.kind == LibKind::WholeArchive && l.name.starts_with("rte_"));
        if !dpdk_is_static {
            return;
        }
        let tokens = tokenize(dpdk_libs);
        let dirs: Vec<PathBuf> = tokens
            .iter()
            .filter_map(|t| match t {
                Token::SearchDir(d) => Some(PathBuf::from(d)),
                _ => None,
            })
            .chain(self.search_dirs.iter().cloned())
            .chain(default_dirs.iter().cloned())
            .collect();
        let mut libs = std::mem::take(&mut self.libs);
        for token in tokens {
            let Token::Lib(name) = token else { continue };
            if registers_from_constructors(name) || name.starts_with(':') {
                continue;
            }
            if dirs
                .iter()
                .any(|d| file_exists(&d.join(format!("lib{name}.so"))))
            {
                libs.push(LinkItem {
                    name: name.to_string(),
                    kind: LibKind::Dylib,
                });
            }
        }
        self.libs = dedup_preserving_link_semantics(libs);
    }

    /// The SPDK and DPDK libraries (the ones whose absence is an install
    /// problem, not a system one) that neither the `-L` directories nor
    /// `default_dirs` hold.
    pub fn missing_libraries(
        &self,
        default_dirs: &[PathBuf],
        file_exists: &dyn Fn(&Path) -> bool,
    ) -> Option<MissingLibraries> {
        let mut looked_in: Vec<PathBuf> = Vec::new();
        for dir in self.search_dirs.iter().chain(default_dirs) {
            if !looked_in.contains(dir) {
                looked_in.push(dir.clone());
            }
        }
        let installed = |name: &str| {
            looked_in.iter().any(|dir| {
                file_exists(&dir.join(format!("lib{name}.a")))
                    || file_exists(&dir.join(format!("lib{name}.so")))
            })
        };
        let names: Vec<String> = self
            .libs
            .iter()
            .filter(|l| registers_from_constructors(&l.name) && !installed(&l.name))
            .map(|l| l.name.clone())
            .collect();
        (!names.is_empty()).then_some(MissingLibraries { names, looked_in })
    }

    /// True when at least one SPDK library is linked statically.
    pub fn is_static(&self) -> bool {
        self.libs
            .iter()
            .any(|l| l.kind == LibKind::WholeArchive && l.name.starts_with("spdk_"))
    }

    /// The `cargo:` lines that realise the plan, in order.
    pub fn cargo_directives(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .search_dirs
            .iter()
            .map(|d| format!("cargo:rustc-link-search=native={}", d.display()))
            .collect();
        for lib in &self.libs {
            let spec = match lib.kind {
                // -bundle: the archive is not copied into the rlib; it is
                // linked (whole) into the final binary from the search path.
                LibKind::WholeArchive => "static:+whole-archive,-bundle",
                LibKind::Static => "static:-bundle",
                LibKind::Dylib => "dylib",
            };
            out.push(format!("cargo:rustc-link-lib={spec}={}", lib.name));
        }
        out
    }
}

/// `libfoo.a` -> `foo`.
fn archive_lib_name(path: &Path) -> Option<String> {
    let file = path.file_name()?.to_str()?;
    let stem = file.strip_suffix(".a")?;
    Some(stem.strip_prefix("lib").unwrap_or(stem).to_string())
}

/// Whole archives keep their first position and appear once; everything
/// else keeps its last position. A library asked for both whole and not is
/// linked whole (whole-archive already includes every object).
fn dedup_preserving_link_semantics(wanted: Vec<LinkItem>) -> Vec<LinkItem> {
    let whole: Vec<&str> = wanted
        .iter()
        .filter(|l| l.kind == LibKind::WholeArchive)
        .map(|l| l.name.as_str())
        .collect();
    let mut out: Vec<LinkItem> = Vec::with_capacity(wanted.len());
    for (i, item) in wanted.iter().enumerate() {
        let is_whole = whole.contains(&item.name.as_str());
        let keep = if is_whole {
            item.kind == LibKind::WholeArchive
                && !out.iter().any(|o: &LinkItem| o.name == item.name)
        } else {
            !wanted[i + 1..].iter().any(|later| later.name == item.name)
        };
        if keep {
            out.push(item.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn fs_with(files: &[&str]) -> impl Fn(&Path) -> bool {
        let set: HashSet<PathBuf> = files.iter().map(PathBuf::from).collect();
        move |p: &Path| set.contains(p)
    }

    fn names(plan: &LinkPlan, kind: LibKind) -> Vec<&str> {
        plan.libs
            .iter()
            .filter(|l| l.kind == kind)
            .map(|l| l.name.as_str())
            .collect()
    }

    /// Every `lib<name>.a` the recorded install has in /usr/local/lib, plus
    /// Debian's static DPDK.
    fn recorded_install_archives(libs: &str, spdk_dir: &str) -> Vec<String> {
        let mut files = Vec::new();
        for word in libs.split_whitespace() {
            if let Some(name) = word.strip_prefix("-lspdk_") {
                files.push(format!("{spdk_dir}/libspdk_{name}.a"));
            } else if let Some(name) = word.strip_prefix("-lrte_") {
                files.push(format!("/usr/lib/x86_64-linux-gnu/librte_{name}.a"));
            }
        }
        files.push("/usr/local/lib/libisal.a".into());
        files
    }

    #[test]
    fn recorded_static_install_links_spdk_and_dpdk_whole() {
        let libs = include_str!("../tests/fixtures/libs-static-usr-local.txt");
        let files = recorded_install_archives(libs, "/usr/local/lib");
        let refs: Vec<&str> = files.iter().map(String::as_str).collect();
        let plan = LinkPlan::from_pkg_config(
            libs,
            &[PathBuf::from("/usr/lib/x86_64-linux-gnu")],
            &fs_with(&refs),
        );
        assert_eq!(plan.search_dirs, vec![PathBuf::from("/usr/local/lib")]);
        let whole = names(&plan, LibKind::WholeArchive);
        assert!(whole.contains(&"spdk_bdev_malloc"));
        assert!(whole.contains(&"spdk_event_bdev"));
        assert!(whole.contains(&"rte_mempool_ring"));
        assert!(whole.contains(&"rte_bus_pci"));
        // ISA-L has an archive but is not self-registering: stays shared.
        let dylibs = names(&plan, LibKind::Dylib);
        assert_eq!(
            dylibs,
            [
                "isal", "pthread", "rt", "uuid", "ssl", "crypto", "m", "keyutils", "aio", "bsd",
                "dl"
            ]
        );
        // System libraries come after every archive that needs them.
        let first_dylib = plan
            .libs
            .iter()
            .position(|l| l.kind == LibKind::Dylib)
            .unwrap();
        assert!(plan.libs[..first_dylib]
            .iter()
            .all(|l| l.kind == LibKind::WholeArchive));
        assert!(plan.is_static());
        assert!(plan.unhandled.is_empty(), "{:?}", plan.unhandled);
    }

    #[test]
    fn static_dpdk_gets_its_system_dependencies_that_exist() {
        let libs = include_str!("../tests/fixtures/libs-static-usr-local.txt");
        let files = recorded_install_archives(libs, "/usr/local/lib");
        let mut all: Vec<&str> = files.iter().map(String::as_str).collect();
        all.extend([
            "/usr/lib/x86_64-linux-gnu/libnuma.so",
            "/usr/lib/x86_64-linux-gnu/libfdt.so",
            "/usr/lib/x86_64-linux-gnu/libm.so",
        ]);
        let defaults = [PathBuf::from("/usr/lib/x86_64-linux-gnu")];
        let fs = fs_with(&all);
        let mut plan = LinkPlan::from_pkg_config(libs, &defaults, &fs);
        let dpdk = include_str!("../tests/fixtures/libdpdk-static-debian.txt");
        plan.add_static_dpdk_dependencies(dpdk, &defaults, &fs);
        let dylibs = names(&plan, LibKind::Dylib);
        // Present on "disk": added once, at the end; libm kept at its last place.
        assert!(dylibs.ends_with(&["m", "numa", "fdt"]), "{dylibs:?}");
        // DPDK's drivers and absent providers (ibverbs' mlx5, ...) are not added.
        assert!(!plan
            .libs
            .iter()
            .any(|l| l.name == "mlx5" || l.name.starts_with("rte_net_")));
        assert_eq!(plan.libs.iter().filter(|l| l.name == "rte_eal").count(), 1);
    }

    #[test]
    fn complete_recorded_install_misses_no_library() {
        let libs = include_str!("../tests/fixtures/libs-static-usr-local.txt");
        let files = recorded_install_archives(libs, "/usr/local/lib");
        let refs: Vec<&str> = files.iter().map(String::as_str).collect();
        let defaults = [PathBuf::from("/usr/lib/x86_64-linux-gnu")];
        let fs = fs_with(&refs);
        let plan = LinkPlan::from_pkg_config(libs, &defaults, &fs);
        assert_eq!(plan.missing_libraries(&defaults, &fs), None);
    }

    #[test]
    fn half_installed_spdk_libraries_are_named_in_one_line() {
        let libs = include_str!("../tests/fixtures/libs-static-usr-local.txt");
        let files = recorded_install_archives(libs, "/usr/local/lib");
        let gone = [
            "/usr/local/lib/libspdk_bdev_malloc.a",
            "/usr/local/lib/libspdk_event_bdev.a",
        ];
        let refs: Vec<&str> = files
            .iter()
            .map(String::as_str)
            .filter(|f| !gone.contains(f))
            .collect();
        let defaults = [PathBuf::from("/usr/lib/x86_64-linux-gnu")];
        let fs = fs_with(&refs);
        let plan = LinkPlan::from_pkg_config(libs, &defaults, &fs);
        let missing = plan.missing_libraries(&defaults, &fs).unwrap();
        assert_eq!(missing.names, ["spdk_event_bdev", "spdk_bdev_malloc"]);
        assert_eq!(
            missing.to_string(),
            "SPDK's pkg-config files link libspdk_event_bdev, libspdk_bdev_malloc, but no .a or \
             .so of them is in /usr/local/lib, /usr/lib/x86_64-linux-gnu; SPDK's install is \
             incomplete: run its `make install` again"
        );
    }

    #[test]
    fn dpdk_without_rte_log_is_named_as_a_dpdk_problem() {
        // Upstream SPDK links rte_log and rte_argparse, which DPDK 22.11
        // does not have; the recorded install has every other library.
        let recorded = include_str!("../tests/fixtures/libs-static-usr-local.txt");
        let libs = format!("{} -lrte_log -lrte_argparse", recorded.trim());
        let files = recorded_install_archives(recorded, "/usr/local/lib");
        let refs: Vec<&str> = files.iter().map(String::as_str).collect();
        let defaults = [PathBuf::from("/usr/lib/x86_64-linux-gnu")];
        let fs = fs_with(&refs);
        let plan = LinkPlan::from_pkg_config(&libs, &defaults, &fs);
        let missing = plan.missing_libraries(&defaults, &fs).unwrap();
        assert_eq!(missing.names, ["rte_log", "rte_argparse"]);
        let text = missing.to_string();
        assert!(
            text.contains("link librte_log, librte_argparse, but"),
            "{text}"
        );
        assert!(text.ends_with("the DPDK found lacks libraries this SPDK links: build SPDK against a DPDK that has them (README: Getting SPDK)"), "{text}");
        assert!(!text.contains("make install"), "{text}");
    }

    #[test]
    fn shared_dpdk_needs_no_extra_dependencies() {
        let libs = "-lspdk_env_dpdk -lrte_eal";
        let mut plan = LinkPlan::from_pkg_config(libs, &[], &fs_with(&[]));
        let before = plan.clone();
        plan.add_static_dpdk_dependencies("-lnuma", &[], &|_| true);
        assert_eq!(plan, before);
    }

    #[test]
    fn recorded_build_tree_uses_its_own_lib_dir() {
        let libs = include_str!("../tests/fixtures/libs-static-build-tree.txt");
        let files = recorded_install_archives(libs, "/srv/spdk/build/lib");
        let refs: Vec<&str> = files.iter().map(String::as_str).collect();
        let plan = LinkPlan::from_pkg_config(
            libs,
            &[PathBuf::from("/usr/lib/x86_64-linux-gnu")],
            &fs_with(&refs),
        );
        assert_eq!(plan.search_dirs[0], PathBuf::from("/srv/spdk/build/lib"));
        assert!(names(&plan, LibKind::WholeArchive).contains(&"spdk_env_dpdk"));
    }

    #[test]
    fn shared_only_install_links_everything_as_dylib() {
        let libs = include_str!("../tests/fixtures/libs-static-usr-local.txt");
        let plan = LinkPlan::from_pkg_config(libs, &[], &fs_with(&[]));
        assert!(plan.libs.iter().all(|l| l.kind == LibKind::Dylib));
        assert!(!plan.is_static());
        let d = plan.cargo_directives();
        assert!(d.contains(&"cargo:rustc-link-lib=dylib=spdk_bdev_malloc".to_string()));
    }

    #[test]
    fn duplicates_keep_first_whole_archive_and_last_plain_library() {
        let libs = "-L/x -lspdk_log -lfoo -lspdk_util -lspdk_log -lfoo -lbar -lfoo";
        let plan = LinkPlan::from_pkg_config(
            libs,
            &[],
            &fs_with(&["/x/libspdk_log.a", "/x/libspdk_util.a"]),
        );
        let order: Vec<(&str, LibKind)> = plan
            .libs
            .iter()
            .map(|l| (l.name.as_str(), l.kind))
            .collect();
        assert_eq!(
            order,
            [
                ("spdk_log", LibKind::WholeArchive),
                ("spdk_util", LibKind::WholeArchive),
                ("bar", LibKind::Dylib),
                ("foo", LibKind::Dylib),
            ]
        );
    }

    #[test]
    fn explicit_whole_archive_region_is_honoured_and_closed() {
        let libs =
            "-L/x -Wl,--whole-archive -lmine -lspdk_a -Wl,--no-whole-archive -lmine2 -lspdk_a";
        let plan = LinkPlan::from_pkg_config(
            libs,
            &[],
            &fs_with(&["/x/libmine.a", "/x/libmine2.a", "/x/libspdk_a.a"]),
        );
        let order: Vec<(&str, LibKind)> = plan
            .libs
            .iter()
            .map(|l| (l.name.as_str(), l.kind))
            .collect();
        assert_eq!(
            order,
            [
                ("mine", LibKind::WholeArchive),
                ("spdk_a", LibKind::WholeArchive),
                ("mine2", LibKind::Dylib),
            ]
        );
        assert!(plan.unhandled.is_empty());
    }

    #[test]
    fn archive_paths_and_split_flags_are_understood() {
        let libs = "-L /x /opt/dpdk/lib/librte_eal.a -l numa -Wl,-rpath,/opt -pthread";
        let plan = LinkPlan::from_pkg_config(libs, &[], &fs_with(&[]));
        assert_eq!(
            plan.search_dirs,
            [PathBuf::from("/x"), PathBuf::from("/opt/dpdk/lib")]
        );
        let order: Vec<(&str, LibKind)> = plan
            .libs
            .iter()
            .map(|l| (l.name.as_str(), l.kind))
            .collect();
        assert_eq!(
            order,
            [
                ("rte_eal", LibKind::WholeArchive),
                ("numa", LibKind::Dylib),
                ("pthread", LibKind::Dylib),
            ]
        );
        assert_eq!(plan.unhandled, ["-Wl,-rpath,/opt"]);
    }

    #[test]
    fn directives_use_whole_archive_without_bundling() {
        let plan =
            LinkPlan::from_pkg_config("-L/x -lspdk_log -lm", &[], &fs_with(&["/x/libspdk_log.a"]));
        assert_eq!(
            plan.cargo_directives(),
            [
                "cargo:rustc-link-search=native=/x",
                "cargo:rustc-link-lib=static:+whole-archive,-bundle=spdk_log",
                "cargo:rustc-link-lib=dylib=m",
            ]
        );
    }
}
