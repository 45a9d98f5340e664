"""LFM2 hybrid decoder: gated short-convolution layers and grouped-query attention layers, chosen per
layer by `DecoderConfig.layer_types`.

Parameter names follow the Hugging Face `Lfm2ForCausalLM` layout (`embed_tokens`, `layers.{i}.conv.
in_proj`, `layers.{i}.self_attn.q_layernorm`, `embedding_norm`, ...) so a real LFM2 checkpoint loads
without renaming (see `forge.hf`).

Two forward paths share the weights:
- `forward(inputs_embeds)`: the whole causal sequence at once (training, reference);
- `step(...)`: the static-shape step the ONNX bundle exports: T new positions, a fixed-capacity KV
  buffer owned by the caller, positions and the additive mask as inputs, only the T new K/V rows and
  the new conv states as outputs (see forge/README.md, "decoder contract").
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import DecoderConfig


class RMSNorm(nn.Module):
    """y = x / rms(x) * weight, over the last dimension (decomposed: no fused op for the HTP).

    `prescaled`: the same value computed as (x/s) / sqrt(mean((x/s)^2) + eps/s^2) with s = max|x| per
    row (at least 1e-3; any s > 0 gives the exact result). A trained model's image tokens can be
    1000x larger than its text tokens; the plain form's x^2 then spans [1e-9, 1e4], and a 16-bit
    activation range cannot hold the text tokens' squares (they quantize to 0 and the norm explodes).
    After the pre-scaling every row's squares lie in [0, 1] with a mean of at least 1/dim."""

    def __init__(self, dim: int, eps: float, prescaled: bool = False):
        super().__init__()
        self.eps = eps
        self.prescaled = prescaled
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.prescaled:
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight
        s = x.abs().amax(-1, keepdim=True).clamp_min(1e-3)
        y = x / s
        return y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + self.eps / (s * s)) * self.weight


class SwiGLU(nn.Module):
    def __init__(self, hidden: int, intermediate: int):
        super().__init__()
        self.w1 = nn.Linear(hidden, intermediate, bias=False)
        self.w3 = nn.Linear(hidden, intermediate, bias=False)
        self.w2 = nn.Linear(intermediate, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class ShortConv(nn.Module):
    """Gated short convolution: B, C, x = in_proj(h); y = out_proj(C * causal_dwconv(B * x))."""

    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        h, k = cfg.hidden, cfg.conv_kernel
        self.kernel = k
        self.in_proj = nn.Linear(h, 3 * h, bias=cfg.conv_bias)
        self.conv = nn.Conv1d(h, h, kernel_size=k, groups=h, padding=k - 1, bias=cfg.conv_bias)
        self.out_proj = nn.Linear(h, h, bias=cfg.conv_bias)

    def gates(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (B*x, C), both [B, H, T]."""
        b, c, xx = self.in_proj(x).transpose(-1, -2).chunk(3, dim=-2)
        return b * xx, c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bx, c = self.gates(x)
        y = self.conv(bx)[..., : x.shape[1]]
        return self.out_proj((c * y).transpose(-1, -2))

    def step(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [1,T,H], state [1,H,k] (the last k columns of B*x) -> (y [1,T,H], new state [1,H,k])."""
        t, k = x.shape[1], self.kernel
        bx, c = self.gates(x)
        window = torch.cat([state, bx], dim=-1)  # [1,H,k+T]
        new_state = window[:, :, t:]
        if t == 1:
            # one output column: a multiply-add over the last k columns (cheaper than a Conv on HTP)
            y = (window[:, :, -k:] * self.conv.weight.squeeze(1)).sum(-1, keepdim=True)
            if self.conv.bias is not None:
                y = y + self.conv.bias[None, :, None]
        else:
            y = F.conv1d(window[:, :, 1:], self.conv.weight, self.conv.bias, groups=bx.shape[1])
        return self.out_proj((c * y).transpose(-1, -2)), new_state


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


class Attention(nn.Module):
    """Grouped-query attention with per-head RMSNorm on Q and K (QK-norm) and RoPE."""

    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        self.nh, self.nkv, self.d = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        h = cfg.hidden
        self.q_proj = nn.Linear(h, self.nh * self.d, bias=False)
        self.k_proj = nn.Linear(h, self.nkv * self.d, bias=False)
        self.v_proj = nn.Linear(h, self.nkv * self.d, bias=False)
        self.out_proj = nn.Linear(self.nh * self.d, h, bias=False)
        if cfg.qk_norm:
            self.q_layernorm = RMSNorm(self.d, cfg.norm_eps, cfg.prescaled_norm)
            self.k_layernorm = RMSNorm(self.d, cfg.norm_eps, cfg.prescaled_norm)
        else:
            self.q_layernorm = nn.Identity()
            self.k_layernorm = nn.Identity()

    def qkv(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        """x [B,T,H] -> q [B,NH,T,D], k, v [B,KV,T,D] (RoPE applied to q and k)."""
        b, t, _ = x.shape
        q = self.q_layernorm(self.q_proj(x).view(b, t, self.nh, self.d)).transpose(1, 2)
        k = self.k_layernorm(self.k_proj(x).view(b, t, self.nkv, self.d)).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.nkv, self.d).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        return q, k, v

    def attend(self, q, k, v, mask: torch.Tensor) -> torch.Tensor:
        """q [B,NH,T,D]; k, v [B,KV,S,D]; mask additive, broadcastable to [B,1,T,S] -> [B,T,NH*D].

        Query heads are grouped per KV head by a reshape (head h uses KV head h // g), so K and V are
        never repeated; the mask is tiled along the query rows to match.
        """
        b, _, t, d = q.shape
        g = self.nh // self.nkv
        qg = q.reshape(b, self.nkv, g * t, d)
        if g > 1:
            mask = torch.cat([mask] * g, dim=2)
        s = torch.matmul(qg, k.transpose(-1, -2)) * (1.0 / math.sqrt(d)) + mask
        o = torch.matmul(torch.softmax(s, dim=-1), v)  # [B,KV,g*T,D]
        return o.reshape(b, self.nh, t, d).transpose(1, 2).reshape(b, t, self.nh * d)

    def forward(self, x, cos, sin, mask):
        q, k, v = self.qkv(x, cos, sin)
        return self.out_proj(self.attend(q, k, v, mask))

    def step(self, x, cos, sin, mask, past_k, past_v):
        """past_k/past_v [1,KV,C,D] (buffer slots), mask [1,1,T,C+T] -> (y, new k, new v [1,KV,T,D])."""
        q, k, v = self.qkv(x, cos, sin)
        kk = torch.cat([past_k, k], dim=2)
        vv = torch.cat([past_v, v], dim=2)
        return self.out_proj(self.attend(q, kk, vv, mask)), k, v


class DecoderLayer(nn.Module):
    def __init__(self, cfg: DecoderConfig, layer_type: str):
        super().__init__()
        self.is_attention = layer_type == "full_attention"
        if layer_type == "full_attention":
            self.self_attn = Attention(cfg)
        elif layer_type == "conv":
            self.conv = ShortConv(cfg)
        else:
            raise ValueError(f"unknown layer type {layer_type!r} (want 'conv' or 'full_attention')")
        self.operator_norm = RMSNorm(cfg.hidden, cfg.norm_eps, cfg.prescaled_norm)
        self.ffn_norm = RMSNorm(cfg.hidden, cfg.norm_eps, cfg.prescaled_norm)
        self.feed_forward = SwiGLU(cfg.hidden, cfg.intermediate)


class Lfm2Decoder(nn.Module):
    """Embedding, the hybrid layer stack, final norm and the LM head (tied to the embedding by default)."""

    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden)
        self.layers = nn.ModuleList(DecoderLayer(cfg, t) for t in cfg.layer_types)
        self.embedding_norm = RMSNorm(cfg.hidden, cfg.norm_eps, cfg.prescaled_norm)
        self.lm_head = nn.Linear(cfg.hidden, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        inv = 1.0 / (cfg.rope_theta ** (torch.arange(0, cfg.head_dim, 2, dtype=torch.int64).float() / cfg.head_dim))
        self.register_buffer("inv_freq", inv, persistent=False)

    def rope(self, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """position_ids [B,T] (any int dtype) -> cos, sin [B,1,T,D]."""
        f = position_ids.float()[..., None] * self.inv_freq
        e = torch.cat([f, f], dim=-1)
        return e.cos()[:, None], e.sin()[:, None]

    def forward(self, inputs_embeds: torch.Tensor, return_hidden: bool = False) -> torch.Tensor:
        """Whole causal sequences: inputs_embeds [B,L,H] -> logits [B,L,V].

        Right padding needs no mask: causal attention and the causal conv never look ahead.
        """
        b, n, _ = inputs_embeds.shape
        pos = torch.arange(n, device=inputs_embeds.device)[None].expand(b, n)
        cos, sin = self.rope(pos)
        mask = torch.full((n, n), float("-inf"), device=inputs_embeds.device).triu(1)[None, None]
        h = inputs_embeds
        for layer in self.layers:
            x = layer.operator_norm(h)
            y = layer.self_attn(x, cos, sin, mask) if layer.is_attention else layer.conv(x)
            h = h + y
            h = h + layer.feed_forward(layer.ffn_norm(h))
        h = self.embedding_norm(h)
        return h if return_hidden else self.lm_head(h)

    def step(self, inputs_embeds, position_ids, attention_mask, conv_states, past_kv):
        """The exported static step (see module doc).

        conv_states: one [1,H,k] per conv layer, in layer order; past_kv: (key, value) [1,KV,C,D] per
        attention layer, in layer order. Returns (logits [1,T,V], new conv states, new (k, v) rows).
        """
        cos, sin = self.rope(position_ids)
        h = inputs_embeds
        new_conv, new_kv = [], []
        ci = ai = 0
        for layer in self.layers:
            x = layer.operator_norm(h)
            if layer.is_attention:
                pk, pv = past_kv[ai]
                y, k, v = layer.self_attn.step(x, cos, sin, attention_mask, pk, pv)
                new_kv.append((k, v))
                ai += 1
            else:
                y, st = layer.conv.step(x, conv_states[ci])
                new_conv.append(st)
                ci += 1
            h = h + y
            h = h + layer.feed_forward(layer.ffn_norm(h))
        return self.lm_head(self.embedding_norm(h)), new_conv, new_kv


def randomize_(decoder: Lfm2Decoder, generator: torch.Generator) -> None:
    """Random weights with a useful dynamic range (for random-weight fixtures and benchmarks):
    fan-in scaled matrices, norm weights around 1, embeddings of std 0.5 and residual-branch outputs
    (out_proj, w2) with gain 2. With unit embeddings the tied head mostly predicts the input token
    again and greedy decoding of a random model collapses into one repeated token; these gains
    make it produce varied, image-dependent tokens, which is what a parity fixture needs."""
    with torch.no_grad():
        for name, p in decoder.named_parameters():
            if name.endswith("norm.weight") or "layernorm" in name:
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=generator))
            elif name == "embed_tokens.weight":
                p.copy_(0.5 * torch.randn(p.shape, generator=generator))
            elif name.endswith("out_proj.weight") or name.endswith("w2.weight"):
                p.copy_(2 * torch.randn(p.shape, generator=generator) / math.sqrt(p.shape[-1]))
            elif name.endswith("conv.conv.weight"):
                p.copy_(torch.randn(p.shape, generator=generator) / math.sqrt(p.shape[-1]))
            elif p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=generator) / math.sqrt(p.shape[-1]))
            else:
                p.zero_()
