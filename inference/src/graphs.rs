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
    /// A prefill graph's width dimension (axis), which a width-free graph names `WIDTH_DIM`.
    pub width_dim: Option<usize>,
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
        width_dim: None,
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

/// The name a width-free prefill graph gives its width (forge/prefill_width.py): the rows of
/// `inputs_embeds`, `position_ids`, `attention_mask`, `logits` and every `present.*`.
pub const WIDTH_DIM: &str = "prefill_width";

fn with_width_dim(mut s: TensorSpec, axis: usize, prefill: bool) -> TensorSpec {
    if prefill {
        s.width_dim = Some(axis);
    }
    s
}

/// Whether a prefill graph's inputs name its width (the CPU variants of forge's exports): the
/// runtime then runs a short prompt part at a smaller width instead of padding it to the chunk.
/// `check` has made sure that all width dimensions agree.
pub fn width_free(inputs: &[(String, ValueType)]) -> bool {
    inputs.iter().any(|(name, ty)| {
        name == "inputs_embeds"
            && matches!(ty, ValueType::Tensor { dimension_symbols, .. }
                if dimension_symbols.get(1).is_some_and(|s| s == WIDTH_DIM))
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
            let prefill = kind == GraphKind::DecoderPrefill;
            let t = if prefill { d.prefill_chunk } else { 1 };
            let mut inputs = vec![
                with_width_dim(spec("inputs_embeds", Elem::F32, &[1, t, h]), 1, prefill),
                with_width_dim(spec("position_ids", Elem::I32, &[1, t]), 1, prefill),
                with_width_dim(
                    with_capacity_dim(
                        spec("attention_mask", Elem::F32, &[1, 1, t, c + t]),
                        3,
                        MASK_DIM,
                    ),
                    2,
                    prefill,
                ),
            ];
            if kind == GraphKind::DecoderPrefill && d.prefill_conv_index {
                inputs.push(spec(CONV_INDEX, Elem::I32, &[3]));
            }
            let mut outputs = vec![with_width_dim(
                spec("logits", Elem::F32, &[1, t, m.text.vocab_size]),
                1,
                prefill,
            )];
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
                    outputs.push(with_width_dim(
                        spec(format!("present.{i}.{kv_name}"), Elem::F32, &[1, kv, t, hd]),
                        2,
                        prefill,
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
    let (mut named_capacity, mut named_width) = (Vec::new(), Vec::new());
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
            let named = check_one(side, w, ty).map_err(fail)?;
            if let Some(capacity) = named.capacity {
                named_capacity.push((w.name.as_str(), capacity));
            }
            if let Some(width) = named.width {
                named_width.push((w.name.as_str(), width));
            }
        }
        if let Some((extra, _)) = got.iter().find(|(n, _)| !want.iter().any(|w| w.name == *n)) {
            return Err(fail(format!(
                "unexpected {side} `{extra}` (not in the contract for this manifest)"
            )));
        }
    }
    for (named, what, module) in [
        (&named_capacity, "capacity", "capacity"),
        (&named_width, "width", "prefill_width"),
    ] {
        if let (Some(n), Some(f)) = (
            named.iter().find(|(_, n)| *n),
            named.iter().find(|(_, n)| !*n),
        ) {
            return Err(fail(format!(
                "`{}` names its {what} dimension but `{}` fixes it: a decoder graph names \
                 all or none (forge/{module}.py)",
                n.0, f.0
            )));
        }
    }
    Ok(())
}

/// Which named dimensions a checked tensor has (None: the tensor has no such dimension).
struct Named {
    capacity: Option<bool>,
    width: Option<bool>,
}

/// Checks one tensor; for one with a capacity or width dimension, says whether the graph names it.
fn check_one(side: &str, w: &TensorSpec, ty: &ValueType) -> Result<Named, String> {
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
    let mut named = Named {
        capacity: w.capacity_dim.map(|_| false),
        width: w.width_dim.map(|_| false),
    };
    for (axis, sym) in dimension_symbols.iter().enumerate() {
        if sym.is_empty() {
            continue;
        }
        let capacity = matches!(w.capacity_dim, Some((a, name)) if a == axis && sym == name);
        let width = w.width_dim == Some(axis) && sym == WIDTH_DIM;
        if !capacity && !width {
            return Err(format!(
                "{side} `{}` has a symbolic dimension `{sym}`; graphs must have static shapes \
                 (only a decoder graph's capacity dimension may be named: `{CAPACITY_DIM}` on \
                 the KV inputs, `{MASK_DIM}` on the mask; and a prefill graph's width: \
                 `{WIDTH_DIM}`)",
                w.name
            ));
        }
        // any capacity up to the manifest's, any width up to the chunk: compare the rest
        if let (Some(d), Some(&want)) = (dims.get_mut(axis), w.shape.get(axis)) {
            *d = want;
        }
        if capacity {
            named.capacity = Some(true);
        } else {
            named.width = Some(true);
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

#[cfg(test)]
mod tests {
    use super::*;
    use ort::value::{Shape, SymbolicDimensions};

    fn tensor(name: &str, shape: &[i64], symbols: &[&str]) -> (String, ValueType) {
        let ty = ValueType::Tensor {
            ty: TensorElementType::Float32,
            shape: Shape::from(shape.to_vec()),
            dimension_symbols: SymbolicDimensions::new(symbols.iter().map(|s| s.to_string())),
        };
        (name.to_string(), ty)
    }

    /// A prefill graph's width rows: inputs_embeds [1,16,8] in, logits [1,16,32] out.
    fn prefill() -> Signature {
        Signature {
            inputs: vec![with_width_dim(
                spec("inputs_embeds", Elem::F32, &[1, 16, 8]),
                1,
                true,
            )],
            outputs: vec![with_width_dim(
                spec("logits", Elem::F32, &[1, 16, 32]),
                1,
                true,
            )],
        }
    }

    #[test]
    fn a_prefill_graph_names_its_width_everywhere_or_nowhere() {
        let file = Path::new("decoder_prefill.onnx");
        let named_in = tensor("inputs_embeds", &[1, -1, 8], &["", WIDTH_DIM, ""]);
        let named_out = tensor("logits", &[1, -1, 32], &["", WIDTH_DIM, ""]);
        let fixed_in = tensor("inputs_embeds", &[1, 16, 8], &["", "", ""]);
        let fixed_out = tensor("logits", &[1, 16, 32], &["", "", ""]);
        let want = prefill();
        let (named_in, named_out) = (&[named_in], &[named_out]);
        let fixed_in = &[fixed_in];
        assert!(check(file, &want, named_in, named_out).is_ok());
        assert!(check(file, &want, fixed_in, &[fixed_out]).is_ok());
        assert!(width_free(named_in) && !width_free(fixed_in));
        let fixed_out = tensor("logits", &[1, 16, 32], &["", "", ""]);
        let err = check(file, &want, named_in, &[fixed_out])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`inputs_embeds` names its width dimension but `logits` fixes it"),
            "{err}"
        );
        // the width's name on another axis, or another name on the width's axis, is refused
        let wrong_axis = tensor("inputs_embeds", &[1, 16, -1], &["", "", WIDTH_DIM]);
        let wrong_name = tensor("inputs_embeds", &[1, -1, 8], &["", "seq", ""]);
        for bad in [wrong_axis, wrong_name] {
            let err = check(file, &want, &[bad], named_out)
                .unwrap_err()
                .to_string();
            assert!(err.contains("has a symbolic dimension"), "{err}");
        }
        // a step graph (no width dimension) names none
        let step = Signature {
            inputs: vec![spec("inputs_embeds", Elem::F32, &[1, 1, 8])],
            outputs: vec![],
        };
        let named = tensor("inputs_embeds", &[1, -1, 8], &["", WIDTH_DIM, ""]);
        assert!(check(file, &step, &[named], &[]).is_err());
    }
}
