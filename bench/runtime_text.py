"""The text decoder of an LFM2-VL checkpoint as a Hugging Face LFM2 checkpoint (Lfm2ForCausalLM:
config.json, model.safetensors, tokenizer files): the input of ONNX Runtime GenAI's model builder and
of llama.cpp's converter, so the side-by-side runtime benchmark (bench/bench_runtime.py) runs the
same weights in every runner. The FFN width is written out (intermediate_size = the w1 width,
block_auto_adjust_ff_dim false) so no reader has to repeat LFM2's width adjustment.

  python -m bench.runtime_text VL_CHECKPOINT OUT_DIR
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from safetensors import safe_open
from safetensors.numpy import save_file

PREFIX = "model.language_model."


def main(src: Path, out: Path) -> int:
    cfg = json.loads((src / "config.json").read_text())
    text = dict(cfg["text_config"])
    files = sorted(src.glob("model*.safetensors"))
    if not files:
        raise SystemExit(f"{src}: no model*.safetensors (make it with `python -m forge random-vl 1.6b {src}`)")
    state = {}
    for f in files:
        with safe_open(str(f), "np") as st:
            for k in st.keys():
                if k.startswith(PREFIX):
                    state["model." + k[len(PREFIX):]] = st.get_tensor(k)
    if not state:
        raise SystemExit(f"{src}: no tensor named {PREFIX}*")
    width = state["model.layers.0.feed_forward.w1.weight"].shape[0]
    text.update(architectures=["Lfm2ForCausalLM"], model_type="lfm2", intermediate_size=width, block_ff_dim=width,
                block_auto_adjust_ff_dim=False, tie_word_embeddings=True, torch_dtype="float32",
                max_position_embeddings=8192)
    out.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(text, indent=1))
    for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json",
              "chat_template.jinja"):
        if (src / f).exists():
            shutil.copyfile(src / f, out / f)
    print(json.dumps({"tensors": len(state), "parameters": int(sum(v.size for v in state.values())), "ffn": width}))
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    raise SystemExit(main(Path(sys.argv[1]), Path(sys.argv[2])))
