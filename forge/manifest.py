"""The one Python reader of a bundle's manifest.toml: model bundles (ARCHITECTURE.md contract 1,
`autoneural-bundle/1`) and face bundles (`autoneural-face/1`, written by forge.face_bundle).

Standard library only (no torch, no numpy): the torch-free bundle check (forge.check_bundles) and the
reference runtime (forge.runtime) use it with just the runtime venv, the forge's build steps and the
benchmark with theirs. The Rust runtime has its own reader (inference/src/bundle.rs), which checks
the same contract.

The manifest stays the dict TOML gives (tables as dicts, in file order): the forge's writers
(forge.bundle.save_manifest) take the same dict back, so there is one shape to read and write.

- `load(bundle)`: parse only, for tools that update a manifest mid-build (no [files] yet, variants
  still being added);
- `problems(bundle, man)`: every schema problem of a parsed manifest, one message each;
- `read(bundle)`: load + problems, raising `ManifestError` with all of them (what a reader of a
  finished or in-progress bundle wants). The checksums in [files] are forge.check_bundles' job: they
  need the whole bundle read, which a runtime loading a multi-GB model should not pay for.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

FORMAT = "autoneural-bundle/1"
GRAPHS = ("vision", "embed", "decoder_prefill", "decoder_step")

SCHEMA = {
    "": {"format": str, "name": str, "description": str},
    "image": {"size": int, "channels": int, "mean": list, "std": list, "tokens": int},
    "text": {
        "tokenizer": str, "vocab_size": int, "bos_id": int, "eos_id": int, "pad_id": int, "image_token": str,
        "image_token_id": int, "stop_tokens": list, "system_prompt": str, "template": str,
    },
    "decoder": {
        "hidden": int, "layer_types": list, "num_heads": int, "num_kv_heads": int, "head_dim": int,
        "conv_kernel": int, "kv_capacity": int, "prefill_chunk": int, "mask_value": float, "rope_theta": float,
    },
}

FACE_FORMAT = "autoneural-face/1"
FACE_GRAPHS = ("detector", "landmarks", "iris")
FACE_SCHEMA = {
    "": {"format": str, "name": str, "description": str, "source": str},
    "detector": {
        "size": int, "input": str, "input_range": list, "boxes": str, "scores": str, "strides": list,
        "anchor_offset": float, "interpolated_scale_aspect_ratio": float, "keypoints": int, "min_score": float,
        "min_suppression_threshold": float, "score_clip": float,
    },
    "landmarks": {
        "size": int, "input": str, "input_range": list, "landmarks": str, "presence": str, "roi_scale": float,
        "min_presence": float,
    },
    "iris": {"size": int, "input": str, "input_range": list, "contour": str, "iris": str, "roi_scale": float},
}


class ManifestError(ValueError):
    """A manifest.toml that cannot be read or breaks the schema; `problems` lists every finding."""

    def __init__(self, path: Path, problems: list[str]):
        self.path = path
        self.problems = problems
        super().__init__(f"{path}: " + "; ".join(problems))


def load(bundle: Path | str) -> dict:
    """BUNDLE/manifest.toml parsed, unchecked."""
    path = Path(bundle) / "manifest.toml"
    try:
        return tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ManifestError(path, [str(e)]) from e


def read(bundle: Path | str, format: str | None = FORMAT) -> dict:
    """BUNDLE/manifest.toml parsed and checked (`problems`); `format` (None: either kind) is the
    one the caller can use. Raises ManifestError listing every problem."""
    man = load(bundle)
    found = problems(bundle, man)
    if not found and format is not None and man.get("format") != format:
        found = [f"manifest.toml: format {man.get('format')!r} != {format!r}"]
    if found:
        raise ManifestError(Path(bundle) / "manifest.toml", found)
    return man


def problems(bundle: Path | str, man: dict) -> list[str]:
    """Every schema problem of a parsed manifest (its format decides which schema), as
    'manifest.toml: ...' messages; [] when it is fine. Paths in [variants.*] must be files inside
    `bundle`."""
    b = Path(bundle)
    errors: list[str] = []
    if man.get("format") == FACE_FORMAT:
        _face_problems(b, man, errors)
    else:
        _bundle_problems(b, man, errors)
    return errors


def _schema(man: dict, schema: dict, errors: list[str]):
    """Every key of `schema` ({section: {key: type}}, "" = top level) is present with its type;
    yields (section, table) for the sections that exist, for further checks."""
    for section, keys in schema.items():
        table = man if section == "" else man.get(section)
        if not isinstance(table, dict):
            errors.append(f"manifest.toml: missing [{section}]")
            continue
        for k, ty in keys.items():
            if k not in table:
                errors.append(f"manifest.toml: missing {section or 'top-level'} key {k!r}")
            elif not isinstance(table[k], ty) or (ty is int and isinstance(table[k], bool)):
                errors.append(f"manifest.toml: {section}.{k} should be {ty.__name__}")
        yield section, table


def _inside(b: Path, p: str) -> bool:
    return not (p.startswith("/") or ".." in Path(p).parts) and (b / p).is_file()


def _bundle_problems(b: Path, man: dict, errors: list[str]) -> None:
    for _ in _schema(man, SCHEMA, errors):
        pass
    if man.get("format") != FORMAT:
        errors.append(f"manifest.toml: format {man.get('format')!r} != {FORMAT!r}")
    d = man.get("decoder", {})
    if any(t not in ("conv", "full_attention") for t in d.get("layer_types", [])):
        errors.append("manifest.toml: layer_types entries must be conv or full_attention")
    if not isinstance(d.get("prefill_conv_index", False), bool):
        errors.append("manifest.toml: decoder.prefill_conv_index should be true or false")
    for name, v in _variants(man, errors):
        extra = []
        ctx = v.get("qnn_context", {})
        if ctx:
            if not isinstance(ctx.get("htp_arch"), int) or not isinstance(ctx.get("soc_model"), int):
                errors.append(f"manifest.toml: variants.{name}.qnn_context needs htp_arch and soc_model")
            extra = [ctx.get(g) for g in GRAPHS if g in ctx]
        _variant_problems(b, name, v, GRAPHS, extra, errors)


def _face_problems(b: Path, man: dict, errors: list[str]) -> None:
    for section, table in _schema(man, FACE_SCHEMA, errors):
        r = table.get("input_range")
        pair = isinstance(r, list) and len(r) == 2 and all(isinstance(x, float) for x in r)
        if section and not (pair and r[0] < r[1]):
            errors.append(f"manifest.toml: {section}.input_range should be [low, high] floats")
    strides = man.get("detector", {}).get("strides")
    if not (isinstance(strides, list) and strides and all(isinstance(x, int) and x > 0 for x in strides)):
        errors.append("manifest.toml: detector.strides should be positive integers")
    for name, v in _variants(man, errors):
        _variant_problems(b, name, v, FACE_GRAPHS, [], errors)


def _variants(man: dict, errors: list[str]):
    """The [variants.*] tables; fp32 must be one of them."""
    variants = man.get("variants", {})
    if "fp32" not in variants:
        errors.append("manifest.toml: no [variants.fp32]")
    return variants.items()


def _variant_problems(b: Path, name: str, v: dict, graphs, extra_paths: list, errors: list[str]) -> None:
    """A variant's quantization, one file inside the bundle per graph (and `extra_paths`), and its
    optional per-graph SQNR."""
    if not isinstance(v.get("quantization"), str):
        errors.append(f"manifest.toml: variants.{name}.quantization missing")
    for g in graphs:
        if not isinstance(v.get(g), str):
            errors.append(f"manifest.toml: variants.{name}.{g} missing")
    for p in [v.get(g) for g in graphs] + extra_paths:
        if isinstance(p, str) and not _inside(b, p):
            errors.append(f"manifest.toml: variants.{name}: {p} is not a file inside the bundle")
    for k, x in v.get("sqnr_db", {}).items():
        if k not in graphs or not isinstance(x, float):
            errors.append(f"manifest.toml: variants.{name}.sqnr_db.{k} is not a graph SQNR")
        for k, x in v.get("offload", {}).items():
            if k not in FACE_GRAPHS or not isinstance(x, str) or not (x == "full" or x.startswith("partial: ")):
                errors.append(f"manifest.toml: variants.{name}.offload.{k} should be \"full\" or \"partial: OPS\"")
