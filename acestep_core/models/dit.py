"""The ACE-Step 1.5 diffusion transformer (`decoder.*` in the checkpoints).

It predicts the flow velocity (noise - data) of a latent x_t given the time t, the context latents
(source latents + chunk mask) and the packed condition sequence. As in the official code, it applies no
padding mask to either sequence: padded condition rows are attended to, which the models were trained with.
"""

from __future__ import annotations

import math
from typing import Iterable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from acestep_core.models.config import AceStepConfig
from acestep_core.models.layers import Attention, GatedMLP, RMSNorm, bidirectional_mask, rotary_tables

TIMESTEP_FEATURES = 256
TIMESTEP_SCALE = 1000.0
TIMESTEP_MAX_PERIOD = 10000.0


def timestep_features(t: torch.Tensor, dim: int = TIMESTEP_FEATURES) -> torch.Tensor:
    """Sinusoidal features [cos, sin] of t·1000, computed in float32 like the official embedding."""
    half = dim // 2
    freqs = torch.exp(-math.log(TIMESTEP_MAX_PERIOD) * torch.arange(half, dtype=torch.float32) / half)
    args = (t * TIMESTEP_SCALE)[:, None].float() * freqs.to(t.device)[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimestepEmbedding(nn.Module):
    """t → (temb [B, H], six-way modulation [B, 6, H])."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.linear_1 = nn.Linear(TIMESTEP_FEATURES, hidden_size)
        self.linear_2 = nn.Linear(hidden_size, hidden_size)
        self.time_proj = nn.Linear(hidden_size, hidden_size * 6)

    def forward(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        temb = self.linear_2(F.silu(self.linear_1(timestep_features(t).to(t.dtype))))
        modulation = self.time_proj(F.silu(temb)).unflatten(1, (6, -1))
        return temb, modulation


class DiTLayer(nn.Module):
    """Modulated self-attention, unmodulated cross-attention, modulated gated MLP."""

    def __init__(self, config: AceStepConfig):
        super().__init__()
        h = config.hidden_size
        self.self_attn_norm = RMSNorm(h, config.rms_norm_eps)
        self.self_attn = Attention(config)
        self.cross_attn_norm = RMSNorm(h, config.rms_norm_eps)
        self.cross_attn = Attention(config)
        self.mlp_norm = RMSNorm(h, config.rms_norm_eps)
        self.mlp = GatedMLP(h, config.intermediate_size)
        self.scale_shift_table = nn.Parameter(torch.zeros(1, 6, h))

    def forward(self, x: torch.Tensor, modulation: torch.Tensor, self_mask: Optional[torch.Tensor],
                rotary: tuple[torch.Tensor, torch.Tensor],
                condition_kv: tuple[torch.Tensor, torch.Tensor],
                cross_probabilities: Optional[list[torch.Tensor]] = None) -> torch.Tensor:
        shift, scale, gate, c_shift, c_scale, c_gate = (self.scale_shift_table + modulation).chunk(6, dim=1)
        normed = (self.self_attn_norm(x) * (1 + scale) + shift).type_as(x)
        x = (x + self.self_attn(normed, mask=self_mask, rotary=rotary) * gate).type_as(x)
        x = x + self.cross_attn(self.cross_attn_norm(x).type_as(x), kv=condition_kv,
                                probabilities=cross_probabilities)
        normed = (self.mlp_norm(x) * (1 + c_scale) + c_shift).type_as(x)
        return (x + self.mlp(normed) * c_gate).type_as(x)


class CrossAttentionCache:
    """Per-layer cross-attention keys/values of one condition, reused across sampling steps.

    The condition is constant during sampling, so the reused values equal a recomputation; a sampler
    makes a new cache whenever it switches condition (cover strength).
    """

    def __init__(self) -> None:
        self.layers: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}


class AttentionCapture:
    """Asks `AceStepDiT.forward` for the cross-attention probabilities of some layers (lyric alignment).

    With a capture, every layer's cross-attention runs the eager softmax path, as the official decoder
    does when it returns attentions; `weights[i]` is layer i's `[B, heads, T_patch, L_condition]`.
    """

    def __init__(self, layers: Iterable[int]) -> None:
        self.layers = frozenset(layers)
        self.weights: dict[int, torch.Tensor] = {}


class PatchIn(nn.Module):
    """`proj_in.1` in the checkpoints: the Conv1d patch embedding (index 0 and 2 were transposes)."""

    def __init__(self, in_channels: int, hidden_size: int, patch_size: int):
        super().__init__()
        self.register_module("1", nn.Conv1d(in_channels, hidden_size, patch_size, stride=patch_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(self, "1")(x.transpose(1, 2)).transpose(1, 2)


class PatchOut(nn.Module):
    """`proj_out.1` in the checkpoints: the ConvTranspose1d that undoes the patching."""

    def __init__(self, hidden_size: int, out_channels: int, patch_size: int):
        super().__init__()
        self.register_module("1", nn.ConvTranspose1d(hidden_size, out_channels, patch_size, stride=patch_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(self, "1")(x.transpose(1, 2)).transpose(1, 2)


class AceStepDiT(nn.Module):
    def __init__(self, config: AceStepConfig):
        super().__init__()
        self.config = config
        h = config.hidden_size
        self.proj_in = PatchIn(config.in_channels, h, config.patch_size)
        self.time_embed = TimestepEmbedding(h)
        self.time_embed_r = TimestepEmbedding(h)
        self.condition_embedder = nn.Linear(config.encoder_width, h)
        self.layers = nn.ModuleList(DiTLayer(config) for _ in range(config.num_hidden_layers))
        self.norm_out = RMSNorm(h, config.rms_norm_eps)
        self.proj_out = PatchOut(h, config.audio_acoustic_hidden_dim, config.patch_size)
        self.scale_shift_table = nn.Parameter(torch.zeros(1, 2, h))

    def forward(self, hidden_states: torch.Tensor, timestep: torch.Tensor, timestep_r: torch.Tensor,
                encoder_hidden_states: torch.Tensor, context_latents: torch.Tensor,
                cache: Optional[CrossAttentionCache] = None,
                capture: Optional[AttentionCapture] = None) -> torch.Tensor:
        """Velocity [B, T, C] for x_t `hidden_states` [B, T, C] at times `timestep`, `timestep_r` [B]."""
        config = self.config
        temb_t, mod_t = self.time_embed(timestep)
        temb_r, mod_r = self.time_embed_r(timestep - timestep_r)
        temb, modulation = temb_t + temb_r, mod_t + mod_r

        x = torch.cat([context_latents, hidden_states], dim=-1)
        frames = x.shape[1]
        remainder = frames % config.patch_size
        if remainder:
            x = F.pad(x, (0, 0, 0, config.patch_size - remainder))
        x = self.proj_in(x)

        condition_kv = self._condition_kv(encoder_hidden_states, cache)
        length = x.shape[1]
        masks = {
            "full_attention": None,
            "sliding_attention": bidirectional_mask(length, config.sliding_window, x.dtype, x.device),
        }
        rotary = rotary_tables(length, config.head_dim, config.rope_theta, x.dtype, x.device)
        for index, layer in enumerate(self.layers):
            kept: Optional[list[torch.Tensor]] = [] if capture is not None else None
            x = layer(x, modulation, masks[config.layer_types[index]], rotary, condition_kv[index], kept)
            if capture is not None and index in capture.layers:
                capture.weights[index] = kept[0]

        shift, scale = (self.scale_shift_table + temb.unsqueeze(1)).chunk(2, dim=1)
        x = (self.norm_out(x) * (1 + scale) + shift).type_as(x)
        return self.proj_out(x)[:, :frames]

    def _condition_kv(self, encoder_hidden_states: torch.Tensor,
                      cache: Optional[CrossAttentionCache]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        if cache is not None and len(cache.layers) == len(self.layers):
            return [cache.layers[i] for i in range(len(self.layers))]
        condition = self.condition_embedder(encoder_hidden_states)
        kv = [layer.cross_attn.project_kv(condition) for layer in self.layers]
        if cache is not None:
            cache.layers = dict(enumerate(kv))
        return kv
