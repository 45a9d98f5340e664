"""QNN HTP execution (the x86_64 simulator in onnxruntime-qnn here): sessions with CPU fallback
disabled (a graph runs fully on the HTP or the session fails), which EP ran which op, and EP context
binaries for a target (SA8295P: htp_arch 68, soc_model 39)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import onnx
import onnxruntime as ort
import onnxruntime_qnn

_registered = False


def _register() -> None:
    global _registered
    if not _registered:
        ort.register_execution_provider_library("QNNExecutionProvider", onnxruntime_qnn.get_library_path())
        _registered = True


def htp_session(
    path: Path,
    htp_arch: int = 68,
    soc_model: int = 39,
    fallback: bool = False,
    context_out: Path | None = None,
    threads: int = 2,
) -> ort.InferenceSession:
    """A session on the QNN HTP backend. Without `fallback`, any node the HTP cannot take makes
    session creation fail. With `context_out`, the compiled graph is also written there as an EP
    context model with the binary embedded (ep.context_embed_mode=1)."""
    _register()
    devices = [d for d in ort.get_ep_devices() if d.ep_name == "QNNExecutionProvider"]
    if not devices:
        raise RuntimeError("no QNNExecutionProvider device (onnxruntime-qnn plugin not usable)")
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = threads
    if not fallback:
        so.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    so.add_session_config_entry("session.record_ep_graph_assignment_info", "1")
    if context_out is not None:
        so.add_session_config_entry("ep.context_enable", "1")
        so.add_session_config_entry("ep.context_file_path", str(context_out))
        so.add_session_config_entry("ep.context_embed_mode", "1")
    so.add_provider_for_devices(
        devices,
        {"backend_path": onnxruntime_qnn.get_qnn_htp_path(), "htp_arch": str(htp_arch), "soc_model": str(soc_model)},
    )
    return ort.InferenceSession(str(path), sess_options=so)


def assignment(session: ort.InferenceSession) -> dict[str, dict[str, int]]:
    """{execution provider: {op type: count}} as the session placed the graph."""
    out: dict[str, Counter] = {}
    for sg in session.get_provider_graph_assignment_info():
        c = out.setdefault(sg.ep_name, Counter())
        for n in sg.get_nodes():
            c[n.op_type] += 1
    return {k: dict(v) for k, v in out.items()}


def compile_context(src: Path, dst: Path, htp_arch: int = 68, soc_model: int = 39) -> None:
    """Compile a QDQ graph for the HTP (fully offloaded, or an error) into an EP context model."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        dst.unlink()
    sess = htp_session(src, htp_arch, soc_model, context_out=dst)
    del sess
    if not dst.exists():
        raise RuntimeError(f"{dst}: the QNN EP wrote no context model")
    # ONNX Runtime writes IR 13; the bundle contract keeps every graph at IR <= 10 (nothing in an
    # EPContext model needs more)
    m = onnx.load(str(dst))
    if m.ir_version > 10:
        m.ir_version = 10
        onnx.save(m, str(dst))
