//! Published LFM2-VL / LFM2.5-VL ONNX releases (`LiquidAI/LFM2.5-VL-1.6B-ONNX`,
//! `onnx-community/LFM2-VL-450M-ONNX`, ...) run as they are downloaded: three dynamic-shape graphs
//! (`embed_tokens`, `embed_images`, `decoder`), the model's own tokenizer, chat template and image
//! processor. See [`layout`] for the files.
//!
//! Per frame: the image processor makes pieces (the image, or tiles + thumbnail), `embed_images` turns
//! each into image tokens, the chat template with the image's placeholder is tokenized, token
//! embeddings with the image features at the `<image>` positions go through the decoder once, and the
//! decoder's state after that prefix (conv states + KV, ONNX Runtime values) is kept. Every probe or
//! question starts from that snapshot: the values are immutable and shared, so restoring costs
//! nothing — LFM2's conv state cannot be rewound, so it is never edited in place.

pub mod layout;
mod onnx_file;
pub mod processor;
mod prompt;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use ort::session::{Session, SessionInputValue};
use ort::value::{DynValue, Tensor, TensorElementType, ValueType};

use crate::config::EngineConfig;
use crate::decoder::RunClock;
use crate::error::{BundleError, Error, Result, ort_err};
use crate::probes::ProbeSet;
use crate::providers::{SessionReport, dynamic_session};
use crate::request::{Backend, Decode};
use crate::types::{Frame, Timings};

pub use layout::{Layout, is_published};
use processor::{ImageProcessor, ImageTokens, ProcessorConfig};
use prompt::{ChatTemplate, Content, Message};

/// Prompt tokens per decoder call while a generation's prompt is fed: a safety probe that arrives
/// meanwhile waits for at most one such call (`request::prompt_and_decode`).
const PROMPT_PIECE: usize = 256;

/// The probe set used with a published instruction-tuned model unless the config names another:
/// plain yes/no questions such a model understands (the bundle format's probes.toml).
pub const INSTRUCT_PROBES: &str = include_str!("instruct_probes.toml");

/// The decoder's memory after some tokens: one ONNX Runtime value per `past_*` input.
#[derive(Clone)]
pub(crate) struct State {
    values: Arc<Vec<DynValue>>,
    pos: usize,
}

/// The frame whose image + prompt prefix is encoded, and the state and logits after it.
struct Prefix {
    frame_id: u64,
    state: State,
}

/// How the decoder graph is called (read from its inputs and outputs).
struct DecoderIo {
    /// `past_*` input names, in the order of `State::values`.
    past: Vec<String>,
    /// For each `past` entry: the output that replaces it after a run.
    present: Vec<String>,
    /// Initial (empty-sequence) shape of each past input.
    empty_shapes: Vec<Vec<i64>>,
    /// Element type of `inputs_embeds` and of the states.
    embeds_type: TensorElementType,
    state_types: Vec<TensorElementType>,
    has_position_ids: bool,
    hidden: usize,
}

/// A published release loaded for the engine.
pub(crate) struct PublishedModel {
    layout: Layout,
    name: String,
    reports: Vec<SessionReport>,
    tokenizer: tokenizers::Tokenizer,
    template: ChatTemplate,
    processor: ImageProcessor,
    image_tokens: ImageTokens,
    image_token_id: u32,
    /// The id of the last token of an image block (`<|image_end|>`, or `<image>` without special
    /// tokens): prompts split after it into the frame's prefix and the question.
    image_block_end: u32,
    stop_ids: Vec<u32>,
    probes: ProbeSet,
    system_prompt: Option<String>,
    /// Tile large images (the processor config's `do_image_splitting` unless the config overrides).
    splitting: bool,
    embed_tokens: Session,
    embed_images: Session,
    decoder: Session,
    io: DecoderIo,
    /// Pixel rows the vision graph wants (0 = any: no padding).
    fixed_patches: usize,
    /// Element type of `pixel_values` (float32, or float16 in `_fp16` releases).
    pixel_type: TensorElementType,
    state: State,
    logits: Vec<f32>,
    prefix: Option<Prefix>,
    /// Token ids after the image block, per question (bounded).
    question_ids: HashMap<String, Arc<[u32]>>,
    answer_ids: HashMap<String, Arc<[u32]>>,
    clock: RunClock,
}

fn graph_err(path: &Path, message: impl Into<String>) -> Error {
    Error::Bundle(BundleError::Graph {
        path: path.to_path_buf(),
        message: message.into(),
    })
}

fn tensor_io(v: &ValueType) -> Option<(TensorElementType, Vec<i64>)> {
    match v {
        ValueType::Tensor { ty, shape, .. } => Some((*ty, shape.iter().copied().collect())),
        _ => None,
    }
}

fn is_float(t: TensorElementType) -> bool {
    matches!(t, TensorElementType::Float32 | TensorElementType::Float16)
}

/// Checks a graph has each named input/output; says what it has instead.
fn require(session: &Session, path: &Path, inputs: &[&str], outputs: usize) -> Result<()> {
    let have: Vec<&str> = session.inputs().iter().map(|i| i.name()).collect();
    for want in inputs {
        if !have.contains(want) {
            return Err(graph_err(
                path,
                format!(
                    "input `{want}` missing (the graph has {}): not an LFM2-VL release graph?",
                    have.join(", ")
                ),
            ));
        }
    }
    if session.outputs().len() < outputs {
        return Err(graph_err(path, "the graph has no outputs"));
    }
    Ok(())
}

impl DecoderIo {
    fn read(session: &Session, path: &Path) -> Result<DecoderIo> {
        require(session, path, &["inputs_embeds", "attention_mask"], 1)?;
        let outputs: Vec<&str> = session.outputs().iter().map(|o| o.name()).collect();
        if !outputs.contains(&"logits") {
            return Err(graph_err(
                path,
                format!("no `logits` output (has {})", outputs.join(", ")),
            ));
        }
        let mut io = DecoderIo {
            past: Vec::new(),
            present: Vec::new(),
            empty_shapes: Vec::new(),
            embeds_type: TensorElementType::Float32,
            state_types: Vec::new(),
            has_position_ids: false,
            hidden: 0,
        };
        for input in session.inputs() {
            let name = input.name();
            let Some((ty, shape)) = tensor_io(input.dtype()) else {
                return Err(graph_err(path, format!("input `{name}` is not a tensor")));
            };
            match name {
                "inputs_embeds" => {
                    if !is_float(ty) || shape.len() != 3 || shape[2] <= 0 {
                        return Err(graph_err(
                            path,
                            format!(
                                "inputs_embeds is {ty:?} {shape:?}; want float [batch, seq, hidden]"
                            ),
                        ));
                    }
                    io.embeds_type = ty;
                    io.hidden = shape[2] as usize;
                }
                "attention_mask" => {}
                "position_ids" => io.has_position_ids = true,
                _ => {
                    let present = if let Some(i) = name.strip_prefix("past_conv.") {
                        format!("present_conv.{i}")
                    } else if let Some(rest) = name.strip_prefix("past_key_values.") {
                        format!("present.{rest}")
                    } else {
                        return Err(graph_err(path, format!("unexpected input `{name}`")));
                    };
                    if !outputs.contains(&present.as_str()) {
                        return Err(graph_err(
                            path,
                            format!("input `{name}` has no matching output `{present}`"),
                        ));
                    }
                    if !is_float(ty) || shape.len() < 2 {
                        return Err(graph_err(
                            path,
                            format!("state `{name}` is {ty:?} {shape:?}"),
                        ));
                    }
                    let kv = name.starts_with("past_key_values.");
                    let mut empty = shape.clone();
                    empty[0] = 1;
                    for (axis, d) in empty.iter_mut().enumerate().skip(1) {
                        if *d < 0 {
                            if kv && axis == 2 {
                                *d = 0;
                            } else {
                                return Err(graph_err(
                                    path,
                                    format!(
                                        "state `{name}` has a dynamic axis {axis} ({shape:?}); only the KV sequence axis may be"
                                    ),
                                ));
                            }
                        }
                    }
                    io.past.push(name.to_string());
                    io.present.push(present);
                    io.empty_shapes.push(empty);
                    io.state_types.push(ty);
                }
            }
        }
        if io.past.is_empty() {
            return Err(graph_err(
                path,
                "no past_conv.* / past_key_values.* inputs: a decoder without state cannot generate",
            ));
        }
        Ok(io)
    }

    fn empty_state(&self) -> Result<State> {
        let values = self
            .empty_shapes
            .iter()
            .zip(&self.state_types)
            .map(|(shape, ty)| {
                let shape: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
                let n: usize = shape.iter().product();
                let v: DynValue = match ty {
                    TensorElementType::Float16 => {
                        Tensor::from_array((shape, vec![half::f16::ZERO; n]))?.into_dyn()
                    }
                    _ => Tensor::from_array((shape, vec![0f32; n]))?.into_dyn(),
                };
                Ok(v)
            })
            .collect::<Result<Vec<_>, ort::Error>>()
            .map_err(|e| ort_err("decoder", "state allocation", e))?;
        Ok(State {
            values: Arc::new(values),
            pos: 0,
        })
    }
}

/// A float tensor's data as f32 (converting float16).
fn floats<'v>(v: &'v DynValue, graph: &'static str) -> Result<(Vec<i64>, Cow<'v, [f32]>)> {
    if let Ok((shape, data)) = v.try_extract_tensor::<f32>() {
        return Ok((shape.iter().copied().collect(), Cow::Borrowed(data)));
    }
    let (shape, data) = v
        .try_extract_tensor::<half::f16>()
        .map_err(|e| ort_err(graph, "reading an output", e))?;
    Ok((
        shape.iter().copied().collect(),
        Cow::Owned(data.iter().map(|x| x.to_f32()).collect()),
    ))
}

impl PublishedModel {
    pub fn load(config: &EngineConfig) -> Result<PublishedModel> {
        let layout = Layout::open(&config.bundle, config.variant.as_deref())?;
        for graph in [&layout.embed_tokens, &layout.embed_images, &layout.decoder] {
            onnx_file::check_external_data(graph)?;
        }
        let tok_path = layout.dir.join("tokenizer.json");
        if !tok_path.is_file() {
            return Err(BundleError::Missing {
                path: tok_path,
                message: "the release's tokenizer".into(),
            }
            .into());
        }
        let tokenizer =
            tokenizers::Tokenizer::from_file(&tok_path).map_err(|e| BundleError::Invalid {
                path: tok_path.clone(),
                message: e.to_string(),
            })?;
        let pre_path = layout.dir.join("preprocessor_config.json");
        let pcfg = ProcessorConfig::from_json(&[
            &layout.image_processor,
            &layout.processor,
            &layout.config,
        ])
        .map_err(|message| BundleError::Invalid {
            path: pre_path,
            message,
        })?;
        let tok_cfg_path = layout.dir.join("tokenizer_config.json");
        let token_id = |text: &str| -> Result<u32> {
            tokenizer.token_to_id(text).ok_or_else(|| {
                BundleError::Invalid {
                    path: tok_path.clone(),
                    message: format!("the tokenizer has no `{text}` token"),
                }
                .into()
            })
        };
        let image_tokens = ImageTokens {
            image: layout
                .special_token("image_token")
                .unwrap_or_else(|| "<image>".into()),
            ..ImageTokens::default()
        };
        let image_token_id = match layout
            .config_value("image_token_id")
            .or_else(|| layout.config_value("image_token_index"))
        {
            Some(v) => v
                .as_u64()
                .map(|x| x as u32)
                .ok_or_else(|| BundleError::Invalid {
                    path: layout.dir.join("config.json"),
                    message: format!("image_token_id must be an integer, not {v}"),
                })?,
            None => token_id(&image_tokens.image)?,
        };
        if tokenizer.id_to_token(image_token_id).as_deref() != Some(image_tokens.image.as_str()) {
            return Err(BundleError::Invalid {
                path: tok_path,
                message: format!(
                    "config.json's image_token_id {image_token_id} is not the tokenizer's `{}`",
                    image_tokens.image
                ),
            }
            .into());
        }
        let image_block_end = if pcfg.use_image_special_tokens {
            token_id(&image_tokens.end)?
        } else {
            image_token_id
        };
        let bos = layout.special_token("bos_token").unwrap_or_default();
        let eos = layout.special_token("eos_token").unwrap_or_default();
        let template = ChatTemplate::new(layout.chat_template.clone(), bos, eos.clone()).map_err(
            |message| BundleError::Invalid {
                path: if layout.dir.join("chat_template.jinja").is_file() {
                    layout.dir.join("chat_template.jinja")
                } else {
                    tok_cfg_path.clone()
                },
                message: format!("chat template: {message}"),
            },
        )?;
        let mut stop_ids: Vec<u32> = Vec::new();
        if let Some(id) = tokenizer.token_to_id(&eos) {
            stop_ids.push(id);
        }
        match layout.config_value("eos_token_id") {
            Some(serde_json::Value::Number(n)) => stop_ids.extend(n.as_u64().map(|x| x as u32)),
            Some(serde_json::Value::Array(a)) => {
                stop_ids.extend(a.iter().filter_map(|x| x.as_u64()).map(|x| x as u32))
            }
            _ => {}
        }
        stop_ids.sort_unstable();
        stop_ids.dedup();
        if stop_ids.is_empty() {
            return Err(BundleError::Invalid {
                path: tok_cfg_path,
                message: "no eos_token: generation could never stop".into(),
            }
            .into());
        }
        let probes = match &config.probes {
            Some(p) => ProbeSet::load(p)?,
            None => ProbeSet::parse(INSTRUCT_PROBES).map_err(Error::Config)?,
        };

        let rt = crate::runtime::runtime(&config.libraries, Some(&layout.dir))?;
        let (embed_tokens, r1) = dynamic_session(rt, config, "embed_tokens", &layout.embed_tokens)?;
        let (embed_images, r2) = dynamic_session(rt, config, "embed_images", &layout.embed_images)?;
        let (decoder, r3) = dynamic_session(rt, config, "decoder", &layout.decoder)?;
        require(&embed_tokens, &layout.embed_tokens, &["input_ids"], 1)?;
        require(
            &embed_images,
            &layout.embed_images,
            &["pixel_values", "pixel_attention_mask", "spatial_shapes"],
            1,
        )?;
        let patch_dim = 3 * pcfg.encoder_patch_size * pcfg.encoder_patch_size;
        let (fixed_patches, pixel_type) = match embed_images
            .inputs()
            .iter()
            .find(|i| i.name() == "pixel_values")
            .and_then(|i| tensor_io(i.dtype()))
        {
            Some((ty, s))
                if is_float(ty) && s.len() == 3 && (s[2] < 0 || s[2] as usize == patch_dim) =>
            {
                (s[1].max(0) as usize, ty)
            }
            other => {
                return Err(graph_err(
                    &layout.embed_images,
                    format!(
                        "pixel_values is {other:?}; want float [images, patches, {patch_dim}] (encoder_patch_size {})",
                        pcfg.encoder_patch_size
                    ),
                ));
            }
        };
        let io = DecoderIo::read(&decoder, &layout.decoder)?;
        if let Some(h) = layout.config_value("hidden_size").and_then(|v| v.as_u64())
            && h as usize != io.hidden
        {
            return Err(graph_err(
                &layout.decoder,
                format!(
                    "inputs_embeds has hidden size {}, config.json says {h}: files from different models?",
                    io.hidden
                ),
            ));
        }
        for r in [&r1, &r2, &r3] {
            log::info!("{r}");
        }
        let state = io.empty_state()?;
        let name = layout
            .dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "published".into());
        Ok(PublishedModel {
            name,
            reports: vec![r1, r2, r3],
            tokenizer,
            template,
            processor: ImageProcessor::new(pcfg.clone()),
            image_tokens,
            image_token_id,
            image_block_end,
            stop_ids,
            probes,
            system_prompt: config.system_prompt.clone(),
            splitting: config.image_splitting.unwrap_or(pcfg.do_image_splitting),
            embed_tokens,
            embed_images,
            decoder,
            io,
            fixed_patches,
            pixel_type,
            state,
            logits: Vec::new(),
            prefix: None,
            question_ids: HashMap::new(),
            answer_ids: HashMap::new(),
            clock: RunClock::default(),
            layout,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn variant(&self) -> &str {
        &self.layout.variant
    }
    pub fn layout(&self) -> &Layout {
        &self.layout
    }
    pub fn reports(&self) -> &[SessionReport] {
        &self.reports
    }
    pub fn probes(&self) -> &ProbeSet {
        &self.probes
    }
    pub fn position(&self) -> usize {
        self.state.pos
    }
    pub fn forget_prefix(&mut self) {
        self.prefix = None;
    }

    /// Renders the chat template for `question` with `placeholder` standing for the image, and
    /// tokenizes it: (ids up to and including the image block, ids after it).
    fn prompt(&self, placeholder: &str, question: &str) -> Result<(Vec<u32>, Vec<u32>)> {
        if question.contains(&self.image_tokens.image) {
            return Err(Error::Prompt(format!(
                "the question contains the image token `{}`",
                self.image_tokens.image
            )));
        }
        let mut messages = Vec::new();
        if let Some(s) = &self.system_prompt {
            messages.push(Message {
                role: "system",
                content: vec![Content::Text { text: s.clone() }],
            });
        }
        messages.push(Message {
            role: "user",
            content: vec![
                Content::Image,
                Content::Text {
                    text: question.to_string(),
                },
            ],
        });
        let text = self.template.render(&messages).map_err(Error::Prompt)?;
        let mut parts = text.split(self.image_tokens.image.as_str());
        let (Some(before), Some(after), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(Error::Prompt(format!(
                "the chat template must place exactly one `{}` for the image",
                self.image_tokens.image
            )));
        };
        let full = format!("{before}{placeholder}{after}");
        let enc = self
            .tokenizer
            .encode(full, false)
            .map_err(|e| Error::Prompt(e.to_string()))?;
        let ids = enc.get_ids();
        let Some(end) = ids.iter().rposition(|&id| id == self.image_block_end) else {
            return Err(Error::Prompt(
                "the image block did not survive tokenization".into(),
            ));
        };
        Ok((ids[..=end].to_vec(), ids[end + 1..].to_vec()))
    }

    /// Token ids (prefix with a one-token image, question) for `question`, as [`crate::Engine::prompt_ids`].
    pub fn prompt_ids(&self, question: &str) -> Result<(Vec<u32>, Vec<u32>)> {
        let t = &self.image_tokens;
        let placeholder = if self.processor.config.use_image_special_tokens {
            format!("{}{}{}", t.start, t.image, t.end)
        } else {
            t.image.clone()
        };
        self.prompt(&placeholder, question)
    }

    fn embed(&mut self, ids: &[u32]) -> Result<Vec<f32>> {
        let ids: Vec<i64> = ids.iter().map(|&i| i64::from(i)).collect();
        let n = ids.len();
        let input = Tensor::from_array(([1usize, n], ids))
            .map_err(|e| ort_err("embed_tokens", "input", e))?;
        let t = Instant::now();
        let out = self
            .embed_tokens
            .run(ort::inputs!["input_ids" => input])
            .map_err(|e| ort_err("embed_tokens", "run", e))?;
        self.clock.in_run += t.elapsed();
        self.clock.runs += 1;
        let (_, data) = floats(&out[0], "embed_tokens")?;
        if data.len() != n * self.io.hidden {
            return Err(graph_err(
                &self.layout.embed_tokens,
                format!(
                    "returned {} values for {n} tokens of hidden size {}",
                    data.len(),
                    self.io.hidden
                ),
            ));
        }
        Ok(data.into_owned())
    }

    /// Image features of every piece, in order: [tokens, hidden] rows.
    fn encode_image(&mut self, pieces: &[processor::Piece], tokens: &[usize]) -> Result<Vec<f32>> {
        let h = self.io.hidden;
        let patch_dim = 3 * self.processor.config.encoder_patch_size.pow(2);
        let mut features = Vec::with_capacity(tokens.iter().sum::<usize>() * h);
        for (piece, &want) in pieces.iter().zip(tokens) {
            let n = piece.patches_h * piece.patches_w;
            let rows = self.fixed_patches.max(n);
            if self.fixed_patches > 0 && n > self.fixed_patches {
                return Err(graph_err(
                    &self.layout.embed_images,
                    format!(
                        "the graph takes {} patches, this image piece has {n}",
                        self.fixed_patches
                    ),
                ));
            }
            let mut pixels = piece.pixels.clone();
            pixels.resize(rows * patch_dim, 0.0);
            let mask: Vec<i64> = (0..rows).map(|i| i64::from(i < n)).collect();
            let shapes = vec![piece.patches_h as i64, piece.patches_w as i64];
            let err = |e| ort_err("embed_images", "input", e);
            let shape = [1usize, rows, patch_dim];
            let pixel_values: DynValue = match self.pixel_type {
                TensorElementType::Float16 => Tensor::from_array((
                    shape,
                    pixels
                        .iter()
                        .map(|&x| half::f16::from_f32(x))
                        .collect::<Vec<_>>(),
                ))
                .map_err(err)?
                .into_dyn(),
                _ => Tensor::from_array((shape, pixels)).map_err(err)?.into_dyn(),
            };
            let inputs = ort::inputs![
                "pixel_values" => pixel_values,
                "pixel_attention_mask" => Tensor::from_array(([1usize, rows], mask)).map_err(err)?,
                "spatial_shapes" => Tensor::from_array(([1usize, 2], shapes)).map_err(err)?,
            ];
            let t = Instant::now();
            let out = self
                .embed_images
                .run(inputs)
                .map_err(|e| ort_err("embed_images", "run", e))?;
            self.clock.in_run += t.elapsed();
            self.clock.runs += 1;
            let (_, data) = floats(&out[0], "embed_images")?;
            if data.len() != want * h {
                return Err(graph_err(
                    &self.layout.embed_images,
                    format!(
                        "returned {} values for a {}x{}-patch image; the processor expects {want} tokens of hidden size {h}",
                        data.len(),
                        piece.patches_h,
                        piece.patches_w
                    ),
                ));
            }
            features.extend_from_slice(&data);
        }
        Ok(features)
    }

    /// Runs the decoder on `rows` (embedding rows) from `self.state`; leaves the last logits.
    fn feed(&mut self, rows: &[f32]) -> Result<()> {
        let h = self.io.hidden;
        let t_len = rows.len() / h;
        if t_len == 0 {
            return Ok(());
        }
        let pos = self.state.pos;
        let total = pos + t_len;
        let err = |e| ort_err("decoder", "input", e);
        let shape = [1usize, t_len, h];
        let embeds: DynValue = match self.io.embeds_type {
            TensorElementType::Float16 => Tensor::from_array((
                shape,
                rows.iter()
                    .map(|&x| half::f16::from_f32(x))
                    .collect::<Vec<_>>(),
            ))
            .map_err(err)?
            .into_dyn(),
            _ => Tensor::from_array((shape, rows.to_vec()))
                .map_err(err)?
                .into_dyn(),
        };
        let mut inputs: Vec<(Cow<'_, str>, SessionInputValue<'_>)> =
            Vec::with_capacity(3 + self.io.past.len());
        inputs.push(("inputs_embeds".into(), embeds.into()));
        inputs.push((
            "attention_mask".into(),
            Tensor::from_array(([1usize, total], vec![1i64; total]))
                .map_err(err)?
                .into(),
        ));
        if self.io.has_position_ids {
            let p: Vec<i64> = (pos as i64..total as i64).collect();
            inputs.push((
                "position_ids".into(),
                Tensor::from_array(([1usize, t_len], p))
                    .map_err(err)?
                    .into(),
            ));
        }
        let state = Arc::clone(&self.state.values);
        for (name, v) in self.io.past.iter().zip(state.iter()) {
            inputs.push((name.as_str().into(), v.into()));
        }
        let t = Instant::now();
        let mut out = self
            .decoder
            .run(inputs)
            .map_err(|e| ort_err("decoder", "run", e))?;
        self.clock.in_run += t.elapsed();
        self.clock.runs += 1;
        let mut values = Vec::with_capacity(self.io.present.len());
        for name in &self.io.present {
            let v = out.remove(name.as_str()).ok_or_else(|| {
                graph_err(
                    &self.layout.decoder,
                    format!("output `{name}` missing after a run"),
                )
            })?;
            values.push(v);
        }
        let logits = out.get("logits").ok_or_else(|| {
            graph_err(&self.layout.decoder, "output `logits` missing after a run")
        })?;
        let (shape, data) = floats(logits, "decoder")?;
        let vocab = shape.last().copied().unwrap_or(0).max(0) as usize;
        if vocab == 0 || data.len() < vocab {
            return Err(graph_err(
                &self.layout.decoder,
                format!("logits have shape {shape:?}"),
            ));
        }
        self.logits.clear();
        self.logits.extend_from_slice(&data[data.len() - vocab..]);
        drop(out);
        self.state = State {
            values: Arc::new(values),
            pos: total,
        };
        Ok(())
    }

    fn feed_ids(&mut self, ids: &[u32]) -> Result<()> {
        let rows = self.embed(ids)?;
        self.feed(&rows)
    }

    fn ensure_prefix(&mut self, frame: &Frame, timings: &mut Timings) -> Result<()> {
        if let Some(p) = &self.prefix
            && p.frame_id == frame.id
        {
            timings.prefix_reused = true;
            timings.prefix_tokens = p.state.pos;
            return Ok(());
        }
        self.prefix = None;
        let t = Instant::now();
        let image = self.processor.process(&frame.as_ref(), self.splitting)?;
        let placeholder = image.placeholder(&self.processor.config, &self.image_tokens);
        let (prefix_ids, _) = self.prompt(&placeholder, "x")?;
        timings.preprocess = t.elapsed();

        let t = Instant::now();
        let features = self.encode_image(&image.pieces, &image.tokens)?;
        timings.vision = t.elapsed();

        let t = Instant::now();
        let mut rows = self.embed(&prefix_ids)?;
        let h = self.io.hidden;
        let at: Vec<usize> = prefix_ids
            .iter()
            .enumerate()
            .filter(|(_, id)| **id == self.image_token_id)
            .map(|(i, _)| i)
            .collect();
        if at.len() * h != features.len() {
            return Err(Error::Prompt(format!(
                "the prompt has {} image tokens but the image gave {} feature rows",
                at.len(),
                features.len() / h
            )));
        }
        for (k, &i) in at.iter().enumerate() {
            rows[i * h..(i + 1) * h].copy_from_slice(&features[k * h..(k + 1) * h]);
        }
        self.state = self.io.empty_state()?;
        self.feed(&rows)?;
        timings.prefix_prefill = t.elapsed();
        timings.prefix_tokens = self.state.pos;
        self.prefix = Some(Prefix {
            frame_id: frame.id,
            state: self.state.clone(),
        });
        Ok(())
    }

    fn restore_prefix(&mut self) -> Result<()> {
        let p = self.prefix.as_ref().ok_or(Error::NoFrame)?;
        self.state = p.state.clone();
        Ok(())
    }

    fn cached(&mut self, answer: bool, text: &str) -> Result<Arc<[u32]>> {
        let cache = if answer {
            &self.answer_ids
        } else {
            &self.question_ids
        };
        if let Some(ids) = cache.get(text) {
            return Ok(Arc::clone(ids));
        }
        let ids: Arc<[u32]> = if answer {
            let enc = self
                .tokenizer
                .encode(text, false)
                .map_err(|e| Error::Prompt(e.to_string()))?;
            if enc.get_ids().is_empty() {
                return Err(Error::Prompt(format!(
                    "answer `{text}` tokenizes to nothing"
                )));
            }
            enc.get_ids().into()
        } else {
            self.prompt_ids(text)?.1.into()
        };
        let cache = if answer {
            &mut self.answer_ids
        } else {
            &mut self.question_ids
        };
        if cache.len() >= 1024 {
            cache.clear(); // bounded: arbitrary callers cannot grow it
        }
        cache.insert(text.to_string(), Arc::clone(&ids));
        Ok(ids)
    }

    fn finish(&self, timings: &mut Timings, start: Instant) {
        timings.total = start.elapsed();
        timings.in_session_run = self.clock.in_run;
        timings.session_runs = self.clock.runs;
    }
}

impl Backend for PublishedModel {
    /// The decoder state after the question (immutable values: keeping it costs an `Arc`).
    type Mark = Option<State>;
    fn begin(&mut self) {
        self.clock = RunClock::default();
    }
    fn ensure_prefix(&mut self, frame: &Frame, timings: &mut Timings) -> Result<()> {
        PublishedModel::ensure_prefix(self, frame, timings)
    }
    fn finish(&self, timings: &mut Timings, start: Instant) {
        PublishedModel::finish(self, timings, start);
    }
    fn question_ids(&mut self, question: &str) -> Result<Arc<[u32]>> {
        self.cached(false, question)
    }
    fn answer_ids(&mut self, answer: &str) -> Result<Arc<[u32]>> {
        self.cached(true, answer)
    }
    fn restore_prefix(&mut self) -> Result<()> {
        PublishedModel::restore_prefix(self)
    }
    fn clear(&mut self) -> Result<()> {
        self.state = self.io.empty_state()?;
        Ok(())
    }
    fn feed_ids(&mut self, ids: &[u32]) -> Result<()> {
        PublishedModel::feed_ids(self, ids)
    }
    /// The decoder takes any number of rows; parts of this many bound a safety probe's wait to
    /// one call of them while the prompt's whole cost stays about the same.
    fn prompt_piece(&self) -> usize {
        PROMPT_PIECE
    }
    fn mark(&mut self, into: &mut Self::Mark) {
        *into = Some(self.state.clone());
    }
    fn back_to(&mut self, mark: &Self::Mark) {
        if let Some(s) = mark {
            self.state = s.clone();
        }
    }
    /// States are immutable ONNX Runtime values: suspending keeps a reference, not a copy. The
    /// frame prefix stays (it holds its own state), so the next probe of that frame reuses it.
    type Suspended = (State, Vec<f32>, RunClock);
    fn suspend(&mut self) -> Self::Suspended {
        (self.state.clone(), self.logits.clone(), self.clock)
    }
    fn resume(&mut self, (state, logits, clock): Self::Suspended) -> Result<()> {
        self.state = state;
        self.logits = logits;
        self.clock = clock;
        Ok(())
    }
}

impl Decode for PublishedModel {
    fn logits(&self) -> &[f32] {
        &self.logits
    }
    fn feed_token(&mut self, tok: u32) -> Result<()> {
        self.feed_ids(&[tok])
    }
    fn has_room(&self) -> bool {
        true // the KV grows with the context; the model's own limit is far beyond a question
    }
    fn tokenizer(&self) -> &tokenizers::Tokenizer {
        &self.tokenizer
    }
    fn stop_ids(&self) -> &[u32] {
        &self.stop_ids
    }
}
