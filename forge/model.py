"""AutoNeural: image encoder -> MLP connector -> LFM2 hybrid decoder.

Training (issue 4) uses `AutoNeural.forward(pixel_values, input_ids, labels)`; export uses the
`vision_graph`, `embed_graph` and `decoder_graph` wrappers of `forge.export`.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ModelConfig
from .lfm2 import Lfm2Decoder, randomize_
from .vision import build_encoder, gelu


class Connector(nn.Module):
    """Two linear layers with GELU between, no normalization (AutoNeural's connector)."""

    def __init__(self, cin: int, hidden: int, cout: int, layer_norm: bool = False):
        super().__init__()
        # the ViT baseline (InternVL) normalizes before its MLP; AutoNeural does not
        self.norm = nn.LayerNorm(cin) if layer_norm else nn.Identity()
        self.fc1 = nn.Linear(cin, hidden)
        self.fc2 = nn.Linear(hidden, cout)

    def forward(self, x):
        return self.fc2(gelu(self.fc1(self.norm(x))))


class AutoNeural(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.decoder
        self.vision = build_encoder(cfg.vision)
        self.connector = Connector(
            cfg.vision.out_channels, cfg.connector_hidden or d.hidden, d.hidden, layer_norm=cfg.vision.kind == "vit"
        )
        self.language = Lfm2Decoder(d)

    def image_embeds(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[B,3,S,S] normalised pixels -> [B,N,H]."""
        return self.connector(self.vision(pixel_values))

    def splice(self, image_embeds: torch.Tensor, input_ids: torch.Tensor, image_token_id: int) -> torch.Tensor:
        """Token embeddings with each row's single image token replaced by its N image embeddings:
        input_ids [B,L] -> [B, L-1+N, H]."""
        emb = self.language.embed_tokens(input_ids)
        rows = []
        for b in range(input_ids.shape[0]):
            where = (input_ids[b] == image_token_id).nonzero()
            if where.numel() != 1:
                raise ValueError(f"row {b}: want exactly one image token, found {where.numel()}")
            i = int(where[0, 0])
            rows.append(torch.cat([emb[b, :i], image_embeds[b], emb[b, i + 1 :]], dim=0))
        return torch.stack(rows)

    def forward(self, pixel_values, input_ids, labels=None, image_token_id: int = 3):
        """-> (logits [B, L-1+N, V], loss or None). `labels` [B,L] aligned with input_ids (-100 =
        ignore) are shifted inside: position t predicts label t+1; image positions are ignored."""
        x = self.splice(self.image_embeds(pixel_values), input_ids, image_token_id)
        logits = self.language(x)
        if labels is None:
            return logits, None
        n = self.cfg.vision.tokens
        ignore = torch.full((labels.shape[0], n), -100, dtype=labels.dtype, device=labels.device)
        full = []
        for b in range(labels.shape[0]):
            i = int((input_ids[b] == image_token_id).nonzero()[0, 0])
            full.append(torch.cat([labels[b, :i], ignore[b], labels[b, i + 1 :]]))
        full = torch.stack(full)
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), full[:, 1:].reshape(-1), ignore_index=-100)
        return logits, loss


def randomize_vision_(module: nn.Module, generator: torch.Generator) -> None:
    """Random weights with non-trivial dynamics: fan-in scaled convs/linears, norm weights ~1,
    layer-scale gammas in [0.2, 1] (timm's 1e-5 init would make every residual block a no-op)."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("gamma") or name.endswith("ls1") or name.endswith("ls2"):
                p.copy_(0.2 + 0.8 * torch.rand(p.shape, generator=generator))
            elif p.dim() == 1 and name.endswith("weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=generator))
            elif p.dim() >= 2:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=generator) / math.sqrt(fan_in))
            else:
                p.copy_(0.02 * torch.randn(p.shape, generator=generator))


def build_model(cfg: ModelConfig, state_dict: dict | None = None, strict: bool = True) -> AutoNeural:
    """A model in eval mode: random weights from `cfg.seed`, or `state_dict` (e.g. a trained one)."""
    torch.manual_seed(cfg.seed)
    model = AutoNeural(cfg)
    if state_dict is not None:
        state_dict = dict(state_dict)
        if cfg.decoder.tie_embeddings:  # a tied head is stored once (safetensors refuses shared tensors)
            state_dict.setdefault("language.lm_head.weight", state_dict.get("language.embed_tokens.weight"))
        model.load_state_dict(state_dict, strict=strict)
    else:
        g = torch.Generator().manual_seed(cfg.seed)
        randomize_vision_(model.vision, g)
        randomize_vision_(model.connector, g)
        randomize_(model.language, g)
    return model.eval()


def save_weights(model: AutoNeural, path) -> None:
    """The model's weights as safetensors (the tied LM head stored once), for `export --state-dict`."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    if model.cfg.decoder.tie_embeddings:
        state.pop("language.lm_head.weight", None)
    save_file(state, str(path))


def load_weights(cfg: ModelConfig, path) -> AutoNeural:
    from safetensors.torch import load_file

    return build_model(cfg, load_file(str(path)))
