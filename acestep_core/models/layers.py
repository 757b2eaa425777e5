"""Transformer building blocks shared by every ACE-Step stack (DiT, lyric/timbre encoders, pooler, detokenizer).

They follow transformers' Qwen3 blocks operation for operation (RMSNorm in float32, RoPE with float32
angles, per-head q/k norms), because the official networks are built from those and parity depends on
the order of rounding, not only on the formulas.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from acestep_core.models.config import FULL, AceStepConfig


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The statistics are taken in float32 whatever the activation dtype, as Qwen3 does.
        input_dtype = x.dtype
        x32 = x.to(torch.float32)
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(input_dtype)


class GatedMLP(nn.Module):
    """SwiGLU feed-forward: down(silu(gate(x)) * up(x)), no biases."""

    def __init__(self, hidden_size: int, intermediate_size: int):
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


def rotary_tables(length: int, head_dim: int, theta: float, dtype: torch.dtype,
                  device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables [1, 1, length, head_dim] for positions 0..length-1 (angles always in float32)."""
    exponents = torch.arange(0, head_dim, 2, dtype=torch.int64, device=device).to(torch.float32) / head_dim
    inv_freq = 1.0 / (theta ** exponents)
    positions = torch.arange(length, device=device, dtype=torch.float32)
    angles = positions[:, None] * inv_freq[None, :]
    doubled = torch.cat([angles, angles], dim=-1)
    return doubled.cos().to(dtype)[None, None], doubled.sin().to(dtype)[None, None]


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat([-second, first], dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    return (x * cos) + (_rotate_half(x) * sin)


def eager_attention(query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: Optional[torch.Tensor],
                    scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(output, probabilities) the way transformers' eager path computes them: softmax in float32, cast back.

    The official code switches cross-attention to this path when it is asked for attention maps, so the
    lyric alignment must run it too; SDPA stays the default everywhere else.
    """
    scores = torch.matmul(query, keys.transpose(2, 3)) * scale
    if mask is not None:
        scores = scores + mask
    probabilities = F.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    return torch.matmul(probabilities, values), probabilities


def bidirectional_mask(length: int, window: Optional[int], dtype: torch.dtype, device: torch.device,
                       key_padding: Optional[torch.Tensor] = None) -> Optional[torch.Tensor]:
    """Additive attention mask (0 keep, dtype-min drop), or None when nothing is masked.

    `window` keeps |i - j| <= window; `key_padding` [B, L] (1 = real) hides padded keys. The official
    code builds the same masks; returning None for an all-visible mask lets SDPA pick a faster kernel.
    """
    keep = None
    if window is not None and window + 1 < length:
        idx = torch.arange(length, device=device)
        keep = ((idx[:, None] - idx[None, :]).abs() <= window)[None, None]
    if key_padding is not None:
        pad = key_padding.to(torch.bool)[:, None, None, :]
        keep = pad if keep is None else keep & pad
    if keep is None:
        return None
    mask = torch.zeros(keep.shape, dtype=dtype, device=device)
    return mask.masked_fill(~keep, torch.finfo(dtype).min)


class Attention(nn.Module):
    """Multi-head attention with GQA and per-head q/k RMSNorm; self-attention rotates q and k, cross does not."""

    def __init__(self, config: AceStepConfig):
        super().__init__()
        d = config.head_dim
        self.head_dim = d
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        bias = config.attention_bias
        self.q_proj = nn.Linear(config.hidden_size, self.num_heads * d, bias=bias)
        self.k_proj = nn.Linear(config.hidden_size, self.num_kv_heads * d, bias=bias)
        self.v_proj = nn.Linear(config.hidden_size, self.num_kv_heads * d, bias=bias)
        self.o_proj = nn.Linear(self.num_heads * d, config.hidden_size, bias=bias)
        self.q_norm = RMSNorm(d, config.rms_norm_eps)
        self.k_norm = RMSNorm(d, config.rms_norm_eps)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(*x.shape[:-1], -1, self.head_dim)

    def project_kv(self, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values [B, kv_heads, L, d] of `source` (without RoPE)."""
        keys = self.k_norm(self._heads(self.k_proj(source))).transpose(1, 2)
        values = self._heads(self.v_proj(source)).transpose(1, 2)
        return keys, values

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None,
                rotary: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
                kv: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
                probabilities: Optional[list[torch.Tensor]] = None) -> torch.Tensor:
        """Self-attention when `kv` is None (rotated by `rotary`), else attention over the given keys/values.

        Given a list as `probabilities`, the eager path runs and appends its weights `[B, heads, Lq, Lk]`.
        """
        query = self.q_norm(self._heads(self.q_proj(x))).transpose(1, 2)
        if kv is None:
            keys, values = self.project_kv(x)
            if rotary is not None:
                cos, sin = rotary
                query, keys = apply_rotary(query, cos, sin), apply_rotary(keys, cos, sin)
        else:
            keys, values = kv
        groups = self.num_heads // self.num_kv_heads
        if groups > 1:
            keys = keys.repeat_interleave(groups, dim=1)
            values = values.repeat_interleave(groups, dim=1)
        if probabilities is None:
            out = F.scaled_dot_product_attention(query, keys, values, attn_mask=mask, scale=self.head_dim ** -0.5)
        else:
            out, weights = eager_attention(query, keys, values, mask, self.head_dim ** -0.5)
            probabilities.append(weights)
        out = out.transpose(1, 2).reshape(*x.shape[:-1], -1)
        return self.o_proj(out)


class EncoderLayer(nn.Module):
    """Plain pre-norm transformer layer used by every encoder-side stack."""

    def __init__(self, config: AceStepConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = Attention(config)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = GatedMLP(config.hidden_size, config.intermediate_size)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor],
                rotary: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), mask=mask, rotary=rotary)
        return x + self.mlp(self.post_attention_layernorm(x))


class EncoderStack(nn.Module):
    """Layers + final norm, bidirectional, with the per-layer full/sliding choice of `config.layer_types`.

    Subclasses add their input projections; the module names (`layers`, `norm`) match the checkpoints.
    """

    def __init__(self, config: AceStepConfig, num_layers: int):
        super().__init__()
        self.config = config
        self.layers = nn.ModuleList(EncoderLayer(config) for _ in range(num_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def run_layers(self, x: torch.Tensor, key_padding: Optional[torch.Tensor] = None,
                   max_layers: Optional[int] = None) -> torch.Tensor:
        config = self.config
        length = x.shape[1]
        masks = {
            FULL: bidirectional_mask(length, None, x.dtype, x.device, key_padding),
            "sliding_attention": bidirectional_mask(length, config.sliding_window, x.dtype, x.device,
                                                    key_padding),
        }
        rotary = rotary_tables(length, config.head_dim, config.rope_theta, x.dtype, x.device)
        layers = self.layers if max_layers is None else self.layers[:max_layers]
        for index, layer in enumerate(layers):
            x = layer(x, masks[config.layer_types[index]], rotary)
        return self.norm(x)
