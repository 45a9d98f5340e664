"""Image encoders: the MobileNetV5-style encoder with the Multi-Scale Fusion Adapter (AutoNeural), and a
plain ViT (the InternVL2-like baseline).

The MobileNetV5 blocks keep timm's parameter layout (`conv_stem.conv`, `blocks.{stage}.{i}.pw_exp.bn`,
`attn.key.down_conv`, `msfa.ffn`, ...), so a timm / Gemma 3n `mobilenetv5` state dict loads as is
(the fidelity test in forge/tests checks this numerically). Differences from timm, on purpose:
- 'same' padding is computed from the (static) input size at trace time, so the export has plain
  Pad/Conv nodes and no shape arithmetic;
- attention is written out (MatMul/Softmax), never fused SDPA;
- GELU is the tanh form (as in timm's MobileNetV5): Erf does not run on the HTP.
"""

from __future__ import annotations

import math
import re

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import VisionConfig


def gelu(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")


def make_divisible(v: float, divisor: int = 8) -> int:
    """Round a channel count to a multiple of `divisor`, never more than 10% below `v`."""
    n = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if n < 0.9 * v:
        n += divisor
    return n


class RMSNorm2d(nn.Module):
    """RMS norm over the channels of an NCHW tensor, optionally followed by GELU."""

    def __init__(self, channels: int, eps: float = 1e-6, act: bool = False):
        super().__init__()
        self.eps = eps
        self.act = act
        self.weight = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * torch.rsqrt(x.pow(2).mean(1, keepdim=True) + self.eps) * self.weight.reshape(1, -1, 1, 1)
        return gelu(x) if self.act else x


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow 'SAME' padding (asymmetric for even strides), from the static input size."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, bias: bool = False):
        super().__init__(cin, cout, k, stride=stride, padding=0, groups=groups, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = self.kernel_size[0], self.stride[0]
        pads = []
        for size in (int(x.shape[-1]), int(x.shape[-2])):
            p = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [p // 2, p - p // 2]
        if any(pads):
            x = F.pad(x, pads)
        return super().forward(x)


class ConvNorm(nn.Module):
    """conv -> RMSNorm2d (-> GELU)."""

    def __init__(self, cin, cout, k, stride=1, groups=1, act=True, bias=False):
        super().__init__()
        self.conv = SameConv2d(cin, cout, k, stride, groups, bias)
        self.bn = RMSNorm2d(cout, act=act)

    def forward(self, x):
        return self.bn(self.conv(x))


class LayerScale2d(nn.Module):
    def __init__(self, channels: int, init: float):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((channels,), init))

    def forward(self, x):
        return x * self.gamma.reshape(1, -1, 1, 1)


class EdgeResidual(nn.Module):
    """Fused inverted residual: k x k expansion conv (with the stride), 1x1 projection."""

    def __init__(self, cin, cout, k, stride, exp):
        super().__init__()
        mid = make_divisible(cin * exp)
        self.has_skip = cin == cout and stride == 1
        self.conv_exp = SameConv2d(cin, mid, k, stride)
        self.bn1 = RMSNorm2d(mid, act=True)
        self.conv_pwl = SameConv2d(mid, cout, 1)
        self.bn2 = RMSNorm2d(cout)

    def forward(self, x):
        y = self.bn2(self.conv_pwl(self.bn1(self.conv_exp(x))))
        return y + x if self.has_skip else y


class UniversalInvertedResidual(nn.Module):
    """Optional depthwise conv at the start, 1x1 expansion, optional depthwise conv in the middle
    (which carries the stride when present), 1x1 projection, layer scale, residual."""

    def __init__(self, cin, cout, k_start, k_mid, stride, exp, layer_scale: float | None, skip=True):
        super().__init__()
        self.has_skip = cin == cout and stride == 1 and skip
        self.dw_start = (
            ConvNorm(cin, cin, k_start, stride if not k_mid else 1, groups=cin, act=False)
            if k_start
            else nn.Identity()
        )
        mid = make_divisible(cin * exp)
        self.pw_exp = ConvNorm(cin, mid, 1)
        self.dw_mid = ConvNorm(mid, mid, k_mid, stride, groups=mid) if k_mid else nn.Identity()
        self.pw_proj = ConvNorm(mid, cout, 1, act=False)
        self.layer_scale = LayerScale2d(cout, layer_scale) if layer_scale is not None else nn.Identity()

    def forward(self, x):
        y = self.layer_scale(self.pw_proj(self.dw_mid(self.pw_exp(self.dw_start(x)))))
        return y + x if self.has_skip else y


class _KV(nn.Module):
    """Key or value path: optional strided depthwise downsampling + norm, then a 1x1 projection."""

    def __init__(self, dim, out, k, stride):
        super().__init__()
        self.stride = stride
        if stride > 1:
            self.down_conv = SameConv2d(dim, dim, k, stride, groups=dim)
            self.norm = RMSNorm2d(dim)
        self.proj = nn.Conv2d(dim, out, 1, bias=False)

    def forward(self, x):
        if self.stride > 1:
            x = self.norm(self.down_conv(x))
        return self.proj(x)


class _Proj(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.proj = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x):
        return self.proj(x)


class MultiQueryAttention2d(nn.Module):
    """Mobile multi-query attention: `heads` query heads share one key and one value head; keys and
    values may be spatially downsampled (kv stride) by a depthwise conv."""

    def __init__(self, dim, heads, key_dim, kv_stride, k):
        super().__init__()
        self.heads, self.key_dim = heads, key_dim
        self.query = _Proj(dim, heads * key_dim)
        self.key = _KV(dim, key_dim, k, kv_stride)
        self.value = _KV(dim, key_dim, k, kv_stride)
        self.output = _Proj(heads * key_dim, dim)

    def forward(self, x):
        b, _, h, w = x.shape
        q = self.query(x).reshape(b, self.heads, self.key_dim, h * w).transpose(-1, -2)  # [B,heads,HW,d]
        k = self.key(x).flatten(2).transpose(1, 2).unsqueeze(1)  # [B,1,P,d]
        v = self.value(x).flatten(2).transpose(1, 2).unsqueeze(1)
        a = torch.softmax(torch.matmul(q * self.key_dim**-0.5, k.transpose(-1, -2)), dim=-1)
        o = torch.matmul(a, v)  # [B,heads,HW,d]
        o = o.transpose(1, 2).reshape(b, h, w, self.heads * self.key_dim).permute(0, 3, 1, 2)
        return self.output(o)


class MobileAttention(nn.Module):
    def __init__(self, dim, heads, key_dim, kv_stride, k, layer_scale: float | None):
        super().__init__()
        self.norm = RMSNorm2d(dim)
        self.attn = MultiQueryAttention2d(dim, heads, key_dim, kv_stride, k)
        self.layer_scale = LayerScale2d(dim, layer_scale) if layer_scale is not None else nn.Identity()

    def forward(self, x):
        return x + self.layer_scale(self.attn(self.norm(x)))


_BLOCK = re.compile(r"^(er|uir|mqa)((?:_[a-z]+\d+)+)$")


def parse_block(spec: str) -> tuple[str, dict[str, int]]:
    """'uir_r1_a3_k5_s2_e6_c24' -> ('uir', {'r': 1, 'a': 3, 'k': 5, 's': 2, 'e': 6, 'c': 24})."""
    m = _BLOCK.match(spec)
    if not m:
        raise ValueError(f"bad block spec {spec!r}")
    opts = {}
    for part in m.group(2).strip("_").split("_"):
        key = part.rstrip("0123456789")
        opts[key] = int(part[len(key) :])
    return m.group(1), opts


def build_block(spec: str, cin: int, layer_scale: float | None) -> tuple[nn.Module, int]:
    kind, o = parse_block(spec)
    cout = o.get("c", cin)
    if kind == "er":
        return EdgeResidual(cin, cout, o["k"], o["s"], o["e"]), cout
    if kind == "uir":
        return UniversalInvertedResidual(cin, cout, o["a"], o["k"], o["s"], o["e"], layer_scale), cout
    if o.get("s", 1) != 1 or cout != cin:
        raise ValueError(f"{spec}: attention blocks keep the resolution and width")
    return MobileAttention(cin, o["h"], o["d"], o.get("v", 1), o["k"], layer_scale), cout


class MultiScaleFusionAdapter(nn.Module):
    """Upsample the last two stages to the finer one, concat, inverted-residual FFN, pool to the
    output grid, RMSNorm2d."""

    def __init__(self, cin: int, cout: int, grid: int, expansion: float):
        super().__init__()
        self.grid = grid
        self.ffn = UniversalInvertedResidual(cin, cout, 0, 0, 1, expansion, None, skip=False)
        self.norm = RMSNorm2d(cout)

    def forward(self, fine: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        size = (int(fine.shape[-2]), int(fine.shape[-1]))
        coarse = F.interpolate(coarse, size=size, mode="nearest")
        x = self.ffn(torch.cat([fine, coarse], dim=1))
        if size != (self.grid, self.grid):
            if size[0] % self.grid or size[1] % self.grid:
                x = F.interpolate(x, size=(self.grid, self.grid), mode="bilinear")
            else:
                k = (size[0] // self.grid, size[1] // self.grid)
                x = F.avg_pool2d(x, kernel_size=k, stride=k)
        return self.norm(x)


class MobileNetV5Encoder(nn.Module):
    """pixel_values [B,3,S,S] -> features [B, grid*grid, msfa_channels]."""

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.cfg = cfg
        self.conv_stem = ConvNorm(3, cfg.stem_channels, 3, stride=2, bias=True)
        stages, cin, stage_out = [], cfg.stem_channels, []
        for stage in cfg.stages:
            blocks = []
            for spec in stage:
                _, opts = parse_block(spec)
                for r in range(opts.get("r", 1)):
                    s = spec if r == 0 else re.sub(r"_s\d+", "_s1", spec)
                    blk, cin = build_block(s, cin, cfg.layer_scale_init)
                    blocks.append(blk)
            stages.append(nn.Sequential(*blocks))
            stage_out.append(cin)
        self.blocks = nn.ModuleList(stages)
        self.msfa = MultiScaleFusionAdapter(sum(stage_out[-2:]), cfg.msfa_channels, cfg.grid, cfg.msfa_expansion)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """-> the MSFA output [B, C, grid, grid] (timm's `MobileNetV5Encoder.forward`)."""
        x = self.conv_stem(x)
        feats = []
        for stage in self.blocks:
            x = stage(x)
            feats.append(x)
        return self.msfa(feats[-2], feats[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature_map(x).flatten(2).transpose(1, 2)


class ViTBlock(nn.Module):
    def __init__(self, dim, heads, mlp):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.ls1 = nn.Parameter(torch.full((dim,), 0.1))
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.fc1 = nn.Linear(dim, mlp)
        self.fc2 = nn.Linear(mlp, dim)
        self.ls2 = nn.Parameter(torch.full((dim,), 0.1))

    def forward(self, x):
        b, n, c = x.shape
        d = c // self.heads
        q, k, v = self.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, d).permute(2, 0, 3, 1, 4)
        a = torch.softmax(torch.matmul(q * d**-0.5, k.transpose(-1, -2)), dim=-1)
        o = torch.matmul(a, v).transpose(1, 2).reshape(b, n, c)
        x = x + self.ls1 * self.proj(o)
        return x + self.ls2 * self.fc2(gelu(self.fc1(self.norm2(x))))


class ViTEncoder(nn.Module):
    """InternViT-like: patch embedding, pre-norm blocks, pixel shuffle (s x s patches -> one token)."""

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.cfg = cfg
        side = cfg.image_size // cfg.patch_size
        if side % cfg.pixel_shuffle or side // cfg.pixel_shuffle != cfg.grid:
            raise ValueError("vit: image_size / patch_size / pixel_shuffle must give the grid")
        self.patch_embed = nn.Conv2d(3, cfg.vit_width, cfg.patch_size, stride=cfg.patch_size)
        self.pos_embed = nn.Parameter(torch.zeros(1, side * side, cfg.vit_width))
        self.blocks = nn.ModuleList(ViTBlock(cfg.vit_width, cfg.vit_heads, cfg.vit_mlp) for _ in range(cfg.vit_depth))
        self.side = side

    def forward(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        b, _, c = x.shape
        s, g = self.cfg.pixel_shuffle, self.cfg.grid
        x = x.reshape(b, g, s, g, s, c).permute(0, 1, 3, 2, 4, 5).reshape(b, g * g, s * s * c)
        return x


def build_encoder(cfg: VisionConfig) -> nn.Module:
    if cfg.kind == "mobilenetv5":
        return MobileNetV5Encoder(cfg)
    if cfg.kind == "vit":
        return ViTEncoder(cfg)
    raise ValueError(f"unknown vision kind {cfg.kind!r}")
