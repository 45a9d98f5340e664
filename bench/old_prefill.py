"""A copy of a bundle in the contract before `conv_index` (for the side-by-side in bench/prefill.sh):
decoder_prefill's Gather over `conv_index` goes back to the constant slice of the last 3 window
columns, and the manifest drops `decoder.prefill_conv_index`, so the runtime sends a prompt's
remainder through decoder_step one token at a time, as it did before. Every other file is a hard
link (no copy of multi-GB weights).

  python -m bench.old_prefill BUNDLE OUT
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

import onnx
from onnx import numpy_helper

from forge.bundle import save_manifest
from forge.conv_index import INPUT, MANIFEST_KEY
from forge.manifest import read


def to_slice(m: onnx.ModelProto, chunk: int) -> int:
    """Gather(window, conv_index, axis=2) -> Slice(window, [chunk], [chunk + 3], [2]); returns the count."""
    g = m.graph
    consts = {"old_prefill_starts": chunk, "old_prefill_ends": chunk + 3, "old_prefill_axes": 2}
    n = 0
    for node in g.node:
        if node.op_type == "Gather" and len(node.input) == 2 and node.input[1] == INPUT:
            data = node.input[0]
            node.op_type = "Slice"
            del node.input[:]
            node.input.extend([data, *consts])
            del node.attribute[:]
            n += 1
    if n:
        import numpy as np

        for name, v in consts.items():
            g.initializer.append(numpy_helper.from_array(np.array([v], np.int64), name))
        keep = [i for i in g.input if i.name != INPUT]
        del g.input[:]
        g.input.extend(keep)
    return n


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle")
    p.add_argument("out")
    a = p.parse_args()
    src, out = Path(a.bundle), Path(a.out)
    man = read(src)
    if not man["decoder"].get(MANIFEST_KEY, False):
        raise SystemExit(f"{src}: already without conv_index")
    if out.exists():
        shutil.rmtree(out)
    prefill = {v["decoder_prefill"] for v in man["variants"].values()}
    for f in src.rglob("*"):
        rel = f.relative_to(src)
        if f.is_dir() or rel.as_posix() in prefill or rel.name == "manifest.toml" or "qnn" in rel.parts:
            continue  # QNN context binaries embed the new graph: the copy is for the CPU only
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        os.link(f, out / rel)
    for rel in prefill:
        m = onnx.load(str(src / rel), load_external_data=False)
        if not to_slice(m, man["decoder"]["prefill_chunk"]):
            raise SystemExit(f"{src / rel}: no Gather over {INPUT}")
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        onnx.save(m, str(out / rel))
    del man["decoder"][MANIFEST_KEY]
    for v in man["variants"].values():
        v.pop("qnn_context", None)
    man.pop("files", None)
    save_manifest(out, man, checksums=True)
    print(f"{out}: decoder_prefill without {INPUT} ({len(prefill)} file(s)); other files hard-linked")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
