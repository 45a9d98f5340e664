"""Compares the aarch64 `vlm` example's answers (run under qemu) with the bundle's golden.json,
which forge wrote from ONNX Runtime on x86_64: every probe answer's probability within 1e-3 (the
tolerance of inference/tests/pipeline.rs' golden check; vlm prints 4 decimals) and the greedy
answer's text equal to the golden greedy tokens up to the first stop token.

    python3 compare.py BUNDLE VARIANT OUTDIR    # OUTDIR/vlm-{VARIANT}-{probe,ask}-{i}.txt
Standard library only (it runs in the build root). Exit status 1 on any difference."""
import json
import sys
from pathlib import Path

bundle, variant, outdir = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
golden = json.loads((bundle / "golden.json").read_text())[variant]["cases"]
tok = json.loads((bundle / "tokenizer.json").read_text())
assert tok["decoder"]["type"] == "ByteLevel", "only the ByteLevel decoder is implemented here"

# Byte-level BPE decoding (GPT-2's byte <-> unicode table), special tokens skipped.
bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
cs = bs[:]
n = 0
for b in range(256):
    if b not in bs:
        bs.append(b)
        cs.append(256 + n)
        n += 1
byte_of = {chr(c): b for b, c in zip(bs, cs)}
token = {i: s for s, i in tok["model"]["vocab"].items()}
special = {t["id"] for t in tok["added_tokens"] if t.get("special")}
for t in tok["added_tokens"]:
    token[t["id"]] = t["content"]
stop_ids = {t["id"] for t in tok["added_tokens"] if t["content"] in ("<|im_end|>",)}


def decode(ids):
    out = bytearray()
    for i in ids:
        if i in special:
            continue
        out += bytes(byte_of[ch] for ch in token[i])
    return out.decode("utf-8", "replace")


failures = []
worst = 0.0
for i, case in enumerate(golden):
    # Probes: "id answer P(field)=x  [a=p, b=q]"
    seen = {}
    for line in (outdir / f"vlm-{variant}-probe-{i}.txt").read_text().splitlines():
        if "[" not in line or "P(" not in line:
            continue
        pid = line.split()[0]
        inner = line[line.index("[") + 1 : line.rindex("]")]
        seen[pid] = {k: float(v) for k, v in (kv.rsplit("=", 1) for kv in inner.split(", "))}
    if set(seen) != set(case["probes"]):
        failures.append(f"case {i}: probes {sorted(seen)} vs golden {sorted(case['probes'])}")
    for pid, answers in case["probes"].items():
        for a, want in answers.items():
            got = seen.get(pid, {}).get(a)
            if got is None:
                failures.append(f"case {i}: no answer {pid}/{a}")
                continue
            worst = max(worst, abs(got - want))
            if abs(got - want) >= 1e-3:
                failures.append(f"case {i}: {pid}/{a} = {got} vs golden {want:.6f}")
    # Greedy text up to the first stop token.
    text = (outdir / f"vlm-{variant}-ask-{i}.txt").read_text()
    got = text.split("A: ", 1)[1].rsplit("\nfinish:", 1)[0] if "A: " in text and "\nfinish:" in text else None
    ids = case["greedy_tokens"]
    cut = next((k for k, t in enumerate(ids) if t in stop_ids), len(ids))
    want = decode(ids[:cut])
    if got is None or got.strip() != want.strip():
        failures.append(f"case {i}: greedy answer {got!r} vs golden {want!r}")
    else:
        print(f"{variant} case {i}: {case['question']!r} -> {got.strip()!r} (= golden)")
print(f"{variant}: {len(golden)} images, {sum(len(c['probes']) for c in golden)} probes; "
      f"largest probability difference from golden {worst:.2e}")
for f in failures:
    print(f"DIFF {variant} {f}")
sys.exit(1 if failures else 0)
