//! autoneural-inference: AutoNeural model bundles on ONNX Runtime — the QNN HTP (NPU), CPU and CUDA
//! execution providers — with the vision -> decoder pipeline, probes, generation and timings.
//!
//! - [`Engine`]: synchronous; loads a model — an AutoNeural bundle (manifest, checksums, tokenizer,
//!   graph I/O checks) or a published LFM2-VL ONNX release ([`published`]) — creates one session per
//!   graph on the configured providers, and answers probes / generates text about frames. The image
//!   + prompt prefix of a frame is encoded once and reused.
//! - [`Worker`]: a dedicated thread owning an `Engine` behind one bounded priority queue
//!   (Safety > Description > Question); results are futures ([`JobHandle`]).
//!
//! The bundle and graph contract is ARCHITECTURE.md, contract 1; [`bundle`] holds its manifest types
//! (the root exports only `Bundle` and `Verify`). Libraries are found by [`libraries`] (config ->
//! env -> project venv -> system paths).

pub mod bundle;
mod bundle_engine;
mod config;
mod decoder;
mod engine;
mod error;
mod graphs;
mod job;
pub mod libraries;
mod preprocess;
mod probes;
mod providers;
pub mod published;
mod request;
mod runtime;
mod sampling;
mod types;
mod worker;

pub use bundle::{Bundle, Verify};
pub use config::{CpuOptions, CudaOptions, EngineConfig, PERFORMANCE_MODES, Provider, QnnOptions};
pub use engine::{Engine, ModelFormat, input_size};
pub use error::{BundleError, Error, FrameError, LibraryError, Result};
pub use job::{JobClass, QueueLimits};
pub use libraries::LibraryPaths;
pub use preprocess::{FrameRef, PixelLayout, Preprocessor};
pub use probes::{Probe, ProbeSet};
pub use providers::{ModelSource, SessionReport, cpu_graph_session};
pub use request::{Preempt, Preemption};
pub use sampling::Detokenizer;
pub use types::{
    ContextUse, FinishReason, Frame, GenerateParams, Generation, ProbeAnswer, ProbeOutcome,
    Sampling, Timings,
};
pub use worker::{EngineInfo, JobHandle, TextSink, Worker};
