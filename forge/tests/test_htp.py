"""Every quantized graph of the committed tiny-random bundle runs fully on the QNN HTP (simulator,
htp_arch 68 / soc_model 39) with CPU fallback disabled, close to its CPU QDQ result, and its EP
context binary reloads with identical outputs."""

import numpy as np
import pytest

from forge.manifest import read as read_manifest
from forge.qnn import assignment, htp_session
from forge.quantize import sqnr_db
from forge.runtime import Runner, cpu_session

GRAPHS = ("vision", "embed", "decoder_prefill", "decoder_step")


def feeds(bundle):
    """One real feed per graph: the fp32 runner's first call of each on golden image 0."""
    from forge.images import pixel_values
    from PIL import Image
    from forge.runtime import Recorder

    rec = Recorder()
    r = Runner(bundle, "fp32", recorder=rec)
    img = r.manifest["image"]
    pv = pixel_values(Image.open(bundle / "golden/0.png"), img["size"], img["mean"], img["std"])
    r.generate(r.prefix_state(pv), "Describe the driver.", max_new=2)
    return {g: rec.feeds[g][-1] for g in GRAPHS}


@pytest.fixture(scope="module")
def graph_feeds(committed_bundle):
    return feeds(committed_bundle)


def quantized_graphs(bundle):
    man = read_manifest(bundle)
    out = {}
    for v in man["variants"].values():
        if v["quantization"] != "none":
            for g in GRAPHS:
                out[v[g]] = (g, v["qnn_context"][g])
    return out


@pytest.mark.parametrize("variant", ["w8a16", "w4a16"])
def test_quantized_graphs_fully_offload_and_context_reloads(committed_bundle, graph_feeds, variant):
    man = read_manifest(committed_bundle)
    v = man["variants"][variant]
    for g in GRAPHS:
        qdq = committed_bundle / v[g]
        sess = htp_session(qdq)  # disable_cpu_ep_fallback=1: creation fails unless fully on the HTP
        placed = assignment(sess)
        assert list(placed) == ["QNNExecutionProvider"], (v[g], placed)
        feed = graph_feeds[g]
        on_htp = sess.run(None, feed)
        on_cpu = cpu_session(qdq).run(None, feed)
        assert sqnr_db(on_cpu[0], on_htp[0]) > 20, v[g]
        ctx = htp_session(committed_bundle / v["qnn_context"][g]).run(None, feed)
        for a, b in zip(ctx, on_htp):
            assert np.array_equal(a, b), v["qnn_context"][g]


def test_probes_on_htp_context_binaries_agree_with_cpu_golden(committed_bundle):
    """The whole probe pipeline on the v68 context binaries (image, prefix, question, answers) lands
    within a few points of the CPU QDQ golden probabilities, with the same winning answers."""
    import json
    import tomllib

    from PIL import Image

    from forge.images import pixel_values

    b = committed_bundle
    golden = json.loads((b / "golden.json").read_text())["w8a16"]["cases"][0]
    probes = tomllib.loads((b / "probes.toml").read_text())["probe"]
    cpu = Runner(b, "w8a16")
    ctx = cpu.manifest["variants"]["w8a16"]["qnn_context"]
    r = Runner(b, "w8a16", sessions={g: htp_session(b / ctx[g]) for g in GRAPHS})
    img = r.manifest["image"]
    prefix = r.prefix_state(pixel_values(Image.open(b / golden["image"]), img["size"], img["mean"], img["std"]))
    for p in probes:
        got, want = r.probe(prefix, p["question"], p["answers"]), golden["probes"][p["id"]]
        assert max(abs(got[a] - want[a]) for a in want) < 0.1, p["id"]
        assert max(got, key=got.get) == max(want, key=want.get), p["id"]
