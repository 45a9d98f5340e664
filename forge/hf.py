"""Hugging Face-format LFM2 checkpoints (config.json + *.safetensors) into the forge decoder.

The forge decoder keeps the HF parameter names, so loading is: read the config, derive the decoder
dimensions exactly as transformers does, strip the `model.` prefix, drop `lm_head.weight` when tied.
Multi-shard checkpoints (model.safetensors.index.json) are supported.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from .config import DecoderConfig, lfm2_intermediate
from .lfm2 import Lfm2Decoder


class CheckpointError(Exception):
    pass


def decoder_config_from_hf(cfg: dict) -> DecoderConfig:
    """An HF `Lfm2Config` dict (config.json) -> DecoderConfig."""
    if cfg.get("model_type") not in (None, "lfm2"):
        raise CheckpointError(f"model_type {cfg.get('model_type')!r} is not lfm2")
    n = cfg["num_hidden_layers"]
    types = cfg.get("layer_types")
    if types is None:
        attn = cfg.get("full_attn_idxs", list(range(n)))
        types = ["full_attention" if i in attn else "conv" for i in range(n)]
    if len(types) != n:
        raise CheckpointError(f"layer_types has {len(types)} entries for {n} layers")
    rope = cfg.get("rope_parameters") or {}
    theta = rope.get("rope_theta", cfg.get("rope_theta", 1_000_000.0))
    if rope.get("rope_type", "default") != "default":
        raise CheckpointError(f"rope_type {rope.get('rope_type')!r} is not supported (only 'default')")
    hidden, heads = cfg["hidden_size"], cfg["num_attention_heads"]
    return DecoderConfig(
        vocab_size=cfg["vocab_size"],
        hidden=hidden,
        intermediate=lfm2_intermediate(
            cfg.get("block_ff_dim", cfg["intermediate_size"]),
            cfg.get("block_multiple_of", 256),
            cfg.get("block_ffn_dim_multiplier", 1.0),
            cfg.get("block_auto_adjust_ff_dim", True),
        ),
        layer_types=tuple(types),
        num_heads=heads,
        num_kv_heads=cfg["num_key_value_heads"],
        head_dim=cfg.get("head_dim") or hidden // heads,
        conv_kernel=cfg.get("conv_L_cache", 3),
        norm_eps=cfg.get("norm_eps", 1e-5),
        rope_theta=float(theta),
        qk_norm=True,
        tie_embeddings=cfg.get("tie_word_embeddings", cfg.get("tie_embedding", True)),
        conv_bias=cfg.get("conv_bias", False),
    )


def read_safetensors(directory: Path) -> dict[str, torch.Tensor]:
    index = directory / "model.safetensors.index.json"
    if index.exists():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    else:
        files = sorted(p.name for p in directory.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{directory}: no *.safetensors files")
    tensors: dict[str, torch.Tensor] = {}
    for f in files:
        tensors.update(load_file(str(directory / f)))
    return tensors


def hf_to_forge_state(tensors: dict[str, torch.Tensor], prefix: str = "model.") -> dict[str, torch.Tensor]:
    """HF Lfm2ForCausalLM names -> forge Lfm2Decoder names (float32)."""
    out = {}
    for k, v in tensors.items():
        if k.startswith(prefix):
            out[k[len(prefix) :]] = v.float()
        elif k == "lm_head.weight":
            out[k] = v.float()
    return out


def decoder_from_tensors(cfg: dict, tensors: dict[str, torch.Tensor], prefix: str = "model.",
                         head: str = "lm_head.weight", where: str = "checkpoint") -> Lfm2Decoder:
    """An HF `Lfm2Config` dict + the checkpoint's tensors (decoder names under `prefix`, the LM head
    as `head`) -> an eval-mode Lfm2Decoder."""
    dcfg = decoder_config_from_hf(cfg)
    state = hf_to_forge_state({k: v for k, v in tensors.items() if k != head}, prefix)
    if head in tensors:
        state["lm_head.weight"] = tensors[head].float()
    if dcfg.tie_embeddings:
        state.pop("lm_head.weight", None)
        state["lm_head.weight"] = state["embed_tokens.weight"]
    decoder = Lfm2Decoder(dcfg)
    try:
        missing, unexpected = decoder.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatches: name the checkpoint, not just the parameter
        raise CheckpointError(f"{where}: {e}") from None
    if missing or unexpected:
        raise CheckpointError(f"{where}: missing {missing[:8]}, unexpected {unexpected[:8]}")
    return decoder.eval()


def _read_config(directory: Path) -> dict:
    try:
        return json.loads((directory / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{directory / 'config.json'}: {e}") from e


def load_lfm2_checkpoint(directory: str | Path) -> Lfm2Decoder:
    """config.json + safetensors (as `save_pretrained` writes them) -> an eval-mode Lfm2Decoder."""
    directory = Path(directory)
    cfg = _read_config(directory)
    decoder_config_from_hf(cfg)  # a config error is named before any weights are read
    return decoder_from_tensors(cfg, read_safetensors(directory), where=str(directory))


# LFM2-VL checkpoints: (decoder prefix, LM head name) in transformers 5 naming, then the older one
VL_LANGUAGE_NAMES = (("model.language_model.", "lm_head.weight"), ("language_model.model.", "language_model.lm_head.weight"))


def load_lfm2_vl_language(directory: str | Path) -> Lfm2Decoder:
    """The language model of an LFM2-VL checkpoint (`Lfm2VlForConditionalGeneration.save_pretrained`:
    config.json with `text_config`, weights `model.language_model.*` + `lm_head`) -> Lfm2Decoder."""
    directory = Path(directory)
    cfg = _read_config(directory)
    if cfg.get("model_type") != "lfm2_vl" or "text_config" not in cfg:
        raise CheckpointError(f"{directory}: model_type {cfg.get('model_type')!r} is not lfm2_vl")
    text = dict(cfg["text_config"])
    text.setdefault("tie_word_embeddings", cfg.get("tie_word_embeddings", True))
    decoder_config_from_hf(text)
    tensors = read_safetensors(directory)
    for prefix, head in VL_LANGUAGE_NAMES:
        if any(k.startswith(prefix) for k in tensors):
            return decoder_from_tensors(text, tensors, prefix, head, str(directory))
    raise CheckpointError(f"{directory}: no language model weights (want names under "
                          f"{' or '.join(p for p, _ in VL_LANGUAGE_NAMES)})")
