//! Public inputs and results: frames, generation parameters, probe answers, timings.

use std::sync::Arc;
use std::time::Duration;

use crate::preprocess::{FrameRef, PixelLayout};

/// An owned camera frame; cloning is cheap (shared pixels).
///
/// `id` identifies the frame's content: two frames with the same id are treated as the same image,
/// so the image + system prefix encoded for one is reused for the other (use the camera's sequence
/// number).
#[derive(Debug, Clone)]
pub struct Frame {
    pub id: u64,
    pub width: u32,
    pub height: u32,
    pub format: PixelLayout,
    pub data: Arc<[u8]>,
}

impl Frame {
    pub fn new(
        id: u64,
        width: u32,
        height: u32,
        format: PixelLayout,
        data: impl Into<Arc<[u8]>>,
    ) -> Frame {
        Frame {
            id,
            width,
            height,
            format,
            data: data.into(),
        }
    }
    pub fn as_ref(&self) -> FrameRef<'_> {
        FrameRef {
            width: self.width,
            height: self.height,
            format: self.format,
            data: &self.data,
        }
    }
}

/// How the next token is chosen.
#[derive(Debug, Clone, PartialEq)]
pub enum Sampling {
    /// Argmax (the first maximum on ties).
    Greedy,
    /// Seeded sampling: temperature, then top-k (0 = off), then top-p (1.0 = off).
    Sample {
        temperature: f32,
        top_k: usize,
        top_p: f32,
        seed: u64,
    },
}

/// Free-text generation parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateParams {
    pub max_tokens: usize,
    pub sampling: Sampling,
    /// Stop at the bundle's stop tokens (`text.stop_tokens` + eos). Off only for parity tests.
    pub use_bundle_stop_tokens: bool,
    /// Extra stop token ids.
    pub stop_tokens: Vec<u32>,
    /// Stop strings; the text returned and streamed ends before the first one found.
    pub stop_strings: Vec<String>,
}

impl Default for GenerateParams {
    fn default() -> Self {
        GenerateParams {
            max_tokens: 64,
            sampling: Sampling::Greedy,
            use_bundle_stop_tokens: true,
            stop_tokens: Vec::new(),
            stop_strings: Vec::new(),
        }
    }
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// A stop token or stop string.
    Stop,
    /// `max_tokens` reached.
    Length,
    /// The KV buffer is full (kv_capacity); the text so far is returned.
    ContextFull,
    /// Cancelled while decoding; the text so far is returned.
    Cancelled,
}

/// A generated answer.
#[derive(Debug, Clone)]
pub struct Generation {
    pub text: String,
    /// Generated token ids (without the stop token).
    pub tokens: Vec<u32>,
    pub finish: FinishReason,
    pub timings: Timings,
}

/// One probe's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeAnswer {
    pub id: String,
    pub field: String,
    /// The most probable answer.
    pub answer: String,
    /// (answer, probability) in the probe's answer order; probabilities sum to 1.
    pub probabilities: Vec<(String, f32)>,
    /// P(one of the probe's positive answers): the observation field's value.
    pub field_probability: f32,
}

impl ProbeAnswer {
    pub fn probability(&self, answer: &str) -> Option<f32> {
        self.probabilities
            .iter()
            .find(|(a, _)| a == answer)
            .map(|(_, p)| *p)
    }
}

/// How much of a model's context a prompt takes before its first generated token (frame prefix +
/// question), against the fixed capacity of a bundle's KV.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContextUse {
    pub prompt: usize,
    pub capacity: usize,
}

impl ContextUse {
    /// Tokens a generation can produce after the prompt (0: the prompt alone does not fit).
    pub fn room(&self) -> usize {
        (self.capacity + 1).saturating_sub(self.prompt)
    }
}

/// All probes of one frame.
#[derive(Debug, Clone)]
pub struct ProbeOutcome {
    pub frame_id: u64,
    pub answers: Vec<ProbeAnswer>,
    pub timings: Timings,
}

/// Where the time of one request went. Durations not involved in a request are zero.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Timings {
    /// Frame -> pixel_values (resize + normalise).
    pub preprocess: Duration,
    /// The vision graph.
    pub vision: Duration,
    /// Encoding the shared prefix (system prompt + image embeddings) through the decoder.
    pub prefix_prefill: Duration,
    pub prefix_tokens: usize,
    /// The frame's prefix was already encoded (preprocess/vision/prefix_prefill are zero).
    pub prefix_reused: bool,
    /// Prefilling the question tokens after the prefix (all probes together for a probe request).
    pub prefill: Duration,
    pub prefill_tokens: usize,
    /// Request start to the first generated token (generation only).
    pub ttft: Option<Duration>,
    /// Decoding after the first token (time paused for safety probes excluded).
    pub decode: Duration,
    pub decode_tokens: usize,
    /// Scoring the probes' answers (prefill of questions included).
    pub probe: Duration,
    /// The whole request.
    pub total: Duration,
    /// Of `total`, the time spent inside ONNX Runtime's `Session::run`.
    pub in_session_run: Duration,
    /// Number of `Session::run` calls.
    pub session_runs: usize,
    /// Time the job waited in the worker's queue (not part of `total`).
    pub queue_wait: Duration,
    /// Safety probes that ran inside this generation, between two of its tokens, and the time the
    /// generation was paused for them (part of `total` and `ttft`, not of `decode`).
    pub preemptions: usize,
    pub preempted: Duration,
}

impl Timings {
    /// Decoded tokens per second after the first token (None if fewer than 2 tokens).
    pub fn decode_tokens_per_s(&self) -> Option<f64> {
        (self.decode_tokens > 0 && !self.decode.is_zero())
            .then(|| self.decode_tokens as f64 / self.decode.as_secs_f64())
    }
    /// Prefill tokens per second of the question part.
    pub fn prefill_tokens_per_s(&self) -> Option<f64> {
        (self.prefill_tokens > 0 && !self.prefill.is_zero())
            .then(|| self.prefill_tokens as f64 / self.prefill.as_secs_f64())
    }
    /// Time spent in this crate (and the tokenizer) rather than in `Session::run` (time paused for
    /// safety probes excluded).
    pub fn outside_session_run(&self) -> Duration {
        self.total
            .saturating_sub(self.in_session_run)
            .saturating_sub(self.preempted)
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

impl std::fmt::Display for Timings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "total {:.2} ms", ms(self.total))?;
        if self.prefix_reused {
            write!(f, " | prefix reused")?;
        } else {
            write!(
                f,
                " | preprocess {:.2} ms | vision {:.2} ms | prefix prefill {:.2} ms ({} tok)",
                ms(self.preprocess),
                ms(self.vision),
                ms(self.prefix_prefill),
                self.prefix_tokens
            )?;
        }
        write!(
            f,
            " | prefill {:.2} ms ({} tok)",
            ms(self.prefill),
            self.prefill_tokens
        )?;
        if let Some(t) = self.ttft {
            write!(f, " | TTFT {:.2} ms", ms(t))?;
        }
        if let Some(r) = self.decode_tokens_per_s() {
            write!(f, " | decode {:.1} tok/s ({} tok)", r, self.decode_tokens)?;
        }
        if !self.probe.is_zero() {
            write!(f, " | probes {:.2} ms", ms(self.probe))?;
        }
        if self.preemptions > 0 {
            write!(
                f,
                " | paused {:.2} ms for {} safety probe(s)",
                ms(self.preempted),
                self.preemptions
            )?;
        }
        write!(
            f,
            " | in Session::run {:.2} ms ({} runs), outside {:.2} ms",
            ms(self.in_session_run),
            self.session_runs,
            ms(self.outside_session_run())
        )
    }
}
