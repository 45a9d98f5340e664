"""Model and bundle configurations: one architecture, many sizes.

A `ModelConfig` fully describes an AutoNeural-style model (vision encoder, connector, hybrid decoder)
plus the static shapes its ONNX bundle is exported with. Named configs live in `CONFIGS`; a trained
model (issue 4) builds its own `ModelConfig` (or derives one with `dataclasses.replace`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


@dataclass(frozen=True)
class VisionConfig:
    """The image encoder.

    kind = "mobilenetv5": stem + stages of blocks given as strings (see `forge.vision`), then the
    Multi-Scale Fusion Adapter (MSFA) over the last two stages, pooled to `grid` x `grid`.
    kind = "vit": a plain pre-norm ViT (InternViT-like baseline) with pixel-shuffle to `grid`.
    """

    kind: str = "mobilenetv5"
    image_size: int = 128
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    # mobilenetv5
    stem_channels: int = 16
    stages: tuple[tuple[str, ...], ...] = ()
    msfa_channels: int = 64  # MSFA output channels (the connector's input width)
    msfa_expansion: float = 2.0
    grid: int = 4  # output grid: tokens = grid * grid
    layer_scale_init: float = 1e-5
    # vit
    patch_size: int = 14
    vit_width: int = 1024
    vit_depth: int = 24
    vit_heads: int = 16
    vit_mlp: int = 4096
    pixel_shuffle: int = 2  # merges s x s patches into one token (InternVL's 0.5 downsample)

    @property
    def tokens(self) -> int:
        return self.grid * self.grid

    @property
    def out_channels(self) -> int:
        if self.kind == "vit":
            return self.vit_width * self.pixel_shuffle * self.pixel_shuffle
        return self.msfa_channels


@dataclass(frozen=True)
class DecoderConfig:
    """LFM2-style hybrid decoder; `layer_types` entries are "conv" or "full_attention"."""

    vocab_size: int = 384
    hidden: int = 64
    intermediate: int = 96  # the SwiGLU width actually used (already adjusted)
    layer_types: tuple[str, ...] = ("conv", "conv", "full_attention", "conv")
    num_heads: int = 4
    num_kv_heads: int = 2
    head_dim: int = 16
    conv_kernel: int = 3
    norm_eps: float = 1e-5
    rope_theta: float = 1_000_000.0
    qk_norm: bool = True
    tie_embeddings: bool = True
    conv_bias: bool = False
    # RMSNorm computed on rows pre-scaled by their max |x| (same values; see forge.lfm2.RMSNorm): for
    # trained models whose token scales differ by orders of magnitude, so 16-bit activations hold them.
    prescaled_norm: bool = False

    @property
    def num_layers(self) -> int:
        return len(self.layer_types)

    @property
    def conv_layers(self) -> list[int]:
        return [i for i, t in enumerate(self.layer_types) if t == "conv"]

    @property
    def attention_layers(self) -> list[int]:
        return [i for i, t in enumerate(self.layer_types) if t == "full_attention"]


@dataclass(frozen=True)
class TextConfig:
    """Tokenizer and prompt format. Special tokens take the first ids, in this order."""

    pad_token: str = "<|pad|>"
    bos_token: str = "<|startoftext|>"
    eos_token: str = "<|im_end|>"
    image_token: str = "<image>"
    im_start_token: str = "<|im_start|>"
    system_prompt: str = (
        "You are the driver monitoring camera of a car. Answer briefly about the driver and the cabin."
    )
    template: str = (
        "<|startoftext|><|im_start|>system\n{system}<|im_end|>\n"
        "<|im_start|>user\n<image>{question}<|im_end|>\n<|im_start|>assistant\n"
    )

    @property
    def special_tokens(self) -> list[str]:
        return [self.pad_token, self.bos_token, self.eos_token, self.image_token, self.im_start_token]


@dataclass(frozen=True)
class ModelConfig:
    name: str
    description: str
    vision: VisionConfig
    decoder: DecoderConfig
    text: TextConfig = field(default_factory=TextConfig)
    connector_hidden: int | None = None  # None: the decoder width
    kv_capacity: int = 256
    prefill_chunk: int = 16
    mask_value: float = -100.0
    seed: int = 0

    def replace(self, **kw) -> "ModelConfig":
        return dataclasses.replace(self, **kw)


def lfm2_intermediate(intermediate_size: int, multiple_of: int, multiplier: float | None, auto_adjust: bool) -> int:
    """The SwiGLU width LFM2 derives from its config (`block_auto_adjust_ff_dim` etc.)."""
    ff = intermediate_size
    if auto_adjust:
        ff = int(2 * ff / 3)
        if multiplier is not None:  # LFM2 rounds to `multiple_of` only together with a multiplier
            ff = int(multiplier * ff)
            ff = multiple_of * ((ff + multiple_of - 1) // multiple_of)
    return ff


# MobileNetV5 block strings (timm's arch_def notation, parsed by forge.vision):
#   er_r{repeats}_k{kernel}_s{stride}_e{expansion}_c{channels}            edge residual (fused IR)
#   uir_r{n}_a{start dw k}_k{mid dw k}_s{stride}_e{expansion}_c{channels}  universal inverted residual
#   mqa_r{n}_k{kv dw k}_h{heads}_v{kv stride}_s{stride}_d{key dim}_c{channels}  mobile multi-query attention
TINY_STAGES = (
    ("er_r1_k3_s2_e4_c16",),
    ("uir_r1_a3_k5_s2_e4_c24", "uir_r1_a5_k0_s1_e3_c24"),
    ("uir_r1_a5_k5_s2_e3_c32", "uir_r1_a0_k0_s1_e2_c32", "mqa_r1_k3_h2_v2_s1_d16_c32", "uir_r1_a0_k0_s1_e2_c32"),
    ("uir_r1_a5_k5_s2_e3_c40", "mqa_r1_k3_h2_s1_d16_c40", "uir_r1_a0_k0_s1_e2_c40"),
)

# timm mobilenetv5_300m_enc (Gemma 3n): the same stage/block layout.
MOBILENETV5_300M_STAGES = (
    ("er_r1_k3_s2_e4_c128", "er_r1_k3_s1_e4_c128", "er_r1_k3_s1_e4_c128"),
    ("uir_r1_a3_k5_s2_e6_c256", "uir_r1_a5_k0_s1_e4_c256", "uir_r1_a3_k0_s1_e4_c256", "uir_r1_a5_k0_s1_e4_c256",
     "uir_r1_a3_k0_s1_e4_c256"),
    ("uir_r1_a5_k5_s2_e6_c640",)
    + ("uir_r1_a5_k0_s1_e4_c640",) * 7
    + ("uir_r1_a0_k0_s1_e1_c640",)
    + ("mqa_r1_k3_h12_v2_s1_d64_c640", "uir_r1_a0_k0_s1_e2_c640") * 14,
    ("uir_r1_a5_k5_s2_e6_c1280",)
    + ("mqa_r1_k3_h16_s1_d96_c1280", "uir_r1_a0_k0_s1_e2_c1280") * 19,
)

# A starting point for the trained default model (issue 4): small enough for the cockpit CPU
# fallback (DESIGN.md: <= 256-384 px, a few million parameters), 8x8 visual tokens for spatial cues.
CABIN_STAGES = (
    ("er_r1_k3_s2_e4_c32",),
    ("uir_r1_a3_k5_s2_e4_c48", "uir_r1_a5_k0_s1_e4_c48"),
    ("uir_r1_a5_k5_s2_e4_c80", "uir_r1_a5_k0_s1_e4_c80", "uir_r1_a0_k0_s1_e2_c80",
     "mqa_r1_k3_h4_v2_s1_d32_c80", "uir_r1_a0_k0_s1_e2_c80"),
    ("uir_r1_a5_k5_s2_e4_c128", "mqa_r1_k3_h4_s1_d32_c128", "uir_r1_a0_k0_s1_e2_c128",
     "mqa_r1_k3_h4_s1_d32_c128", "uir_r1_a0_k0_s1_e2_c128"),
)

# Encoder layouts `forge assemble` loads public MobileNetV5 weights into (`--vision-arch`; without it
# the layout whose parameter names and shapes match the state dict). The stem and MSFA widths are
# read from the state dict; image size and grid are defaults (`--image-size`, `--grid`). mean/std are
# timm's pretrained config for mobilenetv5_300m_enc (pixels in [0, 1], no normalisation).
VISION_ARCHS: dict[str, VisionConfig] = {
    "mobilenetv5_300m_enc": VisionConfig(image_size=768, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), stem_channels=64,
                                         stages=MOBILENETV5_300M_STAGES, msfa_channels=2048, grid=16),
    # the tiny layout of tiny-random built with timm's classes (forge.assemble.timm_encoder): tests, fixtures
    "forge-tiny": VisionConfig(image_size=128, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), stem_channels=16,
                               stages=TINY_STAGES, msfa_channels=48, grid=4),
}

LFM2_1_2B_LAYERS = tuple("full_attention" if i in (2, 5, 8, 10, 12, 14) else "conv" for i in range(16))

CONFIGS: dict[str, ModelConfig] = {
    "tiny-random": ModelConfig(
        name="tiny-random",
        description="Tiny random-weight AutoNeural (MobileNetV5-style encoder + MSFA, MLP connector, "
        "LFM2 hybrid decoder) for the runtime's parity tests; its outputs are meaningless.",
        vision=VisionConfig(image_size=128, stem_channels=16, stages=TINY_STAGES, msfa_channels=48, grid=4),
        decoder=DecoderConfig(),
        kv_capacity=256,
        prefill_chunk=16,
        seed=0,
    ),
    # The shipped default model (models/autoneural-cabin) is forge.train_cabin.cabin_config(), a smaller
    # 128 px layout that fits the 2-core training budget; this is the larger layout for more compute.
    "cabin-256": ModelConfig(
        name="cabin-256",
        description="Larger cabin-sized AutoNeural (256 px, 64 image tokens) for driver monitoring on the "
        "cockpit CPU/NPU (random weights unless exported with --state-dict).",
        vision=VisionConfig(image_size=256, stem_channels=16, stages=CABIN_STAGES, msfa_channels=256, grid=8),
        decoder=DecoderConfig(
            vocab_size=1024,
            hidden=256,
            intermediate=768,
            layer_types=("conv", "conv", "full_attention", "conv", "conv", "full_attention"),
            num_heads=4,
            num_kv_heads=2,
            head_dim=64,
        ),
        kv_capacity=512,
        prefill_chunk=32,
        seed=1,
    ),
    "autoneural-1.5b": ModelConfig(
        name="autoneural-1.5b",
        description="AutoNeural at the paper's dimensions (MobileNetV5-300M-like encoder at 768 px -> "
        "16x16 tokens, MLP connector, LFM2-1.2B) with random weights, for latency work.",
        vision=VisionConfig(
            image_size=768, stem_channels=64, stages=MOBILENETV5_300M_STAGES, msfa_channels=2048, grid=16
        ),
        decoder=DecoderConfig(
            vocab_size=65536,
            hidden=2048,
            intermediate=8192,
            layer_types=LFM2_1_2B_LAYERS,
            num_heads=32,
            num_kv_heads=8,
            head_dim=64,
        ),
        kv_capacity=4096,
        prefill_chunk=128,
    ),
    "internvl2-2b-like": ModelConfig(
        name="internvl2-2b-like",
        description="The paper's baseline at InternVL2-2B size: InternViT-300M-like ViT (patch 14 at 448 "
        "px, pixel shuffle -> 256 tokens), MLP connector, all-attention 24-layer decoder; random weights.",
        vision=VisionConfig(
            kind="vit",
            image_size=448,
            mean=(0.485, 0.456, 0.406),
            std=(0.229, 0.224, 0.225),
            patch_size=14,
            vit_width=1024,
            vit_depth=24,
            vit_heads=16,
            vit_mlp=4096,
            pixel_shuffle=2,
            grid=16,
        ),
        decoder=DecoderConfig(
            vocab_size=92544,
            hidden=2048,
            intermediate=8192,
            layer_types=("full_attention",) * 24,
            num_heads=16,
            num_kv_heads=8,
            head_dim=128,
            qk_norm=False,
            tie_embeddings=False,
            rope_theta=1_000_000.0,
        ),
        kv_capacity=1024,
        prefill_chunk=128,
    ),
}


def get_config(name: str) -> ModelConfig:
    try:
        return CONFIGS[name]
    except KeyError:
        raise SystemExit(f"unknown config {name!r}; known: {', '.join(CONFIGS)}") from None
