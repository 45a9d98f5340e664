"""The forge MobileNetV5 encoder against timm's `mobilenetv5` (the Gemma 3n encoder's reference code).

Where they coincide (same block layout, RMSNorm2d, tanh GELU, MSFA over the last two stages), the
state dicts are interchangeable and the outputs equal. By design, not compared: the connector (not in
timm) and timm's MSFA output width, fixed at 2048 there and a config value here (the tiny test
encoder uses a narrower MSFA built with timm's own adapter class)."""

from functools import partial

import pytest
import timm
import torch
from timm.layers import RmsNorm2d
from timm.models import mobilenetv5 as mv5
from timm.models._efficientnet_builder import decode_arch_def, round_channels

from forge.config import CONFIGS
from forge.model import randomize_vision_
from forge.vision import MobileNetV5Encoder


def timm_encoder(cfg):
    t = mv5.MobileNetV5Encoder(
        block_args=decode_arch_def([list(s) for s in cfg.stages]), stem_size=cfg.stem_channels, pad_type="same",
        round_chs_fn=partial(round_channels, multiplier=1.0), norm_layer=RmsNorm2d, act_layer=mv5._GELU,
        layer_scale_init_value=cfg.layer_scale_init, msfa_output_resolution=cfg.grid,
    )
    t.msfa = mv5.MobileNetV5MultiScaleFusionAdapter(
        in_chs=t.msfa_in_chs, out_chs=cfg.msfa_channels, output_resolution=cfg.grid, norm_layer=RmsNorm2d,
        act_layer=mv5._GELU,
    )
    for m in t.modules():
        if hasattr(m, "fused_attn"):
            m.fused_attn = False
    return t.eval()


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
