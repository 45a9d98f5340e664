//! Model bundles (ARCHITECTURE.md, contract 1): the manifest schema, checksums, tokenizer and probes.
//!
//! `Bundle::load` reads `manifest.toml`, verifies the SHA-256 of every listed file (and that no
//! unlisted file sneaked in), loads the tokenizer and the probe set, and checks the manifest's
//! internal consistency. Graph inputs/outputs are checked against the manifest when their sessions
//! are created (`graphs::check_signature`), because that needs ONNX Runtime.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::error::{BundleError, Error};
use crate::probes::ProbeSet;
use crate::types::ContextUse;

pub const FORMAT: &str = "autoneural-bundle/1";
pub(crate) const MANIFEST: &str = "manifest.toml";
pub(crate) const PROBES: &str = "probes.toml";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: String,
    pub name: String,
    pub description: String,
    pub image: ImageSpec,
    pub text: TextSpec,
    pub decoder: DecoderSpec,
    pub variants: BTreeMap<String, Variant>,
    pub files: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSpec {
    pub size: u32,
    pub channels: u32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub tokens: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextSpec {
    pub tokenizer: String,
    pub vocab_size: usize,
    pub bos_id: u32,
    pub eos_id: u32,
    pub pad_id: u32,
    pub image_token: String,
    pub image_token_id: u32,
    pub stop_tokens: Vec<String>,
    pub system_prompt: String,
    pub template: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerType {
    Conv,
    FullAttention,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecoderSpec {
    pub hidden: usize,
    pub layer_types: Vec<LayerType>,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub conv_kernel: usize,
    pub kv_capacity: usize,
    pub prefill_chunk: usize,
    pub mask_value: f32,
    pub rope_theta: f64,
    /// decoder_prefill takes `conv_index` (contract 1): a chunk may hold fewer than
    /// `prefill_chunk` valid rows. Bundles made before it run a prompt's remainder as single steps.
    #[serde(default)]
    pub prefill_conv_index: bool,
}

impl DecoderSpec {
    pub fn conv_layers(&self) -> impl Iterator<Item = usize> + '_ {
        self.layer_types
            .iter()
            .enumerate()
            .filter(|(_, t)| **t == LayerType::Conv)
            .map(|(i, _)| i)
    }
    pub fn attention_layers(&self) -> impl Iterator<Item = usize> + '_ {
        self.layer_types
            .iter()
            .enumerate()
            .filter(|(_, t)| **t == LayerType::FullAttention)
            .map(|(i, _)| i)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    pub quantization: String,
    pub vision: String,
    pub embed: String,
    pub decoder_prefill: String,
    pub decoder_step: String,
    #[serde(default)]
    pub sqnr_db: Option<BTreeMap<String, f64>>,
    #[serde(default)]
    pub qnn_context: Option<QnnContext>,
    /// `int4` variants: the MatMulNBits recipe (forge cpu-int4).
    #[serde(default)]
    pub int4: Option<Int4Recipe>,
    /// A CPU variant's accuracy against fp32 on the golden cases (forge cpu-int4).
    #[serde(default)]
    pub accuracy: Option<Accuracy>,
}

/// How an `int4` variant's decoder was made: ONNX Runtime's MatMulNBits, 4-bit symmetric blocks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Int4Recipe {
    /// Weights per scale.
    pub block: u32,
    /// The LM head: `float` (kept) or `int4`.
    pub head: String,
    /// What MatMulNBits multiplies in: `float` (absent: the default) or `int8` (accuracy_level 4).
    #[serde(default)]
    pub compute: Option<String>,
}

/// A variant against fp32 on the bundle's golden cases.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Accuracy {
    /// max |logits - fp32 logits| / max |fp32 logits| at the first decision (same context).
    pub first_logits_rel_err: f64,
    /// Greedy tokens equal to fp32's before the first divergence, "n/total".
    pub greedy_tokens_agreeing: String,
    /// The largest change of a probe answer's probability.
    pub probe_probability_max_diff: f64,
}

/// Precompiled QNN EP context models shipped in the bundle, valid for one HTP arch / SoC.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QnnContext {
    pub htp_arch: u32,
    pub soc_model: u32,
    #[serde(default)]
    pub vision: Option<String>,
    #[serde(default)]
    pub embed: Option<String>,
    #[serde(default)]
    pub decoder_prefill: Option<String>,
    #[serde(default)]
    pub decoder_step: Option<String>,
}

/// The four graphs of a variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GraphKind {
    Vision,
    Embed,
    DecoderPrefill,
    DecoderStep,
}

impl GraphKind {
    pub const ALL: [GraphKind; 4] = [
        GraphKind::Vision,
        GraphKind::Embed,
        GraphKind::DecoderPrefill,
        GraphKind::DecoderStep,
    ];
    pub fn name(self) -> &'static str {
        match self {
            GraphKind::Vision => "vision",
            GraphKind::Embed => "embed",
            GraphKind::DecoderPrefill => "decoder_prefill",
            GraphKind::DecoderStep => "decoder_step",
        }
    }
}

impl Variant {
    pub fn graph(&self, kind: GraphKind) -> &str {
        match kind {
            GraphKind::Vision => &self.vision,
            GraphKind::Embed => &self.embed,
            GraphKind::DecoderPrefill => &self.decoder_prefill,
            GraphKind::DecoderStep => &self.decoder_step,
        }
    }
    pub fn qnn_context_graph(&self, kind: GraphKind) -> Option<&str> {
        let c = self.qnn_context.as_ref()?;
        match kind {
            GraphKind::Vision => c.vision.as_deref(),
            GraphKind::Embed => c.embed.as_deref(),
            GraphKind::DecoderPrefill => c.decoder_prefill.as_deref(),
            GraphKind::DecoderStep => c.decoder_step.as_deref(),
        }
    }
    /// A QDQ variant made for the NPU (w8a16, w4a16); a CPU runs it as dequantize + float op.
    pub fn is_qdq(&self) -> bool {
        matches!(self.quantization.as_str(), "w8a16" | "w4a16")
    }
}

/// A loaded, verified bundle.
pub struct Bundle {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub tokenizer: tokenizers::Tokenizer,
    pub probes: ProbeSet,
    /// Token ids of `text.stop_tokens`, resolved through the tokenizer.
    pub stop_ids: Vec<u32>,
}

impl std::fmt::Debug for Bundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bundle")
            .field("dir", &self.dir)
            .field("name", &self.manifest.name)
            .finish_non_exhaustive()
    }
}

/// How thoroughly `Bundle::load` checks the files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// SHA-256 of every file (the default; seconds for a 1.5B bundle).
    Checksums,
    /// Only that every listed file exists (for benchmarks that reload a big bundle often).
    Presence,
}

impl Bundle {
    /// Loads and verifies a bundle directory; `probes` overrides the bundle's probes.toml.
    pub fn load(dir: &Path, probes: Option<&Path>, verify: Verify) -> Result<Bundle, BundleError> {
        let manifest = read_manifest(dir)?;
        check_manifest(dir, &manifest)?;
        verify_files(dir, &manifest, verify)?;
        let tok_path = dir.join(&manifest.text.tokenizer);
        let tokenizer =
            tokenizers::Tokenizer::from_file(&tok_path).map_err(|e| BundleError::Invalid {
                path: tok_path.clone(),
                message: e.to_string(),
            })?;
        let stop_ids = check_tokenizer(&tok_path, &tokenizer, &manifest)?;
        let probes_path = probes
            .map(Path::to_path_buf)
            .unwrap_or_else(|| dir.join(PROBES));
        let probes = ProbeSet::load(&probes_path)?;
        Ok(Bundle {
            dir: dir.to_path_buf(),
            manifest,
            tokenizer,
            probes,
            stop_ids,
        })
    }

    /// Tokenizes the prompt for `question` with the manifest's template and system prompt: the ids
    /// before the image token and the ids after it.
    pub fn prompt_ids(&self, question: &str) -> crate::Result<(Vec<u32>, Vec<u32>)> {
        let t = &self.manifest.text;
        if question.contains(&t.image_token) {
            return Err(Error::Prompt(format!(
                "the question contains the image token `{}`",
                t.image_token
            )));
        }
        let text = t
            .template
            .replace("{system}", &t.system_prompt)
            .replace("{question}", question);
        let enc = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| Error::Prompt(e.to_string()))?;
        let ids = enc.get_ids();
        let mut at = ids
            .iter()
            .enumerate()
            .filter(|(_, id)| **id == t.image_token_id)
            .map(|(i, _)| i);
        let (Some(i), None) = (at.next(), at.next()) else {
            return Err(Error::Prompt(
                "the prompt must contain exactly one image token".into(),
            ));
        };
        Ok((ids[..i].to_vec(), ids[i + 1..].to_vec()))
    }

    /// How much of the KV a request for `question` takes before its first generated token: the
    /// frame prefix (system turn + the image's tokens) and the question.
    pub fn context_use(&self, question: &str) -> crate::Result<ContextUse> {
        let (before, after) = self.prompt_ids(question)?;
        Ok(ContextUse {
            prompt: before.len() + self.manifest.image.tokens + after.len(),
            capacity: self.manifest.decoder.kv_capacity,
        })
    }

    pub fn variant(&self, name: &str) -> Result<&Variant, BundleError> {
        self.manifest
            .variants
            .get(name)
            .ok_or_else(|| BundleError::NoVariant {
                variant: name.to_string(),
                available: self.manifest.variants.keys().cloned().collect(),
            })
    }

    /// SHA-256s (from the verified manifest) of the files a variant's graph depends on, for cache keys.
    pub fn checksum_of(&self, rel: &str) -> Option<&str> {
        self.manifest.files.get(rel).map(String::as_str)
    }
}

pub(crate) fn read_manifest(dir: &Path) -> Result<Manifest, BundleError> {
    let path = dir.join(MANIFEST);
    if !dir.is_dir() {
        return Err(BundleError::Missing {
            path: dir.to_path_buf(),
            message: "bundle directory does not exist".into(),
        });
    }
    let text = std::fs::read_to_string(&path).map_err(|e| BundleError::io(&path, e))?;
    toml::from_str(&text).map_err(|e| BundleError::Invalid {
        path,
        message: e.to_string(),
    })
}

fn invalid(dir: &Path, message: impl Into<String>) -> BundleError {
    BundleError::Invalid {
        path: dir.join(MANIFEST),
        message: message.into(),
    }
}

/// Internal consistency of the manifest (values a graph or the runtime depends on).
/// The `quantization` values a variant may declare (forge writes them; the runtime chooses by them).
pub(crate) const QUANTIZATIONS: [&str; 4] = ["none", "w8a16", "w4a16", "int4"];

pub(crate) fn check_manifest(dir: &Path, m: &Manifest) -> Result<(), BundleError> {
    if m.format != FORMAT {
        return Err(invalid(
            dir,
            format!("format is `{}`, this runtime reads `{FORMAT}`", m.format),
        ));
    }
    let img = &m.image;
    if img.size == 0 || img.size > 4096 {
        return Err(invalid(
            dir,
            format!("image.size {} out of range 1..=4096", img.size),
        ));
    }
    if img.channels != 3 {
        return Err(invalid(
            dir,
            format!(
                "image.channels is {}; the graphs take RGB (3)",
                img.channels
            ),
        ));
    }
    if img.std.iter().any(|s| !s.is_finite() || *s == 0.0)
        || img.mean.iter().any(|v| !v.is_finite())
    {
        return Err(invalid(
            dir,
            "image.mean/std must be finite and std non-zero",
        ));
    }
    if img.tokens == 0 {
        return Err(invalid(dir, "image.tokens must be at least 1"));
    }
    let d = &m.decoder;
    if d.hidden == 0 || d.head_dim == 0 || d.num_kv_heads == 0 || d.num_heads == 0 {
        return Err(invalid(
            dir,
            "decoder.hidden/head_dim/num_heads/num_kv_heads must be non-zero",
        ));
    }
    if d.layer_types.is_empty() {
        return Err(invalid(dir, "decoder.layer_types is empty"));
    }
    if d.conv_kernel != 3 {
        return Err(invalid(
            dir,
            format!(
                "decoder.conv_kernel is {}; the state layout [1,H,3] needs 3",
                d.conv_kernel
            ),
        ));
    }
    if d.prefill_chunk == 0 || d.prefill_chunk > d.kv_capacity {
        return Err(invalid(
            dir,
            format!(
                "decoder.prefill_chunk {} must be in 1..=kv_capacity ({})",
                d.prefill_chunk, d.kv_capacity
            ),
        ));
    }
    if img.tokens >= d.kv_capacity {
        return Err(invalid(
            dir,
            format!(
                "image.tokens {} leaves no room in kv_capacity {}",
                img.tokens, d.kv_capacity
            ),
        ));
    }
    if !d.mask_value.is_finite() || d.mask_value >= 0.0 {
        return Err(invalid(
            dir,
            format!(
                "decoder.mask_value {} must be a finite negative number",
                d.mask_value
            ),
        ));
    }
    let t = &m.text;
    if (t.image_token_id as usize) >= t.vocab_size || (t.pad_id as usize) >= t.vocab_size {
        return Err(invalid(
            dir,
            "text.image_token_id / pad_id outside vocab_size",
        ));
    }
    let image_marks = t.template.matches(&t.image_token).count();
    if image_marks != 1 {
        return Err(invalid(
            dir,
            format!(
                "text.template must contain `{}` exactly once (found {image_marks})",
                t.image_token
            ),
        ));
    }
    let (Some(q), Some(img_at)) = (
        t.template.find("{question}"),
        t.template.find(&t.image_token),
    ) else {
        return Err(invalid(dir, "text.template must contain `{question}`"));
    };
    if img_at > q {
        return Err(invalid(
            dir,
            "text.template: the image must come before {question} (it is part of the shared prefix)",
        ));
    }
    if m.variants.is_empty() {
        return Err(invalid(dir, "no [variants]"));
    }
    for (name, v) in &m.variants {
        if !QUANTIZATIONS.contains(&v.quantization.as_str()) {
            return Err(invalid(
                dir,
                format!(
                    "variants.{name}.quantization is `{}`; one of {}",
                    v.quantization,
                    QUANTIZATIONS.join(", ")
                ),
            ));
        }
        for kind in GraphKind::ALL {
            let rel = v.graph(kind);
            if !m.files.contains_key(rel) {
                return Err(invalid(
                    dir,
                    format!(
                        "variants.{name}.{} = `{rel}` is not listed in [files]",
                        kind.name()
                    ),
                ));
            }
        }
        for kind in GraphKind::ALL {
            if let Some(rel) = v.qnn_context_graph(kind)
                && !m.files.contains_key(rel)
            {
                return Err(invalid(
                    dir,
                    format!(
                        "variants.{name}.qnn_context.{} = `{rel}` is not listed in [files]",
                        kind.name()
                    ),
                ));
            }
        }
    }
    for must in [t.tokenizer.as_str(), PROBES] {
        if !m.files.contains_key(must) {
            return Err(invalid(dir, format!("`{must}` is not listed in [files]")));
        }
    }
    for (rel, sha) in &m.files {
        if rel.starts_with('/') || rel.split('/').any(|c| c == ".." || c.is_empty()) {
            return Err(invalid(
                dir,
                format!("[files] entry `{rel}` must be a relative path inside the bundle"),
            ));
        }
        if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid(
                dir,
                format!("[files] `{rel}`: `{sha}` is not a SHA-256 hex digest"),
            ));
        }
    }
    Ok(())
}

/// Every listed file exists (and matches its SHA-256); no unlisted regular file exists.
pub(crate) fn verify_files(dir: &Path, m: &Manifest, verify: Verify) -> Result<(), BundleError> {
    for (rel, expected) in &m.files {
        let path = dir.join(rel);
        if !path.is_file() {
            return Err(BundleError::Missing {
                path,
                message: "listed in manifest.toml [files]".into(),
            });
        }
        if verify == Verify::Checksums {
            let actual = sha256_file(&path)?;
            if !actual.eq_ignore_ascii_case(expected) {
                return Err(BundleError::Checksum {
                    path,
                    expected: expected.clone(),
                    actual,
                });
            }
        }
    }
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|e| BundleError::Read {
            path: d.clone(),
            message: e.to_string(),
        })?;
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            if name.to_string_lossy().starts_with('.') {
                continue; // dotfiles (editor state, caches) are not part of a bundle
            }
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let Ok(rel) = path.strip_prefix(dir) else {
                continue;
            };
            let rel = rel.to_string_lossy().replace('\\', "/");
            if rel != MANIFEST && !m.files.contains_key(&rel) {
                return Err(BundleError::Unlisted { path });
            }
        }
    }
    Ok(())
}

pub fn sha256_file(path: &Path) -> Result<String, BundleError> {
    let mut f = std::fs::File::open(path).map_err(|e| BundleError::Read {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| BundleError::Read {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

fn check_tokenizer(
    path: &Path,
    tok: &tokenizers::Tokenizer,
    m: &Manifest,
) -> Result<Vec<u32>, BundleError> {
    let bad = |message: String| BundleError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    let t = &m.text;
    match tok.token_to_id(&t.image_token) {
        Some(id) if id == t.image_token_id => {}
        Some(id) => {
            return Err(bad(format!(
                "`{}` has id {id}, manifest text.image_token_id says {}",
                t.image_token, t.image_token_id
            )));
        }
        None => {
            return Err(bad(format!(
                "image token `{}` is not in the vocabulary",
                t.image_token
            )));
        }
    }
    let vocab = tok.get_vocab_size(true);
    if vocab > t.vocab_size {
        return Err(bad(format!(
            "vocabulary has {vocab} tokens, manifest text.vocab_size says {}",
            t.vocab_size
        )));
    }
    let mut stop_ids = Vec::new();
    for s in &t.stop_tokens {
        let id = tok
            .token_to_id(s)
            .ok_or_else(|| bad(format!("stop token `{s}` is not in the vocabulary")))?;
        stop_ids.push(id);
    }
    if !stop_ids.contains(&t.eos_id) {
        stop_ids.push(t.eos_id);
    }
    Ok(stop_ids)
}
