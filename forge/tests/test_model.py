"""The training-facing API: image splicing, loss with shifted labels, gradients, tokenizer/prompt."""

import pytest
import torch

from forge.bundle import default_tokenizer
from forge.config import CONFIGS
from forge.model import build_model
from forge.tokenizer import answer_ids, render_prompt


def test_forward_with_labels_trains():
    cfg = CONFIGS["tiny-random"]
    model = build_model(cfg).train()
    n = cfg.vision.tokens
    ids = torch.tensor([[1, 4, 30, 3, 40, 41, 2], [1, 4, 31, 3, 42, 2, 0]])
    labels = ids.clone()
    labels[:, :4] = -100  # train on the answer only
    labels[1, -1] = -100  # padding
    pv = torch.randn(2, 3, cfg.vision.image_size, cfg.vision.image_size)
    logits, loss = model(pv, ids, labels)
    assert logits.shape == (2, ids.shape[1] - 1 + n, cfg.decoder.vocab_size)
    loss.backward()
    assert torch.isfinite(loss)
    assert model.vision.conv_stem.conv.weight.grad.abs().sum() > 0  # the image path learns too
    assert model.connector.fc1.weight.grad.abs().sum() > 0


def test_splice_needs_exactly_one_image_token():
    cfg = CONFIGS["tiny-random"]
    model = build_model(cfg)
    pv = torch.zeros(1, 3, cfg.vision.image_size, cfg.vision.image_size)
    with pytest.raises(ValueError, match="exactly one image token"):
        model(pv, torch.tensor([[1, 4, 5]]))


def test_tokenizer_is_deterministic_and_prompt_splits_at_the_image():
    cfg = CONFIGS["tiny-random"]
    a, b = default_tokenizer(cfg), default_tokenizer(cfg)
    assert a.to_str() == b.to_str()
    assert [a.token_to_id(t) for t in cfg.text.special_tokens] == [0, 1, 2, 3, 4]
    p = render_prompt(a, cfg.text, "Is the driver yawning?")
    assert p.prefix_ids[0] == 1 and p.prefix_ids[-1] == 3 and p.prefix_ids.count(3) == 1
    assert a.decode(p.question_ids, skip_special_tokens=False).startswith("Is the driver yawning?<|im_end|>")
    assert a.decode(answer_ids(a, "left mirror")) == "left mirror"


def test_cli_refuses_to_quantize_full_size_configs(tmp_path):
    from forge.__main__ import main

    with pytest.raises(SystemExit, match="--quant none"):
        main(["export", "--config", "autoneural-1.5b", "--out", str(tmp_path / "b"), "--quant", "w8a16"])
    assert not (tmp_path / "b").exists()


def test_weights_round_trip_through_safetensors(tmp_path):
    from forge.model import load_weights, save_weights

    cfg = CONFIGS["tiny-random"]
    a = build_model(cfg)
    with torch.no_grad():
        a.language.embed_tokens.weight.mul_(1.5)  # "trained": differs from the seeded init
    save_weights(a, tmp_path / "w.safetensors")
    b = load_weights(cfg, tmp_path / "w.safetensors")
    assert b.language.lm_head.weight is b.language.embed_tokens.weight  # still tied
    for (k, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), k
