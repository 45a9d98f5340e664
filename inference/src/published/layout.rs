//! A published LFM2-VL ONNX release on disk: which files make up the chosen variant, and the
//! configuration the runtime reads from beside them.
//!
//! ```text
//! DIR/config.json                  model configuration (image_token_id, text_config, ...)
//! DIR/tokenizer.json               + tokenizer_config.json (special tokens, maybe the chat template)
//! DIR/chat_template.jinja          the chat template (or inside tokenizer_config.json)
//! DIR/preprocessor_config.json     the image processor (or inside processor_config.json)
//! DIR/onnx/embed_tokens{_V}.onnx   input_ids -> inputs_embeds
//! DIR/onnx/embed_images{_V}.onnx   pixel_values, pixel_attention_mask, spatial_shapes -> image features
//! DIR/onnx/decoder{_V}.onnx        inputs_embeds, attention_mask, past_* -> logits, present_*
//!                                  (+ external data: decoder{_V}.onnx_data, ...)
//! ```
//! The variant `V` is the file suffix: `fp32` (none), `fp16`, `q4`, `q8`, `q4f16`, ...; `A-B` takes the
//! vision encoder from variant A and the decoder from B (`fp16-q4`, as the releases' tables name them).

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::BundleError;

/// The files and settings of one variant of a published release.
#[derive(Debug, Clone)]
pub struct Layout {
    pub dir: PathBuf,
    pub variant: String,
    pub embed_tokens: PathBuf,
    pub embed_images: PathBuf,
    pub decoder: PathBuf,
    pub config: Value,
    /// preprocessor_config.json, or the `image_processor` entry of processor_config.json.
    pub image_processor: Value,
    /// processor_config.json (may be empty).
    pub processor: Value,
    pub tokenizer_config: Value,
    pub chat_template: String,
}

/// True when `dir` looks like a published release (an `onnx/` folder with a decoder graph, and a
/// config.json), as opposed to an AutoNeural bundle (manifest.toml).
pub fn is_published(dir: &Path) -> bool {
    !dir.join("manifest.toml").is_file()
        && dir.join("config.json").is_file()
        && dir.join("onnx").is_dir()
}

fn invalid(path: &Path, message: impl Into<String>) -> BundleError {
    BundleError::Invalid {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

fn read_text(path: &Path) -> Result<String, BundleError> {
    std::fs::read_to_string(path).map_err(|e| BundleError::io(path, e))
}

pub(crate) fn read_json(path: &Path) -> Result<Value, BundleError> {
    let text = read_text(path)?;
    let v: Value = serde_json::from_str(&text).map_err(|e| invalid(path, e.to_string()))?;
    if !v.is_object() {
        return Err(invalid(path, "not a JSON object"));
    }
    Ok(v)
}

fn read_json_if_present(path: &Path) -> Result<Value, BundleError> {
    if path.is_file() {
        read_json(path)
    } else {
        Ok(Value::Object(Default::default()))
    }
}

/// The suffix a variant name gives a file (`fp32` -> none).
fn suffix(v: &str) -> String {
    if v == "fp32" || v.is_empty() {
        String::new()
    } else {
        format!("_{v}")
    }
}

/// The variants present in `onnx/`: suffixes of `decoder*.onnx` and `embed_images*.onnx`.
pub fn variants_in(onnx: &Path) -> (Vec<String>, Vec<String>) {
    let mut decoders = Vec::new();
    let mut encoders = Vec::new();
    if let Ok(rd) = std::fs::read_dir(onnx) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(stem) = name.strip_suffix(".onnx") else {
                continue;
            };
            for (prefix, list) in [("decoder", &mut decoders), ("embed_images", &mut encoders)] {
                if let Some(rest) = stem.strip_prefix(prefix) {
                    if rest.is_empty() {
                        list.push("fp32".to_string());
                    } else if let Some(v) = rest.strip_prefix('_') {
                        list.push(v.to_string());
                    }
                }
            }
        }
    }
    decoders.sort();
    encoders.sort();
    (decoders, encoders)
}

impl Layout {
    /// Resolves `variant` (None: `fp32`) in `dir` and reads the configuration files. Every error
    /// names the file and says what is wrong with it.
    pub fn open(dir: &Path, variant: Option<&str>) -> Result<Layout, BundleError> {
        let onnx = dir.join("onnx");
        let (decoders, encoders) = variants_in(&onnx);
        if decoders.is_empty() {
            return Err(BundleError::Missing {
                path: onnx.join("decoder.onnx"),
                message: "no decoder*.onnx in the release's onnx/ folder".into(),
            });
        }
        let variant = variant.unwrap_or("fp32").to_string();
        let (v_enc, v_dec) = match variant.split_once('-') {
            Some((a, b)) => (a.to_string(), b.to_string()),
            None => (variant.clone(), variant.clone()),
        };
        let no_variant = |available: Vec<String>| BundleError::NoVariant {
            variant: variant.clone(),
            available,
        };
        if !decoders.contains(&v_dec) {
            return Err(no_variant(
                decoders.iter().map(|d| format!("decoder {d}")).collect(),
            ));
        }
        if !encoders.contains(&v_enc) {
            return Err(no_variant(
                encoders
                    .iter()
                    .map(|e| format!("embed_images {e}"))
                    .collect(),
            ));
        }
        let decoder = onnx.join(format!("decoder{}.onnx", suffix(&v_dec)));
        let embed_images = onnx.join(format!("embed_images{}.onnx", suffix(&v_enc)));
        // The releases quantize the token table rarely: the decoder's precision if there is one,
        // else the encoder's, else fp32.
        let embed_tokens = [&v_dec, &v_enc, &"fp32".to_string()]
            .iter()
            .map(|v| onnx.join(format!("embed_tokens{}.onnx", suffix(v))))
            .find(|p| p.is_file())
            .ok_or_else(|| BundleError::Missing {
                path: onnx.join("embed_tokens.onnx"),
                message: format!("no embed_tokens graph for variant `{variant}`"),
            })?;

        let config = read_json(&dir.join("config.json"))?;
        let processor = read_json_if_present(&dir.join("processor_config.json"))?;
        let pre = dir.join("preprocessor_config.json");
        let image_processor = if pre.is_file() {
            read_json(&pre)?
        } else if let Some(ip) = processor.get("image_processor").filter(|v| v.is_object()) {
            ip.clone()
        } else {
            return Err(BundleError::Missing {
                path: pre,
                message: "neither preprocessor_config.json nor an image_processor entry in processor_config.json".into(),
            });
        };
        let tokenizer_config = read_json_if_present(&dir.join("tokenizer_config.json"))?;
        let chat_template = chat_template(dir, &tokenizer_config, &processor)?;
        Ok(Layout {
            dir: dir.to_path_buf(),
            variant,
            embed_tokens,
            embed_images,
            decoder,
            config,
            image_processor,
            processor,
            tokenizer_config,
            chat_template,
        })
    }

    /// A special token's text from tokenizer_config.json (`"bos_token": "<|startoftext|>"` or
    /// `{"content": ...}`).
    pub fn special_token(&self, key: &str) -> Option<String> {
        match self.tokenizer_config.get(key)? {
            Value::String(s) => Some(s.clone()),
            Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
            _ => None,
        }
    }

    /// A value of config.json, looked up at the top, then in `text_config`.
    pub fn config_value(&self, key: &str) -> Option<&Value> {
        self.config
            .get(key)
            .or_else(|| self.config.get("text_config")?.get(key))
            .filter(|v| !v.is_null())
    }
}

/// The chat template: chat_template.jinja, chat_template.json, then tokenizer_config.json /
/// processor_config.json `chat_template` (a string, or a list of named templates: "default").
fn chat_template(dir: &Path, tok: &Value, processor: &Value) -> Result<String, BundleError> {
    let jinja = dir.join("chat_template.jinja");
    if jinja.is_file() {
        return read_text(&jinja);
    }
    let json = dir.join("chat_template.json");
    let from_json = read_json_if_present(&json)?;
    for (path, v) in [
        (json.clone(), &from_json),
        (dir.join("tokenizer_config.json"), tok),
        (dir.join("processor_config.json"), processor),
    ] {
        match v.get("chat_template") {
            Some(Value::String(s)) => return Ok(s.clone()),
            Some(Value::Array(list)) => {
                let named = |want: &str| {
                    list.iter().find_map(|t| {
                        (t.get("name")?.as_str()? == want)
                            .then(|| t.get("template")?.as_str().map(str::to_string))
                            .flatten()
                    })
                };
                return named("default")
                    .ok_or_else(|| invalid(&path, "chat_template list has no `default` entry"));
            }
            Some(other) => {
                return Err(invalid(
                    &path,
                    format!("chat_template must be a string, not {other}"),
                ));
            }
            None => {}
        }
    }
    Err(BundleError::Missing {
        path: jinja,
        message:
            "no chat template (chat_template.jinja, or chat_template in tokenizer_config.json)"
                .into(),
    })
}
