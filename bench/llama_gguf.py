"""Turns a Hugging Face `Lfm2ForCausalLM` checkpoint into the GGUF files the llama.cpp leg of the
runtime benchmark loads (bench/runtime_llama.py):

    python bench/llama_gguf.py --checkpoint HF_DIR --out-dir DIR --cache CACHE [--python PY]

  1. DIR/model-f16.gguf   llama.cpp's own converter (convert_hf_to_gguf.py --outtype f16)
  2. DIR/model-q4_0.gguf  llama_cpp.llama_model_quantize (ftype Q4_0, the default tensor-type
                          choices of `llama-quantize model-f16.gguf model-q4_0.gguf Q4_0`)
  3. the f16 file is deleted unless --keep-f16.

Run it with the python that has llama-cpp-python (the quantizer is libllama itself, so the file
matches the library that runs it). The converter needs PyTorch + transformers and runs in a child
process under --python (default: $FORGE_VENV/bin/python, else .venv-forge/bin/python).
Every step skips when its output exists (written to a temporary name, renamed when complete), so
the command is idempotent and an interrupted run leaves no half-written model behind.

Where the converter comes from: llama-cpp-python's wheel has no converter, but its sdist vendors the
llama.cpp tree it was built from. The sdist of the *installed* llama-cpp-python version is fetched
with pip (`pip download --no-binary llama-cpp-python --no-deps`) into CACHE, and only
`convert_hf_to_gguf.py`, `conversion/` and `gguf-py/` are unpacked (CACHE/llama.cpp-<version>/).
The converter uses that vendored `gguf` package (nothing is installed into the torch venv), and
the converter and libllama are the same llama.cpp revision. Nothing of llama.cpp is committed here.

Monkeypatch (done in the child process, at run time): the checkpoints carry a small test
tokenizer (a 512-entry byte-level BPE inside the model's 65536-entry vocabulary). The converter
identifies the BPE pre-tokenizer by hashing how the tokenizer splits a fixed text, does not know
this tokenizer's hash, and refuses (NotImplementedError "BPE pre-tokenizer was not recognized").
`TextModel.get_vocab_base_pre` is wrapped so that, only when the original refuses, it returns
"gpt-2": the test tokenizer's pre-tokenizer is `ByteLevel(use_regex=True)`, which is exactly
GPT-2's split regex, llama.cpp's "gpt-2" pre-tokenizer. That setting only affects how llama.cpp
would split *text*; the benchmark feeds token ids, so it never matters for the numbers. Ids that
the tokenizer does not have become "[PAD<id>]" UNUSED entries (the converter's own behaviour).
A checkpoint without tokenizer.json can be given one with --tokenizer DIR (the checkpoint's files
and the tokenizer's are symlinked into DIR/.hf-input/, the checkpoint directory is not touched).

The last line of stdout is a JSON summary: seconds per step (null when skipped) and file sizes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONVERTER_PARTS = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
PRE_TOKENIZER_FALLBACK = "gpt-2"


class StepError(RuntimeError):
    pass


def log(msg: str) -> None:
    print(f"llama_gguf: {msg}", file=sys.stderr, flush=True)


def default_python() -> str:
    venv = os.environ.get("FORGE_VENV") or str(ROOT / ".venv-forge")
    return str(Path(venv) / "bin" / "python")


# ----------------------------------------------------------------------------- converter fetch

def fetch_converter(cache: Path, version: str) -> Path:
    """CACHE/llama.cpp-VERSION/ holding convert_hf_to_gguf.py, conversion/, gguf-py/ from the
    llama-cpp-python VERSION sdist (downloaded into CACHE once)."""
    dest = cache / f"llama.cpp-{version}"
    if (dest / "convert_hf_to_gguf.py").is_file():
        return dest
    cache.mkdir(parents=True, exist_ok=True)
    sdist = cache / f"llama_cpp_python-{version}.tar.gz"
    if not sdist.is_file():
        log(f"step fetch: downloading the llama-cpp-python {version} sdist into {cache}")
        cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--no-deps",
               "--no-binary", "llama-cpp-python", f"llama-cpp-python=={version}", "-d", str(cache)]
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if r.returncode != 0 or not sdist.is_file():
            raise StepError(f"step fetch: `{' '.join(cmd)}` failed (exit {r.returncode}), "
                            f"{sdist} missing:\n{r.stdout[-2000:]}")
    prefix = f"llama_cpp_python-{version}/vendor/llama.cpp/"
    tmp = cache / f".llama.cpp-{version}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    log(f"step fetch: unpacking the converter from {sdist.name}")
    try:
        with tarfile.open(sdist) as tf:
            members = []
            for m in tf.getmembers():
                if not m.name.startswith(prefix):
                    continue
                rest = m.name[len(prefix):]
                wanted = any(rest == p or rest.startswith(p) for p in CONVERTER_PARTS)
                if wanted and (m.isfile() or m.isdir()):
                    m.name = rest
                    members.append(m)
            if not any(m.name == "convert_hf_to_gguf.py" for m in members):
                raise StepError(f"step fetch: {sdist} has no {prefix}convert_hf_to_gguf.py")
            tf.extractall(tmp, members=members, filter="data")
    except (tarfile.TarError, OSError) as e:
        raise StepError(f"step fetch: cannot unpack {sdist}: {e}") from e
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest


# ----------------------------------------------------------------------------- conversion

def hf_input(checkpoint: Path, tokenizer: Path | None, out_dir: Path) -> Path:
    """The directory handed to the converter: the checkpoint itself, or (when a tokenizer comes
    from elsewhere) symlinks to the checkpoint's files plus the tokenizer's."""
    for f in ("config.json",):
        if not (checkpoint / f).is_file():
            raise StepError(f"step convert: {checkpoint / f} is missing")
    if not list(checkpoint.glob("*.safetensors")):
        raise StepError(f"step convert: no *.safetensors in {checkpoint}")
    if tokenizer is None:
        if not (checkpoint / "tokenizer.json").is_file():
            raise StepError(f"step convert: {checkpoint / 'tokenizer.json'} is missing "
                            "(the converter needs a tokenizer; pass --tokenizer DIR)")
        return checkpoint
    stage = out_dir / ".hf-input"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    for p in checkpoint.iterdir():
        if p.is_file() and p.name not in TOKENIZER_FILES:
            (stage / p.name).symlink_to(p.resolve())
    for name in TOKENIZER_FILES:
        if (tokenizer / name).is_file():
            (stage / name).symlink_to((tokenizer / name).resolve())
    if not (stage / "tokenizer.json").is_file():
        raise StepError(f"step convert: {tokenizer / 'tokenizer.json'} is missing")
    return stage


def convert(python: str, src: Path, model_dir: Path, out: Path, name: str) -> None:
    tmp = out.with_name(out.name + ".tmp")
    tmp.unlink(missing_ok=True)
    env = dict(os.environ)
    env.pop("NO_LOCAL_GGUF", None)  # use the vendored gguf-py that matches the converter
    cmd = [python, str(Path(__file__).resolve()), "--_convert", str(src), str(model_dir), str(tmp), name]
    log(f"step convert: {model_dir} -> {out.name} (converter from {src}, python {python})")
    r = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        raise StepError(f"step convert: convert_hf_to_gguf.py on {model_dir} -> {out} failed "
                        f"(exit {r.returncode}):\n{r.stdout[-4000:]}")
    for line in r.stdout.splitlines():
        if "pre-tokenizer" in line or "Model successfully exported" in line:
            log("  " + line.strip())
    tmp.rename(out)


def _convert_child(src: str, model_dir: str, outfile: str, name: str) -> None:
    """Runs under the torch python: import llama.cpp's converter from SRC, patch the pre-tokenizer
    detection (see the module docstring) and run its main() with --outtype f16."""
    import logging

    sys.path.insert(0, src)
    sys.path.insert(1, str(Path(src) / "gguf-py"))
    import convert_hf_to_gguf  # noqa: E402  (it imports torch, gguf and the conversion package)
    from conversion import base

    original = base.TextModel.get_vocab_base_pre
    quiet = logging.getLogger("hf-to-gguf")

    def get_vocab_base_pre(self, tokenizer) -> str:
        level = quiet.level
        quiet.setLevel(logging.ERROR)  # the refusal prints a 12-line warning banner first
        try:
            return original(self, tokenizer)
        except NotImplementedError:
            print(f"llama_gguf: BPE pre-tokenizer not recognized; using {PRE_TOKENIZER_FALLBACK!r} "
                  "(monkeypatch, see bench/llama_gguf.py)", flush=True)
            return PRE_TOKENIZER_FALLBACK
        finally:
            quiet.setLevel(level)

    base.TextModel.get_vocab_base_pre = get_vocab_base_pre
    sys.argv = ["convert_hf_to_gguf.py", model_dir, "--outtype", "f16", "--outfile", outfile,
                "--model-name", name]
    convert_hf_to_gguf.main()


# ----------------------------------------------------------------------------- quantization

def quantize(inp: Path, out: Path, nthread: int) -> None:
    import llama_cpp

    tmp = out.with_name(out.name + ".tmp")
    tmp.unlink(missing_ok=True)
    params = llama_cpp.llama_model_quantize_default_params()
    params.nthread = nthread
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0
    log(f"step quantize: {inp.name} -> {out.name} (Q4_0, {nthread} threads)")
    rc = llama_cpp.llama_model_quantize(str(inp).encode(), str(tmp).encode(), params)
    if rc != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        raise StepError(f"step quantize: llama_model_quantize({inp} -> {out}, Q4_0) returned {rc}")
    tmp.rename(out)


# ----------------------------------------------------------------------------- main

def main() -> int:
    if len(sys.argv) == 6 and sys.argv[1] == "--_convert":
        _convert_child(*sys.argv[2:])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, required=True, help="HF Lfm2ForCausalLM directory")
    ap.add_argument("--out-dir", type=Path, required=True)
    ap.add_argument("--cache", type=Path, required=True, help="where the llama.cpp converter is kept")
    ap.add_argument("--python", default=default_python(), help="python with torch + transformers")
    ap.add_argument("--tokenizer", type=Path,
                    help="directory with tokenizer.json when the checkpoint has none")
    ap.add_argument("--keep-f16", action="store_true")
    ap.add_argument("--threads", type=int, default=2, help="quantization threads (default 2)")
    args = ap.parse_args()

    try:
        import llama_cpp
    except ImportError as e:
        print(f"llama_gguf: run this with the python that has llama-cpp-python ({e})", file=sys.stderr)
        return 2

    out_dir = args.out_dir.resolve()
    f16 = out_dir / "model-f16.gguf"
    q4 = out_dir / "model-q4_0.gguf"
    summary: dict = {"f16_s": None, "q4_0_s": None, "llama_cpp_python": llama_cpp.__version__}
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        if q4.is_file():
            log(f"{q4} exists: nothing to do")
        else:
            if f16.is_file():
                log(f"{f16} exists: not converting again")
            else:
                if not Path(args.python).is_file():
                    raise StepError(f"step convert: --python {args.python} does not exist")
                src = fetch_converter(args.cache.resolve(), llama_cpp.__version__)
                model_dir = hf_input(args.checkpoint.resolve(), args.tokenizer, out_dir)
                t = time.perf_counter()
                convert(args.python, src, model_dir, f16, args.checkpoint.resolve().name)
                summary["f16_s"] = round(time.perf_counter() - t, 1)
                summary["f16_bytes"] = f16.stat().st_size
                log(f"step convert: {f16} {f16.stat().st_size / 1e6:.1f} MB in {summary['f16_s']} s")
                if model_dir != args.checkpoint.resolve():
                    shutil.rmtree(model_dir, ignore_errors=True)
            t = time.perf_counter()
            quantize(f16, q4, args.threads)
            summary["q4_0_s"] = round(time.perf_counter() - t, 1)
            log(f"step quantize: {q4} {q4.stat().st_size / 1e6:.1f} MB in {summary['q4_0_s']} s")
        if not args.keep_f16 and f16.is_file():
            f16.unlink()
            log(f"removed {f16} (--keep-f16 keeps it)")
    except StepError as e:
        print(f"llama_gguf: {e}", file=sys.stderr)
        return 1
    summary["q4_0"] = str(q4)
    summary["q4_0_bytes"] = q4.stat().st_size
    if f16.is_file():
        summary["f16_bytes"] = f16.stat().st_size
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
