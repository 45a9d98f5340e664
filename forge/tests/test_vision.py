"""The forge MobileNetV5 encoder against timm's `mobilenetv5` (the Gemma 3n encoder's reference code).

Where they coincide (same block layout, RMSNorm2d, tanh GELU, MSFA over the last two stages), the
state dicts are interchangeable and the outputs equal. By design, not compared: the connector (not in
timm) and timm's MSFA output width, fixed at 2048 there and a config value here (the tiny test
encoder uses a narrower MSFA built with timm's own adapter class)."""

import pytest
import timm
import torch

from forge.assemble import timm_encoder  # timm's own classes, built from the same block strings
from forge.config import CONFIGS
from forge.model import randomize_vision_
from forge.vision import MobileNetV5Encoder


@pytest.mark.parametrize("size", [128, 160])  # 160: odd-sized stages, asymmetric 'same' padding everywhere
def test_tiny_encoder_matches_timm(size):
    cfg = CONFIGS["tiny-random"].vision
    ours = MobileNetV5Encoder(cfg).eval()
    randomize_vision_(ours, torch.Generator().manual_seed(3))
    ref = timm_encoder(cfg)
    ref.load_state_dict(ours.state_dict(), strict=True)  # same names and shapes, both ways
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        want, got = ref(x), ours.feature_map(x)
    assert want.shape == got.shape == (2, cfg.msfa_channels, cfg.grid, cfg.grid)
    assert (want - got).abs().max().item() <= 1e-5
    assert want.abs().max().item() > 0.5


def test_300m_layout_matches_timm_mobilenetv5_300m_enc():
    """autoneural-1.5b's encoder has exactly the parameters (names and shapes) of timm's
    mobilenetv5_300m_enc, so real Gemma 3n / MobileNetV5 weights load into it (built on the meta
    device: shapes only, no memory)."""
    with torch.device("meta"):
        ref = timm.create_model("mobilenetv5_300m_enc", pretrained=False)
        ours = MobileNetV5Encoder(CONFIGS["autoneural-1.5b"].vision)
    want = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert got == want
    assert sum(v.numel() for v in ref.parameters()) > 290_000_000
