"""Random-weight LFM2-VL checkpoints with the real dimensions of published releases, for benchmarks
(outputs are noise): LFM2-VL-450M (LFM2-350M + SigLIP2 NaFlex base) and LFM2(.5)-VL-1.6B (LFM2-1.2B +
SigLIP2 NaFlex so400m, 26 active encoder layers). Sources of the numbers: bench/releases.md.

    .venv-forge/bin/python -m forge random-vl {450m,1.6b} OUT_DIR
    .venv-forge/bin/python -m forge published-fixture --checkpoint OUT_DIR --out RELEASE_DIR --variants q4

The tokenizer is the tiny fixture's (ids < 512 inside vocab 65536), so prompt token counts are those
of a small byte-level BPE, not of the real 65k vocabulary.
"""
import json, resource, sys, time
from pathlib import Path

import torch
from transformers import (AutoTokenizer, Lfm2Config, Lfm2VlConfig, Lfm2VlForConditionalGeneration,
                          Lfm2VlImageProcessor, Lfm2VlProcessor, Siglip2VisionConfig)

FIXTURE = Path(__file__).resolve().parent.parent / "models" / "lfm2-vl-tiny-onnx"
SEED = 1234
LAYER_TYPES = ["conv", "conv", "full_attention", "conv", "conv", "full_attention", "conv", "conv",
               "full_attention", "conv", "full_attention", "conv", "full_attention", "conv", "full_attention", "conv"]

# text: LiquidAI/LFM2-350M (as embedded in LiquidAI/LFM2-VL-450M config.json) and LiquidAI/LFM2-1.2B config.json
TEXT = {
    "450m": dict(hidden_size=1024, intermediate_size=6656, num_attention_heads=16, num_key_value_heads=8),
    "1.6b": dict(hidden_size=2048, intermediate_size=12288, num_attention_heads=32, num_key_value_heads=8),
}
# vision: SigLIP2 NaFlex base-patch16 (LFM2-VL-450M config.json) / so400m shape-optimized patch16 (LFM2-VL-1.6B)
VISION = {
    "450m": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12),
    "1.6b": dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=26, num_attention_heads=16),
}


def main(which: str, out: Path):
    torch.set_num_threads(2)
    t0 = time.time()
    tok = AutoTokenizer.from_pretrained(FIXTURE)
    image_token_id = tok.convert_tokens_to_ids("<image>")
    assert image_token_id == 5, image_token_id
    text = Lfm2Config(
        vocab_size=65536, num_hidden_layers=16, layer_types=LAYER_TYPES, conv_L_cache=3, conv_bias=False,
        block_auto_adjust_ff_dim=True, block_multiple_of=256, block_ffn_dim_multiplier=1.0,
        max_position_embeddings=128000, norm_eps=1e-5, rope_theta=1e6,
        pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        **TEXT[which])
    vision = Siglip2VisionConfig(num_patches=256, patch_size=16, num_channels=3, hidden_act="gelu_pytorch_tanh",
                                 layer_norm_eps=1e-6, attention_dropout=0.0, vision_use_head=False, **VISION[which])
    cfg = Lfm2VlConfig(vision_config=vision.to_dict(), text_config=text.to_dict(), image_token_id=image_token_id,
                       projector_hidden_size=2560, projector_hidden_act="gelu", projector_bias=True,
                       projector_use_layernorm=True, downsample_factor=2, tie_word_embeddings=True)
    torch.manual_seed(SEED)
    model = Lfm2VlForConditionalGeneration(cfg).eval()   # float32, transformers' default init
    n = sum(p.numel() for p in model.parameters())
    parts = {
        "language_model": sum(p.numel() for p in model.model.language_model.parameters()),
        "vision_tower": sum(p.numel() for p in model.model.vision_tower.parameters()),
        "multi_modal_projector": sum(p.numel() for p in model.model.multi_modal_projector.parameters()),
    }
    ff = model.model.language_model.layers[0].feed_forward.w1.out_features
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.bos_token_id = tok.bos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    t1 = time.time()
    model.save_pretrained(out)
    del model
    # the real image-processor defaults; LFM2-VL-450M has use_thumbnail false (its config.json), 1.6B true
    ip = Lfm2VlImageProcessor(use_thumbnail=(which != "450m"))
    chat = (FIXTURE / "chat_template.jinja").read_text()
    proc = Lfm2VlProcessor(image_processor=ip, tokenizer=tok, chat_template=chat)
    proc.save_pretrained(out)
    ip.save_pretrained(out)
    rep = {"which": which, "parameters": n, "parts": parts, "ffn_width": ff, "build_s": round(t1 - t0, 1),
           "save_s": round(time.time() - t1, 1),
           "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}
    (out / "build_report.json").write_text(json.dumps(rep, indent=1) + "\n")
    print(json.dumps(rep, indent=1))


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in TEXT:
        raise SystemExit("usage: python -m forge.random_vl {450m,1.6b} OUT_DIR")
    main(sys.argv[1], Path(sys.argv[2]))
