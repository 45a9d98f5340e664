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
    /// The static shape (a capacity dimension at the manifest's kv_capacity).
    pub shape: Vec<i64>,
    /// A decoder graph's KV capacity dimension: (axis, the name a growable graph gives it).
    pub capacity_dim: Option<(usize, &'static str)>,
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
        capacity_dim: None,
    }
}

/// The name a growable decoder graph gives the KV inputs' capacity dimension (forge/capacity.py).
pub const CAPACITY_DIM: &str = "kv_capacity";
/// ... and the attention mask's last dimension (capacity + T).
pub const MASK_DIM: &str = "mask_width";

fn with_capacity_dim(mut s: TensorSpec, axis: usize, name: &'static str) -> TensorSpec {
    s.capacity_dim = Some((axis, name));
    s
}

/// Whether a decoder graph's inputs name the KV capacity (the CPU variants of forge's exports):
/// the runtime then binds KV buffers of any capacity up to the manifest's, and attends over the
/// capacity bucket the context fills instead of all of it. `check` has made sure that the KV
/// inputs and the mask agree.
pub fn growable(inputs: &[(String, ValueType)]) -> bool {
    inputs.iter().any(|(name, ty)| {
        name.starts_with("past_key_values.")
            && matches!(ty, ValueType::Tensor { dimension_symbols, .. }
                if dimension_symbols.get(2).is_some_and(|s| s == CAPACITY_DIM))
    })
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
                with_capacity_dim(
                    spec("attention_mask", Elem::F32, &[1, 1, t, c + t]),
                    3,
                    MASK_DIM,
                ),
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
                    inputs.push(with_capacity_dim(
                        spec(
                            format!("past_key_values.{i}.{kv_name}"),
                            Elem::F32,
                            &[1, kv, c, hd],
                        ),
                        2,
                        CAPACITY_DIM,
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
/// Shapes are static, except that a decoder graph may name all its capacity dimensions (none or all).
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
    let mut named_capacity = Vec::new();
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
            if let Some(named) = check_one(side, w, ty).map_err(fail)? {
                named_capacity.push((w.name.as_str(), named));
            }
        }
        if let Some((extra, _)) = got.iter().find(|(n, _)| !want.iter().any(|w| w.name == *n)) {
            return Err(fail(format!(
                "unexpected {side} `{extra}` (not in the contract for this manifest)"
            )));
        }
    }
    if let (Some(named), Some(fixed)) = (
        named_capacity.iter().find(|(_, n)| *n),
        named_capacity.iter().find(|(_, n)| !*n),
    ) {
        return Err(fail(format!(
            "input `{}` names its capacity dimension but `{}` fixes it: a decoder graph names \
             all or none (forge/capacity.py)",
            named.0, fixed.0
        )));
    }
    Ok(())
}

/// Checks one tensor; for one with a capacity dimension, says whether the graph names it.
fn check_one(side: &str, w: &TensorSpec, ty: &ValueType) -> Result<Option<bool>, String> {
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
    let mut dims: Vec<i64> = shape.iter().copied().collect();
    let mut named = w.capacity_dim.map(|_| false);
    for (axis, sym) in dimension_symbols.iter().enumerate() {
        if sym.is_empty() {
            continue;
        }
        match w.capacity_dim {
            Some((cap_axis, name)) if cap_axis == axis && sym == name => {
                // any capacity up to the manifest's: compare the rest of the shape
                if let (Some(d), Some(&want)) = (dims.get_mut(axis), w.shape.get(axis)) {
                    *d = want;
                }
                named = Some(true);
            }
            _ => {
                return Err(format!(
                    "{side} `{}` has a symbolic dimension `{sym}`; graphs must have static shapes \
                     (only a decoder graph's capacity dimension may be named: `{CAPACITY_DIM}` on \
                     the KV inputs, `{MASK_DIM}` on the mask)",
                    w.name
                ));
            }
        }
    }
    if dims != w.shape {
        return Err(format!(
            "{side} `{}` has shape {dims:?}, the manifest implies {:?}",
            w.name, w.shape
        ));
    }
    Ok(named)
}
