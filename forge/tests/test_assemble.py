"""forge assemble (forge.assemble): AutoNeural from public parts. The documented command rebuilds
models/autoneural-assembled-tiny byte for byte (the command itself fails unless the fp32 graphs give
transformers' Lfm2ForCausalLM greedy tokens and timm's encoder features); parts that do not fit are
refused with an error naming the file and the tensors; Gemma 3n's vision-tower prefix is stripped."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from forge.__main__ import main
from forge.assemble import AssemblyError, assemble_model, timm_encoder, tiny_lfm2, tiny_vision
from forge.manifest import read as read_manifest

COMMITTED = Path(__file__).resolve().parents[2] / "models" / "autoneural-assembled-tiny"


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("parts")
    return tiny_lfm2(d / "lfm2-tiny"), tiny_vision(d / "mobilenetv5-tiny.safetensors")


def _files(d: Path) -> list[str]:
    return sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file())


def test_fixture_rebuilds(tmp_path):
    out = tmp_path / "autoneural-assembled-tiny"
    assert main(["assemble", "--tiny-fixture", "--out", str(out)]) == 0
    assert _files(out) == _files(COMMITTED)
    for rel in _files(COMMITTED):  # every byte: graphs, QDQ graphs, manifest, references, card
        assert (out / rel).read_bytes() == (COMMITTED / rel).read_bytes(), rel


def test_committed_reference():
    """What the Rust tests read: text-only prompt ids and transformers' greedy ids, timm parity."""
    r = json.loads((COMMITTED / "assembly_reference.json").read_text())
    assert r["parity"]["fp32_all_tokens_equal"]
    assert r["parity"]["fp32_vision_max_rel_err"] <= r["parity"]["vision_tol"]
    assert len(r["generations"]) >= 2 and isinstance(r["eos_token_id"], int)
    for g in r["generations"]:
        assert g["prompt_ids"][0] == 1 and 5 not in g["prompt_ids"]  # bos first; no image token (text only)
        assert 0 < len(g["generated_ids"]) <= r["max_new_tokens"]
        assert g["bundle"]["fp32"]["generated_ids"] == g["generated_ids"]
    assert r["parts"]["connector"]["fresh"]


def test_parts_load_and_match_timm(parts):
    lfm2, vision = parts
    model, tok, info = assemble_model(lfm2, vision, image_size=256, grid=8, kv_capacity=256, prefill_chunk=16)
    assert info == {"arch": "forge-tiny", "fresh_connector": True, "seed": 0}
    assert "untrained" in model.cfg.description
    assert model.cfg.decoder.intermediate == 128  # LFM2's auto-adjusted FFN width: 2/3 of 192
    ref = timm_encoder(model.cfg.vision, "forge-tiny")
    ref.load_state_dict(load_file(str(vision)))
    x = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (ref(x) - model.vision.feature_map(x)).abs().max().item() <= 1e-5


def test_gemma3n_prefix_and_connector_file(parts, tmp_path):
    lfm2, vision = parts
    gemma = {"model.vision_tower.timm_model." + k: v for k, v in load_file(str(vision)).items()}
    gemma["model.embed_vision.embedding_projection.weight"] = torch.zeros(4, 4)  # other Gemma 3n parts: ignored
    save_file(gemma, str(tmp_path / "gemma3n.safetensors"))
    conn = {"connector.fc1.weight": torch.randn(32, 48), "connector.fc1.bias": torch.zeros(32),
            "connector.fc2.weight": torch.randn(64, 32), "connector.fc2.bias": torch.zeros(64)}
    save_file(conn, str(tmp_path / "connector.safetensors"))
    model, _, info = assemble_model(lfm2, tmp_path / "gemma3n.safetensors", tmp_path / "connector.safetensors",
                                    image_size=256, grid=8)
    assert not info["fresh_connector"] and model.cfg.connector_hidden == 32
    assert torch.equal(model.connector.fc2.weight, conn["connector.fc2.weight"])


def test_wrong_key_names_name_the_file(parts, tmp_path):
    lfm2, vision = parts
    state = load_file(str(vision))
    k = next(k for k in state if k.startswith("blocks.2."))
    state[k.replace("blocks.2.", "stages.2.")] = state.pop(k)
    bad = tmp_path / "renamed.safetensors"
    save_file(state, str(bad))
    with pytest.raises(AssemblyError, match="renamed.safetensors") as e:
        assemble_model(lfm2, bad, vision_arch="forge-tiny")
    assert "missing" in str(e.value) and "unexpected" in str(e.value) and k in str(e.value)
    # not an encoder at all
    save_file({"foo.weight": torch.zeros(2)}, str(tmp_path / "foo.safetensors"))
    with pytest.raises(AssemblyError, match="foo.safetensors.*not a MobileNetV5"):
        assemble_model(lfm2, tmp_path / "foo.safetensors")
    with pytest.raises(AssemblyError, match="known layouts"):
        assemble_model(lfm2, vision, vision_arch="mobilenetv5_huge")
    conn = tmp_path / "conn.safetensors"
    save_file({"linear_1.weight": torch.zeros(2, 2)}, str(conn))
    with pytest.raises(AssemblyError, match="conn.safetensors.*fc1"):
        assemble_model(lfm2, vision, conn)


def test_shape_mismatch_names_the_file(parts, tmp_path):
    lfm2, vision = parts
    state = load_file(str(vision))
    k = "blocks.1.0.pw_exp.conv.weight"
    state[k] = torch.zeros(state[k].shape[0] + 8, *state[k].shape[1:])
    bad = tmp_path / "reshaped.safetensors"
    save_file(state, str(bad))
    with pytest.raises(AssemblyError, match=f"reshaped.safetensors.*mis-shaped.*{k}"):
        assemble_model(lfm2, bad)
    # a connector whose input is not the encoder's MSFA width
    conn = {"fc1.weight": torch.zeros(64, 40), "fc1.bias": torch.zeros(64), "fc2.weight": torch.zeros(64, 64),
            "fc2.bias": torch.zeros(64)}
    save_file(conn, str(tmp_path / "narrow.safetensors"))
    with pytest.raises(AssemblyError, match=r"narrow.safetensors.*fc1.weight: file \(64, 40\) vs model \(64, 48\)"):
        assemble_model(lfm2, vision, tmp_path / "narrow.safetensors")
    # the language model: a tensor of the wrong shape in the checkpoint
    bad_lm = tmp_path / "lfm2-bad"
    shutil.copytree(lfm2, bad_lm)
    t = load_file(str(bad_lm / "model.safetensors"))
    t["model.layers.0.feed_forward.w1.weight"] = torch.zeros(7, 64)
    save_file(t, str(bad_lm / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(AssemblyError, match="(?s)lfm2-bad.*size mismatch.*w1.weight"):
        assemble_model(bad_lm, vision)


def test_missing_image_token_is_named(parts, tmp_path):
    lfm2, vision = parts
    with pytest.raises(AssemblyError, match="tokenizer.json.*no '<photo>' token"):
        assemble_model(lfm2, vision, image_token="<photo>")


def test_quantized_graphs_run_fully_on_the_htp():
    from forge.qnn import assignment, htp_session

    man = read_manifest(COMMITTED)
    v = man["variants"]["w8a16"]
    for g in ("vision", "embed", "decoder_prefill", "decoder_step"):
        sess = htp_session(COMMITTED / v[g], threads=1)  # raises unless every node is on the HTP
        assert set(assignment(sess)) == {"QNNExecutionProvider"}, g
        assert isinstance(v["sqnr_db"][g], float)


def test_kv_capacity_must_hold_the_image(parts):
    lfm2, vision = parts
    with pytest.raises(AssemblyError, match="--kv-capacity 128 .* 64 image tokens"):
        assemble_model(lfm2, vision, image_size=256, grid=8, kv_capacity=128)
