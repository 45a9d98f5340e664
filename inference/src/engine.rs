//! The `Engine`: one loaded model, whatever its format, behind one synchronous API (frame ->
//! probes / generated text, with timings). One `Engine` is used by one thread at a time (the
//! `Worker` owns one); every call blocks on ONNX Runtime.
//!
//! Two formats, detected from the directory:
//! - an AutoNeural bundle (`manifest.toml`, static graphs for the NPU; ARCHITECTURE.md contract 1),
//!   run by `bundle_engine`;
//! - a published LFM2-VL / LFM2.5-VL ONNX release (`config.json` + `onnx/`), run by `published`.
//!
//! What both share — the request path over the `Backend` trait each format implements — is in
//! `request`.

use std::sync::atomic::AtomicBool;

use crate::bundle::Bundle;
use crate::bundle_engine::BundleEngine;
use crate::config::EngineConfig;
use crate::error::{Error, Result};
use crate::probes::{Probe, ProbeSet};
use crate::providers::SessionReport;
use crate::published::{self, PublishedModel};
use crate::request::{Preempt, encode_frame, generate, generate_ids, probe};
use crate::sampling::Sampler;
use crate::types::{ContextUse, Frame, GenerateParams, Generation, ProbeOutcome, Timings};

/// A loaded model with its sessions and decoder state.
pub struct Engine {
    inner: Inner,
}

enum Inner {
    Bundle(Box<BundleEngine>),
    Published(Box<PublishedModel>),
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.inner {
            Inner::Bundle(b) => b.fmt(f),
            Inner::Published(p) => write!(f, "PublishedModel({})", p.layout().dir.display()),
        }
    }
}

/// The model format of a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelFormat {
    /// `manifest.toml`: an AutoNeural bundle.
    Bundle,
    /// `config.json` + `onnx/`: a published LFM2-VL ONNX release.
    Published,
}

impl ModelFormat {
    /// Detects the format; a directory that is neither is reported as a bundle (whose loader names
    /// the missing manifest.toml).
    pub fn of(dir: &std::path::Path) -> ModelFormat {
        if published::is_published(dir) {
            ModelFormat::Published
        } else {
            ModelFormat::Bundle
        }
    }
}

/// The square frame size the model in `dir` takes (a bundle's `image.size`), or `None` when it takes
/// frames of any size (a published release, whose processor resizes keeping the aspect ratio).
pub fn input_size(dir: &std::path::Path) -> Result<Option<u32>> {
    match ModelFormat::of(dir) {
        ModelFormat::Published => Ok(None),
        ModelFormat::Bundle => Ok(Some(crate::bundle::read_manifest(dir)?.image.size)),
    }
}

macro_rules! each {
    ($self:expr, $m:ident => $e:expr) => {
        match &$self.inner {
            Inner::Bundle($m) => $e,
            Inner::Published($m) => $e,
        }
    };
    (mut $self:expr, $m:ident => $e:expr) => {
        match &mut $self.inner {
            Inner::Bundle($m) => $e,
            Inner::Published($m) => $e,
        }
    };
}

impl Engine {
    /// Loads the model in `config.bundle` (either format), creates its sessions on the configured
    /// providers and checks every graph's inputs/outputs.
    pub fn load(config: &EngineConfig) -> Result<Engine> {
        if config.providers.is_empty() {
            return Err(Error::Config("providers is empty".into()));
        }
        let inner = match ModelFormat::of(&config.bundle) {
            ModelFormat::Bundle => Inner::Bundle(Box::new(BundleEngine::load(config)?)),
            ModelFormat::Published => Inner::Published(Box::new(PublishedModel::load(config)?)),
        };
        Ok(Engine { inner })
    }

    pub fn format(&self) -> ModelFormat {
        match self.inner {
            Inner::Bundle(_) => ModelFormat::Bundle,
            Inner::Published(_) => ModelFormat::Published,
        }
    }
    /// The AutoNeural bundle, when the model is one.
    pub fn bundle(&self) -> Option<&Bundle> {
        match &self.inner {
            Inner::Bundle(b) => Some(b.bundle()),
            Inner::Published(_) => None,
        }
    }
    /// The model's name: the bundle manifest's, or the release directory's.
    pub fn name(&self) -> &str {
        match &self.inner {
            Inner::Bundle(b) => &b.bundle().manifest.name,
            Inner::Published(p) => p.name(),
        }
    }
    pub fn variant(&self) -> &str {
        each!(self, m => m.variant())
    }
    /// Per graph: provider, model file, creation/compile time, node placement.
    pub fn reports(&self) -> &[SessionReport] {
        each!(self, m => m.reports())
    }
    pub fn probes(&self) -> &ProbeSet {
        each!(self, m => m.probes())
    }
    /// Positions used so far in the decoder's context (prefix + last question / generation).
    pub fn position(&self) -> usize {
        each!(self, m => m.position())
    }
    /// The most positions a bundle's context holds (its kv_capacity); `None` for a release, whose
    /// KV grows.
    pub fn kv_capacity(&self) -> Option<usize> {
        match &self.inner {
            Inner::Bundle(b) => Some(b.kv_capacity()),
            Inner::Published(_) => None,
        }
    }
    /// The capacity a bundle's decoder attends over now: the capacity bucket the context fills
    /// when its CPU graphs name the KV capacity (forge/capacity.py), else kv_capacity; `None` for
    /// a release.
    pub fn kv_bound(&self) -> Option<usize> {
        match &self.inner {
            Inner::Bundle(b) => Some(b.kv_bound()),
            Inner::Published(_) => None,
        }
    }
    /// The width a bundle's decoder_prefill ran its last call at: the smallest of prefill_chunk,
    /// its halves, ... that held the part, when its CPU graph names the width
    /// (forge/prefill_width.py), else prefill_chunk; `None` for a release.
    pub fn prefill_width(&self) -> Option<usize> {
        match &self.inner {
            Inner::Bundle(b) => Some(b.prefill_width()),
            Inner::Published(_) => None,
        }
    }
    /// How much of the context a request for `question` takes before its first token; `None` for
    /// a published release, whose KV grows (and whose image takes a frame-dependent token count).
    pub fn context_use(&self, question: &str) -> Result<Option<ContextUse>> {
        match &self.inner {
            Inner::Bundle(b) => b.bundle().context_use(question).map(Some),
            Inner::Published(_) => Ok(None),
        }
    }
    /// Drops the cached frame prefix (the next request re-encodes its frame).
    pub fn forget_prefix(&mut self) {
        each!(mut self, m => m.forget_prefix())
    }
    /// Tokenizes the prompt for `question`: (ids before the question, the question's ids).
    pub fn prompt_ids(&self, question: &str) -> Result<(Vec<u32>, Vec<u32>)> {
        each!(self, m => m.prompt_ids(question))
    }
    /// Encodes the frame's image + prompt prefix unless this frame (by id) is already encoded.
    pub fn encode_frame(&mut self, frame: &Frame) -> Result<Timings> {
        each!(mut self, m => encode_frame(m.as_mut(), frame))
    }
    /// Answers `probes` about `frame` by constrained decoding from the frame's shared prefix (encoded
    /// once, reused by every probe; see ARCHITECTURE.md "Probe scoring").
    pub fn probe(&mut self, frame: &Frame, probes: &[Probe]) -> Result<ProbeOutcome> {
        each!(mut self, m => probe(m.as_mut(), frame, probes))
    }
    /// Generates free text about `frame` for `question`, streaming text deltas to `on_text`;
    /// `cancel` stops decoding between tokens.
    pub fn generate(
        &mut self,
        frame: &Frame,
        question: &str,
        params: &GenerateParams,
        on_text: &mut dyn FnMut(&str),
        cancel: &AtomicBool,
    ) -> Result<Generation> {
        self.generate_preemptible(frame, question, params, on_text, cancel, &mut || None)
    }
    /// `generate`, pausing for the safety requests `preempt` hands out between two tokens: each
    /// runs at once on its own frame, and the generation then goes on exactly where it was.
    pub fn generate_preemptible(
        &mut self,
        frame: &Frame,
        question: &str,
        params: &GenerateParams,
        on_text: &mut dyn FnMut(&str),
        cancel: &AtomicBool,
        preempt: Preempt,
    ) -> Result<Generation> {
        Sampler::validate(&params.sampling).map_err(Error::Config)?;
        each!(mut self, m => generate(m.as_mut(), frame, question, params, on_text, cancel, &mut *preempt))
    }
    /// Generates from prompt token ids alone: the language model by itself, without a frame or
    /// the chat template (the ids are fed as they are). For text-only references and requests; the
    /// next frame request encodes its frame again.
    pub fn generate_ids(
        &mut self,
        prompt_ids: &[u32],
        params: &GenerateParams,
        on_text: &mut dyn FnMut(&str),
        cancel: &AtomicBool,
    ) -> Result<Generation> {
        Sampler::validate(&params.sampling).map_err(Error::Config)?;
        each!(mut self, m => generate_ids(m.as_mut(), prompt_ids, params, on_text, cancel))
    }
}
