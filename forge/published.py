"""LFM2-VL in the layout of the published ONNX releases, plus references made by transformers.

    python -m forge published-fixture --out models/lfm2-vl-tiny-onnx            # tiny random model
    python -m forge published-fixture --out DIR --checkpoint HF_DIR --no-reference   # a real checkpoint

The published releases (LiquidAI/LFM2.5-VL-1.6B-ONNX, onnx-community/LFM2-VL-450M-ONNX) ship three
graphs — onnx/embed_tokens.onnx, onnx/embed_images.onnx, onnx/decoder.onnx (+ .onnx_data) — with
variants by file suffix (_fp16, _q4, _q8) next to the Hugging Face config, tokenizer and processor
files. This module writes that layout from a transformers `Lfm2VlForConditionalGeneration`
checkpoint, and for the tiny random model also the references the Rust runtime is tested against:
processor outputs, rendered prompts, greedy generations and probe scores, all computed by
transformers (the reference implementation), and checks that the exported graphs reproduce them on
ONNX Runtime (the command fails otherwise). models/lfm2-vl-tiny-onnx/README.md documents the graphs
and the image processor step by step.

Graph design (our own; the I/O names follow the published graphs):
- embed_images: SigLIP2 NaFlex encoder + LFM2-VL projector for a batch of padded images of any
  spatial shapes. The position-embedding resize (bilinear, antialias, per image) is computed as a
  separable weight matrix from `spatial_shapes` inside the graph (exactly PyTorch's antialiased
  triangle filter), and the pixel unshuffle + unpadding + concatenation as one Gather over computed
  indices, so no shape is baked in and no loop is needed.
- decoder: inputs_embeds + attention_mask + caches -> logits + caches; positions are
  past_len + arange(seq) with past_len = attention_mask.shape[1] - seq (no position_ids input, as in
  the published graphs' documented usage); conv caches are [batch, hidden, conv_L_cache] (the last
  L_cache gated inputs); KV caches grow (present = past ++ new).
"""

from __future__ import annotations

import gc
import hashlib
import json
import math
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

SEED = 1234
OPSET = 17
REPO = Path(__file__).resolve().parent.parent

# LFM2-VL's chat template (chat_template.jinja of the published LFM2-VL repositories)
CHAT_TEMPLATE = (
    "{{bos_token}}{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n'}}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] %}{% if content['type'] == 'image' %}{{ '<image>' }}"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}{% endif %}"
    "{{'<|im_end|>\n'}}{% endfor %}{% if add_generation_prompt %}{{'<|im_start|>assistant\n' }}{% endif %}"
)

SPECIAL_TOKENS = [
    "<|pad|>", "<|startoftext|>", "<|endoftext|>", "<|im_start|>", "<|im_end|>",
    "<image>", "<|image_start|>", "<|image_end|>", "<|img_thumbnail|>",
] + [f"<|img_row_{r}_col_{c}|>" for r in range(1, 11) for c in range(1, 11)]

VOCAB = 512
SYSTEM = "You are a careful driver-monitoring assistant. Answer briefly."
QUESTION = "Is the driver looking at the road?"
PROBES = [
    "Are the driver's eyes closed? Answer yes or no.",
    "Is the driver looking at the road? Answer yes or no.",
    "Is the driver using a phone? Answer yes or no.",
    "Is the driver yawning? Answer yes or no.",
]
ANSWERS = ["yes", "no"]
GEN_QUESTIONS = ["Describe the image.", QUESTION, "What is in front of the camera?"]
MAX_NEW = 16
CORPUS_BUNDLES = ("autoneural-cabin", "tiny-random")


# ----------------------------------------------------------------------------------------------
# the tiny random checkpoint


def corpus() -> list[str]:
    out = [SYSTEM, QUESTION, *PROBES, *GEN_QUESTIONS, "yes", "no", "Yes.", "No."]
    # the probe sets of these bundles only: a bundle made from this checkpoint (convert-vl's
    # lfm2-vl-tiny-bundle) must not change the tokenizer it is made with
    for toml in [REPO / "models" / b / "probes.toml" for b in CORPUS_BUNDLES]:
        for line in toml.read_text().splitlines():
            if line.startswith(("question", "answers")):
                out.append(line.split("=", 1)[1].strip().strip('"'))
    try:
        from .images import describe, labels_for

        out += [describe(labels_for(s)) for s in range(200)]
    except Exception:  # the descriptions only enrich the corpus
        pass
    return out


def build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus(), trainer=trainer)
    for i, s in enumerate(SPECIAL_TOKENS):
        assert tok.token_to_id(s) == i, (s, tok.token_to_id(s))
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|startoftext|>", eos_token="<|im_end|>", pad_token="<|pad|>",
        extra_special_tokens={"image_token": "<image>"}, model_max_length=4096, padding_side="left",
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny(hf_dir: Path):
    """Random Lfm2VlForConditionalGeneration + processor saved with save_pretrained into hf_dir."""
    import torch
    from transformers import (Lfm2Config, Lfm2VlConfig, Lfm2VlForConditionalGeneration,
                              Lfm2VlImageProcessor, Lfm2VlProcessor, Siglip2VisionConfig)

    tok = build_tokenizer()
    text = Lfm2Config(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, block_auto_adjust_ff_dim=False,
        num_hidden_layers=6, num_attention_heads=4, num_key_value_heads=2,
        layer_types=["conv", "conv", "full_attention", "conv", "full_attention", "conv"],
        conv_L_cache=3, max_position_embeddings=4096, norm_eps=1e-5,
        pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
    )
    vision = Siglip2VisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                 num_attention_heads=2, num_patches=256, patch_size=16,
                                 hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6, vision_use_head=False)
    cfg = Lfm2VlConfig(vision_config=vision.to_dict(), text_config=text.to_dict(),
                       image_token_id=tok.convert_tokens_to_ids("<image>"), projector_hidden_size=64,
                       downsample_factor=2, tie_word_embeddings=True)
    torch.manual_seed(SEED)
    model = Lfm2VlForConditionalGeneration(cfg).eval()
    # the default init leaves norms at 1 and biases at 0; perturb every parameter a little so the
    # references exercise all of them (random scales keep the logits well separated)
    g = torch.Generator().manual_seed(SEED + 1)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if p.dim() == 1:
                p.add_(0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[-1]))
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.bos_token_id = tok.bos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(hf_dir)
    proc = Lfm2VlProcessor(image_processor=Lfm2VlImageProcessor(), tokenizer=tok, chat_template=CHAT_TEMPLATE)
    proc.save_pretrained(hf_dir)
    # the published repositories also carry the image processor on its own (preprocessor_config.json)
    proc.image_processor.save_pretrained(hf_dir)
    return hf_dir


# ----------------------------------------------------------------------------------------------
# graphs


def aa_weights(torch, idx, size, grid: int):
    """PyTorch's antialiased bilinear weights (F.interpolate(mode="bilinear", antialias=True,
    align_corners=False)) from a `grid`-long axis to `size` outputs, for output indices `idx`:
    [..] int, [..] float -> [.., grid]. scale = grid/size; support = max(scale, 1);
    w_j = max(0, 1 - |j + 0.5 - (idx + 0.5) * scale| / support), normalised to sum 1."""
    scale = grid / size
    center = (idx.to(torch.float32) + 0.5) * scale
    support = torch.clamp(scale, min=1.0)
    j = torch.arange(grid, dtype=torch.float32) + 0.5
    w = torch.clamp(1.0 - torch.abs(j - center.unsqueeze(-1)) / support.unsqueeze(-1), min=0.0)
    return w / w.sum(-1, keepdim=True)


def embed_images_module(model):
    import torch
    from torch import nn

    class EmbedImages(nn.Module):
        def __init__(self, m):
            super().__init__()
            vt = getattr(m.model.vision_tower, "vision_model", m.model.vision_tower)
            self.patch = vt.embeddings.patch_embedding
            self.grid = vt.embeddings.position_embedding_size
            self.pos = vt.embeddings.position_embedding
            self.layers = vt.encoder.layers
            self.post = vt.post_layernorm
            self.proj = m.model.multi_modal_projector
            self.factor = m.config.downsample_factor

        def forward(self, pixel_values, pixel_attention_mask, spatial_shapes):
            b, n, _ = pixel_values.shape
            x = self.patch(pixel_values)
            h = spatial_shapes[:, 0:1]
            w = spatial_shapes[:, 1:2]
            k = torch.arange(n).unsqueeze(0)                       # [1, n]
            valid = k < h * w                                      # [b, n]; padding uses position 0
            row = torch.where(valid, torch.div(k, w, rounding_mode="floor"), torch.zeros_like(k))
            col = torch.where(valid, k - torch.div(k, w, rounding_mode="floor") * w, torch.zeros_like(k))
            wh = aa_weights(torch, row, h.to(torch.float32), self.grid)    # [b, n, G]
            ww = aa_weights(torch, col, w.to(torch.float32), self.grid)
            wts = (wh.unsqueeze(-1) * ww.unsqueeze(-2)).reshape(b, n, self.grid * self.grid)
            x = x + torch.matmul(wts, self.pos.weight)
            mask = (1.0 - pixel_attention_mask.to(torch.float32)) * torch.finfo(torch.float32).min
            mask = mask[:, None, None, :]
            for layer in self.layers:
                x = layer(x, mask)
                x = x[0] if isinstance(x, tuple) else x
            x = self.post(x)
            # pixel unshuffle of each image's valid h x w grid, concatenated over the images
            f = self.factor
            hp = torch.div(spatial_shapes[:, 0], f, rounding_mode="floor")
            wp = torch.div(spatial_shapes[:, 1], f, rounding_mode="floor")
            counts = hp * wp
            ends = torch.cumsum(counts, 0)
            t = torch.arange(ends[-1])                             # [T]
            img = (t.unsqueeze(1) >= ends.unsqueeze(0)).to(torch.int64).sum(1)
            local = t - (ends - counts)[img]
            wpi = wp[img]
            a = torch.div(local, wpi, rounding_mode="floor")
            c = local - a * wpi
            wi = spatial_shapes[:, 1][img]
            base = img * n
            idx = [base + (f * a + m) * wi + (f * c + kk) for m in range(f) for kk in range(f)]
            idx = torch.stack(idx, 1)                              # [T, f*f]
            feats = x.reshape(b * n, -1)[idx].reshape(idx.shape[0], -1)
            p = self.proj
            if p.layer_norm is not None:
                feats = p.layer_norm(feats)
            return p.linear_2(p.act(p.linear_1(feats)))

    return EmbedImages(model).eval()


def decoder_module(model):
    import torch
    from torch import nn
    from transformers.models.lfm2.modeling_lfm2 import apply_rotary_pos_emb

    class Decoder(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.lm = m.model.language_model
            self.head = m.lm_head
            self.types = list(m.config.text_config.layer_types)
            tc = m.config.text_config
            self.heads = tc.num_attention_heads
            self.kv = tc.num_key_value_heads
            self.hd = getattr(tc, "head_dim", None) or tc.hidden_size // tc.num_attention_heads
            self.L = tc.conv_L_cache

        def forward(self, inputs_embeds, attention_mask, *past):
            b, s, hid = inputs_embeds.shape
            past_len = attention_mask.shape[1] - s
            pos = (torch.arange(s) + past_len).unsqueeze(0).expand(b, s)
            cos, sin = self.lm.rotary_emb(inputs_embeds, pos)
            total = attention_mask.shape[1]
            keep = (torch.arange(total).unsqueeze(0) <= pos[0].unsqueeze(1)).unsqueeze(0).unsqueeze(0)
            keep = keep & (attention_mask[:, None, None, :] != 0)
            mask = torch.where(keep, torch.zeros((), dtype=torch.float32),
                               torch.full((), torch.finfo(torch.float32).min))
            h = inputs_embeds
            presents = []
            pi = 0
            for layer, kind in zip(self.lm.layers, self.types):
                x = layer.operator_norm(h)
                if kind == "conv":
                    cv = layer.conv
                    bcx = cv.in_proj(x).transpose(-1, -2)
                    bg, cg, xx = bcx.chunk(3, dim=-2)
                    full = torch.cat([past[pi], bg * xx], -1)          # [b, H, L + s]
                    pi += 1
                    y = torch.nn.functional.conv1d(full, cv.conv.weight, cv.conv.bias, groups=hid)[..., 1:]
                    presents.append(full[..., -self.L:])
                    y = cv.out_proj((cg * y).transpose(-1, -2))
                else:
                    at = layer.self_attn
                    q = at.q_layernorm(at.q_proj(x).view(b, s, self.heads, self.hd)).transpose(1, 2)
                    k = at.k_layernorm(at.k_proj(x).view(b, s, self.kv, self.hd)).transpose(1, 2)
                    v = at.v_proj(x).view(b, s, self.kv, self.hd).transpose(1, 2)
                    q, k = apply_rotary_pos_emb(q, k, cos, sin)
                    k = torch.cat([past[pi], k], 2)
                    v = torch.cat([past[pi + 1], v], 2)
                    pi += 2
                    presents += [k, v]
                    rep = self.heads // self.kv
                    kr = k.repeat_interleave(rep, dim=1)
                    vr = v.repeat_interleave(rep, dim=1)
                    sc = torch.matmul(q, kr.transpose(2, 3)) * at.scaling + mask
                    o = torch.matmul(torch.softmax(sc, -1), vr)
                    y = at.out_proj(o.transpose(1, 2).reshape(b, s, self.heads * self.hd))
                h = h + y
                h = h + layer.feed_forward(layer.ffn_norm(h))
            logits = self.head(self.lm.embedding_norm(h))
            return (logits, *presents)

    return Decoder(model).eval()


def decoder_io(cfg):
    tc = cfg.text_config
    hd = getattr(tc, "head_dim", None) or tc.hidden_size // tc.num_attention_heads
    ins, outs = [], []
    for i, kind in enumerate(tc.layer_types):
        if kind == "conv":
            ins.append((f"past_conv.{i}", [tc.hidden_size, tc.conv_L_cache]))
            outs.append(f"present_conv.{i}")
        else:
            ins += [(f"past_key_values.{i}.key", [tc.num_key_value_heads, 0, hd]),
                    (f"past_key_values.{i}.value", [tc.num_key_value_heads, 0, hd])]
            outs += [f"present.{i}.key", f"present.{i}.value"]
    return ins, outs


def _export(torch, mod, args, path, inputs, outputs, axes):
    torch.onnx.export(mod, args, str(path), input_names=inputs, output_names=outputs,
                      dynamic_axes=axes, opset_version=OPSET, do_constant_folding=True, dynamo=False)


def _save(model_proto, path: Path, external: bool):
    import onnx

    for ext in (path, path.with_name(path.name + "_data")):
        if ext.exists():
            ext.unlink()
    if external:
        onnx.save(model_proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                  location=path.name + "_data", size_threshold=0)
    else:
        onnx.save(model_proto, str(path))


def _save_streaming(model_proto, src_dir: Path, path: Path) -> None:
    """Save `model_proto`, loaded with load_external_data=False from a graph that torch's exporter wrote
    with external data (graphs over 2 GB: one file per tensor under src_dir), with all tensor data in
    one `<graph>.onnx_data` (the published naming). Tensors are copied one at a time and each source file
    is deleted once copied, so neither the whole graph in memory nor a second copy on disk is needed."""
    import onnx

    data = path.with_name(path.name + "_data")
    for f in (path, data):
        if f.exists():
            f.unlink()
    offset = 0
    with open(data, "wb") as out:
        for t in model_proto.graph.initializer:
            if t.data_location == onnx.TensorProto.EXTERNAL:
                info = {e.key: e.value for e in t.external_data}
                src = src_dir / info["location"]
                with open(src, "rb") as f:
                    f.seek(int(info.get("offset", 0)))
                    buf = f.read(int(info["length"])) if "length" in info else f.read()
                if "offset" not in info:   # a file of its own: no longer needed
                    src.unlink()
            elif t.HasField("raw_data"):
                buf = t.raw_data
                t.ClearField("raw_data")
            else:
                continue  # typed fields (small constants) stay inline
            pad = (-offset) % 64
            out.write(b"\0" * pad)
            offset += pad
            out.write(buf)
            del t.external_data[:]
            t.data_location = onnx.TensorProto.EXTERNAL
            for k, v in (("location", data.name), ("offset", str(offset)), ("length", str(len(buf)))):
                e = t.external_data.add()
                e.key, e.value = k, v
            offset += len(buf)
            del buf
    onnx.save(model_proto, str(path))


def export_graphs(model, onnx_dir: Path) -> dict:
    """fp32 embed_tokens / embed_images / decoder (+ decoder.onnx_data) from a transformers model."""
    import onnx
    import torch

    onnx_dir.mkdir(parents=True, exist_ok=True)
    cfg = model.config
    tc = cfg.text_config
    hid = tc.hidden_size
    model.config.vision_config._attn_implementation = "eager"
    model.model.vision_tower.config._attn_implementation = "eager"
    rep = {}
    with torch.no_grad(), tempfile.TemporaryDirectory() as td:
        td = Path(td)
        emb = model.model.language_model.embed_tokens
        _export(torch, emb, (torch.tensor([[1, 2, 3]]),), td / "e.onnx", ["input_ids"], ["inputs_embeds"],
                {"input_ids": {0: "batch_size", 1: "sequence_length"},
                 "inputs_embeds": {0: "batch_size", 1: "sequence_length"}})
        _save(onnx.load(str(td / "e.onnx")), onnx_dir / "embed_tokens.onnx", external=False)

        vi = embed_images_module(model)
        pd = 3 * cfg.vision_config.patch_size ** 2
        n = 40
        pv = torch.randn(2, n, pd)
        shapes = torch.tensor([[4, 6], [6, 6]])
        pm = (torch.arange(n)[None] < (shapes[:, 0] * shapes[:, 1])[:, None]).to(torch.int64)
        _export(torch, vi, (pv, pm, shapes), td / "v.onnx", ["pixel_values", "pixel_attention_mask", "spatial_shapes"],
                ["image_features"],
                {"pixel_values": {0: "num_images", 1: "num_patches"},
                 "pixel_attention_mask": {0: "num_images", 1: "num_patches"},
                 "spatial_shapes": {0: "num_images"}, "image_features": {0: "num_image_tokens"}})
        _save(onnx.load(str(td / "v.onnx")), onnx_dir / "embed_images.onnx", external=False)

        dec = decoder_module(model)
        ins, outs = decoder_io(cfg)
        s, p = 3, 2
        args = [torch.randn(1, s, hid), torch.ones(1, p + s, dtype=torch.int64)]
        axes = {"inputs_embeds": {0: "batch_size", 1: "sequence_length"},
                "attention_mask": {0: "batch_size", 1: "total_sequence_length"},
                "logits": {0: "batch_size", 1: "sequence_length"}}
        for name, shp in ins:
            if "conv" in name:
                args.append(torch.randn(1, *shp))
                axes[name] = {0: "batch_size"}
            else:
                args.append(torch.randn(1, shp[0], p, shp[2]))
                axes[name] = {0: "batch_size", 2: "past_sequence_length"}
        for name in outs:
            axes[name] = {0: "batch_size"} if "conv" in name else {0: "batch_size", 2: "total_sequence_length"}
        _export(torch, dec, tuple(args), td / "d.onnx", ["inputs_embeds", "attention_mask"] + [x for x, _ in ins],
                ["logits"] + outs, axes)
        # over 2 GB torch writes the weights to external files: stream them (real-size checkpoints)
        dm = onnx.load(str(td / "d.onnx"), load_external_data=False)
        big = any(t.data_location == onnx.TensorProto.EXTERNAL for t in dm.graph.initializer)
        if not big:
            dm = onnx.load(str(td / "d.onnx"))
        for o in dm.graph.output:  # the exporter names the conv cache's length symbolically; it is L_cache
            if o.name.startswith("present_conv."):
                o.type.tensor_type.shape.dim[2].Clear()
                o.type.tensor_type.shape.dim[2].dim_value = tc.conv_L_cache
        if big:
            _save_streaming(dm, td, onnx_dir / "decoder.onnx")
        else:
            _save(dm, onnx_dir / "decoder.onnx", external=True)
        del dm
    for f in sorted(onnx_dir.iterdir()):
        rep[f.name] = f.stat().st_size
    return rep


def quantize_variants(onnx_dir: Path, variants: list[str]) -> dict:
    """_q4 / _q8: MatMulNBits (block 32, symmetric) for decoder and embed_images (the decoder's
    lm_head stays float, as in the published export; no embed_tokens_q*: the float one serves, as
    published). _fp16: all three graphs converted, float16 I/O."""
    import logging

    import onnx

    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.WARNING)
    from onnxruntime.quantization.matmul_nbits_quantizer import (DefaultWeightOnlyQuantConfig,
                                                                 MatMulNBitsQuantizer)

    rep = {}
    for v in variants:
        for g in ("embed_images", "decoder") if v in ("q4", "q8") else ("embed_tokens", "embed_images", "decoder"):
            src = onnx.load(str(onnx_dir / f"{g}.onnx"))
            if v in ("q4", "q8"):
                bits = int(v[1])
                exclude = []
                if g == "decoder":
                    exclude = [nd.name for nd in src.graph.node if "logits" in nd.output]
                cfg = DefaultWeightOnlyQuantConfig(block_size=32, is_symmetric=True, bits=bits)
                q = MatMulNBitsQuantizer(src, bits=bits, block_size=32, is_symmetric=True,
                                         nodes_to_exclude=exclude, algo_config=cfg)
                q.process()
                out = q.model.model
            else:
                from onnxruntime.transformers.float16 import convert_float_to_float16

                out = convert_float_to_float16(src, keep_io_types=False, disable_shape_infer=False)
            _save(out, onnx_dir / f"{g}_{v}.onnx", external=(g == "decoder"))
            rep[f"{g}_{v}.onnx"] = (onnx_dir / f"{g}_{v}.onnx").stat().st_size
    return rep


def copy_hf_files(hf_dir: Path, out: Path) -> list[str]:
    names = ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
             "chat_template.jinja", "special_tokens_map.json", "preprocessor_config.json", "processor_config.json"]
    done = []
    for nm in names:
        if (hf_dir / nm).exists():
            shutil.copy(hf_dir / nm, out / nm)
            done.append(nm)
    return done


# ----------------------------------------------------------------------------------------------
# ONNX Runtime reference loop


class OrtLfm2Vl:
    def __init__(self, onnx_dir: Path, suffix: str = ""):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        def mk(g):
            # the quantized variants have no embed_tokens of their own (as published): use the float one
            p = onnx_dir / f"{g}{suffix}.onnx"
            p = p if p.exists() else onnx_dir / f"{g}.onnx"
            return ort.InferenceSession(str(p), so, providers=["CPUExecutionProvider"])

        self.tok = mk("embed_tokens")
        self.img = mk("embed_images")
        self.dec = mk("decoder")
        self.f16 = "float16" in self.dec.get_inputs()[0].type

    def image_features(self, pixel_values, pixel_attention_mask, spatial_shapes):
        pv = pixel_values.astype(np.float16 if self.f16 else np.float32)
        return self.img.run(None, {"pixel_values": pv, "pixel_attention_mask": pixel_attention_mask.astype(np.int64),
                                   "spatial_shapes": spatial_shapes.astype(np.int64)})[0].astype(np.float32)

    def embeds(self, input_ids, image_token_id, feats=None):
        e = self.tok.run(None, {"input_ids": np.asarray(input_ids, np.int64)[None]})[0].astype(np.float32)
        if feats is not None:
            pos = np.nonzero(np.asarray(input_ids) == image_token_id)[0]
            assert len(pos) == len(feats), (len(pos), len(feats))
            e[0, pos] = feats
        return e

    def init_cache(self):
        cache = {}
        dt = np.float16 if self.f16 else np.float32
        for i in self.dec.get_inputs()[2:]:
            shape = [d if isinstance(d, int) else (0 if "sequence" in d else 1) for d in i.shape]
            cache[i.name] = np.zeros(shape, dt)
        return cache

    def step(self, cache, embeds, total):
        dt = np.float16 if self.f16 else np.float32
        feed = {"inputs_embeds": embeds.astype(dt), "attention_mask": np.ones((1, total), np.int64), **cache}
        outs = self.dec.run(None, feed)
        names = [o.name for o in self.dec.get_outputs()]
        for nm, v in zip(names[1:], outs[1:]):
            cache[nm.replace("present_conv", "past_conv").replace("present.", "past_key_values.")] = v
        return outs[0].astype(np.float32)

    def generate(self, input_ids, image_token_id, feats, max_new, eos):
        cache = self.init_cache()
        e = self.embeds(input_ids, image_token_id, feats)
        total = e.shape[1]
        logits = self.step(cache, e, total)
        steps, toks = [logits[0, -1]], []
        prefill = logits[0]
        while True:
            t = int(np.argmax(steps[-1]))
            toks.append(t)
            if t == eos or len(toks) == max_new:
                break
            total += 1
            steps.append(self.step(cache, self.embeds([t], image_token_id), total)[0, -1])
        return toks, np.stack(steps), prefill


# ----------------------------------------------------------------------------------------------
# references


def make_images(img_dir: Path) -> dict[str, Path]:
    from PIL import Image

    photos = REPO / "face" / "tests" / "data" / "photos"
    img_dir.mkdir(parents=True, exist_ok=True)
    out = {}

    def put(name, im):
        # 64 colours (median cut, no dither) keep the PNGs small; still photo content for the resizer
        p = img_dir / f"{name}.png"
        im = im.convert("RGB").quantize(colors=64, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        im.convert("RGB").save(p, optimize=True)
        out[name] = p

    put("small_64x48", Image.open(photos / "coffee.png").resize((64, 48), Image.Resampling.LANCZOS))
    put("chelsea_451x300", Image.open(photos / "chelsea.png"))
    put("astronaut_512x512", Image.open(photos / "astronaut.png"))
    put("rocket_427x640", Image.open(photos / "rocket.png").transpose(Image.Transpose.ROTATE_90))
    # 1280x720: a 640x360 crop upscaled 2x (nearest) so the PNG stays small; still tiled (2x1 + thumbnail)
    big = Image.open(photos / "coffee.png").crop((0, 20, 600, 358)).resize((640, 360), Image.Resampling.BICUBIC)
    big = big.resize((1280, 720), Image.Resampling.NEAREST)
    put("large_1280x720", big)
    return out


def _sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def processor_case(proc, img, split: bool, prompt: str, ref_dir: Path, tag: str, store_u8: bool) -> tuple[dict, dict]:
    import torch

    enc = proc(images=[img], text=prompt, return_tensors="pt", do_image_splitting=split)
    pv = enc["pixel_values"].numpy()
    pm = enc["pixel_attention_mask"].numpy()
    ss = enc["spatial_shapes"].numpy()
    ids = enc["input_ids"][0].tolist()
    valid = pm.sum(1)
    # every valid patch row, summed over its 768 values, and 8 evenly spaced full rows per image
    row_sums = [pv[i, : valid[i]].astype(np.float64).sum(1).tolist() for i in range(len(pv))]
    sample_idx = [sorted(set(np.linspace(0, valid[i] - 1, 8).round().astype(int).tolist())) for i in range(len(pv))]
    samples = np.concatenate([pv[i, sample_idx[i]] for i in range(len(pv))])
    np.save(ref_dir / f"{tag}.pixel_rows.npy", samples.astype(np.float32))
    case = {
        "do_image_splitting": split,
        "input_ids": ids,
        "num_image_tokens": int(sum(1 for t in ids if t == proc.image_token_id)),
        "pixel_values_shape": list(pv.shape),
        "pixel_attention_mask_sums": valid.tolist(),
        "spatial_shapes": ss.tolist(),
        "pixel_row_sums": row_sums,
        "pixel_rows_file": f"reference/{tag}.pixel_rows.npy",
        "pixel_rows_index": sample_idx,
        "pixel_values_sha256": _sha(pv.astype(np.float32)),
        "pixel_values_valid_sum": float(sum(pv[i, : valid[i]].astype(np.float64).sum() for i in range(len(pv)))),
    }
    if store_u8:
        # the resized uint8 image(s) before normalisation: pixel = (u8 - 127.5) / 127.5 exactly
        u8 = []
        for i in range(len(pv)):
            h, w = ss[i]
            p = pv[i, : h * w].reshape(h, w, 16, 16, 3).transpose(0, 2, 1, 3, 4).reshape(h * 16, w * 16, 3)
            q = np.rint(p.astype(np.float64) * 127.5 + 127.5)
            assert np.all(np.abs(q - (p.astype(np.float64) * 127.5 + 127.5)) < 1e-3)
            back = ((q.astype(np.float32) - np.float32(127.5)) / np.float32(127.5)).astype(np.float32)
            assert np.array_equal(back, p), "pixel_values are not (u8 - 127.5) / 127.5"
            u8.append(q.astype(np.uint8))
        np.savez_compressed(ref_dir / f"{tag}.resized_u8.npz", *u8)
        case["resized_u8_file"] = f"reference/{tag}.resized_u8.npz"
    return case, {k: v for k, v in enc.items()}


def logprob_answers(torch, model, enc, answer_ids: list[list[int]]) -> list[float]:
    out = []
    for ans in answer_ids:
        ids = torch.cat([enc["input_ids"], torch.tensor([ans])], 1)
        kw = {k: v for k, v in enc.items() if k not in ("input_ids", "attention_mask")}
        with torch.no_grad():
            lg = model(input_ids=ids, attention_mask=torch.ones_like(ids), **kw).logits[0].float()
        lp = torch.log_softmax(lg, -1)
        n = enc["input_ids"].shape[1]
        out.append(float(sum(lp[n - 1 + j, t] for j, t in enumerate(ans))))
    return out


def write_references(hf_dir: Path, out: Path, tol_logits: float = 1e-4, tol_image: float = 1e-4) -> dict:
    import torch
    from PIL import Image
    from transformers import AutoProcessor, Lfm2VlForConditionalGeneration

    proc = AutoProcessor.from_pretrained(out)   # the fixture's own files must load
    model = Lfm2VlForConditionalGeneration.from_pretrained(hf_dir).eval()
    tok = proc.tokenizer
    ref_dir = out / "reference"
    if ref_dir.exists():
        shutil.rmtree(ref_dir)
    ref_dir.mkdir()
    images = make_images(out / "images")
    ort_fp32 = OrtLfm2Vl(out / "onnx")
    ort_var = {v: OrtLfm2Vl(out / "onnx", f"_{v}") for v in ("q4", "q8", "fp16")
               if (out / "onnx" / f"decoder_{v}.onnx").exists()}
    conv_sys = [{"role": "system", "content": SYSTEM},
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}]
    conv_user = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}]
    prompt_sys = proc.apply_chat_template(conv_sys, add_generation_prompt=True, tokenize=False)
    prompt_user = proc.apply_chat_template(conv_user, add_generation_prompt=True, tokenize=False)
    ref = {
        "what": "references computed by transformers 5.23 (the reference implementation) for the tiny random "
                "LFM2-VL in this directory; see README.md",
        "special_tokens": {s: tok.convert_tokens_to_ids(s) for s in SPECIAL_TOKENS[:9]},
        "image_token_id": proc.image_token_id,
        "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id,
        "prompts": {
            "system_user": {"messages": conv_sys, "rendered": prompt_sys,
                            "input_ids_unexpanded": tok(prompt_sys, add_special_tokens=False)["input_ids"]},
            "user_only": {"messages": conv_user, "rendered": prompt_user,
                          "input_ids_unexpanded": tok(prompt_user, add_special_tokens=False)["input_ids"]},
        },
        "tokenizer_cases": {s: tok(s, add_special_tokens=False)["input_ids"]
                            for s in [QUESTION, " yes", "yes", "no", "Hello world! 123 élan"]},
        "images": {}, "image_features": [], "generations": [], "probes": [],
    }
    max_img_err, max_logit_err = 0.0, 0.0
    torch.set_num_threads(1)
    for name, path in images.items():
        img = Image.open(path).convert("RGB")
        entry = {"file": f"images/{path.name}", "size_wh": list(img.size), "cases": {}}
        for split in (False, True):
            tag = f"{name}.{'tiles' if split else 'single'}"
            case, enc = processor_case(proc, img, split, prompt_sys, ref_dir, tag, store_u8=name == "small_64x48")
            single = entry["cases"].get("single")
            if split and case["input_ids"] == single["input_ids"] and case["pixel_values_sha256"] == single["pixel_values_sha256"]:
                # the default (tiling on) did not tile this image: same outputs, files not repeated
                (ref_dir / f"{tag}.pixel_rows.npy").unlink()
                entry["cases"]["tiles"] = {"same_as": "single", "do_image_splitting": True}
                continue
            args = (enc["pixel_values"].numpy(), enc["pixel_attention_mask"].numpy(), enc["spatial_shapes"].numpy())
            with torch.no_grad():
                hf = model.model.get_image_features(pixel_values=enc["pixel_values"], spatial_shapes=enc["spatial_shapes"],
                                                    pixel_attention_mask=enc["pixel_attention_mask"]).pooler_output
            hf = torch.cat(list(hf)).numpy()
            ox = ort_fp32.image_features(*args)
            err = float(np.abs(hf - ox).max()) if hf.shape == ox.shape else float("inf")
            case["image_features_shape"] = list(hf.shape)
            case["image_features_file"] = f"reference/{tag}.image_features.npy"
            case["ort_max_abs_err"] = {"fp32": err}
            for v, o in ort_var.items():
                case["ort_max_abs_err"][v] = float(np.abs(hf - o.image_features(*args)).max())
            np.save(ref_dir / f"{tag}.image_features.npy", hf.astype(np.float32))
            max_img_err = max(max_img_err, err)
            entry["cases"]["tiles" if split else "single"] = case
            print(f"{tag}: spatial {case['spatial_shapes']} tokens {case['num_image_tokens']} "
                  f"embed_images |d| {case['ort_max_abs_err']}", flush=True)
        ref["images"][name] = entry

    # embed_images on synthetic batches of mixed spatial shapes (down- and up-sampled position grids)
    rng = np.random.default_rng(SEED)
    cfg = model.config
    for shapes in ([[2, 2]], [[6, 10], [16, 16], [10, 4]], [[32, 32]], [[14, 20], [20, 14], [8, 34]]):
        n = max(h * w for h, w in shapes) + 3
        pv = rng.standard_normal((len(shapes), n, 3 * cfg.vision_config.patch_size ** 2)).astype(np.float32)
        ss = np.array(shapes, np.int64)
        pm = (np.arange(n)[None] < (ss[:, 0] * ss[:, 1])[:, None]).astype(np.int64)
        with torch.no_grad():
            hf = model.model.get_image_features(pixel_values=torch.from_numpy(pv), spatial_shapes=torch.from_numpy(ss),
                                                pixel_attention_mask=torch.from_numpy(pm)).pooler_output
        hf = torch.cat(list(hf)).numpy()
        ox = ort_fp32.image_features(pv, pm, ss)
        err = float(np.abs(hf - ox).max())
        max_img_err = max(max_img_err, err)
        ref["image_features"].append({"spatial_shapes": shapes, "num_patches": n, "tokens": int(hf.shape[0]),
                                      "ort_fp32_max_abs_err": err})
        print(f"synthetic {shapes}: embed_images |d| {err:.2e}", flush=True)

    # greedy generation: transformers generate vs the ONNX loop
    eos = tok.eos_token_id
    gens = [("chelsea_451x300", GEN_QUESTIONS[0]), ("large_1280x720", GEN_QUESTIONS[1]), ("small_64x48", GEN_QUESTIONS[2])]
    for name, q in gens:
        img = Image.open(images[name]).convert("RGB")
        conv = [{"role": "system", "content": SYSTEM},
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q}]}]
        prompt = proc.apply_chat_template(conv, add_generation_prompt=True, tokenize=False)
        first = None
        for split in (False, True):
            enc = proc(images=[img], text=prompt, return_tensors="pt", do_image_splitting=split)
            if first is not None and torch.equal(enc["input_ids"], first):
                continue  # the default mode did not tile this image: the same generation
            first = enc["input_ids"]
            with torch.no_grad():
                g = model.generate(**enc, do_sample=False, max_new_tokens=MAX_NEW, output_logits=True,
                                   return_dict_in_generate=True)
            n = enc["input_ids"].shape[1]
            hf_toks = g.sequences[0, n:].tolist()
            hf_logits = torch.stack(g.logits, 1)[0].float().numpy()
            ids = enc["input_ids"][0].tolist()
            feats = ort_fp32.image_features(enc["pixel_values"].numpy(), enc["pixel_attention_mask"].numpy(),
                                            enc["spatial_shapes"].numpy())
            o_toks, o_logits, _ = ort_fp32.generate(ids, proc.image_token_id, feats, MAX_NEW, eos)
            m = min(len(o_logits), len(hf_logits))
            err = float(np.abs(o_logits[:m] - hf_logits[:m]).max())
            var = {}
            for v, o in ort_var.items():
                qf = o.image_features(enc["pixel_values"].numpy(), enc["pixel_attention_mask"].numpy(),
                                      enc["spatial_shapes"].numpy())
                q_toks, q_logits, _ = o.generate(ids, proc.image_token_id, qf, MAX_NEW, eos)
                k = min(len(q_logits), len(hf_logits))
                var[v] = {"generated_ids": q_toks,
                          "leading_tokens_equal": next((i for i, (a, b) in enumerate(zip(q_toks, hf_toks)) if a != b),
                                                       min(len(q_toks), len(hf_toks))),
                          "first_step_max_abs_logit_err": float(np.abs(q_logits[0] - hf_logits[0]).max())}
            tag = f"gen{len(ref['generations'])}"
            np.save(ref_dir / f"{tag}.logits.npy", hf_logits.astype(np.float32))
            ref["generations"].append({
                "image": name, "question": q, "do_image_splitting": split, "max_new_tokens": MAX_NEW,
                "prompt": prompt, "input_ids": ids, "generated_ids": hf_toks,
                "generated_text": tok.decode(hf_toks, skip_special_tokens=False),
                "logits_file": f"reference/{tag}.logits.npy",
                "ort_fp32_tokens_equal": o_toks == hf_toks, "ort_fp32_max_abs_logit_err": err,
                "variants": var,
            })
            max_logit_err = max(max_logit_err, err)
            print(f"{tag} {name} split={split}: {len(hf_toks)} tokens, ORT equal {o_toks == hf_toks}, "
                  f"|dlogits| {err:.2e}; variants {var}", flush=True)
            if o_toks != hf_toks:
                raise SystemExit(f"ONNX greedy tokens differ from transformers: {o_toks} vs {hf_toks}")

    # probes: summed log-probabilities of each answer's tokens after the assistant header
    ans_ids = [tok(a, add_special_tokens=False)["input_ids"] for a in ANSWERS]
    for name in ("astronaut_512x512", "large_1280x720"):
        img = Image.open(images[name]).convert("RGB")
        for q in PROBES:
            conv = [{"role": "system", "content": SYSTEM},
                    {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q}]}]
            prompt = proc.apply_chat_template(conv, add_generation_prompt=True, tokenize=False)
            enc = proc(images=[img], text=prompt, return_tensors="pt", do_image_splitting=False)
            lps = logprob_answers(torch, model, enc, ans_ids)
            p = np.exp(np.array(lps) - max(lps))
            p = p / p.sum()
            # the same through ONNX
            ids = enc["input_ids"][0].tolist()
            feats = ort_fp32.image_features(enc["pixel_values"].numpy(), enc["pixel_attention_mask"].numpy(),
                                            enc["spatial_shapes"].numpy())
            olps = []
            for a in ans_ids:
                cache = ort_fp32.init_cache()
                e = ort_fp32.embeds(ids + a, proc.image_token_id, feats)
                lg = ort_fp32.step(cache, e, e.shape[1])[0]
                lg = lg - lg.max(-1, keepdims=True)
                lp = lg - np.log(np.exp(lg).sum(-1, keepdims=True))
                olps.append(float(sum(lp[len(ids) - 1 + j, t] for j, t in enumerate(a))))
            perr = float(np.abs(np.array(olps) - np.array(lps)).max())
            max_logit_err = max(max_logit_err, perr)
            ref["probes"].append({"image": name, "question": q, "do_image_splitting": False, "input_ids": ids,
                                  "answers": ANSWERS, "answer_ids": ans_ids, "logprobs": lps,
                                  "p": dict(zip(ANSWERS, p.tolist())), "p_yes": float(p[0]),
                                  "ort_fp32_max_abs_logprob_err": perr})
            print(f"probe {name} {q!r}: p_yes {p[0]:.4f} (ORT |dlogp| {perr:.1e})", flush=True)

    ref["parity"] = {"embed_images_max_abs_err": max_img_err, "decoder_max_abs_logit_err": max_logit_err,
                     "all_greedy_tokens_equal": all(g["ort_fp32_tokens_equal"] for g in ref["generations"])}
    (out / "reference.json").write_text(json.dumps(ref, indent=1, ensure_ascii=False) + "\n")
    if max_img_err > tol_image or max_logit_err > tol_logits:
        raise SystemExit(f"parity failed: embed_images {max_img_err:.2e} (tol {tol_image}), "
                         f"logits {max_logit_err:.2e} (tol {tol_logits})")
    return ref["parity"]


# ----------------------------------------------------------------------------------------------


def build_fixture(out: Path, checkpoint: Path | None = None, variants=("q4", "q8", "fp16"),
                  reference: bool = True, keep_hf: bool = True) -> dict:
    import torch
    from transformers import AutoProcessor, Lfm2VlForConditionalGeneration

    torch.set_num_threads(1)
    t0 = time.time()
    out = Path(out)
    if out.exists():
        for p in out.iterdir():
            if p.name != "README.md":
                shutil.rmtree(p) if p.is_dir() else p.unlink()
    out.mkdir(parents=True, exist_ok=True)
    rep = {}
    with tempfile.TemporaryDirectory() as td:
        hf_dir = Path(checkpoint) if checkpoint else build_tiny(Path(td) / "hf")
        model = Lfm2VlForConditionalGeneration.from_pretrained(hf_dir, dtype=torch.float32).eval()
        rep["parameters"] = sum(p.numel() for p in model.parameters())
        rep["files"] = copy_hf_files(hf_dir, out)
        AutoProcessor.from_pretrained(out)
        rep["onnx"] = export_graphs(model, out / "onnx")
        # the quantizers hold a whole graph in memory: free the torch model first (a real-size checkpoint
        # would otherwise be held as well); the references reload it from hf_dir
        del model
        gc.collect()
        rep["onnx"].update(quantize_variants(out / "onnx", list(variants)))
        if not checkpoint and keep_hf:
            size = sum(f.stat().st_size for f in hf_dir.iterdir())
            if size < 1_000_000:
                shutil.copytree(hf_dir, out / "hf")
            rep["hf_checkpoint_bytes"] = size
        if reference:
            rep["parity"] = write_references(hf_dir, out)
    rep["seconds"] = round(time.time() - t0, 1)
    return rep
