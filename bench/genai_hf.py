"""Writes the forge's random-weight LFM2 decoder (same config and seed as the benchmark's decoder
graphs, so the same weights) as a Hugging Face LFM2 checkpoint (config.json + model.safetensors),
the input ONNX Runtime GenAI's model builder takes. Run in the forge venv from the repository root.

  python -m bench.genai_hf --config autoneural-1.5b --out DIR [--context 4096]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from bench.export_models import decoder_config
from forge.model import build_model


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--config", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--context", type=int, default=4096)
    p.add_argument("--tokenizer", required=True, help="a tokenizer.json (the builder insists on a tokenizer; ids are fed directly)")
    a = p.parse_args()
    t = time.time()
    cfg = decoder_config(a.config, all_attention=False)
    d = cfg.decoder
    lm = build_model(cfg).language
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    # forge keeps the HF parameter names (forge/hf.py): add the "model." prefix; the head is tied
    state = {f"model.{k}": v.contiguous() for k, v in lm.state_dict().items() if k != "lm_head.weight"}
    if not d.tie_embeddings:
        state["lm_head.weight"] = lm.lm_head.weight.contiguous()
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    hf = {
        "architectures": ["Lfm2ForCausalLM"],
        "model_type": "lfm2",
        "vocab_size": d.vocab_size,
        "hidden_size": d.hidden,
        "intermediate_size": d.intermediate,
        "block_auto_adjust_ff_dim": False,  # the forge's `intermediate` is already the SwiGLU width
        "block_ff_dim": d.intermediate,
        "block_multiple_of": 256,
        "block_ffn_dim_multiplier": 1.0,
        "num_hidden_layers": d.num_layers,
        "num_attention_heads": d.num_heads,
        "num_key_value_heads": d.num_kv_heads,
        "layer_types": list(d.layer_types),
        "conv_L_cache": d.conv_kernel,
        "conv_bias": d.conv_bias,
        "norm_eps": d.norm_eps,
        "rope_theta": d.rope_theta,
        "max_position_embeddings": a.context,
        "tie_word_embeddings": d.tie_embeddings,
        "torch_dtype": "float32",
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 0,
        "use_cache": True,
    }
    (out / "config.json").write_text(json.dumps(hf, indent=1))
    (out / "tokenizer.json").write_bytes(Path(a.tokenizer).read_bytes())
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|startoftext|>", "eos_token": "<|im_end|>",
        "pad_token": "<|pad|>", "model_max_length": a.context}))
    (out / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}))
    print(json.dumps({"params": sum(v.numel() for v in state.values()), "s": round(time.time() - t, 1)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
