"""onnxruntime-genai 0.18 on the tiny random LFM2-VL checkpoint: what it builds, what it runs, and
whether its greedy tokens are transformers' (issue 12, item 4(ii)).

One command, from the repository root (needs both venvs, nothing from the network):

    .venv-forge/bin/python -m bench.genai_parity --genai-python .venv-genai/bin/python [--work DIR]

  - `.venv-forge` (forge/setup: torch, transformers 5.23, onnx): rebuilds the checkpoint that
    `python -m forge published-fixture` exports (forge.published.build_tiny, save_pretrained), writes
    a text-only Lfm2ForCausalLM with the same language-model weights, computes transformers' greedy
    references for text prompts, runs onnxruntime-genai's model builder (its builder.py, run with
    this interpreter: the builder needs torch + transformers + onnx_ir, which the genai venv lacks)
    and writes the adapter graph + genai_config.json for the published-layout graphs.
  - `.venv-genai` (`python3 -m venv .venv-genai && .venv-genai/bin/pip install onnxruntime-genai==0.18.0`):
    runs every built / configured model with onnxruntime-genai and compares token ids.

Paths (each is a row of the results; models/lfm2-vl-tiny-onnx/README.md has the table):
  builder: Lfm2VlForConditionalGeneration and Lfm2ForCausalLM, `-p fp32|int4 -e cpu`, and the
    VL checkpoint with `exclude_embeds=true` (the lfm2_vl decoder stage, inputs_embeds in);
  published: models/lfm2-vl-tiny-onnx/onnx/{embed_images,decoder}.onnx driven by genai (type lfm2_vl)
    through og.MultiModalProcessor + og.Images, with a small embedding graph (embed_tokens.onnx's
    graph + an image-feature scatter) because genai's embedding stage must take image_features;
  mixed: the same, but with the builder's exclude_embeds decoder instead of decoder.onnx.
Text prompts are compared with references computed here (transformers generate, greedy, 16 new
tokens, eos 4); image prompts with reference.json's `generations` (single-image cases: genai does
no tiling).

Exit status 1 when a path listed in EXPECT_MATCH does not reproduce transformers' tokens exactly
(or fails to build/run), or one in EXPECT_LOOP (the published q8/q4/fp16 graphs) does not reproduce
the plain onnxruntime loop's tokens on the same graphs; the builder's int4 paths and the variants
against transformers are reported (first divergence) but not required to match; the neg:* paths are
configurations expected to fail (their errors are recorded).
The work directory (default bench/cache/genai-parity) is scratch; results go to WORK/results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "models" / "lfm2-vl-tiny-onnx"
MAX_NEW = 16
# text-only prompts (chat template, no image); their references are computed by `prepare`
TEXT_MESSAGES = [
    [{"role": "user", "content": "Is the driver looking at the road?"}],
    [{"role": "system", "content": "You are a careful driver-monitoring assistant. Answer briefly."},
     {"role": "user", "content": "Describe the image."}],
]
BUILDS = {  # name -> (checkpoint, precision, extra_options)
    "vl-fp32": ("hf-vl", "fp32", []),
    "vl-int4": ("hf-vl", "int4", []),
    "vl-embeds-fp32": ("hf-vl", "fp32", ["exclude_embeds=true"]),
    "text-fp32": ("hf-text", "fp32", []),
    "text-int4": ("hf-text", "int4", []),
}
# paths that must reproduce transformers' greedy tokens exactly (fp32 everywhere)
EXPECT_MATCH = ["builder:vl-fp32", "builder:text-fp32", "published:fp32", "mixed:vl-embeds-fp32"]
# quantized / fp16 published graphs: genai must give the tokens of the plain onnxruntime loop on the
# same graphs (reference.json generations[*].variants, made by forge.published.OrtLfm2Vl)
EXPECT_LOOP = ["published:q8", "published:q4", "published:fp16"]


def log(*a):
    print(*a, flush=True)


def env1() -> dict:
    e = dict(os.environ)
    e.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    return e


# ------------------------------------------------------------------------------------------------
# prepare (forge venv)

def builder_script(genai_python: str) -> Path:
    out = subprocess.run([genai_python, "-c", "import importlib.util as u;"
                          "print(u.find_spec('onnxruntime_genai').submodule_search_locations[0])"],
                         capture_output=True, text=True, check=True, env=env1())
    return Path(out.stdout.strip()) / "models" / "builder.py"


def short_error(text: str) -> str:
    """The last exception line of a traceback (the builder's answer), else the last line."""
    lines = [x.strip() for x in text.strip().splitlines() if x.strip()]
    for x in reversed(lines):
        if ("Error" in x or "Exception" in x) and not x.startswith("File "):
            return x[:400]
    return lines[-1][:400] if lines else ""


def text_checkpoint(vl_dir: Path, out: Path):
    """Lfm2ForCausalLM (transformers' class) with the VL checkpoint's language model and head."""
    import torch
    from transformers import AutoTokenizer, Lfm2ForCausalLM, Lfm2VlForConditionalGeneration

    vl = Lfm2VlForConditionalGeneration.from_pretrained(vl_dir, dtype=torch.float32).eval()
    lm = Lfm2ForCausalLM(vl.config.text_config).eval()
    state = {f"model.{k}": v for k, v in vl.model.language_model.state_dict().items()}
    state["lm_head.weight"] = vl.lm_head.weight
    missing, unexpected = lm.load_state_dict(state, strict=False)
    assert not unexpected and all("lm_head" in m for m in missing), (missing, unexpected)
    lm.generation_config.eos_token_id = vl.generation_config.eos_token_id
    lm.generation_config.bos_token_id = vl.generation_config.bos_token_id
    lm.generation_config.pad_token_id = vl.generation_config.pad_token_id
    lm.save_pretrained(out)
    AutoTokenizer.from_pretrained(vl_dir).save_pretrained(out)


def text_references(work: Path) -> dict:
    """transformers' greedy generations on the text prompts, from both checkpoints."""
    import torch
    from transformers import AutoTokenizer, Lfm2ForCausalLM, Lfm2VlForConditionalGeneration

    tok = AutoTokenizer.from_pretrained(work / "hf-vl")
    models = {
        "hf-vl": Lfm2VlForConditionalGeneration.from_pretrained(work / "hf-vl", dtype=torch.float32).eval(),
        "hf-text": Lfm2ForCausalLM.from_pretrained(work / "hf-text", dtype=torch.float32).eval(),
    }
    out = []
    for msgs in TEXT_MESSAGES:
        rendered = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        ids = tok(rendered, add_special_tokens=False)["input_ids"]
        case = {"messages": msgs, "rendered": rendered, "input_ids": ids}
        for name, m in models.items():
            with torch.no_grad():
                g = m.generate(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                               do_sample=False, max_new_tokens=MAX_NEW)
            case[name] = [int(x) for x in g[0, len(ids):]]
        assert case["hf-vl"] == case["hf-text"], "the text-only checkpoint must be the VL model's language model"
        out.append(case)
    return {"transformers": __import__("transformers").__version__, "torch": torch.__version__, "cases": out}


def run_builds(work: Path, builder: Path) -> dict:
    res = {}
    for name, (ckpt, prec, extra) in BUILDS.items():
        out = work / "built" / name
        shutil.rmtree(out, ignore_errors=True)
        cmd = [sys.executable, str(builder), "-i", str(work / ckpt), "-o", str(out), "-p", prec, "-e", "cpu",
               "-c", str(work / "builder-cache")]
        if extra:
            cmd += ["--extra_options", *extra]
        t = time.time()
        p = subprocess.run(["nice", *cmd], capture_output=True, text=True, env=env1())
        (work / "built").mkdir(exist_ok=True)
        (work / "built" / f"{name}.log").write_text(p.stdout + "\n----- stderr\n" + p.stderr)
        r = {"command": " ".join(["builder.py", *cmd[2:]]).replace(str(work) + "/", ""), "rc": p.returncode,
             "seconds": round(time.time() - t, 1), "ok": p.returncode == 0 and (out / "genai_config.json").exists()}
        if r["ok"]:
            cfg = json.loads((out / "genai_config.json").read_text())
            r["model_type"] = cfg["model"]["type"]
            r["files"] = sorted(f.name for f in out.iterdir())
            r["sections"] = sorted(k for k, v in cfg["model"].items() if isinstance(v, dict))
            r["decoder_inputs"] = cfg["model"]["decoder"]["inputs"]
            r["warnings"] = [x.strip() for x in p.stdout.splitlines() if "WARNING" in x or "not supported" in x]
        else:
            r["error"] = short_error(p.stderr or p.stdout)
        log(json.dumps({k: v for k, v in r.items() if k != "files"}))
        res[name] = r
    return res


def embedding_adapter(embed_tokens: Path, out: Path, image_token_id: int, hidden: int, fp16: bool = False):
    """genai's lfm2_vl embedding stage: input_ids + image_features -> inputs_embeds.

    The published embed_tokens.onnx takes input_ids only, but genai hands the vision output to the
    embedding graph (config model.embedding.inputs.image_features) and the decoder gets whatever that
    graph returns. This graph is embed_tokens.onnx's graph unchanged plus a scatter: the k-th
    `<image>` token's row becomes image_features[k] (the same rule as forge.published.OrtLfm2Vl).
    On decode steps genai passes an empty [0, hidden] image_features: a zero row is appended so
    the gather stays in range."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    m = onnx.load(str(embed_tokens))
    g = m.graph
    (ids_in,) = g.input
    (emb_out,) = g.output
    text = "adapter/text_embeds"
    for n in g.node:
        n.output[:] = [text if o == emb_out.name else o for o in n.output]
    ft = TensorProto.FLOAT16 if fp16 else TensorProto.FLOAT
    g.input.append(helper.make_tensor_value_info("image_features", ft, ["num_image_tokens", hidden]))
    g.initializer.extend([
        numpy_helper.from_array(np.array(image_token_id, dtype=np.int64), "adapter/image_token_id"),
        numpy_helper.from_array(np.zeros((1, hidden), np.float16 if fp16 else np.float32), "adapter/zero_row"),
        numpy_helper.from_array(np.array([-1], np.int64), "adapter/minus1"),
        numpy_helper.from_array(np.array(1, np.int64), "adapter/one"),
        numpy_helper.from_array(np.array(0, np.int64), "adapter/axis0"),
        numpy_helper.from_array(np.array([-1], np.int64), "adapter/last_axis"),
    ])
    N = helper.make_node
    g.node.extend([
        N("Equal", [ids_in.name, "adapter/image_token_id"], ["adapter/is_img"]),
        N("Reshape", ["adapter/is_img", "adapter/minus1"], ["adapter/is_img_flat"]),
        N("Cast", ["adapter/is_img_flat"], ["adapter/is_img_i64"], to=TensorProto.INT64),
        N("CumSum", ["adapter/is_img_i64", "adapter/axis0"], ["adapter/rank1"]),
        N("Sub", ["adapter/rank1", "adapter/one"], ["adapter/rank0"]),
        N("Shape", ["image_features"], ["adapter/feat_shape"], start=0, end=1),
        N("Squeeze", ["adapter/feat_shape"], ["adapter/n_feat"]),
        N("Where", ["adapter/is_img_flat", "adapter/rank0", "adapter/n_feat"], ["adapter/row"]),
        N("Concat", ["image_features", "adapter/zero_row"], ["adapter/feats_padded"], axis=0),
        N("Gather", ["adapter/feats_padded", "adapter/row"], ["adapter/rows_flat"], axis=0),
        N("Shape", [text], ["adapter/text_shape"]),
        N("Reshape", ["adapter/rows_flat", "adapter/text_shape"], ["adapter/rows"]),
        N("Unsqueeze", ["adapter/is_img", "adapter/last_axis"], ["adapter/is_img3"]),
        N("Where", ["adapter/is_img3", "adapter/rows", text], [emb_out.name]),
    ])
    onnx.checker.check_model(m)
    onnx.save(m, str(out))


def decoder_section(names: dict, conv_cache: int, filename: str, text_cfg) -> dict:
    return {
        "filename": filename,
        "session_options": {"log_id": "onnxruntime-genai", "intra_op_num_threads": 1, "inter_op_num_threads": 1,
                            "provider_options": []},
        "head_size": text_cfg.hidden_size // text_cfg.num_attention_heads,
        "hidden_size": text_cfg.hidden_size,
        "num_attention_heads": text_cfg.num_attention_heads,
        "num_hidden_layers": text_cfg.num_hidden_layers,
        "num_key_value_heads": text_cfg.num_key_value_heads,
        "layer_types": list(text_cfg.layer_types),
        "conv_cache_size": conv_cache,
        **names,
    }


def published_configs(work: Path):
    """genai model directories for the published-layout graphs (graphs symlinked, not copied).

    published-{fp32,q8,q4,fp16}: the fixture's decoder / embed_images of that variant + the adapter;
    mixed-vl-embeds-fp32: the builder's exclude_embeds decoder instead of decoder.onnx;
    neg-no-adapter / neg-share-buffer: what happens without the adapter (embed_tokens.onnx as
    genai's embedding graph) and with genai's default past_present_share_buffer=true."""
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(FIXTURE)
    ip = json.loads((FIXTURE / "preprocessor_config.json").read_text())
    tc = cfg.text_config
    merge, patch = ip["downsample_factor"], ip["encoder_patch_size"]
    search = {"do_sample": False, "num_beams": 1, "max_length": 4096, "top_k": 1, "temperature": 1.0,
              "repetition_penalty": 1.0}
    processor = {"processor": {"name": "lfm2_vl_image_processor", "transforms": [
        {"operation": {"name": "decode_image", "type": "DecodeImage", "attrs": {"color_space": "RGB"}}},
        {"operation": {"name": "resize", "type": "Resize", "attrs": {
            "height": ip["tile_size"], "width": ip["tile_size"], "interpolation": "LINEAR", "smart_resize": 1,
            "min_pixels": ip["min_image_tokens"] * patch ** 2 * merge ** 2,
            "max_pixels": ip["max_image_tokens"] * patch ** 2 * merge ** 2, "patch_size": patch, "merge_size": merge}}},
        {"operation": {"name": "rescale", "type": "Rescale", "attrs": {"rescale_factor": ip["rescale_factor"]}}},
        {"operation": {"name": "normalize", "type": "Normalize", "attrs": {"mean": ip["image_mean"], "std": ip["image_std"]}}},
        {"operation": {"name": "to_chw", "type": "Permute3D", "attrs": {"dims": [2, 0, 1]}}},
        {"operation": {"name": "image_sizes", "type": "PixtralImageSizes"}},
    ]}}
    published_names = {
        "inputs": {"inputs_embeds": "inputs_embeds", "attention_mask": "attention_mask",
                   "past_key_names": "past_key_values.%d.key", "past_value_names": "past_key_values.%d.value",
                   "past_conv_names": "past_conv.%d"},
        "outputs": {"logits": "logits", "present_key_names": "present.%d.key", "present_value_names": "present.%d.value",
                    "present_conv_names": "present_conv.%d"},
    }
    built = work / "built" / "vl-embeds-fp32"
    # name -> (variant suffix, decoder: None = the fixture's, adapter?, past_present_share_buffer)
    setups = {
        "published-fp32": ("", None, True, False),
        "published-q8": ("_q8", None, True, False),
        "published-q4": ("_q4", None, True, False),
        "published-fp16": ("_fp16", None, True, False),
        "mixed-vl-embeds-fp32": ("", built, True, True),
        "neg-no-adapter": ("", None, False, False),
        "neg-share-buffer": ("", None, True, True),
    }
    dirs = {}
    for name, (sfx, dec, adapter, share) in setups.items():
        d = work / name
        shutil.rmtree(d, ignore_errors=True)
        (d / "onnx").mkdir(parents=True)
        for f in (FIXTURE / "onnx").iterdir():
            os.symlink(f, d / "onnx" / f.name)
        for f in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "config.json"):
            shutil.copy(FIXTURE / f, d / f)
        (d / "genai_processor_config.json").write_text(json.dumps(processor, indent=1))
        emb_src = "embed_tokens_fp16.onnx" if sfx == "_fp16" else "embed_tokens.onnx"
        if adapter:
            embedding_adapter(FIXTURE / "onnx" / emb_src, d / "embeddings_adapter.onnx", cfg.image_token_id,
                              tc.hidden_size, fp16=sfx == "_fp16")
            embedding = {"filename": "embeddings_adapter.onnx",
                         "inputs": {"input_ids": "input_ids", "image_features": "image_features"},
                         "outputs": {"inputs_embeds": "inputs_embeds"}}
        else:
            embedding = {"filename": f"onnx/{emb_src}", "inputs": {"input_ids": "input_ids"},
                         "outputs": {"inputs_embeds": "inputs_embeds"}}
        if dec is None:
            decoder = decoder_section(published_names, tc.conv_L_cache, f"onnx/decoder{sfx}.onnx", tc)
        else:
            if not (dec / "genai_config.json").exists():
                continue
            b = json.loads((dec / "genai_config.json").read_text())["model"]["decoder"]
            for f in dec.iterdir():
                if f.name.startswith("model.onnx"):
                    os.symlink(f, d / f.name)
            decoder = decoder_section({"inputs": b["inputs"], "outputs": b["outputs"]}, b["conv_cache_size"],
                                      b["filename"], tc)
        vision = {"filename": f"onnx/embed_images{sfx}.onnx", "config_filename": "genai_processor_config.json",
                  "patch_size": patch, "spatial_merge_size": merge, "max_num_patches": ip["max_num_patches"],
                  "inputs": {"pixel_values": "pixel_values", "attention_mask": "pixel_attention_mask",
                             "image_sizes": "spatial_shapes"},
                  "outputs": {"image_features": "image_features"}}
        conf = {"model": {"type": "lfm2_vl", "bos_token_id": tc.bos_token_id, "eos_token_id": tc.eos_token_id,
                          "pad_token_id": tc.pad_token_id, "context_length": 4096, "vocab_size": tc.vocab_size,
                          "image_token_id": cfg.image_token_id,
                          "decoder": decoder, "embedding": embedding, "vision": vision},
                "search": {**search, "past_present_share_buffer": share}}
        (d / "genai_config.json").write_text(json.dumps(conf, indent=1))
        dirs[name] = str(d)
    return dirs


def prepare(work: Path, genai_python: str) -> dict:
    import torch

    torch.set_num_threads(1)
    from forge.published import build_tiny

    work.mkdir(parents=True, exist_ok=True)
    for d in ("hf-vl", "hf-text"):
        shutil.rmtree(work / d, ignore_errors=True)
    build_tiny(work / "hf-vl")  # the checkpoint `python -m forge published-fixture` exports
    same = (work / "hf-vl" / "config.json").read_text() == (FIXTURE / "config.json").read_text()
    text_checkpoint(work / "hf-vl", work / "hf-text")
    refs = text_references(work)
    refs["checkpoint_config_equals_fixture"] = same
    builds = run_builds(work, builder_script(genai_python))
    dirs = published_configs(work)
    return {"text_references": refs, "builds": builds, "genai_dirs": dirs}


# ------------------------------------------------------------------------------------------------
# run (genai venv)

def first_divergence(got: list[int], ref: list[int]) -> dict:
    n = 0
    for a, b in zip(got, ref):
        if a != b:
            break
        n += 1
    return {"match": got == ref, "leading_equal": n, "of": len(ref),
            "first_divergence": None if got == ref else {"index": n, "genai": got[n] if n < len(got) else None,
                                                           "transformers": ref[n] if n < len(ref) else None}}


def pixel_check(pix: dict, want: dict) -> dict:
    """genai's (ort-extensions') pixel_values against transformers' (reference.json + stored rows)."""
    import hashlib

    import numpy as np

    pv = np.ascontiguousarray(pix["pixel_values"])
    rows = np.load(FIXTURE / want["pixel_rows_file"])
    got = pv[0, want["pixel_rows_index"][0]]
    d = np.abs(got.astype(np.float64) - rows)
    return {"sha256_equal": hashlib.sha256(pv.tobytes()).hexdigest() == want["pixel_values_sha256"],
            "image_sizes": pix["image_sizes"], "spatial_shapes_equal": pix["image_sizes"] == want["spatial_shapes"],
            "sampled_rows_max_abs_diff": float(d.max()),
            "sampled_values_off_by_a_u8_level": round(float((d > 1e-3).mean()), 4),  # 1 level = 1/127.5
            "valid_sum_diff": float(pv.astype(np.float64).sum() - want["pixel_values_valid_sum"])}


def set_threads(cfg_path: Path):
    c = json.loads(cfg_path.read_text())
    for sec in ("decoder", "embedding", "vision"):
        if sec in c["model"]:
            so = c["model"][sec].setdefault("session_options", {})
            so["intra_op_num_threads"] = 1
            so["inter_op_num_threads"] = 1
    c["search"]["past_present_share_buffer"] = c["search"].get("past_present_share_buffer", True)
    cfg_path.write_text(json.dumps(c, indent=1))


def genai_text(model_dir: Path, prompt: list[int]) -> list[int]:
    import numpy as np
    import onnxruntime_genai as og

    model = og.Model(str(model_dir))
    params = og.GeneratorParams(model)
    params.set_search_options(do_sample=False, max_length=len(prompt) + MAX_NEW)
    gen = og.Generator(model, params)
    gen.append_tokens(np.array([prompt], dtype=np.int32))
    out = []
    while not gen.is_done():
        gen.generate_next_token()
        out.append(int(gen.get_next_tokens()[0]))
    return out


def genai_image(model_dir: Path, prompt: str, image: Path) -> tuple[list[int], list[int], dict]:
    import onnxruntime_genai as og

    model = og.Model(str(model_dir))
    proc = model.create_multimodal_processor()
    inputs = proc(prompt, images=og.Images.open(str(image)))
    ids = [int(x) for x in inputs["input_ids"].as_numpy().reshape(-1)]
    pix = {"pixel_values": inputs["pixel_values"].as_numpy().astype("float32"),
           "image_sizes": inputs["image_sizes"].as_numpy().tolist()}
    params = og.GeneratorParams(model)
    params.set_search_options(do_sample=False, max_length=len(ids) + MAX_NEW)
    gen = og.Generator(model, params)
    gen.set_inputs(inputs)
    out = []
    while not gen.is_done():
        gen.generate_next_token()
        out.append(int(gen.get_next_tokens()[0]))
    return ids, out, pix


def attempt(fn, *a):
    try:
        return {"ok": True, "value": fn(*a)}
    except Exception as e:  # the error text is the finding
        return {"ok": False, "error": " ".join(str(e).split())[:500]}


def run_all(work: Path, prep: dict) -> dict:
    import onnxruntime_genai as og

    res = {"onnxruntime_genai": og.__version__, "paths": {}}
    cases = prep["text_references"]["cases"]
    for name, b in prep["builds"].items():
        key = f"builder:{name}"
        if not b["ok"]:
            res["paths"][key] = {"builds": False, "error": b["error"]}
            continue
        d = work / "built" / name
        set_threads(d / "genai_config.json")
        if b.get("decoder_inputs", {}).get("inputs_embeds") and not b.get("decoder_inputs", {}).get("input_ids"):
            # the lfm2_vl decoder stage alone: genai needs the embedding + vision stages (path "mixed")
            r = attempt(genai_text, d, cases[0]["input_ids"])
            res["paths"][key] = {"builds": True, "model_type": b["model_type"], "runs_alone": r["ok"],
                                 "error": r.get("error"), "note": "decoder stage only; see mixed:" + name}
            log(key, json.dumps(res["paths"][key]))
            continue
        rows = []
        for c in cases:
            r = attempt(genai_text, d, c["input_ids"])
            ref = c["hf-vl"]
            rows.append({"prompt_tokens": len(c["input_ids"]), **({"genai": r["value"], "transformers": ref,
                                                                      **first_divergence(r["value"], ref)}
                                                                     if r["ok"] else {"error": r["error"]})})
        res["paths"][key] = {"builds": True, "model_type": b["model_type"], "runs": all("error" not in x for x in rows),
                             "cases": rows, "match": all(x.get("match") for x in rows)}
        log(key, json.dumps(res["paths"][key]))

    ref = json.loads((FIXTURE / "reference.json").read_text())
    singles = [g for g in ref["generations"] if not g["do_image_splitting"]]
    tiles = [g for g in ref["generations"] if g["do_image_splitting"]]
    for dname, d in prep["genai_dirs"].items():
        kind, _, rest = dname.partition("-")
        key = f"{kind}:{rest}"
        variant = rest.split("-")[-1] if kind == "published" else "fp32"
        d = Path(d)
        rows = []
        # text-only through the same pipeline (no image: genai skips the vision stage)
        for c in cases:
            r = attempt(genai_text, d, c["input_ids"])
            rows.append({"case": "text", "prompt_tokens": len(c["input_ids"]),
                         **({"genai": r["value"], "transformers": c["hf-vl"], **first_divergence(r["value"], c["hf-vl"])}
                            if r["ok"] else {"error": r["error"]})})
        for g in singles:
            r = attempt(genai_image, d, g["prompt"], FIXTURE / "images" / f"{g['image']}.png")
            row = {"case": f"{g['image']} / {g['question']}", "prompt_tokens": len(g["input_ids"])}
            if r["ok"]:
                ids, toks, pix = r["value"]
                row.update(prompt_ids_equal=ids == g["input_ids"], genai_prompt_tokens=len(ids),
                           pixels=pixel_check(pix, ref["images"][g["image"]]["cases"]["single"]),
                           genai=toks, transformers=g["generated_ids"], **first_divergence(toks, g["generated_ids"]))
                if ids != g["input_ids"]:
                    row["prompt_first_difference"] = next((i for i, (a, b) in enumerate(zip(ids, g["input_ids"])) if a != b),
                                                          min(len(ids), len(g["input_ids"])))
                if variant != "fp32":
                    loop = g["variants"][variant]["generated_ids"]
                    row["ort_loop_same_graphs"] = {"tokens": loop, **first_divergence(toks, loop)}
            else:
                row["error"] = r["error"]
            rows.append(row)
        res["paths"][key] = {"builds": True, "runs": all("error" not in x for x in rows), "cases": rows,
                             "match": all(x.get("match") for x in rows),
                             "not_covered": [f"{g['image']} tiles (genai's lfm2_vl processor does not tile)" for g in tiles]}
        if variant != "fp32":
            img = [x for x in rows if x["case"] != "text" and "error" not in x]
            res["paths"][key]["match_ort_loop"] = bool(img) and all(x["ort_loop_same_graphs"]["match"] for x in img)
        log(key, json.dumps(res["paths"][key]))
    return res


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", default=str(REPO / "bench" / "cache" / "genai-parity"))
    p.add_argument("--genai-python", default=str(REPO / ".venv-genai" / "bin" / "python"))
    p.add_argument("--stage", choices=["all", "prepare", "run"], default="all")
    a = p.parse_args()
    work = Path(a.work).resolve()
    t0 = time.time()
    if a.stage in ("all", "prepare"):
        prep = prepare(work, a.genai_python)
        (work / "prepare.json").write_text(json.dumps(prep, indent=1))
        if a.stage == "prepare":
            return 0
    if a.stage == "run":
        prep = json.loads((work / "prepare.json").read_text())
        res = run_all(work, prep)
        (work / "run.json").write_text(json.dumps(res, indent=1))
        return 0
    # all: the genai half runs in the genai venv
    rc = subprocess.run(["nice", a.genai_python, "-m", "bench.genai_parity", "--stage", "run", "--work", str(work)],
                        cwd=REPO, env=env1()).returncode
    if rc != 0 or not (work / "run.json").exists():
        log(f"genai stage failed (rc {rc})")
        return 1
    res = json.loads((work / "run.json").read_text())
    res["builds"] = prep["builds"]
    res["seconds"] = round(time.time() - t0, 1)
    (work / "results.json").write_text(json.dumps(res, indent=1))
    failed = [k for k in EXPECT_MATCH if not res["paths"].get(k, {}).get("match")]
    failed += [k for k in EXPECT_LOOP if not res["paths"].get(k, {}).get("match_ort_loop")]
    log("\n| path | builds | runs | = transformers (leading equal per case) | = ORT loop, same graphs |\n|---|---|---|---|---|")
    for k, v in res["paths"].items():
        runs = v.get("runs", v.get("runs_alone"))
        m = v.get("match")
        cases = v.get("cases") or []
        detail = ", ".join(f"{x.get('leading_equal', '-')}/{x.get('of', '-')}" for x in cases)
        loop = ", ".join(f"{x['ort_loop_same_graphs']['leading_equal']}/16" for x in cases if "ort_loop_same_graphs" in x)
        log(f"| {k} | {v.get('builds')} | {runs} | {m} ({detail}) | {v.get('match_ort_loop', '')} {loop} |")
    if failed:
        log("FAILED (expected an exact match): " + ", ".join(failed))
        return 1
    log(f"all expected matches hold ({res['seconds']} s); results in {work / 'results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
