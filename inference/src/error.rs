//! Typed errors. Every variant says which file / graph / input is at fault and what is wrong with it,
//! so a daemon can log it verbatim and an operator can act on it.

use std::path::PathBuf;

/// Everything the inference crate can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A shared library (ONNX Runtime, the QNN EP plugin, the HTP backend) could not be found or loaded.
    #[error(transparent)]
    Library(#[from] LibraryError),

    /// The model bundle is missing a file, has a bad checksum, a bad manifest or graph.
    #[error(transparent)]
    Bundle(#[from] BundleError),

    /// No execution provider in the configured list could run a graph.
    #[error("graph `{graph}`: no execution provider could run it ({})", attempts.join("; "))]
    NoProvider {
        graph: String,
        attempts: Vec<String>,
    },

    /// `require_full_offload` is set and the graph does not run entirely on the NPU.
    #[error(
        "graph `{graph}` does not fully offload to {provider} (require_full_offload is set): {reason}"
    )]
    NotFullyOffloaded {
        graph: String,
        provider: String,
        reason: String,
    },

    /// ONNX Runtime failed while creating a session or running a graph.
    #[error("graph `{graph}`: ONNX Runtime {during} failed: {message}")]
    Ort {
        graph: String,
        during: &'static str,
        message: String,
    },

    /// The EP context cache directory could not be written or read.
    #[error("EP context cache {path}: {message}")]
    Cache { path: PathBuf, message: String },

    /// The frame handed in does not describe a valid image.
    #[error(transparent)]
    Frame(#[from] FrameError),

    /// The prompt plus what is asked to be generated does not fit the decoder's KV capacity.
    #[error("context full: {needed} positions needed, the decoder's kv_capacity is {capacity}")]
    ContextFull { needed: usize, capacity: usize },

    /// Text that cannot be tokenized, or a prompt/probe that does not fit the template.
    #[error("prompt: {0}")]
    Prompt(String),

    /// A probe or question asked before any frame was encoded.
    #[error("no frame has been encoded yet; encode a frame before probing or asking about it")]
    NoFrame,

    /// The job's class queue is full; the job was not queued.
    #[error("{class:?} queue is full ({capacity} jobs); job rejected")]
    QueueFull {
        class: crate::job::JobClass,
        capacity: usize,
    },

    /// A newer job of the same class replaced this queued one (latest frame wins).
    #[error("superseded by a newer {class:?} job before it ran")]
    Superseded { class: crate::job::JobClass },

    /// The job was cancelled before or while it ran.
    #[error("cancelled")]
    Cancelled,

    /// The worker thread has stopped (shut down or its engine failed to load).
    #[error("inference worker stopped: {0}")]
    WorkerStopped(String),

    /// Bad configuration values.
    #[error("config: {0}")]
    Config(String),
}

/// A library the runtime needs could not be found or loaded.
#[derive(Debug, thiserror::Error)]
pub enum LibraryError {
    #[error(
        "{what} not found (looked in: {}). Install it with `{install}`, or point {env_var} at it",
        searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    NotFound {
        what: &'static str,
        searched: Vec<PathBuf>,
        env_var: &'static str,
        install: &'static str,
    },

    #[error("{what} at {path} could not be loaded: {message}")]
    Load {
        what: &'static str,
        path: PathBuf,
        message: String,
    },

    #[error(
        "ONNX Runtime is already initialised in this process from {existing}; cannot switch to {requested}"
    )]
    Conflict {
        existing: PathBuf,
        requested: PathBuf,
    },
}

/// A problem with a model bundle; always names the file.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{path}: missing ({message})")]
    Missing { path: PathBuf, message: String },

    #[error("{path}: cannot read: {message}")]
    Read { path: PathBuf, message: String },

    #[error("{path}: invalid: {message}")]
    Invalid { path: PathBuf, message: String },

    #[error("{path}: SHA-256 mismatch: manifest says {expected}, file has {actual}")]
    Checksum {
        path: PathBuf,
        expected: String,
        actual: String,
    },

    #[error("{path}: file is in the bundle directory but not listed in manifest.toml [files]")]
    Unlisted { path: PathBuf },

    #[error("{path}: graph does not match the manifest: {message}")]
    Graph { path: PathBuf, message: String },

    #[error("manifest.toml: variant `{variant}` not in the bundle (has: {})", available.join(", "))]
    NoVariant {
        variant: String,
        available: Vec<String>,
    },
}

impl BundleError {
    /// A file that could not be read: `Missing` when it is not there, else `Read`.
    pub(crate) fn io(path: &std::path::Path, e: std::io::Error) -> BundleError {
        match e.kind() {
            std::io::ErrorKind::NotFound => BundleError::Missing {
                path: path.to_path_buf(),
                message: e.to_string(),
            },
            _ => BundleError::Read {
                path: path.to_path_buf(),
                message: e.to_string(),
            },
        }
    }
}

/// A frame that is not a valid image.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame is {width}x{height}: both sides must be at least 1 pixel")]
    Empty { width: u32, height: u32 },
    #[error(
        "frame is {width}x{height} {format:?} ({expected} bytes) but its buffer holds {actual} bytes"
    )]
    SizeMismatch {
        width: u32,
        height: u32,
        format: crate::PixelLayout,
        expected: usize,
        actual: usize,
    },
    #[error("frame is {width}x{height}: larger than the 16384x16384 the preprocessor accepts")]
    TooLarge { width: u32, height: u32 },
    #[error("resizing the frame failed: {message}")]
    Resize { message: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn ort_err(graph: &str, during: &'static str, e: impl std::fmt::Display) -> Error {
    Error::Ort {
        graph: graph.to_string(),
        during,
        message: e.to_string(),
    }
}
