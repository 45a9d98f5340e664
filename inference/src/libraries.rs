//! Finding the shared libraries the runtime loads at run time (`ort` is built with `load-dynamic`).
//!
//! Order, per library: explicit config -> environment variable -> the project venv -> system paths.
//! The project venv is `AUTONEURAL_VENV` (or the configured `venv`), else a `.venv` directory in an
//! ancestor of the bundle directory, the working directory or the executable — `./scripts/setup`
//! creates it at the repository root with the pinned wheels (onnxruntime 1.31.1, onnxruntime-qnn 2.7.0).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::LibraryError;

pub const ENV_ORT_LIB: &str = "AUTONEURAL_ORT_LIB";
pub const ENV_QNN_EP_LIB: &str = "AUTONEURAL_QNN_EP_LIB";
pub const ENV_QNN_BACKEND: &str = "AUTONEURAL_QNN_BACKEND";
pub const ENV_VENV: &str = "AUTONEURAL_VENV";
/// The one command that installs every library the runtime loads.
pub const INSTALL_COMMAND: &str = "./scripts/setup";

/// Explicit library locations; every field optional (then discovery runs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LibraryPaths {
    /// `libonnxruntime.so` (onnxruntime 1.31.x).
    pub onnxruntime: Option<PathBuf>,
    /// `libonnxruntime_providers_qnn.so`, the QNN plugin EP (onnxruntime-qnn 2.7.0).
    pub qnn_ep: Option<PathBuf>,
    /// `libQnnHtp.so`, the HTP backend (on x86_64 the simulator).
    pub qnn_backend: Option<PathBuf>,
    /// A Python venv holding the onnxruntime / onnxruntime-qnn wheels.
    pub venv: Option<PathBuf>,
}

impl LibraryPaths {
    /// ONNX Runtime from a directory of its own (an installed package's private library
    /// directory, e.g. /usr/lib/autoneural/onnxruntime): the file name is this crate's business.
    pub fn in_runtime_dir(dir: &Path) -> LibraryPaths {
        LibraryPaths {
            onnxruntime: Some(dir.join("libonnxruntime.so")),
            ..LibraryPaths::default()
        }
    }
}

/// Which library is wanted; each knows its file name, env var and place in a venv.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Library {
    OnnxRuntime,
    QnnEp,
    QnnBackend,
}

impl Library {
    pub fn describe(self) -> &'static str {
        match self {
            Library::OnnxRuntime => "ONNX Runtime library libonnxruntime.so (onnxruntime 1.31.1)",
            Library::QnnEp => {
                "QNN execution provider libonnxruntime_providers_qnn.so (onnxruntime-qnn 2.7.0)"
            }
            Library::QnnBackend => "QNN HTP backend libQnnHtp.so (onnxruntime-qnn 2.7.0)",
        }
    }

    pub fn env_var(self) -> &'static str {
        match self {
            Library::OnnxRuntime => ENV_ORT_LIB,
            Library::QnnEp => ENV_QNN_EP_LIB,
            Library::QnnBackend => ENV_QNN_BACKEND,
        }
    }

    fn explicit(self, paths: &LibraryPaths) -> Option<&PathBuf> {
        match self {
            Library::OnnxRuntime => paths.onnxruntime.as_ref(),
            Library::QnnEp => paths.qnn_ep.as_ref(),
            Library::QnnBackend => paths.qnn_backend.as_ref(),
        }
    }

    /// Candidate files inside one `site-packages` directory.
    fn in_site_packages(self, site: &Path) -> Vec<PathBuf> {
        match self {
            Library::OnnxRuntime => {
                let capi = site.join("onnxruntime").join("capi");
                let mut found = versioned_sos(&capi, "libonnxruntime.so");
                found.push(capi.join("libonnxruntime.so"));
                found
            }
            Library::QnnEp => vec![
                site.join("onnxruntime_qnn")
                    .join("libonnxruntime_providers_qnn.so"),
            ],
            Library::QnnBackend => vec![site.join("onnxruntime_qnn").join("libQnnHtp.so")],
        }
    }

    fn system_names(self) -> &'static [&'static str] {
        match self {
            Library::OnnxRuntime => &["libonnxruntime.so", "libonnxruntime.so.1"],
            Library::QnnEp => &["libonnxruntime_providers_qnn.so"],
            Library::QnnBackend => &["libQnnHtp.so"],
        }
    }
}

/// Directories whose ancestors may hold the project's `.venv`.
#[derive(Debug, Clone, Default)]
pub struct SearchRoots {
    pub bundle_dir: Option<PathBuf>,
    pub working_dir: Option<PathBuf>,
    pub exe_dir: Option<PathBuf>,
}

impl SearchRoots {
    /// The bundle directory plus this process's working directory and executable directory.
    pub fn for_process(bundle_dir: Option<&Path>) -> SearchRoots {
        SearchRoots {
            bundle_dir: bundle_dir
                .map(|b| std::path::absolute(b).unwrap_or_else(|_| b.to_path_buf())),
            working_dir: std::env::current_dir().ok(),
            exe_dir: std::env::current_exe()
                .ok()
                .and_then(|e| e.parent().map(Path::to_path_buf)),
        }
    }
}

/// Resolves one library for this process; `Err` names what is missing, where it looked and how to
/// install it.
pub fn resolve(
    lib: Library,
    paths: &LibraryPaths,
    bundle_dir: Option<&Path>,
) -> Result<PathBuf, LibraryError> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    resolve_with(lib, paths, &SearchRoots::for_process(bundle_dir), &env)
}

/// `resolve` with the environment injected (tests must not mutate the process environment).
pub fn resolve_with(
    lib: Library,
    paths: &LibraryPaths,
    roots: &SearchRoots,
    env: &dyn Fn(&str) -> Option<PathBuf>,
) -> Result<PathBuf, LibraryError> {
    let mut searched = Vec::new();
    // 1. explicit config and 2. the environment variable: taken as given, but they must exist — a
    // typo should not silently fall through to some other copy of the library.
    if let Some(given) = lib.explicit(paths).cloned().or_else(|| env(lib.env_var())) {
        if given.is_file() {
            return Ok(given);
        }
        return Err(LibraryError::NotFound {
            what: lib.describe(),
            searched: vec![given],
            env_var: lib.env_var(),
            install: INSTALL_COMMAND,
        });
    }
    // 3. the project venv.
    for venv in venv_candidates(paths, roots, env) {
        for site in site_packages(&venv) {
            for candidate in lib.in_site_packages(&site) {
                if candidate.is_file() {
                    return Ok(candidate);
                }
            }
        }
        searched.push(venv);
    }
    // 4. system paths.
    for dir in system_dirs(env) {
        for name in lib.system_names() {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
        searched.push(dir);
    }
    Err(LibraryError::NotFound {
        what: lib.describe(),
        searched,
        env_var: lib.env_var(),
        install: INSTALL_COMMAND,
    })
}

fn venv_candidates(
    paths: &LibraryPaths,
    roots: &SearchRoots,
    env: &dyn Fn(&str) -> Option<PathBuf>,
) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    let mut push = |p: PathBuf| {
        if !out.contains(&p) {
            out.push(p);
        }
    };
    if let Some(v) = &paths.venv {
        push(v.clone());
    }
    if let Some(v) = env(ENV_VENV) {
        push(v);
    }
    for start in [&roots.bundle_dir, &roots.working_dir, &roots.exe_dir]
        .into_iter()
        .flatten()
    {
        for dir in start.ancestors() {
            let venv = dir.join(".venv");
            if venv.is_dir() {
                push(venv);
                break;
            }
        }
    }
    out
}

/// `lib/python3.*/site-packages` directories of a venv.
fn site_packages(venv: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for lib in ["lib", "lib64"] {
        let Ok(entries) = std::fs::read_dir(venv.join(lib)) else {
            continue;
        };
        let mut dirs: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("python3"))
            })
            .map(|p| p.join("site-packages"))
            .filter(|p| p.is_dir())
            .collect();
        dirs.sort();
        out.extend(dirs);
    }
    out
}

/// `libonnxruntime.so.1.31.1`-style files in `dir`, newest version name last-sorted first.
fn versioned_sos(dir: &Path, stem: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(stem) && n.len() > stem.len())
        })
        .collect();
    found.sort();
    found.reverse();
    found
}

fn system_dirs(env: &dyn Fn(&str) -> Option<PathBuf>) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(ld) = env("LD_LIBRARY_PATH") {
        dirs.extend(std::env::split_paths(&ld).filter(|p| !p.as_os_str().is_empty()));
    }
    for d in [
        "/usr/local/lib",
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/usr/lib",
        "/usr/lib64",
    ] {
        dirs.push(PathBuf::from(d));
    }
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_venv(root: &Path) -> PathBuf {
        let site = root.join(".venv/lib/python3.11/site-packages");
        std::fs::create_dir_all(site.join("onnxruntime/capi")).unwrap();
        std::fs::create_dir_all(site.join("onnxruntime_qnn")).unwrap();
        std::fs::write(site.join("onnxruntime/capi/libonnxruntime.so.1.31.1"), b"").unwrap();
        std::fs::write(
            site.join("onnxruntime_qnn/libonnxruntime_providers_qnn.so"),
            b"",
        )
        .unwrap();
        std::fs::write(site.join("onnxruntime_qnn/libQnnHtp.so"), b"").unwrap();
        site
    }

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("autoneural-libs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn finds_the_venv_above_the_bundle() {
        let root = tmp("above");
        let site = fake_venv(&root);
        let bundle = root.join("models/tiny");
        std::fs::create_dir_all(&bundle).unwrap();
        let roots = SearchRoots {
            bundle_dir: Some(bundle),
            ..Default::default()
        };
        let none = |_: &str| None;
        let ort = resolve_with(
            Library::OnnxRuntime,
            &LibraryPaths::default(),
            &roots,
            &none,
        )
        .unwrap();
        assert_eq!(ort, site.join("onnxruntime/capi/libonnxruntime.so.1.31.1"));
        let htp =
            resolve_with(Library::QnnBackend, &LibraryPaths::default(), &roots, &none).unwrap();
        assert_eq!(htp, site.join("onnxruntime_qnn/libQnnHtp.so"));
    }

    #[test]
    fn explicit_config_wins_over_env_and_venv() {
        let root = tmp("explicit");
        fake_venv(&root);
        let mine = root.join("mine.so");
        std::fs::write(&mine, b"").unwrap();
        let paths = LibraryPaths {
            qnn_ep: Some(mine.clone()),
            ..Default::default()
        };
        let env = |k: &str| (k == ENV_QNN_EP_LIB).then(|| PathBuf::from("/nonexistent/env.so"));
        let roots = SearchRoots {
            bundle_dir: Some(root.clone()),
            ..Default::default()
        };
        assert_eq!(
            resolve_with(Library::QnnEp, &paths, &roots, &env).unwrap(),
            mine
        );
    }

    #[test]
    fn env_var_wins_over_venv_and_a_wrong_one_is_an_error() {
        let root = tmp("env");
        fake_venv(&root);
        let theirs = root.join("env.so");
        std::fs::write(&theirs, b"").unwrap();
        let roots = SearchRoots {
            bundle_dir: Some(root.clone()),
            ..Default::default()
        };
        let env = |k: &str| (k == ENV_ORT_LIB).then(|| theirs.clone());
        assert_eq!(
            resolve_with(Library::OnnxRuntime, &LibraryPaths::default(), &roots, &env).unwrap(),
            theirs
        );
        let bad = |k: &str| (k == ENV_ORT_LIB).then(|| root.join("typo.so"));
        let err =
            resolve_with(Library::OnnxRuntime, &LibraryPaths::default(), &roots, &bad).unwrap_err();
        assert!(err.to_string().contains("typo.so"), "{err}");
    }

    #[test]
    fn missing_library_names_it_and_the_install_command() {
        let root = tmp("missing");
        let roots = SearchRoots {
            bundle_dir: Some(root.clone()),
            ..Default::default()
        };
        let env = |k: &str| (k == ENV_VENV).then(|| root.join("no-venv"));
        let err =
            resolve_with(Library::QnnBackend, &LibraryPaths::default(), &roots, &env).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("libQnnHtp.so"), "{msg}");
        assert!(msg.contains("./scripts/setup"), "{msg}");
        assert!(msg.contains("AUTONEURAL_QNN_BACKEND"), "{msg}");
    }
}
