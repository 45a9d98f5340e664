"""The forge LFM2 decoder against transformers' Lfm2ForCausalLM on the same random weights, its static
step against its own full forward, and the Hugging Face checkpoint loader."""

import json

import pytest
import torch
import transformers as tr

from forge.config import DecoderConfig
from forge.hf import CheckpointError, decoder_config_from_hf, load_lfm2_checkpoint
from forge.lfm2 import Lfm2Decoder, RMSNorm, randomize_


def hf_model(tie=True, seed=0):
    cfg = tr.Lfm2Config(
        vocab_size=300, hidden_size=64, intermediate_size=288, num_hidden_layers=5, num_attention_heads=4,
        num_key_value_heads=2, layer_types=["conv", "full_attention", "conv", "conv", "full_attention"],
        block_multiple_of=32, tie_word_embeddings=tie, norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": 1e6},
    )
    torch.manual_seed(seed)
    m = tr.Lfm2ForCausalLM(cfg).eval()
    with torch.no_grad():  # transformers' 0.02-std init is nearly linear; make every path count
        for name, p in m.named_parameters():
            p.add_((0.3 if p.dim() > 1 else 0.2) * torch.randn_like(p))
    return m


@pytest.mark.parametrize("tie", [True, False])
def test_checkpoint_round_trip_matches_transformers(tmp_path, tie):
    hf = hf_model(tie)
    hf.save_pretrained(tmp_path)
    ours = load_lfm2_checkpoint(tmp_path)
    assert ours.cfg.intermediate == hf.model.layers[0].feed_forward.w1.out_features
    assert ours.cfg.tie_embeddings == tie
    ids = torch.randint(0, 300, (2, 37), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = hf(ids).logits
        got = ours(ours.embed_tokens(ids))
    assert (want - got).abs().max().item() <= 1e-4, (want - got).abs().max().item()
    assert want.abs().max().item() > 1.0  # a non-trivial comparison


def test_static_step_matches_full_forward():
    cfg = DecoderConfig(vocab_size=200, hidden=32, intermediate=64, num_heads=4, num_kv_heads=2, head_dim=8,
                        layer_types=("conv", "full_attention", "conv", "full_attention"))
    dec = Lfm2Decoder(cfg).eval()
    randomize_(dec, torch.Generator().manual_seed(0))
    cap, neg = 24, -100.0
    x = torch.randn(1, 19, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = dec(x)[0]
        conv = [torch.zeros(1, 32, 3) for _ in cfg.conv_layers]
        kv = [(torch.zeros(1, 2, cap, 8), torch.zeros(1, 2, cap, 8)) for _ in cfg.attention_layers]
        got, pos = [], 0
        for t in (8, 8, 1, 1, 1):  # two prefill chunks, then single steps
            mask = torch.full((1, 1, t, cap + t), neg)
            mask[..., :pos] = 0
            mask[..., cap:] = torch.full((t, t), neg).triu(1)
            logits, conv, new_kv = dec.step(x[:, pos:pos + t], torch.arange(pos, pos + t, dtype=torch.int32)[None],
                                            mask, conv, kv)
            for (k, v), (nk, nv) in zip(kv, new_kv):
                k[:, :, pos:pos + t] = nk
                v[:, :, pos:pos + t] = nv
            got.append(logits[0])
            pos += t
    got = torch.cat(got)
    assert (want - got).abs().max().item() <= 1e-4


def test_config_from_hf_derives_lfm2_1_2b():
    cfg = {"model_type": "lfm2", "vocab_size": 65536, "hidden_size": 2048, "intermediate_size": 12288,
           "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8,
           "full_attn_idxs": [2, 5, 8, 10, 12, 14], "block_multiple_of": 256, "block_ffn_dim_multiplier": 1.0,
           "block_auto_adjust_ff_dim": True, "rope_theta": 1000000.0, "tie_embedding": True}
    d = decoder_config_from_hf(cfg)
    assert d.intermediate == 8192
    assert d.attention_layers == [2, 5, 8, 10, 12, 14]
    assert d.head_dim == 64 and d.tie_embeddings


def test_loader_names_missing_weights(tmp_path):
    hf = hf_model()
    hf.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["num_hidden_layers"] = 6
    cfg["layer_types"] = cfg["layer_types"] + ["conv"]
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="missing"):
        load_lfm2_checkpoint(tmp_path)


def test_loader_rejects_other_models(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(CheckpointError, match="llama"):
        load_lfm2_checkpoint(tmp_path)


def test_prescaled_norm_gives_the_plain_norms_values():
    """The export-friendly RMSNorm (rows divided by their max |x| first) is the same function, for
    rows of very different scales in one tensor (as trained image and text tokens are) and for
    all-zero rows (the padded rows of a prefill chunk)."""
    torch.manual_seed(0)
    plain, pre = RMSNorm(64, 1e-5), RMSNorm(64, 1e-5, prescaled=True)
    with torch.no_grad():
        plain.weight.normal_()
        pre.weight.copy_(plain.weight)
    x = torch.randn(5, 64) * torch.tensor([[1e-4], [0.03], [1.0], [100.0], [0.0]])
    assert torch.allclose(pre(x), plain(x), rtol=1e-5, atol=1e-6)
    assert torch.equal(pre(x)[4], torch.zeros(64))
