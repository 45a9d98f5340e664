//! The graph I/O contract (ARCHITECTURE.md, contract 1) computed from a manifest, and the check of a
//! session's actual inputs/outputs against it.

use std::path::Path;

use ort::value::{TensorElementType, ValueType};

use crate::bundle::{GraphKind, Manifest};
use crate::error::BundleError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Elem {
    F32,
    I32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub elem: Elem,
    pub shape: Vec<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
}

fn spec(name: impl Into<String>, elem: Elem, shape: &[usize]) -> TensorSpec {
    TensorSpec {
        name: name.into(),
        elem,
        shape: shape.iter().map(|&d| d as i64).collect(),
    }
}

/// decoder_prefill's input naming the window columns that become the new conv states
/// (`[n, n+3)` for n valid rows; forge/conv_index.py).
pub const CONV_INDEX: &str = "conv_index";

/// The I/O a graph of this kind must have for this manifest.
pub fn expected(m: &Manifest, kind: GraphKind) -> Signature {
    let d = &m.decoder;
    let (s, n, h) = (m.image.size as usize, m.image.tokens, d.hidden);
    let (c, kv, hd) = (d.kv_capacity, d.num_kv_heads, d.head_dim);
    match kind {
        GraphKind::Vision => Signature {
            inputs: vec![spec("pixel_values", Elem::F32, &[1, 3, s, s])],
            outputs: vec![spec("image_embeds", Elem::F32, &[1, n, h])],
        },
        GraphKind::Embed => Signature {
            inputs: vec![spec("input_ids", Elem::I32, &[1, d.prefill_chunk])],
            outputs: vec![spec("inputs_embeds", Elem::F32, &[1, d.prefill_chunk, h])],
        },
        GraphKind::DecoderPrefill | GraphKind::DecoderStep => {
            let t = if kind == GraphKind::DecoderStep {
                1
            } else {
                d.prefill_chunk
            };
            let mut inputs = vec![
                spec("inputs_embeds", Elem::F32, &[1, t, h]),
                spec("position_ids", Elem::I32, &[1, t]),
                spec("attention_mask", Elem::F32, &[1, 1, t, c + t]),
            ];
            if kind == GraphKind::DecoderPrefill && d.prefill_conv_index {
                inputs.push(spec(CONV_INDEX, Elem::I32, &[3]));
            }
            let mut outputs = vec![spec("logits", Elem::F32, &[1, t, m.text.vocab_size])];
            for i in d.conv_layers() {
                inputs.push(spec(format!("past_conv.{i}"), Elem::F32, &[1, h, 3]));
                outputs.push(spec(format!("present_conv.{i}"), Elem::F32, &[1, h, 3]));
            }
            for i in d.attention_layers() {
                for kv_name in ["key", "value"] {
                    inputs.push(spec(
                        format!("past_key_values.{i}.{kv_name}"),
                        Elem::F32,
                        &[1, kv, c, hd],
                    ));
                    outputs.push(spec(
                        format!("present.{i}.{kv_name}"),
                        Elem::F32,
                        &[1, kv, t, hd],
                    ));
                }
            }
            Signature { inputs, outputs }
        }
    }
}

/// (name, type) pairs of a graph's inputs or outputs.
pub type Io = Vec<(String, ValueType)>;

/// The I/O a session reports.
pub fn actual(session: &ort::session::Session) -> (Io, Io) {
    let f = |o: &ort::value::Outlet| (o.name().to_string(), o.dtype().clone());
    (
        session.inputs().iter().map(f).collect(),
        session.outputs().iter().map(f).collect(),
    )
}

/// Checks actual I/O against the expected signature; the error names the file and the first problem.
pub fn check(
    file: &Path,
    want: &Signature,
    inputs: &[(String, ValueType)],
    outputs: &[(String, ValueType)],
) -> Result<(), BundleError> {
    let fail = |message: String| BundleError::Graph {
        path: file.to_path_buf(),
        message,
    };
    for (side, want, got) in [
        ("input", &want.inputs, inputs),
        ("output", &want.outputs, outputs),
    ] {
        for w in want.iter() {
            let Some((_, ty)) = got.iter().find(|(n, _)| *n == w.name) else {
                let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
                return Err(fail(format!(
                    "missing {side} `{}` (graph has: {})",
                    w.name,
                    names.join(", ")
                )));
            };
            check_one(side, w, ty).map_err(fail)?;
        }
        if let Some((extra, _)) = got.iter().find(|(n, _)| !want.iter().any(|w| w.name == *n)) {
            return Err(fail(format!(
                "unexpected {side} `{extra}` (not in the contract for this manifest)"
            )));
        }
    }
    Ok(())
}

fn check_one(side: &str, w: &TensorSpec, ty: &ValueType) -> Result<(), String> {
    let ValueType::Tensor {
        ty: elem,
        shape,
        dimension_symbols,
    } = ty
    else {
        return Err(format!("{side} `{}` is not a tensor", w.name));
    };
    let elem_ok = matches!(
        (w.elem, elem),
        (Elem::F32, TensorElementType::Float32) | (Elem::I32, TensorElementType::Int32)
    );
    if !elem_ok {
        return Err(format!(
            "{side} `{}` is {elem:?}, the contract says {:?}",
            w.name, w.elem
        ));
    }
    let dims: Vec<i64> = shape.iter().copied().collect();
    if let Some(sym) = dimension_symbols.iter().find(|s| !s.is_empty()) {
        return Err(format!(
            "{side} `{}` has a symbolic dimension `{sym}`; graphs must have static shapes",
            w.name
        ));
    }
    if dims != w.shape {
        return Err(format!(
            "{side} `{}` has shape {dims:?}, the manifest implies {:?}",
            w.name, w.shape
        ));
    }
    Ok(())
}
