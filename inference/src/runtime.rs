//! The process-wide ONNX Runtime environment.
//!
//! ONNX Runtime allows one environment per process and `ort` loads the library once, so both live in
//! a process-global here: the first engine picks the library, later engines share it (asking for a
//! different library is a typed `Conflict`, never a silent switch). Plugin EP libraries (QNN) are
//! registered once, on first use.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use crate::error::{Error, LibraryError};
use crate::libraries::{self, Library, LibraryPaths};

/// Name the QNN plugin is registered under; its devices report the EP name below.
pub(crate) const QNN_EP_NAME: &str = "QNNExecutionProvider";

pub(crate) struct Runtime {
    pub env: ort::environment::Environment,
    pub ort_lib: PathBuf,
    /// The registered QNN plugin library, once registered.
    qnn: Mutex<Option<PathBuf>>,
}

static RUNTIME: OnceLock<Runtime> = OnceLock::new();
static INIT: Mutex<()> = Mutex::new(());

/// Returns the environment, initialising it from the discovered ONNX Runtime library on first use.
pub(crate) fn runtime(
    paths: &LibraryPaths,
    bundle_dir: Option<&Path>,
) -> Result<&'static Runtime, Error> {
    let wanted = libraries::resolve(Library::OnnxRuntime, paths, bundle_dir);
    if let Some(rt) = RUNTIME.get() {
        // An explicitly different library is a conflict; discovery finding the same one is fine.
        if let Ok(w) = &wanted
            && !same_file(w, &rt.ort_lib)
            && (paths.onnxruntime.is_some() || std::env::var_os(libraries::ENV_ORT_LIB).is_some())
        {
            return Err(LibraryError::Conflict {
                existing: rt.ort_lib.clone(),
                requested: w.clone(),
            }
            .into());
        }
        return Ok(rt);
    }
    let _guard = INIT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    let lib = wanted?;
    disable_telemetry();
    let builder = ort::init_from(&lib).map_err(|e| LibraryError::Load {
        what: Library::OnnxRuntime.describe(),
        path: lib.clone(),
        message: e.to_string(),
    })?;
    let env = builder
        .with_name("autoneural")
        .with_telemetry(false)
        .with_logger(std::sync::Arc::new(forward_ort_log))
        .build()
        .map_err(|e| LibraryError::Load {
            what: Library::OnnxRuntime.describe(),
            path: lib.clone(),
            message: e.to_string(),
        })?;
    // The custom logger is installed at verbose level; format nothing below warnings.
    env.set_log_level(ort::logging::LogLevel::Warning);
    let rt = Runtime {
        env,
        ort_lib: lib,
        qnn: Mutex::new(None),
    };
    Ok(RUNTIME.get_or_init(|| rt))
}

/// ONNX Runtime's own switch for its telemetry (1DS "OneCollector" events to
/// mobile.events.data.microsoft.com, queued in `~/.cache/Microsoft/DeveloperTools/.onnxruntime/
/// onnxruntime.db`). The API switch (`with_telemetry(false)`, `DisableTelemetryEvents`) only stops
/// the events the environment sends after it is built: ONNX Runtime 1.31.1 has already opened the
/// database and resolved the collector by then. The environment variable is read when the library
/// starts its telemetry provider, so it must be set before the library is loaded. It is the only
/// telemetry switch the library has (its strings name no other).
pub(crate) const ENV_ORT_DISABLE_TELEMETRY: &str = "ORT_DISABLE_TELEMETRY";

/// Sets `ORT_DISABLE_TELEMETRY=1` for this process, before ONNX Runtime is loaded.
///
/// Called once, by the thread that loads the library, while it holds `INIT`. The systemd unit sets
/// the variable too (`Environment=`), so in the service this finds it set and changes nothing.
fn disable_telemetry() {
    if std::env::var_os(ENV_ORT_DISABLE_TELEMETRY).is_some_and(|v| v == "1") {
        return;
    }
    // SAFETY: `set_var` is unsafe because another thread may read the environment at the same
    // time. Here: (1) Rust readers (`std::env::var*`, `Command`) take std's environment lock, as
    // `set_var` does, so they cannot race with it; (2) ONNX Runtime, the one C library that reads
    // this variable, is not loaded yet, and the `INIT` lock makes this the only thread loading it;
    // (3) this runs once per process (the `RUNTIME` check above it), when the first engine loads,
    // at start-up before the daemon starts its camera, D-Bus and pipeline work, so no other C code
    // is expected to be calling `getenv` then. The remaining risk, a C library's `getenv` on another
    // thread during this one call, is the price of ONNX Runtime having no API switch that acts
    // before the library starts; the systemd unit sets the variable so that the service never takes
    // this path.
    unsafe { std::env::set_var(ENV_ORT_DISABLE_TELEMETRY, "1") };
}

impl Runtime {
    /// Registers the QNN plugin EP library (once per process) and returns its path.
    pub(crate) fn ensure_qnn(&self, lib: &Path) -> Result<PathBuf, Error> {
        let mut registered = self.qnn.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(existing) = registered.as_ref() {
            if !same_file(existing, lib) {
                return Err(LibraryError::Conflict {
                    existing: existing.clone(),
                    requested: lib.to_path_buf(),
                }
                .into());
            }
            return Ok(existing.clone());
        }
        self.env
            .register_ep_library(QNN_EP_NAME, lib)
            .map_err(|e| LibraryError::Load {
                what: Library::QnnEp.describe(),
                path: lib.to_path_buf(),
                message: e.to_string(),
            })?;
        *registered = Some(lib.to_path_buf());
        Ok(lib.to_path_buf())
    }

    /// The ONNX Runtime version string of the loaded library.
    pub(crate) fn version(&self) -> String {
        self.ort_lib
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("libonnxruntime.so."))
            .unwrap_or("unknown")
            .to_string()
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// ONNX Runtime's own log lines go to the `log` facade (journald in the daemon), verbose ones dropped.
fn forward_ort_log(
    level: ort::logging::LogLevel,
    category: &str,
    _id: &str,
    location: &str,
    message: &str,
) {
    use ort::logging::LogLevel as L;
    let lvl = match level {
        L::Verbose => return,
        L::Info => log::Level::Debug,
        L::Warning => log::Level::Warn,
        L::Error | L::Fatal => log::Level::Error,
    };
    log::log!(target: "onnxruntime", lvl, "[{category}] {message} ({location})");
}
