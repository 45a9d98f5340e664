//! The synchronous pipeline over one AutoNeural bundle (contract 1): frame -> preprocessing -> vision -> image embeddings at
//! the `<image>` token -> chunked prefill -> probes / decode. One `Engine` is used by one thread at a
//! time (the `Worker` owns one); every call blocks on ONNX Runtime.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use crate::bundle::{Bundle, GraphKind, Verify};
use crate::config::{EngineConfig, Provider};
use crate::decoder::{
    DecoderGraph, DecoderState, EmbedGraph, Graph, RunClock, SavedContext, VisionGraph,
};
use crate::error::{Error, Result};
use crate::graphs;
use crate::preprocess::Preprocessor;
use crate::probes::ProbeSet;
use crate::providers::{SessionFactory, SessionReport};
use crate::request::{Backend, Decode};
use crate::types::{Frame, Timings};

/// The encoded image + system prefix of one frame.
#[derive(Clone, Copy)]
struct Prefix {
    frame_id: u64,
    pos: usize,
}

/// A request's decoder state while another request uses the decoder (`Backend::suspend`).
pub(crate) struct Suspended {
    context: SavedContext,
    logits: Vec<f32>,
    prefix: Option<Prefix>,
    prefix_conv: Vec<f32>,
    clock: RunClock,
}

/// A loaded bundle with one session per graph and the decoder's state.
pub(crate) struct BundleEngine {
    bundle: Bundle,
    variant: String,
    reports: Vec<SessionReport>,
    pre: Preprocessor,
    vision: VisionGraph,
    embed: EmbedGraph,
    prefill: DecoderGraph,
    step: DecoderGraph,
    state: DecoderState,
    /// Token ids of the prompt before the image token (system turn), the same for every question.
    prefix_ids: Vec<u32>,
    prefix: Option<Prefix>,
    /// Conv states after the prefix (KV rows below the prefix length are never overwritten).
    prefix_conv: Vec<f32>,
    /// Token ids of probe questions / answers, tokenized once ("q:" / "a:" + text).
    ids_cache: HashMap<String, Arc<[u32]>>,
    /// Probe scratch: logits and conv states after a probe's question.
    q_logits: Vec<f32>,
    q_conv: Vec<f32>,
    /// Reused buffers: embedding rows to feed, the last logits row.
    seq: Vec<f32>,
    logits: Vec<f32>,
    clock: RunClock,
}

impl std::fmt::Debug for BundleEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BundleEngine")
            .field("bundle", &self.bundle)
            .field("variant", &self.variant)
            .finish_non_exhaustive()
    }
}

impl BundleEngine {
    /// Loads and verifies the bundle, creates the four sessions on the configured providers and
    /// checks every graph's inputs/outputs against the manifest.
    pub fn load(config: &EngineConfig) -> Result<BundleEngine> {
        if config.providers.is_empty() {
            return Err(Error::Config("providers is empty".into()));
        }
        let verify = if config.verify_checksums {
            Verify::Checksums
        } else {
            Verify::Presence
        };
        let bundle = Bundle::load(&config.bundle, config.probes.as_deref(), verify)?;
        let rt = crate::runtime::runtime(&config.libraries, Some(&config.bundle))?;
        let variant = choose_variant(config, &bundle);
        let v = bundle.variant(&variant)?.clone();
        let factory = SessionFactory {
            rt,
            config,
            bundle: &bundle,
            variant_name: &variant,
            variant: &v,
            prepacked: ort::session::builder::PrepackedWeights::new(),
        };
        let m = &bundle.manifest;
        let mut reports = Vec::new();
        let mut graphs = Vec::new();
        let mut growable = Vec::new();
        let mut width_free = false;
        for kind in GraphKind::ALL {
            let (session, report) = factory.create(kind)?;
            let (ins, outs) = graphs::actual(&session);
            let file = bundle.dir.join(v.graph(kind));
            graphs::check(&file, &graphs::expected(m, kind), &ins, &outs)?;
            if matches!(kind, GraphKind::DecoderPrefill | GraphKind::DecoderStep) {
                growable.push((file, graphs::growable(&ins)));
            }
            if kind == GraphKind::DecoderPrefill {
                width_free = graphs::width_free(&ins);
            }
            log::info!("{report}");
            reports.push(report);
            graphs.push(Graph::new(kind, session)?);
        }
        let mut it = graphs.into_iter();
        let (Some(vg), Some(eg), Some(pg), Some(sg)) = (it.next(), it.next(), it.next(), it.next())
        else {
            return Err(Error::Config("internal: four graphs expected".into()));
        };
        if !m.decoder.prefill_conv_index {
            log::info!(
                "{}: decoder_prefill has no `conv_index` input: the part of each prompt past the \
                 last full chunk runs one token at a time (`python -m forge upgrade-prefill` \
                 upgrades the bundle for a faster first token)",
                bundle.dir.display()
            );
        }
        let growable = match growable.as_slice() {
            [(_, a), (_, b)] if a == b => *a,
            [(prefill, a), (step, _)] => {
                let (named, fixed) = if *a { (prefill, step) } else { (step, prefill) };
                return Err(crate::error::BundleError::Graph {
                    path: fixed.clone(),
                    message: format!(
                        "fixes the KV capacity while {} names it: both decoder graphs of a \
                         variant must do the same",
                        named.display()
                    ),
                }
                .into());
            }
            _ => false,
        };
        if !growable && !v.is_qdq() {
            log::info!(
                "{}: the {variant} decoder graphs fix the KV capacity at {}: every step attends \
                 over all of it (`python -m forge upgrade-capacity` lets the CPU attend over the \
                 filled part)",
                bundle.dir.display(),
                m.decoder.kv_capacity
            );
        }
        let state = DecoderState::new(m, growable && !config.preallocate_kv)?;
        log::debug!("decoder: KV capacity buckets {:?}", state.buckets());
        let vision = VisionGraph::new(vg, m)?;
        let embed = EmbedGraph::new(eg, m)?;
        // a width-free prefill graph runs short parts at a smaller width; a whole-capacity KV
        // (`preallocate_kv`) keeps the graphs' full shapes as well
        let width_free = width_free && !config.preallocate_kv;
        log::debug!("decoder_prefill: width free: {width_free}");
        let prefill = DecoderGraph::new(pg, m, &state, width_free)?;
        let step = DecoderGraph::new(sg, m, &state, false)?;
        let pre = Preprocessor::new(m.image.size, m.image.mean, m.image.std);
        let logits = vec![0.0; m.text.vocab_size];
        let mut engine = BundleEngine {
            prefix_ids: Vec::new(),
            bundle,
            variant,
            reports,
            pre,
            vision,
            embed,
            prefill,
            step,
            state,
            prefix: None,
            prefix_conv: Vec::new(),
            ids_cache: HashMap::new(),
            q_logits: Vec::new(),
            q_conv: Vec::new(),
            seq: Vec::new(),
            logits,
            clock: RunClock::default(),
        };
        engine.prefix_ids = engine.prompt_ids("x")?.0;
        Ok(engine)
    }

    pub fn bundle(&self) -> &Bundle {
        &self.bundle
    }
    pub fn variant(&self) -> &str {
        &self.variant
    }
    /// Per graph: provider, model file, creation/compile time, node placement.
    pub fn reports(&self) -> &[SessionReport] {
        &self.reports
    }
    pub fn probes(&self) -> &ProbeSet {
        &self.bundle.probes
    }
    /// Positions used so far in the KV buffer (prefix + last question / generation).
    pub fn position(&self) -> usize {
        self.state.pos
    }
    pub fn kv_capacity(&self) -> usize {
        self.state.capacity
    }
    /// The capacity of the KV buffers bound now (the capacity bucket the context fills, or
    /// kv_capacity for static graphs).
    pub fn kv_bound(&self) -> usize {
        self.state.bound()
    }

    /// The width decoder_prefill is bound at: its last call's width when the graph names its width
    /// (forge/prefill_width.py), else always prefill_chunk.
    pub fn prefill_width(&self) -> usize {
        self.prefill.width()
    }

    /// Drops the cached frame prefix (the next request re-encodes its frame).
    pub fn forget_prefix(&mut self) {
        self.prefix = None;
    }

    /// Tokenizes the prompt for `question`: (ids before the image token, ids after it).
    pub fn prompt_ids(&self, question: &str) -> Result<(Vec<u32>, Vec<u32>)> {
        let (before, after) = self.bundle.prompt_ids(question)?;
        if !self.prefix_ids.is_empty() && before != self.prefix_ids {
            return Err(Error::Prompt(
                "the system prefix tokenizes differently for this question".into(),
            ));
        }
        Ok((before, after))
    }

    fn ensure_prefix(&mut self, frame: &Frame, timings: &mut Timings) -> Result<()> {
        if let Some(p) = &self.prefix
            && p.frame_id == frame.id
        {
            timings.prefix_reused = true;
            timings.prefix_tokens = p.pos;
            return Ok(());
        }
        self.prefix = None;
        let t = Instant::now();
        self.pre
            .run(&frame.as_ref(), self.vision.pixels.extract_tensor_mut().1)?;
        timings.preprocess = t.elapsed();

        let t = Instant::now();
        self.vision.graph.run(&mut self.clock)?;
        timings.vision = t.elapsed();

        let t = Instant::now();
        let mut seq = std::mem::take(&mut self.seq);
        seq.clear();
        let res = self
            .embed
            .embed(&self.prefix_ids, &mut seq, &mut self.clock)
            .and_then(|()| {
                seq.extend_from_slice(self.vision.embeds.extract_tensor().1);
                self.state.reset();
                self.feed(&seq)
            });
        self.seq = seq;
        res?;
        timings.prefix_prefill = t.elapsed();
        timings.prefix_tokens = self.state.pos;
        self.state.save_conv(&mut self.prefix_conv);
        self.prefix = Some(Prefix {
            frame_id: frame.id,
            pos: self.state.pos,
        });
        Ok(())
    }

    fn restore_prefix(&mut self) -> Result<()> {
        let p = self.prefix.as_ref().ok_or(Error::NoFrame)?;
        self.state.restore(&self.prefix_conv, p.pos);
        Ok(())
    }

    /// Feeds embedding rows at the current position: full chunks through decoder_prefill, then a
    /// remainder of two or more rows as one more, partial, prefill call when the graph takes
    /// `conv_index`; otherwise the remainder goes through decoder_step row by row (padding never
    /// enters the conv state). Leaves the last logits.
    fn feed(&mut self, rows: &[f32]) -> Result<()> {
        let h = self.bundle.manifest.decoder.hidden;
        let n = rows.len() / h;
        let needed = self.state.pos + n;
        if needed > self.state.capacity {
            return Err(Error::ContextFull {
                needed,
                capacity: self.state.capacity,
            });
        }
        let t = self.prefill.t;
        let mut i = 0;
        if t > 1 {
            while n - i >= t {
                self.prefill.run(
                    &rows[i * h..(i + t) * h],
                    &mut self.state,
                    &mut self.logits,
                    &mut self.clock,
                )?;
                i += t;
            }
            if n - i >= 2 && self.prefill.takes(n - i) {
                self.prefill.run(
                    &rows[i * h..],
                    &mut self.state,
                    &mut self.logits,
                    &mut self.clock,
                )?;
                i = n;
            }
        }
        while i < n {
            self.step.run(
                &rows[i * h..(i + 1) * h],
                &mut self.state,
                &mut self.logits,
                &mut self.clock,
            )?;
            i += 1;
        }
        Ok(())
    }

    /// Embeds token ids and feeds them.
    fn feed_ids(&mut self, ids: &[u32]) -> Result<()> {
        let mut seq = std::mem::take(&mut self.seq);
        seq.clear();
        let res = self
            .embed
            .embed(ids, &mut seq, &mut self.clock)
            .and_then(|()| self.feed(&seq));
        self.seq = seq;
        res
    }

    fn finish_timings(&self, timings: &mut Timings, start: Instant) {
        timings.total = start.elapsed();
        timings.in_session_run = self.clock.in_run;
        timings.session_runs = self.clock.runs;
    }

    /// Token ids of a probe question (`kind` "q:", the part after the image) or answer ("a:"),
    /// tokenized once per text.
    fn cached_ids(&mut self, kind: &str, text: &str) -> Result<Arc<[u32]>> {
        let key = format!("{kind}{text}");
        if let Some(ids) = self.ids_cache.get(&key) {
            return Ok(Arc::clone(ids));
        }
        let ids: Arc<[u32]> = if kind == "q:" {
            self.prompt_ids(text)?.1.into()
        } else {
            self.tokenize_answer(text)?.into()
        };
        if self.ids_cache.len() >= 1024 {
            self.ids_cache.clear(); // bounded: probe sets are small, arbitrary callers cannot grow it
        }
        self.ids_cache.insert(key, Arc::clone(&ids));
        Ok(ids)
    }

    fn tokenize_answer(&self, answer: &str) -> Result<Vec<u32>> {
        let enc = self
            .bundle
            .tokenizer
            .encode(answer, false)
            .map_err(|e| Error::Prompt(e.to_string()))?;
        let ids = enc.get_ids().to_vec();
        if ids.is_empty() {
            return Err(Error::Prompt(format!(
                "answer `{answer}` tokenizes to nothing"
            )));
        }
        Ok(ids)
    }
}

/// The variant when the config names none: for the NPU its QDQ variant (w8a16 first), for the CPU
/// the `cpu-int4` variant when the bundle has one (MatMulNBits: int4 kernels on the CPU), else fp32.
fn choose_variant(config: &EngineConfig, bundle: &Bundle) -> String {
    if let Some(v) = &config.variant {
        return v.clone();
    }
    let variants = &bundle.manifest.variants;
    match config.providers.first() {
        Some(Provider::Qnn(_)) => {
            if variants.contains_key("w8a16") {
                return "w8a16".into();
            }
            if let Some((name, _)) = variants.iter().find(|(_, v)| v.is_qdq()) {
                return name.clone();
            }
        }
        Some(Provider::Cpu(_)) if variants.contains_key(CPU_INT4) => return CPU_INT4.into(),
        _ => {}
    }
    if variants.contains_key("fp32") {
        return "fp32".into();
    }
    variants.keys().next().cloned().unwrap_or_default()
}

/// The CPU's int4 variant (forge cpu-int4).
pub(crate) const CPU_INT4: &str = "cpu-int4";

impl Backend for BundleEngine {
    /// The conv states and the position after the question (KV rows below it are never overwritten).
    type Mark = (Vec<f32>, usize);
    fn begin(&mut self) {
        self.clock = RunClock::default();
    }
    fn ensure_prefix(&mut self, frame: &Frame, timings: &mut Timings) -> Result<()> {
        BundleEngine::ensure_prefix(self, frame, timings)
    }
    fn finish(&self, timings: &mut Timings, start: Instant) {
        self.finish_timings(timings, start);
    }
    fn question_ids(&mut self, question: &str) -> Result<Arc<[u32]>> {
        self.cached_ids("q:", question)
    }
    fn answer_ids(&mut self, answer: &str) -> Result<Arc<[u32]>> {
        self.cached_ids("a:", answer)
    }
    fn restore_prefix(&mut self) -> Result<()> {
        BundleEngine::restore_prefix(self)
    }
    fn clear(&mut self) -> Result<()> {
        // The prefix's KV rows are about to be overwritten from position 0.
        self.prefix = None;
        self.state.reset();
        Ok(())
    }
    fn feed_ids(&mut self, ids: &[u32]) -> Result<()> {
        BundleEngine::feed_ids(self, ids)
    }
    /// One decoder_prefill call's rows.
    fn prompt_piece(&self) -> usize {
        self.bundle.manifest.decoder.prefill_chunk
    }
    fn mark(&mut self, into: &mut Self::Mark) {
        self.state.save_conv(&mut into.0);
        into.1 = self.state.pos;
    }
    fn back_to(&mut self, mark: &Self::Mark) {
        self.state.restore(&mark.0, mark.1);
    }
    fn take_scratch(&mut self) -> (Vec<f32>, Self::Mark) {
        (
            std::mem::take(&mut self.q_logits),
            (std::mem::take(&mut self.q_conv), 0),
        )
    }
    fn keep_scratch(&mut self, q_logits: Vec<f32>, mark: Self::Mark) {
        self.q_logits = q_logits;
        self.q_conv = mark.0;
    }
    /// The KV buffers are bound to the graphs, so the filled rows are copied out (and back):
    /// `pos` rows per layer and head, far less than one decoder step reads. The frame prefix stays
    /// usable meanwhile: a probe of the same frame reuses it (it writes only above the prefix, and
    /// those rows are restored).
    type Suspended = Suspended;
    fn suspend(&mut self) -> Suspended {
        Suspended {
            context: self.state.save_context(),
            logits: self.logits.clone(),
            prefix: self.prefix,
            prefix_conv: self.prefix_conv.clone(),
            clock: self.clock,
        }
    }
    fn resume(&mut self, s: Suspended) -> Result<()> {
        self.state.restore_context(&s.context)?;
        self.logits.copy_from_slice(&s.logits);
        // The KV rows below the prefix are the suspended request's frame again.
        self.prefix = s.prefix;
        self.prefix_conv = s.prefix_conv;
        self.clock = s.clock;
        Ok(())
    }
}

impl Decode for BundleEngine {
    fn logits(&self) -> &[f32] {
        &self.logits
    }
    fn feed_token(&mut self, tok: u32) -> Result<()> {
        self.feed_ids(&[tok])
    }
    fn has_room(&self) -> bool {
        self.state.pos < self.state.capacity
    }
    fn tokenizer(&self) -> &tokenizers::Tokenizer {
        &self.bundle.tokenizer
    }
    fn stop_ids(&self) -> &[u32] {
        &self.bundle.stop_ids
    }
}
