//! The face crate's errors: each names the file or the graph it is about.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum FaceError {
    /// The bundle directory, its manifest or one of its files is missing, unreadable or wrong.
    #[error("{path}: {message}")]
    Bundle { path: PathBuf, message: String },
    /// ONNX Runtime could not load or run a graph.
    #[error("face graph {graph}: {message}")]
    Runtime { graph: String, message: String },
    /// The image handed in does not describe its pixels (size, length).
    #[error("face input image: {0}")]
    Image(String),
}

impl FaceError {
    pub(crate) fn bundle(path: impl Into<PathBuf>, message: impl std::fmt::Display) -> Self {
        Self::Bundle {
            path: path.into(),
            message: message.to_string(),
        }
    }

    pub(crate) fn runtime(graph: &str, message: impl std::fmt::Display) -> Self {
        Self::Runtime {
            graph: graph.to_string(),
            message: message.to_string(),
        }
    }
}
