//! The graphs' I/O buffers and the decoder state, bound once to ONNX Runtime IoBindings.
//!
//! Every input and output tensor is allocated once at load and bound to its session; a run writes
//! into the bound outputs, and the runtime updates its own state in place:
//! - conv states `[1,H,3]` (one per conv layer) are shared by the prefill and step graphs; after a run
//!   the graph's `present_conv` is copied over them (3*H floats per layer);
//! - KV buffers `[1,KV,C,D]` (per attention layer, key and value) are shared too; after a run only the
//!   T new rows (`present` `[1,KV,T,D]`) are written into slots [pos, pos+T) — never a whole-cache copy;
//! - positions and the additive attention mask are computed here (Range/Trilu do not offload);
//! - a prefill graph with `conv_index` runs a chunk of n < T valid rows, padded with copies of the
//!   last one: the conv states become window columns [n, n+3), only n K/V rows are kept and `pos`
//!   advances by n (the padded rows come after the valid ones, so causal attention hides them);
//! - graphs that name their KV capacity (`graphs::growable`: the CPU variants) are bound to KV
//!   buffers of the smallest capacity bucket (`kv_buckets`: 64, 256, 1024, ... up to kv_capacity)
//!   that the positions of the next run fit in, so a step attends over what the context fills, not
//!   over the whole capacity; when the context moves into another bucket its filled rows are copied
//!   once and both graphs rebind. Each bucket's buffers (and each graph's mask for it) are allocated
//!   the first time that bucket is used and kept, so a steady state allocates nothing.

use std::time::{Duration, Instant};

use ort::session::{IoBinding, Session};
use ort::value::Tensor;

use crate::bundle::{GraphKind, Manifest};
use crate::error::{Error, ort_err};

/// Accumulates the time spent inside `Session::run`.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct RunClock {
    pub in_run: Duration,
    pub runs: usize,
}

pub(crate) struct Graph {
    pub kind: GraphKind,
    pub session: Session,
    pub binding: IoBinding,
}

impl Graph {
    pub fn new(kind: GraphKind, session: Session) -> Result<Graph, Error> {
        let binding = session
            .create_binding()
            .map_err(|e| ort_err(kind.name(), "binding", e))?;
        Ok(Graph {
            kind,
            session,
            binding,
        })
    }

    pub fn bind_input<T: ort::value::PrimitiveTensorElementType + std::fmt::Debug>(
        &mut self,
        name: &str,
        t: &Tensor<T>,
    ) -> Result<(), Error> {
        self.binding
            .bind_input(name, t)
            .map_err(|e| ort_err(self.kind.name(), "binding", e))
    }

    pub fn bind_output<T: ort::value::PrimitiveTensorElementType + std::fmt::Debug>(
        &mut self,
        name: &str,
        t: &mut Tensor<T>,
    ) -> Result<(), Error> {
        self.binding
            .bind_output(name, t)
            .map_err(|e| ort_err(self.kind.name(), "binding", e))
    }

    /// Runs the session on its binding; the results are in the bound output tensors.
    ///
    /// Calls ONNX Runtime's `RunWithBinding` directly: ort's `Session::run_binding` then also
    /// collects the bound outputs into a new `SessionOutputs` (a vector, a name list and one
    /// reference-counted value per output, every run), which nothing here reads — a steady-state
    /// decoder step allocates nothing on the Rust side this way (`examples/steady_state.rs`).
    pub fn run(&mut self, clock: &mut RunClock) -> Result<(), Error> {
        use ort::AsPointer;
        let t = Instant::now();
        let api = ort::api();
        // SAFETY: both pointers come from live ort objects owned by `self` (the session outlives
        // its binding, created from it); `&mut self` gives this call exclusive use of the session,
        // as `RunWithBinding` requires (it is not thread safe); a null run-options pointer means
        // the defaults.
        let status = unsafe {
            (api.RunWithBinding)(self.session.ptr_mut(), std::ptr::null(), self.binding.ptr())
        };
        if !status.0.is_null() {
            // SAFETY: a non-null status is a valid OrtStatus that we own: its message is read
            // while it lives, then it is released once.
            let message = unsafe {
                let text = std::ffi::CStr::from_ptr((api.GetErrorMessage)(status.0))
                    .to_string_lossy()
                    .into_owned();
                (api.ReleaseStatus)(status.0);
                text
            };
            return Err(ort_err(self.kind.name(), "run", message));
        }
        clock.in_run += t.elapsed();
        clock.runs += 1;
        Ok(())
    }
}

pub(crate) fn zeros_f32(kind: GraphKind, shape: &[usize]) -> Result<Tensor<f32>, Error> {
    let mut t = Tensor::<f32>::new(&ort::memory::Allocator::default(), shape.to_vec())
        .map_err(|e| ort_err(kind.name(), "tensor allocation", e))?;
    t.extract_tensor_mut().1.fill(0.0);
    Ok(t)
}

pub(crate) fn zeros_i32(kind: GraphKind, shape: &[usize]) -> Result<Tensor<i32>, Error> {
    let mut t = Tensor::<i32>::new(&ort::memory::Allocator::default(), shape.to_vec())
        .map_err(|e| ort_err(kind.name(), "tensor allocation", e))?;
    t.extract_tensor_mut().1.fill(0);
    Ok(t)
}

/// The smallest KV capacity bucket.
const SMALLEST_BUCKET: usize = 64;
/// Each bucket holds this many times the positions of the one below it.
const BUCKET_GROWTH: usize = 4;

/// The KV capacities a growable decoder binds, smallest first: 64, 256, 1024, ... below
/// `capacity`, then `capacity` (forge/capacity.py `buckets` gives the same list).
pub(crate) fn kv_buckets(capacity: usize) -> Vec<usize> {
    let mut out: Vec<usize> =
        std::iter::successors(Some(SMALLEST_BUCKET), |b| b.checked_mul(BUCKET_GROWTH))
            .take_while(|&b| b < capacity)
            .collect();
    out.push(capacity);
    out
}

/// Conv states and KV buffers: the decoder's memory, owned by the runtime.
pub(crate) struct DecoderState {
    pub conv: Vec<Tensor<f32>>,
    /// Key then value per attention layer, in layer order, of the bound bucket.
    pub kv: Vec<Tensor<f32>>,
    /// The buffers of the other buckets, once used (index = bucket).
    parked: Vec<Option<Vec<Tensor<f32>>>>,
    /// The capacities the KV may be bound at: `kv_buckets`, or only kv_capacity for static graphs.
    buckets: Vec<usize>,
    /// Index of the bound bucket.
    bucket: usize,
    /// Next free slot == number of positions encoded.
    pub pos: usize,
    /// The manifest's kv_capacity: the most positions a context can have.
    pub capacity: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

impl DecoderState {
    /// `growable`: the decoder graphs name their capacity dimension (`graphs::growable`).
    pub fn new(m: &Manifest, growable: bool) -> Result<DecoderState, Error> {
        let d = &m.decoder;
        let k = GraphKind::DecoderStep;
        let conv = d
            .conv_layers()
            .map(|_| zeros_f32(k, &[1, d.hidden, 3]))
            .collect::<Result<_, _>>()?;
        let buckets = if growable {
            kv_buckets(d.kv_capacity)
        } else {
            vec![d.kv_capacity]
        };
        let mut state = DecoderState {
            conv,
            kv: Vec::new(),
            parked: (0..buckets.len()).map(|_| None).collect(),
            buckets,
            bucket: 0,
            pos: 0,
            capacity: d.kv_capacity,
            kv_heads: d.num_kv_heads,
            head_dim: d.head_dim,
        };
        state.kv = state.allocate(0, d.attention_layers().count())?;
        Ok(state)
    }

    fn allocate(&self, bucket: usize, layers: usize) -> Result<Vec<Tensor<f32>>, Error> {
        let shape = [1, self.kv_heads, self.buckets[bucket], self.head_dim];
        (0..2 * layers)
            .map(|_| zeros_f32(GraphKind::DecoderStep, &shape))
            .collect()
    }

    /// The capacity of the bound KV buffers.
    pub fn bound(&self) -> usize {
        self.buckets[self.bucket]
    }

    /// Index of the bound bucket (graphs rebind when it changes).
    pub fn bucket(&self) -> usize {
        self.bucket
    }

    /// The capacity buckets the KV may be bound at.
    pub fn buckets(&self) -> &[usize] {
        &self.buckets
    }

    /// Binds the smallest bucket that holds `needed` positions, copying the `pos` filled rows
    /// into it when it is not the bound one (its buffers are allocated the first time).
    pub fn fit(&mut self, needed: usize) -> Result<(), Error> {
        if needed > self.capacity {
            return Err(Error::ContextFull {
                needed,
                capacity: self.capacity,
            });
        }
        let target = self
            .buckets
            .iter()
            .position(|&b| b >= needed)
            .unwrap_or(self.buckets.len() - 1);
        if target == self.bucket {
            return Ok(());
        }
        let mut to = match self.parked[target].take() {
            Some(kv) => kv,
            None => self.allocate(target, self.kv.len() / 2)?,
        };
        let (from_c, to_c, d) = (self.bound(), self.buckets[target], self.head_dim);
        let rows = self.pos * d;
        for (src, dst) in self.kv.iter().zip(&mut to) {
            let (src, dst) = (src.extract_tensor().1, dst.extract_tensor_mut().1);
            for head in 0..self.kv_heads {
                dst[head * to_c * d..][..rows].copy_from_slice(&src[head * from_c * d..][..rows]);
            }
        }
        self.parked[self.bucket] = Some(std::mem::replace(&mut self.kv, to));
        self.bucket = target;
        Ok(())
    }

    /// Empty context: conv states to zero (KV slots past `pos` are masked, they need no clearing).
    pub fn reset(&mut self) {
        for c in &mut self.conv {
            c.extract_tensor_mut().1.fill(0.0);
        }
        self.pos = 0;
    }

    /// Copies the conv states into `out` (the only state that a rollback must restore: KV rows
    /// below `pos` are never overwritten by later positions).
    pub fn save_conv(&self, out: &mut Vec<f32>) {
        out.clear();
        for c in &self.conv {
            out.extend_from_slice(c.extract_tensor().1);
        }
    }

    /// Copies the whole context out (conv states, then the KV rows below `pos`), for a request
    /// that is paused while another one uses the decoder.
    pub fn save_context(&self) -> SavedContext {
        let mut conv = Vec::new();
        self.save_conv(&mut conv);
        let (c, d, rows) = (self.bound(), self.head_dim, self.pos * self.head_dim);
        let mut kv = Vec::with_capacity(self.kv.len() * self.kv_heads * rows);
        for t in &self.kv {
            let src = t.extract_tensor().1;
            for head in 0..self.kv_heads {
                let at = head * c * d;
                kv.extend_from_slice(&src[at..at + rows]);
            }
        }
        SavedContext {
            conv,
            kv,
            pos: self.pos,
        }
    }

    /// Puts a context saved by `save_context` back (into a bucket that holds it).
    pub fn restore_context(&mut self, saved: &SavedContext) -> Result<(), Error> {
        self.pos = 0; // the rows now bound are not kept
        self.fit(saved.pos)?;
        let (c, d, rows) = (self.bound(), self.head_dim, saved.pos * self.head_dim);
        let mut off = 0;
        for t in &mut self.kv {
            let dst = t.extract_tensor_mut().1;
            for head in 0..self.kv_heads {
                let at = head * c * d;
                dst[at..at + rows].copy_from_slice(&saved.kv[off..off + rows]);
                off += rows;
            }
        }
        self.restore(&saved.conv, saved.pos);
        Ok(())
    }

    pub fn restore(&mut self, conv: &[f32], pos: usize) {
        let mut off = 0;
        for c in &mut self.conv {
            let dst = c.extract_tensor_mut().1;
            dst.copy_from_slice(&conv[off..off + dst.len()]);
            off += dst.len();
        }
        self.pos = pos;
    }
}

/// A copy of the decoder's context: conv states and the filled KV rows.
pub(crate) struct SavedContext {
    conv: Vec<f32>,
    kv: Vec<f32>,
    pos: usize,
}

/// The smallest width a width-free prefill graph is run at.
const MIN_WIDTH: usize = 4;

/// The widths a width-free prefill graph runs at, smallest first: `chunk` halved while it stays
/// even and >= MIN_WIDTH (forge/prefill_width.py `widths` gives the same list).
pub(crate) fn prefill_widths(chunk: usize) -> Vec<usize> {
    let mut out = vec![chunk];
    let mut w = chunk;
    while w.is_multiple_of(2) && w / 2 >= MIN_WIDTH {
        w /= 2;
        out.push(w);
    }
    out.reverse();
    out
}

/// The sizes of a decoder graph's row tensors, apart from the width.
#[derive(Clone, Copy)]
struct RowShape {
    hidden: usize,
    vocab: usize,
    kv_heads: usize,
    head_dim: usize,
    /// Key and value per attention layer.
    kv_tensors: usize,
    /// The KV capacity buckets (one mask each).
    buckets: usize,
}

/// The I/O tensors of one width T: T embedding rows in, T rows of logits and K/V out.
struct Rows {
    t: usize,
    embeds: Tensor<f32>,
    positions: Tensor<i32>,
    /// The attention mask `[1,1,T,c+T]` per KV bucket c, once used (index = bucket).
    masks: Vec<Option<Tensor<f32>>>,
    logits: Tensor<f32>,
    present_kv: Vec<Tensor<f32>>,
}

impl Rows {
    fn new(kind: GraphKind, t: usize, s: RowShape) -> Result<Rows, Error> {
        Ok(Rows {
            t,
            embeds: zeros_f32(kind, &[1, t, s.hidden])?,
            positions: zeros_i32(kind, &[1, t])?,
            masks: (0..s.buckets).map(|_| None).collect(),
            logits: zeros_f32(kind, &[1, t, s.vocab])?,
            present_kv: (0..s.kv_tensors)
                .map(|_| zeros_f32(kind, &[1, s.kv_heads, t, s.head_dim]))
                .collect::<Result<_, _>>()?,
        })
    }
}

/// A decoder graph (prefill with T = prefill_chunk, or step with T = 1) and its own I/O tensors.
///
/// A width-free prefill graph (`graphs::width_free`: the CPU variants) runs a part of n rows at the
/// smallest of `prefill_widths` that holds it; each width's tensors are allocated the first time
/// it is used and kept, like the KV buckets.
pub(crate) struct DecoderGraph {
    pub graph: Graph,
    /// The full width: prefill_chunk, or 1 for the step graph.
    pub t: usize,
    /// The widths this graph runs at (only `t` for a graph with a fixed width).
    widths: Vec<usize>,
    /// The tensors of each width, once used (index = position in `widths`).
    rows: Vec<Option<Rows>>,
    /// The width (index) and the state's bucket the graph's inputs and outputs are bound to.
    bound: (usize, usize),
    /// The attention layers' indices in the full stack (the KV input names).
    attention: Vec<usize>,
    present_conv: Vec<Tensor<f32>>,
    /// Some for a prefill graph that takes partial chunks.
    conv_index: Option<Tensor<i32>>,
    shape: RowShape,
    mask_value: f32,
}

impl DecoderGraph {
    /// `width_free`: the graph names its width (`graphs::width_free`; only a prefill graph).
    pub fn new(
        graph: Graph,
        m: &Manifest,
        state: &DecoderState,
        width_free: bool,
    ) -> Result<DecoderGraph, Error> {
        let d = &m.decoder;
        let kind = graph.kind;
        let t = if kind == GraphKind::DecoderStep {
            1
        } else {
            d.prefill_chunk
        };
        let widths = if width_free && t > 1 {
            prefill_widths(t)
        } else {
            vec![t]
        };
        let full = widths.len() - 1;
        let shape = RowShape {
            hidden: d.hidden,
            vocab: m.text.vocab_size,
            kv_heads: d.num_kv_heads,
            head_dim: d.head_dim,
            kv_tensors: 2 * d.attention_layers().count(),
            buckets: state.buckets().len(),
        };
        let mut rows: Vec<Option<Rows>> = widths.iter().map(|_| None).collect();
        rows[full] = Some(Rows::new(kind, t, shape)?);
        let mut g = DecoderGraph {
            graph,
            t,
            widths,
            rows,
            bound: (full, state.bucket()),
            attention: d.attention_layers().collect(),
            present_conv: d
                .conv_layers()
                .map(|_| zeros_f32(kind, &[1, d.hidden, 3]))
                .collect::<Result<_, _>>()?,
            conv_index: if kind == GraphKind::DecoderPrefill && d.prefill_conv_index {
                Some(zeros_i32(kind, &[3])?)
            } else {
                None
            },
            shape,
            mask_value: d.mask_value,
        };
        let gr = &mut g.graph;
        if let Some(ci) = &g.conv_index {
            gr.bind_input(crate::graphs::CONV_INDEX, ci)?;
        }
        for ((i, past), present) in d.conv_layers().zip(&state.conv).zip(&mut g.present_conv) {
            gr.bind_input(&format!("past_conv.{i}"), past)?;
            gr.bind_output(&format!("present_conv.{i}"), present)?;
        }
        g.bind(full, state)?;
        Ok(g)
    }

    /// Binds the tensors of width `w` (allocated the first time), the state's KV buffers of its
    /// bound bucket, and that width's mask for that capacity.
    fn bind(&mut self, w: usize, state: &DecoderState) -> Result<(), Error> {
        let kind = self.graph.kind;
        let b = state.bucket();
        let (t, shape) = (self.widths[w], self.shape);
        let rows = match &mut self.rows[w] {
            Some(rows) => rows,
            empty => empty.insert(Rows::new(kind, t, shape)?),
        };
        if rows.masks[b].is_none() {
            rows.masks[b] = Some(zeros_f32(kind, &[1, 1, t, state.bound() + t])?);
        }
        let gr = &mut self.graph;
        gr.bind_input("inputs_embeds", &rows.embeds)?;
        gr.bind_input("position_ids", &rows.positions)?;
        gr.bind_output("logits", &mut rows.logits)?;
        if let Some(mask) = &rows.masks[b] {
            gr.bind_input("attention_mask", mask)?;
        }
        for (j, i) in self.attention.iter().enumerate() {
            for (k, name) in ["key", "value"].iter().enumerate() {
                gr.bind_input(&format!("past_key_values.{i}.{name}"), &state.kv[2 * j + k])?;
                gr.bind_output(
                    &format!("present.{i}.{name}"),
                    &mut rows.present_kv[2 * j + k],
                )?;
            }
        }
        self.bound = (w, b);
        Ok(())
    }

    /// The width the graph is bound at (its last call ran at it).
    pub fn width(&self) -> usize {
        self.widths[self.bound.0]
    }

    /// How many valid rows one run takes: at most T, and fewer than T only with `conv_index`.
    pub fn takes(&self, rows: usize) -> bool {
        rows == self.t || (rows >= 1 && rows < self.t && self.conv_index.is_some())
    }

    /// Runs `rows` (n embedding rows, `takes(n)`) at the state's position, updates the state in
    /// place (n positions), and leaves the last valid row's logits in `last_logits`.
    pub fn run(
        &mut self,
        rows: &[f32],
        state: &mut DecoderState,
        last_logits: &mut [f32],
        clock: &mut RunClock,
    ) -> Result<(), Error> {
        let h = self.shape.hidden;
        let n = rows.len() / h;
        debug_assert!(rows.len() == n * h && self.takes(n));
        let pos = state.pos;
        state.fit(pos + n)?;
        let w = self
            .widths
            .iter()
            .position(|&w| w >= n)
            .unwrap_or(self.widths.len() - 1);
        if self.bound != (w, state.bucket()) {
            self.bind(w, state)?;
        }
        let c = state.bound();
        let Some(bound) = self.rows[w].as_mut() else {
            return Err(Error::Config(
                "internal: no tensors bound for the width".into(),
            ));
        };
        let t = bound.t;
        let embeds = bound.embeds.extract_tensor_mut().1;
        embeds[..n * h].copy_from_slice(rows);
        // padding: copies of the last valid row (the rows a QDQ graph was calibrated on look like
        // real tokens; zero rows would not)
        for pad in embeds[n * h..].chunks_exact_mut(h) {
            pad.copy_from_slice(&rows[(n - 1) * h..]);
        }
        if let Some(ci) = &mut self.conv_index {
            for (j, v) in ci.extract_tensor_mut().1.iter_mut().enumerate() {
                *v = (n + j) as i32;
            }
        }
        for (j, p) in bound
            .positions
            .extract_tensor_mut()
            .1
            .iter_mut()
            .enumerate()
        {
            *p = (pos + j) as i32;
        }
        let mv = self.mask_value;
        let Some(mask) = &mut bound.masks[state.bucket()] else {
            return Err(Error::Config(
                "internal: no mask bound for the KV bucket".into(),
            ));
        };
        let mask = mask.extract_tensor_mut().1;
        for (i, row) in mask.chunks_exact_mut(c + t).enumerate() {
            row[..pos].fill(0.0);
            row[pos..c].fill(mv);
            for (j, v) in row[c..].iter_mut().enumerate() {
                *v = if j <= i { 0.0 } else { mv };
            }
        }
        self.graph.run(clock)?;
        for (dst, src) in state.conv.iter_mut().zip(&self.present_conv) {
            dst.extract_tensor_mut()
                .1
                .copy_from_slice(src.extract_tensor().1);
        }
        let (kvh, d) = (state.kv_heads, state.head_dim);
        for (dst, src) in state.kv.iter_mut().zip(&bound.present_kv) {
            let dst = dst.extract_tensor_mut().1;
            let src = src.extract_tensor().1;
            for head in 0..kvh {
                let from = &src[head * t * d..head * t * d + n * d];
                let at = head * c * d + pos * d;
                dst[at..at + n * d].copy_from_slice(from);
            }
        }
        state.pos += n;
        let logits = bound.logits.extract_tensor().1;
        let v = self.shape.vocab;
        last_logits.copy_from_slice(&logits[(n - 1) * v..n * v]);
        Ok(())
    }
}

/// The embed graph: ids (padded to prefill_chunk) -> embeddings.
pub(crate) struct EmbedGraph {
    pub graph: Graph,
    ids: Tensor<i32>,
    out: Tensor<f32>,
    chunk: usize,
    hidden: usize,
    pad_id: i32,
    vocab: usize,
}

impl EmbedGraph {
    pub fn new(mut graph: Graph, m: &Manifest) -> Result<EmbedGraph, Error> {
        let (chunk, h) = (m.decoder.prefill_chunk, m.decoder.hidden);
        let ids = zeros_i32(GraphKind::Embed, &[1, chunk])?;
        let mut out = zeros_f32(GraphKind::Embed, &[1, chunk, h])?;
        graph.bind_input("input_ids", &ids)?;
        graph.bind_output("inputs_embeds", &mut out)?;
        Ok(EmbedGraph {
            graph,
            ids,
            out,
            chunk,
            hidden: h,
            pad_id: m.text.pad_id as i32,
            vocab: m.text.vocab_size,
        })
    }

    /// Appends the embeddings of `ids` to `out`.
    pub fn embed(
        &mut self,
        ids: &[u32],
        out: &mut Vec<f32>,
        clock: &mut RunClock,
    ) -> Result<(), Error> {
        if let Some(bad) = ids.iter().find(|&&id| id as usize >= self.vocab) {
            return Err(Error::Prompt(format!(
                "token id {bad} is outside the vocabulary ({})",
                self.vocab
            )));
        }
        for piece in ids.chunks(self.chunk) {
            let buf = self.ids.extract_tensor_mut().1;
            buf.fill(self.pad_id);
            for (b, &id) in buf.iter_mut().zip(piece) {
                *b = id as i32;
            }
            self.graph.run(clock)?;
            out.extend_from_slice(&self.out.extract_tensor().1[..piece.len() * self.hidden]);
        }
        Ok(())
    }
}

/// The vision graph: pixel_values -> image_embeds.
pub(crate) struct VisionGraph {
    pub graph: Graph,
    pub pixels: Tensor<f32>,
    pub embeds: Tensor<f32>,
}

impl VisionGraph {
    pub fn new(mut graph: Graph, m: &Manifest) -> Result<VisionGraph, Error> {
        let s = m.image.size as usize;
        let pixels = zeros_f32(GraphKind::Vision, &[1, 3, s, s])?;
        let mut embeds = zeros_f32(GraphKind::Vision, &[1, m.image.tokens, m.decoder.hidden])?;
        graph.bind_input("pixel_values", &pixels)?;
        graph.bind_output("image_embeds", &mut embeds)?;
        Ok(VisionGraph {
            graph,
            pixels,
            embeds,
        })
    }
}
